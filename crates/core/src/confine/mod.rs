//! Confinement to the media roots, through symlinks, `..`, bind mounts and races.
//!
//! A path as written says nothing about where it leads: `/m/tapes/link.mpg` may be a symlink to
//! `/outside/secret.mpg`, and `/m/enc` may become a symlink between a check and the write that
//! follows it. So nothing here checks a path and then uses it. It *opens* the file or folder
//! first, asks the kernel where the open descriptor really is (`/proc/self/fd/N`), checks that
//! against the resolved roots, and from then on every read and write goes through the open
//! descriptor ([`Opened::io_path`], a path that names exactly that open file for this process
//! and its children, ffmpeg included). Swapping a folder for a symlink after the check changes
//! nothing: the descriptor still points where it was checked.
//!
//! Linux only (it needs `/proc`), like the rest of the farm.

use std::fs::File;
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::path::{Component, Path, PathBuf};

pub mod fs;
use fs::{fd_path, open_read};

/// Why a path was refused or could not be opened, in words that name it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfineError {
    /// Outside the roots (or, where saying more would tell what exists outside, not found).
    #[error("{0} is outside the media roots")]
    Outside(String),
    #[error("{0} is not a plain absolute path")]
    NotPlain(String),
    /// Inside the roots, but it cannot be opened: missing, unreadable, a broken link...
    #[error("{path}: {why}")]
    Io {
        path: String,
        why: String,
        kind: IoKind,
    },
}

/// What kind of I/O failure, so callers can tell a missing file from a permission problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoKind {
    NotFound,
    PermissionDenied,
    /// A link that loops, or a component that is not a folder.
    BadLink,
    Other,
}

impl ConfineError {
    fn io(path: &Path, e: &std::io::Error) -> Self {
        let (kind, why) = match e.kind() {
            ErrorKind::NotFound => (IoKind::NotFound, "the file does not exist".to_owned()),
            ErrorKind::PermissionDenied => (
                IoKind::PermissionDenied,
                "cannot read it (permission denied)".to_owned(),
            ),
            _ if e.raw_os_error() == Some(40) => (
                IoKind::BadLink,
                "a symbolic link that loops (too many levels of links)".to_owned(),
            ),
            _ => (IoKind::Other, format!("cannot open it ({e})")),
        };
        ConfineError::Io {
            path: path.display().to_string(),
            why,
            kind,
        }
    }
}

/// A file or folder opened and located: its descriptor stays open as long as this lives.
#[derive(Debug)]
pub struct Opened {
    file: File,
    real: PathBuf,
}

impl Opened {
    /// Open `path` (following links as the kernel does) and find where it really is. Only a
    /// file or a folder: anything else is refused without waiting on it (see [`open_read`]).
    pub fn open(path: &Path) -> Result<Self, ConfineError> {
        let file = open_read(path).map_err(|e| ConfineError::io(path, &e))?;
        let real = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
            .map_err(|e| ConfineError::io(path, &e))?;
        Ok(Self { file, real })
    }

    /// Where the open file really is, all links resolved.
    pub fn real(&self) -> &Path {
        &self.real
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// A path naming exactly this open file (or, for a folder, this folder: join names to it),
    /// valid for this process and the processes it starts while `self` lives.
    pub fn io_path(&self) -> PathBuf {
        fd_path(&self.file)
    }

    /// True when `self` lies under one of `roots` (no roots: anywhere).
    pub fn is_within(&self, roots: &[PathBuf]) -> bool {
        is_within(roots, &self.real)
    }
}

/// The longest part of `path` that exists (links not followed), and the names below it that
/// do not, nearest first.
fn existing_prefix(path: &Path) -> Result<(PathBuf, Vec<std::ffi::OsString>), ConfineError> {
    let mut existing = path.to_path_buf();
    let mut missing = Vec::new();
    while std::fs::symlink_metadata(&existing).is_err() {
        match (
            existing.file_name().map(|n| n.to_owned()),
            existing.parent(),
        ) {
            (Some(name), Some(parent)) => {
                missing.push(name);
                existing = parent.to_path_buf();
            }
            _ => return Err(ConfineError::Outside(path.display().to_string())),
        }
    }
    Ok((existing, missing))
}

/// True when the resolved path `real` lies under one of `roots`, each resolved too (a root
/// that does not exist confines to nothing). No roots: anywhere.
pub fn is_within(roots: &[PathBuf], real: &Path) -> bool {
    roots.is_empty()
        || roots
            .iter()
            .filter_map(|r| std::fs::canonicalize(r).ok())
            .any(|root| real.starts_with(root))
}

fn plain_absolute(path: &Path) -> Result<(), ConfineError> {
    if !path.is_absolute() || path.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(ConfineError::NotPlain(path.display().to_string()));
    }
    Ok(())
}

