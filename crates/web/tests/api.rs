//! Every endpoint of the JSON API, on a real SQLite queue: shapes, the token, JSON-only
//! changes, and paths outside the media roots.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use std::time::Duration;
use tower::ServiceExt;
use videofarm_core::watching::WatchReport;
use videofarm_core::{Failure, Outcome, Queue, Records, SuccessReport};
use videofarm_web::router;

mod common;

use common::*;

/// Three jobs: one done (with a warning), one failed for good, one running.
async fn one_done_one_failed_one_running(api: &Api) {
    let q = api.queue.as_ref();
    q.register_worker(&worker()).await.unwrap();
    q.enqueue(spec(api, "done"), false).await.unwrap();
    q.enqueue(spec(api, "bad"), false).await.unwrap();
    q.enqueue(spec(api, "busy"), false).await.unwrap();
    let l1 = q.lease(&worker(), Duration::ZERO).await.unwrap().unwrap();
    q.finish(
        &l1,
        Outcome::Succeeded(SuccessReport {
            input_size: 1000,
            output_size: 400,
            duration_s: 60.0,
            elapsed_s: 20.0,
            already_done: false,
            warnings: vec!["ffmpeg reported 3 errors while reading the input".into()],
            ..Default::default()
        }),
    )
    .await
    .unwrap();
    let l2 = q.lease(&worker(), Duration::ZERO).await.unwrap().unwrap();
    q.finish(
        &l2,
        Outcome::Failed(Failure::permanent(
            "/m/bad.mpg: the file is empty (0 bytes)",
        )),
    )
    .await
    .unwrap();
    let _busy = q.lease(&worker(), Duration::ZERO).await.unwrap().unwrap();
}

