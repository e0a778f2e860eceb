//! ffmpeg and ffprobe, run the way a farm needs them run.
//!
//! - Every process gets an argv list, never a shell, and every file name is passed with the
//!   `file:` protocol prefix, so a name like `concat:a|b` or `-y` is only ever a file name.
//! - stderr is drained concurrently and its tail kept for the error message.
//! - A running encode is stopped by a cancellation token, by a stall (no progress for a set
//!   time) or by a timeout, and it dies with its worker even on `kill -9` (Linux parent-death
//!   signal).
//!
//! Layout:
//! - [`tools`]: finding the ffmpeg and ffprobe binaries.
//! - [`probe`]: ffprobe's view of a file, and the checks an output must pass.
//! - [`encode`]: running one encode with progress.
//! - [`analyse`]: the tape report's measurements, taken in the encode's decode pass.
//! - `header`: the input's description read from ffmpeg's own header.
//! - [`lossless`]: proving an output decodes to exactly its source's frames.
//! - [`matroska`]: an encoded Matroska file's duration and tracks, read in-process.
//! - [`packets`]: the first video stream's packets and clocks, for split encoding.
//! - [`progress`]: parsing `-progress` output.
//! - [`tail`]: the bounded stderr tail.

pub mod analyse;
pub mod encode;
pub mod ends;
mod header;
pub mod lossless;
pub mod matroska;
pub mod packets;
pub mod picture;
pub mod probe;
pub mod progress;
mod quality;
pub mod tail;
pub mod tools;
mod tools_sys;

pub use encode::{encode, EncodeError, EncodeRequest};
pub use probe::{
    data_streams_left_out, decode_check, probe, probe_output, verify_chunk, verify_output,
    MediaInfo, ProbeError, StreamInfo,
};
pub use quality::sampled_ssim;
pub use tools::{Tools, ToolsError};

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::Path;

/// `file:` + the path's bytes: ffmpeg then treats the argument as a plain file name whatever
/// characters it holds.
pub fn file_url(path: &Path) -> OsString {
    let mut bytes = b"file:".to_vec();
    bytes.extend_from_slice(path.as_os_str().as_encoded_bytes());
    OsString::from_vec(bytes)
}

/// ffmpeg's muxer for an output file extension, for when the file it writes is named by a path
/// without one (an open descriptor). `None`: let ffmpeg guess from the name.
pub fn muxer_for(extension: &str) -> Option<&'static str> {
    Some(match extension.to_ascii_lowercase().as_str() {
        "mkv" | "mka" | "mks" => "matroska",
        "webm" => "webm",
        "mp4" | "m4v" | "m4a" => "mp4",
        "mov" => "mov",
        "ts" | "m2ts" | "mts" => "mpegts",
        "mpg" | "mpeg" | "vob" => "vob",
        "avi" => "avi",
        "nut" => "nut",
        "flv" => "flv",
        "ogv" | "ogg" => "ogg",
        "mxf" => "mxf",
        _ => return None,
    })
}
