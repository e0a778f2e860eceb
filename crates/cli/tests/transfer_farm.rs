//! Workers that cannot see the media in a working farm: the next job's input arrives while the
//! current one encodes, and a split tape is encoded by workers that see the media and workers
//! that do not, each of those fetching the input once.

mod common;

use common::files::*;
use common::*;
use std::path::Path;
use std::time::Duration;

fn enqueue(farm: &Farm, args: &[&str], out: &Path, inputs: &[&Path]) {
    let mut cmd = farm.cmd(["enqueue"]);
    cmd.args(args).arg("--out").arg(out).args(inputs);
    let queued = cmd.output().unwrap();
    assert!(queued.status.success(), "{}", text(&queued.stderr));
}

/// A media folder (`tapes/`, `encoded/`) that `serve` holds for `farm`, the farm configured with
/// `keys` and `tables` more; the transfer cache of its workers. `serve` stops with it.
struct Media {
    dir: tempfile::TempDir,
    tapes: std::path::PathBuf,
    out: std::path::PathBuf,
    port: u16,
    cache: std::path::PathBuf,
    server: std::process::Child,
}

impl Drop for Media {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

fn served(farm: &Farm, keys: &str, tables: &str) -> Media {
    let dir = tempfile::tempdir().unwrap();
    let (tapes, out) = (dir.path().join("tapes"), dir.path().join("encoded"));
    std::fs::create_dir_all(&tapes).unwrap();
    let port = free_port();
    let cache = media_config(
        farm,
        dir.path(),
        &format!("http://127.0.0.1:{port}"),
        keys,
        tables,
    );
    let server = serve(farm, port);
    Media {
        dir,
        tapes,
        out,
        port,
        cache,
        server,
    }
}

/// Inputs fetched whole into the cache (`inputs/HASH`, not partial copies).
fn whole_inputs(cache: &Path) -> usize {
    std::fs::read_dir(cache.join("inputs"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_none())
        .count()
}

fn settled(farm: &Farm) -> bool {
    farm.jobs()
        .iter()
        .all(|j| !matches!(j["state"].as_str(), Some("queued" | "running")))
}

/// One encoder, two jobs: while the first encodes, the worker already holds the second and
/// fetches its input (`transfer_ahead`, 1 by default), so no encoder waits for the network.
#[test]
fn the_next_input_is_fetched_while_the_current_one_encodes() {
    let farm = Farm::new();
    let media = served(&farm, "", "");
    let (tapes, out, cache) = (&media.tapes, &media.out, &media.cache);
    // Two different inputs (the cache keeps one copy of identical ones).
    clip(&tapes.join("a.mpg"), 3);
    clip(&tapes.join("b.mpg"), 4);
    // `slow` encodes in real time: each job takes its clip's 3 or 4 s.
    enqueue(
        &farm,
        &["--profile", "slow"],
        out,
        &[&tapes.join("a.mpg"), &tapes.join("b.mpg")],
    );
    let mut worker = blind_worker(&farm, media.dir.path(), "far");
    let mut overlapped = false;
    wait_until("both jobs end", Duration::from_secs(60), || {
        for w in farm.inspect() {
            let active = w["active"].as_array().cloned().unwrap_or_default();
            let encoding = active
                .iter()
                .any(|j| j["fps"].as_f64().is_some_and(|f| f > 0.0));
            // Both inputs here while one encodes: the held job's was fetched meanwhile.
            overlapped |= encoding && active.len() == 2 && whole_inputs(cache) == 2;
        }
        settled(&farm)
    });
    for job in farm.jobs() {
        assert_eq!(job["state"], "succeeded", "{job}\n{}", farm.log("far"));
    }
    assert!(
        overlapped,
        "the second job was held (its input fetched) while the first encoded: {}",
        farm.log("far")
    );
    assert!(
        leftovers(cache).is_empty(),
        "nothing is left in the cache: {:?}",
        leftovers(cache)
    );
    signal(worker.id(), "TERM");
    let _ = worker.wait();
}

/// A split tape on a farm of one worker that sees the media (it plans the tape and joins it)
/// and one that does not: both encode chunks; the one that cannot see the media fetches the
/// tape once for all of its chunks and sends each back into the tape's work folder.
fn split_over_a_mixed_farm(farm: Farm) {
    let media = served(&farm, "", SLOW_SPLIT);
    let (out, cache) = (&media.out, &media.cache);
    let tape = media.tapes.join("tape.mpg");
    clip(&tape, 12);
    let size = std::fs::metadata(&tape).unwrap().len();
    enqueue(
        &farm,
        &["--profile", "slowsplit", "--split", "2"],
        out,
        &[&tape],
    );
    let mut near = farm.spawn_worker("near", 1);
    let work = out.join(".tape.mkv.videofarm-split");
    wait_until("the tape is planned", Duration::from_secs(30), || {
        work.join("plan.json").is_file()
    });
    let mut far = blind_worker(&farm, media.dir.path(), "far");
    let started = std::time::Instant::now();
    while !settled(&farm) {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the tape ends: {:#?}\nnear:\n{}\nfar:\n{}",
            farm.jobs(),
            farm.log("near"),
            farm.log("far")
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let jobs = farm.jobs();
    assert_eq!(
        jobs[0]["state"],
        "succeeded",
        "{jobs:#?}\nnear:\n{}\nfar:\n{}",
        farm.log("near"),
        farm.log("far")
    );
    let (streams, duration) = probe(&out.join("tape.mkv"));
    assert_eq!(streams[0].1, "h264");
    assert!((duration - 12.0).abs() < 0.3, "{duration}");
    // The tape's report counts every frame once: each chunk's measurements reached the join,
    // those of the worker without the media through the file server.
    assert_eq!(
        jobs[0]["result"]["tape"]["frames"], 300,
        "{:#}",
        jobs[0]["result"]["tape"]["fields"]
    );
    let far_chunks = encoded_chunks(&farm.log("far"));
    let near_chunks = encoded_chunks(&farm.log("near"));
    assert!(
        far_chunks.len() >= 2 && !near_chunks.is_empty(),
        "both encode chunks: far {far_chunks:?}, near {near_chunks:?}"
    );
    assert_eq!(far_chunks.len() + near_chunks.len(), 6, "each chunk once");
    let sent = bytes_sent(media.port);
    assert!(
        sent < size * 3 / 2,
        "the tape was fetched once for {} chunks: {sent} bytes sent for {size}",
        far_chunks.len()
    );
    assert!(!work.exists(), "the work folder goes after the join");
    assert_eq!(
        leftovers(out),
        vec![out.join("tape.mkv").display().to_string()]
    );
    signal(far.id(), "TERM");
    let _ = far.wait();
    assert!(
        leftovers(cache).is_empty(),
        "nothing is left in the cache once the worker stops: {:?}",
        leftovers(cache)
    );
    signal(near.id(), "TERM");
    let _ = near.wait();
}

#[test]
fn a_split_tape_is_encoded_by_workers_that_see_the_media_and_workers_that_do_not() {
    split_over_a_mixed_farm(Farm::new());
}

#[test]
fn on_rabbitmq_a_split_tape_is_encoded_by_workers_that_see_the_media_and_workers_that_do_not() {
    split_over_a_mixed_farm(Farm::amqp(""));
}

/// A farm where no worker sees the media (`transfer_split_wait_secs = 0`: do not wait for one):
/// a split tape is encoded whole by a worker without it, and the job says why.
#[test]
fn a_split_tape_nobody_can_plan_is_encoded_whole_and_says_why() {
    let farm = Farm::new();
    let media = served(&farm, "transfer_split_wait_secs = 0\n", SLOW_SPLIT);
    let out = &media.out;
    let tape = media.tapes.join("tape.mpg");
    clip(&tape, 6);
    enqueue(
        &farm,
        &["--profile", "slowsplit", "--split", "2"],
        out,
        &[&tape],
    );
    let mut far = blind_worker(&farm, media.dir.path(), "far");
    wait_until("the tape ends", Duration::from_secs(60), || settled(&farm));
    let job = &farm.jobs()[0];
    assert_eq!(job["state"], "succeeded", "{job}\n{}", farm.log("far"));
    let note = job["result"]["note"].as_str().unwrap_or_default();
    assert!(
        note.contains("not split: no worker that sees the media planned it"),
        "{job}"
    );
    let (_, duration) = probe(&out.join("tape.mkv"));
    assert!((duration - 6.0).abs() < 0.3, "{duration}");
    assert!(!out.join(".tape.mkv.videofarm-split").exists());
    signal(far.id(), "TERM");
    let _ = far.wait();
}

/// `transfer = "always"`: even a worker that sees the media moves the files through `serve`;
/// `transfer = "never"`: a worker that cannot see them fails the job with the reason and
/// fetches nothing.
#[test]
fn transfer_always_goes_through_serve_and_never_does_not() {
    let farm = Farm::new();
    let media = served(&farm, "transfer = \"always\"\n", "");
    clip(&media.tapes.join("a.mpg"), 1);
    enqueue(&farm, &[], &media.out, &[&media.tapes.join("a.mpg")]);
    let mut near = farm.spawn_worker("near", 1);
    wait_until("the job ends", Duration::from_secs(60), || settled(&farm));
    assert_eq!(farm.jobs()[0]["state"], "succeeded", "{}", farm.log("near"));
    let log = farm.log("near");
    assert!(
        log.contains("fetching the input") && log.contains("published by the file server"),
        "{log}"
    );
    signal(near.id(), "TERM");
    let _ = near.wait();

    let farm = Farm::new();
    let media = served(&farm, "transfer = \"never\"\n", "");
    clip(&media.tapes.join("b.mpg"), 1);
    enqueue(&farm, &[], &media.out, &[&media.tapes.join("b.mpg")]);
    let mut far = blind_worker(&farm, media.dir.path(), "far");
    wait_until("the job ends", Duration::from_secs(60), || settled(&farm));
    let job = &farm.jobs()[0];
    assert_eq!(job["state"], "failed", "{job}");
    assert!(
        job["error"].as_str().unwrap_or_default().contains("b.mpg"),
        "{job}"
    );
    assert!(!farm.log("far").contains("fetching the input"));
    assert_eq!(bytes_sent(media.port), 0, "nothing was fetched");
    signal(far.id(), "TERM");
    let _ = far.wait();
}
