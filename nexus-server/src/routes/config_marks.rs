//! `GET /api/config/managed` (admin token): the objects the last applied configuration file
//! declares, which the admin UI marks (an edit made there is overwritten by the next apply).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use crate::error::ApiResult;
use crate::extract::Admin;
use crate::AppState;

/// Routes of this group.
pub fn router() -> Router<AppState> {
    Router::new().route("/api/config/managed", get(managed))
}

async fn managed(_: Admin, State(st): State<AppState>) -> ApiResult<Response> {
    let marks = st
        .blocking(|h| nexus::config_marks::load(h.registry().store().as_ref()))
        .await?;
    Ok(Json(marks).into_response())
}
