//! Retry backoff, provider health (cooldown), per-key rate limits and the opt-in response cache.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Retry and cooldown tuning.
#[derive(Debug, Clone)]
pub struct RetryConfig {
    /// Attempts per provider (1 = no retry). A provider's `max_retries` option overrides it.
    pub max_attempts: u32,
    /// First backoff step; doubles each attempt.
    pub base_delay: Duration,
    /// Largest backoff step, and the longest `Retry-After` honoured before failing over instead.
    pub max_delay: Duration,
    /// Failures within `failure_window` that put a provider into cooldown.
    pub cooldown_failures: u32,
    /// The window for counting failures.
    pub failure_window: Duration,
    /// How long a provider cools down before one probe request is let through.
    pub cooldown: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 3,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
            cooldown_failures: 5,
            failure_window: Duration::from_secs(60),
            cooldown: Duration::from_secs(30),
        }
    }
}

impl RetryConfig {
    /// Full-jitter backoff before attempt `attempt` (1-based count of failures so far), or the
    /// upstream's `Retry-After` when it is within `max_delay`. `None` means "do not wait that
    /// long here; fail over instead".
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Option<Duration> {
        if let Some(ra) = retry_after {
            return (ra <= self.max_delay).then_some(ra);
        }
        let cap = self
            .base_delay
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max_delay);
        Some(cap.mul_f64(jitter()))
    }
}

