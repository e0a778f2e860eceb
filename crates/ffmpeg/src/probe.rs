//! ffprobe's view of a file, and the checks an output must pass before it is published.

use crate::{file_url, tools::Tools};
use serde::Deserialize;
use std::path::Path;
use std::process::Stdio;
use videofarm_core::{AudioKeep, Profile, SubtitleKeep};

/// What matters about a media file for planning and verifying an encode.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MediaInfo {
    /// Container duration in seconds, when known.
    pub duration_s: Option<f64>,
    pub streams: Vec<StreamInfo>,
    /// The demuxer ffmpeg chose (`mpeg`, `matroska,webm`, `jpeg_pipe`...), when known.
    pub format_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StreamInfo {
    pub index: u32,
    /// video, audio, subtitle, data, attachment.
    pub codec_type: String,
    pub codec_name: String,
    /// Cover art and other still pictures are video streams that are not the programme.
    pub attached_pic: bool,
}

impl MediaInfo {
    /// True when the file is a picture (a JPEG, PNG or GIF with a video's name), which ffmpeg
    /// would happily turn into a one-frame "video". A GIF counts even when it moves: no tape
    /// was ever captured to one, and ffmpeg reads its frames with a picture's timing.
    pub fn is_still_image(&self) -> bool {
        self.format_name
            .as_deref()
            .is_some_and(|f| f == "image2" || f.ends_with("_pipe") || f == "gif")
    }

    pub fn count(&self, codec_type: &str) -> usize {
        self.streams
            .iter()
            .filter(|s| s.codec_type == codec_type)
            .count()
    }

    /// Video streams that are real video, not cover art.
    pub fn videos(&self) -> impl Iterator<Item = &StreamInfo> {
        self.streams
            .iter()
            .filter(|s| s.codec_type == "video" && !s.attached_pic)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("could not run ffprobe ({path}): {source}")]
    Spawn {
        path: String,
        source: std::io::Error,
    },
    /// ffprobe could not read the file as media.
    #[error("{0}")]
    Unreadable(String),
}

#[derive(Deserialize)]
struct Raw {
    #[serde(default)]
    streams: Vec<RawStream>,
    format: Option<RawFormat>,
}

#[derive(Deserialize)]
struct RawStream {
    index: u32,
    #[serde(default)]
    codec_type: String,
    #[serde(default)]
    codec_name: String,
    #[serde(default)]
    disposition: Option<RawDisposition>,
}

/// ffprobe's `disposition` of a stream: whether it is cover art.
#[derive(Deserialize)]
pub(crate) struct RawDisposition {
    #[serde(default)]
    pub(crate) attached_pic: u8,
}

#[derive(Deserialize)]
struct RawFormat {
    duration: Option<String>,
    format_name: Option<String>,
}

/// Run ffprobe with `args` on `path` (quiet but for errors); its standard output, or the first
/// error it printed (without the file name, which the caller's message already has).
pub(crate) async fn ffprobe(
    tools: &Tools,
    args: &[&str],
    path: &Path,
) -> Result<Vec<u8>, ProbeError> {
    let output = tokio::process::Command::new(&tools.ffprobe)
        .args(["-v", "error"])
        .args(args)
        .arg(file_url(path))
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|source| ProbeError::Spawn {
            path: tools.ffprobe.display().to_string(),
            source,
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let first_error = stderr
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .map(|l| strip_file_prefix(l, path))
            .unwrap_or_else(|| "ffprobe could not read it".to_owned());
        return Err(ProbeError::Unreadable(first_error));
    }
    Ok(output.stdout)
}

/// Decode the video (and the audio, with `audio`) of `path` to nothing, stopping at the first
/// error (`-xerror`): proof that the whole file plays, where reading its header and streams
/// proves only that it starts. Costs about an eighth of an SD encode. Audio copied from a
/// damaged source carries the source's damage, already reported: leave it out.
pub async fn decode_check(tools: &Tools, path: &Path, audio: bool) -> Result<(), ProbeError> {
    let mut maps = vec!["-map", "0:v?"];
    if audio {
        maps.extend(["-map", "0:a?"]);
    }
    let output = tokio::process::Command::new(&tools.ffmpeg)
        .args(["-nostdin", "-hide_banner", "-v", "error", "-xerror", "-i"])
        .arg(file_url(path))
        .args(maps)
        .args(["-f", "null", "-"])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|source| ProbeError::Spawn {
            path: tools.ffmpeg.display().to_string(),
            source,
        })?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    let first_error = stderr
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(|l| strip_file_prefix(l, path));
    match (output.status.success(), first_error) {
        (true, None) => Ok(()),
        (_, Some(error)) => Err(ProbeError::Unreadable(error)),
        (false, None) => Err(ProbeError::Unreadable(format!(
            "ffmpeg could not decode it ({})",
            output.status
        ))),
    }
}

