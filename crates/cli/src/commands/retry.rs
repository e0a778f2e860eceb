//! `videofarm retry`: queue failed or cancelled jobs again.

use super::job_ids;
use crate::broker::open_queue;
use crate::cli::RetryArgs;
use crate::error::ExitStatus;
use crate::settings::Settings;

pub async fn retry(settings: &Settings, args: RetryArgs) -> anyhow::Result<ExitStatus> {
    let queue = open_queue(settings).await?;
    let retried = if args.all_failed {
        queue.retry_all_failed().await?
    } else {
        queue.retry(&job_ids(&args.ids)?).await?
    };
    println!(
        "queued again: {}",
        if retried.is_empty() {
            "nothing".to_owned()
        } else {
            retried
                .iter()
                .map(|id| id.0.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        }
    );
    Ok(ExitStatus::Success)
}
