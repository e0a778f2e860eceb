//! The lease renewed while a step runs, with the step's progress; a lease the queue voids stops
//! the step.

use super::{Attempt, TAPE_CANCELLED};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use videofarm_core::{Event, Progress, QueueError};

impl Attempt {
    /// Run `step` while the lease is renewed (planning a split, verifying, publishing): a slow
    /// step must not let the lease run out unnoticed. A lease lost meanwhile shows at the next
    /// queue call (publishing or finishing is fenced).
    pub(crate) async fn under_heartbeat<T>(
        &self,
        progress: f64,
        step: impl std::future::Future<Output = T>,
    ) -> T {
        let (_keep, idle) = watch::channel(Progress {
            progress,
            ..Progress::default()
        });
        self.under_heartbeat_with(idle, step).await
    }

    /// [`Self::under_heartbeat`], with the progress `step` reports as it goes.
    pub(crate) async fn under_heartbeat_with<T>(
        &self,
        progress: watch::Receiver<Progress>,
        step: impl std::future::Future<Output = T>,
    ) -> T {
        let done = CancellationToken::new();
        let beating = self.heartbeat(progress, done.clone(), CancellationToken::new());
        let working = async {
            let out = step.await;
            done.cancel();
            out
        };
        let (out, _) = tokio::join!(working, beating);
        out
    }

    /// Why a lease the queue voided is gone, in words (a chunk's tape cancelled is its own case:
    /// its work folder goes).
    pub(crate) fn void_reason(&self, e: QueueError) -> String {
        match e {
            QueueError::Cancelled(by) if self.lease.spec.parent.as_ref() == Some(&by) => {
                TAPE_CANCELLED.to_owned()
            }
            QueueError::Cancelled(_) => "cancelled by the user".to_owned(),
            other => other.to_string(),
        }
    }

    /// Renew the lease and forward progress until `done` fires; if the queue voids the lease,
    /// fire `stop` so the encode ends, and return why.
    pub(crate) async fn heartbeat(
        &self,
        mut progress: watch::Receiver<Progress>,
        done: CancellationToken,
        stop: CancellationToken,
    ) -> Option<String> {
        let mut ticker = tokio::time::interval(self.settings.heartbeat);
        ticker.tick().await;
        let mut progress_open = true;
        loop {
            tokio::select! {
                _ = done.cancelled() => return None,
                changed = progress.changed(), if progress_open => {
                    if changed.is_err() {
                        progress_open = false;
                        continue;
                    }
                    let snapshot = *progress.borrow_and_update();
                    self.emit(Event::JobProgress { id: self.lease.id.clone(), worker: self.worker(), progress: snapshot });
                }
                _ = ticker.tick() => {
                    if let Some(lock) = self.lock.lock().ok().as_ref().and_then(|l| l.as_ref()) {
                        let _ = lock.set_modified(std::time::SystemTime::now());
                    }
                    let snapshot = *progress.borrow();
                    match self.queue.heartbeat(&self.lease, Some(&snapshot)).await {
                        Ok(()) => {}
                        Err(e) if e.voids_lease() => {
                            stop.cancel();
                            return Some(self.void_reason(e));
                        }
                        Err(e) => tracing::warn!(error = %e, "heartbeat failed; will try again"),
                    }
                }
            }
        }
    }
}
