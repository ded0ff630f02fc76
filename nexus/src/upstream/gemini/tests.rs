use serde_json::{json, Value};

use super::request::{body, mime_from_url, thinking};
use super::response::{completion, finish_reason, Decoder};
use super::schema::schema;
use super::*;
use crate::upstream::{Decoded, StreamDecoder};

fn req(v: Value) -> ChatRequest {
    serde_json::from_value(v).unwrap()
}

fn chunks(d: &mut Decoder, v: Value) -> Vec<Value> {
    match d.decode("", v.to_string()).unwrap() {
        Decoded::Chunks(c) => c.iter().map(|s| serde_json::from_str(s).unwrap()).collect(),
        Decoded::Done => panic!("gemini streams have no terminal event"),
    }
}

#[test]
fn roles_system_and_merging() {
    let b = body(
        &req(json!({"model": "m", "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "developer", "content": [{"type": "text", "text": "and kind"}]},
            {"role": "user", "content": "hi"},
            {"role": "user", "content": "again"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "bye"},
        ]})),
        Some(100),
    )
    .unwrap();
    assert_eq!(
        b["systemInstruction"],
        json!({"parts": [{"text": "be brief"}, {"text": "and kind"}]})
    );
    assert_eq!(
        b["contents"],
        json!([
            {"role": "user", "parts": [{"text": "hi"}, {"text": "again"}]},
            {"role": "model", "parts": [{"text": "hello"}]},
            {"role": "user", "parts": [{"text": "bye"}]},
        ])
    );
    assert_eq!(b["generationConfig"]["maxOutputTokens"], 100);
}

#[test]
fn only_a_system_prompt_is_refused() {
    let e = body(
        &req(json!({"model": "m", "messages": [{"role": "system", "content": "x"}]})),
        None,
    )
    .unwrap_err();
    assert_eq!(e.http_status(), 400);
}

#[test]
fn images_inline_and_by_reference() {
    let b = body(
        &req(
            json!({"model": "m", "messages": [{"role": "user", "content": [
                {"type": "text", "text": "what is this"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                {"type": "image_url", "image_url": {"url": "https://x.test/cat.webp?s=1"}},
                {"type": "image_url", "image_url": {"url": "https://x.test/cat"}},
            ]}]}),
        ),
        None,
    )
    .unwrap();
    let parts = &b["contents"][0]["parts"];
    assert_eq!(
        parts[1],
        json!({"inlineData": {"mimeType": "image/png", "data": "AAAA"}})
    );
    assert_eq!(
        parts[2],
        json!({"fileData": {"mimeType": "image/webp", "fileUri": "https://x.test/cat.webp?s=1"}})
    );
    assert_eq!(parts[3]["fileData"]["mimeType"], "image/jpeg");
    assert!(body(
        &req(
            json!({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]}]})
        ),
        None
    )
    .is_err());
    assert_eq!(
        mime_from_url("https://a/b.PDF".to_lowercase().as_str()),
        "application/pdf"
    );
}

#[test]
fn tool_history_becomes_function_parts() {
    let b = body(
        &req(json!({"model": "m", "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Oslo\"}"}},
                {"id": "c2", "type": "function", "function": {"name": "time", "arguments": ""}},
            ]},
            {"role": "tool", "tool_call_id": "c1", "content": "{\"temp\": 3}"},
            {"role": "tool", "tool_call_id": "c2", "content": "noon"},
        ]})),
        None,
    )
    .unwrap();
    let c = &b["contents"];
    assert_eq!(
        c[1],
        json!({"role": "model", "parts": [
            {"functionCall": {"name": "weather", "args": {"city": "Oslo"}}},
            {"functionCall": {"name": "time", "args": {}}},
        ]})
    );
    assert_eq!(
        c[2],
        json!({"role": "user", "parts": [
            {"functionResponse": {"name": "weather", "response": {"temp": 3}}},
            {"functionResponse": {"name": "time", "response": {"output": "noon"}}},
        ]})
    );
    let e = body(
        &req(json!({"model": "m", "messages": [
            {"role": "user", "content": "x"},
            {"role": "tool", "tool_call_id": "nope", "content": "y"},
        ]})),
        None,
    )
    .unwrap_err();
    assert!(e.to_string().contains("nope"), "{e}");
}

#[test]
fn tools_and_tool_choice() {
    let mk = |choice: Value| {
        body(
            &req(json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
                "tools": [
                    {"type": "function", "function": {"name": "f", "description": "d", "strict": true,
                     "parameters": {"type": "object", "additionalProperties": false, "$schema": "x",
                                    "properties": {"a": {"type": ["string", "null"]}}, "required": ["a"]}}},
                    {"type": "function", "function": {"name": "g", "parameters": {"type": "object", "properties": {}}}},
                ],
                "tool_choice": choice})),
            None,
        )
        .unwrap()
    };
    let b = mk(json!("auto"));
    assert_eq!(
        b["tools"],
        json!([{"functionDeclarations": [
            {"name": "f", "description": "d", "parameters": {"type": "object",
                "properties": {"a": {"type": "string", "nullable": true}}, "required": ["a"]}},
            {"name": "g"},
        ]}])
    );
    assert_eq!(b["toolConfig"]["functionCallingConfig"]["mode"], "AUTO");
    assert_eq!(
        mk(json!("none"))["toolConfig"]["functionCallingConfig"]["mode"],
        "NONE"
    );
    assert_eq!(
        mk(json!("required"))["toolConfig"]["functionCallingConfig"]["mode"],
        "ANY"
    );
    assert_eq!(
        mk(json!({"type": "function", "function": {"name": "g"}}))["toolConfig"],
        json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["g"]}})
    );
}

