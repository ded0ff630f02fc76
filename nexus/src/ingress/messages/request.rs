//! An Anthropic Messages request as an OpenAI chat request.
//!
//! Translated: `system` (string or text blocks, joined) and `{"role":"system"}` messages inside
//! `messages` (system messages in place); text, image (base64 / url) and document (PDF base64 →
//! an OpenAI `file` part; plain-text and content documents → text) blocks; `tool_use` →
//! `tool_calls` (ids kept); `tool_result` → `tool` messages (`is_error` noted in the text, images
//! moved into a user message after them); client tools (no `type`, or `custom`) → functions;
//! `tool_choice` and `disable_parallel_tool_use`; `max_tokens`, `temperature`, `top_p`,
//! `stop_sequences` → `stop`; `thinking` (`enabled` by budget, `adaptive` with
//! `output_config.effort`) → `reasoning_effort`; `metadata.user_id` → `user`;
//! `output_config.format` / `output_format` JSON schema → `response_format`.
//!
//! Dropped: Anthropic server tools (web search, bash, text editor, code execution, computer...:
//! the hub cannot run them), `thinking` and `redacted_thinking` blocks of earlier turns, server
//! tool blocks, `top_k`, `cache_control` markers, `context_management`, `container`,
//! `mcp_servers`, `service_tier` and unknown fields. Refused (400): a missing `max_tokens`
//! (unless counting tokens), bad roles or block shapes, `file_id` and url document sources,
//! unknown user block types.

use serde_json::{json, Map, Value};

use crate::error::{Error, Result};
use crate::openai::{ChatRequest, RequestLimits};

/// Parses an Anthropic Messages body under the hub's [`RequestLimits`] and translates it.
/// `count_only` is the `count_tokens` body, where `max_tokens` is not required.
pub fn parse(body: &[u8], limits: &RequestLimits, count_only: bool) -> Result<ChatRequest> {
    // The top level of a Messages body has the chat request's `model` and `messages`, so the
    // chat request's bounded parser reads it: every value counted, no unbounded tree.
    let raw = ChatRequest::from_slice_limited(body, limits)?;
    translate(raw, count_only)
}

/// [`parse`], also keeping the body as sent (its top level), for providers that take it as it
/// is: `(translated, as sent)`.
pub(crate) fn parse_keeping(
    body: &[u8],
    limits: &RequestLimits,
    count_only: bool,
) -> Result<(ChatRequest, ChatRequest)> {
    let raw = ChatRequest::from_slice_limited(body, limits)?;
    let kept = raw.clone();
    Ok((translate(raw, count_only)?, kept))
}

/// Translates an Anthropic Messages body (JSON) into an OpenAI chat request.
pub fn to_chat_request(body: Value) -> Result<ChatRequest> {
    let raw: ChatRequest = serde_json::from_value(body)
        .map_err(|e| Error::invalid(format!("invalid request body: {e}")))?;
    raw.validate()?;
    translate(raw, false)
}

