//! `transfer-bench`: how fast a worker that cannot see the media fetches a job's input from
//! `serve` on loopback, against `curl` fetching the same bytes from the same server. Runs
//! alternate, medians are reported (this machine is shared and noisy).
//!
//! Usage: `transfer-bench [SIZE_MB] [ROUNDS]` (default 512 MB, 5 rounds). The worker's figure
//! includes what curl does not do: the BLAKE3 hash of the copy, computed as it arrives. Both
//! write the copy to a file on the same disk.

use anyhow::{Context, Result};
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};
use videofarm_core::{JobSpec, Profiles, Queue, QueueSettings, WorkerInfo};
use videofarm_queue_sqlite::SqliteQueue;
use videofarm_web::AppState;
use videofarm_worker::transfer::{Fetched, Files, TransferMode};

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// `size_mb` MiB that do not compress, like video.
fn write_noise(path: &std::path::Path, size_mb: u64) -> Result<()> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut block = vec![0u8; 1 << 20];
    for _ in 0..size_mb {
        for b in block.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        file.write_all(&block)?;
    }
    Ok(())
}

/// One fetch of job `id`'s input as a worker does it (checked whole), then forgotten.
async fn fetch_once(files: &Files, id: &videofarm_core::JobId) -> Result<()> {
    let fetched = files
        .fetch_input(id, None)
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let Fetched::Input { input, .. } = fetched else {
        anyhow::bail!("the server said the output is there already");
    };
    input.remove();
    Ok(())
}

/// The same bytes through curl, into a file on the same disk as the worker's copy goes.
async fn curl_once(target: &std::path::Path, url: &str, id: &videofarm_core::JobId) -> Result<()> {
    let status = tokio::process::Command::new("curl")
        .args(["-sS", "-o"])
        .arg(target)
        .arg(format!("{url}/api/files/{id}/input"))
        .status()
        .await
        .context("curl is installed")?;
    anyhow::ensure!(status.success(), "curl failed");
    std::fs::remove_file(target)?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let size_mb: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(512);
    let rounds: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(5);
    let dir = tempfile::tempdir()?;
    let media = dir.path().join("media");
    std::fs::create_dir_all(&media)?;
    let input = media.join("tape.mpg");
    write_noise(&input, size_mb)?;
    let queue = Arc::new(SqliteQueue::open(
        &dir.path().join("q.db"),
        QueueSettings {
            lease: Duration::from_secs(3600),
            ..QueueSettings::default()
        },
    )?);
    let spec = JobSpec {
        input: input.clone(),
        output: media.join("tape.mkv"),
        profile: "archive".into(),
        key: "bench".into(),
        ..Default::default()
    };
    let id = queue.enqueue(spec, false).await?.id().clone();
    let worker = WorkerInfo::new("bench", "bench");
    queue
        .lease(&worker, Duration::from_secs(1))
        .await?
        .context("the job is leased")?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let state = AppState {
        queue,
        profiles: Profiles::default(),
        default_profile: "archive".into(),
        split: Default::default(),
        roots: vec![media.clone()],
        token: None,
        tools: None,
        overviews: Default::default(),
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(videofarm_web::serve(listener, state, stop.clone()));
    let url = format!("http://127.0.0.1:{port}");
    let files = Files {
        url: url.clone(),
        token: None,
        mode: TransferMode::Always,
        cache: dir.path().join("cache"),
        stall: Duration::from_secs(60),
        outage: Duration::from_secs(300),
        ca: None,
        cache_limit: u64::MAX,
        plan_wait: Duration::ZERO,
    };
    let bytes = size_mb as f64 * 1048576.0;
    let (mut ours, mut curl) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        for turn in 0..2 {
            let started = Instant::now();
            if (turn + round) % 2 == 0 {
                fetch_once(&files, &id).await?;
                ours.push(bytes / started.elapsed().as_secs_f64());
            } else {
                curl_once(&dir.path().join("curl.out"), &url, &id).await?;
                curl.push(bytes / started.elapsed().as_secs_f64());
            }
        }
    }
    stop.cancel();
    let _ = server.await;
    let (ours, curl) = (median(ours), median(curl));
    println!(
        "{size_mb} MB on loopback, median of {rounds}: videofarm fetch (with BLAKE3 check) {:.0} MB/s, curl {:.0} MB/s, {:.0} % of curl",
        ours / 1048576.0,
        curl / 1048576.0,
        100.0 * ours / curl
    );
    Ok(())
}
