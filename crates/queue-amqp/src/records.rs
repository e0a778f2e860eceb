//! The farm's records on RabbitMQ: what happened to every job, kept durably on the broker and
//! read back into a local SQLite cache.
//!
//! The broker forgets a message once it is acknowledged, so every change of a job's state is
//! also written as a [`Fact`] to a durable stream (`PREFIX.records`, `x-queue-type: stream`),
//! confirmed by the broker *before* the step it describes is acknowledged. Any process that
//! needs the records (`status`, `jobs`, the dashboard) follows the stream into a [`RecordStore`]
//! (an SQLite file that remembers the last offset it applied), so jobs that finished while
//! nothing watched are there too, after any restart of anything.

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Mutex;
use videofarm_core::lifecycle::{lost_reason, Budget, LostCause};
use videofarm_core::listing::{timeline, Bucket, TimelineRow, TIMELINE_ROWS};
use videofarm_core::{
    AttemptOutcome, AttemptRecord, Counts, JobFilter, JobId, JobRecord, JobSpec, JobState,
    SuccessReport,
};

/// One change, as written to the stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stamped {
    /// The writing process (random per process) and its running count of facts: how a process
    /// knows that the facts it wrote are in its cache (read your own writes).
    pub origin: u64,
    pub seq: u64,
    /// Milliseconds since the epoch, on the writer's clock.
    pub at: i64,
    #[serde(flatten)]
    pub fact: Fact,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "fact", rename_all = "snake_case")]
pub enum Fact {
    /// A job was queued (or queued again).
    Queued {
        id: JobId,
        spec: JobSpec,
        /// When its message was made (its `created_ms`): the job's life from here on.
        #[serde(default)]
        queued_ms: Option<i64>,
    },
    /// A worker took it.
    Started {
        id: JobId,
        spec: JobSpec,
        attempt: u32,
        worker: String,
        /// The delivery it holds (absent in facts written before holders were named).
        #[serde(default)]
        holder: Option<Holder>,
        /// Attempts of this job lost before this one: what decides whether losing this one
        /// fails the job.
        #[serde(default)]
        lost: u32,
        /// When the message was queued: with `attempt`, which message this is (a job queued
        /// again while a copy of it waits has two).
        #[serde(default)]
        queued_ms: Option<i64>,
    },
    /// An attempt ended, and the job is now in `state`.
    Ended {
        id: JobId,
        /// The worker whose attempt ended; `None` when the attempt was lost with its worker
        /// (the worker that noticed is not the one that held it).
        worker: Option<String>,
        /// The attempt that ended: it, and any earlier attempt still shown running (a split
        /// tape planned by one worker and joined by another), are closed. Facts written before
        /// it existed close the running attempts of `worker`.
        #[serde(default)]
        attempt: Option<u32>,
        /// The delivery that ended: its attempt row alone is closed (another copy of the job
        /// may be running under the same number).
        #[serde(default)]
        holder: Option<Holder>,
        /// On the wire as the same words as ever (succeeded, failed, released, lost, cancelled).
        outcome: AttemptOutcome,
        state: JobState,
        /// Attempts counted so far.
        attempts: u32,
        error: Option<String>,
        stderr_tail: Option<String>,
        result: Option<SuccessReport>,
        /// For a job waiting out a retry delay: when it may run again.
        not_before: Option<i64>,
        /// When the message that ended was made: the end of a message older than the job's
        /// latest queueing (a job failed, then queued again) changes nothing of the job.
        #[serde(default)]
        queued_ms: Option<i64>,
    },
    /// A user cancelled these jobs (and the chunks of these tapes).
    Cancelled { ids: Vec<JobId> },
    /// A user put these failed or cancelled jobs back with a fresh attempt budget.
    Retried {
        ids: Vec<JobId>,
        /// When their new messages were made.
        #[serde(default)]
        queued_ms: Option<i64>,
    },
    /// A message on the job queue that is not a job this farm can take (kept in the failed
    /// queue with the reason): listed as a failed job, so it is seen.
    Refused { reason: String },
    /// The worker connection `session` is gone (see `presence`): every attempt taken on it
    /// that has not ended was lost, and the broker hands its message out again. Written by
    /// whoever notices first; writing it twice changes nothing.
    Gone { session: String },
    /// A split tape's attempt waits for its chunks with no delivery held: the end of the
    /// connection it was taken on does not lose it.
    Parked { id: JobId, holder: Holder },
    /// Changes nothing: a process writes one and waits to read it back to know it has read
    /// everything written before.
    Mark,
}

