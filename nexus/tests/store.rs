//! The data layer through the public API, on real SQLite files: secrets at rest, the master key
//! (wrong key, key file, rotation), durable ids, routing, stats aggregation and sessions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{fast_options, Env, UPSTREAM_KEY};
use nexus::crypto::MasterKey;
use nexus::openai::ChatRequest;
use nexus::records::{NewModel, NewProvider, NewSession, ProviderOptions, ProviderPatch};
use nexus::stats::{Bucket, GroupBy, TimeseriesQuery};
use nexus::testing::MockUpstream;
use nexus::{Caller, ErrorKind, Hub, HubOptions, RequestContext};

fn files_bytes(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn no_secret_is_stored_in_plaintext() {
    let mock = MockUpstream::start().await.unwrap();
    let env = Env::new(HubOptions {
        master_key: None,
        ..fast_options()
    });
    env.provider("p", &mock, ProviderOptions::default(), &[("m", "m")]);
    let legacy = "legacy-personal-key-7f3a9c";
    let p2 = env
        .hub
        .registry()
        .create_provider(NewProvider {
            name: "legacy".into(),
            base_url: mock.base_url(),
            api_key: "sk-second-upstream-secret-55aa".into(),
            personalized_key: Some(legacy.into()),
            ..Default::default()
        })
        .unwrap();
    env.hub
        .registry()
        .update_provider(
            p2.id,
            ProviderPatch {
                api_key: Some("sk-rotated-upstream-secret-66bb".into()),
                ..Default::default()
            },
        )
        .unwrap();
    let client = env.key();
    let admin = env
        .hub
        .registry()
        .ensure_admin_token(None)
        .unwrap()
        .unwrap();
    env.hub
        .chat(
            Caller::Key(client.clone()),
            ChatRequest::user("m", "hello"),
            RequestContext::default(),
        )
        .await
        .unwrap();
    let listed = serde_json::to_string(&env.hub.registry().providers().unwrap()).unwrap();
    assert!(!listed.contains(UPSTREAM_KEY));
    assert!(!format!("{:?}", env.hub.registry().providers().unwrap()).contains(UPSTREAM_KEY));
    env.hub.flush().unwrap();
    // The WAL and the main file (and the key file beside them) both get checked, open and closed.
    let secrets = [
        UPSTREAM_KEY,
        "sk-second-upstream-secret-55aa",
        "sk-rotated-upstream-secret-66bb",
        legacy,
        client.as_str(),
        admin.as_str(),
    ];
    for round in ["open", "closed"] {
        let files = files_bytes(env.dir.path());
        assert!(files.iter().any(|(n, _)| n.ends_with("hub.db")));
        for (name, bytes) in &files {
            for s in secrets {
                assert!(
                    !contains(bytes, s.as_bytes()),
                    "{round}: {s} in plaintext in {name}"
                );
            }
        }
        if round == "open" {
            let Env { hub, dir, db } = env;
            drop(hub);
            // Reopen to prove the file is still usable with the key file alone.
            let hub = Hub::open(
                &db,
                HubOptions {
                    master_key: None,
                    ..fast_options()
                },
            )
            .unwrap();
            assert_eq!(hub.registry().providers().unwrap().len(), 2);
            drop(hub);
            return check_closed(dir, &secrets);
        }
    }
}

fn check_closed(dir: tempfile::TempDir, secrets: &[&str]) {
    for (name, bytes) in files_bytes(dir.path()) {
        for s in secrets {
            assert!(
                !contains(&bytes, s.as_bytes()),
                "closed: {s} in plaintext in {name}"
            );
        }
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let key_file = dir.path().join("hub.db.key");
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "key file must be private");
    }
}

#[test]
fn wrong_master_key_is_a_clear_error() {
    let env = Env::new(fast_options());
    env.hub
        .registry()
        .create_provider(NewProvider {
            name: "p".into(),
            base_url: "http://127.0.0.1:9/v1".into(),
            api_key: "sk-x".into(),
            ..Default::default()
        })
        .unwrap();
    let Env { hub, dir, db } = env;
    drop(hub);
    let e = Hub::open(
        &db,
        HubOptions {
            master_key: Some(MasterKey::from_bytes([9u8; 32])),
            ..fast_options()
        },
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config, "{e}");
    assert!(e.to_string().contains("master key"), "{e}");
    drop(dir);
}

