//! Embeddings: OpenAI's `/v1/embeddings` request and answer types, their bounded parse, and the
//! hub's embeddings path (`hub.rs`: admission, routing to embedding models, failover, the one
//! usage row). How each provider kind is called is in `upstream/embeddings.rs`.
//!
//! The request is OpenAI's shape: `input` is a string, an array of strings, an array of token
//! ids or an array of token-id arrays; `dimensions`, `encoding_format` (`float` or `base64`) and
//! `user` are understood; any other field is kept and passed on to OpenAI-compatible upstreams.

mod hub;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::openai::{Budget, RequestLimits, Usage, ValueSeed};
use crate::usage::UsageSource;

/// The most inputs one request may carry (OpenAI's own limit).
pub const MAX_INPUTS: usize = 2048;

/// What to embed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EmbeddingInput {
    /// One text.
    Text(String),
    /// Several texts, one embedding each.
    Texts(Vec<String>),
    /// One input given as token ids.
    Tokens(Vec<u32>),
    /// Several inputs given as token ids.
    TokenArrays(Vec<Vec<u32>>),
}

impl EmbeddingInput {
    /// How many embeddings the answer holds.
    pub fn len(&self) -> usize {
        match self {
            EmbeddingInput::Text(_) | EmbeddingInput::Tokens(_) => 1,
            EmbeddingInput::Texts(v) => v.len(),
            EmbeddingInput::TokenArrays(v) => v.len(),
        }
    }

    /// Whether there is nothing to embed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the input is token ids rather than text.
    pub fn is_tokens(&self) -> bool {
        matches!(
            self,
            EmbeddingInput::Tokens(_) | EmbeddingInput::TokenArrays(_)
        )
    }

    /// The texts, in order (none for token input).
    pub fn texts(&self) -> Vec<&str> {
        match self {
            EmbeddingInput::Text(t) => vec![t.as_str()],
            EmbeddingInput::Texts(v) => v.iter().map(String::as_str).collect(),
            EmbeddingInput::Tokens(_) | EmbeddingInput::TokenArrays(_) => vec![],
        }
    }
}

impl From<&str> for EmbeddingInput {
    fn from(s: &str) -> Self {
        EmbeddingInput::Text(s.to_owned())
    }
}

impl From<String> for EmbeddingInput {
    fn from(s: String) -> Self {
        EmbeddingInput::Text(s)
    }
}

impl From<Vec<String>> for EmbeddingInput {
    fn from(v: Vec<String>) -> Self {
        EmbeddingInput::Texts(v)
    }
}

/// How vectors are written in the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncodingFormat {
    /// A JSON array of numbers.
    #[default]
    Float,
    /// The little-endian `f32` bytes of the vector, in standard base64 (as OpenAI sends them).
    Base64,
}

/// An embeddings request (`POST /v1/embeddings`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingsRequest {
    /// Model name as the client knows it (an `embedding` model).
    pub model: String,
    /// What to embed.
    pub input: EmbeddingInput,
    /// The size of each vector, for models that can shorten theirs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<u32>,
    /// `float` (the default) or `base64`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding_format: Option<EncodingFormat>,
    /// The end user, passed on to OpenAI-compatible upstreams.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Every other field, passed on to OpenAI-compatible upstreams untouched.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl EmbeddingsRequest {
    /// A request for `input` with the defaults.
    pub fn new(model: impl Into<String>, input: impl Into<EmbeddingInput>) -> Self {
        EmbeddingsRequest {
            model: model.into(),
            input: input.into(),
            dimensions: None,
            encoding_format: None,
            user: None,
            extra: Map::new(),
        }
    }

    /// Parses and validates a body under the default [`RequestLimits`].
    pub fn from_slice(body: &[u8]) -> Result<Self> {
        Self::from_slice_limited(body, &RequestLimits::default())
    }

    /// Parses and validates a body in one pass under `limits` (`max_json_values` bounds the
    /// whole body, each token id counting as one value) and [`MAX_INPUTS`].
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
                let param = ["model", "input", "dimensions", "encoding_format", "user"]
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

    /// Checks what the hub relies on; the upstream validates the rest.
    pub fn validate(&self) -> Result<()> {
        if self.model.trim().is_empty() {
            return Err(Error::invalid_param("model", "`model` must not be empty"));
        }
        let n = self.input.len();
        if n == 0 {
            return Err(Error::invalid_param("input", "`input` must not be empty"));
        }
        if n > MAX_INPUTS {
            return Err(Error::invalid_param(
                "input",
                format!("`input` has more than {MAX_INPUTS} entries"),
            ));
        }
        let empty = match &self.input {
            EmbeddingInput::Text(t) => t.is_empty(),
            EmbeddingInput::Texts(v) => v.iter().any(String::is_empty),
            EmbeddingInput::Tokens(v) => v.is_empty(),
            EmbeddingInput::TokenArrays(v) => v.iter().any(Vec::is_empty),
        };
        if empty {
            return Err(Error::invalid_param(
                "input",
                "`input` must not contain an empty string or an empty token array",
            ));
        }
        if self.dimensions == Some(0) {
            return Err(Error::invalid_param(
                "dimensions",
                "`dimensions` must be at least 1",
            ));
        }
        Ok(())
    }

    /// The encoding the client asked for (`float` when absent).
    pub fn format(&self) -> EncodingFormat {
        self.encoding_format.unwrap_or_default()
    }
}

