//! Anthropic's stream events as OpenAI `chat.completion.chunk`s.
//!
//! `message_start` gives the role chunk (and the id and prompt usage); text, thinking and tool
//! input deltas become `content`, `reasoning_content` and `tool_calls` deltas; `message_delta`
//! gives the finish chunk followed by the usage-only chunk (its usage is final: Anthropic sends
//! running totals there); `message_stop` ends the answer. `ping` and unknown events produce
//! nothing; `error` ends the stream with an upstream error.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{json, Value};

use super::{error_status, finish_reason, openai_usage, AnthropicUsage, JSON_TOOL};
use crate::error::{Error, Result};
use crate::upstream::adapter::{Decoded, StreamDecoder};

/// What an Anthropic content block becomes.
#[derive(Debug, Clone, Copy)]
enum Block {
    Text,
    Thinking,
    /// A client tool call, with its OpenAI `tool_calls` index.
    Tool(usize),
    /// The forced `response_format` tool: its input JSON is the answer text.
    JsonAnswer,
    /// Blocks without an OpenAI counterpart (redacted thinking, server tools).
    Ignored,
}

/// The fields of any stream event the decoder reads.
#[derive(Deserialize)]
struct Event {
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    index: Option<u64>,
    #[serde(default)]
    message: Option<Value>,
    #[serde(default)]
    content_block: Option<Value>,
    #[serde(default)]
    delta: Option<Value>,
    #[serde(default)]
    usage: Option<Value>,
    #[serde(default)]
    error: Option<Value>,
}

/// One stream's translation state.
pub(crate) struct Decoder {
    model: String,
    id: String,
    created: i64,
    /// Anthropic block index → what it becomes.
    blocks: HashMap<u64, Block>,
    /// Tool calls seen so far: the next one's OpenAI index.
    tools: usize,
    json_answer: bool,
    usage: AnthropicUsage,
}

impl Decoder {
    /// A decoder whose chunks name `client_model`.
    pub(crate) fn new(client_model: &str) -> Self {
        Decoder {
            model: client_model.to_owned(),
            id: format!("chatcmpl-{}", crate::crypto::random_id()),
            created: crate::now_ms() / 1000,
            blocks: HashMap::new(),
            tools: 0,
            json_answer: false,
            usage: AnthropicUsage::default(),
        }
    }

    /// A chunk with one choice whose delta is `delta`.
    fn chunk(&self, delta: Value, finish: Option<&str>) -> String {
        json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        })
        .to_string()
    }

    /// Folds a usage object into the running totals: later events repeat or extend earlier
    /// ones, so each present field replaces the one before.
    fn merge_usage(&mut self, u: &Value) {
        let get = |k: &str| u.get(k).and_then(Value::as_u64);
        if let Some(n) = get("input_tokens") {
            self.usage.input_tokens = n;
        }
        if let Some(n) = get("output_tokens") {
            self.usage.output_tokens = n;
        }
        if let Some(n) = get("cache_read_input_tokens") {
            self.usage.cache_read_input_tokens = Some(n);
        }
        if let Some(n) = get("cache_creation_input_tokens") {
            self.usage.cache_creation_input_tokens = Some(n);
        }
    }

    fn block_start(&mut self, index: u64, b: &Value) -> Vec<String> {
        let kind = b.get("type").and_then(Value::as_str).unwrap_or("");
        let text_field = |f: &str| b.get(f).and_then(Value::as_str).unwrap_or("").to_owned();
        let (block, out) = match kind {
            "text" => {
                let t = text_field("text");
                let out = (!t.is_empty()).then(|| self.chunk(json!({"content": t}), None));
                (Block::Text, out)
            }
            "thinking" => {
                let t = text_field("thinking");
                let out =
                    (!t.is_empty()).then(|| self.chunk(json!({"reasoning_content": t}), None));
                (Block::Thinking, out)
            }
            "tool_use" if b.get("name").and_then(Value::as_str) == Some(JSON_TOOL) => {
                self.json_answer = true;
                (Block::JsonAnswer, None)
            }
            "tool_use" => {
                let i = self.tools;
                self.tools += 1;
                let delta = json!({"tool_calls": [{
                    "index": i, "id": text_field("id"), "type": "function",
                    "function": {"name": text_field("name"), "arguments": ""},
                }]});
                (Block::Tool(i), Some(self.chunk(delta, None)))
            }
            _ => (Block::Ignored, None),
        };
        self.blocks.insert(index, block);
        out.into_iter().collect()
    }

    fn block_delta(&self, index: u64, d: &Value) -> Vec<String> {
        let field = |f: &str| d.get(f).and_then(Value::as_str).unwrap_or("");
        let block = self.blocks.get(&index).copied().unwrap_or(Block::Ignored);
        let delta = match (d.get("type").and_then(Value::as_str), block) {
            (Some("text_delta"), _) => json!({"content": field("text")}),
            (Some("thinking_delta"), _) => json!({"reasoning_content": field("thinking")}),
            (Some("input_json_delta"), Block::Tool(i)) => json!({"tool_calls": [{
                "index": i, "function": {"arguments": field("partial_json")}}]}),
            (Some("input_json_delta"), Block::JsonAnswer) => {
                json!({"content": field("partial_json")})
            }
            // signature_delta, citations_delta and deltas of ignored blocks.
            _ => return vec![],
        };
        vec![self.chunk(delta, None)]
    }

    fn usage_chunk(&self) -> String {
        json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.model, "choices": [], "usage": openai_usage(&self.usage),
        })
        .to_string()
    }
}

