//! The one error type of the core and its stable, fieldless [`ErrorKind`].
//!
//! Every rendering (HTTP status plus OpenAI error body, C result code, Python exception class) is an
//! exhaustive match on [`ErrorKind`], so adding a kind is a compile error everywhere it must be
//! rendered. `Display` is for humans: it never contains a secret, and callers must not parse it.

use std::time::Duration;

/// Result alias of the core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The stable classification of an [`Error`]. Its numeric values are never reused.
///
/// It is exhaustive on purpose: every rendering (HTTP status and OpenAI body, C result code,
/// Python class) is a `match` without a wildcard, so a new kind fails to compile until each
/// binding renders it, and `tests/error_renderings.rs` pins all of them in one snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request is malformed or a field is invalid (HTTP 400).
    InvalidRequest,
    /// The request body is larger than allowed (HTTP 413).
    PayloadTooLarge,
    /// The API key is missing, unknown, expired or disabled (HTTP 401).
    Authentication,
    /// The key is valid but may not use this model or provider (HTTP 403).
    PermissionDenied,
    /// The model, provider, key or record does not exist (HTTP 404).
    NotFound,
    /// A unique name is already taken (HTTP 409).
    Conflict,
    /// A per-key or upstream rate limit was hit (HTTP 429).
    RateLimited,
    /// The key's spending budget for its period is used up (HTTP 429, OpenAI's
    /// `insufficient_quota`). Not worth a retry before the period rolls over.
    QuotaExceeded,
    /// Connecting, waiting for the first byte or between chunks took too long (HTTP 504).
    Timeout,
    /// The upstream answered with an error status or a malformed body (HTTP 502, or its status).
    Upstream,
    /// The upstream could not be reached (HTTP 502).
    Transport,
    /// Every provider that serves the model is cooling down after failures (HTTP 503).
    Unavailable,
    /// The database failed (HTTP 500).
    Storage,
    /// The configuration is wrong, e.g. a master key that does not open this database (HTTP 500).
    Config,
    /// A bug: an invariant did not hold (HTTP 500).
    Internal,
}

impl ErrorKind {
    /// Every kind, in declaration order; used by the binding tests to check each rendering.
    pub const ALL: [ErrorKind; 15] = [
        ErrorKind::InvalidRequest,
        ErrorKind::PayloadTooLarge,
        ErrorKind::Authentication,
        ErrorKind::PermissionDenied,
        ErrorKind::NotFound,
        ErrorKind::Conflict,
        ErrorKind::RateLimited,
        ErrorKind::Timeout,
        ErrorKind::Upstream,
        ErrorKind::Transport,
        ErrorKind::Unavailable,
        ErrorKind::Storage,
        ErrorKind::Config,
        ErrorKind::Internal,
        ErrorKind::QuotaExceeded,
    ];

