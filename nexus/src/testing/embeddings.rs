//! The mock's embeddings APIs, each in its provider's wire format:
//!
//! - OpenAI `POST /v1/embeddings` (and `/embeddings`): `input` a string, strings, token ids or
//!   token-id arrays; `dimensions`; `encoding_format` `float` or `base64` (little-endian `f32`);
//!   `usage` with `prompt_tokens` and `total_tokens`.
//! - Azure `POST /openai/deployments/{deployment}/embeddings?api-version=...` and
//!   `/openai/v1/embeddings`, with an `api-key` header (the deployment's name carries the words).
//! - Gemini `POST /v1beta/models/{model}:batchEmbedContents` (`{requests: [{model, content,
//!   outputDimensionality}]}` → `{embeddings: [{values}]}`; each request's model must be the
//!   URL's) and `:embedContent` (→ `{embedding: {values}}`), with `x-goog-api-key`. No usage, as
//!   Gemini reports none.
//!
//! Vectors are deterministic: derived from SHA-256 of the input (text, or the token ids), unit
//! length, 16 numbers unless `dimensions` / `outputDimensionality` asks otherwise (at most 4096).
//! A text counts one token per whitespace-separated word. Words in the model name: `failN`
//! (answer HTTP N in the provider's error shape), `delayN` (wait N ms), `nousage` (OpenAI: no
//! `usage`), `short` (one embedding fewer than asked for).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::{error_response, MockState, Words};

/// The default vector size.
const DEFAULT_DIMS: usize = 16;
const MAX_DIMS: usize = 4096;

/// The mock's vector for some input bytes: SHA-256 in counter mode, mapped to [-1, 1], then
/// scaled to unit length (as OpenAI's are).
pub(super) fn vector(seed: &[u8], dims: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(dims);
    let mut block = 0u32;
    while out.len() < dims {
        let h = Sha256::new()
            .chain_update(seed)
            .chain_update(block.to_le_bytes())
            .finalize();
        for pair in h.chunks_exact(2) {
            if out.len() == dims {
                break;
            }
            let n = u16::from_le_bytes([pair[0], pair[1]]) as f32;
            out.push(n / 32767.5 - 1.0);
        }
        block += 1;
    }
    let norm = out
        .iter()
        .map(|v| v * v)
        .sum::<f32>()
        .sqrt()
        .max(f32::MIN_POSITIVE);
    out.iter_mut().for_each(|v| *v /= norm);
    out
}

/// One input of an OpenAI request: its seed bytes and token count.
fn openai_inputs(input: &Value) -> Option<Vec<(Vec<u8>, u64)>> {
    let text = |s: &str| {
        (
            s.as_bytes().to_vec(),
            s.split_whitespace().count().max(1) as u64,
        )
    };
    let tokens = |a: &[Value]| -> Option<(Vec<u8>, u64)> {
        let ids: Option<Vec<u32>> = a
            .iter()
            .map(|t| t.as_u64().and_then(|t| u32::try_from(t).ok()))
            .collect();
        let ids = ids?;
        let bytes = ids.iter().flat_map(|t| t.to_le_bytes()).collect();
        Some((bytes, ids.len() as u64))
    };
    match input {
        Value::String(s) if !s.is_empty() => Some(vec![text(s)]),
        Value::Array(a) if a.is_empty() => None,
        Value::Array(a) if a.iter().all(Value::is_string) => a
            .iter()
            .map(|s| s.as_str().filter(|s| !s.is_empty()).map(text))
            .collect(),
        Value::Array(a) if a.iter().all(Value::is_u64) => Some(vec![tokens(a)?]),
        Value::Array(a) => a
            .iter()
            .map(|x| {
                x.as_array()
                    .filter(|x| !x.is_empty())
                    .and_then(|x| tokens(x))
            })
            .collect(),
        _ => None,
    }
}

fn dims_of(v: Option<&Value>) -> Result<usize, String> {
    match v {
        None | Some(Value::Null) => Ok(DEFAULT_DIMS),
        Some(d) => match d.as_u64() {
            Some(n) if (1..=MAX_DIMS as u64).contains(&n) => Ok(n as usize),
            _ => Err(format!("dimensions must be between 1 and {MAX_DIMS}")),
        },
    }
}

fn remember(s: &MockState, headers: &HeaderMap, req: &Value) {
    s.requests.fetch_add(1, Ordering::SeqCst);
    if let Ok(mut g) = s.last_headers.lock() {
        *g = headers
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect();
    }
    if let Ok(mut g) = s.last_request.lock() {
        *g = Some(req.clone());
    }
}

