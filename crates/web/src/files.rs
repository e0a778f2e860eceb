//! Files for workers that cannot see the media: the input of a job they hold, and the output
//! they made, moved over HTTP under the same roots and token as the dashboard.
//!
//! - `GET /api/files/{job}/input` streams the job's input (`Range: bytes=N-` resumes);
//!   `GET /api/files/{job}/input/blake3` says its BLAKE3 hash, for the worker to check the copy
//!   it holds, end to end (and whether a split tape is planned already).
//! - `PUT /api/files/{job}/output?attempt=A&offset=N` appends to a staging file beside the
//!   output (`GET` says how much is staged, so an upload resumes where it stopped);
//!   `POST /api/files/{job}/output/commit?attempt=A&blake3=H` checks the staged file's hash,
//!   verifies it as a worker would (the profile's video codec, the input's duration), and
//!   renames it into place, never over an existing file unless the job may overwrite.
//!
//! - `PUT /api/files/{job}/mark?attempt=A&kind=failed|warnings`: a chunk of a split tape says
//!   why it failed for good, or what damage it saw, in its tape's work folder.
//!
//! Only the running attempt `A` of a job may upload or commit (the records say which attempt
//! runs): a stale worker, whose lease ran out and whose job another took, is refused. Paths
//! come from the job's records, never from the request, and must lie under the roots; a
//! server without roots serves nothing. Memory stays constant whatever the file size.

use crate::{forbidden, ApiError, ApiResult, AppState};
use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use std::collections::HashMap;
use std::io::ErrorKind;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};
use videofarm_core::confine;
use videofarm_core::confine::fs::{self, Kind};
use videofarm_core::files_api::{
    Committed, InputAnswer, MarkKind, MarkQuery, Marked, PublishedFile, Staged,
};
use videofarm_core::{JobFilter, JobId, JobRecord, JobSpec, JobState};

static SENT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static RECEIVED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Bytes of inputs sent and of outputs received since the server started (for `/metrics`).
pub fn bytes_moved() -> (u64, u64) {
    use std::sync::atomic::Ordering;
    (
        SENT.load(Ordering::Relaxed),
        RECEIVED.load(Ordering::Relaxed),
    )
}

/// The staging file of attempt `attempt` of `job`, beside its output.
pub fn staging_name(job: &JobId, attempt: u32) -> String {
    format!("{}{attempt}", staging_prefix(job))
}

/// What the name of every staging file of `job` starts with.
fn staging_prefix(job: &JobId) -> String {
    format!(".videofarm-upload-{}-", job.0)
}

/// Remove every upload of `job` staged in `dir`; how many there were.
pub(crate) fn remove_staged(dir: &Path, job: &JobId) -> usize {
    let prefix = staging_prefix(job);
    fs::remove_named(dir, |n| n.as_bytes().starts_with(prefix.as_bytes()))
}

fn conflict(why: impl Into<String>) -> ApiError {
    ApiError(StatusCode::CONFLICT, why.into())
}

fn io_error(path: &Path, e: std::io::Error) -> ApiError {
    if is_full(&e) {
        return ApiError(
            StatusCode::INSUFFICIENT_STORAGE,
            format!("{}: the disk that holds it is full", path.display()),
        );
    }
    // Something planted where the farm keeps its own file (a link, a pipe): refused, said.
    if e.kind() == ErrorKind::InvalidInput {
        return ApiError(StatusCode::CONFLICT, format!("{}: {e}", path.display()));
    }
    ApiError(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("{}: {e}", path.display()),
    )
}

/// No space left, or no quota left.
fn is_full(e: &std::io::Error) -> bool {
    e.kind() == ErrorKind::StorageFull || e.raw_os_error() == Some(libc::EDQUOT)
}

fn roots(state: &AppState) -> ApiResult<&[PathBuf]> {
    if state.roots.is_empty() {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "no media roots are configured ([paths] roots), so no file is served".into(),
        ));
    }
    Ok(&state.roots)
}

