//! The [`Queue`] contract on RabbitMQ: enqueue with confirms, leases as deliveries (with the
//! lost-attempt count kept in the message), fenced heartbeats and acknowledgements, and the
//! failed queue behind `jobs`, `retry` and `cancel`.

use super::*;

#[async_trait]
impl Queue for AmqpQueue {
    async fn enqueue(&self, spec: JobSpec, force: bool) -> Result<Enqueued, QueueError> {
        // The broker keeps no index of jobs, so a known job cannot be spotted here; a worker
        // that finds this job's verified output already in place acknowledges it as done
        // without encoding. A forced job may replace that output.
        let mut spec = spec;
        spec.overwrite |= force;
        let id = JobId(spec.key.chars().take(16).collect());
        let env = Envelope {
            v: envelope::VERSION,
            id: id.clone(),
            spec,
            attempts: 0,
            lost: 0,
            error: None,
            stderr_tail: None,
            created_ms: self.inner.now(),
            failed_ms: None,
        };
        let props = persistent().with_priority(priority(&env.spec));
        self.inner
            .publish_envelope(&self.inner.names.jobs, &env, props)
            .await?;
        self.inner
            .publish_event(&Event::JobQueued {
                id: id.clone(),
                input: env.spec.input.clone(),
                profile: env.spec.profile.clone(),
            })
            .await;
        Ok(Enqueued::Queued(id))
    }

