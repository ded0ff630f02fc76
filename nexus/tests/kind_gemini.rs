//! The `gemini` provider kind through the Hub, against the mock's Gemini API: OpenAI requests
//! in, Gemini calls out, OpenAI answers and chunks back, usage counted once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{fast_options, Env, UPSTREAM_KEY};
use nexus::openai::ChatRequest;
use nexus::records::{NewModel, NewProvider, ProviderKind, ProviderOptions};
use nexus::testing::MockUpstream;
use nexus::{Caller, ErrorKind, RequestContext};
use serde_json::{json, Value};

fn ctx() -> RequestContext {
    RequestContext::default()
}

/// A gemini provider on `mock` serving `models` as (client name, upstream name).
fn gemini(env: &Env, mock: &MockUpstream, models: &[(&str, &str)]) -> i64 {
    env.add(
        NewProvider {
            name: "g".into(),
            kind: ProviderKind::Gemini,
            base_url: mock.base_url(),
            api_key: UPSTREAM_KEY.into(),
            ..NewProvider::default()
        },
        models,
    )
}

fn req(v: Value) -> ChatRequest {
    serde_json::from_value(v).unwrap()
}

fn user(model: &str, text: &str) -> ChatRequest {
    ChatRequest::user(model, text)
}

fn streamed(mut r: ChatRequest, usage: bool) -> ChatRequest {
    r.stream = Some(true);
    if usage {
        r.stream_options = Some(json!({"include_usage": true}));
    }
    r
}

/// Streams to the end: (content, reasoning, every chunk, the error that ended it).
async fn drain(mut s: nexus::ChatStream) -> (String, String, Vec<Value>, Option<nexus::Error>) {
    let (mut text, mut reasoning, mut chunks) = (String::new(), String::new(), Vec::new());
    while let Some(item) = s.next().await {
        match item {
            Ok(c) => {
                text.push_str(c.delta().unwrap_or(""));
                reasoning.push_str(c.reasoning().unwrap_or(""));
                chunks.push(serde_json::from_str(c.json()).unwrap());
            }
            Err(e) => return (text, reasoning, chunks, Some(e)),
        }
    }
    (text, reasoning, chunks, None)
}

fn header(mock: &MockUpstream, name: &str) -> Option<String> {
    mock.last_headers()
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

#[tokio::test]
async fn non_stream_text_and_usage() {
    let mock = MockUpstream::start().await.unwrap();
    let env = Env::new(fast_options());
    gemini(&env, &mock, &[("gem", "models/gemini-echo")]);
    let r = env
        .hub
        .chat(
            Caller::Key(env.key()),
            user("gem", "hello big world"),
            ctx(),
        )
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["id"], "chatcmpl-mockresp1");
    assert_eq!(body["model"], "gem");
    assert_eq!(body["choices"][0]["message"]["content"], "hello big world");
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["prompt_tokens"], 10);
    assert_eq!(body["usage"]["completion_tokens"], 3);
    assert_eq!(body["usage"]["total_tokens"], 13);
    assert_eq!(
        header(&mock, "x-goog-api-key").as_deref(),
        Some(UPSTREAM_KEY)
    );
    assert!(header(&mock, "authorization").is_none());
    let sent = mock.last_request().unwrap();
    assert_eq!(
        sent["contents"],
        json!([{"role": "user", "parts": [{"text": "hello big world"}]}])
    );
    assert!(sent.get("model").is_none() && sent.get("messages").is_none());
    let rows = env.rows();
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].prompt_tokens, rows[0].completion_tokens), (10, 3));
    assert_eq!(rows[0].usage_source, "upstream");
    assert_eq!(rows[0].status, 200);
}

