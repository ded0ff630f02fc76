//! The [`Hub`]: the handle that wires the components together, and the two chat paths.
//!
//! A chat goes one way: admission (`admission.rs`: the key once, its limits) → routing (the
//! registry's candidates, ordered by health) → the provider kind's adapter (`upstream/`) with
//! retries and failover → the ledger (`ledger.rs`), which writes the one usage row. A stream's
//! state and accounting are in `chat_stream.rs`; sessions and the provider test have their own
//! files.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;

use crate::admission::{Admission, Admitted, Reservation, WorstCase};
use crate::budgets::Budgets;
use crate::chat_stream::{Accounting, RawEvents, StreamState};
use crate::retention::Retention;
// The paths the bindings have used since 0.1 keep working.
pub use crate::chat_stream::{ChatStream, StreamSummary};
use crate::crypto::{self, MasterKey};
use crate::error::{Error, Result};
use crate::ledger::{cost, set_usage, Ledger};
use crate::openai::{self, ChatChunk, ChatCompletion, ChatRequest, RequestLimits, Usage};
pub use crate::options::HubOptions;
use crate::records::{ClientKey, ModelKind, ProviderKind};
use crate::registry::{Candidate, Registry};
pub use crate::request::{Caller, RequestContext};
use crate::resilience::ResponseCache;
use crate::stats::{
    Attempt, ConversationStats, RequestSource, StatsWriter, Summary, Timeseries, TimeseriesQuery,
    UsageRecord, UsageSource,
};
use crate::store::{GroupKey, SqliteStore, Store};
use crate::time::now_ms;
use crate::tokens::{self, Encoding, TokenCount, TokenEstimator};
use crate::upstream::native::NativeRequest;
use crate::upstream::{adapter_for, rate_limit_headers, Decoded, Upstream, UpstreamCall};

/// The upstream attempts of one request: their total time and each one's outcome.
#[derive(Debug, Default)]
pub(crate) struct Tried {
    pub(crate) upstream_ms: f64,
    pub(crate) log: Vec<Attempt>,
}

impl Tried {
    /// Puts the attempts on the request's usage row; returns the time waited.
    pub(crate) fn record(self, rec: &mut UsageRecord) -> f64 {
        if !self.log.is_empty() {
            rec.upstream_ms = Some(self.upstream_ms);
        }
        rec.attempts = self.log;
        self.upstream_ms
    }
}

/// A non-streaming answer.
#[derive(Debug, Clone)]
pub struct ChatResponse {
    /// The parsed completion.
    pub completion: ChatCompletion,
    /// The body to send to the client: the upstream's bytes (normalized if the provider asks).
    pub body: Bytes,
    /// Usage as recorded.
    pub usage: Usage,
    /// Where `usage` came from.
    pub usage_source: UsageSource,
    /// What the request cost in micro-dollars at the model's effective prices (0 for a cache
    /// hit); `None` when the model is unpriced.
    pub cost_micros: Option<i64>,
    /// Request id.
    pub request_id: String,
    /// Conversation id.
    pub conversation_id: String,
    /// The provider that answered.
    pub provider_id: i64,
    /// Its name.
    pub provider_name: String,
    /// Upstream `x-ratelimit-*` headers, to pass back.
    pub rate_limit_headers: Vec<(String, String)>,
    /// Milliseconds spent waiting on the upstream (all attempts).
    pub upstream_ms: f64,
    /// True when served from the response cache.
    pub cached: bool,
    /// The upstream's own answer body when the request went to the provider in its native
    /// format (see [`crate::upstream::native`]): what a client of that format is relayed.
    pub native_body: Option<Bytes>,
}

type CachedAnswer = (ChatCompletion, Bytes, i64, String);

/// What admission hands a request path: the admitted key (holding its concurrency slot), the
/// candidates in order, and the tokens reserved.
pub(crate) type Prepared = (Option<Admitted>, Vec<Candidate>, Reservation);

impl Drop for HubInner {
    /// The retention thread may be in a pass, holding the store: wait for it, so the database
    /// is closed when the last hub handle is gone (a `rotate-master-key` right after needs that).
    fn drop(&mut self) {
        self.retention.stop();
    }
}

/// A request past admission: its usage row so far, its key's slot, candidates and tokens held.
struct Begun {
    rec: UsageRecord,
    conversation_id: String,
    admitted: Option<Admitted>,
    cands: Vec<Candidate>,
    reservation: Reservation,
}

pub(crate) struct HubInner {
    pub(crate) registry: Registry,
    pub(crate) upstream: Upstream,
    pub(crate) ledger: Arc<Ledger>,
    pub(crate) admission: Admission,
    pub(crate) retention: Arc<Retention>,
    pub(crate) health: crate::health_checks::HealthChecks,
    pub(crate) health_started: std::sync::atomic::AtomicBool,
    /// Which pool key each request sends, and the keys resting after a 429.
    pub(crate) keys: crate::key_pool::KeyPools,
    cache: Option<ResponseCache<CachedAnswer>>,
    pub(crate) opts: HubOptions,
    touched: Mutex<std::collections::HashMap<i64, i64>>,
    db_path: Option<PathBuf>,
}

/// The handle every user of the library holds. Cheap to clone, `Send + Sync`, creates no runtime:
/// its async methods run on the caller's tokio runtime; its blocking methods touch the database
/// and belong on a blocking thread in async code.
#[derive(Clone)]
pub struct Hub(pub(crate) Arc<HubInner>);

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("db", &self.0.db_path)
            .finish_non_exhaustive()
    }
}

