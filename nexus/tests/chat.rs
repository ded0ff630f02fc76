//! The Hub against the mock upstream: non-stream and stream, usage (upstream, injected,
//! estimated), retries, failover, cooldown, timeouts, mid-stream failures and cancellation.
//! Every path must leave exactly one usage row with the right token counts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::{eventually, fast_options, Env};
use futures_util::StreamExt;
use nexus::openai::ChatRequest;
use nexus::records::{NewKey, ProviderOptions};
use nexus::testing::MockUpstream;
use nexus::{Caller, ErrorKind, RequestContext};
use serde_json::{json, Value};

fn req(model: &str, text: &str) -> ChatRequest {
    ChatRequest::user(model, text)
}

/// A streaming request.
fn sreq(model: &str, text: &str) -> ChatRequest {
    let mut r = ChatRequest::user(model, text);
    r.stream = Some(true);
    r
}

/// One mock, one provider "a" serving `models` (client name, upstream name), one client key.
async fn setup(opts: nexus::HubOptions, models: &[(&str, &str)]) -> (MockUpstream, Env, String) {
    let mock = MockUpstream::start().await.unwrap();
    let env = Env::new(opts);
    env.provider("a", &mock, ProviderOptions::default(), models);
    let key = env.key();
    (mock, env, key)
}

fn ctx() -> RequestContext {
    RequestContext::default()
}

/// Collects a stream: the concatenated content, the chunks' JSON, and the error that ended it.
async fn drain(
    mut s: nexus::ChatStream,
) -> (String, Vec<Value>, Option<nexus::Error>, nexus::ChatStream) {
    let mut text = String::new();
    let mut chunks = Vec::new();
    let mut err = None;
    while let Some(item) = s.next().await {
        match item {
            Ok(c) => {
                text.push_str(c.delta().unwrap_or(""));
                chunks.push(serde_json::from_str(c.json()).unwrap());
            }
            Err(e) => {
                err = Some(e);
                break;
            }
        }
    }
    (text, chunks, err, s)
}

#[tokio::test]
async fn non_stream_records_upstream_usage_once() {
    let mock = MockUpstream::start().await.unwrap();
    let env = Env::new(fast_options());
    let pid = env.provider(
        "a",
        &mock,
        ProviderOptions::default(),
        &[("gpt-4o", "gpt-4o")],
    );
    let key = env.key();
    let r = env
        .hub
        .chat(Caller::Key(key), req("gpt-4o", "hello there world"), ctx())
        .await
        .unwrap();
    assert_eq!(r.completion.content(), Some("hello there world"));
    assert_eq!(r.usage.prompt_tokens, 10);
    assert_eq!(r.usage.completion_tokens, 3);
    assert_eq!(r.provider_id, pid);
    // The upstream got the decrypted key, and rate-limit headers come back.
    let auth = mock
        .last_headers()
        .into_iter()
        .find(|(k, _)| k == "authorization")
        .map(|(_, v)| v);
    assert_eq!(
        auth.as_deref(),
        Some(&*format!("Bearer {}", common::UPSTREAM_KEY))
    );
    assert!(r
        .rate_limit_headers
        .iter()
        .any(|(k, v)| k == "x-ratelimit-remaining-requests" && v == "99"));
    let rows = env.rows();
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = &rows[0];
    assert_eq!(row.request_id, r.request_id);
    assert_eq!((row.prompt_tokens, row.completion_tokens), (10, 3));
    assert_eq!(row.usage_source, "upstream");
    assert_eq!((row.status, row.stream), (200, false));
    assert_eq!(row.provider_id, Some(pid));
}

#[tokio::test]
async fn unknown_fields_pass_through_both_ways() {
    let (mock, env, key) = setup(fast_options(), &[("m", "m")]).await;
    let tools = json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    let body = json!({
        "model": "m", "messages": [{"role": "user", "content": "hi"}],
        "tools": tools, "tool_choice": "auto", "response_format": {"type": "json_object"},
        "vendor_extra": {"nested": [1, 2, 3]}, "temperature": 0.25
    });
    let r = env
        .hub
        .chat(
            Caller::Key(key),
            ChatRequest::from_slice(body.to_string().as_bytes()).unwrap(),
            ctx(),
        )
        .await
        .unwrap();
    let sent = mock.last_request().unwrap();
    for f in [
        "tools",
        "tool_choice",
        "response_format",
        "vendor_extra",
        "temperature",
    ] {
        assert_eq!(sent[f], body[f], "field {f} changed on the way up");
    }
    // The mock echoes `tools` into a field nobody models; it must reach the caller intact.
    let out: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(out["mock_saw_tools"], tools);
    assert_eq!(out["choices"][0]["logprobs"], Value::Null);
    assert!(out["choices"][0]
        .as_object()
        .unwrap()
        .contains_key("logprobs"));
}

