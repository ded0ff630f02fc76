//! A client's request in a provider's own wire format, sent as the client wrote it to providers
//! of that kind instead of being translated through the OpenAI format.
//!
//! A Messages request routed to an `anthropic` provider keeps what a round trip through chat
//! completions would lose: `cache_control` markers (the provider's prompt cache), thinking
//! blocks with their signatures, `top_k`, `context_management`, server tools, and the client's
//! `anthropic-beta` flags. A Responses request routed to an `openai` provider with the
//! `responses_api` option keeps hosted tools, encrypted reasoning and everything else the chat
//! format has no words for. Candidates of other kinds in the same route still get the
//! translation.

use bytes::Bytes;
use serde_json::{Map, Value};

use super::adapter::{StreamDecoder, UpstreamCall};
use crate::error::{Error, Result};
use crate::openai::ChatRequest;
use crate::records::ProviderKind;
use crate::registry::Candidate;

/// A request body in a provider's wire format.
#[derive(Debug, Clone)]
pub enum NativeRequest {
    /// An Anthropic Messages body (its top level as parsed, `model` the client's name) and the
    /// client's `anthropic-beta` header.
    AnthropicMessages {
        /// The body as the client sent it.
        body: ChatRequest,
        /// The client's `anthropic-beta` header, comma separated.
        betas: Option<String>,
    },
    /// An OpenAI Responses body as the client sent it, for `openai` providers with the
    /// `responses_api` option.
    OpenaiResponses {
        /// The body's top level.
        body: Map<String, Value>,
    },
}

impl NativeRequest {
    /// Whether this candidate takes this body as it is.
    pub(crate) fn serves(&self, cand: &Candidate) -> bool {
        let p = &cand.provider.record;
        match self {
            NativeRequest::AnthropicMessages { .. } => p.kind == ProviderKind::Anthropic,
            NativeRequest::OpenaiResponses { .. } => {
                p.kind == ProviderKind::Openai
                    && p.options.responses_api == Some(true)
                    && super::openai_responses::responses_url(cand).is_some()
            }
        }
    }

    /// The provider's non-streaming answer to this body as a chat completion (for the ledger).
    pub(crate) fn completion(&self, body: Bytes, client_model: &str) -> Result<Bytes> {
        match self {
            NativeRequest::AnthropicMessages { .. } => {
                super::adapter_for(ProviderKind::Anthropic)?.completion(body, client_model)
            }
            NativeRequest::OpenaiResponses { .. } => {
                super::openai_responses::completion(&body, client_model)
            }
        }
    }

    /// A decoder of the provider's stream events into chat chunks (for the ledger).
    pub(crate) fn decoder(&self, client_model: &str) -> Result<Box<dyn StreamDecoder>> {
        match self {
            NativeRequest::AnthropicMessages { .. } => {
                Ok(super::adapter_for(ProviderKind::Anthropic)?.decoder(client_model))
            }
            NativeRequest::OpenaiResponses { .. } => Ok(Box::new(
                super::openai_responses::Decoder::new(client_model),
            )),
        }
    }

    /// The call to a candidate of a kind this body [`serves`](Self::serves): the client's
    /// body with the upstream model name and the stream flag of this call.
    /// `wants_usage`: the client asked for usage in the stream (else the hub strips the usage
    /// chunk the decoder always makes).
    pub(crate) fn call(
        &self,
        cand: &Candidate,
        stream: bool,
        wants_usage: bool,
    ) -> Result<UpstreamCall> {
        match self {
            NativeRequest::AnthropicMessages { body, betas } => {
                anthropic_call(body, betas.as_deref(), cand, stream, wants_usage)
            }
            NativeRequest::OpenaiResponses { body } => {
                super::openai_responses::call(body, cand, stream)
            }
        }
    }
}

/// The fields Anthropic's `count_tokens` takes from a Messages body (it refuses the others, such
/// as `max_tokens` and `stream`, as extra inputs).
const COUNT_FIELDS: [&str; 9] = [
    "system",
    "tools",
    "tool_choice",
    "thinking",
    "mcp_servers",
    "context_management",
    "output_config",
    "output_format",
    "cache_control",
];

/// The call asking an `anthropic` candidate to count a Messages body's input tokens
/// (`POST {endpoint}/count_tokens`), with the provider's headers and the client's betas.
pub(crate) fn anthropic_count_call(
    body: &ChatRequest,
    betas: Option<&str>,
    cand: &Candidate,
) -> Result<UpstreamCall> {
    let mut out = serde_json::Map::new();
    out.insert("model".into(), cand.model.upstream().into());
    out.insert("messages".into(), Value::Array(body.messages.clone()));
    for f in COUNT_FIELDS {
        if let Some(v) = body.extra.get(f).filter(|v| !v.is_null()) {
            out.insert(f.into(), v.clone());
        }
    }
    let endpoint = cand.provider.record.endpoint.trim_end_matches('/');
    Ok(UpstreamCall {
        url: Some(format!("{endpoint}/count_tokens")),
        auth: super::anthropic::AUTH,
        headers: super::anthropic::headers(&cand.provider, betas),
        body: serde_json::to_vec(&out)
            .map(Bytes::from)
            .map_err(|e| Error::Internal(e.to_string()))?,
        extra_usage_chunk: false,
    })
}

/// The count in an Anthropic `count_tokens` answer.
pub(crate) fn anthropic_count(answer: &[u8]) -> Result<u64> {
    serde_json::from_slice::<Value>(answer)
        .ok()
        .and_then(|v| v.get("input_tokens").and_then(Value::as_u64))
        .ok_or_else(|| Error::Upstream {
            status: None,
            message: "count_tokens answer without input_tokens".into(),
            body: Some(crate::openai::truncate(
                &String::from_utf8_lossy(answer),
                4096,
            )),
            retry_after: None,
        })
}

fn anthropic_call(
    body: &ChatRequest,
    betas: Option<&str>,
    cand: &Candidate,
    stream: bool,
    wants_usage: bool,
) -> Result<UpstreamCall> {
    let mut out = body.extra.clone();
    out.insert("model".into(), cand.model.upstream().into());
    out.insert("messages".into(), Value::Array(body.messages.clone()));
    out.insert("stream".into(), Value::Bool(stream));
    // Anthropic requires `max_tokens`; the model's default (or the adapter's) fills it in as the
    // translated path would.
    if !out.contains_key("max_tokens") {
        let n = cand
            .model
            .default_max_tokens
            .map_or(super::anthropic::DEFAULT_MAX_TOKENS, u64::from);
        out.insert("max_tokens".into(), n.into());
    }
    let headers = super::anthropic::headers(&cand.provider, betas);
    Ok(UpstreamCall {
        url: None,
        auth: super::anthropic::AUTH,
        headers,
        body: serde_json::to_vec(&out)
            .map(Bytes::from)
            .map_err(|e| Error::Internal(e.to_string()))?,
        // The decoder turns Anthropic's usage into a usage chunk, as for a translated call.
        extra_usage_chunk: stream && !wants_usage,
    })
}
