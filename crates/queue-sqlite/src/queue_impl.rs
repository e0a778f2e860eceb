//! The [`Queue`] contract on SQLite: every operation one transaction on the shared file.

use super::*;

use videofarm_core::lifecycle::{self, JobView};
use videofarm_core::watching::{self, WatchReport};
use videofarm_core::{Answer, Verdict};

use videofarm_core::listing::{timeline, Bucket, TimelineRow, TIMELINE_ROWS};

/// The embedded queue's ids are numbers; chunks name their tape's id as text.
const LISTING: videofarm_core::listing::Listing = videofarm_core::listing::Listing {
    parent_as_id: "CAST(c.parent AS INTEGER)",
    id_as_parent: "CAST(j.id AS TEXT)",
    queue_order: "j.id",
};

#[async_trait]
impl Queue for SqliteQueue {
    async fn enqueue_many(
        &self,
        specs: Vec<JobSpec>,
        force: bool,
    ) -> Result<Vec<Result<Enqueued, QueueError>>, QueueError> {
        // One transaction for the whole batch: a library of 100,000 files is queued in seconds.
        self.with(move |conn, ctx| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| ctx.err(e))?;
            // A job whose lease ran out is no longer running: queued again, it must not be
            // taken for a running duplicate (found by the conformance case
            // `a_job_queued_again_after_failing_lost_runs_once`).
            reap(&tx, ctx)?;
            let done = specs
                .iter()
                .map(|spec| enqueue_one(&tx, ctx, spec, force))
                .collect();
            tx.commit().map_err(|e| ctx.err(e))?;
            Ok(done)
        })
        .await
    }

    async fn lease(
        &self,
        worker: &WorkerInfo,
        wait: Duration,
    ) -> Result<Option<Lease>, QueueError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(lease) = self.with(self.try_lease(worker.clone())).await? {
                return Ok(Some(lease));
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(POLL.min(deadline - now)).await;
        }
    }

    async fn heartbeat(
        &self,
        lease: &Lease,
        progress: Option<&Progress>,
    ) -> Result<(), QueueError> {
        let (lease, progress) = (lease.clone(), progress.copied());
        self.with(move |conn, ctx| renew(conn, ctx, &lease, progress.as_ref()))
            .await
    }

    async fn begin_publish(&self, lease: &Lease) -> Result<(), QueueError> {
        let lease = lease.clone();
        // Granted and marked in one transaction: from here on a cancel no longer takes the job,
        // so it ends succeeded with its output in place, never cancelled with it.
        self.with(move |conn, ctx| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| ctx.err(e))?;
            renew(&tx, ctx, &lease, None)?;
            exec(
                &tx,
                "UPDATE attempts SET outcome = 'publishing'
                 WHERE job_id = ?1 AND token = ?2 AND outcome = 'running'",
                params![parse_id(&lease.id)?, lease.token as i64],
            )
            .map_err(|e| ctx.err(e))?;
            tx.commit().map_err(|e| ctx.err(e))
        })
        .await
    }

    async fn finish(&self, lease: &Lease, outcome: Outcome) -> Result<(), QueueError> {
        let lease = lease.clone();
        self.with(move |conn, ctx| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| ctx.err(e))?;
            let id = parse_id(&lease.id)?;
            let token = lease.token as i64;
            let (changed, attempt_outcome, error) = set_end(&tx, ctx, &lease, id, &outcome);
            let changed = changed.map_err(|e| ctx.err(e))?;
            if changed != 1 {
                let state: Option<JobState> = state_of(&tx, ctx, id)?;
                return Err(match state {
                    Some(JobState::Cancelled) => QueueError::Cancelled(lease.id.clone()),
                    None => QueueError::NotFound(lease.id.clone()),
                    _ => QueueError::LeaseLost(lease.id.clone()),
                });
            }
            if let Some(attempt_outcome) = attempt_outcome {
                exec(
                    &tx,
                    "UPDATE attempts SET outcome = ?3, finished_ms = ?4, error = ?5
                     WHERE job_id = ?1 AND token = ?2",
                    params![id, token, attempt_outcome.as_str(), ctx.now, error],
                )
            } else {
                // A wait is not an attempt: it leaves no row in the history.
                exec(
                    &tx,
                    "DELETE FROM attempts WHERE job_id = ?1 AND token = ?2",
                    params![id, token],
                )
            }
            .map_err(|e| ctx.err(e))?;
            tx.commit().map_err(|e| ctx.err(e))
        })
        .await
    }

    async fn register_worker(&self, worker: &WorkerInfo) -> Result<(), QueueError> {
        let worker = worker.clone();
        self.with(move |conn, ctx| {
            conn.execute(
                "INSERT INTO workers (name, pid, host, started_ms, concurrency, last_seen_ms, profiles, tags, unable)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (name) DO UPDATE SET pid = ?2, host = ?3, started_ms = ?4,
                    concurrency = ?5, last_seen_ms = ?6, profiles = ?7, tags = ?8, unable = ?9",
                params![
                    worker.name,
                    worker.pid,
                    worker.host,
                    worker.started_ms,
                    worker.concurrency,
                    ctx.now,
                    worker.profiles.as_ref().map(|p| serde_json::to_string(p).unwrap_or_default()),
                    json_text(&worker.tags),
                    json_text(&worker.unable)
                ],
            )
            .map_err(|e| ctx.err(e))?;
            Ok(())
        })
        .await
    }

    async fn unregister_worker(&self, worker: &WorkerInfo) -> Result<(), QueueError> {
        let name = worker.name.clone();
        self.with(move |conn, ctx| {
            conn.execute("DELETE FROM workers WHERE name = ?1", [name])
                .map_err(|e| ctx.err(e))?;
            Ok(())
        })
        .await
    }

    async fn report_watch(&self, report: &WatchReport) -> Result<(), QueueError> {
        let (key, json) = watching::row(report);
        self.with(move |conn, ctx| {
            conn.execute(watching::KEEP, [key, json])
                .map_err(|e| ctx.err(e))?;
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl Records for SqliteQueue {
    async fn workers(&self) -> Result<Vec<WorkerStatus>, QueueError> {
        self.with(|conn, ctx| {
            reap(conn, ctx)?;
            let alive_since = ctx.now - ctx.settings.lease.as_millis() as i64;
            let mut stmt = conn
                .prepare(
                    "SELECT name, pid, host, started_ms, concurrency, profiles, tags, unable FROM workers
                     WHERE last_seen_ms >= ?1 ORDER BY name",
                )
                .map_err(|e| ctx.err(e))?;
            let mut workers: Vec<WorkerStatus> = stmt
                .query_map([alive_since], |r| {
                    Ok(WorkerStatus {
                        name: r.get(0)?,
                        pid: r.get(1)?,
                        host: r.get(2)?,
                        started: rfc3339(r.get(3)?),
                        concurrency: r.get(4)?,
                        active: Vec::new(),
                        profiles: json_list(r.get(5)?)?,
                        tags: json_list(r.get(6)?)?.unwrap_or_default(),
                        unable: json_list(r.get(7)?)?.unwrap_or_default(),
                    })
                })
                .and_then(|rows| rows.collect())
                .map_err(|e| ctx.err(e))?;
            let mut active = conn
                .prepare("SELECT * FROM jobs WHERE state = 'running' AND worker = ?1 ORDER BY id")
                .map_err(|e| ctx.err(e))?;
            for worker in &mut workers {
                worker.active = active
                    .query_map([&worker.name], read_record)
                    .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                    .map_err(|e| ctx.err(e))?
                    .into_iter()
                    .map(|job| {
                        let p = job.progress.unwrap_or_default();
                        ActiveJob {
                            id: job.id,
                            input: job.spec.input,
                            output: job.spec.output,
                            profile: job.spec.profile,
                            progress: p.progress,
                            fps: p.fps,
                            speed: p.speed,
                            eta_s: p.eta_s,
                            transfer: p.transfer,
                        }
                    })
                    .collect();
            }
            Ok(workers)
        })
        .await
    }

    async fn watch_problems(&self) -> Result<Vec<WatchReport>, QueueError> {
        self.with(|conn, ctx| {
            let mut stmt = conn
                .prepare_cached(watching::LIST)
                .map_err(|e| ctx.err(e))?;
            let rows = stmt
                .query_map([], |r| r.get::<_, String>(0))
                .map_err(|e| ctx.err(e))?;
            let mut reports = Vec::new();
            for row in rows {
                reports.extend(watching::read(&row.map_err(|e| ctx.err(e))?));
            }
            Ok(reports)
        })
        .await
    }

    async fn counts(&self) -> Result<Counts, QueueError> {
        self.with(|conn, ctx| {
            reap(conn, ctx)?;
            // A split tape is one job: its chunks are not counted, and while any of them
            // encodes the tape counts as running (not as waiting or retrying).
            let mut counts = Counts::default();
            let mut stmt = conn
                .prepare_cached(LISTING.count_by_state())
                .map_err(|e| ctx.err(e))?;
            let rows = stmt
                .query_map([], |r| Ok((read_state(r, "state")?, r.get::<_, i64>(1)?)))
                .map_err(|e| ctx.err(e))?;
            for row in rows {
                let (state, n) = row.map_err(|e| ctx.err(e))?;
                counts.add(state, n as u64);
            }
            let busy: i64 = conn
                .query_row(&LISTING.count_busy_tapes(), [], |r| r.get(0))
                .map_err(|e| ctx.err(e))?;
            // Two statements, no shared snapshot: never below zero.
            counts.queued = counts.queued.saturating_sub(busy as u64);
            counts.running += busy as u64;
            counts.retrying = conn
                .query_row(&LISTING.count_retrying(), [ctx.now], |r| r.get::<_, i64>(0))
                .map_err(|e| ctx.err(e))? as u64;
            Ok(counts)
        })
        .await
    }

    async fn jobs(&self, filter: &JobFilter) -> Result<Vec<JobRecord>, QueueError> {
        let filter = filter.clone();
        self.with(move |conn, ctx| {
            reap(conn, ctx)?;
            // Ids travel as one JSON array so a batch of thousands is still one indexed query.
            let ids = filter
                .ids
                .as_ref()
                .map(|ids| {
                    let rows: Vec<i64> = ids.iter().filter_map(|id| id.0.parse().ok()).collect();
                    serde_json::to_string(&rows)
                })
                .transpose()
                .map_err(|e| ctx.err(e))?;
            let (limit, offset, since) = videofarm_core::listing::Listing::page(&filter);
            let mut stmt = conn
                .prepare_cached(&LISTING.select(&filter))
                .map_err(|e| ctx.err(e))?;
            let records: Vec<JobRecord> = stmt
                .query_map(params![ids, limit, offset, since], |row| {
                    let mut record = read_record(row)?;
                    record.state = read_state(row, "shown")?;
                    Ok(record)
                })
                .and_then(|rows| rows.collect())
                .map_err(|e| ctx.err(e))?;
            Ok(records)
        })
        .await
    }

    async fn timeline(&self, bucket_ms: i64, count: usize) -> Result<Vec<Bucket>, QueueError> {
        self.with(move |conn, ctx| {
            let start = ctx.now - bucket_ms * count as i64;
            let mut stmt = conn.prepare_cached(TIMELINE_ROWS).map_err(|e| ctx.err(e))?;
            let rows: Vec<TimelineRow> = stmt
                .query_map(params![start, ctx.now], |r| {
                    Ok(TimelineRow {
                        created_ms: r.get(0)?,
                        finished_ms: r.get(1)?,
                        state: read_state(r, "state")?,
                        bytes: r.get::<_, Option<i64>>(3)?.map(|b| b.max(0) as u64),
                        media_s: r.get(4)?,
                    })
                })
                .and_then(|rows| rows.collect())
                .map_err(|e| ctx.err(e))?;
            Ok(timeline(rows, ctx.now, bucket_ms, count))
        })
        .await
    }

    async fn history(&self, id: &JobId) -> Result<Vec<AttemptRecord>, QueueError> {
        let id = id.clone();
        self.with(move |conn, ctx| {
            let job = parse_id(&id)?;
            let mut stmt = conn
                .prepare(
                    "SELECT attempt, worker, started_ms, finished_ms, outcome, error FROM attempts
                     WHERE job_id = ?1 ORDER BY token",
                )
                .map_err(|e| ctx.err(e))?;
            let rows = stmt
                .query_map([job], |r| {
                    Ok(AttemptRecord {
                        attempt: r.get(0)?,
                        worker: r.get(1)?,
                        started_ms: r.get(2)?,
                        finished_ms: r.get(3)?,
                        outcome: read_outcome(r, 4)?,
                        error: r.get(5)?,
                    })
                })
                .and_then(|rows| rows.collect())
                .map_err(|e| ctx.err(e))?;
            Ok(rows)
        })
        .await
    }
}

#[async_trait]
impl Control for SqliteQueue {
    async fn retry(&self, ids: &[JobId]) -> Result<Vec<Answer>, QueueError> {
        let ids = ids.to_vec();
        self.with(move |conn, ctx| answer_each(conn, ctx, &ids, lifecycle::retry, retry_one))
            .await
    }

    async fn retry_all_failed(&self) -> Result<Vec<Answer>, QueueError> {
        let failed: Vec<JobId> = self
            .jobs(&JobFilter {
                state: Some(JobState::Failed),
                ids: None,
                chunks: false,
                ..Default::default()
            })
            .await?
            .into_iter()
            .map(|r| r.id)
            .collect();
        let mut answers = self.retry(&failed).await?;
        answers.retain(|a| a.verdict.is_done());
        Ok(answers)
    }

    async fn cancel(&self, ids: &[JobId]) -> Result<Vec<Answer>, QueueError> {
        let ids = ids.to_vec();
        self.with(move |conn, ctx| answer_each(conn, ctx, &ids, lifecycle::cancel, cancel_one))
            .await
    }
}

/// A user's request for each of `ids`, in one transaction: what the lifecycle (`decide`) says
/// of each job, and `apply` to the row of each it says is done.
fn answer_each(
    conn: &mut Connection,
    ctx: &Ctx,
    ids: &[JobId],
    decide: fn(Option<&JobView>) -> Verdict,
    apply: fn(&Connection, &Ctx, i64) -> Result<(), QueueError>,
) -> Result<Vec<Answer>, QueueError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| ctx.err(e))?;
    let mut answers = Vec::with_capacity(ids.len());
    for id in ids {
        let row = id.0.parse::<i64>().ok();
        let view = match row {
            Some(row) => view_of(&tx, ctx, row)?,
            None => None,
        };
        let verdict = decide(view.as_ref());
        if let (Verdict::Done, Some(row)) = (&verdict, row) {
            apply(&tx, ctx, row)?;
        }
        answers.push(Answer::new(id, verdict));
    }
    tx.commit().map_err(|e| ctx.err(e))?;
    Ok(answers)
}

/// Queue job `row` again with a fresh attempt budget.
fn retry_one(tx: &Connection, ctx: &Ctx, row: i64) -> Result<(), QueueError> {
    tx.execute(
        "UPDATE jobs SET state = 'queued', attempts = 0, lost = 0, max_attempts = ?2,
            not_before = 0, waiting = 0, finished_ms = NULL, progress = NULL
         WHERE id = ?1",
        params![row, ctx.settings.max_attempts],
    )
    .map(|_| ())
    .map_err(|e| ctx.err(e))
}

/// What the lifecycle needs to know of job `row` to answer a request about it.
fn view_of(conn: &Connection, ctx: &Ctx, row: i64) -> Result<Option<JobView>, QueueError> {
    conn.query_row(
        "SELECT state, parent, EXISTS (SELECT 1 FROM attempts
            WHERE job_id = jobs.id AND outcome = 'publishing') AS publishing
         FROM jobs WHERE id = ?1",
        [row],
        |r| {
            Ok(JobView {
                state: read_state(r, "state")?,
                parent: r.get::<_, Option<String>>("parent")?.map(JobId),
                publishing: r.get("publishing")?,
                refused: false,
            })
        },
    )
    .optional()
    .map_err(|e| ctx.err(e))
}

