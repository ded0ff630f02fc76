//! Cost per request through the hub: catalog prices for a known model (cached tokens at the
//! cache price), a model's own prices over the catalog's, no cost (never $0) for an unknown
//! model, and the summary's `cost` and `unpriced_requests`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{fast_options, Env};
use nexus::openai::ChatRequest;
use nexus::prices::PriceSource;
use nexus::records::{ModelPatch, ProviderOptions};
use nexus::testing::MockUpstream;
use nexus::{Caller, RequestContext};

/// `(prompt, completion, cached, cost_micros)` of every usage row.
fn costs(env: &Env) -> Vec<(i64, i64, i64, Option<i64>)> {
    env.hub.flush().unwrap();
    let c = rusqlite::Connection::open(&env.db).unwrap();
    let mut st = c
        .prepare("SELECT prompt_tokens, completion_tokens, cached_tokens, cost_micros FROM usage ORDER BY id")
        .unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

#[tokio::test]
async fn requests_are_costed_at_the_effective_prices() {
    let mock = MockUpstream::start().await.unwrap();
    let env = Env::new(fast_options());
    let pid = env.provider(
        "p",
        &mock,
        ProviderOptions::default(),
        &[
            // The mock reads its behaviour from the upstream name; the catalog prices the
            // client name (the upstream name is no model it knows).
            ("gpt-4o", "up-cached"),
            ("claude-sonnet-4-5-20250929", "up-plain"),
            ("my-private-model", "up-private"),
        ],
    );
    let models = env.hub.registry().models(Some(pid)).unwrap();
    let by = |n: &str| models.iter().find(|m| m.name == n).unwrap().clone();
    assert_eq!(by("gpt-4o").price_source, Some(PriceSource::Catalog));
    assert_eq!(by("gpt-4o").prices.unwrap().cached_input, Some(1.25));
    assert_eq!(
        by("claude-sonnet-4-5-20250929").price_source,
        Some(PriceSource::Catalog)
    );
    assert_eq!(by("my-private-model").price_source, None);

    let key = env.key();
    for m in ["gpt-4o", "claude-sonnet-4-5-20250929", "my-private-model"] {
        env.hub
            .chat(
                Caller::Key(key.clone()),
                ChatRequest::user(m, "one two three"),
                RequestContext::default(),
            )
            .await
            .unwrap();
    }
    let rows = costs(&env);
    // gpt-4o: $2.50 / $1.25 cached / $10 per million.
    let (p, c, cached, cost) = rows[0];
    assert!(cached > 0, "the mock's `cached` word reports cache reads");
    let want = ((p - cached) as f64 * 2.5 + cached as f64 * 1.25 + c as f64 * 10.0).round() as i64;
    assert_eq!(cost, Some(want), "{rows:?}");
    // claude-sonnet-4-5 by its dated snapshot: $3 / $15.
    let (p, c, _, cost) = rows[1];
    assert_eq!(
        cost,
        Some((p as f64 * 3.0 + c as f64 * 15.0).round() as i64)
    );
    // Unknown: no cost, not $0.
    assert_eq!(rows[2].3, None);
    let s = env.hub.summary().unwrap();
    assert_eq!(s.unpriced_requests, 1);
    assert!((s.cost - (rows[0].3.unwrap() + rows[1].3.unwrap()) as f64 / 1e6).abs() < 1e-12);

    // A price set on the model overrides the catalog from the next request on; history stays.
    let private = by("my-private-model");
    let m = env
        .hub
        .registry()
        .update_model(
            private.id,
            ModelPatch {
                input_price: Some(Some(1.0)),
                output_price: Some(Some(2.0)),
                ..ModelPatch::default()
            },
        )
        .unwrap();
    assert_eq!(m.price_source, Some(PriceSource::Model));
    env.hub
        .chat(
            Caller::Key(key),
            ChatRequest::user("my-private-model", "four five"),
            RequestContext::default(),
        )
        .await
        .unwrap();
    let rows = costs(&env);
    assert_eq!(rows[2].3, None, "history is not repriced");
    let (p, c, _, cost) = rows[3];
    assert_eq!(cost, Some(p + 2 * c));
    assert_eq!(env.hub.summary().unwrap().unpriced_requests, 1);

    // Negative or non-finite prices are refused.
    for bad in [-1.0, f64::NAN] {
        let e = env
            .hub
            .registry()
            .update_model(
                private.id,
                ModelPatch {
                    cached_input_price: Some(Some(bad)),
                    ..ModelPatch::default()
                },
            )
            .unwrap_err();
        assert_eq!(e.http_status(), 400, "{e}");
    }
}

/// A key's budget spend is read back from the store when a hub opens (it survives a restart),
/// streams and plain answers both count, every result carries its cost, and a total budget
/// refuses with `insufficient_quota` once spent.
#[tokio::test]
async fn budgets_count_every_answer_and_survive_a_restart() {
    use nexus::records::{KeyPatch, NewKey};
    use nexus::{BudgetPeriod, ErrorKind};

    let mock = MockUpstream::start().await.unwrap();
    let env = Env::new(fast_options());
    let pid = env.provider(
        "p",
        &mock,
        ProviderOptions::default(),
        &[("priced", "up-echo")],
    );
    let model = env.hub.registry().models(Some(pid)).unwrap()[0].clone();
    env.hub
        .registry()
        .update_model(
            model.id,
            ModelPatch {
                input_price: Some(Some(1000.0)),
                output_price: Some(Some(1000.0)),
                ..ModelPatch::default()
            },
        )
        .unwrap();
    let created = env
        .hub
        .registry()
        .create_key(NewKey {
            name: "total".into(),
            budget_usd: Some(0.05),
            budget_period: Some(BudgetPeriod::Total),
            ..NewKey::default()
        })
        .unwrap();
    let key = created.key.clone();
    let id = created.record.id;

    // One message of two words: the mock reports 10 prompt and 2 completion tokens, $0.012.
    let r = env
        .hub
        .chat(
            Caller::Key(key.clone()),
            ChatRequest::user("priced", "two words"),
            RequestContext::default(),
        )
        .await
        .unwrap();
    assert_eq!(r.cost_micros, Some(12_000));
    assert_eq!(r.cost_usd(), Some(0.012));
    let mut req = ChatRequest::user("priced", "two words");
    req.extra.insert("stream".into(), true.into());
    let mut s = env
        .hub
        .chat_stream(Caller::Key(key.clone()), req, RequestContext::default())
        .await
        .unwrap();
    while s.next().await.is_some() {}
    assert_eq!(s.summary().unwrap().cost_usd, Some(0.012));
    drop(s);
    let spend = env.hub.key_spend(id).unwrap();
    assert_eq!(spend.period, BudgetPeriod::Total);
    assert_eq!((spend.period_start, spend.period_end), (0, None));
    assert!((spend.spent_usd - 0.024).abs() < 1e-12, "{spend:?}");
    assert_eq!(spend.budget_left_usd, Some(0.026));
    assert!(!spend.budget_reached);
    drop(env.hub);

    // Reopened: the spend is the store's, and the budget goes on from there.
    let hub = nexus::Hub::open(&env.db, fast_options()).unwrap();
    assert!((hub.key_spend(id).unwrap().spent_usd - 0.024).abs() < 1e-12);
    let mut answered = 0;
    let err = loop {
        match hub
            .chat(
                Caller::Key(key.clone()),
                ChatRequest::user("priced", "two words"),
                RequestContext::default(),
            )
            .await
        {
            Ok(_) => answered += 1,
            Err(e) => break e,
        }
        assert!(answered < 10, "never refused");
    };
    // 0.024 + 3 × 0.012 = 0.060: the third answer was admitted at 0.048 < 0.05.
    assert_eq!(answered, 3);
    assert_eq!(err.kind(), ErrorKind::QuotaExceeded);
    assert_eq!(err.http_status(), 429);
    assert_eq!(err.retry_after(), None, "a total budget never rolls over");
    assert_eq!(err.to_openai_json()["error"]["code"], "insufficient_quota");
    let spend = hub.key_spend(id).unwrap();
    assert!(spend.budget_reached && spend.budget_left_usd == Some(0.0));
    assert_eq!(hub.budget_counters().refused, 1);

    // An unpriced model spends nothing and is not refused for cost it cannot have.
    hub.registry()
        .update_key(
            id,
            KeyPatch {
                budget_usd: Some(None),
                soft_budget_usd: Some(Some(1.0)),
                ..KeyPatch::default()
            },
        )
        .unwrap();
    let r = hub
        .chat(
            Caller::Key(key),
            ChatRequest::user("priced", "two words"),
            RequestContext::default(),
        )
        .await
        .unwrap();
    assert_eq!(r.cost_micros, Some(12_000), "no hard budget: served again");
    assert_eq!(hub.key_spend(id).unwrap().budget_usd, None);
}

/// Repricing recomputes recorded costs at the current prices (priced rows and formerly
/// unpriced ones), says how many rows changed, keeps the rollups in step, and leaves the rows
/// of a deleted model alone.
#[tokio::test]
async fn repricing_is_explicit_and_counted() {
    use nexus::usage::RepriceQuery;

    let mock = MockUpstream::start().await.unwrap();
    let env = Env::new(fast_options());
    let pid = env.provider(
        "p",
        &mock,
        ProviderOptions::default(),
        &[("private-a", "up-echo"), ("private-b", "up-echo")],
    );
    let key = env.key();
    for m in ["private-a", "private-a", "private-b"] {
        env.hub
            .chat(
                Caller::Key(key.clone()),
                ChatRequest::user(m, "two words"),
                RequestContext::default(),
            )
            .await
            .unwrap();
    }
    assert_eq!(env.hub.summary().unwrap().unpriced_requests, 3);
    let models = env.hub.registry().models(Some(pid)).unwrap();
    let a = models.iter().find(|m| m.name == "private-a").unwrap();
    let b = models.iter().find(|m| m.name == "private-b").unwrap();
    env.hub
        .registry()
        .update_model(
            a.id,
            ModelPatch {
                input_price: Some(Some(1.0)),
                output_price: Some(Some(2.0)),
                ..ModelPatch::default()
            },
        )
        .unwrap();
    env.hub.registry().delete_model(b.id).unwrap();
    let dry = env
        .hub
        .reprice(&RepriceQuery {
            dry_run: true,
            ..RepriceQuery::default()
        })
        .unwrap();
    assert_eq!((dry.rows_examined, dry.rows_changed), (3, 2), "{dry:?}");
    assert_eq!(env.hub.summary().unwrap().unpriced_requests, 3, "dry run");
    let done = env.hub.reprice(&RepriceQuery::default()).unwrap();
    assert_eq!(done.rows_changed, 2);
    // 10 prompt tokens at $1/M and 2 completion at $2/M: 14 micro-dollars each.
    assert_eq!(done.cost_after_usd, 28e-6);
    assert_eq!(
        done.unpriced_rows, 1,
        "private-b is gone: its row stays unpriced"
    );
    let s = env.hub.summary().unwrap();
    assert_eq!(s.unpriced_requests, 1);
    assert!((s.cost - 28e-6).abs() < 1e-12);
    let rows = costs(&env);
    assert_eq!(
        rows.iter().map(|r| r.3).collect::<Vec<_>>(),
        [Some(14), Some(14), None]
    );
    // Filtered by model, with nothing left to change.
    let again = env
        .hub
        .reprice(&RepriceQuery {
            model: Some("private-a".into()),
            ..RepriceQuery::default()
        })
        .unwrap();
    assert_eq!((again.rows_examined, again.rows_changed), (2, 0));
}

/// A stream whose upstream sends no usage is costed from the hub's own count: the prompt as
/// OpenAI counts it and the streamed text, at the model's prices.
#[tokio::test]
async fn a_stream_without_upstream_usage_is_costed_from_the_estimate() {
    let mock = MockUpstream::start().await.unwrap();
    let env = Env::new(fast_options());
    let pid = env.provider(
        "p",
        &mock,
        ProviderOptions::default(),
        &[("gpt-4o", "up-nousage")],
    );
    let m = env.hub.registry().models(Some(pid)).unwrap()[0].clone();
    assert_eq!(m.price_source, Some(PriceSource::Catalog));
    let mut req = ChatRequest::user("gpt-4o", "several words of text");
    req.extra.insert("stream".into(), true.into());
    let messages = req.messages.clone();
    let mut s = env
        .hub
        .chat_stream(Caller::Key(env.key()), req, RequestContext::default())
        .await
        .unwrap();
    let mut text = String::new();
    while let Some(c) = s.next().await {
        text.push_str(c.unwrap().delta().unwrap_or(""));
    }
    let summary = s.summary().unwrap();
    assert_eq!(summary.usage_source, nexus::usage::UsageSource::Estimate);
    let prompt = env.hub.count_messages("gpt-4o", &messages).tokens;
    let completion = env.hub.count_text("gpt-4o", &text).tokens;
    assert_eq!(
        (summary.usage.prompt_tokens, summary.usage.completion_tokens),
        (prompt, completion)
    );
    // gpt-4o: $2.50 in, $10 out per million.
    let want = (prompt as f64 * 2.5 + completion as f64 * 10.0).round() as i64;
    drop(s);
    assert_eq!(costs(&env)[0].3, Some(want));
    assert!((summary.cost_usd.unwrap() - want as f64 / 1e6).abs() < 1e-12);
}
