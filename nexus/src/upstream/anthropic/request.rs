//! An OpenAI chat request as an Anthropic Messages API body.
//!
//! Choices made where the two formats do not line up:
//!
//! - `system` and `developer` messages, wherever they appear, become the top-level `system`
//!   field in their order. Anthropic has no mid-conversation system turn, so a later one is
//!   merged there too (its position in the history is lost, its words are not).
//! - Anthropic requires user and assistant turns to alternate: consecutive messages of the same
//!   role (tool results count as user) are merged into one turn, tool results first as the API
//!   asks.
//! - Anthropic rejects empty text blocks: text parts that are empty or whitespace are dropped,
//!   and a turn left with nothing is dropped with them.
//! - `name` on messages, `seed`, `store`, `metadata`, `service_tier`, `stream_options` and any
//!   other extra are dropped: none changes what the model writes in a way Anthropic can honour,
//!   and `seed` is best-effort even on OpenAI.
//! - Refused with a 400 because they would change the answer silently: `n > 1`, `logprobs`,
//!   `top_logprobs`, non-zero `presence_penalty`/`frequency_penalty`, a non-empty `logit_bias`,
//!   `temperature` above 1 (Anthropic's range is 0..1), audio parts and OpenAI file ids.
//! - `response_format: json_object` adds a system instruction (Anthropic has no JSON mode; the
//!   answer is the model's best effort). `json_schema` forces a reserved tool whose input schema
//!   is the client's schema; the answer's tool input is turned back into the message content
//!   (see [`JSON_TOOL`]). It cannot be combined with client tools or `reasoning_effort`
//!   (Anthropic forbids forced tools with thinking), which are refused.
//! - `reasoning_effort` low/medium/high enables extended thinking with a budget of
//!   1024/4096/16384 tokens (`minimal` counts as low, `none` as off). The budget must be below
//!   `max_tokens`: when it is not, `max_tokens` becomes budget + the requested answer length so
//!   the visible answer keeps what was asked for. A changed `temperature` with thinking is
//!   refused here; other combinations Anthropic forbids with thinking (`top_p` below 0.95, a
//!   forced `tool_choice`) are left to its own 400, which reaches the client with its reason.
//! - A conversation ending in an assistant message is sent as it is: Anthropic continues that
//!   text (a prefill) where OpenAI would answer anew.

use serde_json::{json, Map, Value};

use super::JSON_TOOL;
use crate::error::{Error, Result};
use crate::openai::ChatRequest;

/// `max_tokens` when neither the request nor the model sets one (Anthropic requires a value).
pub(crate) const DEFAULT_MAX_TOKENS: u64 = 4096;

/// The instruction that stands in for OpenAI's JSON mode.
const JSON_OBJECT_INSTRUCTION: &str =
    "Respond with a single valid JSON object and nothing else: no prose, no code fences.";

