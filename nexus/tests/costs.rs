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
