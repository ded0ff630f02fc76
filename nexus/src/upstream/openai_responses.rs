//! OpenAI's Responses API as an upstream wire format, for `openai` providers with the
//! `responses_api` option: a client's Responses request is relayed to `.../v1/responses` as it
//! came, and the answer is read back into the chat core's terms (a chat completion, chat
//! chunks) so the ledger records its usage and the hub's failover and limits apply. The client
//! gets the provider's own answer or events (see `ingress::responses`).

use std::collections::HashMap;

use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::adapter::{Decoded, StreamDecoder, UpstreamCall};
use crate::error::{Error, Result};
use crate::registry::Candidate;

/// The provider's Responses endpoint: its chat endpoint with `chat/completions` replaced by
/// `responses`. `None` for a verbatim URL (`#`) that does not end so.
pub(crate) fn responses_url(cand: &Candidate) -> Option<String> {
    let e = &cand.provider.record.endpoint;
    let (path, query) = match e.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (e.as_str(), None),
    };
    let root = path.strip_suffix("chat/completions")?;
    Some(match query {
        Some(q) => format!("{root}responses?{q}"),
        None => format!("{root}responses"),
    })
}

/// The call: the client's body with the upstream model name and this call's stream flag.
pub(crate) fn call(
    body: &Map<String, Value>,
    cand: &Candidate,
    stream: bool,
) -> Result<UpstreamCall> {
    let url = responses_url(cand)
        .ok_or_else(|| Error::Config("the provider's URL has no Responses endpoint".into()))?;
    let mut out = body.clone();
    out.insert("model".into(), cand.model.upstream().into());
    if stream {
        out.insert("stream".into(), Value::Bool(true));
    } else {
        out.remove("stream");
        out.remove("stream_options");
    }
    Ok(UpstreamCall {
        url: Some(url),
        auth: super::adapter::Auth::Bearer,
        headers: vec![],
        body: serde_json::to_vec(&out)
            .map(Bytes::from)
            .map_err(|e| Error::Internal(e.to_string()))?,
        // The decoder's usage chunk is the ledger's; the client reads the provider's events.
        extra_usage_chunk: false,
    })
}

fn malformed(what: &str, body: &[u8]) -> Error {
    Error::Upstream {
        status: None,
        message: format!("malformed Responses answer: {what}"),
        body: Some(crate::openai::truncate(
            &String::from_utf8_lossy(body),
            4096,
        )),
        retry_after: None,
    }
}

/// Chat usage from Responses usage.
fn chat_usage(u: &Value) -> Value {
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    let input = n("input_tokens");
    let output = n("output_tokens");
    json!({
        "prompt_tokens": input,
        "completion_tokens": output,
        "total_tokens": u.get("total_tokens").and_then(Value::as_u64).unwrap_or(input + output),
        "prompt_tokens_details": {"cached_tokens":
            u.pointer("/input_tokens_details/cached_tokens").and_then(Value::as_u64).unwrap_or(0)},
        "completion_tokens_details": {"reasoning_tokens":
            u.pointer("/output_tokens_details/reasoning_tokens").and_then(Value::as_u64).unwrap_or(0)},
    })
}

/// The chat `finish_reason` of a response object.
fn finish_reason(r: &Value, calls: bool) -> &'static str {
    match (
        r["status"].as_str(),
        r.pointer("/incomplete_details/reason")
            .and_then(Value::as_str),
    ) {
        _ if calls => "tool_calls",
        (Some("incomplete"), Some("content_filter")) => "content_filter",
        (Some("incomplete"), _) => "length",
        _ => "stop",
    }
}

/// The error a `failed` response (or an `error` event) carries, for the operator's log.
fn failure(r: &Value, raw: &[u8]) -> Error {
    let message = r
        .pointer("/error/message")
        .or_else(|| r.get("message"))
        .and_then(Value::as_str)
        .unwrap_or("the upstream response failed")
        .to_owned();
    Error::Upstream {
        status: None,
        message,
        body: Some(crate::openai::truncate(&String::from_utf8_lossy(raw), 4096)),
        retry_after: None,
    }
}

