//! The embedded default store: one SQLite file in WAL mode.
//!
//! One writer connection (SQLite allows a single writer anyway) and a few reader connections, so
//! dashboard queries never wait behind a stats batch. Versioned migrations are tracked in
//! `PRAGMA user_version`.
//!
//! The file, its `-wal` and `-shm` files and the lock file are owner-only (0600). Every open
//! store holds a shared `flock` on `<db>.lock`; `rotate-master-key` needs it exclusively, so it
//! cannot re-key a database that a server or a library user still has open.

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{GroupKey, RegistryData, Store, StoredKey, StoredProvider, StoredResponse};
use crate::budgets::{micros_to_usd, usd_to_micros, BudgetPeriod};
use crate::error::{Error, Result};
use crate::records::{ClientKey, Model, ModelKind, ModelPatch, NewModel, Session, SessionMessage};
use crate::records::{ProviderEvent, ProviderEventKind};
use crate::usage::{
    Bucket, ConversationMessage, ConversationStats, GroupBy, MessageRecord, PricedRow,
    RepriceQuery, RepriceReport, RequestPage, RequestQuery, RequestRow, Summary, Timeseries,
    TimeseriesPoint, TimeseriesQuery, UsageRecord,
};

/// Migrations, applied in order; index + 1 is the schema version. Never edit a released one.
const MIGRATIONS: &[&str] = &[
    include_str!("sql/0001_init.sql"),
    include_str!("sql/0002_sealed_headers_and_generation.sql"),
    include_str!("sql/0003_key_concurrency.sql"),
    include_str!("sql/0004_provider_kinds.sql"),
    include_str!("sql/0005_usage_token_details.sql"),
    include_str!("sql/0006_usage_endpoint.sql"),
    // There is no 0007 (the number went to work that did not land): the position in this
    // list, not the file's number, is the schema version, so new files only ever go last.
    include_str!("sql/0008_model_kind.sql"),
    include_str!("sql/0009_responses.sql"),
    include_str!("sql/0010_prices.sql"),
    include_str!("sql/0011_key_budgets.sql"),
    include_str!("sql/0012_request_explorer.sql"),
    include_str!("sql/0013_retention.sql"),
    include_str!("sql/0014_provider_health.sql"),
    include_str!("sql/0015_model_groups.sql"),
    include_str!("sql/0016_key_pools.sql"),
    include_str!("sql/0017_request_bodies.sql"),
    include_str!("sql/0018_explorer_key_model.sql"),
];

const READERS: usize = 2;

/// How long opening waits for a running master-key rotation to release the lock file.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// SQLite implementation of [`Store`].
pub struct SqliteStore {
    writer: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
    /// A connection of its own for [`Store::registry_version`], so the 500 ms poll never queues
    /// behind a stats batch on the writer; with the last `data_version` and generation it saw.
    watch: Mutex<(Connection, Option<(i64, u64)>)>,
    /// The shared (or, for rotation, exclusive) lock on `<db>.lock`, held while the store lives.
    _lock: Option<File>,
}

/// The lock file beside a database: `<db>.lock`.
pub fn lock_file_path(db: &Path) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push(".lock");
    PathBuf::from(s)
}

/// Creates `path` empty with mode 0600 if it does not exist. An existing file readable by others
/// is left as it is (an operator may share it with a group on purpose) but is logged.
fn create_private(path: &Path) -> Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    match opts.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            warn_if_shared(path);
            Ok(())
        }
        Err(e) => Err(Error::Storage(format!(
            "cannot create {}: {e}",
            path.display()
        ))),
    }
}

/// Logs a warning when `path` exists and group or others may access it.
fn warn_if_shared(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::metadata(path) {
            let mode = m.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    mode = format!("{mode:o}"),
                    "database file is readable by other users; it holds prompts and secrets \
                     (run chmod 600 on it and its -wal, -shm files)"
                );
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum LockMode {
    Shared,
    Exclusive,
}

fn take_lock(db: &Path, mode: LockMode) -> Result<File> {
    let path = lock_file_path(db);
    create_private(&path)?;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| Error::Storage(format!("cannot open {}: {e}", path.display())))?;
    let in_use = || {
        Error::Conflict(format!(
            "database {} is in use by another process (a server or a program using the \
             library); stop it first",
            db.display()
        ))
    };
    match mode {
        LockMode::Exclusive => match f.try_lock() {
            Ok(()) => Ok(f),
            Err(std::fs::TryLockError::WouldBlock) => Err(in_use()),
            Err(std::fs::TryLockError::Error(e)) => Err(Error::Storage(format!(
                "cannot lock {}: {e}",
                path.display()
            ))),
        },
        LockMode::Shared => {
            // Only a master-key rotation holds the lock exclusively, for a few seconds at most:
            // wait for it rather than fail a server start that races it.
            let deadline = Instant::now() + LOCK_WAIT;
            loop {
                match f.try_lock_shared() {
                    Ok(()) => return Ok(f),
                    Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    Err(std::fs::TryLockError::WouldBlock) => {
                        return Err(Error::Conflict(format!(
                            "database {} is locked by a master-key rotation",
                            db.display()
                        )))
                    }
                    Err(std::fs::TryLockError::Error(e)) => {
                        return Err(Error::Storage(format!(
                            "cannot lock {}: {e}",
                            path.display()
                        )))
                    }
                }
            }
        }
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SqliteStore")
    }
}

fn configure(conn: &Connection, file_backed: bool) -> Result<()> {
    // Per-connection settings: they are not persisted, so they cannot live in a migration.
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    if file_backed {
        // Switching a fresh file to WAL needs an exclusive lock, and SQLite answers a lock
        // upgrade that races another connection with SQLITE_BUSY at once, without the busy
        // handler (it would deadlock): retry here, as several processes may start together.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match conn.pragma_update(None, "journal_mode", "WAL") {
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::DatabaseBusy && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                r => break r?,
            }
        }
        // NORMAL is durable across application crashes in WAL mode; only an OS crash can lose
        // the last transactions.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
    }
    Ok(())
}

/// Databases up to this size are converted to incremental vacuum at open (one full `VACUUM`);
/// larger ones keep reusing their free pages and say how to convert them.
const CONVERT_UP_TO: u64 = 256 << 20;

/// Makes an older file give freed pages back to the file system (retention's incremental
/// vacuum) by one `VACUUM` when it is small; a new file has the setting from its creation.
fn reclaimable(conn: &Connection, path: &Path) -> Result<()> {
    let mode: i64 = conn.pragma_query_value(None, "auto_vacuum", |r| r.get(0))?;
    if mode == 2 {
        return Ok(());
    }
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(u64::MAX);
    if size <= CONVERT_UP_TO {
        conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
        // Another process holding the file makes VACUUM busy: it is retried at the next open.
        if let Err(e) = conn.execute_batch("VACUUM") {
            tracing::warn!(error = %e, "could not convert the database to incremental vacuum");
        }
    } else {
        tracing::warn!(
            bytes = size,
            "this database does not give deleted space back to the file system (it reuses it); \
             run `sqlite3 <db> 'PRAGMA auto_vacuum=INCREMENTAL; VACUUM;'` once while the server \
             is stopped to convert it"
        );
    }
    Ok(())
}

