//! `/ws/chat`: the admin chat tester over WebSocket (protocol in docs/API.md).
//!
//! One turn at a time per socket; `{"type":"cancel"}` stops the running turn. Each turn is one
//! core stream, so it is counted exactly once in stats, cancelled or not.

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::extract::Admin;
use crate::AppState;
use nexus::ingress::messages::{MessagesRequest, MessagesStream};
use nexus::ingress::responses::{ResponsesRequest, ResponsesStream};
use nexus::ingress::SseEvent;
use nexus::openai::{ChatChunk, ChatRequest};
use nexus::stats::RequestSource;
use nexus::usage::Endpoint;
use nexus::{Caller, ChatStream, RequestContext};

/// Routes of this group.
pub fn router() -> Router<AppState> {
    Router::new().route("/ws/chat", get(upgrade))
}

async fn upgrade(_: Admin, State(st): State<AppState>, ws: WebSocketUpgrade) -> Response {
    ws.max_message_size(st.cfg.body_limit)
        .on_upgrade(move |socket| session(st, socket))
}

#[derive(Debug, Deserialize)]
struct Incoming {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    provider_id: Option<i64>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    messages: Option<Vec<Value>>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    conversation_id: Option<String>,
    /// The client API to test through: `chat` (default), `messages` (Anthropic) or `responses`.
    #[serde(default)]
    format: Option<String>,
    // The original system's shape: {message, provider_id, model_name}.
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    model_name: Option<String>,
}

/// A turn's stream, in the format the tester picked.
enum TurnStream {
    Chat(ChatStream),
    Messages(MessagesStream),
    Responses(ResponsesStream),
}

/// One step of a turn: a chat chunk, or an event of the picked format.
enum Step {
    Chunk(nexus::Result<ChatChunk>),
    Event(SseEvent),
}

impl TurnStream {
    fn chat(&self) -> &ChatStream {
        match self {
            TurnStream::Chat(s) => s,
            TurnStream::Messages(s) => s.chat_stream(),
            TurnStream::Responses(s) => s.chat_stream(),
        }
    }

    async fn next(&mut self) -> Option<Step> {
        match self {
            TurnStream::Chat(s) => s.next().await.map(Step::Chunk),
            TurnStream::Messages(s) => s.next().await.map(Step::Event),
            TurnStream::Responses(s) => s.next().await.map(Step::Event),
        }
    }
}

/// The answer text an event of the Messages or Responses format carries.
fn event_text(e: &SseEvent) -> Option<&str> {
    match e.name() {
        "content_block_delta" => e.data.pointer("/delta/text").and_then(Value::as_str),
        "response.output_text.delta" => e.data["delta"].as_str(),
        _ => None,
    }
}

/// The in-band failure an event of the Messages or Responses format reports.
fn event_error(e: &SseEvent) -> Option<Value> {
    match e.name() {
        "error" => Some(e.data["error"].clone()),
        "response.failed" => Some(e.data["response"]["error"].clone()),
        _ => None,
    }
}

struct Turn {
    stream: TurnStream,
    compat: bool,
    text: String,
    /// Set when the format's stream reported a failure: the turn ends with an error frame.
    failed: Option<Value>,
}

fn error_frame(e: &nexus::Error) -> Value {
    let (_, body) = crate::error::render(e);
    json!({"type": "error", "error": body["error"]})
}

async fn send(socket: &mut WebSocket, v: Value) -> bool {
    socket
        .send(Message::Text(v.to_string().into()))
        .await
        .is_ok()
}

fn done_frame(turn: &Turn, cancelled: bool) -> Value {
    let stream = turn.stream.chat();
    let s = stream.summary();
    let usage = s.as_ref().map(|s| {
        json!({
            "prompt_tokens": s.usage.prompt_tokens,
            "completion_tokens": s.usage.completion_tokens,
            "total_tokens": s.usage.prompt_tokens + s.usage.completion_tokens,
            "source": s.usage_source,
        })
    });
    json!({
        "type": "done",
        "finish_reason": if cancelled { Some("cancelled".to_owned()) } else { s.as_ref().and_then(|s| s.finish_reason.clone()) },
        "usage": usage,
        "conversation_id": stream.conversation_id,
        "provider_id": stream.provider_id,
        "latency_ms": s.as_ref().map(|s| s.latency_ms),
        "ttft_ms": s.as_ref().and_then(|s| s.ttft_ms),
    })
}

