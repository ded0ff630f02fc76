//! The provider registry: providers, models, client keys and the admin token, kept in the store
//! and mirrored in an immutable in-memory snapshot.
//!
//! The request path (authenticate, route, the admin token check) reads only the snapshot: no
//! database round trip, no lock held across an await. Every write goes to the store first and then
//! rebuilds the snapshot, so the snapshot is never ahead of what is durable.
//!
//! Several processes may share one database (two servers, or a server and a Python or C program).
//! A background thread polls [`Store::registry_version`] every [`RELOAD_INTERVAL`] and reloads the
//! snapshot when another process changed the registry, so a revoked key or a disabled provider
//! stops working everywhere within about a second. The thread holds only a `Weak` reference and
//! ends when the registry is dropped.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use subtle::ConstantTimeEq;

use crate::crypto::{self, MasterKey};
use crate::error::{Error, Result};
use crate::records::{
    validate_base_url, validate_name, ClientKey, CreatedKey, KeyPatch, Model, ModelKind,
    ModelPatch, NewKey, NewModel, NewProvider, Provider, ProviderEvent, ProviderEventKind,
    ProviderPatch,
};
use crate::store::{SqliteStore, Store, StoredKey, StoredProvider};
use crate::time::now_ms;

mod groups;
mod key_pools;

/// How often the registry checks whether another process changed the database.
pub const RELOAD_INTERVAL: Duration = Duration::from_millis(500);

/// For stores that cannot report a version cheaply: reload unconditionally every this many
/// intervals (2 s).
const BLIND_RELOAD_EVERY: u32 = 4;

/// The shortest admin token accepted from configuration (`NEXUS_ADMIN_TOKEN`).
pub const MIN_ADMIN_TOKEN_LEN: usize = 16;

const MASTER_CHECK_META: &str = "master_key_check";
const MASTER_CHECK_TEXT: &[u8] = b"nexus master key check v1";
const ADMIN_TOKEN_META: &str = "admin_token_hash";

/// A secret string whose `Debug` never shows it.
#[derive(Clone)]
pub struct Secret(Arc<str>);

impl Secret {
    /// Wraps a secret value.
    #[cfg(test)]
    pub(crate) fn new(s: String) -> Secret {
        Secret(s.into())
    }

