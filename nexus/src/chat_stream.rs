//! A streaming chat: the [`ChatStream`] callers pull chunks from, the state that decodes the
//! upstream's events into them, and the accounting that writes the stream's one usage row at its
//! end, on its failure, or when the caller drops it.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::admission::{Admitted, Reservation};
use crate::crypto;
use crate::error::{Error, Result, TimeoutPhase};
use crate::ledger::{cost, set_usage, Ledger};
use crate::openai::{self, ChatChunk, ChatRequest, Usage};
use crate::registry::Candidate;
use crate::time::now_ms;
use crate::upstream::{Decoded, EventStream, StreamDecoder};
use crate::usage::{UsageRecord, UsageSource};

/// How a stream ended, for front ends that report it (the WebSocket `done` frame).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StreamSummary {
    /// Final usage.
    pub usage: Usage,
    /// Where it came from.
    pub usage_source: UsageSource,
    /// What the stream cost in USD at the model's effective prices; `None` when unpriced.
    #[serde(default)]
    pub cost_usd: Option<f64>,
    /// Finish reason (`cancelled` when the caller stopped early).
    pub finish_reason: Option<String>,
    /// Total milliseconds.
    pub latency_ms: f64,
    /// Milliseconds to the first content.
    pub ttft_ms: Option<f64>,
    /// Error kind, when the stream failed.
    pub error_kind: Option<String>,
}

/// Streamed text is counted in pieces of this size, so an endless answer holds bounded memory.
const COUNT_PIECE: usize = 256 * 1024;

/// Accounts for one stream and writes its usage record exactly once: at the end, on error, or
/// when the stream is dropped early (then with what was produced so far).
pub(crate) struct Accounting {
    pub(crate) ledger: Arc<Ledger>,
    pub(crate) rec: Option<UsageRecord>,
    pub(crate) start: Instant,
    pub(crate) req: Arc<ChatRequest>,
    pub(crate) cand: Candidate,
    pub(crate) reservation: Reservation,
    /// The key's concurrency slot, held until the stream ends.
    pub(crate) _admitted: Option<Admitted>,
    /// Completion text (every choice, reasoning included) not yet counted.
    pub(crate) text: String,
    /// Completion tokens of the text already counted.
    pub(crate) counted: u64,
    pub(crate) usage: Option<(Usage, UsageSource)>,
    pub(crate) finish_reason: Option<String>,
    pub(crate) ttft: Option<f64>,
    pub(crate) summary: Arc<Mutex<Option<StreamSummary>>>,
    pub(crate) conversation_id: String,
    /// `id` and `created` of the upstream's chunks, for a chunk the hub adds.
    pub(crate) chunk_id: Option<(String, i64)>,
}

impl Accounting {
    fn add_text(&mut self, t: &str) {
        self.text.push_str(t);
        if self.text.len() >= COUNT_PIECE {
            self.counted += self
                .ledger
                .tokens
                .count_text(&self.req.model, &self.text)
                .tokens;
            self.text.clear();
        }
    }

    /// The usage of the stream so far: the upstream's, else counted from the prompt and the
    /// streamed text (and kept, so the row and any usage chunk the hub sends agree).
    fn usage(&mut self) -> (Usage, UsageSource) {
        if let Some(u) = &self.usage {
            return u.clone();
        }
        let mut usage = self.ledger.estimate(&self.req, [self.text.as_str()]);
        // The text counted earlier, in pieces, while the stream ran.
        usage.completion_tokens += self.counted;
        usage.total_tokens += self.counted;
        let u = (usage, UsageSource::Estimate);
        self.usage = Some(u.clone());
        u
    }

