//! The accept loop: HTTP/1 connections with a header-read deadline, an idle keep-alive deadline
//! and a cap on open connections, each request tagged with its peer address, and graceful shutdown.
//!
//! axum's `serve` gives hyper no timer and has no connection cap, so a client that opens sockets
//! and sends half a request head holds a socket and a task each forever (audit M6). hyper's own
//! `header_read_timeout` is no substitute: its clock also runs while a kept-alive connection waits
//! for the next request, so it would cut keep-alive down to the header timeout. The watchdog here
//! keeps the two apart:
//!
//! - the first request head must be complete within `header_read_timeout` of the accept;
//! - after a response, the connection may sit idle for `keep_alive_idle_timeout`; once the next
//!   head's first byte arrives, that head must be complete within `header_read_timeout`;
//! - while a request is in flight (a stream, too) neither deadline runs.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use crate::limits::GuardedBody;
use crate::metrics::Metrics;
use crate::{AppState, ServerConfig};

/// Connections answered with a 503 at the same time, past the cap; beyond this they are closed
/// unanswered, so the answering itself cannot pile up tasks.
const MAX_REJECTING: usize = 64;
/// How long a rejected connection gets to send its request head and read its 503.
const REJECT_LINGER: Duration = Duration::from_secs(3);
/// How long a rejected connection's request head is waited for before the 503 goes out anyway.
const REJECT_HEAD_WAIT: Duration = Duration::from_secs(1);

/// The connection bounds of [`serve`].
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// How long a request head may take to arrive (from the accept, or from its first byte on a
    /// kept-alive connection).
    pub header_read_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request.
    pub keep_alive_idle_timeout: Duration,
    /// Open connections at most (WebSockets included); further ones get a 503 and are closed.
    pub max_connections: usize,
    /// How long a request body may take to arrive, from the end of its head.
    pub body_read_timeout: Duration,
}

impl ConnLimits {
    /// The bounds configured in `cfg`.
    pub fn from_config(cfg: &ServerConfig) -> Self {
        ConnLimits {
            header_read_timeout: cfg.header_read_timeout,
            keep_alive_idle_timeout: cfg.keep_alive_idle_timeout,
            max_connections: cfg.max_connections,
            body_read_timeout: cfg.body_read_timeout,
        }
    }

    /// How often the watchdog looks again while a request is in flight.
    fn recheck(&self) -> Duration {
        self.header_read_timeout
            .min(self.keep_alive_idle_timeout)
            .max(Duration::from_millis(10))
    }
}

/// Which deadline closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnTimeout {
    /// A request head did not arrive in time.
    HeaderRead,
    /// A kept-alive connection stayed idle too long.
    Idle,
}

impl ConnTimeout {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnTimeout::HeaderRead => "header_read",
            ConnTimeout::Idle => "idle",
        }
    }
}

/// What the watchdog knows about one connection; written by the I/O wrapper and the service.
/// Times are milliseconds since the accept.
#[derive(Debug)]
struct ConnState {
    start: Instant,
    /// Requests handed to the router whose response body is not finished yet.
    in_flight: AtomicUsize,
    /// Requests handed to the router so far.
    requests: AtomicU64,
    /// When the last response finished.
    idle_since: AtomicU64,
    /// 1 + when the first byte arrived while no request was in flight (0: none since).
    head_started: AtomicU64,
}

impl ConnState {
    fn new() -> Self {
        ConnState {
            start: Instant::now(),
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
            head_started: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    fn at(&self, ms: u64) -> Instant {
        self.start + Duration::from_millis(ms)
    }

    fn on_read(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0 {
            let _ = self.head_started.compare_exchange(
                0,
                self.now_ms() + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
    }

    fn on_request(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.requests.fetch_add(1, Ordering::AcqRel);
        self.head_started.store(0, Ordering::Release);
    }

    fn on_response_done(&self) {
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle_since.store(self.now_ms(), Ordering::Release);
            self.head_started.store(0, Ordering::Release);
        }
    }

    /// When the connection must close if nothing happens before, and why; `None` while a request
    /// is in flight.
    fn deadline(&self, l: &ConnLimits) -> Option<(Instant, ConnTimeout)> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        if self.requests.load(Ordering::Acquire) == 0 {
            return Some((self.start + l.header_read_timeout, ConnTimeout::HeaderRead));
        }
        match self.head_started.load(Ordering::Acquire) {
            0 => Some((
                self.at(self.idle_since.load(Ordering::Acquire)) + l.keep_alive_idle_timeout,
                ConnTimeout::Idle,
            )),
            h => Some((
                self.at(h - 1) + l.header_read_timeout,
                ConnTimeout::HeaderRead,
            )),
        }
    }
}

/// Marks one request in flight on its connection until dropped (with the response body).
struct RequestGuard(Arc<ConnState>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.on_response_done();
    }
}

/// The socket, noting reads for the watchdog and holding the connection's slot: the slot lives as
/// long as the socket, so an upgraded WebSocket keeps counting against the cap.
struct TrackedIo {
    tcp: TcpStream,
    state: Arc<ConnState>,
    metrics: Arc<Metrics>,
    _slot: Option<OwnedSemaphorePermit>,
}

impl Drop for TrackedIo {
    fn drop(&mut self) {
        self.metrics.connections(-1);
    }
}

impl AsyncRead for TrackedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.tcp).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.state.on_read();
        }
        r
    }
}

