//! What ffprobe reports of a Matroska file, read in-process from its head: the segment's
//! duration (Info) and its tracks (type and codec). Verifying an output needs only that, and
//! starting ffprobe costs ~0.1 s of CPU on Debian's ffmpeg, as much as a whole stream copy of a
//! short clip. ffprobe's `-show_format -show_streams` of a Matroska file reads the same elements.
//!
//! Anything this reader does not know for certain (no Duration, a track type or video codec it
//! cannot name, an element too large, a damaged head) gives `None`, and the caller runs ffprobe.

use crate::probe::{MediaInfo, StreamInfo};
use std::io::{BufReader, Read, Seek};
use std::path::Path;

const EBML: u32 = 0x1A45_DFA3;
const SEGMENT: u32 = 0x1853_8067;
const INFO: u32 = 0x1549_A966;
const TIMESTAMP_SCALE: u32 = 0x2A_D7B1;
const DURATION: u32 = 0x4489;
const TRACKS: u32 = 0x1654_AE6B;
const TRACK_ENTRY: u32 = 0xAE;
const TRACK_TYPE: u32 = 0x83;
const CODEC_ID: u32 = 0x86;
const CLUSTER: u32 = 0x1F43_B675;
/// Info and Tracks are small; a larger one is not what ffmpeg writes.
const MAX_READ: u64 = 1 << 20;

/// Read `path`'s duration and tracks, or `None` when ffprobe should be asked instead.
pub fn read(path: &Path) -> Option<MediaInfo> {
    // Never waits on a pipe put where a file was expected.
    read_from(BufReader::new(
        videofarm_core::confine::fs::open_read(path).ok()?,
    ))
}

/// [`read`] from any reader: the head of a Matroska file, whatever its bytes.
fn read_from(mut file: impl Read + Seek) -> Option<MediaInfo> {
    let (id, size) = header(&mut file)?;
    if id != EBML {
        return None;
    }
    file.seek_relative(i64::try_from(size?).ok()?).ok()?;
    let (id, _segment_size) = header(&mut file)?;
    if id != SEGMENT {
        return None;
    }
    let mut duration = None;
    let mut streams = None;
    while duration.is_none() || streams.is_none() {
        let (id, size) = header(&mut file)?;
        let size = size?;
        match id {
            INFO | TRACKS if size <= MAX_READ => {
                let mut body = vec![0; size as usize];
                file.read_exact(&mut body).ok()?;
                if id == INFO {
                    duration = Some(info_duration(&body)?);
                } else {
                    streams = Some(tracks(&body)?);
                }
            }
            // Frames start: ffmpeg writes Info and Tracks before them.
            CLUSTER | INFO | TRACKS => return None,
            _ => file.seek_relative(i64::try_from(size).ok()?).ok()?,
        }
    }
    Some(MediaInfo {
        format_name: Some("matroska,webm".into()),
        duration_s: duration,
        streams: streams?,
    })
}

/// An element's ID (marker bits kept) and size (`None` inside when unknown).
fn header(r: &mut impl Read) -> Option<(u32, Option<u64>)> {
    let (id, _) = vint(r, 4, true)?;
    let (size, len) = vint(r, 8, false)?;
    let unknown = size == (1u64 << (7 * len)) - 1;
    Some((id as u32, (!unknown).then_some(size)))
}

/// An EBML variable-length integer of at most `max` bytes; returns (value, length).
fn vint(r: &mut impl Read, max: u32, keep_marker: bool) -> Option<(u64, u32)> {
    let mut first = [0u8; 1];
    r.read_exact(&mut first).ok()?;
    let len = first[0].leading_zeros() + 1;
    if len > max {
        return None;
    }
    let mut value = if keep_marker {
        u64::from(first[0])
    } else {
        u64::from(first[0]) & ((1u64 << (8 - len)) - 1)
    };
    for _ in 1..len {
        let mut b = [0u8; 1];
        r.read_exact(&mut b).ok()?;
        value = (value << 8) | u64::from(b[0]);
    }
    Some((value, len))
}

/// The children of a master element's body: (id, payload).
fn children(mut body: &[u8]) -> Option<Vec<(u32, &[u8])>> {
    let mut out = Vec::new();
    while !body.is_empty() {
        let (id, size) = header(&mut body)?;
        let size = usize::try_from(size?).ok()?;
        if size > body.len() {
            return None;
        }
        let (payload, rest) = body.split_at(size);
        out.push((id, payload));
        body = rest;
    }
    Some(out)
}

