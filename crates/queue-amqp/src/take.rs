//! Taking a job: the steps of [`Queue::lease`](videofarm_core::Queue::lease) on RabbitMQ, one
//! delivery at a time. A delivery is read into a job (or refused, kept with its reason); a
//! cancelled job is dropped; a redelivered one is judged by the records (never begun: put back
//! uncounted; settled by its holder: dropped; lost: counted, and failed when lost too often);
//! one this worker cannot run goes to its route's queue; the rest is held and its start
//! recorded.

use crate::records::Fact;
use crate::{
    backend, celery, envelope, persistent, route, timeout, Envelope, Held, Inner, Progress,
};
use futures_lite::StreamExt;
use lapin::options::BasicAckOptions;
use lapin::types::{AMQPValue, FieldTable};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use videofarm_core::lifecycle::{self, LostCause};
use videofarm_core::{AttemptOutcome, JobState, Lease, QueueError, WorkerInfo};

/// What became of the attempt a redelivered message was given for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Begun {
    /// No worker began it (it was only prefetched): nothing was lost.
    Never,
    /// Begun, and lost with its worker's connection.
    Lost,
    /// Its holder recorded its end and sent on what follows.
    Settled,
}

impl Inner {
    /// The next delivery for `worker` before `deadline` (consuming on every route it serves,
    /// and answering control requests on the same connection); `None` when none came.
    pub(crate) async fn next_delivery(
        self: &Arc<Self>,
        worker: &WorkerInfo,
        deadline: tokio::time::Instant,
    ) -> Result<Option<(u64, route::Source, lapin::message::Delivery)>, QueueError> {
        loop {
            self.consumer(worker).await?;
            // Hears cancels on this connection before it takes anything.
            self.ensure_responder().await?;
            let next = {
                let mut consuming = self.consuming.lock().await;
                let Some(c) = consuming.as_mut() else {
                    continue;
                };
                let epoch = c.epoch;
                match tokio::time::timeout_at(deadline, c.deliveries.next()).await {
                    Err(_) => return Ok(None),
                    Ok(None) => Err("the broker cancelled this worker's consumer".to_owned()),
                    Ok(Some((_, Err(e)))) => Err(timeout::explain_channel_error(&e.to_string())),
                    Ok(Some((source, Ok(delivery)))) => Ok((epoch, source, delivery)),
                }
            };
            return match next {
                Ok(next) => Ok(Some(next)),
                Err(why) => {
                    tracing::error!("{why}");
                    self.invalidate().await;
                    Err(backend(why))
                }
            };
        }
    }

    /// Take `delivery` for `worker` if it is a job for it; `None` when it was settled another
    /// way (see the module documentation).
    pub(crate) async fn take(
        self: &Arc<Self>,
        worker: &WorkerInfo,
        epoch: u64,
        source: route::Source,
        delivery: lapin::message::Delivery,
    ) -> Result<Option<Lease>, QueueError> {
        let intake = match source {
            route::Source::Farm => envelope::parse(&delivery.data).map(|env| (env, None)),
            route::Source::Celery => self
                .read_celery(&delivery)
                .map(|(env, holding)| (env, Some(holding))),
        };
        let (env, celery) = match intake {
            Ok(taken) => taken,
            Err(why) => {
                self.refuse(&delivery, why).await?;
                return Ok(None);
            }
        };
        // A cancelled job is dropped first, even one whose worker died: its loss is not
        // counted (that could fail it, and a failed job can be retried back to life).
        let parent_cancelled = match &env.spec.parent {
            Some(parent) => {
                let asked = self.is_cancelled(parent, env.created_ms).await;
                or_put_back(&delivery, asked).await?
            }
            None => false,
        };
        let cancelled = || async {
            let asked = self.is_cancelled(&env.id, env.created_ms).await;
            or_put_back(&delivery, asked).await
        };
        if parent_cancelled || cancelled().await? {
            tracing::info!(job = %env.id, "dropped a cancelled job");
            settled(&delivery).await?;
            return Ok(None);
        }
        if delivery.redelivered {
            // A Celery task is read afresh at each delivery (it carries none of the farm's
            // marks): a redelivered one counts as lost, as it always did.
            let begun = match source {
                route::Source::Farm => {
                    let asked = self.begun(&env).await;
                    or_put_back(&delivery, asked).await?
                }
                route::Source::Celery => Begun::Lost,
            };
            self.redelivered(env, &delivery, begun).await?;
            return Ok(None);
        }
        if !worker.can_run(&env.spec) {
            // From the old single queue (or a route this worker serves but cannot run, as
            // with more tags than count for routing): moved to its route's queue, where only
            // workers that can run it look, without an attempt counted or recorded.
            let served = route::worker_routes(worker)
                .contains(&route::route(&env.spec.profile, &env.spec.require));
            tracing::info!(job = %env.id, profile = %env.spec.profile, "received a job this worker cannot run; moved it to its route's queue");
            self.publish_job(&env, served.then_some(1000)).await?;
            settled(&delivery).await?;
            return Ok(None);
        }
        self.hold(worker, epoch, source, delivery, env, celery)
            .await
            .map(Some)
    }