fn translate(raw: ChatRequest, count_only: bool) -> Result<ChatRequest> {
    let ChatRequest {
        model,
        messages: in_msgs,
        stream,
        extra: x,
        ..
    } = raw;
    let mut out = Map::new();
    let mut messages = Vec::new();
    match x.get("system") {
        None | Some(Value::Null) => {}
        Some(s) => {
            let t = text_of(s, "system")?;
            if !t.is_empty() {
                messages.push(json!({"role": "system", "content": t}));
            }
        }
    }
    for (i, m) in in_msgs.iter().enumerate() {
        message(m, i, &mut messages)?;
    }
    if messages.is_empty() {
        return Err(Error::invalid_param(
            "messages",
            "`messages` must not be empty",
        ));
    }
    match x.get("max_tokens") {
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 => {
                out.insert("max_tokens".into(), n.into());
            }
            _ => {
                return Err(Error::invalid_param(
                    "max_tokens",
                    "max_tokens: must be a positive integer",
                ))
            }
        },
        None if count_only => {}
        None => {
            return Err(Error::invalid_param(
                "max_tokens",
                "max_tokens: Field required",
            ))
        }
    }
    for f in ["temperature", "top_p"] {
        match x.get(f) {
            None | Some(Value::Null) => {}
            Some(v) if v.is_number() => {
                out.insert(f.into(), v.clone());
            }
            Some(_) => {
                return Err(Error::invalid_param(f, format!("{f}: must be a number")));
            }
        }
    }
    match x.get("stop_sequences") {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => {
            if !a.is_empty() {
                out.insert("stop".into(), Value::Array(a.clone()));
            }
        }
        Some(_) => {
            return Err(Error::invalid_param(
                "stop_sequences",
                "stop_sequences: must be a list of strings",
            ))
        }
    }
    if let Some(u) = x
        .get("metadata")
        .and_then(|m| m.get("user_id"))
        .and_then(Value::as_str)
    {
        out.insert("user".into(), u.into());
    }
    if let Some(e) = reasoning_effort(&x)? {
        out.insert("reasoning_effort".into(), e.into());
    }
    if let Some(f) = response_format(&x) {
        out.insert("response_format".into(), f);
    }
    let tools = tools(&x)?;
    if !tools.is_empty() {
        out.insert("tools".into(), Value::Array(tools));
        if let Some(c) = x.get("tool_choice").filter(|c| !c.is_null()) {
            let kind = c.get("type").and_then(Value::as_str).unwrap_or("");
            let choice = match kind {
                "auto" => json!("auto"),
                "any" => json!("required"),
                "none" => json!("none"),
                "tool" => {
                    let name = c.get("name").and_then(Value::as_str).ok_or_else(|| {
                        Error::invalid_param("tool_choice", "tool_choice.name: Field required")
                    })?;
                    json!({"type": "function", "function": {"name": name}})
                }
                _ => {
                    return Err(Error::invalid_param(
                        "tool_choice",
                        "tool_choice.type: must be one of auto, any, tool, none",
                    ))
                }
            };
            out.insert("tool_choice".into(), choice);
            if c.get("disable_parallel_tool_use").and_then(Value::as_bool) == Some(true) {
                out.insert("parallel_tool_calls".into(), false.into());
            }
        }
    }
    let stream = stream == Some(true);
    Ok(ChatRequest {
        model,
        messages,
        stream: Some(stream),
        // The encoder needs the final usage: the hub counts it when the upstream sends none.
        stream_options: stream.then(|| json!({"include_usage": true})),
        extra: out,
    })
}

/// The text of a string or a list of text blocks (other blocks refused), joined.
fn text_of(v: &Value, what: &str) -> Result<String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Array(blocks) => {
            let mut parts = Vec::new();
            for b in blocks {
                match (b.get("type").and_then(Value::as_str), b.get("text")) {
                    (Some("text"), Some(Value::String(t))) => parts.push(t.as_str()),
                    _ => {
                        return Err(Error::invalid_param(
                            what,
                            format!("{what}: only text blocks are allowed here"),
                        ))
                    }
                }
            }
            Ok(parts.join("\n\n"))
        }
        _ => Err(Error::invalid_param(
            what,
            format!("{what}: must be a string or a list of text blocks"),
        )),
    }
}

fn bad(i: usize, why: impl std::fmt::Display) -> Error {
    Error::invalid_param("messages", format!("messages.{i}: {why}"))
}

/// One Anthropic message as one or more OpenAI messages, appended to `out`.
fn message(m: &Value, i: usize, out: &mut Vec<Value>) -> Result<()> {
    let role = m.get("role").and_then(Value::as_str).unwrap_or("");
    let content = m.get("content").unwrap_or(&Value::Null);
    match role {
        "system" => {
            let t = text_of(content, "messages")?;
            out.push(json!({"role": "system", "content": t}));
        }
        "user" => user(content, i, out)?,
        "assistant" => assistant(content, i, out)?,
        _ => return Err(bad(i, "role: must be 'user' or 'assistant'")),
    }
    Ok(())
}

