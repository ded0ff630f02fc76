//! The vocabulary of usage statistics: the row written once per request, conversation messages,
//! and the shapes of the dashboard's queries. A leaf module: the store reads and writes these, the
//! stats writer (`stats.rs`) queues them, and neither imports the other through it.

use serde::{Deserialize, Serialize};

/// Where the token counts of a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageSource {
    /// The upstream's `usage` object.
    Upstream,
    /// Counted by the token estimator.
    Estimate,
    /// Served from the response cache: the cached answer's usage, at no cost.
    Cache,
}

impl UsageSource {
    /// Stable name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            UsageSource::Upstream => "upstream",
            UsageSource::Estimate => "estimate",
            UsageSource::Cache => "cache",
        }
    }
}

/// Which front end made the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestSource {
    /// The OpenAI-compatible HTTP API.
    Api,
    /// The WebSocket chat tester.
    Ws,
    /// The library, from Rust, C or Python.
    Library,
}

impl RequestSource {
    /// Stable name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestSource::Api => "api",
            RequestSource::Ws => "ws",
            RequestSource::Library => "library",
        }
    }
}

/// Which API the client spoke: the wire format it sent and expects back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    /// OpenAI chat completions (`/v1/chat/completions`, the WebSocket chat, the library's chat).
    #[default]
    Chat,
    /// Anthropic Messages (`/v1/messages`).
    Messages,
    /// OpenAI Responses (`/v1/responses`).
    Responses,
    /// Embeddings (`/v1/embeddings`).
    Embeddings,
}

impl Endpoint {
    /// Every endpoint, in display order.
    pub const ALL: [Endpoint; 4] = [
        Endpoint::Chat,
        Endpoint::Messages,
        Endpoint::Responses,
        Endpoint::Embeddings,
    ];

    /// Stable name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Chat => "chat",
            Endpoint::Messages => "messages",
            Endpoint::Responses => "responses",
            Endpoint::Embeddings => "embeddings",
        }
    }

    /// The endpoint of a stored name; unknown names (a newer build's) read as `chat`.
    pub fn from_name(s: &str) -> Endpoint {
        Endpoint::ALL
            .into_iter()
            .find(|e| e.as_str() == s)
            .unwrap_or_default()
    }
}

/// One request's usage. Written exactly once per request, whatever its outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageRecord {
    /// Unix milliseconds at the start of the request.
    pub ts_ms: i64,
    /// Request id.
    pub request_id: String,
    /// Conversation the request belongs to.
    pub conversation_id: Option<String>,
    /// Client key id (None for admin and library callers).
    pub key_id: Option<i64>,
    /// Provider finally used (None when routing failed).
    pub provider_id: Option<i64>,
    /// Model name the client asked for.
    pub model: String,
    /// Model name sent upstream.
    pub upstream_model: Option<String>,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Where the counts came from.
    pub usage_source: UsageSource,
    /// HTTP status of the outcome (200 on success; 499 when the client went away).
    pub status: u16,
    /// Error kind name when the request failed.
    pub error_kind: Option<String>,
    /// Total time in milliseconds.
    pub latency_ms: f64,
    /// Time to first token (streams) in milliseconds.
    pub ttft_ms: Option<f64>,
    /// Streamed or not.
    pub stream: bool,
    /// Front end.
    pub source: RequestSource,
    /// Cost in micro-dollars at the model's effective prices (see [`crate::prices`]); `None`:
    /// not priced (an unpriced model, or a failed request).
    pub cost_micros: Option<i64>,
    /// Of `prompt_tokens`, those read from the provider's prompt cache.
    #[serde(default)]
    pub cached_tokens: u64,
    /// Of `prompt_tokens`, those written to the provider's prompt cache.
    #[serde(default)]
    pub cache_write_tokens: u64,
    /// Of `completion_tokens`, those spent on reasoning.
    #[serde(default)]
    pub reasoning_tokens: u64,
    /// The API the client spoke.
    #[serde(default)]
    pub endpoint: Endpoint,
    /// Milliseconds waiting on upstreams, over every attempt (`None`: none was made).
    #[serde(default)]
    pub upstream_ms: Option<f64>,
    /// Every upstream attempt in order (retries and failover included); empty when the request
    /// never reached one.
    #[serde(default)]
    pub attempts: Vec<Attempt>,
    /// The bodies to keep for the request explorer, when recording is on for this request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bodies: Option<Box<RecordedBodies>>,
}

/// A request's bodies as recorded: redacted (see [`crate::redact`]) and cut, kept when the
/// recording mode says so for the request's outcome.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RecordedBodies {
    /// `errors` keeps them only for a failed request, `all` always.
    pub mode: crate::records::BodyRecording,
    /// The request as the hub read it.
    pub request: Option<String>,
    /// The answer (a stream's text and finish reason), or the error.
    pub response: Option<String>,
}

