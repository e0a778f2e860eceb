//! One file per subcommand. Each takes the resolved [`crate::settings::Settings`] and its own
//! arguments and returns the exit status.

pub mod cancel;
pub mod enqueue;
pub mod events;
pub mod inspect;
pub mod jobs;
pub mod profiles;
pub mod report;
pub mod retry;
pub mod run;
pub mod serve;
pub mod status;
pub mod watch;
pub mod worker;

use crate::error::UsageError;
use crate::settings::{Batch, Settings};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use videofarm_core::plan::{self as scan, Planned};
use videofarm_core::{Backend, Enqueued, JobSpec, JobState, Profile, WorkerInfo};
use videofarm_ffmpeg::Tools;
use videofarm_worker::{Worker, WorkerSettings};

/// Print what a cancel or retry did to each job, one line each (those it could not do on
/// stderr), and the exit status: 1 when an id was wrong for the request, else 0 (a job that
/// already was where the request would put it is no failure: both requests are idempotent).
pub fn report_answers(
    answers: &[videofarm_core::Answer],
    request: videofarm_core::lifecycle::Request,
) -> crate::error::ExitStatus {
    let mut status = crate::error::ExitStatus::Success;
    for answer in answers {
        let line = answer.describe(request);
        if answer.verdict.is_problem() {
            note!("{line}");
            status = crate::error::ExitStatus::Failure;
        } else if writeln!(std::io::stdout(), "{line}").is_err() {
            break;
        }
    }
    status
}

/// ffmpeg and ffprobe, or a usage error that says how to install them.
pub fn locate_tools(settings: &Settings) -> Result<Tools, UsageError> {
    Tools::locate(settings.ffmpeg.as_deref(), settings.ffprobe.as_deref())
        .map_err(|e| UsageError::new(e.to_string()))
}

pub fn worker_settings(settings: &Settings, tools: Tools, info: WorkerInfo) -> WorkerSettings {
    // `transfer = "never"`: no server to fetch from, as if none were named.
    let files = settings
        .files_url
        .as_ref()
        .map(|url| videofarm_worker::transfer::Files {
            url: url.clone(),
            token: settings.token.clone(),
            mode: settings.transfer,
            cache: settings.transfer_cache.clone().unwrap_or_else(|| {
                dirs::cache_dir()
                    .unwrap_or_else(std::env::temp_dir)
                    .join("videofarm")
                    .join("transfer")
            }),
            stall: std::time::Duration::from_secs(60),
            outage: settings.transfer_outage,
            ca: settings.files_ca.clone(),
            cache_limit: settings.transfer_cache_limit,
            plan_wait: settings.transfer_split_wait,
        })
        .filter(videofarm_worker::transfer::Files::fetches);
    WorkerSettings {
        info: WorkerInfo {
            ahead: if files.is_some() {
                settings.transfer_ahead
            } else {
                0
            },
            ..info
        },
        tools,
        profiles: settings.profiles.clone(),
        heartbeat: settings.heartbeat,
        stall_after: settings.stall_after,
        timeout: settings.timeout,
        poll: std::time::Duration::from_millis(500),
        paths: settings.paths.clone(),
        max_attempts: settings.queue.max_attempts,
        // A look at a tape's chunks is a lease and a put-back: cheap, so often.
        split_poll: std::time::Duration::from_millis(500).min(settings.queue.lease / 4),
        fail_on_damage: settings.fail_on_damage,
        decode_check: settings.decode_check,
        files,
    }
}

/// This machine as a worker: the profiles it can run (each one's encoders and filters present
/// and a trial encode working; verdicts kept in the user's cache folder per ffmpeg build) and
/// its tags. Only the profiles in `first` are tried now if their verdict is not kept yet; the
/// others wait (counted as not runnable) for [`try_later`]. Says on stderr what it cannot run
/// and why.
pub async fn with_capabilities(
    settings: &Settings,
    tools: &Tools,
    mut info: WorkerInfo,
    first: &[String],
) -> (WorkerInfo, Option<videofarm_worker::capability::Found>) {
    let cache = dirs::cache_dir().map(|d| d.join("videofarm").join("profile-trials.json"));
    let found = videofarm_worker::capability::runnable_profiles(
        tools,
        &settings.profiles,
        cache.as_deref(),
        first,
    )
    .await;
    say_unable(&found.not);
    info.profiles = Some(found.runnable.clone());
    info.unable = found
        .not
        .iter()
        .map(|(name, _)| name.clone())
        .chain(found.untried.iter().cloned())
        .collect();
    info.tags = settings.tags.clone();
    let later = (!found.untried.is_empty()).then_some(found);
    (info, later)
}

