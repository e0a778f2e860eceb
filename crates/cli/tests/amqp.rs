//! The farm across processes on the real RabbitMQ: a producer, two workers, `inspect`, events,
//! failures and retries, and messages that are not ours. A broker that is not running fails
//! these tests (CI starts it).

mod common;

use common::*;
use serde_json::Value;
use std::time::Duration;

/// Workers of `farm` that are encoding something, by name, with the job ids they hold.
fn busy(farm: &Farm) -> Vec<(String, Vec<String>)> {
    farm.inspect()
        .iter()
        .map(|w| {
            let jobs = w["active"]
                .as_array()
                .unwrap()
                .iter()
                .map(|j| j["id"].as_str().unwrap().to_owned())
                .collect();
            (w["name"].as_str().unwrap().to_owned(), jobs)
        })
        .filter(|(_, jobs): &(String, Vec<String>)| !jobs.is_empty())
        .collect()
}

fn failed_jobs(farm: &Farm) -> Vec<Value> {
    let out = farm.run(["jobs", "--state", "failed", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Temporary encode files (an attempt's `.NAME.videofarm-JOB-TOKEN.part.EXT`).
fn temporaries(farm: &Farm) -> usize {
    farm.outputs()
        .iter()
        .filter(|p| p.file_name().unwrap().to_string_lossy().contains(".part."))
        .count()
}

#[test]
fn two_workers_one_killed_mid_encode_and_the_other_finishes_the_job() {
    let farm = Farm::amqp("");
    let mut events = farm.cmd(["events", "--json"]);
    let events_log = farm.root().join("events.jsonl");
    let tail = events
        .stdout(std::fs::File::create(&events_log).unwrap())
        .stderr(std::fs::File::create(farm.log_path("events")).unwrap())
        .spawn()
        .unwrap();
    clip(&farm.input.join("tape.mpg"), 4);
    let ids = farm.enqueue(&[&farm.input.join("tape.mpg")], "slow");
    assert_eq!(ids.len(), 1, "enqueue returned once the broker had the job");
    let one = farm.spawn_worker("one", 1);
    let two = farm.spawn_worker("two", 1);
    wait_until(
        "a worker is encoding the job",
        Duration::from_secs(20),
        || !busy(&farm).is_empty(),
    );
    let holder = busy(&farm)[0].0.clone();
    assert_eq!(busy(&farm)[0].1, ids);
    let (mut victim, survivor, survivor_name) = if holder == "one" {
        (one, two, "two")
    } else {
        (two, one, "one")
    };
    let ffmpeg = children_named(victim.id(), "ffmpeg");
    assert_eq!(ffmpeg.len(), 1);

    signal(victim.id(), "KILL");
    victim.wait().unwrap();
    wait_until("its ffmpeg dies with it", Duration::from_secs(2), || {
        !alive(ffmpeg[0])
    });
    wait_until(
        "the other worker takes the job over",
        Duration::from_secs(10),
        || {
            busy(&farm)
                .iter()
                .any(|(name, jobs)| name == survivor_name && jobs == &ids)
        },
    );
    wait_until("the output is published", Duration::from_secs(30), || {
        farm.out.join("tape.mkv").is_file()
    });
    let (streams, duration) = probe(&farm.out.join("tape.mkv"));
    assert_eq!(streams[0].1, "h264");
    assert!((duration - 4.0).abs() < 0.5, "complete output: {duration}");
    wait_until("the job is acknowledged", Duration::from_secs(5), || {
        farm.status()["queued"] == 0 && busy(&farm).is_empty()
    });
    assert_eq!(farm.status()["failed"], 0);
    assert_eq!(temporaries(&farm), 0, "{:?}", farm.outputs());

    // `events` saw the farm: workers coming online and the survivor finishing the job.
    let seen = || std::fs::read_to_string(&events_log).unwrap_or_default();
    let start = std::time::Instant::now();
    while !seen().contains("job_succeeded") {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no success event in:\n{}\nevents said: {}",
            seen(),
            farm.log("events")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let events: Vec<Value> = std::fs::read_to_string(&events_log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        events.iter().any(|e| e["type"] == "worker_online"),
        "{events:?}"
    );
    assert!(events.iter().any(|e| e["type"] == "job_progress"));
    let done = events
        .iter()
        .find(|e| e["type"] == "job_succeeded")
        .unwrap();
    assert_eq!(done["id"], ids[0].as_str());
    assert_eq!(done["worker"], survivor_name);
    reap(survivor);
    reap(tail);
}

#[test]
fn sigterm_puts_the_job_back_at_once_and_inspect_shows_both_workers() {
    let farm = Farm::amqp("");
    clip(&farm.input.join("a.mpg"), 6);
    clip(&farm.input.join("b.mpg"), 6);
    let ids = farm.enqueue(&[&farm.input], "slow");
    assert_eq!(ids.len(), 2);
    let first = farm.spawn_worker("first", 1);
    let second = farm.spawn_worker("second", 1);
    wait_until("both workers are encoding", Duration::from_secs(20), || {
        busy(&farm).len() == 2
    });
    let workers = farm.inspect();
    assert_eq!(workers.len(), 2);
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
    }
    assert_eq!(farm.status()["running"], 2);

    let mut first = first;
    signal(first.id(), "TERM");
    let started = std::time::Instant::now();
    assert!(first.wait().unwrap().success());
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "stopped promptly"
    );
    assert_eq!(
        farm.status()["queued"],
        1,
        "its job is back in the queue at once"
    );
    assert_eq!(
        temporaries(&farm),
        1,
        "only the other worker's file is in progress: {:?}",
        farm.outputs()
    );

    let third = farm.spawn_worker("third", 1);
    wait_until("both jobs are done", Duration::from_secs(40), || {
        farm.out.join("a.mkv").is_file()
            && farm.out.join("b.mkv").is_file()
            && busy(&farm).is_empty()
    });
    assert_eq!(farm.status()["failed"], 0);
    assert_eq!(temporaries(&farm), 0);
    reap(second);
    reap(third);
}

#[test]
fn a_failing_job_reaches_the_failed_queue_after_max_attempts_and_retry_brings_it_back() {
    let farm = Farm::amqp("");
    let tape = farm.input.join("tape.mkv");
    let whole = truncated_clip(&tape, farm.root());
    let ids = farm.enqueue(&[&tape], "archive");
    let worker = farm.spawn_worker("w", 1);
    wait_until("the job fails for good", Duration::from_secs(30), || {
        !failed_jobs(&farm).is_empty()
    });
    let failed = failed_jobs(&farm);
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["id"], ids[0].as_str());
    assert_eq!(failed[0]["attempts"], 2, "max_attempts = 2");
    assert!(
        failed[0]["error"].as_str().unwrap().contains("truncated"),
        "{}",
        failed[0]
    );
    assert_eq!(farm.status()["failed"], 1);

    std::fs::copy(&whole, &tape).unwrap();
    let out = farm.run(["retry", &ids[0]]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_until("the retried job succeeds", Duration::from_secs(30), || {
        farm.out.join("tape.mkv").is_file()
    });
    wait_until("and is acknowledged", Duration::from_secs(5), || {
        farm.status()["queued"] == 0 && busy(&farm).is_empty()
    });
    assert_eq!(farm.status()["failed"], 0);
    reap(worker);
}

#[test]
fn messages_that_are_not_ours_or_are_malformed_go_to_the_failed_queue_and_never_stop_a_worker() {
    let farm = Farm::amqp("");
    // This worker may only touch the farm's own folder.
    let mut config = std::fs::read_to_string(&farm.config).unwrap();
    config.push_str(&format!("\n[paths]\nroots = [{:?}]\n", farm.root()));
    std::fs::write(&farm.config, config).unwrap();
    clip(&farm.input.join("good.mpg"), 1);
    let worker = farm.spawn_worker("sturdy", 1);

    let inside = farm.input.join("good.mpg");
    let envelope = |id: &str, input: &str, profile: &str| {
        serde_json::json!({
            "v": 1, "id": id,
            "spec": {"input": input, "output": farm.out.join(format!("{id}.mkv")), "profile": profile, "key": id},
        })
        .to_string()
    };
    let bad: Vec<(String, &str)> = vec![
        ("this is not json".into(), "not JSON"),
        (
            r#"{"task": "tasks.encode", "args": ["/x.mpg"]}"#.into(),
            "not a videofarm job",
        ),
        (r#"{"v": 1, "id": "no-spec"}"#.into(), "malformed"),
        (
            envelope("outside", "/etc/passwd", "archive"),
            "outside this worker's allowed roots",
        ),
        (
            envelope("nonesuch", inside.to_str().unwrap(), "nonesuch"),
            "unknown profile 'nonesuch'",
        ),
        (
            envelope("../../x", inside.to_str().unwrap(), "archive"),
            "not a job id",
        ),
        (
            envelope("huge", inside.to_str().unwrap(), &"p".repeat(1 << 20)),
            "a job message is at most",
        ),
    ];
    publish_raw(
        &farm,
        bad.iter()
            .map(|(body, _)| body.as_bytes().to_vec())
            .collect(),
    );
    let good = farm.enqueue(&[&inside], "archive");
    assert_eq!(good.len(), 1);
    wait_until(
        "the good job after them is done",
        Duration::from_secs(20),
        || farm.out.join("good.mkv").is_file(),
    );
    wait_until(
        "every bad message is in the failed queue",
        Duration::from_secs(10),
        || failed_jobs(&farm).len() == bad.len(),
    );
    let failed = failed_jobs(&farm);
    let listed = serde_json::to_string(&failed).unwrap();
    assert!(
        listed.len() < 200_000,
        "a refused message is kept only in part ({} bytes listed)",
        listed.len()
    );
    for (_, reason) in &bad {
        assert!(
            failed
                .iter()
                .any(|f| f["error"].as_str().is_some_and(|e| e.contains(reason))),
            "a failed entry says {reason:?}: {failed:#?}"
        );
    }
    assert!(alive(worker.id()), "the worker is still running");
    // Nothing loops: the failed queue holds each once, and nothing is waiting.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(failed_jobs(&farm).len(), bad.len());
    assert_eq!(farm.status()["queued"], 0);
    assert!(!farm.out.join("outside.mkv").exists());
    reap(worker);
}

/// Publish raw bodies to the farm's job queue, as a foreign or broken producer would.
fn publish_raw(farm: &Farm, bodies: Vec<Vec<u8>>) {
    use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
    let queue = format!("{}.jobs", farm.amqp_prefix.as_ref().unwrap());
    // The queue is declared by the first command that connects.
    assert!(farm.run(["status"]).status.success());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let conn = lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default())
            .await
            .unwrap();
        let channel = conn.create_channel().await.unwrap();
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        for body in bodies {
            let confirm = channel
                .basic_publish(
                    "".into(),
                    queue.as_str().into(),
                    BasicPublishOptions::default(),
                    &body,
                    lapin::BasicProperties::default().with_delivery_mode(2),
                )
                .await
                .unwrap()
                .await
                .unwrap();
            assert!(confirm.is_ack());
        }
        let _ = conn.close(200, "done".into()).await;
    });
}

/// A worker started before its broker is up waits for it, says so once, and works once it is.
#[test]
fn a_worker_started_before_the_broker_waits_for_it() {
    let relay = Relay::new(false);
    let farm = Farm::amqp_at(&relay.url(), "");
    clip(&farm.input.join("early.mpg"), 1);
    let worker = farm.spawn_worker("early", 1);
    wait_until("it says it is waiting", Duration::from_secs(10), || {
        farm.log("early").contains("waiting for")
    });
    std::thread::sleep(Duration::from_secs(1));
    assert!(alive(worker.id()), "still waiting: {}", farm.log("early"));
    relay.up();
    farm.enqueue(&[&farm.input.join("early.mpg")], "archive");
    wait_until("the job is done", Duration::from_secs(30), || {
        farm.out.join("early.mkv").is_file()
    });
    assert_eq!(
        farm.log("early").matches("waiting for").count(),
        1,
        "said once"
    );
    reap(worker);
}

/// `run` started before its broker is up waits for it (said once) and then does its batch; a
/// command that only asks (`status`, `jobs`) exits 3 at once, not 1 ("a job failed").
#[test]
fn run_started_before_the_broker_waits_for_it_and_queries_exit_3() {
    let relay = Relay::new(false);
    let farm = Farm::amqp_at(&relay.url(), "");
    clip(&farm.input.join("early.mpg"), 1);
    for args in [&["status"][..], &["jobs", "--json"]] {
        let asked = farm.run(args);
        assert_eq!(
            asked.status.code(),
            Some(3),
            "{args:?}: {}",
            text(&asked.stderr)
        );
        assert!(
            text(&asked.stderr).contains("connecting to"),
            "{args:?}: {}",
            text(&asked.stderr)
        );
    }
    let log = farm.root().join("run.log");
    let mut run = farm
        .cmd(["run", "--out"])
        .arg(&farm.out)
        .arg(&farm.input)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let said = || std::fs::read_to_string(&log).unwrap();
    wait_until("it says it is waiting", Duration::from_secs(10), || {
        said().contains("waiting for")
    });
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        run.try_wait().unwrap().is_none(),
        "still waiting: {}",
        said()
    );
    relay.up();
    let status = run.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{}", said());
    assert!(farm.out.join("early.mkv").is_file());
    assert_eq!(said().matches("waiting for").count(), 1, "said once");
}

