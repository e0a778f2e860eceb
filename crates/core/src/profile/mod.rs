//! Encoding profiles: the ffmpeg arguments that sit between the input and the output, the
//! output container, and what a correct output must contain (checked before it is published).

mod check;

use crate::treat::Auto;
use check::validate;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Which audio streams of the input the output must carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AudioKeep {
    /// Every audio stream (tapes with several language or commentary tracks).
    #[default]
    All,
    /// The first audio stream, if the input has one.
    First,
    None,
}

/// Which subtitle streams of the input the output must carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SubtitleKeep {
    #[default]
    All,
    None,
}

/// One way of encoding a file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Output file extension without the dot; it picks ffmpeg's muxer.
    pub extension: String,
    /// ffmpeg arguments between `-i INPUT` and the output, as an argv list.
    pub args: Vec<String>,
    /// The codec name ffprobe must report for the output's video (h264, hevc, av1, ...).
    pub video_codec: String,
    #[serde(default)]
    pub audio: AudioKeep,
    #[serde(default)]
    pub subtitles: SubtitleKeep,
    /// How a long input is encoded in chunks with this profile; a profile without it is never
    /// split (the safe default for profiles written by hand).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<SplitArgs>,
    /// The quality check: an output whose SSIM against its source, on a few sampled segments,
    /// is below this fails (the score is recorded on every job of a profile that has one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_ssim: Option<f64>,
    /// Whether jobs of this profile measure the tape for its report (on unless set to false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<bool>,
    /// A preservation master: the output must decode to exactly the source's frames (their
    /// MD5s compared, one by one) before it counts, and its per-frame MD5s are kept beside it
    /// (`NAME.framemd5`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lossless: bool,
    /// Treatment chosen from the tape: its deinterlacer's field order set by what `idet`
    /// measures in a survey of the tape before the encode, its head-switching rows masked, its
    /// loudness normalised, its blank ends cut (see [`crate::treat`]).
    /// `true` for every choice, or a list of those made (see [`Auto`]).
    #[serde(default, skip_serializing_if = "Auto::is_off")]
    pub auto: Auto,
}

impl Profile {
    /// Whether the tape is measured for its report while it is encoded.
    pub fn reports(&self) -> bool {
        self.report.unwrap_or(true)
    }

    /// Whether the audio is copied as it is rather than encoded again (the last option that
    /// sets an audio codec, `-c copy` included, says so, as ffmpeg reads them).
    pub fn copies_audio(&self) -> bool {
        copies_audio(&self.args)
    }
}

/// Whether ffmpeg arguments copy the audio as it is (the last option that sets an audio codec,
/// `-c copy` included, says so, as ffmpeg reads them).
pub fn copies_audio(args: &[String]) -> bool {
    let mut copied = false;
    for pair in args.windows(2) {
        let option = pair[0].as_str();
        let audio = matches!(option, "-c" | "-codec" | "-acodec")
            || option.starts_with("-c:a")
            || option.starts_with("-codec:a");
        if audio {
            copied = pair[1] == "copy";
        }
    }
    copied
}

/// A profile's recipe for split encoding: the first video stream is encoded in chunks with
/// `filter` and `video`, every other stream once, at the join, with `streams`. Together they
/// must mean what `args` means for the whole file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitArgs {
    /// The video filter chain (the value of `-vf`), or empty.
    #[serde(default)]
    pub filter: String,
    /// Frames of context the filter reads on each side of a frame (a deinterlacer looks at its
    /// neighbours): chunks decode this many more frames before and after their range.
    #[serde(default = "default_context")]
    pub context_frames: u32,
    /// Output frames per input frame (2 for a deinterlacer that sends one frame per field).
    #[serde(default = "one")]
    pub frames_per_frame: u32,
    /// Encoder arguments for the video chunks (`-c:v ...`).
    pub video: Vec<String>,
    /// Arguments for every other stream at the join, where input 1 is the source (`-map 1:a?
    /// -c:a aac`...); the joined video is input 0 and is copied.
    #[serde(default)]
    pub streams: Vec<String>,
}

