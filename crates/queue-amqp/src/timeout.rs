//! RabbitMQ's `consumer_timeout`: a delivery left unacknowledged longer than it (30 minutes by
//! default, broker-wide; per consumer with `x-consumer-timeout` on RabbitMQ 3.12 and later)
//! makes the broker close the consumer's channel and take back every delivery on it. A long
//! encode outlives it; the next attempt would outlive it again.
//!
//! So the worker listens for the broker's close of its channels: when the reason is an
//! acknowledgement timeout, it says so in its log, and each job held longer than the limit is
//! settled as a *failed* attempt in those words (retried after its backoff, failed after
//! `max_attempts`, as any failure), not as a lost one. The broker's own copy, redelivered, is
//! then dropped by whoever receives it (the records show its attempt settled). The other jobs
//! on the channel were taken back through no fault of theirs: they are lost attempts.

use crate::Inner;
use futures_lite::StreamExt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use videofarm_core::{Failure, FailureKind};

/// The last acknowledgement timeout the broker gave this process: the connection (epoch) it
/// came on, and the broker's words.
pub(crate) type AckTimeouts = Arc<Mutex<Option<(u64, String)>>>;

/// True when the broker's words are those of an acknowledgement timeout.
fn is_ack_timeout(error: &str) -> bool {
    error.contains("acknowledgement") && error.contains("timed out")
}

/// The limit the broker applied, from its words ("... Timeout value used: 1800000 ms ...").
fn limit_ms(error: &str) -> Option<i64> {
    let after = error.split("Timeout value used:").nth(1)?;
    after.split_whitespace().next()?.parse().ok()
}

/// Plain words for a channel error, above all RabbitMQ's `consumer_timeout`.
pub(crate) fn explain_channel_error(error: &str) -> String {
    if is_ack_timeout(error) {
        format!(
            "RabbitMQ closed this worker's channel because a job stayed unacknowledged longer than the broker's \
             consumer_timeout{}, which a long encode exceeds; the job's attempt is counted as failed. Raise it above \
             your longest encode: `consumer_timeout = 86400000` in rabbitmq.conf (24 h), then restart RabbitMQ (on \
             RabbitMQ 3.12 and later, `amqp_consumer_timeout_secs` sets it for videofarm's consumers alone). \
             Broker said: {error}",
            limit_ms(error).map_or_else(String::new, |ms| format!(" ({})", seconds(ms)))
        )
    } else {
        format!("the connection to RabbitMQ failed: {error}")
    }
}

fn seconds(ms: i64) -> String {
    if ms % 1000 == 0 {
        format!("{} s", ms / 1000)
    } else {
        format!("{:.1} s", ms as f64 / 1000.0)
    }
}

/// Listen to connection `epoch`'s events until it ends, keeping the last acknowledgement
/// timeout in `slot`.
pub(crate) fn watch(connection: &lapin::Connection, epoch: u64, slot: AckTimeouts) {
    let mut events = connection.events_listener();
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            if let lapin::Event::Error(e) = event {
                let text = e.to_string();
                if is_ack_timeout(&text) {
                    tracing::error!("{}", explain_channel_error(&text));
                    *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some((epoch, text));
                }
            }
        }
    });
}

impl Inner {
    /// After the broker closed the consumer's channel for an acknowledgement timeout: settle
    /// each delivery held longer than the limit as a failed attempt (see the module
    /// documentation). Best effort: what cannot be settled is lost with the connection.
    pub(crate) async fn settle_ack_timeouts(&self) {
        let epoch = self.epoch.load(Ordering::SeqCst);
        let taken = {
            let mut slot = self.ack_timeouts.lock().unwrap_or_else(|p| p.into_inner());
            match slot.take() {
                Some((on, text)) if on == epoch => text,
                other => {
                    *slot = other;
                    return;
                }
            }
        };
        let now = self.now();
        let expired: Vec<crate::Held> = {
            let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
            let mine: Vec<(u64, i64)> = held
                .iter()
                .filter(|(_, h)| h.epoch == epoch && h.cancelled.is_none())
                .map(|(k, h)| (*k, h.started_ms))
                .collect();
            // The broker's limit when it says it; else the longest held is the one.
            let keys: Vec<u64> = match limit_ms(&taken) {
                Some(limit) => mine
                    .iter()
                    .filter(|(_, started)| now - started >= limit - 1000)
                    .map(|(k, _)| *k)
                    .collect(),
                None => mine
                    .iter()
                    .min_by_key(|(_, started)| *started)
                    .map(|(k, _)| *k)
                    .into_iter()
                    .collect(),
            };
            keys.iter().filter_map(|k| held.remove(k)).collect()
        };
        for held in expired {
            let held_for = (now - held.started_ms).max(0);
            let failure = Failure {
                kind: FailureKind::Retryable,
                reason: format!(
                    "{}: the encode outlived RabbitMQ's consumer_timeout{}: the broker took the job back after \
                     {} without an acknowledgement. Raise consumer_timeout above your longest encode (README: \
                     RabbitMQ)",
                    held.envelope.spec.input.display(),
                    limit_ms(&taken).map_or_else(String::new, |ms| format!(" ({})", seconds(ms))),
                    seconds(held_for)
                ),
                stderr_tail: String::new(),
            };
            tracing::error!(job = %held.envelope.id, held_for_s = held_for / 1000, "{}", failure.reason);
            let settled = async {
                let fact = self.settle_failure(&held, &failure).await?;
                self.record(fact).await
            };
            if let Err(e) = settled.await {
                tracing::warn!(job = %held.envelope.id, error = %e, "could not settle a job the broker took back; it counts as lost");
            }
        }
    }
}