/// One delivery held by a worker: the connection it came on (a `presence` session) and the
/// worker's token for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub session: String,
    pub token: u64,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    id          TEXT PRIMARY KEY,
    spec        TEXT NOT NULL,
    parent      TEXT,
    state       TEXT NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    not_before  INTEGER NOT NULL DEFAULT 0,
    worker      TEXT,
    error       TEXT,
    stderr_tail TEXT,
    result      TEXT,
    created_ms  INTEGER NOT NULL,
    started_ms  INTEGER,
    finished_ms INTEGER,
    queued_ms   INTEGER
);
DROP INDEX IF EXISTS jobs_parent;
CREATE INDEX IF NOT EXISTS jobs_chunks ON jobs (parent) WHERE parent IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_listing ON jobs (state, parent);
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (state, finished_ms);
CREATE INDEX IF NOT EXISTS jobs_retrying ON jobs (not_before) WHERE state = 'queued';
CREATE TABLE IF NOT EXISTS attempts (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id      TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    worker      TEXT NOT NULL,
    started_ms  INTEGER NOT NULL,
    finished_ms INTEGER,
    outcome     TEXT NOT NULL,
    error       TEXT,
    session     TEXT,
    token       INTEGER,
    lost        INTEGER NOT NULL DEFAULT 0,
    queued_ms   INTEGER,
    given       INTEGER
);
CREATE INDEX IF NOT EXISTS attempts_job ON attempts (job_id);
-- The highest fact of each writing process applied to this file, whoever applied it: how a
-- process sharing the file knows its own writes are in (read your own writes).
CREATE TABLE IF NOT EXISTS origins (
    origin INTEGER PRIMARY KEY,
    seq    INTEGER NOT NULL,
    at     INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
";

/// Ids are text in the records, as are the chunks' `parent`; rows are made in queue order.
const LISTING: videofarm_core::listing::Listing = videofarm_core::listing::Listing {
    parent_as_id: "c.parent",
    id_as_parent: "j.id",
    queue_order: "j.rowid",
};

/// The local copy of the records.
pub struct RecordStore {
    conn: Mutex<Connection>,
    budget: Budget,
}

/// Columns added since the first records files, added to a file made before them.
fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    for (table, name, declared) in [
        ("attempts", "session", "TEXT"),
        ("attempts", "token", "INTEGER"),
        ("attempts", "lost", "INTEGER NOT NULL DEFAULT 0"),
        ("attempts", "queued_ms", "INTEGER"),
        ("attempts", "given", "INTEGER"),
        ("jobs", "queued_ms", "INTEGER"),
    ] {
        let columns: Vec<String> = conn
            .prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        if !columns.iter().any(|c| c == name) {
            conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {name} {declared}"))?;
        }
    }
    conn.execute_batch(
        "CREATE INDEX IF NOT EXISTS attempts_held ON attempts (session) WHERE outcome = 'running'",
    )
}

