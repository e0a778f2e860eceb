//! `videofarm report ID`: what a tape's signal says (its faults with their times, its field
//! order, its levels), measured while it was encoded.

use crate::broker::open_queue;
use crate::error::{ExitStatus, UsageError};
use crate::settings::{ReportSettings, Settings};
use std::io::Write;
use videofarm_core::report::{clock, TapeReport};
use videofarm_core::{JobFilter, JobState};

pub async fn report(settings: &Settings, args: ReportSettings) -> anyhow::Result<ExitStatus> {
    let queue = open_queue(settings).await?;
    let records = queue
        .jobs(&JobFilter {
            ids: Some(vec![args.id.clone()]),
            chunks: true,
            ..JobFilter::default()
        })
        .await?;
    let Some(job) = records.into_iter().next() else {
        return Err(UsageError::new(format!("no job {} (see `videofarm jobs`)", args.id)).into());
    };
    let tape = job.result.as_ref().and_then(|r| r.tape.as_deref());
    let Some(tape) = tape else {
        let why = match job.state {
            JobState::Succeeded => "it was not measured (an output already in place, or a profile with `report = false`)",
            _ => "it has not been encoded yet",
        };
        note!("job {}: no tape report: {why}", args.id);
        return Ok(ExitStatus::Failure);
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(tape)?)?;
    } else {
        write_text(&mut out, &super::shown(&job.spec.input), tape)?;
    }
    Ok(ExitStatus::Success)
}

/// The report in words, for a person.
fn write_text(out: &mut impl Write, input: &str, tape: &TapeReport) -> std::io::Result<()> {
    writeln!(out, "{input}")?;
    writeln!(out, "  verdict:  {}", tape.verdict)?;
    writeln!(
        out,
        "  length:   {} ({} frames)",
        clock(tape.duration_s),
        tape.frames
    )?;
    let f = &tape.fields;
    writeln!(
        out,
        "  fields:   {} (idet: {} top first, {} bottom first, {} progressive)",
        f.words().unwrap_or("not measured"),
        f.top,
        f.bottom,
        f.progressive
    )?;
    if let Some(treatment) = &tape.treatment {
        writeln!(out, "  treated:  {treatment}")?;
    }
    writeln!(
        out,
        "  levels:   luma clipped in {:.1} % of frames",
        tape.clipped_share * 100.0
    )?;
    writeln!(
        out,
        "  black {:.1} s, frozen {:.1} s, audio silent {:.1} s{}, frames lost {}",
        tape.black_s,
        tape.frozen_s,
        tape.silent_s,
        if tape.audio { "" } else { " (no audio)" },
        tape.lost_frames
    )?;
    if tape.events.is_empty() {
        writeln!(out, "  no faults found")?;
    }
    for event in &tape.events {
        writeln!(out, "  {}  {}", clock(event.start_s), event.text)?;
    }
    if tape.more_events > 0 {
        writeln!(out, "  ... and {} more", tape.more_events)?;
    }
    Ok(())
}