#[tokio::test]
async fn stream_text_with_and_without_usage() {
    for with_usage in [true, false] {
        let mock = MockUpstream::start().await.unwrap();
        let env = Env::new(fast_options());
        gemini(&env, &mock, &[("gem", "gemini-echo")]);
        let s = env
            .hub
            .chat_stream(
                Caller::Key(env.key()),
                streamed(user("gem", "one two three four"), with_usage),
                ctx(),
            )
            .await
            .unwrap();
        let (text, _, chunks, err) = drain(s).await;
        assert!(err.is_none(), "{err:?}");
        assert_eq!(text, "one two three four");
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        assert!(chunks.iter().all(|c| c["id"] == chunks[0]["id"]
            && c["created"] == chunks[0]["created"]
            && c["model"] == "gem"
            && c["object"] == "chat.completion.chunk"));
        let finishes: Vec<&Value> = chunks
            .iter()
            .filter_map(|c| c["choices"].get(0))
            .filter(|c| !c["finish_reason"].is_null())
            .collect();
        assert_eq!(finishes.len(), 1);
        assert_eq!(finishes[0]["finish_reason"], "stop");
        let usage: Vec<&Value> = chunks
            .iter()
            .filter(|c| c.get("usage").is_some_and(|u| !u.is_null()))
            .collect();
        if with_usage {
            assert_eq!(usage.len(), 1, "{chunks:?}");
            assert_eq!(chunks.last().unwrap()["choices"], json!([]));
            assert_eq!(usage[0]["usage"]["completion_tokens"], 4);
        } else {
            assert!(usage.is_empty(), "{chunks:?}");
        }
        let rows = env.rows();
        assert_eq!(rows.len(), 1);
        assert!(rows[0].stream);
        assert_eq!((rows[0].prompt_tokens, rows[0].completion_tokens), (10, 4));
        assert_eq!(rows[0].usage_source, "upstream");
        assert_eq!(rows[0].status, 200);
        assert_eq!(mock.completed(), 1);
    }
}

#[tokio::test]
async fn thinking_and_cached_tokens() {
    let mock = MockUpstream::start().await.unwrap();
    let env = Env::new(fast_options());
    gemini(&env, &mock, &[("gem", "gemini-thinking-cache")]);
    let key = env.key();
    let mut r = user("gem", "why so");
    r.extra.insert("reasoning_effort".into(), json!("high"));
    let a = env
        .hub
        .chat(Caller::Key(key.clone()), r.clone(), ctx())
        .await
        .unwrap();
    let sent = mock.last_request().unwrap();
    assert_eq!(
        sent["generationConfig"]["thinkingConfig"],
        json!({"thinkingBudget": 24576, "includeThoughts": true})
    );
    let body: Value = serde_json::from_slice(&a.body).unwrap();
    let msg = &body["choices"][0]["message"];
    assert_eq!(msg["content"], "why so");
    assert_eq!(msg["reasoning_content"], "Let me think about this.");
    let u = &body["usage"];
    assert_eq!(u["completion_tokens"], 2 + 5);
    assert_eq!(u["prompt_tokens_details"]["cached_tokens"], 5);
    assert_eq!(u["completion_tokens_details"]["reasoning_tokens"], 5);

    let s = env
        .hub
        .chat_stream(Caller::Key(key), streamed(r, true), ctx())
        .await
        .unwrap();
    let (text, reasoning, chunks, err) = drain(s).await;
    assert!(err.is_none());
    assert_eq!(text, "why so");
    assert_eq!(reasoning, "Let me think about this.");
    let u = &chunks.last().unwrap()["usage"];
    assert_eq!(u["prompt_tokens_details"]["cached_tokens"], 5);
    assert_eq!(u["completion_tokens_details"]["reasoning_tokens"], 5);
    let rows = env.rows();
    assert_eq!(rows.len(), 2);
    assert!(rows
        .iter()
        .all(|r| r.completion_tokens == 7 && r.prompt_tokens == 10));
}