impl RecordStore {
    /// Open (or create) the cache at `path`; `None` keeps it in memory (read from the stream's
    /// start by each process). `budget` judges when losing an attempt fails its job.
    pub fn open(path: Option<&Path>, budget: Budget) -> rusqlite::Result<Self> {
        let conn = match path {
            Some(path) => {
                if let Some(dir) = path.parent() {
                    let _ = std::fs::create_dir_all(dir);
                }
                let conn = Connection::open(path)?;
                conn.pragma_update(None, "journal_mode", "WAL")?;
                conn.pragma_update(None, "synchronous", "NORMAL")?;
                conn.busy_timeout(std::time::Duration::from_secs(10))?;
                conn
            }
            None => Connection::open_in_memory()?,
        };
        conn.execute_batch(SCHEMA)?;
        migrate(&conn)?;
        // A process waits only for its own recent writes: older marks can go.
        let week_ago =
            videofarm_core::Clock::now_ms(&videofarm_core::SystemClock) - 7 * 24 * 3600 * 1000;
        conn.execute("DELETE FROM origins WHERE at < ?1", [week_ago])?;
        Ok(Self {
            conn: Mutex::new(conn),
            budget,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The last stream offset applied, if any.
    pub fn offset(&self) -> rusqlite::Result<Option<u64>> {
        self.lock()
            .query_row("SELECT value FROM meta WHERE key = 'offset'", [], |r| {
                r.get::<_, i64>(0)
            })
            .optional()
            .map(|o| o.map(|o| o as u64))
    }

    /// Apply facts read at their stream offsets (the facts of one message share its offset), in
    /// one transaction; facts at or below the offset already applied (by this process or
    /// another sharing the file) are skipped.
    pub fn apply(&self, facts: &[(u64, Stamped)]) -> rusqlite::Result<()> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let done: Option<i64> = tx
            .query_row("SELECT value FROM meta WHERE key = 'offset'", [], |r| {
                r.get(0)
            })
            .optional()?;
        let mut last = done;
        for (offset, stamped) in facts {
            if done.is_some_and(|d| *offset as i64 <= d) {
                continue;
            }
            apply_one(&tx, stamped, &self.budget)?;
            tx.execute(
                "INSERT INTO origins (origin, seq, at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (origin) DO UPDATE SET seq = max(seq, ?2), at = ?3",
                params![stamped.origin as i64, stamped.seq as i64, stamped.at],
            )?;
            last = Some(*offset as i64);
        }
        if let Some(last) = last {
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('offset', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = ?1",
                [last],
            )?;
        }
        tx.commit()
    }

    /// The highest fact written by `origin` that this file holds (applied by any process).
    pub fn seen(&self, origin: u64) -> rusqlite::Result<u64> {
        self.lock()
            .query_row(
                "SELECT seq FROM origins WHERE origin = ?1",
                [origin as i64],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .map(|s| s.map_or(0, |s| s as u64))
    }

    /// The first message of the stream this copy was read from: its offset and its first fact's
    /// writer and number (a stream made anew under the same name starts with another).
    pub fn origin_of_stream(&self) -> rusqlite::Result<Option<(u64, u64, u64)>> {
        let conn = self.lock();
        let get = |key: &str| -> rusqlite::Result<Option<i64>> {
            conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
                .optional()
        };
        Ok(
            match (
                get("first_offset")?,
                get("first_origin")?,
                get("first_seq")?,
            ) {
                (Some(offset), Some(origin), Some(seq)) => {
                    Some((offset as u64, origin as u64, seq as u64))
                }
                _ => None,
            },
        )
    }

    /// Remember the first message of the stream this copy is read from.
    pub fn set_origin_of_stream(&self, offset: u64, origin: u64, seq: u64) -> rusqlite::Result<()> {
        let conn = self.lock();
        for (key, value) in [
            ("first_offset", offset as i64),
            ("first_origin", origin as i64),
            ("first_seq", seq as i64),
        ] {
            conn.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = ?2",
                params![key, value],
            )?;
        }
        Ok(())
    }

    /// The stream this copy was read from is gone and another has its name (a broker
    /// reinstalled, the farm deleted and made again): forget where this copy was in the old
    /// one, and keep what it read. A job the old stream left unfinished has no message any
    /// more: it is failed with the reason (and can be retried by its id); its running
    /// attempts are lost.
    pub fn new_stream(&self, now: i64) -> rusqlite::Result<()> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        tx.execute_batch("DELETE FROM origins; DELETE FROM meta;")?;
        tx.execute(
            "UPDATE attempts SET outcome = 'lost', finished_ms = ?1, error = ?2
             WHERE outcome IN ('running', 'publishing')",
            params![now, STREAM_MADE_ANEW],
        )?;
        tx.execute(
            "UPDATE jobs SET state = 'failed', finished_ms = ?1, error = ?2
             WHERE state IN ('queued', 'running')",
            params![now, STREAM_MADE_ANEW],
        )?;
        tx.commit()
    }

    /// What a job is known as, if it is known.
    pub fn state(&self, id: &JobId) -> rusqlite::Result<Option<(JobState, JobSpec)>> {
        self.lock()
            .query_row("SELECT state, spec FROM jobs WHERE id = ?1", [&id.0], |r| {
                Ok((state(r, "state")?, spec(r)?))
            })
            .optional()
    }

    /// How attempt `attempt` given to the message of job `id` queued at `queued_ms` ended
    /// (running while it runs); `None` when no worker began it.
    pub fn attempt_outcome(
        &self,
        id: &JobId,
        queued_ms: i64,
        attempt: u32,
    ) -> rusqlite::Result<Option<AttemptOutcome>> {
        let outcome: Option<String> = self
            .lock()
            .query_row(
                "SELECT outcome FROM attempts WHERE job_id = ?1 AND queued_ms = ?2 AND given = ?3
                 ORDER BY seq DESC LIMIT 1",
                params![id.0, queued_ms, attempt],
                |r| r.get(0),
            )
            .optional()?;
        Ok(outcome.and_then(|o| o.parse().ok()))
    }

    /// The sessions (see `presence`) of attempts still running, at most `limit` of them.
    pub fn running_sessions(&self, limit: usize) -> rusqlite::Result<Vec<String>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT DISTINCT session FROM attempts
             WHERE outcome = 'running' AND session IS NOT NULL LIMIT ?1",
        )?;
        let sessions = stmt
            .query_map([limit as i64], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>();
        sessions
    }

