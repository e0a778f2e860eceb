//! The farm's web face: an overview page, a page per job, a JSON API with the same shapes as
//! the CLI's `--json`, and `/metrics` for Prometheus. Everything is served by the binary: no
//! build step, nothing fetched from the internet.
//!
//! Safety: the server binds to loopback unless told otherwise, and then only with a token;
//! every request that changes something must carry the token when one is set, and must be
//! JSON (so a web page elsewhere cannot post a plain form to it). Queueing from the page
//! accepts only paths under the configured media roots. Pages put every file name in the
//! document as text, never as HTML.
//!
//! Layout: this file (state, routes, API handlers), [`auth`] (who may do what), `videofarm_core::confine` (path checks),
//! [`metrics`], [`overview`] (the page's one answer, and what changed in it), [`files`] (inputs and outputs for workers that cannot see the media).
//! Every backend keeps its own records: the handlers never ask which one they talk to.

mod auth;
pub mod files;
pub mod metrics;
mod overview;
pub mod sweep;
pub mod tls;
mod unchanged;

pub use auth::check_token;
use auth::{authorize, guard};
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
pub use overview::Recent as RecentOverviews;
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::Arc;
use videofarm_core::confine::{self, ConfineError};
use videofarm_core::lifecycle::Request;
use videofarm_core::plan::{self, Planned};
use videofarm_core::{Answer, Verdict};
use videofarm_core::{
    Backend, Enqueued, JobFilter, JobId, JobSpec, JobState, Profiles, QueueError,
};

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub queue: Arc<dyn Backend>,
    pub profiles: Profiles,
    pub default_profile: String,
    /// Whether long inputs queued from the page are split across workers.
    pub split: videofarm_core::Split,
    /// Folders the page may list and queue from; empty means queueing from the page is off.
    pub roots: Vec<PathBuf>,
    /// Required on every request that changes something, when set.
    pub token: Option<String>,
    /// ffprobe, to verify outputs uploaded by workers that cannot see the media.
    pub tools: Option<videofarm_ffmpeg::Tools>,
    /// The overview's last answers, to send the page only what changed since one.
    pub overviews: RecentOverviews,
}

/// An API error: a status and one plain sentence.
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = videofarm_core::files_api::ErrorBody { error: self.1 };
        (self.0, Json(body)).into_response()
    }
}

impl From<QueueError> for ApiError {
    fn from(e: QueueError) -> Self {
        let status = match e {
            QueueError::NotFound(_) => StatusCode::NOT_FOUND,
            QueueError::WrongState { .. } => StatusCode::CONFLICT,
            QueueError::LeaseLost(_) | QueueError::Cancelled(_) => StatusCode::CONFLICT,
            QueueError::Backend(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError(status, e.to_string())
    }
}

type ApiResult<T> = Result<T, ApiError>;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { Html(include_str!("../assets/index.html")) }),
        )
        .route(
            "/job/{id}",
            get(|| async { Html(include_str!("../assets/job.html")) }),
        )
        .route(
            "/assets/app.js",
            get(|| async { asset("text/javascript", include_str!("../assets/app.js")) }),
        )
        .route(
            "/assets/style.css",
            get(|| async { asset("text/css", include_str!("../assets/style.css")) }),
        )
        .route(
            "/api/openapi.json",
            get(|| async { asset("application/json", include_str!("../assets/openapi.json")) }),
        )
        .route("/api/status", get(status))
        .route("/api/overview", get(overview::overview))
        .route("/api/workers", get(workers))
        .route("/api/jobs", get(jobs).post(enqueue))
        .route("/api/jobs/{id}", get(job))
        .route("/api/jobs/{id}/retry", post(retry))
        .route("/api/jobs/{id}/cancel", post(cancel))
        .route("/api/timeline", get(timeline))
        .route("/api/profiles", get(profiles))
        .route("/api/browse", get(browse))
        .route("/api/files/{id}/input", get(files::input))
        .route("/api/files/{id}/input/blake3", get(files::input_hash))
        .route(
            "/api/files/{id}/output",
            get(files::output_status).put(files::output_part),
        )
        .route("/api/files/{id}/output/commit", post(files::output_commit))
        .route(
            "/api/files/{id}/mark",
            // A chunk's signal may pass the default 2 MB limit; the handler bounds each kind.
            put(files::chunk_mark).layer(axum::extract::DefaultBodyLimit::max(
                videofarm_core::split::SIGNAL_MAX_BYTES,
            )),
        )
        .route("/metrics", get(metrics::metrics))
        .layer(axum::middleware::from_fn(unchanged::conditional))
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// A path refused by the media roots. Without roots nothing can be chosen from the page (the
/// core's confinement takes "no roots" as "anywhere", which a server must never do).
fn forbidden(e: ConfineError) -> ApiError {
    ApiError(StatusCode::FORBIDDEN, e.to_string())
}

