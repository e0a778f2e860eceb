//! Bad input gets a clear error, fails only its own job, and loses or leaves nothing.

mod common;

use common::*;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

fn is_root() -> bool {
    // SAFETY-free check: root's uid in /proc/self/status.
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .is_some_and(|l| l.split_whitespace().nth(1) == Some("0"))
}

/// `run --json` over the farm's input folder: the exit code and the records.
fn run_json(farm: &Farm) -> (Option<i32>, Vec<Value>) {
    let out = farm
        .cmd(["run", "--json", "--out"])
        .arg(&farm.out)
        .arg(&farm.input)
        .output()
        .unwrap();
    let records = run_results(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", text(&out.stdout), text(&out.stderr)));
    (out.status.code(), records)
}

fn by_input<'a>(records: &'a [Value], name: &str) -> &'a Value {
    records
        .iter()
        .find(|r| r["input"].as_str().is_some_and(|i| i.ends_with(name)))
        .unwrap_or_else(|| panic!("a job for {name} in {records:?}"))
}

#[test]
fn each_bad_input_fails_alone_with_a_plain_reason_and_the_good_one_completes() {
    let farm = Farm::new();
    clip(&farm.input.join("good.mpg"), 1);
    std::fs::write(farm.input.join("empty.mpg"), b"").unwrap();
    std::fs::write(
        farm.input.join("text.mpg"),
        "Dear diary, this is not a video.\n",
    )
    .unwrap();
    truncated_clip(&farm.input.join("truncated.mkv"), farm.root());
    let missing = farm.root().join("gone.mpg");

    let mut cmd = farm.cmd(["run", "--json", "--out"]);
    let out = cmd
        .arg(&farm.out)
        .arg(&farm.input)
        .arg(&missing)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let records: Vec<Value> = run_results(&out.stdout).unwrap();
    assert_eq!(records.len(), 5);
    assert_eq!(by_input(&records, "good.mpg")["state"], "succeeded");
    for (name, reason, attempts) in [
        ("empty.mpg", "the file is empty (0 bytes)", 1),
        ("text.mpg", "not a video", 1),
        ("gone.mpg", "the file does not exist", 1),
        ("truncated.mkv", "truncated", 2),
    ] {
        let job = by_input(&records, name);
        assert_eq!(job["state"], "failed", "{name}");
        let error = job["error"].as_str().unwrap();
        assert!(
            error.contains(name) && error.contains(reason),
            "{name}: {error}"
        );
        assert!(!error.contains('\n'), "one line: {error}");
        assert_eq!(
            job["attempts"], attempts,
            "{name}: bad input is not retried, a failed encode is"
        );
    }
    assert_eq!(farm.status()["failed"], 4);
    assert_eq!(farm.status()["succeeded"], 1);
    assert_eq!(
        farm.outputs(),
        vec![std::path::PathBuf::from("good.mkv")],
        "no partial files"
    );

    // The `jobs` table shows each reason too.
    let listing = text(&farm.run(["jobs", "--state", "failed"]).stdout);
    assert!(
        listing.contains("the file is empty (0 bytes)") && listing.contains("does not exist"),
        "{listing}"
    );
}

/// Runs `videofarm` as an unprivileged user when the tests run as root (root reads anything).
fn as_unprivileged(farm: &Farm, args: &[&std::ffi::OsStr]) -> std::process::Output {
    let mut cmd = farm.cmd(args);
    if is_root() {
        let inner = cmd;
        let mut wrapped = Command::new("setpriv");
        wrapped
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(inner.get_program());
        wrapped.args(inner.get_args());
        for (key, value) in inner.get_envs() {
            match value {
                Some(v) => wrapped.env(key, v),
                None => wrapped.env_remove(key),
            };
        }
        cmd = wrapped;
    }
    cmd.output().expect("videofarm runs")
}