async fn record(state: &AppState, id: &str) -> ApiResult<JobRecord> {
    let id = JobId(id.to_owned());
    id.check()
        .map_err(|why| ApiError(StatusCode::BAD_REQUEST, why))?;
    state
        .queue
        .jobs(&JobFilter {
            ids: Some(vec![id.clone()]),
            chunks: true,
            ..Default::default()
        })
        .await?
        .pop()
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no job {id}")))
}

/// Records that have not caught up with the queue yet (on RabbitMQ they follow a stream): a
/// job just leased may still show as queued, or with its earlier attempt. The worker tries
/// again in a moment; a stale one finds the job's next attempt, or its end, and is refused.
fn lagging(id: &str) -> ApiError {
    ApiError(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("the records do not show job {id}'s attempt running yet; try again"),
    )
}

fn not_yet(job: &JobRecord) -> ApiResult<()> {
    match job.state {
        JobState::Queued => Err(lagging(&job.id.0)),
        _ => Ok(()),
    }
}

/// The job, if `attempt` is its running attempt: what fences off a stale worker.
async fn running_attempt(state: &AppState, id: &str, attempt: u32) -> ApiResult<JobSpec> {
    let job = record(state, id).await?;
    not_yet(&job)?;
    if job.state != JobState::Running {
        return Err(conflict(format!(
            "job {id} is {}, not running: this worker's lease is over",
            job.state.as_str()
        )));
    }
    let history = state.queue.history(&job.id).await?;
    // Running, or (on the embedded queue) granted its publish.
    let running = history.iter().rev().find(|a| a.outcome.is_open());
    match running {
        Some(a) if a.attempt == attempt => Ok(job.spec),
        Some(a) if a.attempt < attempt => Err(lagging(id)),
        Some(a) => Err(conflict(format!(
            "job {id} runs attempt {} now, not {attempt}: this worker's lease is over",
            a.attempt
        ))),
        None => Err(conflict(format!("job {id} has no running attempt"))),
    }
}

#[derive(Deserialize)]
pub struct AttemptQuery {
    attempt: u32,
    #[serde(default)]
    offset: Option<u64>,
    #[serde(default)]
    blake3: Option<String>,
}

/// `GET /api/files/{job}/input`: the input of a running job, from `Range: bytes=N-` if asked.
pub async fn input(
    State(state): State<AppState>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let (job, opened) = running_input(&state, &id).await?;
    let file = tokio::fs::File::from_std(
        opened
            .file()
            .try_clone()
            .map_err(|e| io_error(&job.spec.input, e))?,
    );
    let size = file
        .metadata()
        .await
        .map_err(|e| io_error(&job.spec.input, e))?
        .len();
    let start = match headers.get(header::RANGE).and_then(|r| r.to_str().ok()) {
        None => 0,
        Some(range) => range
            .strip_prefix("bytes=")
            .and_then(|r| r.strip_suffix('-'))
            .and_then(|n| n.parse::<u64>().ok())
            .filter(|n| *n <= size)
            .ok_or_else(|| {
                ApiError(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    format!("only `Range: bytes=N-` with N at most {size} is served"),
                )
            })?,
    };
    let mut file = file;
    file.seek(std::io::SeekFrom::Start(start))
        .await
        .map_err(|e| io_error(&job.spec.input, e))?;
    let counted = futures_lite::StreamExt::map(
        tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024),
        |piece| {
            if let Ok(piece) = &piece {
                SENT.fetch_add(piece.len() as u64, std::sync::atomic::Ordering::Relaxed);
            }
            piece
        },
    );
    let body = Body::from_stream(counted);
    let mut response = (
        if start > 0 {
            StatusCode::PARTIAL_CONTENT
        } else {
            StatusCode::OK
        },
        body,
    )
        .into_response();
    let h = response.headers_mut();
    h.insert(header::ACCEPT_RANGES, "bytes".parse().expect("header"));
    h.insert(
        header::CONTENT_LENGTH,
        (size - start).to_string().parse().expect("header"),
    );
    h.insert(
        header::CONTENT_TYPE,
        "application/octet-stream".parse().expect("header"),
    );
    if start > 0 {
        h.insert(
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{size}", size.saturating_sub(1))
                .parse()
                .expect("header"),
        );
    }
    Ok(response)
}