    fn finish(&mut self, error: Option<&Error>, cancelled: bool) {
        let Some(mut rec) = self.rec.take() else {
            return;
        };
        let (usage, source) = self.usage();
        set_usage(&mut rec, &usage, source);
        rec.latency_ms = self.start.elapsed().as_secs_f64() * 1000.0;
        rec.ttft_ms = self.ttft;
        rec.cost_micros = cost(&self.cand.model, &usage);
        if let Some(e) = error {
            rec.status = e.http_status();
            rec.error_kind = Some(e.kind().as_str().to_owned());
        } else if cancelled {
            // 499: the client closed the request (nginx's convention).
            rec.status = 499;
            rec.error_kind = Some("cancelled".into());
        }
        self.reservation.settle(
            usage.prompt_tokens + usage.completion_tokens,
            rec.cost_micros,
            rec.ts_ms,
        );
        let finish_reason = if cancelled {
            Some("cancelled".to_owned())
        } else {
            self.finish_reason.clone()
        };
        if let Ok(mut s) = self.summary.lock() {
            *s = Some(StreamSummary {
                usage: usage.clone(),
                usage_source: source,
                cost_usd: rec.cost_micros.map(crate::budgets::micros_to_usd),
                finish_reason,
                latency_ms: rec.latency_ms,
                ttft_ms: self.ttft,
                error_kind: rec.error_kind.clone(),
            });
        }
        self.ledger.record_messages(
            &self.conversation_id,
            &self.cand,
            &self.req,
            &self.text,
            &usage,
            rec.ts_ms,
        );
        // A stream's answer is its text and how it ended (the events themselves are not kept).
        Ledger::answer_body(&mut rec, || {
            crate::redact::redact_value(&serde_json::json!({
                "stream": true,
                "content": self.text,
                "finish_reason": self.finish_reason,
                "error": error.map(|e| e.to_string()),
            }))
        });
        self.ledger.stats.record(rec);
    }
}

impl Drop for Accounting {
    fn drop(&mut self) {
        self.finish(None, true);
    }
}

#[derive(Deserialize)]
struct ChunkIds {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    created: Option<i64>,
}

/// The upstream's SSE events as received (`event:` name, `data:`), in order, for a client of
/// the provider's own format (see [`crate::upstream::native`]). Events that make no chunk (a
/// ping, a block's end) wait here until the next chunk or the end is handed out.
pub(crate) type RawEvents = Arc<Mutex<std::collections::VecDeque<(String, String)>>>;

pub(crate) struct StreamState {
    pub(crate) events: EventStream,
    /// Set when the client reads the upstream's own events.
    pub(crate) raw: Option<RawEvents>,
    /// Turns the provider's events into OpenAI chunks.
    pub(crate) decoder: Box<dyn StreamDecoder>,
    /// Decoded chunks not yet handed to the caller.
    pub(crate) pending: std::collections::VecDeque<String>,
    /// The decoder saw the end of the answer.
    pub(crate) upstream_done: bool,
    pub(crate) idle: Duration,
    pub(crate) acct: Accounting,
    pub(crate) strip_usage: bool,
    /// The client asked for usage: if the upstream sends none, the hub sends its own count.
    pub(crate) synthesize_usage: bool,
    pub(crate) normalize: bool,
    pub(crate) finished: bool,
}

