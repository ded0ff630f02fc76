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

    /// Parses and validates a request body under the default [`RequestLimits`].
    pub fn from_slice(body: &[u8]) -> Result<Self> {
        Self::from_slice_limited(body, &RequestLimits::default())
    }

    /// Parses and validates a request body in one pass, refusing it as soon as it goes over a
    /// limit: a 16 MiB body of tiny messages must not become a gigabyte of JSON trees.
    pub fn from_slice_limited(body: &[u8], limits: &RequestLimits) -> Result<Self> {
        use serde::de::DeserializeSeed;
        let budget = Budget::new(limits);
        let mut de = serde_json::Deserializer::from_slice(body);
        let parsed = RequestSeed(&budget)
            .deserialize(&mut de)
            .and_then(|r| de.end().map(|()| r));
        let req = match parsed {
            Ok(r) => r,
            Err(e) => {
                if let Some(over) = budget.over.take() {
                    return Err(over);
                }
                let param = ["model", "messages", "stream", "stream_options"]
                    .into_iter()
                    .find(|f| e.to_string().contains(&format!("`{f}`")))
                    .map(str::to_owned);
                return Err(Error::InvalidRequest {
                    message: format!("invalid request body: {e}"),
                    param,
                });
            }
        };
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

/// Parses a JSON object body with every value counted against `limits.max_json_values`: the
/// bounded parse for request formats other than chat (their own translation then checks the
/// rest).
pub(crate) fn parse_object_limited(
    body: &[u8],
    limits: &RequestLimits,
) -> Result<Map<String, Value>> {
    use serde::de::DeserializeSeed;
    let budget = Budget::new(limits);
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = ValueSeed(&budget)
        .deserialize(&mut de)
        .and_then(|r| de.end().map(|()| r));
    match parsed {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(Error::invalid(
            "invalid request body: expected a JSON object",
        )),
        Err(e) => Err(budget
            .over
            .take()
            .unwrap_or_else(|| Error::invalid(format!("invalid request body: {e}")))),
    }
}

/// Bounds on what one request may make the gateway hold. Each is a 400 when exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RequestLimits {
    /// Most entries in `messages`.
    pub max_messages: usize,
    /// Most parts in one message's `content` array.
    pub max_content_parts: usize,
    /// Most JSON values in the whole body, an object counting as 8 (an object costs about eight
    /// times a scalar in memory). Long strings (images, documents) count as one.
    pub max_json_values: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            max_messages: 10_000,
            max_content_parts: 1_000,
            max_json_values: 1_000_000,
        }
    }
}

/// What one parse may still allocate; the first limit crossed is kept to answer with.
pub(crate) struct Budget {
    pub(crate) limits: RequestLimits,
    values: std::cell::Cell<usize>,
    pub(crate) over: std::cell::Cell<Option<Error>>,
}

impl Budget {
    pub(crate) fn new(limits: &RequestLimits) -> Self {
        Budget {
            limits: *limits,
            values: std::cell::Cell::new(limits.max_json_values),
            over: std::cell::Cell::new(None),
        }
    }

    pub(crate) fn spend<E: serde::de::Error>(&self, n: usize) -> std::result::Result<(), E> {
        match self.values.get().checked_sub(n) {
            Some(left) => {
                self.values.set(left);
                Ok(())
            }
            None => Err(self.refuse(
                None,
                format!(
                    "request body is too complex: more than {} JSON values",
                    self.limits.max_json_values
                ),
            )),
        }
    }

    pub(crate) fn refuse<E: serde::de::Error>(&self, param: Option<&str>, message: String) -> E {
        let e = E::custom(&message);
        self.over.set(Some(Error::InvalidRequest {
            message,
            param: param.map(str::to_owned),
        }));
        e
    }
}

/// Deserializes the request's top level with every value counted against the budget.
struct RequestSeed<'a>(&'a Budget);

impl<'de> serde::de::DeserializeSeed<'de> for RequestSeed<'_> {
    type Value = ChatRequest;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        d: D,
    ) -> std::result::Result<ChatRequest, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for RequestSeed<'_> {
    type Value = ChatRequest;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a chat completion request object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<ChatRequest, A::Error> {
        use serde::de::Error as _;
        let b = self.0;
        let (mut model, mut messages, mut stream, mut stream_options) = (None, None, None, None);
        let mut extra = Map::new();
        while let Some(k) = map.next_key::<String>()? {
            b.spend(1)?;
            match k.as_str() {
                "model" => model = Some(map.next_value::<String>()?),
                "messages" => messages = Some(map.next_value_seed(MessagesSeed(b))?),
                "stream" => stream = map.next_value::<Option<bool>>()?,
                "stream_options" => stream_options = map.next_value_seed(OptionalValue(b))?,
                _ => {
                    let v = map.next_value_seed(ValueSeed(b))?;
                    extra.insert(k, v);
                }
            }
        }
        Ok(ChatRequest {
            model: model.ok_or_else(|| A::Error::missing_field("model"))?,
            messages: messages.ok_or_else(|| A::Error::missing_field("messages"))?,
            stream,
            stream_options,
            extra,
        })
    }
}

