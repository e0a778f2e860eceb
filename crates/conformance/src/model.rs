//! The model-based test: random sequences of what workers and users do (enqueue, lease,
//! heartbeat, succeed, fail, release, cancel, retry, and every held lease lost at once) driven
//! against a real backend and against a reference model written from the lifecycle's own rules
//! ([`videofarm_core::lifecycle`]). After every step each job's state must agree, every answer
//! must be the one the model expects, no stale holder may renew, publish or finish, and nothing
//! is published twice; at the end every job is run to its end.
//!
//! A run is reproducible from its seed; a failure names the seed and the steps so far, which
//! then become a plain regression test.

use crate::{spec, Fixture};
use std::collections::BTreeMap;
use std::time::Duration;
use videofarm_core::lifecycle::{self, Budget, JobView, Request};
use videofarm_core::{
    AfterFailure, Enqueued, Failure, FailureKind, JobFilter, JobId, JobState, Lease, Outcome,
    QueueError, QueueSettings, Verdict, WorkerInfo,
};

/// How a backend is driven.
pub struct ModelRun {
    pub seed: u64,
    pub steps: usize,
    /// How long a lease waits for a job the model says is ready (a broker delivers a moment
    /// later than it is told; an embedded queue on a manual clock at once).
    pub patience: Duration,
    /// Include "every held lease is lost" (the worker killed, the connection cut).
    pub expire: bool,
}

/// Settings the model assumes: no retry delay, so a job is ready the moment it is queued.
pub fn model_settings() -> QueueSettings {
    QueueSettings {
        lease: Duration::from_secs(30),
        max_attempts: 3,
        max_lost: 2,
        retry_backoff: Duration::ZERO,
    }
}

/// At most this many jobs held at once (the worker's concurrency).
const HOLD: usize = 3;
/// Jobs are drawn from this many files at a time.
const FILES: usize = 5;

#[derive(Debug, Clone)]
struct Job {
    state: JobState,
    failures: u32,
    lost: u32,
    /// The token of the attempt that holds it, while one does.
    token: Option<u64>,
    succeeded: u32,
}

/// A small deterministic generator (SplitMix64): a seed gives one sequence on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

struct Model {
    budget: Budget,
    jobs: BTreeMap<JobId, Job>,
    names: BTreeMap<usize, JobId>,
    held: Vec<Lease>,
    trace: Vec<String>,
}

impl Model {
    fn fail(&self, seed: u64, why: String) -> String {
        format!(
            "model run with seed {seed} disagreed after {} steps: {why}\nsteps:\n  {}",
            self.trace.len(),
            self.trace.join("\n  ")
        )
    }

    fn view(&self, id: &JobId) -> Option<JobView> {
        self.jobs.get(id).map(|j| JobView {
            state: j.state,
            publishing: false,
            parent: None,
            refused: false,
        })
    }

    /// True when `lease` still holds its job.
    fn holds(&self, lease: &Lease) -> bool {
        self.jobs
            .get(&lease.id)
            .is_some_and(|j| j.state == JobState::Running && j.token == Some(lease.token))
    }

    fn ready(&self) -> bool {
        self.jobs.values().any(|j| j.state == JobState::Queued)
    }
}

