//! The mock's Anthropic Messages API: `POST /v1/messages`, written from Anthropic's API
//! reference (request checks, answer shape, the SSE event sequence, the error body).
//!
//! It refuses what Anthropic refuses and the translation must avoid: a missing `x-api-key` or
//! `anthropic-version` (401 `authentication_error`), a missing `max_tokens`, a `system` role
//! inside `messages` (accepted only under a `mid-conversation-*` beta in `anthropic-beta`, as
//! Claude Code sends it), turns that do not alternate, and empty text blocks (400
//! `invalid_request_error`). Words in the model name choose the answer, like the OpenAI mock:
//!
//! | word | behaviour |
//! |---|---|
//! | (none) | echo the last user text, streamed word by word |
//! | `chunksN` | answer N pieces `tokI ` instead |
//! | `delayN` | wait N ms before each content event |
//! | `failN` | answer HTTP N with Anthropic's error body (529 `overloaded_error`) |
//! | `miderror` | after the first text delta, an `event: error` (`overloaded_error`) |
//! | `tools` | after a short text, a `tool_use` block per request tool (at most two) with input `{"q": ...}` |
//! | `thinking` | a thinking block (with its signature) before the text |
//! | `cache` | usage with `cache_read_input_tokens` 100 and `cache_creation_input_tokens` 20 |
//! | `stopseq` | `stop_reason: stop_sequence` |
//! | `maxtok` | `stop_reason: max_tokens` |

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::{tokio_stream_from, MockState};

const THINKING: &str = "The user wants an answer.";

#[derive(Default)]
struct Plan {
    chunks: Option<usize>,
    delay_ms: u64,
    fail: Option<u16>,
    mid_error: bool,
    tools: bool,
    thinking: bool,
    cache: bool,
    stop_seq: bool,
    max_tok: bool,
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
        stop_seq: w.has("stopseq"),
        max_tok: w.has("maxtok"),
    }
}

/// Anthropic's error `type` for an HTTP status.
fn error_type(status: u16) -> &'static str {
    match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        _ => "api_error",
    }
}

fn error_response(status: u16, message: &str) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = (
        code,
        Json(json!({"type": "error", "error": {"type": error_type(status), "message": message}})),
    )
        .into_response();
    if status == 429 {
        r.headers_mut()
            .insert("retry-after", axum::http::HeaderValue::from_static("1"));
    }
    r
}

