//! Route groups: the OpenAI-compatible API, embeddings, the Anthropic Messages API, the OpenAI
//! Responses API, the admin API, WebSocket chat and health.

pub mod admin;
pub mod config_marks;
pub mod embeddings;
pub mod groups;
pub mod health;
pub mod messages;
pub mod openai;
pub mod provider_health;
pub mod provider_keys;
pub mod requests;
pub mod responses;
pub mod sse;
pub mod storage;
pub mod ws;

use axum::http::{HeaderMap, HeaderName, HeaderValue, Uri};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// The 404 for unknown paths, as an OpenAI error body.
pub async fn not_found(uri: Uri) -> Response {
    not_found_response(uri.path())
}

/// The same, for handlers.
pub fn not_found_response(path: &str) -> Response {
    ApiError(nexus::Error::not_found(format!("route '{path}'"))).into_response()
}

/// The 405 for a known path with the wrong method, as an OpenAI error body (axum's default has
/// no body, which OpenAI clients cannot parse).
pub async fn method_not_allowed(method: axum::http::Method, uri: Uri) -> Response {
    let body = serde_json::json!({"error": {
        "message": format!("method {method} is not allowed on '{}'", uri.path()),
        "type": "invalid_request_error",
        "param": null,
        "code": "method_not_allowed",
    }});
    (axum::http::StatusCode::METHOD_NOT_ALLOWED, axum::Json(body)).into_response()
}

/// Copies the upstream's `x-ratelimit-*` headers onto an answer (those that are valid headers).
pub fn copy_rate_limit_headers(h: &mut HeaderMap, headers: &[(String, String)]) {
    for (k, v) in headers {
        if let (Ok(k), Ok(v)) = (HeaderName::try_from(k.as_str()), HeaderValue::from_str(v)) {
            h.insert(k, v);
        }
    }
}
