//! Provider key pools on SQLite: the keys a provider holds beyond its own (which stays on the
//! provider row, with its pool state in `key_weight`, `key_enabled` and `key_set_aside`).

use rusqlite::{params, Connection};

use crate::error::Result;
use crate::records::PoolKey;
use crate::store::StoredPoolKey;

/// Every pool key of every provider, by id.
pub(super) fn load(c: &Connection) -> Result<Vec<StoredPoolKey>> {
    let mut st = c.prepare(
        "SELECT id, provider_id, name, sealed_key, key_hint, weight, enabled, set_aside,
                created_at, updated_at
         FROM provider_keys ORDER BY id",
    )?;
    let rows = st
        .query_map([], |r| {
            Ok(StoredPoolKey {
                record: PoolKey {
                    id: r.get(0)?,
                    provider_id: r.get(1)?,
                    name: r.get(2)?,
                    hint: r.get(4)?,
                    weight: r.get(5)?,
                    enabled: r.get(6)?,
                    set_aside: r.get(7)?,
                    cooling_seconds: None,
                    created_at: r.get(8)?,
                    updated_at: r.get(9)?,
                },
                sealed_key: r.get(3)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Inserts `k` (its id ignored); returns the new id.
pub(super) fn insert(c: &Connection, k: &StoredPoolKey) -> Result<i64> {
    let r = &k.record;
    c.execute(
        "INSERT INTO provider_keys (provider_id, name, sealed_key, key_hint, weight, enabled,
             set_aside, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            r.provider_id,
            r.name,
            k.sealed_key,
            r.hint,
            r.weight,
            r.enabled,
            r.set_aside,
            r.created_at,
            r.updated_at
        ],
    )?;
    Ok(c.last_insert_rowid())
}

/// Rewrites pool key `k.record.id` of its provider; false when there is none.
pub(super) fn update(c: &Connection, k: &StoredPoolKey) -> Result<bool> {
    let r = &k.record;
    Ok(c.execute(
        "UPDATE provider_keys SET name = ?3, sealed_key = ?4, key_hint = ?5, weight = ?6,
             enabled = ?7, set_aside = ?8, updated_at = ?9
         WHERE id = ?1 AND provider_id = ?2",
        params![
            r.id,
            r.provider_id,
            r.name,
            k.sealed_key,
            r.hint,
            r.weight,
            r.enabled,
            r.set_aside,
            r.updated_at
        ],
    )? > 0)
}

/// Deletes pool key `id` of `provider_id`; false when there is none.
pub(super) fn delete(c: &Connection, provider_id: i64, id: i64) -> Result<bool> {
    Ok(c.execute(
        "DELETE FROM provider_keys WHERE id = ?1 AND provider_id = ?2",
        params![id, provider_id],
    )? > 0)
}
