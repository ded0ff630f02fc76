//! The `anthropic` provider kind through the Hub, against the mock's Messages API: what the
//! upstream receives (headers and the translated body) and what the client gets back (OpenAI
//! completions and chunks, usage, errors, failover).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{fast_options, Env, UPSTREAM_KEY};
use nexus::openai::ChatRequest;
use nexus::records::{NewModel, NewProvider, ProviderKind, ProviderOptions};
use nexus::testing::MockUpstream;
use nexus::{Caller, RequestContext};
use serde_json::{json, Value};

fn ctx() -> RequestContext {
    RequestContext::default()
}

fn anthropic(
    env: &Env,
    mock: &MockUpstream,
    options: ProviderOptions,
    models: &[(&str, &str)],
) -> i64 {
    env.add(
        NewProvider {
            name: "claude".into(),
            kind: ProviderKind::Anthropic,
            base_url: mock.base_url(),
            api_key: UPSTREAM_KEY.into(),
            options,
            ..NewProvider::default()
        },
        models,
    )
}

fn req(v: Value) -> ChatRequest {
    serde_json::from_value(v).unwrap()
}

fn header(mock: &MockUpstream, name: &str) -> Option<String> {
    mock.last_headers()
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

/// Streams to the end: (content, every chunk as JSON, the error that ended it).
async fn drain(mut s: nexus::ChatStream) -> (String, Vec<Value>, Option<nexus::Error>) {
    let (mut text, mut chunks) = (String::new(), Vec::new());
    while let Some(item) = s.next().await {
        match item {
            Ok(c) => {
                text.push_str(c.delta().unwrap_or(""));
                chunks.push(serde_json::from_str(c.json()).unwrap());
            }
            Err(e) => {
                // The stream ends after its one error.
                assert!(s.next().await.is_none());
                return (text, chunks, Some(e));
            }
        }
    }
    (text, chunks, None)
}

fn finish(chunks: &[Value]) -> Option<String> {
    chunks
        .iter()
        .filter_map(|c| {
            c.pointer("/choices/0/finish_reason")
                .and_then(Value::as_str)
        })
        .map(str::to_owned)
        .next_back()
}

#[tokio::test]
async fn non_stream_text_headers_and_usage() {
    let mock = MockUpstream::start().await.unwrap();
    let env = Env::new(fast_options());
    let pid = anthropic(
        &env,
        &mock,
        ProviderOptions::default(),
        &[("claude", "claude-cache")],
    );
    let key = env.key();
    let r = env
        .hub
        .chat(
            Caller::Key(key.clone()),
            ChatRequest::user("claude", "hello there"),
            ctx(),
        )
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["id"], "chatcmpl-msg_mock");
    assert_eq!(body["model"], "claude");
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(body["choices"][0]["message"]["content"], "hello there");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    // 10 input + 100 cache read + 20 cache write; 2 words out.
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 130, "completion_tokens": 2, "total_tokens": 132,
               "prompt_tokens_details": {"cached_tokens": 100, "cache_write_tokens": 20}})
    );
    assert_eq!(r.provider_id, pid);

    assert_eq!(header(&mock, "x-api-key").as_deref(), Some(UPSTREAM_KEY));
    assert_eq!(
        header(&mock, "anthropic-version").as_deref(),
        Some("2023-06-01")
    );
    assert!(header(&mock, "authorization").is_none());
    assert!(header(&mock, "anthropic-beta").is_none());
    let sent = mock.last_request().unwrap();
    assert_eq!(sent["model"], "claude-cache");
    assert_eq!(sent["max_tokens"], 4096);
    assert!(sent.get("stream").is_none());

    let rows = env.rows();
    let row = rows.last().unwrap();
    assert_eq!((row.prompt_tokens, row.completion_tokens), (130, 2));
    assert_eq!(row.usage_source, "upstream");
    assert_eq!(row.status, 200);
}

