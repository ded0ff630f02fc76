//! Route groups: the OpenAI-compatible API, the admin API, WebSocket chat and health.

pub mod admin;
pub mod health;
pub mod openai;
pub mod ws;

use axum::http::Uri;
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
