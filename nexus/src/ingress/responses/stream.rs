//! OpenAI chat chunks in, Responses API semantic events out.
//!
//! The sequence is OpenAI's: `response.created` and `response.in_progress`; per output item
//! `response.output_item.added`, then for a message `response.content_part.added`,
//! `response.output_text.delta`s, `response.output_text.done`, `response.content_part.done`; for
//! reasoning the same with `response.reasoning_text.*`; for a function call
//! `response.function_call_arguments.delta`s and `.done`; then `response.output_item.done`. The
//! end is `response.completed` (or `response.incomplete` when the output was cut short) with the
//! whole response and its usage; a failure after the start is one `response.failed`. Every event
//! carries its `sequence_number`.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use super::response::{
    call_item, call_item_id, message_item, message_item_id, output_text_part, reasoning_item,
    reasoning_item_id, status, Envelope,
};
use crate::error::Error;
use crate::ingress::SseEvent;
use crate::openai::{ChatChunk, Usage};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Reasoning,
    Message,
    Call,
}

#[derive(Debug)]
struct Item {
    kind: Kind,
    id: String,
    text: String,
    call_id: String,
    name: String,
    done: bool,
}

/// The translation state of one stream.
#[derive(Debug)]
pub struct StreamEncoder {
    id: String,
    request_id: String,
    created_at: i64,
    model: String,
    echo: Map<String, Value>,
    seq: u64,
    started: bool,
    items: Vec<Item>,
    /// The open reasoning or message item (an index into `items`).
    open: Option<usize>,
    /// Chat tool-call index → item index.
    calls: HashMap<u64, usize>,
    finish: Option<String>,
    usage: Option<Usage>,
    done: bool,
    last: Option<Value>,
}

impl StreamEncoder {
    /// An encoder for the client's `model`, its ids from `request_id`, created at
    /// `created_at` (Unix seconds), repeating `echo` (the request fields) in its response
    /// objects.
    pub fn new(model: &str, request_id: &str, created_at: i64, echo: Map<String, Value>) -> Self {
        StreamEncoder {
            id: super::response::response_id(request_id),
            request_id: request_id.to_owned(),
            created_at,
            model: model.to_owned(),
            echo,
            seq: 0,
            started: false,
            items: Vec::new(),
            open: None,
            calls: HashMap::new(),
            finish: None,
            usage: None,
            done: false,
            last: None,
        }
    }

    fn event(&mut self, name: &'static str, mut data: Value) -> SseEvent {
        data["type"] = name.into();
        data["sequence_number"] = self.seq.into();
        self.seq += 1;
        SseEvent::new(name, data)
    }

    fn object(
        &self,
        status: &str,
        usage: Option<&Usage>,
        incomplete: Value,
        error: Value,
    ) -> Value {
        let output: Vec<Value> = self
            .items
            .iter()
            .filter(|i| i.done)
            .map(Self::final_item)
            .collect();
        Envelope {
            id: &self.id,
            created_at: self.created_at,
            model: &self.model,
            echo: &self.echo,
        }
        .object(status, &output, usage, incomplete, error)
    }

    fn final_item(i: &Item) -> Value {
        match i.kind {
            Kind::Reasoning => reasoning_item(&i.id, &i.text),
            Kind::Message => message_item(&i.id, &i.text, false, "completed"),
            Kind::Call => call_item(&i.id, &i.call_id, &i.name, &i.text, "completed"),
        }
    }

    /// `response.created` and `response.in_progress`, once.
    pub fn start(&mut self) -> Vec<SseEvent> {
        if self.started {
            return vec![];
        }
        self.started = true;
        let r = self.object("in_progress", None, Value::Null, Value::Null);
        vec![
            self.event("response.created", json!({"response": r})),
            self.event("response.in_progress", json!({"response": r})),
        ]
    }