/// OpenAI content: one string when every part is text, else the parts.
fn content_value(parts: Vec<Value>) -> Value {
    if parts.iter().all(|p| p["type"] == "text") {
        let texts: Vec<&str> = parts.iter().filter_map(|p| p["text"].as_str()).collect();
        Value::String(texts.join("\n\n"))
    } else {
        Value::Array(parts)
    }
}

fn user(content: &Value, i: usize, out: &mut Vec<Value>) -> Result<()> {
    let blocks = match content {
        Value::String(s) => {
            out.push(json!({"role": "user", "content": s}));
            return Ok(());
        }
        Value::Array(b) => b,
        _ => return Err(bad(i, "content: must be a string or a list of blocks")),
    };
    let mut parts = Vec::new();
    for b in blocks {
        let kind = b.get("type").and_then(Value::as_str).unwrap_or("");
        match kind {
            "tool_result" => {
                let id = b
                    .get("tool_use_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad(i, "tool_result.tool_use_id: Field required"))?;
                let mut text = Vec::new();
                let mut images = Vec::new();
                match b.get("content") {
                    None | Some(Value::Null) => {}
                    Some(Value::String(s)) => text.push(s.clone()),
                    Some(Value::Array(inner)) => {
                        for p in inner {
                            match p.get("type").and_then(Value::as_str) {
                                Some("text") => {
                                    text.push(p["text"].as_str().unwrap_or("").to_owned())
                                }
                                Some("image") => images.push(image(p, i)?),
                                Some("document") => {
                                    let d = document(p, i)?;
                                    match d["type"].as_str() {
                                        Some("text") => {
                                            text.push(d["text"].as_str().unwrap_or("").to_owned())
                                        }
                                        _ => images.push(d),
                                    }
                                }
                                _ => {
                                    return Err(bad(
                                        i,
                                        "tool_result.content: only text, image and document blocks are supported",
                                    ))
                                }
                            }
                        }
                    }
                    Some(_) => {
                        return Err(bad(i, "tool_result.content: must be a string or blocks"))
                    }
                }
                let mut t = text.join("\n\n");
                if b.get("is_error").and_then(Value::as_bool) == Some(true) {
                    t = format!("(tool error) {t}");
                }
                out.push(json!({"role": "tool", "tool_call_id": id, "content": t}));
                if !images.is_empty() {
                    // OpenAI tool messages carry text only: the images follow as user content.
                    parts.push(json!({"type": "text", "text": format!("(attachments of tool result {id})")}));
                    parts.extend(images);
                }
            }
            "text" => {
                let t = b
                    .get("text")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad(i, "text block: text: Field required"))?;
                parts.push(json!({"type": "text", "text": t}));
            }
            "image" => parts.push(image(b, i)?),
            "document" => parts.push(document(b, i)?),
            other => {
                return Err(bad(
                    i,
                    format!("content block type '{other}' is not supported in user turns"),
                ))
            }
        }
    }
    if !parts.is_empty() {
        out.push(json!({"role": "user", "content": content_value(parts)}));
    }
    Ok(())
}

