//! The admin API (`/api/*`, admin token): providers, models, keys, stats and token counting,
//! plus the original system's `/stats/*` routes.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use crate::extract::{Admin, ApiJson, Id};
use crate::AppState;
use nexus::records::{KeyPatch, ModelPatch, NewKey, NewModel, NewProvider, ProviderPatch};
use nexus::stats::TimeseriesQuery;

/// Routes of this group. Every handler takes the [`Admin`] extractor.
pub fn router(_st: AppState) -> Router<AppState> {
    Router::new()
        .route("/api/providers", get(list_providers).post(create_provider))
        .route(
            "/api/providers/{id}",
            get(get_provider)
                .patch(update_provider)
                .delete(delete_provider),
        )
        .route(
            "/api/providers/{id}/models",
            get(list_provider_models).post(create_model),
        )
        .route("/api/providers/{id}/test", post(test_provider))
        .route("/api/models", get(list_models))
        .route(
            "/api/models/{id}",
            get(get_model).patch(update_model).delete(delete_model),
        )
        .route("/api/keys", get(list_keys).post(create_key))
        .route(
            "/api/keys/{id}",
            get(get_key).patch(update_key).delete(delete_key),
        )
        .route("/api/stats/summary", get(summary))
        .route("/api/stats/reprice", post(reprice))
        .route("/api/stats/timeseries", get(timeseries))
        .route("/api/stats/conversations/{id}", get(conversation))
        .route("/api/tokens/count", post(count_tokens))
        .route("/stats/total", get(stats_total))
        .route("/stats/conversation/{id}", get(conversation))
}

fn created<T: serde::Serialize>(v: T) -> Response {
    (StatusCode::CREATED, Json(v)).into_response()
}

