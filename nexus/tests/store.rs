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
            // m2's requests say they came in through the Messages API.
            let ctx = RequestContext {
                conversation_id: Some(conv.clone()),
                endpoint: if model == "m2" {
                    nexus::usage::Endpoint::Messages
                } else {
                    nexus::usage::Endpoint::Chat
                },
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
    let by_endpoint = env
        .hub
        .timeseries(
            &TimeseriesQuery::from_params(Some("day"), Some("endpoint"), Some(since)).unwrap(),
        )
        .unwrap();
    let requests = |g: &str| -> u64 {
        by_endpoint
            .points
            .iter()
            .filter(|p| p.group == g)
            .map(|p| p.requests)
            .sum()
    };
    // The refused request for `missing` is a chat request too.
    assert_eq!((requests("chat"), requests("messages")), (4, 2));
    assert!(TimeseriesQuery::from_params(None, Some("colour"), None).is_err());

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

// ---- issue 13: fail-closed decoding, cross-process reloads, admin token, file modes, headers ---

fn raw(db: &std::path::Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(db).unwrap();
    c.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
    c
}

fn model(name: &str) -> NewModel {
    NewModel {
        name: name.into(),
        ..NewModel::default()
    }
}

fn plain_provider(name: &str) -> NewProvider {
    NewProvider {
        name: name.into(),
        base_url: "http://127.0.0.1:9".into(),
        api_key: "sk-some-upstream-key-1234".into(),
        ..Default::default()
    }
}

#[test]
fn a_key_with_an_undecodable_scope_fails_closed() {
    let env = Env::new(fast_options());
    let reg = env.hub.registry();
    let p = reg.create_provider(plain_provider("a")).unwrap();
    reg.create_model(p.id, model("m")).unwrap();
    let k = reg
        .create_key(nexus::records::NewKey {
            name: "scoped".into(),
            provider_ids: vec![p.id],
            ..Default::default()
        })
        .unwrap();
    assert!(reg.authenticate(&k.key).is_ok());
    raw(&env.db)
        .execute(
            "UPDATE client_keys SET provider_ids = '[1,' WHERE id = ?1",
            [k.record.id],
        )
        .unwrap();
    reg.reload().unwrap();
    // Not "all providers": the key does not authenticate at all.
    assert_eq!(
        reg.authenticate(&k.key).unwrap_err().kind(),
        ErrorKind::Authentication
    );
    let listed = reg.key(k.record.id).unwrap();
    assert!(listed.config_error.unwrap().contains("provider_ids"));
    // Patching only the name would write the (empty) listed scope back: refused.
    let e = reg
        .update_key(
            k.record.id,
            nexus::records::KeyPatch {
                enabled: Some(true),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidRequest);
    reg.update_key(
        k.record.id,
        nexus::records::KeyPatch {
            provider_ids: Some(vec![p.id]),
            models: Some(vec![]),
            ..Default::default()
        },
    )
    .unwrap();
    let ok = reg.authenticate(&k.key).unwrap();
    assert_eq!(ok.provider_ids, vec![p.id]);
    assert!(ok.config_error.is_none());
}

#[test]
fn a_provider_with_undecodable_options_fails_closed() {
    let env = Env::new(fast_options());
    let reg = env.hub.registry();
    let p = reg
        .create_provider(NewProvider {
            options: ProviderOptions {
                first_byte_timeout_ms: Some(1000),
                ..Default::default()
            },
            ..plain_provider("a")
        })
        .unwrap();
    reg.create_model(p.id, model("m")).unwrap();
    assert_eq!(reg.route(None, "m", None).unwrap().len(), 1);
    // As a downgrade would see an option it does not know (deny_unknown_fields).
    raw(&env.db)
        .execute(
            "UPDATE service_providers SET options = '{\"from_the_future\":1}' WHERE id = ?1",
            [p.id],
        )
        .unwrap();
    reg.reload().unwrap();
    assert_eq!(
        reg.route(None, "m", None).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert!(reg.visible_models(None).unwrap().is_empty());
    assert!(reg.provider(p.id).unwrap().config_error.is_some());
    // Toggling another field cannot resave it with default options.
    let e = reg
        .update_provider(
            p.id,
            ProviderPatch {
                description: Some("x".into()),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidRequest);
    reg.update_provider(
        p.id,
        ProviderPatch {
            options: Some(ProviderOptions::default()),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(reg.route(None, "m", None).unwrap().len(), 1);
}

fn within(limit: std::time::Duration, mut ok: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if ok() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    ok()
}

#[test]
fn changes_made_through_another_hub_apply_within_two_seconds() {
    let env = Env::new(fast_options());
    // A second process on the same file, as a server next to a Python program.
    let other = Hub::open(&env.db, fast_options()).unwrap();
    let a = env.hub.registry();
    let b = other.registry();
    let two = std::time::Duration::from_secs(2);
    let p = a.create_provider(plain_provider("a")).unwrap();
    a.create_model(p.id, model("m")).unwrap();
    let k = a.create_key(nexus::records::NewKey {
        name: "k".into(),
        ..Default::default()
    });
    let k = k.unwrap();
    assert!(
        within(two, || b.authenticate(&k.key).is_ok()),
        "new key seen"
    );
    assert!(
        within(two, || b.route(None, "m", None).is_ok()),
        "new model"
    );
    a.delete_key(k.record.id).unwrap();
    assert!(
        within(two, || b.authenticate(&k.key).is_err()),
        "revoked key refused in the other hub"
    );
    a.update_provider(
        p.id,
        ProviderPatch {
            enabled: Some(false),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(
        within(two, || b.route(None, "m", None).is_err()),
        "disabled provider not routed by the other hub"
    );
    // And the other way round, with a bare registry as the writer.
    let reg = nexus::registry::Registry::open(
        std::sync::Arc::new(nexus::store::SqliteStore::open(&env.db).unwrap()),
        common::master(),
    )
    .unwrap();
    reg.create_model(p.id, model("m2")).unwrap();
    assert!(within(two, || a.model_names().contains(&"m2".to_owned())));
}

trait Names {
    fn model_names(&self) -> Vec<String>;
}

impl Names for nexus::registry::Registry {
    fn model_names(&self) -> Vec<String> {
        self.models(None)
            .unwrap()
            .into_iter()
            .map(|m| m.name)
            .collect()
    }
}

#[test]
fn the_watcher_ends_when_the_hub_drops() {
    fn watchers() -> usize {
        std::fs::read_dir("/proc/self/task")
            .map(|d| {
                d.filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                    .filter(|c| c.trim() == "nexus-registry-")
                    .count()
            })
            .unwrap_or(0)
    }
    if !std::path::Path::new("/proc/self/task").exists() {
        return;
    }
    let env = Env::new(fast_options());
    // A new thread takes its name once it runs: wait for it rather than race it.
    assert!(within(std::time::Duration::from_secs(2), || watchers() >= 1));
    let before = watchers();
    let Env { hub, dir, .. } = env;
    drop(hub);
    assert!(
        within(std::time::Duration::from_secs(2), || watchers() < before),
        "the watcher thread exits after its registry is dropped"
    );
    drop(dir);
}

#[test]
fn admin_token_is_checked_from_memory_and_short_tokens_are_refused() {
    let env = Env::new(fast_options());
    let reg = env.hub.registry();
    let e = reg.ensure_admin_token(Some("too-short")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    assert!(e.to_string().contains("16"), "{e}");
    reg.ensure_admin_token(Some("a-long-enough-admin-token"))
        .unwrap();
    assert!(reg.verify_admin_token("a-long-enough-admin-token").unwrap());
    assert!(!reg.verify_admin_token("a-long-enough-admin-tokeX").unwrap());
    assert!(!reg.verify_admin_token("").unwrap());
    // The hash is cached: with the meta table gone, the check still answers from memory (it
    // used to read the row on every request, through the writer connection's mutex).
    let c = raw(&env.db);
    c.execute_batch("DROP TRIGGER meta_gen_del; DELETE FROM meta WHERE key = 'admin_token_hash';")
        .unwrap();
    assert!(reg.verify_admin_token("a-long-enough-admin-token").unwrap());
    // Another process setting a new token is picked up by the reload.
    let other = Hub::open(&env.db, fast_options()).unwrap();
    other
        .registry()
        .ensure_admin_token(Some("the-second-admin-token"))
        .unwrap();
    assert!(within(std::time::Duration::from_secs(2), || reg
        .verify_admin_token("the-second-admin-token")
        .unwrap()));
    assert!(!reg.verify_admin_token("a-long-enough-admin-token").unwrap());
}

#[cfg(unix)]
#[tokio::test]
async fn database_wal_shm_lock_and_key_files_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let mock = MockUpstream::start().await.unwrap();
    let env = Env::new(HubOptions {
        master_key: None,
        ..fast_options()
    });
    env.provider("p", &mock, ProviderOptions::default(), &[("m", "m")]);
    env.hub
        .chat(
            Caller::Admin { provider_id: None },
            ChatRequest::user("m", "hi"),
            RequestContext::default(),
        )
        .await
        .unwrap();
    env.hub.flush().unwrap();
    for suffix in ["", "-wal", "-shm", ".lock", ".key"] {
        let p = env.dir.path().join(format!("hub.db{suffix}"));
        let mode = std::fs::metadata(&p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{} is {:o}", p.display(), mode & 0o777);
    }
}

#[tokio::test]
async fn provider_headers_are_sealed_and_answered_as_hints() {
    let mock = MockUpstream::start().await.unwrap();
    let env = Env::new(fast_options());
    let secret = "azure-header-secret-0f1e2d3c4b";
    let headers: std::collections::BTreeMap<String, String> =
        [("api-key".to_owned(), secret.to_owned())].into();
    let id = env.provider(
        "azure",
        &mock,
        ProviderOptions {
            headers: Some(headers),
            ..Default::default()
        },
        &[("m", "m")],
    );
    let reg = env.hub.registry();
    let shown = reg.provider(id).unwrap();
    let hint = shown.options.headers.clone().unwrap()["api-key"].clone();
    assert_eq!(hint, "azu...3c4b");
    let answers = format!(
        "{} {:?} {:?}",
        serde_json::to_string(&reg.providers().unwrap()).unwrap(),
        reg.providers().unwrap(),
        reg.route(None, "m", None).unwrap()
    );
    assert!(!answers.contains(secret), "{answers}");
    // The upstream still gets the real value.
    env.hub
        .chat(
            Caller::Admin { provider_id: None },
            ChatRequest::user("m", "hi"),
            RequestContext::default(),
        )
        .await
        .unwrap();
    let sent = mock.last_headers();
    assert!(sent.iter().any(|(k, v)| k == "api-key" && v == secret));
    // PATCH: options without headers keep them; the hint sent back keeps the value; new headers
    // replace them.
    reg.update_provider(
        id,
        ProviderPatch {
            options: Some(ProviderOptions {
                max_retries: Some(1),
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .unwrap();
    reg.update_provider(
        id,
        ProviderPatch {
            options: Some(shown.options.clone()),
            ..Default::default()
        },
    )
    .unwrap();
    let entry = reg.provider_entry(id).unwrap();
    assert_eq!(entry.headers.len(), 1);
    assert_eq!(entry.headers[0].1.expose(), secret);
    reg.update_provider(
        id,
        ProviderPatch {
            options: Some(ProviderOptions {
                headers: Some([("x-other".to_owned(), "v2-value-123456".to_owned())].into()),
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .unwrap();
    let entry = reg.provider_entry(id).unwrap();
    assert_eq!(entry.headers.len(), 1);
    assert_eq!(entry.headers[0].0, "x-other");
    env.hub.flush().unwrap();
    let Env { hub, dir, .. } = env;
    drop(hub);
    check_closed_no_key_file(&dir, &[secret, "v2-value-123456"]);
}

fn check_closed_no_key_file(dir: &tempfile::TempDir, secrets: &[&str]) {
    for (name, bytes) in files_bytes(dir.path()) {
        for s in secrets {
            assert!(
                !contains(&bytes, s.as_bytes()),
                "{s} in plaintext in {name}"
            );
        }
    }
}

#[test]
fn plaintext_headers_of_an_older_build_are_sealed_on_open() {
    let env = Env::new(fast_options());
    let p = env
        .hub
        .registry()
        .create_provider(plain_provider("old"))
        .unwrap();
    let secret = "plaintext-legacy-header-77aa88bb";
    raw(&env.db)
        .execute(
            "UPDATE service_providers SET options = ?2 WHERE id = ?1",
            rusqlite::params![
                p.id,
                format!("{{\"headers\":{{\"x-api-key\":\"{secret}\"}}}}")
            ],
        )
        .unwrap();
    let Env { hub, dir, db } = env;
    drop(hub);
    let hub = Hub::open(&db, fast_options()).unwrap();
    let e = hub.registry().provider_entry(p.id).unwrap();
    assert_eq!(e.headers[0].1.expose(), secret);
    let opts: String = raw(&db)
        .query_row(
            "SELECT options FROM service_providers WHERE id = ?1",
            [p.id],
            |r| r.get(0),
        )
        .unwrap();
    assert!(!opts.contains(secret), "{opts}");
    drop(hub);
    let c = raw(&db);
    c.execute_batch("VACUUM").unwrap();
    drop(c);
    check_closed_no_key_file(&dir, &[secret]);
}

// ---- stats writer: failures are visible and counted, the buffer is bounded, retention ---------

use nexus::records::{ClientKey, ModelPatch, Session, SessionMessage};
use nexus::stats::{
    ConversationStats, MessageRecord, RequestSource, StatsConfig, StatsWriter, Summary, Timeseries,
    UsageRecord, UsageSource,
};
use nexus::store::{GroupKey, RegistryData, SqliteStore, Store, StoredKey, StoredProvider};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// A real store whose usage writes can be made to fail, panic or block, as a full disk, a
/// read-only file, a bug or a stalled database would.
struct FlakyStore {
    inner: SqliteStore,
    fail: AtomicBool,
    panic: AtomicBool,
    gate: Mutex<()>,
}

impl FlakyStore {
    fn new(db: &std::path::Path) -> Arc<FlakyStore> {
        Arc::new(FlakyStore {
            inner: SqliteStore::open(db).unwrap(),
            fail: AtomicBool::new(false),
            panic: AtomicBool::new(false),
            gate: Mutex::new(()),
        })
    }
}

type R<T> = nexus::Result<T>;

impl Store for FlakyStore {
    fn ping(&self) -> R<()> {
        self.inner.ping()
    }
    fn meta_get(&self, key: &str) -> R<Option<Vec<u8>>> {
        self.inner.meta_get(key)
    }
    fn meta_set(&self, key: &str, value: &[u8]) -> R<()> {
        self.inner.meta_set(key, value)
    }
    fn load_registry(&self) -> R<RegistryData> {
        self.inner.load_registry()
    }
    fn insert_provider(&self, p: &StoredProvider) -> R<i64> {
        self.inner.insert_provider(p)
    }
    fn update_provider(&self, p: &StoredProvider) -> R<bool> {
        self.inner.update_provider(p)
    }
    fn delete_provider(&self, id: i64) -> R<bool> {
        self.inner.delete_provider(id)
    }
    fn reseal_all(&self, meta_keys: &[&str], f: &mut dyn FnMut(&[u8]) -> R<Vec<u8>>) -> R<usize> {
        self.inner.reseal_all(meta_keys, f)
    }
    fn registry_version(&self) -> R<Option<u64>> {
        self.inner.registry_version()
    }
    fn insert_model(&self, provider_id: i64, m: &NewModel, now: i64) -> R<i64> {
        self.inner.insert_model(provider_id, m, now)
    }
    fn update_model(&self, id: i64, patch: &ModelPatch) -> R<bool> {
        self.inner.update_model(id, patch)
    }
    fn delete_model(&self, id: i64) -> R<bool> {
        self.inner.delete_model(id)
    }
    fn insert_group(&self, g: &nexus::records::ModelGroup) -> R<i64> {
        self.inner.insert_group(g)
    }
    fn update_group(&self, g: &nexus::records::ModelGroup) -> R<bool> {
        self.inner.update_group(g)
    }
    fn delete_group(&self, id: i64) -> R<bool> {
        self.inner.delete_group(id)
    }
    fn insert_pool_key(&self, k: &nexus::store::StoredPoolKey) -> R<i64> {
        self.inner.insert_pool_key(k)
    }
    fn update_pool_key(&self, k: &nexus::store::StoredPoolKey) -> R<bool> {
        self.inner.update_pool_key(k)
    }
    fn delete_pool_key(&self, provider_id: i64, id: i64) -> R<bool> {
        self.inner.delete_pool_key(provider_id, id)
    }
    fn insert_key(&self, k: &StoredKey) -> R<i64> {
        self.inner.insert_key(k)
    }
    fn update_key(&self, k: &ClientKey) -> R<bool> {
        self.inner.update_key(k)
    }
    fn delete_key(&self, id: i64) -> R<bool> {
        self.inner.delete_key(id)
    }
    fn put_response(&self, r: &nexus::store::StoredResponse) -> R<()> {
        self.inner.put_response(r)
    }
    fn get_response(&self, id: &str, owner: i64) -> R<Option<nexus::store::StoredResponse>> {
        self.inner.get_response(id, owner)
    }
    fn delete_response(&self, id: &str, owner: i64) -> R<bool> {
        self.inner.delete_response(id, owner)
    }
    fn prune_responses(&self, before_ms: i64, limit: usize) -> R<usize> {
        self.inner.prune_responses(before_ms, limit)
    }
    fn touch_keys(&self, uses: &[(i64, i64)]) -> R<()> {
        self.inner.touch_keys(uses)
    }
    fn insert_usage(&self, usage: &[UsageRecord], messages: &[MessageRecord]) -> R<()> {
        let _g = self.gate.lock().unwrap_or_else(|e| e.into_inner());
        if self.panic.load(Ordering::SeqCst) {
            panic!("store bug");
        }
        if self.fail.load(Ordering::SeqCst) {
            return Err(nexus::Error::Storage("database or disk is full".into()));
        }
        self.inner.insert_usage(usage, messages)
    }
    fn prune_messages(&self, before_ms: i64, limit: usize) -> R<usize> {
        self.inner.prune_messages(before_ms, limit)
    }
    fn summary(&self) -> R<Summary> {
        self.inner.summary()
    }
    fn insert_provider_event(&self, e: &nexus::records::ProviderEvent) -> R<()> {
        self.inner.insert_provider_event(e)
    }
    fn provider_events(
        &self,
        provider_id: Option<i64>,
        limit: usize,
    ) -> R<Vec<nexus::records::ProviderEvent>> {
        self.inner.provider_events(provider_id, limit)
    }
    fn prune_usage(&self, before_ms: i64, limit: usize) -> R<usize> {
        self.inner.prune_usage(before_ms, limit)
    }
    fn prune_rollups(&self, before_ms: i64, limit: usize) -> R<usize> {
        self.inner.prune_rollups(before_ms, limit)
    }
    fn oldest_usage_ms(&self) -> R<Option<i64>> {
        self.inner.oldest_usage_ms()
    }
    fn oldest_message_ms(&self) -> R<Option<i64>> {
        self.inner.oldest_message_ms()
    }
    fn storage(&self) -> R<nexus::retention::StorageStats> {
        self.inner.storage()
    }
    fn reclaim(&self, max_pages: u32) -> R<u64> {
        self.inner.reclaim(max_pages)
    }
    fn checkpoint(&self) -> R<()> {
        self.inner.checkpoint()
    }
    fn list_requests(&self, q: &nexus::usage::RequestQuery) -> R<nexus::usage::RequestPage> {
        self.inner.list_requests(q)
    }
    fn get_request(&self, id: &str) -> R<Option<nexus::usage::RequestRow>> {
        self.inner.get_request(id)
    }
    fn key_spend(&self, key_id: i64, since_ms: i64) -> R<i64> {
        self.inner.key_spend(key_id, since_ms)
    }
    fn reprice(
        &self,
        q: &nexus::usage::RepriceQuery,
        now_ms: i64,
        cost: &dyn Fn(&nexus::usage::PricedRow) -> Option<Option<i64>>,
    ) -> R<nexus::usage::RepriceReport> {
        self.inner.reprice(q, now_ms, cost)
    }
    fn timeseries(&self, q: &TimeseriesQuery, names: &dyn Fn(GroupKey) -> String) -> R<Timeseries> {
        self.inner.timeseries(q, names)
    }
    fn conversation(&self, id: &str) -> R<Option<ConversationStats>> {
        self.inner.conversation(id)
    }
    fn create_session(&self, s: &Session) -> R<()> {
        self.inner.create_session(s)
    }
    fn list_sessions(&self) -> R<Vec<Session>> {
        self.inner.list_sessions()
    }
    fn get_session(&self, id: &str) -> R<Option<Session>> {
        self.inner.get_session(id)
    }
    fn append_session_messages(&self, id: &str, msgs: &[SessionMessage], now: i64) -> R<bool> {
        self.inner.append_session_messages(id, msgs, now)
    }
    fn delete_session(&self, id: &str) -> R<bool> {
        self.inner.delete_session(id)
    }
}

fn usage_row(i: usize) -> UsageRecord {
    UsageRecord {
        ts_ms: nexus::now_ms(),
        request_id: format!("r{i}"),
        conversation_id: None,
        key_id: None,
        provider_id: None,
        model: "m".into(),
        upstream_model: None,
        prompt_tokens: 1,
        completion_tokens: 1,
        usage_source: UsageSource::Estimate,
        status: 200,
        error_kind: None,
        latency_ms: 1.0,
        ttft_ms: None,
        stream: false,
        source: RequestSource::Library,
        cost_micros: None,
        cached_tokens: 0,
        cache_write_tokens: 0,
        reasoning_tokens: 0,
        endpoint: nexus::usage::Endpoint::Chat,
        upstream_ms: None,
        attempts: vec![],
        bodies: None,
    }
}

fn message_row(ts_ms: i64, text: &str) -> MessageRecord {
    MessageRecord {
        ts_ms,
        conversation_id: "c".into(),
        provider_id: None,
        model: "m".into(),
        role: "user".into(),
        content: text.into(),
        tokens: 1,
    }
}

#[test]
fn a_failing_database_turns_readiness_red_and_counts_every_dropped_row() {
    let dir = tempfile::tempdir().unwrap();
    let store = FlakyStore::new(&dir.path().join("hub.db"));
    let hub = Hub::with_store(store.clone(), common::master(), fast_options()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let chat = |n: usize| {
        for _ in 0..n {
            // An unknown model: refused before any network, yet recorded.
            let _ = rt.block_on(hub.chat(
                Caller::Admin { provider_id: None },
                ChatRequest::user("nope", "x"),
                RequestContext::default(),
            ));
        }
    };
    hub.ready().unwrap();
    store.fail.store(true, Ordering::SeqCst);
    chat(3);
    assert!(hub.flush().is_err(), "a refused batch is reported");
    assert_eq!(hub.ready().unwrap_err().kind(), ErrorKind::Storage);
    assert_eq!(hub.stats().dropped_rows(), 3);
    // The disk has room again: the next commit turns readiness green.
    store.fail.store(false, Ordering::SeqCst);
    chat(1);
    hub.flush().unwrap();
    hub.ready().unwrap();
    assert_eq!(hub.stats().dropped_rows(), 3);
    assert_eq!(hub.summary().unwrap().requests, 1);
    // A store that panics neither kills the writer nor hangs flush.
    store.panic.store(true, Ordering::SeqCst);
    chat(1);
    assert!(hub.flush().is_err());
    assert_eq!(hub.stats().dropped_rows(), 4);
    store.panic.store(false, Ordering::SeqCst);
    chat(1);
    hub.flush().unwrap();
    assert_eq!(hub.summary().unwrap().requests, 2);
}

#[test]
fn the_stats_buffer_is_bounded_and_sheds_messages_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = FlakyStore::new(&dir.path().join("hub.db"));
    let w = StatsWriter::start(
        store.clone(),
        StatsConfig {
            flush_interval: std::time::Duration::from_millis(5),
            max_pending: 10,
            ..StatsConfig::default()
        },
    )
    .unwrap();
    // The database stalls with one batch in flight.
    let gate = store.gate.lock().unwrap();
    w.record(usage_row(0));
    std::thread::sleep(std::time::Duration::from_millis(200));
    for _ in 0..5 {
        w.message(message_row(nexus::now_ms(), "some text"));
    }
    for i in 1..=10 {
        w.record(usage_row(i)); // each sheds one message once the buffer is full
    }
    w.record(usage_row(11)); // no message left to shed: this one is dropped
    w.message(message_row(nexus::now_ms(), "more")); // full: dropped
    assert_eq!(w.dropped_rows(), 7);
    drop(gate);
    w.flush().unwrap();
    assert_eq!(store.summary().unwrap().requests, 11);
    let n: i64 = raw(&dir.path().join("hub.db"))
        .query_row("SELECT count(*) FROM chat_messages", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 0);
}

#[test]
fn old_conversation_messages_are_pruned_at_start() {
    // The first hub keeps everything: its own start-up prune would race the rows written below.
    let mut first = fast_options();
    first.stats.message_retention_days = 0;
    let env = Env::new(first);
    let day = 86_400_000i64;
    let now = nexus::now_ms();
    {
        let store = SqliteStore::open(&env.db).unwrap();
        let mut old: Vec<MessageRecord> = (0..2500)
            .map(|i| message_row(now - 40 * day - i, "old"))
            .collect();
        old.push(message_row(now - day, "recent"));
        store.insert_usage(&[], &old).unwrap();
    }
    let count = |db: &std::path::Path| -> i64 {
        raw(db)
            .query_row("SELECT count(*) FROM chat_messages", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(count(&env.db), 2501);
    let Env { hub, dir, db } = env;
    drop(hub);
    // Keep forever: nothing goes.
    let mut keep = fast_options();
    keep.stats.message_retention_days = 0;
    let hub = Hub::open(&db, keep).unwrap();
    hub.flush().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(count(&db), 2501);
    drop(hub);
    // The default 30 days: the old ones go (in batches), the recent one stays.
    let hub = Hub::open(&db, fast_options()).unwrap();
    assert!(within(std::time::Duration::from_secs(5), || count(&db) == 1));
    let left: String = raw(&db)
        .query_row("SELECT content FROM chat_messages", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, "recent");
    drop(hub);
    drop(dir);
}
