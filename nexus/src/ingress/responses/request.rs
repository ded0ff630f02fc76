//! An OpenAI Responses request as an OpenAI chat request.
//!
//! Translated: `input` as a string (one user message) or items: messages (roles `user`,
//! `assistant`, `system`, and `developer` as `system`; content a string or `input_text`,
//! `output_text`, `refusal`, `input_image` (URL or data URL), `input_file` (`file_data`) and
//! `input_audio` parts), `function_call` (→ the assistant's `tool_calls`, consecutive calls in one
//! message) and `function_call_output` (→ `tool` messages; images in an output follow in a user
//! message). `instructions` → the first system message. Function tools (`strict` kept) and the
//! functions inside `namespace` tools (flattened); `tool_choice`; `parallel_tool_calls`;
//! `max_output_tokens` → `max_completion_tokens`; `temperature`, `top_p`, `top_logprobs`;
//! `reasoning.effort` → `reasoning_effort`; `text.format` (`json_object`, `json_schema`) →
//! `response_format` and `text.verbosity` → `verbosity`; `user` (or `safety_identifier`) → `user`.
//!
//! Dropped: hosted tools the hub cannot run (`web_search`, `file_search`, `code_interpreter`,
//! `computer_use_preview`, `image_generation`, `mcp`, `local_shell`, `tool_search`, and `custom`
//! grammar tools), `reasoning` items of earlier turns (their encrypted content is only the
//! issuing provider's to read), hosted tool calls of earlier turns, `include`,
//! `prompt_cache_key`, `client_metadata`, `truncation`, `service_tier`, `stream_options`.
//! Refused (400): `background: true`, `conversation`, `prompt` (templates), `item_reference`
//! items, files and images by `file_id`, unknown item and part types, bad shapes.

use serde_json::{json, Map, Value};

use crate::error::{Error, Result};
use crate::openai::{ChatRequest, RequestLimits};

/// A Responses request translated, with what the response echoes and what storing it needs.
#[derive(Debug, Clone)]
pub struct Translated {
    /// The chat request (its messages: the instructions, then the input; no earlier turns).
    pub chat: ChatRequest,
    /// Whether `instructions` made the first message (it is not carried into later turns).
    pub has_instructions: bool,
    /// `store` (OpenAI's default: true).
    pub store: bool,
    /// `previous_response_id`.
    pub previous_response_id: Option<String>,
    /// The input items as sent (a string input as one user message item).
    pub input_items: Value,
    /// The request fields a response object repeats (`instructions`, `tools`, `tool_choice`...).
    pub echo: Map<String, Value>,
}

fn bad(param: &str, message: impl Into<String>) -> Error {
    Error::invalid_param(param, message)
}

/// Parses a Responses body under the hub's limits and translates it.
pub fn parse(body: &[u8], limits: &RequestLimits) -> Result<Translated> {
    parse_keeping(body, limits).map(|(t, _)| t)
}

/// [`parse`], also keeping the body's top level as sent, for providers that take it as it is.
pub(crate) fn parse_keeping(
    body: &[u8],
    limits: &RequestLimits,
) -> Result<(Translated, Map<String, Value>)> {
    let m = crate::openai::parse_object_limited(body, limits)?;
    let kept = m.clone();
    let t = translate(m)?;
    check_limits(&t.chat, limits)?;
    Ok((t, kept))
}

/// Translates a Responses body (JSON) into a chat request, under the default limits.
pub fn to_chat_request(body: Value) -> Result<Translated> {
    match body {
        Value::Object(m) => {
            let t = translate(m)?;
            check_limits(&t.chat, &RequestLimits::default())?;
            Ok(t)
        }
        _ => Err(Error::invalid(
            "invalid request body: expected a JSON object",
        )),
    }
}