#[tokio::test]
async fn provider_options_and_model_defaults_reach_the_upstream() {
    let mock = MockUpstream::start().await.unwrap();
    let env = Env::new(fast_options());
    let pid = anthropic(
        &env,
        &mock,
        ProviderOptions {
            api_version: Some("2024-10-22".into()),
            anthropic_beta: Some("prompt-caching-2024-07-31".into()),
            ..ProviderOptions::default()
        },
        &[],
    );
    env.hub
        .registry()
        .create_model(
            pid,
            NewModel {
                name: "c".into(),
                upstream_name: Some("claude-x".into()),
                default_max_tokens: Some(777),
                ..NewModel::default()
            },
        )
        .unwrap();
    env.hub
        .chat(Caller::Key(env.key()), ChatRequest::user("c", "hi"), ctx())
        .await
        .unwrap();
    assert_eq!(
        header(&mock, "anthropic-version").as_deref(),
        Some("2024-10-22")
    );
    assert_eq!(
        header(&mock, "anthropic-beta").as_deref(),
        Some("prompt-caching-2024-07-31")
    );
    assert_eq!(mock.last_request().unwrap()["max_tokens"], 777);
}

#[tokio::test]
async fn stream_text_and_include_usage() {
    let mock = MockUpstream::start().await.unwrap();
    let env = Env::new(fast_options());
    anthropic(
        &env,
        &mock,
        ProviderOptions::default(),
        &[("claude", "claude-cache")],
    );
    let key = env.key();

    // Without include_usage: no usage chunk reaches the client, the row still has the
    // upstream's numbers.
    let mut r = ChatRequest::user("claude", "one two three");
    r.stream = Some(true);
    let s = env
        .hub
        .chat_stream(Caller::Key(key.clone()), r, ctx())
        .await
        .unwrap();
    let (text, chunks, err) = drain(s).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(text, "one two three");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"
        && c["id"] == "chatcmpl-msg_mock"
        && c["model"] == "claude"
        && c["created"] == chunks[0]["created"]));
    assert!(
        chunks.iter().all(|c| c.get("usage").is_none()),
        "{chunks:?}"
    );
    assert_eq!(finish(&chunks).as_deref(), Some("stop"));
    assert_eq!(mock.last_request().unwrap()["stream"], true);
    let rows = env.rows();
    let row = rows.last().unwrap();
    assert!(row.stream);
    assert_eq!((row.prompt_tokens, row.completion_tokens), (130, 3));
    assert_eq!(row.usage_source, "upstream");

    // With include_usage: one usage-only chunk, after the finish chunk.
    let mut r = ChatRequest::user("claude", "one two three");
    r.stream = Some(true);
    r.stream_options = Some(json!({"include_usage": true}));
    let s = env
        .hub
        .chat_stream(Caller::Key(key), r, ctx())
        .await
        .unwrap();
    let (_, chunks, err) = drain(s).await;
    assert!(err.is_none(), "{err:?}");
    let usage: Vec<&Value> = chunks.iter().filter(|c| c.get("usage").is_some()).collect();
    assert_eq!(usage.len(), 1, "{chunks:?}");
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(
        last["usage"],
        json!({"prompt_tokens": 130, "completion_tokens": 3, "total_tokens": 133,
               "prompt_tokens_details": {"cached_tokens": 100, "cache_write_tokens": 20}})
    );
}

#[tokio::test]
async fn system_turns_and_images_are_translated() {
    let mock = MockUpstream::start().await.unwrap();
    let env = Env::new(fast_options());
    anthropic(
        &env,
        &mock,
        ProviderOptions::default(),
        &[("claude", "claude")],
    );
    let r = req(
        json!({"model": "claude", "temperature": 0.2, "stop": ["END", "STOP"],
            "user": "tenant-7", "seed": 1, "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "first", "name": "ann"},
            {"role": "user", "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
            ]},
            {"role": "assistant", "content": "ok"},
            {"role": "developer", "content": "Answer in French."},
            {"role": "user", "content": ""},
            {"role": "user", "content": "last words"},
        ]}),
    );
    let out = env
        .hub
        .chat(Caller::Key(env.key()), r, ctx())
        .await
        .unwrap();
    assert_eq!(out.completion.content(), Some("last words"));
    let sent = mock.last_request().unwrap();
    assert_eq!(
        sent["system"],
        json!([{"type": "text", "text": "You are terse."},
               {"type": "text", "text": "Answer in French."}])
    );
    assert_eq!(
        sent["messages"],
        json!([
            {"role": "user", "content": [
                {"type": "text", "text": "first"},
                {"type": "text", "text": "look"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
            ]},
            {"role": "assistant", "content": [{"type": "text", "text": "ok"}]},
            {"role": "user", "content": [{"type": "text", "text": "last words"}]},
        ])
    );
    assert_eq!(sent["temperature"], 0.2);
    assert_eq!(sent["stop_sequences"], json!(["END", "STOP"]));
    assert_eq!(sent["metadata"], json!({"user_id": "tenant-7"}));
    assert!(sent.get("seed").is_none() && sent.get("user").is_none());
}