/// The trials left for later, once the worker's first ask for a job is answered: each profile
/// found runnable is taken from then on.
pub fn try_later(worker: Arc<Worker>, later: Option<videofarm_worker::capability::Found>) {
    let Some(found) = later else { return };
    tokio::spawn(async move {
        worker.first_asked().await;
        let known: Vec<String> = found.not.iter().map(|(n, _)| n.clone()).collect();
        let (runnable, not) = found.later().await;
        let new: Vec<(String, String)> = not
            .iter()
            .filter(|(n, _)| !known.contains(n))
            .cloned()
            .collect();
        say_unable(&new);
        worker
            .learned(runnable, not.into_iter().map(|(n, _)| n).collect())
            .await;
    });
}

fn say_unable(not: &[(String, String)]) {
    if !not.is_empty() {
        note!(
            "this machine cannot run: {}",
            not.iter()
                .map(|(name, why)| format!("{name} ({why})"))
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
}

/// The profiles `--profile` names (one, or several with commas: `preserve,vhs` makes a
/// master and a viewing copy of each file) and the jobs planned for each. With several, each
/// output's name carries its profile (`tape.preserve.mkv`, `tape.vhs.mkv`): no two clash.
pub fn plan_batch(
    settings: &Settings,
    inputs: &Batch,
) -> Result<Vec<(Profile, Vec<Planned>)>, UsageError> {
    let names: Vec<Option<&str>> = match inputs.profile.as_deref() {
        Some(list) if list.contains(',') => list.split(',').map(|n| Some(n.trim())).collect(),
        one => vec![one],
    };
    let several = names.len() > 1;
    let mut batch: Vec<(Profile, Vec<Planned>)> = Vec::with_capacity(names.len());
    for name in names {
        let profile = settings.profile(name)?.clone();
        if batch.iter().any(|(p, _)| p.name == profile.name) {
            return Err(UsageError::new(format!(
                "--profile names {} twice",
                profile.name
            )));
        }
        let extension = if several {
            format!("{}.{}", profile.name, profile.extension)
        } else {
            profile.extension.clone()
        };
        let planned =
            scan::plan(&inputs.paths, &inputs.out, &extension).map_err(UsageError::from)?;
        if planned.is_empty() {
            return Err(UsageError::new("no video files found in the given paths"));
        }
        batch.push((profile, planned));
    }
    Ok(batch)
}

/// Queue the jobs of every profile of a batch ([`plan_batch`]); each job's spec and what the
/// queue said, profile after profile.
pub async fn enqueue_batch(
    queue: &dyn Backend,
    batch: &[(Profile, Vec<Planned>)],
    inputs: &Batch,
) -> anyhow::Result<Vec<(JobSpec, Enqueued)>> {
    let mut enqueued = Vec::new();
    for (profile, planned) in batch {
        enqueued.extend(enqueue_planned(queue, planned, profile, inputs).await?);
    }
    Ok(enqueued)
}

/// Jobs queued in one call to the queue.
const ENQUEUE_BATCH: usize = 1000;

/// Queue every planned job; returns each job's spec and what the queue said.
pub async fn enqueue_planned(
    queue: &dyn Backend,
    planned: &[Planned],
    profile: &Profile,
    inputs: &Batch,
) -> anyhow::Result<Vec<(JobSpec, Enqueued)>> {
    let mut results = Vec::with_capacity(planned.len());
    // In batches: one transaction or one round of broker confirms each.
    for batch in planned.chunks(ENQUEUE_BATCH) {
        let specs: Vec<JobSpec> = batch
            .iter()
            .map(|job| {
                let mut spec = scan::spec(
                    job,
                    profile,
                    inputs.priority,
                    inputs.overwrite || inputs.force,
                );
                spec.split = inputs.split;
                spec.require = inputs.require.clone();
                spec
            })
            .collect();
        let answers = queue
            .enqueue_many(specs.clone(), inputs.force)
            .await
            .map_err(|e| anyhow::anyhow!("queueing {} files: {e}", batch.len()))?;
        let mut answered = Vec::with_capacity(batch.len());
        for ((job, spec), queued) in batch.iter().zip(specs).zip(answers) {
            let queued =
                queued.map_err(|e| anyhow::anyhow!("queueing {}: {e}", shown(&job.input)))?;
            answered.push((spec, queued));
        }
        // A success whose output is gone is made again (the user deleted it for that).
        let gone: Vec<usize> = (0..answered.len())
            .filter(|&i| {
                matches!(answered[i].1, Enqueued::Duplicate(_, JobState::Succeeded))
                    && scan::made_again(&answered[i].0)
            })
            .collect();
        if !gone.is_empty() {
            let again: Vec<JobSpec> = gone.iter().map(|&i| answered[i].0.clone()).collect();
            let answers = queue
                .enqueue_many(again, true)
                .await
                .map_err(|e| anyhow::anyhow!("queueing {} files again: {e}", gone.len()))?;
            for (&i, answer) in gone.iter().zip(answers) {
                answered[i].1 = answer.map_err(|e| {
                    anyhow::anyhow!("queueing {} again: {e}", shown(&answered[i].0.input))
                })?;
            }
        }
        results.extend(answered);
    }
    Ok(results)
}

/// Cancel `token` on SIGINT, SIGTERM or SIGHUP (a closed terminal or a dropped SSH session
/// stops the work as cleanly as Ctrl-C); a second signal ends the process at once.
pub fn stop_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) else {
            tracing::error!("cannot listen for signals");
            return;
        };
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {}, _ = hup.recv() => {} }
        // Stop first: saying so may fail (stderr can be a closed pipe).
        token.cancel();
        tracing::info!("stopping: running jobs go back to the queue");
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {}, _ = hup.recv() => {} }
        // stderr may be a closed pipe: never let the message stop the exit.
        let _ = writeln!(std::io::stderr(), "videofarm: second signal, quitting now");
        std::process::exit(130);
    });
}

