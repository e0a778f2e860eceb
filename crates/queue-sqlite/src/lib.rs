//! The embedded default queue: one SQLite file that every videofarm process on the machine
//! shares (`enqueue` in one terminal, `worker` in another), with the lease and fencing contract
//! of [`videofarm_core::Queue`].
//!
//! - WAL mode and a busy timeout let several processes use the file at once.
//! - Every state change is one `BEGIN IMMEDIATE` transaction, so two workers can never lease
//!   the same job, and a crash leaves the file consistent.
//! - A job's `token` grows with every lease; heartbeats, publishes and finishes must carry the
//!   current one.
//! - Expired leases are reaped lazily by whoever asks next (a lease or a read), so no
//!   background process is needed.
//!
//! Layout: [`schema`] holds the tables, `queue_impl` the [`Queue`] operations, this file the
//! connection, row readers and the lease, renew and reap steps they share.

mod queue_impl;
mod schema;
pub mod shared_file;

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use videofarm_core::clock::rfc3339;
use videofarm_core::lifecycle::{self, LostCause};
use videofarm_core::pathser::{from_bytes, to_bytes};
use videofarm_core::Split;
use videofarm_core::{
    ActiveJob, AfterFailure, AttemptOutcome, AttemptRecord, Clock, Control, Counts, Enqueued,
    JobFilter, JobId, JobRecord, JobSpec, JobState, Lease, Outcome, Progress, Queue, QueueError,
    QueueSettings, Records, SuccessReport, SystemClock, WorkerInfo, WorkerStatus,
};

/// How often `lease` looks again while it waits for a ready job.
const POLL: Duration = Duration::from_millis(100);

/// A durable job queue in one SQLite file.
#[derive(Clone)]
pub struct SqliteQueue {
    conn: Arc<Mutex<Connection>>,
    settings: QueueSettings,
    clock: Arc<dyn Clock>,
    /// Shown in errors so a user knows which queue file is meant.
    path: PathBuf,
    /// When this process last returned expired leases to the queue (clock ms).
    last_reap_ms: Arc<AtomicI64>,
}

impl std::fmt::Debug for SqliteQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteQueue")
            .field("path", &self.path)
            .finish()
    }
}

fn backend(path: &Path, e: impl std::fmt::Display) -> QueueError {
    QueueError::Backend(format!("queue file {}: {e}", path.display()))
}

impl SqliteQueue {
    /// Open (creating if needed) the queue file at `path`.
    pub fn open(path: &Path, settings: QueueSettings) -> Result<Self, QueueError> {
        Self::open_with_clock(path, settings, Arc::new(SystemClock))
    }

