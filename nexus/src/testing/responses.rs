//! The mock's OpenAI Responses API: `POST /v1/responses`, written from OpenAI's API reference
//! (the request checks, the response object, the semantic SSE events, the error body).
//!
//! It wants `Authorization: Bearer ...` (401 otherwise) and a JSON body with `model` and `input`
//! (400 otherwise), and reads the OpenAI mock's words in the model name (`plan()`):
//!
//! | word | behaviour |
//! |---|---|
//! | (none) | echo the last user text (`input` as a string, or the last `input_text` of the last user item), streamed word by word |
//! | `chunksN` | N deltas `tokI ` instead of the echo |
//! | `delayN` | wait N ms before each delta event |
//! | `failN` | answer HTTP N with an OpenAI error body |
//! | `stall` | never answer |
//! | `stallmid` | send the events up to the first delta, then nothing |
//! | `closemid` | send the events up to the second delta, then close |
//! | `miderror` | after the first delta, an `event: error` (`server_error`), then the end |
//! | `reasoning` | a `reasoning` item with the summary `thinking` before the answer |
//! | `tools` | when the request has function tools and the last input item is not a `function_call_output`: a `function_call` item calling the first one with `{"q": <echo>}` |
//!
//! A stream is `event: <type>\ndata: <json>\n\n` events, each with its `type` and a
//! `sequence_number` from 0, from `response.created` to `response.completed`; like OpenAI it
//! sends no `data: [DONE]`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::{error_response, plan, tokio_stream_from, MockState};

/// The reasoning summary of the `reasoning` word.
const THINKING: &str = "thinking";

/// One output item of the answer.
enum Item {
    Reasoning {
        id: String,
    },
    Message {
        id: String,
        pieces: Vec<String>,
    },
    Call {
        id: String,
        call_id: String,
        name: String,
        pieces: Vec<String>,
    },
}

impl Item {
    /// The item as `response.output_item.added` shows it: in progress, nothing generated yet.
    fn added(&self) -> Value {
        match self {
            Item::Reasoning { id } => json!({"type": "reasoning", "id": id, "summary": []}),
            Item::Message { id, .. } => json!({"type": "message", "id": id,
                "status": "in_progress", "role": "assistant", "content": []}),
            Item::Call {
                id, call_id, name, ..
            } => json!({"type": "function_call", "id": id, "call_id": call_id, "name": name,
                "arguments": "", "status": "in_progress"}),
        }
    }

    /// The completed item, as in `output` and `response.output_item.done`.
    fn done(&self) -> Value {
        match self {
            Item::Reasoning { id } => json!({"type": "reasoning", "id": id,
                "summary": [{"type": "summary_text", "text": THINKING}]}),
            Item::Message { id, pieces } => json!({"type": "message", "id": id,
                "status": "completed", "role": "assistant",
                "content": [{"type": "output_text", "text": pieces.concat(), "annotations": []}]}),
            Item::Call {
                id,
                call_id,
                name,
                pieces,
            } => json!({"type": "function_call", "id": id, "call_id": call_id, "name": name,
                "arguments": pieces.concat(), "status": "completed"}),
        }
    }
}

/// The SSE events of a stream, numbered as they are added.
#[derive(Default)]
struct Events {
    /// Each event's text, and whether it carries a delta (paced by `delayN`).
    list: Vec<(String, bool)>,
}

impl Events {
    fn push(&mut self, kind: &str, data: Value) {
        self.add(kind, data, false);
    }

    fn delta(&mut self, kind: &str, data: Value) {
        self.add(kind, data, true);
    }

    fn add(&mut self, kind: &str, mut data: Value, delta: bool) {
        data["type"] = kind.into();
        data["sequence_number"] = self.list.len().into();
        self.list
            .push((format!("event: {kind}\ndata: {data}\n\n"), delta));
    }
}

