//! The RabbitMQ backend (AMQP 0-9-1), honouring the same lease contract as the embedded queue.
//!
//! - Jobs are persistent messages in a durable queue; `enqueue` returns only after the broker
//!   confirmed the publish (publisher confirms).
//! - A lease is a delivery with manual acknowledgement. The worker's prefetch equals its
//!   concurrency, so a busy worker never hoards jobs. The lease lasts as long as the worker's
//!   connection: when a worker dies (kill -9, power, network) the broker redelivers its jobs.
//! - Fencing: each delivery gets a token tied to the connection it arrived on. After a
//!   reconnect, every older lease is void (the broker has already given those jobs to others):
//!   heartbeats fail, the worker stops that encode and publishes nothing.
//! - A redelivered message means an attempt was lost (unless it was never begun, or its holder
//!   settled it); it is re-published with its attempt count raised (and sent to the failed
//!   queue when the attempts are spent), so a job that kills its workers cannot loop forever. A
//!   job that outlives RabbitMQ's `consumer_timeout` is a failed attempt (see `timeout`).
//! - Failed attempts wait in a retry queue whose per-message TTL dead-letters them back; failed
//!   jobs go to a failed queue with their reason, where `retry` finds them.
//! - `inspect` and `cancel` are broadcast on a fanout exchange; every worker answers from what
//!   it holds. Lifecycle events go to a topic exchange.
//! - Every change of a job's state is also written, confirmed before the step it records is
//!   acknowledged, to a durable stream that [`records`] keeps a local copy of: `status`,
//!   `jobs`, the dashboard and the metrics read that.
//!
//! Layout: [`envelope`] (the message), [`names`] (broker objects, declared and deleted),
//! `control` (broadcasts, the live workers), `queue_impl` (the [`Queue`], [`Records`] and
//! [`Control`] implementations), `take` (the steps of a lease), `browse` (failed queue and tombstones), `events` (following
//! lifecycle events), [`records`] (the facts and the local copy), `follow` (writing facts and
//! following the stream), `presence` (worker sessions, and the attempts of those gone),
//! `timeout` (the broker's consumer_timeout), `connection` (connecting, and every wait on the
//! broker bounded), this file (settings, held deliveries, publishing).

mod browse;
pub mod celery;
mod connection;
mod control;
pub mod envelope;
mod events;
mod follow;
pub mod names;
mod presence;
mod queue_impl;
pub mod records;
pub mod route;
mod take;
mod timeout;
use connection::{close_channel, close_within};

pub use events::EventStream;
pub use names::delete_farm_blocking;

use async_trait::async_trait;
use envelope::Envelope;
use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeleteOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{
    Acker, BasicProperties, Channel, Connection, ConnectionProperties, Consumer, ExchangeKind,
};
use names::Names;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use videofarm_core::{
    AfterFailure, AttemptRecord, Clock, Control, Counts, Enqueued, Event, EventFeed, JobFilter,
    JobId, JobRecord, JobSpec, JobState, Lease, Outcome, Progress, Queue, QueueError,
    QueueSettings, Records, SystemClock, WorkerInfo, WorkerStatus,
};

/// How to reach the broker and name things on it.
#[derive(Debug, Clone)]
pub struct AmqpSettings {
    /// `amqp://user:pass@host:5672/vhost`.
    pub url: String,
    /// Prefix of every queue and exchange name (default `videofarm`).
    pub prefix: String,
    /// Delete the queues after this long unused (tests; production queues never expire).
    pub queue_expires: Option<Duration>,
    /// How long `inspect` waits for workers to answer.
    pub inspect_timeout: Duration,
    /// Ask the broker for this delivery-acknowledgement timeout on the worker's consumer
    /// (`x-consumer-timeout`, honoured by RabbitMQ 3.12 and later) instead of the broker-wide
    /// `consumer_timeout`, so long encodes need no broker configuration.
    pub consumer_timeout: Option<Duration>,
    /// The local copy of the farm's records (an SQLite file); `None` keeps it in memory, read
    /// from the records stream by each process.
    pub records_file: Option<std::path::PathBuf>,
    /// Also take a Celery app's tasks, and answer and report as a Celery worker.
    pub celery: Option<celery::CelerySettings>,
}

