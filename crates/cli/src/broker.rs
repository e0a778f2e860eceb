//! Opening the queue a [`Broker`] names, and describing this worker process.

use crate::error::UsageError;
use crate::settings::{Broker, Settings};
use anyhow::Context;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use videofarm_core::{Backend, Clock, SystemClock, WorkerInfo};
use videofarm_queue_amqp::{AmqpQueue, AmqpSettings};
use videofarm_queue_sqlite::SqliteQueue;

pub async fn open_queue(settings: &Settings) -> anyhow::Result<Arc<dyn Backend>> {
    match &settings.broker {
        Broker::Sqlite(path) => {
            let queue = SqliteQueue::open(path, settings.queue.clone())
                .map_err(|e| UsageError::new(e.to_string()))
                .with_context(|| format!("opening the queue {}", settings.broker.describe()))?;
            Ok(Arc::new(queue))
        }
        Broker::Amqp(url) => Ok(Arc::new(open_amqp(settings, url).await?)),
    }
}

/// Open the queue; a broker that is not up (yet) is waited for, said once, until `stop` fires
/// (then `None`). Wrong credentials or a wrong vhost are not waited for.
pub async fn open_queue_waiting(
    settings: &Settings,
    stop: &CancellationToken,
) -> anyhow::Result<Option<Arc<dyn Backend>>> {
    let mut said = false;
    let mut pause = Duration::from_millis(500);
    loop {
        match open_queue(settings).await {
            Ok(queue) => {
                if said {
                    let _ = writeln!(
                        std::io::stderr(),
                        "connected to {}",
                        settings.broker.describe()
                    );
                }
                return Ok(Some(queue));
            }
            Err(e) if is_unreachable(&e) => {
                if !said {
                    let _ = writeln!(
                        std::io::stderr(),
                        "waiting for {} ({}); retrying until it answers (Ctrl-C to stop)",
                        settings.broker.describe(),
                        e.root_cause()
                    );
                    said = true;
                }
                tokio::select! {
                    _ = stop.cancelled() => return Ok(None),
                    _ = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e),
        }
    }
}

/// True for a broker that is down or restarting (worth waiting for), not for one that refused
/// us.
pub(crate) fn is_unreachable(e: &anyhow::Error) -> bool {
    let text = format!("{e:#}");
    text.contains("cannot connect")
        && !["ACCESS_REFUSED", "NOT_ALLOWED", "access to vhost"]
            .iter()
            .any(|refused| text.contains(refused))
}

pub async fn open_amqp(settings: &Settings, url: &str) -> anyhow::Result<AmqpQueue> {
    let mut amqp = AmqpSettings::new(url);
    amqp.prefix = settings.amqp_prefix.clone();
    amqp.queue_expires = settings.amqp_queue_expires;
    amqp.consumer_timeout = settings.amqp_consumer_timeout;
    amqp.records_file = Some(
        settings
            .records_file
            .clone()
            .unwrap_or_else(|| default_records_file(settings)),
    );
    amqp.celery = settings.celery.clone();
    AmqpQueue::connect(amqp, settings.queue.clone())
        .await
        .with_context(|| format!("connecting to {}", settings.broker.describe()))
}

/// One records file per farm: per broker (host, port and vhost, never the password) and prefix.
fn default_records_file(settings: &Settings) -> std::path::PathBuf {
    // FNV-1a: stable across builds, which std's hasher does not promise.
    let farm = settings.broker.describe();
    let hash = farm.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let prefix: String = settings
        .amqp_prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    dirs::data_dir()
        .unwrap_or_else(|| std::path::PathBuf::from("."))
        .join("videofarm")
        .join(format!("records-{prefix}-{:08x}.db", hash as u32))
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// This process as a worker.
pub fn worker_info(name: Option<&str>, concurrency: u32) -> WorkerInfo {
    let host = hostname();
    let name = name
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{host}:{}", std::process::id()));
    WorkerInfo {
        started_ms: SystemClock.now_ms(),
        concurrency,
        ..WorkerInfo::new(&name, &host)
    }
}
