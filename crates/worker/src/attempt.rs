//! One attempt at one job: check, probe, encode under a heartbeat, verify, publish, acknowledge.

use crate::checks::{check_input, check_media, check_not_self};
use crate::publish::{remove_stale, TempOutput};
use crate::WorkerSettings;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use videofarm_core::{Event, Failure, Lease, Outcome, Progress, Queue, QueueError, SuccessReport};
use videofarm_ffmpeg::{encode, probe, verify_output, EncodeError, EncodeRequest, ProbeError};

/// How an attempt ended, before the queue is told.
enum End {
    Done(SuccessReport),
    Failed(Failure),
    /// The worker is stopping: release the job.
    Aborted,
    /// The lease is void (lost or cancelled): tell the queue nothing, publish nothing.
    Void(String),
}

pub struct Attempt<'a> {
    pub queue: &'a dyn Queue,
    pub settings: &'a WorkerSettings,
    pub events: &'a broadcast::Sender<Event>,
    pub lease: &'a Lease,
}

impl Attempt<'_> {
    fn emit(&self, event: Event) {
        let _ = self.events.send(event);
    }

    fn worker(&self) -> String {
        self.settings.info.name.clone()
    }

    /// Run the attempt to its end and report it to the queue and the event stream.
    pub async fn run(&self, abort: &CancellationToken) {
        let span = tracing::info_span!("job", id = %self.lease.id, attempt = self.lease.attempt);
        self.run_in_span(abort).instrument(span).await
    }

    async fn run_in_span(&self, abort: &CancellationToken) {
        let lease = self.lease;
        let end = self.execute(abort).await;
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
        match self.queue.finish(lease, outcome).await {
            Ok(()) => self.emit(event),
            Err(e) if e.voids_lease() => self.emit(Event::JobLost {
                id: lease.id.clone(),
                worker: self.worker(),
                reason: e.to_string(),
            }),
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

    async fn execute(&self, abort: &CancellationToken) -> End {
        let spec = &self.lease.spec;
        let started = Instant::now();
        let profile = match self.settings.profiles.get(&spec.profile) {
            Ok(profile) => profile,
            Err(e) => {
                return End::Failed(Failure::permanent(format!("{}: {e}", spec.input.display())))
            }
        };
        let input_size = match check_input(&spec.input).and_then(|size| {
            check_not_self(&spec.input, &spec.output)?;
            Ok(size)
        }) {
            Ok(size) => size,
            Err(failure) => return End::Failed(failure),
        };
        let tools = &self.settings.tools;
        let input_info = match probe(tools, &spec.input).await {
            Ok(info) => info,
            Err(ProbeError::Unreadable(why)) => {
                return End::Failed(Failure::permanent(format!(
                    "{}: not a video ffprobe can read ({why})",
                    spec.input.display()
                )))
            }
            Err(e) => {
                return End::Failed(Failure::retryable(
                    format!("{}: {e}", spec.input.display()),
                    "",
                ))
            }
        };
        if let Err(failure) = check_media(&spec.input, &input_info) {
            return End::Failed(failure);
        }
        self.emit(Event::JobStarted {
            id: self.lease.id.clone(),
            worker: self.worker(),
            input: spec.input.clone(),
            output: spec.output.clone(),
            profile: spec.profile.clone(),
            attempt: self.lease.attempt,
            duration_s: input_info.duration_s,
        });

        // A verified output already in place means the work is done (a re-run, or an earlier
        // attempt that published but could not acknowledge).
        if !spec.overwrite && spec.output.exists() {
            return match probe(tools, &spec.output).await {
                Ok(existing) => match verify_output(profile, &input_info, &existing) {
                    Ok(()) => End::Done(SuccessReport {
                        input_size,
                        output_size: std::fs::metadata(&spec.output)
                            .map(|m| m.len())
                            .unwrap_or(0),
                        duration_s: existing.duration_s.unwrap_or(0.0),
                        elapsed_s: started.elapsed().as_secs_f64(),
                        already_done: true,
                    }),
                    Err(why) => End::Failed(exists_failure(&spec.output, &why)),
                },
                Err(e) => End::Failed(exists_failure(&spec.output, &e.to_string())),
            };
        }

        let removed = remove_stale(&spec.output, &self.lease.id);
        if removed > 0 {
            tracing::info!(removed, "removed temporary files of earlier attempts");
        }
        let temp = match TempOutput::create(
            &spec.output,
            &self.lease.id,
            self.lease.token,
            &profile.extension,
        ) {
            Ok(temp) => temp,
            Err(failure) => return End::Failed(failure),
        };

        // The attempt stops when the worker aborts or the queue voids the lease.
        let stop = abort.child_token();
        let void_reason: Arc<Mutex<Option<String>>> = Arc::default();
        let (progress_tx, progress_rx) = watch::channel(Progress::default());
        // The heartbeat ends when the encode does (`done`) or when it voids the lease itself.
        let done = stop.child_token();
        let heartbeat =
            self.heartbeat(progress_rx, done.clone(), stop.clone(), void_reason.clone());
        let request = EncodeRequest {
            tools,
            input: &spec.input,
            output: temp.path(),
            args: &profile.args,
            duration_s: input_info.duration_s,
            stall_after: self.settings.stall_after,
            timeout: self.settings.timeout,
        };
        let encoding = async {
            let result = encode(&request, &progress_tx, &stop).await;
            done.cancel();
            result
        };
        let (encoded, ()) = tokio::join!(encoding, heartbeat);
        stop.cancel();
        let void = void_reason.lock().map(|v| v.clone()).unwrap_or(None);
        match encoded {
            Ok(()) => {}
            Err(EncodeError::Cancelled) => {
                return match void {
                    Some(reason) => End::Void(reason),
                    None => End::Aborted,
                }
            }
            Err(e) => {
                let input = spec.input.display();
                let reason = if e.is_disk_full() {
                    format!(
                        "{input}: the disk filled up while writing {}",
                        spec.output.display()
                    )
                } else {
                    format!("{input}: {e}")
                };
                return End::Failed(Failure::retryable(reason, e.stderr_tail()));
            }
        }
        if let Some(reason) = void {
            return End::Void(reason);
        }

        let output_info = match probe(tools, temp.path()).await {
            Ok(info) => info,
            Err(e) => {
                return End::Failed(Failure::retryable(
                    format!(
                        "{}: the encoded file could not be read back ({e})",
                        spec.input.display()
                    ),
                    "",
                ))
            }
        };
        if let Err(why) = verify_output(profile, &input_info, &output_info) {
            return End::Failed(Failure::retryable(
                format!(
                    "{}: the encoded file failed verification: {why}",
                    spec.input.display()
                ),
                "",
            ));
        }
        let output_size = std::fs::metadata(temp.path()).map(|m| m.len()).unwrap_or(0);

        // Fencing: only the current lease holder may publish.
        if let Err(e) = self.queue.begin_publish(self.lease).await {
            return if e.voids_lease() {
                End::Void(e.to_string())
            } else {
                End::Failed(Failure::retryable(
                    format!("could not confirm the lease before publishing: {e}"),
                    "",
                ))
            };
        }
        if let Err(failure) = temp.publish(&spec.output, spec.overwrite) {
            return End::Failed(failure);
        }
        End::Done(SuccessReport {
            input_size,
            output_size,
            duration_s: output_info.duration_s.unwrap_or(0.0),
            elapsed_s: started.elapsed().as_secs_f64(),
            already_done: false,
        })
    }

    /// Renew the lease and forward progress until `done` fires; if the queue voids the lease,
    /// record why and fire `stop` so the encode ends.
    async fn heartbeat(
        &self,
        mut progress: watch::Receiver<Progress>,
        done: CancellationToken,
        stop: CancellationToken,
        void_reason: Arc<Mutex<Option<String>>>,
    ) {
        let mut ticker = tokio::time::interval(self.settings.heartbeat);
        ticker.tick().await;
        let mut progress_open = true;
        loop {
            tokio::select! {
                _ = done.cancelled() => return,
                changed = progress.changed(), if progress_open => {
                    if changed.is_err() {
                        progress_open = false;
                        continue;
                    }
                    let snapshot = *progress.borrow_and_update();
                    self.emit(Event::JobProgress { id: self.lease.id.clone(), worker: self.worker(), progress: snapshot });
                }
                _ = ticker.tick() => {
                    let snapshot = *progress.borrow();
                    match self.queue.heartbeat(self.lease, Some(&snapshot)).await {
                        Ok(()) => {}
                        Err(e) if e.voids_lease() => {
                            let reason = match e {
                                QueueError::Cancelled(_) => "cancelled by the user".to_owned(),
                                other => other.to_string(),
                            };
                            if let Ok(mut slot) = void_reason.lock() {
                                *slot = Some(reason);
                            }
                            stop.cancel();
                            return;
                        }
                        Err(e) => tracing::warn!(error = %e, "heartbeat failed; will try again"),
                    }
                }
            }
        }
    }
}

fn exists_failure(output: &std::path::Path, why: &str) -> Failure {
    Failure::permanent(format!(
        "{}: the output already exists and is not a verified encode of this input ({why}); use --overwrite to replace it",
        output.display()
    ))
}