type HashKey = (u64, u64, u64, i64);

fn hash_cache() -> &'static Mutex<HashMap<HashKey, String>> {
    static CACHE: OnceLock<Mutex<HashMap<HashKey, String>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// The BLAKE3 hash of an open file (kept per file and version while the server runs).
fn blake3_of(file: &std::fs::File, path: &Path) -> ApiResult<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = file.metadata().map_err(|e| io_error(path, e))?;
    let key = (
        meta.dev(),
        meta.ino(),
        meta.size(),
        meta.mtime_nsec() + meta.mtime() * 1_000_000_000,
    );
    if let Some(hash) = hash_cache()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&key)
    {
        return Ok(hash.clone());
    }
    let mut hasher = blake3::Hasher::new();
    let mut reader = file.try_clone().map_err(|e| io_error(path, e))?;
    std::io::Seek::seek(&mut reader, std::io::SeekFrom::Start(0)).map_err(|e| io_error(path, e))?;
    std::io::copy(&mut reader, &mut hasher).map_err(|e| io_error(path, e))?;
    let hash = hasher.finalize().to_hex().to_string();
    let mut cache = hash_cache().lock().unwrap_or_else(|p| p.into_inner());
    if cache.len() > 10_000 {
        cache.clear();
    }
    cache.insert(key, hash.clone());
    Ok(hash)
}

/// `GET /api/files/{job}/input/blake3`: the input's hash and size; whether its output is
/// already in place (`output`: absent when not, `""` when it is this job's verified encode,
/// otherwise why it is not), then there is nothing to fetch; whether a split tape is planned.
pub async fn input_hash(
    State(state): State<AppState>,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Json<InputAnswer>> {
    let (job, opened) = running_input(&state, &id).await?;
    let spec = &job.spec;
    if let Some(output) = output_there(&state, spec).await? {
        return Ok(Json(InputAnswer::OutputThere { output }));
    }
    let path = spec.input.clone();
    let (hash, size) = tokio::task::spawn_blocking(move || {
        let size = opened.file().metadata().map(|m| m.len()).unwrap_or(0);
        blake3_of(opened.file(), &path).map(|h| (h, size))
    })
    .await
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    // A split tape already planned (by a worker that sees the media) waits for its chunks.
    let planned = spec.chunk.is_none() && !spec.split.is_off() && is_planned(&state, spec);
    Ok(Json(InputAnswer::Input {
        blake3: hash,
        size,
        planned,
    }))
}

/// Whether the tape's work folder holds a plan: looked at, never made (a real folder beside
/// the output, a real file in it, links not followed).
fn is_planned(state: &AppState, spec: &JobSpec) -> bool {
    let Ok((dir, _)) = output_place(&state.roots, spec) else {
        return false;
    };
    let Some(name) = videofarm_core::split::work_dir(&spec.output)
        .file_name()
        .map(|n| n.to_owned())
    else {
        return false;
    };
    let work = dir.io_path().join(name);
    fs::kind(&work).is_ok_and(|k| k == Kind::Folder)
        && fs::kind(&work.join("plan.json")).is_ok_and(|k| k == Kind::File)
}

/// What is already where the output goes (unless the job may overwrite it): `None` when
/// nothing is; `""` when it is this job's verified encode (a re-run); otherwise why it is not.
async fn output_there(state: &AppState, spec: &JobSpec) -> ApiResult<Option<String>> {
    if spec.overwrite {
        return Ok(None);
    }
    let roots = roots(state)?;
    let Ok((dir, name)) = output_place(roots, spec) else {
        return Ok(None);
    };
    let target = dir.io_path().join(name);
    Ok(match fs::kind(&target) {
        Err(_) => None,
        Ok(Kind::File) => Some(
            already_done(state, roots, spec, &target)
                .await
                .err()
                .unwrap_or_default(),
        ),
        Ok(_) => Some(format!(
            "{}: something that is not a file is in the way of the output",
            spec.output.display()
        )),
    })
}

/// The input of job `id`, which must be running, opened under the roots.
async fn running_input(state: &AppState, id: &str) -> ApiResult<(JobRecord, confine::Opened)> {
    let roots = roots(state)?;
    let job = record(state, id).await?;
    not_yet(&job)?;
    if job.state != JobState::Running {
        return Err(conflict(format!("job {id} is not running")));
    }
    let opened = confine::open_within(roots, &job.spec.input).map_err(forbidden)?;
    Ok((job, opened))
}

/// Attempt `attempt`'s upload of job `id`: the job (the attempt must be its running one), the
/// output's folder opened under the roots, the output's name in it and the staging file.
struct Upload {
    spec: JobSpec,
    dir: confine::Opened,
    name: std::ffi::OsString,
    staging: PathBuf,
}

async fn upload(state: &AppState, id: &str, attempt: u32) -> ApiResult<Upload> {
    let roots = roots(state)?;
    let spec = running_attempt(state, id, attempt).await?;
    let (dir, name) = output_place(roots, &spec)?;
    let staging = dir
        .io_path()
        .join(staging_name(&JobId(id.to_owned()), attempt));
    Ok(Upload {
        spec,
        dir,
        name,
        staging,
    })
}

/// The output's folder, opened under the roots, and the output's name in it.
pub(crate) fn output_place(
    roots: &[PathBuf],
    spec: &JobSpec,
) -> ApiResult<(confine::Opened, std::ffi::OsString)> {
    let (Some(dir), Some(name)) = (spec.output.parent(), spec.output.file_name()) else {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("{}: not a file path", spec.output.display()),
        ));
    };
    let dir = confine::open_dir_within(roots, dir).map_err(forbidden)?;
    Ok((dir, name.to_owned()))
}

