//! A broker that stops answering while the connection stays up by every sign (heartbeats
//! still pass): a publish waits for a confirm that does not come. lapin can also leave a
//! publish waiting for ever on a connection the broker ended (lapin issue 409). Either way a
//! write must give up within its bound, and the next one connect again: one write that waited
//! for ever held the records' lock, and every later write and read of its process waited
//! behind it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use videofarm_core::{JobFilter, JobSpec, Queue, QueueSettings, Records};
use videofarm_queue_amqp::{delete_farm_blocking, AmqpQueue, AmqpSettings};

struct Cleanup(String, String);
impl Drop for Cleanup {
    fn drop(&mut self) {
        delete_farm_blocking(&self.0, &self.1);
    }
}

/// A relay to the broker that can go quiet: while `stalled`, only heartbeats reach the
/// broker, so the connection stays up by every sign and nothing sent on it is ever answered
/// (a broker too busy to answer; a publish that waits for its confirm for ever).
async fn relay(broker: &str, stalled: Arc<AtomicBool>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let broker = broker.to_owned();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(&broker).await else {
                continue;
            };
            let (mut from_client, mut to_client) = client.into_split();
            let (mut from_server, mut to_server) = server.into_split();
            let stalled = stalled.clone();
            tokio::spawn(async move {
                let mut pending = Vec::new();
                let mut header_sent = false;
                let mut buf = vec![0; 64 * 1024];
                while let Ok(n @ 1..) = from_client.read(&mut buf).await {
                    pending.extend_from_slice(&buf[..n]);
                    let mut out = Vec::new();
                    if !header_sent && pending.len() >= 8 {
                        // "AMQP" and the protocol version.
                        out.extend(pending.drain(..8));
                        header_sent = true;
                    }
                    // Frames: type, channel (2 bytes), size (4 bytes), payload, end byte.
                    while header_sent && pending.len() >= 7 {
                        let size = u32::from_be_bytes(pending[3..7].try_into().unwrap()) as usize;
                        if pending.len() < 7 + size + 1 {
                            break;
                        }
                        let frame: Vec<u8> = pending.drain(..7 + size + 1).collect();
                        const HEARTBEAT: u8 = 8;
                        if !stalled.load(Ordering::SeqCst) || frame[0] == HEARTBEAT {
                            out.extend(frame);
                        }
                    }
                    if to_server.write_all(&out).await.is_err() {
                        break;
                    }
                }
                let _ = to_server.shutdown().await;
            });
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
                let _ = to_client.shutdown().await;
            });
        }
    });
    port
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
    let url = std::env::var("VIDEOFARM_TEST_AMQP")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let prefix = format!("vftest-oneway-{}", std::process::id());
    let _cleanup = Cleanup(url.clone(), prefix.clone());
    let stalled = Arc::new(AtomicBool::new(false));
    let port = relay("127.0.0.1:5672", stalled.clone()).await;
    let mut settings = AmqpSettings::new(&format!("amqp://guest:guest@127.0.0.1:{port}/%2f"));
    settings.prefix = prefix.clone();
    settings.queue_expires = Some(Duration::from_secs(600));
    // Heartbeats every second: the broker ends a connection it hears nothing from in seconds.
    let queue_settings = QueueSettings {
        lease: Duration::from_secs(2),
        ..Default::default()
    };
    let queue = AmqpQueue::connect(settings, queue_settings)
        .await
        .expect("RabbitMQ must be running for this test");
    queue.enqueue(spec("before"), false).await.unwrap();

    stalled.store(true, Ordering::SeqCst);
    let asked = Instant::now();
    let during = tokio::time::timeout(
        Duration::from_secs(60),
        queue.enqueue(spec("during"), false),
    )
    .await
    .expect("a write the broker does not answer gives up; it waited a minute");
    assert!(during.is_err(), "nothing was confirmed");
    eprintln!("gave up after {:?}", asked.elapsed());

    stalled.store(false, Ordering::SeqCst);
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
