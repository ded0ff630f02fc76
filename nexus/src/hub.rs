//! The [`Hub`]: registry + streaming upstream client + token estimator + stats, in one handle.
//!
//! A chat goes: authenticate the key, route the model to candidate providers, check the key's
//! limits, call the upstream with retries and failover, and record exactly one usage row.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::admission::{Admission, Admitted, TokenReservation};
use crate::crypto::{self, MasterKey};
use crate::error::{Error, Result, TimeoutPhase};
use crate::openai::{self, ChatChunk, ChatCompletion, ChatRequest, RequestLimits, Usage};
use crate::records::{ClientKey, NewSession, Session, SessionMessage};
use crate::registry::{Candidate, Registry};
use crate::resilience::{CacheConfig, ResponseCache, RetryConfig};
use crate::stats::{
    ConversationStats, MessageRecord, RequestSource, StatsConfig, StatsWriter, Summary, Timeseries,
    TimeseriesQuery, UsageRecord, UsageSource,
};
use crate::store::{GroupKey, SqliteStore, Store};
use crate::time::now_ms;
use crate::tokens::{Encoding, TokenCount, TokenEstimator};
use crate::upstream::{
    adapter_for, rate_limit_headers, Decoded, EventStream, StreamDecoder, Upstream, UpstreamCall,
    UpstreamLimits,
};

/// Hub settings. `Default` is what the server runs with.
#[derive(Debug, Clone)]
pub struct HubOptions {
    /// The master key; `None` reads `NEXUS_MASTER_KEY`, else a key file beside the database.
    pub master_key: Option<MasterKey>,
    /// Stats writer tuning.
    pub stats: StatsConfig,
    /// Retry, backoff and cooldown.
    pub retry: RetryConfig,
    /// Default connect timeout.
    pub connect_timeout: Duration,
    /// Default wait for the response head / first stream event (and the whole non-stream body).
    pub first_byte_timeout: Duration,
    /// Default wait between stream events.
    pub idle_timeout: Duration,
    /// Opt-in response cache for identical non-streaming requests.
    pub cache: Option<CacheConfig>,
    /// Keep conversation messages (user prompt and assistant answer) for the conversation view.
    pub record_messages: bool,
    /// Per-model encoding overrides for the token estimator.
    pub token_overrides: std::collections::HashMap<String, Option<Encoding>>,
    /// Bounds on one request (messages, content parts, JSON values).
    pub request_limits: RequestLimits,
    /// Bounds on one upstream answer (body and stream event sizes).
    pub upstream_limits: UpstreamLimits,
    /// Completion tokens reserved under a key's token limit when a request sets no
    /// `max_tokens`/`max_completion_tokens`.
    pub default_max_tokens: u64,
}

impl Default for HubOptions {
    fn default() -> Self {
        HubOptions {
            master_key: None,
            stats: StatsConfig::default(),
            retry: RetryConfig::default(),
            connect_timeout: Duration::from_secs(10),
            first_byte_timeout: Duration::from_secs(120),
            idle_timeout: Duration::from_secs(60),
            cache: None,
            record_messages: true,
            token_overrides: Default::default(),
            request_limits: RequestLimits::default(),
            upstream_limits: UpstreamLimits::default(),
            default_max_tokens: 4096,
        }
    }
}

/// Who is asking.
#[derive(Debug, Clone)]
pub enum Caller {
    /// A client key as presented (`Authorization: Bearer ...`).
    Key(String),
    /// A key already admitted by [`Hub::admit`] (the server admits before reading the body).
    Admitted(Admitted),
    /// A trusted caller (admin UI, the library's owner): no key checks; optionally pinned to one
    /// provider.
    Admin {
        /// Serve from this provider only.
        provider_id: Option<i64>,
    },
}

/// Per-request context.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// Request id (generated when absent).
    pub request_id: Option<String>,
    /// Conversation id (generated when absent).
    pub conversation_id: Option<String>,
    /// Front end, for stats.
    pub source: RequestSource,
}

impl Default for RequestContext {
    fn default() -> Self {
        RequestContext {
            request_id: None,
            conversation_id: None,
            source: RequestSource::Library,
        }
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
}

/// How a stream ended, for front ends that report it (the WebSocket `done` frame).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StreamSummary {
    /// Final usage.
    pub usage: Usage,
    /// Where it came from.
    pub usage_source: UsageSource,
    /// Finish reason (`cancelled` when the caller stopped early).
    pub finish_reason: Option<String>,
    /// Total milliseconds.
    pub latency_ms: f64,
    /// Milliseconds to the first content.
    pub ttft_ms: Option<f64>,
    /// Error kind, when the stream failed.
    pub error_kind: Option<String>,
}

