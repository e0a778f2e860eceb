//! `videofarm watch`: keep watching a drop folder and queue each new video once it has stopped
//! growing. Captures are written for hours, so a file is queued only after its size and
//! modification time have not changed for the settle time. The folder is polled, which works
//! the same on local disks and on network mounts (where inotify sees nothing).

use super::{enqueue_planned, shown, stop_on_signal};
use crate::broker::open_queue_waiting;
use crate::error::{ExitStatus, UsageError};
use crate::settings::{Batch, Settings, WatchSettings};
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::PathBuf;
use std::time::SystemTime;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use videofarm_core::plan::{self as scan, Planned};
use videofarm_core::Enqueued;

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
        told: HashSet::new(),
        gone: false,
    };
    let mut ticker = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(ExitStatus::Success),
            _ = ticker.tick() => {}
        }
        let ready = folder.ready();
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
    /// Problems already said (each once).
    told: HashSet<String>,
    gone: bool,
}

impl Folder {
    fn dir(&self) -> &std::path::Path {
        &self.inputs.paths[0]
    }

    /// Say a problem, once.
    fn tell(&mut self, problem: String) {
        if self.told.insert(problem.clone()) {
            warn(problem);
        }
    }

    /// The files that have stopped changing and are not queued yet. What one file does never
    /// stops the watch: a clash is said once and its files wait until it is gone.
    fn ready(&mut self) -> Vec<Planned> {
        if !self.dir().is_dir() {
            if !self.gone {
                warn(format!(
                    "{}: the watched folder is gone; waiting for it to come back",
                    shown(self.dir())
                ));
                self.gone = true;
            }
            return Vec::new();
        }
        if self.gone {
            warn(format!("{}: the watched folder is back", shown(self.dir())));
            self.gone = false;
        }
        let planned = match scan::plan_apart(&self.inputs.paths, &self.inputs.out, &self.extension)
        {
            Ok((planned, clashes)) => {
                for clash in clashes {
                    self.tell(format!(
                        "{clash}: both skipped while both are there; rename or move one"
                    ));
                }
                planned
            }
            Err(e) => {
                self.tell(format!("{e}; will look again"));
                return Vec::new();
            }
        };
        let now = Instant::now();
        let mut ready = Vec::new();
        for job in planned {
            let Ok((size, modified)) = videofarm_core::confine::fs::size_and_modified(&job.input)
            else {
                continue;
            };
            let look = Look { size, modified };
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
