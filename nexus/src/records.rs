//! The records the registry manages: providers, models, client keys and conversation sessions.
//!
//! These serialize to the JSON shapes of the admin API (docs/API.md), which the C and Python
//! bindings reuse, so one shape serves every caller. No record ever carries a secret in clear:
//! providers expose `api_key_hint` and header hints, keys expose `prefix`.

use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;

use crate::budgets::BudgetPeriod;
use crate::error::{Error, Result};

/// The wire format a provider speaks. The hub translates OpenAI chat completions to and from
/// each; `openai` is relayed byte for byte.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// OpenAI chat completions (and every compatible server): `{base}/v1/chat/completions`.
    #[default]
    Openai,
    /// Anthropic's Messages API: `{base}/v1/messages`, `x-api-key`, `anthropic-version`.
    Anthropic,
    /// Google's Gemini API: `{base}/v1beta/models/{model}:generateContent`, `x-goog-api-key`.
    Gemini,
    /// Azure OpenAI: deployment URLs, `api-version`, `api-key`.
    Azure,
}

impl ProviderKind {
    /// Every kind, in declaration order.
    pub const ALL: [ProviderKind; 4] = [
        ProviderKind::Openai,
        ProviderKind::Anthropic,
        ProviderKind::Gemini,
        ProviderKind::Azure,
    ];

    /// The stable name stored in the database and used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Openai => "openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Gemini => "gemini",
            ProviderKind::Azure => "azure",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// What a model does: answer chats, or turn text into vectors. Routing keeps the two apart: a
/// chat request for an embedding model (and the reverse) is a 400 naming the right endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// Chat completions (and the Messages and Responses APIs translated to them).
    #[default]
    Chat,
    /// Embeddings (`/v1/embeddings`).
    Embedding,
}

impl ModelKind {
    /// Every kind, in declaration order.
    pub const ALL: [ModelKind; 2] = [ModelKind::Chat, ModelKind::Embedding];

    /// The stable name stored in the database and used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelKind::Chat => "chat",
            ModelKind::Embedding => "embedding",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Per-provider tuning. Every field is optional; `None` means the Hub default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderOptions {
    /// Extra headers sent upstream with every request. Their values are sealed at rest like the
    /// upstream key (they often carry one: `api-key`, `x-goog-api-key`), so in every answer the
    /// values are hints (`abc...wxyz`). In an update, `None` (the field left out) keeps the stored
    /// headers and `Some` replaces them; a value equal to the stored value's hint keeps that value,
    /// so an answer sent back unchanged does not overwrite a secret with its hint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, String>>,
    /// Time allowed until the response head (and, for streams, the first event).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_byte_timeout_ms: Option<u64>,
    /// Time allowed between two stream events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_ms: Option<u64>,
    /// Attempts per request on this provider (1 = no retry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    /// Relative weight when several providers serve one model (default 1; 0 = only as fallback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// Normalize non-standard OpenAI responses (string `message`, `text` instead of `delta`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalize: Option<bool>,
    /// Whether to ask the upstream for usage in streams (`stream_options.include_usage`).
    /// Default true; turn off for upstreams that reject `stream_options`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_usage: Option<bool>,
    /// `azure`: the `api-version` query parameter; `anthropic`: the `anthropic-version` header.
    /// Defaults: Azure `2024-10-21`, Anthropic `2023-06-01`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// `anthropic`: the `anthropic-beta` header sent with every request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anthropic_beta: Option<String>,
    /// `azure`: use the newer `{base}/openai/v1/chat/completions` path (the model name in the
    /// body) instead of deployment URLs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure_v1: Option<bool>,
    /// Probe this provider in the active health checks (default true; false opts it out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<bool>,
    /// `openai`: the provider also serves OpenAI's Responses API (`.../responses` beside its
    /// `.../chat/completions`), so a Responses request is relayed there as the client sent it
    /// instead of being translated to chat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub responses_api: Option<bool>,
}

/// A provider as callers see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provider {
    /// Database id; stable, never renumbered.
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// The wire format it speaks.
    #[serde(default)]
    pub kind: ProviderKind,
    /// The URL as configured.
    pub base_url: String,
    /// The URL the hub calls, derived from `base_url` and `kind` (`{model}` stands for the
    /// upstream model name where the URL holds it).
    pub endpoint: String,
    /// A recognisable hint of the upstream key (`sk-...wxyz`).
    pub api_key_hint: String,
    /// Free text.
    pub description: String,
    /// Disabled providers are never routed to.
    pub enabled: bool,
    /// Disabled by the health checks, which enable it again when its probes pass (an operator's
    /// disable is never undone by them).
    #[serde(default)]
    pub auto_disabled: bool,
    /// Why it is disabled (the probes' last error, or "disabled by an operator").
    #[serde(default)]
    pub disabled_reason: Option<String>,
    /// Tuning.
    pub options: ProviderOptions,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
    /// How many models it serves.
    pub model_count: usize,
    /// How many upstream keys its pool holds (its own key included).
    #[serde(default)]
    pub key_count: usize,
    /// How many of them are in use (enabled and not set aside).
    #[serde(default)]
    pub keys_active: usize,
    /// Why this provider is not routable although it may be enabled: its stored options or
    /// headers cannot be decoded (it fails closed until an update sets them again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_error: Option<String>,
}