/// The Messages API body for `req`, sent to `model`.
pub(crate) fn body(
    req: &ChatRequest,
    model: &str,
    default_max_tokens: Option<u32>,
    stream: bool,
) -> Result<Value> {
    let x = &req.extra;
    refuse_unsupported(x)?;

    let (mut system, messages) = messages(&req.messages)?;
    if messages.is_empty() {
        return Err(Error::invalid_param(
            "messages",
            "the conversation has no user or assistant message with content",
        ));
    }

    let mut out = Map::new();
    out.insert("model".into(), model.into());

    let mut max_tokens = match x
        .get("max_completion_tokens")
        .or_else(|| x.get("max_tokens"))
    {
        None | Some(Value::Null) => default_max_tokens.map_or(DEFAULT_MAX_TOKENS, u64::from),
        Some(v) => match v.as_u64() {
            Some(n) if n > 0 => n,
            _ => {
                return Err(Error::invalid_param(
                    "max_tokens",
                    "`max_tokens` must be a positive integer",
                ))
            }
        },
    };

    if let Some(t) = present(x, "temperature") {
        let Some(f) = t.as_f64() else {
            return Err(Error::invalid_param(
                "temperature",
                "`temperature` must be a number",
            ));
        };
        if !(0.0..=1.0).contains(&f) {
            return Err(Error::invalid_param(
                "temperature",
                "this model's provider accepts `temperature` from 0 to 1",
            ));
        }
        out.insert("temperature".into(), t.clone());
    }
    if let Some(t) = present(x, "top_p") {
        out.insert("top_p".into(), t.clone());
    }
    match present(x, "stop") {
        None => {}
        Some(Value::String(s)) => {
            out.insert("stop_sequences".into(), json!([s]));
        }
        Some(Value::Array(a)) if a.is_empty() => {}
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => {
            out.insert("stop_sequences".into(), Value::Array(a.clone()));
        }
        Some(_) => {
            return Err(Error::invalid_param(
                "stop",
                "`stop` must be a string or a list of strings",
            ))
        }
    }
    if let Some(Value::String(u)) = present(x, "user") {
        out.insert("metadata".into(), json!({ "user_id": u }));
    }

    let thinking_budget = match present(x, "reasoning_effort") {
        None => None,
        Some(v) => match v.as_str() {
            Some("none") => None,
            Some("minimal" | "low") => Some(1024u64),
            Some("medium") => Some(4096),
            Some("high") => Some(16384),
            _ => {
                return Err(Error::invalid_param(
                    "reasoning_effort",
                    "`reasoning_effort` must be one of none, minimal, low, medium, high",
                ))
            }
        },
    };
    if let Some(budget) = thinking_budget {
        // Anthropic refuses a changed temperature with thinking on.
        if out
            .get("temperature")
            .and_then(Value::as_f64)
            .is_some_and(|t| t != 1.0)
        {
            return Err(Error::invalid_param(
                "temperature",
                "`temperature` cannot be combined with `reasoning_effort` on this model's provider",
            ));
        }
        if max_tokens <= budget {
            max_tokens += budget;
        }
        out.insert(
            "thinking".into(),
            json!({"type": "enabled", "budget_tokens": budget}),
        );
    }
    out.insert("max_tokens".into(), max_tokens.into());

    let client_tools = tools(x)?;
    match response_format(x)? {
        Format::Text => {}
        Format::JsonObject => system.push(JSON_OBJECT_INSTRUCTION.to_owned()),
        Format::JsonSchema(schema) => {
            if client_tools.is_some() {
                return Err(Error::invalid_param(
                    "response_format",
                    "`response_format: json_schema` cannot be combined with `tools` on this model's provider",
                ));
            }
            if thinking_budget.is_some() {
                return Err(Error::invalid_param(
                    "response_format",
                    "`response_format: json_schema` cannot be combined with `reasoning_effort` on this model's provider",
                ));
            }
            out.insert(
                "tools".into(),
                json!([{
                    "name": JSON_TOOL,
                    "description": "Give the answer as this tool's input, which follows the required JSON schema.",
                    "input_schema": schema,
                }]),
            );
            out.insert(
                "tool_choice".into(),
                json!({"type": "tool", "name": JSON_TOOL}),
            );
        }
    }
    if let Some(t) = client_tools {
        out.insert("tools".into(), Value::Array(t));
        if let Some(c) = tool_choice(x)? {
            out.insert("tool_choice".into(), c);
        }
    }

    match system.len() {
        0 => {}
        1 => {
            out.insert("system".into(), system.swap_remove(0).into());
        }
        _ => {
            let blocks = system
                .into_iter()
                .map(|t| json!({"type": "text", "text": t}))
                .collect();
            out.insert("system".into(), Value::Array(blocks));
        }
    }
    out.insert("messages".into(), Value::Array(messages));
    if stream {
        out.insert("stream".into(), true.into());
    }
    Ok(Value::Object(out))
}

