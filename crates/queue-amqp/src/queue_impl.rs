//! The [`Queue`] contract on RabbitMQ: enqueue with confirms, leases as deliveries (with the
//! lost-attempt count kept in the message), fenced heartbeats and acknowledgements, and the
//! failed queue behind `jobs`, `retry` and `cancel`.

use super::*;
use records::Fact;
use videofarm_core::lifecycle::{self, JobView};
use videofarm_core::{Answer, AttemptOutcome, Verdict};

/// How many cancelled ids one tombstone message holds.
const TOMBSTONES_PER_MESSAGE: usize = 1000;

#[async_trait]
impl Queue for AmqpQueue {
    async fn enqueue_many(
        &self,
        specs: Vec<JobSpec>,
        force: bool,
    ) -> Result<Vec<Result<Enqueued, QueueError>>, QueueError> {
        // The broker keeps no index of jobs, so a known job cannot be spotted here; a worker
        // that finds this job's verified output already in place acknowledges it as done
        // without encoding. A forced job may replace that output.
        let inner = &self.inner;
        let created_ms = inner.now();
        let envelopes: Vec<Envelope> = specs
            .into_iter()
            .map(|mut spec| {
                spec.overwrite |= force;
                Envelope::new(JobId(spec.key.chars().take(16).collect()), spec, created_ms)
            })
            .collect();
        // The facts first, in one message: recorded after the jobs, a "queued" could land after
        // a fast worker's "succeeded" and undo it. Then every job is published before any
        // confirm is awaited (in order, on one channel).
        let facts = envelopes
            .iter()
            .map(|env| Fact::Queued {
                id: env.id.clone(),
                spec: env.spec.clone(),
                queued_ms: Some(env.created_ms),
            })
            .collect();
        inner.record_all(facts).await?;
        let confirmed = inner.publish_jobs(&envelopes).await?;
        let mut done = Vec::with_capacity(envelopes.len());
        for (env, confirmed) in envelopes.into_iter().zip(confirmed) {
            if confirmed.is_ok() {
                inner
                    .publish_event(&Event::JobQueued {
                        id: env.id.clone(),
                        input: env.spec.input.clone(),
                        profile: env.spec.profile.clone(),
                    })
                    .await;
            }
            done.push(confirmed.map(|()| Enqueued::Queued(env.id)));
        }
        Ok(done)
    }

