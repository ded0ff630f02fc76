//! Regression tests for the hub in front of many tenants: what an upstream can make the hub do
//! (redirects, oversized answers, leaked detail), what one tenant can do to others (cooldowns,
//! the cache, limits), and numbers that are always right (stream usage, `n > 1`, reasoning,
//! read-your-writes).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{fast_options, Env};
use nexus::openai::ChatRequest;
use nexus::records::{NewKey, NewProvider, ProviderOptions};
use nexus::testing::MockUpstream;
use nexus::{Caller, ErrorKind, RequestContext};
use serde_json::{json, Value};

fn req(model: &str, text: &str) -> ChatRequest {
    ChatRequest::user(model, text)
}

fn ctx() -> RequestContext {
    RequestContext::default()
}

fn one_attempt() -> nexus::HubOptions {
    let mut o = fast_options();
    o.retry.max_attempts = 1;
    o
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
            Err(e) => return (text, chunks, Some(e)),
        }
    }
    (text, chunks, None)
}

#[tokio::test]
async fn upstream_redirects_are_not_followed() {
    for status in [301, 302, 303, 307, 308] {
        let mock = MockUpstream::start().await.unwrap();
        let env = Env::new(one_attempt());
        let model = format!("redirect{status}");
        env.provider("a", &mock, ProviderOptions::default(), &[("m", &model)]);
        let key = env.key();
        let e = env
            .hub
            .chat(Caller::Key(key.clone()), req("m", "x"), ctx())
            .await
            .unwrap_err();
        assert_eq!(e.http_status(), 502, "{status}: {e}");
        let body = e.to_openai_json().to_string();
        assert!(!body.contains("MOCK-INTERNAL-SECRET"), "{body}");
        let mut s = req("m", "x");
        s.stream = Some(true);
        assert!(env
            .hub
            .chat_stream(Caller::Key(key), s, ctx())
            .await
            .is_err());
        assert_eq!(mock.secret_hits(), 0, "the hub followed a {status}");
        assert!(
            mock.last_headers().iter().all(|(k, _)| k != "referer"),
            "a Referer was sent"
        );
    }
}

#[tokio::test]
async fn a_non_completion_answer_is_never_relayed() {
    let mock = MockUpstream::start().await.unwrap();
    let env = Env::new(one_attempt());
    env.provider("a", &mock, ProviderOptions::default(), &[("m", "notchat")]);
    let e = env
        .hub
        .chat(Caller::Key(env.key()), req("m", "x"), ctx())
        .await
        .unwrap_err();
    assert_eq!(e.http_status(), 502);
}

#[tokio::test]
async fn upstream_detail_never_reaches_the_tenant() {
    let mock = MockUpstream::start().await.unwrap();
    let env = Env::new(one_attempt());
    env.provider(
        "acme-internal",
        &mock,
        ProviderOptions::default(),
        &[("m", "fail503"), ("bad", "fail400")],
    );
    let key = env.key();
    let e = env
        .hub
        .chat(Caller::Key(key.clone()), req("m", "x"), ctx())
        .await
        .unwrap_err();
    let body = e.to_openai_json_for(Some("req-42")).to_string();
    for leak in [
        "sk-mock",
        "10.9.8.7",
        "acme-internal",
        "mock failure",
        "127.0.0.1",
    ] {
        assert!(!body.contains(leak), "{leak} leaked: {body}");
    }
    assert!(
        body.contains("upstream returned 503") && body.contains("req-42"),
        "{body}"
    );
    // A 400 the caller caused keeps its status and the reason, scrubbed.
    let e = env
        .hub
        .chat(Caller::Key(key.clone()), req("bad", "x"), ctx())
        .await
        .unwrap_err();
    assert_eq!(e.http_status(), 400);
    let m = e.public_message();
    assert!(
        m.contains("mock failure 400") && !m.contains("sk-mock") && !m.contains("10.9.8.7"),
        "{m}"
    );
    // A connection error names no host or port.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    env.add(
        NewProvider {
            name: "down".into(),
            base_url: format!("http://127.0.0.1:{port}"),
            api_key: "sk-x".into(),
            ..NewProvider::default()
        },
        &[("down", "down")],
    );
    let e = env
        .hub
        .chat(Caller::Key(key), req("down", "x"), ctx())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Transport);
    let body = e.to_openai_json().to_string();
    assert!(
        !body.contains(&port.to_string()) && !body.contains("127.0.0.1"),
        "{body}"
    );
}

