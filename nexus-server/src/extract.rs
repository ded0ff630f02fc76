//! Extractors that turn every rejection into the OpenAI error body.

use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, MatchedPath, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::AppState;

/// The token of `Authorization: Bearer <token>`.
pub fn bearer(parts: &Parts) -> Option<&str> {
    let v = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = v.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// A client key, present and well-formed (validity is the core's to judge).
#[derive(Debug, Clone)]
pub struct ClientToken(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ClientToken {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        bearer(parts)
            .map(|t| ClientToken(t.to_owned()))
            .ok_or_else(|| {
                ApiError(nexus::Error::Authentication(
                    "missing API key: send 'Authorization: Bearer <key>'".into(),
                ))
            })
    }
}

/// The only route that takes the admin token in `?token=`: browsers cannot set headers on a
/// WebSocket. Everywhere else a query token would end up in proxy access logs and browser history.
pub const QUERY_TOKEN_ROUTE: &str = "/ws/chat";

/// The peer's address, when the server runs behind [`crate::serve::serve`] (or any server that
/// inserts `ConnectInfo<SocketAddr>`); `None` for a router driven without a socket.
pub fn peer_ip(parts: &Parts) -> Option<std::net::IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

/// Proof that the request carries the admin token: `Authorization: Bearer`, or `?token=` on
/// [`QUERY_TOKEN_ROUTE`] only.
///
/// A peer with 5 failed attempts in a minute gets 429 (with `Retry-After`) until its minute is
/// over, whatever it sends; see [`crate::limits::AuthThrottle`]. Without a known peer address
/// there is no throttle.
#[derive(Debug, Clone, Copy)]
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, Self::Rejection> {
        let peer = peer_ip(parts);
        if let Some(wait) = peer.and_then(|p| st.auth_throttle.blocked_for(p, Instant::now())) {
            st.metrics.admin_auth_throttled();
            return Err(ApiError(nexus::Error::RateLimited {
                message: "too many failed admin authentications from this address; retry later"
                    .into(),
                retry_after: Some(wait),
            }));
        }
        let query_allowed = parts
            .extensions
            .get::<MatchedPath>()
            .map(|m| m.as_str())
            .unwrap_or_else(|| parts.uri.path())
            == QUERY_TOKEN_ROUTE;
        let from_query = || {
            parts.uri.query().and_then(|q| {
                q.split('&')
                    .find_map(|kv| kv.strip_prefix("token="))
                    .map(percent_decode)
            })
        };
        let token = match bearer(parts) {
            Some(t) => t.to_owned(),
            None if query_allowed => from_query().ok_or_else(|| {
                ApiError(nexus::Error::Authentication(
                    "missing admin token: send 'Authorization: Bearer <admin token>' or ?token="
                        .into(),
                ))
            })?,
            None => {
                let message = if from_query().is_some() {
                    "the admin token goes in 'Authorization: Bearer <admin token>'; ?token= is accepted only on /ws/chat"
                } else {
                    "missing admin token: send 'Authorization: Bearer <admin token>'"
                };
                return Err(ApiError(nexus::Error::Authentication(message.into())));
            }
        };
        // The comparison is the core's; the blocking pool keeps any database read it does off the
        // async workers. The throttle above runs first, so a flood from one peer stops here.
        let ok = st
            .blocking(move |hub| hub.registry().verify_admin_token(&token))
            .await?;
        if ok {
            if let Some(p) = peer {
                st.auth_throttle.succeeded(p);
            }
            Ok(Admin)
        } else {
            if let Some(p) = peer {
                st.auth_throttle.failed(p, Instant::now());
            }
            Err(ApiError(nexus::Error::Authentication(
                "invalid admin token".into(),
            )))
        }
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A JSON body; malformed JSON, wrong types and bodies over the configured `body_limit` become
/// OpenAI errors.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, st: &AppState) -> Result<Self, Self::Rejection> {
        let bytes = read_body(req.into_body(), st.cfg.body_limit).await?;
        serde_json::from_slice(&bytes)
            .map(ApiJson)
            .map_err(|e| ApiError(nexus::Error::invalid(format!("invalid JSON body: {e}"))))
    }
}

/// How much of an over-limit body is read and thrown away before the 413 goes out. A client
/// that is still writing when the server closes gets a broken pipe instead of the answer (most
/// HTTP clients, the SDKs' included, report the write error and never read the 413), so a body
/// somewhat over the limit is drained first, as nginx's lingering close does; past this much
/// more, the connection is closed. The body's read deadline bounds the time either way.
const DRAIN_MAX: usize = 64 * 1024 * 1024;

/// Reads a whole body of at most `limit` bytes; a larger one is a 413 OpenAI error, sent once
/// the rest of the body (up to [`DRAIN_MAX`] more) has been read and dropped.
pub async fn read_body(body: axum::body::Body, limit: usize) -> Result<bytes::Bytes, ApiError> {
    use futures_util::StreamExt;
    let mut stream = body.into_data_stream();
    let mut first: Option<bytes::Bytes> = None;
    let mut buf = bytes::BytesMut::new();
    let mut len = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError(nexus::Error::invalid(format!(
                "cannot read request body: {e}"
            )))
        })?;
        len += chunk.len();
        if len > limit {
            let mut drained = 0usize;
            while drained <= DRAIN_MAX {
                match stream.next().await {
                    Some(Ok(c)) => drained += c.len(),
                    _ => break,
                }
            }
            return Err(ApiError(nexus::Error::PayloadTooLarge { limit }));
        }
        // Most bodies arrive as one chunk: that one is kept without a copy.
        match first.take() {
            None if buf.is_empty() => first = Some(chunk),
            Some(f) => {
                buf.extend_from_slice(&f);
                buf.extend_from_slice(&chunk);
            }
            None => buf.extend_from_slice(&chunk),
        }
    }
    Ok(first.unwrap_or_else(|| buf.freeze()))
}

/// An integer id from the path.
#[derive(Debug, Clone, Copy)]
pub struct Id(pub i64);

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<i64>::from_request_parts(parts, state)
            .await
            .map(|p| Id(p.0))
            .map_err(|_| {
                ApiError(nexus::Error::invalid_param(
                    "id",
                    "the id in the path must be an integer",
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn percent_decoding() {
        assert_eq!(super::percent_decode("a%2Bb+c"), "a+b c");
        assert_eq!(super::percent_decode("abc%"), "abc%");
        assert_eq!(super::percent_decode("%zz"), "%zz");
    }
}
