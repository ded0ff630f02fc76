//! The Anthropic Messages API (`POST /v1/messages`) in front of every provider kind.
//!
//! A Messages request is translated into the core's OpenAI chat request ([`request`]), served
//! by [`Hub::chat`] / [`Hub::chat_stream`] with `endpoint = Messages` (one usage row, the same
//! admission, routing, failover and limits), and the answer translated back ([`response`],
//! [`stream`]). To an `anthropic` provider the body goes as the client sent it (a
//! [`MessagesRequest`] parsed by [`MessagesRequest::parse`] keeps it, with the client's
//! `anthropic-beta`), and its answer and events come back as the provider sent them, so
//! `cache_control` markers, thinking signatures and `top_k` survive; only the model name is the
//! client's. The translation is still made for the ledger (usage) and for other candidates.
//!
//! An embedding program serves the format with [`Hub::messages`], [`Hub::messages_stream`]
//! and [`Hub::messages_count_tokens`], or with the pieces: [`to_chat_request`],
//! [`from_completion`], [`StreamEncoder`], and [`crate::Error::to_anthropic_json_for`].

pub mod request;
pub mod response;
pub mod stream;

use serde_json::{json, Value};

pub use request::{parse, to_chat_request};
pub use response::from_completion;
pub use stream::{SseEvent, StreamEncoder};

use crate::chat_stream::RawEvents;
use crate::error::Result;
use crate::openai::{ChatRequest, RequestLimits};
use crate::records::{ModelKind, ProviderKind};
use crate::upstream::native::{self, NativeRequest};
use crate::usage::Endpoint;
use crate::{Caller, ChatStream, Hub, RequestContext};

/// A parsed Messages request: its translation into a chat request, and (when parsed from the
/// client's bytes) the body as sent, for `anthropic` providers.
#[derive(Debug, Clone)]
pub struct MessagesRequest {
    /// The translated request (what every other provider kind receives).
    pub chat: ChatRequest,
    native: Option<NativeRequest>,
}

impl MessagesRequest {
    /// Parses a Messages body under the hub's limits; `betas` is the client's `anthropic-beta`
    /// header, passed on to `anthropic` providers.
    pub fn parse(body: &[u8], limits: &RequestLimits, betas: Option<&str>) -> Result<Self> {
        Self::parse_as(body, limits, betas, false)
    }

    /// [`MessagesRequest::parse`] for a `count_tokens` body (no `max_tokens` needed).
    pub fn parse_count(body: &[u8], limits: &RequestLimits, betas: Option<&str>) -> Result<Self> {
        Self::parse_as(body, limits, betas, true)
    }

    fn parse_as(
        body: &[u8],
        limits: &RequestLimits,
        betas: Option<&str>,
        count_only: bool,
    ) -> Result<Self> {
        let (chat, kept) = request::parse_keeping(body, limits, count_only)?;
        Ok(MessagesRequest {
            chat,
            native: Some(NativeRequest::AnthropicMessages {
                body: kept,
                betas: betas.map(str::to_owned),
            }),
        })
    }

    /// Whether the client asked for a stream.
    pub fn stream(&self) -> bool {
        self.chat.stream == Some(true)
    }
}

/// A translated request alone: every provider kind, `anthropic` too, receives the translation.
impl From<ChatRequest> for MessagesRequest {
    fn from(chat: ChatRequest) -> Self {
        MessagesRequest { chat, native: None }
    }
}

/// A non-streaming Messages answer.
#[derive(Debug, Clone)]
pub struct MessagesResponse {
    /// The Anthropic message.
    pub message: Value,
    /// The hub's request id.
    pub request_id: String,
    /// Upstream `x-ratelimit-*` headers.
    pub rate_limit_headers: Vec<(String, String)>,
}

/// A streaming Messages answer: Anthropic SSE events, ending after `message_stop` or one
/// `error` event. Dropping it cancels the upstream request.
#[derive(Debug)]
pub struct MessagesStream {
    inner: ChatStream,
    enc: StreamEncoder,
    queued: std::collections::VecDeque<SseEvent>,
    ended: bool,
    /// The client's model name, for relayed events.
    model: String,
}

impl MessagesStream {
    /// The hub's request id.
    pub fn request_id(&self) -> &str {
        &self.inner.request_id
    }