    async fn lease(
        &self,
        worker: &WorkerInfo,
        wait: Duration,
    ) -> Result<Option<Lease>, QueueError> {
        let inner = &self.inner;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            inner
                .consumer(worker.concurrency.min(u16::MAX as u32) as u16)
                .await?;
            let next = {
                let mut consuming = inner.consuming.lock().await;
                let Some(c) = consuming.as_mut() else {
                    continue;
                };
                let epoch = c.epoch;
                match tokio::time::timeout_at(deadline, c.consumer.next()).await {
                    Err(_) => return Ok(None),
                    Ok(None) => Err("the broker cancelled this worker's consumer".to_owned()),
                    Ok(Some(Err(e))) => Err(control::explain_channel_error(&e.to_string())),
                    Ok(Some(Ok(delivery))) => Ok((epoch, delivery)),
                }
            };
            let (epoch, delivery) = match next {
                Ok(x) => x,
                Err(why) => {
                    tracing::error!("{why}");
                    inner.invalidate().await;
                    return Err(backend(why));
                }
            };
            let mut env = match envelope::parse(&delivery.data) {
                Ok(env) => env,
                Err(why) => {
                    // Not ours or malformed: keep it, with the reason, where people look.
                    tracing::warn!(reason = %why, "refused a message");
                    let mut headers = FieldTable::default();
                    headers.insert(
                        "x-videofarm-error".into(),
                        AMQPValue::LongString(why.as_str().into()),
                    );
                    // An oversized message is kept only in part: refusing it must not copy it.
                    let kept = &delivery.data[..delivery.data.len().min(envelope::MAX_MESSAGE)];
                    inner
                        .publish(
                            &inner.names.failed,
                            kept,
                            persistent().with_headers(headers),
                        )
                        .await?;
                    delivery
                        .ack(BasicAckOptions::default())
                        .await
                        .map_err(backend)?;
                    continue;
                }
            };
            if delivery.redelivered {
                // An earlier holder lost this delivery (it died, its connection dropped, or
                // RabbitMQ's consumer_timeout closed its channel): count that attempt.
                env.attempts += 1;
                env.lost += 1;
                env.error = Some(if env.lost >= inner.queue.max_lost {
                    format!(
                        "lost {} times: every worker that took it died or lost its connection to RabbitMQ (or the encode outlived the broker's consumer_timeout); it may be what brings them down",
                        env.lost
                    )
                } else {
                    format!(
                        "attempt {} was lost: its worker died or lost its connection to RabbitMQ (or the encode outlived the broker's consumer_timeout)",
                        env.attempts
                    )
                });
                let target = if env.lost >= inner.queue.max_lost {
                    env.failed_ms = Some(inner.now());
                    &inner.names.failed
                } else {
                    &inner.names.jobs
                };
                inner
                    .publish_envelope(
                        target,
                        &env,
                        persistent().with_priority(priority(&env.spec)),
                    )
                    .await?;
                delivery
                    .ack(BasicAckOptions::default())
                    .await
                    .map_err(backend)?;
                continue;
            }
            let parent_cancelled = match &env.spec.parent {
                Some(parent) => inner.is_cancelled(parent, env.created_ms).await?,
                None => false,
            };
            if parent_cancelled || inner.is_cancelled(&env.id, env.created_ms).await? {
                tracing::info!(job = %env.id, "dropped a cancelled job");
                delivery
                    .ack(BasicAckOptions::default())
                    .await
                    .map_err(backend)?;
                continue;
            }
            let token = inner.next_token.fetch_add(1, Ordering::SeqCst);
            let lease = Lease {
                id: env.id.clone(),
                spec: env.spec.clone(),
                attempt: env.attempts + 1,
                lost: env.lost,
                token,
                handle: token,
            };
            inner.held.lock().unwrap_or_else(|p| p.into_inner()).insert(
                token,
                Held {
                    token,
                    epoch,
                    acker: delivery.acker,
                    envelope: env,
                    progress: Progress::default(),
                    cancelled: None,
                    publishing: false,
                },
            );
            return Ok(Some(lease));
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
                // Cancelled while running: the job is over; take it off the queue for good.
                let held = inner.take_held(lease)?;
                let _ = inner.ack(&held, &lease.id).await;
                Err(QueueError::Cancelled(by))
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
        let mut env = held.envelope.clone();
        match outcome {
            Outcome::Succeeded(_) => {}
            Outcome::Released => {
                // Back at once, attempts unchanged: a copy first, then the ack (a crash in
                // between leaves a duplicate, which the output check makes harmless).
                inner
                    .publish_envelope(
                        &inner.names.jobs,
                        &env,
                        persistent().with_priority(priority(&env.spec)),
                    )
                    .await?;
            }
            Outcome::Deferred { after, .. } => {
                // Back after the wait through the retry queue, attempts unchanged.
                let delay = after.as_millis().max(1);
                let props = persistent().with_expiration(delay.to_string().into());
                inner
                    .publish_envelope(&inner.names.retry, &env, props)
                    .await?;
            }
            Outcome::Failed(failure) => {
                env.attempts += 1;
                env.error = Some(failure.reason.clone());
                env.stderr_tail = Some(failure.stderr_tail.clone());
                if failure.kind == FailureKind::Permanent
                    || env.attempts.saturating_sub(env.lost) >= inner.queue.max_attempts
                {
                    env.failed_ms = Some(inner.now());
                    inner
                        .publish_envelope(&inner.names.failed, &env, persistent())
                        .await?;
                } else {
                    let delay = inner
                        .queue
                        .backoff_after(env.attempts.saturating_sub(env.lost))
                        .as_millis()
                        .max(1);
                    let props = persistent().with_expiration(delay.to_string().into());
                    inner
                        .publish_envelope(&inner.names.retry, &env, props)
                        .await?;
                }
            }
        }
        inner.ack(&held, &lease.id).await
    }