/// `run` on RabbitMQ rides out a broker outage of several seconds mid-batch and finishes.
#[test]
fn run_rides_out_a_broker_outage_and_finishes_its_batch() {
    let relay = Relay::new(true);
    let farm = Farm::amqp_at(&relay.url(), "");
    for name in ["a.mpg", "b.mpg", "c.mpg"] {
        clip(&farm.input.join(name), 2);
    }
    let mut run = farm
        .cmd([
            "run",
            "--json",
            "--workers",
            "1",
            "--profile",
            "slow",
            "--out",
        ])
        .arg(&farm.out)
        .arg(&farm.input)
        // What it did is shown if it fails.
        .env(
            "VIDEOFARM_LOG",
            "info,videofarm_queue_amqp=debug,videofarm_worker=debug",
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the first job is done", Duration::from_secs(30), || {
        farm.out.join("a.mkv").is_file()
    });
    relay.down();
    std::thread::sleep(Duration::from_secs(8));
    relay.up();
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while run.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = run.kill();
            let out = run.wait_with_output().unwrap();
            panic!(
                "run never finished after the outage:\n{}\n{}",
                text(&out.stdout),
                text(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = run.wait_with_output().unwrap();
    let records: Vec<serde_json::Value> = run_results(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", text(&out.stdout), text(&out.stderr)));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{records:#?}\n{}",
        text(&out.stderr)
    );
    assert_eq!(records.len(), 3);
    assert!(
        records.iter().all(|r| r["state"] == "succeeded"),
        "{records:#?}"
    );
    for name in ["a.mkv", "b.mkv", "c.mkv"] {
        assert!(farm.out.join(name).is_file(), "{name}");
    }
}

/// A broker does not deduplicate: the same file queued again while it encodes is a second
/// message. It waits for the first attempt instead of encoding the same output at the same
/// time (and removing its temporary file), then finds the output done; the job keeps the
/// result of the encode that did the work (before, the copy's "already done" replaced it:
/// frames 0).
#[test]
fn the_same_job_queued_twice_while_it_runs_is_encoded_once() {
    let farm = Farm::amqp("");
    let tape = farm.input.join("twice.mpg");
    clip(&tape, 4);
    let one = farm.spawn_worker("one", 1);
    let two = farm.spawn_worker("two", 1);
    let ids = farm.enqueue(&[&tape], "slow");
    wait_until("it is encoding", Duration::from_secs(20), || {
        farm.inspect()
            .iter()
            .any(|w| w["active"].as_array().is_some_and(|a| !a.is_empty()))
    });
    farm.enqueue(&[&tape], "slow");
    wait_until("the output is in place", Duration::from_secs(30), || {
        farm.out.join("twice.mkv").is_file()
    });
    wait_until("both copies are done", Duration::from_secs(20), || {
        let logs = farm.log("one") + &farm.log("two");
        logs.matches("job succeeded").count() == 2
    });
    let logs = farm.log("one") + &farm.log("two");
    assert_eq!(
        logs.matches("already_done=false").count(),
        1,
        "encoded once: {logs}"
    );
    assert!(logs.contains("already_done=true"), "{logs}");
    assert!(!logs.contains("attempt failed"), "{logs}");
    assert_eq!(farm.outputs(), vec![std::path::PathBuf::from("twice.mkv")]);
    let job = farm.job(&ids[0]);
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["result"]["already_done"], false, "{job}");
    assert!(job["result"]["frames"].as_u64() > Some(50), "{job}");
    reap(one);
    reap(two);
}

