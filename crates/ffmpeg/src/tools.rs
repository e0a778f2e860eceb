//! Finding ffmpeg and ffprobe: a configured path wins, otherwise `PATH` is searched.

use std::path::{Path, PathBuf};

/// The two binaries every encode needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Tools {
    pub ffmpeg: PathBuf,
    pub ffprobe: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ToolsError {
    #[error("{tool} was not found {where_}. Install it (Debian/Ubuntu: `sudo apt-get install ffmpeg`) or set `{tool} = \"/path/to/{tool}\"` in the config file")]
    Missing { tool: &'static str, where_: String },
}

impl Tools {
    /// Run ffmpeg with `args` to its end (no input, killed if the caller gives up), its output
    /// kept; an error only when it could not be started.
    pub(crate) async fn ffmpeg_output<I, S>(&self, args: I) -> Result<std::process::Output, String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        tokio::process::Command::new(&self.ffmpeg)
            .args(args)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| format!("could not start ffmpeg ({}): {e}", self.ffmpeg.display()))
    }

    /// Resolve both tools. `ffmpeg`/`ffprobe` are configured paths (or names) if any.
    pub fn locate(ffmpeg: Option<&Path>, ffprobe: Option<&Path>) -> Result<Tools, ToolsError> {
        Ok(Tools {
            ffmpeg: find("ffmpeg", ffmpeg)?,
            ffprobe: find("ffprobe", ffprobe)?,
        })
    }
}

fn find(tool: &'static str, configured: Option<&Path>) -> Result<PathBuf, ToolsError> {
    let wanted = configured.unwrap_or(Path::new(tool));
    if wanted.components().count() > 1 {
        return if is_executable(wanted) {
            Ok(wanted.to_owned())
        } else {
            Err(ToolsError::Missing {
                tool,
                where_: format!("at {} (from the config)", wanted.display()),
            })
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(wanted))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(|| ToolsError::Missing {
            tool,
            where_: "on PATH".to_owned(),
        })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}
