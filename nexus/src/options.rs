//! [`HubOptions`]: everything a hub can be tuned with, in one place for every binding.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::crypto::MasterKey;
use crate::openai::RequestLimits;
use crate::resilience::{CacheConfig, RetryConfig};
use crate::stats::StatsConfig;
use crate::tokens::Encoding;
use crate::upstream::UpstreamLimits;

/// Hub settings. `Default` is what the server runs with.
#[derive(Debug, Clone)]
pub struct HubOptions {
    /// The master key; `None` reads `NEXUS_MASTER_KEY`, else a key file beside the database.
    pub master_key: Option<MasterKey>,
    /// Stats writer tuning.
    pub stats: StatsConfig,
    /// Retry, backoff and cooldown.
    pub retry: RetryConfig,
    /// Default connect timeout.
    pub connect_timeout: Duration,
    /// Default wait for the response head / first stream event (and the whole non-stream body).
    pub first_byte_timeout: Duration,
    /// Default wait between stream events.
    pub idle_timeout: Duration,
    /// Opt-in response cache for identical non-streaming requests.
    pub cache: Option<CacheConfig>,
    /// Keep conversation messages (user prompt and assistant answer) for the conversation view.
    pub record_messages: bool,
    /// Which request and answer bodies the request explorer keeps, secrets redacted (a key's
    /// own `record_bodies` overrides it).
    pub record_bodies: crate::records::BodyRecording,
    /// Per-model encoding overrides for the token estimator.
    pub token_overrides: std::collections::HashMap<String, Option<Encoding>>,
    /// Bounds on one request (messages, content parts, JSON values).
    pub request_limits: RequestLimits,
    /// Bounds on one upstream answer (body and stream event sizes).
    pub upstream_limits: UpstreamLimits,
    /// Completion tokens reserved under a key's token limit when a request sets no
    /// `max_tokens`/`max_completion_tokens`.
    pub default_max_tokens: u64,
    /// Active health checks: with `scheduled`, every `interval` once started
    /// ([`crate::Hub::start_health_checks`]); probes can always be run on demand.
    pub health_checks: crate::health_checks::HealthCheckConfig,
}

impl Default for HubOptions {
    fn default() -> Self {
        HubOptions {
            master_key: None,
            stats: StatsConfig::default(),
            retry: RetryConfig::default(),
            connect_timeout: Duration::from_secs(10),
            first_byte_timeout: Duration::from_secs(120),
            idle_timeout: Duration::from_secs(60),
            cache: None,
            record_messages: true,
            record_bodies: crate::records::BodyRecording::Off,
            token_overrides: Default::default(),
            request_limits: RequestLimits::default(),
            upstream_limits: UpstreamLimits::default(),
            default_max_tokens: 4096,
            health_checks: Default::default(),
        }
    }
}

/// The one settings schema every front end parses into [`HubOptions`]: the server's TOML file
/// (these keys at its top level), the C API's `options_json` and the Python constructor's keyword
/// arguments. Every field is optional; an absent one keeps the default. Unknown keys are refused,
/// so a typo is an error rather than a silently ignored setting.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HubSettings {
    /// The master key, base64 of 32 bytes (default: `NEXUS_MASTER_KEY`, else the key file).
    pub master_key: Option<String>,
    /// Keep conversation messages for the conversation view (default true).
    pub record_messages: Option<bool>,
    /// Which request bodies the explorer keeps: `off` (default), `errors` or `all`.
    pub record_bodies: Option<crate::records::BodyRecording>,
    /// Days conversation messages are kept (default 30; 0 keeps them forever).
    pub message_retention_days: Option<u32>,
    /// Days request rows (the explorer's metadata) are kept (default 90; 0: forever).
    pub request_retention_days: Option<u32>,
    /// Days hourly rollups are kept (default 730; 0: forever; else at least 40).
    pub rollup_retention_days: Option<u32>,
    /// A cap on the database size in MiB: past it the oldest bodies, then request rows, go.
    pub max_db_mb: Option<u64>,
    /// Seconds between two rounds of active health probes (0: off; the server's default 60).
    pub health_check_interval_seconds: Option<u64>,
    /// Failed probes within the window that disable a provider (default 3).
    pub health_check_failures: Option<u32>,
    /// The window those failures are counted in, in seconds (default 300).
    pub health_check_window_seconds: Option<u64>,
    /// The opt-in response cache: seconds an answer stays valid (0 or absent: off).
    pub cache_ttl_seconds: Option<u64>,
    /// Most cached answers (default 1000).
    pub cache_max_entries: Option<usize>,
    /// Attempts per provider (default 3).
    pub max_attempts: Option<u32>,
    /// Connect timeout (default 10).
    pub connect_timeout_seconds: Option<u64>,
    /// Wait for the answer head / first stream event, and the whole non-stream body (default 120).
    pub first_byte_timeout_seconds: Option<u64>,
    /// Wait between two stream events (default 60).
    pub idle_timeout_seconds: Option<u64>,
    /// Completion tokens reserved under a token limit when a request sets none (default 4096).
    pub default_max_tokens: Option<u64>,
    /// Most `messages` in one request (default 10,000).
    pub max_messages: Option<usize>,
    /// Most content parts in one message (default 1,000).
    pub max_content_parts: Option<usize>,
    /// Most JSON values in one request body, an object counting 8 (default 1,000,000).
    pub max_json_values: Option<usize>,
    /// Largest non-stream upstream answer in bytes (default 32 MiB).
    pub max_upstream_body_bytes: Option<usize>,
    /// Largest single upstream stream event in bytes (default 4 MiB).
    pub max_upstream_event_bytes: Option<usize>,
}

