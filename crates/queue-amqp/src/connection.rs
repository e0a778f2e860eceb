//! The connection to the broker: made (and the farm's objects declared) when first needed,
//! made again after a loss, and every wait on it bounded, so a broker that stops answering
//! costs a reconnect, never a process that waits for ever.

use super::*;

impl Inner {
    pub(crate) fn url(&self) -> String {
        // A dead worker's jobs come back when its connection's heartbeat fails: tie that to
        // the lease time unless the URL sets its own.
        let url = &self.settings.url;
        if url.contains("heartbeat=") {
            return url.clone();
        }
        let secs = (self.queue.lease.as_secs() / 2).max(1);
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}heartbeat={secs}")
    }

    /// How long a connect or a publish waits for the broker before it is given up: twice the
    /// lease (a write later than that is of no use to its lease), at least `BROKER_WAIT_MIN`.
    /// lapin can leave a publish waiting for ever on a connection the broker ended (lapin
    /// issue 409): a write of the records then held their lock, and every later write and read
    /// of the process waited behind it (seen as a `run` that never finished after an outage).
    pub(crate) fn broker_wait(&self) -> Duration {
        (self.queue.lease * 2).max(BROKER_WAIT_MIN)
    }

    /// `what` within [`Inner::broker_wait`]; when the broker does not answer, the connection
    /// is closed, so the next use connects again (its leases are void, as after any loss).
    pub(crate) async fn within<T>(
        &self,
        what: &str,
        step: impl std::future::Future<Output = Result<T, QueueError>>,
    ) -> Result<T, QueueError> {
        match answered(what, self.broker_wait(), step).await {
            Ok(done) => done,
            Err(silent) => {
                // Unless another task holds the connection (it is connecting again already).
                if let Ok(mut live) = self.live.try_lock() {
                    forget(&mut live).await;
                }
                Err(silent)
            }
        }
    }

    /// The publish channel, connecting (and declaring the topology) if needed.
    pub(crate) async fn channel(&self) -> Result<Channel, QueueError> {
        let mut live = self.live.lock().await;
        if let Some(l) = live.as_ref() {
            if l.connection.status().connected() && l.publish.status().connected() {
                return Ok(l.publish.clone());
            }
        }
        if let Some(old) = live.take() {
            // Close it for real, so the broker hands its deliveries to other workers now.
            close_within(&old.connection).await;
        }
        // A farm's first processes declare its records stream at the same moment; the broker
        // answers the later ones before the stream can take writes, and the first write then
        // closes the whole connection (RabbitMQ 3.10: INTERNAL_ERROR). Nothing else is on a
        // new connection yet, so a failed first write costs only a reconnect.
        let ready_by = tokio::time::Instant::now() + STREAM_READY_WAIT;
        loop {
            self.next_epoch();
            self.routes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
            let wait = self.broker_wait();
            let (connection, publish) =
                answered("a connect", wait, self.connect_and_declare()).await??;
            match answered("the first write", wait, self.first_record(&publish))
                .await
                .and_then(|written| written)
            {
                Ok(()) => {
                    *live = Some(Live {
                        connection,
                        publish: publish.clone(),
                    });
                    return Ok(publish);
                }
                Err(e) if tokio::time::Instant::now() < ready_by => {
                    tracing::debug!("the records stream is not ready yet ({e}); connecting again");
                    close_within(&connection).await;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => {
                    close_within(&connection).await;
                    return Err(backend(format!(
                        "the records stream {} takes no writes: {e}",
                        self.names.records
                    )));
                }
            }
        }
    }

    /// A new connection, its confirmed publish channel, and the farm's objects declared on it.
    pub(crate) async fn connect_and_declare(&self) -> Result<(Connection, Channel), QueueError> {
        let connection = Connection::connect(
            &self.url(),
            ConnectionProperties::default()
                .with_connection_name(format!("videofarm-{}", std::process::id()).into()),
        )
        .await
        .map_err(|e| {
            backend(format!(
                "cannot connect ({e}); is the broker running and the URL right?"
            ))
        })?;
        timeout::watch(
            &connection,
            self.epoch.load(Ordering::SeqCst),
            self.ack_timeouts.clone(),
        );
        let publish = connection.create_channel().await.map_err(backend)?;
        publish
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(backend)?;
        self.declare(&publish).await?;
        Ok((connection, publish))
    }

    pub(crate) async fn new_channel(&self) -> Result<Channel, QueueError> {
        self.channel().await?;
        let mut live = self.live.lock().await;
        let l = live.as_ref().ok_or_else(|| backend("connection lost"))?;
        match answered(
            "a new channel",
            self.broker_wait(),
            l.connection.create_channel(),
        )
        .await
        {
            Ok(opened) => opened.map_err(backend),
            // As in `within`, under the lock this holds.
            Err(silent) => {
                forget(&mut live).await;
                Err(silent)
            }
        }
    }

    /// Forget the connection: every lease taken on it is void from now on.
    pub(crate) async fn invalidate(&self) {
        let old = self.live.lock().await.take();
        self.consume_channel
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        self.consuming.lock().await.take();
        if let Some(old) = old {
            close_within(&old.connection).await;
        }
        self.next_epoch();
    }

    /// A new connection: deliveries of the old one are void (the broker hands them out again),
    /// so they are no longer this worker's, and `inspect` must not list them as running.
    pub(crate) fn next_epoch(&self) {
        let epoch = self.epoch.fetch_add(1, Ordering::SeqCst) + 1;
        self.own_connection_ended();
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, h| h.epoch == epoch);
    }
}

/// `step`'s output, or an error saying the broker did not answer `what` within `wait` (see
/// [`Inner::broker_wait`]), said where it happens.
pub(crate) async fn answered<T>(
    what: &str,
    wait: Duration,
    step: impl std::future::Future<Output = T>,
) -> Result<T, QueueError> {
    tokio::time::timeout(wait, step).await.map_err(|_| {
        let why = format!(
            "the broker did not answer {what} within {} s; connecting again",
            wait.as_secs()
        );
        tracing::warn!("{why}");
        backend(why)
    })
}

/// Close the publish connection (if any) so that the next use connects again.
async fn forget(live: &mut Option<Live>) {
    if let Some(old) = live.take() {
        close_within(&old.connection).await;
    }
}

/// How long a close waits for the broker to agree.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Close a connection we are leaving, but never wait long for the broker to agree: on a
/// connection that died without a word (a network cut) the close handshake never ends.
pub(crate) async fn close_within(connection: &Connection) {
    let closing = connection.close(320, "videofarm: reconnecting".into());
    if tokio::time::timeout(CLOSE_WAIT, closing).await.is_err() {
        tracing::debug!("the old connection did not close in time; leaving it");
    }
}

/// Close a channel we are done with, as [`close_within`] closes a connection.
pub(crate) async fn close_channel(channel: &Channel, why: &str) {
    if tokio::time::timeout(CLOSE_WAIT, channel.close(200, why.into()))
        .await
        .is_err()
    {
        tracing::debug!("a channel did not close in time; leaving it");
    }
}
