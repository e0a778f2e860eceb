//! `videofarm run` end to end with the real ffmpeg: the main job, re-runs, streams, names.

mod common;

use common::*;
use serde_json::Value;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

fn run_json(farm: &Farm, extra: &[&str]) -> (i32, Vec<Value>) {
    let mut cmd = farm.cmd(["run", "--json", "--out"]);
    cmd.arg(&farm.out).arg(&farm.input).args(extra);
    let out = cmd.output().unwrap();
    let code = out.status.code().unwrap_or(-1);
    let records = run_results(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "run --json printed JSON ({e}): {}\n{}",
            text(&out.stdout),
            text(&out.stderr)
        )
    });
    (code, records)
}

/// When `path` was last written.
fn modified(path: &std::path::Path) -> std::time::SystemTime {
    std::fs::metadata(path).unwrap().modified().unwrap()
}

#[test]
fn run_encodes_a_folder_mirroring_subfolders_and_a_rerun_encodes_nothing() {
    let farm = Farm::new();
    std::fs::create_dir_all(farm.input.join("1998/summer")).unwrap();
    clip(&farm.input.join("a.mpg"), 1);
    clip(&farm.input.join("1998/summer/b.mpg"), 2);
    std::fs::write(farm.input.join("notes.txt"), "not a video, not queued").unwrap();
    let source_before = std::fs::read(farm.input.join("a.mpg")).unwrap();

    let (code, records) = run_json(&farm, &[]);
    assert_eq!(code, 0, "{records:?}");
    assert_eq!(records.len(), 2);
    assert!(
        records
            .iter()
            .all(|r| r["state"] == "succeeded" && r["attempts"] == 1),
        "{records:?}"
    );
    assert_eq!(
        farm.outputs(),
        vec![PathBuf::from("1998/summer/b.mkv"), PathBuf::from("a.mkv")]
    );
    let (streams, duration) = probe(&farm.out.join("1998/summer/b.mkv"));
    assert_eq!(streams[0], ("video".into(), "h264".into()));
    assert!((duration - 2.0).abs() < 0.3, "duration {duration}");
    assert_eq!(
        std::fs::read(farm.input.join("a.mpg")).unwrap(),
        source_before,
        "the source is untouched"
    );

    // Again: nothing is encoded (the output file is not even rewritten).
    let written = modified(&farm.out.join("a.mkv"));
    let (code, again) = run_json(&farm, &[]);
    assert_eq!(code, 0);
    assert!(
        again.iter().all(|r| r["attempts"] == 1),
        "not run again: {again:?}"
    );
    assert_eq!(modified(&farm.out.join("a.mkv")), written);

    // An output deleted to be made anew is made again, and only that one.
    let b_written = modified(&farm.out.join("1998/summer/b.mkv"));
    std::fs::remove_file(farm.out.join("a.mkv")).unwrap();
    let (code, remade) = run_json(&farm, &[]);
    assert_eq!(code, 0, "{remade:?}");
    let finished = |output: &str| {
        remade
            .iter()
            .find(|r| r["output"].as_str().unwrap().ends_with(output))
            .unwrap()["finished_ms"]
            .clone()
    };
    let before = |output: &str| {
        records
            .iter()
            .find(|r| r["output"].as_str().unwrap().ends_with(output))
            .unwrap()["finished_ms"]
            .clone()
    };
    assert_ne!(finished("a.mkv"), before("a.mkv"), "a is made again");
    assert_eq!(finished("b.mkv"), before("b.mkv"), "b is not: {remade:#?}");
    assert!(farm.out.join("a.mkv").is_file(), "a.mkv is back");
    assert_eq!(modified(&farm.out.join("1998/summer/b.mkv")), b_written);
    let written = modified(&farm.out.join("a.mkv"));

    // A fresh queue file still does not encode twice: the verified output is recognised.
    std::fs::remove_file(&farm.db).unwrap();
    let (code, fresh) = run_json(&farm, &[]);
    assert_eq!(code, 0);
    assert!(
        fresh.iter().all(|r| r["result"]["already_done"] == true),
        "{fresh:?}"
    );
    assert_eq!(modified(&farm.out.join("a.mkv")), written);

    // --force encodes again.
    let (code, forced) = run_json(&farm, &["--force"]);
    assert_eq!(code, 0);
    assert!(
        forced.iter().all(|r| r["result"]["already_done"] == false),
        "{forced:?}"
    );
    assert_ne!(modified(&farm.out.join("a.mkv")), written);
    assert_eq!(farm.outputs().len(), 2, "no temporary files left");
}

