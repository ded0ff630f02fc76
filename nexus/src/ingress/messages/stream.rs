//! OpenAI chat chunks in, Anthropic Messages SSE events out.
//!
//! The sequence is Anthropic's: `message_start`; per content block `content_block_start`,
//! `content_block_delta`s (`text_delta`, `thinking_delta`, `input_json_delta`) and
//! `content_block_stop`, with one `ping` after the first block starts; then `message_delta`
//! (`stop_reason`, final usage) and `message_stop`. A failure after the start is one `error`
//! event, after which nothing follows.

use std::collections::HashMap;

use serde_json::{json, Value};

use super::response::{message_id, stop_reason, usage};
use crate::error::Error;
pub use crate::ingress::sse::SseEvent;
use crate::openai::{ChatChunk, Usage};

impl SseEvent {
    /// An upstream Anthropic event relayed as it came, with `message_start`'s model renamed to
    /// the client's. `None` for an `error` event (the hub sends its own, with the public
    /// message: the provider's text is for the operator's log), an event name outside
    /// Anthropic's documented set (clients are to ignore those) or data that is not JSON.
    pub(crate) fn relayed(event: &str, data: &str, client_model: &str) -> Option<Self> {
        let event = match event {
            "message_start" => "message_start",
            "content_block_start" => "content_block_start",
            "content_block_delta" => "content_block_delta",
            "content_block_stop" => "content_block_stop",
            "message_delta" => "message_delta",
            "message_stop" => "message_stop",
            "ping" => "ping",
            _ => return None,
        };
        let mut data: Value = serde_json::from_str(data).ok()?;
        if event == "message_start" {
            if let Some(m) = data.get_mut("message").and_then(Value::as_object_mut) {
                m.insert("model".into(), client_model.into());
            }
        }
        Some(SseEvent::new(event, data))
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Open {
    Text,
    Thinking,
    /// A tool call by its OpenAI index.
    Tool(u64),
}

/// The translation state of one stream.
#[derive(Debug)]
pub struct StreamEncoder {
    model: String,
    id: String,
    input_estimate: u64,
    started: bool,
    pinged: bool,
    /// The open block and its Anthropic index.
    open: Option<(Open, u64)>,
    next_index: u64,
    /// OpenAI tool-call index → Anthropic block index.
    tools: HashMap<u64, u64>,
    finish: Option<String>,
    usage: Option<Usage>,
    done: bool,
}

impl StreamEncoder {
    /// An encoder for the client's `model`, its message id from `request_id`, and
    /// `input_estimate` prompt tokens for `message_start` (the final count comes in
    /// `message_delta`).
    pub fn new(model: &str, request_id: &str, input_estimate: u64) -> Self {
        StreamEncoder {
            model: model.to_owned(),
            id: message_id(request_id),
            input_estimate,
            started: false,
            pinged: false,
            open: None,
            next_index: 0,
            tools: HashMap::new(),
            finish: None,
            usage: None,
            done: false,
        }
    }

    /// `message_start`, once.
    pub fn start(&mut self) -> Vec<SseEvent> {
        if self.started {
            return vec![];
        }
        self.started = true;
        vec![SseEvent::new(
            "message_start",
            json!({"type": "message_start", "message": {
                "id": self.id, "type": "message", "role": "assistant", "model": self.model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": self.input_estimate, "cache_creation_input_tokens": 0,
                          "cache_read_input_tokens": 0, "output_tokens": 0},
            }}),
        )]
    }

    fn close(&mut self, out: &mut Vec<SseEvent>) {
        if let Some((_, i)) = self.open.take() {
            out.push(SseEvent::new(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": i}),
            ));
        }
    }

    fn open_block(&mut self, kind: Open, block: Value, out: &mut Vec<SseEvent>) -> u64 {
        self.close(out);
        let i = self.next_index;
        self.next_index += 1;
        self.open = Some((kind, i));
        out.push(SseEvent::new(
            "content_block_start",
            json!({"type": "content_block_start", "index": i, "content_block": block}),
        ));
        if !self.pinged {
            self.pinged = true;
            out.push(SseEvent::new("ping", json!({"type": "ping"})));
        }
        i
    }

    fn delta(i: u64, delta: Value) -> SseEvent {
        SseEvent::new(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": i, "delta": delta}),
        )
    }

    /// The events for one chunk.
    pub fn push(&mut self, chunk: &ChatChunk) -> Vec<SseEvent> {
        let mut out = self.start();
        if self.done {
            return out;
        }
        if let Some(u) = chunk.usage() {
            self.usage = Some(u.clone());
        }
        if let Some(t) = chunk.reasoning().filter(|t| !t.is_empty()) {
            let i = match self.open {
                Some((Open::Thinking, i)) => i,
                _ => self.open_block(
                    Open::Thinking,
                    json!({"type": "thinking", "thinking": "", "signature": ""}),
                    &mut out,
                ),
            };
            out.push(Self::delta(
                i,
                json!({"type": "thinking_delta", "thinking": t}),
            ));
        }
        if let Some(t) = chunk.delta().filter(|t| !t.is_empty()) {
            let i = match self.open {
                Some((Open::Text, i)) => i,
                _ => self.open_block(Open::Text, json!({"type": "text", "text": ""}), &mut out),
            };
            out.push(Self::delta(i, json!({"type": "text_delta", "text": t})));
        }
        for tc in chunk.tool_call_deltas() {
            let i = match self.tools.get(&tc.index) {
                Some(&i) => i,
                None => {
                    let id = tc
                        .id
                        .clone()
                        .unwrap_or_else(|| format!("toolu_{}", crate::crypto::random_id()));
                    let block = json!({"type": "tool_use", "id": id,
                        "name": tc.name.clone().unwrap_or_default(), "input": {}});
                    let i = self.open_block(Open::Tool(tc.index), block, &mut out);
                    self.tools.insert(tc.index, i);
                    i
                }
            };
            if let Some(a) = tc.arguments.filter(|a| !a.is_empty()) {
                out.push(Self::delta(
                    i,
                    json!({"type": "input_json_delta", "partial_json": a}),
                ));
            }
        }
        if let Some(f) = chunk.finish_reason() {
            self.finish = Some(f.to_owned());
            self.close(&mut out);
        }
        out
    }

    /// The end of a stream that finished: `message_delta` and `message_stop`. `usage` is the
    /// hub's final usage when the chunks carried none.
    pub fn finish(&mut self, fallback: Option<&Usage>) -> Vec<SseEvent> {
        let mut out = self.start();
        if self.done {
            return out;
        }
        self.done = true;
        self.close(&mut out);
        let u = self
            .usage
            .clone()
            .or_else(|| fallback.cloned())
            .unwrap_or_default();
        out.push(SseEvent::new(
            "message_delta",
            json!({"type": "message_delta",
                   "delta": {"stop_reason": stop_reason(self.finish.as_deref()), "stop_sequence": null},
                   "usage": usage(&u)}),
        ));
        out.push(SseEvent::new(
            "message_stop",
            json!({"type": "message_stop"}),
        ));
        out
    }

    /// The in-band `error` event of a stream that failed after it started; nothing follows it.
    pub fn error(&mut self, e: &Error) -> SseEvent {
        self.done = true;
        SseEvent::new(
            "error",
            json!({"type": "error", "error": {"type": e.anthropic_type(), "message": e.public_message()}}),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(v: Value) -> ChatChunk {
        ChatChunk::parse(v.to_string()).unwrap()
    }

    fn delta(d: Value, finish: Option<&str>) -> ChatChunk {
        chunk(json!({"choices": [{"index": 0, "delta": d, "finish_reason": finish}]}))
    }

    fn names(evs: &[SseEvent]) -> Vec<&str> {
        evs.iter().map(|e| e.name()).collect()
    }

    #[test]
    fn text_stream_sequence() {
        let mut enc = StreamEncoder::new("m", "r1", 7);
        let mut evs = vec![];
        evs.extend(enc.push(&delta(json!({"role": "assistant", "content": ""}), None)));
        evs.extend(enc.push(&delta(json!({"reasoning_content": "hm"}), None)));
        evs.extend(enc.push(&delta(json!({"content": "Hel"}), None)));
        evs.extend(enc.push(&delta(json!({"content": "lo"}), None)));
        evs.extend(enc.push(&delta(json!({}), Some("stop"))));
        evs.extend(enc.push(&chunk(json!({"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}}))));
        evs.extend(enc.finish(None));
        assert_eq!(
            names(&evs),
            [
                "message_start",
                "content_block_start",
                "ping",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert_eq!(evs[0].data["message"]["id"], "msg_r1");
        assert_eq!(evs[0].data["message"]["usage"]["input_tokens"], 7);
        assert_eq!(evs[1].data["content_block"]["type"], "thinking");
        assert_eq!(
            evs[3].data["delta"],
            json!({"type": "thinking_delta", "thinking": "hm"})
        );
        assert_eq!(evs[5].data["index"], 1);
        assert_eq!(
            evs[6].data["delta"],
            json!({"type": "text_delta", "text": "Hel"})
        );
        assert_eq!(evs[9].data["delta"]["stop_reason"], "end_turn");
        assert_eq!(evs[9].data["usage"]["input_tokens"], 9);
        assert_eq!(evs[9].data["usage"]["output_tokens"], 2);
        assert!(evs[10]
            .to_wire()
            .starts_with("event: message_stop\ndata: {"));
        assert!(enc.finish(None).is_empty(), "the end is sent once");
    }

    #[test]
    fn tool_use_streams_input_json_deltas() {
        let mut enc = StreamEncoder::new("m", "r", 0);
        let mut evs = vec![];
        evs.extend(enc.push(&delta(json!({"content": "Checking."}), None)));
        evs.extend(enc.push(&delta(
            json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": ""}}]}),
            None,
        )));
        evs.extend(enc.push(&delta(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]}),
            None,
        )));
        evs.extend(enc.push(&delta(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}),
            None,
        )));
        evs.extend(enc.push(&delta(json!({"tool_calls": [{"index": 1, "id": "call_2", "function": {"name": "f", "arguments": "{}"}}]}), None)));
        evs.extend(enc.push(&delta(json!({}), Some("tool_calls"))));
        evs.extend(enc.finish(None));
        assert_eq!(
            names(&evs),
            [
                "message_start",
                "content_block_start",
                "ping",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert_eq!(
            evs[5].data["content_block"],
            json!({"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {}})
        );
        let json: String = evs[6..8]
            .iter()
            .map(|e| e.data["delta"]["partial_json"].as_str().unwrap())
            .collect();
        assert_eq!(json, "{\"city\":\"Paris\"}");
        assert_eq!(evs[9].data["index"], 2);
        assert_eq!(evs[12].data["delta"]["stop_reason"], "tool_use");
    }

    #[test]
    fn a_failure_is_one_error_event() {
        let mut enc = StreamEncoder::new("m", "r", 0);
        let evs = enc.push(&delta(json!({"content": "a"}), None));
        assert_eq!(
            names(&evs),
            [
                "message_start",
                "content_block_start",
                "ping",
                "content_block_delta"
            ]
        );
        let e = enc.error(&Error::Upstream {
            status: Some(529),
            message: "x".into(),
            body: None,
            retry_after: None,
        });
        assert_eq!(e.event, "error");
        assert_eq!(e.data["error"]["type"], "overloaded_error");
        assert!(enc.finish(None).is_empty());
    }
}