    /// Not ours or malformed: kept, with the reason, where people look.
    async fn refuse(
        &self,
        delivery: &lapin::message::Delivery,
        why: String,
    ) -> Result<(), QueueError> {
        tracing::warn!(reason = %why, "refused a message");
        let mut headers = FieldTable::default();
        headers.insert(
            "x-videofarm-error".into(),
            AMQPValue::LongString(why.as_str().into()),
        );
        // An oversized message is kept only in part: refusing it must not copy it.
        let kept = &delivery.data[..delivery.data.len().min(envelope::MAX_MESSAGE)];
        self.publish(&self.names.failed, kept, persistent().with_headers(headers))
            .await?;
        self.record(Fact::Refused { reason: why }).await?;
        settled(delivery).await
    }

    /// A message an earlier holder did not acknowledge (it died, its connection dropped, or
    /// RabbitMQ's consumer_timeout took it back), once `begun` says what its attempt was.
    async fn redelivered(
        &self,
        mut env: Envelope,
        delivery: &lapin::message::Delivery,
        begun: Begun,
    ) -> Result<(), QueueError> {
        match begun {
            Begun::Never => {
                // Handed to a worker that went before it began it (a delivery prefetched
                // ahead of its leases): no attempt was lost. Back as a fresh copy, uncounted
                // (found by the model run: a job that never ran was failed as lost too often).
                self.publish_job(&env, None).await?;
            }
            Begun::Settled => {
                // Its holder recorded how the attempt ended, and sent on what follows (a copy
                // to retry, the failed queue), but could not acknowledge it.
                tracing::info!(job = %env.id, "dropped a redelivered job whose attempt its worker had already settled");
            }
            Begun::Lost => {
                env.attempts += 1;
                env.lost += 1;
                // Its next lease opens a new attempt in the records.
                env.waiting = false;
                let failed = self.queue.lost_too_often(env.lost);
                env.error = Some(lifecycle::lost_reason(
                    env.attempts,
                    env.lost,
                    None,
                    failed,
                    LostCause::ConnectionGone,
                ));
                if failed {
                    env.failed_ms = Some(self.now());
                    self.publish_envelope(&self.names.failed, &env, persistent())
                        .await?;
                } else {
                    self.publish_job(&env, None).await?;
                }
                self.record(Fact::Ended {
                    id: env.id.clone(),
                    worker: None,
                    attempt: Some(env.attempts),
                    holder: None,
                    outcome: AttemptOutcome::Lost,
                    state: if failed {
                        JobState::Failed
                    } else {
                        JobState::Queued
                    },
                    attempts: env.attempts,
                    error: env.error.clone(),
                    stderr_tail: None,
                    result: None,
                    not_before: None,
                    queued_ms: Some(env.created_ms),
                })
                .await?;
            }
        }
        settled(delivery).await
    }

    /// Hold `delivery` as a lease of `env` for `worker`, and record that it started (unless it
    /// is a split tape taken again to see whether its chunks are done: one attempt runs from
    /// planning to join).
    async fn hold(
        &self,
        worker: &WorkerInfo,
        epoch: u64,
        source: route::Source,
        delivery: lapin::message::Delivery,
        env: Envelope,
        celery: Option<celery::Holding>,
    ) -> Result<Lease, QueueError> {
        let token = self.next_token.fetch_add(1, Ordering::SeqCst);
        let holder = self.holder(epoch, token);
        let lease = Lease {
            id: env.id.clone(),
            spec: env.spec.clone(),
            attempt: env.attempts + 1,
            lost: env.lost,
            token,
            handle: token,
            fresh: !env.waiting,
        };
        let waiting = env.waiting;
        let started = Fact::Started {
            id: env.id.clone(),
            spec: env.spec.clone(),
            attempt: env.attempts + 1,
            worker: worker.name.clone(),
            holder: Some(holder.clone()),
            lost: env.lost,
            queued_ms: Some(env.created_ms),
        };
        // Held before the start is recorded: a cancel broadcast that arrives meanwhile marks
        // it, and its first heartbeat stops it.
        self.held.lock().unwrap_or_else(|p| p.into_inner()).insert(
            token,
            Held {
                token,
                epoch,
                acker: delivery.acker,
                envelope: env,
                progress: Progress::default(),
                cancelled: None,
                publishing: false,
                worker: worker.name.clone(),
                holder,
                started_ms: self.now(),
                celery,
            },
        );
        if waiting {
            return Ok(lease);
        }
        let recorded = self.record(started).await;
        if recorded.is_ok() && source == route::Source::Celery {
            self.celery_task_taken(&lease).await;
        }
        if let Err(e) = recorded {
            // Not recorded, not taken: back to the queue for whoever can record it, as a
            // fresh message where the broker still answers (a requeued delivery would come
            // back marked redelivered and be counted as a lost attempt).
            if let Ok(held) = self.take_held(&lease) {
                self.put_back(&held).await;
            }
            return Err(e);
        }
        Ok(lease)
    }

