//! Responses kept for `previous_response_id` and `GET /v1/responses/{id}`: one row per
//! response in the store, readable only by the key that made it. The store is synchronous
//! (SQLite), so every call runs on tokio's blocking pool.

use std::sync::Arc;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::store::{Store, StoredResponse};

/// The stored responses of one store.
#[derive(Clone)]
pub(crate) struct ResponseStore(pub(crate) Arc<dyn Store>);

impl ResponseStore {
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let s = self.0.clone();
        tokio::task::spawn_blocking(move || f(s.as_ref()))
            .await
            .map_err(|e| Error::Internal(format!("response store task failed: {e}")))?
    }

    /// Keeps a response.
    pub(crate) async fn put(&self, r: StoredResponse) -> Result<()> {
        self.blocking(move |s| s.put_response(&r)).await
    }

    /// The response `id` of `owner`, or 404: another key's response is as missing as one that
    /// never was (ids must not be probed).
    pub(crate) async fn get(&self, id: &str, owner: i64) -> Result<StoredResponse> {
        let key = id.to_owned();
        self.blocking(move |s| s.get_response(&key, owner))
            .await?
            .ok_or_else(|| Error::not_found(format!("response '{id}'")))
    }

    /// Deletes the response `id` of `owner`, or 404.
    pub(crate) async fn delete(&self, id: &str, owner: i64) -> Result<()> {
        let key = id.to_owned();
        if self
            .blocking(move |s| s.delete_response(&key, owner))
            .await?
        {
            Ok(())
        } else {
            Err(Error::not_found(format!("response '{id}'")))
        }
    }
}

/// The chat messages a stored response continues with (its `context`), or a storage error for
/// a row that is not an array.
pub(crate) fn context_messages(r: &StoredResponse) -> Result<Vec<Value>> {
    match &r.context {
        Value::Array(a) => Ok(a.clone()),
        _ => Err(Error::Storage(format!(
            "stored response '{}' has no message context",
            r.id
        ))),
    }
}