fn require_roots(state: &AppState) -> ApiResult<()> {
    if state.roots.is_empty() {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "no media roots are configured ([paths] roots in the config), so nothing can be chosen from the page".into(),
        ));
    }
    Ok(())
}

async fn status(State(state): State<AppState>) -> ApiResult<Json<serde_json::Value>> {
    Ok(Json(status_value(&state).await?))
}

/// `videofarm status --json`: the counts, the live workers, the watches' problems.
async fn status_value(state: &AppState) -> ApiResult<serde_json::Value> {
    let counts = state.queue.counts().await?;
    let workers = state.queue.worker_count().await?;
    let watches = state.queue.watch_problems().await?;
    let mut value = serde_json::to_value(counts)
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    value["workers"] = workers.into();
    value["watch_problems"] = serde_json::to_value(watches)
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(value)
}

async fn workers(
    State(state): State<AppState>,
) -> ApiResult<Json<Vec<videofarm_core::WorkerStatus>>> {
    Ok(Json(state.queue.workers().await?))
}

#[derive(Deserialize)]
struct JobsQuery {
    state: Option<String>,
    /// A page: at most `limit` jobs (default and most [`MAX_PAGE`]) after `offset`.
    limit: Option<u32>,
    offset: Option<u32>,
    /// `newest`: the most recently finished first.
    order: Option<String>,
}

/// The most jobs one request lists.
const MAX_PAGE: u32 = 1000;

async fn jobs(
    State(state): State<AppState>,
    Query(q): Query<JobsQuery>,
) -> ApiResult<Json<Vec<videofarm_core::JobRecord>>> {
    let wanted = match q.state.as_deref() {
        None | Some("") => None,
        Some(s) => Some(
            s.parse::<JobState>()
                .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e))?,
        ),
    };
    let newest_first = match q.order.as_deref() {
        None | Some("") | Some("oldest") => false,
        Some("newest") => true,
        Some(other) => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                format!("order must be oldest or newest, not {other:?}"),
            ))
        }
    };
    let filter = JobFilter {
        state: wanted,
        ids: None,
        chunks: false,
        limit: Some(q.limit.unwrap_or(MAX_PAGE).min(MAX_PAGE)),
        offset: q.offset.unwrap_or(0),
        newest_first,
        finished_since: None,
    };
    Ok(Json(list(&state, &filter).await?))
}

/// The jobs `filter` asks for, as a list shows them: why a waiting one waits; each tape's
/// verdict and totals, without its events and timeline (tens of KB, which come with the job
/// itself, `/api/jobs/{id}`).
async fn list(state: &AppState, filter: &JobFilter) -> ApiResult<Vec<videofarm_core::JobRecord>> {
    let mut records = state.queue.jobs(filter).await?;
    mark_waiting(state, &mut records).await?;
    for tape in records
        .iter_mut()
        .filter_map(|r| r.result.as_mut().and_then(|r| r.tape.as_mut()))
    {
        tape.more_events += tape.events.len();
        tape.events.clear();
        tape.timeline.clear();
    }
    Ok(records)
}

/// Say why a waiting job that no live worker can run waits.
async fn mark_waiting(
    state: &AppState,
    records: &mut [videofarm_core::JobRecord],
) -> ApiResult<()> {
    Ok(state.queue.explain_waiting(records).await?)
}

#[derive(Deserialize)]
struct TimelineQuery {
    hours: Option<u32>,
}

/// The farm's recent past in 36 stretches: what finished in each, bytes and media time
/// written, and how many jobs waited at its end (the dashboard's chart).
async fn timeline(
    State(state): State<AppState>,
    Query(q): Query<TimelineQuery>,
) -> ApiResult<Json<Vec<videofarm_core::listing::Bucket>>> {
    let hours = i64::from(q.hours.unwrap_or(6).clamp(1, 168));
    let count = 36;
    Ok(Json(
        state
            .queue
            .timeline(hours * 3_600_000 / count as i64, count)
            .await?,
    ))
}