    /// What became of the attempt a redelivered `env` was given for, by the records read
    /// after everything recorded before this question (its holder recorded the start before
    /// it took the job, and any end before it acknowledged). A message is known by its job and
    /// when it was queued (a job queued again while a copy of it waits has two).
    async fn begun(self: &Arc<Self>, env: &Envelope) -> Result<Begun, QueueError> {
        self.follower.read_all_again();
        let (id, queued_ms, attempt) = (env.id.clone(), env.created_ms, env.attempts + 1);
        // Read as written, without first looking for gone sessions: a running attempt and a
        // lost one mean the same here (lost), and looking would wait on the broker.
        self.sync_records().await?;
        let found = self
            .read_synced(move |store| store.attempt_outcome(&id, queued_ms, attempt))
            .await?;
        // A released attempt is not counted: the copy handed back carries its number again,
        // and was not begun while that row is the last of the number (found by the long model
        // run: a released job prefetched and lost was counted lost).
        Ok(match found {
            None | Some(AttemptOutcome::Released) => Begun::Never,
            Some(AttemptOutcome::Succeeded | AttemptOutcome::Failed) => Begun::Settled,
            Some(_) => Begun::Lost,
        })
    }
}

/// `asked`, a question about `delivery` asked before anything was done with it; when it could
/// not be answered (the broker or the records stream too slow), the delivery goes back to the
/// queue as it was, to be asked about again. Left unsettled, it stayed with this worker's
/// channel, neither run nor handed on, until the connection ended: seen as jobs queued for
/// ever beside idle workers after 20 workers of 200 were killed.
async fn or_put_back<T>(
    delivery: &lapin::message::Delivery,
    asked: Result<T, QueueError>,
) -> Result<T, QueueError> {
    if asked.is_err() {
        let _ = delivery
            .nack(lapin::options::BasicNackOptions {
                requeue: true,
                ..Default::default()
            })
            .await;
    }
    asked
}

/// A delivery this worker does not run (refused, lost before, cancelled, not runnable here):
/// whatever became of it is already published, so it is taken off the queue.
async fn settled(delivery: &lapin::message::Delivery) -> Result<(), QueueError> {
    delivery
        .ack(BasicAckOptions::default())
        .await
        .map(|_| ())
        .map_err(backend)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::options::{BasicGetOptions, BasicPublishOptions, QueueDeclareOptions};
    use lapin::types::FieldTable;
    use lapin::{BasicProperties, Connection, ConnectionProperties};

    /// A question about a delivery that could not be answered leaves the delivery back on its
    /// queue for someone to take, not held by this channel.
    #[tokio::test]
    async fn a_delivery_whose_question_failed_is_back_on_its_queue() {
        let url = std::env::var("VIDEOFARM_TEST_AMQP")
            .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
        let connection = Connection::connect(&url, ConnectionProperties::default())
            .await
            .expect("RabbitMQ must be running for this test");
        let channel = connection.create_channel().await.unwrap();
        let queue = format!("vftest-putback-{}", std::process::id());
        let options = QueueDeclareOptions {
            auto_delete: true,
            ..Default::default()
        };
        channel
            .queue_declare(queue.as_str().into(), options, FieldTable::default())
            .await
            .unwrap();
        channel
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                b"job",
                BasicProperties::default(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        let get = || async {
            channel
                .basic_get(queue.as_str().into(), BasicGetOptions::default())
                .await
                .unwrap()
        };
        let taken = get().await.expect("the message is there");
        let asked: Result<(), QueueError> = Err(backend("the records did not answer"));
        assert!(or_put_back(&taken.delivery, asked).await.is_err());
        let again = get().await.expect("the message is back on its queue");
        assert_eq!(again.delivery.data, b"job");
        assert!(again.delivery.redelivered);
        again
            .delivery
            .ack(BasicAckOptions::default())
            .await
            .unwrap();
        let _ = connection.close(200, "done".into()).await;
    }
}
