//! A Messages request routed to an `anthropic` provider goes as the client sent it (with the
//! client's betas) and comes back as the provider answered, model name aside; other kinds in
//! the same route get the translation.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{fast_options, Env};
use nexus::ingress::messages::{MessagesRequest, SseEvent};
use nexus::records::{NewProvider, ProviderKind, ProviderOptions};
use nexus::testing::MockUpstream;
use nexus::{Caller, RequestContext};
use serde_json::{json, Value};

const BETAS: &str = "interleaved-thinking-2025-05-14,mid-conversation-tool-changes-2026-07-01";

fn provider(name: &str, kind: ProviderKind, mock: &MockUpstream) -> NewProvider {
    NewProvider {
        name: name.into(),
        kind,
        base_url: mock.base_url(),
        api_key: "sk-upstream-key-0123456789".into(),
        options: ProviderOptions::default(),
        ..NewProvider::default()
    }
}

async fn setup(kind: ProviderKind, upstream: &str) -> (MockUpstream, Env, String) {
    let mock = MockUpstream::start().await.unwrap();
    let mut opts = fast_options();
    opts.retry.max_attempts = 1;
    let env = Env::new(opts);
    env.add(provider("p", kind, &mock), &[("claude-client", upstream)]);
    let key = env.key();
    (mock, env, key)
}

/// What Claude Code sends, in small: system blocks with `cache_control`, a system message in
/// `messages`, `top_k`, `context_management`, a thinking block with its signature.
fn body(stream: bool) -> Vec<u8> {
    json!({"model": "claude-client", "max_tokens": 64, "stream": stream, "top_k": 5,
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        "context_management": {"edits": []},
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "one two", "cache_control": {"type": "ephemeral"}}]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "hm", "signature": "sig-from-before"},
                {"type": "text", "text": "ok"}]},
            {"role": "system", "content": "Answer in English."},
            {"role": "user", "content": "three four"}]})
    .to_string()
    .into_bytes()
}

fn parse(env: &Env, stream: bool) -> MessagesRequest {
    MessagesRequest::parse(&body(stream), env.hub.request_limits(), Some(BETAS)).unwrap()
}

fn assert_sent_as_is(mock: &MockUpstream, upstream: &str, stream: bool) {
    let sent = mock.last_request().unwrap();
    assert_eq!(sent["model"], upstream);
    assert_eq!(sent["stream"], stream);
    assert_eq!(sent["top_k"], 5);
    assert_eq!(sent["context_management"], json!({"edits": []}));
    assert_eq!(sent["system"][0]["cache_control"]["type"], "ephemeral");
    assert_eq!(
        sent["messages"][0]["content"][0]["cache_control"]["type"],
        "ephemeral"
    );
    assert_eq!(
        sent["messages"][1]["content"][0]["signature"],
        "sig-from-before"
    );
    assert_eq!(sent["messages"][2]["role"], "system");
    let betas: Vec<String> = mock
        .last_headers()
        .into_iter()
        .filter(|(k, _)| k == "anthropic-beta")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(betas, [BETAS]);
}

#[tokio::test]
async fn non_stream_goes_and_comes_back_as_is() {
    let upstream = "m-thinking-cache";
    let (mock, env, key) = setup(ProviderKind::Anthropic, upstream).await;
    let r = env
        .hub
        .messages(
            Caller::Key(key),
            parse(&env, false),
            RequestContext::default(),
        )
        .await
        .unwrap();
    assert_sent_as_is(&mock, upstream, false);
    let m = &r.message;
    assert_eq!(m["id"], "msg_mock", "the provider's own message: {m}");
    assert_eq!(m["model"], "claude-client");
    assert_eq!(m["content"][0]["type"], "thinking");
    assert_eq!(m["content"][0]["signature"], "mock-sig");
    assert_eq!(m["usage"]["cache_read_input_tokens"], 100);
    let rows = env.rows();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].status, 200);
    assert_eq!(rows[0].usage_source, "upstream");
    assert!(rows[0].prompt_tokens > 0 && rows[0].completion_tokens > 0);
}

async fn collect(env: &Env, key: String) -> Vec<SseEvent> {
    let mut s = env
        .hub
        .messages_stream(
            Caller::Key(key),
            parse(env, true),
            RequestContext::default(),
        )
        .await
        .unwrap();
    let mut evs = vec![];
    while let Some(e) = s.next().await {
        evs.push(e);
    }
    evs
}

