//! Workers that cannot see the media: the worker runs in a mount namespace of its own where the
//! media folder is hidden under an empty tmpfs (as root, as CI runs), so the only way to the
//! files is `videofarm serve` on the machine that holds them. The job must end with a verified
//! output on the server, the source untouched, and nothing left in the staging area or the
//! worker's cache; on both backends.

mod common;

use common::*;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const TOKEN: &str = "transfer-test-token-0123456789";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `videofarm serve` of `farm` on `port`, its roots the media folder.
fn serve(farm: &Farm, port: u16) -> Child {
    let child = farm
        .cmd(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(farm.log_path("serve")).unwrap())
        .spawn()
        .unwrap();
    wait_until("serve listens", Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    child
}

/// A worker of `farm` in a mount namespace where `hidden` is an empty folder.
fn blind_worker(farm: &Farm, hidden: &Path, name: &str) -> Child {
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        // The script is fixed; the paths and the command come as its arguments.
        .arg("mount -t tmpfs tmpfs \"$0\" && exec \"$@\"")
        .arg(hidden)
        .arg(BIN);
    if let Some(broker) = &farm.broker {
        cmd.arg("--broker").arg(broker);
    }
    cmd.arg("--config")
        .arg(&farm.config)
        .args(["worker", "--name", name, "--concurrency", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(farm.log_path(name)).unwrap())
        .spawn()
        .expect("unshare (util-linux) runs")
}

fn leftovers(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(leftovers(&path));
        } else {
            found.push(path.display().to_string());
        }
    }
    found
}

fn blind(farm: Farm) {
    let media = tempfile::tempdir().unwrap();
    let tapes = media.path().join("tapes");
    let out = media.path().join("encoded");
    std::fs::create_dir_all(&tapes).unwrap();
    clip(&tapes.join("tape one.mpg"), 2);
    let source = std::fs::read(tapes.join("tape one.mpg")).unwrap();
    let port = free_port();
    let cache = farm.root().join("cache");
    let config = std::fs::read_to_string(&farm.config).unwrap();
    std::fs::write(
        &farm.config,
        format!(
            "token = {TOKEN:?}\nfiles_url = \"http://127.0.0.1:{port}\"\ntransfer_cache = {cache:?}\n{config}\n[paths]\nroots = [{:?}]\n",
            media.path()
        ),
    )
    .unwrap();
    let mut server = serve(&farm, port);
    let mut cmd = farm.cmd(["enqueue", "--out"]);
    cmd.arg(&out).arg(tapes.join("tape one.mpg"));
    let queued = cmd.output().unwrap();
    assert!(queued.status.success(), "{}", text(&queued.stderr));
    let id = farm.jobs()[0]["id"].as_str().unwrap().to_owned();

    let mut worker = blind_worker(&farm, media.path(), "far");
    wait_until("the job is done", Duration::from_secs(60), || {
        farm.job(&id)["state"] != "queued" && farm.job(&id)["state"] != "running"
    });
    let job = farm.job(&id);
    assert_eq!(job["state"], "succeeded", "{job}\n{}", farm.log("far"));
    let log = farm.log("far");
    assert!(
        log.contains("fetching the input") && log.contains("published by the file server"),
        "{log}"
    );
    let (streams, duration) = probe(&out.join("tape one.mkv"));
    assert_eq!(streams[0].1, "h264");
    assert!((duration - 2.0).abs() < 0.3, "{duration}");
    assert_eq!(
        std::fs::read(tapes.join("tape one.mpg")).unwrap(),
        source,
        "the source is untouched"
    );
    assert_eq!(
        leftovers(&out),
        vec![out.join("tape one.mkv").display().to_string()],
        "no staging file is left"
    );
    assert!(
        leftovers(&cache).is_empty(),
        "nothing is left in the cache: {:?}",
        leftovers(&cache)
    );

    signal(worker.id(), "TERM");
    let _ = worker.wait();
    let _ = server.kill();
    let _ = server.wait();
}

#[test]
fn a_worker_that_cannot_see_the_media_gets_and_sends_its_files_through_serve() {
    blind(Farm::new());
}

#[test]
fn on_rabbitmq_a_worker_that_cannot_see_the_media_gets_and_sends_its_files_through_serve() {
    blind(Farm::amqp(""));
}
