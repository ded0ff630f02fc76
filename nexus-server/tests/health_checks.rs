//! Active health checks and model discovery through the real binary, against the mock's model
//! lists: providers that fail their probes are disabled automatically (with the reason, an event
//! and a metric) and enabled again when the mock recovers; 429s never disable; an operator's
//! disable is never undone; opted-out and operator-disabled providers are not probed; a
//! provider's own model list is read and imported from.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

impl Admin {
    async fn provider(&self, name: &str, kind: &str, mock: &str, options: Value) -> i64 {
        let (s, v) = self
            .call(
                reqwest::Method::POST,
                "/api/providers",
                Some(json!({"name": name, "kind": kind, "base_url": mock,
                            "api_key": "sk-upstream-1234567890", "options": options})),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        v["id"].as_i64().unwrap()
    }

    async fn model(&self, pid: i64, name: &str) {
        let (s, v) = self
            .call(
                reqwest::Method::POST,
                &format!("/api/providers/{pid}/models"),
                Some(json!({"name": name})),
            )
            .await;
        assert_eq!(s, 201, "{v}");
    }

    /// Each provider's health entry, by name.
    async fn health(&self) -> std::collections::HashMap<String, Value> {
        self.get("/api/health/providers")
            .await
            .as_array()
            .unwrap()
            .iter()
            .map(|h| (h["name"].as_str().unwrap().to_owned(), h.clone()))
            .collect()
    }

    /// Waits (at most 15 s) until `f` holds on the health entries.
    async fn until(
        &self,
        what: &str,
        f: impl Fn(&std::collections::HashMap<String, Value>) -> bool,
    ) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let h = self.health().await;
            if f(&h) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {h:?}"
            );
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }
}

