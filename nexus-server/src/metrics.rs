//! Prometheus metrics, kept in atomics and a few small maps; rendered as text at `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A fixed-bucket histogram of seconds.
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, seconds: f64) {
        for (i, b) in BUCKETS.iter().enumerate() {
            if seconds <= *b {
                self.counts[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{b}\"}} {}",
                self.counts[i].load(Ordering::Relaxed)
            );
        }
        let n = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {n}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {n}");
    }
}

/// All server metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    errors: Mutex<BTreeMap<String, u64>>,
    /// Request latency of chat completions.
    pub latency: Histogram,
    /// Time to first token of streams.
    pub ttft: Histogram,
    prompt_tokens: AtomicU64,
    completion_tokens: AtomicU64,
    active_streams: AtomicI64,
    ws_connections: AtomicI64,
    open_connections: AtomicI64,
    rejected_connections: AtomicU64,
    header_read_timeouts: AtomicU64,
    idle_timeouts: AtomicU64,
    shed_requests: AtomicU64,
    admin_auth_throttled: AtomicU64,
}

impl Metrics {
    /// Counts a finished HTTP request.
    pub fn request(&self, route: &str, status: u16) {
        if let Ok(mut m) = self.requests.lock() {
            *m.entry((route.to_owned(), status)).or_default() += 1;
        }
    }

    /// Counts an error by kind.
    pub fn error(&self, kind: &str) {
        if let Ok(mut m) = self.errors.lock() {
            *m.entry(kind.to_owned()).or_default() += 1;
        }
    }

    /// Adds tokens.
    pub fn tokens(&self, prompt: u64, completion: u64) {
        self.prompt_tokens.fetch_add(prompt, Ordering::Relaxed);
        self.completion_tokens
            .fetch_add(completion, Ordering::Relaxed);
    }

    /// A stream opened (+1) or closed (-1).
    pub fn streams(&self, delta: i64) {
        self.active_streams.fetch_add(delta, Ordering::Relaxed);
    }

    /// A WebSocket opened (+1) or closed (-1).
    pub fn ws(&self, delta: i64) {
        self.ws_connections.fetch_add(delta, Ordering::Relaxed);
    }

    /// A connection opened (+1) or closed (-1).
    pub fn connections(&self, delta: i64) {
        self.open_connections.fetch_add(delta, Ordering::Relaxed);
    }

    /// Open connections now.
    pub fn open_connections(&self) -> i64 {
        self.open_connections.load(Ordering::Relaxed)
    }

    /// A connection over `max_connections` was answered 503 and closed.
    pub fn connection_rejected(&self) {
        self.rejected_connections.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection was closed by a deadline (`"header_read"` or `"idle"`).
    pub fn connection_timeout(&self, kind: &str) {
        let c = if kind == "idle" {
            &self.idle_timeouts
        } else {
            &self.header_read_timeouts
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// A request over `max_inflight_requests` was shed with 503.
    pub fn shed_request(&self) {
        self.shed_requests.fetch_add(1, Ordering::Relaxed);
    }

    /// An admin request was refused with 429 after repeated failed authentication.
    pub fn admin_auth_throttled(&self) {
        self.admin_auth_throttled.fetch_add(1, Ordering::Relaxed);
    }

    /// Open streams now.
    pub fn active_streams(&self) -> i64 {
        self.active_streams.load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        out.push_str("# HELP nexus_requests_total HTTP requests by route and status.\n# TYPE nexus_requests_total counter\n");
        if let Ok(m) = self.requests.lock() {
            for ((route, status), n) in m.iter() {
                let _ = writeln!(
                    out,
                    "nexus_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
                );
            }
        }
        out.push_str("# HELP nexus_errors_total Failed requests by error kind.\n# TYPE nexus_errors_total counter\n");
        if let Ok(m) = self.errors.lock() {
            for (kind, n) in m.iter() {
                let _ = writeln!(out, "nexus_errors_total{{kind=\"{kind}\"}} {n}");
            }
        }
        self.latency.render(
            &mut out,
            "nexus_request_duration_seconds",
            "Chat completion latency.",
        );
        self.ttft.render(
            &mut out,
            "nexus_time_to_first_token_seconds",
            "Time to the first streamed token.",
        );
        let _ = writeln!(
            out,
            "# HELP nexus_tokens_total Tokens by type.\n# TYPE nexus_tokens_total counter\nnexus_tokens_total{{type=\"prompt\"}} {}\nnexus_tokens_total{{type=\"completion\"}} {}",
            self.prompt_tokens.load(Ordering::Relaxed),
            self.completion_tokens.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP nexus_active_streams Open SSE streams.\n# TYPE nexus_active_streams gauge\nnexus_active_streams {}",
            self.active_streams.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP nexus_websocket_connections Open WebSocket chats.\n# TYPE nexus_websocket_connections gauge\nnexus_websocket_connections {}",
            self.ws_connections.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP nexus_open_connections Open client connections.\n# TYPE nexus_open_connections gauge\nnexus_open_connections {}",
            self.open_connections.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP nexus_rejected_connections_total Connections refused over max_connections.\n# TYPE nexus_rejected_connections_total counter\nnexus_rejected_connections_total {}",
            self.rejected_connections.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP nexus_connection_timeouts_total Connections closed by a deadline.\n# TYPE nexus_connection_timeouts_total counter\nnexus_connection_timeouts_total{{kind=\"header_read\"}} {}\nnexus_connection_timeouts_total{{kind=\"idle\"}} {}",
            self.header_read_timeouts.load(Ordering::Relaxed),
            self.idle_timeouts.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP nexus_shed_requests_total Requests refused over max_inflight_requests.\n# TYPE nexus_shed_requests_total counter\nnexus_shed_requests_total {}",
            self.shed_requests.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP nexus_admin_auth_throttled_total Admin requests refused after repeated failed authentication.\n# TYPE nexus_admin_auth_throttled_total counter\nnexus_admin_auth_throttled_total {}",
            self.admin_auth_throttled.load(Ordering::Relaxed)
        );
        out
    }
}
