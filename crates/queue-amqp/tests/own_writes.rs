//! A process reads what it wrote: each of many tasks of one process queues a job and then
//! reads the records, at the same time as the others; every read shows the job its task
//! queued (the records are written in the order their facts are numbered).

use std::sync::Arc;
use std::time::Duration;
use videofarm_core::{JobFilter, JobSpec, Queue, QueueSettings, Records};
use videofarm_queue_amqp::{delete_farm_blocking, AmqpQueue, AmqpSettings};

struct Cleanup(String, String);
impl Drop for Cleanup {
    fn drop(&mut self) {
        delete_farm_blocking(&self.0, &self.1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_task_reads_the_job_it_queued() {
    let url = std::env::var("VIDEOFARM_TEST_AMQP")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let prefix = format!("vftest-ownwrites-{}", std::process::id());
    let _cleanup = Cleanup(url.clone(), prefix.clone());
    let mut settings = AmqpSettings::new(&url);
    settings.prefix = prefix.clone();
    settings.queue_expires = Some(Duration::from_secs(600));
    let queue = Arc::new(
        AmqpQueue::connect(settings, QueueSettings::default())
            .await
            .expect("RabbitMQ must be running for this test"),
    );
    for round in 0..5 {
        let tasks: Vec<_> = (0..40)
            .map(|i| {
                let queue = queue.clone();
                tokio::spawn(async move {
                    let key = format!("r{round}-job{i:02}-{:x}", std::process::id());
                    let spec = JobSpec {
                        input: format!("/media/in/{key}.mpg").into(),
                        output: format!("/media/out/{key}.mkv").into(),
                        profile: "archive".into(),
                        key: key.clone(),
                        ..Default::default()
                    };
                    let id = queue.enqueue(spec, false).await.unwrap().id().clone();
                    let jobs = queue.jobs(&JobFilter::default()).await.unwrap();
                    jobs.iter().any(|j| j.id == id)
                })
            })
            .collect();
        for (i, task) in tasks.into_iter().enumerate() {
            assert!(
                task.await.unwrap(),
                "round {round}: task {i} did not read its own job"
            );
        }
    }
}