/// Run ffprobe on `path`.
pub async fn probe(tools: &Tools, path: &Path) -> Result<MediaInfo, ProbeError> {
    let stdout = ffprobe(
        tools,
        &["-print_format", "json", "-show_format", "-show_streams"],
        path,
    )
    .await?;
    let raw: Raw = serde_json::from_slice(&stdout).map_err(|e| {
        ProbeError::Unreadable(format!("ffprobe gave output that is not JSON: {e}"))
    })?;
    let format_name = raw.format.as_ref().and_then(|f| f.format_name.clone());
    Ok(MediaInfo {
        format_name,
        duration_s: raw
            .format
            .and_then(|f| f.duration)
            .and_then(|d| d.parse::<f64>().ok())
            .filter(|d| d.is_finite() && *d > 0.0),
        streams: raw
            .streams
            .into_iter()
            .map(|s| StreamInfo {
                index: s.index,
                codec_type: s.codec_type,
                codec_name: s.codec_name,
                attached_pic: s.disposition.is_some_and(|d| d.attached_pic != 0),
            })
            .collect(),
    })
}

/// What an encoded file holds, to verify it: read in-process from a Matroska file's head
/// ([`crate::matroska`], which reads what ffprobe would), by ffprobe for any other container or
/// whenever that reader is not certain. `extension` is the output's (the path itself may be an
/// open descriptor's, without one).
pub async fn probe_output(
    tools: &Tools,
    path: &Path,
    extension: &str,
) -> Result<MediaInfo, ProbeError> {
    let matroska = extension.eq_ignore_ascii_case("mkv");
    if matroska {
        let owned = path.to_owned();
        if let Ok(Some(info)) =
            tokio::task::spawn_blocking(move || crate::matroska::read(&owned)).await
        {
            return Ok(info);
        }
    }
    probe(tools, path).await
}

/// ffprobe starts its messages with the URL it was given; the user knows the file already.
pub(crate) fn strip_file_prefix(line: &str, path: &Path) -> String {
    let url = file_url(path);
    let url = url.to_string_lossy();
    line.strip_prefix(url.as_ref())
        .map(|rest| rest.trim_start_matches(':').trim().to_owned())
        .unwrap_or_else(|| line.to_owned())
}

/// Seconds of slack allowed between the input's and the output's duration.
pub fn duration_tolerance(input_s: f64) -> f64 {
    (input_s * 0.02).max(1.0)
}

/// What an output in a Matroska container (`extension` mkv or webm) leaves out of `input`: its
/// data streams (a DVD recorder's navigation packets, a camera's timecode track), which Matroska
/// cannot hold and the built-in profiles therefore do not map. Said on the job's result.
pub fn data_streams_left_out(input: &MediaInfo, extension: &str) -> Option<String> {
    if !["mkv", "webm"].contains(&extension.to_ascii_lowercase().as_str()) {
        return None;
    }
    let data: Vec<&str> = input
        .streams
        .iter()
        .filter(|s| s.codec_type == "data")
        .map(|s| s.codec_name.as_str())
        .collect();
    if data.is_empty() {
        return None;
    }
    Some(format!(
        "left out {} data stream{} ({}): Matroska holds only video, audio and subtitles",
        data.len(),
        if data.len() == 1 { "" } else { "s" },
        data.join(", ")
    ))
}

/// Check that a split tape's chunk `output` is what `profile` promises: its video codec, and
/// exactly `want` frames (`got` is what was counted). The one rule for a worker that encoded
/// the chunk and for the file server that takes its upload. The error is one plain sentence.
pub fn verify_chunk(
    profile: &Profile,
    output: &MediaInfo,
    got: u64,
    want: u64,
) -> Result<(), String> {
    let codec = output.videos().next().map(|v| v.codec_name.as_str());
    if codec != Some(profile.video_codec.as_str()) {
        return Err(format!(
            "the chunk's video is {}, not {}",
            codec.unwrap_or("missing"),
            profile.video_codec
        ));
    }
    if got != want {
        return Err(format!("the chunk has {got} frames, not {want}"));
    }
    Ok(())
}

