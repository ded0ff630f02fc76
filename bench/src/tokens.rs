//! Token counting throughput on a JSON list of documents, counted one document per call (the way
//! the gateway counts messages).

use std::io::Write;
use std::time::{Duration, Instant};

use nexus::tokens::Encoding;

use crate::{emit, rss_kb, thread_cpu, Args, Res};

/// Runs `tokens` and prints one JSON object.
pub fn run(a: &Args) -> Res<()> {
    let input = a.req("input")?;
    let enc_name = a.req("encoding")?;
    let enc = Encoding::from_name(enc_name).ok_or("--encoding: cl100k_base or o200k_base")?;
    let imp = a.str("impl").unwrap_or("nexus").to_owned();
    let reps: usize = a.num("reps", 3usize)?.max(1);
    let docs: Vec<String> = serde_json::from_slice(&std::fs::read(input)?)?;
    let bytes: usize = docs.iter().map(String::len).sum();

    let rss_before = rss_kb();
    let reference = match imp.as_str() {
        "nexus" => None,
        "tiktoken-rs" => Some(match enc {
            Encoding::Cl100kBase => tiktoken_rs::cl100k_base()?,
            Encoding::O200kBase => tiktoken_rs::o200k_base()?,
        }),
        other => return Err(format!("--impl: nexus or tiktoken-rs, not '{other}'").into()),
    };
    let count = |text: &str| -> Res<usize> {
        match &reference {
            None => Ok(enc.count(text)?),
            Some(bpe) => Ok(bpe.encode_ordinary(text).len()),
        }
    };
    // Tables are built before timing, as the Python side does with get_encoding().
    count("warm up")?;
    let table_kb = rss_kb().saturating_sub(rss_before);

    let mut counts = Vec::with_capacity(docs.len());
    let mut best_cpu = Duration::MAX;
    let mut best_wall = Duration::MAX;
    for rep in 0..reps {
        let cpu0 = thread_cpu();
        let t = Instant::now();
        let mut these = Vec::with_capacity(docs.len());
        for d in &docs {
            these.push(count(d)?);
        }
        let wall = t.elapsed();
        let cpu = match (cpu0, thread_cpu()) {
            (Some(a), Some(b)) => b.saturating_sub(a),
            _ => wall,
        };
        best_cpu = best_cpu.min(cpu);
        best_wall = best_wall.min(wall);
        if rep == 0 {
            counts = these;
        }
    }
    if let Some(path) = a.str("counts-out") {
        let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
        for c in &counts {
            writeln!(f, "{c}")?;
        }
        f.flush()?;
    }
    let tokens: usize = counts.iter().sum();
    let cpu = best_cpu.as_secs_f64().max(1e-9);
    emit(&serde_json::json!({
        "impl": imp,
        "encoding": enc.name(),
        "docs": docs.len(),
        "bytes": bytes,
        "tokens": tokens,
        "cpu_secs": cpu,
        "wall_secs": best_wall.as_secs_f64(),
        "tokens_per_cpu_s": tokens as f64 / cpu,
        "mb_per_cpu_s": bytes as f64 / 1e6 / cpu,
        "table_rss_kb": table_kb,
    }))
}
