//! The shared queue conformance suite, on the real RabbitMQ at 127.0.0.1:5672 (guest/guest),
//! or `VIDEOFARM_TEST_AMQP`. Each case gets its own uniquely named queues and exchanges, which
//! are deleted afterwards (and expire by themselves if a run is killed). A broker that is not
//! there fails the tests.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use videofarm_conformance::{conformance_tests, Fixture};
use videofarm_core::QueueSettings;
use videofarm_queue_amqp::{AmqpQueue, AmqpSettings};

fn url() -> String {
    std::env::var("VIDEOFARM_TEST_AMQP")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// Deletes a test's broker objects when the test ends, even when it failed.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        videofarm_queue_amqp::delete_farm_blocking(&url(), &self.0);
    }
}

async fn open(settings: QueueSettings) -> Fixture {
    static N: AtomicU32 = AtomicU32::new(0);
    let mut amqp = AmqpSettings::new(&url());
    let prefix = format!(
        "vftest-{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst),
        nanos()
    );
    amqp.prefix = prefix.clone();
    amqp.queue_expires = Some(Duration::from_secs(600));
    amqp.inspect_timeout = Duration::from_millis(400);
    // Brokers before 3.12 ignore it; this proves that they still consume with it.
    amqp.consumer_timeout = Some(Duration::from_secs(3600));
    let queue = AmqpQueue::connect(amqp, settings)
        .await
        .unwrap_or_else(|e| panic!("RabbitMQ must be running for these tests ({e}); start it with `rabbitmq-server -detached`"));
    let severed = queue.clone();
    Fixture {
        queue: Arc::new(queue),
        guard: Box::new(Cleanup(prefix)),
        expire: Box::new(move || {
            let q = severed.clone();
            Box::pin(async move { q.sever().await })
        }),
    }
}

fn nanos() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
}

conformance_tests!(open);

/// The model-based test (see `videofarm_conformance::model_run`) on the real RabbitMQ, lost
/// leases included: the records show a lost attempt as soon as its connection is known gone,
/// before the broker hands the message out again (see the crate's `presence`).
/// `VIDEOFARM_MODEL_STEPS` for the long run; `VIDEOFARM_MODEL_SEED` replays one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_agrees_with_the_lifecycle_model() {
    let (seed, steps) = videofarm_conformance::model_params(150);
    let fixture = open(videofarm_conformance::model_settings()).await;
    let run = videofarm_conformance::ModelRun {
        seed,
        steps,
        patience: Duration::from_millis(1500),
        expire: true,
    };
    if let Err(why) = videofarm_conformance::model_run(fixture, run).await {
        panic!("{why}");
    }
}
