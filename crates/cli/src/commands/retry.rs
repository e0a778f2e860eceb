//! `videofarm retry`: queue failed or cancelled jobs again (see `videofarm_core::lifecycle`).

use super::{job_ids, report_answers};
use crate::broker::open_queue;
use crate::cli::RetryArgs;
use crate::error::ExitStatus;
use crate::settings::Settings;
use videofarm_core::lifecycle::Request;

pub async fn retry(settings: &Settings, args: RetryArgs) -> anyhow::Result<ExitStatus> {
    let queue = open_queue(settings).await?;
    let answers = if args.all_failed {
        let answers = queue.retry_all_failed().await?;
        if answers.is_empty() {
            say!("queued again: nothing (no job has failed)");
        }
        answers
    } else {
        queue.retry(&job_ids(&args.ids)?).await?
    };
    Ok(report_answers(&answers, Request::Retry))
}