/// A path for a terminal: control characters (a newline in a file name) are escaped so a name
/// cannot break or forge a line.
pub fn shown(path: &Path) -> String {
    path.display()
        .to_string()
        .chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

/// A running encode's pace: `48 fps  2.10x  eta 1:05`.
pub fn describe_progress(progress: &videofarm_core::Progress) -> String {
    format!(
        "{:.0} fps  {:.2}x  eta {}",
        progress.fps,
        progress.speed,
        progress
            .eta_s
            .map(human_duration)
            .unwrap_or_else(|| "-".into())
    )
}

/// A transfer as it goes: "fetching the input  12.0 MB of 20.0 MB  4.0 MB/s  eta 2.0s".
pub fn describe_transfer(t: &videofarm_core::Transfer, eta_s: Option<f64>) -> String {
    format!(
        "{}  {} of {}  {}/s  eta {}",
        if t.sending {
            "sending the output"
        } else {
            "fetching the input"
        },
        human_size(t.bytes),
        human_size(t.total),
        human_size(t.rate as u64),
        eta_s.map(human_duration).unwrap_or_else(|| "-".into())
    )
}

/// Human sizes: 1.5 GB, 700 MB, 12 kB.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Human durations: 1:02:03, 4:05, 12.3s.
pub fn human_duration(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "-".to_owned();
    }
    if secs < 60.0 {
        return format!("{secs:.1}s");
    }
    let total = secs.round() as u64;
    let (h, m, s) = (total / 3600, total % 3600 / 60, total % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_in_names_are_escaped() {
        assert_eq!(shown(Path::new("a\nb.mpg")), "a\\nb.mpg");
        assert_eq!(human_size(1_500_000_000), "1.5 GB");
        assert_eq!(human_duration(3723.0), "1:02:03");
    }
}
