//! Where a worker may read and write, and how the producer's paths become this machine's.
//!
//! On a farm, workers mount the NAS at different paths: a `[paths]` map translates the paths in
//! a job (as the producer saw them) to this worker's. And since anyone who can publish to the
//! broker can hand a worker any path, a worker with `roots` refuses every job whose input or
//! output lies outside them: where they really are, links resolved, checked on the open file.

use std::ffi::{OsStr, OsString};
use std::path::{Component, Path, PathBuf};
use videofarm_core::confine::fs;
use videofarm_core::confine::{self, ConfineError, IoKind, Opened};
use videofarm_core::{Failure, JobSpec};

/// One prefix translation.
#[derive(Debug, Clone, PartialEq)]
pub struct PathMap {
    /// As the producer sees it.
    pub from: PathBuf,
    /// As this worker sees it.
    pub to: PathBuf,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct PathPolicy {
    pub map: Vec<PathMap>,
    /// Folders the worker may read and write under; empty means anywhere.
    pub roots: Vec<PathBuf>,
}

impl PathPolicy {
    /// The job's paths as this worker must use them (mapped, not yet checked), and the mapping
    /// rule used for the input.
    pub fn map(&self, spec: &JobSpec) -> (JobSpec, Option<&PathMap>) {
        let mut mapped = spec.clone();
        let rule = self.map.iter().find(|m| spec.input.starts_with(&m.from));
        if let Some(rule) = rule {
            mapped.input = translate(&spec.input, rule);
        }
        if let Some(out_rule) = self.map.iter().find(|m| spec.output.starts_with(&m.from)) {
            mapped.output = translate(&spec.output, out_rule);
        }
        (mapped, rule)
    }

    /// Map the job's paths, then open its input and its output folder and check where they
    /// really are against the roots (see [`videofarm_core::confine`]); every later read and
    /// write goes through what was opened here.
    pub fn confine(&self, spec: &JobSpec) -> Result<Confined, Failure> {
        let (mapped, rule) = self.map(spec);
        plain("input", &mapped.input)?;
        plain("output", &mapped.output)?;
        let input = confine::open_within(&self.roots, &mapped.input).map_err(|e| match e {
            ConfineError::Outside(_) => self.outside("input", &mapped.input),
            ConfineError::Io {
                kind: IoKind::NotFound,
                ..
            } if rule.is_some() => {
                // Say which mapping was tried: the usual cause is a share mounted elsewhere.
                let rule = rule.expect("checked");
                Failure::permanent(format!(
                    "{}: this worker cannot see the input (mapped from {} by [paths] map {} -> {})",
                    mapped.input.display(),
                    spec.input.display(),
                    rule.from.display(),
                    rule.to.display()
                ))
            }
            ConfineError::Io {
                kind: IoKind::NotFound,
                ..
            } if fs::kind(&mapped.input).is_ok() => Failure::permanent(format!(
                "{}: a symbolic link to a file that does not exist",
                mapped.input.display()
            )),
            other => Failure::permanent(other.to_string()),
        })?;
        Ok(Confined {
            input,
            out: self.open_output(mapped)?,
        })
    }

    /// Map the job's output path and open and check its folder only: what cleaning up after a
    /// job needs (its input may be gone).
    pub fn confine_output(&self, spec: &JobSpec) -> Result<OutputPlace, Failure> {
        let (mapped, _) = self.map(spec);
        plain("output", &mapped.output)?;
        self.open_output(mapped)
    }

    fn open_output(&self, mapped: JobSpec) -> Result<OutputPlace, Failure> {
        let (Some(out_dir), Some(out_name)) = (mapped.output.parent(), mapped.output.file_name())
        else {
            return Err(Failure::permanent(format!(
                "refused: the output path {} names no file",
                mapped.output.display()
            )));
        };
        let dir = confine::open_dir_within(&self.roots, out_dir).map_err(|e| match e {
            ConfineError::Outside(_) => self.outside("output", &mapped.output),
            ConfineError::Io {
                kind: IoKind::PermissionDenied,
                ..
            } => Failure::permanent(format!(
                "output folder {} is not writable ({e})",
                out_dir.display()
            )),
            other => {
                Failure::retryable(format!("output folder {}: {other}", out_dir.display()), "")
            }
        })?;
        let name = out_name.to_owned();
        Ok(OutputPlace {
            spec: mapped,
            dir,
            name,
        })
    }

