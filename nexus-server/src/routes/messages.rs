//! The Anthropic Messages API: `POST /v1/messages`, `/messages`, `POST /v1/messages/count_tokens`
//! and `/messages/count_tokens` (any query string, e.g. Claude Code's `?beta=true`).
//!
//! The client key comes in `x-api-key` (Anthropic's SDKs, Claude Code's `ANTHROPIC_API_KEY`) or
//! `Authorization: Bearer` (`ANTHROPIC_AUTH_TOKEN`), and is admitted before the body is read.
//! `anthropic-version` and `anthropic-beta` are accepted and not needed. Every error on these
//! paths is Anthropic's error body; each answer carries `request-id`.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;

use crate::AppState;
use nexus::ingress::messages;
use nexus::stats::RequestSource;
use nexus::{Caller, RequestContext};

/// Routes of this group.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/messages", post(create).fallback(wrong_method))
        .route("/messages", post(create).fallback(wrong_method))
        .route(
            "/v1/messages/count_tokens",
            post(count_tokens).fallback(wrong_method),
        )
        .route(
            "/messages/count_tokens",
            post(count_tokens).fallback(wrong_method),
        )
        .layer(axum::extract::DefaultBodyLimit::disable())
}

/// Whether a path is one of this group's (their errors are Anthropic's shape).
pub fn is_messages_path(path: &str) -> bool {
    matches!(
        path,
        "/v1/messages" | "/messages" | "/v1/messages/count_tokens" | "/messages/count_tokens"
    )
}

/// An error in Anthropic's shape, with `request-id`.
pub fn error_response(e: &nexus::Error, request_id: Option<&str>) -> Response {
    let status = StatusCode::from_u16(e.anthropic_status()).unwrap_or(StatusCode::BAD_GATEWAY);
    // Logged (or not) as the OpenAI path does; only the body differs.
    let _ = crate::error::render_for(e, request_id);
    let mut r = (status, axum::Json(e.to_anthropic_json_for(request_id))).into_response();
    let h = r.headers_mut();
    crate::error::retry_headers(h, e);
    if let Some(id) = request_id {
        set(h, "request-id", id);
    }
    r.extensions_mut()
        .insert(crate::error::ErrorKindTag(e.kind()));
    r
}

async fn wrong_method(method: axum::http::Method, req: Request) -> Response {
    let id = request_id(&req);
    let e = nexus::Error::invalid(format!(
        "method {method} is not allowed on '{}'",
        req.uri().path()
    ));
    let mut r = error_response(&e, id.as_deref());
    *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    r
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

/// The client key: `x-api-key`, else `Authorization: Bearer`.
fn client_key(h: &HeaderMap) -> Result<String, nexus::Error> {
    if let Some(k) = h
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty())
    {
        return Ok(k.to_owned());
    }
    let bearer = h
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(s, _)| s.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
        .filter(|t| !t.is_empty());
    bearer.map(str::to_owned).ok_or_else(|| {
        nexus::Error::Authentication(
            "missing API key: send 'x-api-key: <key>' or 'Authorization: Bearer <key>'".into(),
        )
    })
}

/// Admits the key (before the body is read) and reads the body.
async fn admit_and_read(
    st: &AppState,
    req: Request,
) -> Result<(nexus::Admitted, bytes::Bytes), nexus::Error> {
    let key = client_key(req.headers())?;
    let admitted = st.hub.admit_for(&key, nexus::usage::Endpoint::Messages)?;
    let body = crate::extract::read_body(req.into_body(), st.cfg.body_limit)
        .await
        .map_err(|e| e.0)?;
    Ok((admitted, body))
}

async fn create(State(st): State<AppState>, req: Request) -> Response {
    let start = std::time::Instant::now();
    let id = request_id(&req);
    let r = handle(&st, req, id.clone()).await;
    let r = r.unwrap_or_else(|e| error_response(&e, id.as_deref()));
    st.metrics.latency.observe(start.elapsed().as_secs_f64());
    r
}

async fn handle(
    st: &AppState,
    req: Request,
    request_id: Option<String>,
) -> Result<Response, nexus::Error> {
    let betas = req
        .headers()
        .get("anthropic-beta")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (admitted, body) = admit_and_read(st, req).await?;
    let chat = messages::MessagesRequest::parse(&body, st.hub.request_limits(), betas.as_deref())?;
    drop(body);
    let ctx = RequestContext {
        request_id,
        conversation_id: None,
        source: RequestSource::Api,
        endpoint: nexus::usage::Endpoint::Messages,
    };
    if !chat.stream() {
        let r = st
            .hub
            .messages(Caller::Admitted(admitted), chat, ctx)
            .await?;
        let mut resp = (StatusCode::OK, axum::Json(r.message)).into_response();
        let h = resp.headers_mut();
        set(h, "request-id", &r.request_id);
        super::copy_rate_limit_headers(h, &r.rate_limit_headers);
        return Ok(resp);
    }
    let stream = st
        .hub
        .messages_stream(Caller::Admitted(admitted), chat, ctx)
        .await?;
    let rid = stream.request_id().to_owned();
    Ok(super::sse::response(
        stream,
        st.metrics.clone(),
        "request-id",
        &rid,
    ))
}

async fn count_tokens(State(st): State<AppState>, req: Request) -> Response {
    let id = request_id(&req);
    let betas = req
        .headers()
        .get("anthropic-beta")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let r = async {
        let (admitted, body) = admit_and_read(&st, req).await?;
        let parsed = messages::MessagesRequest::parse_count(
            &body,
            st.hub.request_limits(),
            betas.as_deref(),
        )?;
        drop(body);
        st.hub
            .messages_count_input_tokens(&Caller::Admitted(admitted), &parsed)
            .await
    }
    .await;
    match r {
        Ok(n) => {
            let mut resp =
                axum::Json(serde_json::json!({ "input_tokens": n.input_tokens })).into_response();
            let h = resp.headers_mut();
            // Who counted: the provider itself, or the hub's estimator.
            set(h, "x-nexus-count-source", n.source.label());
            if let Some(id) = &id {
                set(h, "request-id", id);
            }
            resp
        }
        Err(e) => error_response(&e, id.as_deref()),
    }
}
