//! Retention through the real binary: a database filled with old request rows and old bodies is
//! pruned on demand while requests flow (none fails), the space goes back to the file system,
//! the rollups (and so the dashboard totals) stay, and the storage view says what happened.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use common::*;
use nexus::stats::{MessageRecord, RequestSource, UsageRecord, UsageSource};
use nexus::store::{SqliteStore, Store};
use serde_json::Value;

const OLD_ROWS: i64 = 60_000;
const OLD_MESSAGES: i64 = 10_000;

fn old_row(i: i64, ts_ms: i64) -> UsageRecord {
    UsageRecord {
        ts_ms: ts_ms + i,
        request_id: format!("old-{i}"),
        conversation_id: Some(format!("old-conv-{}", i / 10)),
        key_id: Some(1),
        provider_id: Some(1),
        model: "old-model".into(),
        upstream_model: None,
        prompt_tokens: 10,
        completion_tokens: 5,
        usage_source: UsageSource::Upstream,
        status: 200,
        error_kind: None,
        latency_ms: 3.0,
        ttft_ms: None,
        stream: false,
        source: RequestSource::Api,
        cost_micros: Some(15),
        cached_tokens: 0,
        cache_write_tokens: 0,
        reasoning_tokens: 0,
        endpoint: nexus::usage::Endpoint::Chat,
        upstream_ms: Some(2.0),
        attempts: vec![],
        bodies: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_while_requests_flow_gives_space_back_and_keeps_rollups() {
    let dir = temp_dir();
    let db = dir.join("nexus.db");
    let mock = nexus::testing::MockUpstream::start().await.unwrap();
    let http = client();
    let srv = start_with(
        &db,
        Some("request_retention_days = 30\nmessage_retention_days = 7\n"),
        &[],
    );
    let base = format!("http://{}", srv.addr);
    let token = srv.token.clone().unwrap();
    let key = configure(&http, &base, &token, &mock.base_url(), &["echo"]).await;
    let admin_json = |m: reqwest::Method, p: &str| {
        let r = http
            .request(m, format!("{base}{p}"))
            .bearer_auth(&token)
            .send();
        async move {
            let r = r.await.unwrap();
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()
        }
    };

    // The pass the server runs at start must be over, or it could take the rows below.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while admin_json(reqwest::Method::GET, "/api/storage").await["last_prune"].is_null() {
        assert!(std::time::Instant::now() < deadline, "no pass at start");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // Old rows written beside the running server (the file is shared): 60 days old request
    // rows, 20 days old bodies of 1 KiB each.
    let now = nexus::now_ms();
    {
        let store = SqliteStore::open(&db).unwrap();
        let rows: Vec<UsageRecord> = (0..OLD_ROWS)
            .map(|i| old_row(i, now - 60 * 86_400_000))
            .collect();
        let text = "x".repeat(1024);
        let msgs: Vec<MessageRecord> = (0..OLD_MESSAGES)
            .map(|i| MessageRecord {
                ts_ms: now - 20 * 86_400_000 + i,
                conversation_id: format!("old-conv-{}", i / 10),
                provider_id: Some(1),
                model: "old-model".into(),
                role: "user".into(),
                content: text.clone(),
                tokens: 256,
            })
            .collect();
        for (u, m) in rows
            .chunks(10_000)
            .zip(msgs.chunks(2_000).chain(std::iter::repeat(&[][..])))
        {
            store.insert_usage(u, m).unwrap();
        }
    }
    let before = admin_json(reqwest::Method::GET, "/api/storage").await;
    assert!(
        before["requests"].as_u64().unwrap() >= OLD_ROWS as u64,
        "{before}"
    );
    assert!(
        before["messages"].as_u64().unwrap() >= OLD_MESSAGES as u64,
        "{before}"
    );
    assert_eq!(
        before["reclaims_space"], true,
        "a new file gives space back"
    );
    assert_eq!(before["retention"]["request_days"], 30);
    assert_eq!(before["retention"]["message_days"], 7);
    assert_eq!(before["retention"]["rollup_days"], 730);
    let used_before = before["used_bytes"].as_u64().unwrap();
    let file_before = before["file_bytes"].as_u64().unwrap();
    let summary_before = admin_json(reqwest::Method::GET, "/api/stats/summary").await;

    // Requests flow on four connections while the pass runs.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut flow = Vec::new();
    for _ in 0..4 {
        let (http, url, key) = (
            http.clone(),
            format!("{base}/v1/chat/completions"),
            key.clone(),
        );
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        flow.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let r = http
                    .post(&url)
                    .bearer_auth(&key)
                    .json(&body("echo", "during the prune"))
                    .send()
                    .await
                    .unwrap();
                if r.status() == 200 {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let report = admin_json(reqwest::Method::POST, "/api/storage/prune").await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    for t in flow {
        t.await.unwrap();
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0);
    let served = ok.load(Ordering::Relaxed);
    assert!(served > 0);
    assert_eq!(report["requests"], OLD_ROWS, "{report}");
    assert_eq!(report["messages"], OLD_MESSAGES, "{report}");
    assert_eq!(report["rollups"], 0, "rollups are kept for two years");
    assert!(
        report["reclaimed_bytes"].as_u64().unwrap() > 10 << 20,
        "{report}"
    );

    let after = admin_json(reqwest::Method::GET, "/api/storage").await;
    assert!(
        after["used_bytes"].as_u64().unwrap() < used_before / 2,
        "{before} -> {after}"
    );
    assert!(
        after["file_bytes"].as_u64().unwrap() < file_before,
        "the file shrinks: {before} -> {after}"
    );
    // What is left is what flowed meanwhile: one row and two messages per answer.
    assert_eq!(after["requests"], served, "{after}");
    assert_eq!(after["messages"], 2 * served, "{after}");
    assert!(after["oldest_request_ms"].as_i64().unwrap() > now - 60_000);
    assert_eq!(after["last_prune"]["requests"], OLD_ROWS);
    // The dashboard's totals come from the rollups: the old requests still count.
    let summary = admin_json(reqwest::Method::GET, "/api/stats/summary").await;
    assert!(
        summary["requests"].as_u64().unwrap()
            >= summary_before["requests"].as_u64().unwrap() + served,
        "{summary_before} -> {summary}"
    );
    // The explorer holds the recent rows only.
    let page = admin_json(reqwest::Method::GET, "/api/requests?model=old-model").await;
    assert_eq!(page["data"].as_array().unwrap().len(), 0);
    let page = admin_json(reqwest::Method::GET, "/api/requests?model=echo&limit=1000").await;
    assert!(!page["data"].as_array().unwrap().is_empty());
}

#[test]
fn bad_retention_settings_stop_the_server_at_start() {
    let dir = temp_dir();
    let db = dir.join("nexus.db");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nexus-server"))
        .args(["--listen", "127.0.0.1:0", "--db"])
        .arg(&db)
        .arg("--config")
        .arg({
            let p = dir.join("bad.toml");
            std::fs::write(&p, "rollup_retention_days = 7\n").unwrap();
            p
        })
        .env_remove("NEXUS_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rollup_retention_days"), "{err}");
}