/// Drive `f`'s backend through `run.steps` random steps, checking it against the model.
pub async fn model_run(f: Fixture, run: ModelRun) -> Result<(), String> {
    let q = f.queue.as_ref();
    let w = model_worker();
    q.register_worker(&w).await.map_err(|e| e.to_string())?;
    let mut rng = Rng(run.seed);
    let mut m = Model {
        budget: model_settings().budget(),
        jobs: BTreeMap::new(),
        names: BTreeMap::new(),
        held: Vec::new(),
        trace: Vec::new(),
    };
    for at in 0..run.steps {
        let choice = rng.below(if run.expire { 100 } else { 97 });
        // New files keep coming: about five at a time, one more every 20 steps.
        let first_file = at / 20;
        step(q, &f, &run, &mut m, &mut rng, (choice, first_file))
            .await
            .map_err(|why| m.fail(run.seed, why))?;
        check_states(q, &m)
            .await
            .map_err(|why| m.fail(run.seed, why))?;
    }
    // Every job reaches its end: what is held is released, what waits is run.
    while let Some(lease) = m.held.pop() {
        let _ = q.finish(&lease, Outcome::Released).await;
        if m.holds(&lease) {
            let job = m.jobs.get_mut(&lease.id).expect("held");
            job.state = JobState::Queued;
            job.token = None;
        }
    }
    while m.ready() {
        let lease = q
            .lease(&w, run.patience.max(Duration::from_secs(2)))
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| m.fail(run.seed, "a queued job never came back".into()))?;
        q.begin_publish(&lease).await.map_err(|e| e.to_string())?;
        q.finish(&lease, crate::ok())
            .await
            .map_err(|e| e.to_string())?;
        let job = m.jobs.get_mut(&lease.id).expect("known");
        job.state = JobState::Succeeded;
        job.succeeded += 1;
    }
    check_states(q, &m)
        .await
        .map_err(|why| m.fail(run.seed, why))?;
    if let Some((id, _)) = m.jobs.iter().find(|(_, j)| j.succeeded > 1) {
        return Err(m.fail(run.seed, format!("job {id} was published twice")));
    }
    let leased = m.trace.iter().filter(|t| t.starts_with("  ->")).count();
    eprintln!(
        "model run: seed {}, {} steps, {} operations ({} leases), {} jobs, every state agreed",
        run.seed,
        run.steps,
        m.trace.len() - leased,
        leased,
        m.jobs.len()
    );
    Ok(())
}

/// The worker every step leases as: it holds up to [`HOLD`] jobs at once.
fn model_worker() -> WorkerInfo {
    WorkerInfo {
        concurrency: HOLD as u32,
        ..crate::worker("model")
    }
}

type Backend<'a> = &'a dyn videofarm_core::Backend;

/// One random step: `choice` picks what happens, files are drawn from `first_file` on.
async fn step(
    q: Backend<'_>,
    f: &Fixture,
    run: &ModelRun,
    m: &mut Model,
    rng: &mut Rng,
    (choice, first_file): (usize, usize),
) -> Result<(), String> {
    match choice {
        0..=14 => enqueue(q, m, first_file + rng.below(FILES)).await,
        15..=34 => lease(q, run, m).await,
        35..=44 => match pick(rng, m.held.len()) {
            Some(i) => heartbeat(q, m, i).await,
            None => Ok(()),
        },
        45..=79 => match pick(rng, m.held.len()) {
            Some(i) => finish(q, m, i, rng.below(4)).await,
            None => Ok(()),
        },
        80..=88 => match pick_job(rng, m) {
            Some(id) => request(q, m, Request::Cancel, id).await,
            None => Ok(()),
        },
        89..=96 => match pick_job(rng, m) {
            Some(id) => request(q, m, Request::Retry, id).await,
            None => Ok(()),
        },
        _ => {
            expire(f, m).await;
            Ok(())
        }
    }
}

/// Queue file `n` when it is new, failed or cancelled (a broker does not deduplicate, so a
/// live job is not queued twice here).
async fn enqueue(q: Backend<'_>, m: &mut Model, n: usize) -> Result<(), String> {
    let before = m.names.get(&n).and_then(|id| m.jobs.get(id));
    if before.is_some_and(|j| !matches!(j.state, JobState::Failed | JobState::Cancelled)) {
        return Ok(());
    }
    let succeeded = before.map_or(0, |j| j.succeeded);
    m.trace.push(format!("enqueue file{n}"));
    let answer = q
        .enqueue(spec(&format!("file{n}")), false)
        .await
        .map_err(|e| format!("enqueue: {e}"))?;
    let Enqueued::Queued(id) = answer else {
        return Err(format!("enqueue: {answer:?}, expected queued"));
    };
    m.names.insert(n, id.clone());
    m.jobs.insert(
        id,
        Job {
            state: JobState::Queued,
            failures: 0,
            lost: 0,
            token: None,
            succeeded,
        },
    );
    Ok(())
}

