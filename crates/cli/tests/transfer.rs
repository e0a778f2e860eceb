//! Workers that cannot see the media: the worker runs in a mount namespace of its own where the
//! media folder is hidden under an empty tmpfs (as root, as CI runs), so the only way to the
//! files is `videofarm serve` on the machine that holds them. The job must end with a verified
//! output on the server, the source untouched, and nothing left in the staging area or the
//! worker's cache; on both backends.

mod common;

use common::files::*;
use common::*;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A certificate for 127.0.0.1 signed by a CA of its own, and its key, PEM, made with openssl;
/// the CA's certificate is what the worker trusts.
fn certificate(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let p = |name: &str| dir.join(name);
    let openssl = |args: &[&str]| {
        let made = Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .output()
            .expect("openssl is installed");
        assert!(
            made.status.success(),
            "openssl {args:?}: {}",
            text(&made.stderr)
        );
    };
    std::fs::write(
        p("leaf.ext"),
        "basicConstraints=critical,CA:FALSE\nsubjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "key.pem",
        "-out",
        "leaf.csr",
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "leaf.ext",
        "-out",
        "cert.pem",
    ]);
    (p("cert.pem"), p("key.pem"), p("ca.pem"))
}

fn blind(farm: Farm, tls: bool) {
    let media = tempfile::tempdir().unwrap();
    let tapes = media.path().join("tapes");
    let out = media.path().join("encoded");
    std::fs::create_dir_all(&tapes).unwrap();
    clip(&tapes.join("tape one.mpg"), 2);
    let source = std::fs::read(tapes.join("tape one.mpg")).unwrap();
    let port = free_port();
    // With TLS: serve's certificate, which the worker trusts.
    let (scheme, certs) = if tls {
        let (cert, key, ca) = certificate(farm.root());
        let lines = format!("tls_cert = {cert:?}\ntls_key = {key:?}\nfiles_ca = {ca:?}\n");
        ("https", lines)
    } else {
        ("http", String::new())
    };
    let cache = media_config(
        &farm,
        media.path(),
        &format!("{scheme}://127.0.0.1:{port}"),
        &certs,
        "",
    );
    let mut server = serve(&farm, port);
    let mut cmd = farm.cmd(["enqueue", "--out"]);
    cmd.arg(&out).arg(tapes.join("tape one.mpg"));
    let queued = cmd.output().unwrap();
    assert!(queued.status.success(), "{}", text(&queued.stderr));
    let id = farm.jobs()[0]["id"].as_str().unwrap().to_owned();

    let mut worker = blind_worker(&farm, media.path(), "far");
    wait_until("the job is done", Duration::from_secs(60), || {
        farm.job(&id)["state"] != "queued" && farm.job(&id)["state"] != "running"
    });
    let job = farm.job(&id);
    assert_eq!(job["state"], "succeeded", "{job}\n{}", farm.log("far"));
    let log = farm.log("far");
    assert!(
        log.contains("fetching the input") && log.contains("published by the file server"),
        "{log}"
    );
    let (streams, duration) = probe(&out.join("tape one.mkv"));
    assert_eq!(streams[0].1, "h264");
    assert!((duration - 2.0).abs() < 0.3, "{duration}");
    // The record describes the file the server published (before: 1 frame for 50).
    let published = std::fs::metadata(out.join("tape one.mkv")).unwrap().len();
    assert_eq!(job["result"]["frames"], 50, "{job}");
    assert_eq!(job["result"]["output_size"], published, "{job}");
    assert_eq!(
        std::fs::read(tapes.join("tape one.mpg")).unwrap(),
        source,
        "the source is untouched"
    );
    assert_eq!(
        leftovers(&out),
        vec![out.join("tape one.mkv").display().to_string()],
        "no staging file is left"
    );
    assert!(
        leftovers(&cache).is_empty(),
        "nothing is left in the cache: {:?}",
        leftovers(&cache)
    );

    if !tls {
        // The server's metrics count the bytes it moved.
        assert!(bytes_sent(port) >= source.len() as u64);
    }

    signal(worker.id(), "TERM");
    let _ = worker.wait();
    let _ = server.kill();
    let _ = server.wait();
}

