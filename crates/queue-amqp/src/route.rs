//! Capability routing: a queue per *route* (a profile, and the worker tags a job requires), so
//! that a worker only ever receives jobs it can run.
//!
//! Jobs are published to the direct exchange `PREFIX.route` with their route as the routing
//! key; `PREFIX.jobs.ROUTE` is bound to it. A worker consumes the queue of every route it can
//! serve (each profile it can run, with each subset of its tags) and the old single queue
//! `PREFIX.jobs` (what earlier versions queued), all on one channel whose prefetch is shared,
//! so it never holds more jobs than its concurrency. A job nobody can run stays in its queue,
//! shown as waiting, and is never offered to a worker that would refuse it.
//!
//! Waits (retries, a split tape waiting for its chunks) go through a wait queue per delay,
//! `PREFIX.wait.250ms` to `PREFIX.wait.16384000ms` (each twice the last; a delay is rounded up
//! to the next): published to the fanout exchange of that name with the job's route as routing
//! key, the queue's TTL dead-letters it to `PREFIX.route` with that key, back into its own
//! queue. One TTL per queue: a long wait never holds up a short one behind it, as per-message
//! TTLs in one queue would (RabbitMQ expires messages only at the head).

use super::*;
use futures_lite::Stream;
use std::collections::BTreeSet;
use std::pin::Pin;

/// A worker's tags that count for routing: it consumes one queue per profile and subset of
/// them, so they are few (a configuration with more is refused).
pub const MAX_ROUTING_TAGS: usize = videofarm_core::job::MAX_TAGS;

/// Where a delivery came from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Source {
    /// The farm's own queues: a videofarm job message.
    Farm,
    /// The Celery app's queue: a Celery task message.
    Celery,
}

/// Every delivery of a worker's consumers, merged.
pub(crate) type Deliveries =
    Pin<Box<dyn Stream<Item = (Source, lapin::Result<lapin::message::Delivery>)> + Send>>;

/// A job's route: `PROFILE`, then `+TAG` for each tag it requires, sorted. A long one is
/// shortened with a hash (queue names and routing keys are at most 255 bytes).
pub fn route(profile: &str, tags: &[String]) -> String {
    let tags: BTreeSet<&str> = tags.iter().map(String::as_str).collect();
    let mut route = profile.to_owned();
    for tag in &tags {
        route.push('+');
        route.push_str(tag);
    }
    if route.len() > 100 {
        let hash = blake3::hash(route.as_bytes()).to_hex();
        route = format!("{profile}+{}", &hash[..16]);
    }
    route
}

fn job_route(spec: &JobSpec) -> String {
    route(&spec.profile, &spec.require)
}

/// The routes a worker serves: each profile it can run (the built-in ones when it did not
/// say) with each subset of its first [`MAX_ROUTING_TAGS`] tags.
pub fn worker_routes(worker: &WorkerInfo) -> BTreeSet<String> {
    let profiles: Vec<String> = match &worker.profiles {
        Some(runnable) => runnable.clone(),
        None => videofarm_core::Profiles::default()
            .iter()
            .map(|p| p.name.clone())
            .filter(|name| !worker.unable.contains(name))
            .collect(),
    };
    let tags: Vec<String> = worker
        .tags
        .iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .take(MAX_ROUTING_TAGS)
        .cloned()
        .collect();
    let mut routes = BTreeSet::new();
    for profile in &profiles {
        for subset in 0..(1usize << tags.len()) {
            let chosen: Vec<String> = tags
                .iter()
                .enumerate()
                .filter(|(i, _)| subset & (1 << i) != 0)
                .map(|(_, t)| t.clone())
                .collect();
            routes.insert(route(profile, &chosen));
        }
    }
    routes
}

impl Inner {
    fn route_queue(&self, route: &str) -> String {
        format!("{}.jobs.{route}", self.settings.prefix)
    }

    /// Mark each waiting job whose route's queue has no consumer with why it waits; with no
    /// live worker at all nothing is said (any worker may come), as
    /// [`videofarm_core::queue::mark_waiting`] says.
    pub(crate) async fn explain_waiting(
        &self,
        records: &mut [JobRecord],
    ) -> Result<(), QueueError> {
        let waiting = |r: &JobRecord| r.state == JobState::Queued;
        if !records.iter().any(waiting) || self.consumers(&self.names.jobs).await? == 0 {
            return Ok(());
        }
        let routes: BTreeSet<String> = records
            .iter()
            .filter(|r| waiting(r))
            .map(|r| job_route(&r.spec))
            .collect();
        let mut unserved = BTreeSet::new();
        for route in routes {
            if self.consumers(&self.route_queue(&route)).await? == 0 {
                unserved.insert(route);
            }
        }
        for record in records.iter_mut().filter(|r| waiting(r)) {
            if unserved.contains(&job_route(&record.spec)) {
                record.waiting_for = Some(videofarm_core::queue::why_waiting(&record.spec));
            }
        }
        Ok(())
    }

