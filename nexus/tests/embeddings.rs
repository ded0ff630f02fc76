//! `Hub::embeddings` against the mock speaking each provider kind's embeddings API: the vectors
//! reach the caller unchanged (float and base64, any `dimensions`), token-id input, failover,
//! key scope, the one usage row (endpoint `embeddings`), and the refusals (Anthropic, token ids
//! to Gemini, a chat model on the embeddings path and the reverse).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{fast_options, Env, UPSTREAM_KEY};
use nexus::embeddings::{EmbeddingInput, EmbeddingVector, EmbeddingsRequest, EncodingFormat};
use nexus::openai::ChatRequest;
use nexus::records::{
    ModelKind, ModelPatch, NewKey, NewModel, NewProvider, ProviderKind, ProviderOptions,
};
use nexus::testing::{mock_embedding, MockUpstream};
use nexus::usage::{GroupBy, TimeseriesQuery};
use nexus::{Caller, ErrorKind, RequestContext};

fn admin() -> Caller {
    Caller::Admin { provider_id: None }
}

/// A provider of `kind` at `mock` serving embedding models (client name, upstream name).
fn embedding_provider(
    env: &Env,
    name: &str,
    kind: ProviderKind,
    options: ProviderOptions,
    mock: &MockUpstream,
    models: &[(&str, &str)],
) -> i64 {
    let p = env
        .hub
        .registry()
        .create_provider(NewProvider {
            name: name.into(),
            kind,
            base_url: mock.base_url(),
            api_key: UPSTREAM_KEY.into(),
            options,
            ..NewProvider::default()
        })
        .unwrap();
    for (client, upstream) in models {
        env.hub
            .registry()
            .create_model(
                p.id,
                NewModel {
                    name: (*client).into(),
                    upstream_name: (client != upstream).then(|| (*upstream).to_string()),
                    kind: ModelKind::Embedding,
                    ..NewModel::default()
                },
            )
            .unwrap();
    }
    p.id
}

