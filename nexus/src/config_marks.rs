//! Which registry objects a configuration file declares (`nexus-server apply`, `--config`).
//!
//! The next apply overwrites an edit made to them anywhere else (the admin UI, the API), so the
//! UI marks them and says so. The marks are the names of the last file applied, kept as one
//! metadata value: the file names objects by name, and so do the marks.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::store::Store;

const META: &str = "config_managed";

/// A model declared under a provider.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ManagedModel {
    /// The provider's name.
    pub provider: String,
    /// The model's name.
    pub name: String,
}

/// The objects the last applied configuration file declares, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigMarks {
    /// Providers.
    pub providers: Vec<String>,
    /// Models, with their providers.
    pub models: Vec<ManagedModel>,
    /// Model groups.
    pub groups: Vec<String>,
    /// Client keys (their scopes, limits and budgets).
    pub keys: Vec<String>,
    /// When the file was last applied (unix seconds); `None` when none ever was.
    pub applied_at: Option<i64>,
}

impl ConfigMarks {
    /// Whether it marks nothing.
    pub fn is_empty(&self) -> bool {
        self.providers.is_empty()
            && self.models.is_empty()
            && self.groups.is_empty()
            && self.keys.is_empty()
    }
}

/// The marks stored by the last apply (none when nothing was ever applied).
pub fn load(store: &dyn Store) -> Result<ConfigMarks> {
    match store.meta_get(META)? {
        None => Ok(ConfigMarks::default()),
        Some(raw) => serde_json::from_slice(&raw)
            .map_err(|e| Error::Storage(format!("config marks cannot be decoded: {e}"))),
    }
}

/// Stores `marks`, unless they are what is stored already (a second apply of the same file
/// writes nothing).
pub fn save(store: &dyn Store, mut marks: ConfigMarks, now: i64) -> Result<()> {
    let current = load(store).unwrap_or_default();
    let same = ConfigMarks {
        applied_at: current.applied_at,
        ..marks.clone()
    };
    if current.applied_at.is_some() && same == current {
        return Ok(());
    }
    marks.applied_at = Some(now);
    let raw = serde_json::to_vec(&marks).map_err(|e| Error::Internal(e.to_string()))?;
    store.meta_set(META, &raw)
}