    /// Whether `key` was declared on the current connection (the set empties on reconnect).
    fn declared(&self, key: &str) -> bool {
        self.routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(key)
    }

    fn mark_declared(&self, key: String) {
        self.routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key);
    }

    /// Declare a route's queue and bind it (once per connection and route).
    async fn declare_route(&self, channel: &Channel, route: &str) -> Result<(), QueueError> {
        if !self.declared(route) {
            let queue = self.route_queue(route);
            self.within(
                "a declare of a route's queue",
                self.declare_route_queue(channel, &queue, route),
            )
            .await?;
            self.mark_declared(route.to_owned());
        }
        Ok(())
    }

    /// Declare the wait queue for `delay_ms` and its exchange (once per connection); its name.
    async fn declare_wait(&self, channel: &Channel, delay_ms: u128) -> Result<String, QueueError> {
        let (name, wait) = self.names.wait_queue(delay_ms);
        let key = format!("wait:{name}");
        if !self.declared(&key) {
            self.within(
                "a declare of a wait queue",
                self.declare_wait_queue(channel, &name, wait),
            )
            .await?;
            self.mark_declared(key);
        }
        Ok(name)
    }

    /// Queue jobs on their routes (declared first), each published before any confirm is
    /// awaited: one answer per job.
    pub(crate) async fn publish_jobs(
        &self,
        envelopes: &[Envelope],
    ) -> Result<Vec<Result<(), QueueError>>, QueueError> {
        let channel = self.channel().await?;
        let mut messages = Vec::with_capacity(envelopes.len());
        for env in envelopes {
            let route = job_route(&env.spec);
            self.declare_route(&channel, &route).await?;
            let body = serde_json::to_vec(env).map_err(backend)?;
            messages.push((route, body, persistent().with_priority(priority(&env.spec))));
        }
        self.publish_many(&self.names.route, messages).await
    }

    /// Queue one job on its route, at once or after `delay_ms` (through the wait queue).
    pub(crate) async fn publish_job(
        &self,
        env: &Envelope,
        delay_ms: Option<u128>,
    ) -> Result<(), QueueError> {
        let Some(delay) = delay_ms else {
            return self
                .publish_jobs(std::slice::from_ref(env))
                .await?
                .pop()
                .unwrap_or_else(|| Err(backend("nothing was published")));
        };
        let channel = self.channel().await?;
        let route = job_route(&env.spec);
        // The wait ends in the route's queue: it must exist by then.
        self.declare_route(&channel, &route).await?;
        let wait = self.declare_wait(&channel, delay).await?;
        let body = serde_json::to_vec(env).map_err(backend)?;
        self.publish_many(&wait, vec![(route, body, persistent())])
            .await?
            .pop()
            .unwrap_or_else(|| Err(backend("nothing was published")))
    }

    /// A consumer of `queue` on `channel`, its deliveries marked as from `source`.
    async fn consume(
        &self,
        channel: &Channel,
        queue: &str,
        source: Source,
    ) -> Result<Deliveries, QueueError> {
        let mut args = FieldTable::default();
        if let Some(timeout) = self.settings.consumer_timeout {
            let ms = timeout.as_millis().min(i64::MAX as u128) as i64;
            args.insert("x-consumer-timeout".into(), AMQPValue::LongLongInt(ms));
        }
        let consume = channel.basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            args,
        );
        let consumer = self
            .within("a consume", async { consume.await.map_err(backend) })
            .await?
            .map(move |delivery| (source, delivery));
        Ok(Box::pin(consumer))
    }

    /// This worker's consumers, (re)created on the current connection: one per route it
    /// serves, and the old single queue.
    pub(crate) async fn consumer(&self, worker: &WorkerInfo) -> Result<(), QueueError> {
        let mut consuming = self.consuming.lock().await;
        let epoch = self.epoch.load(Ordering::SeqCst);
        if let Some(c) = consuming.as_mut() {
            // What decides the routes is compared on every lease; the routes themselves are
            // worked out only when the consumers are made.
            let same_worker = (&c.serves.0, &c.serves.1, &c.serves.2)
                == (&worker.profiles, &worker.unable, &worker.tags);
            let live = c.epoch == epoch && c.channel.status().connected();
            if live && same_worker {
                return Ok(());
            }
            // More routes (a profile found runnable by a trial left for later): consumed on
            // the same channel, so the jobs held meanwhile stay held.
            let routes = worker_routes(worker);
            if live && routes.is_superset(&c.routes) {
                for route in routes.difference(&c.routes) {
                    self.declare_route(&c.channel, route).await?;
                    let consumer = self
                        .consume(&c.channel, &self.route_queue(route), Source::Farm)
                        .await?;
                    let before = std::mem::replace(
                        &mut c.deliveries,
                        Box::pin(futures_lite::stream::empty()),
                    );
                    c.deliveries = Box::pin(before.race(consumer));
                }
                c.routes = routes;
                c.serves = (
                    worker.profiles.clone(),
                    worker.unable.clone(),
                    worker.tags.clone(),
                );
                return Ok(());
            }
            // The channel closed under us (consumer_timeout, broker restart): start afresh.
            drop(consuming.take());
            drop(consuming);
            self.invalidate().await;
            return Box::pin(self.consumer(worker)).await;
        }
        let routes = worker_routes(worker);
        let serves = (
            worker.profiles.clone(),
            worker.unable.clone(),
            worker.tags.clone(),
        );
        let prefetch = worker
            .concurrency
            .saturating_add(worker.ahead)
            .clamp(1, u32::from(u16::MAX)) as u16;
        let channel = self.new_channel().await?;
        let epoch = self.epoch.load(Ordering::SeqCst);
        // Before any delivery: every attempt recorded on this connection names its session.
        let session = self.hold_session(&channel, epoch).await?;
        // Shared by every consumer on the channel: a worker holds at most `concurrency` jobs
        // (and `ahead` more whose inputs it fetches), whichever queues they come from.
        let qos = channel.basic_qos(prefetch, BasicQosOptions { global: true });
        self.within("a prefetch setting", async { qos.await.map_err(backend) })
            .await?;
        let mut queues = vec![(Source::Farm, self.names.jobs.clone())];
        for route in &routes {
            self.declare_route(&channel, route).await?;
            queues.push((Source::Farm, self.route_queue(route)));
        }
        if let Some(celery) = &self.settings.celery {
            self.within(
                "a declare of the Celery queue",
                self.declare_celery(&channel, celery),
            )
            .await?;
            queues.push((Source::Celery, celery.queue.clone()));
        }
        let mut merged: Option<Deliveries> = None;
        for (source, queue) in &queues {
            let consumer = self.consume(&channel, queue, *source).await?;
            // Taken from whichever is ready, at random when several are: no queue starves.
            merged = Some(match merged {
                None => consumer,
                Some(before) => Box::pin(before.race(consumer)),
            });
        }
        *self
            .consume_channel
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(channel.clone());
        *consuming = Some(Consuming {
            epoch,
            channel,
            serves,
            routes,
            deliveries: merged.expect("the old queue at least"),
            _session: session,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_name_a_profile_and_its_required_tags_in_order() {
        assert_eq!(route("archive", &[]), "archive");
        let tags = ["gpu".to_string(), "fast".to_string(), "gpu".to_string()];
        assert_eq!(route("archive", &tags), "archive+fast+gpu");
        let long: Vec<String> = (0..4).map(|i| format!("{i}{}", "t".repeat(60))).collect();
        let shortened = route("archive", &long);
        assert!(shortened.len() < 40, "{shortened}");
        assert_eq!(shortened, route("archive", &long), "the same every time");
    }

    #[test]
    fn a_worker_serves_each_runnable_profile_with_each_subset_of_its_tags() {
        let mut worker = worker();
        worker.profiles = Some(vec!["archive".into(), "web".into()]);
        worker.tags = vec!["gpu".into(), "fast".into()];
        let routes = worker_routes(&worker);
        let expected: BTreeSet<String> = [
            "archive",
            "archive+fast",
            "archive+gpu",
            "archive+fast+gpu",
            "web",
            "web+fast",
            "web+gpu",
            "web+fast+gpu",
        ]
        .map(String::from)
        .into();
        assert_eq!(routes, expected);
        // A job requiring a tag the worker lacks is on a route it does not serve.
        assert!(!routes.contains(&route("archive", &["10gbe".to_string()])));
    }

    fn worker() -> WorkerInfo {
        WorkerInfo::new("w", "h")
    }
}
