//! What a cancel leaves to the workers (see [`videofarm_core::lifecycle`]):
//! a cancelled job's temporary outputs and output lock, and a cancelled tape's work folder with
//! its plan and chunks. However the job was cancelled (the CLI, the API, the page, on either
//! backend), and whether its worker stopped cleanly or was killed, a worker that sees the job's
//! files removes them once no attempt of the job holds its output. Which jobs to look at, and
//! how often, is [`videofarm_core::sweep`]'s.

use crate::paths::OutputPlace;
use crate::publish::{remove_stale, OutputLock};
use crate::split::work_in;
use crate::WorkerSettings;
use std::time::Duration;
use videofarm_core::confine::fs;
use videofarm_core::sweep::CancelledSweep;
use videofarm_core::{JobId, JobRecord, Records};

pub use videofarm_core::sweep::SWEEP_EVERY;

/// Which cancelled jobs this worker has cleaned up after (so each is done once).
#[derive(Default)]
pub struct Sweeper {
    sweep: CancelledSweep,
}

impl Sweeper {
    /// Clean up after the jobs cancelled lately that this worker has not cleaned yet.
    pub async fn sweep(&mut self, records: &dyn Records, settings: &WorkerSettings, now_ms: i64) {
        let due = match self.sweep.look(records, now_ms).await {
            Ok(due) => due,
            Err(e) => {
                tracing::debug!(error = %e, "could not read the cancelled jobs to clean up after");
                return;
            }
        };
        for record in due {
            let settings_paths = settings.paths.clone();
            let silent_after = settings.heartbeat * 8;
            let job = record.clone();
            let done =
                tokio::task::spawn_blocking(move || clean_up(&settings_paths, &job, silent_after))
                    .await
                    .unwrap_or(false);
            if done {
                self.sweep.cleaned(&record, now_ms);
            }
        }
    }
}

/// Remove what cancelled job `record` left beside its output. False when an attempt still
/// holds the output (look again later); true when done, or when this worker cannot see the
/// job's files (nothing for it to do).
fn clean_up(paths: &crate::paths::PathPolicy, record: &JobRecord, silent_after: Duration) -> bool {
    // The output's folder only: a job whose input is gone still leaves files to remove.
    let Ok(place) = paths.confine_output(&record.spec) else {
        return true;
    };
    clean_up_at(&place, &record.id, silent_after)
}

/// [`clean_up`] for a job whose files are confined at `place`.
fn clean_up_at(place: &OutputPlace, id: &JobId, silent_after: Duration) -> bool {
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
        if fs::kind(&work).is_ok_and(|k| k == fs::Kind::Folder) {
            if fs::remove_own_folder(&work).is_err() {
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