#[test]
fn schemas_are_cut_to_gemini_subset() {
    let s = schema(
        &json!({"$schema": "x", "type": "object", "additionalProperties": false,
        "$defs": {"Color": {"enum": ["red", "blue"]}},
        "properties": {
            "c": {"$ref": "#/$defs/Color"},
            "n": {"anyOf": [{"type": "integer"}, {"type": "null"}], "description": "num"},
            "k": {"const": "fixed"},
            "l": {"type": "array", "items": {"type": "object", "additionalProperties": true,
                  "properties": {"x": {"type": "number", "examples": [1]}}}},
        }}),
        "tools",
    )
    .unwrap();
    assert_eq!(
        s,
        json!({"type": "object", "properties": {
            "c": {"type": "string", "enum": ["red", "blue"]},
            "n": {"type": "integer", "nullable": true, "description": "num"},
            "k": {"type": "string", "enum": ["fixed"]},
            "l": {"type": "array", "items": {"type": "object", "properties": {"x": {"type": "number"}}}},
        }})
    );
    assert!(schema(&json!({"$ref": "#/elsewhere"}), "tools").is_err());
    let rec = json!({"$defs": {"N": {"type": "object", "properties": {"n": {"$ref": "#/$defs/N"}}}},
                     "$ref": "#/$defs/N"});
    assert!(schema(&rec, "tools").is_err());
}

#[test]
fn generation_config_and_refusals() {
    let b = body(
        &req(json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
            "max_tokens": 10, "max_completion_tokens": 20, "temperature": 0.5, "top_p": 0.9,
            "stop": "END", "seed": 7, "n": 2, "reasoning_effort": "low",
            "response_format": {"type": "json_schema", "json_schema": {"name": "r", "strict": true,
                "schema": {"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": false}}},
            "user": "u", "parallel_tool_calls": false, "logprobs": false})),
        Some(99),
    )
    .unwrap();
    assert_eq!(
        b["generationConfig"],
        json!({"maxOutputTokens": 20, "temperature": 0.5, "topP": 0.9, "seed": 7,
               "candidateCount": 2, "stopSequences": ["END"],
               "responseMimeType": "application/json",
               "responseSchema": {"type": "object", "properties": {"a": {"type": "string"}}},
               "thinkingConfig": {"thinkingBudget": 1024, "includeThoughts": true}})
    );
    for (k, v) in [
        ("logprobs", json!(true)),
        ("top_logprobs", json!(3)),
        ("logit_bias", json!({"1": 5})),
        ("modalities", json!(["text", "audio"])),
    ] {
        let mut r = json!({"model": "m", "messages": [{"role": "user", "content": "x"}]});
        r[k] = v;
        let e = body(&req(r), None).unwrap_err();
        assert_eq!(e.http_status(), 400, "{k}");
        assert!(e.to_string().contains(k), "{e}");
    }
    assert_eq!(thinking("none").unwrap(), json!({"thinkingBudget": 0}));
    assert!(thinking("extreme").is_err());
}

#[test]
fn model_names_in_the_url() {
    assert_eq!(
        model_segment("models/gemini-2.5-flash").unwrap(),
        "gemini-2.5-flash"
    );
    assert!(model_segment("gemini:streamGenerateContent").is_err());
    assert!(model_segment("a/b").is_err());
}

