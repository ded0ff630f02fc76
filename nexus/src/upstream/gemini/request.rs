//! OpenAI chat request → Gemini `GenerateContentRequest` body.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use crate::error::{Error, Result};
use crate::openai::ChatRequest;

use super::schema::schema;

/// Request fields that change the answer and have no Gemini equivalent the hub can translate
/// back: a 400 rather than an answer the client did not ask for. `None` as the reason means
/// "unsupported by this translation".
fn refused(name: &str, v: &Value) -> Option<&'static str> {
    let off = matches!(v, Value::Null | Value::Bool(false))
        || v.as_u64() == Some(0)
        || v.as_object().is_some_and(Map::is_empty)
        || v.as_array().is_some_and(Vec::is_empty);
    if off {
        return None;
    }
    match name {
        "logprobs" | "top_logprobs" => {
            Some("token log-probabilities are not translated for Gemini")
        }
        "logit_bias" => Some("Gemini has no logit bias"),
        "audio" => Some("audio output is not translated for Gemini"),
        "web_search_options" => Some("web search is not translated for Gemini"),
        "modalities" => v
            .as_array()
            .is_some_and(|m| m.iter().any(|x| x.as_str() != Some("text")))
            .then_some("only text output is translated for Gemini"),
        _ => None,
    }
}

/// The Gemini body for `req`. `default_max_tokens` is the model's configured default, used when
/// the request sets no limit.
pub(crate) fn body(req: &ChatRequest, default_max_tokens: Option<u32>) -> Result<Value> {
    for (k, v) in &req.extra {
        if let Some(why) = refused(k, v) {
            return Err(Error::invalid_param(k, format!("`{k}`: {why}")));
        }
    }
    let (system, contents) = contents(&req.messages)?;
    let mut out = Map::new();
    out.insert("contents".into(), Value::Array(contents));
    if !system.is_empty() {
        out.insert("systemInstruction".into(), json!({ "parts": system }));
    }
    if let Some(tools) = tools(req)? {
        out.insert("tools".into(), tools);
    }
    if let Some(tc) = tool_config(req)? {
        out.insert("toolConfig".into(), tc);
    }
    let gc = generation_config(req, default_max_tokens)?;
    if !gc.is_empty() {
        out.insert("generationConfig".into(), Value::Object(gc));
    }
    Ok(Value::Object(out))
}

/// Gemini has two roles; OpenAI's tool results travel in user turns.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Turn {
    User,
    Model,
}

/// `(systemInstruction parts, contents)`. Consecutive turns of one role are merged: Gemini wants
/// the parallel tool results of one model turn in one user turn, and some models refuse two
/// user turns in a row.
fn contents(messages: &[Value]) -> Result<(Vec<Value>, Vec<Value>)> {
    let mut system = Vec::new();
    let mut turns: Vec<(Turn, Vec<Value>)> = Vec::new();
    // tool_call_id → function name: Gemini's functionResponse is matched by name, OpenAI's
    // tool message only carries the id.
    let mut call_names: HashMap<String, String> = HashMap::new();
    for (i, m) in messages.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        let (turn, parts) = match role {
            "system" | "developer" => {
                system.extend(text_parts(m.get("content"), i)?);
                continue;
            }
            "user" => (Turn::User, user_parts(m.get("content"), i)?),
            "assistant" => (Turn::Model, assistant_parts(m, i, &mut call_names)?),
            "tool" => {
                let id = m.get("tool_call_id").and_then(Value::as_str).unwrap_or("");
                let Some(name) = call_names.get(id) else {
                    return Err(Error::invalid_param(
                        "messages",
                        format!(
                            "`messages[{i}]`: tool_call_id '{id}' matches no earlier assistant tool call"
                        ),
                    ));
                };
                (Turn::User, vec![function_response(name, m.get("content"))])
            }
            "function" => {
                let name = m.get("name").and_then(Value::as_str).unwrap_or("");
                if name.is_empty() {
                    return Err(Error::invalid_param(
                        "messages",
                        format!("`messages[{i}]`: a function message needs a `name`"),
                    ));
                }
                (Turn::User, vec![function_response(name, m.get("content"))])
            }
            other => {
                return Err(Error::invalid_param(
                    "messages",
                    format!("`messages[{i}]`: role '{other}' cannot be sent to Gemini"),
                ))
            }
        };
        if parts.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some((t, p)) if *t == turn => p.extend(parts),
            _ => turns.push((turn, parts)),
        }
    }
    if turns.is_empty() {
        return Err(Error::invalid_param(
            "messages",
            "Gemini needs at least one user or assistant message besides the system prompt",
        ));
    }
    let contents = turns
        .into_iter()
        .map(|(t, parts)| {
            let role = if t == Turn::User { "user" } else { "model" };
            json!({ "role": role, "parts": parts })
        })
        .collect();
    Ok((system, contents))
}

