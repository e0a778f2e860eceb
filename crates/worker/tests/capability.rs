//! Which profiles this machine's ffmpeg can run, found the way a worker finds it at start.

use videofarm_core::Profiles;
use videofarm_ffmpeg::Tools;
use videofarm_worker::capability::runnable_profiles;

#[tokio::test]
async fn the_software_profiles_run_here_and_the_hardware_ones_do_not() {
    let tools = Tools::locate(None, None).expect("ffmpeg is installed");
    let cache = tempfile::tempdir().unwrap();
    let file = cache.path().join("trials.json");
    let found = runnable_profiles(&tools, &Profiles::default(), Some(&file), &[]).await;
    let (runnable, not) = found.later().await;
    for name in ["archive", "vhs", "web", "hevc", "av1"] {
        assert!(runnable.iter().any(|r| r == name), "{name}: {not:?}");
    }
    // No GPU here: listed by this ffmpeg or not, none of them works.
    for name in [
        "h264-nvenc",
        "hevc-nvenc",
        "h264-vaapi",
        "hevc-vaapi",
        "h264-qsv",
        "hevc-qsv",
    ] {
        assert!(
            not.iter().any(|(n, _)| n == name),
            "{name} is not runnable here"
        );
    }
    // Every verdict is kept, the failures too (with the device nodes they depended on).
    assert!(file.is_file());
    let kept: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(kept.len(), runnable.len() + not.len(), "{kept:?}");
}

/// A worker started again on the same machine runs no ffmpeg to find what it can run: the
/// failed hardware trials included (they were tried again at every start).
#[tokio::test]
async fn a_second_start_tries_nothing_again() {
    let dir = tempfile::tempdir().unwrap();
    let calls = dir.path().join("calls");
    let wrapper = dir.path().join("ffmpeg");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho run >> '{}'\nexec ffmpeg \"$@\"\n",
            calls.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let tools = Tools::locate(Some(&wrapper), None).expect("ffmpeg is installed");
    let file = dir.path().join("trials.json");
    let runs = || {
        std::fs::read_to_string(&calls)
            .unwrap_or_default()
            .lines()
            .count()
    };
    // At the start, only the profile asked for first is tried (after the two lists).
    let found = runnable_profiles(&tools, &Profiles::default(), Some(&file), &["web".into()]).await;
    assert_eq!(runs(), 3, "two lists and one trial");
    assert_eq!(found.runnable, vec!["web".to_string()]);
    assert!(
        found.untried.iter().any(|n| n == "archive"),
        "{:?}",
        found.untried
    );
    let first = found.later().await;
    assert!(
        runs() >= 3 + first.1.len(),
        "the rest tried later: {} runs",
        runs()
    );
    let ran = runs();
    let again = runnable_profiles(&tools, &Profiles::default(), Some(&file), &[]).await;
    assert!(again.untried.is_empty());
    assert_eq!((again.runnable.clone(), again.not.clone()), first);
    assert_eq!(again.later().await, first);
    assert_eq!(runs(), ran, "no ffmpeg ran the second time");
}

/// A profile that only copies streams is runnable wherever ffmpeg is: its trial copied the raw
/// test picture into Matroska, which failed, and `run --profile copy` was refused.
#[tokio::test]
async fn a_stream_copy_profile_is_runnable() {
    let tools = Tools::locate(None, None).expect("ffmpeg is installed");
    let cache = tempfile::tempdir().unwrap();
    let file = cache.path().join("trials.json");
    let copy: videofarm_core::Profile = serde_json::from_value(serde_json::json!({
        "name": "copy",
        "extension": "mkv",
        "args": ["-map", "0", "-c", "copy"],
        "video_codec": "mpeg2video",
    }))
    .unwrap();
    let profiles = Profiles::new([("copy".to_owned(), copy)].into()).unwrap();
    let found = runnable_profiles(&tools, &profiles, Some(&file), &[]).await;
    let (runnable, not) = found.later().await;
    assert!(runnable.iter().any(|r| r == "copy"), "{not:?}");
    // A failure kept by the old rule for it does not stick (found on a machine that had
    // tried it before the fix).
    let kept: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let poisoned: serde_json::Map<String, serde_json::Value> = kept
        .into_iter()
        .map(|(k, _)| (k, serde_json::json!({"Err": "a trial encode failed"})))
        .collect();
    std::fs::write(&file, serde_json::to_vec(&poisoned).unwrap()).unwrap();
    let found = runnable_profiles(&tools, &profiles, Some(&file), &[]).await;
    let (runnable, not) = found.later().await;
    assert!(runnable.iter().any(|r| r == "copy"), "{not:?}");
}