fn image(b: &Value, i: usize) -> Result<Value> {
    let src = b.get("source").unwrap_or(&Value::Null);
    let url = match src.get("type").and_then(Value::as_str) {
        Some("base64") => {
            let mt = src.get("media_type").and_then(Value::as_str).unwrap_or("");
            let data = src.get("data").and_then(Value::as_str).unwrap_or("");
            if mt.is_empty() || data.is_empty() {
                return Err(bad(i, "image.source: media_type and data are required"));
            }
            format!("data:{mt};base64,{data}")
        }
        Some("url") => src
            .get("url")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(i, "image.source.url: Field required"))?
            .to_owned(),
        _ => {
            return Err(bad(
                i,
                "image.source: only base64 and url sources are supported",
            ))
        }
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

fn document(b: &Value, i: usize) -> Result<Value> {
    let src = b.get("source").unwrap_or(&Value::Null);
    let title = b.get("title").and_then(Value::as_str);
    let with_title = |t: &str| match title {
        Some(h) => format!("{h}\n\n{t}"),
        None => t.to_owned(),
    };
    match src.get("type").and_then(Value::as_str) {
        Some("base64") if src["media_type"] == "application/pdf" => {
            let data = src.get("data").and_then(Value::as_str).unwrap_or("");
            Ok(json!({"type": "file", "file": {
                "filename": format!("{}.pdf", title.unwrap_or("document")),
                "file_data": format!("data:application/pdf;base64,{data}"),
            }}))
        }
        Some("text") => {
            let t = src.get("data").and_then(Value::as_str).unwrap_or("");
            Ok(json!({"type": "text", "text": with_title(t)}))
        }
        Some("content") => {
            let t = text_of(src.get("content").unwrap_or(&Value::Null), "messages")?;
            Ok(json!({"type": "text", "text": with_title(&t)}))
        }
        _ => Err(bad(
            i,
            "document.source: only base64 PDF, text and content sources are supported",
        )),
    }
}

fn assistant(content: &Value, i: usize, out: &mut Vec<Value>) -> Result<()> {
    let blocks = match content {
        Value::String(s) => {
            out.push(json!({"role": "assistant", "content": s}));
            return Ok(());
        }
        Value::Array(b) => b,
        _ => return Err(bad(i, "content: must be a string or a list of blocks")),
    };
    let mut text = Vec::new();
    let mut calls = Vec::new();
    for b in blocks {
        match b.get("type").and_then(Value::as_str).unwrap_or("") {
            "text" => text.push(b.get("text").and_then(Value::as_str).unwrap_or("")),
            "tool_use" => {
                let id = b.get("id").and_then(Value::as_str).unwrap_or("");
                let name = b.get("name").and_then(Value::as_str).unwrap_or("");
                if id.is_empty() || name.is_empty() {
                    return Err(bad(i, "tool_use: id and name are required"));
                }
                let input = b.get("input").cloned().unwrap_or_else(|| json!({}));
                calls.push(json!({"id": id, "type": "function",
                    "function": {"name": name, "arguments": input.to_string()}}));
            }
            // Thinking of earlier turns (its signature only Anthropic can check), server-tool
            // calls and their results: nothing an OpenAI chat turn can carry.
            _ => {}
        }
    }
    let text = text.join("");
    if text.is_empty() && calls.is_empty() {
        return Ok(());
    }
    let mut m = json!({"role": "assistant", "content": if text.is_empty() { Value::Null } else { text.into() }});
    if !calls.is_empty() {
        m["tool_calls"] = Value::Array(calls);
    }
    out.push(m);
    Ok(())
}

/// Client tools as OpenAI functions; server tools (any other `type`) dropped.
fn tools(x: &Map<String, Value>) -> Result<Vec<Value>> {
    let Some(list) = x.get("tools").filter(|t| !t.is_null()) else {
        return Ok(vec![]);
    };
    let list = list
        .as_array()
        .ok_or_else(|| Error::invalid_param("tools", "tools: must be a list"))?;
    let mut out = Vec::new();
    for (i, t) in list.iter().enumerate() {
        match t.get("type").and_then(Value::as_str) {
            None | Some("custom") => {}
            Some(_) => continue,
        }
        let name = t.get("name").and_then(Value::as_str).ok_or_else(|| {
            Error::invalid_param("tools", format!("tools.{i}.name: Field required"))
        })?;
        let mut f = json!({"name": name,
            "parameters": t.get("input_schema").cloned().unwrap_or_else(|| json!({"type": "object"}))});
        if let Some(d) = t.get("description").and_then(Value::as_str) {
            f["description"] = d.into();
        }
        if let Some(s) = t.get("strict").and_then(Value::as_bool) {
            f["strict"] = s.into();
        }
        out.push(json!({"type": "function", "function": f}));
    }
    Ok(out)
}

/// `thinking` and `output_config.effort` as OpenAI's `reasoning_effort`.
fn reasoning_effort(x: &Map<String, Value>) -> Result<Option<&'static str>> {
    let effort = x
        .get("output_config")
        .and_then(|o| o.get("effort"))
        .and_then(Value::as_str)
        .map(|e| match e {
            "low" => "low",
            "medium" => "medium",
            _ => "high",
        });
    let Some(t) = x.get("thinking").filter(|t| !t.is_null()) else {
        return Ok(effort);
    };
    Ok(match t.get("type").and_then(Value::as_str) {
        Some("enabled") => {
            let budget = t
                .get("budget_tokens")
                .and_then(Value::as_u64)
                .ok_or_else(|| {
                    Error::invalid_param("thinking", "thinking.budget_tokens: Field required")
                })?;
            // The inverse of the anthropic kind's budgets (1024 / 4096 / 16384).
            Some(match budget {
                0..=4095 => "low",
                4096..=16383 => "medium",
                _ => "high",
            })
        }
        Some("adaptive") => effort,
        Some("disabled") => None,
        _ => {
            return Err(Error::invalid_param(
                "thinking",
                "thinking.type: must be one of enabled, adaptive, disabled",
            ))
        }
    })
}

