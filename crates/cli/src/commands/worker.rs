//! `videofarm worker`: take jobs until stopped. SIGTERM or Ctrl-C stops the running encodes,
//! removes their partial outputs and puts the jobs back in the queue at once.

use super::{locate_tools, stop_on_signal, try_later, with_capabilities, worker_settings};
use crate::broker::{open_queue_waiting, worker_info};
use crate::error::ExitStatus;
use crate::settings::{Settings, WorkerSettings};
use tokio_util::sync::CancellationToken;
use videofarm_worker::Worker;

pub async fn worker(settings: &Settings, args: WorkerSettings) -> anyhow::Result<ExitStatus> {
    let mut settings = settings.clone();
    if args.celery {
        let host = crate::broker::hostname();
        settings.celery = Some(settings.celery_for(args.name.as_deref(), &host)?);
    }
    let settings = &settings;
    if let Some(url) = &settings.files_url {
        if url.starts_with("http://") && !is_loopback_url(url) {
            note!(
                "WARNING: files move to and from {url} unencrypted (plain HTTP off this machine): use it only on a network you trust"
            );
        }
    }
    let tools = locate_tools(settings)?;
    let abort = CancellationToken::new();
    stop_on_signal(abort.clone());
    let concurrency = args.concurrency;
    // The broker is reached while this machine's profiles are found (only the default one is
    // tried now if need be; the rest once the first job is taken).
    let first = [settings.default_profile.clone()];
    let (queue, (info, later)) = tokio::join!(
        open_queue_waiting(settings, &abort),
        with_capabilities(
            settings,
            &tools,
            worker_info(args.name.as_deref(), concurrency),
            &first,
        )
    );
    let Some(queue) = queue? else {
        return Ok(ExitStatus::Success);
    };
    note!(
        "videofarm worker {} on {}: {} at once; stop with Ctrl-C or SIGTERM",
        info.name,
        settings.broker.describe(),
        concurrency
    );
    let worker = std::sync::Arc::new(Worker::new(queue, worker_settings(settings, tools, info)));
    try_later(worker.clone(), later);
    worker.run(CancellationToken::new(), abort).await?;
    Ok(ExitStatus::Success)
}

/// True when `url` (`http://HOST[:PORT]/...`) names this machine: `localhost` or a loopback
/// address, IPv4 or IPv6 (`[::1]`).
fn is_loopback_url(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or("");
    let host = match authority.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or(""),
        None => authority.split(':').next().unwrap_or(""),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::is_loopback_url;

    #[test]
    fn only_this_machine_is_loopback() {
        for here in [
            "http://127.0.0.1:8080",
            "http://localhost/",
            "http://[::1]:8080/x",
            "http://127.0.0.2",
        ] {
            assert!(is_loopback_url(here), "{here}");
        }
        for away in [
            "http://[2001:db8::5]:8080",
            "http://nas:8080",
            "http://192.168.1.10",
            "http://localhost.evil.example",
        ] {
            assert!(!is_loopback_url(away), "{away}");
        }
    }
}
