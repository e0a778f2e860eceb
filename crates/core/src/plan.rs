//! Turning the paths a user gives into planned jobs: folders are searched recursively for
//! video files, subfolders are mirrored under the output folder, and every job gets its
//! identity (see `videofarm_core::identity`).

use crate::confine::fs::{self, Kind};
use crate::identity::{identify, unreadable_key};
use crate::{JobSpec, Profile};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// File extensions taken as video when a folder is searched (a file named on the command line
/// is always taken, whatever its name).
const VIDEO_EXTENSIONS: &[&str] = &[
    "3gp", "asf", "avi", "dv", "dif", "flv", "m2t", "m2ts", "m2v", "m4v", "mkv", "mod", "mov",
    "mp4", "mpeg", "mpg", "mts", "mxf", "ogv", "rm", "rmvb", "tod", "ts", "vob", "webm", "wmv",
    "y4m",
];

/// One input and where its output goes.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    pub input: PathBuf,
    pub output: PathBuf,
}

pub fn is_video_name(path: &Path) -> bool {
    path.extension()
        .and_then(OsStr::to_str)
        .is_some_and(|ext| VIDEO_EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str()))
}

fn is_hidden(name: &OsStr) -> bool {
    name.as_bytes().first() == Some(&b'.')
}

/// Why a set of paths cannot be planned: said in plain words, nothing was queued.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PlanError(pub String);

/// `path` made absolute against the working folder and normalised the way a shell user reads
/// it: `.` dropped, and `..` takes away the name before it (`/m/a/../b` is `/m/b`, and `..`
/// from `/` stays at `/`). Links are resolved later, where the path is checked against the
/// roots.
pub fn absolute(path: &Path) -> Result<PathBuf, PlanError> {
    let full =
        std::path::absolute(path).map_err(|e| PlanError(format!("{}: {e}", path.display())))?;
    let mut plain = PathBuf::new();
    for part in full.components() {
        match part {
            Component::ParentDir => {
                plain.pop();
            }
            Component::CurDir => {}
            other => plain.push(other),
        }
    }
    Ok(plain)
}

/// Two inputs that would become one output.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Clash {
    pub output: PathBuf,
    pub inputs: (PathBuf, PathBuf),
}

impl std::fmt::Display for Clash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} and {} would both become {}",
            self.inputs.0.display(),
            self.inputs.1.display(),
            self.output.display()
        )
    }
}

/// Plan jobs for `paths`, with outputs under `out` ending in `.{extension}`; inputs that would
/// become the same output are refused, all of them, and nothing is planned.
pub fn plan(paths: &[PathBuf], out: &Path, extension: &str) -> Result<Vec<Planned>, PlanError> {
    let (planned, clashes) = plan_apart(paths, out, extension)?;
    match clashes.first() {
        Some(clash) => Err(PlanError(format!(
            "{clash}; queue them with different --out folders"
        ))),
        None => Ok(planned),
    }
}

/// [`plan`], with the inputs that would become the same output left out and named, the rest
/// planned (what a watch folder does: one clash never stops the others).
pub fn plan_apart(
    paths: &[PathBuf],
    out: &Path,
    extension: &str,
) -> Result<(Vec<Planned>, Vec<Clash>), PlanError> {
    let out = absolute(out)?;
    let mut planned = Vec::new();
    for path in paths {
        let path = absolute(path)?;
        if path.is_dir() {
            let mut found = Vec::new();
            walk(&path, &out, &mut found);
            found.sort();
            for input in found {
                let relative = input.strip_prefix(&path).unwrap_or(&input).to_owned();
                planned.push(Planned {
                    output: out.join(relative).with_extension(extension),
                    input,
                });
            }
        } else {
            // A file, or a path that does not exist: the job fails with the reason, alone.
            let name = path
                .file_name()
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("output"));
            planned.push(Planned {
                output: out.join(name).with_extension(extension),
                input: path,
            });
        }
    }
    // A file that another input becomes (`run src --out src` a second time) is a result, not
    // an input.
    let produced: std::collections::BTreeSet<PathBuf> = planned
        .iter()
        .filter(|q| q.output != q.input)
        .map(|q| q.output.clone())
        .collect();
    planned.retain(|p| !produced.contains(&p.input));
    planned.dedup();
    let mut by_output: BTreeMap<PathBuf, PathBuf> = BTreeMap::new();
    let mut clashes = Vec::new();
    for job in &planned {
        match by_output.get(&job.output) {
            Some(first) if *first != job.input => clashes.push(Clash {
                output: job.output.clone(),
                inputs: (first.clone(), job.input.clone()),
            }),
            Some(_) => {}
            None => {
                by_output.insert(job.output.clone(), job.input.clone());
            }
        }
    }
    planned.retain(|job| !clashes.iter().any(|c| c.output == job.output));
    Ok((planned, clashes))
}

