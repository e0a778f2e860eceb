//! A broker that stops answering while the connection stays up by every sign (heartbeats
//! still pass): a publish waits for a confirm that does not come. lapin can also leave a
//! publish waiting for ever on a connection the broker ended (lapin issue 409). Either way a
//! write must give up within its bound, and the next one connect again: one write that waited
//! for ever held the records' lock, and every later write and read of its process waited
//! behind it. (A connect on such a link ends by the broker's own handshake timeout, 10 s.)

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use videofarm_core::{Control, JobFilter, JobSpec, Queue, QueueSettings, Records, WorkerInfo};
use videofarm_queue_amqp::{delete_farm_blocking, AmqpQueue, AmqpSettings};

struct Cleanup(String, String);
impl Drop for Cleanup {
    fn drop(&mut self) {
        delete_farm_blocking(&self.0, &self.1);
    }
}

/// A relay to the broker whose connections can go quiet: a quiet connection passes only
/// heartbeats, both ways, so it stays up by every sign and nothing sent on it is ever answered
/// (a broker too busy to answer; a connection lapin still thinks alive).
#[derive(Clone, Default)]
struct Relay {
    /// Every connection is quiet, new ones too.
    all: Arc<AtomicBool>,
    /// The connections numbered below this are quiet for good.
    before: Arc<AtomicU64>,
    /// A quiet connection still opens channels: the broker seems to answer until the first
    /// question asked on one.
    opens: Arc<AtomicBool>,
    made: Arc<AtomicU64>,
}