    pub fn counts(&self, now: i64) -> rusqlite::Result<Counts> {
        let conn = self.lock();
        // A split tape is one job: its chunks are not counted, and while any of them encodes
        // the tape counts as running.
        let mut counts = Counts::default();
        let mut stmt = conn.prepare_cached(LISTING.count_by_state())?;
        let rows = stmt.query_map([], |r| Ok((state(r, "state")?, r.get::<_, i64>(1)?)))?;
        for row in rows {
            let (state, n) = row?;
            counts.add(state, n as u64);
        }
        let busy: i64 = conn.query_row(&LISTING.count_busy_tapes(), [], |r| r.get(0))?;
        // Two statements, no shared snapshot: never below zero.
        counts.queued = counts.queued.saturating_sub(busy as u64);
        counts.running += busy as u64;
        counts.retrying =
            conn.query_row(&LISTING.count_retrying(), [now], |r| r.get::<_, i64>(0))? as u64;
        Ok(counts)
    }

    pub fn jobs(&self, filter: &JobFilter) -> rusqlite::Result<Vec<JobRecord>> {
        let conn = self.lock();
        let ids = filter
            .ids
            .as_ref()
            .map(|ids| serde_json::to_string(&ids.iter().map(|i| &i.0).collect::<Vec<_>>()))
            .transpose()
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        let mut stmt = conn.prepare_cached(&LISTING.select(filter))?;
        let records: Vec<JobRecord> = stmt
            .query_map(
                params![
                    ids,
                    filter.limit.map_or(-1, i64::from),
                    filter.offset,
                    filter.finished_since
                ],
                |r| {
                    let mut record = self.read(r)?;
                    record.state = state(r, "shown")?;
                    Ok(record)
                },
            )?
            .collect::<rusqlite::Result<_>>()?;
        Ok(records)
    }

    /// See [`videofarm_core::Records::timeline`].
    pub fn timeline(
        &self,
        now: i64,
        bucket_ms: i64,
        count: usize,
    ) -> rusqlite::Result<Vec<Bucket>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(TIMELINE_ROWS)?;
        let rows: Vec<TimelineRow> = stmt
            .query_map(params![now - bucket_ms * count as i64, now], |r| {
                Ok(TimelineRow {
                    created_ms: r.get(0)?,
                    finished_ms: r.get(1)?,
                    state: state(r, "state")?,
                    bytes: r.get::<_, Option<i64>>(3)?.map(|b| b.max(0) as u64),
                    media_s: r.get(4)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(timeline(rows, now, bucket_ms, count))
    }

    pub fn history(&self, id: &JobId) -> rusqlite::Result<Vec<AttemptRecord>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT attempt, worker, started_ms, finished_ms, outcome, error FROM attempts
             WHERE job_id = ?1 ORDER BY seq",
        )?;
        let rows = stmt
            .query_map([&id.0], |r| {
                Ok(AttemptRecord {
                    attempt: r.get(0)?,
                    worker: r.get(1)?,
                    started_ms: r.get(2)?,
                    finished_ms: r.get(3)?,
                    outcome: {
                        let text: String = r.get(4)?;
                        text.parse().map_err(|e: String| {
                            rusqlite::Error::FromSqlConversionFailure(
                                4,
                                rusqlite::types::Type::Text,
                                e.into(),
                            )
                        })?
                    },
                    error: r.get(5)?,
                })
            })?
            .collect();
        rows
    }

    fn read(&self, row: &Row<'_>) -> rusqlite::Result<JobRecord> {
        let result: Option<SuccessReport> = row
            .get::<_, Option<String>>("result")?
            .and_then(|r| serde_json::from_str(&r).ok());
        Ok(JobRecord {
            id: JobId(row.get("id")?),
            state: state(row, "state")?,
            spec: spec(row)?,
            attempts: row.get("attempts")?,
            max_attempts: self.budget.max_attempts,
            error: row.get("error")?,
            stderr_tail: row.get("stderr_tail")?,
            worker: row.get("worker")?,
            progress: result.as_ref().map(SuccessReport::final_progress),
            result,
            created_ms: row.get("created_ms")?,
            started_ms: row.get("started_ms")?,
            finished_ms: row.get("finished_ms")?,
            waiting_for: None,
        })
    }
}

fn state(row: &Row<'_>, column: &str) -> rusqlite::Result<JobState> {
    let text: String = row.get(column)?;
    text.parse().map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            format!("unknown job state {text:?}").into(),
        )
    })
}

fn spec(row: &Row<'_>) -> rusqlite::Result<JobSpec> {
    let text: String = row.get("spec")?;
    serde_json::from_str(&text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into())
    })
}

