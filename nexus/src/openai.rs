//! OpenAI chat-completions wire types.
//!
//! They are lossless: every field we do not model (tools, tool_calls, logprobs, response_format,
//! reasoning_content, provider extras) is kept in `extra` and written back unchanged. Stream chunks
//! keep their raw JSON text, so relays forward exactly what the upstream sent.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// A chat completion request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// Model name as the client knows it.
    pub model: String,
    /// The conversation. Kept as JSON so every message shape passes through.
    pub messages: Vec<Value>,
    /// Stream or not; absent means not (OpenAI's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// `{"include_usage": bool}` and friends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<Value>,
    /// Everything else, passed through untouched.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ChatRequest {
    /// A request with one user message.
    pub fn user(model: impl Into<String>, text: impl Into<String>) -> Self {
        ChatRequest {
            model: model.into(),
            messages: vec![serde_json::json!({"role": "user", "content": text.into()})],
            stream: None,
            stream_options: None,
            extra: Map::new(),
        }
    }

    /// Parses and validates a request body.
    pub fn from_slice(body: &[u8]) -> Result<Self> {
        let req: ChatRequest = serde_json::from_slice(body).map_err(|e| {
            let param = ["model", "messages", "stream", "stream_options"]
                .into_iter()
                .find(|f| e.to_string().contains(&format!("`{f}`")))
                .map(str::to_owned);
            Error::InvalidRequest {
                message: format!("invalid request body: {e}"),
                param,
            }
        })?;
        req.validate()?;
        Ok(req)
    }

    /// Checks what the gateway relies on; the upstream validates the rest.
    pub fn validate(&self) -> Result<()> {
        if self.model.trim().is_empty() {
            return Err(Error::invalid_param("model", "`model` must not be empty"));
        }
        if self.messages.is_empty() {
            return Err(Error::invalid_param(
                "messages",
                "`messages` must not be empty",
            ));
        }
        for (i, m) in self.messages.iter().enumerate() {
            let ok = m
                .as_object()
                .and_then(|o| o.get("role"))
                .and_then(Value::as_str)
                .is_some();
            if !ok {
                return Err(Error::invalid_param(
                    "messages",
                    format!("`messages[{i}]` must be an object with a string `role`"),
                ));
            }
        }
        Ok(())
    }

    /// Whether the client asked for usage in the stream.
    pub fn wants_stream_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }
}

/// Token usage.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt tokens.
    #[serde(default)]
    pub prompt_tokens: u64,
    /// Completion tokens.
    #[serde(default)]
    pub completion_tokens: u64,
    /// Total.
    #[serde(default)]
    pub total_tokens: u64,
    /// Details (cached tokens, reasoning tokens...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A non-streaming chat completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletion {
    /// Id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `chat.completion`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<i64>,
    /// Model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Choices, kept as JSON.
    #[serde(default)]
    pub choices: Vec<Value>,
    /// Usage, when the upstream sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ChatCompletion {
    /// The first choice's message text.
    pub fn content(&self) -> Option<&str> {
        self.choices
            .first()?
            .get("message")?
            .get("content")?
            .as_str()
    }

    /// The first choice's finish reason.
    pub fn finish_reason(&self) -> Option<&str> {
        self.choices.first()?.get("finish_reason")?.as_str()
    }
}

