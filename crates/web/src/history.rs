//! A job history for farms on RabbitMQ, which keeps no record of finished jobs: `serve` follows
//! the lifecycle events and keeps what it sees in an SQLite file of its own, so finished jobs,
//! attempts and the metrics' histograms survive a restart of `serve`.

use rusqlite::{params, Connection, OptionalExtension, Row};
use std::path::Path;
use std::sync::Mutex;
use videofarm_core::pathser::{from_bytes, to_bytes};
use videofarm_core::{
    AttemptRecord, Clock, Event, JobId, JobRecord, JobSpec, JobState, SuccessReport, SystemClock,
};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    id          TEXT PRIMARY KEY,
    input       BLOB NOT NULL,
    output      BLOB NOT NULL,
    profile     TEXT NOT NULL,
    state       TEXT NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    worker      TEXT,
    error       TEXT,
    stderr_tail TEXT,
    result      TEXT,
    created_ms  INTEGER NOT NULL,
    started_ms  INTEGER,
    finished_ms INTEGER
);
CREATE TABLE IF NOT EXISTS attempts (
    job_id      TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    worker      TEXT NOT NULL,
    started_ms  INTEGER NOT NULL,
    finished_ms INTEGER,
    outcome     TEXT NOT NULL,
    error       TEXT,
    PRIMARY KEY (job_id, attempt, worker, started_ms)
);
";

/// The history file.
pub struct History {
    conn: Mutex<Connection>,
}

impl History {
    pub fn open(path: &Path) -> rusqlite::Result<Self> {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.execute_batch(SCHEMA)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    /// Record what an event says about a job.
    pub fn record(&self, event: &Event) -> rusqlite::Result<()> {
        let now = SystemClock.now_ms();
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        match event {
            Event::JobQueued { id, input, profile } => {
                conn.execute(
                    "INSERT INTO jobs (id, input, output, profile, state, created_ms) VALUES (?1, ?2, x'', ?3, 'queued', ?4)
                     ON CONFLICT (id) DO UPDATE SET state = 'queued', error = NULL, finished_ms = NULL",
                    params![id.0, to_bytes(input), profile, now],
                )?;
            }
            Event::JobStarted {
                id,
                worker,
                input,
                output,
                profile,
                attempt,
                ..
            } => {
                conn.execute(
                    "INSERT INTO jobs (id, input, output, profile, state, attempts, worker, created_ms, started_ms)
                     VALUES (?1, ?2, ?3, ?4, 'running', ?5, ?6, ?7, ?7)
                     ON CONFLICT (id) DO UPDATE SET output = ?3, state = 'running', attempts = ?5, worker = ?6, started_ms = ?7",
                    params![id.0, to_bytes(input), to_bytes(output), profile, attempt, worker, now],
                )?;
                conn.execute(
                    "INSERT OR IGNORE INTO attempts (job_id, attempt, worker, started_ms, outcome) VALUES (?1, ?2, ?3, ?4, 'running')",
                    params![id.0, attempt, worker, now],
                )?;
            }
            Event::JobSucceeded { id, worker, report } => {
                conn.execute(
                    "UPDATE jobs SET state = 'succeeded', worker = ?2, result = ?3, error = NULL, stderr_tail = NULL, finished_ms = ?4 WHERE id = ?1",
                    params![id.0, worker, serde_json::to_string(report).unwrap_or_default(), now],
                )?;
                end_attempt(&conn, id, worker, "succeeded", None, now)?;
            }
            Event::JobFailed {
                id,
                worker,
                failure,
                ..
            } => {
                // Whether it is retried is the queue's call; the failed queue says which failed for good.
                conn.execute(
                    "UPDATE jobs SET state = 'queued', error = ?2, stderr_tail = ?3 WHERE id = ?1",
                    params![id.0, failure.reason, failure.stderr_tail],
                )?;
                end_attempt(&conn, id, worker, "failed", Some(&failure.reason), now)?;
            }
            Event::JobReleased { id, worker } => {
                conn.execute(
                    "UPDATE jobs SET state = 'queued' WHERE id = ?1",
                    params![id.0],
                )?;
                end_attempt(&conn, id, worker, "released", None, now)?;
            }
            Event::JobLost { id, worker, reason } => {
                conn.execute(
                    "UPDATE jobs SET state = 'queued' WHERE id = ?1 AND state = 'running'",
                    params![id.0],
                )?;
                end_attempt(&conn, id, worker, "lost", Some(reason), now)?;
            }
            Event::JobProgress { .. }
            | Event::WorkerOnline { .. }
            | Event::WorkerOffline { .. } => {}
        }
        Ok(())
    }

    /// Finished jobs, newest first (at most `limit`).
    pub fn succeeded(&self, limit: usize) -> rusqlite::Result<Vec<JobRecord>> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let mut stmt = conn.prepare(
            "SELECT * FROM jobs WHERE state = 'succeeded' ORDER BY finished_ms DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit as i64], read)?.collect();
        rows
    }

    pub fn job(&self, id: &JobId) -> rusqlite::Result<Option<JobRecord>> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        conn.query_row("SELECT * FROM jobs WHERE id = ?1", [&id.0], read)
            .optional()
    }

    pub fn attempts(&self, id: &JobId) -> rusqlite::Result<Vec<AttemptRecord>> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let mut stmt = conn.prepare(
            "SELECT attempt, worker, started_ms, finished_ms, outcome, error FROM attempts WHERE job_id = ?1 ORDER BY started_ms",
        )?;
        let rows = stmt
            .query_map([&id.0], |r| {
                Ok(AttemptRecord {
                    attempt: r.get(0)?,
                    worker: r.get(1)?,
                    started_ms: r.get(2)?,
                    finished_ms: r.get(3)?,
                    outcome: r.get(4)?,
                    error: r.get(5)?,
                })
            })?
            .collect();
        rows
    }
}

fn end_attempt(
    conn: &Connection,
    id: &JobId,
    worker: &str,
    outcome: &str,
    error: Option<&str>,
    now: i64,
) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE attempts SET finished_ms = ?4, outcome = ?3, error = ?5
         WHERE job_id = ?1 AND worker = ?2 AND outcome = 'running'",
        params![id.0, worker, outcome, now, error],
    )?;
    Ok(())
}

fn read(row: &Row<'_>) -> rusqlite::Result<JobRecord> {
    let state: String = row.get("state")?;
    let result: Option<SuccessReport> = row
        .get::<_, Option<String>>("result")?
        .and_then(|r| serde_json::from_str(&r).ok());
    Ok(JobRecord {
        id: JobId(row.get("id")?),
        state: state.parse().unwrap_or(JobState::Queued),
        spec: JobSpec {
            input: from_bytes(row.get("input")?),
            output: from_bytes(row.get("output")?),
            profile: row.get("profile")?,
            key: String::new(),
            overwrite: false,
            priority: 0,
            input_size: 0,
            parent: None,
            split: Default::default(),
            chunk: None,
        },
        attempts: row.get("attempts")?,
        max_attempts: 0,
        error: row.get("error")?,
        stderr_tail: row.get("stderr_tail")?,
        worker: row.get("worker")?,
        progress: result.as_ref().map(SuccessReport::final_progress),
        result,
        created_ms: row.get("created_ms")?,
        started_ms: row.get("started_ms")?,
        finished_ms: row.get("finished_ms")?,
    })
}
