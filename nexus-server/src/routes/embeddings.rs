//! `POST /v1/embeddings` and `/embeddings`: OpenAI's embeddings API in front of every provider
//! kind that has one (the mapping is the core's, `nexus::embeddings`). The key is admitted before
//! the body is read, as for chat; errors are OpenAI error bodies.

use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;

use crate::error::ApiResult;
use crate::extract::ClientToken;
use crate::AppState;
use nexus::stats::RequestSource;
use nexus::usage::Endpoint;
use nexus::{Caller, EmbeddingsRequest, RequestContext};

/// Routes of this group.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/embeddings", post(embeddings))
        .route("/embeddings", post(embeddings))
        .layer(axum::extract::DefaultBodyLimit::disable())
}

async fn embeddings(State(st): State<AppState>, token: ClientToken, req: Request) -> Response {
    let start = Instant::now();
    let request_id = req
        .extensions()
        .get::<crate::RequestId>()
        .map(|r| r.0.clone());
    let r = handle(&st, token, req, start, request_id.clone()).await;
    st.metrics.latency.observe(start.elapsed().as_secs_f64());
    match r {
        Ok(r) => r,
        Err(e) => crate::error::response_for(&e.0, request_id.as_deref()),
    }
}

async fn handle(
    st: &AppState,
    token: ClientToken,
    req: Request,
    start: Instant,
    request_id: Option<String>,
) -> ApiResult<Response> {
    // A bad key or a key over its request rate costs no body read (see routes/openai.rs).
    let admitted = st
        .hub
        .admit_for(&token.0, nexus::usage::Endpoint::Embeddings)?;
    let body = crate::extract::read_body(req.into_body(), st.cfg.body_limit).await?;
    let parsed = EmbeddingsRequest::from_slice_limited(&body, st.hub.request_limits())?;
    drop(body);
    let ctx = RequestContext {
        request_id,
        conversation_id: None,
        source: RequestSource::Api,
        endpoint: Endpoint::Embeddings,
    };
    let resp = st
        .hub
        .embeddings(Caller::Admitted(admitted), parsed, ctx)
        .await?;
    st.metrics.tokens(resp.usage.prompt_tokens, 0);
    let total_ms = start.elapsed().as_secs_f64() * 1000.0;
    let mut r = (StatusCode::OK, resp.body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("{:.3}", (total_ms - resp.upstream_ms).max(0.0)))
    {
        h.insert("x-nexus-overhead-ms", v);
    }
    super::copy_rate_limit_headers(h, &resp.rate_limit_headers);
    Ok(r)
}
