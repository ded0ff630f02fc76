//! `/v1/embeddings`, `/embeddings` and `/v1/models/{id}` over a real socket, with models of both
//! kinds created through the admin API.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::{json, Value};

/// Adds an embedding model `name` to the test server's mock provider through the admin API.
async fn embedding_model(s: &TestServer, name: &str) -> Value {
    let (status, m) = s
        .admin_json(
            reqwest::Method::POST,
            &format!("/api/providers/{}/models", s.provider_id),
            Some(json!({"name": name, "kind": "embedding"})),
        )
        .await;
    assert_eq!(status, 201, "{m}");
    assert_eq!(m["kind"], "embedding");
    m
}

async fn embed(s: &TestServer, path: &str, key: &str, body: &Value) -> reqwest::Response {
    s.http
        .post(s.url(path))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn embeddings_are_relayed_on_both_paths() {
    let s = TestServer::start().await;
    embedding_model(&s, "text-embedding-3-small").await;
    for path in ["/v1/embeddings", "/embeddings"] {
        let r = embed(
            &s,
            path,
            &s.key,
            &json!({"model": "text-embedding-3-small", "input": ["a b", "c"], "dimensions": 4}),
        )
        .await;
        assert_eq!(r.status(), 200, "{path}");
        assert!(header(&r, "content-type")
            .unwrap()
            .starts_with("application/json"));
        assert!(header(&r, "x-request-id").is_some());
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["object"], "list");
        assert_eq!(v["data"].as_array().unwrap().len(), 2);
        let got: Vec<f32> = serde_json::from_value(v["data"][0]["embedding"].clone()).unwrap();
        assert_eq!(got, nexus::testing::mock_embedding("a b", 4));
        assert_eq!(v["usage"]["prompt_tokens"], 3);
    }
}

#[tokio::test]
async fn errors_are_openai_bodies() {
    let s = TestServer::start().await;
    embedding_model(&s, "emb").await;
    // Bad key: refused before the body is read.
    let r = embed(
        &s,
        "/v1/embeddings",
        "nx-wrong",
        &json!({"model": "emb", "input": "x"}),
    )
    .await;
    expect_error(r, 401, Some("invalid_api_key")).await;
    // Malformed bodies.
    for bad in [
        json!({"model": "emb"}),
        json!({"model": "emb", "input": ""}),
        json!({"model": "emb", "input": ["a", 1]}),
        json!({"model": "emb", "input": "x", "encoding_format": "int8"}),
    ] {
        let r = embed(&s, "/v1/embeddings", &s.key, &bad).await;
        expect_error(r, 400, None).await;
    }
    // A chat model on the embeddings path, and an embedding model on the chat path.
    let r = embed(
        &s,
        "/v1/embeddings",
        &s.key,
        &json!({"model": "gpt-4o", "input": "x"}),
    )
    .await;
    let v = expect_error(r, 400, None).await;
    assert!(
        v["message"].as_str().unwrap().contains("is a chat model"),
        "{v}"
    );
    let r = s.chat(&s.key, &body("emb", "hi")).await;
    let v = expect_error(r, 400, None).await;
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("is an embedding model; use /v1/embeddings"),
        "{v}"
    );
    let r = embed(
        &s,
        "/v1/embeddings",
        &s.key,
        &json!({"model": "nope", "input": "x"}),
    )
    .await;
    expect_error(r, 404, Some("model_not_found")).await;
    // An upstream failure is a 502 without the upstream's detail.
    embedding_model(&s, "emb-fail500").await;
    let r = embed(
        &s,
        "/v1/embeddings",
        &s.key,
        &json!({"model": "emb-fail500", "input": "x"}),
    )
    .await;
    let v = expect_error(r, 502, None).await;
    assert!(!v.to_string().contains("sk-mock"), "{v}");
}

#[tokio::test]
async fn one_model_is_listed_by_id_within_the_key_scope() {
    let s = TestServer::start().await;
    let m = embedding_model(&s, "emb").await;
    for path in ["/v1/models/emb", "/models/emb"] {
        let r = s
            .http
            .get(s.url(path))
            .bearer_auth(&s.key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["id"], "emb");
        assert_eq!(v["object"], "model");
        assert_eq!(v["kind"], "embedding");
    }
    let r = s
        .http
        .get(s.url("/v1/models/gpt-4o"))
        .bearer_auth(&s.key)
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["kind"], "chat");
    let list: Value = s
        .http
        .get(s.url("/v1/models"))
        .bearer_auth(&s.key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(list["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["id"] == "emb" && m["kind"] == "embedding"));
    // Names with a slash are one id.
    let r = s
        .http
        .get(s.url("/v1/models/org/none"))
        .bearer_auth(&s.key)
        .send()
        .await
        .unwrap();
    expect_error(r, 404, Some("model_not_found")).await;
    // A key scoped to other models does not see it.
    let scoped = s.new_key(nexus::records::NewKey {
        name: "scoped".into(),
        models: vec!["gpt-4o".into()],
        ..Default::default()
    });
    let r = s
        .http
        .get(s.url("/v1/models/emb"))
        .bearer_auth(&scoped)
        .send()
        .await
        .unwrap();
    expect_error(r, 404, Some("model_not_found")).await;
    let r = s
        .http
        .get(s.url("/v1/models/emb"))
        .bearer_auth("nx-wrong")
        .send()
        .await
        .unwrap();
    expect_error(r, 401, Some("invalid_api_key")).await;
    // The kind can be changed through the admin API.
    let (status, v) = s
        .admin_json(
            reqwest::Method::PATCH,
            &format!("/api/models/{}", m["id"]),
            Some(json!({"kind": "chat"})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["kind"], "chat");
    let (status, _) = s
        .admin_json(
            reqwest::Method::PATCH,
            &format!("/api/models/{}", m["id"]),
            Some(json!({"kind": "vision"})),
        )
        .await;
    assert_eq!(status, 400);
}
