//! Moving a job's files for a worker that cannot see the media: the input fetched from the
//! `serve` that holds it into a local cache, the output sent back to it; see
//! `videofarm_web::files` for the other side.
//!
//! - Nothing corrupt: the whole input is checked against the server's BLAKE3 hash before it is
//!   used (a copy that does not match is fetched again); the output's hash goes with it and the
//!   server checks it before anything appears.
//! - Nothing lost: a broken download or upload resumes where it stopped (an HTTP range, the
//!   server's staged size). A copy that moves no byte for `stall` is broken off and resumed; a
//!   server that does not answer is asked again, ever less often, until it has been away for
//!   `outage` (five minutes from `worker`): a restart of `serve` or a network cut of a minute
//!   costs no attempt, and what was staged or cached stays.
//! - Nothing twice: inputs are kept by content (`inputs/HASH`), so a worker fetches an input
//!   once for every job that reads it; the server publishes an upload only for the attempt
//!   that runs the job.
//!
//! Memory stays constant whatever the size: files stream through in pieces.

use crate::cache::{make_room, Held};
use futures_lite::StreamExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use videofarm_core::{files_api::*, Failure, JobId};

mod patience;
use patience::Patience;

/// When this worker fetches inputs and sends outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransferMode {
    /// Only for a job whose input this worker cannot see at its (mapped) path.
    #[default]
    Auto,
    /// For every job.
    Always,
    /// Never: a job whose input it cannot see fails, as before.
    Never,
}

/// The server that holds the files, and this worker's cache.
#[derive(Debug, Clone)]
pub struct Files {
    /// `http://nas:8080`: the `videofarm serve` of the machine that holds the media.
    pub url: String,
    pub token: Option<String>,
    pub mode: TransferMode,
    /// Where fetched inputs and outputs on their way wait (`inputs/`, `work/`).
    pub cache: PathBuf,
    /// A transfer that moves no byte for this long is broken off and resumed.
    pub stall: Duration,
    /// How long a transfer keeps trying while the server is away or the copy keeps breaking
    /// off, from the last time it moved forward, before the attempt fails (retryable).
    pub outage: Duration,
    /// For an `https://` server with a certificate of its own: that certificate (or the CA that
    /// signed it), PEM; the system's roots are trusted otherwise.
    pub ca: Option<PathBuf>,
    /// The most the cache may hold, in bytes: older inputs go to make room for a new one.
    pub cache_limit: u64,
    /// How long a split tape waits for a worker that sees the media to plan it before this
    /// worker encodes it whole (`transfer_split_wait_secs`).
    pub plan_wait: Duration,
}

/// What fetching a job's input found.
#[derive(Debug)]
pub enum Fetched {
    /// The input, here and whole; `planned`: the job is a split tape that a worker which sees
    /// the media has planned already.
    Input { input: Held, planned: bool },
    /// The job's output is in place already (nothing was fetched): `""` when it is this job's
    /// verified encode (a re-run), otherwise why it is not.
    OutputThere(String),
}

/// What went wrong with a transfer.
#[derive(Debug)]
pub enum TransferError {
    /// Worth another attempt later (the server is down, the copy kept breaking).
    Retry(String),
    /// The server says this attempt's lease is over: publish nothing.
    Stale(String),
    /// Worth another attempt later, not now (the server's disk is full): not resumed.
    Later(String),
    /// It will not work however often it is tried (refused by the roots, no such job).
    Refused(String),
}

impl TransferError {
    pub fn into_failure(self) -> Failure {
        match self {
            TransferError::Retry(why) | TransferError::Stale(why) | TransferError::Later(why) => {
                Failure::retryable(why, "")
            }
            TransferError::Refused(why) => Failure::permanent(why),
        }
    }
}

impl Files {
    /// False under `transfer = "never"`: this worker moves no file, as if no server were named.
    pub fn fetches(&self) -> bool {
        self.mode != TransferMode::Never
    }

