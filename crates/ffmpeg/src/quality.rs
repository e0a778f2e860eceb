//! The quality check: SSIM of an output against its source on a few sampled segments, at the
//! output's resolution (the source is brought to it; profiles never upscale).

use crate::file_url;
use crate::tools::Tools;
use std::path::Path;
use std::process::Stdio;

/// Where segments are taken, as fractions of the duration, and how long each is.
const SAMPLES: &[f64] = &[0.2, 0.5, 0.8];
const SEGMENT_S: f64 = 2.0;

/// The mean SSIM ("All") of `output` against `source` over the sampled segments of a file of
/// `duration_s` seconds, whose first `lead_s` seconds of source were cut (blank tape).
pub async fn sampled_ssim(
    tools: &Tools,
    source: &Path,
    output: &Path,
    (duration_s, lead_s): (f64, f64),
) -> Result<f64, String> {
    let duration = duration_s.max(0.0);
    let segment = SEGMENT_S.min(duration.max(0.1));
    let mut scores = Vec::new();
    for at in SAMPLES {
        let start = ((duration - segment) * at).max(0.0);
        // Both sides the same size, rate and pixel format, then compared frame by frame.
        let graph = "[1:v][0:v]scale2ref=flags=bicubic[s][o];\
                     [o]format=yuv420p,setsar=1[oo];[s]format=yuv420p,setsar=1[ss];[oo][ss]ssim";
        let result = tokio::process::Command::new(&tools.ffmpeg)
            .args(["-nostdin", "-hide_banner", "-nostats", "-loglevel", "info"])
            .args([
                "-ss",
                &format!("{start:.3}"),
                "-t",
                &format!("{segment:.3}"),
            ])
            .arg("-i")
            .arg(file_url(output))
            .args([
                "-ss",
                &format!("{:.3}", start + lead_s.max(0.0)),
                "-t",
                &format!("{segment:.3}"),
            ])
            .arg("-i")
            .arg(file_url(source))
            .args(["-lavfi", graph, "-f", "null", "-"])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| format!("cannot run {}: {e}", tools.ffmpeg.display()))?;
        let stderr = String::from_utf8_lossy(&result.stderr);
        let score = stderr
            .lines()
            .filter(|l| l.contains("SSIM") && l.contains("All:"))
            .filter_map(|l| {
                l.split("All:")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .next_back();
        match score {
            Some(score) if result.status.success() => scores.push(score),
            _ => {
                return Err(format!(
                    "ffmpeg could not compare the segment at {start:.1} s: {}",
                    stderr.lines().last().unwrap_or_default().trim()
                ))
            }
        }
    }
    Ok(scores.iter().sum::<f64>() / scores.len().max(1) as f64)
}