    /// The HTTP status OpenAI would answer with.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::InvalidRequest => 400,
            ErrorKind::PayloadTooLarge => 413,
            ErrorKind::Authentication => 401,
            ErrorKind::PermissionDenied => 403,
            ErrorKind::NotFound => 404,
            ErrorKind::Conflict => 409,
            ErrorKind::RateLimited | ErrorKind::QuotaExceeded => 429,
            ErrorKind::Timeout => 504,
            ErrorKind::Upstream | ErrorKind::Transport => 502,
            ErrorKind::Unavailable => 503,
            ErrorKind::Storage | ErrorKind::Config | ErrorKind::Internal => 500,
        }
    }

    /// The OpenAI error `type` field.
    pub fn openai_type(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest
            | ErrorKind::PayloadTooLarge
            | ErrorKind::Authentication
            | ErrorKind::NotFound
            | ErrorKind::Conflict => "invalid_request_error",
            ErrorKind::PermissionDenied => "permission_error",
            ErrorKind::RateLimited => "rate_limit_error",
            ErrorKind::QuotaExceeded => "insufficient_quota",
            ErrorKind::Timeout => "timeout_error",
            ErrorKind::Upstream | ErrorKind::Transport | ErrorKind::Unavailable => "upstream_error",
            ErrorKind::Storage | ErrorKind::Config | ErrorKind::Internal => "server_error",
        }
    }

    /// The C API's result code (`NexusResult` in `nexus.h`): fixed numbers, never reused.
    pub fn c_code(self) -> i32 {
        match self {
            ErrorKind::InvalidRequest => 100,
            ErrorKind::PayloadTooLarge => 101,
            ErrorKind::Authentication => 102,
            ErrorKind::PermissionDenied => 103,
            ErrorKind::NotFound => 104,
            ErrorKind::Conflict => 105,
            ErrorKind::RateLimited => 106,
            ErrorKind::Timeout => 107,
            ErrorKind::Upstream => 108,
            ErrorKind::Transport => 109,
            ErrorKind::Unavailable => 110,
            ErrorKind::Storage => 111,
            ErrorKind::Config => 112,
            ErrorKind::Internal => 113,
            ErrorKind::QuotaExceeded => 114,
        }
    }

    /// The Python exception class (`nexus.errors`), named after the `openai` SDK's classes
    /// where one fits.
    pub fn python_class(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest => "BadRequestError",
            ErrorKind::PayloadTooLarge => "PayloadTooLargeError",
            ErrorKind::Authentication => "AuthenticationError",
            ErrorKind::PermissionDenied => "PermissionDeniedError",
            ErrorKind::NotFound => "NotFoundError",
            ErrorKind::Conflict => "ConflictError",
            ErrorKind::RateLimited => "RateLimitError",
            ErrorKind::QuotaExceeded => "InsufficientQuotaError",
            ErrorKind::Timeout => "APITimeoutError",
            ErrorKind::Upstream => "APIStatusError",
            ErrorKind::Transport => "APIConnectionError",
            ErrorKind::Unavailable => "ServiceUnavailableError",
            ErrorKind::Storage => "StorageError",
            ErrorKind::Config => "ConfigError",
            ErrorKind::Internal => "InternalServerError",
        }
    }

    /// A stable snake_case name, used in metrics, stats rows and the bindings.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::PayloadTooLarge => "payload_too_large",
            ErrorKind::Authentication => "authentication",
            ErrorKind::PermissionDenied => "permission_denied",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::QuotaExceeded => "insufficient_quota",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Upstream => "upstream",
            ErrorKind::Transport => "transport",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Storage => "storage",
            ErrorKind::Config => "config",
            ErrorKind::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which wait ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutPhase {
    /// Establishing the TCP/TLS connection.
    Connect,
    /// Waiting for the response head or first stream event.
    FirstByte,
    /// Waiting between two stream events.
    Idle,
    /// The whole non-streaming request.
    Total,
}

impl std::fmt::Display for TimeoutPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TimeoutPhase::Connect => "connect",
            TimeoutPhase::FirstByte => "first byte",
            TimeoutPhase::Idle => "idle between chunks",
            TimeoutPhase::Total => "total",
        })
    }
}