/// The chat path's own bounds, on the translation (and again with an earlier response's context
/// before it): a Responses body must not hold more than a chat body may.
pub(crate) fn check_limits(chat: &ChatRequest, limits: &RequestLimits) -> Result<()> {
    if chat.messages.len() > limits.max_messages {
        return Err(bad(
            "input",
            format!(
                "too many input items: {} messages, at most {}",
                chat.messages.len(),
                limits.max_messages
            ),
        ));
    }
    for m in &chat.messages {
        if let Some(parts) = m.get("content").and_then(Value::as_array) {
            if parts.len() > limits.max_content_parts {
                return Err(bad(
                    "input",
                    format!(
                        "too many content parts in one item: {}, at most {}",
                        parts.len(),
                        limits.max_content_parts
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn str_field<'a>(o: &'a Map<String, Value>, k: &str, param: &str) -> Result<Option<&'a str>> {
    match o.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(bad(param, format!("{param}: must be a string"))),
    }
}

fn translate(mut x: Map<String, Value>) -> Result<Translated> {
    let model = match x.remove("model") {
        Some(Value::String(s)) if !s.trim().is_empty() => s,
        Some(Value::String(_)) | None | Some(Value::Null) => {
            return Err(bad("model", "`model` must not be empty"))
        }
        Some(_) => return Err(bad("model", "`model` must be a string")),
    };
    if x.get("background").and_then(Value::as_bool) == Some(true) {
        return Err(bad(
            "background",
            "background responses are not supported by this gateway",
        ));
    }
    for f in ["conversation", "prompt"] {
        if !matches!(x.get(f), None | Some(Value::Null)) {
            return Err(bad(f, format!("`{f}` is not supported by this gateway")));
        }
    }
    let stream = match x.get("stream") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => return Err(bad("stream", "stream: must be a boolean")),
    };
    let store = match x.get("store") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(bad("store", "store: must be a boolean")),
    };
    let previous_response_id = str_field(&x, "previous_response_id", "previous_response_id")?
        .filter(|s| !s.is_empty())
        .map(str::to_owned);

    let mut messages = Vec::new();
    let instructions = str_field(&x, "instructions", "instructions")?.filter(|s| !s.is_empty());
    if let Some(i) = instructions {
        messages.push(json!({"role": "system", "content": i}));
    }
    let has_instructions = instructions.is_some();
    let input_items = match x.get("input") {
        None | Some(Value::Null) => {
            return Err(bad("input", "`input` is required"));
        }
        Some(Value::String(s)) => {
            messages.push(json!({"role": "user", "content": s}));
            json!([{"type": "message", "role": "user", "content": [{"type": "input_text", "text": s}]}])
        }
        Some(Value::Array(items)) => {
            let mut b = Builder::default();
            for (i, item) in items.iter().enumerate() {
                b.item(item, i)?;
            }
            b.flush_images();
            messages.extend(b.messages);
            Value::Array(items.clone())
        }
        Some(_) => return Err(bad("input", "input: must be a string or an array of items")),
    };
    if messages.len() == usize::from(has_instructions) && previous_response_id.is_none() {
        return Err(bad("input", "`input` must not be empty"));
    }

    let mut out = Map::new();
    let tools = tools(x.get("tools"))?;
    let has_tools = !tools.is_empty();
    if has_tools {
        out.insert("tools".into(), Value::Array(tools));
        if let Some(tc) = tool_choice(x.get("tool_choice"))? {
            out.insert("tool_choice".into(), tc);
        }
        match x.get("parallel_tool_calls") {
            None | Some(Value::Null) => {}
            Some(Value::Bool(b)) => {
                out.insert("parallel_tool_calls".into(), Value::Bool(*b));
            }
            Some(_) => {
                return Err(bad(
                    "parallel_tool_calls",
                    "parallel_tool_calls: must be a boolean",
                ))
            }
        }
    }
    match x.get("max_output_tokens") {
        None | Some(Value::Null) => {}
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 => {
                out.insert("max_completion_tokens".into(), n.into());
            }
            _ => {
                return Err(bad(
                    "max_output_tokens",
                    "max_output_tokens: must be a positive integer",
                ))
            }
        },
    }
    for f in ["temperature", "top_p", "top_logprobs"] {
        match x.get(f) {
            None | Some(Value::Null) => {}
            Some(v) if v.is_number() => {
                out.insert(f.into(), v.clone());
            }
            Some(_) => return Err(bad(f, format!("{f}: must be a number"))),
        }
    }
    match x.get("reasoning") {
        None | Some(Value::Null) => {}
        Some(Value::Object(r)) => {
            if let Some(e) = str_field(r, "effort", "reasoning.effort")? {
                out.insert("reasoning_effort".into(), e.into());
            }
        }
        Some(_) => return Err(bad("reasoning", "reasoning: must be an object")),
    }
    match x.get("text") {
        None | Some(Value::Null) => {}
        Some(Value::Object(t)) => {
            if let Some(f) = t.get("format").filter(|f| !f.is_null()) {
                if let Some(rf) = response_format(f)? {
                    out.insert("response_format".into(), rf);
                }
            }
            if let Some(v) = str_field(t, "verbosity", "text.verbosity")? {
                out.insert("verbosity".into(), v.into());
            }
        }
        Some(_) => return Err(bad("text", "text: must be an object")),
    }
    let user =
        str_field(&x, "user", "user")?.or(str_field(&x, "safety_identifier", "safety_identifier")?);
    if let Some(u) = user {
        out.insert("user".into(), u.into());
    }

    let mut echo = Map::new();
    echo.insert(
        "instructions".into(),
        instructions.map_or(Value::Null, Value::from),
    );
    echo.insert(
        "tools".into(),
        x.get("tools").cloned().unwrap_or_else(|| json!([])),
    );
    echo.insert(
        "tool_choice".into(),
        x.get("tool_choice")
            .cloned()
            .unwrap_or_else(|| json!("auto")),
    );
    echo.insert(
        "parallel_tool_calls".into(),
        x.get("parallel_tool_calls")
            .cloned()
            .unwrap_or(Value::Bool(true)),
    );
    echo.insert(
        "max_output_tokens".into(),
        x.get("max_output_tokens").cloned().unwrap_or(Value::Null),
    );
    echo.insert(
        "previous_response_id".into(),
        previous_response_id
            .clone()
            .map_or(Value::Null, Value::from),
    );
    echo.insert(
        "reasoning".into(),
        x.get("reasoning")
            .cloned()
            .unwrap_or_else(|| json!({"effort": null, "summary": null})),
    );
    echo.insert("store".into(), Value::Bool(store));
    echo.insert(
        "temperature".into(),
        x.get("temperature").cloned().unwrap_or_else(|| json!(1.0)),
    );
    echo.insert(
        "top_p".into(),
        x.get("top_p").cloned().unwrap_or_else(|| json!(1.0)),
    );
    echo.insert(
        "text".into(),
        x.get("text")
            .cloned()
            .unwrap_or_else(|| json!({"format": {"type": "text"}})),
    );
    echo.insert("truncation".into(), json!("disabled"));
    echo.insert(
        "metadata".into(),
        x.get("metadata").cloned().unwrap_or_else(|| json!({})),
    );
    echo.insert("user".into(), user.map_or(Value::Null, Value::from));

    Ok(Translated {
        chat: ChatRequest {
            model,
            messages,
            stream,
            stream_options: None,
            extra: out,
        },
        has_instructions,
        store,
        previous_response_id,
        input_items,
        echo,
    })
}

/// Builds chat messages from input items, merging consecutive function calls into one
/// assistant message.
#[derive(Default)]
struct Builder {
    messages: Vec<Value>,
    /// Images from function outputs, for a user message after the tool messages.
    pending_images: Vec<Value>,
}

impl Builder {
    fn flush_images(&mut self) {
        if !self.pending_images.is_empty() {
            let parts = std::mem::take(&mut self.pending_images);
            self.messages
                .push(json!({"role": "user", "content": parts}));
        }
    }

    fn item(&mut self, item: &Value, i: usize) -> Result<()> {
        let param = format!("input[{i}]");
        let o = item
            .as_object()
            .ok_or_else(|| bad(&param, format!("{param}: must be an object")))?;
        let ty = str_field(o, "type", &format!("{param}.type"))?;
        match ty {
            None | Some("message") => {
                self.flush_images();
                self.message(o, &param)
            }
            Some("function_call") => {
                self.flush_images();
                let call_id = str_field(o, "call_id", &format!("{param}.call_id"))?
                    .ok_or_else(|| bad(&param, format!("{param}.call_id: Field required")))?;
                let name = str_field(o, "name", &format!("{param}.name"))?
                    .ok_or_else(|| bad(&param, format!("{param}.name: Field required")))?;
                let args = str_field(o, "arguments", &format!("{param}.arguments"))?.unwrap_or("");
                let call = json!({"id": call_id, "type": "function",
                    "function": {"name": name, "arguments": args}});
                self.push_call(call);
                Ok(())
            }
            Some("function_call_output") => {
                let call_id = str_field(o, "call_id", &format!("{param}.call_id"))?
                    .ok_or_else(|| bad(&param, format!("{param}.call_id: Field required")))?;
                let output = match o.get("output") {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Array(parts)) => {
                        let mut text = Vec::new();
                        for (j, p) in parts.iter().enumerate() {
                            let pp = format!("{param}.output[{j}]");
                            match part(p, &pp)? {
                                Part::Text(t) => text.push(t),
                                Part::Other(v) => self.pending_images.push(v),
                            }
                        }
                        text.join("\n")
                    }
                    _ => {
                        return Err(bad(
                            &param,
                            format!("{param}.output: must be a string or an array of parts"),
                        ))
                    }
                };
                self.messages
                    .push(json!({"role": "tool", "tool_call_id": call_id, "content": output}));
                Ok(())
            }
            // Reasoning of earlier turns (often encrypted for the provider that issued it) and
            // hosted tool calls the hub did not run: nothing a chat upstream can take.
            Some(
                "reasoning"
                | "web_search_call"
                | "file_search_call"
                | "computer_call"
                | "computer_call_output"
                | "code_interpreter_call"
                | "image_generation_call"
                | "local_shell_call"
                | "local_shell_call_output"
                | "mcp_list_tools"
                | "mcp_approval_request"
                | "mcp_approval_response"
                | "mcp_call"
                | "tool_search_call"
                | "tool_search_output"
                | "custom_tool_call"
                | "custom_tool_call_output",
            ) => Ok(()),
            Some("item_reference") => Err(bad(
                &param,
                format!("{param}: item references are not supported; send the item itself"),
            )),
            Some(other) => Err(bad(
                &param,
                format!("{param}: unsupported item type '{other}'"),
            )),
        }
    }

    fn push_call(&mut self, call: Value) {
        if let Some(last) = self.messages.last_mut() {
            if last["role"] == "assistant" {
                if let Some(o) = last.as_object_mut() {
                    match o.get_mut("tool_calls").and_then(Value::as_array_mut) {
                        Some(calls) => calls.push(call),
                        None => {
                            o.insert("tool_calls".into(), json!([call]));
                        }
                    }
                    return;
                }
            }
        }
        self.messages
            .push(json!({"role": "assistant", "content": null, "tool_calls": [call]}));
    }

    fn message(&mut self, o: &Map<String, Value>, param: &str) -> Result<()> {
        let role = match str_field(o, "role", &format!("{param}.role"))? {
            Some("developer" | "system") => "system",
            Some("user") => "user",
            Some("assistant") => "assistant",
            Some(r) => return Err(bad(param, format!("{param}.role: unsupported role '{r}'"))),
            None => return Err(bad(param, format!("{param}.role: Field required"))),
        };
        let content = match o.get("content") {
            Some(Value::String(s)) => Value::String(s.clone()),
            Some(Value::Array(parts)) => {
                let mut out = Vec::new();
                for (j, p) in parts.iter().enumerate() {
                    out.push(match part(p, &format!("{param}.content[{j}]"))? {
                        Part::Text(t) => json!({"type": "text", "text": t}),
                        Part::Other(v) => v,
                    });
                }
                // Text-only content as one string (what every upstream takes); system and
                // assistant messages take nothing else.
                let all_text = out.iter().all(|p| p["type"] == "text");
                if role != "user" || all_text {
                    let mut text = Vec::new();
                    for p in &out {
                        match p["text"].as_str() {
                            Some(t) if p["type"] == "text" => text.push(t),
                            _ => {
                                return Err(bad(
                                    param,
                                    format!("{param}.content: a {role} message takes text only"),
                                ))
                            }
                        }
                    }
                    Value::String(text.join("\n"))
                } else {
                    Value::Array(out)
                }
            }
            _ => {
                return Err(bad(
                    param,
                    format!("{param}.content: must be a string or an array of parts"),
                ))
            }
        };
        self.messages
            .push(json!({"role": role, "content": content}));
        Ok(())
    }
}

