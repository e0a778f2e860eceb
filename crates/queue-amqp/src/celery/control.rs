//! Celery's remote control and events, answered and sent as a Celery worker does (the formats
//! are those of Celery 5 and kombu): `celery inspect ping/active/stats/registered` on the
//! fanout exchange `celery.pidbox`, replies on `reply.celery.pidbox` with the request's ticket
//! in the headers; events on the topic exchange `celeryev` (`worker.heartbeat` every 2 s,
//! `worker.online`/`worker.offline`, task events as `task.multi` lists).

use super::CelerySettings;
use crate::*;
use serde_json::{json, Value};

const PIDBOX: &str = "celery.pidbox";
const EVENTS: &str = "celeryev";
/// Seconds between heartbeats (Celery's default `freq`).
const HEARTBEAT: f64 = 2.0;
/// A control request read at most (a real one is well under 1 KiB).
const MAX_REQUEST: usize = 64 * 1024;

fn now_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn json_props() -> BasicProperties {
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_content_encoding("utf-8".into())
        .with_delivery_mode(1)
}

impl Inner {
    fn celery_settings(&self) -> Option<&CelerySettings> {
        self.settings.celery.as_ref()
    }

    fn tick(&self) -> u64 {
        self.celery_clock.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Send one Celery event (best effort, as Celery does: events are for watching).
    pub(crate) async fn celery_event(&self, kind: &str, mut fields: Value) {
        let Some(celery) = self.celery_settings().filter(|c| c.events) else {
            return;
        };
        if let Value::Object(map) = &mut fields {
            map.insert("hostname".into(), json!(celery.hostname));
            map.insert("utcoffset".into(), json!(0.0));
            map.insert("pid".into(), json!(std::process::id()));
            map.insert("clock".into(), json!(self.tick()));
            map.insert("timestamp".into(), json!(now_s()));
            map.insert("type".into(), json!(kind));
        }
        // Task events go as a list under `task.multi`, as Celery groups them.
        let (key, body) = if kind.starts_with("task-") {
            ("task.multi".to_owned(), json!([fields]))
        } else {
            (kind.replace('-', "."), fields)
        };
        let Ok(body) = serde_json::to_vec(&body) else {
            return;
        };
        let Ok(channel) = self.channel().await else {
            return;
        };
        let mut headers = FieldTable::default();
        headers.insert(
            "hostname".into(),
            AMQPValue::LongString(celery.hostname.as_str().into()),
        );
        let _ = channel
            .basic_publish(
                EVENTS.into(),
                key.as_str().into(),
                BasicPublishOptions::default(),
                &body,
                json_props().with_headers(headers),
            )
            .await;
    }

    /// A worker event (`worker-online`, `worker-heartbeat`, `worker-offline`).
    pub(crate) async fn celery_worker_event(&self, kind: &str) {
        let active = self.held.lock().unwrap_or_else(|p| p.into_inner()).len();
        let fields = json!({
            "freq": HEARTBEAT,
            "active": active,
            "processed": self.celery_processed.load(Ordering::SeqCst),
            "loadavg": loadavg(),
            "sw_ident": "videofarm",
            "sw_ver": env!("CARGO_PKG_VERSION"),
            "sw_sys": std::env::consts::OS,
        });
        self.celery_event(kind, fields).await;
    }

    /// What this worker runs, as `inspect active` lists it: Celery tasks as they came, the
    /// farm's own jobs as `videofarm.PROFILE`.
    fn celery_active(&self, hostname: &str) -> Vec<Value> {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let mut active: Vec<(i64, Value)> = held
            .values()
            .map(|h| {
                let pid = std::process::id();
                match &h.celery {
                    Some(c) => (
                        c.started_ms,
                        json!({
                            "id": c.task.id,
                            "name": c.task.name,
                            "args": c.task.args,
                            "kwargs": c.task.kwargs,
                            "type": c.task.name,
                            "hostname": hostname,
                            "time_start": c.started_ms as f64 / 1000.0,
                            // Acknowledged only once its output is in place.
                            "acknowledged": false,
                            "delivery_info": {
                                "exchange": c.exchange,
                                "routing_key": c.routing_key,
                                "priority": c.properties.priority().unwrap_or(0),
                                "redelivered": c.redelivered,
                            },
                            "worker_pid": pid,
                        }),
                    ),
                    None => {
                        let spec = &h.envelope.spec;
                        let name = format!("videofarm.{}", spec.profile);
                        (
                            h.started_ms,
                            json!({
                                "id": h.envelope.id.0,
                                "name": name,
                                "args": [spec.input.to_string_lossy(), spec.output.to_string_lossy()],
                                "kwargs": {},
                                "type": name,
                                "hostname": hostname,
                                "time_start": h.started_ms as f64 / 1000.0,
                                "acknowledged": false,
                                "delivery_info": {"exchange": self.names.route, "routing_key": spec.profile, "priority": 0, "redelivered": false},
                                "worker_pid": pid,
                            }),
                        )
                    }
                }
            })
            .collect();
        active.sort_by_key(|(started, _)| *started);
        active.into_iter().map(|(_, v)| v).collect()
    }

    fn celery_reply(&self, celery: &CelerySettings, method: &str) -> Value {
        match method {
            "ping" => json!({"ok": "pong"}),
            "active" => json!(self.celery_active(&celery.hostname)),
            "registered" => json!(celery.tasks.keys().collect::<Vec<_>>()),
            "clock" => json!({"clock": self.tick()}),
            "stats" => {
                let me = self.me.lock().unwrap_or_else(|p| p.into_inner()).clone();
                let concurrency = me.as_ref().map_or(1, |m| m.concurrency);
                let uptime = me
                    .as_ref()
                    .map_or(0, |m| (self.now() - m.started_ms).max(0) / 1000);
                let total: serde_json::Map<String, Value> = celery
                    .tasks
                    .keys()
                    .map(|t| {
                        (
                            t.clone(),
                            json!(self.celery_processed.load(Ordering::SeqCst)),
                        )
                    })
                    .collect();
                json!({
                    "total": total,
                    "pid": std::process::id(),
                    "clock": self.tick().to_string(),
                    "uptime": uptime,
                    "pool": {
                        "implementation": "videofarm",
                        "max-concurrency": concurrency,
                        "processes": [std::process::id()],
                    },
                    "broker": {"transport": "amqp"},
                    "prefetch_count": concurrency,
                    "rusage": {},
                })
            }
            other => json!({"error": format!("No such command: {other}")}),
        }
    }

    /// Answer one pidbox request, if it is for this worker.
    async fn answer(&self, channel: &Channel, celery: &CelerySettings, data: &[u8]) {
        if data.len() > MAX_REQUEST {
            return;
        }
        let Ok(request) = serde_json::from_slice::<Value>(data) else {
            tracing::debug!("ignored a Celery control message that is not JSON");
            return;
        };
        if let Some(destination) = request.get("destination").and_then(Value::as_array) {
            if !destination
                .iter()
                .any(|d| d.as_str() == Some(&celery.hostname))
            {
                return;
            }
        }
        let method = request.get("method").and_then(Value::as_str).unwrap_or("");
        let ticket = request.get("ticket").and_then(Value::as_str);
        let reply_to = request.get("reply_to");
        let exchange = reply_to
            .and_then(|r| r.get("exchange"))
            .and_then(Value::as_str);
        let key = reply_to
            .and_then(|r| r.get("routing_key"))
            .and_then(Value::as_str);
        let (Some(ticket), Some(exchange), Some(key)) = (ticket, exchange, key) else {
            // A broadcast that wants no answer; `celery events` and Flower cast `heartbeat`
            // when they start, and a worker answers it with a heartbeat at once.
            if method == "heartbeat" {
                self.celery_worker_event("worker-heartbeat").await;
            }
            return;
        };
        if ticket.len() > 255 || exchange.len() > 255 || key.len() > 255 {
            return;
        }
        let reply = json!({ (celery.hostname.clone()): self.celery_reply(celery, method) });
        let Ok(body) = serde_json::to_vec(&reply) else {
            return;
        };
        let mut headers = FieldTable::default();
        headers.insert("ticket".into(), AMQPValue::LongString(ticket.into()));
        headers.insert("clock".into(), AMQPValue::LongLongInt(self.tick() as i64));
        // Declared as the asking client declares it, in case the reply outruns it.
        let _ = crate::names::exchange(channel, exchange, ExchangeKind::Direct, false).await;
        let _ = channel
            .basic_publish(
                exchange.into(),
                key.into(),
                BasicPublishOptions::default(),
                &body,
                json_props().with_headers(headers),
            )
            .await;
    }
}

/// Answer Celery's remote control and send heartbeats, until the connection ends.
pub(crate) async fn spawn(inner: Arc<Inner>) -> Result<tokio::task::JoinHandle<()>, QueueError> {
    let Some(celery) = inner.settings.celery.clone() else {
        return Ok(tokio::spawn(async {}));
    };
    let channel = inner.new_channel().await?;
    crate::names::exchange(&channel, PIDBOX, ExchangeKind::Fanout, false).await?;
    crate::names::exchange(&channel, EVENTS, ExchangeKind::Topic, true).await?;
    // As a Celery worker names and makes its mailbox.
    let mailbox = format!("{}.celery.pidbox", celery.hostname);
    let mut args = FieldTable::default();
    args.insert("x-expires".into(), AMQPValue::LongInt(10_000));
    args.insert("x-message-ttl".into(), AMQPValue::LongInt(300_000));
    channel
        .queue_declare(
            mailbox.as_str().into(),
            QueueDeclareOptions {
                auto_delete: true,
                exclusive: true,
                ..Default::default()
            },
            args,
        )
        .await
        .map_err(backend)?;
    crate::names::bind(&channel, &mailbox, PIDBOX, "").await?;
    let mut requests = channel
        .basic_consume(
            mailbox.as_str().into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(backend)?;
    Ok(tokio::spawn(async move {
        inner.celery_worker_event("worker-online").await;
        let mut heartbeat = tokio::time::interval(Duration::from_secs_f64(HEARTBEAT));
        heartbeat.tick().await;
        loop {
            tokio::select! {
                request = requests.next() => match request {
                    Some(Ok(delivery)) => inner.answer(&channel, &celery, &delivery.data).await,
                    _ => return,
                },
                _ = heartbeat.tick() => inner.celery_worker_event("worker-heartbeat").await,
            }
        }
    }))
}

fn loadavg() -> Vec<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .filter_map(|n| n.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}
