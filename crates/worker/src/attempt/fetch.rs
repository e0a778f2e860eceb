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
use crate::paths::{Confined, PathPolicy};
use crate::split;
use crate::transfer::{Fetched, Files, Report, TransferError};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};
use videofarm_core::files_api::{Committed, MarkKind};
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

/// A job's files moved through the file server: the input in the cache, and where this worker
/// encodes it (a work folder of the cache, confined like any job's place).
pub(crate) struct Remote {
    files: Files,
    /// The job as the server knows it.
    spec: videofarm_core::JobSpec,
    input: crate::cache::Held,
    work: std::path::PathBuf,
    /// The encoded output in the work folder.
    output: std::path::PathBuf,
    place: Confined,
    /// Why a long tape was encoded whole here, for the report.
    note: Option<String>,
    reporter: Report,
    progress: tokio::sync::watch::Receiver<Progress>,
}

impl Remote {
    /// Fetch `attempt`'s input into the cache and make the place it is encoded in; or the
    /// attempt's end (the output is there already, the tape goes back for a worker that sees
    /// the media, the fetch failed).
    pub(crate) async fn fetch(attempt: &Attempt, files: Files) -> Result<Remote, End> {
        let spec = attempt.lease.spec.clone();
        let (id, number) = (attempt.lease.id.clone(), attempt.lease.attempt);
        tracing::info!(input = %spec.input.display(), server = %files.url, "fetching the input");
        let (reporter, progress) = tokio::sync::watch::channel(Progress::default());
        let (input, planned) = match attempt
            .under_heartbeat_with(progress.clone(), files.fetch_input(&id, Some(&reporter)))
            .await
        {
            Ok(Fetched::Input { input, planned }) => (input, planned),
            Ok(Fetched::OutputThere(why)) => return Err(already_there(&spec, why)),
            Err(e) => return Err(failed(e)),
        };
        let mut note = None;
        if spec.chunk.is_none() && !spec.split.is_off() {
            note = split_here(attempt, &spec, input.path(), planned, files.plan_wait).await?;
        }
        let work = files.cache.join("work").join(format!("{id}-{number}"));
        if let Err(e) = std::fs::create_dir_all(&work) {
            return Err(End::Failed(Failure::retryable(
                format!("{}: {e}", work.display()),
                "",
            )));
        }
        let mut local = spec.clone();
        local.input = input.path().to_owned();
        local.output = work.join(spec.output.file_name().unwrap_or_default());
        local.split = videofarm_core::Split::Off;
        let policy = PathPolicy {
            map: Vec::new(),
            roots: vec![files.cache.clone()],
        };
        let place = match policy.confine(&local) {
            Ok(place) => place,
            Err(failure) => {
                let _ = std::fs::remove_dir_all(&work);
                return Err(End::Failed(failure));
            }
        };
        Ok(Remote {
            files,
            spec,
            input,
            work,
            output: local.output,
            place,
            note,
            reporter,
            progress,
        })
    }

    /// Where the pipeline reads and writes.
    pub(crate) fn place(&self) -> &Confined {
        &self.place
    }

    /// After the pipeline: a verified output is sent back for the server to publish, a chunk
    /// that failed for good says so through the server; the work folder goes.
    pub(crate) async fn deliver(self, attempt: &Attempt, end: End) -> End {
        let Remote {
            files,
            spec,
            input,
            work,
            output,
            place,
            note,
            reporter,
            progress,
        } = self;
        let mut end = end;
        if let (End::Done(report), Some(note)) = (&mut end, note) {
            report.note = Some(note);
        }
        let end = match end {
            End::Done(report) => {
                match send(attempt, &files, &spec, &output, (&reporter, progress)).await {
                    // The record describes the file the server published, as it measured it.
                    Ok(Committed {
                        file: Some(file),
                        already,
                        ..
                    }) => End::Done(videofarm_core::SuccessReport {
                        output_size: file.size,
                        duration_s: file.duration_s,
                        frames: file.frames,
                        already_done: report.already_done || already,
                        ..report
                    }),
                    Ok(_) => End::Done(report),
                    Err(e) => failed(e),
                }
            }
            End::Failed(failure) => {
                mark_chunk_failed(attempt, &files, &failure).await;
                End::Failed(failure)
            }
            other => other,
        };
        drop(place);
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
}

/// A split tape: `Ok` when this worker encodes it whole after all, with why when it should
/// have been split (too short to split: no note; nobody that sees the media planned it in
/// time: that); `Err` when it goes back for a worker that sees the media, which plans and
/// joins it (its chunks may come here).
async fn split_here(
    attempt: &Attempt,
    spec: &videofarm_core::JobSpec,
    input: &std::path::Path,
    planned: bool,
    wait: Duration,
) -> Result<Option<String>, End> {
    if planned {
        left_since().remove(&attempt.lease.id);
    } else {
        let size = std::fs::metadata(input).map_or(0, |m| m.len());
        let big =
            size >= split::MIN_SPLIT_BYTES || !matches!(spec.split, videofarm_core::Split::Auto);
        // An input the probe cannot read fails in the encode, with ffmpeg's words.
        let Ok(info) = videofarm_ffmpeg::probe(&attempt.settings.tools, input).await else {
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
            .entry(attempt.lease.id.clone())
            .or_insert_with(Instant::now);
        if first.elapsed() >= wait {
            tracing::warn!(
                "no worker that sees the media planned this split tape; encoding it whole here"
            );
            left_since().remove(&attempt.lease.id);
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
    attempt: &Attempt,
    files: &Files,
    spec: &videofarm_core::JobSpec,
    local: &std::path::Path,
    (reporter, progress): (&Report, tokio::sync::watch::Receiver<Progress>),
) -> Result<Committed, TransferError> {
    let (id, number) = (&attempt.lease.id, attempt.lease.attempt);
    if let Some(chunk) = &spec.chunk {
        let warnings = local.with_file_name(split::warnings_name(chunk.index));
        if let Ok(text) = std::fs::read_to_string(&warnings) {
            files.mark(id, number, MarkKind::Warnings, &text).await?;
        }
        let signal = local.with_file_name(split::signal_name(chunk.index));
        if let Ok(text) = std::fs::read_to_string(&signal) {
            files.mark(id, number, MarkKind::Signal, &text).await?;
        }
    }
    tracing::info!(output = %spec.output.display(), "sending the output");
    let sent = attempt
        .under_heartbeat_with(
            progress,
            files.send_output(id, number, local, Some(reporter)),
        )
        .await;
    if sent.is_ok() {
        tracing::info!(output = %spec.output.display(), "published by the file server");
    }
    sent
}

/// A chunk that failed for good fails its tape: say so where the tape looks, through the
/// server.
async fn mark_chunk_failed(attempt: &Attempt, files: &Files, failure: &Failure) {
    if attempt.lease.spec.chunk.is_none()
        || !(failure.kind == FailureKind::Permanent
            || attempt.lease.is_last_try(attempt.settings.max_attempts))
    {
        return;
    }
    let marked = files
        .mark(
            &attempt.lease.id,
            attempt.lease.attempt,
            MarkKind::Failed,
            &failure.reason,
        )
        .await;
    if let Err(e) = marked {
        tracing::warn!(error = ?e, "could not tell the tape that this chunk failed");
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
        tape: None,
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