    fn close(&mut self, idx: usize, out: &mut Vec<SseEvent>) {
        let Some(item) = self.items.get(idx).filter(|i| !i.done) else {
            return;
        };
        let (kind, id, text, name) = (
            item.kind,
            item.id.clone(),
            item.text.clone(),
            item.name.clone(),
        );
        let base = json!({"item_id": id, "output_index": idx});
        match kind {
            Kind::Reasoning => {
                let mut d = base.clone();
                d["content_index"] = 0.into();
                d["text"] = text.clone().into();
                out.push(self.event("response.reasoning_text.done", d));
                let mut d = base.clone();
                d["content_index"] = 0.into();
                d["part"] = json!({"type": "reasoning_text", "text": text});
                out.push(self.event("response.content_part.done", d));
            }
            Kind::Message => {
                let mut d = base.clone();
                d["content_index"] = 0.into();
                d["text"] = text.clone().into();
                d["logprobs"] = json!([]);
                out.push(self.event("response.output_text.done", d));
                let mut d = base.clone();
                d["content_index"] = 0.into();
                d["part"] = output_text_part(&text);
                out.push(self.event("response.content_part.done", d));
            }
            Kind::Call => {
                let mut d = base.clone();
                d["name"] = name.into();
                d["arguments"] = text.into();
                out.push(self.event("response.function_call_arguments.done", d));
            }
        }
        if let Some(i) = self.items.get_mut(idx) {
            i.done = true;
        }
        let item = self
            .items
            .get(idx)
            .map(Self::final_item)
            .unwrap_or(Value::Null);
        out.push(self.event(
            "response.output_item.done",
            json!({"output_index": idx, "item": item}),
        ));
        if self.open == Some(idx) {
            self.open = None;
        }
    }

    fn open_item(
        &mut self,
        kind: Kind,
        id: String,
        call: Option<(String, String)>,
        out: &mut Vec<SseEvent>,
    ) -> usize {
        if let Some(o) = self.open {
            self.close(o, out);
        }
        let idx = self.items.len();
        let (call_id, name) = call.unwrap_or_default();
        let added = match kind {
            Kind::Reasoning => json!({"type": "reasoning", "id": id, "summary": []}),
            Kind::Message => json!({"type": "message", "id": id, "status": "in_progress",
                                    "role": "assistant", "content": []}),
            Kind::Call => call_item(&id, &call_id, &name, "", "in_progress"),
        };
        out.push(self.event(
            "response.output_item.added",
            json!({"output_index": idx, "item": added}),
        ));
        let part = match kind {
            Kind::Reasoning => Some(json!({"type": "reasoning_text", "text": ""})),
            Kind::Message => Some(output_text_part("")),
            Kind::Call => None,
        };
        if let Some(part) = part {
            out.push(self.event(
                "response.content_part.added",
                json!({"item_id": id, "output_index": idx, "content_index": 0, "part": part}),
            ));
            self.open = Some(idx);
        }
        self.items.push(Item {
            kind,
            id,
            text: String::new(),
            call_id,
            name,
            done: false,
        });
        idx
    }

