//! Admission: authenticate a client key once, apply its request-rate limit before anything else
//! is read, order the candidates a request may use, and reserve its tokens.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::records::ClientKey;
use crate::registry::{Candidate, Registry};
use crate::resilience::{Health, RateLimiter};

/// A client key that authenticated and passed its request-rate limit. Made by
/// [`crate::Hub::admit`]; hand it back as [`crate::Caller::Admitted`] so the key is neither
/// hashed nor counted twice.
///
/// It holds one of the key's `max_concurrent` slots until the last clone is dropped: the hub
/// keeps it for the whole request, a stream until it ends.
#[derive(Debug, Clone)]
pub struct Admitted {
    key: ClientKey,
    _slot: Option<Arc<InFlight>>,
}

/// One request in flight for a key; gives its slot back when dropped.
#[derive(Debug)]
struct InFlight(Arc<AtomicU32>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Admitted {
    /// The key's record (id, name, scope, limits).
    pub fn key(&self) -> &ClientKey {
        &self.key
    }
}

/// Rate limits, provider health and the weighted rotation, shared by every request.
#[derive(Debug, Default)]
pub(crate) struct Admission {
    pub(crate) limiter: Arc<RateLimiter>,
    pub(crate) health: Health,
    rr: AtomicU64,
    in_flight: Mutex<HashMap<i64, Arc<AtomicU32>>>,
}

impl Admission {
    /// Authenticates `presented`, takes one of its concurrency slots and one request from its
    /// per-minute allowance.
    pub(crate) fn admit(&self, registry: &Registry, presented: &str) -> Result<Admitted> {
        let key = registry.authenticate(presented)?;
        let slot = match key.max_concurrent {
            Some(max) => Some(Arc::new(self.take_slot(key.id, max)?)),
            None => None,
        };
        self.limiter.admit_request(key.id, key.rpm)?;
        Ok(Admitted { key, _slot: slot })
    }

    fn take_slot(&self, key_id: i64, max: u32) -> Result<InFlight> {
        let counter = self
            .in_flight
            .lock()
            .map_err(|_| Error::Internal("in-flight map lock poisoned".into()))?
            .entry(key_id)
            .or_default()
            .clone();
        let slot = InFlight(counter);
        if slot.0.fetch_add(1, Ordering::AcqRel) >= max {
            // Dropping `slot` gives the increment back.
            return Err(Error::RateLimited {
                message: format!("this key already has {max} requests in flight"),
                retry_after: Some(Duration::from_secs(1)),
            });
        }
        Ok(slot)
    }

    /// Reserves a request's worst-case tokens under its key's token limit.
    pub(crate) fn reserve(&self, key: &ClientKey, tokens: u64) -> Result<TokenReservation> {
        if key.tpm.is_none() {
            return Ok(TokenReservation::none());
        }
        self.limiter.reserve_tokens(key.id, key.tpm, tokens)?;
        Ok(TokenReservation {
            limiter: Some(self.limiter.clone()),
            key_id: key.id,
            reserved: tokens,
        })
    }

    /// Weighted rotation among healthy candidates, cooling ones left out.
    pub(crate) fn order_candidates(&self, c: &mut Vec<Candidate>) -> Result<()> {
        let mut soonest: Option<Duration> = None;
        c.retain(|cand| match self.health.check(cand.provider.record.id) {
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
            let mut slot = self.rr.fetch_add(1, Ordering::Relaxed) % total;
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
}

/// Tokens held under a key's per-minute limit for one request. Settled once with the real
/// count; dropped unsettled (the request failed before any usage), it gives them all back.
#[derive(Debug)]
pub(crate) struct TokenReservation {
    limiter: Option<Arc<RateLimiter>>,
    key_id: i64,
    reserved: u64,
}

impl TokenReservation {
    /// No limit, nothing held.
    pub(crate) fn none() -> Self {
        TokenReservation {
            limiter: None,
            key_id: 0,
            reserved: 0,
        }
    }

    /// Replaces the reservation by the tokens really used.
    pub(crate) fn settle(&mut self, actual: u64) {
        if let Some(l) = self.limiter.take() {
            l.settle(self.key_id, self.reserved, actual);
        }
    }
}

impl Drop for TokenReservation {
    fn drop(&mut self) {
        self.settle(0);
    }
}