#[tokio::test]
async fn stream_relays_the_providers_events() {
    let upstream = "m-thinking-chunks3";
    let (mock, env, key) = setup(ProviderKind::Anthropic, upstream).await;
    let evs = collect(&env, key).await;
    assert_sent_as_is(&mock, upstream, true);
    let names: Vec<&str> = evs.iter().map(|e| e.name()).collect();
    assert_eq!(names.first(), Some(&"message_start"), "{names:?}");
    assert_eq!(names.last(), Some(&"message_stop"), "{names:?}");
    assert_eq!(evs[0].data["message"]["model"], "claude-client");
    assert_eq!(evs[0].data["message"]["id"], "msg_mock");
    assert!(
        evs.iter()
            .any(|e| e.data["delta"]["type"] == "signature_delta"
                && e.data["delta"]["signature"] == "mock-sig"),
        "the thinking signature arrives: {evs:?}"
    );
    let text: String = evs
        .iter()
        .filter_map(|e| e.data["delta"]["text"].as_str())
        .collect();
    assert_eq!(text, "tok0 tok1 tok2 ");
    assert_eq!(
        names.iter().filter(|n| **n == "content_block_stop").count(),
        names
            .iter()
            .filter(|n| **n == "content_block_start")
            .count()
    );
    let rows = env.rows();
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].status, rows[0].stream), (200, true));
    assert_eq!(rows[0].usage_source, "upstream");
    assert_eq!(rows[0].completion_tokens, 3);
}

#[tokio::test]
async fn a_failure_mid_stream_ends_with_the_hubs_error_event() {
    let (_mock, env, key) = setup(ProviderKind::Anthropic, "m-miderror-chunks3").await;
    let evs = collect(&env, key).await;
    let last = evs.last().unwrap();
    assert_eq!(last.event, "error", "{evs:?}");
    assert_eq!(last.data["error"]["type"], "overloaded_error");
    assert!(
        !last.data.to_string().contains("127.0.0.1"),
        "no upstream detail: {last:?}"
    );
    assert_eq!(evs.iter().filter(|e| e.event == "error").count(), 1);
    assert!(evs.iter().all(|e| e.event != "message_stop"));
    assert_eq!(env.rows().len(), 1);
}

#[tokio::test]
async fn other_kinds_in_the_route_get_the_translation() {
    // The anthropic provider fails (whenever it is tried); the openai one answers the
    // translated request.
    let mock = MockUpstream::start().await.unwrap();
    let mut opts = fast_options();
    opts.retry.max_attempts = 1;
    let env = Env::new(opts);
    env.add(
        provider("a", ProviderKind::Anthropic, &mock),
        &[("claude-client", "m-fail529")],
    );
    env.add(
        provider("o", ProviderKind::Openai, &mock),
        &[("claude-client", "m-chunks2")],
    );
    let key = env.key();
    let r = env
        .hub
        .messages(
            Caller::Key(key),
            parse(&env, false),
            RequestContext::default(),
        )
        .await
        .unwrap();
    let sent: Value = mock.last_request().unwrap();
    assert_eq!(sent["model"], "m-chunks2");
    assert!(sent.get("top_k").is_none(), "translated: {sent}");
    assert_eq!(r.message["type"], "message");
    assert_eq!(r.message["model"], "claude-client");
    assert_eq!(r.message["content"][0]["text"], "tok0 tok1 ");
}

/// `count_tokens` asks an `anthropic` provider for its own count (the body without
/// `max_tokens`/`stream`, with the client's betas); other kinds, and a provider that fails,
/// get the hub's estimate.
#[tokio::test]
async fn count_tokens_is_the_anthropic_providers_own_count() {
    use nexus::ingress::messages::CountSource;
    let (mock, env, key) = setup(ProviderKind::Anthropic, "claude-up").await;
    let req =
        MessagesRequest::parse_count(&body(false), env.hub.request_limits(), Some(BETAS)).unwrap();
    let n = env
        .hub
        .messages_count_input_tokens(&Caller::Key(key.clone()), &req)
        .await
        .unwrap();
    assert_eq!(n.source, CountSource::Provider("p".into()));
    assert!(n.input_tokens > 1000, "{n:?}");
    let sent = mock.last_request().unwrap();
    assert_eq!(sent["model"], "claude-up");
    assert!(
        sent.get("max_tokens").is_none()
            && sent.get("stream").is_none()
            && sent.get("top_k").is_none()
    );
    assert_eq!(sent["context_management"], json!({"edits": []}));
    let betas = mock
        .last_headers()
        .into_iter()
        .find(|(k, _)| k == "anthropic-beta")
        .map(|(_, v)| v)
        .unwrap_or_default();
    assert!(betas.contains("interleaved-thinking-2025-05-14"), "{betas}");
    assert!(
        env.endpoints().is_empty(),
        "count_tokens writes no usage row"
    );

    for (kind, upstream) in [
        (ProviderKind::Openai, "m-echo"),
        (ProviderKind::Anthropic, "claude-fail500"),
    ] {
        let (_mock, env, key) = setup(kind, upstream).await;
        let req =
            MessagesRequest::parse_count(&body(false), env.hub.request_limits(), None).unwrap();
        let n = env
            .hub
            .messages_count_input_tokens(&Caller::Key(key), &req)
            .await
            .unwrap();
        assert_eq!(n.source, CountSource::Estimate, "{kind:?}");
        assert!(
            n.input_tokens > 5 && n.input_tokens < 1000,
            "{kind:?}: {n:?}"
        );
    }
}
