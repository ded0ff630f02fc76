//! The OpenAI Responses API (`POST /v1/responses`) in front of every provider kind.
//!
//! A Responses request is translated into the core's OpenAI chat request ([`request`]), served
//! by the chat path with `endpoint = Responses` (one usage row, the same admission, routing,
//! failover and limits), and the answer translated back ([`response`], [`stream`]).
//!
//! `store: true` (OpenAI's default) keeps the response with the conversation that led to it, as
//! chat messages, under the key that made it: `previous_response_id` continues it (its
//! `instructions` are not carried over, as OpenAI documents) and [`Hub::get_response`] returns
//! it. Another key's response is a 404. `store: false` keeps nothing. Stored responses are
//! pruned with the conversation messages (`message_retention_days`).
//!
//! To an `openai` provider with the `responses_api` option the body goes as the client sent it
//! (model renamed) and the provider's answer or events come back as it sent them, with the
//! hub's response id and the client's model name, so hosted tools and encrypted reasoning
//! survive; the ledger reads the usage from the same answer. A continuation
//! (`previous_response_id`) is always translated: the provider does not know the hub's ids.
//!
//! An embedding program serves the format with [`Hub::responses`], [`Hub::responses_stream`],
//! [`Hub::get_response`], [`Hub::response_input_items`] and [`Hub::delete_response`], or with
//! the pieces: [`request::to_chat_request`], [`response::output_items`] and [`StreamEncoder`].

pub mod request;
pub mod response;
mod stored;
pub mod stream;

use std::collections::VecDeque;

use serde_json::{json, Value};

pub use request::Translated;
pub use stream::StreamEncoder;

use crate::error::Result;
use crate::ingress::SseEvent;
use crate::openai::{ChatRequest, RequestLimits};
use crate::store::StoredResponse;
use crate::upstream::native::NativeRequest;
use crate::usage::Endpoint;
use crate::{Caller, ChatStream, Hub, RequestContext};
use stored::ResponseStore;

/// A parsed Responses request: its translation, and (when parsed from the client's bytes) the
/// body as sent, for `openai` providers with the `responses_api` option.
#[derive(Debug, Clone)]
pub struct ResponsesRequest {
    t: Translated,
    native: Option<NativeRequest>,
}

impl ResponsesRequest {
    /// Parses a Responses body under the hub's limits. A request continuing a stored response
    /// (`previous_response_id`, an id only the hub knows) is always translated.
    pub fn parse(body: &[u8], limits: &RequestLimits) -> Result<Self> {
        let (t, kept) = request::parse_keeping(body, limits)?;
        let native = t
            .previous_response_id
            .is_none()
            .then_some(NativeRequest::OpenaiResponses { body: kept });
        Ok(ResponsesRequest { t, native })
    }

    /// Whether the client asked for a stream.
    pub fn stream(&self) -> bool {
        self.t.chat.stream == Some(true)
    }

    /// The translation.
    pub fn translated(&self) -> &Translated {
        &self.t
    }
}

/// A translated request alone: every provider receives the translation.
impl From<Translated> for ResponsesRequest {
    fn from(t: Translated) -> Self {
        ResponsesRequest { t, native: None }
    }
}

/// A non-streaming Responses answer.
#[derive(Debug, Clone)]
pub struct ResponsesResponse {
    /// The response object.
    pub response: Value,
    /// The hub's request id.
    pub request_id: String,
    /// Upstream `x-ratelimit-*` headers.
    pub rate_limit_headers: Vec<(String, String)>,
}

/// What storing the finished response needs.
struct Keep {
    store: ResponseStore,
    owner: i64,
    /// The conversation before this answer, as chat messages (no instructions).
    context: Vec<Value>,
    input_items: Value,
}

impl Keep {
    fn record(
        self,
        id: &str,
        model: &str,
        response: &Value,
        output: &[Value],
    ) -> (ResponseStore, StoredResponse) {
        let mut context = self.context;
        context.extend(response::assistant_message(output));
        let r = StoredResponse {
            id: id.to_owned(),
            owner: self.owner,
            created_ms: crate::time::now_ms(),
            model: model.to_owned(),
            response: response.clone(),
            input_items: self.input_items,
            context: Value::Array(context),
        };
        (self.store, r)
    }
}

/// A streaming Responses answer: semantic events, ending after `response.completed` (or
/// `response.incomplete`) or one `response.failed`. Dropping it cancels the upstream request.
pub struct ResponsesStream {
    inner: ChatStream,
    enc: StreamEncoder,
    queued: VecDeque<SseEvent>,
    ended: bool,
    model: String,
    keep: Option<Keep>,
}

/// Renames a relayed response object to the hub's id and the client's model name.
fn rename(r: &mut Value, id: &str, model: &str) {
    if let Some(o) = r.as_object_mut() {
        o.insert("id".into(), id.into());
        o.insert("model".into(), model.into());
    }
}

