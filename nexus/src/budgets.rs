//! Spending budgets on client keys: the period windows (UTC), what each key has spent in its
//! current window, and the reservation rule that keeps concurrent requests from overshooting.
//!
//! A key with a hard budget is admitted only while `spent + reserved < budget`; an admitted
//! request reserves its worst-case cost (its prompt and its whole completion allowance at the
//! dearest candidate's prices) and settles the real cost when its usage row is written. So a
//! budget is never passed by more than the one request that was admitted last, however many run
//! at once. A soft threshold never refuses: crossing it logs once per period and is counted.
//!
//! What a key has spent comes from the store's hourly rollups (which outlive raw-row retention)
//! the first time a key is seen in a window, after the stats writer has flushed; from then on the
//! settled costs are added here. Requests whose model has no price have no cost and spend nothing
//! (the model is flagged unpriced in the API and the UI). The counters are per process until a
//! shared store holds them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::records::ClientKey;
use crate::stats::StatsWriter;
use crate::store::Store;

const DAY_MS: i64 = 86_400_000;

/// The period a budget applies to; every one but `total` rolls over at a UTC boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum BudgetPeriod {
    /// From 00:00 UTC to the next.
    Daily,
    /// From Monday 00:00 UTC (ISO weeks).
    Weekly,
    /// From the first of the month, 00:00 UTC. The default.
    #[default]
    Monthly,
    /// Forever: the budget never rolls over.
    Total,
}

impl BudgetPeriod {
    /// The stored and displayed name.
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetPeriod::Daily => "daily",
            BudgetPeriod::Weekly => "weekly",
            BudgetPeriod::Monthly => "monthly",
            BudgetPeriod::Total => "total",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<BudgetPeriod> {
        Some(match s {
            "daily" => BudgetPeriod::Daily,
            "weekly" => BudgetPeriod::Weekly,
            "monthly" => BudgetPeriod::Monthly,
            "total" => BudgetPeriod::Total,
            _ => return None,
        })
    }

    /// The window holding `now_ms`: its start (unix ms, inclusive) and end (exclusive; `None`
    /// for `total`, which starts at the epoch).
    pub fn window(self, now_ms: i64) -> (i64, Option<i64>) {
        let day = now_ms.div_euclid(DAY_MS);
        match self {
            BudgetPeriod::Daily => (day * DAY_MS, Some((day + 1) * DAY_MS)),
            BudgetPeriod::Weekly => {
                // 1970-01-01 was a Thursday: three days after a Monday.
                let monday = day - (day + 3).rem_euclid(7);
                (monday * DAY_MS, Some((monday + 7) * DAY_MS))
            }
            BudgetPeriod::Monthly => {
                let (y, m) = year_month(day);
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                (
                    days_from_civil(y, m, 1) * DAY_MS,
                    Some(days_from_civil(ny, nm, 1) * DAY_MS),
                )
            }
            BudgetPeriod::Total => (0, None),
        }
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Year and month of a day number (the inverse of [`days_from_civil`]).
fn year_month(day: i64) -> (i64, i64) {
    let z = day + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m)
}

/// USD to integer micro-dollars, the unit every sum is kept in.
pub fn usd_to_micros(usd: f64) -> i64 {
    (usd * 1e6).round() as i64
}

/// Integer micro-dollars to USD, for display.
pub fn micros_to_usd(micros: i64) -> f64 {
    micros as f64 / 1e6
}

/// A key's budget settings in micro-dollars, if it has any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Limits {
    period: BudgetPeriod,
    hard: Option<i64>,
    soft: Option<i64>,
}

impl Limits {
    fn of(key: &ClientKey) -> Option<Limits> {
        if key.budget_usd.is_none() && key.soft_budget_usd.is_none() {
            return None;
        }
        Some(Limits {
            period: key.budget_period.unwrap_or_default(),
            hard: key.budget_usd.map(usd_to_micros),
            soft: key.soft_budget_usd.map(usd_to_micros),
        })
    }
}

/// A key's current window and what it holds.
#[derive(Debug, Default)]
struct KeyState {
    /// The period and window start the counters are for; `None` until loaded.
    window: Option<(BudgetPeriod, i64)>,
    /// Settled cost of requests that started in the window.
    spent: i64,
    /// Worst-case cost held by admitted requests not settled yet.
    reserved: i64,
    /// The soft threshold was crossed in this window (logged and counted once).
    soft_alerted: bool,
}

/// Budget enforcement for every key, shared by all requests.
pub(crate) struct Budgets {
    store: Arc<dyn Store>,
    stats: StatsWriter,
    keys: Mutex<HashMap<i64, Arc<Mutex<KeyState>>>>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for Budgets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Budgets")
    }
}

/// Counts for the metrics endpoint.
#[derive(Debug, Default)]
struct Counters {
    refused: AtomicU64,
    soft_alerts: AtomicU64,
}

/// Budget events since the hub opened, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct BudgetCounters {
    /// Requests refused because their key's budget was used up.
    pub refused: u64,
    /// Soft thresholds crossed (each key once per period).
    pub soft_alerts: u64,
}

