//! Workers that die, stop, pause, stall or are cancelled: no job is lost, none is published by
//! a worker that no longer holds it, and no partial file is left.
//!
//! These use the test config's `slow` profile: its `realtime` filter makes an encode last as
//! long as its clip, so the test can act while ffmpeg is running.

mod common;

use common::*;
use serde_json::Value;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Start a worker on a queued slow job and wait until it is encoding; returns the worker and
/// its ffmpeg's pid.
fn worker_mid_encode(farm: &Farm, name: &str) -> (std::process::Child, u32) {
    let worker = farm.spawn_worker(name, 1);
    let pid = worker.id();
    wait_until(
        "the worker reports progress",
        Duration::from_secs(20),
        || {
            farm.inspect().iter().any(|w| {
                w["name"] == name
                    && w["active"]
                        .as_array()
                        .is_some_and(|a| a.iter().any(|j| j["progress"].as_f64() > Some(0.0)))
            })
        },
    );
    let ffmpeg = children_named(pid, "ffmpeg");
    assert_eq!(ffmpeg.len(), 1, "one ffmpeg child of {name}");
    (worker, ffmpeg[0])
}

/// Start worker `name`, and once it encodes, `kill -9` it; its ffmpeg dies with it.
fn kill_9_mid_encode(farm: &Farm, name: &str) {
    let (mut worker, ffmpeg) = worker_mid_encode(farm, name);
    signal(worker.id(), "KILL");
    worker.wait().unwrap();
    wait_until(
        "ffmpeg dies with its worker",
        Duration::from_secs(2),
        || !alive(ffmpeg),
    );
}

/// Temporary encode files (an attempt's `.NAME.videofarm-JOB-TOKEN.part.EXT`).
fn temporaries(farm: &Farm) -> Vec<PathBuf> {
    farm.outputs()
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().contains(".part."))
        })
        .collect()
}

#[test]
fn kill_9_mid_encode_kills_its_ffmpeg_and_another_worker_finishes_after_the_lease() {
    let farm = Farm::new();
    clip(&farm.input.join("tape.mpg"), 4);
    let ids = farm.enqueue(&[&farm.input.join("tape.mpg")], "slow");
    kill_9_mid_encode(&farm, "first");
    assert_eq!(
        farm.job(&ids[0])["state"],
        "running",
        "still leased to the dead worker"
    );

    let killed_at = Instant::now();
    let second = farm.spawn_worker("second", 1);
    wait_until(
        "the second worker finishes the job",
        Duration::from_secs(30),
        || farm.job(&ids[0])["state"] == "succeeded",
    );
    reap(second);
    let job = farm.job(&ids[0]);
    assert_eq!(job["worker"], "second");
    assert_eq!(job["attempts"], 2, "the lost attempt counts");
    assert!(
        killed_at.elapsed() >= Duration::from_secs(1),
        "redelivered only after the lease ran out"
    );
    let (streams, duration) = probe(&farm.out.join("tape.mkv"));
    assert_eq!(streams[0].1, "h264");
    assert!(
        (duration - 4.0).abs() < 0.5,
        "a complete output: {duration}"
    );
    assert!(
        temporaries(&farm).is_empty(),
        "the dead worker's partial file was cleaned up: {:?}",
        farm.outputs()
    );
}

#[test]
fn sigterm_mid_encode_puts_the_job_back_at_once_with_no_partial_file() {
    stop_mid_encode_puts_the_job_back("TERM");
}

/// A closed terminal or a dropped SSH session (SIGHUP) stops a worker as cleanly as SIGTERM.
#[test]
fn sighup_mid_encode_puts_the_job_back_at_once_with_no_partial_file() {
    stop_mid_encode_puts_the_job_back("HUP");
}

fn stop_mid_encode_puts_the_job_back(sig: &str) {
    let farm = Farm::new();
    clip(&farm.input.join("tape.mpg"), 6);
    let ids = farm.enqueue(&[&farm.input.join("tape.mpg")], "slow");
    let (mut worker, ffmpeg) = worker_mid_encode(&farm, "stopping");
    assert_eq!(
        temporaries(&farm).len(),
        1,
        "a temporary file while encoding"
    );

    let stopped_at = Instant::now();
    signal(worker.id(), sig);
    let status = worker.wait().unwrap();
    assert!(status.success(), "a clean stop");
    assert!(
        stopped_at.elapsed() < Duration::from_secs(2),
        "one signal is enough, and quick"
    );
    assert!(!alive(ffmpeg), "its ffmpeg was stopped");
    let job = farm.job(&ids[0]);
    assert_eq!(
        job["state"], "queued",
        "back in the queue at once, not after the lease"
    );
    assert_eq!(job["attempts"], 0, "a stop does not count as an attempt");
    assert!(
        farm.outputs().is_empty(),
        "no partial file: {:?}",
        farm.outputs()
    );
    assert!(
        farm.inspect().is_empty(),
        "the stopped worker is gone from inspect"
    );
    assert!(
        farm.log("stopping").contains("released"),
        "{}",
        farm.log("stopping")
    );
}