    /// One client per trusted certificate, kept for the life of the process (connections are
    /// reused across requests).
    fn client(&self) -> Result<reqwest::Client, TransferError> {
        type Clients =
            std::sync::Mutex<std::collections::HashMap<Option<PathBuf>, reqwest::Client>>;
        static CLIENTS: std::sync::OnceLock<Clients> = std::sync::OnceLock::new();
        let mut clients = CLIENTS
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(client) = clients.get(&self.ca) {
            return Ok(client.clone());
        }
        let mut builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(10));
        if let Some(ca) = &self.ca {
            let pem = std::fs::read(ca)
                .map_err(|e| TransferError::Refused(format!("files_ca {}: {e}", ca.display())))?;
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| {
                TransferError::Refused(format!(
                    "files_ca {}: not a PEM certificate ({e})",
                    ca.display()
                ))
            })?;
            builder = builder.tls_certs_merge([cert]);
        }
        let client = builder
            .build()
            .map_err(|e| TransferError::Refused(format!("an HTTP client for {}: {e}", self.url)))?;
        clients.insert(self.ca.clone(), client.clone());
        Ok(client)
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let url = format!("{}/api/files/{path}", self.url.trim_end_matches('/'));
        // A client that could not be made fails the request with its reason.
        let client = self.client().unwrap_or_default();
        let changes = method != reqwest::Method::GET;
        let mut request = client.request(method, url);
        if changes {
            // What the server asks of every changing request: never the shape of a form.
            request = request.header(reqwest::header::CONTENT_TYPE, "application/octet-stream");
        }
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        request
    }

    /// The answer to a request, or why not: 409 is a lease that is over, other 4xx a refusal.
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, TransferError> {
        let response = request.send().await.map_err(|e| {
            TransferError::Retry(format!("the file server {}: {}", self.url, causes(&e)))
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let said = response
            .json::<ErrorBody>()
            .await
            .map(|body| body.error)
            .unwrap_or_else(|_| status.to_string());
        Err(match status.as_u16() {
            409 => TransferError::Stale(said),
            507 => TransferError::Later(format!("the file server {}: {said}", self.url)),
            400..=499 => TransferError::Refused(format!("the file server refused: {said}")),
            _ => TransferError::Retry(format!("the file server {}: {said}", self.url)),
        })
    }

    /// The job's input in the local cache, fetched if it is not there yet, checked whole, and
    /// held for the job. `report` follows the bytes (for `inspect` and the dashboard).
    ///
    /// One fetch at a time per worker: the link is shared anyway, the first input is whole
    /// sooner, and two jobs reading one input (chunks of a tape) fetch it once.
    pub async fn fetch_input(
        &self,
        job: &JobId,
        report: Option<&Report>,
    ) -> Result<Fetched, TransferError> {
        static FETCHING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        self.client()?;
        let _fetching = FETCHING.lock().await;
        let (hash, size, planned) = match self.ask(job).await? {
            InputAnswer::OutputThere { output } => return Ok(Fetched::OutputThere(output)),
            InputAnswer::Input {
                blake3,
                size,
                planned,
            } if is_hash(&blake3) => (blake3, size, planned),
            InputAnswer::Input { .. } => {
                return Err(TransferError::Retry(
                    "the file server's hash is not 64 hex digits".into(),
                ))
            }
        };
        let hash = hash.as_str();
        let fetched = |input| Fetched::Input { input, planned };
        let dir = self.cache.join("inputs");
        std::fs::create_dir_all(&dir)
            .map_err(|e| TransferError::Retry(format!("{}: {e}", dir.display())))?;
        let _turn = crate::cache::fetch_turn(&dir)
            .await
            .map_err(|e| TransferError::Retry(format!("{}: {e}", dir.display())))?;
        let done = dir.join(hash);
        // Held before it is looked at: a sweep cannot take it in between.
        let cached = Held::hold(done.clone());
        if std::fs::metadata(&done).is_ok_and(|m| m.len() == size) {
            tracing::info!(job = %job, "the input is in the cache already");
            return Ok(fetched(cached));
        }
        drop(cached);
        let part = dir.join(format!("{hash}.part"));
        let have = std::fs::metadata(&part).map_or(0, |m| m.len());
        // Inputs other jobs read stay: this one waits until one of them lets its input go.
        let mut said = false;
        while !make_room(&dir, size.saturating_sub(have), self.cache_limit, &part)? {
            if !std::mem::replace(&mut said, true) {
                tracing::info!(job = %job, "waiting for room in the transfer cache (transfer_cache_gb)");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let mut patience = Patience::new(self.outage);
        let last = loop {
            let before = std::fs::metadata(&part).map_or(0, |m| m.len());
            let last = match self.download(job, &part, size, report).await {
                Ok(got) => {
                    if got == hash {
                        std::fs::rename(&part, &done).map_err(|e| {
                            TransferError::Retry(format!("{}: {e}", done.display()))
                        })?;
                        return Ok(fetched(Held::hold(done)));
                    }
                    tracing::warn!(job = %job, "the fetched input does not match its hash; fetching it again");
                    let _ = std::fs::remove_file(&part);
                    format!("the copy of the input arrived damaged (BLAKE3 {got}, not {hash})")
                }
                Err(TransferError::Retry(why)) => {
                    tracing::info!(job = %job, reason = %why, "the download broke off; resuming");
                    if std::fs::metadata(&part).map_or(0, |m| m.len()) > before {
                        patience.progressed();
                    }
                    why
                }
                Err(other) => return Err(other),
            };
            if !patience.wait().await {
                break last;
            }
        };
        Err(TransferError::Retry(format!(
            "could not fetch the input of {job}: no progress {}: {last}",
            patience.gave_up()
        )))
    }

    /// What the server says of the job's input (its hash, its size, whether the output is in
    /// place already); a server that is down or records that lag are tried again a few times.
    async fn ask(&self, job: &JobId) -> Result<InputAnswer, TransferError> {
        let mut patience = Patience::new(self.outage);
        loop {
            let said = match self
                .send(self.request(reqwest::Method::GET, &format!("{job}/input/blake3")))
                .await
            {
                Ok(response) => response
                    .json()
                    .await
                    .map_err(|e| TransferError::Retry(format!("the file server's answer: {e}"))),
                Err(e) => Err(e),
            };
            match said {
                Err(TransferError::Retry(why)) => {
                    tracing::debug!(job = %job, reason = %why, "asking the file server again");
                    if !patience.wait().await {
                        return Err(TransferError::Retry(format!(
                            "the file server did not answer {}: {why}",
                            patience.gave_up()
                        )));
                    }
                }
                other => return other,
            }
        }
    }

    /// Append the input to `part` from where it stops, until it holds `size` bytes; the copy's
    /// BLAKE3 hash, computed as it arrives (what was there already is read once more).
    async fn download(
        &self,
        job: &JobId,
        part: &Path,
        size: u64,
        report: Option<&Report>,
    ) -> Result<String, TransferError> {
        let have = std::fs::metadata(part).map_or(0, |m| m.len());
        if have > size {
            let _ = std::fs::remove_file(part);
            return Err(TransferError::Retry(
                "a partial copy was longer than the input".into(),
            ));
        }
        let mut hasher = hasher_of(part).await?;
        if have == size {
            return Ok(hasher.finalize().to_hex().to_string());
        }
        let response = self
            .send(
                self.request(reqwest::Method::GET, &format!("{job}/input"))
                    .header(reqwest::header::RANGE, format!("bytes={have}-")),
            )
            .await?;
        // Written and hashed on a thread of its own while the next pieces arrive.
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(part)
            .map_err(|e| TransferError::Retry(format!("{}: {e}", part.display())))?;
        let (pieces, mut arriving) = tokio::sync::mpsc::channel::<bytes::Bytes>(64);
        let writer = tokio::task::spawn_blocking(move || {
            let mut file = std::io::BufWriter::with_capacity(1 << 20, file);
            while let Some(piece) = arriving.blocking_recv() {
                std::io::Write::write_all(&mut file, &piece)?;
                hasher.update(&piece);
            }
            std::io::Write::flush(&mut file)?;
            Ok::<_, std::io::Error>(hasher)
        });
        let mut stream = response.bytes_stream();
        let received = async {
            // Gathered into blocks of 1 MiB: one hand-over per block, not per network read.
            let mut block = bytes::BytesMut::with_capacity(1 << 20);
            let started = std::time::Instant::now();
            let (mut received, mut last_report) = (0u64, started);
            loop {
                let next = tokio::time::timeout(self.stall, stream.next())
                    .await
                    .map_err(|_| {
                        TransferError::Retry(format!("no byte came for {:?}", self.stall))
                    })?;
                let Some(piece) = next else { break };
                let piece = piece
                    .map_err(|e| TransferError::Retry(format!("the download broke off: {e}")))?;
                received += piece.len() as u64;
                if last_report.elapsed() >= REPORT_EVERY {
                    last_report = std::time::Instant::now();
                    reporting(report, false, have + received, size, received, started);
                }
                block.extend_from_slice(&piece);
                if block.len() >= 1 << 20 && pieces.send(block.split().freeze()).await.is_err() {
                    break; // The writer failed: it says why below.
                }
            }
            if !block.is_empty() {
                let _ = pieces.send(block.freeze()).await;
            }
            Ok::<_, TransferError>(())
        }
        .await;
        drop(pieces);
        let hasher = writer
            .await
            .map_err(|e| TransferError::Retry(e.to_string()))?
            .map_err(|e| TransferError::Retry(format!("{}: {e}", part.display())))?;
        received?;
        let now = std::fs::metadata(part).map_or(0, |m| m.len());
        if now == size {
            Ok(hasher.finalize().to_hex().to_string())
        } else {
            Err(TransferError::Retry(format!(
                "the download stopped at {now} of {size} bytes"
            )))
        }
    }

    /// Send `local` as attempt `attempt`'s output of `job`, resuming as needed, and have the
    /// server check, verify and publish it.
    pub async fn send_output(
        &self,
        job: &JobId,
        attempt: u32,
        local: &Path,
        report: Option<&Report>,
    ) -> Result<Committed, TransferError> {
        let hash = hash_file(local).await?;
        let size = std::fs::metadata(local)
            .map_err(|e| TransferError::Retry(format!("{}: {e}", local.display())))?
            .len();
        let mut patience = Patience::new(self.outage);
        let mut furthest = 0;
        let last = loop {
            let mut staged = 0;
            let last = match self
                .upload(job, attempt, (local, size), &mut staged, report)
                .await
            {
                Ok(()) => None,
                Err(TransferError::Retry(why)) => {
                    tracing::info!(job = %job, reason = %why, "the upload broke off; resuming");
                    Some(why)
                }
                Err(other) => return Err(other),
            };
            if staged > furthest {
                furthest = staged;
                patience.progressed();
            }
            if let Some(last) = last {
                if !patience.wait().await {
                    break last;
                }
                continue;
            }
            let committed = self
                .send(self.request(
                    reqwest::Method::POST,
                    &format!("{job}/output/commit?attempt={attempt}&blake3={hash}"),
                ))
                .await;
            let last = match committed {
                Ok(response) => {
                    return response.json::<Committed>().await.map_err(|e| {
                        TransferError::Retry(format!("the file server's answer: {e}"))
                    })
                }
                // Damaged on the way (the server dropped it): send it again.
                Err(TransferError::Refused(why)) if why.contains("arrived damaged") => {
                    tracing::warn!(job = %job, "the upload arrived damaged; sending it again");
                    furthest = 0;
                    why
                }
                Err(TransferError::Retry(why)) => why,
                Err(other) => return Err(other),
            };
            if !patience.wait().await {
                break last;
            }
        };
        Err(TransferError::Retry(format!(
            "could not send the output of {job}: no progress {}: {last}",
            patience.gave_up()
        )))
    }

    /// Tell a chunk's tape, through the server, why the chunk failed for good (`failed`) or what
    /// damage it saw (`warnings`), as attempt `attempt`.
    pub async fn mark(
        &self,
        job: &JobId,
        attempt: u32,
        kind: MarkKind,
        text: &str,
    ) -> Result<(), TransferError> {
        let mut patience = Patience::new(self.outage);
        loop {
            let request = self
                .request(
                    reqwest::Method::PUT,
                    &format!("{job}/mark?attempt={attempt}&kind={}", kind.as_str()),
                )
                .body(bounded(text, 60_000).to_owned());
            match self.send(request).await {
                Ok(_) => return Ok(()),
                Err(TransferError::Retry(why)) => {
                    if !patience.wait().await {
                        return Err(TransferError::Retry(format!(
                            "could not tell the file server about chunk {job} {}: {why}",
                            patience.gave_up()
                        )));
                    }
                }
                Err(other) => return Err(other),
            }
        }
    }

    /// Send the rest of `local` after what the server has staged (`staged` says how much that
    /// was, so the caller knows whether a try moved forward).
    async fn upload(
        &self,
        job: &JobId,
        attempt: u32,
        (local, size): (&Path, u64),
        staged: &mut u64,
        report: Option<&Report>,
    ) -> Result<(), TransferError> {
        let said: Staged = self
            .send(self.request(
                reqwest::Method::GET,
                &format!("{job}/output?attempt={attempt}"),
            ))
            .await?
            .json()
            .await
            .map_err(|e| TransferError::Retry(format!("the file server's answer: {e}")))?;
        let have = said.size;
        *staged = have;
        if have == size {
            return Ok(());
        }
        let mut file = tokio::fs::File::open(local)
            .await
            .map_err(|e| TransferError::Retry(format!("{}: {e}", local.display())))?;
        tokio::io::AsyncSeekExt::seek(&mut file, std::io::SeekFrom::Start(have.min(size)))
            .await
            .map_err(|e| TransferError::Retry(format!("{}: {e}", local.display())))?;
        // The last time a piece went out: an upload that moves nothing for `stall` is broken
        // off (and resumed), however long a healthy one takes.
        let started = std::time::Instant::now();
        let moved = std::sync::Arc::new(AtomicU64::new(0));
        let mark = moved.clone();
        let sent = std::sync::Arc::new(AtomicU64::new(0));
        let counter = sent.clone();
        let counted =
            tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024).map(move |piece| {
                if let Ok(piece) = &piece {
                    counter.fetch_add(piece.len() as u64, Ordering::Relaxed);
                    mark.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
                }
                piece
            });
        let sending = self.send(
            self.request(
                reqwest::Method::PUT,
                &format!("{job}/output?attempt={attempt}&offset={have}"),
            )
            .body(reqwest::Body::wrap_stream(counted)),
        );
        let stall = self.stall;
        let watchdog = async move {
            loop {
                tokio::time::sleep(REPORT_EVERY).await;
                let done = sent.load(Ordering::Relaxed);
                reporting(report, true, have + done, size, done, started);
                let last = Duration::from_millis(moved.load(Ordering::Relaxed));
                if started.elapsed().saturating_sub(last) > stall {
                    return;
                }
            }
        };
        tokio::select! {
            sent = sending => sent.map(|_| ()),
            () = watchdog => Err(TransferError::Retry(format!("no byte went out for {stall:?}"))),
        }
    }
}

/// Where a transfer says how far it got.
pub type Report = tokio::sync::watch::Sender<videofarm_core::Progress>;

/// How often a transfer says how far it got.
const REPORT_EVERY: Duration = Duration::from_millis(500);

fn reporting(
    report: Option<&Report>,
    sending: bool,
    bytes: u64,
    total: u64,
    this_time: u64,
    since: std::time::Instant,
) {
    let Some(report) = report else { return };
    let rate = this_time as f64 / since.elapsed().as_secs_f64().max(0.001);
    report.send_replace(videofarm_core::Progress {
        progress: bytes as f64 / total.max(1) as f64,
        eta_s: (rate > 0.0).then(|| total.saturating_sub(bytes) as f64 / rate),
        transfer: Some(videofarm_core::Transfer {
            sending,
            bytes,
            total,
            rate,
        }),
        ..Default::default()
    });
}

/// An error and what caused it, down to the root ("error sending request: ... invalid peer
/// certificate: UnknownIssuer"): the outermost words alone rarely say what to fix.
fn causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let said = cause.to_string();
        if !text.contains(&said) {
            text = format!("{text}: {said}");
        }
        source = cause.source();
    }
    text
}