    fn outside(&self, what: &str, path: &Path) -> Failure {
        Failure::permanent(format!(
            "refused: the {what} {} is outside this worker's allowed roots ({})",
            path.display(),
            self.roots
                .iter()
                .map(|r| r.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}

/// Refuse a path that is not plain and absolute.
fn plain(what: &str, path: &Path) -> Result<(), Failure> {
    if !path.is_absolute() || path.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(Failure::permanent(format!(
            "refused: the {what} path {} is not a plain absolute path",
            path.display()
        )));
    }
    Ok(())
}

/// A job's input and output folder, opened and checked: the paths to read and write through.
/// What concerns the output is its [`OutputPlace`].
#[derive(Debug)]
pub struct Confined {
    input: Opened,
    out: OutputPlace,
}

impl std::ops::Deref for Confined {
    type Target = OutputPlace;

    fn deref(&self) -> &OutputPlace {
        &self.out
    }
}

impl Confined {
    /// Read the input through this path.
    pub fn input_io(&self) -> PathBuf {
        self.input.io_path()
    }

    /// The open input file.
    pub fn input_file(&self) -> &std::fs::File {
        self.input.file()
    }
}

/// A job's output folder, opened and checked, and the output's name in it.
#[derive(Debug)]
pub struct OutputPlace {
    /// The job with this worker's paths, for messages.
    pub spec: JobSpec,
    dir: Opened,
    name: OsString,
}

impl OutputPlace {
    /// The output folder, as a path that stays where it was checked.
    pub fn dir_io(&self) -> PathBuf {
        self.dir.io_path()
    }

    /// The output's file name.
    pub fn name(&self) -> &OsStr {
        &self.name
    }

    /// Remove the output folder and the files in it (a split tape's work folder, once its
    /// tape is cancelled): the files through the checked folder, then the folder itself.
    pub fn remove_dir(&self) {
        fs::remove_named(&self.dir_io(), |_| true);
        let _ = fs::remove_empty_folder(self.dir.real());
    }

    /// The output, through the checked folder.
    pub fn output_io(&self) -> PathBuf {
        self.dir.io_path().join(&self.name)
    }
}

fn translate(path: &Path, rule: &PathMap) -> PathBuf {
    match path.strip_prefix(&rule.from) {
        Ok(rest) => rule.to.join(rest),
        Err(_) => path.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(input: &Path, output: &Path) -> JobSpec {
        JobSpec {
            input: input.into(),
            output: output.into(),
            profile: "archive".into(),
            key: "k".into(),
            ..JobSpec::default()
        }
    }

    #[test]
    fn paths_are_mapped_then_checked_against_the_roots() {
        let dir = tempfile::tempdir().unwrap();
        let srv = dir.path().join("srv/media");
        std::fs::create_dir_all(&srv).unwrap();
        std::fs::write(srv.join("a.mpg"), b"x").unwrap();
        let policy = PathPolicy {
            map: vec![PathMap {
                from: "/mnt/nas".into(),
                to: dir.path().join("srv"),
            }],
            roots: vec![srv.clone()],
        };
        let (mapped, rule) = policy.map(&spec(
            Path::new("/mnt/nas/media/a.mpg"),
            Path::new("/mnt/nas/media/out/a.mkv"),
        ));
        assert_eq!(mapped.input, srv.join("a.mpg"));
        assert!(rule.is_some());
        let place = policy
            .confine(&spec(
                Path::new("/mnt/nas/media/a.mpg"),
                Path::new("/mnt/nas/media/out/a.mkv"),
            ))
            .unwrap();
        assert_eq!(std::fs::read(place.input_io()).unwrap(), b"x");
        assert!(srv.join("out").is_dir(), "the output folder was created");

        let outside = policy
            .confine(&spec(Path::new("/etc/passwd"), &srv.join("x.mkv")))
            .unwrap_err();
        assert!(
            outside.reason.contains("outside") && outside.reason.contains("/etc/passwd"),
            "{}",
            outside.reason
        );
        let sneaky = policy
            .confine(&spec(&srv.join("../../../etc/passwd"), &srv.join("x.mkv")))
            .unwrap_err();
        assert!(
            sneaky.reason.contains("not a plain absolute path"),
            "{}",
            sneaky.reason
        );
        let out_outside = policy
            .confine(&spec(&srv.join("a.mpg"), Path::new("/root/.bashrc")))
            .unwrap_err();
        assert!(
            out_outside.reason.contains("output") && out_outside.reason.contains("outside"),
            "{}",
            out_outside.reason
        );
        let unseen = policy
            .confine(&spec(
                Path::new("/mnt/nas/media/gone.mpg"),
                &srv.join("x.mkv"),
            ))
            .unwrap_err();
        assert!(
            unseen.reason.contains("cannot see the input"),
            "{}",
            unseen.reason
        );
    }

    #[test]
    fn links_out_of_the_roots_are_refused_for_inputs_and_outputs() {
        let dir = tempfile::tempdir().unwrap();
        let media = dir.path().join("m");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(media.join("tapes")).unwrap();
        std::fs::create_dir_all(media.join("enc")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(media.join("tapes/a.mpg"), b"x").unwrap();
        std::fs::write(outside.join("secret.mpg"), b"s").unwrap();
        std::os::unix::fs::symlink(outside.join("secret.mpg"), media.join("tapes/link.mpg"))
            .unwrap();
        std::os::unix::fs::symlink(&outside, media.join("enc/escape")).unwrap();
        let policy = PathPolicy {
            map: vec![],
            roots: vec![media.clone()],
        };
        let read = policy
            .confine(&spec(
                &media.join("tapes/link.mpg"),
                &media.join("enc/a.mkv"),
            ))
            .unwrap_err();
        assert!(read.reason.contains("outside"), "{}", read.reason);
        let write = policy
            .confine(&spec(
                &media.join("tapes/a.mpg"),
                &media.join("enc/escape/b.mkv"),
            ))
            .unwrap_err();
        assert!(
            write.reason.contains("output") && write.reason.contains("outside"),
            "{}",
            write.reason
        );
        assert!(policy
            .confine(&spec(&media.join("tapes/a.mpg"), &media.join("enc/a.mkv")))
            .is_ok());
    }

    #[test]
    fn no_roots_means_anywhere_absolute() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.mpg"), b"x").unwrap();
        let policy = PathPolicy::default();
        assert!(policy
            .confine(&spec(&dir.path().join("b.mpg"), &dir.path().join("d.mkv")))
            .is_ok());
        assert!(policy
            .confine(&spec(Path::new("relative.mpg"), &dir.path().join("d.mkv")))
            .is_err());
    }
}
