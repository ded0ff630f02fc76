//! The OpenAI-compatible API over a real socket: non-stream and SSE relays, headers, limits, and
//! every error path answering an OpenAI error body with a 4xx/5xx (never a panic or a bare 500).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use nexus::records::NewKey;
use nexus_server::ServerConfig;
use serde_json::{json, Value};

#[tokio::test]
async fn non_stream_answers_with_headers() {
    let s = TestServer::start().await;
    let r = s.chat(&s.key, &body("gpt-4o", "hello there world")).await;
    assert_eq!(r.status(), 200);
    assert!(header(&r, "content-type")
        .unwrap()
        .starts_with("application/json"));
    let conv = header(&r, "x-conversation-id").expect("generated conversation id");
    assert!(!conv.is_empty());
    assert!(header(&r, "x-request-id").is_some());
    let overhead: f64 = header(&r, "x-nexus-overhead-ms")
        .expect("overhead header")
        .parse()
        .expect("overhead is a number");
    assert!(overhead >= 0.0);
    // The mock's rate-limit header is passed back.
    assert_eq!(
        header(&r, "x-ratelimit-remaining-requests").as_deref(),
        Some("99")
    );
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"], "hello there world");
    assert_eq!(v["usage"]["prompt_tokens"], 10);
    // Both paths are served; stream defaults to false.
    let r = s
        .http
        .post(s.url("/chat/completions"))
        .bearer_auth(&s.key)
        .json(&body("gpt-4o", "again"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "again");
    assert_ne!(s.mock.last_request().unwrap()["stream"], true);
}

#[tokio::test]
async fn conversation_id_goes_in_and_out() {
    let s = TestServer::start().await;
    let r = s
        .http
        .post(s.url("/v1/chat/completions"))
        .bearer_auth(&s.key)
        .header("X-Conversation-Id", "conv-abc-123")
        .json(&body("gpt-4o", "one"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "x-conversation-id").as_deref(),
        Some("conv-abc-123")
    );
    let r = s
        .http
        .post(s.url("/v1/chat/completions"))
        .bearer_auth(&s.key)
        .header("X-Conversation-Id", "conv-abc-123")
        .json(&json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "two"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&r, "x-conversation-id").as_deref(),
        Some("conv-abc-123")
    );
    sse_events(r).await;
    // Two generated ids differ.
    let a = header(
        &s.chat(&s.key, &body("gpt-4o", "x")).await,
        "x-conversation-id",
    )
    .unwrap();
    let b = header(
        &s.chat(&s.key, &body("gpt-4o", "x")).await,
        "x-conversation-id",
    )
    .unwrap();
    assert_ne!(a, b);
    // A bad id is a 400, not a 500.
    let r = s
        .http
        .post(s.url("/v1/chat/completions"))
        .bearer_auth(&s.key)
        .header("X-Conversation-Id", "x".repeat(200))
        .json(&body("gpt-4o", "x"))
        .send()
        .await
        .unwrap();
    expect_error(r, 400, Some("invalid_request")).await;
    s.hub.flush().unwrap();
    let c = s.hub.conversation("conv-abc-123").unwrap();
    assert_eq!(c.rounds, 2);
}

