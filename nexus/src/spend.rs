//! Spend queries on the hub: a key's spend against its budget, every key's at once, budget
//! event counts, and the one explicit way to change recorded costs (repricing).
//!
//! These are blocking calls (they flush the stats writer and read the store): async callers
//! run them on a blocking thread.

use std::collections::HashMap;

use crate::budgets::{BudgetCounters, KeySpend};
use crate::error::Result;
use crate::hub::Hub;
use crate::time::now_ms;
use crate::usage::{RepriceQuery, RepriceReport};

impl Hub {
    /// Key `id`'s spend in its current budget period (monthly for a key without a budget),
    /// with its budget and what is left of it.
    pub fn key_spend(&self, id: i64) -> Result<KeySpend> {
        let key = self.registry().key(id)?;
        self.0.admission.budgets.spend(&key, now_ms())
    }

    /// [`key_spend`](Self::key_spend) of every key, by id.
    pub fn keys_spend(&self) -> Result<HashMap<i64, KeySpend>> {
        let now = now_ms();
        self.registry()
            .keys()?
            .iter()
            .map(|k| Ok((k.id, self.0.admission.budgets.spend(k, now)?)))
            .collect()
    }

    /// Requests refused over budget and soft thresholds crossed since the hub opened.
    pub fn budget_counters(&self) -> BudgetCounters {
        self.0.admission.budgets.counters()
    }

    /// Recomputes the recorded cost of the requests `q` selects at the models' current
    /// effective prices, and says how many rows changed. Rows of a model that no longer exists
    /// keep their cost. Budgets read the repriced figures from their next period load.
    pub fn reprice(&self, q: &RepriceQuery) -> Result<RepriceReport> {
        if let (Some(s), Some(u)) = (q.since, q.until) {
            if s >= u {
                return Err(crate::Error::invalid_param(
                    "until",
                    "`until` must be after `since`",
                ));
            }
        }
        self.flush()?;
        let models = self.registry().models(None)?;
        let by_name: HashMap<(i64, &str), &crate::records::Model> = models
            .iter()
            .map(|m| ((m.provider_id, m.name.as_str()), m))
            .collect();
        let cost = |row: &crate::usage::PricedRow| {
            let m = by_name.get(&(row.provider_id?, row.model.as_str()))?;
            Some(
                m.prices
                    .as_ref()
                    .map(|p| crate::prices::row_cost_micros(p, row)),
            )
        };
        let report = self.registry().store().reprice(q, now_ms(), &cost)?;
        if !q.dry_run {
            tracing::info!(
                rows_changed = report.rows_changed,
                cost_before_usd = report.cost_before_usd,
                cost_after_usd = report.cost_after_usd,
                "usage repriced at current prices"
            );
        }
        Ok(report)
    }
}
