//! `videofarm serve`: the dashboard, the JSON API and /metrics, against either queue.

use super::stop_on_signal;
use crate::broker::open_queue;
use crate::cli::ServeArgs;
use crate::error::{ExitStatus, UsageError};
use crate::settings::{Broker, Settings};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use videofarm_web::history::History;
use videofarm_web::AppState;

/// A token anyone could guess protects nothing.
const MIN_TOKEN: usize = 16;

pub async fn serve(settings: &Settings, args: ServeArgs) -> anyhow::Result<ExitStatus> {
    let token = args
        .token
        .filter(|t| !t.is_empty())
        .or_else(|| settings.token.clone());
    if !args.listen.ip().is_loopback() && token.is_none() {
        return Err(UsageError::new(format!(
            "listening on {} lets other machines change the farm: set a token (--token, VIDEOFARM_TOKEN or `token` in the config)",
            args.listen
        ))
        .into());
    }
    if let Some(token) = &token {
        if token.chars().count() < MIN_TOKEN {
            return Err(UsageError::new(format!(
                "the token must be at least {MIN_TOKEN} characters (it is {}); for example: openssl rand -hex 16",
                token.chars().count()
            ))
            .into());
        }
    }
    let queue = open_queue(settings).await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| UsageError::new(format!("cannot listen on {}: {e}", args.listen)))?;
    let address = listener.local_addr()?;
    eprintln!(
        "videofarm dashboard on http://{address}/ (queue {})",
        settings.broker.describe()
    );
    let state = AppState {
        queue,
        profiles: settings.profiles.clone(),
        default_profile: settings.default_profile.clone(),
        split: settings.split,
        roots: settings.paths.roots.clone(),
        token,
        history: match &settings.broker {
            Broker::Amqp(url) => Some(follow_events(settings, url).await?),
            Broker::Sqlite(_) => None,
        },
    };
    let shutdown = CancellationToken::new();
    stop_on_signal(shutdown.clone());
    videofarm_web::serve(listener, state, shutdown).await?;
    Ok(ExitStatus::Success)
}

/// RabbitMQ keeps no record of finished jobs: keep one from the farm's events, in an SQLite
/// file (`history_file`, default next to the default queue file, one per farm prefix), so it
/// survives restarts.
async fn follow_events(settings: &Settings, url: &str) -> anyhow::Result<Arc<History>> {
    let path = settings.history_file.clone().unwrap_or_else(|| {
        dirs::data_dir()
            .unwrap_or_else(|| std::path::PathBuf::from("."))
            .join("videofarm")
            .join(format!("history-{}.db", settings.amqp_prefix))
    });
    let history = Arc::new(
        History::open(&path)
            .map_err(|e| UsageError::new(format!("history file {}: {e}", path.display())))?,
    );
    let queue = crate::broker::open_amqp(settings, url).await?;
    // Follow from before the page is up, so nothing that happens after is missed.
    let mut events = queue.subscribe_events().await?;
    let recorder = history.clone();
    tokio::spawn(async move {
        loop {
            while let Some(Ok(event)) = events.next().await {
                if let Err(e) = recorder.record(&event) {
                    tracing::warn!(error = %e, "could not record an event in the history");
                }
            }
            tracing::warn!("lost the farm's events; following them again");
            let mut backoff = Duration::from_millis(500);
            events = loop {
                tokio::time::sleep(backoff).await;
                match queue.subscribe_events().await {
                    Ok(events) => break events,
                    Err(e) => tracing::warn!(error = %e, "cannot follow the farm's events yet"),
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            };
        }
    });
    Ok(history)
}
