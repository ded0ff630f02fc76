//! Provider key pools in the registry: the keys a provider holds, their rules and their CRUD.
//!
//! - Member `0` is the provider's own key (set and changed with the provider); added keys are
//!   numbered by their row ids. Each is sealed like the provider's key, listed by its hint only.
//! - A key is in use when it is enabled and not set aside. The hub sets a key aside after its
//!   upstream refused it (401/403), with the reason; it stays aside until an operator enables it
//!   again. The pool's last key in use is never set aside or disabled: a provider whose only
//!   key is refused fails like any provider with a bad key (its cooldown, its health checks),
//!   instead of being emptied by one bad answer.

use crate::crypto::{self, MasterKey};
use crate::error::{Error, Result};
use crate::records::{
    validate_name, NewPoolKey, PoolKey, PoolKeyPatch, ProviderEventKind, MAX_KEY_WEIGHT,
};
use crate::registry::{lock_err, PoolMember, Registry, Secret};
use crate::store::{StoredPoolKey, StoredProvider};
use crate::time::now_ms;

/// The most keys one provider's pool holds (its own key included).
pub const MAX_POOL_KEYS: usize = 64;

/// The name member 0 is listed under.
const PRIMARY_NAME: &str = "primary";

/// A provider's pool for the snapshot: the members in use (never empty) and every member as
/// listed. A pool key that cannot be unsealed is listed as set aside and never sent.
pub(super) fn members(
    master: &MasterKey,
    p: &StoredProvider,
    primary: Secret,
    added: Vec<StoredPoolKey>,
) -> Result<(Vec<PoolMember>, Vec<PoolKey>)> {
    let mut listed = vec![primary_record(p)];
    let mut pool = Vec::with_capacity(1 + added.len());
    if p.primary.enabled && p.primary.set_aside.is_none() {
        pool.push(PoolMember {
            id: 0,
            key: primary.clone(),
            weight: p.primary.weight.max(1),
        });
    }
    for k in added {
        let mut rec = k.record;
        if rec.active() {
            match master.open(&k.sealed_key).map(String::from_utf8) {
                Ok(Ok(key)) => pool.push(PoolMember {
                    id: rec.id,
                    key: Secret(key.into()),
                    weight: rec.weight.max(1),
                }),
                _ => {
                    tracing::error!(
                        provider = p.id,
                        pool_key = rec.id,
                        "pool key cannot be unsealed; not sent"
                    );
                    rec.set_aside = Some("the stored key cannot be unsealed".into());
                }
            }
        }
        listed.push(rec);
    }
    if pool.is_empty() {
        pool.push(PoolMember {
            id: 0,
            key: primary,
            weight: 1,
        });
    }
    Ok((pool, listed))
}

fn primary_record(p: &StoredProvider) -> PoolKey {
    PoolKey {
        id: 0,
        provider_id: p.id,
        name: PRIMARY_NAME.into(),
        hint: p.key_hint.clone(),
        weight: p.primary.weight,
        enabled: p.primary.enabled,
        set_aside: p.primary.set_aside.clone(),
        cooling_seconds: None,
        created_at: p.created_at,
        updated_at: p.updated_at,
    }
}

fn validate_weight(w: u32) -> Result<u32> {
    if (1..=MAX_KEY_WEIGHT).contains(&w) {
        Ok(w)
    } else {
        Err(Error::invalid_param(
            "weight",
            format!("weight must be between 1 and {MAX_KEY_WEIGHT}"),
        ))
    }
}

/// A provider's stored pool: its row and its added keys.
struct StoredPool {
    provider: StoredProvider,
    added: Vec<StoredPoolKey>,
}

impl StoredPool {
    fn active(&self) -> usize {
        let primary = self.provider.primary.enabled && self.provider.primary.set_aside.is_none();
        primary as usize + self.added.iter().filter(|k| k.record.active()).count()
    }