async fn next_item(turn: &mut Option<Turn>) -> Option<Step> {
    match turn {
        Some(t) => t.stream.next().await,
        None => std::future::pending().await,
    }
}

async fn start_turn(st: &AppState, msg: Incoming) -> nexus::Result<Turn> {
    let compat = msg.message.is_some() && msg.messages.is_none();
    let model = msg
        .model
        .or(msg.model_name)
        .ok_or_else(|| nexus::Error::invalid_param("model", "`model` is required"))?;
    let messages = match (msg.messages, msg.message) {
        (Some(m), _) => m,
        (None, Some(text)) => vec![json!({"role": "user", "content": text})],
        (None, None) => {
            return Err(nexus::Error::invalid_param(
                "messages",
                "`messages` is required",
            ))
        }
    };
    let format = msg.format.as_deref().unwrap_or("chat");
    let caller = Caller::Admin {
        provider_id: msg.provider_id,
    };
    let ctx = |endpoint| RequestContext {
        request_id: None,
        conversation_id: msg
            .conversation_id
            .clone()
            .filter(|c| !c.is_empty() && c.len() <= 128),
        source: RequestSource::Ws,
        endpoint,
    };
    let temperature = msg.temperature.or(compat.then_some(0.7));
    let limits = st.hub.request_limits();
    let stream = match format {
        "chat" => {
            let mut req = ChatRequest {
                model,
                messages,
                stream: Some(true),
                stream_options: None,
                extra: Default::default(),
            };
            if let Some(t) = temperature {
                req.extra.insert("temperature".into(), json!(t));
            }
            if let Some(m) = msg.max_tokens {
                req.extra.insert("max_tokens".into(), json!(m));
            }
            TurnStream::Chat(st.hub.chat_stream(caller, req, ctx(Endpoint::Chat)).await?)
        }
        // The conversation as the format's own client would send it, parsed as the HTTP route
        // parses it: the tester sees what a Claude Code or Codex user would.
        "messages" => {
            let (system, rest): (Vec<Value>, Vec<Value>) =
                messages.into_iter().partition(|m| m["role"] == "system");
            let system: Vec<&str> = system
                .iter()
                .filter_map(|m| m["content"].as_str())
                .collect();
            let mut body = json!({"model": model, "stream": true, "messages": rest,
                "max_tokens": msg.max_tokens.unwrap_or(1024)});
            if !system.is_empty() {
                body["system"] = system.join("\n\n").into();
            }
            if let Some(t) = temperature {
                body["temperature"] = json!(t);
            }
            let req = MessagesRequest::parse(body.to_string().as_bytes(), limits, None)?;
            TurnStream::Messages(
                st.hub
                    .messages_stream(caller, req, ctx(Endpoint::Messages))
                    .await?,
            )
        }
        "responses" => {
            let mut body = json!({"model": model, "stream": true, "store": false,
                "input": messages});
            if let Some(t) = temperature {
                body["temperature"] = json!(t);
            }
            if let Some(m) = msg.max_tokens {
                body["max_output_tokens"] = json!(m);
            }
            let req = ResponsesRequest::parse(body.to_string().as_bytes(), limits)?;
            TurnStream::Responses(
                st.hub
                    .responses_stream(caller, req, ctx(Endpoint::Responses))
                    .await?,
            )
        }
        other => {
            return Err(nexus::Error::invalid_param(
                "format",
                format!("format must be 'chat', 'messages' or 'responses', not '{other}'"),
            ))
        }
    };
    Ok(Turn {
        stream,
        compat,
        text: String::new(),
        failed: None,
    })
}

