//! `videofarm cancel`: stop queued or running jobs.

use super::job_ids;
use crate::broker::open_queue;
use crate::cli::CancelArgs;
use crate::error::ExitStatus;
use crate::settings::Settings;
use std::path::PathBuf;
use tokio::time::Instant;
use videofarm_core::split::work_dir;
use videofarm_core::JobFilter;

pub async fn cancel(settings: &Settings, args: CancelArgs) -> anyhow::Result<ExitStatus> {
    let queue = open_queue(settings).await?;
    let ids = job_ids(&args.ids)?;
    // Split tapes among them: their work folders go too, once their chunks have stopped.
    let tapes: Vec<PathBuf> = queue
        .jobs(&JobFilter {
            state: None,
            ids: Some(ids.clone()),
            chunks: false,
            ..Default::default()
        })
        .await?
        .into_iter()
        .filter(|r| !r.spec.split.is_off())
        .map(|r| work_dir(&r.spec.output))
        .collect();
    let cancelled = queue.cancel(&ids).await?;
    if !cancelled.is_empty() {
        println!(
            "cancelled: {} (a running encode stops within a heartbeat and its partial output is removed)",
            cancelled.iter().map(|id| id.0.as_str()).collect::<Vec<_>>().join(" ")
        );
    }
    let late: Vec<&str> = ids
        .iter()
        .filter(|id| !cancelled.contains(id))
        .map(|id| id.0.as_str())
        .collect();
    if !late.is_empty() {
        println!(
            "too late to cancel: {} (verified and being put in place; it ends succeeded)",
            late.join(" ")
        );
    }
    if !tapes.is_empty() {
        // A chunk encoding right now stops at its next heartbeat and removes its temporary
        // file; look again until then.
        let deadline = Instant::now() + settings.heartbeat * 3;
        loop {
            for work in &tapes {
                let _ = std::fs::remove_dir_all(work);
            }
            if Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(settings.heartbeat / 2).await;
        }
    }
    Ok(ExitStatus::Success)
}
