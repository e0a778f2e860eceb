//! Each command's settings: its flags resolved against the farm's [`Settings`] (defaults from
//! the file, limits, ids and tags checked), so that a command never reads clap's structs and
//! every default is decided here, once.

use super::Settings;
use crate::cli::{
    CancelArgs, EnqueueArgs, JobsArgs, JsonArgs, QueueInputs, ReportArgs, RetryArgs, RunArgs,
    ServeArgs, WatchArgs, WorkerArgs,
};
use crate::error::UsageError;
use std::path::PathBuf;
use std::time::Duration;
use videofarm_core::{JobFilter, JobId, Split};

/// Files or folders to queue, and how (`run`, `enqueue`, `watch`).
#[derive(Debug, Clone)]
pub struct Batch {
    pub paths: Vec<PathBuf>,
    pub out: PathBuf,
    /// As asked: a profile name, several with commas (`preserve,vhs`), or none (the default).
    pub profile: Option<String>,
    pub priority: i32,
    /// Encode again what was already done.
    pub force: bool,
    /// Replace an output that is not this job's verified result.
    pub overwrite: bool,
    /// The flag's, else the file's.
    pub split: Split,
    /// The tags a worker must have to take these jobs (checked).
    pub require: Vec<String>,
}

impl Batch {
    fn resolve(inputs: QueueInputs, settings: &Settings) -> Result<Batch, UsageError> {
        check_required(&inputs.require)?;
        Ok(Batch {
            paths: inputs.paths,
            out: inputs.out,
            profile: inputs.profile,
            priority: inputs.priority,
            force: inputs.force,
            overwrite: inputs.overwrite,
            split: inputs.split.unwrap_or(settings.split),
            require: inputs.require,
        })
    }
}

/// The tags a job may require: each a tag, and few.
fn check_required(tags: &[String]) -> Result<(), UsageError> {
    let max = videofarm_core::job::MAX_TAGS;
    if tags.len() > max {
        return Err(UsageError::new(format!(
            "--require: the job requires {} tags ({max} at most)",
            tags.len()
        )));
    }
    Ok(())
}

/// Job ids as given, each checked.
fn job_ids(ids: &[String]) -> Result<Vec<JobId>, UsageError> {
    ids.iter()
        .map(|id| {
            let id = JobId(id.trim().to_owned());
            id.check().map(|()| id).map_err(UsageError::new)
        })
        .collect()
}

/// `run`.
#[derive(Debug)]
pub struct RunSettings {
    pub batch: Batch,
    /// Encodes at once: the flag's, else the file's (no more than there are files when
    /// nothing is split).
    pub workers: u32,
    pub json: bool,
}

impl RunSettings {
    pub fn resolve(args: RunArgs, settings: &Settings) -> Result<Self, UsageError> {
        Ok(Self {
            batch: Batch::resolve(args.inputs, settings)?,
            workers: args.workers.unwrap_or(settings.workers),
            json: args.json,
        })
    }
}

/// `enqueue`.
#[derive(Debug)]
pub struct EnqueueSettings {
    pub batch: Batch,
    pub move_to: Option<PathBuf>,
}

impl EnqueueSettings {
    pub fn resolve(args: EnqueueArgs, settings: &Settings) -> Result<Self, UsageError> {
        Ok(Self {
            batch: Batch::resolve(args.inputs, settings)?,
            move_to: args.move_to,
        })
    }
}

/// `worker`.
#[derive(Debug)]
pub struct WorkerSettings {
    pub concurrency: u32,
    /// The name `inspect` shows (default: host:pid).
    pub name: Option<String>,
    /// Take the Celery app's tasks too (`--celery`, or `[celery]` in the file).
    pub celery: bool,
}

impl WorkerSettings {
    pub fn resolve(args: WorkerArgs, settings: &Settings) -> Result<Self, UsageError> {
        let celery = args.celery || settings.celery_config.is_some();
        if celery && !matches!(settings.broker, super::Broker::Amqp(_)) {
            return Err(UsageError::new(
                "--celery and [celery] need the Celery app's broker: --broker amqp://...",
            ));
        }
        Ok(Self {
            concurrency: args.concurrency.unwrap_or(settings.workers),
            name: args.name,
            celery,
        })
    }
}

/// `watch`.
#[derive(Debug)]
pub struct WatchSettings {
    /// The drop folder: the batch's one path.
    pub batch: Batch,
    pub settle: Duration,
    pub interval: Duration,
}

impl WatchSettings {
    pub fn resolve(args: WatchArgs, settings: &Settings) -> Result<Self, UsageError> {
        let profile = settings.profile(args.profile.as_deref())?.name.clone();
        let inputs = QueueInputs {
            paths: vec![args.dir],
            out: args.out,
            profile: Some(profile),
            priority: 0,
            force: false,
            overwrite: false,
            split: args.split,
            require: args.require,
        };
        Ok(Self {
            batch: Batch::resolve(inputs, settings)?,
            settle: args.settle.unwrap_or(settings.watch_settle),
            interval: args.interval.unwrap_or(settings.watch_interval),
        })
    }