fn ok<T: serde::Serialize>(v: T) -> Response {
    Json(v).into_response()
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

async fn list_providers(_: Admin, State(st): State<AppState>) -> ApiResult<Response> {
    Ok(ok(st.blocking(|h| h.registry().providers()).await?))
}

async fn create_provider(
    _: Admin,
    State(st): State<AppState>,
    ApiJson(p): ApiJson<NewProvider>,
) -> ApiResult<Response> {
    Ok(created(
        st.blocking(move |h| h.registry().create_provider(p))
            .await?,
    ))
}

async fn get_provider(_: Admin, State(st): State<AppState>, Id(id): Id) -> ApiResult<Response> {
    Ok(ok(st.blocking(move |h| h.registry().provider(id)).await?))
}

async fn update_provider(
    _: Admin,
    State(st): State<AppState>,
    Id(id): Id,
    ApiJson(p): ApiJson<ProviderPatch>,
) -> ApiResult<Response> {
    Ok(ok(st
        .blocking(move |h| h.registry().update_provider(id, p))
        .await?))
}

async fn delete_provider(_: Admin, State(st): State<AppState>, Id(id): Id) -> ApiResult<Response> {
    st.blocking(move |h| h.registry().delete_provider(id))
        .await?;
    Ok(no_content())
}

async fn test_provider(_: Admin, State(st): State<AppState>, Id(id): Id) -> ApiResult<Response> {
    Ok(ok(st.hub.test_provider(id).await?))
}

async fn list_provider_models(
    _: Admin,
    State(st): State<AppState>,
    Id(id): Id,
) -> ApiResult<Response> {
    Ok(ok(st
        .blocking(move |h| h.registry().models(Some(id)))
        .await?))
}

async fn create_model(
    _: Admin,
    State(st): State<AppState>,
    Id(id): Id,
    ApiJson(m): ApiJson<NewModel>,
) -> ApiResult<Response> {
    Ok(created(
        st.blocking(move |h| h.registry().create_model(id, m))
            .await?,
    ))
}

async fn list_models(_: Admin, State(st): State<AppState>) -> ApiResult<Response> {
    Ok(ok(st.blocking(|h| h.registry().models(None)).await?))
}

async fn get_model(_: Admin, State(st): State<AppState>, Id(id): Id) -> ApiResult<Response> {
    Ok(ok(st.blocking(move |h| h.registry().model(id)).await?))
}

async fn update_model(
    _: Admin,
    State(st): State<AppState>,
    Id(id): Id,
    ApiJson(p): ApiJson<ModelPatch>,
) -> ApiResult<Response> {
    Ok(ok(st
        .blocking(move |h| h.registry().update_model(id, p))
        .await?))
}

async fn delete_model(_: Admin, State(st): State<AppState>, Id(id): Id) -> ApiResult<Response> {
    st.blocking(move |h| h.registry().delete_model(id)).await?;
    Ok(no_content())
}

/// A key as the API shows it: its record with its spend in the current period beside it.
fn key_view(key: &nexus::records::ClientKey, spend: Option<&nexus::KeySpend>) -> Value {
    let mut v = serde_json::to_value(key).unwrap_or(Value::Null);
    if let (Some(o), Some(s)) = (v.as_object_mut(), spend) {
        o.insert("budget_period".into(), s.period.as_str().into());
        o.insert("period_start".into(), s.period_start.into());
        o.insert("period_end".into(), s.period_end.into());
        o.insert("spent_usd".into(), s.spent_usd.into());
        o.insert("reserved_usd".into(), s.reserved_usd.into());
        o.insert("budget_left_usd".into(), s.budget_left_usd.into());
        o.insert("soft_budget_reached".into(), s.soft_budget_reached.into());
        o.insert("budget_reached".into(), s.budget_reached.into());
    }
    v
}

async fn list_keys(_: Admin, State(st): State<AppState>) -> ApiResult<Response> {
    let views = st
        .blocking(|h| {
            let spend = h.keys_spend()?;
            Ok(h.registry()
                .keys()?
                .iter()
                .map(|k| key_view(k, spend.get(&k.id)))
                .collect::<Vec<_>>())
        })
        .await?;
    Ok(ok(views))
}

async fn create_key(
    _: Admin,
    State(st): State<AppState>,
    ApiJson(k): ApiJson<NewKey>,
) -> ApiResult<Response> {
    Ok(created(
        st.blocking(move |h| h.registry().create_key(k)).await?,
    ))
}

async fn get_key(_: Admin, State(st): State<AppState>, Id(id): Id) -> ApiResult<Response> {
    let view = st
        .blocking(move |h| {
            let k = h.registry().key(id)?;
            Ok(key_view(&k, Some(&h.key_spend(id)?)))
        })
        .await?;
    Ok(ok(view))
}

async fn update_key(
    _: Admin,
    State(st): State<AppState>,
    Id(id): Id,
    ApiJson(p): ApiJson<KeyPatch>,
) -> ApiResult<Response> {
    Ok(ok(st
        .blocking(move |h| h.registry().update_key(id, p))
        .await?))
}

async fn delete_key(_: Admin, State(st): State<AppState>, Id(id): Id) -> ApiResult<Response> {
    st.blocking(move |h| h.registry().delete_key(id)).await?;
    Ok(no_content())
}

/// The explicit repricing: recorded costs at today's prices, with the count of rows changed.
async fn reprice(
    _: Admin,
    State(st): State<AppState>,
    ApiJson(q): ApiJson<nexus::usage::RepriceQuery>,
) -> ApiResult<Response> {
    Ok(ok(st.blocking(move |h| h.reprice(&q)).await?))
}

async fn summary(_: Admin, State(st): State<AppState>) -> ApiResult<Response> {
    Ok(ok(st.blocking(|h| h.summary()).await?))
}

async fn stats_total(_: Admin, State(st): State<AppState>) -> ApiResult<Response> {
    let s = st.blocking(|h| h.summary()).await?;
    Ok(ok(serde_json::json!({
        "total_conversations": s.total_conversations,
        "total_rounds": s.total_rounds,
        "prompt_tokens": s.prompt_tokens,
        "completion_tokens": s.completion_tokens,
        "total_tokens": s.total_tokens,
    })))
}

async fn timeseries(
    _: Admin,
    State(st): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let since = match q.get("since") {
        None => None,
        Some(s) => Some(s.parse::<i64>().map_err(|_| {
            ApiError(nexus::Error::invalid_param(
                "since",
                "since must be unix seconds",
            ))
        })?),
    };
    let query = TimeseriesQuery::from_params(
        q.get("bucket").map(String::as_str),
        q.get("group_by").map(String::as_str),
        since,
    )?;
    Ok(ok(st.blocking(move |h| h.timeseries(&query)).await?))
}

async fn conversation(
    _: Admin,
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    Ok(ok(st.blocking(move |h| h.conversation(&id)).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CountRequest {
    model: String,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    messages: Option<Vec<Value>>,
}

async fn count_tokens(
    _: Admin,
    State(st): State<AppState>,
    ApiJson(r): ApiJson<CountRequest>,
) -> ApiResult<Response> {
    if r.text.is_some() == r.messages.is_some() {
        return Err(ApiError(nexus::Error::invalid(
            "give exactly one of `text` or `messages`",
        )));
    }
    if r.text.as_ref().is_some_and(|t| t.len() > st.cfg.body_limit) {
        return Err(ApiError(nexus::Error::PayloadTooLarge {
            limit: st.cfg.body_limit,
        }));
    }
    let hub = st.hub.clone();
    // BPE on a large paste is CPU work: keep it off the async workers.
    let c = tokio::task::spawn_blocking(move || match (&r.text, &r.messages) {
        (Some(t), _) => hub.count_text(&r.model, t),
        (_, Some(m)) => hub.count_messages(&r.model, m),
        _ => hub.count_text(&r.model, ""),
    })
    .await
    .map_err(|e| ApiError(nexus::Error::Internal(e.to_string())))?;
    Ok(ok(serde_json::json!({
        "tokens": c.tokens,
        "method": c.method,
        "encoding": c.encoding.map(|e| e.name()),
    })))
}