/// A uniform random number in [0, 1).
fn jitter() -> f64 {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

#[derive(Debug, Default)]
struct ProviderHealth {
    failures: VecDeque<Instant>,
    cooldown_until: Option<Instant>,
    /// Set while the one half-open probe is out; a probe that never reports (its caller went
    /// away) stops blocking others after [`PROBE_TIMEOUT`].
    probe_since: Option<Instant>,
    /// Half-open: the next outcome decides between healthy and another cooldown.
    probing: bool,
}

/// How long one half-open probe may stay unanswered before another request may probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// Tracks provider failures and cooldowns. Which failures count is [`Error::is_provider_fault`]'s
/// decision: faults of the provider (connect errors, timeouts, 5xx, 429, 401/403), never a 4xx
/// one caller's request caused.
#[derive(Debug, Default)]
pub struct Health {
    map: Mutex<HashMap<i64, ProviderHealth>>,
}

impl Health {
    /// `Ok` when the provider may be tried now; `Err(remaining)` while it cools down.
    pub fn check(&self, provider: i64) -> std::result::Result<(), Duration> {
        let Ok(mut m) = self.map.lock() else {
            return Ok(());
        };
        let Some(h) = m.get_mut(&provider) else {
            return Ok(());
        };
        let now = Instant::now();
        match h.cooldown_until {
            Some(t) if now < t => Err(t - now),
            Some(_) => {
                // Half-open: exactly one probe request goes through; the others keep waiting
                // until its outcome decides (or it is abandoned).
                h.cooldown_until = None;
                h.probing = true;
                h.probe_since = Some(now);
                Ok(())
            }
            None if h.probing => match h.probe_since {
                Some(t) if now.duration_since(t) < PROBE_TIMEOUT => Err(Duration::from_secs(1)),
                _ => {
                    h.probe_since = Some(now);
                    Ok(())
                }
            },
            None => Ok(()),
        }
    }

    /// Records a success: the provider is healthy again.
    pub fn success(&self, provider: i64) {
        if let Ok(mut m) = self.map.lock() {
            m.remove(&provider);
        }
    }

    /// Records a failure; returns true when it put the provider into cooldown.
    pub fn failure(&self, provider: i64, cfg: &RetryConfig) -> bool {
        let Ok(mut m) = self.map.lock() else {
            return false;
        };
        let h = m.entry(provider).or_default();
        let now = Instant::now();
        while h
            .failures
            .front()
            .is_some_and(|t| now.duration_since(*t) > cfg.failure_window)
        {
            h.failures.pop_front();
        }
        h.failures.push_back(now);
        if h.probing || h.failures.len() as u32 >= cfg.cooldown_failures.max(1) {
            h.failures.clear();
            h.probing = false;
            h.probe_since = None;
            h.cooldown_until = Some(now + cfg.cooldown);
            tracing::warn!(
                provider,
                cooldown_s = cfg.cooldown.as_secs_f64(),
                "provider put into cooldown"
            );
            return true;
        }
        false
    }

    /// What is left of the provider's cooldown, if it is cooling down (no state change).
    pub fn cooldown_left(&self, provider: i64) -> Option<Duration> {
        let m = self.map.lock().ok()?;
        let t = m.get(&provider)?.cooldown_until?;
        t.checked_duration_since(Instant::now())
    }

    /// Whether the provider is cooling down now (no state change, unlike [`Health::check`]).
    pub fn is_cooling(&self, provider: i64) -> bool {
        self.map
            .lock()
            .ok()
            .and_then(|m| m.get(&provider).and_then(|h| h.cooldown_until))
            .is_some_and(|t| Instant::now() < t)
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Window {
    minute: i64,
    requests: u64,
    tokens: u64,
    prev_requests: u64,
    prev_tokens: u64,
}

impl Window {
    fn roll(&mut self, minute: i64) {
        if minute == self.minute {
            return;
        }
        if minute == self.minute + 1 {
            self.prev_requests = self.requests;
            self.prev_tokens = self.tokens;
        } else {
            self.prev_requests = 0;
            self.prev_tokens = 0;
        }
        self.minute = minute;
        self.requests = 0;
        self.tokens = 0;
    }

    /// Sliding-window estimate: this minute plus the overlapping share of the previous one.
    fn estimate(&self, frac: f64, cur: u64, prev: u64) -> f64 {
        cur as f64 + prev as f64 * (1.0 - frac)
    }
}

/// Per-key requests-per-minute and tokens-per-minute limits (sliding window counters).
///
/// The request limit is checked as soon as the key is known, before the body is read. The token
/// limit reserves a request's worst case (its prompt plus its `max_tokens`) before the call and
/// settles to the real count after, so concurrent requests cannot overshoot it together.
#[derive(Debug, Default)]
pub struct RateLimiter {
    map: Mutex<HashMap<i64, Window>>,
}

fn retry_after_minute(now: i64) -> Option<Duration> {
    Some(
        Duration::from_millis((60_000 - now.rem_euclid(60_000)) as u64).max(Duration::from_secs(1)),
    )
}

impl RateLimiter {
    fn window<T>(&self, key_id: i64, f: impl FnOnce(&mut Window, f64, i64) -> T) -> Result<T> {
        let now = crate::time::now_ms();
        let frac = (now.rem_euclid(60_000)) as f64 / 60_000.0;
        let mut m = self
            .map
            .lock()
            .map_err(|_| Error::Internal("rate limiter lock poisoned".into()))?;
        let w = m.entry(key_id).or_default();
        w.roll(now.div_euclid(60_000));
        Ok(f(w, frac, now))
    }

    /// Admits one request for a key under its requests-per-minute limit, or says when to retry.
    pub fn admit_request(&self, key_id: i64, rpm: Option<u32>) -> Result<()> {
        let Some(r) = rpm else { return Ok(()) };
        self.window(key_id, |w, frac, now| {
            if w.estimate(frac, w.requests, w.prev_requests) + 1.0 > r as f64 {
                return Err(Error::RateLimited {
                    message: format!("rate limit of {r} requests per minute reached for this key"),
                    retry_after: retry_after_minute(now),
                });
            }
            w.requests += 1;
            Ok(())
        })?
    }

    /// Reserves `tokens` (the request's worst case) under a tokens-per-minute limit. The
    /// reservation is settled with [`RateLimiter::settle`] once the real count is known.
    pub fn reserve_tokens(&self, key_id: i64, tpm: Option<u32>, tokens: u64) -> Result<()> {
        let Some(t) = tpm else { return Ok(()) };
        self.window(key_id, |w, frac, now| {
            let used = w.estimate(frac, w.tokens, w.prev_tokens);
            // A request larger than the whole limit would never pass: let it through alone
            // against an empty window rather than refuse it forever.
            let alone = used == 0.0;
            if !alone && used + tokens as f64 > t as f64 {
                return Err(Error::RateLimited {
                    message: format!("rate limit of {t} tokens per minute reached for this key"),
                    retry_after: retry_after_minute(now),
                });
            }
            w.tokens += tokens;
            Ok(())
        })?
    }

    /// Replaces a reservation of `reserved` tokens by the `actual` count.
    pub fn settle(&self, key_id: i64, reserved: u64, actual: u64) {
        let _ = self.window(key_id, |w, _, _| {
            if actual >= reserved {
                w.tokens += actual - reserved;
            } else {
                // The reservation may have rolled into the previous minute; give back what is
                // still counted.
                let mut back = reserved - actual;
                let cur = back.min(w.tokens);
                w.tokens -= cur;
                back -= cur;
                w.prev_tokens = w.prev_tokens.saturating_sub(back);
            }
        });
    }
}

/// Cache tuning.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// How long an answer stays valid.
    pub ttl: Duration,
    /// Most entries kept; the oldest go first.
    pub max_entries: usize,
}

type CacheMaps<V> = (HashMap<[u8; 32], (Instant, V)>, VecDeque<[u8; 32]>);

/// The opt-in response cache for identical non-streaming requests.
#[derive(Debug)]
pub struct ResponseCache<V> {
    cfg: CacheConfig,
    inner: Mutex<CacheMaps<V>>,
}

impl<V: Clone> ResponseCache<V> {
    /// An empty cache.
    pub fn new(cfg: CacheConfig) -> Self {
        ResponseCache {
            cfg,
            inner: Mutex::new((HashMap::new(), VecDeque::new())),
        }
    }

    /// The cache key of a request body (model, messages and every parameter).
    pub fn key(body: &[u8]) -> [u8; 32] {
        use sha2::Digest;
        sha2::Sha256::digest(body).into()
    }

    /// A fresh entry, if any.
    pub fn get(&self, k: &[u8; 32]) -> Option<V> {
        let m = self.inner.lock().ok()?;
        m.0.get(k)
            .filter(|(t, _)| t.elapsed() < self.cfg.ttl)
            .map(|(_, v)| v.clone())
    }

    /// Stores an entry, evicting the oldest beyond the bound.
    pub fn put(&self, k: [u8; 32], v: V) {
        let Ok(mut m) = self.inner.lock() else { return };
        let (map, order) = &mut *m;
        if map.insert(k, (Instant::now(), v)).is_none() {
            order.push_back(k);
        }
        while map.len() > self.cfg.max_entries.max(1) {
            match order.pop_front() {
                Some(old) => {
                    map.remove(&old);
                }
                None => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_bounded_and_honours_retry_after() {
        let c = RetryConfig::default();
        for a in 0..20 {
            assert!(c.delay(a, None).unwrap() <= c.max_delay);
        }
        assert_eq!(
            c.delay(1, Some(Duration::from_secs(2))),
            Some(Duration::from_secs(2))
        );
        assert_eq!(c.delay(1, Some(Duration::from_secs(60))), None);
    }

    #[test]
    fn cooldown_after_n_failures_and_half_open_probe() {
        let cfg = RetryConfig {
            cooldown_failures: 2,
            cooldown: Duration::from_millis(30),
            ..RetryConfig::default()
        };
        let h = Health::default();
        assert!(!h.failure(1, &cfg));
        assert!(h.failure(1, &cfg));
        assert!(h.check(1).is_err());
        std::thread::sleep(Duration::from_millis(40));
        assert!(h.check(1).is_ok());
        // Only one probe while half-open.
        assert!(h.check(1).is_err());
        // A failed probe cools it down again at once.
        assert!(h.failure(1, &cfg));
        std::thread::sleep(Duration::from_millis(40));
        assert!(h.check(1).is_ok());
        h.success(1);
        assert!(!h.failure(1, &cfg));
    }

    #[test]
    fn rpm_and_tpm_limits() {
        let r = RateLimiter::default();
        assert!(r.admit_request(1, Some(2)).is_ok());
        assert!(r.admit_request(1, Some(2)).is_ok());
        let e = r.admit_request(1, Some(2)).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::RateLimited);
        assert!(e.retry_after().is_some());
        assert!(r.reserve_tokens(2, Some(100), 60).is_ok());
        assert!(r.reserve_tokens(2, Some(100), 60).is_err());
        // Settling a reservation to a smaller real count frees the difference.
        r.settle(2, 60, 10);
        assert!(r.reserve_tokens(2, Some(100), 60).is_ok());
        assert!(r.reserve_tokens(3, None, 1_000_000).is_ok());
        assert!(r.admit_request(3, None).is_ok());
    }

    #[test]
    fn concurrent_reservations_cannot_overshoot() {
        let r = std::sync::Arc::new(RateLimiter::default());
        let ok: usize = (0..8)
            .map(|_| {
                let r = r.clone();
                std::thread::spawn(move || r.reserve_tokens(9, Some(1000), 300).is_ok())
            })
            .map(|h| usize::from(h.join().unwrap()))
            .sum();
        assert_eq!(ok, 3);
    }

    #[test]
    fn cache_ttl_and_bound() {
        let c = ResponseCache::new(CacheConfig {
            ttl: Duration::from_millis(50),
            max_entries: 2,
        });
        let (a, b, d) = (
            ResponseCache::<u8>::key(b"a"),
            ResponseCache::<u8>::key(b"b"),
            ResponseCache::<u8>::key(b"d"),
        );
        c.put(a, 1);
        c.put(b, 2);
        c.put(d, 3);
        assert_eq!(c.get(&a), None);
        assert_eq!(c.get(&b), Some(2));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(c.get(&d), None);
    }
}
