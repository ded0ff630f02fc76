//! Storage (`/api/storage`, admin token): the database's size, row counts and retention
//! settings with the last retention pass, and a pass on demand.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use crate::error::ApiResult;
use crate::extract::Admin;
use crate::AppState;

/// Routes of this group.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/storage", get(storage))
        .route("/api/storage/prune", post(prune))
}

async fn storage(_: Admin, State(st): State<AppState>) -> ApiResult<Response> {
    Ok(Json(st.blocking(|h| h.storage()).await?).into_response())
}

async fn prune(_: Admin, State(st): State<AppState>) -> ApiResult<Response> {
    Ok(Json(st.blocking(|h| h.prune_now()).await?).into_response())
}
