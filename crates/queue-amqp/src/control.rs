//! Requests to every live worker at once, over a fanout exchange: `inspect` (what are you
//! doing?) and `cancel` (stop these jobs). Each worker answers on the asker's private queue;
//! the asker collects answers for a short time. The live workers asked for by a dashboard are
//! answered from the last answer while a fresh one is asked for.

use crate::connection::answered;
use crate::{backend, Inner};
use futures_lite::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel};
use serde::{Deserialize, Serialize};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use videofarm_core::clock::rfc3339;
use videofarm_core::{JobId, QueueError, WorkerStatus};

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Request {
    Inspect,
    Cancel { ids: Vec<JobId> },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Reply {
    Status { status: WorkerStatus },
    Cancelled { ids: Vec<JobId> },
}

/// A server-named, exclusive, auto-deleted queue on `channel`, consumed without acks.
pub(crate) async fn private_queue(
    channel: &Channel,
) -> Result<(String, lapin::Consumer), QueueError> {
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(backend)?;
    let name = queue.name().to_string();
    let consumer = channel
        .basic_consume(
            name.as_str().into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(backend)?;
    Ok((name, consumer))
}

/// Answer control requests for this worker until its connection goes.
pub(crate) async fn spawn_responder(
    inner: Arc<Inner>,
) -> Result<tokio::task::JoinHandle<()>, QueueError> {
    let channel = inner.new_channel().await?;
    let start = async {
        let (queue, requests) = private_queue(&channel).await?;
        channel
            .queue_bind(
                queue.as_str().into(),
                inner.names.control.as_str().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(backend)?;
        // Counted among the responders while this one lives (see [`ask`]).
        let counted = count_me(&channel, &inner.names.responders).await?;
        Ok((requests, counted))
    };
    let (mut requests, counted) = inner
        .within("a start of the control responder", start)
        .await?;
    let wait = inner.broker_wait();
    Ok(tokio::spawn(async move {
        let _counted = counted;
        while let Some(Ok(delivery)) = requests.next().await {
            let Some(reply_to) = delivery.properties.reply_to().clone() else {
                continue;
            };
            let reply = match serde_json::from_slice::<Request>(&delivery.data) {
                Ok(Request::Inspect) => {
                    let Some(me) = inner.me.lock().unwrap_or_else(|p| p.into_inner()).clone()
                    else {
                        continue;
                    };
                    Reply::Status {
                        status: WorkerStatus {
                            name: me.name,
                            pid: me.pid,
                            host: me.host,
                            started: rfc3339(me.started_ms),
                            concurrency: me.concurrency,
                            active: inner.active(),
                            profiles: me.profiles,
                            unable: me.unable,
                            tags: me.tags,
                        },
                    }
                }
                Ok(Request::Cancel { ids }) => {
                    // Remembered at once: a waiting chunk of a cancelled tape must not start
                    // before the next read of the broker's list.
                    inner.add_tombstones(&ids, inner.now());
                    Reply::Cancelled {
                        ids: inner.cancel_held(&ids),
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "ignored a control message that is not ours");
                    continue;
                }
            };
            let Ok(body) = serde_json::to_vec(&reply) else {
                continue;
            };
            let reply = channel.basic_publish(
                "".into(),
                reply_to,
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default(),
            );
            // An answer the broker does not take in time is lost, as a late one would be; the
            // next question is answered all the same.
            let _ = answered("an answer to a control request", wait, reply).await;
        }
    }))
}

/// Consume the responders' queue on `channel` (declared when missing; gone with its last
/// consumer): one more live responder in its consumer count.
async fn count_me(channel: &Channel, name: &str) -> Result<lapin::Consumer, QueueError> {
    channel
        .queue_declare(
            name.into(),
            QueueDeclareOptions {
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(backend)?;
    channel
        .basic_consume(
            name.into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(backend)
}

/// How many responders are live: the consumers of their queue (none when it is gone).
async fn live_responders(inner: &Inner) -> Result<usize, QueueError> {
    inner.consumers(&inner.names.responders).await
}

/// Broadcast `request` and collect the replies: until every live responder has answered, or
/// the inspect timeout (for one that does not).
async fn ask(inner: &Inner, request: &Request) -> Result<Vec<Reply>, QueueError> {
    let expected = live_responders(inner).await?;
    if expected == 0 {
        return Ok(Vec::new());
    }
    let channel = inner.new_channel().await?;
    let body = serde_json::to_vec(request).map_err(backend)?;
    let asked = async {
        let (queue, replies) = private_queue(&channel).await?;
        channel
            .basic_publish(
                inner.names.control.as_str().into(),
                "".into(),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default().with_reply_to(queue.as_str().into()),
            )
            .await
            .map_err(backend)?;
        Ok(replies)
    };
    let mut replies = inner.within("a question to the workers", asked).await?;
    let deadline = tokio::time::Instant::now() + inner.settings.inspect_timeout;
    let mut collected = Vec::new();
    let mut answered = 0;
    while answered < expected {
        let Ok(Some(Ok(delivery))) = tokio::time::timeout_at(deadline, replies.next()).await else {
            break;
        };
        answered += 1;
        if let Ok(reply) = serde_json::from_slice::<Reply>(&delivery.data) {
            collected.push(reply);
        }
    }
    crate::close_channel(&channel, "asked").await;
    Ok(collected)
}

pub(crate) async fn inspect(inner: &Inner) -> Result<Vec<WorkerStatus>, QueueError> {
    let mut workers: Vec<WorkerStatus> = ask(inner, &Request::Inspect)
        .await?
        .into_iter()
        .filter_map(|r| match r {
            Reply::Status { status } => Some(status),
            Reply::Cancelled { .. } => None,
        })
        .collect();
    workers.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(workers)
}

pub(crate) async fn cancel_running(inner: &Inner, ids: &[JobId]) -> Result<Vec<JobId>, QueueError> {
    Ok(ask(inner, &Request::Cancel { ids: ids.to_vec() })
        .await?
        .into_iter()
        .flat_map(|r| match r {
            Reply::Cancelled { ids } => ids,
            Reply::Status { .. } => Vec::new(),
        })
        .collect())
}

/// How long an answer about the live workers is served as it is.
const WORKERS_FRESH: Duration = Duration::from_millis(1500);
/// How long an older answer is served while a fresh one is asked for.
const WORKERS_STALE: Duration = Duration::from_secs(10);

impl Inner {
    /// Answer control requests while this process is a registered worker: the responder ends
    /// with its connection, and is started again on the next (a cancel broadcast meanwhile is
    /// missed; found by the model run: a job cancelled while held after a reconnect finished as
    /// if nothing happened).
    pub(crate) async fn ensure_responder(self: &Arc<Self>) -> Result<(), QueueError> {
        if self.me.lock().unwrap_or_else(|p| p.into_inner()).is_none() {
            return Ok(());
        }
        self.channel().await?;
        let epoch = self.epoch.load(Ordering::SeqCst);
        {
            let mut responder = self.responder.lock().unwrap_or_else(|p| p.into_inner());
            if responder
                .as_ref()
                .is_some_and(|(on, h)| *on == epoch && !h.is_finished())
            {
                return Ok(());
            }
            if let Some((_, old)) = responder.take() {
                old.abort();
            }
            // Held while the new one starts, so that two callers never start two.
            *responder = Some((epoch, tokio::spawn(std::future::pending())));
        }
        let started = spawn_responder(self.clone()).await;
        let mut responder = self.responder.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, placeholder)) = responder.take() {
            placeholder.abort();
        }
        *responder = Some((epoch, started?));
        Ok(())
    }

    /// The live workers. The first question in a process asks every worker; later ones are
    /// answered from the last answer while it is under [`WORKERS_FRESH`] old, and from an
    /// older one (up to [`WORKERS_STALE`]) while a fresh one is asked for in the background.
    pub(crate) async fn workers(self: &Arc<Self>) -> Result<Vec<WorkerStatus>, QueueError> {
        let seen = self
            .workers_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some((at, list)) = seen {
            let age = at.elapsed();
            if age < WORKERS_FRESH {
                return Ok(list);
            }
            if age < WORKERS_STALE {
                if !self.workers_asking.swap(true, Ordering::SeqCst) {
                    let me = self.clone();
                    tokio::spawn(async move {
                        let _ = me.ask_workers().await;
                        me.workers_asking.store(false, Ordering::SeqCst);
                    });
                }
                return Ok(list);
            }
        }
        self.ask_workers().await
    }

    /// This process's own worker changed: the last answer about the workers is out of date.
    pub(crate) fn forget_workers(&self) {
        self.workers_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
    }

    async fn ask_workers(&self) -> Result<Vec<WorkerStatus>, QueueError> {
        let list = inspect(self).await?;
        *self.workers_seen.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((tokio::time::Instant::now(), list.clone()));
        Ok(list)
    }
}