#[tokio::test]
async fn system_multi_turn_images_and_generation_config() {
    let mock = MockUpstream::start().await.unwrap();
    let env = Env::new(fast_options());
    let pid = gemini(&env, &mock, &[]);
    env.hub
        .registry()
        .create_model(
            pid,
            NewModel {
                name: "gem".into(),
                upstream_name: Some("gemini-echo".into()),
                default_max_tokens: Some(321),
                ..NewModel::default()
            },
        )
        .unwrap();
    let r = req(
        json!({"model": "gem", "temperature": 0.2, "stop": ["X"], "messages": [
            {"role": "system", "content": "be terse"},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                {"type": "image_url", "image_url": {"url": "https://img.test/a.gif"}},
            ]},
        ]}),
    );
    let a = env
        .hub
        .chat(Caller::Key(env.key()), r, ctx())
        .await
        .unwrap();
    assert_eq!(a.completion.content(), Some("look"));
    let sent = mock.last_request().unwrap();
    assert_eq!(
        sent["systemInstruction"],
        json!({"parts": [{"text": "be terse"}]})
    );
    assert_eq!(
        sent["contents"],
        json!([
            {"role": "user", "parts": [{"text": "first"}]},
            {"role": "model", "parts": [{"text": "ok"}]},
            {"role": "user", "parts": [
                {"text": "look"},
                {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
                {"fileData": {"mimeType": "image/gif", "fileUri": "https://img.test/a.gif"}},
            ]},
        ])
    );
    assert_eq!(
        sent["generationConfig"],
        json!({"maxOutputTokens": 321, "temperature": 0.2, "stopSequences": ["X"]})
    );
}

