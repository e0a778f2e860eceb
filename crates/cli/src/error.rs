//! Errors at the edge of the program and the exit codes they map to.

use std::fmt;

/// A usage or configuration error: exit code 2, nothing was queued or run.
#[derive(Debug)]
pub struct UsageError(String);

/// The longest a usage error gets: it may quote what the user gave (a config value, a path),
/// and a value can be as long as a file (found by the config fuzzer).
const MAX_MESSAGE: usize = 2000;

impl UsageError {
    pub fn new(message: impl Into<String>) -> Self {
        Self(videofarm_core::job::truncate(&message.into(), MAX_MESSAGE))
    }
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// How the program ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// Everything asked for succeeded.
    Success = 0,
    /// Something failed (a job, the queue).
    Failure = 1,
    /// Usage or configuration error.
    Usage = 2,
    /// The queue could not be reached (the broker is down or restarting): nothing was done,
    /// and the same command later may well work.
    Unreachable = 3,
    /// Stopped by a signal before the work was done.
    Interrupted = 130,
}

impl ExitStatus {
    /// The status for an error: usage errors anywhere in its chain give [`ExitStatus::Usage`].
    pub fn of_error(error: &anyhow::Error) -> ExitStatus {
        if error.chain().any(|e| e.is::<UsageError>()) {
            ExitStatus::Usage
        } else if crate::broker::is_unreachable(error) {
            ExitStatus::Unreachable
        } else {
            ExitStatus::Failure
        }
    }
}

impl From<videofarm_core::plan::PlanError> for UsageError {
    fn from(e: videofarm_core::plan::PlanError) -> Self {
        UsageError(e.0)
    }
}
