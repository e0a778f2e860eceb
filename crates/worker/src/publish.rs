//! Temporary outputs and publishing. ffmpeg writes to a hidden file next to the final output
//! (same file system, so the rename is atomic), named after the job and the lease's fencing
//! token so no two attempts ever share one. Only a verified file is renamed into place; every
//! other path removes it.

use std::ffi::{OsStr, OsString};
use std::io::ErrorKind;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use videofarm_core::confine::fs;
use videofarm_core::{Failure, JobId};

/// A temporary output that is removed when dropped unless it was published.
#[derive(Debug)]
pub struct TempOutput {
    /// Its name in the (checked) output folder.
    path: PathBuf,
    /// The file itself, open: ffmpeg writes through it, so swapping the name for a link
    /// cannot redirect the write.
    file: std::fs::File,
    armed: bool,
}

/// The longest file name most file systems take (ext4, XFS, Btrfs, ZFS, NTFS via Samba).
const NAME_MAX: usize = 255;

/// The hidden name prefix shared by every attempt of one job at one output. A long output name
/// is shortened (with a hash of it, so two long names never share a prefix): the temporary
/// name must fit where the output's name fits.
fn prefix(name: &OsStr, job: &JobId) -> Vec<u8> {
    // Room for the longest "TOKEN.part.EXT" that follows.
    hidden(name, &format!(".videofarm-{job}-"), 20 + 6 + 16)
}

/// `.NAME` + `suffix`, with NAME shortened (and a hash of it added, so two long names never
/// meet) so that `reserve` more bytes still fit in a file name.
fn hidden(name: &OsStr, suffix: &str, reserve: usize) -> Vec<u8> {
    let room = NAME_MAX.saturating_sub(1 + suffix.len() + reserve);
    let mut hidden = b".".to_vec();
    if name.len() <= room {
        hidden.extend_from_slice(name.as_bytes());
    } else {
        let hash = blake3::hash(name.as_bytes()).to_hex();
        hidden.extend_from_slice(&name.as_bytes()[..room.saturating_sub(17)]);
        hidden.push(b'~');
        hidden.extend_from_slice(&hash.as_bytes()[..16]);
    }
    hidden.extend_from_slice(suffix.as_bytes());
    hidden
}

/// The right to work on one output: an exclusive lock on a hidden file beside it, held by the
/// attempt for as long as it runs (the kernel, or the file server, lets go of it when the
/// worker dies). A second copy of the same job (queued twice on a broker while the first runs)
/// finds it taken and waits instead of encoding the same file at the same time, and cleaning
/// up after earlier attempts can never touch a live attempt's file.
#[derive(Debug)]
pub struct OutputLock {
    path: PathBuf,
    file: std::fs::File,
    /// False when taken over from a silent holder: the file is then not ours to remove.
    owned: bool,
}

impl OutputLock {
    /// Take the lock for output `name` in `dir`, or `None` when another attempt holds it and
    /// marked it alive (its modification time) within `silent_after`. A holder silent longer
    /// is paused or cut off, and its lease is no longer its own: the lock is then passed by.
    pub fn try_take(
        dir: &Path,
        name: &OsStr,
        shown: &Path,
        silent_after: std::time::Duration,
    ) -> Result<Option<Self>, Failure> {
        let lock_name = OsString::from_vec(hidden(name, ".videofarm-lock", 0));
        let path = dir.join(&lock_name);
        let shown_dir = shown.parent().unwrap_or(Path::new("."));
        // A link (or a pipe) planted under the lock's name is refused, never followed.
        let file =
            fs::open_own(dir, &lock_name, true).map_err(|e| folder_failure(shown_dir, &e))?;
        match file.try_lock() {
            Ok(()) => {
                let _ = file.set_modified(std::time::SystemTime::now());
                Ok(Some(Self {
                    path,
                    file,
                    owned: true,
                }))
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                let silent = file
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > silent_after);
                Ok(silent.then_some(Self {
                    path,
                    file,
                    owned: false,
                }))
            }
            Err(std::fs::TryLockError::Error(e)) => Err(folder_failure(shown_dir, &e)),
        }
    }

    /// The lock file, to mark it alive while the attempt runs.
    pub fn handle(&self) -> Option<std::fs::File> {
        self.file.try_clone().ok()
    }
}

