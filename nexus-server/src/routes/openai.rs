//! The OpenAI-compatible API: `/v1/chat/completions`, `/chat/completions`, `/v1/models`, `/models`
//! and `/v1/models/{id}`, `/models/{id}`.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::error::{ApiError, ApiResult};
use crate::extract::ClientToken;
use crate::metrics::Metrics;
use crate::AppState;
use nexus::openai::ChatRequest;
use nexus::stats::RequestSource;
use nexus::{Caller, RequestContext};

/// Routes of this group.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/chat/completions", post(chat_completions))
        .route("/v1/models", get(models))
        .route("/models", get(models))
        .route("/v1/models/{*id}", get(model))
        .route("/models/{*id}", get(model))
        .layer(axum::extract::DefaultBodyLimit::disable())
}

fn conversation_header(h: &HeaderMap) -> ApiResult<Option<String>> {
    match h.get("x-conversation-id") {
        None => Ok(None),
        Some(v) => {
            let s = v.to_str().unwrap_or("");
            if s.is_empty() || s.len() > 128 || !s.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(ApiError(nexus::Error::invalid_param(
                    "X-Conversation-Id",
                    "X-Conversation-Id must be 1-128 visible ASCII characters",
                )));
            }
            Ok(Some(s.to_owned()))
        }
    }
}

fn set(h: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}

async fn chat_completions(
    State(st): State<AppState>,
    token: ClientToken,
    req: Request,
) -> Response {
    let start = Instant::now();
    let request_id = req
        .extensions()
        .get::<crate::RequestId>()
        .map(|r| r.0.clone());
    match handle_chat(&st, token, req, start, request_id.clone()).await {
        Ok(r) => r,
        Err(e) => {
            st.metrics.latency.observe(start.elapsed().as_secs_f64());
            crate::error::response_for(&e.0, request_id.as_deref())
        }
    }
}

async fn handle_chat(
    st: &AppState,
    token: ClientToken,
    req: Request,
    start: Instant,
    request_id: Option<String>,
) -> ApiResult<Response> {
    // The key first, as OpenAI does: a bad key is a 401 whatever the body says, and a key over
    // its request rate is a 429; either way the server never reads (up to body_limit) nor
    // parses a body for it. Both are in-memory checks; the hub checks scope and tokens later.
    let admitted = st.hub.admit(&token.0)?;
    let conversation_id = conversation_header(req.headers())?;
    let body = crate::extract::read_body(req.into_body(), st.cfg.body_limit).await?;
    // One bounded parse; the body bytes are dropped before the upstream call.
    let mut chat = ChatRequest::from_slice_limited(&body, st.hub.request_limits())?;
    drop(body);
    let stream = chat.stream.unwrap_or(st.cfg.default_stream);
    chat.stream = Some(stream);
    let ctx = RequestContext {
        request_id,
        conversation_id,
        source: RequestSource::Api,
        endpoint: nexus::usage::Endpoint::Chat,
    };
    if !stream {
        let resp = st.hub.chat(Caller::Admitted(admitted), chat, ctx).await?;
        st.metrics
            .tokens(resp.usage.prompt_tokens, resp.usage.completion_tokens);
        let total_ms = start.elapsed().as_secs_f64() * 1000.0;
        st.metrics.latency.observe(total_ms / 1000.0);
        let mut r = (StatusCode::OK, resp.body).into_response();
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        set(h, "x-conversation-id", &resp.conversation_id);
        set(
            h,
            "x-nexus-overhead-ms",
            &format!("{:.3}", (total_ms - resp.upstream_ms).max(0.0)),
        );
        if resp.cached {
            h.insert("x-nexus-cache", HeaderValue::from_static("hit"));
        }
        super::copy_rate_limit_headers(h, &resp.rate_limit_headers);
        return Ok(r);
    }

    let stream = st
        .hub
        .chat_stream(Caller::Admitted(admitted), chat, ctx)
        .await?;
    st.metrics.streams(1);
    let guard = StreamGuard {
        metrics: st.metrics.clone(),
        start,
        summary: stream.summary_handle(),
    };
    let conversation_id = stream.conversation_id.clone();
    let stream_request_id = stream.request_id.clone();
    let rate_limits = stream.rate_limit_headers.clone();
    // Each upstream event is written on as soon as it arrives; one [DONE] closes the body, after
    // an in-band error event when the upstream failed mid-stream.
    let body = futures_util::stream::unfold(Some((stream, guard)), move |state| {
        let rid = stream_request_id.clone();
        async move {
            let (mut s, g) = state?;
            match s.next().await {
                Some(Ok(chunk)) => {
                    let mut buf = Vec::with_capacity(chunk.json().len() + 8);
                    buf.extend_from_slice(b"data: ");
                    buf.extend_from_slice(chunk.json().as_bytes());
                    buf.extend_from_slice(b"\n\n");
                    Some((
                        Ok::<_, std::convert::Infallible>(bytes::Bytes::from(buf)),
                        Some((s, g)),
                    ))
                }
                Some(Err(e)) => {
                    let (_, body) = crate::error::render_for(&e, Some(&rid));
                    let text = format!("data: {body}\n\ndata: [DONE]\n\n");
                    Some((Ok(bytes::Bytes::from(text)), None))
                }
                None => Some((Ok(bytes::Bytes::from_static(b"data: [DONE]\n\n")), None)),
            }
        }
    });
    let mut r = Response::new(Body::from_stream(body));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    set(h, "x-conversation-id", &conversation_id);
    for (k, v) in &rate_limits {
        if let (Ok(k), Ok(v)) = (
            header::HeaderName::try_from(k.as_str()),
            HeaderValue::from_str(v),
        ) {
            h.insert(k, v);
        }
    }
    Ok(r)
}

async fn models(
    State(st): State<AppState>,
    ClientToken(token): ClientToken,
) -> ApiResult<Response> {
    let list = st
        .blocking(move |hub| hub.models_for(&Caller::Key(token)))
        .await?;
    Ok(axum::Json(list).into_response())
}

/// One model the key may use; unknown and out-of-scope names are both `model_not_found`.
async fn model(
    State(st): State<AppState>,
    ClientToken(token): ClientToken,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> ApiResult<Response> {
    let m = st
        .blocking(move |hub| hub.model_for(&Caller::Key(token), &id))
        .await?;
    Ok(axum::Json(m).into_response())
}

/// Counts an SSE stream as open for as long as its body lives.
struct StreamGuard {
    metrics: Arc<Metrics>,
    start: Instant,
    summary: Arc<std::sync::Mutex<Option<nexus::StreamSummary>>>,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.metrics.streams(-1);
        self.metrics
            .latency
            .observe(self.start.elapsed().as_secs_f64());
        if let Some(s) = self.summary.lock().ok().and_then(|s| s.clone()) {
            self.metrics
                .tokens(s.usage.prompt_tokens, s.usage.completion_tokens);
            if let Some(t) = s.ttft_ms {
                self.metrics.ttft.observe(t / 1000.0);
            }
            if let Some(k) = s.error_kind {
                self.metrics.error(&k);
            }
        }
    }
}