/// A field that is present and not `null`.
fn present<'a>(x: &'a Map<String, Value>, k: &str) -> Option<&'a Value> {
    x.get(k).filter(|v| !v.is_null())
}

/// Refuses the parameters that would change the answer and that Anthropic cannot honour.
fn refuse_unsupported(x: &Map<String, Value>) -> Result<()> {
    let unsupported = |p: &str, why: &str| {
        Err(Error::invalid_param(
            p,
            format!("`{p}` {why} is not supported by this model's provider"),
        ))
    };
    if let Some(n) = present(x, "n") {
        if n.as_u64() != Some(1) {
            return unsupported("n", "other than 1");
        }
    }
    if present(x, "logprobs").is_some_and(|v| v != &Value::Bool(false)) {
        return unsupported("logprobs", "");
    }
    if present(x, "top_logprobs").is_some_and(|v| v.as_u64() != Some(0)) {
        return unsupported("top_logprobs", "");
    }
    for p in ["presence_penalty", "frequency_penalty"] {
        if present(x, p).is_some_and(|v| v.as_f64() != Some(0.0)) {
            return unsupported(p, "other than 0");
        }
    }
    if present(x, "logit_bias").is_some_and(|v| v.as_object().is_none_or(|m| !m.is_empty())) {
        return unsupported("logit_bias", "");
    }
    Ok(())
}

/// The conversation as (system texts, Anthropic messages with alternating roles).
fn messages(msgs: &[Value]) -> Result<(Vec<String>, Vec<Value>)> {
    let mut system = Vec::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        let content = m.get("content").filter(|c| !c.is_null());
        let (role, blocks) = match role {
            "system" | "developer" => {
                let t = plain_text(content, i)?;
                if !t.trim().is_empty() {
                    system.push(t);
                }
                continue;
            }
            "user" => ("user", content_blocks(content, i)?),
            "assistant" => ("assistant", assistant_blocks(m, content, i)?),
            "tool" => ("user", vec![tool_result(m, content, i)?]),
            other => {
                return Err(Error::invalid_param(
                    "messages",
                    format!(
                        "`messages[{i}]`: role '{other}' is not supported by this model's provider"
                    ),
                ))
            }
        };
        if blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some((r, b)) if *r == role => b.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    let out = turns
        .into_iter()
        .map(|(role, mut blocks)| {
            // A merged user turn must start with its tool results.
            blocks.sort_by_key(|b| b.get("type").and_then(Value::as_str) != Some("tool_result"));
            json!({"role": role, "content": blocks})
        })
        .collect();
    Ok((system, out))
}

/// The text of a message whose content may only be text (system, developer).
fn plain_text(content: Option<&Value>, i: usize) -> Result<String> {
    match content {
        None => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut out = Vec::new();
            for p in parts {
                match (p.get("type").and_then(Value::as_str), p.get("text")) {
                    (Some("text"), Some(Value::String(t))) => out.push(t.as_str()),
                    _ => {
                        return Err(Error::invalid_param(
                            "messages",
                            format!("`messages[{i}]`: a system message may only hold text"),
                        ))
                    }
                }
            }
            Ok(out.join("\n"))
        }
        Some(_) => Err(bad_content(i)),
    }
}

fn bad_content(i: usize) -> Error {
    Error::invalid_param(
        "messages",
        format!("`messages[{i}].content` must be a string or a list of content parts"),
    )
}

/// A text block, or nothing for empty or whitespace-only text.
fn text_block(t: &str) -> Option<Value> {
    (!t.trim().is_empty()).then(|| json!({"type": "text", "text": t}))
}