impl Relay {
    async fn start(&self, broker: &str) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (broker, relay) = (broker.to_owned(), self.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(&broker).await else {
                    continue;
                };
                let number = relay.made.fetch_add(1, Ordering::SeqCst);
                let (from_client, to_client) = client.into_split();
                let (from_server, to_server) = server.into_split();
                // The client starts with "AMQP" and the protocol version; the broker with frames.
                tokio::spawn(relay.clone().pump(number, from_client, to_server, 8));
                tokio::spawn(relay.clone().pump(number, from_server, to_client, 0));
            }
        });
        port
    }

    /// The connections made so far go quiet for good; new ones work.
    fn quiet_the_ones_there(&self) {
        self.before
            .store(self.made.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    fn quiet(&self, number: u64) -> bool {
        self.all.load(Ordering::SeqCst) || number < self.before.load(Ordering::SeqCst)
    }

    /// A channel's opening and the broker's yes to it (method frames of class 20, method 10
    /// and 11), when quiet connections still open channels.
    fn passes_open(&self, frame: &[u8]) -> bool {
        const METHOD: u8 = 1;
        self.opens.load(Ordering::SeqCst)
            && frame[0] == METHOD
            && frame.len() >= 11
            && frame[7..9] == [0, 20]
            && matches!(frame[9..11], [0, 10] | [0, 11])
    }

    /// Pass frames from `from` to `to` (after a header of `header` bytes), only heartbeats
    /// while the connection is quiet.
    async fn pump(
        self,
        number: u64,
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        mut header: usize,
    ) {
        const HEARTBEAT: u8 = 8;
        let mut pending = Vec::new();
        let mut buf = vec![0; 64 * 1024];
        while let Ok(n @ 1..) = from.read(&mut buf).await {
            pending.extend_from_slice(&buf[..n]);
            let mut out = Vec::new();
            if header > 0 && pending.len() >= header {
                out.extend(pending.drain(..header));
                header = 0;
            }
            // Frames: type, channel (2 bytes), size (4 bytes), payload, end byte.
            while header == 0 && pending.len() >= 7 {
                let size = u32::from_be_bytes(pending[3..7].try_into().unwrap()) as usize;
                if pending.len() < 7 + size + 1 {
                    break;
                }
                let frame: Vec<u8> = pending.drain(..7 + size + 1).collect();
                if !self.quiet(number) || frame[0] == HEARTBEAT || self.passes_open(&frame) {
                    out.extend(frame);
                }
            }
            if to.write_all(&out).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    }
}

/// A farm of its own through `relay`, with heartbeats every second (a lease of 2 s).
async fn farm(name: &str, relay: &Relay) -> (AmqpQueue, Cleanup) {
    let (settings, cleanup) = farm_settings(name, relay).await;
    (connect(settings).await, cleanup)
}

/// Another handle on the farm of `settings`: a process of its own, in all but name.
async fn connect(settings: AmqpSettings) -> AmqpQueue {
    let queue_settings = QueueSettings {
        lease: Duration::from_secs(2),
        ..Default::default()
    };
    AmqpQueue::connect(settings, queue_settings)
        .await
        .expect("RabbitMQ must be running for this test")
}

async fn farm_settings(name: &str, relay: &Relay) -> (AmqpSettings, Cleanup) {
    let url = std::env::var("VIDEOFARM_TEST_AMQP")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let prefix = format!("vftest-{name}-{}", std::process::id());
    let cleanup = Cleanup(url.clone(), prefix.clone());
    let broker = url
        .split('@')
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or("127.0.0.1:5672")
        .to_owned();
    let port = relay.start(&broker).await;
    let mut settings = AmqpSettings::new(&format!("amqp://guest:guest@127.0.0.1:{port}/%2f"));
    settings.prefix = prefix;
    settings.queue_expires = Some(Duration::from_secs(600));
    (settings, cleanup)
}

fn spec(key: &str) -> JobSpec {
    JobSpec {
        input: format!("/media/in/{key}.mpg").into(),
        output: format!("/media/out/{key}.mkv").into(),
        profile: "archive".into(),
        key: key.to_owned(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_the_broker_never_answers_gives_up_and_the_next_connects_again() {
    let relay = Relay::default();
    let (queue, _cleanup) = farm("stalled", &relay).await;
    queue.enqueue(spec("before"), false).await.unwrap();

    relay.all.store(true, Ordering::SeqCst);
    // The first write waits on its connection; the second connects again, and the new
    // connection is as quiet: both give up.
    for (n, key) in ["during", "during-again"].into_iter().enumerate() {
        let asked = Instant::now();
        let during = tokio::time::timeout(Duration::from_secs(60), queue.enqueue(spec(key), false))
            .await
            .unwrap_or_else(|_| panic!("write {n} the broker does not answer waited a minute"));
        assert!(during.is_err(), "write {n}: nothing was confirmed");
        eprintln!("write {n} gave up after {:?}", asked.elapsed());
    }

    relay.all.store(false, Ordering::SeqCst);
    let after = tokio::time::timeout(Duration::from_secs(60), queue.enqueue(spec("after"), false))
        .await
        .expect("the next write connects again");
    let after = after.expect("the next write succeeds").id().clone();
    let listed = tokio::time::timeout(Duration::from_secs(60), queue.jobs(&JobFilter::default()))
        .await
        .expect("the records are read again")
        .expect("the records answer again");
    assert!(listed.iter().any(|j| j.id == after), "{listed:?}");
}

/// The connections there are go quiet for good while new ones work: the process's writes
/// connect again, and so does the follower of the records stream, once a read has waited for
/// it in vain (before, every read failed until that connection died, which it never did).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_records_follower_whose_connection_goes_quiet_is_replaced() {
    let relay = Relay::default();
    let (queue, _cleanup) = farm("quietfollower", &relay).await;
    let before = queue
        .enqueue(spec("before"), false)
        .await
        .unwrap()
        .id()
        .clone();
    assert!(queue
        .jobs(&JobFilter::default())
        .await
        .unwrap()
        .iter()
        .any(|j| j.id == before));

    relay.quiet_the_ones_there();
    let asked = Instant::now();
    let again = |what: &str| {
        assert!(
            asked.elapsed() < Duration::from_secs(90),
            "{what} never worked again"
        );
    };
    // The first write gives up on its quiet connection; the next connects again.
    let after = loop {
        again("a write");
        match queue.enqueue(spec("after"), false).await {
            Ok(queued) => break queued.id().clone(),
            Err(e) => eprintln!("{:?}: {e}", asked.elapsed()),
        }
    };
    // A read waits for the follower to read that write back: on its quiet connection it never
    // does; the read fails, and the follower connects again for the next.
    let listed = loop {
        again("a read");
        match tokio::time::timeout(Duration::from_secs(60), queue.jobs(&JobFilter::default())).await
        {
            Ok(Ok(listed)) => break listed,
            Ok(Err(e)) => eprintln!("{:?}: {e}", asked.elapsed()),
            Err(_) => eprintln!("{:?}: a read waited a minute", asked.elapsed()),
        }
    };
    eprintln!("read again after {:?}", asked.elapsed());
    for id in [&before, &after] {
        assert!(listed.iter().any(|j| &j.id == id), "{id}: {listed:?}");
    }
}

/// Each question asked once on a channel of its own (a count of a queue's consumers, a read of
/// the cancelled list, a look at the failed queue, a worker's consumers, its control queue)
/// gives up when the broker opens the channel and then answers nothing, and works again on
/// the next connection. Before, each waited for ever: a sweep, `status` or `retry` that never
/// ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_off_questions_a_quiet_broker_never_answers_give_up() {
    let relay = Relay::default();
    let (settings, _cleanup) = farm_settings("quietasks", &relay).await;
    let worker = WorkerInfo::new("quiet", "h");
    let (count, cancels, failed, lease, register) = tokio::join!(
        connect(settings.clone()),
        connect(settings.clone()),
        connect(settings.clone()),
        connect(settings.clone()),
        connect(settings.clone()),
    );
    // Each connected, then quiet, but for opening channels.
    for queue in [&count, &cancels, &failed, &lease, &register] {
        queue.worker_count().await.expect("the broker answers");
    }
    relay.opens.store(true, Ordering::SeqCst);
    relay.quiet_the_ones_there();

    tokio::join!(
        within_a_minute("a count of consumers", count.worker_count()),
        within_a_minute("a read of the cancelled list", cancels.cancels_since(0)),
        within_a_minute("a retry of the failed", failed.retry_all_failed()),
        within_a_minute("a lease", lease.lease(&worker, Duration::from_secs(1))),
        within_a_minute("a worker's registration", register.register_worker(&worker)),
    );

    // The next of each connects again, and the broker answers it.
    relay.opens.store(false, Ordering::SeqCst);
    count.worker_count().await.expect("a count works again");
    cancels
        .cancels_since(0)
        .await
        .expect("a read of the cancelled list works again");
    failed
        .retry_all_failed()
        .await
        .expect("a retry works again");
    lease
        .lease(&worker, Duration::from_millis(500))
        .await
        .expect("a lease works again");
    register
        .register_worker(&worker)
        .await
        .expect("a registration works again");
}

/// Wait for `asked`, whatever its answer (printed, with how long it took): a panic after a
/// minute.
async fn within_a_minute<T: std::fmt::Debug>(
    what: &str,
    asked: impl std::future::Future<Output = Result<T, videofarm_core::QueueError>>,
) {
    let started = Instant::now();
    let answer = tokio::time::timeout(Duration::from_secs(60), asked)
        .await
        .unwrap_or_else(|_| panic!("{what} waited a minute"));
    eprintln!("{what}: {answer:?} after {:?}", started.elapsed());
}
