//! Test harness: a private farm (temporary folders, its own SQLite queue file and config) and
//! tiny clips made by the real ffmpeg from lavfi sources.

#![allow(dead_code)]

pub mod faults;
pub mod files;
mod relay;
pub mod split;

#[allow(unused_imports)] // not every test binary uses it
pub use relay::Relay;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_videofarm");

/// Settings that make leases, retries and heartbeats quick enough for tests, and a `slow`
/// profile whose `realtime` filter makes an encode last as long as its clip, so a test can act
/// while it is running.
pub const TEST_CONFIG: &str = r#"
lease_secs = 2.0
heartbeat_secs = 0.3
retry_backoff_secs = 0.2
max_attempts = 2
stall_secs = 30
workers = 2

[profiles.slow]
extension = "mkv"
args = ["-map", "0", "-c", "copy", "-c:v", "libx264", "-preset", "ultrafast", "-vf", "realtime"]
video_codec = "h264"
"#;

/// A split profile whose chunks encode in real time, so a test can act while they run.
pub const SLOW_SPLIT: &str = r#"
[profiles.slowsplit]
extension = "mkv"
args = ["-map", "0:v:0", "-map", "0:a?", "-vf", "realtime", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "copy"]
video_codec = "h264"
[profiles.slowsplit.split]
filter = "realtime"
video = ["-c:v", "libx264", "-preset", "ultrafast"]
streams = ["-map", "1:a?", "-c:a", "copy"]
"#;

/// The chunks a worker's log says it encoded (not found already done).
pub fn encoded_chunks(log: &str) -> Vec<String> {
    let mut chunks: Vec<String> = log
        .lines()
        .filter(|l| l.contains("job succeeded") && l.contains("already_done=false"))
        .filter_map(|l| {
            let at = l.find("chunk-")?;
            Some(l[at..at + "chunk-00000.nut".len()].to_owned())
        })
        .collect();
    chunks.sort();
    chunks
}

pub struct Farm {
    /// `--broker` for every command; None when the config file names the broker.
    pub broker: Option<std::ffi::OsString>,
    /// The RabbitMQ prefix of this farm, whose queues and exchanges are deleted on drop.
    pub amqp_prefix: Option<String>,
    pub dir: tempfile::TempDir,
    pub db: PathBuf,
    pub config: PathBuf,
    pub input: PathBuf,
    pub out: PathBuf,
}

impl Farm {
    pub fn new() -> Farm {
        Farm::with_config("")
    }

    /// A farm whose config is [`TEST_CONFIG`] with `extra` lines placed before it (top-level
    /// keys must come before the profile tables in TOML).
    pub fn with_config(extra: &str) -> Farm {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().to_owned();
        let config = root.join("videofarm.toml");
        std::fs::write(&config, format!("{extra}\n{TEST_CONFIG}")).unwrap();
        let input = root.join("in");
        let out = root.join("out");
        std::fs::create_dir_all(&input).unwrap();
        let db = root.join("queue.db");
        let mut broker = std::ffi::OsString::from("sqlite:");
        broker.push(&db);
        Farm {
            broker: Some(broker),
            amqp_prefix: None,
            db,
            config,
            input,
            out,
            dir,
        }
    }

    /// A farm on the real RabbitMQ (127.0.0.1:5672 or `VIDEOFARM_TEST_AMQP`), with queue and
    /// exchange names of its own; `extra` config lines go before the test config.
    pub fn amqp(extra: &str) -> Farm {
        Farm::amqp_at(&amqp_url(), extra)
    }

    /// Like [`Farm::amqp`], with the broker at `url` (a [`Relay`] to it, for outages).
    pub fn amqp_at(url: &str, extra: &str) -> Farm {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let prefix = format!(
            "vftest-cli-{}-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::SeqCst),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
        );
        let config = format!(
            "broker = {url:?}\namqp_prefix = {prefix:?}\namqp_queue_expires_secs = 600\n{extra}"
        );
        let mut farm = Farm::with_config(&config);
        // This farm's copy of the records, in its own folder (the default is per user).
        let text = std::fs::read_to_string(&farm.config).unwrap();
        let records = farm.root().join("records.db");
        std::fs::write(&farm.config, format!("records_file = {records:?}\n{text}")).unwrap();
        farm.broker = None;
        farm.amqp_prefix = Some(prefix);
        farm
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// `videofarm [--broker sqlite:<db>] --config <config> ARGS`, with no VIDEOFARM_* leaking in.
    pub fn cmd<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = without_our_env(Command::new(BIN));
        if let Some(broker) = &self.broker {
            cmd.arg("--broker").arg(broker);
        }
        cmd.arg("--config").arg(&self.config);
        cmd.args(args);
        cmd.stdin(Stdio::null());
        cmd
    }

