//! `videofarm cancel`: stop queued or running jobs. What a cancel does (and cleans up) is the
//! queue's and the workers' (see `videofarm_core::lifecycle`); this prints the answers.

use super::report_answers;
use crate::broker::open_queue;
use crate::error::ExitStatus;
use crate::settings::{CancelSettings, Settings};
use videofarm_core::lifecycle::Request;

pub async fn cancel(settings: &Settings, args: CancelSettings) -> anyhow::Result<ExitStatus> {
    let queue = open_queue(settings).await?;
    let answers = queue.cancel(&args.ids).await?;
    Ok(report_answers(&answers, Request::Cancel))
}
