//! Durations and counts from flags and the file, bounded; the queue's timing checked as a
//! whole.

use super::file::ConfigFile;
use crate::error::UsageError;
use std::time::Duration;
use videofarm_core::QueueSettings;

/// The longest time any setting may say: about 31 years, far past any encode, and far below
/// what makes a timer overflow.
const MAX_SECS: f64 = 1e9;
/// The most encodes one process runs at once (`workers`, `--workers`, `--concurrency`).
pub const MAX_WORKERS: u32 = 1024;
/// The most attempts a job may be given.
pub(super) const MAX_ATTEMPTS: u32 = 100;

/// A number of seconds from a flag, from 1 ms to [`MAX_SECS`].
pub fn parse_secs(text: &str) -> Result<Duration, String> {
    let value: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    bounded_secs(value, 0.001).map_err(|why| format!("{text}: {why}"))
}

fn bounded_secs(value: f64, min: f64) -> Result<Duration, String> {
    if !value.is_finite() || value <= 0.0 {
        return Err("must be a positive number of seconds".into());
    }
    if value < min {
        return Err(format!("must be at least {min} s"));
    }
    if value > MAX_SECS {
        return Err(format!("must be at most {MAX_SECS} s"));
    }
    Ok(Duration::from_secs_f64(value))
}

pub(super) fn secs(name: &str, value: Option<f64>, default: f64) -> Result<Duration, UsageError> {
    secs_at_least(name, value, default, 0.001)
}

pub(super) fn secs_at_least(
    name: &str,
    value: Option<f64>,
    default: f64,
    min: f64,
) -> Result<Duration, UsageError> {
    let value = value.unwrap_or(default);
    bounded_secs(value, min).map_err(|why| UsageError::new(format!("{name} {why}, not {value}")))
}

/// The lease, the attempt budget and the heartbeat, checked against each other.
pub(super) fn queue_timing(file: &ConfigFile) -> Result<(QueueSettings, Duration), UsageError> {
    // Below a second a lease runs out between two heartbeats of a busy machine.
    let lease = secs_at_least("lease_secs", file.lease_secs, 30.0, 1.0)?;
    let heartbeat = secs(
        "heartbeat_secs",
        file.heartbeat_secs,
        lease.as_secs_f64() / 5.0,
    )?;
    if heartbeat >= lease {
        return Err(UsageError::new(
            "heartbeat_secs must be shorter than lease_secs",
        ));
    }
    let max_attempts = file.max_attempts.unwrap_or(3);
    if !(1..=MAX_ATTEMPTS).contains(&max_attempts) {
        return Err(UsageError::new(format!(
            "max_attempts must be 1 to {MAX_ATTEMPTS}, not {max_attempts}"
        )));
    }
    let max_lost = match file.max_lost_attempts {
        Some(n) if !(1..=MAX_ATTEMPTS * 2).contains(&n) => {
            return Err(UsageError::new(format!(
                "max_lost_attempts must be 1 to {}, not {n}",
                MAX_ATTEMPTS * 2
            )))
        }
        Some(n) => n,
        None => (max_attempts * 2).max(6),
    };
    let queue = QueueSettings {
        lease,
        max_attempts,
        max_lost,
        retry_backoff: secs("retry_backoff_secs", file.retry_backoff_secs, 10.0)?,
    };
    Ok((queue, heartbeat))
}
