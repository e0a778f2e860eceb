//! The SQL that lists and counts jobs, shared by the two SQLite-backed stores (the embedded
//! queue and the RabbitMQ records copy), whose `jobs` tables have the same columns: `id`,
//! `state`, `parent` (a chunk's tape, as text), `created_ms`, `finished_ms`, `not_before`.
//!
//! A split tape waiting for its chunks is shown as running while any chunk runs; the state
//! shown is computed in SQL so that filters, pages and counts apply to it, and every query
//! stays on the `(state, parent)` index, so a library of 100,000 jobs answers in milliseconds.

use crate::job::{JobFilter, JobState};

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
             ORDER BY {order} LIMIT ?2 OFFSET ?3"
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
