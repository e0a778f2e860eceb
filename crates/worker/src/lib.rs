//! The videofarm worker: it leases jobs from any [`Queue`], runs ffmpeg, verifies the result,
//! publishes it atomically and only then acknowledges.
//!
//! Two stop signals, passed in so callers (the CLI, tests) control them:
//! - `drain`: take no new jobs, finish the running ones (what `run` does when its batch is done);
//! - `abort`: stop running ffmpeg now, remove partial outputs and release the jobs back to the
//!   queue without counting an attempt (SIGTERM, Ctrl-C).
//!
//! Layout:
//! - this file: [`Worker`], its settings and the loop that takes jobs;
//! - [`attempt`]: one attempt at one job, with its heartbeat;
//! - [`checks`]: input and output checks that fail a job in plain words;
//! - [`cleanup`]: what a cancel leaves behind (partial outputs, locks, work folders) removed;
//! - [`publish`]: temporary files and the atomic rename into place;
//! - [`paths`]: path mapping between machines and the allowed roots.
//! - [`parent`]: what an attempt runs (whole, chunk, join) and a split tape's waiting.
//! - `verify`: what an encoded file must prove before it is published, and publishing it.
//! - [`split`]: one long input encoded in chunks by many workers: planning, argv, work folder.

pub mod attempt;
pub mod cache;
pub mod capability;
pub mod checks;
pub mod cleanup;
pub mod paths;
pub mod publish;
pub mod split;
pub mod transfer;

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use videofarm_core::{Backend, Clock, Event, Profiles, QueueError, SystemClock, WorkerInfo};
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
    /// Path translation from the producer's view and the folders this worker may touch.
    pub paths: paths::PathPolicy,
    /// The queue's attempt limit: a chunk that reaches it fails its tape.
    pub max_attempts: u32,
    /// How long a split tape's parent waits between looks at its chunks.
    pub split_poll: Duration,
    /// Fail a job whose input made the decoder report errors, instead of warning about it.
    pub fail_on_damage: bool,
    /// Decode every output whole before it may appear (`decode_check = true`).
    pub decode_check: bool,
    /// The server to fetch inputs from and send outputs to, for jobs whose files this worker
    /// cannot see (see [`transfer`]).
    pub files: Option<transfer::Files>,
}

fn read_info(info: &std::sync::RwLock<WorkerInfo>) -> WorkerInfo {
    info.read().unwrap_or_else(|p| p.into_inner()).clone()
}

/// A worker process's job-running part: `concurrency` slots sharing one queue.
pub struct Worker {
    queue: Arc<dyn Backend>,
    settings: Arc<WorkerSettings>,
    events: broadcast::Sender<Event>,
    /// What it says of itself: the settings' at first, and more profiles as trials left for
    /// later find them runnable ([`Worker::learned`]).
    info: Arc<std::sync::RwLock<WorkerInfo>>,
    /// Set once its first ask for a job has been answered (a job, or none waiting).
    asked: tokio::sync::watch::Sender<bool>,
}

impl Worker {
    pub fn new(queue: Arc<dyn Backend>, settings: WorkerSettings) -> Self {
        let (events, _) = broadcast::channel(4096);
        Self {
            queue,
            info: Arc::new(std::sync::RwLock::new(settings.info.clone())),
            settings: Arc::new(settings),
            events,
            asked: tokio::sync::watch::channel(false).0,
        }
    }

    /// What this worker says of itself now.
    pub fn info(&self) -> WorkerInfo {
        read_info(&self.info)
    }

    /// Wait until the worker's first ask for a job has been answered: work left for later
    /// (profile trials) never delays a first job.
    pub async fn first_asked(&self) {
        let mut asked = self.asked.subscribe();
        let _ = asked.wait_for(|asked| *asked).await;
    }

    /// Trials left for later found what this worker can run (`runnable`) and cannot
    /// (`unable`): it takes their jobs from its next ask on, and tells the queue at once.
    pub async fn learned(&self, runnable: Vec<String>, unable: Vec<String>) {
        let info = {
            let mut info = self.info.write().unwrap_or_else(|p| p.into_inner());
            info.profiles = Some(runnable);
            info.unable = unable;
            info.clone()
        };
        if let Err(e) = self.queue.register_worker(&info).await {
            tracing::warn!(error = %e, "could not report the worker's profiles");
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
        let info = &self.info();
        self.queue.register_worker(info).await?;
        let forwarding = CancellationToken::new();
        let forwarder = self.forward_events(forwarding.clone());
        let _ = self.events.send(Event::WorkerOnline {
            worker: info.clone(),
        });
        tracing::info!(worker = %info.name, concurrency = info.concurrency, "worker online");

        let liveness = {
            let (queue, info, every) = (
                self.queue.clone(),
                self.info.clone(),
                self.settings.heartbeat,
            );
            let stop = abort.clone();
            tokio::spawn(async move {
                let mut ticker = tokio::time::interval(every);
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = ticker.tick() => {
                            if let Err(e) = queue.register_worker(&read_info(&info)).await {
                                tracing::warn!(error = %e, "could not report the worker alive");
                            }
                        }
                    }
                }
            })
        };

