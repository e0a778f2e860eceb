//! The shared queue conformance suite, on a real SQLite file.

use std::sync::Arc;
use videofarm_conformance::{conformance_tests, Fixture};
use videofarm_core::QueueSettings;
use videofarm_queue_sqlite::SqliteQueue;

async fn open(settings: QueueSettings) -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let queue = SqliteQueue::open(&dir.path().join("queue.db"), settings).expect("open queue");
    Fixture {
        queue: Arc::new(queue),
        guard: Box::new(dir),
    }
}

conformance_tests!(open);
