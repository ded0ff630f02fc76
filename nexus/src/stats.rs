//! Usage statistics: the record written once per request, the background writer that batches
//! records into the store off the request path, and the query shapes of the dashboard.
//!
//! The writer is one OS thread fed through a mutex-guarded buffer. It commits a batch when it holds
//! [`StatsConfig::batch_size`] records or when [`StatsConfig::flush_interval`] has passed since the
//! first record of the batch, so a crash loses at most one interval. [`StatsWriter::flush`] and
//! dropping the last handle drain everything.

use serde::{Deserialize, Serialize};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::store::Store;

/// Where the token counts of a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageSource {
    /// The upstream's `usage` object.
    Upstream,
    /// Counted by the token estimator.
    Estimate,
    /// Served from the response cache: the cached answer's usage, at no cost.
    Cache,
}

impl UsageSource {
    /// Stable name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            UsageSource::Upstream => "upstream",
            UsageSource::Estimate => "estimate",
            UsageSource::Cache => "cache",
        }
    }
}

/// Which front end made the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestSource {
    /// The OpenAI-compatible HTTP API.
    Api,
    /// The WebSocket chat tester.
    Ws,
    /// The library, from Rust, C or Python.
    Library,
}

impl RequestSource {
    /// Stable name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestSource::Api => "api",
            RequestSource::Ws => "ws",
            RequestSource::Library => "library",
        }
    }
}

/// One request's usage. Written exactly once per request, whatever its outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageRecord {
    /// Unix milliseconds at the start of the request.
    pub ts_ms: i64,
    /// Request id.
    pub request_id: String,
    /// Conversation the request belongs to.
    pub conversation_id: Option<String>,
    /// Client key id (None for admin and library callers).
    pub key_id: Option<i64>,
    /// Provider finally used (None when routing failed).
    pub provider_id: Option<i64>,
    /// Model name the client asked for.
    pub model: String,
    /// Model name sent upstream.
    pub upstream_model: Option<String>,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Where the counts came from.
    pub usage_source: UsageSource,
    /// HTTP status of the outcome (200 on success; 499 when the client went away).
    pub status: u16,
    /// Error kind name when the request failed.
    pub error_kind: Option<String>,
    /// Total time in milliseconds.
    pub latency_ms: f64,
    /// Time to first token (streams) in milliseconds.
    pub ttft_ms: Option<f64>,
    /// Streamed or not.
    pub stream: bool,
    /// Front end.
    pub source: RequestSource,
    /// Cost from the model's configured prices.
    pub cost: Option<f64>,
}

/// A message kept for the conversation view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageRecord {
    /// Unix milliseconds.
    pub ts_ms: i64,
    /// Conversation id.
    pub conversation_id: String,
    /// Provider.
    pub provider_id: Option<i64>,
    /// Model.
    pub model: String,
    /// `user` or `assistant`.
    pub role: String,
    /// Text.
    pub content: String,
    /// Tokens of this message.
    pub tokens: u64,
}

/// Totals for the dashboard; includes the original `/stats/total` keys.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Providers configured.
    pub providers: u64,
    /// Models configured.
    pub models: u64,
    /// Client keys configured.
    pub keys: u64,
    /// Distinct conversations.
    pub conversations: u64,
    /// Successful request/response rounds.
    pub rounds: u64,
    /// All requests.
    pub requests: u64,
    /// Failed requests.
    pub errors: u64,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Sum of both.
    pub total_tokens: u64,
    /// Total cost from configured prices.
    pub cost: f64,
    /// Original key: same as `conversations`.
    pub total_conversations: u64,
    /// Original key: same as `rounds`.
    pub total_rounds: u64,
}

/// Time bucket of a series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Bucket {
    /// One point per hour.
    Hour,
    /// One point per UTC day.
    Day,
}

/// Grouping of a series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    /// By client-facing model name.
    Model,
    /// By provider name.
    Provider,
    /// By client key name.
    Key,
}

