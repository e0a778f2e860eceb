//! Which cancelled jobs a process still has to clean up after (see [`crate::lifecycle`]): a
//! cancel only records the job's state; what its attempts left on disk is removed by whoever
//! sees those files (a worker: temporary outputs, the output's lock, a tape's work folder;
//! `serve`: uploads staged for the job). Each looks every [`SWEEP_EVERY`] at the jobs cancelled
//! since its last look, and once more at those it could not clean yet.

use crate::{JobFilter, JobId, JobRecord, JobState, QueueError, Records};
use std::collections::HashMap;
use std::time::Duration;

/// How often a process looks for cancelled jobs to clean up after.
pub const SWEEP_EVERY: Duration = Duration::from_secs(2);
/// How far back the first look goes: a job cancelled while nothing ran is cleaned when
/// something starts within this time.
pub const LOOK_BACK: Duration = Duration::from_secs(24 * 3600);
/// How far before its last look each look starts again: clocks of the machines that record
/// cancels may disagree by this much.
const CLOCK_MARGIN_MS: i64 = 60_000;
/// The most cancelled jobs one look reads.
const PAGE: u32 = 500;

/// One process's progress through the cancelled jobs.
#[derive(Default)]
pub struct CancelledSweep {
    /// Cleaned, with when each was cancelled (forgotten after [`LOOK_BACK`]).
    cleaned: HashMap<JobId, i64>,
    /// Looked at but not cleaned yet (an attempt still held its output).
    pending: HashMap<JobId, JobRecord>,
    /// When the last look was (ms).
    looked: Option<i64>,
}

impl CancelledSweep {
    /// What to read for a look at `now_ms`: the jobs cancelled since the last look (less the
    /// clock margin), or within [`LOOK_BACK`] the first time.
    pub fn filter(&self, now_ms: i64) -> JobFilter {
        let since = match self.looked {
            Some(at) => at - CLOCK_MARGIN_MS,
            None => now_ms - LOOK_BACK.as_millis() as i64,
        };
        JobFilter {
            state: Some(JobState::Cancelled),
            newest_first: true,
            limit: Some(PAGE),
            finished_since: Some(since),
            ..Default::default()
        }
    }

    /// A look at `now_ms`: the jobs to clean up after now. The jobs are read only when
    /// `records` says a job may have been cancelled since the last look (less the margin), or
    /// within [`LOOK_BACK`] the first time: an idle farm's sweeps read nothing, and neither
    /// does a worker starting on a farm where nothing was cancelled (on RabbitMQ a read keeps
    /// the process following the records stream, every fact delivered to it; 200 workers
    /// starting at once each read the whole stream, and the broker ran out of files).
    pub async fn look(
        &mut self,
        records: &dyn Records,
        now_ms: i64,
    ) -> Result<Vec<JobRecord>, QueueError> {
        let filter = self.filter(now_ms);
        let since = filter.finished_since.unwrap_or(i64::MIN);
        let found = if records.cancels_since(since).await? {
            records.jobs(&filter).await?
        } else {
            Vec::new()
        };
        Ok(self.due(found, now_ms))
    }

    /// Of the jobs `found` by a look at `now_ms`, and those still pending, the ones to clean
    /// now.
    pub fn due(&mut self, found: Vec<JobRecord>, now_ms: i64) -> Vec<JobRecord> {
        self.looked = Some(now_ms);
        let oldest = now_ms - LOOK_BACK.as_millis() as i64;
        self.cleaned.retain(|_, at| *at >= oldest);
        for record in found {
            if !self.cleaned.contains_key(&record.id) {
                self.pending.insert(record.id.clone(), record);
            }
        }
        self.pending
            .retain(|_, r| r.finished_ms.unwrap_or(now_ms) >= oldest);
        self.pending.values().cloned().collect()
    }

    /// `record` is cleaned up after: never looked at again.
    pub fn cleaned(&mut self, record: &JobRecord, now_ms: i64) {
        self.pending.remove(&record.id);
        self.cleaned
            .insert(record.id.clone(), record.finished_ms.unwrap_or(now_ms));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cancelled(id: &str, at: i64) -> JobRecord {
        JobRecord {
            id: JobId(id.into()),
            state: JobState::Cancelled,
            spec: Default::default(),
            attempts: 0,
            max_attempts: 3,
            error: None,
            stderr_tail: None,
            worker: None,
            progress: None,
            result: None,
            created_ms: 0,
            started_ms: None,
            finished_ms: Some(at),
            waiting_for: None,
        }
    }

    #[test]
    fn each_cancelled_job_is_cleaned_once_and_a_pending_one_again() {
        let mut sweep = CancelledSweep::default();
        let now = 10_000_000_000;
        assert_eq!(
            sweep.filter(now).finished_since,
            Some(now - LOOK_BACK.as_millis() as i64),
            "the first look goes back a day"
        );
        let due = sweep.due(vec![cancelled("a", now - 5), cancelled("b", now - 3)], now);
        assert_eq!(due.len(), 2);
        sweep.cleaned(&due.iter().find(|r| r.id.0 == "a").unwrap().clone(), now);
        // Later looks start at the last one (less the clock margin).
        let later = now + 2_000;
        assert_eq!(
            sweep.filter(later).finished_since,
            Some(now - CLOCK_MARGIN_MS)
        );
        // "a" is found again (within the margin) but was cleaned; "b" is still pending.
        let due = sweep.due(vec![cancelled("a", now - 5)], later);
        let ids: Vec<&str> = due.iter().map(|r| r.id.0.as_str()).collect();
        assert_eq!(ids, ["b"]);
    }
}