/// A non-streaming Responses answer as an OpenAI chat completion body.
pub(crate) fn completion(body: &[u8], client_model: &str) -> Result<Bytes> {
    let r: Value = serde_json::from_slice(body).map_err(|e| malformed(&e.to_string(), body))?;
    if r["status"] == "failed" {
        return Err(failure(&r, body));
    }
    let output = r["output"]
        .as_array()
        .ok_or_else(|| malformed("no output", body))?;
    let (mut text, mut reasoning, mut calls) = (String::new(), String::new(), Vec::new());
    for item in output {
        match item["type"].as_str() {
            Some("message") => {
                for p in item["content"].as_array().into_iter().flatten() {
                    if let Some(t) = p["text"].as_str().or_else(|| p["refusal"].as_str()) {
                        text.push_str(t);
                    }
                }
            }
            Some("reasoning") => {
                let parts = item["content"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .chain(item["summary"].as_array().into_iter().flatten());
                for p in parts {
                    if let Some(t) = p["text"].as_str() {
                        reasoning.push_str(t);
                    }
                }
            }
            Some("function_call") => calls.push(json!({
                "id": item["call_id"], "type": "function",
                "function": {"name": item["name"], "arguments": item["arguments"]},
            })),
            _ => {}
        }
    }
    let mut message = json!({"role": "assistant",
        "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { text.into() }});
    if !reasoning.is_empty() {
        message["reasoning_content"] = reasoning.into();
    }
    let finish = finish_reason(&r, !calls.is_empty());
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    let c = json!({
        "id": r["id"], "object": "chat.completion", "created": r["created_at"],
        "model": client_model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": chat_usage(&r["usage"]),
    });
    serde_json::to_vec(&c)
        .map(Bytes::from)
        .map_err(|e| Error::Internal(e.to_string()))
}

/// Responses events in, chat chunks out (for the ledger and the hub's stream accounting).
pub(crate) struct Decoder {
    model: String,
    id: String,
    created: i64,
    /// Function-call item id → its chat tool-call index.
    calls: HashMap<String, u64>,
}

impl Decoder {
    pub(crate) fn new(client_model: &str) -> Self {
        Decoder {
            model: client_model.to_owned(),
            id: String::new(),
            created: 0,
            calls: HashMap::new(),
        }
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> String {
        json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
               "model": self.model,
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        .to_string()
    }
}

impl StreamDecoder for Decoder {
    fn decode(&mut self, event: &str, data: String) -> Result<Decoded> {
        let v: Value =
            serde_json::from_str(&data).map_err(|e| malformed(&e.to_string(), data.as_bytes()))?;
        let ty = v["type"].as_str().unwrap_or(event);
        let text = |k: &str| v[k].as_str().unwrap_or("").to_owned();
        let out = match ty {
            "response.created" => {
                self.id = v
                    .pointer("/response/id")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                self.created = v
                    .pointer("/response/created_at")
                    .and_then(Value::as_i64)
                    .unwrap_or_else(|| crate::time::now_ms() / 1000);
                vec![self.chunk(json!({"role": "assistant", "content": ""}), None)]
            }
            "response.output_text.delta" | "response.refusal.delta" => {
                vec![self.chunk(json!({"content": text("delta")}), None)]
            }
            "response.reasoning_text.delta" | "response.reasoning_summary_text.delta" => {
                vec![self.chunk(json!({"reasoning_content": text("delta")}), None)]
            }
            "response.output_item.added"
                if v.pointer("/item/type") == Some(&json!("function_call")) =>
            {
                let index = self.calls.len() as u64;
                let item = &v["item"];
                self.calls
                    .insert(item["id"].as_str().unwrap_or("").to_owned(), index);
                vec![self.chunk(
                    json!({"tool_calls": [{"index": index, "id": item["call_id"], "type": "function",
                        "function": {"name": item["name"], "arguments": ""}}]}),
                    None,
                )]
            }
            "response.function_call_arguments.delta" => {
                let index = self
                    .calls
                    .get(v["item_id"].as_str().unwrap_or(""))
                    .copied()
                    .unwrap_or(0);
                vec![self.chunk(
                    json!({"tool_calls": [{"index": index, "function": {"arguments": text("delta")}}]}),
                    None,
                )]
            }
            "response.completed" | "response.incomplete" => {
                let r = &v["response"];
                let finish = finish_reason(r, !self.calls.is_empty());
                vec![
                    self.chunk(json!({}), Some(finish)),
                    json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                           "model": self.model, "choices": [], "usage": chat_usage(&r["usage"])})
                    .to_string(),
                ]
            }
            "response.failed" => return Err(failure(&v["response"], data.as_bytes())),
            "error" => return Err(failure(&v, data.as_bytes())),
            // Item and part boundaries, `.done` events, and anything newer: nothing to count.
            _ => vec![],
        };
        Ok(Decoded::Chunks(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::{ChatChunk, ChatCompletion};

    #[test]
    fn a_response_is_a_completion() {
        let r = json!({"id": "resp_1", "object": "response", "created_at": 5, "status": "completed",
            "output": [
                {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "hm"}]},
                {"type": "message", "id": "msg_1", "role": "assistant",
                 "content": [{"type": "output_text", "text": "Hi", "annotations": []}]},
                {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "f", "arguments": "{}"}],
            "usage": {"input_tokens": 7, "output_tokens": 3, "total_tokens": 10,
                      "input_tokens_details": {"cached_tokens": 2}}});
        let b = completion(r.to_string().as_bytes(), "client-m").unwrap();
        let c: ChatCompletion = serde_json::from_slice(&b).unwrap();
        assert_eq!(c.finish_reason(), Some("tool_calls"));
        let u = c.usage.unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens), (7, 3));
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "Hi");
        assert_eq!(v["choices"][0]["message"]["reasoning_content"], "hm");
        assert_eq!(v["choices"][0]["message"]["tool_calls"][0]["id"], "call_1");
        assert_eq!(v["model"], "client-m");
        let failed =
            json!({"status": "failed", "error": {"code": "server_error", "message": "boom"}});
        assert!(completion(failed.to_string().as_bytes(), "m").is_err());
        assert!(completion(b"{}", "m").is_err());
    }

    #[test]
    fn events_are_chunks() {
        let mut d = Decoder::new("m");
        let mut chunks = vec![];
        for ev in [
            json!({"type": "response.created", "response": {"id": "resp_1", "created_at": 5}}),
            json!({"type": "response.output_text.delta", "delta": "He"}),
            json!({"type": "response.output_text.delta", "delta": "llo"}),
            json!({"type": "response.output_item.added", "item": {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "f"}}),
            json!({"type": "response.function_call_arguments.delta", "item_id": "fc_1", "delta": "{}"}),
            json!({"type": "response.output_item.done", "item": {}}),
            json!({"type": "response.completed", "response": {"status": "completed", "usage": {"input_tokens": 4, "output_tokens": 2}}}),
        ] {
            match d.decode("", ev.to_string()).unwrap() {
                Decoded::Chunks(c) => chunks.extend(c),
                Decoded::Done => panic!("no Done on this API"),
            }
        }
        let parsed: Vec<ChatChunk> = chunks
            .into_iter()
            .map(|c| ChatChunk::parse(c).unwrap())
            .collect();
        let text: String = parsed.iter().filter_map(ChatChunk::delta).collect();
        assert_eq!(text, "Hello");
        assert_eq!(
            parsed[3].tool_call_deltas()[0].id.as_deref(),
            Some("call_1")
        );
        assert_eq!(parsed[5].finish_reason(), Some("tool_calls"));
        assert_eq!(parsed[6].usage().unwrap().prompt_tokens, 4);
        assert!(d
            .decode(
                "error",
                json!({"type": "error", "message": "x"}).to_string()
            )
            .is_err());
    }
}