/// Structured output (`output_config.format`, or the older `output_format`) as
/// `response_format: json_schema`.
fn response_format(x: &Map<String, Value>) -> Option<Value> {
    let f = x
        .get("output_config")
        .and_then(|o| o.get("format"))
        .or_else(|| x.get("output_format"))?;
    if f.get("type").and_then(Value::as_str) != Some("json_schema") {
        return None;
    }
    let schema = f.get("schema")?.clone();
    Some(
        json!({"type": "json_schema", "json_schema": {"name": "output", "schema": schema, "strict": true}}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tr(v: Value) -> Result<ChatRequest> {
        to_chat_request(v)
    }

    #[test]
    fn system_text_and_system_messages_in_place() {
        let r = tr(json!({"model": "m", "max_tokens": 10,
            "system": [{"type": "text", "text": "A", "cache_control": {"type": "ephemeral"}}, {"type": "text", "text": "B"}],
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "x"}, {"type": "text", "text": "y"}]},
                {"role": "system", "content": "mid"},
                {"role": "user", "content": "z"}],
            "context_management": {"edits": []}, "top_k": 5, "metadata": {"user_id": "u1"},
            "stop_sequences": ["END"], "temperature": 0.5}))
        .unwrap();
        assert_eq!(
            r.messages,
            vec![
                json!({"role": "system", "content": "A\n\nB"}),
                json!({"role": "user", "content": "x\n\ny"}),
                json!({"role": "system", "content": "mid"}),
                json!({"role": "user", "content": "z"}),
            ]
        );
        assert_eq!(r.extra["max_tokens"], 10);
        assert_eq!(r.extra["user"], "u1");
        assert_eq!(r.extra["stop"], json!(["END"]));
        assert_eq!(r.extra["temperature"], 0.5);
        assert!(!r.extra.contains_key("top_k") && !r.extra.contains_key("context_management"));
        assert_eq!(r.stream, Some(false));
        assert!(r.stream_options.is_none());
    }

    #[test]
    fn tools_tool_use_and_tool_results() {
        let r = tr(json!({"model": "m", "max_tokens": 10, "stream": true,
            "tools": [
                {"name": "get_weather", "description": "d", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}},
                {"type": "custom", "name": "c", "input_schema": {"type": "object"}},
                {"type": "web_search_20250305", "name": "web_search"},
                {"type": "bash_20250124", "name": "bash"}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "messages": [
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "sunny"}]},
                    {"type": "tool_result", "tool_use_id": "toolu_2", "content": "boom", "is_error": true},
                    {"type": "text", "text": "thanks"}]}]}))
        .unwrap();
        let tools = r.extra["tools"].as_array().unwrap();
        assert_eq!(tools.len(), 2, "server tools are dropped");
        assert_eq!(tools[0]["function"]["name"], "get_weather");
        assert_eq!(
            tools[0]["function"]["parameters"]["properties"]["city"]["type"],
            "string"
        );
        assert_eq!(r.extra["tool_choice"], "required");
        assert_eq!(r.extra["parallel_tool_calls"], false);
        assert_eq!(r.stream_options, Some(json!({"include_usage": true})));
        let m = &r.messages;
        assert_eq!(m[1]["content"], "Checking.");
        assert_eq!(m[1]["tool_calls"][0]["id"], "toolu_1");
        assert_eq!(
            m[1]["tool_calls"][0]["function"]["arguments"],
            r#"{"city":"Paris"}"#
        );
        assert_eq!(
            m[2],
            json!({"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"})
        );
        assert_eq!(m[3]["content"], "(tool error) boom");
        assert_eq!(m[4], json!({"role": "user", "content": "thanks"}));
        let named = tr(json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}],
            "tools": [{"name": "f", "input_schema": {"type": "object"}}], "tool_choice": {"type": "tool", "name": "f"}}))
        .unwrap();
        assert_eq!(named.extra["tool_choice"]["function"]["name"], "f");
        // Only server tools: no tools and no tool_choice upstream.
        let none = tr(json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "web_search_20250305", "name": "web_search"}], "tool_choice": {"type": "auto"}}))
        .unwrap();
        assert!(!none.extra.contains_key("tools") && !none.extra.contains_key("tool_choice"));
    }

    #[test]
    fn images_and_documents() {
        let r = tr(json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}},
            {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBER"}},
            {"type": "document", "title": "T", "source": {"type": "text", "media_type": "text/plain", "data": "doc"}},
            {"type": "text", "text": "what?"}]}]}))
        .unwrap();
        let parts = r.messages[0]["content"].as_array().unwrap();
        assert_eq!(parts[0]["image_url"]["url"], "data:image/png;base64,iVBOR");
        assert_eq!(parts[1]["image_url"]["url"], "https://example.com/a.jpg");
        assert_eq!(
            parts[2]["file"]["file_data"],
            "data:application/pdf;base64,JVBER"
        );
        assert_eq!(parts[3], json!({"type": "text", "text": "T\n\ndoc"}));
        let e = tr(
            json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "file", "file_id": "f"}}]}]}),
        )
        .unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::InvalidRequest);
    }

    #[test]
    fn thinking_maps_to_reasoning_effort() {
        let base =
            json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}]});
        let with = |k: &str, v: Value| {
            let mut b = base.clone();
            b[k] = v;
            tr(b).unwrap().extra.get("reasoning_effort").cloned()
        };
        assert_eq!(
            with(
                "thinking",
                json!({"type": "enabled", "budget_tokens": 1024})
            ),
            Some(json!("low"))
        );
        assert_eq!(
            with(
                "thinking",
                json!({"type": "enabled", "budget_tokens": 4096})
            ),
            Some(json!("medium"))
        );
        assert_eq!(
            with(
                "thinking",
                json!({"type": "enabled", "budget_tokens": 20000})
            ),
            Some(json!("high"))
        );
        assert_eq!(with("thinking", json!({"type": "adaptive"})), None);
        assert_eq!(with("thinking", json!({"type": "disabled"})), None);
        assert_eq!(
            with("output_config", json!({"effort": "low"})),
            Some(json!("low"))
        );
    }

    #[test]
    fn refusals() {
        let no_max = json!({"model": "m", "messages": [{"role": "user", "content": "x"}]});
        assert_eq!(tr(no_max.clone()).unwrap_err().param(), Some("max_tokens"));
        let counted = parse(
            no_max.to_string().as_bytes(),
            &RequestLimits::default(),
            true,
        )
        .unwrap();
        assert!(!counted.extra.contains_key("max_tokens"));
        for bad in [
            json!({"model": "m", "max_tokens": 1, "messages": []}),
            json!({"model": "m", "max_tokens": 1, "messages": [{"role": "bot", "content": "x"}]}),
            json!({"model": "m", "max_tokens": 0, "messages": [{"role": "user", "content": "x"}]}),
            json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": [{"type": "mystery"}]}]}),
            json!({"max_tokens": 1, "messages": [{"role": "user", "content": "x"}]}),
        ] {
            assert_eq!(
                tr(bad.clone()).unwrap_err().kind(),
                crate::ErrorKind::InvalidRequest,
                "{bad}"
            );
        }
        assert!(parse(b"{not json", &RequestLimits::default(), false).is_err());
    }
}
