//! An attempt on a job whose files this worker cannot see: its input fetched from the server
//! that holds it into the local cache, encoded and verified here like any job (into a work
//! folder of the cache), then sent back and published by the server. See [`crate::transfer`].

use crate::attempt::{Attempt, End};
use crate::paths::PathPolicy;
use crate::transfer::{Files, TransferError};
use tokio_util::sync::CancellationToken;
use videofarm_core::Progress;

/// How long a job this worker cannot take by transfer waits before it is offered again.
const NOT_BY_TRANSFER_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl Attempt {
    pub(crate) async fn execute_remote(&mut self, files: Files, abort: &CancellationToken) -> End {
        let spec = self.lease.spec.clone();
        if spec.chunk.is_some() {
            // A chunk reads and writes its tape's work folder on the shared storage.
            tracing::info!("a chunk of a split tape needs the shared storage; it goes back for a worker that sees it");
            return End::Deferred(NOT_BY_TRANSFER_WAIT, Progress::default());
        }
        let id = self.lease.id.clone();
        let attempt = self.lease.attempt;
        tracing::info!(input = %spec.input.display(), server = %files.url, "fetching the input");
        let (reporter, progress) = tokio::sync::watch::channel(Progress::default());
        let input = match self
            .under_heartbeat_with(progress.clone(), files.fetch_input(&id, Some(&reporter)))
            .await
        {
            Ok(input) => input,
            Err(e) => return failed(e),
        };
        let work = files.cache.join("work").join(format!("{id}-{attempt}"));
        if let Err(e) = std::fs::create_dir_all(&work) {
            return End::Failed(videofarm_core::Failure::retryable(
                format!("{}: {e}", work.display()),
                "",
            ));
        }
        let mut local = spec.clone();
        local.input = input.clone();
        local.output = work.join(spec.output.file_name().unwrap_or_default());
        // A tape is split only where its chunks can meet: on the shared storage.
        local.split = videofarm_core::Split::Off;
        let policy = PathPolicy {
            map: Vec::new(),
            roots: vec![files.cache.clone()],
        };
        let end = match policy.confine(&local) {
            Ok(place) => self.execute_in(&place, abort).await,
            Err(failure) => End::Failed(failure),
        };
        let end = match end {
            End::Done(report) => {
                tracing::info!(output = %spec.output.display(), "sending the output");
                match self
                    .under_heartbeat_with(
                        progress,
                        files.send_output(&id, attempt, &local.output, Some(&reporter)),
                    )
                    .await
                {
                    Ok(()) => {
                        tracing::info!(output = %spec.output.display(), "published by the file server");
                        End::Done(report)
                    }
                    Err(e) => failed(e),
                }
            }
            other => other,
        };
        // Nothing is left in the cache: the input is fetched again if it is needed again.
        let _ = std::fs::remove_dir_all(&work);
        if matches!(end, End::Done(_)) {
            let _ = std::fs::remove_file(&input);
        }
        end
    }
}

fn failed(e: TransferError) -> End {
    match e {
        TransferError::Stale(why) => End::Void(why),
        other => End::Failed(other.into_failure()),
    }
}