fn migrate(conn: &mut Connection) -> Result<()> {
    let known = MIGRATIONS.len() as i64;
    loop {
        // IMMEDIATE takes the write lock before the version is read, so two processes opening a
        // fresh file cannot both decide to run the same migration (the second used to fail with
        // "table already exists").
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > known {
            return Err(Error::Config(format!(
                "database schema version {version} is newer than this build supports ({known})"
            )));
        }
        let Some(sql) = MIGRATIONS.get(version as usize) else {
            return Ok(());
        };
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", version + 1)?;
        tx.commit()?;
    }
}

impl SqliteStore {
    /// Opens (creating and migrating as needed) the database file at `path`, holding a shared
    /// lock on `<path>.lock` for the store's life.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_locked(path, LockMode::Shared)
    }

    /// Opens the database file at `path` for maintenance that no other process may overlap (the
    /// master-key rotation): fails at once with a [`Error::Conflict`] ("database is in use by
    /// another process") while any other store has it open.
    pub fn open_exclusive(path: &Path) -> Result<Self> {
        Self::open_locked(path, LockMode::Exclusive)
    }

    fn open_locked(path: &Path, mode: LockMode) -> Result<Self> {
        let lock = take_lock(path, mode)?;
        // SQLite creates -wal and -shm with the main file's mode, so making the main file 0600
        // before SQLite first opens it keeps all three private.
        create_private(path)?;
        for side in ["-wal", "-shm"] {
            let mut s = path.as_os_str().to_owned();
            s.push(side);
            warn_if_shared(Path::new(&s));
        }
        let mut w = Connection::open(path)?;
        // Before anything writes the file's header (switching to WAL does): only then does the
        // setting hold without a VACUUM.
        let empty: i64 = w.pragma_query_value(None, "page_count", |r| r.get(0))?;
        if empty == 0 {
            w.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
        }
        configure(&w, true)?;
        reclaimable(&w, path)?;
        migrate(&mut w)?;
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let r = Connection::open(path)?;
            configure(&r, true)?;
            readers.push(Mutex::new(r));
        }
        let watch = Connection::open(path)?;
        configure(&watch, true)?;
        Ok(SqliteStore {
            writer: Mutex::new(w),
            readers,
            watch: Mutex::new((watch, None)),
            _lock: Some(lock),
        })
    }

    /// A private in-memory database (tests, throwaway hubs).
    pub fn open_in_memory() -> Result<Self> {
        let name = format!(
            "file:nexus-mem-{}?mode=memory&cache=shared",
            crate::crypto::random_id()
        );
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
            | rusqlite::OpenFlags::SQLITE_OPEN_CREATE
            | rusqlite::OpenFlags::SQLITE_OPEN_URI;
        let mut w = Connection::open_with_flags(&name, flags)?;
        configure(&w, false)?;
        migrate(&mut w)?;
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let r = Connection::open_with_flags(&name, flags)?;
            configure(&r, false)?;
            readers.push(Mutex::new(r));
        }
        let watch = Connection::open_with_flags(&name, flags)?;
        configure(&watch, false)?;
        Ok(SqliteStore {
            writer: Mutex::new(w),
            readers,
            watch: Mutex::new((watch, None)),
            _lock: None,
        })
    }

    fn w(&self) -> Result<MutexGuard<'_, Connection>> {
        self.writer
            .lock()
            .map_err(|_| Error::Internal("database writer lock poisoned".into()))
    }

    fn r(&self) -> Result<MutexGuard<'_, Connection>> {
        for m in &self.readers {
            if let Ok(g) = m.try_lock() {
                return Ok(g);
            }
        }
        self.readers[0]
            .lock()
            .map_err(|_| Error::Internal("database reader lock poisoned".into()))
    }
}

/// Decodes a stored JSON column; the error names the column so the log says what is broken.
fn decode<T: serde::de::DeserializeOwned>(column: &str, s: &str) -> std::result::Result<T, String> {
    serde_json::from_str(s).map_err(|e| format!("stored {column} cannot be decoded: {e}"))
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::Internal(e.to_string()))
}

impl Store for SqliteStore {
    fn ping(&self) -> Result<()> {
        self.r()?.query_row("SELECT 1", [], |_| Ok(()))?;
        Ok(())
    }

    fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .w()?
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    fn meta_set(&self, key: &str, value: &[u8]) -> Result<()> {
        self.w()?.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }

