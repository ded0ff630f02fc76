//! Admission: authenticate a client key once, apply its request-rate limit before anything else
//! is read, order the candidates a request may use, and reserve its worst case: tokens under the
//! key's per-minute limit, cost under its budget ([`crate::budgets`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::budgets::{BudgetHold, Budgets};
use crate::error::{Error, Result};
use crate::openai::Usage;
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
    // Shared: the request path clones it (a stream keeps one) and the record is large.
    key: Arc<ClientKey>,
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

/// Rate limits, budgets, provider health and the weighted rotation, shared by every request.
#[derive(Debug)]
pub(crate) struct Admission {
    pub(crate) limiter: Arc<RateLimiter>,
    pub(crate) health: Health,
    pub(crate) budgets: Budgets,
    rr: AtomicU64,
    in_flight: Mutex<HashMap<i64, Arc<AtomicU32>>>,
}

/// A request's worst case before it runs: its prompt and its whole completion allowance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct WorstCase {
    pub(crate) prompt: u64,
    pub(crate) completion: u64,
}

impl WorstCase {
    fn tokens(self) -> u64 {
        self.prompt.saturating_add(self.completion)
    }

    /// Its cost at the dearest priced candidate, uncached (0 when none is priced: an unpriced
    /// request has no cost to hold).
    fn cost_micros(self, cands: &[Candidate]) -> i64 {
        let u = Usage {
            prompt_tokens: self.prompt,
            completion_tokens: self.completion,
            total_tokens: self.tokens(),
            ..Usage::default()
        };
        cands
            .iter()
            .filter_map(|c| c.model.prices.as_ref())
            .map(|p| crate::prices::cost_micros(p, &u))
            .max()
            .unwrap_or(0)
    }
}

impl Admission {
    pub(crate) fn new(budgets: Budgets) -> Admission {
        Admission {
            limiter: Arc::default(),
            health: Health::default(),
            budgets,
            rr: AtomicU64::new(0),
            in_flight: Mutex::default(),
        }
    }

    /// Authenticates `presented`, takes one of its concurrency slots and one request from its
    /// per-minute allowance.
    pub(crate) fn admit(&self, registry: &Registry, presented: &str) -> Result<Admitted> {
        let key = registry.authenticate(presented)?;
        let slot = match key.max_concurrent {
            Some(max) => Some(Arc::new(self.take_slot(key.id, max)?)),
            None => None,
        };
        self.limiter.admit_request(key.id, key.rpm)?;
        Ok(Admitted {
            key: Arc::new(key),
            _slot: slot,
        })
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

    /// Reserves a request's worst case: its tokens under the key's token limit and its cost
    /// under the key's budget. `worst()` is computed only when one of them needs it.
    pub(crate) fn reserve(
        &self,
        key: &ClientKey,
        cands: &[Candidate],
        started_ms: i64,
        worst: impl FnOnce() -> WorstCase,
    ) -> Result<Reservation> {
        let mut worst = Some(worst);
        let mut computed: Option<WorstCase> = None;
        let mut get = || {
            if let Some(w) = computed {
                return w;
            }
            let w = worst.take().map(|f| f()).unwrap_or_default();
            computed = Some(w);
            w
        };
        let budget = self
            .budgets
            .reserve(key, started_ms, || get().cost_micros(cands))?;
        let tokens = match key.tpm {
            Some(_) => {
                let n = get().tokens();
                self.limiter.reserve_tokens(key.id, key.tpm, n)?;
                TokenHold {
                    limiter: Some(self.limiter.clone()),
                    key_id: key.id,
                    reserved: n,
                }
            }
            None => TokenHold::none(),
        };
        Ok(Reservation { tokens, budget })
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
        // Weighted round robin within each run of one model's candidates: a model group's
        // members stay in the group's order (a plain model is one run).
        let mut start = 0;
        while start < c.len() {
            let name = &c[start].model.name;
            let len = c[start..]
                .iter()
                .take_while(|x| &x.model.name == name)
                .count();
            self.rotate(&mut c[start..start + len]);
            start += len;
        }
        Ok(())
    }

    fn rotate(&self, c: &mut [Candidate]) {
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
    }
}

/// What one admitted request holds: tokens under its key's per-minute limit and cost under its
/// budget. Settled once with the real figures; dropped unsettled (the request failed before any
/// usage), it gives everything back.
#[derive(Debug)]
pub(crate) struct Reservation {
    tokens: TokenHold,
    budget: Option<BudgetHold>,
}

impl Reservation {
    /// No limit, nothing held.
    pub(crate) fn none() -> Self {
        Reservation {
            tokens: TokenHold::none(),
            budget: None,
        }
    }

    /// Replaces the reservation by what the request really used: `tokens`, and `cost_micros`
    /// (`None`: unpriced) for the budget window the request `started_ms` in.
    pub(crate) fn settle(&mut self, tokens: u64, cost_micros: Option<i64>, started_ms: i64) {
        self.tokens.settle(tokens);
        if let Some(b) = &mut self.budget {
            b.settle(cost_micros, started_ms);
        }
    }
}

/// Tokens held under a key's per-minute limit.
#[derive(Debug)]
struct TokenHold {
    limiter: Option<Arc<RateLimiter>>,
    key_id: i64,
    reserved: u64,
}

impl TokenHold {
    fn none() -> Self {
        TokenHold {
            limiter: None,
            key_id: 0,
            reserved: 0,
        }
    }

    fn settle(&mut self, actual: u64) {
        if let Some(l) = self.limiter.take() {
            l.settle(self.key_id, self.reserved, actual);
        }
    }
}

impl Drop for TokenHold {
    fn drop(&mut self) {
        self.settle(0);
    }
}