/// User (or tool result) content as Anthropic blocks.
fn content_blocks(content: Option<&Value>, i: usize) -> Result<Vec<Value>> {
    let parts = match content {
        None => return Ok(vec![]),
        Some(Value::String(s)) => return Ok(text_block(s).into_iter().collect()),
        Some(Value::Array(parts)) => parts,
        Some(_) => return Err(bad_content(i)),
    };
    let mut out = Vec::with_capacity(parts.len());
    for p in parts {
        let kind = p.get("type").and_then(Value::as_str).unwrap_or("");
        match kind {
            "text" => {
                let t = p.get("text").and_then(Value::as_str).unwrap_or("");
                out.extend(text_block(t));
            }
            "image_url" => {
                let url = p
                    .get("image_url")
                    .and_then(|u| u.get("url").or(Some(u)))
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        Error::invalid_param(
                            "messages",
                            format!("`messages[{i}]`: an image_url part needs a url"),
                        )
                    })?;
                out.push(image_block(url, i)?);
            }
            "file" => out.push(file_block(p.get("file"), i)?),
            other => {
                return Err(Error::invalid_param(
                    "messages",
                    format!(
                        "`messages[{i}]`: content parts of type '{other}' are not supported by this model's provider"
                    ),
                ))
            }
        }
    }
    Ok(out)
}

/// `data:<media type>;base64,<data>` as (media type, data).
fn data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let media = meta.strip_suffix(";base64")?;
    Some((media, data))
}

/// An image part: a base64 data URL or an http(s) URL Anthropic fetches itself.
fn image_block(url: &str, i: usize) -> Result<Value> {
    if let Some((media_type, data)) = data_url(url) {
        return Ok(json!({"type": "image", "source": {
            "type": "base64", "media_type": media_type, "data": data}}));
    }
    if url.starts_with("https://") || url.starts_with("http://") {
        return Ok(json!({"type": "image", "source": {"type": "url", "url": url}}));
    }
    Err(Error::invalid_param(
        "messages",
        format!("`messages[{i}]`: an image must be a base64 data URL or an http(s) URL"),
    ))
}

/// A `file` part: a PDF as a base64 data URL becomes a document block.
fn file_block(file: Option<&Value>, i: usize) -> Result<Value> {
    let data = file
        .and_then(|f| f.get("file_data"))
        .and_then(Value::as_str)
        .and_then(data_url);
    match data {
        Some(("application/pdf", d)) => Ok(json!({"type": "document", "source": {
            "type": "base64", "media_type": "application/pdf", "data": d}})),
        _ => Err(Error::invalid_param(
            "messages",
            format!(
                "`messages[{i}]`: only PDF files given as base64 `file_data` are supported by this model's provider"
            ),
        )),
    }
}

/// An assistant turn: its text, then its tool calls as `tool_use` blocks. Reasoning text from
/// earlier turns is dropped: Anthropic only takes thinking blocks back with their signature.
fn assistant_blocks(m: &Value, content: Option<&Value>, i: usize) -> Result<Vec<Value>> {
    let mut out = match content {
        None => vec![],
        Some(Value::String(s)) => text_block(s).into_iter().collect(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| match p.get("type").and_then(Value::as_str) {
                Some("text") => p.get("text").and_then(Value::as_str).and_then(text_block),
                // OpenAI's `refusal` parts carry no content to resend.
                _ => None,
            })
            .collect(),
        Some(_) => return Err(bad_content(i)),
    };
    if let Some(calls) = m.get("tool_calls").and_then(Value::as_array) {
        for c in calls {
            let bad = |why: &str| {
                Error::invalid_param("messages", format!("`messages[{i}].tool_calls`: {why}"))
            };
            let id = c
                .get("id")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("each call needs an id"))?;
            let f = c
                .get("function")
                .ok_or_else(|| bad("each call needs a function"))?;
            let name = f
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("each call needs a function name"))?;
            let input = match f.get("arguments") {
                None | Some(Value::Null) => json!({}),
                Some(Value::String(s)) if s.trim().is_empty() => json!({}),
                Some(Value::String(s)) => serde_json::from_str::<Value>(s)
                    .ok()
                    .filter(Value::is_object)
                    .ok_or_else(|| bad("arguments must be a JSON object"))?,
                Some(v @ Value::Object(_)) => v.clone(),
                Some(_) => return Err(bad("arguments must be a JSON object")),
            };
            out.push(json!({"type": "tool_use", "id": id, "name": name, "input": input}));
        }
    }
    Ok(out)
}

