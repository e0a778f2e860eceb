//! Proving a lossless encode: the output's decoded frames hash, one by one, to exactly the
//! source's (ffmpeg's `framemd5`, over the first video stream's frames as they decode).

use crate::probe::strip_file_prefix;
use crate::{file_url, Tools};
use std::ffi::OsString;
use std::path::Path;

/// The `framemd5` of the first video stream of `path`: a line per decoded frame (stream, dts,
/// pts, duration, size, MD5), after a `#` header.
pub async fn frame_md5s(tools: &Tools, path: &Path) -> Result<String, String> {
    let mut args: Vec<OsString> = ["-nostdin", "-hide_banner", "-v", "error", "-i"]
        .map(OsString::from)
        .to_vec();
    args.push(file_url(path));
    args.extend(
        [
            "-map",
            "0:v:0",
            "-fps_mode",
            "passthrough",
            "-f",
            "framemd5",
            "-",
        ]
        .map(OsString::from),
    );
    let output = tools.ffmpeg_output(args).await?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let first = stderr.lines().map(str::trim).find(|l| !l.is_empty());
        return Err(first.map_or_else(
            || format!("ffmpeg could not decode it ({})", output.status),
            |l| strip_file_prefix(l, path),
        ));
    }
    String::from_utf8(output.stdout).map_err(|_| "ffmpeg's framemd5 was not text".to_owned())
}

/// Each frame's MD5, in order.
fn hashes(framemd5: &str) -> Vec<&str> {
    framemd5
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.rsplit(',').next().map(str::trim))
        .collect()
}

/// Whether `output` decodes to exactly `source`'s frames: the output's `framemd5` (the master's
/// per-frame MD5 sidecar) when it does, the first difference in words when it does not.
pub async fn prove_lossless(tools: &Tools, source: &Path, output: &Path) -> Result<String, String> {
    let (ours, theirs) = tokio::join!(frame_md5s(tools, output), frame_md5s(tools, source));
    let ours = ours.map_err(|e| format!("its frames could not be hashed ({e})"))?;
    let theirs = theirs.map_err(|e| format!("the source's frames could not be hashed ({e})"))?;
    compare(&ours, &theirs)?;
    Ok(ours)
}

fn compare(output: &str, source: &str) -> Result<(), String> {
    let (ours, theirs) = (hashes(output), hashes(source));
    if let Some(i) = ours.iter().zip(&theirs).position(|(a, b)| a != b) {
        return Err(format!(
            "it is not lossless: frame {} decodes differently from the source's",
            i + 1
        ));
    }
    if ours.len() != theirs.len() {
        return Err(format!(
            "it is not lossless: it has {} frames, the source {}",
            ours.len(),
            theirs.len()
        ));
    }
    if ours.is_empty() {
        return Err("no frame could be hashed".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "#format: frame checksums\n#tb 0: 1/25\n0,          0,          0,        1,   115200, 4c7c\n0,          1,          1,        1,   115200, 9f00\n";

    #[test]
    fn frames_are_compared_by_their_hashes_alone() {
        // Timestamps may be written otherwise by another container; the pictures may not.
        let b = A.replace("0,          1,          1,", "0,         40,         40,");
        assert_eq!(compare(A, &b), Ok(()));
        let changed = A.replace("9f00", "9f01");
        assert!(compare(A, &changed).unwrap_err().contains("frame 2"));
        let short = A.lines().take(3).collect::<Vec<_>>().join("\n");
        assert!(compare(&short, A)
            .unwrap_err()
            .contains("1 frames, the source 2"));
        assert!(compare("#only a header\n", "#only a header\n").is_err());
    }
}