#[tokio::test]
async fn upstream_auth_failure_fails_over_and_cools_the_provider() {
    let bad = MockUpstream::start().await.unwrap();
    let good = MockUpstream::start().await.unwrap();
    let mut opts = fast_options();
    opts.retry.cooldown_failures = 1;
    let env = Env::new(opts);
    let a = env.provider("a", &bad, ProviderOptions::default(), &[("m", "fail401")]);
    let b = env.provider(
        "b",
        &good,
        ProviderOptions {
            weight: Some(0),
            ..ProviderOptions::default()
        },
        &[("m", "m")],
    );
    let key = env.key();
    // Whichever comes first, every request is answered by b; a is tried at most once (a 401 is
    // not retried on the same provider) and then cools down.
    for _ in 0..4 {
        let r = env
            .hub
            .chat(Caller::Key(key.clone()), req("m", "hi"), ctx())
            .await
            .unwrap();
        assert_eq!(r.provider_id, b);
    }
    assert_eq!(bad.requests(), 1);
    assert!(env.rows().iter().all(|r| r.status == 200));
    let _ = a;
}

#[tokio::test]
async fn stream_usage_is_sent_once_even_when_the_upstream_ignores_include_usage() {
    for (model, source) in [("nousage", "estimate"), ("m", "upstream")] {
        let mock = MockUpstream::start().await.unwrap();
        let env = Env::new(fast_options());
        env.provider("a", &mock, ProviderOptions::default(), &[("m", model)]);
        let mut r = req("m", "one two three four");
        r.stream = Some(true);
        r.stream_options = Some(json!({"include_usage": true}));
        let s = env
            .hub
            .chat_stream(Caller::Key(env.key()), r, ctx())
            .await
            .unwrap();
        let (text, chunks, err) = drain(s).await;
        assert!(err.is_none());
        assert_eq!(text, "one two three four");
        let usage: Vec<&Value> = chunks
            .iter()
            .filter_map(|c| c.get("usage"))
            .filter(|u| !u.is_null())
            .collect();
        assert_eq!(usage.len(), 1, "{model}: {chunks:?}");
        let last = chunks.last().unwrap();
        assert_eq!(
            last["choices"],
            json!([]),
            "{model}: the usage chunk comes last"
        );
        assert_eq!(last["object"], "chat.completion.chunk");
        assert_eq!(last["id"], chunks[0]["id"]);
        let rows = env.rows();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].usage_source, source);
        assert_eq!(
            rows[0].prompt_tokens,
            usage[0]["prompt_tokens"].as_i64().unwrap()
        );
        assert_eq!(
            rows[0].completion_tokens,
            usage[0]["completion_tokens"].as_i64().unwrap()
        );
        assert!(rows[0].completion_tokens > 0);
    }
}

#[tokio::test]
async fn estimates_count_every_choice_and_reasoning() {
    let mock = MockUpstream::start().await.unwrap();
    let env = Env::new(fast_options());
    env.provider(
        "a",
        &mock,
        ProviderOptions {
            request_usage: Some(false),
            ..ProviderOptions::default()
        },
        &[("m", "nousage"), ("r", "nousage-reasoning")],
    );
    let key = env.key();
    let text = "alpha beta gamma delta epsilon";
    let mut counts = vec![];
    for (model, n, stream) in [
        ("m", 1, false),
        ("m", 3, false),
        ("m", 3, true),
        ("r", 1, false),
        ("r", 1, true),
    ] {
        let mut r = req(model, text);
        r.extra.insert("n".into(), n.into());
        if stream {
            r.stream = Some(true);
            let s = env
                .hub
                .chat_stream(Caller::Key(key.clone()), r, ctx())
                .await
                .unwrap();
            let (_, _, err) = drain(s).await;
            assert!(err.is_none());
        } else {
            env.hub
                .chat(Caller::Key(key.clone()), r, ctx())
                .await
                .unwrap();
        }
        counts.push(env.rows().last().unwrap().completion_tokens);
    }
    let one = counts[0];
    assert!(one > 0);
    assert_eq!(counts[1], 3 * one, "n=3 non-stream: {counts:?}");
    assert_eq!(counts[2], 3 * one, "n=3 stream: {counts:?}");
    assert!(
        counts[3] > one && counts[4] > one,
        "reasoning counts: {counts:?}"
    );
    assert!(env.rows().iter().all(|r| r.usage_source == "estimate"));
}