    fn is_active(&self, id: i64) -> bool {
        if id == 0 {
            return self.provider.primary.enabled && self.provider.primary.set_aside.is_none();
        }
        self.added
            .iter()
            .any(|k| k.record.id == id && k.record.active())
    }

    fn added(&self, id: i64) -> Result<&StoredPoolKey> {
        self.added
            .iter()
            .find(|k| k.record.id == id)
            .ok_or_else(|| Error::not_found(format!("key {id} of provider {}", self.provider.id)))
    }
}

impl Registry {
    fn stored_pool(&self, provider_id: i64) -> Result<StoredPool> {
        let data = self.s.store.load_registry()?;
        let provider = data
            .providers
            .into_iter()
            .find(|p| p.id == provider_id)
            .ok_or_else(|| Error::not_found(format!("provider {provider_id}")))?;
        let added = data
            .pool_keys
            .into_iter()
            .filter(|k| k.record.provider_id == provider_id)
            .collect();
        Ok(StoredPool { provider, added })
    }

    /// A provider's key pool as listed (its own key first, as member 0); hints only.
    pub fn pool_keys(&self, provider_id: i64) -> Result<Vec<PoolKey>> {
        self.snapshot()?
            .pool_keys
            .get(&provider_id)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("provider {provider_id}")))
    }

    /// Adds a key to a provider's pool.
    pub fn add_pool_key(&self, provider_id: i64, k: NewPoolKey) -> Result<PoolKey> {
        let key = k.api_key.trim().to_owned();
        if key.is_empty() {
            return Err(Error::invalid_param("api_key", "api_key must not be empty"));
        }
        let weight = validate_weight(k.weight.unwrap_or(1))?;
        let name = match k.name {
            Some(n) => {
                validate_name("name", &n)?;
                n.trim().to_owned()
            }
            None => crypto::key_hint(&key),
        };
        let _w = self.s.write.lock().map_err(lock_err)?;
        let pool = self.stored_pool(provider_id)?;
        if 1 + pool.added.len() >= MAX_POOL_KEYS {
            return Err(Error::invalid(format!(
                "a provider holds at most {MAX_POOL_KEYS} keys"
            )));
        }
        let master = self.s.master.read().map_err(lock_err)?.clone();
        // The same key twice would only skew the weights.
        let duplicate = std::iter::once(&pool.provider.sealed_key)
            .chain(pool.added.iter().map(|a| &a.sealed_key))
            .any(|sealed| master.open(sealed).is_ok_and(|v| v == key.as_bytes()));
        if duplicate {
            return Err(Error::invalid_param(
                "api_key",
                "this key is already in the provider's pool",
            ));
        }
        let now = now_ms() / 1000;
        let mut stored = StoredPoolKey {
            record: PoolKey {
                id: 0,
                provider_id,
                name,
                hint: crypto::key_hint(&key),
                weight,
                enabled: k.enabled.unwrap_or(true),
                set_aside: None,
                cooling_seconds: None,
                created_at: now,
                updated_at: now,
            },
            sealed_key: master.seal(key.as_bytes())?,
        };
        stored.record.id = self.s.store.insert_pool_key(&stored)?;
        self.s.reload()?;
        Ok(stored.record)
    }

    /// Changes a pool key. Enabling one that was set aside puts it back in use; disabling the
    /// pool's last key in use is refused (disable the provider instead).
    pub fn update_pool_key(
        &self,
        provider_id: i64,
        id: i64,
        patch: PoolKeyPatch,
    ) -> Result<PoolKey> {
        let weight = patch.weight.map(validate_weight).transpose()?;
        if let Some(n) = &patch.name {
            validate_name("name", n)?;
        }
        let _w = self.s.write.lock().map_err(lock_err)?;
        let mut pool = self.stored_pool(provider_id)?;
        if patch.enabled == Some(false) && pool.is_active(id) && pool.active() == 1 {
            return Err(Error::invalid_param(
                "enabled",
                "this is the pool's last key in use: disable the provider instead",
            ));
        }
        let now = now_ms() / 1000;
        if id == 0 {
            if patch.api_key.is_some() {
                return Err(Error::invalid_param(
                    "api_key",
                    "key 0 is the provider's own key: change it with the provider's api_key",
                ));
            }
            if patch.name.is_some() {
                return Err(Error::invalid_param(
                    "name",
                    "key 0 is the provider's own key and is always named primary",
                ));
            }
            let p = &mut pool.provider;
            if let Some(w) = weight {
                p.primary.weight = w;
            }
            if let Some(e) = patch.enabled {
                p.primary.enabled = e;
                p.primary.set_aside = None;
            }
            p.updated_at = now;
            self.s.store.update_provider(p)?;
        } else {
            let mut k = pool.added(id)?.clone();
            if let Some(key) = patch.api_key.map(|k| k.trim().to_owned()) {
                if key.is_empty() {
                    return Err(Error::invalid_param("api_key", "api_key must not be empty"));
                }
                let master = self.s.master.read().map_err(lock_err)?.clone();
                k.sealed_key = master.seal(key.as_bytes())?;
                k.record.hint = crypto::key_hint(&key);
                // A new value is a new chance.
                k.record.set_aside = None;
            }
            if let Some(n) = patch.name {
                k.record.name = n.trim().to_owned();
            }
            if let Some(w) = weight {
                k.record.weight = w;
            }
            if let Some(e) = patch.enabled {
                k.record.enabled = e;
                k.record.set_aside = None;
            }
            k.record.updated_at = now;
            self.s.store.update_pool_key(&k)?;
        }
        self.s.reload()?;
        self.pool_keys(provider_id)?
            .into_iter()
            .find(|k| k.id == id)
            .ok_or_else(|| Error::not_found(format!("key {id} of provider {provider_id}")))
    }

    /// Removes an added key from a provider's pool (key 0 goes only with the provider).
    pub fn delete_pool_key(&self, provider_id: i64, id: i64) -> Result<()> {
        if id == 0 {
            return Err(Error::invalid(
                "key 0 is the provider's own key: it goes only with the provider",
            ));
        }
        let _w = self.s.write.lock().map_err(lock_err)?;
        let pool = self.stored_pool(provider_id)?;
        pool.added(id)?;
        if pool.is_active(id) && pool.active() == 1 {
            return Err(Error::invalid(
                "this is the pool's last key in use: enable another one first",
            ));
        }
        self.s.store.delete_pool_key(provider_id, id)?;
        self.s.reload()
    }

    /// Sets a pool key aside after its upstream refused it. Returns false, changing nothing,
    /// when it is already aside, unknown, or the pool's last key in use.
    pub fn set_pool_key_aside(&self, provider_id: i64, id: i64, reason: &str) -> Result<bool> {
        let _w = self.s.write.lock().map_err(lock_err)?;
        let mut pool = self.stored_pool(provider_id)?;
        if !pool.is_active(id) || pool.active() <= 1 {
            return Ok(false);
        }
        let now = now_ms() / 1000;
        let (name, hint) = if id == 0 {
            let p = &mut pool.provider;
            p.primary.set_aside = Some(reason.to_owned());
            p.updated_at = now;
            self.s.store.update_provider(p)?;
            (PRIMARY_NAME.to_owned(), p.key_hint.clone())
        } else {
            let mut k = pool.added(id)?.clone();
            k.record.set_aside = Some(reason.to_owned());
            k.record.updated_at = now;
            self.s.store.update_pool_key(&k)?;
            (k.record.name, k.record.hint)
        };
        self.event(
            &pool.provider,
            ProviderEventKind::KeySetAside,
            &format!("key {id} ({name}, {hint}) set aside: {reason}"),
        );
        self.s.reload()?;
        Ok(true)
    }
}
