//! Model groups in the registry: their rules, their CRUD, and how a group's name routes.
//!
//! - A group's name is never also a model's name (either way round), so a name always means
//!   one thing; a group's members are model names the registry serves, never other groups (no
//!   cycles, no surprises), at most 16, each once.
//! - Routing a group gives each member's candidates in the group's order (a member served by
//!   several providers keeps its own weighted rotation inside its run), so failover tries the
//!   first member everywhere it is served before the second, as `smart` → `backup` expects.
//! - A member the key may not use, or that no enabled provider serves right now, is skipped; a
//!   group none of whose members can serve is the first member's error.

use crate::error::{Error, Result};
use crate::records::ClientKey;
use crate::records::{validate_name, GroupPatch, ModelGroup, ModelKind, NewGroup};
use crate::registry::{lock_err, Candidate, Registry, Snapshot};
use crate::time::now_ms;

/// The most members a group may have.
pub const MAX_MEMBERS: usize = 16;

impl Registry {
    /// Every model group, by id.
    pub fn groups(&self) -> Result<Vec<ModelGroup>> {
        Ok(self.snapshot()?.groups.clone())
    }

    /// One model group.
    pub fn group(&self, id: i64) -> Result<ModelGroup> {
        self.snapshot()?
            .groups
            .iter()
            .find(|g| g.id == id)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("model group {id}")))
    }

    /// Creates a model group.
    pub fn create_group(&self, g: NewGroup) -> Result<ModelGroup> {
        let _w = self.s.write.lock().map_err(lock_err)?;
        let mut group = ModelGroup {
            id: 0,
            name: g.name,
            models: g.models,
            description: g.description,
            created_at: now_ms() / 1000,
        };
        self.check_group(&group)?;
        group.id = self.s.store.insert_group(&group).map_err(|e| match e {
            Error::Conflict(_) => {
                Error::Conflict(format!("a model group named '{}' exists", group.name))
            }
            e => e,
        })?;
        self.s.reload()?;
        Ok(group)
    }

    /// Updates a model group.
    pub fn update_group(&self, id: i64, p: GroupPatch) -> Result<ModelGroup> {
        let _w = self.s.write.lock().map_err(lock_err)?;
        let mut g = self.group(id)?;
        if let Some(n) = p.name {
            g.name = n;
        }
        if let Some(m) = p.models {
            g.models = m;
        }
        if let Some(d) = p.description {
            g.description = d;
        }
        self.check_group(&g)?;
        let found = self.s.store.update_group(&g).map_err(|e| match e {
            Error::Conflict(_) => {
                Error::Conflict(format!("a model group named '{}' exists", g.name))
            }
            e => e,
        })?;
        if !found {
            return Err(Error::not_found(format!("model group {id}")));
        }
        self.s.reload()?;
        Ok(g)
    }

    /// Deletes a model group.
    pub fn delete_group(&self, id: i64) -> Result<()> {
        let _w = self.s.write.lock().map_err(lock_err)?;
        if !self.s.store.delete_group(id)? {
            return Err(Error::not_found(format!("model group {id}")));
        }
        self.s.reload()
    }

    /// Whether `name` is a group's (a model may not take it).
    pub(crate) fn is_group_name(&self, name: &str) -> Result<bool> {
        Ok(self.snapshot()?.groups_by_name.contains_key(name))
    }

    fn check_group(&self, g: &ModelGroup) -> Result<()> {
        validate_name("name", &g.name)?;
        let s = self.snapshot()?;
        if s.models_by_name.contains_key(&g.name) {
            return Err(Error::invalid_param(
                "name",
                format!(
                    "'{}' is a model's name; a group needs a name of its own",
                    g.name
                ),
            ));
        }
        if g.models.is_empty() || g.models.len() > MAX_MEMBERS {
            return Err(Error::invalid_param(
                "models",
                format!("a group has 1 to {MAX_MEMBERS} models"),
            ));
        }
        for (i, m) in g.models.iter().enumerate() {
            if g.models[..i].contains(m) {
                return Err(Error::invalid_param(
                    "models",
                    format!("'{m}' is listed twice"),
                ));
            }
            if !s.models_by_name.contains_key(m) {
                let why = if s.groups_by_name.contains_key(m) {
                    format!("'{m}' is a group; a group's members are models")
                } else {
                    format!("no provider serves a model named '{m}'")
                };
                return Err(Error::invalid_param("models", why));
            }
        }
        Ok(())
    }

    /// The candidates of group `g`: each member's, in the group's order.
    pub(super) fn route_group(
        s: &Snapshot,
        g: &ModelGroup,
        key: Option<&ClientKey>,
        provider_id: Option<i64>,
        kind: ModelKind,
    ) -> Result<Vec<Candidate>> {
        let mut out = Vec::new();
        let mut first_err = None;
        for m in &g.models {
            match Self::route_model(s, key, m, Some(&g.name), provider_id, kind) {
                Ok(c) => out.extend(c),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if out.is_empty() {
            return Err(
                first_err.unwrap_or_else(|| Error::not_found(format!("model '{}'", g.name)))
            );
        }
        Ok(out)
    }
}