#[tokio::test]
async fn stream_usage_injected_and_stripped_unless_asked() {
    let (mock, env, key) = setup(fast_options(), &[("m", "chunks5")]).await;

    // The client did not ask for usage: the hub asks upstream, records it, and hides the chunk.
    let r = sreq("m", "x");
    let s = env
        .hub
        .chat_stream(Caller::Key(key.clone()), r, ctx())
        .await
        .unwrap();
    let (text, chunks, err, s) = drain(s).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(text, "tok0 tok1 tok2 tok3 tok4 ");
    assert_eq!(
        mock.last_request().unwrap()["stream_options"]["include_usage"],
        json!(true)
    );
    assert!(chunks
        .iter()
        .all(|c| c.get("usage").is_none_or(Value::is_null)));
    let sum = s.summary().unwrap();
    assert_eq!(
        (sum.usage.prompt_tokens, sum.usage.completion_tokens),
        (10, 5)
    );

    // The client asked: it sees exactly one usage chunk, the upstream's.
    let mut r = sreq("m", "x");
    r.stream_options = Some(json!({"include_usage": true}));
    let s = env
        .hub
        .chat_stream(Caller::Key(key), r, ctx())
        .await
        .unwrap();
    let (_, chunks, err, _) = drain(s).await;
    assert!(err.is_none());
    let usage: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c.get("usage"))
        .filter(|u| !u.is_null())
        .collect();
    assert_eq!(
        usage,
        vec![&json!({"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15})]
    );

    let rows = env.rows();
    assert_eq!(rows.len(), 2);
    for row in rows {
        assert_eq!((row.prompt_tokens, row.completion_tokens), (10, 5));
        assert_eq!(row.usage_source, "upstream");
        assert!(row.stream && row.status == 200);
        assert!(row.ttft_ms.is_some());
    }
}

/// A stream read to its `[DONE]` gives its upstream connection back to the pool, so the next
/// request does not pay a new handshake, also when the upstream paces its events.
#[tokio::test]
async fn finished_streams_reuse_the_upstream_connection() {
    let (mock, env, key) = setup(fast_options(), &[("m", "chunks3-delay20")]).await;
    for _ in 0..3 {
        let s = env
            .hub
            .chat_stream(Caller::Key(key.clone()), sreq("m", "hi"), ctx())
            .await
            .unwrap();
        let (text, _, err, _) = drain(s).await;
        assert!(err.is_none(), "{err:?}");
        assert!(!text.is_empty());
        // The end of the body may be read in the background just after [DONE].
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert_eq!(mock.requests(), 3);
    assert_eq!(mock.connections(), 1);
}

#[tokio::test]
async fn stream_without_upstream_usage_is_estimated() {
    let (_mock, env, key) = setup(fast_options(), &[("gpt-4o", "nousage")]).await;
    let text = "The quick brown fox jumps over the lazy dog";
    let r = sreq("gpt-4o", text);
    let messages = r.messages.clone();
    let s = env
        .hub
        .chat_stream(Caller::Key(key), r, ctx())
        .await
        .unwrap();
    let (answer, _, err, s) = drain(s).await;
    assert!(err.is_none());
    assert_eq!(answer, text);
    let expect_prompt = env.hub.count_messages("gpt-4o", &messages).tokens;
    let expect_completion = env.hub.count_text("gpt-4o", &answer).tokens;
    assert!(expect_prompt > 0 && expect_completion > 0);
    let sum = s.summary().unwrap();
    assert_eq!(sum.usage.prompt_tokens, expect_prompt);
    assert_eq!(sum.usage.completion_tokens, expect_completion);
    let rows = env.rows();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].usage_source, "estimate");
    assert_eq!(rows[0].prompt_tokens as u64, expect_prompt);
    assert_eq!(rows[0].completion_tokens as u64, expect_completion);
}

#[tokio::test]
async fn retries_429_honouring_retry_after_then_fails_with_rate_limit() {
    let mock = MockUpstream::start().await.unwrap();
    let mut opts = fast_options();
    opts.retry.max_attempts = 2;
    let env = Env::new(opts);
    env.provider("a", &mock, ProviderOptions::default(), &[("m", "fail429")]);
    let key = env.key();
    let t = Instant::now();
    let e = env
        .hub
        .chat(Caller::Key(key), req("m", "x"), ctx())
        .await
        .unwrap_err();
    // An upstream 429 stays an upstream error but keeps its status, so front ends answer 429.
    assert_eq!(e.kind(), ErrorKind::Upstream);
    assert_eq!(e.http_status(), 429);
    assert_eq!(mock.requests(), 2);
    // The mock says `Retry-After: 1`; the hub waited for it rather than its 20 ms backoff.
    assert!(
        t.elapsed() >= Duration::from_millis(950),
        "{:?}",
        t.elapsed()
    );
    assert!(e.retry_after().is_some());
    let rows = env.rows();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].status, 429);
    assert_eq!(rows[0].error_kind.as_deref(), Some("upstream"));
}