    /// The secret, for the one place that needs it (the upstream `Authorization` header).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A provider ready to be called: its record, endpoint, decrypted key and headers.
#[derive(Debug, Clone)]
pub struct ProviderEntry {
    /// The public record. Its `options.headers` holds hints only; the values to send are in
    /// [`headers`](Self::headers).
    pub record: Provider,
    /// The key for calls outside the request path (probes, model lists): the first key of
    /// [`pool`](Self::pool).
    pub api_key: Secret,
    /// The upstream keys requests may use (enabled and not set aside), the provider's own key
    /// first when it is one of them; never empty (a pool whose every key is out falls back to the
    /// provider's own key, so the provider fails like a provider with a bad key).
    pub pool: Vec<PoolMember>,
    /// The extra upstream headers (`options.headers`), unsealed, in name order.
    pub headers: Vec<(String, Secret)>,
    /// `record.endpoint` parsed once here rather than on every request (URL parsing was ~3% of
    /// the gateway's CPU).
    pub(crate) endpoint_url: Option<reqwest::Url>,
}

/// One upstream key of a provider's pool, ready to be sent.
#[derive(Debug, Clone)]
pub struct PoolMember {
    /// `0` for the provider's own key, otherwise the pool key's id.
    pub id: i64,
    /// The key.
    pub key: Secret,
    /// Its share of the requests.
    pub weight: u32,
}

/// One way to serve a request: a provider and the model entry on it, and which of the
/// provider's pool keys the next attempt sends.
#[derive(Debug)]
pub struct Candidate {
    /// The provider.
    pub provider: Arc<ProviderEntry>,
    /// The model on that provider.
    pub model: Model,
    /// Index into `provider.pool`: chosen per request (and moved on after a key's failure)
    /// while the attempt closures hold the candidate list, hence atomic.
    key: std::sync::atomic::AtomicUsize,
}

impl Clone for Candidate {
    fn clone(&self) -> Self {
        Candidate {
            provider: self.provider.clone(),
            model: self.model.clone(),
            key: std::sync::atomic::AtomicUsize::new(self.key_index()),
        }
    }
}

impl Candidate {
    /// A candidate sending the provider's first pool key.
    pub fn new(provider: Arc<ProviderEntry>, model: Model) -> Candidate {
        Candidate {
            provider,
            model,
            key: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// The index into `provider.pool` of the key the next attempt sends.
    pub fn key_index(&self) -> usize {
        self.key.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Makes the next attempts send `provider.pool[i]` (ignored when out of range).
    pub fn use_key(&self, i: usize) {
        if i < self.provider.pool.len() {
            self.key.store(i, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// The pool member the next attempt sends.
    pub fn member(&self) -> Option<&PoolMember> {
        self.provider.pool.get(self.key_index())
    }

    /// The upstream key the next attempt sends.
    pub fn api_key(&self) -> &Secret {
        self.member()
            .map(|m| &m.key)
            .unwrap_or(&self.provider.api_key)
    }
}

#[derive(Debug, Default)]
struct Snapshot {
    providers: Vec<Arc<ProviderEntry>>,
    provider_index: HashMap<i64, usize>,
    /// Providers whose stored options or headers do not decode: listed, never routed.
    broken_providers: HashSet<i64>,
    /// Keys whose stored scope does not decode: listed, never authenticated.
    broken_keys: HashSet<i64>,
    models: Vec<Model>,
    models_by_name: HashMap<String, Vec<usize>>,
    groups: Vec<crate::records::ModelGroup>,
    groups_by_name: HashMap<String, usize>,
    /// Every provider's pool as listed (its own key first), by provider id.
    pool_keys: HashMap<i64, Vec<crate::records::PoolKey>>,
    keys: Vec<ClientKey>,
    keys_by_hash: HashMap<String, usize>,
    /// The stored admin token hash (hex bytes), cached so the check is a memory compare.
    admin_hash: Option<Vec<u8>>,
}

struct Shared {
    store: Arc<dyn Store>,
    master: RwLock<MasterKey>,
    snap: RwLock<Arc<Snapshot>>,
    // Serializes writers (and the watcher's reloads) so a read-modify-write of a row cannot
    // interleave with another and an older snapshot never replaces a newer one.
    write: Mutex<()>,
    /// The store version the current snapshot was loaded at.
    seen_version: Mutex<Option<u64>>,
}

/// The registry. Cheap to share behind an `Arc`.
pub struct Registry {
    s: Arc<Shared>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

fn lock_err<T>(_: T) -> Error {
    Error::Internal("registry lock poisoned".into())
}

fn check_master(master: &MasterKey, sealed_check: &[u8]) -> Result<()> {
    if master.open(sealed_check)? != MASTER_CHECK_TEXT {
        return Err(Error::Config("master key check value is corrupt".into()));
    }
    Ok(())
}

/// Seals a header map as one JSON object; no headers is `None` (a NULL column).
fn seal_headers(master: &MasterKey, h: &BTreeMap<String, String>) -> Result<Option<Vec<u8>>> {
    if h.is_empty() {
        return Ok(None);
    }
    let json = serde_json::to_vec(h).map_err(|e| Error::Internal(e.to_string()))?;
    master.seal(&json).map(Some)
}

fn open_headers(master: &MasterKey, sealed: Option<&[u8]>) -> Result<BTreeMap<String, String>> {
    let Some(sealed) = sealed else {
        return Ok(BTreeMap::new());
    };
    serde_json::from_slice(&master.open(sealed)?)
        .map_err(|e| Error::Storage(format!("sealed headers cannot be decoded: {e}")))
}

fn header_hints(h: &BTreeMap<String, String>) -> Option<BTreeMap<String, String>> {
    (!h.is_empty()).then(|| {
        h.iter()
            .map(|(k, v)| (k.clone(), crypto::key_hint(v)))
            .collect()
    })
}

/// Starts the thread that reloads the snapshot when another process changes the database.
fn spawn_watcher(weak: Weak<Shared>) -> Result<()> {
    std::thread::Builder::new()
        .name("nexus-registry-watch".into())
        .spawn(move || {
            let mut last_error: Option<String> = None;
            let mut tick = 0u32;
            loop {
                std::thread::sleep(RELOAD_INTERVAL);
                // The registry is gone (its hub dropped): so is the reason to watch.
                let Some(s) = weak.upgrade() else { break };
                tick = tick.wrapping_add(1);
                match s.reload_if_changed(tick.is_multiple_of(BLIND_RELOAD_EVERY)) {
                    Ok(()) => last_error = None,
                    Err(e) => {
                        // Logged once per distinct error, not every 500 ms; the old snapshot
                        // stays in use meanwhile.
                        let msg = e.to_string();
                        if last_error.as_deref() != Some(msg.as_str()) {
                            tracing::error!(error = %msg, "registry reload failed; keeping the previous snapshot");
                            last_error = Some(msg);
                        }
                    }
                }
            }
        })
        .map(|_| ())
        .map_err(|e| Error::Internal(format!("cannot start the registry watcher: {e}")))
}

impl Shared {
    fn reload_if_changed(&self, blind_tick: bool) -> Result<()> {
        let v = self.store.registry_version()?;
        let changed = match v {
            Some(v) => *self.seen_version.lock().map_err(lock_err)? != Some(v),
            None => blind_tick,
        };
        if !changed {
            return Ok(());
        }
        let _w = self.write.lock().map_err(lock_err)?;
        self.reload()
    }

    fn reload(&self) -> Result<()> {
        // Read before loading: a change that lands in between moves the version again, so the
        // watcher's next look reloads once more instead of missing it.
        let version = self.store.registry_version()?;
        let data = self.store.load_registry()?;
        let admin_hash = self.store.meta_get(ADMIN_TOKEN_META)?;
        let master = self.master.read().map_err(lock_err)?.clone();
        let mut snap = Snapshot {
            admin_hash,
            ..Snapshot::default()
        };
        let mut counts: HashMap<i64, usize> = HashMap::new();
        for m in &data.models {
            *counts.entry(m.provider_id).or_default() += 1;
        }
        let mut pools: HashMap<i64, Vec<crate::store::StoredPoolKey>> = HashMap::new();
        for k in data.pool_keys {
            pools.entry(k.record.provider_id).or_default().push(k);
        }
        for p in data.providers {
            let key = String::from_utf8(master.open(&p.sealed_key)?)
                .map_err(|_| Error::Storage("upstream key is not UTF-8".into()))?;
            let added = pools.remove(&p.id).unwrap_or_default();
            let key_count = 1 + added.len();
            let primary = Secret(key.into());
            let (pool, listed) = key_pools::members(&master, &p, primary, added)?;
            let keys_active = listed.iter().filter(|k| k.active()).count();
            snap.pool_keys.insert(p.id, listed);
            let mut options = p.options;
            // Plaintext headers here come from an older build writing after this one sealed
            // them at open: still send them, but list only hints.
            let plaintext = options.headers.take();
            let mut config_error = p.decode_error;
            let headers = match plaintext {
                Some(h) => h,
                None => match open_headers(&master, p.sealed_headers.as_deref()) {
                    Ok(h) => h,
                    Err(e) => {
                        config_error.get_or_insert_with(|| e.to_string());
                        BTreeMap::new()
                    }
                },
            };
            if let Some(e) = &config_error {
                tracing::error!(provider = p.id, name = %p.name, error = %e, "provider is not routable until its options are set again");
                snap.broken_providers.insert(p.id);
            }
            options.headers = header_hints(&headers);
            snap.provider_index.insert(p.id, snap.providers.len());
            let endpoint = crate::records::endpoint_for(p.kind, &p.base_url, &options);
            snap.providers.push(Arc::new(ProviderEntry {
                // Only an OpenAI endpoint is the same URL for every request.
                endpoint_url: (p.kind == crate::records::ProviderKind::Openai)
                    .then(|| reqwest::Url::parse(&endpoint).ok())
                    .flatten(),
                record: Provider {
                    id: p.id,
                    kind: p.kind,
                    endpoint,
                    name: p.name,
                    base_url: p.base_url,
                    api_key_hint: p.key_hint,
                    description: p.description,
                    enabled: p.enabled,
                    auto_disabled: p.auto_disabled,
                    disabled_reason: p.disabled_reason,
                    options,
                    created_at: p.created_at,
                    updated_at: p.updated_at,
                    model_count: counts.get(&p.id).copied().unwrap_or(0),
                    key_count,
                    keys_active,
                    config_error,
                },
                api_key: pool[0].key.clone(),
                pool,
                headers: headers
                    .into_iter()
                    .map(|(k, v)| (k, Secret(v.into())))
                    .collect(),
            }));
        }
        let catalog = crate::prices::Catalog::bundled();
        for (i, mut m) in data.models.into_iter().enumerate() {
            // Resolved once per snapshot: the request path reads the prices, never the catalog.
            if let Some((p, src)) = crate::prices::effective(&m, catalog) {
                m.prices = Some(p);
                m.price_source = Some(src);
            }
            snap.models_by_name
                .entry(m.name.clone())
                .or_default()
                .push(i);
            snap.models.push(m);
        }
        for (i, g) in data.groups.into_iter().enumerate() {
            snap.groups_by_name.insert(g.name.clone(), i);
            snap.groups.push(g);
        }
        for (i, k) in data.keys.into_iter().enumerate() {
            let mut rec = k.record;
            if let Some(e) = k.decode_error {
                // Fail closed: a key whose scope is unreadable authenticates nowhere (it is left
                // out of the hash index) rather than everywhere.
                tracing::error!(key = rec.id, name = %rec.name, error = %e, "client key refused until its scope is set again");
                snap.broken_keys.insert(rec.id);
                rec.config_error = Some(e);
            } else {
                snap.keys_by_hash.insert(k.hash, i);
            }
            snap.keys.push(rec);
        }
        *self.snap.write().map_err(lock_err)? = Arc::new(snap);
        *self.seen_version.lock().map_err(lock_err)? = version;
        Ok(())
    }
}

impl Registry {
    /// Opens the registry over `store`, checking that `master` opens this database's secrets,
    /// sealing provider headers left in plaintext by older builds, and starting the thread that
    /// picks up other processes' changes.
    pub fn open(store: Arc<dyn Store>, master: MasterKey) -> Result<Self> {
        match store.meta_get(MASTER_CHECK_META)? {
            Some(sealed) => check_master(&master, &sealed)?,
            None => store.meta_set(MASTER_CHECK_META, &master.seal(MASTER_CHECK_TEXT)?)?,
        }
        let reg = Registry {
            s: Arc::new(Shared {
                store,
                master: RwLock::new(master),
                snap: RwLock::new(Arc::new(Snapshot::default())),
                write: Mutex::new(()),
                seen_version: Mutex::new(None),
            }),
        };
        reg.seal_plaintext_headers()?;
        reg.reload()?;
        spawn_watcher(Arc::downgrade(&reg.s))?;
        Ok(reg)
    }

    /// The store underneath.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.s.store
    }

    /// Rebuilds the snapshot from the store (also picks up writes by other processes; the
    /// background thread calls it when [`Store::registry_version`] moves).
    pub fn reload(&self) -> Result<()> {
        self.s.reload()
    }

    /// Moves header values that an older build stored in the plaintext `options` column into the
    /// sealed column. Idempotent; each provider is one row update.
    fn seal_plaintext_headers(&self) -> Result<()> {
        let _w = self.s.write.lock().map_err(lock_err)?;
        let data = self.s.store.load_registry()?;
        for mut p in data.providers {
            let Some(plain) = p.options.headers.take() else {
                continue;
            };
            if p.decode_error.is_some() {
                continue;
            }
            let master = self.s.master.read().map_err(lock_err)?.clone();
            p.sealed_headers = seal_headers(&master, &plain)?;
            self.s.store.update_provider(&p)?;
            tracing::info!(
                provider = p.id,
                "sealed the provider's plaintext header values"
            );
        }
        Ok(())
    }

    fn snapshot(&self) -> Result<Arc<Snapshot>> {
        Ok(self.s.snap.read().map_err(lock_err)?.clone())
    }

    fn stored_provider(&self, id: i64) -> Result<StoredProvider> {
        self.s
            .store
            .load_registry()?
            .providers
            .into_iter()
            .find(|p| p.id == id)
            .ok_or_else(|| Error::not_found(format!("provider {id}")))
    }

    // ---- providers -------------------------------------------------------------------------

    /// Lists providers by id.
    pub fn providers(&self) -> Result<Vec<Provider>> {
        Ok(self
            .snapshot()?
            .providers
            .iter()
            .map(|p| p.record.clone())
            .collect())
    }

    /// One provider.
    pub fn provider(&self, id: i64) -> Result<Provider> {
        Ok(self.provider_entry(id)?.record.clone())
    }

    /// One provider with its key, for calling it.
    pub fn provider_entry(&self, id: i64) -> Result<Arc<ProviderEntry>> {
        let s = self.snapshot()?;
        s.provider_index
            .get(&id)
            .map(|&i| s.providers[i].clone())
            .ok_or_else(|| Error::not_found(format!("provider {id}")))
    }

    /// Creates a provider. `personalized_key`, when given, becomes a client key scoped to it.
    pub fn create_provider(&self, p: NewProvider) -> Result<Provider> {
        validate_name("name", &p.name)?;
        validate_base_url(&p.base_url)?;
        if p.api_key.is_empty() {
            return Err(Error::invalid_param("api_key", "api_key must not be empty"));
        }
        let _w = self.s.write.lock().map_err(lock_err)?;
        let now = now_ms() / 1000;
        let master = self.s.master.read().map_err(lock_err)?.clone();
        let sealed = master.seal(p.api_key.as_bytes())?;
        let mut options = p.options;
        let sealed_headers = seal_headers(&master, &options.headers.take().unwrap_or_default())?;
        let id = self.s.store.insert_provider(&StoredProvider {
            id: 0,
            name: p.name.trim().to_owned(),
            kind: p.kind,
            base_url: p.base_url.trim().to_owned(),
            sealed_key: sealed,
            key_hint: crypto::key_hint(&p.api_key),
            description: p.description,
            enabled: p.enabled.unwrap_or(true),
            options,
            sealed_headers,
            created_at: now,
            updated_at: now,
            auto_disabled: false,
            disabled_reason: None,
            primary: Default::default(),
            decode_error: None,
        })?;
        if let Some(pk) = p.personalized_key.filter(|k| !k.is_empty()) {
            self.attach_legacy_key(&pk, id, &p.name)?;
        }
        self.reload()?;
        self.provider(id)
    }

    fn attach_legacy_key(
        &self,
        plaintext: &str,
        provider_id: i64,
        provider_name: &str,
    ) -> Result<()> {
        let hash = crypto::hash_secret(plaintext);
        let data = self.s.store.load_registry()?;
        if let Some(k) = data.keys.into_iter().find(|k| k.hash == hash) {
            if let Some(e) = k.decode_error {
                return Err(Error::Conflict(format!(
                    "client key {} has an unreadable scope ({e}); set it with an update first",
                    k.record.id
                )));
            }
            let mut rec = k.record;
            // An empty scope means "all providers": it already covers this one.
            if !rec.provider_ids.is_empty() && !rec.provider_ids.contains(&provider_id) {
                rec.provider_ids.push(provider_id);
                self.s.store.update_key(&rec)?;
            }
            return Ok(());
        }
        self.s.store.insert_key(&StoredKey {
            hash,
            decode_error: None,
            record: ClientKey {
                id: 0,
                name: format!("personalized key of {provider_name}"),
                prefix: crypto::key_prefix(plaintext),
                provider_ids: vec![provider_id],
                models: vec![],
                expires_at: None,
                enabled: true,
                rpm: None,
                tpm: None,
                max_concurrent: None,
                budget_usd: None,
                budget_period: None,
                soft_budget_usd: None,
                record_bodies: None,
                created_at: now_ms() / 1000,
                last_used_at: None,
                config_error: None,
            },
        })?;
        Ok(())
    }

    /// Updates a provider.
    pub fn update_provider(&self, id: i64, patch: ProviderPatch) -> Result<Provider> {
        let _w = self.s.write.lock().map_err(lock_err)?;
        let mut p = self.stored_provider(id)?;
        if let Some(n) = patch.name {
            validate_name("name", &n)?;
            p.name = n.trim().to_owned();
        }
        if let Some(k) = patch.kind {
            p.kind = k;
        }
        if let Some(u) = patch.base_url {
            validate_base_url(&u)?;
            p.base_url = u.trim().to_owned();
        }
        if let Some(k) = patch.api_key.filter(|k| !k.is_empty()) {
            p.sealed_key = self.s.master.read().map_err(lock_err)?.seal(k.as_bytes())?;
            p.key_hint = crypto::key_hint(&k);
            // A new value is a new chance for a key the hub had set aside.
            p.primary.set_aside = None;
        }
        if let Some(d) = patch.description {
            p.description = d;
        }
        // An operator's enable or disable takes the provider out of the health checks' hands:
        // they never undo it (they only re-enable what they disabled themselves).
        let manual = patch.enabled.filter(|&e| e != p.enabled || p.auto_disabled);
        if let Some(e) = patch.enabled {
            p.enabled = e;
            p.auto_disabled = false;
            p.disabled_reason = (!e).then(|| "disabled by an operator".to_owned());
        }
        let master = self.s.master.read().map_err(lock_err)?.clone();
        // Plaintext headers written by an older build since this registry opened: seal them now
        // rather than write them back in clear.
        if let Some(plain) = p.options.headers.take() {
            p.sealed_headers = seal_headers(&master, &plain)?;
        }
        match patch.options {
            Some(mut o) => {
                if let Some(sent) = o.headers.take() {
                    // A value equal to the stored value's hint means "unchanged": the form and
                    // API clients send back what they were shown.
                    let current =
                        open_headers(&master, p.sealed_headers.as_deref()).unwrap_or_default();
                    let merged: BTreeMap<String, String> = sent
                        .into_iter()
                        .map(|(k, v)| match current.get(&k) {
                            Some(cur) if crypto::key_hint(cur) == v => (k, cur.clone()),
                            _ => (k, v),
                        })
                        .collect();
                    p.sealed_headers = seal_headers(&master, &merged)?;
                } else if p.decode_error.is_some() {
                    // Omitted headers are kept; that needs the stored ones to be readable.
                    open_headers(&master, p.sealed_headers.as_deref())?;
                }
                p.options = o;
                p.decode_error = None;
            }
            None => {
                if let Some(e) = &p.decode_error {
                    return Err(Error::invalid_param(
                        "options",
                        format!("{e}; send `options` to set them again"),
                    ));
                }
            }
        }
        p.updated_at = now_ms() / 1000;
        self.s.store.update_provider(&p)?;
        if let Some(pk) = patch.personalized_key.filter(|k| !k.is_empty()) {
            self.attach_legacy_key(&pk, id, &p.name)?;
        }
        if let Some(e) = manual {
            self.event(
                &p,
                if e {
                    ProviderEventKind::Enabled
                } else {
                    ProviderEventKind::Disabled
                },
                "by an operator",
            );
        }
        self.reload()?;
        self.provider(id)
    }

    /// The health checks' verdict on a provider: `healthy: false` disables an enabled provider
    /// (marked automatic, with `reason`); `healthy: true` re-enables one they disabled. Anything
    /// else (a provider an operator disabled, one already in that state) is left alone. Returns
    /// whether the state changed.
    pub fn set_probe_state(&self, id: i64, healthy: bool, reason: &str) -> Result<bool> {
        let _w = self.s.write.lock().map_err(lock_err)?;
        let mut p = self.stored_provider(id)?;
        let kind = match (healthy, p.enabled, p.auto_disabled) {
            (false, true, _) => {
                p.enabled = false;
                p.auto_disabled = true;
                p.disabled_reason = Some(reason.to_owned());
                ProviderEventKind::AutoDisabled
            }
            (true, false, true) => {
                p.enabled = true;
                p.auto_disabled = false;
                p.disabled_reason = None;
                ProviderEventKind::AutoEnabled
            }
            _ => return Ok(false),
        };
        p.updated_at = now_ms() / 1000;
        self.s.store.update_provider(&p)?;
        self.event(&p, kind, reason);
        self.reload()?;
        Ok(true)
    }

    /// Records a state change; a failure to record it is logged, never fails the change.
    fn event(&self, p: &StoredProvider, event: ProviderEventKind, reason: &str) {
        let e = ProviderEvent {
            id: 0,
            ts_ms: now_ms(),
            provider_id: p.id,
            provider_name: p.name.clone(),
            event,
            reason: reason.to_owned(),
        };
        tracing::warn!(provider = %p.name, provider_id = p.id, event = event.as_str(), reason, "provider state changed");
        if let Err(err) = self.s.store.insert_provider_event(&e) {
            tracing::error!(error = %err, "could not record a provider event");
        }
    }

    /// The newest provider state changes (of one provider, or all), newest first.
    pub fn provider_events(
        &self,
        provider_id: Option<i64>,
        limit: usize,
    ) -> Result<Vec<ProviderEvent>> {
        self.s
            .store
            .provider_events(provider_id, limit.clamp(1, 1000))
    }

    /// Deletes a provider and its models.
    pub fn delete_provider(&self, id: i64) -> Result<()> {
        let _w = self.s.write.lock().map_err(lock_err)?;
        if !self.s.store.delete_provider(id)? {
            return Err(Error::not_found(format!("provider {id}")));
        }
        self.reload()
    }

    // ---- models ----------------------------------------------------------------------------

    /// All models, or one provider's.
    pub fn models(&self, provider_id: Option<i64>) -> Result<Vec<Model>> {
        let s = self.snapshot()?;
        if let Some(pid) = provider_id {
            if !s.provider_index.contains_key(&pid) {
                return Err(Error::not_found(format!("provider {pid}")));
            }
        }
        Ok(s.models
            .iter()
            .filter(|m| provider_id.is_none_or(|p| m.provider_id == p))
            .cloned()
            .collect())
    }

    /// One model.
    pub fn model(&self, id: i64) -> Result<Model> {
        self.snapshot()?
            .models
            .iter()
            .find(|m| m.id == id)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("model id {id}")))
    }

    /// Adds a model to a provider. Prices must be non-negative numbers.
    pub fn create_model(&self, provider_id: i64, m: NewModel) -> Result<Model> {
        validate_name("name", &m.name)?;
        self.refuse_group_name(&m.name)?;
        if let Some(u) = &m.upstream_name {
            validate_name("upstream_name", u)?;
        }
        check_prices(&[
            ("input_price", m.input_price),
            ("output_price", m.output_price),
            ("cached_input_price", m.cached_input_price),
            ("cache_write_price", m.cache_write_price),
        ])?;
        let _w = self.s.write.lock().map_err(lock_err)?;
        self.provider(provider_id)?;
        let id = self
            .s
            .store
            .insert_model(provider_id, &m, now_ms() / 1000)
            .map_err(|e| match e {
                Error::Conflict(_) => Error::Conflict(format!(
                    "provider {provider_id} already has a model named '{}'",
                    m.name
                )),
                e => e,
            })?;
        self.reload()?;
        self.model(id)
    }

    /// A model may not take a group's name: a name always means one thing.
    fn refuse_group_name(&self, name: &str) -> Result<()> {
        if self.is_group_name(name)? {
            return Err(Error::invalid_param(
                "name",
                format!("'{name}' is a model group's name"),
            ));
        }
        Ok(())
    }

    /// Updates a model.
    pub fn update_model(&self, id: i64, patch: ModelPatch) -> Result<Model> {
        if let Some(n) = &patch.name {
            self.refuse_group_name(n)?;
            validate_name("name", n)?;
        }
        check_prices(&[
            ("input_price", patch.input_price.flatten()),
            ("output_price", patch.output_price.flatten()),
            ("cached_input_price", patch.cached_input_price.flatten()),
            ("cache_write_price", patch.cache_write_price.flatten()),
        ])?;
        let _w = self.s.write.lock().map_err(lock_err)?;
        if !self.s.store.update_model(id, &patch)? {
            return Err(Error::not_found(format!("model id {id}")));
        }
        self.reload()?;
        self.model(id)
    }

    /// Deletes a model.
    pub fn delete_model(&self, id: i64) -> Result<()> {
        let _w = self.s.write.lock().map_err(lock_err)?;
        if !self.s.store.delete_model(id)? {
            return Err(Error::not_found(format!("model id {id}")));
        }
        self.reload()
    }

    // ---- client keys -----------------------------------------------------------------------

    /// Lists keys (never their secret).
    pub fn keys(&self) -> Result<Vec<ClientKey>> {
        Ok(self.snapshot()?.keys.clone())
    }

    /// One key.
    pub fn key(&self, id: i64) -> Result<ClientKey> {
        self.snapshot()?
            .keys
            .iter()
            .find(|k| k.id == id)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("key {id}")))
    }

    /// Creates a random key; the plaintext is in the result and nowhere else.
    pub fn create_key(&self, k: NewKey) -> Result<CreatedKey> {
        validate_name("name", &k.name)?;
        let _w = self.s.write.lock().map_err(lock_err)?;
        let s = self.snapshot()?;
        for pid in &k.provider_ids {
            if !s.provider_index.contains_key(pid) {
                return Err(Error::invalid_param(
                    "provider_ids",
                    format!("provider {pid} does not exist"),
                ));
            }
        }
        check_limits(k.rpm, k.tpm, k.max_concurrent)?;
        check_budgets(k.budget_usd, k.soft_budget_usd)?;
        let plaintext = crypto::generate_client_key()?;
        let record = ClientKey {
            id: 0,
            name: k.name.trim().to_owned(),
            prefix: crypto::key_prefix(&plaintext),
            provider_ids: k.provider_ids,
            models: k.models,
            expires_at: k.expires_at,
            enabled: k.enabled.unwrap_or(true),
            rpm: k.rpm,
            tpm: k.tpm,
            max_concurrent: k.max_concurrent,
            budget_usd: k.budget_usd,
            budget_period: k.budget_period,
            soft_budget_usd: k.soft_budget_usd,
            record_bodies: k.record_bodies,
            created_at: now_ms() / 1000,
            last_used_at: None,
            config_error: None,
        };
        let id = self.s.store.insert_key(&StoredKey {
            hash: crypto::hash_secret(&plaintext),
            record,
            decode_error: None,
        })?;
        self.reload()?;
        Ok(CreatedKey {
            key: plaintext,
            record: self.key(id)?,
        })
    }

    /// Updates a key.
    pub fn update_key(&self, id: i64, p: KeyPatch) -> Result<ClientKey> {
        let _w = self.s.write.lock().map_err(lock_err)?;
        let mut k = self.key(id)?;
        if self.snapshot()?.broken_keys.contains(&id)
            && (p.provider_ids.is_none() || p.models.is_none())
        {
            // Writing the record back as listed would store an empty scope: "everything".
            return Err(Error::invalid_param(
                "provider_ids",
                "this key's stored scope cannot be decoded; send both provider_ids and models",
            ));
        }
        k.config_error = None;
        if let Some(n) = p.name {
            validate_name("name", &n)?;
            k.name = n;
        }
        if let Some(e) = p.enabled {
            k.enabled = e;
        }
        if let Some(e) = p.expires_at {
            k.expires_at = e;
        }
        if let Some(v) = p.rpm {
            k.rpm = v;
        }
        if let Some(v) = p.tpm {
            k.tpm = v;
        }
        if let Some(v) = p.max_concurrent {
            k.max_concurrent = v;
        }
        if let Some(v) = p.budget_usd {
            k.budget_usd = v;
        }
        if let Some(v) = p.budget_period {
            k.budget_period = v;
        }
        if let Some(v) = p.soft_budget_usd {
            k.soft_budget_usd = v;
        }
        if let Some(v) = p.record_bodies {
            k.record_bodies = v;
        }
        check_limits(k.rpm, k.tpm, k.max_concurrent)?;
        check_budgets(k.budget_usd, k.soft_budget_usd)?;
        if let Some(v) = p.provider_ids {
            k.provider_ids = v;
        }
        if let Some(v) = p.models {
            k.models = v;
        }
        self.s.store.update_key(&k)?;
        self.reload()?;
        self.key(id)
    }

    /// Deletes (revokes) a key.
    pub fn delete_key(&self, id: i64) -> Result<()> {
        let _w = self.s.write.lock().map_err(lock_err)?;
        if !self.s.store.delete_key(id)? {
            return Err(Error::not_found(format!("key {id}")));
        }
        self.reload()
    }

    /// Checks a presented client key: unknown, disabled and expired keys are authentication
    /// errors that do not say which (so a prober learns nothing).
    pub fn authenticate(&self, presented: &str) -> Result<ClientKey> {
        let s = self.snapshot()?;
        let bad = || Error::Authentication("invalid API key".into());
        let idx = s
            .keys_by_hash
            .get(&crypto::hash_secret(presented))
            .ok_or_else(bad)?;
        let k = &s.keys[*idx];
        if !k.enabled {
            return Err(bad());
        }
        if k.expires_at.is_some_and(|e| e <= now_ms() / 1000) {
            return Err(bad());
        }
        Ok(k.clone())
    }

    /// The providers serving chat model `model` that `key` (None = unrestricted admin) may use,
    /// in a deterministic order (by provider id). `provider_id` pins one provider.
    pub fn route(
        &self,
        key: Option<&ClientKey>,
        model: &str,
        provider_id: Option<i64>,
    ) -> Result<Vec<Candidate>> {
        self.route_kind(key, model, provider_id, ModelKind::Chat)
    }

    /// [`route`](Self::route) for a model of `kind`. A name the key may use only as the other
    /// kind is a 400 naming the endpoint that serves it.
    /// A model group's name routes to its members' candidates, member by member in the group's
    /// order: the key's model scope may name the group or the member.
    pub fn route_kind(
        &self,
        key: Option<&ClientKey>,
        model: &str,
        provider_id: Option<i64>,
        kind: ModelKind,
    ) -> Result<Vec<Candidate>> {
        let s = self.snapshot()?;
        if !s.models_by_name.contains_key(model) {
            if let Some(&gi) = s.groups_by_name.get(model) {
                return Self::route_group(&s, &s.groups[gi], key, provider_id, kind);
            }
        }
        Self::route_model(&s, key, model, None, provider_id, kind)
    }

    /// The candidates serving `model` (as a member of group `group`, when routed through one).
    fn route_model(
        s: &Snapshot,
        key: Option<&ClientKey>,
        model: &str,
        group: Option<&str>,
        provider_id: Option<i64>,
        kind: ModelKind,
    ) -> Result<Vec<Candidate>> {
        let all = s
            .models_by_name
            .get(model)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let mut served = false;
        let mut other_kind = None;
        let mut out = Vec::new();
        for &i in all {
            let m = &s.models[i];
            if provider_id.is_some_and(|p| p != m.provider_id) {
                continue;
            }
            let Some(&pi) = s.provider_index.get(&m.provider_id) else {
                continue;
            };
            let p = &s.providers[pi];
            if !p.record.enabled || s.broken_providers.contains(&p.record.id) {
                continue;
            }
            served = true;
            if let Some(k) = key {
                let provider_ok =
                    k.provider_ids.is_empty() || k.provider_ids.contains(&m.provider_id);
                let model_ok = k.models.is_empty()
                    || k.models
                        .iter()
                        .any(|n| n == model || Some(n.as_str()) == group);
                if !(provider_ok && model_ok) {
                    continue;
                }
            }
            if m.kind != kind {
                other_kind = Some(m.kind);
                continue;
            }
            out.push(Candidate::new(p.clone(), m.clone()));
        }
        if !served {
            return Err(match provider_id {
                Some(p) => Error::not_found(format!("model '{model}' on provider {p}")),
                None => Error::not_found(format!("model '{model}'")),
            });
        }
        match (out.is_empty(), other_kind) {
            (true, Some(ModelKind::Embedding)) => {
                return Err(Error::invalid_param(
                    "model",
                    format!("model '{model}' is an embedding model; use /v1/embeddings"),
                ))
            }
            (true, Some(ModelKind::Chat)) => {
                return Err(Error::invalid_param(
                    "model",
                    format!("model '{model}' is a chat model; use /v1/chat/completions"),
                ))
            }
            (true, None) => {
                return Err(Error::PermissionDenied(format!(
                    "this key may not use model '{model}'"
                )))
            }
            (false, _) => {}
        }
        out.sort_by_key(|c| c.provider.record.id);
        Ok(out)
    }

    /// The models a key may use, one entry per distinct name (for `/v1/models`): name, provider
    /// name, creation time and kind (of the first provider listing the name).
    pub fn visible_models(
        &self,
        key: Option<&ClientKey>,
    ) -> Result<Vec<(String, String, i64, ModelKind)>> {
        let s = self.snapshot()?;
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for m in &s.models {
            let Some(&pi) = s.provider_index.get(&m.provider_id) else {
                continue;
            };
            let p = &s.providers[pi].record;
            if !p.enabled || s.broken_providers.contains(&p.id) {
                continue;
            }
            if let Some(k) = key {
                if !(k.provider_ids.is_empty() || k.provider_ids.contains(&m.provider_id)) {
                    continue;
                }
                if !(k.models.is_empty() || k.models.contains(&m.name)) {
                    continue;
                }
            }
            if seen.insert(m.name.clone()) {
                out.push((m.name.clone(), p.name.clone(), m.created_at, m.kind));
            }
        }
        // A group is listed when the key may use it and one of its members can serve.
        for g in &s.groups {
            for kind in ModelKind::ALL {
                if Self::route_group(&s, g, key, None, kind).is_ok() {
                    out.push((g.name.clone(), "group".to_owned(), g.created_at, kind));
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Labels for stats grouping.
    pub fn provider_name(&self, id: i64) -> Option<String> {
        let s = self.snapshot().ok()?;
        s.provider_index
            .get(&id)
            .map(|&i| s.providers[i].record.name.clone())
    }

    /// Labels for stats grouping.
    pub fn key_name(&self, id: i64) -> Option<String> {
        let s = self.snapshot().ok()?;
        s.keys
            .iter()
            .find(|k| k.id == id)
            .map(|k| format!("{} ({})", k.name, k.prefix))
    }

    /// Counts of providers, models and keys.
    pub fn counts(&self) -> Result<(usize, usize, usize)> {
        let s = self.snapshot()?;
        Ok((s.providers.len(), s.models.len(), s.keys.len()))
    }

    // ---- admin token and master key --------------------------------------------------------

    /// Makes sure an admin token exists. With `configured`, that token becomes the admin token;
    /// it must be at least [`MIN_ADMIN_TOKEN_LEN`] characters. Otherwise, when none is stored
    /// yet, a random one is generated, stored hashed and returned (the caller prints it once).
    pub fn ensure_admin_token(&self, configured: Option<&str>) -> Result<Option<String>> {
        let _w = self.s.write.lock().map_err(lock_err)?;
        let generated = if let Some(t) = configured.filter(|t| !t.is_empty()) {
            if t.chars().count() < MIN_ADMIN_TOKEN_LEN {
                return Err(Error::Config(format!(
                    "the configured admin token (NEXUS_ADMIN_TOKEN) is shorter than \
                     {MIN_ADMIN_TOKEN_LEN} characters; use a long random value"
                )));
            }
            self.s
                .store
                .meta_set(ADMIN_TOKEN_META, crypto::hash_secret(t).as_bytes())?;
            None
        } else if self.s.store.meta_get(ADMIN_TOKEN_META)?.is_some() {
            return Ok(None);
        } else {
            let t = crypto::generate_client_key()?.replacen("nx-", "nxa-", 1);
            self.s
                .store
                .meta_set(ADMIN_TOKEN_META, crypto::hash_secret(&t).as_bytes())?;
            Some(t)
        };
        self.s.reload()?;
        Ok(generated)
    }

    /// Checks an admin token against the hash cached in the snapshot: no database read, no
    /// lock beyond the snapshot's, and a constant-time comparison.
    pub fn verify_admin_token(&self, presented: &str) -> Result<bool> {
        let s = self.snapshot()?;
        let Some(stored) = s.admin_hash.as_deref() else {
            return Ok(false);
        };
        Ok(crypto::hash_secret(presented)
            .as_bytes()
            .ct_eq(stored)
            .into())
    }

    /// Re-encrypts every sealed value (upstream keys, provider headers) under `new` in one
    /// transaction, then uses it. Only safe when no other process has the database open (their
    /// registries would keep sealing under the old key): files served by `nexus-server` are
    /// rotated with [`rotate_master_key_at`], which makes sure of that.
    pub fn rotate_master_key(&self, new: MasterKey) -> Result<()> {
        let _w = self.s.write.lock().map_err(lock_err)?;
        let old = self.s.master.read().map_err(lock_err)?.clone();
        reseal_store(self.s.store.as_ref(), &old, &new)?;
        *self.s.master.write().map_err(lock_err)? = new;
        self.s.reload()
    }

    /// Records that keys were used (id, unix seconds).
    pub fn touch_keys(&self, uses: &[(i64, i64)]) -> Result<()> {
        self.s.store.touch_keys(uses)
    }
}

/// Re-seals everything under `new`, verifying each value opens under `new` before the commit.
fn reseal_store(store: &dyn Store, old: &MasterKey, new: &MasterKey) -> Result<usize> {
    let check = store
        .meta_get(MASTER_CHECK_META)?
        .ok_or_else(|| Error::Config("the database has no master key check value".into()))?;
    check_master(old, &check)?;
    store.reseal_all(&[MASTER_CHECK_META], &mut |sealed| {
        let plain = old.open(sealed)?;
        let resealed = new.seal(&plain)?;
        if new.open(&resealed)? != plain {
            return Err(Error::Internal(
                "a re-sealed value does not decrypt under the new key".into(),
            ));
        }
        Ok(resealed)
    })
}

/// Where the current master key of a database comes from, for [`rotate_master_key_at`].
#[derive(Debug, Clone)]
pub enum MasterKeySource {
    /// Given by the environment (`NEXUS_MASTER_KEY`): rotation cannot store the new key, so the
    /// caller must supply it and set it in the environment afterwards.
    Env(MasterKey),
    /// A key file (by default `<db>.key`), replaced by the new key on success.
    File(PathBuf),
}

/// What [`rotate_master_key_at`] did.
#[derive(Debug, Clone)]
pub struct Rotation {
    /// Fingerprint of the new key.
    pub fingerprint: String,
    /// How many sealed values were re-encrypted (upstream keys, header sets, the check value).
    pub resealed: usize,
    /// In key-file mode: the key file now holding the new key, and the file keeping the old one.
    pub key_file: Option<(PathBuf, PathBuf)>,
}

/// Re-keys the database at `db` from `current` to `new` (in key-file mode, a fresh random key
/// when `new` is `None`; in env mode `new` is required, since a key that is not handed back
/// would make every upstream key undecryptable).
///
/// Refuses with [`Error::Conflict`] while any other process (a server, a library user) has the
/// database open. In key-file mode the new key is first written to `<key>.new` (0600, synced);
/// then every sealed value is re-encrypted, verified and committed in one durable transaction;
/// then the old key is kept as `<key>.old` and `<key>.new` is renamed over the key file. If the
/// Prices are USD per million tokens: finite and not negative (a 400 naming the field).
/// Budgets are USD amounts: finite, not negative, and a soft threshold meant as an early
/// warning sits at or below the hard budget.
fn check_budgets(hard: Option<f64>, soft: Option<f64>) -> Result<()> {
    for (f, v) in [("budget_usd", hard), ("soft_budget_usd", soft)] {
        if v.is_some_and(|v| !v.is_finite() || !(0.0..=1e12).contains(&v)) {
            return Err(Error::invalid_param(
                f,
                format!("{f} must be a non-negative number of USD, or null for none"),
            ));
        }
    }
    if let (Some(h), Some(s)) = (hard, soft) {
        if s > h {
            return Err(Error::invalid_param(
                "soft_budget_usd",
                format!("soft_budget_usd ({s}) must not be above budget_usd ({h})"),
            ));
        }
    }
    Ok(())
}

fn check_prices(prices: &[(&str, Option<f64>)]) -> Result<()> {
    for (f, p) in prices {
        if p.is_some_and(|p| !p.is_finite() || p < 0.0) {
            return Err(Error::invalid_param(
                f,
                format!("{f} must be a non-negative number"),
            ));
        }
    }
    Ok(())
}

/// process dies after the commit and before the rename, `<key>.new` holds the key to use.
pub fn rotate_master_key_at(
    db: &Path,
    current: MasterKeySource,
    new: Option<MasterKey>,
) -> Result<Rotation> {
    let new = match (&current, new) {
        (_, Some(k)) => k,
        (MasterKeySource::File(_), None) => MasterKey::generate()?,
        (MasterKeySource::Env(_), None) => {
            return Err(Error::Config(
                "the current master key comes from the environment (NEXUS_MASTER_KEY), so a \
                 generated key could not be stored: set NEXUS_NEW_MASTER_KEY to the new key \
                 (base64 of 32 bytes, e.g. `openssl rand -base64 32`) and run again; nothing \
                 was changed"
                    .into(),
            ))
        }
    };
    if !db.exists() {
        return Err(Error::Config(format!(
            "database {} does not exist",
            db.display()
        )));
    }
    let store = SqliteStore::open_exclusive(db)?;
    let (old, files) = match &current {
        MasterKeySource::Env(k) => (k.clone(), None),
        MasterKeySource::File(f) => {
            let text = std::fs::read_to_string(f)
                .map_err(|e| Error::Config(format!("cannot read key file {}: {e}", f.display())))?;
            let staged = with_suffix(f, ".new");
            let kept = with_suffix(f, ".old");
            (
                MasterKey::from_base64(&text)?,
                Some((f.clone(), staged, kept)),
            )
        }
    };
    if let Some((_, staged, _)) = &files {
        crypto::write_private_file_replacing(staged, new.to_base64().as_bytes())?;
    }
    let resealed = match reseal_store(&store, &old, &new) {
        Ok(n) => n,
        Err(e) => {
            // Nothing was committed: the staged key would only mislead a later recovery.
            if let Some((_, staged, _)) = &files {
                let _ = std::fs::remove_file(staged);
            }
            return Err(e);
        }
    };
    // The exclusive lock (held by `store`) stays until the key file is promoted, so no server
    // can start in between with the old key file.
    let key_file = match files {
        None => None,
        Some((file, staged, kept)) => {
            crypto::write_private_file_replacing(&kept, old.to_base64().as_bytes())?;
            std::fs::rename(&staged, &file).map_err(|e| {
                Error::Config(format!(
                    "the database is re-keyed, but {} could not replace {}: {e}; \
                     rename it by hand",
                    staged.display(),
                    file.display()
                ))
            })?;
            crypto::sync_parent_dir(&file)?;
            Some((file, kept))
        }
    };
    drop(store);
    Ok(Rotation {
        fingerprint: new.fingerprint(),
        resealed,
        key_file,
    })
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// A limit of 0 would refuse every request: a limit is absent (`null`) or at least 1.
fn check_limits(rpm: Option<u32>, tpm: Option<u32>, max_concurrent: Option<u32>) -> Result<()> {
    for (name, v) in [
        ("rpm", rpm),
        ("tpm", tpm),
        ("max_concurrent", max_concurrent),
    ] {
        if v == Some(0) {
            return Err(Error::invalid_param(
                name,
                format!("`{name}` must be at least 1, or null for no limit"),
            ));
        }
    }
    Ok(())
}
