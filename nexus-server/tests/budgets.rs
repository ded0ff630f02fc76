//! Budgets through the real `nexus-server` binary: a key with a hard budget hit by many
//! concurrent streams ends at most one request's reservation above it; past it, 429
//! `insufficient_quota` in OpenAI's shape (and Anthropic's on `/v1/messages`) with
//! `x-should-retry: false`; the soft threshold shows on the key and in the metrics; a budget
//! change applies to the next request; bad budgets are 400s; repricing is explicit and counted.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::{json, Value};

/// USD per token of the test model: $1000 per million tokens, in and out.
const PER_TOKEN: f64 = 0.001;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hard_budget_holds_under_concurrency_through_the_binary() {
    let dir = temp_dir();
    let db = dir.join("nexus.db");
    let mock = nexus::testing::MockUpstream::start().await.unwrap();
    let http = client();
    let srv = start(&db);
    let base = format!("http://{}", srv.addr);
    let token = srv.token.clone().unwrap();
    let admin = |m: reqwest::Method, p: &str, b: Value| {
        http.request(m, format!("{base}{p}"))
            .bearer_auth(&token)
            .json(&b)
            .send()
    };
    // An admin call whose JSON answer is wanted.
    let call = |m: reqwest::Method, p: &str, b: Value| {
        let sent = admin(m, p, b);
        async move { sent.await.unwrap().json::<Value>().await.unwrap() }
    };

    let p: Value = call(
        reqwest::Method::POST,
        "/api/providers",
        json!({"name": "mock", "base_url": mock.base_url(), "api_key": "sk-upstream-1234567890"}),
    )
    .await;
    let pid = p["id"].as_i64().unwrap();
    // Five chunks, 40 ms apart: the streams overlap, so reservations are held concurrently.
    let m: Value = call(
        reqwest::Method::POST,
        &format!("/api/providers/{pid}/models"),
        json!({"name": "priced-chunks5-delay40", "input_price": 1000.0, "output_price": 1000.0}),
    )
    .await;
    let model_id = m["id"].as_i64().unwrap();

    // Bad budgets are 400s, and nothing is created.
    for bad in [
        json!({"name": "b", "budget_usd": -1}),
        json!({"name": "b", "budget_usd": "ten"}),
        json!({"name": "b", "budget_usd": 1, "budget_period": "yearly"}),
        json!({"name": "b", "budget_usd": 1, "soft_budget_usd": 2}),
        json!({"name": "b", "soft_budget_usd": -0.5}),
    ] {
        let r = admin(reqwest::Method::POST, "/api/keys", bad.clone())
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        check_error_shape(&r.json::<Value>().await.unwrap());
    }
    let keys: Value = call(reqwest::Method::GET, "/api/keys", json!(null)).await;
    assert_eq!(keys.as_array().unwrap().len(), 0);

    let budget = 0.1;
    let soft = 0.05;
    let k: Value = call(
        reqwest::Method::POST,
        "/api/keys",
        json!({"name": "capped", "budget_usd": budget, "budget_period": "daily", "soft_budget_usd": soft}),
    ).await;
    let key = k["key"].as_str().unwrap().to_owned();
    let key_id = k["id"].as_i64().unwrap();
    assert_eq!(k["budget_usd"], budget);
    assert_eq!(k["budget_period"], "daily");

    // 40 streams at once, each allowed 20 completion tokens: a worst case of about
    // (prompt + 20) tokens, settled at the mock's 10 prompt + 5 completion tokens.
    let mut tasks = Vec::new();
    for i in 0..40 {
        let http = http.clone();
        let url = format!("{base}/v1/chat/completions");
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            let r = http
                .post(url)
                .bearer_auth(&key)
                .json(
                    &json!({"model": "priced-chunks5-delay40", "stream": true, "max_tokens": 20,
                              "messages": [{"role": "user", "content": format!("request {i}")}]}),
                )
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let retry = header(&r, "x-should-retry");
            let body = r.text().await.unwrap();
            (status, retry, body)
        }));
    }
    let mut answered = 0;
    let mut refused = 0;
    for t in tasks {
        let (status, retry, body) = t.await.unwrap();
        match status {
            200 => {
                assert!(body.contains("[DONE]"), "{body}");
                answered += 1;
            }
            429 => {
                let v: Value = serde_json::from_str(&body).unwrap();
                assert_eq!(v["error"]["type"], "insufficient_quota", "{v}");
                assert_eq!(v["error"]["code"], "insufficient_quota", "{v}");
                assert_eq!(retry.as_deref(), Some("false"));
                refused += 1;
            }
            s => panic!("unexpected {s}: {body}"),
        }
    }
    assert!(
        answered > 0 && refused > 0,
        "{answered} answered, {refused} refused"
    );

    let spend: Value = call(
        reqwest::Method::GET,
        &format!("/api/keys/{key_id}"),
        json!(null),
    )
    .await;
    let spent = spend["spent_usd"].as_f64().unwrap();
    let per_request = 15.0 * PER_TOKEN;
    assert!(
        (spent - answered as f64 * per_request).abs() < 1e-9,
        "{spent} for {answered} answers: {spend}"
    );
    // Never above the budget by more than one request's reservation (its prompt estimate,
    // at most 10 tokens here, plus 20 completion tokens).
    let one_reservation = 30.0 * PER_TOKEN;
    assert!(
        spent <= budget + one_reservation,
        "spent {spent} over {budget}: {spend}"
    );
    // Refused ones were refused for budget held by the streams in flight, not spent: what is
    // left is spent below.
    assert_eq!(spend["budget_reached"], spent >= budget);
    assert_eq!(spend["soft_budget_reached"], true);
    assert_eq!(spend["reserved_usd"], 0.0);
    assert_eq!(spend["budget_period"], "daily");
    let (start, end) = (
        spend["period_start"].as_i64().unwrap(),
        spend["period_end"].as_i64().unwrap(),
    );
    assert_eq!(end - start, 86_400);
    assert_eq!(start % 86_400, 0, "a UTC day boundary");

    // Whatever is left, spend it: the next request past the budget is refused, also in
    // Anthropic's shape on /v1/messages.
    let mut last = 0;
    for _ in 0..10 {
        let r = http
            .post(format!("{base}/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&json!({"model": "priced-chunks5-delay40", "max_tokens": 20,
                          "messages": [{"role": "user", "content": "more"}]}))
            .send()
            .await
            .unwrap();
        last = r.status().as_u16();
        if last == 429 {
            assert!(
                header(&r, "retry-after").is_some(),
                "a daily budget says when"
            );
            break;
        }
    }
    assert_eq!(last, 429);
    let spend: Value = call(
        reqwest::Method::GET,
        &format!("/api/keys/{key_id}"),
        json!(null),
    )
    .await;
    let spent = spend["spent_usd"].as_f64().unwrap();
    assert!(spent <= budget + one_reservation, "{spend}");
    assert!(spent >= budget, "refused only once spent: {spend}");
    assert_eq!(spend["budget_reached"], true);
    assert_eq!(spend["budget_left_usd"], 0.0);
    let r = http
        .post(format!("{base}/v1/messages"))
        .header("x-api-key", &key)
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": "priced-chunks5-delay40", "max_tokens": 20,
                      "messages": [{"role": "user", "content": "more"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(header(&r, "x-should-retry").as_deref(), Some("false"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "rate_limit_error", "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("budget"),
        "{v}"
    );

    // The soft threshold was crossed once; refusals are counted.
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("nexus_budget_soft_alerts_total 1\n"),
        "{metrics}"
    );
    let refused_metric: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("nexus_budget_refused_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(refused_metric >= refused as u64 + 2, "{refused_metric}");

    // Raising the budget applies to the next request.
    let r = admin(
        reqwest::Method::PATCH,
        &format!("/api/keys/{key_id}"),
        json!({"budget_usd": 10.0}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let r = http
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&json!({"model": "priced-chunks5-delay40", "max_tokens": 20,
                      "messages": [{"role": "user", "content": "again"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = admin(
        reqwest::Method::PATCH,
        &format!("/api/keys/{key_id}"),
        json!({"budget_usd": -3}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);

    // A price change never reprices history by itself; the explicit action says how many rows
    // it changed, and a dry run changes none.
    let before: Value = call(reqwest::Method::GET, "/api/stats/summary", json!(null)).await;
    let r = admin(
        reqwest::Method::PATCH,
        &format!("/api/models/{model_id}"),
        json!({"input_price": 2000.0, "output_price": 2000.0}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let same: Value = call(reqwest::Method::GET, "/api/stats/summary", json!(null)).await;
    assert_eq!(same["cost"], before["cost"]);
    let dry: Value = call(
        reqwest::Method::POST,
        "/api/stats/reprice",
        json!({"dry_run": true}),
    )
    .await;
    let rows = answered as u64 + 1;
    assert!(dry["rows_changed"].as_u64().unwrap() >= rows, "{dry}");
    assert_eq!(dry["dry_run"], true);
    let unchanged: Value = call(reqwest::Method::GET, "/api/stats/summary", json!(null)).await;
    assert_eq!(unchanged["cost"], before["cost"]);
    let done: Value = call(reqwest::Method::POST, "/api/stats/reprice", json!({})).await;
    assert_eq!(done["rows_changed"], dry["rows_changed"], "{done}");
    let after: Value = call(reqwest::Method::GET, "/api/stats/summary", json!(null)).await;
    let (b, a) = (
        before["cost"].as_f64().unwrap(),
        after["cost"].as_f64().unwrap(),
    );
    assert!((a - 2.0 * b).abs() < 1e-6, "{b} -> {a}");
    assert!(
        (done["cost_after_usd"].as_f64().unwrap() - a).abs() < 1e-6,
        "{done}"
    );
    // Repricing again at the same prices changes nothing.
    let again: Value = call(reqwest::Method::POST, "/api/stats/reprice", json!({})).await;
    assert_eq!(again["rows_changed"], 0, "{again}");
    let r = admin(
        reqwest::Method::POST,
        "/api/stats/reprice",
        json!({"since": 100, "until": 50}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
}