impl AsyncWrite for TrackedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
}

/// Serves `app(state)` on `listener` until `shutdown` resolves, then stops accepting, lets every
/// open request finish (idle connections close at once) and returns when the last connection is
/// gone. The caller bounds that wait (see `main.rs`, `shutdown_grace`).
pub async fn serve<F>(listener: TcpListener, state: AppState, shutdown: F)
where
    F: Future<Output = ()> + Send,
{
    let limits = ConnLimits::from_config(&state.cfg);
    let metrics = state.metrics.clone();
    let router = crate::app(state);
    let slots = Arc::new(Semaphore::new(
        limits.max_connections.clamp(1, Semaphore::MAX_PERMITS),
    ));
    let rejecting = Arc::new(AtomicUsize::new(0));
    let mut http = hyper::server::conn::http1::Builder::new();
    // No hyper timer: the watchdog in `drive` owns both deadlines (see the module doc).
    http.keep_alive(true);
    let (close_tx, close_rx) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            biased;
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
        };
        // Streams are many small writes: without TCP_NODELAY, Nagle's algorithm holds each event
        // until the client's delayed ACK (up to 40 ms on Linux).
        let _ = tcp.set_nodelay(true);
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics.connection_rejected();
            reject(tcp, &rejecting);
            continue;
        };
        metrics.connections(1);
        let io = TrackedIo {
            tcp,
            state: Arc::new(ConnState::new()),
            metrics: metrics.clone(),
            _slot: Some(slot),
        };
        tokio::spawn(drive(
            io,
            peer,
            router.clone(),
            http.clone(),
            limits,
            close_rx.clone(),
            metrics.clone(),
        ));
    }
    drop(listener);
    let _ = close_tx.send(true);
    drop(close_rx);
    // Every connection task holds a receiver; this returns when the last one has ended.
    close_tx.closed().await;
}

/// Accept errors: a connection that died in the backlog is nothing; anything else (EMFILE: out of
/// file descriptors) is logged and waited out briefly instead of spinning on it.
async fn accept_error(e: io::Error) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accept failed; pausing 100 ms");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// The raw answer to a connection over the cap: the server reads nothing from it, so it cannot go
/// through the router.
fn over_capacity_response() -> Vec<u8> {
    let body =
        crate::limits::overloaded_body("the server has too many open connections; retry shortly")
            .to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Answers a connection over the cap with a 503 and closes it, in a bounded number of short tasks.
fn reject(mut tcp: TcpStream, rejecting: &Arc<AtomicUsize>) {
    if rejecting.fetch_add(1, Ordering::AcqRel) >= MAX_REJECTING {
        rejecting.fetch_sub(1, Ordering::AcqRel);
        return; // dropping closes it
    }
    let rejecting = rejecting.clone();
    tokio::spawn(async move {
        let answer = async {
            // Wait for the request head (or a little of it) first: an HTTP client that gets an
            // answer before it has written its request treats it as a protocol error and never
            // sees the 503.
            let mut head = Vec::with_capacity(1024);
            let mut chunk = [0u8; 1024];
            let _ = tokio::time::timeout(REJECT_HEAD_WAIT, async {
                while head.len() < 8192 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tcp.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&chunk[..n]),
                    }
                }
            })
            .await;
            tcp.write_all(&over_capacity_response()).await?;
            tcp.shutdown().await?;
            // Read what the client sent until it closes: closing a socket with unread input
            // sends a reset, which can destroy the answer before the client has read it.
            while tcp.read(&mut chunk).await? > 0 {}
            Ok::<_, io::Error>(())
        };
        let _ = tokio::time::timeout(REJECT_LINGER, answer).await;
        rejecting.fetch_sub(1, Ordering::AcqRel);
    });
}

