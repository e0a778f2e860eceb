//! A farm is new on the broker when its first workers and its first `enqueue` start at once
//! (the usual first minute of a farm, and every test): each declares the farm's objects,
//! among them the records stream, at the same moment. Every one of them must get through.

use std::time::Duration;
use videofarm_core::{JobFilter, JobSpec, Queue, QueueSettings, Records, WorkerInfo};
use videofarm_queue_amqp::{delete_farm_blocking, AmqpQueue, AmqpSettings};

fn url() -> String {
    std::env::var("VIDEOFARM_TEST_AMQP")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

struct Cleanup(String, String);
impl Drop for Cleanup {
    fn drop(&mut self) {
        delete_farm_blocking(&self.0, &self.1);
    }
}

async fn open(prefix: &str) -> Result<AmqpQueue, String> {
    let mut settings = AmqpSettings::new(&url());
    settings.prefix = prefix.to_owned();
    settings.queue_expires = Some(Duration::from_secs(600));
    AmqpQueue::connect(settings, QueueSettings::default())
        .await
        .map_err(|e| format!("connect: {e}"))
}

async fn worker(prefix: String, name: &'static str) -> Result<(), String> {
    let queue = open(&prefix).await?;
    let me = WorkerInfo::new(name, "h");
    queue
        .register_worker(&me)
        .await
        .map_err(|e| format!("{name} register: {e}"))?;
    queue
        .lease(&me, Duration::from_millis(300))
        .await
        .map_err(|e| format!("{name} lease: {e}"))?;
    Ok(())
}

async fn producer(prefix: String) -> Result<(), String> {
    let queue = open(&prefix).await?;
    let spec = JobSpec {
        input: "/media/in/new.mpg".into(),
        output: "/media/out/new.mkv".into(),
        profile: "archive".into(),
        key: format!("{prefix}-new"),
        ..Default::default()
    };
    queue
        .enqueue(spec, false)
        .await
        .map_err(|e| format!("enqueue: {e}"))?;
    queue
        .jobs(&JobFilter::default())
        .await
        .map_err(|e| format!("jobs: {e}"))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_farm_opened_by_several_at_once_opens_for_all() {
    for round in 0..12 {
        let prefix = format!("vftest-newfarm-{}-{round}", std::process::id());
        let _cleanup = Cleanup(url(), prefix.clone());
        let (a, b, c) = tokio::join!(
            tokio::spawn(worker(prefix.clone(), "one")),
            tokio::spawn(worker(prefix.clone(), "two")),
            tokio::spawn(producer(prefix.clone())),
        );
        for result in [a, b, c] {
            if let Err(e) = result.expect("the task ran") {
                panic!("round {round}: {e}");
            }
        }
    }
}
