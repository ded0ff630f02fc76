//! Named server-sent events (the Anthropic Messages and OpenAI Responses streams) as an HTTP
//! response body: one event per `next`, counted as an open stream for as long as the body lives.

use std::future::Future;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderValue};
use axum::response::Response;
use nexus::ingress::SseEvent;

use crate::metrics::Metrics;

/// A stream of events from the core.
pub trait EventSource: Send + 'static {
    /// The next event; `None` after the last.
    fn next_event(&mut self) -> impl Future<Output = Option<SseEvent>> + Send;
}

impl EventSource for nexus::ingress::messages::MessagesStream {
    async fn next_event(&mut self) -> Option<SseEvent> {
        self.next().await
    }
}

impl EventSource for nexus::ingress::responses::ResponsesStream {
    async fn next_event(&mut self) -> Option<SseEvent> {
        self.next().await
    }
}

/// Counts an SSE stream as open for as long as its body lives.
struct StreamGuard(Arc<Metrics>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.streams(-1);
    }
}

/// The `text/event-stream` response for `source`, with `id_header: request_id`.
pub fn response<S: EventSource>(
    source: S,
    metrics: Arc<Metrics>,
    id_header: &'static str,
    request_id: &str,
) -> Response {
    metrics.streams(1);
    let guard = StreamGuard(metrics);
    let body = futures_util::stream::unfold(Some((source, guard)), |state| async move {
        let (mut s, g) = state?;
        let ev = s.next_event().await?;
        Some((
            Ok::<_, std::convert::Infallible>(bytes::Bytes::from(ev.to_wire())),
            Some((s, g)),
        ))
    });
    let mut r = Response::new(Body::from_stream(body));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert(id_header, v);
    }
    r
}