/// Input to create a provider.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewProvider {
    /// Unique name.
    pub name: String,
    /// The wire format; `openai` when absent.
    #[serde(default)]
    pub kind: ProviderKind,
    /// Upstream URL; see [`chat_endpoint`].
    #[serde(alias = "server_url")]
    pub base_url: String,
    /// Upstream secret. Encrypted at rest.
    #[serde(alias = "server_key")]
    pub api_key: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// The original system's per-provider client key. Creates (or extends) a client key scoped to
    /// this provider so old clients keep working.
    #[serde(default)]
    pub personalized_key: Option<String>,
    /// Defaults to true.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Tuning.
    #[serde(default)]
    pub options: ProviderOptions,
}

/// A partial update of a provider; absent fields are kept.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderPatch {
    /// New name.
    pub name: Option<String>,
    /// New wire format.
    pub kind: Option<ProviderKind>,
    /// New URL.
    #[serde(alias = "server_url")]
    pub base_url: Option<String>,
    /// New upstream key; an empty string keeps the current one (the UI's write-only field).
    #[serde(alias = "server_key")]
    pub api_key: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// Enable or disable.
    pub enabled: Option<bool>,
    /// Replace the options; within them, an absent `headers` keeps the stored headers (see
    /// [`ProviderOptions::headers`]).
    pub options: Option<ProviderOptions>,
    /// Add a legacy client key for this provider (see [`NewProvider::personalized_key`]).
    pub personalized_key: Option<String>,
}

/// One upstream key of a provider's key pool, as listed: its hint, never the key.
///
/// The provider's own key (`api_key` of the provider) is member `0`; the others are added to
/// the pool. Requests spread over the members that are enabled and not set aside, by weight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolKey {
    /// `0` for the provider's own key, otherwise the pool key's database id.
    pub id: i64,
    /// The provider.
    pub provider_id: i64,
    /// A label (`"primary"` for the provider's own key).
    pub name: String,
    /// A recognisable hint of the key (`sk-...wxyz`).
    pub hint: String,
    /// Share of the requests, relative to the other members (1 to 1000).
    pub weight: u32,
    /// An operator's switch.
    pub enabled: bool,
    /// Why the hub set this key aside (its upstream answered 401 or 403); it stays aside until an
    /// operator enables it again. `None` when it is in use.
    pub set_aside: Option<String>,
    /// Seconds left of a rate-limit pause (the upstream answered 429); filled in by the hub.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooling_seconds: Option<u64>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
}

impl PoolKey {
    /// Whether requests may use it: enabled and not set aside.
    pub fn active(&self) -> bool {
        self.enabled && self.set_aside.is_none()
    }
}

/// Input to add a key to a provider's pool.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPoolKey {
    /// The upstream key.
    pub api_key: String,
    /// A label; defaults to the key's hint.
    pub name: Option<String>,
    /// Defaults to 1.
    pub weight: Option<u32>,
    /// Defaults to true.
    pub enabled: Option<bool>,
}

/// A partial update of a pool key; absent fields are kept. Enabling a key that was set aside
/// puts it back in use (the operator has looked at it).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolKeyPatch {
    /// A new key value (not for member 0: change the provider's `api_key`).
    pub api_key: Option<String>,
    /// New label.
    pub name: Option<String>,
    /// New weight.
    pub weight: Option<u32>,
    /// Enable (clearing a set-aside) or disable.
    pub enabled: Option<bool>,
}