enum Part {
    Text(String),
    Other(Value),
}

/// One content part as a chat content part.
fn part(p: &Value, param: &str) -> Result<Part> {
    let o = p
        .as_object()
        .ok_or_else(|| bad(param, format!("{param}: must be an object")))?;
    let ty = str_field(o, "type", &format!("{param}.type"))?.unwrap_or("");
    let text = |k: &str| -> Result<String> {
        str_field(o, k, &format!("{param}.{k}"))?
            .map(str::to_owned)
            .ok_or_else(|| bad(param, format!("{param}.{k}: Field required")))
    };
    match ty {
        "input_text" | "output_text" | "text" => Ok(Part::Text(text("text")?)),
        "refusal" => Ok(Part::Text(text("refusal")?)),
        "input_image" => {
            if o.get("file_id").is_some_and(|v| !v.is_null()) {
                return Err(bad(
                    param,
                    format!("{param}: images by file_id are not supported; send image_url"),
                ));
            }
            let url = text("image_url")?;
            let mut img = json!({"url": url});
            if let Some(d) = str_field(o, "detail", &format!("{param}.detail"))? {
                img["detail"] = d.into();
            }
            Ok(Part::Other(json!({"type": "image_url", "image_url": img})))
        }
        "input_file" => {
            if o.get("file_id").is_some_and(|v| !v.is_null())
                || o.get("file_url").is_some_and(|v| !v.is_null())
            {
                return Err(bad(
                    param,
                    format!(
                        "{param}: files by file_id or file_url are not supported; send file_data"
                    ),
                ));
            }
            let data = text("file_data")?;
            let mut f = json!({"file_data": data});
            if let Some(n) = str_field(o, "filename", &format!("{param}.filename"))? {
                f["filename"] = n.into();
            }
            Ok(Part::Other(json!({"type": "file", "file": f})))
        }
        "input_audio" => {
            let a = o
                .get("input_audio")
                .filter(|a| a.is_object())
                .ok_or_else(|| bad(param, format!("{param}.input_audio: Field required")))?;
            Ok(Part::Other(
                json!({"type": "input_audio", "input_audio": a}),
            ))
        }
        other => Err(bad(
            param,
            format!("{param}: unsupported content part type '{other}'"),
        )),
    }
}

