//! One [`Adapter`] per provider kind: how an OpenAI chat request becomes that provider's HTTP call,
//! and how its answers and stream events become OpenAI chat completions and chunks again.
//!
//! The `openai` adapter is a pass-through: its body is the request re-serialized from borrowed
//! parts and its events are relayed byte for byte. `azure` is OpenAI's wire format at other URLs
//! with an `api-key` header. The translating kinds live beside this file (`anthropic/`,
//! `gemini/`).

use std::borrow::Cow;

use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::openai::ChatRequest;
use crate::records::{ProviderKind, AZURE_API_VERSION};
use crate::registry::Candidate;

/// How a call carries the upstream key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Auth {
    /// `Authorization: Bearer <key>` (OpenAI and compatible servers).
    Bearer,
    /// The key as the value of this header (`api-key` for Azure, `x-api-key` for Anthropic,
    /// `x-goog-api-key` for Gemini).
    Header(&'static str),
}

/// One HTTP call to an upstream.
#[derive(Debug, Clone)]
pub(crate) struct UpstreamCall {
    /// Where to POST; `None` means the provider's pre-parsed OpenAI endpoint.
    pub(crate) url: Option<String>,
    /// How the upstream key goes with it: added by [`Upstream::send`](super::Upstream::send)
    /// from the candidate's current pool key, so one built call serves every key of the pool.
    pub(crate) auth: Auth,
    /// Headers beyond `content-type`, the credential and the provider's own extra headers: the
    /// provider's version headers.
    pub(crate) headers: Vec<(&'static str, String)>,
    /// The request body.
    pub(crate) body: Bytes,
    /// Whether the stream will carry a usage-only chunk the client did not ask for (the hub then
    /// strips it after reading it).
    pub(crate) extra_usage_chunk: bool,
}

/// What one upstream stream event means for the client.
#[derive(Debug)]
pub(crate) enum Decoded {
    /// OpenAI `chat.completion.chunk` JSON texts to send, in order (possibly none: a ping).
    Chunks(Vec<String>),
    /// The answer is complete.
    Done,
}

/// Turns one provider's stream events into OpenAI chunks. One per stream: it keeps the state a
/// translation needs (tool-call indexes, the message id, usage so far).
pub(crate) trait StreamDecoder: Send {
    /// Decodes one SSE event (`event` is its `event:` name, empty when none). An error event
    /// from the provider is an `Err`, which ends the stream in-band.
    fn decode(&mut self, event: &str, data: String) -> Result<Decoded>;
}

/// A provider kind's translation.
pub(crate) trait Adapter: Send + Sync {
    /// Builds the call for a request to a candidate. `inject_usage`: the hub wants usage in the
    /// stream although the client did not ask for it.
    fn build(
        &self,
        req: &ChatRequest,
        cand: &Candidate,
        stream: bool,
        inject_usage: bool,
    ) -> Result<UpstreamCall>;

    /// Turns a non-streaming answer body into an OpenAI chat completion body.
    fn completion(&self, body: Bytes, client_model: &str) -> Result<Bytes>;

    /// A decoder for one stream.
    fn decoder(&self, client_model: &str) -> Box<dyn StreamDecoder>;

    /// Whether the answer body is relayed as the upstream sent it (the OpenAI fast path).
    fn relays(&self) -> bool {
        false
    }
}

/// The adapter of a provider kind.
pub(crate) fn adapter_for(kind: ProviderKind) -> Result<&'static dyn Adapter> {
    // A `Result` so that a kind a newer database names but this build lacks is a clear error.
    match kind {
        ProviderKind::Openai => Ok(&OpenAi),
        ProviderKind::Azure => Ok(&Azure),
        ProviderKind::Anthropic => Ok(&super::anthropic::Anthropic),
        ProviderKind::Gemini => Ok(&super::gemini::Gemini),
    }
}

/// The request as an OpenAI-compatible upstream receives it, borrowed from the caller's request:
/// nothing of the conversation is cloned to build it.
#[derive(Serialize)]
struct OpenAiBody<'a> {
    model: &'a str,
    messages: &'a [Value],
    #[serde(skip_serializing_if = "Option::is_none")]
    stream: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<Cow<'a, Value>>,
    #[serde(flatten)]
    extra: &'a serde_json::Map<String, Value>,
}