/// One provider's result in a "test every model" run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelTestResult {
    /// Model name.
    pub model: String,
    /// Both calls succeeded.
    pub ok: bool,
    /// The streamed call produced at least one chunk.
    pub stream_supported: bool,
    /// Time to the first streamed content.
    pub ttft_ms: Option<f64>,
    /// Time of the streamed call.
    pub total_ms: Option<f64>,
    /// Completion tokens of the streamed call.
    pub completion_tokens: Option<u64>,
    /// Completion tokens per second of the streamed call.
    pub tokens_per_second: Option<f64>,
    /// Time of the non-streamed call.
    pub non_stream_ms: Option<f64>,
    /// What failed.
    pub error: Option<String>,
}

/// A provider test report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProviderTestReport {
    /// Provider id.
    pub provider_id: i64,
    /// Per model.
    pub results: Vec<ModelTestResult>,
}

type CachedAnswer = (ChatCompletion, Bytes, i64, String);

/// A request past admission: its usage row so far, its key's slot, candidates and tokens held.
struct Begun {
    rec: UsageRecord,
    conversation_id: String,
    admitted: Option<Admitted>,
    cands: Vec<Candidate>,
    reservation: TokenReservation,
}

struct HubInner {
    registry: Registry,
    upstream: Upstream,
    tokens: TokenEstimator,
    stats: StatsWriter,
    admission: Admission,
    cache: Option<ResponseCache<CachedAnswer>>,
    opts: HubOptions,
    touched: Mutex<std::collections::HashMap<i64, i64>>,
    db_path: Option<PathBuf>,
}

