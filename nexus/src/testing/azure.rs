//! Azure OpenAI as the mock serves it: OpenAI's chat wire format at deployment URLs
//! (`/openai/deployments/{deployment}/chat/completions?api-version=...`) and at the newer
//! `/openai/v1/chat/completions`, authenticated by an `api-key` header. Behaviour words come from
//! the deployment name (the model in the body is ignored there, as Azure ignores it).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::MockState;

/// Azure's error body: `{"error": {"code", "message"}}`.
fn azure_error(status: u16, code: &str, message: &str) -> Response {
    let s = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    (
        s,
        Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

/// Azure refuses a request without `api-key`, and a bearer token is not that key.
pub(super) fn check_key(headers: &HeaderMap) -> Option<Response> {
    let has_key = headers
        .get("api-key")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| !v.is_empty());
    (!has_key).then(|| {
        azure_error(
            401,
            "401",
            "Access denied due to invalid subscription key or wrong API endpoint.",
        )
    })
}

/// Whether a deployment URL carries the `api-version` Azure requires.
pub(super) fn has_api_version(uri: &Uri) -> bool {
    uri.query().is_some_and(|q| {
        q.split('&').any(|kv| {
            kv.strip_prefix("api-version=")
                .is_some_and(|v| !v.is_empty())
        })
    })
}

/// Azure's answer to a deployment URL without `api-version`.
pub(super) fn missing_version() -> Response {
    azure_error(
        404,
        "404",
        "Resource not found (the api-version query parameter is required)",
    )
}

/// `POST /openai/deployments/{deployment}/chat/completions?api-version=...`
pub(super) async fn deployment_chat(
    state: State<Arc<MockState>>,
    Path(deployment): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Some(r) = check_key(&headers) {
        return r;
    }
    if !has_api_version(&uri) {
        return missing_version();
    }
    let Ok(mut req) = serde_json::from_slice::<Value>(&body) else {
        return azure_error(400, "BadRequest", "body is not JSON");
    };
    req["model"] = Value::String(deployment);
    let body = serde_json::to_vec(&req).unwrap_or_default();
    super::chat(state, headers, body.into()).await
}

/// `POST /openai/v1/chat/completions`: the model in the body names the deployment.
pub(super) async fn v1_chat(
    state: State<Arc<MockState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Some(r) = check_key(&headers) {
        return r;
    }
    super::chat(state, headers, body).await
}