/// The core error. Each variant carries the context its renderings need.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request is invalid.
    #[error("{message}")]
    InvalidRequest {
        /// What is wrong, for the caller.
        message: String,
        /// The offending field, when there is one.
        param: Option<String>,
    },
    /// The body is over the configured limit.
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// Bad, expired or disabled API key.
    #[error("{0}")]
    Authentication(String),
    /// Valid key, forbidden target.
    #[error("{0}")]
    PermissionDenied(String),
    /// Something does not exist.
    #[error("{what} not found")]
    NotFound {
        /// What was looked for, e.g. `model 'gpt-5'`.
        what: String,
    },
    /// A unique value is taken.
    #[error("{0}")]
    Conflict(String),
    /// A rate limit was hit.
    #[error("{message}")]
    RateLimited {
        /// What limit.
        message: String,
        /// When to try again, if known.
        retry_after: Option<Duration>,
    },
    /// The key's budget for its period is spent (or held by requests in flight).
    #[error("{message}")]
    QuotaExceeded {
        /// What was exceeded, for the caller (amounts, never other keys' figures).
        message: String,
        /// Until the period rolls over, when it does (`total` budgets never do).
        retry_after: Option<Duration>,
    },
    /// A timeout.
    #[error("upstream timed out ({phase})")]
    Timeout {
        /// Which wait ran out.
        phase: TimeoutPhase,
    },
    /// The upstream answered with an error status or a malformed response.
    #[error("upstream error{}: {message}", status.map(|s| format!(" (HTTP {s})")).unwrap_or_default())]
    Upstream {
        /// The upstream HTTP status, when the error is an HTTP answer.
        status: Option<u16>,
        /// A human summary.
        message: String,
        /// The upstream body, as received (at most 64 KiB).
        body: Option<String>,
        /// `Retry-After` from the upstream, when present.
        retry_after: Option<Duration>,
    },
    /// The upstream could not be reached, or the connection broke.
    #[error("could not reach upstream: {0}")]
    Transport(String),
    /// All providers for the model are cooling down.
    #[error("{0}")]
    Unavailable(String),
    /// The database failed.
    #[error("storage error: {0}")]
    Storage(String),
    /// Configuration error.
    #[error("configuration error: {0}")]
    Config(String),
    /// A broken invariant.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// The stable kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidRequest { .. } => ErrorKind::InvalidRequest,
            Error::PayloadTooLarge { .. } => ErrorKind::PayloadTooLarge,
            Error::Authentication(_) => ErrorKind::Authentication,
            Error::PermissionDenied(_) => ErrorKind::PermissionDenied,
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::Conflict(_) => ErrorKind::Conflict,
            Error::RateLimited { .. } => ErrorKind::RateLimited,
            Error::QuotaExceeded { .. } => ErrorKind::QuotaExceeded,
            Error::Timeout { .. } => ErrorKind::Timeout,
            Error::Upstream { .. } => ErrorKind::Upstream,
            Error::Transport(_) => ErrorKind::Transport,
            Error::Unavailable(_) => ErrorKind::Unavailable,
            Error::Storage(_) => ErrorKind::Storage,
            Error::Config(_) => ErrorKind::Config,
            Error::Internal(_) => ErrorKind::Internal,
        }
    }

    /// Shorthand for an invalid request without a parameter.
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::InvalidRequest {
            message: message.into(),
            param: None,
        }
    }

    /// Shorthand for an invalid request naming the parameter.
    pub fn invalid_param(param: &str, message: impl Into<String>) -> Self {
        Error::InvalidRequest {
            message: message.into(),
            param: Some(param.to_owned()),
        }
    }

    /// Shorthand for a missing record.
    pub fn not_found(what: impl Into<String>) -> Self {
        Error::NotFound { what: what.into() }
    }

    /// The HTTP status to answer with. An upstream HTTP error keeps the upstream status when it was
    /// caused by the caller's own request (400, 404, 409, 413, 422) or is a rate limit (429). An
    /// upstream 401/403 means the hub's upstream credentials are bad, not the caller's: 502. Every
    /// other upstream failure (3xx, 5xx, a malformed answer) is 502.
    pub fn http_status(&self) -> u16 {
        match self {
            Error::Upstream {
                status: Some(s), ..
            } if matches!(s, 400 | 404 | 409 | 413 | 422 | 429) => *s,
            _ => self.kind().http_status(),
        }
    }

    /// Whether this is an upstream answer refusing the hub's upstream credentials (401/403).
    pub fn is_upstream_auth(&self) -> bool {
        matches!(
            self,
            Error::Upstream {
                status: Some(401 | 403),
                ..
            }
        )
    }

    /// The OpenAI error `code` field.
    pub fn openai_code(&self) -> &'static str {
        match self {
            Error::InvalidRequest { .. } => "invalid_request",
            Error::PayloadTooLarge { .. } => "payload_too_large",
            Error::Authentication(_) => "invalid_api_key",
            Error::PermissionDenied(_) => "model_not_allowed",
            Error::NotFound { what } if what.starts_with("model") => "model_not_found",
            Error::NotFound { .. } => "not_found",
            Error::Conflict(_) => "conflict",
            Error::RateLimited { .. } => "rate_limit_exceeded",
            Error::QuotaExceeded { .. } => "insufficient_quota",
            Error::Timeout { .. } => "timeout",
            Error::Upstream {
                status: Some(401 | 403),
                ..
            } => "upstream_auth_failed",
            Error::Upstream {
                status: Some(429), ..
            } => "rate_limit_exceeded",
            Error::Upstream { .. } => "upstream_error",
            Error::Transport(_) => "connection_error",
            Error::Unavailable(_) => "provider_unavailable",
            Error::Storage(_) => "storage_error",
            Error::Config(_) => "config_error",
            Error::Internal(_) => "internal_error",
        }
    }

    /// The `param` field of the OpenAI error body.
    pub fn param(&self) -> Option<&str> {
        match self {
            Error::InvalidRequest { param, .. } => param.as_deref(),
            _ => None,
        }
    }

    /// How long the caller should wait before retrying, when the error says so.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::RateLimited { retry_after, .. }
            | Error::QuotaExceeded { retry_after, .. }
            | Error::Upstream { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The message safe to send to a client. Server-side failures (storage, internal) are not
    /// described in detail to callers, and neither are upstream failures: their text may name
    /// the upstream's host or echo its credentials, so a client sees the status class and a
    /// stable message. The detail belongs in the operator's log, found by the request id.
    pub fn public_message(&self) -> String {
        match self {
            Error::Storage(_) | Error::Internal(_) => {
                "the server failed to handle the request; see the server log".to_owned()
            }
            Error::Upstream {
                status: Some(401 | 403),
                ..
            } => "the upstream provider refused the gateway's credentials".to_owned(),
            Error::Upstream {
                status: Some(s @ (400 | 404 | 409 | 413 | 422)),
                message,
                ..
            } => {
                // The caller's own request was refused (a bad parameter, a too-long prompt): the
                // reason is theirs to fix, so it is passed on, scrubbed of anything that looks
                // like a credential, a URL or a host.
                let why = scrub_upstream_text(message);
                if why.is_empty() {
                    format!("upstream returned {s}")
                } else {
                    format!("upstream returned {s}: {why}")
                }
            }
            Error::Upstream {
                status: Some(s), ..
            } => format!("upstream returned {s}"),
            Error::Upstream { status: None, .. } => {
                "upstream returned a malformed or failed response".to_owned()
            }
            Error::Transport(_) => "could not reach the upstream provider".to_owned(),
            _ => self.to_string(),
        }
    }

    /// The OpenAI error body, with the request id in the message and as `request_id` when given,
    /// so a caller can quote it to the operator.
    pub fn to_openai_json_for(&self, request_id: Option<&str>) -> serde_json::Value {
        let mut v = self.to_openai_json();
        if let Some(id) = request_id {
            if let Some(e) = v
                .get_mut("error")
                .and_then(serde_json::Value::as_object_mut)
            {
                let msg = format!("{} (request id {id})", self.public_message());
                e.insert("message".into(), msg.into());
                e.insert("request_id".into(), id.into());
            }
        }
        v
    }

    /// The HTTP status of this error on Anthropic's Messages API: as [`Error::http_status`],
    /// except that an overloaded upstream (503, 529) and providers all cooling down are
    /// Anthropic's 529.
    pub fn anthropic_status(&self) -> u16 {
        match self {
            Error::Unavailable(_)
            | Error::Upstream {
                status: Some(503 | 529),
                ..
            } => 529,
            _ => self.http_status(),
        }
    }

    /// Anthropic's error `type` (its errors reference) for [`Error::anthropic_status`].
    pub fn anthropic_type(&self) -> &'static str {
        match self.anthropic_status() {
            400 | 409 | 422 => "invalid_request_error",
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            504 => "timeout_error",
            529 => "overloaded_error",
            _ => "api_error",
        }
    }

    /// Anthropic's error body `{"type":"error","error":{"type","message"},"request_id"}`.
    pub fn to_anthropic_json_for(&self, request_id: Option<&str>) -> serde_json::Value {
        serde_json::json!({
            "type": "error",
            "error": {"type": self.anthropic_type(), "message": self.public_message()},
            "request_id": request_id,
        })
    }

    /// The OpenAI error body `{"error":{"message","type","param","code"}}`.
    pub fn to_openai_json(&self) -> serde_json::Value {
        serde_json::json!({
            "error": {
                "message": self.public_message(),
                "type": self.kind().openai_type(),
                "param": self.param(),
                "code": self.openai_code(),
            }
        })
    }

    /// Whether a retry (or failover to another provider) may succeed. A non-stream answer that
    /// ran past its total timeout is not retried: its length is the caller's choice
    /// (`max_tokens`), and each retry would be generated, and billed, again.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Transport(_) => true,
            Error::Timeout { phase } => *phase != TimeoutPhase::Total,
            Error::Upstream {
                status: Some(s), ..
            } => matches!(s, 401 | 403 | 429 | 500 | 502 | 503 | 504 | 529),
            Error::RateLimited { .. } => true,
            _ => false,
        }
    }

    /// Whether another attempt on the same provider may succeed. Bad upstream credentials
    /// (401/403) fail over at once: the same key fails the same way.
    pub fn retry_same_provider(&self) -> bool {
        self.is_retryable() && !self.is_upstream_auth()
    }

    /// Whether this failure is the provider's fault and counts toward its cooldown: connect
    /// errors, timeouts waiting for the upstream, 5xx, 429 and 401/403. A 4xx caused by one
    /// caller's request, or a long generation the caller asked for, never cools a provider for
    /// everyone.
    pub fn is_provider_fault(&self) -> bool {
        match self {
            Error::Transport(_) => true,
            Error::Timeout { phase } => *phase != TimeoutPhase::Total,
            Error::Upstream {
                status: Some(s), ..
            } => matches!(s, 401 | 403 | 429) || (500..600).contains(s) || (300..400).contains(s),
            _ => false,
        }
    }
}

