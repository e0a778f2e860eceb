//! The first steps of an attempt: the job's profile and input checked, an output already in
//! place recognised as done, and the output's lock taken.

use super::{Attempt, End};
use crate::checks::{check_input, check_not_self};
use crate::paths::Confined;
use crate::publish::OutputLock;
use crate::WorkerSettings;
use std::time::Instant;
use videofarm_core::confine::fs;
use videofarm_core::{Failure, Profile, Progress, SuccessReport};
use videofarm_ffmpeg::{probe_output, verify_output};

/// The profile and the input's size, once the job's inputs are checked (nothing read yet).
pub(super) fn prepare<'a>(
    settings: &'a WorkerSettings,
    place: &Confined,
) -> Result<(&'a Profile, u64), Failure> {
    let spec = &place.spec;
    let profile = settings
        .profiles
        .get(&spec.profile)
        .map_err(|e| Failure::permanent(format!("{}: {e}", spec.input.display())))?;
    let size = check_input(&spec.input, place.input_file())?;
    check_not_self(place.input_file(), &place.output_io(), &spec.output)?;
    Ok((profile, size))
}

impl Attempt {
    /// A verified output already in place means the work is done (a re-run, or an earlier
    /// attempt that published but could not acknowledge); `None` when there is work to do.
    pub(crate) async fn already_done(
        &self,
        place: &Confined,
        profile: &Profile,
        input_size: u64,
        started: Instant,
    ) -> Option<End> {
        let spec = &place.spec;
        let output_io = place.output_io();
        if spec.overwrite {
            return None;
        }
        let kind = fs::kind(&output_io).ok()?;
        if kind == fs::Kind::Link {
            return Some(End::Failed(exists_failure(
                &spec.output,
                "it is a symbolic link, which is never followed",
            )));
        }
        let done = |duration_s: f64| {
            End::Done(SuccessReport {
                input_size,
                output_size: fs::file_size(&output_io).unwrap_or(0),
                duration_s,
                elapsed_s: started.elapsed().as_secs_f64(),
                already_done: true,
                note: None,
                warnings: Vec::new(),
                frames: 0,
                ssim: None,
                tape: None,
            })
        };
        if spec.chunk.is_some() {
            // A chunk already published (it is only published once verified).
            return Some(done(0.0));
        }
        let input_info = match self.probe_input(&place.input_io(), &spec.input).await {
            Ok(info) => info,
            Err(failure) => return Some(End::Failed(failure)),
        };
        Some(
            match probe_output(&self.settings.tools, &output_io, &profile.extension).await {
                Ok(existing) => match verify_output(profile, &input_info, &existing) {
                    Ok(()) => done(existing.duration_s.unwrap_or(0.0)),
                    Err(why) => End::Failed(exists_failure(&spec.output, &why)),
                },
                Err(e) => End::Failed(exists_failure(&spec.output, &e.to_string())),
            },
        )
    }

    /// One attempt at a time on one output: a copy of this job queued twice (a broker does not
    /// deduplicate) waits for this one, then finds its output done. A holder that stopped
    /// marking the lock alive (a paused or frozen worker, whose lease the queue has taken back)
    /// does not hold anyone up.
    pub(crate) fn lock_output(&self, place: &Confined) -> Result<OutputLock, End> {
        let silent_after = self.settings.heartbeat * 8;
        match OutputLock::try_take(
            &place.dir_io(),
            place.name(),
            &place.spec.output,
            silent_after,
        ) {
            Ok(Some(lock)) => {
                if let Ok(mut slot) = self.lock.lock() {
                    *slot = lock.handle();
                }
                Ok(lock)
            }
            Ok(None) => {
                tracing::info!("another attempt is working on this output; waiting for it");
                Err(End::Deferred(
                    self.settings.heartbeat * 2,
                    Progress::default(),
                ))
            }
            Err(failure) => Err(End::Failed(failure)),
        }
    }
}

fn exists_failure(output: &std::path::Path, why: &str) -> Failure {
    Failure::permanent(format!(
        "{}: the output already exists and is not a verified encode of this input ({why}); use --overwrite to replace it",
        output.display()
    ))
}
