//! `videofarm events`: a live tail of the farm's lifecycle events, like `celery events`.

use super::{describe_progress, human_duration, shown, stop_on_signal};
use crate::broker::open_queue;
use crate::error::{ExitStatus, UsageError};
use crate::settings::{Output, Settings};
use std::io::Write;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use videofarm_core::Event;

pub async fn events(settings: &Settings, output: Output) -> anyhow::Result<ExitStatus> {
    let json = output.json;
    let stop = CancellationToken::new();
    stop_on_signal(stop.clone());
    let queue = open_queue(settings).await?;
    let Some(mut feed) = queue.subscribe_events().await? else {
        return Err(UsageError::new(
            "the embedded queue has no shared event stream (each `run` and `worker` shows its own); use `inspect` and `status`, or a RabbitMQ farm (--broker amqp://...)",
        )
        .into());
    };
    note!(
        "following events on {}; stop with Ctrl-C",
        settings.broker.describe()
    );
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => return Ok(ExitStatus::Success),
            event = feed.next() => event,
        };
        match event {
            Some(Ok(event)) => {
                let line = if json {
                    serde_json::to_string(&event)?
                } else {
                    describe(&event)
                };
                // A closed pipe (`| head`) ends the tail quietly.
                if writeln!(std::io::stdout(), "{line}").is_err() {
                    return Ok(ExitStatus::Success);
                }
            }
            Some(Err(_)) | None => {
                // A broker restart or a closed connection: follow again once it answers.
                note!("lost the event stream; following it again when the broker answers");
                feed = loop {
                    tokio::select! {
                        _ = stop.cancelled() => return Ok(ExitStatus::Success),
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                    if let Ok(Some(feed)) = queue.subscribe_events().await {
                        note!("following events again (what happened meanwhile is in `jobs`)");
                        break feed;
                    }
                };
            }
        }
    }
}

fn describe(event: &Event) -> String {
    match event {
        Event::JobsCancelled { ids } => format!("cancelled  {}", joined(ids)),
        Event::JobsRetried { ids } => format!("retried    {}", joined(ids)),
        Event::JobQueued { id, input, profile } => {
            format!("queued     {id} {} [{profile}]", shown(input))
        }
        Event::JobStarted {
            id,
            worker,
            input,
            attempt,
            ..
        } => {
            format!(
                "started    {id} on {worker} (attempt {attempt}): {}",
                shown(input)
            )
        }
        Event::JobProgress {
            id,
            worker,
            progress,
        } => format!(
            "progress   {id} on {worker}: {:.1}%  {}",
            progress.progress * 100.0,
            describe_progress(progress)
        ),
        Event::JobSucceeded { id, worker, report } => {
            format!(
                "succeeded  {id} on {worker} in {}",
                human_duration(report.elapsed_s)
            )
        }
        Event::JobFailed {
            id,
            worker,
            attempt,
            failure,
        } => {
            format!(
                "failed     {id} on {worker} (attempt {attempt}): {}",
                failure.reason
            )
        }
        Event::JobReleased { id, worker } => format!("released   {id} by {worker}"),
        Event::JobLost { id, worker, reason } => format!("lost       {id} on {worker}: {reason}"),
        Event::WorkerOnline { worker } => format!(
            "online     {} (pid {} on {})",
            worker.name, worker.pid, worker.host
        ),
        Event::WorkerOffline { name } => format!("offline    {name}"),
    }
}

fn joined(ids: &[videofarm_core::JobId]) -> String {
    ids.iter()
        .map(|id| id.0.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}