/// Function tools as chat tools; the functions of a `namespace` flattened; hosted tools dropped.
fn tools(v: Option<&Value>) -> Result<Vec<Value>> {
    let list = match v {
        None | Some(Value::Null) => return Ok(vec![]),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(bad("tools", "tools: must be an array")),
    };
    let mut out = Vec::new();
    for (i, t) in list.iter().enumerate() {
        let param = format!("tools[{i}]");
        let o = t
            .as_object()
            .ok_or_else(|| bad(&param, format!("{param}: must be an object")))?;
        match str_field(o, "type", &format!("{param}.type"))? {
            Some("function") => out.push(function_tool(o, &param)?),
            Some("namespace") => {
                let inner = o.get("tools").and_then(Value::as_array);
                for (j, f) in inner.into_iter().flatten().enumerate() {
                    let p = format!("{param}.tools[{j}]");
                    if let Some(fo) = f.as_object() {
                        if fo.get("type").and_then(Value::as_str) == Some("function") {
                            out.push(function_tool(fo, &p)?);
                        }
                    }
                }
            }
            // Hosted tools (and grammar tools) the hub cannot run or express to a chat upstream.
            Some(_) => {}
            None => return Err(bad(&param, format!("{param}.type: Field required"))),
        }
    }
    Ok(out)
}