    /// The chat stream underneath (summary, provider, rate-limit headers).
    pub fn chat_stream(&self) -> &ChatStream {
        &self.inner
    }

    /// The next event; `None` after the last.
    pub async fn next(&mut self) -> Option<SseEvent> {
        if let Some(raw) = self.inner.raw.clone() {
            return self.next_relayed(&raw).await;
        }
        loop {
            if let Some(e) = self.queued.pop_front() {
                return Some(e);
            }
            if self.ended {
                return None;
            }
            match self.inner.next().await {
                Some(Ok(chunk)) => self.queued.extend(self.enc.push(&chunk)),
                Some(Err(e)) => {
                    self.ended = true;
                    self.queued.extend(self.enc.start());
                    self.queued.push_back(self.enc.error(&e));
                }
                None => {
                    self.ended = true;
                    let usage = self.inner.summary().map(|s| s.usage);
                    self.queued.extend(self.enc.finish(usage.as_ref()));
                }
            }
        }
    }
}

impl MessagesStream {
    /// The provider's own events (an `anthropic` provider): each as it came, in order; a
    /// failure ends the stream with the hub's `error` event.
    async fn next_relayed(&mut self, raw: &RawEvents) -> Option<SseEvent> {
        loop {
            if let Some(e) = self.queued.pop_front() {
                return Some(e);
            }
            let next = raw.lock().ok().and_then(|mut q| q.pop_front());
            if let Some((event, data)) = next {
                if let Some(e) = SseEvent::relayed(&event, &data, &self.model) {
                    return Some(e);
                }
                continue;
            }
            if self.ended {
                return None;
            }
            match self.inner.next().await {
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    self.ended = true;
                    // The events before the failure first, then the error.
                    let before: Vec<_> = raw
                        .lock()
                        .map(|mut q| q.drain(..).collect())
                        .unwrap_or_default();
                    self.queued.extend(
                        before
                            .iter()
                            .filter_map(|(ev, d)| SseEvent::relayed(ev, d, &self.model)),
                    );
                    self.queued.push_back(self.enc.error(&e));
                }
                None => self.ended = true,
            }
        }
    }
}

fn messages_ctx(mut ctx: RequestContext) -> RequestContext {
    ctx.endpoint = Endpoint::Messages;
    ctx
}

impl Hub {
    /// A non-streaming Messages request: a [`MessagesRequest`], or a chat request already
    /// translated ([`parse`], [`to_chat_request`]).
    pub async fn messages(
        &self,
        caller: Caller,
        req: impl Into<MessagesRequest>,
        ctx: RequestContext,
    ) -> Result<MessagesResponse> {
        let MessagesRequest { mut chat, native } = req.into();
        chat.stream = Some(false);
        chat.stream_options = None;
        let model = chat.model.clone();
        let r = self
            .chat_inner(caller, chat, messages_ctx(ctx), true, native.as_ref())
            .await?;
        let relayed = r
            .native_body
            .as_ref()
            .and_then(|b| serde_json::from_slice::<Value>(b).ok())
            .filter(Value::is_object)
            .map(|mut m| {
                m["model"] = Value::String(model.clone());
                m
            });
        Ok(MessagesResponse {
            message: relayed
                .unwrap_or_else(|| from_completion(&r.completion, &model, &r.request_id, &r.usage)),
            request_id: r.request_id,
            rate_limit_headers: r.rate_limit_headers,
        })
    }

    /// A streaming Messages request, already translated. Errors before the stream opened are
    /// returned here (to answer as HTTP errors); later ones are the stream's `error` event.
    pub async fn messages_stream(
        &self,
        caller: Caller,
        req: impl Into<MessagesRequest>,
        ctx: RequestContext,
    ) -> Result<MessagesStream> {
        let MessagesRequest { mut chat, native } = req.into();
        chat.stream = Some(true);
        chat.stream_options = Some(json!({"include_usage": true}));
        let model = chat.model.clone();
        let estimate = self.count_messages(&model, &chat.messages).tokens;
        let inner = self
            .chat_stream_inner(caller, chat, messages_ctx(ctx), native.as_ref())
            .await?;
        let enc = StreamEncoder::new(&model, &inner.request_id, estimate);
        Ok(MessagesStream {
            inner,
            enc,
            queued: Default::default(),
            ended: false,
            model,
        })
    }

