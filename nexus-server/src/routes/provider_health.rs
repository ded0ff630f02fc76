//! Provider health and discovery (admin token): each provider's health, the state-change events,
//! a probe round on demand, a provider's own model list and importing from it.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use crate::error::{ApiError, ApiResult};
use crate::extract::{Admin, ApiJson, Id};
use crate::AppState;

/// Routes of this group.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/health/providers", get(health))
        .route("/api/health/events", get(events))
        .route("/api/health/probe", post(probe))
        .route("/api/providers/{id}/upstream-models", get(upstream_models))
        .route("/api/providers/{id}/models/import", post(import))
}

async fn health(_: Admin, State(st): State<AppState>) -> ApiResult<Response> {
    Ok(Json(st.blocking(|h| h.provider_health()).await?).into_response())
}

async fn events(
    _: Admin,
    State(st): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let int = |k: &str| -> Result<Option<i64>, ApiError> {
        q.get(k)
            .filter(|v| !v.is_empty())
            .map(|v| {
                v.parse::<i64>().map_err(|_| {
                    ApiError(nexus::Error::invalid_param(
                        k,
                        format!("{k} must be an integer"),
                    ))
                })
            })
            .transpose()
    };
    if let Some(k) = q
        .keys()
        .find(|k| !["provider_id", "limit"].contains(&k.as_str()))
    {
        return Err(ApiError(nexus::Error::invalid_param(
            k,
            format!("unknown parameter '{k}' (provider_id, limit)"),
        )));
    }
    let provider = int("provider_id")?;
    let limit = int("limit")?.unwrap_or(100).clamp(1, 1000) as usize;
    Ok(Json(
        st.blocking(move |h| h.provider_events(provider, limit))
            .await?,
    )
    .into_response())
}

async fn probe(_: Admin, State(st): State<AppState>) -> ApiResult<Response> {
    Ok(Json(st.hub.probe_providers().await).into_response())
}

async fn upstream_models(_: Admin, State(st): State<AppState>, Id(id): Id) -> ApiResult<Response> {
    Ok(Json(st.hub.upstream_models(id).await?).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportRequest {
    models: Vec<String>,
}

async fn import(
    _: Admin,
    State(st): State<AppState>,
    Id(id): Id,
    ApiJson(r): ApiJson<ImportRequest>,
) -> ApiResult<Response> {
    Ok(Json(st.hub.import_models(id, &r.models).await?).into_response())
}
