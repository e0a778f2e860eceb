//! Where a worker may read and write, and how the producer's paths become this machine's.
//!
//! On a farm, workers mount the NAS at different paths: a `[paths]` map translates the paths in
//! a job (as the producer saw them) to this worker's. And since anyone who can publish to the
//! broker can hand a worker any path, a worker with `roots` refuses every job whose input or
//! output lies outside them.

use std::path::{Component, Path, PathBuf};
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
    /// The job's paths as this worker must use them, or why it refuses the job.
    pub fn apply(&self, spec: &JobSpec) -> Result<(JobSpec, Option<&PathMap>), Failure> {
        let mut mapped = spec.clone();
        let rule = self.map.iter().find(|m| spec.input.starts_with(&m.from));
        if let Some(rule) = rule {
            mapped.input = translate(&spec.input, rule);
        }
        if let Some(out_rule) = self.map.iter().find(|m| spec.output.starts_with(&m.from)) {
            mapped.output = translate(&spec.output, out_rule);
        }
        for (what, path) in [("input", &mapped.input), ("output", &mapped.output)] {
            if !path.is_absolute() || path.components().any(|c| matches!(c, Component::ParentDir)) {
                return Err(Failure::permanent(format!(
                    "refused: the {what} path {} is not a plain absolute path",
                    path.display()
                )));
            }
            if !self.roots.is_empty() && !self.roots.iter().any(|root| path.starts_with(root)) {
                return Err(Failure::permanent(format!(
                    "refused: the {what} {} is outside this worker's allowed roots ({})",
                    path.display(),
                    self.roots
                        .iter()
                        .map(|r| r.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        Ok((mapped, rule))
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

    fn spec(input: &str, output: &str) -> JobSpec {
        JobSpec {
            input: input.into(),
            output: output.into(),
            profile: "archive".into(),
            key: "k".into(),
            overwrite: false,
            priority: 0,
            input_size: 0,
            parent: None,
        }
    }

    #[test]
    fn paths_are_mapped_then_checked_against_the_roots() {
        let policy = PathPolicy {
            map: vec![PathMap {
                from: "/mnt/nas".into(),
                to: "/srv/nas".into(),
            }],
            roots: vec!["/srv/nas/media".into()],
        };
        let (mapped, rule) = policy
            .apply(&spec("/mnt/nas/media/a.mpg", "/mnt/nas/media/out/a.mkv"))
            .unwrap();
        assert_eq!(mapped.input, PathBuf::from("/srv/nas/media/a.mpg"));
        assert_eq!(mapped.output, PathBuf::from("/srv/nas/media/out/a.mkv"));
        assert!(rule.is_some());
        let outside = policy
            .apply(&spec("/etc/shadow", "/srv/nas/media/x.mkv"))
            .unwrap_err();
        assert!(
            outside.reason.contains("outside") && outside.reason.contains("/etc/shadow"),
            "{}",
            outside.reason
        );
        let sneaky = policy
            .apply(&spec(
                "/srv/nas/media/../../../etc/passwd",
                "/srv/nas/media/x.mkv",
            ))
            .unwrap_err();
        assert!(
            sneaky.reason.contains("not a plain absolute path"),
            "{}",
            sneaky.reason
        );
        let out_outside = policy
            .apply(&spec("/srv/nas/media/a.mpg", "/root/.bashrc"))
            .unwrap_err();
        assert!(
            out_outside.reason.contains("output"),
            "{}",
            out_outside.reason
        );
    }

    #[test]
    fn no_roots_means_anywhere_absolute() {
        let policy = PathPolicy::default();
        assert!(policy.apply(&spec("/a/b.mpg", "/c/d.mkv")).is_ok());
        assert!(policy.apply(&spec("relative.mpg", "/c/d.mkv")).is_err());
    }
}