    /// `count_tokens`: the hub's estimate of the translated request's input tokens (messages
    /// with OpenAI's per-message overhead, plus the tools' JSON). The model must be one the
    /// caller may use (else 404).
    pub fn messages_count_tokens(&self, caller: &Caller, chat: &ChatRequest) -> Result<u64> {
        let visible = self.models_for(caller)?;
        if !visible.data.iter().any(|m| m.id == chat.model) {
            return Err(crate::Error::not_found(format!("model '{}'", chat.model)));
        }
        let mut n = self.count_messages(&chat.model, &chat.messages).tokens;
        if let Some(t) = chat.extra.get("tools") {
            n += self.count_text(&chat.model, &t.to_string()).tokens;
        }
        Ok(n)
    }
}

/// Who counted a `count_tokens` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CountSource {
    /// The hub's token estimator.
    Estimate,
    /// An `anthropic` provider's own `count_tokens` (its name).
    Provider(String),
}

impl CountSource {
    /// `estimate`, or `provider`: the label the server sends in `x-nexus-count-source`.
    pub fn label(&self) -> &'static str {
        match self {
            CountSource::Estimate => "estimate",
            CountSource::Provider(_) => "provider",
        }
    }
}

/// A `count_tokens` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputTokenCount {
    /// The input tokens.
    pub input_tokens: u64,
    /// Who counted them.
    pub source: CountSource,
}

impl Hub {
    /// `count_tokens` for a parsed Messages request: when the model's first healthy candidate
    /// is an `anthropic` provider, that provider's own count (the client's body and betas, as
    /// the pass-through sends them); otherwise, or when the provider cannot answer (logged),
    /// the hub's estimate ([`Hub::messages_count_tokens`]). Writes no usage row.
    pub async fn messages_count_input_tokens(
        &self,
        caller: &Caller,
        req: &MessagesRequest,
    ) -> Result<InputTokenCount> {
        let Some(NativeRequest::AnthropicMessages { body, betas }) = &req.native else {
            return self.count_estimate(caller, &req.chat).await;
        };
        let (key, pin) = match caller {
            Caller::Key(k) => (Some(self.0.registry.authenticate(k)?), None),
            Caller::Admitted(a) => (Some(a.key().clone()), None),
            Caller::Admin { provider_id } => (None, *provider_id),
        };
        let mut cands =
            self.0
                .registry
                .route_kind(key.as_ref(), &req.chat.model, pin, ModelKind::Chat)?;
        let healthy = self.0.admission.order_candidates(&mut cands).is_ok();
        let Some(cand) = cands
            .first()
            .filter(|c| healthy && c.provider.record.kind == ProviderKind::Anthropic)
        else {
            return self.count_estimate(caller, &req.chat).await;
        };
        let (first_byte, _) = self.timeouts(cand);
        let counted = async {
            let call = native::anthropic_count_call(body, betas.as_deref(), cand)?;
            let resp = self.0.upstream.send(cand, call, first_byte).await?;
            let bytes = self.0.upstream.read_body(resp, first_byte).await?;
            native::anthropic_count(&bytes)
        }
        .await;
        match counted {
            Ok(n) => Ok(InputTokenCount {
                input_tokens: n,
                source: CountSource::Provider(cand.provider.record.name.clone()),
            }),
            Err(e) => {
                tracing::warn!(provider = %cand.provider.record.name, error = %e,
                    "count_tokens: the provider did not count; answering the estimate");
                self.count_estimate(caller, &req.chat).await
            }
        }
    }

    /// The estimate, on the blocking pool: a long conversation is milliseconds of tokenizing.
    async fn count_estimate(&self, caller: &Caller, chat: &ChatRequest) -> Result<InputTokenCount> {
        let (hub, caller, chat) = (self.clone(), caller.clone(), chat.clone());
        let n = tokio::task::spawn_blocking(move || hub.messages_count_tokens(&caller, &chat))
            .await
            .map_err(|e| crate::Error::Internal(format!("count task failed: {e}")))??;
        Ok(InputTokenCount {
            input_tokens: n,
            source: CountSource::Estimate,
        })
    }
}
