//! Checks that fail a job at once, in plain words that name the file, when no retry can help.

use std::fs::File;
use std::path::Path;
use videofarm_core::Failure;
use videofarm_ffmpeg::MediaInfo;

/// The opened input must be a regular file and not be empty; `shown` names it.
pub fn check_input(shown: &Path, input: &File) -> Result<u64, Failure> {
    let meta = input
        .metadata()
        .map_err(|e| Failure::permanent(format!("{}: cannot read it ({e})", shown.display())))?;
    if !meta.is_file() {
        return Err(Failure::permanent(format!(
            "{}: not a regular file",
            shown.display()
        )));
    }
    if meta.len() == 0 {
        return Err(Failure::permanent(format!(
            "{}: the file is empty (0 bytes)",
            shown.display()
        )));
    }
    Ok(meta.len())
}

/// The input must be something ffprobe reads as video, not a still picture.
pub fn check_media(input: &Path, info: &MediaInfo) -> Result<(), Failure> {
    if info.is_still_image() {
        return Err(Failure::permanent(format!(
            "{}: not a video (it is a still picture, {})",
            input.display(),
            info.format_name.as_deref().unwrap_or("an image")
        )));
    }
    if info.videos().next().is_none() {
        return Err(Failure::permanent(format!(
            "{}: not a video (it has no video stream)",
            input.display()
        )));
    }
    Ok(())
}

/// The output (`output`, a name in the checked folder) must not be the input, whatever path
/// spells it; `shown` names the output.
pub fn check_not_self(input: &File, output: &Path, shown: &Path) -> Result<(), Failure> {
    if videofarm_core::confine::fs::is_same_file(input, output) {
        return Err(Failure::permanent(format!(
            "{}: the output would overwrite its own input",
            shown.display()
        )));
    }
    Ok(())
}