/// Take a job: one the model says is queued, with the attempt numbers it says.
async fn lease(q: Backend<'_>, run: &ModelRun, m: &mut Model) -> Result<(), String> {
    if m.held.len() >= HOLD {
        return Ok(());
    }
    m.trace.push("lease".into());
    let wait = if m.ready() {
        run.patience
    } else {
        Duration::ZERO
    };
    let leased = q
        .lease(&model_worker(), wait)
        .await
        .map_err(|e| format!("lease: {e}"))?;
    let Some(lease) = leased else {
        if !m.ready() {
            return Ok(());
        }
        let queued: Vec<&JobId> = m
            .jobs
            .iter()
            .filter(|(_, j)| j.state == JobState::Queued)
            .map(|(id, _)| id)
            .collect();
        return Err(format!(
            "no job leased while {queued:?} are queued ({} held)",
            m.held.len()
        ));
    };
    let job = m
        .jobs
        .get_mut(&lease.id)
        .ok_or_else(|| format!("leased unknown job {}", lease.id))?;
    if job.state != JobState::Queued {
        return Err(format!("leased {} while it is {}", lease.id, job.state));
    }
    if lease.attempt != job.failures + job.lost + 1 || lease.lost != job.lost {
        return Err(format!(
            "lease of {}: attempt {} lost {}, model {:?}",
            lease.id, lease.attempt, lease.lost, job
        ));
    }
    job.state = JobState::Running;
    job.token = Some(lease.token);
    m.trace
        .push(format!("  -> {} token {}", lease.id, lease.token));
    m.held.push(lease);
    Ok(())
}

/// Renew held lease `i`: granted exactly while the model says it holds its job.
async fn heartbeat(q: Backend<'_>, m: &mut Model, i: usize) -> Result<(), String> {
    let lease = m.held[i].clone();
    m.trace.push(format!("heartbeat {}", lease.id));
    let answer = q.heartbeat(&lease, None).await;
    expect_fenced(m, &lease, answer, "heartbeat")?;
    if !m.holds(&lease) {
        m.held.remove(i);
    }
    Ok(())
}

/// End held lease `i` as `how`: 0 succeeded (publish, then finish), 1 a retryable failure,
/// 2 a permanent one, 3 released.
async fn finish(q: Backend<'_>, m: &mut Model, i: usize, how: usize) -> Result<(), String> {
    let lease = m.held.remove(i);
    let words = ["ok", "retryable", "permanent", "released"];
    m.trace
        .push(format!("finish {} as {}", lease.id, words[how]));
    let holds = m.holds(&lease);
    let answer = match how {
        0 => match q.begin_publish(&lease).await {
            Ok(()) => q.finish(&lease, crate::ok()).await,
            Err(e) => Err(e),
        },
        1 => {
            q.finish(&lease, Outcome::Failed(Failure::retryable("model", "")))
                .await
        }
        2 => {
            q.finish(&lease, Outcome::Failed(Failure::permanent("model")))
                .await
        }
        _ => q.finish(&lease, Outcome::Released).await,
    };
    expect_fenced(m, &lease, answer, "finish")?;
    if !holds {
        return Ok(());
    }
    let budget = m.budget;
    let job = m.jobs.get_mut(&lease.id).expect("held");
    job.token = None;
    job.state = match how {
        0 => {
            job.succeeded += 1;
            JobState::Succeeded
        }
        1 | 2 => {
            let kind = [FailureKind::Retryable, FailureKind::Permanent][how - 1];
            let next = match budget.after_failure(job.failures, kind) {
                AfterFailure::Fail => JobState::Failed,
                AfterFailure::Retry { .. } => JobState::Queued,
            };
            job.failures += 1;
            next
        }
        _ => JobState::Queued,
    };
    Ok(())
}

