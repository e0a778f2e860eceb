//! The in-process Matroska reader must say what ffprobe says of the files the profiles make,
//! and leave anything it is unsure of to ffprobe.

use std::path::Path;
use std::process::Command;
use videofarm_ffmpeg::{matroska, probe, MediaInfo, Tools};

fn ffmpeg(args: &[&str]) {
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y"])
        .args(args)
        .status()
        .expect("ffmpeg runs");
    assert!(status.success(), "ffmpeg {args:?}");
}

/// 1.5 s of video in `codec`, two audio streams, a subtitle stream and a cover attachment.
fn make(dir: &Path, name: &str, codec: &[&str]) -> std::path::PathBuf {
    let srt = dir.join("subs.srt");
    std::fs::write(&srt, "1\n00:00:00,000 --> 00:00:01,000\nhello\n").unwrap();
    let cover = dir.join("cover.png");
    if !cover.exists() {
        ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            "color=red:size=64x64",
            "-frames:v",
            "1",
            cover.to_str().unwrap(),
        ]);
    }
    let out = dir.join(name);
    let mut args = vec![
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=160x120:rate=25",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=300",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=600",
        "-i",
        srt.to_str().unwrap(),
        "-t",
        "1.5",
        "-map",
        "0",
        "-map",
        "1",
        "-map",
        "2",
        "-map",
        "3",
    ];
    args.extend_from_slice(codec);
    args.extend_from_slice(&[
        "-c:a",
        "aac",
        "-c:s",
        "srt",
        "-attach",
        cover.to_str().unwrap(),
        "-metadata:s:t",
        "mimetype=image/png",
        out.to_str().unwrap(),
    ]);
    ffmpeg(&args);
    out
}

fn comparable(info: &MediaInfo) -> (Vec<(String, Option<String>)>, f64) {
    // The reader names video codecs as ffprobe does; for audio and subtitles only the kind
    // matters to verification (ffprobe says "aac", Matroska "A_AAC").
    let streams = info
        .streams
        .iter()
        .filter(|s| s.codec_type != "attachment" && !s.attached_pic)
        .map(|s| {
            (
                s.codec_type.clone(),
                (s.codec_type == "video").then(|| s.codec_name.clone()),
            )
        })
        .collect();
    (streams, info.duration_s.unwrap())
}

#[tokio::test]
async fn reads_what_ffprobe_reads_for_every_profile_codec() {
    let dir = tempfile::tempdir().unwrap();
    let tools = Tools::locate(None, None).expect("ffmpeg and ffprobe are installed");
    for (name, codec) in [
        ("h264.mkv", &["-c:v", "libx264", "-preset", "ultrafast"][..]),
        (
            "hevc.mkv",
            &[
                "-c:v",
                "libx265",
                "-preset",
                "ultrafast",
                "-x265-params",
                "log-level=error",
            ][..],
        ),
        ("av1.mkv", &["-c:v", "libsvtav1", "-preset", "12"][..]),
        ("mpeg2.mkv", &["-c:v", "mpeg2video"][..]),
        ("mpeg4.mkv", &["-c:v", "mpeg4"][..]),
    ] {
        let file = make(dir.path(), name, codec);
        let read = matroska::read(&file).unwrap_or_else(|| panic!("{name}: read in-process"));
        let probed = probe(&tools, &file).await.unwrap();
        let (a, b) = (comparable(&read), comparable(&probed));
        assert_eq!(a.0, b.0, "{name}");
        assert!(
            (a.1 - b.1).abs() < 0.002,
            "{name}: {} s against ffprobe's {} s",
            a.1,
            b.1
        );
        assert_eq!(read.count("audio"), 2);
        assert_eq!(read.count("subtitle"), 1);
    }
}

#[test]
fn what_it_cannot_vouch_for_goes_to_ffprobe() {
    let dir = tempfile::tempdir().unwrap();
    let whole = make(dir.path(), "whole.mkv", &["-c:v", "mpeg4"]);
    let bytes = std::fs::read(&whole).unwrap();
    // Cut inside the head (before the tracks are complete).
    let head = dir.path().join("head.mkv");
    std::fs::write(&head, &bytes[..200]).unwrap();
    assert_eq!(matroska::read(&head), None);
    // A video codec it does not know by name.
    let odd = make(dir.path(), "odd.mkv", &["-c:v", "huffyuv"]);
    assert_eq!(matroska::read(&odd), None);
    // Not Matroska at all.
    let mp4 = dir.path().join("x.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=64x48",
        "-t",
        "0.5",
        mp4.to_str().unwrap(),
    ]);
    assert_eq!(matroska::read(&mp4), None);
}