/// The key file used beside a database when `NEXUS_MASTER_KEY` is not set.
pub fn default_key_file(db: &Path) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push(".key");
    PathBuf::from(s)
}

impl ChatResponse {
    /// [`cost_micros`](Self::cost_micros) in USD.
    pub fn cost_usd(&self) -> Option<f64> {
        self.cost_micros.map(crate::budgets::micros_to_usd)
    }

    /// What the hub knows about the answer beyond its body, as the bindings hand it out.
    pub fn meta(&self) -> ChatMeta {
        ChatMeta {
            request_id: self.request_id.clone(),
            conversation_id: self.conversation_id.clone(),
            provider_id: self.provider_id,
            provider_name: self.provider_name.clone(),
            usage_source: self.usage_source,
            cost_usd: self.cost_usd(),
            cached: self.cached,
            upstream_ms: self.upstream_ms,
        }
    }
}

/// The hub's facts about one answer (the Python result's `nexus` entry, the C API's meta JSON).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ChatMeta {
    /// Request id (also in the stats row).
    pub request_id: String,
    /// Conversation id.
    pub conversation_id: String,
    /// The provider that answered.
    pub provider_id: i64,
    /// Its name.
    pub provider_name: String,
    /// Where the recorded usage came from.
    pub usage_source: UsageSource,
    /// USD at the model's effective prices; `None` when the model is unpriced.
    pub cost_usd: Option<f64>,
    /// Served from the response cache.
    pub cached: bool,
    /// Milliseconds waiting on the upstream.
    pub upstream_ms: f64,
}

/// What a request's usage row starts from.
pub(crate) struct RowStart<'a> {
    /// The client's model name.
    pub(crate) model: &'a str,
    /// Its conversation, if it belongs to one.
    pub(crate) conversation_id: Option<&'a str>,
    /// Whether it streams.
    pub(crate) stream: bool,
    /// When it arrived (for its latency).
    pub(crate) start: Instant,
}