/// A time-series query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeseriesQuery {
    /// Bucket size.
    pub bucket: Bucket,
    /// Optional grouping.
    pub group_by: Option<GroupBy>,
    /// Unix seconds; points before it are left out.
    pub since: i64,
}

/// One point of a series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimeseriesPoint {
    /// Unix seconds at the bucket start.
    pub ts: i64,
    /// Group label (`all` without grouping).
    pub group: String,
    /// Requests.
    pub requests: u64,
    /// Failed requests.
    pub errors: u64,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Mean latency.
    pub avg_latency_ms: f64,
    /// Mean time to first token over streamed requests, if any.
    pub avg_ttft_ms: Option<f64>,
    /// Cost.
    pub cost: f64,
}

/// A series answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timeseries {
    /// Bucket size.
    pub bucket: Bucket,
    /// Grouping, if any.
    pub group_by: Option<GroupBy>,
    /// Points ordered by time then group.
    pub points: Vec<TimeseriesPoint>,
}

/// One message in the conversation view (the original's shape).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationMessage {
    /// Unix milliseconds.
    pub timestamp: i64,
    /// `user` or `assistant`.
    pub role: String,
    /// Text.
    pub content: String,
    /// Tokens.
    pub tokens_count: u64,
}

/// A conversation's totals and messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationStats {
    /// Id.
    pub conversation_id: String,
    /// Request/response rounds.
    pub rounds: u64,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Sum.
    pub total_tokens: u64,
    /// Messages, oldest first.
    pub messages: Vec<ConversationMessage>,
}

/// Writer tuning.
#[derive(Debug, Clone)]
pub struct StatsConfig {
    /// Commit when this many records wait.
    pub batch_size: usize,
    /// Commit at least this often while records wait; bounds what a crash can lose.
    pub flush_interval: Duration,
}

impl Default for StatsConfig {
    fn default() -> Self {
        StatsConfig {
            batch_size: 512,
            flush_interval: Duration::from_millis(500),
        }
    }
}

/// What the request path hands to the writer thread, behind one short-held mutex.
#[derive(Default)]
struct Pending {
    usage: Vec<UsageRecord>,
    messages: Vec<MessageRecord>,
    /// When the oldest waiting record arrived; `None` while nothing waits.
    first_at: Option<Instant>,
    /// Records (usage and messages) ever queued, and ever taken into a commit.
    queued: u64,
    committed: u64,
    /// The result of the last commit, for `flush`.
    last_error: Option<String>,
    flush_wanted: bool,
    closed: bool,
}

struct Shared {
    pending: Mutex<Pending>,
    /// The writer sleeps on it. The request path signals it only when a batch starts or fills,
    /// never per record: a wake-up per request was a futex syscall and a context switch each.
    wake: Condvar,
    /// `flush` callers sleep on it until their records are committed.
    done: Condvar,
    batch_size: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // A panic while holding the lock cannot leave `Pending` half-updated in a way that
        // matters (pushes and counters), so a poisoned lock is still usable.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, f: impl FnOnce(&mut Pending)) {
        let mut p = self.lock();
        if p.closed {
            drop(p);
            tracing::error!("stats writer is gone; a record was dropped");
            return;
        }
        f(&mut p);
        p.queued += 1;
        let starts = p.first_at.is_none();
        if starts {
            p.first_at = Some(Instant::now());
        }
        let full = p.usage.len() >= self.batch_size;
        drop(p);
        if starts || full {
            self.wake.notify_one();
        }
    }
}

struct WriterInner {
    shared: Arc<Shared>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Drop for WriterInner {
    fn drop(&mut self) {
        // Closing makes the thread drain and exit; joining makes "nothing is lost on shutdown"
        // hold for every owner that drops the Hub.
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
        if let Ok(mut t) = self.thread.lock() {
            if let Some(h) = t.take() {
                let _ = h.join();
            }
        }
    }
}

/// Handle to the background stats writer. Cheap to clone; queuing a record never blocks on the
/// database and normally makes no system call.
#[derive(Clone)]
pub struct StatsWriter {
    shared: Arc<Shared>,
    _inner: Arc<WriterInner>,
}

impl std::fmt::Debug for StatsWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StatsWriter")
    }
}