/// The largest pool key weight.
pub const MAX_KEY_WEIGHT: u32 = 1000;

/// A model served by a provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    /// Database id.
    pub id: i64,
    /// Owning provider.
    pub provider_id: i64,
    /// Owning provider's name.
    pub provider_name: String,
    /// The name clients ask for.
    pub name: String,
    /// The name sent upstream (an alias target); `None` means the same as `name`.
    pub upstream_name: Option<String>,
    /// Free text.
    pub description: String,
    /// Price in currency units per million prompt tokens.
    pub input_price: Option<f64>,
    /// Price per million completion tokens.
    pub output_price: Option<f64>,
    /// Price per million prompt tokens read from the provider's cache (`None`: as input).
    #[serde(default)]
    pub cached_input_price: Option<f64>,
    /// Price per million prompt tokens written to the provider's cache (`None`: as input).
    #[serde(default)]
    pub cache_write_price: Option<f64>,
    /// The prices requests are costed at: the model's own, else the bundled catalog's (see
    /// [`crate::prices`]); `None`: unpriced (its requests are recorded with no cost).
    #[serde(default)]
    pub prices: Option<crate::prices::Prices>,
    /// Where `prices` come from: `model`, `catalog`, or `null` (unpriced).
    #[serde(default)]
    pub price_source: Option<crate::prices::PriceSource>,
    /// Completion tokens asked for when a request sets no `max_tokens` (Anthropic requires a
    /// value; the hub's default is 4096).
    #[serde(default)]
    pub default_max_tokens: Option<u32>,
    /// Chat or embedding.
    #[serde(default)]
    pub kind: ModelKind,
    /// Unix seconds.
    pub created_at: i64,
}

impl Model {
    /// The name to send upstream.
    pub fn upstream(&self) -> &str {
        self.upstream_name.as_deref().unwrap_or(&self.name)
    }
}

/// Input to create a model.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewModel {
    /// Client-facing name, unique per provider.
    #[serde(alias = "model_name")]
    pub name: String,
    /// Upstream name, if different.
    #[serde(default)]
    pub upstream_name: Option<String>,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Per million prompt tokens.
    #[serde(default)]
    pub input_price: Option<f64>,
    /// Per million completion tokens.
    #[serde(default)]
    pub output_price: Option<f64>,
    /// Per million cache-read prompt tokens.
    #[serde(default)]
    pub cached_input_price: Option<f64>,
    /// Per million cache-write prompt tokens.
    #[serde(default)]
    pub cache_write_price: Option<f64>,
    /// See [`Model::default_max_tokens`].
    #[serde(default)]
    pub default_max_tokens: Option<u32>,
    /// Chat (the default) or embedding.
    #[serde(default)]
    pub kind: ModelKind,
}

/// A partial update of a model. `Some(None)` clears a nullable field.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPatch {
    /// New name.
    #[serde(alias = "model_name")]
    pub name: Option<String>,
    /// New upstream name, or null to clear.
    #[serde(default, deserialize_with = "double_option")]
    pub upstream_name: Option<Option<String>>,
    /// New description.
    pub description: Option<String>,
    /// New price, or null to clear.
    #[serde(default, deserialize_with = "double_option")]
    pub input_price: Option<Option<f64>>,
    /// New price, or null to clear.
    #[serde(default, deserialize_with = "double_option")]
    pub output_price: Option<Option<f64>>,
    /// New cache-read price, or null to clear.
    #[serde(default, deserialize_with = "double_option")]
    pub cached_input_price: Option<Option<f64>>,
    /// New cache-write price, or null to clear.
    #[serde(default, deserialize_with = "double_option")]
    pub cache_write_price: Option<Option<f64>>,
    /// New default completion budget, or null to clear.
    #[serde(default, deserialize_with = "double_option")]
    pub default_max_tokens: Option<Option<u32>>,
    /// New kind.
    pub kind: Option<ModelKind>,
}

