//! Who asks ([`Caller`]) and the per-request context ([`RequestContext`]) every front end hands the
//! hub.

use crate::admission::Admitted;
use crate::stats::RequestSource;
use crate::usage::Endpoint;

/// Who is asking.
#[derive(Debug, Clone)]
pub enum Caller {
    /// A client key as presented (`Authorization: Bearer ...`).
    Key(String),
    /// A key already admitted by [`Hub::admit`] (the server admits before reading the body).
    Admitted(Admitted),
    /// A trusted caller (admin UI, the library's owner): no key checks; optionally pinned to one
    /// provider.
    Admin {
        /// Serve from this provider only.
        provider_id: Option<i64>,
    },
}

/// Per-request context.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// Request id (generated when absent).
    pub request_id: Option<String>,
    /// Conversation id (generated when absent).
    pub conversation_id: Option<String>,
    /// Front end, for stats.
    pub source: RequestSource,
    /// The API the client spoke, for stats.
    pub endpoint: Endpoint,
}

impl Default for RequestContext {
    fn default() -> Self {
        RequestContext {
            request_id: None,
            conversation_id: None,
            source: RequestSource::Library,
            endpoint: Endpoint::Chat,
        }
    }
}
