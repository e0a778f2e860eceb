//! Treatment chosen from the tape: the `vhs` profile deinterlaces in the field order the tape
//! measures, not the one its flags claim, and leaves a progressive tape alone; whole and split,
//! on both backends.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;

/// A white bar moving down 100 px/s over black, shot at 50 fields a second and woven bottom
/// field first, in MPEG-2 flagged top field first (a capture card's wrong flags): deinterlaced
/// in the flagged order the bar stalls every other frame. Its bottom 8 lines are noise, as a
/// VCR's head switch leaves them, and its sound is a quiet tone (about -30 LUFS).
fn mislabelled_tape(path: &Path) {
    ffmpeg(
        &[
            "-f",
            "lavfi",
            "-i",
            "color=black:s=320x240:r=50[bg];color=white:s=320x16:r=50[bar];\
             color=gray:s=320x8:r=50,noise=alls=100:allf=t+u[switch];\
             [bg][bar]overlay=x=0:y='mod(t*100,200)'[moving];[moving][switch]overlay=0:H-8,\
             tinterlace=mode=interleave_bottom,setfield=tff",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000,volume=-8dB",
            "-t",
            "4",
            "-c:v",
            "mpeg2video",
            "-flags",
            "+ilme+ildct",
            "-top",
            "1",
            "-b:v",
            "4M",
            "-f",
            "mpeg",
        ],
        path,
    );
}

/// The integrated loudness (LUFS) of `video`'s audio, as `ebur128` measures it.
fn loudness(video: &Path) -> f64 {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostats", "-i"])
        .arg(video)
        .args(["-map", "0:a:0", "-af", "ebur128", "-f", "null", "-"])
        .output()
        .unwrap();
    let said = text(&out.stderr);
    let summary = said.rsplit("Integrated loudness:").next().unwrap();
    summary
        .split_whitespace()
        .skip_while(|w| *w != "I:")
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no loudness in {summary}"))
}

/// The brightest sample in the bottom 8 lines of every frame of `video`.
fn brightest_at_the_bottom(video: &Path) -> u8 {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(video)
        .args(["-vf", "crop=iw:8:0:ih-8,format=gray", "-f", "rawvideo", "-"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    out.stdout.iter().copied().max().expect("frames")
}

/// The steps at which the bar does not move forward, frame to frame, in `video` (the rows it
/// moves over, above the head switch's).
fn stalls(video: &Path) -> usize {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(video)
        .args(["-vf", "crop=2:216:160:0,format=gray", "-f", "rawvideo", "-"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (height, width) = (216, 2);
    let rows: Vec<f64> = out
        .stdout
        .chunks(height * width)
        .filter_map(|frame| {
            let lit: Vec<usize> = (0..height).filter(|r| frame[r * width] > 128).collect();
            (!lit.is_empty()).then(|| lit.iter().sum::<usize>() as f64 / lit.len() as f64)
        })
        .collect();
    assert!(rows.len() > 150, "{} frames with the bar", rows.len());
    // A wrap from the bottom back to the top is a jump, not a stall.
    rows.windows(2)
        .filter(|w| w[1] <= w[0] && w[0] - w[1] < 50.0)
        .count()
}

fn deinterlaced_as_measured(farm: Farm) {
    let tape = farm.input.join("mislabelled.mpg");
    mislabelled_tape(&tape);
    for split in ["off", "1"] {
        let (job, output) = run_one(&farm, &tape, "vhs", split);
        let said = job["result"]["tape"]["treatment"]
            .as_str()
            .unwrap_or_default();
        assert!(
            said.starts_with(
                "deinterlaced bottom field first, as measured; head-switching noise masked (bottom 8 lines); loudness normalised to -16 LUFS (measured -"
            ),
            "{job:#}"
        );
        let output = output.as_path();
        // A handful at most (the wrap, a lossy edge); in the flags' order about every other.
        let stalled = stalls(output);
        assert!(
            stalled <= 5,
            "split {split}: the bar stalls {stalled} times"
        );
        let lufs = loudness(output);
        assert!((lufs + 16.0).abs() <= 1.5, "split {split}: {lufs} LUFS");
        let bright = brightest_at_the_bottom(output);
        assert!(
            bright <= 24,
            "split {split}: the head switch's lines are black, not {bright}"
        );
    }
}

#[test]
fn a_tape_flagged_top_first_but_woven_bottom_first_is_deinterlaced_bottom_first() {
    let farm = Farm::new();
    deinterlaced_as_measured(farm);
}

#[test]
fn on_rabbitmq_a_mislabelled_tape_is_deinterlaced_as_measured_whole_and_split() {
    deinterlaced_as_measured(Farm::amqp(""));
}

/// Without the treatment (the same recipe, its parity left to the flags) the bar stalls: what
/// the test above would see if the survey were ignored.
#[test]
fn the_flags_alone_deinterlace_the_mislabelled_tape_wrongly() {
    let farm = Farm::new();
    let config = std::fs::read_to_string(&farm.config).unwrap();
    let flags_only = r#"
[profiles.flags]
extension = "mkv"
args = ["-map", "0:v:0", "-vf", "bwdif=mode=send_field:parity=auto:deint=all", "-c:v", "libx264", "-crf", "18", "-preset", "veryfast"]
video_codec = "h264"
audio = "none"
"#;
    std::fs::write(&farm.config, config + flags_only).unwrap();
    let tape = farm.input.join("mislabelled.mpg");
    mislabelled_tape(&tape);
    let (_, output) = run_one(&farm, &tape, "flags", "off");
    let output = output.as_path();
    let stalled = stalls(output);
    assert!(stalled > 50, "the bar stalls {stalled} times");
    assert!(
        brightest_at_the_bottom(output) > 100,
        "the head switch's noise is left"
    );
}

#[test]
fn a_progressive_tape_is_not_deinterlaced() {
    let farm = Farm::new();
    let tape = farm.input.join("progressive.mpg");
    ffmpeg(
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x240:rate=25",
            "-t",
            "3",
            "-c:v",
            "mpeg2video",
            "-b:v",
            "3M",
            "-f",
            "mpeg",
        ],
        &tape,
    );
    let (job, _) = run_one(&farm, &tape, "vhs", "off");
    assert_eq!(
        job["result"]["tape"]["treatment"], "not deinterlaced: measured progressive",
        "{job:#}"
    );
    assert_eq!(
        job["result"]["frames"], 75,
        "a frame per frame, not one per field"
    );
}