fn tool_defs() -> Value {
    json!([
        {"type": "function", "function": {"name": "weather", "description": "w",
            "parameters": {"type": "object", "additionalProperties": false,
                "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
        {"type": "function", "function": {"name": "clock",
            "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}}}},
    ])
}

#[tokio::test]
async fn tools_calls_and_results() {
    let mock = MockUpstream::start().await.unwrap();
    let env = Env::new(fast_options());
    gemini(&env, &mock, &[("gem", "gemini-tools")]);
    let key = env.key();
    let mut r = user("gem", "weather in Oslo?");
    r.extra.insert("tools".into(), tool_defs());
    r.extra.insert(
        "tool_choice".into(),
        json!({"type": "function", "function": {"name": "weather"}}),
    );
    let a = env
        .hub
        .chat(Caller::Key(key.clone()), r.clone(), ctx())
        .await
        .unwrap();
    let sent = mock.last_request().unwrap();
    let decls = &sent["tools"][0]["functionDeclarations"];
    assert_eq!(decls[0]["name"], "weather");
    assert!(decls[0]["parameters"].get("additionalProperties").is_none());
    assert_eq!(
        sent["toolConfig"],
        json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["weather"]}})
    );
    let body: Value = serde_json::from_slice(&a.body).unwrap();
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert!(choice["message"]["content"].is_null());
    let calls = choice["message"]["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2, "two tools declared: a parallel call");
    assert_eq!(calls[0]["function"]["name"], "weather");
    assert_eq!(calls[1]["function"]["name"], "clock");
    let args: Value =
        serde_json::from_str(calls[0]["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args["city"], "Oslo");
    assert_ne!(calls[0]["id"], calls[1]["id"]);

    // The results go back as one user turn of functionResponse parts, named by the call ids.
    let mut follow = r.clone();
    follow
        .messages
        .push(json!({"role": "assistant", "content": null, "tool_calls": calls}));
    for (c, out) in calls.iter().zip(["{\"temp\": -3}", "12:00"]) {
        follow
            .messages
            .push(json!({"role": "tool", "tool_call_id": c["id"], "content": out}));
    }
    env.hub
        .chat(Caller::Key(key.clone()), follow, ctx())
        .await
        .unwrap();
    let sent = mock.last_request().unwrap();
    let contents = sent["contents"].as_array().unwrap();
    assert_eq!(contents.len(), 3);
    assert_eq!(contents[1]["role"], "model");
    assert_eq!(
        contents[1]["parts"][0]["functionCall"],
        json!({"name": "weather", "args": args})
    );
    assert_eq!(
        contents[2],
        json!({"role": "user", "parts": [
            {"functionResponse": {"name": "weather", "response": {"temp": -3}}},
            {"functionResponse": {"name": "clock", "response": {"output": "12:00"}}},
        ]})
    );

    // Streamed: each call is one delta with its id, name, whole arguments and its own index.
    let s = env
        .hub
        .chat_stream(Caller::Key(key), streamed(r, false), ctx())
        .await
        .unwrap();
    let (_, _, chunks, err) = drain(s).await;
    assert!(err.is_none());
    let deltas: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c.pointer("/choices/0/delta/tool_calls/0"))
        .collect();
    assert_eq!(deltas.len(), 2);
    assert_eq!(deltas[0]["index"], 0);
    assert_eq!(deltas[1]["index"], 1);
    assert_eq!(deltas[1]["function"]["name"], "clock");
    assert!(deltas
        .iter()
        .all(|d| d["id"].as_str().unwrap().starts_with("call_")
            && d["type"] == "function"
            && d["function"]["arguments"]
                .as_str()
                .unwrap()
                .starts_with('{')));
    assert_ne!(deltas[0]["id"], deltas[1]["id"]);
    let last_choice = chunks
        .iter()
        .rev()
        .find_map(|c| c["choices"].get(0))
        .unwrap();
    assert_eq!(last_choice["finish_reason"], "tool_calls");
}

#[tokio::test]
async fn finish_reasons_map_to_openai() {
    let mock = MockUpstream::start().await.unwrap();
    let env = Env::new(fast_options());
    gemini(
        &env,
        &mock,
        &[
            ("safe", "gemini-safety"),
            ("long", "gemini-maxtok"),
            ("blocked", "gemini-blocked"),
        ],
    );
    let key = env.key();
    for (model, reason) in [
        ("safe", "content_filter"),
        ("long", "length"),
        ("blocked", "content_filter"),
    ] {
        let a = env
            .hub
            .chat(Caller::Key(key.clone()), user(model, "x y"), ctx())
            .await
            .unwrap();
        assert_eq!(a.completion.finish_reason(), Some(reason), "{model}");
        let s = env
            .hub
            .chat_stream(
                Caller::Key(key.clone()),
                streamed(user(model, "x y"), true),
                ctx(),
            )
            .await
            .unwrap();
        let (_, _, chunks, err) = drain(s).await;
        assert!(err.is_none(), "{model}: {err:?}");
        let f: Vec<&Value> = chunks
            .iter()
            .filter_map(|c| c["choices"].get(0))
            .filter(|c| !c["finish_reason"].is_null())
            .collect();
        assert_eq!(f.len(), 1, "{model}");
        assert_eq!(f[0]["finish_reason"], reason, "{model}");
    }
    assert!(env.rows().iter().all(|r| r.status == 200));
}

#[tokio::test]
async fn n_gives_that_many_choices() {
    let mock = MockUpstream::start().await.unwrap();
    let env = Env::new(fast_options());
    gemini(&env, &mock, &[("gem", "gemini-echo")]);
    let key = env.key();
    let mut r = user("gem", "a b");
    r.extra.insert("n".into(), json!(2));
    let a = env
        .hub
        .chat(Caller::Key(key.clone()), r.clone(), ctx())
        .await
        .unwrap();
    assert_eq!(
        mock.last_request().unwrap()["generationConfig"]["candidateCount"],
        2
    );
    assert_eq!(a.completion.choices.len(), 2);
    for (i, c) in a.completion.choices.iter().enumerate() {
        assert_eq!(c["index"], i);
        assert_eq!(c["message"]["content"], "a b");
    }
    let s = env
        .hub
        .chat_stream(Caller::Key(key), streamed(r, true), ctx())
        .await
        .unwrap();
    let (_, _, chunks, err) = drain(s).await;
    assert!(err.is_none());
    for i in 0..2 {
        let text: String = chunks
            .iter()
            .flat_map(|c| c["choices"].as_array().unwrap().iter())
            .filter(|c| c["index"] == i)
            .filter_map(|c| c["delta"]["content"].as_str())
            .collect();
        assert_eq!(text, "a b", "choice {i}");
    }
    assert_eq!(
        chunks.iter().filter(|c| c.get("usage").is_some()).count(),
        1
    );
}

#[tokio::test]
async fn upstream_errors_are_mapped_and_retried() {
    let mock = MockUpstream::start().await.unwrap();
    let env = Env::new(fast_options());
    gemini(
        &env,
        &mock,
        &[
            ("auth", "gemini-fail401"),
            ("busy", "gemini-fail429"),
            ("down", "gemini-fail500"),
        ],
    );
    let key = env.key();
    let e = env
        .hub
        .chat(Caller::Key(key.clone()), user("auth", "x"), ctx())
        .await
        .unwrap_err();
    assert_eq!(e.http_status(), 502, "{e}");
    assert_eq!(mock.requests(), 1, "an auth failure is not retried");

    let e = env
        .hub
        .chat(Caller::Key(key.clone()), user("busy", "x"), ctx())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Upstream, "{e}");
    assert_eq!(e.http_status(), 429);
    assert_eq!(mock.requests(), 1 + 3, "RESOURCE_EXHAUSTED is retried");
    let public = e.to_openai_json().to_string();
    assert!(
        !public.contains("AIza-mock") && !public.contains("10.9.8.7"),
        "{public}"
    );

    let e = env
        .hub
        .chat_stream(
            Caller::Key(key.clone()),
            streamed(user("down", "x"), false),
            ctx(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.http_status(), 502, "{e}");
    assert!(env.rows().iter().all(|r| r.status != 200));

    // No key at all: the mock answers as Google does, 403 in Google's error shape.
    let resp = reqwest::Client::new()
        .post(format!(
            "{}/v1beta/models/gemini-echo:generateContent",
            mock.base_url()
        ))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    let v: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    assert_eq!(v["error"]["status"], "PERMISSION_DENIED");
    assert_eq!(v["error"]["code"], 403);
}

#[tokio::test]
async fn a_mid_stream_error_ends_the_stream_once() {
    let mock = MockUpstream::start().await.unwrap();
    let env = Env::new(fast_options());
    gemini(&env, &mock, &[("gem", "gemini-miderror")]);
    let s = env
        .hub
        .chat_stream(
            Caller::Key(env.key()),
            streamed(user("gem", "a b c"), true),
            ctx(),
        )
        .await
        .unwrap();
    let mut s = s;
    let (mut text, mut err) = (String::new(), None);
    while let Some(item) = s.next().await {
        assert!(err.is_none(), "nothing follows the error");
        match item {
            Ok(c) => text.push_str(c.delta().unwrap_or("")),
            Err(e) => err = Some(e),
        }
    }
    assert_eq!(text, "a ");
    let e = err.expect("the stream ends with the in-band error");
    assert_eq!(e.kind(), ErrorKind::Upstream, "{e}");
    assert_eq!(
        mock.requests(),
        1,
        "nothing is retried once the client has text"
    );
    let rows = env.rows();
    assert_eq!(rows.len(), 1);
    assert_ne!(rows[0].status, 200);
}

#[tokio::test]
async fn refused_parameters_never_reach_the_upstream() {
    let mock = MockUpstream::start().await.unwrap();
    let env = Env::new(fast_options());
    gemini(&env, &mock, &[("gem", "gemini-echo")]);
    let mut r = user("gem", "x");
    r.extra.insert("logit_bias".into(), json!({"50256": -100}));
    let e = env
        .hub
        .chat(Caller::Key(env.key()), r, ctx())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidRequest, "{e}");
    assert!(e.to_string().contains("logit_bias"), "{e}");
    assert_eq!(mock.requests(), 0);
}

#[tokio::test]
async fn a_failing_gemini_provider_fails_over_to_openai() {
    let gmock = MockUpstream::start().await.unwrap();
    let omock = MockUpstream::start().await.unwrap();
    let env = Env::new(fast_options());
    // RESOURCE_EXHAUSTED: retried on the gemini provider, then failed over.
    gemini(&env, &gmock, &[("m", "gemini-fail429")]);
    let o = env.provider(
        "o",
        &omock,
        ProviderOptions {
            weight: Some(0),
            ..ProviderOptions::default()
        },
        &[("m", "plain")],
    );
    let key = env.key();
    let a = env
        .hub
        .chat(Caller::Key(key.clone()), user("m", "still here"), ctx())
        .await
        .unwrap();
    assert_eq!(a.provider_id, o);
    assert_eq!(a.completion.content(), Some("still here"));
    let s = env
        .hub
        .chat_stream(
            Caller::Key(key),
            streamed(user("m", "and streaming"), true),
            ctx(),
        )
        .await
        .unwrap();
    assert_eq!(s.provider_id, o);
    let (text, _, _, err) = drain(s).await;
    assert!(err.is_none());
    assert_eq!(text, "and streaming");
    assert!(gmock.requests() >= 1);
}

#[tokio::test]
async fn thought_signatures_survive_the_round_trip() {
    let mock = MockUpstream::start().await.unwrap();
    let env = Env::new(fast_options());
    gemini(&env, &mock, &[("gem", "gemini-tools-strictsig")]);
    let key = env.key();
    let mut r = user("gem", "weather?");
    r.extra.insert("tools".into(), tool_defs());
    for stream in [false, true] {
        let calls: Vec<Value> = if stream {
            let s = env
                .hub
                .chat_stream(Caller::Key(key.clone()), streamed(r.clone(), false), ctx())
                .await
                .unwrap();
            let (_, _, chunks, err) = drain(s).await;
            assert!(err.is_none());
            chunks
                .iter()
                .filter_map(|c| c.pointer("/choices/0/delta/tool_calls/0"))
                .cloned()
                .collect()
        } else {
            let a = env
                .hub
                .chat(Caller::Key(key.clone()), r.clone(), ctx())
                .await
                .unwrap();
            a.completion.choices[0]["message"]["tool_calls"]
                .as_array()
                .unwrap()
                .clone()
        };
        assert_eq!(calls.len(), 2);
        let mut follow = r.clone();
        follow
            .messages
            .push(json!({"role": "assistant", "content": null, "tool_calls": calls}));
        for c in &calls {
            assert!(c["id"]
                .as_str()
                .unwrap()
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-'));
            follow
                .messages
                .push(json!({"role": "tool", "tool_call_id": c["id"], "content": "ok"}));
        }
        env.hub
            .chat(Caller::Key(key.clone()), follow, ctx())
            .await
            .unwrap();
        let sent = mock.last_request().unwrap();
        assert_eq!(
            sent["contents"][1]["parts"][0]["thoughtSignature"],
            "c2lnLW0+/Q=="
        );
        assert_eq!(
            sent["contents"][1]["parts"][1]["thoughtSignature"],
            "c2lnLW1+/Q=="
        );
    }
    // A history from elsewhere (no signatures) is refused by a strict model, as Gemini 3 does.
    let mut other = r.clone();
    other.messages.push(json!({"role": "assistant", "content": null, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}]}));
    other
        .messages
        .push(json!({"role": "tool", "tool_call_id": "call_1", "content": "ok"}));
    let e = env
        .hub
        .chat(Caller::Key(key), other, ctx())
        .await
        .unwrap_err();
    assert_eq!(e.http_status(), 400, "{e}");
}
