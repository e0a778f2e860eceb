//! Flags, environment and the config file resolved into one validated [`Settings`] before any
//! work starts. Precedence: flags, then environment (`VIDEOFARM_*`), then the file, then
//! defaults. By what it configures:
//! - [`file`]: the config file as written, read with errors that say where;
//! - [`time`]: durations and counts, bounded, and the queue's timing as a whole;
//! - this module: the farm's settings (broker, profiles, paths, transfer, Celery);
//! - [`command`]: each command's own settings, its flags resolved against these (commands
//!   never see clap's structs).

mod command;
mod file;
mod time;

pub use command::*;
pub use file::{CeleryConfig, PathsConfig};
pub use time::{parse_secs, MAX_WORKERS};

use crate::error::UsageError;
use file::read_config;
use std::path::{Path, PathBuf};
use std::time::Duration;
use time::{queue_timing, secs, secs_at_least};
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
        std::fs::write(&path, include_str!("../../../../deploy/videofarm.toml")).unwrap();
        let settings = Settings::resolve(None, Some(&path)).unwrap();
        assert!(matches!(settings.broker, Broker::Amqp(_)));
        assert_eq!(settings.paths.roots, vec![PathBuf::from("/srv/media")]);
    }

    /// The README's configuration example, every key in it, is a config this version reads.
    #[test]
    fn the_readme_config_example_is_valid() {
        let readme = include_str!("../../../../README.md");
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
mod fuzz;