    pub fn dir(&self) -> &std::path::Path {
        &self.batch.paths[0]
    }
}

/// `status`, `inspect`, `events`: how to print.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    pub json: bool,
}

impl Output {
    pub fn resolve(args: JsonArgs) -> Self {
        Self { json: args.json }
    }
}

/// `jobs`.
#[derive(Debug)]
pub struct JobsSettings {
    pub filter: JobFilter,
    pub json: bool,
}

impl JobsSettings {
    pub fn resolve(args: JobsArgs) -> Self {
        Self {
            filter: JobFilter {
                state: args.state,
                chunks: args.all,
                limit: args.limit,
                offset: args.offset,
                newest_first: args.newest,
                ..JobFilter::default()
            },
            json: args.json,
        }
    }
}

/// `report`.
#[derive(Debug)]
pub struct ReportSettings {
    pub id: JobId,
    pub json: bool,
}

impl ReportSettings {
    pub fn resolve(args: ReportArgs) -> Result<Self, UsageError> {
        Ok(Self {
            id: job_ids(std::slice::from_ref(&args.id))?.remove(0),
            json: args.json,
        })
    }
}

/// `retry`: these jobs, or every failed one.
#[derive(Debug)]
pub enum RetrySettings {
    Jobs(Vec<JobId>),
    AllFailed,
}

impl RetrySettings {
    pub fn resolve(args: RetryArgs) -> Result<Self, UsageError> {
        Ok(if args.all_failed {
            Self::AllFailed
        } else {
            Self::Jobs(job_ids(&args.ids)?)
        })
    }
}

/// `cancel`.
#[derive(Debug)]
pub struct CancelSettings {
    pub ids: Vec<JobId>,
}

impl CancelSettings {
    pub fn resolve(args: CancelArgs) -> Result<Self, UsageError> {
        Ok(Self {
            ids: job_ids(&args.ids)?,
        })
    }
}

/// `serve`.
#[derive(Debug)]
pub struct ServeSettings {
    pub listen: std::net::SocketAddr,
    /// The flag's (or `VIDEOFARM_TOKEN`), else the file's; required off loopback.
    pub token: Option<String>,
}

impl ServeSettings {
    pub fn resolve(args: ServeArgs, settings: &Settings) -> Result<Self, UsageError> {
        let token = args
            .token
            .filter(|t| !t.is_empty())
            .or_else(|| settings.token.clone());
        if !args.listen.ip().is_loopback() && token.is_none() {
            return Err(UsageError::new(format!(
                "listening on {} lets other machines change the farm: set a token (--token, VIDEOFARM_TOKEN or `token` in the config)",
                args.listen
            )));
        }
        if let Some(token) = &token {
            videofarm_web::check_token(token).map_err(UsageError::new)?;
        }
        Ok(Self {
            listen: args.listen,
            token,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn settings(file: &str) -> (tempfile::TempDir, Settings) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, file).unwrap();
        let settings = Settings::resolve(Some("sqlite:/tmp/q.db"), Some(&path)).unwrap();
        (dir, settings)
    }

    fn command(line: &str) -> Command {
        Cli::try_parse_from(line.split(' ')).unwrap().command
    }

    #[test]
    fn each_command_takes_its_flags_over_the_file() {
        let (_dir, s) = settings("workers = 3\nsplit = \"off\"\nwatch_settle_secs = 7\n");
        let Command::Run(args) = command("videofarm run a --out o") else {
            panic!()
        };
        let run = RunSettings::resolve(args, &s).unwrap();
        assert_eq!((run.workers, run.batch.split), (3, Split::Off));
        let Command::Run(args) = command("videofarm run a --out o --workers 5 --split 30") else {
            panic!()
        };
        let run = RunSettings::resolve(args, &s).unwrap();
        assert_eq!((run.workers, run.batch.split), (5, Split::Every(30.0)));
        let Command::Watch(args) = command("videofarm watch d --out o") else {
            panic!()
        };
        let watch = WatchSettings::resolve(args, &s).unwrap();
        assert_eq!(watch.settle, Duration::from_secs(7));
        assert_eq!(watch.batch.profile.as_deref(), Some("archive"));
        let Command::Watch(args) = command("videofarm watch d --out o --profile nope") else {
            panic!()
        };
        assert!(WatchSettings::resolve(args, &s).is_err());
        let Command::Serve(args) = command("videofarm serve --listen 0.0.0.0:8080") else {
            panic!()
        };
        let err = ServeSettings::resolve(args, &s).unwrap_err().to_string();
        assert!(err.contains("set a token"), "{err}");
        let Command::Retry(args) = command("videofarm retry --all-failed") else {
            panic!()
        };
        assert!(matches!(
            RetrySettings::resolve(args).unwrap(),
            RetrySettings::AllFailed
        ));
        let Command::Cancel(args) = command("videofarm cancel 1 2") else {
            panic!()
        };
        assert_eq!(CancelSettings::resolve(args).unwrap().ids.len(), 2);
    }
}