async fn session(st: AppState, mut socket: WebSocket) {
    st.metrics.ws(1);
    let mut shutdown = st.shutdown.clone();
    let mut turn: Option<Turn> = None;
    let mut closing = false;
    loop {
        tokio::select! {
            incoming = socket.recv() => {
                let text = match incoming {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => continue,
                };
                let msg: Incoming = match serde_json::from_str(text.as_str()) {
                    Ok(m) => m,
                    Err(e) => {
                        if !send(&mut socket, error_frame(&nexus::Error::invalid(format!("invalid message: {e}")))).await { break }
                        continue;
                    }
                };
                match msg.kind.as_deref() {
                    Some("cancel") => {
                        if let Some(t) = turn.take() {
                            let handle = t.stream.chat().summary_handle();
                            let conversation_id = t.stream.chat().conversation_id.clone();
                            let provider_id = t.stream.chat().provider_id;
                            // Dropping the stream cancels the upstream and records the turn.
                            drop(t);
                            let s = handle.lock().ok().and_then(|s| s.clone());
                            let frame = json!({
                                "type": "done", "finish_reason": "cancelled",
                                "usage": s.as_ref().map(|s| json!({"prompt_tokens": s.usage.prompt_tokens, "completion_tokens": s.usage.completion_tokens, "total_tokens": s.usage.prompt_tokens + s.usage.completion_tokens, "source": s.usage_source})),
                                "conversation_id": conversation_id, "provider_id": provider_id,
                                "latency_ms": s.as_ref().map(|s| s.latency_ms), "ttft_ms": s.as_ref().and_then(|s| s.ttft_ms),
                            });
                            if !send(&mut socket, frame).await { break }
                        }
                    }
                    Some("chat") | None => {
                        if turn.is_some() {
                            let e = nexus::Error::invalid("a turn is already running; send {\"type\":\"cancel\"} first");
                            if !send(&mut socket, error_frame(&e)).await { break }
                            continue;
                        }
                        match start_turn(&st, msg).await {
                            Ok(t) => turn = Some(t),
                            Err(e) => {
                                if !send(&mut socket, error_frame(&e)).await { break }
                            }
                        }
                    }
                    Some(other) => {
                        let e = nexus::Error::invalid_param("type", format!("unknown message type '{other}'"));
                        if !send(&mut socket, error_frame(&e)).await { break }
                    }
                }
            }
            item = next_item(&mut turn) => {
                let Some(t) = turn.as_mut() else { continue };
                let frame = match item {
                    Some(Step::Chunk(Ok(chunk))) => match chunk.delta() {
                        Some(d) if !d.is_empty() => {
                            t.text.push_str(d);
                            if t.compat {
                                json!({"type": "message", "content": t.text})
                            } else {
                                json!({"type": "delta", "content": d})
                            }
                        }
                        _ => continue,
                    },
                    Some(Step::Chunk(Err(e))) => {
                        turn = None;
                        error_frame(&e)
                    }
                    // The format's event as its client receives it, then its text as a delta.
                    Some(Step::Event(ev)) => {
                        if let Some(err) = event_error(&ev) {
                            t.failed = Some(err);
                        }
                        let text = event_text(&ev).map(str::to_owned);
                        let frame = json!({"type": "event", "event": ev.name(), "data": ev.data});
                        if !send(&mut socket, frame).await { break }
                        match text {
                            Some(d) if !d.is_empty() => {
                                t.text.push_str(&d);
                                json!({"type": "delta", "content": d})
                            }
                            _ => continue,
                        }
                    }
                    None => {
                        let f = match t.failed.take() {
                            Some(err) => json!({"type": "error", "error": err}),
                            None => done_frame(t, false),
                        };
                        turn = None;
                        f
                    }
                };
                if !send(&mut socket, frame).await { break }
            }
            changed = shutdown.changed(), if !closing => {
                // A closed channel means the server is going away too.
                closing = changed.is_err() || *shutdown.borrow();
            }
        }
        // On shutdown, a running turn may finish (within the server's grace period).
        if closing && turn.is_none() {
            let _ = socket.send(Message::Close(None)).await;
            break;
        }
    }
    st.metrics.ws(-1);
}