impl RecordedBodies {
    /// Whether a request that ended with `status` keeps its bodies.
    pub fn kept(&self, status: u16) -> bool {
        match self.mode {
            crate::records::BodyRecording::Off => false,
            crate::records::BodyRecording::Errors => status >= 400,
            crate::records::BodyRecording::All => true,
        }
    }
}

/// One upstream attempt of a request, for the request explorer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// The provider tried.
    pub provider_id: i64,
    /// Its HTTP status: 200 when it answered, the upstream's error status, or `None` when no
    /// answer came (connection failure, timeout).
    pub status: Option<u16>,
    /// The error kind of a failed attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<String>,
    /// Milliseconds the attempt took.
    pub ms: f64,
}

/// A message kept for the conversation view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageRecord {
    /// Unix milliseconds.
    pub ts_ms: i64,
    /// Conversation id.
    pub conversation_id: String,
    /// Provider.
    pub provider_id: Option<i64>,
    /// Model.
    pub model: String,
    /// `user` or `assistant`.
    pub role: String,
    /// Text.
    pub content: String,
    /// Tokens of this message.
    pub tokens: u64,
}

/// Totals for the dashboard; includes the original `/stats/total` keys.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Providers configured.
    pub providers: u64,
    /// Models configured.
    pub models: u64,
    /// Client keys configured.
    pub keys: u64,
    /// Distinct conversations.
    pub conversations: u64,
    /// Successful request/response rounds.
    pub rounds: u64,
    /// All requests.
    pub requests: u64,
    /// Failed requests.
    pub errors: u64,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Sum of both.
    pub total_tokens: u64,
    /// Total cost in USD of the priced requests (model prices, else the catalog's).
    pub cost: f64,
    /// Answered requests recorded with no cost: their model has no known price.
    #[serde(default)]
    pub unpriced_requests: u64,
    /// Original key: same as `conversations`.
    pub total_conversations: u64,
    /// Original key: same as `rounds`.
    pub total_rounds: u64,
}

/// Time bucket of a series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Bucket {
    /// One point per hour.
    Hour,
    /// One point per UTC day.
    Day,
}

/// Grouping of a series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    /// By client-facing model name.
    Model,
    /// By provider name.
    Provider,
    /// By client key name.
    Key,
    /// By the API the client spoke (`chat`, `messages`, `responses`, `embeddings`).
    Endpoint,
}

/// A time-series query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeseriesQuery {
    /// Bucket size.
    pub bucket: Bucket,
    /// Optional grouping.
    pub group_by: Option<GroupBy>,
    /// Unix seconds; points before it are left out.
    pub since: i64,
}

impl TimeseriesQuery {
    /// The query of its text parameters, as every front end takes them: `bucket` `hour` (the
    /// default) or `day`; `group_by` absent, empty or `none`, else `model`, `provider`, `key` or
    /// `endpoint`; `since` unix seconds (default: seven days ago).
    pub fn from_params(
        bucket: Option<&str>,
        group_by: Option<&str>,
        since: Option<i64>,
    ) -> crate::Result<TimeseriesQuery> {
        let bucket = match bucket {
            None | Some("hour") => Bucket::Hour,
            Some("day") => Bucket::Day,
            Some(other) => {
                return Err(crate::Error::invalid_param(
                    "bucket",
                    format!("bucket must be hour or day, not '{other}'"),
                ))
            }
        };
        let group_by = match group_by {
            None | Some("") | Some("none") => None,
            Some("model") => Some(GroupBy::Model),
            Some("provider") => Some(GroupBy::Provider),
            Some("key") => Some(GroupBy::Key),
            Some("endpoint") => Some(GroupBy::Endpoint),
            Some(other) => {
                return Err(crate::Error::invalid_param(
                    "group_by",
                    format!("group_by must be model, provider, key or endpoint, not '{other}'"),
                ))
            }
        };
        let since = since.unwrap_or_else(|| crate::now_ms() / 1000 - 7 * 86400);
        Ok(TimeseriesQuery {
            bucket,
            group_by,
            since,
        })
    }
}

/// One point of a series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimeseriesPoint {
    /// Unix seconds at the bucket start.
    pub ts: i64,
    /// Group label (`all` without grouping).
    pub group: String,
    /// Requests.
    pub requests: u64,
    /// Failed requests.
    pub errors: u64,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Mean latency.
    pub avg_latency_ms: f64,
    /// Mean time to first token over streamed requests, if any.
    pub avg_ttft_ms: Option<f64>,
    /// Cost in USD of the priced requests.
    pub cost: f64,
    /// Answered requests with no cost (their model had no known price): a `cost` of 0 with
    /// unpriced requests is unknown money, not none.
    #[serde(default)]
    pub unpriced_requests: u64,
}

