//! The upstream HTTP client: one request to one provider under the gateway's safety rules.
//!
//! - Redirects are never followed and no `Referer` is sent: a 3xx from an upstream is an upstream
//!   error, so a compromised upstream cannot point the hub at an internal address or make it
//!   re-send a prompt and its auth headers to another host.
//! - Answers are bounded: a non-stream body and one stream event each have a byte cap.
//! - Error answers keep their detail for the operator's log; what a tenant sees is decided by
//!   [`Error::public_message`].

use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result, TimeoutPhase};
use crate::registry::Candidate;

pub(crate) mod adapter;
pub(crate) mod anthropic;
pub(crate) mod embeddings;
pub(crate) mod gemini;
pub mod models;
pub(crate) mod native;
pub(crate) mod openai_responses;

pub(crate) use adapter::{adapter_for, Decoded, StreamDecoder, UpstreamCall};

/// Bounds on what one upstream answer may make the hub hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamLimits {
    /// Largest non-streaming answer body, in bytes.
    pub max_body_bytes: usize,
    /// Largest single stream event, in bytes.
    pub max_event_bytes: usize,
}

impl Default for UpstreamLimits {
    fn default() -> Self {
        UpstreamLimits {
            max_body_bytes: 32 * 1024 * 1024,
            max_event_bytes: 4 * 1024 * 1024,
        }
    }
}

/// The shared HTTP client and its limits.
#[derive(Debug)]
pub(crate) struct Upstream {
    http: reqwest::Client,
    limits: UpstreamLimits,
}

/// The error of a bounded upstream byte stream.
#[derive(Debug)]
pub(crate) struct BodyError(String);

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BodyError {}

/// Parsed SSE events of one upstream answer.
pub(crate) type EventStream = Pin<
    Box<
        dyn Stream<
                Item = std::result::Result<
                    eventsource_stream::Event,
                    eventsource_stream::EventStreamError<BodyError>,
                >,
            > + Send,
    >,
>;

impl Upstream {
    /// A client that follows no redirects, sends no `Referer` and keeps connections pooled.
    pub(crate) fn new(connect_timeout: Duration, limits: UpstreamLimits) -> Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .referer(false)
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| Error::Internal(format!("cannot build HTTP client: {e}")))?;
        Ok(Upstream { http, limits })
    }

    /// Sends one request body to a candidate and waits for the response head. A non-2xx answer
    /// (3xx included) becomes [`Error::Upstream`] with the upstream's own message for the log.
    pub(crate) async fn send(
        &self,
        cand: &Candidate,
        call: UpstreamCall,
        first_byte: Duration,
    ) -> Result<reqwest::Response> {
        let p = &cand.provider;
        let rb = match (&call.url, &p.endpoint_url) {
            (Some(url), _) => self.http.post(url.as_str()),
            (None, Some(url)) => self.http.post(url.clone()),
            (None, None) => self.http.post(&p.record.endpoint),
        };
        let mut rb = rb
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(call.body);
        // The key of the candidate's current pool member: a retry on another key reuses the
        // built call.
        let key = cand.api_key().expose();
        rb = match call.auth {
            adapter::Auth::Bearer => rb.bearer_auth(key),
            adapter::Auth::Header(name) => rb.header(name, key),
        };
        for (k, v) in call.headers {
            rb = rb.header(k, v);
        }
        // The unsealed values: `record.options.headers` holds only their hints.
        for (k, v) in &p.headers {
            rb = rb.header(k.as_str(), v.expose());
        }
        self.execute(rb, first_byte).await
    }

    /// A `GET` to one of a provider's URLs (its models list) with its credential `headers` and
    /// extra headers, answered like [`send`](Self::send); the body is read within `limit`.
    pub(crate) async fn get(
        &self,
        p: &crate::registry::ProviderEntry,
        url: &str,
        headers: Vec<(&'static str, String)>,
        limit: Duration,
    ) -> Result<Bytes> {
        let mut rb = self.http.get(url);
        for (k, v) in headers {
            rb = rb.header(k, v);
        }
        for (k, v) in &p.headers {
            rb = rb.header(k.as_str(), v.expose());
        }
        let resp = self.execute(rb, limit).await?;
        self.read_body(resp, limit).await
    }

    /// Sends a built request and waits for the response head within `first_byte`; a non-2xx
    /// answer becomes [`Error::Upstream`] with the upstream's own message for the log.
    async fn execute(
        &self,
        rb: reqwest::RequestBuilder,
        first_byte: Duration,
    ) -> Result<reqwest::Response> {
        let resp = match tokio::time::timeout(first_byte, rb.send()).await {
            Err(_) => {
                return Err(Error::Timeout {
                    phase: TimeoutPhase::FirstByte,
                })
            }
            Ok(Err(e)) if e.is_connect() => {
                return Err(if e.is_timeout() {
                    Error::Timeout {
                        phase: TimeoutPhase::Connect,
                    }
                } else {
                    Error::Transport(redact(&e))
                })
            }
            Ok(Err(e)) if e.is_timeout() => {
                return Err(Error::Timeout {
                    phase: TimeoutPhase::FirstByte,
                })
            }
            Ok(Err(e)) => return Err(Error::Transport(redact(&e))),
            Ok(Ok(r)) => r,
        };
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64);
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(|l| crate::openai::truncate(l, 200));
        // Error bodies are read up to 64 KiB: enough for any provider's error object.
        let body = match tokio::time::timeout(first_byte, read_capped(resp, 65536, true)).await {
            Ok(Ok(b)) => String::from_utf8_lossy(&b).into_owned(),
            _ => String::new(),
        };
        let message = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| {
                v.get("error")
                    .and_then(|e| e.get("message").or(Some(e)))
                    .and_then(|m| m.as_str().map(str::to_owned))
                    .or_else(|| v.get("message").and_then(Value::as_str).map(str::to_owned))
            })
            .or_else(|| location.map(|l| format!("redirect to {l} (redirects are not followed)")))
            .unwrap_or_else(|| "no error message in the answer".to_owned());
        Err(Error::Upstream {
            status: Some(status),
            message,
            body: Some(body),
            retry_after,
        })
    }

    /// Reads a non-streaming answer body within `limit` time and the byte cap.
    pub(crate) async fn read_body(
        &self,
        resp: reqwest::Response,
        limit: Duration,
    ) -> Result<Bytes> {
        match tokio::time::timeout(limit, read_capped(resp, self.limits.max_body_bytes, false))
            .await
        {
            Err(_) => Err(Error::Timeout {
                phase: TimeoutPhase::Total,
            }),
            Ok(r) => r,
        }
    }

    /// Checks that a stream answer is SSE and reads its first event, so that a failure before
    /// anything reached the caller can still be retried or failed over.
    pub(crate) async fn open_sse(
        &self,
        resp: reqwest::Response,
        first_byte: Duration,
    ) -> Result<(EventStream, eventsource_stream::Event)> {
        let ct = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        if !ct.starts_with("text/event-stream") {
            return Err(Error::Upstream {
                status: Some(resp.status().as_u16()),
                message: format!("expected text/event-stream from upstream, got '{ct}'"),
                body: None,
                retry_after: None,
            });
        }
        let max_event = self.limits.max_event_bytes;
        let mut since_boundary = 0usize;
        let mut tail = [0u8; 2];
        let bytes = resp.bytes_stream().map(move |r| {
            let b = r.map_err(|e| BodyError(redact(&e)))?;
            // Count the bytes since the last blank line (an event boundary); an event that grows
            // past the cap is refused before the SSE parser buffers it further.
            for &c in b.iter() {
                let boundary = (tail[1] == b'\n' && c == b'\n')
                    || (tail[1] == b'\r' && c == b'\r')
                    || (tail[0] == b'\n' && tail[1] == b'\r' && c == b'\n');
                since_boundary = if boundary { 0 } else { since_boundary + 1 };
                tail = [tail[1], c];
            }
            if since_boundary > max_event {
                return Err(BodyError(format!(
                    "an upstream stream event is larger than {max_event} bytes"
                )));
            }
            Ok(b)
        });
        let mut events: EventStream = Box::pin(eventsource_stream::EventStream::new(bytes));
        let first = match tokio::time::timeout(first_byte, events.next()).await {
            Err(_) => {
                return Err(Error::Timeout {
                    phase: TimeoutPhase::FirstByte,
                })
            }
            Ok(None) => {
                return Err(Error::Transport(
                    "upstream closed the stream before the first event".into(),
                ))
            }
            Ok(Some(Err(e))) => return Err(Error::Transport(format!("stream broke: {e}"))),
            Ok(Some(Ok(ev))) => ev,
        };
        Ok((events, first))
    }
}

