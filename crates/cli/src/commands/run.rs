//! `videofarm run`: the main job. Queue every video found, run local workers with progress
//! bars, wait until every job of this batch is done, and print a summary.

use super::{
    enqueue_planned, human_duration, human_size, locate_tools, shown, stop_on_signal,
    worker_settings,
};
use crate::broker::{open_queue, worker_info};
use crate::cli::RunArgs;
use crate::error::{ExitStatus, UsageError};
use crate::scan;
use crate::settings::Settings;
use crate::ui::ProgressUi;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use videofarm_core::{Enqueued, Event, JobFilter, JobRecord, JobState};
use videofarm_worker::Worker;

pub async fn run(settings: &Settings, args: RunArgs) -> anyhow::Result<ExitStatus> {
    let profile = settings.profile(args.inputs.profile.as_deref())?.clone();
    let tools = locate_tools(settings)?;
    let planned = scan::plan(&args.inputs.paths, &args.inputs.out, &profile.extension)?;
    if planned.is_empty() {
        return Err(UsageError::new("no video files found in the given paths").into());
    }
    let queue = open_queue(settings).await?;
    let enqueued = enqueue_planned(queue.as_ref(), &planned, &profile, &args.inputs).await?;
    let ids: Vec<_> = enqueued.iter().map(|e| e.id().clone()).collect();
    let already_done: std::collections::HashSet<_> = enqueued
        .iter()
        .filter(|e| matches!(e, Enqueued::Duplicate(_, JobState::Succeeded)))
        .map(|e| e.id().clone())
        .collect();

    let concurrency = args
        .workers
        .filter(|n| *n > 0)
        .unwrap_or(settings.workers)
        .min(planned.len() as u32)
        .max(1);
    let worker = Arc::new(Worker::new(
        queue.clone(),
        worker_settings(settings, tools, worker_info(None, concurrency)),
    ));
    let mut events = worker.subscribe();
    let mut ui =
        (!args.json).then(|| ProgressUi::new(ids.iter().cloned(), already_done.len() as u64));

    let (drain, abort) = (CancellationToken::new(), CancellationToken::new());
    stop_on_signal(abort.clone());
    let running = {
        let (worker, drain, abort) = (worker.clone(), drain.clone(), abort.clone());
        tokio::spawn(async move { worker.run(drain, abort).await })
    };

    let filter = JobFilter {
        state: None,
        ids: Some(ids.clone()),
    };
    let mut check = tokio::time::interval(Duration::from_millis(500));
    let records = loop {
        tokio::select! {
            event = events.recv() => {
                let Ok(event) = event else { continue };
                if let Some(ui) = ui.as_mut() {
                    ui.handle(&event);
                }
                // Look at the batch as soon as a job of it ends, not at the next tick.
                let ended = matches!(event, Event::JobSucceeded { .. } | Event::JobFailed { .. } | Event::JobLost { .. });
                if !ended {
                    continue;
                }
            }
            _ = abort.cancelled() => break None,
            _ = check.tick() => {}
        }
        let records = queue.jobs(&filter).await?;
        let finished = records.iter().filter(|r| r.state.is_terminal()).count();
        if let Some(ui) = ui.as_mut() {
            ui.set_finished(finished as u64);
        }
        if finished == ids.len() {
            break Some(records);
        }
    };
    drain.cancel();
    // Keep showing events while the worker stops, so releases are shown.
    let mut running = running;
    let stopped = loop {
        tokio::select! {
            event = events.recv() => {
                if let (Ok(event), Some(ui)) = (event, ui.as_mut()) {
                    ui.handle(&event);
                }
            }
            stopped = &mut running => break stopped,
        }
    };
    stopped??;
    if let Some(ui) = &ui {
        ui.finish();
    }
    let interrupted = records.is_none();
    let records = match records {
        Some(records) => records,
        None => queue.jobs(&filter).await?,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&records)?);
    } else {
        print_summary(&records, &already_done);
    }
    Ok(if interrupted {
        eprintln!("stopped: unfinished jobs are back in the queue; run the same command again to continue");
        ExitStatus::Interrupted
    } else if records.iter().all(|r| r.state == JobState::Succeeded) {
        ExitStatus::Success
    } else {
        ExitStatus::Failure
    })
}

fn print_summary(
    records: &[JobRecord],
    already_done: &std::collections::HashSet<videofarm_core::JobId>,
) {
    println!();
    println!(
        "{:<40}  {:<12}  {:>8}  {:>21}  {:>8}",
        "FILE", "RESULT", "DURATION", "SIZE IN -> OUT", "TIME"
    );
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
        println!("{name:<40}  {result:<12}  {duration:>8}  {sizes:>21}  {time:>8}");
        if job.state != JobState::Succeeded {
            failed += 1;
            if let Some(error) = &job.error {
                println!("    {error}");
            }
        }
    }
    println!();
    println!("{} succeeded, {failed} not", records.len() - failed);
}