#[test]
fn a_worker_that_cannot_see_the_media_gets_and_sends_its_files_through_serve() {
    blind(Farm::new(), false);
}

#[test]
fn the_files_can_move_over_https() {
    blind(Farm::new(), true);
}

#[test]
fn on_rabbitmq_a_worker_that_cannot_see_the_media_gets_and_sends_its_files_through_serve() {
    blind(Farm::amqp(""), false);
}

/// A TCP relay to `serve` that moves at most `rate` bytes a second each way, counts what it
/// moved, and can flip one byte of what the server sends: a slow link, made faulty on demand.
struct Link {
    port: u16,
    to_client: Arc<AtomicU64>,
    to_server: Arc<AtomicU64>,
    flip_at: Arc<AtomicU64>,
}

impl Link {
    fn new(server: u16, rate: u64) -> Link {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let link = Link {
            port: listener.local_addr().unwrap().port(),
            to_client: Default::default(),
            to_server: Default::default(),
            flip_at: Arc::new(AtomicU64::new(u64::MAX)),
        };
        let (to_client, to_server, flip_at) = (
            link.to_client.clone(),
            link.to_server.clone(),
            link.flip_at.clone(),
        );
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(upstream) = std::net::TcpStream::connect(("127.0.0.1", server)) else {
                    continue;
                };
                let pipes = [
                    (
                        client.try_clone().unwrap(),
                        upstream.try_clone().unwrap(),
                        to_server.clone(),
                        None,
                    ),
                    (upstream, client, to_client.clone(), Some(flip_at.clone())),
                ];
                for (mut from, mut to, counted, flip) in pipes {
                    std::thread::spawn(move || {
                        use std::io::{Read, Write};
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            let n = match from.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            let before = counted.fetch_add(n as u64, Ordering::SeqCst);
                            if let Some(flip) = &flip {
                                let at = flip.load(Ordering::SeqCst);
                                if at >= before && at < before + n as u64 {
                                    buf[(at - before) as usize] ^= 0x55;
                                    flip.store(u64::MAX, Ordering::SeqCst);
                                }
                            }
                            if to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                            std::thread::sleep(Duration::from_micros(n as u64 * 1_000_000 / rate));
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        link
    }
}

/// A capture that does not compress: its encode is about as big, so both ways take a while.
fn noisy_capture(path: &Path) {
    ffmpeg(
        &[
            "-f",
            "lavfi",
            "-i",
            "nullsrc=s=320x240:r=25,geq=random(1)*255:128:128",
            "-f",
            "lavfi",
            "-i",
            "sine",
            "-t",
            "4",
            "-c:v",
            "mpeg2video",
            "-q:v",
            "2",
            "-c:a",
            "mp2",
        ],
        path,
    );
}

struct Faulty {
    farm: Farm,
    _media: tempfile::TempDir,
    tapes: std::path::PathBuf,
    out: std::path::PathBuf,
    cache: std::path::PathBuf,
    server_port: u16,
    link: Link,
}

/// A farm whose worker cannot see the media and reaches `serve` through a slow [`Link`].
fn faulty_farm() -> Faulty {
    let farm = Farm::new();
    let media = tempfile::tempdir().unwrap();
    let tapes = media.path().join("tapes");
    let out = media.path().join("encoded");
    std::fs::create_dir_all(&tapes).unwrap();
    noisy_capture(&tapes.join("noise.mpg"));
    let server_port = free_port();
    let size = std::fs::metadata(tapes.join("noise.mpg")).unwrap().len();
    // The input takes about two seconds each way.
    let link = Link::new(server_port, size / 2);
    let cache = media_config(
        &farm,
        media.path(),
        &format!("http://127.0.0.1:{}", link.port),
        "",
        "",
    );
    let mut cmd = farm.cmd(["enqueue", "--out"]);
    cmd.arg(&out).arg(tapes.join("noise.mpg"));
    assert!(cmd.output().unwrap().status.success());
    Faulty {
        farm,
        _media: media,
        tapes,
        out,
        cache,
        server_port,
        link,
    }
}

fn file_size_in(dir: &Path, name_has: &str) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(name_has))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .max()
        .unwrap_or(0)
}

/// The server is killed and started again during the download and during the upload: both
/// resume where they stopped, so the bytes moved stay near the file sizes.
#[test]
fn transfers_resume_after_the_server_restarts() {
    let f = faulty_farm();
    let farm = &f.farm;
    let mut server = serve(farm, f.server_port);
    let mut worker = blind_worker(farm, f.tapes.parent().unwrap(), "far");
    let input_size = std::fs::metadata(f.tapes.join("noise.mpg")).unwrap().len();
    // `inspect` shows the fetch as it goes: bytes of the whole, and the rate.
    wait_until("inspect shows the fetch", Duration::from_secs(30), || {
        farm.inspect().iter().any(|w| {
            w["active"].as_array().into_iter().flatten().any(|j| {
                j["transfer"]["sending"] == false
                    && j["transfer"]["bytes"].as_u64().is_some_and(|b| b > 0)
                    && j["transfer"]["total"].as_u64() == Some(input_size)
                    && j["transfer"]["rate"].as_f64().is_some_and(|r| r > 0.0)
            })
        })
    });
    wait_until(
        "a third of the input is here",
        Duration::from_secs(30),
        || file_size_in(&f.cache.join("inputs"), ".part") > input_size / 3,
    );
    reap(server);
    std::thread::sleep(Duration::from_millis(500));
    server = serve(farm, f.server_port);
    let downloaded_before_upload = Arc::new(AtomicBool::new(false));
    wait_until(
        "a third of the output is staged",
        Duration::from_secs(60),
        || {
            let staged = file_size_in(&f.out, ".videofarm-upload-");
            if staged > 0 && !downloaded_before_upload.swap(true, Ordering::SeqCst) {
                // Everything the server sent so far was the input.
                let sent = f.link.to_client.load(Ordering::SeqCst);
                assert!(
                    sent < input_size * 12 / 10,
                    "the download resumed: {sent} bytes for {input_size}"
                );
            }
            staged > 400_000
        },
    );
    reap(server);
    std::thread::sleep(Duration::from_millis(500));
    server = serve(farm, f.server_port);
    let id = farm.jobs()[0]["id"].as_str().unwrap().to_owned();
    wait_until("the job ends", Duration::from_secs(60), || {
        !matches!(farm.job(&id)["state"].as_str(), Some("queued" | "running"))
    });
    assert_eq!(farm.job(&id)["state"], "succeeded", "{}", farm.log("far"));
    let output_size = std::fs::metadata(f.out.join("noise.mkv")).unwrap().len();
    let received = f.link.to_server.load(Ordering::SeqCst);
    assert!(
        received < output_size * 12 / 10,
        "the upload resumed: {received} bytes for {output_size}"
    );
    let log = farm.log("far");
    assert!(
        log.contains("the download broke off; resuming")
            && log.contains("the upload broke off; resuming"),
        "{log}"
    );
    assert!(leftovers(&f.cache).is_empty(), "{:?}", leftovers(&f.cache));
    signal(worker.id(), "TERM");
    let _ = worker.wait();
    reap(server);
}

/// The server is away for 12 s in the middle of the upload (longer than the whole budget of
/// the tries before: about 4 s): the upload waits it out and resumes where it stopped, the job
/// succeeds on its first attempt, and the staged bytes are kept (before, the attempt failed,
/// the staged upload was thrown away and the tape encoded again).
#[test]
fn an_upload_waits_out_a_server_outage_without_counting_an_attempt() {
    let f = faulty_farm();
    let farm = &f.farm;
    let mut server = serve(farm, f.server_port);
    let mut worker = blind_worker(farm, f.tapes.parent().unwrap(), "far");
    wait_until(
        "a third of the output is staged",
        Duration::from_secs(60),
        || file_size_in(&f.out, ".videofarm-upload-") > 400_000,
    );
    reap(server);
    std::thread::sleep(Duration::from_secs(12));
    server = serve(farm, f.server_port);
    let id = farm.jobs()[0]["id"].as_str().unwrap().to_owned();
    wait_until("the job ends", Duration::from_secs(60), || {
        !matches!(farm.job(&id)["state"].as_str(), Some("queued" | "running"))
    });
    let job = farm.job(&id);
    assert_eq!(job["state"], "succeeded", "{}", farm.log("far"));
    assert_eq!(job["attempts"], 1, "no attempt counted: {job}");
    let output_size = std::fs::metadata(f.out.join("noise.mkv")).unwrap().len();
    let received = f.link.to_server.load(Ordering::SeqCst);
    assert!(
        received < output_size * 12 / 10,
        "the upload resumed: {received} bytes for {output_size}"
    );
    signal(worker.id(), "TERM");
    let _ = worker.wait();
    reap(server);
}

/// A byte flipped on the way is caught by the hash, and the input is fetched again.
#[test]
fn a_byte_flipped_in_transit_is_caught_and_fetched_again() {
    let f = faulty_farm();
    let farm = &f.farm;
    let input_size = std::fs::metadata(f.tapes.join("noise.mpg")).unwrap().len();
    f.link.flip_at.store(input_size / 2, Ordering::SeqCst);
    let server = serve(farm, f.server_port);
    let mut worker = blind_worker(farm, f.tapes.parent().unwrap(), "far");
    let id = farm.jobs()[0]["id"].as_str().unwrap().to_owned();
    wait_until("the job ends", Duration::from_secs(60), || {
        !matches!(farm.job(&id)["state"].as_str(), Some("queued" | "running"))
    });
    assert_eq!(farm.job(&id)["state"], "succeeded", "{}", farm.log("far"));
    assert_eq!(
        f.link.flip_at.load(Ordering::SeqCst),
        u64::MAX,
        "a byte was flipped"
    );
    assert!(
        farm.log("far")
            .contains("does not match its hash; fetching it again"),
        "{}",
        farm.log("far")
    );
    let (streams, _) = probe(&f.out.join("noise.mkv"));
    assert_eq!(streams[0].1, "h264");
    signal(worker.id(), "TERM");
    let _ = worker.wait();
    reap(server);
}

/// The server's disk fills during an upload: what was staged goes at once (nothing partial is
/// left to fill it more), the upload is not resumed over and over, and the job fails with the
/// reason after its attempts, its source untouched.
#[test]
fn a_full_disk_on_the_server_drops_the_upload_and_says_so() {
    let f = faulty_farm();
    let farm = &f.farm;
    let _disk = mount_tiny_fs(&f.out, "64k");
    let source = std::fs::read(f.tapes.join("noise.mpg")).unwrap();
    let server = serve(farm, f.server_port);
    let mut worker = blind_worker(farm, f.tapes.parent().unwrap(), "far");
    let id = farm.jobs()[0]["id"].as_str().unwrap().to_owned();
    wait_until("the job ends", Duration::from_secs(60), || {
        !matches!(farm.job(&id)["state"].as_str(), Some("queued" | "running"))
    });
    let job = farm.job(&id);
    assert_eq!(job["state"], "failed", "{job}\n{}", farm.log("far"));
    let error = job["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("noise.mkv") && error.contains("disk that holds it is full"),
        "{error}"
    );
    assert_eq!(job["attempts"], 2, "{job}");
    assert!(
        leftovers(&f.out).is_empty(),
        "nothing staged is left: {:?}",
        leftovers(&f.out)
    );
    assert!(
        !farm.log("far").contains("the upload broke off; resuming"),
        "a full disk is not resumed: {}",
        farm.log("far")
    );
    assert_eq!(std::fs::read(f.tapes.join("noise.mpg")).unwrap(), source);
    signal(worker.id(), "TERM");
    let _ = worker.wait();
    reap(server);
}
