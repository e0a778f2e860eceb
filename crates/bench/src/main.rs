//! `queue-bench`: what the queue layer costs, per backend, through the same calls a worker
//! makes (enqueue; lease, finish with a no-op handler), next to RabbitMQ's and SQLite's own
//! ceilings for the same pattern, and lease latency against the size of the backlog.
//!
//! ```text
//! cargo run --release -p videofarm-bench -- [--jobs N] [--rounds 3] [--backlogs 10,10000,100000]
//!     [--amqp URL] [--only CASE]
//! ```
//! Cases: sqlite-1, sqlite-2, rabbitmq-1, rabbitmq-2 (the farm's queue layer with 1 or 2
//! consumers), raw-amqp-1/2, raw-prio10-1/2 and raw-prio3-1/2 (the broker's ceiling on a plain
//! queue and on priority queues of ten and of three levels; the farm's job queue has three),
//! raw-sqlite-1/2 (SQLite's own ceiling for a claim and an ack per job), sqlite-latency-N and
//! rabbitmq-latency-N (backlog N).
//!
//! Prints a table and one JSON object on the last line. A measurement, not a test.

use anyhow::{Context, Result};
use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use videofarm_core::{JobSpec, Outcome, QueueSettings, SuccessReport, WorkerInfo};
use videofarm_queue_amqp::{delete_farm_blocking, AmqpQueue, AmqpSettings};
use videofarm_queue_sqlite::SqliteQueue;

struct Args {
    jobs: usize,
    backlogs: Vec<usize>,
    amqp: String,
    /// Run only the cases whose name contains this (e.g. `rabbitmq-1`, `raw-amqp`, `latency`).
    only: Option<String>,
    rounds: usize,
}

impl Args {
    fn wants(&self, case: &str) -> bool {
        self.only.as_deref().is_none_or(|only| case.contains(only))
    }
}

fn args() -> Result<Args> {
    let mut a = Args {
        jobs: 2000,
        backlogs: vec![10, 10_000, 100_000],
        amqp: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
        only: None,
        rounds: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--jobs" => a.jobs = value.parse()?,
            "--backlogs" => {
                a.backlogs = value.split(',').map(str::parse).collect::<Result<_, _>>()?
            }
            "--amqp" => a.amqp = value,
            "--only" => a.only = Some(value),
            "--rounds" => a.rounds = value.parse::<usize>()?.max(1),
            other => anyhow::bail!(
                "unknown flag {other} (use --jobs, --rounds, --backlogs, --amqp, --only)"
            ),
        }
    }
    Ok(a)
}

fn spec(i: usize) -> JobSpec {
    JobSpec {
        input: format!("/bench/in/{i}.mpg").into(),
        output: format!("/bench/out/{i}.mkv").into(),
        profile: "archive".into(),
        key: format!("bench-{i}-{}", std::process::id()),
        overwrite: false,
        priority: 0,
        input_size: 0,
        parent: None,
        split: Default::default(),
        chunk: None,
        require: Vec::new(),
    }
}

fn worker(n: usize) -> WorkerInfo {
    WorkerInfo::new(&format!("bench-{n}"), "bench")
}

/// A backend under test: how to open one more handle (one per consumer, as separate worker
/// processes would have), and how to clean up.
enum Backend {
    Sqlite(tempfile::TempDir),
    Amqp { url: String, prefix: String },
}

impl Backend {
    fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite(_) => "sqlite",
            Backend::Amqp { .. } => "rabbitmq",
        }
    }

    async fn open(&self) -> Result<Arc<dyn videofarm_core::Backend>> {
        let settings = QueueSettings {
            lease: Duration::from_secs(60),
            ..QueueSettings::default()
        };
        Ok(match self {
            Backend::Sqlite(dir) => {
                Arc::new(SqliteQueue::open(&dir.path().join("q.db"), settings)?)
            }
            Backend::Amqp { url, prefix } => {
                let mut s = AmqpSettings::new(url);
                s.prefix = prefix.clone();
                s.queue_expires = Some(Duration::from_secs(3600));
                Arc::new(AmqpQueue::connect(s, settings).await?)
            }
        })
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Backend::Amqp { url, prefix } = self {
            delete_farm_blocking(url, prefix);
        }
    }
}

