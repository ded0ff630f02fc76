//! The usage statistics writer: the background thread that batches
//! usage records into the store off the request path. The record types are in [`crate::usage`].
//!
//! The writer is one OS thread fed through a mutex-guarded buffer. It commits a batch when it holds
//! [`StatsConfig::batch_size`] records or when [`StatsConfig::flush_interval`] has passed since the
//! first record of the batch, so a crash loses at most one interval. [`StatsWriter::flush`] and
//! dropping the last handle drain everything.
//!
//! Nothing is dropped silently: a batch the store refuses (disk full, read-only file) after the
//! retries, and records refused because the buffer is full ([`StatsConfig::max_pending`]; message
//! rows go first), are logged and counted in [`StatsWriter::dropped_rows`], and the failure turns
//! [`StatsWriter::health`] (and so the hub's readiness) red until a commit succeeds again.
//! Retention (old rows deleted in small batches) runs in its own thread: [`crate::retention`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::store::Store;

pub use crate::usage::*;

/// Writer tuning.
#[derive(Debug, Clone)]
pub struct StatsConfig {
    /// Commit when this many records wait.
    pub batch_size: usize,
    /// Commit at least this often while records wait; bounds what a crash can lose.
    pub flush_interval: Duration,
    /// At most this many records (usage and messages) wait in memory, e.g. while the database
    /// stalls; beyond it message rows are dropped first, then new usage rows (counted).
    pub max_pending: usize,
    /// At most this many bytes of message text wait in memory (messages can be 16 MiB each).
    pub max_pending_message_bytes: usize,
    /// Conversation messages (and stored responses) older than this many days are deleted (in
    /// the background, in small batches, at start and hourly). 0 keeps them forever.
    pub message_retention_days: u32,
    /// Request rows older than this many days are deleted likewise (0: forever).
    pub request_retention_days: u32,
    /// Hourly rollups older than this many days are deleted likewise (0: forever; else at
    /// least [`crate::retention::MIN_ROLLUP_DAYS`]).
    pub rollup_retention_days: u32,
    /// A cap on the database's size in bytes (see [`crate::retention`]).
    pub max_db_bytes: Option<u64>,
}

impl StatsConfig {
    /// The retention part of the settings.
    pub fn retention(&self) -> crate::retention::RetentionConfig {
        crate::retention::RetentionConfig {
            message_days: self.message_retention_days,
            request_days: self.request_retention_days,
            rollup_days: self.rollup_retention_days,
            max_db_bytes: self.max_db_bytes,
        }
    }
}

impl Default for StatsConfig {
    fn default() -> Self {
        StatsConfig {
            batch_size: 512,
            flush_interval: Duration::from_millis(500),
            max_pending: 100_000,
            max_pending_message_bytes: 64 << 20,
            message_retention_days: 30,
            request_retention_days: 90,
            rollup_retention_days: 730,
            max_db_bytes: None,
        }
    }
}

/// How long the idle writer sleeps between checks when nothing is queued (a push wakes it).
const IDLE_WAIT: Duration = Duration::from_secs(3600);
/// How long `flush` waits at most: longer than a commit with all its retries and the busy
/// timeout can take, so only a stuck database or a lost thread reaches it.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);

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
    /// Bytes of message text waiting.
    message_bytes: usize,
    /// The result of the last commit, for `flush` and `health`.
    last_error: Option<String>,
    flush_wanted: bool,
    closed: bool,
    /// The writer thread has ended (normally or by a panic): nothing will commit any more.
    dead: bool,
}

