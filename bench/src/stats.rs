//! Stats: the writer's sustained records/s and the dashboard queries on a large database.

use std::sync::Arc;
use std::time::Instant;

use nexus::stats::{
    Bucket, GroupBy, MessageRecord, RequestQuery, RequestSource, StatsConfig, StatsWriter,
    StatusFilter, TimeseriesQuery, UsageRecord, UsageSource,
};
use nexus::store::{GroupKey, SqliteStore, Store};

use crate::{emit, quantiles, Args, Res};

const MODELS: [&str; 6] = [
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-4.1",
    "claude-sonnet",
    "deepseek-chat",
    "qwen-max",
];
/// Requests per conversation in the generated data.
const ROUNDS: u64 = 5;
/// One request in this many also keeps its two messages (the conversation view).
const MESSAGE_EVERY: u64 = 10;

fn record(i: u64, ts_ms: i64) -> UsageRecord {
    let m = (i % MODELS.len() as u64) as usize;
    let failed = i % 50 == 7;
    UsageRecord {
        ts_ms,
        request_id: format!("req-{i:016x}"),
        conversation_id: Some(format!("conv-{:012x}", i / ROUNDS)),
        key_id: Some((i % 20 + 1) as i64),
        provider_id: Some((m % 3 + 1) as i64),
        model: MODELS[m].to_owned(),
        upstream_model: Some(MODELS[m].to_owned()),
        prompt_tokens: 20 + i % 400,
        completion_tokens: 10 + i % 700,
        usage_source: UsageSource::Upstream,
        status: if failed { 502 } else { 200 },
        error_kind: failed.then(|| "upstream_error".to_owned()),
        latency_ms: 200.0 + (i % 1000) as f64,
        ttft_ms: i.is_multiple_of(2).then_some(50.0 + (i % 300) as f64),
        stream: i.is_multiple_of(2),
        source: RequestSource::Api,
        cost_micros: Some(100 * (i % 10) as i64),
        cached_tokens: 0,
        cache_write_tokens: 0,
        reasoning_tokens: 0,
        endpoint: nexus::usage::Endpoint::Chat,
        upstream_ms: Some(150.0 + (i % 1000) as f64),
        attempts: vec![nexus::usage::Attempt {
            provider_id: (m % 3 + 1) as i64,
            status: Some(if failed { 502 } else { 200 }),
            error_kind: failed.then(|| "upstream".to_owned()),
            ms: 150.0 + (i % 1000) as f64,
        }],
        bodies: None,
    }
}

fn messages(i: u64, ts_ms: i64) -> [MessageRecord; 2] {
    let base = MessageRecord {
        ts_ms,
        conversation_id: format!("conv-{:012x}", i / ROUNDS),
        provider_id: Some(1),
        model: MODELS[(i % MODELS.len() as u64) as usize].to_owned(),
        role: "user".into(),
        content: "What is the capital of France? Please answer in one short sentence.".into(),
        tokens: 15,
    };
    let answer = MessageRecord {
        role: "assistant".into(),
        content: "The capital of France is Paris.".into(),
        tokens: 8,
        ..base.clone()
    };
    [base, answer]
}