async fn job(
    State(state): State<AppState>,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let id = JobId(id);
    let mut records = state
        .queue
        .jobs(&JobFilter {
            state: None,
            ids: Some(vec![id.clone()]),
            chunks: false,
            ..Default::default()
        })
        .await?;
    mark_waiting(&state, &mut records).await?;
    let history = state.queue.history(&id).await?;
    let record = records
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::from(QueueError::NotFound(id.clone())))?;
    Ok(Json(
        serde_json::json!({ "job": record, "history": history }),
    ))
}

async fn retry(
    State(state): State<AppState>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Json<serde_json::Value>> {
    authorize(&state, &headers)?;
    let answers = state.queue.retry(&[JobId(id)]).await?;
    answered(answers, Request::Retry, "retried")
}

async fn cancel(
    State(state): State<AppState>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Json<serde_json::Value>> {
    authorize(&state, &headers)?;
    let answers = state.queue.cancel(&[JobId(id)]).await?;
    answered(answers, Request::Cancel, "cancelled")
}

/// A cancel's or retry's answer for one job: 200 with what it did (`done` lists the job when it
/// changed, `answer` says how), 404 for no such job, 409 with the reason when it does not apply.
fn answered(
    answers: Vec<Answer>,
    request: Request,
    done: &str,
) -> ApiResult<Json<serde_json::Value>> {
    let Some(answer) = answers.into_iter().next() else {
        return Err(ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the queue gave no answer".into(),
        ));
    };
    match &answer.verdict {
        Verdict::NotFound => Err(ApiError(StatusCode::NOT_FOUND, answer.describe(request))),
        Verdict::Refused(_) => Err(ApiError(StatusCode::CONFLICT, answer.describe(request))),
        verdict => {
            let changed: Vec<&JobId> = verdict
                .is_done()
                .then_some(&answer.id)
                .into_iter()
                .collect();
            Ok(Json(serde_json::json!({
                done: changed,
                "answer": answer,
                "message": answer.describe(request),
            })))
        }
    }
}

async fn profiles(State(state): State<AppState>) -> Json<serde_json::Value> {
    let list: Vec<_> = state.profiles.iter().cloned().collect();
    Json(serde_json::json!({ "default": state.default_profile, "profiles": list }))
}

#[derive(Deserialize)]
struct EnqueueRequest {
    /// Files or folders, each under a media root.
    paths: Vec<AnyPath>,
    /// The output folder, under a media root.
    out: AnyPath,
    profile: Option<String>,
    #[serde(default)]
    priority: i32,
}

/// A path as the API writes it: a string, or `{"unix_bytes": [...]}` for a name that is not
/// UTF-8 (see [`videofarm_core::pathser`]), so what `browse` lists can be sent back as it is.
#[derive(Deserialize)]
struct AnyPath(#[serde(with = "videofarm_core::pathser")] PathBuf);

/// A path as a JSON value: never a panic, whatever bytes its names hold.
pub(crate) fn path_value(path: &std::path::Path) -> serde_json::Value {
    videofarm_core::pathser::serialize(path, serde_json::value::Serializer)
        .unwrap_or(serde_json::Value::Null)
}

async fn enqueue(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<Json<serde_json::Value>> {
    authorize(&state, &headers)?;
    let request: EnqueueRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("the request is not a queue request: {e}"),
        )
    })?;
    let profile = state
        .profiles
        .get(request.profile.as_deref().unwrap_or(&state.default_profile))
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))?
        .clone();
    if request.paths.is_empty() {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "choose at least one file or folder".into(),
        ));
    }
    require_roots(&state)?;
    let mut inputs = Vec::new();
    for AnyPath(path) in &request.paths {
        inputs.push(confine::existing_within(&state.roots, path).map_err(forbidden)?);
    }
    let out = confine::within(&state.roots, &request.out.0).map_err(forbidden)?;
    let planned: Vec<Planned> = plan::plan(&inputs, &out, &profile.extension)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.0))?;
    // A folder may hold links: each file found is checked where it really is, and queued as
    // that real file.
    let mut queued = Vec::new();
    let mut known = Vec::new();
    let mut refused = Vec::new();
    let planned: Vec<Planned> = planned
        .into_iter()
        .filter_map(|job| {
            match confine::existing_within(&state.roots, &job.input).and_then(|real| {
                // A named pipe (or a device) is no video, and is never opened.
                confine::fs::plain_file(&real)
                    .map(|()| real)
                    .map_err(|e| confine::ConfineError::Io {
                        path: job.input.display().to_string(),
                        why: e.to_string(),
                        kind: confine::IoKind::Other,
                    })
            }) {
                Ok(real) => Some(Planned {
                    input: real,
                    output: job.output,
                }),
                Err(e) => {
                    refused.push(serde_json::json!({ "path": path_value(&job.input), "reason": e.to_string() }));
                    None
                }
            }
        })
        .collect();
    for job in &planned {
        let spec = JobSpec {
            split: state.split,
            ..plan::spec(job, &profile, request.priority, false)
        };
        let mut answer = state.queue.enqueue(spec.clone(), false).await?;
        if matches!(answer, Enqueued::Duplicate(_, JobState::Succeeded)) && plan::made_again(&spec)
        {
            // A success whose output is gone is made again.
            answer = state.queue.enqueue(spec, true).await?;
        }
        match answer {
            Enqueued::Queued(id) => queued.push(id),
            Enqueued::Duplicate(id, _) => known.push(id),
        }
    }
    Ok(Json(
        serde_json::json!({ "queued": queued, "already_known": known, "refused": refused }),
    ))
}

