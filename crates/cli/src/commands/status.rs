//! `videofarm status`: job counts by state and the number of live workers.

use crate::broker::open_queue;
use crate::cli::JsonArgs;
use crate::error::ExitStatus;
use crate::settings::Settings;

pub async fn status(settings: &Settings, args: JsonArgs) -> anyhow::Result<ExitStatus> {
    let queue = open_queue(settings).await?;
    let counts = queue.counts().await?;
    if args.json {
        println!("{}", serde_json::to_string(&counts)?);
    } else {
        let workers = queue.workers().await?.len();
        println!(
            "queued {}  running {}  succeeded {}  failed {}  cancelled {}  ({workers} live worker{})",
            counts.queued,
            counts.running,
            counts.succeeded,
            counts.failed,
            counts.cancelled,
            if workers == 1 { "" } else { "s" }
        );
    }
    Ok(ExitStatus::Success)
}