impl std::fmt::Debug for ResponsesStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponsesStream")
            .field("request_id", &self.inner.request_id)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl ResponsesStream {
    /// The hub's request id.
    pub fn request_id(&self) -> &str {
        &self.inner.request_id
    }

    /// The chat stream underneath (summary, provider, rate-limit headers).
    pub fn chat_stream(&self) -> &ChatStream {
        &self.inner
    }

    /// The next event; `None` after the last. A stored response is written before
    /// `response.completed` is handed out, so a client that continues from it finds it.
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
                    let events = self.enc.finish(usage.as_ref());
                    if let Some(r) = self.enc.response().cloned() {
                        let output = self.enc.output();
                        self.keep(&r, &output).await;
                    }
                    self.queued.extend(events);
                }
            }
        }
    }
}

impl ResponsesStream {
    /// Stores the finished response (when asked to), logging a failure: the answer is made.
    async fn keep(&mut self, response: &Value, output: &[Value]) {
        if let Some(keep) = self.keep.take() {
            let id = self.enc.id().to_owned();
            let (store, row) = keep.record(&id, &self.model, response, output);
            if let Err(e) = store.put(row).await {
                tracing::error!(request_id = %self.inner.request_id, error = %e,
                    "could not store the response");
            }
        }
    }

    /// A provider event relayed: its response objects renamed; `None` for its failure events
    /// (the hub sends its own `response.failed`, with the public message) and non-JSON data.
    async fn relayed(&mut self, event: &str, data: &str) -> Option<SseEvent> {
        let mut v: Value = serde_json::from_str(data).ok()?;
        let ty = v["type"].as_str().unwrap_or(event).to_owned();
        if ty == "error" || ty == "response.failed" {
            return None;
        }
        if let Some(n) = v["sequence_number"].as_u64() {
            self.enc.continue_at(n + 1);
        }
        let id = self.enc.id().to_owned();
        if let Some(r) = v.get_mut("response") {
            rename(r, &id, &self.model);
        }
        if ty == "response.completed" || ty == "response.incomplete" {
            let r = v["response"].clone();
            let output = r["output"].as_array().cloned().unwrap_or_default();
            self.keep(&r, &output).await;
        }
        let name = if event.is_empty() {
            ty
        } else {
            event.to_owned()
        };
        Some(SseEvent {
            event: name.into(),
            data: v,
        })
    }

    /// The provider's own events (an `openai` provider with the Responses API), in order; a
    /// failure ends the stream with the hub's `response.failed`.
    async fn next_relayed(&mut self, raw: &crate::chat_stream::RawEvents) -> Option<SseEvent> {
        loop {
            if let Some(e) = self.queued.pop_front() {
                return Some(e);
            }
            let next = raw.lock().ok().and_then(|mut q| q.pop_front());
            if let Some((event, data)) = next {
                if let Some(e) = self.relayed(&event, &data).await {
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
                    // The events before the failure first, then the failure.
                    let before: Vec<_> = raw
                        .lock()
                        .map(|mut q| q.drain(..).collect())
                        .unwrap_or_default();
                    for (ev, d) in before {
                        if let Some(e) = self.relayed(&ev, &d).await {
                            self.queued.push_back(e);
                        }
                    }
                    self.queued.push_back(self.enc.error(&e));
                }
                None => self.ended = true,
            }
        }
    }
}

fn responses_ctx(mut ctx: RequestContext) -> RequestContext {
    ctx.endpoint = Endpoint::Responses;
    ctx
}

impl Hub {
    fn response_store(&self) -> ResponseStore {
        ResponseStore(self.0.registry.store().clone())
    }

    /// The key id stored responses belong to: the client key's, 0 for the admin and the
    /// library's own calls.
    fn response_owner(&self, caller: &Caller) -> Result<i64> {
        match caller {
            Caller::Key(k) => Ok(self.0.registry.authenticate(k)?.id),
            Caller::Admitted(a) => Ok(a.key().id),
            Caller::Admin { .. } => Ok(0),
        }
    }

    /// The chat request to send (an earlier response's conversation before this input) and what
    /// keeping the answer needs.
    async fn responses_prepare(
        &self,
        caller: &Caller,
        t: Translated,
    ) -> Result<(ChatRequest, Option<Keep>)> {
        let owner = self.response_owner(caller)?;
        let store = self.response_store();
        let mut prior = Vec::new();
        if let Some(prev) = &t.previous_response_id {
            let r = store.get(prev, owner).await?;
            prior = stored::context_messages(&r)?;
        }
        let Translated {
            mut chat,
            has_instructions,
            store: keep,
            input_items,
            ..
        } = t;
        let input: Vec<Value> = if prior.is_empty() {
            chat.messages.clone()
        } else {
            let mut msgs = std::mem::take(&mut chat.messages);
            let rest = msgs.split_off(usize::from(has_instructions));
            let mut all = msgs;
            all.extend(prior.iter().cloned());
            all.extend(rest);
            chat.messages = all;
            chat.messages.clone()
        };
        request::check_limits(&chat, self.request_limits())?;
        chat.validate()?;
        let keep = keep.then(|| {
            // The context kept: everything but the instructions.
            let context = input
                .into_iter()
                .skip(usize::from(has_instructions))
                .collect();
            Keep {
                store,
                owner,
                context,
                input_items,
            }
        });
        Ok((chat, keep))
    }

