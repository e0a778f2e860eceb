//! Queueing without running: `enqueue` (with the old producer's `--move-to`), `retry`, `watch`.

mod common;

use common::*;
use std::path::PathBuf;
use std::time::Duration;

#[test]
fn enqueue_move_to_moves_each_file_atomically_and_a_separate_worker_encodes_it() {
    let farm = Farm::new();
    std::fs::create_dir_all(farm.input.join("box1")).unwrap();
    clip(&farm.input.join("box1/tape.mpg"), 1);
    let encoding = farm.root().join("encoding");
    let mut cmd = farm.cmd(["enqueue", "--move-to"]);
    let out = cmd
        .arg(&encoding)
        .arg("--out")
        .arg(&farm.out)
        .arg(&farm.input)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        !farm.input.join("box1/tape.mpg").exists(),
        "moved away from the drop folder"
    );
    assert!(
        encoding.join("box1/tape.mpg").is_file(),
        "moved into --move-to, keeping its subfolder"
    );
    let jobs = farm.jobs();
    assert_eq!(jobs.len(), 1);
    assert_eq!(
        jobs[0]["input"],
        encoding.join("box1/tape.mpg").to_str().unwrap(),
        "the job points at the new path"
    );
    assert_eq!(farm.status()["queued"], 1);

    // Queueing the same file again adds nothing.
    let mut again = farm.cmd(["enqueue", "--out"]);
    let out = again.arg(&farm.out).arg(&encoding).output().unwrap();
    assert!(out.status.success());
    assert!(
        text(&out.stdout).contains("already known"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(farm.jobs().len(), 1);

    let worker = farm.spawn_worker("w", 1);
    wait_until("the worker encodes it", Duration::from_secs(20), || {
        farm.status()["succeeded"] == 1
    });
    reap(worker);
    assert_eq!(farm.outputs(), vec![PathBuf::from("box1/tape.mkv")]);
}

#[test]
fn retry_brings_failed_jobs_back_and_they_succeed_once_fixed() {
    let farm = Farm::new();
    let tape = farm.input.join("tape.mpg");
    std::fs::write(&tape, b"").unwrap();
    let mut cmd = farm.cmd(["run", "--json", "--out"]);
    let out = cmd.arg(&farm.out).arg(&tape).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let id = farm.jobs()[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(farm.job(&id)["state"], "failed");

    // The capture is fixed in place; `retry` queues the same job again.
    let out = farm.run(["retry", "--all-failed"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(&id));
    assert_eq!(farm.job(&id)["state"], "queued");
    clip(&tape, 1);
    let worker = farm.spawn_worker("w", 1);
    wait_until("the retried job succeeds", Duration::from_secs(20), || {
        farm.job(&id)["state"] == "succeeded"
    });
    reap(worker);
    let bad = farm.run(["retry", "12345"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        text(&bad.stderr).contains("no job with id 12345"),
        "{}",
        text(&bad.stderr)
    );
}

#[test]
fn watch_queues_a_file_once_and_only_after_it_stops_growing() {
    let farm = Farm::new();
    let drop = farm.root().join("drop");
    std::fs::create_dir_all(&drop).unwrap();
    let mut watch = farm.cmd(["watch", "--settle", "1.0", "--interval", "0.2", "--out"]);
    let watcher = watch
        .arg(&farm.out)
        .arg(&drop)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();

    // A capture written over two seconds in pieces: never queued while it grows.
    let seed = farm.root().join("seed.mpg");
    clip(&seed, 2);
    let bytes = std::fs::read(&seed).unwrap();
    let capture = drop.join("capture.mpg");
    let pieces = 8;
    for i in 0..pieces {
        let end = bytes.len() * (i + 1) / pieces;
        std::fs::write(&capture, &bytes[..end]).unwrap();
        std::thread::sleep(Duration::from_millis(250));
        assert!(
            !farm.db.exists() || farm.jobs().is_empty(),
            "queued while still being written"
        );
    }
    wait_until(
        "the settled capture is queued",
        Duration::from_secs(10),
        || farm.db.exists() && farm.jobs().len() == 1,
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(farm.jobs().len(), 1, "queued once");
    let job = &farm.jobs()[0];
    assert_eq!(job["input"], capture.to_str().unwrap());
    assert_eq!(job["input_size"], bytes.len() as u64, "the whole file");
    signal(watcher.id(), "TERM");
    reap(watcher);
}

/// `watch ... 2>&1 | head -1`: once the reader is gone every write fails; the watch goes on
/// and still stops on SIGTERM. A watched folder that disappears is said, and so is its return.
#[test]
fn watch_survives_a_closed_pipe_stops_on_sigterm_and_says_when_its_folder_is_gone() {
    let farm = Farm::new();
    let drop_dir = farm.root().join("drop");
    std::fs::create_dir_all(&drop_dir).unwrap();
    let (reader, writer) = std::io::pipe().unwrap();
    let mut watch = farm
        .cmd(["watch", "--interval", "0.1", "--settle", "0.1", "--out"])
        .arg(&farm.out)
        .arg(&drop_dir)
        .stdout(writer.try_clone().unwrap())
        .stderr(writer)
        .spawn()
        .unwrap();
    drop(reader);
    clip(&drop_dir.join("tape.mpg"), 1);
    wait_until("the file is queued", Duration::from_secs(10), || {
        farm.jobs().len() == 1
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(watch.try_wait().unwrap().is_none(), "still watching");
    signal(watch.id(), "TERM");
    wait_until("it stops", Duration::from_secs(5), || {
        watch.try_wait().unwrap().is_some()
    });

    let log = farm.root().join("watch.log");
    let mut watch = farm
        .cmd(["watch", "--interval", "0.1", "--out"])
        .arg(&farm.out)
        .arg(&drop_dir)
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    std::fs::remove_dir_all(&drop_dir).unwrap();
    wait_until("it says the folder is gone", Duration::from_secs(5), || {
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("the watched folder is gone")
    });
    std::fs::create_dir_all(&drop_dir).unwrap();
    wait_until("it says the folder is back", Duration::from_secs(5), || {
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("the watched folder is back")
    });
    signal(watch.id(), "TERM");
    watch.wait().unwrap();
}

/// `tape.avi` dropped beside `tape.mpg` (both would become `tape.mkv`), and a link that leads
/// nowhere: the watch says each once and goes on queueing every other file, and it does again
/// after a restart (as systemd's restart would start it). `status` shows both problems while
/// the watch runs, on either queue, and none once it has stopped.
fn a_watch_says_each_problem_once_shows_it_in_status_and_never_stops(farm: Farm) {
    let drop_dir = farm.root().join("drop");
    std::fs::create_dir_all(&drop_dir).unwrap();
    let seed = farm.root().join("seed.mpg");
    clip(&seed, 1);
    let put = |name: &str| std::fs::copy(&seed, drop_dir.join(name)).unwrap();
    let queued = |name: &str| {
        farm.jobs()
            .iter()
            .any(|j| j["input"] == drop_dir.join(name).to_str().unwrap())
    };
    let problems = || -> Vec<String> {
        let status = farm.status();
        let mut said = Vec::new();
        for watch in status["watch_problems"].as_array().unwrap() {
            assert_eq!(watch["folder"], drop_dir.to_str().unwrap());
            for p in watch["problems"].as_array().unwrap() {
                said.push(p.as_str().unwrap().to_owned());
            }
        }
        said
    };
    put("tape.mpg");
    for round in 0..2 {
        let log = farm.root().join(format!("watch-{round}.log"));
        let mut watch = farm
            .cmd(["watch", "--interval", "0.1", "--settle", "0.1", "--out"])
            .arg(&farm.out)
            .arg(&drop_dir)
            .stderr(std::fs::File::create(&log).unwrap())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        if round == 0 {
            wait_until("tape.mpg is queued", Duration::from_secs(20), || {
                queued("tape.mpg")
            });
            put("tape.avi");
            std::os::unix::fs::symlink("/nowhere/lost.mpg", drop_dir.join("lost.mpg")).unwrap();
        }
        let next = format!("next-{round}.mpg");
        put(&next);
        wait_until(
            &format!("{next} is queued past the clash"),
            Duration::from_secs(20),
            || queued(&next),
        );
        wait_until(
            "status shows both problems",
            Duration::from_secs(10),
            || {
                let said = problems();
                said.len() == 2
                    && said.iter().any(|p| p.contains("would both become"))
                    && said.iter().any(|p| p.contains("lost.mpg: cannot be read"))
            },
        );
        assert!(watch.try_wait().unwrap().is_none(), "still watching");
        signal(watch.id(), "TERM");
        assert!(watch.wait().unwrap().success());
        assert_eq!(problems(), Vec::<String>::new(), "a stopped watch has none");
        let said = std::fs::read_to_string(&log).unwrap();
        for problem in ["would both become", "lost.mpg: cannot be read"] {
            assert_eq!(said.matches(problem).count(), 1, "said once: {said}");
        }
        assert!(
            said.contains("tape.avi") && said.contains("tape.mkv"),
            "{said}"
        );
        assert!(!queued("tape.avi") && !queued("lost.mpg"));
    }
}

#[test]
fn a_watch_on_sqlite_says_each_problem_once_shows_it_in_status_and_never_stops() {
    a_watch_says_each_problem_once_shows_it_in_status_and_never_stops(Farm::new());
}

#[test]
fn a_watch_on_rabbitmq_says_each_problem_once_shows_it_in_status_and_never_stops() {
    a_watch_says_each_problem_once_shows_it_in_status_and_never_stops(Farm::amqp(""));
}
