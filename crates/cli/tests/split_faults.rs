//! A split tape meets faults: every worker killed mid-tape, a cancel, a retry after a cancel,
//! a chunk cancelled alone, a chunk that fails for good.

mod common;

use common::split::*;
use common::*;
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

fn killing_every_worker_mid_tape(farm: Farm) {
    let tape = farm.input.join("tape.mpg");
    interlaced_tape(&tape, 8);
    enqueue_split(&farm, &tape, "2");
    let work = work_folder(&farm, "tape.mkv");

    let mut first = farm.spawn_worker("first", 2);
    wait_until(
        "a chunk is done and others are encoding",
        Duration::from_secs(30),
        || {
            chunk_files(&work).len() == 2
                && farm
                    .inspect()
                    .iter()
                    .any(|w| w["active"].as_array().is_some_and(|a| !a.is_empty()))
        },
    );
    let ffmpegs = children_named(first.id(), "ffmpeg");
    signal(first.id(), "KILL");
    first.wait().unwrap();
    let done_before = chunk_files(&work);
    assert!(
        !done_before.is_empty() && done_before.len() < 4,
        "{done_before:?}"
    );
    wait_until("its ffmpegs die with it", Duration::from_secs(5), || {
        ffmpegs.iter().all(|pid| !alive(*pid))
    });

    let second = farm.spawn_worker("second", 2);
    wait_until("the tape is done", Duration::from_secs(90), || {
        farm.out.join("tape.mkv").is_file()
    });
    wait_until("the worker is idle", Duration::from_secs(10), || {
        farm.inspect()
            .iter()
            .all(|w| w["active"].as_array().is_some_and(|a| a.is_empty()))
    });
    reap(second);

    let all = [
        "chunk-00000.nut",
        "chunk-00001.nut",
        "chunk-00002.nut",
        "chunk-00003.nut",
    ];
    let again = encoded_chunks(&farm.log("second"));
    let missing: Vec<String> = all
        .iter()
        .map(|c| c.to_string())
        .filter(|c| !done_before.contains(c))
        .collect();
    assert_eq!(
        again, missing,
        "after the restart only the chunks not finished before the kill are encoded, once each"
    );
    let joins = farm.log("first").matches("joining the chunks").count()
        + farm.log("second").matches("joining the chunks").count();
    assert_eq!(joins, 1, "the join runs exactly once");
    assert_eq!(
        frame_hashes(&farm.out.join("tape.mkv")).len(),
        frame_hashes(&tape).len(),
        "every frame, once"
    );
    assert!(!work.exists(), "no work folder left");
    assert_eq!(leftovers(&farm.out), Vec::<PathBuf>::new());
}

#[test]
fn killing_every_worker_mid_tape_encodes_only_the_chunks_in_flight_again_and_joins_once() {
    killing_every_worker_mid_tape(slow_farm());
}

#[test]
fn on_rabbitmq_killing_every_worker_mid_tape_encodes_only_the_chunks_in_flight_again() {
    killing_every_worker_mid_tape(slow(with_profiles(Farm::amqp(""))));
}

/// How a test cancels.
enum By {
    Cli,
    /// `POST /api/jobs/ID/cancel`, as the page does.
    Api,
}