/// Reads a body up to `cap` bytes: beyond it, either cut (`truncate`, for error bodies) or an
/// error.
async fn read_capped(mut resp: reqwest::Response, cap: usize, truncate: bool) -> Result<Bytes> {
    let mut buf = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => {
                if buf.len() + c.len() > cap {
                    if truncate {
                        buf.extend_from_slice(&c[..cap - buf.len()]);
                        return Ok(Bytes::from(buf));
                    }
                    return Err(Error::Upstream {
                        status: None,
                        message: format!("upstream answer is larger than {cap} bytes"),
                        body: None,
                        retry_after: None,
                    });
                }
                if buf.is_empty() && resp.content_length().is_some() {
                    buf.reserve(resp.content_length().unwrap_or(0).min(cap as u64) as usize);
                }
                buf.extend_from_slice(&c);
            }
            Ok(None) => return Ok(Bytes::from(buf)),
            Err(e) => return Err(Error::Transport(redact(&e))),
        }
    }
}

/// A reqwest error for the operator's log: its kind and cause chain plus the upstream's
/// scheme://host:port, never the path or query (some upstreams take keys there). Tenants never
/// see it (see [`Error::public_message`]).
pub(crate) fn redact(e: &reqwest::Error) -> String {
    let mut cause = None;
    let mut src: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(s) = src {
        cause = Some(s.to_string());
        src = s.source();
    }
    let kind = if e.is_connect() {
        "connection failed"
    } else if e.is_timeout() {
        "timed out"
    } else if e.is_body() || e.is_decode() {
        "response body failed"
    } else {
        "request failed"
    };
    let s = match cause {
        Some(c) => format!("{kind}: {c}"),
        None => kind.to_owned(),
    };
    match e.url() {
        Some(u) => format!(
            "{s} ({}://{}{})",
            u.scheme(),
            u.host_str().unwrap_or(""),
            u.port().map(|p| format!(":{p}")).unwrap_or_default()
        ),
        None => s,
    }
}

/// The upstream's `x-ratelimit-*` headers (passed back to clients only when the operator opts
/// in: they describe the shared upstream account).
pub(crate) fn rate_limit_headers(h: &reqwest::header::HeaderMap) -> Vec<(String, String)> {
    h.iter()
        .filter(|(k, _)| k.as_str().starts_with("x-ratelimit-"))
        .filter_map(|(k, v)| {
            v.to_str()
                .ok()
                .map(|v| (k.as_str().to_owned(), v.to_owned()))
        })
        .collect()
}
