//! The provider registry: providers, models, client keys and the admin token, kept in the store
//! and mirrored in an immutable in-memory snapshot.
//!
//! The request path (authenticate, route) reads only the snapshot: no database round trip, no
//! lock held across an await. Every write goes to the store first and then rebuilds the snapshot,
//! so the snapshot is never ahead of what is durable.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use crate::crypto::{self, MasterKey};
use crate::error::{Error, Result};
use crate::now_ms;
use crate::records::{
    chat_endpoint, validate_base_url, validate_name, ClientKey, CreatedKey, KeyPatch, Model,
    ModelPatch, NewKey, NewModel, NewProvider, Provider, ProviderPatch,
};
use crate::store::{Store, StoredKey, StoredProvider};

const MASTER_CHECK_META: &str = "master_key_check";
const MASTER_CHECK_TEXT: &[u8] = b"nexus master key check v1";
const ADMIN_TOKEN_META: &str = "admin_token_hash";

/// A secret string whose `Debug` never shows it.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
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

/// A provider ready to be called: its record, endpoint and decrypted key.
#[derive(Debug, Clone)]
pub struct ProviderEntry {
    /// The public record.
    pub record: Provider,
    /// The upstream key.
    pub api_key: Secret,
    /// `record.endpoint` parsed once here rather than on every request (URL parsing was ~3% of
    /// the gateway's CPU).
    pub(crate) endpoint_url: Option<reqwest::Url>,
}

/// One way to serve a request: a provider and the model entry on it.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The provider.
    pub provider: Arc<ProviderEntry>,
    /// The model on that provider.
    pub model: Model,
}

#[derive(Debug, Default)]
struct Snapshot {
    providers: Vec<Arc<ProviderEntry>>,
    provider_index: HashMap<i64, usize>,
    models: Vec<Model>,
    models_by_name: HashMap<String, Vec<usize>>,
    keys: Vec<ClientKey>,
    keys_by_hash: HashMap<String, usize>,
}

/// The registry. Cheap to share behind an `Arc`.
pub struct Registry {
    store: Arc<dyn Store>,
    master: RwLock<MasterKey>,
    snap: RwLock<Arc<Snapshot>>,
    // Serializes writers so a read-modify-write of a row cannot interleave with another.
    write: Mutex<()>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

fn lock_err<T>(_: T) -> Error {
    Error::Internal("registry lock poisoned".into())
}

impl Registry {
    /// Opens the registry over `store`, checking that `master` opens this database's secrets.
    pub fn open(store: Arc<dyn Store>, master: MasterKey) -> Result<Self> {
        match store.meta_get(MASTER_CHECK_META)? {
            Some(sealed) => {
                if master.open(&sealed)? != MASTER_CHECK_TEXT {
                    return Err(Error::Config("master key check value is corrupt".into()));
                }
            }
            None => store.meta_set(MASTER_CHECK_META, &master.seal(MASTER_CHECK_TEXT)?)?,
        }
        let reg = Registry {
            store,
            master: RwLock::new(master),
            snap: RwLock::new(Arc::new(Snapshot::default())),
            write: Mutex::new(()),
        };
        reg.reload()?;
        Ok(reg)
    }

    /// The store underneath.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Rebuilds the snapshot from the store (also picks up writes by other replicas).
    pub fn reload(&self) -> Result<()> {
        let data = self.store.load_registry()?;
        let master = self.master.read().map_err(lock_err)?.clone();
        let mut snap = Snapshot::default();
        let mut counts: HashMap<i64, usize> = HashMap::new();
        for m in &data.models {
            *counts.entry(m.provider_id).or_default() += 1;
        }
        for p in data.providers {
            let key = String::from_utf8(master.open(&p.sealed_key)?)
                .map_err(|_| Error::Storage("upstream key is not UTF-8".into()))?;
            snap.provider_index.insert(p.id, snap.providers.len());
            let endpoint = chat_endpoint(&p.base_url);
            snap.providers.push(Arc::new(ProviderEntry {
                endpoint_url: reqwest::Url::parse(&endpoint).ok(),
                record: Provider {
                    id: p.id,
                    endpoint,
                    name: p.name,
                    base_url: p.base_url,
                    api_key_hint: p.key_hint,
                    description: p.description,
                    enabled: p.enabled,
                    options: p.options,
                    created_at: p.created_at,
                    updated_at: p.updated_at,
                    model_count: counts.get(&p.id).copied().unwrap_or(0),
                },
                api_key: Secret(key),
            }));
        }
        for (i, m) in data.models.into_iter().enumerate() {
            snap.models_by_name
                .entry(m.name.clone())
                .or_default()
                .push(i);
            snap.models.push(m);
        }
        for (i, k) in data.keys.into_iter().enumerate() {
            snap.keys_by_hash.insert(k.hash, i);
            snap.keys.push(k.record);
        }
        *self.snap.write().map_err(lock_err)? = Arc::new(snap);
        Ok(())
    }