impl Hub {
    /// Opens (creating if needed) the SQLite database at `path`.
    pub fn open(path: impl AsRef<Path>, opts: HubOptions) -> Result<Hub> {
        let path = path.as_ref();
        let master = match &opts.master_key {
            Some(k) => k.clone(),
            None => MasterKey::load_or_create(
                std::env::var("NEXUS_MASTER_KEY").ok().as_deref(),
                &default_key_file(path),
            )?,
        };
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(path)?);
        Self::build(store, master, opts, Some(path.to_owned()))
    }

    /// A hub over a private in-memory database (a random master key unless one is given).
    pub fn open_in_memory(opts: HubOptions) -> Result<Hub> {
        let master = match &opts.master_key {
            Some(k) => k.clone(),
            None => MasterKey::generate()?,
        };
        Self::build(Arc::new(SqliteStore::open_in_memory()?), master, opts, None)
    }

    /// A hub over any [`Store`] (the scale-out seam).
    pub fn with_store(store: Arc<dyn Store>, master: MasterKey, opts: HubOptions) -> Result<Hub> {
        Self::build(store, master, opts, None)
    }

    fn build(
        store: Arc<dyn Store>,
        master: MasterKey,
        opts: HubOptions,
        db_path: Option<PathBuf>,
    ) -> Result<Hub> {
        let registry = Registry::open(store.clone(), master)?;
        let upstream = Upstream::new(opts.connect_timeout, opts.upstream_limits)?;
        let stats = StatsWriter::start(store.clone(), opts.stats.clone())?;
        let retention = Retention::new(store.clone(), opts.stats.retention())?;
        retention.start()?;
        let budgets = Budgets::new(store, stats.clone());
        // Building a BPE table takes a few hundred milliseconds and 30-70 MB; build the ones the
        // configured models count with now, off the request path. Others are built on first use.
        let tokens = TokenEstimator::with_overrides(opts.token_overrides.clone());
        let mut needed: Vec<Encoding> = registry
            .models(None)
            .unwrap_or_default()
            .iter()
            .filter_map(|m| tokens.encoding_for(&m.name))
            .collect();
        needed.sort_by_key(|e| e.name());
        needed.dedup();
        if !needed.is_empty() {
            let _ = std::thread::Builder::new()
                .name("nexus-bpe-warmup".into())
                .spawn(move || needed.into_iter().for_each(Encoding::warm_up));
        }
        Ok(Hub(Arc::new(HubInner {
            registry,
            upstream,
            ledger: Arc::new(Ledger {
                tokens,
                stats,
                record_messages: opts.record_messages,
                record_bodies: opts.record_bodies,
            }),
            admission: Admission::new(budgets),
            retention,
            health: crate::health_checks::HealthChecks::new(opts.health_checks),
            health_started: std::sync::atomic::AtomicBool::new(false),
            keys: crate::key_pool::KeyPools::new(),
            cache: opts.cache.clone().map(ResponseCache::new),
            opts,
            touched: Mutex::new(Default::default()),
            db_path,
        })))
    }

    /// The registry (providers, models, keys, admin token).
    pub fn registry(&self) -> &Registry {
        &self.0.registry
    }

    /// The token estimator.
    pub fn tokens(&self) -> &TokenEstimator {
        &self.0.ledger.tokens
    }

    /// The database file, when file-backed.
    pub fn db_path(&self) -> Option<&Path> {
        self.0.db_path.as_deref()
    }

    /// Whether the database answers and the stats writer's last commit succeeded (a full disk
    /// or a read-only file makes this an error).
    pub fn ready(&self) -> Result<()> {
        self.0.ledger.stats.health()?;
        self.0.registry.store().ping()
    }

    /// The stats writer (for its [`dropped_rows`](StatsWriter::dropped_rows) counter).
    pub fn stats(&self) -> &StatsWriter {
        &self.0.ledger.stats
    }

    // ---- tokens ----------------------------------------------------------------------------

    /// Counts text for a model. A BPE count is labelled exact only when a provider that
    /// tokenizes with it serves the model: a `gpt-4o` served only by Anthropic or Gemini is
    /// counted with the same encoding but labelled an estimate.
    pub fn count_text(&self, model: &str, text: &str) -> TokenCount {
        self.label_count(model, self.0.ledger.tokens.count_text(model, text))
    }

    /// Counts chat messages for a model, with OpenAI's per-message overhead; labelled as for
    /// [`count_text`](Self::count_text).
    pub fn count_messages(&self, model: &str, messages: &[Value]) -> TokenCount {
        self.label_count(model, self.0.ledger.tokens.count_messages(model, messages))
    }

    /// Downgrades an exact count to an estimate when every provider serving `model` has a
    /// tokenizer of its own. A model no provider serves keeps the name-based label.
    fn label_count(&self, model: &str, mut c: TokenCount) -> TokenCount {
        if c.method == tokens::Method::Exact {
            if let Ok(cands) = self.0.registry.route(None, model, None) {
                let openai_tokenizer = cands.iter().any(|c| {
                    matches!(
                        c.provider.record.kind,
                        ProviderKind::Openai | ProviderKind::Azure
                    )
                });
                if !openai_tokenizer {
                    c.method = tokens::Method::Estimate;
                }
            }
        }
        c
    }

    // ---- stats -----------------------------------------------------------------------------

    /// The bounds a request body is parsed under ([`ChatRequest::from_slice_limited`]).
    pub fn request_limits(&self) -> &RequestLimits {
        &self.0.opts.request_limits
    }

    // Every read of usage below first commits what is queued: a request already answered is in
    // the answer (read-your-writes), so a dashboard never lags behind what a client received.

    /// Dashboard totals.
    pub fn summary(&self) -> Result<Summary> {
        self.flush()?;
        let mut s = self.0.registry.store().summary()?;
        let (p, m, k) = self.0.registry.counts()?;
        s.providers = p as u64;
        s.models = m as u64;
        s.keys = k as u64;
        Ok(s)
    }

    /// A usage time series.
    pub fn timeseries(&self, q: &TimeseriesQuery) -> Result<Timeseries> {
        self.flush()?;
        let reg = &self.0.registry;
        let names = |g: GroupKey| match g {
            GroupKey::Model(m) => m.to_owned(),
            GroupKey::Provider(0) | GroupKey::Key(0) => "(none)".to_owned(),
            GroupKey::Provider(id) => reg
                .provider_name(id)
                .unwrap_or_else(|| format!("provider {id} (deleted)")),
            GroupKey::Key(id) => reg
                .key_name(id)
                .unwrap_or_else(|| format!("key {id} (deleted)")),
        };
        reg.store().timeseries(q, &names)
    }

    /// One conversation's totals and messages.
    pub fn conversation(&self, id: &str) -> Result<ConversationStats> {
        self.flush()?;
        self.0
            .registry
            .store()
            .conversation(id)?
            .ok_or_else(|| Error::not_found(format!("conversation '{id}'")))
    }

    /// Blocks until every queued usage record is committed.
    pub fn flush(&self) -> Result<()> {
        self.0.ledger.stats.flush()
    }

    // ---- models ----------------------------------------------------------------------------

    /// The models a caller may use (`GET /v1/models`): the key's scope applied, disabled and
    /// unroutable providers left out, one entry per client-facing name. Listing costs no
    /// request from the key's rate.
    pub fn models_for(&self, caller: &Caller) -> Result<openai::ModelList> {
        let key = match caller {
            Caller::Key(k) => Some(self.0.registry.authenticate(k)?),
            Caller::Admitted(a) => Some(a.key().clone()),
            Caller::Admin { .. } => None,
        };
        let data = self
            .0
            .registry
            .visible_models(key.as_ref())?
            .into_iter()
            .map(|(name, _provider, created, kind)| {
                openai::ModelObject::of_kind(&name, created, kind)
            })
            .collect();
        Ok(openai::ModelList {
            object: "list".into(),
            data,
        })
    }

    /// One model a caller may use (`GET /v1/models/{id}`): as listed by
    /// [`models_for`](Self::models_for), or a `model_not_found` error for a name the caller
    /// cannot see (unknown and out-of-scope names look the same).
    pub fn model_for(&self, caller: &Caller, id: &str) -> Result<openai::ModelObject> {
        self.models_for(caller)?
            .data
            .into_iter()
            .find(|m| m.id == id)
            .ok_or_else(|| Error::not_found(format!("model '{id}'")))
    }

    // ---- chat ------------------------------------------------------------------------------

    /// Authenticates a client key and takes one request from its per-minute allowance. Call it
    /// before reading a request body (the server does), then pass [`Caller::Admitted`]: an
    /// unknown key or a key over its request rate costs the hub no body read and no parse.
    pub fn admit(&self, presented: &str) -> Result<Admitted> {
        self.admit_for(presented, crate::usage::Endpoint::Chat)
    }

    /// [`Hub::admit`] for a request to `endpoint`: a refusal's usage row records it.
    pub fn admit_for(&self, presented: &str, endpoint: crate::usage::Endpoint) -> Result<Admitted> {
        let r = self.0.admission.admit(&self.0.registry, presented);
        if let Err(e @ Error::RateLimited { .. }) = &r {
            // Refusals for a known key are part of its usage history.
            if let Ok(key) = self.0.registry.authenticate(presented) {
                let mut rec =
                    self.0
                        .ledger
                        .new_record(None, "", None, RequestSource::Library, false);
                rec.key_id = Some(key.id);
                rec.endpoint = endpoint;
                self.0.ledger.record_failure(rec, e, Instant::now());
            }
        }
        r
    }

    /// The start both chat paths share: the request's usage row, then admission. A refused
    /// request has its row written here.
    fn begin(
        &self,
        caller: Caller,
        req: &ChatRequest,
        ctx: &RequestContext,
        stream: bool,
        start: Instant,
    ) -> Result<Begun> {
        let conversation_id = ctx
            .conversation_id
            .clone()
            .unwrap_or_else(crypto::random_id);
        let (rec, prepared) = self.begin_with(
            RowStart {
                model: &req.model,
                conversation_id: Some(&conversation_id),
                stream,
                start,
            },
            ctx,
            || serde_json::to_value(req).ok(),
            |key_id| self.prepare(caller, req, key_id),
        )?;
        let (admitted, cands, reservation) = prepared;
        Ok(Begun {
            rec,
            conversation_id,
            admitted,
            cands,
            reservation,
        })
    }

    /// The start every request path shares: its usage row, then `prepare` (validation and
    /// admission). A refused request has its row written here.
    pub(crate) fn begin_with(
        &self,
        row: RowStart<'_>,
        ctx: &RequestContext,
        request_body: impl FnOnce() -> Option<Value>,
        prepare: impl FnOnce(&mut Option<i64>) -> Result<Prepared>,
    ) -> Result<(UsageRecord, Prepared)> {
        let RowStart {
            model,
            conversation_id,
            stream,
            start,
        } = row;
        let mut rec = self.0.ledger.new_record(
            ctx.request_id.as_deref(),
            model,
            conversation_id,
            ctx.source,
            stream,
        );
        rec.endpoint = ctx.endpoint;
        // Set as soon as a key is admitted, so a request refused after that (its token limit,
        // its budget) is recorded under its key.
        match prepare(&mut rec.key_id) {
            Ok(p) => {
                let key = p.0.as_ref().map(Admitted::key);
                rec.key_id = key.map(|k| k.id);
                self.0.ledger.start_bodies(&mut rec, key, request_body);
                Ok((rec, p))
            }
            Err(e) => {
                // A request refused after its key was known follows that key's setting.
                let key = rec.key_id.and_then(|id| self.0.registry.key(id).ok());
                self.0
                    .ledger
                    .start_bodies(&mut rec, key.as_ref(), request_body);
                self.0.ledger.record_failure(rec, &e, start);
                Err(e)
            }
        }
    }

    /// Admission for one parsed chat request: its checks, then
    /// [`admit_and_route`](Self::admit_and_route) for a chat model with its worst-case tokens.
    fn prepare(
        &self,
        caller: Caller,
        req: &ChatRequest,
        key_id: &mut Option<i64>,
    ) -> Result<Prepared> {
        req.validate()?;
        let lim = &self.0.opts.request_limits;
        if req.messages.len() > lim.max_messages {
            return Err(Error::invalid_param(
                "messages",
                format!("`messages` has more than {} entries", lim.max_messages),
            ));
        }
        self.admit_and_route(caller, &req.model, ModelKind::Chat, key_id, || {
            let prompt = self
                .0
                .ledger
                .tokens
                .count_messages(&req.model, &req.messages)
                .tokens;
            let completion = ["max_completion_tokens", "max_tokens"]
                .iter()
                .find_map(|f| req.extra.get(*f).and_then(Value::as_u64))
                .unwrap_or(self.0.opts.default_max_tokens);
            let n = req
                .extra
                .get("n")
                .and_then(Value::as_u64)
                .unwrap_or(1)
                .max(1);
            WorstCase {
                prompt,
                completion: completion.saturating_mul(n),
            }
        })
    }

    /// Admission shared by every endpoint: the key (admitted once), the candidates serving
    /// `model` as a model of `kind` in health order, and `worst()` (the request's worst case,
    /// computed only when the key has a token limit or a budget) reserved under the key's
    /// per-minute token limit and its budget.
    pub(crate) fn admit_and_route(
        &self,
        caller: Caller,
        model: &str,
        kind: ModelKind,
        key_id: &mut Option<i64>,
        worst: impl FnOnce() -> WorstCase,
    ) -> Result<Prepared> {
        let (admitted, pin) = match caller {
            // The failure row of a refused key is written by the caller of `prepare`.
            Caller::Key(k) => (Some(self.0.admission.admit(&self.0.registry, &k)?), None),
            Caller::Admitted(a) => (Some(a), None),
            Caller::Admin { provider_id } => (None, provider_id),
        };
        let key = admitted.as_ref().map(Admitted::key);
        *key_id = key.map(|k| k.id);
        let mut cands = self.0.registry.route_kind(key, model, pin, kind)?;
        self.0.admission.order_candidates(&mut cands)?;
        let reservation = match key {
            Some(k) => self.0.admission.reserve(k, &cands, now_ms(), worst)?,
            None => Reservation::none(),
        };
        if let Some(k) = key {
            self.touch_key(k.id);
        }
        Ok((admitted, cands, reservation))
    }

    fn touch_key(&self, id: i64) {
        let now = now_ms() / 1000;
        let due = match self.0.touched.lock() {
            Ok(mut m) => {
                let last = m.entry(id).or_insert(0);
                if now - *last >= 60 {
                    *last = now;
                    true
                } else {
                    false
                }
            }
            Err(_) => false,
        };
        if due {
            let hub = self.clone();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn_blocking(move || {
                    if let Err(e) = hub.0.registry.touch_keys(&[(id, now)]) {
                        tracing::warn!(error = %e, "could not record key use");
                    }
                });
            }
        }
    }

    pub(crate) fn timeouts(&self, cand: &Candidate) -> (Duration, Duration) {
        let o = &cand.provider.record.options;
        (
            o.first_byte_timeout_ms
                .map(Duration::from_millis)
                .unwrap_or(self.0.opts.first_byte_timeout),
            o.idle_timeout_ms
                .map(Duration::from_millis)
                .unwrap_or(self.0.opts.idle_timeout),
        )
    }

    /// Runs `attempt` over the candidates with retries, backoff and failover. Returns the result
    /// and the candidate that produced it. Upstream detail is logged here, with the request id;
    /// the caller only ever sees [`Error::public_message`]. On a provider with several keys,
    /// `affinity` (the conversation id) picks the key, and a key the upstream refuses (401/403)
    /// or rate limits (429) gives way at once to another of its keys.
    pub(crate) async fn with_failover<T, F, Fut>(
        &self,
        request_id: &str,
        affinity: &str,
        cands: &[Candidate],
        mut attempt: F,
    ) -> (Result<T>, usize, Tried)
    where
        F: FnMut(usize) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let cfg = &self.0.opts.retry;
        let health = &self.0.admission.health;
        let mut tried = Tried::default();
        let mut last: Option<(Error, usize)> = None;
        self.0.keys.assign(cands, affinity);
        for (ci, cand) in cands.iter().enumerate() {
            let pid = cand.provider.record.id;
            // A provider that went into cooldown during this request's earlier attempts.
            if ci > 0 && health.is_cooling(pid) {
                continue;
            }
            let max = cand
                .provider
                .record
                .options
                .max_retries
                .unwrap_or(cfg.max_attempts)
                .max(1);
            let mut keys_tried: Vec<i64> = Vec::new();
            let mut n = 0;
            while n < max {
                n += 1;
                let t = Instant::now();
                let r = attempt(ci).await;
                let ms = t.elapsed().as_secs_f64() * 1000.0;
                tried.upstream_ms += ms;
                tried.log.push(Attempt {
                    provider_id: pid,
                    status: match &r {
                        Ok(_) => Some(200),
                        Err(Error::Upstream { status, .. }) => *status,
                        Err(_) => None,
                    },
                    error_kind: r.as_ref().err().map(|e| e.kind().as_str().to_owned()),
                    ms,
                });
                match r {
                    Ok(v) => {
                        health.success(pid);
                        return (Ok(v), ci, tried);
                    }
                    Err(e) => {
                        if let Some(next) = self
                            .next_pool_key(cand, &e, affinity, &mut keys_tried)
                            .await
                        {
                            tracing::warn!(
                                request_id,
                                provider = %cand.provider.record.name,
                                provider_id = pid,
                                error = %e,
                                "upstream refused or rate limited a pool key; trying another"
                            );
                            cand.use_key(next);
                            // Another key is a fresh start, not a retry of this one.
                            n -= 1;
                            last = Some((e, ci));
                            continue;
                        }
                        if e.is_provider_fault() {
                            health.failure(pid, cfg);
                        }
                        tracing::warn!(
                            request_id,
                            provider = %cand.provider.record.name,
                            provider_id = pid,
                            attempt = n,
                            error = %e,
                            "upstream attempt failed"
                        );
                        if !e.is_retryable() {
                            return (Err(e), ci, tried);
                        }
                        let delay = if n < max && e.retry_same_provider() && !health.is_cooling(pid)
                        {
                            cfg.delay(n, e.retry_after())
                        } else {
                            None
                        };
                        last = Some((e, ci));
                        match delay {
                            Some(d) => tokio::time::sleep(d).await,
                            None => break,
                        }
                    }
                }
            }
        }
        match last {
            Some((e, ci)) => (Err(e), ci, tried),
            None => (
                Err(Error::Unavailable(
                    "every provider serving this model is cooling down after failures".into(),
                )),
                0,
                tried,
            ),
        }
    }

    /// After `e` from `cand`'s current key, on a provider with several keys: sets that key
    /// aside (401/403, in the registry, until an operator enables it) or rests it (429, for its
    /// `Retry-After`), and returns the pool index of the key to try next; `None` when the
    /// failure is not the key's or no untried key is left.
    async fn next_pool_key(
        &self,
        cand: &Candidate,
        e: &Error,
        affinity: &str,
        keys_tried: &mut Vec<i64>,
    ) -> Option<usize> {
        if cand.provider.pool.len() < 2 {
            return None;
        }
        let key_id = cand.member()?.id;
        let pid = cand.provider.record.id;
        match e {
            Error::Upstream {
                status: Some(status @ (401 | 403)),
                ..
            } => {
                let hub = self.clone();
                let reason = format!("the upstream answered {status} to this key");
                let set = tokio::task::spawn_blocking(move || {
                    hub.0.registry.set_pool_key_aside(pid, key_id, &reason)
                })
                .await;
                match set {
                    Ok(Ok(_)) => {}
                    Ok(Err(err)) => {
                        tracing::error!(provider_id = pid, key_id, error = %err, "could not set a pool key aside")
                    }
                    Err(err) => {
                        tracing::error!(provider_id = pid, key_id, error = %err, "could not set a pool key aside")
                    }
                }
            }
            Error::Upstream {
                status: Some(429),
                retry_after,
                ..
            } => self.0.keys.rest(pid, key_id, *retry_after),
            _ => return None,
        }
        keys_tried.push(key_id);
        self.0.keys.pick(cand, affinity, keys_tried)
    }

    /// How long a provider's pool key still rests after a 429, if it does.
    pub fn pool_key_resting(&self, provider_id: i64, key_id: i64) -> Option<Duration> {
        self.0.keys.resting_left(provider_id, key_id)
    }

    /// A provider's key pool with each key's rest after a 429 filled in.
    pub fn pool_keys(&self, provider_id: i64) -> Result<Vec<crate::records::PoolKey>> {
        let mut keys = self.0.registry.pool_keys(provider_id)?;
        for k in &mut keys {
            k.cooling_seconds = self
                .pool_key_resting(provider_id, k.id)
                .map(|d| d.as_secs().max(1));
        }
        Ok(keys)
    }

    /// The cache key of a request for a caller: who asks (a key, or a pinned trusted caller),
    /// the candidates they may use (provider and upstream model), and the request itself. A key
    /// never receives an answer cached for another key, provider or model.
    fn cache_key(
        &self,
        key: Option<&ClientKey>,
        pin: Option<i64>,
        cands: &[Candidate],
        req: &ChatRequest,
    ) -> Option<[u8; 32]> {
        self.0.cache.as_ref()?;
        let scope: Vec<(i64, &str)> = cands
            .iter()
            .map(|c| (c.provider.record.id, c.model.upstream()))
            .collect();
        let who = match key {
            Some(k) => format!("key:{}", k.id),
            None => format!("trusted:{}", pin.unwrap_or(0)),
        };
        serde_json::to_vec(&(who, scope, &req.model, &req.messages, &req.extra))
            .ok()
            .map(|b| ResponseCache::<CachedAnswer>::key(&b))
    }

    /// A non-streaming chat completion.
    pub async fn chat(
        &self,
        caller: Caller,
        req: ChatRequest,
        ctx: RequestContext,
    ) -> Result<ChatResponse> {
        self.chat_inner(caller, req, ctx, true, None).await
    }

    pub(crate) async fn chat_inner(
        &self,
        caller: Caller,
        req: ChatRequest,
        ctx: RequestContext,
        use_cache: bool,
        native: Option<&NativeRequest>,
    ) -> Result<ChatResponse> {
        let start = Instant::now();
        let pin = match &caller {
            Caller::Admin { provider_id } => *provider_id,
            _ => None,
        };
        // `admitted` holds the key's concurrency slot until this function returns.
        let Begun {
            mut rec,
            conversation_id,
            admitted,
            cands,
            mut reservation,
        } = self.begin(caller, &req, &ctx, false, start)?;
        let request_id = rec.request_id.clone();
        let ts_ms = rec.ts_ms;
        let key = admitted.as_ref().map(Admitted::key);

        let cache_key = if use_cache {
            self.cache_key(key, pin, &cands, &req)
        } else {
            None
        };
        if let (Some(cache), Some(k)) = (&self.0.cache, &cache_key) {
            if let Some((completion, body, pid, pname)) = cache.get(k) {
                if cands.iter().any(|c| c.provider.record.id == pid) {
                    let usage = completion.usage.clone().unwrap_or_default();
                    rec.provider_id = Some(pid);
                    set_usage(&mut rec, &usage, UsageSource::Cache);
                    rec.cost_micros = Some(0);
                    rec.latency_ms = start.elapsed().as_secs_f64() * 1000.0;
                    // A cached answer cost the upstream nothing: no tokens or money are counted.
                    reservation.settle(0, Some(0), rec.ts_ms);
                    Ledger::answer_body(&mut rec, || crate::redact::redact_body(&body));
                    self.0.ledger.stats.record(rec);
                    return Ok(ChatResponse {
                        completion,
                        body,
                        usage,
                        usage_source: UsageSource::Cache,
                        cost_micros: Some(0),
                        request_id,
                        conversation_id,
                        provider_id: pid,
                        provider_name: pname,
                        rate_limit_headers: vec![],
                        upstream_ms: 0.0,
                        cached: true,
                        native_body: None,
                    });
                }
            }
        }

        // One call per candidate, built (translated) on first use and shared by its retries.
        let mut calls: Vec<Option<UpstreamCall>> = vec![None; cands.len()];
        let (result, ci, tried) = self
            .with_failover(&request_id, &conversation_id, &cands, |ci| {
                let cand = &cands[ci];
                let native = native.filter(|n| n.serves(cand));
                let call = match &calls[ci] {
                    Some(c) => Ok(c.clone()),
                    None => match native {
                        Some(n) => n.call(cand, false, false),
                        None => adapter_for(cand.provider.record.kind)
                            .and_then(|a| a.build(&req, cand, false, false)),
                    }
                    .inspect(|c| calls[ci] = Some(c.clone())),
                };
                let (first_byte, _) = self.timeouts(cand);
                let model = &req.model;
                async move {
                    let adapter = adapter_for(cand.provider.record.kind)?;
                    let resp = self.0.upstream.send(cand, call?, first_byte).await?;
                    let rl = rate_limit_headers(resp.headers());
                    let bytes = self.0.upstream.read_body(resp, first_byte).await?;
                    // The translation is still made: the ledger reads its usage.
                    let raw = native.map(|_| bytes.clone());
                    let completion = match native {
                        Some(n) => n.completion(bytes, model)?,
                        None => adapter.completion(bytes, model)?,
                    };
                    Ok((completion, rl, raw))
                }
            })
            .await;
        drop(calls);
        let upstream_ms = tried.record(&mut rec);
        let cand = &cands[ci];
        rec.provider_id = Some(cand.provider.record.id);
        rec.upstream_model = Some(cand.model.upstream().to_owned());
        let (bytes, rl, native_body) = match result {
            Ok(v) => v,
            Err(e) => {
                self.0.ledger.record_failure(rec, &e, start);
                return Err(e);
            }
        };
        // Normalization is for OpenAI-compatible servers that bend the format; a translated
        // answer is OpenAI-shaped by construction.
        let normalize = cand.provider.record.options.normalize.unwrap_or(false)
            && adapter_for(cand.provider.record.kind).is_ok_and(|a| a.relays());
        let parsed: Result<(ChatCompletion, Bytes)> = if normalize {
            serde_json::from_slice::<Value>(&bytes)
                .map_err(|e| malformed(&e, &bytes))
                .and_then(|v| {
                    let v = openai::normalize_completion(v, &req.model);
                    let out = serde_json::to_vec(&v).map_err(|e| Error::Internal(e.to_string()))?;
                    let c = serde_json::from_value(v).map_err(|e| malformed(&e, &bytes))?;
                    Ok((c, Bytes::from(out)))
                })
        } else {
            serde_json::from_slice::<ChatCompletion>(&bytes)
                .map(|c| (c, bytes.clone()))
                .map_err(|e| malformed(&e, &bytes))
        };
        // Only a chat completion is relayed: any other JSON (an internal API's answer, say) is an
        // upstream error, never handed to the client.
        let parsed = parsed.and_then(|(c, b)| {
            if c.choices.is_empty() {
                Err(Error::Upstream {
                    status: None,
                    message: "upstream answer is not a chat completion (no choices)".into(),
                    body: Some(openai::truncate(&String::from_utf8_lossy(&bytes), 4096)),
                    retry_after: None,
                })
            } else {
                Ok((c, b))
            }
        });
        let (completion, body) = match parsed {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(request_id = %request_id, provider = %cand.provider.record.name, error = %e, "upstream answer refused");
                self.0.ledger.record_failure(rec, &e, start);
                return Err(e);
            }
        };
        let (usage, source) = match &completion.usage {
            Some(u) if u.prompt_tokens + u.completion_tokens > 0 => {
                (u.clone(), UsageSource::Upstream)
            }
            _ => {
                // Every choice (n > 1) and its reasoning text are completion tokens.
                let texts = completion
                    .choices
                    .iter()
                    .filter_map(|ch| ch.get("message"))
                    .flat_map(|m| {
                        ["content", "reasoning_content", "reasoning", "refusal"]
                            .into_iter()
                            .filter_map(|f| m.get(f).and_then(Value::as_str))
                    });
                (self.0.ledger.estimate(&req, texts), UsageSource::Estimate)
            }
        };
        set_usage(&mut rec, &usage, source);
        rec.cost_micros = cost(&cand.model, &usage);
        rec.latency_ms = start.elapsed().as_secs_f64() * 1000.0;
        reservation.settle(
            usage.prompt_tokens + usage.completion_tokens,
            rec.cost_micros,
            rec.ts_ms,
        );
        self.0.ledger.record_messages(
            &conversation_id,
            cand,
            &req,
            completion.content().unwrap_or(""),
            &usage,
            ts_ms,
        );
        let cost_micros = rec.cost_micros;
        Ledger::answer_body(&mut rec, || crate::redact::redact_body(&body));
        self.0.ledger.stats.record(rec);
        if let (Some(cache), Some(k)) = (&self.0.cache, cache_key) {
            cache.put(
                k,
                (
                    completion.clone(),
                    body.clone(),
                    cand.provider.record.id,
                    cand.provider.record.name.clone(),
                ),
            );
        }
        Ok(ChatResponse {
            completion,
            body,
            usage,
            usage_source: source,
            cost_micros,
            request_id,
            conversation_id,
            provider_id: cand.provider.record.id,
            provider_name: cand.provider.record.name.clone(),
            rate_limit_headers: rl,
            upstream_ms,
            cached: false,
            native_body,
        })
    }

    /// A streaming chat completion. Retries and failover happen only before the first event
    /// reaches the caller; after that, failures end the stream with a typed error.
    pub async fn chat_stream(
        &self,
        caller: Caller,
        req: ChatRequest,
        ctx: RequestContext,
    ) -> Result<ChatStream> {
        self.chat_stream_inner(caller, req, ctx, None).await
    }

    /// [`chat_stream`](Self::chat_stream), sending `native` as it is to candidates of its kind;
    /// the stream then also keeps their raw events ([`ChatStream::raw`]).
    pub(crate) async fn chat_stream_inner(
        &self,
        caller: Caller,
        req: ChatRequest,
        ctx: RequestContext,
        native: Option<&NativeRequest>,
    ) -> Result<ChatStream> {
        let start = Instant::now();
        let Begun {
            mut rec,
            conversation_id,
            admitted,
            cands,
            reservation,
        } = self.begin(caller, &req, &ctx, true, start)?;
        let request_id = rec.request_id.clone();
        let client_wants_usage = req.wants_stream_usage();
        let req = Arc::new(req);

        let mut calls: Vec<Option<UpstreamCall>> = vec![None; cands.len()];
        let (result, ci, tried) = self
            .with_failover(&request_id, &conversation_id, &cands, |ci| {
                let cand = &cands[ci];
                let native = native.filter(|n| n.serves(cand));
                let call = match &calls[ci] {
                    Some(c) => Ok(c.clone()),
                    None => {
                        let inject = !client_wants_usage
                            && cand.provider.record.options.request_usage.unwrap_or(true);
                        match native {
                            Some(n) => n.call(cand, true, client_wants_usage),
                            None => adapter_for(cand.provider.record.kind)
                                .and_then(|a| a.build(&req, cand, true, inject)),
                        }
                        .inspect(|c| calls[ci] = Some(c.clone()))
                    }
                };
                let (first_byte, _) = self.timeouts(cand);
                let model = &req.model;
                async move {
                    let call = call?;
                    let extra_usage = call.extra_usage_chunk;
                    let mut decoder = match native {
                        Some(n) => n.decoder(model)?,
                        None => adapter_for(cand.provider.record.kind)?.decoder(model),
                    };
                    let resp = self.0.upstream.send(cand, call, first_byte).await?;
                    let rl = rate_limit_headers(resp.headers());
                    let (events, first) = self.0.upstream.open_sse(resp, first_byte).await?;
                    let raw: Option<RawEvents> = native.map(|_| {
                        Arc::new(Mutex::new(
                            [(first.event.clone(), first.data.clone())].into(),
                        ))
                    });
                    // An error as the first event is worth a retry or failover too: nothing has
                    // reached the caller yet.
                    let as_retryable = |e: Error| match e {
                        Error::Upstream { message, body, .. } => Error::Upstream {
                            status: Some(502),
                            message,
                            body,
                            retry_after: None,
                        },
                        other => other,
                    };
                    let first = decoder
                        .decode(&first.event, first.data)
                        .map_err(as_retryable)?;
                    if let Decoded::Chunks(c) = &first {
                        for text in c.iter().filter(|t| t.contains("\"error\"")) {
                            if let Err(e @ Error::Upstream { .. }) = ChatChunk::parse(text.clone())
                            {
                                return Err(as_retryable(e));
                            }
                        }
                    }
                    Ok((events, decoder, first, rl, extra_usage, raw))
                }
            })
            .await;
        drop(calls);
        let upstream_ms = tried.record(&mut rec);
        let cand = cands[ci].clone();
        rec.provider_id = Some(cand.provider.record.id);
        rec.upstream_model = Some(cand.model.upstream().to_owned());
        let (events, decoder, first, rl, injected, raw) = match result {
            Ok(v) => v,
            Err(e) => {
                self.0.ledger.record_failure(rec, &e, start);
                return Err(e);
            }
        };
        let (_, idle) = self.timeouts(&cand);
        let summary = Arc::new(Mutex::new(None));
        let acct = Accounting {
            ledger: self.0.ledger.clone(),
            rec: Some(rec),
            start,
            req,
            cand: cand.clone(),
            reservation,
            _admitted: admitted,
            text: String::new(),
            counted: 0,
            usage: None,
            finish_reason: None,
            ttft: None,
            summary: summary.clone(),
            conversation_id: conversation_id.clone(),
            chunk_id: None,
        };
        let (pending, upstream_done) = match first {
            Decoded::Chunks(c) => (c.into(), false),
            Decoded::Done => (Default::default(), true),
        };
        let state = StreamState {
            events,
            raw: raw.clone(),
            decoder,
            pending,
            upstream_done,
            idle,
            acct,
            strip_usage: injected && !client_wants_usage,
            synthesize_usage: client_wants_usage,
            normalize: cand.provider.record.options.normalize.unwrap_or(false)
                && adapter_for(cand.provider.record.kind).is_ok_and(|a| a.relays()),
            finished: false,
        };
        let inner = futures_util::stream::unfold(state, |mut st| async move {
            let item = st.next_item().await?;
            Some((item, st))
        });
        Ok(ChatStream {
            inner: Box::pin(inner),
            request_id,
            conversation_id,
            provider_id: cand.provider.record.id,
            provider_name: cand.provider.record.name.clone(),
            rate_limit_headers: rl,
            upstream_ms,
            summary,
            raw,
        })
    }
}

fn malformed(e: &serde_json::Error, body: &[u8]) -> Error {
    Error::Upstream {
        status: None,
        message: format!("malformed upstream response: {e}"),
        body: Some(String::from_utf8_lossy(&body[..body.len().min(4096)]).into_owned()),
        retry_after: None,
    }
}
