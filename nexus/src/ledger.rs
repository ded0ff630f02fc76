//! The ledger: the one usage row of every request, and the conversation messages beside it.
//!
//! Both chat paths (and a stream's accounting, long after its call returned) write through it, so
//! the rules (which usage counts, the estimate when the upstream sends none, cost, the cached and
//! reasoning parts, the messages kept) are written once.

use std::time::Instant;

use serde_json::Value;

use crate::crypto;
use crate::error::Error;
use crate::openai::{ChatRequest, Usage};
use crate::records::Model;
use crate::registry::Candidate;
use crate::stats::StatsWriter;
use crate::time::now_ms;
use crate::tokens::TokenEstimator;
use crate::usage::{Endpoint, MessageRecord, RequestSource, UsageRecord, UsageSource};

/// Token counting and the stats writer, shared by the hub and every open stream.
#[derive(Debug)]
pub(crate) struct Ledger {
    pub(crate) tokens: TokenEstimator,
    pub(crate) stats: StatsWriter,
    /// Keep conversation messages (the last user prompt and the answer).
    pub(crate) record_messages: bool,
    /// Which request bodies the explorer keeps, for keys without their own setting.
    pub(crate) record_bodies: crate::records::BodyRecording,
}

impl Ledger {
    pub(crate) fn new_record(
        &self,
        request_id: Option<&str>,
        model: &str,
        conversation_id: Option<&str>,
        source: RequestSource,
        stream: bool,
    ) -> UsageRecord {
        UsageRecord {
            ts_ms: now_ms(),
            request_id: request_id.map_or_else(crypto::random_id, str::to_owned),
            conversation_id: conversation_id.map(str::to_owned),
            key_id: None,
            provider_id: None,
            model: model.to_owned(),
            upstream_model: None,
            prompt_tokens: 0,
            completion_tokens: 0,
            usage_source: UsageSource::Estimate,
            status: 200,
            error_kind: None,
            latency_ms: 0.0,
            ttft_ms: None,
            stream,
            source,
            cost_micros: None,
            cached_tokens: 0,
            cache_write_tokens: 0,
            reasoning_tokens: 0,
            endpoint: Endpoint::Chat,
            upstream_ms: None,
            attempts: Vec::new(),
            bodies: None,
        }
    }

    /// Starts recording `rec`'s bodies when its key (or the hub) says so: the request now,
    /// redacted; the answer or error when the request ends.
    pub(crate) fn start_bodies(
        &self,
        rec: &mut UsageRecord,
        key: Option<&crate::records::ClientKey>,
        request: impl FnOnce() -> Option<Value>,
    ) {
        let mode = key
            .and_then(|k| k.record_bodies)
            .unwrap_or(self.record_bodies);
        if mode == crate::records::BodyRecording::Off {
            return;
        }
        rec.bodies = Some(Box::new(crate::usage::RecordedBodies {
            mode,
            request: request().map(|v| crate::redact::redact_value(&v)),
            response: None,
        }));
    }

    /// Keeps `answer` (redacted) as the response body when `rec` records its bodies.
    pub(crate) fn answer_body(rec: &mut UsageRecord, answer: impl FnOnce() -> String) {
        if let Some(b) = rec.bodies.as_deref_mut() {
            if b.kept(rec.status) {
                b.response = Some(answer());
            }
        }
    }

    pub(crate) fn record_failure(&self, mut rec: UsageRecord, e: &Error, start: Instant) {
        rec.status = e.http_status();
        rec.error_kind = Some(e.kind().as_str().to_owned());
        if let Some(b) = rec.bodies.as_deref_mut() {
            // The operator's detail (an upstream's own message included), redacted: the explorer
            // is the operator's view, never a tenant's.
            b.response = Some(crate::redact::redact_value(&serde_json::json!({"error": {
                "type": e.kind().as_str(),
                "status": rec.status,
                "message": e.to_string(),
            }})));
        }
        rec.latency_ms = start.elapsed().as_secs_f64() * 1000.0;
        self.stats.record(rec);
    }

    pub(crate) fn record_messages(
        &self,
        conversation_id: &str,
        cand: &Candidate,
        req: &ChatRequest,
        answer: &str,
        usage: &Usage,
        ts_ms: i64,
    ) {
        if !self.record_messages {
            return;
        }
        let last_user = req
            .messages
            .iter()
            .rev()
            .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
            .map(message_text)
            .unwrap_or_default();
        let base = MessageRecord {
            ts_ms,
            conversation_id: conversation_id.to_owned(),
            provider_id: Some(cand.provider.record.id),
            model: req.model.clone(),
            role: "user".into(),
            tokens: self.tokens.count_text(&req.model, &last_user).tokens,
            // Kept text is redacted like recorded bodies: a key pasted into a prompt never
            // reaches the database file.
            content: crate::redact::redact_text(&last_user),
        };
        self.stats.message(base.clone());
        self.stats.message(MessageRecord {
            ts_ms: now_ms(),
            role: "assistant".into(),
            content: crate::redact::redact_text(answer),
            tokens: usage.completion_tokens,
            ..base
        });
    }

    /// The usage of an answer whose upstream sent none: the prompt counted like OpenAI does,
    /// and every piece of completion text (each choice, reasoning included).
    pub(crate) fn estimate<'a>(
        &self,
        req: &ChatRequest,
        completion: impl IntoIterator<Item = &'a str>,
    ) -> Usage {
        let p = self.tokens.count_messages(&req.model, &req.messages).tokens;
        let c: u64 = completion
            .into_iter()
            .map(|t| self.tokens.count_text(&req.model, t).tokens)
            .sum();
        Usage {
            prompt_tokens: p,
            completion_tokens: c,
            total_tokens: p + c,
            ..Usage::default()
        }
    }
}

/// Copies a usage object into the row: the counts and, from OpenAI's detail objects, the cached,
/// cache-written and reasoning parts (as every adapter reports them).
pub(crate) fn set_usage(rec: &mut UsageRecord, u: &Usage, source: UsageSource) {
    let detail = |obj: &str, field: &str| {
        u.extra
            .get(obj)
            .and_then(|d| d.get(field))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    rec.prompt_tokens = u.prompt_tokens;
    rec.completion_tokens = u.completion_tokens;
    rec.usage_source = source;
    rec.cached_tokens = detail("prompt_tokens_details", "cached_tokens");
    rec.cache_write_tokens = detail("prompt_tokens_details", "cache_write_tokens");
    rec.reasoning_tokens = detail("completion_tokens_details", "reasoning_tokens");
}

/// The cost of `u` on `m` in micro-dollars at the model's effective prices; `None` for an
/// unpriced model (never $0).
pub(crate) fn cost(m: &Model, u: &Usage) -> Option<i64> {
    m.prices.as_ref().map(|p| crate::prices::cost_micros(p, u))
}

pub(crate) fn message_text(m: &Value) -> String {
    match m.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}