#[test]
fn a_paused_worker_that_lost_its_lease_is_fenced_off() {
    let farm = Farm::new();
    clip(&farm.input.join("tape.mpg"), 4);
    let ids = farm.enqueue(&[&farm.input.join("tape.mpg")], "slow");
    let (stale, _ffmpeg) = worker_mid_encode(&farm, "stale");

    // Freeze the worker (not its ffmpeg, which runs in its own process group): its heartbeats
    // stop, the lease runs out, and the job is handed to another worker.
    signal(stale.id(), "STOP");
    let fresh = farm.spawn_worker("fresh", 1);
    wait_until(
        "the fresh worker finishes the job",
        Duration::from_secs(30),
        || farm.job(&ids[0])["state"] == "succeeded",
    );
    let published = std::fs::read(farm.out.join("tape.mkv")).unwrap();

    // Wake the stale worker: it must notice it lost the job and publish nothing.
    signal(stale.id(), "CONT");
    wait_until(
        "the stale worker gives the job up",
        Duration::from_secs(15),
        || farm.log("stale").contains("job lost"),
    );
    signal(stale.id(), "TERM");
    reap(stale);
    reap(fresh);
    let job = farm.job(&ids[0]);
    assert_eq!(job["worker"], "fresh");
    assert_eq!(job["state"], "succeeded");
    assert_eq!(
        std::fs::read(farm.out.join("tape.mkv")).unwrap(),
        published,
        "the output was not replaced"
    );
    assert!(temporaries(&farm).is_empty(), "{:?}", farm.outputs());
}

