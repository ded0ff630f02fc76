//! The mock's model lists, in each provider's format (per their API references), and a switch
//! that makes them fail, for the health checks' tests:
//!
//! - `GET /v1/models`: OpenAI's `{"object": "list", "data": [{"id", "object": "model", "created",
//!   "owned_by"}]}` with `Authorization: Bearer`; with an `anthropic-version` header, Anthropic's
//!   `{"data": [{"type": "model", "id", "display_name", "created_at"}], "has_more", "first_id",
//!   "last_id"}` (paged by `limit` and `after_id`) with `x-api-key`.
//! - `GET /v1beta/models`: Gemini's `{"models": [{"name": "models/…", "displayName",
//!   "supportedGenerationMethods"}]}` with `x-goog-api-key` (or `?key=`).
//! - `POST /mock/models-status` `{"status": 503}` makes every list answer that status with an
//!   error body until `{"status": null}`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::MockState;

const OPENAI: [&str; 4] = ["gpt-4o", "gpt-4o-mini", "text-embedding-3-small", "chunks5"];
const ANTHROPIC: [(&str, &str); 3] = [
    ("claude-sonnet-4-5", "Claude Sonnet 4.5"),
    ("claude-haiku-4-5", "Claude Haiku 4.5"),
    ("claude-opus-4-1", "Claude Opus 4.1"),
];

pub(super) fn routes() -> Router<Arc<MockState>> {
    Router::new()
        .route("/v1/models", get(list))
        .route("/v1beta/models", get(gemini))
        .route("/mock/models-status", post(set_status))
}

async fn set_status(State(s): State<Arc<MockState>>, Json(v): Json<Value>) -> StatusCode {
    let code = v.get("status").and_then(Value::as_u64).unwrap_or(0);
    s.models_status.store(code as u16, Ordering::SeqCst);
    StatusCode::NO_CONTENT
}

/// The forced failure, if one is set.
fn forced(s: &MockState) -> Option<Response> {
    let code = s.models_status.load(Ordering::SeqCst);
    let status = StatusCode::from_u16(code).ok().filter(|_| code != 0)?;
    Some(
        (
            status,
            Json(
                json!({"error": {"message": format!("mock list forced to {code}"),
                                  "type": "server_error", "code": null}}),
            ),
        )
            .into_response(),
    )
}

/// The query string's pairs (the mock's values need no percent-decoding).
fn query(uri: &Uri) -> std::collections::HashMap<String, String> {
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn unauthorized(msg: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({"error": {"message": msg, "type": "invalid_request_error"}})),
    )
        .into_response()
}

async fn list(State(s): State<Arc<MockState>>, headers: HeaderMap, uri: Uri) -> Response {
    let q = query(&uri);
    s.requests.fetch_add(1, Ordering::SeqCst);
    if let Some(r) = forced(&s) {
        return r;
    }
    if headers.contains_key("anthropic-version") {
        if !headers.contains_key("x-api-key") {
            return unauthorized("x-api-key header is required");
        }
        let limit: usize = q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(20);
        let start = q
            .get("after_id")
            .and_then(|a| ANTHROPIC.iter().position(|(id, _)| id == a).map(|i| i + 1))
            .unwrap_or(0);
        let page: Vec<Value> = ANTHROPIC
            .iter()
            .skip(start)
            .take(limit.max(1))
            .map(|(id, name)| {
                json!({"type": "model", "id": id, "display_name": name,
                       "created_at": "2025-09-29T00:00:00Z"})
            })
            .collect();
        let more = start + page.len() < ANTHROPIC.len();
        return Json(json!({
            "first_id": page.first().map(|m| m["id"].clone()),
            "last_id": page.last().map(|m| m["id"].clone()),
            "has_more": more,
            "data": page,
        }))
        .into_response();
    }
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("Bearer ") && v.len() > 7);
    if !bearer {
        return unauthorized("missing bearer token");
    }
    Json(json!({
        "object": "list",
        "data": OPENAI.iter().map(|id| json!({"id": id, "object": "model", "created": 1_715_367_049,
                                               "owned_by": "mock"})).collect::<Vec<_>>(),
    }))
    .into_response()
}

async fn gemini(State(s): State<Arc<MockState>>, headers: HeaderMap, uri: Uri) -> Response {
    let q = query(&uri);
    s.requests.fetch_add(1, Ordering::SeqCst);
    if let Some(r) = forced(&s) {
        return r;
    }
    if !headers.contains_key("x-goog-api-key") && !q.contains_key("key") {
        return unauthorized("API key not valid");
    }
    Json(json!({"models": [
        {"name": "models/gemini-2.5-flash", "displayName": "Gemini 2.5 Flash",
         "supportedGenerationMethods": ["generateContent", "countTokens"]},
        {"name": "models/gemini-embedding-001", "displayName": "Gemini Embedding 001",
         "supportedGenerationMethods": ["embedContent"]},
    ]}))
    .into_response()
}
