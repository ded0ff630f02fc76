//! The [`Hub`]: registry + streaming upstream client + token estimator + stats, in one handle.
//!
//! A chat goes: authenticate the key, route the model to candidate providers, check the key's
//! limits, call the upstream with retries and failover, and record exactly one usage row.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::crypto::{self, MasterKey};
use crate::error::{Error, ErrorKind, Result, TimeoutPhase};
use crate::now_ms;
use crate::openai::{self, ChatChunk, ChatCompletion, ChatRequest, Usage};
use crate::records::{ClientKey, NewSession, Session, SessionMessage};
use crate::registry::{Candidate, Registry};
use crate::resilience::{CacheConfig, Health, RateLimiter, ResponseCache, RetryConfig};
use crate::stats::{
    ConversationStats, MessageRecord, RequestSource, StatsConfig, StatsWriter, Summary, Timeseries,
    TimeseriesQuery, UsageRecord, UsageSource,
};
use crate::store::{GroupKey, SqliteStore, Store};
use crate::tokens::{Encoding, TokenCount, TokenEstimator};

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
        }
    }
}

/// Who is asking.
#[derive(Debug, Clone)]
pub enum Caller {
    /// A client key as presented (`Authorization: Bearer ...`).
    Key(String),
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

struct HubInner {
    registry: Registry,
    http: reqwest::Client,
    tokens: TokenEstimator,
    stats: StatsWriter,
    health: Health,
    limiter: RateLimiter,
    cache: Option<ResponseCache<CachedAnswer>>,
    opts: HubOptions,
    rr: AtomicU64,
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
        let http = reqwest::Client::builder()
            .connect_timeout(opts.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| Error::Internal(format!("cannot build HTTP client: {e}")))?;
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
            http,
            tokens,
            stats,
            health: Health::default(),
            limiter: RateLimiter::default(),
            cache: opts.cache.clone().map(ResponseCache::new),
            opts,
            rr: AtomicU64::new(0),
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

    /// Dashboard totals.
    pub fn summary(&self) -> Result<Summary> {
        let mut s = self.0.registry.store().summary()?;
        let (p, m, k) = self.0.registry.counts()?;
        s.providers = p as u64;
        s.models = m as u64;
        s.keys = k as u64;
        Ok(s)
    }