/// `/metrics` counts them.
async fn metrics_count_what_happened(api: &Api) {
    let (status, _, metrics) = call(api, "GET", "/metrics", None, &[]).await;
    assert_eq!(status, StatusCode::OK);
    for line in [
        "videofarm_jobs{state=\"failed\"} 1",
        "videofarm_workers 1",
        "videofarm_encode_seconds_bucket{profile=\"archive\",le=\"30\"} 1",
        "videofarm_encode_speed_bucket{profile=\"archive\",le=\"4\"} 1",
        "videofarm_encode_speed_sum{profile=\"archive\"} 3",
        "videofarm_input_bytes_total{profile=\"archive\"} 1000",
        "videofarm_output_bytes_total{profile=\"archive\"} 400",
        "videofarm_failed_jobs{reason=\"empty\"} 1",
        "videofarm_damaged_inputs{profile=\"archive\"} 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
}

#[tokio::test]
async fn read_endpoints_have_the_cli_shapes() {
    let api = api(None);
    one_done_one_failed_one_running(&api).await;

    let (status, body, _) = call(&api, "GET", "/api/status", None, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"queued": 0, "retrying": 0, "running": 1, "succeeded": 1, "failed": 1, "cancelled": 0, "workers": 1, "watch_problems": []})
    );
    // A watch's problems, as `status` shows them; its list when all is well again shows none.
    let drop_dir = std::path::PathBuf::from("/m/drop");
    let problem = "/m/drop/lost.mpg: cannot be read (No such file or directory (os error 2))";
    let report =
        |problems: Vec<String>, at| WatchReport::new("nas", drop_dir.clone(), problems, at);
    let q = api.queue.as_ref();
    q.report_watch(&report(vec![problem.into()], 1))
        .await
        .unwrap();
    let (_, body, _) = call(&api, "GET", "/api/status", None, &[]).await;
    assert_eq!(body["watch_problems"][0]["problems"], json!([problem]));
    assert_eq!(body["watch_problems"][0]["host"], "nas");
    q.report_watch(&report(vec![], 2)).await.unwrap();
    let (_, body, _) = call(&api, "GET", "/api/status", None, &[]).await;
    assert_eq!(body["watch_problems"], json!([]));

    let (_, workers, _) = call(&api, "GET", "/api/workers", None, &[]).await;
    assert_eq!(workers[0]["name"], "w1");
    assert_eq!(workers[0]["active"][0]["id"], "3");
    for key in [
        "progress", "fps", "speed", "eta_s", "input", "output", "profile",
    ] {
        assert!(workers[0]["active"][0].get(key).is_some(), "{key}");
    }

    let (_, jobs, _) = call(&api, "GET", "/api/jobs", None, &[]).await;
    assert_eq!(jobs.as_array().unwrap().len(), 3);
    let (_, failed, _) = call(&api, "GET", "/api/jobs?state=failed", None, &[]).await;
    assert_eq!(
        failed[0]["error"],
        "/m/bad.mpg: the file is empty (0 bytes)"
    );
    let (status, _, _) = call(&api, "GET", "/api/jobs?state=nonsense", None, &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // A page at a time.
    let (_, page, _) = call(&api, "GET", "/api/jobs?limit=1&offset=1", None, &[]).await;
    assert_eq!(page.as_array().unwrap().len(), 1);
    assert_eq!(page[0]["id"], jobs[1]["id"]);
    let (status, _, _) = call(&api, "GET", "/api/jobs?order=sideways", None, &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // The chart's data: what finished in the last hours, in 36 stretches.
    let (_, timeline, _) = call(&api, "GET", "/api/timeline?hours=1", None, &[]).await;
    let stretches = timeline.as_array().unwrap();
    assert_eq!(stretches.len(), 36);
    let sum = |key: &str| {
        stretches
            .iter()
            .map(|b| b[key].as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!((sum("succeeded"), sum("failed"), sum("bytes")), (1, 1, 400));
    assert_eq!(stretches[35]["waiting"], 1, "the running job");

    let (status, one, _) = call(&api, "GET", "/api/jobs/1", None, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["job"]["state"], "succeeded");
    assert_eq!(one["history"][0]["outcome"], "succeeded");
    assert_eq!(
        call(&api, "GET", "/api/jobs/999", None, &[]).await.0,
        StatusCode::NOT_FOUND
    );

    let (_, profiles, _) = call(&api, "GET", "/api/profiles", None, &[]).await;
    assert_eq!(profiles["default"], "archive");
    assert!(profiles["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "av1"));

    metrics_count_what_happened(&api).await;

    let (status, _, html) = call(&api, "GET", "/", None, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains("/assets/app.js") && !html.contains("http://") && !html.contains("https://"),
        "nothing fetched from elsewhere"
    );
    let (_, openapi, _) = call(&api, "GET", "/api/openapi.json", None, &[]).await;
    assert_eq!(openapi["openapi"], "3.0.3");
    let (status, _, _) = call(&api, "GET", "/job/1", None, &[]).await;
    assert_eq!(status, StatusCode::OK);
}

/// With a token (a server off loopback), reading needs it too.
async fn reading_needs_the_token(api: &Api, auth: (&str, &str), wrong: (&str, &str)) {
    for path in ["/api/jobs", "/api/status", "/api/browse", "/metrics"] {
        assert_eq!(
            call(api, "GET", path, None, &[]).await.0,
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
        assert_eq!(
            call(api, "GET", path, None, &[wrong]).await.0,
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
        assert_eq!(
            call(api, "GET", path, None, &[auth]).await.0,
            StatusCode::OK,
            "{path}"
        );
    }
}

#[tokio::test]
async fn changes_need_json_and_the_token() {
    let api = api(Some("s3cret"));
    let q = api.queue.as_ref();
    q.enqueue(spec(&api, "a"), false).await.unwrap();
    let auth = ("authorization", "Bearer s3cret");
    let wrong = ("authorization", "Bearer nope");
    assert_eq!(
        call(&api, "POST", "/api/jobs/1/cancel", Some(json!({})), &[auth])
            .await
            .0,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    assert_eq!(
        call(&api, "POST", "/api/jobs/1/cancel", Some(json!({})), &[JSON])
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(
            &api,
            "POST",
            "/api/jobs/1/cancel",
            Some(json!({})),
            &[JSON, wrong]
        )
        .await
        .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(q.counts().await.unwrap().queued, 1, "nothing changed");
    let (status, body, _) = call(
        &api,
        "POST",
        "/api/jobs/1/cancel",
        Some(json!({})),
        &[JSON, auth],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Idempotent: cancelled again, it says so and changes nothing.
    let (status, body, _) = call(
        &api,
        "POST",
        "/api/jobs/1/cancel",
        Some(json!({})),
        &[JSON, auth],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["answer"]["answer"], "already", "{body}");
    assert_eq!(body["cancelled"], json!([]), "{body}");
    assert_eq!(
        call(&api, "POST", "/api/jobs/1/retry", Some(json!({})), &[JSON])
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    let (status, body, _) = call(
        &api,
        "POST",
        "/api/jobs/1/retry",
        Some(json!({})),
        &[JSON, auth],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(q.counts().await.unwrap().queued, 1, "back in the queue");
    assert_eq!(
        call(
            &api,
            "POST",
            "/api/jobs/77/retry",
            Some(json!({})),
            &[JSON, auth]
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
    let out = media(&api).join("out");
    let request = json!({"paths": [media(&api).join("tapes")], "out": out});
    assert_eq!(
        call(&api, "POST", "/api/jobs", Some(request.clone()), &[JSON])
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(&api, "POST", "/api/jobs", Some(request), &[JSON, auth])
            .await
            .0,
        StatusCode::OK
    );
    reading_needs_the_token(&api, auth, wrong).await;
    assert_eq!(call(&api, "GET", "/", None, &[]).await.0, StatusCode::OK);
}

/// DNS rebinding: a page on another site whose name resolves to 127.0.0.1 must not reach a
/// loopback dashboard; and every answer forbids sniffing, framing and foreign scripts.
#[tokio::test]
async fn a_loopback_dashboard_answers_only_loopback_names_with_safe_headers() {
    let api = api(None);
    for host in [
        "evil.example",
        "evil.example:8080",
        "127.0.0.1.evil.example",
    ] {
        let (status, _, _) = call(&api, "GET", "/api/jobs", None, &[("host", host)]).await;
        assert_eq!(status, StatusCode::MISDIRECTED_REQUEST, "{host}");
        let (status, _, _) = call(
            &api,
            "POST",
            "/api/jobs/1/cancel",
            Some(json!({})),
            &[JSON, ("host", host)],
        )
        .await;
        assert_eq!(status, StatusCode::MISDIRECTED_REQUEST, "{host}");
    }
    for host in [
        "localhost:8080",
        "127.0.0.1:8080",
        "[::1]:8080",
        "LOCALHOST",
    ] {
        let (status, _, _) = call(&api, "GET", "/api/jobs", None, &[("host", host)]).await;
        assert_eq!(status, StatusCode::OK, "{host}");
    }
    let response = router(api.state.clone())
        .oneshot(Request::builder().uri("/").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let headers = response.headers();
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["x-frame-options"], "DENY");
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    let page = response.into_body().collect().await.unwrap().to_bytes();
    assert!(
        !String::from_utf8_lossy(&page).contains("<script>"),
        "no inline script for the policy to block"
    );
}

/// Browsing lists the roots, videos and folders inside them, and tells nothing of what is
/// outside.
async fn browsing_stays_inside_the_roots(api: &Api) {
    let (_, roots, _) = call(api, "GET", "/api/browse", None, &[]).await;
    assert_eq!(roots["entries"][0]["path"], media(api).to_str().unwrap());
    let (status, listing, _) = call(
        api,
        "GET",
        &format!("/api/browse?path={}", media(api).join("tapes").display()),
        None,
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<_> = listing["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec!["a.mpg"],
        "videos and folders only, and no link out of the roots"
    );
    let (status, exists, _) = call(api, "GET", "/api/browse?path=/etc", None, &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, missing, _) =
        call(api, "GET", "/api/browse?path=/no/such/folder", None, &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        exists["error"].as_str().unwrap().replace("/etc", "X"),
        missing["error"]
            .as_str()
            .unwrap()
            .replace("/no/such/folder", "X"),
        "the answer tells nothing about what exists outside the roots"
    );
}

#[tokio::test]
async fn queueing_from_the_page_stays_inside_the_media_roots() {
    let api = api(None);
    let out = media(&api).join("encoded");
    let ok = json!({"paths": [media(&api).join("tapes")], "out": out, "profile": "web"});
    let (status, body, _) = call(&api, "POST", "/api/jobs", Some(ok.clone()), &[JSON]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["queued"].as_array().unwrap().len(),
        1,
        "the video, not the text file, nor the link out of the roots: {body}"
    );
    assert_eq!(
        body["refused"][0]["path"],
        media(&api).join("tapes/link.mpg").to_str().unwrap()
    );
    assert!(
        body["refused"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("outside"),
        "{body}"
    );
    let (_, again, _) = call(&api, "POST", "/api/jobs", Some(ok), &[JSON]).await;
    assert_eq!(again["already_known"].as_array().unwrap().len(), 1);
    let jobs = api.queue.jobs(&Default::default()).await.unwrap();
    assert_eq!(jobs[0].spec.output, out.join("a.mp4"));

    for (paths, out, why) in [
        (json!(["/etc"]), json!(out), "an input outside"),
        (
            json!([media(&api).join("escape/passwd")]),
            json!(out),
            "a symlink out of the roots",
        ),
        (
            json!([media(&api).join("tapes")]),
            json!("/tmp/elsewhere"),
            "an output outside",
        ),
        (
            json!([media(&api).join("tapes")]),
            json!(media(&api).join("../x")),
            "an output climbing out",
        ),
    ] {
        let (status, body, _) = call(
            &api,
            "POST",
            "/api/jobs",
            Some(json!({"paths": paths, "out": out})),
            &[JSON],
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{why}: {body}");
    }
    let (status, _, _) = call(
        &api,
        "POST",
        "/api/jobs",
        Some(json!({"paths": [media(&api).join("tapes")], "out": out, "profile": "nope"})),
        &[JSON],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, _) = call(
        &api,
        "POST",
        "/api/jobs",
        Some(json!({"nonsense": true})),
        &[JSON],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    browsing_stays_inside_the_roots(&api).await;

    let mut closed = api.state.clone();
    closed.roots.clear();
    let none = Api {
        dir: tempfile::tempdir().unwrap(),
        queue: api.queue.clone(),
        state: closed,
    };
    let (status, body, _) = call(
        &none,
        "POST",
        "/api/jobs",
        Some(json!({"paths": [media(&api).join("tapes")], "out": out})),
        &[JSON],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body["error"].as_str().unwrap().contains("no media roots"));
}

/// A named pipe posted to the API is refused with the reason while every endpoint keeps
/// answering (before, the open waited for a writer and the whole dashboard stopped).
#[tokio::test]
async fn a_named_pipe_posted_to_the_api_is_refused_and_the_server_keeps_answering() {
    let api = api(None);
    let pipe = media(&api).join("tapes/pipe.mpg");
    assert!(std::process::Command::new("mkfifo")
        .arg(&pipe)
        .status()
        .unwrap()
        .success());
    let out = media(&api).join("encoded");
    let request = json!({"paths": [pipe], "out": out, "profile": "web"});
    let posting = call(&api, "POST", "/api/jobs", Some(request), &[JSON]);
    let (status, body, _) = tokio::time::timeout(std::time::Duration::from_secs(5), posting)
        .await
        .expect("answered without waiting on the pipe");
    assert!(body.to_string().contains("named pipe"), "{status}: {body}");
    let (status, _, _) = call(&api, "GET", "/api/status", None, &[]).await;
    assert_eq!(status, StatusCode::OK);
}

/// A file whose name is not UTF-8 (old archives copied from other systems have such names):
/// `browse` lists it (it panicked, answering nothing), with its path as bytes, and
/// `POST /api/jobs` takes that path back and queues the file.
#[tokio::test]
async fn a_name_that_is_not_utf8_is_listed_and_queued() {
    use std::os::unix::ffi::OsStrExt;
    let api = api(None);
    let name = std::ffi::OsStr::from_bytes(b"caf\xe9.mpg");
    let tapes = media(&api).join("tapes");
    std::fs::write(tapes.join(name), b"a video").unwrap();
    let uri = format!(
        "/api/browse?path={}",
        tapes.to_str().unwrap().replace('/', "%2F")
    );
    let (status, listing, _) = call(&api, "GET", &uri, None, &[]).await;
    assert_eq!(status, StatusCode::OK, "{listing}");
    let entry = listing["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "caf\u{fffd}.mpg")
        .unwrap_or_else(|| panic!("listed: {listing}"))
        .clone();
    assert!(entry["path"]["unix_bytes"].is_array(), "{entry}");
    let request =
        json!({"paths": [entry["path"]], "out": media(&api).join("encoded"), "profile": "web"});
    let (status, body, _) = call(&api, "POST", "/api/jobs", Some(request), &[JSON]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["queued"].as_array().unwrap().len(), 1, "{body}");
    let jobs = api.queue.jobs(&Default::default()).await.unwrap();
    assert_eq!(jobs[0].spec.input, tapes.join(name));

    // A folder so named is opened by its bytes (a query string's `path` is text).
    let folder = tapes.join(std::ffi::OsStr::from_bytes(b"\xe9t\xe9 1998"));
    std::fs::create_dir(&folder).unwrap();
    std::fs::write(folder.join("b.mpg"), b"a video").unwrap();
    let hex: String = folder
        .as_os_str()
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let (status, listing, _) = call(
        &api,
        "GET",
        &format!("/api/browse?path_bytes={hex}"),
        None,
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{listing}");
    assert!(listing["path"]["unix_bytes"].is_array(), "{listing}");
    assert_eq!(listing["entries"][0]["name"], "b.mpg", "{listing}");
    for bad in ["abc", "zz", &"00".repeat(5000)] {
        let (status, _, _) = call(
            &api,
            "GET",
            &format!("/api/browse?path_bytes={bad}"),
            None,
            &[],
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    }
    // Outside the roots by its bytes is outside all the same.
    let (status, _, _) = call(&api, "GET", "/api/browse?path_bytes=2f657463", None, &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

/// GET `uri` with `If-None-Match: etag` when given: the status, the ETag, the body's length.
async fn get_tagged(api: &Api, uri: &str, etag: Option<&str>) -> (StatusCode, String, usize) {
    let mut request = Request::builder().uri(uri);
    if let Some(etag) = etag {
        request = request.header("if-none-match", etag);
    }
    let response = router(api.state.clone())
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let tag = response
        .headers()
        .get("etag")
        .map(|t| t.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, tag, bytes.len())
}

/// The overview is one answer for the page, and while nothing changes an answer is a `304`
/// with no body; a failed job's ffmpeg words stay out of it (its length is said) and come with
/// the job itself.
#[tokio::test]
async fn an_unchanged_answer_is_not_sent_again_and_the_overview_leaves_out_stderr() {
    let api = api(None);
    one_done_one_failed_one_running(&api).await;
    let (_, overview, _) = call(&api, "GET", "/api/overview", None, &[]).await;
    assert_eq!(overview["status"]["failed"], 1);
    assert_eq!(overview["waiting"][0]["state"], "running");
    assert_eq!(overview["recent"].as_array().unwrap().len(), 1);
    let failed = &overview["failed"][0];
    assert!(
        failed.get("stderr_tail").is_none_or(|t| t.is_null()),
        "{failed}"
    );
    let id = failed["id"].as_str().unwrap();
    let (_, job, _) = call(&api, "GET", &format!("/api/jobs/{id}"), None, &[]).await;
    let tail = job["job"]["stderr_tail"].as_str().map_or(0, str::len);
    assert_eq!(failed["stderr_tail_bytes"], tail);

    for uri in [
        "/api/overview",
        "/api/status",
        "/api/workers",
        "/api/jobs?limit=5",
    ] {
        let (status, tag, sent) = get_tagged(&api, uri, None).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
        assert!(tag.starts_with('"') && sent > 0, "{uri}: {tag:?}");
        let (status, again, sent) = get_tagged(&api, uri, Some(&tag)).await;
        assert_eq!((status, sent), (StatusCode::NOT_MODIFIED, 0), "{uri}");
        assert_eq!(again, tag);
        let (status, _, _) = get_tagged(&api, uri, Some("\"something else\"")).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
    }
    // A change is sent.
    let (_, before, _) = get_tagged(&api, "/api/overview", None).await;
    api.queue.enqueue(spec(&api, "more"), false).await.unwrap();
    let (status, after, _) = get_tagged(&api, "/api/overview", Some(&before)).await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(after, before);
}

/// A page holding an overview names it (`?since=` its tag) and gets only what changed: a job
/// starting sends the status, the waiting list's ids and that job's row, not the failed list
/// nor the rows the page holds as they are. Before, the whole overview was sent again (9.1 KB/s
/// on the bench's dashboard while jobs started and ended).
#[tokio::test]
async fn the_overview_sends_only_what_changed_since_the_answer_the_page_holds() {
    let api = api(None);
    one_done_one_failed_one_running(&api).await;
    for name in ["w1", "w2", "w3"] {
        api.queue.enqueue(spec(&api, name), false).await.unwrap();
    }
    let (_, tag, _) = get_tagged(&api, "/api/overview", None).await;
    let (_, held, _) = call(&api, "GET", "/api/overview", None, &[]).await;
    let since = format!("/api/overview?since=%22{}%22", tag.trim_matches('"'));
    let (status, _, text) = call(&api, "GET", &since, None, &[]).await;
    assert_eq!((status, text.as_str()), (StatusCode::NOT_MODIFIED, ""));

    let lease = api.queue.lease(&worker(), Duration::ZERO).await.unwrap();
    let started = lease.unwrap().id.0;
    let (status, changes, sent) = call(&api, "GET", &since, None, &[]).await;
    let (_, now, whole) = call(&api, "GET", "/api/overview", None, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(changes["since"], tag);
    assert_eq!(changes["status"], now["status"]);
    let lists = changes["lists"].as_object().unwrap();
    assert_eq!(lists.keys().collect::<Vec<_>>(), ["waiting"], "{changes}");
    let rows = lists["waiting"]["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{changes}");
    assert_eq!(
        (&rows[0]["id"], &rows[0]["state"]),
        (&started.into(), &"running".into())
    );
    // The page's rows with the changes are the whole answer's.
    let waiting: Vec<&Value> = lists["waiting"]["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| {
            let mine = |r: &&Value| &r["id"] == id;
            (rows.iter().find(mine))
                .or_else(|| held["waiting"].as_array().unwrap().iter().find(mine))
                .unwrap()
        })
        .collect();
    assert_eq!(
        waiting,
        now["waiting"]
            .as_array()
            .unwrap()
            .iter()
            .collect::<Vec<_>>()
    );
    assert!(
        sent.len() * 2 < whole.len(),
        "{} of {}",
        sent.len(),
        whole.len()
    );
    // Its tag names the whole answer now, for the next question.
    let (_, tag_now, _) = get_tagged(&api, "/api/overview", None).await;
    assert_eq!(changes["tag"], tag_now);
    // A tag the server does not know (or no longer keeps) gets the whole answer.
    let (status, unknown, _) = call(&api, "GET", "/api/overview?since=%22x%22", None, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(unknown.get("since").is_none() && unknown["failed"].is_array());
}