#[test]
fn the_text_summary_names_every_file_and_its_result() {
    let farm = Farm::new();
    clip(&farm.input.join("good.mpg"), 1);
    std::fs::write(farm.input.join("bad.mpg"), "this is text").unwrap();
    let mut cmd = farm.cmd(["run", "--out"]);
    let out = cmd.arg(&farm.out).arg(&farm.input).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "a failed job makes exit 1");
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("FILE") && stdout.contains("SIZE IN -> OUT"),
        "{stdout}"
    );
    let good = stdout
        .lines()
        .find(|l| l.starts_with("good.mpg"))
        .expect("good.mpg row");
    assert!(good.contains(" ok ") && good.contains("kB ->"), "{good}");
    assert!(
        stdout.contains("bad.mpg") && stdout.contains("not a video"),
        "{stdout}"
    );
    assert!(stdout.contains("1 succeeded, 1 did not"), "{stdout}");
}

#[test]
fn the_archive_profile_keeps_every_audio_and_subtitle_stream() {
    let farm = Farm::new();
    multi_stream_clip(&farm.input.join("multi.mkv"), farm.root());
    let (code, records) = run_json(&farm, &["--profile", "archive"]);
    assert_eq!(code, 0, "{records:?}");
    let (streams, _) = probe(&farm.out.join("multi.mkv"));
    let kinds: Vec<(&str, &str)> = streams
        .iter()
        .map(|(t, c)| (t.as_str(), c.as_str()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("video", "h264"),
            ("audio", "mp2"),
            ("audio", "mp2"),
            ("subtitle", "subrip")
        ],
        "video re-encoded, audio and subtitles copied"
    );
}

