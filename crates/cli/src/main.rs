//! The `videofarm` binary: parse, resolve settings, dispatch, map errors to exit codes.
//!
//! Layout:
//! - [`cli`]: the command line (clap);
//! - [`settings`]: flags + environment + config file into one validated value;
//! - [`commands`]: one file per subcommand;
//! - [`broker`]: opening the queue; [`ui`]: progress bars;
//! - [`error`]: usage errors and exit statuses.

/// A line to standard error that never panics (`eprintln!` does when stderr is a closed pipe:
/// `videofarm events 2>&1 | head -1`).
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// A line to standard output that never panics (see [`note!`]).
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

mod broker;
mod cli;
mod commands;
mod error;
mod eta;
mod settings;
mod ui;

use clap::Parser;
use cli::{Cli, Command};
use error::ExitStatus;
use settings::{
    CancelSettings, EnqueueSettings, JobsSettings, Output, ReportSettings, RetrySettings,
    RunSettings, ServeSettings, Settings, WatchSettings, WorkerSettings,
};

fn main() {
    let cli = Cli::parse();
    init_logging(
        cli.global.verbose,
        matches!(
            cli.command,
            Command::Worker(_) | Command::Watch(_) | Command::Events(_)
        ),
    );
    let status = match run(cli) {
        Ok(status) => status,
        // The reader of our output went away (`videofarm jobs | head -1`): nothing more to
        // say, and nothing wrong.
        Err(error) if broken_pipe(&error) => ExitStatus::Success,
        Err(error) => {
            note!("videofarm: {error:#}");
            ExitStatus::of_error(&error)
        }
    };
    std::process::exit(status as i32);
}

fn broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn run(cli: Cli) -> anyhow::Result<ExitStatus> {
    let settings = Settings::resolve(cli.global.broker.as_deref(), cli.global.config.as_deref())?;
    if let Command::Profiles = cli.command {
        return Ok(commands::profiles::profiles(&settings));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        // Each command's flags are resolved against the settings here, before it runs.
        let s = &settings;
        match cli.command {
            Command::Run(args) => commands::run::run(s, RunSettings::resolve(args, s)?).await,
            Command::Enqueue(args) => {
                commands::enqueue::enqueue(s, EnqueueSettings::resolve(args, s)?).await
            }
            Command::Worker(args) => {
                commands::worker::worker(s, WorkerSettings::resolve(args, s)?).await
            }
            Command::Watch(args) => {
                commands::watch::watch(s, WatchSettings::resolve(args, s)?).await
            }
            Command::Status(args) => commands::status::status(s, Output::resolve(args)).await,
            Command::Jobs(args) => commands::jobs::jobs(s, JobsSettings::resolve(args)).await,
            Command::Inspect(args) => commands::inspect::inspect(s, Output::resolve(args)).await,
            Command::Report(args) => {
                commands::report::report(s, ReportSettings::resolve(args)?).await
            }
            Command::Retry(args) => commands::retry::retry(s, RetrySettings::resolve(args)?).await,
            Command::Cancel(args) => {
                commands::cancel::cancel(s, CancelSettings::resolve(args)?).await
            }
            Command::Profiles => Ok(commands::profiles::profiles(s)),
            Command::Events(args) => commands::events::events(s, Output::resolve(args)).await,
            Command::Serve(args) => {
                commands::serve::serve(s, ServeSettings::resolve(args, s)?).await
            }
        }
    })
}

/// Logs go to stderr. Long-running commands say what they do; the others only warn.
/// `VIDEOFARM_LOG` (tracing filter syntax) overrides.
fn init_logging(verbose: u8, long_running: bool) {
    let level = match (verbose, long_running) {
        // `run` shows failures in its own lines and summary.
        (0, false) => "error",
        (0, true) | (1, _) => "info",
        _ => "debug",
    };
    // lapin logs every closed channel as an error; videofarm says what matters in its own words.
    let level = if verbose >= 2 {
        level.to_owned()
    } else {
        format!("{level},lapin=off")
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("VIDEOFARM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&level));
    // Colours only for a terminal: a log file or a journal gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        // A log line that cannot be written (stderr is a closed pipe) is dropped: reporting
        // that failure on stderr too would panic the task that logged.
        .log_internal_errors(false)
        .init();
}
