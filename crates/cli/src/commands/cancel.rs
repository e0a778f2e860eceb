//! `videofarm cancel`: stop queued or running jobs.

use super::job_ids;
use crate::broker::open_queue;
use crate::cli::CancelArgs;
use crate::error::ExitStatus;
use crate::settings::Settings;

pub async fn cancel(settings: &Settings, args: CancelArgs) -> anyhow::Result<ExitStatus> {
    let queue = open_queue(settings).await?;
    let cancelled = queue.cancel(&job_ids(&args.ids)?).await?;
    println!(
        "cancelled: {} (a running encode stops within a heartbeat and its partial output is removed)",
        cancelled.iter().map(|id| id.0.as_str()).collect::<Vec<_>>().join(" ")
    );
    Ok(ExitStatus::Success)
}
