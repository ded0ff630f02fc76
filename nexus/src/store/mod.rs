//! Storage behind a narrow trait: the seam where a shared database server can replace the
//! embedded SQLite file so that several stateless server replicas share one registry and stats.
//!
//! Methods are blocking; async callers run them on a blocking thread. No database type crosses the
//! trait, and secrets cross it only sealed (upstream keys, provider headers) or hashed (client
//! keys and the admin token).

mod sqlite;
mod sqlite_groups;
mod sqlite_pool_keys;
mod sqlite_requests;
mod sqlite_retention;

pub use sqlite::SqliteStore;

use crate::error::Result;
use crate::records::{
    ClientKey, Model, ModelPatch, NewModel, ProviderOptions, Session, SessionMessage,
};
use crate::usage::{
    ConversationStats, MessageRecord, PricedRow, RepriceQuery, RepriceReport, RequestPage,
    RequestQuery, RequestRow, Summary, Timeseries, TimeseriesQuery, UsageRecord,
};

/// A provider row as stored: the upstream key sealed.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredProvider {
    /// Id (ignored on insert).
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// The wire format.
    pub kind: crate::records::ProviderKind,
    /// Base URL as configured.
    pub base_url: String,
    /// The sealed upstream key.
    pub sealed_key: Vec<u8>,
    /// Hint of the key.
    pub key_hint: String,
    /// Free text.
    pub description: String,
    /// Enabled.
    pub enabled: bool,
    /// Options, without header values: those live only in `sealed_headers`. (A row written by an
    /// older build may still carry plaintext headers here; the registry seals them on open.)
    pub options: ProviderOptions,
    /// The extra upstream headers as a sealed JSON object (name to value); `None` when there are
    /// none.
    pub sealed_headers: Option<Vec<u8>>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
    /// Disabled by the health checks (not by an operator): they may enable it again.
    pub auto_disabled: bool,
    /// Why it is disabled, when it is.
    pub disabled_reason: Option<String>,
    /// The pool state of the provider's own key (member 0 of its key pool).
    pub primary: PrimaryKeyState,
    /// Set on load when a stored column (the options JSON) cannot be decoded: the registry then
    /// keeps the provider out of routing instead of running it with default options.
    pub decode_error: Option<String>,
}

/// The key pool state of a provider's own key, kept on the provider row.
#[derive(Debug, Clone, PartialEq)]
pub struct PrimaryKeyState {
    /// Its weight among the pool's keys.
    pub weight: u32,
    /// An operator's switch.
    pub enabled: bool,
    /// Why the hub set it aside, when it did.
    pub set_aside: Option<String>,
}

impl Default for PrimaryKeyState {
    fn default() -> Self {
        PrimaryKeyState {
            weight: 1,
            enabled: true,
            set_aside: None,
        }
    }
}

/// A pool key row as stored: the key sealed. `record.hint` is the stored hint; the record's
/// `cooling_seconds` is not stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredPoolKey {
    /// The listed fields (the id is ignored on insert).
    pub record: crate::records::PoolKey,
    /// The sealed upstream key.
    pub sealed_key: Vec<u8>,
}

/// A client key row as stored: the key hashed.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredKey {
    /// The listed record (its id is ignored on insert).
    pub record: ClientKey,
    /// SHA-256 hex of the plaintext key.
    pub hash: String,
    /// Set on load when the stored scope (`provider_ids`, `models`) cannot be decoded: the
    /// registry then refuses the key instead of reading the scope as "everything".
    pub decode_error: Option<String>,
}

/// Everything the registry keeps in memory.
#[derive(Debug, Clone, Default)]
pub struct RegistryData {
    /// All providers, by id.
    pub providers: Vec<StoredProvider>,
    /// All models, by id.
    pub models: Vec<Model>,
    /// All keys, by id.
    pub keys: Vec<StoredKey>,
    /// All model groups, by id.
    pub groups: Vec<crate::records::ModelGroup>,
    /// Every provider's added pool keys (beyond its own key), by id.
    pub pool_keys: Vec<StoredPoolKey>,
}

