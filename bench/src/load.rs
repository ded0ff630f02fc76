//! Closed-loop HTTP/1.1 load generator over hyper: one keep-alive connection per worker.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::Request;
use hyper_util::rt::TokioIo;

use crate::{emit, quantiles, Args, Res};

/// The wire format a load speaks: the body it sends, where, and what a success looks like.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    /// OpenAI chat completions.
    OpenAi,
    /// Anthropic Messages.
    Anthropic,
    /// Gemini `generateContent`.
    Gemini,
    /// OpenAI Responses.
    Responses,
}

impl Format {
    fn parse(s: Option<&str>) -> Res<Format> {
        match s {
            None | Some("openai") => Ok(Format::OpenAi),
            Some("anthropic") => Ok(Format::Anthropic),
            Some("gemini") => Ok(Format::Gemini),
            Some("responses") => Ok(Format::Responses),
            Some(o) => Err(format!(
                "--format must be openai, anthropic, gemini or responses, not '{o}'"
            )
            .into()),
        }
    }

    fn body(self, model: &str, content: &str, stream: bool) -> serde_json::Value {
        match self {
            Format::OpenAi => serde_json::json!({
                "model": model,
                "messages": [{"role": "user", "content": content}],
                "stream": stream,
            }),
            Format::Anthropic => serde_json::json!({
                "model": model,
                "max_tokens": 1024,
                "messages": [{"role": "user", "content": content}],
                "stream": stream,
            }),
            Format::Gemini => serde_json::json!({
                "contents": [{"role": "user", "parts": [{"text": content}]}],
            }),
            // `store: false`, as Codex CLI sends: the bench measures the translation, not SQLite.
            Format::Responses => serde_json::json!({
                "model": model,
                "input": content,
                "stream": stream,
                "store": false,
            }),
        }
    }

    fn path(self, model: &str, stream: bool) -> String {
        match (self, stream) {
            (Format::OpenAi, _) => "/v1/chat/completions".into(),
            (Format::Anthropic, _) => "/v1/messages".into(),
            (Format::Responses, _) => "/v1/responses".into(),
            (Format::Gemini, false) => format!("/v1beta/models/{model}:generateContent"),
            (Format::Gemini, true) => {
                format!("/v1beta/models/{model}:streamGenerateContent?alt=sse")
            }
        }
    }

    /// The credential and version headers the format's clients send.
    fn headers(self, key: Option<&str>) -> Vec<(&'static str, String)> {
        let secret = key.unwrap_or("sk-bench").to_owned();
        match self {
            Format::OpenAi | Format::Responses => key
                .map(|k| vec![("authorization", format!("Bearer {k}"))])
                .unwrap_or_default(),
            Format::Anthropic => vec![
                ("x-api-key", secret),
                ("anthropic-version", "2023-06-01".into()),
            ],
            Format::Gemini => vec![("x-goog-api-key", secret)],
        }
    }

    /// A field every successful non-streaming answer has.
    fn answer_marker(self) -> &'static [u8] {
        match self {
            Format::OpenAi => b"\"choices\"",
            Format::Anthropic => b"\"content\"",
            Format::Gemini => b"\"candidates\"",
            Format::Responses => b"\"output\"",
        }
    }
}

struct Cfg {
    label: String,
    addr: String,
    path: String,
    headers: Vec<(&'static str, String)>,
    answer_marker: &'static [u8],
    body: Bytes,
    stream: bool,
    concurrency: usize,
    requests: u64,
    duration: Duration,
    warmup: Duration,
    ramp: Duration,
    timeout: Duration,
}

#[derive(Default)]
struct Out {
    lat_ns: Vec<u64>,
    ttfb_ns: Vec<u64>,
    events: Vec<u32>,
    frames: Vec<u32>,
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    bytes: u64,
    window_done: u64,
}

struct Shared {
    issued: AtomicU64,
    /// Streams that have received their first event and not yet ended.
    open: AtomicI64,
    max_open: AtomicI64,
}

/// Runs `load` and prints its JSON result.
pub fn run(a: &Args) -> Res<()> {
    let url = a.req("url")?;
    let addr = url
        .strip_prefix("http://")
        .ok_or("--url must start with http://")?
        .trim_end_matches('/')
        .to_owned();
    let model = a.req("model")?;
    let stream = a.flag("stream");
    let content = a.str("message").unwrap_or("Say hello to the benchmark.");
    let format = Format::parse(a.str("format"))?;
    let body = format.body(model, content, stream);
    let cfg = Cfg {
        label: a.str("label").unwrap_or(model).to_owned(),
        addr,
        path: a
            .str("path")
            .map_or_else(|| format.path(model, stream), str::to_owned),
        headers: format.headers(a.str("key")),
        answer_marker: format.answer_marker(),
        body: Bytes::from(serde_json::to_vec(&body)?),
        stream,
        concurrency: a.num("concurrency", 32usize)?.max(1),
        requests: a.num("requests", 100_000u64)?,
        duration: a.secs("duration", 10.0)?,
        warmup: a.secs("warmup", 1.0)?,
        ramp: a.secs("ramp", 0.0)?,
        timeout: a.secs("timeout", 60.0)?,
    };
    let threads: usize = a.num("threads", 1)?;
    let rt = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    };
    let result = rt.block_on(run_async(Arc::new(cfg)))?;
    emit(&result)
}

