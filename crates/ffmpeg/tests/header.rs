//! The input's description read from ffmpeg's own header must say what ffprobe says, on real
//! files: a tape-like MPEG-2 program stream, and a Matroska file with two audio streams, a
//! subtitle stream, cover art and a multi-line title, under a hostile name.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use videofarm_ffmpeg::{encode, probe, EncodeRequest, MediaInfo, Tools};

fn ffmpeg(args: &[&str]) {
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y"])
        .args(args)
        .status()
        .expect("ffmpeg runs");
    assert!(status.success(), "ffmpeg {args:?}");
}

async fn header_and_probe(tools: &Tools, input: &Path, out: &Path) -> (MediaInfo, MediaInfo) {
    let (tx, mut rx) = watch::channel(None);
    let duration = OnceLock::new();
    // Video re-encoded (an MPEG-2 program stream cannot be stream-copied into Matroska).
    let args: Vec<String> = ["-map", "0", "-c", "copy", "-c:v", "mpeg4"]
        .map(String::from)
        .to_vec();
    let request = EncodeRequest {
        tools,
        input,
        output: out,
        args: &args,
        duration_s: &duration,
        input_info: Some(tx),
        stall_after: Duration::from_secs(30),
        timeout: None,
    };
    let (progress, _) = watch::channel(Default::default());
    encode(&request, &progress, &CancellationToken::new())
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

    let srt = dir.path().join("subs.srt");
    std::fs::write(&srt, "1\n00:00:00,000 --> 00:00:01,000\nhello\n").unwrap();
    let cover = dir.path().join("cover.png");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "color=red:size=64x64",
        "-frames:v",
        "1",
        cover.to_str().unwrap(),
    ]);
    let name = "x\n[info]   Stream #0:9: Video: h264 'odd'.mkv";
    let rich = dir.path().join(name);
    ffmpeg(&[
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
        "2",
        "-map",
        "0",
        "-map",
        "1",
        "-map",
        "2",
        "-map",
        "3",
        "-c:v",
        "mpeg4",
        "-c:a",
        "aac",
        "-c:s",
        "srt",
        "-metadata",
        "title=line one\nline two",
        "-attach",
        cover.to_str().unwrap(),
        "-metadata:s:t",
        "mimetype=image/png",
        rich.to_str().unwrap(),
    ]);
    let (header, probed) = header_and_probe(&tools, &rich, &dir.path().join("b.mkv")).await;
    assert_eq!(header.count("audio"), 2);
    assert_eq!(header.count("subtitle"), 1);
    // Matroska shows a PNG attachment as cover art: a video stream that is not the programme.
    assert_eq!(header.count("video"), 2);
    assert_eq!(header.videos().count(), 1);
    assert_same(&header, &probed);
}