fn cancelling_a_tape(farm: Farm, records: bool, by: By) {
    let tape = farm.input.join("tape.mpg");
    interlaced_tape(&tape, 8);
    let id = enqueue_split(&farm, &tape, "2");
    let work = work_folder(&farm, "tape.mkv");
    let worker = farm.spawn_worker("w", 1);
    // A chunk, not the tape's own attempt planning it (which ends once the chunks are queued,
    // and the tape then waits queued until a chunk starts).
    wait_until("a chunk is encoding", Duration::from_secs(30), || {
        farm.inspect().iter().any(|w| {
            w["active"]
                .as_array()
                .is_some_and(|a| a.iter().any(|job| job["id"] != id.as_str()))
        }) && work.exists()
    });
    if records {
        // One job to the user: the tape runs while a chunk of it does.
        let status = farm.status();
        assert_eq!(
            (
                status["running"].as_u64(),
                status["queued"].as_u64(),
                status["retrying"].as_u64()
            ),
            (Some(1), Some(0), Some(0)),
            "{status}"
        );
    }
    match by {
        By::Cli => {
            let out = farm.run(["cancel", &id]);
            assert!(out.status.success(), "{}", text(&out.stderr));
        }
        By::Api => {
            let port = common::files::free_port();
            let mut server = common::files::serve(&farm, port);
            let answer = common::files::http_post(port, &format!("/api/jobs/{id}/cancel"));
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
            let _ = server.kill();
            let _ = server.wait();
        }
    }
    if records {
        assert_eq!(farm.job(&id)["state"], "cancelled");
        let out = farm.run(["jobs", "--json", "--all"]);
        let jobs: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
        assert!(
            jobs.iter()
                .filter(|j| j["parent"] == id.as_str())
                .all(|j| j["state"] == "cancelled"),
            "{jobs:#?}"
        );
    }
    wait_until("the worker is idle", Duration::from_secs(10), || {
        farm.inspect()
            .iter()
            .all(|w| w["active"].as_array().is_some_and(|a| a.is_empty()))
    });
    let gone = std::time::Instant::now() + Duration::from_secs(10);
    while work.exists() {
        assert!(
            std::time::Instant::now() < gone,
            "the work folder is still there: {:?}\n{}",
            chunk_files(&work),
            farm.log("w")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Nothing of the tape runs again (its other chunks and the tape itself are dropped).
    std::thread::sleep(Duration::from_secs(2));
    assert!(farm.outputs().is_empty(), "{:?}", farm.outputs());
    assert!(!farm.log("w").contains("joining"), "{}", farm.log("w"));
    reap(worker);
}

#[test]
fn cancelling_a_tape_cancels_its_chunks_and_leaves_no_work_folder() {
    cancelling_a_tape(slow_farm(), true, By::Cli);
}

/// The page and the API cancel as the CLI does: the work folder goes all the same (before,
/// only the CLI command removed it).
#[test]
fn cancelling_a_tape_from_the_api_leaves_no_work_folder() {
    cancelling_a_tape(slow_farm(), true, By::Api);
}

#[test]
fn on_rabbitmq_cancelling_a_tape_stops_its_chunks_and_leaves_no_work_folder() {
    cancelling_a_tape(slow(with_profiles(Farm::amqp(""))), false, By::Cli);
}

/// Cancel a tape with some chunks done, then retry it: the cancel answers at once, a worker
/// removes the work folder (chunks and all), and the retried tape encodes every chunk it lacks
/// and is whole (before: the finished chunks stayed `succeeded` without their files, and the
/// tape waited for them forever).
fn cancelling_then_retrying_a_half_done_tape(farm: Farm) {
    let tape = farm.input.join("tape.mpg");
    interlaced_tape(&tape, 8);
    let id = enqueue_split(&farm, &tape, "2");
    let work = work_folder(&farm, "tape.mkv");
    let worker = farm.spawn_worker("w", 2);
    wait_until("some chunks are done", Duration::from_secs(60), || {
        chunk_files(&work).len() >= 2
    });
    let asked = std::time::Instant::now();
    let out = farm.run(["cancel", &id]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(&format!("{id}: cancelled")),
        "{}",
        text(&out.stdout)
    );
    eprintln!("cancel answered in {:?}", asked.elapsed());
    wait_until(
        "a worker removes the cancelled tape's work folder",
        Duration::from_secs(20),
        || !work.exists(),
    );
    let out = farm.run(["retry", &id]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_until("the retried tape is done", Duration::from_secs(120), || {
        farm.out.join("tape.mkv").is_file()
    });
    wait_until("the worker is idle", Duration::from_secs(10), || {
        farm.inspect()
            .iter()
            .all(|w| w["active"].as_array().is_some_and(|a| a.is_empty()))
    });
    reap(worker);
    assert_eq!(
        frame_hashes(&farm.out.join("tape.mkv")).len(),
        frame_hashes(&tape).len(),
        "every frame, once"
    );
    // The cancel took the work folder (finished chunks too): the retried tape was planned
    // again and every chunk encoded again, each once.
    assert_eq!(
        farm.log("w").matches("split into chunks").count(),
        2,
        "{}",
        farm.log("w")
    );
    assert!(!work.exists(), "no work folder left");
    assert_eq!(leftovers(&farm.out), Vec::<PathBuf>::new());
}

#[test]
fn cancelling_then_retrying_a_half_done_tape_encodes_the_chunks_it_lacks() {
    cancelling_then_retrying_a_half_done_tape(slow_farm());
}

#[test]
fn on_rabbitmq_cancelling_then_retrying_a_half_done_tape_encodes_the_chunks_it_lacks() {
    cancelling_then_retrying_a_half_done_tape(slow(with_profiles(Farm::amqp(""))));
}

/// A chunk is part of its tape: cancelling one alone is refused with what to do instead, and
/// the tape goes on (before: the chunk was cancelled and its tape waited forever).
#[test]
fn a_chunk_cannot_be_cancelled_alone() {
    let farm = slow_farm();
    let tape = farm.input.join("tape.mpg");
    interlaced_tape(&tape, 8);
    let id = enqueue_split(&farm, &tape, "2");
    let worker = farm.spawn_worker("w", 1);
    let chunk = loop {
        let out = farm.run(["jobs", "--json", "--all"]);
        let jobs: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
        if let Some(chunk) = jobs.iter().find(|j| j["parent"] == id.as_str()) {
            break chunk["id"].as_str().unwrap().to_owned();
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = farm.run(["cancel", &chunk, &id]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(&format!("a chunk of split tape {id}")),
        "{}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains(&format!("{id}: cancelled")),
        "the tape named with it is cancelled all the same: {}",
        text(&out.stdout)
    );
    reap(worker);
}

#[test]
fn a_chunk_that_fails_for_good_fails_its_tape_and_retry_encodes_only_the_failed_chunks() {
    // An ffmpeg that fails every chunk but the first (those open the input with -ss) while
    // the file `broken` exists.
    let staging = tempfile::tempdir().unwrap();
    let broken = staging.path().join("broken");
    std::fs::write(&broken, b"").unwrap();
    let wrapper = staging.path().join("ffmpeg");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nif [ -e '{}' ]; then for a in \"$@\"; do [ \"$a\" = -ss ] && \
             {{ echo '[error] simulated encoder crash' >&2; exit 1; }}; done; fi\nexec ffmpeg \"$@\"\n",
            broken.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let farm = with_profiles(Farm::with_config(&format!(
        "ffmpeg = \"{}\"",
        wrapper.display()
    )));
    let tape = farm.input.join("tape.mpg");
    interlaced_tape(&tape, 4);
    let (records, _) = {
        let output = farm
            .cmd([
                "run",
                "--json",
                "--profile",
                "deint",
                "--split",
                "1",
                "--out",
            ])
            .arg(&farm.out)
            .arg(&tape)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
        let records: Vec<Value> = run_results(&output.stdout).unwrap();
        (records, ())
    };
    assert_eq!(records.len(), 1);
    let error = records[0]["error"].as_str().unwrap();
    assert!(
        error.contains("3 of its 4 chunks failed") && error.contains("simulated encoder crash"),
        "{error}"
    );
    let id = records[0]["id"].as_str().unwrap().to_owned();

    std::fs::remove_file(&broken).unwrap();
    assert!(farm.run(["retry", &id]).status.success());
    let worker = farm.spawn_worker("w", 2);
    wait_until("the tape is done", Duration::from_secs(60), || {
        farm.job(&id)["state"] == "succeeded"
    });
    reap(worker);
    let out = farm.run(["jobs", "--json", "--all"]);
    let jobs: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let first_chunk = jobs
        .iter()
        .find(|j| {
            j["parent"] == id.as_str() && j["output"].as_str().unwrap().ends_with("chunk-00000.nut")
        })
        .unwrap();
    assert_eq!(
        first_chunk["attempts"], 1,
        "the chunk that worked is not encoded again"
    );
    assert_eq!(
        frame_hashes(&farm.out.join("tape.mkv")).len(),
        2 * frame_hashes(&tape).len()
    );
    assert_eq!(leftovers(&farm.out), Vec::<PathBuf>::new());
}