async fn run_async(cfg: Arc<Cfg>) -> Res<serde_json::Value> {
    let shared = Arc::new(Shared {
        issued: AtomicU64::new(0),
        open: AtomicI64::new(0),
        max_open: AtomicI64::new(0),
    });
    let t0 = Instant::now();
    let measure_from = t0 + cfg.warmup;
    let deadline = t0 + cfg.warmup + cfg.duration;
    // Reports when every worker holds an open stream (the 10,000 open streams test waits on it).
    let monitor = {
        let shared = shared.clone();
        let want = cfg.concurrency as i64;
        tokio::spawn(async move {
            let mut said = false;
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let open = shared.open.load(Ordering::Relaxed);
                if !said && open >= want {
                    eprintln!("all-open {open} after {:.1}s", t0.elapsed().as_secs_f64());
                    said = true;
                }
            }
        })
    };
    let mut handles = Vec::with_capacity(cfg.concurrency);
    for i in 0..cfg.concurrency {
        let cfg = cfg.clone();
        let shared = shared.clone();
        let start_at = t0 + cfg.ramp.mul_f64(i as f64 / cfg.concurrency as f64);
        handles.push(tokio::spawn(async move {
            tokio::time::sleep_until(start_at.into()).await;
            worker(&cfg, &shared, measure_from, deadline).await
        }));
    }
    let mut all = Out::default();
    for h in handles {
        let o = h.await?;
        all.lat_ns.extend(o.lat_ns);
        all.ttfb_ns.extend(o.ttfb_ns);
        all.events.extend(o.events);
        all.frames.extend(o.frames);
        all.ok += o.ok;
        all.errors += o.errors;
        all.bytes += o.bytes;
        all.window_done += o.window_done;
        if all.first_error.is_none() {
            all.first_error = o.first_error;
        }
    }
    monitor.abort();
    let end = Instant::now();
    // Throughput over the measured window: requests that started after the warm-up, over the time
    // from the warm-up's end to the last answer.
    let window = end.saturating_duration_since(measure_from).as_secs_f64();
    let rps = if window > 0.0 {
        all.window_done as f64 / window
    } else {
        0.0
    };
    let ev = |v: &[u32]| {
        if v.is_empty() {
            serde_json::Value::Null
        } else {
            let min = v.iter().copied().min().unwrap_or(0);
            let max = v.iter().copied().max().unwrap_or(0);
            let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
            serde_json::json!({"min": min, "max": max, "mean": mean})
        }
    };
    Ok(serde_json::json!({
        "label": cfg.label,
        "target": cfg.addr,
        "stream": cfg.stream,
        "concurrency": cfg.concurrency,
        "ok": all.ok,
        "errors": all.errors,
        "first_error": all.first_error,
        "measured": all.window_done,
        "secs": window,
        "rps": rps,
        "latency_ms": quantiles(&mut all.lat_ns),
        "ttfb_ms": quantiles(&mut all.ttfb_ns),
        "events": ev(&all.events),
        "frames": ev(&all.frames),
        "bytes": all.bytes,
        "max_open": shared.max_open.load(Ordering::Relaxed),
    }))
}

async fn connect(addr: &str) -> Res<SendRequest<Full<Bytes>>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