/// `messages`: at most `max_messages`, each a bounded JSON value whose `content` array has at
/// most `max_content_parts` parts.
struct MessagesSeed<'a>(&'a Budget);

impl<'de> serde::de::DeserializeSeed<'de> for MessagesSeed<'_> {
    type Value = Vec<Value>;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        d: D,
    ) -> std::result::Result<Vec<Value>, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for MessagesSeed<'_> {
    type Value = Vec<Value>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an array of messages")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> std::result::Result<Vec<Value>, A::Error> {
        let b = self.0;
        let mut out = Vec::new();
        while let Some(m) = seq.next_element_seed(ValueSeed(b))? {
            if out.len() == b.limits.max_messages {
                return Err(b.refuse(
                    Some("messages"),
                    format!("`messages` has more than {} entries", b.limits.max_messages),
                ));
            }
            let parts = m
                .get("content")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            if parts > b.limits.max_content_parts {
                return Err(b.refuse(
                    Some("messages"),
                    format!(
                        "`messages[{}].content` has more than {} parts",
                        out.len(),
                        b.limits.max_content_parts
                    ),
                ));
            }
            out.push(m);
        }
        Ok(out)
    }
}

/// An optional value (`null` is `None`), counted against the budget.
struct OptionalValue<'a>(&'a Budget);

impl<'de> serde::de::DeserializeSeed<'de> for OptionalValue<'_> {
    type Value = Option<Value>;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        d: D,
    ) -> std::result::Result<Option<Value>, D::Error> {
        let v = ValueSeed(self.0).deserialize(d)?;
        Ok((!v.is_null()).then_some(v))
    }
}

/// Any JSON value, each node counted against the budget as it is built.
pub(crate) struct ValueSeed<'a>(pub(crate) &'a Budget);

