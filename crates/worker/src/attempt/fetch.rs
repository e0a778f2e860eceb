//! An attempt on a job whose files this worker cannot see: its input fetched from the server
//! that holds it into the local cache, encoded and verified here like any job (into a work
//! folder of the cache), then sent back and published by the server. See [`crate::transfer`].
//!
//! Split tapes: a chunk is encoded here from the cached input (fetched once for every chunk
//! of the tape this worker takes), sent to the tape's work folder on the server, and its damage
//! or its failure told through the server. Planning a tape and joining its chunks happen in that
//! work folder, so a worker that sees the media does them; a tape none of those plans within
//! `transfer_split_wait_secs` is encoded whole here.

use crate::attempt::{Attempt, End};
use crate::paths::PathPolicy;
use crate::split;
use crate::transfer::{Fetched, Files, Report, TransferError};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use videofarm_core::{Failure, FailureKind, JobId, Progress};

/// How long a split tape this worker leaves for a worker that sees the media stays away.
const FOR_THE_MEDIA_WAIT: Duration = Duration::from_secs(5);

/// When this worker first left each split tape for a worker that sees the media.
fn left_since() -> std::sync::MutexGuard<'static, HashMap<JobId, Instant>> {
    static LEFT: OnceLock<Mutex<HashMap<JobId, Instant>>> = OnceLock::new();
    LEFT.get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

impl Attempt {
    pub(crate) async fn execute_remote(&mut self, files: Files, abort: &CancellationToken) -> End {
        let spec = self.lease.spec.clone();
        let id = self.lease.id.clone();
        let attempt = self.lease.attempt;
        tracing::info!(input = %spec.input.display(), server = %files.url, "fetching the input");
        let (reporter, progress) = tokio::sync::watch::channel(Progress::default());
        let (input, planned) = match self
            .under_heartbeat_with(progress.clone(), files.fetch_input(&id, Some(&reporter)))
            .await
        {
            Ok(Fetched::Input { input, planned }) => (input, planned),
            Ok(Fetched::OutputThere(why)) => return already_there(&spec, why),
            Err(e) => return failed(e),
        };
        let mut note = None;
        if spec.chunk.is_none() && !spec.split.is_off() {
            match self
                .split_here(&spec, input.path(), planned, files.plan_wait)
                .await
            {
                Err(end) => return end,
                Ok(why) => note = why,
            }
        }
        let work = files.cache.join("work").join(format!("{id}-{attempt}"));
        if let Err(e) = std::fs::create_dir_all(&work) {
            return End::Failed(Failure::retryable(format!("{}: {e}", work.display()), ""));
        }
        let mut local = spec.clone();
        local.input = input.path().to_owned();
        local.output = work.join(spec.output.file_name().unwrap_or_default());
        local.split = videofarm_core::Split::Off;
        let policy = PathPolicy {
            map: Vec::new(),
            roots: vec![files.cache.clone()],
        };
        let mut end = match policy.confine(&local) {
            Ok(place) => self.execute_in(&place, abort).await,
            Err(failure) => End::Failed(failure),
        };
        if let (End::Done(report), Some(note)) = (&mut end, note) {
            report.note = Some(note);
        }
        let end = match end {
            End::Done(report) => match self
                .send(&files, &spec, &local.output, (&reporter, progress))
                .await
            {
                Ok(()) => End::Done(report),
                Err(e) => failed(e),
            },
            End::Failed(failure) => {
                self.mark_chunk_failed(&files, &failure).await;
                End::Failed(failure)
            }
            other => other,
        };
        let _ = std::fs::remove_dir_all(&work);
        match (&end, &spec.chunk) {
            // Done with it (fetched again if it is needed again)...
            (End::Done(_), None) => input.remove(),
            // ...but the other chunks of the tape this worker takes read it too, and a failed
            // attempt may be tried again here: it stays until nobody read it for a while.
            _ => drop(input),
        }
        end
    }

