//! One scenario matrix, run against every provider kind: the same OpenAI requests through the
//! hub to the mock speaking each kind's wire format, with the same answers expected back. A new
//! kind is one more row in [`rows`].
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{fast_options, Env};
use nexus::openai::ChatRequest;
use nexus::records::{NewProvider, ProviderKind, ProviderOptions};
use nexus::testing::MockUpstream;
use nexus::{Caller, ErrorKind, RequestContext};
use serde_json::{json, Value};

/// A kind as the matrix uses it: its options and the header that must carry the upstream key.
struct Row {
    label: &'static str,
    kind: ProviderKind,
    options: ProviderOptions,
    credential_header: &'static str,
}

fn rows() -> Vec<Row> {
    vec![
        Row {
            label: "openai",
            kind: ProviderKind::Openai,
            options: ProviderOptions::default(),
            credential_header: "authorization",
        },
        Row {
            label: "azure deployments",
            kind: ProviderKind::Azure,
            options: ProviderOptions::default(),
            credential_header: "api-key",
        },
        Row {
            label: "azure v1",
            kind: ProviderKind::Azure,
            options: ProviderOptions {
                azure_v1: Some(true),
                ..ProviderOptions::default()
            },
            credential_header: "api-key",
        },
        Row {
            label: "anthropic",
            kind: ProviderKind::Anthropic,
            options: ProviderOptions::default(),
            credential_header: "x-api-key",
        },
        Row {
            label: "gemini",
            kind: ProviderKind::Gemini,
            options: ProviderOptions::default(),
            credential_header: "x-goog-api-key",
        },
    ]
}

/// Every credential header some kind uses: a request must carry its own kind's and no other.
const CREDENTIAL_HEADERS: [&str; 4] = ["authorization", "api-key", "x-api-key", "x-goog-api-key"];

struct Setup {
    mock: MockUpstream,
    env: Env,
    key: String,
}

/// A hub with one provider of the row's kind serving `models` (client name, upstream name).
async fn setup(row: &Row, models: &[(&str, &str)]) -> Setup {
    let mock = MockUpstream::start().await.unwrap();
    let mut opts = fast_options();
    opts.retry.max_attempts = 1;
    let env = Env::new(opts);
    env.add(
        NewProvider {
            name: "p".into(),
            kind: row.kind,
            base_url: mock.base_url(),
            api_key: "sk-matrix-upstream-key".into(),
            options: row.options.clone(),
            ..NewProvider::default()
        },
        models,
    );
    let key = env.key();
    Setup { mock, env, key }
}

fn req(model: &str, text: &str, stream: bool, usage: bool) -> ChatRequest {
    let mut r = ChatRequest::user(model, text);
    if stream {
        r.stream = Some(true);
        if usage {
            r.stream_options = Some(json!({"include_usage": true}));
        }
    }
    r
}

fn ctx() -> RequestContext {
    RequestContext::default()
}