    pub fn open_with_clock(
        path: &Path,
        settings: QueueSettings,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, QueueError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| backend(path, format!("cannot create its folder: {e}")))?;
        }
        let conn =
            shared_file::open(path, Duration::from_secs(30)).map_err(|e| backend(path, e))?;
        schema::migrate(&conn).map_err(|e| backend(path, e))?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            settings,
            clock,
            path: path.to_owned(),
            last_reap_ms: Arc::new(AtomicI64::new(i64::MIN)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Run `f` on the connection off the async threads.
    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection, &Ctx) -> Result<T, QueueError> + Send + 'static,
    ) -> Result<T, QueueError> {
        let conn = self.conn.clone();
        let ctx = Ctx {
            now: self.clock.now_ms(),
            settings: self.settings.clone(),
            path: self.path.clone(),
            last_reap_ms: self.last_reap_ms.clone(),
        };
        tokio::task::spawn_blocking(move || {
            let mut conn = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&mut conn, &ctx)
        })
        .await
        .map_err(|e| QueueError::Backend(format!("queue task failed: {e}")))?
    }

    fn try_lease(
        &self,
        worker: WorkerInfo,
    ) -> impl FnOnce(&mut Connection, &Ctx) -> Result<Option<Lease>, QueueError> {
        move |conn, ctx| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| ctx.err(e))?;
            if ctx.reap_due() {
                reap(&tx, ctx)?;
            }
            // Pick, lease and read the job in one statement (prepared once per connection):
            // this runs for every job, so its cost is the queue's cost. It looks at the first
            // jobs in line only; when none of them is one this worker can run, the best it can
            // run is found by the (profile, tags) pairs waiting (an index walk), so a library of
            // jobs no worker here can run is not tested job by job at every poll (that took
            // 43 % of a core per idle worker beside 100,000 of them).
            let lease_until = ctx.now + ctx.settings.lease.as_millis() as i64;
            let unable = serde_json::to_string(&worker.unable).unwrap_or_default();
            let tags = serde_json::to_string(&worker.tags).unwrap_or_default();
            let near = params![worker.name, lease_until, ctx.now, unable, tags];
            let mut leased = take(&tx, TAKE_NEAR, near).map_err(|e| ctx.err(e))?;
            if leased.is_none() {
                if let Some(id) = best_runnable(&tx, &worker, ctx.now).map_err(|e| ctx.err(e))? {
                    let by_id = params![worker.name, lease_until, ctx.now, id];
                    leased = take(&tx, TAKE_BY_ID, by_id).map_err(|e| ctx.err(e))?;
                }
            }
            let Some((id, token, attempt, lost, waiting, spec)) = leased else {
                return Ok(None);
            };
            tx.prepare_cached(
                "INSERT INTO attempts (job_id, attempt, token, worker, started_ms, outcome)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'running')",
            )
            .and_then(|mut stmt| stmt.execute(params![id, attempt, token, worker.name, ctx.now]))
            .map_err(|e| ctx.err(e))?;
            tx.commit().map_err(|e| ctx.err(e))?;
            Ok(Some(Lease {
                id: JobId(id.to_string()),
                spec,
                attempt: attempt as u32,
                lost: lost as u32,
                token: token as u64,
                handle: 0,
                fresh: !waiting,
            }))
        }
    }
}

