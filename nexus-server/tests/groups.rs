//! Model groups through the real binary: `smart` falls back from one provider's failing model
//! to another provider's (of another kind) for plain and streamed requests and on a 429, the
//! request row names the provider that served it with both attempts, keys scoped to the group
//! may use it, `/v1/models` lists it, and the rules (members exist, no name is both a model and
//! a group) are 400s.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{body, start, temp_dir, Admin};
use serde_json::{json, Value};

impl Admin {
    async fn provider(&self, name: &str, kind: &str, url: &str, models: &[(&str, &str)]) -> i64 {
        let (s, p) = self
            .post(
                "/api/providers",
                json!({"name": name, "kind": kind, "base_url": url, "api_key": "sk-upstream-group-123"}),
            )
            .await;
        assert_eq!(s, 201, "{p}");
        let id = p["id"].as_i64().unwrap();
        for (m, up) in models {
            let (s, v) = self
                .post(
                    &format!("/api/providers/{id}/models"),
                    json!({"name": m, "upstream_name": up}),
                )
                .await;
            assert_eq!(s, 201, "{v}");
        }
        id
    }

    async fn key(&self, models: &[&str]) -> String {
        let (s, k) = self
            .post("/api/keys", json!({"name": "k", "models": models}))
            .await;
        assert_eq!(s, 201, "{k}");
        k["key"].as_str().unwrap().to_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_falls_back_across_providers() {
    let dir = temp_dir();
    let srv = start(&dir.join("nexus.db"));
    let a = Admin::of(&srv);
    let mock_a = nexus::testing::MockUpstream::start().await.unwrap();
    let mock_b = nexus::testing::MockUpstream::start().await.unwrap();
    let pa = a
        .provider(
            "first-co",
            "openai",
            &mock_a.base_url(),
            &[("primary", "fail503"), ("limited", "fail429")],
        )
        .await;
    let pb = a
        .provider(
            "second-co",
            "anthropic",
            &mock_b.base_url(),
            &[("backup", "echo")],
        )
        .await;

    // The rules.
    let (s, e) = a
        .post(
            "/api/groups",
            json!({"name": "smart", "models": ["primary", "nope"]}),
        )
        .await;
    assert_eq!(s, 400, "{e}");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("nope"),
        "{e}"
    );
    let (s, _) = a
        .post(
            "/api/groups",
            json!({"name": "backup", "models": ["primary"]}),
        )
        .await;
    assert_eq!(s, 400, "a model's name");
    let (s, _) = a
        .post("/api/groups", json!({"name": "g", "models": []}))
        .await;
    assert_eq!(s, 400, "no members");
    let (s, g) = a
        .post(
            "/api/groups",
            json!({"name": "smart", "models": ["primary", "backup"]}),
        )
        .await;
    assert_eq!(s, 201, "{g}");
    let (s, _) = a
        .post("/api/groups", json!({"name": "meta", "models": ["smart"]}))
        .await;
    assert_eq!(s, 400, "a group is not a member");
    let (s, _) = a
        .post(
            &format!("/api/providers/{pa}/models"),
            json!({"name": "smart"}),
        )
        .await;
    assert_eq!(s, 400, "a model may not take a group's name");
    let (s, busy) = a
        .post(
            "/api/groups",
            json!({"name": "busy", "models": ["limited", "backup"]}),
        )
        .await;
    assert_eq!(s, 201, "{busy}");

    // Plain request: the first member fails (503) on provider A, the second serves on B.
    let key = a.key(&[]).await;
    let r = a
        .http
        .post(format!("{}/v1/chat/completions", a.base))
        .bearer_auth(&key)
        .json(&body("smart", "fall back please"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .contains("fall back please"),
        "{v}"
    );
    assert!(mock_a.requests() >= 1, "the first member was tried");
    assert_eq!(mock_b.requests(), 1);

    // Streamed, and on a 429.
    let mut sb = body("busy", "stream through the backup");
    sb["stream"] = json!(true);
    let r = a
        .http
        .post(format!("{}/v1/chat/completions", a.base))
        .bearer_auth(&key)
        .json(&sb)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(text.contains("stream") && text.contains("[DONE]"), "{text}");

    // A key scoped to the group's name may use it; one scoped elsewhere may not.
    let scoped = a.key(&["smart"]).await;
    let r = a
        .http
        .post(format!("{}/v1/chat/completions", a.base))
        .bearer_auth(&scoped)
        .json(&body("smart", "scoped"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let other = a.key(&["primary"]).await;
    let r = a
        .http
        .post(format!("{}/v1/chat/completions", a.base))
        .bearer_auth(&other)
        .json(&body("busy", "not mine"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // /v1/models lists the groups.
    let models: Value = a
        .http
        .get(format!("{}/v1/models", a.base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"smart") && ids.contains(&"busy"), "{ids:?}");

    // The request rows: served by B, after an attempt on A.
    let mut rows = Value::Null;
    for _ in 0..100 {
        let (_, v) = a
            .call(reqwest::Method::GET, "/api/requests?model=smart", None)
            .await;
        if v["data"].as_array().is_some_and(|d| d.len() >= 2) {
            rows = v;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Newest first: the first request (before provider A cooled down) is the last row.
    let row = rows["data"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|r| r["status"] == 200 && r["provider_id"] == pb)
        .unwrap_or_else(|| panic!("{rows}"));
    assert!(row["attempts"].as_u64().unwrap() >= 2, "{row}");

    // Edit and delete.
    let gid = g["id"].as_i64().unwrap();
    let (s, g2) = a
        .call(
            reqwest::Method::PATCH,
            &format!("/api/groups/{gid}"),
            Some(json!({"models": ["backup"]})),
        )
        .await;
    assert_eq!(s, 200, "{g2}");
    assert_eq!(g2["models"], json!(["backup"]));
    let (s, _) = a
        .call(reqwest::Method::DELETE, &format!("/api/groups/{gid}"), None)
        .await;
    assert_eq!(s, 204);
    let r = a
        .http
        .post(format!("{}/v1/chat/completions", a.base))
        .bearer_auth(&key)
        .json(&body("smart", "gone"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let _ = std::fs::remove_dir_all(&dir);
}
