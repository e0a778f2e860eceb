//! `videofarm serve`: the dashboard, the JSON API and /metrics, against either queue.

use super::{locate_tools, stop_on_signal};
use crate::broker::open_queue;
use crate::cli::ServeArgs;
use crate::error::{ExitStatus, UsageError};
use crate::settings::Settings;
use tokio_util::sync::CancellationToken;
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
        tools: locate_tools(settings).ok(),
    };
    let shutdown = CancellationToken::new();
    stop_on_signal(shutdown.clone());
    videofarm_web::serve(listener, state, shutdown).await?;
    Ok(ExitStatus::Success)
}
