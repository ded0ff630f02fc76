//! Load limits that sit in front of every handler: the global cap on in-flight requests (503
//! `overloaded` instead of a queue), the per-peer throttle on failed admin authentication, and the
//! body wrapper that holds a slot for as long as a response (a stream, too) is being written.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use crate::AppState;

/// Paths the in-flight cap never sheds: probes must keep answering under load, or an orchestrator
/// restarts a server that is merely busy. They are cheap and take no slot.
const UNSHED_PATHS: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// The OpenAI error body of a shed request or connection (`code: "overloaded"`).
pub fn overloaded_body(message: &str) -> serde_json::Value {
    serde_json::json!({"error": {
        "message": message,
        "type": "server_error",
        "param": null,
        "code": "overloaded",
    }})
}

/// A 503 with the `overloaded` body and `Retry-After: 1`.
pub fn overloaded_response(message: &str) -> Response {
    let mut r = (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(overloaded_body(message)),
    )
        .into_response();
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

/// Middleware: takes one of `max_inflight_requests` slots for the life of the response, body
/// included, or answers 503 at once. Shedding instead of queueing keeps latency and memory bounded
/// when clients outnumber what the server can hold.
pub async fn limit_inflight(State(st): State<AppState>, req: Request, next: Next) -> Response {
    if UNSHED_PATHS.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    let Ok(slot) = st.inflight.clone().try_acquire_owned() else {
        st.metrics.shed_request();
        let message = "the server is handling too many requests at once; retry shortly";
        if crate::routes::messages::is_messages_path(req.uri().path()) {
            // Anthropic clients read their own error shape: 529 `overloaded_error`.
            let mut r = crate::routes::messages::error_response(
                &nexus::Error::Unavailable(message.into()),
                None,
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return r;
        }
        return overloaded_response(message);
    };
    next.run(req)
        .await
        .map(|body| Body::new(GuardedBody::new(body, slot)))
}

/// A response body that keeps `guard` alive until the body is finished or dropped (hyper drops
/// it once the last frame is written, or when the client goes away).
pub struct GuardedBody<G> {
    inner: Body,
    _guard: G,
}

impl<G> GuardedBody<G> {
    /// Wraps `inner`.
    pub fn new(inner: Body, guard: G) -> Self {
        GuardedBody {
            inner,
            _guard: guard,
        }
    }
}

impl<G: Send + Unpin + 'static> http_body::Body for GuardedBody<G> {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    // Forwarded so that a sized body keeps its Content-Length instead of turning chunked.
    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Failed admin authentications per peer in a fixed window; past the limit the peer gets 429 until
/// its window ends, whatever token it sends (so the throttle is not itself a guessing oracle).
#[derive(Debug)]
pub struct AuthThrottle {
    max_failures: u32,
    window: Duration,
    max_peers: usize,
    peers: Mutex<HashMap<IpAddr, Failures>>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    since: Instant,
    count: u32,
}

impl Default for AuthThrottle {
    /// 5 failures per peer per minute, at most 10,000 peers tracked.
    fn default() -> Self {
        AuthThrottle::new(5, Duration::from_secs(60), 10_000)
    }
}

impl AuthThrottle {
    /// A throttle allowing `max_failures` failures per `window`, tracking at most `max_peers`
    /// peers (a bound on memory when failures come from very many addresses).
    pub fn new(max_failures: u32, window: Duration, max_peers: usize) -> Self {
        AuthThrottle {
            max_failures: max_failures.max(1),
            window,
            max_peers,
            peers: Mutex::new(HashMap::new()),
        }
    }

    /// The bucket of a peer: IPv4 as is, IPv6 by its /64 (one host usually owns a whole /64, so
    /// per-address buckets would be free to multiply).
    fn bucket(ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(_) => ip,
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    let s = v6.segments();
                    IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
                }
            },
        }
    }

    /// How long `peer` must still wait, when it is throttled.
    pub fn blocked_for(&self, peer: IpAddr, now: Instant) -> Option<Duration> {
        let peers = self.peers.lock().ok()?;
        let f = peers.get(&Self::bucket(peer))?;
        let ends = f.since + self.window;
        (f.count >= self.max_failures && now < ends).then(|| ends - now)
    }

    /// Records a failed authentication from `peer`.
    pub fn failed(&self, peer: IpAddr, now: Instant) {
        let Ok(mut peers) = self.peers.lock() else {
            return;
        };
        let key = Self::bucket(peer);
        if !peers.contains_key(&key) && peers.len() >= self.max_peers {
            let window = self.window;
            peers.retain(|_, f| now < f.since + window);
            if peers.len() >= self.max_peers {
                // Full of live entries: this peer goes untracked rather than growing the map
                // without bound or evicting a peer that is being throttled right now.
                return;
            }
        }
        let f = peers.entry(key).or_insert(Failures {
            since: now,
            count: 0,
        });
        if now >= f.since + self.window {
            *f = Failures {
                since: now,
                count: 0,
            };
        }
        f.count = f.count.saturating_add(1);
    }

    /// Forgets `peer`'s failures after it authenticated; other peers keep theirs.
    pub fn succeeded(&self, peer: IpAddr) {
        if let Ok(mut peers) = self.peers.lock() {
            peers.remove(&Self::bucket(peer));
        }
    }
}

/// Compares two secrets in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse()
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
    }

    #[test]
    fn throttles_after_the_limit_until_the_window_ends() {
        let t = AuthThrottle::new(3, Duration::from_secs(60), 100);
        let now = Instant::now();
        let a = ip("10.0.0.1");
        let b = ip("10.0.0.2");
        for _ in 0..2 {
            t.failed(a, now);
        }
        assert_eq!(t.blocked_for(a, now), None);
        t.failed(a, now);
        assert_eq!(t.blocked_for(a, now), Some(Duration::from_secs(60)));
        assert_eq!(
            t.blocked_for(a, now + Duration::from_secs(59)),
            Some(Duration::from_secs(1))
        );
        assert_eq!(t.blocked_for(a, now + Duration::from_secs(60)), None);
        // Another peer is not affected, and its success does not clear `a`.
        assert_eq!(t.blocked_for(b, now), None);
        t.succeeded(b);
        assert!(t.blocked_for(a, now).is_some());
        // After the window a failure starts a new one.
        t.failed(a, now + Duration::from_secs(61));
        assert_eq!(t.blocked_for(a, now + Duration::from_secs(61)), None);
    }

    #[test]
    fn ipv6_peers_share_their_64_and_the_map_is_bounded() {
        let t = AuthThrottle::new(2, Duration::from_secs(60), 2);
        let now = Instant::now();
        t.failed(ip("2001:db8:1:2::1"), now);
        t.failed(ip("2001:db8:1:2::ffff"), now);
        assert!(t.blocked_for(ip("2001:db8:1:2::3"), now).is_some());
        assert!(t.blocked_for(ip("2001:db8:1:3::1"), now).is_none());
        t.failed(ip("10.0.0.1"), now);
        // Full: a third peer is not tracked.
        t.failed(ip("10.0.0.2"), now);
        t.failed(ip("10.0.0.2"), now);
        assert!(t.blocked_for(ip("10.0.0.2"), now).is_none());
        // Once the window passed, stale entries make room.
        let later = now + Duration::from_secs(61);
        t.failed(ip("10.0.0.2"), later);
        t.failed(ip("10.0.0.2"), later);
        assert!(t.blocked_for(ip("10.0.0.2"), later).is_some());
    }

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