#[tokio::test]
async fn stats_read_their_own_writes() {
    let mock = MockUpstream::start().await.unwrap();
    let mut opts = fast_options();
    // A writer that would otherwise sit on the row for a minute.
    opts.stats.flush_interval = Duration::from_secs(60);
    let env = Env::new(opts);
    env.provider("a", &mock, ProviderOptions::default(), &[("m", "m")]);
    let r = env
        .hub
        .chat(Caller::Key(env.key()), req("m", "hello"), ctx())
        .await
        .unwrap();
    let s = env.hub.summary().unwrap();
    assert_eq!(s.requests, 1);
    let c = env.hub.conversation(&r.conversation_id).unwrap();
    assert!(!c.messages.is_empty());
}

#[tokio::test]
async fn the_cache_is_scoped_to_the_key_and_its_providers() {
    let ma = MockUpstream::start().await.unwrap();
    let mb = MockUpstream::start().await.unwrap();
    let mut opts = fast_options();
    opts.cache = Some(nexus::resilience::CacheConfig {
        ttl: Duration::from_secs(60),
        max_entries: 16,
    });
    let env = Env::new(opts);
    let a = env.provider("a", &ma, ProviderOptions::default(), &[("m", "m")]);
    let b = env.provider("b", &mb, ProviderOptions::default(), &[("m", "m")]);
    let reg = env.hub.registry();
    let key_for = |pid: i64| {
        reg.create_key(NewKey {
            name: format!("only {pid}"),
            provider_ids: vec![pid],
            ..NewKey::default()
        })
        .unwrap()
        .key
    };
    let (ka, kb) = (key_for(a), key_for(b));
    let first = env
        .hub
        .chat(Caller::Key(ka.clone()), req("m", "same"), ctx())
        .await
        .unwrap();
    let other = env
        .hub
        .chat(Caller::Key(kb), req("m", "same"), ctx())
        .await
        .unwrap();
    assert_eq!((first.provider_id, other.provider_id), (a, b));
    assert!(
        !other.cached,
        "a key got an answer cached from a provider outside its scope"
    );
    let again = env
        .hub
        .chat(Caller::Key(ka), req("m", "same"), ctx())
        .await
        .unwrap();
    assert!(again.cached);
    assert_eq!(again.usage, first.usage);
    let rows = env.rows();
    let hit = rows.last().unwrap();
    assert_eq!(hit.usage_source, "cache");
    assert_eq!(hit.prompt_tokens as u64, first.usage.prompt_tokens);
    assert_eq!(hit.completion_tokens as u64, first.usage.completion_tokens);
    // The provider test asks the provider, not the cache.
    let before = ma.requests();
    env.hub.test_provider(a).await.unwrap();
    assert!(ma.requests() > before);
}

#[tokio::test]
async fn the_token_limit_reserves_before_the_call() {
    let mock = MockUpstream::start().await.unwrap();
    let env = Env::new(fast_options());
    env.provider(
        "a",
        &mock,
        ProviderOptions::default(),
        &[("m", "delay100-chunks3")],
    );
    let key = env
        .hub
        .registry()
        .create_key(NewKey {
            name: "tpm".into(),
            tpm: Some(1000),
            ..NewKey::default()
        })
        .unwrap()
        .key;
    // Each reserves its prompt plus max_tokens 400: two fit in 1000, a third must wait, however
    // many run at once.
    let calls = (0..5).map(|_| {
        let mut r = req("m", "hello");
        r.extra.insert("max_tokens".into(), 400.into());
        env.hub.chat(Caller::Key(key.clone()), r, ctx())
    });
    let results = futures_util::future::join_all(calls).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 2, "{results:?}");
    assert!(results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .all(|e| e.kind() == ErrorKind::RateLimited));
    // Settled to the real counts (a few tokens each), the window has room again.
    let mut r = req("m", "hello");
    r.extra.insert("max_tokens".into(), 400.into());
    assert!(env.hub.chat(Caller::Key(key), r, ctx()).await.is_ok());
}

