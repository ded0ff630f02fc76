//! Shared set-up for the server's integration tests: an in-memory hub behind `app()` on a real
//! socket (127.0.0.1:0), a mock upstream, and helpers for OpenAI error bodies and SSE.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

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
