//! Temporary outputs and publishing. ffmpeg writes to a hidden file next to the final output
//! (same file system, so the rename is atomic), named after the job and the lease's fencing
//! token so no two attempts ever share one. Only a verified file is renamed into place; every
//! other path removes it.

use std::ffi::{OsStr, OsString};
use std::io::ErrorKind;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use videofarm_core::{Failure, JobId};

/// A temporary output that is removed when dropped unless it was published.
#[derive(Debug)]
pub struct TempOutput {
    path: PathBuf,
    armed: bool,
}

/// The hidden name prefix shared by every attempt of one job at one output.
fn prefix(output: &Path, job: &JobId) -> Vec<u8> {
    let name = output.file_name().unwrap_or(OsStr::new("output"));
    let mut prefix = b".".to_vec();
    prefix.extend_from_slice(name.as_bytes());
    prefix.extend_from_slice(format!(".videofarm-{job}-").as_bytes());
    prefix
}

impl TempOutput {
    /// Create the temporary file for attempt `token` (this also proves the folder writable).
    pub fn create(
        output: &Path,
        job: &JobId,
        token: u64,
        extension: &str,
    ) -> Result<Self, Failure> {
        let dir = output.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| folder_failure(dir, &e))?;
        let mut name = prefix(output, job);
        name.extend_from_slice(format!("{token}.part.{extension}").as_bytes());
        let path = dir.join(OsString::from_vec(name));
        std::fs::File::create_new(&path).map_err(|e| folder_failure(dir, &e))?;
        Ok(Self { path, armed: true })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Flush the file to disk and move it to `output`. Without `overwrite` an existing output
    /// is never replaced (a hard link refuses to; on file systems without links the rename
    /// goes ahead only after checking).
    pub fn publish(mut self, output: &Path, overwrite: bool) -> Result<(), Failure> {
        let fail = |what: &str, e: std::io::Error| {
            Failure::retryable(format!("{}: could not {what}: {e}", output.display()), "")
        };
        std::fs::File::open(&self.path)
            .and_then(|f| f.sync_all())
            .map_err(|e| fail("flush the encoded file", e))?;
        if overwrite {
            std::fs::rename(&self.path, output)
                .map_err(|e| fail("move the encoded file into place", e))?;
        } else {
            match std::fs::hard_link(&self.path, output) {
                Ok(()) => std::fs::remove_file(&self.path).map_err(|e| fail("remove the temporary file", e))?,
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    return Err(Failure::permanent(format!(
                        "{}: a file appeared at the output while encoding; not replacing it (use --overwrite)",
                        output.display()
                    )))
                }
                Err(_) => {
                    if output.exists() {
                        return Err(Failure::permanent(format!(
                            "{}: a file appeared at the output while encoding; not replacing it (use --overwrite)",
                            output.display()
                        )));
                    }
                    std::fs::rename(&self.path, output).map_err(|e| fail("move the encoded file into place", e))?;
                }
            }
        }
        self.armed = false;
        if let Some(dir) = output.parent() {
            // Make the rename itself durable; not every file system allows syncing a folder.
            let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(())
    }
}

impl Drop for TempOutput {
    fn drop(&mut self) {
        if self.armed {
            if let Err(e) = std::fs::remove_file(&self.path) {
                if e.kind() != ErrorKind::NotFound {
                    tracing::warn!(path = %self.path.display(), error = %e, "could not remove a temporary output");
                }
            }
        }
    }
}

/// Remove temporary files that earlier attempts of this job left behind (a worker killed with
/// `kill -9` cannot clean up after itself). Returns how many were removed.
pub fn remove_stale(output: &Path, job: &JobId) -> usize {
    let dir = output.parent().unwrap_or(Path::new("."));
    let prefix = prefix(output, job);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| e.file_name().as_bytes().starts_with(&prefix))
        .filter(|e| std::fs::remove_file(e.path()).is_ok())
        .count()
}

fn folder_failure(dir: &Path, e: &std::io::Error) -> Failure {
    let shown = dir.display();
    match e.kind() {
        ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem => {
            Failure::permanent(format!("output folder {shown} is not writable ({e})"))
        }
        ErrorKind::StorageFull => {
            Failure::retryable(format!("output folder {shown}: the disk is full"), "")
        }
        _ => Failure::retryable(format!("output folder {shown}: {e}"), ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_moves_into_place_and_never_replaces_without_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("sub").join("tape.mkv");
        let job = JobId("7".into());
        let tmp = TempOutput::create(&out, &job, 3, "mkv").unwrap();
        std::fs::write(tmp.path(), b"encoded").unwrap();
        tmp.publish(&out, false).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"encoded");
        assert_eq!(
            std::fs::read_dir(out.parent().unwrap()).unwrap().count(),
            1,
            "no temporary left"
        );

        let tmp = TempOutput::create(&out, &job, 4, "mkv").unwrap();
        std::fs::write(tmp.path(), b"other").unwrap();
        let err = tmp.publish(&out, false).unwrap_err();
        assert!(err.reason.contains("--overwrite"), "{}", err.reason);
        assert_eq!(std::fs::read(&out).unwrap(), b"encoded");
        assert_eq!(
            std::fs::read_dir(out.parent().unwrap()).unwrap().count(),
            1,
            "failed publish cleaned up"
        );
    }

    #[test]
    fn stale_temporaries_of_the_job_are_removed_and_others_kept() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("tape.mkv");
        let job = JobId("7".into());
        let stale = TempOutput::create(&out, &job, 1, "mkv").unwrap();
        std::mem::forget(stale); // as if the worker had been killed
        let other_job = TempOutput::create(&out, &JobId("8".into()), 1, "mkv").unwrap();
        assert_eq!(remove_stale(&out, &job), 1);
        assert!(other_job.path().exists());
    }
}