    async fn register_worker(&self, worker: &WorkerInfo) -> Result<(), QueueError> {
        let first = {
            let mut me = self.inner.me.lock().unwrap_or_else(|p| p.into_inner());
            let first = me.is_none();
            *me = Some(worker.clone());
            first
        };
        let running = self
            .inner
            .responder
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|h| !h.is_finished());
        if !running {
            let handle = control::spawn_responder(self.inner.clone()).await?;
            *self
                .inner
                .responder
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(handle);
        }
        if first {
            tracing::debug!(worker = %worker.name, "answering control requests");
        }
        Ok(())
    }

    async fn unregister_worker(&self, _worker: &WorkerInfo) -> Result<(), QueueError> {
        self.inner
            .me
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(handle) = self
            .inner
            .responder
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            handle.abort();
        }
        Ok(())
    }

    async fn workers(&self) -> Result<Vec<WorkerStatus>, QueueError> {
        control::inspect(&self.inner).await
    }

    async fn counts(&self) -> Result<Counts, QueueError> {
        let channel = self.inner.channel().await?;
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let depth = |name: &str| {
            let channel = channel.clone();
            let name = name.to_owned();
            async move {
                channel
                    .queue_declare(name.as_str().into(), passive, FieldTable::default())
                    .await
                    .map(|q| u64::from(q.message_count()))
                    .map_err(backend)
            }
        };
        let ready = depth(&self.inner.names.jobs).await?;
        let retrying = depth(&self.inner.names.retry).await?;
        let failed = depth(&self.inner.names.failed).await?;
        let running = self
            .workers()
            .await?
            .iter()
            .map(|w| w.active.len() as u64)
            .sum();
        Ok(Counts {
            queued: ready + retrying,
            retrying,
            running,
            succeeded: 0,
            failed,
            cancelled: 0,
        })
    }

    async fn jobs(&self, filter: &JobFilter) -> Result<Vec<JobRecord>, QueueError> {
        let inner = &self.inner;
        let max = inner.queue.max_attempts;
        let mut records = Vec::new();
        let wants = |state: JobState| filter.state.is_none_or(|s| s == state);
        // Chunk jobs are shown only when asked for: a user sees a split tape as one job.
        // Waiting jobs are not listed one by one: reading them off the queue would return them
        // marked as redelivered, which is how a lost attempt is recognised. `counts` has the depth.
        if wants(JobState::Running) {
            for worker in self.workers().await? {
                for job in worker.active {
                    records.push(JobRecord {
                        id: job.id,
                        state: JobState::Running,
                        spec: JobSpec {
                            input: job.input,
                            output: job.output,
                            profile: job.profile,
                            ..unknown_spec()
                        },
                        attempts: 0,
                        max_attempts: max,
                        error: None,
                        stderr_tail: None,
                        worker: Some(worker.name.clone()),
                        progress: Some(Progress {
                            progress: job.progress,
                            frames: 0,
                            fps: job.fps,
                            speed: job.speed,
                            eta_s: job.eta_s,
                        }),
                        result: None,
                        created_ms: 0,
                        started_ms: None,
                        finished_ms: None,
                    });
                }
            }
        }
        if wants(JobState::Failed) {
            records.extend(
                inner
                    .browse(&inner.names.failed)
                    .await?
                    .into_iter()
                    .map(|(e, _)| record(e, JobState::Failed, max)),
            );
        }
        if let Some(ids) = &filter.ids {
            records.retain(|r| ids.contains(&r.id));
        }
        Ok(records)
    }

    async fn history(&self, _id: &JobId) -> Result<Vec<AttemptRecord>, QueueError> {
        // The broker keeps no history; the dashboard keeps one from the events.
        Ok(Vec::new())
    }

    async fn retry(&self, ids: &[JobId]) -> Result<Vec<JobId>, QueueError> {
        let inner = &self.inner;
        let taken = inner
            .take_from(
                &inner.names.failed,
                Some(ids),
                |env| Some(fresh(env)),
                Some(&inner.names.jobs),
            )
            .await?;
        if let Some(missing) = ids.iter().find(|id| !taken.contains(id)) {
            return Err(QueueError::NotFound(missing.clone()));
        }
        Ok(taken)
    }

    async fn retry_all_failed(&self) -> Result<Vec<JobId>, QueueError> {
        let inner = &self.inner;
        inner
            .take_from(
                &inner.names.failed,
                None,
                |env| Some(fresh(env)),
                Some(&inner.names.jobs),
            )
            .await
    }

    async fn cancel(&self, ids: &[JobId]) -> Result<Vec<JobId>, QueueError> {
        // A waiting job cannot be taken out of the middle of a queue: its id is recorded, and
        // the worker that receives it drops it. A running one is stopped by its worker.
        let inner = &self.inner;
        // Recorded with the time: a copy of the job queued after this cancel is not dropped.
        let at = inner.now();
        for id in ids {
            inner
                .publish(
                    &inner.names.cancelled,
                    format!("{id}\t{at}").as_bytes(),
                    persistent(),
                )
                .await?;
        }
        inner.add_tombstones(ids, at);
        let running = control::cancel_running(inner, ids).await?;
        if !running.is_empty() {
            tracing::info!(jobs = ?running, "running jobs will stop at their next heartbeat");
        }
        Ok(ids.to_vec())
    }
}
