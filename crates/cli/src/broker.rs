//! Opening the queue a [`Broker`] names, and describing this worker process.

use crate::error::UsageError;
use crate::settings::{Broker, Settings};
use anyhow::Context;
use std::sync::Arc;
use videofarm_core::{Clock, Queue, SystemClock, WorkerInfo};
use videofarm_queue_sqlite::SqliteQueue;

pub async fn open_queue(settings: &Settings) -> anyhow::Result<Arc<dyn Queue>> {
    match &settings.broker {
        Broker::Sqlite(path) => {
            let queue = SqliteQueue::open(path, settings.queue.clone())
                .map_err(|e| UsageError::new(e.to_string()))
                .with_context(|| format!("opening the queue {}", settings.broker.describe()))?;
            Ok(Arc::new(queue))
        }
        Broker::Amqp(_) => Err(UsageError::new(format!(
            "the RabbitMQ backend is not in this build yet ({}); use sqlite:<file>",
            settings.broker.describe()
        ))
        .into()),
    }
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
    let pid = std::process::id();
    WorkerInfo {
        name: name
            .map(str::to_owned)
            .unwrap_or_else(|| format!("{host}:{pid}")),
        pid,
        host,
        started_ms: SystemClock.now_ms(),
        concurrency,
    }
}
