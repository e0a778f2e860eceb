//! Workers lost with their jobs: what the records show before anyone takes the job again, what
//! counts as a lost attempt, and cancels heard after a reconnect. Each case is a sequence the
//! model run found failing on RabbitMQ.

use crate::{spec, worker, Fixture, WAIT};
use videofarm_core::{AttemptOutcome, JobFilter, JobState, QueueError, WorkerInfo};

fn holding(n: u32) -> WorkerInfo {
    WorkerInfo {
        concurrency: n,
        ..worker("w")
    }
}

/// A job whose worker is gone shows queued (its attempt lost) without waiting for another
/// worker to receive it: never "running" with no live holder for longer than a lease (before,
/// on RabbitMQ it stayed running until some worker was free to take it again, hours with
/// every worker busy on a long tape).
pub async fn a_lost_attempt_shows_before_the_job_is_taken_again(f: Fixture) {
    let q = f.queue.as_ref();
    let id = q.enqueue(spec("a"), false).await.unwrap().id().clone();
    q.lease(&worker("w"), WAIT).await.unwrap().expect("the job");
    (f.expire)().await;
    let records = q
        .jobs(&JobFilter {
            ids: Some(vec![id.clone()]),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(records[0].state, JobState::Queued, "{:?}", records[0]);
    let history = q.history(&id).await.unwrap();
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(history[0].outcome, AttemptOutcome::Lost);
    assert_eq!(q.counts().await.unwrap().running, 0);
}

/// A job a worker received ahead of its leases (RabbitMQ's prefetch) and never began loses no
/// attempt when that worker goes (before, it came back counted lost, and a job that never ran
/// could fail as "lost too often").
pub async fn a_job_never_begun_loses_no_attempt_with_its_worker(f: Fixture) {
    let q = f.queue.as_ref();
    let w = holding(3);
    let a = q.enqueue(spec("a"), false).await.unwrap().id().clone();
    let b = q.enqueue(spec("b"), false).await.unwrap().id().clone();
    let first = q.lease(&w, WAIT).await.unwrap().expect("a job");
    let (begun, waiting) = if first.id == a { (a, b) } else { (b, a) };
    (f.expire)().await;
    for _ in 0..2 {
        let lease = q.lease(&w, WAIT).await.unwrap().expect("both come back");
        let expected = if lease.id == begun { (2, 1) } else { (1, 0) };
        assert_eq!(
            (lease.attempt, lease.lost),
            expected,
            "{} ({} was begun, {waiting} was not)",
            lease.id,
            begun
        );
    }
}

/// A worker that lost its connection and took a job on the next hears a cancel of that job
/// (before, on RabbitMQ, it answered cancels only once it registered again, so a job cancelled
/// in between finished as if nothing happened).
pub async fn a_cancel_is_heard_by_a_worker_that_reconnected(f: Fixture) {
    let q = f.queue.as_ref();
    let w = holding(2);
    q.register_worker(&w).await.unwrap();
    q.enqueue(spec("a"), false).await.unwrap();
    q.lease(&w, WAIT).await.unwrap().expect("a");
    (f.expire)().await;
    let b = q.enqueue(spec("b"), false).await.unwrap().id().clone();
    let lease = loop {
        let lease = q.lease(&w, WAIT).await.unwrap().expect("a and b come");
        if lease.id == b {
            break lease;
        }
    };
    q.cancel(std::slice::from_ref(&b)).await.unwrap();
    assert!(matches!(
        q.heartbeat(&lease, None).await,
        Err(QueueError::Cancelled(_))
    ));
}

/// A job lost with its worker once too often fails; queued again, it runs once, and the
/// message of its old life is not brought back (found by the long model run: the old message,
/// redelivered after the job was queued anew, was taken for one never begun, put back, and
/// run again after the new one had succeeded).
pub async fn a_job_queued_again_after_failing_lost_runs_once(f: Fixture) {
    let q = f.queue.as_ref();
    let w = holding(1);
    let id = q.enqueue(spec("a"), false).await.unwrap().id().clone();
    for _ in 0..crate::fast_settings().max_lost {
        q.lease(&w, WAIT)
            .await
            .unwrap()
            .expect("back after each loss");
        (f.expire)().await;
    }
    let again = q.enqueue(spec("a"), false).await.unwrap();
    assert_eq!(again.id(), &id);
    let lease = q
        .lease(&w, WAIT)
        .await
        .unwrap()
        .expect("the job queued again");
    assert_eq!((lease.attempt, lease.lost), (1, 0), "a fresh budget");
    q.begin_publish(&lease).await.unwrap();
    q.finish(&lease, crate::ok()).await.unwrap();
    assert!(
        q.lease(&w, crate::NONE_WAIT).await.unwrap().is_none(),
        "run once"
    );
    let records = q
        .jobs(&JobFilter {
            ids: Some(vec![id]),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(records[0].state, JobState::Succeeded, "{:?}", records[0]);
}

/// A job handed back (released) and received again ahead of the worker's leases (RabbitMQ's
/// prefetch), then lost with that worker before it began, loses no attempt (found by the long
/// model run: it came back counted lost).
pub async fn a_released_job_never_begun_again_loses_no_attempt(f: Fixture) {
    let q = f.queue.as_ref();
    let w = holding(3);
    q.enqueue(spec("a"), false).await.unwrap();
    let lease = q.lease(&w, WAIT).await.unwrap().expect("a");
    q.finish(&lease, videofarm_core::Outcome::Released)
        .await
        .unwrap();
    // Time for the broker to hand the copy to this worker ahead of its next lease.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    (f.expire)().await;
    let back = q.lease(&w, WAIT).await.unwrap().expect("a comes back");
    assert_eq!(
        (back.attempt, back.lost),
        (1, 0),
        "never begun since it was handed back"
    );
}
