//! Gemini `GenerateContentResponse` → OpenAI chat completion, and its stream chunks → OpenAI
//! chunks.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::error::{Error, Result};
use crate::openai::truncate;
use crate::upstream::{Decoded, StreamDecoder};

/// The fields of a `GenerateContentResponse` the translation reads.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GenResponse {
    #[serde(default)]
    candidates: Vec<Candidate>,
    #[serde(default)]
    prompt_feedback: Option<PromptFeedback>,
    #[serde(default)]
    usage_metadata: Option<UsageMetadata>,
    #[serde(default)]
    response_id: Option<String>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Candidate {
    #[serde(default)]
    content: Option<Content>,
    #[serde(default)]
    finish_reason: Option<String>,
    #[serde(default)]
    index: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
struct Content {
    #[serde(default)]
    parts: Vec<Part>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Part {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    thought: Option<bool>,
    #[serde(default)]
    function_call: Option<FunctionCall>,
    #[serde(default)]
    thought_signature: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct FunctionCall {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    args: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PromptFeedback {
    #[serde(default)]
    block_reason: Option<String>,
}

/// `usageMetadata`. Counts are optional in the API (absent means zero).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UsageMetadata {
    #[serde(default)]
    prompt_token_count: u64,
    #[serde(default)]
    candidates_token_count: u64,
    #[serde(default)]
    thoughts_token_count: u64,
    #[serde(default)]
    cached_content_token_count: u64,
    #[serde(default)]
    tool_use_prompt_token_count: u64,
}

impl UsageMetadata {
    /// OpenAI `usage`: thinking tokens are completion tokens (they are billed as output), tool-use
    /// prompt tokens are prompt tokens, so the total matches Gemini's `totalTokenCount`.
    pub(crate) fn to_openai(&self) -> Value {
        let prompt = self.prompt_token_count + self.tool_use_prompt_token_count;
        let completion = self.candidates_token_count + self.thoughts_token_count;
        json!({
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": { "cached_tokens": self.cached_content_token_count },
            "completion_tokens_details": { "reasoning_tokens": self.thoughts_token_count },
        })
    }
}

/// Gemini's finish reason as OpenAI's. `has_calls`: the candidate called a function (Gemini says
/// STOP then, OpenAI `tool_calls`).
pub(crate) fn finish_reason(reason: &str, has_calls: bool) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => {
            "content_filter"
        }
        _ if has_calls => "tool_calls",
        _ => "stop",
    }
}

fn parse(body: &[u8]) -> Result<GenResponse> {
    serde_json::from_slice::<GenResponse>(body).map_err(|e| Error::Upstream {
        status: None,
        message: format!("malformed Gemini answer: {e}"),
        body: Some(truncate(&String::from_utf8_lossy(body), 4096)),
        retry_after: None,
    })
}

/// An `{"error": {code, message, status}}` object as an upstream error.
fn in_band_error(err: &Value, raw: &str) -> Error {
    let message = err
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("Gemini reported an error")
        .to_owned();
    let status = err
        .get("code")
        .and_then(Value::as_u64)
        .filter(|c| (400..600).contains(c))
        .map(|c| c as u16);
    Error::Upstream {
        status,
        message,
        body: Some(truncate(raw, 4096)),
        retry_after: None,
    }
}

/// A tool call id. Gemini's own id when it sends one; else one made from the answer's id, so it
/// is unique per answer and the same wherever the call is shown. The part's thought signature,
/// which Gemini 3 wants back with the call in the next request, rides in the id: OpenAI clients
/// send tool call ids back verbatim and have no other place for it.
fn call_id(part: &Part, fc: &FunctionCall, base: &str, n: usize) -> String {
    let id = match &fc.id {
        Some(id) if !id.is_empty() => id.clone(),
        _ => format!("call_{base}_{n}"),
    };
    match part.thought_signature.as_deref().filter(|s| !s.is_empty()) {
        Some(sig) => super::signature::attach(&id, sig),
        None => id,
    }
}

/// The answer's id as an id stem: alphanumerics only, so the tool call ids made from it are
/// plain and never contain the signature separator.
fn answer_base(response_id: Option<&str>) -> String {
    let base: String = response_id
        .unwrap_or("")
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    if base.is_empty() {
        crate::crypto::random_id()
    } else {
        base
    }
}

fn tool_call(fc: &FunctionCall, id: String, index: Option<usize>) -> Value {
    let args = fc.args.clone().unwrap_or_else(|| json!({}));
    let mut v = json!({
        "id": id,
        "type": "function",
        "function": { "name": fc.name, "arguments": args.to_string() },
    });
    if let Some(i) = index {
        v["index"] = i.into();
    }
    v
}

/// The non-stream translation.
pub(crate) fn completion(body: &[u8], client_model: &str) -> Result<Bytes> {
    let r = parse(body)?;
    if let Some(err) = &r.error {
        return Err(in_band_error(err, &String::from_utf8_lossy(body)));
    }
    let base = answer_base(r.response_id.as_deref());
    let mut choices = Vec::with_capacity(r.candidates.len().max(1));
    let mut calls_made = 0usize;
    for (pos, c) in r.candidates.iter().enumerate() {
        let (mut text, mut thoughts, mut calls) = (String::new(), String::new(), Vec::new());
        for p in c.content.iter().flat_map(|c| &c.parts) {
            if let Some(t) = &p.text {
                if p.thought == Some(true) {
                    thoughts.push_str(t);
                } else {
                    text.push_str(t);
                }
            }
            if let Some(fc) = &p.function_call {
                calls.push(tool_call(fc, call_id(p, fc, &base, calls_made), None));
                calls_made += 1;
            }
        }
        let has_calls = !calls.is_empty();
        // OpenAI sends `null` content for a pure tool call or an answer with no output at all.
        let content = if text.is_empty() && (has_calls || c.content.is_none()) {
            Value::Null
        } else {
            Value::String(text)
        };
        let mut msg = json!({ "role": "assistant", "content": content });
        if !thoughts.is_empty() {
            msg["reasoning_content"] = thoughts.into();
        }
        if has_calls {
            msg["tool_calls"] = Value::Array(calls);
        }
        let finish = c
            .finish_reason
            .as_deref()
            .map(|f| finish_reason(f, has_calls))
            .unwrap_or(if has_calls { "tool_calls" } else { "stop" });
        choices.push(json!({
            "index": c.index.map_or(pos as u64, u64::from),
            "message": msg,
            "logprobs": null,
            "finish_reason": finish,
        }));
    }
    if choices.is_empty() {
        // A blocked prompt has no candidates. It is answered as OpenAI answers filtered output
        // (an empty message with `content_filter`), so the client sees why, and the prompt tokens
        // Google counts are still billed.
        let blocked = r
            .prompt_feedback
            .as_ref()
            .and_then(|f| f.block_reason.as_deref())
            .is_some();
        if !blocked {
            return Err(Error::Upstream {
                status: None,
                message: "Gemini answer has no candidates".into(),
                body: Some(truncate(&String::from_utf8_lossy(body), 4096)),
                retry_after: None,
            });
        }
        choices.push(json!({
            "index": 0,
            "message": { "role": "assistant", "content": null },
            "logprobs": null,
            "finish_reason": "content_filter",
        }));
    }
    let mut out = json!({
        "id": format!("chatcmpl-{base}"),
        "object": "chat.completion",
        "created": crate::now_ms() / 1000,
        "model": client_model,
        "choices": choices,
    });
    if let Some(u) = &r.usage_metadata {
        out["usage"] = u.to_openai();
    }
    serde_json::to_vec(&out)
        .map(Bytes::from)
        .map_err(|e| Error::Internal(e.to_string()))
}

/// Per-candidate stream state.
#[derive(Default)]
struct Choice {
    /// The role chunk went out.
    started: bool,
    /// Tool calls sent so far (the next call's `index`).
    calls: usize,
    /// The finish chunk went out.
    finished: bool,
}

/// The stream translation. Gemini sends whole GenerateContentResponse objects, each with the
/// new text of each candidate, and simply ends after the one that carries `finishReason`; the
/// hub treats "closed after a finish_reason" as the normal end, so no `Done` is needed.
pub(crate) struct Decoder {
    model: String,
    /// `(id, created)`, fixed by the first chunk.
    ids: Option<(String, i64)>,
    choices: BTreeMap<u32, Choice>,
    usage: Option<UsageMetadata>,
    usage_sent: bool,
}

impl Decoder {
    /// A decoder answering as `client_model`.
    pub(crate) fn new(client_model: &str) -> Self {
        Decoder {
            model: client_model.to_owned(),
            ids: None,
            choices: BTreeMap::new(),
            usage: None,
            usage_sent: false,
        }
    }

    fn chunk(&self, choices: Value, usage: Option<Value>) -> String {
        let (id, created) = self.ids.clone().unwrap_or_default();
        let mut v = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": self.model,
            "choices": choices,
        });
        if let Some(u) = usage {
            v["usage"] = u;
        }
        v.to_string()
    }

    fn delta(&self, index: u32, delta: Value, finish: Option<&str>) -> String {
        self.chunk(
            json!([{ "index": index, "delta": delta, "logprobs": null, "finish_reason": finish }]),
            None,
        )
    }
}

