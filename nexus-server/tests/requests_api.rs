//! The request explorer through the real binary, on a database seeded with 100,000 request rows:
//! filters, newest-first cursor pagination without gaps or repeats, the attempt log of a request
//! that was retried, the JSONL and CSV exports, and 400s for bad parameters.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashSet;

use common::*;
use nexus::stats::{RequestSource, UsageRecord, UsageSource};
use nexus::store::{SqliteStore, Store};
use nexus::usage::Endpoint;
use serde_json::{json, Value};

const ROWS: i64 = 100_000;
/// The first seeded row's time (unix seconds): recent enough that retention keeps every row,
/// and ending before the real requests of the test.
static BASE_S: std::sync::LazyLock<i64> =
    std::sync::LazyLock::new(|| nexus::now_ms() / 1000 - ROWS - 600);

fn seed(i: i64) -> UsageRecord {
    let failed = i % 50 == 7;
    UsageRecord {
        // One per second, oldest first.
        ts_ms: (*BASE_S + i) * 1000,
        request_id: format!("seed-{i}"),
        conversation_id: None,
        key_id: Some(i % 5 + 1000),
        provider_id: Some(i % 3 + 1000),
        model: format!("m{}", i % 10),
        upstream_model: None,
        prompt_tokens: 10,
        completion_tokens: 5,
        usage_source: UsageSource::Upstream,
        status: if failed { 502 } else { 200 },
        error_kind: failed.then(|| "upstream".to_owned()),
        latency_ms: 3.0,
        ttft_ms: None,
        stream: i % 2 == 0,
        source: RequestSource::Api,
        cost_micros: Some(15),
        cached_tokens: 0,
        cache_write_tokens: 0,
        reasoning_tokens: 0,
        endpoint: if i % 4 == 0 {
            Endpoint::Messages
        } else {
            Endpoint::Chat
        },
        upstream_ms: Some(2.0),
        attempts: vec![],
        bodies: None,
    }
}

