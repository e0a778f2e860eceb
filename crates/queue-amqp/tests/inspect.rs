//! `inspect` on RabbitMQ asks every worker and returns once every live one has answered (the
//! broker counts them: each worker's control responder consumes one shared queue), not after
//! a fixed wait; with no worker at all it returns at once. The timeout here is far longer than
//! any answer takes, so waiting it out would show.

use std::time::{Duration, Instant};
use videofarm_core::{Queue, QueueSettings, Records, WorkerInfo};
use videofarm_queue_amqp::{delete_farm_blocking, AmqpQueue, AmqpSettings};

fn url() -> String {
    std::env::var("VIDEOFARM_TEST_AMQP")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

struct Cleanup(String);
impl Drop for Cleanup {
    fn drop(&mut self) {
        delete_farm_blocking(&url(), &self.0);
    }
}

/// Far longer than an answer takes: a test that waited it out would take a minute.
const TIMEOUT: Duration = Duration::from_secs(60);

async fn open(prefix: &str) -> AmqpQueue {
    let mut settings = AmqpSettings::new(&url());
    settings.prefix = prefix.to_owned();
    settings.queue_expires = Some(Duration::from_secs(600));
    settings.inspect_timeout = TIMEOUT;
    AmqpQueue::connect(settings, QueueSettings::default())
        .await
        .expect("RabbitMQ must be running for these tests")
}

#[tokio::test]
async fn inspect_returns_when_every_live_worker_has_answered() {
    let prefix = format!(
        "vftest-inspect-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    let _cleanup = Cleanup(prefix.clone());
    let asker = open(&prefix).await;

    let started = Instant::now();
    assert!(asker.workers().await.unwrap().is_empty());
    assert!(
        started.elapsed() < TIMEOUT / 4,
        "no worker: answered at once, not after {:?}",
        started.elapsed()
    );

    let mut workers = Vec::new();
    for name in ["w1", "w2"] {
        let queue = open(&prefix).await;
        queue
            .register_worker(&WorkerInfo::new(name, "h"))
            .await
            .unwrap();
        workers.push(queue);
    }
    // Asked by another process (one process serves a fresh answer again for a second).
    let asker = open(&prefix).await;
    let started = Instant::now();
    let seen = asker.workers().await.unwrap();
    let names: Vec<&str> = seen.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(names, ["w1", "w2"]);
    assert!(
        started.elapsed() < TIMEOUT / 4,
        "both answered: returned then, not after {:?}",
        started.elapsed()
    );
}
