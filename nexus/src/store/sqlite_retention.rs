//! Retention on SQLite: batched deletes of old rows (rollups archived into each key's spend
//! first), sizes for the storage view, and giving free pages back (incremental vacuum).

use rusqlite::{params, Connection, OptionalExtension};

use crate::error::Result;
use crate::retention::StorageStats;

/// Deletes at most `limit` request rows that started before `before_ms`, oldest first.
pub(super) fn prune_usage(c: &Connection, before_ms: i64, limit: usize) -> Result<usize> {
    Ok(c.execute(
        "DELETE FROM usage WHERE id IN
             (SELECT id FROM usage WHERE ts_ms < ?1 ORDER BY ts_ms LIMIT ?2)",
        params![before_ms, limit as i64],
    )?)
}

/// Deletes at most `limit` rollup rows of hours before `before_ms`, adding their cost to their
/// key's archived spend in the same transaction.
pub(super) fn prune_rollups(c: &mut Connection, before_ms: i64, limit: usize) -> Result<usize> {
    let bucket = before_ms.div_euclid(3_600_000);
    let tx = c.transaction()?;
    // usage_hourly is WITHOUT ROWID: its rows are picked and deleted by their primary key.
    let n = {
        let mut pick = tx.prepare(
            "SELECT bucket, provider_id, model, key_id, endpoint, cost_micros FROM usage_hourly
             WHERE bucket < ?1 ORDER BY bucket LIMIT ?2",
        )?;
        let rows: Vec<(i64, i64, String, i64, String, i64)> = pick
            .query_map(params![bucket, limit as i64], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })?
            .collect::<rusqlite::Result<_>>()?;
        let mut archive = tx.prepare_cached(
            "INSERT INTO key_spend_archive (key_id, cost_micros) VALUES (?1, ?2)
             ON CONFLICT (key_id) DO UPDATE SET cost_micros = cost_micros + excluded.cost_micros",
        )?;
        let mut del = tx.prepare_cached(
            "DELETE FROM usage_hourly WHERE bucket = ?1 AND provider_id = ?2 AND model = ?3
                 AND key_id = ?4 AND endpoint = ?5",
        )?;
        for (b, p, m, k, e, cost) in &rows {
            if *cost != 0 && *k != 0 {
                archive.execute(params![k, cost])?;
            }
            del.execute(params![b, p, m, k, e])?;
        }
        rows.len()
    };
    tx.commit()?;
    Ok(n)
}

/// The oldest request row's start.
pub(super) fn oldest_usage_ms(c: &Connection) -> Result<Option<i64>> {
    Ok(c.query_row("SELECT min(ts_ms) FROM usage", [], |r| r.get(0))?)
}

/// The oldest conversation message's time.
pub(super) fn oldest_message_ms(c: &Connection) -> Result<Option<i64>> {
    Ok(c.query_row(
        "SELECT min(t) FROM (SELECT min(ts_ms) AS t FROM chat_messages
                             UNION ALL SELECT min(ts_ms) FROM request_bodies)",
        [],
        |r| r.get(0),
    )?)
}

/// Sizes and counts. Counts of the two big tables come from their row ids (retention deletes
/// the oldest rows, so the ids left are nearly contiguous): exact enough, and instant on 10M rows.
pub(super) fn storage(c: &Connection) -> Result<StorageStats> {
    let pragma = |p: &str| -> Result<i64> { Ok(c.pragma_query_value(None, p, |r| r.get(0))?) };
    let page = pragma("page_size")?.max(0) as u64;
    let pages = pragma("page_count")?.max(0) as u64;
    let free = pragma("freelist_count")?.max(0) as u64;
    let span = |table: &str| -> Result<u64> {
        let n: Option<i64> = c
            .query_row(
                &format!("SELECT max(id) - min(id) + 1 FROM {table}"),
                [],
                |r| r.get(0),
            )
            .optional()?
            .flatten();
        Ok(n.unwrap_or(0).max(0) as u64)
    };
    let count = |table: &str| -> Result<u64> {
        let n: i64 = c.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))?;
        Ok(n.max(0) as u64)
    };
    Ok(StorageStats {
        used_bytes: (pages - free.min(pages)) * page,
        free_bytes: free * page,
        requests: span("usage")?,
        messages: span("chat_messages")?,
        responses: count("responses")?,
        rollups: count("usage_hourly")?,
        oldest_request_ms: oldest_usage_ms(c)?,
        reclaims_space: pragma("auto_vacuum")? == 2,
    })
}

/// Gives at most `max_pages` free pages back to the file system; returns the bytes given.
pub(super) fn reclaim(c: &Connection, max_pages: u32) -> Result<u64> {
    let pragma = |p: &str| -> Result<i64> { Ok(c.pragma_query_value(None, p, |r| r.get(0))?) };
    if pragma("auto_vacuum")? != 2 {
        return Ok(0);
    }
    let page = pragma("page_size")?.max(0) as u64;
    let before = pragma("freelist_count")?.max(0) as u64;
    if before == 0 {
        return Ok(0);
    }
    c.execute_batch(&format!("PRAGMA incremental_vacuum({max_pages})"))?;
    let after = pragma("freelist_count")?.max(0) as u64;
    Ok(before.saturating_sub(after) * page)
}

/// Checkpoints the write-ahead log and truncates it. Readers in the middle of a transaction can
/// keep part of it; the busy handler waits for them a little, then it stays for the next pass.
pub(super) fn checkpoint(c: &Connection) -> Result<()> {
    let journal: String = c.pragma_query_value(None, "journal_mode", |r| r.get(0))?;
    if !journal.eq_ignore_ascii_case("wal") {
        return Ok(());
    }
    let busy: i64 = c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
    if busy != 0 {
        tracing::debug!("write-ahead log checkpoint left part of the log to readers");
    }
    Ok(())
}