async fn set_mock_list_status(http: &reqwest::Client, mock: &str, status: Option<u16>) {
    let r = http
        .post(format!("{mock}/mock/models-status"))
        .json(&json!({"status": status}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_probes_disable_and_recovery_enables_again() {
    let dir = temp_dir();
    let db = dir.join("nexus.db");
    let mock = nexus::testing::MockUpstream::start().await.unwrap();
    let m = mock.base_url();
    let http = client();
    let srv = start_with(
        &db,
        Some("health_check_interval_seconds = 1\nhealth_check_failures = 2\nhealth_check_window_seconds = 60\n"),
        &[],
    );
    let a = Admin::of(&srv);
    let oa = a.provider("oa", "openai", &m, json!({})).await;
    a.model(oa, "echo").await;
    let an = a.provider("an", "anthropic", &m, json!({})).await;
    a.model(an, "claude-echo").await;
    let ge = a.provider("ge", "gemini", &m, json!({})).await;
    let az = a.provider("az", "azure", &m, json!({})).await;
    a.model(az, "az-echo").await;
    let off = a
        .provider("off", "openai", &m, json!({"health_check": false}))
        .await;
    let manual = a.provider("manual", "openai", &m, json!({})).await;
    let (s, _) = a
        .call(
            reqwest::Method::PATCH,
            &format!("/api/providers/{manual}"),
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(s, 200);

    // Healthy: every looked-after provider's probe passes, by its list or (Azure) a completion.
    a.until("first probes", |h| {
        ["oa", "an", "ge", "az"]
            .iter()
            .all(|n| h[*n]["last_probe"]["ok"] == true)
    })
    .await;
    let h = a.health().await;
    assert_eq!(h["oa"]["last_probe"]["method"], "models");
    assert_eq!(h["az"]["last_probe"]["method"], "completion");
    assert_eq!(h["off"]["probed"], false);
    assert_eq!(h["manual"]["probed"], false);
    assert!(h["off"]["last_probe"].is_null() && h["manual"]["last_probe"].is_null());

    // 429s never disable: several rounds of them change nothing.
    set_mock_list_status(&http, &m, Some(429)).await;
    a.until("429 probes", |h| h["oa"]["last_probe"]["status"] == 429)
        .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let h = a.health().await;
    assert!(
        ["oa", "an", "ge"].iter().all(|n| h[*n]["enabled"] == true),
        "{h:?}"
    );

    // Failing lists: the three listed providers go after two failures; Azure (a completion
    // probe) and the opted-out one stay.
    set_mock_list_status(&http, &m, Some(503)).await;
    a.until("auto-disable", |h| {
        ["oa", "an", "ge"]
            .iter()
            .all(|n| h[*n]["auto_disabled"] == true)
    })
    .await;
    let h = a.health().await;
    assert_eq!(h["oa"]["enabled"], false);
    assert!(
        h["oa"]["disabled_reason"]
            .as_str()
            .unwrap()
            .contains("failed health probes"),
        "{}",
        h["oa"]
    );
    assert_eq!(h["az"]["enabled"], true);
    assert_eq!(h["off"]["enabled"], true);
    let p = a.get(&format!("/api/providers/{oa}")).await;
    assert_eq!(
        (p["enabled"].clone(), p["auto_disabled"].clone()),
        (json!(false), json!(true))
    );
    // Not routed while disabled.
    let key = {
        let (_, k) = a
            .call(
                reqwest::Method::POST,
                "/api/keys",
                Some(json!({"name": "k"})),
            )
            .await;
        k["key"].as_str().unwrap().to_owned()
    };
    let r = http
        .post(format!("{}/v1/chat/completions", a.base))
        .bearer_auth(&key)
        .json(&body("echo", "hi"))
        .send()
        .await
        .unwrap();
    assert!(
        r.status().is_client_error() || r.status() == 503,
        "{}",
        r.status()
    );

    // An operator disables one of them meanwhile: that is never undone.
    let (s, _) = a
        .call(
            reqwest::Method::PATCH,
            &format!("/api/providers/{an}"),
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(s, 200);

    // Recovery: the automatic disables are undone, the operator's is not.
    set_mock_list_status(&http, &m, None).await;
    a.until("auto-enable", |h| {
        ["oa", "ge"].iter().all(|n| h[*n]["enabled"] == true)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let h = a.health().await;
    assert_eq!(h["an"]["enabled"], false, "{}", h["an"]);
    assert_eq!(h["an"]["auto_disabled"], false);
    assert_eq!(h["an"]["probed"], false);
    assert_eq!(h["oa"]["auto_disabled"], false);
    assert!(h["oa"]["disabled_reason"].is_null());
    let r = http
        .post(format!("{}/v1/chat/completions", a.base))
        .bearer_auth(&key)
        .json(&body("echo", "back"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Every state change is an event with its reason, newest first.
    let ev = a.get(&format!("/api/health/events?provider_id={oa}")).await;
    let kinds: Vec<&str> = ev
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["auto_enabled", "auto_disabled"], "{ev}");
    assert!(ev[1]["reason"].as_str().unwrap().contains("503"), "{ev}");
    let ev = a.get(&format!("/api/health/events?provider_id={an}")).await;
    assert_eq!(ev[0]["event"], "disabled", "{ev}");
    let all = a.get("/api/health/events?limit=100").await;
    assert!(all.as_array().unwrap().len() >= 7, "{all}");
    let (s, _) = a
        .call(reqwest::Method::GET, "/api/health/events?bogus=1", None)
        .await;
    assert_eq!(s, 400);
    let metrics = http
        .get(format!("{}/metrics", a.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("nexus_provider_state_changes_total{change=\"auto_disabled\"} 3"),
        "{metrics}"
    );
    assert!(metrics.contains("nexus_provider_state_changes_total{change=\"auto_enabled\"} 2"));
    let _ = (ge, az, off);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_providers_own_model_list_is_read_and_imported() {
    let dir = temp_dir();
    let db = dir.join("nexus.db");
    let mock = nexus::testing::MockUpstream::start().await.unwrap();
    let m = mock.base_url();
    let srv = start_with(&db, Some("health_check_interval_seconds = 0\n"), &[]);
    let a = Admin::of(&srv);
    let oa = a.provider("oa", "openai", &m, json!({})).await;
    a.model(oa, "gpt-4o").await;
    let listed = a.get(&format!("/api/providers/{oa}/upstream-models")).await;
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["chunks5", "gpt-4o", "gpt-4o-mini", "text-embedding-3-small"]
    );
    let by = |id: &str| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["id"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(by("gpt-4o")["added"], true);
    assert_eq!(by("gpt-4o-mini")["added"], false);
    assert_eq!(by("text-embedding-3-small")["kind"], "embedding");
    let (s, r) = a
        .call(
            reqwest::Method::POST,
            &format!("/api/providers/{oa}/models/import"),
            Some(json!({"models": ["gpt-4o", "gpt-4o-mini", "text-embedding-3-small"]})),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["skipped"], json!(["gpt-4o"]));
    let created: Vec<(&str, &str)> = r["created"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| (x["name"].as_str().unwrap(), x["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(
        created,
        [
            ("gpt-4o-mini", "chat"),
            ("text-embedding-3-small", "embedding")
        ]
    );
    let (s, r) = a
        .call(
            reqwest::Method::POST,
            &format!("/api/providers/{oa}/models/import"),
            Some(json!({"models": ["not-listed"]})),
        )
        .await;
    assert_eq!(s, 400, "{r}");
    let (s, _) = a
        .call(
            reqwest::Method::POST,
            &format!("/api/providers/{oa}/models/import"),
            Some(json!({"models": []})),
        )
        .await;
    assert_eq!(s, 400);

    // Anthropic's and Gemini's lists in their own formats; Azure has none.
    let an = a.provider("an", "anthropic", &m, json!({})).await;
    let listed = a.get(&format!("/api/providers/{an}/upstream-models")).await;
    assert_eq!(listed.as_array().unwrap().len(), 3);
    assert!(listed
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x["display_name"] == "Claude Sonnet 4.5"));
    let ge = a.provider("ge", "gemini", &m, json!({})).await;
    let (s, r) = a
        .call(
            reqwest::Method::POST,
            &format!("/api/providers/{ge}/models/import"),
            Some(json!({"models": ["gemini-2.5-flash", "gemini-embedding-001"]})),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["created"][1]["kind"], "embedding");
    let az = a.provider("az", "azure", &m, json!({})).await;
    let (s, r) = a
        .call(
            reqwest::Method::GET,
            &format!("/api/providers/{az}/upstream-models"),
            None,
        )
        .await;
    assert_eq!(s, 400, "{r}");
    assert!(r["error"]["message"].as_str().unwrap().contains("Azure"));
    // A failing list is the upstream's error, in the OpenAI shape, without upstream detail.
    set_mock_list_status(&a.http, &m, Some(500)).await;
    let (s, r) = a
        .call(
            reqwest::Method::GET,
            &format!("/api/providers/{oa}/upstream-models"),
            None,
        )
        .await;
    assert_eq!(s, 502, "{r}");
    check_error_shape(&r);
    // On demand, with the schedule off, a probe round still runs.
    let (s, r) = a
        .call(reqwest::Method::POST, "/api/health/probe", None)
        .await;
    assert_eq!(s, 200);
    assert!(r
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["provider_name"] == "oa" && p["ok"] == false));
}