/// Cancel job `row` and, for a split tape, its chunks that have not ended.
fn cancel_one(tx: &Connection, ctx: &Ctx, row: i64) -> Result<(), QueueError> {
    let statements = [
        "UPDATE jobs SET state = 'cancelled', finished_ms = ?2, lease_until = NULL, waiting = 0,
            error = 'cancelled by the user'
         WHERE id = ?1",
        "UPDATE attempts SET outcome = 'cancelled', finished_ms = ?2
         WHERE job_id = ?1 AND outcome = 'running'",
        "UPDATE attempts SET outcome = 'cancelled', finished_ms = ?2
         WHERE outcome = 'running' AND job_id IN
            (SELECT id FROM jobs WHERE parent = CAST(?1 AS TEXT) AND state IN ('queued', 'running'))",
        "UPDATE jobs SET state = 'cancelled', finished_ms = ?2, lease_until = NULL,
            error = 'its tape was cancelled'
         WHERE parent = CAST(?1 AS TEXT) AND state IN ('queued', 'running')",
    ];
    for sql in statements {
        tx.execute(sql, params![row, ctx.now])
            .map_err(|e| ctx.err(e))?;
    }
    Ok(())
}

/// Queue one job inside the caller's transaction.
fn enqueue_one(
    tx: &rusqlite::Transaction<'_>,
    ctx: &Ctx,
    spec: &JobSpec,
    force: bool,
) -> Result<Enqueued, QueueError> {
    let known: Option<(i64, JobState)> = tx
        .query_row(
            "SELECT id, state FROM jobs WHERE key = ?1",
            [&spec.key],
            |r| Ok((r.get(0)?, read_state(r, "state")?)),
        )
        .optional()
        .map_err(|e| ctx.err(e))?;
    let id = match known {
        // Queued, running or done: the same work is not done twice.
        Some((id, state)) if !force && !matches!(state, JobState::Failed | JobState::Cancelled) => {
            return Ok(Enqueued::Duplicate(JobId(id.to_string()), state));
        }
        Some((id, JobState::Running)) => {
            return Err(QueueError::WrongState {
                id: JobId(id.to_string()),
                state: JobState::Running,
                what: "it is being encoded right now; cancel it first to force a new run".into(),
            });
        }
        // A failed or cancelled job, or a forced re-run: the same row starts afresh.
        Some((id, _)) => {
            tx.execute(
                "UPDATE jobs SET state = 'queued', attempts = 0, lost = 0, max_attempts = ?2, not_before = 0,
                    waiting = 0, error = NULL, stderr_tail = NULL, progress = NULL, result = NULL,
                    finished_ms = NULL, overwrite = ?3, priority = ?4, created_ms = ?5, require = ?6
                 WHERE id = ?1",
                params![id, ctx.settings.max_attempts, spec.overwrite || force, spec.priority, ctx.now, json_text(&spec.require)],
            )
            .map_err(|e| ctx.err(e))?;
            id
        }
        None => tx
            .query_row(
                "INSERT INTO jobs (key, input, output, profile, overwrite, priority, input_size,
                    parent, state, max_attempts, created_ms, split, chunk, require)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'queued', ?9, ?10, ?11, ?12, ?13) RETURNING id",
                params![
                    spec.key,
                    to_bytes(&spec.input),
                    to_bytes(&spec.output),
                    spec.profile,
                    spec.overwrite,
                    spec.priority,
                    spec.input_size as i64,
                    spec.parent.as_ref().map(|p| p.0.clone()),
                    ctx.settings.max_attempts,
                    ctx.now,
                    (!spec.split.is_off()).then(|| spec.split.to_string()),
                    spec.chunk
                        .as_ref()
                        .map(|c| serde_json::to_string(c).unwrap_or_default()),
                    json_text(&spec.require)
                ],
                |r| r.get(0),
            )
            .map_err(|e| ctx.err(e))?,
    };
    Ok(Enqueued::Queued(JobId(id.to_string())))
}

