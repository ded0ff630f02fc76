//! The mock's Gemini API: `POST /v1beta/models/{model}:generateContent` and
//! `:streamGenerateContent?alt=sse` (also under `/v1/`, which the google-genai SDK uses).
//!
//! It wants an `x-goog-api-key` header (403 `PERMISSION_DENIED` without one) and answers in
//! Google's shapes, chosen by dash-separated words in the model name of the URL:
//!
//! | word | behaviour |
//! |---|---|
//! | (none) | echo the text of the last user turn, streamed word by word |
//! | `chunksN` | N chunks `tokI ` instead of the echo |
//! | `delayN` | wait N ms before each chunk |
//! | `failN` | answer HTTP N with a Google error body (429 is `RESOURCE_EXHAUSTED`) |
//! | `miderror` | stream one chunk, then an in-band `{"error": ...}` event |
//! | `tools` | call the first declared function (two declared: call both, in one turn); each call carries a `thoughtSignature` |
//! | `strictsig` | refuse (400), as Gemini 3 does, a history whose function calls lack their `thoughtSignature` |
//! | `thinking` | a `thought: true` part first, counted in `thoughtsTokenCount` |
//! | `cache` | report 5 `cachedContentTokenCount` |
//! | `safety` | no content, `finishReason: SAFETY` |
//! | `maxtok` | `finishReason: MAX_TOKENS` |
//! | `blocked` | no candidates, `promptFeedback.blockReason: SAFETY` |
//!
//! `generationConfig.candidateCount` > 1 gives that many candidates. Usage is sent on every
//! stream chunk as running totals, as Gemini does, and the stream ends after the chunk with
//! `finishReason` (no terminal event).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::{tokio_stream_from, MockState};

const THOUGHT: &str = "Let me think about this.";

/// The Gemini routes of the mock.
pub(super) fn routes() -> Router<Arc<MockState>> {
    Router::new()
        .route("/v1beta/models/{*rest}", post(generate))
        .route("/v1/models/{*rest}", post(generate))
}

/// Google's error body: `{"error": {code, message, status}}`.
pub(super) fn google_error(code: u16, message: &str) -> Response {
    let status = match code {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "INTERNAL",
    };
    let http = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        http,
        Json(json!({"error": {
            "code": code,
            "message": format!("{message} (key AIza-mock-0123456789 at 10.9.8.7:8443)"),
            "status": status,
        }})),
    )
        .into_response()
}

#[derive(Default)]
struct Plan {
    chunks: Option<usize>,
    delay_ms: u64,
    fail: Option<u16>,
    mid_error: bool,
    tools: bool,
    thinking: bool,
    cache: bool,
    safety: bool,
    max_tokens: bool,
    blocked: bool,
    strict_signatures: bool,
}

fn plan(model: &str) -> Plan {
    let w = super::Words::parse(model);
    Plan {
        chunks: w.chunks,
        delay_ms: w.delay_ms,
        fail: w.fail,
        mid_error: w.has("miderror"),
        tools: w.has("tools"),
        thinking: w.has("thinking"),
        cache: w.has("cache"),
        safety: w.has("safety"),
        max_tokens: w.has("maxtok"),
        blocked: w.has("blocked"),
        strict_signatures: w.has("strictsig"),
    }
}

