//! The inputs in a worker's transfer cache (`inputs/HASH`, kept by content): held while a job
//! reads them, so that making room for another never removes one in use; made room for by
//! removing the ones used longest ago; swept once nothing has read them for a while, and when
//! the worker stops.
//!
//! Several worker processes may share one cache folder (two units with one config): a held
//! input carries a shared lock on its file, and nothing is removed that another process holds;
//! fetches take turns through an exclusive lock on the folder, so an input is fetched once and
//! no two fetches append to one partial copy.

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
pub struct Held {
    path: PathBuf,
    /// The file, with a shared lock that tells other processes it is read.
    _shared: Option<std::fs::File>,
}

impl Held {
    /// Hold `path` (and mark it used now, for the order in which inputs make room).
    pub fn hold(path: PathBuf) -> Held {
        // Counted first: under the same lock as a removal, so none can slip in between.
        *held().entry(path.clone()).or_default() += 1;
        let shared = std::fs::File::open(&path).ok().filter(|file| {
            let _ = file.set_modified(SystemTime::now());
            file.lock_shared().is_ok()
        });
        Held {
            path,
            _shared: shared,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Let go of the input and remove it from the cache unless another job still reads it.
    pub fn remove(self) {
        let path = self.path.clone();
        drop(self);
        remove_unless_held(&path);
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut held = held();
        if let Some(count) = held.get_mut(&self.path) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.path);
            }
        }
    }
}

/// Remove `path` unless a job of this process (checked under the lock, so none can take it
/// meanwhile) or of another process (its shared lock) holds it; true when it went.
fn remove_unless_held(path: &Path) -> bool {
    let held = held();
    if held.contains_key(path) {
        return false;
    }
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    file.try_lock().is_ok() && std::fs::remove_file(path).is_ok()
}

/// Wait for this cache folder's turn to fetch (other processes sharing it included): an
/// exclusive lock on the folder itself, held as long as the returned handle is open.
pub async fn fetch_turn(dir: &Path) -> std::io::Result<std::fs::File> {
    let file = std::fs::File::open(dir)?;
    let mut said = false;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => {
                if !std::mem::replace(&mut said, true) {
                    tracing::info!(
                        "another worker sharing this transfer cache is fetching; waiting for it"
                    );
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
    }
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

    /// Another process's hold is a shared lock on the file (another open file here: `flock`
    /// locks belong to the open file, so it is the same to the kernel).
    #[test]
    fn an_input_another_process_reads_is_neither_swept_nor_removed_for_room() {
        let dir = tempfile::tempdir().unwrap();
        let theirs = file(dir.path(), "theirs", 400);
        let other = std::fs::File::open(&theirs).unwrap();
        other.lock_shared().unwrap();
        sweep(dir.path(), Duration::ZERO);
        assert!(theirs.exists());
        assert!(!make_room(dir.path(), 700, 1000, &dir.path().join("x.part")).unwrap());
        assert!(theirs.exists());
        drop(other);
        sweep(dir.path(), Duration::ZERO);
        assert!(!theirs.exists());
    }

    #[tokio::test]
    async fn fetches_take_turns_across_processes_sharing_a_cache() {
        let dir = tempfile::tempdir().unwrap();
        let first = fetch_turn(dir.path()).await.unwrap();
        let waiting = tokio::spawn({
            let dir = dir.path().to_owned();
            async move { fetch_turn(&dir).await.map(|_| ()) }
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!waiting.is_finished(), "the second waits for the first");
        drop(first);
        tokio::time::timeout(Duration::from_secs(2), waiting)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "no lock file"
        );
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