#[test]
fn an_unreadable_file_and_an_unwritable_output_folder_fail_their_own_jobs() {
    let farm = Farm::new();
    for dir in [farm.root(), farm.input.as_path()] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    clip(&farm.input.join("fine.mpg"), 1);
    clip(&farm.input.join("secret.mpg"), 1);
    std::fs::set_permissions(
        farm.input.join("secret.mpg"),
        std::fs::Permissions::from_mode(0o000),
    )
    .unwrap();
    std::fs::create_dir_all(&farm.out).unwrap();
    std::fs::set_permissions(&farm.out, std::fs::Permissions::from_mode(0o777)).unwrap();

    let out = as_unprivileged(
        &farm,
        &[
            "run".as_ref(),
            "--json".as_ref(),
            "--out".as_ref(),
            farm.out.as_os_str(),
            farm.input.as_os_str(),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let records: Vec<Value> = run_results(&out.stdout).unwrap();
    assert_eq!(by_input(&records, "fine.mpg")["state"], "succeeded");
    let secret = by_input(&records, "secret.mpg");
    assert_eq!(secret["state"], "failed");
    assert!(
        secret["error"]
            .as_str()
            .unwrap()
            .contains("permission denied"),
        "{secret}"
    );

    let read_only = farm.root().join("read-only");
    std::fs::create_dir_all(&read_only).unwrap();
    std::fs::set_permissions(&read_only, std::fs::Permissions::from_mode(0o555)).unwrap();
    let fine = farm.input.join("fine.mpg");
    let out = as_unprivileged(
        &farm,
        &[
            "run".as_ref(),
            "--json".as_ref(),
            "--out".as_ref(),
            read_only.as_os_str(),
            fine.as_os_str(),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let records: Vec<Value> = run_results(&out.stdout).unwrap();
    let error = records[0]["error"].as_str().unwrap();
    assert!(
        error.contains("not writable") && error.contains("read-only"),
        "{error}"
    );
    assert_eq!(records[0]["attempts"], 1, "not retried");
}

#[test]
fn a_disk_that_fills_up_mid_encode_fails_the_job_and_leaves_no_partial_file() {
    let farm = Farm::new();
    noise_clip(&farm.input.join("noise.mpg"), 2);
    clip(&farm.input.join("small.mpg"), 1);
    let small = farm.root().join("small");
    let _mount = mount_tiny_fs(&small, "400k");
    let out_dir = small.join("out");

    let mut cmd = farm.cmd(["run", "--json", "--workers", "1", "--out"]);
    let out = cmd.arg(&out_dir).arg(&farm.input).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let records: Vec<Value> = run_results(&out.stdout).unwrap();
    let noise = by_input(&records, "noise.mpg");
    assert_eq!(noise["state"], "failed");
    let error = noise["error"].as_str().unwrap();
    assert!(
        error.contains("the disk filled up") && error.contains("noise.mkv"),
        "{error}"
    );
    assert!(noise["stderr_tail"]
        .as_str()
        .unwrap()
        .contains("No space left on device"));
    assert_eq!(
        by_input(&records, "small.mpg")["state"],
        "succeeded",
        "the other job completes"
    );
    let left: Vec<_> = std::fs::read_dir(&out_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        left,
        vec![std::ffi::OsString::from("small.mkv")],
        "no partial file is left"
    );
}

/// A capture with garbage in the middle (a dropout, a bad sector): its encode succeeds, but
/// the job says the input is damaged, and with `decode_errors = "fail"` it fails instead.
#[test]
fn damage_inside_an_input_is_reported_and_can_fail_the_job() {
    let make = |farm: &Farm| {
        let tape = farm.input.join("dropout.mpg");
        clip(&tape, 3);
        let mut bytes = std::fs::read(&tape).unwrap();
        let (start, len) = (bytes.len() / 2, bytes.len() / 8);
        let mut x: u32 = 12345;
        for b in &mut bytes[start..start + len] {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            *b = (x >> 16) as u8;
        }
        std::fs::write(&tape, bytes).unwrap();
    };
    let farm = Farm::new();
    make(&farm);
    let (code, records) = run_json(&farm);
    assert_eq!(code, Some(0), "{records:#?}");
    let warnings = records[0]["result"]["warnings"][0]
        .as_str()
        .unwrap_or_default();
    assert!(
        warnings.contains("errors while reading the input"),
        "{records:#?}"
    );
    // `jobs` says so too.
    let listing = text(&farm.run(["jobs"]).stdout);
    assert!(listing.contains("damaged: ffmpeg reported"), "{listing}");

    let strict = Farm::with_config("decode_errors = \"fail\"");
    make(&strict);
    let (code, records) = run_json(&strict);
    assert_eq!(code, Some(1), "{records:#?}");
    let error = records[0]["error"].as_str().unwrap();
    assert!(
        error.contains("dropout.mpg") && error.contains("damaged"),
        "{error}"
    );
    assert_eq!(records[0]["attempts"], 1, "damage is not retried");
    assert!(strict.outputs().is_empty(), "{:?}", strict.outputs());

    // Decoding each output whole does not turn the damage copied with the audio (already
    // reported) into a failure: only what was encoded again is decoded.
    let checked = Farm::with_config("decode_check = true");
    make(&checked);
    let (code, records) = run_json(&checked);
    assert_eq!(code, Some(0), "{records:#?}");
    assert!(
        records[0]["result"]["warnings"][0]
            .as_str()
            .is_some_and(|w| w.contains("errors while reading the input")),
        "{records:#?}"
    );
}

/// A still picture with a video's name is refused, not turned into a one-frame "video".
#[test]
fn a_picture_named_like_a_video_is_refused() {
    let farm = Farm::new();
    // A JPEG, and a GIF (it was encoded into a one-frame video), each named like a video.
    for (made, named) in [("photo.jpg", "holiday.avi"), ("logo.gif", "logo.avi")] {
        let picture = farm.root().join(made);
        ffmpeg(
            &[
                "-f",
                "lavfi",
                "-i",
                "testsrc=size=160x120",
                "-frames:v",
                "1",
            ],
            &picture,
        );
        std::fs::rename(&picture, farm.input.join(named)).unwrap();
    }
    let (code, records) = run_json(&farm);
    assert_eq!(code, Some(1), "{records:#?}");
    for name in ["holiday.avi", "logo.avi"] {
        let record = by_input(&records, name);
        let error = record["error"].as_str().unwrap();
        assert!(
            error.contains(name) && error.contains("still picture"),
            "{error}"
        );
        assert_eq!(record["attempts"], 1);
    }
    assert!(farm.outputs().is_empty(), "{:?}", farm.outputs());
}

/// A DVD recorder's MPEG-PS carries a navigation data stream that Matroska cannot hold: the
/// built-in profiles leave it out and say so on the result (it failed three times, the reason
/// "Error initializing output stream 0:2 --").
#[test]
fn a_dvd_recorders_navigation_stream_is_left_out_and_said() {
    let farm = Farm::new();
    clip_muxed(&farm.input.join("recorder.mpg"), 1, "dvd");
    let (code, records) = run_json(&farm);
    assert_eq!(code, Some(0), "{records:#?}");
    let note = records[0]["result"]["note"].as_str().unwrap_or_default();
    assert!(
        note.contains("left out 1 data stream (dvd_nav_packet)"),
        "{records:#?}"
    );
    assert_eq!(records[0]["attempts"], 1, "{records:#?}");
    assert!(farm.out.join("recorder.mkv").is_file());
}

/// A named pipe among the inputs fails alone with its reason, at once, and the good file beside
/// it is encoded (before, `run` hung for good without queueing even the good file).
#[test]
fn a_named_pipe_among_the_inputs_fails_alone_and_never_hangs_the_run() {
    let farm = Farm::new();
    clip(&farm.input.join("good.mpg"), 1);
    let pipe = farm.input.join("pipe.mpg");
    assert!(std::process::Command::new("mkfifo")
        .arg(&pipe)
        .status()
        .unwrap()
        .success());
    let mut cmd = farm.cmd(["run", "--json", "--out"]);
    let mut child = cmd
        .arg(&farm.out)
        .arg(&pipe)
        .arg(farm.input.join("good.mpg"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > std::time::Duration::from_secs(60) {
            let _ = child.kill();
            panic!("run hung on the named pipe");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let records: Vec<Value> = run_results(&out.stdout).unwrap();
    assert_eq!(by_input(&records, "good.mpg")["state"], "succeeded");
    let job = by_input(&records, "pipe.mpg");
    assert_eq!(job["state"], "failed");
    let error = job["error"].as_str().unwrap();
    assert!(
        error.contains("pipe.mpg") && error.contains("named pipe"),
        "{error}"
    );
}
