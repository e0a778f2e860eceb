//! One attempt at one job, as a pipeline of named steps, each in its own file: `prepare` (the
//! job's profile and input checked, an output already in place recognised, the output's lock),
//! `plan` (a whole file, a chunk, a split tape's plan and join), `encode`, `verify`, `publish`,
//! and the answer to the queue (here). `source` is where the files are: seen here, or fetched
//! through the file server and sent back (`fetch`). `heartbeat` renews the lease under every
//! long step.

mod encode;
mod fetch;
mod heartbeat;
pub(crate) mod plan;
mod prepare;
mod publish;
mod source;
mod verify;

use crate::attempt::encode::Encoded;
use crate::attempt::plan::Step;
use crate::attempt::prepare::prepare;
use crate::attempt::source::Source;
use crate::paths::Confined;
use crate::WorkerSettings;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::{broadcast, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use videofarm_core::{Event, Failure, Lease, Outcome, Progress, Queue, SuccessReport};

/// How long a job this worker cannot run stays away before it is offered again.
const CANNOT_RUN_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Why a chunk's lease ended when the user cancelled its tape.
const TAPE_CANCELLED: &str = "its tape was cancelled";

/// How an attempt ended, before the queue is told.
pub(crate) enum End {
    Done(SuccessReport),
    /// Not ready (a split tape waiting for its chunks): back after the wait.
    Deferred(std::time::Duration, Progress),
    Failed(Failure),
    /// The worker is stopping: release the job.
    Aborted,
    /// The lease is void (lost or cancelled): tell the queue nothing, publish nothing.
    Void(String),
}

pub struct Attempt {
    pub queue: Arc<dyn Queue>,
    pub settings: Arc<WorkerSettings>,
    pub events: broadcast::Sender<Event>,
    pub lease: Lease,
    /// The right to run an encode: released as soon as ffmpeg exits, so the next job's encode
    /// starts while this one is verified and published.
    pub permit: Option<OwnedSemaphorePermit>,
    /// Where the permit comes from when the attempt was leased without one (ahead, to fetch
    /// its input while other jobs encode).
    pub encoders: Arc<Semaphore>,
    /// This job's place among the jobs the worker holds; given back when the attempt ends.
    pub slot: OwnedSemaphorePermit,
    /// The lock on the output, once taken: every heartbeat marks it alive.
    pub(crate) lock: Mutex<Option<std::fs::File>>,
    /// Whether this worker could run the job's profile (with its tags) when it took it.
    pub runnable: bool,
}

impl Attempt {
    fn emit(&self, event: Event) {
        let _ = self.events.send(event);
    }

    fn worker(&self) -> String {
        self.settings.info.name.clone()
    }

    /// Run the attempt to its end and report it to the queue and the event stream.
    pub async fn run(mut self, abort: CancellationToken) {
        let span = tracing::info_span!("job", id = %self.lease.id, attempt = self.lease.attempt);
        self.run_in_span(&abort).instrument(span).await
    }

    async fn run_in_span(&mut self, abort: &CancellationToken) {
        let end = self.execute(abort).await;
        self.permit = None;
        let lease = &self.lease;
        let (outcome, event) = match end {
            End::Done(report) => {
                tracing::info!(output = %lease.spec.output.display(), already_done = report.already_done, "job succeeded");
                (
                    Outcome::Succeeded(report.clone()),
                    Event::JobSucceeded {
                        id: lease.id.clone(),
                        worker: self.worker(),
                        report,
                    },
                )
            }
            End::Failed(failure) => {
                tracing::warn!(reason = %failure.reason, "attempt failed");
                (
                    Outcome::Failed(failure.clone()),
                    Event::JobFailed {
                        id: lease.id.clone(),
                        worker: self.worker(),
                        attempt: lease.attempt,
                        failure,
                    },
                )
            }
            End::Deferred(after, progress) => {
                tracing::debug!(done = progress.progress, "waiting for the chunks");
                (
                    Outcome::Deferred { after, progress },
                    Event::JobProgress {
                        id: lease.id.clone(),
                        worker: self.worker(),
                        progress,
                    },
                )
            }
            End::Aborted => {
                tracing::info!("worker stopping: job released");
                (
                    Outcome::Released,
                    Event::JobReleased {
                        id: lease.id.clone(),
                        worker: self.worker(),
                    },
                )
            }
            End::Void(reason) => {
                tracing::warn!(%reason, "job lost: nothing published");
                self.emit(Event::JobLost {
                    id: lease.id.clone(),
                    worker: self.worker(),
                    reason,
                });
                return;
            }
        };
        match self.queue.finish(&self.lease, outcome).await {
            Ok(()) => self.emit(event),
            Err(e) if e.voids_lease() => {
                // Fenced off at the last step (the attempt ended while another worker held the
                // job): said the same way as a lease lost during the encode.
                tracing::warn!(reason = %e, "job lost: nothing published");
                self.emit(Event::JobLost {
                    id: lease.id.clone(),
                    worker: self.worker(),
                    reason: e.to_string(),
                })
            }
            Err(e) => {
                // The lease will run out and the job will be redelivered; a verified output
                // already in place is then recognised as done.
                tracing::error!(error = %e, "could not report the attempt to the queue");
                self.emit(Event::JobLost {
                    id: lease.id.clone(),
                    worker: self.worker(),
                    reason: e.to_string(),
                })
            }
        }
    }

    async fn execute(&mut self, abort: &CancellationToken) -> End {
        if !self.runnable {
            // A queue that cannot route by capability handed it here: back after a while, for
            // a worker that can run it, without counting an attempt.
            tracing::info!(profile = %self.lease.spec.profile, require = ?self.lease.spec.require,
                "this worker cannot run the job; it goes back to the queue for one that can");
            return End::Deferred(CANNOT_RUN_WAIT, Progress::default());
        }
        let source = match Source::open(self).await {
            Ok(source) => source,
            Err(end) => return end,
        };
        let end = self.execute_in(source.place(), abort).await;
        source.deliver(self, end).await
    }

    /// The steps of an attempt, in order; each may end it.
    pub(crate) async fn execute_in(&mut self, place: &Confined, abort: &CancellationToken) -> End {
        let started = Instant::now();
        let settings = self.settings.clone();
        let (profile, input_size) = match prepare(&settings, place) {
            Ok(ready) => ready,
            Err(failure) => return End::Failed(failure),
        };
        if let Some(end) = self.already_done(place, profile, input_size, started).await {
            return end;
        }
        let _lock = match self.lock_output(place) {
            Ok(lock) => lock,
            Err(end) => return end,
        };
        // Leased ahead of an encoder: wait for one (planning a split is work for one too).
        if self.permit.is_none() {
            let encoders = self.encoders.clone();
            let waiting = async {
                tokio::select! {
                    permit = encoders.acquire_owned() => Ok(permit.expect("the semaphore is never closed")),
                    _ = abort.cancelled() => Err(End::Aborted),
                }
            };
            match self.under_heartbeat(0.0, waiting).await {
                Ok(permit) => self.permit = Some(permit),
                Err(end) => return end,
            }
        }
        // The whole file, a chunk of it, or the join of its chunks; or a split tape's parent
        // that has queued its chunks and waits for them. Planning a long tape reads all of it:
        // under a heartbeat, like any long step.
        let work = match self.under_heartbeat(0.0, self.step(place, profile)).await {
            Step::Run(work) => work,
            Step::End(end) => return end,
        };
        let encoded = self.encode_under_lease(place, &work, abort).await;
        // The encoder is free for the next job; verifying and publishing need no ffmpeg.
        self.permit = None;
        let Encoded {
            temp,
            input_info,
            warnings,
            frames,
            signal,
        } = match encoded {
            Ok(encoded) => encoded,
            Err(end) => return end,
        };
        // Verification and publishing run under a heartbeat too: a slow file system must not
        // let the lease run out unnoticed.
        let verifying = async {
            match self
                .verify_encoded(place, profile, &work, &input_info, &temp)
                .await
            {
                Ok(verified) => {
                    self.publish_verified(
                        place,
                        &work,
                        (temp, verified),
                        (warnings, signal),
                        (input_size, started),
                    )
                    .await
                }
                Err(end) => end,
            }
        };
        let mut end = self.under_heartbeat(1.0, verifying).await;
        if let End::Done(report) = &mut end {
            report.frames = frames;
            if let Some(left_out) =
                videofarm_ffmpeg::data_streams_left_out(&input_info, &work.extension)
            {
                report.note = Some(match report.note.take() {
                    Some(note) => format!("{note}; {left_out}"),
                    None => left_out,
                });
            }
        }
        end
    }
}
