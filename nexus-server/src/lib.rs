//! # nexus-server: the NexusAI Hub reference server
//!
//! A thin axum layer over [`nexus::Hub`]: the OpenAI-compatible API, the admin API, WebSocket chat,
//! health and metrics endpoints, and the embedded admin UI. `app(state)` builds the router so tests
//! can drive it without a socket; [`serve::serve`] is the accept loop with the connection bounds,
//! and `main.rs` adds the command line, logging and graceful shutdown. The HTTP contract is in
//! `docs/API.md`.

pub mod config;
pub mod error;
pub mod extract;
pub mod limits;
pub mod metrics;
pub mod routes;
pub mod serve;
pub mod ui;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;

pub use config::ServerConfig;
use metrics::Metrics;

/// Shared state of every handler. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The core.
    pub hub: nexus::Hub,
    /// Settings.
    pub cfg: Arc<ServerConfig>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Flips to true when shutdown starts; long-lived handlers (WebSocket) watch it.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// Slots for in-flight requests (`max_inflight_requests`); see [`limits::limit_inflight`].
    pub inflight: Arc<tokio::sync::Semaphore>,
    /// Failed admin authentications per peer.
    pub auth_throttle: Arc<limits::AuthThrottle>,
}

impl AppState {
    /// State over a hub, with a shutdown signal that never fires (tests).
    pub fn new(hub: nexus::Hub, cfg: ServerConfig) -> Self {
        let (tx, rx) = tokio::sync::watch::channel(false);
        // Keep the sender alive for the life of the process so receivers never see it closed.
        std::mem::forget(tx);
        Self::with_shutdown(hub, cfg, rx)
    }

    /// State with an explicit shutdown receiver.
    pub fn with_shutdown(
        hub: nexus::Hub,
        cfg: ServerConfig,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        let slots = cfg
            .max_inflight_requests
            .clamp(1, tokio::sync::Semaphore::MAX_PERMITS);
        AppState {
            hub,
            cfg: Arc::new(cfg),
            metrics: Arc::new(Metrics::default()),
            shutdown,
            inflight: Arc::new(tokio::sync::Semaphore::new(slots)),
            auth_throttle: Arc::new(limits::AuthThrottle::default()),
        }
    }

    /// Runs blocking core work (database access) off the async workers.
    pub async fn blocking<T, F>(&self, f: F) -> Result<T, error::ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&nexus::Hub) -> nexus::Result<T> + Send + 'static,
    {
        let hub = self.hub.clone();
        tokio::task::spawn_blocking(move || f(&hub))
            .await
            .map_err(|e| {
                error::ApiError(nexus::Error::Internal(format!("blocking task failed: {e}")))
            })?
            .map_err(error::ApiError)
    }
}

/// The whole router.
pub fn app(state: AppState) -> Router {
    let mut router = Router::new()
        .merge(routes::openai::router())
        .merge(routes::embeddings::router())
        .merge(routes::messages::router())
        .merge(routes::responses::router())
        .merge(routes::admin::router(state.clone()))
        .merge(routes::requests::router())
        .merge(routes::storage::router())
        .merge(routes::groups::router())
        .merge(routes::provider_health::router())
        .merge(routes::provider_keys::router())
        .merge(routes::config_marks::router())
        .merge(routes::ws::router())
        .merge(routes::health::router())
        .merge(ui::router())
        // After the merges: it applies to every route registered so far.
        .method_not_allowed_fallback(routes::method_not_allowed)
        .fallback(routes::not_found)
        // Inside `observe`, so shed requests are logged and counted like any other.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            limits::limit_inflight,
        ))
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe));
    if !state.cfg.cors_origins.is_empty() {
        let origins: Vec<HeaderValue> = state
            .cfg
            .cors_origins
            .iter()
            .filter_map(|o| HeaderValue::from_str(o).ok())
            .collect();
        router = router.layer(
            tower_http::cors::CorsLayer::new()
                .allow_origin(origins)
                .allow_methods(tower_http::cors::Any)
                .allow_headers(tower_http::cors::Any)
                .expose_headers([
                    HeaderName::from_static("x-conversation-id"),
                    HeaderName::from_static("x-request-id"),
                ]),
        );
    }
    router.with_state(state)
}

/// A request id for the logs and the `X-Request-Id` header.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Gives each request an id, logs it (method, route, status, time; never headers or bodies) and
/// counts it.
async fn observe(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    let start = Instant::now();
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(nexus::crypto::random_id);
    req.extensions_mut().insert(RequestId(id.clone()));
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().clone();
    let mut resp = next.run(req).await;
    let status = resp.status().as_u16();
    if let Some(tag) = resp.extensions().get::<error::ErrorKindTag>() {
        st.metrics.error(tag.0.as_str());
    }
    st.metrics.request(&route, status);
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    tracing::info!(request_id = %id, %method, route = %route, status, ms = start.elapsed().as_secs_f64() * 1000.0, "request");
    resp
}