    pub fn run<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.cmd(args).output().expect("videofarm runs")
    }

    /// `jobs --json`.
    pub fn jobs(&self) -> Vec<Value> {
        let out = self.run(["jobs", "--json"]);
        assert!(out.status.success(), "jobs --json: {}", text(&out.stderr));
        serde_json::from_slice::<Vec<Value>>(&out.stdout).expect("jobs --json is a JSON list")
    }

    pub fn job(&self, id: &str) -> Value {
        self.jobs()
            .into_iter()
            .find(|j| j["id"] == id)
            .unwrap_or_else(|| panic!("job {id} is listed"))
    }

    /// `status --json`.
    pub fn status(&self) -> Value {
        let out = self.run(["status", "--json"]);
        assert!(out.status.success(), "status --json: {}", text(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("status --json is JSON")
    }

    /// `inspect --json`.
    pub fn inspect(&self) -> Vec<Value> {
        let out = self.run(["inspect", "--json"]);
        assert!(
            out.status.success(),
            "inspect --json: {}",
            text(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("inspect --json is JSON")
    }

    /// Start `videofarm worker --name NAME`, its log in `<root>/NAME.log`.
    pub fn spawn_worker(&self, name: &str, concurrency: u32) -> Child {
        let log = std::fs::File::create(self.log_path(name)).unwrap();
        self.cmd([
            "worker",
            "--name",
            name,
            "--concurrency",
            &concurrency.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("worker starts")
    }

    pub fn log_path(&self, name: &str) -> PathBuf {
        self.root().join(format!("{name}.log"))
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.log_path(name)).unwrap_or_default()
    }

    /// Queue `paths` with `profile` and return the new job ids.
    pub fn enqueue(&self, paths: &[&Path], profile: &str) -> Vec<String> {
        let mut cmd = self.cmd(["enqueue", "--profile", profile, "--out"]);
        cmd.arg(&self.out).args(paths);
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "enqueue failed: {}",
            text(&out.stderr)
        );
        text(&out.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix("queued "))
            .map(|l| l.split(':').next().unwrap().to_owned())
            .collect()
    }

    /// Files left anywhere under the output folder, as paths relative to it.
    pub fn outputs(&self) -> Vec<PathBuf> {
        let mut found = Vec::new();
        collect(&self.out, &self.out, &mut found);
        found.sort();
        found
    }
}

/// `cmd` with no VIDEOFARM_* variable of the test's environment (a broker, a log filter).
pub fn without_our_env(mut cmd: Command) -> Command {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("VIDEOFARM_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

pub fn amqp_url() -> String {
    std::env::var("VIDEOFARM_TEST_AMQP")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

impl Drop for Farm {
    fn drop(&mut self) {
        if let Some(prefix) = &self.amqp_prefix {
            videofarm_queue_amqp::delete_farm_blocking(&amqp_url(), prefix);
        }
    }
}

fn collect(root: &Path, dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(root, &path, found);
        } else {
            found.push(path.strip_prefix(root).unwrap().to_owned());
        }
    }
}

/// Every output renamed into place exactly once. A worker killed between its rename and its
/// log line leaves no line; then the job's next worker must have found the output in place and
/// finished without encoding or renaming again.
pub fn each_output_renamed_once(outputs: &[PathBuf], logs: &[String]) {
    let mut renames: std::collections::HashMap<String, usize> = Default::default();
    let mut found_done: Vec<String> = Vec::new();
    for line in logs.iter().flat_map(|l| l.lines()) {
        if let Some((_, rest)) = line.split_once(" published output=") {
            let output = rest.split_whitespace().next().unwrap_or_default();
            *renames.entry(output.to_owned()).or_default() += 1;
        }
        if let Some((_, rest)) = line.split_once(" job succeeded output=") {
            if rest.contains("already_done=true") {
                found_done.push(
                    rest.split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned(),
                );
            }
        }
    }
    assert!(
        renames.values().all(|n| *n == 1),
        "an output was written twice: {renames:?}"
    );
    for output in outputs {
        let output = output.to_string_lossy();
        assert!(
            renames.contains_key(output.as_ref())
                || found_done.iter().any(|o| o == output.as_ref()),
            "{output}: neither a rename nor a later worker finding it done was logged: {renames:?}"
        );
    }
}

/// Each of `outputs` is whole (h264, `secs` long) and nothing partial or temporary is left
/// beside them in `out`.
pub fn outputs_in_place(out: &Path, outputs: &[PathBuf], secs: f64) {
    let leftovers: Vec<String> = std::fs::read_dir(out)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.') || !n.ends_with(".mkv"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    for output in outputs {
        let (streams, duration) = probe(output);
        assert_eq!(streams[0].1, "h264");
        assert!(
            (duration - secs).abs() < 0.3,
            "{}: {duration}",
            output.display()
        );
    }
}

/// `rabbitmqctl ARGS`, which must succeed.
pub fn rabbitmqctl(args: &[&str]) {
    let out = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl is installed with RabbitMQ");
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?}: {}",
        text(&out.stderr)
    );
}

/// A small file system mounted for as long as this lives (unmounted even when the test fails).
pub struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A tmpfs of `size` mounted at `at` (as root, as CI runs): a disk to fill.
pub fn mount_tiny_fs(at: &Path, size: &str) -> Mount {
    std::fs::create_dir_all(at).unwrap();
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(at)
        .output()
        .expect("mount runs");
    assert!(
        out.status.success(),
        "this test needs root to mount a small tmpfs (CI runs as root): {}",
        text(&out.stderr)
    );
    Mount(at.to_owned())
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Poll `check` until it holds or `timeout` passes; panics with `what` on timeout.
pub fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Make `out` with ffmpeg and `args` (lavfi sources and the like).
pub fn ffmpeg(args: &[&str], out: &Path) {
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y"])
        .args(args)
        .arg(out)
        .stdin(Stdio::null())
        .status()
        .expect("ffmpeg is installed (apt-get install ffmpeg)");
    assert!(status.success(), "ffmpeg could not make {}", out.display());
}

/// A tape-like clip: MPEG-2 video and MP2 stereo audio in MPEG-PS, `secs` long, 160x120.
pub fn clip(path: &Path, secs: u32) {
    clip_muxed(path, secs, "mpeg");
}

/// [`clip`] through ffmpeg's muxer `muxer` (`dvd`: a DVD recorder's MPEG-PS, with its
/// navigation packets).
pub fn clip_muxed(path: &Path, secs: u32, muxer: &str) {
    let t = secs.to_string();
    ffmpeg(
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=160x120:rate=25",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-t",
            &t,
            "-c:v",
            "mpeg2video",
            "-c:a",
            "mp2",
            "-ac",
            "2",
            "-f",
            muxer,
        ],
        path,
    );
}

/// A truncated capture: a 3 s Matroska cut in half, whose header still says 3 s, so every
/// encode of it fails verification. Also returns the whole file, to "repair" it with.
pub fn truncated_clip(path: &Path, dir: &Path) -> PathBuf {
    let whole = dir.join("whole.mkv");
    ffmpeg(
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=160x120:rate=25",
            "-t",
            "3",
            "-c:v",
            "mpeg2video",
        ],
        &whole,
    );
    let bytes = std::fs::read(&whole).unwrap();
    std::fs::write(path, &bytes[..bytes.len() / 2]).unwrap();
    whole
}

