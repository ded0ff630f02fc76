//! Retention in the core: rollups past their retention are deleted with their spend archived
//! (a `total` budget still counts it, a monthly one never did), request rows and bodies go by
//! age, and the size cap deletes the oldest bodies, then request rows, until the database fits.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{fast_options, Env};
use nexus::records::NewKey;
use nexus::stats::{MessageRecord, RequestSource, UsageRecord, UsageSource};
use nexus::BudgetPeriod;

const DAY: i64 = 86_400_000;

fn row(key_id: i64, ts_ms: i64, i: i64, cost: i64) -> UsageRecord {
    UsageRecord {
        ts_ms,
        request_id: format!("r-{ts_ms}-{i}"),
        conversation_id: None,
        key_id: Some(key_id),
        provider_id: Some(1),
        model: "m".into(),
        upstream_model: None,
        prompt_tokens: 10,
        completion_tokens: 5,
        usage_source: UsageSource::Upstream,
        status: 200,
        error_kind: None,
        latency_ms: 1.0,
        ttft_ms: None,
        stream: false,
        source: RequestSource::Library,
        cost_micros: Some(cost),
        cached_tokens: 0,
        cache_write_tokens: 0,
        reasoning_tokens: 0,
        endpoint: nexus::usage::Endpoint::Chat,
        upstream_ms: None,
        attempts: vec![],
        bodies: None,
    }
}

/// Waits for the pass the hub runs at start, so it cannot take this test's rows from under it.
fn after_the_start_pass(env: &Env) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while env.hub.storage().unwrap().last_prune.is_none() {
        assert!(std::time::Instant::now() < deadline, "no pass at start");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn old_rollups_go_but_a_total_budget_keeps_their_spend() {
    let env = Env::new(fast_options());
    after_the_start_pass(&env);
    let total = env
        .hub
        .registry()
        .create_key(NewKey {
            name: "total".into(),
            budget_usd: Some(100.0),
            budget_period: Some(BudgetPeriod::Total),
            ..NewKey::default()
        })
        .unwrap()
        .record
        .id;
    let monthly = env
        .hub
        .registry()
        .create_key(NewKey {
            name: "monthly".into(),
            budget_usd: Some(100.0),
            ..NewKey::default()
        })
        .unwrap()
        .record
        .id;
    let now = nexus::now_ms();
    let store = env.hub.registry().store().clone();
    // 800 days ago (past the 730-day rollup retention) and now, for both keys.
    let mut rows = Vec::new();
    for k in [total, monthly] {
        for i in 0..10 {
            rows.push(row(k, now - 800 * DAY + i * 3_600_000, i, 1_000_000));
            rows.push(row(k, now - i, i, 10_000));
        }
    }
    store.insert_usage(&rows, &[]).unwrap();
    let before = env.hub.key_spend(total).unwrap().spent_usd;
    assert!((before - 10.1).abs() < 1e-9, "{before}");
    let report = env.hub.prune_now().unwrap();
    assert_eq!(report.rollups, 20, "{report:?}");
    assert_eq!(
        report.requests, 20,
        "request rows go after 90 days: {report:?}"
    );
    let after = env.hub.key_spend(total).unwrap();
    assert!((after.spent_usd - before).abs() < 1e-9, "{after:?}");
    let m = env.hub.key_spend(monthly).unwrap();
    assert!((m.spent_usd - 0.1).abs() < 1e-9, "{m:?}");
    // The dashboard keeps what the rollups still hold.
    let s = env.hub.summary().unwrap();
    assert_eq!(s.requests, 20);
    // Nothing left to do: a second pass deletes nothing.
    let again = env.hub.prune_now().unwrap();
    assert_eq!(again.rollups + again.requests + again.messages, 0);
    assert!(env.hub.storage().unwrap().last_prune.is_some());
}

#[test]
fn the_size_cap_deletes_the_oldest_bodies_then_request_rows() {
    let mut opts = fast_options();
    opts.stats.max_db_bytes = Some(2 << 20);
    let env = Env::new(opts);
    after_the_start_pass(&env);
    let now = nexus::now_ms();
    let store = env.hub.registry().store().clone();
    let text = "y".repeat(4096);
    // About 12 MiB of recent bodies and 20,000 recent request rows: within every day limit.
    let msgs: Vec<MessageRecord> = (0..3000)
        .map(|i| MessageRecord {
            ts_ms: now - 3 * DAY + i * 60_000,
            conversation_id: format!("c{}", i / 10),
            provider_id: Some(1),
            model: "m".into(),
            role: "user".into(),
            content: text.clone(),
            tokens: 1,
        })
        .collect();
    let rows: Vec<UsageRecord> = (0..20_000)
        .map(|i| row(0, now - 2 * DAY + i * 1000, i, 1))
        .collect();
    store.insert_usage(&rows, &msgs).unwrap();
    let big = env.hub.storage().unwrap();
    assert!(big.stats.used_bytes > 10 << 20, "{big:?}");
    assert!(big.stats.reclaims_space, "{big:?}");
    assert!(big.stats.free_bytes < 1 << 20, "{big:?}");
    let r = env.hub.prune_now().unwrap();
    assert_eq!(r.messages + r.requests, 0, "nothing is old: {r:?}");
    assert_eq!(r.capped_bodies, 3000, "{r:?}");
    let s = env.hub.storage().unwrap();
    assert!(s.stats.used_bytes <= 2 << 20, "{s:?}");
    assert_eq!(s.stats.messages, 0);
    // Request rows went only if the bodies were not enough, oldest first.
    if r.capped_requests > 0 {
        assert!(s.stats.oldest_request_ms.unwrap() > now - 2 * DAY);
    }
    assert!(r.reclaimed_bytes > 8 << 20, "{r:?}");
}
