//! An OpenAI chat completion as a Responses API response object, and the pieces the stream
//! shares with it (item shapes, ids, status, usage).

use serde_json::{json, Map, Value};

use crate::openai::{ChatCompletion, Usage};

/// The response id for a request id: stable, so the answer, the stored copy and the logs agree.
pub fn response_id(request_id: &str) -> String {
    format!("resp_{request_id}")
}

pub(crate) fn message_item_id(request_id: &str) -> String {
    format!("msg_{request_id}")
}

pub(crate) fn reasoning_item_id(request_id: &str) -> String {
    format!("rs_{request_id}")
}

pub(crate) fn call_item_id(request_id: &str, index: usize) -> String {
    format!("fc_{request_id}_{index}")
}

/// An assistant message item with one `output_text` (or `refusal`) part.
pub(crate) fn message_item(id: &str, text: &str, refusal: bool, status: &str) -> Value {
    let part = if refusal {
        json!({"type": "refusal", "refusal": text})
    } else {
        output_text_part(text)
    };
    json!({"type": "message", "id": id, "status": status, "role": "assistant",
           "content": [part]})
}

pub(crate) fn output_text_part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

/// A reasoning item carrying the upstream's reasoning text (no summary: the upstream gave none).
pub(crate) fn reasoning_item(id: &str, text: &str) -> Value {
    json!({"type": "reasoning", "id": id, "summary": [],
           "content": [{"type": "reasoning_text", "text": text}]})
}

pub(crate) fn call_item(
    id: &str,
    call_id: &str,
    name: &str,
    arguments: &str,
    status: &str,
) -> Value {
    json!({"type": "function_call", "id": id, "call_id": call_id, "name": name,
           "arguments": arguments, "status": status})
}

/// `status` and `incomplete_details` for a chat `finish_reason`.
pub(crate) fn status(finish: Option<&str>) -> (&'static str, Value) {
    match finish {
        Some("length") => ("incomplete", json!({"reason": "max_output_tokens"})),
        Some("content_filter") => ("incomplete", json!({"reason": "content_filter"})),
        _ => ("completed", Value::Null),
    }
}

/// Responses usage from chat usage.
pub fn usage(u: &Usage) -> Value {
    let detail = |group: &str, k: &str| {
        u.extra
            .get(group)
            .and_then(|d| d.get(k))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    json!({
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": {"cached_tokens": detail("prompt_tokens_details", "cached_tokens")},
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": detail("completion_tokens_details", "reasoning_tokens")},
        "total_tokens": u.prompt_tokens + u.completion_tokens,
    })
}

/// A response object. `echo` holds the request fields a response repeats.
pub(crate) struct Envelope<'a> {
    pub id: &'a str,
    pub created_at: i64,
    pub model: &'a str,
    pub echo: &'a Map<String, Value>,
}

impl Envelope<'_> {
    pub(crate) fn object(
        &self,
        status: &str,
        output: &[Value],
        usage: Option<&Usage>,
        incomplete: Value,
        error: Value,
    ) -> Value {
        let mut m = Map::new();
        m.insert("id".into(), self.id.into());
        m.insert("object".into(), "response".into());
        m.insert("created_at".into(), self.created_at.into());
        m.insert("status".into(), status.into());
        m.insert("background".into(), false.into());
        m.insert("error".into(), error);
        m.insert("incomplete_details".into(), incomplete);
        m.insert("model".into(), self.model.into());
        m.insert("output".into(), Value::Array(output.to_vec()));
        for (k, v) in self.echo {
            m.insert(k.clone(), v.clone());
        }
        m.insert("usage".into(), usage.map_or(Value::Null, self::usage));
        Value::Object(m)
    }
}

