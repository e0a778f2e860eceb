//! `videofarm status`: job counts by state and the number of live workers.

use crate::broker::open_queue;
use crate::cli::JsonArgs;
use crate::error::ExitStatus;
use crate::settings::Settings;

pub async fn status(settings: &Settings, args: JsonArgs) -> anyhow::Result<ExitStatus> {
    let queue = open_queue(settings).await?;
    let counts = queue.counts().await?;
    let workers = queue.workers().await?.len();
    if args.json {
        let mut value = serde_json::to_value(counts)?;
        value["workers"] = workers.into();
        println!("{value}");
    } else {
        let plural = if workers == 1 { "" } else { "s" };
        match settings.broker {
            // The broker counts what is in its queues; finished jobs leave no trace there.
            crate::settings::Broker::Amqp(_) => println!(
                "ready {}  retrying {}  in flight {}  failed {}  ({workers} live worker{plural})",
                counts.queued - counts.retrying,
                counts.retrying,
                counts.running,
                counts.failed
            ),
            crate::settings::Broker::Sqlite(_) => println!(
                "queued {} (retrying {})  running {}  succeeded {}  failed {}  cancelled {}  ({workers} live worker{plural})",
                counts.queued, counts.retrying, counts.running, counts.succeeded, counts.failed, counts.cancelled
            ),
        }
    }
    Ok(ExitStatus::Success)
}