async fn generate(
    State(s): State<Arc<MockState>>,
    Path(rest): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    s.requests.fetch_add(1, Ordering::SeqCst);
    if let Ok(mut g) = s.last_headers.lock() {
        *g = headers
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect();
    }
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return google_error(400, "mock: body is not JSON");
    };
    if let Some((model, action @ ("batchEmbedContents" | "embedContent"))) = rest.rsplit_once(':') {
        if headers.get("x-goog-api-key").is_none_or(|k| k.is_empty()) {
            return google_error(403, "Method doesn't allow unregistered callers");
        }
        let batch = action == "batchEmbedContents";
        return super::embeddings::gemini(&s, model, batch, req).await;
    }
    if let Ok(mut g) = s.last_request.lock() {
        *g = Some(req.clone());
    }
    let key = headers
        .get("x-goog-api-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if key.is_empty() {
        return google_error(403, "Method doesn't allow unregistered callers");
    }
    let Some((model, action)) = rest.rsplit_once(':') else {
        return google_error(404, "mock: no method in the URL");
    };
    let stream = match action {
        "generateContent" => false,
        "streamGenerateContent" => true,
        _ => return google_error(404, "mock: unknown method"),
    };
    if stream && !uri.query().unwrap_or("").split('&').any(|q| q == "alt=sse") {
        return google_error(400, "mock: streams are served with alt=sse only");
    }
    let p = plan(model);
    if let Some(code) = p.fail {
        return google_error(code, &format!("mock failure {code}"));
    }
    let contents = req
        .get("contents")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let unsigned = contents
        .iter()
        .filter_map(|c| c.get("parts").and_then(Value::as_array))
        .flatten()
        .any(|p| p.get("functionCall").is_some() && p.get("thoughtSignature").is_none());
    if p.strict_signatures && unsigned {
        return google_error(
            400,
            "Function call is missing a thought_signature in functionCall parts",
        );
    }
    let echo: String = contents
        .iter()
        .rev()
        .find(|c| c.get("role").and_then(Value::as_str) == Some("user"))
        .and_then(|c| c.get("parts"))
        .and_then(Value::as_array)
        .map(|parts| {
            parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    let pieces: Vec<String> = match p.chunks {
        Some(n) => (0..n).map(|i| format!("tok{i} ")).collect(),
        None if echo.is_empty() => vec!["(empty)".to_owned()],
        None => echo.split_inclusive(' ').map(str::to_owned).collect(),
    };
    let n = req
        .pointer("/generationConfig/candidateCount")
        .and_then(Value::as_u64)
        .unwrap_or(1)
        .clamp(1, 8);
    let calls: Vec<Value> = if p.tools {
        req.pointer("/tools/0/functionDeclarations")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .take(2)
            .enumerate()
            .map(|(i, d)| {
                json!({"functionCall": {"name": d.get("name").cloned().unwrap_or(Value::Null),
                                        "args": {"city": "Oslo", "n": i}},
                       "thoughtSignature": format!("c2lnLW{i}+/Q==")})
            })
            .collect()
    } else {
        vec![]
    };
    // Each step is one stream chunk's parts; a non-stream answer has all of them.
    let mut steps: Vec<Vec<Value>> = Vec::new();
    if p.thinking {
        steps.push(vec![json!({"text": THOUGHT, "thought": true})]);
    }
    if !p.safety {
        if calls.is_empty() {
            steps.extend(pieces.iter().map(|t| vec![json!({"text": t})]));
        } else {
            steps.push(calls);
        }
    }
    let prompt =
        contents.len() as u64 * 10 + u64::from(req.get("systemInstruction").is_some()) * 10;
    let thoughts = if p.thinking { 5 } else { 0 };
    let usage = |out: u64| {
        let mut u = json!({"promptTokenCount": prompt, "candidatesTokenCount": out * n,
                           "totalTokenCount": prompt + out * n + thoughts});
        if p.thinking {
            u["thoughtsTokenCount"] = thoughts.into();
        }
        if p.cache {
            u["cachedContentTokenCount"] = 5.into();
        }
        u
    };
    let finish = if p.safety {
        "SAFETY"
    } else if p.max_tokens {
        "MAX_TOKENS"
    } else {
        "STOP"
    };
    let response_id = "mockresp1";
    let answer = |parts: &[Value], last: bool, out: u64| -> Value {
        if p.blocked {
            return json!({"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": usage(0),
                          "responseId": response_id});
        }
        let candidates: Vec<Value> = (0..n)
            .map(|k| {
                let mut c = json!({"index": k});
                if !parts.is_empty() {
                    c["content"] = json!({"role": "model", "parts": parts});
                }
                if last {
                    c["finishReason"] = finish.into();
                }
                c
            })
            .collect();
        json!({"candidates": candidates, "usageMetadata": usage(out),
               "modelVersion": model, "responseId": response_id})
    };
    let out_tokens = pieces.len() as u64;
    if !stream {
        let mut parts: Vec<Value> = Vec::new();
        for part in steps.iter().flatten() {
            // Gemini answers one text part where a stream has many.
            match (parts.last_mut(), part.get("text").and_then(Value::as_str)) {
                (Some(last), Some(t))
                    if part.get("thought").is_none()
                        && last.get("thought").is_none()
                        && last.get("text").is_some() =>
                {
                    let joined = format!("{}{t}", last["text"].as_str().unwrap_or(""));
                    last["text"] = joined.into();
                }
                _ => parts.push(part.clone()),
            }
        }
        s.completed.fetch_add(1, Ordering::SeqCst);
        return Json(answer(&parts, true, out_tokens)).into_response();
    }
    let mut events = Vec::new();
    let total = steps.len().max(1);
    let mut produced = 0u64;
    for i in 0..total {
        let parts = steps.get(i).map(Vec::as_slice).unwrap_or_default();
        if parts
            .iter()
            .any(|p| p.get("text").is_some() && p.get("thought").is_none())
        {
            produced += 1;
        }
        events.push(answer(parts, i + 1 == total, produced).to_string());
        if i == 0 && p.mid_error {
            events.push(
                json!({"error": {"code": 500, "message": "mock: upstream failed mid-stream",
                                 "status": "INTERNAL"}})
                .to_string(),
            );
            break;
        }
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(4);
    let state = s.clone();
    tokio::spawn(async move {
        for (i, ev) in events.into_iter().enumerate() {
            if p.delay_ms > 0 && i > 0 {
                tokio::time::sleep(Duration::from_millis(p.delay_ms)).await;
            }
            let frame = bytes::Bytes::from(format!("data: {ev}\r\n\r\n"));
            if tx.send(Ok(frame)).await.is_err() {
                state.cancelled.fetch_add(1, Ordering::SeqCst);
                return;
            }
        }
        state.completed.fetch_add(1, Ordering::SeqCst);
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(tokio_stream_from(rx)))
        .unwrap_or_else(|_| google_error(500, "mock: response build failed"))
}