/// A `tool` message as a `tool_result` block.
fn tool_result(m: &Value, content: Option<&Value>, i: usize) -> Result<Value> {
    let id = m
        .get("tool_call_id")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            Error::invalid_param(
                "messages",
                format!("`messages[{i}]`: a tool message needs a tool_call_id"),
            )
        })?;
    let mut block = json!({"type": "tool_result", "tool_use_id": id});
    let blocks = content_blocks(content, i)?;
    if !blocks.is_empty() {
        block["content"] = Value::Array(blocks);
    }
    Ok(block)
}

/// `tools` as Anthropic tool definitions; `None` when the request has none.
fn tools(x: &Map<String, Value>) -> Result<Option<Vec<Value>>> {
    let Some(list) = present(x, "tools") else {
        return Ok(None);
    };
    let bad = |why: String| Error::invalid_param("tools", why);
    let list = list
        .as_array()
        .ok_or_else(|| bad("`tools` must be a list".into()))?;
    if list.is_empty() {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(list.len());
    for (k, t) in list.iter().enumerate() {
        if t.get("type").and_then(Value::as_str) != Some("function") {
            return Err(bad(format!(
                "`tools[{k}]`: only function tools are supported by this model's provider"
            )));
        }
        let f = t
            .get("function")
            .ok_or_else(|| bad(format!("`tools[{k}]` needs a function")))?;
        let name = f
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(format!("`tools[{k}]` needs a function name")))?;
        if name == JSON_TOOL {
            return Err(bad(format!(
                "`tools[{k}]`: the name '{JSON_TOOL}' is reserved"
            )));
        }
        let mut d = json!({
            "name": name,
            "input_schema": f.get("parameters").filter(|p| !p.is_null()).cloned()
                .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
        });
        if let Some(desc) = f.get("description").and_then(Value::as_str) {
            d["description"] = desc.into();
        }
        out.push(d);
    }
    Ok(Some(out))
}

/// `tool_choice` and `parallel_tool_calls` as Anthropic's `tool_choice`.
fn tool_choice(x: &Map<String, Value>) -> Result<Option<Value>> {
    let mut choice = match present(x, "tool_choice") {
        None => None,
        Some(Value::String(s)) => match s.as_str() {
            "auto" => Some(json!({"type": "auto"})),
            "none" => Some(json!({"type": "none"})),
            "required" => Some(json!({"type": "any"})),
            _ => None,
        }
        .map(Some)
        .ok_or_else(|| {
            Error::invalid_param(
                "tool_choice",
                "`tool_choice` must be auto, none, required or a named function",
            )
        })?,
        Some(v) => {
            let name = v
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    Error::invalid_param("tool_choice", "a named `tool_choice` needs function.name")
                })?;
            Some(json!({"type": "tool", "name": name}))
        }
    };
    if present(x, "parallel_tool_calls") == Some(&Value::Bool(false)) {
        let c = choice.get_or_insert_with(|| json!({"type": "auto"}));
        if c["type"] != "none" {
            c["disable_parallel_tool_use"] = true.into();
        }
    }
    Ok(choice)
}

enum Format {
    Text,
    JsonObject,
    JsonSchema(Value),
}