    fn load_registry(&self) -> Result<RegistryData> {
        // Read through the writer so a registry reload always sees the write that triggered it.
        let c = self.w()?;
        let mut st = c.prepare(
            "SELECT id, name, server_url, server_key, key_hint, description, enabled, options,
                    created_at, updated_at, sealed_headers, kind, auto_disabled, disabled_reason,
                    key_weight, key_enabled, key_set_aside
             FROM service_providers ORDER BY id",
        )?;
        let providers = st
            .query_map([], |r| {
                let opts: String = r.get(7)?;
                // A broken options value must not silently become the defaults (no headers, no
                // timeouts): keep the row, flag it, and let the registry fail it closed.
                let (options, mut decode_error) = match decode("options", &opts) {
                    Ok(o) => (o, None),
                    Err(e) => (Default::default(), Some(e)),
                };
                let kind_name: String = r.get(11)?;
                // An unknown kind (written by a newer build) must not be spoken as OpenAI.
                let kind = crate::records::ProviderKind::parse(&kind_name).unwrap_or_else(|| {
                    decode_error
                        .get_or_insert_with(|| format!("unknown provider kind '{kind_name}'"));
                    crate::records::ProviderKind::Openai
                });
                Ok(StoredProvider {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    kind,
                    base_url: r.get(2)?,
                    sealed_key: r.get(3)?,
                    key_hint: r.get(4)?,
                    description: r.get(5)?,
                    enabled: r.get(6)?,
                    options,
                    sealed_headers: r.get(10)?,
                    created_at: r.get(8)?,
                    updated_at: r.get(9)?,
                    auto_disabled: r.get(12)?,
                    disabled_reason: r.get(13)?,
                    primary: super::PrimaryKeyState {
                        weight: r.get(14)?,
                        enabled: r.get(15)?,
                        set_aside: r.get(16)?,
                    },
                    decode_error,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut st = c.prepare(
            "SELECT m.id, m.provider_id, p.name, m.model_name, m.upstream_name, m.description,
                    m.input_price, m.output_price, m.created_at, m.default_max_tokens, m.kind,
                    m.cached_input_price, m.cache_write_price
             FROM provider_models m JOIN service_providers p ON p.id = m.provider_id ORDER BY m.id",
        )?;
        let models = st
            .query_map([], |r| {
                Ok(Model {
                    id: r.get(0)?,
                    provider_id: r.get(1)?,
                    provider_name: r.get(2)?,
                    name: r.get(3)?,
                    upstream_name: r.get(4)?,
                    description: r.get(5)?,
                    input_price: r.get(6)?,
                    output_price: r.get(7)?,
                    created_at: r.get(8)?,
                    default_max_tokens: r.get(9)?,
                    // A kind a newer build wrote reads as chat, the kind of every older model.
                    kind: ModelKind::parse(&r.get::<_, String>(10)?).unwrap_or_default(),
                    cached_input_price: r.get(11)?,
                    cache_write_price: r.get(12)?,
                    // Resolved by the registry against the catalog.
                    prices: None,
                    price_source: None,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut st = c.prepare(
            "SELECT id, name, prefix, provider_ids, models, expires_at, enabled, rpm, tpm,
                    created_at, last_used_at, key_hash, max_concurrent, budget_micros,
                    budget_period, soft_budget_micros, record_bodies FROM client_keys ORDER BY id",
        )?;
        let keys = st
            .query_map([], |r| {
                let pids: String = r.get(3)?;
                let models: String = r.get(4)?;
                // An empty scope means "everything", so a scope that does not decode must never
                // become empty: the key is flagged and the registry refuses it.
                let pids = decode::<Vec<i64>>("provider_ids", &pids);
                let models = decode::<Vec<String>>("models", &models);
                let decode_error = [pids.as_ref().err(), models.as_ref().err()]
                    .into_iter()
                    .flatten()
                    .cloned()
                    .reduce(|a, b| format!("{a}; {b}"));
                Ok(StoredKey {
                    decode_error,
                    record: ClientKey {
                        id: r.get(0)?,
                        name: r.get(1)?,
                        prefix: r.get(2)?,
                        provider_ids: pids.unwrap_or_default(),
                        models: models.unwrap_or_default(),
                        config_error: None,
                        expires_at: r.get(5)?,
                        enabled: r.get(6)?,
                        rpm: r.get(7)?,
                        tpm: r.get(8)?,
                        max_concurrent: r.get(12)?,
                        budget_usd: r.get::<_, Option<i64>>(13)?.map(micros_to_usd),
                        // An unknown stored period reads as the default rather than failing
                        // the whole registry load.
                        budget_period: r
                            .get::<_, Option<String>>(14)?
                            .map(|p| BudgetPeriod::parse(&p).unwrap_or_default()),
                        soft_budget_usd: r.get::<_, Option<i64>>(15)?.map(micros_to_usd),
                        // An unknown stored mode (a newer build's) records nothing.
                        record_bodies: r
                            .get::<_, Option<String>>(16)?
                            .map(|m| crate::records::BodyRecording::parse(&m).unwrap_or_default()),
                        created_at: r.get(9)?,
                        last_used_at: r.get(10)?,
                    },
                    hash: r.get(11)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let groups = super::sqlite_groups::load(&c)?;
        let pool_keys = super::sqlite_pool_keys::load(&c)?;
        Ok(RegistryData {
            providers,
            models,
            keys,
            groups,
            pool_keys,
        })
    }

    fn insert_provider(&self, p: &StoredProvider) -> Result<i64> {
        let c = self.w()?;
        c.execute(
            "INSERT INTO service_providers (name, server_url, server_key, key_hint, description,
                 enabled, options, created_at, updated_at, sealed_headers, kind, auto_disabled,
                 disabled_reason, key_weight, key_enabled, key_set_aside)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
            params![
                p.name,
                p.base_url,
                p.sealed_key,
                p.key_hint,
                p.description,
                p.enabled,
                to_json(&p.options)?,
                p.created_at,
                p.updated_at,
                p.sealed_headers,
                p.kind.as_str(),
                p.auto_disabled,
                p.disabled_reason,
                p.primary.weight,
                p.primary.enabled,
                p.primary.set_aside
            ],
        )?;
        Ok(c.last_insert_rowid())
    }

    fn update_provider(&self, p: &StoredProvider) -> Result<bool> {
        let n = self.w()?.execute(
            "UPDATE service_providers SET name = ?2, server_url = ?3, server_key = ?4,
                 key_hint = ?5, description = ?6, enabled = ?7, options = ?8, updated_at = ?9,
                 sealed_headers = ?10, kind = ?11, auto_disabled = ?12, disabled_reason = ?13,
                 key_weight = ?14, key_enabled = ?15, key_set_aside = ?16
             WHERE id = ?1",
            params![
                p.id,
                p.name,
                p.base_url,
                p.sealed_key,
                p.key_hint,
                p.description,
                p.enabled,
                to_json(&p.options)?,
                p.updated_at,
                p.sealed_headers,
                p.kind.as_str(),
                p.auto_disabled,
                p.disabled_reason,
                p.primary.weight,
                p.primary.enabled,
                p.primary.set_aside
            ],
        )?;
        Ok(n > 0)
    }

    fn delete_provider(&self, id: i64) -> Result<bool> {
        // Models go by ON DELETE CASCADE (foreign_keys is on for every connection).
        Ok(self
            .w()?
            .execute("DELETE FROM service_providers WHERE id = ?1", [id])?
            > 0)
    }

    fn reseal_all(
        &self,
        meta_keys: &[&str],
        f: &mut dyn FnMut(&[u8]) -> Result<Vec<u8>>,
    ) -> Result<usize> {
        let mut c = self.w()?;
        // A re-key must survive a power loss once it reports success: the old key file is
        // replaced right after, so a lost WAL commit would leave the rows under a deleted key.
        c.pragma_update(None, "synchronous", "FULL")?;
        let res = (|| -> Result<usize> {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let rows: Vec<(i64, Vec<u8>, Option<Vec<u8>>)> = tx
                .prepare("SELECT id, server_key, sealed_headers FROM service_providers")?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<rusqlite::Result<_>>()?;
            let mut n = 0;
            for (id, key, headers) in rows {
                let key = f(&key)?;
                let headers = headers.map(|h| f(&h)).transpose()?;
                n += 1 + headers.is_some() as usize;
                tx.execute(
                    "UPDATE service_providers SET server_key = ?2, sealed_headers = ?3
                     WHERE id = ?1",
                    params![id, key, headers],
                )?;
            }
            let pool: Vec<(i64, Vec<u8>)> = tx
                .prepare("SELECT id, sealed_key FROM provider_keys")?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            for (id, key) in pool {
                n += 1;
                tx.execute(
                    "UPDATE provider_keys SET sealed_key = ?2 WHERE id = ?1",
                    params![id, f(&key)?],
                )?;
            }
            for k in meta_keys {
                let v: Option<Vec<u8>> = tx
                    .query_row("SELECT value FROM meta WHERE key = ?1", [k], |r| r.get(0))
                    .optional()?;
                if let Some(v) = v {
                    tx.execute(
                        "UPDATE meta SET value = ?2 WHERE key = ?1",
                        params![k, f(&v)?],
                    )?;
                    n += 1;
                }
            }
            tx.commit()?;
            Ok(n)
        })();
        let _ = c.pragma_update(None, "synchronous", "NORMAL");
        res
    }

    fn registry_version(&self) -> Result<Option<u64>> {
        let mut g = self
            .watch
            .lock()
            .map_err(|_| Error::Internal("database watch lock poisoned".into()))?;
        let (conn, seen) = &mut *g;
        // data_version moves when another connection (of this or any process) commits; reading
        // it is a look at the WAL index, no I/O. Only then is the generation row worth a query.
        let dv: i64 = conn.pragma_query_value(None, "data_version", |r| r.get(0))?;
        if let Some((seen_dv, generation)) = *seen {
            if seen_dv == dv {
                return Ok(Some(generation));
            }
        }
        let generation: i64 =
            conn.query_row("SELECT n FROM registry_generation WHERE id = 1", [], |r| {
                r.get(0)
            })?;
        *seen = Some((dv, generation as u64));
        Ok(Some(generation as u64))
    }

    fn insert_model(&self, provider_id: i64, m: &NewModel, now: i64) -> Result<i64> {
        let c = self.w()?;
        c.execute(
            "INSERT INTO provider_models (provider_id, model_name, upstream_name, description,
                 input_price, output_price, created_at, default_max_tokens, kind,
                 cached_input_price, cache_write_price)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                provider_id,
                m.name,
                m.upstream_name,
                m.description,
                m.input_price,
                m.output_price,
                now,
                m.default_max_tokens,
                m.kind.as_str(),
                m.cached_input_price,
                m.cache_write_price
            ],
        )?;
        Ok(c.last_insert_rowid())
    }

    fn update_model(&self, id: i64, p: &ModelPatch) -> Result<bool> {
        let mut c = self.w()?;
        let tx = c.transaction()?;
        let exists: bool = tx
            .query_row("SELECT 1 FROM provider_models WHERE id = ?1", [id], |_| {
                Ok(true)
            })
            .optional()?
            .unwrap_or(false);
        if !exists {
            return Ok(false);
        }
        if let Some(v) = &p.name {
            tx.execute(
                "UPDATE provider_models SET model_name = ?2 WHERE id = ?1",
                params![id, v],
            )?;
        }
        if let Some(v) = &p.upstream_name {
            tx.execute(
                "UPDATE provider_models SET upstream_name = ?2 WHERE id = ?1",
                params![id, v],
            )?;
        }
        if let Some(v) = &p.description {
            tx.execute(
                "UPDATE provider_models SET description = ?2 WHERE id = ?1",
                params![id, v],
            )?;
        }
        if let Some(v) = &p.input_price {
            tx.execute(
                "UPDATE provider_models SET input_price = ?2 WHERE id = ?1",
                params![id, v],
            )?;
        }
        if let Some(v) = &p.output_price {
            tx.execute(
                "UPDATE provider_models SET output_price = ?2 WHERE id = ?1",
                params![id, v],
            )?;
        }
        if let Some(v) = &p.cached_input_price {
            tx.execute(
                "UPDATE provider_models SET cached_input_price = ?2 WHERE id = ?1",
                params![id, v],
            )?;
        }
        if let Some(v) = &p.cache_write_price {
            tx.execute(
                "UPDATE provider_models SET cache_write_price = ?2 WHERE id = ?1",
                params![id, v],
            )?;
        }
        if let Some(v) = &p.default_max_tokens {
            tx.execute(
                "UPDATE provider_models SET default_max_tokens = ?2 WHERE id = ?1",
                params![id, v],
            )?;
        }
        if let Some(v) = p.kind {
            tx.execute(
                "UPDATE provider_models SET kind = ?2 WHERE id = ?1",
                params![id, v.as_str()],
            )?;
        }
        tx.commit()?;
        Ok(true)
    }

    fn delete_model(&self, id: i64) -> Result<bool> {
        Ok(self
            .w()?
            .execute("DELETE FROM provider_models WHERE id = ?1", [id])?
            > 0)
    }

    fn insert_group(&self, g: &crate::records::ModelGroup) -> Result<i64> {
        super::sqlite_groups::insert(&*self.w()?, g)
    }

    fn update_group(&self, g: &crate::records::ModelGroup) -> Result<bool> {
        super::sqlite_groups::update(&*self.w()?, g)
    }

    fn delete_group(&self, id: i64) -> Result<bool> {
        super::sqlite_groups::delete(&*self.w()?, id)
    }

    fn insert_pool_key(&self, k: &super::StoredPoolKey) -> Result<i64> {
        super::sqlite_pool_keys::insert(&*self.w()?, k)
    }

    fn update_pool_key(&self, k: &super::StoredPoolKey) -> Result<bool> {
        super::sqlite_pool_keys::update(&*self.w()?, k)
    }

    fn delete_pool_key(&self, provider_id: i64, id: i64) -> Result<bool> {
        super::sqlite_pool_keys::delete(&*self.w()?, provider_id, id)
    }

    fn insert_key(&self, k: &StoredKey) -> Result<i64> {
        let c = self.w()?;
        let r = &k.record;
        c.execute(
            "INSERT INTO client_keys (name, key_hash, prefix, provider_ids, models, expires_at,
                 enabled, rpm, tpm, created_at, max_concurrent, budget_micros, budget_period,
                 soft_budget_micros, record_bodies)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
            params![
                r.name,
                k.hash,
                r.prefix,
                to_json(&r.provider_ids)?,
                to_json(&r.models)?,
                r.expires_at,
                r.enabled,
                r.rpm,
                r.tpm,
                r.created_at,
                r.max_concurrent,
                r.budget_usd.map(usd_to_micros),
                r.budget_period.map(BudgetPeriod::as_str),
                r.soft_budget_usd.map(usd_to_micros),
                r.record_bodies.map(crate::records::BodyRecording::as_str)
            ],
        )?;
        Ok(c.last_insert_rowid())
    }

    fn update_key(&self, r: &ClientKey) -> Result<bool> {
        let n = self.w()?.execute(
            "UPDATE client_keys SET name = ?2, provider_ids = ?3, models = ?4, expires_at = ?5,
                 enabled = ?6, rpm = ?7, tpm = ?8, max_concurrent = ?9, budget_micros = ?10,
                 budget_period = ?11, soft_budget_micros = ?12, record_bodies = ?13 WHERE id = ?1",
            params![
                r.id,
                r.name,
                to_json(&r.provider_ids)?,
                to_json(&r.models)?,
                r.expires_at,
                r.enabled,
                r.rpm,
                r.tpm,
                r.max_concurrent,
                r.budget_usd.map(usd_to_micros),
                r.budget_period.map(BudgetPeriod::as_str),
                r.soft_budget_usd.map(usd_to_micros),
                r.record_bodies.map(crate::records::BodyRecording::as_str)
            ],
        )?;
        Ok(n > 0)
    }

    fn delete_key(&self, id: i64) -> Result<bool> {
        let mut c = self.w()?;
        let tx = c.transaction()?;
        // A deleted key's stored responses go with it: nobody may read them any more.
        tx.execute("DELETE FROM responses WHERE key_id = ?1", [id])?;
        let n = tx.execute("DELETE FROM client_keys WHERE id = ?1", [id])?;
        tx.commit()?;
        Ok(n > 0)
    }

    fn touch_keys(&self, uses: &[(i64, i64)]) -> Result<()> {
        let mut c = self.w()?;
        let tx = c.transaction()?;
        for (id, ts) in uses {
            tx.execute(
                "UPDATE client_keys SET last_used_at = ?2 WHERE id = ?1",
                params![id, ts],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    fn insert_usage(&self, usage: &[UsageRecord], messages: &[MessageRecord]) -> Result<()> {
        let mut c = self.w()?;
        let tx = c.transaction()?;
        {
            let mut ins = tx.prepare_cached(
                "INSERT INTO usage (ts_ms, request_id, conversation_id, key_id, provider_id, model,
                     upstream_model, prompt_tokens, completion_tokens, usage_source, status,
                     error_kind, latency_ms, ttft_ms, stream, source, cost, cached_tokens,
                     cache_write_tokens, reasoning_tokens, endpoint, cost_micros, upstream_ms,
                     attempts, attempt_log)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
                     ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25)",
            )?;
            let mut roll = tx.prepare_cached(
                "INSERT INTO usage_hourly (bucket, provider_id, model, key_id, endpoint, requests,
                     errors, prompt_tokens, completion_tokens, latency_ms_sum, ttft_ms_sum,
                     ttft_count, cost, cost_micros, unpriced)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)
                 ON CONFLICT (bucket, provider_id, model, key_id, endpoint) DO UPDATE SET
                     requests = requests + excluded.requests, errors = errors + excluded.errors,
                     prompt_tokens = prompt_tokens + excluded.prompt_tokens,
                     completion_tokens = completion_tokens + excluded.completion_tokens,
                     latency_ms_sum = latency_ms_sum + excluded.latency_ms_sum,
                     ttft_ms_sum = ttft_ms_sum + excluded.ttft_ms_sum,
                     ttft_count = ttft_count + excluded.ttft_count,
                     cost = cost + excluded.cost,
                     cost_micros = cost_micros + excluded.cost_micros,
                     unpriced = unpriced + excluded.unpriced",
            )?;
            let mut bodies = tx.prepare_cached(
                "INSERT OR REPLACE INTO request_bodies (request_id, ts_ms, request, response)
                 VALUES (?1, ?2, ?3, ?4)",
            )?;
            let mut conv_new = tx.prepare_cached(
                "INSERT OR IGNORE INTO conversations (id, first_ms, last_ms, rounds, prompt_tokens,
                     completion_tokens) VALUES (?1, ?2, ?2, 0, 0, 0)",
            )?;
            let mut conv_upd = tx.prepare_cached(
                "UPDATE conversations SET last_ms = max(last_ms, ?2), rounds = rounds + ?3,
                     prompt_tokens = prompt_tokens + ?4, completion_tokens = completion_tokens + ?5
                 WHERE id = ?1",
            )?;
            // Rollups and conversation totals are summed per batch first: one upsert per group
            // instead of one per record (the same sums, a fraction of the statements).
            let mut rollups: Vec<(RollupKey, Rollup)> = Vec::new();
            let mut rollup_at: HashMap<RollupKey, usize> = HashMap::new();
            let mut convs: Vec<(&str, ConvDelta)> = Vec::new();
            let mut conv_at: HashMap<&str, usize> = HashMap::new();
            for u in usage {
                let failed = u.status >= 400;
                ins.execute(params![
                    u.ts_ms,
                    u.request_id,
                    u.conversation_id,
                    u.key_id,
                    u.provider_id,
                    u.model,
                    u.upstream_model,
                    u.prompt_tokens as i64,
                    u.completion_tokens as i64,
                    u.usage_source.as_str(),
                    u.status,
                    u.error_kind,
                    u.latency_ms,
                    u.ttft_ms,
                    u.stream,
                    u.source.as_str(),
                    // The REAL column, for readers of older versions; sums use cost_micros.
                    u.cost_micros.map(|m| m as f64 / 1e6),
                    u.cached_tokens as i64,
                    u.cache_write_tokens as i64,
                    u.reasoning_tokens as i64,
                    u.endpoint.as_str(),
                    u.cost_micros,
                    u.upstream_ms,
                    u.attempts.len() as i64,
                    if u.attempts.is_empty() {
                        None
                    } else {
                        serde_json::to_string(&u.attempts).ok()
                    }
                ])?;
                if let Some(b) = u.bodies.as_deref().filter(|b| b.kept(u.status)) {
                    bodies.execute(params![u.request_id, u.ts_ms, b.request, b.response])?;
                }
                let key = (
                    u.ts_ms.div_euclid(3_600_000),
                    u.provider_id.unwrap_or(0),
                    u.model.as_str(),
                    u.key_id.unwrap_or(0),
                    u.endpoint.as_str(),
                );
                let i = *rollup_at.entry(key).or_insert_with(|| {
                    rollups.push((key, Rollup::default()));
                    rollups.len() - 1
                });
                let r = &mut rollups[i].1;
                r.requests += 1;
                r.errors += failed as i64;
                r.prompt_tokens += u.prompt_tokens as i64;
                r.completion_tokens += u.completion_tokens as i64;
                r.latency_ms_sum += u.latency_ms;
                r.ttft_ms_sum += u.ttft_ms.unwrap_or(0.0);
                r.ttft_count += u.ttft_ms.is_some() as i64;
                r.cost_micros += u.cost_micros.unwrap_or(0);
                r.unpriced += (!failed && u.cost_micros.is_none()) as i64;
                // Only answered requests make a conversation; a rejected one has nothing to show.
                if let Some(cid) = u.conversation_id.as_deref().filter(|_| !failed) {
                    let i = *conv_at.entry(cid).or_insert_with(|| {
                        convs.push((
                            cid,
                            ConvDelta {
                                first_ms: u.ts_ms,
                                last_ms: u.ts_ms,
                                ..ConvDelta::default()
                            },
                        ));
                        convs.len() - 1
                    });
                    let c = &mut convs[i].1;
                    c.last_ms = c.last_ms.max(u.ts_ms);
                    c.rounds += 1;
                    c.prompt_tokens += u.prompt_tokens as i64;
                    c.completion_tokens += u.completion_tokens as i64;
                }
            }
            for ((bucket, provider_id, model, key_id, endpoint), r) in &rollups {
                roll.execute(params![
                    bucket,
                    provider_id,
                    model,
                    key_id,
                    endpoint,
                    r.requests,
                    r.errors,
                    r.prompt_tokens,
                    r.completion_tokens,
                    r.latency_ms_sum,
                    r.ttft_ms_sum,
                    r.ttft_count,
                    r.cost_micros as f64 / 1e6,
                    r.cost_micros,
                    r.unpriced
                ])?;
            }
            let mut new_conversations = 0i64;
            for (cid, c) in &convs {
                new_conversations += conv_new.execute(params![cid, c.first_ms])? as i64;
                conv_upd.execute(params![
                    cid,
                    c.last_ms,
                    c.rounds,
                    c.prompt_tokens,
                    c.completion_tokens
                ])?;
            }
            if new_conversations > 0 {
                tx.execute(
                    "UPDATE stats_totals SET conversations = conversations + ?1 WHERE id = 1",
                    [new_conversations],
                )?;
            }
            let mut msg = tx.prepare_cached(
                "INSERT INTO chat_messages (ts_ms, conversation_id, provider_id, model_name, role,
                     content, tokens_count) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for m in messages {
                msg.execute(params![
                    m.ts_ms,
                    m.conversation_id,
                    m.provider_id,
                    m.model,
                    m.role,
                    m.content,
                    m.tokens as i64
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn prune_messages(&self, before_ms: i64, limit: usize) -> Result<usize> {
        let c = self.w()?;
        let n = c.execute(
            "DELETE FROM chat_messages WHERE id IN
                 (SELECT id FROM chat_messages WHERE ts_ms < ?1 ORDER BY ts_ms LIMIT ?2)",
            params![before_ms, limit as i64],
        )?;
        let left = limit.saturating_sub(n);
        if left == 0 {
            return Ok(n);
        }
        Ok(n + c.execute(
            "DELETE FROM request_bodies WHERE rowid IN
                 (SELECT rowid FROM request_bodies WHERE ts_ms < ?1 ORDER BY ts_ms LIMIT ?2)",
            params![before_ms, left as i64],
        )?)
    }

    fn key_spend(&self, key_id: i64, since_ms: i64) -> Result<i64> {
        let c = self.r()?;
        let rolled: i64 = c.query_row(
            "SELECT coalesce(sum(cost_micros), 0) FROM usage_hourly
             WHERE key_id = ?1 AND bucket >= ?2",
            params![key_id, since_ms.div_euclid(3_600_000)],
            |r| r.get(0),
        )?;
        // From the beginning (a `total` budget): rollups retention deleted count too.
        let archived: i64 = if since_ms <= 0 {
            c.query_row(
                "SELECT coalesce(sum(cost_micros), 0) FROM key_spend_archive WHERE key_id = ?1",
                [key_id],
                |r| r.get(0),
            )?
        } else {
            0
        };
        Ok(rolled + archived)
    }

    fn reprice(
        &self,
        q: &RepriceQuery,
        now_ms: i64,
        cost: &dyn Fn(&PricedRow) -> Option<Option<i64>>,
    ) -> Result<RepriceReport> {
        let since = q.since.map_or(i64::MIN, |s| s.saturating_mul(1000));
        let until = q.until.map_or(now_ms, |u| u.saturating_mul(1000));
        let mut c = self.w()?;
        let tx = c.transaction()?;
        let mut report = RepriceReport {
            rows_examined: 0,
            rows_changed: 0,
            cost_before_usd: 0.0,
            cost_after_usd: 0.0,
            unpriced_rows: 0,
            dry_run: q.dry_run,
        };
        // (row id, rollup key, old, new, answered)
        type Change = (
            i64,
            (i64, i64, String, i64, String),
            Option<i64>,
            Option<i64>,
            bool,
        );
        let mut changes: Vec<Change> = Vec::new();
        let (mut before, mut after) = (0i64, 0i64);
        {
            // Rows that never reached a provider (refused, failed before an answer) have no
            // tokens to price and stay as they are; cache hits cost nothing.
            let mut st = tx.prepare(
                "SELECT id, ts_ms, provider_id, model, key_id, endpoint, prompt_tokens,
                        completion_tokens, cached_tokens, cache_write_tokens, reasoning_tokens,
                        cost_micros, status
                 FROM usage
                 WHERE ts_ms >= ?1 AND ts_ms < ?2 AND usage_source != 'cache'
                   AND (status < 400 OR cost_micros IS NOT NULL)
                   AND (?3 IS NULL OR model = ?3) AND (?4 IS NULL OR provider_id = ?4)",
            )?;
            let mut rows = st.query(params![since, until, q.model, q.provider_id])?;
            while let Some(r) = rows.next()? {
                let ts_ms: i64 = r.get(1)?;
                let provider_id: Option<i64> = r.get(2)?;
                let row = PricedRow {
                    provider_id,
                    model: r.get(3)?,
                    prompt_tokens: r.get::<_, i64>(6)?.max(0) as u64,
                    completion_tokens: r.get::<_, i64>(7)?.max(0) as u64,
                    cached_tokens: r.get::<_, i64>(8)?.max(0) as u64,
                    cache_write_tokens: r.get::<_, i64>(9)?.max(0) as u64,
                    reasoning_tokens: r.get::<_, i64>(10)?.max(0) as u64,
                };
                let old: Option<i64> = r.get(11)?;
                let answered = r.get::<_, i64>(12)? < 400;
                // No model to price it by any more (deleted): the row keeps its cost.
                let new = cost(&row).unwrap_or(old);
                report.rows_examined += 1;
                before += old.unwrap_or(0);
                after += new.unwrap_or(0);
                report.unpriced_rows += (answered && new.is_none()) as u64;
                if old != new {
                    let key = (
                        ts_ms.div_euclid(3_600_000),
                        provider_id.unwrap_or(0),
                        row.model,
                        r.get::<_, Option<i64>>(4)?.unwrap_or(0),
                        r.get::<_, String>(5)?,
                    );
                    changes.push((r.get(0)?, key, old, new, answered));
                }
            }
        }
        report.rows_changed = changes.len() as u64;
        report.cost_before_usd = before as f64 / 1e6;
        report.cost_after_usd = after as f64 / 1e6;
        if q.dry_run {
            return Ok(report);
        }
        {
            let mut upd =
                tx.prepare_cached("UPDATE usage SET cost_micros = ?2, cost = ?3 WHERE id = ?1")?;
            let mut roll = tx.prepare_cached(
                "UPDATE usage_hourly SET cost_micros = cost_micros + ?6, cost = cost + ?7,
                     unpriced = max(0, unpriced + ?8)
                 WHERE bucket = ?1 AND provider_id = ?2 AND model = ?3 AND key_id = ?4
                   AND endpoint = ?5",
            )?;
            for (id, (bucket, pid, model, kid, endpoint), old, new, answered) in &changes {
                upd.execute(params![id, new, new.map(|m| m as f64 / 1e6)])?;
                let delta = new.unwrap_or(0) - old.unwrap_or(0);
                let unpriced = if *answered {
                    new.is_none() as i64 - old.is_none() as i64
                } else {
                    0
                };
                roll.execute(params![
                    bucket,
                    pid,
                    model,
                    kid,
                    endpoint,
                    delta,
                    delta as f64 / 1e6,
                    unpriced
                ])?;
            }
        }
        tx.commit()?;
        Ok(report)
    }

    fn prune_usage(&self, before_ms: i64, limit: usize) -> Result<usize> {
        super::sqlite_retention::prune_usage(&*self.w()?, before_ms, limit)
    }

    fn prune_rollups(&self, before_ms: i64, limit: usize) -> Result<usize> {
        super::sqlite_retention::prune_rollups(&mut *self.w()?, before_ms, limit)
    }

    fn oldest_usage_ms(&self) -> Result<Option<i64>> {
        super::sqlite_retention::oldest_usage_ms(&*self.r()?)
    }

    fn oldest_message_ms(&self) -> Result<Option<i64>> {
        super::sqlite_retention::oldest_message_ms(&*self.r()?)
    }

    fn storage(&self) -> Result<crate::retention::StorageStats> {
        super::sqlite_retention::storage(&*self.r()?)
    }

    fn reclaim(&self, max_pages: u32) -> Result<u64> {
        super::sqlite_retention::reclaim(&*self.w()?, max_pages)
    }

    fn checkpoint(&self) -> Result<()> {
        super::sqlite_retention::checkpoint(&*self.w()?)
    }

    fn insert_provider_event(&self, e: &ProviderEvent) -> Result<()> {
        self.w()?.execute(
            "INSERT INTO provider_events (ts_ms, provider_id, provider_name, event, reason)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                e.ts_ms,
                e.provider_id,
                e.provider_name,
                e.event.as_str(),
                e.reason
            ],
        )?;
        Ok(())
    }

    fn provider_events(
        &self,
        provider_id: Option<i64>,
        limit: usize,
    ) -> Result<Vec<ProviderEvent>> {
        let c = self.r()?;
        let mut st = c.prepare(
            "SELECT id, ts_ms, provider_id, provider_name, event, reason FROM provider_events
             WHERE (?1 IS NULL OR provider_id = ?1) ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = st
            .query_map(params![provider_id, limit as i64], |r| {
                Ok(ProviderEvent {
                    id: r.get(0)?,
                    ts_ms: r.get(1)?,
                    provider_id: r.get(2)?,
                    provider_name: r.get(3)?,
                    event: ProviderEventKind::parse(&r.get::<_, String>(4)?),
                    reason: r.get(5)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    fn list_requests(&self, q: &RequestQuery) -> Result<RequestPage> {
        super::sqlite_requests::list(&*self.r()?, q)
    }

    fn get_request(&self, request_id: &str) -> Result<Option<RequestRow>> {
        super::sqlite_requests::get(&*self.r()?, request_id)
    }

    fn summary(&self) -> Result<Summary> {
        let c = self.r()?;
        let (requests, errors, prompt, completion, micros, unpriced): (
            i64,
            i64,
            i64,
            i64,
            i64,
            i64,
        ) = c.query_row(
            "SELECT coalesce(sum(requests),0), coalesce(sum(errors),0),
                        coalesce(sum(prompt_tokens),0), coalesce(sum(completion_tokens),0),
                        coalesce(sum(cost_micros),0), coalesce(sum(unpriced),0) FROM usage_hourly",
            [],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            },
        )?;
        let conversations: i64 = c.query_row(
            "SELECT conversations FROM stats_totals WHERE id = 1",
            [],
            |r| r.get(0),
        )?;
        let rounds = (requests - errors).max(0) as u64;
        Ok(Summary {
            conversations: conversations as u64,
            rounds,
            requests: requests as u64,
            errors: errors as u64,
            prompt_tokens: prompt as u64,
            completion_tokens: completion as u64,
            total_tokens: (prompt + completion) as u64,
            cost: micros as f64 / 1e6,
            unpriced_requests: unpriced as u64,
            total_conversations: conversations as u64,
            total_rounds: rounds,
            ..Summary::default()
        })
    }

    fn timeseries(
        &self,
        q: &TimeseriesQuery,
        names: &dyn Fn(GroupKey) -> String,
    ) -> Result<Timeseries> {
        let c = self.r()?;
        let div = match q.bucket {
            Bucket::Hour => 1,
            Bucket::Day => 24,
        };
        let group_col = match q.group_by {
            None => "''",
            Some(GroupBy::Model) => "model",
            Some(GroupBy::Provider) => "provider_id",
            Some(GroupBy::Key) => "key_id",
            Some(GroupBy::Endpoint) => "endpoint",
        };
        let sql = format!(
            "SELECT (bucket / {div}) * {div} AS b, {group_col} AS g, sum(requests), sum(errors),
                    sum(prompt_tokens), sum(completion_tokens), sum(latency_ms_sum),
                    sum(ttft_ms_sum), sum(ttft_count), sum(cost_micros) / 1e6, sum(unpriced)
             FROM usage_hourly WHERE bucket >= ?1 GROUP BY b, g ORDER BY b, g"
        );
        let mut st = c.prepare(&sql)?;
        let since_bucket = q.since.div_euclid(3600);
        let mut points = Vec::new();
        let mut rows = st.query([since_bucket])?;
        while let Some(r) = rows.next()? {
            let b: i64 = r.get(0)?;
            let group = match q.group_by {
                None => "all".to_owned(),
                Some(GroupBy::Model) => names(GroupKey::Model(&r.get::<_, String>(1)?)),
                Some(GroupBy::Provider) => names(GroupKey::Provider(r.get(1)?)),
                Some(GroupBy::Key) => names(GroupKey::Key(r.get(1)?)),
                Some(GroupBy::Endpoint) => r.get::<_, String>(1)?,
            };
            let requests: i64 = r.get(2)?;
            let latency_sum: f64 = r.get(6)?;
            let ttft_sum: f64 = r.get(7)?;
            let ttft_n: i64 = r.get(8)?;
            points.push(TimeseriesPoint {
                ts: b * 3600,
                group,
                requests: requests as u64,
                errors: r.get::<_, i64>(3)? as u64,
                prompt_tokens: r.get::<_, i64>(4)? as u64,
                completion_tokens: r.get::<_, i64>(5)? as u64,
                avg_latency_ms: if requests > 0 {
                    latency_sum / requests as f64
                } else {
                    0.0
                },
                avg_ttft_ms: (ttft_n > 0).then(|| ttft_sum / ttft_n as f64),
                cost: r.get(9)?,
                unpriced_requests: r.get::<_, i64>(10)?.max(0) as u64,
            });
        }
        Ok(Timeseries {
            bucket: q.bucket,
            group_by: q.group_by,
            points,
        })
    }

    fn conversation(&self, id: &str) -> Result<Option<ConversationStats>> {
        let c = self.r()?;
        let head: Option<(i64, i64, i64)> = c
            .query_row(
                "SELECT rounds, prompt_tokens, completion_tokens FROM conversations WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let mut st = c.prepare_cached(
            "SELECT ts_ms, role, content, tokens_count FROM chat_messages
             WHERE conversation_id = ?1 ORDER BY id",
        )?;
        let messages = st
            .query_map([id], |r| {
                Ok(ConversationMessage {
                    timestamp: r.get(0)?,
                    role: r.get(1)?,
                    content: r.get(2)?,
                    tokens_count: r.get::<_, i64>(3)? as u64,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let Some((rounds, prompt, completion)) = head else {
            return Ok(None);
        };
        Ok(Some(ConversationStats {
            conversation_id: id.to_owned(),
            rounds: rounds as u64,
            prompt_tokens: prompt as u64,
            completion_tokens: completion as u64,
            total_tokens: (prompt + completion) as u64,
            messages,
        }))
    }

    fn create_session(&self, s: &Session) -> Result<()> {
        let mut c = self.w()?;
        let tx = c.transaction()?;
        tx.execute(
            "INSERT INTO sessions (id, title, model, settings, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                s.id,
                s.title,
                s.model,
                to_json(&s.settings)?,
                s.created_at,
                s.updated_at
            ],
        )?;
        for m in &s.messages {
            tx.execute(
                "INSERT INTO session_messages (session_id, role, content, timestamp_ms)
                 VALUES (?1, ?2, ?3, ?4)",
                params![s.id, m.role, m.content, m.timestamp_ms],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    fn list_sessions(&self) -> Result<Vec<Session>> {
        let c = self.r()?;
        let mut st = c.prepare(
            "SELECT id, title, model, settings, created_at, updated_at FROM sessions
             ORDER BY updated_at DESC, id",
        )?;
        let v = st
            .query_map([], session_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(v)
    }

    fn get_session(&self, id: &str) -> Result<Option<Session>> {
        let c = self.w()?;
        let s = c
            .query_row(
                "SELECT id, title, model, settings, created_at, updated_at FROM sessions WHERE id = ?1",
                [id],
                session_row,
            )
            .optional()?;
        let Some(mut s) = s else { return Ok(None) };
        let mut st = c.prepare_cached(
            "SELECT role, content, timestamp_ms FROM session_messages WHERE session_id = ?1 ORDER BY id",
        )?;
        s.messages = st
            .query_map([id], |r| {
                Ok(SessionMessage {
                    role: r.get(0)?,
                    content: r.get(1)?,
                    timestamp_ms: r.get(2)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(Some(s))
    }

    fn append_session_messages(&self, id: &str, msgs: &[SessionMessage], now: i64) -> Result<bool> {
        let mut c = self.w()?;
        let tx = c.transaction()?;
        let n = tx.execute(
            "UPDATE sessions SET updated_at = ?2 WHERE id = ?1",
            params![id, now],
        )?;
        if n == 0 {
            return Ok(false);
        }
        for m in msgs {
            tx.execute(
                "INSERT INTO session_messages (session_id, role, content, timestamp_ms)
                 VALUES (?1, ?2, ?3, ?4)",
                params![id, m.role, m.content, m.timestamp_ms],
            )?;
        }
        tx.commit()?;
        Ok(true)
    }

    fn delete_session(&self, id: &str) -> Result<bool> {
        Ok(self
            .w()?
            .execute("DELETE FROM sessions WHERE id = ?1", [id])?
            > 0)
    }

    fn put_response(&self, r: &StoredResponse) -> Result<()> {
        self.w()?.execute(
            "INSERT OR REPLACE INTO responses
                 (id, key_id, created_ms, model, response, input_items, context)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                r.id,
                r.owner,
                r.created_ms,
                r.model,
                r.response.to_string(),
                r.input_items.to_string(),
                r.context.to_string()
            ],
        )?;
        Ok(())
    }

    fn get_response(&self, id: &str, owner: i64) -> Result<Option<StoredResponse>> {
        let row = self
            .r()?
            .query_row(
                "SELECT id, key_id, created_ms, model, response, input_items, context
                 FROM responses WHERE id = ?1 AND key_id = ?2",
                params![id, owner],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, String>(5)?,
                        r.get::<_, String>(6)?,
                    ))
                },
            )
            .optional()?;
        let Some((id, owner, created_ms, model, response, input_items, context)) = row else {
            return Ok(None);
        };
        let json = |what: &str, s: &str| {
            serde_json::from_str(s)
                .map_err(|e| Error::Storage(format!("stored response {id}: bad {what}: {e}")))
        };
        Ok(Some(StoredResponse {
            response: json("response", &response)?,
            input_items: json("input items", &input_items)?,
            context: json("context", &context)?,
            id,
            owner,
            created_ms,
            model,
        }))
    }

    fn delete_response(&self, id: &str, owner: i64) -> Result<bool> {
        Ok(self.w()?.execute(
            "DELETE FROM responses WHERE id = ?1 AND key_id = ?2",
            params![id, owner],
        )? > 0)
    }

    fn prune_responses(&self, before_ms: i64, limit: usize) -> Result<usize> {
        Ok(self.w()?.execute(
            "DELETE FROM responses WHERE id IN
                 (SELECT id FROM responses WHERE created_ms < ?1 ORDER BY created_ms LIMIT ?2)",
            params![before_ms, limit as i64],
        )?)
    }
}

fn session_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Session> {
    let settings: String = r.get(3)?;
    Ok(Session {
        id: r.get(0)?,
        title: r.get(1)?,
        model: r.get(2)?,
        settings: serde_json::from_str(&settings).unwrap_or_default(),
        created_at: r.get(4)?,
        updated_at: r.get(5)?,
        messages: Vec::new(),
    })
}

/// (hour bucket, provider id or 0, model, key id or 0, endpoint): the primary key of
/// `usage_hourly`.
type RollupKey<'a> = (i64, i64, &'a str, i64, &'static str);

/// One batch's sums for a `usage_hourly` row.
#[derive(Default)]
struct Rollup {
    requests: i64,
    errors: i64,
    prompt_tokens: i64,
    completion_tokens: i64,
    latency_ms_sum: f64,
    ttft_ms_sum: f64,
    ttft_count: i64,
    cost_micros: i64,
    unpriced: i64,
}

/// One batch's changes to a `conversations` row.
#[derive(Default)]
struct ConvDelta {
    first_ms: i64,
    last_ms: i64,
    rounds: i64,
    prompt_tokens: i64,
    completion_tokens: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_apply_and_reopen_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.db");
        {
            let s = SqliteStore::open(&p).unwrap();
            s.meta_set("x", b"1").unwrap();
        }
        let s = SqliteStore::open(&p).unwrap();
        assert_eq!(s.meta_get("x").unwrap().as_deref(), Some(&b"1"[..]));
        let v: i64 = s
            .w()
            .unwrap()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, MIGRATIONS.len() as i64);
        let mode: String = s
            .w()
            .unwrap()
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn processes_opening_a_fresh_file_at_once_all_succeed() {
        // Each store is its own set of connections, as separate processes would be. The version
        // used to be read outside the migration's transaction, so the losers of the race ran
        // 0001 again and failed with "table already exists".
        for round in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join(format!("race{round}.db"));
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(4));
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let (p, b) = (p.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        b.wait();
                        SqliteStore::open(&p).map(|_| ())
                    })
                })
                .collect();
            for h in handles {
                h.join().unwrap().unwrap();
            }
        }
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.db");
        {
            let c = Connection::open(&p).unwrap();
            c.pragma_update(None, "user_version", 99).unwrap();
        }
        let e = SqliteStore::open(&p).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Config);
    }

    #[test]
    fn migrates_a_database_created_by_an_older_build() {
        // A database at version 0 with unrelated content (as an empty file from an old install).
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("old.db");
        {
            let c = Connection::open(&p).unwrap();
            c.execute_batch(
                "CREATE TABLE unrelated (x INTEGER); INSERT INTO unrelated VALUES (7);",
            )
            .unwrap();
        }
        let s = SqliteStore::open(&p).unwrap();
        let x: i64 = s
            .w()
            .unwrap()
            .query_row("SELECT x FROM unrelated", [], |r| r.get(0))
            .unwrap();
        assert_eq!(x, 7);
        assert!(s.load_registry().unwrap().providers.is_empty());
    }
}
