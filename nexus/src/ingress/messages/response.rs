//! An OpenAI chat completion as an Anthropic message.

use serde_json::{json, Value};

use crate::openai::{ChatCompletion, Usage};

/// Anthropic's `stop_reason` for an OpenAI `finish_reason`. The OpenAI format does not say
/// whether a stop string ended the answer, so `stop` is always `end_turn`.
pub fn stop_reason(finish: Option<&str>) -> &'static str {
    match finish {
        Some("length") => "max_tokens",
        Some("tool_calls" | "function_call") => "tool_use",
        Some("content_filter") => "refusal",
        _ => "end_turn",
    }
}

/// The message id for a request id: stable, so the answer and the logs agree.
pub fn message_id(request_id: &str) -> String {
    format!("msg_{request_id}")
}

/// Anthropic usage from OpenAI usage: `input_tokens` excludes the cache reads and writes,
/// which Anthropic reports on their own.
pub fn usage(u: &Usage) -> Value {
    let detail = |k: &str| {
        u.extra
            .get("prompt_tokens_details")
            .and_then(|d| d.get(k))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    let read = detail("cached_tokens");
    let write = detail("cache_write_tokens");
    json!({
        "input_tokens": u.prompt_tokens.saturating_sub(read + write),
        "cache_creation_input_tokens": write,
        "cache_read_input_tokens": read,
        "output_tokens": u.completion_tokens,
    })
}

/// A tool call's `arguments` string as the object Anthropic's `input` must be.
pub(crate) fn tool_input(arguments: &str) -> Value {
    if arguments.trim().is_empty() {
        return json!({});
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => v,
        // Not an object: kept whole rather than lost.
        _ => json!({ "arguments": arguments }),
    }
}

/// The Anthropic message for a completion. `model` is the client's model name; `usage` is the
/// usage the hub recorded (the upstream's or its estimate).
pub fn from_completion(c: &ChatCompletion, model: &str, request_id: &str, u: &Usage) -> Value {
    let choice = c.choices.first();
    let msg = choice.and_then(|ch| ch.get("message"));
    let field = |f: &str| msg.and_then(|m| m.get(f)).and_then(Value::as_str);
    let mut content = Vec::new();
    if let Some(t) = field("reasoning_content")
        .or_else(|| field("reasoning"))
        .filter(|t| !t.is_empty())
    {
        // No signature: only Anthropic can sign thinking.
        content.push(json!({"type": "thinking", "thinking": t, "signature": ""}));
    }
    if let Some(t) = field("content").filter(|t| !t.is_empty()) {
        content.push(json!({"type": "text", "text": t}));
    } else if let Some(t) = field("refusal").filter(|t| !t.is_empty()) {
        content.push(json!({"type": "text", "text": t}));
    }
    if let Some(calls) = msg
        .and_then(|m| m.get("tool_calls"))
        .and_then(Value::as_array)
    {
        for tc in calls {
            let f = &tc["function"];
            content.push(json!({
                "type": "tool_use",
                "id": tc["id"].as_str().unwrap_or(""),
                "name": f["name"].as_str().unwrap_or(""),
                "input": tool_input(f["arguments"].as_str().unwrap_or("")),
            }));
        }
    }
    json!({
        "id": message_id(request_id),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(c.finish_reason()),
        "stop_sequence": null,
        "usage": usage(u),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_maps_text_thinking_tools_and_usage() {
        let c: ChatCompletion = serde_json::from_value(json!({
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": "Let me check.", "reasoning_content": "think",
                "tool_calls": [{"id": "call_1", "type": "function",
                    "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]}}]
        }))
        .unwrap();
        let u: Usage = serde_json::from_value(json!({"prompt_tokens": 10, "completion_tokens": 5,
            "total_tokens": 15, "prompt_tokens_details": {"cached_tokens": 4}}))
        .unwrap();
        let m = from_completion(&c, "claude-x", "r1", &u);
        assert_eq!(m["id"], "msg_r1");
        assert_eq!(m["model"], "claude-x");
        assert_eq!(m["stop_reason"], "tool_use");
        assert_eq!(m["content"][0]["type"], "thinking");
        assert_eq!(
            m["content"][1],
            json!({"type": "text", "text": "Let me check."})
        );
        assert_eq!(m["content"][2]["input"], json!({"city": "Paris"}));
        assert_eq!(m["content"][2]["id"], "call_1");
        assert_eq!(
            m["usage"],
            json!({"input_tokens": 6, "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 4, "output_tokens": 5})
        );
    }

    #[test]
    fn finish_reasons_map() {
        assert_eq!(stop_reason(Some("stop")), "end_turn");
        assert_eq!(stop_reason(Some("length")), "max_tokens");
        assert_eq!(stop_reason(Some("tool_calls")), "tool_use");
        assert_eq!(stop_reason(Some("content_filter")), "refusal");
        assert_eq!(stop_reason(None), "end_turn");
        assert_eq!(tool_input("[1]"), json!({"arguments": "[1]"}));
    }
}
