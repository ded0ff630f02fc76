//! Key pools through the real binary: a provider holding four upstream keys (one the upstream
//! refuses with 401, one it rate limits with 429) serves every request; the refused key is set
//! aside after its first 401 (with the reason, as a provider event) and never sent again until
//! an operator enables it, the rate-limited one rests for its `Retry-After`, one conversation
//! keeps to one key, answers and the database file hold hints only, and the pool's rules are
//! 400s.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{body, client, start, temp_dir, Admin};
use serde_json::{json, Value};

const PRIMARY: &str = "sk-pool-good-primary-0001";
const SECOND: &str = "sk-pool-good-second-0002";
const REVOKED: &str = "sk-pool-revoked-third-0003";
const LIMITED: &str = "sk-pool-ratelimited-fourth-0004";

async fn mock_keys(mock: &nexus::testing::MockUpstream) -> Value {
    let v: Value = client()
        .get(format!("{}/mock/stats", mock.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["keys"].clone()
}

fn count(keys: &Value, k: &str) -> u64 {
    keys[k].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_sets_aside_a_refused_key_and_rests_a_limited_one() {
    let dir = temp_dir();
    let db = dir.join("nexus.db");
    let srv = start(&db);
    let a = Admin::of(&srv);
    let mock = nexus::testing::MockUpstream::start().await.unwrap();
    let post = reqwest::Method::POST;
    let (s, p) = a
        .call(
            post.clone(),
            "/api/providers",
            Some(
                json!({"name": "pooled", "kind": "openai", "base_url": mock.base_url(),
                        "api_key": PRIMARY}),
            ),
        )
        .await;
    assert_eq!(s, 201, "{p}");
    let pid = p["id"].as_i64().unwrap();
    let (s, _) = a
        .call(
            post.clone(),
            &format!("/api/providers/{pid}/models"),
            Some(json!({"name": "gpt-4o-mini"})),
        )
        .await;
    assert_eq!(s, 201);
    let keys_path = format!("/api/providers/{pid}/keys");
    for (k, name) in [(SECOND, "second"), (REVOKED, "third"), (LIMITED, "fourth")] {
        let (s, v) = a
            .call(
                post.clone(),
                &keys_path,
                Some(json!({"api_key": k, "name": name})),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        assert_eq!(v["name"], name);
        assert!(
            !v.to_string().contains(k),
            "the answer holds a hint only: {v}"
        );
    }

    // The rules.
    let (s, e) = a
        .call(post.clone(), &keys_path, Some(json!({"api_key": SECOND})))
        .await;
    assert_eq!(s, 400, "the same key twice: {e}");
    let (s, _) = a
        .call(
            post.clone(),
            &keys_path,
            Some(json!({"api_key": "sk-pool-weightless-0009", "weight": 0})),
        )
        .await;
    assert_eq!(s, 400, "weight 0");
    let (s, _) = a
        .call(
            reqwest::Method::PATCH,
            &format!("{keys_path}/0"),
            Some(json!({"api_key": "sk-other-value-0000"})),
        )
        .await;
    assert_eq!(s, 400, "key 0 changes with the provider");
    let (s, _) = a
        .call(reqwest::Method::DELETE, &format!("{keys_path}/0"), None)
        .await;
    assert_eq!(s, 400, "key 0 goes only with the provider");
    let (s, _) = a
        .call(reqwest::Method::DELETE, &format!("{keys_path}/999"), None)
        .await;
    assert_eq!(s, 404);
    let (s, _) = a
        .call(reqwest::Method::GET, "/api/providers/999/keys", None)
        .await;
    assert_eq!(s, 404);

    let (_, list) = a.call(reqwest::Method::GET, &keys_path, None).await;
    let list = list["data"].as_array().unwrap().clone();
    assert_eq!(list.len(), 4, "{list:?}");
    assert_eq!(list[0]["id"], 0);
    assert_eq!(list[0]["name"], "primary");
    for k in [PRIMARY, SECOND, REVOKED, LIMITED] {
        assert!(!serde_json::to_string(&list).unwrap().contains(k));
    }

    // A client key and traffic: 40 conversations, every one answered.
    let (s, ck) = a
        .call(post.clone(), "/api/keys", Some(json!({"name": "app"})))
        .await;
    assert_eq!(s, 201, "{ck}");
    let ck = ck["key"].as_str().unwrap().to_owned();
    let http = client();
    let url = format!("http://{}/v1/chat/completions", srv.addr);
    for i in 0..40 {
        let r = http
            .post(&url)
            .bearer_auth(&ck)
            .header("x-conversation-id", format!("conv-{i}"))
            .json(&body("gpt-4o-mini", "hello pool"))
            .send()
            .await
            .unwrap();
        let st = r.status().as_u16();
        let v: Value = r.json().await.unwrap();
        assert_eq!(st, 200, "request {i}: {v}");
        assert_eq!(v["choices"][0]["message"]["content"], "hello pool");
    }
    let seen = mock_keys(&mock).await;
    assert_eq!(count(&seen, REVOKED), 1, "set aside after its 401: {seen}");
    assert_eq!(count(&seen, LIMITED), 1, "resting after its 429: {seen}");
    assert!(
        count(&seen, PRIMARY) > 0 && count(&seen, SECOND) > 0,
        "{seen}"
    );
    assert_eq!(count(&seen, PRIMARY) + count(&seen, SECOND), 40, "{seen}");

    let (_, list) = a.call(reqwest::Method::GET, &keys_path, None).await;
    let by_name = |n: &str| -> Value {
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["name"] == n)
            .cloned()
            .unwrap()
    };
    let third = by_name("third");
    assert!(
        third["set_aside"].as_str().unwrap().contains("401"),
        "{third}"
    );
    let fourth = by_name("fourth");
    assert!(fourth["set_aside"].is_null(), "{fourth}");
    let rest = fourth["cooling_seconds"].as_u64().unwrap();
    assert!((1..=30).contains(&rest), "{fourth}");
    assert!(by_name("primary")["set_aside"].is_null());
    let (_, prov) = a
        .call(reqwest::Method::GET, &format!("/api/providers/{pid}"), None)
        .await;
    assert_eq!(prov["key_count"], 4, "{prov}");
    assert_eq!(prov["keys_active"], 3, "{prov}");
    assert_eq!(
        prov["enabled"], true,
        "a key's 401 never disables the provider"
    );
    let (_, ev) = a
        .call(reqwest::Method::GET, "/api/health/events", None)
        .await;
    assert!(
        ev.to_string().contains("key_set_aside"),
        "the set-aside is a provider event: {ev}"
    );
    // The request that met the refused key was served by another one, and says so.
    let (_, rows) = a
        .call(reqwest::Method::GET, "/api/requests?limit=100", None)
        .await;
    let rows = rows["data"].as_array().unwrap().clone();
    assert_eq!(rows.len(), 40);
    assert!(
        rows.iter()
            .any(|r| r["status"] == 200 && r["attempts"].as_u64() >= Some(2)),
        "{rows:?}"
    );

    // One conversation keeps to one key.
    let before = mock_keys(&mock).await;
    for _ in 0..6 {
        let r = http
            .post(&url)
            .bearer_auth(&ck)
            .header("x-conversation-id", "one-long-chat")
            .json(&body("gpt-4o-mini", "again"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    let after = mock_keys(&mock).await;
    let moved: Vec<u64> = [PRIMARY, SECOND]
        .iter()
        .map(|k| count(&after, k) - count(&before, k))
        .collect();
    assert!(moved == [6, 0] || moved == [0, 6], "{moved:?}");

    // An operator looks at the refused key and enables it again.
    let third_id = third["id"].as_i64().unwrap();
    let (s, v) = a
        .call(
            reqwest::Method::PATCH,
            &format!("{keys_path}/{third_id}"),
            Some(json!({"enabled": true, "weight": 5})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert!(v["set_aside"].is_null(), "{v}");
    assert_eq!(v["weight"], 5);

    // The last key in use is neither disabled nor deleted.
    let fourth_id = fourth["id"].as_i64().unwrap();
    let second_id = by_name("second")["id"].as_i64().unwrap();
    for id in [third_id, fourth_id] {
        let (s, _) = a
            .call(reqwest::Method::DELETE, &format!("{keys_path}/{id}"), None)
            .await;
        assert_eq!(s, 204);
    }
    let (s, _) = a
        .call(
            reqwest::Method::PATCH,
            &format!("{keys_path}/{second_id}"),
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(s, 200);
    let (s, e) = a
        .call(
            reqwest::Method::PATCH,
            &format!("{keys_path}/0"),
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(s, 400, "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("last key"));

    // Sealed at rest: no key in the database file.
    drop(srv);
    let mut bytes = std::fs::read(&db).unwrap();
    if let Ok(wal) = std::fs::read(db.with_extension("db-wal")) {
        bytes.extend(wal);
    }
    let text = String::from_utf8_lossy(&bytes);
    for k in [PRIMARY, SECOND] {
        assert!(!text.contains(k), "{k} in the database file");
    }
}
