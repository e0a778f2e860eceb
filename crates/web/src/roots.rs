//! Paths from the page: only under the configured media roots, whatever the request says.

use std::path::{Component, Path, PathBuf};

const NO_ROOTS: &str =
    "no media roots are configured ([paths] roots in the config), so nothing can be chosen from the page";

/// `resolved` (already free of symlinks) if it lies under one of the resolved `roots`.
fn under_roots(roots: &[PathBuf], resolved: PathBuf, asked: &Path) -> Result<PathBuf, String> {
    let inside = roots
        .iter()
        .filter_map(|r| std::fs::canonicalize(r).ok())
        .any(|root| resolved.starts_with(root));
    if inside {
        Ok(resolved)
    } else {
        Err(format!("{} is outside the media roots", asked.display()))
    }
}

/// An existing path under one of `roots`, resolved (symlinks included) before it is checked.
pub fn existing_within(roots: &[PathBuf], path: &Path) -> Result<PathBuf, String> {
    if roots.is_empty() {
        return Err(NO_ROOTS.into());
    }
    let resolved = std::fs::canonicalize(path).map_err(|e| format!("{}: {e}", path.display()))?;
    under_roots(roots, resolved, path)
}

/// A path that may not exist yet (an output folder): plain, absolute, and under a root once
/// its existing part is resolved.
pub fn within(roots: &[PathBuf], path: &Path) -> Result<PathBuf, String> {
    if roots.is_empty() {
        return Err(NO_ROOTS.into());
    }
    if !path.is_absolute() || path.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(format!("{} is not a plain absolute path", path.display()));
    }
    let mut existing = path.to_path_buf();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (
            existing.file_name().map(|n| n.to_owned()),
            existing.parent(),
        ) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => return Err(format!("{} is outside the media roots", path.display())),
        }
    }
    let mut resolved =
        std::fs::canonicalize(&existing).map_err(|e| format!("{}: {e}", existing.display()))?;
    for name in rest.into_iter().rev() {
        resolved.push(name);
    }
    under_roots(roots, resolved, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_paths_under_a_root_pass_even_through_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let media = dir.path().join("media");
        std::fs::create_dir_all(media.join("tapes")).unwrap();
        std::fs::write(media.join("tapes/a.mpg"), b"x").unwrap();
        std::os::unix::fs::symlink("/etc", media.join("escape")).unwrap();
        let roots = vec![media.clone()];
        assert!(existing_within(&roots, &media.join("tapes/a.mpg")).is_ok());
        assert!(existing_within(&roots, Path::new("/etc/passwd"))
            .unwrap_err()
            .contains("outside"));
        assert!(existing_within(&roots, &media.join("escape/passwd"))
            .unwrap_err()
            .contains("outside"));
        assert!(within(&roots, &media.join("encoded/new")).is_ok());
        assert!(within(&roots, &media.join("../elsewhere")).is_err());
        assert!(within(&roots, &media.join("escape/new"))
            .unwrap_err()
            .contains("outside"));
        assert!(existing_within(&[], &media)
            .unwrap_err()
            .contains("no media roots"));
    }
}
