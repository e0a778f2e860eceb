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

/// The model-based test (see `videofarm_conformance::model_run`) on a manual clock: a lost
/// lease is the clock moved past it, so nothing waits. `VIDEOFARM_MODEL_STEPS=10000` for the
/// long run; `VIDEOFARM_MODEL_SEED` replays one.
#[tokio::test]
async fn the_queue_agrees_with_the_lifecycle_model() {
    let (seed, steps) = videofarm_conformance::model_params(400);
    for round in 0..3u64 {
        let dir = tempfile::tempdir().expect("temp dir");
        let settings = videofarm_conformance::model_settings();
        let lease = settings.lease;
        let clock = Arc::new(videofarm_core::ManualClock::new(1_000_000));
        let queue =
            SqliteQueue::open_with_clock(&dir.path().join("queue.db"), settings, clock.clone())
                .expect("open queue");
        let fixture = Fixture {
            queue: Arc::new(queue),
            guard: Box::new(dir),
            expire: Box::new(move || {
                clock.advance_ms(lease.as_millis() as i64 + 1);
                Box::pin(async {})
            }),
        };
        let run = videofarm_conformance::ModelRun {
            seed: seed.wrapping_add(round),
            steps,
            patience: Duration::ZERO,
            expire: true,
        };
        if let Err(why) = videofarm_conformance::model_run(fixture, run).await {
            panic!("{why}");
        }
    }
}
