//! `nexus-bench`: the tools behind `scripts/bench.sh`.
//!
//! - `load`: a closed-loop HTTP/1.1 load generator. Each of `--concurrency` workers owns one
//!   keep-alive connection and sends the next request as soon as the previous answer has been
//!   read to the end. It records every request's latency, time to first SSE event and the number
//!   of `data:` events, and prints one JSON object.
//! - `client`: the library client's own overhead, `Hub::chat` and `Hub::chat_stream` against
//!   the same requests sent straight to the mock with reqwest, per request and per chunk.
//! - `stats`: the stats writer's sustained records/s, then the dashboard queries' time on a
//!   database of `--rows` usage rows generated through the `Store` trait.
//! - `tokens`: token counting throughput of nexus's exact counter and of tiktoken-rs on a JSON
//!   list of documents, with per-document counts written out for comparison.
//!
//! Every run is bounded in count and time. Nothing here asserts on time: it measures and prints.

mod client;
mod load;
mod stats;
mod tokens;

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

/// Errors of this binary: printed by `main`'s `Result`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Result of this binary.
pub type Res<T> = Result<T, BoxError>;

const USAGE: &str = "usage: nexus-bench <load|client|stats|tokens> [--option value ...]
  load   --url http://127.0.0.1:PORT [--format openai|anthropic|gemini|responses] [--path P] [--key KEY] --model M
         [--stream] [--concurrency 32] [--requests 100000] [--duration 10] [--warmup 1]
         [--ramp 0] [--timeout 60] [--threads 1] [--label NAME]
  client --url http://127.0.0.1:PORT [--model chunks20] [--requests 20000] [--warmup 1000]
         [--concurrency 1,32] [--threads 1]
  stats  --db PATH [--rows 10000000] [--batch 20000] [--writer-records 200000]
         [--max-gen-secs 900] [--reps 5]
  tokens --input docs.json --encoding cl100k_base|o200k_base [--impl nexus|tiktoken-rs]
         [--reps 3] [--counts-out FILE]";

/// `--name value` pairs; a name followed by another option (or nothing) is a flag (`true`).
pub struct Args(HashMap<String, String>);

impl Args {
    fn parse(list: Vec<String>) -> Res<Self> {
        let mut m = HashMap::new();
        let mut it = list.into_iter().peekable();
        while let Some(a) = it.next() {
            let Some(name) = a.strip_prefix("--") else {
                return Err(format!("unexpected argument '{a}'\n{USAGE}").into());
            };
            let value = match it.peek() {
                Some(v) if !v.starts_with("--") => it.next().unwrap_or_default(),
                _ => "true".to_owned(),
            };
            m.insert(name.to_owned(), value);
        }
        Ok(Args(m))
    }

    /// A string option.
    pub fn str(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// A required string option.
    pub fn req(&self, name: &str) -> Res<&str> {
        self.str(name)
            .ok_or_else(|| format!("missing --{name}\n{USAGE}").into())
    }

    /// A number option with a default.
    pub fn num<T: std::str::FromStr>(&self, name: &str, default: T) -> Res<T> {
        match self.str(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("--{name}: '{v}' is not a number").into()),
        }
    }

    /// A duration in (fractional) seconds.
    pub fn secs(&self, name: &str, default: f64) -> Res<Duration> {
        let s: f64 = self.num(name, default)?;
        if !(s.is_finite() && s >= 0.0) {
            return Err(format!("--{name} must be a non-negative number of seconds").into());
        }
        Ok(Duration::from_secs_f64(s))
    }

    /// A flag.
    pub fn flag(&self, name: &str) -> bool {
        matches!(self.str(name), Some("true" | "1" | "yes"))
    }
}

/// Prints one JSON value on its own line on stdout.
pub fn emit(v: &serde_json::Value) -> Res<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{v}")?;
    out.flush()?;
    Ok(())
}

/// CPU time this thread has used (`CLOCK_THREAD_CPUTIME_ID`, nanosecond resolution).
pub fn thread_cpu() -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (rc == 0).then(|| Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

/// This process's resident set size in kB (`VmRSS` in `/proc/self/status`).
pub fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// Quantiles (in milliseconds) of a list of nanosecond samples; sorts it.
pub fn quantiles(v: &mut [u64]) -> serde_json::Value {
    if v.is_empty() {
        return serde_json::Value::Null;
    }
    v.sort_unstable();
    let q = |p: f64| {
        let i = ((v.len() as f64 - 1.0) * p).round() as usize;
        v[i.min(v.len() - 1)] as f64 / 1e6
    };
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64 / 1e6;
    serde_json::json!({
        "p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "max": q(1.0), "mean": mean, "n": v.len()
    })
}

fn main() -> Res<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() || args[0] == "-h" || args[0] == "--help" {
        eprintln!("{USAGE}");
        return Ok(());
    }
    let cmd = args.remove(0);
    let a = Args::parse(args)?;
    match cmd.as_str() {
        "load" => load::run(&a),
        "client" => client::run(&a),
        "stats" => stats::run(&a),
        "tokens" => tokens::run(&a),
        other => Err(format!("unknown command '{other}'\n{USAGE}").into()),
    }
}