/// One vector of an answer, as the client asked for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EmbeddingVector {
    /// Numbers.
    Float(Vec<f32>),
    /// Base64 of the little-endian `f32` bytes.
    Base64(String),
}

impl EmbeddingVector {
    /// The vector written in `format`.
    pub fn encode(values: Vec<f32>, format: EncodingFormat) -> Self {
        match format {
            EncodingFormat::Float => EmbeddingVector::Float(values),
            EncodingFormat::Base64 => {
                let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
                EmbeddingVector::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
            }
        }
    }

    /// The numbers, decoding base64 when needed.
    pub fn to_floats(&self) -> Result<Vec<f32>> {
        match self {
            EmbeddingVector::Float(v) => Ok(v.clone()),
            EmbeddingVector::Base64(s) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(s)
                    .map_err(|e| Error::invalid(format!("embedding is not valid base64: {e}")))?;
                if bytes.len() % 4 != 0 {
                    return Err(Error::invalid(
                        "a base64 embedding is not a whole number of f32 values",
                    ));
                }
                Ok(bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect())
            }
        }
    }
}

/// One embedding of an [`EmbeddingList`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Embedding {
    /// Always `embedding`.
    pub object: String,
    /// Its input's position.
    pub index: usize,
    /// The vector.
    pub embedding: EmbeddingVector,
}

/// The usage of an embeddings answer (OpenAI's shape: no completion tokens).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmbeddingUsage {
    /// Input tokens.
    #[serde(default)]
    pub prompt_tokens: u64,
    /// The same number.
    #[serde(default)]
    pub total_tokens: u64,
}

/// An embeddings answer, OpenAI's `{"object": "list", "data", "model", "usage"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingList {
    /// Always `list`.
    pub object: String,
    /// One embedding per input, in input order.
    pub data: Vec<Embedding>,
    /// The model that answered.
    pub model: String,
    /// Usage.
    #[serde(default)]
    pub usage: EmbeddingUsage,
}

impl EmbeddingList {
    /// A list of `vectors` (in input order) written in `format`.
    pub fn new(model: &str, vectors: Vec<Vec<f32>>, format: EncodingFormat) -> Self {
        EmbeddingList {
            object: "list".into(),
            data: vectors
                .into_iter()
                .enumerate()
                .map(|(index, v)| Embedding {
                    object: "embedding".into(),
                    index,
                    embedding: EmbeddingVector::encode(v, format),
                })
                .collect(),
            model: model.to_owned(),
            usage: EmbeddingUsage::default(),
        }
    }
}

/// What [`crate::Hub::embeddings`] answers.
#[derive(Debug, Clone)]
pub struct EmbeddingsResponse {
    /// The OpenAI JSON body to send: the upstream's bytes for OpenAI-compatible providers,
    /// translated for the others.
    pub body: bytes::Bytes,
    /// Usage as recorded (`completion_tokens` is 0).
    pub usage: Usage,
    /// Where `usage` came from.
    pub usage_source: UsageSource,
    /// What the request cost in micro-dollars; `None` when the model is unpriced.
    pub cost_micros: Option<i64>,
    /// Request id.
    pub request_id: String,
    /// The provider that answered.
    pub provider_id: i64,
    /// Its name.
    pub provider_name: String,
    /// Upstream `x-ratelimit-*` headers, to pass back.
    pub rate_limit_headers: Vec<(String, String)>,
    /// Milliseconds spent waiting on the upstream (all attempts).
    pub upstream_ms: f64,
}

impl EmbeddingsResponse {
    /// The body parsed (vectors as the client asked for them: use
    /// [`EmbeddingVector::to_floats`] for numbers either way).
    pub fn list(&self) -> Result<EmbeddingList> {
        serde_json::from_slice(&self.body)
            .map_err(|e| Error::Internal(format!("embeddings answer does not parse: {e}")))
    }
}

