//! The API tests' harness: a router on a real SQLite queue in a temporary folder, with media
//! roots holding a few files and links that lead out of them.
#![allow(dead_code)]

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;
use tower::ServiceExt;
use videofarm_core::{JobSpec, Profiles, QueueSettings, WorkerInfo};
use videofarm_queue_sqlite::SqliteQueue;
use videofarm_web::{router, AppState};

pub struct Api {
    pub dir: tempfile::TempDir,
    pub queue: Arc<SqliteQueue>,
    pub state: AppState,
}

pub fn media(api: &Api) -> PathBuf {
    api.dir.path().join("media")
}

pub fn api(token: Option<&str>) -> Api {
    let dir = tempfile::tempdir().unwrap();
    let queue =
        Arc::new(SqliteQueue::open(&dir.path().join("q.db"), QueueSettings::default()).unwrap());
    std::fs::create_dir_all(dir.path().join("media/tapes")).unwrap();
    std::fs::write(dir.path().join("media/tapes/a.mpg"), b"not really a video").unwrap();
    std::fs::write(dir.path().join("media/tapes/notes.txt"), b"x").unwrap();
    std::os::unix::fs::symlink("/etc", dir.path().join("media/escape")).unwrap();
    // A file inside a folder that is really outside the roots.
    std::fs::create_dir_all(dir.path().join("outside")).unwrap();
    std::fs::write(dir.path().join("outside/secret.mpg"), b"secret").unwrap();
    std::os::unix::fs::symlink(
        dir.path().join("outside/secret.mpg"),
        dir.path().join("media/tapes/link.mpg"),
    )
    .unwrap();
    let state = AppState {
        queue: queue.clone(),
        profiles: Profiles::default(),
        default_profile: "archive".into(),
        split: Default::default(),
        roots: vec![dir.path().join("media")],
        token: token.map(str::to_owned),
        tools: None,
        overviews: Default::default(),
    };
    Api { dir, queue, state }
}

pub async fn call(
    api: &Api,
    method: &str,
    uri: &str,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> (StatusCode, Value, String) {
    let mut request = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let body = match body {
        Some(b) => Body::from(b.to_string()),
        None => Body::empty(),
    };
    let response = router(api.state.clone())
        .oneshot(request.body(body).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    )
}

pub const JSON: (&str, &str) = ("content-type", "application/json");

pub fn spec(api: &Api, name: &str) -> JobSpec {
    JobSpec {
        input: media(api).join(format!("tapes/{name}.mpg")),
        output: media(api).join(format!("out/{name}.mkv")),
        profile: "archive".into(),
        key: name.into(),
        overwrite: false,
        priority: 0,
        input_size: 10,
        parent: None,
        split: Default::default(),
        chunk: None,
        require: Vec::new(),
    }
}

/// ffmpeg and ffprobe as `serve` finds them (the file server checks every upload with them).
pub fn tools() -> videofarm_ffmpeg::Tools {
    videofarm_ffmpeg::Tools::locate(None, None)
        .expect("ffmpeg is installed (apt-get install ffmpeg)")
}

fn ffmpeg(args: &[&str]) {
    let status = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(args)
        .status()
        .expect("ffmpeg is installed (apt-get install ffmpeg)");
    assert!(status.success(), "ffmpeg {args:?}");
}

/// A one-second MPEG-2 clip at `path` (25 frames, 64x48).
pub fn clip(path: &std::path::Path) {
    let out = path.to_str().unwrap();
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=64x48:rate=25",
        "-t",
        "1",
        "-c:v",
        "mpeg2video",
        "-f",
        "mpeg",
        out,
    ]);
}

/// `input` encoded as the `archive` profile makes it, at `output`; its bytes.
pub fn archive_encode(input: &std::path::Path, output: &std::path::Path) -> Vec<u8> {
    let profile = Profiles::default().get("archive").unwrap().clone();
    let mut args = vec!["-i", input.to_str().unwrap()];
    args.extend(profile.args.iter().map(String::as_str));
    args.push(output.to_str().unwrap());
    ffmpeg(&args);
    std::fs::read(output).unwrap()
}

/// Queue job `name` (`spec(api, name)`); its id.
pub async fn queued(api: &Api, name: &str) -> videofarm_core::JobId {
    use videofarm_core::Queue;
    api.queue
        .enqueue(spec(api, name), false)
        .await
        .unwrap()
        .id()
        .clone()
}

pub fn worker() -> WorkerInfo {
    WorkerInfo {
        pid: 42,
        ..WorkerInfo::new("w1", "box")
    }
}