    fn text_delta(&mut self, kind: Kind, t: &str, out: &mut Vec<SseEvent>) {
        let idx = match self.open {
            Some(i) if self.items.get(i).map(|it| it.kind) == Some(kind) => i,
            _ => {
                let id = match kind {
                    Kind::Reasoning => reasoning_item_id(&self.request_id),
                    _ => message_item_id(&self.request_id),
                };
                // A second message or reasoning item (text after a tool call) gets its own id.
                let n = self.items.iter().filter(|i| i.kind == kind).count();
                let id = if n == 0 { id } else { format!("{id}_{n}") };
                self.open_item(kind, id, None, out)
            }
        };
        let item_id = match self.items.get_mut(idx) {
            Some(it) => {
                it.text.push_str(t);
                it.id.clone()
            }
            None => return,
        };
        let mut d =
            json!({"item_id": item_id, "output_index": idx, "content_index": 0, "delta": t});
        let name = if kind == Kind::Reasoning {
            "response.reasoning_text.delta"
        } else {
            d["logprobs"] = json!([]);
            "response.output_text.delta"
        };
        out.push(self.event(name, d));
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
            self.text_delta(Kind::Reasoning, t, &mut out);
        }
        if let Some(t) = chunk.delta().filter(|t| !t.is_empty()) {
            self.text_delta(Kind::Message, t, &mut out);
        }
        for tc in chunk.tool_call_deltas() {
            let idx = match self.calls.get(&tc.index) {
                Some(&i) => i,
                None => {
                    let n = self.calls.len();
                    let call_id = tc
                        .id
                        .clone()
                        .filter(|s| !s.is_empty())
                        .unwrap_or_else(|| format!("call_{}_{n}", self.request_id));
                    let id = call_item_id(&self.request_id, n);
                    let name = tc.name.clone().unwrap_or_default();
                    let i = self.open_item(Kind::Call, id, Some((call_id, name)), &mut out);
                    self.calls.insert(tc.index, i);
                    i
                }
            };
            if let Some(a) = tc.arguments.filter(|a| !a.is_empty()) {
                let item_id = match self.items.get_mut(idx) {
                    Some(it) if !it.done => {
                        it.text.push_str(&a);
                        it.id.clone()
                    }
                    _ => continue,
                };
                out.push(self.event(
                    "response.function_call_arguments.delta",
                    json!({"item_id": item_id, "output_index": idx, "delta": a}),
                ));
            }
        }
        if let Some(f) = chunk.finish_reason() {
            self.finish = Some(f.to_owned());
        }
        out
    }

    /// The end of a stream that finished: every open item closed, then `response.completed`
    /// (or `response.incomplete`). `fallback` is the hub's final usage when the chunks carried
    /// none.
    pub fn finish(&mut self, fallback: Option<&Usage>) -> Vec<SseEvent> {
        let mut out = self.start();
        if self.done {
            return out;
        }
        self.done = true;
        for i in 0..self.items.len() {
            self.close(i, &mut out);
        }
        let u = self
            .usage
            .clone()
            .or_else(|| fallback.cloned())
            .unwrap_or_default();
        let (st, incomplete) = status(self.finish.as_deref());
        let r = self.object(st, Some(&u), incomplete, Value::Null);
        self.last = Some(r.clone());
        let name = if st == "completed" {
            "response.completed"
        } else {
            "response.incomplete"
        };
        out.push(self.event(name, json!({"response": r})));
        out
    }

    /// The in-band `response.failed` event of a stream that failed after it started; nothing
    /// follows it. The message is the public one: upstream internals are for the operator's log.
    pub fn error(&mut self, e: &Error) -> SseEvent {
        self.done = true;
        let err = json!({"code": e.openai_code(), "message": e.public_message()});
        let r = self.object("failed", self.usage.as_ref(), Value::Null, err);
        self.event("response.failed", json!({"response": r}))
    }

    /// Numbers the encoder's next event `n` (after a provider's relayed events).
    pub(crate) fn continue_at(&mut self, n: u64) {
        self.seq = self.seq.max(n);
    }

    /// The response id.
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// The final response object, after [`StreamEncoder::finish`].
    pub fn response(&self) -> Option<&Value> {
        self.last.as_ref()
    }

    /// The output items closed so far, in their final form.
    pub fn output(&self) -> Vec<Value> {
        self.items
            .iter()
            .filter(|i| i.done)
            .map(Self::final_item)
            .collect()
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
        let mut enc = StreamEncoder::new("m", "r1", 5, Map::new());
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
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.reasoning_text.delta",
                "response.reasoning_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        for (i, e) in evs.iter().enumerate() {
            assert_eq!(e.data["sequence_number"], i as u64);
            assert_eq!(e.data["type"], e.name());
        }
        assert_eq!(evs[12].data["text"], "Hello");
        assert_eq!(evs[14].data["item"]["content"][0]["text"], "Hello");
        let done = &evs[15].data["response"];
        assert_eq!(done["id"], "resp_r1");
        assert_eq!(done["status"], "completed");
        assert_eq!(done["usage"]["input_tokens"], 9);
        assert_eq!(done["output"].as_array().unwrap().len(), 2);
        assert_eq!(enc.response().unwrap()["output"][1]["id"], "msg_r1");
    }

    #[test]
    fn tool_calls_length_and_failure() {
        let mut enc = StreamEncoder::new("m", "r2", 5, Map::new());
        let mut evs = vec![];
        evs.extend(enc.push(&delta(
            json!({"tool_calls": [{"index": 0, "id": "call_a", "type": "function",
            "function": {"name": "get", "arguments": ""}}]}),
            None,
        )));
        evs.extend(enc.push(&delta(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"a\":"}}]}),
            None,
        )));
        evs.extend(enc.push(&delta(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}),
            Some("length"),
        )));
        evs.extend(enc.finish(None));
        assert_eq!(
            names(&evs),
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.incomplete",
            ]
        );
        assert_eq!(evs[5].data["arguments"], "{\"a\":1}");
        assert_eq!(evs[6].data["item"]["call_id"], "call_a");
        assert_eq!(
            evs[7].data["response"]["incomplete_details"]["reason"],
            "max_output_tokens"
        );

        let mut enc = StreamEncoder::new("m", "r3", 5, Map::new());
        let mut evs = enc.start();
        evs.extend(enc.push(&delta(json!({"content": "x"}), None)));
        let e = enc.error(&Error::Upstream {
            status: Some(500),
            message: "secret upstream host said no".into(),
            body: None,
            retry_after: None,
        });
        assert_eq!(e.event, "response.failed");
        assert_eq!(e.data["response"]["status"], "failed");
        assert!(!e.data.to_string().contains("secret"));
        assert!(enc.push(&delta(json!({"content": "y"}), None)).is_empty());
    }
}
