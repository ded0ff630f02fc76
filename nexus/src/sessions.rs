//! Conversation sessions: application-kept chat histories with their model and settings.

use serde_json::Value;

use crate::crypto;
use crate::error::{Error, Result};
use crate::hub::Hub;
use crate::openai::ChatRequest;
use crate::records::{NewSession, Session, SessionMessage};
use crate::time::now_ms;

impl Hub {
    /// Creates a conversation session.
    pub fn create_session(&self, s: NewSession) -> Result<Session> {
        if s.model.trim().is_empty() {
            return Err(Error::invalid_param("model", "model must not be empty"));
        }
        let now = now_ms() / 1000;
        let session = Session {
            id: crypto::random_id(),
            title: s.title,
            model: s.model,
            settings: s.settings,
            created_at: now,
            updated_at: now,
            messages: vec![],
        };
        self.registry().store().create_session(&session)?;
        Ok(session)
    }

    /// Lists sessions, most recently updated first.
    pub fn sessions(&self) -> Result<Vec<Session>> {
        self.registry().store().list_sessions()
    }

    /// Loads a session with its messages.
    pub fn session(&self, id: &str) -> Result<Session> {
        self.registry()
            .store()
            .get_session(id)?
            .ok_or_else(|| Error::not_found(format!("session '{id}'")))
    }

    /// Appends messages (timestamped now) to a session.
    pub fn append_session(&self, id: &str, messages: &[(String, String)]) -> Result<Session> {
        let now = now_ms();
        let msgs: Vec<SessionMessage> = messages
            .iter()
            .map(|(role, content)| SessionMessage {
                role: role.clone(),
                content: content.clone(),
                timestamp_ms: now,
            })
            .collect();
        if !self
            .registry()
            .store()
            .append_session_messages(id, &msgs, now / 1000)?
        {
            return Err(Error::not_found(format!("session '{id}'")));
        }
        self.session(id)
    }

    /// Deletes a session.
    pub fn delete_session(&self, id: &str) -> Result<()> {
        if !self.registry().store().delete_session(id)? {
            return Err(Error::not_found(format!("session '{id}'")));
        }
        Ok(())
    }

    /// Builds the request for a session's next turn: its settings, its history and `user_text`.
    pub fn session_request(&self, id: &str, user_text: &str) -> Result<ChatRequest> {
        let s = self.session(id)?;
        let mut messages: Vec<Value> = s
            .messages
            .iter()
            .map(|m| serde_json::json!({"role": m.role, "content": m.content}))
            .collect();
        messages.push(serde_json::json!({"role": "user", "content": user_text}));
        Ok(ChatRequest {
            model: s.model,
            messages,
            stream: None,
            stream_options: None,
            extra: s.settings,
        })
    }
}
