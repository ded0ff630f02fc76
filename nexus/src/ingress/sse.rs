//! One server-sent event, as the Anthropic Messages and OpenAI Responses streams send them:
//! a named event with a JSON payload.

use std::borrow::Cow;

use serde_json::Value;

/// One server-sent event.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    /// The `event:` name (`message_start`, `response.output_text.delta`, ...): the hub's own
    /// names, or a provider's as it sent them when its events are relayed.
    pub event: Cow<'static, str>,
    /// The `data:` JSON.
    pub data: Value,
}

impl SseEvent {
    pub(crate) fn new(event: &'static str, data: Value) -> Self {
        SseEvent {
            event: Cow::Borrowed(event),
            data,
        }
    }

    /// The event name.
    pub fn name(&self) -> &str {
        &self.event
    }

    /// The event on the wire: `event: NAME\ndata: JSON\n\n`.
    pub fn to_wire(&self) -> String {
        format!("event: {}\ndata: {}\n\n", self.event, self.data)
    }
}