fn staged_size(path: &Path) -> u64 {
    fs::file_size(path).unwrap_or(0)
}

/// `GET /api/files/{job}/output?attempt=A`: how much of the upload is staged.
pub async fn output_status(
    State(state): State<AppState>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<AttemptQuery>,
) -> ApiResult<Json<Staged>> {
    let upload = upload(&state, &id, q.attempt).await?;
    Ok(Json(Staged {
        size: staged_size(&upload.staging),
    }))
}

/// `PUT /api/files/{job}/output?attempt=A&offset=N`: the next part of the upload.
/// The most an upload may hold: what an encode of the job's input can come to, with room to
/// spare (a lossless archive of an MPEG-2 capture is several times larger), and a floor for
/// small inputs. Beyond it the upload is refused (413) and what was staged goes.
pub fn upload_cap(input_size: u64) -> u64 {
    input_size.saturating_mul(UPLOAD_TIMES_INPUT) + UPLOAD_FLOOR
}

/// See [`upload_cap`].
const UPLOAD_TIMES_INPUT: u64 = 16;
const UPLOAD_FLOOR: u64 = 16 * 1024 * 1024;

pub async fn output_part(
    State(state): State<AppState>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<AttemptQuery>,
    body: Body,
) -> ApiResult<Json<Staged>> {
    use futures_lite::StreamExt;
    let Upload {
        spec,
        dir: _dir,
        staging,
        ..
    } = upload(&state, &id, q.attempt).await?;
    let have = staged_size(&staging);
    let offset = q.offset.unwrap_or(0);
    if offset != have {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!("{have} bytes are staged; send from offset {have}"),
        ));
    }
    // A full disk drops what is staged: nothing partial stays to fill it more, and the job is
    // tried again later (a 507, which the worker does not resume).
    let failed = |e: std::io::Error| {
        let error = io_error(&spec.output, e);
        if error.0 == StatusCode::INSUFFICIENT_STORAGE {
            let _ = fs::remove_file(&staging);
        }
        error
    };
    let mut file = tokio::fs::File::from_std(fs::open_own_append(&staging).map_err(failed)?);
    let mut stream = body.into_data_stream();
    let mut size = have;
    let cap = upload_cap(spec.input_size);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError(
                StatusCode::BAD_REQUEST,
                format!("the upload broke off: {e}"),
            )
        })?;
        if size + chunk.len() as u64 > cap {
            drop(file);
            let _ = fs::remove_file(&staging);
            return Err(ApiError(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "{}: the upload is larger than an encode of this input can be (at most {cap} bytes: {UPLOAD_TIMES_INPUT} times the input's {} bytes, and {UPLOAD_FLOOR} more)",
                    spec.output.display(),
                    spec.input_size
                ),
            ));
        }
        file.write_all(&chunk).await.map_err(failed)?;
        size += chunk.len() as u64;
        RECEIVED.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
    }
    file.flush().await.map_err(failed)?;
    file.sync_all().await.map_err(failed)?;
    Ok(Json(Staged { size }))
}

