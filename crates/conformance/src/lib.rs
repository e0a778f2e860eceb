//! One conformance suite for every queue backend: the same cases run against the embedded
//! SQLite queue and the real RabbitMQ. A backend's test file calls
//! [`conformance_tests!`] with an async function that opens a fresh, private queue.
//!
//! Time-based cases use short real leases and backoffs (a few hundred milliseconds), because a
//! broker's clock cannot be injected; the SQLite backend also tests its leases on a manual clock.
//!
//! Layout: this file holds the lease protocol's cases and the macro; `control` the cancel and
//! retry cases; `lost` workers lost with their jobs; `records` what a farm keeps; `model` the
//! model-based test against the lifecycle's rules.

mod control;
mod lost;
mod model;
mod records;

pub use control::*;
pub use lost::*;
pub use model::{model_run, model_settings, ModelRun};
pub use records::*;

/// The model run's seed and length: `VIDEOFARM_MODEL_SEED` and `VIDEOFARM_MODEL_STEPS` when
/// set (the long soak, or replaying a failure), else a new seed and `steps`.
pub fn model_params(steps: usize) -> (u64, usize) {
    let seed = std::env::var("VIDEOFARM_MODEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    let steps = std::env::var("VIDEOFARM_MODEL_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(steps);
    (seed, steps)
}

use std::any::Any;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use videofarm_core::{
    Backend, Enqueued, Failure, JobFilter, JobId, JobSpec, JobState, Outcome, Progress, QueueError,
    QueueSettings, SuccessReport, WorkerInfo,
};

/// A fresh queue for one case, and whatever must live as long as it (a temporary folder, a
/// broker connection).
pub struct Fixture {
    pub queue: Arc<dyn Backend>,
    pub guard: Box<dyn Any + Send>,
    /// Make every lease the queue handed out run out, as if its worker had died: the SQLite
    /// backend waits out the lease, the RabbitMQ backend cuts the connection.
    pub expire: Box<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>,
}

/// A job spec whose identity is `name`.
pub fn spec(name: &str) -> JobSpec {
    JobSpec {
        input: PathBuf::from(format!("/media/in/{name}.mpg")),
        output: PathBuf::from(format!("/media/out/{name}.mkv")),
        profile: "archive".into(),
        key: format!("key-{name}"),
        overwrite: false,
        priority: 0,
        input_size: 1000,
        parent: None,
        split: Default::default(),
        chunk: None,
        require: Vec::new(),
    }
}

pub fn worker(name: &str) -> WorkerInfo {
    WorkerInfo::new(name, "testhost")
}

/// Short leases and backoffs so the time-based cases take well under a second each.
pub fn fast_settings() -> QueueSettings {
    QueueSettings {
        lease: Duration::from_millis(600),
        max_attempts: 2,
        max_lost: 3,
        retry_backoff: Duration::from_millis(200),
    }
}

pub(crate) const WAIT: Duration = Duration::from_secs(3);
pub(crate) const NONE_WAIT: Duration = Duration::from_millis(300);

async fn failed_ids(q: &dyn Backend) -> Vec<JobId> {
    q.jobs(&JobFilter {
        state: Some(JobState::Failed),
        ids: None,
        chunks: false,
        ..Default::default()
    })
    .await
    .expect("jobs")
    .into_iter()
    .map(|r| r.id)
    .collect()
}

pub(crate) fn ok() -> Outcome {
    Outcome::Succeeded(SuccessReport::default())
}

/// Back after `ms` without an attempt counted (a split tape waiting for its chunks).
pub(crate) fn wait(ms: u64) -> Outcome {
    Outcome::Deferred {
        after: Duration::from_millis(ms),
        progress: Progress::default(),
    }
}

pub async fn lease_returns_the_job_with_a_token(f: Fixture) {
    let q = f.queue.as_ref();
    let id = q.enqueue(spec("a"), false).await.unwrap();
    assert!(matches!(id, Enqueued::Queued(_)));
    let lease = q
        .lease(&worker("w1"), WAIT)
        .await
        .unwrap()
        .expect("a job is ready");
    assert_eq!(&lease.id, id.id());
    assert_eq!(lease.spec, spec("a"));
    assert_eq!(lease.attempt, 1);
    q.finish(&lease, ok()).await.unwrap();
    assert!(
        q.lease(&worker("w1"), NONE_WAIT).await.unwrap().is_none(),
        "an acknowledged job is gone"
    );
}

/// Only for backends with a job index (SQLite): on RabbitMQ the same guarantee comes from the
/// worker, which acknowledges a job whose verified output is already in place.
pub async fn duplicates_are_not_queued_twice_but_force_requeues(f: Fixture) {
    let q = f.queue.as_ref();
    let first = q.enqueue(spec("a"), false).await.unwrap();
    let again = q.enqueue(spec("a"), false).await.unwrap();
    assert_eq!(
        again,
        Enqueued::Duplicate(first.id().clone(), JobState::Queued)
    );
    let lease = q.lease(&worker("w1"), WAIT).await.unwrap().unwrap();
    q.finish(&lease, ok()).await.unwrap();
    let done = q.enqueue(spec("a"), false).await.unwrap();
    assert_eq!(
        done,
        Enqueued::Duplicate(first.id().clone(), JobState::Succeeded)
    );
    assert!(q.lease(&worker("w1"), NONE_WAIT).await.unwrap().is_none());
    let forced = q.enqueue(spec("a"), true).await.unwrap();
    assert!(matches!(forced, Enqueued::Queued(_)));
    let lease = q
        .lease(&worker("w1"), WAIT)
        .await
        .unwrap()
        .expect("forced job runs again");
    assert!(
        lease.spec.overwrite,
        "a forced re-run may replace the old output"
    );
    assert_eq!(q.counts().await.unwrap().running, 1);
}

pub async fn an_empty_queue_waits_then_says_none(f: Fixture) {
    let started = std::time::Instant::now();
    assert!(f
        .queue
        .lease(&worker("w1"), NONE_WAIT)
        .await
        .unwrap()
        .is_none());
    assert!(started.elapsed() >= NONE_WAIT / 2, "lease waited for work");
}

pub async fn a_retryable_failure_backs_off_then_fails_after_max_attempts(f: Fixture) {
    let q = f.queue.as_ref();
    q.enqueue(spec("a"), false).await.unwrap();
    let first = q.lease(&worker("w1"), WAIT).await.unwrap().unwrap();
    q.finish(
        &first,
        Outcome::Failed(Failure::retryable("ffmpeg failed: boom", "line1\nboom")),
    )
    .await
    .unwrap();
    assert!(
        failed_ids(q).await.is_empty(),
        "one failed attempt of two does not fail the job"
    );
    let second = q
        .lease(&worker("w2"), WAIT)
        .await
        .unwrap()
        .expect("retried after the backoff");
    assert_eq!(second.attempt, 2);
    assert_ne!(second.token, first.token);
    q.finish(
        &second,
        Outcome::Failed(Failure::retryable("ffmpeg failed: boom again", "tail")),
    )
    .await
    .unwrap();
    let failed = q
        .jobs(&JobFilter {
            state: Some(JobState::Failed),
            ids: None,
            chunks: false,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(failed.len(), 1, "max_attempts = 2 reached");
    assert_eq!(
        failed[0].error.as_deref(),
        Some("ffmpeg failed: boom again")
    );
    assert_eq!(failed[0].stderr_tail.as_deref(), Some("tail"));
    assert_eq!(failed[0].attempts, 2);
    assert!(q.lease(&worker("w1"), NONE_WAIT).await.unwrap().is_none());
}

pub async fn a_permanent_failure_fails_at_once(f: Fixture) {
    let q = f.queue.as_ref();
    q.enqueue(spec("a"), false).await.unwrap();
    let lease = q.lease(&worker("w1"), WAIT).await.unwrap().unwrap();
    q.finish(
        &lease,
        Outcome::Failed(Failure::permanent(
            "/media/in/a.mpg: the file is empty (0 bytes)",
        )),
    )
    .await
    .unwrap();
    assert_eq!(failed_ids(q).await, vec![lease.id.clone()]);
    assert_eq!(q.counts().await.unwrap().failed, 1);
}

pub async fn a_released_job_returns_at_once_without_counting_an_attempt(f: Fixture) {
    let q = f.queue.as_ref();
    q.enqueue(spec("a"), false).await.unwrap();
    let lease = q.lease(&worker("w1"), WAIT).await.unwrap().unwrap();
    q.finish(&lease, Outcome::Released).await.unwrap();
    let again = q
        .lease(&worker("w2"), NONE_WAIT)
        .await
        .unwrap()
        .expect("released job is ready at once");
    assert_eq!(again.attempt, 1, "a release does not count as an attempt");
}

pub async fn a_deferred_job_returns_after_its_wait_without_counting_an_attempt(f: Fixture) {
    let q = f.queue.as_ref();
    q.enqueue(spec("a"), false).await.unwrap();
    let lease = q.lease(&worker("w1"), WAIT).await.unwrap().unwrap();
    let deferred_at = std::time::Instant::now();
    q.finish(
        &lease,
        Outcome::Deferred {
            after: Duration::from_millis(400),
            progress: Progress {
                progress: 0.5,
                ..Progress::default()
            },
        },
    )
    .await
    .unwrap();
    assert_eq!(q.counts().await.unwrap().failed, 0);
    let again = q
        .lease(&worker("w2"), WAIT)
        .await
        .unwrap()
        .expect("the deferred job comes back");
    assert!(
        deferred_at.elapsed() >= Duration::from_millis(350),
        "not before its wait: {:?}",
        deferred_at.elapsed()
    );
    assert_eq!(again.attempt, 1, "a wait does not count as an attempt");
    assert_eq!(again.spec, lease.spec);
    q.finish(&again, ok()).await.unwrap();
}

/// A short wait is not held up by a long one queued before it.
pub async fn a_long_wait_does_not_hold_up_a_short_one(f: Fixture) {
    let q = f.queue.as_ref();
    q.enqueue(spec("long"), false).await.unwrap();
    let long = q.lease(&worker("w1"), WAIT).await.unwrap().unwrap();
    q.finish(&long, wait(60_000)).await.unwrap();
    q.enqueue(spec("short"), false).await.unwrap();
    let short = q.lease(&worker("w1"), WAIT).await.unwrap().unwrap();
    assert_eq!(short.spec.key, "key-short");
    q.finish(&short, wait(300)).await.unwrap();
    let back = q
        .lease(&worker("w2"), WAIT)
        .await
        .unwrap()
        .expect("the short wait is over first");
    assert_eq!(back.spec.key, "key-short");
}

pub async fn a_chunk_job_comes_back_with_its_parent_split_and_frames(f: Fixture) {
    let q = f.queue.as_ref();
    let mut parent = spec("tape");
    parent.split = videofarm_core::Split::Every(90.0);
    let parent_id = q.enqueue(parent.clone(), false).await.unwrap().id().clone();
    let lease = q.lease(&worker("w1"), WAIT).await.unwrap().unwrap();
    assert_eq!(lease.spec, parent, "the split setting travels with the job");
    let mut chunk = spec("tape-chunk-1");
    chunk.parent = Some(parent_id.clone());
    chunk.chunk = Some(videofarm_core::Chunk {
        index: 1,
        count: 3,
        first: 2250,
        end: 4500,
        seek_s: Some(89.5),
        window: (89.9, Some(180.1)),
        keep: (90.0, Some(180.0)),
        treat: None,
    });
    q.enqueue(chunk.clone(), false).await.unwrap();
    q.finish(&lease, ok()).await.unwrap();
    let leased = q.lease(&worker("w2"), WAIT).await.unwrap().unwrap();
    assert_eq!(leased.spec, chunk, "parent and frames travel with a chunk");
    q.finish(&leased, ok()).await.unwrap();
}

pub async fn a_stale_token_is_fenced_off(f: Fixture) {
    let q = f.queue.as_ref();
    q.enqueue(spec("a"), false).await.unwrap();
    let lease = q.lease(&worker("w1"), WAIT).await.unwrap().unwrap();
    let mut stale = lease.clone();
    stale.token = lease.token.wrapping_sub(1);
    assert!(matches!(
        q.begin_publish(&stale).await,
        Err(QueueError::LeaseLost(_))
    ));
    assert!(matches!(
        q.heartbeat(&stale, None).await,
        Err(QueueError::LeaseLost(_))
    ));
    assert!(matches!(
        q.finish(&stale, ok()).await,
        Err(QueueError::LeaseLost(_))
    ));
    q.begin_publish(&lease).await.unwrap();
    q.finish(&lease, ok()).await.unwrap();
    assert!(
        q.finish(&lease, ok()).await.is_err(),
        "a lease is finished once"
    );
}

pub async fn an_expired_lease_is_redelivered_and_the_old_holder_fenced(f: Fixture) {
    let q = f.queue.as_ref();
    q.enqueue(spec("a"), false).await.unwrap();
    let first = q.lease(&worker("w1"), WAIT).await.unwrap().unwrap();
    // w1 goes silent; after the lease the job is someone else's.
    (f.expire)().await;
    let second = q
        .lease(&worker("w2"), WAIT)
        .await
        .unwrap()
        .expect("redelivered after the lease");
    assert_eq!(second.id, first.id);
    assert_ne!(second.token, first.token);
    assert_eq!(second.attempt, 2, "the lost attempt counts");
    assert!(q.heartbeat(&first, None).await.unwrap_err().voids_lease());
    assert!(q.begin_publish(&first).await.unwrap_err().voids_lease());
    q.begin_publish(&second).await.unwrap();
    q.finish(&second, ok()).await.unwrap();
    assert!(
        q.lease(&worker("w1"), NONE_WAIT).await.unwrap().is_none(),
        "done once"
    );
}

pub async fn attempts_lost_with_their_worker_are_counted_apart_with_a_limit_of_their_own(
    f: Fixture,
) {
    let q = f.queue.as_ref();
    let settings = fast_settings();
    q.enqueue(spec("a"), false).await.unwrap();
    // More losses than failed attempts allowed: the job keeps coming back...
    for lost in 0..settings.max_lost - 1 {
        let lease = q
            .lease(&worker("w"), WAIT)
            .await
            .unwrap()
            .expect("back after a loss");
        assert_eq!((lease.attempt, lease.lost), (lost + 1, lost));
        assert_eq!(lease.failures(), 0);
        (f.expire)().await;
    }
    assert!(settings.max_lost > settings.max_attempts);
    // ...until the losses reach their own limit.
    let lease = q
        .lease(&worker("w"), WAIT)
        .await
        .unwrap()
        .expect("one more");
    assert_eq!(lease.lost, settings.max_lost - 1);
    (f.expire)().await;
    let deadline = std::time::Instant::now() + WAIT;
    while !failed_ids(q).await.contains(&lease.id) {
        // On RabbitMQ the loss is seen when the job is next delivered.
        let _ = q.lease(&worker("w"), NONE_WAIT).await.unwrap();
        assert!(
            std::time::Instant::now() < deadline,
            "failed after the losses"
        );
    }
    let record = &q
        .jobs(&JobFilter {
            state: Some(JobState::Failed),
            ids: None,
            chunks: false,
            ..Default::default()
        })
        .await
        .unwrap()[0];
    assert!(
        record.error.as_deref().unwrap_or_default().contains("lost"),
        "{record:?}"
    );
}

pub async fn heartbeats_keep_a_lease(f: Fixture) {
    let q = f.queue.as_ref();
    q.enqueue(spec("a"), false).await.unwrap();
    let lease = q.lease(&worker("w1"), WAIT).await.unwrap().unwrap();
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        q.heartbeat(&lease, None)
            .await
            .expect("lease renewed in time");
    }
    assert!(
        q.lease(&worker("w2"), NONE_WAIT).await.unwrap().is_none(),
        "a renewed lease is not handed out"
    );
    q.finish(&lease, ok()).await.unwrap();
}

pub async fn higher_priority_runs_first(f: Fixture) {
    let q = f.queue.as_ref();
    let mut background = spec("background");
    background.priority = -3;
    q.enqueue(background, false).await.unwrap();
    q.enqueue(spec("normal"), false).await.unwrap();
    let mut urgent = spec("high");
    urgent.priority = 5;
    q.enqueue(urgent, false).await.unwrap();
    let w = worker("w1");
    let mut order = Vec::new();
    for _ in 0..3 {
        let lease = q.lease(&w, WAIT).await.unwrap().unwrap();
        order.push(lease.spec.key.clone());
        q.finish(&lease, Outcome::Succeeded(SuccessReport::default()))
            .await
            .unwrap();
    }
    assert_eq!(order, ["key-high", "key-normal", "key-background"]);
}

/// A worker takes only the jobs whose profile it can run and whose tags it has, however many it
/// cannot run wait ahead of them; jobs of one profile and tags come best first (priority, then
/// the oldest). Across routes RabbitMQ takes from whichever queue is ready (none starves), so
/// the order between them is not part of the contract.
pub async fn a_worker_takes_only_what_it_can_run(f: Fixture) {
    let q = f.queue.as_ref();
    let job = |name: &str, profile: &str, require: &[&str], priority: i32| {
        let mut s = spec(name);
        s.profile = profile.into();
        s.require = require.iter().map(|t| t.to_string()).collect();
        s.priority = priority;
        s
    };
    // More than a look at the first in line sees, all of a profile the worker cannot run.
    let ahead: Vec<JobSpec> = (0..40)
        .map(|i| job(&format!("other-profile-{i}"), "web", &[], 9))
        .collect();
    q.enqueue_many(ahead, false).await.unwrap();
    for s in [
        job("gpu-first", "archive", &["gpu"], 5),
        job("other-tag", "archive", &["tape"], 7),
        job("plain", "archive", &[], 1),
        job("gpu-second", "archive", &["gpu"], 5),
        job("both-tags", "archive", &["gpu", "tape"], 8),
    ] {
        q.enqueue(s, false).await.unwrap();
    }
    let mut w = worker("w1");
    w.profiles = Some(vec!["archive".into()]);
    w.unable = vec!["web".into()];
    w.tags = vec!["gpu".into()];
    let mut order = Vec::new();
    while let Some(lease) = q.lease(&w, NONE_WAIT).await.unwrap() {
        order.push(lease.spec.key.clone());
        q.finish(&lease, ok()).await.unwrap();
    }
    let mut taken = order.clone();
    taken.sort();
    assert_eq!(taken, ["key-gpu-first", "key-gpu-second", "key-plain"]);
    let at = |key: &str| order.iter().position(|k| k == key);
    assert!(at("key-gpu-first") < at("key-gpu-second"), "{order:?}");
}

pub async fn workers_show_their_active_jobs_with_progress(f: Fixture) {
    let q = f.queue.as_ref();
    let w = worker("w1");
    q.register_worker(&w).await.unwrap();
    q.enqueue(spec("a"), false).await.unwrap();
    let lease = q.lease(&w, WAIT).await.unwrap().unwrap();
    let progress = Progress {
        progress: 0.5,
        frames: 40,
        fps: 80.0,
        speed: 3.2,
        eta_s: Some(1.5),
        transfer: Some(videofarm_core::Transfer {
            sending: false,
            bytes: 10,
            total: 40,
            rate: 5.0,
        }),
    };
    q.heartbeat(&lease, Some(&progress)).await.unwrap();
    let workers = q.workers().await.unwrap();
    let me = workers
        .iter()
        .find(|s| s.name == "w1")
        .expect("w1 is listed");
    assert_eq!(me.host, "testhost");
    assert_eq!(me.active.len(), 1);
    assert_eq!(me.active[0].id, lease.id);
    assert_eq!(me.active[0].input, PathBuf::from("/media/in/a.mpg"));
    assert!((me.active[0].progress - 0.5).abs() < 1e-9);
    assert!((me.active[0].speed - 3.2).abs() < 1e-9);
    assert_eq!(
        me.active[0].transfer, progress.transfer,
        "a transfer shows as it goes"
    );
    q.unregister_worker(&w).await.unwrap();
    assert!(
        q.workers().await.unwrap().iter().all(|s| s.name != "w1"),
        "a stopped worker is gone"
    );
}

/// Generate one `#[tokio::test]` per conformance case. `$open` is an async fn taking
/// [`QueueSettings`] and returning a [`Fixture`].
#[macro_export]
macro_rules! conformance_tests {
    ($open:path) => {
        $crate::conformance_tests!(@cases $open;
            lease_returns_the_job_with_a_token,
            an_empty_queue_waits_then_says_none,
            a_retryable_failure_backs_off_then_fails_after_max_attempts,
            a_permanent_failure_fails_at_once,
            a_released_job_returns_at_once_without_counting_an_attempt,
            a_deferred_job_returns_after_its_wait_without_counting_an_attempt,
            a_chunk_job_comes_back_with_its_parent_split_and_frames,
            a_long_wait_does_not_hold_up_a_short_one,
            a_stale_token_is_fenced_off,
            an_expired_lease_is_redelivered_and_the_old_holder_fenced,
            attempts_lost_with_their_worker_are_counted_apart_with_a_limit_of_their_own,
            heartbeats_keep_a_lease,
            cancel_stops_queued_and_running_jobs,
            retry_brings_a_failed_job_back,
            cancel_answers_each_id_and_cancels_the_rest,
            a_tape_is_cancelled_and_retried_whole,
            a_job_cancelled_while_held_stays_cancelled_whatever_its_holder_says,
            a_job_retried_after_a_cancel_runs,
            a_job_queued_again_after_a_cancel_is_not_undone_by_its_old_holder,
            higher_priority_runs_first,
            a_worker_takes_only_what_it_can_run,
            workers_show_their_active_jobs_with_progress,
            records_list_every_job_with_its_attempts_and_exact_counts,
            jobs_are_listed_a_page_at_a_time,
            the_timeline_counts_what_finished_and_what_waits,
            a_tape_joined_by_another_worker_ends_its_one_attempt,
            a_cancelled_job_lost_with_its_worker_stays_cancelled,
            a_cancelled_job_handed_back_stays_cancelled,
            a_tape_lost_while_joining_opens_a_new_attempt,
            a_lost_attempt_shows_before_the_job_is_taken_again,
            a_job_never_begun_loses_no_attempt_with_its_worker,
            a_cancel_is_heard_by_a_worker_that_reconnected,
            a_job_queued_again_after_failing_lost_runs_once,
            a_released_job_never_begun_again_loses_no_attempt,
        );
    };
    (@cases $open:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let fixture = $open($crate::fast_settings()).await;
                $crate::$case(fixture).await;
            }
        )*
    };
}