#[tokio::test]
async fn stream_relays_every_event_once() {
    let s = TestServer::start().await;
    let r = s
        .chat(
            &s.key,
            &json!({"model": "m-x-chunks20", "stream": true, "messages": [{"role": "user", "content": "go"}]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert!(header(&r, "content-type")
        .unwrap()
        .starts_with("text/event-stream"));
    assert_eq!(header(&r, "cache-control").as_deref(), Some("no-cache"));
    assert_eq!(header(&r, "x-accel-buffering").as_deref(), Some("no"));
    assert!(header(&r, "x-conversation-id").is_some());
    let events = sse_events(r).await;
    let cs = chunks(&events);
    // Role chunk, 20 content chunks, the finish chunk; no usage chunk (not asked for).
    assert_eq!(cs.len(), 22, "{events:?}");
    let expected: String = (0..20).map(|i| format!("tok{i} ")).collect();
    assert_eq!(text_of(&cs), expected);
    assert!(
        cs.iter().all(|c| c.get("usage").is_none_or(Value::is_null)),
        "{events:?}"
    );
    assert_eq!(cs.last().unwrap()["choices"][0]["finish_reason"], "stop");
    assert_eq!(s.mock.completed(), 1);
}

#[tokio::test]
async fn stream_usage_only_when_asked() {
    let s = TestServer::start().await;
    let r = s
        .chat(
            &s.key,
            &json!({"model": "gpt-4o", "stream": true, "stream_options": {"include_usage": true},
                    "messages": [{"role": "user", "content": "a b c"}]}),
        )
        .await;
    let cs = chunks(&sse_events(r).await);
    let usage: Vec<&Value> = cs
        .iter()
        .filter(|c| c.get("usage").is_some_and(|u| !u.is_null()))
        .collect();
    assert_eq!(usage.len(), 1, "{cs:?}");
    assert_eq!(usage[0]["usage"]["completion_tokens"], 3);
    assert_eq!(usage[0]["choices"], json!([]));
    assert_eq!(cs.last().unwrap(), usage[0], "usage chunk comes last");
    assert_eq!(text_of(&cs), "a b c");

    let r = s
        .chat(
            &s.key,
            &json!({"model": "gpt-4o", "stream": true, "stream_options": {"include_usage": false},
                    "messages": [{"role": "user", "content": "a b c"}]}),
        )
        .await;
    let cs = chunks(&sse_events(r).await);
    assert!(
        cs.iter().all(|c| c.get("usage").is_none_or(Value::is_null)),
        "{cs:?}"
    );
    // The hub still counted usage for stats.
    s.hub.flush().unwrap();
    let sum = s.hub.summary().unwrap();
    assert_eq!(sum.requests, 2);
    assert!(sum.completion_tokens >= 6, "{sum:?}");
}

#[tokio::test]
async fn tools_and_extra_fields_pass_through() {
    let s = TestServer::start().await;
    let tools = json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    let req = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "weather?"}],
        "tools": tools, "tool_choice": "auto", "temperature": 0.25, "seed": 7,
        "response_format": {"type": "text"}, "x_vendor_flag": {"nested": [1, 2]}});
    let r = s.chat(&s.key, &req).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["mock_saw_tools"], tools);
    let last = s.mock.last_request().unwrap();
    for f in [
        "tools",
        "tool_choice",
        "temperature",
        "seed",
        "response_format",
        "x_vendor_flag",
        "messages",
    ] {
        assert_eq!(last[f], req[f], "field {f}");
    }
    // The upstream gets the upstream key, never the client's.
    let headers = s.mock.last_headers();
    let auth = headers
        .iter()
        .find(|(k, _)| k == "authorization")
        .map(|(_, v)| v.clone());
    assert_eq!(auth.as_deref(), Some(&*format!("Bearer {UPSTREAM_KEY}")));
    // Streamed too.
    let mut sreq = req.clone();
    sreq["stream"] = json!(true);
    sse_events(s.chat(&s.key, &sreq).await).await;
    let last = s.mock.last_request().unwrap();
    assert_eq!(last["tools"], tools);
    assert_eq!(last["x_vendor_flag"], req["x_vendor_flag"]);
}