fn apply_one(
    tx: &rusqlite::Transaction<'_>,
    stamped: &Stamped,
    budget: &Budget,
) -> rusqlite::Result<()> {
    let at = stamped.at;
    match &stamped.fact {
        Fact::Queued {
            id,
            spec,
            queued_ms,
        } => queued(tx, id, spec, *queued_ms, at),
        Fact::Started { .. } => started(tx, &stamped.fact, at),
        Fact::Ended { outcome, .. } if *outcome == AttemptOutcome::Cancelled => {
            // The cancel's own fact, recorded before any holder could hear of it, closed the
            // attempt and set the job's state; the holder's end says nothing more, and must
            // not touch a copy of the job queued (and perhaps started) since.
            Ok(())
        }
        Fact::Ended { .. } => ended(tx, &stamped.fact, at),
        Fact::Cancelled { ids } => cancelled(tx, ids, at),
        Fact::Retried { ids, queued_ms } => {
            for id in ids {
                tx.execute(
                    "UPDATE jobs SET state = 'queued', attempts = 0, not_before = 0, finished_ms = NULL,
                        queued_ms = coalesce(?2, queued_ms)
                     WHERE id = ?1 AND state IN ('failed', 'cancelled')",
                    params![id.0, queued_ms],
                )?;
            }
            Ok(())
        }
        Fact::Refused { reason } => refused(tx, stamped, reason),
        Fact::Gone { session } => gone(tx, session, budget, at),
        Fact::Parked { id, holder } => {
            tx.execute(
                "UPDATE attempts SET session = NULL, token = NULL
                 WHERE job_id = ?1 AND session = ?2 AND token = ?3 AND outcome = 'running'",
                params![id.0, holder.session, holder.token as i64],
            )?;
            Ok(())
        }
        Fact::Mark => Ok(()),
    }
}

fn queued(
    tx: &rusqlite::Transaction<'_>,
    id: &JobId,
    spec: &JobSpec,
    queued_ms: Option<i64>,
    at: i64,
) -> rusqlite::Result<()> {
    // A copy queued while the job runs does not make it look waiting (nor start its life).
    tx.execute(
        "INSERT INTO jobs (id, spec, parent, state, created_ms, queued_ms)
         VALUES (?1, ?2, ?3, 'queued', ?4, ?5)
         ON CONFLICT (id) DO UPDATE SET spec = ?2, state = 'queued', attempts = 0, not_before = 0,
            error = NULL, stderr_tail = NULL, result = NULL, finished_ms = NULL, created_ms = ?4,
            queued_ms = ?5
         WHERE state != 'running'",
        params![
            id.0,
            json(spec),
            spec.parent.as_ref().map(|p| &p.0),
            at,
            queued_ms
        ],
    )?;
    Ok(())
}

fn started(tx: &rusqlite::Transaction<'_>, fact: &Fact, at: i64) -> rusqlite::Result<()> {
    let Fact::Started {
        id,
        spec,
        attempt,
        worker,
        holder,
        lost,
        queued_ms,
    } = fact
    else {
        return Ok(());
    };
    tx.execute(
        "INSERT INTO jobs (id, spec, parent, state, attempts, worker, created_ms, started_ms)
         VALUES (?1, ?2, ?3, 'running', ?4, ?5, ?6, ?6)
         ON CONFLICT (id) DO UPDATE SET state = 'running', attempts = ?4, worker = ?5,
            started_ms = ?6, finished_ms = NULL, not_before = 0",
        params![
            id.0,
            json(spec),
            spec.parent.as_ref().map(|p| &p.0),
            attempt,
            worker,
            at
        ],
    )?;
    // Another copy of the job (queued again while it ran) carries its own count: its row is
    // numbered after the attempt still running, so the history never shows one number twice;
    // `given` keeps the message's own number.
    tx.execute(
        "INSERT INTO attempts (job_id, attempt, worker, started_ms, outcome, session, token, lost,
                               queued_ms, given)
         VALUES (?1, max(?2, 1 + coalesce((SELECT max(attempt) FROM attempts
                                           WHERE job_id = ?1 AND outcome = 'running'), 0)),
                 ?3, ?4, 'running', ?5, ?6, ?7, ?8, ?2)",
        params![
            id.0,
            attempt,
            worker,
            at,
            holder.as_ref().map(|h| &h.session),
            holder.as_ref().map(|h| h.token as i64),
            lost,
            queued_ms
        ],
    )?;
    Ok(())
}