/// Text-only content (system prompts): a string or an array of `text` parts.
fn text_parts(content: Option<&Value>, i: usize) -> Result<Vec<Value>> {
    match content {
        None | Some(Value::Null) => Ok(vec![]),
        Some(Value::String(s)) if s.is_empty() => Ok(vec![]),
        Some(Value::String(s)) => Ok(vec![json!({ "text": s })]),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter(|p| !matches!(part_text(p), Some("")))
            .map(|p| match part_text(p) {
                Some(t) => Ok(json!({ "text": t })),
                None => Err(bad_part(i, p)),
            })
            .collect(),
        Some(_) => Err(Error::invalid_param(
            "messages",
            format!("`messages[{i}].content` must be a string or an array of parts"),
        )),
    }
}

/// The text of a `text` (or `refusal`) part.
fn part_text(p: &Value) -> Option<&str> {
    match p.get("type").and_then(Value::as_str) {
        Some("text") => p.get("text").and_then(Value::as_str),
        Some("refusal") => p.get("refusal").and_then(Value::as_str),
        _ => None,
    }
}

fn bad_part(i: usize, p: &Value) -> Error {
    let ty = p.get("type").and_then(Value::as_str).unwrap_or("(none)");
    Error::invalid_param(
        "messages",
        format!("`messages[{i}]`: content part type '{ty}' cannot be sent to Gemini"),
    )
}

/// User content: text, images (data URLs inline, http(s) URLs by reference), audio and files.
fn user_parts(content: Option<&Value>, i: usize) -> Result<Vec<Value>> {
    let Some(Value::Array(parts)) = content else {
        return text_parts(content, i);
    };
    let mut out = Vec::with_capacity(parts.len());
    for p in parts {
        match p.get("type").and_then(Value::as_str) {
            Some("text") => {
                if let Some(t) = part_text(p).filter(|t| !t.is_empty()) {
                    out.push(json!({ "text": t }));
                }
            }
            Some("image_url") => {
                let url = p
                    .get("image_url")
                    .and_then(|u| u.get("url").or(Some(u)))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                out.push(media(url, i)?);
            }
            Some("input_audio") => {
                let a = p.get("input_audio");
                let data = a.and_then(|a| a.get("data")).and_then(Value::as_str);
                let format = a
                    .and_then(|a| a.get("format"))
                    .and_then(Value::as_str)
                    .unwrap_or("wav");
                let Some(data) = data else {
                    return Err(bad_part(i, p));
                };
                out.push(json!({ "inlineData": { "mimeType": format!("audio/{format}"), "data": data } }));
            }
            Some("file") => {
                let data = p
                    .get("file")
                    .and_then(|f| f.get("file_data"))
                    .and_then(Value::as_str);
                match data {
                    Some(d) => out.push(media(d, i)?),
                    // An uploaded OpenAI file id means nothing to Google.
                    None => return Err(bad_part(i, p)),
                }
            }
            _ => return Err(bad_part(i, p)),
        }
    }
    Ok(out)
}

/// An image or file URL as a Gemini part.
fn media(url: &str, i: usize) -> Result<Value> {
    if let Some(rest) = url.strip_prefix("data:") {
        // data:<mime>;base64,<data>
        if let Some((meta, data)) = rest.split_once(',') {
            if let Some(mime) = meta.strip_suffix(";base64") {
                let mime = if mime.is_empty() {
                    "application/octet-stream"
                } else {
                    mime
                };
                return Ok(json!({ "inlineData": { "mimeType": mime, "data": data } }));
            }
        }
        return Err(Error::invalid_param(
            "messages",
            format!("`messages[{i}]`: only base64 data URLs can be sent to Gemini"),
        ));
    }
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("https://") || lower.starts_with("http://") || lower.starts_with("gs://") {
        return Ok(json!({ "fileData": { "mimeType": mime_from_url(&lower), "fileUri": url } }));
    }
    Err(Error::invalid_param(
        "messages",
        format!("`messages[{i}]`: an image URL must be a data URL or an http(s) URL"),
    ))
}