impl StatsWriter {
    /// Starts the writer thread over `store`.
    pub fn start(store: Arc<dyn Store>, cfg: StatsConfig) -> Result<Self> {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            done: Condvar::new(),
            batch_size: cfg.batch_size.max(1),
        });
        let for_thread = shared.clone();
        let handle = std::thread::Builder::new()
            .name("nexus-stats".into())
            .spawn(move || writer_loop(store, cfg, &for_thread))
            .map_err(|e| Error::Internal(format!("cannot start stats writer: {e}")))?;
        Ok(StatsWriter {
            shared: shared.clone(),
            _inner: Arc::new(WriterInner {
                shared,
                thread: Mutex::new(Some(handle)),
            }),
        })
    }

    /// Queues a usage record.
    pub fn record(&self, rec: UsageRecord) {
        self.shared.push(|p| p.usage.push(rec));
    }

    /// Queues a conversation message.
    pub fn message(&self, rec: MessageRecord) {
        self.shared.push(|p| p.messages.push(rec));
    }

    /// Blocks until everything queued before this call is committed.
    pub fn flush(&self) -> Result<()> {
        let mut p = self.shared.lock();
        let target = p.queued;
        if p.committed >= target {
            return Ok(());
        }
        if p.closed {
            return Err(Error::Internal("stats writer is gone".into()));
        }
        p.flush_wanted = true;
        self.shared.wake.notify_one();
        while p.committed < target {
            p = self.shared.done.wait(p).unwrap_or_else(|e| e.into_inner());
        }
        match &p.last_error {
            None => Ok(()),
            Some(e) => Err(Error::Storage(e.clone())),
        }
    }
}

fn writer_loop(store: Arc<dyn Store>, cfg: StatsConfig, shared: &Shared) {
    let commit = |usage: &[UsageRecord], messages: &[MessageRecord]| -> Result<()> {
        if usage.is_empty() && messages.is_empty() {
            return Ok(());
        }
        let mut last = Err(Error::Internal("unreachable".into()));
        // A busy database is transient; retry a few times before giving the batch up.
        for attempt in 0..5u32 {
            last = store.insert_usage(usage, messages);
            if last.is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20 << attempt));
        }
        if let Err(e) = &last {
            tracing::error!(error = %e, records = usage.len(), "failed to write usage batch");
        }
        last
    };
    let mut usage: Vec<UsageRecord> = Vec::with_capacity(cfg.batch_size);
    let mut messages: Vec<MessageRecord> = Vec::new();
    loop {
        let mut p = shared.lock();
        loop {
            if p.closed || p.flush_wanted || p.usage.len() >= shared.batch_size {
                break;
            }
            p = match p.first_at {
                None => shared.wake.wait(p).unwrap_or_else(|e| e.into_inner()),
                Some(t) => {
                    let left = cfg.flush_interval.saturating_sub(t.elapsed());
                    if left.is_zero() {
                        break;
                    }
                    shared
                        .wake
                        .wait_timeout(p, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
        // Swap the buffers so the request path keeps pushing while this thread writes.
        std::mem::swap(&mut usage, &mut p.usage);
        std::mem::swap(&mut messages, &mut p.messages);
        let target = p.queued;
        let closing = p.closed;
        p.first_at = None;
        p.flush_wanted = false;
        drop(p);
        let res = commit(&usage, &messages);
        usage.clear();
        messages.clear();
        let mut p = shared.lock();
        p.committed = target;
        p.last_error = res.err().map(|e| e.to_string());
        let drained = p.usage.is_empty() && p.messages.is_empty();
        drop(p);
        shared.done.notify_all();
        if closing && drained {
            break;
        }
    }
}
