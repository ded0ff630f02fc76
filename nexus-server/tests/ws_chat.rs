//! `/ws/chat` with a real WebSocket client: streamed turns, history, cancel, auth, the original
//! message shape, error frames, and exactly one stats row per turn.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn ws_url(s: &TestServer, query: &str) -> String {
    format!("{}/ws/chat{query}", s.base.replacen("http://", "ws://", 1))
}

async fn connect(s: &TestServer) -> Ws {
    let mut req = ws_url(s, "").into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {ADMIN}").parse().unwrap());
    let (ws, resp) = tokio_tungstenite::connect_async(req)
        .await
        .expect("ws connect");
    assert_eq!(resp.status(), 101);
    ws
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

/// The next JSON text frame (bounded wait).
async fn recv(ws: &mut Ws) -> Value {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(15), ws.next())
            .await
            .expect("no frame in time")
            .expect("socket closed")
            .expect("ws error");
        match m {
            Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

/// Frames up to and including `done` or `error`: (deltas joined, final frame, delta count).
async fn turn(ws: &mut Ws) -> (String, Value, usize) {
    let mut text = String::new();
    let mut n = 0;
    for _ in 0..10_000 {
        let f = recv(ws).await;
        match f["type"].as_str() {
            Some("delta") => {
                text.push_str(f["content"].as_str().unwrap());
                n += 1;
            }
            Some("done") | Some("error") => return (text, f, n),
            _ => panic!("unexpected frame {f}"),
        }
    }
    panic!("turn did not end");
}

#[tokio::test]
async fn full_turn_streams_deltas_then_done() {
    let s = TestServer::start().await;
    let mut ws = connect(&s).await;
    send(
        &mut ws,
        json!({"type": "chat", "provider_id": s.provider_id, "model": "gpt-4o",
        "messages": [{"role": "user", "content": "hello from the socket"}], "temperature": 0.3}),
    )
    .await;
    let (text, done, n) = turn(&mut ws).await;
    assert_eq!(done["type"], "done", "{done}");
    assert_eq!(text, "hello from the socket");
    assert_eq!(n, 4, "one delta per upstream delta");
    assert_eq!(done["finish_reason"], "stop");
    assert_eq!(done["usage"]["prompt_tokens"], 10);
    assert_eq!(done["usage"]["completion_tokens"], 4);
    assert_eq!(done["usage"]["total_tokens"], 14);
    assert_eq!(done["usage"]["source"], "upstream");
    let conv = done["conversation_id"].as_str().unwrap().to_owned();
    assert!(!conv.is_empty());
    assert!(done["latency_ms"].as_f64().unwrap() >= 0.0);
    assert!(done["ttft_ms"].as_f64().is_some());
    let last = s.mock.last_request().unwrap();
    assert_eq!(last["temperature"], 0.3);
    assert_eq!(last["stream"], true);
    // Without provider_id the model is routed among all providers.
    send(&mut ws, json!({"type": "chat", "model": "m-x-chunks5-delay20", "messages": [{"role": "user", "content": "x"}]})).await;
    let (text, done, _) = turn(&mut ws).await;
    assert_eq!(text, "tok0 tok1 tok2 tok3 tok4 ");
    assert_eq!(done["type"], "done");
    s.hub.flush().unwrap();
    let sum = s.hub.summary().unwrap();
    assert_eq!((sum.requests, sum.rounds), (2, 2));
}

#[tokio::test]
async fn multi_turn_history_keeps_the_conversation() {
    let s = TestServer::start().await;
    let mut ws = connect(&s).await;
    let mut history = vec![
        json!({"role": "system", "content": "be brief"}),
        json!({"role": "user", "content": "first turn"}),
    ];
    send(
        &mut ws,
        json!({"type": "chat", "model": "gpt-4o", "messages": history}),
    )
    .await;
    let (answer, done, _) = turn(&mut ws).await;
    assert_eq!(done["type"], "done");
    let conv = done["conversation_id"].as_str().unwrap().to_owned();
    history.push(json!({"role": "assistant", "content": answer}));
    history.push(json!({"role": "user", "content": "second turn"}));
    send(
        &mut ws,
        json!({"type": "chat", "model": "gpt-4o", "messages": history, "conversation_id": conv}),
    )
    .await;
    let (answer2, done2, _) = turn(&mut ws).await;
    assert_eq!(answer2, "second turn");
    assert_eq!(done2["conversation_id"], conv.as_str());
    assert_eq!(done2["usage"]["prompt_tokens"], 40);
    let last = s.mock.last_request().unwrap();
    assert_eq!(last["messages"], json!(history));
    s.hub.flush().unwrap();
    let c = s.hub.conversation(&conv).unwrap();
    assert_eq!(c.rounds, 2);
    assert_eq!(s.hub.summary().unwrap().requests, 2);
}

#[tokio::test]
async fn cancel_mid_stream_ends_with_cancelled_and_cancels_upstream() {
    let s = TestServer::start().await;
    let mut ws = connect(&s).await;
    send(&mut ws, json!({"type": "chat", "model": "m-x-chunks50-delay50", "messages": [{"role": "user", "content": "long"}]})).await;
    // A couple of deltas arrive, then cancel.
    for _ in 0..2 {
        let f = recv(&mut ws).await;
        assert_eq!(f["type"], "delta", "{f}");
    }
    send(&mut ws, json!({"type": "cancel"})).await;
    let mut late = 0;
    let done = loop {
        let f = recv(&mut ws).await;
        match f["type"].as_str() {
            Some("delta") => late += 1,
            Some("done") => break f,
            _ => panic!("unexpected {f}"),
        }
    };
    assert!(late <= 2, "deltas kept coming after cancel: {late}");
    assert_eq!(done["finish_reason"], "cancelled", "{done}");
    // The done frame of a cancelled turn still carries what was used so far.
    assert!(
        done["usage"]["completion_tokens"]
            .as_u64()
            .is_some_and(|c| c >= 2),
        "{done}"
    );
    assert!(
        done["usage"]["prompt_tokens"]
            .as_u64()
            .is_some_and(|c| c > 0),
        "{done}"
    );
    assert!(done["conversation_id"]
        .as_str()
        .is_some_and(|c| !c.is_empty()));
    let mock = &s.mock;
    eventually("the mock to see the cancellation", || mock.cancelled() == 1).await;
    assert_eq!(mock.completed(), 0);
    // No more frames for that turn; the socket takes a new one.
    send(&mut ws, json!({"type": "chat", "model": "gpt-4o", "messages": [{"role": "user", "content": "after"}]})).await;
    let (text, done, _) = turn(&mut ws).await;
    assert_eq!(
        (text.as_str(), done["type"].as_str()),
        ("after", Some("done"))
    );
    // A cancel with no turn running is ignored.
    send(&mut ws, json!({"type": "cancel"})).await;
    send(&mut ws, json!({"type": "chat", "model": "gpt-4o", "messages": [{"role": "user", "content": "again"}]})).await;
    let (text, _, _) = turn(&mut ws).await;
    assert_eq!(text, "again");
    // Exactly one stats row per turn, the cancelled one included.
    s.hub.flush().unwrap();
    let sum = s.hub.summary().unwrap();
    assert_eq!(sum.requests, 3, "{sum:?}");
}

#[tokio::test]
async fn closing_the_socket_cancels_the_turn() {
    let s = TestServer::start().await;
    let mut ws = connect(&s).await;
    send(&mut ws, json!({"type": "chat", "model": "m-x-chunks50-delay50", "messages": [{"role": "user", "content": "x"}]})).await;
    assert_eq!(recv(&mut ws).await["type"], "delta");
    drop(ws);
    let mock = &s.mock;
    eventually("the mock to see the cancellation", || mock.cancelled() == 1).await;
    let hub = s.hub.clone();
    eventually("one stats row", || {
        hub.flush().unwrap();
        hub.summary().unwrap().requests == 1
    })
    .await;
}

#[tokio::test]
async fn auth_by_header_or_query_token() {
    let s = TestServer::start().await;
    // ?token= for browsers.
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url(&s, &format!("?token={ADMIN}")))
        .await
        .expect("query token");
    send(
        &mut ws,
        json!({"type": "chat", "model": "gpt-4o", "messages": [{"role": "user", "content": "q"}]}),
    )
    .await;
    let (text, _, _) = turn(&mut ws).await;
    assert_eq!(text, "q");
    // No token, a wrong token, a client key: refused before the upgrade with a 401.
    for q in [
        "".to_owned(),
        "?token=wrong".to_owned(),
        format!("?token={}", s.key),
        "?token=".to_owned(),
    ] {
        match tokio_tungstenite::connect_async(ws_url(&s, &q)).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status(), 401, "{q}");
                let body: Value =
                    serde_json::from_slice(resp.body().as_deref().unwrap_or_default()).unwrap();
                check_error_shape(&body);
            }
            other => panic!(
                "{q}: expected a 401, got {:?}",
                other.map(|(_, r)| r.status())
            ),
        }
    }
    let mut req = ws_url(&s, "").into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", "Bearer nope".parse().unwrap());
    assert!(tokio_tungstenite::connect_async(req).await.is_err());
}