async fn worker(cfg: &Cfg, shared: &Shared, measure_from: Instant, deadline: Instant) -> Out {
    let mut out = Out::default();
    let mut sender: Option<SendRequest<Full<Bytes>>> = None;
    loop {
        if Instant::now() >= deadline
            || shared.issued.fetch_add(1, Ordering::Relaxed) >= cfg.requests
        {
            break;
        }
        let s = match sender.as_mut() {
            Some(s) => s,
            None => match connect(&cfg.addr).await {
                Ok(s) => sender.insert(s),
                Err(e) => {
                    fail(&mut out, format!("connect: {e}"));
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let start = Instant::now();
        let r = tokio::time::timeout(cfg.timeout, one(cfg, shared, s, start)).await;
        match r {
            Ok(Ok(o)) => {
                out.ok += 1;
                if start >= measure_from {
                    out.window_done += 1;
                    out.lat_ns.push(o.total.as_nanos() as u64);
                    if let Some(t) = o.ttfb {
                        out.ttfb_ns.push(t.as_nanos() as u64);
                    }
                    if cfg.stream {
                        out.events.push(o.events);
                        out.frames.push(o.frames);
                    }
                    out.bytes += o.bytes;
                }
            }
            Ok(Err(e)) => {
                fail(&mut out, e.to_string());
                sender = None;
            }
            Err(_) => {
                fail(&mut out, format!("timeout after {:?}", cfg.timeout));
                sender = None;
            }
        }
    }
    out
}

fn fail(out: &mut Out, msg: String) {
    out.errors += 1;
    if out.first_error.is_none() {
        out.first_error = Some(msg);
    }
}

struct One {
    total: Duration,
    ttfb: Option<Duration>,
    events: u32,
    frames: u32,
    bytes: u64,
}

/// Counts lines that start with `data:` (an SSE event each) in a complete body.
fn count_events(body: &[u8]) -> u32 {
    body.split(|&b| b == b'\n')
        .filter(|l| l.starts_with(b"data:"))
        .count() as u32
}

async fn one(
    cfg: &Cfg,
    shared: &Shared,
    s: &mut SendRequest<Full<Bytes>>,
    start: Instant,
) -> Res<One> {
    s.ready().await?;
    let mut rb = Request::post(cfg.path.as_str())
        .header(HOST, cfg.addr.as_str())
        .header(CONTENT_TYPE, "application/json");
    for (name, value) in &cfg.headers {
        rb = rb.header(*name, value.as_str());
    }
    let req = rb.body(Full::new(cfg.body.clone()))?;
    let resp = s.send_request(req).await?;
    let status = resp.status();
    let mut body = resp.into_body();
    let mut buf: Vec<u8> = Vec::new();
    let mut ttfb = None;
    let mut frames = 0u32;
    let mut opened = false;
    let mut result = Ok(());
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                result = Err(e);
                break;
            }
        };
        if let Some(d) = frame.data_ref() {
            if d.is_empty() {
                continue;
            }
            frames += 1;
            buf.extend_from_slice(d);
            // Time to first byte of a stream is the time to its first `data:` event (the mock
            // sends a keep-alive comment first); for a JSON answer it is the first body byte.
            if ttfb.is_none() && (!cfg.stream || has_event(&buf)) {
                ttfb = Some(start.elapsed());
                if cfg.stream {
                    opened = true;
                    let n = shared.open.fetch_add(1, Ordering::Relaxed) + 1;
                    shared.max_open.fetch_max(n, Ordering::Relaxed);
                }
            }
        }
    }
    if opened {
        shared.open.fetch_sub(1, Ordering::Relaxed);
    }
    let total = start.elapsed();
    result?;
    if !status.is_success() {
        let text = String::from_utf8_lossy(&buf[..buf.len().min(300)]).into_owned();
        return Err(format!("HTTP {status}: {text}").into());
    }
    let events = if cfg.stream {
        let n = count_events(&buf);
        if n == 0 {
            return Err("stream answered without events".into());
        }
        n
    } else {
        let m = cfg.answer_marker;
        if !buf.windows(m.len()).any(|w| w == m) {
            return Err("answer is not a completion".into());
        }
        0
    };
    Ok(One {
        total,
        ttfb,
        events,
        frames,
        bytes: buf.len() as u64,
    })
}

fn has_event(buf: &[u8]) -> bool {
    buf.starts_with(b"data:") || buf.windows(6).any(|w| w == b"\ndata:")
}
