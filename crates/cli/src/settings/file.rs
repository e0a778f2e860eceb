//! The config file as written (`videofarm.toml`), read with errors that say where.

use crate::error::UsageError;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use videofarm_core::Profile;

/// The config file, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub broker: Option<String>,
    pub ffmpeg: Option<PathBuf>,
    pub ffprobe: Option<PathBuf>,
    pub default_profile: Option<String>,
    pub workers: Option<u32>,
    /// auto, off, or a chunk length in seconds.
    pub split: Option<videofarm_core::Split>,
    /// What decoder errors in an input make of its job: "warn" (the default) or "fail".
    pub decode_errors: Option<String>,
    /// Decode every output whole before it may appear (about an eighth of an SD encode).
    #[serde(default)]
    pub decode_check: bool,
    /// Attempts lost with their worker before a job fails (default: twice max_attempts, at
    /// least 6).
    pub max_lost_attempts: Option<u32>,
    pub lease_secs: Option<f64>,
    pub heartbeat_secs: Option<f64>,
    pub max_attempts: Option<u32>,
    pub retry_backoff_secs: Option<f64>,
    pub stall_secs: Option<f64>,
    pub timeout_secs: Option<f64>,
    pub watch_settle_secs: Option<f64>,
    pub watch_interval_secs: Option<f64>,
    /// Prefix of the RabbitMQ queue and exchange names (several farms can share a broker).
    pub amqp_prefix: Option<String>,
    /// Let idle RabbitMQ queues expire after this long (for throwaway farms such as tests).
    pub amqp_queue_expires_secs: Option<f64>,
    /// Per-consumer acknowledgement timeout asked of RabbitMQ 3.12+ (`x-consumer-timeout`).
    pub amqp_consumer_timeout_secs: Option<f64>,
    /// `serve`: the token every changing request must carry.
    pub token: Option<String>,
    /// What a worker on this machine says of it, for jobs queued with `--require TAG`.
    #[serde(default)]
    pub tags: Vec<String>,
    /// On RabbitMQ: where this machine keeps its copy of the farm's records (read from the
    /// records stream). `history_file` is the name earlier versions gave it.
    #[serde(alias = "history_file")]
    pub records_file: Option<PathBuf>,
    #[serde(default)]
    pub paths: PathsConfig,
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
    /// `[celery]`: `worker` also takes a Celery app's tasks (see the README).
    pub celery: Option<CeleryConfig>,
    /// A worker that cannot see a job's files fetches and sends them through this `serve`.
    pub files_url: Option<String>,
    /// auto (only what this worker cannot see), always, never.
    pub transfer: Option<videofarm_worker::transfer::TransferMode>,
    /// Where fetched inputs and outputs on their way wait.
    pub transfer_cache: Option<PathBuf>,
    /// The most the transfer cache holds, in GB (default 50).
    pub transfer_cache_gb: Option<f64>,
    /// Jobs a worker holds beyond its concurrency to fetch their inputs while it encodes
    /// (default 1; 0: fetch only when an encoder is free).
    pub transfer_ahead: Option<u32>,
    /// Worker without the media: how long a split tape waits for a worker that sees it to plan
    /// it before this one encodes it whole (default 120).
    pub transfer_split_wait_secs: Option<f64>,
    /// Worker: how long a transfer keeps trying while the file server is away (default 300).
    pub transfer_outage_secs: Option<f64>,
    /// Worker: the certificate (or its CA) of an `https://` files_url, PEM.
    pub files_ca: Option<PathBuf>,
    /// `serve`: HTTPS with this certificate chain and key (PEM files).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

/// `[celery]`: where the Celery app's tasks are and what they run. Every key is optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CeleryConfig {
    pub queue: Option<String>,
    pub exchange: Option<String>,
    pub routing_key: Option<String>,
    /// The node name Celery's tools show (default `celery@HOST`, or `NAME@HOST` with `--name`).
    pub hostname: Option<String>,
    /// Send Celery events (default true).
    pub events: Option<bool>,
    /// Task name = profile (default `"videoTasks.encode" = "archive"`).
    #[serde(default)]
    pub tasks: BTreeMap<String, String>,
}

/// `[paths]`: what a worker may touch, and how the producer's paths map to this machine's.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathsConfig {
    #[serde(default)]
    pub roots: Vec<PathBuf>,
    #[serde(default)]
    pub map: Vec<PathMapConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathMapConfig {
    pub from: PathBuf,
    pub to: PathBuf,
}

/// The config file at `config`, or the defaults without one.
pub(super) fn read_config(config: Option<&Path>) -> Result<ConfigFile, UsageError> {
    let Some(path) = config else {
        return Ok(ConfigFile::default());
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| UsageError::new(format!("config file {}: {e}", path.display())))?;
    toml::from_str::<ConfigFile>(&text).map_err(|e| {
        UsageError::new(format!(
            "config file {}: {}",
            path.display(),
            config_error(&text, &e)
        ))
    })
}

/// Where in `text` the config error `e` is and what it is, without quoting the line (which
/// may be as long as the file: the fuzzer found a 100 KB message).
fn config_error(text: &str, e: &toml::de::Error) -> String {
    let message = videofarm_core::job::truncate(e.message().trim(), 300);
    match e.span() {
        Some(span) => {
            let before = &text.as_bytes()[..span.start.min(text.len())];
            let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
            let column = before.len()
                - before
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(0, |i| i + 1)
                + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message,
    }
}
