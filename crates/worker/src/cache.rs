//! The inputs in a worker's transfer cache (`inputs/HASH`, kept by content): held while a job
//! of this worker reads them, so that making room for another never removes one in use; made
//! room for by removing the ones used longest ago; swept once nothing has read them for a
//! while, and when the worker stops.

use crate::transfer::TransferError;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime};

/// How long an input nobody reads stays for the next job that may read it (another chunk of
/// the same tape), when the cache has room.
pub const LINGER: Duration = Duration::from_secs(60);

/// A partial copy nobody resumed for this long is swept too.
const PART_LINGER: Duration = Duration::from_secs(3600);

/// Inputs in use, with how many jobs of this process read each.
fn held() -> std::sync::MutexGuard<'static, HashMap<PathBuf, usize>> {
    static HELD: OnceLock<Mutex<HashMap<PathBuf, usize>>> = OnceLock::new();
    HELD.get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// An input in the cache that a job reads: it is not removed to make room while held.
#[derive(Debug)]
pub struct Held(PathBuf);

impl Held {
    /// Hold `path` (and mark it used now, for the order in which inputs make room).
    pub fn hold(path: PathBuf) -> Held {
        if let Ok(file) = std::fs::File::options().append(true).open(&path) {
            let _ = file.set_modified(SystemTime::now());
        }
        *held().entry(path.clone()).or_default() += 1;
        Held(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Let go of the input and remove it from the cache unless another job still reads it.
    pub fn remove(self) {
        let path = self.0.clone();
        drop(self);
        remove_unless_held(&path);
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut held = held();
        if let Some(count) = held.get_mut(&self.0) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.0);
            }
        }
    }
}

/// Remove `path` unless a job holds it (checked and done under the lock, so no job can take
/// it meanwhile); true when it went.
fn remove_unless_held(path: &Path) -> bool {
    let held = held();
    !held.contains_key(path) && std::fs::remove_file(path).is_ok()
}

/// Make room in the input cache `dir` for `need` more bytes within `limit`, removing the
/// inputs used longest ago (never `keep`, the copy being resumed, nor one a job reads).
/// `Ok(false)`: there is no room until a job lets its input go. An input larger than the whole
/// cache is refused with the reason.
pub fn make_room(dir: &Path, need: u64, limit: u64, keep: &Path) -> Result<bool, TransferError> {
    let mut present: Vec<(SystemTime, u64, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path() != keep)
        .filter_map(|e| {
            let meta = e.metadata().ok().filter(|m| m.is_file())?;
            Some((meta.modified().ok()?, meta.len(), e.path()))
        })
        .collect();
    let kept = std::fs::metadata(keep).map_or(0, |m| m.len());
    if need + kept > limit {
        return Err(TransferError::Refused(format!(
            "the input needs {} bytes and the transfer cache holds at most {limit} (transfer_cache_gb)",
            need + kept
        )));
    }
    let mut used: u64 = present.iter().map(|(_, len, _)| len).sum::<u64>() + kept;
    present.sort();
    for (_, len, path) in present {
        if used + need <= limit {
            break;
        }
        if remove_unless_held(&path) {
            tracing::info!(file = %path.display(), "removed from the transfer cache to make room");
            used -= len;
        }
    }
    Ok(used + need <= limit)
}

/// Remove the inputs in `dir` that no job holds and nobody used for `idle` (partial copies:
/// for an hour at least). `Duration::ZERO` when the worker stops.
pub fn sweep(dir: &Path, idle: Duration) {
    let now = SystemTime::now();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        let Ok(meta) = entry.metadata() else { continue };
        let linger = if path.extension().is_some_and(|e| e == "part") {
            idle.max(PART_LINGER)
        } else {
            idle
        };
        let unused_for = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .unwrap_or_default();
        if meta.is_file() && unused_for >= linger {
            remove_unless_held(&path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &Path, name: &str, len: usize) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, vec![0u8; len]).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        path
    }

    #[test]
    fn the_cache_makes_room_by_removing_the_inputs_used_longest_ago() {
        let dir = tempfile::tempdir().unwrap();
        let old = file(dir.path(), "old", 400);
        let newer = file(dir.path(), "newer", 400);
        let part = file(dir.path(), "current.part", 100);
        // 900 held; 300 more within 1000: the oldest goes, the newer one and the copy stay.
        assert!(make_room(dir.path(), 300, 1000, &part).unwrap());
        assert!(!old.exists() && newer.exists() && part.exists());
        // Nothing in the way: nothing goes.
        assert!(make_room(dir.path(), 100, 1000, &part).unwrap());
        assert!(newer.exists());
        // Larger than the whole cache: refused, with the limit's name.
        let Err(TransferError::Refused(why)) = make_room(dir.path(), 2000, 1000, &part) else {
            panic!("refused");
        };
        assert!(why.contains("transfer_cache_gb"), "{why}");
    }

    #[test]
    fn an_input_a_job_reads_is_never_removed_to_make_room() {
        let dir = tempfile::tempdir().unwrap();
        let read = Held::hold(file(dir.path(), "read", 400));
        let idle = file(dir.path(), "idle", 400);
        let part = dir.path().join("next.part");
        // The idle one goes; the one being read stays, so there is no room yet.
        assert!(!make_room(dir.path(), 700, 1000, &part).unwrap());
        assert!(read.path().exists() && !idle.exists());
        let path = read.path().to_owned();
        drop(read);
        assert!(make_room(dir.path(), 700, 1000, &part).unwrap());
        assert!(!path.exists());
    }

    #[test]
    fn inputs_are_swept_when_unused_and_kept_while_another_job_reads_them() {
        let dir = tempfile::tempdir().unwrap();
        let a = Held::hold(file(dir.path(), "a", 10));
        let again = Held::hold(a.path().to_owned());
        let part = file(dir.path(), "b.part", 10);
        // Another job still reads it: not removed.
        a.remove();
        assert!(again.path().exists());
        sweep(dir.path(), Duration::ZERO);
        assert!(again.path().exists(), "held inputs are not swept");
        let path = again.path().to_owned();
        drop(again);
        sweep(dir.path(), Duration::from_secs(3600));
        assert!(path.exists(), "used a moment ago");
        sweep(dir.path(), Duration::ZERO);
        assert!(!path.exists());
        assert!(part.exists(), "a partial copy waits to be resumed");
    }
}
