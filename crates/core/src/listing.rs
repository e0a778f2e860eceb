//! The SQL that lists and counts jobs, shared by the two SQLite-backed stores (the embedded
//! queue and the RabbitMQ records copy), whose `jobs` tables have the same columns: `id`,
//! `state`, `parent` (a chunk's tape, as text), `created_ms`, `finished_ms`, `not_before`.
//!
//! A split tape waiting for its chunks is shown as running while any chunk runs; the state
//! shown is computed in SQL so that filters, pages and counts apply to it, and every query
//! stays on the `(state, parent)` index, so a library of 100,000 jobs answers in milliseconds.

use crate::job::{JobFilter, JobState};
use serde::{Deserialize, Serialize};

/// How one store's `jobs` table differs.
pub struct Listing {
    /// A chunk's `c.parent` as the type of `id` (`CAST(c.parent AS INTEGER)` where ids are
    /// numbers).
    pub parent_as_id: &'static str,
    /// `j.id` as a `parent` value (`CAST(j.id AS TEXT)` where ids are numbers).
    pub id_as_parent: &'static str,
    /// The column that orders jobs as they were queued.
    pub queue_order: &'static str,
}

impl Listing {
    /// Tapes with a chunk running.
    fn busy(&self) -> String {
        format!(
            "(SELECT {} FROM jobs c WHERE c.state = 'running' AND c.parent IS NOT NULL)",
            self.parent_as_id
        )
    }

    /// The jobs `filter` asks for, with the shown state in a column `shown`. Parameters: ?1 the
    /// ids as a JSON array (or NULL for any), ?2 the limit (-1 for none), ?3 the offset.
    pub fn select(&self, filter: &JobFilter) -> String {
        let busy = self.busy();
        let state = match filter.state {
            None => "1".to_owned(),
            Some(JobState::Running) => {
                format!("(j.state = 'running' OR (j.state = 'queued' AND j.id IN {busy}))")
            }
            Some(JobState::Queued) => format!("j.state = 'queued' AND j.id NOT IN {busy}"),
            // A fixed set of words: safe to write into the statement.
            Some(other) => format!("j.state = '{}'", other.as_str()),
        };
        let chunks = if filter.chunks {
            "1"
        } else {
            "j.parent IS NULL"
        };
        let order = match (filter.newest_first, filter.state) {
            (true, Some(s)) if s.is_terminal() => {
                format!("j.finished_ms DESC, {} DESC", self.queue_order)
            }
            (true, _) => format!(
                "coalesce(j.finished_ms, j.created_ms) DESC, {} DESC",
                self.queue_order
            ),
            (false, _) => self.queue_order.to_owned(),
        };
        format!(
            "SELECT j.*, CASE WHEN j.state = 'queued' AND j.id IN {busy} THEN 'running' ELSE j.state END AS shown
             FROM jobs j
             WHERE {state} AND {chunks} AND (?1 IS NULL OR j.id IN (SELECT value FROM json_each(?1)))
                AND (?4 IS NULL OR j.finished_ms >= ?4)
             ORDER BY {order} LIMIT ?2 OFFSET ?3"
        )
    }

    /// The parameters of [`Listing::select`] after the ids (`?1`, written by each backend as
    /// its ids are stored): the page's size (`?2`, -1 for all), its offset (`?3`) and the
    /// earliest end (`?4`).
    pub fn page(filter: &JobFilter) -> (i64, u32, Option<i64>) {
        (
            filter.limit.map_or(-1, i64::from),
            filter.offset,
            filter.finished_since,
        )
    }

    /// Tapes by stored state (one row per state; chunks not counted).
    pub fn count_by_state(&self) -> &'static str {
        "SELECT state, count(*) FROM jobs WHERE parent IS NULL GROUP BY state"
    }

    /// Waiting tapes shown as running, because a chunk of theirs runs: found from the running
    /// chunks (few), never by reading every waiting job.
    pub fn count_busy_tapes(&self) -> String {
        format!(
            "SELECT count(DISTINCT p.id) FROM jobs c JOIN jobs p ON p.id = {}
             WHERE c.state = 'running' AND c.parent IS NOT NULL AND p.state = 'queued'",
            self.parent_as_id
        )
    }

    /// Jobs waiting out a retry delay (not tapes waiting for chunks), found through the
    /// `jobs_retrying` index (`not_before` of waiting jobs). Parameter ?1: now, in ms.
    pub fn count_retrying(&self) -> String {
        format!(
            "SELECT count(*) FROM jobs j INDEXED BY jobs_retrying
             WHERE j.state = 'queued' AND j.not_before > ?1 AND j.parent IS NULL
               AND NOT EXISTS (SELECT 1 FROM jobs c WHERE c.parent = {})",
            self.id_as_parent
        )
    }
}

