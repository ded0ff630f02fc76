//! The request explorer's queries on SQLite: newest-first pages of `usage` under any mix of
//! filters (each one an index walk: see migration 0012), cursors, and one request's row.

use rusqlite::{Connection, OptionalExtension};

use crate::budgets::micros_to_usd;
use crate::error::{Error, Result};
use crate::usage::{Endpoint, RequestPage, RequestQuery, RequestRow, StatusFilter};

/// One page of requests matching `q`, newest first.
pub(super) fn list(c: &Connection, q: &RequestQuery) -> Result<RequestPage> {
    use rusqlite::types::Value as V;
    let mut sql = format!("SELECT {REQUEST_COLUMNS} FROM usage WHERE 1 = 1");
    let mut args: Vec<V> = Vec::new();
    // Appends `clause` with its one `?` numbered after the arguments so far.
    let mut arg = |sql: &mut String, clause: &str, v: V| {
        args.push(v);
        sql.push_str(&clause.replace('?', &format!("?{}", args.len())));
    };
    if let Some(m) = &q.model {
        arg(&mut sql, " AND model = ?", V::Text(m.clone()));
    }
    if let Some(k) = q.key_id {
        arg(&mut sql, " AND key_id = ?", V::Integer(k));
    }
    if let Some(p) = q.provider_id {
        arg(&mut sql, " AND provider_id = ?", V::Integer(p));
    }
    if let Some(e) = q.endpoint {
        arg(&mut sql, " AND endpoint = ?", V::Text(e.as_str().into()));
    }
    match q.status {
        Some(StatusFilter::Code(code)) => {
            if code >= 400 {
                // Lets the planner use the failures' partial index.
                sql.push_str(" AND status >= 400");
            }
            arg(&mut sql, " AND status = ?", V::Integer(code.into()));
        }
        Some(StatusFilter::Error) => sql.push_str(" AND status >= 400"),
        Some(StatusFilter::Ok) => sql.push_str(" AND status < 400"),
        None => {}
    }
    if let Some(k) = &q.error_kind {
        sql.push_str(" AND status >= 400");
        arg(&mut sql, " AND error_kind = ?", V::Text(k.clone()));
    }
    if let Some(conv) = &q.conversation_id {
        // Matches the partial index on conversations.
        sql.push_str(" AND conversation_id IS NOT NULL");
        arg(&mut sql, " AND conversation_id = ?", V::Text(conv.clone()));
    }
    if let Some(t) = q.since {
        arg(
            &mut sql,
            " AND ts_ms >= ?",
            V::Integer(t.saturating_mul(1000)),
        );
    }
    if let Some(t) = q.until {
        arg(
            &mut sql,
            " AND ts_ms < ?",
            V::Integer(t.saturating_mul(1000)),
        );
    }
    if let Some(cur) = &q.cursor {
        let (ts, id) = parse_cursor(cur)?;
        args.push(V::Integer(ts));
        args.push(V::Integer(id));
        let n = args.len();
        sql.push_str(&format!(" AND (ts_ms, id) < (?{}, ?{n})", n - 1));
    }
    let size = q.page_size();
    // One row more than the page tells whether another page follows.
    sql.push_str(&format!(" ORDER BY ts_ms DESC, id DESC LIMIT {}", size + 1));
    let mut st = c.prepare(&sql)?;
    let mut rows = st.query(rusqlite::params_from_iter(args.iter()))?;
    let mut data = Vec::with_capacity(size.min(64));
    let mut last: Option<(i64, i64)> = None;
    let mut more = false;
    while let Some(r) = rows.next()? {
        if data.len() == size {
            more = true;
            break;
        }
        let (row, ts, id) = request_row(r, false)?;
        last = Some((ts, id));
        data.push(row);
    }
    Ok(RequestPage {
        data,
        next_cursor: last.filter(|_| more).map(|(ts, id)| format!("{ts}.{id}")),
    })
}

/// The newest row of `request_id`, with its attempt log.
pub(super) fn get(c: &Connection, request_id: &str) -> Result<Option<RequestRow>> {
    let mut st = c.prepare(&format!(
        "SELECT {REQUEST_COLUMNS} FROM usage WHERE request_id = ?1 ORDER BY id DESC LIMIT 1"
    ))?;
    let mut rows = st.query([request_id])?;
    let Some(r) = rows.next()? else {
        return Ok(None);
    };
    let mut row = request_row(r, true)?.0;
    let bodies: Option<(Option<String>, Option<String>)> = c
        .query_row(
            "SELECT request, response FROM request_bodies WHERE request_id = ?1",
            [request_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    if let Some((req, resp)) = bodies {
        row.request_body = req;
        row.response_body = resp;
    }
    Ok(Some(row))
}

/// The columns [`request_row`] reads, in its order.
const REQUEST_COLUMNS: &str = "request_id, ts_ms, conversation_id, key_id, endpoint, model,
    provider_id, upstream_model, status, error_kind, attempts, stream, prompt_tokens,
    completion_tokens, cached_tokens, reasoning_tokens, usage_source, cost_micros, ttft_ms,
    upstream_ms, latency_ms, source, id, attempt_log";

/// One explorer row (names are the hub's to fill), with its `ts_ms` and row id for the cursor.
fn request_row(r: &rusqlite::Row<'_>, detail: bool) -> Result<(RequestRow, i64, i64)> {
    let ts: i64 = r.get(1)?;
    let id: i64 = r.get(22)?;
    let n = |i: usize| -> rusqlite::Result<u64> { Ok(r.get::<_, i64>(i)?.max(0) as u64) };
    let attempt_log = if detail {
        let raw: Option<String> = r.get(23)?;
        Some(
            raw.and_then(|j| serde_json::from_str::<Vec<crate::usage::Attempt>>(&j).ok())
                .unwrap_or_default(),
        )
    } else {
        None
    };
    let row = RequestRow {
        request_id: r.get(0)?,
        time: ts,
        conversation_id: r.get(2)?,
        key_id: r.get(3)?,
        key_name: None,
        endpoint: Endpoint::from_name(&r.get::<_, String>(4)?),
        model: r.get(5)?,
        provider_id: r.get(6)?,
        provider_name: None,
        upstream_model: r.get(7)?,
        status: r.get::<_, i64>(8)?.clamp(0, 999) as u16,
        error_kind: r.get(9)?,
        attempts: n(10)? as u32,
        stream: r.get(11)?,
        prompt_tokens: n(12)?,
        completion_tokens: n(13)?,
        cached_tokens: n(14)?,
        reasoning_tokens: n(15)?,
        usage_source: r.get(16)?,
        cost: r.get::<_, Option<i64>>(17)?.map(micros_to_usd),
        ttft_ms: r.get(18)?,
        upstream_ms: r.get(19)?,
        total_ms: r.get(20)?,
        source: r.get(21)?,
        attempt_log,
        request_body: None,
        response_body: None,
    };
    Ok((row, ts, id))
}

/// A cursor is `<ts_ms>.<row id>` of the last row of the previous page.
fn parse_cursor(c: &str) -> Result<(i64, i64)> {
    c.split_once('.')
        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
        .ok_or_else(|| Error::invalid_param("cursor", "cursor is not one this API handed out"))
}