#[test]
fn cancel_stops_a_running_encode_and_removes_its_partial_output() {
    let farm = Farm::new();
    clip(&farm.input.join("tape.mpg"), 6);
    let ids = farm.enqueue(&[&farm.input.join("tape.mpg")], "slow");
    let (worker, ffmpeg) = worker_mid_encode(&farm, "busy");
    let out = farm.run(["cancel", &ids[0]]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_until("ffmpeg is stopped", Duration::from_secs(3), || {
        !alive(ffmpeg)
    });
    wait_until(
        "the partial output is removed",
        Duration::from_secs(3),
        || farm.outputs().is_empty(),
    );
    assert_eq!(farm.job(&ids[0])["state"], "cancelled");
    assert_eq!(farm.status()["cancelled"], 1);
    // Idempotent: cancelled again, it says so and succeeds.
    let again = farm.run(["cancel", &ids[0]]);
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert!(
        text(&again.stdout).contains("already cancelled"),
        "{}",
        text(&again.stdout)
    );
    reap(worker);
}

#[test]
fn an_ffmpeg_that_stops_making_progress_is_killed_as_a_failed_attempt() {
    let farm = Farm::with_config("");
    // Replace the test config's stall time with a short one.
    let config = std::fs::read_to_string(&farm.config)
        .unwrap()
        .replace("stall_secs = 30", "stall_secs = 1.5");
    std::fs::write(
        &farm.config,
        config.replace("max_attempts = 2", "max_attempts = 1"),
    )
    .unwrap();
    clip(&farm.input.join("tape.mpg"), 6);
    let ids = farm.enqueue(&[&farm.input.join("tape.mpg")], "slow");
    let (worker, ffmpeg) = worker_mid_encode(&farm, "stalling");
    signal(ffmpeg, "STOP");
    wait_until("the stalled attempt fails", Duration::from_secs(10), || {
        farm.job(&ids[0])["state"] == "failed"
    });
    let job = farm.job(&ids[0]);
    assert!(
        job["error"].as_str().unwrap().contains("made no progress"),
        "{job}"
    );
    assert!(!alive(ffmpeg), "the stalled ffmpeg was killed");
    assert!(farm.outputs().is_empty(), "{:?}", farm.outputs());
    reap(worker);
}

#[test]
fn two_workers_share_one_queue_and_inspect_shows_both() {
    let farm = Farm::new();
    for name in ["a.mpg", "b.mpg"] {
        clip(&farm.input.join(name), 4);
    }
    farm.enqueue(&[&farm.input], "slow");
    let one = farm.spawn_worker("one", 1);
    let two = farm.spawn_worker("two", 1);
    wait_until("both workers are encoding", Duration::from_secs(20), || {
        let workers = farm.inspect();
        workers.len() == 2
            && workers
                .iter()
                .all(|w| w["active"].as_array().is_some_and(|a| a.len() == 1))
    });
    let workers = farm.inspect();
    for worker in &workers {
        for key in ["name", "pid", "host", "started"] {
            assert!(!worker[key].is_null(), "{key} in {worker}");
        }
        let job = &worker["active"][0];
        for key in [
            "id", "input", "output", "profile", "progress", "fps", "speed", "eta_s",
        ] {
            assert!(job.get(key).is_some(), "{key} in {job}");
        }
        assert_eq!(job["profile"], "slow");
    }
    let text_view = text(&farm.run(["inspect"]).stdout);
    assert!(
        text_view.contains("one") && text_view.contains("two") && text_view.contains("a.mpg"),
        "{text_view}"
    );
    assert_eq!(farm.status()["running"], 2);
    wait_until("both jobs are done", Duration::from_secs(30), || {
        farm.status()["succeeded"] == 2
    });
    reap(one);
    reap(two);
}

/// A worker killed mid-encode leaves its `.part` file and the output's lock; once the job is
/// cancelled, a live worker removes both (before, on RabbitMQ they stayed for good: the
/// cancelled job was dropped when next received, and nothing cleaned up after the dead attempt).
fn a_killed_workers_leftovers_go_once_its_job_is_cancelled(farm: Farm, input_gone: bool) {
    clip(&farm.input.join("tape.mpg"), 6);
    let ids = farm.enqueue(&[&farm.input.join("tape.mpg")], "slow");
    kill_9_mid_encode(&farm, "first");
    if input_gone {
        // The capture was moved away meanwhile: what was left beside the output still goes.
        std::fs::remove_file(farm.input.join("tape.mpg")).unwrap();
    }
    let left = farm.outputs();
    assert!(!temporaries(&farm).is_empty(), "{left:?}");
    assert!(
        left.iter()
            .any(|p| p.to_string_lossy().ends_with(".videofarm-lock")),
        "{left:?}"
    );
    let out = farm.run(["cancel", &ids[0]]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let second = farm.spawn_worker("second", 1);
    wait_until(
        "a live worker removes what the killed one left",
        Duration::from_secs(15),
        || farm.outputs().is_empty(),
    );
    assert_eq!(farm.job(&ids[0])["state"], "cancelled");
    assert!(
        farm.log("second")
            .contains("cleaned up after a cancelled job"),
        "{}",
        farm.log("second")
    );
    reap(second);
}

#[test]
fn a_killed_workers_leftovers_go_once_its_job_is_cancelled_on_the_embedded_queue() {
    a_killed_workers_leftovers_go_once_its_job_is_cancelled(Farm::new(), false);
}

#[test]
fn a_killed_workers_leftovers_go_once_its_job_is_cancelled_even_with_its_input_gone() {
    a_killed_workers_leftovers_go_once_its_job_is_cancelled(Farm::new(), true);
}

#[test]
fn on_rabbitmq_a_killed_workers_leftovers_go_once_its_job_is_cancelled() {
    a_killed_workers_leftovers_go_once_its_job_is_cancelled(Farm::amqp(""), false);
}

/// A worker killed mid-encode while the only other worker is busy with a long encode: within
/// about a lease its job shows queued with its attempt lost, and `status` counts one running
/// job for the one live worker. Before, on RabbitMQ, it showed running on the dead worker
/// (`"running":2,"workers":1`) until some worker was free to receive it again (hours, with
/// real tapes).
fn a_killed_workers_job_is_not_shown_running(farm: Farm) {
    clip(&farm.input.join("long.mpg"), 30);
    clip(&farm.input.join("short.mpg"), 8);
    farm.enqueue(&[&farm.input.join("long.mpg")], "slow");
    let (busy, _) = worker_mid_encode(&farm, "busy");
    let ids = farm.enqueue(&[&farm.input.join("short.mpg")], "slow");
    kill_9_mid_encode(&farm, "first");
    let killed_at = Instant::now();
    wait_until(
        "the killed worker's job shows queued",
        Duration::from_secs(10),
        || {
            let status = farm.status();
            status["running"] == 1 && status["queued"] == 1
        },
    );
    println!("shown queued {:?} after the kill", killed_at.elapsed());
    let job = farm.job(&ids[0]);
    assert_eq!(job["state"], "queued", "{job}");
    assert!(
        job["error"]
            .as_str()
            .is_some_and(|e| e.contains("was lost")),
        "{job}"
    );
    assert_eq!(farm.status()["workers"], 1);
    let live: Vec<Value> = farm.inspect();
    assert_eq!(live.len(), 1, "{live:?}");
    assert_eq!(live[0]["name"], "busy");
    reap(busy);
}

#[test]
fn a_killed_workers_job_is_not_shown_running_on_the_embedded_queue() {
    a_killed_workers_job_is_not_shown_running(Farm::new());
}

#[test]
fn on_rabbitmq_a_killed_workers_job_is_not_shown_running() {
    a_killed_workers_job_is_not_shown_running(Farm::amqp(""));
}
