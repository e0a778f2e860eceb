//! The heart of videofarm: what a job is, what a profile is, and the contract every queue
//! backend honours. Nothing here talks to a broker, a database or ffmpeg, so Cargo itself keeps
//! the backends depending on the core and never the reverse.
//!
//! Layout:
//! - [`job`]: job specs, states, progress, attempt outcomes and records.
//! - [`profile`]: encoding profiles (built-in and user-defined) and what their outputs keep.
//! - [`lifecycle`]: a job's states, what moves them, the cancel, retry and failure rules.
//! - [`queue`]: the [`Queue`] trait, leases with fencing tokens, worker status.
//! - [`identity`]: the cheap content fingerprint that makes a job's identity ("never twice").
//! - [`event`]: lifecycle events for progress bars, dashboards and `videofarm events`.
//! - [`clock`]: an injectable clock so lease and backoff logic is testable without sleeping.
//! - [`plan`]: files and folders into planned jobs (the scan behind `run`, `enqueue` and `watch`).
//! - [`confine`]: confinement to the media roots, checked on open files, not on paths.
//! - [`report`]: the tape report: a tape's measured signal and the faults it names.
//! - [`split`]: one long input encoded by many workers: the setting, chunks, work folders.
//! - [`treat`]: treatment chosen from the tape (the deinterlacer's field order, measured).
//! - [`pathser`]: serde for file names that are not UTF-8.
//! - [`watching`]: what a `watch` cannot do right now, kept for `status` and the page.

pub mod clock;
pub mod confine;
pub mod event;
pub mod files_api;
pub mod identity;
pub mod job;
pub mod lifecycle;
pub mod listing;
pub mod pathser;
pub mod plan;
pub mod profile;
pub mod queue;
pub mod report;
pub mod split;
pub mod sweep;
pub mod treat;
pub mod watching;

pub use clock::{Clock, ManualClock, SystemClock};
pub use event::Event;
pub use job::{
    AttemptRecord, Counts, Failure, FailureKind, JobFilter, JobId, JobRecord, JobSpec, JobState,
    Outcome, Progress, SuccessReport, Transfer,
};
pub use lifecycle::{Answer, AttemptOutcome, Verdict};
pub use profile::{AudioKeep, Profile, ProfileError, Profiles, SplitArgs, SubtitleKeep};
pub use queue::{
    ActiveJob, AfterFailure, Backend, Control, Enqueued, EventFeed, Lease, Queue, QueueError,
    QueueSettings, Records, WorkerInfo, WorkerStatus,
};
pub use split::{Chunk, Split};
