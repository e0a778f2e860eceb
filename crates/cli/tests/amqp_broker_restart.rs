//! A RabbitMQ restart in the middle of a run: no job is lost and the worker carries on by
//! itself. This restarts the machine's broker, so it lives alone in its own test binary
//! (`cargo test` runs test binaries one after another, so no other broker test is running).

mod common;

use common::*;
use std::time::Duration;

#[test]
fn a_broker_restart_mid_run_loses_no_job_and_the_worker_resumes_by_itself() {
    let farm = Farm::amqp("");
    for name in ["a.mpg", "b.mpg"] {
        clip(&farm.input.join(name), 4);
    }
    let ids = farm.enqueue(&[&farm.input], "slow");
    assert_eq!(ids.len(), 2);
    let worker = farm.spawn_worker("steady", 1);
    wait_until("the worker is encoding", Duration::from_secs(20), || {
        farm.inspect()
            .iter()
            .any(|w| w["active"].as_array().is_some_and(|a| !a.is_empty()))
    });

    // One job running, one waiting: the broker goes away and comes back.
    rabbitmqctl(&["stop_app"]);
    std::thread::sleep(Duration::from_secs(1));
    rabbitmqctl(&["start_app"]);
    rabbitmqctl(&["await_startup"]);

    wait_until(
        "both jobs are done after the restart",
        Duration::from_secs(90),
        || farm.out.join("a.mkv").is_file() && farm.out.join("b.mkv").is_file(),
    );
    assert!(alive(worker.id()), "the worker never gave up");
    wait_until("nothing is left waiting", Duration::from_secs(10), || {
        farm.status()["queued"] == 0
    });
    assert_eq!(farm.status()["failed"], 0);
    // The attempt that lost its lease at the restart is not shown as running forever.
    wait_until(
        "no job is listed as running",
        Duration::from_secs(5),
        || {
            farm.status()["running"] == 0
                && farm
                    .inspect()
                    .iter()
                    .all(|w| w["active"].as_array().is_some_and(|a| a.is_empty()))
        },
    );
    // The records are exact after the restart: both succeeded, each with the attempt that was
    // lost at the restart (if it was running then) and the one that finished.
    let status = farm.status();
    assert_eq!(status["succeeded"], 2, "{status}");
    let out = farm.cmd(["jobs", "--json"]).output().unwrap();
    let jobs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let jobs = jobs.as_array().unwrap();
    assert_eq!(jobs.len(), 2, "{jobs:?}");
    assert!(jobs.iter().all(|j| j["state"] == "succeeded"), "{jobs:?}");
    for name in ["a.mkv", "b.mkv"] {
        let (streams, duration) = probe(&farm.out.join(name));
        assert_eq!(streams[0].1, "h264");
        assert!(
            (duration - 4.0).abs() < 0.5,
            "{name}: complete output, {duration}s"
        );
    }
    let log = farm.log("steady");
    assert!(
        log.contains("could not take a job") || log.contains("connection"),
        "the worker saw the outage: {log}"
    );
    reap(worker);
}
