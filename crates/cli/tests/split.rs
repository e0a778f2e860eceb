//! One tape encoded in chunks by several workers: the result is frame for frame the unsplit
//! encode (a lossless profile makes that checkable), audio in sync, nothing left behind.

mod common;

use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Lossless x264 so decoded frames can be compared exactly; `deint` runs the `vhs` profile's
/// deinterlacer, which needs frames on both sides of a cut.
const PROFILES: &str = r#"
[profiles.exact]
extension = "mkv"
args = ["-max_muxing_queue_size", "1000", "-map", "0:v:0", "-map", "0:a?", "-c:v", "libx264", "-qp", "0", "-preset", "ultrafast", "-c:a", "copy"]
video_codec = "h264"
[profiles.exact.split]
video = ["-c:v", "libx264", "-qp", "0", "-preset", "ultrafast"]
streams = ["-map", "1:a?", "-c:a", "copy"]

[profiles.deint]
extension = "mkv"
args = ["-max_muxing_queue_size", "1000", "-map", "0:v:0", "-map", "0:a?", "-vf", "bwdif=mode=send_field:parity=auto:deint=all", "-c:v", "libx264", "-qp", "0", "-preset", "ultrafast", "-c:a", "aac", "-b:a", "128k"]
video_codec = "h264"
[profiles.deint.split]
filter = "bwdif=mode=send_field:parity=auto:deint=all"
frames_per_frame = 2
video = ["-c:v", "libx264", "-qp", "0", "-preset", "ultrafast"]
streams = ["-map", "1:a?", "-c:a", "aac", "-b:a", "128k"]
"#;

fn farm() -> Farm {
    with_profiles(Farm::new())
}

fn with_profiles(farm: Farm) -> Farm {
    let mut config = std::fs::read_to_string(&farm.config).unwrap();
    config.push_str(PROFILES);
    std::fs::write(&farm.config, config).unwrap();
    farm
}

/// A camcorder-like capture: interlaced MPEG-2 with open GOPs and B-frames in MPEG-PS, audio
/// starting 0.3 s after the video.
fn interlaced_tape(path: &Path, secs: u32) {
    let t = secs.to_string();
    ffmpeg(
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=30000/1001",
            "-itsoffset",
            "0.3",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-t",
            &t,
            "-map",
            "0:v",
            "-map",
            "1:a",
            "-c:v",
            "mpeg2video",
            "-flags",
            "+ilme+ildct",
            "-top",
            "1",
            "-g",
            "15",
            "-bf",
            "2",
            "-b:v",
            "3M",
            "-c:a",
            "mp2",
            "-ac",
            "2",
            "-f",
            "mpeg",
        ],
        path,
    );
}

/// Progressive H.264 with B-frames and AAC in MP4.
fn progressive_tape(path: &Path, secs: u32) {
    let t = secs.to_string();
    ffmpeg(
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=25",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=330:sample_rate=48000",
            "-t",
            &t,
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-bf",
            "2",
            "-g",
            "50",
            "-c:a",
            "aac",
            "-b:a",
            "96k",
        ],
        path,
    );
}

/// `run --json` for one file; the records.
fn run(farm: &Farm, input: &Path, out: &Path, profile: &str, split: &str) -> (Vec<Value>, String) {
    let output = farm
        .cmd([
            "-v",
            "run",
            "--json",
            "--workers",
            "2",
            "--profile",
            profile,
            "--split",
            split,
            "--out",
        ])
        .arg(out)
        .arg(input)
        .output()
        .unwrap();
    let records: Vec<Value> = run_results(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "run --json ({e}): {}\n{}",
            text(&output.stdout),
            text(&output.stderr)
        )
    });
    assert!(
        output.status.success(),
        "{records:#?}\n{}",
        text(&output.stderr)
    );
    (records, text(&output.stderr))
}

/// The hash of every decoded frame of the first video stream.
fn frame_hashes(path: &Path) -> Vec<String> {
    column(
        &[
            "-map",
            "0:v:0",
            "-fps_mode",
            "passthrough",
            "-f",
            "framemd5",
            "-",
        ],
        path,
    )
}

