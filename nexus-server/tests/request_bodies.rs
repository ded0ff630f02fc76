//! Body recording through the real binary: with `record_bodies = "errors"` a failed request's
//! body and error are kept and a successful one's are not; a key set to `all` keeps its plain and
//! streamed answers, one set to `off` keeps nothing, and `null` puts a key back on the server's
//! setting. Secrets in the prompt and in the upstream's error are redacted, in the API and in
//! the database file.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{body, client, start_with, temp_dir, Admin};
use serde_json::{json, Value};

const SECRET: &str = "sk-live-abcdefghijklmnopqrstuv0123";

async fn send(srv_addr: &str, key: &str, b: Value) -> (u16, String) {
    let r = client()
        .post(format!("http://{srv_addr}/v1/chat/completions"))
        .bearer_auth(key)
        .json(&b)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let id = r
        .headers()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let _ = r.bytes().await.unwrap();
    (status, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_are_recorded_by_setting_and_redacted() {
    let dir = temp_dir();
    let db = dir.join("nexus.db");
    let srv = start_with(&db, Some("record_bodies = \"errors\"\n"), &[]);
    let a = Admin::of(&srv);
    let mock = nexus::testing::MockUpstream::start().await.unwrap();
    let (s, p) = a
        .post(
            "/api/providers",
            json!({"name": "m", "base_url": mock.base_url(), "api_key": "sk-upstream-bodies-0001"}),
        )
        .await;
    assert_eq!(s, 201, "{p}");
    let pid = p["id"].as_i64().unwrap();
    for (name, up) in [("good", "echo"), ("bad", "x-fail500")] {
        let (s, v) = a
            .post(
                &format!("/api/providers/{pid}/models"),
                json!({"name": name, "upstream_name": up}),
            )
            .await;
        assert_eq!(s, 201, "{v}");
    }
    let key = |name: &'static str, mode: Value| {
        let a = &a;
        async move {
            let (s, k) = a
                .post("/api/keys", json!({"name": name, "record_bodies": mode}))
                .await;
            assert_eq!(s, 201, "{k}");
            assert_eq!(k["record_bodies"], mode);
            (
                k["id"].as_i64().unwrap(),
                k["key"].as_str().unwrap().to_owned(),
            )
        }
    };
    let (_, default_key) = key("default", Value::Null).await;
    let (all_id, all_key) = key("all", json!("all")).await;
    let (_, off_key) = key("off", json!("off")).await;
    let (s, e) = a
        .post(
            "/api/keys",
            json!({"name": "x", "record_bodies": "sometimes"}),
        )
        .await;
    assert_eq!(s, 400, "{e}");

    let prompt = format!("my key is {SECRET}, keep it safe");
    let detail = |id: String| {
        let a = &a;
        async move { a.get(&format!("/api/requests/{id}")).await }
    };

    // The server's "errors": a success keeps nothing, a failure keeps both, redacted.
    let (s, ok_id) = send(&srv.addr, &default_key, body("good", &prompt)).await;
    assert_eq!(s, 200);
    let (s, bad_id) = send(&srv.addr, &default_key, body("bad", &prompt)).await;
    assert_eq!(s, 502);
    // A key set to "all": plain and streamed answers.
    let (s, all_plain) = send(&srv.addr, &all_key, body("good", "hello bodies")).await;
    assert_eq!(s, 200);
    let mut streamed = body("good", "streamed words here");
    streamed["stream"] = json!(true);
    let (s, all_stream) = send(&srv.addr, &all_key, streamed).await;
    assert_eq!(s, 200);
    // A key set to "off": not even its failures.
    let (s, off_bad) = send(&srv.addr, &off_key, body("bad", &prompt)).await;
    assert_eq!(s, 502);

    // Rows reach the database on the stats writer's flush: wait for the last one.
    let mut tries = 0;
    let bad = loop {
        let (s, v) = a
            .call(
                reqwest::Method::GET,
                &format!("/api/requests/{off_bad}"),
                None,
            )
            .await;
        if s == 200 {
            break detail(bad_id.clone()).await;
        }
        tries += 1;
        assert!(tries < 100, "{v}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let req_body = bad["request_body"].as_str().unwrap();
    assert!(req_body.contains("keep it safe"), "{req_body}");
    assert!(!req_body.contains(SECRET), "{req_body}");
    assert!(req_body.contains("sk-[redacted]"), "{req_body}");
    let resp_body = bad["response_body"].as_str().unwrap();
    assert!(resp_body.contains("upstream"), "{resp_body}");
    // The mock's error echoes a credential; it is hidden too.
    assert!(
        !resp_body.contains("sk-mock-0123456789abcdef"),
        "{resp_body}"
    );

    let ok = detail(ok_id).await;
    assert!(ok.get("request_body").is_none(), "{ok}");
    assert!(ok.get("response_body").is_none(), "{ok}");
    let off = detail(off_bad).await;
    assert!(off.get("request_body").is_none(), "{off}");

    let plain = detail(all_plain).await;
    let answer: Value = serde_json::from_str(plain["response_body"].as_str().unwrap()).unwrap();
    assert_eq!(answer["choices"][0]["message"]["content"], "hello bodies");
    let st = detail(all_stream).await;
    let answer: Value = serde_json::from_str(st["response_body"].as_str().unwrap()).unwrap();
    assert_eq!(answer["content"], "streamed words here");
    assert_eq!(answer["stream"], true);
    // The list never carries bodies.
    let list = a.get("/api/requests?limit=50").await;
    assert!(!list.to_string().contains("request_body"));

    // null puts the key back on the server's setting.
    let (s, k) = a
        .call(
            reqwest::Method::PATCH,
            &format!("/api/keys/{all_id}"),
            Some(json!({"record_bodies": null})),
        )
        .await;
    assert_eq!(s, 200, "{k}");
    assert!(k["record_bodies"].is_null(), "{k}");
    let (s, after) = send(&srv.addr, &all_key, body("good", "not kept")).await;
    assert_eq!(s, 200);
    let mut tries = 0;
    loop {
        let (s, v) = a
            .call(
                reqwest::Method::GET,
                &format!("/api/requests/{after}"),
                None,
            )
            .await;
        if s == 200 {
            assert!(v.get("response_body").is_none(), "{v}");
            break;
        }
        tries += 1;
        assert!(tries < 100);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    drop(srv);
    let mut bytes = std::fs::read(&db).unwrap();
    if let Ok(wal) = std::fs::read(db.with_extension("db-wal")) {
        bytes.extend(wal);
    }
    assert!(!String::from_utf8_lossy(&bytes).contains(SECRET));
}