/// Gemini wants a MIME type with a file reference; the extension is the only hint there is.
pub(crate) fn mime_from_url(url: &str) -> &'static str {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let ext = path.rsplit_once('.').map_or("", |(_, e)| e);
    match ext {
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "heic" => "image/heic",
        "heif" => "image/heif",
        "pdf" => "application/pdf",
        "mp3" => "audio/mp3",
        "wav" => "audio/wav",
        "mp4" => "video/mp4",
        _ => "image/jpeg",
    }
}

/// An assistant turn: its text, then its tool calls as `functionCall` parts.
fn assistant_parts(
    m: &Value,
    i: usize,
    call_names: &mut HashMap<String, String>,
) -> Result<Vec<Value>> {
    let mut out = text_parts(m.get("content"), i)?;
    let calls = m
        .get("tool_calls")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let legacy = m.get("function_call").filter(|f| f.is_object());
    for f in calls
        .iter()
        .map(|c| (c.get("id").and_then(Value::as_str), c.get("function")))
        .chain(legacy.map(|f| (None, Some(f))))
    {
        let (id, Some(func)) = f else {
            return Err(Error::invalid_param(
                "messages",
                format!("`messages[{i}]`: a tool call needs a `function`"),
            ));
        };
        let name = func.get("name").and_then(Value::as_str).unwrap_or("");
        if name.is_empty() {
            return Err(Error::invalid_param(
                "messages",
                format!("`messages[{i}]`: a tool call needs a function name"),
            ));
        }
        let args = match func.get("arguments") {
            None | Some(Value::Null) => json!({}),
            Some(Value::String(s)) if s.trim().is_empty() => json!({}),
            Some(Value::String(s)) => serde_json::from_str::<Value>(s).map_err(|_| {
                Error::invalid_param(
                    "messages",
                    format!("`messages[{i}]`: tool call arguments must be a JSON object"),
                )
            })?,
            Some(v) => v.clone(),
        };
        if !args.is_object() {
            return Err(Error::invalid_param(
                "messages",
                format!("`messages[{i}]`: tool call arguments must be a JSON object"),
            ));
        }
        let mut part = json!({ "functionCall": { "name": name, "args": args } });
        if let Some(id) = id {
            call_names.insert(id.to_owned(), name.to_owned());
            if let Some(sig) = super::signature::extract(id) {
                part["thoughtSignature"] = sig.into();
            }
        }
        out.push(part);
    }
    Ok(out)
}

/// A tool result. Gemini's `response` must be an object: a JSON object result is sent as is,
/// anything else under `output` (the key Google's documentation uses).
fn function_response(name: &str, content: Option<&Value>) -> Value {
    let text = match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts.iter().filter_map(part_text).collect(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    };
    let response = match serde_json::from_str::<Value>(&text) {
        Ok(v @ Value::Object(_)) => v,
        Ok(v) => json!({ "output": v }),
        Err(_) => json!({ "output": text }),
    };
    json!({ "functionResponse": { "name": name, "response": response } })
}

/// `tools` (and the legacy `functions`) as one `functionDeclarations` tool.
fn tools(req: &ChatRequest) -> Result<Option<Value>> {
    let mut decls = Vec::new();
    let tools = req.extra.get("tools").and_then(Value::as_array);
    for t in tools.into_iter().flatten() {
        if t.get("type").and_then(Value::as_str).unwrap_or("function") != "function" {
            return Err(Error::invalid_param(
                "tools",
                "only `function` tools can be sent to Gemini",
            ));
        }
        let Some(f) = t.get("function") else {
            return Err(Error::invalid_param("tools", "a tool needs a `function`"));
        };
        decls.push(declaration(f)?);
    }
    let functions = req.extra.get("functions").and_then(Value::as_array);
    for f in functions.into_iter().flatten() {
        decls.push(declaration(f)?);
    }
    if decls.is_empty() {
        return Ok(None);
    }
    Ok(Some(json!([{ "functionDeclarations": decls }])))
}

fn declaration(f: &Value) -> Result<Value> {
    let name = f.get("name").and_then(Value::as_str).unwrap_or("");
    if name.is_empty() {
        return Err(Error::invalid_param("tools", "a function needs a `name`"));
    }
    let mut d = json!({ "name": name });
    if let Some(desc) = f.get("description").and_then(Value::as_str) {
        d["description"] = desc.into();
    }
    if let Some(p) = f.get("parameters").filter(|p| !p.is_null()) {
        // Gemini refuses an object schema without properties; a function without arguments
        // simply has no `parameters`.
        let empty = p
            .get("properties")
            .and_then(Value::as_object)
            .is_none_or(Map::is_empty)
            && p.get("type").and_then(Value::as_str).unwrap_or("object") == "object";
        if !empty {
            d["parameters"] = schema(p, "tools")?;
        }
    }
    Ok(d)
}