async fn stream_all(s: &Setup, r: ChatRequest) -> (String, Vec<Value>, Option<nexus::Error>) {
    let mut st = s
        .env
        .hub
        .chat_stream(Caller::Key(s.key.clone()), r, ctx())
        .await
        .unwrap();
    let (mut text, mut chunks) = (String::new(), vec![]);
    while let Some(item) = st.next().await {
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
async fn answers_text_and_usage_in_every_kind() {
    for row in rows() {
        let s = setup(&row, &[("m", "echo")]).await;
        let r = s
            .env
            .hub
            .chat(
                Caller::Key(s.key.clone()),
                req("m", "hello matrix world", false, false),
                ctx(),
            )
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", row.label));
        assert_eq!(
            r.completion.content(),
            Some("hello matrix world"),
            "{}",
            row.label
        );
        assert_eq!(r.completion.finish_reason(), Some("stop"), "{}", row.label);
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["object"], "chat.completion", "{}", row.label);
        assert!(
            r.usage.prompt_tokens > 0 && r.usage.completion_tokens > 0,
            "{}",
            row.label
        );
        let rows = s.env.rows();
        assert_eq!(rows.len(), 1, "{}", row.label);
        assert_eq!(rows[0].usage_source, "upstream", "{}", row.label);
        // The upstream key went in this kind's header and in no other.
        let headers = s.mock.last_headers();
        for h in CREDENTIAL_HEADERS {
            let sent = headers
                .iter()
                .any(|(k, v)| k == h && v.contains("sk-matrix-upstream-key"));
            assert_eq!(
                sent,
                h == row.credential_header,
                "{}: header {h}",
                row.label
            );
        }
    }
}

#[tokio::test]
async fn streams_text_and_usage_as_asked_in_every_kind() {
    for row in rows() {
        let s = setup(&row, &[("m", "echo")]).await;
        let (text, chunks, err) = stream_all(&s, req("m", "one two three", true, true)).await;
        assert!(err.is_none(), "{}: {err:?}", row.label);
        assert_eq!(text, "one two three", "{}", row.label);
        let usage: Vec<&Value> = chunks
            .iter()
            .filter_map(|c| c.get("usage").filter(|u| !u.is_null()))
            .collect();
        assert_eq!(usage.len(), 1, "{}: {chunks:?}", row.label);
        assert_eq!(
            chunks.last().unwrap()["choices"],
            json!([]),
            "{}",
            row.label
        );
        assert!(
            chunks
                .iter()
                .all(|c| c["object"] == "chat.completion.chunk"),
            "{}",
            row.label
        );
        // Not asked: no usage chunk reaches the client, but the row still has the usage.
        let (_, chunks, err) = stream_all(&s, req("m", "one two three", true, false)).await;
        assert!(err.is_none(), "{}", row.label);
        assert!(
            chunks
                .iter()
                .all(|c| c.get("usage").is_none_or(Value::is_null)),
            "{}: {chunks:?}",
            row.label
        );
        let rows = s.env.rows();
        assert!(
            rows.iter()
                .all(|r| r.completion_tokens > 0 && r.status == 200),
            "{}",
            row.label
        );
    }
}

#[tokio::test]
async fn upstream_errors_map_the_same_in_every_kind() {
    for row in rows() {
        let s = setup(
            &row,
            &[
                ("down", "fail503"),
                ("busy", "fail429"),
                ("bad", "fail400"),
                ("auth", "fail401"),
            ],
        )
        .await;
        for (model, status, kind) in [
            ("down", 502, ErrorKind::Upstream),
            ("busy", 429, ErrorKind::Upstream),
            ("bad", 400, ErrorKind::Upstream),
            ("auth", 502, ErrorKind::Upstream),
        ] {
            let e = s
                .env
                .hub
                .chat(
                    Caller::Key(s.key.clone()),
                    req(model, "x", false, false),
                    ctx(),
                )
                .await
                .unwrap_err();
            assert_eq!(
                (e.http_status(), e.kind()),
                (status, kind),
                "{} {model}: {e}",
                row.label
            );
        }
    }
}

#[tokio::test]
async fn a_mid_stream_failure_ends_the_stream_once_in_every_kind() {
    for row in rows() {
        let s = setup(&row, &[("m", "miderror")]).await;
        let (text, _, err) = stream_all(&s, req("m", "a b c", true, false)).await;
        assert!(err.is_some(), "{}", row.label);
        assert!(
            !text.is_empty(),
            "{}: something streamed before the failure",
            row.label
        );
        let rows = s.env.rows();
        assert_eq!(rows.len(), 1, "{}", row.label);
        assert_eq!(rows[0].status, 502, "{}", row.label);
    }
}

#[tokio::test]
async fn fails_over_from_every_kind_to_another() {
    for row in rows() {
        let s = setup(&row, &[("m", "fail503")]).await;
        let backup = MockUpstream::start().await.unwrap();
        let b = s.env.provider(
            "backup",
            &backup,
            ProviderOptions {
                weight: Some(0),
                ..ProviderOptions::default()
            },
            &[("m", "m")],
        );
        let r = s
            .env
            .hub
            .chat(
                Caller::Key(s.key.clone()),
                req("m", "still here", false, false),
                ctx(),
            )
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", row.label));
        assert_eq!(r.provider_id, b, "{}", row.label);
        assert_eq!(r.completion.content(), Some("still here"), "{}", row.label);
    }
}

#[tokio::test]
async fn cached_and_reasoning_tokens_reach_the_usage_row() {
    let s = setup(&rows()[0], &[("m", "cached")]).await;
    let r = s
        .env
        .hub
        .chat(
            Caller::Key(s.key.clone()),
            req("m", "x", false, false),
            ctx(),
        )
        .await
        .unwrap();
    assert_eq!(r.usage.extra["prompt_tokens_details"]["cached_tokens"], 4);
    s.env.hub.flush().unwrap();
    let c = rusqlite::Connection::open(&s.env.db).unwrap();
    let got: (i64, i64, i64) = c
        .query_row(
            "SELECT cached_tokens, cache_write_tokens, reasoning_tokens FROM usage",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(got, (4, 0, 2));
}