impl AmqpSettings {
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            prefix: "videofarm".to_owned(),
            queue_expires: None,
            inspect_timeout: Duration::from_millis(700),
            consumer_timeout: None,
            records_file: None,
            celery: None,
        }
    }
}

fn backend(e: impl std::fmt::Display) -> QueueError {
    let text = e.to_string();
    if text.contains("inequivalent arg") {
        return QueueError::Backend(format!(
            "RabbitMQ: a queue of this farm already exists with other settings; every process of one farm \
             must use the same amqp_prefix and amqp_* settings and the same videofarm version (earlier builds \
             made the job queue with ten priority levels, now three). Drain and delete the old queues or use another \
             amqp_prefix. Broker said: {text}"
        ));
    }
    QueueError::Backend(format!("RabbitMQ: {text}"))
}

/// One connection and its channels; replaced as a whole when anything about it breaks.
struct Live {
    connection: Connection,
    /// Publishes with confirms; also used for declarations and browsing.
    publish: Channel,
}

/// The consumers of one worker process (one per route it serves), on their own channel.
struct Consuming {
    epoch: u64,
    channel: Channel,
    /// The worker's profiles, profiles it cannot run and tags: what its routes were made of.
    serves: (Option<Vec<String>>, Vec<String>, Vec<String>),
    /// The routes consumed.
    routes: std::collections::BTreeSet<String>,
    deliveries: route::Deliveries,
    /// The consumer that keeps this channel's session queue alive (see `presence`).
    _session: lapin::Consumer,
}

/// A delivery a worker holds.
struct Held {
    token: u64,
    epoch: u64,
    acker: Acker,
    envelope: Envelope,
    progress: Progress,
    /// Cancelled: the id the user cancelled (the job's own, or its split tape's).
    cancelled: Option<JobId>,
    /// The publish was granted: a cancel no longer takes it (it ends succeeded).
    publishing: bool,
    /// The worker holding it, as the records name it.
    worker: String,
    /// This delivery, as the records name it.
    holder: records::Holder,
    /// When it was taken (ms).
    started_ms: i64,
    /// A Celery task, as it came.
    celery: Option<celery::Holding>,
}

pub(crate) struct Inner {
    settings: AmqpSettings,
    queue: QueueSettings,
    names: Names,
    clock: SystemClock,
    live: tokio::sync::Mutex<Option<Live>>,
    consuming: tokio::sync::Mutex<Option<Consuming>>,
    /// The consumer's channel, readable without waiting for a `lease` that holds `consuming`
    /// (heartbeats must never wait for the next delivery).
    consume_channel: Mutex<Option<Channel>>,
    epoch: AtomicU64,
    /// The routes whose queues were declared on the current connection.
    routes: Mutex<std::collections::HashSet<String>>,
    next_token: AtomicU64,
    held: Mutex<HashMap<u64, Held>>,
    /// This process as a worker, once registered: what control replies describe.
    me: Mutex<Option<WorkerInfo>>,
    /// The task answering control requests, and the connection (epoch) it answers on.
    responder: Mutex<Option<(u64, tokio::task::JoinHandle<()>)>>,
    /// Cancelled job ids with when they were cancelled (ms), as last read from the broker, and
    /// when that was.
    tombstones: Mutex<(HashMap<JobId, i64>, Option<tokio::time::Instant>)>,
    /// The records stream, followed into a local cache by the processes that read it.
    follower: follow::Follower,
    /// Looks for the attempts of worker connections that are gone.
    reaper: presence::Reaper,
    /// The last acknowledgement timeout the broker closed a channel of ours for.
    ack_timeouts: timeout::AckTimeouts,
    /// The last answer to an inspect broadcast, and when it came: the dashboard's polls are
    /// answered from it while a fresh one is asked for in the background.
    workers_seen: Mutex<Option<(tokio::time::Instant, Vec<WorkerStatus>)>>,
    workers_asking: std::sync::atomic::AtomicBool,
    /// Celery's logical clock, and the tasks this worker finished (for Celery's events).
    celery_clock: AtomicU64,
    celery_processed: AtomicU64,
    celery_control: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// How long the records stream keeps a fact (every process that follows it keeps its own copy
/// for good): a year.
const RECORDS_MAX_AGE: &str = "365D";
/// The most the records stream keeps: 5 GB, some ten million facts.
const RECORDS_MAX_BYTES: i64 = 5_000_000_000;

/// How long the tombstone cache is trusted before the broker is read again.
const TOMBSTONE_REFRESH: Duration = Duration::from_secs(5);
/// How long a cancelled id is remembered.
const TOMBSTONE_TTL_MS: i32 = 7 * 24 * 3600 * 1000;
/// How long a connection waits for a records stream that another process has just declared.
const STREAM_READY_WAIT: Duration = Duration::from_secs(10);
/// The shortest bound on a wait for the broker (see [`Inner::broker_wait`]).
const BROKER_WAIT_MIN: Duration = Duration::from_secs(10);

/// A job queue on RabbitMQ.
#[derive(Clone)]
pub struct AmqpQueue {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AmqpQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpQueue")
            .field("prefix", &self.inner.settings.prefix)
            .finish()
    }
}