/// The id of the job `worker` should take now, if any: of the waiting jobs whose profile it
/// can run and whose tags it has, and that may run now, the one of highest priority, then the
/// oldest.
fn best_runnable(
    tx: &rusqlite::Transaction<'_>,
    worker: &WorkerInfo,
    now: i64,
) -> rusqlite::Result<Option<i64>> {
    let pairs = waiting_pairs(tx)?;
    let mut first = tx.prepare_cached(
        "SELECT id, priority FROM jobs INDEXED BY jobs_routes
         WHERE state = 'queued' AND profile = ?1 AND require IS ?2 AND not_before <= ?3
         ORDER BY priority DESC, id LIMIT 1",
    )?;
    let mut best: Option<(i64, i64)> = None;
    for (profile, require) in pairs {
        let spec = JobSpec {
            profile: profile.clone(),
            require: require
                .as_deref()
                .and_then(|r| serde_json::from_str(r).ok())
                .unwrap_or_default(),
            ..Default::default()
        };
        if !worker.can_run(&spec) {
            continue;
        }
        let found: Option<(i64, i64)> = first
            .query_row(params![profile, require, now], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        if let Some((id, priority)) = found {
            // Highest priority first, then the oldest (the lowest id).
            if best.is_none_or(|(b_id, b_priority)| (priority, -id) > (b_priority, -b_id)) {
                best = Some((id, priority));
            }
        }
    }
    Ok(best.map(|(id, _)| id))
}

/// Take the first runnable job among the first in line. Parameters: ?1 the worker, ?2 the
/// lease's end, ?3 now, ?4 the profiles it cannot run and ?5 its tags (JSON arrays).
const TAKE_NEAR: &str =
    "UPDATE jobs SET state = 'running', token = token + 1, attempts = attempts + 1,
        worker = ?1, lease_until = ?2, started_ms = ?3, progress = NULL
     WHERE id = (SELECT id FROM (SELECT id, priority, profile, require FROM jobs
                                 WHERE state = 'queued' AND not_before <= ?3
                                 ORDER BY priority DESC, id LIMIT 32)
                 WHERE profile NOT IN (SELECT value FROM json_each(?4))
                   AND (require IS NULL OR NOT EXISTS (SELECT 1 FROM json_each(require) r
                        WHERE r.value NOT IN (SELECT value FROM json_each(?5))))
                 ORDER BY priority DESC, id LIMIT 1)
     RETURNING *";

/// Take the job ?4 (found by [`best_runnable`]); the rest as [`TAKE_NEAR`].
const TAKE_BY_ID: &str =
    "UPDATE jobs SET state = 'running', token = token + 1, attempts = attempts + 1,
        worker = ?1, lease_until = ?2, started_ms = ?3, progress = NULL
     WHERE id = ?4 AND state = 'queued'
     RETURNING *";

/// What a job taken is: id, fencing token, attempts, lost attempts, back from a wait, spec.
type Taken = (i64, i64, i64, i64, bool, JobSpec);

fn take(
    tx: &rusqlite::Transaction<'_>,
    statement: &str,
    params: impl rusqlite::Params,
) -> rusqlite::Result<Option<Taken>> {
    tx.prepare_cached(statement)?
        .query_row(params, |r| {
            Ok((
                r.get::<_, i64>("id")?,
                r.get::<_, i64>("token")?,
                r.get::<_, i64>("attempts")?,
                r.get::<_, i64>("lost")?,
                r.get::<_, bool>("waiting")?,
                read_spec(r)?,
            ))
        })
        .optional()
}

/// The (profile, tags) pairs of the waiting jobs, each found by a seek in the index from the
/// last (a skip-scan): as many steps as there are pairs, however many jobs wait.
fn waiting_pairs(
    tx: &rusqlite::Transaction<'_>,
) -> rusqlite::Result<Vec<(String, Option<String>)>> {
    let mut first = tx.prepare_cached(
        "SELECT profile, require FROM jobs INDEXED BY jobs_routes WHERE state = 'queued'
         ORDER BY profile, require LIMIT 1",
    )?;
    // A pair's next `require` within its profile (NULL, none required, sorts first; any JSON
    // array is text after '').
    let mut same_profile = tx.prepare_cached(
        "SELECT profile, require FROM jobs INDEXED BY jobs_routes
         WHERE state = 'queued' AND profile = ?1 AND require > ?2 ORDER BY require LIMIT 1",
    )?;
    let mut next_profile = tx.prepare_cached(
        "SELECT profile, require FROM jobs INDEXED BY jobs_routes
         WHERE state = 'queued' AND profile > ?1 ORDER BY profile, require LIMIT 1",
    )?;
    let row = |r: &Row<'_>| Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?));
    let mut pairs = Vec::new();
    let mut at = first.query_row([], row).optional()?;
    while let Some((profile, require)) = at {
        let after = require.clone().unwrap_or_default();
        at = match same_profile
            .query_row(params![profile, after], row)
            .optional()?
        {
            Some(next) => Some(next),
            None => next_profile.query_row(params![profile], row).optional()?,
        };
        pairs.push((profile, require));
    }
    Ok(pairs)
}

/// What every operation needs besides the connection.
struct Ctx {
    now: i64,
    settings: QueueSettings,
    path: PathBuf,
    last_reap_ms: Arc<AtomicI64>,
}

impl Ctx {
    fn err(&self, e: impl std::fmt::Display) -> QueueError {
        backend(&self.path, e)
    }

    /// Leasing reaps expired leases at most every quarter lease (and every second at most):
    /// a lease runs out over tens of seconds, and checking on every lease doubled its cost.
    fn reap_due(&self) -> bool {
        let every = (self.settings.lease.as_millis() as i64 / 4).clamp(1, 1000);
        let last = self.last_reap_ms.load(Ordering::Relaxed);
        if self.now >= last.saturating_add(every) || self.now < last {
            self.last_reap_ms.store(self.now, Ordering::Relaxed);
            true
        } else {
            false
        }
    }
}

fn parse_id(id: &JobId) -> Result<i64, QueueError> {
    id.0.parse().map_err(|_| QueueError::NotFound(id.clone()))
}

fn read_spec(row: &Row<'_>) -> rusqlite::Result<JobSpec> {
    Ok(JobSpec {
        input: from_bytes(row.get("input")?),
        output: from_bytes(row.get("output")?),
        profile: row.get("profile")?,
        key: row.get("key")?,
        overwrite: row.get("overwrite")?,
        priority: row.get("priority")?,
        input_size: row.get::<_, i64>("input_size")? as u64,
        parent: row.get::<_, Option<String>>("parent")?.map(JobId),
        split: match row.get::<_, Option<String>>("split")? {
            Some(text) => text.parse().map_err(|e: String| conversion(e))?,
            None => Split::Off,
        },
        chunk: match row.get::<_, Option<String>>("chunk")? {
            Some(text) => Some(serde_json::from_str(&text).map_err(|e| conversion(e.to_string()))?),
            None => None,
        },
        require: json_list(row.get("require")?)?.unwrap_or_default(),
    })
}

/// A JSON array of strings stored as text, or NULL.
fn json_list(text: Option<String>) -> rusqlite::Result<Option<Vec<String>>> {
    text.map(|t| serde_json::from_str(&t).map_err(|e| conversion(e.to_string())))
        .transpose()
}

/// A list as the JSON text stored for it; NULL for none.
fn json_text(list: &[String]) -> Option<String> {
    (!list.is_empty()).then(|| serde_json::to_string(list).unwrap_or_default())
}

fn conversion(e: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into())
}

