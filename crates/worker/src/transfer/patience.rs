//! How long a transfer keeps trying while the file server is away or the copy keeps breaking
//! off.

use std::time::Duration;

/// How long a transfer waits before its next try, at first and at most.
const FIRST_WAIT: Duration = Duration::from_millis(500);
const LONGEST_WAIT: Duration = Duration::from_secs(5);

/// How long a transfer keeps trying while the server does not answer or the copy keeps
/// breaking off, counted from the last time it moved forward.
pub(super) struct Patience {
    limit: Duration,
    since: std::time::Instant,
    wait: Duration,
}

impl Patience {
    pub(super) fn new(limit: Duration) -> Self {
        Self {
            limit,
            since: std::time::Instant::now(),
            wait: FIRST_WAIT,
        }
    }

    /// The transfer moved forward: the clock starts again.
    pub(super) fn progressed(&mut self) {
        self.since = std::time::Instant::now();
        self.wait = FIRST_WAIT;
    }

    /// Wait before the next try; false when the trouble has lasted the limit.
    pub(super) async fn wait(&mut self) -> bool {
        if self.since.elapsed() >= self.limit {
            return false;
        }
        tokio::time::sleep(self.wait).await;
        self.wait = (self.wait * 2).min(LONGEST_WAIT);
        true
    }

    pub(super) fn gave_up(&self) -> String {
        format!("for {} s", self.since.elapsed().as_secs())
    }
}