fn persistent() -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
}

impl AmqpQueue {
    /// Connect and declare the farm's queues. Fails loudly when the broker is not there.
    pub async fn connect(settings: AmqpSettings, queue: QueueSettings) -> Result<Self, QueueError> {
        let store = records::RecordStore::open(settings.records_file.as_deref(), queue.budget())
            .map_err(|e| {
                QueueError::Backend(format!(
                    "the records file {}: {e}",
                    settings
                        .records_file
                        .as_deref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|| "in memory".into())
                ))
            })?;
        let me = Self {
            inner: Arc::new(Inner {
                names: Names::new(&settings.prefix),
                settings,
                queue,
                clock: SystemClock,
                live: tokio::sync::Mutex::new(None),
                consuming: tokio::sync::Mutex::new(None),
                consume_channel: Mutex::new(None),
                epoch: AtomicU64::new(0),
                routes: Mutex::new(Default::default()),
                next_token: AtomicU64::new(1),
                held: Mutex::new(HashMap::new()),
                me: Mutex::new(None),
                responder: Mutex::new(None),
                tombstones: Mutex::new((Default::default(), None)),
                follower: follow::Follower::new(store),
                reaper: Default::default(),
                ack_timeouts: Default::default(),
                workers_seen: Mutex::new(None),
                workers_asking: std::sync::atomic::AtomicBool::new(false),
                celery_clock: AtomicU64::new(0),
                celery_processed: AtomicU64::new(0),
                celery_control: Mutex::new(None),
            }),
        };
        me.inner.channel().await?;
        Ok(me)
    }

    pub fn names(&self) -> &Names {
        &self.inner.names
    }

    /// Close the connection abruptly, as a crash or a network cut would (tests use this to
    /// make the broker redeliver).
    pub async fn sever(&self) {
        self.inner.invalidate().await;
    }

    /// Publish a lifecycle event (best effort: events are for watching, not for correctness).
    pub async fn publish_event(&self, event: &Event) {
        self.inner.publish_event(event).await;
    }

    /// The farm's lifecycle events, live, through a private auto-deleted queue.
    pub async fn subscribe_events(&self) -> Result<EventStream, QueueError> {
        let channel = self.inner.new_channel().await?;
        let (queue, consumer) = control::private_queue(&channel).await?;
        channel
            .queue_bind(
                queue.as_str().into(),
                self.inner.names.events.as_str().into(),
                "#".into(),
                Default::default(),
                FieldTable::default(),
            )
            .await
            .map_err(backend)?;
        Ok(EventStream {
            consumer,
            _channel: channel,
            _queue: self.clone(),
        })
    }
}

impl Inner {
    fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Publish `body` to `queue` persistently and wait for the broker's confirm.
    async fn publish(
        &self,
        queue: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), QueueError> {
        self.publish_many("", vec![(queue.to_owned(), body.to_vec(), properties)])
            .await?
            .pop()
            .unwrap_or_else(|| Err(backend("nothing was published")))
    }

