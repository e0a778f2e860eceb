//! The queue contract that every backend honours (the embedded SQLite queue, RabbitMQ).
//!
//! Delivery is at least once, under leases:
//! - [`Queue::lease`] hands a job to a worker with a fresh fencing token and a deadline.
//! - The worker renews the lease with [`Queue::heartbeat`] (which also carries progress); a job
//!   whose lease runs out goes back to the queue, counted as an attempt.
//! - Before it publishes an output the worker calls [`Queue::begin_publish`]: a worker that lost
//!   its lease (paused, partitioned, cancelled) is refused, because its token is stale.
//! - [`Queue::finish`] acknowledges a verified success, records a failed attempt (retried with
//!   backoff until `max_attempts`) or releases the job at once without counting an attempt.

use crate::event::Event;
use crate::job::{
    AttemptRecord, Counts, FailureKind, JobFilter, JobId, JobRecord, JobSpec, JobState, Outcome,
    Progress,
};
pub use crate::lifecycle::AfterFailure;
use crate::lifecycle::{Answer, Budget};
use crate::watching::WatchReport;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// Tunables shared by every backend.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueSettings {
    /// How long a lease lasts without a heartbeat.
    pub lease: Duration,
    /// Failed attempts before a job is failed for good.
    pub max_attempts: u32,
    /// Attempts lost with their worker (killed, disconnected) before a job is failed for good:
    /// counted apart, because the job is rarely to blame, yet a job that brings down every
    /// worker that takes it must stop somewhere.
    pub max_lost: u32,
    /// Delay before the first retry; it doubles with each further attempt.
    pub retry_backoff: Duration,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(30),
            max_attempts: 3,
            max_lost: 6,
            retry_backoff: Duration::from_secs(10),
        }
    }
}

impl QueueSettings {
    /// The retry and failure rules these settings give (see [`crate::lifecycle::Budget`]).
    pub fn budget(&self) -> Budget {
        Budget {
            max_attempts: self.max_attempts,
            max_lost: self.max_lost,
            retry_backoff: self.retry_backoff,
        }
    }

    /// What becomes of a job whose attempt failed: [`Budget::after_failure`].
    pub fn after_failure(&self, failures_before: u32, kind: FailureKind) -> AfterFailure {
        self.budget().after_failure(failures_before, kind)
    }

    /// True when a job lost with its worker `lost` times must stop being handed out.
    pub fn lost_too_often(&self, lost: u32) -> bool {
        self.budget().lost_too_often(lost)
    }
}

/// Who is asking for work.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerInfo {
    pub name: String,
    pub pid: u32,
    pub host: String,
    /// Milliseconds since the Unix epoch.
    pub started_ms: i64,
    /// How many jobs it runs at once.
    pub concurrency: u32,
    /// How many jobs more it may hold while their inputs are fetched, before an encoder is
    /// free for them (a worker that cannot see the media: `transfer_ahead`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ahead: u32,
    /// The profiles it can run (found at its start); `None`: it did not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profiles: Option<Vec<String>>,
    /// The profiles it knows but cannot run here (an encoder or device missing): it never
    /// takes their jobs. A profile it does not know at all it takes, and fails the job, saying
    /// which profiles it knows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unable: Vec<String>,
    /// What its operator says of the machine (`tags` in its config), for jobs that `--require`
    /// them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// True when a worker that cannot run the profiles `unable` and has `tags` takes `spec`.
fn runs(unable: &[String], tags: &[String], spec: &JobSpec) -> bool {
    !unable.contains(&spec.profile) && spec.require.iter().all(|t| tags.contains(t))
}

impl WorkerInfo {
    /// This process as worker `name` on `host`: one job at a time, no profiles or tags said
    /// yet (callers set what they know).
    pub fn new(name: &str, host: &str) -> Self {
        Self {
            name: name.to_owned(),
            pid: std::process::id(),
            host: host.to_owned(),
            started_ms: 0,
            concurrency: 1,
            ahead: 0,
            profiles: None,
            unable: Vec::new(),
            tags: Vec::new(),
        }
    }

    /// True when this worker can take `spec`.
    pub fn can_run(&self, spec: &JobSpec) -> bool {
        runs(&self.unable, &self.tags, spec)
    }
}

impl WorkerStatus {
    /// True when this worker can take `spec`.
    pub fn can_run(&self, spec: &JobSpec) -> bool {
        runs(&self.unable, &self.tags, spec)
    }
}

/// Mark each waiting job that no live worker can take with why it waits ("waiting for a worker
/// that can run profile X"); with no live worker at all, nothing is said (any worker may come).
pub fn mark_waiting(records: &mut [JobRecord], workers: &[WorkerStatus]) {
    if workers.is_empty() {
        return;
    }
    for record in records.iter_mut().filter(|r| r.state == JobState::Queued) {
        if !workers.iter().any(|w| w.can_run(&record.spec)) {
            record.waiting_for = Some(why_waiting(&record.spec));
        }
    }
}