// ---- the bounded parse -----------------------------------------------------------------------

/// The request's top level, every value counted against the budget.
struct RequestSeed<'a>(&'a Budget);

impl<'de> serde::de::DeserializeSeed<'de> for RequestSeed<'_> {
    type Value = EmbeddingsRequest;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        d: D,
    ) -> std::result::Result<EmbeddingsRequest, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for RequestSeed<'_> {
    type Value = EmbeddingsRequest;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an embeddings request object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<EmbeddingsRequest, A::Error> {
        use serde::de::Error as _;
        let b = self.0;
        let (mut model, mut input, mut dimensions, mut format, mut user) =
            (None, None, None, None, None);
        let mut extra = Map::new();
        while let Some(k) = map.next_key::<String>()? {
            b.spend(1)?;
            match k.as_str() {
                "model" => model = Some(map.next_value::<String>()?),
                "input" => input = Some(map.next_value_seed(InputSeed(b))?),
                "dimensions" => dimensions = map.next_value::<Option<u32>>()?,
                "encoding_format" => {
                    format = match map.next_value::<Option<String>>()?.as_deref() {
                        None => None,
                        Some("float") => Some(EncodingFormat::Float),
                        Some("base64") => Some(EncodingFormat::Base64),
                        Some(other) => {
                            return Err(b.refuse(
                                Some("encoding_format"),
                                format!("`encoding_format` must be float or base64, not '{other}'"),
                            ))
                        }
                    }
                }
                "user" => user = map.next_value::<Option<String>>()?,
                _ => {
                    let v = map.next_value_seed(ValueSeed(b))?;
                    extra.insert(k, v);
                }
            }
        }
        Ok(EmbeddingsRequest {
            model: model.ok_or_else(|| A::Error::missing_field("model"))?,
            input: input.ok_or_else(|| A::Error::missing_field("input"))?,
            dimensions,
            encoding_format: format,
            user,
            extra,
        })
    }
}

/// `input`: a string, or an array of at most [`MAX_INPUTS`] entries that are all strings, all
/// token ids, or all token-id arrays.
struct InputSeed<'a>(&'a Budget);

impl<'de> serde::de::DeserializeSeed<'de> for InputSeed<'_> {
    type Value = EmbeddingInput;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        d: D,
    ) -> std::result::Result<EmbeddingInput, D::Error> {
        d.deserialize_any(self)
    }
}

/// One entry of an `input` array.
enum Item {
    Text(String),
    Token(u32),
    Tokens(Vec<u32>),
}

impl<'de> serde::de::Visitor<'de> for InputSeed<'_> {
    type Value = EmbeddingInput;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a string, an array of strings, or an array of token ids or token-id arrays")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<EmbeddingInput, E> {
        self.0.spend(1)?;
        Ok(EmbeddingInput::Text(v.to_owned()))
    }

    fn visit_string<E: serde::de::Error>(
        self,
        v: String,
    ) -> std::result::Result<EmbeddingInput, E> {
        self.0.spend(1)?;
        Ok(EmbeddingInput::Text(v))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> std::result::Result<EmbeddingInput, A::Error> {
        let b = self.0;
        b.spend(1)?;
        let mixed = || {
            b.refuse::<A::Error>(
                Some("input"),
                "`input` must be all strings, all token ids, or all token-id arrays".into(),
            )
        };
        let mut out: Option<EmbeddingInput> = None;
        let mut n = 0usize;
        while let Some(item) = seq.next_element_seed(ItemSeed(b))? {
            n += 1;
            if n > MAX_INPUTS {
                return Err(b.refuse(
                    Some("input"),
                    format!("`input` has more than {MAX_INPUTS} entries"),
                ));
            }
            match (&mut out, item) {
                (None, Item::Text(t)) => out = Some(EmbeddingInput::Texts(vec![t])),
                (None, Item::Token(t)) => out = Some(EmbeddingInput::Tokens(vec![t])),
                (None, Item::Tokens(t)) => out = Some(EmbeddingInput::TokenArrays(vec![t])),
                (Some(EmbeddingInput::Texts(v)), Item::Text(t)) => v.push(t),
                (Some(EmbeddingInput::Tokens(v)), Item::Token(t)) => v.push(t),
                (Some(EmbeddingInput::TokenArrays(v)), Item::Tokens(t)) => v.push(t),
                _ => return Err(mixed()),
            }
        }
        // `[]`: empty, refused by `validate` with a clear message.
        Ok(out.unwrap_or(EmbeddingInput::Texts(vec![])))
    }
}

struct ItemSeed<'a>(&'a Budget);

