//! Capability routing: a worker takes only jobs it can run (its ffmpeg has the profile's
//! encoders and a trial encode works) and whose tags it has; a job nobody live can run waits
//! and says why, without an attempt counted, until a worker that can starts. On the embedded
//! queue the lease routes; on RabbitMQ each route (profile and required tags) has a queue of its
//! own that only capable workers consume, so such a job never even reaches the others.

mod common;

use common::*;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A worker of `farm` with a config of its own (`extra` before the farm's config).
fn spawn_worker_with(farm: &Farm, name: &str, extra: &str) -> Child {
    let config = farm.root().join(format!("{name}.toml"));
    let shared = std::fs::read_to_string(&farm.config).unwrap();
    std::fs::write(&config, format!("{extra}\n{shared}")).unwrap();
    let mut cmd = Command::new(BIN);
    if let Some(broker) = &farm.broker {
        cmd.arg("--broker").arg(broker);
    }
    cmd.arg("--config")
        .arg(config)
        .args(["worker", "--name", name, "--concurrency", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(farm.log_path(name)).unwrap())
        .spawn()
        .unwrap()
}

/// An ffmpeg without libx265: it leaves the encoder out of its list and refuses to use it.
fn ffmpeg_without_x265(farm: &Farm) -> std::path::PathBuf {
    let wrapper = farm.root().join("ffmpeg-without-x265");
    std::fs::write(
        &wrapper,
        format!(
            r#"#!/usr/bin/env python3
import os, subprocess, sys
real = {real:?}
args = sys.argv[1:]
if "-encoders" in args:
    out = subprocess.run([real] + args, capture_output=True, text=True).stdout
    sys.stdout.write("".join(l for l in out.splitlines(True) if "libx265" not in l))
    sys.exit(0)
if "libx265" in args:
    sys.stderr.write("Unknown encoder 'libx265'\n")
    sys.exit(1)
os.execv(real, [real] + args)
"#,
            real = which("ffmpeg")
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    wrapper
}

fn which(tool: &str) -> String {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn a_worker_takes_only_what_it_can_run_and_a_job_nobody_can_run_waits_visibly() {
    routing(&Farm::new());
}

#[test]
fn on_rabbitmq_a_job_a_worker_cannot_run_waits_for_one_that_can() {
    routing(&Farm::amqp(""));
}

fn routing(farm: &Farm) {
    for name in ["small.mpg", "big.mpg", "tagged.mpg"] {
        clip(&farm.input.join(name), 1);
    }
    let hevc = farm.enqueue(&[&farm.input.join("big.mpg")], "hevc");
    let archive = farm.enqueue(&[&farm.input.join("small.mpg")], "archive");
    let out = farm
        .cmd([
            "enqueue",
            "--profile",
            "archive",
            "--require",
            "gpu-box",
            "--out",
        ])
        .arg(&farm.out)
        .arg(farm.input.join("tagged.mpg"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let tagged = farm
        .jobs()
        .iter()
        .find(|j| j["input"].as_str().unwrap().ends_with("tagged.mpg"))
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // A worker whose ffmpeg lacks libx265 and that has no tags: only the plain archive job.
    let wrapper = ffmpeg_without_x265(farm);
    let limited = spawn_worker_with(farm, "limited", &format!("ffmpeg = {wrapper:?}"));
    wait_until("the archive job is done", Duration::from_secs(60), || {
        farm.job(&archive[0])["state"] == "succeeded"
    });
    // Said once the trials left for later (all but the default profile) are done.
    wait_until(
        "the limited worker says it cannot run hevc",
        Duration::from_secs(30),
        || {
            farm.log("limited")
                .contains("hevc (this ffmpeg has no encoder libx265)")
        },
    );
    // Several rounds of the limited worker's polling: the jobs it cannot run stay with nobody.
    std::thread::sleep(Duration::from_secs(3));
    let listing = text(&farm.run(["jobs"]).stdout);
    assert!(
        listing.contains("waiting for a worker that can run profile hevc"),
        "{listing}"
    );
    assert!(
        listing.contains("waiting for a worker that can run profile archive with tags gpu-box"),
        "{listing}"
    );
    for id in [&hevc[0], &tagged] {
        let job = farm.job(id);
        assert_eq!(job["state"], "queued", "{job}");
        assert_eq!(job["attempts"], 0, "no attempt counted: {job}");
    }
    assert!(
        !farm.log("limited").contains("cannot run; moved it"),
        "the jobs it cannot run never reached it: {}",
        farm.log("limited")
    );
    let inspect = text(&farm.run(["inspect"]).stdout);
    assert!(inspect.contains("can run: archive"), "{inspect}");
    assert!(
        !inspect.contains("hevc,") && !inspect.contains(", hevc"),
        "{inspect}"
    );

    // A worker that can run hevc takes that job; one with the tag takes the tagged one.
    let capable = farm.spawn_worker("capable", 1);
    wait_until("the hevc job is done", Duration::from_secs(60), || {
        farm.job(&hevc[0])["state"] == "succeeded"
    });
    assert_eq!(farm.job(&hevc[0])["worker"], "capable");
    assert_eq!(
        farm.job(&tagged)["state"],
        "queued",
        "nobody has the tag yet"
    );
    let gpu = spawn_worker_with(farm, "gpu", "tags = [\"gpu-box\"]");
    wait_until("the tagged job is done", Duration::from_secs(60), || {
        farm.job(&tagged)["state"] == "succeeded"
    });
    assert_eq!(farm.job(&tagged)["worker"], "gpu");
    for child in [limited, capable, gpu] {
        reap(child);
    }
}

#[test]
fn run_refuses_a_profile_this_machine_cannot_run_when_no_worker_can() {
    let farm = Farm::new();
    clip(&farm.input.join("tape.mpg"), 1);
    let out = farm
        .cmd(["run", "--profile", "h264-nvenc", "--out"])
        .arg(&farm.out)
        .arg(&farm.input)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let said = text(&out.stderr);
    assert!(said.contains("cannot run profile h264-nvenc"), "{said}");
    assert!(farm.jobs().is_empty(), "nothing was queued");
}

/// Tags are few (a RabbitMQ worker consumes a queue per subset of them): more than four in a
/// config, or required by one job, are refused with the limit.
#[test]
fn more_than_four_tags_are_refused() {
    let farm = Farm::with_config("tags = [\"a\", \"b\", \"c\", \"d\", \"e\"]");
    clip(&farm.input.join("one.mpg"), 1);
    let out = farm.run(["status"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("4 at most"),
        "{}",
        text(&out.stderr)
    );

    let farm = Farm::new();
    clip(&farm.input.join("one.mpg"), 1);
    let mut cmd = farm.cmd(["enqueue", "--out"]);
    cmd.arg(&farm.out);
    for tag in ["a", "b", "c", "d", "e"] {
        cmd.args(["--require", tag]);
    }
    let out = cmd.arg(farm.input.join("one.mpg")).output().unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("requires 5 tags (4 at most)"),
        "{}",
        text(&out.stderr)
    );
}

/// A worker starting with no trial verdicts kept tries only its default profile before its
/// first job; the rest are tried beside that job, and each found runnable is taken from then
/// on, without the job held meanwhile being dropped (on RabbitMQ its routes' consumers are
/// added on the same channel).
fn a_cold_worker_takes_its_first_job_before_trying_the_rest(farm: Farm) {
    let mut config = std::fs::read_to_string(&farm.config).unwrap();
    config.insert_str(0, "default_profile = \"slow\"\n");
    std::fs::write(&farm.config, config).unwrap();
    clip(&farm.input.join("long.mpg"), 4);
    clip(&farm.input.join("short.mpg"), 1);
    let slow = farm.enqueue(&[&farm.input.join("long.mpg")], "slow");
    let web = farm.enqueue(&[&farm.input.join("short.mpg")], "web");
    let cache = farm.root().join("cold-cache");
    let log = std::fs::File::create(farm.log_path("cold")).unwrap();
    let mut worker = farm
        .cmd(["worker", "--name", "cold", "--concurrency", "2"])
        .env("XDG_CACHE_HOME", &cache)
        .env("RUST_LOG", "info")
        .stderr(log)
        .spawn()
        .unwrap();
    wait_until("both jobs are done", Duration::from_secs(60), || {
        farm.status()["succeeded"] == 2
    });
    signal(worker.id(), "TERM");
    worker.wait().unwrap();
    let said = farm.log("cold");
    let taken: Vec<&str> = said.lines().filter(|l| l.contains("job taken")).collect();
    assert_eq!(taken.len(), 2, "{said}");
    assert!(
        taken[0].contains(&slow[0]),
        "the default profile's job first: {said}"
    );
    assert!(taken[1].contains(&web[0]), "{said}");
    // The web job was taken while the slow one still ran, which was not lost or taken again.
    let job = farm.job(&slow[0]);
    assert_eq!(job["attempts"], 1, "{job}");
    assert!(!said.contains("lost"), "{said}");
    // Every verdict is kept for the next start.
    let kept: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(
        &std::fs::read(cache.join("videofarm/profile-trials.json")).unwrap(),
    )
    .unwrap();
    assert!(kept.len() >= 11, "{kept:?}");
}

#[test]
fn a_cold_worker_on_sqlite_takes_its_first_job_before_trying_the_rest() {
    a_cold_worker_takes_its_first_job_before_trying_the_rest(Farm::new());
}

#[test]
fn a_cold_worker_on_rabbitmq_takes_its_first_job_before_trying_the_rest() {
    a_cold_worker_takes_its_first_job_before_trying_the_rest(Farm::amqp(""));
}