/// The input is described from ffmpeg's own header and a Matroska output is read back
/// in-process, so an `archive` job starts no ffprobe at all, nor does a short clip of many
/// megabytes (too small to last the ten minutes `split = auto` splits at); other containers
/// (the `web` profile's MP4) are verified by ffprobe, once per job, on the encoded temporary
/// file.
#[test]
fn ffprobe_runs_only_to_verify_outputs_that_are_not_matroska() {
    let staging = tempfile::tempdir().unwrap();
    let log = staging.path().join("ffprobe.log");
    let wrapper = staging.path().join("ffprobe");
    std::fs::write(
        &wrapper,
        format!(
            // Each call with where its file really is (workers hand ffprobe open files).
            "#!/bin/sh\nfor a in \"$@\"; do last=$a; done\n\
             printf '%s -> %s\\n' \"$*\" \"$(readlink -f \"${{last#file:}}\")\" >> '{}'\n\
             exec '{}' \"$@\"\n",
            log.display(),
            which("ffprobe")
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let farm = Farm::with_config(&format!("ffprobe = \"{}\"", wrapper.display()));
    clip(&farm.input.join("tape.mpg"), 1);
    multi_stream_clip(&farm.input.join("multi.mkv"), farm.root());
    // 5 s of noise: over 8 MiB, which was once enough to be probed for a split.
    let large = farm.root().join("large");
    std::fs::create_dir(&large).unwrap();
    noise_clip(&large.join("noise.mpg"), 5);
    let size = std::fs::metadata(large.join("noise.mpg")).unwrap().len();
    assert!(size > 8 << 20, "a clip of {size} bytes");
    let calls = || -> Vec<String> {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    };

    let (code, records) = run_json(&farm, &["--profile", "archive"]);
    assert_eq!(code, 0, "{records:?}");
    assert_eq!(farm.outputs().len(), 2);
    assert_eq!(
        calls(),
        Vec::<String>::new(),
        "no ffprobe for Matroska outputs"
    );
    let out = farm
        .cmd(["run", "--json", "--profile", "archive", "--out"])
        .arg(farm.root().join("large-out"))
        .arg(&large)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        calls(),
        Vec::<String>::new(),
        "no ffprobe for a 5 s clip of {size} bytes"
    );

    let web_out = farm.root().join("web");
    let out = farm
        .cmd(["run", "--json", "--profile", "web", "--out"])
        .arg(&web_out)
        .arg(&farm.input)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let calls = calls();
    assert_eq!(calls.len(), 2, "one ffprobe run per MP4 job: {calls:#?}");
    assert!(
        calls
            .iter()
            .all(|c| c.contains(".part.mp4") && !c.contains("/in/")),
        "ffprobe reads only the encoded temporary files: {calls:#?}"
    );
}

#[test]
fn other_profiles_make_what_they_promise() {
    let farm = Farm::new();
    clip(&farm.input.join("tape.mpg"), 1);
    for (profile, file, video, audio) in [
        ("web", "tape.mp4", "h264", "aac"),
        ("vhs", "tape.mkv", "h264", "aac"),
        ("hevc", "tape.mkv", "hevc", "mp2"),
        ("av1", "tape.mkv", "av1", "mp2"),
    ] {
        let out = farm.root().join(format!("out-{profile}"));
        let mut cmd = farm.cmd(["run", "--json", "--profile", profile, "--out"]);
        let result = cmd.arg(&out).arg(&farm.input).output().unwrap();
        assert_eq!(
            result.status.code(),
            Some(0),
            "{profile}: {}",
            text(&result.stdout)
        );
        let (streams, _) = probe(&out.join(file));
        assert_eq!(streams[0].1, video, "{profile}");
        assert_eq!(streams[1].1, audio, "{profile}");
    }
}

#[test]
fn hostile_file_names_encode_and_execute_nothing() {
    let farm = Farm::new();
    let names: Vec<Vec<u8>> = vec![
        b"with space.mpg".to_vec(),
        b"quote \" and ' .mpg".to_vec(),
        b"$(touch pwned).mpg".to_vec(),
        b"semi;touch pwned2;.mpg".to_vec(),
        b"new\nline.mpg".to_vec(),
        b"-y.mpg".to_vec(),
        b"concat:x|y.mpg".to_vec(),
        b"latin1 \xe9t\xe9.mpg".to_vec(),
    ];
    let first = farm.input.join("seed.mpg");
    clip(&first, 1);
    for name in &names {
        std::fs::copy(&first, farm.input.join(std::ffi::OsStr::from_bytes(name))).unwrap();
    }
    std::fs::remove_file(&first).unwrap();
    let mut cmd = farm.cmd(["run", "--json", "--out"]);
    let out = cmd
        .current_dir(farm.root())
        .arg(&farm.out)
        .arg(&farm.input)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    for name in &names {
        let stem = &name[..name.len() - 4];
        let mut output = stem.to_vec();
        output.extend_from_slice(b".mkv");
        let path = farm.out.join(std::ffi::OsStr::from_bytes(&output));
        assert!(path.is_file(), "{} was encoded", path.display());
    }
    for dir in [farm.root(), farm.input.as_path(), farm.out.as_path()] {
        assert!(
            !dir.join("pwned").exists() && !dir.join("pwned2").exists(),
            "nothing was executed"
        );
    }
    // `jobs` shows the non-UTF-8 name without breaking its lines.
    let listing = text(&farm.run(["jobs"]).stdout);
    assert!(listing.contains("new\\nline.mpg"), "{listing}");
}

#[test]
fn an_existing_different_output_is_never_overwritten_silently() {
    let farm = Farm::new();
    clip(&farm.input.join("tape.mpg"), 1);
    std::fs::create_dir_all(&farm.out).unwrap();
    std::fs::write(farm.out.join("tape.mkv"), "precious, not ours").unwrap();
    let (code, records) = run_json(&farm, &[]);
    assert_eq!(code, 1);
    let error = records[0]["error"].as_str().unwrap();
    assert!(
        error.contains("already exists") && error.contains("--overwrite"),
        "{error}"
    );
    assert_eq!(
        std::fs::read(farm.out.join("tape.mkv")).unwrap(),
        b"precious, not ours"
    );

    let (code, records) = run_json(&farm, &["--overwrite"]);
    assert_eq!(code, 0, "{records:?}");
    assert_eq!(probe(&farm.out.join("tape.mkv")).0[0].1, "h264");
}

/// Numbers no one means are usage errors that say which setting, never a panic or a silent
/// replacement.
#[test]
fn nonsense_numbers_are_usage_errors_not_panics() {
    let farm = Farm::new();
    let dir = farm.input.to_str().unwrap().to_owned();
    let out = farm.out.to_str().unwrap().to_owned();
    for (args, says) in [
        (
            vec!["watch", &dir, "--out", &out, "--interval", "0"],
            "positive",
        ),
        (
            vec!["watch", &dir, "--out", &out, "--interval", "nan"],
            "positive",
        ),
        (
            vec!["watch", &dir, "--out", &out, "--settle", "1e300"],
            "at most",
        ),
        (vec!["run", &dir, "--out", &out, "--workers", "0"], "0"),
        (vec!["worker", "--concurrency", "0"], "0"),
        (vec!["cancel", "zz/../x"], "not a job id"),
        (vec!["retry", "../../x"], "not a job id"),
    ] {
        let output = farm.run(&args);
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    for (line, says) in [
        ("stall_secs = 1e20", "stall_secs must be at most"),
        ("timeout_secs = 1e20", "timeout_secs must be at most"),
        ("lease_secs = 0.0001", "lease_secs must be at least 1"),
        ("workers = 0", "workers must be 1 to 1024"),
    ] {
        let config = farm.root().join("bad.toml");
        std::fs::write(&config, line).unwrap();
        let output = std::process::Command::new(BIN)
            .arg("--config")
            .arg(&config)
            .args(["status"])
            .output()
            .unwrap();
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{line}: {stderr}");
        assert!(stderr.contains(says), "{line}: {stderr}");
    }
}

#[test]
fn an_unknown_profile_is_a_usage_error_and_queues_nothing() {
    let farm = Farm::new();
    clip(&farm.input.join("tape.mpg"), 1);
    let mut cmd = farm.cmd(["run", "--profile", "nonesuch", "--out"]);
    let out = cmd.arg(&farm.out).arg(&farm.input).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("unknown profile 'nonesuch'") && stderr.contains("archive"),
        "{stderr}"
    );
    assert!(
        !farm.db.exists() || farm.jobs().is_empty(),
        "nothing queued"
    );
}

#[test]
fn missing_ffmpeg_is_a_usage_error_that_says_how_to_install_it() {
    let farm = Farm::new();
    clip(&farm.input.join("tape.mpg"), 1);
    let mut cmd = farm.cmd(["run", "--out"]);
    let out = cmd
        .arg(&farm.out)
        .arg(&farm.input)
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("ffmpeg was not found") && stderr.contains("apt-get install ffmpeg"),
        "{stderr}"
    );
    assert!(
        stderr.contains("ffmpeg = "),
        "names the config setting: {stderr}"
    );

    // The config setting points at a binary anywhere.
    let ffmpeg = which("ffmpeg");
    let ffprobe = which("ffprobe");
    std::fs::write(
        &farm.config,
        format!("ffmpeg = {ffmpeg:?}\nffprobe = {ffprobe:?}\n{TEST_CONFIG}"),
    )
    .unwrap();
    let mut cmd = farm.cmd(["run", "--json", "--out"]);
    let out = cmd
        .arg(&farm.out)
        .arg(&farm.input)
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

fn which(tool: &str) -> String {
    let out = std::process::Command::new("which")
        .arg(tool)
        .output()
        .unwrap();
    text(&out.stdout).trim().to_owned()
}

#[test]
fn run_json_prints_each_event_as_a_line_as_it_happens_then_one_result_per_job() {
    let farm = Farm::new();
    clip(&farm.input.join("a.mpg"), 1);
    clip(&farm.input.join("b.mpg"), 1);
    let mut cmd = farm.cmd(["run", "--json", "--workers", "1", "--out"]);
    let out = cmd.arg(&farm.out).arg(&farm.input).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let lines: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let kinds: Vec<&str> = lines.iter().map(|l| l["type"].as_str().unwrap()).collect();
    // The first job has ended (its event printed) before the second one starts.
    let first_end = kinds.iter().position(|k| *k == "job_succeeded").unwrap();
    let second_start = kinds.iter().rposition(|k| *k == "job_started").unwrap();
    assert!(first_end < second_start, "{kinds:?}");
    assert!(kinds.contains(&"job_progress"), "{kinds:?}");
    assert_eq!(&kinds[kinds.len() - 2..], ["result", "result"], "{kinds:?}");
    assert!(lines[lines.len() - 2..]
        .iter()
        .all(|r| r["state"] == "succeeded"));
}

#[test]
fn without_a_terminal_run_says_how_each_file_ended_by_its_name() {
    let farm = Farm::new();
    clip(&farm.input.join("wedding 1994.mpg"), 1);
    let mut cmd = farm.cmd(["run", "--out"]);
    let out = cmd.arg(&farm.out).arg(&farm.input).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let said = text(&out.stderr);
    assert!(said.contains("wedding 1994.mpg: done in"), "{said}");
}

/// An output that ffprobe reads as whole (header, streams, duration) but that is broken inside
/// passes the usual checks; `decode_check = true` decodes it all and refuses it. The "ffmpeg"
/// here is a wrapper that runs the real one, then spoils the middle of what it wrote.
#[test]
fn decode_check_refuses_an_output_broken_inside() {
    let farm = Farm::new();
    clip(&farm.input.join("tape.mpg"), 3);
    let wrapper = farm.root().join("spoiling-ffmpeg");
    std::fs::write(
        &wrapper,
        format!(
            r#"#!/usr/bin/env python3
import os, subprocess, sys
args = sys.argv[1:]
code = subprocess.call([{real:?}] + args, close_fds=False)
if code == 0 and "-progress" in args:
    # The encode's output follows -y (a measuring output may come after it).
    out = args[args.index("-y") + 1]
    out = out[len("file:"):] if out.startswith("file:") else out
    size = os.path.getsize(out)
    with open(out, "r+b") as f:
        f.seek(size // 2)
        f.write(b"\xff" * 8192)
sys.exit(code)
"#,
            real = which("ffmpeg")
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let config = |check: bool| {
        std::fs::write(
            &farm.config,
            format!("ffmpeg = {wrapper:?}\ndecode_check = {check}\n{TEST_CONFIG}"),
        )
        .unwrap();
    };

    // Without the check the spoiled file is published: its header and duration are right.
    config(false);
    let (code, records) = run_json(&farm, &[]);
    assert_eq!(code, 0, "{records:?}");
    std::fs::remove_file(farm.out.join("tape.mkv")).unwrap();

    config(true);
    let (code, records) = run_json(&farm, &["--force"]);
    assert_eq!(code, 1, "{records:?}");
    let error = records[0]["error"].as_str().unwrap();
    assert!(error.contains("does not decode cleanly"), "{error}");
    assert!(!farm.out.join("tape.mkv").exists(), "nothing published");

    // A sound output passes the check.
    std::fs::write(&farm.config, format!("decode_check = true\n{TEST_CONFIG}")).unwrap();
    let (code, records) = run_json(&farm, &["--force"]);
    assert_eq!(code, 0, "{records:?}");
    assert!(farm.out.join("tape.mkv").is_file());
}

/// The quality check: a profile with `min_ssim` records the SSIM of each output against its
/// source (sampled segments) and fails an output below it.
#[test]
fn a_profile_with_min_ssim_records_the_score_and_refuses_a_poor_encode() {
    let farm = Farm::with_config(
        r#"
[profiles.sharp]
extension = "mkv"
args = ["-map", "0", "-c", "copy", "-c:v", "libx264", "-crf", "17"]
video_codec = "h264"
min_ssim = 0.95

[profiles.mush]
extension = "mkv"
args = ["-map", "0", "-c", "copy", "-c:v", "libx264", "-crf", "51", "-preset", "ultrafast"]
video_codec = "h264"
min_ssim = 0.99
"#,
    );
    clip(&farm.input.join("tape.mpg"), 3);
    let (code, records) = run_json(&farm, &["--profile", "sharp"]);
    assert_eq!(code, 0, "{records:?}");
    let ssim = records[0]["result"]["ssim"].as_f64().unwrap();
    assert!((0.95..=1.0).contains(&ssim), "{ssim}");

    let mush = farm.root().join("mush");
    let mut cmd = farm.cmd(["run", "--json", "--profile", "mush", "--out"]);
    let out = cmd.arg(&mush).arg(&farm.input).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let records = run_results(&out.stdout).unwrap();
    let error = records[0]["error"].as_str().unwrap();
    assert!(
        error.contains("the quality check failed: SSIM 0."),
        "{error}"
    );
    assert_eq!(records[0]["attempts"], 1, "a poor profile is not retried");
    assert!(!mush.join("tape.mkv").exists(), "nothing published");
}

#[test]
fn relative_paths_with_dots_are_taken_as_a_shell_user_means_them() {
    let farm = Farm::new();
    let deep = farm.root().join("work/deep");
    std::fs::create_dir_all(&deep).unwrap();
    clip(&farm.input.join("a.mpg"), 1);
    // From work/deep: ../../in is the input folder, ../enc a folder beside deep.
    let out = farm
        .cmd(["run", "../../in/./a.mpg", "--out", "../enc"])
        .current_dir(&deep)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(farm.root().join("work/enc/a.mkv").is_file());
}
