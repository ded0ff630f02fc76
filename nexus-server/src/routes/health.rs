//! `/healthz` (the process answers), `/readyz` (the database answers) and `/metrics` (behind
//! `metrics_token` when one is configured).

use axum::extract::State;
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use crate::error::ApiError;
use crate::AppState;

/// Routes of this group.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

async fn healthz() -> Response {
    Json(serde_json::json!({"status": "ok", "version": nexus::VERSION})).into_response()
}

async fn readyz(State(st): State<AppState>) -> Response {
    match st.blocking(|h| h.ready()).await {
        Ok(()) => Json(serde_json::json!({"status": "ready"})).into_response(),
        Err(e) => {
            tracing::warn!(error = %e.0, "not ready");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(serde_json::json!({"status": "unavailable"})),
            )
                .into_response()
        }
    }
}

/// `/metrics`: open unless `metrics_token` is set, then only with `Authorization: Bearer <it>`.
/// Wrong tokens count toward the same per-peer throttle as the admin token (a guessed metrics
/// token would otherwise be free to brute-force).
async fn metrics(State(st): State<AppState>, parts: Parts) -> Response {
    if let Some(want) = &st.cfg.metrics_token {
        let peer = crate::extract::peer_ip(&parts);
        let now = std::time::Instant::now();
        if let Some(wait) = peer.and_then(|p| st.auth_throttle.blocked_for(p, now)) {
            st.metrics.admin_auth_throttled();
            return ApiError(nexus::Error::RateLimited {
                message: "too many failed authentications from this address; retry later".into(),
                retry_after: Some(wait),
            })
            .into_response();
        }
        let got = crate::extract::bearer(&parts);
        let ok =
            got.is_some_and(|g| crate::limits::constant_time_eq(g.as_bytes(), want.as_bytes()));
        if !ok {
            // A missing header is a misconfigured scraper, not a guess: not counted.
            if let (Some(p), Some(_)) = (peer, got) {
                st.auth_throttle.failed(p, now);
            }
            return ApiError(nexus::Error::Authentication(
                "/metrics needs 'Authorization: Bearer <metrics token>'".into(),
            ))
            .into_response();
        }
    }
    let mut text = st.metrics.render();
    // Rows the stats writer could not keep (a full disk, a read-only database, an overflowing
    // buffer): each one is counted here as well as logged, never dropped silently.
    use std::fmt::Write as _;
    let _ = writeln!(
        text,
        "# HELP nexus_stats_rows_dropped_total Usage and message rows the stats writer dropped.\n# TYPE nexus_stats_rows_dropped_total counter\nnexus_stats_rows_dropped_total {}",
        st.hub.stats().dropped_rows()
    );
    let hc = st.hub.health_check_counters();
    let _ = writeln!(
        text,
        "# HELP nexus_health_probes_total Active health probes by result.\n# TYPE nexus_health_probes_total counter\nnexus_health_probes_total{{result=\"ok\"}} {}\nnexus_health_probes_total{{result=\"failed\"}} {}\n# HELP nexus_provider_state_changes_total Providers disabled or enabled again by the health checks.\n# TYPE nexus_provider_state_changes_total counter\nnexus_provider_state_changes_total{{change=\"auto_disabled\"}} {}\nnexus_provider_state_changes_total{{change=\"auto_enabled\"}} {}",
        hc.probes_ok, hc.probes_failed, hc.auto_disabled, hc.auto_enabled
    );
    let b = st.hub.budget_counters();
    let _ = writeln!(
        text,
        "# HELP nexus_budget_refused_total Requests refused because their key's budget was used up.\n# TYPE nexus_budget_refused_total counter\nnexus_budget_refused_total {}\n# HELP nexus_budget_soft_alerts_total Soft budget thresholds crossed (each key once per period).\n# TYPE nexus_budget_soft_alerts_total counter\nnexus_budget_soft_alerts_total {}",
        b.refused, b.soft_alerts
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