/// A key's spend in its current period, as the API, the bindings and the UI show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeySpend {
    /// The key.
    pub key_id: i64,
    /// The period the figures are for (`monthly` when the key has no budget).
    pub period: BudgetPeriod,
    /// Unix seconds at the period start (0 for `total`).
    pub period_start: i64,
    /// Unix seconds at the next rollover; `None` for `total`.
    pub period_end: Option<i64>,
    /// USD spent by requests that started in the period (priced requests only).
    pub spent_usd: f64,
    /// USD held by requests in flight on this process.
    pub reserved_usd: f64,
    /// The hard budget, if any.
    pub budget_usd: Option<f64>,
    /// What is left of it (never below 0).
    pub budget_left_usd: Option<f64>,
    /// The soft threshold, if any.
    pub soft_budget_usd: Option<f64>,
    /// Spend reached the soft threshold in this period.
    pub soft_budget_reached: bool,
    /// Spend reached the hard budget: requests are refused until the period rolls over.
    pub budget_reached: bool,
}

impl Budgets {
    pub(crate) fn new(store: Arc<dyn Store>, stats: StatsWriter) -> Budgets {
        Budgets {
            store,
            stats,
            keys: Mutex::new(HashMap::new()),
            counters: Arc::default(),
        }
    }

    /// Budget events so far.
    pub(crate) fn counters(&self) -> BudgetCounters {
        BudgetCounters {
            refused: self.counters.refused.load(Ordering::Relaxed),
            soft_alerts: self.counters.soft_alerts.load(Ordering::Relaxed),
        }
    }

    fn state(&self, key_id: i64) -> Result<Arc<Mutex<KeyState>>> {
        Ok(self
            .keys
            .lock()
            .map_err(|_| Error::Internal("budget map lock poisoned".into()))?
            .entry(key_id)
            .or_default()
            .clone())
    }

    /// Brings `s` to the window holding `now_ms`: loads the key's spend from the store the
    /// first time (or when its period changed), starts from nothing at a rollover.
    fn align(&self, s: &mut KeyState, key_id: i64, lim: Limits, now_ms: i64) -> Result<i64> {
        let (start, _) = lim.period.window(now_ms);
        match s.window {
            Some((p, st)) if p == lim.period && st == start => {}
            Some((p, st)) if p == lim.period && st < start => {
                // Rolled over while running: nothing of the new window was settled before it
                // began, and requests settling late belong to the window they started in.
                s.window = Some((p, start));
                s.spent = 0;
                s.soft_alerted = false;
            }
            _ => {
                // Rows still queued in the writer belong in the sum.
                if let Err(e) = self.stats.flush() {
                    tracing::warn!(error = %e, "budget: could not flush stats before reading spend");
                }
                s.spent = self.store.key_spend(key_id, start)?;
                s.window = Some((lim.period, start));
                s.soft_alerted = lim.soft.is_some_and(|soft| s.spent >= soft);
            }
        }
        Ok(start)
    }

    /// Admits a request of `key` under its budget, reserving `worst()` micro-dollars (called
    /// only when the key has a hard budget). `None`: the key has no budget.
    pub(crate) fn reserve(
        &self,
        key: &ClientKey,
        now_ms: i64,
        worst: impl FnOnce() -> i64,
    ) -> Result<Option<BudgetHold>> {
        let Some(lim) = Limits::of(key) else {
            return Ok(None);
        };
        let state = self.state(key.id)?;
        let mut s = lock(&state)?;
        let start = self.align(&mut s, key.id, lim, now_ms)?;
        let mut reserved = 0;
        if let Some(hard) = lim.hard {
            if s.spent + s.reserved >= hard {
                self.counters.refused.fetch_add(1, Ordering::Relaxed);
                let (_, end) = lim.period.window(now_ms);
                let retry_after = end.map(|e| Duration::from_millis((e - now_ms).max(1000) as u64));
                let until = match end {
                    Some(_) => format!(" until its {} period rolls over", lim.period.as_str()),
                    None => String::new(),
                };
                return Err(Error::QuotaExceeded {
                    message: format!(
                        "this key has used its budget of ${:.2}{until}; ask the gateway's \
                         operator to raise it",
                        micros_to_usd(hard)
                    ),
                    retry_after,
                });
            }
            reserved = worst().max(0);
            s.reserved += reserved;
        }
        drop(s);
        Ok(Some(BudgetHold {
            state,
            counters: self.counters.clone(),
            key_id: key.id,
            window_start: start,
            reserved,
            soft: lim.soft,
            settled: false,
        }))
    }