#[tokio::test]
async fn mid_stream_failure_is_in_band_then_done() {
    let s = TestServer::start().await;
    let r = s
        .chat(
            &s.key,
            &json!({"model": "m-x-miderror", "stream": true, "messages": [{"role": "user", "content": "one two three"}]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let events = sse_events(r).await;
    let cs = chunks(&events);
    let err = cs.last().unwrap();
    let e = err
        .get("error")
        .unwrap_or_else(|| panic!("last event is not an error: {events:?}"));
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert!(e["type"].is_string());
    assert!(e["code"].is_string());
    assert_eq!(cs.iter().filter(|c| c.get("error").is_some()).count(), 1);
    // The chunk before the error was relayed.
    assert_eq!(text_of(&cs), "one ");
    s.hub.flush().unwrap();
    assert_eq!(s.hub.summary().unwrap().errors, 1);
}

#[tokio::test]
async fn upstream_errors_map_to_openai_statuses() {
    let s = TestServer::start().await;
    let r = s.chat(&s.key, &body("b-x-fail500", "x")).await;
    expect_error(r, 502, Some("upstream_error")).await;
    let r = s.chat(&s.key, &body("b-x-fail400", "x")).await;
    let e = expect_error(r, 400, None).await;
    assert_eq!(e["type"], "upstream_error", "{e}");
    let r = s
        .chat(&s.key, &json!({"model": "b-x-fail500", "stream": true, "messages": [{"role": "user", "content": "x"}]}))
        .await;
    expect_error(r, 502, None).await;
    let r = s.chat(&s.key, &body("b-x-fail429", "x")).await;
    let ra = header(&r, "retry-after");
    expect_error(r, 429, None).await;
    assert!(ra.is_some(), "upstream 429 carries Retry-After");
    // The healthy provider is untouched.
    assert_eq!(s.chat(&s.key, &body("gpt-4o", "ok")).await.status(), 200);
}

#[tokio::test]
async fn per_key_rpm_limit_is_429_with_retry_after() {
    let s = TestServer::start().await;
    let key = s.new_key(NewKey {
        name: "limited".into(),
        rpm: Some(2),
        ..Default::default()
    });
    assert_eq!(s.chat(&key, &body("gpt-4o", "1")).await.status(), 200);
    assert_eq!(s.chat(&key, &body("gpt-4o", "2")).await.status(), 200);
    let r = s.chat(&key, &body("gpt-4o", "3")).await;
    let ra: u64 = header(&r, "retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!((1..=60).contains(&ra), "{ra}");
    let e = expect_error(r, 429, Some("rate_limit_exceeded")).await;
    assert_eq!(e["type"], "rate_limit_error");
    // Streams are limited too, before any SSE starts.
    let r = s
        .chat(&key, &json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "4"}]}))
        .await;
    expect_error(r, 429, Some("rate_limit_exceeded")).await;
    // Other keys are not.
    assert_eq!(s.chat(&s.key, &body("gpt-4o", "x")).await.status(), 200);
    assert_eq!(s.mock.requests(), 3);
}