/// Why a waiting job that no live worker can take waits.
pub fn why_waiting(spec: &JobSpec) -> String {
    let mut why = format!("waiting for a worker that can run profile {}", spec.profile);
    if !spec.require.is_empty() {
        why.push_str(&format!(" with tags {}", spec.require.join(", ")));
    }
    why
}

/// A job held by a worker.
#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    pub id: JobId,
    pub spec: JobSpec,
    /// 1-based attempt number of this lease (failed and lost attempts before it included).
    pub attempt: u32,
    /// How many of the attempts before this one were lost with their worker.
    pub lost: u32,
    /// The fencing token: it changes every time the job is leased, and the queue refuses a
    /// heartbeat, publish or finish that carries an old one.
    pub token: u64,
    /// Backend-specific handle (a delivery tag on RabbitMQ); 0 where unused.
    pub handle: u64,
    /// The job is taken afresh (queued, retried, or its last holder lost), not back from a
    /// split tape's wait for its chunks: a tape taken afresh queues again the chunks it lacks
    /// (see [`crate::lifecycle`]).
    pub fresh: bool,
}

impl Lease {
    /// Attempts before this one that failed (lost ones are counted apart).
    pub fn failures(&self) -> u32 {
        self.attempt.saturating_sub(1).saturating_sub(self.lost)
    }

    /// True when failing this attempt fails the job for good.
    pub fn is_last_try(&self, max_attempts: u32) -> bool {
        self.failures() + 1 >= max_attempts
    }
}

/// What happened to an enqueue request.
#[derive(Debug, Clone, PartialEq)]
pub enum Enqueued {
    /// A new job (or a forced re-run of an old one) is queued.
    Queued(JobId),
    /// The same input with the same profile and output is already known: nothing was queued.
    Duplicate(JobId, JobState),
}

impl Enqueued {
    pub fn id(&self) -> &JobId {
        match self {
            Enqueued::Queued(id) | Enqueued::Duplicate(id, _) => id,
        }
    }
}

/// One job a worker is running, as `inspect` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActiveJob {
    pub id: JobId,
    #[serde(with = "crate::pathser")]
    pub input: PathBuf,
    #[serde(with = "crate::pathser")]
    pub output: PathBuf,
    pub profile: String,
    pub progress: f64,
    pub fps: f64,
    pub speed: f64,
    pub eta_s: Option<f64>,
    /// While its files move: how far (see [`crate::job::Transfer`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer: Option<crate::job::Transfer>,
}

/// A live worker and what it is doing, as `inspect` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerStatus {
    pub name: String,
    pub pid: u32,
    pub host: String,
    /// RFC 3339 UTC time the worker started.
    pub started: String,
    pub concurrency: u32,
    pub active: Vec<ActiveJob>,
    /// The profiles it can run (`None`: it did not say), those it cannot, and its tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profiles: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unable: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The worker's lease ran out and the job went to someone else, or its token is stale.
    #[error("job {0}: the lease was lost (it ran out or the job was handed to another worker)")]
    LeaseLost(JobId),
    /// Someone cancelled the job while it ran.
    /// The job was cancelled: the id is the one the user cancelled (the job's own, or, for a
    /// chunk, its split tape's).
    #[error("job {0} was cancelled")]
    Cancelled(JobId),
    #[error("no job with id {0}")]
    NotFound(JobId),
    /// The job exists but the request does not fit its state.
    #[error("job {id} is {state}: {what}")]
    WrongState {
        id: JobId,
        state: JobState,
        what: String,
    },
    /// The backend itself failed (database, broker connection): transient, try again later.
    #[error("queue backend: {0}")]
    Backend(String),
}

impl QueueError {
    /// True when the worker holding the lease must stop the job and publish nothing.
    pub fn voids_lease(&self) -> bool {
        matches!(self, QueueError::LeaseLost(_) | QueueError::Cancelled(_))
    }
}

/// The worker and producer protocol of a job queue. See the module documentation for the
/// lease protocol. What a farm keeps about its jobs is [`Records`]; what a user can change is
/// [`Control`]; a command that needs all three takes a [`Backend`].
#[async_trait]
pub trait Queue: Send + Sync {
    /// Queue a batch, in order, with one answer per job (a job is queued unless the same one is
    /// known; `force` queues it again anyway); `Err` only when the queue itself failed. A batch
    /// is cheaper than as many single calls (one transaction, one round of confirms).
    async fn enqueue_many(
        &self,
        specs: Vec<JobSpec>,
        force: bool,
    ) -> Result<Vec<Result<Enqueued, QueueError>>, QueueError>;

    /// Queue one job: a batch of one.
    async fn enqueue(&self, spec: JobSpec, force: bool) -> Result<Enqueued, QueueError> {
        self.enqueue_many(vec![spec], force)
            .await?
            .pop()
            .unwrap_or_else(|| Err(QueueError::Backend("nothing was queued".into())))
    }

    /// Take the next ready job, waiting up to `wait` for one to become ready.
    async fn lease(&self, worker: &WorkerInfo, wait: Duration)
        -> Result<Option<Lease>, QueueError>;