fn endpoints(env: &Env) -> Vec<(String, i64, i64, String)> {
    env.hub.flush().unwrap();
    let c = rusqlite::Connection::open(&env.db).unwrap();
    let mut st = c
        .prepare(
            "SELECT endpoint, prompt_tokens, completion_tokens, usage_source FROM usage ORDER BY id",
        )
        .unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

fn header(mock: &MockUpstream, name: &str) -> Option<String> {
    mock.last_headers()
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_kind_embeds_float_and_base64_with_dimensions() {
    let mock = MockUpstream::start().await.unwrap();
    let rows = [
        (
            "openai",
            ProviderKind::Openai,
            ProviderOptions::default(),
            "authorization",
        ),
        (
            "azure",
            ProviderKind::Azure,
            ProviderOptions::default(),
            "api-key",
        ),
        (
            "azure-v1",
            ProviderKind::Azure,
            ProviderOptions {
                azure_v1: Some(true),
                ..ProviderOptions::default()
            },
            "api-key",
        ),
        (
            "gemini",
            ProviderKind::Gemini,
            ProviderOptions::default(),
            "x-goog-api-key",
        ),
    ];
    for (label, kind, options, credential) in rows {
        let env = Env::new(fast_options());
        let model = format!("emb-{label}");
        embedding_provider(
            &env,
            label,
            kind,
            options,
            &mock,
            &[(&model, "text-embedding-3-small")],
        );
        let texts = vec!["the quick brown fox".to_owned(), "jumps".to_owned()];
        for format in [EncodingFormat::Float, EncodingFormat::Base64] {
            let mut req = EmbeddingsRequest::new(&model, texts.clone());
            req.dimensions = Some(8);
            req.encoding_format = Some(format);
            let resp = env
                .hub
                .embeddings(admin(), req, RequestContext::default())
                .await
                .unwrap_or_else(|e| panic!("{label}: {e}"));
            let list = resp.list().unwrap();
            assert_eq!(list.object, "list", "{label}");
            assert_eq!(list.data.len(), 2, "{label}");
            for (i, d) in list.data.iter().enumerate() {
                assert_eq!(d.index, i, "{label}");
                match (&d.embedding, format) {
                    (EmbeddingVector::Float(_), EncodingFormat::Float)
                    | (EmbeddingVector::Base64(_), EncodingFormat::Base64) => {}
                    (v, f) => panic!("{label}: asked for {f:?}, got {v:?}"),
                }
                assert_eq!(
                    d.embedding.to_floats().unwrap(),
                    mock_embedding(&texts[i], 8),
                    "{label} {format:?}"
                );
            }
            let cred = header(&mock, credential).unwrap_or_default();
            assert!(cred.contains(UPSTREAM_KEY), "{label}: {credential}");
            assert_eq!(resp.usage.completion_tokens, 0);
            assert!(resp.usage.prompt_tokens > 0, "{label}");
        }
        // What each kind was sent.
        let sent = mock.last_request().unwrap();
        if kind == ProviderKind::Gemini {
            assert_eq!(
                sent["requests"][0]["model"],
                "models/text-embedding-3-small"
            );
            assert_eq!(sent["requests"][0]["outputDimensionality"], 8);
            assert_eq!(sent["requests"][1]["content"]["parts"][0]["text"], "jumps");
        } else {
            assert_eq!(sent["model"], "text-embedding-3-small", "{label}");
            assert_eq!(sent["dimensions"], 8);
            assert_eq!(sent["encoding_format"], "base64");
        }
        // One row per request, on the embeddings endpoint, with no completion.
        let rows = endpoints(&env);
        assert_eq!(rows.len(), 2, "{label}");
        for (endpoint, prompt, completion, source) in rows {
            assert_eq!(endpoint, "embeddings");
            assert_eq!(completion, 0);
            if kind == ProviderKind::Gemini {
                // Gemini reports no usage: the estimator counts (exactly, for this name's
                // cl100k encoding: "the quick brown fox" is 4 tokens, "jumps" 1... or more).
                assert_eq!(source, "estimate");
                assert!(prompt >= 5, "{prompt}");
            } else {
                // The mock counts a word a token: 4 + 1.
                assert_eq!(source, "upstream");
                assert_eq!(prompt, 5);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn token_ids_are_relayed_to_openai_and_refused_for_gemini() {
    let mock = MockUpstream::start().await.unwrap();
    let env = Env::new(fast_options());
    embedding_provider(
        &env,
        "o",
        ProviderKind::Openai,
        ProviderOptions::default(),
        &mock,
        &[("e-o", "e-o")],
    );
    embedding_provider(
        &env,
        "g",
        ProviderKind::Gemini,
        ProviderOptions::default(),
        &mock,
        &[("e-g", "e-g")],
    );
    let mut req = EmbeddingsRequest::new("e-o", "x");
    req.input = EmbeddingInput::TokenArrays(vec![vec![1, 2, 3], vec![4]]);
    let resp = env
        .hub
        .embeddings(admin(), req.clone(), RequestContext::default())
        .await
        .unwrap();
    assert_eq!(resp.list().unwrap().data.len(), 2);
    assert_eq!(
        mock.last_request().unwrap()["input"],
        serde_json::json!([[1, 2, 3], [4]])
    );
    assert_eq!(resp.usage.prompt_tokens, 4);

    req.model = "e-g".into();
    let before = mock.requests();
    let e = env
        .hub
        .embeddings(admin(), req, RequestContext::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidRequest);
    assert_eq!(e.param(), Some("input"));
    assert!(e.to_string().contains("Gemini"), "{e}");
    assert_eq!(mock.requests(), before, "nothing was sent");
}

#[tokio::test(flavor = "multi_thread")]
async fn anthropic_is_refused_and_skipped_when_another_kind_serves_the_model() {
    let mock = MockUpstream::start().await.unwrap();
    let env = Env::new(fast_options());
    embedding_provider(
        &env,
        "a",
        ProviderKind::Anthropic,
        ProviderOptions::default(),
        &mock,
        &[("only-a", "x"), ("both", "x")],
    );
    let e = env
        .hub
        .embeddings(
            admin(),
            EmbeddingsRequest::new("only-a", "hi"),
            RequestContext::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.http_status(), 400);
    assert!(
        e.to_string().contains("Anthropic has no embeddings API"),
        "{e}"
    );
    let o = embedding_provider(
        &env,
        "o",
        ProviderKind::Openai,
        ProviderOptions::default(),
        &mock,
        &[("both", "x")],
    );
    for _ in 0..3 {
        let r = env
            .hub
            .embeddings(
                admin(),
                EmbeddingsRequest::new("both", "hi"),
                RequestContext::default(),
            )
            .await
            .unwrap();
        assert_eq!(r.provider_id, o);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn fails_over_to_the_next_provider_with_one_row() {
    let mock = MockUpstream::start().await.unwrap();
    let env = Env::new(fast_options());
    let bad = embedding_provider(
        &env,
        "bad",
        ProviderKind::Openai,
        ProviderOptions {
            weight: Some(1000),
            ..ProviderOptions::default()
        },
        &mock,
        &[("e", "e-fail503")],
    );
    let good = embedding_provider(
        &env,
        "good",
        ProviderKind::Gemini,
        ProviderOptions {
            weight: Some(0),
            ..ProviderOptions::default()
        },
        &mock,
        &[("e", "gemini-embedding-001")],
    );
    let resp = env
        .hub
        .embeddings(
            admin(),
            EmbeddingsRequest::new("e", "hello world"),
            RequestContext::default(),
        )
        .await
        .unwrap();
    assert_eq!(resp.provider_id, good);
    assert_ne!(resp.provider_id, bad);
    assert_eq!(
        resp.list().unwrap().data[0].embedding.to_floats().unwrap(),
        mock_embedding("hello world", 16)
    );
    let rows = env.rows();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].provider_id, Some(good));
    assert_eq!(rows[0].status, 200);

    // Every provider failing: the error is the last one, recorded once.
    let env = Env::new(fast_options());
    embedding_provider(
        &env,
        "x",
        ProviderKind::Openai,
        ProviderOptions::default(),
        &mock,
        &[("e", "e-fail500")],
    );
    let e = env
        .hub
        .embeddings(
            admin(),
            EmbeddingsRequest::new("e", "hi"),
            RequestContext::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Upstream);
    assert!(!e.public_message().contains("sk-mock"));
    let rows = env.rows();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].status, 502);

    // A malformed answer (one embedding short) is an upstream error, not relayed.
    let env = Env::new(fast_options());
    embedding_provider(
        &env,
        "s",
        ProviderKind::Openai,
        ProviderOptions::default(),
        &mock,
        &[("e", "e-short")],
    );
    let e = env
        .hub
        .embeddings(
            admin(),
            EmbeddingsRequest::new("e", vec!["a".to_owned(), "b".to_owned()]),
            RequestContext::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Upstream);
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_are_scoped_and_limited() {
    let mock = MockUpstream::start().await.unwrap();
    let env = Env::new(fast_options());
    let p = embedding_provider(
        &env,
        "o",
        ProviderKind::Openai,
        ProviderOptions::default(),
        &mock,
        &[("e1", "e1"), ("e2", "e2")],
    );
    let key = env
        .hub
        .registry()
        .create_key(NewKey {
            name: "scoped".into(),
            models: vec!["e1".into()],
            provider_ids: vec![p],
            ..NewKey::default()
        })
        .unwrap()
        .key;
    env.hub
        .embeddings(
            Caller::Key(key.clone()),
            EmbeddingsRequest::new("e1", "hi"),
            RequestContext::default(),
        )
        .await
        .unwrap();
    let e = env
        .hub
        .embeddings(
            Caller::Key(key.clone()),
            EmbeddingsRequest::new("e2", "hi"),
            RequestContext::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied);
    let e = env
        .hub
        .embeddings(
            Caller::Key("nx-bogus".into()),
            EmbeddingsRequest::new("e1", "hi"),
            RequestContext::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Authentication);
    // The model list shows the key's models with their kind.
    let list = env.hub.models_for(&Caller::Key(key.clone())).unwrap();
    assert_eq!(list.data.len(), 1);
    assert_eq!(list.data[0].kind, ModelKind::Embedding);
    assert_eq!(
        env.hub
            .model_for(&Caller::Key(key.clone()), "e1")
            .unwrap()
            .id,
        "e1"
    );
    assert_eq!(
        env.hub
            .model_for(&Caller::Key(key), "e2")
            .unwrap_err()
            .openai_code(),
        "model_not_found"
    );

    // A token limit applies to the input's tokens.
    let limited = env
        .hub
        .registry()
        .create_key(NewKey {
            name: "tpm".into(),
            tpm: Some(3),
            ..NewKey::default()
        })
        .unwrap()
        .key;
    let mut req = EmbeddingsRequest::new("e1", "x");
    req.input = EmbeddingInput::Tokens(vec![1; 10]);
    // Larger than the whole limit, the first passes alone; its 10 tokens then count.
    env.hub
        .embeddings(
            Caller::Key(limited.clone()),
            req.clone(),
            RequestContext::default(),
        )
        .await
        .unwrap();
    let e = env
        .hub
        .embeddings(Caller::Key(limited), req, RequestContext::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::RateLimited);
}

#[tokio::test(flavor = "multi_thread")]
async fn chat_and_embedding_models_are_kept_apart() {
    let mock = MockUpstream::start().await.unwrap();
    let env = Env::new(fast_options());
    embedding_provider(
        &env,
        "o",
        ProviderKind::Openai,
        ProviderOptions::default(),
        &mock,
        &[("emb", "emb")],
    );
    env.provider(
        "c",
        &mock,
        ProviderOptions::default(),
        &[("gpt-4o-mini", "gpt-4o-mini")],
    );
    let e = env
        .hub
        .chat(
            admin(),
            ChatRequest::user("emb", "hi"),
            RequestContext::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.http_status(), 400);
    assert_eq!(
        e.to_string(),
        "model 'emb' is an embedding model; use /v1/embeddings"
    );
    let e = env
        .hub
        .embeddings(
            admin(),
            EmbeddingsRequest::new("gpt-4o-mini", "hi"),
            RequestContext::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.http_status(), 400);
    assert!(e.to_string().contains("is a chat model"), "{e}");
    let e = env
        .hub
        .embeddings(
            admin(),
            EmbeddingsRequest::new("nope", "hi"),
            RequestContext::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);

    // The kind is stored, listed and changeable.
    let m = env.hub.registry().models(None).unwrap();
    let emb = m.iter().find(|m| m.name == "emb").unwrap();
    assert_eq!(emb.kind, ModelKind::Embedding);
    assert_eq!(
        m.iter().find(|m| m.name == "gpt-4o-mini").unwrap().kind,
        ModelKind::Chat
    );
    let kinds: Vec<_> = env
        .hub
        .models_for(&admin())
        .unwrap()
        .data
        .into_iter()
        .map(|m| (m.id, m.kind))
        .collect();
    assert!(kinds.contains(&("emb".into(), ModelKind::Embedding)));
    assert!(kinds.contains(&("gpt-4o-mini".into(), ModelKind::Chat)));
    env.hub
        .registry()
        .update_model(
            emb.id,
            ModelPatch {
                kind: Some(ModelKind::Chat),
                ..ModelPatch::default()
            },
        )
        .unwrap();
    env.hub
        .chat(
            admin(),
            ChatRequest::user("emb", "hi"),
            RequestContext::default(),
        )
        .await
        .unwrap();
    // The provider test calls an embedding model with an embeddings request.
    let pid = emb.provider_id;
    env.hub
        .registry()
        .update_model(
            emb.id,
            ModelPatch {
                kind: Some(ModelKind::Embedding),
                ..ModelPatch::default()
            },
        )
        .unwrap();
    let report = env.hub.test_provider(pid).await.unwrap();
    assert!(report.results.iter().all(|r| r.ok), "{:?}", report.results);
    env.hub
        .registry()
        .update_model(
            emb.id,
            ModelPatch {
                kind: Some(ModelKind::Chat),
                ..ModelPatch::default()
            },
        )
        .unwrap();
    // Reopened, the kind persists.
    drop(env.hub.registry().models(None));
    let reopened = nexus::Hub::open(&env.db, fast_options()).unwrap();
    assert_eq!(
        reopened.registry().model(emb.id).unwrap().kind,
        ModelKind::Chat
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn usage_rows_group_by_endpoint() {
    let mock = MockUpstream::start().await.unwrap();
    let env = Env::new(fast_options());
    embedding_provider(
        &env,
        "o",
        ProviderKind::Openai,
        ProviderOptions::default(),
        &mock,
        &[("emb", "emb")],
    );
    env.provider(
        "c",
        &mock,
        ProviderOptions::default(),
        &[("gpt-4o-mini", "gpt-4o-mini")],
    );
    env.hub
        .embeddings(
            admin(),
            EmbeddingsRequest::new("emb", "one two three"),
            RequestContext::default(),
        )
        .await
        .unwrap();
    env.hub
        .chat(
            admin(),
            ChatRequest::user("gpt-4o-mini", "hi"),
            RequestContext::default(),
        )
        .await
        .unwrap();
    let ts = env
        .hub
        .timeseries(&TimeseriesQuery {
            bucket: nexus::usage::Bucket::Hour,
            group_by: Some(GroupBy::Endpoint),
            since: 0,
        })
        .unwrap();
    let emb: Vec<_> = ts
        .points
        .iter()
        .filter(|p| p.group == "embeddings")
        .collect();
    assert_eq!(emb.len(), 1, "{:?}", ts.points);
    assert_eq!(emb[0].requests, 1);
    assert_eq!(emb[0].prompt_tokens, 3);
    assert_eq!(emb[0].completion_tokens, 0);
    assert!(ts.points.iter().any(|p| p.group == "chat"));
    // Embeddings belong to no conversation.
    assert_eq!(env.hub.summary().unwrap().conversations, 1);
}
