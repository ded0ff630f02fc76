//! Client wire formats in front of the chat core: each translates a client's request into the
//! core's OpenAI chat request and the core's answers back, so admission, routing, failover,
//! limits and the one usage row per request are the chat path's own.

pub mod messages;
pub mod responses;
pub mod sse;

pub use sse::SseEvent;