    /// Publish persistent messages to `exchange` (`""`: straight to the queue named by the
    /// key) in order, then wait for every confirm: one answer per message; `Err` when nothing
    /// could be sent. Through an exchange a message must reach a queue (`mandatory`): one
    /// that no queue is bound for comes back as an error instead of vanishing.
    async fn publish_many(
        &self,
        exchange: &str,
        messages: Vec<(String, Vec<u8>, BasicProperties)>,
    ) -> Result<Vec<Result<(), QueueError>>, QueueError> {
        let channel = self.channel().await?;
        self.within("a publish", self.publish_on(&channel, exchange, messages))
            .await
    }

    /// See [`Inner::publish_many`].
    async fn publish_on(
        &self,
        channel: &Channel,
        exchange: &str,
        messages: Vec<(String, Vec<u8>, BasicProperties)>,
    ) -> Result<Vec<Result<(), QueueError>>, QueueError> {
        let options = BasicPublishOptions {
            mandatory: !exchange.is_empty(),
            ..Default::default()
        };
        let mut pending = Vec::with_capacity(messages.len());
        for (key, body, properties) in messages {
            let sent = channel
                .basic_publish(
                    exchange.into(),
                    key.as_str().into(),
                    options,
                    &body,
                    properties,
                )
                .await
                .map_err(backend);
            pending.push((key, sent));
        }
        let mut done = Vec::with_capacity(pending.len());
        for (key, sent) in pending {
            done.push(match sent {
                Err(e) => Err(e),
                Ok(confirm) => match confirm.await {
                    Ok(lapin::Confirmation::Ack(None)) => Ok(()),
                    Ok(lapin::Confirmation::Ack(Some(_))) => Err(backend(format!(
                        "no queue took the message for {key} (was it deleted?)"
                    ))),
                    Ok(_) => Err(backend(format!("the broker refused the message for {key}"))),
                    Err(e) => Err(backend(e)),
                },
            });
        }
        Ok(done)
    }

    async fn publish_envelope(
        &self,
        queue: &str,
        envelope: &Envelope,
        properties: BasicProperties,
    ) -> Result<(), QueueError> {
        let body = serde_json::to_vec(envelope).map_err(backend)?;
        self.publish(queue, &body, properties).await
    }

    async fn publish_event(&self, event: &Event) {
        let key = match event {
            Event::JobQueued { .. } => "job.queued",
            Event::JobStarted { .. } => "job.started",
            Event::JobProgress { .. } => "job.progress",
            Event::JobSucceeded { .. } => "job.succeeded",
            Event::JobFailed { .. } => "job.failed",
            Event::JobReleased { .. } => "job.released",
            Event::JobLost { .. } => "job.lost",
            Event::JobsCancelled { .. } => "job.cancelled",
            Event::JobsRetried { .. } => "job.retried",
            Event::WorkerOnline { .. } => "worker.online",
            Event::WorkerOffline { .. } => "worker.offline",
        };
        let Ok(body) = serde_json::to_vec(event) else {
            return;
        };
        let Ok(channel) = self.channel().await else {
            return;
        };
        // Not confirmed: an event lost in a broker restart costs a progress bar tick, nothing more.
        let _ = channel
            .basic_publish(
                self.names.events.as_str().into(),
                key.into(),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default().with_content_type("application/json".into()),
            )
            .await;
    }

    /// Check a lease against what this process holds.
    fn check(&self, lease: &Lease) -> Result<(), QueueError> {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        match held.get(&lease.handle) {
            Some(h) if h.token == lease.token && h.epoch == self.epoch.load(Ordering::SeqCst) => {
                if let Some(by) = &h.cancelled {
                    Err(QueueError::Cancelled(by.clone()))
                } else {
                    Ok(())
                }
            }
            _ => Err(QueueError::LeaseLost(lease.id.clone())),
        }
    }

