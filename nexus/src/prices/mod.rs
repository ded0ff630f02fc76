//! Prices: the bundled catalog (`catalog.toml`, USD per million tokens for the models users run
//! most, each with the date it was checked), the effective prices of a model (its own, else the
//! catalog's, else none: unpriced), and the cost of one request's usage in integer micro-dollars.
//!
//! A model with no known price is never priced at $0: its requests are recorded with no cost and
//! the model shows `price_source: null` until a price is set.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::openai::Usage;
use crate::records::Model;

const CATALOG: &str = include_str!("catalog.toml");

/// USD per million tokens. Micro-dollars per token, equally: a token count times a price is a
/// cost in micro-dollars.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Prices {
    /// Uncached input.
    pub input: f64,
    /// Output (reasoning included unless `reasoning` is set).
    pub output: f64,
    /// A cache read; `None`: billed as input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input: Option<f64>,
    /// A cache write; `None`: billed as input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write: Option<f64>,
    /// Reasoning tokens where priced apart from output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<f64>,
}

/// Where a model's effective prices come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PriceSource {
    /// Set on the model.
    Model,
    /// The bundled catalog.
    Catalog,
}

/// One catalog entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogEntry {
    /// The provider's model name.
    pub name: String,
    /// Who sells it (`openai`, `anthropic`, `google`, ...).
    pub provider: String,
    /// `chat` or `embedding`.
    #[serde(default = "chat")]
    pub kind: String,
    /// Per million uncached input tokens.
    pub input: f64,
    /// Per million output tokens.
    pub output: f64,
    /// Per million cache-read tokens.
    #[serde(default)]
    pub cached_input: Option<f64>,
    /// Per million cache-write tokens.
    #[serde(default)]
    pub cache_write: Option<f64>,
    /// Per million reasoning tokens, where priced apart.
    #[serde(default)]
    pub reasoning: Option<f64>,
    /// Other names for the same model.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// When the price was checked (`YYYY-MM-DD`).
    pub checked: String,
}

fn chat() -> String {
    "chat".into()
}

impl CatalogEntry {
    /// The entry's prices.
    pub fn prices(&self) -> Prices {
        Prices {
            input: self.input,
            output: self.output,
            cached_input: self.cached_input,
            cache_write: self.cache_write,
            reasoning: self.reasoning,
        }
    }
}

#[derive(Deserialize)]
struct File {
    model: Vec<CatalogEntry>,
}

/// The price catalog, indexed by name and alias.
#[derive(Debug)]
pub struct Catalog {
    entries: Vec<CatalogEntry>,
    by_name: HashMap<String, usize>,
}

impl Catalog {
    /// Parses a catalog file (the bundled one's format).
    pub fn parse(text: &str) -> Result<Catalog, String> {
        let f: File = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut by_name = HashMap::new();
        for (i, e) in f.model.iter().enumerate() {
            for n in std::iter::once(&e.name).chain(&e.aliases) {
                if by_name.insert(n.to_ascii_lowercase(), i).is_some() {
                    return Err(format!("'{n}' is in the catalog twice"));
                }
            }
        }
        Ok(Catalog {
            entries: f.model,
            by_name,
        })
    }

    /// The catalog bundled with this build. An unreadable bundle (a build defect, caught by the
    /// catalog's test) is an empty catalog: nothing is priced that was not set by hand.
    pub fn bundled() -> &'static Catalog {
        static C: OnceLock<Catalog> = OnceLock::new();
        C.get_or_init(|| {
            Catalog::parse(CATALOG).unwrap_or_else(|e| {
                tracing::error!(error = %e, "the bundled price catalog is unreadable");
                Catalog {
                    entries: vec![],
                    by_name: HashMap::new(),
                }
            })
        })
    }

    /// Every entry.
    pub fn entries(&self) -> &[CatalogEntry] {
        &self.entries
    }

    /// The entry for a model name: exact (case-insensitive), then an alias, then the name with
    /// a provider prefix (`openai/`) or a dated snapshot suffix (`-2024-08-06`, `-20250514`,
    /// `-latest`) taken off.
    pub fn lookup(&self, name: &str) -> Option<&CatalogEntry> {
        let n = name.trim().to_ascii_lowercase();
        let get = |k: &str| self.by_name.get(k).map(|&i| &self.entries[i]);
        if let Some(e) = get(&n) {
            return Some(e);
        }
        let bare = n.rsplit_once('/').map_or(n.as_str(), |(_, b)| b);
        if let Some(e) = get(bare) {
            return Some(e);
        }
        strip_snapshot(bare).and_then(get)
    }
}

