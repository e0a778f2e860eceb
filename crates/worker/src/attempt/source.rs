//! Where an attempt's files are: a strategy chosen per job, under one pipeline. `Local`: the
//! input and the output's folder seen here, confined under the roots. `Remote` (`fetch`): the
//! input fetched from the file server into the cache, the output sent back once verified, for
//! a job this worker cannot see (or every job, with `transfer = "always"`). The pipeline runs
//! the same steps on either's place; each says what is left to do with how it ended.

use super::fetch::Remote;
use super::plan::mark_failed;
use super::{Attempt, End, TAPE_CANCELLED};
use crate::paths::Confined;
use crate::transfer::TransferMode;
use videofarm_core::FailureKind;

/// One per attempt, so each variant is boxed: the size of neither matters.
pub(crate) enum Source {
    Local(Box<Confined>),
    Remote(Box<Remote>),
}

impl Source {
    /// The strategy for `attempt`'s job, with its files ready; or the attempt's end. Every
    /// read and write of the attempt goes through the place opened and checked here.
    pub(crate) async fn open(attempt: &Attempt) -> Result<Source, End> {
        let files = attempt.settings.files.clone().filter(|f| f.fetches());
        match attempt.settings.paths.confine(&attempt.lease.spec) {
            Ok(place)
                if files
                    .as_ref()
                    .is_none_or(|f| f.mode != TransferMode::Always) =>
            {
                Ok(Source::Local(Box::new(place)))
            }
            Err(failure) if files.is_none() => Err(End::Failed(failure)),
            _ => Remote::fetch(attempt, files.expect("transfer is on"))
                .await
                .map(|remote| Source::Remote(Box::new(remote))),
        }
    }

    /// Where the pipeline reads and writes.
    pub(crate) fn place(&self) -> &Confined {
        match self {
            Source::Local(place) => place,
            Source::Remote(remote) => remote.place(),
        }
    }

    /// After the pipeline: what this strategy still does with how the attempt ended.
    pub(crate) async fn deliver(self, attempt: &Attempt, end: End) -> End {
        match self {
            Source::Local(place) => {
                local_end(attempt, &place, &end);
                end
            }
            Source::Remote(remote) => remote.deliver(attempt, end).await,
        }
    }
}

/// A chunk seen here: its tape cancelled, the chunks' work folder goes (whoever sees it first);
/// failed for good, it says so where its tape looks.
fn local_end(attempt: &Attempt, place: &Confined, end: &End) {
    let Some(chunk) = &place.spec.chunk else {
        return;
    };
    match end {
        End::Void(reason) if reason == TAPE_CANCELLED => place.remove_dir(),
        End::Failed(failure)
            if failure.kind == FailureKind::Permanent
                || attempt.lease.is_last_try(attempt.settings.max_attempts) =>
        {
            mark_failed(place, chunk, &failure.reason)
        }
        _ => {}
    }
}