/// The output items of a completion: reasoning, the message, then the function calls.
pub fn output_items(c: &ChatCompletion, request_id: &str) -> Vec<Value> {
    let msg = c.choices.first().and_then(|ch| ch.get("message"));
    let field = |f: &str| {
        msg.and_then(|m| m.get(f))
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
    };
    let mut out = Vec::new();
    if let Some(t) = field("reasoning_content").or_else(|| field("reasoning")) {
        out.push(reasoning_item(&reasoning_item_id(request_id), t));
    }
    if let Some(t) = field("content") {
        out.push(message_item(
            &message_item_id(request_id),
            t,
            false,
            "completed",
        ));
    } else if let Some(t) = field("refusal") {
        out.push(message_item(
            &message_item_id(request_id),
            t,
            true,
            "completed",
        ));
    }
    let calls = msg
        .and_then(|m| m.get("tool_calls"))
        .and_then(Value::as_array);
    for (i, tc) in calls.into_iter().flatten().enumerate() {
        let f = &tc["function"];
        let call_id = tc["id"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map_or_else(|| format!("call_{request_id}_{i}"), str::to_owned);
        out.push(call_item(
            &call_item_id(request_id, i),
            &call_id,
            f["name"].as_str().unwrap_or(""),
            f["arguments"].as_str().unwrap_or(""),
            "completed",
        ));
    }
    out
}

/// The assistant's turn as a chat message (what a continuation sends back upstream): the
/// message text and the function calls; reasoning stays out.
pub(crate) fn assistant_message(items: &[Value]) -> Option<Value> {
    let mut text = String::new();
    let mut calls = Vec::new();
    for it in items {
        match it["type"].as_str() {
            Some("message") => {
                for p in it["content"].as_array().into_iter().flatten() {
                    if let Some(t) = p["text"].as_str().or_else(|| p["refusal"].as_str()) {
                        text.push_str(t);
                    }
                }
            }
            Some("function_call") => calls.push(json!({
                "id": it["call_id"], "type": "function",
                "function": {"name": it["name"], "arguments": it["arguments"]},
            })),
            _ => {}
        }
    }
    if text.is_empty() && calls.is_empty() {
        return None;
    }
    let mut m = json!({"role": "assistant", "content": if text.is_empty() { Value::Null } else { text.into() }});
    if !calls.is_empty() {
        m["tool_calls"] = Value::Array(calls);
    }
    Some(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_maps_items_usage_and_status() {
        let c: ChatCompletion = serde_json::from_value(json!({
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": "Checking.", "reasoning_content": "think",
                "tool_calls": [{"id": "call_1", "type": "function",
                    "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]}}]
        }))
        .unwrap();
        let items = output_items(&c, "r1");
        assert_eq!(items.len(), 3);
        assert_eq!(items[0]["type"], "reasoning");
        assert_eq!(items[0]["content"][0]["text"], "think");
        assert_eq!(items[1]["id"], "msg_r1");
        assert_eq!(items[1]["content"][0]["text"], "Checking.");
        assert_eq!(items[2]["call_id"], "call_1");
        assert_eq!(items[2]["id"], "fc_r1_0");
        let m = assistant_message(&items).unwrap();
        assert_eq!(m["content"], "Checking.");
        assert_eq!(m["tool_calls"][0]["function"]["name"], "get_weather");

        let u: Usage = serde_json::from_value(json!({"prompt_tokens": 10, "completion_tokens": 5,
            "total_tokens": 15, "prompt_tokens_details": {"cached_tokens": 4},
            "completion_tokens_details": {"reasoning_tokens": 2}}))
        .unwrap();
        assert_eq!(
            usage(&u),
            json!({"input_tokens": 10, "input_tokens_details": {"cached_tokens": 4},
                "output_tokens": 5, "output_tokens_details": {"reasoning_tokens": 2}, "total_tokens": 15})
        );
        assert_eq!(status(Some("length")).0, "incomplete");
        assert_eq!(status(Some("stop")), ("completed", Value::Null));
        assert_eq!(response_id("r1"), "resp_r1");
    }
}