/// The fields of a stream chunk the gateway reads. Parsing only these keeps the hot path cheap.
#[derive(Debug, Clone, Default, Deserialize)]
struct ChunkProbe {
    #[serde(default)]
    choices: Vec<ChoiceProbe>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct ChoiceProbe {
    #[serde(default)]
    delta: Option<DeltaProbe>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct DeltaProbe {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    reasoning_content: Option<String>,
}

/// One `chat.completion.chunk` event, with its raw JSON kept byte for byte.
#[derive(Debug, Clone)]
pub struct ChatChunk {
    raw: String,
    delta: Option<String>,
    reasoning: Option<String>,
    finish_reason: Option<String>,
    usage: Option<Usage>,
    has_choices: bool,
}

impl ChatChunk {
    /// Parses a `data:` payload. An `{"error": ...}` payload (how many upstreams report a failure
    /// after the stream began) is an upstream error.
    pub fn parse(raw: String) -> Result<Self> {
        let probe: ChunkProbe = serde_json::from_str(&raw).map_err(|e| Error::Upstream {
            status: None,
            message: format!("malformed stream chunk: {e}"),
            body: Some(truncate(&raw, 4096)),
            retry_after: None,
        })?;
        if let Some(err) = probe.error {
            let message = err
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("upstream reported an error in the stream")
                .to_owned();
            return Err(Error::Upstream {
                status: None,
                message,
                body: Some(truncate(&raw, 4096)),
                retry_after: None,
            });
        }
        let first = probe.choices.first();
        Ok(ChatChunk {
            delta: first
                .and_then(|c| c.delta.as_ref())
                .and_then(|d| d.content.clone()),
            reasoning: first
                .and_then(|c| c.delta.as_ref())
                .and_then(|d| d.reasoning_content.clone()),
            finish_reason: first.and_then(|c| c.finish_reason.clone()),
            usage: probe.usage,
            has_choices: !probe.choices.is_empty(),
            raw,
        })
    }

    /// The JSON text exactly as the upstream sent it.
    pub fn json(&self) -> &str {
        &self.raw
    }

    /// The first choice's content delta, if any.
    pub fn delta(&self) -> Option<&str> {
        self.delta.as_deref()
    }

    /// The first choice's reasoning delta (DeepSeek-style `reasoning_content`), if any.
    pub fn reasoning(&self) -> Option<&str> {
        self.reasoning.as_deref()
    }

    /// The finish reason, on the last content chunk.
    pub fn finish_reason(&self) -> Option<&str> {
        self.finish_reason.as_deref()
    }

    /// Usage, on the usage chunk.
    pub fn usage(&self) -> Option<&Usage> {
        self.usage.as_ref()
    }

    /// True for the usage-only chunk (`choices: []` plus `usage`) that `include_usage` adds.
    pub fn is_usage_only(&self) -> bool {
        !self.has_choices && self.usage.is_some()
    }

    /// Parses the whole chunk as JSON.
    pub fn to_value(&self) -> Result<Value> {
        serde_json::from_str(&self.raw).map_err(|e| Error::Internal(e.to_string()))
    }
}

/// Rewrites a non-standard completion into the OpenAI shape (the original system's "Grok"
/// normalization): a string `message` becomes `{role, content}`, `text`/`content` on a choice
/// becomes `message`, missing `id/object/created/model` are filled in, and a top-level `response`
/// string is wrapped into a completion.
pub fn normalize_completion(mut v: Value, model: &str) -> Value {
    if let Some(resp) = v.get("response").and_then(Value::as_str).map(str::to_owned) {
        if v.get("choices").is_none() {
            v["choices"] = serde_json::json!([{"index": 0, "message": {"role": "assistant", "content": resp}, "finish_reason": "stop"}]);
        }
    }
    fill_envelope(&mut v, model, "chat.completion");
    if let Some(choices) = v.get_mut("choices").and_then(Value::as_array_mut) {
        for c in choices {
            let Some(obj) = c.as_object_mut() else {
                continue;
            };
            if let Some(Value::String(s)) = obj.get("message").cloned() {
                obj.insert(
                    "message".into(),
                    serde_json::json!({"role":"assistant","content": s}),
                );
            }
            if !obj.contains_key("message") {
                if let Some(t) = obj.remove("text").or_else(|| obj.remove("content")) {
                    obj.insert(
                        "message".into(),
                        serde_json::json!({"role":"assistant","content": t}),
                    );
                }
            }
            if let Some(m) = obj.get_mut("message").and_then(Value::as_object_mut) {
                m.entry("role").or_insert_with(|| "assistant".into());
            }
        }
    }
    v
}

/// The streaming counterpart of [`normalize_completion`]: `text`/`content`/`message` on a choice
/// becomes `delta`.
pub fn normalize_chunk(mut v: Value, model: &str) -> Value {
    fill_envelope(&mut v, model, "chat.completion.chunk");
    if let Some(choices) = v.get_mut("choices").and_then(Value::as_array_mut) {
        for c in choices {
            let Some(obj) = c.as_object_mut() else {
                continue;
            };
            if !obj.contains_key("delta") {
                let t = obj
                    .remove("text")
                    .or_else(|| obj.remove("content"))
                    .or_else(|| match obj.remove("message") {
                        Some(Value::Object(m)) => m.get("content").cloned(),
                        other => other,
                    });
                if let Some(t) = t {
                    obj.insert("delta".into(), serde_json::json!({"content": t}));
                }
            }
        }
    }
    v
}

fn fill_envelope(v: &mut Value, model: &str, object: &str) {
    let Some(o) = v.as_object_mut() else { return };
    o.entry("id")
        .or_insert_with(|| format!("chatcmpl-{}", crate::crypto::random_id()).into());
    o.entry("object").or_insert_with(|| object.into());
    o.entry("created")
        .or_insert_with(|| (crate::now_ms() / 1000).into());
    o.entry("model").or_insert_with(|| model.into());
}

/// At most `max` bytes of `s`, cut on a character boundary.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trips_unknown_fields() {
        let src = serde_json::json!({
            "model": "gpt-4o",
            "messages": [{"role":"user","content":[{"type":"text","text":"hi"},{"type":"image_url","image_url":{"url":"data:x"}}]}],
            "tools": [{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],
            "response_format": {"type":"json_object"},
            "max_tokens": 5, "top_p": 0.5, "logprobs": true, "x_vendor": {"a": [1,2]}
        });
        let r: ChatRequest = serde_json::from_value(src.clone()).unwrap();
        assert_eq!(serde_json::to_value(&r).unwrap(), src);
    }

    #[test]
    fn completion_round_trips() {
        let src = serde_json::json!({
            "id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m",
            "choices":[{"index":0,"message":{"role":"assistant","content":null,
              "tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]},
              "logprobs":null,"finish_reason":"tool_calls"}],
            "usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3,
              "prompt_tokens_details":{"cached_tokens":0}},
            "system_fingerprint":"fp"
        });
        let c: ChatCompletion = serde_json::from_value(src.clone()).unwrap();
        assert_eq!(serde_json::to_value(&c).unwrap(), src);
        assert_eq!(c.finish_reason(), Some("tool_calls"));
    }

    #[test]
    fn validation_errors_name_the_field() {
        let e = ChatRequest::from_slice(br#"{"messages":[]}"#).unwrap_err();
        assert_eq!(e.param(), Some("model"));
        let e = ChatRequest::from_slice(br#"{"model":"m","messages":[]}"#).unwrap_err();
        assert_eq!(e.param(), Some("messages"));
        let e = ChatRequest::from_slice(br#"{"model":"m","messages":[1]}"#).unwrap_err();
        assert_eq!(e.param(), Some("messages"));
        assert!(ChatRequest::from_slice(b"{not json").is_err());
        assert!(ChatRequest::from_slice(br#"{"model":5,"messages":[]}"#).is_err());
    }

    #[test]
    fn chunk_probe() {
        let c = ChatChunk::parse(
            r#"{"choices":[{"index":0,"delta":{"content":"hé"},"finish_reason":null}]}"#.into(),
        )
        .unwrap();
        assert_eq!(c.delta(), Some("hé"));
        assert!(!c.is_usage_only());
        let u = ChatChunk::parse(
            r#"{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}"#
                .into(),
        )
        .unwrap();
        assert!(u.is_usage_only());
        assert!(ChatChunk::parse("{oops".into()).is_err());
        let e = ChatChunk::parse(r#"{"error":{"message":"boom"}}"#.into()).unwrap_err();
        assert!(e.to_string().contains("boom"));
    }

    #[test]
    fn normalization() {
        let v = normalize_completion(serde_json::json!({"choices":[{"message":"hi"}]}), "grok");
        assert_eq!(v["choices"][0]["message"]["content"], "hi");
        assert_eq!(v["object"], "chat.completion");
        let v = normalize_chunk(serde_json::json!({"choices":[{"text":"a"}]}), "grok");
        assert_eq!(v["choices"][0]["delta"]["content"], "a");
        let v = normalize_completion(serde_json::json!({"response":"r"}), "grok");
        assert_eq!(v["choices"][0]["message"]["content"], "r");
    }
}
