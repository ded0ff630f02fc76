//! [`HubOptions`]: everything a hub can be tuned with, in one place for every binding.

use std::time::Duration;

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
    /// Per-model encoding overrides for the token estimator.
    pub token_overrides: std::collections::HashMap<String, Option<Encoding>>,
    /// Bounds on one request (messages, content parts, JSON values).
    pub request_limits: RequestLimits,
    /// Bounds on one upstream answer (body and stream event sizes).
    pub upstream_limits: UpstreamLimits,
    /// Completion tokens reserved under a key's token limit when a request sets no
    /// `max_tokens`/`max_completion_tokens`.
    pub default_max_tokens: u64,
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
            token_overrides: Default::default(),
            request_limits: RequestLimits::default(),
            upstream_limits: UpstreamLimits::default(),
            default_max_tokens: 4096,
        }
    }
}
