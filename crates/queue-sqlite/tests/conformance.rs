//! The shared queue conformance suite, on a real SQLite file.

use std::sync::Arc;
use std::time::Duration;
use videofarm_conformance::{conformance_tests, Fixture};
use videofarm_core::QueueSettings;
use videofarm_queue_sqlite::SqliteQueue;

async fn open(settings: QueueSettings) -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let lease = settings.lease;
    let queue = SqliteQueue::open(&dir.path().join("queue.db"), settings).expect("open queue");
    Fixture {
        queue: Arc::new(queue),
        guard: Box::new(dir),
        expire: Box::new(move || Box::pin(tokio::time::sleep(lease + Duration::from_millis(100)))),
    }
}

conformance_tests!(open);

#[tokio::test]
async fn duplicates_are_not_queued_twice_but_force_requeues() {
    let fixture = open(videofarm_conformance::fast_settings()).await;
    videofarm_conformance::duplicates_are_not_queued_twice_but_force_requeues(fixture).await;
}
