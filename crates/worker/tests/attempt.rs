//! The attempt on its own: a worker against an in-process queue (the SQLite queue in a temporary
//! file) and real ffmpeg on clips made here. What the queue records after each attempt is what
//! the attempt told it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use videofarm_core::{
    Backend, Event, JobFilter, JobRecord, JobSpec, JobState, Profiles, QueueSettings, WorkerInfo,
};
use videofarm_ffmpeg::Tools;
use videofarm_queue_sqlite::SqliteQueue;
use videofarm_worker::{Worker, WorkerSettings};

struct Bench {
    dir: tempfile::TempDir,
    queue: Arc<dyn Backend>,
}

impl Bench {
    fn new() -> Bench {
        let dir = tempfile::tempdir().unwrap();
        let queue = SqliteQueue::open(&dir.path().join("q.db"), QueueSettings::default()).unwrap();
        std::fs::create_dir_all(dir.path().join("out")).unwrap();
        Bench {
            queue: Arc::new(queue),
            dir,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn spec(&self, input: &str, output: &str) -> JobSpec {
        JobSpec {
            input: self.path(input),
            output: self.path(output),
            profile: "archive".into(),
            key: format!("{input}->{output}"),
            input_size: std::fs::metadata(self.path(input)).map_or(0, |m| m.len()),
            ..Default::default()
        }
    }

    fn worker(&self) -> Worker {
        let settings = WorkerSettings {
            info: WorkerInfo::new("w", "here"),
            tools: Tools::locate(None, None).expect("ffmpeg is installed"),
            profiles: Profiles::new(Default::default()).unwrap(),
            heartbeat: Duration::from_millis(200),
            stall_after: Duration::from_secs(30),
            timeout: None,
            poll: Duration::from_millis(100),
            paths: Default::default(),
            max_attempts: 3,
            split_poll: Duration::from_millis(200),
            fail_on_damage: false,
            decode_check: false,
            files: None,
        };
        Worker::new(self.queue.clone(), settings)
    }

    async fn records(&self) -> Vec<JobRecord> {
        self.queue.jobs(&JobFilter::default()).await.unwrap()
    }

    /// Run a worker until every job has ended.
    async fn run_until_ended(&self) {
        let worker = self.worker();
        let drain = CancellationToken::new();
        let running = {
            let drain = drain.clone();
            async move { worker.run(drain, CancellationToken::new()).await }
        };
        let watching = async {
            for _ in 0..300 {
                if self.records().await.iter().all(|r| r.state.is_terminal()) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            drain.cancel();
        };
        let (ran, ()) = tokio::join!(running, watching);
        ran.unwrap();
    }

    fn leftovers(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.path("out"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

fn clip(path: &Path, secs: u32) {
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg("testsrc=size=160x120:rate=25")
        .args(["-t", &secs.to_string(), "-c:v", "mpeg2video", "-f", "mpeg"])
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .expect("ffmpeg is installed (apt-get install ffmpeg)");
    assert!(status.success());
}

#[tokio::test]
async fn an_attempt_encodes_verifies_publishes_and_reports_what_it_did() {
    let bench = Bench::new();
    clip(&bench.path("tape.mpg"), 2);
    bench
        .queue
        .enqueue(bench.spec("tape.mpg", "out/tape.mkv"), false)
        .await
        .unwrap();
    bench.run_until_ended().await;
    let record = &bench.records().await[0];
    assert_eq!(record.state, JobState::Succeeded, "{record:?}");
    let report = record.result.as_ref().unwrap();
    assert!(!report.already_done);
    assert_eq!(report.frames, 50, "{report:?}");
    assert!((report.duration_s - 2.0).abs() < 0.1, "{report:?}");
    assert_eq!(
        report.output_size,
        bench.path("out/tape.mkv").metadata().unwrap().len()
    );
    // Nothing but the output: no temporary file, no lock left behind.
    assert_eq!(bench.leftovers(), vec!["tape.mkv".to_string()]);
    let history = bench.queue.history(&record.id).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].outcome.as_str(), "succeeded");
}

#[tokio::test]
async fn a_verified_output_already_in_place_is_not_encoded_again() {
    let bench = Bench::new();
    clip(&bench.path("tape.mpg"), 1);
    bench
        .queue
        .enqueue(bench.spec("tape.mpg", "out/tape.mkv"), false)
        .await
        .unwrap();
    bench.run_until_ended().await;
    let written = bench
        .path("out/tape.mkv")
        .metadata()
        .unwrap()
        .modified()
        .unwrap();
    // The same work under another job (another producer, or a broker's duplicate).
    let mut again = bench.spec("tape.mpg", "out/tape.mkv");
    again.key = "another producer".into();
    let id = bench
        .queue
        .enqueue(again, false)
        .await
        .unwrap()
        .id()
        .clone();
    bench.run_until_ended().await;
    let records = bench.records().await;
    let record = records.iter().find(|r| r.id == id).unwrap();
    assert_eq!(record.state, JobState::Succeeded);
    assert!(record.result.as_ref().unwrap().already_done, "{record:?}");
    assert_eq!(
        bench
            .path("out/tape.mkv")
            .metadata()
            .unwrap()
            .modified()
            .unwrap(),
        written,
        "the output was not touched"
    );
}

#[tokio::test]
async fn a_lease_voided_mid_encode_publishes_nothing_and_says_why() {
    let bench = Bench::new();
    clip(&bench.path("long.mpg"), 3);
    let mut spec = bench.spec("long.mpg", "out/long.mkv");
    // Slow enough to be cancelled mid-encode.
    spec.profile = "av1".into();
    let id = bench.queue.enqueue(spec, false).await.unwrap().id().clone();
    let worker = bench.worker();
    let mut events = worker.subscribe();
    let drain = CancellationToken::new();
    let running = {
        let drain = drain.clone();
        async move { worker.run(drain, CancellationToken::new()).await }
    };
    let cancelling = async {
        let mut reason = None;
        let mut cancelled = false;
        while let Ok(event) = events.recv().await {
            match event {
                Event::JobProgress { .. } if !cancelled => {
                    cancelled = true;
                    bench.queue.cancel(std::slice::from_ref(&id)).await.unwrap();
                }
                Event::JobLost { reason: why, .. } => {
                    reason = Some(why);
                    break;
                }
                Event::JobSucceeded { .. } => panic!("the cancelled job was published"),
                _ => {}
            }
        }
        drain.cancel();
        reason
    };
    let (ran, reason) = tokio::join!(running, cancelling);
    ran.unwrap();
    assert_eq!(reason.as_deref(), Some("cancelled by the user"));
    assert_eq!(bench.records().await[0].state, JobState::Cancelled);
    assert!(bench.leftovers().is_empty(), "{:?}", bench.leftovers());
}
