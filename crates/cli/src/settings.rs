//! Flags, environment and the config file resolved into one validated [`Settings`] before any
//! work starts. Precedence: flags, then environment (`VIDEOFARM_*`), then the file, then
//! defaults.

use crate::error::UsageError;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use videofarm_core::{Profile, Profiles, QueueSettings};
use videofarm_worker::paths::{PathMap, PathPolicy};

/// Which queue to use.
#[derive(Debug, Clone, PartialEq)]
pub enum Broker {
    Sqlite(PathBuf),
    Amqp(String),
}

impl Broker {
    pub fn parse(text: &str) -> Result<Broker, UsageError> {
        if let Some(path) = text.strip_prefix("sqlite:") {
            if path.is_empty() {
                return Err(UsageError::new(
                    "--broker sqlite: needs a file, like sqlite:/var/lib/videofarm/queue.db",
                ));
            }
            Ok(Broker::Sqlite(PathBuf::from(path)))
        } else if text.starts_with("amqp://") || text.starts_with("amqps://") {
            Ok(Broker::Amqp(text.to_owned()))
        } else {
            Err(UsageError::new(format!(
                "unknown broker '{text}': use sqlite:<file> or amqp://user:pass@host:5672/vhost"
            )))
        }
    }

    /// Shown in messages; never shows a password.
    pub fn describe(&self) -> String {
        match self {
            Broker::Sqlite(path) => format!("sqlite:{}", path.display()),
            Broker::Amqp(url) => match url.split_once('@') {
                Some((_, host)) => format!("amqp://…@{host}"),
                None => url.clone(),
            },
        }
    }
}

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

/// Everything a command needs to know, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    pub broker: Broker,
    pub ffmpeg: Option<PathBuf>,
    pub ffprobe: Option<PathBuf>,
    pub profiles: Profiles,
    pub default_profile: String,
    /// Whether long inputs are split across workers, when no flag says.
    pub split: videofarm_core::Split,
    /// Fail jobs whose input made the decoder report errors (else: warn).
    pub fail_on_damage: bool,
    pub decode_check: bool,
    /// Encodes at once when no flag says.
    pub workers: u32,
    pub queue: QueueSettings,
    pub heartbeat: Duration,
    pub stall_after: Duration,
    pub timeout: Option<Duration>,
    pub watch_settle: Duration,
    pub watch_interval: Duration,
    pub amqp_prefix: String,
    pub amqp_queue_expires: Option<Duration>,
    pub amqp_consumer_timeout: Option<Duration>,
    pub token: Option<String>,
    pub tags: Vec<String>,
    pub records_file: Option<PathBuf>,
    pub paths: PathPolicy,
    /// The Celery app's tasks this worker takes too (`[celery]` or `worker --celery`), ready
    /// for the RabbitMQ backend; `None` for every other command.
    pub celery: Option<videofarm_queue_amqp::celery::CelerySettings>,
    pub celery_config: Option<CeleryConfig>,
    pub files_url: Option<String>,
    pub transfer: videofarm_worker::transfer::TransferMode,
    pub transfer_cache: Option<PathBuf>,
    /// Bytes.
    pub transfer_cache_limit: u64,
    pub transfer_ahead: u32,
    pub transfer_split_wait: std::time::Duration,
    pub transfer_outage: std::time::Duration,
    pub files_ca: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

/// The longest time any setting may say: about 31 years, far past any encode, and far below
/// what makes a timer overflow.
const MAX_SECS: f64 = 1e9;
/// The most encodes one process runs at once (`workers`, `--workers`, `--concurrency`).
pub const MAX_WORKERS: u32 = 1024;
/// The most attempts a job may be given.
const MAX_ATTEMPTS: u32 = 100;

/// A number of seconds from a flag, from 1 ms to [`MAX_SECS`].
pub fn parse_secs(text: &str) -> Result<Duration, String> {
    let value: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    bounded_secs(value, 0.001).map_err(|why| format!("{text}: {why}"))
}

fn bounded_secs(value: f64, min: f64) -> Result<Duration, String> {
    if !value.is_finite() || value <= 0.0 {
        return Err("must be a positive number of seconds".into());
    }
    if value < min {
        return Err(format!("must be at least {min} s"));
    }
    if value > MAX_SECS {
        return Err(format!("must be at most {MAX_SECS} s"));
    }
    Ok(Duration::from_secs_f64(value))
}