        let sweeping = self.sweep_cancelled(abort.clone());
        let result = self.take_jobs(&drain, &abort).await;
        liveness.abort();
        sweeping.abort();
        if let Err(e) = self.queue.unregister_worker(info).await {
            tracing::warn!(error = %e, "could not unregister the worker");
        }
        let _ = self.events.send(Event::WorkerOffline {
            name: info.name.clone(),
        });
        forwarding.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(2), forwarder).await;
        tracing::info!(worker = %info.name, "worker offline");
        result
    }

    /// Clean up after cancelled jobs now and then (see [`cleanup`]), until `stop`.
    fn sweep_cancelled(&self, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        let (queue, settings) = (self.queue.clone(), self.settings.clone());
        tokio::spawn(async move {
            let mut sweeper = cleanup::Sweeper::default();
            // The first look a sweep after start: nothing is added to a worker's start-up.
            let mut ticker = tokio::time::interval_at(
                tokio::time::Instant::now() + cleanup::SWEEP_EVERY,
                cleanup::SWEEP_EVERY,
            );
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = ticker.tick() => {
                        let records: &dyn videofarm_core::Records = queue.as_ref();
                        sweeper.sweep(records, &settings, SystemClock.now_ms()).await;
                    }
                }
            }
        })
    }

    /// Hand this worker's events to the queue, for whoever follows the farm (on RabbitMQ:
    /// `videofarm events`, dashboards, other `run`s). After `done`, what is left is sent, then
    /// the task ends.
    fn forward_events(&self, done: CancellationToken) -> tokio::task::JoinHandle<()> {
        let (queue, mut events) = (self.queue.clone(), self.events.subscribe());
        tokio::spawn(async move {
            use broadcast::error::{RecvError, TryRecvError};
            loop {
                let event = tokio::select! {
                    event = events.recv() => event,
                    _ = done.cancelled() => break,
                };
                match event {
                    Ok(event) => queue.publish_event(&event).await,
                    Err(RecvError::Lagged(n)) => {
                        tracing::debug!(skipped = n, "the event forwarder fell behind")
                    }
                    Err(RecvError::Closed) => return,
                }
            }
            loop {
                match events.try_recv() {
                    Ok(event) => queue.publish_event(&event).await,
                    Err(TryRecvError::Lagged(_)) => {}
                    Err(_) => return,
                }
            }
        })
    }
}

impl Worker {
    /// Lease a job whenever an encode permit is free, until a stop signal; then wait for the
    /// running attempts. An attempt gives its permit back when ffmpeg exits, so the next encode
    /// starts while the last one is verified and published.
    ///
    /// A worker that fetches inputs holds `ahead` jobs more: each takes an encode permit only
    /// once its input is here, so the next input arrives while the current one encodes.
    async fn take_jobs(
        &self,
        drain: &CancellationToken,
        abort: &CancellationToken,
    ) -> Result<(), QueueError> {
        let concurrency = self.settings.info.concurrency.max(1) as usize;
        let ahead = self.settings.info.ahead as usize;
        let encoders = Arc::new(Semaphore::new(concurrency));
        let slots = Arc::new(Semaphore::new(concurrency + ahead));
        let cache = self.settings.files.as_ref().map(|f| f.cache.join("inputs"));
        let mut attempts = JoinSet::new();
        let mut backoff = Duration::from_millis(200);
        let mut last_sweep = std::time::Instant::now();
        loop {
            // Reap finished attempts so the set does not grow over a long run.
            while attempts.try_join_next().is_some() {}
            let slot = tokio::select! {
                _ = drain.cancelled() => break,
                _ = abort.cancelled() => break,
                slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            };
            let permit = if ahead == 0 {
                Some(tokio::select! {
                    _ = drain.cancelled() => break,
                    _ = abort.cancelled() => break,
                    permit = encoders.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
                })
            } else {
                None
            };
            let info = self.info();
            let leased = tokio::select! {
                _ = drain.cancelled() => break,
                _ = abort.cancelled() => break,
                leased = self.queue.lease(&info, self.settings.poll) => leased,
            };
            if leased.is_ok() {
                self.asked.send_replace(true);
            }
            match leased {
                Ok(Some(lease)) => {
                    backoff = Duration::from_millis(200);
                    tracing::info!(job = %lease.id, attempt = lease.attempt, "job taken");
                    let runnable = info.can_run(&lease.spec);
                    let attempt = attempt::Attempt {
                        queue: self.queue.clone(),
                        settings: self.settings.clone(),
                        events: self.events.clone(),
                        lease,
                        permit,
                        encoders: encoders.clone(),
                        slot,
                        lock: Default::default(),
                        runnable,
                    };
                    attempts.spawn(attempt.run(abort.clone()));
                }
                Ok(None) => {
                    // Idle: inputs nobody read for a while leave the cache (looked at once a
                    // while, not on every empty poll).
                    if let Some(cache) = &cache {
                        if last_sweep.elapsed() >= cache::LINGER {
                            last_sweep = std::time::Instant::now();
                            cache::sweep(cache, cache::LINGER);
                        }
                    }
                }
                Err(e) => {
                    // The queue is unreachable (database locked, broker restarting): wait and
                    // try again rather than dying and leaving nobody to take the work.
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "could not take a job");
                    tokio::select! {
                        _ = abort.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
        while let Some(joined) = attempts.join_next().await {
            if let Err(e) = joined {
                tracing::error!(error = %e, "an attempt panicked");
            }
        }
        // Stopping: nothing stays in the cache but partial copies to resume.
        if let Some(cache) = &cache {
            cache::sweep(cache, Duration::ZERO);
        }
        Ok(())
    }
}