/// The last user message's text: `input` itself when a string, else the last item with role
/// `user` (its string content, or its last `input_text` part).
fn last_user_text(input: &Value) -> String {
    let item = match input {
        Value::String(s) => return s.clone(),
        Value::Array(items) => items.iter().rev().find(|i| i["role"] == "user"),
        _ => None,
    };
    match item.map(|i| &i["content"]) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .rev()
            .find_map(|p| {
                (p["type"] == "input_text")
                    .then(|| p["text"].as_str())
                    .flatten()
            })
            .unwrap_or("")
            .to_owned(),
        _ => String::new(),
    }
}

/// The words of an input's texts (strings, contents, parts, tool outputs and arguments): the
/// mock's input token count.
fn input_words(input: &Value) -> u64 {
    match input {
        Value::String(s) => s.split_whitespace().count() as u64,
        Value::Array(items) => items
            .iter()
            .map(|i| {
                ["content", "text", "output", "arguments"]
                    .iter()
                    .map(|k| input_words(&i[*k]))
                    .sum::<u64>()
            })
            .sum(),
        _ => 0,
    }
}

/// The response object, echoing the request's settings as OpenAI does.
fn response_object(
    req: &Value,
    id: &str,
    created_at: u64,
    output: Vec<Value>,
    usage: Value,
) -> Value {
    let or = |key: &str, default: Value| req.get(key).cloned().unwrap_or(default);
    let status = if usage.is_null() {
        "in_progress"
    } else {
        "completed"
    };
    json!({
        "id": id, "object": "response", "created_at": created_at, "status": status,
        "error": null, "incomplete_details": null,
        "instructions": or("instructions", Value::Null),
        "max_output_tokens": or("max_output_tokens", Value::Null),
        "model": req["model"], "output": output,
        "parallel_tool_calls": or("parallel_tool_calls", json!(true)),
        "previous_response_id": or("previous_response_id", Value::Null),
        "reasoning": or("reasoning", json!({"effort": null, "summary": null})),
        "store": or("store", json!(true)),
        "temperature": or("temperature", json!(1.0)),
        "text": or("text", json!({"format": {"type": "text"}})),
        "tool_choice": or("tool_choice", json!("auto")),
        "tools": or("tools", json!([])),
        "top_p": or("top_p", json!(1.0)),
        "truncation": or("truncation", json!("disabled")),
        "usage": usage, "user": or("user", Value::Null),
        "metadata": or("metadata", json!({})),
    })
}