#[tokio::test]
async fn auth_and_scope_errors() {
    let s = TestServer::start().await;
    // Absent key.
    let r = s
        .http
        .post(s.url("/v1/chat/completions"))
        .json(&body("gpt-4o", "x"))
        .send()
        .await
        .unwrap();
    expect_error(r, 401, Some("invalid_api_key")).await;
    // Bad key, wrong scheme, empty bearer.
    expect_error(
        s.chat("nx-not-a-real-key", &body("gpt-4o", "x")).await,
        401,
        Some("invalid_api_key"),
    )
    .await;
    for auth in ["Basic abc", "Bearer ", "Bearer"] {
        let r = s
            .http
            .post(s.url("/v1/chat/completions"))
            .header("authorization", auth)
            .json(&body("gpt-4o", "x"))
            .send()
            .await
            .unwrap();
        expect_error(r, 401, Some("invalid_api_key")).await;
    }
    // A bad key is a 401 whatever the body: malformed, invalid or oversize.
    for b in ["{", "", "[]"] {
        let r = s
            .http
            .post(s.url("/v1/chat/completions"))
            .bearer_auth("nx-not-a-real-key")
            .header("content-type", "application/json")
            .body(b)
            .send()
            .await
            .unwrap();
        expect_error(r, 401, Some("invalid_api_key")).await;
    }
    let r = s
        .chat(
            "nx-not-a-real-key",
            &json!({"model": "gpt-4o", "messages": []}),
        )
        .await;
    expect_error(r, 401, Some("invalid_api_key")).await;
    let huge =
        json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x".repeat(17 << 20)}]});
    let r = s.chat("nx-not-a-real-key", &huge).await;
    expect_error(r, 401, Some("invalid_api_key")).await;
    // The admin token is not a client key.
    expect_error(s.chat(ADMIN, &body("gpt-4o", "x")).await, 401, None).await;
    // Out of scope: by model and by provider.
    let scoped = s.new_key(NewKey {
        name: "only-gpt".into(),
        models: vec!["gpt-4o".into()],
        ..Default::default()
    });
    assert_eq!(s.chat(&scoped, &body("gpt-4o", "x")).await.status(), 200);
    let e = expect_error(
        s.chat(&scoped, &body("m-x-chunks20", "x")).await,
        403,
        Some("model_not_allowed"),
    )
    .await;
    assert_eq!(e["type"], "permission_error");
    let by_provider = s.new_key(NewKey {
        name: "bad-only".into(),
        provider_ids: vec![s.bad_provider_id],
        ..Default::default()
    });
    let r = s.chat(&by_provider, &body("gpt-4o", "x")).await;
    let status = r.status().as_u16();
    assert!(status == 403 || status == 404, "{status}");
    expect_error(r, status, None).await;
    // Unknown model.
    let e = expect_error(
        s.chat(&s.key, &body("no-such-model", "x")).await,
        404,
        Some("model_not_found"),
    )
    .await;
    assert_eq!(e["type"], "invalid_request_error");
    // Disabled and expired keys.
    let id = s
        .hub
        .registry()
        .keys()
        .unwrap()
        .into_iter()
        .find(|k| k.name == "only-gpt")
        .unwrap()
        .id;
    s.hub
        .registry()
        .update_key(
            id,
            nexus::records::KeyPatch {
                enabled: Some(false),
                ..Default::default()
            },
        )
        .unwrap();
    expect_error(
        s.chat(&scoped, &body("gpt-4o", "x")).await,
        401,
        Some("invalid_api_key"),
    )
    .await;
    let expired = s.new_key(NewKey {
        name: "old".into(),
        expires_at: Some(1_000_000),
        ..Default::default()
    });
    expect_error(
        s.chat(&expired, &body("gpt-4o", "x")).await,
        401,
        Some("invalid_api_key"),
    )
    .await;
    // /v1/models needs a key too.
    let r = s.http.get(s.url("/v1/models")).send().await.unwrap();
    expect_error(r, 401, Some("invalid_api_key")).await;
    let r = s
        .http
        .get(s.url("/v1/models"))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    expect_error(r, 401, Some("invalid_api_key")).await;
}

#[tokio::test]
async fn malformed_requests_are_4xx_openai_errors() {
    let s = TestServer::start_with(ServerConfig {
        body_limit: 4096,
        ..Default::default()
    })
    .await;
    let raw = |b: &'static str| {
        s.http
            .post(s.url("/v1/chat/completions"))
            .bearer_auth(&s.key)
            .header("content-type", "application/json")
            .body(b)
            .send()
    };
    for b in [
        "",
        "{",
        "not json",
        "[]",
        "null",
        "42",
        "{\"model\": \"gpt-4o\", \"messages\": [{\"role\": \"user\", \"content\": \"x\"}]",
        "\u{feff}{}",
    ] {
        let r = raw(b).await.unwrap();
        let st = r.status().as_u16();
        assert_eq!(st, 400, "body {b:?}");
        expect_error(r, 400, None).await;
    }
    let cases = [
        (
            json!({"messages": [{"role": "user", "content": "x"}]}),
            Some("model"),
        ),
        (json!({"model": "gpt-4o"}), Some("messages")),
        (json!({"model": "gpt-4o", "messages": []}), Some("messages")),
        (
            json!({"model": "", "messages": [{"role": "user", "content": "x"}]}),
            Some("model"),
        ),
        // Wrong types: the core names no `param` for these (serde does not say which field).
        (
            json!({"model": 5, "messages": [{"role": "user", "content": "x"}]}),
            None,
        ),
        (json!({"model": "gpt-4o", "messages": "hi"}), None),
        (
            json!({"model": "gpt-4o", "messages": [1, 2]}),
            Some("messages"),
        ),
        (
            json!({"model": "gpt-4o", "messages": [{"content": "no role"}]}),
            Some("messages"),
        ),
        (
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}),
            None,
        ),
        (
            json!({"model": null, "messages": [{"role": "user", "content": "x"}]}),
            None,
        ),
    ];
    for (b, param) in cases {
        let r = s.chat(&s.key, &b).await;
        let e = expect_error(r, 400, Some("invalid_request")).await;
        assert_eq!(e["type"], "invalid_request_error");
        if let Some(p) = param {
            assert_eq!(e["param"], p, "param for {b}: {e}");
        }
    }
    // Oversize body: 413 with an OpenAI body (with and without a content-length).
    let big =
        json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x".repeat(10_000)}]});
    let e = expect_error(s.chat(&s.key, &big).await, 413, Some("payload_too_large")).await;
    assert_eq!(e["type"], "invalid_request_error");
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![
        Ok(b"{\"model\":\"gpt-4o\",\"x\":\"".to_vec()),
        Ok(vec![b'a'; 8000]),
        Ok(b"\"}".to_vec()),
    ];
    let r = s
        .http
        .post(s.url("/v1/chat/completions"))
        .bearer_auth(&s.key)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    expect_error(r, 413, Some("payload_too_large")).await;
    // Nothing reached the upstream.
    assert_eq!(s.mock.requests(), 0);
    // Wrong method and unknown route: OpenAI bodies too.
    let r = s
        .http
        .get(s.url("/v1/chat/completions"))
        .bearer_auth(&s.key)
        .send()
        .await
        .unwrap();
    let st = r.status().as_u16();
    assert!(st == 404 || st == 405, "{st}");
    let r = s
        .http
        .get(s.url("/v1/nope"))
        .bearer_auth(&s.key)
        .send()
        .await
        .unwrap();
    expect_error(r, 404, Some("not_found")).await;
}

