//! Active health checks: a cheap scheduled probe per provider (its model list; a one-token
//! completion where there is none, as for Azure deployments, or where the list answers 404/405),
//! a failure threshold within a time window, automatic disable and re-enable.
//!
//! The rules operators of channel gateways asked for:
//! - A provider that fails `failures` probes within `window` is disabled, marked automatic, with
//!   the last error as its reason; it keeps being probed and is enabled again by the first probe
//!   that passes.
//! - A 429 never counts as a failure (the provider is up, only busy), nor as a recovery.
//! - A provider an operator disabled is never probed nor enabled by the checks; a provider with
//!   `options.health_check: false` is never probed.
//! - Every state change is a [`crate::records::ProviderEvent`] with its reason (the registry
//!   writes it), logged, and counted here.
//!
//! This is the active side; the passive side (cooldown after failed requests) is
//! [`crate::resilience::Health`].

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::openai::ChatRequest;
use crate::records::{ModelKind, ProviderKind};
use crate::registry::{Candidate, ProviderEntry, Registry};
use crate::time::now_ms;
use crate::upstream::models::{list_call, parse_page};
use crate::upstream::{adapter_for, Upstream};

/// When and how strictly providers are probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheckConfig {
    /// Probe every `interval` in the background once started (off by default in the library;
    /// the server turns it on).
    pub scheduled: bool,
    /// Time between two rounds of probes.
    pub interval: Duration,
    /// Failed probes within `window` that disable a provider.
    pub failures: u32,
    /// The window failures are counted in.
    pub window: Duration,
    /// Time one probe may take.
    pub timeout: Duration,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        HealthCheckConfig {
            scheduled: false,
            interval: Duration::from_secs(60),
            failures: 3,
            window: Duration::from_secs(300),
            timeout: Duration::from_secs(10),
        }
    }
}

/// How a probe asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeMethod {
    /// The provider's model list.
    Models,
    /// A one-token chat completion on its first chat model.
    Completion,
}

/// One probe's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeResult {
    /// The provider.
    pub provider_id: i64,
    /// Its name.
    pub provider_name: String,
    /// Unix milliseconds at the start.
    pub at_ms: i64,
    /// How it asked.
    pub method: ProbeMethod,
    /// It answered as a healthy provider does (a 429 is not a failure either).
    pub ok: bool,
    /// The answer's HTTP status, when there was one.
    pub status: Option<u16>,
    /// What failed (for the operator: it may name the upstream).
    pub error: Option<String>,
    /// Milliseconds.
    pub ms: f64,
    /// The state change it caused: `auto_disabled` or `auto_enabled`.
    pub changed: Option<crate::records::ProviderEventKind>,
}

/// A provider's health as the operator sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProviderHealth {
    /// The provider.
    pub provider_id: i64,
    /// Its name.
    pub name: String,
    /// Routable.
    pub enabled: bool,
    /// Disabled by the health checks.
    pub auto_disabled: bool,
    /// Why it is disabled.
    pub disabled_reason: Option<String>,
    /// Probed by the health checks (not opted out, not disabled by an operator).
    pub probed: bool,
    /// Failed probes in the current window.
    pub recent_failures: u32,
    /// The last probe, if one ran.
    pub last_probe: Option<ProbeResult>,
    /// Milliseconds left of a cooldown after failed requests (the passive side), if any.
    pub cooling_down_ms: Option<u64>,
}

/// Health-check events since the hub opened, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct HealthCheckCounters {
    /// Probes that passed.
    pub probes_ok: u64,
    /// Probes that failed.
    pub probes_failed: u64,
    /// Providers disabled by the checks.
    pub auto_disabled: u64,
    /// Providers enabled again by the checks.
    pub auto_enabled: u64,
}

#[derive(Debug, Default)]
struct ProbeState {
    failures: VecDeque<Instant>,
    last: Option<ProbeResult>,
}