    async fn lease(
        &self,
        worker: &WorkerInfo,
        wait: Duration,
    ) -> Result<Option<Lease>, QueueError> {
        let inner = &self.inner;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let Some((epoch, source, delivery)) = inner.next_delivery(worker, deadline).await?
            else {
                return Ok(None);
            };
            if let Some(lease) = inner.take(worker, epoch, source, delivery).await? {
                return Ok(Some(lease));
            }
        }
    }

    async fn heartbeat(
        &self,
        lease: &Lease,
        progress: Option<&Progress>,
    ) -> Result<(), QueueError> {
        let inner = &self.inner;
        let connected = inner
            .consume_channel
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|c| c.status().connected());
        if !connected {
            // Before the connection is left: the deliveries the broker took back for want of
            // an acknowledgement are settled as failed attempts, in this worker's words.
            inner.settle_ack_timeouts().await;
            inner.invalidate().await;
        }
        match inner.check(lease) {
            Ok(()) => {
                if let Some(p) = progress {
                    if let Some(h) = inner
                        .held
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get_mut(&lease.handle)
                    {
                        h.progress = *p;
                    }
                }
                Ok(())
            }
            Err(QueueError::Cancelled(by)) => {
                let held = inner.take_held(lease)?;
                inner.end_cancelled(held, lease, by).await
            }
            Err(e) => Err(e),
        }
    }

    async fn begin_publish(&self, lease: &Lease) -> Result<(), QueueError> {
        self.heartbeat(lease, None).await?;
        // Granted: from here a cancel broadcast passes this delivery by.
        let mut held = self.inner.held.lock().unwrap_or_else(|p| p.into_inner());
        match held.get_mut(&lease.handle) {
            Some(h) if h.cancelled.is_none() => {
                h.publishing = true;
                Ok(())
            }
            Some(h) => Err(QueueError::Cancelled(
                h.cancelled.clone().unwrap_or_else(|| lease.id.clone()),
            )),
            None => Err(QueueError::LeaseLost(lease.id.clone())),
        }
    }

    async fn finish(&self, lease: &Lease, outcome: Outcome) -> Result<(), QueueError> {
        let inner = &self.inner;
        let held = inner.take_held(lease)?;
        if let Some(by) = held.cancelled.clone() {
            // Cancelled since its last heartbeat (a cancel never marks a publish that began):
            // it ends cancelled, whatever the worker says, and is never queued again.
            return inner.end_cancelled(held, lease, by).await;
        }
        let mut env = held.envelope.clone();
        let fact = match outcome {
            Outcome::Succeeded(report) => Some(held.ended(
                AttemptOutcome::Succeeded,
                JobState::Succeeded,
                Some(report),
                None,
            )),
            Outcome::Released => {
                // Back at once, attempts unchanged: a copy first, then the ack (a crash in
                // between leaves a duplicate, which the output check makes harmless).
                env.waiting = false;
                inner.copy_back(&held, &env).await?;
                let mut fact = held.ended(AttemptOutcome::Released, JobState::Queued, None, None);
                if let Fact::Ended { attempts, .. } = &mut fact {
                    *attempts = env.attempts;
                }
                Some(fact)
            }
            Outcome::Deferred { after, .. } => {
                // Back after the wait through the retry queue, attempts unchanged; the records
                // see one attempt from planning to join, held by no connection meanwhile.
                env.waiting = true;
                inner.publish_job(&env, Some(after.as_millis())).await?;
                (!held.envelope.waiting).then(|| Fact::Parked {
                    id: env.id.clone(),
                    holder: held.holder.clone(),
                })
            }
            Outcome::Failed(failure) => Some(inner.settle_failure(&held, &failure).await?),
        };
        // Recorded before the ack: a fact lost with the connection leaves the job unacknowledged,
        // so it comes back and is recorded then.
        // Only a Celery task says how it ended once more, on `celeryev`.
        let ended = held.celery.as_ref().and(fact.clone());
        if let Some(fact) = fact {
            inner.record(fact).await?;
        }
        inner.ack(&held, &lease.id).await?;
        if let (Some(celery), Some(ended)) = (&held.celery, ended) {
            inner.celery_task_ended(celery, &ended).await;
        }
        Ok(())
    }

    async fn register_worker(&self, worker: &WorkerInfo) -> Result<(), QueueError> {
        self.inner.forget_workers();
        let first = {
            let mut me = self.inner.me.lock().unwrap_or_else(|p| p.into_inner());
            let first = me.is_none();
            *me = Some(worker.clone());
            first
        };
        self.inner.ensure_responder().await?;
        if first {
            tracing::debug!(worker = %worker.name, "answering control requests");
        }
        let celery_running = self
            .inner
            .celery_control
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|h| !h.is_finished());
        if self.inner.settings.celery.is_some() && !celery_running {
            let handle = celery::spawn_control(self.inner.clone()).await?;
            *self
                .inner
                .celery_control
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(handle);
        }
        Ok(())
    }

    async fn publish_event(&self, event: &Event) {
        self.inner.publish_event(event).await;
    }

    async fn report_watch(
        &self,
        report: &videofarm_core::watching::WatchReport,
    ) -> Result<(), QueueError> {
        self.inner
            .record(Fact::Watched {
                report: report.clone(),
            })
            .await
    }

    async fn unregister_worker(&self, _worker: &WorkerInfo) -> Result<(), QueueError> {
        self.inner.forget_workers();
        self.inner
            .me
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some((_, handle)) = self
            .inner
            .responder
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            handle.abort();
        }
        let celery = self
            .inner
            .celery_control
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(handle) = celery {
            handle.abort();
            self.inner.celery_worker_event("worker-offline").await;
        }
        Ok(())
    }
}

#[async_trait]
impl Records for AmqpQueue {
    async fn workers(&self) -> Result<Vec<WorkerStatus>, QueueError> {
        self.inner.workers().await
    }

    async fn worker_count(&self) -> Result<usize, QueueError> {
        // Every worker process consumes the job queue once: the broker knows how many do.
        self.inner.consumers(&self.inner.names.jobs).await
    }

    async fn explain_waiting(&self, records: &mut [JobRecord]) -> Result<(), QueueError> {
        // A worker consumes the queue of every route it serves, so a route's queue without a
        // consumer is a job no live worker can take: the broker's counts say so, no worker is
        // asked.
        self.inner.explain_waiting(records).await
    }

    async fn watch_problems(
        &self,
    ) -> Result<Vec<videofarm_core::watching::WatchReport>, QueueError> {
        self.inner
            .read_records(|store| store.watch_problems())
            .await
    }

    async fn counts(&self) -> Result<Counts, QueueError> {
        let now = self.inner.now();
        self.inner
            .read_records(move |store| store.counts(now))
            .await
    }

