//! `videofarm jobs`: one row per job.

use super::shown;
use crate::broker::open_queue;
use crate::error::ExitStatus;
use crate::settings::{JobsSettings, Settings};
use std::io::Write;

pub async fn jobs(settings: &Settings, args: JobsSettings) -> anyhow::Result<ExitStatus> {
    let mut out = std::io::stdout();
    let queue = open_queue(settings).await?;
    let mut records = queue.jobs(&args.filter).await?;
    // A waiting job no live worker can run says so.
    queue.explain_waiting(&mut records).await?;
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&records)?)?;
        return Ok(ExitStatus::Success);
    }
    writeln!(
        out,
        "{:>6}  {:<10}  {:<8}  {:>3}  INPUT -> OUTPUT",
        "ID", "STATE", "PROFILE", "TRY"
    )?;
    for job in &records {
        writeln!(
            out,
            "{:>6}  {:<10}  {:<8}  {:>3}  {} -> {}",
            job.id.0,
            job.state.as_str(),
            job.spec.profile,
            job.attempts,
            shown(&job.spec.input),
            shown(&job.spec.output)
        )?;
        if let Some(why) = &job.waiting_for {
            writeln!(out, "        {why}")?;
        }
        if let Some(tape) = job.result.as_ref().and_then(|r| r.tape.as_deref()) {
            writeln!(out, "        tape: {}", tape.verdict)?;
        }
        for warning in job.result.iter().flat_map(|r| &r.warnings) {
            writeln!(out, "        damaged: {warning}")?;
        }
        if let Some(error) = job
            .error
            .as_deref()
            .filter(|_| job.state != videofarm_core::JobState::Succeeded)
        {
            writeln!(out, "        error: {error}")?;
            if let Some(tail) = job.stderr_tail.as_deref().filter(|t| !t.is_empty()) {
                for line in tail
                    .lines()
                    .rev()
                    .take(5)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                {
                    writeln!(out, "        | {line}")?;
                }
            }
        }
    }
    Ok(ExitStatus::Success)
}
