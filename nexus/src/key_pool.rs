//! Which of a provider's pool keys a request sends, and the keys resting after a 429.
//!
//! - A conversation keeps to one key where it can, so the provider's prompt cache (kept per
//!   organisation or key) keeps hitting: the key is chosen by weighted rendezvous hashing of the
//!   conversation id over the keys in use, which spreads conversations by weight and moves only
//!   the conversations of a key that leaves the pool.
//! - A key the upstream rate limited (429) rests for its `Retry-After` (or
//!   [`DEFAULT_REST`]) in this process; requests pick among the other keys meanwhile. A key the
//!   upstream refused (401/403) is set aside in the registry (see `registry::key_pools`), where it
//!   stays until an operator enables it.
//! - A provider with one key never takes the lock here.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::registry::{Candidate, PoolMember};

/// How long a rate-limited key rests when the upstream did not say.
pub const DEFAULT_REST: Duration = Duration::from_secs(30);
/// The longest rest a `Retry-After` can ask for.
pub const MAX_REST: Duration = Duration::from_secs(3600);

/// The keys resting after a 429, by (provider id, pool key id).
#[derive(Debug, Default)]
pub struct KeyPools {
    resting: Mutex<HashMap<(i64, i64), Instant>>,
}

/// A number in (0, 1] drawn from the affinity and the key, the same every time.
fn draw(affinity: &str, provider_id: i64, key_id: i64) -> f64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    affinity.hash(&mut h);
    provider_id.hash(&mut h);
    key_id.hash(&mut h);
    ((h.finish() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
}

impl KeyPools {
    /// A new set with no key resting.
    pub fn new() -> KeyPools {
        KeyPools::default()
    }

    /// Points every candidate whose provider has several keys at the key `affinity` (the
    /// conversation id, or the request id) maps to among the keys not resting.
    pub(crate) fn assign(&self, cands: &[Candidate], affinity: &str) {
        for c in cands.iter().filter(|c| c.provider.pool.len() > 1) {
            if let Some(i) = self.pick(c, affinity, &[]) {
                c.use_key(i);
            }
        }
    }

    /// The pool index for `affinity` on `cand`'s provider, skipping the key ids in `tried`:
    /// the best-scoring key not resting, else (every other key resting) the best-scoring one.
    /// `None` when every key was tried.
    pub(crate) fn pick(&self, cand: &Candidate, affinity: &str, tried: &[i64]) -> Option<usize> {
        self.pick_in(
            &cand.provider.pool,
            cand.provider.record.id,
            affinity,
            tried,
        )
    }

    fn pick_in(
        &self,
        pool: &[PoolMember],
        pid: i64,
        affinity: &str,
        tried: &[i64],
    ) -> Option<usize> {
        let now = Instant::now();
        let resting = self.resting.lock().ok();
        let mut best: Option<(bool, f64, usize)> = None;
        for (i, m) in pool.iter().enumerate() {
            if tried.contains(&m.id) {
                continue;
            }
            let rests = resting
                .as_ref()
                .and_then(|r| r.get(&(pid, m.id)))
                .is_some_and(|&until| until > now);
            // Weighted rendezvous: the smallest -ln(u)/w wins, so a key of weight 2 wins twice
            // as often as one of weight 1.
            let score = -draw(affinity, pid, m.id).ln() / f64::from(m.weight.max(1));
            let better = match best {
                None => true,
                Some((b_rests, b_score, _)) => (rests, score) < (b_rests, b_score),
            };
            if better {
                best = Some((rests, score, i));
            }
        }
        best.map(|(_, _, i)| i)
    }

    /// Rests a key for `retry_after` (bounded), or [`DEFAULT_REST`].
    pub(crate) fn rest(&self, provider_id: i64, key_id: i64, retry_after: Option<Duration>) {
        let d = retry_after.unwrap_or(DEFAULT_REST).min(MAX_REST);
        if let Ok(mut r) = self.resting.lock() {
            let now = Instant::now();
            r.retain(|_, until| *until > now);
            r.insert((provider_id, key_id), now + d);
        }
    }

    /// How long a key still rests, if it does.
    pub fn resting_left(&self, provider_id: i64, key_id: i64) -> Option<Duration> {
        let r = self.resting.lock().ok()?;
        r.get(&(provider_id, key_id))
            .and_then(|until| until.checked_duration_since(Instant::now()))
            .filter(|d| !d.is_zero())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Secret;

    fn pool(weights: &[u32]) -> Vec<PoolMember> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| PoolMember {
                id: i as i64,
                key: Secret::new(format!("sk-{i}")),
                weight: w,
            })
            .collect()
    }

    #[test]
    fn a_conversation_keeps_its_key_and_weights_spread_conversations() {
        let pools = KeyPools::new();
        let p = pool(&[1, 3]);
        let first = pools.pick_in(&p, 7, "conv-a", &[]);
        for _ in 0..10 {
            assert_eq!(pools.pick_in(&p, 7, "conv-a", &[]), first);
        }
        let mut hits = [0u32; 2];
        for n in 0..4000 {
            if let Some(i) = pools.pick_in(&p, 7, &format!("conv-{n}"), &[]) {
                hits[i] += 1;
            }
        }
        // Weight 3 against 1: about 3000 against 1000.
        assert!((2700..3300).contains(&hits[1]), "{hits:?}");
    }

    #[test]
    fn resting_and_tried_keys_are_skipped() {
        let pools = KeyPools::new();
        let p = pool(&[1, 1, 1]);
        let i = pools.pick_in(&p, 7, "conv", &[]).unwrap_or(9);
        let id = p[i].id;
        pools.rest(7, id, Some(Duration::from_secs(5)));
        assert!(pools.resting_left(7, id).is_some());
        let j = pools.pick_in(&p, 7, "conv", &[]).unwrap_or(9);
        assert_ne!(i, j);
        let all: Vec<i64> = p.iter().map(|m| m.id).collect();
        assert_eq!(pools.pick_in(&p, 7, "conv", &all), None);
        // Every other key tried: the resting one is still offered rather than nothing.
        let others: Vec<i64> = all.iter().copied().filter(|&k| k != id).collect();
        assert_eq!(pools.pick_in(&p, 7, "conv", &others), Some(i));
    }
}
