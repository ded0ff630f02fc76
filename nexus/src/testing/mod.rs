//! An OpenAI-compatible mock upstream on 127.0.0.1, for the tests of every crate and for the
//! benchmarks' baseline. Built only with the `testing` feature.
//!
//! Behaviour is chosen per request by dash-separated words in the `model` name, so the same
//! binary serves Rust, C, Python and browser tests:
//!
//! | word | behaviour |
//! |---|---|
//! | (none) | echo the last user message, streamed word by word |
//! | `chunksN` | answer with N chunks `tokI ` instead of the echo |
//! | `delayN` | wait N ms before each chunk |
//! | `nousage` | never send `usage` |
//! | `failN` | answer HTTP N with an OpenAI error body (`Retry-After: 1` on 429) |
//! | `flakyN` | the first N requests for this model answer 503, then succeed |
//! | `stall` | never answer |
//! | `stallmid` | send one chunk, then nothing |
//! | `closemid` | send two chunks, then close without `[DONE]` |
//! | `malformed` | send one chunk, then a malformed one |
//! | `miderror` | send one chunk, then an in-band `{"error":...}` event |
//! | `json` | answer a stream request with a JSON body (not SSE) |
//! | `redirectN` | answer HTTP N (301, 302, 303, 307, 308) to `/mock/secret` on the same mock |
//! | `reasoning` | send `reasoning_content` before the answer (streamed and not) |
//! | `cached` | usage details: 4 prompt tokens from the cache, 2 reasoning tokens |
//! | `notchat` | answer a non-stream request with a JSON object that is not a completion |
//! | `bigeventN` | stream one event of N KiB |
//! | `tools` | when the request has `tools` and its last message is not a `tool` result: call the first tool with `{"q": <echo>}` (`finish_reason: tool_calls`; streamed as `tool_calls` deltas) |
//!
//! The OpenAI chat route also reads the key (`Authorization: Bearer`): one containing
//! `revoked` answers 401 `invalid_api_key` and one containing `ratelimited` answers 429
//! `rate_limit_exceeded` with `Retry-After: 30`, as OpenAI does; `/mock/stats` counts the chat
//! requests per key under `keys`.
//!
//! Every provider kind is served on the same port: OpenAI at `/v1/chat/completions`, Azure at
//! `/openai/deployments/{deployment}/chat/completions` and `/openai/v1/chat/completions`
//! (`azure.rs`), each checking its own credential header.
//!
//! A request's `n` (> 1) is honoured: that many choices, streamed interleaved. Error bodies echo
//! a fake credential and an internal address, as some relays do, so tests can check that tenants
//! never see them.
//!
//! The same server speaks Google's Gemini API too (see `gemini.rs` for its routes and words).
//! Embeddings are served in the OpenAI, Azure and Gemini formats (see `embeddings.rs`).
//! `POST /v1/messages` is Anthropic's Messages API, with its own words (see `anthropic.rs`).
//! Model lists (`GET /v1/models` for OpenAI and Anthropic, `GET /v1beta/models` for Gemini) and a
//! switch that makes them fail are in `models.rs`.
//! OpenAI's Responses API is served at `POST /v1/responses`, reading some of the words above
//! (see `responses.rs`).
//!
//! `GET /mock/stats` returns `{requests, cancelled, completed, connections, last_request,
//! secret_hits}`; `/mock/secret` (any method) stands for an internal address, answering a JSON
//! object and counting `secret_hits`.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod anthropic;
mod azure;
mod embeddings;
mod gemini;
mod models;
mod responses;

/// The behaviour words of a model name (`chunks5-delay20-tools`), as the Anthropic and Gemini
/// mocks read them: the numbered ones, and the rest as flags.
struct Words {
    chunks: Option<usize>,
    delay_ms: u64,
    fail: Option<u16>,
    flags: Vec<String>,
}

impl Words {
    fn parse(model: &str) -> Words {
        let mut w = Words {
            chunks: None,
            delay_ms: 0,
            fail: None,
            flags: vec![],
        };
        for word in model.split('-') {
            let num = |prefix: &str| {
                word.strip_prefix(prefix)
                    .and_then(|n| n.parse::<u64>().ok())
            };
            if let Some(n) = num("chunks") {
                w.chunks = Some(n as usize);
            } else if let Some(n) = num("delay") {
                w.delay_ms = n;
            } else if let Some(n) = num("fail") {
                w.fail = Some(n as u16);
            } else {
                w.flags.push(word.to_owned());
            }
        }
        w
    }

