//! The farm's records on RabbitMQ: what happened to every job, kept durably on the broker and
//! read back into a local SQLite cache.
//!
//! The broker forgets a message once it is acknowledged, so every change of a job's state is
//! also written as a [`Fact`] to a durable stream (`PREFIX.records`, `x-queue-type: stream`),
//! confirmed by the broker *before* the step it describes is acknowledged. Any process that
//! needs the records (`status`, `jobs`, the dashboard) follows the stream into a [`RecordStore`]
//! (an SQLite file that remembers the last offset it applied), so jobs that finished while
//! nothing watched are there too, after any restart of anything.

mod apply;

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Mutex;
use videofarm_core::lifecycle::Budget;
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
    /// A watch's list of problems now (empty when all is well again): replaces its last one.
    Watched {
        report: videofarm_core::watching::WatchReport,
    },
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
    /// Beside a file: the lock its one follower holds (see [`RecordStore::lead`]).
    follow_lock: Option<(std::path::PathBuf, std::ffi::OsString)>,
}

/// This process follows the stream into the file while it holds this (see
/// [`RecordStore::lead`]); dropping it lets another process sharing the file take over.
pub struct Lead {
    _lock: Option<std::fs::File>,
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
                videofarm_queue_sqlite::shared_file::open(path, std::time::Duration::from_secs(10))?
            }
            None => Connection::open_in_memory()?,
        };
        // Never the database file itself: closing any other descriptor of it would drop
        // SQLite's own locks on it in this process.
        let follow_lock = path.map(|path| {
            let mut name = path.file_name().unwrap_or_default().to_owned();
            name.push(".follow");
            let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
            (dir.unwrap_or(Path::new(".")).to_owned(), name)
        });
        conn.execute_batch(SCHEMA)?;
        conn.execute_batch(videofarm_core::watching::TABLE)?;
        migrate(&conn)?;
        // A process waits only for its own recent writes: older marks can go.
        let week_ago =
            videofarm_core::Clock::now_ms(&videofarm_core::SystemClock) - 7 * 24 * 3600 * 1000;
        conn.execute("DELETE FROM origins WHERE at < ?1", [week_ago])?;
        Ok(Self {
            conn: Mutex::new(conn),
            budget,
            follow_lock,
        })
    }

    /// Whether this process is the one to follow the stream into this file: of the processes
    /// sharing it (the workers, `serve` and commands of one machine), one follows and the
    /// others read what it applies. `Some` while this process holds the lock beside the file
    /// (an exclusive `flock`, dropped with the process however it ends); `None` when another
    /// holds it. A copy in memory is this process's alone.
    pub fn lead(&self) -> std::io::Result<Option<Lead>> {
        let Some((dir, name)) = &self.follow_lock else {
            return Ok(Some(Lead { _lock: None }));
        };
        let file = videofarm_core::confine::fs::open_own(dir, name, true)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(Lead { _lock: Some(file) })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
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
            apply::apply_one(&tx, stamped, &self.budget)?;
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
             WHERE outcome = 'running'",
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

    /// The watches whose last list has problems.
    pub fn watch_problems(&self) -> rusqlite::Result<Vec<videofarm_core::watching::WatchReport>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(videofarm_core::watching::LIST)?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        let mut reports = Vec::new();
        for row in rows {
            reports.extend(videofarm_core::watching::read(&row?));
        }
        Ok(reports)
    }

    pub fn jobs(&self, filter: &JobFilter) -> rusqlite::Result<Vec<JobRecord>> {
        let conn = self.lock();
        let ids = filter
            .ids
            .as_ref()
            .map(|ids| serde_json::to_string(&ids.iter().map(|i| &i.0).collect::<Vec<_>>()))
            .transpose()
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        let (limit, offset, since) = videofarm_core::listing::Listing::page(filter);
        let mut stmt = conn.prepare_cached(&LISTING.select(filter))?;
        let records: Vec<JobRecord> = stmt
            .query_map(params![ids, limit, offset, since], |r| {
                let mut record = self.read(r)?;
                record.state = state(r, "shown")?;
                Ok(record)
            })?
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
mod tests;
