//! `videofarm status`: job counts by state, the number of live workers, and what any watch
//! cannot do right now.

use crate::broker::open_queue;
use crate::error::ExitStatus;
use crate::settings::{Output, Settings};
use std::io::Write;

pub async fn status(settings: &Settings, args: Output) -> anyhow::Result<ExitStatus> {
    let mut out = std::io::stdout();
    let queue = open_queue(settings).await?;
    let counts = queue.counts().await?;
    let workers = queue.worker_count().await?;
    let watches = queue.watch_problems().await?;
    if args.json {
        let mut value = serde_json::to_value(counts)?;
        value["workers"] = workers.into();
        value["watch_problems"] = serde_json::to_value(&watches)?;
        writeln!(out, "{value}")?;
    } else {
        let plural = if workers == 1 { "" } else { "s" };
        writeln!(out,
            "queued {} (retrying {})  running {}  succeeded {}  failed {}  cancelled {}  ({workers} live worker{plural})",
            counts.queued, counts.retrying, counts.running, counts.succeeded, counts.failed, counts.cancelled
        )?;
        for watch in &watches {
            for problem in &watch.problems {
                writeln!(
                    out,
                    "watch problem on {} (pid {}): {problem}",
                    watch.host, watch.pid
                )?;
            }
        }
    }
    Ok(ExitStatus::Success)
}