/// A client ("personalized") key, as listed: the secret is never included.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientKey {
    /// Database id.
    pub id: i64,
    /// Human name.
    pub name: String,
    /// The visible start of the key, e.g. `nx-AbCdEfGh`.
    pub prefix: String,
    /// Providers the key may use; empty means all.
    pub provider_ids: Vec<i64>,
    /// Models the key may use; empty means all.
    pub models: Vec<String>,
    /// Unix seconds after which the key no longer works.
    pub expires_at: Option<i64>,
    /// Disabled keys fail authentication.
    pub enabled: bool,
    /// Requests per minute, if limited.
    pub rpm: Option<u32>,
    /// Tokens per minute, if limited.
    pub tpm: Option<u32>,
    /// Requests in flight at once (a stream counts until it ends), if limited.
    #[serde(default)]
    pub max_concurrent: Option<u32>,
    /// Hard spending cap in USD per `budget_period`: past it requests get 429
    /// `insufficient_quota` until the period rolls over.
    #[serde(default)]
    pub budget_usd: Option<f64>,
    /// The period of both budgets (`monthly` when a budget is set without one).
    #[serde(default)]
    pub budget_period: Option<BudgetPeriod>,
    /// Soft alert threshold in USD per period: crossing it logs once and counts, never refuses.
    #[serde(default)]
    pub soft_budget_usd: Option<f64>,
    /// Which bodies of this key's requests the explorer keeps; `None` follows the hub's
    /// `record_bodies` setting.
    #[serde(default)]
    pub record_bodies: Option<BodyRecording>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds of the last authenticated use (updated at most once a minute).
    pub last_used_at: Option<i64>,
    /// Why this key does not authenticate although it may be enabled: its stored scope cannot be
    /// decoded (it fails closed until an update sets `provider_ids` and `models` again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_error: Option<String>,
}

/// Which request and answer bodies the request explorer keeps (secrets redacted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BodyRecording {
    /// None (the default).
    #[default]
    Off,
    /// Those of requests that failed.
    Errors,
    /// Every request's.
    All,
}

impl BodyRecording {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            BodyRecording::Off => "off",
            BodyRecording::Errors => "errors",
            BodyRecording::All => "all",
        }
    }

    /// A stored name; `None` for anything else.
    pub fn parse(s: &str) -> Option<BodyRecording> {
        match s {
            "off" => Some(BodyRecording::Off),
            "errors" => Some(BodyRecording::Errors),
            "all" => Some(BodyRecording::All),
            _ => None,
        }
    }
}

/// A key just created: the only time the plaintext exists outside the caller.
#[derive(Debug, Clone, Serialize)]
pub struct CreatedKey {
    /// The plaintext key. Show it once.
    pub key: String,
    /// The stored record.
    #[serde(flatten)]
    pub record: ClientKey,
}

/// Input to create a client key.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    /// Human name.
    pub name: String,
    /// Provider scope; empty or absent means all.
    #[serde(default)]
    pub provider_ids: Vec<i64>,
    /// Model scope; empty or absent means all.
    #[serde(default)]
    pub models: Vec<String>,
    /// Unix seconds.
    #[serde(default)]
    pub expires_at: Option<i64>,
    /// Requests per minute.
    #[serde(default)]
    pub rpm: Option<u32>,
    /// Tokens per minute.
    #[serde(default)]
    pub tpm: Option<u32>,
    /// Requests in flight at once.
    #[serde(default)]
    pub max_concurrent: Option<u32>,
    /// Hard budget in USD per period.
    #[serde(default)]
    pub budget_usd: Option<f64>,
    /// `daily`, `weekly`, `monthly` (the default) or `total`.
    #[serde(default)]
    pub budget_period: Option<BudgetPeriod>,
    /// Soft alert threshold in USD per period.
    #[serde(default)]
    pub soft_budget_usd: Option<f64>,
    /// Defaults to true.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Which bodies of its requests to keep (`off`, `errors`, `all`); absent follows the hub.
    #[serde(default)]
    pub record_bodies: Option<BodyRecording>,
}