    async fn jobs(&self, filter: &JobFilter) -> Result<Vec<JobRecord>, QueueError> {
        let filter = filter.clone();
        self.inner
            .read_records(move |store| store.jobs(&filter))
            .await
    }

    async fn cancels_since(&self, since_ms: i64) -> Result<bool, QueueError> {
        self.inner.cancels_since(since_ms).await
    }

    async fn history(&self, id: &JobId) -> Result<Vec<AttemptRecord>, QueueError> {
        let id = id.clone();
        self.inner
            .read_records(move |store| store.history(&id))
            .await
    }

    async fn timeline(
        &self,
        bucket_ms: i64,
        count: usize,
    ) -> Result<Vec<videofarm_core::listing::Bucket>, QueueError> {
        let now = self.inner.now();
        self.inner
            .read_records(move |store| store.timeline(now, bucket_ms, count))
            .await
    }

    async fn subscribe_events(&self) -> Result<Option<Box<dyn EventFeed>>, QueueError> {
        Ok(Some(Box::new(AmqpQueue::subscribe_events(self).await?)))
    }
}

#[async_trait]
impl Control for AmqpQueue {
    async fn retry(&self, ids: &[JobId]) -> Result<Vec<Answer>, QueueError> {
        let inner = &self.inner;
        let mut answers = Vec::with_capacity(ids.len());
        let mut specs = Vec::new();
        for (id, found) in ids.iter().zip(inner.views(ids).await?) {
            let (view, spec) = found.unzip();
            let verdict = lifecycle::retry(view.as_ref());
            if let (Verdict::Done, Some(spec)) = (&verdict, spec) {
                specs.push((id.clone(), spec));
            }
            answers.push(Answer::new(id, verdict));
        }
        if specs.is_empty() {
            return Ok(answers);
        }
        let retried: Vec<JobId> = specs.iter().map(|(id, _)| id.clone()).collect();
        let now = inner.now();
        // Recorded first, for the same reason as a queued job.
        inner
            .record(Fact::Retried {
                ids: retried.clone(),
                queued_ms: Some(now),
            })
            .await?;
        let taken = inner
            .take_from(
                &inner.names.failed,
                Some(&retried),
                |env| Some(fresh(env, now)),
                true,
            )
            .await?;
        // Cancelled jobs (and failed ones no longer in the failed queue) are queued afresh from
        // their records: later than their cancel, so workers take them.
        for (id, spec) in specs.into_iter().filter(|(id, _)| !taken.contains(id)) {
            let env = Envelope::new(id, spec, now);
            inner.publish_job(&env, None).await?;
        }
        inner
            .publish_event(&Event::JobsRetried { ids: retried })
            .await;
        Ok(answers)
    }

    async fn retry_all_failed(&self) -> Result<Vec<Answer>, QueueError> {
        let inner = &self.inner;
        let now = inner.now();
        let taken = inner
            .take_from(&inner.names.failed, None, |env| Some(fresh(env, now)), true)
            .await?;
        if !taken.is_empty() {
            inner
                .record(Fact::Retried {
                    ids: taken.clone(),
                    queued_ms: Some(now),
                })
                .await?;
            inner
                .publish_event(&Event::JobsRetried { ids: taken.clone() })
                .await;
        }
        Ok(taken
            .iter()
            .map(|id| Answer::new(id, Verdict::Done))
            .collect())
    }

    async fn cancel(&self, ids: &[JobId]) -> Result<Vec<Answer>, QueueError> {
        let inner = &self.inner;
        let mut answers = Vec::with_capacity(ids.len());
        for (id, found) in ids.iter().zip(inner.views(ids).await?) {
            let (view, _) = found.unzip();
            answers.push(Answer::new(id, lifecycle::cancel(view.as_ref())));
        }
        let ids: Vec<JobId> = answers
            .iter()
            .filter(|a| a.verdict.is_done())
            .map(|a| a.id.clone())
            .collect();
        if ids.is_empty() {
            return Ok(answers);
        }
        // A waiting job cannot be taken out of the middle of a queue: its id is recorded, and
        // the worker that receives it drops it. A running one is stopped by its worker.
        // Recorded with the time: a copy of the job queued after this cancel is not dropped.
        // Recorded first: the records' "cancelled" is the job's state from here on, whatever
        // its holder's end says later (see `records::apply_one`).
        inner.record(Fact::Cancelled { ids: ids.clone() }).await?;
        let at = inner.now();
        // Tombstones, "ID\tWHEN" a line, many to a message: 10,000 ids are a few messages
        // published together, not 10,000 round trips (and as few for each reader).
        let tombstones = ids
            .chunks(TOMBSTONES_PER_MESSAGE)
            .map(|chunk| {
                let lines: Vec<String> = chunk.iter().map(|id| format!("{id}\t{at}")).collect();
                let body = lines.join("\n").into_bytes();
                (inner.names.cancelled.clone(), body, persistent())
            })
            .collect();
        for sent in inner.publish_many("", tombstones).await? {
            sent?;
        }
        inner.add_tombstones(&ids, at);
        let running = control::cancel_running(inner, &ids).await?;
        if !running.is_empty() {
            tracing::info!(jobs = ?running, "running jobs will stop at their next heartbeat");
        }
        inner.publish_event(&Event::JobsCancelled { ids }).await;
        Ok(answers)
    }
}

