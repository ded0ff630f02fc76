//! Connection and request bounds of the real binary (audit M6, M7, L1, L3): header-read and idle
//! keep-alive deadlines, the connection cap, load shedding over the in-flight cap, the admin-auth
//! throttle, `?token=` only on `/ws/chat`, and the optional `/metrics` token.
//!
//! Everything runs on loopback with short deadlines set in the test config, and every wait is
//! bounded.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the server closes the connection; returns how long that took, or `None` if it was
/// still open after `within`. Bytes the server sends before closing are ignored.
async fn closed_within(mut s: TcpStream, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    let read_to_close = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(within, read_to_close)
        .await
        .ok()
        .map(|()| start.elapsed())
}

/// Sends `GET path` on an open connection and reads one whole response; returns the status line
/// and the body.
async fn get_on(s: &mut TcpStream, path: &str) -> (String, String) {
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "connection closed before a whole response: {data:?}");
            data.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&data).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .expect("content-length");
                if body.len() >= len {
                    let status = head.lines().next().unwrap_or("").to_owned();
                    return (status, body[..len].to_owned());
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("response in time")
}

/// A client that opens a new connection per request (a pooled idle connection would hold one of
/// the few connection slots these tests allow).
fn unpooled() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

/// One value from `/metrics`. Retried while the server answers 503: in the connection-cap test
/// the previous request's connection may not be seen closed yet.
async fn metric(http: &reqwest::Client, addr: &str, line_prefix: &str) -> f64 {
    let mut text = String::new();
    for _ in 0..50 {
        let r = http
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .unwrap();
        let status = r.status();
        text = r.text().await.unwrap();
        if status != 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    text.lines()
        .find_map(|l| l.strip_prefix(line_prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {line_prefix} in {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_request_heads_are_closed_within_the_header_timeout() {
    let dir = temp_dir();
    let srv = start_with(
        &dir.join("nexus.db"),
        Some("header_read_timeout_seconds = 2\n"),
        &[],
    );
    let addr = srv.addr.clone();
    let http = unpooled();
    let opened = Instant::now();
    let mut conns = Vec::new();
    for _ in 0..50 {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        conns.push(s);
    }
    let waits: Vec<_> = conns
        .into_iter()
        .map(|s| tokio::spawn(closed_within(s, Duration::from_secs(10))))
        .collect();
    // While the 50 stalled heads sit there, normal requests are served.
    for _ in 0..3 {
        let r = http
            .get(format!("http://{addr}/healthz"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for w in waits {
        let closed = w.await.unwrap();
        assert!(
            closed.is_some(),
            "a half-sent request head was still open 10 s later (header timeout is 2 s)"
        );
        let since_open = opened.elapsed();
        assert!(
            since_open < Duration::from_secs(2) + Duration::from_millis(2500),
            "closed too late: {since_open:?} after opening"
        );
    }
    assert!(
        opened.elapsed() >= Duration::from_millis(1900),
        "closed before the header timeout: {:?}",
        opened.elapsed()
    );
    // Counted, and /metrics is open by default.
    let n = metric(
        &http,
        &addr,
        "nexus_connection_timeouts_total{kind=\"header_read\"}",
    )
    .await;
    assert!(n >= 50.0, "header_read timeouts counted: {n}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_kept_alive_connection_is_closed_after_the_idle_timeout_not_before() {
    let dir = temp_dir();
    let srv = start_with(
        &dir.join("nexus.db"),
        Some("header_read_timeout_seconds = 1\nkeep_alive_idle_timeout_seconds = 3\n"),
        &[],
    );
    let mut s = TcpStream::connect(&srv.addr).await.unwrap();
    let (status, body) = get_on(&mut s, "/healthz").await;
    assert!(status.contains(" 200 "), "{status}");
    assert!(body.contains("\"ok\""), "{body}");
    // Idle for longer than the header timeout: the header clock does not run between requests,
    // so the connection is still there for the next one.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (status, _) = get_on(&mut s, "/healthz").await;
    assert!(status.contains(" 200 "), "kept-alive reuse: {status}");
    // Then, idle again: closed once keep_alive_idle_timeout (3 s) has passed.
    let closed = closed_within(s, Duration::from_secs(10))
        .await
        .expect("an idle kept-alive connection is closed after the idle timeout");
    assert!(
        closed >= Duration::from_millis(2800) && closed < Duration::from_millis(5500),
        "closed after {closed:?}; the idle timeout is 3 s"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_max_connections_get_a_503_and_are_closed() {
    let dir = temp_dir();
    let srv = start_with(
        &dir.join("nexus.db"),
        Some("max_connections = 3\nheader_read_timeout_seconds = 30\n"),
        &[],
    );
    let addr = srv.addr.clone();
    let http = unpooled();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(&addr).await.unwrap());
    }
    // Let the server accept them.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = http
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "retry-after").as_deref(), Some("1"));
    let e = expect_error(r, 503, Some("overloaded")).await;
    assert_eq!(e["type"], "server_error");
    // The refused connection is closed, not queued.
    let mut extra = TcpStream::connect(&addr).await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), extra.read_to_end(&mut got))
        .await
        .expect("a refused connection is closed at once")
        .unwrap();
    assert!(
        String::from_utf8_lossy(&got).starts_with("HTTP/1.1 503 "),
        "{}",
        String::from_utf8_lossy(&got)
    );
    // A freed slot is usable again.
    drop(held.pop());
    let mut ok = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let r = http
            .get(format!("http://{addr}/healthz"))
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            ok = true;
            break;
        }
    }
    assert!(ok, "a closed connection frees its slot");
    let n = metric(&http, &addr, "nexus_rejected_connections_total").await;
    assert!(n >= 2.0, "rejections counted: {n}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_max_inflight_are_shed_with_503_overloaded() {
    let dir = temp_dir();
    let mock = nexus::testing::MockUpstream::start().await.unwrap();
    let srv = start_with(
        &dir.join("nexus.db"),
        Some("max_inflight_requests = 2\n"),
        &[],
    );
    let base = format!("http://{}", srv.addr);
    let token = srv.token.clone().unwrap();
    let http = client();
    let model = "m-x-chunks30-delay60";
    let key = configure(&http, &base, &token, &mock.base_url(), &[model, "gpt-4o"]).await;
    let stream_body =
        json!({"model": model, "stream": true, "messages": [{"role": "user", "content": "x"}]});
    // Two streams take both slots for as long as they run.
    let mut streams = Vec::new();
    for _ in 0..2 {
        let r = http
            .post(format!("{base}/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&stream_body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        streams.push(r);
    }
    let t = Instant::now();
    let r = http
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&body("gpt-4o", "third"))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "retry-after").as_deref(), Some("1"));
    let e = expect_error(r, 503, Some("overloaded")).await;
    assert_eq!(e["type"], "server_error");
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "shed at once, not queued: {:?}",
        t.elapsed()
    );
    // Admin calls are shed too; probes are not.
    let r = http
        .get(format!("{base}/api/providers"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    expect_error(r, 503, Some("overloaded")).await;
    for p in ["/healthz", "/readyz", "/metrics"] {
        let r = http.get(format!("{base}{p}")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{p} while saturated");
    }
    // Once the streams end, their slots are free again.
    for r in streams {
        let expected: String = (0..30).map(|i| format!("tok{i} ")).collect();
        assert_eq!(text_of(&chunks(&sse_events(r).await)), expected);
    }
    let r = http
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&body("gpt-4o", "after"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let n = metric(&http, &srv.addr, "nexus_shed_requests_total").await;
    assert_eq!(n, 2.0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_tokens_only_on_the_websocket_and_failed_admin_auth_is_throttled_per_peer() {
    let dir = temp_dir();
    let srv = start_with(&dir.join("nexus.db"), None, &[]);
    let base = format!("http://{}", srv.addr);
    let token = srv.token.clone().unwrap();
    let http = client();

    // ?token= is refused on an admin route, even with the right token...
    let r = http
        .get(format!("{base}/api/providers?token={token}"))
        .send()
        .await
        .unwrap();
    let e = expect_error(r, 401, Some("invalid_api_key")).await;
    assert!(e["message"].as_str().unwrap().contains("/ws/chat"), "{e}");
    // ...and accepted on /ws/chat, where browsers cannot send headers.
    let (mut ws, resp) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(format!("ws://{}/ws/chat?token={token}", srv.addr)),
    )
    .await
    .unwrap()
    .expect("the WebSocket accepts ?token=");
    assert_eq!(resp.status(), 101);
    let _ = ws.close(None).await;

    // A second peer address on loopback (Linux routes all of 127/8 to lo).
    let other = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))
        .build()
        .unwrap();
    for i in 0..5 {
        let r = other
            .get(format!("{base}/api/providers"))
            .bearer_auth(format!("wrong-{i}"))
            .send()
            .await
            .unwrap();
        expect_error(r, 401, Some("invalid_api_key")).await;
    }
    // The sixth attempt from that peer is throttled, even with the right token.
    let r = other
        .get(format!("{base}/api/providers"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let ra: u64 = header(&r, "retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&ra), "Retry-After {ra}");
    expect_error(r, 429, Some("rate_limit_exceeded")).await;
    // The first peer is not affected, and its successes do not lift the other's throttle.
    let r = http
        .get(format!("{base}/api/providers"))
        .bearer_auth("wrong-once")
        .send()
        .await
        .unwrap();
    expect_error(r, 401, Some("invalid_api_key")).await;
    let r = http
        .get(format!("{base}/api/providers"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = other
        .get(format!("{base}/api/providers"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    expect_error(r, 429, Some("rate_limit_exceeded")).await;
    // Client routes are not behind the admin throttle.
    let r = other.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let n = metric(&http, &srv.addr, "nexus_admin_auth_throttled_total").await;
    assert_eq!(n, 2.0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_token_guards_metrics_when_set() {
    let dir = temp_dir();
    let srv = start_with(
        &dir.join("nexus.db"),
        None,
        &[("NEXUS_METRICS_TOKEN", "metrics-secret-0123")],
    );
    let base = format!("http://{}", srv.addr);
    let http = client();
    let r = http.get(format!("{base}/metrics")).send().await.unwrap();
    expect_error(r, 401, Some("invalid_api_key")).await;
    let r = http
        .get(format!("{base}/metrics"))
        .bearer_auth("metrics-secret-0124")
        .send()
        .await
        .unwrap();
    expect_error(r, 401, Some("invalid_api_key")).await;
    // The admin token is not the metrics token either.
    let r = http
        .get(format!("{base}/metrics"))
        .bearer_auth(srv.token.clone().unwrap())
        .send()
        .await
        .unwrap();
    expect_error(r, 401, Some("invalid_api_key")).await;
    let r = http
        .get(format!("{base}/metrics"))
        .bearer_auth("metrics-secret-0123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(text.contains("nexus_open_connections "), "{text}");
    // Wrong tokens count toward the per-peer throttle (2 so far; a missing one does not count).
    for i in 0..3 {
        let r = http
            .get(format!("{base}/metrics"))
            .bearer_auth(format!("guess-{i}"))
            .send()
            .await
            .unwrap();
        expect_error(r, 401, Some("invalid_api_key")).await;
    }
    let r = http
        .get(format!("{base}/metrics"))
        .bearer_auth("metrics-secret-0123")
        .send()
        .await
        .unwrap();
    assert!(header(&r, "retry-after").is_some());
    expect_error(r, 429, Some("rate_limit_exceeded")).await;
    // Probes stay open.
    let r = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "ok");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stops_halfway_is_cut_at_the_body_read_timeout() {
    let dir = temp_dir();
    let srv = start_with(
        &dir.join("nexus.db"),
        Some("body_read_timeout_seconds = 2\n"),
        &[],
    );
    let token = srv.token.clone().unwrap();
    let mut s = TcpStream::connect(&srv.addr).await.unwrap();
    s.write_all(
        format!(
            "POST /api/keys HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"name\":"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let t = Instant::now();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got))
        .await
        .expect("the server gives up on the body and closes the connection")
        .unwrap();
    let elapsed = t.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1800) && elapsed < Duration::from_millis(4500),
        "answered after {elapsed:?}; the body timeout is 2 s"
    );
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 400 "), "{text}");
    assert!(text.contains("did not arrive within 2 s"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}