/// A partial update of a key. `Some(None)` clears a nullable field.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyPatch {
    /// New name.
    pub name: Option<String>,
    /// Enable or disable.
    pub enabled: Option<bool>,
    /// New expiry, or null for none.
    #[serde(default, deserialize_with = "double_option")]
    pub expires_at: Option<Option<i64>>,
    /// New limit, or null for none.
    #[serde(default, deserialize_with = "double_option")]
    pub rpm: Option<Option<u32>>,
    /// New limit, or null for none.
    #[serde(default, deserialize_with = "double_option")]
    pub tpm: Option<Option<u32>>,
    /// New cap on requests in flight, or null for none.
    #[serde(default, deserialize_with = "double_option")]
    pub max_concurrent: Option<Option<u32>>,
    /// New hard budget, or null for none.
    #[serde(default, deserialize_with = "double_option")]
    pub budget_usd: Option<Option<f64>>,
    /// New budget period, or null for the default (`monthly`).
    #[serde(default, deserialize_with = "double_option")]
    pub budget_period: Option<Option<BudgetPeriod>>,
    /// New soft threshold, or null for none.
    #[serde(default, deserialize_with = "double_option")]
    pub soft_budget_usd: Option<Option<f64>>,
    /// Which bodies of its requests to keep; `null` follows the hub's setting again.
    #[serde(default, deserialize_with = "double_option")]
    pub record_bodies: Option<Option<BodyRecording>>,
    /// New provider scope.
    pub provider_ids: Option<Vec<i64>>,
    /// New model scope.
    pub models: Option<Vec<String>>,
}

/// A persistent conversation session, as application developers keep them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// Random id.
    pub id: String,
    /// Title.
    pub title: String,
    /// The model the session talks to.
    pub model: String,
    /// Request settings such as `temperature` and `max_tokens`, merged into each request.
    pub settings: serde_json::Map<String, serde_json::Value>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
    /// The messages, oldest first (empty in listings).
    #[serde(default)]
    pub messages: Vec<SessionMessage>,
}

/// One message of a session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionMessage {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// The text.
    pub content: String,
    /// Unix milliseconds.
    pub timestamp_ms: i64,
}

/// Input to create a session.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSession {
    /// Title.
    #[serde(default)]
    pub title: String,
    /// Model name.
    pub model: String,
    /// Request settings.
    #[serde(default)]
    pub settings: serde_json::Map<String, serde_json::Value>,
}

/// The chat completions URL for a configured base URL, by the original system's rules:
/// a trailing `#` means "use verbatim" (without the `#`), a trailing `/` appends
/// `chat/completions`, anything else appends `/v1/chat/completions`.
pub fn chat_endpoint(base_url: &str) -> String {
    let u = base_url.trim();
    if let Some(v) = u.strip_suffix('#') {
        v.to_owned()
    } else if u.ends_with('/') {
        format!("{u}chat/completions")
    } else {
        format!("{u}/v1/chat/completions")
    }
}

/// The URL a provider of `kind` is called at, as shown in the API. For kinds whose URL names the
/// model, `{model}` stands for the upstream model name.
pub fn endpoint_for(kind: ProviderKind, base_url: &str, o: &ProviderOptions) -> String {
    let base = base_url.trim();
    let root = base.trim_end_matches('/');
    match kind {
        ProviderKind::Openai => chat_endpoint(base),
        ProviderKind::Anthropic => match base.strip_suffix('#') {
            Some(v) => v.to_owned(),
            None => format!("{root}/v1/messages"),
        },
        ProviderKind::Gemini => format!("{root}/v1beta/models/{{model}}:generateContent"),
        ProviderKind::Azure if o.azure_v1.unwrap_or(false) => {
            format!("{root}/openai/v1/chat/completions")
        }
        ProviderKind::Azure => format!(
            "{root}/openai/deployments/{{model}}/chat/completions?api-version={}",
            o.api_version.as_deref().unwrap_or(AZURE_API_VERSION)
        ),
    }
}

/// The Azure OpenAI `api-version` used when a provider sets none (the current GA version).
pub const AZURE_API_VERSION: &str = "2024-10-21";

/// The `anthropic-version` header sent when a provider sets none.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// Checks a base URL: http(s), with a host.
pub fn validate_base_url(u: &str) -> Result<()> {
    let rest = u
        .strip_prefix("http://")
        .or_else(|| u.strip_prefix("https://"))
        .ok_or_else(|| {
            Error::invalid_param("base_url", "base_url must start with http:// or https://")
        })?;
    if rest.is_empty() || rest.starts_with('/') || u.chars().any(char::is_whitespace) {
        return Err(Error::invalid_param(
            "base_url",
            "base_url must name a host",
        ));
    }
    Ok(())
}