/// At most `max` bytes of `text`, cut at a character boundary.
fn bounded(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn is_hash(text: &str) -> bool {
    text.len() == 64 && text.chars().all(|c| c.is_ascii_hexdigit())
}

/// A hasher that has read what `path` holds (nothing when it is not there).
async fn hasher_of(path: &Path) -> Result<blake3::Hasher, TransferError> {
    let owned = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut hasher = blake3::Hasher::new();
        match std::fs::File::open(&owned) {
            Ok(mut file) => std::io::copy(&mut file, &mut hasher).map(|_| hasher),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(hasher),
            Err(e) => Err(e),
        }
    })
    .await
    .map_err(|e| TransferError::Retry(e.to_string()))?
    .map_err(|e| TransferError::Retry(format!("{}: {e}", path.display())))
}

/// The BLAKE3 hash of a file, read off the async threads.
pub async fn hash_file(path: &Path) -> Result<String, TransferError> {
    let owned = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut hasher = blake3::Hasher::new();
        let mut file = std::fs::File::open(&owned)?;
        std::io::copy(&mut file, &mut hasher)?;
        Ok::<_, std::io::Error>(hasher.finalize().to_hex().to_string())
    })
    .await
    .map_err(|e| TransferError::Retry(e.to_string()))?
    .map_err(|e| TransferError::Retry(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod stall_tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};

    /// A server that answers the hash, then sends a few bytes of the input and goes silent.
    fn silent_server() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap_or(0);
                    let mut header = String::new();
                    while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
                        header.clear();
                    }
                    let mut stream = stream;
                    if line.contains("/blake3") {
                        let body = format!(r#"{{"blake3":"{}","size":100}}"#, "a".repeat(64));
                        let _ = write!(stream, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                    } else {
                        let _ = write!(stream, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\nConnection: close\r\n\r\n0123456789");
                        std::thread::sleep(Duration::from_secs(30));
                    }
                });
            }
        });
        port
    }

    /// A download that stops moving is broken off after `stall`, not after any wall time, and
    /// resumed; one that never moves again fails, retryable, with the reason.
    #[tokio::test]
    async fn a_download_that_stops_moving_is_broken_off() {
        let cache = tempfile::tempdir().unwrap();
        let files = Files {
            url: format!("http://127.0.0.1:{}", silent_server()),
            token: None,
            mode: TransferMode::Always,
            cache: cache.path().to_owned(),
            stall: Duration::from_millis(200),
            outage: Duration::from_secs(2),
            ca: None,
            cache_limit: u64::MAX,
            plan_wait: Duration::ZERO,
        };
        let Err(TransferError::Retry(why)) = files.fetch_input(&JobId("j".into()), None).await
        else {
            panic!("a stalled download fails, retryable");
        };
        assert!(why.contains("no byte came"), "{why}");
    }
}
