//! One tape encoded in chunks by several workers: the result is frame for frame the unsplit
//! encode (a lossless profile makes that checkable), audio in sync, nothing left behind.

mod common;

use common::split::*;
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

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

/// Every audio packet's timestamp and hash (the audio encoded once, in sync).
fn audio_packets(path: &Path) -> Vec<String> {
    column(&["-map", "0:a", "-c", "copy", "-f", "framemd5", "-"], path)
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

    let (records, log) = run_batch(&farm, &tape, &split_out, profile, "1");
    assert_eq!(records.len(), 1, "one job to the user: {records:#?}");
    assert_eq!(records[0]["state"], "succeeded");
    assert!(log.contains("split into chunks chunks=5"), "{log}");
    assert!(log.contains("joining the chunks"), "{log}");
    let (_, log) = run_batch(&farm, &tape, &whole_out, profile, "off");
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
    run_batch(&farm, &tape, &farm.out, "deint", "1");
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
    let (records, log) = run_batch(&farm, &tape, &farm.out, "exact", "1");
    assert_eq!(records[0]["state"], "succeeded");
    assert!(!log.contains("split into chunks"), "{log}");
    let note = records[0]["result"]["note"].as_str().unwrap_or_default();
    assert!(
        note.contains("not split") && note.contains("frame rate varies"),
        "{records:#?}"
    );
}

/// A capture `secs` long: `video` from a lavfi source through `codec`, a tone through `audio`,
/// in ffmpeg's muxer `muxer`.
fn capture(path: &Path, secs: u32, source: &str, codec: &[&str], audio: &[&str], muxer: &str) {
    let t = secs.to_string();
    let mut args = vec![
        "-f",
        "lavfi",
        "-i",
        source,
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-t",
        &t,
        "-ac",
        "2",
    ];
    args.extend_from_slice(codec);
    args.extend_from_slice(audio);
    args.extend_from_slice(&["-f", muxer]);
    ffmpeg(&args, path);
}

/// A DVD recorder's MPEG-PS: MPEG-2, AC-3, and DVD navigation packets (a data stream).
fn dvd_tape(path: &Path, secs: u32) {
    capture(
        path,
        secs,
        "testsrc2=size=352x288:rate=25",
        &["-c:v", "mpeg2video", "-g", "15", "-bf", "2", "-b:v", "4M"],
        &["-c:a", "ac3"],
        "dvd",
    );
}

/// A capture card's MPEG-TS: interlaced MPEG-2 (top field first) and MP2.
fn ts_tape(path: &Path, secs: u32) {
    capture(
        path,
        secs,
        "testsrc2=size=320x240:rate=50,tinterlace=mode=interleave_top,setfield=tff",
        &[
            "-c:v",
            "mpeg2video",
            "-flags",
            "+ilme+ildct",
            "-top",
            "1",
            "-g",
            "12",
            "-bf",
            "2",
            "-b:v",
            "3M",
        ],
        &["-c:a", "mp2"],
        "mpegts",
    );
}

/// DV in AVI, as a FireWire capture of a DV or Hi8 (through a DV bridge) camcorder writes it:
/// PAL DV (intra-only, bottom field first) and PCM.
fn dv_tape(path: &Path, secs: u32) {
    capture(
        path,
        secs,
        "testsrc2=size=720x576:rate=25",
        &["-c:v", "dvvideo", "-pix_fmt", "yuv420p"],
        &["-c:a", "pcm_s16le"],
        "avi",
    );
}

/// A camera's `.mov`: H.264 with B-frames and PCM.
fn mov_tape(path: &Path, secs: u32) {
    capture(
        path,
        secs,
        "testsrc2=size=320x240:rate=30000/1001",
        &[
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-bf",
            "2",
            "-g",
            "30",
        ],
        &["-c:a", "pcm_s16le"],
        "mov",
    );
}

#[test]
fn a_dvd_recorders_program_stream_splits_frame_for_frame() {
    split_equals_whole(farm(), dvd_tape, "recorder.vob", "exact", 1);
}

#[test]
fn a_capture_cards_transport_stream_splits_frame_for_frame_through_the_deinterlacer() {
    split_equals_whole(farm(), ts_tape, "card.ts", "deint", 2);
}

#[test]
fn dv_in_avi_splits_frame_for_frame() {
    split_equals_whole(farm(), dv_tape, "camcorder.avi", "exact", 1);
}

#[test]
fn a_cameras_mov_splits_frame_for_frame() {
    split_equals_whole(farm(), mov_tape, "camera.mov", "exact", 1);
}
