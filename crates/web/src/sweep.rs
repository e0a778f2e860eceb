//! What `serve` cleans up after a cancel: it holds the media that workers without it upload
//! to, so the uploads staged for a cancelled job are its to remove (which cancelled jobs to look
//! at is [`videofarm_core::sweep`]'s rule, shared with the workers).

use crate::files::{output_place, remove_staged};
use crate::AppState;
use videofarm_core::sweep::CancelledSweep;

/// Uploads staged for jobs cancelled since the last look go: `serve` holds the media, so it
/// cleans up after a cancel what workers that cannot see the media sent (see
/// [`videofarm_core::sweep`]). A cancelled job's attempt can no longer upload or commit.
pub async fn sweep_staged_uploads(state: &AppState, sweep: &mut CancelledSweep, now_ms: i64) {
    if state.roots.is_empty() {
        return;
    }
    let due = match sweep.look(state.queue.as_ref(), now_ms).await {
        Ok(due) => due,
        Err(e) => {
            tracing::debug!(error = %e, "could not read the cancelled jobs to clean up after");
            return;
        }
    };
    for record in due {
        let roots = state.roots.clone();
        let job = record.clone();
        let removed = tokio::task::spawn_blocking(move || {
            output_place(&roots, &job.spec)
                .map_or(0, |(dir, _)| remove_staged(&dir.io_path(), &job.id))
        })
        .await
        .unwrap_or(0);
        if removed > 0 {
            tracing::info!(job = %record.id, removed, "removed the uploads staged for a cancelled job");
        }
        sweep.cleaned(&record, now_ms);
    }
}

/// [`sweep_staged_uploads`] every [`videofarm_core::sweep::SWEEP_EVERY`] until dropped.
pub fn spawn_upload_sweep(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut sweep = CancelledSweep::default();
        let mut ticker = tokio::time::interval(videofarm_core::sweep::SWEEP_EVERY);
        loop {
            ticker.tick().await;
            let now = videofarm_core::Clock::now_ms(&videofarm_core::SystemClock);
            sweep_staged_uploads(&state, &mut sweep, now).await;
        }
    })
}
