//! The provider test ("test every model"): each chat model called once streamed and once not,
//! each embedding model with one embeddings call.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::embeddings::EmbeddingsRequest;
use crate::error::{Error, Result};
use crate::hub::Hub;
use crate::openai::ChatRequest;
use crate::records::ModelKind;
use crate::request::{Caller, RequestContext};

/// One provider's result in a "test every model" run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelTestResult {
    /// Model name.
    pub model: String,
    /// Both calls succeeded.
    pub ok: bool,
    /// The streamed call produced at least one chunk.
    pub stream_supported: bool,
    /// Time to the first streamed content.
    pub ttft_ms: Option<f64>,
    /// Time of the streamed call.
    pub total_ms: Option<f64>,
    /// Completion tokens of the streamed call.
    pub completion_tokens: Option<u64>,
    /// Completion tokens per second of the streamed call.
    pub tokens_per_second: Option<f64>,
    /// Time of the non-streamed call.
    pub non_stream_ms: Option<f64>,
    /// What failed.
    pub error: Option<String>,
}

/// A provider test report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProviderTestReport {
    /// Provider id.
    pub provider_id: i64,
    /// Per model.
    pub results: Vec<ModelTestResult>,
}

impl Hub {
    /// Calls every model of a provider once streamed and once not, like the original's
    /// `test_all_url.py`: stream support, time to first token, total time, tokens per second.
    pub async fn test_provider(&self, provider_id: i64) -> Result<ProviderTestReport> {
        let models = self.registry().models(Some(provider_id))?;
        let mut results = Vec::with_capacity(models.len());
        for m in models {
            let caller = Caller::Admin {
                provider_id: Some(provider_id),
            };
            let mut r = ModelTestResult {
                model: m.name.clone(),
                ok: false,
                stream_supported: false,
                ttft_ms: None,
                total_ms: None,
                completion_tokens: None,
                tokens_per_second: None,
                non_stream_ms: None,
                error: None,
            };
            if m.kind == ModelKind::Embedding {
                // An embedding model is tested with one embeddings call (there is no stream).
                let t = Instant::now();
                let req = EmbeddingsRequest::new(&m.name, "Who are you?");
                let e = self
                    .embeddings(caller, req, RequestContext::default())
                    .await;
                r.non_stream_ms = Some(t.elapsed().as_secs_f64() * 1000.0);
                match e {
                    Ok(_) => r.ok = true,
                    Err(e) => r.error = Some(format!("embeddings: {e}")),
                }
                results.push(r);
                continue;
            }
            let mut req = ChatRequest::user(&m.name, "Who are you? Answer in one sentence.");
            req.extra.insert("max_tokens".into(), 64.into());
            let t = Instant::now();
            // The test asks the provider itself: never an answer from the cache.
            let ns = self
                .chat_inner(
                    caller.clone(),
                    req.clone(),
                    RequestContext::default(),
                    false,
                    None,
                )
                .await;
            r.non_stream_ms = Some(t.elapsed().as_secs_f64() * 1000.0);
            let t = Instant::now();
            let st = async {
                let mut s = self
                    .chat_stream(caller, req, RequestContext::default())
                    .await?;
                let mut ttft = None;
                while let Some(c) = s.next().await {
                    let c = c?;
                    if ttft.is_none() && c.delta().is_some_and(|d| !d.is_empty()) {
                        ttft = Some(t.elapsed().as_secs_f64() * 1000.0);
                    }
                }
                Ok::<_, Error>((ttft, s.summary()))
            }
            .await;
            let total = t.elapsed().as_secs_f64() * 1000.0;
            match (&ns, st) {
                (Ok(_), Ok((ttft, summary))) => {
                    r.ok = true;
                    r.stream_supported = ttft.is_some();
                    r.ttft_ms = ttft;
                    r.total_ms = Some(total);
                    let ct = summary.map(|s| s.usage.completion_tokens);
                    r.completion_tokens = ct;
                    r.tokens_per_second = ct.map(|c| c as f64 / (total / 1000.0).max(1e-6));
                }
                (Err(e), _) => r.error = Some(format!("non-stream: {e}")),
                (Ok(_), Err(e)) => r.error = Some(format!("stream: {e}")),
            }
            results.push(r);
        }
        Ok(ProviderTestReport {
            provider_id,
            results,
        })
    }
}