/// `POST /v1/responses`.
pub(super) async fn responses(
    State(s): State<Arc<MockState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let n = s.requests.fetch_add(1, Ordering::SeqCst) + 1;
    if let Ok(mut g) = s.last_headers.lock() {
        *g = headers
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect();
    }
    let req = serde_json::from_slice::<Value>(&body).ok();
    if let (Some(req), Ok(mut g)) = (&req, s.last_request.lock()) {
        *g = Some(req.clone());
    }
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|k| !k.trim().is_empty());
    if !bearer {
        return error_response(
            401,
            "mock: missing bearer token in the Authorization header",
        );
    }
    let Some(req) = req else {
        return error_response(400, "mock: body is not JSON");
    };
    let Some(model) = req["model"].as_str().map(str::to_owned) else {
        return error_response(400, "Missing required parameter: 'model'.");
    };
    let input = &req["input"];
    if !input.is_string() && !input.is_array() {
        return error_response(400, "Missing required parameter: 'input'.");
    }
    let p = plan(&model);
    if let Some(status) = p.fail {
        return error_response(status, &format!("mock failure {status}"));
    }
    if p.stall {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }

    let echo = last_user_text(input);
    let function = req["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["type"] == "function")
        .and_then(|t| t["name"].as_str())
        .filter(|_| p.tools)
        .filter(|_| {
            input
                .as_array()
                .and_then(|items| items.last())
                .is_none_or(|last| last["type"] != "function_call_output")
        });
    let mut items = vec![];
    if p.reasoning {
        items.push(Item::Reasoning {
            id: format!("rs_mock{n}"),
        });
    }
    if let Some(name) = function {
        // The arguments in two pieces that split a value, as OpenAI streams them.
        let args = json!({"q": echo}).to_string();
        let cut = (args.len() / 2..args.len())
            .find(|c| args.is_char_boundary(*c))
            .unwrap_or(args.len());
        items.push(Item::Call {
            id: format!("fc_mock{n}"),
            call_id: format!("call_mock{n}"),
            name: name.to_owned(),
            pieces: vec![args[..cut].to_owned(), args[cut..].to_owned()],
        });
    } else {
        let pieces: Vec<String> = match p.chunks {
            Some(n) => (0..n).map(|i| format!("tok{i} ")).collect(),
            None if echo.is_empty() => vec!["(empty)".to_owned()],
            None => echo.split_inclusive(' ').map(str::to_owned).collect(),
        };
        items.push(Item::Message {
            id: format!("msg_mock{n}"),
            pieces,
        });
    }

    let input_tokens = input_words(input);
    let reasoning_tokens = u64::from(p.reasoning);
    let output_tokens = reasoning_tokens
        + items
            .iter()
            .map(|i| match i {
                Item::Message { pieces, .. } | Item::Call { pieces, .. } => pieces.len() as u64,
                Item::Reasoning { .. } => 0,
            })
            .sum::<u64>();
    let usage = json!({
        "input_tokens": input_tokens, "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
        "total_tokens": input_tokens + output_tokens,
    });
    let id = format!("resp_mock{n}");
    let created_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let done: Vec<Value> = items.iter().map(Item::done).collect();

    if !req["stream"].as_bool().unwrap_or(false) {
        s.completed.fetch_add(1, Ordering::SeqCst);
        return Json(response_object(&req, &id, created_at, done, usage)).into_response();
    }

    let mut ev = Events::default();
    let started = response_object(&req, &id, created_at, vec![], Value::Null);
    ev.push("response.created", json!({"response": started}));
    ev.push("response.in_progress", json!({"response": started}));
    let mut failed = false;
    'items: for (index, item) in items.iter().enumerate() {
        ev.push(
            "response.output_item.added",
            json!({"output_index": index, "item": item.added()}),
        );
        match item {
            Item::Reasoning { id } => {
                let at = json!({"item_id": id, "output_index": index, "summary_index": 0});
                let with = |k: &str, v: Value| {
                    let mut d = at.clone();
                    d[k] = v;
                    d
                };
                let part = |text: &str| json!({"type": "summary_text", "text": text});
                ev.push(
                    "response.reasoning_summary_part.added",
                    with("part", part("")),
                );
                ev.delta(
                    "response.reasoning_summary_text.delta",
                    with("delta", THINKING.into()),
                );
                ev.push(
                    "response.reasoning_summary_text.done",
                    with("text", THINKING.into()),
                );
                ev.push(
                    "response.reasoning_summary_part.done",
                    with("part", part(THINKING)),
                );
            }
            Item::Message { id, pieces } => {
                let at = json!({"item_id": id, "output_index": index, "content_index": 0});
                let with = |k: &str, v: Value| {
                    let mut d = at.clone();
                    d[k] = v;
                    d
                };
                let part =
                    |text: &str| json!({"type": "output_text", "text": text, "annotations": []});
                ev.push("response.content_part.added", with("part", part("")));
                for piece in pieces {
                    let mut d = with("delta", piece.as_str().into());
                    d["logprobs"] = json!([]);
                    ev.delta("response.output_text.delta", d);
                    if p.mid_error {
                        failed = true;
                        break 'items;
                    }
                }
                let text = pieces.concat();
                let mut d = with("text", text.as_str().into());
                d["logprobs"] = json!([]);
                ev.push("response.output_text.done", d);
                ev.push("response.content_part.done", with("part", part(&text)));
            }
            Item::Call {
                id, name, pieces, ..
            } => {
                for piece in pieces {
                    ev.delta(
                        "response.function_call_arguments.delta",
                        json!({"item_id": id, "output_index": index, "delta": piece}),
                    );
                    if p.mid_error {
                        failed = true;
                        break 'items;
                    }
                }
                ev.push(
                    "response.function_call_arguments.done",
                    json!({"item_id": id, "output_index": index, "name": name,
                           "arguments": pieces.concat()}),
                );
            }
        }
        ev.push(
            "response.output_item.done",
            json!({"output_index": index, "item": item.done()}),
        );
    }
    if failed {
        ev.push(
            "error",
            json!({"code": "server_error", "message": "mock mid-stream failure", "param": null}),
        );
    } else {
        ev.push(
            "response.completed",
            json!({"response": response_object(&req, &id, created_at, done, usage)}),
        );
    }

    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(4);
    let state = s.clone();
    tokio::spawn(async move {
        let mut deltas = 0;
        for (text, delta) in ev.list {
            if delta && p.delay_ms > 0 {
                tokio::time::sleep(Duration::from_millis(p.delay_ms)).await;
            }
            if tx.send(Ok(bytes::Bytes::from(text))).await.is_err() {
                state.cancelled.fetch_add(1, Ordering::SeqCst);
                return;
            }
            if delta {
                deltas += 1;
                if p.stall_mid && deltas == 1 {
                    // Hold the connection open without sending; notice the client leaving.
                    tx.closed().await;
                    state.cancelled.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                if p.close_mid && deltas == 2 {
                    return;
                }
            }
        }
        if !failed {
            state.completed.fetch_add(1, Ordering::SeqCst);
        }
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(Body::from_stream(tokio_stream_from(rx)))
        .unwrap_or_else(|_| error_response(500, "mock: response build failed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn call(auth: bool, body: Value) -> (u16, String) {
        let mut headers = HeaderMap::new();
        if auth {
            headers.insert("authorization", "Bearer sk-test".parse().unwrap());
        }
        let r = responses(
            State(Arc::new(MockState::default())),
            headers,
            Bytes::from(body.to_string()),
        )
        .await;
        let status = r.status().as_u16();
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[test]
    fn user_text_and_words() {
        let input = json!([
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": [{"type": "output_text", "text": "a b"}]},
            {"type": "message", "role": "user",
             "content": [{"type": "input_text", "text": "x"}, {"type": "input_text", "text": "y z"}]},
        ]);
        assert_eq!(last_user_text(&input), "y z");
        assert_eq!(last_user_text(&json!("hi there")), "hi there");
        assert_eq!(input_words(&input), 6);
    }

    #[tokio::test]
    async fn refusals() {
        assert_eq!(
            call(false, json!({"model": "m", "input": "x"})).await.0,
            401
        );
        assert_eq!(call(true, json!({"input": "x"})).await.0, 400);
        assert_eq!(call(true, json!({"model": "m"})).await.0, 400);
        assert_eq!(
            call(true, json!({"model": "m-fail503", "input": "x"}))
                .await
                .0,
            503
        );
    }

    #[tokio::test]
    async fn streamed_echo_is_numbered_in_order() {
        let (status, text) = call(
            true,
            json!({"model": "m", "input": "one two", "stream": true}),
        )
        .await;
        assert_eq!(status, 200);
        let data: Vec<Value> = text
            .split("\n\n")
            .filter_map(|e| e.split_once("data: "))
            .map(|(_, d)| serde_json::from_str(d).unwrap())
            .collect();
        let kinds: Vec<&str> = data.iter().filter_map(|d| d["type"].as_str()).collect();
        assert_eq!(kinds.first(), Some(&"response.created"));
        assert_eq!(kinds.last(), Some(&"response.completed"));
        assert_eq!(
            kinds
                .iter()
                .filter(|k| **k == "response.output_text.delta")
                .count(),
            2
        );
        for (i, d) in data.iter().enumerate() {
            assert_eq!(d["sequence_number"], i);
        }
        assert_eq!(
            data.last().unwrap()["response"]["output"][0]["content"][0]["text"],
            "one two"
        );
        assert!(!text.contains("[DONE]"));
    }
}