/// `tool_choice` (or the legacy `function_call`) as `functionCallingConfig`.
fn tool_config(req: &ChatRequest) -> Result<Option<Value>> {
    let Some(tc) = req
        .extra
        .get("tool_choice")
        .or_else(|| req.extra.get("function_call"))
        .filter(|v| !v.is_null())
    else {
        return Ok(None);
    };
    let cfg = match tc {
        Value::String(s) => match s.as_str() {
            "auto" => json!({ "mode": "AUTO" }),
            "none" => json!({ "mode": "NONE" }),
            "required" | "any" => json!({ "mode": "ANY" }),
            other => {
                return Err(Error::invalid_param(
                    "tool_choice",
                    format!("tool_choice '{other}' is not known"),
                ))
            }
        },
        Value::Object(o) => {
            let name = o
                .get("function")
                .and_then(|f| f.get("name"))
                .or_else(|| o.get("name"))
                .and_then(Value::as_str);
            match name {
                Some(n) => json!({ "mode": "ANY", "allowedFunctionNames": [n] }),
                None => {
                    return Err(Error::invalid_param(
                        "tool_choice",
                        "only a named function tool_choice can be sent to Gemini",
                    ))
                }
            }
        }
        _ => {
            return Err(Error::invalid_param(
                "tool_choice",
                "tool_choice must be a string or an object",
            ))
        }
    };
    Ok(Some(json!({ "functionCallingConfig": cfg })))
}

/// Sampling, limits, structured output and thinking.
fn generation_config(req: &ChatRequest, default_max: Option<u32>) -> Result<Map<String, Value>> {
    let x = &req.extra;
    let mut gc = Map::new();
    let num = |k: &str| x.get(k).filter(|v| v.is_number()).cloned();
    match num("max_completion_tokens").or_else(|| num("max_tokens")) {
        Some(n) => {
            gc.insert("maxOutputTokens".into(), n);
        }
        None => {
            if let Some(d) = default_max {
                gc.insert("maxOutputTokens".into(), d.into());
            }
        }
    }
    for (from, to) in [
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("seed", "seed"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
    ] {
        if let Some(v) = num(from) {
            gc.insert(to.into(), v);
        }
    }
    if let Some(n) = x.get("n").and_then(Value::as_u64).filter(|n| *n > 1) {
        gc.insert("candidateCount".into(), n.into());
    }
    match x.get("stop") {
        Some(Value::String(s)) => {
            gc.insert("stopSequences".into(), json!([s]));
        }
        Some(Value::Array(a)) if !a.is_empty() => {
            gc.insert("stopSequences".into(), Value::Array(a.clone()));
        }
        _ => {}
    }
    if let Some(rf) = x.get("response_format").filter(|v| !v.is_null()) {
        match rf.get("type").and_then(Value::as_str) {
            Some("text") => {}
            Some("json_object") => {
                gc.insert("responseMimeType".into(), "application/json".into());
            }
            Some("json_schema") => {
                gc.insert("responseMimeType".into(), "application/json".into());
                if let Some(s) = rf.get("json_schema").and_then(|j| j.get("schema")) {
                    gc.insert("responseSchema".into(), schema(s, "response_format")?);
                }
            }
            _ => {
                return Err(Error::invalid_param(
                    "response_format",
                    "response_format type must be text, json_object or json_schema",
                ))
            }
        }
    }
    if let Some(effort) = x.get("reasoning_effort").and_then(Value::as_str) {
        gc.insert("thinkingConfig".into(), thinking(effort)?);
    }
    Ok(gc)
}

/// `reasoning_effort` as a thinking budget. The budgets are the hub's choice (Gemini takes a
/// token count, OpenAI a level); Gemini clamps them to what each model supports.
pub(crate) fn thinking(effort: &str) -> Result<Value> {
    let budget = match effort {
        "none" => return Ok(json!({ "thinkingBudget": 0 })),
        "minimal" => 512,
        "low" => 1024,
        "medium" => 8192,
        "high" => 24576,
        other => {
            return Err(Error::invalid_param(
                "reasoning_effort",
                format!("reasoning_effort '{other}' is not known"),
            ))
        }
    };
    Ok(json!({ "thinkingBudget": budget, "includeThoughts": true }))
}