/// The OpenAI chat body for `model`.
pub(crate) fn openai_body(
    req: &ChatRequest,
    model: &str,
    stream: bool,
    inject_usage: bool,
) -> Result<Bytes> {
    let stream_options = if !stream {
        None
    } else if inject_usage {
        let mut so = match &req.stream_options {
            Some(Value::Object(m)) => m.clone(),
            _ => serde_json::Map::new(),
        };
        so.insert("include_usage".into(), Value::Bool(true));
        Some(Cow::Owned(Value::Object(so)))
    } else {
        req.stream_options.as_ref().map(Cow::Borrowed)
    };
    let r = OpenAiBody {
        model,
        messages: &req.messages,
        stream: if stream {
            Some(true)
        } else {
            req.stream.filter(|s| *s)
        },
        stream_options,
        extra: &req.extra,
    };
    serde_json::to_vec(&r)
        .map(Bytes::from)
        .map_err(|e| Error::Internal(e.to_string()))
}

/// The OpenAI stream decoder: each event's data is a chunk, `[DONE]` ends the stream.
struct Relay;

impl StreamDecoder for Relay {
    fn decode(&mut self, _event: &str, data: String) -> Result<Decoded> {
        let d = data.trim();
        if d.is_empty() {
            return Ok(Decoded::Chunks(vec![]));
        }
        if d == "[DONE]" {
            return Ok(Decoded::Done);
        }
        Ok(Decoded::Chunks(vec![data]))
    }
}

/// OpenAI chat completions and every compatible server.
struct OpenAi;

impl Adapter for OpenAi {
    fn build(
        &self,
        req: &ChatRequest,
        cand: &Candidate,
        stream: bool,
        inject_usage: bool,
    ) -> Result<UpstreamCall> {
        Ok(UpstreamCall {
            url: None,
            auth: Auth::Bearer,
            headers: vec![],
            body: openai_body(req, cand.model.upstream(), stream, inject_usage)?,
            extra_usage_chunk: inject_usage,
        })
    }

    fn completion(&self, body: Bytes, _client_model: &str) -> Result<Bytes> {
        Ok(body)
    }

    fn decoder(&self, _client_model: &str) -> Box<dyn StreamDecoder> {
        Box::new(Relay)
    }

    fn relays(&self) -> bool {
        true
    }
}

/// Azure OpenAI: OpenAI's wire format at a deployment URL (the model's upstream name is the
/// deployment) with `api-version` and an `api-key` header; or, with the `azure_v1` option, the
/// newer `/openai/v1/` path that takes the model in the body.
struct Azure;

impl Adapter for Azure {
    fn build(
        &self,
        req: &ChatRequest,
        cand: &Candidate,
        stream: bool,
        inject_usage: bool,
    ) -> Result<UpstreamCall> {
        let p = &cand.provider.record;
        let root = p.base_url.trim().trim_end_matches('/');
        let deployment = cand.model.upstream();
        let url = if p.options.azure_v1.unwrap_or(false) {
            format!("{root}/openai/v1/chat/completions")
        } else {
            format!(
                "{root}/openai/deployments/{}/chat/completions?api-version={}",
                path_segment(deployment)?,
                p.options
                    .api_version
                    .as_deref()
                    .unwrap_or(AZURE_API_VERSION)
            )
        };
        Ok(UpstreamCall {
            url: Some(url),
            auth: Auth::Header("api-key"),
            headers: vec![],
            body: openai_body(req, deployment, stream, inject_usage)?,
            extra_usage_chunk: inject_usage,
        })
    }

    fn completion(&self, body: Bytes, _client_model: &str) -> Result<Bytes> {
        Ok(body)
    }

    fn decoder(&self, _client_model: &str) -> Box<dyn StreamDecoder> {
        Box::new(Relay)
    }

    fn relays(&self) -> bool {
        true
    }
}

/// A model or deployment name as one URL path segment: names with `/`, `?`, `#` or spaces would
/// change the URL's meaning, so they are refused rather than escaped into another path.
pub(crate) fn path_segment(name: &str) -> Result<&str> {
    if name.is_empty()
        || name.chars().any(|c| {
            matches!(c, '/' | '?' | '#' | '%' | '\\') || c.is_whitespace() || c.is_control()
        })
    {
        return Err(Error::invalid_param(
            "model",
            format!("the upstream model name '{name}' cannot be used in this provider's URL"),
        ));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_passes_events_through() {
        let mut d = Relay;
        match d.decode("", "{\"a\":1}".into()).unwrap() {
            Decoded::Chunks(c) => assert_eq!(c, vec!["{\"a\":1}".to_owned()]),
            Decoded::Done => panic!("not done"),
        }
        assert!(matches!(
            d.decode("", " [DONE]".into()).unwrap(),
            Decoded::Done
        ));
        assert!(matches!(d.decode("", "".into()).unwrap(), Decoded::Chunks(c) if c.is_empty()));
    }

    #[test]
    fn path_segments_refuse_url_syntax() {
        assert!(path_segment("gpt-4o-prod").is_ok());
        for bad in ["a/b", "a?b", "", "a b", "..%2f"] {
            assert!(path_segment(bad).is_err(), "{bad}");
        }
    }
}
