//! One attempt at one job: check, probe, encode under a heartbeat, verify, publish, acknowledge.

use crate::checks::{check_input, check_media, check_not_self};
use crate::parent::{mark_failed, Encode, Step};
use crate::paths::Confined;
use crate::publish::{remove_stale, OutputLock, TempOutput};
use crate::WorkerSettings;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;
use tokio::sync::{broadcast, watch, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use videofarm_core::{
    Event, Failure, FailureKind, Lease, Outcome, Profile, Progress, Queue, QueueError,
    SuccessReport,
};
use videofarm_ffmpeg::{encode, probe_output, verify_output, EncodeError, EncodeRequest};

/// How long a job this worker cannot run stays away before it is offered again.
const CANNOT_RUN_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Why a chunk's lease ended when the user cancelled its tape.
const TAPE_CANCELLED: &str = "its tape was cancelled";

/// What an encode left for verification.
struct Encoded {
    temp: TempOutput,
    input_info: videofarm_ffmpeg::MediaInfo,
    warnings: Vec<String>,
    frames: u64,
}

/// The profile and the input's size, once the job's inputs are checked (nothing read yet).
fn prepare<'a>(
    settings: &'a WorkerSettings,
    place: &Confined,
) -> Result<(&'a Profile, u64), Failure> {
    let spec = &place.spec;
    let profile = settings
        .profiles
        .get(&spec.profile)
        .map_err(|e| Failure::permanent(format!("{}: {e}", spec.input.display())))?;
    let size = check_input(&spec.input, place.input_file())?;
    check_not_self(place.input_file(), &place.output_io(), &spec.output)?;
    Ok((profile, size))
}

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
        if !self.settings.info.can_run(&self.lease.spec) {
            // A queue that cannot route by capability handed it here: back after a while, for
            // a worker that can run it, without counting an attempt.
            tracing::info!(profile = %self.lease.spec.profile, require = ?self.lease.spec.require,
                "this worker cannot run the job; it goes back to the queue for one that can");
            return End::Deferred(CANNOT_RUN_WAIT, Progress::default());
        }
        // Every read and write below goes through what is opened and checked here. A job
        // whose files this worker cannot see (or all jobs, with `transfer = "always"`) moves
        // its files through the server that holds them.
        let files = self.settings.files.clone().filter(|f| f.fetches());
        let place = match self.settings.paths.confine(&self.lease.spec) {
            Ok(place)
                if files
                    .as_ref()
                    .is_none_or(|f| f.mode != crate::transfer::TransferMode::Always) =>
            {
                place
            }
            Err(failure) if files.is_none() => return End::Failed(failure),
            _ => {
                return self
                    .execute_remote(files.expect("transfer is on"), abort)
                    .await
            }
        };
        let end = self.execute_in(&place, abort).await;
        if let (End::Void(reason), Some(_)) = (&end, &place.spec.chunk) {
            if reason == TAPE_CANCELLED {
                // Its tape was cancelled: the chunks' work folder goes (whoever sees it first).
                place.remove_dir();
            }
        }
        if let (End::Failed(failure), Some(chunk)) = (&end, &place.spec.chunk) {
            // A chunk that failed for good fails its tape: say so where the parent looks.
            if failure.kind == FailureKind::Permanent
                || self.lease.is_last_try(self.settings.max_attempts)
            {
                mark_failed(&place, chunk, &failure.reason);
            }
        }
        end
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
        } = match encoded {
            Ok(encoded) => encoded,
            Err(end) => return end,
        };
        // Verification and publishing run under a heartbeat too: a slow file system must not
        // let the lease run out unnoticed.
        let verifying = self.verify_and_publish(
            place,
            profile,
            &work,
            warnings,
            &input_info,
            temp,
            input_size,
            started,
        );
        let mut end = self.under_heartbeat(1.0, verifying).await;
        if let End::Done(report) = &mut end {
            report.frames = frames;
        }
        end
    }

    /// A verified output already in place means the work is done (a re-run, or an earlier
    /// attempt that published but could not acknowledge); `None` when there is work to do.
    async fn already_done(
        &self,
        place: &Confined,
        profile: &Profile,
        input_size: u64,
        started: Instant,
    ) -> Option<End> {
        let spec = &place.spec;
        let output_io = place.output_io();
        if spec.overwrite {
            return None;
        }
        let meta = std::fs::symlink_metadata(&output_io).ok()?;
        if meta.file_type().is_symlink() {
            return Some(End::Failed(exists_failure(
                &spec.output,
                "it is a symbolic link, which is never followed",
            )));
        }
        let done = |duration_s: f64| {
            End::Done(SuccessReport {
                input_size,
                output_size: meta.len(),
                duration_s,
                elapsed_s: started.elapsed().as_secs_f64(),
                already_done: true,
                note: None,
                warnings: Vec::new(),
                frames: 0,
                ssim: None,
            })
        };
        if spec.chunk.is_some() {
            // A chunk already published (it is only published once verified).
            return Some(done(0.0));
        }
        let input_info = match self.probe_input(&place.input_io(), &spec.input).await {
            Ok(info) => info,
            Err(failure) => return Some(End::Failed(failure)),
        };
        Some(
            match probe_output(&self.settings.tools, &output_io, &profile.extension).await {
                Ok(existing) => match verify_output(profile, &input_info, &existing) {
                    Ok(()) => done(existing.duration_s.unwrap_or(0.0)),
                    Err(why) => End::Failed(exists_failure(&spec.output, &why)),
                },
                Err(e) => End::Failed(exists_failure(&spec.output, &e.to_string())),
            },
        )
    }

    /// One attempt at a time on one output: a copy of this job queued twice (a broker does not
    /// deduplicate) waits for this one, then finds its output done. A holder that stopped
    /// marking the lock alive (a paused or frozen worker, whose lease the queue has taken back)
    /// does not hold anyone up.
    fn lock_output(&self, place: &Confined) -> Result<OutputLock, End> {
        let silent_after = self.settings.heartbeat * 8;
        match OutputLock::try_take(
            &place.dir_io(),
            place.name(),
            &place.spec.output,
            silent_after,
        ) {
            Ok(Some(lock)) => {
                if let Ok(mut slot) = self.lock.lock() {
                    *slot = lock.handle();
                }
                Ok(lock)
            }
            Ok(None) => {
                tracing::info!("another attempt is working on this output; waiting for it");
                Err(End::Deferred(
                    self.settings.heartbeat * 2,
                    Progress::default(),
                ))
            }
            Err(failure) => Err(End::Failed(failure)),
        }
    }

    /// Run ffmpeg into a fresh temporary file while the lease is renewed; the input is
    /// described from ffmpeg's own header as it starts. Ends the attempt when ffmpeg fails, the
    /// worker stops, or the queue voids the lease.
    async fn encode_under_lease(
        &self,
        place: &Confined,
        work: &Encode,
        abort: &CancellationToken,
    ) -> Result<Encoded, End> {
        let settings = &self.settings;
        let spec = &place.spec;
        let input_io = place.input_io();
        let removed = remove_stale(&place.dir_io(), place.name(), &self.lease.id);
        if removed > 0 {
            tracing::info!(removed, "removed temporary files of earlier attempts");
        }
        let temp = TempOutput::create(
            &place.dir_io(),
            place.name(),
            &spec.output,
            &self.lease.id,
            self.lease.token,
            &work.extension,
        )
        .map_err(End::Failed)?;
        // ffmpeg writes through the open temporary file when the extension names a muxer it
        // can be told; otherwise through its name in the checked folder.
        let format = videofarm_ffmpeg::muxer_for(&work.extension);
        let temp_io = match format {
            Some(_) => temp.io_path(),
            None => temp.path().to_owned(),
        };
        // ffmpeg's messages name the paths it was given: show the user's instead.
        let shown = |text: &str| {
            text.replace(
                &*input_io.to_string_lossy(),
                &spec.input.display().to_string(),
            )
            .replace(
                &*temp_io.to_string_lossy(),
                &spec.output.display().to_string(),
            )
        };

        // The encode stops when the worker aborts, the queue voids the lease, or the input
        // turns out not to be a video.
        let stop = abort.child_token();
        let (progress_tx, progress_rx) = watch::channel(Progress::default());
        // The heartbeat ends when the encode does (`done`) or when it voids the lease itself.
        let done = stop.child_token();
        let heartbeat = self.heartbeat(progress_rx, done.clone(), stop.clone());
        let duration = OnceLock::new();
        if let Some(known) = work.duration_s {
            let _ = duration.set(known);
        }
        let (header_tx, mut header_rx) = watch::channel(None);
        let request = EncodeRequest {
            tools: &settings.tools,
            input_args: &work.input_args,
            input: &work.input,
            output: &temp_io,
            format,
            args: &work.args,
            duration_s: &duration,
            input_info: Some(header_tx),
            stall_after: settings.stall_after,
            timeout: settings.timeout,
        };
        let encoding = async {
            let result = encode(&request, &progress_tx, &stop).await;
            drop(request);
            done.cancel();
            result
        };
        // The input's description comes from the header ffmpeg prints before it encodes, which
        // spares every job an ffprobe run (~0.1 s of CPU each). ffprobe only when that header is
        // missing or odd: ffmpeg could not open the input (ffprobe then says why in plain words),
        // or printed something the reader does not know.
        let probing = async {
            let header = match header_rx.wait_for(Option::is_some).await {
                Ok(header) => header.clone().flatten(),
                Err(_) => None,
            };
            let probed = match header {
                Some(info) => check_media(&spec.input, &info).map(|()| info),
                None => self.probe_input(&input_io, &spec.input).await,
            };
            match &probed {
                Ok(info) => {
                    if let Some(d) = info.duration_s {
                        let _ = duration.set(d);
                    }
                    self.started(spec, duration.get().copied().or(info.duration_s));
                }
                Err(_) => stop.cancel(),
            }
            probed
        };
        let (encoded, void, probed) = tokio::join!(encoding, heartbeat, probing);
        stop.cancel();
        let input_info = probed.map_err(End::Failed)?;
        let damage = match encoded {
            Ok(encoded) if encoded.errors > 0 => Some(format!(
                "ffmpeg reported {} errors while reading the input (damaged or cut data): {}",
                encoded.errors,
                shown(&encoded.error_tail)
                    .lines()
                    .last()
                    .unwrap_or_default()
            )),
            Ok(_) => None,
            Err(EncodeError::Cancelled) => {
                return Err(match void {
                    Some(reason) => End::Void(reason),
                    None => End::Aborted,
                })
            }
            Err(e) => {
                let input = spec.input.display();
                let reason = if e.is_disk_full() {
                    format!(
                        "{input}: the disk filled up while writing {}",
                        spec.output.display()
                    )
                } else {
                    format!("{input}: {}", shown(&e.to_string()))
                };
                return Err(End::Failed(Failure::retryable(
                    reason,
                    shown(e.stderr_tail()),
                )));
            }
        };
        if let Some(reason) = void {
            return Err(End::Void(reason));
        }
        if let (Some(damage), true) = (&damage, settings.fail_on_damage) {
            return Err(End::Failed(Failure::permanent(format!(
                "{}: the input is damaged: {damage} (decode_errors = \"fail\")",
                spec.input.display()
            ))));
        }
        let frames = progress_tx.borrow().frames;
        Ok(Encoded {
            temp,
            input_info,
            warnings: [work.warnings.clone(), damage]
                .into_iter()
                .flatten()
                .collect(),
            frames,
        })
    }

    /// Say that the encode has started, with what is known of the input.
    fn started(&self, spec: &videofarm_core::JobSpec, duration_s: Option<f64>) {
        self.emit(Event::JobStarted {
            id: self.lease.id.clone(),
            worker: self.worker(),
            input: spec.input.clone(),
            output: spec.output.clone(),
            profile: spec.profile.clone(),
            attempt: self.lease.attempt,
            duration_s,
            part: spec
                .chunk
                .as_ref()
                .zip(spec.parent.as_ref())
                .map(|(chunk, parent)| videofarm_core::event::Part {
                    parent: parent.clone(),
                    index: chunk.index,
                    count: chunk.count,
                }),
        });
    }

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
    async fn heartbeat(
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

fn exists_failure(output: &std::path::Path, why: &str) -> Failure {
    Failure::permanent(format!(
        "{}: the output already exists and is not a verified encode of this input ({why}); use --overwrite to replace it",
        output.display()
    ))
}