fn two_tools() -> Value {
    json!([
        {"type": "function", "function": {"name": "search", "description": "web search",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}},
        {"type": "function", "function": {"name": "lookup",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}},
    ])
}

#[tokio::test]
async fn tools_non_stream_and_history() {
    let mock = MockUpstream::start().await.unwrap();
    let env = Env::new(fast_options());
    anthropic(
        &env,
        &mock,
        ProviderOptions::default(),
        &[("claude", "claude-tools"), ("plain", "claude")],
    );
    let key = env.key();
    let r = req(
        json!({"model": "claude", "tools": two_tools(), "tool_choice": "auto",
        "parallel_tool_calls": false, "messages": [{"role": "user", "content": "rust"}]}),
    );
    let out = env
        .hub
        .chat(Caller::Key(key.clone()), r, ctx())
        .await
        .unwrap();
    let sent = mock.last_request().unwrap();
    assert_eq!(
        sent["tools"][0],
        json!({"name": "search", "description": "web search", "input_schema":
            {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}})
    );
    assert_eq!(
        sent["tool_choice"],
        json!({"type": "auto", "disable_parallel_tool_use": true})
    );
    let body: Value = serde_json::from_slice(&out.body).unwrap();
    let msg = &body["choices"][0]["message"];
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(msg["content"], "Let me check.");
    assert_eq!(
        msg["tool_calls"],
        json!([
            {"id": "toolu_mock0", "type": "function", "function": {"name": "search", "arguments": "{\"q\":\"rust 0\"}"}},
            {"id": "toolu_mock1", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":\"rust 1\"}"}},
        ])
    );

    for (choice, want) in [
        (json!("required"), json!({"type": "any"})),
        (json!("none"), json!({"type": "none"})),
        (
            json!({"type": "function", "function": {"name": "lookup"}}),
            json!({"type": "tool", "name": "lookup"}),
        ),
    ] {
        let r = req(
            json!({"model": "plain", "tools": two_tools(), "tool_choice": choice,
            "messages": [{"role": "user", "content": "x"}]}),
        );
        env.hub
            .chat(Caller::Key(key.clone()), r, ctx())
            .await
            .unwrap();
        assert_eq!(mock.last_request().unwrap()["tool_choice"], want);
    }

    // The answer's tool calls and their results sent back.
    let mut history = vec![json!({"role": "user", "content": "rust"}), msg.clone()];
    history.push(json!({"role": "tool", "tool_call_id": "toolu_mock0", "content": "result A"}));
    history.push(json!({"role": "tool", "tool_call_id": "toolu_mock1", "content": "result B"}));
    let r = req(json!({"model": "plain", "tools": two_tools(), "messages": history}));
    env.hub.chat(Caller::Key(key), r, ctx()).await.unwrap();
    let sent = mock.last_request().unwrap();
    assert_eq!(
        sent["messages"][1]["content"],
        json!([
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "toolu_mock0", "name": "search", "input": {"q": "rust 0"}},
            {"type": "tool_use", "id": "toolu_mock1", "name": "lookup", "input": {"q": "rust 1"}},
        ])
    );
    assert_eq!(
        sent["messages"][2],
        json!({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_mock0", "content": [{"type": "text", "text": "result A"}]},
            {"type": "tool_result", "tool_use_id": "toolu_mock1", "content": [{"type": "text", "text": "result B"}]},
        ]})
    );
    assert_eq!(sent["messages"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn streamed_parallel_tool_calls_have_stable_indexes_and_ids() {
    let mock = MockUpstream::start().await.unwrap();
    let env = Env::new(fast_options());
    anthropic(
        &env,
        &mock,
        ProviderOptions::default(),
        &[("claude", "claude-tools")],
    );
    let mut r = req(json!({"model": "claude", "tools": two_tools(),
        "messages": [{"role": "user", "content": "go"}]}));
    r.stream = Some(true);
    let s = env
        .hub
        .chat_stream(Caller::Key(env.key()), r, ctx())
        .await
        .unwrap();
    let (text, chunks, err) = drain(s).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(text, "Let me check.");
    // Assemble the calls as an OpenAI client does: by index.
    let mut calls: Vec<(String, String, String)> = vec![];
    for c in &chunks {
        let Some(tcs) = c
            .pointer("/choices/0/delta/tool_calls")
            .and_then(Value::as_array)
        else {
            continue;
        };
        for tc in tcs {
            let i = tc["index"].as_u64().unwrap() as usize;
            if let Some(id) = tc["id"].as_str() {
                assert_eq!(
                    i,
                    calls.len(),
                    "indexes count up from 0 in order of appearance"
                );
                calls.push((
                    id.to_owned(),
                    tc["function"]["name"].as_str().unwrap().to_owned(),
                    String::new(),
                ));
            } else {
                assert!(tc.get("type").is_none());
            }
            calls[i]
                .2
                .push_str(tc["function"]["arguments"].as_str().unwrap_or(""));
        }
    }
    assert_eq!(
        calls,
        vec![
            (
                "toolu_mock0".into(),
                "search".into(),
                "{\"q\":\"go 0\"}".into()
            ),
            (
                "toolu_mock1".into(),
                "lookup".into(),
                "{\"q\":\"go 1\"}".into()
            ),
        ]
    );
    assert_eq!(finish(&chunks).as_deref(), Some("tool_calls"));
}

#[tokio::test]
async fn thinking_becomes_reasoning_content() {
    let mock = MockUpstream::start().await.unwrap();
    let env = Env::new(fast_options());
    anthropic(
        &env,
        &mock,
        ProviderOptions::default(),
        &[("claude", "claude-thinking")],
    );
    let key = env.key();
    let r = req(
        json!({"model": "claude", "reasoning_effort": "high", "max_tokens": 2000,
        "messages": [{"role": "user", "content": "why"}]}),
    );
    let out = env
        .hub
        .chat(Caller::Key(key.clone()), r.clone(), ctx())
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&out.body).unwrap();
    assert_eq!(
        body["choices"][0]["message"]["reasoning_content"],
        "The user wants an answer."
    );
    assert_eq!(body["choices"][0]["message"]["content"], "why");
    let sent = mock.last_request().unwrap();
    assert_eq!(
        sent["thinking"],
        json!({"type": "enabled", "budget_tokens": 16384})
    );
    assert_eq!(sent["max_tokens"], 18384);

    let mut r = r;
    r.stream = Some(true);
    let s = env
        .hub
        .chat_stream(Caller::Key(key), r, ctx())
        .await
        .unwrap();
    let (text, chunks, err) = drain(s).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(text, "why");
    let reasoning: String = chunks
        .iter()
        .filter_map(|c| {
            c.pointer("/choices/0/delta/reasoning_content")
                .and_then(Value::as_str)
        })
        .collect();
    assert_eq!(reasoning, "The user wants an answer.");
}

#[tokio::test]
async fn stop_reasons_map_to_finish_reasons() {
    let mock = MockUpstream::start().await.unwrap();
    let env = Env::new(fast_options());
    anthropic(
        &env,
        &mock,
        ProviderOptions::default(),
        &[("seq", "claude-stopseq"), ("len", "claude-maxtok")],
    );
    let key = env.key();
    for (model, want) in [("seq", "stop"), ("len", "length")] {
        let out = env
            .hub
            .chat(
                Caller::Key(key.clone()),
                ChatRequest::user(model, "x"),
                ctx(),
            )
            .await
            .unwrap();
        assert_eq!(out.completion.finish_reason(), Some(want), "{model}");
        let mut r = ChatRequest::user(model, "x");
        r.stream = Some(true);
        let s = env
            .hub
            .chat_stream(Caller::Key(key.clone()), r, ctx())
            .await
            .unwrap();
        let (_, chunks, err) = drain(s).await;
        assert!(err.is_none());
        assert_eq!(finish(&chunks).as_deref(), Some(want), "{model} streamed");
    }
}

#[tokio::test]
async fn unsupported_parameters_are_refused_before_any_upstream_request() {
    let mock = MockUpstream::start().await.unwrap();
    let env = Env::new(fast_options());
    anthropic(
        &env,
        &mock,
        ProviderOptions::default(),
        &[("claude", "claude")],
    );
    let key = env.key();
    for (k, v) in [
        ("n", json!(2)),
        ("logprobs", json!(true)),
        ("frequency_penalty", json!(0.3)),
    ] {
        let mut r = ChatRequest::user("claude", "x");
        r.extra.insert(k.into(), v);
        let e = env
            .hub
            .chat(Caller::Key(key.clone()), r.clone(), ctx())
            .await
            .unwrap_err();
        assert_eq!(e.http_status(), 400, "{k}: {e}");
        assert_eq!(e.param(), Some(k));
        r.stream = Some(true);
        let e = env
            .hub
            .chat_stream(Caller::Key(key.clone()), r, ctx())
            .await
            .unwrap_err();
        assert_eq!(e.http_status(), 400, "{k} streamed: {e}");
    }
    assert_eq!(mock.requests(), 0);
}

#[tokio::test]
async fn upstream_errors_are_mapped_and_overload_is_retried() {
    let mock = MockUpstream::start().await.unwrap();
    let env = Env::new(fast_options());
    anthropic(
        &env,
        &mock,
        ProviderOptions::default(),
        &[
            ("e401", "claude-fail401"),
            ("e429", "claude-fail429"),
            ("e529", "claude-fail529"),
            ("e500", "claude-fail500"),
            ("e400", "claude-fail400"),
        ],
    );
    let key = env.key();
    let mut seen = mock.requests();
    for (model, status, attempts) in [
        ("e400", 400, 1),
        ("e401", 502, 1),
        ("e429", 429, 3),
        ("e529", 502, 3),
        ("e500", 502, 3),
    ] {
        let e = env
            .hub
            .chat(
                Caller::Key(key.clone()),
                ChatRequest::user(model, "x"),
                ctx(),
            )
            .await
            .unwrap_err();
        assert_eq!(e.http_status(), status, "{model}: {e}");
        assert_eq!(mock.requests() - seen, attempts, "{model}");
        seen = mock.requests();
        match &e {
            nexus::Error::Upstream { message, .. } => {
                assert!(
                    message.contains("mock failure"),
                    "Anthropic's error.message is kept: {message}"
                )
            }
            other => panic!("{model}: {other:?}"),
        }
    }
    let e = env
        .hub
        .chat(Caller::Key(key), ChatRequest::user("e401", "x"), ctx())
        .await
        .unwrap_err();
    assert!(e.is_upstream_auth());
}

#[tokio::test]
async fn a_mid_stream_error_event_ends_the_stream_once() {
    let mock = MockUpstream::start().await.unwrap();
    let env = Env::new(fast_options());
    anthropic(
        &env,
        &mock,
        ProviderOptions::default(),
        &[("claude", "claude-miderror")],
    );
    let mut r = ChatRequest::user("claude", "alpha beta gamma");
    r.stream = Some(true);
    let s = env
        .hub
        .chat_stream(Caller::Key(env.key()), r, ctx())
        .await
        .unwrap();
    let (text, _, err) = drain(s).await;
    assert_eq!(text, "alpha ");
    let e = err.expect("an in-band error");
    match &e {
        nexus::Error::Upstream {
            status, message, ..
        } => {
            assert_eq!(*status, Some(529));
            assert_eq!(message, "Overloaded");
        }
        other => panic!("{other:?}"),
    }
    let rows = env.rows();
    assert_eq!(rows.last().unwrap().error_kind.as_deref(), Some("upstream"));
}

#[tokio::test]
async fn a_failing_anthropic_provider_fails_over_to_openai() {
    let mock = MockUpstream::start().await.unwrap();
    let env = Env::new(fast_options());
    let a = anthropic(
        &env,
        &mock,
        ProviderOptions::default(),
        &[("m", "claude-fail529")],
    );
    let o = env.provider(
        "openai",
        &mock,
        ProviderOptions::default(),
        &[("m", "gpt-echo")],
    );
    assert!(a < o, "the anthropic provider is tried first");
    let key = env.key();
    let out = env
        .hub
        .chat(
            Caller::Key(key.clone()),
            ChatRequest::user("m", "fine thanks"),
            ctx(),
        )
        .await
        .unwrap();
    assert_eq!(out.provider_id, o);
    assert_eq!(out.completion.content(), Some("fine thanks"));
    let mut r = ChatRequest::user("m", "streamed too");
    r.stream = Some(true);
    let s = env
        .hub
        .chat_stream(Caller::Key(key), r, ctx())
        .await
        .unwrap();
    assert_eq!(s.provider_id, o);
    let (text, _, err) = drain(s).await;
    assert!(err.is_none());
    assert_eq!(text, "streamed too");
}

#[tokio::test]
async fn json_schema_answers_come_back_as_content() {
    let mock = MockUpstream::start().await.unwrap();
    let env = Env::new(fast_options());
    anthropic(
        &env,
        &mock,
        ProviderOptions::default(),
        &[("claude", "claude-tools")],
    );
    let key = env.key();
    let schema = json!({"type": "object", "properties": {"q": {"type": "string"}}});
    let r = req(
        json!({"model": "claude", "messages": [{"role": "user", "content": "w"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": schema}}}),
    );
    let out = env
        .hub
        .chat(Caller::Key(key.clone()), r.clone(), ctx())
        .await
        .unwrap();
    let sent = mock.last_request().unwrap();
    assert_eq!(sent["tools"][0]["input_schema"], schema);
    assert_eq!(sent["tool_choice"]["type"], "tool");
    let msg = &out.completion.choices[0]["message"];
    assert!(msg.get("tool_calls").is_none(), "{msg}");
    assert_eq!(msg["content"], "{\"q\":\"w 0\"}");
    assert_eq!(out.completion.finish_reason(), Some("stop"));

    let mut r = r;
    r.stream = Some(true);
    let s = env
        .hub
        .chat_stream(Caller::Key(key), r, ctx())
        .await
        .unwrap();
    let (text, chunks, err) = drain(s).await;
    assert!(err.is_none());
    assert_eq!(text, "{\"q\":\"w 0\"}");
    assert!(chunks
        .iter()
        .all(|c| c.pointer("/choices/0/delta/tool_calls").is_none()));
    assert_eq!(finish(&chunks).as_deref(), Some("stop"));
}

#[tokio::test]
async fn a_base_url_ending_in_hash_is_used_verbatim() {
    let mock = MockUpstream::start().await.unwrap();
    let env = Env::new(fast_options());
    env.add(
        NewProvider {
            name: "proxy".into(),
            kind: ProviderKind::Anthropic,
            base_url: format!("{}/v1/messages#", mock.base_url()),
            api_key: UPSTREAM_KEY.into(),
            ..NewProvider::default()
        },
        &[("claude", "claude")],
    );
    let out = env
        .hub
        .chat(
            Caller::Key(env.key()),
            ChatRequest::user("claude", "via proxy"),
            ctx(),
        )
        .await
        .unwrap();
    assert_eq!(out.completion.content(), Some("via proxy"));
    assert_eq!(mock.requests(), 1);
}

#[tokio::test]
async fn a_gpt_name_served_only_by_anthropic_is_counted_as_an_estimate() {
    let mock = MockUpstream::start().await.unwrap();
    let env = Env::new(fast_options());
    anthropic(
        &env,
        &mock,
        ProviderOptions::default(),
        &[("gpt-4o", "claude-x-echo")],
    );
    let c = env.hub.count_text("gpt-4o", "hello world");
    assert_eq!(c.method, nexus::tokens::Method::Estimate);
    // The BPE count is still the best estimate there is.
    assert_eq!(c.tokens, 2);
    // Once an OpenAI provider serves the name too, the count is exact for it.
    env.add(
        NewProvider {
            name: "oai".into(),
            base_url: mock.base_url(),
            api_key: UPSTREAM_KEY.into(),
            ..NewProvider::default()
        },
        &[("gpt-4o", "gpt-4o")],
    );
    let exact = |hub: &nexus::Hub| hub.count_text("gpt-4o", "hello world").method;
    let mut waited = 0;
    while exact(&env.hub) != nexus::tokens::Method::Exact && waited < 50 {
        std::thread::sleep(std::time::Duration::from_millis(20));
        waited += 1;
    }
    assert_eq!(exact(&env.hub), nexus::tokens::Method::Exact);
    let m = env
        .hub
        .count_messages("gpt-4o", &[json!({"role": "user", "content": "hi"})]);
    assert_eq!(m.method, nexus::tokens::Method::Exact);
    // A name no provider serves keeps its name-based label.
    assert_eq!(
        env.hub.count_text("gpt-4o-mini", "hi").method,
        nexus::tokens::Method::Exact
    );
}