#[tokio::test]
async fn retries_5xx_until_success() {
    let (mock, env, key) = setup(fast_options(), &[("m", "flaky2")]).await;
    let r = env
        .hub
        .chat(Caller::Key(key), req("m", "ok now"), ctx())
        .await
        .unwrap();
    assert_eq!(r.completion.content(), Some("ok now"));
    assert_eq!(mock.requests(), 3);
    let rows = env.rows();
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].status, rows[0].completion_tokens), (200, 2));
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let (mock, env, key) = setup(fast_options(), &[("m", "fail400")]).await;
    let e = env
        .hub
        .chat(Caller::Key(key), req("m", "x"), ctx())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Upstream);
    assert_eq!(e.http_status(), 400);
    assert!(e.to_string().contains("mock failure 400"), "{e}");
    assert_eq!(mock.requests(), 1);
    assert_eq!(env.rows().len(), 1);
}

#[tokio::test]
async fn fails_over_then_cools_down_the_failing_provider() {
    let bad = MockUpstream::start().await.unwrap();
    let good = MockUpstream::start().await.unwrap();
    let mut opts = fast_options();
    opts.retry.max_attempts = 1;
    opts.retry.cooldown_failures = 2;
    let env = Env::new(opts);
    // Weight 0: the second provider is only a fallback, so the order is fixed.
    let a = env.provider("bad", &bad, ProviderOptions::default(), &[("m", "fail503")]);
    let b = env.provider(
        "good",
        &good,
        ProviderOptions {
            weight: Some(0),
            ..ProviderOptions::default()
        },
        &[("m", "m")],
    );
    assert!(a < b);
    let key = env.key();
    for i in 1..=2 {
        let r = env
            .hub
            .chat(Caller::Key(key.clone()), req("m", "x"), ctx())
            .await
            .unwrap();
        assert_eq!(r.provider_id, b);
        assert_eq!(bad.requests(), i);
    }
    // Two failures in the window: `bad` cools down and is skipped without a request.
    let r = env
        .hub
        .chat(Caller::Key(key.clone()), req("m", "x"), ctx())
        .await
        .unwrap();
    assert_eq!(r.provider_id, b);
    assert_eq!(bad.requests(), 2);
    assert_eq!(good.requests(), 3);
    // A stream fails over too, before its first byte.
    let r = sreq("m", "streamed");
    let s = env
        .hub
        .chat_stream(Caller::Key(key), r, ctx())
        .await
        .unwrap();
    assert_eq!(s.provider_id, b);
    let rows = env.rows();
    let _ = drain(s).await;
    let rows_after = env.rows();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows_after.len(), 4);
    assert!(rows_after
        .iter()
        .all(|r| r.status == 200 && r.provider_id == Some(b)));
}

#[tokio::test]
async fn client_errors_do_not_cool_a_provider_down() {
    let mock = MockUpstream::start().await.unwrap();
    let mut opts = fast_options();
    opts.retry.max_attempts = 1;
    opts.retry.cooldown_failures = 1;
    let env = Env::new(opts);
    env.provider("a", &mock, ProviderOptions::default(), &[("m", "fail400")]);
    let key = env.key();
    for i in 1..=3 {
        let e = env
            .hub
            .chat(Caller::Key(key.clone()), req("m", "x"), ctx())
            .await
            .unwrap_err();
        assert_eq!(e.http_status(), 400);
        assert_eq!(
            mock.requests(),
            i,
            "a 400 caused by one request must not put the provider in cooldown"
        );
    }
    assert_eq!(env.rows().len(), 3);
}

