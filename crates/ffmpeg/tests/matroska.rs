//! The in-process Matroska reader must say what ffprobe says of the files the profiles make,
//! and leave anything it is unsure of to ffprobe.

// Its encode runner is not used here.
#[allow(dead_code)]
mod common;

use common::{ffmpeg, rich_clip};
use videofarm_ffmpeg::{matroska, probe, MediaInfo, Tools};

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
        let file = rich_clip(dir.path(), name, codec, &[]);
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
    let whole = rich_clip(dir.path(), "whole.mkv", &["-c:v", "mpeg4"], &[]);
    let bytes = std::fs::read(&whole).unwrap();
    // Cut inside the head (before the tracks are complete).
    let head = dir.path().join("head.mkv");
    std::fs::write(&head, &bytes[..200]).unwrap();
    assert_eq!(matroska::read(&head), None);
    // A video codec it does not know by name.
    let odd = rich_clip(dir.path(), "odd.mkv", &["-c:v", "huffyuv"], &[]);
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