#[tokio::test]
async fn models_list_is_filtered_to_scope() {
    let s = TestServer::start().await;
    let r = s
        .http
        .get(s.url("/v1/models"))
        .bearer_auth(&s.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "list");
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    for m in MODELS.iter().chain(BAD_MODELS) {
        assert!(ids.contains(m), "{m} in {ids:?}");
    }
    let m = &v["data"][0];
    assert_eq!(m["object"], "model");
    assert!(m["created"].is_i64());
    assert!(m["owned_by"].is_string());
    assert!(m["permission"].is_array());
    assert!(m.get("root").is_some() && m.get("parent").is_some());

    let scoped = s.new_key(NewKey {
        name: "scoped".into(),
        provider_ids: vec![s.bad_provider_id],
        ..Default::default()
    });
    let v: Value = s
        .http
        .get(s.url("/models"))
        .bearer_auth(&scoped)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    ids.sort();
    let mut want = BAD_MODELS.to_vec();
    want.sort();
    assert_eq!(ids, want);
}

#[tokio::test]
async fn default_stream_setting_flips_the_default() {
    let s = TestServer::start_with(ServerConfig {
        default_stream: true,
        ..Default::default()
    })
    .await;
    let r = s.chat(&s.key, &body("gpt-4o", "streamed by default")).await;
    assert!(header(&r, "content-type")
        .unwrap()
        .starts_with("text/event-stream"));
    let cs = chunks(&sse_events(r).await);
    assert_eq!(text_of(&cs), "streamed by default");
    // An explicit false still wins.
    let r = s
        .chat(&s.key, &json!({"model": "gpt-4o", "stream": false, "messages": [{"role": "user", "content": "x"}]}))
        .await;
    assert!(header(&r, "content-type")
        .unwrap()
        .starts_with("application/json"));
}

#[tokio::test]
async fn client_disconnect_cancels_the_upstream() {
    let s = TestServer::start().await;
    let r = s
        .chat(&s.key, &json!({"model": "m-x-chunks50-delay50", "stream": true, "messages": [{"role": "user", "content": "x"}]}))
        .await;
    assert_eq!(r.status(), 200);
    let mut stream = r.bytes_stream();
    use futures_util::StreamExt;
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), stream.next())
        .await
        .unwrap();
    assert!(first.is_some());
    drop(stream);
    let mock = &s.mock;
    eventually("the mock to see the cancellation", || mock.cancelled() == 1).await;
    s.hub.flush().unwrap();
    assert_eq!(s.hub.summary().unwrap().requests, 1);
}

