//! The drop-in for the old Celery farm, against the real RabbitMQ and real Celery 5 from PyPI
//! (a virtualenv that `scripts/test` makes; `VIDEOFARM_TEST_CELERY_PYTHON` names its python).
//! The old producer queues captures with `videoTasks.encode.delay(srcFile, outDir)`; videofarm
//! workers encode them; `celery inspect` and `celery events` see the workers and their tasks; a
//! worker stopped mid-task hands its task to the other; malformed messages are refused into the
//! failed list while good tasks finish. Each test has a RabbitMQ virtual host of its own, so the
//! Celery app's fixed names (`celery`, `celery.pidbox`, `celeryev`) meet nothing else.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn celery_python() -> PathBuf {
    let python = std::env::var_os("VIDEOFARM_TEST_CELERY_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/celery-venv/bin/python")
        });
    let ok = Command::new(&python)
        .args(["-c", "import celery"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "Celery is needed: {} cannot import it (scripts/test makes target/celery-venv)",
        python.display()
    );
    python
}

/// A RabbitMQ virtual host for one test, deleted at its end.
struct Vhost(String);

impl Vhost {
    fn new() -> Vhost {
        let name = format!("vftest-celery-{}-{}", std::process::id(), nanos());
        rabbitmqctl(&["add_vhost", &name]);
        rabbitmqctl(&["set_permissions", "-p", &name, "guest", ".*", ".*", ".*"]);
        Vhost(name)
    }

    fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:5672/{}", self.0)
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl")
            .args(["delete_vhost", &self.0])
            .output();
    }
}

fn nanos() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
}

/// The old farm's Python side, as it was: `celeryconfig.py`, `videoTasks.py` (its task body is
/// never run here: videofarm workers take its tasks) and `queueFiles.py`, which moves each
/// capture from `to_encode/` to `encoding/` and queues it.
fn old_farm(dir: &Path, broker: &str) {
    std::fs::write(
        dir.join("celeryconfig.py"),
        format!("broker_url = {broker:?}\n"),
    )
    .unwrap();
    std::fs::write(
        dir.join("videoTasks.py"),
        r#"import os
from celery import Celery

app = Celery('videoTasks')
app.config_from_object('celeryconfig')
if os.environ.get('TASK_PROTOCOL'):
    app.conf.task_protocol = int(os.environ['TASK_PROTOCOL'])


@app.task
def encode(srcFile, dstFolder):
    raise RuntimeError('the old Python worker ran; videofarm should have')
"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("queueFiles.py"),
        r#"import os, shutil, sys
import videoTasks

base, outDir = sys.argv[1], sys.argv[2]
for name in sorted(os.listdir(os.path.join(base, 'to_encode'))):
    srcFile = os.path.join(base, 'encoding', name)
    shutil.move(os.path.join(base, 'to_encode', name), srcFile)
    videoTasks.encode.delay(srcFile, outDir)
"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("badMessages.py"),
        r#"import sys
from kombu import Connection
import videoTasks

app = videoTasks.app
outDir = sys.argv[1]
app.send_task('videoTasks.transcode', args=['/x/a.mpg', outDir], task_id='bad-unknown-task')
app.send_task('videoTasks.encode', args=['/x/a.mpg'], task_id='bad-one-argument')
app.send_task('videoTasks.encode', args=[1, 2], task_id='bad-numbers')
app.send_task('videoTasks.encode', args=['/x/a.mpg', outDir], task_id='bad-pickle', serializer='pickle')
app.send_task('videoTasks.encode', args=['/etc/outside.mpg', outDir], task_id='bad-outside-roots')
with Connection(app.conf.broker_url) as conn:
    producer = conn.Producer()
    producer.publish(b'{not json', routing_key='celery', exchange='', content_type='application/json', content_encoding='utf-8')
    producer.publish(b'task: x', routing_key='celery', exchange='', content_type='application/x-yaml', content_encoding='utf-8')
"#,
    )
    .unwrap();
}

fn python(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(celery_python());
    cmd.current_dir(dir).args(args).env_remove("TASK_PROTOCOL");
    cmd
}

/// `celery -A videoTasks inspect METHOD`: what it printed.
fn inspect(dir: &Path, method: &str) -> String {
    let out = python(
        dir,
        &[
            "-m",
            "celery",
            "-A",
            "videoTasks",
            "inspect",
            method,
            "--timeout",
            "3",
        ],
    )
    .output()
    .unwrap();
    format!("{}{}", text(&out.stdout), text(&out.stderr))
}