    fn has(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }
}

#[derive(Default)]
struct MockState {
    requests: AtomicU64,
    cancelled: AtomicU64,
    completed: AtomicU64,
    connections: AtomicU64,
    secret_hits: AtomicU64,
    flaky: Mutex<HashMap<String, u64>>,
    /// Chat requests per bearer key.
    keys: Mutex<HashMap<String, u64>>,
    last_request: Mutex<Option<Value>>,
    last_headers: Mutex<Vec<(String, String)>>,
    /// Non-zero: every model list answers this status (`models.rs`).
    models_status: std::sync::atomic::AtomicU16,
}

/// A running mock upstream. Dropping it stops the server.
pub struct MockUpstream {
    addr: std::net::SocketAddr,
    state: Arc<MockState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MockUpstream {
    /// Starts the mock on 127.0.0.1 with a free port, on the current tokio runtime.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_on("127.0.0.1:0").await
    }

    /// Starts the mock on the given address.
    pub async fn start_on(addr: &str) -> std::io::Result<Self> {
        let state = Arc::new(MockState::default());
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let app = router(state.clone());
        // Like real upstreams, send each small SSE write at once (no Nagle delay).
        use axum::serve::ListenerExt;
        let counter = state.clone();
        let listener = listener.tap_io(move |tcp| {
            counter.connections.fetch_add(1, Ordering::SeqCst);
            let _ = tcp.set_nodelay(true);
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(MockUpstream { addr, state, task })
    }

    /// `http://127.0.0.1:PORT`, a provider `base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Chat requests received.
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Streams whose client went away before the end.
    pub fn cancelled(&self) -> u64 {
        self.state.cancelled.load(Ordering::SeqCst)
    }

    /// Streams sent to the end.
    pub fn completed(&self) -> u64 {
        self.state.completed.load(Ordering::SeqCst)
    }

    /// TCP connections accepted (a client that pools its connections opens few).
    pub fn connections(&self) -> u64 {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Requests that reached `/mock/secret` (the stand-in for an internal address).
    pub fn secret_hits(&self) -> u64 {
        self.state.secret_hits.load(Ordering::SeqCst)
    }

    /// The last request body.
    pub fn last_request(&self) -> Option<Value> {
        self.state.last_request.lock().ok().and_then(|g| g.clone())
    }

    /// The last request's headers (lower-case names).
    pub fn last_headers(&self) -> Vec<(String, String)> {
        self.state
            .last_headers
            .lock()
            .map(|g| g.clone())
            .unwrap_or_default()
    }
}

/// The vector the mock answers for a text (`dims` numbers, unit length), so tests can check that
/// an embedding reached the client unchanged.
pub fn mock_embedding(text: &str, dims: usize) -> Vec<f32> {
    embeddings::vector(text.as_bytes(), dims)
}

/// The mock's router, for embedding in another server.
fn router(state: Arc<MockState>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/chat/completions", post(chat))
        .route(
            "/openai/deployments/{deployment}/chat/completions",
            post(azure::deployment_chat),
        )
        .route("/openai/v1/chat/completions", post(azure::v1_chat))
        .route("/v1/messages", post(anthropic::messages))
        .route("/v1/messages/count_tokens", post(anthropic::count_tokens))
        .route("/v1/responses", post(responses::responses))
        .route("/v1/embeddings", post(embeddings::openai))
        .route("/embeddings", post(embeddings::openai))
        .route(
            "/openai/deployments/{deployment}/embeddings",
            post(embeddings::azure_deployment),
        )
        .route("/openai/v1/embeddings", post(embeddings::azure_v1))
        .route("/mock/stats", get(stats))
        .route("/mock/secret", get(secret).post(secret))
        .merge(gemini::routes())
        .merge(models::routes())
        .with_state(state)
}

async fn stats(State(s): State<Arc<MockState>>) -> Json<Value> {
    Json(json!({
        "requests": s.requests.load(Ordering::SeqCst),
        "cancelled": s.cancelled.load(Ordering::SeqCst),
        "completed": s.completed.load(Ordering::SeqCst),
        "connections": s.connections.load(Ordering::SeqCst),
        "last_request": s.last_request.lock().ok().and_then(|g| g.clone()),
        "secret_hits": s.secret_hits.load(Ordering::SeqCst),
        "keys": s.keys.lock().ok().map(|k| k.clone()).unwrap_or_default(),
    }))
}

/// The redirect target: what an attacker would want the hub to fetch and relay.
async fn secret(State(s): State<Arc<MockState>>) -> Json<Value> {
    s.secret_hits.fetch_add(1, Ordering::SeqCst);
    Json(json!({"AccessKeyId": "MOCK-INTERNAL-SECRET", "Code": "Success"}))
}

#[derive(Default)]
struct Plan {
    chunks: Option<usize>,
    delay_ms: u64,
    usage: bool,
    fail: Option<u16>,
    flaky: Option<u64>,
    stall: bool,
    stall_mid: bool,
    close_mid: bool,
    malformed: bool,
    mid_error: bool,
    json: bool,
    redirect: Option<u16>,
    cached: bool,
    reasoning: bool,
    not_chat: bool,
    big_event_kib: Option<usize>,
    tools: bool,
}

fn plan(model: &str) -> Plan {
    let mut p = Plan {
        usage: true,
        ..Plan::default()
    };
    for w in model.split('-') {
        let num = |prefix: &str| w.strip_prefix(prefix).and_then(|n| n.parse::<u64>().ok());
        if let Some(n) = num("chunks") {
            p.chunks = Some(n as usize);
        } else if let Some(n) = num("delay") {
            p.delay_ms = n;
        } else if let Some(n) = num("fail") {
            p.fail = Some(n as u16);
        } else if let Some(n) = num("flaky") {
            p.flaky = Some(n);
        } else if let Some(n) = num("redirect") {
            p.redirect = Some(n as u16);
        } else if let Some(n) = num("bigevent") {
            p.big_event_kib = Some(n as usize);
        } else {
            match w {
                "nousage" => p.usage = false,
                "stall" => p.stall = true,
                "stallmid" => p.stall_mid = true,
                "closemid" => p.close_mid = true,
                "malformed" => p.malformed = true,
                "miderror" => p.mid_error = true,
                "json" => p.json = true,
                "cached" => p.cached = true,
                "reasoning" => p.reasoning = true,
                "notchat" => p.not_chat = true,
                "tools" => p.tools = true,
                _ => {}
            }
        }
    }
    p
}

fn error_response(status: u16, message: &str) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = (
        code,
        Json(json!({"error": {
            "message": format!("{message} (key sk-mock-0123456789abcdef at 10.9.8.7:8443)"),
            "type": "mock_error", "param": null, "code": status}})),
    )
        .into_response();
    if status == 429 {
        r.headers_mut()
            .insert("retry-after", axum::http::HeaderValue::from_static("1"));
    }
    r
}

async fn chat(
    State(s): State<Arc<MockState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    s.requests.fetch_add(1, Ordering::SeqCst);
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return error_response(400, "mock: body is not JSON");
    };
    if let Ok(mut g) = s.last_headers.lock() {
        *g = headers
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect();
    }
    if let Ok(mut g) = s.last_request.lock() {
        *g = Some(req.clone());
    }
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .to_owned();
    if let Ok(mut k) = s.keys.lock() {
        *k.entry(bearer.clone()).or_insert(0) += 1;
    }
    if bearer.contains("revoked") {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": {
                "message": "Incorrect API key provided: sk-rev***oked. You can find your API key at https://platform.openai.com/account/api-keys.",
                "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}})),
        )
            .into_response();
    }
    if bearer.contains("ratelimited") {
        let mut r = (
            StatusCode::TOO_MANY_REQUESTS,
            Json(json!({"error": {
                "message": "Rate limit reached for requests per min (RPM): Limit 3, Used 3, Requested 1.",
                "type": "requests", "param": null, "code": "rate_limit_exceeded"}})),
        )
            .into_response();
        r.headers_mut()
            .insert("retry-after", axum::http::HeaderValue::from_static("30"));
        return r;
    }
    let model = req
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("mock")
        .to_owned();
    let p = plan(&model);
    if let Some(status) = p.fail {
        return error_response(status, &format!("mock failure {status}"));
    }
    if let Some(status) = p.redirect {
        let code = StatusCode::from_u16(status).unwrap_or(StatusCode::FOUND);
        let to = format!(
            "http://{}/mock/secret",
            headers
                .get("host")
                .and_then(|h| h.to_str().ok())
                .unwrap_or("127.0.0.1")
        );
        return Response::builder()
            .status(code)
            .header("location", to)
            .body(Body::empty())
            .unwrap_or_else(|_| error_response(500, "mock: response build failed"));
    }
    if let Some(n) = p.flaky {
        let seen = {
            let Ok(mut m) = s.flaky.lock() else {
                return error_response(500, "lock");
            };
            let c = m.entry(model.clone()).or_insert(0);
            *c += 1;
            *c
        };
        if seen <= n {
            return error_response(503, "mock: flaky upstream");
        }
    }
    if p.stall {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    let messages = req
        .get("messages")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let echo = messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .and_then(|m| m.get("content"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let pieces: Vec<String> = match p.chunks {
        Some(n) => (0..n).map(|i| format!("tok{i} ")).collect(),
        None if echo.is_empty() => vec!["(empty)".to_owned()],
        None => echo.split_inclusive(' ').map(str::to_owned).collect(),
    };
    let prompt_tokens = messages.len() as u64 * 10;
    let completion_tokens = pieces.len() as u64;
    let usage = json!({"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                       "total_tokens": prompt_tokens + completion_tokens});
    let mut usage = usage;
    if p.cached {
        usage["prompt_tokens_details"] = json!({"cached_tokens": 4});
        usage["completion_tokens_details"] = json!({"reasoning_tokens": 2});
    }
    let stream = req.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let n = req
        .get("n")
        .and_then(Value::as_u64)
        .unwrap_or(1)
        .clamp(1, 16) as usize;
    let thinking = "Let me think about this carefully.";
    let id = "chatcmpl-mock";
    let created = 1_700_000_000u64;
    // A tool call, as OpenAI sends one, when the model was given tools and has no result yet.
    let tool_name = req
        .pointer("/tools/0/function/name")
        .and_then(Value::as_str)
        .filter(|_| p.tools)
        .filter(|_| messages.last().and_then(|m| m.get("role")) != Some(&json!("tool")))
        .map(str::to_owned);
    if let Some(name) = tool_name {
        let args = json!({"q": echo}).to_string();
        let call_id = "call_mock_1";
        s.completed.fetch_add(1, Ordering::SeqCst);
        if !stream {
            let mut v = json!({
                "id": id, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "finish_reason": "tool_calls", "logprobs": null, "message": {
                    "role": "assistant", "content": null, "tool_calls": [{"id": call_id,
                        "type": "function", "function": {"name": name, "arguments": args}}]}}],
            });
            if p.usage {
                v["usage"] = usage;
            }
            return Json(v).into_response();
        }
        let half = args.len() / 2;
        let chunk = |delta: Value, finish: Value| {
            format!(
                "data: {}\n\n",
                json!({"id": id, "object": "chat.completion.chunk",
                "created": created, "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            )
        };
        let mut events = vec![
            chunk(
                json!({"role": "assistant", "content": null, "tool_calls": [{"index": 0,
                "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}]}),
                Value::Null,
            ),
            chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": &args[..half]}}]}),
                Value::Null,
            ),
            chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": &args[half..]}}]}),
                Value::Null,
            ),
            chunk(json!({}), json!("tool_calls")),
        ];
        if p.usage
            && req
                .pointer("/stream_options/include_usage")
                .and_then(Value::as_bool)
                == Some(true)
        {
            events.push(format!(
                "data: {}\n\n",
                json!({"id": id, "object": "chat.completion.chunk",
                "created": created, "model": model, "choices": [], "usage": usage})
            ));
        }
        events.push("data: [DONE]\n\n".to_owned());
        return Response::builder()
            .header("content-type", "text/event-stream")
            .body(Body::from(events.concat()))
            .unwrap_or_else(|_| error_response(500, "mock: response build failed"));
    }
    if p.not_chat && !stream {
        return Json(json!({"status": "ok", "items": [1, 2, 3]})).into_response();
    }
    if !stream || p.json {
        let choices: Vec<Value> = (0..n)
            .map(|i| {
                let mut m = json!({"role": "assistant", "content": pieces.concat()});
                if p.reasoning {
                    m["reasoning_content"] = thinking.into();
                }
                json!({"index": i, "message": m, "logprobs": null, "finish_reason": "stop"})
            })
            .collect();
        let mut v = json!({
            "id": id, "object": "chat.completion", "created": created, "model": model,
            "choices": choices,
        });
        if let Some(tools) = req.get("tools") {
            v["mock_saw_tools"] = tools.clone();
        }
        if p.usage {
            v["usage"] = usage;
        }
        s.completed.fetch_add(1, Ordering::SeqCst);
        let mut r = Json(v).into_response();
        r.headers_mut().insert(
            "x-ratelimit-remaining-requests",
            axum::http::HeaderValue::from_static("99"),
        );
        return r;
    }
    let include_usage = p.usage
        && req
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            .unwrap_or(false);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(4);
    let state = s.clone();
    let pieces_len = pieces.len() + usize::from(p.malformed || p.mid_error);
    tokio::spawn(async move {
        let mut events: Vec<String> = Vec::with_capacity(pieces.len() + 3);
        events.push(format!(
            "data: {}\n\n",
            json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                   "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]})
        ));
        if let Some(kib) = p.big_event_kib {
            events.push(format!(
                "data: {}\n\n",
                json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                       "choices": [{"index": 0, "delta": {"content": "x".repeat(kib * 1024)}, "finish_reason": null}]})
            ));
        }
        if p.reasoning {
            for w in thinking.split_inclusive(' ') {
                events.push(format!(
                    "data: {}\n\n",
                    json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                           "choices": [{"index": 0, "delta": {"reasoning_content": w}, "finish_reason": null}]})
                ));
            }
        }
        for (i, piece) in pieces.iter().enumerate() {
            for extra in 1..n {
                events.push(format!(
                    "data: {}\n\n",
                    json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                           "choices": [{"index": extra, "delta": {"content": piece}, "finish_reason": null}]})
                ));
            }
            if i == 1 && p.malformed {
                events.push("data: {\"choices\": [oops\n\n".to_owned());
            }
            if i == 1 && p.mid_error {
                events.push(format!("data: {}\n\n", json!({"error": {"message": "mock: upstream failed mid-stream", "type": "server_error"}})));
            }
            events.push(format!(
                "data: {}\n\n",
                json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                       "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": null}]})
            ));
        }
        events.push(format!(
            "data: {}\n\n",
            json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                   "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        ));
        if include_usage {
            events.push(format!(
                "data: {}\n\n",
                json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                       "choices": [], "usage": usage})
            ));
        }
        events.push("data: [DONE]\n\n".to_owned());
        // A keep-alive comment first: relays must tolerate it.
        if tx
            .send(Ok(bytes::Bytes::from_static(b": keep-alive\n\n")))
            .await
            .is_err()
        {
            state.cancelled.fetch_add(1, Ordering::SeqCst);
            return;
        }
        // Pacing applies to the generated events (content and finish); the usage chunk and
        // [DONE] follow the finish at once, as real upstreams send them.
        let paced = pieces_len + 2;
        for (i, ev) in events.into_iter().enumerate() {
            if p.delay_ms > 0 && i > 0 && i < paced {
                tokio::time::sleep(Duration::from_millis(p.delay_ms)).await;
            }
            if (p.stall_mid && i == 2) || (p.close_mid && i == 3) {
                if p.stall_mid {
                    // Hold the connection open without sending; notice the client leaving.
                    tx.closed().await;
                    state.cancelled.fetch_add(1, Ordering::SeqCst);
                }
                return;
            }
            if tx.send(Ok(bytes::Bytes::from(ev))).await.is_err() {
                state.cancelled.fetch_add(1, Ordering::SeqCst);
                return;
            }
        }
        state.completed.fetch_add(1, Ordering::SeqCst);
    });
    let body = Body::from_stream(tokio_stream_from(rx));
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(body)
        .unwrap_or_else(|_| error_response(500, "mock: response build failed"))
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<bytes::Bytes, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