/// Collect video files under `dir`, skipping hidden entries, symlinked folders and `out`. A link
/// with a video's name is taken even when it leads nowhere (broken, or a loop): its job then
/// fails with that reason instead of the file vanishing from the batch.
fn walk(dir: &Path, out: &Path, found: &mut Vec<PathBuf>) {
    let Ok(names) = fs::names(dir) else {
        tracing::warn!(folder = %dir.display(), "cannot read folder; skipped");
        return;
    };
    for name in names {
        let path = dir.join(&name);
        if is_hidden(&name) || path == out {
            continue;
        }
        match fs::kind(&path) {
            Ok(Kind::Folder) => walk(&path, out, found),
            // A link that leads nowhere is taken too (`exists` is false for it).
            Ok(Kind::Link) if is_video_name(&path) && (path.is_file() || !path.exists()) => {
                found.push(path)
            }
            Ok(Kind::File) if is_video_name(&path) => found.push(path),
            _ => {}
        }
    }
}

/// The job for one planned input. An input that cannot be read still gets a job (with an
/// identity made from its path), so it fails alone with its reason.
/// Whether a job the queue knows as succeeded must be made again when it is queued again: its
/// output is gone (deleted to be made anew, or moved away). One whose output is in place
/// encodes nothing (a worker recognises a verified output as done).
pub fn made_again(spec: &JobSpec) -> bool {
    matches!(fs::kind(&spec.output), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
}

pub fn spec(planned: &Planned, profile: &Profile, priority: i32, overwrite: bool) -> JobSpec {
    let (key, input_size) = match identify(&planned.input, &profile.name, &planned.output) {
        Ok(identity) => (identity.key, identity.size),
        Err(_) => (
            unreadable_key(&planned.input, &profile.name, &planned.output),
            0,
        ),
    };
    JobSpec {
        input: planned.input.clone(),
        output: planned.output.clone(),
        profile: profile.name.clone(),
        key,
        overwrite,
        priority,
        input_size,
        parent: None,
        split: Default::default(),
        chunk: None,
        require: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_with_dots_are_read_as_a_shell_user_reads_them() {
        let here = std::env::current_dir().unwrap();
        let up = here.parent().unwrap_or(&here).to_owned();
        assert_eq!(absolute(Path::new("../x/./y")).unwrap(), up.join("x/y"));
        assert_eq!(absolute(Path::new("/m/a/../b")).unwrap(), Path::new("/m/b"));
        assert_eq!(absolute(Path::new("/../../m")).unwrap(), Path::new("/m"));
        let planned = plan(
            &[PathBuf::from("/m/in/../in/a.mpg")],
            Path::new("/m/x/../out"),
            "mkv",
        )
        .unwrap();
        assert_eq!(
            planned,
            [Planned {
                input: PathBuf::from("/m/in/a.mpg"),
                output: PathBuf::from("/m/out/a.mkv"),
            }]
        );
    }

    #[test]
    fn folders_are_mirrored_and_non_video_and_hidden_files_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("caps");
        std::fs::create_dir_all(src.join("1998/summer")).unwrap();
        for name in [
            "a.mpg",
            "1998/b.AVI",
            "1998/summer/c.mov",
            "notes.txt",
            ".hidden.mpg",
        ] {
            std::fs::write(src.join(name), b"x").unwrap();
        }
        let out = dir.path().join("out");
        let jobs = plan(std::slice::from_ref(&src), &out, "mkv").unwrap();
        let outputs: Vec<_> = jobs
            .iter()
            .map(|j| j.output.strip_prefix(&out).unwrap().to_owned())
            .collect();
        assert_eq!(
            outputs,
            vec![
                PathBuf::from("1998/b.mkv"),
                PathBuf::from("1998/summer/c.mkv"),
                PathBuf::from("a.mkv")
            ]
        );
    }

    #[test]
    fn outputs_of_an_earlier_run_into_the_same_folder_are_not_inputs() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["a.mpg", "a.mkv", "b.mkv"] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        let jobs = plan(&[dir.path().to_owned()], dir.path(), "mkv").unwrap();
        let inputs: Vec<_> = jobs.iter().map(|j| j.input.file_name().unwrap()).collect();
        assert_eq!(inputs, vec!["a.mpg", "b.mkv"], "{jobs:?}");
    }

    #[test]
    fn two_inputs_that_would_share_an_output_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["tape.mpg", "tape.avi"] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        let err = plan(&[dir.path().to_owned()], &dir.path().join("out"), "mkv").unwrap_err();
        assert!(err.to_string().contains("would both become"), "{err}");
    }
}
