//! A non-streaming Anthropic message as an OpenAI `chat.completion`.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{finish_reason, openai_usage, AnthropicUsage, JSON_TOOL};
use crate::error::{Error, Result};

/// The parts of an Anthropic message the translation reads.
#[derive(Deserialize)]
struct Message {
    id: String,
    #[serde(default)]
    content: Vec<Value>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: AnthropicUsage,
}

/// Turns a Messages API answer into an OpenAI chat completion for `client_model`.
pub(crate) fn completion(body: &[u8], client_model: &str) -> Result<Bytes> {
    let m: Message = serde_json::from_slice(body).map_err(|e| Error::Upstream {
        status: None,
        message: format!("upstream answer is not an Anthropic message: {e}"),
        body: Some(crate::openai::truncate(
            &String::from_utf8_lossy(body),
            4096,
        )),
        retry_after: None,
    })?;
    let (mut text, mut reasoning) = (String::new(), String::new());
    let mut calls = Vec::new();
    // The forced tool of `response_format: json_schema`: its input is the whole answer.
    let mut json_answer: Option<String> = None;
    for b in &m.content {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(b.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("thinking") => {
                reasoning.push_str(b.get("thinking").and_then(Value::as_str).unwrap_or(""));
            }
            Some("tool_use") => {
                let name = b.get("name").and_then(Value::as_str).unwrap_or("");
                let input = b.get("input").cloned().unwrap_or_else(|| json!({}));
                if name == JSON_TOOL {
                    json_answer = Some(input.to_string());
                    continue;
                }
                calls.push(json!({
                    "id": b.get("id").and_then(Value::as_str).unwrap_or(""),
                    "type": "function",
                    "function": {"name": name, "arguments": input.to_string()},
                }));
            }
            // Redacted thinking and server-tool blocks have nothing an OpenAI client can read.
            _ => {}
        }
    }
    let json_mode = json_answer.is_some();
    if let Some(j) = json_answer {
        text = j;
    }
    let mut message = json!({"role": "assistant"});
    message["content"] = if text.is_empty() && !calls.is_empty() {
        Value::Null
    } else {
        text.into()
    };
    if !reasoning.is_empty() {
        message["reasoning_content"] = reasoning.into();
    }
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    let out = json!({
        "id": format!("chatcmpl-{}", m.id),
        "object": "chat.completion",
        "created": crate::now_ms() / 1000,
        "model": client_model,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish_reason(m.stop_reason.as_deref(), json_mode),
        }],
        "usage": openai_usage(&m.usage),
    });
    serde_json::to_vec(&out)
        .map(Bytes::from)
        .map_err(|e| Error::Internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(v: Value) -> Value {
        serde_json::from_slice(&completion(v.to_string().as_bytes(), "client-m").unwrap()).unwrap()
    }

    #[test]
    fn text_thinking_tools_and_usage() {
        let c = run(json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
            "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                {"type": "text", "text": "Hello "},
                {"type": "text", "text": "there"},
                {"type": "tool_use", "id": "toolu_1", "name": "search", "input": {"q": "x"}},
            ],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 10, "output_tokens": 5,
                      "cache_read_input_tokens": 100, "cache_creation_input_tokens": 20},
        }));
        assert_eq!(c["id"], "chatcmpl-msg_1");
        assert_eq!(c["object"], "chat.completion");
        assert_eq!(c["model"], "client-m");
        let ch = &c["choices"][0];
        assert_eq!(ch["message"]["content"], "Hello there");
        assert_eq!(ch["message"]["reasoning_content"], "hmm");
        assert_eq!(
            ch["message"]["tool_calls"],
            json!([{"id": "toolu_1", "type": "function",
                    "function": {"name": "search", "arguments": "{\"q\":\"x\"}"}}])
        );
        assert_eq!(ch["finish_reason"], "tool_calls");
        assert_eq!(
            c["usage"],
            json!({"prompt_tokens": 130, "completion_tokens": 5, "total_tokens": 135,
                   "prompt_tokens_details": {"cached_tokens": 100, "cache_write_tokens": 20}})
        );
    }

    #[test]
    fn tool_only_answers_have_null_content_and_json_tool_becomes_content() {
        let c = run(json!({"id": "m", "content": [
            {"type": "tool_use", "id": "t", "name": "f", "input": {}}], "stop_reason": "tool_use",
            "usage": {"input_tokens": 1, "output_tokens": 1}}));
        assert!(c["choices"][0]["message"]["content"].is_null());
        let c = run(
            json!({"id": "m", "content": [{"type": "text", "text": "Sure: "},
            {"type": "tool_use", "id": "t", "name": JSON_TOOL, "input": {"a": 1}}],
            "stop_reason": "tool_use", "usage": {"input_tokens": 1, "output_tokens": 1}}),
        );
        assert_eq!(c["choices"][0]["message"]["content"], "{\"a\":1}");
        assert!(c["choices"][0]["message"].get("tool_calls").is_none());
        assert_eq!(c["choices"][0]["finish_reason"], "stop");
    }

    #[test]
    fn other_json_is_an_upstream_error() {
        let e = completion(br#"{"status":"ok"}"#, "m").unwrap_err();
        assert_eq!(e.http_status(), 502);
    }
}
