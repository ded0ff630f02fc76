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
    probing: bool,
}

/// Tracks provider failures and cooldowns. A 429 is not a health failure: the provider is fine,
/// it is only busy.
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
        match h.cooldown_until {
            Some(t) if Instant::now() < t => Err(t - Instant::now()),
            Some(_) => {
                // Half-open: let requests through; the next outcome decides.
                h.cooldown_until = None;
                h.probing = true;
                Ok(())
            }
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

    /// Whether the provider is cooling down now.
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
#[derive(Debug, Default)]
pub struct RateLimiter {
    map: Mutex<HashMap<i64, Window>>,
}

impl RateLimiter {
    /// Admits one request of about `prompt_tokens` for a key, or says when to retry.
    pub fn admit(
        &self,
        key_id: i64,
        rpm: Option<u32>,
        tpm: Option<u32>,
        prompt_tokens: u64,
    ) -> Result<()> {
        if rpm.is_none() && tpm.is_none() {
            return Ok(());
        }
        let now = crate::now_ms();
        let minute = now.div_euclid(60_000);
        let frac = (now.rem_euclid(60_000)) as f64 / 60_000.0;
        let retry_after = Some(
            Duration::from_millis((60_000 - now.rem_euclid(60_000)) as u64)
                .max(Duration::from_secs(1)),
        );
        let mut m = self
            .map
            .lock()
            .map_err(|_| Error::Internal("rate limiter lock poisoned".into()))?;
        let w = m.entry(key_id).or_default();
        w.roll(minute);
        if let Some(r) = rpm {
            if w.estimate(frac, w.requests, w.prev_requests) + 1.0 > r as f64 {
                return Err(Error::RateLimited {
                    message: format!("rate limit of {r} requests per minute reached for this key"),
                    retry_after,
                });
            }
        }
        if let Some(t) = tpm {
            if w.estimate(frac, w.tokens, w.prev_tokens) + prompt_tokens as f64 > t as f64 {
                return Err(Error::RateLimited {
                    message: format!("rate limit of {t} tokens per minute reached for this key"),
                    retry_after,
                });
            }
        }
        w.requests += 1;
        w.tokens += prompt_tokens;
        Ok(())
    }

    /// Adds tokens used after the fact (completion tokens, corrected prompt counts).
    pub fn add_tokens(&self, key_id: i64, tokens: u64) {
        if let Ok(mut m) = self.map.lock() {
            let w = m.entry(key_id).or_default();
            w.roll(crate::now_ms().div_euclid(60_000));
            w.tokens += tokens;
        }
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
        assert!(r.admit(1, Some(2), None, 0).is_ok());
        assert!(r.admit(1, Some(2), None, 0).is_ok());
        let e = r.admit(1, Some(2), None, 0).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::RateLimited);
        assert!(e.retry_after().is_some());
        assert!(r.admit(2, None, Some(100), 60).is_ok());
        assert!(r.admit(2, None, Some(100), 60).is_err());
        assert!(r.admit(3, None, None, 1_000_000).is_ok());
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