/// A clip of noise, which does not compress: large outputs from a short input.
pub fn noise_clip(path: &Path, secs: u32) {
    let t = secs.to_string();
    ffmpeg(
        &[
            "-f",
            "lavfi",
            "-i",
            "nullsrc=size=320x240:rate=25,geq=random(1)*255:128:128",
            "-t",
            &t,
            "-c:v",
            "mpeg2video",
            "-q:v",
            "2",
            "-f",
            "mpeg",
        ],
        path,
    );
}

/// Matroska with one video, two audio streams and one subtitle stream.
pub fn multi_stream_clip(path: &Path, dir: &Path) {
    let srt = dir.join("subs.srt");
    std::fs::write(
        &srt,
        "1\n00:00:00,000 --> 00:00:01,500\nHello\n\n2\n00:00:01,500 --> 00:00:02,000\nTape\n",
    )
    .unwrap();
    let srt = srt.to_str().unwrap();
    ffmpeg(
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=160x120:rate=25",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=880",
            "-i",
            srt,
            "-t",
            "2",
            "-map",
            "0:v",
            "-map",
            "1:a",
            "-map",
            "2:a",
            "-map",
            "3:s",
            "-c:v",
            "mpeg2video",
            "-c:a",
            "mp2",
            "-c:s",
            "srt",
        ],
        path,
    );
}