/// Cancelling a waiting job does not ban its file forever: queued again, it is encoded.
#[test]
fn a_file_cancelled_while_waiting_can_be_queued_again() {
    let farm = Farm::amqp("");
    let tape = farm.input.join("again.mpg");
    clip(&tape, 1);
    let ids = farm.enqueue(&[&tape], "archive");
    assert!(farm.run(["cancel", &ids[0]]).status.success());
    std::thread::sleep(Duration::from_millis(20));
    let again = farm.enqueue(&[&tape], "archive");
    assert_eq!(again, ids, "the same job");
    let worker = farm.spawn_worker("later", 1);
    wait_until(
        "the file queued again is encoded",
        Duration::from_secs(20),
        || farm.out.join("again.mkv").is_file(),
    );
    assert!(
        farm.log("later").contains("dropped a cancelled job"),
        "the cancelled copy was dropped: {}",
        farm.log("later")
    );
    reap(worker);
}

/// `events` follows the farm again after the broker went away, instead of exiting.
#[test]
fn events_follows_again_after_the_broker_comes_back() {
    let relay = Relay::new(true);
    let farm = Farm::amqp_at(&relay.url(), "");
    let events_log = farm.root().join("events.jsonl");
    let mut tail = farm
        .cmd(["events", "--json"])
        .stdout(std::fs::File::create(&events_log).unwrap())
        .stderr(std::fs::File::create(farm.log_path("events")).unwrap())
        .spawn()
        .unwrap();
    wait_until("events is following", Duration::from_secs(10), || {
        farm.log("events").contains("following events")
    });
    relay.down();
    std::thread::sleep(Duration::from_secs(2));
    relay.up();
    assert!(
        tail.try_wait().unwrap().is_none(),
        "events exited: {}",
        farm.log("events")
    );
    wait_until("events follows again", Duration::from_secs(20), || {
        farm.log("events").contains("following events again")
    });
    clip(&farm.input.join("after.mpg"), 1);
    let ids = farm.enqueue(&[&farm.input.join("after.mpg")], "archive");
    wait_until(
        "the job queued after the outage is shown",
        Duration::from_secs(10),
        || {
            std::fs::read_to_string(&events_log)
                .unwrap_or_default()
                .contains(&ids[0])
        },
    );
    signal(tail.id(), "TERM");
    let status = tail.wait().unwrap();
    assert!(status.success(), "events ends cleanly on SIGTERM: {status}");
}

