//! The file endpoints for workers that cannot see the media, on a real SQLite queue: the
//! input of a running job (whole, from an offset, its hash), the output in resumable parts
//! for the running attempt only, damaged uploads dropped, nothing outside the roots.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use http_body_util::BodyExt;
use std::time::Duration;
use tower::ServiceExt;
use videofarm_core::{Outcome, Queue, SuccessReport};
use videofarm_web::router;

async fn call_bytes(
    api: &Api,
    method: &str,
    uri: &str,
    body: Vec<u8>,
    range: Option<&str>,
) -> (StatusCode, Vec<u8>) {
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "localhost");
    if let Some(range) = range {
        request = request.header("range", range);
    }
    if method != "GET" {
        // As the worker sends them (a form would be refused).
        request = request.header("content-type", "application/octet-stream");
    }
    let response = router(api.state.clone())
        .oneshot(request.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    let status = response.status();
    (
        status,
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
}

/// Job `a`, queued and taken by a worker: the running attempt 1 that may upload.
async fn running_job(api: &Api) -> videofarm_core::JobId {
    std::fs::write(media(api).join("tapes/a.mpg"), b"input").unwrap();
    let id = queued(api, "a").await;
    api.queue
        .lease(&worker(), Duration::from_secs(1))
        .await
        .unwrap()
        .expect("the job");
    id
}

/// What the server says of a running job's input (its hash, or that its output is there).
async fn input_said(api: &Api, id: &videofarm_core::JobId) -> serde_json::Value {
    call(
        api,
        "GET",
        &format!("/api/files/{id}/input/blake3"),
        None,
        &[],
    )
    .await
    .1
}

/// A worker that cannot see the media gets the input of the job it runs (whole or from an
/// offset) and its hash, and sends the output in parts, resumable; only the running attempt
/// may, and a damaged upload is refused and dropped.
/// The running attempt's input, whole or from an offset, and what the server says of it.
async fn the_input_is_sent_whole_or_from_an_offset(
    api: &Api,
    id: &videofarm_core::JobId,
    input: &[u8],
) {
    let half = input.len() / 2;
    let (status, got) =
        call_bytes(api, "GET", &format!("/api/files/{id}/input"), vec![], None).await;
    assert_eq!((status, got == *input), (StatusCode::OK, true));
    let (status, got) = call_bytes(
        api,
        "GET",
        &format!("/api/files/{id}/input"),
        vec![],
        Some(&format!("bytes={half}-")),
    )
    .await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(got, input[half..]);
    let said = input_said(api, id).await;
    assert_eq!(said["blake3"], blake3::hash(input).to_hex().to_string());
    assert_eq!(said["size"], input.len());
}

/// The upload committed: published as the server measured it, an earlier attempt's staging
/// file removed, the source untouched. The commit's URI.
async fn committed_as_measured(
    api: &Api,
    id: &videofarm_core::JobId,
    output: &[u8],
    input: &[u8],
) -> String {
    // A worker of an earlier attempt died mid-upload: its staging file goes with this commit.
    let earlier = media(api).join(format!("out/.videofarm-upload-{id}-0"));
    std::fs::write(&earlier, b"half").unwrap();
    let uri = format!(
        "/api/files/{id}/output/commit?attempt=1&blake3={}",
        blake3::hash(output).to_hex()
    );
    let (status, body) = call_bytes(api, "POST", &uri, vec![], None).await;
    assert_eq!(status, StatusCode::OK);
    // The answer describes the file published, as the server measured it.
    let committed: videofarm_core::files_api::Committed = serde_json::from_slice(&body).unwrap();
    let file = committed.file.expect("the file as measured");
    assert_eq!(
        (file.frames, file.size, committed.already),
        (25, output.len() as u64, false)
    );
    assert!(
        !earlier.exists(),
        "an earlier attempt's staging file is removed"
    );
    assert_eq!(std::fs::read(media(api).join("out/a.mkv")).unwrap(), output);
    assert!(!media(api)
        .join(format!("out/.videofarm-upload-{id}-1"))
        .exists());
    assert_eq!(
        std::fs::read(media(api).join("tapes/a.mpg")).unwrap(),
        input,
        "the source is untouched"
    );
    uri
}

#[tokio::test]
async fn files_move_for_the_running_attempt_only() {
    let mut api = api(None);
    api.state.tools = Some(tools());
    clip(&media(&api).join("tapes/a.mpg"));
    let input = std::fs::read(media(&api).join("tapes/a.mpg")).unwrap();
    let id = queued(&api, "a").await;
    let (status, _) =
        call_bytes(&api, "GET", &format!("/api/files/{id}/input"), vec![], None).await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "not running yet (or the records lag): try again"
    );
    let lease = api
        .queue
        .lease(&worker(), Duration::from_secs(1))
        .await
        .unwrap()
        .unwrap();

    the_input_is_sent_whole_or_from_an_offset(&api, &id, &input).await;

    let output = archive_encode(
        &media(&api).join("tapes/a.mpg"),
        &api.dir.path().join("encoded.mkv"),
    );
    let part = output.len() / 2;
    let put = |offset: usize, part: &[u8], attempt: u32| {
        let part = part.to_vec();
        let uri = format!("/api/files/{id}/output?attempt={attempt}&offset={offset}");
        let api = &api;
        async move { call_bytes(api, "PUT", &uri, part, None).await.0 }
    };
    assert_eq!(put(0, &output[..part], 1).await, StatusCode::OK);
    // A part sent again from the start (a retry that did not know) is refused with the size.
    assert_eq!(put(0, &output[..10], 1).await, StatusCode::CONFLICT);
    let (_, said, _) = call(
        &api,
        "GET",
        &format!("/api/files/{id}/output?attempt=1"),
        None,
        &[],
    )
    .await;
    assert_eq!(said["size"], part, "resume from here");
    assert_eq!(put(part, &output[part..], 1).await, StatusCode::OK);
    // An earlier attempt than the running one is a stale worker; a later one means the
    // records have not caught up with the queue yet: try again.
    assert_eq!(put(0, &output, 0).await, StatusCode::CONFLICT);
    assert_eq!(put(0, &output, 2).await, StatusCode::SERVICE_UNAVAILABLE);

    let commit = |hash: String| {
        let uri = format!("/api/files/{id}/output/commit?attempt=1&blake3={hash}");
        let api = &api;
        async move { call_bytes(api, "POST", &uri, vec![], None).await.0 }
    };
    let staging = media(&api).join(format!("out/.videofarm-upload-{id}-1"));
    assert!(staging.is_file());
    assert_eq!(
        commit("0".repeat(64)).await,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert!(!staging.exists(), "a damaged upload is dropped");
    assert!(!media(&api).join("out/a.mkv").exists());
    // Whole and as sent, but no encode of this input: refused, nothing published.
    let forged: Vec<u8> = input.iter().rev().copied().collect();
    assert_eq!(put(0, &forged, 1).await, StatusCode::OK);
    assert_eq!(
        commit(blake3::hash(&forged).to_hex().to_string()).await,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert!(!staging.exists() && !media(&api).join("out/a.mkv").exists());
    assert_eq!(put(0, &output, 1).await, StatusCode::OK);
    let uri = committed_as_measured(&api, &id, &output, &input).await;
    // The output in place: a worker asking for the input hears there is nothing to fetch, and
    // an upload published again (an attempt that published and could not say so) is done,
    // the file in place not replaced.
    let said = input_said(&api, &id).await;
    assert_eq!(said["output"], "", "{said}");
    assert!(said.get("blake3").is_none(), "{said}");
    assert_eq!(put(0, &output, 1).await, StatusCode::OK);
    let (status, body) = call_bytes(&api, "POST", &uri, vec![], None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&body).contains("\"already\":true"));
    assert_eq!(
        std::fs::read(media(&api).join("out/a.mkv")).unwrap(),
        output
    );
    assert!(!staging.exists());

    // Once the job is over, its attempt is stale.
    api.queue
        .finish(&lease, Outcome::Succeeded(SuccessReport::default()))
        .await
        .unwrap();
    assert_eq!(put(0, &output, 1).await, StatusCode::CONFLICT);
}

/// Nothing outside the roots is served or written, whatever the job says; without roots,
/// nothing at all.
#[tokio::test]
async fn files_outside_the_roots_are_never_served() {
    let api = api(None);
    let mut linked = spec(&api, "link");
    linked.input = media(&api).join("tapes/link.mpg");
    let id = api.queue.enqueue(linked, false).await.unwrap().id().clone();
    api.queue
        .lease(&worker(), Duration::from_secs(1))
        .await
        .unwrap()
        .unwrap();
    let (status, body) =
        call_bytes(&api, "GET", &format!("/api/files/{id}/input"), vec![], None).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert!(!String::from_utf8_lossy(&body).contains("secret"));

    let mut outside = spec(&api, "b");
    std::fs::write(&outside.input, b"x").unwrap();
    outside.output = api.dir.path().join("outside/b.mkv");
    let id = api
        .queue
        .enqueue(outside, false)
        .await
        .unwrap()
        .id()
        .clone();
    let lease = api
        .queue
        .lease(&worker(), Duration::from_secs(1))
        .await
        .unwrap()
        .unwrap();
    let uri = format!("/api/files/{id}/output?attempt={}&offset=0", lease.attempt);
    let (status, _) = call_bytes(&api, "PUT", &uri, b"x".to_vec(), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(!api
        .dir
        .path()
        .join(format!("outside/.videofarm-upload-{id}-1"))
        .exists());

    let mut bare = self::api(None);
    bare.state.roots.clear();
    let (status, _) = call_bytes(
        &bare,
        "GET",
        &format!("/api/files/{id}/input"),
        vec![],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

/// A chunk of a split tape whose worker cannot see the media tells its tape, through the
/// server, why it failed or what damage it saw: into the tape's work folder, for its running
/// attempt only, bounded. A tape already planned says so to whoever fetches its input.
#[tokio::test]
async fn a_chunk_tells_its_tape_through_the_server() {
    use videofarm_core::split::{work_dir, Chunk};
    let api = api(None);
    let tape = spec(&api, "a");
    let work = work_dir(&tape.output);
    std::fs::create_dir_all(&work).unwrap();
    let mut parent = tape.clone();
    parent.split = videofarm_core::Split::Every(2.0);
    let parent_id = api.queue.enqueue(parent, false).await.unwrap().id().clone();
    let mut chunk = tape.clone();
    chunk.key = "a-chunk-2".into();
    chunk.output = work.join("chunk-00002.nut");
    chunk.parent = Some(parent_id.clone());
    chunk.chunk = Some(Chunk {
        index: 2,
        count: 4,
        first: 100,
        end: 150,
        seek_s: Some(3.9),
        window: (3.95, Some(6.1)),
        keep: (4.0, Some(6.0)),
        treat: None,
    });
    let id = api.queue.enqueue(chunk, false).await.unwrap().id().clone();
    let mut leases = Vec::new();
    for _ in 0..2 {
        leases.push(
            api.queue
                .lease(&worker(), Duration::from_secs(1))
                .await
                .unwrap()
                .unwrap(),
        );
    }
    let mark = |job: &str, attempt: u32, kind: &str, text: &[u8]| {
        let uri = format!("/api/files/{job}/mark?attempt={attempt}&kind={kind}");
        let (api, text) = (&api, text.to_vec());
        async move { call_bytes(api, "PUT", &uri, text, None).await.0 }
    };
    assert_eq!(mark(&id.0, 1, "failed", b"why").await, StatusCode::OK);
    assert_eq!(
        std::fs::read_to_string(work.join("chunk-00002.failed")).unwrap(),
        "why"
    );
    assert_eq!(mark(&id.0, 1, "warnings", b"damage").await, StatusCode::OK);
    assert_eq!(
        std::fs::read_to_string(work.join("chunk-00002.warnings")).unwrap(),
        "damage"
    );
    // A stale attempt, another kind, a job that is no chunk, too much text: refused.
    assert_eq!(
        mark(&id.0, 0, "failed", b"late").await,
        StatusCode::CONFLICT
    );
    assert_eq!(
        mark(&id.0, 1, "../../x", b"x").await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        mark(&parent_id.0, 1, "failed", b"x").await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        mark(&id.0, 1, "failed", &vec![b'x'; 70_000]).await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        std::fs::read_to_string(work.join("chunk-00002.failed")).unwrap(),
        "why"
    );

    // The tape: not planned, then planned.
    let planned = || async { input_said(&api, &parent_id).await["planned"].clone() };
    assert_eq!(planned().await, false);
    std::fs::write(work.join("plan.json"), b"{}").unwrap();
    assert_eq!(planned().await, true);
}

/// An upload staged for a job that is then cancelled is removed by the server's sweep (before,
/// it stayed in the output folder for good); the job's attempt can no longer add to it.
#[tokio::test]
async fn an_upload_staged_for_a_cancelled_job_is_removed() {
    let api = api(None);
    let id = running_job(&api).await;
    let uri = format!("/api/files/{id}/output?attempt=1&offset=0");
    let (status, _) = call_bytes(&api, "PUT", &uri, vec![7; 20_000], None).await;
    assert_eq!(status, StatusCode::OK);
    let staging = media(&api).join(format!("out/.videofarm-upload-{id}-1"));
    assert!(staging.is_file());
    // Another job's upload stays.
    let other = media(&api).join("out/.videofarm-upload-other-1");
    std::fs::write(&other, b"not this one").unwrap();
    videofarm_core::Control::cancel(api.queue.as_ref(), std::slice::from_ref(&id))
        .await
        .unwrap();
    let (status, _) = call_bytes(&api, "PUT", &uri, vec![7; 10], None).await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "a cancelled job takes no upload"
    );
    let mut sweep = videofarm_core::sweep::CancelledSweep::default();
    let now = videofarm_core::Clock::now_ms(&videofarm_core::SystemClock);
    videofarm_web::sweep::sweep_staged_uploads(&api.state, &mut sweep, now).await;
    assert!(!staging.exists(), "the cancelled job's upload is gone");
    assert!(other.is_file());
}

/// Every changing request of the file server refuses the shapes a page on another site can
/// send without asking (a form, plain text, nothing said): before, the commit took a form.
#[tokio::test]
async fn the_file_server_takes_no_form() {
    let api = api(None);
    let id = running_job(&api).await;
    for (method, uri) in [
        (
            "POST",
            format!(
                "/api/files/{id}/output/commit?attempt=1&blake3={}",
                "0".repeat(64)
            ),
        ),
        ("PUT", format!("/api/files/{id}/output?attempt=1&offset=0")),
        ("PUT", format!("/api/files/{id}/mark?attempt=1&kind=failed")),
    ] {
        for kind in [
            Some("application/x-www-form-urlencoded"),
            Some("multipart/form-data; boundary=x"),
            Some("text/plain"),
            None,
        ] {
            let mut request = Request::builder()
                .method(method)
                .uri(&uri)
                .header("host", "localhost");
            if let Some(kind) = kind {
                request = request.header("content-type", kind);
            }
            let response = router(api.state.clone())
                .oneshot(request.body(Body::from("blake3=x")).unwrap())
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "{method} {uri} as {kind:?}"
            );
        }
    }
}

/// An upload is bounded by what an encode of the job's input can be: beyond it the server
/// answers 413 and drops what was staged (before, any size was staged: 300 MB for an 11 MB
/// input).
#[tokio::test]
async fn an_upload_larger_than_the_job_can_produce_is_refused() {
    let api = api(None);
    let id = running_job(&api).await;
    let cap = videofarm_web::files::upload_cap(spec(&api, "a").input_size) as usize;
    let uri = format!("/api/files/{id}/output?attempt=1&offset=0");
    let (status, body) = call_bytes(&api, "PUT", &uri, vec![1; cap + 1], None).await;
    assert_eq!(
        status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        String::from_utf8_lossy(&body)
    );
    let staging = media(&api).join(format!("out/.videofarm-upload-{id}-1"));
    assert!(!staging.exists(), "what was staged goes");
    let (status, _) = call_bytes(&api, "PUT", &uri, vec![1; 1000], None).await;
    assert_eq!(status, StatusCode::OK, "a reasonable upload is taken");
}

/// A link planted under the name of a staging file (to a file outside the roots): the upload
/// is refused with the reason, never written through.
#[tokio::test]
async fn a_link_planted_as_the_staging_file_is_never_written_through() {
    let api = api(None);
    let id = running_job(&api).await;
    let victim = api.dir.path().join("outside/secret.mpg");
    std::fs::create_dir_all(media(&api).join("out")).unwrap();
    let staging = media(&api).join(format!("out/.videofarm-upload-{id}-1"));
    std::os::unix::fs::symlink(&victim, &staging).unwrap();
    let uri = format!("/api/files/{id}/output?attempt=1&offset=0");
    let (status, body) = call_bytes(&api, "PUT", &uri, b"evil".to_vec(), None).await;
    let said = String::from_utf8_lossy(&body);
    assert_eq!(status, StatusCode::CONFLICT, "{said}");
    assert!(said.contains("symbolic link"), "{said}");
    assert_eq!(std::fs::read(&victim).unwrap(), b"secret");
    let uri = format!(
        "/api/files/{id}/output/commit?attempt=1&blake3={}",
        blake3::hash(b"secret").to_hex()
    );
    let (status, _) = call_bytes(&api, "POST", &uri, vec![], None).await;
    assert_eq!(status, StatusCode::CONFLICT, "nothing staged to publish");
    assert!(!media(&api).join("out/a.mkv").exists());
    assert_eq!(std::fs::read(&victim).unwrap(), b"secret");
}

/// A server without ffmpeg cannot check an upload, so it publishes none (before, the hash was
/// the only check there).
#[tokio::test]
async fn without_ffmpeg_the_server_publishes_nothing() {
    let api = api(None);
    assert!(api.state.tools.is_none());
    let id = running_job(&api).await;
    let uri = format!("/api/files/{id}/output?attempt=1&offset=0");
    assert_eq!(
        call_bytes(&api, "PUT", &uri, b"an encode".to_vec(), None)
            .await
            .0,
        StatusCode::OK
    );
    let uri = format!(
        "/api/files/{id}/output/commit?attempt=1&blake3={}",
        blake3::hash(b"an encode").to_hex()
    );
    let (status, body) = call_bytes(&api, "POST", &uri, vec![], None).await;
    let said = String::from_utf8_lossy(&body);
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{said}");
    assert!(said.contains("cannot check an upload"), "{said}");
    assert!(!media(&api).join("out/a.mkv").exists());
}
