//! Jobs: what is asked (a [`JobSpec`]), where it stands (a [`JobState`]), how far a running one
//! has got (a [`Progress`]) and how an attempt ended (an [`Outcome`]).

use crate::split::{Chunk, Split};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;

/// A job's id. Backends choose the form (SQLite uses its row id); users type it on the command
/// line, so it stays short.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub String);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Bounds on what a job may carry: a message on a shared broker is hostile input.
pub mod limits {
    /// A job id: letters, digits, `-`, `_`, `.`, `:`; never starting with `.`.
    pub const ID: usize = 64;
    /// A profile name: letters, digits, `-`, `_`.
    pub const PROFILE: usize = 64;
    /// An identity key.
    pub const KEY: usize = 128;
    /// A path, in bytes (Linux's PATH_MAX).
    pub const PATH: usize = 4096;
    /// A reason or a stderr tail carried along with a job.
    pub const TEXT: usize = 8192;
}

impl JobId {
    /// Why this id is not one videofarm makes, or `Ok`. Ids name files and queues and are
    /// typed on command lines: no slashes, no dot-dot, no control characters, short.
    pub fn check(&self) -> Result<(), String> {
        let id = &self.0;
        let ok = !id.is_empty()
            && id.len() <= limits::ID
            && !id.starts_with('.')
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
        if ok {
            Ok(())
        } else {
            Err(format!(
                "{:?} is not a job id (at most {} letters, digits, '-', '_', '.' or ':')",
                truncate(id, 80),
                limits::ID
            ))
        }
    }
}

/// `text` cut to at most `max` bytes at a character boundary, with "…" when cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

impl From<&str> for JobId {
    fn from(s: &str) -> Self {
        JobId(s.to_owned())
    }
}

/// Everything a worker needs to run a job, as queued.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    /// The source file. Never modified or deleted.
    #[serde(with = "crate::pathser")]
    pub input: PathBuf,
    /// Where the verified result is renamed to.
    #[serde(with = "crate::pathser")]
    pub output: PathBuf,
    /// The profile's name. Workers resolve it from their own configuration, so a message on a
    /// shared broker can never smuggle ffmpeg arguments onto a worker.
    pub profile: String,
    /// The job's identity (see [`crate::identity`]): the same input and profile give the same key.
    pub key: String,
    /// Replace an existing output that is not this job's verified result.
    #[serde(default)]
    pub overwrite: bool,
    /// Higher runs first.
    #[serde(default)]
    pub priority: i32,
    /// The input's size when queued, for summaries and metrics.
    #[serde(default)]
    pub input_size: u64,
    /// For a chunk job: the job it is a part of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<JobId>,
    /// Whether a long input may be split across workers (see [`crate::split`]).
    #[serde(default, skip_serializing_if = "Split::is_off")]
    pub split: Split,
    /// For a chunk job: the frames of the input it encodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk: Option<Chunk>,
    /// Worker tags the job needs (`--require`): only a worker with all of them takes it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub require: Vec<String>,
}

/// The most tags a worker has or a job requires: a RabbitMQ worker consumes a queue for each
/// subset of its tags and each profile it can run.
pub const MAX_TAGS: usize = 4;

/// Why `tag` cannot be a worker tag, or `Ok`: 1 to 64 letters, digits, '-', '_' or '.'.
pub fn check_tag(tag: &str) -> Result<(), String> {
    if tag.is_empty()
        || tag.len() > 64
        || !tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(format!(
            "{:?} is not a tag (1 to 64 letters, digits, '-', '_' or '.')",
            truncate(tag, 80)
        ));
    }
    Ok(())
}

impl JobSpec {
    /// Why this spec cannot be a job, or `Ok`: every field bounded and of its form.
    pub fn check(&self) -> Result<(), String> {
        let profile_ok = !self.profile.is_empty()
            && self.profile.len() <= limits::PROFILE
            && self
                .profile
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'));
        if !profile_ok {
            return Err(format!(
                "{:?} is not a profile name (at most {} letters, digits, '-' or '_')",
                truncate(&self.profile, 80),
                limits::PROFILE
            ));
        }
        if self.key.is_empty()
            || self.key.len() > limits::KEY
            || self.key.chars().any(char::is_control)
        {
            return Err(format!(
                "the job key is empty, too long or not printable (at most {} bytes)",
                limits::KEY
            ));
        }
        for (what, path) in [("input", &self.input), ("output", &self.output)] {
            let bytes = path.as_os_str().len();
            if bytes == 0 || bytes > limits::PATH {
                return Err(format!(
                    "the {what} path is {bytes} bytes long (1 to {} allowed)",
                    limits::PATH
                ));
            }
        }
        if let Some(parent) = &self.parent {
            parent.check()?;
        }
        if let Some(chunk) = &self.chunk {
            chunk.check()?;
        }
        if self.require.len() > MAX_TAGS {
            return Err(format!(
                "the job requires {} tags ({MAX_TAGS} at most)",
                self.require.len()
            ));
        }
        for tag in &self.require {
            check_tag(tag)?;
        }
        Ok(())
    }
}

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 5] = [
        JobState::Queued,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    /// A job in a terminal state is not run again unless someone asks (`retry`, `--force`).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for JobState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| {
                format!("unknown job state '{s}' (expected queued, running, succeeded, failed or cancelled)")
            })
    }
}

