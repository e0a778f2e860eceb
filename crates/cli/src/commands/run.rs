//! `videofarm run`: the main job. Queue every video found, run local workers with progress
//! bars, wait until every job of this batch is done, and print a summary.
//!
//! The queue's records say when each job is done, whichever worker ran it; events (the farm's
//! where the backend shares them) drive the progress display.

use super::{
    enqueue_batch, human_duration, human_size, locate_tools, plan_batch, shown, stop_on_signal,
    try_later, with_capabilities, worker_settings,
};
use crate::broker::{open_queue_waiting, worker_info};
use crate::error::{ExitStatus, UsageError};
use crate::settings::{RunSettings, Settings};
use crate::ui::ProgressUi;
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use videofarm_core::plan::Planned;
use videofarm_core::Profile;
use videofarm_core::{
    Backend, Enqueued, Event, EventFeed, JobFilter, JobId, JobRecord, JobSpec, JobState, QueueError,
};
use videofarm_ffmpeg::Tools;
use videofarm_worker::Worker;

/// Where `run` learns what happens to its jobs as it happens: its own workers' events and,
/// where the backend has a shared event stream, the whole farm's (so jobs that workers on
/// other machines run show too). When a job is done is read from the queue's records.
struct EventSource {
    queue: Arc<dyn Backend>,
    shared: Option<Box<dyn EventFeed>>,
    /// The backend has a shared stream: follow it again after a lost connection.
    has_shared: bool,
    local: broadcast::Receiver<Event>,
}

impl EventSource {
    async fn open(
        queue: Arc<dyn Backend>,
        local: broadcast::Receiver<Event>,
    ) -> anyhow::Result<Self> {
        let shared = queue.subscribe_events().await?;
        Ok(Self {
            queue,
            has_shared: shared.is_some(),
            shared,
            local,
        })
    }