/// A series answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timeseries {
    /// Bucket size.
    pub bucket: Bucket,
    /// Grouping, if any.
    pub group_by: Option<GroupBy>,
    /// Points ordered by time then group.
    pub points: Vec<TimeseriesPoint>,
}

/// One message in the conversation view (the original's shape).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationMessage {
    /// Unix milliseconds.
    pub timestamp: i64,
    /// `user` or `assistant`.
    pub role: String,
    /// Text.
    pub content: String,
    /// Tokens.
    pub tokens_count: u64,
}

/// A conversation's totals and messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationStats {
    /// Id.
    pub conversation_id: String,
    /// Request/response rounds.
    pub rounds: u64,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Sum.
    pub total_tokens: u64,
    /// Messages, oldest first.
    pub messages: Vec<ConversationMessage>,
}

/// Which recorded requests an explicit repricing recomputes (history is never repriced
/// otherwise). Cache hits are never repriced: they cost nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepriceQuery {
    /// Unix seconds; rows before it are left alone (default: the beginning).
    #[serde(default)]
    pub since: Option<i64>,
    /// Unix seconds; rows at or after it are left alone (default: now).
    #[serde(default)]
    pub until: Option<i64>,
    /// Only this client-facing model name.
    #[serde(default)]
    pub model: Option<String>,
    /// Only this provider.
    #[serde(default)]
    pub provider_id: Option<i64>,
    /// Count what would change and change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// One recorded request as repricing sees it: who served it and its token parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricedRow {
    /// The provider that answered.
    pub provider_id: Option<i64>,
    /// The client-facing model name.
    pub model: String,
    /// Prompt tokens (cached and cache-written included).
    pub prompt_tokens: u64,
    /// Completion tokens (reasoning included).
    pub completion_tokens: u64,
    /// Of the prompt, read from the provider's cache.
    pub cached_tokens: u64,
    /// Of the prompt, written to the provider's cache.
    pub cache_write_tokens: u64,
    /// Of the completion, reasoning.
    pub reasoning_tokens: u64,
}

/// What a repricing did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RepriceReport {
    /// Rows in the range that were looked at.
    pub rows_examined: u64,
    /// Rows whose cost changed (or would, on a dry run).
    pub rows_changed: u64,
    /// USD of the examined rows before.
    pub cost_before_usd: f64,
    /// USD of the examined rows after.
    pub cost_after_usd: f64,
    /// Rows still unpriced afterwards (their model has no price).
    pub unpriced_rows: u64,
    /// Nothing was written.
    pub dry_run: bool,
}

/// Which requests the explorer lists, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestQuery {
    /// Client-facing model name.
    #[serde(default)]
    pub model: Option<String>,
    /// Client key.
    #[serde(default)]
    pub key_id: Option<i64>,
    /// Provider that answered (or failed last).
    #[serde(default)]
    pub provider_id: Option<i64>,
    /// The API the client spoke.
    #[serde(default)]
    pub endpoint: Option<Endpoint>,
    /// An exact HTTP status, or every failure / every success.
    #[serde(default)]
    pub status: Option<StatusFilter>,
    /// An error kind (`upstream`, `timeout`, `rate_limited`, ...).
    #[serde(default)]
    pub error_kind: Option<String>,
    /// A conversation.
    #[serde(default)]
    pub conversation_id: Option<String>,
    /// Unix seconds, inclusive.
    #[serde(default)]
    pub since: Option<i64>,
    /// Unix seconds, exclusive.
    #[serde(default)]
    pub until: Option<i64>,
    /// Rows per page (default 50, at most 1,000).
    #[serde(default)]
    pub limit: Option<u32>,
    /// Where the previous page ended (its `next_cursor`).
    #[serde(default)]
    pub cursor: Option<String>,
}

/// The status part of a [`RequestQuery`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusFilter {
    /// Exactly this HTTP status.
    Code(u16),
    /// Every failure (status 400 and above).
    Error,
    /// Every success (below 400).
    Ok,
}

impl StatusFilter {
    /// `error`, `ok` or a status code.
    pub fn parse(s: &str) -> crate::Result<StatusFilter> {
        match s {
            "error" | "errors" => Ok(StatusFilter::Error),
            "ok" | "success" => Ok(StatusFilter::Ok),
            n => n
                .parse::<u16>()
                .ok()
                .filter(|c| (100..600).contains(c))
                .map(StatusFilter::Code)
                .ok_or_else(|| {
                    crate::Error::invalid_param(
                        "status",
                        format!("status must be an HTTP status code, `error` or `ok`, not '{n}'"),
                    )
                }),
        }
    }
}