/// Check that `output` is what `profile` promises for `input`: the right video codec, the
/// same duration (within [`duration_tolerance`]), and every stream the profile keeps.
/// The error is one plain sentence.
pub fn verify_output(
    profile: &Profile,
    input: &MediaInfo,
    output: &MediaInfo,
) -> Result<(), String> {
    let videos: Vec<_> = output.videos().collect();
    if videos.is_empty() {
        return Err("the output has no video stream".to_owned());
    }
    if let Some(wrong) = videos.iter().find(|s| s.codec_name != profile.video_codec) {
        return Err(format!(
            "the output's video is {} but profile '{}' makes {}",
            wrong.codec_name, profile.name, profile.video_codec
        ));
    }
    if let Some(want) = input.duration_s {
        let got = output.duration_s.unwrap_or(0.0);
        if (got - want).abs() > duration_tolerance(want) {
            return Err(format!(
                "the output lasts {got:.1} s but the input lasts {want:.1} s (is the input truncated or damaged?)"
            ));
        }
    }
    let (audio_in, audio_out) = (input.count("audio"), output.count("audio"));
    let audio_want = match profile.audio {
        AudioKeep::All => audio_in,
        AudioKeep::First => audio_in.min(1),
        AudioKeep::None => 0,
    };
    if audio_out != audio_want {
        return Err(format!(
            "the output has {audio_out} audio stream(s) but should keep {audio_want} of the input's {audio_in}"
        ));
    }
    if profile.subtitles == SubtitleKeep::All {
        let (subs_in, subs_out) = (input.count("subtitle"), output.count("subtitle"));
        if subs_out != subs_in {
            return Err(format!(
                "the output has {subs_out} subtitle stream(s) but the input has {subs_in}"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use videofarm_core::Profiles;

    fn media(duration: f64, streams: &[(&str, &str)]) -> MediaInfo {
        MediaInfo {
            format_name: None,
            duration_s: Some(duration),
            streams: streams
                .iter()
                .enumerate()
                .map(|(i, (t, c))| StreamInfo {
                    index: i as u32,
                    codec_type: (*t).into(),
                    codec_name: (*c).into(),
                    attached_pic: false,
                })
                .collect(),
        }
    }

    #[test]
    fn archive_output_must_keep_every_audio_and_subtitle_stream() {
        let profiles = Profiles::default();
        let archive = profiles.get("archive").unwrap();
        let input = media(
            3.0,
            &[
                ("video", "mpeg2video"),
                ("audio", "mp2"),
                ("audio", "ac3"),
                ("subtitle", "subrip"),
            ],
        );
        let good = media(
            3.02,
            &[
                ("video", "h264"),
                ("audio", "mp2"),
                ("audio", "ac3"),
                ("subtitle", "subrip"),
            ],
        );
        assert_eq!(verify_output(archive, &input, &good), Ok(()));
        let lost_audio = media(
            3.0,
            &[("video", "h264"), ("audio", "mp2"), ("subtitle", "subrip")],
        );
        assert!(verify_output(archive, &input, &lost_audio)
            .unwrap_err()
            .contains("audio"));
        let lost_subs = media(
            3.0,
            &[("video", "h264"), ("audio", "mp2"), ("audio", "ac3")],
        );
        assert!(verify_output(archive, &input, &lost_subs)
            .unwrap_err()
            .contains("subtitle"));
    }

    #[test]
    fn wrong_codec_and_short_output_are_refused() {
        let profiles = Profiles::default();
        let archive = profiles.get("archive").unwrap();
        let input = media(10.0, &[("video", "mpeg2video")]);
        let hevc = media(10.0, &[("video", "hevc")]);
        assert!(verify_output(archive, &input, &hevc)
            .unwrap_err()
            .contains("hevc"));
        let short = media(5.0, &[("video", "h264")]);
        assert!(verify_output(archive, &input, &short)
            .unwrap_err()
            .contains("truncated"));
        let no_video = media(10.0, &[("audio", "aac")]);
        assert!(verify_output(archive, &input, &no_video).is_err());
    }

    #[test]
    fn web_keeps_only_the_first_audio() {
        let profiles = Profiles::default();
        let web = profiles.get("web").unwrap();
        let input = media(
            3.0,
            &[
                ("video", "mpeg2video"),
                ("audio", "mp2"),
                ("audio", "ac3"),
                ("subtitle", "subrip"),
            ],
        );
        let out = media(3.0, &[("video", "h264"), ("audio", "aac")]);
        assert_eq!(verify_output(web, &input, &out), Ok(()));
    }
}