/// What `file` is, when it is a good encode of `spec`, checked as a worker checks its own: a
/// chunk by its video codec and its exact frame count (the plan's), any other output by the
/// profile's video codec, the input's duration and the streams kept; its frames counted for
/// the job's record either way. Without ffmpeg where the server runs, nothing is published:
/// an upload that cannot be checked is refused.
async fn verified(
    state: &AppState,
    roots: &[PathBuf],
    spec: &JobSpec,
    file: &Path,
) -> Result<PublishedFile, String> {
    let tools = state.tools.as_ref().ok_or_else(|| {
        "this server cannot check an upload (ffmpeg was not found where it runs)".to_owned()
    })?;
    let profile = state
        .profiles
        .get(&spec.profile)
        .map_err(|e| e.to_string())?;
    let extension = match spec.chunk {
        Some(_) => videofarm_core::split::CHUNK_EXTENSION,
        None => profile.extension.as_str(),
    };
    let output = videofarm_ffmpeg::probe_output(tools, file, extension)
        .await
        .map_err(|e| e.to_string())?;
    let frames = videofarm_ffmpeg::packets::count_video_frames(tools, file)
        .await
        .map_err(|e| format!("its frames could not be counted ({e})"))?;
    match &spec.chunk {
        Some(chunk) => {
            let per_frame = profile.split.as_ref().map_or(1, |a| a.frames_per_frame);
            videofarm_ffmpeg::verify_chunk(
                profile,
                &output,
                frames,
                chunk.frames() * u64::from(per_frame),
            )?;
        }
        None => {
            let input = confine::open_within(roots, &spec.input).map_err(|e| e.to_string())?;
            let input = videofarm_ffmpeg::probe(tools, &input.io_path())
                .await
                .map_err(|e| e.to_string())?;
            videofarm_ffmpeg::verify_output(profile, &input, &output)?;
        }
    }
    Ok(PublishedFile {
        size: fs::file_size(file).unwrap_or(0),
        duration_s: output.duration_s.unwrap_or(0.0),
        frames,
    })
}

/// `Ok` when the output already in place at `target` is this job's verified encode (a re-run,
/// or an attempt that published and died); why not, in words, otherwise.
async fn already_done(
    state: &AppState,
    roots: &[PathBuf],
    spec: &JobSpec,
    target: &Path,
) -> Result<PublishedFile, String> {
    verified(state, roots, spec, target).await.map_err(|why| {
        format!(
            "{}: the output already exists and is not a verified encode of this input ({why}); use --overwrite to replace it",
            spec.output.display()
        )
    })
}

/// The most a chunk's mark (its failure or its warnings, in words) may say.
pub const MAX_MARK: usize = 64 * 1024;