/// OpenAI's embeddings, for the OpenAI and Azure routes; `model` carries the words.
async fn openai_embeddings(
    s: &MockState,
    headers: &HeaderMap,
    req: Value,
    model: &str,
) -> Response {
    remember(s, headers, &req);
    let w = Words::parse(model);
    if w.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(w.delay_ms)).await;
    }
    if let Some(status) = w.fail {
        return error_response(status, &format!("mock failure {status}"));
    }
    let Some(inputs) = req.get("input").and_then(openai_inputs) else {
        return error_response(400, "'$.input' is invalid. Please check the API reference");
    };
    let dims = match dims_of(req.get("dimensions")) {
        Ok(d) => d,
        Err(e) => return error_response(400, &e),
    };
    let base64 = match req.get("encoding_format").and_then(Value::as_str) {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => return error_response(400, &format!("unknown encoding_format '{other}'")),
    };
    let take = inputs.len() - usize::from(w.has("short"));
    let data: Vec<Value> = inputs
        .iter()
        .take(take)
        .enumerate()
        .map(|(i, (seed, _))| {
            let v = vector(seed, dims);
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    let tokens: u64 = inputs.iter().map(|(_, n)| n).sum();
    let mut body = json!({"object": "list", "data": data, "model": model});
    if !w.has("nousage") {
        body["usage"] = json!({"prompt_tokens": tokens, "total_tokens": tokens});
    }
    s.completed.fetch_add(1, Ordering::SeqCst);
    let mut r = Json(body).into_response();
    r.headers_mut().insert(
        "x-ratelimit-remaining-requests",
        axum::http::HeaderValue::from_static("99"),
    );
    r
}

/// `POST /v1/embeddings`
pub(super) async fn openai(
    State(s): State<Arc<MockState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return error_response(400, "mock: body is not JSON");
    };
    let model = req
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("mock")
        .to_owned();
    openai_embeddings(&s, &headers, req, &model).await
}

/// `POST /openai/deployments/{deployment}/embeddings?api-version=...`
pub(super) async fn azure_deployment(
    State(s): State<Arc<MockState>>,
    Path(deployment): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Some(r) = super::azure::check_key(&headers) {
        return r;
    }
    if !super::azure::has_api_version(&uri) {
        return super::azure::missing_version();
    }
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return error_response(400, "mock: body is not JSON");
    };
    // Azure ignores the body's model: the deployment decides.
    openai_embeddings(&s, &headers, req, &deployment).await
}

/// `POST /openai/v1/embeddings`: the body's model names the deployment.
pub(super) async fn azure_v1(
    state: State<Arc<MockState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Some(r) = super::azure::check_key(&headers) {
        return r;
    }
    openai(state, headers, body).await
}

/// Gemini's `:batchEmbedContents` and `:embedContent` for `model` (the URL's, without
/// `models/`). Called by the Gemini routes of `gemini.rs`.
pub(super) async fn gemini(s: &MockState, model: &str, batch: bool, req: Value) -> Response {
    // `gemini.rs` has counted the request and kept its headers.
    if let Ok(mut g) = s.last_request.lock() {
        *g = Some(req.clone());
    }
    let w = Words::parse(model);
    if w.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(w.delay_ms)).await;
    }
    if let Some(code) = w.fail {
        return super::gemini::google_error(code, &format!("mock failure {code}"));
    }
    // One EmbedContentRequest: `content.parts[].text` joined, `outputDimensionality`.
    let one = |r: &Value| -> Result<Vec<f32>, String> {
        let text: String = r
            .pointer("/content/parts")
            .and_then(Value::as_array)
            .map(|parts| {
                parts
                    .iter()
                    .filter_map(|p| p.get("text").and_then(Value::as_str))
                    .collect()
            })
            .unwrap_or_default();
        if text.is_empty() {
            return Err("* EmbedContentRequest.content: contents must not be empty".into());
        }
        let dims = dims_of(r.get("outputDimensionality"))?;
        Ok(vector(text.as_bytes(), dims))
    };
    let bad = |m: String| super::gemini::google_error(400, &m);
    if !batch {
        return match one(&req) {
            Ok(v) => {
                s.completed.fetch_add(1, Ordering::SeqCst);
                Json(json!({"embedding": {"values": v}})).into_response()
            }
            Err(e) => bad(e),
        };
    }
    let Some(requests) = req.get("requests").and_then(Value::as_array) else {
        return bad("* BatchEmbedContentsRequest.requests: contents must not be empty".into());
    };
    let want = format!("models/{model}");
    let mut out = Vec::with_capacity(requests.len());
    for (i, r) in requests.iter().enumerate() {
        if r.get("model").and_then(Value::as_str) != Some(want.as_str()) {
            return bad(format!(
                "* BatchEmbedContentsRequest.requests[{i}].model: the model must be {want}"
            ));
        }
        match one(r) {
            Ok(v) => out.push(json!({"values": v})),
            Err(e) => return bad(e),
        }
    }
    if w.has("short") {
        out.pop();
    }
    s.completed.fetch_add(1, Ordering::SeqCst);
    (StatusCode::OK, Json(json!({"embeddings": out}))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_are_deterministic_unit_vectors() {
        let a = vector(b"hello", 40);
        assert_eq!(a.len(), 40);
        assert_eq!(a, vector(b"hello", 40));
        assert_ne!(a, vector(b"hellp", 40));
        let norm: f32 = a.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "{norm}");
    }

    #[test]
    fn inputs_of_every_shape() {
        assert_eq!(openai_inputs(&json!("a b c")).unwrap()[0].1, 3);
        assert_eq!(openai_inputs(&json!(["a", "b"])).unwrap().len(), 2);
        assert_eq!(openai_inputs(&json!([1, 2, 3])).unwrap()[0].1, 3);
        assert_eq!(openai_inputs(&json!([[1], [2, 3]])).unwrap()[1].1, 2);
        assert!(openai_inputs(&json!("")).is_none());
        assert!(openai_inputs(&json!([])).is_none());
        assert!(openai_inputs(&json!(["a", 1])).is_none());
    }
}
