//! Checks that fail a job at once, in plain words that name the file, when no retry can help.

use std::fs::File;
use std::io::ErrorKind;
use std::path::Path;
use videofarm_core::Failure;
use videofarm_ffmpeg::MediaInfo;

/// The input must exist, be a readable regular file, and not be empty.
pub fn check_input(input: &Path) -> Result<u64, Failure> {
    let shown = input.display();
    let meta = std::fs::metadata(input).map_err(|e| {
        Failure::permanent(match e.kind() {
            ErrorKind::NotFound => format!("{shown}: the file does not exist"),
            ErrorKind::PermissionDenied => format!("{shown}: cannot read it (permission denied)"),
            _ => format!("{shown}: cannot read it ({e})"),
        })
    })?;
    if !meta.is_file() {
        return Err(Failure::permanent(format!("{shown}: not a regular file")));
    }
    if meta.len() == 0 {
        return Err(Failure::permanent(format!(
            "{shown}: the file is empty (0 bytes)"
        )));
    }
    File::open(input).map_err(|e| {
        Failure::permanent(match e.kind() {
            ErrorKind::PermissionDenied => format!("{shown}: cannot read it (permission denied)"),
            _ => format!("{shown}: cannot read it ({e})"),
        })
    })?;
    Ok(meta.len())
}

/// The input must be something ffprobe reads as video.
pub fn check_media(input: &Path, info: &MediaInfo) -> Result<(), Failure> {
    if info.videos().next().is_none() {
        return Err(Failure::permanent(format!(
            "{}: not a video (it has no video stream)",
            input.display()
        )));
    }
    Ok(())
}

/// The output must not be the input, whatever path spells it.
pub fn check_not_self(input: &Path, output: &Path) -> Result<(), Failure> {
    let same = match (
        std::fs::canonicalize(input),
        output.parent().map(std::fs::canonicalize),
    ) {
        (Ok(inp), Some(Ok(dir))) => output.file_name().is_some_and(|name| dir.join(name) == inp),
        _ => input == output,
    };
    if same {
        return Err(Failure::permanent(format!(
            "{}: the output would overwrite its own input",
            output.display()
        )));
    }
    Ok(())
}
