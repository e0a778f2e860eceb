//! `videofarm enqueue`: only queue. With `--move-to`, each file is first moved (an atomic
//! rename) into that folder, as the old producer moved files from `to_encode` to `encoding`.

use super::{enqueue_batch, plan_batch, shown};
use crate::broker::open_queue;
use crate::error::{ExitStatus, UsageError};
use crate::settings::{EnqueueSettings, Settings};
use std::io::Write;
use std::path::{Path, PathBuf};
use videofarm_core::confine::fs;
use videofarm_core::plan::{self as scan, Planned};
use videofarm_core::Enqueued;

pub async fn enqueue(settings: &Settings, args: EnqueueSettings) -> anyhow::Result<ExitStatus> {
    let mut out = std::io::stdout();
    let mut batch = plan_batch(settings, &args.batch)?;
    if batch.len() > 1 && args.move_to.is_some() {
        return Err(
            UsageError::new("--move-to moves each file once: use it with one profile").into(),
        );
    }
    let (profile, mut planned) = batch.remove(0);
    let queue = open_queue(settings).await?;
    let mut status = ExitStatus::Success;
    if let Some(move_to) = &args.move_to {
        let move_to = scan::absolute(move_to).map_err(UsageError::from)?;
        fs::create_dir_all(&move_to)
            .map_err(|e| UsageError::new(format!("{}: {e}", shown(&move_to))))?;
        let roots: Vec<PathBuf> = args
            .batch
            .paths
            .iter()
            .filter_map(|p| scan::absolute(p).ok())
            .collect();
        let mut moved = Vec::with_capacity(planned.len());
        for job in planned {
            match move_into(&job.input, &roots, &move_to) {
                Ok(input) => moved.push(Planned { input, ..job }),
                Err(e) => {
                    note!("not queued: {e}");
                    status = ExitStatus::Failure;
                }
            }
        }
        planned = moved;
    }
    batch.insert(0, (profile, planned));
    let results = enqueue_batch(queue.as_ref(), &batch, &args.batch).await?;
    let mut queued = 0;
    for (spec, result) in &results {
        let input = &spec.input;
        match result {
            Enqueued::Queued(id) => {
                queued += 1;
                writeln!(out, "queued {id}: {}", shown(input))?;
            }
            Enqueued::Duplicate(id, state) => {
                writeln!(out, "already known as job {id} ({state}): {}", shown(input))?
            }
        }
    }
    note!("{queued} queued, {} already known", results.len() - queued);
    Ok(status)
}

/// Move `input` into `dest`, keeping its path relative to the root it was found under.
fn move_into(input: &Path, roots: &[PathBuf], dest: &Path) -> Result<PathBuf, String> {
    let relative = roots
        .iter()
        .filter(|root| root.is_dir())
        .find_map(|root| input.strip_prefix(root).ok())
        .map(Path::to_owned)
        .or_else(|| input.file_name().map(PathBuf::from))
        .ok_or_else(|| format!("{}: has no file name", shown(input)))?;
    let target = dest.join(relative);
    if target.exists() {
        return Err(format!(
            "{}: {} already exists; not moving over it",
            shown(input),
            shown(&target)
        ));
    }
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", shown(parent)))?;
    }
    fs::rename(input, &target).map_err(|e| {
        if e.raw_os_error() == Some(libc::EXDEV) {
            format!(
                "{}: cannot move it to {} atomically (another file system); put --move-to on the same disk",
                shown(input),
                shown(dest)
            )
        } else {
            format!("{}: cannot move it to {}: {e}", shown(input), shown(&target))
        }
    })?;
    Ok(target)
}