fn response_format(x: &Map<String, Value>) -> Result<Format> {
    let Some(rf) = present(x, "response_format") else {
        return Ok(Format::Text);
    };
    match rf.get("type").and_then(Value::as_str) {
        Some("text") => Ok(Format::Text),
        Some("json_object") => Ok(Format::JsonObject),
        Some("json_schema") => {
            let schema = rf
                .get("json_schema")
                .and_then(|s| s.get("schema"))
                .cloned()
                .unwrap_or_else(|| json!({"type": "object"}));
            // A tool's input is always an object.
            if schema.get("type").and_then(Value::as_str) != Some("object") {
                return Err(Error::invalid_param(
                    "response_format",
                    "this model's provider needs a json_schema whose type is object",
                ));
            }
            Ok(Format::JsonSchema(schema))
        }
        _ => Err(Error::invalid_param(
            "response_format",
            "`response_format.type` must be text, json_object or json_schema",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(v: Value) -> ChatRequest {
        serde_json::from_value(v).unwrap()
    }

    fn build(v: Value) -> Result<Value> {
        body(&req(v), "claude-x", None, false)
    }

    #[test]
    fn system_roles_merge_and_turns_alternate() {
        let b = build(json!({"model": "m", "name": "x", "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "a", "name": "bob"},
            {"role": "user", "content": [{"type": "text", "text": "b"}, {"type": "text", "text": "  "}]},
            {"role": "developer", "content": [{"type": "text", "text": "later rule"}]},
            {"role": "assistant", "content": "c"},
            {"role": "assistant", "content": ""},
            {"role": "user", "content": "   "},
            {"role": "user", "content": "d"},
        ]}))
        .unwrap();
        assert_eq!(
            b["system"],
            json!([{"type": "text", "text": "be brief"}, {"type": "text", "text": "later rule"}])
        );
        assert_eq!(
            b["messages"],
            json!([
                {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "c"}]},
                {"role": "user", "content": [{"type": "text", "text": "d"}]},
            ])
        );
        assert_eq!(b["max_tokens"], 4096);
        assert!(b.get("stream").is_none());
    }

    #[test]
    fn parameters_map_and_unsupported_ones_are_refused() {
        let b = body(
            &req(
                json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                "max_completion_tokens": 50, "max_tokens": 9, "temperature": 0.5, "top_p": 0.9,
                "stop": "END", "user": "u1", "seed": 7, "presence_penalty": 0, "n": 1}),
            ),
            "claude-x",
            Some(1000),
            true,
        )
        .unwrap();
        assert_eq!(b["max_tokens"], 50);
        assert_eq!(b["stop_sequences"], json!(["END"]));
        assert_eq!(b["metadata"], json!({"user_id": "u1"}));
        assert_eq!(b["stream"], true);
        assert!(b.get("seed").is_none() && b.get("n").is_none());
        let b = body(
            &req(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]})),
            "claude-x",
            Some(1000),
            false,
        )
        .unwrap();
        assert_eq!(b["max_tokens"], 1000);
        for (k, v) in [
            ("n", json!(2)),
            ("logprobs", json!(true)),
            ("top_logprobs", json!(3)),
            ("presence_penalty", json!(0.5)),
            ("frequency_penalty", json!(-1)),
            ("logit_bias", json!({"50256": -100})),
            ("temperature", json!(1.5)),
            ("max_tokens", json!(0)),
            ("reasoning_effort", json!("extreme")),
        ] {
            let mut r = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
            r[k] = v;
            let e = build(r).unwrap_err();
            assert_eq!(e.http_status(), 400, "{k}");
            assert_eq!(e.param(), Some(k), "{k}");
        }
    }

    #[test]
    fn images_and_documents() {
        let b = build(json!({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "low"}},
            {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBER"}},
        ]}]}))
        .unwrap();
        assert_eq!(
            b["messages"][0]["content"],
            json!([
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
                {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBER"}},
            ])
        );
        for part in [
            json!({"type": "image_url", "image_url": {"url": "ftp://x"}}),
            json!({"type": "file", "file": {"file_id": "file-1"}}),
            json!({"type": "input_audio", "input_audio": {"data": "x", "format": "wav"}}),
        ] {
            let e = build(json!({"model": "m", "messages": [{"role": "user", "content": [part]}]}))
                .unwrap_err();
            assert_eq!(e.param(), Some("messages"));
        }
    }

    #[test]
    fn tools_choices_and_tool_history() {
        let tools = json!([
            {"type": "function", "function": {"name": "search", "description": "find", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}},
            {"type": "function", "function": {"name": "now"}},
        ]);
        let msgs = json!([
            {"role": "user", "content": "look it up"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "search", "arguments": "{\"q\":\"rust\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "now", "arguments": ""}},
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "found it"},
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "noon"}]},
            {"role": "user", "content": "thanks"},
        ]);
        let b = build(json!({"model": "m", "messages": msgs, "tools": tools,
            "tool_choice": "required", "parallel_tool_calls": false}))
        .unwrap();
        assert_eq!(
            b["tools"][0]["input_schema"]["properties"]["q"]["type"],
            "string"
        );
        assert_eq!(b["tools"][0]["description"], "find");
        assert_eq!(
            b["tools"][1]["input_schema"],
            json!({"type": "object", "properties": {}})
        );
        assert_eq!(
            b["tool_choice"],
            json!({"type": "any", "disable_parallel_tool_use": true})
        );
        let m = b["messages"].as_array().unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(
            m[1]["content"],
            json!([
                {"type": "tool_use", "id": "call_1", "name": "search", "input": {"q": "rust"}},
                {"type": "tool_use", "id": "call_2", "name": "now", "input": {}},
            ])
        );
        assert_eq!(
            m[2]["content"],
            json!([
                {"type": "tool_result", "tool_use_id": "call_1", "content": [{"type": "text", "text": "found it"}]},
                {"type": "tool_result", "tool_use_id": "call_2", "content": [{"type": "text", "text": "noon"}]},
                {"type": "text", "text": "thanks"},
            ])
        );
        for (choice, want) in [
            (json!("auto"), json!({"type": "auto"})),
            (json!("none"), json!({"type": "none"})),
            (
                json!({"type": "function", "function": {"name": "now"}}),
                json!({"type": "tool", "name": "now"}),
            ),
        ] {
            let b = build(
                json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
                "tools": tools, "tool_choice": choice}),
            )
            .unwrap();
            assert_eq!(b["tool_choice"], want);
        }
        let bad_args = json!([{"role": "user", "content": "x"}, {"role": "assistant",
            "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1"}}]}]);
        assert!(build(json!({"model": "m", "messages": bad_args})).is_err());
    }

    #[test]
    fn reasoning_and_response_formats() {
        let b = build(
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
            "reasoning_effort": "medium", "max_tokens": 1000}),
        )
        .unwrap();
        assert_eq!(
            b["thinking"],
            json!({"type": "enabled", "budget_tokens": 4096})
        );
        assert_eq!(b["max_tokens"], 5096);
        let b = build(
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
            "reasoning_effort": "low", "max_tokens": 8000}),
        )
        .unwrap();
        assert_eq!(b["max_tokens"], 8000);
        assert_eq!(b["thinking"]["budget_tokens"], 1024);

        let b = build(json!({"model": "m", "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "x"}],
            "response_format": {"type": "json_object"}}))
        .unwrap();
        assert_eq!(b["system"][1]["text"], JSON_OBJECT_INSTRUCTION);

        let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
        let b = build(json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": schema}}}))
        .unwrap();
        assert_eq!(b["tools"][0]["input_schema"], schema);
        assert_eq!(b["tool_choice"], json!({"type": "tool", "name": JSON_TOOL}));
        let e = build(json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
            "reasoning_effort": "high",
            "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": schema}}}))
        .unwrap_err();
        assert_eq!(e.param(), Some("response_format"));
        let e = build(json!({"model": "m", "messages": [{"role": "system", "content": "only"}]}))
            .unwrap_err();
        assert_eq!(e.param(), Some("messages"));
    }
}
