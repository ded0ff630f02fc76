//! [`Hub::embeddings`]: the chat paths' admission, routing and failover for an embedding model,
//! and its one usage row (prompt tokens from the upstream, else the estimator; no completion).

use std::time::Instant;

use super::{EmbeddingInput, EmbeddingUsage, EmbeddingsRequest, EmbeddingsResponse};
use crate::admission::WorstCase;
use crate::error::{Error, Result};
use crate::hub::Hub;
use crate::ledger::{cost, set_usage};
use crate::openai::Usage;
use crate::records::ModelKind;
use crate::request::{Caller, RequestContext};
use crate::upstream::embeddings::{embeddings_adapter_for, Answer};
use crate::upstream::{rate_limit_headers, UpstreamCall};
use crate::usage::{Endpoint, UsageSource};

impl Hub {
    /// Embeds `req.input` with an `embedding` model. The usage row's endpoint is `embeddings`
    /// whatever `ctx.endpoint` says. Candidates whose provider kind cannot serve the request
    /// (Anthropic; Gemini for token-id input) are skipped; when none is left, the reason is a 400.
    pub async fn embeddings(
        &self,
        caller: Caller,
        req: EmbeddingsRequest,
        mut ctx: RequestContext,
    ) -> Result<EmbeddingsResponse> {
        let start = Instant::now();
        ctx.endpoint = Endpoint::Embeddings;
        // Embeddings belong to no conversation: the row has none, so they do not count as one.
        let (mut rec, (admitted, cands, mut reservation)) = self.begin_with(
            crate::hub::RowStart {
                model: &req.model,
                conversation_id: None,
                stream: false,
                start,
            },
            &ctx,
            || serde_json::to_value(&req).ok(),
            |key_id| {
                req.validate()?;
                let (admitted, cands, reservation) =
                    self.admit_and_route(caller, &req.model, ModelKind::Embedding, key_id, || {
                        WorstCase {
                            prompt: self.count_input(&req),
                            completion: 0,
                        }
                    })?;
                let mut refusal = None;
                let cands: Vec<_> = cands
                    .into_iter()
                    .filter(|c| {
                        match embeddings_adapter_for(c.provider.record.kind).supports(&req) {
                            Ok(()) => true,
                            Err(e) => {
                                refusal.get_or_insert(e);
                                false
                            }
                        }
                    })
                    .collect();
                if cands.is_empty() {
                    return Err(refusal.unwrap_or_else(|| {
                        Error::Internal("no embeddings candidate and no reason".into())
                    }));
                }
                Ok((admitted, cands, reservation))
            },
        )?;
        // `admitted` holds the key's concurrency slot until this function returns.
        let _admitted = admitted;
        let request_id = rec.request_id.clone();

        let mut calls: Vec<Option<UpstreamCall>> = vec![None; cands.len()];
        let (result, ci, tried) = self
            .with_failover(&request_id, &request_id, &cands, |ci| {
                let cand = &cands[ci];
                let adapter = embeddings_adapter_for(cand.provider.record.kind);
                let call = match &calls[ci] {
                    Some(c) => Ok(c.clone()),
                    None => adapter
                        .build(&req, cand)
                        .inspect(|c| calls[ci] = Some(c.clone())),
                };
                let (first_byte, _) = self.timeouts(cand);
                let req = &req;
                async move {
                    let resp = self.0.upstream.send(cand, call?, first_byte).await?;
                    let rl = rate_limit_headers(resp.headers());
                    let bytes = self.0.upstream.read_body(resp, first_byte).await?;
                    Ok((adapter.answer(bytes, req)?, rl))
                }
            })
            .await;
        drop(calls);
        let upstream_ms = tried.record(&mut rec);
        let cand = &cands[ci];
        rec.provider_id = Some(cand.provider.record.id);
        rec.upstream_model = Some(cand.model.upstream().to_owned());
        let (answer, rl) = match result {
            Ok(v) => v,
            Err(e) => {
                self.0.ledger.record_failure(rec, &e, start);
                return Err(e);
            }
        };
        let (body, prompt, source) = match answer {
            Answer::Relayed {
                body,
                prompt_tokens: Some(p),
            } if p > 0 => (body, p, UsageSource::Upstream),
            Answer::Relayed { body, .. } => (body, self.count_input(&req), UsageSource::Estimate),
            Answer::Translated(mut list) => {
                let p = self.count_input(&req);
                list.usage = EmbeddingUsage {
                    prompt_tokens: p,
                    total_tokens: p,
                };
                match serde_json::to_vec(&list) {
                    Ok(b) => (b.into(), p, UsageSource::Estimate),
                    Err(e) => {
                        let e = Error::Internal(e.to_string());
                        self.0.ledger.record_failure(rec, &e, start);
                        return Err(e);
                    }
                }
            }
        };
        let usage = Usage {
            prompt_tokens: prompt,
            completion_tokens: 0,
            total_tokens: prompt,
            ..Usage::default()
        };
        set_usage(&mut rec, &usage, source);
        rec.cost_micros = cost(&cand.model, &usage);
        rec.latency_ms = start.elapsed().as_secs_f64() * 1000.0;
        reservation.settle(prompt, rec.cost_micros, rec.ts_ms);
        let cost_micros = rec.cost_micros;
        self.0.ledger.stats.record(rec);
        Ok(EmbeddingsResponse {
            body,
            usage,
            usage_source: source,
            cost_micros,
            request_id,
            provider_id: cand.provider.record.id,
            provider_name: cand.provider.record.name.clone(),
            rate_limit_headers: rl,
            upstream_ms,
        })
    }

    /// The input's tokens: token ids as given, texts by the estimator (exact for the model
    /// names it knows, such as `text-embedding-3-*`).
    fn count_input(&self, req: &EmbeddingsRequest) -> u64 {
        let t = &self.0.ledger.tokens;
        match &req.input {
            EmbeddingInput::Tokens(v) => v.len() as u64,
            EmbeddingInput::TokenArrays(v) => v.iter().map(|a| a.len() as u64).sum(),
            EmbeddingInput::Text(_) | EmbeddingInput::Texts(_) => req
                .input
                .texts()
                .into_iter()
                .map(|s| t.count_text(&req.model, s).tokens)
                .sum(),
        }
    }
}
