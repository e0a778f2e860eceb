//! The command line, as clap parses it. Commands never see these structs: each command's
//! flags are resolved against the configuration into its own settings
//! ([`crate::settings::command`]) before it runs.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "videofarm",
    version,
    about = "A video encoding farm: queue folders of captures, encode them with ffmpeg on one machine or many, and never lose, corrupt or repeat a job.",
    after_help = "Start with: videofarm run <FOLDER> --out <DIR>"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// The queue: `sqlite:<file>` (default: a file in your data folder) or
    /// `amqp://user:pass@host:5672/vhost` for RabbitMQ.
    #[arg(long, global = true, env = "VIDEOFARM_BROKER")]
    pub broker: Option<String>,
    /// A TOML config file with profiles and defaults (flags beat environment beat file).
    #[arg(long, global = true, env = "VIDEOFARM_CONFIG")]
    pub config: Option<PathBuf>,
    /// More log output (-v: info, -vv: debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Encode files or folders now: queue them, run local workers with progress bars, print a
    /// summary. Exit 0 if all succeeded, 1 if any failed, 2 for usage errors.
    Run(RunArgs),
    /// Only queue files or folders, for workers to pick up.
    Enqueue(EnqueueArgs),
    /// Take jobs from the queue and encode them until stopped (SIGTERM/Ctrl-C puts running
    /// jobs back in the queue at once).
    Worker(WorkerArgs),
    /// Watch a drop folder and queue each new file once it has stopped growing.
    Watch(WatchArgs),
    /// Job counts by state.
    Status(JsonArgs),
    /// One row per job.
    Jobs(JobsArgs),
    /// The live workers and what each is doing right now.
    Inspect(JsonArgs),
    /// What a tape's signal says: black, clipped, frozen and silent stretches, lost frames,
    /// field order, each with its time (measured while it was encoded).
    Report(ReportArgs),
    /// Queue failed or cancelled jobs again.
    Retry(RetryArgs),
    /// Cancel queued or running jobs (a running encode is stopped and its partial output removed).
    Cancel(CancelArgs),
    /// List the built-in and configured profiles.
    Profiles,
    /// Follow the farm's lifecycle events live (RabbitMQ), like `celery events`.
    Events(JsonArgs),
    /// Serve the dashboard, the JSON API and /metrics.
    Serve(ServeArgs),
}

#[derive(Debug, Args, Clone)]
pub struct QueueInputs {
    /// Files or folders (searched recursively; subfolders are mirrored under --out).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Where encoded files go.
    #[arg(long)]
    pub out: PathBuf,
    /// The encoding profile (see `videofarm profiles`); default `archive`.
    #[arg(long)]
    pub profile: Option<String>,
    /// Higher runs first.
    #[arg(long, default_value_t = 0)]
    pub priority: i32,
    /// Encode again even if this input was already done with this profile.
    #[arg(long)]
    pub force: bool,
    /// Replace an existing output file that is not this job's verified result.
    #[arg(long)]
    pub overwrite: bool,
    /// Split long inputs across workers: auto (inputs of 10 minutes or more, in chunks of
    /// about 2 minutes), off, or a chunk length in seconds (default: config `split`, or auto).
    #[arg(long, value_name = "auto|off|SECONDS")]
    pub split: Option<videofarm_core::Split>,
    /// Only workers with this tag (config `tags`) take these jobs; repeat for several.
    #[arg(long = "require", value_name = "TAG", value_parser = parse_tag)]
    pub require: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub inputs: QueueInputs,
    /// Encodes at once (default: chosen from the number of cores).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=i64::from(crate::settings::MAX_WORKERS)))]
    pub workers: Option<u32>,
    /// Print JSON lines instead of progress bars and a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct EnqueueArgs {
    #[command(flatten)]
    pub inputs: QueueInputs,
    /// Move each file into this folder (an atomic rename) before queueing it, like the old
    /// producer's `encoding` folder; the job then points at the new path.
    #[arg(long)]
    pub move_to: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Encodes at once (default: chosen from the number of cores).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=i64::from(crate::settings::MAX_WORKERS)))]
    pub concurrency: Option<u32>,
    /// The name `inspect` shows (default: host:pid).
    #[arg(long)]
    pub name: Option<String>,
    /// Also take the Celery app's tasks from its queue, and answer `celery inspect` and send
    /// Celery events as a Celery worker (RabbitMQ only; `[celery]` in the config does it too).
    #[arg(long)]
    pub celery: bool,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The drop folder.
    pub dir: PathBuf,
    /// Where encoded files go.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long)]
    pub profile: Option<String>,
    /// Seconds a file must stay the same size and age before it is queued.
    #[arg(long, value_parser = crate::settings::parse_secs)]
    pub settle: Option<std::time::Duration>,
    /// Seconds between scans of the folder.
    #[arg(long, value_parser = crate::settings::parse_secs)]
    pub interval: Option<std::time::Duration>,
    /// Split long inputs across workers: auto, off, or a chunk length in seconds.
    #[arg(long, value_name = "auto|off|SECONDS")]
    pub split: Option<videofarm_core::Split>,
    /// Only workers with this tag take the jobs; repeat for several.
    #[arg(long = "require", value_name = "TAG", value_parser = parse_tag)]
    pub require: Vec<String>,
}

#[derive(Debug, Args)]
pub struct JsonArgs {
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct JobsArgs {
    /// Only jobs in this state: queued, running, succeeded, failed, cancelled.
    #[arg(long)]
    pub state: Option<videofarm_core::JobState>,
    /// Also list the chunk jobs of split tapes.
    #[arg(long)]
    pub all: bool,
    /// At most this many jobs (a page; with --offset for the next ones).
    #[arg(long)]
    pub limit: Option<u32>,
    /// Skip this many jobs first.
    #[arg(long, default_value_t = 0)]
    pub offset: u32,
    /// The most recently finished first.
    #[arg(long)]
    pub newest: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The job's id (see `videofarm jobs`).
    pub id: String,
    /// The whole report as JSON (with its timeline), as `GET /api/jobs/{id}` gives it.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RetryArgs {
    /// Job ids (see `videofarm jobs`).
    #[arg(required_unless_present = "all_failed")]
    pub ids: Vec<String>,
    /// Every failed job.
    #[arg(long, conflicts_with = "ids")]
    pub all_failed: bool,
}

#[derive(Debug, Args)]
pub struct CancelArgs {
    #[arg(required = true)]
    pub ids: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on. Anything but loopback needs a token.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// Required on every request that changes something (default: `token` in the config).
    #[arg(long, env = "VIDEOFARM_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

fn parse_tag(text: &str) -> Result<String, String> {
    videofarm_core::job::check_tag(text).map(|()| text.to_owned())
}