fn secs(name: &str, value: Option<f64>, default: f64) -> Result<Duration, UsageError> {
    secs_at_least(name, value, default, 0.001)
}

fn secs_at_least(
    name: &str,
    value: Option<f64>,
    default: f64,
    min: f64,
) -> Result<Duration, UsageError> {
    let value = value.unwrap_or(default);
    bounded_secs(value, min).map_err(|why| UsageError::new(format!("{name} {why}, not {value}")))
}

/// A good default for encodes at once on this machine. x264 threads well, but at SD sizes two
/// encodes at once beat one on two cores; beyond that each encode gets about four cores.
pub fn default_workers() -> u32 {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1);
    if cores <= 1 {
        1
    } else {
        (cores / 4).max(2)
    }
}

/// The default queue file: `<data dir>/videofarm/queue.db`.
fn default_queue_file() -> PathBuf {
    dirs::data_dir()
        .unwrap_or_else(|| PathBuf::from("."))
        .join("videofarm")
        .join("queue.db")
}

/// The config file at `config`, or the defaults without one.
fn read_config(config: Option<&Path>) -> Result<ConfigFile, UsageError> {
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

/// The lease, the attempt budget and the heartbeat, checked against each other.
fn queue_timing(file: &ConfigFile) -> Result<(QueueSettings, Duration), UsageError> {
    // Below a second a lease runs out between two heartbeats of a busy machine.
    let lease = secs_at_least("lease_secs", file.lease_secs, 30.0, 1.0)?;
    let heartbeat = secs(
        "heartbeat_secs",
        file.heartbeat_secs,
        lease.as_secs_f64() / 5.0,
    )?;
    if heartbeat >= lease {
        return Err(UsageError::new(
            "heartbeat_secs must be shorter than lease_secs",
        ));
    }
    let max_attempts = file.max_attempts.unwrap_or(3);
    if !(1..=MAX_ATTEMPTS).contains(&max_attempts) {
        return Err(UsageError::new(format!(
            "max_attempts must be 1 to {MAX_ATTEMPTS}, not {max_attempts}"
        )));
    }
    let max_lost = match file.max_lost_attempts {
        Some(n) if !(1..=MAX_ATTEMPTS * 2).contains(&n) => {
            return Err(UsageError::new(format!(
                "max_lost_attempts must be 1 to {}, not {n}",
                MAX_ATTEMPTS * 2
            )))
        }
        Some(n) => n,
        None => (max_attempts * 2).max(6),
    };
    let queue = QueueSettings {
        lease,
        max_attempts,
        max_lost,
        retry_backoff: secs("retry_backoff_secs", file.retry_backoff_secs, 10.0)?,
    };
    Ok((queue, heartbeat))
}

/// The worker's tags, each a valid tag, and not too many.
fn checked_tags(tags: Vec<String>) -> Result<Vec<String>, UsageError> {
    if tags.len() > videofarm_core::job::MAX_TAGS {
        return Err(UsageError::new(format!(
            "tags: {} tags given, {} at most",
            tags.len(),
            videofarm_core::job::MAX_TAGS
        )));
    }
    for tag in &tags {
        videofarm_core::job::check_tag(tag)
            .map_err(|why| UsageError::new(format!("tags: {why}")))?;
    }
    Ok(tags)
}

/// The address of a `serve` that holds the files.
fn checked_files_url(url: String) -> Result<String, UsageError> {
    if (url.starts_with("http://") || url.starts_with("https://")) && url.len() <= 2000 {
        Ok(url)
    } else {
        Err(UsageError::new(format!(
            "files_url: {url:?} is not the http:// or https:// address of a videofarm serve"
        )))
    }
}

impl Settings {
    /// Resolve settings from the global flags (already merged with the environment by clap).
    pub fn resolve(
        broker_flag: Option<&str>,
        config: Option<&Path>,
    ) -> Result<Settings, UsageError> {
        let file = read_config(config)?;
        let (queue, heartbeat) = queue_timing(&file)?;
        let broker = match broker_flag.or(file.broker.as_deref()) {
            Some(text) => Broker::parse(text)?,
            None => Broker::Sqlite(default_queue_file()),
        };
        let profiles = Profiles::new(file.profiles).map_err(|e| UsageError::new(e.to_string()))?;
        let default_profile = file.default_profile.unwrap_or_else(|| "archive".to_owned());
        profiles
            .get(&default_profile)
            .map_err(|e| UsageError::new(e.to_string()))?;
        if let Some(n) = file.workers.filter(|n| !(1..=MAX_WORKERS).contains(n)) {
            return Err(UsageError::new(format!(
                "workers must be 1 to {MAX_WORKERS}, not {n} (leave it out to choose from the number of cores)"
            )));
        }
        Ok(Settings {
            broker,
            ffmpeg: file.ffmpeg,
            ffprobe: file.ffprobe,
            profiles,
            default_profile,
            split: file.split.unwrap_or(videofarm_core::Split::Auto),
            fail_on_damage: match file.decode_errors.as_deref() {
                None | Some("warn") => false,
                Some("fail") => true,
                Some(other) => {
                    return Err(UsageError::new(format!(
                        "decode_errors must be \"warn\" or \"fail\", not {other:?}"
                    )))
                }
            },
            decode_check: file.decode_check,
            workers: file.workers.unwrap_or_else(default_workers),
            queue,
            heartbeat,
            stall_after: secs("stall_secs", file.stall_secs, 120.0)?,
            timeout: file
                .timeout_secs
                .map(|t| secs("timeout_secs", Some(t), 0.0))
                .transpose()?,
            watch_settle: secs("watch_settle_secs", file.watch_settle_secs, 30.0)?,
            watch_interval: secs("watch_interval_secs", file.watch_interval_secs, 5.0)?,
            amqp_prefix: file.amqp_prefix.unwrap_or_else(|| "videofarm".to_owned()),
            amqp_queue_expires: file
                .amqp_queue_expires_secs
                .map(|t| secs("amqp_queue_expires_secs", Some(t), 0.0))
                .transpose()?,
            amqp_consumer_timeout: file
                .amqp_consumer_timeout_secs
                .map(|t| secs("amqp_consumer_timeout_secs", Some(t), 0.0))
                .transpose()?,
            token: file.token.filter(|t| !t.is_empty()),
            tags: checked_tags(file.tags)?,
            records_file: file.records_file,
            paths: paths_policy(file.paths)?,
            celery: None,
            celery_config: file.celery,
            files_url: file.files_url.map(checked_files_url).transpose()?,
            transfer: file.transfer.unwrap_or_default(),
            transfer_cache: file.transfer_cache,
            transfer_cache_limit: match file.transfer_cache_gb {
                None => 50_000_000_000,
                Some(gb) if gb.is_finite() && gb > 0.0 && gb < 1e6 => (gb * 1e9) as u64,
                Some(gb) => {
                    return Err(UsageError::new(format!(
                    "transfer_cache_gb: {gb} is not a size in GB (more than 0, less than 1000000)"
                )))
                }
            },
            transfer_ahead: match file.transfer_ahead {
                None => 1,
                Some(n) if n <= 16 => n,
                Some(n) => {
                    return Err(UsageError::new(format!(
                        "transfer_ahead: {n} is too many jobs to hold ahead (at most 16)"
                    )))
                }
            },
            // 0: at once (a farm where no worker sees the media).
            transfer_split_wait: match file.transfer_split_wait_secs {
                Some(0.0) => Duration::ZERO,
                other => secs("transfer_split_wait_secs", other, 120.0)?,
            },
            transfer_outage: secs_at_least(
                "transfer_outage_secs",
                file.transfer_outage_secs,
                300.0,
                1.0,
            )?,
            files_ca: file.files_ca,
            tls_cert: file.tls_cert,
            tls_key: file.tls_key,
        })
    }

    /// The profile a command asked for, or the default; unknown is a usage error.
    pub fn profile(&self, asked: Option<&str>) -> Result<&Profile, UsageError> {
        self.profiles
            .get(asked.unwrap_or(&self.default_profile))
            .map_err(|e| UsageError::new(e.to_string()))
    }
}

fn paths_policy(config: PathsConfig) -> Result<PathPolicy, UsageError> {
    for path in config
        .roots
        .iter()
        .chain(config.map.iter().flat_map(|m| [&m.from, &m.to]))
    {
        if !path.is_absolute() {
            return Err(UsageError::new(format!(
                "[paths]: {} must be an absolute path",
                path.display()
            )));
        }
    }
    Ok(PathPolicy {
        roots: config.roots,
        map: config
            .map
            .into_iter()
            .map(|m| PathMap {
                from: m.from,
                to: m.to,
            })
            .collect(),
    })
}

impl Settings {
    /// The Celery side of a worker named `name` on `host`: the config's `[celery]` over the old
    /// farm's defaults; each task's profile must exist.
    pub fn celery_for(
        &self,
        name: Option<&str>,
        host: &str,
    ) -> Result<videofarm_queue_amqp::celery::CelerySettings, UsageError> {
        use videofarm_queue_amqp::celery::{CelerySettings, MappedTask};
        let config = self.celery_config.clone().unwrap_or_default();
        let hostname = config
            .hostname
            .unwrap_or_else(|| format!("{}@{host}", name.unwrap_or("celery")));
        let mut celery = CelerySettings::new(&hostname);
        let names = [
            (&config.queue, &mut celery.queue, "queue"),
            (&config.exchange, &mut celery.exchange, "exchange"),
            (&config.routing_key, &mut celery.routing_key, "routing_key"),
        ];
        for (given, field, key) in names {
            if let Some(given) = given {
                if given.is_empty() || given.len() > 200 {
                    return Err(UsageError::new(format!(
                        "[celery] {key}: 1 to 200 characters"
                    )));
                }
                field.clone_from(given);
            }
        }
        if hostname.is_empty() || hostname.len() > 200 {
            return Err(UsageError::new("[celery] hostname: 1 to 200 characters"));
        }
        if let Some(events) = config.events {
            celery.events = events;
        }
        if !config.tasks.is_empty() {
            celery.tasks.clear();
        }
        for (task, profile) in &config.tasks {
            let found = self
                .profiles
                .get(profile)
                .map_err(|e| UsageError::new(format!("[celery] tasks: {task}: {e}")))?;
            celery.tasks.insert(
                task.clone(),
                MappedTask {
                    profile: profile.clone(),
                    extension: found.extension.clone(),
                },
            );
        }
        for mapped in celery.tasks.values() {
            if let Err(e) = self.profiles.get(&mapped.profile) {
                return Err(UsageError::new(format!("[celery]: {e}")));
            }
        }
        Ok(celery)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls_parse_and_hide_passwords() {
        assert_eq!(
            Broker::parse("sqlite:/tmp/q.db").unwrap(),
            Broker::Sqlite("/tmp/q.db".into())
        );
        let amqp = Broker::parse("amqp://guest:secret@nas:5672/%2f").unwrap();
        assert!(!amqp.describe().contains("secret"));
        assert!(Broker::parse("redis://x").is_err());
    }

    #[test]
    fn the_example_deploy_config_is_valid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("videofarm.toml");
        std::fs::write(&path, include_str!("../../../deploy/videofarm.toml")).unwrap();
        let settings = Settings::resolve(None, Some(&path)).unwrap();
        assert!(matches!(settings.broker, Broker::Amqp(_)));
        assert_eq!(settings.paths.roots, vec![PathBuf::from("/srv/media")]);
    }

    /// The README's configuration example, every key in it, is a config this version reads.
    #[test]
    fn the_readme_config_example_is_valid() {
        let readme = include_str!("../../../README.md");
        let section = &readme[readme.find("## Configuration").unwrap()..];
        let start = section.find("```toml\n").unwrap() + "```toml\n".len();
        let example = &section[start..start + section[start..].find("```").unwrap()];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("videofarm.toml");
        std::fs::write(&path, example).unwrap();
        let settings = Settings::resolve(None, Some(&path)).unwrap();
        assert_eq!(settings.split, videofarm_core::Split::Auto);
        assert!(settings.profiles.get("small").is_ok());
    }

    /// `[celery]` maps task names to profiles (with their extensions) over the old farm's
    /// defaults, names the worker NAME@HOST, and refuses a profile that does not exist.
    #[test]
    fn the_celery_section_maps_tasks_to_profiles() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[celery]\nqueue = \"encode\"\ntasks = { \"videoTasks.web\" = \"web\" }\n",
        )
        .unwrap();
        let settings = Settings::resolve(Some("amqp://guest:guest@h/"), Some(&path)).unwrap();
        let celery = settings.celery_for(Some("w1"), "nas").unwrap();
        assert_eq!(
            (celery.queue.as_str(), celery.hostname.as_str()),
            ("encode", "w1@nas")
        );
        let keys: Vec<&String> = celery.tasks.keys().collect();
        assert_eq!(
            keys,
            ["videoTasks.web"],
            "a configured map replaces the default one"
        );
        assert_eq!(celery.tasks["videoTasks.web"].extension, "mp4");
        let default = Settings::resolve(Some("amqp://guest:guest@h/"), None).unwrap();
        let celery = default.celery_for(None, "nas").unwrap();
        assert_eq!(celery.hostname, "celery@nas");
        assert_eq!(celery.tasks["videoTasks.encode"].profile, "archive");
        std::fs::write(&path, "[celery]\ntasks = { \"videoTasks.x\" = \"nope\" }\n").unwrap();
        let settings = Settings::resolve(Some("amqp://guest:guest@h/"), Some(&path)).unwrap();
        let why = settings.celery_for(None, "nas").unwrap_err().to_string();
        assert!(
            why.contains("videoTasks.x") && why.contains("nope"),
            "{why}"
        );
    }

    #[test]
    fn config_file_is_validated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "lease_secs = 2\nheartbeat_secs = 0.5\n[profiles.small]\nextension = \"mp4\"\nargs = [\"-c:v\", \"libx264\"]\nvideo_codec = \"h264\"\n").unwrap();
        let s = Settings::resolve(Some("sqlite:/tmp/x.db"), Some(&path)).unwrap();
        assert_eq!(s.queue.lease, Duration::from_secs(2));
        assert_eq!(s.profile(Some("small")).unwrap().extension, "mp4");
        std::fs::write(&path, "lease_secs = 1\nheartbeat_secs = 2\n").unwrap();
        assert!(Settings::resolve(None, Some(&path))
            .unwrap_err()
            .to_string()
            .contains("heartbeat_secs"));
        std::fs::write(&path, "no_such_setting = 1\n").unwrap();
        assert!(Settings::resolve(None, Some(&path))
            .unwrap_err()
            .to_string()
            .contains("no_such_setting"));
        // What could only fail later is refused when read.
        for (text, said) in [
            ("workers = 100000\n", "workers must be 1 to 1024"),
            ("max_attempts = 100000\n", "max_attempts must be 1 to 100"),
            ("max_lost_attempts = 0\n", "max_lost_attempts must be 1 to 200"),
            (
                "[profiles.tv]\nextension = \"mkv\"\nargs = [\"-c:v\", \"libx265\"]\nvideo_codec = \"h265\"\n",
                "ffprobe calls H.265 \"hevc\"",
            ),
            (
                "[profiles.tv]\nextension = \"mkv\"\nargs = [\"-vstats_file\", \"/tmp/v\"]\nvideo_codec = \"h264\"\n",
                "'-vstats_file' takes a file path",
            ),
            (
                "[profiles.VHS]\nextension = \"mkv\"\nargs = [\"-an\"]\nvideo_codec = \"h264\"\n",
                "a built-in profile has this name",
            ),
        ] {
            std::fs::write(&path, text).unwrap();
            let err = Settings::resolve(None, Some(&path)).unwrap_err().to_string();
            assert!(err.contains(said), "{text}: {err}");
        }
    }

    /// Found by the config fuzzer: an error quoted the whole offending line, as long as it was.
    #[test]
    fn a_config_error_says_where_without_quoting_a_long_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, format!("lease_secs = 30\n{}\n", "x".repeat(100_000))).unwrap();
        let said = Settings::resolve(None, Some(&path))
            .unwrap_err()
            .to_string();
        assert!(said.len() < 1000, "{} bytes", said.len());
        assert!(said.contains("c.toml") && said.contains("line 2"), "{said}");
    }
}

/// Fuzzing the config file, where a user's (or an example's) text enters every command.
#[cfg(test)]
#[path = "settings_fuzz.rs"]
mod fuzz;
