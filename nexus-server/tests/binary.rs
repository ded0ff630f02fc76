//! The real `nexus-server` binary: it prints its bound address and a generated admin token once,
//! serves the API, lets an open stream finish on SIGTERM, exits 0, and the stats of the last chat
//! are in the database afterwards.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_prints_token_serves_and_flushes_on_sigterm() {
    let dir = temp_dir();
    let db = dir.join("nexus.db");
    let mock = nexus::testing::MockUpstream::start().await.unwrap();
    let http = client();

    let mut srv = start(&db);
    let base = format!("http://{}", srv.addr);
    let token = srv
        .token
        .clone()
        .expect("a generated admin token is printed");
    assert!(token.len() >= 16, "{token}");
    // It works, and nothing else does.
    let r = http
        .get(format!("{base}/api/providers"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http
        .get(format!("{base}/api/providers"))
        .bearer_auth("not-it")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        http.get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        http.get(format!("{base}/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // Configure through the admin API, then chat.
    let admin = |m: reqwest::Method, p: &str, b: Value| {
        http.request(m, format!("{base}{p}"))
            .bearer_auth(&token)
            .json(&b)
            .send()
    };
    let p: Value = admin(
        reqwest::Method::POST,
        "/api/providers",
        json!({"name": "mock", "base_url": mock.base_url(), "api_key": "sk-upstream-1234567890"}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let pid = p["id"].as_i64().unwrap();
    for m in ["gpt-4o", "m-x-chunks20-delay25"] {
        let r = admin(
            reqwest::Method::POST,
            &format!("/api/providers/{pid}/models"),
            json!({"name": m}),
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 201);
    }
    let k: Value = admin(reqwest::Method::POST, "/api/keys", json!({"name": "bin"}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = k["key"].as_str().unwrap().to_owned();
    let r = http
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(&key)
        .header("x-conversation-id", "bin-conv-1")
        .json(&body("gpt-4o", "persist me"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Open a paced stream, then SIGTERM while it runs: it still finishes.
    let r = http
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(&key)
        .header("x-conversation-id", "bin-conv-2")
        .json(&json!({"model": "m-x-chunks20-delay25", "stream": true, "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    sigterm(&srv.child);
    let cs = chunks(&sse_events(r).await);
    let expected: String = (0..20).map(|i| format!("tok{i} ")).collect();
    assert_eq!(
        text_of(&cs),
        expected,
        "the open stream finished after SIGTERM"
    );

    let code = tokio::task::block_in_place(|| wait_exit(&mut srv.child, Duration::from_secs(20)));
    assert_eq!(code, Some(0));

    // The stats are in the database (opened with the key file beside it).
    assert!(nexus::hub::default_key_file(&db).exists());
    let hub = nexus::Hub::open(&db, nexus::HubOptions::default()).unwrap();
    let sum = hub.summary().unwrap();
    assert_eq!(sum.requests, 2, "{sum:?}");
    assert_eq!(sum.rounds, 2);
    let c = hub.conversation("bin-conv-1").unwrap();
    assert_eq!(c.rounds, 1);
    assert_eq!(c.prompt_tokens, 10);
    assert_eq!(
        hub.conversation("bin-conv-2").unwrap().completion_tokens,
        20
    );
    // The upstream key still decrypts: the provider is usable after a restart.
    drop(hub);

    // A second start on the same database: no new token is printed, the first one still works.
    let mut srv2 = start(&db);
    assert_eq!(srv2.token, None, "the admin token is printed only once");
    let base2 = format!("http://{}", srv2.addr);
    let r = http
        .get(format!("{base2}/api/stats/summary"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http
        .post(format!("{base2}/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&body("gpt-4o", "after restart"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "after restart");
    sigterm(&srv2.child);
    let code = tokio::task::block_in_place(|| wait_exit(&mut srv2.child, Duration::from_secs(20)));
    assert_eq!(code, Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_arguments_exit_2_with_usage() {
    let out = Command::new(env!("CARGO_BIN_EXE_nexus-server"))
        .arg("--bogus")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("usage: nexus-server"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_nexus-server"))
        .args(["--listen", "not-an-address"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
