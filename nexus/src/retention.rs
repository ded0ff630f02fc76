//! Retention: what the database keeps and for how long, enforced by a background thread in
//! small batches so requests and the stats writer never wait behind it.
//!
//! - Request bodies (conversation messages and stored Responses) go after
//!   `message_retention_days` (default 30).
//! - Request metadata (one usage row per request: the explorer's rows) goes after
//!   `request_retention_days` (default 90).
//! - The hourly rollups the dashboard, the stats API and budgets read go after
//!   `rollup_retention_days` (default 730, at least 40 so every non-`total` budget window is
//!   whole); before a rollup row goes, its cost is added to its key's archived spend, so a
//!   `total` budget never forgets money.
//! - With `max_db_bytes` set, the oldest bodies and then the oldest request rows go (never the
//!   rollups) until the database fits.
//!
//! Freed pages are given back to the file system (SQLite's incremental vacuum) after each pass.
//! A pass runs at start, then hourly, and on demand ([`crate::Hub::prune_now`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::store::Store;
use crate::time::now_ms;

/// Rows deleted per statement: short enough that the writer lock is held only briefly.
const BATCH: usize = 1000;
/// Free pages given back per statement.
const RECLAIM_PAGES: u32 = 2048;
/// How often a pass runs after the first one.
const EVERY: Duration = Duration::from_secs(3600);
/// Request rows per batch while the size cap is over: larger, since the cap only acts when the
/// database is already too big.
const CAP_BATCH: usize = 5000;
/// The shortest rollup retention: the longest non-`total` budget window (a month) plus margin.
pub const MIN_ROLLUP_DAYS: u32 = 40;

/// The retention settings (`0` days keeps forever).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionConfig {
    /// Days request bodies (conversation messages, stored responses) are kept.
    pub message_days: u32,
    /// Days request rows (the explorer's metadata) are kept.
    pub request_days: u32,
    /// Days hourly rollups are kept (0, or at least [`MIN_ROLLUP_DAYS`]).
    pub rollup_days: u32,
    /// A cap on the database's size in bytes, if any.
    pub max_db_bytes: Option<u64>,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            message_days: 30,
            request_days: 90,
            rollup_days: 730,
            max_db_bytes: None,
        }
    }
}

impl RetentionConfig {
    /// Refuses settings that would break budgets or keep less than nothing.
    pub fn validate(&self) -> Result<()> {
        if self.rollup_days != 0 && self.rollup_days < MIN_ROLLUP_DAYS {
            return Err(Error::Config(format!(
                "rollup_retention_days must be 0 (forever) or at least {MIN_ROLLUP_DAYS}: \
                 budgets read a whole month of rollups"
            )));
        }
        if self.max_db_bytes == Some(0) {
            return Err(Error::Config("max_db_mb must be at least 1".into()));
        }
        Ok(())
    }
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PruneReport {
    /// Unix milliseconds at its start.
    pub at_ms: i64,
    /// Milliseconds it took.
    pub ms: f64,
    /// Conversation messages deleted by age.
    pub messages: u64,
    /// Stored responses deleted by age.
    pub responses: u64,
    /// Request rows deleted by age.
    pub requests: u64,
    /// Rollup rows deleted by age.
    pub rollups: u64,
    /// Messages and responses deleted to fit the size cap.
    pub capped_bodies: u64,
    /// Request rows deleted to fit the size cap.
    pub capped_requests: u64,
    /// Bytes given back to the file system.
    pub reclaimed_bytes: u64,
    /// The database's size after the pass.
    pub db_bytes: u64,
}

/// The database's size and contents, as the storage view shows them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StorageStats {
    /// Bytes in use by pages (free pages excluded).
    pub used_bytes: u64,
    /// Bytes of free pages not yet given back.
    pub free_bytes: u64,
    /// Request rows (approximate on very large tables: from row ids).
    pub requests: u64,
    /// Conversation messages (approximate likewise).
    pub messages: u64,
    /// Stored responses.
    pub responses: u64,
    /// Hourly rollup rows.
    pub rollups: u64,
    /// Start of the oldest request row, unix milliseconds.
    pub oldest_request_ms: Option<i64>,
    /// The store gives free pages back to the file system (SQLite: `auto_vacuum` incremental).
    pub reclaims_space: bool,
}

/// The storage view: sizes, the settings and the last pass.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StorageReport {
    /// The database file, when it is one.
    pub path: Option<String>,
    /// The file's size on disk, write-ahead log included.
    pub file_bytes: Option<u64>,
    /// Sizes and counts.
    #[serde(flatten)]
    pub stats: StorageStats,
    /// The retention settings.
    pub retention: RetentionConfig,
    /// The last pass, if one ran.
    pub last_prune: Option<PruneReport>,
}

/// The retention policy and its background thread.
pub(crate) struct Retention {
    store: Arc<dyn Store>,
    cfg: RetentionConfig,
    last: Mutex<Option<PruneReport>>,
    /// One pass at a time (the thread's and on-demand ones).
    running: Mutex<()>,
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    started: AtomicBool,
}

impl std::fmt::Debug for Retention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retention").field("cfg", &self.cfg).finish()
    }
}

impl Retention {
    pub(crate) fn new(store: Arc<dyn Store>, cfg: RetentionConfig) -> Result<Arc<Retention>> {
        cfg.validate()?;
        Ok(Arc::new(Retention {
            store,
            cfg,
            last: Mutex::new(None),
            running: Mutex::new(()),
            stop: Arc::new((Mutex::new(false), Condvar::new())),
            thread: Mutex::new(None),
            started: AtomicBool::new(false),
        }))
    }