/// A capture long enough to be seen encoding: 640x480, `secs` long, MPEG-2 and MP2.
fn capture(path: &Path, secs: u32) {
    let t = secs.to_string();
    ffmpeg(
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=640x480:rate=25",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-t",
            &t,
            "-c:v",
            "mpeg2video",
            "-q:v",
            "4",
            "-c:a",
            "mp2",
        ],
        path,
    );
}

fn spawn_celery_worker(farm: &Farm, name: &str) -> Child {
    farm.cmd(["worker", "--celery", "--name", name, "--concurrency", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(farm.log_path(name)).unwrap())
        .spawn()
        .unwrap()
}

/// Both workers answer `celery inspect ping`.
fn both_answer_ping(farm: &Farm) {
    let started = std::time::Instant::now();
    loop {
        let pong = inspect(farm.root(), "ping");
        if pong.contains("w1@") && pong.contains("w2@") && pong.matches("pong").count() == 2 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "both workers answer celery ping; it said:\n{pong}\nw1:\n{}\nw2:\n{}",
            farm.log("w1"),
            farm.log("w2")
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Each refused message is in the failed list with its reason, and nothing else failed.
fn refused_messages_failed_with_their_reasons(jobs: &[serde_json::Value]) {
    let failed: Vec<String> = jobs
        .iter()
        .filter(|j| j["state"] == "failed")
        .map(|j| j["error"].as_str().unwrap_or_default().to_owned())
        .collect();
    for reason in [
        "unknown task \"videoTasks.transcode\"",
        "takes 2 arguments",
        "srcFile must be a path",
        "only application/json is read",
        "outside",
        "not valid JSON",
        "application/x-yaml",
    ] {
        assert!(
            failed.iter().any(|f| f.contains(reason)),
            "{reason}: {failed:#?}"
        );
    }
    assert_eq!(failed.len(), 7, "{failed:#?}");
}

/// The old task queued again for a file already done is recognised, not encoded twice.
fn a_task_for_a_file_already_done_is_recognised(farm: &Farm, base: &Path, out_dir: &str) {
    let done = farm.out.join("tape3.mkv");
    let before = std::fs::metadata(&done).unwrap().modified().unwrap();
    let again = python(
        farm.root(),
        &[
            "-c",
            "import sys, videoTasks; videoTasks.encode.delay(sys.argv[1], sys.argv[2])",
            base.join("encoding/tape3.mpg").to_str().unwrap(),
            out_dir,
        ],
    )
    .output()
    .unwrap();
    assert!(again.status.success(), "{}", text(&again.stderr));
    wait_until("the re-run is recognised", Duration::from_secs(30), || {
        farm.log("w2").contains("already_done=true")
    });
    assert_eq!(
        std::fs::metadata(&done).unwrap().modified().unwrap(),
        before
    );
}

/// Both long tapes encode at once (`celery inspect active` lists each with its worker); w1
/// is stopped mid-task (SIGTERM). The tape it had, for w2 to do.
fn w1_stops_mid_task(farm: &Farm, mut w1: Child) -> String {
    // Both long tapes encode at once: `celery inspect active` lists each with its worker.
    let mut active = String::new();
    wait_until(
        "inspect active lists both tapes",
        Duration::from_secs(30),
        || {
            active = inspect(farm.root(), "active");
            active.contains("tape1.mpg") && active.contains("tape2.mpg")
        },
    );
    assert!(active.contains("videoTasks.encode"), "{active}");
    assert!(active.contains("'hostname': 'w1@"), "{active}");
    assert!(
        active.contains("time_start") && active.contains("worker_pid"),
        "{active}"
    );

    // w1 stops mid-task (SIGTERM) at once (a tape takes ~10 s here, so nothing slow may come
    // between seeing it run and stopping it): its tape goes back to the Celery queue, and w2
    // does it.
    let w1_tape = active
        .split("->")
        .find(|node| node.contains("w1@"))
        .and_then(|node| {
            ["tape1.mpg", "tape2.mpg"]
                .into_iter()
                .find(|t| node.contains(t))
        })
        .expect("w1 runs a tape")
        .to_owned();
    signal(w1.id(), "TERM");
    assert!(w1.wait().unwrap().success());
    assert!(
        farm.log("w1").contains("released"),
        "w1 was stopped mid-task: {}",
        farm.log("w1")
    );
    let stats = inspect(farm.root(), "stats");
    assert!(stats.contains("max-concurrency"), "{stats}");
    let registered = inspect(farm.root(), "registered");
    assert!(registered.contains("videoTasks.encode"), "{registered}");
    w1_tape
}

#[test]
fn celery_tasks_run_on_videofarm_workers_that_celery_tools_can_see() {
    let vhost = Vhost::new();
    let farm = Farm::amqp_at(&vhost.url(), "");
    // Only the farm's folder may be read or written.
    let text_config = std::fs::read_to_string(&farm.config).unwrap();
    std::fs::write(
        &farm.config,
        format!("{text_config}\n[paths]\nroots = [{:?}]\n", farm.root()),
    )
    .unwrap();
    let base = farm.root().join("nas");
    for dir in ["to_encode", "encoding"] {
        std::fs::create_dir_all(base.join(dir)).unwrap();
    }
    capture(&base.join("to_encode/tape1.mpg"), 40);
    capture(&base.join("to_encode/tape2.mpg"), 40);
    clip(&base.join("to_encode/tape3.mpg"), 2);
    old_farm(farm.root(), &vhost.url());
    let out_dir = format!("{}/", farm.out.display());

    let mut dump = python(
        farm.root(),
        &["-m", "celery", "-A", "videoTasks", "events", "--dump"],
    )
    .stdout(std::fs::File::create(farm.root().join("events.txt")).unwrap())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let w1 = spawn_celery_worker(&farm, "w1");
    let w2 = spawn_celery_worker(&farm, "w2");
    both_answer_ping(&farm);

    let queued = python(
        farm.root(),
        &["queueFiles.py", base.to_str().unwrap(), &out_dir],
    )
    .output()
    .unwrap();
    assert!(queued.status.success(), "{}", text(&queued.stderr));
    assert!(std::fs::read_dir(base.join("to_encode"))
        .unwrap()
        .next()
        .is_none());

    let w1_tape = w1_stops_mid_task(&farm, w1);

    // Malformed and hostile messages are refused into the failed list; good tasks go on.
    let bad = python(farm.root(), &["badMessages.py", &out_dir])
        .output()
        .unwrap();
    assert!(bad.status.success(), "{}", text(&bad.stderr));
    // The old message protocol too.
    capture(&base.join("to_encode/tape4.mpg"), 2);
    let old_protocol = python(
        farm.root(),
        &["queueFiles.py", base.to_str().unwrap(), &out_dir],
    )
    .env("TASK_PROTOCOL", "1")
    .output()
    .unwrap();
    assert!(
        old_protocol.status.success(),
        "{}",
        text(&old_protocol.stderr)
    );

    let outputs = ["tape1.mkv", "tape2.mkv", "tape3.mkv", "tape4.mkv"];
    wait_until("every capture is encoded", Duration::from_secs(120), || {
        outputs.iter().all(|o| farm.out.join(o).is_file())
    });
    for output in outputs {
        let (streams, _) = probe(&farm.out.join(output));
        assert_eq!(streams[0].1, "h264", "{output}: {streams:?}");
    }
    let jobs = farm.jobs();
    let by_input = |name: &str| {
        jobs.iter()
            .find(|j| j["input"].as_str().is_some_and(|i| i.ends_with(name)))
            .unwrap_or_else(|| panic!("{name} is listed: {jobs:#?}"))
            .clone()
    };
    let handed = by_input(&w1_tape);
    assert_eq!(handed["state"], "succeeded", "{handed}");
    assert_eq!(
        handed["worker"], "w2",
        "the task w1 dropped was done by w2: {handed}"
    );

    refused_messages_failed_with_their_reasons(&jobs);

    a_task_for_a_file_already_done_is_recognised(&farm, &base, &out_dir);

    // `celery events --dump` saw the workers and their tasks.
    std::thread::sleep(Duration::from_secs(3));
    reap_child(&mut dump);
    let events = std::fs::read_to_string(farm.root().join("events.txt")).unwrap();
    for seen in [
        "task received",
        "task started",
        "task succeeded",
        "w2@",
        "heartbeat",
    ] {
        assert!(events.contains(seen), "{seen}: {events}");
    }
    signal(w2.id(), "TERM");
    reap(w2);
}

fn reap_child(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}