impl<'de> serde::de::DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        d: D,
    ) -> std::result::Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for ValueSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> std::result::Result<Value, E> {
        self.0.spend(1)?;
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<Value, E> {
        self.0.spend(1)?;
        Ok(Value::from(v))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<Value, E> {
        self.0.spend(1)?;
        Ok(Value::from(v))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> std::result::Result<Value, E> {
        self.0.spend(1)?;
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<Value, E> {
        self.0.spend(1)?;
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> std::result::Result<Value, E> {
        self.0.spend(1)?;
        Ok(Value::String(v))
    }

    fn visit_unit<E: serde::de::Error>(self) -> std::result::Result<Value, E> {
        self.0.spend(1)?;
        Ok(Value::Null)
    }

    fn visit_none<E: serde::de::Error>(self) -> std::result::Result<Value, E> {
        self.visit_unit()
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> std::result::Result<Value, D::Error> {
        serde::de::DeserializeSeed::deserialize(self, d)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> std::result::Result<Value, A::Error> {
        self.0.spend(1)?;
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(ValueSeed(self.0))? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<Value, A::Error> {
        self.0.spend(8)?;
        let mut out = Map::new();
        while let Some(k) = map.next_key::<String>()? {
            let v = map.next_value_seed(ValueSeed(self.0))?;
            out.insert(k, v);
        }
        Ok(Value::Object(out))
    }
}

/// `GET /v1/models`: the models a caller may use, in OpenAI's list shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelList {
    /// Always `list`.
    pub object: String,
    /// One entry per client-facing model name.
    pub data: Vec<ModelObject>,
}

/// One model of a [`ModelList`]. Provider names are the operator's business: `owned_by` is the
/// hub. The legacy fields (`permission`, `root`, `parent`) are kept for older OpenAI clients.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelObject {
    /// The name to send as `model`.
    pub id: String,
    /// Always `model`.
    pub object: String,
    /// Unix seconds the model was added.
    pub created: i64,
    /// Always `nexus`.
    pub owned_by: String,
    /// One permissive legacy permission object.
    pub permission: Vec<Value>,
    /// The model itself.
    pub root: String,
    /// Always null.
    pub parent: Option<String>,
    /// The hub's own field (OpenAI's objects have none): `chat` or `embedding`, which endpoint
    /// serves the model.
    #[serde(default)]
    pub kind: crate::records::ModelKind,
}

impl ModelObject {
    /// The entry for a client-facing chat model name added at `created`.
    pub fn new(id: &str, created: i64) -> Self {
        Self::of_kind(id, created, crate::records::ModelKind::Chat)
    }

    /// The entry for a client-facing model name of `kind` added at `created`.
    pub fn of_kind(id: &str, created: i64, kind: crate::records::ModelKind) -> Self {
        ModelObject {
            id: id.to_owned(),
            object: "model".into(),
            created,
            owned_by: "nexus".into(),
            permission: vec![serde_json::json!({
                "id": format!("modelperm-{id}"), "object": "model_permission", "created": created,
                "allow_create_engine": false, "allow_sampling": true, "allow_logprobs": true,
                "allow_search_indices": false, "allow_view": true, "allow_fine_tuning": false,
                "organization": "*", "group": null, "is_blocking": false
            })],
            root: id.to_owned(),
            parent: None,
            kind,
        }
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
    /// Content and reasoning deltas of the other choices (`n > 1`); empty (no allocation) for
    /// the usual single choice.
    others: Vec<String>,
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
        let others = probe
            .choices
            .iter()
            .skip(1)
            .filter_map(|c| c.delta.as_ref())
            .flat_map(|d| [d.content.clone(), d.reasoning_content.clone()])
            .flatten()
            .collect();
        let first = probe.choices.first();
        Ok(ChatChunk {
            others,
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

    /// Every piece of completion text in this chunk: each choice's content and reasoning
    /// deltas. Usage estimates count all of them (`n > 1`, reasoning models).
    pub fn completion_texts(&self) -> impl Iterator<Item = &str> {
        self.delta
            .as_deref()
            .into_iter()
            .chain(self.reasoning.as_deref())
            .chain(self.others.iter().map(String::as_str))
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

    /// The first choice's tool-call deltas, in order. Tool calls are rare, so only a chunk that
    /// mentions them is parsed again.
    pub fn tool_call_deltas(&self) -> Vec<ToolCallDelta> {
        if !self.raw.contains("\"tool_calls\"") {
            return Vec::new();
        }
        let probe: ToolProbe = serde_json::from_str(&self.raw).unwrap_or_default();
        probe
            .choices
            .into_iter()
            .filter(|c| c.index == 0)
            .filter_map(|c| c.delta?.tool_calls)
            .flatten()
            .map(|t| {
                let f = t.function.unwrap_or_default();
                ToolCallDelta {
                    index: t.index,
                    id: t.id,
                    name: f.name,
                    arguments: f.arguments,
                }
            })
            .collect()
    }
}

/// One piece of a streamed tool call: the first piece of a call has its `id` and `name`, the
/// rest add to its `arguments`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolCallDelta {
    /// The call's position in the message (`tool_calls[].index`).
    pub index: u64,
    /// The call id, on its first piece.
    pub id: Option<String>,
    /// The function name, on its first piece.
    pub name: Option<String>,
    /// A fragment of the arguments' JSON text.
    pub arguments: Option<String>,
}

#[derive(Deserialize, Default)]
struct ToolProbe {
    #[serde(default)]
    choices: Vec<ToolChoiceProbe>,
}

#[derive(Deserialize, Default)]
struct ToolChoiceProbe {
    #[serde(default)]
    index: u64,
    #[serde(default)]
    delta: Option<ToolDeltaProbe>,
}

#[derive(Deserialize, Default)]
struct ToolDeltaProbe {
    #[serde(default)]
    tool_calls: Option<Vec<ToolCallProbe>>,
}

#[derive(Deserialize, Default)]
struct ToolCallProbe {
    #[serde(default)]
    index: u64,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<ToolFnProbe>,
}

#[derive(Deserialize, Default)]
struct ToolFnProbe {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
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
        .or_insert_with(|| (crate::time::now_ms() / 1000).into());
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
    fn limits_refuse_early_with_a_clear_error() {
        let lim = RequestLimits {
            max_messages: 3,
            max_content_parts: 2,
            max_json_values: 200,
        };
        let ok = br#"{"model":"m","messages":[{"role":"user","content":"a"}],"top_p":1}"#;
        let r = ChatRequest::from_slice_limited(ok, &lim).unwrap();
        assert_eq!(r.extra["top_p"], 1);
        let many = format!(
            r#"{{"model":"m","messages":[{}]}}"#,
            [r#"{"role":"user","content":""}"#; 4].join(",")
        );
        let e = ChatRequest::from_slice_limited(many.as_bytes(), &lim).unwrap_err();
        assert_eq!(e.param(), Some("messages"));
        assert!(e.to_string().contains("more than 3 entries"), "{e}");
        let parts = br#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"},{"type":"text","text":"c"}]}]}"#;
        let e = ChatRequest::from_slice_limited(parts, &lim).unwrap_err();
        assert!(e.to_string().contains("more than 2 parts"), "{e}");
        let deep = format!(
            r#"{{"model":"m","messages":[{{"role":"user"}}],"x":[{}]}}"#,
            ["{}"; 100].join(",")
        );
        let e = ChatRequest::from_slice_limited(deep.as_bytes(), &lim).unwrap_err();
        assert!(e.to_string().contains("too complex"), "{e}");
        // Null stream_options is absent; trailing garbage is refused.
        let r = ChatRequest::from_slice(
            br#"{"model":"m","messages":[{"role":"user"}],"stream_options":null}"#,
        )
        .unwrap();
        assert!(r.stream_options.is_none());
        assert!(
            ChatRequest::from_slice(br#"{"model":"m","messages":[{"role":"user"}]} x"#).is_err()
        );
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
