//! The videofarm worker: it leases jobs from any [`Queue`], runs ffmpeg, verifies the result,
//! publishes it atomically and only then acknowledges.
//!
//! Two stop signals, passed in so callers (the CLI, tests) control them:
//! - `drain`: take no new jobs, finish the running ones (what `run` does when its batch is done);
//! - `abort`: stop running ffmpeg now, remove partial outputs and release the jobs back to the
//!   queue without counting an attempt (SIGTERM, Ctrl-C).
//!
//! Layout:
//! - this file: [`Worker`], its settings and the slot loop;
//! - [`attempt`]: one attempt at one job, with its heartbeat;
//! - [`checks`]: input and output checks that fail a job in plain words;
//! - [`publish`]: temporary files and the atomic rename into place.

pub mod attempt;
pub mod checks;
pub mod publish;

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use videofarm_core::{Event, Profiles, Queue, QueueError, WorkerInfo};
use videofarm_ffmpeg::Tools;

/// Everything a worker needs to know, resolved before it starts.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub info: WorkerInfo,
    pub tools: Tools,
    /// The profiles this worker may run (jobs name one; the arguments come from here).
    pub profiles: Profiles,
    /// How often a running job's lease is renewed; well under the queue's lease.
    pub heartbeat: Duration,
    /// Kill ffmpeg when it makes no progress for this long.
    pub stall_after: Duration,
    /// Kill ffmpeg when one attempt takes longer than this.
    pub timeout: Option<Duration>,
    /// How long one `lease` call waits for work before the slot checks its stop signals.
    pub poll: Duration,
}

/// A worker process's job-running part: `concurrency` slots sharing one queue.
pub struct Worker {
    queue: Arc<dyn Queue>,
    settings: Arc<WorkerSettings>,
    events: broadcast::Sender<Event>,
}

impl Worker {
    pub fn new(queue: Arc<dyn Queue>, settings: WorkerSettings) -> Self {
        let (events, _) = broadcast::channel(4096);
        Self {
            queue,
            settings: Arc::new(settings),
            events,
        }
    }

    /// Lifecycle events from this worker's slots.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Run until `drain` (finish current jobs) or `abort` (release them) fires.
    pub async fn run(
        &self,
        drain: CancellationToken,
        abort: CancellationToken,
    ) -> Result<(), QueueError> {
        let info = &self.settings.info;
        self.queue.register_worker(info).await?;
        let _ = self.events.send(Event::WorkerOnline {
            worker: info.clone(),
        });
        tracing::info!(worker = %info.name, concurrency = info.concurrency, "worker online");

        let liveness = {
            let (queue, info, every) = (self.queue.clone(), info.clone(), self.settings.heartbeat);
            let stop = abort.clone();
            tokio::spawn(async move {
                let mut ticker = tokio::time::interval(every);
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = ticker.tick() => {
                            if let Err(e) = queue.register_worker(&info).await {
                                tracing::warn!(error = %e, "could not report the worker alive");
                            }
                        }
                    }
                }
            })
        };

        let slots: Vec<_> = (0..info.concurrency.max(1))
            .map(|_| {
                let slot = Slot {
                    queue: self.queue.clone(),
                    settings: self.settings.clone(),
                    events: self.events.clone(),
                };
                let (drain, abort) = (drain.clone(), abort.clone());
                tokio::spawn(async move { slot.run(drain, abort).await })
            })
            .collect();
        let mut result = Ok(());
        for slot in slots {
            match slot.await {
                Ok(Err(e)) if result.is_ok() => result = Err(e),
                Err(e) if result.is_ok() => {
                    result = Err(QueueError::Backend(format!("worker slot failed: {e}")))
                }
                _ => {}
            }
        }
        liveness.abort();
        if let Err(e) = self.queue.unregister_worker(info).await {
            tracing::warn!(error = %e, "could not unregister the worker");
        }
        let _ = self.events.send(Event::WorkerOffline {
            name: info.name.clone(),
        });
        tracing::info!(worker = %info.name, "worker offline");
        result
    }
}

/// One job at a time.
struct Slot {
    queue: Arc<dyn Queue>,
    settings: Arc<WorkerSettings>,
    events: broadcast::Sender<Event>,
}

impl Slot {
    async fn run(
        &self,
        drain: CancellationToken,
        abort: CancellationToken,
    ) -> Result<(), QueueError> {
        let mut backoff = Duration::from_millis(200);
        loop {
            if drain.is_cancelled() || abort.is_cancelled() {
                return Ok(());
            }
            let leased = tokio::select! {
                _ = drain.cancelled() => return Ok(()),
                _ = abort.cancelled() => return Ok(()),
                leased = self.queue.lease(&self.settings.info, self.settings.poll) => leased,
            };
            match leased {
                Ok(Some(lease)) => {
                    backoff = Duration::from_millis(200);
                    attempt::Attempt {
                        queue: self.queue.as_ref(),
                        settings: &self.settings,
                        events: &self.events,
                        lease: &lease,
                    }
                    .run(&abort)
                    .await;
                }
                Ok(None) => {}
                Err(e) => {
                    // The queue is unreachable (database locked, broker restarting): wait and
                    // try again rather than dying and leaving nobody to take the work.
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "could not take a job");
                    tokio::select! {
                        _ = abort.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }
}
