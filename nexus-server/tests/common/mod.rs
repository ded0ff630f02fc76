//! Shared set-up for the server's integration tests: an in-memory hub behind `app()` on a real
//! socket (127.0.0.1:0), a mock upstream, and helpers for OpenAI error bodies and SSE.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use nexus::records::{NewKey, NewModel, NewProvider};
use nexus::testing::MockUpstream;
use nexus::{Hub, HubOptions};
use nexus_server::{app, AppState, ServerConfig};
use serde_json::Value;

/// The admin token every test server uses.
pub const ADMIN: &str = "admin-test-token-0123456789";
/// The upstream key of the mock provider; it must never come back from the admin API.
pub const UPSTREAM_KEY: &str = "sk-upstream-SECRET-abcdefghijklmnop";

/// Models on the healthy provider. The mock reads its behaviour from the words of the name.
pub const MODELS: &[&str] = &[
    "gpt-4o",
    "m-x-chunks20",
    "m-x-miderror",
    "m-x-nousage",
    "m-x-chunks50-delay50",
    "m-x-chunks5-delay20",
];
/// Models on a second provider that fails (kept apart so failures never cool the healthy one).
pub const BAD_MODELS: &[&str] = &["b-x-fail500", "b-x-fail400", "b-x-fail429"];

/// A running server with its hub, mock upstream, provider ids and an all-scope client key.
pub struct TestServer {
    pub base: String,
    pub hub: Hub,
    pub mock: MockUpstream,
    pub provider_id: i64,
    pub bad_provider_id: i64,
    pub key: String,
    pub http: reqwest::Client,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Hub options for tests: no waiting between retries, one attempt.
pub fn hub_options() -> HubOptions {
    let mut o = HubOptions::default();
    o.retry.max_attempts = 1;
    o.retry.base_delay = Duration::from_millis(1);
    o
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(ServerConfig::default()).await
    }

    pub async fn start_with(cfg: ServerConfig) -> Self {
        let mock = MockUpstream::start().await.expect("mock upstream");
        let hub = Hub::open_in_memory(hub_options()).expect("hub");
        hub.registry()
            .ensure_admin_token(Some(ADMIN))
            .expect("admin token");
        let p = hub
            .registry()
            .create_provider(NewProvider {
                name: "mock".into(),
                base_url: mock.base_url(),
                api_key: UPSTREAM_KEY.into(),
                ..Default::default()
            })
            .expect("provider");
        for m in MODELS {
            hub.registry()
                .create_model(
                    p.id,
                    NewModel {
                        name: (*m).into(),
                        ..Default::default()
                    },
                )
                .expect("model");
        }
        let bad = hub
            .registry()
            .create_provider(NewProvider {
                name: "bad".into(),
                base_url: mock.base_url(),
                api_key: "sk-other-upstream-key-zzzz".into(),
                ..Default::default()
            })
            .expect("provider");
        for m in BAD_MODELS {
            hub.registry()
                .create_model(
                    bad.id,
                    NewModel {
                        name: (*m).into(),
                        ..Default::default()
                    },
                )
                .expect("model");
        }
        let key = hub
            .registry()
            .create_key(NewKey {
                name: "all".into(),
                ..Default::default()
            })
            .expect("key")
            .key;
        let (base, task) = serve(hub.clone(), cfg).await;
        TestServer {
            base,
            hub,
            mock,
            provider_id: p.id,
            bad_provider_id: bad.id,
            key,
            http: client(),
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A new client key with the given spec.
    pub fn new_key(&self, k: NewKey) -> String {
        self.hub.registry().create_key(k).expect("key").key
    }

    /// POST /v1/chat/completions with a key and a JSON body.
    pub async fn chat(&self, key: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(self.url("/v1/chat/completions"))
            .bearer_auth(key)
            .json(body)
            .send()
            .await
            .expect("send")
    }

    /// An admin request.
    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, self.url(path)).bearer_auth(ADMIN)
    }

    /// Admin request returning (status, JSON body or Null).
    pub async fn admin_json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut rb = self.admin(method, path);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await.expect("send");
        let status = r.status().as_u16();
        let text = r.text().await.expect("body");
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
        };
        (status, v)
    }
}

/// Serves `app()` over `hub` on 127.0.0.1:0; returns `http://ADDR` and the server task.
pub async fn serve(hub: Hub, cfg: ServerConfig) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let router = app(AppState::new(hub, cfg));
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (format!("http://{addr}"), task)
}

/// A reqwest client with a bound on every request.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// Asserts an OpenAI error body with this status (and code, when given); returns the `error`.
pub async fn expect_error(r: reqwest::Response, status: u16, code: Option<&str>) -> Value {
    let got = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let text = r.text().await.expect("body");
    let short: String = text.chars().take(600).collect();
    assert_eq!(got, status, "status; body: {short}");
    assert!(ct.starts_with("application/json"), "content-type {ct:?}");
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    check_error_shape(&v);
    if let Some(c) = code {
        assert_eq!(v["error"]["code"], c, "code; body: {text}");
    }
    v["error"].clone()
}

/// `{"error":{"message","type","param","code"}}` with the right JSON types.
pub fn check_error_shape(v: &Value) {
    let e = v
        .get("error")
        .and_then(Value::as_object)
        .unwrap_or_else(|| panic!("no error object: {v}"));
    assert!(
        e.get("message")
            .and_then(Value::as_str)
            .is_some_and(|m| !m.is_empty()),
        "message: {v}"
    );
    assert!(e.get("type").and_then(Value::as_str).is_some(), "type: {v}");
    assert!(e.contains_key("param"), "param: {v}");
    assert!(
        e.get("param").is_some_and(|p| p.is_null() || p.is_string()),
        "param type: {v}"
    );
    assert!(e.get("code").and_then(Value::as_str).is_some(), "code: {v}");
}