impl Inner {
    /// A held job's attempt failed: it goes back after its backoff, or to the failed queue
    /// when its attempts are spent, counted; returns the fact to record (after this, before
    /// the acknowledgement).
    pub(crate) async fn settle_failure(
        &self,
        held: &Held,
        failure: &videofarm_core::Failure,
    ) -> Result<Fact, QueueError> {
        let mut env = held.envelope.clone();
        let after = self
            .queue
            .after_failure(env.attempts.saturating_sub(env.lost), failure.kind);
        env.attempts += 1;
        env.waiting = false;
        env.error = Some(failure.reason.clone());
        env.stderr_tail = Some(failure.stderr_tail.clone());
        let (state, not_before) = match after {
            AfterFailure::Fail => {
                env.failed_ms = Some(self.now());
                self.publish_envelope(&self.names.failed, &env, persistent())
                    .await?;
                (JobState::Failed, None)
            }
            AfterFailure::Retry { after } => {
                let ms = after.as_millis().max(1);
                self.publish_job(&env, Some(ms)).await?;
                (JobState::Queued, Some(self.now() + ms as i64))
            }
        };
        Ok(Fact::Ended {
            id: env.id.clone(),
            worker: Some(held.worker.clone()),
            attempt: Some(env.attempts),
            holder: Some(held.holder.clone()),
            outcome: AttemptOutcome::Failed,
            state,
            attempts: env.attempts,
            error: env.error,
            stderr_tail: env.stderr_tail,
            result: None,
            not_before,
            queued_ms: Some(env.created_ms),
        })
    }

    /// A held job that a user cancelled while it ran: its attempt ends cancelled and it is
    /// taken off the queue for good; the holder hears `Cancelled`.
    async fn end_cancelled(&self, held: Held, lease: &Lease, by: JobId) -> Result<(), QueueError> {
        self.record(held.ended(
            AttemptOutcome::Cancelled,
            JobState::Cancelled,
            None,
            Some(if by == lease.id {
                "cancelled by the user".into()
            } else {
                "its tape was cancelled".into()
            }),
        ))
        .await?;
        let _ = self.ack(&held, &lease.id).await;
        Err(QueueError::Cancelled(by))
    }

    /// What the lifecycle needs to know of each of `ids`, from the records (one read for
    /// all), and their specs.
    async fn views(
        self: &Arc<Self>,
        ids: &[JobId],
    ) -> Result<Vec<Option<(JobView, JobSpec)>>, QueueError> {
        let wanted = ids.to_vec();
        let found: Vec<Option<(JobState, JobSpec)>> = self
            .read_records(move |store| wanted.iter().map(|id| store.state(id)).collect())
            .await?;
        Ok(ids
            .iter()
            .zip(found)
            .map(|(id, found)| {
                found.map(|(state, spec)| {
                    let view = JobView {
                        state,
                        // The records do not see a publish begin: the worker passes a cancel
                        // by once it has begun (see `begin_publish`).
                        publishing: false,
                        parent: spec.parent.clone(),
                        refused: records::is_refusal(id),
                    };
                    (view, spec)
                })
            })
            .collect())
    }
}

impl Held {
    /// The fact that this attempt ended as `outcome`, leaving the job in `state`.
    fn ended(
        &self,
        outcome: AttemptOutcome,
        state: JobState,
        result: Option<videofarm_core::SuccessReport>,
        error: Option<String>,
    ) -> records::Fact {
        records::Fact::Ended {
            id: self.envelope.id.clone(),
            worker: Some(self.worker.clone()),
            attempt: Some(self.envelope.attempts + 1),
            holder: Some(self.holder.clone()),
            outcome,
            state,
            attempts: self.envelope.attempts + 1,
            error,
            stderr_tail: None,
            result,
            not_before: None,
            queued_ms: Some(self.envelope.created_ms),
        }
    }
}
