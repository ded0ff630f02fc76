//! The OpenAI Responses translation through the hub against every provider kind on the mock:
//! the same Responses requests, the same response objects and event sequences back, one usage
//! row with endpoint `responses` each, and stored responses continued and scoped to their key.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{one_provider, Env};
use nexus::ingress::responses::{request::to_chat_request, ResponsesRequest};
use nexus::ingress::SseEvent;
use nexus::records::ProviderKind;
use nexus::{Caller, Error, RequestContext};
use serde_json::{json, Value};

const KINDS: [ProviderKind; 4] = [
    ProviderKind::Openai,
    ProviderKind::Azure,
    ProviderKind::Anthropic,
    ProviderKind::Gemini,
];

fn req(b: Value) -> ResponsesRequest {
    to_chat_request(b).unwrap().into()
}

fn body(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "instructions": "Be brief.",
        "input": [{"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Answer in English."}]},
                  {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "one two three"}]}]})
}

async fn events(env: &Env, key: &str, b: Value) -> Vec<SseEvent> {
    stream_events(env, key, req(b)).await
}

async fn stream_events(env: &Env, key: &str, r: ResponsesRequest) -> Vec<SseEvent> {
    let mut s = env
        .hub
        .responses_stream(Caller::Key(key.into()), r, RequestContext::default())
        .await
        .unwrap();
    let mut out = vec![];
    while let Some(e) = s.next().await {
        out.push(e);
    }
    out
}