#[tokio::test]
async fn oversized_stream_events_end_the_stream() {
    let mock = MockUpstream::start().await.unwrap();
    let mut opts = one_attempt();
    opts.upstream_limits.max_event_bytes = 64 * 1024;
    let env = Env::new(opts);
    env.provider(
        "a",
        &mock,
        ProviderOptions::default(),
        &[("m", "bigevent256"), ("ok", "bigevent16")],
    );
    let key = env.key();
    let mut r = req("ok", "x");
    r.stream = Some(true);
    let s = env
        .hub
        .chat_stream(Caller::Key(key.clone()), r, ctx())
        .await
        .unwrap();
    assert!(drain(s).await.2.is_none());
    let mut r = req("m", "x");
    r.stream = Some(true);
    match env.hub.chat_stream(Caller::Key(key), r, ctx()).await {
        Err(e) => assert_eq!(e.http_status(), 502),
        Ok(s) => assert!(drain(s).await.2.is_some()),
    }
}

#[tokio::test]
async fn library_requests_obey_the_message_limit() {
    let mock = MockUpstream::start().await.unwrap();
    let mut opts = fast_options();
    opts.request_limits.max_messages = 5;
    let env = Env::new(opts);
    env.provider("a", &mock, ProviderOptions::default(), &[("m", "m")]);
    let mut r = req("m", "x");
    r.messages = vec![json!({"role": "user", "content": "x"}); 6];
    let e = env
        .hub
        .chat(Caller::Key(env.key()), r, ctx())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidRequest);
    assert_eq!(mock.requests(), 0);
}

#[tokio::test]
async fn rpm_is_checked_by_admit_before_any_body() {
    let mock = MockUpstream::start().await.unwrap();
    let env = Env::new(fast_options());
    env.provider("a", &mock, ProviderOptions::default(), &[("m", "m")]);
    let key = env
        .hub
        .registry()
        .create_key(NewKey {
            name: "rpm".into(),
            rpm: Some(2),
            ..NewKey::default()
        })
        .unwrap()
        .key;
    let a = env.hub.admit(&key).unwrap();
    env.hub
        .chat(Caller::Admitted(a), req("m", "x"), ctx())
        .await
        .unwrap();
    env.hub.admit(&key).unwrap();
    let e = env.hub.admit(&key).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::RateLimited);
    // Admitted callers are not counted twice: one request reached the upstream, two admissions
    // passed, the third was refused and left a row.
    assert_eq!(mock.requests(), 1);
    assert_eq!(env.rows().len(), 2);
}

#[tokio::test]
async fn a_key_holds_at_most_max_concurrent_requests() {
    let mock = MockUpstream::start().await.unwrap();
    let env = Env::new(fast_options());
    env.provider(
        "a",
        &mock,
        ProviderOptions::default(),
        &[("m", "chunks5-delay300")],
    );
    let reg = env.hub.registry();
    assert_eq!(
        reg.create_key(NewKey {
            name: "zero".into(),
            max_concurrent: Some(0),
            ..NewKey::default()
        })
        .unwrap_err()
        .kind(),
        ErrorKind::InvalidRequest
    );
    let key = reg
        .create_key(NewKey {
            name: "two at once".into(),
            max_concurrent: Some(2),
            ..NewKey::default()
        })
        .unwrap()
        .key;
    let stream = || {
        let mut r = req("m", "x");
        r.stream = Some(true);
        env.hub.chat_stream(Caller::Key(key.clone()), r, ctx())
    };
    let a = stream().await.unwrap();
    let b = stream().await.unwrap();
    let e = stream().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::RateLimited);
    assert!(e.to_string().contains("in flight"), "{e}");
    // A stream gives its slot back when it ends (here: dropped by its caller).
    drop(a);
    let c = stream().await.unwrap();
    assert!(drain(b).await.2.is_none());
    assert!(drain(c).await.2.is_none());
    assert!(stream().await.is_ok());
}
