//! `videofarm events`: a live tail of the farm's lifecycle events, like `celery events`.

use super::{describe_progress, human_duration, shown};
use crate::error::{ExitStatus, UsageError};
use crate::settings::{Broker, Settings};
use videofarm_core::Event;

pub async fn events(settings: &Settings, json: bool) -> anyhow::Result<ExitStatus> {
    let Broker::Amqp(url) = &settings.broker else {
        return Err(UsageError::new(
            "`events` follows a RabbitMQ farm (--broker amqp://...); with the embedded queue use `inspect` and `status`",
        )
        .into());
    };
    let queue = crate::broker::open_amqp(settings, url).await?;
    let mut stream = queue.subscribe_events().await?;
    eprintln!(
        "following events on {}; stop with Ctrl-C",
        settings.broker.describe()
    );
    while let Some(event) = stream.next().await {
        let event = event.map_err(|e| anyhow::anyhow!("the broker connection ended: {e}"))?;
        if json {
            println!("{}", serde_json::to_string(&event)?);
        } else {
            println!("{}", describe(&event));
        }
    }
    Ok(ExitStatus::Success)
}

fn describe(event: &Event) -> String {
    match event {
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
