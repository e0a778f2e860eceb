//! `videofarm status`: job counts by state and the number of live workers.

use crate::broker::open_queue;
use crate::error::ExitStatus;
use crate::settings::{Output, Settings};
use std::io::Write;

pub async fn status(settings: &Settings, args: Output) -> anyhow::Result<ExitStatus> {
    let mut out = std::io::stdout();
    let queue = open_queue(settings).await?;
    let counts = queue.counts().await?;
    let workers = queue.worker_count().await?;
    if args.json {
        let mut value = serde_json::to_value(counts)?;
        value["workers"] = workers.into();
        writeln!(out, "{value}")?;
    } else {
        let plural = if workers == 1 { "" } else { "s" };
        writeln!(out,
            "queued {} (retrying {})  running {}  succeeded {}  failed {}  cancelled {}  ({workers} live worker{plural})",
            counts.queued, counts.retrying, counts.running, counts.succeeded, counts.failed, counts.cancelled
        )?;
    }
    Ok(ExitStatus::Success)
}
