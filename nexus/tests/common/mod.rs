//! Shared set-up for the core's integration tests: a Hub on a temporary SQLite file, wired to
//! one or more mock upstreams on 127.0.0.1, and a way to read back the usage rows it wrote.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use nexus::crypto::MasterKey;
use nexus::hub::HubOptions;
use nexus::records::{NewKey, NewModel, NewProvider, ProviderKind, ProviderOptions};
use nexus::resilience::RetryConfig;
use nexus::testing::MockUpstream;
use nexus::Hub;

/// The upstream secret every test provider uses; tests grep for it.
pub const UPSTREAM_KEY: &str = "sk-upstream-9f8e7d6c5b4a-SECRET";

/// A fixed master key so tests can reopen the same file.
pub fn master() -> MasterKey {
    MasterKey::from_bytes([7u8; 32])
}

/// Options with short, test-sized backoff and cooldown.
pub fn fast_options() -> HubOptions {
    HubOptions {
        master_key: Some(master()),
        retry: RetryConfig {
            max_attempts: 3,
            base_delay: Duration::from_millis(20),
            max_delay: Duration::from_secs(2),
            cooldown_failures: 100,
            failure_window: Duration::from_secs(60),
            cooldown: Duration::from_secs(60),
        },
        ..HubOptions::default()
    }
}

/// A Hub on a temporary database.
pub struct Env {
    pub hub: Hub,
    pub dir: tempfile::TempDir,
    pub db: PathBuf,
}

impl Env {
    pub fn new(opts: HubOptions) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("hub.db");
        let hub = Hub::open(&db, opts).unwrap();
        Env { hub, dir, db }
    }

    /// Adds a provider pointing at `mock`, serving `models` as (client name, upstream name).
    pub fn provider(
        &self,
        name: &str,
        mock: &MockUpstream,
        options: ProviderOptions,
        models: &[(&str, &str)],
    ) -> i64 {
        self.add(
            NewProvider {
                name: name.into(),
                base_url: mock.base_url(),
                api_key: UPSTREAM_KEY.into(),
                description: format!("mock {name}"),
                options,
                ..NewProvider::default()
            },
            models,
        )
    }

    /// Adds any provider, serving `models` as (client name, upstream name).
    pub fn add(&self, p: NewProvider, models: &[(&str, &str)]) -> i64 {
        let p = self.hub.registry().create_provider(p).unwrap();
        for (client, upstream) in models {
            self.hub
                .registry()
                .create_model(
                    p.id,
                    NewModel {
                        name: (*client).into(),
                        upstream_name: (client != upstream).then(|| (*upstream).to_string()),
                        ..NewModel::default()
                    },
                )
                .unwrap();
        }
        p.id
    }

    /// A client key with no scope or limits.
    pub fn key(&self) -> String {
        self.hub
            .registry()
            .create_key(NewKey {
                name: "test".into(),
                ..NewKey::default()
            })
            .unwrap()
            .key
    }

    /// Every usage row written so far (after flushing the stats writer).
    pub fn rows(&self) -> Vec<Row> {
        self.hub.flush().unwrap();
        rows_in(&self.db)
    }
}

/// One row of the `usage` table.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub request_id: String,
    pub provider_id: Option<i64>,
    pub model: String,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub usage_source: String,
    pub status: i64,
    pub error_kind: Option<String>,
    pub stream: bool,
    pub ttft_ms: Option<f64>,
}

/// Reads the usage rows of a database file through a separate connection.
pub fn rows_in(db: &Path) -> Vec<Row> {
    let c = rusqlite::Connection::open(db).unwrap();
    let mut st = c
        .prepare(
            "SELECT request_id, provider_id, model, prompt_tokens, completion_tokens, usage_source,
                    status, error_kind, stream, ttft_ms FROM usage ORDER BY id",
        )
        .unwrap();
    st.query_map([], |r| {
        Ok(Row {
            request_id: r.get(0)?,
            provider_id: r.get(1)?,
            model: r.get(2)?,
            prompt_tokens: r.get(3)?,
            completion_tokens: r.get(4)?,
            usage_source: r.get(5)?,
            status: r.get(6)?,
            error_kind: r.get(7)?,
            stream: r.get::<_, i64>(8)? != 0,
            ttft_ms: r.get(9)?,
        })
    })
    .unwrap()
    .map(|r| r.unwrap())
    .collect()
}

/// Polls `f` every 10 ms for up to 5 s.
pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// One provider of `kind` on a fresh mock, serving `models` under their own names, one try per
/// request (failures show at once), and a client key: the set-up of the ingress tests.
pub async fn one_provider(kind: ProviderKind, models: &[&str]) -> (MockUpstream, Env, String) {
    let mock = MockUpstream::start().await.unwrap();
    let mut opts = fast_options();
    opts.retry.max_attempts = 1;
    let env = Env::new(opts);
    let pairs: Vec<(&str, &str)> = models.iter().map(|m| (*m, *m)).collect();
    env.add(
        NewProvider {
            name: "p".into(),
            kind,
            base_url: mock.base_url(),
            api_key: "sk-upstream-key-0123456789".into(),
            options: ProviderOptions::default(),
            ..NewProvider::default()
        },
        &pairs,
    );
    let key = env.key();
    (mock, env, key)
}

impl Env {
    /// The `endpoint` of every usage row, in order (after flushing the stats writer).
    pub fn endpoints(&self) -> Vec<String> {
        self.hub.flush().unwrap();
        let c = rusqlite::Connection::open(&self.db).unwrap();
        let mut st = c.prepare("SELECT endpoint FROM usage ORDER BY id").unwrap();
        st.query_map([], |r| r.get(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    }
}