impl StreamState {
    pub(crate) async fn next_item(&mut self) -> Option<Result<ChatChunk>> {
        if self.finished {
            return None;
        }
        loop {
            let data = match self.pending.pop_front() {
                Some(d) => d,
                None if self.upstream_done => return self.end(),
                None => match tokio::time::timeout(self.idle, self.events.next()).await {
                    Err(_) => {
                        return self.fail(Error::Timeout {
                            phase: TimeoutPhase::Idle,
                        })
                    }
                    Ok(Some(Ok(ev))) => match self.decode(ev.event, ev.data) {
                        Ok(Decoded::Chunks(c)) => {
                            self.pending.extend(c);
                            continue;
                        }
                        Ok(Decoded::Done) => {
                            self.upstream_done = true;
                            continue;
                        }
                        Err(e) => return self.fail(e),
                    },
                    Ok(Some(Err(e))) => {
                        return self.fail(Error::Transport(format!("stream broke: {e}")))
                    }
                    Ok(None) => {
                        if self.acct.finish_reason.is_some() {
                            // Some upstreams end without [DONE]; a finish_reason already ended
                            // the answer, so this is a normal end.
                            return self.end();
                        }
                        return self.fail(Error::Transport(
                            "upstream closed the stream before it finished".into(),
                        ));
                    }
                },
            };
            let d = data.trim();
            if d.is_empty() {
                continue;
            }
            let chunk = if self.normalize {
                match serde_json::from_str::<Value>(d) {
                    Ok(v) => ChatChunk::parse(
                        openai::normalize_chunk(v, &self.acct.req.model).to_string(),
                    ),
                    Err(e) => Err(Error::Upstream {
                        status: None,
                        message: format!("malformed stream chunk: {e}"),
                        body: Some(openai::truncate(d, 4096)),
                        retry_after: None,
                    }),
                }
            } else {
                ChatChunk::parse(data)
            };
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => return self.fail(e),
            };
            if self.acct.chunk_id.is_none() {
                if let Ok(ChunkIds {
                    id: Some(id),
                    created,
                }) = serde_json::from_str::<ChunkIds>(chunk.json())
                {
                    self.acct.chunk_id = Some((id, created.unwrap_or(now_ms() / 1000)));
                }
            }
            if let Some(u) = chunk.usage() {
                // The last usage object wins; upstreams that repeat it send running totals.
                self.acct.usage = Some((u.clone(), UsageSource::Upstream));
            }
            let mut produced = false;
            for t in chunk.completion_texts() {
                produced |= !t.is_empty();
                self.acct.add_text(t);
            }
            if produced && self.acct.ttft.is_none() {
                self.acct.ttft = Some(self.acct.start.elapsed().as_secs_f64() * 1000.0);
            }
            if let Some(f) = chunk.finish_reason() {
                self.acct.finish_reason = Some(f.to_owned());
            }
            if self.strip_usage && chunk.is_usage_only() {
                continue;
            }
            return Some(Ok(chunk));
        }
    }

    /// The normal end. When the client asked for usage and the upstream sent none (llama.cpp's
    /// server and older vLLM ignore `include_usage`), the hub sends the usage chunk itself,
    /// counted from the prompt and the streamed text, exactly once, before the end.
    /// Decodes one upstream event, first keeping it raw when the client is relayed the
    /// provider's own events.
    fn decode(&mut self, event: String, data: String) -> Result<Decoded> {
        if let Some(raw) = &self.raw {
            if let Ok(mut q) = raw.lock() {
                q.push_back((event.clone(), data.clone()));
            }
        }
        self.decoder.decode(&event, data)
    }

    fn end(&mut self) -> Option<Result<ChatChunk>> {
        self.finished = true;
        let synth = if self.synthesize_usage && self.acct.usage.is_none() {
            let (usage, _) = self.acct.usage();
            let (id, created) =
                self.acct.chunk_id.clone().unwrap_or_else(|| {
                    (format!("chatcmpl-{}", crypto::random_id()), now_ms() / 1000)
                });
            let v = serde_json::json!({
                "id": id, "object": "chat.completion.chunk", "created": created,
                "model": self.acct.req.model, "choices": [], "usage": usage,
            });
            ChatChunk::parse(v.to_string()).ok()
        } else {
            None
        };
        self.acct.finish(None, false);
        synth.map(Ok)
    }

    fn fail(&mut self, e: Error) -> Option<Result<ChatChunk>> {
        self.finished = true;
        tracing::warn!(
            request_id = %self.acct.rec.as_ref().map_or("", |r| r.request_id.as_str()),
            provider = %self.acct.cand.provider.record.name,
            error = %e,
            "upstream stream failed"
        );
        self.acct.finish(Some(&e), false);
        Some(Err(e))
    }
}

/// A stream of chat chunks. Ends after the upstream's `[DONE]` (which is not yielded), or with one
/// `Err` item. Dropping it cancels the upstream request and records what was produced.
pub struct ChatStream {
    pub(crate) inner: Pin<Box<dyn Stream<Item = Result<ChatChunk>> + Send>>,
    /// Request id.
    pub request_id: String,
    /// Conversation id.
    pub conversation_id: String,
    /// The provider serving the stream.
    pub provider_id: i64,
    /// Its name.
    pub provider_name: String,
    /// Upstream `x-ratelimit-*` headers.
    pub rate_limit_headers: Vec<(String, String)>,
    /// Milliseconds spent waiting for the upstream to open the stream (all attempts).
    pub upstream_ms: f64,
    pub(crate) summary: Arc<Mutex<Option<StreamSummary>>>,
    /// The upstream's own events, when the request went in the provider's native format.
    pub(crate) raw: Option<RawEvents>,
}

impl std::fmt::Debug for ChatStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatStream")
            .field("request_id", &self.request_id)
            .finish_non_exhaustive()
    }
}

impl ChatStream {
    /// The next chunk; `None` at the end.
    pub async fn next(&mut self) -> Option<Result<ChatChunk>> {
        StreamExt::next(self).await
    }

    /// How the stream ended (usage, finish reason, timings), once it has ended.
    pub fn summary(&self) -> Option<StreamSummary> {
        self.summary.lock().ok().and_then(|s| s.clone())
    }

    /// A shared handle to the end summary, readable after the stream is dropped.
    pub fn summary_handle(&self) -> Arc<Mutex<Option<StreamSummary>>> {
        self.summary.clone()
    }
}

impl Stream for ChatStream {
    type Item = Result<ChatChunk>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}