/// The jobs a timeline needs: those not finished before ?1 and queued by ?2 (tapes only).
/// Columns: created_ms, finished_ms, state, output size, media seconds.
pub const TIMELINE_ROWS: &str = "SELECT created_ms, finished_ms, state,
        json_extract(result, '$.output_size'), json_extract(result, '$.duration_s')
     FROM jobs WHERE parent IS NULL AND (finished_ms IS NULL OR finished_ms >= ?1) AND created_ms <= ?2";

/// One stretch of a farm's recent past, as the dashboard's chart draws it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    /// Milliseconds since the epoch when the stretch starts.
    pub start_ms: i64,
    pub succeeded: u64,
    pub failed: u64,
    /// Bytes written by the jobs that succeeded in it.
    pub bytes: u64,
    /// Seconds of media they encoded.
    pub media_s: f64,
    /// Jobs waiting or running at its end.
    pub waiting: u64,
}

/// One row of [`TIMELINE_ROWS`].
pub struct TimelineRow {
    pub created_ms: i64,
    pub finished_ms: Option<i64>,
    pub state: JobState,
    pub bytes: Option<u64>,
    pub media_s: Option<f64>,
}

/// `count` stretches of `bucket_ms` each, ending at `end_ms`, from the rows of [`TIMELINE_ROWS`]
/// (read with ?1 = the first stretch's start, ?2 = `end_ms`).
pub fn timeline(
    rows: impl IntoIterator<Item = TimelineRow>,
    end_ms: i64,
    bucket_ms: i64,
    count: usize,
) -> Vec<Bucket> {
    let bucket_ms = bucket_ms.max(1);
    let start = end_ms - bucket_ms * count as i64;
    let mut buckets: Vec<Bucket> = (0..count)
        .map(|i| Bucket {
            start_ms: start + bucket_ms * i as i64,
            ..Default::default()
        })
        .collect();
    for row in rows {
        // A stretch takes what finished from its start up to its end, the last one its end too.
        if let Some(finished) = row.finished_ms.filter(|f| *f >= start && *f <= end_ms) {
            let index = (((finished - start) / bucket_ms) as usize).min(count.saturating_sub(1));
            let b = &mut buckets[index];
            match row.state {
                JobState::Succeeded => {
                    b.succeeded += 1;
                    b.bytes += row.bytes.unwrap_or(0);
                    b.media_s += row.media_s.unwrap_or(0.0);
                }
                JobState::Failed => b.failed += 1,
                _ => {}
            }
        }
        // Waiting at the end of each stretch from its queueing until it finished.
        for b in buckets.iter_mut() {
            let at = b.start_ms + bucket_ms;
            if row.created_ms <= at && row.finished_ms.is_none_or(|f| f > at) {
                b.waiting += 1;
            }
        }
    }
    buckets
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeline_counts_what_finished_in_each_stretch_and_what_waited_at_its_end() {
        let row = |created_ms, finished_ms, state, bytes| TimelineRow {
            created_ms,
            finished_ms,
            state,
            bytes,
            media_s: Some(10.0),
        };
        let rows = vec![
            row(0, Some(150), JobState::Succeeded, Some(1000)),
            row(0, Some(250), JobState::Failed, None),
            row(0, None, JobState::Queued, None),
            row(220, Some(290), JobState::Succeeded, Some(500)),
        ];
        let buckets = timeline(rows, 300, 100, 3);
        let got: Vec<(i64, u64, u64, u64, u64)> = buckets
            .iter()
            .map(|b| (b.start_ms, b.succeeded, b.failed, b.bytes, b.waiting))
            .collect();
        assert_eq!(
            got,
            vec![(0, 0, 0, 0, 3), (100, 1, 0, 1000, 2), (200, 1, 1, 500, 1)]
        );
    }
}
