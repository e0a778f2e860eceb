//! `videofarm inspect`: the live workers and what each is doing, like `celery inspect active`.

use super::{human_duration, shown};
use crate::broker::open_queue;
use crate::error::ExitStatus;
use crate::settings::{Output, Settings};
use std::io::Write;

pub async fn inspect(settings: &Settings, args: Output) -> anyhow::Result<ExitStatus> {
    let mut out = std::io::stdout();
    let queue = open_queue(settings).await?;
    let workers = queue.workers().await?;
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&workers)?)?;
        return Ok(ExitStatus::Success);
    }
    if workers.is_empty() {
        writeln!(out, "no live workers")?;
    }
    for worker in &workers {
        writeln!(
            out,
            "{} (pid {} on {}, since {}): {}/{} busy",
            worker.name,
            worker.pid,
            worker.host,
            worker.started,
            worker.active.len(),
            worker.concurrency
        )?;
        if let Some(profiles) = &worker.profiles {
            writeln!(out, "  can run: {}", profiles.join(", "))?;
        }
        if !worker.tags.is_empty() {
            writeln!(out, "  tags: {}", worker.tags.join(", "))?;
        }
        for job in &worker.active {
            if let Some(t) = &job.transfer {
                writeln!(
                    out,
                    "  job {}  {:>5.1}%  {}  {} [{}]",
                    job.id,
                    job.progress * 100.0,
                    super::describe_transfer(t, job.eta_s),
                    shown(&job.input),
                    job.profile
                )?;
                continue;
            }
            writeln!(
                out,
                "  job {}  {:>5.1}%  {:.0} fps  {:.2}x  eta {}  {} [{}]",
                job.id,
                job.progress * 100.0,
                job.fps,
                job.speed,
                job.eta_s.map(human_duration).unwrap_or_else(|| "-".into()),
                shown(&job.input),
                job.profile
            )?;
        }
    }
    Ok(ExitStatus::Success)
}