/// The probes' state per provider and their counters.
#[derive(Debug)]
pub(crate) struct HealthChecks {
    pub(crate) cfg: HealthCheckConfig,
    state: Mutex<HashMap<i64, ProbeState>>,
    ok: AtomicU64,
    failed: AtomicU64,
    disabled: AtomicU64,
    enabled: AtomicU64,
}

/// Whether the checks look after `p`.
fn probed(p: &ProviderEntry) -> bool {
    let r = &p.record;
    r.options.health_check != Some(false) && (r.enabled || r.auto_disabled)
}

impl HealthChecks {
    pub(crate) fn new(cfg: HealthCheckConfig) -> HealthChecks {
        HealthChecks {
            cfg,
            state: Mutex::new(HashMap::new()),
            ok: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            disabled: AtomicU64::new(0),
            enabled: AtomicU64::new(0),
        }
    }

    pub(crate) fn counters(&self) -> HealthCheckCounters {
        HealthCheckCounters {
            probes_ok: self.ok.load(Ordering::Relaxed),
            probes_failed: self.failed.load(Ordering::Relaxed),
            auto_disabled: self.disabled.load(Ordering::Relaxed),
            auto_enabled: self.enabled.load(Ordering::Relaxed),
        }
    }

    /// Probes every provider the checks look after, at once, and applies the verdicts.
    pub(crate) async fn round(&self, registry: &Registry, upstream: &Upstream) -> Vec<ProbeResult> {
        let Ok(providers) = registry.providers() else {
            return Vec::new();
        };
        let entries: Vec<Arc<ProviderEntry>> = providers
            .iter()
            .filter_map(|p| registry.provider_entry(p.id).ok())
            .filter(|p| probed(p))
            .collect();
        let probes = entries.iter().map(|p| self.probe(registry, upstream, p));
        let mut results = futures_util::future::join_all(probes).await;
        for r in &mut results {
            r.changed = self.verdict(registry, r);
        }
        results
    }

    /// Records a result and changes the provider's state when the rules say so.
    fn verdict(
        &self,
        registry: &Registry,
        r: &ProbeResult,
    ) -> Option<crate::records::ProviderEventKind> {
        use crate::records::ProviderEventKind as K;
        let now = Instant::now();
        let busy = r.status == Some(429);
        let failures = {
            let mut m = self.state.lock().ok()?;
            let s = m.entry(r.provider_id).or_default();
            s.last = Some(r.clone());
            while s
                .failures
                .front()
                .is_some_and(|t| now.duration_since(*t) > self.cfg.window)
            {
                s.failures.pop_front();
            }
            if !r.ok && !busy {
                s.failures.push_back(now);
            }
            s.failures.len() as u32
        };
        if r.ok || busy {
            self.ok.fetch_add(1, Ordering::Relaxed);
        } else {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        let change = if r.ok && !busy {
            registry
                .set_probe_state(r.provider_id, true, "its health probe passed again")
                .map(|c| c.then_some(K::AutoEnabled))
        } else if !r.ok && !busy && failures >= self.cfg.failures.max(1) {
            let why = format!(
                "{failures} failed health probes within {}s; last: {}",
                self.cfg.window.as_secs(),
                r.error.as_deref().unwrap_or("no answer")
            );
            registry
                .set_probe_state(r.provider_id, false, &why)
                .map(|c| c.then_some(K::AutoDisabled))
        } else {
            Ok(None)
        };
        match change {
            Ok(Some(k)) => {
                match k {
                    K::AutoDisabled => self.disabled.fetch_add(1, Ordering::Relaxed),
                    _ => self.enabled.fetch_add(1, Ordering::Relaxed),
                };
                if let Ok(mut m) = self.state.lock() {
                    if let Some(s) = m.get_mut(&r.provider_id) {
                        if k == K::AutoEnabled {
                            s.failures.clear();
                        }
                        if let Some(l) = &mut s.last {
                            l.changed = Some(k);
                        }
                    }
                }
                Some(k)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, provider_id = r.provider_id, "could not apply a health verdict");
                None
            }
        }
    }

