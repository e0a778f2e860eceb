//! Lifecycle events: what the farm tells progress bars, `videofarm events`, dashboards and
//! metrics. They serialize to JSON with a `type` tag, so they can cross a broker.

use crate::job::{Failure, JobId, Progress, SuccessReport};
use crate::queue::WorkerInfo;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    JobQueued {
        id: JobId,
        #[serde(with = "crate::pathser")]
        input: PathBuf,
        profile: String,
    },
    JobStarted {
        id: JobId,
        worker: String,
        #[serde(with = "crate::pathser")]
        input: PathBuf,
        #[serde(with = "crate::pathser")]
        output: PathBuf,
        profile: String,
        attempt: u32,
        /// Media duration of what is encoded, when known.
        duration_s: Option<f64>,
        /// For a chunk of a split tape: the tape's job and the chunk's place in it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        part: Option<Part>,
    },
    JobProgress {
        id: JobId,
        worker: String,
        progress: Progress,
    },
    JobSucceeded {
        id: JobId,
        worker: String,
        report: SuccessReport,
    },
    /// An attempt failed; the queue decides whether the job is retried.
    JobFailed {
        id: JobId,
        worker: String,
        attempt: u32,
        failure: Failure,
    },
    /// The worker stopped and put the job back without counting an attempt.
    JobReleased {
        id: JobId,
        worker: String,
    },
    /// The worker lost the job (its lease ran out, or it was cancelled) and published nothing.
    JobLost {
        id: JobId,
        worker: String,
        reason: String,
    },
    /// A user cancelled these jobs (from any command, the API or the page).
    JobsCancelled {
        ids: Vec<JobId>,
    },
    /// A user put these failed or cancelled jobs back in the queue.
    JobsRetried {
        ids: Vec<JobId>,
    },
    WorkerOnline {
        worker: WorkerInfo,
    },
    WorkerOffline {
        name: String,
    },
}

/// Where a chunk job belongs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Part {
    pub parent: JobId,
    pub index: u32,
    pub count: u32,
}

impl Event {
    /// The job the event is about, if any.
    pub fn job_id(&self) -> Option<&JobId> {
        match self {
            Event::JobQueued { id, .. }
            | Event::JobStarted { id, .. }
            | Event::JobProgress { id, .. }
            | Event::JobSucceeded { id, .. }
            | Event::JobFailed { id, .. }
            | Event::JobReleased { id, .. }
            | Event::JobLost { id, .. } => Some(id),
            Event::JobsCancelled { .. }
            | Event::JobsRetried { .. }
            | Event::WorkerOnline { .. }
            | Event::WorkerOffline { .. } => None,
        }
    }
}
