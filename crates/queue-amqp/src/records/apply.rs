//! How each fact changes the local copy of the records: one function per fact.

use super::{json, Fact, Stamped, REFUSAL_PREFIX};
use rusqlite::params;
use videofarm_core::lifecycle::{lost_reason, Budget, LostCause};
use videofarm_core::{AttemptOutcome, JobId, JobSpec};

pub(super) fn apply_one(
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
        Fact::Watched { report } => {
            // From the stream, so from anyone: a report out of bounds is not kept.
            if let Err(why) = videofarm_core::watching::check(report) {
                tracing::warn!(%why, "a watch report left out of the records");
                return Ok(());
            }
            let (key, json) = videofarm_core::watching::row(report);
            tx.execute(videofarm_core::watching::KEEP, [key, json])?;
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
