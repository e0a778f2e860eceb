//! Clips for the ffmpeg crate's tests, made by the real ffmpeg from lavfi sources.

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn ffmpeg(args: &[&str]) {
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y"])
        .args(args)
        .env("SVT_LOG", "1")
        .status()
        .expect("ffmpeg runs");
    assert!(status.success(), "ffmpeg {args:?}");
}

/// 1.5 s of video encoded with `codec`, two audio streams, a subtitle stream and a PNG
/// attachment (which Matroska readers show as cover art), in `dir/name`; `extra` options go
/// before the output (e.g. metadata).
#[rustfmt::skip]
pub fn rich_clip(dir: &Path, name: &str, codec: &[&str], extra: &[&str]) -> PathBuf {
    let srt = dir.join("subs.srt");
    std::fs::write(&srt, "1\n00:00:00,000 --> 00:00:01,000\nhello\n").unwrap();
    let cover = dir.join("cover.png");
    if !cover.exists() {
        ffmpeg(&["-f", "lavfi", "-i", "color=red:size=64x64", "-frames:v", "1", cover.to_str().unwrap()]);
    }
    let out = dir.join(name);
    let mut args = vec![
        "-f", "lavfi", "-i", "testsrc=size=160x120:rate=25",
        "-f", "lavfi", "-i", "sine=frequency=300",
        "-f", "lavfi", "-i", "sine=frequency=600",
        "-i", srt.to_str().unwrap(),
        "-t", "1.5", "-map", "0", "-map", "1", "-map", "2", "-map", "3",
    ];
    args.extend_from_slice(codec);
    args.extend_from_slice(&["-c:a", "aac", "-c:s", "srt"]);
    args.extend_from_slice(extra);
    args.extend_from_slice(&[
        "-attach", cover.to_str().unwrap(), "-metadata:s:t", "mimetype=image/png",
        out.to_str().unwrap(),
    ]);
    ffmpeg(&args);
    out
}

/// One encode of `input` to `out` with the profile's `args`, as a worker runs it: the input's
/// header sent to `input_info`, its progress left unread; what the measures of `analysis`
/// found.
pub async fn encode_with(
    tools: &videofarm_ffmpeg::Tools,
    (input, out): (&Path, &Path),
    args: &[std::ffi::OsString],
    input_info: Option<tokio::sync::watch::Sender<Option<Option<videofarm_ffmpeg::MediaInfo>>>>,
    analysis: Option<&[std::ffi::OsString]>,
) -> Result<Option<videofarm_core::report::Signal>, videofarm_ffmpeg::EncodeError> {
    let duration = std::sync::OnceLock::new();
    let request = videofarm_ffmpeg::EncodeRequest {
        tools,
        input_args: &[],
        input,
        format: None,
        output: out,
        args,
        duration_s: &duration,
        input_info,
        stall_after: std::time::Duration::from_secs(30),
        timeout: None,
        analysis,
    };
    let (progress, _) = tokio::sync::watch::channel(Default::default());
    videofarm_ffmpeg::encode(
        &request,
        &progress,
        &tokio_util::sync::CancellationToken::new(),
    )
    .await
    .map(|encoded| encoded.signal)
}
