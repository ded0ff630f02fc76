//! The OpenAI Responses API: `POST /v1/responses` and `/responses`, `GET` and `DELETE
//! /v1/responses/{id}`, `GET /v1/responses/{id}/input_items` (and the short paths).
//!
//! The key is admitted before the body is read, as for chat; errors are OpenAI error bodies.
//! A `GET /v1/responses` (Codex CLI's WebSocket attempt when it is pointed at a hub through
//! `openai_base_url`) is a plain 405, so the client falls back to HTTP at once. The translation
//! and the stored responses are the core's (`nexus::ingress::responses`).

use std::time::Instant;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::error::ApiResult;
use crate::extract::ClientToken;
use crate::AppState;
use nexus::ingress::responses::ResponsesRequest;
use nexus::stats::RequestSource;
use nexus::usage::Endpoint;
use nexus::{Caller, RequestContext};

/// Routes of this group.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/responses", post(create))
        .route("/responses", post(create))
        .route("/v1/responses/{id}", get(retrieve).delete(delete))
        .route("/responses/{id}", get(retrieve).delete(delete))
        .route("/v1/responses/{id}/input_items", get(input_items))
        .route("/responses/{id}/input_items", get(input_items))
        .layer(axum::extract::DefaultBodyLimit::disable())
}

fn set(h: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}

fn request_id(req: &Request) -> Option<String> {
    req.extensions()
        .get::<crate::RequestId>()
        .map(|r| r.0.clone())
}

async fn create(State(st): State<AppState>, token: ClientToken, req: Request) -> Response {
    let start = Instant::now();
    let id = request_id(&req);
    let r = handle(&st, token, req, id.clone()).await;
    st.metrics.latency.observe(start.elapsed().as_secs_f64());
    match r {
        Ok(r) => r,
        Err(e) => crate::error::response_for(&e.0, id.as_deref()),
    }
}

async fn handle(
    st: &AppState,
    token: ClientToken,
    req: Request,
    request_id: Option<String>,
) -> ApiResult<Response> {
    // A bad key or a key over its request rate costs no body read (see routes/openai.rs).
    let admitted = st.hub.admit_for(&token.0, Endpoint::Responses)?;
    let body = crate::extract::read_body(req.into_body(), st.cfg.body_limit).await?;
    let parsed = ResponsesRequest::parse(&body, st.hub.request_limits())?;
    drop(body);
    let ctx = RequestContext {
        request_id,
        conversation_id: None,
        source: RequestSource::Api,
        endpoint: Endpoint::Responses,
    };
    if !parsed.stream() {
        let r = st
            .hub
            .responses(Caller::Admitted(admitted), parsed, ctx)
            .await?;
        let mut resp = (StatusCode::OK, axum::Json(r.response)).into_response();
        let h = resp.headers_mut();
        set(h, "x-request-id", &r.request_id);
        super::copy_rate_limit_headers(h, &r.rate_limit_headers);
        return Ok(resp);
    }
    let stream = st
        .hub
        .responses_stream(Caller::Admitted(admitted), parsed, ctx)
        .await?;
    let rid = stream.request_id().to_owned();
    Ok(super::sse::response(
        stream,
        st.metrics.clone(),
        "x-request-id",
        &rid,
    ))
}

async fn retrieve(
    State(st): State<AppState>,
    token: ClientToken,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let r = st.hub.get_response(&Caller::Key(token.0), &id).await?;
    Ok(axum::Json(r).into_response())
}

async fn input_items(
    State(st): State<AppState>,
    token: ClientToken,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let r = st
        .hub
        .response_input_items(&Caller::Key(token.0), &id)
        .await?;
    Ok(axum::Json(r).into_response())
}

async fn delete(
    State(st): State<AppState>,
    token: ClientToken,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let r = st.hub.delete_response(&Caller::Key(token.0), &id).await?;
    Ok(axum::Json(r).into_response())
}