/// `name` without a trailing dated snapshot or `-latest`, if it has one.
fn strip_snapshot(name: &str) -> Option<&str> {
    if let Some(b) = name.strip_suffix("-latest") {
        return Some(b);
    }
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    // -YYYY-MM-DD
    if name.len() > 11 {
        let (b, tail) = name.split_at(name.len() - 11);
        let p: Vec<&str> = tail[1..].split('-').collect();
        if tail.starts_with('-') && p.len() == 3 && p[0].len() == 4 && p.iter().all(|x| digits(x)) {
            return Some(b);
        }
    }
    // -YYYYMMDD, -MMDD (e.g. kimi-k2-0905)
    let (b, tail) = name.rsplit_once('-')?;
    ((tail.len() == 8 || tail.len() == 4) && digits(tail)).then_some(b)
}

/// A model's effective prices and their source: the model's own when it has an input or output
/// price (a missing one of the pair is 0), else the catalog's for its upstream name, then its
/// client name; `None` when neither knows it.
pub fn effective(m: &Model, catalog: &Catalog) -> Option<(Prices, PriceSource)> {
    if m.input_price.is_some() || m.output_price.is_some() {
        return Some((
            Prices {
                input: m.input_price.unwrap_or(0.0),
                output: m.output_price.unwrap_or(0.0),
                cached_input: m.cached_input_price,
                cache_write: m.cache_write_price,
                reasoning: None,
            },
            PriceSource::Model,
        ));
    }
    catalog
        .lookup(m.upstream())
        .or_else(|| catalog.lookup(&m.name))
        .map(|e| (e.prices(), PriceSource::Catalog))
}

