//! The Anthropic Messages API (`POST /v1/messages`) in front of every provider kind.
//!
//! A Messages request is translated into the core's OpenAI chat request ([`request`]), served
//! by [`Hub::chat`] / [`Hub::chat_stream`] with `endpoint = Messages` (one usage row, the same
//! admission, routing, failover and limits), and the answer translated back ([`response`],
//! [`stream`]). To an `anthropic` provider this is a round trip through the OpenAI format:
//! `cache_control` markers and thinking signatures do not survive it.
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

use crate::error::Result;
use crate::openai::ChatRequest;
use crate::usage::Endpoint;
use crate::{Caller, ChatStream, Hub, RequestContext};

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

fn messages_ctx(mut ctx: RequestContext) -> RequestContext {
    ctx.endpoint = Endpoint::Messages;
    ctx
}

impl Hub {
    /// A non-streaming Messages request, already translated ([`parse`], [`to_chat_request`]).
    pub async fn messages(
        &self,
        caller: Caller,
        mut chat: ChatRequest,
        ctx: RequestContext,
    ) -> Result<MessagesResponse> {
        chat.stream = Some(false);
        chat.stream_options = None;
        let model = chat.model.clone();
        let r = self.chat(caller, chat, messages_ctx(ctx)).await?;
        Ok(MessagesResponse {
            message: from_completion(&r.completion, &model, &r.request_id, &r.usage),
            request_id: r.request_id,
            rate_limit_headers: r.rate_limit_headers,
        })
    }

    /// A streaming Messages request, already translated. Errors before the stream opened are
    /// returned here (to answer as HTTP errors); later ones are the stream's `error` event.
    pub async fn messages_stream(
        &self,
        caller: Caller,
        mut chat: ChatRequest,
        ctx: RequestContext,
    ) -> Result<MessagesStream> {
        chat.stream = Some(true);
        chat.stream_options = Some(json!({"include_usage": true}));
        let model = chat.model.clone();
        let estimate = self.count_messages(&model, &chat.messages).tokens;
        let inner = self.chat_stream(caller, chat, messages_ctx(ctx)).await?;
        let enc = StreamEncoder::new(&model, &inner.request_id, estimate);
        Ok(MessagesStream {
            inner,
            enc,
            queued: Default::default(),
            ended: false,
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
