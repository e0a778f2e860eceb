//! `videofarm retry`: queue failed or cancelled jobs again (see `videofarm_core::lifecycle`).

use super::report_answers;
use crate::broker::open_queue;
use crate::error::ExitStatus;
use crate::settings::{RetrySettings, Settings};
use videofarm_core::lifecycle::Request;

pub async fn retry(settings: &Settings, asked: RetrySettings) -> anyhow::Result<ExitStatus> {
    let queue = open_queue(settings).await?;
    let answers = match asked {
        RetrySettings::AllFailed => {
            let answers = queue.retry_all_failed().await?;
            if answers.is_empty() {
                say!("queued again: nothing (no job has failed)");
            }
            answers
        }
        RetrySettings::Jobs(ids) => queue.retry(&ids).await?,
    };
    Ok(report_answers(&answers, Request::Retry))
}