/// A request body that fails once `timeout` has passed since the head, if it is not complete by
/// then: without it a client can trickle a body (up to `body_limit_bytes`) for as long as it likes
/// while holding a connection and an in-flight slot. Handlers see a read error (400).
struct DeadlineBody {
    inner: hyper::body::Incoming,
    timeout: Duration,
    deadline: tokio::time::Instant,
    // Armed at the first wait only: most bodies are already buffered when the handler reads them.
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl DeadlineBody {
    fn new(inner: hyper::body::Incoming, timeout: Duration) -> Self {
        DeadlineBody {
            inner,
            timeout,
            deadline: tokio::time::Instant::now() + timeout,
            sleep: None,
        }
    }
}

/// The error of a body that did not arrive in time.
#[derive(Debug)]
struct BodyTimeout(Duration);

impl std::fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the request body did not arrive within {} s",
            self.0.as_secs()
        )
    }
}

impl std::error::Error for BodyTimeout {}

impl http_body::Body for DeadlineBody {
    type Data = bytes::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(r) => Poll::Ready(r.map(|f| f.map_err(Into::into))),
            Poll::Pending => {
                let deadline = this.deadline;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if sleep.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Some(Err(Box::new(BodyTimeout(this.timeout)))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Drives one connection: hyper serves it while the watchdog enforces the deadlines and a
/// shutdown turns it graceful.
async fn drive(
    io: TrackedIo,
    peer: SocketAddr,
    router: Router,
    http: hyper::server::conn::http1::Builder,
    limits: ConnLimits,
    mut close: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
) {
    let state = io.state.clone();
    let svc_state = state.clone();
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        svc_state.on_request();
        // Created before the router runs: a handler dropped mid-way (client gone) still ends
        // the request for the watchdog.
        let guard = RequestGuard(svc_state.clone());
        req.extensions_mut().insert(ConnectInfo(peer));
        let req = req.map(|b| DeadlineBody::new(b, limits.body_read_timeout));
        let fut = tower_service::Service::call(&mut router.clone(), req);
        async move {
            let resp = fut.await?;
            Ok::<_, Infallible>(resp.map(|b| axum::body::Body::new(GuardedBody::new(b, guard))))
        }
    });
    let conn = http.serve_connection(TokioIo::new(io), svc).with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let mut draining = false;
    loop {
        if !draining && *close.borrow() {
            draining = true;
            conn.as_mut().graceful_shutdown();
        }
        let wake = match state.deadline(&limits) {
            Some((at, _)) => at,
            None => Instant::now() + limits.recheck(),
        };
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                break;
            }
            _ = tokio::time::sleep_until(wake.into()) => {
                if let Some((at, why)) = state.deadline(&limits) {
                    if Instant::now() >= at {
                        // No request is in flight, so dropping the connection loses no answer.
                        metrics.connection_timeout(why.as_str());
                        tracing::debug!(%peer, reason = why.as_str(), "closing connection");
                        break;
                    }
                }
            }
            // An error means the sender is gone, which only happens once shutdown started.
            _ = close.changed(), if !draining => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ConnLimits {
        ConnLimits {
            header_read_timeout: Duration::from_secs(10),
            keep_alive_idle_timeout: Duration::from_secs(60),
            max_connections: 1,
            body_read_timeout: Duration::from_secs(60),
        }
    }

    #[test]
    fn deadlines_follow_the_connection_state() {
        let l = limits();
        let s = ConnState::new();
        // Fresh: the first head is due within the header timeout of the accept.
        let (at, why) = s.deadline(&l).unwrap_or((s.start, ConnTimeout::Idle));
        assert_eq!(
            (at, why),
            (s.start + l.header_read_timeout, ConnTimeout::HeaderRead)
        );
        s.on_read();
        s.on_request();
        assert!(s.deadline(&l).is_none(), "no deadline while a request runs");
        s.on_response_done();
        let (at, why) = s.deadline(&l).unwrap_or((s.start, ConnTimeout::HeaderRead));
        assert_eq!(why, ConnTimeout::Idle);
        assert!(at >= s.start + l.keep_alive_idle_timeout);
        // The next head's first byte switches to the header deadline.
        s.on_read();
        let (_, why) = s.deadline(&l).unwrap_or((s.start, ConnTimeout::Idle));
        assert_eq!(why, ConnTimeout::HeaderRead);
    }

    #[test]
    fn the_over_capacity_answer_is_well_formed() {
        let r = String::from_utf8(over_capacity_response()).unwrap_or_default();
        let (head, body) = r.split_once("\r\n\r\n").unwrap_or(("", ""));
        assert!(head.starts_with("HTTP/1.1 503 "));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        assert_eq!(v["error"]["code"], "overloaded");
    }
}
