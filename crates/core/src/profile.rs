//! Encoding profiles: the ffmpeg arguments that sit between the input and the output, the
//! output container, and what a correct output must contain (checked before it is published).

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

/// The profiles that ship with videofarm.
pub fn builtins() -> Vec<Profile> {
    vec![
        Profile {
            name: "archive".into(),
            description: "The old farm's settings: libx264 CRF 17, every stream kept, audio and subtitles copied, Matroska".into(),
            extension: "mkv".into(),
            args: args(&["-max_muxing_queue_size", "1000", "-map", "0", "-c", "copy", "-c:v", "libx264", "-crf", "17"]),
            video_codec: "h264".into(),
            audio: AudioKeep::All,
            subtitles: SubtitleKeep::All,
        },
        Profile {
            name: "vhs".into(),
            description: "Interlaced SD captures: bwdif deinterlace to full field rate, libx264 CRF 18, audio to AAC, Matroska".into(),
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
        },
        Profile {
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
        },
        Profile {
            name: "hevc".into(),
            description: "HEVC (libx265 CRF 22), every stream kept, Matroska".into(),
            extension: "mkv".into(),
            args: args(&["-max_muxing_queue_size", "1000", "-map", "0", "-c", "copy", "-c:v", "libx265", "-crf", "22", "-preset", "medium"]),
            video_codec: "hevc".into(),
            audio: AudioKeep::All,
            subtitles: SubtitleKeep::All,
        },
        Profile {
            name: "av1".into(),
            description: "AV1 (libsvtav1 CRF 30, preset 8), every stream kept, Matroska".into(),
            extension: "mkv".into(),
            args: args(&["-max_muxing_queue_size", "1000", "-map", "0", "-c", "copy", "-c:v", "libsvtav1", "-crf", "30", "-preset", "8", "-pix_fmt", "yuv420p"]),
            video_codec: "av1".into(),
            audio: AudioKeep::All,
            subtitles: SubtitleKeep::All,
        },
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

fn validate(p: &Profile) -> Result<(), ProfileError> {
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
    if p.video_codec.is_empty() {
        return Err(invalid(
            "video_codec must name the codec ffprobe reports, like \"h264\"",
        ));
    }
    // The worker owns the input, the output and progress reporting; a profile that set them
    // would write somewhere the worker does not verify or clean up.
    for forbidden in ["-i", "-y", "-n", "-progress", "-f"] {
        if p.args.iter().any(|a| a == forbidden) {
            return Err(invalid(&format!(
                "args must not contain '{forbidden}': videofarm sets it"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_is_exactly_the_old_command() {
        let profiles = Profiles::default();
        let archive = profiles.get("archive").unwrap();
        assert_eq!(
            archive.args.join(" "),
            "-max_muxing_queue_size 1000 -map 0 -c copy -c:v libx264 -crf 17"
        );
        assert_eq!(archive.extension, "mkv");
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
                name: String::new(),
                description: String::new(),
                extension: "mkv".into(),
                args: vec!["-i".into(), "/etc/passwd".into()],
                video_codec: "h264".into(),
                audio: AudioKeep::All,
                subtitles: SubtitleKeep::All,
            },
        );
        assert!(matches!(
            Profiles::new(configured),
            Err(ProfileError::Invalid { .. })
        ));
    }
}
