//! Workers on hosts of their own: each in a network namespace joined to this one by a virtual
//! link (`ip netns`, `veth`), reaching the broker through a relay on the host's end of its
//! link. One host is cut off (its link down: packets vanish both ways, no connection is told)
//! while it encodes, for longer than its lease; another's relay holds every byte 200 ms each
//! way all along (this machine's kernel has no `netem`, so the latency is the relay's). The
//! farm must lose nothing and do nothing twice: the cut-off worker's job goes to another, the
//! cut-off worker publishes nothing for it (fenced), and once the link is back it takes jobs
//! again. The large run is `bench/partition.sh`.
//!
//! Needs root (namespaces and links), as the package test does.

mod common;

use common::*;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const JOBS: usize = 6;
/// Each job's length, and so its encode's (the `slow` profile encodes in real time): long
/// enough that the cut comes while the encode has seconds left.
const SECS: u32 = 6;

/// `ip ARGS` (or any command), which must succeed.
fn sh(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        text(&out.stderr)
    );
}

/// A host of its own: a network namespace with a link to this one.
struct Host {
    ns: String,
    /// This side's end of the link.
    link: String,
    relay: Relay,
}

impl Host {
    fn new(n: u8, delay: Duration) -> Host {
        let tag = std::process::id() % 10_000;
        let (ns, link, inside) = (
            format!("vf{tag}h{n}"),
            format!("vf{tag}a{n}"),
            format!("vf{tag}b{n}"),
        );
        let subnet = format!("10.{}.{n}", 100 + tag % 100);
        let _ = Command::new("ip")
            .args(["netns", "del", &ns])
            .stderr(Stdio::null())
            .status();
        sh("ip", &["netns", "add", &ns]);
        sh(
            "ip",
            &[
                "link", "add", &link, "type", "veth", "peer", "name", &inside,
            ],
        );
        sh("ip", &["link", "set", &inside, "netns", &ns]);
        sh(
            "ip",
            &["addr", "add", &format!("{subnet}.1/24"), "dev", &link],
        );
        sh("ip", &["link", "set", &link, "up"]);
        let inside_addr = format!("{subnet}.2/24");
        for args in [
            vec!["addr", "add", &inside_addr, "dev", &inside],
            vec!["link", "set", &inside, "up"],
            vec!["link", "set", "lo", "up"],
        ] {
            let mut all = vec!["netns", "exec", &ns, "ip"];
            all.extend(args);
            sh("ip", &all);
        }
        let relay = Relay::delayed(&format!("{subnet}.1"), true, delay);
        Host { ns, link, relay }
    }

    /// Cut the link (`false`) or bring it back (`true`).
    fn link(&self, up: bool) {
        let state = if up { "up" } else { "down" };
        sh("ip", &["link", "set", &self.link, state]);
    }

    /// `videofarm worker` on this host, through its relay to the broker.
    fn worker(&self, farm: &Farm, name: &str) -> Child {
        let log = std::fs::File::create(farm.log_path(name)).unwrap();
        let mut cmd = without_our_env(Command::new("ip"));
        cmd.args([
            "netns",
            "exec",
            &self.ns,
            BIN,
            "--broker",
            &self.relay.url(),
            "--config",
        ])
        .arg(&farm.config)
        .args(["worker", "--concurrency", "1", "--name", name])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
        cmd.spawn().unwrap()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the link, and with it this one.
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

/// The job `worker` is running, once it runs one.
fn running_on(farm: &Farm, worker: &str) -> Option<String> {
    farm.jobs()
        .into_iter()
        .find(|j| j["state"] == "running" && j["worker"] == worker)
        .map(|j| j["id"].as_str().unwrap().to_owned())
}

#[test]
fn a_worker_cut_off_mid_job_is_fenced_and_a_slow_link_loses_nothing() {
    let farm = Farm::amqp("");
    let hosts: Vec<Host> = [0, 0, 200]
        .into_iter()
        .zip(0..)
        .map(|(ms, n)| Host::new(n, Duration::from_millis(ms)))
        .collect();
    let first = farm.input.join("tape000.mpg");
    clip(&first, SECS);
    for i in 1..JOBS {
        std::fs::copy(&first, farm.input.join(format!("tape{i:03}.mpg"))).unwrap();
    }
    assert_eq!(farm.enqueue(&[&farm.input], "slow").len(), JOBS);
    let names = ["h0", "h1", "h2"];
    let mut workers: Vec<Child> = hosts
        .iter()
        .zip(names)
        .map(|(host, name)| host.worker(&farm, name))
        .collect();

    let mut cut = None;
    wait_until("h0 runs a job", Duration::from_secs(30), || {
        cut = running_on(&farm, "h0");
        cut.is_some()
    });
    let cut = cut.unwrap();
    eprintln!("partition: h0 cut off while it runs job {cut}");
    hosts[0].link(false);
    wait_until(
        "another worker takes the cut-off worker's job",
        Duration::from_secs(30),
        || {
            let job = farm.job(&cut);
            job["worker"] != "h0" && job["worker"].is_string()
        },
    );
    std::thread::sleep(Duration::from_secs(4));
    hosts[0].link(true);
    eprintln!("partition: h0 back");

    let started = Instant::now();
    wait_until("every job is done", Duration::from_secs(90), || {
        farm.status()["succeeded"] == JOBS
    });
    eprintln!(
        "partition: done {:?} after the link came back",
        started.elapsed()
    );
    wait_until("h0 is back in the farm", Duration::from_secs(30), || {
        farm.inspect().iter().any(|w| w["name"] == "h0")
    });
    let logs: Vec<String> = names.iter().map(|n| farm.log(n)).collect();
    for worker in &workers {
        signal(worker.id(), "TERM");
    }
    for worker in &mut workers {
        assert!(worker.wait().unwrap().success());
    }

    let outputs: Vec<_> = (0..JOBS)
        .map(|i| farm.out.join(format!("tape{i:03}.mkv")))
        .collect();
    each_output_renamed_once(&outputs, &logs);
    // It noticed at its next heartbeat that it had lost the job, and stopped that encode.
    assert!(
        logs[0].lines().any(|l| l.contains(&format!("id={cut} "))
            && l.contains("job lost: nothing published")),
        "{}",
        logs[0]
    );
    let cut_output = farm.job(&cut)["output"].as_str().unwrap().to_owned();
    assert!(
        !logs[0].contains(&format!(" published output={cut_output}")),
        "the cut-off worker published the job it lost:\n{}",
        logs[0]
    );
    let status = farm.status();
    assert_eq!(
        (
            status["succeeded"].as_u64(),
            status["failed"].as_u64(),
            status["running"].as_u64()
        ),
        (Some(JOBS as u64), Some(0), Some(0)),
        "{status}"
    );
    outputs_in_place(&farm.out, &outputs, f64::from(SECS));
}