fn message_text(r: &Value) -> String {
    r["output"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["type"] == "message")
        .flat_map(|i| i["content"].as_array().unwrap().clone())
        .filter_map(|p| p["text"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn answers_and_streams_in_every_kind() {
    for kind in KINDS {
        let (_mock, env, key) = one_provider(kind, &["m-echo"]).await;
        let r = env
            .hub
            .responses(
                Caller::Key(key.clone()),
                req(body("m-echo", false)),
                RequestContext::default(),
            )
            .await
            .unwrap_or_else(|e| panic!("{kind:?}: {e}"));
        let o = &r.response;
        assert_eq!(o["object"], "response", "{kind:?}");
        assert_eq!(o["status"], "completed", "{kind:?}");
        assert_eq!(o["model"], "m-echo", "{kind:?}");
        assert_eq!(o["instructions"], "Be brief.", "{kind:?}");
        assert_eq!(message_text(o), "one two three", "{kind:?}");
        assert!(
            o["usage"]["output_tokens"].as_u64().unwrap() > 0,
            "{kind:?}"
        );
        assert!(o["usage"]["input_tokens"].as_u64().unwrap() > 0, "{kind:?}");

        let evs = events(&env, &key, body("m-echo", true)).await;
        let names: Vec<&str> = evs.iter().map(|e| e.name()).collect();
        assert_eq!(
            names[..4],
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added"
            ],
            "{kind:?}: {names:?}"
        );
        assert_eq!(
            names[names.len() - 4..],
            [
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed"
            ],
            "{kind:?}"
        );
        let text: String = evs
            .iter()
            .filter(|e| e.event == "response.output_text.delta")
            .filter_map(|e| e.data["delta"].as_str())
            .collect();
        assert_eq!(text, "one two three", "{kind:?}");
        let done = &evs[evs.len() - 1].data["response"];
        assert_eq!(message_text(done), "one two three", "{kind:?}");
        assert!(
            done["usage"]["input_tokens"].as_u64().unwrap() > 0,
            "{kind:?}"
        );
        for (i, e) in evs.iter().enumerate() {
            assert_eq!(e.data["sequence_number"], i as u64, "{kind:?}");
        }
        assert_eq!(env.endpoints(), ["responses", "responses"], "{kind:?}");
    }
}

#[tokio::test]
async fn function_calls_and_their_outputs_in_every_kind() {
    for kind in KINDS {
        let (mock, env, key) = one_provider(kind, &["m-tools"]).await;
        let tools = json!([
            {"type": "function", "name": "lookup", "description": "Look it up",
             "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}},
            {"type": "web_search"}
        ]);
        let mut b = body("m-tools", true);
        b["tools"] = tools.clone();
        let evs = events(&env, &key, b).await;
        let added = evs
            .iter()
            .find(|e| {
                e.event == "response.output_item.added" && e.data["item"]["type"] == "function_call"
            })
            .unwrap_or_else(|| panic!("{kind:?}: {evs:?}"));
        assert_eq!(added.data["item"]["name"], "lookup", "{kind:?}");
        let args: String = evs
            .iter()
            .filter(|e| e.event == "response.function_call_arguments.delta")
            .filter_map(|e| e.data["delta"].as_str())
            .collect();
        let parsed: Value =
            serde_json::from_str(&args).unwrap_or_else(|e| panic!("{kind:?}: {args}: {e}"));
        // Each mock answers a call in its own way; the arguments are one JSON object.
        assert!(parsed.is_object(), "{kind:?}: {parsed}");
        let done = &evs.last().unwrap().data["response"];
        let call = done["output"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["type"] == "function_call")
            .unwrap()
            .clone();
        assert_eq!(call["arguments"], args, "{kind:?}");

        // The next turn: the call and its output, continuing the stored response.
        let next = json!({"model": "m-tools", "tools": tools,
            "previous_response_id": done["id"],
            "input": [{"type": "function_call_output", "call_id": call["call_id"], "output": "sunny"}]});
        let r = env
            .hub
            .responses(
                Caller::Key(key.clone()),
                req(next),
                RequestContext::default(),
            )
            .await
            .unwrap_or_else(|e| panic!("{kind:?}: {e}"));
        assert_eq!(r.response["status"], "completed", "{kind:?}");
        // The Anthropic and Gemini mocks call a tool whenever they have tools; the OpenAI-shaped
        // ones echo after a result.
        assert!(
            !r.response["output"].as_array().unwrap().is_empty(),
            "{kind:?}: {}",
            r.response
        );
        if matches!(kind, ProviderKind::Openai | ProviderKind::Azure) {
            assert_eq!(message_text(&r.response), "one two three", "{kind:?}");
        }
        if kind == ProviderKind::Openai {
            let sent = mock.last_request().unwrap();
            let msgs = sent["messages"].as_array().unwrap();
            let tool = msgs.last().unwrap();
            assert_eq!(tool["role"], "tool", "{sent}");
            assert_eq!(tool["content"], "sunny");
            assert_eq!(tool["tool_call_id"], call["call_id"]);
            assert_eq!(msgs[msgs.len() - 2]["tool_calls"][0]["id"], call["call_id"]);
        }
    }
}

#[tokio::test]
async fn stored_responses_continue_and_stay_with_their_key() {
    let (mock, env, key) = one_provider(ProviderKind::Openai, &["m-echo"]).await;
    let first = env
        .hub
        .responses(
            Caller::Key(key.clone()),
            req(body("m-echo", false)),
            RequestContext::default(),
        )
        .await
        .unwrap()
        .response;
    let id = first["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("resp_"));
    assert_eq!(
        env.hub
            .get_response(&Caller::Key(key.clone()), &id)
            .await
            .unwrap(),
        first
    );
    let items = env
        .hub
        .response_input_items(&Caller::Key(key.clone()), &id)
        .await
        .unwrap();
    assert_eq!(items["data"].as_array().unwrap().len(), 2);

    // Another key sees nothing, as if the response did not exist.
    let other = env.key();
    let e = env
        .hub
        .get_response(&Caller::Key(other.clone()), &id)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e}");
    let cont = json!({"model": "m-echo", "previous_response_id": id, "input": "four five"});
    let e = env
        .hub
        .responses(
            Caller::Key(other),
            req(cont.clone()),
            RequestContext::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e}");

    // The owner continues: the earlier turn goes upstream first, without its instructions.
    let r = env
        .hub
        .responses(
            Caller::Key(key.clone()),
            req(cont),
            RequestContext::default(),
        )
        .await
        .unwrap();
    assert_eq!(message_text(&r.response), "four five");
    assert_eq!(r.response["previous_response_id"], id.as_str());
    let sent = mock.last_request().unwrap();
    let roles: Vec<&str> = sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["system", "user", "assistant", "user"], "{sent}");
    assert_eq!(sent["messages"][0]["content"], "Answer in English.");
    assert_eq!(sent["messages"][2]["content"], "one two three");

    // store: false keeps nothing; a deleted response is gone.
    let mut b = body("m-echo", false);
    b["store"] = json!(false);
    let unstored = env
        .hub
        .responses(Caller::Key(key.clone()), req(b), RequestContext::default())
        .await
        .unwrap()
        .response;
    assert_eq!(unstored["store"], false);
    let e = env
        .hub
        .get_response(&Caller::Key(key.clone()), unstored["id"].as_str().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e}");
    env.hub
        .delete_response(&Caller::Key(key.clone()), &id)
        .await
        .unwrap();
    assert!(env.hub.get_response(&Caller::Key(key), &id).await.is_err());
}

#[tokio::test]
async fn failures_are_http_errors_or_one_failed_event_in_every_kind() {
    for kind in KINDS {
        let (_mock, env, key) = one_provider(kind, &["m-fail503", "m-miderror"]).await;
        let e = env
            .hub
            .responses(
                Caller::Key(key.clone()),
                req(body("m-fail503", false)),
                RequestContext::default(),
            )
            .await
            .unwrap_err();
        // The hub's answer to a failing upstream: a 502 to the client (as on the chat path).
        assert_eq!(e.http_status(), 502, "{kind:?}: {e}");
        let evs = events(&env, &key, body("m-miderror", true)).await;
        let last = evs.last().unwrap();
        assert_eq!(last.event, "response.failed", "{kind:?}: {evs:?}");
        assert_eq!(last.data["response"]["status"], "failed", "{kind:?}");
        assert!(
            !last.data.to_string().contains("127.0.0.1"),
            "{kind:?}: {last:?}"
        );
        assert!(
            evs.iter().all(|e| e.event != "response.completed"),
            "{kind:?}"
        );
        // A failed stream is not stored.
        let id = last.data["response"]["id"].as_str().unwrap();
        assert!(env
            .hub
            .get_response(&Caller::Key(key.clone()), id)
            .await
            .is_err());
    }
}

/// An `openai` provider with the `responses_api` option gets the client's Responses body as it
/// was sent (hosted tools and `include` kept) and its own answer and events come back, with
/// the hub's response id and the client's model name; the usage row is the provider's count.
#[tokio::test]
async fn responses_api_providers_are_relayed() {
    use nexus::records::{NewProvider, ProviderOptions};
    let mock = nexus::testing::MockUpstream::start().await.unwrap();
    let mut opts = common::fast_options();
    opts.retry.max_attempts = 1;
    let env = Env::new(opts);
    env.add(
        NewProvider {
            name: "oa".into(),
            kind: ProviderKind::Openai,
            base_url: mock.base_url(),
            api_key: "sk-upstream-key-0123456789".into(),
            options: ProviderOptions {
                responses_api: Some(true),
                ..ProviderOptions::default()
            },
            ..NewProvider::default()
        },
        &[("gpt-client", "m-echo"), ("gpt-mid", "m-miderror")],
    );
    let key = env.key();
    let parse = |b: Value| {
        ResponsesRequest::parse(&serde_json::to_vec(&b).unwrap(), env.hub.request_limits()).unwrap()
    };
    let body = json!({"model": "gpt-client", "input": "one two three",
        "tools": [{"type": "web_search"}], "include": ["reasoning.encrypted_content"]});
    let r = env
        .hub
        .responses(
            Caller::Key(key.clone()),
            parse(body.clone()),
            RequestContext::default(),
        )
        .await
        .unwrap();
    let sent = mock.last_request().unwrap();
    assert_eq!(sent["model"], "m-echo");
    assert_eq!(sent["input"], "one two three");
    assert_eq!(sent["tools"], json!([{"type": "web_search"}]));
    assert_eq!(sent["include"], json!(["reasoning.encrypted_content"]));
    assert!(sent.get("messages").is_none(), "{sent}");
    let o = &r.response;
    assert_eq!(o["id"], format!("resp_{}", r.request_id));
    assert_eq!(o["model"], "gpt-client");
    assert_eq!(message_text(o), "one two three");
    let stored = env
        .hub
        .get_response(&Caller::Key(key.clone()), o["id"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(&stored, o);

    let mut b = body.clone();
    b["stream"] = json!(true);
    let evs = stream_events(&env, &key, parse(b)).await;
    assert_eq!(evs[0].name(), "response.created", "{evs:?}");
    let last = evs.last().unwrap();
    assert_eq!(last.name(), "response.completed", "{evs:?}");
    assert_eq!(last.data["response"]["model"], "gpt-client");
    assert!(last.data["response"]["id"]
        .as_str()
        .unwrap()
        .starts_with("resp_"));
    assert_eq!(message_text(&last.data["response"]), "one two three");
    let text: String = evs
        .iter()
        .filter(|e| e.event == "response.output_text.delta")
        .filter_map(|e| e.data["delta"].as_str())
        .collect();
    assert_eq!(text, "one two three");
    let rows = env.rows();
    assert_eq!(rows.len(), 2);
    for row in &rows {
        assert_eq!(row.usage_source, "upstream", "{row:?}");
        assert!(
            row.prompt_tokens > 0 && row.completion_tokens > 0,
            "{row:?}"
        );
    }

    // A provider failure mid-stream: one hub `response.failed`, the provider's text kept out.
    let evs = stream_events(
        &env,
        &key,
        parse(json!({"model": "gpt-mid", "input": "one two three", "stream": true})),
    )
    .await;
    let last = evs.last().unwrap();
    assert_eq!(last.name(), "response.failed", "{evs:?}");
    assert_eq!(
        evs.iter().filter(|e| e.event == "response.failed").count(),
        1
    );
    assert!(evs.iter().all(|e| e.event != "error"));
    assert!(
        !last.data.to_string().contains("mock mid-stream"),
        "{last:?}"
    );

    // A continuation is translated: the provider does not know the hub's ids.
    let cont =
        json!({"model": "gpt-client", "previous_response_id": o["id"], "input": "four five"});
    let r = env
        .hub
        .responses(Caller::Key(key), parse(cont), RequestContext::default())
        .await
        .unwrap();
    assert_eq!(message_text(&r.response), "four five");
    let sent = mock.last_request().unwrap();
    assert_eq!(sent["messages"].as_array().unwrap().len(), 3, "{sent}");
}