    /// A split tape: `Ok` when this worker encodes it whole after all, with why when it should
    /// have been split (too short to split: no note; nobody that sees the media planned it in
    /// time: that); `Err` when it goes back for a worker that sees the media, which plans and
    /// joins it (its chunks may come here).
    async fn split_here(
        &self,
        spec: &videofarm_core::JobSpec,
        input: &std::path::Path,
        planned: bool,
        wait: Duration,
    ) -> Result<Option<String>, End> {
        if planned {
            left_since().remove(&self.lease.id);
        } else {
            let size = std::fs::metadata(input).map_or(0, |m| m.len());
            let big = size >= split::MIN_SPLIT_BYTES
                || !matches!(spec.split, videofarm_core::Split::Auto);
            // An input the probe cannot read fails in the encode, with ffmpeg's words.
            let Ok(info) = videofarm_ffmpeg::probe(&self.settings.tools, input).await else {
                return Ok(None);
            };
            let long = spec
                .split
                .chunk_secs(info.duration_s.unwrap_or(0.0))
                .is_some();
            if !(big && long) {
                return Ok(None);
            }
            let first = *left_since()
                .entry(self.lease.id.clone())
                .or_insert_with(Instant::now);
            if first.elapsed() >= wait {
                tracing::warn!(
                    "no worker that sees the media planned this split tape; encoding it whole here"
                );
                left_since().remove(&self.lease.id);
                return Ok(Some(format!(
                    "not split: no worker that sees the media planned it within {} s",
                    wait.as_secs()
                )));
            }
        }
        tracing::info!("a split tape is planned and joined where its media is; it goes back for a worker that sees it (its chunks may come here)");
        // Back after a wait with a random part: a queue that is polled would otherwise offer it
        // again to whoever left it, in step with the wait, every time.
        let jitter = Duration::from_millis(u64::from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .subsec_nanos()
                % 2000,
        ));
        Err(End::Deferred(
            FOR_THE_MEDIA_WAIT + jitter,
            Progress::default(),
        ))
    }

    /// Send the output (and a chunk's damage first, so its tape's join sees it).
    async fn send(
        &self,
        files: &Files,
        spec: &videofarm_core::JobSpec,
        local: &std::path::Path,
        (reporter, progress): (&Report, tokio::sync::watch::Receiver<Progress>),
    ) -> Result<(), TransferError> {
        let (id, attempt) = (&self.lease.id, self.lease.attempt);
        if let Some(chunk) = &spec.chunk {
            let warnings = local.with_file_name(split::warnings_name(chunk.index));
            if let Ok(text) = std::fs::read_to_string(&warnings) {
                files.mark(id, attempt, "warnings", &text).await?;
            }
        }
        tracing::info!(output = %spec.output.display(), "sending the output");
        let sent = self
            .under_heartbeat_with(
                progress,
                files.send_output(id, attempt, local, Some(reporter)),
            )
            .await;
        if sent.is_ok() {
            tracing::info!(output = %spec.output.display(), "published by the file server");
        }
        sent
    }

    /// A chunk that failed for good fails its tape: say so where the tape looks, through the
    /// server.
    async fn mark_chunk_failed(&self, files: &Files, failure: &Failure) {
        if self.lease.spec.chunk.is_none()
            || !(failure.kind == FailureKind::Permanent
                || self.lease.is_last_try(self.settings.max_attempts))
        {
            return;
        }
        let marked = files
            .mark(
                &self.lease.id,
                self.lease.attempt,
                "failed",
                &failure.reason,
            )
            .await;
        if let Err(e) = marked {
            tracing::warn!(error = ?e, "could not tell the tape that this chunk failed");
        }
    }
}

/// The output is in place already: done when it is this job's verified encode (the server
/// checked it), refused with the server's reason otherwise.
fn already_there(spec: &videofarm_core::JobSpec, why: String) -> End {
    if !why.is_empty() {
        return End::Failed(Failure::permanent(why));
    }
    tracing::info!(output = %spec.output.display(), "the output is in place already");
    End::Done(videofarm_core::SuccessReport {
        input_size: spec.input_size,
        output_size: 0,
        duration_s: 0.0,
        elapsed_s: 0.0,
        already_done: true,
        note: None,
        warnings: Vec::new(),
        frames: 0,
        ssim: None,
    })
}

/// A transfer's failure as the attempt's end. The server refusing an attempt that is not the
/// job's running one publishes nothing; the job goes back without counting an attempt (the
/// queue refuses that too when the lease really is over), so a delivery is never left held.
fn failed(e: TransferError) -> End {
    match e {
        TransferError::Stale(why) => {
            tracing::warn!(reason = %why, "the file server says this attempt is not the job's running one; nothing is published");
            End::Deferred(Duration::from_secs(2), Progress::default())
        }
        other => End::Failed(other.into_failure()),
    }
}