#[tokio::test]
async fn upstream_faults_cool_a_provider_down() {
    // 429, 5xx and 401/403 are the provider's problem: with a threshold of one failure, the
    // second request finds the provider cooling and never reaches it.
    for word in ["fail429", "fail503", "fail401"] {
        let mock = MockUpstream::start().await.unwrap();
        let mut opts = fast_options();
        opts.retry.max_attempts = 1;
        opts.retry.cooldown_failures = 1;
        let env = Env::new(opts);
        env.provider("a", &mock, ProviderOptions::default(), &[("m", word)]);
        let key = env.key();
        let first = env
            .hub
            .chat(Caller::Key(key.clone()), req("m", "x"), ctx())
            .await
            .unwrap_err();
        let second = env
            .hub
            .chat(Caller::Key(key.clone()), req("m", "x"), ctx())
            .await
            .unwrap_err();
        assert_eq!(mock.requests(), 1, "{word}");
        assert_eq!(second.kind(), ErrorKind::Unavailable, "{word}");
        if word == "fail401" {
            assert_eq!(first.http_status(), 502);
            assert_eq!(first.openai_code(), "upstream_auth_failed");
        }
    }
}

#[tokio::test]
async fn first_byte_timeout() {
    let mock = MockUpstream::start().await.unwrap();
    let mut opts = fast_options();
    opts.retry.max_attempts = 1;
    let env = Env::new(opts);
    let o = ProviderOptions {
        first_byte_timeout_ms: Some(300),
        ..ProviderOptions::default()
    };
    env.provider("a", &mock, o, &[("m", "stall")]);
    let key = env.key();
    let t = Instant::now();
    let e = env
        .hub
        .chat(Caller::Key(key.clone()), req("m", "x"), ctx())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout);
    assert!(t.elapsed() < Duration::from_secs(5));
    let r = sreq("m", "x");
    let e = env
        .hub
        .chat_stream(Caller::Key(key), r, ctx())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout);
    let rows = env.rows();
    assert_eq!(rows.len(), 2);
    assert!(rows
        .iter()
        .all(|r| r.error_kind.as_deref() == Some("timeout")));
}

#[tokio::test]
async fn idle_timeout_mid_stream_keeps_what_was_produced() {
    let mock = MockUpstream::start().await.unwrap();
    let env = Env::new(fast_options());
    let o = ProviderOptions {
        idle_timeout_ms: Some(300),
        ..ProviderOptions::default()
    };
    env.provider("a", &mock, o, &[("m", "chunks5-stallmid")]);
    let key = env.key();
    let r = sreq("m", "x");
    let t = Instant::now();
    let s = env
        .hub
        .chat_stream(Caller::Key(key), r, ctx())
        .await
        .unwrap();
    let (text, _, err, _) = drain(s).await;
    assert_eq!(err.map(|e| e.kind()), Some(ErrorKind::Timeout));
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(text, "tok0 ");
    eventually("the upstream request is dropped", || mock.cancelled() == 1).await;
    let rows = env.rows();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].error_kind.as_deref(), Some("timeout"));
    assert_eq!(rows[0].usage_source, "estimate");
    assert_eq!(rows[0].completion_tokens, 2, "'tok0 ' is two tokens");
}

#[tokio::test]
async fn mid_stream_error_and_malformed_chunk_end_with_typed_errors() {
    let (_mock, env, key) = setup(
        fast_options(),
        &[
            ("e", "chunks4-miderror"),
            ("b", "chunks4-malformed"),
            ("c", "chunks4-closemid"),
        ],
    )
    .await;
    for (model, kind) in [
        ("e", ErrorKind::Upstream),
        ("b", ErrorKind::Upstream),
        ("c", ErrorKind::Transport),
    ] {
        let r = sreq(model, "x");
        let s = env
            .hub
            .chat_stream(Caller::Key(key.clone()), r, ctx())
            .await
            .unwrap();
        let (text, _, err, mut s) = drain(s).await;
        let err = err.unwrap_or_else(|| panic!("{model}: stream ended without an error"));
        assert_eq!(err.kind(), kind, "{model}: {err}");
        assert!(text.starts_with("tok0 "), "{model}: {text:?}");
        // Exactly one end: nothing after the error.
        assert!(s.next().await.is_none());
    }
    let rows = env.rows();
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert!(
        rows.iter()
            .all(|r| r.status >= 500 && r.completion_tokens > 0),
        "{rows:?}"
    );
}

