//! The admin API of docs/API.md: every route, auth failures, 404/409, the legacy
//! `personalized_key`, secrets never returned, stats after chats, token counting and the
//! original `/stats/*` routes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};

/// Upstream secrets used in these tests all contain this marker.
const MARK: &str = "SECRET";

/// An admin call that also checks no upstream secret is in the answer.
async fn call(s: &TestServer, m: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let (st, v) = s.admin_json(m, path, body).await;
    let text = v.to_string();
    assert!(
        !text.contains(MARK),
        "{path} leaked an upstream key: {text}"
    );
    assert!(!text.contains("sealed"), "{path}: {text}");
    if st >= 400 {
        check_error_shape(&v);
    }
    (st, v)
}

/// Every admin route with a sample body: (method, path, body).
fn admin_routes(pid: i64, mid: i64, kid: i64) -> Vec<(Method, String, Option<Value>)> {
    vec![
        (Method::GET, "/api/providers".into(), None),
        (
            Method::POST,
            "/api/providers".into(),
            Some(
                json!({"name": "x", "base_url": "http://127.0.0.1:1", "api_key": "k-SECRET-123456789"}),
            ),
        ),
        (Method::GET, format!("/api/providers/{pid}"), None),
        (
            Method::PATCH,
            format!("/api/providers/{pid}"),
            Some(json!({"description": "d"})),
        ),
        (Method::DELETE, format!("/api/providers/{pid}"), None),
        (Method::POST, format!("/api/providers/{pid}/test"), None),
        (Method::GET, format!("/api/providers/{pid}/models"), None),
        (
            Method::POST,
            format!("/api/providers/{pid}/models"),
            Some(json!({"name": "zz"})),
        ),
        (Method::GET, "/api/models".into(), None),
        (Method::GET, format!("/api/models/{mid}"), None),
        (
            Method::PATCH,
            format!("/api/models/{mid}"),
            Some(json!({"description": "d"})),
        ),
        (Method::DELETE, format!("/api/models/{mid}"), None),
        (Method::GET, "/api/keys".into(), None),
        (Method::POST, "/api/keys".into(), Some(json!({"name": "k"}))),
        (Method::GET, format!("/api/keys/{kid}"), None),
        (
            Method::PATCH,
            format!("/api/keys/{kid}"),
            Some(json!({"name": "k2"})),
        ),
        (Method::DELETE, format!("/api/keys/{kid}"), None),
        (Method::GET, "/api/stats/summary".into(), None),
        (Method::GET, "/api/stats/timeseries".into(), None),
        (Method::GET, "/api/stats/conversations/abc".into(), None),
        (
            Method::POST,
            "/api/tokens/count".into(),
            Some(json!({"model": "gpt-4o", "text": "hi"})),
        ),
        (Method::GET, "/stats/total".into(), None),
        (Method::GET, "/stats/conversation/abc".into(), None),
    ]
}

#[tokio::test]
async fn every_admin_route_needs_the_admin_token() {
    let s = TestServer::start().await;
    let mid = s.hub.registry().models(Some(s.provider_id)).unwrap()[0].id;
    let kid = s.hub.registry().keys().unwrap()[0].id;
    let routes = admin_routes(s.provider_id, mid, kid);
    assert_eq!(routes.len(), 23);
    for (m, path, body) in &routes {
        for auth in [None, Some("wrong-token"), Some(s.key.as_str()), Some("")] {
            let mut rb = s.http.request(m.clone(), s.url(path));
            if let Some(a) = auth {
                rb = rb.header("authorization", format!("Bearer {a}"));
            }
            if let Some(b) = body {
                rb = rb.json(b);
            }
            let r = rb.send().await.unwrap();
            let e = expect_error(r, 401, Some("invalid_api_key")).await;
            assert_eq!(e["type"], "invalid_request_error", "{m} {path}");
        }
        // A token in the query works only for the WebSocket-style `?token=`, and a wrong one fails.
        let r = s
            .http
            .request(m.clone(), s.url(&format!("{path}?token=nope")))
            .send()
            .await
            .unwrap();
        expect_error(r, 401, None).await;
    }
    // Nothing changed.
    assert_eq!(s.hub.registry().providers().unwrap().len(), 2);
    assert_eq!(s.hub.registry().keys().unwrap().len(), 1);
    assert_eq!(
        s.hub.registry().models(None).unwrap().len(),
        MODELS.len() + BAD_MODELS.len()
    );
}

