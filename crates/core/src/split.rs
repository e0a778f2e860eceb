//! One long input encoded by many workers at once: when a job is split, and what part of its
//! input a chunk job encodes.
//!
//! A job whose input is long enough becomes a *parent*: the worker that leases it plans the
//! cuts, queues one chunk job per range of frames (video only, each an ordinary job with leases,
//! retries and fencing) and puts the parent back to wait ([`crate::Outcome::Deferred`]). Each
//! time the parent comes back it looks at the chunks finished so far; when all are there it
//! joins them, muxes the other streams once from the source, verifies the whole and publishes
//! it. Chunk files live in a hidden work folder beside the output (see [`work_dir`]).

use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::fmt;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// `auto` splits inputs at least this long.
pub const AUTO_MIN_SECS: f64 = 600.0;
/// `auto` cuts chunks of about this much source: a few minutes of encoding each at SD.
pub const AUTO_CHUNK_SECS: f64 = 120.0;
/// The shortest chunk anyone may ask for.
pub const MIN_CHUNK_SECS: f64 = 1.0;

/// When a long input is split into chunks (`--split`, config `split`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Split {
    /// Never: one worker encodes the whole file.
    #[default]
    Off,
    /// Inputs of [`AUTO_MIN_SECS`] or more, in chunks of about [`AUTO_CHUNK_SECS`].
    Auto,
    /// Any input longer than one chunk, in chunks of about this many seconds.
    Every(f64),
}

impl Split {
    pub fn is_off(&self) -> bool {
        matches!(self, Split::Off)
    }

    /// The chunk length to cut an input of `duration_s` into, or `None` to keep it whole.
    pub fn chunk_secs(&self, duration_s: f64) -> Option<f64> {
        let (min, chunk) = match *self {
            Split::Off => return None,
            Split::Auto => (AUTO_MIN_SECS, AUTO_CHUNK_SECS),
            Split::Every(secs) => (secs * 1.5, secs),
        };
        (duration_s.is_finite() && duration_s >= min).then_some(chunk)
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Split::Off => f.write_str("off"),
            Split::Auto => f.write_str("auto"),
            Split::Every(secs) => write!(f, "{secs}"),
        }
    }
}

impl FromStr for Split {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim() {
            "off" | "no" | "false" => Ok(Split::Off),
            "auto" => Ok(Split::Auto),
            other => match other.parse::<f64>() {
                Ok(secs) if secs.is_finite() && (MIN_CHUNK_SECS..=86_400.0).contains(&secs) => {
                    Ok(Split::Every(secs))
                }
                _ => Err(format!(
                    "split must be auto, off, or a chunk length in seconds ({MIN_CHUNK_SECS} to 86400), not {text:?}"
                )),
            },
        }
    }
}

impl Serialize for Split {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Split {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Number(f64),
        }
        match Raw::deserialize(d)? {
            Raw::Text(text) => text.parse().map_err(serde::de::Error::custom),
            Raw::Number(n) => n.to_string().parse().map_err(serde::de::Error::custom),
        }
    }
}

/// The part of its parent's input a chunk job encodes: source frames `first..end` of the first
/// video stream (in presentation order), video only, cut so that the chunks joined are frame
/// for frame what one encode of the whole would give.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Chunk {
    /// 0-based; chunks are joined in this order.
    pub index: u32,
    pub count: u32,
    /// Source frames (presentation order): `first` included, `end` excluded.
    pub first: u64,
    pub end: u64,
    /// Where the input is opened (`-ss`, seconds of the file's own clock), at or before a
    /// keyframe that precedes the frames the filters need.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seek_s: Option<f64>,
    /// The frames the profile's filters see (the chunk plus its pre- and post-roll): source
    /// timestamps in seconds; `None` for the end of the file.
    pub window: (f64, Option<f64>),
    /// The frames kept after the filters: the chunk itself.
    pub keep: (f64, Option<f64>),
    /// The treatment chosen for its tape (every chunk of a tape is treated alike).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub treat: Option<crate::treat::Treatment>,
}

impl Chunk {
    /// Frames of the source this chunk covers.
    pub fn frames(&self) -> u64 {
        self.end - self.first
    }

