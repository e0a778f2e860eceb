//! A drop-in for Celery workers: a videofarm worker takes the Celery app's task messages from
//! its queue on the same broker, answers Celery's remote control (`celery inspect`), and sends
//! Celery events (`celery events`, Flower), so a farm run by a Celery producer can swap its
//! Python workers for videofarm ones one machine at a time.
//!
//! A task is a lease like any job: acknowledged only once its verified output is in place, put
//! back into the Celery queue at once when the worker stops, redelivered by the broker when the
//! worker dies. What happens after a failure is the farm's: the retry waits and the failed list
//! are videofarm's (`jobs`, `retry` and the dashboard see the task under its Celery id), so a
//! task is never redelivered forever.
//!
//! Layout: [`task`] (reading task messages), `control` (the pidbox and the events).

mod control;
pub mod task;

pub(crate) use control::spawn as spawn_control;

use crate::*;
use std::collections::BTreeMap;
use videofarm_core::AttemptOutcome;

/// What a Celery task name runs.
#[derive(Debug, Clone, PartialEq)]
pub struct MappedTask {
    pub profile: String,
    /// The output's extension (`dstFolder + stem + "." + extension`).
    pub extension: String,
}

pub type CeleryTaskMap = BTreeMap<String, MappedTask>;

/// Where the Celery app's tasks are, and what this worker is called there.
#[derive(Debug, Clone)]
pub struct CelerySettings {
    /// The queue the producer sends to (Celery's default `celery`), declared as Celery
    /// declares it when it is not there yet: durable, bound to the direct exchange `exchange`
    /// with `routing_key`.
    pub queue: String,
    pub exchange: String,
    pub routing_key: String,
    pub tasks: CeleryTaskMap,
    /// The node name `celery inspect` and the events show (`celery@HOST`).
    pub hostname: String,
    /// Send Celery events (`celery events`, Flower).
    pub events: bool,
}

impl CelerySettings {
    /// The old farm's defaults: queue `celery`, task `videoTasks.encode` as `archive` (`.mkv`).
    pub fn new(hostname: &str) -> Self {
        let mut tasks = CeleryTaskMap::new();
        tasks.insert(
            "videoTasks.encode".into(),
            MappedTask {
                profile: "archive".into(),
                extension: "mkv".into(),
            },
        );
        Self {
            queue: "celery".into(),
            exchange: "celery".into(),
            routing_key: "celery".into(),
            tasks,
            hostname: hostname.to_owned(),
            events: true,
        }
    }
}

/// A Celery task a worker holds: what `inspect active` and the events say about it, and the
/// message as it came, to put back untouched when the worker stops.
pub(crate) struct Holding {
    pub task: task::CeleryTask,
    pub properties: BasicProperties,
    pub body: Vec<u8>,
    pub exchange: String,
    pub routing_key: String,
    pub redelivered: bool,
    pub started_ms: i64,
}

impl Inner {
    /// The Celery app's queue.
    pub(crate) fn celery_queue(&self) -> String {
        self.settings
            .celery
            .as_ref()
            .map_or_else(|| "celery".to_owned(), |c| c.queue.clone())
    }

    /// Read a delivery from the Celery queue into a job and what to keep of the task.
    pub(crate) fn read_celery(
        &self,
        delivery: &lapin::message::Delivery,
    ) -> Result<(Envelope, Holding), String> {
        let Some(celery) = &self.settings.celery else {
            return Err("a Celery task reached a worker that does not take them".into());
        };
        let read = task::read(
            &delivery.properties,
            &delivery.data,
            &celery.tasks,
            self.now(),
        )?;
        Ok((
            read.envelope,
            Holding {
                task: read.task,
                properties: delivery.properties.clone(),
                body: delivery.data.clone(),
                exchange: delivery.exchange.as_str().to_owned(),
                routing_key: delivery.routing_key.as_str().to_owned(),
                redelivered: delivery.redelivered,
                started_ms: self.now(),
            },
        ))
    }

    /// A Celery task was taken: `task-received` and `task-started`, as a Celery worker says.
    pub(crate) async fn celery_task_taken(&self, lease: &Lease) {
        let task = {
            let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
            match held.get(&lease.handle).and_then(|h| h.celery.as_ref()) {
                Some(c) => c.task.clone(),
                None => return,
            }
        };
        self.celery_event(
            "task-received",
            serde_json::json!({
                "uuid": task.id,
                "name": task.name,
                "args": task.args_repr(),
                "kwargs": task.kwargs_repr(),
                "root_id": task.id,
                "parent_id": null,
                "retries": task.retries,
                "eta": null,
                "expires": null,
            }),
        )
        .await;
        self.celery_event("task-started", serde_json::json!({ "uuid": task.id }))
            .await;
    }

    /// A Celery task's attempt ended: `task-succeeded` with its runtime, `task-failed` with
    /// the reason, nothing when it was only handed back.
    pub(crate) async fn celery_task_ended(&self, holding: &Holding, ended: &records::Fact) {
        let records::Fact::Ended {
            outcome,
            error,
            state,
            ..
        } = ended
        else {
            return;
        };
        let runtime = (self.now() - holding.started_ms).max(0) as f64 / 1000.0;
        let id = &holding.task.id;
        match outcome {
            AttemptOutcome::Succeeded => {
                self.celery_processed.fetch_add(1, Ordering::SeqCst);
                self.celery_event(
                    "task-succeeded",
                    serde_json::json!({ "uuid": id, "result": "None", "runtime": runtime }),
                )
                .await;
            }
            AttemptOutcome::Failed if *state == JobState::Queued => {
                // The farm tries it again (its retry waits are videofarm's).
                let reason = error.clone().unwrap_or_else(|| outcome.to_string());
                self.celery_event(
                    "task-retried",
                    serde_json::json!({ "uuid": id, "exception": reason, "traceback": "" }),
                )
                .await;
            }
            AttemptOutcome::Failed | AttemptOutcome::Cancelled => {
                self.celery_processed.fetch_add(1, Ordering::SeqCst);
                let reason = error.clone().unwrap_or_else(|| outcome.to_string());
                self.celery_event(
                    "task-failed",
                    serde_json::json!({ "uuid": id, "exception": reason, "traceback": "", "runtime": runtime }),
                )
                .await;
            }
            _ => {}
        }
    }

    /// Declare the Celery app's queue as Celery does, unless it is there already (then it is
    /// used as it is, whatever arguments its app gave it).
    pub(crate) async fn declare_celery(
        &self,
        channel: &Channel,
        celery: &CelerySettings,
    ) -> Result<(), QueueError> {
        let passive = self.new_channel().await?;
        let exists = passive
            .queue_declare(
                celery.queue.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .is_ok();
        crate::close_channel(&passive, "checked").await;
        if exists {
            return Ok(());
        }
        crate::names::exchange(channel, &celery.exchange, ExchangeKind::Direct, true).await?;
        crate::names::durable_queue(channel, &celery.queue, FieldTable::default()).await?;
        crate::names::bind(
            channel,
            &celery.queue,
            &celery.exchange,
            &celery.routing_key,
        )
        .await
    }
}