    /// The spend of `key` in its current period, from the store (after a flush) plus what is
    /// held in flight here.
    pub(crate) fn spend(&self, key: &ClientKey, now_ms: i64) -> Result<KeySpend> {
        let lim = Limits::of(key);
        let period = lim.map_or(BudgetPeriod::Monthly, |l| l.period);
        let (start, end) = period.window(now_ms);
        self.stats.flush()?;
        let spent = self.store.key_spend(key.id, start)?;
        let reserved = match self.keys.lock() {
            Ok(m) => match m.get(&key.id) {
                Some(st) => lock(st).map(|s| s.reserved).unwrap_or(0),
                None => 0,
            },
            Err(_) => 0,
        };
        let hard = lim.and_then(|l| l.hard);
        let soft = lim.and_then(|l| l.soft);
        Ok(KeySpend {
            key_id: key.id,
            period,
            period_start: start / 1000,
            period_end: end.map(|e| e / 1000),
            spent_usd: micros_to_usd(spent),
            reserved_usd: micros_to_usd(reserved),
            budget_usd: key.budget_usd,
            budget_left_usd: hard.map(|h| micros_to_usd((h - spent).max(0))),
            soft_budget_usd: key.soft_budget_usd,
            soft_budget_reached: soft.is_some_and(|s| spent >= s),
            budget_reached: hard.is_some_and(|h| spent >= h),
        })
    }
}

fn lock(m: &Mutex<KeyState>) -> Result<MutexGuard<'_, KeyState>> {
    m.lock()
        .map_err(|_| Error::Internal("budget state lock poisoned".into()))
}

/// The worst-case cost one admitted request holds under its key's budget. Settled once with the
/// real cost; dropped unsettled (the request failed before any usage), it gives it all back.
#[derive(Debug)]
pub(crate) struct BudgetHold {
    state: Arc<Mutex<KeyState>>,
    counters: Arc<Counters>,
    key_id: i64,
    window_start: i64,
    reserved: i64,
    soft: Option<i64>,
    settled: bool,
}

impl BudgetHold {
    /// Replaces the reservation by the request's real cost (`None`: unpriced, nothing spent);
    /// `started_ms` is when the request began, which decides its window.
    pub(crate) fn settle(&mut self, cost_micros: Option<i64>, started_ms: i64) {
        if self.settled {
            return;
        }
        self.settled = true;
        let Ok(mut s) = lock(&self.state) else {
            return;
        };
        s.reserved = (s.reserved - self.reserved).max(0);
        let current = s.window.is_some_and(|(_, st)| st == self.window_start);
        if let (Some(cost), true) = (cost_micros, current && started_ms >= self.window_start) {
            s.spent += cost.max(0);
        }
        if let Some(soft) = self.soft {
            if current && !s.soft_alerted && s.spent >= soft {
                s.soft_alerted = true;
                self.counters.soft_alerts.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    key_id = self.key_id,
                    spent_usd = micros_to_usd(s.spent),
                    soft_budget_usd = micros_to_usd(soft),
                    "client key passed its soft budget"
                );
            }
        }
    }
}

impl Drop for BudgetHold {
    fn drop(&mut self) {
        if !self.settled {
            self.settled = true;
            if let Ok(mut s) = lock(&self.state) {
                s.reserved = (s.reserved - self.reserved).max(0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(y: i64, m: i64, d: i64) -> i64 {
        days_from_civil(y, m, d) * DAY_MS
    }

    #[test]
    fn civil_round_trip() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        for day in [-800_000, -1, 0, 59, 60, 11_016, 20_000, 20_820, 800_000] {
            let (y, m) = year_month(day);
            let first = days_from_civil(y, m, 1);
            assert!(first <= day && day - first < 31, "{day}: {y}-{m}");
        }
    }

    #[test]
    fn windows_roll_over_at_utc_boundaries() {
        // 2026-12-04 21:00 UTC, a Friday.
        let now = ms(2026, 12, 4) + 21 * 3_600_000;
        assert_eq!(
            BudgetPeriod::Daily.window(now),
            (ms(2026, 12, 4), Some(ms(2026, 12, 5)))
        );
        assert_eq!(
            BudgetPeriod::Weekly.window(now),
            (ms(2026, 11, 30), Some(ms(2026, 12, 7)))
        );
        assert_eq!(
            BudgetPeriod::Monthly.window(now),
            (ms(2026, 12, 1), Some(ms(2027, 1, 1)))
        );
        assert_eq!(BudgetPeriod::Total.window(now), (0, None));
        // A leap February, and the last millisecond of a month.
        assert_eq!(
            BudgetPeriod::Monthly.window(ms(2028, 2, 29)),
            (ms(2028, 2, 1), Some(ms(2028, 3, 1)))
        );
        assert_eq!(
            BudgetPeriod::Monthly.window(ms(2027, 1, 1) - 1).0,
            ms(2026, 12, 1)
        );
        // A Monday starts its own week.
        assert_eq!(
            BudgetPeriod::Weekly.window(ms(2026, 11, 30)).0,
            ms(2026, 11, 30)
        );
    }

    #[test]
    fn micros_round_to_the_nearest() {
        assert_eq!(usd_to_micros(0.1 + 0.2), 300_000);
        assert_eq!(usd_to_micros(12.345_678_9), 12_345_679);
        assert!((micros_to_usd(1_500_000) - 1.5).abs() < 1e-12);
    }
}