impl RequestQuery {
    /// The query of its text parameters, as every front end takes them (the HTTP query string
    /// of `GET /api/requests`). Empty values count as absent; an unknown parameter is a 400 so
    /// that a misspelt filter never silently lists everything.
    pub fn from_params<'a>(
        params: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> crate::Result<RequestQuery> {
        let mut q = RequestQuery::default();
        let int = |name: &str, v: &str| {
            v.parse::<i64>().map_err(|_| {
                crate::Error::invalid_param(name, format!("{name} must be an integer, not '{v}'"))
            })
        };
        for (k, v) in params {
            if v.is_empty() {
                continue;
            }
            match k {
                "model" => q.model = Some(v.to_owned()),
                "key_id" => q.key_id = Some(int(k, v)?),
                "provider_id" => q.provider_id = Some(int(k, v)?),
                "endpoint" => {
                    q.endpoint = Some(
                        Endpoint::ALL
                            .into_iter()
                            .find(|e| e.as_str() == v)
                            .ok_or_else(|| {
                                crate::Error::invalid_param(
                                    "endpoint",
                                    format!(
                                        "endpoint must be chat, messages, responses or embeddings, \
                                         not '{v}'"
                                    ),
                                )
                            })?,
                    )
                }
                "status" => q.status = Some(StatusFilter::parse(v)?),
                "error_kind" => q.error_kind = Some(v.to_owned()),
                "conversation_id" => q.conversation_id = Some(v.to_owned()),
                "since" => q.since = Some(int(k, v)?),
                "until" => q.until = Some(int(k, v)?),
                "limit" => {
                    q.limit = Some(
                        v.parse::<u32>()
                            .ok()
                            .filter(|l| (1..=1000).contains(l))
                            .ok_or_else(|| {
                                crate::Error::invalid_param(
                                    "limit",
                                    format!("limit must be 1 to 1000, not '{v}'"),
                                )
                            })?,
                    )
                }
                "cursor" => q.cursor = Some(v.to_owned()),
                other => {
                    return Err(crate::Error::invalid_param(
                        other,
                        format!(
                            "unknown parameter '{other}' (filters: model, key_id, provider_id, \
                             endpoint, status, error_kind, conversation_id, since, until, limit, \
                             cursor)"
                        ),
                    ))
                }
            }
        }
        Ok(q)
    }

    /// The page size: `limit` clamped to 1..=1000, 50 by default.
    pub fn page_size(&self) -> usize {
        self.limit.map_or(50, |l| l.clamp(1, 1000)) as usize
    }
}

/// One request as the explorer shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestRow {
    /// Request id.
    pub request_id: String,
    /// Unix milliseconds at its start.
    pub time: i64,
    /// Conversation, if any.
    pub conversation_id: Option<String>,
    /// Client key (None for admin and library callers).
    pub key_id: Option<i64>,
    /// Its name, while it exists.
    pub key_name: Option<String>,
    /// The API the client spoke.
    pub endpoint: Endpoint,
    /// The model the client asked for.
    pub model: String,
    /// The provider that answered (or failed last).
    pub provider_id: Option<i64>,
    /// Its name, while it exists.
    pub provider_name: Option<String>,
    /// The model name sent upstream.
    pub upstream_model: Option<String>,
    /// HTTP status of the outcome.
    pub status: u16,
    /// Error kind when it failed.
    pub error_kind: Option<String>,
    /// Upstream attempts (retries and failover included).
    pub attempts: u32,
    /// Streamed.
    pub stream: bool,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Of the prompt, read from the provider's cache.
    pub cached_tokens: u64,
    /// Of the completion, reasoning.
    pub reasoning_tokens: u64,
    /// Where the counts came from.
    pub usage_source: String,
    /// USD; `None` when unpriced or never answered.
    pub cost: Option<f64>,
    /// Time to the first token (streams).
    pub ttft_ms: Option<f64>,
    /// Milliseconds waiting on upstreams.
    pub upstream_ms: Option<f64>,
    /// Total milliseconds.
    pub total_ms: f64,
    /// The front end it came through.
    pub source: String,
    /// Attempt by attempt (in the single-request view only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt_log: Option<Vec<Attempt>>,
    /// The request body, when it was recorded (single-request view only; secrets redacted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_body: Option<String>,
    /// The answer or error body, when recorded (likewise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_body: Option<String>,
}

/// A page of the explorer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestPage {
    /// Newest first.
    pub data: Vec<RequestRow>,
    /// Pass as `cursor` for the next page; `None` on the last one.
    pub next_cursor: Option<String>,
}