fn function_tool(o: &Map<String, Value>, param: &str) -> Result<Value> {
    let name = str_field(o, "name", &format!("{param}.name"))?
        .ok_or_else(|| bad(param, format!("{param}.name: Field required")))?;
    let mut f = json!({"name": name});
    if let Some(d) = str_field(o, "description", &format!("{param}.description"))? {
        f["description"] = d.into();
    }
    if let Some(p) = o.get("parameters").filter(|p| !p.is_null()) {
        f["parameters"] = p.clone();
    }
    if let Some(s) = o.get("strict").and_then(Value::as_bool) {
        f["strict"] = s.into();
    }
    Ok(json!({"type": "function", "function": f}))
}

fn tool_choice(v: Option<&Value>) -> Result<Option<Value>> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => match s.as_str() {
            "auto" | "none" | "required" => Ok(Some(Value::String(s.clone()))),
            _ => Err(bad(
                "tool_choice",
                "tool_choice: must be 'auto', 'none', 'required' or an object",
            )),
        },
        Some(Value::Object(o)) => match o.get("type").and_then(Value::as_str) {
            Some("function") => match o.get("name").and_then(Value::as_str) {
                Some(n) => Ok(Some(json!({"type": "function", "function": {"name": n}}))),
                None => Err(bad("tool_choice", "tool_choice.name: Field required")),
            },
            Some("allowed_tools") => Ok(o
                .get("mode")
                .and_then(Value::as_str)
                .map(|m| Value::String(if m == "required" { "required" } else { "auto" }.into()))),
            // A hosted tool's choice: that tool is not sent, so the model chooses.
            _ => Ok(None),
        },
        Some(_) => Err(bad(
            "tool_choice",
            "tool_choice: must be a string or an object",
        )),
    }
}