/// A user's cancel or retry of job `id`: the answer the lifecycle gives, and its effect.
async fn request(q: Backend<'_>, m: &mut Model, request: Request, id: JobId) -> Result<(), String> {
    let (verb, decide): (_, fn(Option<&JobView>) -> Verdict) = match request {
        Request::Cancel => ("cancel", lifecycle::cancel),
        Request::Retry => ("retry", lifecycle::retry),
    };
    m.trace.push(format!("{verb} {id}"));
    let expected = decide(m.view(&id).as_ref());
    let ids = std::slice::from_ref(&id);
    let answers = match request {
        Request::Cancel => q.cancel(ids).await,
        Request::Retry => q.retry(ids).await,
    }
    .map_err(|e| format!("{verb}: {e}"))?;
    if answers.len() != 1 || answers[0].verdict != expected {
        return Err(format!("{verb} {id}: {answers:?}, expected {expected:?}"));
    }
    if expected == Verdict::Done {
        let job = m.jobs.get_mut(&id).expect("known");
        job.token = None;
        match request {
            Request::Cancel => job.state = JobState::Cancelled,
            Request::Retry => {
                job.state = JobState::Queued;
                job.failures = 0;
                job.lost = 0;
            }
        }
    }
    Ok(())
}

/// Every held lease is lost at once (the worker killed, its connection cut): each job the
/// model says it held goes back, counted lost, or fails when lost too often.
async fn expire(f: &Fixture, m: &mut Model) {
    m.trace.push("every held lease is lost".into());
    (f.expire)().await;
    let budget = m.budget;
    for lease in std::mem::take(&mut m.held) {
        if !m.holds(&lease) {
            continue;
        }
        let job = m.jobs.get_mut(&lease.id).expect("held");
        job.lost += 1;
        job.token = None;
        job.state = if budget.lost_too_often(job.lost) {
            JobState::Failed
        } else {
            JobState::Queued
        };
    }
}

fn pick(rng: &mut Rng, n: usize) -> Option<usize> {
    (n > 0).then(|| rng.below(n))
}

fn pick_job(rng: &mut Rng, m: &Model) -> Option<JobId> {
    let ids: Vec<&JobId> = m.jobs.keys().collect();
    pick(rng, ids.len()).map(|i| ids[i].clone())
}

/// A holder's request succeeds exactly when the model says it still holds the job; otherwise
/// it is refused as lost or cancelled, and nothing changes.
fn expect_fenced(
    m: &Model,
    lease: &Lease,
    answer: Result<(), QueueError>,
    what: &str,
) -> Result<(), String> {
    match (m.holds(lease), answer) {
        (true, Ok(())) => Ok(()),
        (false, Err(e)) if e.voids_lease() => Ok(()),
        (holds, answer) => Err(format!(
            "{what} of {} (token {}): {answer:?}, but the model says it {} the job",
            lease.id,
            lease.token,
            if holds { "holds" } else { "no longer holds" }
        )),
    }
}

/// Every job's state in the records is the model's.
async fn check_states(q: &dyn videofarm_core::Backend, m: &Model) -> Result<(), String> {
    let records = q
        .jobs(&JobFilter {
            ids: Some(m.jobs.keys().cloned().collect()),
            ..Default::default()
        })
        .await
        .map_err(|e| format!("jobs: {e}"))?;
    for (id, job) in &m.jobs {
        let Some(record) = records.iter().find(|r| &r.id == id) else {
            return Err(format!("job {id} is missing from the records"));
        };
        if record.state != job.state {
            return Err(format!(
                "job {id} is {} in the records, {} in the model ({job:?})",
                record.state, job.state
            ));
        }
    }
    Ok(())
}