/// Open an existing file or folder and check that it really lies under `roots`.
pub fn open_within(roots: &[PathBuf], path: &Path) -> Result<Opened, ConfineError> {
    let opened = Opened::open(path)?;
    if !opened.is_within(roots) {
        return Err(ConfineError::Outside(path.display().to_string()));
    }
    Ok(opened)
}

/// Open the folder `dir` under `roots`, creating what is missing of it one folder at a time,
/// each created inside the checked descriptor of its parent and checked again once opened.
pub fn open_dir_within(roots: &[PathBuf], dir: &Path) -> Result<Opened, ConfineError> {
    plain_absolute(dir)?;
    // The longest part of `dir` that exists; the rest is created below it.
    let (existing, missing) = existing_prefix(dir)?;
    let mut opened = open_within(roots, &existing)?;
    for name in missing.into_iter().rev() {
        let next = opened.io_path().join(&name);
        match std::fs::create_dir(&next) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(ConfineError::io(&opened.real.join(&name), &e)),
        }
        let child =
            Opened::open(&next).map_err(|_| ConfineError::Outside(dir.display().to_string()))?;
        if !child.is_within(roots) {
            return Err(ConfineError::Outside(dir.display().to_string()));
        }
        opened = child;
    }
    if !opened.file.metadata().is_ok_and(|m| m.is_dir()) {
        return Err(ConfineError::Io {
            path: dir.display().to_string(),
            why: "not a folder".into(),
            kind: IoKind::BadLink,
        });
    }
    Ok(opened)
}

/// An existing path under `roots`, resolved (links included). Missing and outside say the same
/// thing, so the answer tells nothing about what exists outside the roots.
pub fn existing_within(roots: &[PathBuf], path: &Path) -> Result<PathBuf, ConfineError> {
    plain_absolute(path)?;
    match std::fs::canonicalize(path) {
        Ok(real) if is_within(roots, &real) => Ok(real),
        _ => Err(ConfineError::Outside(path.display().to_string())),
    }
}