fn fresh(kind: &str, url: &str, tag: &str) -> Result<Backend> {
    Ok(match kind {
        "sqlite" => Backend::Sqlite(tempfile::tempdir()?),
        _ => Backend::Amqp {
            url: url.into(),
            prefix: format!("vfbench-{}-{tag}", std::process::id()),
        },
    })
}

/// Enqueue `jobs`, then drain them with `consumers` no-op workers. Returns (publish/s, jobs/s).
async fn throughput(backend: &Backend, jobs: usize, consumers: usize) -> Result<(f64, f64)> {
    let producer = backend.open().await?;
    let start = Instant::now();
    for i in 0..jobs {
        producer.enqueue(spec(i), false).await?;
    }
    let publish = jobs as f64 / start.elapsed().as_secs_f64();
    let mut handles = Vec::new();
    for _ in 0..consumers {
        handles.push(backend.open().await?);
    }
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (n, queue) in handles.into_iter().enumerate() {
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let me = worker(n);
            while done.load(std::sync::atomic::Ordering::SeqCst) < jobs {
                if let Some(lease) = queue.lease(&me, Duration::from_millis(200)).await? {
                    queue
                        .finish(&lease, Outcome::Succeeded(SuccessReport::default()))
                        .await?;
                    done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok((publish, jobs as f64 / start.elapsed().as_secs_f64()))
}

/// Median and 99th percentile of lease+finish, in microseconds, with `backlog` jobs waiting.
async fn latency(backend: &Backend, backlog: usize) -> Result<(f64, f64)> {
    let queue = backend.open().await?;
    for i in 0..backlog + 200 {
        queue.enqueue(spec(i), false).await?;
    }
    let me = worker(0);
    let mut samples = Vec::with_capacity(200);
    for _ in 0..200 {
        let t = Instant::now();
        let lease = queue
            .lease(&me, Duration::from_secs(1))
            .await?
            .context("a job is waiting")?;
        queue
            .finish(&lease, Outcome::Succeeded(SuccessReport::default()))
            .await?;
        samples.push(t.elapsed().as_secs_f64() * 1e6);
    }
    samples.sort_by(f64::total_cmp);
    Ok((
        samples[samples.len() / 2],
        samples[samples.len() * 99 / 100],
    ))
}

/// RabbitMQ's own ceiling for the same pattern: persistent publish with a confirm, consume with
/// prefetch 1, ack; one or two consumers; on a plain queue or on a priority queue
/// (`x-max-priority`, as the farm's job queue has).
async fn broker_ceiling(
    url: &str,
    jobs: usize,
    consumers: usize,
    max_priority: Option<u8>,
) -> Result<f64> {
    let conn = lapin::Connection::connect(url, lapin::ConnectionProperties::default()).await?;
    let publish = conn.create_channel().await?;
    publish
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let queue = format!("vfbench-ceiling-{}", std::process::id());
    let mut queue_args = FieldTable::default();
    if let Some(max) = max_priority {
        queue_args.insert("x-max-priority".into(), AMQPValue::ShortShortUInt(max));
    }
    publish
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            queue_args,
        )
        .await?;
    let body = serde_json::to_vec(&spec(0))?;
    for _ in 0..jobs {
        publish
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                &body,
                lapin::BasicProperties::default().with_delivery_mode(2),
            )
            .await?
            .await?;
    }
    let start = Instant::now();
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..consumers {
        let channel = conn.create_channel().await?;
        channel.basic_qos(1, BasicQosOptions::default()).await?;
        let mut consumer = channel
            .basic_consume(
                queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            while done.load(std::sync::atomic::Ordering::SeqCst) < jobs {
                match tokio::time::timeout(Duration::from_millis(200), consumer.next()).await {
                    Ok(Some(Ok(delivery))) => {
                        delivery.ack(BasicAckOptions::default()).await?;
                        done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    Ok(_) => break,
                    Err(_) => {}
                }
            }
            anyhow::Ok(channel)
        }));
    }
    for task in tasks {
        let _ = task.await??;
    }
    let rate = jobs as f64 / start.elapsed().as_secs_f64();
    publish
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await?;
    let _ = conn.close(200, "done".into()).await;
    Ok(rate)
}