/// Checks a non-empty, reasonably short name.
pub fn validate_name(field: &str, v: &str) -> Result<()> {
    if v.trim().is_empty() {
        return Err(Error::invalid_param(
            field,
            format!("{field} must not be empty"),
        ));
    }
    if v.len() > 200 {
        return Err(Error::invalid_param(
            field,
            format!("{field} is longer than 200 bytes"),
        ));
    }
    Ok(())
}

fn double_option<'de, T, D>(d: D) -> std::result::Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: Deserializer<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffix_rules_match_the_original() {
        assert_eq!(
            chat_endpoint("https://api.x.com"),
            "https://api.x.com/v1/chat/completions"
        );
        assert_eq!(
            chat_endpoint("https://api.x.com/v4/"),
            "https://api.x.com/v4/chat/completions"
        );
        assert_eq!(
            chat_endpoint("https://h/custom/path#"),
            "https://h/custom/path"
        );
    }

    #[test]
    fn base_url_validation() {
        assert!(validate_base_url("http://127.0.0.1:8080").is_ok());
        assert!(validate_base_url("ftp://x").is_err());
        assert!(validate_base_url("https://").is_err());
        assert!(validate_base_url("https://a b").is_err());
    }

    #[test]
    fn patch_distinguishes_null_from_absent() {
        let p: KeyPatch = serde_json::from_str(r#"{"rpm":null}"#).unwrap();
        assert_eq!(p.rpm, Some(None));
        assert_eq!(p.tpm, None);
        let p: KeyPatch = serde_json::from_str(r#"{"rpm":5}"#).unwrap();
        assert_eq!(p.rpm, Some(Some(5)));
        assert!(serde_json::from_str::<KeyPatch>(r#"{"bogus":1}"#).is_err());
    }
}

/// What changed in a provider's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderEventKind {
    /// The health checks disabled it.
    AutoDisabled,
    /// The health checks enabled it again.
    AutoEnabled,
    /// An operator disabled it.
    Disabled,
    /// An operator enabled it.
    Enabled,
    /// One of its pool keys was set aside (its upstream refused the key).
    KeySetAside,
}

impl ProviderEventKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderEventKind::AutoDisabled => "auto_disabled",
            ProviderEventKind::AutoEnabled => "auto_enabled",
            ProviderEventKind::Disabled => "disabled",
            ProviderEventKind::Enabled => "enabled",
            ProviderEventKind::KeySetAside => "key_set_aside",
        }
    }

    /// A stored name (an unknown one, from a newer build, reads as `disabled`).
    pub fn parse(s: &str) -> ProviderEventKind {
        match s {
            "auto_disabled" => ProviderEventKind::AutoDisabled,
            "auto_enabled" => ProviderEventKind::AutoEnabled,
            "enabled" => ProviderEventKind::Enabled,
            "key_set_aside" => ProviderEventKind::KeySetAside,
            _ => ProviderEventKind::Disabled,
        }
    }
}

/// One provider state change, kept with its reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProviderEvent {
    /// Id (ignored on insert).
    pub id: i64,
    /// Unix milliseconds.
    pub ts_ms: i64,
    /// The provider.
    pub provider_id: i64,
    /// Its name at the time.
    pub provider_name: String,
    /// What changed.
    pub event: ProviderEventKind,
    /// Why.
    pub reason: String,
}

/// A model group: a client-facing name served by an ordered list of other models (on any
/// providers), tried in turn when one fails or is rate limited.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelGroup {
    /// Database id.
    pub id: i64,
    /// The name clients ask for; never also a model's name.
    pub name: String,
    /// The models that serve it, in the order they are tried.
    pub models: Vec<String>,
    /// Free text.
    pub description: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// Input to create a model group.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewGroup {
    /// The client-facing name.
    pub name: String,
    /// The models that serve it, in order (at least one; each a model the registry serves).
    pub models: Vec<String>,
    /// Free text.
    #[serde(default)]
    pub description: String,
}

/// A partial update of a model group; absent fields are kept.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupPatch {
    /// New name.
    pub name: Option<String>,
    /// New member list.
    pub models: Option<Vec<String>>,
    /// New description.
    pub description: Option<String>,
}
