//! The first video stream's packets and clocks, from one demux pass of ffprobe (nothing is
//! decoded): what a split needs to cut a file frame-exactly, and how a chunk's frames are
//! counted.

use crate::probe::{ffprobe, ProbeError, RawDisposition};
use crate::tools::Tools;
use serde::Deserialize;
use std::path::Path;

/// A rational number of seconds per tick, like ffmpeg's `AVRational`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rational {
    pub num: i64,
    pub den: i64,
}

impl Rational {
    pub fn parse(text: &str) -> Option<Self> {
        let (num, den) = text.split_once('/')?;
        let (num, den) = (num.trim().parse().ok()?, den.trim().parse().ok()?);
        (num > 0 && den > 0).then_some(Self { num, den })
    }

    /// `ticks` of this time base in seconds.
    pub fn seconds(&self, ticks: i64) -> f64 {
        ticks as f64 * self.num as f64 / self.den as f64
    }
}

/// One video packet: its timestamps (in the stream's time base) and whether it starts a GOP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    pub pts: Option<i64>,
    pub dts: Option<i64>,
    pub key: bool,
}

/// The clocks and packets of a file's first video stream.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoPackets {
    pub time_base: Rational,
    /// `r_frame_rate` of the first video stream.
    pub frame_rate: Option<Rational>,
    /// The container's start time in seconds (what ffmpeg subtracts when it seeks).
    pub start_s: f64,
    /// The demuxer (`mpeg`, `matroska,webm`...).
    pub format_name: String,
    /// Each video (not cover art), audio and subtitle stream's type and start time in seconds.
    pub stream_starts: Vec<(String, Option<f64>)>,
    /// How many video streams the file has (a split handles exactly one).
    pub video_streams: usize,
    /// In file (decode) order.
    pub packets: Vec<Packet>,
}

#[derive(Deserialize)]
struct RawInfo {
    #[serde(default)]
    streams: Vec<RawStream>,
    format: Option<RawFormat>,
}

#[derive(Deserialize)]
struct RawStream {
    codec_type: Option<String>,
    time_base: Option<String>,
    r_frame_rate: Option<String>,
    start_time: Option<String>,
    #[serde(default)]
    disposition: Option<RawDisposition>,
}

#[derive(Deserialize)]
struct RawFormat {
    start_time: Option<String>,
    format_name: Option<String>,
}

/// Read the first video stream's packets of `path` (a demux pass: fast, I/O bound).
pub async fn video_packets(tools: &Tools, path: &Path) -> Result<VideoPackets, ProbeError> {
    let info = ffprobe(
        tools,
        &[
            "-print_format",
            "json",
            "-show_entries",
            "stream=codec_type,time_base,r_frame_rate,start_time:stream_disposition=attached_pic:format=start_time,format_name",
        ],
        path,
    )
    .await?;
    let info: RawInfo = serde_json::from_slice(&info).map_err(|e| {
        ProbeError::Unreadable(format!("ffprobe gave output that is not JSON: {e}"))
    })?;
    let videos: Vec<&RawStream> = info
        .streams
        .iter()
        .filter(|s| {
            s.codec_type.as_deref() == Some("video")
                && s.disposition.as_ref().is_none_or(|d| d.attached_pic == 0)
        })
        .collect();
    let time_base = videos
        .first()
        .and_then(|s| s.time_base.as_deref())
        .and_then(Rational::parse)
        .ok_or_else(|| ProbeError::Unreadable("no video stream with a time base".into()))?;
    let stream_starts = info
        .streams
        .iter()
        .filter(|s| {
            matches!(s.codec_type.as_deref(), Some("audio" | "subtitle"))
                || (s.codec_type.as_deref() == Some("video")
                    && s.disposition.as_ref().is_none_or(|d| d.attached_pic == 0))
        })
        .map(|s| {
            (
                s.codec_type.clone().unwrap_or_default(),
                s.start_time.as_deref().and_then(|t| t.parse().ok()),
            )
        })
        .collect();
    let format_name = info.format.as_ref().and_then(|f| f.format_name.clone());
    let start_s = info
        .format
        .and_then(|f| f.start_time)
        .and_then(|t| t.parse().ok())
        .unwrap_or(0.0);
    // JSON, not CSV: MPEG-2 side data (pan-scan, GOP time codes) adds lines to CSV output.
    // `+genpts`: an MPEG-PS muxer writes a pts only where a frame starts a PES packet, so many
    // packets come without one; the demuxer fills them in from the packets that follow, and
    // they are the timestamps the decoder gives those frames in a chunk's encode (checked on
    // `-f mpeg`, `-f dvd` and `-f vob` files with and without B-frames).
    let json = ffprobe(
        tools,
        &[
            "-fflags",
            "+genpts",
            "-select_streams",
            "V:0",
            "-show_entries",
            "packet=pts,dts,flags",
            "-of",
            "json",
        ],
        path,
    )
    .await?;
    let packets = parse_packets(&json)?;
    Ok(VideoPackets {
        time_base,
        frame_rate: videos
            .first()
            .and_then(|s| s.r_frame_rate.as_deref())
            .and_then(Rational::parse),
        start_s,
        format_name: format_name.unwrap_or_default(),
        stream_starts,
        video_streams: videos.len(),
        packets,
    })
}