    /// Renew a lease and record progress.
    async fn heartbeat(&self, lease: &Lease, progress: Option<&Progress>)
        -> Result<(), QueueError>;

    /// Ask permission to rename a verified output into place. Refused with a stale token.
    async fn begin_publish(&self, lease: &Lease) -> Result<(), QueueError>;

    /// End an attempt.
    async fn finish(&self, lease: &Lease, outcome: Outcome) -> Result<(), QueueError>;

    /// Say the worker is alive (called on start and with every heartbeat round).
    async fn register_worker(&self, worker: &WorkerInfo) -> Result<(), QueueError>;

    /// Say the worker has stopped.
    async fn unregister_worker(&self, worker: &WorkerInfo) -> Result<(), QueueError>;

    /// Tell whoever follows the farm's events what a worker is doing (best effort: events are
    /// for watching, never for correctness). A backend without a shared event stream keeps
    /// them to the process, which is the default.
    async fn publish_event(&self, _event: &Event) {}

    /// Keep a watch's list of problems (replacing its last one) for `status` and the page.
    async fn report_watch(&self, report: &WatchReport) -> Result<(), QueueError>;
}

/// What a farm keeps about its jobs and workers: exact on every backend.
#[async_trait]
pub trait Records: Send + Sync {
    /// The live workers and their active jobs.
    async fn workers(&self) -> Result<Vec<WorkerStatus>, QueueError>;

    /// How many workers are live: the same as `workers().len()`, where a backend may know it
    /// without asking each worker.
    async fn worker_count(&self) -> Result<usize, QueueError> {
        Ok(self.workers().await?.len())
    }

    /// Job counts by state; a split tape counts as one job.
    async fn counts(&self) -> Result<Counts, QueueError>;

    /// Say in each waiting job of `records` that no live worker can take why it waits
    /// ([`mark_waiting`]'s rule). A backend that knows which jobs a live worker serves without
    /// asking every worker answers from that.
    async fn explain_waiting(&self, records: &mut [JobRecord]) -> Result<(), QueueError> {
        if records.iter().any(|r| r.state == JobState::Queued) {
            let workers = self.workers().await?;
            mark_waiting(records, &workers);
        }
        Ok(())
    }

    /// The watches that last said they have problems, with those problems.
    async fn watch_problems(&self) -> Result<Vec<WatchReport>, QueueError>;

    async fn jobs(&self, filter: &JobFilter) -> Result<Vec<JobRecord>, QueueError>;

    /// Whether a job may have been cancelled at or after `since_ms`. False only where the
    /// backend knows it cheaply, without reading the jobs (RabbitMQ: from the cancel
    /// tombstones every worker keeps), so that a sweep with nothing to do reads nothing.
    async fn cancels_since(&self, since_ms: i64) -> Result<bool, QueueError> {
        let _ = since_ms;
        Ok(true)
    }

    /// A job's attempts, oldest first.
    async fn history(&self, id: &JobId) -> Result<Vec<AttemptRecord>, QueueError>;

    /// The farm's recent past: `count` stretches of `bucket_ms` ending now, with what finished
    /// in each and how many jobs waited at its end.
    async fn timeline(
        &self,
        bucket_ms: i64,
        count: usize,
    ) -> Result<Vec<crate::listing::Bucket>, QueueError>;

    /// The farm's lifecycle events as they happen, from every worker; `None` where the backend
    /// has no shared event stream (the embedded queue: only a process's own worker is seen).
    async fn subscribe_events(&self) -> Result<Option<Box<dyn EventFeed>>, QueueError> {
        Ok(None)
    }
}

/// A live feed of lifecycle events.
#[async_trait]
pub trait EventFeed: Send {
    /// The next event; `None` when the feed ended (the connection closed): subscribe again.
    async fn next(&mut self) -> Option<Result<Event, QueueError>>;
}

/// What a user changes: retries and cancels. Each answers every id, in order, with what the
/// lifecycle ([`crate::lifecycle::cancel`], [`crate::lifecycle::retry`]) says of it: one id
/// that cannot be cancelled or retried never stops the others. `Err` only when the queue
/// itself failed.
#[async_trait]
pub trait Control: Send + Sync {
    /// Put failed or cancelled jobs back in the queue with a fresh attempt budget.
    async fn retry(&self, ids: &[JobId]) -> Result<Vec<Answer>, QueueError>;

    /// Put every failed job back in the queue, each once: the answers name those retried.
    async fn retry_all_failed(&self) -> Result<Vec<Answer>, QueueError>;

    /// Cancel queued or running jobs (a running one stops at its next heartbeat).
    async fn cancel(&self, ids: &[JobId]) -> Result<Vec<Answer>, QueueError>;
}

/// A whole backend: the protocol, the records and control. The commands and the dashboard
/// hold one of these and never ask which backend it is.
pub trait Backend: Queue + Records + Control {}

impl<T: Queue + Records + Control> Backend for T {}