/// Every `data:` payload of an SSE response, in order, up to and including `[DONE]`; fails on a
/// second `[DONE]` or on anything after it.
pub async fn sse_events(r: reqwest::Response) -> Vec<String> {
    use eventsource_stream::Eventsource;
    let mut out = Vec::new();
    let mut s = r.bytes_stream().eventsource();
    let read = async {
        while let Some(ev) = s.next().await {
            let ev = ev.expect("SSE parse");
            assert!(
                out.last().map(String::as_str) != Some("[DONE]"),
                "event after [DONE]: {}",
                ev.data
            );
            out.push(ev.data);
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("stream did not end in time");
    assert_eq!(
        out.iter().filter(|d| d.as_str() == "[DONE]").count(),
        1,
        "exactly one [DONE]: {out:?}"
    );
    assert_eq!(out.last().map(String::as_str), Some("[DONE]"));
    out
}

/// The JSON chunks of an SSE event list (without `[DONE]`).
pub fn chunks(events: &[String]) -> Vec<Value> {
    events
        .iter()
        .filter(|d| d.as_str() != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap_or_else(|e| panic!("chunk not JSON ({e}): {d}")))
        .collect()
}

/// The concatenated `delta.content` of chunks.
pub fn text_of(chunks: &[Value]) -> String {
    chunks
        .iter()
        .filter_map(|c| {
            c.pointer("/choices/0/delta/content")
                .and_then(Value::as_str)
        })
        .collect()
}

/// A header as a string.
pub fn header(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Waits (bounded) until `f` holds.
pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

/// A simple user message body.
pub fn body(model: &str, text: &str) -> Value {
    serde_json::json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

// ---- the real binary ----------------------------------------------------------------------

/// The real `nexus-server` binary, killed on drop if it still runs.
pub struct Server {
    pub child: Child,
    pub addr: String,
    pub token: Option<String>,
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

/// A fresh temporary directory.
pub fn temp_dir() -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let d = std::env::temp_dir().join(format!("nexus-server-bin-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Starts the binary on 127.0.0.1:0 and reads its banner from stderr.
pub fn start(db: &Path) -> Server {
    start_with(db, None, &[])
}

/// Starts the binary with an optional TOML config file (written beside `db`) and extra
/// environment variables.
pub fn start_with(db: &Path, toml: Option<&str>, envs: &[(&str, &str)]) -> Server {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nexus-server"));
    cmd.args(["--listen", "127.0.0.1:0", "--db"])
        .arg(db)
        .env_remove("NEXUS_ADMIN_TOKEN")
        .env_remove("NEXUS_MASTER_KEY")
        .env_remove("NEXUS_LISTEN")
        .env_remove("NEXUS_DB")
        .env_remove("NEXUS_CONFIG")
        .env_remove("NEXUS_METRICS_TOKEN")
        .env_remove("NEXUS_MAX_CONNECTIONS")
        .env_remove("NEXUS_MAX_INFLIGHT_REQUESTS")
        .env("NEXUS_LOG", "warn");
    if let Some(t) = toml {
        let path = db.with_extension("toml");
        std::fs::write(&path, t).unwrap();
        cmd.arg("--config").arg(path);
    }
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd
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

/// Sends SIGTERM.
pub fn sigterm(child: &Child) {
    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(st.success());
}

/// Waits (bounded) for the process to exit; returns its exit code.
pub fn wait_exit(child: &mut Child, within: Duration) -> Option<i32> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(st) = child.try_wait().unwrap() {
            return st.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("server did not exit within {within:?}");
}

/// Configures a running server through its admin API: the mock upstream as a provider serving
/// `models`, and one all-scope client key, which is returned.
pub async fn configure(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    mock_url: &str,
    models: &[&str],
) -> String {
    let p: Value = http
        .post(format!("{base}/api/providers"))
        .bearer_auth(token)
        .json(&serde_json::json!({"name": "mock", "base_url": mock_url, "api_key": "sk-upstream-1234567890"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let pid = p["id"].as_i64().unwrap_or_else(|| panic!("provider: {p}"));
    for m in models {
        let r = http
            .post(format!("{base}/api/providers/{pid}/models"))
            .bearer_auth(token)
            .json(&serde_json::json!({"name": m}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let k: Value = http
        .post(format!("{base}/api/keys"))
        .bearer_auth(token)
        .json(&serde_json::json!({"name": "test"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    k["key"].as_str().unwrap().to_owned()
}

/// The admin API of a server under test: `(status, JSON body)` per call. Test files add their own
/// helpers in `impl Admin` blocks.
pub struct Admin {
    pub http: reqwest::Client,
    pub base: String,
    pub token: String,
}

impl Admin {
    /// For a binary started by [`start`] (its printed admin token).
    pub fn of(srv: &Server) -> Admin {
        Admin {
            http: client(),
            base: format!("http://{}", srv.addr),
            token: srv.token.clone().unwrap(),
        }
    }

    /// One call with the admin token; a body that is not JSON reads as `null`.
    pub async fn call(&self, m: reqwest::Method, path: &str, b: Option<Value>) -> (u16, Value) {
        let mut r = self
            .http
            .request(m, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = b {
            r = r.json(&b);
        }
        let r = r.send().await.unwrap();
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    /// A GET that must answer 200.
    pub async fn get(&self, path: &str) -> Value {
        let (s, v) = self.call(reqwest::Method::GET, path, None).await;
        assert_eq!(s, 200, "{path}: {v}");
        v
    }

    /// A POST.
    pub async fn post(&self, path: &str, b: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(b)).await
    }
}

/// The server's peak resident memory (VmHWM) in KiB, from /proc (Linux).
pub fn peak_rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in /proc/{pid}/status"))
}