#[derive(Deserialize)]
struct BrowseQuery {
    path: Option<PathBuf>,
    /// The path as hex bytes: how the page names a folder whose name is not UTF-8 (a query
    /// string's `path` is text).
    path_bytes: Option<String>,
}

/// The longest path `path_bytes` names (Linux's PATH_MAX).
const MAX_PATH_BYTES: usize = 4096;

/// `hex` as the path whose bytes it spells, or why not.
fn path_of_hex(hex: &str) -> ApiResult<PathBuf> {
    let bad = || {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("path_bytes: an even number of hex digits, at most {MAX_PATH_BYTES} bytes"),
        )
    };
    if !hex.len().is_multiple_of(2) || hex.len() > 2 * MAX_PATH_BYTES {
        return Err(bad());
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2).ok_or_else(bad)?, 16).map_err(|_| bad()))
        .collect::<ApiResult<Vec<u8>>>()?;
    Ok(videofarm_core::pathser::from_bytes(bytes))
}

/// The folders and video files in a folder under the roots (the roots themselves without a path).
async fn browse(
    State(state): State<AppState>,
    Query(q): Query<BrowseQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    let path = match (q.path, q.path_bytes) {
        (_, Some(hex)) => Some(path_of_hex(&hex)?),
        (path, None) => path,
    };
    let Some(path) = path else {
        return Ok(Json(
            serde_json::json!({ "path": null, "entries": state.roots.iter().map(|r| serde_json::json!({"name": r.to_string_lossy(), "path": path_value(r), "dir": true})).collect::<Vec<_>>() }),
        ));
    };
    require_roots(&state)?;
    let dir = confine::existing_within(&state.roots, &path).map_err(forbidden)?;
    let mut entries = Vec::new();
    let names = confine::fs::names(&dir)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("{}: {e}", dir.display())))?;
    for name in names {
        let entry_path = dir.join(&name);
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        // Links are shown only where they lead inside the roots, as what they lead to.
        let Ok(real) = confine::existing_within(&state.roots, &entry_path) else {
            continue;
        };
        let is_dir = real.is_dir();
        if is_dir || (real.is_file() && plan::is_video_name(&entry_path)) {
            // A name that is not UTF-8 is shown as near as it can be, and its path given as
            // bytes, which `POST /api/jobs` takes back (it panicked here before).
            entries.push(serde_json::json!({ "name": name.to_string_lossy(), "path": path_value(&entry_path), "dir": is_dir }));
        }
    }
    entries.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    Ok(Json(
        serde_json::json!({ "path": path_value(&dir), "entries": entries }),
    ))
}

/// Serve until `shutdown` fires.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    let sweeping = AbortOnDrop(sweep::spawn_upload_sweep(state.clone()));
    let served = axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
    drop(sweeping);
    served
}

/// A background task that ends with the server.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// [`serve`] over TLS (see [`tls`]).
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    tls: std::sync::Arc<tokio_rustls::rustls::ServerConfig>,
    state: AppState,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    let listener = tls::TlsListener {
        tcp: listener,
        acceptor: tokio_rustls::TlsAcceptor::from(tls),
    };
    let _sweeping = AbortOnDrop(sweep::spawn_upload_sweep(state.clone()));
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}