/// The handle every user of the library holds. Cheap to clone, `Send + Sync`, creates no runtime:
/// its async methods run on the caller's tokio runtime; its blocking methods touch the database
/// and belong on a blocking thread in async code.
#[derive(Clone)]
pub struct Hub(Arc<HubInner>);

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
        let stats = StatsWriter::start(store, opts.stats.clone())?;
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
            tokens,
            stats,
            admission: Admission::default(),
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
        &self.0.tokens
    }

    /// The database file, when file-backed.
    pub fn db_path(&self) -> Option<&Path> {
        self.0.db_path.as_deref()
    }

    /// Whether the database answers and the stats writer's last commit succeeded (a full disk
    /// or a read-only file makes this an error).
    pub fn ready(&self) -> Result<()> {
        self.0.stats.health()?;
        self.0.registry.store().ping()
    }

    /// The stats writer (for its [`dropped_rows`](StatsWriter::dropped_rows) counter).
    pub fn stats(&self) -> &StatsWriter {
        &self.0.stats
    }

    // ---- tokens ----------------------------------------------------------------------------

    /// Counts text for a model.
    pub fn count_text(&self, model: &str, text: &str) -> TokenCount {
        self.0.tokens.count_text(model, text)
    }

    /// Counts chat messages for a model, with OpenAI's per-message overhead.
    pub fn count_messages(&self, model: &str, messages: &[Value]) -> TokenCount {
        self.0.tokens.count_messages(model, messages)
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
        self.0.stats.flush()
    }

    // ---- sessions --------------------------------------------------------------------------

    /// Creates a conversation session.
    pub fn create_session(&self, s: NewSession) -> Result<Session> {
        if s.model.trim().is_empty() {
            return Err(Error::invalid_param("model", "model must not be empty"));
        }
        let now = now_ms() / 1000;
        let session = Session {
            id: crypto::random_id(),
            title: s.title,
            model: s.model,
            settings: s.settings,
            created_at: now,
            updated_at: now,
            messages: vec![],
        };
        self.0.registry.store().create_session(&session)?;
        Ok(session)
    }

    /// Lists sessions, most recently updated first.
    pub fn sessions(&self) -> Result<Vec<Session>> {
        self.0.registry.store().list_sessions()
    }

    /// Loads a session with its messages.
    pub fn session(&self, id: &str) -> Result<Session> {
        self.0
            .registry
            .store()
            .get_session(id)?
            .ok_or_else(|| Error::not_found(format!("session '{id}'")))
    }

    /// Appends messages (timestamped now) to a session.
    pub fn append_session(&self, id: &str, messages: &[(String, String)]) -> Result<Session> {
        let now = now_ms();
        let msgs: Vec<SessionMessage> = messages
            .iter()
            .map(|(role, content)| SessionMessage {
                role: role.clone(),
                content: content.clone(),
                timestamp_ms: now,
            })
            .collect();
        if !self
            .0
            .registry
            .store()
            .append_session_messages(id, &msgs, now / 1000)?
        {
            return Err(Error::not_found(format!("session '{id}'")));
        }
        self.session(id)
    }

    /// Deletes a session.
    pub fn delete_session(&self, id: &str) -> Result<()> {
        if !self.0.registry.store().delete_session(id)? {
            return Err(Error::not_found(format!("session '{id}'")));
        }
        Ok(())
    }

    /// Builds the request for a session's next turn: its settings, its history and `user_text`.
    pub fn session_request(&self, id: &str, user_text: &str) -> Result<ChatRequest> {
        let s = self.session(id)?;
        let mut messages: Vec<Value> = s
            .messages
            .iter()
            .map(|m| serde_json::json!({"role": m.role, "content": m.content}))
            .collect();
        messages.push(serde_json::json!({"role": "user", "content": user_text}));
        Ok(ChatRequest {
            model: s.model,
            messages,
            stream: None,
            stream_options: None,
            extra: s.settings,
        })
    }

    // ---- chat ------------------------------------------------------------------------------

    /// Authenticates a client key and takes one request from its per-minute allowance. Call it
    /// before reading a request body (the server does), then pass [`Caller::Admitted`]: an
    /// unknown key or a key over its request rate costs the hub no body read and no parse.
    pub fn admit(&self, presented: &str) -> Result<Admitted> {
        let r = self.0.admission.admit(&self.0.registry, presented);
        if let Err(e @ Error::RateLimited { .. }) = &r {
            // Refusals for a known key are part of its usage history.
            if let Ok(key) = self.0.registry.authenticate(presented) {
                let mut rec = self.new_record(None, "", None, RequestSource::Library, false);
                rec.key_id = Some(key.id);
                self.record_failure(rec, e, Instant::now());
            }
        }
        r
    }

    fn new_record(
        &self,
        request_id: Option<&str>,
        model: &str,
        conversation_id: Option<&str>,
        source: RequestSource,
        stream: bool,
    ) -> UsageRecord {
        UsageRecord {
            ts_ms: now_ms(),
            request_id: request_id.map_or_else(crypto::random_id, str::to_owned),
            conversation_id: conversation_id.map(str::to_owned),
            key_id: None,
            provider_id: None,
            model: model.to_owned(),
            upstream_model: None,
            prompt_tokens: 0,
            completion_tokens: 0,
            usage_source: UsageSource::Estimate,
            status: 200,
            error_kind: None,
            latency_ms: 0.0,
            ttft_ms: None,
            stream,
            source,
            cost: None,
            cached_tokens: 0,
            cache_write_tokens: 0,
            reasoning_tokens: 0,
        }
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
        let mut rec = self.new_record(
            ctx.request_id.as_deref(),
            &req.model,
            Some(&conversation_id),
            ctx.source,
            stream,
        );
        match self.prepare(caller, req) {
            Ok((admitted, cands, reservation)) => {
                rec.key_id = admitted.as_ref().map(|a| a.key().id);
                Ok(Begun {
                    rec,
                    conversation_id,
                    admitted,
                    cands,
                    reservation,
                })
            }
            Err(e) => {
                self.record_failure(rec, &e, start);
                Err(e)
            }
        }
    }

    /// Admission for one parsed request: the key (admitted once), its candidates in order, and
    /// its tokens reserved under the key's per-minute token limit.
    fn prepare(
        &self,
        caller: Caller,
        req: &ChatRequest,
    ) -> Result<(Option<Admitted>, Vec<Candidate>, TokenReservation)> {
        req.validate()?;
        let lim = &self.0.opts.request_limits;
        if req.messages.len() > lim.max_messages {
            return Err(Error::invalid_param(
                "messages",
                format!("`messages` has more than {} entries", lim.max_messages),
            ));
        }
        let (admitted, pin) = match caller {
            // The failure row of a refused key is written by the caller of `prepare`.
            Caller::Key(k) => (Some(self.0.admission.admit(&self.0.registry, &k)?), None),
            Caller::Admitted(a) => (Some(a), None),
            Caller::Admin { provider_id } => (None, provider_id),
        };
        let key = admitted.as_ref().map(Admitted::key);
        let mut cands = self.0.registry.route(key, &req.model, pin)?;
        self.0.admission.order_candidates(&mut cands)?;
        let reservation = match key {
            Some(k) if k.tpm.is_some() => {
                let prompt = self
                    .0
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
                self.0
                    .admission
                    .reserve(k, prompt + completion.saturating_mul(n))?
            }
            _ => TokenReservation::none(),
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

    fn timeouts(&self, cand: &Candidate) -> (Duration, Duration) {
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
    /// the caller only ever sees [`Error::public_message`].
    async fn with_failover<T, F, Fut>(
        &self,
        request_id: &str,
        cands: &[Candidate],
        mut attempt: F,
    ) -> (Result<T>, usize, f64)
    where
        F: FnMut(usize) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let cfg = &self.0.opts.retry;
        let health = &self.0.admission.health;
        let mut upstream_ms = 0.0;
        let mut last: Option<(Error, usize)> = None;
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
            for n in 1..=max {
                let t = Instant::now();
                let r = attempt(ci).await;
                upstream_ms += t.elapsed().as_secs_f64() * 1000.0;
                match r {
                    Ok(v) => {
                        health.success(pid);
                        return (Ok(v), ci, upstream_ms);
                    }
                    Err(e) => {
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
                            return (Err(e), ci, upstream_ms);
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
            Some((e, ci)) => (Err(e), ci, upstream_ms),
            None => (
                Err(Error::Unavailable(
                    "every provider serving this model is cooling down after failures".into(),
                )),
                0,
                upstream_ms,
            ),
        }
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
        self.chat_inner(caller, req, ctx, true).await
    }

    async fn chat_inner(
        &self,
        caller: Caller,
        req: ChatRequest,
        ctx: RequestContext,
        use_cache: bool,
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
                    rec.cost = Some(0.0);
                    rec.latency_ms = start.elapsed().as_secs_f64() * 1000.0;
                    self.0.stats.record(rec);
                    // A cached answer cost the upstream nothing: no tokens are counted.
                    reservation.settle(0);
                    return Ok(ChatResponse {
                        completion,
                        body,
                        usage,
                        usage_source: UsageSource::Cache,
                        request_id,
                        conversation_id,
                        provider_id: pid,
                        provider_name: pname,
                        rate_limit_headers: vec![],
                        upstream_ms: 0.0,
                        cached: true,
                    });
                }
            }
        }

        // One call per candidate, built (translated) on first use and shared by its retries.
        let mut calls: Vec<Option<UpstreamCall>> = vec![None; cands.len()];
        let (result, ci, upstream_ms) = self
            .with_failover(&request_id, &cands, |ci| {
                let cand = &cands[ci];
                let call = match &calls[ci] {
                    Some(c) => Ok(c.clone()),
                    None => adapter_for(cand.provider.record.kind)
                        .and_then(|a| a.build(&req, cand, false, false))
                        .inspect(|c| calls[ci] = Some(c.clone())),
                };
                let (first_byte, _) = self.timeouts(cand);
                let model = &req.model;
                async move {
                    let adapter = adapter_for(cand.provider.record.kind)?;
                    let resp = self.0.upstream.send(cand, call?, first_byte).await?;
                    let rl = rate_limit_headers(resp.headers());
                    let bytes = self.0.upstream.read_body(resp, first_byte).await?;
                    Ok((adapter.completion(bytes, model)?, rl))
                }
            })
            .await;
        drop(calls);
        let cand = &cands[ci];
        rec.provider_id = Some(cand.provider.record.id);
        rec.upstream_model = Some(cand.model.upstream().to_owned());
        let (bytes, rl) = match result {
            Ok(v) => v,
            Err(e) => {
                self.record_failure(rec, &e, start);
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
                self.record_failure(rec, &e, start);
                return Err(e);
            }
        };
        let (usage, source) = match &completion.usage {
            Some(u) if u.prompt_tokens + u.completion_tokens > 0 => {
                (u.clone(), UsageSource::Upstream)
            }
            _ => {
                let p = self
                    .0
                    .tokens
                    .count_messages(&req.model, &req.messages)
                    .tokens;
                // Every choice (n > 1) and its reasoning text are completion tokens.
                let c: u64 = completion
                    .choices
                    .iter()
                    .filter_map(|ch| ch.get("message"))
                    .flat_map(|m| {
                        ["content", "reasoning_content", "reasoning", "refusal"]
                            .into_iter()
                            .filter_map(|f| m.get(f).and_then(Value::as_str))
                    })
                    .map(|t| self.0.tokens.count_text(&req.model, t).tokens)
                    .sum();
                (
                    Usage {
                        prompt_tokens: p,
                        completion_tokens: c,
                        total_tokens: p + c,
                        ..Usage::default()
                    },
                    UsageSource::Estimate,
                )
            }
        };
        set_usage(&mut rec, &usage, source);
        rec.cost = cost(&cand.model, &usage);
        rec.latency_ms = start.elapsed().as_secs_f64() * 1000.0;
        reservation.settle(usage.prompt_tokens + usage.completion_tokens);
        self.record_messages(
            &conversation_id,
            cand,
            &req,
            completion.content().unwrap_or(""),
            &usage,
            ts_ms,
        );
        self.0.stats.record(rec);
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
            request_id,
            conversation_id,
            provider_id: cand.provider.record.id,
            provider_name: cand.provider.record.name.clone(),
            rate_limit_headers: rl,
            upstream_ms,
            cached: false,
        })
    }

    fn record_failure(&self, mut rec: UsageRecord, e: &Error, start: Instant) {
        rec.status = e.http_status();
        rec.error_kind = Some(e.kind().as_str().to_owned());
        rec.latency_ms = start.elapsed().as_secs_f64() * 1000.0;
        self.0.stats.record(rec);
    }

    fn record_messages(
        &self,
        conversation_id: &str,
        cand: &Candidate,
        req: &ChatRequest,
        answer: &str,
        usage: &Usage,
        ts_ms: i64,
    ) {
        if !self.0.opts.record_messages {
            return;
        }
        let last_user = req
            .messages
            .iter()
            .rev()
            .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
            .map(message_text)
            .unwrap_or_default();
        let base = MessageRecord {
            ts_ms,
            conversation_id: conversation_id.to_owned(),
            provider_id: Some(cand.provider.record.id),
            model: req.model.clone(),
            role: "user".into(),
            tokens: self.0.tokens.count_text(&req.model, &last_user).tokens,
            content: last_user,
        };
        self.0.stats.message(base.clone());
        self.0.stats.message(MessageRecord {
            ts_ms: now_ms(),
            role: "assistant".into(),
            content: answer.to_owned(),
            tokens: usage.completion_tokens,
            ..base
        });
    }

    /// A streaming chat completion. Retries and failover happen only before the first event
    /// reaches the caller; after that, failures end the stream with a typed error.
    pub async fn chat_stream(
        &self,
        caller: Caller,
        req: ChatRequest,
        ctx: RequestContext,
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
        let (result, ci, upstream_ms) = self
            .with_failover(&request_id, &cands, |ci| {
                let cand = &cands[ci];
                let call = match &calls[ci] {
                    Some(c) => Ok(c.clone()),
                    None => {
                        let inject = !client_wants_usage
                            && cand.provider.record.options.request_usage.unwrap_or(true);
                        adapter_for(cand.provider.record.kind)
                            .and_then(|a| a.build(&req, cand, true, inject))
                            .inspect(|c| calls[ci] = Some(c.clone()))
                    }
                };
                let (first_byte, _) = self.timeouts(cand);
                let model = &req.model;
                async move {
                    let call = call?;
                    let extra_usage = call.extra_usage_chunk;
                    let mut decoder = adapter_for(cand.provider.record.kind)?.decoder(model);
                    let resp = self.0.upstream.send(cand, call, first_byte).await?;
                    let rl = rate_limit_headers(resp.headers());
                    let (events, first) = self.0.upstream.open_sse(resp, first_byte).await?;
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
                    Ok((events, decoder, first, rl, extra_usage))
                }
            })
            .await;
        drop(calls);
        let cand = cands[ci].clone();
        rec.provider_id = Some(cand.provider.record.id);
        rec.upstream_model = Some(cand.model.upstream().to_owned());
        let (events, decoder, first, rl, injected) = match result {
            Ok(v) => v,
            Err(e) => {
                self.record_failure(rec, &e, start);
                return Err(e);
            }
        };
        let (_, idle) = self.timeouts(&cand);
        let summary = Arc::new(Mutex::new(None));
        let acct = Accounting {
            hub: self.clone(),
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
        })
    }

    /// Calls every model of a provider once streamed and once not, like the original's
    /// `test_all_url.py`: stream support, time to first token, total time, tokens per second.
    pub async fn test_provider(&self, provider_id: i64) -> Result<ProviderTestReport> {
        let models = self.0.registry.models(Some(provider_id))?;
        let mut results = Vec::with_capacity(models.len());
        for m in models {
            let caller = Caller::Admin {
                provider_id: Some(provider_id),
            };
            let mut r = ModelTestResult {
                model: m.name.clone(),
                ok: false,
                stream_supported: false,
                ttft_ms: None,
                total_ms: None,
                completion_tokens: None,
                tokens_per_second: None,
                non_stream_ms: None,
                error: None,
            };
            let mut req = ChatRequest::user(&m.name, "Who are you? Answer in one sentence.");
            req.extra.insert("max_tokens".into(), 64.into());
            let t = Instant::now();
            // The test asks the provider itself: never an answer from the cache.
            let ns = self
                .chat_inner(
                    caller.clone(),
                    req.clone(),
                    RequestContext::default(),
                    false,
                )
                .await;
            r.non_stream_ms = Some(t.elapsed().as_secs_f64() * 1000.0);
            let t = Instant::now();
            let st = async {
                let mut s = self
                    .chat_stream(caller, req, RequestContext::default())
                    .await?;
                let mut ttft = None;
                while let Some(c) = s.next().await {
                    let c = c?;
                    if ttft.is_none() && c.delta().is_some_and(|d| !d.is_empty()) {
                        ttft = Some(t.elapsed().as_secs_f64() * 1000.0);
                    }
                }
                Ok::<_, Error>((ttft, s.summary()))
            }
            .await;
            let total = t.elapsed().as_secs_f64() * 1000.0;
            match (&ns, st) {
                (Ok(_), Ok((ttft, summary))) => {
                    r.ok = true;
                    r.stream_supported = ttft.is_some();
                    r.ttft_ms = ttft;
                    r.total_ms = Some(total);
                    let ct = summary.map(|s| s.usage.completion_tokens);
                    r.completion_tokens = ct;
                    r.tokens_per_second = ct.map(|c| c as f64 / (total / 1000.0).max(1e-6));
                }
                (Err(e), _) => r.error = Some(format!("non-stream: {e}")),
                (Ok(_), Err(e)) => r.error = Some(format!("stream: {e}")),
            }
            results.push(r);
        }
        Ok(ProviderTestReport {
            provider_id,
            results,
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

/// Copies a usage object into the row: the counts and, from OpenAI's detail objects, the cached,
/// cache-written and reasoning parts (as every adapter reports them).
fn set_usage(rec: &mut UsageRecord, u: &Usage, source: UsageSource) {
    let detail = |obj: &str, field: &str| {
        u.extra
            .get(obj)
            .and_then(|d| d.get(field))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    rec.prompt_tokens = u.prompt_tokens;
    rec.completion_tokens = u.completion_tokens;
    rec.usage_source = source;
    rec.cached_tokens = detail("prompt_tokens_details", "cached_tokens");
    rec.cache_write_tokens = detail("prompt_tokens_details", "cache_write_tokens");
    rec.reasoning_tokens = detail("completion_tokens_details", "reasoning_tokens");
}

fn cost(m: &crate::records::Model, u: &Usage) -> Option<f64> {
    if m.input_price.is_none() && m.output_price.is_none() {
        return None;
    }
    Some(
        m.input_price.unwrap_or(0.0) * u.prompt_tokens as f64 / 1e6
            + m.output_price.unwrap_or(0.0) * u.completion_tokens as f64 / 1e6,
    )
}

fn message_text(m: &Value) -> String {
    match m.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// Streamed text is counted in pieces of this size, so an endless answer holds bounded memory.
const COUNT_PIECE: usize = 256 * 1024;

/// Accounts for one stream and writes its usage record exactly once: at the end, on error, or
/// when the stream is dropped early (then with what was produced so far).
struct Accounting {
    hub: Hub,
    rec: Option<UsageRecord>,
    start: Instant,
    req: Arc<ChatRequest>,
    cand: Candidate,
    reservation: TokenReservation,
    /// The key's concurrency slot, held until the stream ends.
    _admitted: Option<Admitted>,
    /// Completion text (every choice, reasoning included) not yet counted.
    text: String,
    /// Completion tokens of the text already counted.
    counted: u64,
    usage: Option<(Usage, UsageSource)>,
    finish_reason: Option<String>,
    ttft: Option<f64>,
    summary: Arc<Mutex<Option<StreamSummary>>>,
    conversation_id: String,
    /// `id` and `created` of the upstream's chunks, for a chunk the hub adds.
    chunk_id: Option<(String, i64)>,
}

impl Accounting {
    fn add_text(&mut self, t: &str) {
        self.text.push_str(t);
        if self.text.len() >= COUNT_PIECE {
            self.counted += self
                .hub
                .0
                .tokens
                .count_text(&self.req.model, &self.text)
                .tokens;
            self.text.clear();
        }
    }

    /// The usage of the stream so far: the upstream's, else counted from the prompt and the
    /// streamed text (and kept, so the row and any usage chunk the hub sends agree).
    fn usage(&mut self) -> (Usage, UsageSource) {
        if let Some(u) = &self.usage {
            return u.clone();
        }
        let tokens = &self.hub.0.tokens;
        let p = tokens
            .count_messages(&self.req.model, &self.req.messages)
            .tokens;
        let c = self.counted + tokens.count_text(&self.req.model, &self.text).tokens;
        let u = (
            Usage {
                prompt_tokens: p,
                completion_tokens: c,
                total_tokens: p + c,
                ..Usage::default()
            },
            UsageSource::Estimate,
        );
        self.usage = Some(u.clone());
        u
    }

    fn finish(&mut self, error: Option<&Error>, cancelled: bool) {
        let Some(mut rec) = self.rec.take() else {
            return;
        };
        let (usage, source) = self.usage();
        set_usage(&mut rec, &usage, source);
        rec.latency_ms = self.start.elapsed().as_secs_f64() * 1000.0;
        rec.ttft_ms = self.ttft;
        rec.cost = cost(&self.cand.model, &usage);
        if let Some(e) = error {
            rec.status = e.http_status();
            rec.error_kind = Some(e.kind().as_str().to_owned());
        } else if cancelled {
            // 499: the client closed the request (nginx's convention).
            rec.status = 499;
            rec.error_kind = Some("cancelled".into());
        }
        self.reservation
            .settle(usage.prompt_tokens + usage.completion_tokens);
        let finish_reason = if cancelled {
            Some("cancelled".to_owned())
        } else {
            self.finish_reason.clone()
        };
        if let Ok(mut s) = self.summary.lock() {
            *s = Some(StreamSummary {
                usage: usage.clone(),
                usage_source: source,
                finish_reason,
                latency_ms: rec.latency_ms,
                ttft_ms: self.ttft,
                error_kind: rec.error_kind.clone(),
            });
        }
        self.hub.record_messages(
            &self.conversation_id,
            &self.cand,
            &self.req,
            &self.text,
            &usage,
            rec.ts_ms,
        );
        self.hub.0.stats.record(rec);
    }
}

impl Drop for Accounting {
    fn drop(&mut self) {
        self.finish(None, true);
    }
}

#[derive(Deserialize)]
struct ChunkIds {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    created: Option<i64>,
}

struct StreamState {
    events: EventStream,
    /// Turns the provider's events into OpenAI chunks.
    decoder: Box<dyn StreamDecoder>,
    /// Decoded chunks not yet handed to the caller.
    pending: std::collections::VecDeque<String>,
    /// The decoder saw the end of the answer.
    upstream_done: bool,
    idle: Duration,
    acct: Accounting,
    strip_usage: bool,
    /// The client asked for usage: if the upstream sends none, the hub sends its own count.
    synthesize_usage: bool,
    normalize: bool,
    finished: bool,
}

impl StreamState {
    async fn next_item(&mut self) -> Option<Result<ChatChunk>> {
        if self.finished {
            return None;
        }
        loop {
            let data = match self.pending.pop_front() {
                Some(d) => d,
                None if self.upstream_done => return self.end(),
                None => match tokio::time::timeout(self.idle, self.events.next()).await {
                    Err(_) => {
                        return self.fail(Error::Timeout {
                            phase: TimeoutPhase::Idle,
                        })
                    }
                    Ok(Some(Ok(ev))) => match self.decoder.decode(&ev.event, ev.data) {
                        Ok(Decoded::Chunks(c)) => {
                            self.pending.extend(c);
                            continue;
                        }
                        Ok(Decoded::Done) => {
                            self.upstream_done = true;
                            continue;
                        }
                        Err(e) => return self.fail(e),
                    },
                    Ok(Some(Err(e))) => {
                        return self.fail(Error::Transport(format!("stream broke: {e}")))
                    }
                    Ok(None) => {
                        if self.acct.finish_reason.is_some() {
                            // Some upstreams end without [DONE]; a finish_reason already ended
                            // the answer, so this is a normal end.
                            return self.end();
                        }
                        return self.fail(Error::Transport(
                            "upstream closed the stream before it finished".into(),
                        ));
                    }
                },
            };
            let d = data.trim();
            if d.is_empty() {
                continue;
            }
            let chunk = if self.normalize {
                match serde_json::from_str::<Value>(d) {
                    Ok(v) => ChatChunk::parse(
                        openai::normalize_chunk(v, &self.acct.req.model).to_string(),
                    ),
                    Err(e) => Err(Error::Upstream {
                        status: None,
                        message: format!("malformed stream chunk: {e}"),
                        body: Some(openai::truncate(d, 4096)),
                        retry_after: None,
                    }),
                }
            } else {
                ChatChunk::parse(data)
            };
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => return self.fail(e),
            };
            if self.acct.chunk_id.is_none() {
                if let Ok(ChunkIds {
                    id: Some(id),
                    created,
                }) = serde_json::from_str::<ChunkIds>(chunk.json())
                {
                    self.acct.chunk_id = Some((id, created.unwrap_or(now_ms() / 1000)));
                }
            }
            if let Some(u) = chunk.usage() {
                // The last usage object wins; upstreams that repeat it send running totals.
                self.acct.usage = Some((u.clone(), UsageSource::Upstream));
            }
            let mut produced = false;
            for t in chunk.completion_texts() {
                produced |= !t.is_empty();
                self.acct.add_text(t);
            }
            if produced && self.acct.ttft.is_none() {
                self.acct.ttft = Some(self.acct.start.elapsed().as_secs_f64() * 1000.0);
            }
            if let Some(f) = chunk.finish_reason() {
                self.acct.finish_reason = Some(f.to_owned());
            }
            if self.strip_usage && chunk.is_usage_only() {
                continue;
            }
            return Some(Ok(chunk));
        }
    }

    /// The normal end. When the client asked for usage and the upstream sent none (llama.cpp's
    /// server and older vLLM ignore `include_usage`), the hub sends the usage chunk itself,
    /// counted from the prompt and the streamed text, exactly once, before the end.
    fn end(&mut self) -> Option<Result<ChatChunk>> {
        self.finished = true;
        let synth = if self.synthesize_usage && self.acct.usage.is_none() {
            let (usage, _) = self.acct.usage();
            let (id, created) =
                self.acct.chunk_id.clone().unwrap_or_else(|| {
                    (format!("chatcmpl-{}", crypto::random_id()), now_ms() / 1000)
                });
            let v = serde_json::json!({
                "id": id, "object": "chat.completion.chunk", "created": created,
                "model": self.acct.req.model, "choices": [], "usage": usage,
            });
            ChatChunk::parse(v.to_string()).ok()
        } else {
            None
        };
        self.acct.finish(None, false);
        synth.map(Ok)
    }

    fn fail(&mut self, e: Error) -> Option<Result<ChatChunk>> {
        self.finished = true;
        tracing::warn!(
            request_id = %self.acct.rec.as_ref().map_or("", |r| r.request_id.as_str()),
            provider = %self.acct.cand.provider.record.name,
            error = %e,
            "upstream stream failed"
        );
        self.acct.finish(Some(&e), false);
        Some(Err(e))
    }
}

/// A stream of chat chunks. Ends after the upstream's `[DONE]` (which is not yielded), or with one
/// `Err` item. Dropping it cancels the upstream request and records what was produced.
pub struct ChatStream {
    inner: Pin<Box<dyn Stream<Item = Result<ChatChunk>> + Send>>,
    /// Request id.
    pub request_id: String,
    /// Conversation id.
    pub conversation_id: String,
    /// The provider serving the stream.
    pub provider_id: i64,
    /// Its name.
    pub provider_name: String,
    /// Upstream `x-ratelimit-*` headers.
    pub rate_limit_headers: Vec<(String, String)>,
    /// Milliseconds spent waiting for the upstream to open the stream (all attempts).
    pub upstream_ms: f64,
    summary: Arc<Mutex<Option<StreamSummary>>>,
}

impl std::fmt::Debug for ChatStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatStream")
            .field("request_id", &self.request_id)
            .finish_non_exhaustive()
    }
}

impl ChatStream {
    /// The next chunk; `None` at the end.
    pub async fn next(&mut self) -> Option<Result<ChatChunk>> {
        StreamExt::next(self).await
    }

    /// How the stream ended (usage, finish reason, timings), once it has ended.
    pub fn summary(&self) -> Option<StreamSummary> {
        self.summary.lock().ok().and_then(|s| s.clone())
    }

    /// A shared handle to the end summary, readable after the stream is dropped.
    pub fn summary_handle(&self) -> Arc<Mutex<Option<StreamSummary>>> {
        self.summary.clone()
    }
}

impl Stream for ChatStream {
    type Item = Result<ChatChunk>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}