#[tokio::test]
async fn providers_crud() {
    let s = TestServer::start().await;
    let (st, p) = call(&s, Method::POST, "/api/providers", Some(json!({
        "name": "openai", "base_url": s.mock.base_url(), "api_key": "sk-SECRET-provider-key-wxyz",
        "description": "main", "options": {"max_retries": 2, "headers": {"x-org": "o1"}}
    }))).await;
    assert_eq!(st, 201, "{p}");
    let id = p["id"].as_i64().unwrap();
    assert_eq!(p["name"], "openai");
    assert_eq!(
        p["endpoint"],
        format!("{}/v1/chat/completions", s.mock.base_url())
    );
    assert_eq!(p["api_key_hint"], "sk-...wxyz");
    assert_eq!(p["enabled"], true);
    assert_eq!(p["model_count"], 0);
    assert_eq!(p["options"]["max_retries"], 2);
    for f in ["description", "created_at", "updated_at", "base_url"] {
        assert!(p.get(f).is_some(), "{f}");
    }
    assert!(p.get("api_key").is_none());
    // Conflict on the name; bad bodies are 400.
    let (st, e) = call(&s, Method::POST, "/api/providers", Some(json!({"name": "openai", "base_url": "http://127.0.0.1:9", "api_key": "k-SECRET-1234567"}))).await;
    assert_eq!(st, 409, "{e}");
    assert_eq!(e["error"]["code"], "conflict");
    for bad in [
        json!({"name": "n"}),
        json!({"name": "n", "base_url": "http://127.0.0.1:9", "api_key": ""}),
        json!({"name": "n", "base_url": "not a url", "api_key": "k-SECRET-1234567"}),
        json!({"name": "", "base_url": "http://127.0.0.1:9", "api_key": "k-SECRET-1234567"}),
        json!({"name": 1, "base_url": "http://127.0.0.1:9", "api_key": "k-SECRET-1234567"}),
        json!({"name": "n", "base_url": "http://127.0.0.1:9", "api_key": "k-SECRET-1234567", "bogus": 1}),
        json!([]),
    ] {
        let (st, e) = call(&s, Method::POST, "/api/providers", Some(bad.clone())).await;
        assert_eq!(st, 400, "{bad}: {e}");
    }
    let r = s
        .admin(Method::POST, "/api/providers")
        .header("content-type", "application/json")
        .body("{oops")
        .send()
        .await
        .unwrap();
    expect_error(r, 400, None).await;
    // The original field names still work.
    let (st, legacy) = call(
        &s,
        Method::POST,
        "/api/providers",
        Some(json!({
            "name": "old", "server_url": "http://127.0.0.1:9/", "server_key": "sk-SECRET-old-123456"
        })),
    )
    .await;
    assert_eq!(st, 201, "{legacy}");
    assert_eq!(legacy["endpoint"], "http://127.0.0.1:9/chat/completions");

    let (st, list) = call(&s, Method::GET, "/api/providers", None).await;
    assert_eq!(st, 200);
    assert_eq!(list.as_array().unwrap().len(), 4);
    let (st, one) = call(&s, Method::GET, &format!("/api/providers/{id}"), None).await;
    assert_eq!(st, 200);
    assert_eq!(one, p);
    let (st, e) = call(&s, Method::GET, "/api/providers/99999", None).await;
    assert_eq!((st, e["error"]["code"].as_str()), (404, Some("not_found")));
    let (st, _) = call(&s, Method::GET, "/api/providers/abc", None).await;
    assert_eq!(st, 400);

    // PATCH: any field; api_key replaces the key (only the hint changes in answers).
    let (st, u) = call(
        &s,
        Method::PATCH,
        &format!("/api/providers/{id}"),
        Some(json!({
            "description": "changed", "api_key": "sk-SECRET-new-key-abcd", "enabled": false
        })),
    )
    .await;
    assert_eq!(st, 200, "{u}");
    assert_eq!(u["description"], "changed");
    assert_eq!(u["api_key_hint"], "sk-...abcd");
    assert_eq!(u["enabled"], false);
    assert_eq!(u["name"], "openai");
    let (st, _) = call(
        &s,
        Method::PATCH,
        &format!("/api/providers/{id}"),
        Some(json!({"name": "mock"})),
    )
    .await;
    assert_eq!(st, 409);
    let (st, _) = call(
        &s,
        Method::PATCH,
        "/api/providers/99999",
        Some(json!({"description": "x"})),
    )
    .await;
    assert_eq!(st, 404);
    let (st, _) = call(
        &s,
        Method::PATCH,
        &format!("/api/providers/{id}"),
        Some(json!({"enabled": "yes"})),
    )
    .await;
    assert_eq!(st, 400);

    // DELETE cascades to models.
    let (st, _) = call(
        &s,
        Method::POST,
        &format!("/api/providers/{id}/models"),
        Some(json!({"name": "gpt-4o"})),
    )
    .await;
    assert_eq!(st, 201);
    let (st, v) = call(&s, Method::DELETE, &format!("/api/providers/{id}"), None).await;
    assert_eq!((st, v), (204, Value::Null));
    let (st, _) = call(&s, Method::GET, &format!("/api/providers/{id}"), None).await;
    assert_eq!(st, 404);
    let (st, _) = call(
        &s,
        Method::GET,
        &format!("/api/providers/{id}/models"),
        None,
    )
    .await;
    assert_eq!(st, 404);
    let (_, models) = call(&s, Method::GET, "/api/models", None).await;
    assert!(models
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["provider_id"] != id));
    let (st, _) = call(&s, Method::DELETE, &format!("/api/providers/{id}"), None).await;
    assert_eq!(st, 404);
}

