//! A job's life, written once. Every backend, command and page asks here what a request does to
//! a job; none of them decides it again.
//!
//! | state     | moved by                          | to                                   |
//! |-----------|-----------------------------------|--------------------------------------|
//! | queued    | lease                             | running (a new attempt, a new token) |
//! | queued    | cancel                            | cancelled                            |
//! | running   | heartbeat                         | running (lease renewed)              |
//! | running   | begin publish                     | running, publishing (cancel refused) |
//! | running   | finish: succeeded                 | succeeded                            |
//! | running   | finish: failed, budget left       | queued after a backoff               |
//! | running   | finish: failed for good / budget  | failed                               |
//! | running   | finish: released, deferred        | queued (no attempt counted)          |
//! | running   | lease runs out, worker gone       | queued (attempt lost), or failed     |
//! | running   | cancel (not publishing)           | cancelled (the worker stops)         |
//! | failed    | retry                             | queued, a fresh attempt budget       |
//! | cancelled | retry                             | queued, a fresh attempt budget       |
//!
//! A split tape is a job whose chunks are jobs of their own; a user cancels and retries the
//! tape, never one chunk. Cancelling a tape cancels its queued and running chunks; retrying a
//! tape encodes again exactly the chunks whose verified files are missing (the worker that
//! takes the tape queues them: only it sees the files).
//!
//! What a transition obliges the farm to do with files is the worker's, never a command's, as
//! only a worker sees them:
//! - a cancelled job: its partial outputs, its output lock and (for a tape) its work folder go
//!   once no attempt holds the output (`videofarm_worker::cleanup`);
//! - a tape taken afresh (its lease's [`crate::Lease::fresh`]: queued, retried, or its last
//!   holder lost): every chunk whose verified file is missing is queued again (the worker's
//!   tape step).

use crate::job::{FailureKind, JobId, JobState};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// How one attempt at a job ended (or stands), as the history shows it. The same words on
/// every backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttemptOutcome {
    /// A worker holds it now.
    Running,
    /// Verified, and being renamed into place: a cancel no longer takes it.
    Publishing,
    Succeeded,
    Failed,
    /// The worker stopped (SIGTERM, drain) and put the job back without counting an attempt.
    Released,
    /// The worker was lost with it (killed, cut off, its lease ran out).
    Lost,
    /// A user cancelled the job while this attempt ran.
    Cancelled,
}

impl AttemptOutcome {
    pub const ALL: [AttemptOutcome; 7] = [
        AttemptOutcome::Running,
        AttemptOutcome::Publishing,
        AttemptOutcome::Succeeded,
        AttemptOutcome::Failed,
        AttemptOutcome::Released,
        AttemptOutcome::Lost,
        AttemptOutcome::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Running => "running",
            AttemptOutcome::Publishing => "publishing",
            AttemptOutcome::Succeeded => "succeeded",
            AttemptOutcome::Failed => "failed",
            AttemptOutcome::Released => "released",
            AttemptOutcome::Lost => "lost",
            AttemptOutcome::Cancelled => "cancelled",
        }
    }

    /// True while the attempt holds the job.
    pub fn is_open(self) -> bool {
        matches!(self, AttemptOutcome::Running | AttemptOutcome::Publishing)
    }
}

impl fmt::Display for AttemptOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for AttemptOutcome {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AttemptOutcome::ALL
            .into_iter()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| format!("unknown attempt outcome '{s}'"))
    }
}

/// What the lifecycle needs to know of a job to answer a user's request about it.
#[derive(Debug, Clone, PartialEq)]
pub struct JobView {
    pub state: JobState,
    /// An attempt has begun publishing its verified output.
    pub publishing: bool,
    /// For a chunk: its tape.
    pub parent: Option<JobId>,
    /// Not a job: a message the farm refused (listed among the failed so that it is seen).
    pub refused: bool,
}

/// What became of a user's request (cancel or retry) for one job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "answer", content = "state", rename_all = "snake_case")]
pub enum Verdict {
    /// Done now.
    Done,
    /// Nothing to do: the job already is where the request would put it, or past it.
    Already(JobState),
    /// Too late to cancel: its verified output is being put in place; it ends succeeded.
    Publishing,
    /// The request does not apply to this job; the words say why and what to do instead.
    Refused(String),
    /// No job has this id.
    NotFound,
}

impl Verdict {
    /// True when the request changed the job.
    pub fn is_done(&self) -> bool {
        matches!(self, Verdict::Done)
    }

    /// True when the user should hear of it as a problem (an id that is wrong for the request).
    pub fn is_problem(&self) -> bool {
        matches!(self, Verdict::Refused(_) | Verdict::NotFound)
    }
}

/// A request's answer for one job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub id: JobId,
    #[serde(flatten)]
    pub verdict: Verdict,
}