#[tokio::test]
async fn health_ready_and_metrics() {
    let s = TestServer::start().await;
    let r = s.http.get(s.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "ok");
    let r = s.http.get(s.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // Some traffic: a success, a stream with usage, an error.
    s.chat(&s.key, &body("gpt-4o", "a b")).await;
    sse_events(
        s.chat(&s.key, &json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "c d"}]}))
            .await,
    )
    .await;
    s.chat("bad-key", &body("gpt-4o", "x")).await;
    let r = s.http.get(s.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(header(&r, "content-type")
        .unwrap()
        .starts_with("text/plain"));
    let text = r.text().await.unwrap();
    for name in [
        "nexus_requests_total",
        "nexus_errors_total",
        "nexus_request_duration_seconds",
        "nexus_time_to_first_token_seconds",
        "nexus_tokens_total",
        "nexus_active_streams",
    ] {
        assert!(
            text.contains(&format!("# TYPE {name} ")),
            "{name} missing:\n{text}"
        );
    }
    assert!(
        text.contains("nexus_requests_total{route=\"/v1/chat/completions\",status=\"200\"} 2"),
        "{text}"
    );
    assert!(text.contains("status=\"401\""), "{text}");
    assert!(
        text.contains("nexus_errors_total{kind=\"authentication\"} 1"),
        "{text}"
    );
    assert!(text.contains("nexus_active_streams 0"), "{text}");
    assert!(text.contains("nexus_stats_rows_dropped_total 0"), "{text}");
    // Every sample line is `name{labels} number`.
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let v = line.rsplit(' ').next().unwrap();
        assert!(v.parse::<f64>().is_ok(), "bad sample: {line}");
    }
    // The key is never in the metrics.
    assert!(!text.contains(&s.key));
}

#[tokio::test]
async fn a_key_over_its_rate_is_refused_before_its_body_is_read() {
    let s = TestServer::start().await;
    let key = s.new_key(NewKey {
        name: "rpm1".into(),
        rpm: Some(1),
        ..Default::default()
    });
    let r = s.chat(&key, &body("gpt-4o", "hi")).await;
    assert_eq!(r.status(), 200);
    // Not even valid JSON: the 429 comes before the body is looked at.
    let r = s
        .http
        .post(s.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .body("{not json")
        .send()
        .await
        .unwrap();
    let v = expect_error(r, 429, Some("rate_limit_exceeded")).await;
    assert!(v["request_id"].is_string());
}

#[tokio::test]
async fn upstream_failures_reach_tenants_without_upstream_detail() {
    let s = TestServer::start().await;
    let r = s.chat(&s.key, &body("b-x-fail500", "hi")).await;
    let rid = header(&r, "x-request-id").expect("request id");
    assert!(header(&r, "x-nexus-provider").is_none());
    let v = expect_error(r, 502, Some("upstream_error")).await;
    let text = v.to_string();
    for leak in [
        "sk-mock",
        "10.9.8.7",
        "mock failure",
        "\"bad\"",
        "127.0.0.1",
    ] {
        assert!(!text.contains(leak), "{leak} leaked: {text}");
    }
    assert_eq!(v["request_id"], rid);
    assert!(v["message"]
        .as_str()
        .unwrap()
        .starts_with("upstream returned 500"));
    // Streams say the same in-band, and name no provider in their headers either.
    let mut b = body("m-x-miderror", "one two three");
    b["stream"] = json!(true);
    let r = s.chat(&s.key, &b).await;
    assert!(header(&r, "x-nexus-provider").is_none());
    let events = sse_events(r).await;
    let err = events.iter().find(|e| e.contains("\"error\"")).unwrap();
    assert!(!err.contains("mock: upstream failed"), "{err}");
    assert!(err.contains("request_id"), "{err}");
    // /v1/models names no provider.
    let v: Value = s
        .http
        .get(s.url("/v1/models"))
        .bearer_auth(&s.key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(v["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["owned_by"] == "nexus"));
}
