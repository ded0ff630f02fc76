//! `ApiError`: the core error rendered as an HTTP status plus the OpenAI error body.
//!
//! Server-side detail (storage, internal) is logged here and never sent to the client.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// An error on its way to an HTTP client.
#[derive(Debug)]
pub struct ApiError(pub nexus::Error);

impl From<nexus::Error> for ApiError {
    fn from(e: nexus::Error) -> Self {
        ApiError(e)
    }
}

impl ApiError {
    /// A 400 with a message.
    pub fn bad_request(msg: impl Into<String>) -> Self {
        ApiError(nexus::Error::invalid(msg))
    }
}

/// The JSON body and status of an error; shared by HTTP responses and in-band stream errors.
pub fn render(e: &nexus::Error) -> (StatusCode, serde_json::Value) {
    render_for(e, None)
}

/// [`render`] with the request id in the body, so a tenant can quote it to the operator, whose
/// log holds the upstream detail under that id.
pub fn render_for(e: &nexus::Error, request_id: Option<&str>) -> (StatusCode, serde_json::Value) {
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status.is_server_error()
        && !matches!(
            e.kind(),
            nexus::ErrorKind::Upstream
                | nexus::ErrorKind::Transport
                | nexus::ErrorKind::Timeout
                | nexus::ErrorKind::Unavailable
        )
    {
        tracing::error!(error = %e, kind = %e.kind(), "request failed");
    } else {
        tracing::debug!(error = %e, kind = %e.kind(), "request rejected");
    }
    (status, e.to_openai_json_for(request_id))
}

/// The HTTP response of an error for a request whose id is known.
pub fn response_for(e: &nexus::Error, request_id: Option<&str>) -> Response {
    let (status, body) = render_for(e, request_id);
    let mut r = (status, axum::Json(body)).into_response();
    retry_headers(r.headers_mut(), e);
    r.extensions_mut().insert(ErrorKindTag(e.kind()));
    r
}

/// `Retry-After` when the error knows when to come back, and `x-should-retry: false` on a spent
/// budget: the official SDKs read that header before their own retry rules, so they do not
/// spend their retries (and the user's time) on a 429 that holds until the period rolls over.
pub fn retry_headers(h: &mut axum::http::HeaderMap, e: &nexus::Error) {
    if let Some(ra) = e.retry_after() {
        let secs = ra.as_secs_f64().ceil().max(1.0) as u64;
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            h.insert(header::RETRY_AFTER, v);
        }
    }
    if e.kind() == nexus::ErrorKind::QuotaExceeded {
        h.insert("x-should-retry", HeaderValue::from_static("false"));
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        response_for(&self.0, None)
    }
}

/// Marks a response with the error kind, for metrics.
#[derive(Debug, Clone, Copy)]
pub struct ErrorKindTag(pub nexus::ErrorKind);

/// Result alias for handlers.
pub type ApiResult<T> = Result<T, ApiError>;