/// What Anthropic would refuse in a request body.
fn check(req: &Value, system_messages: bool) -> Result<(), String> {
    if req.get("max_tokens").and_then(Value::as_u64).is_none() {
        return Err("max_tokens: Field required".into());
    }
    let msgs = req
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("messages: Field required")?;
    let mut last: Option<&str> = None;
    for (i, m) in msgs.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        if role == "system" && system_messages {
            continue;
        }
        if role != "user" && role != "assistant" {
            return Err(format!(
                "messages.{i}.role: Input should be 'user' or 'assistant'"
            ));
        }
        if last == Some(role) {
            return Err(format!(
                "messages.{i}: roles must alternate between user and assistant"
            ));
        }
        last = Some(role);
        if let Some(blocks) = m.get("content").and_then(Value::as_array) {
            if blocks.is_empty() {
                return Err(format!(
                    "messages.{i}: all messages must have non-empty content"
                ));
            }
            for b in blocks {
                let text = b.get("text").and_then(Value::as_str);
                if b.get("type").and_then(Value::as_str) == Some("text")
                    && text.is_none_or(|t| t.trim().is_empty())
                {
                    return Err(format!(
                        "messages.{i}: text content blocks must be non-empty"
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The last user message's text (its last text block).
fn last_user_text(req: &Value) -> String {
    let Some(m) = req
        .get("messages")
        .and_then(Value::as_array)
        .and_then(|ms| ms.iter().rev().find(|m| m["role"] == "user"))
    else {
        return String::new();
    };
    match &m["content"] {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .rev()
            .find_map(|b| (b["type"] == "text").then(|| b["text"].as_str()).flatten())
            .unwrap_or("")
            .to_owned(),
        _ => String::new(),
    }
}

fn sse(name: &str, data: Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

/// Counts the request, keeps its headers and body for the tests, and checks Anthropic's
/// credential and version headers.
#[allow(clippy::result_large_err)]
fn record(s: &MockState, headers: &HeaderMap, body: &[u8]) -> Result<Value, Response> {
    s.requests.fetch_add(1, Ordering::SeqCst);
    if let Ok(mut g) = s.last_headers.lock() {
        *g = headers
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect();
    }
    let Ok(req) = serde_json::from_slice::<Value>(body) else {
        return Err(error_response(400, "mock: body is not JSON"));
    };
    if let Ok(mut g) = s.last_request.lock() {
        *g = Some(req.clone());
    }
    for h in ["x-api-key", "anthropic-version"] {
        if headers.get(h).is_none() {
            return Err(error_response(401, &format!("mock: missing {h} header")));
        }
    }
    Ok(req)
}

/// `POST /v1/messages/count_tokens`: `{"input_tokens": N}` with N = 1000 + the characters of the
/// request's messages, system and tools over 4: a count no estimator would make, so tests can
/// tell it from the hub's. Like Anthropic's endpoint it refuses `max_tokens` and `stream`
/// (extra inputs) and needs `model` and `messages`.
pub(super) async fn count_tokens(
    State(s): State<Arc<MockState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let req = match record(&s, &headers, &body) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    for f in ["max_tokens", "stream", "temperature", "metadata"] {
        if req.get(f).is_some() {
            return error_response(400, &format!("{f}: Extra inputs are not permitted"));
        }
    }
    if !req["model"].is_string() || !req["messages"].is_array() {
        return error_response(400, "model and messages: Field required");
    }
    let model = req["model"].as_str().unwrap_or("");
    if let Some(status) = plan(model).fail {
        return error_response(status, &format!("mock failure {status}"));
    }
    let chars: usize = ["messages", "system", "tools"]
        .iter()
        .filter_map(|k| req.get(*k))
        .map(|v| v.to_string().len())
        .sum();
    axum::Json(json!({"input_tokens": 1000 + chars / 4})).into_response()
}

pub(super) async fn messages(
    State(s): State<Arc<MockState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let req = match record(&s, &headers, &body) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let betas = headers
        .get("anthropic-beta")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let system_messages = betas
        .split(',')
        .any(|b| b.trim().starts_with("mid-conversation-"));
    if let Err(why) = check(&req, system_messages) {
        return error_response(400, &why);
    }
    let model = req["model"].as_str().unwrap_or("mock").to_owned();
    let p = plan(&model);
    if let Some(status) = p.fail {
        return error_response(status, &format!("mock failure {status}"));
    }
    let echo = last_user_text(&req);
    // A forced tool choice makes Anthropic answer with the tool call alone, no text before it.
    let forced = match req.pointer("/tool_choice/type").and_then(Value::as_str) {
        Some("tool") => req.pointer("/tool_choice/name").and_then(Value::as_str),
        Some("any") => Some(""),
        _ => None,
    };
    let pieces: Vec<String> = match p.chunks {
        Some(n) => (0..n).map(|i| format!("tok{i} ")).collect(),
        None if p.tools && forced.is_some() => vec![],
        None if p.tools => vec!["Let me check.".to_owned()],
        None if echo.is_empty() => vec!["(empty)".to_owned()],
        None => echo.split_inclusive(' ').map(str::to_owned).collect(),
    };
    let tools: Vec<String> = if p.tools {
        let names = req
            .get("tools")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|t| t["name"].as_str());
        match forced {
            Some(n) if !n.is_empty() => names
                .filter(|t| *t == n)
                .take(1)
                .map(str::to_owned)
                .collect(),
            _ => names.take(2).map(str::to_owned).collect(),
        }
    } else {
        vec![]
    };
    let stop_reason = if !tools.is_empty() {
        "tool_use"
    } else if p.max_tok {
        "max_tokens"
    } else if p.stop_seq {
        "stop_sequence"
    } else {
        "end_turn"
    };
    let stop_sequence = p.stop_seq.then(|| {
        req.pointer("/stop_sequences/0")
            .cloned()
            .unwrap_or_else(|| json!("STOP"))
    });
    let input_tokens = req["messages"].as_array().map_or(0, Vec::len) as u64 * 10;
    let output_tokens = (pieces.len() + tools.len() * 5) as u64;
    let mut usage = json!({"input_tokens": input_tokens, "output_tokens": output_tokens});
    if p.cache {
        usage["cache_read_input_tokens"] = 100.into();
        usage["cache_creation_input_tokens"] = 20.into();
    }
    let tool_input = |i: usize| json!({"q": format!("{echo} {i}")});
    let id = "msg_mock";

    if !req["stream"].as_bool().unwrap_or(false) {
        let mut content = vec![];
        if p.thinking {
            content
                .push(json!({"type": "thinking", "thinking": THINKING, "signature": "mock-sig"}));
        }
        if !pieces.is_empty() {
            content.push(json!({"type": "text", "text": pieces.concat()}));
        }
        for (i, name) in tools.iter().enumerate() {
            content.push(json!({"type": "tool_use", "id": format!("toolu_mock{i}"),
                                "name": name, "input": tool_input(i)}));
        }
        s.completed.fetch_add(1, Ordering::SeqCst);
        return Json(json!({
            "id": id, "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": stop_reason, "stop_sequence": stop_sequence,
            "usage": usage,
        }))
        .into_response();
    }

    let mut start_usage = usage.clone();
    start_usage["output_tokens"] = 1.into();
    let mut events = vec![
        sse(
            "message_start",
            json!({"type": "message_start", "message": {"id": id, "type": "message",
                "role": "assistant", "model": model, "content": [], "stop_reason": null,
                "stop_sequence": null, "usage": start_usage}}),
        ),
        sse("ping", json!({"type": "ping"})),
    ];
    let mut index = 0;
    let block_delta = |index: usize, delta: Value| {
        sse(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": index, "delta": delta}),
        )
    };
    let block_stop = |index: usize| {
        sse(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        )
    };
    if p.thinking {
        events.push(sse("content_block_start", json!({"type": "content_block_start",
            "index": index, "content_block": {"type": "thinking", "thinking": "", "signature": ""}})));
        for w in THINKING.split_inclusive(' ') {
            events.push(block_delta(
                index,
                json!({"type": "thinking_delta", "thinking": w}),
            ));
        }
        events.push(block_delta(
            index,
            json!({"type": "signature_delta", "signature": "mock-sig"}),
        ));
        events.push(block_stop(index));
        index += 1;
    }
    if !pieces.is_empty() {
        events.push(sse(
            "content_block_start",
            json!({"type": "content_block_start", "index": index,
                   "content_block": {"type": "text", "text": ""}}),
        ));
        for (i, piece) in pieces.iter().enumerate() {
            events.push(block_delta(
                index,
                json!({"type": "text_delta", "text": piece}),
            ));
            if i == 0 && p.mid_error {
                events.push(sse(
                    "error",
                    json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
                ));
            }
        }
        events.push(block_stop(index));
        index += 1;
    }
    for (i, name) in tools.iter().enumerate() {
        events.push(sse(
            "content_block_start",
            json!({"type": "content_block_start",
            "index": index, "content_block": {"type": "tool_use", "id": format!("toolu_mock{i}"),
            "name": name, "input": {}}}),
        ));
        // The input JSON in fragments that split keys and values, as Anthropic sends it.
        let whole = tool_input(i).to_string();
        let cut = whole.len() / 2;
        let cut = (cut..whole.len())
            .find(|c| whole.is_char_boundary(*c))
            .unwrap_or(whole.len());
        for frag in ["", &whole[..cut], &whole[cut..]] {
            events.push(block_delta(
                index,
                json!({"type": "input_json_delta", "partial_json": frag}),
            ));
        }
        events.push(block_stop(index));
        index += 1;
    }
    events.push(sse(
        "message_delta",
        json!({"type": "message_delta",
               "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
               "usage": {"output_tokens": output_tokens}}),
    ));
    events.push(sse("message_stop", json!({"type": "message_stop"})));

    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(4);
    let state = s.clone();
    tokio::spawn(async move {
        for (i, ev) in events.into_iter().enumerate() {
            if p.delay_ms > 0 && i > 1 {
                tokio::time::sleep(Duration::from_millis(p.delay_ms)).await;
            }
            let is_error = ev.starts_with("event: error");
            if tx.send(Ok(bytes::Bytes::from(ev))).await.is_err() {
                state.cancelled.fetch_add(1, Ordering::SeqCst);
                return;
            }
            if is_error {
                // Anthropic ends the stream after an error event.
                return;
            }
        }
        state.completed.fetch_add(1, Ordering::SeqCst);
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(Body::from_stream(tokio_stream_from(rx)))
        .unwrap_or_else(|_| error_response(500, "mock: response build failed"))
}
