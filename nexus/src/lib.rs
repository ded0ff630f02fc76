//! # nexus: the NexusAI Hub core
//!
//! One embeddable core for an AI-provider aggregation gateway: a registry of OpenAI-compatible
//! providers, their models and keys in one SQLite file; a streaming OpenAI-compatible client with
//! retries, failover and cooldown; exact offline token counting; and a usage-statistics store.
//! The C ABI (`nexus-ffi`), the Python module (`nexus-py`) and the reference server
//! (`nexus-server`) are thin layers over this crate.
//!
//! ```no_run
//! use nexus::{Hub, HubOptions, Caller, RequestContext, records::{NewProvider, NewModel}, openai::ChatRequest};
//! # async fn demo() -> nexus::Result<()> {
//! let hub = Hub::open("nexus.db", HubOptions::default())?;
//! let p = hub.registry().create_provider(NewProvider {
//!     name: "openai".into(),
//!     base_url: "https://api.openai.com".into(),
//!     api_key: std::env::var("OPENAI_API_KEY").unwrap_or_default(),
//!     ..Default::default()
//! })?;
//! hub.registry().create_model(p.id, NewModel { name: "gpt-4o-mini".into(), ..Default::default() })?;
//! let mut req = ChatRequest::user("gpt-4o-mini", "Say hello");
//! req.stream = Some(true);
//! let mut stream = hub.chat_stream(Caller::Admin { provider_id: None }, req, RequestContext::default()).await?;
//! while let Some(chunk) = stream.next().await {
//!     print!("{}", chunk?.delta().unwrap_or(""));
//! }
//! # Ok(()) }
//! ```

pub mod admission;
pub mod budgets;
mod chat_stream;
pub mod config_as_code;
pub mod config_marks;
pub mod crypto;
mod diagnostics;
pub mod discovery;
pub mod embeddings;
pub mod error;
pub mod health_checks;
pub mod hub;
pub mod ingress;
pub mod key_pool;
mod ledger;
mod maintenance;
pub mod openai;
mod options;
pub mod prices;
mod provider_health;
pub mod records;
pub mod redact;
pub mod registry;
mod request;
mod requests;
pub mod resilience;
pub mod retention;
mod sessions;
mod spend;
pub mod stats;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
mod time;
pub mod tokens;
pub mod upstream;
pub mod usage;

pub use admission::Admitted;
pub use budgets::{BudgetCounters, BudgetPeriod, KeySpend};
pub use chat_stream::{ChatStream, StreamSummary};
pub use diagnostics::{ModelTestResult, ProviderTestReport};
pub use embeddings::{EmbeddingsRequest, EmbeddingsResponse};
pub use error::{Error, ErrorKind, Result};
pub use hub::{ChatMeta, ChatResponse, Hub};
pub use options::{HubOptions, HubSettings};
pub use request::{Caller, RequestContext};

/// The crate version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

pub use time::now_ms;