#[tokio::test]
async fn models_crud() {
    let s = TestServer::start().await;
    let pid = s.provider_id;
    let (st, m) = call(&s, Method::POST, &format!("/api/providers/{pid}/models"), Some(json!({
        "name": "alias", "upstream_name": "gpt-4o", "description": "an alias", "input_price": 2.5, "output_price": 10.0
    }))).await;
    assert_eq!(st, 201, "{m}");
    let mid = m["id"].as_i64().unwrap();
    assert_eq!(m["provider_id"], pid);
    assert_eq!(m["provider_name"], "mock");
    assert_eq!(m["name"], "alias");
    assert_eq!(m["upstream_name"], "gpt-4o");
    assert_eq!(m["input_price"], 2.5);
    assert!(m["created_at"].is_i64());
    // The alias routes to the upstream name.
    let r = s.chat(&s.key, &body("alias", "via alias")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(s.mock.last_request().unwrap()["model"], "gpt-4o");
    // Duplicates, bad providers, bad bodies.
    let (st, _) = call(
        &s,
        Method::POST,
        &format!("/api/providers/{pid}/models"),
        Some(json!({"name": "alias"})),
    )
    .await;
    assert_eq!(st, 409);
    let (st, _) = call(
        &s,
        Method::POST,
        "/api/providers/99999/models",
        Some(json!({"name": "m"})),
    )
    .await;
    assert_eq!(st, 404);
    let (st, _) = call(
        &s,
        Method::POST,
        &format!("/api/providers/{pid}/models"),
        Some(json!({"upstream_name": "m"})),
    )
    .await;
    assert_eq!(st, 400);
    let (st, _) = call(
        &s,
        Method::POST,
        &format!("/api/providers/{pid}/models"),
        Some(json!({"name": "p", "input_price": "cheap"})),
    )
    .await;
    assert_eq!(st, 400);
    // The original field name.
    let (st, _) = call(
        &s,
        Method::POST,
        &format!("/api/providers/{pid}/models"),
        Some(json!({"model_name": "legacy-name"})),
    )
    .await;
    assert_eq!(st, 201);
    // Lists.
    let (st, list) = call(
        &s,
        Method::GET,
        &format!("/api/providers/{pid}/models"),
        None,
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(list.as_array().unwrap().len(), MODELS.len() + 2);
    let (_, all) = call(&s, Method::GET, "/api/models", None).await;
    assert_eq!(
        all.as_array().unwrap().len(),
        MODELS.len() + BAD_MODELS.len() + 2
    );
    let (st, one) = call(&s, Method::GET, &format!("/api/models/{mid}"), None).await;
    assert_eq!((st, &one), (200, &m));
    let (st, _) = call(&s, Method::GET, "/api/models/99999", None).await;
    assert_eq!(st, 404);
    // PATCH; null clears nullable fields.
    let (st, u) = call(
        &s,
        Method::PATCH,
        &format!("/api/models/{mid}"),
        Some(json!({"description": "new", "input_price": null, "upstream_name": null})),
    )
    .await;
    assert_eq!(st, 200, "{u}");
    assert_eq!(u["description"], "new");
    assert_eq!(u["input_price"], Value::Null);
    assert_eq!(u["output_price"], 10.0);
    assert_eq!(u["upstream_name"], Value::Null);
    let (st, _) = call(
        &s,
        Method::PATCH,
        &format!("/api/models/{mid}"),
        Some(json!({"name": "gpt-4o"})),
    )
    .await;
    assert_eq!(st, 409);
    let (st, _) = call(
        &s,
        Method::PATCH,
        "/api/models/99999",
        Some(json!({"description": "x"})),
    )
    .await;
    assert_eq!(st, 404);
    let (st, _) = call(
        &s,
        Method::PATCH,
        &format!("/api/models/{mid}"),
        Some(json!({"nope": 1})),
    )
    .await;
    assert_eq!(st, 400);
    // DELETE.
    let (st, _) = call(&s, Method::DELETE, &format!("/api/models/{mid}"), None).await;
    assert_eq!(st, 204);
    let (st, _) = call(&s, Method::DELETE, &format!("/api/models/{mid}"), None).await;
    assert_eq!(st, 404);
    expect_error(
        s.chat(&s.key, &body("alias", "x")).await,
        404,
        Some("model_not_found"),
    )
    .await;
}

#[tokio::test]
async fn keys_crud_and_plaintext_only_once() {
    let s = TestServer::start().await;
    let (st, k) = call(&s, Method::POST, "/api/keys", Some(json!({
        "name": "team-a", "provider_ids": [s.provider_id], "models": ["gpt-4o"], "rpm": 100, "tpm": 100000
    }))).await;
    assert_eq!(st, 201, "{k}");
    let plaintext = k["key"].as_str().unwrap().to_owned();
    let kid = k["id"].as_i64().unwrap();
    assert!(plaintext.starts_with(k["prefix"].as_str().unwrap()));
    assert_eq!(k["provider_ids"], json!([s.provider_id]));
    assert_eq!(k["models"], json!(["gpt-4o"]));
    assert_eq!(k["rpm"], 100);
    assert_eq!(k["enabled"], true);
    for f in ["expires_at", "tpm", "created_at", "last_used_at", "name"] {
        assert!(k.get(f).is_some(), "{f}");
    }
    // The key works and is scoped.
    assert_eq!(s.chat(&plaintext, &body("gpt-4o", "x")).await.status(), 200);
    expect_error(
        s.chat(&plaintext, &body("m-x-chunks20", "x")).await,
        403,
        None,
    )
    .await;
    // Never again in plaintext.
    let (st, list) = call(&s, Method::GET, "/api/keys", None).await;
    assert_eq!(st, 200);
    assert!(!list.to_string().contains(&plaintext));
    assert!(list
        .as_array()
        .unwrap()
        .iter()
        .all(|k| k.get("key").is_none()));
    let (st, one) = call(&s, Method::GET, &format!("/api/keys/{kid}"), None).await;
    assert_eq!(st, 200);
    assert!(one.get("key").is_none() && !one.to_string().contains(&plaintext));
    // Bad bodies and ids.
    let (st, _) = call(
        &s,
        Method::POST,
        "/api/keys",
        Some(json!({"name": "x", "provider_ids": [99999]})),
    )
    .await;
    assert_eq!(st, 400);
    let (st, _) = call(
        &s,
        Method::POST,
        "/api/keys",
        Some(json!({"name": "x", "rpm": -1})),
    )
    .await;
    assert_eq!(st, 400);
    let (st, _) = call(&s, Method::POST, "/api/keys", Some(json!({}))).await;
    assert_eq!(st, 400);
    let (st, _) = call(&s, Method::GET, "/api/keys/99999", None).await;
    assert_eq!(st, 404);
    // PATCH: disable, then clear limits, re-enable.
    let (st, u) = call(
        &s,
        Method::PATCH,
        &format!("/api/keys/{kid}"),
        Some(json!({"enabled": false, "name": "team-b"})),
    )
    .await;
    assert_eq!(st, 200, "{u}");
    assert_eq!(
        (u["enabled"].clone(), u["name"].clone()),
        (json!(false), json!("team-b"))
    );
    assert!(u.get("key").is_none());
    expect_error(s.chat(&plaintext, &body("gpt-4o", "x")).await, 401, None).await;
    let (st, u) = call(
        &s,
        Method::PATCH,
        &format!("/api/keys/{kid}"),
        Some(json!({"enabled": true, "rpm": null, "models": []})),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(u["rpm"], Value::Null);
    assert_eq!(
        s.chat(&plaintext, &body("m-x-chunks20", "x"))
            .await
            .status(),
        200
    );
    let (st, _) = call(
        &s,
        Method::PATCH,
        "/api/keys/99999",
        Some(json!({"name": "x"})),
    )
    .await;
    assert_eq!(st, 404);
    let (st, _) = call(
        &s,
        Method::PATCH,
        &format!("/api/keys/{kid}"),
        Some(json!({"rpm": "many"})),
    )
    .await;
    assert_eq!(st, 400);
    // DELETE revokes.
    let (st, _) = call(&s, Method::DELETE, &format!("/api/keys/{kid}"), None).await;
    assert_eq!(st, 204);
    expect_error(s.chat(&plaintext, &body("gpt-4o", "x")).await, 401, None).await;
    let (st, _) = call(&s, Method::DELETE, &format!("/api/keys/{kid}"), None).await;
    assert_eq!(st, 404);
}

#[tokio::test]
async fn personalized_key_keeps_working() {
    let s = TestServer::start().await;
    let legacy = "pk-legacy-client-key-0123456789";
    let (st, p) = call(
        &s,
        Method::POST,
        "/api/providers",
        Some(json!({
            "name": "legacy", "base_url": s.mock.base_url(), "api_key": "sk-SECRET-legacy-upstream",
            "personalized_key": legacy
        })),
    )
    .await;
    assert_eq!(st, 201, "{p}");
    let pid = p["id"].as_i64().unwrap();
    assert!(!p.to_string().contains(legacy));
    let (st, _) = call(
        &s,
        Method::POST,
        &format!("/api/providers/{pid}/models"),
        Some(json!({"name": "legacy-model"})),
    )
    .await;
    assert_eq!(st, 201);
    // The old client's key works on the OpenAI route, streamed or not.
    let r = s.chat(legacy, &body("legacy-model", "old client")).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "old client");
    let r = s.chat(legacy, &json!({"model": "legacy-model", "stream": true, "messages": [{"role": "user", "content": "s"}]})).await;
    assert_eq!(text_of(&chunks(&sse_events(r).await)), "s");
    // Scoped to that provider: another provider's model is refused.
    let r = s.chat(legacy, &body("gpt-4o", "x")).await;
    let st = r.status().as_u16();
    assert!(st == 403 || st == 404, "{st}");
    expect_error(r, st, None).await;
    // It shows up as a key (prefix only) and the plaintext is not listed.
    let (_, keys) = call(&s, Method::GET, "/api/keys", None).await;
    assert!(!keys.to_string().contains(legacy));
    let k = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["provider_ids"] == json!([pid]))
        .expect("legacy key listed")
        .clone();
    assert!(legacy.starts_with(k["prefix"].as_str().unwrap()));
    // Attaching the same key to a second provider extends its scope.
    let (st, p2) = call(&s, Method::POST, "/api/providers", Some(json!({
        "name": "legacy2", "base_url": s.mock.base_url(), "api_key": "sk-SECRET-legacy-upstream2",
        "personalized_key": legacy
    }))).await;
    assert_eq!(st, 201);
    let pid2 = p2["id"].as_i64().unwrap();
    call(
        &s,
        Method::POST,
        &format!("/api/providers/{pid2}/models"),
        Some(json!({"name": "legacy-model-2"})),
    )
    .await;
    assert_eq!(
        s.chat(legacy, &body("legacy-model-2", "x")).await.status(),
        200
    );
    // Via PATCH too.
    let other = "pk-another-legacy-key-abcdefghij";
    let (st, _) = call(
        &s,
        Method::PATCH,
        &format!("/api/providers/{pid}"),
        Some(json!({"personalized_key": other})),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(
        s.chat(other, &body("legacy-model", "x")).await.status(),
        200
    );
    // The models list of the legacy key shows both providers' models.
    let v: Value = s
        .http
        .get(s.url("/v1/models"))
        .bearer_auth(legacy)
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
    assert_eq!(ids, ["legacy-model", "legacy-model-2"]);
}

#[tokio::test]
async fn upstream_keys_never_leave_the_server() {
    let s = TestServer::start().await;
    // Every read route, after every kind of write; `call` checks each answer.
    let (_, p) = call(&s, Method::POST, "/api/providers", Some(json!({"name": "p", "base_url": s.mock.base_url(), "api_key": "sk-SECRET-xyz-0987654321"}))).await;
    let pid = p["id"].as_i64().unwrap();
    call(
        &s,
        Method::PATCH,
        &format!("/api/providers/{pid}"),
        Some(json!({"api_key": "sk-SECRET-rotated-1111"})),
    )
    .await;
    call(
        &s,
        Method::POST,
        &format!("/api/providers/{pid}/models"),
        Some(json!({"name": "gpt-4o"})),
    )
    .await;
    for path in [
        "/api/providers",
        &format!("/api/providers/{pid}"),
        &format!("/api/providers/{}", s.provider_id),
        "/api/models",
        &format!("/api/providers/{pid}/models"),
        "/api/keys",
        "/api/stats/summary",
    ] {
        let (st, _) = call(&s, Method::GET, path, None).await;
        assert_eq!(st, 200, "{path}");
    }
    let (st, _) = call(
        &s,
        Method::POST,
        &format!("/api/providers/{pid}/test"),
        None,
    )
    .await;
    assert_eq!(st, 200);
    // The mock received the rotated key.
    let auth = s
        .mock
        .last_headers()
        .into_iter()
        .find(|(k, _)| k == "authorization")
        .unwrap()
        .1;
    assert_eq!(auth, "Bearer sk-SECRET-rotated-1111");
    // Not in errors either.
    let r = s.chat(&s.key, &body("b-x-fail500", "x")).await;
    assert!(!r.text().await.unwrap().contains("sk-other-upstream-key"));
}

#[tokio::test]
async fn provider_test_endpoint() {
    let s = TestServer::start().await;
    let (_, p) = call(
        &s,
        Method::POST,
        "/api/providers",
        Some(
            json!({"name": "t", "base_url": s.mock.base_url(), "api_key": "sk-SECRET-test-12345"}),
        ),
    )
    .await;
    let pid = p["id"].as_i64().unwrap();
    for m in ["t-x-chunks8", "t-x-fail500"] {
        let (st, _) = call(
            &s,
            Method::POST,
            &format!("/api/providers/{pid}/models"),
            Some(json!({"name": m})),
        )
        .await;
        assert_eq!(st, 201);
    }
    let (st, v) = call(
        &s,
        Method::POST,
        &format!("/api/providers/{pid}/test"),
        None,
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["provider_id"], pid);
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    let ok = results
        .iter()
        .find(|r| r["model"] == "t-x-chunks8")
        .unwrap();
    assert_eq!(ok["ok"], true, "{ok}");
    assert_eq!(ok["stream_supported"], true);
    assert!(ok["ttft_ms"].as_f64().unwrap() >= 0.0);
    assert!(ok["total_ms"].as_f64().unwrap() >= ok["ttft_ms"].as_f64().unwrap());
    assert_eq!(ok["completion_tokens"], 8);
    assert!(ok["tokens_per_second"].as_f64().unwrap() > 0.0);
    assert_eq!(ok["error"], Value::Null);
    let bad = results
        .iter()
        .find(|r| r["model"] == "t-x-fail500")
        .unwrap();
    assert_eq!(bad["ok"], false);
    assert!(
        bad["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{bad}"
    );
    let (st, _) = call(&s, Method::POST, "/api/providers/99999/test", None).await;
    assert_eq!(st, 404);
    // An empty provider answers an empty list.
    let (_, e) = call(&s, Method::POST, "/api/providers", Some(json!({"name": "empty", "base_url": s.mock.base_url(), "api_key": "sk-SECRET-e-1234567"}))).await;
    let (st, v) = call(
        &s,
        Method::POST,
        &format!("/api/providers/{}/test", e["id"]),
        None,
    )
    .await;
    assert_eq!((st, v["results"].clone()), (200, json!([])));
}

#[tokio::test]
async fn stats_after_chats() {
    let s = TestServer::start().await;
    let conv = "conv-stats-1";
    for text in ["first question", "second question"] {
        let r = s
            .http
            .post(s.url("/v1/chat/completions"))
            .bearer_auth(&s.key)
            .header("x-conversation-id", conv)
            .json(&body("gpt-4o", text))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let r = s
        .http
        .post(s.url("/v1/chat/completions"))
        .bearer_auth(&s.key)
        .header("x-conversation-id", conv)
        .json(&json!({"model": "m-x-chunks20", "stream": true, "messages": [{"role": "user", "content": "third"}]}))
        .send()
        .await
        .unwrap();
    sse_events(r).await;
    // One failure.
    s.chat(&s.key, &body("b-x-fail500", "x")).await;
    s.hub.flush().unwrap();

    let (st, sum) = call(&s, Method::GET, "/api/stats/summary", None).await;
    assert_eq!(st, 200, "{sum}");
    assert_eq!(sum["providers"], 2);
    assert_eq!(sum["models"], (MODELS.len() + BAD_MODELS.len()) as u64);
    assert_eq!(sum["keys"], 1);
    assert_eq!(sum["requests"], 4);
    assert_eq!(sum["errors"], 1);
    assert_eq!(sum["rounds"], 3);
    assert_eq!(sum["total_rounds"], 3);
    assert_eq!(sum["conversations"], 1);
    assert_eq!(sum["total_conversations"], 1);
    // Mock usage: 10 prompt tokens per message; completion = echo words or 20 chunks.
    assert_eq!(sum["prompt_tokens"], 30);
    assert_eq!(sum["completion_tokens"], 2 + 2 + 20);
    assert_eq!(sum["total_tokens"], 54);

    let (st, ts) = call(
        &s,
        Method::GET,
        "/api/stats/timeseries?bucket=hour&group_by=model",
        None,
    )
    .await;
    assert_eq!(st, 200, "{ts}");
    assert_eq!(ts["bucket"], "hour");
    assert_eq!(ts["group_by"], "model");
    let points = ts["points"].as_array().unwrap();
    let gpt: Vec<&Value> = points.iter().filter(|p| p["group"] == "gpt-4o").collect();
    assert_eq!(gpt.len(), 1, "{ts}");
    assert_eq!(gpt[0]["requests"], 2);
    assert_eq!(gpt[0]["prompt_tokens"], 20);
    for f in [
        "ts",
        "errors",
        "completion_tokens",
        "avg_latency_ms",
        "avg_ttft_ms",
    ] {
        assert!(gpt[0].get(f).is_some(), "{f}");
    }
    let total: u64 = points.iter().map(|p| p["requests"].as_u64().unwrap()).sum();
    assert_eq!(total, 4);
    let (_, ts) = call(&s, Method::GET, "/api/stats/timeseries?bucket=day", None).await;
    let points = ts["points"].as_array().unwrap();
    assert_eq!(points.len(), 1, "{ts}");
    assert_eq!(points[0]["group"], "all");
    assert_eq!(points[0]["requests"], 4);
    assert_eq!(points[0]["errors"], 1);
    for g in ["provider", "key"] {
        let (st, ts) = call(
            &s,
            Method::GET,
            &format!("/api/stats/timeseries?group_by={g}"),
            None,
        )
        .await;
        assert_eq!(st, 200);
        let total: u64 = ts["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["requests"].as_u64().unwrap())
            .sum();
        assert_eq!(total, 4, "{g}: {ts}");
    }
    let future = nexus::now_ms() / 1000 + 86400;
    let (_, ts) = call(
        &s,
        Method::GET,
        &format!("/api/stats/timeseries?since={future}"),
        None,
    )
    .await;
    assert_eq!(ts["points"], json!([]));
    for bad in ["bucket=minute", "group_by=color", "since=yesterday"] {
        let (st, e) = call(
            &s,
            Method::GET,
            &format!("/api/stats/timeseries?{bad}"),
            None,
        )
        .await;
        assert_eq!(st, 400, "{bad}: {e}");
    }

    let (st, c) = call(
        &s,
        Method::GET,
        &format!("/api/stats/conversations/{conv}"),
        None,
    )
    .await;
    assert_eq!(st, 200, "{c}");
    assert_eq!(c["conversation_id"], conv);
    assert_eq!(c["rounds"], 3);
    assert_eq!(c["prompt_tokens"], 30);
    assert_eq!(c["completion_tokens"], 24);
    assert_eq!(c["total_tokens"], 54);
    let msgs = c["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 6, "{c}");
    assert_eq!(msgs[0]["role"], "user");
    assert_eq!(msgs[0]["content"], "first question");
    assert_eq!(msgs[1]["role"], "assistant");
    assert_eq!(msgs[1]["content"], "first question");
    for f in ["timestamp", "tokens_count"] {
        assert!(msgs[0].get(f).is_some(), "{f}");
    }
    let (st, _) = call(
        &s,
        Method::GET,
        "/api/stats/conversations/no-such-conversation",
        None,
    )
    .await;
    assert_eq!(st, 404);

    // The original routes.
    let (st, t) = call(&s, Method::GET, "/stats/total", None).await;
    assert_eq!(st, 200);
    assert_eq!(
        t,
        json!({"total_conversations": 1, "total_rounds": 3, "prompt_tokens": 30, "completion_tokens": 24, "total_tokens": 54})
    );
    let (st, c2) = call(
        &s,
        Method::GET,
        &format!("/stats/conversation/{conv}"),
        None,
    )
    .await;
    assert_eq!((st, c2), (200, c));
}

#[tokio::test]
async fn token_counting() {
    let s = TestServer::start().await;
    let (st, v) = call(
        &s,
        Method::POST,
        "/api/tokens/count",
        Some(json!({"model": "gpt-4o", "text": "hello world"})),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["tokens"], 2);
    assert_eq!(v["method"], "exact");
    assert_eq!(v["encoding"], "o200k_base");
    let (_, v) = call(
        &s,
        Method::POST,
        "/api/tokens/count",
        Some(json!({"model": "gpt-4", "text": "hello world"})),
    )
    .await;
    assert_eq!(
        (v["encoding"].as_str(), v["tokens"].as_u64()),
        (Some("cl100k_base"), Some(2))
    );
    let (_, v) = call(
        &s,
        Method::POST,
        "/api/tokens/count",
        Some(json!({"model": "some-local-llama", "text": "hello world"})),
    )
    .await;
    assert_eq!(v["method"], "estimate");
    assert_eq!(v["encoding"], Value::Null);
    assert!(v["tokens"].as_u64().unwrap() > 0);
    let (st, v) = call(
        &s,
        Method::POST,
        "/api/tokens/count",
        Some(json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hello world"}]})),
    )
    .await;
    assert_eq!(st, 200);
    assert!(v["tokens"].as_u64().unwrap() > 2, "{v}");
    for bad in [
        json!({"model": "gpt-4o"}),
        json!({"model": "gpt-4o", "text": "a", "messages": []}),
        json!({"text": "a"}),
        json!({"model": "gpt-4o", "text": 5}),
        json!({"model": "gpt-4o", "text": "a", "extra": 1}),
    ] {
        let (st, e) = call(&s, Method::POST, "/api/tokens/count", Some(bad.clone())).await;
        assert_eq!(st, 400, "{bad}: {e}");
    }
}

#[tokio::test]
async fn unknown_admin_routes_and_methods() {
    let s = TestServer::start().await;
    let (st, e) = call(&s, Method::GET, "/api/nothing-here", None).await;
    assert_eq!(st, 404, "{e}");
    // A known path with the wrong method: 405, with an OpenAI body like every other error.
    let r = s.admin(Method::PUT, "/api/providers").send().await.unwrap();
    expect_error(r, 405, None).await;
    let r = s
        .http
        .get(s.url("/v1/chat/completions"))
        .bearer_auth(&s.key)
        .send()
        .await
        .unwrap();
    expect_error(r, 405, None).await;
}

#[tokio::test]
async fn admin_bodies_obey_the_body_limit() {
    let s = TestServer::start_with(nexus_server::ServerConfig {
        body_limit: 4096,
        ..Default::default()
    })
    .await;
    let big = json!({"name": "big", "base_url": "http://127.0.0.1:9", "api_key": "sk-SECRET-1234567", "description": "d".repeat(10_000)});
    let r = s
        .admin(Method::POST, "/api/providers")
        .json(&big)
        .send()
        .await
        .unwrap();
    let e = expect_error(r, 413, Some("payload_too_large")).await;
    assert!(e["message"].as_str().unwrap().contains("4096"), "{e}");
    let r = s
        .admin(Method::POST, "/api/tokens/count")
        .json(&json!({"model": "gpt-4o", "text": "x".repeat(10_000)}))
        .send()
        .await
        .unwrap();
    expect_error(r, 413, Some("payload_too_large")).await;
    // Under the limit is fine.
    let (st, _) = call(&s, Method::POST, "/api/providers", Some(json!({"name": "small", "base_url": "http://127.0.0.1:9", "api_key": "sk-SECRET-1234567"}))).await;
    assert_eq!(st, 201);
    assert_eq!(s.hub.registry().providers().unwrap().len(), 3);
}