/// How far a running encode has got, as ffmpeg reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// 0..1 of the input's duration.
    pub progress: f64,
    /// Frames encoded so far.
    pub frames: u64,
    pub fps: f64,
    /// x-realtime: 2.0 means two seconds of video per second of wall time.
    pub speed: f64,
    /// Estimated seconds left, when the speed is known.
    pub eta_s: Option<f64>,
    /// While the job's files move (a worker without the shared storage): how far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer: Option<Transfer>,
}

/// A file on its way between a worker and the server that holds the media.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Transfer {
    /// Sending the output (else fetching the input).
    pub sending: bool,
    pub bytes: u64,
    pub total: u64,
    /// Bytes a second, so far.
    pub rate: f64,
}

/// What a successful attempt produced.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SuccessReport {
    pub input_size: u64,
    pub output_size: u64,
    /// Media duration of the output in seconds.
    pub duration_s: f64,
    /// Wall time of the encode in seconds.
    pub elapsed_s: f64,
    /// True when a verified output was already in place and nothing was encoded.
    pub already_done: bool,
    /// Video frames written.
    #[serde(default)]
    pub frames: u64,
    /// What the user should know about how it was encoded (why a long input was not split).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Damage seen in the input while encoding it (decoder errors): the output is whole, but the
    /// tape may be worth capturing again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The quality check's score: SSIM of the output against its source on sampled segments
    /// (1.0 is identical), for profiles with `min_ssim`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssim: Option<f64>,
    /// What the tape's signal says (black, clipped, silent, lost frames, field order), measured
    /// in the encode's own decode pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tape: Option<Box<crate::report::TapeReport>>,
}

impl SuccessReport {
    /// A finished job's progress: all of it, with the frames, the average rate and speed.
    pub fn final_progress(&self) -> Progress {
        let per_second = |n: f64| {
            if self.elapsed_s > 0.0 {
                n / self.elapsed_s
            } else {
                0.0
            }
        };
        Progress {
            progress: 1.0,
            frames: self.frames,
            fps: per_second(self.frames as f64),
            speed: per_second(self.duration_s),
            eta_s: Some(0.0),
            transfer: None,
        }
    }
}

/// Why an attempt failed, and so what the queue should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureKind {
    /// Bad input or configuration that no retry can fix: fail the job now.
    Permanent,
    /// ffmpeg failed, verification failed, a stall or a timeout: retry with backoff until
    /// `max_attempts`, then fail.
    Retryable,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    pub kind: FailureKind,
    /// One line, in plain words, naming the file.
    pub reason: String,
    /// The last lines ffmpeg wrote to stderr, when ffmpeg ran.
    #[serde(default)]
    pub stderr_tail: String,
}

impl Failure {
    pub fn permanent(reason: impl Into<String>) -> Self {
        Self {
            kind: FailureKind::Permanent,
            reason: reason.into(),
            stderr_tail: String::new(),
        }
    }

    pub fn retryable(reason: impl Into<String>, stderr_tail: impl Into<String>) -> Self {
        Self {
            kind: FailureKind::Retryable,
            reason: reason.into(),
            stderr_tail: stderr_tail.into(),
        }
    }
}

/// How an attempt ended, as the worker tells the queue.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Output verified and renamed into place: acknowledge.
    Succeeded(SuccessReport),
    Failed(Failure),
    /// The worker is stopping: put the job back at once without counting an attempt.
    Released,
    /// Not ready yet (a split tape waiting for its chunks): put the job back, available again
    /// after `after`, without counting an attempt, keeping `progress` for the records.
    Deferred {
        after: std::time::Duration,
        progress: Progress,
    },
}

/// One row of `videofarm jobs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: JobId,
    pub state: JobState,
    #[serde(flatten)]
    pub spec: JobSpec,
    pub attempts: u32,
    pub max_attempts: u32,
    /// The reason of the last failed attempt (or of the failure, for failed jobs).
    pub error: Option<String>,
    pub stderr_tail: Option<String>,
    pub worker: Option<String>,
    pub progress: Option<Progress>,
    pub result: Option<SuccessReport>,
    /// Milliseconds since the Unix epoch.
    pub created_ms: i64,
    pub started_ms: Option<i64>,
    pub finished_ms: Option<i64>,
    /// For a waiting job no live worker can take: why it waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
}

/// One attempt in a job's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub attempt: u32,
    pub worker: String,
    pub started_ms: i64,
    pub finished_ms: Option<i64>,
    pub outcome: crate::lifecycle::AttemptOutcome,
    pub error: Option<String>,
}

/// Job counts by state, as `videofarm status` prints them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Waiting to run, including those waiting out a retry delay.
    pub queued: u64,
    /// Of `queued`, those waiting out a retry delay after a failed attempt.
    #[serde(default)]
    pub retrying: u64,
    pub running: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub cancelled: u64,
}

impl Counts {
    pub fn add(&mut self, state: JobState, n: u64) {
        match state {
            JobState::Queued => self.queued += n,
            JobState::Running => self.running += n,
            JobState::Succeeded => self.succeeded += n,
            JobState::Failed => self.failed += n,
            JobState::Cancelled => self.cancelled += n,
        }
    }
}

/// Which jobs to list.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub state: Option<JobState>,
    pub ids: Option<Vec<JobId>>,
    /// Also the chunk jobs of split tapes (a user sees a tape as one job).
    pub chunks: bool,
    /// At most this many (a page), after skipping `offset`.
    pub limit: Option<u32>,
    pub offset: u32,
    /// Most recently finished first (then newest queued), instead of oldest queued first.
    pub newest_first: bool,
    /// Only jobs that finished at or after this time (ms).
    pub finished_since: Option<i64>,
}