/// Every audio packet's timestamp and hash (the audio encoded once, in sync).
fn audio_packets(path: &Path) -> Vec<String> {
    column(&["-map", "0:a", "-c", "copy", "-f", "framemd5", "-"], path)
}

fn column(args: &[&str], path: &Path) -> Vec<String> {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let f: Vec<&str> = l.split(',').map(str::trim).collect();
            // pts and hash for audio (timing matters); hash alone for video frames.
            if args.contains(&"0:a") {
                format!("{} {}", f[2], f[5])
            } else {
                f[5].to_owned()
            }
        })
        .collect()
}

/// Each stream's type and start time.
fn starts(path: &Path) -> String {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_type,start_time",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .unwrap();
    text(&out.stdout)
}

fn leftovers(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect()
}

fn split_equals_whole(
    farm: Farm,
    make_tape: fn(&Path, u32),
    name: &str,
    profile: &str,
    per_frame: usize,
) {
    let tape = farm.input.join(name);
    make_tape(&tape, 5);
    let source_frames = frame_hashes(&tape).len();
    let (split_out, whole_out) = (farm.root().join("split"), farm.root().join("whole"));

    let (records, log) = run(&farm, &tape, &split_out, profile, "1");
    assert_eq!(records.len(), 1, "one job to the user: {records:#?}");
    assert_eq!(records[0]["state"], "succeeded");
    assert!(log.contains("split into chunks chunks=5"), "{log}");
    assert!(log.contains("joining the chunks"), "{log}");
    let (_, log) = run(&farm, &tape, &whole_out, profile, "off");
    assert!(!log.contains("split into chunks"), "{log}");

    let stem = Path::new(name).with_extension("mkv");
    let (split, whole) = (split_out.join(&stem), whole_out.join(&stem));
    let split_frames = frame_hashes(&split);
    assert_eq!(
        split_frames.len(),
        source_frames * per_frame,
        "every frame, once"
    );
    assert!(
        split_frames == frame_hashes(&whole),
        "the split encode decodes to exactly the unsplit encode's frames"
    );
    assert_eq!(
        audio_packets(&split),
        audio_packets(&whole),
        "audio intact and in sync"
    );
    assert_eq!(
        starts(&split),
        starts(&whole),
        "every stream starts where it did"
    );
    assert_eq!(
        leftovers(&split_out),
        Vec::<PathBuf>::new(),
        "no work folder left"
    );
}

#[test]
fn an_interlaced_tape_split_through_the_deinterlacer_is_frame_for_frame_the_unsplit_encode() {
    split_equals_whole(farm(), interlaced_tape, "tape.mpg", "deint", 2);
}

#[test]
fn a_progressive_tape_split_is_frame_for_frame_the_unsplit_encode() {
    split_equals_whole(farm(), progressive_tape, "camcorder.mp4", "exact", 1);
}

#[test]
fn a_tape_split_on_rabbitmq_is_frame_for_frame_the_unsplit_encode() {
    split_equals_whole(
        with_profiles(Farm::amqp("")),
        interlaced_tape,
        "tape.mpg",
        "deint",
        2,
    );
}