impl Drop for OutputLock {
    fn drop(&mut self) {
        // Gone with its holder: a lock file left behind would only be clutter. One taken over
        // from a silent holder is removed too once that holder is gone (killed while paused:
        // nobody else would remove it); while it lives, it is the holder's to remove.
        if self.owned || self.file.try_lock().is_ok() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

impl TempOutput {
    /// Create the temporary file for attempt `token` in `dir` (this also proves the folder
    /// writable); `shown` is the output as the user named it, for messages.
    pub fn create(
        dir: &Path,
        name: &OsStr,
        shown: &Path,
        job: &JobId,
        token: u64,
        extension: &str,
    ) -> Result<Self, Failure> {
        let shown_dir = shown.parent().unwrap_or(Path::new("."));
        if name.len() > NAME_MAX {
            return Err(Failure::permanent(format!(
                "{}: the output's file name is {} bytes long; file systems take at most {NAME_MAX}",
                shown.display(),
                name.len()
            )));
        }
        let mut temp = prefix(name, job);
        temp.extend_from_slice(format!("{token}.part.{extension}").as_bytes());
        let path = dir.join(OsStr::from_bytes(&temp));
        let file = fs::create_new(dir, OsStr::from_bytes(&temp))
            .map_err(|e| folder_failure(shown_dir, &e))?;
        Ok(Self {
            path,
            file,
            armed: true,
        })
    }

    /// How many bytes the open temporary file holds (0 when that cannot be read).
    pub fn size(&self) -> u64 {
        self.file.metadata().map_or(0, |m| m.len())
    }

    /// The temporary file's name in the output folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path to the open temporary file itself, for ffmpeg to write and verification to read.
    pub fn io_path(&self) -> PathBuf {
        fs::fd_path(&self.file)
    }

    /// Flush the file to disk and move it to `output` (a name in the same folder); `shown` is
    /// the output as the user named it. Without `overwrite` an existing output is never
    /// replaced (a hard link refuses to; on file systems without links the rename goes ahead
    /// only after checking). The name must still be our file: one swapped for anything else
    /// is not published.
    pub fn publish(mut self, output: &Path, shown: &Path, overwrite: bool) -> Result<(), Failure> {
        let fail = |what: &str, e: std::io::Error| {
            Failure::retryable(format!("{}: could not {what}: {e}", shown.display()), "")
        };
        self.file
            .sync_all()
            .map_err(|e| fail("flush the encoded file", e))?;
        let ours = self
            .file
            .metadata()
            .map_err(|e| fail("read the encoded file", e))?;
        let named = fs::identity(&self.path).map_err(|e| fail("find the encoded file", e))?;
        if named != (ours.dev(), ours.ino()) {
            return Err(Failure::retryable(
                format!(
                    "{}: the temporary file was replaced while encoding; not publishing it",
                    shown.display()
                ),
                "",
            ));
        }
        let appeared = || {
            Failure::permanent(format!(
                "{}: a file appeared at the output while encoding; not replacing it (use --overwrite)",
                shown.display()
            ))
        };
        if overwrite {
            fs::rename(&self.path, output)
                .map_err(|e| fail("move the encoded file into place", e))?;
        } else {
            match fs::hard_link(&self.path, output) {
                Ok(()) => {
                    fs::remove_file(&self.path).map_err(|e| fail("remove the temporary file", e))?
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => return Err(appeared()),
                Err(_) => {
                    if fs::kind(output).is_ok() {
                        return Err(appeared());
                    }
                    fs::rename(&self.path, output)
                        .map_err(|e| fail("move the encoded file into place", e))?;
                }
            }
        }
        self.armed = false;
        if let Some(dir) = output.parent() {
            // Make the rename itself durable; not every file system allows syncing a folder.
            fs::sync_folder(dir);
        }
        Ok(())
    }
}

impl Drop for TempOutput {
    fn drop(&mut self) {
        if self.armed {
            if let Err(e) = fs::remove_file(&self.path) {
                if e.kind() != ErrorKind::NotFound {
                    tracing::warn!(path = %self.path.display(), error = %e, "could not remove a temporary output");
                }
            }
        }
    }
}

/// Remove temporary files that earlier attempts of this job left behind in `dir` (a worker
/// killed with `kill -9` cannot clean up after itself). Returns how many were removed.
pub fn remove_stale(dir: &Path, name: &OsStr, job: &JobId) -> usize {
    let prefix = prefix(name, job);
    fs::remove_named(dir, |n| n.as_bytes().starts_with(&prefix))
}

fn folder_failure(dir: &Path, e: &std::io::Error) -> Failure {
    let shown = dir.display();
    match e.kind() {
        ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem => {
            Failure::permanent(format!("output folder {shown} is not writable ({e})"))
        }
        // Something planted where the farm keeps its own file (a link, a pipe).
        ErrorKind::InvalidInput => {
            Failure::permanent(format!("output folder {shown}: refused: {e}"))
        }
        ErrorKind::StorageFull => {
            Failure::retryable(format!("output folder {shown}: the disk is full"), "")
        }
        // A name too long can never be written, however often it is tried.
        _ if e.raw_os_error() == Some(36) => {
            Failure::permanent(format!("output folder {shown}: {e}"))
        }
        _ => Failure::retryable(format!("output folder {shown}: {e}"), ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(out: &Path, job: &str, token: u64) -> TempOutput {
        TempOutput::create(
            out.parent().unwrap(),
            out.file_name().unwrap(),
            out,
            &JobId(job.into()),
            token,
            "mkv",
        )
        .unwrap()
    }

    #[test]
    fn publish_moves_into_place_and_never_replaces_without_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("tape.mkv");
        let tmp = create(&out, "7", 3);
        std::fs::write(tmp.io_path(), b"encoded").unwrap();
        tmp.publish(&out, &out, false).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"encoded");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary left"
        );

        let tmp = create(&out, "7", 4);
        std::fs::write(tmp.io_path(), b"other").unwrap();
        let err = tmp.publish(&out, &out, false).unwrap_err();
        assert!(err.reason.contains("--overwrite"), "{}", err.reason);
        assert_eq!(std::fs::read(&out).unwrap(), b"encoded");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "failed publish cleaned up"
        );
    }

    #[test]
    fn a_temporary_swapped_for_a_link_is_neither_written_through_nor_published() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim.conf");
        std::fs::write(&victim, b"precious").unwrap();
        let out = dir.path().join("enc").join("tape.mkv");
        std::fs::create_dir(out.parent().unwrap()).unwrap();
        let tmp = create(&out, "7", 1);
        std::fs::remove_file(tmp.path()).unwrap();
        std::os::unix::fs::symlink(&victim, tmp.path()).unwrap();
        std::fs::write(tmp.io_path(), b"encoded").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        let err = tmp.publish(&out, &out, true).unwrap_err();
        assert!(err.reason.contains("replaced"), "{}", err.reason);
        assert!(!out.exists());
    }

