//! `videofarm cancel`: stop queued or running jobs. What a cancel does (and cleans up) is the
//! queue's and the workers' (see `videofarm_core::lifecycle`); this prints the answers.

use super::{job_ids, report_answers};
use crate::broker::open_queue;
use crate::cli::CancelArgs;
use crate::error::ExitStatus;
use crate::settings::Settings;
use videofarm_core::lifecycle::Request;

pub async fn cancel(settings: &Settings, args: CancelArgs) -> anyhow::Result<ExitStatus> {
    let queue = open_queue(settings).await?;
    let answers = queue.cancel(&job_ids(&args.ids)?).await?;
    Ok(report_answers(&answers, Request::Cancel))
}
