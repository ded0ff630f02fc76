//! The `gemini` kind: Google's Gemini API (`generateContent` / `streamGenerateContent`) behind
//! the hub's OpenAI chat-completions interface.
//!
//! # The call
//!
//! `POST {base_url}/v1beta/models/{model}:generateContent`, or
//! `:streamGenerateContent?alt=sse` for a stream, with the provider key in `x-goog-api-key` (no
//! `Authorization` header). `{model}` is the model's upstream name without a leading `models/`.
//!
//! # Request translation
//!
//! - `system` and `developer` messages (wherever they are) → `systemInstruction`; `user` → role
//!   `user`, `assistant` → role `model`; consecutive turns of one role are merged into one.
//! - Content parts: `text`; `image_url` data URLs → `inlineData`, http(s) and `gs://` URLs →
//!   `fileData` (MIME type from the extension, else `image/jpeg`); `input_audio` →
//!   `inlineData` (`audio/{format}`); `file` with `file_data` → `inlineData`. A `file_id`, other
//!   URL schemes and unknown part types are refused.
//! - Assistant `tool_calls` (and legacy `function_call`) → `functionCall {name, args}`; `tool`
//!   messages → `functionResponse {name, response}` in a user turn, the name found from the
//!   earlier call with that id (unknown ids are refused). A result that is a JSON object is the
//!   `response`; anything else is sent as `{"output": ...}`.
//! - `tools` / `functions` → one `functionDeclarations` tool; `tool_choice` auto / none /
//!   required / a named function → `functionCallingConfig.mode` AUTO / NONE / ANY (+
//!   `allowedFunctionNames`). Non-function tools are refused.
//! - Schemas (tool parameters, `json_schema`) are cut down to Gemini's OpenAPI subset: local
//!   `$ref`s inlined, `["t", "null"]` types and null alternatives as `nullable`, `const` as a
//!   one-value `enum`, and unknown keys (`additionalProperties`, `$schema`, `strict`...) dropped.
//! - `generationConfig`: `max_completion_tokens` / `max_tokens` (else the model's
//!   `default_max_tokens`) → `maxOutputTokens`; `temperature`; `top_p` → `topP`; `seed`;
//!   `presence_penalty` / `frequency_penalty`; `stop` → `stopSequences`; `n` →
//!   `candidateCount`; `response_format` json_object → `responseMimeType: application/json`,
//!   json_schema → plus `responseSchema`; `reasoning_effort` none / minimal / low / medium / high
//!   → `thinkingConfig` with a budget of 0 / 512 / 1024 / 8192 / 24576 tokens and
//!   `includeThoughts` (Gemini clamps the budget to each model's range).
//! - Refused with a 400 because they change the answer and cannot be honoured: `logprobs`,
//!   `top_logprobs`, `logit_bias`, `audio`, non-text `modalities`, `web_search_options`.
//!   Fields that do not change the answer (`user`, `metadata`, `store`, `service_tier`,
//!   `parallel_tool_calls`, ...) are not sent.
//!
//! # Answer translation
//!
//! One choice per candidate: text parts → `content`, `thought` parts → `reasoning_content`,
//! `functionCall` parts → `tool_calls` (Gemini's call id when it sends one, else
//! `call_<answer id>_<n>`; arguments as a JSON string). A part's `thoughtSignature` (which
//! Gemini 3 requires back with its function call in the next request) is carried in the tool
//! call id, after `__ts__`, in URL-safe base64, and restored from the id in the history. Finish reasons: STOP → `stop`
//! (`tool_calls` when the candidate called a function), MAX_TOKENS → `length`, SAFETY /
//! RECITATION / BLOCKLIST / PROHIBITED_CONTENT / SPII / IMAGE_SAFETY → `content_filter`, anything
//! else → `stop`. A blocked prompt (`promptFeedback.blockReason`, no candidates) is an answer
//! with empty content and `content_filter`, as OpenAI reports filtered output, so that its prompt
//! tokens are still counted. Usage: `prompt_tokens` = prompt (+ tool-use prompt) tokens,
//! `completion_tokens` = candidate + thought tokens, with `cached_tokens` and
//! `reasoning_tokens` details.
//!
//! A stream sends a role chunk per candidate, then content / reasoning / tool-call deltas (each
//! whole `functionCall` as one delta with id, name, full arguments and its own index), the finish
//! chunk, and a usage-only chunk from the last `usageMetadata` with the first finish. Gemini
//! always reports usage, so the usage chunk is marked as extra when the client did not ask for
//! it (the hub reads it and strips it). An `error` object in the stream ends it in-band.

mod request;
mod response;
mod schema;
mod signature;

use bytes::Bytes;

use super::adapter::{path_segment, Adapter, StreamDecoder, UpstreamCall};
use crate::error::{Error, Result};
use crate::openai::ChatRequest;
use crate::registry::Candidate;

/// Google's Gemini API.
pub(crate) struct Gemini;

/// The model name as it goes in the URL: `models/gemini-x` and `gemini-x` are the same model,
/// and a `:` would change the method called.
pub(crate) fn model_segment(upstream: &str) -> Result<&str> {
    let name = upstream.strip_prefix("models/").unwrap_or(upstream);
    if name.contains(':') {
        return Err(Error::invalid_param(
            "model",
            format!("the upstream model name '{name}' cannot be used in a Gemini URL"),
        ));
    }
    path_segment(name)
}

impl Adapter for Gemini {
    fn build(
        &self,
        req: &ChatRequest,
        cand: &Candidate,
        stream: bool,
        _inject_usage: bool,
    ) -> Result<UpstreamCall> {
        let root = cand.provider.record.base_url.trim().trim_end_matches('/');
        let model = model_segment(cand.model.upstream())?;
        let url = if stream {
            format!("{root}/v1beta/models/{model}:streamGenerateContent?alt=sse")
        } else {
            format!("{root}/v1beta/models/{model}:generateContent")
        };
        let body = request::body(req, cand.model.default_max_tokens)?;
        let body = serde_json::to_vec(&body).map_err(|e| Error::Internal(e.to_string()))?;
        Ok(UpstreamCall {
            url: Some(url),
            auth: crate::upstream::adapter::Auth::Header("x-goog-api-key"),
            headers: vec![],
            body: Bytes::from(body),
            // Gemini reports usage on every stream; the decoder always passes it on, so it is
            // extra exactly when the client did not ask for it.
            extra_usage_chunk: stream && !req.wants_stream_usage(),
        })
    }

    fn completion(&self, body: Bytes, client_model: &str) -> Result<Bytes> {
        response::completion(&body, client_model)
    }

    fn decoder(&self, client_model: &str) -> Box<dyn StreamDecoder> {
        Box::new(response::Decoder::new(client_model))
    }
}

#[cfg(test)]
mod tests;
