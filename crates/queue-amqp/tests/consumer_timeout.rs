//! RabbitMQ's `consumer_timeout` on the real broker: a job held unacknowledged longer than it
//! is settled as a failed attempt in plain words, not counted as lost again and again.
//!
//! The broker's limit is node-wide (per-consumer limits need RabbitMQ 3.12), so this test lowers
//! it for the moment its worker's channel opens, then puts it back; it is alone in its test
//! binary, and `cargo test` runs binaries one at a time, so no other test's channel opens with
//! the low limit.

use std::process::Command;
use std::time::{Duration, Instant};
use videofarm_core::{
    AttemptOutcome, JobFilter, JobSpec, JobState, Outcome, QueueSettings, SuccessReport, WorkerInfo,
};
use videofarm_core::{Queue, Records};
use videofarm_queue_amqp::{AmqpQueue, AmqpSettings};

fn url() -> String {
    std::env::var("VIDEOFARM_TEST_AMQP")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

fn eval(expr: &str) -> String {
    let out = Command::new("rabbitmqctl")
        .args(["eval", expr])
        .output()
        .expect("rabbitmqctl is installed with RabbitMQ");
    assert!(
        out.status.success(),
        "rabbitmqctl eval {expr}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Puts the broker's consumer_timeout back as it was, even when the test fails.
struct Restore(String);

impl Drop for Restore {
    fn drop(&mut self) {
        eval(&self.0);
    }
}

/// Set the broker's `key` to `value` until the answer is dropped.
fn set_broker_env(key: &str, value: u64) -> Restore {
    let before = eval(&format!("application:get_env(rabbit, {key})."));
    let restore = match before
        .strip_prefix("{ok,")
        .and_then(|v| v.strip_suffix('}'))
    {
        Some(old) => format!("application:set_env(rabbit, {key}, {old})."),
        None => format!("application:unset_env(rabbit, {key})."),
    };
    eval(&format!("application:set_env(rabbit, {key}, {value})."));
    Restore(restore)
}

/// Deletes the test's broker objects when it ends.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        videofarm_queue_amqp::delete_farm_blocking(&url(), &self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encode_that_outlives_consumer_timeout_is_one_failed_attempt_in_plain_words() {
    let mut amqp = AmqpSettings::new(&url());
    amqp.prefix = format!("vftest-ackto-{}", std::process::id());
    amqp.queue_expires = Some(Duration::from_secs(600));
    let _cleanup = Cleanup(amqp.prefix.clone());
    let settings = QueueSettings {
        lease: Duration::from_secs(30),
        max_attempts: 2,
        max_lost: 6,
        retry_backoff: Duration::from_millis(100),
    };
    let q = AmqpQueue::connect(amqp, settings)
        .await
        .expect("RabbitMQ must be running for this test");
    let spec = JobSpec {
        input: "/media/long-tape.mpg".into(),
        output: "/media/out/long-tape.mkv".into(),
        profile: "archive".into(),
        key: "long-tape".into(),
        ..Default::default()
    };
    let id = q.enqueue(spec, false).await.unwrap().id().clone();
    let worker = WorkerInfo::new("w", "h");
    let lease = {
        let _low = set_broker_env("consumer_timeout", 1000);
        q.lease(&worker, Duration::from_secs(5))
            .await
            .unwrap()
            .expect("the job")
    };
    // The encode goes on, heartbeat after heartbeat, until the broker takes the job back. A
    // channel checks its limit once a minute; past the limit, the test asks every channel to
    // check now (a check early is harmless to the others: their limit is the usual one).
    let started = Instant::now();
    let stopped = loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        if started.elapsed() > Duration::from_millis(1500) {
            eval("[P ! tick || P <- rabbit_channel:list()], ok.");
        }
        if let Err(e) = q.heartbeat(&lease, None).await {
            break e;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the broker never applied its consumer_timeout"
        );
    };
    println!("taken back after {:?}", started.elapsed());
    assert!(stopped.voids_lease(), "{stopped}");
    let record = q
        .jobs(&JobFilter {
            ids: Some(vec![id.clone()]),
            ..Default::default()
        })
        .await
        .unwrap()
        .remove(0);
    assert_eq!(record.state, JobState::Queued, "retried: {record:?}");
    let reason = record.error.clone().unwrap_or_default();
    assert!(
        reason.contains("consumer_timeout") && reason.contains("long-tape.mpg"),
        "{reason}"
    );
    let history = q.history(&id).await.unwrap();
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(history[0].outcome, AttemptOutcome::Failed, "{history:?}");
    // Counted as the failed attempt it was, once: the broker's own copy is dropped.
    let next = q
        .lease(&worker, Duration::from_secs(5))
        .await
        .unwrap()
        .expect("the job again");
    assert_eq!((next.attempt, next.lost), (2, 0));
    q.begin_publish(&next).await.unwrap();
    q.finish(&next, Outcome::Succeeded(SuccessReport::default()))
        .await
        .unwrap();
    assert!(
        q.lease(&worker, Duration::from_millis(800))
            .await
            .unwrap()
            .is_none(),
        "run once more, not twice"
    );
}