    fn take_held(&self, lease: &Lease) -> Result<Held, QueueError> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        match held.get(&lease.handle) {
            Some(h) if h.token == lease.token && h.epoch == self.epoch.load(Ordering::SeqCst) => {
                Ok(held.remove(&lease.handle).expect("present"))
            }
            _ => Err(QueueError::LeaseLost(lease.id.clone())),
        }
    }

    /// Give a delivery back untouched, as a fresh copy where the broker still answers (a
    /// requeued delivery would come back marked redelivered, counted as a lost attempt); else
    /// requeued, or left to the broker when the channel is gone.
    async fn put_back(&self, held: &Held) {
        if self.copy_back(held, &held.envelope).await.is_ok() {
            let _ = held.acker.ack(BasicAckOptions::default()).await;
        } else {
            let _ = held
                .acker
                .nack(lapin::options::BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                })
                .await;
        }
    }

    /// A fresh copy of a held delivery where it came from, as `env`: a Celery task unchanged
    /// into the Celery app's queue, a farm job onto its route.
    async fn copy_back(&self, held: &Held, env: &Envelope) -> Result<(), QueueError> {
        match &held.celery {
            Some(c) => {
                self.publish(&self.celery_queue(), &c.body, c.properties.clone())
                    .await
            }
            None => self.publish_job(env, None).await,
        }
    }

    /// Acknowledge a delivery; a closed channel means the lease is already void.
    async fn ack(&self, held: &Held, id: &JobId) -> Result<(), QueueError> {
        match held.acker.ack(BasicAckOptions::default()).await {
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::warn!(job = %id, error = %e, "could not acknowledge; the broker will redeliver");
                Err(QueueError::LeaseLost(id.clone()))
            }
        }
    }

    fn active(&self) -> Vec<videofarm_core::ActiveJob> {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let mut active: Vec<_> = held
            .values()
            .map(|h| videofarm_core::ActiveJob {
                id: h.envelope.id.clone(),
                input: h.envelope.spec.input.clone(),
                output: h.envelope.spec.output.clone(),
                profile: h.envelope.spec.profile.clone(),
                progress: h.progress.progress,
                fps: h.progress.fps,
                speed: h.progress.speed,
                eta_s: h.progress.eta_s,
                transfer: h.progress.transfer,
            })
            .collect();
        active.sort_by(|a, b| a.id.cmp(&b.id));
        active
    }

    /// Mark held jobs cancelled; returns those found.
    fn cancel_held(&self, ids: &[JobId]) -> Vec<JobId> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.values_mut()
            .filter(|h| !h.publishing)
            .filter(|h| {
                ids.contains(&h.envelope.id)
                    || h.envelope
                        .spec
                        .parent
                        .as_ref()
                        .is_some_and(|p| ids.contains(p))
            })
            .map(|h| {
                let by = match &h.envelope.spec.parent {
                    Some(parent) if ids.contains(parent) => parent.clone(),
                    _ => h.envelope.id.clone(),
                };
                h.cancelled = Some(by);
                h.envelope.id.clone()
            })
            .collect()
    }
}

/// A failed job sent back by `retry` at `now_ms`: a fresh attempt budget (its last error stays
/// for reference), queued now, so that a cancel of the job before this retry does not drop it
/// (found by the model run: a job failed, queued again, cancelled, then retried from its old
/// failed copy, was dropped as cancelled and never ran).
fn fresh(mut env: Envelope, now_ms: i64) -> Envelope {
    env.attempts = 0;
    env.lost = 0;
    env.failed_ms = None;
    env.created_ms = now_ms;
    env
}

/// RabbitMQ's priority levels for the job queue: below zero (background), zero, above zero
/// (urgent). The broker keeps a sub-queue per level and its docs advise few levels; here a
/// priority queue served one consumer 7-23 % slower than a plain queue, with no measurable
/// difference between 3 and 10 levels (bench/README.md).
const MAX_PRIORITY: u8 = 2;

fn priority(spec: &JobSpec) -> u8 {
    match spec.priority.signum() {
        -1 => 0,
        0 => 1,
        _ => MAX_PRIORITY,
    }
}