fn read_outcome(row: &Row<'_>, column: usize) -> rusqlite::Result<AttemptOutcome> {
    let text: String = row.get(column)?;
    text.parse().map_err(|e: String| {
        rusqlite::Error::FromSqlConversionFailure(column, rusqlite::types::Type::Text, e.into())
    })
}

fn read_state(row: &Row<'_>, column: &str) -> rusqlite::Result<JobState> {
    let text: String = row.get(column)?;
    text.parse().map_err(|e: String| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into())
    })
}

fn read_json<T: serde::de::DeserializeOwned>(
    row: &Row<'_>,
    column: &str,
) -> rusqlite::Result<Option<T>> {
    let text: Option<String> = row.get(column)?;
    Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
}

fn read_record(row: &Row<'_>) -> rusqlite::Result<JobRecord> {
    Ok(JobRecord {
        id: JobId(row.get::<_, i64>("id")?.to_string()),
        state: read_state(row, "state")?,
        spec: read_spec(row)?,
        attempts: row.get("attempts")?,
        max_attempts: row.get("max_attempts")?,
        error: row.get("error")?,
        stderr_tail: row.get("stderr_tail")?,
        worker: row.get("worker")?,
        progress: read_json::<Progress>(row, "progress")?,
        result: read_json::<SuccessReport>(row, "result")?,
        created_ms: row.get("created_ms")?,
        started_ms: row.get("started_ms")?,
        finished_ms: row.get("finished_ms")?,
        waiting_for: None,
    })
}

/// A job's state, if the job exists.
fn state_of(conn: &Connection, ctx: &Ctx, id: i64) -> Result<Option<JobState>, QueueError> {
    conn.query_row("SELECT state FROM jobs WHERE id = ?1", [id], |r| {
        read_state(r, "state")
    })
    .optional()
    .map_err(|e| ctx.err(e))
}

/// Run a statement prepared once per connection (the hot paths run the same few for every job).
fn exec(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(params)
}

/// Return jobs whose lease ran out to the queue (or fail them when their losses are spent).
fn reap(conn: &Connection, ctx: &Ctx) -> Result<(), QueueError> {
    let expired: Vec<(i64, u32, u32, Option<String>, i64)> = conn
        .prepare_cached(
            "SELECT id, attempts, lost, worker, token FROM jobs
             WHERE state = 'running' AND lease_until < ?1",
        )
        .and_then(|mut stmt| {
            stmt.query_map([ctx.now], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })?
            .collect()
        })
        .map_err(|e| ctx.err(e))?;
    let budget = ctx.settings.budget();
    for (id, attempt, lost_before, worker, token) in expired {
        let lost = lost_before + 1;
        let failed = budget.lost_too_often(lost);
        let error = lifecycle::lost_reason(
            attempt,
            lost,
            worker.as_deref(),
            failed,
            LostCause::LeaseRanOut,
        );
        exec(
            conn,
            "UPDATE attempts SET outcome = 'lost', finished_ms = ?3, error = ?4
             WHERE job_id = ?1 AND token = ?2 AND outcome IN ('running', 'publishing')",
            params![id, token, ctx.now, error],
        )
        .map_err(|e| ctx.err(e))?;
        exec(
            conn,
            "UPDATE jobs SET state = ?2, finished_ms = ?3, error = ?4, lost = lost + 1,
                progress = NULL, lease_until = NULL, waiting = 0
             WHERE id = ?1",
            params![
                id,
                if failed { "failed" } else { "queued" },
                failed.then_some(ctx.now),
                error
            ],
        )
        .map_err(|e| ctx.err(e))?;
    }
    Ok(())
}

