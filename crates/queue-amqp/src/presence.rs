//! Which worker connections are alive, and the attempts of those that are gone.
//!
//! A lease on RabbitMQ is a delivery, and it lasts as long as the connection it came on: when
//! that connection ends (the worker killed, stopped, cut off the network, or its channel closed
//! by the broker's `consumer_timeout`), the broker puts the message back. The records would learn
//! of the lost attempt only when some worker receives the message again, which with every
//! worker busy can take hours; meanwhile the job would show running on a worker that is gone.
//!
//! So each connection a worker consumes on holds a *session*: a queue named after the process
//! and the connection, consumed on the channel the jobs come on and auto-deleted by the broker
//! the moment that consumer is gone (the channel or the connection ended, and with it every
//! delivery on it). Every attempt records its session (`Fact::Started`), and any process that
//! reads the records (a worker's clean-up sweep, `serve`, `status`, `jobs`) asks the broker, at
//! most once per half lease and on a connection of its own, whether the sessions of the running
//! attempts still exist; each that does not is recorded as [`Fact::Gone`], which shows its
//! attempts lost. A process knows without asking that the sessions of its own earlier
//! connections are gone.

use crate::connection::answered;
use crate::records::{Fact, Holder};
use crate::{backend, Inner};
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::Channel;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use videofarm_core::QueueError;

/// How many sessions one look asks about at most (the rest wait for the next look).
const MOST_ASKED: usize = 256;

/// When this process last looked for lost sessions.
#[derive(Default)]
pub(crate) struct Reaper {
    last: Mutex<Option<Instant>>,
    /// This process's own connection ended since it last looked: look at once.
    own_ended: AtomicBool,
}

impl Inner {
    /// How many consumers `queue` has, as the broker counts them (none when it does not
    /// exist), asked on a channel of its own: a queue that is not there closes the channel.
    pub(crate) async fn consumers(&self, queue: &str) -> Result<usize, QueueError> {
        let channel = self.new_channel().await?;
        let counted = self
            .within("a count of a queue's consumers", async {
                Ok(channel
                    .queue_declare(
                        queue.into(),
                        QueueDeclareOptions {
                            passive: true,
                            ..Default::default()
                        },
                        FieldTable::default(),
                    )
                    .await)
            })
            .await?;
        match counted {
            Ok(declared) => {
                crate::close_channel(&channel, "counted").await;
                Ok(declared.consumer_count() as usize)
            }
            // Not found (the broker closed the channel): nobody consumes it.
            Err(e) if e.is_amqp_soft_error() => Ok(0),
            Err(e) => Err(backend(e)),
        }
    }

    /// The session of this process's connection number `epoch`.
    pub(crate) fn session(&self, epoch: u64) -> String {
        format!("{}{epoch}", self.own_sessions())
    }

    /// What every session name of this process starts with.
    fn own_sessions(&self) -> String {
        format!("{}.{:016x}.", self.names.sessions, self.follower.origin)
    }

    /// What a delivery taken on connection `epoch` with `token` is called in the records.
    pub(crate) fn holder(&self, epoch: u64, token: u64) -> Holder {
        Holder {
            session: self.session(epoch),
            token,
        }
    }

    /// Hold the session of connection `epoch` on `channel`, the channel the worker consumes
    /// jobs on: a queue deleted by the broker once its one consumer, on that channel, is gone
    /// (auto-delete), so it lives exactly as long as the channel its deliveries came on. Not
    /// exclusive: asking whether it exists is then no error for the broker to log.
    pub(crate) async fn hold_session(
        &self,
        channel: &Channel,
        epoch: u64,
    ) -> Result<lapin::Consumer, QueueError> {
        let name = self.session(epoch);
        let held = async {
            channel
                .queue_declare(
                    name.as_str().into(),
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
                    name.as_str().into(),
                    "".into(),
                    lapin::options::BasicConsumeOptions {
                        no_ack: true,
                        exclusive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
                .map_err(backend)
        };
        self.within("a hold of the session", held).await
    }

    /// This process's connection ended: the attempts recorded on it are lost.
    pub(crate) fn own_connection_ended(&self) {
        self.reaper.own_ended.store(true, Ordering::SeqCst);
    }

    /// Record as [`Fact::Gone`] every session of a running attempt whose connection has ended,
    /// when it is time to look (see the module documentation). True when something was
    /// recorded (the caller reads the records again to see it).
    pub(crate) async fn record_lost_sessions(self: &Arc<Self>) -> Result<bool, QueueError> {
        let period = (self.queue.lease / 2).clamp(Duration::from_secs(1), Duration::from_secs(15));
        let own_ended = self.reaper.own_ended.swap(false, Ordering::SeqCst);
        {
            let mut last = self.reaper.last.lock().unwrap_or_else(|p| p.into_inner());
            if !own_ended && last.is_some_and(|at| at.elapsed() < period) {
                return Ok(false);
            }
            *last = Some(Instant::now());
        }
        let store = self.follower.store.clone();
        let running = tokio::task::spawn_blocking(move || store.running_sessions(MOST_ASKED))
            .await
            .map_err(backend)?
            .map_err(|e| backend(format!("the records file: {e}")))?;
        let mine = self.own_sessions();
        let current = self.session(self.epoch.load(Ordering::SeqCst));
        let (mut gone, others): (Vec<String>, Vec<String>) = running
            .into_iter()
            .filter(|s| s != &current)
            .partition(|s| s.starts_with(&mine));
        if !others.is_empty() {
            match self.sessions_gone(&others).await {
                Ok(found) => gone.extend(found),
                Err(e) => {
                    tracing::debug!(error = %e, "could not tell which worker connections live")
                }
            }
        }
        if gone.is_empty() {
            return Ok(false);
        }
        tracing::info!(sessions = ?gone, "worker connections gone: their running attempts are lost");
        self.record_all(
            gone.into_iter()
                .map(|session| Fact::Gone { session })
                .collect(),
        )
        .await?;
        Ok(true)
    }

    /// Which of `sessions` no longer exist, asked on a connection of its own (one at a time:
    /// a missing queue closes the channel that asked, and a connection carrying leases must
    /// never see a channel error).
    async fn sessions_gone(&self, sessions: &[String]) -> Result<Vec<String>, QueueError> {
        let wait = self.broker_wait();
        let url = self.url();
        let connect = lapin::Connection::connect(&url, lapin::ConnectionProperties::default());
        let connection = answered("a connect to look at sessions", wait, connect)
            .await?
            .map_err(backend)?;
        let gone = answered("a look at sessions", wait, gone_of(&connection, sessions)).await;
        crate::close_within(&connection).await;
        gone?
    }
}

/// Which of `sessions` no longer exist, asked on `connection`.
async fn gone_of(
    connection: &lapin::Connection,
    sessions: &[String],
) -> Result<Vec<String>, QueueError> {
    let mut gone = Vec::new();
    let mut channel = connection.create_channel().await.map_err(backend)?;
    for session in sessions {
        let answer = channel
            .queue_declare(
                session.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await;
        match answer {
            Ok(_) => {}
            Err(e) => {
                if matches!(e.kind(), lapin::ErrorKind::ProtocolError(amqp) if amqp.get_id() == 404)
                {
                    gone.push(session.clone());
                }
                // The broker closed the channel that asked: another for the next question.
                channel = connection.create_channel().await.map_err(backend)?;
            }
        }
    }
    Ok(gone)
}
