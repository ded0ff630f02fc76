//! Model groups on SQLite: one row per group, its members a JSON array of model names.

use rusqlite::{params, Connection};

use crate::error::{Error, Result};
use crate::records::ModelGroup;

/// Every group, by id. A member list that does not decode makes the group empty (it then
/// routes nowhere and says so) rather than failing the registry load.
pub(super) fn load(c: &Connection) -> Result<Vec<ModelGroup>> {
    let mut st = c.prepare(
        "SELECT id, name, members, description, created_at FROM model_groups ORDER BY id",
    )?;
    let rows = st
        .query_map([], |r| {
            let members: String = r.get(2)?;
            Ok(ModelGroup {
                id: r.get(0)?,
                name: r.get(1)?,
                models: serde_json::from_str(&members).unwrap_or_default(),
                description: r.get(3)?,
                created_at: r.get(4)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

fn members(g: &ModelGroup) -> Result<String> {
    serde_json::to_string(&g.models).map_err(|e| Error::Internal(format!("group members: {e}")))
}

/// Inserts `g` (its id ignored); returns the new id.
pub(super) fn insert(c: &Connection, g: &ModelGroup) -> Result<i64> {
    c.execute(
        "INSERT INTO model_groups (name, members, description, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![g.name, members(g)?, g.description, g.created_at],
    )?;
    Ok(c.last_insert_rowid())
}

/// Rewrites group `g.id`; false when there is none.
pub(super) fn update(c: &Connection, g: &ModelGroup) -> Result<bool> {
    Ok(c.execute(
        "UPDATE model_groups SET name = ?1, members = ?2, description = ?3 WHERE id = ?4",
        params![g.name, members(g)?, g.description, g.id],
    )? > 0)
}

/// Deletes group `id`; false when there is none.
pub(super) fn delete(c: &Connection, id: i64) -> Result<bool> {
    Ok(c.execute("DELETE FROM model_groups WHERE id = ?1", [id])? > 0)
}