/// An upstream's error text fit for a tenant: at most 300 bytes, with every word that looks like
/// a credential (long mixed letters and digits, `sk-`/`nx-`/`AIza` prefixes), a URL, an e-mail
/// address or a `host:port` replaced by `[redacted]`.
pub fn scrub_upstream_text(s: &str) -> String {
    let mut out = String::new();
    for word in s.split_whitespace() {
        let core = word.trim_matches(|c: char| !c.is_alphanumeric());
        let letters = core.chars().any(|c| c.is_ascii_alphabetic());
        let digits = core.chars().any(|c| c.is_ascii_digit());
        let hostport = core.rsplit_once(':').is_some_and(|(h, p)| {
            !h.is_empty() && !p.is_empty() && p.chars().all(|c| c.is_ascii_digit())
        });
        let secret = word.contains("://")
            || word.contains('@')
            || hostport
            || (core.len() >= 16 && letters && digits)
            || ["sk-", "nx-", "AIza", "Bearer"]
                .iter()
                .any(|p| core.starts_with(p));
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(if secret { "[redacted]" } else { word });
        if out.len() > 300 {
            out = crate::openai::truncate(&out, 300);
            out.push('…');
            break;
        }
    }
    out
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        if let rusqlite::Error::SqliteFailure(f, msg) = &e {
            if f.code == rusqlite::ErrorCode::ConstraintViolation {
                let m = msg.clone().unwrap_or_else(|| e.to_string());
                if m.contains("UNIQUE") {
                    return Error::Conflict(format!("already exists ({m})"));
                }
                return Error::invalid(format!("constraint failed: {m}"));
            }
        }
        Error::Storage(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_distinct_name_and_valid_status() {
        let mut names = std::collections::HashSet::new();
        for k in ErrorKind::ALL {
            assert!(names.insert(k.as_str()));
            assert!((400..600).contains(&k.http_status()));
        }
    }

    #[test]
    fn openai_body_shape() {
        let e = Error::Authentication("invalid API key".into());
        let v = e.to_openai_json();
        assert_eq!(v["error"]["code"], "invalid_api_key");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert!(v["error"]["param"].is_null());
        assert_eq!(e.http_status(), 401);
        let e = Error::not_found("model 'x'");
        assert_eq!(e.openai_code(), "model_not_found");
        assert_eq!(e.http_status(), 404);
    }

    #[test]
    fn storage_detail_is_not_public() {
        let e = Error::Storage("disk I/O error at /secret/path".into());
        assert!(!e.public_message().contains("/secret/path"));
    }

    #[test]
    fn upstream_status_kept_for_client_errors_only() {
        let mk = |s| Error::Upstream {
            status: Some(s),
            message: "x".into(),
            body: None,
            retry_after: None,
        };
        assert_eq!(mk(400).http_status(), 400);
        assert_eq!(mk(429).http_status(), 429);
        assert_eq!(mk(500).http_status(), 502);
        assert!(mk(503).is_retryable());
        assert!(!mk(400).is_retryable());
        assert_eq!(mk(401).http_status(), 502);
        assert_eq!(mk(403).openai_code(), "upstream_auth_failed");
        assert!(mk(401).is_retryable() && !mk(401).retry_same_provider());
        assert!(mk(302).is_provider_fault() && mk(302).http_status() == 502);
        assert!(!mk(400).is_provider_fault() && mk(429).is_provider_fault());
    }

    #[test]
    fn upstream_detail_is_not_public() {
        let e = Error::Upstream {
            status: Some(503),
            message: "provider 'acme' at 10.0.0.7:8080 said: bad key sk-live-abcdef".into(),
            body: Some("sk-live-abcdef".into()),
            retry_after: None,
        };
        let v = e.to_openai_json_for(Some("req1"));
        let text = v.to_string();
        assert!(!text.contains("acme") && !text.contains("10.0.0.7") && !text.contains("sk-live"));
        assert_eq!(
            v["error"]["message"],
            "upstream returned 503 (request id req1)"
        );
        assert_eq!(v["error"]["request_id"], "req1");
        let t = Error::Transport("connection failed (http://10.0.0.7:8080)".into());
        assert!(!t.to_openai_json().to_string().contains("10.0.0.7"));
        assert!(!Error::Timeout {
            phase: TimeoutPhase::Total
        }
        .is_retryable());
        let bad = Error::Upstream {
            status: Some(400),
            message: "Invalid 'max_tokens': too large. Key sk-abc123 at https://internal.example:8443/v1 user@x.io".into(),
            body: None,
            retry_after: None,
        };
        let m = bad.public_message();
        assert!(
            m.starts_with("upstream returned 400: Invalid 'max_tokens': too large."),
            "{m}"
        );
        assert!(
            !m.contains("sk-abc") && !m.contains("internal.example") && !m.contains("user@"),
            "{m}"
        );
    }
}
