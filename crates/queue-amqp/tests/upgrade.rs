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
