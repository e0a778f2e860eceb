//! The records layer's cases: what a farm keeps about its jobs (states, attempts, exact
//! counts), pages of jobs, and the timeline the dashboard draws.

use crate::{spec, worker, Fixture, WAIT};
use std::time::Duration;
use videofarm_core::{
    AttemptOutcome, Failure, JobFilter, JobId, JobState, Outcome, SuccessReport, Verdict,
};

/// The records keep every job that ever finished, failed or was cancelled, with its attempts,
/// and the counts are exact (the same on every backend after the same operations).
pub async fn records_list_every_job_with_its_attempts_and_exact_counts(f: Fixture) {
    let q = f.queue.as_ref();
    let w = worker("w1");
    let a = q.enqueue(spec("a"), false).await.unwrap().id().clone();
    let lease = q.lease(&w, WAIT).await.unwrap().unwrap();
    q.begin_publish(&lease).await.unwrap();
    q.finish(&lease, Outcome::Succeeded(SuccessReport::default()))
        .await
        .unwrap();
    let b = q.enqueue(spec("b"), false).await.unwrap().id().clone();
    let lease = q.lease(&w, WAIT).await.unwrap().unwrap();
    q.finish(
        &lease,
        Outcome::Failed(Failure::permanent("the input is not video")),
    )
    .await
    .unwrap();
    let c = q.enqueue(spec("c"), false).await.unwrap().id().clone();
    q.cancel(std::slice::from_ref(&c)).await.unwrap();
    q.enqueue(spec("d"), false).await.unwrap();

    let counts = q.counts().await.unwrap();
    assert_eq!(
        (
            counts.queued,
            counts.running,
            counts.succeeded,
            counts.failed,
            counts.cancelled
        ),
        (1, 0, 1, 1, 1),
        "{counts:?}"
    );
    let mut listed: Vec<(String, JobState, u32)> = q
        .jobs(&JobFilter::default())
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.spec.input.display().to_string(), r.state, r.attempts))
        .collect();
    listed.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(
        listed,
        vec![
            ("/media/in/a.mpg".into(), JobState::Succeeded, 1),
            ("/media/in/b.mpg".into(), JobState::Failed, 1),
            ("/media/in/c.mpg".into(), JobState::Cancelled, 0),
            ("/media/in/d.mpg".into(), JobState::Queued, 0),
        ]
    );
    let outcomes = |h: Vec<videofarm_core::AttemptRecord>| {
        h.into_iter()
            .map(|a| (a.attempt, a.worker, a.outcome, a.finished_ms.is_some()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        outcomes(q.history(&a).await.unwrap()),
        vec![(1, "w1".to_string(), AttemptOutcome::Succeeded, true)]
    );
    let failed = q.history(&b).await.unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].outcome, AttemptOutcome::Failed);
    assert_eq!(failed[0].error.as_deref(), Some("the input is not video"));
    let record = q
        .jobs(&JobFilter {
            ids: Some(vec![b.clone()]),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(record[0].error.as_deref(), Some("the input is not video"));

    // Finished jobs cannot be cancelled; unknown ones are not found.
    assert_eq!(
        q.cancel(std::slice::from_ref(&a)).await.unwrap()[0].verdict,
        Verdict::Already(JobState::Succeeded)
    );
    assert_eq!(
        q.cancel(&[JobId("999999".into())]).await.unwrap()[0].verdict,
        Verdict::NotFound
    );
    // A failed and a cancelled job come back; one running is counted as running.
    q.retry(&[b.clone(), c.clone()]).await.unwrap();
    let counts = q.counts().await.unwrap();
    assert_eq!((counts.queued, counts.failed, counts.cancelled), (3, 0, 0));
    let lease = q.lease(&w, WAIT).await.unwrap().unwrap();
    let counts = q.counts().await.unwrap();
    assert_eq!((counts.queued, counts.running), (2, 1), "{counts:?}");
    q.finish(&lease, Outcome::Released).await.unwrap();
    let counts = q.counts().await.unwrap();
    assert_eq!((counts.queued, counts.running), (3, 0), "{counts:?}");
}

/// Jobs are listed a page at a time, oldest queued first or most recently finished first.
pub async fn jobs_are_listed_a_page_at_a_time(f: Fixture) {
    let q = f.queue.as_ref();
    let w = worker("w1");
    for name in ["a", "b", "c", "d", "e"] {
        q.enqueue(spec(name), false).await.unwrap();
        // Distinct queue times, so "oldest first" has one answer on every backend.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let inputs = |records: Vec<videofarm_core::JobRecord>| {
        records
            .into_iter()
            .map(|r| {
                r.spec
                    .input
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect::<Vec<_>>()
    };
    let page = q
        .jobs(&JobFilter {
            limit: Some(2),
            offset: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(inputs(page), ["c.mpg", "d.mpg"]);
    // Two finish, the later one is listed first among the newest.
    for _ in 0..2 {
        let lease = q.lease(&w, WAIT).await.unwrap().unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        q.finish(&lease, Outcome::Succeeded(SuccessReport::default()))
            .await
            .unwrap();
    }
    let newest = q
        .jobs(&JobFilter {
            state: Some(JobState::Succeeded),
            limit: Some(1),
            newest_first: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(inputs(newest), ["b.mpg"]);
    let queued = q
        .jobs(&JobFilter {
            state: Some(JobState::Queued),
            limit: Some(10),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(inputs(queued), ["c.mpg", "d.mpg", "e.mpg"]);
}

/// The recent past, for the dashboard's chart: what finished when, and what waited.
pub async fn the_timeline_counts_what_finished_and_what_waits(f: Fixture) {
    let q = f.queue.as_ref();
    let w = worker("w1");
    for name in ["a", "b", "c"] {
        q.enqueue(spec(name), false).await.unwrap();
    }
    let lease = q.lease(&w, WAIT).await.unwrap().unwrap();
    let report = SuccessReport {
        output_size: 4000,
        duration_s: 60.0,
        ..Default::default()
    };
    q.finish(&lease, Outcome::Succeeded(report)).await.unwrap();
    let lease = q.lease(&w, WAIT).await.unwrap().unwrap();
    q.finish(&lease, Outcome::Failed(Failure::permanent("no")))
        .await
        .unwrap();
    let buckets = q.timeline(60_000, 3).await.unwrap();
    assert_eq!(buckets.len(), 3);
    let last = buckets.last().unwrap();
    assert_eq!(
        (last.succeeded, last.failed, last.bytes, last.waiting),
        (1, 1, 4000, 1),
        "{buckets:?}"
    );
    assert!((last.media_s - 60.0).abs() < 1e-9);
    assert_eq!(buckets[0].succeeded + buckets[1].succeeded, 0);
}

/// A split tape planned by one worker and joined by another is one attempt, and it ends.
pub async fn a_tape_joined_by_another_worker_ends_its_one_attempt(f: Fixture) {
    let q = f.queue.as_ref();
    let id = q.enqueue(spec("tape"), false).await.unwrap().id().clone();
    let planned = q.lease(&worker("w1"), WAIT).await.unwrap().unwrap();
    q.finish(&planned, crate::wait(100)).await.unwrap();
    let joined = q.lease(&worker("w2"), WAIT).await.unwrap().unwrap();
    q.begin_publish(&joined).await.unwrap();
    q.finish(&joined, crate::ok()).await.unwrap();
    let history = q.history(&id).await.unwrap();
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(history[0].outcome, AttemptOutcome::Succeeded, "{history:?}");
    assert!(history[0].finished_ms.is_some(), "{history:?}");
}

/// A job cancelled while its worker was dying stays cancelled: its loss is not counted, even
/// the one loss too many that would have failed it, and its attempt is shown ended.
pub async fn a_cancelled_job_lost_with_its_worker_stays_cancelled(f: Fixture) {
    let q = f.queue.as_ref();
    let settings = crate::fast_settings();
    let id = q.enqueue(spec("a"), false).await.unwrap().id().clone();
    for _ in 0..settings.max_lost - 1 {
        q.lease(&worker("w"), WAIT)
            .await
            .unwrap()
            .expect("back after a loss");
        (f.expire)().await;
    }
    let last = q.lease(&worker("w"), WAIT).await.unwrap().unwrap();
    assert_eq!(last.lost, settings.max_lost - 1);
    q.cancel(std::slice::from_ref(&id)).await.unwrap();
    (f.expire)().await;
    // On RabbitMQ the loss is seen when the job is next delivered.
    for _ in 0..3 {
        assert!(q
            .lease(&worker("w"), crate::NONE_WAIT)
            .await
            .unwrap()
            .is_none());
    }
    let record = &q
        .jobs(&JobFilter {
            ids: Some(vec![id.clone()]),
            ..Default::default()
        })
        .await
        .unwrap()[0];
    assert_eq!(record.state, JobState::Cancelled, "{record:?}");
    let history = q.history(&id).await.unwrap();
    assert!(
        history.iter().all(|a| a.outcome != AttemptOutcome::Running),
        "{history:?}"
    );
}

/// A job cancelled while a worker holds it stays cancelled whatever that worker does next
/// (here it hands the job back as it stops).
pub async fn a_cancelled_job_handed_back_stays_cancelled(f: Fixture) {
    let q = f.queue.as_ref();
    let id = q.enqueue(spec("a"), false).await.unwrap().id().clone();
    let lease = q.lease(&worker("w1"), WAIT).await.unwrap().unwrap();
    q.cancel(std::slice::from_ref(&id)).await.unwrap();
    let _ = q.finish(&lease, Outcome::Released).await;
    let record = &q
        .jobs(&JobFilter {
            ids: Some(vec![id.clone()]),
            ..Default::default()
        })
        .await
        .unwrap()[0];
    assert_eq!(record.state, JobState::Cancelled, "{record:?}");
    assert!(
        q.lease(&worker("w2"), crate::NONE_WAIT)
            .await
            .unwrap()
            .is_none(),
        "a cancelled job is not run"
    );
}

/// A tape lost while its join was under way: the worker that takes it next opens an attempt
/// of its own in the records, and the lost one is shown lost.
pub async fn a_tape_lost_while_joining_opens_a_new_attempt(f: Fixture) {
    let q = f.queue.as_ref();
    let id = q.enqueue(spec("tape"), false).await.unwrap().id().clone();
    let planned = q.lease(&worker("w1"), WAIT).await.unwrap().unwrap();
    q.finish(&planned, crate::wait(100)).await.unwrap();
    q.lease(&worker("w2"), WAIT).await.unwrap().unwrap();
    (f.expire)().await;
    let joined = q.lease(&worker("w3"), WAIT).await.unwrap().unwrap();
    q.begin_publish(&joined).await.unwrap();
    q.finish(&joined, crate::ok()).await.unwrap();
    let history = q.history(&id).await.unwrap();
    let outcomes: Vec<(&str, &str)> = history
        .iter()
        .map(|a| (a.worker.as_str(), a.outcome.as_str()))
        .collect();
    assert_eq!(outcomes.last(), Some(&("w3", "succeeded")), "{history:?}");
    assert_eq!(outcomes.len(), 2, "{history:?}");
    assert_eq!(outcomes[0].1, "lost", "{history:?}");
}
