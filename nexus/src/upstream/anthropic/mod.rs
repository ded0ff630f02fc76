//! The `anthropic` provider kind: OpenAI chat requests sent to Anthropic's Messages API
//! (`POST {base}/v1/messages`, `x-api-key`, `anthropic-version`), and its answers and stream
//! events translated back into OpenAI completions and chunks.
//!
//! `request` builds the body (what is translated, dropped and refused is listed there),
//! `response` turns a message into a completion, `stream` decodes the SSE events.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};

use super::adapter::{Adapter, StreamDecoder, UpstreamCall};
use crate::error::{Error, Result};
use crate::openai::ChatRequest;
use crate::records::ANTHROPIC_VERSION;
use crate::registry::Candidate;

mod request;
mod response;
mod stream;

pub(crate) use request::DEFAULT_MAX_TOKENS;

/// The tool forced for `response_format: json_schema`. Its input is the answer, so the
/// translation back turns it into message content rather than a tool call; clients may not
/// define a tool of this name.
pub(crate) const JSON_TOOL: &str = "nexus_json_response";

/// Anthropic's Messages API.
/// How an Anthropic call carries its key.
pub(crate) const AUTH: super::adapter::Auth = super::adapter::Auth::Header("x-api-key");

pub(crate) struct Anthropic;

impl Adapter for Anthropic {
    fn build(
        &self,
        req: &ChatRequest,
        cand: &Candidate,
        stream: bool,
        _inject_usage: bool,
    ) -> Result<UpstreamCall> {
        let body = request::body(
            req,
            cand.model.upstream(),
            cand.model.default_max_tokens,
            stream,
        )?;
        let headers = headers(&cand.provider, None);
        Ok(UpstreamCall {
            // The provider's endpoint is already `{base}/v1/messages` (or the verbatim URL of
            // a base ending in `#`): see `records::endpoint_for`.
            url: None,
            auth: AUTH,
            headers,
            body: serde_json::to_vec(&body)
                .map(Bytes::from)
                .map_err(|e| Error::Internal(e.to_string()))?,
            // Anthropic always reports usage in the stream; the decoder always emits the usage
            // chunk, so the hub strips it when the client did not ask for it.
            extra_usage_chunk: stream && !req.wants_stream_usage(),
        })
    }

    fn completion(&self, body: Bytes, client_model: &str) -> Result<Bytes> {
        response::completion(&body, client_model)
    }

    fn decoder(&self, client_model: &str) -> Box<dyn StreamDecoder> {
        Box::new(stream::Decoder::new(client_model))
    }
}

/// Anthropic's usage object (the message's, or the running totals of a stream).
#[derive(Debug, Default, Clone, Deserialize)]
pub(crate) struct AnthropicUsage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
}

/// OpenAI usage: cached and cache-writing prompt tokens are prompt tokens too (Anthropic counts
/// them apart from `input_tokens`), with the split kept in `prompt_tokens_details`.
pub(crate) fn openai_usage(u: &AnthropicUsage) -> Value {
    let read = u.cache_read_input_tokens.unwrap_or(0);
    let write = u.cache_creation_input_tokens.unwrap_or(0);
    let prompt = u.input_tokens + read + write;
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": u.output_tokens,
        "total_tokens": prompt + u.output_tokens,
        "prompt_tokens_details": {"cached_tokens": read, "cache_write_tokens": write},
    })
}

/// OpenAI's `finish_reason` for an Anthropic `stop_reason`. `json_answer`: the answer was the
/// forced `response_format` tool, which ends with `tool_use` but is a plain answer to the client.
pub(crate) fn finish_reason(stop: Option<&str>, json_answer: bool) -> &'static str {
    match stop {
        Some("tool_use") if json_answer => "stop",
        Some("tool_use") => "tool_calls",
        Some("max_tokens" | "model_context_window_exceeded") => "length",
        Some("refusal") => "content_filter",
        // end_turn, stop_sequence, pause_turn (a server-tool loop paused: the text so far is
        // the answer) and values newer than this code.
        _ => "stop",
    }
}

/// The HTTP status Anthropic uses for an error `type`, so an in-stream error is classified
/// like the same error answered as HTTP.
pub(crate) fn error_status(kind: &str) -> Option<u16> {
    Some(match kind {
        "invalid_request_error" => 400,
        "authentication_error" => 401,
        "permission_error" => 403,
        "not_found_error" => 404,
        "request_too_large" => 413,
        "rate_limit_error" => 429,
        "api_error" => 500,
        "timeout_error" => 504,
        "overloaded_error" => 529,
        _ => return None,
    })
}

/// The version headers of a call to an Anthropic provider (its key goes as [`AUTH`]):
/// `anthropic-version` (the provider's `api_version` or ours) and `anthropic-beta` with the
/// provider's configured betas followed by the client's (`client_betas`, passed on by the
/// Messages pass-through).
pub(crate) fn headers(
    p: &crate::registry::ProviderEntry,
    client_betas: Option<&str>,
) -> Vec<(&'static str, String)> {
    let o = &p.record.options;
    let mut headers = vec![(
        "anthropic-version",
        o.api_version
            .clone()
            .unwrap_or_else(|| ANTHROPIC_VERSION.to_owned()),
    )];
    if let Some(b) = merge_betas(o.anthropic_beta.as_deref(), client_betas) {
        headers.push(("anthropic-beta", b));
    }
    headers
}

/// The provider's configured betas, then the client's, each once.
fn merge_betas(provider: Option<&str>, client: Option<&str>) -> Option<String> {
    let mut seen: Vec<&str> = Vec::new();
    for b in provider
        .into_iter()
        .chain(client)
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .filter(|b| !b.is_empty())
    {
        if !seen.contains(&b) {
            seen.push(b);
        }
    }
    (!seen.is_empty()).then(|| seen.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn betas_merge_in_order_without_repeats() {
        assert_eq!(merge_betas(None, None), None);
        assert_eq!(merge_betas(Some(" "), Some("")), None);
        assert_eq!(
            merge_betas(Some("a-1, b-2"), Some("b-2,c-3")).as_deref(),
            Some("a-1,b-2,c-3")
        );
    }

    #[test]
    fn stop_reasons_map() {
        for (s, want) in [
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("pause_turn", "stop"),
            ("max_tokens", "length"),
            ("model_context_window_exceeded", "length"),
            ("tool_use", "tool_calls"),
            ("refusal", "content_filter"),
        ] {
            assert_eq!(finish_reason(Some(s), false), want, "{s}");
        }
        assert_eq!(finish_reason(Some("tool_use"), true), "stop");
        assert_eq!(finish_reason(None, false), "stop");
    }

    #[test]
    fn error_types_map_to_statuses() {
        assert_eq!(error_status("overloaded_error"), Some(529));
        assert_eq!(error_status("rate_limit_error"), Some(429));
        assert_eq!(error_status("something_new"), None);
    }
}
