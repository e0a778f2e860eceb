//! Fuzzing the HTTP request bodies, where a browser's or a worker's bytes enter `serve`: every
//! changing endpoint gets hostile JSON (and raw bytes), on a real SQLite queue. Each answers
//! with a status that says what was wrong, never a panic or a 500, and the server keeps
//! answering (`/api/status`) afterwards.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use proptest::prelude::*;
use tower::ServiceExt;
use videofarm_fuzzing::{bytes, json};
use videofarm_web::router;

const KEYS: &[&str] = &[
    "paths",
    "out",
    "profile",
    "priority",
    "split",
    "overwrite",
    "unix_bytes",
    "ids",
    "attempt",
];

/// The changing endpoints, with a job that exists (`a`) and one that does not.
const ENDPOINTS: &[(&str, &str)] = &[
    ("POST", "/api/jobs"),
    ("POST", "/api/jobs/{id}/retry"),
    ("POST", "/api/jobs/{id}/cancel"),
    ("PUT", "/api/files/{id}/output?attempt=1&offset=0"),
    ("POST", "/api/files/{id}/output/commit?attempt=1&blake3=00"),
    ("PUT", "/api/files/{id}/mark?attempt=1&kind=failed"),
];

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME.get_or_init(|| tokio::runtime::Runtime::new().unwrap())
}

async fn send(api: &Api, method: &str, uri: &str, body: Vec<u8>) -> StatusCode {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap();
    router(api.state.clone())
        .oneshot(request)
        .await
        .unwrap()
        .status()
}

fn answers(endpoint: usize, real_job: bool, body: Vec<u8>) -> Result<(), TestCaseError> {
    runtime().block_on(async {
        let api = api(None);
        let job = queued(&api, "a").await;
        let id = if real_job {
            job.0.clone()
        } else {
            "0000000000000000".into()
        };
        let (method, uri) = ENDPOINTS[endpoint];
        let status = send(&api, method, &uri.replace("{id}", &id), body).await;
        prop_assert!(
            status != StatusCode::INTERNAL_SERVER_ERROR,
            "{method} {uri}: {status}"
        );
        let (status, _, _) = call(&api, "GET", "/api/status", None, &[]).await;
        prop_assert_eq!(status, StatusCode::OK);
        Ok(())
    })
}

proptest! {
    #![proptest_config(videofarm_fuzzing::config())]

    #[test]
    fn any_json_body(endpoint in 0..ENDPOINTS.len(), real in any::<bool>(), body in json(KEYS)) {
        answers(endpoint, real, serde_json::to_vec(&body).unwrap())?;
    }

    #[test]
    fn any_bytes_body(endpoint in 0..ENDPOINTS.len(), real in any::<bool>(), body in bytes(b"{\"paths\":")) {
        answers(endpoint, real, body)?;
    }
}
