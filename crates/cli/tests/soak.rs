//! A short chaos soak (the long one is `bench/soak.sh`): small real jobs on three workers while
//! a random worker is killed with SIGKILL and restarted every 1.5 s and one is paused past its
//! lease and resumed; on RabbitMQ the broker also goes away for a few seconds (through a relay)
//! and every connection is closed once. It must end with every job done exactly once: one
//! output each, each renamed into place once (the workers log every rename), no temporary or
//! lock file left, no ffmpeg left running, and `status`/`inspect` exactly right.
//! `rabbitmqctl close_all_connections` reaches every connection on the broker, so this file
//! holds the only test of its binary (test binaries run one after another).

mod common;

use common::*;
use std::process::Child;
use std::time::{Duration, Instant};

const JOBS: usize = 60;
/// The chaos runs at least this long, whatever the pace of the jobs.
const AT_LEAST: Duration = Duration::from_secs(8);
const WORKERS: usize = 3;

/// A small random number source (the seed is printed, so a failure can be replayed).
struct Dice(u64);

impl Dice {
    fn roll(&mut self, below: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) % below as u64) as usize
    }
}

struct Crew<'a> {
    farm: &'a Farm,
    workers: Vec<(String, Child)>,
    started: usize,
    /// Every worker process started, alive or not.
    pids: Vec<u32>,
}

impl<'a> Crew<'a> {
    fn new(farm: &'a Farm) -> Self {
        let mut crew = Crew {
            farm,
            workers: Vec::new(),
            started: 0,
            pids: Vec::new(),
        };
        for _ in 0..WORKERS {
            crew.start();
        }
        crew
    }

    /// A new worker incarnation, with a log of its own.
    fn start(&mut self) {
        let name = format!("w{}", self.started);
        self.started += 1;
        let child = self.farm.spawn_worker(&name, 1);
        self.pids.push(child.id());
        self.workers.push((name, child));
    }

    fn kill_one(&mut self, dice: &mut Dice) {
        let (name, mut child) = self.workers.remove(dice.roll(self.workers.len()));
        child.kill().unwrap();
        child.wait().unwrap();
        eprintln!("soak: killed {name}");
        self.start();
    }

    /// Stop every worker as a user would (SIGTERM), and wait for each.
    fn stop(self) {
        for (_, child) in &self.workers {
            signal(child.id(), "TERM");
        }
        for (name, mut child) in self.workers {
            let deadline = Instant::now() + Duration::from_secs(15);
            while child.try_wait().unwrap().is_none() {
                assert!(Instant::now() < deadline, "{name} did not stop on SIGTERM");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// No ffmpeg outlived its worker: none is a child of a worker of this soak (all stopped or
/// killed), none was left to init.
fn no_ffmpeg_outlived_its_worker(worker_pids: &[u32]) {
    let orphans: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| stat.contains("(ffmpeg)"))
        .filter(|stat| {
            let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
            let mut fields = after.split_whitespace();
            // A zombie has exited: it runs nothing (where PID 1 does not reap, as in some
            // containers, the killed workers' ffmpegs stay listed as such).
            let running = fields.next() != Some("Z");
            let ppid: u32 = fields.next().and_then(|p| p.parse().ok()).unwrap_or(0);
            running && (ppid == 1 || worker_pids.contains(&ppid))
        })
        .collect();
    assert!(orphans.is_empty(), "{orphans:?}");
}

/// The chaos the backend can take besides killed and paused workers.
type Extra<'a> = Box<dyn FnMut(Duration) + 'a>;

fn soak(farm: &Farm, mut extra: Extra<'_>) {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("soak: seed {seed}");
    let mut dice = Dice(seed);
    let first = farm.input.join("tape000.mpg");
    clip(&first, 2);
    for i in 1..JOBS {
        std::fs::copy(&first, farm.input.join(format!("tape{i:03}.mpg"))).unwrap();
    }
    assert_eq!(farm.enqueue(&[&farm.input], "archive").len(), JOBS);

    let mut crew = Crew::new(farm);
    let started = Instant::now();
    let mut next_kill = Duration::from_millis(1500);
    let mut paused = false;
    loop {
        let now = started.elapsed();
        assert!(now < Duration::from_secs(150), "the soak did not end");
        if now >= next_kill {
            crew.kill_one(&mut dice);
            next_kill = now + Duration::from_millis(1500);
        }
        if !paused && now >= Duration::from_secs(2) {
            // Paused past its lease (2 s), then resumed: it must find its job gone.
            paused = true;
            let (name, child) = &crew.workers[dice.roll(crew.workers.len())];
            eprintln!("soak: pausing {name}");
            signal(child.id(), "STOP");
            std::thread::sleep(Duration::from_secs(3));
            signal(child.id(), "CONT");
        }
        extra(now);
        let done = std::fs::read_dir(&farm.out)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".mkv"))
                    .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                    .count()
            })
            .unwrap_or(0);
        if now >= AT_LEAST && done == JOBS && farm.status()["succeeded"] == JOBS {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let logs: Vec<String> = (0..crew.started)
        .map(|i| farm.log(&format!("w{i}")))
        .collect();
    let worker_pids = crew.pids.clone();
    crew.stop();

    let outputs: Vec<_> = (0..JOBS)
        .map(|i| farm.out.join(format!("tape{i:03}.mkv")))
        .collect();
    each_output_renamed_once(&outputs, &logs);
    outputs_in_place(&farm.out, &outputs, 2.0);
    no_ffmpeg_outlived_its_worker(&worker_pids);
    // The records are exact.
    let status = farm.status();
    assert_eq!(
        (
            status["succeeded"].as_u64(),
            status["failed"].as_u64(),
            status["queued"].as_u64(),
            status["running"].as_u64()
        ),
        (Some(JOBS as u64), Some(0), Some(0), Some(0)),
        "{status}"
    );
    assert!(farm
        .inspect()
        .iter()
        .all(|w| w["active"].as_array().is_some_and(|a| a.is_empty())));
}

#[test]
fn a_short_soak_on_the_embedded_queue_loses_nothing_and_does_nothing_twice() {
    let farm = Farm::new();
    soak(&farm, Box::new(|_| {}));
}

#[test]
fn a_short_soak_on_rabbitmq_with_an_outage_and_closed_connections() {
    let relay = Relay::new(true);
    let farm = Farm::amqp_at(&relay.url(), "");
    let mut outage = false;
    let mut closed = false;
    soak(
        &farm,
        Box::new(|now| {
            if !outage && now >= Duration::from_secs(1) {
                outage = true;
                eprintln!("soak: the broker goes away for 3 s");
                relay.down();
                std::thread::sleep(Duration::from_secs(3));
                relay.up();
            }
            if !closed && now >= Duration::from_secs(6) {
                closed = true;
                eprintln!("soak: closing every connection");
                rabbitmqctl(&["close_all_connections", "videofarm soak"]);
            }
        }),
    );
}
