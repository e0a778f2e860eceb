//! A job queue left by an earlier build (ten priority levels) makes the broker refuse the new
//! declaration; the farm must say so in words a user can act on, on the real RabbitMQ.

use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable};
use std::time::Duration;
use videofarm_core::QueueSettings;
use videofarm_queue_amqp::{delete_farm_blocking, AmqpQueue, AmqpSettings};

#[tokio::test]
async fn an_old_ten_level_job_queue_is_refused_with_what_to_do() {
    let url = std::env::var("VIDEOFARM_TEST_AMQP")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let prefix = format!("vftest-upgrade-{}", std::process::id());
    struct Cleanup(String, String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            delete_farm_blocking(&self.0, &self.1);
        }
    }
    let _cleanup = Cleanup(url.clone(), prefix.clone());

    let conn = lapin::Connection::connect(&url, lapin::ConnectionProperties::default())
        .await
        .expect("RabbitMQ must be running for this test");
    let channel = conn.create_channel().await.unwrap();
    let mut args = FieldTable::default();
    args.insert("x-max-priority".into(), AMQPValue::ShortShortUInt(9));
    args.insert("x-expires".into(), AMQPValue::LongInt(600_000));
    channel
        .queue_declare(
            format!("{prefix}.jobs").as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            args,
        )
        .await
        .unwrap();

    let mut settings = AmqpSettings::new(&url);
    settings.prefix = prefix.clone();
    settings.queue_expires = Some(Duration::from_secs(600));
    let error = AmqpQueue::connect(settings, QueueSettings::default())
        .await
        .expect_err("an inequivalent job queue cannot be used")
        .to_string();
    assert!(
        error.contains("other settings")
            && error.contains("ten priority levels")
            && error.contains(&format!("{prefix}.jobs")),
        "{error}"
    );
    let _ = conn.close(200, "done".into()).await;
}

/// A job an earlier build left in the single job queue still runs, on a worker that can run it:
/// a worker that cannot moves it to its route's queue (no attempt counted) instead of looping.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_left_in_the_old_single_queue_reaches_a_worker_that_can_run_it() {
    use videofarm_core::{JobId, JobSpec, Queue, WorkerInfo};
    use videofarm_queue_amqp::envelope::Envelope;
    let url = std::env::var("VIDEOFARM_TEST_AMQP")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let prefix = format!("vftest-oldqueue-{}", std::process::id());
    struct Cleanup(String, String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            delete_farm_blocking(&self.0, &self.1);
        }
    }
    let _cleanup = Cleanup(url.clone(), prefix.clone());
    let mut settings = AmqpSettings::new(&url);
    settings.prefix = prefix.clone();
    settings.queue_expires = Some(Duration::from_secs(600));
    let queue = AmqpQueue::connect(settings, QueueSettings::default())
        .await
        .expect("RabbitMQ must be running for this test");

    let old = Envelope::new(
        JobId("old0000000000001".into()),
        JobSpec {
            input: "/media/in/old.mpg".into(),
            output: "/media/out/old.mkv".into(),
            profile: "archive".into(),
            key: "old0000000000001".into(),
            ..Default::default()
        },
        0,
    );
    let conn = lapin::Connection::connect(&url, lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let channel = conn.create_channel().await.unwrap();
    channel
        .basic_publish(
            "".into(),
            format!("{prefix}.jobs").as_str().into(),
            Default::default(),
            &serde_json::to_vec(&old).unwrap(),
            lapin::BasicProperties::default().with_priority(1),
        )
        .await
        .unwrap();

    let worker = |name: &str, profiles: &[&str]| WorkerInfo {
        profiles: Some(profiles.iter().map(|p| p.to_string()).collect()),
        ..WorkerInfo::new(name, "h")
    };
    let mut web_only = worker("web-only", &["web"]);
    web_only.unable = vec!["archive".into()];
    assert!(
        queue
            .lease(&web_only, Duration::from_millis(1500))
            .await
            .unwrap()
            .is_none(),
        "a worker that cannot run it does not take it"
    );
    let lease = queue
        .lease(&worker("archiver", &["archive"]), Duration::from_secs(3))
        .await
        .unwrap()
        .expect("moved to its route, where a capable worker finds it");
    assert_eq!((lease.id, lease.attempt), (old.id, 1));
    let _ = conn.close(200, "done".into()).await;
}