impl<'de> serde::de::DeserializeSeed<'de> for ItemSeed<'_> {
    type Value = Item;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> std::result::Result<Item, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for ItemSeed<'_> {
    type Value = Item;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a string, a token id or an array of token ids")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<Item, E> {
        self.0.spend(1)?;
        Ok(Item::Text(v.to_owned()))
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> std::result::Result<Item, E> {
        self.0.spend(1)?;
        Ok(Item::Text(v))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<Item, E> {
        self.0.spend(1)?;
        u32::try_from(v)
            .map(Item::Token)
            .map_err(|_| E::custom(format!("token id {v} is out of range")))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<Item, E> {
        match u64::try_from(v) {
            Ok(u) => self.visit_u64(u),
            Err(_) => Err(E::custom(format!("token id {v} is negative"))),
        }
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> std::result::Result<Item, A::Error> {
        self.0.spend(1)?;
        let mut out = Vec::new();
        while let Some(t) = seq.next_element::<u32>()? {
            self.0.spend(1)?;
            out.push(t);
        }
        Ok(Item::Tokens(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_input_shape_parses() {
        let p = |s: &str| EmbeddingsRequest::from_slice(s.as_bytes());
        let r = p(r#"{"model":"e","input":"hi"}"#).unwrap();
        assert_eq!(r.input, EmbeddingInput::Text("hi".into()));
        let r = p(r#"{"model":"e","input":["a","b"],"dimensions":8,"encoding_format":"base64","user":"u","x":1}"#).unwrap();
        assert_eq!(r.input.len(), 2);
        assert_eq!(r.dimensions, Some(8));
        assert_eq!(r.format(), EncodingFormat::Base64);
        assert_eq!(r.extra["x"], 1);
        let r = p(r#"{"model":"e","input":[1,2,3]}"#).unwrap();
        assert_eq!(r.input, EmbeddingInput::Tokens(vec![1, 2, 3]));
        let r = p(r#"{"model":"e","input":[[1,2],[3]]}"#).unwrap();
        assert_eq!(
            r.input,
            EmbeddingInput::TokenArrays(vec![vec![1, 2], vec![3]])
        );
        // Serialized back, each shape is OpenAI's.
        assert_eq!(
            serde_json::to_value(&r).unwrap()["input"],
            serde_json::json!([[1, 2], [3]])
        );
    }

    #[test]
    fn bad_inputs_are_400s() {
        for (body, param) in [
            (r#"{"model":"e","input":""}"#, "input"),
            (r#"{"model":"e","input":[]}"#, "input"),
            (r#"{"model":"e","input":["a",1]}"#, "input"),
            (r#"{"model":"e","input":[[1],[]]}"#, "input"),
            (
                r#"{"model":"e","input":"a","encoding_format":"int8"}"#,
                "encoding_format",
            ),
            (r#"{"model":"e","input":"a","dimensions":0}"#, "dimensions"),
            (r#"{"model":"","input":"a"}"#, "model"),
            (r#"{"input":"a"}"#, "model"),
            (r#"{"model":"e"}"#, "input"),
        ] {
            let e = EmbeddingsRequest::from_slice(body.as_bytes()).unwrap_err();
            assert_eq!(e.http_status(), 400, "{body}");
            assert_eq!(e.param(), Some(param), "{body}: {e}");
        }
        let e = EmbeddingsRequest::from_slice(br#"{"model":"e","input":[-1]}"#).unwrap_err();
        assert_eq!(e.http_status(), 400);
    }

    #[test]
    fn limits_bound_the_parse() {
        let many = format!(
            r#"{{"model":"e","input":[{}]}}"#,
            vec!["\"a\""; MAX_INPUTS + 1].join(",")
        );
        let e = EmbeddingsRequest::from_slice(many.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("more than 2048"), "{e}");
        let limits = RequestLimits {
            max_json_values: 100,
            ..RequestLimits::default()
        };
        let tokens = format!(r#"{{"model":"e","input":[{}]}}"#, vec!["1"; 200].join(","));
        let e = EmbeddingsRequest::from_slice_limited(tokens.as_bytes(), &limits).unwrap_err();
        assert!(e.to_string().contains("too complex"), "{e}");
    }

    #[test]
    fn base64_is_little_endian_f32() {
        let v = EmbeddingVector::encode(vec![1.0, -0.5], EncodingFormat::Base64);
        let EmbeddingVector::Base64(s) = &v else {
            panic!("not base64")
        };
        // 1.0f32 = 00 00 80 3f, -0.5f32 = 00 00 00 bf.
        assert_eq!(s, "AACAPwAAAL8=");
        assert_eq!(v.to_floats().unwrap(), vec![1.0, -0.5]);
    }
}
