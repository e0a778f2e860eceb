//! `videofarm status`: job counts by state and the number of live workers.

use crate::broker::open_queue;
use crate::cli::JsonArgs;
use crate::error::ExitStatus;
use crate::settings::Settings;

pub async fn status(settings: &Settings, args: JsonArgs) -> anyhow::Result<ExitStatus> {
    let queue = open_queue(settings).await?;
    let counts = queue.counts().await?;
    let workers = queue.worker_count().await?;
    if args.json {
        let mut value = serde_json::to_value(counts)?;
        value["workers"] = workers.into();
        println!("{value}");
    } else {
        let plural = if workers == 1 { "" } else { "s" };
        println!(
            "queued {} (retrying {})  running {}  succeeded {}  failed {}  cancelled {}  ({workers} live worker{plural})",
            counts.queued, counts.retrying, counts.running, counts.succeeded, counts.failed, counts.cancelled
        );
    }
    Ok(ExitStatus::Success)
}