/// The storage interface of the core.
pub trait Store: Send + Sync + 'static {
    /// Answers when the database is usable (readiness).
    fn ping(&self) -> Result<()>;

    /// Reads a metadata value.
    fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>>;
    /// Writes a metadata value.
    fn meta_set(&self, key: &str, value: &[u8]) -> Result<()>;

    /// Loads the whole registry.
    fn load_registry(&self) -> Result<RegistryData>;
    /// Inserts a provider and returns its id.
    fn insert_provider(&self, p: &StoredProvider) -> Result<i64>;
    /// Replaces a provider row; false when it does not exist.
    fn update_provider(&self, p: &StoredProvider) -> Result<bool>;
    /// Deletes a provider and its models; false when it does not exist.
    fn delete_provider(&self, id: i64) -> Result<bool>;
    /// Adds a key to a provider's pool and returns its id.
    fn insert_pool_key(&self, k: &StoredPoolKey) -> Result<i64>;
    /// Rewrites a pool key; false when there is none.
    fn update_pool_key(&self, k: &StoredPoolKey) -> Result<bool>;
    /// Deletes a provider's pool key; false when there is none.
    fn delete_pool_key(&self, provider_id: i64, id: i64) -> Result<bool>;
    /// Replaces every sealed value (upstream keys, pool keys, provider headers, and the metadata values
    /// named in `meta_keys`) by `f(old)`, in one transaction that also reads them, so nothing
    /// sealed under the old key can slip in between. Any error from `f` rolls everything back.
    /// Returns how many values were re-sealed.
    fn reseal_all(
        &self,
        meta_keys: &[&str],
        f: &mut dyn FnMut(&[u8]) -> Result<Vec<u8>>,
    ) -> Result<usize>;
    /// A number that changes whenever the registry (providers, models, keys, metadata) changes,
    /// in this process or in another one sharing the database; `None` when the store cannot tell
    /// cheaply (the registry then reloads on a slower timer). Called every
    /// [`RELOAD_INTERVAL`](crate::registry::RELOAD_INTERVAL), so it must be cheap.
    fn registry_version(&self) -> Result<Option<u64>> {
        Ok(None)
    }

    /// Inserts a model and returns its id.
    fn insert_model(&self, provider_id: i64, m: &NewModel, now: i64) -> Result<i64>;
    /// Applies a patch; false when the model does not exist.
    fn update_model(&self, id: i64, patch: &ModelPatch) -> Result<bool>;
    /// Deletes a model; false when it does not exist.
    fn delete_model(&self, id: i64) -> Result<bool>;

    /// Inserts a model group (its id ignored); returns the new id.
    fn insert_group(&self, g: &crate::records::ModelGroup) -> Result<i64>;
    /// Rewrites a model group; false when there is none.
    fn update_group(&self, g: &crate::records::ModelGroup) -> Result<bool>;
    /// Deletes a model group; false when there is none.
    fn delete_group(&self, id: i64) -> Result<bool>;

    /// Inserts a key and returns its id.
    fn insert_key(&self, k: &StoredKey) -> Result<i64>;
    /// Replaces a key's listed fields; false when it does not exist.
    fn update_key(&self, k: &ClientKey) -> Result<bool>;
    /// Deletes a key; false when it does not exist.
    fn delete_key(&self, id: i64) -> Result<bool>;
    /// Records last use times.
    fn touch_keys(&self, uses: &[(i64, i64)]) -> Result<()>;

    /// Writes a batch of usage records and messages atomically, with their rollups.
    fn insert_usage(&self, usage: &[UsageRecord], messages: &[MessageRecord]) -> Result<()>;
    /// Deletes at most `limit` bodies (conversation messages, then recorded request bodies) older
    /// than `before_ms` (unix milliseconds) and returns how many went; small batches keep the writer lock short.
    fn prune_messages(&self, before_ms: i64, limit: usize) -> Result<usize>;
    /// Totals (registry counts are filled in by the caller).
    fn summary(&self) -> Result<Summary>;
    /// Deletes at most `limit` request rows (usage) that started before `before_ms`, oldest
    /// first; their rollups stay.
    fn prune_usage(&self, before_ms: i64, limit: usize) -> Result<usize>;
    /// Deletes at most `limit` hourly rollup rows of hours before `before_ms`, oldest first,
    /// adding their cost to each key's archived spend (read by `total` budgets) first.
    fn prune_rollups(&self, before_ms: i64, limit: usize) -> Result<usize>;
    /// The oldest request row's start (unix ms).
    fn oldest_usage_ms(&self) -> Result<Option<i64>>;
    /// The oldest conversation message's time (unix ms).
    fn oldest_message_ms(&self) -> Result<Option<i64>>;
    /// Sizes and row counts for the storage view.
    fn storage(&self) -> Result<crate::retention::StorageStats>;
    /// Gives at most `max_pages` free pages back to the file system and returns the bytes
    /// given; 0 when there are none or the store reclaims space its own way.
    fn reclaim(&self, max_pages: u32) -> Result<u64>;
    /// Moves what the write-ahead log holds into the database and empties the log, so the
    /// space a retention pass gave back leaves the file system too.
    fn checkpoint(&self) -> Result<()>;
    /// Records a provider state change.
    fn insert_provider_event(&self, e: &crate::records::ProviderEvent) -> Result<()>;
    /// The newest `limit` provider state changes, of one provider or all.
    fn provider_events(
        &self,
        provider_id: Option<i64>,
        limit: usize,
    ) -> Result<Vec<crate::records::ProviderEvent>>;
    /// One page of the request explorer, newest first (names left for the caller to fill).
    fn list_requests(&self, q: &RequestQuery) -> Result<RequestPage>;
    /// One request with its attempt log.
    fn get_request(&self, request_id: &str) -> Result<Option<RequestRow>>;
    /// Micro-dollars spent by `key_id` in requests that started at or after `since_ms` (an hour
    /// boundary: read from the hourly rollups, which outlive raw rows).
    fn key_spend(&self, key_id: i64, since_ms: i64) -> Result<i64>;
    /// Recomputes the cost of the rows `q` selects with `cost` (`Some(None)`: unpriced; `None`:
    /// nothing to price it by, left as it is) and adjusts the rollups by the difference, in one
    /// transaction; a dry run writes nothing.
    fn reprice(
        &self,
        q: &RepriceQuery,
        now_ms: i64,
        cost: &dyn Fn(&PricedRow) -> Option<Option<i64>>,
    ) -> Result<RepriceReport>;
    /// A time series; `names` maps ids to labels for grouping.
    fn timeseries(
        &self,
        q: &TimeseriesQuery,
        names: &dyn Fn(GroupKey) -> String,
    ) -> Result<Timeseries>;
    /// One conversation.
    fn conversation(&self, id: &str) -> Result<Option<ConversationStats>>;

    /// Creates a session.
    fn create_session(&self, s: &Session) -> Result<()>;
    /// Lists sessions, newest first, without messages.
    fn list_sessions(&self) -> Result<Vec<Session>>;
    /// Loads a session with its messages.
    fn get_session(&self, id: &str) -> Result<Option<Session>>;
    /// Appends messages; false when the session does not exist.
    fn append_session_messages(&self, id: &str, msgs: &[SessionMessage], now: i64) -> Result<bool>;
    /// Deletes a session; false when it does not exist.
    fn delete_session(&self, id: &str) -> Result<bool>;

    /// Keeps a response (replacing one of the same id).
    fn put_response(&self, r: &StoredResponse) -> Result<()>;
    /// Loads a response kept for `owner`; another owner's is `None`, as a missing one.
    fn get_response(&self, id: &str, owner: i64) -> Result<Option<StoredResponse>>;
    /// Deletes a response kept for `owner`; false when there is none.
    fn delete_response(&self, id: &str, owner: i64) -> Result<bool>;
    /// Deletes at most `limit` responses created before `before_ms` and returns how many went.
    fn prune_responses(&self, before_ms: i64, limit: usize) -> Result<usize>;
}

/// A response kept by the Responses API (`store: true`).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredResponse {
    /// `resp_...`.
    pub id: String,
    /// The client key that made it; 0 for the admin and the library's own calls.
    pub owner: i64,
    /// Unix milliseconds.
    pub created_ms: i64,
    /// The client's model name.
    pub model: String,
    /// The response object as answered.
    pub response: serde_json::Value,
    /// The request's input items (a JSON array).
    pub input_items: serde_json::Value,
    /// The conversation up to and including this answer, as OpenAI chat messages: what a
    /// request continuing it (`previous_response_id`) is sent before its own input.
    pub context: serde_json::Value,
}

/// The key of a group in a time series, before it is turned into a label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupKey<'a> {
    /// A model name.
    Model(&'a str),
    /// A provider id (0 = none).
    Provider(i64),
    /// A key id (0 = none).
    Key(i64),
}
