//! `videofarm watch`: keep watching a drop folder and queue each new video once it has stopped
//! growing. Captures are written for hours, so a file is queued only after its size and
//! modification time have not changed for the settle time. The folder is polled, which works
//! the same on local disks and on network mounts (where inotify sees nothing).

use super::{enqueue_planned, shown, stop_on_signal};
use crate::broker::open_queue_waiting;
use crate::error::{ExitStatus, UsageError};
use crate::settings::{Batch, Settings, WatchSettings};
use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::PathBuf;
use std::time::SystemTime;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use videofarm_core::plan::{self as scan, Planned};
use videofarm_core::watching::WatchReport;
use videofarm_core::{Clock, Enqueued, Queue, SystemClock};

/// What a file looked like when last seen.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Look {
    size: u64,
    modified: Option<SystemTime>,
}

pub async fn watch(settings: &Settings, args: WatchSettings) -> anyhow::Result<ExitStatus> {
    let profile = settings.profile(args.batch.profile.as_deref())?.clone();
    if !args.dir().is_dir() {
        return Err(UsageError::new(format!("{}: not a folder", shown(args.dir()))).into());
    }
    let (settle, interval) = (args.settle, args.interval);
    let stop = CancellationToken::new();
    stop_on_signal(stop.clone());
    // A broker not up yet is waited for (said once); so is one that restarts later.
    let Some(queue) = open_queue_waiting(settings, &stop).await? else {
        return Ok(ExitStatus::Success);
    };
    warn(format!(
        "watching {} (a file is queued {}s after it stops changing); stop with Ctrl-C",
        shown(args.dir()),
        settle.as_secs_f64()
    ));
    let mut folder = Folder {
        inputs: args.batch,
        extension: profile.extension.clone(),
        settle,
        seen: HashMap::new(),
        problems: BTreeSet::new(),
        reported: None,
    };
    let mut ticker = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = stop.cancelled() => {
                // Gone, it has no problems: the list it leaves must not outlive it.
                folder.problems.clear();
                folder.report(queue.as_ref()).await;
                return Ok(ExitStatus::Success);
            }
            _ = ticker.tick() => {}
        }
        let ready = folder.ready();
        folder.report(queue.as_ref()).await;
        if ready.is_empty() {
            continue;
        }
        match enqueue_planned(queue.as_ref(), &ready, &profile, &folder.inputs).await {
            Ok(results) => {
                for (job, (_, result)) in ready.iter().zip(results) {
                    if let Enqueued::Queued(id) = result {
                        say(format!("queued {id}: {}", shown(&job.input)));
                    }
                }
            }
            Err(e) => {
                // The queue is away (broker restarting): these are tried again.
                warn(format!("could not queue: {e:#}; will try again"));
                folder.forget(&ready);
            }
        }
    }
}

// Output may go to a pipe that closes (`watch ... | head -1`): never let a write stop the
// watch, which only a signal does.
fn say(line: String) {
    let _ = writeln!(std::io::stdout(), "{line}");
}

fn warn(line: String) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// The watched folder, as last seen.
struct Folder {
    inputs: Batch,
    extension: String,
    settle: std::time::Duration,
    /// Path -> (last look, when it last changed, queued already for this look).
    seen: HashMap<PathBuf, (Look, Instant, bool)>,
    /// What it cannot do as of its last look, each said once while it lasts.
    problems: BTreeSet<String>,
    /// The list the queue last kept (`None`: none kept yet by this process).
    reported: Option<BTreeSet<String>>,
}

impl Folder {
    fn dir(&self) -> &std::path::Path {
        &self.inputs.paths[0]
    }

    /// Keep the problems of this look; say each new one (a problem is said once while it
    /// lasts) and the end of the folder's absence.
    fn see(&mut self, problems: BTreeSet<String>) {
        for problem in problems.difference(&self.problems) {
            warn(problem.clone());
        }
        if self.problems.contains(&self.gone_problem()) && !problems.contains(&self.gone_problem())
        {
            warn(format!("{}: the watched folder is back", shown(self.dir())));
        }
        self.problems = problems;
    }

    fn gone_problem(&self) -> String {
        format!(
            "{}: the watched folder is gone; waiting for it to come back",
            shown(self.dir())
        )
    }

    /// Tell the queue the problems if they changed since it last kept them, so `status` and
    /// the page show them. A queue that is away hears of them at a later look.
    async fn report(&mut self, queue: &dyn Queue) {
        if self.reported.as_ref() == Some(&self.problems) {
            return;
        }
        let report = WatchReport::new(
            &crate::broker::hostname(),
            self.dir().to_owned(),
            self.problems.iter().cloned().collect(),
            SystemClock.now_ms(),
        );
        match queue.report_watch(&report).await {
            Ok(()) => self.reported = Some(self.problems.clone()),
            Err(e) => tracing::debug!(error = %e, "could not keep the watch's problems"),
        }
    }

    /// The files that have stopped changing and are not queued yet. What one file does never
    /// stops the watch: a clash or a file it cannot read is said once and waits until it is
    /// gone, and every other file is queued.
    fn ready(&mut self) -> Vec<Planned> {
        let mut problems = BTreeSet::new();
        if !self.dir().is_dir() {
            problems.insert(self.gone_problem());
            self.see(problems);
            return Vec::new();
        }
        let planned = match scan::plan_apart(&self.inputs.paths, &self.inputs.out, &self.extension)
        {
            Ok((planned, clashes)) => {
                problems.extend(clashes.into_iter().map(|clash| {
                    format!("{clash}: both skipped while both are there; rename or move one")
                }));
                planned
            }
            Err(e) => {
                problems.insert(format!("{e}; will look again"));
                self.see(problems);
                return Vec::new();
            }
        };
        let now = Instant::now();
        let mut ready = Vec::new();
        for job in planned {
            let look = match videofarm_core::confine::fs::size_and_modified(&job.input) {
                Ok((size, modified)) => Look { size, modified },
                Err(e) => {
                    problems.insert(format!(
                        "{}: cannot be read ({e}); skipped until it can be",
                        shown(&job.input)
                    ));
                    continue;
                }
            };
            let entry = self
                .seen
                .entry(job.input.clone())
                .or_insert((look, now, false));
            if entry.0 != look {
                *entry = (look, now, false);
            }
            if !entry.2 && look.size > 0 && now.duration_since(entry.1) >= self.settle {
                entry.2 = true;
                ready.push(job);
            }
        }
        self.see(problems);
        ready
    }

    /// Files that could not be queued: looked at again next time.
    fn forget(&mut self, jobs: &[Planned]) {
        for job in jobs {
            if let Some(entry) = self.seen.get_mut(&job.input) {
                entry.2 = false;
            }
        }
    }
}
