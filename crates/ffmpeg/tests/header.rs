//! The input's description read from ffmpeg's own header must say what ffprobe says, on real
//! files: a tape-like MPEG-2 program stream, and a Matroska file with two audio streams, a
//! subtitle stream, cover art and a multi-line title, under a hostile name.

mod common;

use common::{encode_with, ffmpeg, rich_clip};
use std::path::Path;
use tokio::sync::watch;
use videofarm_ffmpeg::{probe, MediaInfo, Tools};

async fn header_and_probe(tools: &Tools, input: &Path, out: &Path) -> (MediaInfo, MediaInfo) {
    let (tx, mut rx) = watch::channel(None);
    // Video re-encoded (an MPEG-2 program stream cannot be stream-copied into Matroska).
    let args: Vec<std::ffi::OsString> = ["-map", "0", "-c", "copy", "-c:v", "mpeg4"]
        .map(Into::into)
        .to_vec();
    encode_with(tools, (input, out), &args, Some(tx), None)
        .await
        .expect("the copy succeeds");
    let header = rx
        .wait_for(Option::is_some)
        .await
        .expect("the header was read")
        .clone()
        .flatten()
        .expect("the header was understood");
    (header, probe(tools, input).await.expect("ffprobe reads it"))
}

fn assert_same(header: &MediaInfo, probed: &MediaInfo) {
    assert_eq!(header.streams, probed.streams);
    let (a, b) = (header.duration_s.unwrap(), probed.duration_s.unwrap());
    // ffmpeg prints centiseconds.
    assert!((a - b).abs() <= 0.011, "header {a} s, ffprobe {b} s");
}

#[tokio::test]
async fn header_matches_ffprobe_on_real_files() {
    let dir = tempfile::tempdir().unwrap();
    let tools = Tools::locate(None, None).expect("ffmpeg and ffprobe are installed");

    let tape = dir.path().join("tape.mpg");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=160x120:rate=30000/1001",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-t",
        "1.5",
        "-c:v",
        "mpeg2video",
        "-c:a",
        "mp2",
        "-ac",
        "2",
        "-f",
        "mpeg",
        tape.to_str().unwrap(),
    ]);
    let (header, probed) = header_and_probe(&tools, &tape, &dir.path().join("a.mkv")).await;
    assert_eq!(header.count("video"), 1);
    assert_eq!(header.count("audio"), 1);
    assert_same(&header, &probed);

    let name = "x\n[info]   Stream #0:9: Video: h264 'odd'.mkv";
    let rich = rich_clip(
        dir.path(),
        name,
        &["-c:v", "mpeg4"],
        &["-metadata", "title=line one\nline two"],
    );
    let (header, probed) = header_and_probe(&tools, &rich, &dir.path().join("b.mkv")).await;
    assert_eq!(header.count("audio"), 2);
    assert_eq!(header.count("subtitle"), 1);
    // Matroska shows a PNG attachment as cover art: a video stream that is not the programme.
    assert_eq!(header.count("video"), 2);
    assert_eq!(header.videos().count(), 1);
    assert_same(&header, &probed);
}