/// Runs `stats` and prints one JSON object.
pub fn run(a: &Args) -> Res<()> {
    let db = std::path::PathBuf::from(a.req("db")?);
    let rows: u64 = a.num("rows", 10_000_000)?;
    let batch: u64 = a.num("batch", 20_000u64)?.max(1);
    let writer_records: u64 = a.num("writer-records", 200_000)?;
    let max_gen = a.secs("max-gen-secs", 900.0)?;
    let reps: usize = a.num("reps", 5usize)?.max(1);

    // 1. The writer: records queued as the request path does (one usage record and two
    //    messages per request), then a flush; records/s over the whole time to commit.
    let writer = {
        let path = db.with_extension("writer.db");
        for ext in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{ext}", path.display()));
        }
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path)?);
        let w = StatsWriter::start(store, StatsConfig::default())?;
        let now = nexus::now_ms();
        let mut send_ns: Vec<u64> = Vec::with_capacity(writer_records as usize);
        let t = Instant::now();
        for i in 0..writer_records {
            let rec = record(i, now);
            let [u, asst] = messages(i, now);
            let s = Instant::now();
            w.message(u);
            w.message(asst);
            w.record(rec);
            send_ns.push(s.elapsed().as_nanos() as u64);
        }
        let queued = t.elapsed();
        w.flush()?;
        let total = t.elapsed();
        drop(w);
        for ext in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{ext}", path.display()));
        }
        serde_json::json!({
            "requests": writer_records,
            "rows_per_request": 3,
            "queue_secs": queued.as_secs_f64(),
            "commit_secs": total.as_secs_f64(),
            "requests_per_s": writer_records as f64 / total.as_secs_f64(),
            "enqueue_ms": quantiles(&mut send_ns),
        })
    };

    // 2. The large database, generated through the Store trait (kept between runs).
    let store = SqliteStore::open(&db)?;
    let have = store.summary()?.requests;
    let span_ms: i64 = 30 * 24 * 3_600_000;
    let end_ms = nexus::now_ms();
    let start_ms = end_ms - span_ms;
    let mut generated = 0u64;
    let t = Instant::now();
    if have < rows {
        let step = span_ms as f64 / rows as f64;
        let mut i = have;
        while i < rows {
            if t.elapsed() > max_gen {
                eprintln!("stats: generation stopped at {i} rows after {max_gen:?}");
                break;
            }
            let n = batch.min(rows - i);
            let mut usage = Vec::with_capacity(n as usize);
            let mut msgs = Vec::new();
            for j in i..i + n {
                let ts = start_ms + (j as f64 * step) as i64;
                usage.push(record(j, ts));
                if j.is_multiple_of(MESSAGE_EVERY) {
                    msgs.extend(messages(j, ts));
                }
            }
            store.insert_usage(&usage, &msgs)?;
            i += n;
            generated += n;
        }
    }
    let gen_secs = t.elapsed().as_secs_f64();
    let summary = store.summary()?;
    let total_rows = summary.requests;

    // 3. The dashboard's queries, each run `reps` times.
    let names = |k: GroupKey| match k {
        GroupKey::Model(m) => m.to_owned(),
        GroupKey::Provider(p) => format!("provider-{p}"),
        GroupKey::Key(k) => format!("key-{k}"),
    };
    let mut queries = serde_json::Map::new();
    let mut time = |name: String, f: &mut dyn FnMut() -> Res<usize>| -> Res<()> {
        let mut ns = Vec::with_capacity(reps);
        let mut size = 0;
        for _ in 0..reps {
            let s = Instant::now();
            size = f()?;
            ns.push(s.elapsed().as_nanos() as u64);
        }
        let q = quantiles(&mut ns);
        queries.insert(
            name,
            serde_json::json!({"median_ms": q["p50"], "max_ms": q["max"], "result_size": size}),
        );
        Ok(())
    };
    time("summary".into(), &mut || {
        Ok(store.summary()?.requests as usize)
    })?;
    let week_ago = (end_ms / 1000) - 7 * 86_400;
    for (bucket, bname) in [(Bucket::Hour, "hour"), (Bucket::Day, "day")] {
        for (group_by, gname) in [
            (None, "none"),
            (Some(GroupBy::Model), "model"),
            (Some(GroupBy::Provider), "provider"),
            (Some(GroupBy::Key), "key"),
        ] {
            for (since, sname) in [(week_ago, "7d"), (0, "all")] {
                let q = TimeseriesQuery {
                    bucket,
                    group_by,
                    since,
                };
                time(
                    format!("timeseries_{bname}_by_{gname}_{sname}"),
                    &mut || Ok(store.timeseries(&q, &names)?.points.len()),
                )?;
            }
        }
    }
    // A conversation that has messages, in the middle of the data.
    let mid = (total_rows / 2 / (ROUNDS * MESSAGE_EVERY)) * ROUNDS * MESSAGE_EVERY;
    let conv = format!("conv-{:012x}", mid / ROUNDS);
    time("conversation".into(), &mut || {
        Ok(store
            .conversation(&conv)?
            .map(|c| c.messages.len())
            .unwrap_or(0))
    })?;
    // The request explorer: the first page (50 rows, newest first) for each filter, then a page
    // deep in the data through a cursor.
    let explorer: [(&str, RequestQuery); 8] = [
        ("requests_first_page", RequestQuery::default()),
        (
            "requests_by_key",
            RequestQuery {
                key_id: Some(7),
                ..RequestQuery::default()
            },
        ),
        (
            "requests_by_model",
            RequestQuery {
                model: Some(MODELS[3].into()),
                ..RequestQuery::default()
            },
        ),
        (
            "requests_by_provider",
            RequestQuery {
                provider_id: Some(2),
                ..RequestQuery::default()
            },
        ),
        (
            "requests_errors",
            RequestQuery {
                status: Some(StatusFilter::Error),
                ..RequestQuery::default()
            },
        ),
        (
            "requests_error_kind",
            RequestQuery {
                error_kind: Some("upstream_error".into()),
                ..RequestQuery::default()
            },
        ),
        (
            "requests_by_endpoint",
            RequestQuery {
                endpoint: Some(nexus::usage::Endpoint::Chat),
                ..RequestQuery::default()
            },
        ),
        (
            "requests_last_week_by_key_and_model",
            RequestQuery {
                key_id: Some(3),
                model: Some(MODELS[1].into()),
                since: Some(week_ago),
                ..RequestQuery::default()
            },
        ),
    ];
    for (name, q) in explorer {
        time(name.into(), &mut || Ok(store.list_requests(&q)?.data.len()))?;
    }
    let deep = RequestQuery {
        cursor: Some(format!(
            "{}.{}",
            end_ms - (end_ms - start_ms) / 2,
            total_rows / 2
        )),
        ..RequestQuery::default()
    };
    time("requests_page_via_cursor_mid".into(), &mut || {
        Ok(store.list_requests(&deep)?.data.len())
    })?;
    let db_bytes = std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0);
    emit(&serde_json::json!({
        "writer": writer,
        "rows": total_rows,
        "generated_now": generated,
        "generate_secs": gen_secs,
        "generate_rows_per_s": if generated > 0 { generated as f64 / gen_secs } else { 0.0 },
        "db_bytes": db_bytes,
        "queries": queries,
        "reps": reps,
    }))
}
