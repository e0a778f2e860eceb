//! What a profile may say: checked when the configuration is read, so that nothing it says
//! can only fail later (a codec name ffprobe never reports, a file named in its arguments).

use super::{Profile, ProfileError};

pub(super) fn validate(p: &Profile) -> Result<(), ProfileError> {
    let invalid = |reason: &str| ProfileError::Invalid {
        name: p.name.clone(),
        reason: reason.to_owned(),
    };
    if p.name.is_empty()
        || !p
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(invalid(
            "the name may only use letters, digits, '-', '_' and '.'",
        ));
    }
    if p.extension.is_empty() || !p.extension.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(invalid(
            "extension must be letters and digits, like \"mkv\"",
        ));
    }
    if !VIDEO_CODECS.contains(&p.video_codec.as_str()) {
        let hint = match p.video_codec.to_ascii_lowercase().as_str() {
            "h265" | "x265" | "hevc" | "libx265" => " (ffprobe calls H.265 \"hevc\")",
            "x264" | "avc" | "libx264" | "h264" => " (ffprobe calls H.264 \"h264\")",
            "mpeg2" | "mpeg-2" => " (ffprobe calls MPEG-2 \"mpeg2video\")",
            "libsvtav1" | "svt-av1" | "libaom-av1" | "av1" => " (ffprobe calls AV1 \"av1\")",
            _ => "",
        };
        return Err(invalid(&format!(
            "video_codec {:?} is not a codec name ffprobe reports{hint}; one of: {}",
            p.video_codec,
            VIDEO_CODECS.join(", ")
        )));
    }
    // The worker owns the input, the output and progress reporting; a profile that set them
    // would write somewhere the worker does not verify or clean up.
    let split_lists = p.split.iter().flat_map(|s| [&s.video, &s.streams]);
    for list in std::iter::once(&p.args).chain(split_lists) {
        for forbidden in ["-i", "-y", "-n", "-progress", "-f"] {
            if list.iter().any(|a| a == forbidden) {
                return Err(invalid(&format!(
                    "args must not contain '{forbidden}': videofarm sets it"
                )));
            }
        }
    }
    for list in std::iter::once(&p.args).chain(p.split.iter().flat_map(|s| [&s.video, &s.streams]))
    {
        if let Some(option) = list.iter().find(|a| FILE_OPTIONS.contains(&a.as_str())) {
            return Err(invalid(&format!(
                "args must not name a file: '{option}' takes a file path (a file videofarm neither confines, verifies nor cleans up)"
            )));
        }
        if let Some(path) = bare_output(list) {
            return Err(invalid(&format!(
                "args must not name a file ('{path}' would be a second output that videofarm neither verifies nor cleans up): videofarm sets the output"
            )));
        }
    }
    if p.min_ssim.is_some_and(|m| !(0.0..=1.0).contains(&m)) {
        return Err(invalid(
            "min_ssim must be between 0 and 1 (0.95 is a good start)",
        ));
    }
    if let Some(split) = &p.split {
        if split.frames_per_frame == 0 || split.frames_per_frame > 4 || split.context_frames > 50 {
            return Err(invalid(
                "split.frames_per_frame must be 1 to 4 and split.context_frames at most 50",
            ));
        }
    }
    Ok(())
}

/// The video codec names ffprobe reports (`codec_name`) that a profile's output may have:
/// what verification compares the output against.
const VIDEO_CODECS: &[&str] = &[
    "h264",
    "hevc",
    "av1",
    "vvc",
    "vp8",
    "vp9",
    "mpeg1video",
    "mpeg2video",
    "mpeg4",
    "h263",
    "theora",
    "ffv1",
    "ffvhuff",
    "huffyuv",
    "utvideo",
    "magicyuv",
    "prores",
    "dnxhd",
    "cfhd",
    "dvvideo",
    "mjpeg",
    "jpeg2000",
    "rawvideo",
    "v210",
    "qtrle",
    "png",
    "msmpeg4v2",
    "msmpeg4v3",
    "wmv2",
    "flv1",
];

/// ffmpeg options whose value is a file path, or that write a file of their own (`-pass`,
/// `-report`: in the working folder): a profile may not name a file, whatever option carries
/// it. (Hardware device options name device nodes, which are opened, not written.)
const FILE_OPTIONS: &[&str] = &[
    "-vstats",
    "-vstats_file",
    "-passlogfile",
    "-pass",
    "-stats_enc_pre",
    "-stats_enc_post",
    "-stats_mux_pre",
    "-attach",
    "-dump_attachment",
    "-filter_script",
    "-filter_complex_script",
    "-sdp_file",
    "-report",
    "-x264-stats",
    "-fpre",
    "-vpre",
    "-apre",
    "-spre",
    "-pre",
];

/// ffmpeg options that take no value (the others take the next argument as theirs).
const FLAGS: &[&str] = &[
    "-an",
    "-vn",
    "-sn",
    "-dn",
    "-shortest",
    "-copyts",
    "-start_at_zero",
    "-nostdin",
    "-hide_banner",
    "-stats",
    "-nostats",
    "-accurate_seek",
    "-noaccurate_seek",
    "-re",
    "-ignore_unknown",
    "-copy_unknown",
    "-xerror",
    "-autorotate",
    "-noautorotate",
    "-autoscale",
    "-noautoscale",
    "-fix_sub_duration",
    "-benchmark",
    "-dump",
    "-hex",
    "-vstats",
    "-intra",
    "-stdin",
    "-bitexact",
];

/// An argument ffmpeg would take as an output file: one that is not an option and not an
/// option's value. An option not known to be a flag takes the next argument as its value,
/// unless that looks like another option (a negative number is a value).
pub(super) fn bare_output(args: &[String]) -> Option<&str> {
    let is_option = |a: &str| a.starts_with('-') && a.len() > 1 && a.parse::<f64>().is_err();
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_str();
        if !is_option(arg) {
            return Some(arg);
        }
        let flag = FLAGS.contains(&arg);
        i += 1;
        if !flag && args.get(i).is_some_and(|next| !is_option(next)) {
            i += 1;
        }
    }
    None
}
