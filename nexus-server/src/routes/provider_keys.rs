//! Provider key pools (`/api/providers/{id}/keys`, admin token): the upstream keys a provider
//! holds, their weights and states. Answers carry hints only, never a key.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch};
use axum::{Json, Router};
use nexus::records::{NewPoolKey, PoolKeyPatch};
use serde_json::json;

use crate::error::{ApiError, ApiResult};
use crate::extract::{Admin, ApiJson, Id};
use crate::AppState;

/// Routes of this group.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/providers/{id}/keys", get(list).post(add))
        .route(
            "/api/providers/{id}/keys/{key_id}",
            patch(update).delete(delete),
        )
}

/// The two ids of a pool key's path.
fn ids(
    p: std::result::Result<Path<(i64, i64)>, axum::extract::rejection::PathRejection>,
) -> ApiResult<(i64, i64)> {
    p.map(|Path(ids)| ids).map_err(|_| {
        ApiError(nexus::Error::invalid_param(
            "id",
            "the ids in the path must be integers",
        ))
    })
}

async fn list(_: Admin, State(st): State<AppState>, Id(id): Id) -> ApiResult<Response> {
    let keys = st.blocking(move |h| h.pool_keys(id)).await?;
    Ok(Json(json!({ "data": keys })).into_response())
}

async fn add(
    _: Admin,
    State(st): State<AppState>,
    Id(id): Id,
    ApiJson(k): ApiJson<NewPoolKey>,
) -> ApiResult<Response> {
    let k = st
        .blocking(move |h| h.registry().add_pool_key(id, k))
        .await?;
    Ok((StatusCode::CREATED, Json(k)).into_response())
}

async fn update(
    _: Admin,
    State(st): State<AppState>,
    path: std::result::Result<Path<(i64, i64)>, axum::extract::rejection::PathRejection>,
    ApiJson(p): ApiJson<PoolKeyPatch>,
) -> ApiResult<Response> {
    let (id, key_id) = ids(path)?;
    let k = st
        .blocking(move |h| h.registry().update_pool_key(id, key_id, p))
        .await?;
    Ok(Json(k).into_response())
}

async fn delete(
    _: Admin,
    State(st): State<AppState>,
    path: std::result::Result<Path<(i64, i64)>, axum::extract::rejection::PathRejection>,
) -> ApiResult<Response> {
    let (id, key_id) = ids(path)?;
    st.blocking(move |h| h.registry().delete_pool_key(id, key_id))
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