fn parse_packets(json: &[u8]) -> Result<Vec<Packet>, ProbeError> {
    #[derive(Deserialize)]
    struct Raw {
        #[serde(default)]
        packets: Vec<RawPacket>,
    }
    #[derive(Deserialize)]
    struct RawPacket {
        pts: Option<i64>,
        dts: Option<i64>,
        #[serde(default)]
        flags: String,
    }
    let raw: Raw = serde_json::from_slice(json).map_err(|e| {
        ProbeError::Unreadable(format!("ffprobe gave output that is not JSON: {e}"))
    })?;
    Ok(raw
        .packets
        .into_iter()
        .map(|p| Packet {
            pts: p.pts,
            dts: p.dts,
            key: p.flags.starts_with('K'),
        })
        .collect())
}

/// The timestamp of every frame the decoder outputs for the first video stream (a decode pass:
/// for files whose packets do not all carry one). A frame without any timestamp is an error.
pub async fn decoded_frames(tools: &Tools, path: &Path) -> Result<Vec<i64>, ProbeError> {
    let json = ffprobe(
        tools,
        &[
            "-select_streams",
            "V:0",
            "-show_entries",
            "frame=best_effort_timestamp",
            "-of",
            "json",
        ],
        path,
    )
    .await?;
    #[derive(Deserialize)]
    struct Raw {
        #[serde(default)]
        frames: Vec<RawFrame>,
    }
    #[derive(Deserialize)]
    struct RawFrame {
        best_effort_timestamp: Option<i64>,
    }
    let raw: Raw = serde_json::from_slice(&json).map_err(|e| {
        ProbeError::Unreadable(format!("ffprobe gave output that is not JSON: {e}"))
    })?;
    raw.frames
        .into_iter()
        .map(|f| {
            f.best_effort_timestamp
                .ok_or_else(|| ProbeError::Unreadable("a decoded frame has no timestamp".into()))
        })
        .collect()
}

/// How many packets (frames) the first video stream of `path` has.
pub async fn count_video_frames(tools: &Tools, path: &Path) -> Result<u64, ProbeError> {
    let out = ffprobe(
        tools,
        &[
            "-select_streams",
            "V:0",
            "-count_packets",
            "-show_entries",
            "stream=nb_read_packets",
            "-of",
            "default=nw=1:nk=1",
        ],
        path,
    )
    .await?;
    let text = String::from_utf8_lossy(&out);
    text.trim()
        .parse()
        .map_err(|_| ProbeError::Unreadable(format!("ffprobe counted no frames ({})", text.trim())))
}