    /// Starts the background thread: a pass now, then every hour until [`Retention::stop`].
    pub(crate) fn start(self: &Arc<Self>) -> Result<()> {
        if self.started.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        // The thread holds only a weak reference, so dropping the hub ends it.
        let weak = Arc::downgrade(self);
        let stop = self.stop.clone();
        let handle = std::thread::Builder::new()
            .name("nexus-retention".into())
            .spawn(move || loop {
                match weak.upgrade() {
                    Some(r) => {
                        if let Err(e) = r.run() {
                            tracing::warn!(error = %e, "retention pass failed");
                        }
                    }
                    None => return,
                }
                let (m, cv) = &*stop;
                let Ok(g) = m.lock() else { return };
                let Ok((g, _)) = cv.wait_timeout_while(g, EVERY, |stopped| !*stopped) else {
                    return;
                };
                if *g {
                    return;
                }
            })
            .map_err(|e| Error::Internal(format!("cannot start the retention thread: {e}")))?;
        if let Ok(mut t) = self.thread.lock() {
            *t = Some(handle);
        }
        Ok(())
    }

    /// Ends the background thread (a pass under way finishes its batch first).
    pub(crate) fn stop(&self) {
        let (m, cv) = &*self.stop;
        if let Ok(mut g) = m.lock() {
            *g = true;
        }
        cv.notify_all();
        let handle = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(h) = handle {
            // Never join from the thread itself (the last hub handle dropped inside a pass).
            if h.thread().id() != std::thread::current().id() {
                let _ = h.join();
            }
        }
    }

    /// The settings.
    pub(crate) fn config(&self) -> RetentionConfig {
        self.cfg
    }

    /// The last pass.
    pub(crate) fn last(&self) -> Option<PruneReport> {
        self.last.lock().ok().and_then(|l| l.clone())
    }

    /// Runs one pass now (waiting for one under way to end first).
    pub(crate) fn run(&self) -> Result<PruneReport> {
        let _one = self
            .running
            .lock()
            .map_err(|_| Error::Internal("retention lock poisoned".into()))?;
        let start = Instant::now();
        let now = now_ms();
        let mut r = PruneReport {
            at_ms: now,
            ..PruneReport::default()
        };
        let cutoff = |days: u32| now - i64::from(days) * 86_400_000;
        let store = self.store.as_ref();
        if self.cfg.message_days > 0 {
            let before = cutoff(self.cfg.message_days);
            r.messages = drain(|| store.prune_messages(before, BATCH))?;
            r.responses = drain(|| store.prune_responses(before, BATCH))?;
        }
        if self.cfg.request_days > 0 {
            let before = cutoff(self.cfg.request_days);
            r.requests = drain(|| store.prune_usage(before, BATCH))?;
        }
        if self.cfg.rollup_days > 0 {
            let before = cutoff(self.cfg.rollup_days);
            r.rollups = drain(|| store.prune_rollups(before, BATCH))?;
        }
        if let Some(cap) = self.cfg.max_db_bytes {
            self.fit(cap, &mut r)?;
        }
        r.reclaimed_bytes = self.reclaim()?;
        r.db_bytes = store.storage()?.used_bytes;
        r.ms = start.elapsed().as_secs_f64() * 1000.0;
        let deleted =
            r.messages + r.responses + r.requests + r.rollups + r.capped_bodies + r.capped_requests;
        if deleted > 0 {
            tracing::info!(
                messages = r.messages,
                responses = r.responses,
                requests = r.requests,
                rollups = r.rollups,
                capped_bodies = r.capped_bodies,
                capped_requests = r.capped_requests,
                reclaimed_bytes = r.reclaimed_bytes,
                db_bytes = r.db_bytes,
                "retention pass"
            );
        }
        if let Ok(mut l) = self.last.lock() {
            *l = Some(r.clone());
        }
        Ok(r)
    }

    /// Deletes the oldest bodies, then the oldest request rows, until the used size is under
    /// `cap` (freed pages count as free: SQLite reuses them before growing the file).
    fn fit(&self, cap: u64, r: &mut PruneReport) -> Result<()> {
        let store = self.store.as_ref();
        let over = || -> Result<bool> { Ok(store.storage()?.used_bytes > cap) };
        while over()? {
            let mut n = 0;
            // A tenth of the bodies' span at a time: the oldest go first.
            if let Some(before) = store.oldest_message_ms()? {
                n += store.prune_messages(before + 3_600_000, BATCH)?;
                n += store.prune_responses(before + 3_600_000, BATCH)?;
                r.capped_bodies += n as u64;
            }
            if n == 0 {
                match store.oldest_usage_ms()? {
                    Some(t) => {
                        let k = store.prune_usage(t + 3_600_000, CAP_BATCH)?;
                        r.capped_requests += k as u64;
                        n += k;
                    }
                    None => break,
                }
            }
            if n == 0 {
                tracing::warn!(
                    cap,
                    "the database is over max_db_bytes with no bodies or request rows left to delete"
                );
                break;
            }
        }
        Ok(())
    }

    fn reclaim(&self) -> Result<u64> {
        let mut total = 0;
        loop {
            let n = self.store.reclaim(RECLAIM_PAGES)?;
            total += n;
            if n == 0 {
                if total > 0 {
                    self.store.checkpoint()?;
                }
                return Ok(total);
            }
        }
    }
}

impl Drop for Retention {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs a batched delete until a batch comes back short.
fn drain(mut batch: impl FnMut() -> Result<usize>) -> Result<u64> {
    let mut total = 0u64;
    loop {
        let n = batch()?;
        total += n as u64;
        if n < BATCH {
            return Ok(total);
        }
    }
}