    #[test]
    fn a_long_output_name_gets_a_temporary_name_that_fits() {
        let dir = tempfile::tempdir().unwrap();
        let long = "t".repeat(246) + ".mkv";
        let out = dir.path().join(&long);
        let tmp = create(&out, "123456", 99);
        assert!(tmp.path().file_name().unwrap().len() <= NAME_MAX);
        std::fs::write(tmp.io_path(), b"encoded").unwrap();
        tmp.publish(&out, &out, false).unwrap();
        assert!(out.exists());
        let stale = create(&out.with_file_name("u".repeat(250) + ".mkv"), "1", 1);
        std::mem::forget(stale);
        assert_eq!(
            remove_stale(
                dir.path(),
                OsStr::new(&("u".repeat(250) + ".mkv")),
                &JobId("1".into())
            ),
            1
        );
        let too_long = dir.path().join("x".repeat(256));
        let err = TempOutput::create(
            dir.path(),
            too_long.file_name().unwrap(),
            &too_long,
            &JobId("1".into()),
            1,
            "mkv",
        )
        .unwrap_err();
        assert_eq!(err.kind, videofarm_core::FailureKind::Permanent);
        assert!(err.reason.contains("255"), "{}", err.reason);
    }

    #[test]
    fn one_attempt_at_a_time_works_on_an_output_and_leaves_no_lock_file() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("tape.mkv");
        let name = out.file_name().unwrap();
        let patience = std::time::Duration::from_secs(60);
        let first = OutputLock::try_take(dir.path(), name, &out, patience).unwrap();
        assert!(first.is_some());
        assert!(
            OutputLock::try_take(dir.path(), name, &out, patience)
                .unwrap()
                .is_none(),
            "a second attempt waits"
        );
        // A holder that stopped marking it alive is passed by.
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(120);
        let handle = first.as_ref().unwrap().handle().unwrap();
        handle.set_modified(old).unwrap();
        let past = OutputLock::try_take(dir.path(), name, &out, patience).unwrap();
        assert!(past.is_some(), "a silent holder does not hold anyone up");
        drop(past);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "not ours to remove"
        );
        drop(first);
        let again = OutputLock::try_take(dir.path(), name, &out, patience).unwrap();
        assert!(again.is_some(), "free once the first is done");
        drop(again);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    /// A holder paused past its silence, passed by, then killed (its clean-up never ran): the
    /// attempt that took over removes the lock file when it is done (a soak found one left).
    #[test]
    fn a_lock_taken_over_from_a_holder_that_died_is_not_left_behind() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("tape.mkv");
        let name = out.file_name().unwrap();
        let patience = std::time::Duration::from_secs(60);
        // Another worker's lock, silent for two minutes.
        let holder = fs::open_own(dir.path(), ".tape.mkv.videofarm-lock".as_ref(), true).unwrap();
        holder.try_lock().unwrap();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(120);
        holder.set_modified(old).unwrap();
        let past = OutputLock::try_take(dir.path(), name, &out, patience)
            .unwrap()
            .expect("a silent holder is passed by");
        // It dies: its descriptor closes, the file stays.
        drop(holder);
        drop(past);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn stale_temporaries_of_the_job_are_removed_and_others_kept() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("tape.mkv");
        let stale = create(&out, "7", 1);
        std::mem::forget(stale); // as if the worker had been killed
        let other_job = create(&out, "8", 1);
        assert_eq!(
            remove_stale(dir.path(), OsStr::new("tape.mkv"), &JobId("7".into())),
            1
        );
        assert!(other_job.path().exists());
    }

    /// A link planted under the output lock's name is refused with the reason; the file it
    /// points to outside is neither made nor touched (before, the worker created it).
    #[test]
    fn a_link_planted_at_the_lock_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("enc");
        std::fs::create_dir(&out).unwrap();
        let victim = dir.path().join("outside-victim");
        std::os::unix::fs::symlink(&victim, out.join(".a.mkv.videofarm-lock")).unwrap();
        let refused = OutputLock::try_take(
            &out,
            "a.mkv".as_ref(),
            &out.join("a.mkv"),
            std::time::Duration::from_secs(5),
        )
        .map(|_| ())
        .expect_err("refused");
        assert_eq!(refused.kind, videofarm_core::FailureKind::Permanent);
        assert!(
            refused.reason.contains("symbolic link"),
            "{}",
            refused.reason
        );
        assert!(!victim.exists());
    }
}
