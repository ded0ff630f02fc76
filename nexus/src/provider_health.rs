//! The active health checks on the hub: starting the scheduled probes, a round on demand, each
//! provider's health and the state-change events.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::health_checks::{HealthCheckCounters, ProbeResult, ProviderHealth};
use crate::hub::Hub;
use crate::records::ProviderEvent;

impl Hub {
    /// Starts the scheduled probes on the current tokio runtime (a round every
    /// `HubOptions::health_checks.interval`) when `health_checks.scheduled` is set; a no-op
    /// otherwise, or when already started. The task ends when the last handle of the hub goes.
    pub fn start_health_checks(&self) -> Result<()> {
        let cfg = self.0.health.cfg;
        if !cfg.scheduled
            || self
                .0
                .health_started
                .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return Ok(());
        }
        let rt = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::Config("health checks need a tokio runtime to run on".into()))?;
        let weak = Arc::downgrade(&self.0);
        rt.spawn(async move {
            let mut tick = tokio::time::interval(cfg.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The first tick is immediate: wait one interval, the server has just started.
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let hub = Hub(inner);
                hub.probe_providers().await;
            }
        });
        Ok(())
    }

    /// Probes every provider the checks look after now, applies the verdicts (automatic
    /// disable and re-enable) and returns each result.
    pub async fn probe_providers(&self) -> Vec<ProbeResult> {
        self.0
            .health
            .round(&self.0.registry, &self.0.upstream)
            .await
    }

    /// Every provider's health: its state, its last probe, its recent failures, its cooldown.
    pub fn provider_health(&self) -> Result<Vec<ProviderHealth>> {
        self.0
            .health
            .status(&self.0.registry, &self.0.admission.health)
    }

    /// Provider state changes (of one provider, or all), newest first.
    pub fn provider_events(
        &self,
        provider_id: Option<i64>,
        limit: usize,
    ) -> Result<Vec<ProviderEvent>> {
        self.0.registry.provider_events(provider_id, limit)
    }

    /// Probe and state-change counts since the hub opened.
    pub fn health_check_counters(&self) -> HealthCheckCounters {
        self.0.health.counters()
    }
}
