//! Model groups (`/api/groups`, admin token): a client-facing name served by an ordered list
//! of models, tried in turn when one fails or is rate limited.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use nexus::records::{GroupPatch, NewGroup};

use crate::error::ApiResult;
use crate::extract::{Admin, ApiJson, Id};
use crate::AppState;

/// Routes of this group.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/groups", get(list).post(create))
        .route("/api/groups/{id}", get(one).patch(update).delete(delete))
}

async fn list(_: Admin, State(st): State<AppState>) -> ApiResult<Response> {
    Ok(Json(st.blocking(|h| h.registry().groups()).await?).into_response())
}

async fn one(_: Admin, State(st): State<AppState>, Id(id): Id) -> ApiResult<Response> {
    Ok(Json(st.blocking(move |h| h.registry().group(id)).await?).into_response())
}

async fn create(
    _: Admin,
    State(st): State<AppState>,
    ApiJson(g): ApiJson<NewGroup>,
) -> ApiResult<Response> {
    let g = st.blocking(move |h| h.registry().create_group(g)).await?;
    Ok((StatusCode::CREATED, Json(g)).into_response())
}

async fn update(
    _: Admin,
    State(st): State<AppState>,
    Id(id): Id,
    ApiJson(p): ApiJson<GroupPatch>,
) -> ApiResult<Response> {
    Ok(Json(
        st.blocking(move |h| h.registry().update_group(id, p))
            .await?,
    )
    .into_response())
}

async fn delete(_: Admin, State(st): State<AppState>, Id(id): Id) -> ApiResult<Response> {
    st.blocking(move |h| h.registry().delete_group(id)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