/// Set the job's state as `outcome` says, if `lease` (job row `id`) still holds it: the rows
/// changed (0 when the lease is void), how the attempt ended (`None`: a wait, no attempt) and
/// its error.
fn set_end(
    tx: &rusqlite::Transaction<'_>,
    ctx: &Ctx,
    lease: &Lease,
    id: i64,
    outcome: &Outcome,
) -> (
    rusqlite::Result<usize>,
    Option<AttemptOutcome>,
    Option<String>,
) {
    let token = lease.token as i64;
    match outcome {
        Outcome::Succeeded(report) => (
            exec(
                tx,
                "UPDATE jobs SET state = 'succeeded', finished_ms = ?3, lease_until = NULL,
                    error = NULL, stderr_tail = NULL, result = ?4, progress = ?5
                 WHERE id = ?1 AND token = ?2 AND state = 'running'",
                params![
                    id,
                    token,
                    ctx.now,
                    serde_json::to_string(report).unwrap_or_default(),
                    serde_json::to_string(&report.final_progress()).unwrap_or_default()
                ],
            ),
            Some(AttemptOutcome::Succeeded),
            None,
        ),
        Outcome::Failed(failure) => match ctx.settings.after_failure(lease.failures(), failure.kind) {
            AfterFailure::Fail => (
                exec(
                    tx,
                    "UPDATE jobs SET state = 'failed', finished_ms = ?3, lease_until = NULL,
                        error = ?4, stderr_tail = ?5, progress = NULL
                     WHERE id = ?1 AND token = ?2 AND state = 'running'",
                    params![id, token, ctx.now, failure.reason, failure.stderr_tail],
                ),
                Some(AttemptOutcome::Failed),
                Some(failure.reason.clone()),
            ),
            AfterFailure::Retry { after } => (
                exec(
                    tx,
                    "UPDATE jobs SET state = 'queued', lease_until = NULL, not_before = ?3,
                        error = ?4, stderr_tail = ?5, progress = NULL, waiting = 0
                     WHERE id = ?1 AND token = ?2 AND state = 'running'",
                    params![
                        id,
                        token,
                        ctx.now + after.as_millis() as i64,
                        failure.reason,
                        failure.stderr_tail
                    ],
                ),
                Some(AttemptOutcome::Failed),
                Some(failure.reason.clone()),
            ),
        },
        Outcome::Deferred { after, progress } => (
            exec(
                tx,
                "UPDATE jobs SET state = 'queued', attempts = max(attempts - 1, 0), not_before = ?3,
                    lease_until = NULL, progress = ?4, waiting = 1
                 WHERE id = ?1 AND token = ?2 AND state = 'running'",
                params![
                    id,
                    token,
                    ctx.now + after.as_millis() as i64,
                    serde_json::to_string(progress).unwrap_or_default()
                ],
            ),
            None,
            None,
        ),
        Outcome::Released => (
            exec(
                tx,
                "UPDATE jobs SET state = 'queued', attempts = max(attempts - 1, 0), not_before = 0,
                    lease_until = NULL, progress = NULL, waiting = 0
                 WHERE id = ?1 AND token = ?2 AND state = 'running'",
                params![id, token],
            ),
            Some(AttemptOutcome::Released),
            None,
        ),
    }
}