impl Answer {
    pub fn new(id: &JobId, verdict: Verdict) -> Self {
        Self {
            id: id.clone(),
            verdict,
        }
    }

    /// One line a person reads: `12: cancelled`, `7: already succeeded`.
    pub fn describe(&self, request: Request) -> String {
        let words = match &self.verdict {
            Verdict::Done => request.done_words().to_owned(),
            Verdict::Already(state) => format!("already {state}"),
            Verdict::Publishing => {
                "too late to cancel: verified and being put in place; it ends succeeded".to_owned()
            }
            Verdict::Refused(why) => why.clone(),
            Verdict::NotFound => format!("no job with id {}", self.id),
        };
        format!("{}: {words}", self.id)
    }
}

/// The requests a user makes of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    Cancel,
    Retry,
}

impl Request {
    fn done_words(self) -> &'static str {
        match self {
            Request::Cancel => {
                "cancelled (a running encode stops within a heartbeat; its worker removes what it left)"
            }
            Request::Retry => "queued again",
        }
    }
}

/// What `cancel` does to a job in `view`.
pub fn cancel(view: Option<&JobView>) -> Verdict {
    let Some(view) = view else {
        return Verdict::NotFound;
    };
    if view.refused {
        return Verdict::Already(JobState::Failed);
    }
    if let Some(tape) = &view.parent {
        return Verdict::Refused(format!(
            "a chunk of split tape {tape}: cancel the tape (`videofarm cancel {tape}`)"
        ));
    }
    match view.state {
        JobState::Queued | JobState::Running if view.publishing => Verdict::Publishing,
        JobState::Queued | JobState::Running => Verdict::Done,
        ended => Verdict::Already(ended),
    }
}

/// What `retry` does to a job in `view`.
pub fn retry(view: Option<&JobView>) -> Verdict {
    let Some(view) = view else {
        return Verdict::NotFound;
    };
    if view.refused {
        return Verdict::Refused(
            "a message the farm refused, not a job: it cannot be retried (queue the file again)"
                .to_owned(),
        );
    }
    if let Some(tape) = &view.parent {
        return Verdict::Refused(format!(
            "a chunk of split tape {tape}: retry the tape (`videofarm retry {tape}`); it encodes again only the chunks it lacks"
        ));
    }
    match view.state {
        JobState::Failed | JobState::Cancelled => Verdict::Done,
        JobState::Queued | JobState::Running => Verdict::Already(view.state),
        JobState::Succeeded => {
            Verdict::Refused("it succeeded; to encode it again, queue it with `--force`".to_owned())
        }
    }
}

/// What becomes of a job after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Back in the queue once `after` has passed.
    Retry { after: Duration },
    /// Failed for good.
    Fail,
}

/// The retry and failure rules: one owner.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    pub max_attempts: u32,
    pub max_lost: u32,
    pub retry_backoff: Duration,
}

impl Budget {
    /// The delay before the retry that follows failed attempt number `attempt` (1-based).
    pub fn backoff_after(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(10);
        self.retry_backoff.saturating_mul(1 << doublings)
    }

    /// What becomes of a job whose attempt failed, after `failures_before` failed attempts
    /// (lost ones not counted).
    pub fn after_failure(&self, failures_before: u32, kind: FailureKind) -> AfterFailure {
        let failures = failures_before + 1;
        if kind == FailureKind::Permanent || failures >= self.max_attempts {
            AfterFailure::Fail
        } else {
            AfterFailure::Retry {
                after: self.backoff_after(failures),
            }
        }
    }

    /// True when a job lost with its worker `lost` times must stop being handed out.
    pub fn lost_too_often(&self, lost: u32) -> bool {
        lost >= self.max_lost
    }
}

/// How a backend learns that an attempt was lost with its worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LostCause {
    /// Its holder stopped renewing the lease (the embedded queue).
    LeaseRanOut,
    /// The broker connection the job was delivered on ended (RabbitMQ).
    ConnectionGone,
}

impl LostCause {
    fn says(self) -> &'static str {
        match self {
            LostCause::LeaseRanOut => "stopped answering and its lease ran out",
            LostCause::ConnectionGone => {
                "died, was stopped or lost its connection to RabbitMQ (or the encode outlived the broker's consumer_timeout)"
            }
        }
    }
}

/// Why attempt `attempt` was lost, the job's `lost`-th loss, held by `worker` when known;
/// `failed` when that was one loss too many. One wording for both backends.
pub fn lost_reason(
    attempt: u32,
    lost: u32,
    worker: Option<&str>,
    failed: bool,
    cause: LostCause,
) -> String {
    let who = worker.map_or_else(|| "its worker".to_owned(), |w| format!("worker {w}"));
    if failed {
        format!(
            "lost {lost} times: the worker of every attempt {} (the last was {who}); it may be what brings them down",
            cause.says()
        )
    } else {
        format!("attempt {attempt} was lost: {who} {}", cause.says())
    }
}
