//! What a cancel leaves to the workers (see [`videofarm_core::lifecycle`]):
//! a cancelled job's temporary outputs and output lock, and a cancelled tape's work folder with
//! its plan and chunks. However the job was cancelled (the CLI, the API, the page, on either
//! backend), and whether its worker stopped cleanly or was killed, a worker that sees the job's
//! files removes them once no attempt of the job holds its output.
//!
//! Every worker sweeps now and then ([`SWEEP_EVERY`]): the jobs cancelled within the last
//! [`LOOK_BACK`] that it has not cleaned yet. A job whose output another attempt still holds
//! (a cancelled encode that is still stopping) is looked at again at the next sweep.

use crate::paths::Confined;
use crate::publish::{remove_stale, OutputLock};
use crate::split::work_in;
use crate::WorkerSettings;
use std::collections::HashMap;
use std::time::Duration;
use videofarm_core::{JobFilter, JobId, JobRecord, JobState, Records};

/// How often a worker looks for cancelled jobs to clean up after.
pub const SWEEP_EVERY: Duration = Duration::from_secs(2);
/// How far back it looks: a job cancelled while no worker ran is cleaned when one starts
/// within this time.
pub const LOOK_BACK: Duration = Duration::from_secs(24 * 3600);
/// The most cancelled jobs one sweep reads.
const PAGE: u32 = 500;

/// Which cancelled jobs this worker has cleaned up after (so each is done once).
#[derive(Default)]
pub struct Sweeper {
    cleaned: HashMap<JobId, i64>,
}

impl Sweeper {
    /// Clean up after the jobs cancelled lately that this worker has not cleaned yet.
    pub async fn sweep(&mut self, records: &dyn Records, settings: &WorkerSettings, now_ms: i64) {
        let since = now_ms - LOOK_BACK.as_millis() as i64;
        let cancelled = match records
            .jobs(&JobFilter {
                state: Some(JobState::Cancelled),
                newest_first: true,
                limit: Some(PAGE),
                ..Default::default()
            })
            .await
        {
            Ok(jobs) => jobs,
            Err(e) => {
                tracing::debug!(error = %e, "could not read the cancelled jobs to clean up after");
                return;
            }
        };
        self.cleaned.retain(|_, at| *at >= since);
        let todo: Vec<JobRecord> = cancelled
            .into_iter()
            .filter(|r| r.finished_ms.unwrap_or(now_ms) >= since)
            .filter(|r| !self.cleaned.contains_key(&r.id))
            .collect();
        for record in todo {
            let settings_paths = settings.paths.clone();
            let silent_after = settings.heartbeat * 8;
            let (id, finished) = (record.id.clone(), record.finished_ms.unwrap_or(now_ms));
            let done = tokio::task::spawn_blocking(move || {
                clean_up(&settings_paths, &record, silent_after)
            })
            .await
            .unwrap_or(false);
            if done {
                self.cleaned.insert(id, finished);
            }
        }
    }
}

/// Remove what cancelled job `record` left beside its output. False when an attempt still
/// holds the output (look again later); true when done, or when this worker cannot see the
/// job's files (nothing for it to do).
fn clean_up(paths: &crate::paths::PathPolicy, record: &JobRecord, silent_after: Duration) -> bool {
    let Ok(place) = paths.confine(&record.spec) else {
        return true;
    };
    clean_up_at(&place, &record.id, silent_after)
}

/// [`clean_up`] for a job whose files are confined at `place`.
fn clean_up_at(place: &Confined, id: &JobId, silent_after: Duration) -> bool {
    let _lock = match OutputLock::try_take(
        &place.dir_io(),
        place.name(),
        &place.spec.output,
        silent_after,
    ) {
        Ok(Some(lock)) => lock,
        Ok(None) => return false,
        Err(_) => return true,
    };
    let removed = remove_stale(&place.dir_io(), place.name(), id);
    let mut work_removed = false;
    if !place.spec.split.is_off() {
        let work = work_in(&place.dir_io(), &place.spec.output);
        // A real folder only: a link in its place is never followed.
        if std::fs::symlink_metadata(&work).is_ok_and(|m| m.is_dir()) {
            if std::fs::remove_dir_all(&work).is_err() {
                // A chunk still writing into it: look again at the next sweep.
                return false;
            }
            work_removed = true;
        }
    }
    if removed > 0 || work_removed {
        tracing::info!(job = %id, removed, work_folder = work_removed, "cleaned up after a cancelled job");
    }
    true
}