impl StreamDecoder for Decoder {
    fn decode(&mut self, event: &str, data: String) -> Result<Decoded> {
        if data.trim().is_empty() {
            return Ok(Decoded::Chunks(vec![]));
        }
        let ev: Event = serde_json::from_str(&data).map_err(|e| Error::Upstream {
            status: None,
            message: format!("malformed Anthropic stream event: {e}"),
            body: Some(crate::openai::truncate(&data, 4096)),
            retry_after: None,
        })?;
        // The `type` inside the data is authoritative; the SSE event name is its copy.
        let kind = if ev.kind.is_empty() { event } else { &ev.kind };
        let out = match kind {
            "message_start" => {
                let m = ev.message.unwrap_or_default();
                if let Some(id) = m.get("id").and_then(Value::as_str) {
                    self.id = format!("chatcmpl-{id}");
                }
                if let Some(u) = m.get("usage") {
                    self.merge_usage(u);
                }
                vec![self.chunk(json!({"role": "assistant", "content": ""}), None)]
            }
            "content_block_start" => match (ev.index, ev.content_block) {
                (Some(i), Some(b)) => self.block_start(i, &b),
                _ => vec![],
            },
            "content_block_delta" => match (ev.index, ev.delta) {
                (Some(i), Some(d)) => self.block_delta(i, &d),
                _ => vec![],
            },
            "message_delta" => {
                if let Some(u) = &ev.usage {
                    self.merge_usage(u);
                }
                let stop = ev
                    .delta
                    .as_ref()
                    .and_then(|d| d.get("stop_reason"))
                    .and_then(Value::as_str);
                vec![
                    self.chunk(json!({}), Some(finish_reason(stop, self.json_answer))),
                    self.usage_chunk(),
                ]
            }
            "message_stop" => return Ok(Decoded::Done),
            "error" => {
                let err = ev.error.unwrap_or_default();
                let message = err
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("upstream reported an error in the stream")
                    .to_owned();
                return Err(Error::Upstream {
                    status: err
                        .get("type")
                        .and_then(Value::as_str)
                        .and_then(error_status),
                    message,
                    body: Some(crate::openai::truncate(&data, 4096)),
                    retry_after: None,
                });
            }
            // ping, content_block_stop and event types newer than this code.
            _ => vec![],
        };
        Ok(Decoded::Chunks(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(d: &mut Decoder, events: &[(&str, Value)]) -> Vec<Value> {
        let mut out = vec![];
        for (name, data) in events {
            match d.decode(name, data.to_string()).unwrap() {
                Decoded::Chunks(c) => {
                    out.extend(c.iter().map(|s| serde_json::from_str::<Value>(s).unwrap()))
                }
                Decoded::Done => out.push(json!("DONE")),
            }
        }
        out
    }

    #[test]
    fn text_thinking_and_parallel_tools() {
        let mut d = Decoder::new("client-m");
        let out = feed(
            &mut d,
            &[
                (
                    "message_start",
                    json!({"type": "message_start", "message": {"id": "msg_1",
                    "usage": {"input_tokens": 10, "output_tokens": 1, "cache_read_input_tokens": 4}}}),
                ),
                ("ping", json!({"type": "ping"})),
                (
                    "content_block_start",
                    json!({"type": "content_block_start", "index": 0,
                    "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
                ),
                (
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "thinking_delta", "thinking": "hmm"}}),
                ),
                (
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "signature_delta", "signature": "abc"}}),
                ),
                (
                    "content_block_stop",
                    json!({"type": "content_block_stop", "index": 0}),
                ),
                (
                    "content_block_start",
                    json!({"type": "content_block_start", "index": 1,
                    "content_block": {"type": "text", "text": ""}}),
                ),
                (
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": 1,
                    "delta": {"type": "text_delta", "text": "Hi"}}),
                ),
                (
                    "content_block_start",
                    json!({"type": "content_block_start", "index": 2,
                    "content_block": {"type": "tool_use", "id": "toolu_a", "name": "f", "input": {}}}),
                ),
                (
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": 2,
                    "delta": {"type": "input_json_delta", "partial_json": "{\"q\":"}}),
                ),
                (
                    "content_block_start",
                    json!({"type": "content_block_start", "index": 3,
                    "content_block": {"type": "tool_use", "id": "toolu_b", "name": "g", "input": {}}}),
                ),
                (
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": 3,
                    "delta": {"type": "input_json_delta", "partial_json": "{}"}}),
                ),
                (
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": 2,
                    "delta": {"type": "input_json_delta", "partial_json": "1}"}}),
                ),
                (
                    "message_delta",
                    json!({"type": "message_delta",
                    "delta": {"stop_reason": "tool_use", "stop_sequence": null},
                    "usage": {"output_tokens": 7}}),
                ),
                ("message_stop", json!({"type": "message_stop"})),
            ],
        );
        assert_eq!(out.len(), 11, "{out:#?}");
        for c in &out[..10] {
            assert_eq!(c["id"], "chatcmpl-msg_1");
            assert_eq!(c["model"], "client-m");
            assert_eq!(c["created"], out[0]["created"]);
        }
        assert_eq!(out[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(out[1]["choices"][0]["delta"]["reasoning_content"], "hmm");
        assert_eq!(out[2]["choices"][0]["delta"]["content"], "Hi");
        let tc = |i: usize| &out[i]["choices"][0]["delta"]["tool_calls"][0];
        assert_eq!(tc(3)["index"], 0);
        assert_eq!(tc(3)["id"], "toolu_a");
        assert_eq!(tc(3)["function"]["name"], "f");
        assert_eq!(tc(4)["function"]["arguments"], "{\"q\":");
        assert_eq!(tc(5)["index"], 1);
        assert_eq!(tc(5)["id"], "toolu_b");
        assert_eq!(tc(6)["index"], 1);
        assert_eq!(tc(7)["index"], 0);
        assert_eq!(tc(7)["function"]["arguments"], "1}");
        assert!(tc(7).get("id").is_none());
        assert_eq!(out[8]["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(out[8]["choices"][0]["delta"], json!({}));
        assert_eq!(out[9]["choices"], json!([]));
        assert_eq!(out[10], json!("DONE"));
        let u = &d.usage;
        assert_eq!((u.input_tokens, u.output_tokens), (10, 7));
        assert_eq!(openai_usage(u)["prompt_tokens"], 14);
    }

    #[test]
    fn usage_chunk_follows_the_finish_chunk() {
        let mut d = Decoder::new("m");
        let out = feed(
            &mut d,
            &[
                (
                    "",
                    json!({"type": "message_start", "message": {"id": "x", "usage": {"input_tokens": 3, "output_tokens": 1}}}),
                ),
                (
                    "",
                    json!({"type": "message_delta", "delta": {"stop_reason": "max_tokens"}, "usage": {"output_tokens": 9}}),
                ),
            ],
        );
        assert_eq!(out[1]["choices"][0]["finish_reason"], "length");
        assert_eq!(out[2]["choices"], json!([]));
        assert_eq!(out[2]["usage"]["prompt_tokens"], 3);
        assert_eq!(out[2]["usage"]["completion_tokens"], 9);
        assert_eq!(out[2]["usage"]["total_tokens"], 12);
    }

    #[test]
    fn json_answer_tool_streams_as_content() {
        let mut d = Decoder::new("m");
        let out = feed(
            &mut d,
            &[
                (
                    "",
                    json!({"type": "content_block_start", "index": 0,
                    "content_block": {"type": "tool_use", "id": "t", "name": JSON_TOOL, "input": {}}}),
                ),
                (
                    "",
                    json!({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "input_json_delta", "partial_json": "{\"a\":1}"}}),
                ),
                (
                    "",
                    json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}}),
                ),
            ],
        );
        assert_eq!(out[0]["choices"][0]["delta"]["content"], "{\"a\":1}");
        assert_eq!(out[1]["choices"][0]["finish_reason"], "stop");
    }

    #[test]
    fn errors_and_noise() {
        let mut d = Decoder::new("m");
        let e = d
            .decode(
                "error",
                json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
                    .to_string(),
            )
            .unwrap_err();
        match e {
            Error::Upstream {
                status, message, ..
            } => {
                assert_eq!(status, Some(529));
                assert_eq!(message, "Overloaded");
            }
            other => panic!("{other:?}"),
        }
        assert!(d.decode("", "{oops".into()).is_err());
        assert!(matches!(d.decode("", "".into()).unwrap(), Decoded::Chunks(c) if c.is_empty()));
        assert!(matches!(
            d.decode("x", json!({"type": "brand_new_event"}).to_string()).unwrap(),
            Decoded::Chunks(c) if c.is_empty()
        ));
    }
}