fn uint(payload: &[u8]) -> Option<u64> {
    (payload.len() <= 8).then(|| payload.iter().fold(0u64, |v, &b| (v << 8) | u64::from(b)))
}

/// Seconds, from Duration (a float in timestamp ticks) and TimestampScale (ns per tick).
fn info_duration(body: &[u8]) -> Option<f64> {
    let mut scale = 1_000_000u64;
    let mut ticks = None;
    for (id, payload) in children(body)? {
        match id {
            TIMESTAMP_SCALE => scale = uint(payload)?,
            DURATION => {
                ticks = Some(match payload.len() {
                    4 => f64::from(f32::from_be_bytes(payload.try_into().ok()?)),
                    8 => f64::from_be_bytes(payload.try_into().ok()?),
                    _ => return None,
                })
            }
            _ => {}
        }
    }
    let seconds = ticks? * scale as f64 / 1e9;
    (seconds.is_finite() && seconds > 0.0).then_some(seconds)
}

fn tracks(body: &[u8]) -> Option<Vec<StreamInfo>> {
    let mut streams = Vec::new();
    for (id, entry) in children(body)? {
        if id != TRACK_ENTRY {
            continue;
        }
        let mut kind = None;
        let mut codec = None;
        for (id, payload) in children(entry)? {
            match id {
                TRACK_TYPE => kind = uint(payload),
                CODEC_ID => codec = Some(std::str::from_utf8(payload).ok()?.trim_end_matches('\0')),
                _ => {}
            }
        }
        let (codec_type, codec_name) = match (kind?, codec?) {
            (1, codec) => ("video", video_codec(codec)?),
            (2, codec) => ("audio", codec),
            (0x11, codec) => ("subtitle", codec),
            _ => return None,
        };
        streams.push(StreamInfo {
            index: streams.len() as u32,
            codec_type: codec_type.to_owned(),
            codec_name: codec_name.to_owned(),
            attached_pic: false,
        });
    }
    (!streams.is_empty()).then_some(streams)
}

/// ffprobe's name for a Matroska video codec ID; `None` for one not listed here.
fn video_codec(id: &str) -> Option<&'static str> {
    Some(match id {
        "V_MPEG4/ISO/AVC" => "h264",
        "V_MPEGH/ISO/HEVC" => "hevc",
        "V_AV1" => "av1",
        "V_VP9" => "vp9",
        "V_VP8" => "vp8",
        "V_MPEG2" => "mpeg2video",
        "V_MPEG1" => "mpeg1video",
        "V_MPEG4/ISO/SP" | "V_MPEG4/ISO/ASP" | "V_MPEG4/ISO/AP" => "mpeg4",
        "V_FFV1" => "ffv1",
        "V_PRORES" => "prores",
        "V_THEORA" => "theora",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vints_and_unknown_sizes() {
        let (id, size) = header(&mut &[0x1A, 0x45, 0xDF, 0xA3, 0x84][..]).unwrap();
        assert_eq!((id, size), (EBML, Some(4)));
        let (_, size) = header(&mut &[0x83, 0xFF][..]).unwrap();
        assert_eq!(size, None, "all ones is an unknown size");
        assert!(header(&mut &[0x00, 0x00][..]).is_none(), "no marker bit");
    }

    #[test]
    fn garbage_and_truncated_heads_are_left_to_ffprobe() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.mkv");
        std::fs::write(&path, b"not matroska at all").unwrap();
        assert_eq!(read(&path), None);
        std::fs::write(
            &path,
            [0x1A, 0x45, 0xDF, 0xA3, 0x80, 0x18, 0x53, 0x80, 0x67],
        )
        .unwrap();
        assert_eq!(read(&path), None);
    }
}

/// Fuzzing the Matroska head reader, where an output file's bytes (written by ffmpeg, or
/// uploaded to the file server) enter the farm.
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(videofarm_fuzzing::config())]

        /// Anything at all: what it reads or `None` (then ffprobe is asked), never a panic.
        #[test]
        fn any_head(data in videofarm_fuzzing::bytes(&[0x1A, 0x45, 0xDF, 0xA3])) {
            let _ = read_from(std::io::Cursor::new(data));
        }
    }
}
