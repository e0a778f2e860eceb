//! The broker objects one farm uses, all named after one prefix so that several farms (or
//! test runs) can share a broker without meeting; declaring them, and deleting a throwaway farm.

#[derive(Debug, Clone)]
pub struct Names {
    /// The single job queue of earlier versions (durable, priorities 0-2): still consumed by
    /// every worker, which moves a job it cannot run to its route. Jobs now wait in a queue
    /// per route, `jobs.ROUTE` (see [`crate::route`]).
    pub jobs: String,
    /// Direct exchange every job is published to, its route as the routing key.
    pub route: String,
    /// The start of the names of the queues (and their fanout exchanges) where jobs wait out a
    /// delay: `wait.250ms`, `wait.500ms`, ... (see [`Names::wait_queue`]).
    pub wait: String,
    /// The retry queue of earlier versions (its TTLs dead-letter into `jobs`).
    pub retry: String,
    /// Jobs that failed for good, with their reasons, until `retry` sends them back.
    pub failed: String,
    /// Ids of cancelled jobs (kept a week): a worker drops a delivery whose id is here.
    pub cancelled: String,
    /// Fanout exchange for requests to every live worker (inspect, cancel).
    pub control: String,
    /// A queue no message is ever sent to, consumed by every live worker's control responder:
    /// its consumer count is how many answers a broadcast waits for.
    pub responders: String,
    /// Topic exchange for lifecycle events (`job.started`, `worker.online`, ...).
    pub events: String,
    /// Stream of the facts behind the farm's records (every job's states and attempts).
    pub records: String,
    /// The start of the names of the workers' session queues, one per connection a worker
    /// consumes on, gone with it (see `presence`).
    pub sessions: String,
}

/// The shortest wait queue's delay; each next one waits twice as long.
pub const WAIT_BASE_MS: u128 = 250;
/// How many wait queues there are: the longest waits 250 ms x 2^16, about 4.5 hours.
pub const WAIT_QUEUES: u32 = 17;

impl Names {
    /// The wait queue for a delay of `delay_ms`: the shortest that waits at least that long
    /// (or the longest). Every message in one waits the same, so none holds up another.
    pub fn wait_queue(&self, delay_ms: u128) -> (String, u128) {
        let mut wait = WAIT_BASE_MS;
        for _ in 1..WAIT_QUEUES {
            if wait >= delay_ms {
                break;
            }
            wait *= 2;
        }
        (format!("{}.{wait}ms", self.wait), wait)
    }

    pub fn new(prefix: &str) -> Self {
        Self {
            jobs: format!("{prefix}.jobs"),
            route: format!("{prefix}.route"),
            wait: format!("{prefix}.wait"),
            retry: format!("{prefix}.retry"),
            failed: format!("{prefix}.failed"),
            cancelled: format!("{prefix}.cancelled"),
            control: format!("{prefix}.control"),
            responders: format!("{prefix}.responders"),
            events: format!("{prefix}.events"),
            records: format!("{prefix}.records"),
            sessions: format!("{prefix}.session"),
        }
    }
}

/// A durable queue, declared with `args` (each farm object is declared this way).
pub(crate) async fn durable_queue(
    channel: &lapin::Channel,
    name: &str,
    args: lapin::types::FieldTable,
) -> Result<(), videofarm_core::QueueError> {
    let options = lapin::options::QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .queue_declare(name.into(), options, args)
        .await
        .map(|_| ())
        .map_err(crate::backend)
}

/// An exchange of `kind`, durable or not.
pub(crate) async fn exchange(
    channel: &lapin::Channel,
    name: &str,
    kind: lapin::ExchangeKind,
    durable: bool,
) -> Result<(), videofarm_core::QueueError> {
    let options = lapin::options::ExchangeDeclareOptions {
        durable,
        ..Default::default()
    };
    channel
        .exchange_declare(name.into(), kind, options, Default::default())
        .await
        .map_err(crate::backend)
}

/// Bind `queue` to `exchange` with `key`.
pub(crate) async fn bind(
    channel: &lapin::Channel,
    queue: &str,
    exchange: &str,
    key: &str,
) -> Result<(), videofarm_core::QueueError> {
    channel
        .queue_bind(
            queue.into(),
            exchange.into(),
            key.into(),
            Default::default(),
            Default::default(),
        )
        .await
        .map_err(crate::backend)
}

/// Declaring the farm's broker objects, and deleting a throwaway farm's.
mod declare {
    use super::{bind as bind_queue, durable_queue, exchange};
    use crate::*;

    impl Inner {
        pub(crate) fn queue_args(&self) -> FieldTable {
            let mut args = FieldTable::default();
            if let Some(expires) = self.settings.queue_expires {
                args.insert(
                    "x-expires".into(),
                    AMQPValue::LongInt(expires.as_millis().min(i32::MAX as u128) as i32),
                );
            }
            args
        }

        /// A job queue's arguments: priorities 0-2.
        pub(crate) fn jobs_queue_args(&self) -> FieldTable {
            let mut args = self.queue_args();
            args.insert(
                "x-max-priority".into(),
                AMQPValue::ShortShortUInt(MAX_PRIORITY),
            );
            args
        }