/// The broker goes away just as a job finishes, so its end cannot be recorded: once the broker
/// is back, the records answer again within seconds, and the job, never acknowledged, is not
/// left shown as finished or lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_lost_in_an_outage_does_not_stall_later_reads() {
    use videofarm_core::{Outcome, Queue, QueueSettings, Records, SuccessReport, WorkerInfo};
    use videofarm_queue_amqp::{AmqpQueue, AmqpSettings};
    let relay = Relay::new(true);
    let farm = Farm::amqp_at(&relay.url(), "");
    let mut settings = AmqpSettings::new(&relay.url());
    settings.prefix = farm.amqp_prefix.clone().unwrap();
    settings.queue_expires = Some(Duration::from_secs(600));
    let queue = AmqpQueue::connect(settings, QueueSettings::default())
        .await
        .unwrap();
    let spec = videofarm_core::JobSpec {
        input: farm.input.join("a.mpg"),
        output: farm.out.join("a.mkv"),
        profile: "archive".into(),
        key: "lost-record".into(),
        ..Default::default()
    };
    queue.enqueue(spec, false).await.unwrap();
    let worker = WorkerInfo::new("w", "h");
    let lease = queue
        .lease(&worker, Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    relay.down();
    assert!(queue
        .finish(&lease, Outcome::Succeeded(SuccessReport::default()))
        .await
        .is_err());
    relay.up();
    let started = std::time::Instant::now();
    let counts = loop {
        match queue.counts().await {
            Ok(counts) => break counts,
            Err(e) if started.elapsed() < Duration::from_secs(40) => {
                eprintln!("not yet: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("the records never answered again: {e}"),
        }
    };
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answered after {:?}",
        started.elapsed()
    );
    // The job was never acknowledged: it is queued again (its lost attempt recorded once it is
    // taken again), not running.
    assert_eq!(counts.running + counts.queued, 1, "{counts:?}");
}
