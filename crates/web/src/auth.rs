//! Who may do what: the guard every request passes (loopback names only without a token; the
//! token for the API and metrics with one; headers that stop sniffing and framing), and what a
//! request that changes something must carry.

use crate::{ApiError, ApiResult, AppState};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

/// What every request passes and every response carries:
/// - without a token (the server is on loopback), only requests addressed to a loopback name
///   are answered, so a web page cannot reach the dashboard by DNS rebinding;
/// - with a token (the server may be off loopback), reads of the API and the metrics need it
///   too: only the page itself and its assets are served to anyone;
/// - headers that stop sniffing, framing and any script not served from here.
pub(crate) async fn guard(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let headers = request.headers();
    let path = request.uri().path();
    let refusal = match &state.token {
        None if !loopback_host(headers) => Some(ApiError(
            StatusCode::MISDIRECTED_REQUEST,
            "this dashboard answers only at a loopback address (localhost, 127.0.0.1, [::1]); set a token to serve it to other names".into(),
        )),
        Some(token)
            if (path.starts_with("/api/") || path == "/metrics")
                && path != "/api/openapi.json"
                && bearer(headers) != Some(token.as_str()) =>
        {
            Some(ApiError(
                StatusCode::UNAUTHORIZED,
                "this farm needs its token: Authorization: Bearer <token>".into(),
            ))
        }
        _ if form_like(&request) => Some(ApiError(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "a changing request must say what it sends (Content-Type: application/json, or application/octet-stream for a file's bytes), never a form".into(),
        )),
        _ => None,
    };
    let mut response = match refusal {
        Some(refused) => refused.into_response(),
        None => next.run(request).await,
    };
    let out = response.headers_mut();
    out.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    out.insert(
        header::X_FRAME_OPTIONS,
        header::HeaderValue::from_static("DENY"),
    );
    out.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
    );
    out.insert(
        header::REFERRER_POLICY,
        header::HeaderValue::from_static("no-referrer"),
    );
    response
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// True when the request names a loopback host (or, like a client that is not a browser, none).
fn loopback_host(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST) else {
        return true;
    };
    let Ok(host) = host.to_str() else {
        return false;
    };
    // Strip the port: `[::1]:8080`, `127.0.0.1:8080`, `localhost:8080`.
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        host.rsplit_once(':').map_or(host, |(name, _)| name)
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A token anyone could guess protects nothing.
const MIN_TOKEN: usize = 16;

/// Whether `token` can protect a farm: long enough, and only visible ASCII characters (a space
/// or a control character cannot travel in an `Authorization` header as written, so no client
/// could ever send it).
pub fn check_token(token: &str) -> Result<(), String> {
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(
            "the token must be visible characters only (letters, digits, punctuation; no spaces); for example: openssl rand -hex 16"
                .into(),
        );
    }
    if token.len() < MIN_TOKEN {
        return Err(format!(
            "the token must be at least {MIN_TOKEN} characters (it is {}); for example: openssl rand -hex 16",
            token.len()
        ));
    }
    Ok(())
}

/// A changing request in a shape a page on another site could send without asking (a form, or
/// plain text): refused, so only this farm's page and its workers change anything.
fn form_like(request: &axum::extract::Request) -> bool {
    if matches!(
        *request.method(),
        axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
    ) {
        return false;
    }
    let kind = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        });
    match kind.as_deref() {
        None | Some("") => true,
        Some(kind) => matches!(
            kind,
            "application/x-www-form-urlencoded" | "multipart/form-data" | "text/plain"
        ),
    }
}

/// Requests that change something: the token when one is set, and a JSON body type.
pub(crate) fn authorize(state: &AppState, headers: &HeaderMap) -> ApiResult<()> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json {
        return Err(ApiError(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send JSON (Content-Type: application/json)".into(),
        ));
    }
    if let Some(token) = &state.token {
        if bearer(headers) != Some(token.as_str()) {
            return Err(ApiError(
                StatusCode::UNAUTHORIZED,
                "this farm needs its token: Authorization: Bearer <token>".into(),
            ));
        }
    }
    Ok(())
}