fn ended(tx: &rusqlite::Transaction<'_>, fact: &Fact, at: i64) -> rusqlite::Result<()> {
    let Fact::Ended {
        id,
        worker,
        attempt,
        holder,
        outcome,
        state,
        attempts,
        error,
        stderr_tail,
        result,
        not_before,
        queued_ms,
    } = fact
    else {
        return Ok(());
    };
    let finished = state.is_terminal().then_some(at);
    // A copy that found the job already done (queued again while it ran) keeps the result
    // and the end of the encode that did the work.
    let duplicate = result.as_ref().is_some_and(|r| r.already_done);
    tx.execute(
        "UPDATE jobs SET state = ?2, attempts = ?3, error = ?4, stderr_tail = ?5,
            result = coalesce(?6, result), finished_ms = ?7, not_before = ?8,
            worker = coalesce(?9, worker)
         WHERE id = ?1 AND NOT (state = 'cancelled' AND ?2 = 'queued')
            AND NOT (?10 AND state = 'succeeded' AND result IS NOT NULL)
            AND NOT (?11 IS NOT NULL AND queued_ms IS NOT NULL AND ?11 < queued_ms)",
        params![
            id.0,
            state.as_str(),
            attempts,
            error,
            stderr_tail,
            result.as_ref().map(json),
            finished,
            not_before.unwrap_or(0),
            worker,
            duplicate,
            queued_ms
        ],
    )?;
    // The holder's own row when it is named; else by number, not by worker: a later attempt
    // (already started by a fast worker when a lost one is recorded) stays open. A tape's
    // parked row (planned by one worker, joined by another) has no holder and closes by number.
    tx.execute(
        "UPDATE attempts SET outcome = ?2, finished_ms = ?3, error = ?4
         WHERE job_id = ?1 AND outcome = 'running'
            AND (CASE WHEN ?7 IS NOT NULL THEN (session = ?7 AND token = ?8)
                          OR (session IS NULL AND attempt <= ?6)
                      WHEN ?6 IS NULL THEN ?5 IS NULL OR worker = ?5
                      ELSE attempt <= ?6 END)",
        params![
            id.0,
            outcome.as_str(),
            at,
            error,
            worker,
            attempt,
            holder.as_ref().map(|h| &h.session),
            holder.as_ref().map(|h| h.token as i64)
        ],
    )?;
    Ok(())
}

fn cancelled(tx: &rusqlite::Transaction<'_>, ids: &[JobId], at: i64) -> rusqlite::Result<()> {
    for id in ids {
        // An attempt whose worker died is never ended by anyone once the job is cancelled:
        // the cancel closes it (a running worker's end finds it closed).
        tx.execute(
            "UPDATE attempts SET outcome = 'cancelled', finished_ms = ?2
             WHERE outcome = 'running' AND (job_id = ?1
                OR job_id IN (SELECT id FROM jobs WHERE parent = ?1))",
            params![id.0, at],
        )?;
        tx.execute(
            "UPDATE jobs SET state = 'cancelled', finished_ms = ?2, error = 'cancelled by the user'
             WHERE id = ?1 AND state IN ('queued', 'running')",
            params![id.0, at],
        )?;
        tx.execute(
            "UPDATE jobs SET state = 'cancelled', finished_ms = ?2, error = 'its tape was cancelled'
             WHERE parent = ?1 AND state IN ('queued', 'running')",
            params![id.0, at],
        )?;
    }
    Ok(())
}

fn refused(
    tx: &rusqlite::Transaction<'_>,
    stamped: &Stamped,
    reason: &str,
) -> rusqlite::Result<()> {
    let spec = JobSpec {
        input: "?".into(),
        output: "?".into(),
        profile: "?".into(),
        ..Default::default()
    };
    tx.execute(
        "INSERT OR IGNORE INTO jobs (id, spec, state, error, created_ms, finished_ms)
         VALUES (?1, ?2, 'failed', ?3, ?4, ?4)",
        params![
            format!("{REFUSAL_PREFIX}{:x}-{}", stamped.origin, stamped.seq),
            json(&spec),
            reason,
            stamped.at
        ],
    )?;
    Ok(())
}

