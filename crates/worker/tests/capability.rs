//! Which profiles this machine's ffmpeg can run, found the way a worker finds it at start.

use videofarm_core::Profiles;
use videofarm_ffmpeg::Tools;
use videofarm_worker::capability::runnable_profiles;

#[tokio::test]
async fn the_software_profiles_run_here_and_the_hardware_ones_do_not() {
    let tools = Tools::locate(None, None).expect("ffmpeg is installed");
    let cache = tempfile::tempdir().unwrap();
    let file = cache.path().join("trials.json");
    let (runnable, not) = runnable_profiles(&tools, &Profiles::default(), Some(&file)).await;
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
    // The verdicts are kept: the second look gives the same answer from the cache file.
    assert!(file.is_file());
    // Only the successes: a profile that failed is tried again at the next start (a driver may
    // have been installed since).
    let kept: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(kept.len(), runnable.len(), "{kept:?}");
    let again = runnable_profiles(&tools, &Profiles::default(), Some(&file)).await;
    assert_eq!(again.0, runnable);
}
