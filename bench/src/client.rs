//! The library client's own overhead: `Hub::chat` / `Hub::chat_stream` against the same requests
//! sent straight to the mock with a bare pooled reqwest client, in the same run.
//!
//! What the Hub adds on top of one HTTP round trip is everything a library user pays for:
//! routing, decrypting the upstream key, building the upstream request, parsing the answer or
//! every SSE event into typed chunks, usage accounting and the stats record. The direct side
//! does the least a client must do: POST the body, read the answer to the end (and, for
//! streams, find the `data:` events in it).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use nexus::openai::ChatRequest;
use nexus::records::{NewModel, NewProvider};
use nexus::{Caller, Hub, HubOptions, RequestContext};

use crate::{emit, quantiles, Args, Res};

#[derive(Clone, Copy, PartialEq)]
enum Via {
    Direct,
    Hub,
}

struct Sample {
    total_ns: u64,
    first_ns: Option<u64>,
    chunks: u32,
}

/// Runs `client` and prints one JSON object per (mode, via, concurrency).
pub fn run(a: &Args) -> Res<()> {
    let url = a.req("url")?.trim_end_matches('/').to_owned();
    let model = a.str("model").unwrap_or("chunks20").to_owned();
    let requests: u64 = a.num("requests", 20_000)?;
    let warmup: u64 = a.num("warmup", 1_000)?;
    let conc: Vec<usize> = a
        .str("concurrency")
        .unwrap_or("1,32")
        .split(',')
        .map(|c| c.trim().parse::<usize>().map(|c| c.max(1)))
        .collect::<Result<_, _>>()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(a.num("threads", 1usize)?.max(1))
        .enable_all()
        .build()?;
    let dir = std::env::temp_dir().join(format!("nexus-bench-client-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let out = rt.block_on(async {
        let hub = Hub::open(dir.join("nexus.db"), HubOptions::default())?;
        let p = hub.registry().create_provider(NewProvider {
            name: "mock".into(),
            base_url: url.clone(),
            api_key: "sk-bench".into(),
            ..Default::default()
        })?;
        hub.registry().create_model(
            p.id,
            NewModel {
                name: model.clone(),
                ..Default::default()
            },
        )?;
        // The same pool settings the Hub uses are not public; a default reqwest client with
        // keep-alive is what a hand-written client would use.
        let http = reqwest::Client::builder().no_proxy().build()?;
        let endpoint = format!("{url}/v1/chat/completions");
        let mut results = Vec::new();
        for stream in [false, true] {
            for &c in &conc {
                for via in [Via::Direct, Via::Hub] {
                    let ctx = Arc::new(Ctx {
                        hub: hub.clone(),
                        http: http.clone(),
                        endpoint: endpoint.clone(),
                        model: model.clone(),
                        stream,
                        via,
                    });
                    // Warm the pool, the BPE tables and the allocator first.
                    drive(ctx.clone(), c, warmup).await?;
                    let t0 = Instant::now();
                    let mut samples = drive(ctx, c, requests).await?;
                    let secs = t0.elapsed().as_secs_f64();
                    results.push(summarize(&mut samples, stream, c, via, secs));
                }
            }
        }
        hub.flush()?;
        Ok::<_, crate::BoxError>(results)
    });
    let _ = std::fs::remove_dir_all(&dir);
    for r in out? {
        emit(&r)?;
    }
    Ok(())
}

struct Ctx {
    hub: Hub,
    http: reqwest::Client,
    endpoint: String,
    model: String,
    stream: bool,
    via: Via,
}

async fn drive(ctx: Arc<Ctx>, concurrency: usize, n: u64) -> Res<Vec<Sample>> {
    let issued = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let ctx = ctx.clone();
        let issued = issued.clone();
        tasks.push(tokio::spawn(async move {
            let mut v = Vec::new();
            while issued.fetch_add(1, Ordering::Relaxed) < n {
                v.push(one(&ctx).await?);
            }
            Ok::<_, crate::BoxError>(v)
        }));
    }
    let mut all = Vec::with_capacity(n as usize);
    for t in tasks {
        all.extend(t.await??);
    }
    Ok(all)
}

async fn post_direct(ctx: &Ctx, req: &ChatRequest) -> Res<reqwest::Response> {
    let r = ctx
        .http
        .post(&ctx.endpoint)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(req)?)
        .send()
        .await?;
    if !r.status().is_success() {
        return Err(format!("direct: HTTP {}", r.status()).into());
    }
    Ok(r)
}

async fn one(ctx: &Ctx) -> Res<Sample> {
    let mut req = ChatRequest::user(&ctx.model, "Say hello to the benchmark.");
    req.stream = Some(ctx.stream);
    let t0 = Instant::now();
    let ns = |t: Instant| t.elapsed().as_nanos() as u64;
    match (ctx.via, ctx.stream) {
        (Via::Direct, false) => {
            let r = post_direct(ctx, &req).await?;
            let _ = r.bytes().await?;
            Ok(Sample {
                total_ns: ns(t0),
                first_ns: None,
                chunks: 0,
            })
        }
        (Via::Direct, true) => {
            let r = post_direct(ctx, &req).await?;
            let mut body = r.bytes_stream();
            let (mut first, mut events) = (None, 0u32);
            while let Some(b) = body.next().await {
                let b = b?;
                let n = b.windows(6).filter(|w| w == b"data: ").count() as u32;
                if n > 0 && first.is_none() {
                    first = Some(ns(t0));
                }
                events += n;
            }
            // Every `data:` event on the wire, `[DONE]` included.
            Ok(Sample {
                total_ns: ns(t0),
                first_ns: first,
                chunks: events,
            })
        }
        (Via::Hub, false) => {
            let caller = Caller::Admin { provider_id: None };
            let _ = ctx.hub.chat(caller, req, RequestContext::default()).await?;
            Ok(Sample {
                total_ns: ns(t0),
                first_ns: None,
                chunks: 0,
            })
        }
        (Via::Hub, true) => {
            let caller = Caller::Admin { provider_id: None };
            let mut s = ctx
                .hub
                .chat_stream(caller, req, RequestContext::default())
                .await?;
            let (mut first, mut chunks) = (None, 0u32);
            while let Some(c) = s.next().await {
                let c = c?;
                chunks += 1;
                if first.is_none() && c.delta().is_some_and(|d| !d.is_empty()) {
                    first = Some(ns(t0));
                }
            }
            Ok(Sample {
                total_ns: ns(t0),
                first_ns: first,
                chunks,
            })
        }
    }
}

fn summarize(s: &mut [Sample], stream: bool, c: usize, via: Via, secs: f64) -> serde_json::Value {
    let mut total: Vec<u64> = s.iter().map(|x| x.total_ns).collect();
    let mut first: Vec<u64> = s.iter().filter_map(|x| x.first_ns).collect();
    let chunks = s.iter().map(|x| u64::from(x.chunks)).sum::<u64>() as f64 / s.len().max(1) as f64;
    serde_json::json!({
        "bench": "client",
        "mode": if stream { "stream" } else { "nonstream" },
        "via": if via == Via::Hub { "hub" } else { "direct" },
        "concurrency": c,
        "requests": s.len(),
        "rps": s.len() as f64 / secs.max(Duration::from_nanos(1).as_secs_f64()),
        "latency_ms": quantiles(&mut total),
        "first_chunk_ms": quantiles(&mut first),
        // Direct: `data:` events on the wire; hub: typed chunks handed to the caller.
        "chunks_per_response": chunks,
    })
}