impl HubSettings {
    /// The keys this schema takes, for front ends that mix them with their own (the server's
    /// TOML file).
    pub const KEYS: [&'static str; 22] = [
        "master_key",
        "record_messages",
        "record_bodies",
        "message_retention_days",
        "request_retention_days",
        "rollup_retention_days",
        "max_db_mb",
        "health_check_interval_seconds",
        "health_check_failures",
        "health_check_window_seconds",
        "cache_ttl_seconds",
        "cache_max_entries",
        "max_attempts",
        "connect_timeout_seconds",
        "first_byte_timeout_seconds",
        "idle_timeout_seconds",
        "default_max_tokens",
        "max_messages",
        "max_content_parts",
        "max_json_values",
        "max_upstream_body_bytes",
        "max_upstream_event_bytes",
    ];

    /// Applies every set field to `o`.
    pub fn apply(&self, o: &mut HubOptions) -> crate::Result<()> {
        fn positive<T: PartialOrd + Default + Copy>(name: &str, v: T) -> crate::Result<T> {
            if v > T::default() {
                Ok(v)
            } else {
                Err(crate::Error::Config(format!("{name} must be at least 1")))
            }
        }
        if let Some(k) = &self.master_key {
            o.master_key = Some(MasterKey::from_base64(k)?);
        }
        if let Some(v) = self.record_messages {
            o.record_messages = v;
        }
        if let Some(v) = self.record_bodies {
            o.record_bodies = v;
        }
        if let Some(v) = self.message_retention_days {
            o.stats.message_retention_days = v;
        }
        if let Some(v) = self.request_retention_days {
            o.stats.request_retention_days = v;
        }
        if let Some(v) = self.rollup_retention_days {
            o.stats.rollup_retention_days = v;
        }
        if let Some(v) = self.max_db_mb {
            o.stats.max_db_bytes = Some(positive("max_db_mb", v)?.saturating_mul(1 << 20));
        }
        o.stats.retention().validate()?;
        let h = &mut o.health_checks;
        match self.health_check_interval_seconds {
            Some(0) => h.scheduled = false,
            Some(secs) => {
                h.scheduled = true;
                h.interval = Duration::from_secs(secs);
            }
            None => {}
        }
        if let Some(v) = self.health_check_failures {
            h.failures = positive("health_check_failures", v)?;
        }
        if let Some(v) = self.health_check_window_seconds {
            h.window = Duration::from_secs(positive("health_check_window_seconds", v)?);
        }
        match self.cache_ttl_seconds {
            Some(0) => o.cache = None,
            Some(ttl) => {
                o.cache = Some(CacheConfig {
                    ttl: Duration::from_secs(ttl),
                    max_entries: positive(
                        "cache_max_entries",
                        self.cache_max_entries.unwrap_or(1000),
                    )?,
                })
            }
            None => {}
        }
        if let Some(v) = self.max_attempts {
            o.retry.max_attempts = positive("max_attempts", v)?;
        }
        if let Some(v) = self.connect_timeout_seconds {
            o.connect_timeout = Duration::from_secs(positive("connect_timeout_seconds", v)?);
        }
        if let Some(v) = self.first_byte_timeout_seconds {
            o.first_byte_timeout = Duration::from_secs(positive("first_byte_timeout_seconds", v)?);
        }
        if let Some(v) = self.idle_timeout_seconds {
            o.idle_timeout = Duration::from_secs(positive("idle_timeout_seconds", v)?);
        }
        if let Some(v) = self.default_max_tokens {
            o.default_max_tokens = positive("default_max_tokens", v)?;
        }
        if let Some(v) = self.max_messages {
            o.request_limits.max_messages = positive("max_messages", v)?;
        }
        if let Some(v) = self.max_content_parts {
            o.request_limits.max_content_parts = positive("max_content_parts", v)?;
        }
        if let Some(v) = self.max_json_values {
            o.request_limits.max_json_values = positive("max_json_values", v)?;
        }
        if let Some(v) = self.max_upstream_body_bytes {
            o.upstream_limits.max_body_bytes = positive("max_upstream_body_bytes", v)?;
        }
        if let Some(v) = self.max_upstream_event_bytes {
            o.upstream_limits.max_event_bytes = positive("max_upstream_event_bytes", v)?;
        }
        Ok(())
    }

    /// Options from these settings over the defaults.
    pub fn to_options(&self) -> crate::Result<HubOptions> {
        let mut o = HubOptions::default();
        self.apply(&mut o)?;
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_and_apply() {
        let s: HubSettings = serde_json::from_str(
            r#"{"record_messages": false, "cache_ttl_seconds": 5, "max_messages": 7, "idle_timeout_seconds": 2}"#,
        )
        .unwrap();
        let o = s.to_options().unwrap();
        assert!(!o.record_messages);
        assert_eq!(
            o.cache.as_ref().map(|c| c.ttl),
            Some(Duration::from_secs(5))
        );
        assert_eq!(o.request_limits.max_messages, 7);
        assert_eq!(o.idle_timeout, Duration::from_secs(2));
        assert!(serde_json::from_str::<HubSettings>(r#"{"recrod_messages": false}"#).is_err());
        let zero: HubSettings = serde_json::from_str(r#"{"max_attempts": 0}"#).unwrap();
        assert!(zero.to_options().is_err());
        // Every field is listed in KEYS, so a front end can route its keys here.
        let all = serde_json::to_value(HubSettings::default()).unwrap();
        let mut names: Vec<&str> = all
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        names.sort_unstable();
        let mut keys = HubSettings::KEYS.to_vec();
        keys.sort_unstable();
        assert_eq!(names, keys);
    }
}