#[tokio::test]
async fn original_message_shape_still_works() {
    let s = TestServer::start().await;
    let mut ws = connect(&s).await;
    send(&mut ws, json!({"message": "old style client", "provider_id": s.provider_id, "model_name": "gpt-4o"})).await;
    let mut last_msg = String::new();
    let done = loop {
        let f = recv(&mut ws).await;
        match f["type"].as_str() {
            // The original sent the whole text so far in each frame.
            Some("message") => {
                let c = f["content"].as_str().unwrap().to_owned();
                assert!(c.starts_with(&last_msg), "{c:?} after {last_msg:?}");
                last_msg = c;
            }
            Some("done") => break f,
            _ => panic!("unexpected {f}"),
        }
    };
    assert_eq!(last_msg, "old style client");
    assert_eq!(done["finish_reason"], "stop");
    assert_eq!(s.mock.last_request().unwrap()["temperature"], 0.7);
}

#[tokio::test]
async fn bad_messages_get_error_frames_and_the_socket_survives() {
    let s = TestServer::start().await;
    let mut ws = connect(&s).await;
    let bad: Vec<(String, Option<&str>)> = vec![
        ("not json".into(), None),
        (json!({"type": "dance"}).to_string(), Some("invalid_request")),
        (json!({"type": "chat", "messages": [{"role": "user", "content": "x"}]}).to_string(), Some("invalid_request")),
        (json!({"type": "chat", "model": "gpt-4o"}).to_string(), Some("invalid_request")),
        (json!({"type": "chat", "model": "gpt-4o", "messages": []}).to_string(), Some("invalid_request")),
        (json!({"type": "chat", "model": "no-such-model", "messages": [{"role": "user", "content": "x"}]}).to_string(), Some("model_not_found")),
        (json!({"type": "chat", "model": "gpt-4o", "provider_id": s.bad_provider_id, "messages": [{"role": "user", "content": "x"}]}).to_string(), None),
        (json!({"type": "chat", "model": "b-x-fail500", "messages": [{"role": "user", "content": "x"}]}).to_string(), Some("upstream_error")),
        (json!({"type": "chat", "model": 12, "messages": "x"}).to_string(), None),
    ];
    for (text, code) in bad {
        ws.send(Message::Text(text.clone().into())).await.unwrap();
        let f = recv(&mut ws).await;
        assert_eq!(f["type"], "error", "{text}: {f}");
        let e = &f["error"];
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{f}");
        assert!(e["type"].is_string() && e["code"].is_string(), "{f}");
        if let Some(c) = code {
            assert_eq!(e["code"], c, "{text}: {f}");
        }
    }
    // A mid-stream upstream failure: deltas, then an error frame (no done).
    send(&mut ws, json!({"type": "chat", "model": "m-x-miderror", "messages": [{"role": "user", "content": "a b c"}]})).await;
    let (text, f, _) = turn(&mut ws).await;
    assert_eq!(text, "a ");
    assert_eq!(f["type"], "error", "{f}");
    // A second chat while one runs is refused, the first goes on.
    send(&mut ws, json!({"type": "chat", "model": "m-x-chunks5-delay20", "messages": [{"role": "user", "content": "x"}]})).await;
    send(
        &mut ws,
        json!({"type": "chat", "model": "gpt-4o", "messages": [{"role": "user", "content": "y"}]}),
    )
    .await;
    let mut saw_busy = false;
    let mut text = String::new();
    loop {
        let f = recv(&mut ws).await;
        match f["type"].as_str() {
            Some("error") => saw_busy = true,
            Some("delta") => text.push_str(f["content"].as_str().unwrap()),
            Some("done") => break,
            _ => panic!("{f}"),
        }
    }
    assert!(saw_busy);
    assert_eq!(text, "tok0 tok1 tok2 tok3 tok4 ");
    // Still usable.
    send(&mut ws, json!({"type": "chat", "model": "gpt-4o", "messages": [{"role": "user", "content": "fine"}]})).await;
    assert_eq!(turn(&mut ws).await.0, "fine");
}

