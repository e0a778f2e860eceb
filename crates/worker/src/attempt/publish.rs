//! Publishing a verified file: the fenced permission, then the atomic rename, and the report.

use super::{Attempt, End};
use crate::attempt::plan::{mark_damaged, mark_signal, Check, Encode};
use crate::attempt::verify::Verified;
use crate::paths::Confined;
use crate::publish::TempOutput;
use std::time::Instant;
use videofarm_core::confine::fs;
use videofarm_core::report::Signal;
use videofarm_core::{Failure, SuccessReport};

impl Attempt {
    /// Put the verified `temp` in place as the job's output, if this attempt still holds the
    /// job, and say what was done.
    pub(crate) async fn publish_verified(
        &self,
        place: &Confined,
        work: &Encode,
        (temp, verified): (TempOutput, Verified),
        (warnings, signal): (Vec<String>, Option<Signal>),
        (input_size, started): (u64, Instant),
    ) -> End {
        let (check, note) = (&work.check, &work.note);
        let spec = &place.spec;
        let Verified {
            output_info,
            ssim,
            output_size,
            frame_md5s,
        } = verified;
        // Fencing: only the current lease holder may publish.
        if let Err(e) = self.queue.begin_publish(&self.lease).await {
            return if e.voids_lease() {
                End::Void(self.void_reason(e))
            } else {
                End::Failed(Failure::retryable(
                    format!("could not confirm the lease before publishing: {e}"),
                    "",
                ))
            };
        }
        if let (Check::Chunk { .. }, Some(chunk), false) = (check, &spec.chunk, warnings.is_empty())
        {
            // Before the chunk appears: its tape's join must find the damage it saw.
            mark_damaged(place, chunk, &warnings);
        }
        if let (Check::Chunk { .. }, Some(chunk), Some(signal)) = (check, &spec.chunk, &signal) {
            // Likewise the signal it measured, for the tape's report.
            mark_signal(place, chunk, signal);
        }
        // The tape's report: what this encode measured, or (at a join) what its chunks did.
        let tape = match check {
            Check::Whole => signal.as_ref(),
            Check::Join { .. } => work.signal.as_deref(),
            Check::Chunk { .. } => None,
        }
        .filter(|s| !s.is_empty())
        .map(|s| {
            let mut report = s.report_cut(work.treatment.and_then(|t| t.trim).as_ref());
            report.treatment = work.treatment.map(|t| t.words());
            Box::new(report)
        });
        if let Err(failure) = temp.publish(&place.output_io(), &spec.output, spec.overwrite) {
            return End::Failed(failure);
        }
        // Every rename, logged: how a soak proves that no output was written twice.
        tracing::info!(output = %spec.output.display(), "published");
        if let Some(md5s) = frame_md5s {
            // The master's per-frame MD5s beside it, whole or not at all.
            let mut name = place.name().to_owned();
            name.push(".framemd5");
            if let Err(e) = fs::write_atomically(&place.dir_io(), &name, md5s.as_bytes()) {
                tracing::warn!(error = %e, "could not write the master's per-frame MD5s");
            }
        }
        if let Check::Join { work, .. } = check {
            // The tape is in place: its chunks are no longer needed.
            if let Err(e) = work.remove() {
                tracing::warn!(error = %e, "could not remove the split work folder");
            }
        }
        End::Done(SuccessReport {
            input_size,
            output_size,
            duration_s: output_info.duration_s.unwrap_or(0.0),
            elapsed_s: match check {
                // A split tape took from its split to its join, across every worker.
                Check::Join { started_ms, .. } if *started_ms > 0 => {
                    let now_ms = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_millis() as i64)
                        .unwrap_or(0);
                    (now_ms - started_ms).max(0) as f64 / 1000.0
                }
                _ => started.elapsed().as_secs_f64(),
            },
            already_done: false,
            note: note.clone(),
            warnings,
            frames: 0,
            ssim,
            tape,
        })
    }
}
