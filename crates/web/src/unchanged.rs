//! Conditional answers: every JSON answer to a GET carries an `ETag` (a hash of its body), and
//! a request that names the same one in `If-None-Match` gets `304 Not Modified` with no body.
//! A page that polls (the overview, every second) then moves a few hundred bytes a second
//! while nothing changes, however large the library; browsers send `If-None-Match` for what
//! they hold on their own, and `Cache-Control: no-cache` makes them ask every time.

use axum::body::Body;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};

/// The largest answer hashed; a larger one is sent as it is.
const MOST_HASHED: usize = 16 << 20;

pub(crate) async fn conditional(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let get = request.method() == Method::GET;
    let asked = request.headers().get(header::IF_NONE_MATCH).cloned();
    let response = next.run(request).await;
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"application/json"));
    if !get || !json || response.status() != StatusCode::OK {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MOST_HASHED).await else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "the answer was too large to send",
        )
            .into_response();
    };
    let Ok(tag) = HeaderValue::from_str(&tag_of(&bytes)) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    parts
        .headers
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if asked.is_some_and(|asked| names(&asked, &tag)) {
        let mut unchanged = Response::new(Body::empty());
        *unchanged.status_mut() = StatusCode::NOT_MODIFIED;
        unchanged.headers_mut().insert(header::ETAG, tag);
        unchanged
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        return unchanged;
    }
    parts.headers.insert(header::ETAG, tag);
    Response::from_parts(parts, Body::from(bytes))
}

/// The `ETag` of an answer whose body is `bytes`.
pub(crate) fn tag_of(bytes: &[u8]) -> String {
    format!("\"{}\"", &blake3::hash(bytes).to_hex()[..32])
}

/// Whether an `If-None-Match` value names `tag` (a list, or `*`).
fn names(asked: &HeaderValue, tag: &HeaderValue) -> bool {
    let Ok(asked) = asked.to_str() else {
        return false;
    };
    let tag = tag.to_str().unwrap_or_default();
    asked
        .split(',')
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == tag || t == "*")
}