/// `(codec_type, codec_name)` of every stream, and the duration, by ffprobe.
pub fn probe(path: &Path) -> (Vec<(String, String)>, f64) {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-print_format",
            "json",
            "-show_streams",
            "-show_format",
        ])
        .arg(path)
        .output()
        .expect("ffprobe runs");
    assert!(
        out.status.success(),
        "ffprobe {}: {}",
        path.display(),
        text(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let streams = v["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["codec_type"].as_str().unwrap().to_owned(),
                s["codec_name"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let duration = v["format"]["duration"]
        .as_str()
        .unwrap_or("0")
        .parse()
        .unwrap();
    (streams, duration)
}

/// Pids of the running children of `pid` whose command is `name`.
pub fn children_named(pid: u32, name: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let Some((comm_part, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let comm = comm_part.split_once('(').map(|(_, c)| c).unwrap_or("");
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if comm == name
            && fields.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(pid)
            && fields[0] != "Z"
        {
            found.push(child);
        }
    }
    found
}

pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            stat.rsplit_once(')')
                .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
                .unwrap_or(false)
        })
        .unwrap_or(false)
}

pub fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{sig} {pid}");
}

/// Stop a child process for good at the end of a test.
pub fn reap(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// The result lines of `run --json` (one per job, after the event lines): every line must be
/// JSON; the events are checked to be there.
pub fn run_results(stdout: &[u8]) -> Result<Vec<Value>, serde_json::Error> {
    let mut results = Vec::new();
    for line in stdout.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let value: Value = serde_json::from_slice(line)?;
        if value["type"] == "result" {
            results.push(value);
        }
    }
    Ok(results)
}

/// `run --json` of one tape with `profile` and `--split split` (two workers, logging what they
/// do), into a folder of its own; the job's record and its output. Asserts the run succeeded
/// and that the tape was split exactly when asked.
pub fn run_one(farm: &Farm, tape: &Path, profile: &str, split: &str) -> (Value, PathBuf) {
    let out = farm.root().join(format!("out-{profile}-{split}"));
    let (records, log) = run_batch(farm, tape, &out, profile, split);
    assert_eq!(
        log.contains("split into chunks"),
        split != "off",
        "split only when asked: {log}"
    );
    let name = tape.with_extension("mkv");
    let job = records.into_iter().next().expect("one job");
    (job, out.join(name.file_name().unwrap()))
}

/// `run -v --json` of `input` into `out` with two encoders, which must succeed: its result
/// records and its log.
pub fn run_batch(
    farm: &Farm,
    input: &Path,
    out: &Path,
    profile: &str,
    split: &str,
) -> (Vec<Value>, String) {
    let output = farm
        .cmd([
            "-v",
            "run",
            "--json",
            "--workers",
            "2",
            "--profile",
            profile,
            "--split",
            split,
            "--out",
        ])
        .arg(out)
        .arg(input)
        .output()
        .unwrap();
    let records = run_results(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "run --json ({e}): {}\n{}",
            text(&output.stdout),
            text(&output.stderr)
        )
    });
    let log = text(&output.stderr);
    assert!(output.status.success(), "{records:#?}\n{log}");
    (records, log)
}
