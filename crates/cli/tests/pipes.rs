//! Commands whose reader goes away (`videofarm jobs | head -1`) stop quietly with the usual
//! status: no panic, no backtrace, exit 101 no more; `run` still says how its batch went.

mod common;

use common::*;
use std::process::{Command, Output};

/// `cmd` with its standard output a pipe nobody reads (closed before it starts).
fn into_closed_pipe(mut cmd: Command) -> Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    cmd.stdout(writer).output().unwrap()
}

#[test]
fn printing_commands_stop_quietly_when_their_reader_is_gone() {
    let farm = Farm::new();
    clip(&farm.input.join("a.mpg"), 1);
    clip(&farm.input.join("b.mpg"), 1);
    let mut run = farm.cmd(["run", "--json", "--out"]);
    run.arg(&farm.out).arg(&farm.input);
    let ran = into_closed_pipe(run);
    assert_eq!(ran.status.code(), Some(0), "{}", text(&ran.stderr));
    assert!(farm.out.join("a.mkv").is_file() && farm.out.join("b.mkv").is_file());
    for args in [
        &["jobs"][..],
        &["jobs", "--json"],
        &["status"],
        &["status", "--json"],
        &["inspect"],
        &["report", "1"],
        &["report", "1", "--json"],
        &["profiles"],
    ] {
        let out = into_closed_pipe(farm.cmd(args));
        let said = text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {said}");
        assert!(!said.contains("panicked"), "{args:?}: {said}");
    }
    // And a summary whose reader is gone: the batch's status still counts (all were done).
    let mut again = farm.cmd(["run", "--out"]);
    again.arg(&farm.out).arg(&farm.input);
    let out = into_closed_pipe(again);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("panicked"));
}

/// `videofarm events 2>&1 | head -1` on RabbitMQ: both of its outputs are gone; the first event
/// ends it quietly, status 0.
#[test]
fn events_stop_quietly_when_their_reader_is_gone() {
    let farm = Farm::amqp("");
    clip(&farm.input.join("a.mpg"), 1);
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut events = farm
        .cmd(["events"])
        .stdout(writer.try_clone().unwrap())
        .stderr(writer)
        .spawn()
        .unwrap();
    // Events are published once it follows them; queue until one reaches it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        farm.run(["enqueue", "--force", "--out"].iter().copied().chain([
            farm.out.to_str().unwrap(),
            farm.input.join("a.mpg").to_str().unwrap(),
        ]));
        std::thread::sleep(std::time::Duration::from_millis(300));
        if let Some(status) = events.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "events never ended");
    };
    assert_eq!(status.code(), Some(0));
}
