//! `videofarm serve`: the dashboard, the JSON API and /metrics, against either queue.

use super::{locate_tools, stop_on_signal};
use crate::broker::open_queue;
use crate::error::{ExitStatus, UsageError};
use crate::settings::{ServeSettings, Settings};
use tokio_util::sync::CancellationToken;
use videofarm_web::AppState;

pub async fn serve(settings: &Settings, args: ServeSettings) -> anyhow::Result<ExitStatus> {
    let token = args.token;
    let tls = match (&settings.tls_cert, &settings.tls_key) {
        (Some(cert), Some(key)) => {
            Some(videofarm_web::tls::server_config(cert, key).map_err(UsageError::new)?)
        }
        (None, None) => None,
        _ => {
            return Err(
                UsageError::new("tls_cert and tls_key go together: give both or neither").into(),
            )
        }
    };
    let queue = open_queue(settings).await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| UsageError::new(format!("cannot listen on {}: {e}", args.listen)))?;
    let address = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    note!(
        "videofarm dashboard on {scheme}://{address}/ (queue {})",
        settings.broker.describe()
    );
    if tls.is_none() && !address.ip().is_loopback() {
        note!(
            "WARNING: plain HTTP off loopback: the token, the files and everything else cross the network unencrypted; set tls_cert and tls_key unless you trust the network"
        );
    }
    let state = AppState {
        queue,
        profiles: settings.profiles.clone(),
        default_profile: settings.default_profile.clone(),
        split: settings.split,
        roots: settings.paths.roots.clone(),
        token,
        tools: locate_tools(settings).ok(),
        overviews: Default::default(),
    };
    let shutdown = CancellationToken::new();
    stop_on_signal(shutdown.clone());
    match tls {
        Some(tls) => videofarm_web::serve_tls(listener, tls, state, shutdown).await?,
        None => videofarm_web::serve(listener, state, shutdown).await?,
    }
    Ok(ExitStatus::Success)
}