#[test]
fn completion_translates_candidates_and_usage() {
    let g = json!({
        "responseId": "abc",
        "candidates": [
            {"index": 0, "finishReason": "STOP", "content": {"role": "model", "parts": [
                {"text": "hmm", "thought": true}, {"text": "Hello"}, {"text": " there"}]}},
            {"index": 1, "finishReason": "STOP", "content": {"role": "model", "parts": [
                {"functionCall": {"name": "f", "args": {"a": 1}}}]}},
            {"index": 2, "finishReason": "SAFETY"},
            {"index": 3, "finishReason": "MAX_TOKENS", "content": {"parts": [{"text": "cut"}]}},
        ],
        "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 5,
                          "thoughtsTokenCount": 3, "cachedContentTokenCount": 4, "totalTokenCount": 18}
    });
    let out: Value =
        serde_json::from_slice(&completion(g.to_string().as_bytes(), "client-m").unwrap()).unwrap();
    assert_eq!(out["id"], "chatcmpl-abc");
    assert_eq!(out["model"], "client-m");
    assert_eq!(out["object"], "chat.completion");
    let c = &out["choices"];
    assert_eq!(c[0]["message"]["content"], "Hello there");
    assert_eq!(c[0]["message"]["reasoning_content"], "hmm");
    assert_eq!(c[0]["finish_reason"], "stop");
    assert_eq!(c[1]["message"]["content"], Value::Null);
    assert_eq!(c[1]["finish_reason"], "tool_calls");
    let tc = &c[1]["message"]["tool_calls"][0];
    assert_eq!(tc["type"], "function");
    assert_eq!(tc["function"]["name"], "f");
    assert_eq!(tc["function"]["arguments"], "{\"a\":1}");
    assert!(tc["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(c[2]["finish_reason"], "content_filter");
    assert_eq!(c[3]["finish_reason"], "length");
    assert_eq!(
        out["usage"],
        json!({"prompt_tokens": 10, "completion_tokens": 8, "total_tokens": 18,
               "prompt_tokens_details": {"cached_tokens": 4},
               "completion_tokens_details": {"reasoning_tokens": 3}})
    );
}

#[test]
fn a_blocked_prompt_is_a_filtered_answer() {
    let g = json!({"promptFeedback": {"blockReason": "SAFETY"},
                   "usageMetadata": {"promptTokenCount": 7, "totalTokenCount": 7}});
    let out: Value =
        serde_json::from_slice(&completion(g.to_string().as_bytes(), "m").unwrap()).unwrap();
    assert_eq!(out["choices"][0]["finish_reason"], "content_filter");
    assert_eq!(out["usage"]["prompt_tokens"], 7);
    assert!(completion(b"{\"candidates\": []}", "m").is_err());
    assert!(completion(b"not json", "m").is_err());
}

#[test]
fn finish_reasons() {
    assert_eq!(finish_reason("STOP", false), "stop");
    assert_eq!(finish_reason("STOP", true), "tool_calls");
    assert_eq!(finish_reason("MAX_TOKENS", true), "length");
    for r in [
        "SAFETY",
        "RECITATION",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
    ] {
        assert_eq!(finish_reason(r, false), "content_filter");
    }
    assert_eq!(finish_reason("OTHER", false), "stop");
}

#[test]
fn stream_decoding() {
    let mut d = Decoder::new("client-m");
    let usage = |c: u64| json!({"promptTokenCount": 4, "candidatesTokenCount": c, "totalTokenCount": 4 + c});
    let a = chunks(
        &mut d,
        json!({"responseId": "r1", "candidates": [{"index": 0, "content": {"role": "model", "parts": [
            {"text": "think", "thought": true}, {"text": "Hi"}]}}], "usageMetadata": usage(1)}),
    );
    assert_eq!(a.len(), 3);
    assert_eq!(a[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(a[1]["choices"][0]["delta"]["reasoning_content"], "think");
    assert_eq!(a[2]["choices"][0]["delta"]["content"], "Hi");
    assert!(a
        .iter()
        .all(|c| c["id"] == "chatcmpl-r1" && c["model"] == "client-m"));
    let created = a[0]["created"].clone();
    let b = chunks(
        &mut d,
        json!({"responseId": "r1", "candidates": [{"index": 0, "content": {"role": "model", "parts": [
            {"functionCall": {"name": "f", "args": {"x": 1}}},
            {"functionCall": {"name": "g", "args": {}}}]}}], "usageMetadata": usage(2)}),
    );
    assert_eq!(b.len(), 2);
    let t0 = &b[0]["choices"][0]["delta"]["tool_calls"][0];
    let t1 = &b[1]["choices"][0]["delta"]["tool_calls"][0];
    assert_eq!(
        (t0["index"].clone(), t1["index"].clone()),
        (json!(0), json!(1))
    );
    assert_eq!(t0["function"]["arguments"], "{\"x\":1}");
    assert_ne!(t0["id"], t1["id"]);
    let c = chunks(
        &mut d,
        json!({"candidates": [{"index": 0, "finishReason": "STOP", "content": {"parts": [{"text": ""}]}}],
               "usageMetadata": usage(3)}),
    );
    assert_eq!(c.len(), 2);
    assert_eq!(c[0]["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(c[1]["choices"], json!([]));
    assert_eq!(c[1]["usage"]["completion_tokens"], 3);
    assert!(c.iter().all(|x| x["created"] == created));
    assert!(d.decode("", "  ".into()).is_ok());
}

#[test]
fn stream_errors_are_in_band() {
    let mut d = Decoder::new("m");
    let e = d
        .decode(
            "",
            json!({"error": {"code": 500, "message": "boom", "status": "INTERNAL"}}).to_string(),
        )
        .unwrap_err();
    assert!(e.to_string().contains("boom"), "{e}");
    assert!(d.decode("", "{oops".into()).is_err());
}

#[test]
fn stream_blocked_prompt() {
    let mut d = Decoder::new("m");
    let c = chunks(
        &mut d,
        json!({"promptFeedback": {"blockReason": "OTHER"}, "usageMetadata": {"promptTokenCount": 2}}),
    );
    assert_eq!(c.len(), 3);
    assert_eq!(c[1]["choices"][0]["finish_reason"], "content_filter");
    assert_eq!(c[2]["usage"]["prompt_tokens"], 2);
}