/// One throughput case: the farm's queue layer on a backend, or the broker's own ceiling.
enum Case {
    Farm {
        kind: &'static str,
        consumers: usize,
    },
    Ceiling {
        max_priority: Option<u8>,
        consumers: usize,
    },
    /// SQLite's own limit for the same pattern: a minimal claim transaction and an ack per job
    /// on a WAL file with the farm's settings.
    SqliteCeiling { consumers: usize },
}

impl Case {
    fn label(&self) -> String {
        match self {
            Case::Farm { kind, .. } => kind.to_string(),
            Case::Ceiling {
                max_priority: None, ..
            } => "raw-amqp".into(),
            // Named by the number of levels: x-max-priority 2 is three levels (0, 1, 2).
            Case::Ceiling {
                max_priority: Some(max),
                ..
            } => format!("raw-prio{}", max + 1),
            Case::SqliteCeiling { .. } => "raw-sqlite".into(),
        }
    }

    fn consumers(&self) -> usize {
        match self {
            Case::Farm { consumers, .. }
            | Case::Ceiling { consumers, .. }
            | Case::SqliteCeiling { consumers } => *consumers,
        }
    }

    /// What `--only` matches: `rabbitmq-1`, `raw-prio3-2`, ...
    fn name(&self) -> String {
        format!("{}-{}", self.label(), self.consumers())
    }

    /// The key in the JSON report.
    fn key(&self) -> String {
        let consumers = self.consumers();
        match self {
            Case::Farm { kind, .. } => format!("{kind}_{consumers}_consumers"),
            Case::Ceiling {
                max_priority: None, ..
            } => format!("broker_ceiling_{consumers}_consumers"),
            Case::Ceiling {
                max_priority: Some(max),
                ..
            } => format!(
                "broker_ceiling_{}_priorities_{consumers}_consumers",
                max + 1
            ),
            Case::SqliteCeiling { .. } => format!("sqlite_ceiling_{consumers}_consumers"),
        }
    }

    /// (publish/s, lease+ack/s); a ceiling has no publish figure (0).
    async fn run(&self, args: &Args, round: usize) -> Result<(f64, f64)> {
        match *self {
            Case::Farm { kind, consumers } => {
                let backend = fresh(kind, &args.amqp, &format!("t{consumers}r{round}"))?;
                throughput(&backend, args.jobs, consumers).await
            }
            Case::Ceiling {
                max_priority,
                consumers,
            } => Ok((
                0.0,
                broker_ceiling(&args.amqp, args.jobs, consumers, max_priority).await?,
            )),
            Case::SqliteCeiling { consumers } => {
                let jobs = args.jobs;
                Ok((
                    0.0,
                    tokio::task::spawn_blocking(move || sqlite_ceiling(jobs, consumers)).await??,
                ))
            }
        }
    }
}

