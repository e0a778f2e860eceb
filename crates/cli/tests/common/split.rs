//! Split tapes in the tests: profiles that make a split checkable frame for frame, a
//! camcorder-like capture, a farm whose chunks encode slowly, and looks into a tape's work folder.

use super::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Lossless x264 so decoded frames can be compared exactly; `deint` runs the `vhs` profile's
/// deinterlacer, which needs frames on both sides of a cut.
pub const PROFILES: &str = r#"
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

pub fn farm() -> Farm {
    with_profiles(Farm::new())
}

pub fn with_profiles(farm: Farm) -> Farm {
    let mut config = std::fs::read_to_string(&farm.config).unwrap();
    config.push_str(PROFILES);
    std::fs::write(&farm.config, config).unwrap();
    farm
}

/// A camcorder-like capture: interlaced MPEG-2 with open GOPs and B-frames in MPEG-PS, audio
/// starting 0.3 s after the video.
pub fn interlaced_tape(path: &Path, secs: u32) {
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

/// The hash of every decoded frame of the first video stream.
pub fn frame_hashes(path: &Path) -> Vec<String> {
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

pub fn column(args: &[&str], path: &Path) -> Vec<String> {
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

pub fn leftovers(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect()
}

pub fn slow_farm() -> Farm {
    slow(farm())
}

pub fn slow(farm: Farm) -> Farm {
    let mut config = std::fs::read_to_string(&farm.config).unwrap();
    config.push_str(SLOW_SPLIT);
    std::fs::write(&farm.config, config).unwrap();
    farm
}

pub fn enqueue_split(farm: &Farm, tape: &Path, chunk_secs: &str) -> String {
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

pub fn work_folder(farm: &Farm, stem: &str) -> PathBuf {
    farm.out.join(format!(".{stem}.videofarm-split"))
}

pub fn chunk_files(work: &Path) -> Vec<String> {
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