#[tokio::test]
async fn dropping_a_stream_cancels_upstream_and_records_once() {
    let (mock, env, key) = setup(fast_options(), &[("m", "chunks100-delay20")]).await;
    let r = sreq("m", "x");
    let mut s = env
        .hub
        .chat_stream(Caller::Key(key), r, ctx())
        .await
        .unwrap();
    let mut got = 0;
    while got < 3 {
        let c = s.next().await.unwrap().unwrap();
        if c.delta().is_some_and(|d| !d.is_empty()) {
            got += 1;
        }
    }
    drop(s);
    eventually("the mock sees the cancel", || mock.cancelled() == 1).await;
    assert_eq!(mock.completed(), 0);
    let mut rows = Vec::new();
    for _ in 0..100 {
        rows = env.rows();
        if !rows.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].status, 499);
    assert!(rows[0].completion_tokens >= 3, "{rows:?}");
}

#[tokio::test]
async fn keys_scope_expiry_disable_and_limits() {
    let (mock, env, _) = setup(fast_options(), &[("m1", "m1"), ("m2", "m2")]).await;
    let b = env.provider("b", &mock, ProviderOptions::default(), &[("m3", "m3")]);
    let reg = env.hub.registry();
    let mk = |k: NewKey| reg.create_key(k).unwrap();
    let scoped = mk(NewKey {
        name: "scoped".into(),
        models: vec!["m1".into()],
        ..NewKey::default()
    });
    let expired = mk(NewKey {
        name: "old".into(),
        expires_at: Some(1),
        ..NewKey::default()
    });
    let limited = mk(NewKey {
        name: "rpm".into(),
        rpm: Some(2),
        ..NewKey::default()
    });
    let other = mk(NewKey {
        name: "other".into(),
        provider_ids: vec![b],
        ..NewKey::default()
    });

    // Only the hash and prefix are kept.
    assert!(scoped.key.starts_with(&scoped.record.prefix));
    assert!(scoped.key.len() > 40);

    let chat = |k: &str, m: &str| env.hub.chat(Caller::Key(k.to_owned()), req(m, "x"), ctx());
    assert!(chat(&scoped.key, "m1").await.is_ok());
    let refused = [
        (scoped.key.as_str(), "m2", ErrorKind::PermissionDenied),
        (other.key.as_str(), "m1", ErrorKind::PermissionDenied),
        (scoped.key.as_str(), "nope", ErrorKind::NotFound),
        (expired.key.as_str(), "m1", ErrorKind::Authentication),
        ("nx-forged", "m1", ErrorKind::Authentication),
    ];
    for (k, m, kind) in refused {
        let e = chat(k, m).await.unwrap_err();
        assert_eq!(e.kind(), kind, "{m}: {e}");
    }
    reg.update_key(
        scoped.record.id,
        nexus::records::KeyPatch {
            enabled: Some(false),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        chat(&scoped.key, "m1").await.unwrap_err().kind(),
        ErrorKind::Authentication
    );

    assert!(chat(&limited.key, "m1").await.is_ok());
    assert!(chat(&limited.key, "m1").await.is_ok());
    let e = chat(&limited.key, "m1").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::RateLimited);
    assert!(e
        .retry_after()
        .is_some_and(|d| d <= Duration::from_secs(60)));
    // Three reached the upstream, yet each of the ten attempts, refused or not, left one row.
    assert_eq!(mock.requests(), 3);
    assert_eq!(env.rows().len(), 10);
}

#[tokio::test]
async fn legacy_personalized_key_keeps_working() {
    let mock = MockUpstream::start().await.unwrap();
    let env = Env::new(fast_options());
    env.add(
        nexus::records::NewProvider {
            name: "legacy".into(),
            base_url: mock.base_url(),
            api_key: "sk-up".into(),
            personalized_key: Some("my-old-personal-key-123".into()),
            ..Default::default()
        },
        &[("m", "m")],
    );
    let r = env
        .hub
        .chat(
            Caller::Key("my-old-personal-key-123".into()),
            req("m", "still here"),
            ctx(),
        )
        .await
        .unwrap();
    assert_eq!(r.completion.content(), Some("still here"));
}

