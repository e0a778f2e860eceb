use super::*;
use videofarm_core::Records;

/// A read far behind: the wait ends when the copy gets there, however long that takes in
/// all, while it keeps moving.
#[tokio::test]
async fn a_copy_that_keeps_moving_is_waited_for() {
    let (tx, mut rx) = watch::channel(0u64);
    let done = async {
        for n in 1..=20 {
            tokio::time::sleep(Duration::from_millis(30)).await;
            tx.send_replace(n);
        }
        "caught up"
    };
    // 600 ms in all, never 150 ms without a move.
    let out = while_moving(done, &mut rx, Duration::from_millis(150)).await;
    assert_eq!(out, Some("caught up"));
}

#[tokio::test]
async fn a_copy_that_stops_is_given_up_on() {
    let (tx, mut rx) = watch::channel(0u64);
    let started = std::time::Instant::now();
    let done = async {
        tx.send_replace(1);
        std::future::pending::<()>().await;
    };
    let out = while_moving(done, &mut rx, Duration::from_millis(150)).await;
    assert!(out.is_none());
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(150) && waited < Duration::from_secs(2),
        "{waited:?}"
    );
}

fn test_url() -> String {
    std::env::var("VIDEOFARM_TEST_AMQP")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// The settings of a farm of its own on the test broker, named `name` and this process.
fn settings(name: &str) -> AmqpSettings {
    let mut settings = AmqpSettings::new(&test_url());
    settings.prefix = format!("vftest-{name}-{}", std::process::id());
    settings.queue_expires = Some(Duration::from_secs(600));
    settings
}

async fn connect(settings: AmqpSettings) -> AmqpQueue {
    AmqpQueue::connect(settings, videofarm_core::QueueSettings::default())
        .await
        .expect("RabbitMQ must be running for this test")
}

/// A farm of its own on the test broker, named `name` and this process: its queue handle, the
/// broker's address and the farm's prefix (to delete it after).
async fn own_farm(name: &str) -> (AmqpQueue, String, String) {
    let settings = settings(name);
    let prefix = settings.prefix.clone();
    (connect(settings).await, test_url(), prefix)
}

/// The settings of `name`'s farm with its records in a file that processes share (a
/// machine's), in a fresh folder: the settings and the folder (to remove it after).
fn sharing_a_file(name: &str) -> (AmqpSettings, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("vftest-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut settings = settings(name);
    settings.records_file = Some(dir.join("records.db"));
    (settings, dir)
}

/// A job queued from `/m/NAME.mpg`.
fn spec(name: &str) -> videofarm_core::JobSpec {
    videofarm_core::JobSpec {
        input: format!("/m/{name}.mpg").into(),
        output: format!("/m/{name}.mkv").into(),
        profile: "archive".into(),
        key: format!("key-{name}"),
        ..Default::default()
    }
}

/// A farm deleted and made again (a broker reinstalled) under the same name, read by a
/// machine that kept its records file: the new stream is read from its start, instead of
/// waiting for offsets the copy has passed, and the copy keeps the history it read (before,
/// it was wiped, against the README's "each local copy keeps what it has read for good");
/// a job the old farm had not finished is failed with the reason, to be retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_made_anew_is_read_from_its_start() {
    let (settings, dir) = sharing_a_file("anew");
    let (url, prefix) = (test_url(), settings.prefix.clone());
    let open = || connect(settings.clone());
    let first = open().await;
    for name in ["a", "b", "c"] {
        first.enqueue(spec(name), false).await.unwrap();
    }
    let worker = videofarm_core::WorkerInfo::new("w", "h");
    let lease = first
        .lease(&worker, Duration::from_secs(5))
        .await
        .unwrap()
        .expect("a job");
    first.begin_publish(&lease).await.unwrap();
    first
        .finish(
            &lease,
            videofarm_core::Outcome::Succeeded(Default::default()),
        )
        .await
        .unwrap();
    let done = lease.id.clone();
    assert_eq!(first.counts().await.unwrap().queued, 2);
    drop(first);
    let (u, p) = (url.clone(), prefix.clone());
    tokio::task::spawn_blocking(move || crate::delete_farm_blocking(&u, &p))
        .await
        .unwrap();

    let again = open().await;
    again.enqueue(spec("d"), false).await.unwrap();
    let counts = tokio::time::timeout(Duration::from_secs(10), again.counts())
        .await
        .expect("the records answer")
        .unwrap();
    assert_eq!(
        counts.queued, 1,
        "only the new farm's job waits: {counts:?}"
    );
    assert_eq!(
        counts.succeeded, 1,
        "the old farm's finished job is kept: {counts:?}"
    );
    assert_eq!(
        counts.failed, 2,
        "its unfinished ones are failed: {counts:?}"
    );
    let history = again.history(&done).await.unwrap();
    assert_eq!(history.len(), 1, "{history:?}");
    let failed = again
        .jobs(&videofarm_core::JobFilter {
            state: Some(videofarm_core::JobState::Failed),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        failed[0]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("made anew")),
        "{failed:?}"
    );
    drop(again);
    let (u, p) = (url.clone(), prefix.clone());
    tokio::task::spawn_blocking(move || crate::delete_farm_blocking(&u, &p))
        .await
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A worker follows the records stream only to answer a question: a redelivered job's, or
/// a sweep's after a cancel. A sweep with nothing to do reads nothing, so an idle worker's
/// follower rests, and the next question wakes it. Before, every worker swept every 2 s and
/// followed for ever: 200 workers were 198 consumers of the stream.
#[tokio::test]
async fn sweeps_with_nothing_to_do_let_the_follower_rest() {
    let (queue, url, prefix) = own_farm("rest").await;
    let follower = &queue.inner.follower;
    follower.rest_after_ms.store(1000, Ordering::SeqCst);
    let following = || {
        follower
            .task
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|t| !t.is_finished())
    };
    let id = queue.enqueue(spec("a"), false).await.unwrap().id().clone();
    let mut sweep = videofarm_core::sweep::CancelledSweep::default();
    let now = || queue.inner.now();
    // The first look, with nothing cancelled in the day it looks back, reads nothing: a
    // worker starting on such a farm does not follow the stream.
    assert!(sweep.look(&queue, now()).await.unwrap().is_empty());
    assert!(
        !following(),
        "a first look with nothing cancelled started a follower"
    );
    // A read starts one; looks every 200 ms with nothing cancelled let it rest in seconds.
    queue.counts().await.expect("the records answer");
    assert!(following(), "a read starts a follower");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while following() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "sweeps with nothing to do kept the follower going"
        );
        assert!(sweep.look(&queue, now()).await.unwrap().is_empty());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A cancel: the next look reads the jobs (waking the follower) and finds it.
    queue.cancel(std::slice::from_ref(&id)).await.unwrap();
    let due = sweep.look(&queue, now()).await.unwrap();
    assert_eq!(due.iter().map(|r| &r.id).collect::<Vec<_>>(), [&id]);
    assert!(following(), "the read woke it");
    drop(queue);
    tokio::task::spawn_blocking(move || crate::delete_farm_blocking(&url, &prefix))
        .await
        .unwrap();
}