    /// Why this chunk cannot be encoded, or `Ok`: a message on a broker is hostile input.
    pub fn check(&self) -> Result<(), String> {
        let times = [
            self.seek_s,
            Some(self.window.0),
            self.window.1,
            Some(self.keep.0),
            self.keep.1,
        ];
        if self.count == 0
            || self.index >= self.count
            || self.end <= self.first
            || times.iter().flatten().any(|t| !t.is_finite())
            || self.treat.is_some_and(|t| !t.is_valid())
        {
            return Err(format!(
                "chunk {} of {} (frames {}..{}) is not a valid chunk",
                self.index, self.count, self.first, self.end
            ));
        }
        Ok(())
    }
}

/// Chunk files are NUT: exact timestamps (Matroska rounds to 1 ms, which drifts at the seams).
pub const CHUNK_EXTENSION: &str = "nut";

/// The hidden folder beside `output` that holds its chunks while a split encode runs.
pub fn work_dir(output: &Path) -> PathBuf {
    let name = output
        .file_name()
        .map(|n| n.as_bytes())
        .unwrap_or(b"output");
    // Keep the folder's name within the 255 bytes a name may have.
    let stem = &name[..name.len().min(200)];
    let mut dir = b".".to_vec();
    dir.extend_from_slice(stem);
    dir.extend_from_slice(b".videofarm-split");
    output
        .parent()
        .unwrap_or(Path::new("/"))
        .join(OsString::from_vec(dir))
}

/// The file chunk `index` is published as, in the work folder of `output`.
pub fn chunk_path(output: &Path, index: u32) -> PathBuf {
    work_dir(output).join(format!("chunk-{index:05}.mkv"))
}

/// The marker of a chunk that failed for good, in its work folder (with the reason); renamed to
/// `.reported` once its parent failed.
pub fn failed_name(index: u32, reported: bool) -> String {
    format!(
        "chunk-{index:05}.{}",
        if reported { "reported" } else { "failed" }
    )
}

/// Where a chunk's warnings (damage in its part of the input) wait for the join.
pub fn warnings_name(index: u32) -> String {
    format!("chunk-{index:05}.warnings")
}

/// Where a chunk's measured signal (for its tape's report) waits for the join.
pub fn signal_name(index: u32) -> String {
    format!("chunk-{index:05}.signal")
}

/// The most a chunk's signal file may hold (half-second bins: hours of tape).
pub const SIGNAL_MAX_BYTES: usize = 4 << 20;

/// The identity key of chunk `index` of the job keyed `parent_key`.
pub fn chunk_key(parent_key: &str, index: u32) -> String {
    blake3::hash(format!("{parent_key}\0chunk\0{index}").as_bytes())
        .to_hex()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_settings_parse_and_decide() {
        assert_eq!("auto".parse::<Split>().unwrap(), Split::Auto);
        assert_eq!("off".parse::<Split>().unwrap(), Split::Off);
        assert_eq!("90".parse::<Split>().unwrap(), Split::Every(90.0));
        for bad in ["0", "-5", "nan", "1e300", "often"] {
            assert!(bad.parse::<Split>().is_err(), "{bad}");
        }
        assert_eq!(Split::Auto.chunk_secs(599.0), None);
        assert_eq!(Split::Auto.chunk_secs(3600.0), Some(AUTO_CHUNK_SECS));
        assert_eq!(Split::Every(2.0).chunk_secs(2.5), None, "not worth one cut");
        assert_eq!(Split::Every(2.0).chunk_secs(6.0), Some(2.0));
        assert_eq!(Split::Off.chunk_secs(1e6), None);
        let json = serde_json::to_string(&Split::Every(90.0)).unwrap();
        assert_eq!(
            serde_json::from_str::<Split>(&json).unwrap(),
            Split::Every(90.0)
        );
        assert_eq!(
            serde_json::from_str::<Split>("120").unwrap(),
            Split::Every(120.0)
        );
    }

    #[test]
    fn chunks_live_in_a_hidden_folder_beside_the_output_and_have_keys_of_their_own() {
        let out = Path::new("/m/enc/tape.mkv");
        assert_eq!(
            chunk_path(out, 3),
            Path::new("/m/enc/.tape.mkv.videofarm-split/chunk-00003.mkv")
        );
        assert_ne!(chunk_key("k", 1), chunk_key("k", 2));
        assert_ne!(chunk_key("k", 1)[..16], chunk_key("k", 2)[..16]);
        let long = Path::new("/m").join("x".repeat(255));
        assert!(work_dir(&long).file_name().unwrap().len() <= 255);
    }
}