/// The first video stream's picture size (width, height).
pub async fn video_size(tools: &Tools, path: &Path) -> Result<(u32, u32), ProbeError> {
    let out = ffprobe(
        tools,
        &[
            "-select_streams",
            "V:0",
            "-show_entries",
            "stream=width,height",
            "-of",
            "csv=p=0",
        ],
        path,
    )
    .await?;
    let text = String::from_utf8_lossy(&out);
    let line = text.lines().next().unwrap_or_default();
    let mut parts = line.split(',').map(|v| v.trim().parse::<u32>());
    match (parts.next(), parts.next()) {
        (Some(Ok(w)), Some(Ok(h))) => Ok((w, h)),
        _ => Err(ProbeError::Unreadable(format!(
            "ffprobe gave no picture size ({})",
            line.trim()
        ))),
    }
}

/// The first video stream's `r_frame_rate` (an encoder's time base is its inverse).
pub async fn frame_rate(tools: &Tools, path: &Path) -> Result<Rational, ProbeError> {
    let out = ffprobe(
        tools,
        &[
            "-select_streams",
            "V:0",
            "-show_entries",
            "stream=r_frame_rate",
            "-of",
            "default=nw=1:nk=1",
        ],
        path,
    )
    .await?;
    let text = String::from_utf8_lossy(&out);
    Rational::parse(text.trim())
        .ok_or_else(|| ProbeError::Unreadable(format!("no frame rate ({})", text.trim())))
}

/// A hash of the first video stream's codec headers (extradata): chunks that are to be joined
/// must all have the same.
pub async fn extradata_hash(tools: &Tools, path: &Path) -> Result<String, ProbeError> {
    let out = ffprobe(
        tools,
        &[
            "-select_streams",
            "V:0",
            "-show_data_hash",
            "md5",
            "-show_entries",
            "stream=extradata_hash",
            "-of",
            "default=nw=1:nk=1",
        ],
        path,
    )
    .await?;
    Ok(String::from_utf8_lossy(&out).trim().to_owned())
}

/// Where a chunk's frames start and end in the joined video: its first timestamp and its length
/// (the last packet's end), in seconds.
pub async fn video_span(tools: &Tools, path: &Path) -> Result<(f64, f64), ProbeError> {
    let info = ffprobe(
        tools,
        &[
            "-select_streams",
            "V:0",
            "-show_entries",
            "stream=time_base:packet=pts,duration",
            "-of",
            "json",
        ],
        path,
    )
    .await?;
    #[derive(Deserialize)]
    struct Span {
        streams: Vec<RawStream>,
        #[serde(default)]
        packets: Vec<SpanPacket>,
    }
    #[derive(Deserialize)]
    struct SpanPacket {
        pts: Option<i64>,
        duration: Option<i64>,
    }
    let span: Span = serde_json::from_slice(&info).map_err(|e| {
        ProbeError::Unreadable(format!("ffprobe gave output that is not JSON: {e}"))
    })?;
    let tb = span
        .streams
        .first()
        .and_then(|s| s.time_base.as_deref())
        .and_then(Rational::parse)
        .ok_or_else(|| ProbeError::Unreadable("no video time base".into()))?;
    let start = span.packets.iter().filter_map(|p| p.pts).min();
    let end = span
        .packets
        .iter()
        .filter_map(|p| Some(p.pts? + p.duration.unwrap_or(0)))
        .max();
    match (start, end) {
        (Some(start), Some(end)) => Ok((tb.seconds(start), tb.seconds(end - start))),
        _ => Err(ProbeError::Unreadable("no video packets".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_are_read_with_missing_timestamps_kept_missing() {
        let json = br#"{"packets": [
            {"pts": 3003, "dts": 0, "flags": "K__"},
            {"pts": 9009, "dts": 3003, "flags": "___"},
            {"dts": 6006, "flags": "K_"}
        ]}"#;
        assert_eq!(
            parse_packets(json).unwrap(),
            vec![
                Packet {
                    pts: Some(3003),
                    dts: Some(0),
                    key: true
                },
                Packet {
                    pts: Some(9009),
                    dts: Some(3003),
                    key: false
                },
                Packet {
                    pts: None,
                    dts: Some(6006),
                    key: true
                },
            ]
        );
        assert_eq!(Rational::parse("1/90000").unwrap().seconds(90000), 1.0);
        assert!(Rational::parse("0/0").is_none());
    }
}