struct Shared {
    pending: Mutex<Pending>,
    /// The writer sleeps on it. The request path signals it only when a batch starts or fills,
    /// never per record: a wake-up per request was a futex syscall and a context switch each.
    wake: Condvar,
    /// `flush` callers sleep on it until their records are committed.
    done: Condvar,
    batch_size: usize,
    max_pending: usize,
    max_message_bytes: usize,
    /// Records that never reached the database: refused batches and buffer overflow.
    dropped: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // A panic while holding the lock cannot leave `Pending` half-updated in a way that
        // matters (pushes and counters), so a poisoned lock is still usable.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn drop_rows(&self, n: u64, why: &str) {
        if n == 0 {
            return;
        }
        let total = self.dropped.fetch_add(n, Ordering::Relaxed) + n;
        // Once per power of two: a flood of drops must not become a flood of log lines.
        if total.is_power_of_two() || n > 1 {
            tracing::error!(rows = n, total, "stats rows dropped: {why}");
        }
    }

    /// Queues a usage record (`message` None) or a message. Returns nothing: a record that
    /// cannot be kept is counted and logged.
    fn push(&self, usage: Option<UsageRecord>, message: Option<MessageRecord>) {
        let mut p = self.lock();
        if p.closed || p.dead {
            drop(p);
            self.drop_rows(1, "the stats writer is gone");
            return;
        }
        let waiting = p.usage.len() + p.messages.len();
        if let Some(m) = message {
            // Messages are the bulk of the bytes and the least important rows: they are the
            // first to go when the database cannot keep up.
            if waiting >= self.max_pending
                || p.message_bytes + m.content.len() > self.max_message_bytes
            {
                drop(p);
                self.drop_rows(1, "the stats buffer is full (message row)");
                return;
            }
            p.message_bytes += m.content.len();
            p.messages.push(m);
        } else if let Some(u) = usage {
            let mut shed = 0u64;
            if waiting >= self.max_pending {
                // Make room for the usage row by dropping the oldest message rows.
                let n = p.messages.len().min(waiting + 1 - self.max_pending);
                let gone: usize = p.messages.drain(..n).map(|m| m.content.len()).sum();
                p.message_bytes -= gone;
                shed = n as u64;
                if p.usage.len() + p.messages.len() >= self.max_pending {
                    drop(p);
                    self.drop_rows(shed + 1, "the stats buffer is full (usage row)");
                    return;
                }
            }
            p.usage.push(u);
            if shed > 0 {
                // `queued` keeps counting them: `committed` jumps to `queued` at the next swap,
                // so a `flush` waiting for them still returns.
                self.drop_rows(shed, "the stats buffer is full (message rows shed)");
            }
        }
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

/// Marks the writer dead when its thread ends, however it ends (a panic included), so `flush`
/// and `push` stop waiting for it.
struct DeathNotice<'a>(&'a Shared);

impl Drop for DeathNotice<'_> {
    fn drop(&mut self) {
        let mut p = self.0.lock();
        p.dead = true;
        let lost = (p.usage.len() + p.messages.len()) as u64;
        p.usage.clear();
        p.messages.clear();
        if !p.closed {
            p.last_error = Some("the stats writer thread stopped".into());
        }
        drop(p);
        self.0.drop_rows(lost, "the stats writer thread stopped");
        self.0.done.notify_all();
    }
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
            max_pending: cfg.max_pending.max(1),
            max_message_bytes: cfg.max_pending_message_bytes,
            dropped: AtomicU64::new(0),
        });
        let for_thread = shared.clone();
        let handle = std::thread::Builder::new()
            .name("nexus-stats".into())
            .spawn(move || {
                let _notice = DeathNotice(&for_thread);
                writer_loop(store, cfg, &for_thread)
            })
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
        self.shared.push(Some(rec), None);
    }

    /// Queues a conversation message.
    pub fn message(&self, rec: MessageRecord) {
        self.shared.push(None, Some(rec));
    }

    /// Rows (usage and messages) that never reached the database since the start: batches the
    /// store refused after the retries, buffer overflow, and rows queued after the writer
    /// stopped. Exposed by the server as `nexus_stats_rows_dropped_total`.
    pub fn dropped_rows(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Whether the writer can write: an error while its last commit failed (full disk,
    /// read-only database) or after its thread stopped; green again after a successful commit.
    pub fn health(&self) -> Result<()> {
        let p = self.shared.lock();
        if p.dead && !p.closed {
            return Err(Error::Storage("the stats writer thread stopped".into()));
        }
        match &p.last_error {
            None => Ok(()),
            Some(e) => Err(Error::Storage(format!("stats writer: {e}"))),
        }
    }

    /// Blocks until everything queued before this call is committed (or given up, which is an
    /// error). Never waits forever: it returns when the writer thread stops, and after
    /// one minute at most.
    pub fn flush(&self) -> Result<()> {
        let mut p = self.shared.lock();
        let target = p.queued;
        if p.committed >= target {
            return Ok(());
        }
        if p.closed || p.dead {
            return Err(Error::Internal("stats writer is gone".into()));
        }
        p.flush_wanted = true;
        self.shared.wake.notify_one();
        let deadline = Instant::now() + FLUSH_TIMEOUT;
        while p.committed < target {
            if p.dead {
                return Err(Error::Internal("the stats writer thread stopped".into()));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Storage(
                    "stats flush timed out: the database does not take writes".into(),
                ));
            }
            p = self
                .shared
                .done
                .wait_timeout(p, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
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
            // A store that panics must not take the writer (and every later flush) with it.
            last = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                store.insert_usage(usage, messages)
            }))
            .unwrap_or_else(|_| Err(Error::Internal("the store panicked".into())));
            if last.is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20 << attempt));
        }
        if let Err(e) = &last {
            tracing::error!(error = %e, records = usage.len(), messages = messages.len(), "failed to write usage batch");
            shared.drop_rows(
                (usage.len() + messages.len()) as u64,
                "the database refused the batch",
            );
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
                None => {
                    shared
                        .wake
                        .wait_timeout(p, IDLE_WAIT)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
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
        p.message_bytes = 0;
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