/// Of the processes sharing a records file (a machine's workers), one follows the stream and
/// the others read its progress from the file, their own writes included; when it goes,
/// another takes over. Before, each followed the whole stream into the one file: after a
/// `kill -9` in a 200-worker farm, every taker of a lost job read the stream from its start at
/// once, and none got anywhere in minutes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_sharing_a_records_file_follow_the_stream_once() {
    let (settings, dir) = sharing_a_file("share");
    let (url, prefix) = (test_url(), settings.prefix.clone());
    let open = || connect(settings.clone());
    let consuming = |q: &AmqpQueue| q.inner.follower.consuming.load(Ordering::SeqCst);
    let (first, second) = (open().await, open().await);
    first.enqueue(spec("a"), false).await.unwrap();
    assert_eq!(first.counts().await.unwrap().queued, 1);
    // Each reads the other's writes and its own; only the first consumes the stream.
    second.enqueue(spec("b"), false).await.unwrap();
    assert_eq!(second.counts().await.unwrap().queued, 2);
    first.enqueue(spec("c"), false).await.unwrap();
    // Everything anyone wrote before the question, as a redelivered job's question asks.
    second.inner.follower.read_all_again();
    assert_eq!(second.counts().await.unwrap().queued, 3);
    assert!(consuming(&first), "the first reader follows the stream");
    assert!(
        !consuming(&second),
        "a second process follows the stream into the same file"
    );
    // The follower goes: the other takes over (within a few seconds: the lock is let go when
    // the gone process's follower notices), and reads on.
    drop(first);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !consuming(&second) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "nobody took over following the stream"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    second.enqueue(spec("d"), false).await.unwrap();
    let counts = tokio::time::timeout(Duration::from_secs(20), second.counts())
        .await
        .expect("a read after the follower went waited 20 s")
        .unwrap();
    assert_eq!(counts.queued, 4);
    drop(second);
    let _ = std::fs::remove_dir_all(&dir);
    tokio::task::spawn_blocking(move || crate::delete_farm_blocking(&url, &prefix))
        .await
        .unwrap();
}

/// The process holding the records file's lock stops following without letting go (stopped
/// with SIGSTOP, say): a read waiting on it gives up after its 15 s without a move, as any read
/// of a copy that does not move, and from then on this process follows the stream itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_held_by_a_process_that_does_not_follow_costs_one_read() {
    let (settings, dir) = sharing_a_file("held");
    let (url, prefix) = (test_url(), settings.prefix.clone());
    let file = dir.join("records.db");
    let queue = connect(settings).await;
    // The stopped process: it holds the lock and never follows.
    let stopped = records::RecordStore::open(
        Some(&file),
        videofarm_core::QueueSettings::default().budget(),
    )
    .unwrap();
    let _held = stopped
        .lead()
        .unwrap()
        .expect("nobody else holds the lock yet");
    queue.enqueue(spec("a"), false).await.unwrap();
    let started = std::time::Instant::now();
    let first = queue.counts().await;
    assert!(
        first.is_err() && started.elapsed() < Duration::from_secs(25),
        "a read on a copy nobody moves: {first:?} after {:?}",
        started.elapsed()
    );
    let counts = tokio::time::timeout(Duration::from_secs(20), queue.counts())
        .await
        .expect("the next read waited 20 s")
        .unwrap();
    assert_eq!(counts.queued, 1);
    assert!(queue.inner.follower.consuming.load(Ordering::SeqCst));
    drop(queue);
    let _ = std::fs::remove_dir_all(&dir);
    tokio::task::spawn_blocking(move || crate::delete_farm_blocking(&url, &prefix))
        .await
        .unwrap();
}

/// A dropped queue handle is not kept alive by its records follower (nor its connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_queue_is_not_kept_alive_by_its_follower() {
    let (queue, url, prefix) = own_farm("follow").await;
    queue.counts().await.expect("the records answer");
    let weak = Arc::downgrade(&queue.inner);
    drop(queue);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while weak.upgrade().is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the follower kept the dropped queue alive"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::task::spawn_blocking(move || crate::delete_farm_blocking(&url, &prefix))
        .await
        .unwrap();
}
