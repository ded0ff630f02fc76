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
use nexus::openai::ChatRequest;
use nexus::stats::RequestSource;
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
    // The original system's shape: {message, provider_id, model_name}.
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    model_name: Option<String>,
}

struct Turn {
    stream: ChatStream,
    compat: bool,
    text: String,
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
    let s = turn.stream.summary();
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
        "conversation_id": turn.stream.conversation_id,
        "provider_id": turn.stream.provider_id,
        "latency_ms": s.as_ref().map(|s| s.latency_ms),
        "ttft_ms": s.as_ref().and_then(|s| s.ttft_ms),
    })
}

async fn next_item(turn: &mut Option<Turn>) -> Option<nexus::Result<nexus::openai::ChatChunk>> {
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
    let mut req = ChatRequest {
        model,
        messages,
        stream: Some(true),
        stream_options: None,
        extra: Default::default(),
    };
    if let Some(t) = msg.temperature {
        req.extra.insert("temperature".into(), json!(t));
    } else if compat {
        req.extra.insert("temperature".into(), json!(0.7));
    }
    if let Some(m) = msg.max_tokens {
        req.extra.insert("max_tokens".into(), json!(m));
    }
    let ctx = RequestContext {
        request_id: None,
        conversation_id: msg
            .conversation_id
            .filter(|c| !c.is_empty() && c.len() <= 128),
        source: RequestSource::Ws,
        endpoint: nexus::usage::Endpoint::Chat,
    };
    let stream = st
        .hub
        .chat_stream(
            Caller::Admin {
                provider_id: msg.provider_id,
            },
            req,
            ctx,
        )
        .await?;
    Ok(Turn {
        stream,
        compat,
        text: String::new(),
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
                            let handle = t.stream.summary_handle();
                            let conversation_id = t.stream.conversation_id.clone();
                            let provider_id = t.stream.provider_id;
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
                    Some(Ok(chunk)) => match chunk.delta() {
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
                    Some(Err(e)) => {
                        turn = None;
                        error_frame(&e)
                    }
                    None => {
                        let f = done_frame(t, false);
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