/// `PUT /api/files/{job}/mark?attempt=A&kind=failed|warnings`: what a chunk's running attempt
/// tells its tape, written into the tape's work folder as a worker that sees it would (the
/// damage it saw in its part of the input, or why it failed for good).
pub async fn chunk_mark(
    State(state): State<AppState>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<MarkQuery>,
    body: axum::body::Bytes,
) -> ApiResult<Json<Marked>> {
    let Upload { spec, dir, .. } = upload(&state, &id, q.attempt).await?;
    let bad = |why: String| ApiError(StatusCode::BAD_REQUEST, why);
    let chunk = spec
        .chunk
        .as_ref()
        .ok_or_else(|| bad(format!("job {id} is not a chunk of a split tape")))?;
    let name = match q.kind {
        MarkKind::Failed => videofarm_core::split::failed_name(chunk.index, false),
        MarkKind::Warnings => videofarm_core::split::warnings_name(chunk.index),
        MarkKind::Signal => videofarm_core::split::signal_name(chunk.index),
    };
    if q.kind == MarkKind::Signal {
        // Read by the join as it is: it must be a signal, and not a huge one.
        let max = videofarm_core::split::SIGNAL_MAX_BYTES;
        let signal = serde_json::from_slice::<videofarm_core::report::Signal>(&body);
        if body.len() > max
            || signal
                .map_err(|e| e.to_string())
                .and_then(|s| s.check())
                .is_err()
        {
            return Err(bad(format!(
                "a signal mark is a measured signal in JSON of at most {max} bytes"
            )));
        }
    } else if body.len() > MAX_MARK || std::str::from_utf8(&body).is_err() {
        return Err(bad(format!("a mark is text of at most {MAX_MARK} bytes")));
    }
    // Through a new file (never a link someone left) and a rename: the tape reads it whole.
    if let Err(e) = fs::write_atomically(&dir.io_path(), &name, &body) {
        return Err(io_error(&spec.output, e));
    }
    Ok(Json(Marked { marked: name }))
}

/// `POST /api/files/{job}/output/commit?attempt=A&blake3=H`: check, verify and publish.
pub async fn output_commit(
    State(state): State<AppState>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<AttemptQuery>,
) -> ApiResult<Json<Committed>> {
    let Upload {
        spec,
        dir,
        name,
        staging,
    } = upload(&state, &id, q.attempt).await?;
    let roots = roots(&state)?;
    let want = q
        .blake3
        .clone()
        .filter(|h| h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()))
        .ok_or_else(|| {
            ApiError(
                StatusCode::BAD_REQUEST,
                "blake3=HEX (64 digits) is required".into(),
            )
        })?;
    let file = fs::open_own_read(&staging)
        .map_err(|e| ApiError(StatusCode::CONFLICT, format!("nothing staged: {e}")))?;
    let shown = spec.output.clone();
    let got = tokio::task::spawn_blocking(move || blake3_of(&file, &shown))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    if got != want.to_ascii_lowercase() {
        let _ = fs::remove_file(&staging);
        return Err(ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "{}: the upload arrived damaged (BLAKE3 {got}, sent {want}); send it again",
                spec.output.display()
            ),
        ));
    }
    let file = match verified(&state, roots, &spec, &staging).await {
        Ok(file) => file,
        Err(why) => {
            let _ = fs::remove_file(&staging);
            return Err(ApiError(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "{}: the uploaded encode failed verification: {why}",
                    spec.output.display()
                ),
            ));
        }
    };
    // Fenced again right before it appears: the lease may have ended while verifying.
    running_attempt(&state, &id, q.attempt).await?;
    let target = dir.io_path().join(&name);
    let published = if spec.overwrite {
        fs::rename(&staging, &target)
    } else {
        fs::hard_link(&staging, &target).and_then(|()| fs::remove_file(&staging))
    };
    match published {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            // An earlier attempt published it (and could not say so): done, if it is this
            // job's verified encode; never replaced.
            let _ = fs::remove_file(&staging);
            return match already_done(&state, roots, &spec, &target).await {
                Ok(file) => Ok(Json(Committed {
                    published: spec.output.clone(),
                    already: true,
                    file: Some(file),
                })),
                Err(why) => Err(ApiError(StatusCode::UNPROCESSABLE_ENTITY, why)),
            };
        }
        Err(e) => return Err(io_error(&spec.output, e)),
    }
    fs::sync_folder(&dir.io_path());
    tracing::info!(output = %spec.output.display(), "published an uploaded output");
    // What earlier attempts of this job left staged (a worker that died mid-upload) goes too.
    remove_staged(&dir.io_path(), &JobId(id.clone()));
    Ok(Json(Committed {
        published: spec.output.clone(),
        already: false,
        file: Some(file),
    }))
}