/// `format: "messages"` / `"responses"`: the turn goes through that client API (its usage row
/// says so), the socket forwards each of the format's events, then the deltas and `done` as
/// for chat; an upstream failure mid-stream is the turn's `error` frame.
#[tokio::test]
async fn a_turn_in_the_messages_and_responses_formats() {
    let s = TestServer::start().await;
    let mut ws = connect(&s).await;
    for (format, first, last) in [
        ("messages", "message_start", "message_stop"),
        ("responses", "response.created", "response.completed"),
    ] {
        send(
            &mut ws,
            json!({"type": "chat", "format": format, "model": "gpt-4o", "provider_id": s.provider_id,
                "messages": [{"role": "system", "content": "Be brief."},
                             {"role": "user", "content": "hello formats"}]}),
        )
        .await;
        let mut events = vec![];
        let mut text = String::new();
        let end = loop {
            let f = recv(&mut ws).await;
            match f["type"].as_str() {
                Some("event") => events.push(f["event"].as_str().unwrap().to_owned()),
                Some("delta") => text.push_str(f["content"].as_str().unwrap()),
                _ => break f,
            }
        };
        assert_eq!(end["type"], "done", "{format}: {end}");
        assert_eq!(text, "hello formats", "{format}");
        assert_eq!(events.first().map(String::as_str), Some(first), "{format}");
        assert_eq!(events.last().map(String::as_str), Some(last), "{format}");
        assert!(
            end["usage"]["total_tokens"].as_u64().unwrap() > 0,
            "{format}"
        );
    }
    send(
        &mut ws,
        json!({"type": "chat", "format": "responses", "model": "m-x-miderror",
            "messages": [{"role": "user", "content": "one two three"}]}),
    )
    .await;
    let end = loop {
        let f = recv(&mut ws).await;
        if f["type"] != "event" && f["type"] != "delta" {
            break f;
        }
    };
    assert_eq!(end["type"], "error", "{end}");
    send(
        &mut ws,
        json!({"type": "chat", "format": "gemini", "model": "gpt-4o", "messages": []}),
    )
    .await;
    let e = recv(&mut ws).await;
    assert_eq!(e["type"], "error");
    assert_eq!(e["error"]["param"], "format");
    s.hub.flush().unwrap();
    let ts: Value = s
        .http
        .get(format!(
            "{}/api/stats/timeseries?group_by=endpoint&bucket=day",
            s.base
        ))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut groups: Vec<(String, u64)> = ts["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["group"].as_str().unwrap().to_owned(),
                p["requests"].as_u64().unwrap(),
            )
        })
        .collect();
    groups.sort();
    assert_eq!(
        groups,
        [("messages".to_owned(), 1), ("responses".to_owned(), 2)],
        "{ts}"
    );
}
