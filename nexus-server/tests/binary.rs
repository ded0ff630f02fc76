//! The real `nexus-server` binary: it prints its bound address and a generated admin token once,
//! serves the API, lets an open stream finish on SIGTERM, exits 0, and the stats of the last chat
//! are in the database afterwards.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

struct Server {
    child: Child,
    addr: String,
    token: Option<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        // Only if a test failed before the process ended.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn temp_dir() -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let d = std::env::temp_dir().join(format!("nexus-server-bin-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Starts the binary on 127.0.0.1:0 and reads its banner from stderr.
fn start(db: &Path) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_nexus-server"))
        .args(["--listen", "127.0.0.1:0", "--db"])
        .arg(db)
        .env_remove("NEXUS_ADMIN_TOKEN")
        .env_remove("NEXUS_MASTER_KEY")
        .env_remove("NEXUS_LISTEN")
        .env_remove("NEXUS_DB")
        .env_remove("NEXUS_CONFIG")
        .env("NEXUS_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn nexus-server");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    // Drain stderr for the life of the process so it never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut addr = None;
    let mut token = None;
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) else {
            if addr.is_some() {
                break; // the banner is over
            }
            if let Ok(Some(st)) = child.try_wait() {
                panic!("server exited early ({st}): {seen:?}");
            }
            continue;
        };
        if let Some(rest) = line.split("listening on http://").nth(1) {
            addr = Some(rest.trim().to_owned());
        }
        if let Some(rest) = line
            .split("admin token (shown once, stored hashed):")
            .nth(1)
        {
            token = Some(rest.trim().to_owned());
        }
        let banner_done = line.contains("database:");
        seen.push(line);
        if banner_done && addr.is_some() {
            // The token line, if any, follows the database line.
            if let Ok(l) = rx.recv_timeout(Duration::from_millis(500)) {
                if let Some(rest) = l.split("admin token (shown once, stored hashed):").nth(1) {
                    token = Some(rest.trim().to_owned());
                }
                seen.push(l);
            }
            break;
        }
    }
    let addr = addr.unwrap_or_else(|| panic!("no 'listening on' line: {seen:?}"));
    assert!(!addr.ends_with(":0"), "the real port is printed: {addr}");
    Server { child, addr, token }
}

fn sigterm(child: &Child) {
    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(st.success());
}

/// Waits (bounded) for the process to exit; returns its exit code.
fn wait_exit(child: &mut Child, within: Duration) -> Option<i32> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(st) = child.try_wait().unwrap() {
            return st.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("server did not exit within {within:?}");
}

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