/// How many seeded rows match `f`.
fn count(f: impl Fn(i64) -> bool) -> usize {
    (0..ROWS).filter(|&i| f(i)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_explorer_filters_pages_and_exports_100k_requests() {
    let dir = temp_dir();
    let db = dir.join("nexus.db");
    {
        let store = SqliteStore::open(&db).unwrap();
        let rows: Vec<UsageRecord> = (0..ROWS).map(seed).collect();
        for batch in rows.chunks(10_000) {
            store.insert_usage(batch, &[]).unwrap();
        }
    }
    let mock = nexus::testing::MockUpstream::start().await.unwrap();
    let http = client();
    let srv = start(&db);
    let base = format!("http://{}", srv.addr);
    let token = srv.token.clone().unwrap();
    let get = |p: String| {
        let r = http.get(format!("{base}{p}")).bearer_auth(&token).send();
        async move {
            let r = r.await.unwrap();
            let status = r.status().as_u16();
            (status, r.text().await.unwrap())
        }
    };
    let page = |p: String| {
        let g = get(p);
        async move {
            let (s, t) = g.await;
            assert_eq!(s, 200, "{t}");
            serde_json::from_str::<Value>(&t).unwrap()
        }
    };

    // A real request that is retried once (the mock's flaky1: one 503, then an answer).
    let key = configure(&http, &base, &token, &mock.base_url(), &["flaky1"]).await;
    let r = http
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(&key)
        .header("x-request-id", "explorer-retried")
        .json(&body("flaky1", "hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let one = page("/api/requests/explorer-retried".into()).await;
    assert_eq!(one["attempts"], 2, "{one}");
    let log = one["attempt_log"].as_array().unwrap();
    assert_eq!(
        log.iter().map(|a| a["status"].clone()).collect::<Vec<_>>(),
        [json!(503), json!(200)]
    );
    assert_eq!(log[0]["error_kind"], "upstream");
    assert!(log.iter().all(|a| a["ms"].as_f64().unwrap() >= 0.0));
    assert_eq!(one["provider_name"], "mock");
    assert_eq!(
        one["key_name"].as_str().unwrap().split(' ').next(),
        Some("test")
    );
    assert_eq!(one["model"], "flaky1");
    assert!(one["upstream_ms"].as_f64().unwrap() > 0.0);
    assert!(one["total_ms"].as_f64().unwrap() >= one["upstream_ms"].as_f64().unwrap());
    let (s, t) = get("/api/requests/no-such-request".into()).await;
    assert_eq!(s, 404, "{t}");

    // Newest first: the real request, then the seed from the newest down.
    let first = page("/api/requests?limit=3".into()).await;
    let ids: Vec<&str> = first["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["request_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["explorer-retried", "seed-99999", "seed-99998"]);
    assert!(
        first["data"][1].get("attempt_log").is_none(),
        "only in the detail view"
    );

    // Every filter, walked to its end through the cursor: exactly the matching rows, each once,
    // newest first.
    let cases: Vec<(String, usize)> = vec![
        ("key_id=1002".into(), count(|i| i % 5 == 2)),
        (
            "model=m7&status=error".into(),
            count(|i| i % 10 == 7 && i % 50 == 7),
        ),
        (
            "provider_id=1001&endpoint=messages".into(),
            count(|i| i % 3 == 1 && i % 4 == 0),
        ),
        (
            "error_kind=upstream&model=m7".into(),
            count(|i| i % 10 == 7 && i % 50 == 7),
        ),
        (
            "status=502&key_id=1000".into(),
            count(|i| i % 50 == 7 && i % 5 == 0),
        ),
        (
            format!(
                "since={}&until={}&model=m1",
                *BASE_S + 40_000,
                *BASE_S + 41_000
            ),
            count(|i| (40_000..41_000).contains(&i) && i % 10 == 1),
        ),
    ];
    for (filter, want) in cases {
        let mut seen = HashSet::new();
        let mut last_time = i64::MAX;
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let c = cursor
                .as_ref()
                .map(|c| format!("&cursor={c}"))
                .unwrap_or_default();
            let p = page(format!("/api/requests?{filter}&limit=1000{c}")).await;
            for r in p["data"].as_array().unwrap() {
                let t = r["time"].as_i64().unwrap();
                assert!(t <= last_time, "{filter}: not newest first");
                last_time = t;
                assert!(
                    seen.insert(r["request_id"].as_str().unwrap().to_owned()),
                    "{filter}: repeated"
                );
                assert!(r["request_id"].as_str().unwrap().starts_with("seed-"));
            }
            pages += 1;
            match p["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
            assert!(pages < 200);
        }
        assert_eq!(seen.len(), want, "{filter}");
    }
    // Each row matches its filter.
    let p = page("/api/requests?key_id=1003&status=error&limit=20".into()).await;
    for r in p["data"].as_array().unwrap() {
        assert_eq!(r["key_id"], 1003);
        assert!(r["status"].as_u64().unwrap() >= 400);
        assert_eq!(r["cost"], 15e-6);
    }

    // Export: every matching row, JSONL and CSV.
    let filter = "model=m3&key_id=1003";
    let want = count(|i| i % 10 == 3 && i % 5 == 3);
    let (s, jsonl) = get(format!("/api/requests/export?{filter}")).await;
    assert_eq!(s, 200);
    let lines: Vec<Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), want);
    assert!(lines
        .iter()
        .all(|r| r["model"] == "m3" && r["key_id"] == 1003));
    let r = http
        .get(format!("{base}/api/requests/export?{filter}&format=csv"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(header(&r, "content-type").unwrap().starts_with("text/csv"));
    assert!(header(&r, "content-disposition")
        .unwrap()
        .contains("requests.csv"));
    let csv = r.text().await.unwrap();
    let mut rows = csv.lines();
    let head: Vec<&str> = rows.next().unwrap().split(',').collect();
    assert_eq!(head[0], "time");
    assert!(head.contains(&"cost") && head.contains(&"attempts"));
    assert_eq!(rows.count(), want);

    // Bad parameters are 400s in OpenAI's error shape.
    for bad in [
        "/api/requests?stauts=error",
        "/api/requests?status=teapot",
        "/api/requests?limit=0",
        "/api/requests?limit=5000",
        "/api/requests?cursor=bogus",
        "/api/requests?key_id=abc",
        "/api/requests?endpoint=completions",
        "/api/requests?since=200&until=100",
        "/api/requests/export?format=xml",
    ] {
        let (s, t) = get(bad.into()).await;
        assert_eq!(s, 400, "{bad}: {t}");
        check_error_shape(&serde_json::from_str(&t).unwrap());
    }
    // The admin token is required.
    let r = http
        .get(format!("{base}/api/requests"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}