fn default_context() -> u32 {
    2
}

fn one() -> u32 {
    1
}

/// Every stream of the source but its video, copied.
fn copy_other_streams() -> Vec<String> {
    args(&["-map", "1", "-map", "-1:v", "-map", "-1:d", "-c", "copy"])
}

fn split_video(
    filter: &str,
    frames_per_frame: u32,
    video: &[&str],
    streams: Vec<String>,
) -> Option<SplitArgs> {
    Some(SplitArgs {
        filter: filter.into(),
        context_frames: default_context(),
        frames_per_frame,
        video: args(video),
        streams,
    })
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ProfileError {
    #[error("unknown profile '{name}' (known: {known}); list them with `videofarm profiles`")]
    Unknown { name: String, known: String },
    #[error("profile '{name}' is invalid: {reason}")]
    Invalid { name: String, reason: String },
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// A hardware encoder's profile: every stream kept, the video through `video` (its upload filter
/// and encoder). Never split: a chunk per GPU session costs more than it saves. Only workers
/// whose trial encode works run it (see the worker's capability check).
fn hardware(name: &str, description: &str, codec: &str, video: &[&str]) -> Profile {
    let mut all = args(&[
        "-max_muxing_queue_size",
        "1000",
        "-map",
        "0",
        "-map",
        "-0:d",
        "-c",
        "copy",
    ]);
    all.extend(args(video));
    Profile {
        min_ssim: None,
        report: None,
        lossless: false,
        auto: Auto::OFF,
        name: name.into(),
        description: description.into(),
        extension: "mkv".into(),
        args: all,
        video_codec: codec.into(),
        audio: AudioKeep::All,
        subtitles: SubtitleKeep::All,
        split: None,
    }
}

/// The preservation master: FFV1 version 3, intra-only, slice CRCs, every stream copied; never
/// split (one master, proven whole against its source).
fn preserve() -> Profile {
    Profile {
        min_ssim: None,
        report: None,
        lossless: true,
        auto: Auto::OFF,
        name: "preserve".into(),
        description: "Preservation master: FFV1 version 3 (intra-only, slice CRCs), every stream kept, audio copied, Matroska; proven lossless frame by frame, with a per-frame MD5 sidecar".into(),
        extension: "mkv".into(),
        args: args(&[
            "-max_muxing_queue_size", "1000", "-map", "0", "-map", "-0:d", "-c", "copy",
            "-c:v", "ffv1", "-level", "3", "-g", "1", "-slices", "16", "-slicecrc", "1",
            "-fps_mode", "passthrough",
        ]),
        video_codec: "ffv1".into(),
        audio: AudioKeep::All,
        subtitles: SubtitleKeep::All,
            split: None,
    }
}

/// The profiles that ship with videofarm.
pub fn builtins() -> Vec<Profile> {
    let mut all = encoders();
    all.push(preserve());
    all.extend(accelerated());
    all
}

/// The built-in profiles that encode in software.
fn encoders() -> Vec<Profile> {
    vec![
        Profile {
            min_ssim: None,
            report: None,
            lossless: false,
            auto: Auto::OFF,
            name: "archive".into(),
            description: "The old farm's settings: libx264 CRF 17, every stream kept, audio and subtitles copied, Matroska".into(),
            extension: "mkv".into(),
            args: args(&["-max_muxing_queue_size", "1000", "-map", "0", "-map", "-0:d", "-c", "copy", "-c:v", "libx264", "-crf", "17"]),
            video_codec: "h264".into(),
            audio: AudioKeep::All,
            subtitles: SubtitleKeep::All,
            split: split_video("", 1, &["-c:v", "libx264", "-crf", "17"], copy_other_streams()),
        },
        Profile {
            min_ssim: None,
            report: None,
            lossless: false,
            auto: Auto::ALL,
            name: "vhs".into(),
            description: "Interlaced SD captures: bwdif deinterlace to full field rate in the field order measured in the tape (none for a progressive one), libx264 CRF 18, audio to AAC, Matroska".into(),
            extension: "mkv".into(),
            args: args(&[
                "-max_muxing_queue_size", "1000",
                "-map", "0:v:0", "-map", "0:a?", "-map", "0:s?",
                "-vf", "bwdif=mode=send_field:parity=auto:deint=all",
                "-c:v", "libx264", "-crf", "18", "-preset", "medium",
                "-c:a", "aac", "-b:a", "192k", "-c:s", "copy",
            ]),
            video_codec: "h264".into(),
            audio: AudioKeep::All,
            subtitles: SubtitleKeep::All,
            split: split_video(
                "bwdif=mode=send_field:parity=auto:deint=all",
                2,
                &["-c:v", "libx264", "-crf", "18", "-preset", "medium"],
                args(&["-map", "1:a?", "-map", "1:s?", "-c:a", "aac", "-b:a", "192k", "-c:s", "copy"]),
            ),
        },
        Profile {
            min_ssim: None,
            report: None,
            lossless: false,
            auto: Auto::OFF,
            name: "web".into(),
            description: "H.264 + AAC in MP4 with faststart, for browsers and phones".into(),
            extension: "mp4".into(),
            args: args(&[
                "-map", "0:v:0", "-map", "0:a:0?",
                "-c:v", "libx264", "-crf", "23", "-preset", "medium", "-pix_fmt", "yuv420p",
                "-c:a", "aac", "-b:a", "160k", "-movflags", "+faststart",
            ]),
            video_codec: "h264".into(),
            audio: AudioKeep::First,
            subtitles: SubtitleKeep::None,
            split: split_video(
                "",
                1,
                &["-c:v", "libx264", "-crf", "23", "-preset", "medium", "-pix_fmt", "yuv420p"],
                args(&["-map", "1:a:0?", "-c:a", "aac", "-b:a", "160k", "-movflags", "+faststart"]),
            ),
        },
        Profile {
            min_ssim: None,
            report: None,
            lossless: false,
            auto: Auto::OFF,
            name: "hevc".into(),
            description: "HEVC (libx265 CRF 22), every stream kept, Matroska".into(),
            extension: "mkv".into(),
            args: args(&["-max_muxing_queue_size", "1000", "-map", "0", "-map", "-0:d", "-c", "copy", "-c:v", "libx265", "-crf", "22", "-preset", "medium"]),
            video_codec: "hevc".into(),
            audio: AudioKeep::All,
            subtitles: SubtitleKeep::All,
            split: split_video("", 1, &["-c:v", "libx265", "-crf", "22", "-preset", "medium"], copy_other_streams()),
        },
        Profile {
            min_ssim: None,
            report: None,
            lossless: false,
            auto: Auto::OFF,
            name: "av1".into(),
            description: "AV1 (libsvtav1 CRF 30, preset 8), every stream kept, Matroska".into(),
            extension: "mkv".into(),
            args: args(&["-max_muxing_queue_size", "1000", "-map", "0", "-map", "-0:d", "-c", "copy", "-c:v", "libsvtav1", "-crf", "30", "-preset", "8", "-pix_fmt", "yuv420p"]),
            video_codec: "av1".into(),
            audio: AudioKeep::All,
            subtitles: SubtitleKeep::All,
            split: split_video(
                "",
                1,
                &["-c:v", "libsvtav1", "-crf", "30", "-preset", "8", "-pix_fmt", "yuv420p"],
                copy_other_streams(),
            ),
        },
    ]
}

/// The built-in profiles for hardware encoders (each tried on the machine before it is
/// offered).
fn accelerated() -> Vec<Profile> {
    vec![
        hardware("h264-nvenc", "H.264 on an NVIDIA GPU (NVENC, constant quality 21), every stream kept, Matroska", "h264",
            &["-c:v", "h264_nvenc", "-preset", "p5", "-rc", "vbr", "-cq", "21", "-b:v", "0"]),
        hardware("hevc-nvenc", "HEVC on an NVIDIA GPU (NVENC, constant quality 23), every stream kept, Matroska", "hevc",
            &["-c:v", "hevc_nvenc", "-preset", "p5", "-rc", "vbr", "-cq", "23", "-b:v", "0"]),
        hardware("h264-vaapi", "H.264 on VAAPI (Intel or AMD, /dev/dri/renderD128, QP 20), every stream kept, Matroska", "h264",
            &["-init_hw_device", "vaapi=va:/dev/dri/renderD128", "-filter_hw_device", "va",
              "-vf", "format=nv12,hwupload", "-c:v", "h264_vaapi", "-qp", "20"]),
        hardware("hevc-vaapi", "HEVC on VAAPI (Intel or AMD, /dev/dri/renderD128, QP 22), every stream kept, Matroska", "hevc",
            &["-init_hw_device", "vaapi=va:/dev/dri/renderD128", "-filter_hw_device", "va",
              "-vf", "format=nv12,hwupload", "-c:v", "hevc_vaapi", "-qp", "22"]),
        hardware("h264-qsv", "H.264 on Intel Quick Sync (QSV, global quality 21), every stream kept, Matroska", "h264",
            &["-init_hw_device", "qsv=hw", "-filter_hw_device", "hw",
              "-vf", "format=nv12,hwupload=extra_hw_frames=64", "-c:v", "h264_qsv", "-global_quality", "21"]),
        hardware("hevc-qsv", "HEVC on Intel Quick Sync (QSV, global quality 23), every stream kept, Matroska", "hevc",
            &["-init_hw_device", "qsv=hw", "-filter_hw_device", "hw",
              "-vf", "format=nv12,hwupload=extra_hw_frames=64", "-c:v", "hevc_qsv", "-global_quality", "23"]),
    ]
}

/// The profiles a process knows: the built-ins plus those from the config file (a configured
/// profile with a built-in's name replaces it).
#[derive(Debug, Clone)]
pub struct Profiles {
    by_name: BTreeMap<String, Profile>,
}

impl Default for Profiles {
    fn default() -> Self {
        Self::new(BTreeMap::new()).expect("built-in profiles are valid")
    }
}

impl Profiles {
    /// The built-ins plus `configured`, each checked.
    pub fn new(configured: BTreeMap<String, Profile>) -> Result<Self, ProfileError> {
        let mut by_name: BTreeMap<String, Profile> = builtins()
            .into_iter()
            .map(|p| (p.name.clone(), p))
            .collect();
        for (name, mut profile) in configured {
            profile.name = name.clone();
            // `ARCHIVE` beside `archive` would be two profiles a person reads as one.
            if by_name
                .keys()
                .any(|known| known.eq_ignore_ascii_case(&name))
            {
                // Replacing a built-in silently would change what every farm document and
                // every queued job means by that name.
                return Err(ProfileError::Invalid {
                    name,
                    reason: "a built-in profile has this name; give yours another one (`videofarm profiles` lists the built-ins)".into(),
                });
            }
            validate(&profile)?;
            by_name.insert(name, profile);
        }
        Ok(Self { by_name })
    }

    pub fn get(&self, name: &str) -> Result<&Profile, ProfileError> {
        self.by_name.get(name).ok_or_else(|| ProfileError::Unknown {
            name: name.to_owned(),
            known: self.by_name.keys().cloned().collect::<Vec<_>>().join(", "),
        })
    }

    pub fn iter(&self) -> impl Iterator<Item = &Profile> {
        self.by_name.values()
    }
}

#[cfg(test)]
mod tests {
    use super::check::bare_output;
    use super::*;

    #[test]
    fn a_file_named_in_args_or_a_built_in_name_is_refused() {
        let args = |a: &str| a.split(' ').map(String::from).collect::<Vec<_>>();
        assert_eq!(
            bare_output(&args("-c:v libx264 -crf 17 /tmp/x.mkv")),
            Some("/tmp/x.mkv")
        );
        assert_eq!(bare_output(&args("-an /tmp/x.mkv")), Some("/tmp/x.mkv"));
        assert_eq!(
            bare_output(&args("-map 0 -c copy -shortest -itsoffset -0.5 -sn")),
            None
        );
        for builtin in builtins() {
            validate(&builtin).unwrap_or_else(|e| panic!("{e}"));
        }
        let with = |extra: &[&str], codec: &str| {
            let mut p = builtins()[0].clone();
            p.name = "mine".into();
            p.args.extend(extra.iter().map(|a| a.to_string()));
            p.video_codec = codec.into();
            validate(&p).map_err(|e| e.to_string())
        };
        for option in [
            "-vstats_file",
            "-passlogfile",
            "-filter_script",
            "-sdp_file",
        ] {
            let err = with(&[option, "/tmp/x"], "h264").unwrap_err();
            assert!(
                err.contains(&format!("'{option}' takes a file path")),
                "{err}"
            );
        }
        assert!(with(&["-pass", "1"], "h264").is_err(), "writes a pass log");
        let err = with(&[], "h265").unwrap_err();
        assert!(err.contains("ffprobe calls H.265 \"hevc\""), "{err}");
        assert!(with(&[], "hevc").is_ok());
        let mut configured = BTreeMap::new();
        let mut shouting = builtins()[0].clone();
        shouting.args.push("-an".into());
        configured.insert(builtins()[0].name.to_ascii_uppercase(), shouting);
        let err = Profiles::new(configured).unwrap_err().to_string();
        assert!(err.contains("built-in"), "{err}");
        let mut configured = BTreeMap::new();
        let mut archive = Profiles::default().get("archive").unwrap().clone();
        archive.args.push("-an".into());
        configured.insert("archive".to_owned(), archive.clone());
        let err = Profiles::new(configured).unwrap_err().to_string();
        assert!(err.contains("built-in"), "{err}");
        let mut configured = BTreeMap::new();
        archive.args.push("/tmp/second.mkv".into());
        configured.insert("mine".to_owned(), archive);
        let err = Profiles::new(configured).unwrap_err().to_string();
        assert!(
            err.contains("/tmp/second.mkv") && err.contains("mine"),
            "{err}"
        );
    }

    #[test]
    fn archive_is_the_old_command_less_what_matroska_cannot_hold() {
        let profiles = Profiles::default();
        let archive = profiles.get("archive").unwrap();
        // The old farm's `-map 0 -c copy -c:v libx264 -crf 17` failed on a data stream (a DVD
        // recorder's navigation packets): those are left out, the job's result says so.
        assert_eq!(
            archive.args.join(" "),
            "-max_muxing_queue_size 1000 -map 0 -map -0:d -c copy -c:v libx264 -crf 17"
        );
        assert_eq!(archive.extension, "mkv");
    }

    #[test]
    fn which_profiles_copy_their_audio() {
        let profiles = Profiles::default();
        assert!(profiles.get("archive").unwrap().copies_audio());
        assert!(!profiles.get("vhs").unwrap().copies_audio());
        let mut p = profiles.get("archive").unwrap().clone();
        p.args.extend(["-c:a".to_string(), "aac".to_string()]);
        assert!(!p.copies_audio(), "a later -c:a wins");
    }

    #[test]
    fn unknown_profile_lists_the_known_ones() {
        let err = Profiles::default().get("nope").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("'nope'") && text.contains("archive") && text.contains("av1"),
            "{text}"
        );
    }

    #[test]
    fn configured_profile_is_validated() {
        let mut configured = BTreeMap::new();
        configured.insert(
            "evil".to_owned(),
            Profile {
                min_ssim: None,
                report: None,
                lossless: false,
                auto: Auto::OFF,
                name: String::new(),
                description: String::new(),
                extension: "mkv".into(),
                args: vec!["-i".into(), "/etc/passwd".into()],
                video_codec: "h264".into(),
                audio: AudioKeep::All,
                subtitles: SubtitleKeep::All,
                split: None,
            },
        );
        assert!(matches!(
            Profiles::new(configured),
            Err(ProfileError::Invalid { .. })
        ));
    }
}