/// Every attempt still running on `session` was lost: its job is shown waiting for the
/// broker to hand it out again (or failed, when that was its last loss allowed, as the
/// worker that receives it will record too). A job already moved on to a later attempt is
/// left as it is.
fn gone(
    tx: &rusqlite::Transaction<'_>,
    session: &str,
    budget: &Budget,
    at: i64,
) -> rusqlite::Result<()> {
    let lost: Vec<(String, u32, u32, String)> = tx
        .prepare_cached(
            "SELECT job_id, attempt, lost, worker FROM attempts
             WHERE session = ?1 AND outcome = 'running'",
        )?
        .query_map([session], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    for (id, attempt, lost_before, worker) in lost {
        let lost = lost_before + 1;
        let failed = budget.lost_too_often(lost);
        let error = lost_reason(
            attempt,
            lost,
            Some(&worker),
            failed,
            LostCause::ConnectionGone,
        );
        tx.execute(
            "UPDATE jobs SET state = ?3, error = ?4, finished_ms = ?5, not_before = 0
             WHERE id = ?1 AND state = 'running' AND attempts = ?2",
            params![
                id,
                attempt,
                if failed { "failed" } else { "queued" },
                error,
                failed.then_some(at)
            ],
        )?;
        tx.execute(
            "UPDATE attempts SET outcome = 'lost', finished_ms = ?3, error = ?4
             WHERE job_id = ?1 AND session = ?2 AND outcome = 'running'",
            params![id, session, at, error],
        )?;
    }
    Ok(())
}

/// Why a job the old records stream left unfinished is failed.
const STREAM_MADE_ANEW: &str = "the farm's records on the broker were made anew (the broker reinstalled, or the farm deleted) before this job finished; whether it still waits is unknown: retry it to queue it again";

/// How the records name a refused message: it is listed among the failed jobs, but it is no
/// job and can never be retried into one.
const REFUSAL_PREFIX: &str = "refused-";

/// True when `id` names a refused message rather than a job.
pub(crate) fn is_refusal(id: &JobId) -> bool {
    id.0.starts_with(REFUSAL_PREFIX)
}

/// A value stored as JSON text.
fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str) -> JobSpec {
        JobSpec {
            input: format!("/m/{name}.mpg").into(),
            output: format!("/m/{name}.mkv").into(),
            profile: "archive".into(),
            key: name.into(),
            ..Default::default()
        }
    }

    fn budget() -> Budget {
        videofarm_core::QueueSettings::default().budget()
    }

    fn fact(seq: u64, fact: Fact) -> (u64, Stamped) {
        (
            seq,
            Stamped {
                origin: 1,
                seq,
                at: seq as i64 * 1000,
                fact,
            },
        )
    }

    #[test]
    fn facts_make_records_and_a_replay_changes_nothing() {
        let store = RecordStore::open(None, budget()).unwrap();
        let a = JobId("a".into());
        let facts = vec![
            fact(
                0,
                Fact::Queued {
                    id: a.clone(),
                    spec: spec("a"),
                    queued_ms: None,
                },
            ),
            fact(
                1,
                Fact::Started {
                    id: a.clone(),
                    spec: spec("a"),
                    attempt: 1,
                    worker: "w1".into(),
                    holder: None,
                    lost: 0,
                    queued_ms: None,
                },
            ),
            fact(
                2,
                Fact::Ended {
                    id: a.clone(),
                    worker: Some("w1".into()),
                    attempt: Some(1),
                    holder: None,
                    outcome: AttemptOutcome::Succeeded,
                    state: JobState::Succeeded,
                    attempts: 1,
                    error: None,
                    stderr_tail: None,
                    result: Some(SuccessReport::default()),
                    not_before: None,
                    queued_ms: None,
                },
            ),
        ];
        store.apply(&facts).unwrap();
        // The same facts read again (another process, a reconnect) are skipped.
        store.apply(&facts).unwrap();
        let counts = store.counts(0).unwrap();
        assert_eq!((counts.succeeded, counts.queued, counts.running), (1, 0, 0));
        let history = store.history(&a).unwrap();
        assert_eq!(history.len(), 1);
        assert_eq!(history[0].outcome, AttemptOutcome::Succeeded);
        assert_eq!(store.offset().unwrap(), Some(2));
        assert_eq!(
            store.seen(1).unwrap(),
            2,
            "the writer's facts are known as applied"
        );
        assert_eq!(store.seen(7).unwrap(), 0);
        let jobs = store.jobs(&JobFilter::default()).unwrap();
        assert_eq!(jobs[0].spec.input, std::path::PathBuf::from("/m/a.mpg"));
        assert_eq!(jobs[0].finished_ms, Some(2000));
    }

    fn started(seq: u64, id: &JobId, attempt: u32, session: &str, lost: u32) -> (u64, Stamped) {
        fact(
            seq,
            Fact::Started {
                id: id.clone(),
                spec: spec(&id.0),
                attempt,
                worker: format!("w-{session}"),
                holder: Some(Holder {
                    session: session.into(),
                    token: seq,
                }),
                lost,
                queued_ms: Some(0),
            },
        )
    }

    fn succeeded(
        seq: u64,
        id: &JobId,
        holder: (&str, u64),
        report: SuccessReport,
    ) -> (u64, Stamped) {
        fact(
            seq,
            Fact::Ended {
                id: id.clone(),
                worker: Some(format!("w-{}", holder.0)),
                attempt: Some(1),
                holder: Some(Holder {
                    session: holder.0.into(),
                    token: holder.1,
                }),
                outcome: AttemptOutcome::Succeeded,
                state: JobState::Succeeded,
                attempts: 1,
                error: None,
                stderr_tail: None,
                result: Some(report),
                not_before: None,
                queued_ms: None,
            },
        )
    }

    /// The same file queued again while it runs is a second message with its own count: its
    /// "already done" neither closes nor overwrites the encode that did the work (before, the
    /// copy's result replaced the real one, frames 0, and the history showed attempt 1 twice).
    #[test]
    fn a_copy_that_finds_the_job_done_keeps_the_real_result_and_its_own_row() {
        let store = RecordStore::open(None, budget()).unwrap();
        let a = JobId("a".into());
        let real = SuccessReport {
            frames: 300,
            ..Default::default()
        };
        let copy = SuccessReport {
            already_done: true,
            ..Default::default()
        };
        store
            .apply(&[
                fact(
                    0,
                    Fact::Queued {
                        id: a.clone(),
                        spec: spec("a"),
                        queued_ms: None,
                    },
                ),
                started(1, &a, 1, "s1", 0),
                started(2, &a, 1, "s2", 0),
                succeeded(3, &a, ("s1", 1), real),
            ])
            .unwrap();
        let history = store.history(&a).unwrap();
        let numbers: Vec<u32> = history.iter().map(|h| h.attempt).collect();
        assert_eq!(numbers, [1, 2], "one number per attempt");
        assert_eq!(history[0].outcome, AttemptOutcome::Succeeded);
        assert_eq!(
            history[1].outcome,
            AttemptOutcome::Running,
            "the copy still runs"
        );
        store.apply(&[succeeded(4, &a, ("s2", 2), copy)]).unwrap();
        let job = &store.jobs(&JobFilter::default()).unwrap()[0];
        assert_eq!(job.state, JobState::Succeeded);
        let result = job.result.as_ref().unwrap();
        assert_eq!((result.frames, result.already_done), (300, false));
        assert_eq!(job.finished_ms, Some(3000), "the real encode's end");
        assert_eq!(
            store.history(&a).unwrap()[1].outcome,
            AttemptOutcome::Succeeded
        );
    }

    /// A connection known gone loses the attempts still running on it, once, and leaves a
    /// job that moved on to a later attempt alone.
    #[test]
    fn a_gone_session_loses_its_running_attempts_and_nothing_else() {
        let budget = Budget {
            max_lost: 2,
            ..budget()
        };
        let store = RecordStore::open(None, budget).unwrap();
        let (a, b, c) = (JobId("a".into()), JobId("b".into()), JobId("c".into()));
        let gone = |seq| {
            fact(
                seq,
                Fact::Gone {
                    session: "s1".into(),
                },
            )
        };
        store
            .apply(&[
                started(1, &a, 1, "s1", 0),
                started(2, &b, 2, "s1", 1),
                started(3, &c, 1, "s2", 0),
                gone(4),
            ])
            .unwrap();
        let state = |id: &JobId| store.state(id).unwrap().unwrap().0;
        assert_eq!(state(&a), JobState::Queued, "handed out again");
        assert_eq!(
            state(&b),
            JobState::Failed,
            "its second loss was one too many"
        );
        assert_eq!(state(&c), JobState::Running, "another connection's attempt");
        let jobs = store.jobs(&JobFilter::default()).unwrap();
        let error = |id: &JobId| jobs.iter().find(|j| &j.id == id).unwrap().error.clone();
        assert!(
            error(&a).unwrap().contains("attempt 1 was lost"),
            "{:?}",
            error(&a)
        );
        assert!(
            error(&b).unwrap().contains("lost 2 times"),
            "{:?}",
            error(&b)
        );
        assert!(
            error(&a).unwrap().contains("worker w-s1"),
            "{:?}",
            error(&a)
        );
        assert_eq!(store.history(&a).unwrap()[0].outcome, AttemptOutcome::Lost);
        assert!(store.running_sessions(10).unwrap() == ["s2"]);
        // Taken again on another connection; a late word of the old one changes nothing.
        store.apply(&[started(5, &a, 2, "s3", 1), gone(6)]).unwrap();
        assert_eq!(state(&a), JobState::Running);
        let history = store.history(&a).unwrap();
        assert_eq!(history.len(), 2);
        assert_eq!(history[1].outcome, AttemptOutcome::Running);
    }

    /// A job lost too often and queued again: the old message's end, recorded after the new
    /// queueing (the broker redelivered it late), leaves the job queued (found by the long
    /// model run: it showed failed while its new message waited).
    #[test]
    fn the_end_of_a_message_older_than_the_jobs_queueing_changes_nothing() {
        let store = RecordStore::open(None, budget()).unwrap();
        let a = JobId("a".into());
        let queued = |seq, queued_ms| {
            fact(
                seq,
                Fact::Queued {
                    id: a.clone(),
                    spec: spec("a"),
                    queued_ms: Some(queued_ms),
                },
            )
        };
        let lost_for_good = fact(
            3,
            Fact::Ended {
                id: a.clone(),
                worker: None,
                attempt: Some(2),
                holder: None,
                outcome: AttemptOutcome::Lost,
                state: JobState::Failed,
                attempts: 2,
                error: Some("lost 2 times".into()),
                stderr_tail: None,
                result: None,
                not_before: None,
                queued_ms: Some(100),
            },
        );
        store
            .apply(&[queued(1, 100), queued(2, 200), lost_for_good])
            .unwrap();
        assert_eq!(store.state(&a).unwrap().unwrap().0, JobState::Queued);
    }
}