/// SQLite's ceiling: `jobs` rows, then `consumers` threads (each its own connection, WAL,
/// synchronous=NORMAL, as the farm's file) that claim the next row in one immediate
/// transaction and mark it done in another, with statements prepared once.
fn sqlite_ceiling(jobs: usize, consumers: usize) -> Result<f64> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("ceiling.db");
    let open = |path: &std::path::Path| -> Result<rusqlite::Connection> {
        let conn = rusqlite::Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(30))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        Ok(conn)
    };
    let mut conn = open(&path)?;
    conn.execute_batch(
        "CREATE TABLE jobs (id INTEGER PRIMARY KEY, state TEXT NOT NULL, body BLOB NOT NULL);
         CREATE INDEX jobs_state ON jobs (state, id);",
    )?;
    let body = serde_json::to_vec(&spec(0))?;
    let tx = conn.transaction()?;
    for _ in 0..jobs {
        tx.execute(
            "INSERT INTO jobs (state, body) VALUES ('queued', ?1)",
            [&body],
        )?;
    }
    tx.commit()?;
    let start = Instant::now();
    std::thread::scope(|scope| -> Result<()> {
        let workers: Vec<_> = (0..consumers)
            .map(|_| {
                scope.spawn(|| -> Result<()> {
                    let mut conn = open(&path)?;
                    loop {
                        let tx = conn
                            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                        let claimed: Option<(i64, Vec<u8>)> = {
                            let mut stmt = tx.prepare_cached(
                                "UPDATE jobs SET state = 'running' WHERE id =
                                   (SELECT id FROM jobs WHERE state = 'queued' ORDER BY id LIMIT 1)
                                 RETURNING id, body",
                            )?;
                            rusqlite::OptionalExtension::optional(
                                stmt.query_row([], |r| Ok((r.get(0)?, r.get(1)?))),
                            )?
                        };
                        tx.commit()?;
                        let Some((id, _body)) = claimed else {
                            return Ok(());
                        };
                        conn.prepare_cached("UPDATE jobs SET state = 'done' WHERE id = ?1")?
                            .execute([id])?;
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().expect("a ceiling thread panicked")?;
        }
        Ok(())
    })?;
    Ok(jobs as f64 / start.elapsed().as_secs_f64())
}

fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let args = args()?;
    let mut report = serde_json::Map::new();
    // Throughput cases, run in alternating rounds (each round starts one case later), so a
    // slow spell of this shared machine lands on every case alike; medians are reported.
    let mut cases: Vec<Case> = Vec::new();
    for kind in ["sqlite", "rabbitmq"] {
        for consumers in [1, 2] {
            cases.push(Case::Farm { kind, consumers });
        }
    }
    for max_priority in [None, Some(9), Some(2)] {
        for consumers in [1, 2] {
            cases.push(Case::Ceiling {
                max_priority,
                consumers,
            });
        }
    }
    for consumers in [1, 2] {
        cases.push(Case::SqliteCeiling { consumers });
    }
    cases.retain(|c| args.wants(&c.name()));
    let mut samples: Vec<Vec<(f64, f64)>> = vec![Vec::new(); cases.len()];
    for round in 0..args.rounds {
        for k in 0..cases.len() {
            let i = (k + round) % cases.len();
            samples[i].push(cases[i].run(&args, round).await?);
        }
    }
    println!(
        "{:<12} {:>9} {:>12} {:>14}   (median of {} rounds; min-max)",
        "case", "consumers", "publish/s", "lease+ack/s", args.rounds
    );
    for (case, runs) in cases.iter().zip(&samples) {
        let publish = median(runs.iter().map(|r| r.0).collect());
        let rates: Vec<f64> = runs.iter().map(|r| r.1).collect();
        let (lo, hi) = (
            rates.iter().copied().fold(f64::INFINITY, f64::min),
            rates.iter().copied().fold(0.0, f64::max),
        );
        let rate = median(rates);
        let publish_text = if publish > 0.0 {
            format!("{publish:.0}")
        } else {
            "-".into()
        };
        println!(
            "{:<12} {:>9} {publish_text:>12} {rate:>14.0}   {lo:.0}-{hi:.0}",
            case.label(),
            case.consumers(),
        );
        report.insert(
            case.key(),
            json!({"publish_per_s": publish, "jobs_per_s": rate, "min": lo, "max": hi, "rounds": runs.len()}),
        );
    }
    println!();
    println!(
        "{:<10} {:>9} {:>14} {:>14}",
        "backend", "backlog", "median µs", "p99 µs"
    );
    for kind in ["sqlite", "rabbitmq"] {
        for &backlog in &args.backlogs {
            if !args.wants(&format!("{kind}-latency-{backlog}")) {
                continue;
            }
            let backend = fresh(kind, &args.amqp, &format!("b{backlog}"))?;
            let (median, p99) = latency(&backend, backlog).await?;
            println!(
                "{:<10} {backlog:>9} {median:>14.0} {p99:>14.0}",
                backend.name()
            );
            report.insert(
                format!("{kind}_latency_backlog_{backlog}"),
                json!({"median_us": median, "p99_us": p99}),
            );
        }
    }
    println!("{}", serde_json::Value::Object(report));
    Ok(())
}