/// The usage's cache reads, cache writes and reasoning tokens (OpenAI's usage details, and the
/// `cache_write_tokens` the translating kinds add).
pub fn details(u: &Usage) -> (u64, u64, u64) {
    let d = |group: &str, k: &str| {
        u.extra
            .get(group)
            .and_then(|g| g.get(k))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    (
        d("prompt_tokens_details", "cached_tokens"),
        d("prompt_tokens_details", "cache_write_tokens"),
        d("completion_tokens_details", "reasoning_tokens"),
    )
}

/// The cost of `u` at `p`, in micro-dollars: uncached input, cache reads, cache writes, output
/// and (where priced apart) reasoning, each at its price, summed and rounded once.
pub fn cost_micros(p: &Prices, u: &Usage) -> i64 {
    let (read, write, reasoning) = details(u);
    parts_cost(
        p,
        u.prompt_tokens,
        u.completion_tokens,
        read,
        write,
        reasoning,
    )
}

/// [`cost_micros`] of a recorded row (an explicit repricing).
pub fn row_cost_micros(p: &Prices, r: &crate::usage::PricedRow) -> i64 {
    parts_cost(
        p,
        r.prompt_tokens,
        r.completion_tokens,
        r.cached_tokens,
        r.cache_write_tokens,
        r.reasoning_tokens,
    )
}

fn parts_cost(
    p: &Prices,
    prompt: u64,
    completion: u64,
    read: u64,
    write: u64,
    reasoning: u64,
) -> i64 {
    let read = read.min(prompt);
    let write = write.min(prompt - read);
    let uncached = prompt - read - write;
    let (reasoning, output) = match p.reasoning {
        Some(_) => {
            let r = reasoning.min(completion);
            (r, completion - r)
        }
        None => (0, completion),
    };
    let micros = uncached as f64 * p.input
        + read as f64 * p.cached_input.unwrap_or(p.input)
        + write as f64 * p.cache_write.unwrap_or(p.input)
        + output as f64 * p.output
        + reasoning as f64 * p.reasoning.unwrap_or(p.output);
    micros.round() as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn usage(v: Value) -> Usage {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn the_bundled_catalog_is_valid_and_broad() {
        let c = Catalog::parse(CATALOG).unwrap();
        assert!(c.entries().len() >= 60, "{} models", c.entries().len());
        let mut providers = std::collections::BTreeSet::new();
        for e in c.entries() {
            providers.insert(e.provider.as_str());
            assert!(e.input.is_finite() && e.input >= 0.0, "{}", e.name);
            assert!(e.output.is_finite() && e.output >= 0.0, "{}", e.name);
            for p in [e.cached_input, e.cache_write, e.reasoning]
                .into_iter()
                .flatten()
            {
                assert!(p.is_finite() && p >= 0.0, "{}", e.name);
            }
            let d: Vec<&str> = e.checked.split('-').collect();
            assert!(
                d.len() == 3 && d[0].len() == 4 && d[1].len() == 2 && d[2].len() == 2,
                "{}: checked '{}'",
                e.name,
                e.checked
            );
            assert!(e.kind == "chat" || e.kind == "embedding", "{}", e.name);
        }
        for p in [
            "openai",
            "anthropic",
            "google",
            "deepseek",
            "qwen",
            "moonshot",
            "zhipu",
            "mistral",
            "xai",
        ] {
            assert!(providers.contains(p), "no {p} model in the catalog");
        }
        // A model without an input or output price (0 is a price: free tiers exist) is refused.
        let missing =
            "[[model]]\nname = \"x\"\nprovider = \"p\"\ninput = 1.0\nchecked = \"2026-01-01\"\n";
        assert!(Catalog::parse(missing).unwrap_err().contains("output"));
        let twice = format!("{missing}output = 2.0\n\n{missing}output = 2.0\n");
        assert!(Catalog::parse(&twice).unwrap_err().contains("twice"));
    }

    #[test]
    fn names_match_exactly_then_by_alias_prefix_and_snapshot() {
        let c = Catalog::bundled();
        assert_eq!(c.lookup("gpt-4o").unwrap().input, 2.5);
        assert_eq!(c.lookup("GPT-4o").unwrap().name, "gpt-4o");
        // A dated snapshot with a price of its own is its own entry.
        assert_eq!(c.lookup("gpt-4o-2024-05-13").unwrap().input, 5.0);
        assert_eq!(c.lookup("gpt-4o-2024-08-06").unwrap().name, "gpt-4o");
        assert_eq!(c.lookup("openai/gpt-4o-mini").unwrap().name, "gpt-4o-mini");
        assert_eq!(
            c.lookup("claude-sonnet-4-5-20250929").unwrap().name,
            "claude-sonnet-4-5"
        );
        assert_eq!(c.lookup("deepseek-v3").unwrap().name, "deepseek-chat");
        assert!(c.lookup("my-private-model").is_none());
        assert_eq!(strip_snapshot("kimi-k2-0905"), Some("kimi-k2"));
        assert_eq!(strip_snapshot("gpt-4o"), None);
    }

    #[test]
    fn cost_of_each_usage_shape() {
        let p = Prices {
            input: 3.0,
            output: 15.0,
            cached_input: Some(0.3),
            cache_write: Some(3.75),
            reasoning: None,
        };
        // 1000 in × $3/M + 500 out × $15/M = 3000 + 7500 micro-dollars.
        assert_eq!(
            cost_micros(
                &p,
                &usage(
                    json!({"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500})
                )
            ),
            10_500
        );
        // 400 of the 1000 read from the cache: 600 × 3 + 400 × 0.3 + 500 × 15.
        assert_eq!(
            cost_micros(
                &p,
                &usage(
                    json!({"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500,
                "prompt_tokens_details": {"cached_tokens": 400}})
                )
            ),
            1800 + 120 + 7500
        );
        // 200 written to the cache: 800 × 3 + 200 × 3.75 + 500 × 15.
        assert_eq!(
            cost_micros(
                &p,
                &usage(
                    json!({"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500,
                "prompt_tokens_details": {"cache_write_tokens": 200}})
                )
            ),
            2400 + 750 + 7500
        );
        // Reasoning is output unless priced apart.
        let r = usage(
            json!({"prompt_tokens": 10, "completion_tokens": 100, "total_tokens": 110,
            "completion_tokens_details": {"reasoning_tokens": 60}}),
        );
        assert_eq!(cost_micros(&p, &r), 30 + 1500);
        let apart = Prices {
            reasoning: Some(20.0),
            ..p
        };
        assert_eq!(cost_micros(&apart, &r), 30 + 40 * 15 + 60 * 20);
        // No cache prices: cached tokens are billed as input (never twice).
        let plain = Prices {
            cached_input: None,
            cache_write: None,
            ..p
        };
        assert_eq!(
            cost_micros(
                &plain,
                &usage(
                    json!({"prompt_tokens": 1000, "completion_tokens": 0, "total_tokens": 1000,
                "prompt_tokens_details": {"cached_tokens": 400}})
                )
            ),
            3000
        );
        // Fractions are rounded once, at the end: 7 × 0.15 = 1.05 micro-dollars.
        let cheap = Prices {
            input: 0.15,
            output: 0.6,
            cached_input: None,
            cache_write: None,
            reasoning: None,
        };
        assert_eq!(
            cost_micros(
                &cheap,
                &usage(json!({"prompt_tokens": 7, "completion_tokens": 0, "total_tokens": 7}))
            ),
            1
        );
    }
}