fn response_format(f: &Value) -> Result<Option<Value>> {
    let o = f
        .as_object()
        .ok_or_else(|| bad("text.format", "text.format: must be an object"))?;
    match o.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(json!({"type": "json_object"}))),
        Some("json_schema") => {
            let name = str_field(o, "name", "text.format.name")?.unwrap_or("response");
            let schema = o
                .get("schema")
                .filter(|s| s.is_object())
                .ok_or_else(|| bad("text.format", "text.format.schema: Field required"))?;
            let mut js = json!({"name": name, "schema": schema});
            for k in ["strict", "description"] {
                if let Some(v) = o.get(k).filter(|v| !v.is_null()) {
                    js[k] = v.clone();
                }
            }
            Ok(Some(json!({"type": "json_schema", "json_schema": js})))
        }
        _ => Err(bad(
            "text.format",
            "text.format.type: must be 'text', 'json_object' or 'json_schema'",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tr(v: Value) -> Translated {
        to_chat_request(v).unwrap()
    }

    #[test]
    fn string_input_and_instructions() {
        let t = tr(
            json!({"model": "m", "input": "hi", "instructions": "be brief",
            "max_output_tokens": 20, "temperature": 0.2, "store": false}),
        );
        assert_eq!(
            t.chat.messages,
            vec![
                json!({"role": "system", "content": "be brief"}),
                json!({"role": "user", "content": "hi"})
            ]
        );
        assert!(t.has_instructions);
        assert!(!t.store);
        assert_eq!(t.chat.extra["max_completion_tokens"], 20);
        assert_eq!(t.echo["instructions"], "be brief");
        assert_eq!(t.echo["tool_choice"], "auto");
    }

    #[test]
    fn items_calls_outputs_and_roles() {
        let t = tr(json!({"model": "m", "input": [
            {"type": "message", "id": "msg_1", "role": "developer",
             "content": [{"type": "input_text", "text": "sys"}]},
            {"role": "user", "content": [{"type": "input_text", "text": "weather?"},
                {"type": "input_image", "image_url": "data:image/png;base64,AA", "detail": "low"}]},
            {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "x"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Let me look."}]},
            {"type": "function_call", "call_id": "call_1", "name": "get", "arguments": "{\"c\":1}"},
            {"type": "function_call", "call_id": "call_2", "name": "get", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
            {"type": "function_call_output", "call_id": "call_2",
             "output": [{"type": "input_text", "text": "a"}, {"type": "input_image", "image_url": "https://x/y.png"}]},
        ]}));
        let m = &t.chat.messages;
        assert_eq!(m.len(), 6);
        assert_eq!(m[0], json!({"role": "system", "content": "sys"}));
        assert_eq!(
            m[1]["content"][0],
            json!({"type": "text", "text": "weather?"})
        );
        assert_eq!(m[1]["content"][1]["image_url"]["detail"], "low");
        assert_eq!(m[2]["content"], "Let me look.");
        assert_eq!(m[2]["tool_calls"].as_array().unwrap().len(), 2);
        assert_eq!(m[2]["tool_calls"][1]["id"], "call_2");
        assert_eq!(
            m[3],
            json!({"role": "tool", "tool_call_id": "call_1", "content": "sunny"})
        );
        assert_eq!(m[4]["content"], "a");
        assert_eq!(m[5]["role"], "user");
        assert_eq!(m[5]["content"][0]["type"], "image_url");
    }

    #[test]
    fn tools_namespace_hosted_and_formats() {
        let t = tr(json!({"model": "m", "input": "x",
            "tools": [
                {"type": "function", "name": "a", "parameters": {"type": "object"}, "strict": true},
                {"type": "namespace", "name": "ns", "description": "group",
                 "tools": [{"type": "function", "name": "b", "parameters": {}}]},
                {"type": "web_search", "external_web_access": false},
                {"type": "custom", "name": "apply_patch", "format": {"type": "grammar"}}
            ],
            "tool_choice": {"type": "function", "name": "a"}, "parallel_tool_calls": false,
            "reasoning": {"effort": "low", "summary": "auto"},
            "text": {"format": {"type": "json_schema", "name": "s", "schema": {"type": "object"}, "strict": true},
                     "verbosity": "low"},
            "include": ["reasoning.encrypted_content"], "prompt_cache_key": "k"}));
        let x = &t.chat.extra;
        let tools = x["tools"].as_array().unwrap();
        assert_eq!(tools.len(), 2);
        assert_eq!(tools[0]["function"]["strict"], true);
        assert_eq!(tools[1]["function"]["name"], "b");
        assert_eq!(x["tool_choice"]["function"]["name"], "a");
        assert_eq!(x["parallel_tool_calls"], false);
        assert_eq!(x["reasoning_effort"], "low");
        assert_eq!(x["response_format"]["json_schema"]["name"], "s");
        assert_eq!(x["verbosity"], "low");
        assert!(x.get("include").is_none() && x.get("prompt_cache_key").is_none());
        // Only hosted tools: no tools, no tool_choice.
        let t = tr(
            json!({"model": "m", "input": "x", "tools": [{"type": "web_search"}],
            "tool_choice": "required"}),
        );
        assert!(t.chat.extra.get("tools").is_none() && t.chat.extra.get("tool_choice").is_none());
    }

    #[test]
    fn refusals() {
        for (body, param) in [
            (json!({"input": "x"}), "model"),
            (json!({"model": "m"}), "input"),
            (json!({"model": "m", "input": []}), "input"),
            (json!({"model": "m", "input": 3}), "input"),
            (
                json!({"model": "m", "input": "x", "background": true}),
                "background",
            ),
            (
                json!({"model": "m", "input": "x", "conversation": "conv_1"}),
                "conversation",
            ),
            (
                json!({"model": "m", "input": [{"type": "item_reference", "id": "msg_1"}]}),
                "input[0]",
            ),
            (
                json!({"model": "m", "input": [{"type": "bogus"}]}),
                "input[0]",
            ),
            (
                json!({"model": "m", "input": [{"role": "tool", "content": "x"}]}),
                "input[0]",
            ),
            (
                json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]}),
                "input[0].content[0]",
            ),
            (
                json!({"model": "m", "input": "x", "max_output_tokens": 0}),
                "max_output_tokens",
            ),
            (
                json!({"model": "m", "input": "x", "text": {"format": {"type": "yaml"}}}),
                "text.format",
            ),
        ] {
            match to_chat_request(body.clone()) {
                Err(Error::InvalidRequest { param: p, .. }) => {
                    assert_eq!(p.as_deref(), Some(param), "{body}")
                }
                other => panic!("{body}: {other:?}"),
            }
        }
        // previous_response_id alone continues with no new input beyond instructions.
        assert!(to_chat_request(
            json!({"model": "m", "input": [], "previous_response_id": "resp_1"})
        )
        .is_ok());
    }

    #[test]
    fn limits_apply_to_the_translation() {
        let items: Vec<Value> = (0..5)
            .map(|_| json!({"role": "user", "content": "x"}))
            .collect();
        let limits = RequestLimits {
            max_messages: 4,
            ..RequestLimits::default()
        };
        let body = serde_json::to_vec(&json!({"model": "m", "input": items})).unwrap();
        assert!(matches!(
            parse(&body, &limits),
            Err(Error::InvalidRequest { .. })
        ));
    }
}