#[tokio::test]
async fn response_cache_serves_identical_requests() {
    let mock = MockUpstream::start().await.unwrap();
    let mut opts = fast_options();
    opts.cache = Some(nexus::resilience::CacheConfig {
        ttl: Duration::from_secs(60),
        max_entries: 16,
    });
    let env = Env::new(opts);
    env.provider("a", &mock, ProviderOptions::default(), &[("m", "m")]);
    let key = env.key();
    let a = env
        .hub
        .chat(Caller::Key(key.clone()), req("m", "same"), ctx())
        .await
        .unwrap();
    let b = env
        .hub
        .chat(Caller::Key(key.clone()), req("m", "same"), ctx())
        .await
        .unwrap();
    let c = env
        .hub
        .chat(Caller::Key(key), req("m", "other"), ctx())
        .await
        .unwrap();
    assert!(!a.cached && b.cached && !c.cached);
    assert_eq!(a.completion.content(), b.completion.content());
    assert_eq!(mock.requests(), 2);
    assert_eq!(env.rows().len(), 3);
}

/// An upstream that writes its SSE body one byte at a time, so events and UTF-8 sequences are
/// split across network reads, with comments and a keep-alive in between.
#[tokio::test]
async fn sse_split_across_reads_and_utf8_sequences() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let text = ["héllo ", "世界 ", "🚀", " done"];
    let mut body = String::from(": comment\n\n");
    for t in text {
        body.push_str(&format!(
            "data: {}\n\n",
            json!({"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m",
                   "choices": [{"index": 0, "delta": {"content": t}, "finish_reason": null}]})
        ));
        body.push_str(":\n\n");
    }
    body.push_str("data: [DONE]\n\n");
    let server = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 65536];
        let mut head = Vec::new();
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = sock.read(&mut buf).await.unwrap();
            assert!(n > 0);
            head.extend_from_slice(&buf[..n]);
        }
        sock.write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n",
        )
        .await
        .unwrap();
        for b in body.as_bytes() {
            sock.write_all(&[*b]).await.unwrap();
            sock.flush().await.unwrap();
            tokio::task::yield_now().await;
        }
    });
    let env = Env::new(fast_options());
    env.add(
        nexus::records::NewProvider {
            name: "bytewise".into(),
            base_url: format!("http://{addr}/v1"),
            api_key: "k".into(),
            options: ProviderOptions {
                request_usage: Some(false),
                ..Default::default()
            },
            ..Default::default()
        },
        &[("m", "m")],
    );
    let r = sreq("m", "x");
    let s = env
        .hub
        .chat_stream(Caller::Admin { provider_id: None }, r, ctx())
        .await
        .unwrap();
    let (got, chunks, err, _) = drain(s).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(got, text.concat());
    assert_eq!(chunks.len(), 4);
    server.await.unwrap();
    assert_eq!(env.rows().len(), 1);
}

#[tokio::test]
async fn upstream_json_to_a_stream_request_is_an_error_not_silence() {
    let (_mock, env, _) = setup(fast_options(), &[("m", "json")]).await;
    let r = sreq("m", "x");
    let res = env
        .hub
        .chat_stream(Caller::Admin { provider_id: None }, r, ctx())
        .await;
    match res {
        Err(e) => assert_eq!(e.kind(), ErrorKind::Upstream, "{e}"),
        Ok(s) => {
            let (_, _, err, _) = drain(s).await;
            assert_eq!(err.map(|e| e.kind()), Some(ErrorKind::Upstream));
        }
    }
    assert_eq!(env.rows().len(), 1);
}

#[tokio::test]
async fn concurrent_requests_each_write_one_row() {
    let (_mock, env, key) = setup(fast_options(), &[("m", "chunks3")]).await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let hub = env.hub.clone();
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            let mut r = req("m", "x");
            r.stream = Some(i % 2 == 0);
            if i % 2 == 0 {
                let s = hub.chat_stream(Caller::Key(key), r, ctx()).await.unwrap();
                let v: Vec<_> = s.collect().await;
                assert!(v.iter().all(Result::is_ok));
            } else {
                hub.chat(Caller::Key(key), r, ctx()).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let rows = env.rows();
    assert_eq!(rows.len(), 40);
    let mut ids: Vec<_> = rows.iter().map(|r| r.request_id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 40);
    assert_eq!(rows.iter().map(|r| r.completion_tokens).sum::<i64>(), 120);
}
