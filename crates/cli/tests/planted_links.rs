//! Links planted where the farm writes its own files beside an output (a tape's work folder,
//! the plan in it, the output's lock), on both backends, with a real worker: the job fails with
//! the reason (or goes on, the link replaced, never followed), and nothing outside the roots is
//! created, written or removed.

mod common;

use common::*;
use std::path::Path;
use std::time::Duration;

/// A folder outside the output folder holding one precious file; its listing afterwards.
fn outside(farm: &Farm) -> std::path::PathBuf {
    let outside = farm.root().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("victim"), b"precious").unwrap();
    outside
}

fn untouched(outside: &Path) {
    let names: Vec<_> = std::fs::read_dir(outside)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("victim")]);
    assert_eq!(std::fs::read(outside.join("victim")).unwrap(), b"precious");
}

/// Queue `tape` split in 1 s chunks; its id.
fn enqueue_split(farm: &Farm, tape: &Path) -> String {
    let mut cmd = farm.cmd(["enqueue", "--profile", "archive", "--split", "1", "--out"]);
    cmd.arg(&farm.out).arg(tape);
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    farm.jobs()[0]["id"].as_str().unwrap().to_owned()
}

fn wait_for_end(farm: &Farm, id: &str, worker: &str) -> serde_json::Value {
    wait_until("the job ends", Duration::from_secs(60), || {
        let state = farm.job(id)["state"].clone();
        state == "failed" || state == "succeeded"
    });
    let job = farm.job(id);
    assert!(job.is_object(), "{}", farm.log(worker));
    job
}

/// The tape's work folder is a link to a folder outside: refused, never written through.
fn a_work_folder_that_is_a_link(farm: Farm) {
    let outside = outside(&farm);
    let tape = farm.input.join("tape.mpg");
    clip(&tape, 3);
    std::fs::create_dir_all(&farm.out).unwrap();
    std::os::unix::fs::symlink(&outside, farm.out.join(".tape.mkv.videofarm-split")).unwrap();
    let id = enqueue_split(&farm, &tape);
    let worker = farm.spawn_worker("w", 1);
    let job = wait_for_end(&farm, &id, "w");
    assert_eq!(job["state"], "failed", "{job}");
    let error = job.to_string();
    assert!(
        error.contains("refused the split work folder") && error.contains("symbolic link"),
        "{job}"
    );
    untouched(&outside);
    reap(worker);
}

/// The plan in a real work folder is a link to a file outside: the plan is written in its
/// place (the link replaced, the file it pointed at untouched) and the tape is encoded.
fn a_plan_that_is_a_link(farm: Farm) {
    let outside = outside(&farm);
    // H.264 in MP4, which can be cut exactly (the MPEG-2 clip is encoded whole).
    let tape = farm.input.join("tape.mp4");
    ffmpeg(
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=160x120:rate=25",
            "-t",
            "3",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "25",
        ],
        &tape,
    );
    let work = farm.out.join(".tape.mkv.videofarm-split");
    std::fs::create_dir_all(&work).unwrap();
    std::os::unix::fs::symlink(outside.join("victim"), work.join("plan.json")).unwrap();
    let id = enqueue_split(&farm, &tape);
    let worker = farm.spawn_worker("w", 2);
    let job = wait_for_end(&farm, &id, "w");
    assert_eq!(job["state"], "succeeded", "{job}\n{}", farm.log("w"));
    assert!(farm.out.join("tape.mkv").is_file());
    assert!(
        farm.log("w").contains("joining the chunks"),
        "split, so the planted plan was met: {}",
        farm.log("w")
    );
    assert!(
        !work.exists(),
        "the work folder goes once the tape is published: {}",
        farm.log("w")
    );
    untouched(&outside);
    reap(worker);
}

/// The output's lock is a link to a file outside: the job fails for good, saying so.
fn a_lock_that_is_a_link(farm: Farm) {
    let outside = outside(&farm);
    let tape = farm.input.join("tape.mpg");
    clip(&tape, 1);
    std::fs::create_dir_all(&farm.out).unwrap();
    std::os::unix::fs::symlink(
        outside.join("victim"),
        farm.out.join(".tape.mkv.videofarm-lock"),
    )
    .unwrap();
    let id = farm.enqueue(&[&tape], "archive")[0].clone();
    let worker = farm.spawn_worker("w", 1);
    let job = wait_for_end(&farm, &id, "w");
    assert_eq!(job["state"], "failed", "{job}");
    assert!(job.to_string().contains("symbolic link"), "{job}");
    assert!(!farm.out.join("tape.mkv").exists());
    untouched(&outside);
    reap(worker);
}

#[test]
fn on_sqlite_a_work_folder_that_is_a_link_is_refused() {
    a_work_folder_that_is_a_link(Farm::new());
}

#[test]
fn on_rabbitmq_a_work_folder_that_is_a_link_is_refused() {
    a_work_folder_that_is_a_link(Farm::amqp(""));
}

#[test]
fn on_sqlite_a_plan_that_is_a_link_is_replaced_never_followed() {
    a_plan_that_is_a_link(Farm::new());
}

#[test]
fn on_rabbitmq_a_plan_that_is_a_link_is_replaced_never_followed() {
    a_plan_that_is_a_link(Farm::amqp(""));
}

#[test]
fn on_sqlite_a_lock_that_is_a_link_is_refused() {
    a_lock_that_is_a_link(Farm::new());
}

#[test]
fn on_rabbitmq_a_lock_that_is_a_link_is_refused() {
    a_lock_that_is_a_link(Farm::amqp(""));
}