/// Renew the lease of a job held with `token`, or say why it cannot be.
fn renew(
    conn: &Connection,
    ctx: &Ctx,
    lease: &Lease,
    progress: Option<&Progress>,
) -> Result<(), QueueError> {
    let id = parse_id(&lease.id)?;
    let progress = progress.map(|p| serde_json::to_string(p).unwrap_or_default());
    let changed = exec(
        conn,
        "UPDATE jobs SET lease_until = ?3, progress = coalesce(?4, progress)
             WHERE id = ?1 AND token = ?2 AND state = 'running' AND lease_until >= ?5",
        params![
            id,
            lease.token as i64,
            ctx.now + ctx.settings.lease.as_millis() as i64,
            progress,
            ctx.now
        ],
    )
    .map_err(|e| ctx.err(e))?;
    if changed == 1 {
        return Ok(());
    }
    let state: Option<JobState> = state_of(conn, ctx, id)?;
    Err(match state {
        Some(JobState::Cancelled) => QueueError::Cancelled(lease.id.clone()),
        _ => QueueError::LeaseLost(lease.id.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use videofarm_core::ManualClock;

    /// Once the publish is granted, a cancel no longer takes the job: it ends succeeded with
    /// its output in place, never cancelled with it.
    #[tokio::test]
    async fn a_cancel_that_lands_while_the_output_is_published_leaves_the_job_succeeded() {
        let dir = tempfile::tempdir().unwrap();
        let q = SqliteQueue::open(&dir.path().join("q.db"), QueueSettings::default()).unwrap();
        let spec = plain_spec();
        let id = q.enqueue(spec, false).await.unwrap().id().clone();
        let worker = WorkerInfo::new("w", "h");
        let lease = q
            .lease(&worker, Duration::from_secs(1))
            .await
            .unwrap()
            .unwrap();
        q.begin_publish(&lease).await.unwrap();
        assert_eq!(
            q.cancel(std::slice::from_ref(&id)).await.unwrap()[0].verdict,
            videofarm_core::Verdict::Publishing
        );
        q.finish(&lease, Outcome::Succeeded(Default::default()))
            .await
            .unwrap();
        assert_eq!(q.counts().await.unwrap().succeeded, 1);
        assert_eq!(q.counts().await.unwrap().cancelled, 0);
    }

    fn plain_spec() -> JobSpec {
        JobSpec {
            input: "/m/a.mpg".into(),
            output: "/m/a.mkv".into(),
            profile: "archive".into(),
            key: "k".into(),
            ..JobSpec::default()
        }
    }

    #[tokio::test]
    async fn an_expired_lease_is_reaped_and_its_token_fenced_without_sleeping() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(1_000_000));
        let settings = QueueSettings {
            lease: Duration::from_secs(30),
            ..QueueSettings::default()
        };
        let q = SqliteQueue::open_with_clock(&dir.path().join("q.db"), settings, clock.clone())
            .unwrap();
        let spec = videofarm_conformance::spec("a");
        q.enqueue(spec, false).await.unwrap();
        let w = videofarm_conformance::worker("w1");
        let first = q.lease(&w, Duration::ZERO).await.unwrap().unwrap();
        clock.advance_ms(29_000);
        q.heartbeat(&first, None).await.unwrap();
        assert!(
            q.lease(&w, Duration::ZERO).await.unwrap().is_none(),
            "renewed lease still held"
        );
        clock.advance_ms(30_001);
        let second = q
            .lease(&w, Duration::ZERO)
            .await
            .unwrap()
            .expect("expired lease is handed out again");
        assert_eq!(second.attempt, 2);
        assert!(matches!(
            q.heartbeat(&first, None).await,
            Err(QueueError::LeaseLost(_))
        ));
        let history = q.history(&second.id).await.unwrap();
        assert_eq!(history[0].outcome, AttemptOutcome::Lost);
    }
}