    /// A usage time series.
    pub fn timeseries(&self, q: &TimeseriesQuery) -> Result<Timeseries> {
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

    fn prepare(
        &self,
        caller: &Caller,
        req: &ChatRequest,
    ) -> Result<(Option<ClientKey>, Vec<Candidate>)> {
        req.validate()?;
        let (key, pin) = match caller {
            Caller::Key(k) => (Some(self.0.registry.authenticate(k)?), None),
            Caller::Admin { provider_id } => (None, *provider_id),
        };
        let mut cands = self.0.registry.route(key.as_ref(), &req.model, pin)?;
        self.order_candidates(&mut cands)?;
        if let Some(k) = &key {
            let prompt = if k.tpm.is_some() {
                self.0
                    .tokens
                    .count_messages(&req.model, &req.messages)
                    .tokens
            } else {
                0
            };
            self.0.limiter.admit(k.id, k.rpm, k.tpm, prompt)?;
            self.touch_key(k.id);
        }
        Ok((key, cands))
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

    /// Weighted rotation among healthy candidates, cooling ones left out.
    fn order_candidates(&self, c: &mut Vec<Candidate>) -> Result<()> {
        let mut soonest: Option<Duration> = None;
        c.retain(|cand| match self.0.health.check(cand.provider.record.id) {
            Ok(()) => true,
            Err(left) => {
                soonest = Some(soonest.map_or(left, |s| s.min(left)));
                false
            }
        });
        if c.is_empty() {
            return Err(Error::Unavailable(format!(
                "every provider serving this model is cooling down after failures; retry in {}s",
                soonest.map_or(1, |d| d.as_secs().max(1))
            )));
        }
        let weights: Vec<u64> = c
            .iter()
            .map(|x| x.provider.record.options.weight.unwrap_or(1) as u64)
            .collect();
        let total: u64 = weights.iter().sum();
        if c.len() > 1 && total > 0 {
            let mut slot = self.0.rr.fetch_add(1, Ordering::Relaxed) % total;
            let mut first = 0;
            for (i, w) in weights.iter().enumerate() {
                if slot < *w {
                    first = i;
                    break;
                }
                slot -= w;
            }
            c.rotate_left(first);
        }
        Ok(())
    }

    fn upstream_body(
        &self,
        req: &ChatRequest,
        cand: &Candidate,
        stream: bool,
        inject_usage: bool,
    ) -> Result<Vec<u8>> {
        let mut r = req.clone();
        r.model = cand.model.upstream().to_owned();
        r.stream = if stream {
            Some(true)
        } else {
            req.stream.filter(|s| *s)
        };
        if stream && inject_usage {
            let mut so = match r.stream_options.take() {
                Some(Value::Object(m)) => m,
                _ => serde_json::Map::new(),
            };
            so.insert("include_usage".into(), Value::Bool(true));
            r.stream_options = Some(Value::Object(so));
        }
        if !stream {
            r.stream_options = None;
        }
        serde_json::to_vec(&r).map_err(|e| Error::Internal(e.to_string()))
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

    async fn send(
        &self,
        cand: &Candidate,
        body: Vec<u8>,
        first_byte: Duration,
    ) -> Result<reqwest::Response> {
        let p = &cand.provider;
        let rb = match &p.endpoint_url {
            Some(url) => self.0.http.post(url.clone()),
            None => self.0.http.post(&p.record.endpoint),
        };
        let mut rb = rb
            .bearer_auth(p.api_key.expose())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        for (k, v) in &p.headers {
            rb = rb.header(k.as_str(), v.expose());
        }
        let resp = match tokio::time::timeout(first_byte, rb.send()).await {
            Err(_) => {
                return Err(Error::Timeout {
                    phase: TimeoutPhase::FirstByte,
                })
            }
            Ok(Err(e)) if e.is_connect() => {
                return Err(if e.is_timeout() {
                    Error::Timeout {
                        phase: TimeoutPhase::Connect,
                    }
                } else {
                    Error::Transport(redact(&e))
                })
            }
            Ok(Err(e)) if e.is_timeout() => {
                return Err(Error::Timeout {
                    phase: TimeoutPhase::FirstByte,
                })
            }
            Ok(Err(e)) => return Err(Error::Transport(redact(&e))),
            Ok(Ok(r)) => r,
        };
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64);
        let body = match tokio::time::timeout(first_byte, resp.bytes()).await {
            Ok(Ok(b)) => String::from_utf8_lossy(&b[..b.len().min(65536)]).into_owned(),
            _ => String::new(),
        };
        let message = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| {
                v.get("error")
                    .and_then(|e| e.get("message").or(Some(e)))
                    .and_then(|m| m.as_str().map(str::to_owned))
                    .or_else(|| v.get("message").and_then(Value::as_str).map(str::to_owned))
            })
            .unwrap_or_else(|| format!("provider '{}' answered HTTP {status}", p.record.name));
        Err(Error::Upstream {
            status: Some(status),
            message,
            body: Some(body),
            retry_after,
        })
    }

    /// Runs `attempt` over the candidates with retries, backoff and failover. Returns the result
    /// and the candidate that produced it.
    async fn with_failover<T, F, Fut>(
        &self,
        cands: &[Candidate],
        mut attempt: F,
    ) -> (Result<T>, usize, f64)
    where
        F: FnMut(usize) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let cfg = &self.0.opts.retry;
        let mut upstream_ms = 0.0;
        let mut last_err = Error::Internal("no candidate".into());
        for (ci, cand) in cands.iter().enumerate() {
            let pid = cand.provider.record.id;
            if ci > 0 && self.0.health.check(pid).is_err() {
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
                        self.0.health.success(pid);
                        return (Ok(v), ci, upstream_ms);
                    }
                    Err(e) => {
                        let health_failure = e.is_retryable()
                            && e.kind() != ErrorKind::RateLimited
                            && !matches!(
                                e,
                                Error::Upstream {
                                    status: Some(429),
                                    ..
                                }
                            );
                        if health_failure {
                            self.0.health.failure(pid, cfg);
                        }
                        if !e.is_retryable() {
                            return (Err(e), ci, upstream_ms);
                        }
                        tracing::warn!(provider = %cand.provider.record.name, attempt = n, error = %e, "upstream attempt failed");
                        let delay = if n < max && !self.0.health.is_cooling(pid) {
                            cfg.delay(n, e.retry_after())
                        } else {
                            None
                        };
                        last_err = e;
                        match delay {
                            Some(d) => tokio::time::sleep(d).await,
                            None => break,
                        }
                    }
                }
            }
        }
        (Err(last_err), cands.len().saturating_sub(1), upstream_ms)
    }

    /// A non-streaming chat completion.
    pub async fn chat(
        &self,
        caller: Caller,
        req: ChatRequest,
        ctx: RequestContext,
    ) -> Result<ChatResponse> {
        let start = Instant::now();
        let ts_ms = now_ms();
        let request_id = ctx.request_id.clone().unwrap_or_else(crypto::random_id);
        let conversation_id = ctx
            .conversation_id
            .clone()
            .unwrap_or_else(crypto::random_id);
        let mut rec = UsageRecord {
            ts_ms,
            request_id: request_id.clone(),
            conversation_id: Some(conversation_id.clone()),
            key_id: None,
            provider_id: None,
            model: req.model.clone(),
            upstream_model: None,
            prompt_tokens: 0,
            completion_tokens: 0,
            usage_source: UsageSource::Estimate,
            status: 200,
            error_kind: None,
            latency_ms: 0.0,
            ttft_ms: None,
            stream: false,
            source: ctx.source,
            cost: None,
        };
        let (key, cands) = match self.prepare(&caller, &req) {
            Ok(v) => v,
            Err(e) => {
                self.record_failure(rec, &e, start);
                return Err(e);
            }
        };
        rec.key_id = key.as_ref().map(|k| k.id);

        let cache_key = self.0.cache.as_ref().and_then(|_| {
            serde_json::to_vec(&(&req.model, &req.messages, &req.extra))
                .ok()
                .map(|b| ResponseCache::<CachedAnswer>::key(&b))
        });
        if let (Some(cache), Some(k)) = (&self.0.cache, &cache_key) {
            if let Some((completion, body, pid, pname)) = cache.get(k) {
                rec.provider_id = Some(pid);
                rec.latency_ms = start.elapsed().as_secs_f64() * 1000.0;
                self.0.stats.record(rec);
                let usage = completion.usage.clone().unwrap_or_default();
                return Ok(ChatResponse {
                    completion,
                    body,
                    usage,
                    usage_source: UsageSource::Upstream,
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

        let (result, ci, upstream_ms) = self
            .with_failover(&cands, |ci| {
                let cand = cands[ci].clone();
                let hub = self.clone();
                let req = &req;
                async move {
                    let (first_byte, _) = hub.timeouts(&cand);
                    let body = hub.upstream_body(req, &cand, false, false)?;
                    let resp = hub.send(&cand, body, first_byte).await?;
                    let rl = rate_limit_headers(resp.headers());
                    let bytes = match tokio::time::timeout(first_byte, resp.bytes()).await {
                        Err(_) => {
                            return Err(Error::Timeout {
                                phase: TimeoutPhase::Total,
                            })
                        }
                        Ok(Err(e)) => return Err(Error::Transport(redact(&e))),
                        Ok(Ok(b)) => b,
                    };
                    Ok((bytes, rl))
                }
            })
            .await;
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
        let normalize = cand.provider.record.options.normalize.unwrap_or(false);
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
        let (completion, body) = match parsed {
            Ok(v) => v,
            Err(e) => {
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
                let c = self
                    .0
                    .tokens
                    .count_text(&req.model, completion.content().unwrap_or(""))
                    .tokens;
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
        rec.prompt_tokens = usage.prompt_tokens;
        rec.completion_tokens = usage.completion_tokens;
        rec.usage_source = source;
        rec.cost = cost(&cand.model, &usage);
        rec.latency_ms = start.elapsed().as_secs_f64() * 1000.0;
        if let Some(k) = &key {
            self.0.limiter.add_tokens(k.id, usage.completion_tokens);
        }
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
        let ts_ms = now_ms();
        let request_id = ctx.request_id.clone().unwrap_or_else(crypto::random_id);
        let conversation_id = ctx
            .conversation_id
            .clone()
            .unwrap_or_else(crypto::random_id);
        let mut rec = UsageRecord {
            ts_ms,
            request_id: request_id.clone(),
            conversation_id: Some(conversation_id.clone()),
            key_id: None,
            provider_id: None,
            model: req.model.clone(),
            upstream_model: None,
            prompt_tokens: 0,
            completion_tokens: 0,
            usage_source: UsageSource::Estimate,
            status: 200,
            error_kind: None,
            latency_ms: 0.0,
            ttft_ms: None,
            stream: true,
            source: ctx.source,
            cost: None,
        };
        let (key, cands) = match self.prepare(&caller, &req) {
            Ok(v) => v,
            Err(e) => {
                self.record_failure(rec, &e, start);
                return Err(e);
            }
        };
        rec.key_id = key.as_ref().map(|k| k.id);
        let client_wants_usage = req.wants_stream_usage();

        let (result, ci, _) = self
            .with_failover(&cands, |ci| {
                let cand = cands[ci].clone();
                let hub = self.clone();
                let req = &req;
                async move {
                    let (first_byte, _) = hub.timeouts(&cand);
                    let inject = !client_wants_usage
                        && cand.provider.record.options.request_usage.unwrap_or(true);
                    let body = hub.upstream_body(req, &cand, true, inject)?;
                    let resp = hub.send(&cand, body, first_byte).await?;
                    let ct = resp
                        .headers()
                        .get(reqwest::header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_ascii_lowercase();
                    if !ct.starts_with("text/event-stream") {
                        return Err(Error::Upstream {
                            status: Some(resp.status().as_u16()),
                            message: format!(
                                "expected text/event-stream from upstream, got '{ct}'"
                            ),
                            body: None,
                            retry_after: None,
                        });
                    }
                    let rl = rate_limit_headers(resp.headers());
                    let mut events: EventStream =
                        Box::pin(eventsource_stream::EventStream::new(resp.bytes_stream()));
                    // Read the first event here so that a failure before anything reached the
                    // caller can still be retried or failed over.
                    let first = match tokio::time::timeout(first_byte, events.next()).await {
                        Err(_) => {
                            return Err(Error::Timeout {
                                phase: TimeoutPhase::FirstByte,
                            })
                        }
                        Ok(None) => {
                            return Err(Error::Transport(
                                "upstream closed the stream before the first event".into(),
                            ))
                        }
                        Ok(Some(Err(e))) => {
                            return Err(Error::Transport(format!("stream broke: {e}")))
                        }
                        Ok(Some(Ok(ev))) => ev.data,
                    };
                    if first.contains("\"error\"") {
                        // An error payload as the first event is worth a retry or failover too.
                        if let Err(Error::Upstream { message, body, .. }) =
                            ChatChunk::parse(first.clone())
                        {
                            return Err(Error::Upstream {
                                status: Some(502),
                                message,
                                body,
                                retry_after: None,
                            });
                        }
                    }
                    Ok((events, first, rl, inject))
                }
            })
            .await;
        let cand = cands[ci].clone();
        rec.provider_id = Some(cand.provider.record.id);
        rec.upstream_model = Some(cand.model.upstream().to_owned());
        let (events, first, rl, injected) = match result {
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
            req_model: req.model.clone(),
            messages: req.messages,
            cand: cand.clone(),
            key_id: key.as_ref().map(|k| k.id),
            text: String::new(),
            usage: None,
            finish_reason: None,
            ttft: None,
            summary: summary.clone(),
            conversation_id: conversation_id.clone(),
        };
        let state = StreamState {
            events,
            pending: Some(first),
            idle,
            acct,
            strip_usage: injected && !client_wants_usage,
            normalize: cand.provider.record.options.normalize.unwrap_or(false),
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
            let ns = self
                .chat(caller.clone(), req.clone(), RequestContext::default())
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

type EventStream = Pin<
    Box<
        dyn Stream<
                Item = std::result::Result<
                    eventsource_stream::Event,
                    eventsource_stream::EventStreamError<reqwest::Error>,
                >,
            > + Send,
    >,
>;

fn malformed(e: &serde_json::Error, body: &[u8]) -> Error {
    Error::Upstream {
        status: None,
        message: format!("malformed upstream response: {e}"),
        body: Some(String::from_utf8_lossy(&body[..body.len().min(4096)]).into_owned()),
        retry_after: None,
    }
}

/// reqwest errors can include the URL; keep them, but never a query string (some upstreams take
/// keys there).
fn redact(e: &reqwest::Error) -> String {
    let s = e.without_url_ref_string();
    match e.url() {
        Some(u) => format!(
            "{s} ({}://{}{})",
            u.scheme(),
            u.host_str().unwrap_or(""),
            u.port().map(|p| format!(":{p}")).unwrap_or_default()
        ),
        None => s,
    }
}

trait WithoutUrl {
    fn without_url_ref_string(&self) -> String;
}

impl WithoutUrl for reqwest::Error {
    fn without_url_ref_string(&self) -> String {
        let mut e = None;
        let mut src: Option<&dyn std::error::Error> = std::error::Error::source(self);
        while let Some(s) = src {
            e = Some(s.to_string());
            src = s.source();
        }
        let kind = if self.is_connect() {
            "connection failed"
        } else if self.is_timeout() {
            "timed out"
        } else if self.is_body() || self.is_decode() {
            "response body failed"
        } else {
            "request failed"
        };
        match e {
            Some(cause) => format!("{kind}: {cause}"),
            None => kind.to_owned(),
        }
    }
}

fn rate_limit_headers(h: &reqwest::header::HeaderMap) -> Vec<(String, String)> {
    h.iter()
        .filter(|(k, _)| k.as_str().starts_with("x-ratelimit-"))
        .filter_map(|(k, v)| {
            v.to_str()
                .ok()
                .map(|v| (k.as_str().to_owned(), v.to_owned()))
        })
        .collect()
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

/// Accounts for one stream and writes its usage record exactly once: at the end, on error, or
/// when the stream is dropped early (then with what was produced so far).
struct Accounting {
    hub: Hub,
    rec: Option<UsageRecord>,
    start: Instant,
    req_model: String,
    messages: Vec<Value>,
    cand: Candidate,
    key_id: Option<i64>,
    text: String,
    usage: Option<Usage>,
    finish_reason: Option<String>,
    ttft: Option<f64>,
    summary: Arc<Mutex<Option<StreamSummary>>>,
    conversation_id: String,
}

impl Accounting {
    fn finish(&mut self, error: Option<&Error>, cancelled: bool) {
        let Some(mut rec) = self.rec.take() else {
            return;
        };
        let tokens = &self.hub.0.tokens;
        let (usage, source) = match self.usage.take() {
            Some(u) => (u, UsageSource::Upstream),
            None => {
                let p = tokens
                    .count_messages(&self.req_model, &self.messages)
                    .tokens;
                let c = tokens.count_text(&self.req_model, &self.text).tokens;
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
        rec.prompt_tokens = usage.prompt_tokens;
        rec.completion_tokens = usage.completion_tokens;
        rec.usage_source = source;
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
        if let Some(k) = self.key_id {
            self.hub.0.limiter.add_tokens(k, usage.completion_tokens);
        }
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
        let req = ChatRequest {
            model: self.req_model.clone(),
            messages: std::mem::take(&mut self.messages),
            stream: None,
            stream_options: None,
            extra: Default::default(),
        };
        self.hub.record_messages(
            &self.conversation_id,
            &self.cand,
            &req,
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

struct StreamState {
    events: EventStream,
    pending: Option<String>,
    idle: Duration,
    acct: Accounting,
    strip_usage: bool,
    normalize: bool,
    finished: bool,
}

impl StreamState {
    async fn next_item(&mut self) -> Option<Result<ChatChunk>> {
        if self.finished {
            return None;
        }
        loop {
            let data = match self.pending.take() {
                Some(d) => d,
                None => match tokio::time::timeout(self.idle, self.events.next()).await {
                    Err(_) => {
                        return self.fail(Error::Timeout {
                            phase: TimeoutPhase::Idle,
                        })
                    }
                    Ok(Some(Ok(ev))) => ev.data,
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
            if d == "[DONE]" {
                return self.end();
            }
            let chunk = if self.normalize {
                match serde_json::from_str::<Value>(d) {
                    Ok(v) => ChatChunk::parse(
                        openai::normalize_chunk(v, &self.acct.req_model).to_string(),
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
            if let Some(u) = chunk.usage() {
                // The last usage object wins; upstreams that repeat it send running totals.
                self.acct.usage = Some(u.clone());
            }
            if let Some(t) = chunk.delta() {
                if self.acct.ttft.is_none() && !t.is_empty() {
                    self.acct.ttft = Some(self.acct.start.elapsed().as_secs_f64() * 1000.0);
                }
                self.acct.text.push_str(t);
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

    fn end(&mut self) -> Option<Result<ChatChunk>> {
        self.finished = true;
        self.acct.finish(None, false);
        None
    }

    fn fail(&mut self, e: Error) -> Option<Result<ChatChunk>> {
        self.finished = true;
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