#[test]
fn chunks_are_listed_only_when_asked_and_the_tape_counts_once() {
    let farm = farm();
    let tape = farm.input.join("tape.mpg");
    interlaced_tape(&tape, 3);
    run(&farm, &tape, &farm.out, "deint", "1");
    let jobs = |args: &[&str]| -> Vec<Value> {
        let out = farm.run(args);
        assert!(out.status.success(), "{}", text(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    assert_eq!(jobs(&["jobs", "--json"]).len(), 1);
    let all = jobs(&["jobs", "--json", "--all"]);
    assert_eq!(all.len(), 4, "the tape and its three chunks: {all:#?}");
    assert!(all[1..].iter().all(|j| j["parent"] == all[0]["id"]));
    assert_eq!(farm.status()["succeeded"], 1);
}

fn slow_farm() -> Farm {
    slow(farm())
}

fn slow(farm: Farm) -> Farm {
    let mut config = std::fs::read_to_string(&farm.config).unwrap();
    config.push_str(SLOW_SPLIT);
    std::fs::write(&farm.config, config).unwrap();
    farm
}

fn enqueue_split(farm: &Farm, tape: &Path, chunk_secs: &str) -> String {
    let out = farm
        .cmd([
            "enqueue",
            "--profile",
            "slowsplit",
            "--split",
            chunk_secs,
            "--out",
        ])
        .arg(&farm.out)
        .arg(tape)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("queued "))
        .map(|l| l.split(':').next().unwrap().to_owned())
        .expect("queued")
}

fn work_folder(farm: &Farm, stem: &str) -> PathBuf {
    farm.out.join(format!(".{stem}.videofarm-split"))
}

fn chunk_files(work: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(work)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("chunk-") && n.ends_with(".nut"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn killing_every_worker_mid_tape(farm: Farm) {
    let tape = farm.input.join("tape.mpg");
    interlaced_tape(&tape, 8);
    enqueue_split(&farm, &tape, "2");
    let work = work_folder(&farm, "tape.mkv");

    let mut first = farm.spawn_worker("first", 2);
    wait_until(
        "a chunk is done and others are encoding",
        Duration::from_secs(30),
        || {
            chunk_files(&work).len() == 2
                && farm
                    .inspect()
                    .iter()
                    .any(|w| w["active"].as_array().is_some_and(|a| !a.is_empty()))
        },
    );
    let ffmpegs = children_named(first.id(), "ffmpeg");
    signal(first.id(), "KILL");
    first.wait().unwrap();
    let done_before = chunk_files(&work);
    assert!(
        !done_before.is_empty() && done_before.len() < 4,
        "{done_before:?}"
    );
    wait_until("its ffmpegs die with it", Duration::from_secs(5), || {
        ffmpegs.iter().all(|pid| !alive(*pid))
    });

    let second = farm.spawn_worker("second", 2);
    wait_until("the tape is done", Duration::from_secs(90), || {
        farm.out.join("tape.mkv").is_file()
    });
    wait_until("the worker is idle", Duration::from_secs(10), || {
        farm.inspect()
            .iter()
            .all(|w| w["active"].as_array().is_some_and(|a| a.is_empty()))
    });
    reap(second);

    let all = [
        "chunk-00000.nut",
        "chunk-00001.nut",
        "chunk-00002.nut",
        "chunk-00003.nut",
    ];
    let again = encoded_chunks(&farm.log("second"));
    let missing: Vec<String> = all
        .iter()
        .map(|c| c.to_string())
        .filter(|c| !done_before.contains(c))
        .collect();
    assert_eq!(
        again, missing,
        "after the restart only the chunks not finished before the kill are encoded, once each"
    );
    let joins = farm.log("first").matches("joining the chunks").count()
        + farm.log("second").matches("joining the chunks").count();
    assert_eq!(joins, 1, "the join runs exactly once");
    assert_eq!(
        frame_hashes(&farm.out.join("tape.mkv")).len(),
        frame_hashes(&tape).len(),
        "every frame, once"
    );
    assert!(!work.exists(), "no work folder left");
    assert_eq!(leftovers(&farm.out), Vec::<PathBuf>::new());
}

#[test]
fn killing_every_worker_mid_tape_encodes_only_the_chunks_in_flight_again_and_joins_once() {
    killing_every_worker_mid_tape(slow_farm());
}

#[test]
fn on_rabbitmq_killing_every_worker_mid_tape_encodes_only_the_chunks_in_flight_again() {
    killing_every_worker_mid_tape(slow(with_profiles(Farm::amqp(""))));
}

fn cancelling_a_tape(farm: Farm, records: bool) {
    let tape = farm.input.join("tape.mpg");
    interlaced_tape(&tape, 8);
    let id = enqueue_split(&farm, &tape, "2");
    let work = work_folder(&farm, "tape.mkv");
    let worker = farm.spawn_worker("w", 1);
    wait_until("a chunk is encoding", Duration::from_secs(30), || {
        farm.inspect()
            .iter()
            .any(|w| w["active"].as_array().is_some_and(|a| !a.is_empty()))
            && work.exists()
    });
    if records {
        // One job to the user: the tape runs while a chunk of it does.
        let status = farm.status();
        assert_eq!(
            (
                status["running"].as_u64(),
                status["queued"].as_u64(),
                status["retrying"].as_u64()
            ),
            (Some(1), Some(0), Some(0)),
            "{status}"
        );
    }
    let out = farm.run(["cancel", &id]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    if records {
        assert_eq!(farm.job(&id)["state"], "cancelled");
        let out = farm.run(["jobs", "--json", "--all"]);
        let jobs: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
        assert!(
            jobs.iter()
                .filter(|j| j["parent"] == id.as_str())
                .all(|j| j["state"] == "cancelled"),
            "{jobs:#?}"
        );
    }
    wait_until("the worker is idle", Duration::from_secs(10), || {
        farm.inspect()
            .iter()
            .all(|w| w["active"].as_array().is_some_and(|a| a.is_empty()))
    });
    let gone = std::time::Instant::now() + Duration::from_secs(10);
    while work.exists() {
        assert!(
            std::time::Instant::now() < gone,
            "the work folder is still there: {:?}\n{}",
            chunk_files(&work),
            farm.log("w")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Nothing of the tape runs again (its other chunks and the tape itself are dropped).
    std::thread::sleep(Duration::from_secs(2));
    assert!(farm.outputs().is_empty(), "{:?}", farm.outputs());
    assert!(!farm.log("w").contains("joining"), "{}", farm.log("w"));
    reap(worker);
}

#[test]
fn cancelling_a_tape_cancels_its_chunks_and_leaves_no_work_folder() {
    cancelling_a_tape(slow_farm(), true);
}

#[test]
fn on_rabbitmq_cancelling_a_tape_stops_its_chunks_and_leaves_no_work_folder() {
    cancelling_a_tape(slow(with_profiles(Farm::amqp(""))), false);
}

/// Cancel a tape with some chunks done, then retry it: the cancel answers at once, a worker
/// removes the work folder (chunks and all), and the retried tape encodes every chunk it lacks
/// and is whole (before: the finished chunks stayed `succeeded` without their files, and the
/// tape waited for them forever).
fn cancelling_then_retrying_a_half_done_tape(farm: Farm) {
    let tape = farm.input.join("tape.mpg");
    interlaced_tape(&tape, 8);
    let id = enqueue_split(&farm, &tape, "2");
    let work = work_folder(&farm, "tape.mkv");
    let worker = farm.spawn_worker("w", 2);
    wait_until("some chunks are done", Duration::from_secs(60), || {
        chunk_files(&work).len() >= 2
    });
    let asked = std::time::Instant::now();
    let out = farm.run(["cancel", &id]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(&format!("{id}: cancelled")),
        "{}",
        text(&out.stdout)
    );
    eprintln!("cancel answered in {:?}", asked.elapsed());
    wait_until(
        "a worker removes the cancelled tape's work folder",
        Duration::from_secs(20),
        || !work.exists(),
    );
    let out = farm.run(["retry", &id]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_until("the retried tape is done", Duration::from_secs(120), || {
        farm.out.join("tape.mkv").is_file()
    });
    wait_until("the worker is idle", Duration::from_secs(10), || {
        farm.inspect()
            .iter()
            .all(|w| w["active"].as_array().is_some_and(|a| a.is_empty()))
    });
    reap(worker);
    assert_eq!(
        frame_hashes(&farm.out.join("tape.mkv")).len(),
        frame_hashes(&tape).len(),
        "every frame, once"
    );
    // The cancel took the work folder (finished chunks too): the retried tape was planned
    // again and every chunk encoded again, each once.
    assert_eq!(
        farm.log("w").matches("split into chunks").count(),
        2,
        "{}",
        farm.log("w")
    );
    assert!(!work.exists(), "no work folder left");
    assert_eq!(leftovers(&farm.out), Vec::<PathBuf>::new());
}

#[test]
fn cancelling_then_retrying_a_half_done_tape_encodes_the_chunks_it_lacks() {
    cancelling_then_retrying_a_half_done_tape(slow_farm());
}

#[test]
fn on_rabbitmq_cancelling_then_retrying_a_half_done_tape_encodes_the_chunks_it_lacks() {
    cancelling_then_retrying_a_half_done_tape(slow(with_profiles(Farm::amqp(""))));
}

/// A chunk is part of its tape: cancelling one alone is refused with what to do instead, and
/// the tape goes on (before: the chunk was cancelled and its tape waited forever).
#[test]
fn a_chunk_cannot_be_cancelled_alone() {
    let farm = slow_farm();
    let tape = farm.input.join("tape.mpg");
    interlaced_tape(&tape, 8);
    let id = enqueue_split(&farm, &tape, "2");
    let worker = farm.spawn_worker("w", 1);
    let chunk = loop {
        let out = farm.run(["jobs", "--json", "--all"]);
        let jobs: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
        if let Some(chunk) = jobs.iter().find(|j| j["parent"] == id.as_str()) {
            break chunk["id"].as_str().unwrap().to_owned();
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = farm.run(["cancel", &chunk, &id]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(&format!("a chunk of split tape {id}")),
        "{}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains(&format!("{id}: cancelled")),
        "the tape named with it is cancelled all the same: {}",
        text(&out.stdout)
    );
    reap(worker);
}

#[test]
fn a_chunk_that_fails_for_good_fails_its_tape_and_retry_encodes_only_the_failed_chunks() {
    // An ffmpeg that fails every chunk but the first (those open the input with -ss) while
    // the file `broken` exists.
    let staging = tempfile::tempdir().unwrap();
    let broken = staging.path().join("broken");
    std::fs::write(&broken, b"").unwrap();
    let wrapper = staging.path().join("ffmpeg");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nif [ -e '{}' ]; then for a in \"$@\"; do [ \"$a\" = -ss ] && \
             {{ echo '[error] simulated encoder crash' >&2; exit 1; }}; done; fi\nexec ffmpeg \"$@\"\n",
            broken.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let farm = with_profiles(Farm::with_config(&format!(
        "ffmpeg = \"{}\"",
        wrapper.display()
    )));
    let tape = farm.input.join("tape.mpg");
    interlaced_tape(&tape, 4);
    let (records, _) = {
        let output = farm
            .cmd([
                "run",
                "--json",
                "--profile",
                "deint",
                "--split",
                "1",
                "--out",
            ])
            .arg(&farm.out)
            .arg(&tape)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
        let records: Vec<Value> = run_results(&output.stdout).unwrap();
        (records, ())
    };
    assert_eq!(records.len(), 1);
    let error = records[0]["error"].as_str().unwrap();
    assert!(
        error.contains("3 of its 4 chunks failed") && error.contains("simulated encoder crash"),
        "{error}"
    );
    let id = records[0]["id"].as_str().unwrap().to_owned();

    std::fs::remove_file(&broken).unwrap();
    assert!(farm.run(["retry", &id]).status.success());
    let worker = farm.spawn_worker("w", 2);
    wait_until("the tape is done", Duration::from_secs(60), || {
        farm.job(&id)["state"] == "succeeded"
    });
    reap(worker);
    let out = farm.run(["jobs", "--json", "--all"]);
    let jobs: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let first_chunk = jobs
        .iter()
        .find(|j| {
            j["parent"] == id.as_str() && j["output"].as_str().unwrap().ends_with("chunk-00000.nut")
        })
        .unwrap();
    assert_eq!(
        first_chunk["attempts"], 1,
        "the chunk that worked is not encoded again"
    );
    assert_eq!(
        frame_hashes(&farm.out.join("tape.mkv")).len(),
        2 * frame_hashes(&tape).len()
    );
    assert_eq!(leftovers(&farm.out), Vec::<PathBuf>::new());
}

#[test]
fn an_input_that_cannot_be_cut_exactly_is_encoded_whole_and_the_job_says_why() {
    let farm = farm();
    let tape = farm.input.join("vfr.mkv");
    // 25 fps, then 29.97 fps: a variable frame rate.
    ffmpeg(
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=160x120:rate=25:duration=2",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=160x120:rate=30000/1001:duration=2",
            "-filter_complex",
            "[0:v][1:v]concat=n=2:v=1:a=0",
            "-fps_mode",
            "vfr",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
        ],
        &tape,
    );
    let (records, log) = run(&farm, &tape, &farm.out, "exact", "1");
    assert_eq!(records[0]["state"], "succeeded");
    assert!(!log.contains("split into chunks"), "{log}");
    let note = records[0]["result"]["note"].as_str().unwrap_or_default();
    assert!(
        note.contains("not split") && note.contains("frame rate varies"),
        "{records:#?}"
    );
}