    fn snapshot(&self) -> Result<Arc<Snapshot>> {
        Ok(self.snap.read().map_err(lock_err)?.clone())
    }

    fn stored_provider(&self, id: i64) -> Result<StoredProvider> {
        self.store
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
        let _w = self.write.lock().map_err(lock_err)?;
        let now = now_ms() / 1000;
        let sealed = self
            .master
            .read()
            .map_err(lock_err)?
            .seal(p.api_key.as_bytes())?;
        let id = self.store.insert_provider(&StoredProvider {
            id: 0,
            name: p.name.trim().to_owned(),
            base_url: p.base_url.trim().to_owned(),
            sealed_key: sealed,
            key_hint: crypto::key_hint(&p.api_key),
            description: p.description,
            enabled: p.enabled.unwrap_or(true),
            options: p.options,
            created_at: now,
            updated_at: now,
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
        let data = self.store.load_registry()?;
        if let Some(k) = data.keys.into_iter().find(|k| k.hash == hash) {
            let mut rec = k.record;
            // An empty scope means "all providers": it already covers this one.
            if !rec.provider_ids.is_empty() && !rec.provider_ids.contains(&provider_id) {
                rec.provider_ids.push(provider_id);
                self.store.update_key(&rec)?;
            }
            return Ok(());
        }
        self.store.insert_key(&StoredKey {
            hash,
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
                created_at: now_ms() / 1000,
                last_used_at: None,
            },
        })?;
        Ok(())
    }

    /// Updates a provider.
    pub fn update_provider(&self, id: i64, patch: ProviderPatch) -> Result<Provider> {
        let _w = self.write.lock().map_err(lock_err)?;
        let mut p = self.stored_provider(id)?;
        if let Some(n) = patch.name {
            validate_name("name", &n)?;
            p.name = n.trim().to_owned();
        }
        if let Some(u) = patch.base_url {
            validate_base_url(&u)?;
            p.base_url = u.trim().to_owned();
        }
        if let Some(k) = patch.api_key.filter(|k| !k.is_empty()) {
            p.sealed_key = self.master.read().map_err(lock_err)?.seal(k.as_bytes())?;
            p.key_hint = crypto::key_hint(&k);
        }
        if let Some(d) = patch.description {
            p.description = d;
        }
        if let Some(e) = patch.enabled {
            p.enabled = e;
        }
        if let Some(o) = patch.options {
            p.options = o;
        }
        p.updated_at = now_ms() / 1000;
        self.store.update_provider(&p)?;
        if let Some(pk) = patch.personalized_key.filter(|k| !k.is_empty()) {
            self.attach_legacy_key(&pk, id, &p.name)?;
        }
        self.reload()?;
        self.provider(id)
    }

    /// Deletes a provider and its models.
    pub fn delete_provider(&self, id: i64) -> Result<()> {
        let _w = self.write.lock().map_err(lock_err)?;
        if !self.store.delete_provider(id)? {
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

    /// Adds a model to a provider.
    pub fn create_model(&self, provider_id: i64, m: NewModel) -> Result<Model> {
        validate_name("name", &m.name)?;
        if let Some(u) = &m.upstream_name {
            validate_name("upstream_name", u)?;
        }
        for (f, p) in [
            ("input_price", m.input_price),
            ("output_price", m.output_price),
        ] {
            if p.is_some_and(|p| !p.is_finite() || p < 0.0) {
                return Err(Error::invalid_param(
                    f,
                    format!("{f} must be a non-negative number"),
                ));
            }
        }
        let _w = self.write.lock().map_err(lock_err)?;
        self.provider(provider_id)?;
        let id = self
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

    /// Updates a model.
    pub fn update_model(&self, id: i64, patch: ModelPatch) -> Result<Model> {
        if let Some(n) = &patch.name {
            validate_name("name", n)?;
        }
        let _w = self.write.lock().map_err(lock_err)?;
        if !self.store.update_model(id, &patch)? {
            return Err(Error::not_found(format!("model id {id}")));
        }
        self.reload()?;
        self.model(id)
    }

    /// Deletes a model.
    pub fn delete_model(&self, id: i64) -> Result<()> {
        let _w = self.write.lock().map_err(lock_err)?;
        if !self.store.delete_model(id)? {
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
        let _w = self.write.lock().map_err(lock_err)?;
        let s = self.snapshot()?;
        for pid in &k.provider_ids {
            if !s.provider_index.contains_key(pid) {
                return Err(Error::invalid_param(
                    "provider_ids",
                    format!("provider {pid} does not exist"),
                ));
            }
        }
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
            created_at: now_ms() / 1000,
            last_used_at: None,
        };
        let id = self.store.insert_key(&StoredKey {
            hash: crypto::hash_secret(&plaintext),
            record,
        })?;
        self.reload()?;
        Ok(CreatedKey {
            key: plaintext,
            record: self.key(id)?,
        })
    }

    /// Updates a key.
    pub fn update_key(&self, id: i64, p: KeyPatch) -> Result<ClientKey> {
        let _w = self.write.lock().map_err(lock_err)?;
        let mut k = self.key(id)?;
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
        if let Some(v) = p.provider_ids {
            k.provider_ids = v;
        }
        if let Some(v) = p.models {
            k.models = v;
        }
        self.store.update_key(&k)?;
        self.reload()?;
        self.key(id)
    }

    /// Deletes (revokes) a key.
    pub fn delete_key(&self, id: i64) -> Result<()> {
        let _w = self.write.lock().map_err(lock_err)?;
        if !self.store.delete_key(id)? {
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

    /// The providers serving `model` that `key` (None = unrestricted admin) may use, in a
    /// deterministic order (by provider id). `provider_id` pins one provider.
    pub fn route(
        &self,
        key: Option<&ClientKey>,
        model: &str,
        provider_id: Option<i64>,
    ) -> Result<Vec<Candidate>> {
        let s = self.snapshot()?;
        let all = s
            .models_by_name
            .get(model)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let mut served = false;
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
            if !p.record.enabled {
                continue;
            }
            served = true;
            if let Some(k) = key {
                let provider_ok =
                    k.provider_ids.is_empty() || k.provider_ids.contains(&m.provider_id);
                let model_ok = k.models.is_empty() || k.models.iter().any(|n| n == model);
                if !(provider_ok && model_ok) {
                    continue;
                }
            }
            out.push(Candidate {
                provider: p.clone(),
                model: m.clone(),
            });
        }
        if !served {
            return Err(match provider_id {
                Some(p) => Error::not_found(format!("model '{model}' on provider {p}")),
                None => Error::not_found(format!("model '{model}'")),
            });
        }
        if out.is_empty() {
            return Err(Error::PermissionDenied(format!(
                "this key may not use model '{model}'"
            )));
        }
        out.sort_by_key(|c| c.provider.record.id);
        Ok(out)
    }

    /// The models a key may use, one entry per distinct name (for `/v1/models`).
    pub fn visible_models(&self, key: Option<&ClientKey>) -> Result<Vec<(String, String, i64)>> {
        let s = self.snapshot()?;
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for m in &s.models {
            let Some(&pi) = s.provider_index.get(&m.provider_id) else {
                continue;
            };
            let p = &s.providers[pi].record;
            if !p.enabled {
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
                out.push((m.name.clone(), p.name.clone(), m.created_at));
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

    /// Makes sure an admin token exists. With `configured`, that token becomes the admin token.
    /// Otherwise, when none is stored yet, a random one is generated, stored hashed and returned
    /// (the caller prints it once).
    pub fn ensure_admin_token(&self, configured: Option<&str>) -> Result<Option<String>> {
        if let Some(t) = configured.filter(|t| !t.is_empty()) {
            self.store
                .meta_set(ADMIN_TOKEN_META, crypto::hash_secret(t).as_bytes())?;
            return Ok(None);
        }
        if self.store.meta_get(ADMIN_TOKEN_META)?.is_some() {
            return Ok(None);
        }
        let t = crypto::generate_client_key()?.replacen("nx-", "nxa-", 1);
        self.store
            .meta_set(ADMIN_TOKEN_META, crypto::hash_secret(&t).as_bytes())?;
        Ok(Some(t))
    }

    /// Checks an admin token.
    pub fn verify_admin_token(&self, presented: &str) -> Result<bool> {
        let stored = self.store.meta_get(ADMIN_TOKEN_META)?;
        Ok(stored.is_some_and(|h| h == crypto::hash_secret(presented).as_bytes()))
    }

    /// Re-encrypts every upstream key under `new` in one transaction, then uses it.
    pub fn rotate_master_key(&self, new: MasterKey) -> Result<()> {
        let _w = self.write.lock().map_err(lock_err)?;
        let old = self.master.read().map_err(lock_err)?.clone();
        let data = self.store.load_registry()?;
        let mut resealed = Vec::with_capacity(data.providers.len());
        for p in &data.providers {
            resealed.push((p.id, new.seal(&old.open(&p.sealed_key)?)?));
        }
        self.store
            .reseal(&resealed, &new.seal(MASTER_CHECK_TEXT)?)?;
        *self.master.write().map_err(lock_err)? = new;
        self.reload()
    }

    /// Records that keys were used (id, unix seconds).
    pub fn touch_keys(&self, uses: &[(i64, i64)]) -> Result<()> {
        self.store.touch_keys(uses)
    }
}