impl StreamDecoder for Decoder {
    fn decode(&mut self, _event: &str, data: String) -> Result<Decoded> {
        let d = data.trim();
        if d.is_empty() {
            return Ok(Decoded::Chunks(vec![]));
        }
        let r = parse(d.as_bytes())?;
        if let Some(err) = &r.error {
            return Err(in_band_error(err, d));
        }
        if self.ids.is_none() {
            let base = answer_base(r.response_id.as_deref());
            self.ids = Some((format!("chatcmpl-{base}"), crate::now_ms() / 1000));
        }
        if let Some(u) = &r.usage_metadata {
            // Gemini repeats usage on every chunk as running totals: the last one is the answer's.
            self.usage = Some(u.clone());
        }
        let call_base = self
            .ids
            .as_ref()
            .map(|(id, _)| id.trim_start_matches("chatcmpl-").to_owned())
            .unwrap_or_default();
        let mut out = Vec::new();
        let mut any_finish = false;
        let blocked = r.candidates.is_empty()
            && r.prompt_feedback
                .as_ref()
                .and_then(|f| f.block_reason.as_deref())
                .is_some();
        if blocked {
            // See `completion`: a blocked prompt is an empty, filtered answer.
            let ch = self.choices.entry(0).or_default();
            if !ch.finished {
                let first = !ch.started;
                ch.started = true;
                ch.finished = true;
                if first {
                    out.push(self.delta(0, json!({"role": "assistant", "content": ""}), None));
                }
                out.push(self.delta(0, json!({}), Some("content_filter")));
                any_finish = true;
            }
        }
        for (pos, c) in r.candidates.iter().enumerate() {
            let index = c.index.unwrap_or(pos as u32);
            let ch = self.choices.entry(index).or_default();
            if ch.finished {
                continue;
            }
            let first = !ch.started;
            ch.started = true;
            let mut calls_before = ch.calls;
            if first {
                out.push(self.delta(index, json!({"role": "assistant", "content": ""}), None));
            }
            // Consecutive text parts of one kind become one delta.
            let mut pending: Option<(bool, String)> = None;
            for p in c.content.iter().flat_map(|c| &c.parts) {
                if let Some(t) = p.text.as_deref().filter(|t| !t.is_empty()) {
                    let thought = p.thought == Some(true);
                    match &mut pending {
                        Some((k, s)) if *k == thought => s.push_str(t),
                        _ => {
                            if let Some(prev) = pending.take() {
                                out.push(self.text_delta(index, prev));
                            }
                            pending = Some((thought, t.to_owned()));
                        }
                    }
                }
                if let Some(fc) = &p.function_call {
                    if let Some(prev) = pending.take() {
                        out.push(self.text_delta(index, prev));
                    }
                    let id = call_id(p, fc, &format!("{call_base}_{index}"), calls_before);
                    out.push(self.delta(
                        index,
                        json!({ "tool_calls": [tool_call(fc, id, Some(calls_before))] }),
                        None,
                    ));
                    calls_before += 1;
                }
            }
            if let Some(prev) = pending.take() {
                out.push(self.text_delta(index, prev));
            }
            let ch = self.choices.entry(index).or_default();
            ch.calls = calls_before;
            if let Some(f) = c.finish_reason.as_deref() {
                ch.finished = true;
                let reason = finish_reason(f, ch.calls > 0);
                any_finish = true;
                out.push(self.delta(index, json!({}), Some(reason)));
            }
        }
        if any_finish && !self.usage_sent {
            if let Some(u) = &self.usage {
                self.usage_sent = true;
                out.push(self.chunk(json!([]), Some(u.to_openai())));
            }
        }
        Ok(Decoded::Chunks(out))
    }
}

impl Decoder {
    fn text_delta(&self, index: u32, (thought, text): (bool, String)) -> String {
        let key = if thought {
            "reasoning_content"
        } else {
            "content"
        };
        let mut delta = Map::new();
        delta.insert(key.into(), Value::String(text));
        self.delta(index, Value::Object(delta), None)
    }
}