    /// A non-streaming Responses request.
    pub async fn responses(
        &self,
        caller: Caller,
        req: impl Into<ResponsesRequest>,
        ctx: RequestContext,
    ) -> Result<ResponsesResponse> {
        let ResponsesRequest { t, native } = req.into();
        let created_at = crate::time::now_ms() / 1000;
        let echo = t.echo.clone();
        let (mut chat, keep) = self.responses_prepare(&caller, t).await?;
        chat.stream = Some(false);
        chat.stream_options = None;
        let model = chat.model.clone();
        let r = self
            .chat_inner(caller, chat, responses_ctx(ctx), true, native.as_ref())
            .await?;
        let id = response::response_id(&r.request_id);
        // The provider's own response object when it was relayed, else the translation.
        let relayed = r
            .native_body
            .as_ref()
            .and_then(|b| serde_json::from_slice::<Value>(b).ok())
            .filter(|v| v["output"].is_array())
            .map(|mut v| {
                rename(&mut v, &id, &model);
                v
            });
        let (object, output) = match relayed {
            Some(v) => {
                let output = v["output"].as_array().cloned().unwrap_or_default();
                (v, output)
            }
            None => {
                let output = response::output_items(&r.completion, &r.request_id);
                let (st, incomplete) = response::status(r.completion.finish_reason());
                let object = response::Envelope {
                    id: &id,
                    created_at,
                    model: &model,
                    echo: &echo,
                }
                .object(st, &output, Some(&r.usage), incomplete, Value::Null);
                (object, output)
            }
        };
        if let Some(keep) = keep {
            let (store, row) = keep.record(&id, &model, &object, &output);
            if let Err(e) = store.put(row).await {
                // The answer is made and counted: the client gets it; the operator sees why a
                // later `previous_response_id` will not find it.
                tracing::error!(request_id = %r.request_id, error = %e, "could not store the response");
            }
        }
        Ok(ResponsesResponse {
            response: object,
            request_id: r.request_id,
            rate_limit_headers: r.rate_limit_headers,
        })
    }

    /// A streaming Responses request. Errors before the stream opened are returned here (to
    /// answer as HTTP errors); later ones are the stream's `response.failed` event.
    pub async fn responses_stream(
        &self,
        caller: Caller,
        req: impl Into<ResponsesRequest>,
        ctx: RequestContext,
    ) -> Result<ResponsesStream> {
        let ResponsesRequest { t, native } = req.into();
        let created_at = crate::time::now_ms() / 1000;
        let echo = t.echo.clone();
        let (mut chat, keep) = self.responses_prepare(&caller, t).await?;
        chat.stream = Some(true);
        chat.stream_options = Some(json!({"include_usage": true}));
        let model = chat.model.clone();
        let inner = self
            .chat_stream_inner(caller, chat, responses_ctx(ctx), native.as_ref())
            .await?;
        let enc = StreamEncoder::new(&model, &inner.request_id, created_at, echo);
        Ok(ResponsesStream {
            inner,
            enc,
            queued: VecDeque::new(),
            ended: false,
            model,
            keep,
        })
    }

    /// A stored response (`GET /v1/responses/{id}`), for the key that made it; 404 otherwise.
    pub async fn get_response(&self, caller: &Caller, id: &str) -> Result<Value> {
        let owner = self.response_owner(caller)?;
        Ok(self.response_store().get(id, owner).await?.response)
    }

    /// A stored response's input items (`GET /v1/responses/{id}/input_items`), as OpenAI's list
    /// object, newest first as OpenAI's default order is.
    pub async fn response_input_items(&self, caller: &Caller, id: &str) -> Result<Value> {
        let owner = self.response_owner(caller)?;
        let r = self.response_store().get(id, owner).await?;
        let mut items: Vec<Value> = match r.input_items {
            Value::Array(a) => a,
            _ => vec![],
        };
        items.reverse();
        let first = items
            .first()
            .and_then(|i| i["id"].as_str())
            .map(str::to_owned);
        let last = items
            .last()
            .and_then(|i| i["id"].as_str())
            .map(str::to_owned);
        Ok(
            json!({"object": "list", "data": items, "first_id": first, "last_id": last,
                  "has_more": false}),
        )
    }

    /// Deletes a stored response (`DELETE /v1/responses/{id}`), for the key that made it.
    pub async fn delete_response(&self, caller: &Caller, id: &str) -> Result<Value> {
        let owner = self.response_owner(caller)?;
        self.response_store().delete(id, owner).await?;
        Ok(json!({"id": id, "object": "response", "deleted": true}))
    }
}