    /// The next event; `None` once the local workers are gone.
    async fn next(&mut self) -> Option<Event> {
        loop {
            let Some(remote) = self.shared.as_mut() else {
                return match self.local.recv().await {
                    Ok(event) => Some(event),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => None,
                };
            };
            tokio::select! {
                event = remote.next() => match event {
                    Some(Ok(event)) => return Some(event),
                    _ => {
                        self.shared = None;
                        continue;
                    }
                },
                event = self.local.recv() => match event {
                    // Seen on the shared stream too while it is up.
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
            }
        }
    }

    /// Follow the shared events again after a lost connection (what was published meanwhile
    /// is missed by the progress display only: the records have it).
    async fn reconnect(&mut self) {
        if self.has_shared && self.shared.is_none() {
            if let Ok(feed) = self.queue.subscribe_events().await {
                self.shared = feed;
            }
        }
    }
}

pub async fn run(settings: &Settings, args: RunSettings) -> anyhow::Result<ExitStatus> {
    let batch = plan_batch(settings, &args.batch)?;
    let tools = locate_tools(settings)?;
    let abort = CancellationToken::new();
    stop_on_signal(abort.clone());
    // A broker not up yet is waited for, as a worker waits (said once).
    let Some(queue) = open_queue_waiting(settings, &abort).await? else {
        return Ok(ExitStatus::Interrupted);
    };
    let worker = local_worker(settings, tools, &queue, &batch, &args).await?;
    // Subscribe before anything is queued, so no event of this batch is missed.
    let mut source = EventSource::open(queue.clone(), worker.subscribe()).await?;

    let enqueued = enqueue_batch(queue.as_ref(), &batch, &args.batch).await?;
    let ids: Vec<JobId> = enqueued.iter().map(|(_, e)| e.id().clone()).collect();
    let specs: HashMap<JobId, JobSpec> = enqueued
        .iter()
        .map(|(s, e)| (e.id().clone(), s.clone()))
        .collect();
    let already_done: HashSet<JobId> = enqueued
        .iter()
        .filter(|(_, e)| matches!(e, Enqueued::Duplicate(_, JobState::Succeeded)))
        .map(|(_, e)| e.id().clone())
        .collect();
    let mut ui = ProgressUi::new(
        enqueued
            .iter()
            .map(|(spec, e)| (e.id().clone(), spec.input.clone(), spec.input_size)),
        already_done.len() as u64,
        args.json,
    );

    let drain = CancellationToken::new();
    let mut running = {
        let (worker, drain, abort) = (worker.clone(), drain.clone(), abort.clone());
        tokio::spawn(async move { worker.run(drain, abort).await })
    };

    let filter = JobFilter {
        ids: Some(ids.clone()),
        ..Default::default()
    };
    let mut finished: HashMap<JobId, JobRecord> = HashMap::new();
    let mut check = every(Duration::from_millis(500));
    let mut source_open = true;
    let mut outage: Option<Instant> = None;
    let interrupted = loop {
        tokio::select! {
            // Events first: a slow queue check must never let them pile up.
            biased;
            _ = abort.cancelled() => break true,
            event = source.next(), if source_open => {
                let Some(event) = event else {
                    // The broker connection ended: the periodic check still sees failures.
                    source_open = false;
                    continue;
                };
                ui.handle(&event);
                // A success seen in the events is final; failures are read from the queue.
                if let Event::JobSucceeded { id, worker, report } = &event {
                    if let Some(spec) = specs.get(id) {
                        finished.insert(id.clone(), succeeded(id, spec, worker, report));
                    }
                }
                if !matches!(event, Event::JobSucceeded { .. } | Event::JobFailed { .. } | Event::JobLost { .. }) {
                    continue;
                }
            }
            _ = check.tick() => {}
        }
        source.reconnect().await;
        if !look(queue.as_ref(), &filter, &mut finished, &mut outage).await? {
            continue;
        }
        ui.set_finished(
            finished
                .iter()
                .map(|(id, r)| (id, r.result.as_ref().map(|r| r.duration_s))),
        );
        if ids.iter().all(|id| finished.contains_key(id)) {
            break false;
        }
    };
    drain.cancel();
    until_stopped(&mut source, &mut ui, &mut running, source_open).await??;
    drop(worker);
    ui.finish();
    for record in queue.jobs(&filter).await? {
        if record.state.is_terminal() || interrupted {
            finished.insert(record.id.clone(), record);
        }
    }
    let records: Vec<JobRecord> = ids.iter().filter_map(|id| finished.remove(id)).collect();
    report(&records, &already_done, args.json, interrupted)
}

/// This process's own worker for the batch, once some worker (it or another) can run each of
/// the batch's profiles. The batch's profiles are tried now if need be; the rest once its
/// first job is taken.
async fn local_worker(
    settings: &Settings,
    tools: Tools,
    queue: &Arc<dyn Backend>,
    batch: &[(Profile, Vec<Planned>)],
    args: &RunSettings,
) -> anyhow::Result<Arc<Worker>> {
    let files = batch.iter().map(|(_, planned)| planned.len()).sum();
    let concurrency = encoders(args, files);
    let first: Vec<String> = batch.iter().map(|(p, _)| p.name.clone()).collect();
    let (info, later) =
        with_capabilities(settings, &tools, worker_info(None, concurrency), &first).await;
    for (profile, _) in batch {
        someone_can_run(queue.as_ref(), &info, profile, &args.batch.require).await?;
    }
    let worker = Arc::new(Worker::new(
        queue.clone(),
        worker_settings(settings, tools, info),
    ));
    try_later(worker.clone(), later);
    Ok(worker)
}

/// A ticker that waits a whole period after a late tick instead of catching up.
fn every(period: Duration) -> tokio::time::Interval {
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker
}

/// Keep showing events while the local worker stops (so releases are shown), until it has.
async fn until_stopped<T>(
    source: &mut EventSource,
    ui: &mut ProgressUi,
    running: &mut tokio::task::JoinHandle<T>,
    mut source_open: bool,
) -> Result<T, tokio::task::JoinError> {
    loop {
        tokio::select! {
            event = source.next(), if source_open => {
                match event {
                    Some(event) => ui.handle(&event),
                    None => source_open = false,
                }
            }
            stopped = &mut *running => return stopped,
        }
    }
}

/// Encodes at once: the configured number, but more than files only when a file may be split
/// into chunks.
fn encoders(args: &RunSettings, files: usize) -> u32 {
    args.workers
        .min(match args.batch.split {
            videofarm_core::Split::Off => files as u32,
            _ => u32::MAX,
        })
        .max(1)
}

/// Refuse a batch that nothing can encode (this machine cannot run the profile and no live
/// worker that can is connected), before anything is queued.
async fn someone_can_run(
    queue: &dyn videofarm_core::Backend,
    here: &videofarm_core::WorkerInfo,
    profile: &videofarm_core::Profile,
    require: &[String],
) -> anyhow::Result<()> {
    let wanted = videofarm_core::JobSpec {
        profile: profile.name.clone(),
        require: require.to_vec(),
        ..Default::default()
    };
    if here.can_run(&wanted) {
        return Ok(());
    }
    let elsewhere = queue.workers().await.unwrap_or_default();
    if elsewhere.iter().any(|w| w.can_run(&wanted)) {
        return Ok(());
    }
    Err(UsageError::new(format!(
        "this machine cannot run profile {} (see above) and no live worker that can is connected; pick another profile (`videofarm profiles`) or start a worker that can",
        profile.name
    ))
    .into())
}

/// Read the batch's jobs from the queue into `finished` (the ended ones). A broker outage is
/// ridden out: said once, and `false` until the queue answers again (the local workers
/// reconnect by themselves).
async fn look(
    queue: &dyn videofarm_core::Backend,
    filter: &JobFilter,
    finished: &mut HashMap<JobId, JobRecord>,
    outage: &mut Option<Instant>,
) -> anyhow::Result<bool> {
    match queue.jobs(filter).await {
        Ok(records) => {
            if outage.take().is_some() {
                let _ = writeln!(std::io::stderr(), "the queue answers again");
            }
            for record in records {
                if record.state.is_terminal() {
                    finished.insert(record.id.clone(), record);
                }
            }
            Ok(true)
        }
        Err(QueueError::Backend(why)) => {
            if outage.is_none() {
                let _ = writeln!(
                    std::io::stderr(),
                    "the queue does not answer ({why}); waiting for it"
                );
                *outage = Some(Instant::now());
            }
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

/// The batch's results (a JSON line per job, or the summary) and the exit status.
fn report(
    records: &[JobRecord],
    already_done: &HashSet<JobId>,
    json: bool,
    interrupted: bool,
) -> anyhow::Result<ExitStatus> {
    if json {
        // One line per job as it ended, after the batch's event lines.
        for record in records {
            let mut line = serde_json::to_value(record)?;
            line["type"] = "result".into();
            if writeln!(std::io::stdout(), "{line}").is_err() {
                // The reader went away (`run --json | head -1`): the batch's status still counts.
                break;
            }
        }
    } else if let Err(e) = print_summary(records, already_done) {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            return Err(e.into());
        }
    }
    Ok(if interrupted {
        note!("stopped: unfinished jobs are back in the queue; run the same command again to continue");
        ExitStatus::Interrupted
    } else if records.iter().all(|r| r.state == JobState::Succeeded) {
        ExitStatus::Success
    } else {
        ExitStatus::Failure
    })
}

/// A finished job as its event describes it, until the records are read again.
fn succeeded(
    id: &JobId,
    spec: &JobSpec,
    worker: &str,
    report: &videofarm_core::SuccessReport,
) -> JobRecord {
    JobRecord {
        id: id.clone(),
        state: JobState::Succeeded,
        spec: spec.clone(),
        attempts: 0,
        max_attempts: 0,
        error: None,
        stderr_tail: None,
        worker: Some(worker.to_owned()),
        progress: Some(report.final_progress()),
        result: Some(report.clone()),
        created_ms: 0,
        started_ms: None,
        finished_ms: None,
        waiting_for: None,
    }
}

fn print_summary(records: &[JobRecord], already_done: &HashSet<JobId>) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out)?;
    writeln!(
        out,
        "{:<40}  {:<12}  {:>8}  {:>21}  {:>8}",
        "FILE", "RESULT", "DURATION", "SIZE IN -> OUT", "TIME"
    )?;
    let mut failed = 0;
    for job in records {
        let name = job
            .spec
            .input
            .file_name()
            .map(|n| shown(n.as_ref()))
            .unwrap_or_default();
        let (result, duration, sizes, time) = match (&job.state, &job.result) {
            (JobState::Succeeded, Some(r)) => (
                if r.already_done || already_done.contains(&job.id) {
                    "already done"
                } else if !r.warnings.is_empty() {
                    "ok, damaged"
                } else {
                    "ok"
                }
                .to_owned(),
                human_duration(r.duration_s),
                format!(
                    "{} -> {}",
                    human_size(r.input_size),
                    human_size(r.output_size)
                ),
                human_duration(r.elapsed_s),
            ),
            (state, _) => (
                state.as_str().to_owned(),
                "-".into(),
                "-".into(),
                "-".into(),
            ),
        };
        writeln!(
            out,
            "{name:<40}  {result:<12}  {duration:>8}  {sizes:>21}  {time:>8}"
        )?;
        if let Some(tape) = job.result.as_ref().and_then(|r| r.tape.as_deref()) {
            writeln!(
                out,
                "    tape: {} (videofarm report {})",
                tape.verdict, job.id.0
            )?;
        }
        for line in job
            .result
            .iter()
            .flat_map(|r| r.note.iter().chain(&r.warnings))
        {
            writeln!(out, "    {line}")?;
        }
        if job.state != JobState::Succeeded {
            failed += 1;
            if let Some(error) = &job.error {
                writeln!(out, "    {error}")?;
            }
        }
    }
    writeln!(out)?;
    let succeeded = records.len() - failed;
    match failed {
        0 => writeln!(out, "{succeeded} succeeded")?,
        _ => writeln!(out, "{succeeded} succeeded, {failed} did not")?,
    }
    Ok(())
}