        pub(crate) async fn declare(&self, channel: &Channel) -> Result<(), QueueError> {
            let names = &self.names;
            durable_queue(channel, &names.jobs, self.jobs_queue_args()).await?;
            // Durable: a broker restart keeps it and the routes bound to it.
            exchange(channel, &names.route, ExchangeKind::Direct, true).await?;
            let mut retry_args = self.queue_args();
            retry_args.insert(
                "x-dead-letter-exchange".into(),
                AMQPValue::LongString("".into()),
            );
            retry_args.insert(
                "x-dead-letter-routing-key".into(),
                AMQPValue::LongString(names.jobs.as_str().into()),
            );
            durable_queue(channel, &names.retry, retry_args).await?;
            durable_queue(channel, &names.failed, self.queue_args()).await?;
            let mut cancelled_args = self.queue_args();
            cancelled_args.insert("x-message-ttl".into(), AMQPValue::LongInt(TOMBSTONE_TTL_MS));
            durable_queue(channel, &names.cancelled, cancelled_args).await?;
            self.declare_records(channel).await?;
            exchange(channel, &names.control, ExchangeKind::Fanout, false).await?;
            exchange(channel, &names.events, ExchangeKind::Topic, false).await
        }

        /// A route's queue, bound to the route exchange with the route as its key.
        pub(crate) async fn declare_route_queue(
            &self,
            channel: &Channel,
            queue: &str,
            route: &str,
        ) -> Result<(), QueueError> {
            durable_queue(channel, queue, self.jobs_queue_args()).await?;
            bind_queue(channel, queue, &self.names.route, route).await
        }

        /// A wait queue and its fanout exchange of the same name: messages wait `wait_ms`, then go
        /// to the route exchange with the key they came with.
        pub(crate) async fn declare_wait_queue(
            &self,
            channel: &Channel,
            name: &str,
            wait_ms: u128,
        ) -> Result<(), QueueError> {
            exchange(channel, name, ExchangeKind::Fanout, true).await?;
            let mut args = self.queue_args();
            args.insert(
                "x-dead-letter-exchange".into(),
                AMQPValue::LongString(self.names.route.as_str().into()),
            );
            args.insert(
                "x-message-ttl".into(),
                AMQPValue::LongLongInt(wait_ms.min(i64::MAX as u128) as i64),
            );
            durable_queue(channel, name, args).await?;
            bind_queue(channel, name, name, "").await
        }

        /// The records stream: durable, kept for [`RECORDS_MAX_AGE`] and at most
        /// [`RECORDS_MAX_BYTES`] (whole old segments are dropped first).
        pub(crate) async fn declare_records(&self, channel: &Channel) -> Result<(), QueueError> {
            let mut args = FieldTable::default();
            args.insert(
                "x-queue-type".into(),
                AMQPValue::LongString("stream".into()),
            );
            args.insert(
                "x-max-age".into(),
                AMQPValue::LongString(RECORDS_MAX_AGE.into()),
            );
            args.insert(
                "x-max-length-bytes".into(),
                AMQPValue::LongLongInt(RECORDS_MAX_BYTES),
            );
            durable_queue(channel, &self.names.records, args).await?;
            Ok(())
        }
    }
}

pub use declare_farm::delete_farm_blocking;

mod declare_farm {
    use crate::*;

    /// Delete a throwaway farm's queues and exchanges (test clean-up), blocking, from any thread and
    /// even inside an async runtime: it runs on a thread and a runtime of its own, for at most 10 s.
    pub fn delete_farm_blocking(url: &str, prefix: &str) {
        let (url, names, prefix) = (url.to_owned(), Names::new(prefix), prefix.to_owned());
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                // No declarations here: the farm's queues may carry arguments this call cannot know.
                let cleanup = async {
                    let connection =
                        Connection::connect(&url, ConnectionProperties::default()).await?;
                    let channel = connection.create_channel().await?;
                    // The built-in profiles' routes without tags; others expire when the farm
                    // was made with `queue_expires` (tests), or stay.
                    let routes = videofarm_core::Profiles::default()
                        .iter()
                        .map(|p| format!("{prefix}.jobs.{}", p.name))
                        .collect::<Vec<_>>();
                    let waits = (0..crate::names::WAIT_QUEUES)
                        .map(|i| names.wait_queue(crate::names::WAIT_BASE_MS << i).0)
                        .collect::<Vec<_>>();
                    for queue in [
                        &names.jobs,
                        &names.retry,
                        &names.failed,
                        &names.cancelled,
                        &names.records,
                    ]
                    .into_iter()
                    .chain(&routes)
                    .chain(&waits)
                    {
                        channel
                            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                            .await?;
                    }
                    for exchange in [&names.control, &names.events, &names.route]
                        .into_iter()
                        .chain(&waits)
                    {
                        channel
                            .exchange_delete(
                                exchange.as_str().into(),
                                ExchangeDeleteOptions::default(),
                            )
                            .await?;
                    }
                    connection.close(200, "cleaned up".into()).await
                };
                let _ = tokio::time::timeout(Duration::from_secs(10), cleanup).await;
            });
        })
        .join();
    }
}
