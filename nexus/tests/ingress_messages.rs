//! The Anthropic Messages translation through the hub against every provider kind on the mock:
//! the same Messages requests, the same Anthropic answers and event sequences back, and one
//! usage row with endpoint `messages` each.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{one_provider, Env};
use nexus::ingress::messages::{to_chat_request, SseEvent};
use nexus::records::ProviderKind;
use nexus::{Caller, RequestContext};
use serde_json::{json, Value};

const KINDS: [ProviderKind; 4] = [
    ProviderKind::Openai,
    ProviderKind::Azure,
    ProviderKind::Anthropic,
    ProviderKind::Gemini,
];

fn body(model: &str, stream: bool) -> Value {
    json!({"model": model, "max_tokens": 64, "stream": stream,
        "system": [{"type": "text", "text": "Be brief."}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "one two three", "cache_control": {"type": "ephemeral"}}]},
                     {"role": "system", "content": "Answer in English."}]})
}

async fn events(env: &Env, key: &str, b: Value) -> Vec<SseEvent> {
    let mut s = env
        .hub
        .messages_stream(
            Caller::Key(key.into()),
            to_chat_request(b).unwrap(),
            RequestContext::default(),
        )
        .await
        .unwrap();
    let mut out = vec![];
    while let Some(e) = s.next().await {
        out.push(e);
    }
    out
}

#[tokio::test]
async fn answers_and_streams_in_every_kind() {
    for kind in KINDS {
        let (_mock, env, key) = one_provider(kind, &["m-echo"]).await;
        let r = env
            .hub
            .messages(
                Caller::Key(key.clone()),
                to_chat_request(body("m-echo", false)).unwrap(),
                RequestContext::default(),
            )
            .await
            .unwrap_or_else(|e| panic!("{kind:?}: {e}"));
        let m = &r.message;
        assert_eq!(m["type"], "message", "{kind:?}");
        assert_eq!(
            m["content"],
            json!([{"type": "text", "text": "one two three"}]),
            "{kind:?}"
        );
        assert_eq!(m["stop_reason"], "end_turn", "{kind:?}");
        assert!(
            m["usage"]["output_tokens"].as_u64().unwrap() > 0,
            "{kind:?}"
        );

        let evs = events(&env, &key, body("m-echo", true)).await;
        let names: Vec<&str> = evs.iter().map(|e| e.name()).collect();
        assert_eq!(
            names[..3],
            ["message_start", "content_block_start", "ping"],
            "{kind:?}: {names:?}"
        );
        assert_eq!(
            names[names.len() - 3..],
            ["content_block_stop", "message_delta", "message_stop"],
            "{kind:?}"
        );
        let text: String = evs
            .iter()
            .filter_map(|e| e.data.pointer("/delta/text").and_then(Value::as_str))
            .collect();
        assert_eq!(text, "one two three", "{kind:?}");
        let delta = &evs[evs.len() - 2].data;
        assert_eq!(delta["delta"]["stop_reason"], "end_turn", "{kind:?}");
        assert!(
            delta["usage"]["input_tokens"].as_u64().unwrap() > 0,
            "{kind:?}"
        );
        assert_eq!(env.endpoints(), ["messages", "messages"], "{kind:?}");
    }
}

#[tokio::test]
async fn tool_use_streams_as_input_json_in_every_kind() {
    for kind in KINDS {
        let (_mock, env, key) = one_provider(kind, &["m-tools"]).await;
        let mut b = body("m-tools", true);
        b["tools"] = json!([{"name": "lookup", "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}},
                            {"type": "web_search_20250305", "name": "web_search"}]);
        let evs = events(&env, &key, b).await;
        let start = evs
            .iter()
            .find(|e| {
                e.event == "content_block_start" && e.data["content_block"]["type"] == "tool_use"
            })
            .unwrap_or_else(|| panic!("{kind:?}: {evs:?}"));
        assert_eq!(start.data["content_block"]["name"], "lookup", "{kind:?}");
        let idx = &start.data["index"];
        let input: String = evs
            .iter()
            .filter(|e| &e.data["index"] == idx)
            .filter_map(|e| {
                e.data
                    .pointer("/delta/partial_json")
                    .and_then(Value::as_str)
            })
            .collect();
        let input: Value =
            serde_json::from_str(&input).unwrap_or_else(|e| panic!("{kind:?}: {input}: {e}"));
        assert!(input.is_object(), "{kind:?}");
        assert_eq!(
            evs[evs.len() - 2].data["delta"]["stop_reason"],
            "tool_use",
            "{kind:?}"
        );
    }
}

#[tokio::test]
async fn failures_are_anthropic_errors_in_every_kind() {
    for kind in KINDS {
        let (_mock, env, key) = one_provider(kind, &["m-fail503", "m-miderror"]).await;
        let e = env
            .hub
            .messages(
                Caller::Key(key.clone()),
                to_chat_request(body("m-fail503", false)).unwrap(),
                RequestContext::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(e.anthropic_status(), 529, "{kind:?}: {e}");
        assert_eq!(
            e.to_anthropic_json_for(Some("r"))["error"]["type"],
            "overloaded_error"
        );
        let evs = events(&env, &key, body("m-miderror", true)).await;
        let last = evs.last().unwrap();
        assert_eq!(last.event, "error", "{kind:?}: {evs:?}");
        assert_eq!(
            evs.iter().filter(|e| e.event == "error").count(),
            1,
            "{kind:?}"
        );
        assert!(evs.iter().all(|e| e.event != "message_stop"), "{kind:?}");
    }
}