/// A path that may not exist yet (an output folder): plain, absolute, and under a root once
/// its existing part is resolved. Returns the resolved path.
pub fn within(roots: &[PathBuf], path: &Path) -> Result<PathBuf, ConfineError> {
    plain_absolute(path)?;
    let (existing, rest) = existing_prefix(path)?;
    let mut resolved = std::fs::canonicalize(&existing)
        .map_err(|_| ConfineError::Outside(path.display().to_string()))?;
    if !is_within(roots, &resolved) {
        return Err(ConfineError::Outside(path.display().to_string()));
    }
    for name in rest.into_iter().rev() {
        resolved.push(name);
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::fs::*;
    use super::*;

    struct Farm {
        _dir: tempfile::TempDir,
        media: PathBuf,
        outside: PathBuf,
    }

    /// `media/tapes/a.mpg`, `media/tapes/link.mpg -> outside/secret.mpg`,
    /// `media/enc/escape -> outside`.
    fn farm() -> Farm {
        let dir = tempfile::tempdir().unwrap();
        let media = dir.path().join("media");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(media.join("tapes")).unwrap();
        std::fs::create_dir_all(media.join("enc")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(media.join("tapes/a.mpg"), b"inside").unwrap();
        std::fs::write(outside.join("secret.mpg"), b"secret").unwrap();
        std::os::unix::fs::symlink(outside.join("secret.mpg"), media.join("tapes/link.mpg"))
            .unwrap();
        std::os::unix::fs::symlink(&outside, media.join("enc/escape")).unwrap();
        Farm {
            _dir: dir,
            media,
            outside,
        }
    }

    #[test]
    fn a_file_linked_from_outside_the_roots_is_refused() {
        let f = farm();
        let roots = vec![f.media.clone()];
        let inside = open_within(&roots, &f.media.join("tapes/a.mpg")).unwrap();
        assert_eq!(std::fs::read(inside.io_path()).unwrap(), b"inside");
        let err = open_within(&roots, &f.media.join("tapes/link.mpg")).unwrap_err();
        assert!(matches!(err, ConfineError::Outside(_)), "{err}");
        // Without roots the link is followed.
        assert!(open_within(&[], &f.media.join("tapes/link.mpg")).is_ok());
    }

    #[test]
    fn an_output_folder_behind_a_link_to_outside_is_refused_and_nothing_is_created_there() {
        let f = farm();
        let roots = vec![f.media.clone()];
        for dir in ["enc/escape", "enc/escape/deeper/still"] {
            let err = open_dir_within(&roots, &f.media.join(dir)).unwrap_err();
            assert!(matches!(err, ConfineError::Outside(_)), "{dir}: {err}");
        }
        assert_eq!(
            std::fs::read_dir(&f.outside).unwrap().count(),
            1,
            "nothing created outside"
        );
        let made = open_dir_within(&roots, &f.media.join("enc/new/sub")).unwrap();
        assert_eq!(
            made.real(),
            f.media.canonicalize().unwrap().join("enc/new/sub")
        );
        let err = open_dir_within(&roots, &f.media.join("enc/../../x")).unwrap_err();
        assert!(matches!(err, ConfineError::NotPlain(_)), "{err}");
    }

    #[test]
    fn a_folder_swapped_for_a_link_after_the_check_is_not_followed() {
        let f = farm();
        let roots = vec![f.media.clone()];
        let out = f.media.join("enc/tapes");
        std::fs::create_dir(&out).unwrap();
        let dir = open_dir_within(&roots, &out).unwrap();
        // The race: the checked folder is replaced by a link to outside.
        std::fs::rename(&out, f.media.join("enc/moved")).unwrap();
        std::os::unix::fs::symlink(&f.outside, &out).unwrap();
        std::fs::write(dir.io_path().join("b.mkv"), b"out").unwrap();
        assert!(f.media.join("enc/moved/b.mkv").exists());
        assert!(!f.outside.join("b.mkv").exists());
    }

    #[test]
    fn missing_and_outside_answer_alike_and_loops_are_named() {
        let f = farm();
        let roots = vec![f.media.clone()];
        let missing = existing_within(&roots, Path::new("/no/such/place")).unwrap_err();
        let outside = existing_within(&roots, &f.outside).unwrap_err();
        assert!(matches!(missing, ConfineError::Outside(_)));
        assert!(matches!(outside, ConfineError::Outside(_)));
        assert!(within(&roots, &f.media.join("enc/escape/new")).is_err());
        assert!(within(&roots, &f.media.join("enc/fresh/new")).is_ok());

        let looped = f.media.join("tapes/loop.mpg");
        std::os::unix::fs::symlink(&looped, &looped).unwrap();
        let err = open_within(&roots, &looped).unwrap_err();
        assert!(err.to_string().contains("loops"), "{err}");
        let dangling = f.media.join("tapes/gone.mpg");
        std::os::unix::fs::symlink(f.media.join("nowhere.mpg"), &dangling).unwrap();
        let err = open_within(&roots, &dangling).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
    }

    fn mkfifo(path: &Path) {
        let made = std::process::Command::new("mkfifo")
            .arg(path)
            .status()
            .expect("mkfifo runs");
        assert!(made.success());
    }

    /// A named pipe is refused at once, in words, instead of holding the open until something
    /// writes to it (it stopped the whole dashboard, and `run`).
    #[test]
    fn a_named_pipe_is_refused_without_waiting() {
        let f = farm();
        let pipe = f.media.join("tapes/pipe.mpg");
        mkfifo(&pipe);
        let started = std::time::Instant::now();
        let refused = open_read(&pipe).unwrap_err();
        assert!(refused.to_string().contains("named pipe"), "{refused}");
        let refused = Opened::open(&pipe).unwrap_err();
        assert!(refused.to_string().contains("named pipe"), "{refused}");
        assert!(crate::identity::identify(&pipe, "archive", Path::new("/o.mkv")).is_err());
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        assert!(open_read(&f.media.join("tapes/a.mpg")).is_ok());
    }

    /// The farm's own files are never written through a link planted under their name, and
    /// anything outside stays as it was (or absent).
    #[test]
    fn a_link_planted_where_the_farm_writes_its_own_files_is_refused() {
        let f = farm();
        let enc = f.media.join("enc");
        let victim = f.outside.join("victim");
        std::os::unix::fs::symlink(&victim, enc.join(".a.mkv.videofarm-lock")).unwrap();
        let refused = open_own(&enc, ".a.mkv.videofarm-lock".as_ref(), true).unwrap_err();
        assert!(refused.to_string().contains("symbolic link"), "{refused}");
        assert!(!victim.exists(), "nothing was made outside");
        std::fs::write(&victim, b"precious").unwrap();
        std::os::unix::fs::symlink(&victim, enc.join("mark")).unwrap();
        assert!(create_new(&enc, "mark".as_ref()).is_err());
        assert!(open_own(&enc, "mark".as_ref(), false).is_err());
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        // A pipe under the lock's name is refused too, without waiting.
        mkfifo(&enc.join("pipe-lock"));
        assert!(open_own(&enc, "pipe-lock".as_ref(), true).is_err());
        assert!(open_own(&enc, "fresh-lock".as_ref(), true).is_ok());
    }
}
