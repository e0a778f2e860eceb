//! What a user changes: cancel and retry, on plain jobs and on split tapes, and how a holder
//! is refused once its job was cancelled.

use crate::{ok, spec, wait, worker, Fixture, NONE_WAIT, WAIT};
use videofarm_core::{
    Answer, Failure, JobFilter, JobId, JobState, Outcome, QueueError, Verdict, WorkerInfo,
};

pub async fn cancel_stops_queued_and_running_jobs(f: Fixture) {
    let q = f.queue.as_ref();
    q.register_worker(&worker("w1")).await.unwrap();
    let running = q.enqueue(spec("a"), false).await.unwrap().id().clone();
    let lease = q.lease(&worker("w1"), WAIT).await.unwrap().unwrap();
    let queued = q.enqueue(spec("b"), false).await.unwrap().id().clone();
    q.cancel(&[running.clone(), queued.clone()]).await.unwrap();
    assert!(matches!(
        q.heartbeat(&lease, None).await,
        Err(QueueError::Cancelled(_))
    ));
    assert!(q.begin_publish(&lease).await.unwrap_err().voids_lease());
    assert!(
        q.lease(&worker("w1"), NONE_WAIT).await.unwrap().is_none(),
        "cancelled jobs are not run"
    );
    let left = q
        .jobs(&JobFilter {
            state: None,
            ids: Some(vec![running, queued]),
            chunks: false,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        left.iter()
            .all(|r| !matches!(r.state, JobState::Queued | JobState::Running)),
        "neither is waiting or running: {left:?}"
    );
}

pub async fn retry_brings_a_failed_job_back(f: Fixture) {
    let q = f.queue.as_ref();
    q.enqueue(spec("a"), false).await.unwrap();
    let lease = q.lease(&worker("w1"), WAIT).await.unwrap().unwrap();
    q.finish(&lease, Outcome::Failed(Failure::permanent("bad")))
        .await
        .unwrap();
    assert_eq!(
        q.retry(&[JobId("does-not-exist".into())]).await.unwrap(),
        vec![Answer::new(
            &JobId("does-not-exist".into()),
            Verdict::NotFound
        )]
    );
    let retried = q.retry_all_failed().await.unwrap();
    assert_eq!(retried, vec![Answer::new(&lease.id, Verdict::Done)]);
    let again = q
        .lease(&worker("w1"), WAIT)
        .await
        .unwrap()
        .expect("retried job runs");
    assert_eq!(again.attempt, 1, "retry gives a fresh attempt budget");
    assert_eq!(
        q.retry(std::slice::from_ref(&again.id)).await.unwrap()[0].verdict,
        Verdict::Already(JobState::Running),
        "a running job is not retried: it already runs"
    );
}

/// One id that cannot be cancelled never stops the others, and each id gets its own answer.
pub async fn cancel_answers_each_id_and_cancels_the_rest(f: Fixture) {
    let q = f.queue.as_ref();
    let done = q.enqueue(spec("done"), false).await.unwrap().id().clone();
    let lease = q.lease(&worker("w1"), WAIT).await.unwrap().unwrap();
    q.begin_publish(&lease).await.unwrap();
    q.finish(&lease, ok()).await.unwrap();
    let a = q.enqueue(spec("a"), false).await.unwrap().id().clone();
    let b = q.enqueue(spec("b"), false).await.unwrap().id().clone();
    let unknown = JobId("999999".into());
    let answers = q
        .cancel(&[a.clone(), done.clone(), unknown.clone(), b.clone()])
        .await
        .unwrap();
    assert_eq!(
        answers,
        vec![
            Answer::new(&a, Verdict::Done),
            Answer::new(&done, Verdict::Already(JobState::Succeeded)),
            Answer::new(&unknown, Verdict::NotFound),
            Answer::new(&b, Verdict::Done),
        ]
    );
    assert!(
        q.lease(&worker("w1"), NONE_WAIT).await.unwrap().is_none(),
        "both cancelled jobs are out of the queue"
    );
    // Idempotent: cancelled again, it says so and changes nothing.
    assert_eq!(
        q.cancel(std::slice::from_ref(&a)).await.unwrap()[0].verdict,
        Verdict::Already(JobState::Cancelled)
    );
    // Retry twice: the second finds it queued already, and it runs once.
    assert_eq!(
        q.retry(std::slice::from_ref(&a)).await.unwrap()[0].verdict,
        Verdict::Done
    );
    assert_eq!(
        q.retry(std::slice::from_ref(&a)).await.unwrap()[0].verdict,
        Verdict::Already(JobState::Queued)
    );
    let again = q.lease(&worker("w1"), WAIT).await.unwrap().unwrap();
    assert_eq!(again.id, a);
    assert!(again.fresh, "a retried job is taken afresh");
    assert!(
        q.lease(&worker("w1"), NONE_WAIT).await.unwrap().is_none(),
        "retried twice, queued once"
    );
    // A succeeded job is not retried: queued again with --force instead.
    assert!(matches!(
        q.retry(std::slice::from_ref(&done)).await.unwrap()[0].verdict,
        Verdict::Refused(_)
    ));
}

/// A job cancelled while held cannot be failed (or released) back into the queue by its
/// holder: the holder hears it was cancelled, and the job stays cancelled (found by the model
/// run on RabbitMQ, seed 1796265951699571816: a failure after a cancel queued the job again).
pub async fn a_job_cancelled_while_held_stays_cancelled_whatever_its_holder_says(f: Fixture) {
    let q = f.queue.as_ref();
    q.register_worker(&worker("w1")).await.unwrap();
    let id = q.enqueue(spec("a"), false).await.unwrap().id().clone();
    let lease = q.lease(&worker("w1"), WAIT).await.unwrap().unwrap();
    assert_eq!(
        q.cancel(std::slice::from_ref(&id)).await.unwrap()[0].verdict,
        Verdict::Done
    );
    let refused = q
        .finish(
            &lease,
            Outcome::Failed(Failure::retryable("ffmpeg died", "")),
        )
        .await
        .unwrap_err();
    assert!(refused.voids_lease(), "{refused:?}");
    assert!(
        q.lease(&worker("w1"), NONE_WAIT).await.unwrap().is_none(),
        "the cancelled job is not queued again"
    );
    let record = q
        .jobs(&JobFilter {
            ids: Some(vec![id]),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(record[0].state, JobState::Cancelled);
}

/// A job that failed, was queued again, cancelled, then retried runs (found by the model run
/// on RabbitMQ, seed 1796265951699571816: the retry sent back the old failed copy, which the
/// cancel then dropped, so the job stayed queued and never ran).
pub async fn a_job_retried_after_a_cancel_runs(f: Fixture) {
    let q = f.queue.as_ref();
    let id = q.enqueue(spec("a"), false).await.unwrap().id().clone();
    let lease = q.lease(&worker("w1"), WAIT).await.unwrap().unwrap();
    q.finish(&lease, Outcome::Failed(Failure::permanent("bad")))
        .await
        .unwrap();
    assert_eq!(q.enqueue(spec("a"), false).await.unwrap().id(), &id);
    assert_eq!(
        q.cancel(std::slice::from_ref(&id)).await.unwrap()[0].verdict,
        Verdict::Done
    );
    assert_eq!(
        q.retry(std::slice::from_ref(&id)).await.unwrap()[0].verdict,
        Verdict::Done
    );
    let again = q
        .lease(&worker("w1"), WAIT)
        .await
        .unwrap()
        .expect("the retried job runs");
    assert_eq!(again.id, id);
}

/// A user cancels and retries a split tape, never one of its chunks; cancelling the tape
/// cancels its chunks, and the tape comes back from a wait marked as not fresh.
pub async fn a_tape_is_cancelled_and_retried_whole(f: Fixture) {
    let q = f.queue.as_ref();
    // Two jobs held at once (a chunk and its tape): a worker that runs two.
    let w = WorkerInfo {
        concurrency: 2,
        ..worker("w1")
    };
    q.register_worker(&w).await.unwrap();
    let mut tape = spec("tape");
    tape.split = videofarm_core::Split::Every(90.0);
    let tape_id = q.enqueue(tape, false).await.unwrap().id().clone();
    let planning = q.lease(&w, WAIT).await.unwrap().unwrap();
    assert!(planning.fresh, "a tape's first lease is fresh");
    let mut chunk = spec("tape-chunk-0");
    chunk.parent = Some(tape_id.clone());
    chunk.chunk = Some(videofarm_core::Chunk {
        index: 0,
        count: 2,
        first: 0,
        end: 2250,
        seek_s: None,
        window: (0.0, Some(90.1)),
        keep: (0.0, Some(90.0)),
        treat: None,
    });
    let chunk_id = q.enqueue(chunk, false).await.unwrap().id().clone();
    q.finish(&planning, wait(100)).await.unwrap();
    let chunk_lease = q.lease(&w, WAIT).await.unwrap().unwrap();
    assert_eq!(chunk_lease.id, chunk_id);
    let back = q.lease(&w, WAIT).await.unwrap().unwrap();
    assert_eq!(back.id, tape_id);
    assert!(
        !back.fresh,
        "back from a wait, the tape is not taken afresh"
    );
    q.finish(&back, wait(100)).await.unwrap();

    let refused = q.cancel(std::slice::from_ref(&chunk_id)).await.unwrap();
    assert!(
        matches!(&refused[0].verdict, Verdict::Refused(why) if why.contains(&tape_id.0)),
        "{refused:?}"
    );
    assert!(matches!(
        q.retry(std::slice::from_ref(&chunk_id)).await.unwrap()[0].verdict,
        Verdict::Refused(_)
    ));
    assert_eq!(
        q.cancel(std::slice::from_ref(&tape_id)).await.unwrap()[0].verdict,
        Verdict::Done
    );
    assert!(
        q.heartbeat(&chunk_lease, None)
            .await
            .unwrap_err()
            .voids_lease(),
        "the running chunk stops with its tape"
    );
    assert_eq!(
        q.retry(std::slice::from_ref(&tape_id)).await.unwrap()[0].verdict,
        Verdict::Done
    );
    let retried = loop {
        let lease = q.lease(&w, WAIT).await.unwrap().unwrap();
        if lease.id == tape_id {
            break lease;
        }
        // A copy of the cancelled chunk still on its way out of a broker's queue.
        assert_eq!(lease.id, chunk_id, "only the tape or its chunk");
    };
    assert!(
        retried.fresh,
        "a retried tape is taken afresh: it queues the chunks it lacks"
    );
}

/// A job cancelled while held and then queued again is not undone by its old holder's late end,
/// whether the new copy waits or runs (found by the model run on RabbitMQ, seeds
/// 1796268364068392941 and 1796268560334606584: the old holder's end recorded the new copy as
/// cancelled).
pub async fn a_job_queued_again_after_a_cancel_is_not_undone_by_its_old_holder(f: Fixture) {
    let q = f.queue.as_ref();
    // The old holder and the new copy held at once: a worker that runs two.
    let w = WorkerInfo {
        concurrency: 2,
        ..worker("w1")
    };
    q.register_worker(&w).await.unwrap();
    let state = |id: JobId| async move {
        q.jobs(&JobFilter {
            ids: Some(vec![id]),
            ..Default::default()
        })
        .await
        .unwrap()[0]
            .state
    };
    for new_copy_runs in [false, true] {
        let name = if new_copy_runs { "b" } else { "a" };
        let id = q.enqueue(spec(name), false).await.unwrap().id().clone();
        let old = q.lease(&w, WAIT).await.unwrap().unwrap();
        assert_eq!(
            q.cancel(std::slice::from_ref(&id)).await.unwrap()[0].verdict,
            Verdict::Done
        );
        assert_eq!(q.enqueue(spec(name), false).await.unwrap().id(), &id);
        let new = if new_copy_runs {
            let new = q.lease(&w, WAIT).await.unwrap().expect("the new copy runs");
            assert_eq!(new.id, id);
            Some(new)
        } else {
            None
        };
        let end = if new_copy_runs {
            q.finish(&old, ok()).await
        } else {
            q.finish(&old, Outcome::Released).await
        };
        assert!(end.unwrap_err().voids_lease());
        let expected = if new_copy_runs {
            JobState::Running
        } else {
            JobState::Queued
        };
        assert_eq!(state(id.clone()).await, expected);
        let new = match new {
            Some(new) => new,
            None => q.lease(&w, WAIT).await.unwrap().expect("the new copy runs"),
        };
        q.begin_publish(&new).await.unwrap();
        q.finish(&new, ok()).await.unwrap();
        assert_eq!(state(id).await, JobState::Succeeded);
    }
}