#[tokio::test]
async fn rotating_the_master_key_keeps_every_upstream_key() {
    let mock = MockUpstream::start().await.unwrap();
    let env = Env::new(fast_options());
    env.provider("p", &mock, ProviderOptions::default(), &[("m", "m")]);
    let client = env.key();
    let new = MasterKey::from_bytes([42u8; 32]);
    env.hub.registry().rotate_master_key(new.clone()).unwrap();
    let Env { hub, dir, db } = env;
    drop(hub);
    // The old key no longer opens the file; the new one does, and decrypts the upstream key.
    assert!(Hub::open(&db, fast_options()).is_err());
    let hub = Hub::open(
        &db,
        HubOptions {
            master_key: Some(new),
            ..fast_options()
        },
    )
    .unwrap();
    hub.chat(
        Caller::Key(client),
        ChatRequest::user("m", "after rotation"),
        RequestContext::default(),
    )
    .await
    .unwrap();
    let auth = mock
        .last_headers()
        .into_iter()
        .find(|(k, _)| k == "authorization");
    assert_eq!(auth.map(|(_, v)| v), Some(format!("Bearer {UPSTREAM_KEY}")));
    drop(dir);
}

#[test]
fn ids_are_stable_and_records_survive_reopen() {
    let env = Env::new(fast_options());
    let reg = env.hub.registry();
    let mk = |name: &str| {
        reg.create_provider(NewProvider {
            name: name.into(),
            base_url: "http://127.0.0.1:9/v1/".into(),
            api_key: "sk-x".into(),
            ..Default::default()
        })
        .unwrap()
        .id
    };
    let (a, b, c) = (mk("a"), mk("b"), mk("c"));
    reg.create_model(
        c,
        NewModel {
            name: "m".into(),
            input_price: Some(1.5),
            ..Default::default()
        },
    )
    .unwrap();
    reg.delete_provider(b).unwrap();
    let d = mk("d");
    assert!(d > c, "ids are never reused");
    // Unique names.
    let dup = reg.create_provider(NewProvider {
        name: "a".into(),
        base_url: "http://127.0.0.1:9".into(),
        api_key: "k".into(),
        ..Default::default()
    });
    assert_eq!(dup.unwrap_err().kind(), ErrorKind::Conflict);
    let dup = reg.create_model(
        c,
        NewModel {
            name: "m".into(),
            ..Default::default()
        },
    );
    assert_eq!(dup.unwrap_err().kind(), ErrorKind::Conflict);
    assert_eq!(
        reg.delete_provider(b).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    let before = reg.providers().unwrap();
    let models_before = reg.models(None).unwrap();
    let Env { hub, dir, db } = env;
    drop(hub);
    let hub = Hub::open(&db, fast_options()).unwrap();
    assert_eq!(hub.registry().providers().unwrap(), before);
    assert_eq!(hub.registry().models(None).unwrap(), models_before);
    let ids: Vec<i64> = before.iter().map(|p| p.id).collect();
    assert_eq!(ids, vec![a, c, d]);
    // The original's suffix rule: a trailing `/` appends `chat/completions`.
    assert_eq!(
        nexus::records::chat_endpoint("http://127.0.0.1:9/v1/"),
        "http://127.0.0.1:9/v1/chat/completions"
    );
    drop(dir);
}

#[test]
fn routing_is_deterministic_and_respects_enabled() {
    let env = Env::new(fast_options());
    let reg = env.hub.registry();
    let mut ids = Vec::new();
    for name in ["z", "y", "x"] {
        let p = reg
            .create_provider(NewProvider {
                name: name.into(),
                base_url: "http://127.0.0.1:9/v1".into(),
                api_key: "k".into(),
                ..Default::default()
            })
            .unwrap();
        reg.create_model(
            p.id,
            NewModel {
                name: "shared".into(),
                upstream_name: Some(format!("up-{name}")),
                ..Default::default()
            },
        )
        .unwrap();
        ids.push(p.id);
    }
    let route = |pin| {
        reg.route(None, "shared", pin)
            .unwrap()
            .iter()
            .map(|c| (c.provider.record.id, c.model.upstream().to_owned()))
            .collect::<Vec<_>>()
    };
    let first = route(None);
    assert_eq!(first.len(), 3);
    for _ in 0..10 {
        assert_eq!(route(None), first);
    }
    assert_eq!(first[0], (ids[0], "up-z".to_owned()));
    assert_eq!(route(Some(ids[1])), vec![(ids[1], "up-y".to_owned())]);
    reg.update_provider(
        ids[0],
        ProviderPatch {
            enabled: Some(false),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(route(None).len(), 2);
    assert_eq!(
        reg.route(None, "nope", None).unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[tokio::test]
async fn stats_aggregate_by_time_model_provider_and_conversation() {
    let mock = MockUpstream::start().await.unwrap();
    let env = Env::new(fast_options());
    env.provider(
        "alpha",
        &mock,
        ProviderOptions::default(),
        &[("m1", "chunks2"), ("m2", "chunks3")],
    );
    let key = env.key();
    let conv = "conv-123".to_owned();
    for (model, n) in [("m1", 3), ("m2", 2)] {
        for _ in 0..n {
            let ctx = RequestContext {
                conversation_id: Some(conv.clone()),
                ..Default::default()
            };
            env.hub
                .chat(Caller::Key(key.clone()), ChatRequest::user(model, "q"), ctx)
                .await
                .unwrap();
        }
    }
    let _ = env
        .hub
        .chat(
            Caller::Key(key),
            ChatRequest::user("missing", "q"),
            RequestContext::default(),
        )
        .await
        .unwrap_err();
    env.hub.flush().unwrap();
    let s = env.hub.summary().unwrap();
    assert_eq!(s.requests, 6);
    assert_eq!(s.errors, 1);
    assert_eq!(s.rounds, 5);
    assert_eq!(s.total_rounds, 5);
    assert_eq!(s.conversations, 1);
    assert_eq!(s.prompt_tokens, 50);
    assert_eq!(s.completion_tokens, 3 * 2 + 2 * 3);
    assert_eq!(s.total_tokens, s.prompt_tokens + s.completion_tokens);
    assert_eq!((s.providers, s.models, s.keys), (1, 2, 1));

    let since = nexus::now_ms() / 1000 - 7200;
    let by_model = env
        .hub
        .timeseries(&TimeseriesQuery {
            bucket: Bucket::Hour,
            group_by: Some(GroupBy::Model),
            since,
        })
        .unwrap();
    let total = |g: &str| -> (u64, u64) {
        by_model
            .points
            .iter()
            .filter(|p| p.group == g)
            .fold((0, 0), |a, p| (a.0 + p.requests, a.1 + p.completion_tokens))
    };
    assert_eq!(total("m1"), (3, 6));
    assert_eq!(total("m2"), (2, 6));
    let by_provider = env
        .hub
        .timeseries(&TimeseriesQuery {
            bucket: Bucket::Day,
            group_by: Some(GroupBy::Provider),
            since,
        })
        .unwrap();
    let alpha: u64 = by_provider
        .points
        .iter()
        .filter(|p| p.group == "alpha")
        .map(|p| p.requests)
        .sum();
    assert_eq!(alpha, 5);

    let c = env.hub.conversation(&conv).unwrap();
    assert_eq!(c.rounds, 5);
    assert_eq!(c.total_tokens, 50 + 12);
    assert_eq!(
        c.messages.len(),
        10,
        "a user and an assistant message per round"
    );
    assert_eq!(c.messages[0].role, "user");
    assert_eq!(c.messages[1].content, "tok0 tok1 ");
}

#[test]
fn stats_rows_survive_drop_without_flush() {
    let env = Env::new(fast_options());
    let Env { hub, dir, db } = env;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for _ in 0..25 {
        // Unknown model: refused before any network, yet recorded.
        let _ = rt.block_on(hub.chat(
            Caller::Admin { provider_id: None },
            ChatRequest::user("nope", "x"),
            RequestContext::default(),
        ));
    }
    drop(hub);
    assert_eq!(common::rows_in(&db).len(), 25);
    drop(dir);
}

#[test]
fn sessions_round_trip() {
    let env = Env::new(fast_options());
    let s = env
        .hub
        .create_session(NewSession {
            title: "Trip planning".into(),
            model: "gpt-4o".into(),
            settings: serde_json::from_str(r#"{"temperature": 0.2}"#).unwrap(),
        })
        .unwrap();
    env.hub
        .append_session(
            &s.id,
            &[
                ("user".into(), "Where to?".into()),
                ("assistant".into(), "Lisbon.".into()),
            ],
        )
        .unwrap();
    let got = env.hub.session(&s.id).unwrap();
    assert_eq!(got.messages.len(), 2);
    assert_eq!(got.messages[1].content, "Lisbon.");
    assert!(got.messages[0].timestamp_ms > 0);
    let req = env.hub.session_request(&s.id, "And then?").unwrap();
    assert_eq!(req.model, "gpt-4o");
    assert_eq!(req.messages.len(), 3);
    assert_eq!(req.extra.get("temperature"), Some(&serde_json::json!(0.2)));
    assert_eq!(env.hub.sessions().unwrap().len(), 1);
    env.hub.delete_session(&s.id).unwrap();
    assert_eq!(
        env.hub.session(&s.id).unwrap_err().kind(),
        ErrorKind::NotFound
    );
}