    async fn probe(
        &self,
        registry: &Registry,
        upstream: &Upstream,
        p: &Arc<ProviderEntry>,
    ) -> ProbeResult {
        let start = Instant::now();
        let at_ms = now_ms();
        let listed = p.record.kind != ProviderKind::Azure;
        let mut method = ProbeMethod::Models;
        let mut outcome = if listed {
            self.list(upstream, p).await
        } else {
            Err(Error::invalid("no list"))
        };
        // No list (Azure), or a compatible server that does not implement one.
        let no_list = !listed
            || matches!(
                &outcome,
                Err(Error::Upstream {
                    status: Some(404 | 405),
                    ..
                })
            );
        if no_list {
            method = ProbeMethod::Completion;
            outcome = self.complete(registry, upstream, p).await;
        }
        let status = match &outcome {
            Ok(()) => Some(200),
            Err(Error::Upstream { status, .. }) => *status,
            Err(_) => None,
        };
        ProbeResult {
            provider_id: p.record.id,
            provider_name: p.record.name.clone(),
            at_ms,
            method,
            ok: outcome.is_ok(),
            status,
            error: outcome.err().map(|e| e.to_string()),
            ms: start.elapsed().as_secs_f64() * 1000.0,
            changed: None,
        }
    }

    async fn list(&self, upstream: &Upstream, p: &ProviderEntry) -> Result<()> {
        let call = list_call(p, None)?;
        let body = upstream
            .get(p, &call.url, call.headers, self.cfg.timeout)
            .await?;
        parse_page(p.record.kind, &body).map(|_| ())
    }

    async fn complete(
        &self,
        registry: &Registry,
        upstream: &Upstream,
        p: &Arc<ProviderEntry>,
    ) -> Result<()> {
        let model = registry
            .models(Some(p.record.id))?
            .into_iter()
            .find(|m| m.kind == ModelKind::Chat)
            .ok_or_else(|| Error::invalid("no chat model to probe with"))?;
        let mut req = ChatRequest::user(&model.name, "ping");
        req.extra.insert("max_tokens".into(), 1.into());
        let cand = Candidate::new(p.clone(), model);
        let adapter = adapter_for(p.record.kind)?;
        let call = adapter.build(&req, &cand, false, false)?;
        let resp = tokio::time::timeout(
            self.cfg.timeout,
            upstream.send(&cand, call, self.cfg.timeout),
        )
        .await
        .map_err(|_| Error::Timeout {
            phase: crate::error::TimeoutPhase::FirstByte,
        })??;
        let body = upstream.read_body(resp, self.cfg.timeout).await?;
        adapter.completion(body, &req.model).map(|_| ())
    }

    /// Every provider's health.
    pub(crate) fn status(
        &self,
        registry: &Registry,
        passive: &crate::resilience::Health,
    ) -> Result<Vec<ProviderHealth>> {
        let now = Instant::now();
        let m = self
            .state
            .lock()
            .map_err(|_| Error::Internal("health state lock poisoned".into()))?;
        registry
            .providers()?
            .into_iter()
            .map(|p| {
                let s = m.get(&p.id);
                let entry = registry.provider_entry(p.id)?;
                Ok(ProviderHealth {
                    provider_id: p.id,
                    probed: probed(&entry),
                    name: p.name,
                    enabled: p.enabled,
                    auto_disabled: p.auto_disabled,
                    disabled_reason: p.disabled_reason,
                    recent_failures: s.map_or(0, |s| {
                        s.failures
                            .iter()
                            .filter(|t| now.duration_since(**t) <= self.cfg.window)
                            .count() as u32
                    }),
                    last_probe: s.and_then(|s| s.last.clone()),
                    cooling_down_ms: passive.cooldown_left(p.id).map(|d| d.as_millis() as u64),
                })
            })
            .collect()
    }
}
