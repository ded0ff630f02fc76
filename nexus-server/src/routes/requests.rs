//! The request explorer (`/api/requests`, admin token): recorded requests filtered and paged,
//! one request with its attempts, and an export of every matching row as JSONL or CSV.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use nexus::usage::{RequestQuery, RequestRow};

use crate::error::{ApiError, ApiResult};
use crate::extract::Admin;
use crate::AppState;

/// Routes of this group.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/requests", get(list))
        .route("/api/requests/export", get(export))
        .route("/api/requests/{request_id}", get(one))
}

fn query(params: &[(String, String)], skip: &[&str]) -> Result<RequestQuery, ApiError> {
    Ok(RequestQuery::from_params(
        params
            .iter()
            .filter(|(k, _)| !skip.contains(&k.as_str()))
            .map(|(k, v)| (k.as_str(), v.as_str())),
    )?)
}

async fn list(
    _: Admin,
    State(st): State<AppState>,
    Query(params): Query<Vec<(String, String)>>,
) -> ApiResult<Response> {
    let q = query(&params, &[])?;
    Ok(Json(st.blocking(move |h| h.requests(&q)).await?).into_response())
}

async fn one(_: Admin, State(st): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    Ok(Json(st.blocking(move |h| h.request(&id)).await?).into_response())
}

/// The CSV columns, in order: the list row's fields.
const CSV_COLUMNS: [&str; 24] = [
    "time",
    "request_id",
    "conversation_id",
    "key_id",
    "key_name",
    "endpoint",
    "model",
    "provider_id",
    "provider_name",
    "upstream_model",
    "status",
    "error_kind",
    "attempts",
    "stream",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "usage_source",
    "cost",
    "ttft_ms",
    "upstream_ms",
    "total_ms",
    "source",
];

/// A CSV field: quoted when it holds a separator, a quote or a line break (RFC 4180), and with a
/// leading `'` when a spreadsheet would take it for a formula (tenants choose model names).
fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@']) && s.parse::<f64>().is_err() {
        format!("'{s}")
    } else {
        s.to_owned()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

fn csv_line(r: &RequestRow) -> String {
    let v = serde_json::to_value(r).unwrap_or_default();
    let mut line = CSV_COLUMNS
        .iter()
        .map(|c| match &v[*c] {
            serde_json::Value::Null => String::new(),
            serde_json::Value::String(s) => csv_field(s),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join(",");
    line.push_str("\r\n");
    line
}

/// Every row matching the filters, newest first, streamed page by page (bounded memory however
/// many rows match): `format=jsonl` (the default) or `format=csv`.
async fn export(
    _: Admin,
    State(st): State<AppState>,
    Query(params): Query<Vec<(String, String)>>,
) -> ApiResult<Response> {
    let csv = match params
        .iter()
        .find(|(k, _)| k == "format")
        .map(|(_, v)| v.as_str())
    {
        None | Some("jsonl") | Some("") => false,
        Some("csv") => true,
        Some(other) => {
            return Err(ApiError(nexus::Error::invalid_param(
                "format",
                format!("format must be jsonl or csv, not '{other}'"),
            )))
        }
    };
    let mut q = query(&params, &["format", "limit", "cursor"])?;
    q.limit = Some(1000);
    // The first page is read before answering, so a bad filter is still a 400.
    let first = {
        let q = q.clone();
        st.blocking(move |h| h.requests(&q)).await?
    };
    let body = futures_util::stream::unfold(
        (Some(first), q, st, csv, true),
        |(page, mut q, st, csv, header_due)| async move {
            let page = page?;
            let mut out = String::new();
            if csv && header_due {
                out.push_str(&CSV_COLUMNS.join(","));
                out.push_str("\r\n");
            }
            for r in &page.data {
                if csv {
                    out.push_str(&csv_line(r));
                } else {
                    out.push_str(&serde_json::to_string(r).unwrap_or_default());
                    out.push('\n');
                }
            }
            let next = match page.next_cursor {
                Some(c) => {
                    q.cursor = Some(c);
                    let qq = q.clone();
                    match st.blocking(move |h| h.requests(&qq)).await {
                        Ok(p) => Some(p),
                        Err(e) => {
                            // The status line is gone: end the body short, the log says why.
                            tracing::warn!(error = %e.0, "request export stopped early");
                            None
                        }
                    }
                }
                None => None,
            };
            Some((
                Ok::<Bytes, std::io::Error>(Bytes::from(out)),
                (next, q, st, csv, false),
            ))
        },
    );
    let (ctype, name) = if csv {
        ("text/csv; charset=utf-8", "requests.csv")
    } else {
        ("application/x-ndjson", "requests.jsonl")
    };
    let mut r = Body::from_stream(body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_and_defused() {
        assert_eq!(csv_field("gpt-4o"), "gpt-4o");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_field("-1.5"), "-1.5");
    }
}
