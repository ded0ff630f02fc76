//! A provider's own model list, per wire format: where it is, how to ask, how to read the answer.
//! Used to import models into the registry and as the cheap probe of the health checks.
//!
//! - OpenAI and compatible servers: `GET {base}/v1/models` → `{"data": [{"id", "created",
//!   "owned_by"}]}` (one page).
//! - Anthropic: `GET {base}/v1/models?limit=1000` with `x-api-key` and `anthropic-version` →
//!   `{"data": [{"id", "display_name", "created_at"}], "has_more", "last_id"}`, paged with
//!   `after_id`.
//! - Gemini: `GET {base}/v1beta/models?pageSize=1000` with `x-goog-api-key` → `{"models":
//!   [{"name": "models/…", "displayName", "supportedGenerationMethods"}], "nextPageToken"}`.
//! - Azure OpenAI: deployments (the names requests use) are not listed by the data-plane API, so
//!   there is no list; its probe is a one-token completion instead.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::records::{ModelKind, ProviderKind, ANTHROPIC_VERSION};
use crate::registry::ProviderEntry;

/// At most this many pages are read from a paged list (a thousand models each).
pub(crate) const MAX_PAGES: usize = 10;

/// A model as its provider lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpstreamModel {
    /// The name to send upstream (Gemini's without its `models/` prefix).
    pub id: String,
    /// The provider's display name, when it gives one.
    pub display_name: Option<String>,
    /// Chat or embedding, as far as the list tells (Gemini's methods; otherwise the name).
    pub kind: ModelKind,
    /// The provider already serves a model of this name in the registry.
    #[serde(default)]
    pub added: bool,
}

/// One request of a list: its URL and credential headers.
pub(crate) struct ListCall {
    pub(crate) url: String,
    pub(crate) headers: Vec<(&'static str, String)>,
}

/// The first page's request, or why the provider has no list.
pub(crate) fn list_call(p: &ProviderEntry, page: Option<&str>) -> Result<ListCall> {
    let endpoint = p.record.endpoint.as_str();
    let no_list = |why: &str| {
        Error::invalid_param(
            "provider",
            format!("provider '{}' has no model list: {why}", p.record.name),
        )
    };
    match p.record.kind {
        ProviderKind::Openai => {
            let base = endpoint
                .split('?')
                .next()
                .and_then(|u| u.strip_suffix("chat/completions"))
                .ok_or_else(|| no_list("its endpoint is a verbatim URL"))?;
            Ok(ListCall {
                url: format!("{base}models"),
                headers: vec![("authorization", format!("Bearer {}", p.api_key.expose()))],
            })
        }
        ProviderKind::Anthropic => {
            let base = endpoint
                .strip_suffix("/messages")
                .ok_or_else(|| no_list("its endpoint is a verbatim URL"))?;
            let after = page.map(|a| format!("&after_id={a}")).unwrap_or_default();
            let o = &p.record.options;
            Ok(ListCall {
                url: format!("{base}/models?limit=1000{after}"),
                headers: vec![
                    ("x-api-key", p.api_key.expose().to_owned()),
                    (
                        "anthropic-version",
                        o.api_version
                            .clone()
                            .unwrap_or_else(|| ANTHROPIC_VERSION.to_owned()),
                    ),
                ],
            })
        }
        ProviderKind::Gemini => {
            let root = endpoint
                .split("/v1beta/models/")
                .next()
                .filter(|r| *r != endpoint)
                .ok_or_else(|| no_list("unexpected endpoint"))?;
            let token = page.map(|t| format!("&pageToken={t}")).unwrap_or_default();
            Ok(ListCall {
                url: format!("{root}/v1beta/models?pageSize=1000{token}"),
                headers: vec![("x-goog-api-key", p.api_key.expose().to_owned())],
            })
        }
        ProviderKind::Azure => Err(no_list(
            "Azure OpenAI does not list deployments through its API; add them by name",
        )),
    }
}

/// The models of one page and the next page's token, if any.
pub(crate) fn parse_page(
    kind: ProviderKind,
    body: &[u8],
) -> Result<(Vec<UpstreamModel>, Option<String>)> {
    let v: Value = serde_json::from_slice(body).map_err(|e| Error::Upstream {
        status: None,
        message: format!("the model list is not JSON: {e}"),
        body: Some(crate::openai::truncate(
            &String::from_utf8_lossy(body),
            4096,
        )),
        retry_after: None,
    })?;
    let malformed = || Error::Upstream {
        status: None,
        message: "the model list has an unexpected shape".into(),
        body: Some(crate::openai::truncate(&v.to_string(), 4096)),
        retry_after: None,
    };
    let text = |m: &Value, f: &str| m.get(f).and_then(Value::as_str).map(str::to_owned);
    let by_name = |id: &str| {
        if id.contains("embed") {
            ModelKind::Embedding
        } else {
            ModelKind::Chat
        }
    };
    let array = |k: &str| v.get(k).and_then(Value::as_array).ok_or_else(malformed);
    match kind {
        ProviderKind::Openai | ProviderKind::Azure => {
            let data = array("data")?;
            let models = data
                .iter()
                .filter_map(|m| {
                    let id = text(m, "id")?;
                    Some(UpstreamModel {
                        kind: by_name(&id),
                        display_name: None,
                        id,
                        added: false,
                    })
                })
                .collect();
            Ok((models, None))
        }
        ProviderKind::Anthropic => {
            let data = array("data")?;
            let models = data
                .iter()
                .filter_map(|m| {
                    Some(UpstreamModel {
                        id: text(m, "id")?,
                        display_name: text(m, "display_name"),
                        kind: ModelKind::Chat,
                        added: false,
                    })
                })
                .collect();
            let more = v.get("has_more").and_then(Value::as_bool).unwrap_or(false);
            Ok((models, if more { text(&v, "last_id") } else { None }))
        }
        ProviderKind::Gemini => {
            let data = array("models")?;
            let models = data
                .iter()
                .filter_map(|m| {
                    let name = text(m, "name")?;
                    let methods: Vec<&str> = m
                        .get("supportedGenerationMethods")
                        .and_then(Value::as_array)
                        .map(|a| a.iter().filter_map(Value::as_str).collect())
                        .unwrap_or_default();
                    let kind = if methods.contains(&"generateContent") {
                        ModelKind::Chat
                    } else if methods.iter().any(|x| x.contains("mbed")) {
                        ModelKind::Embedding
                    } else {
                        by_name(&name)
                    };
                    Some(UpstreamModel {
                        id: name.strip_prefix("models/").unwrap_or(&name).to_owned(),
                        display_name: text(m, "displayName"),
                        kind,
                        added: false,
                    })
                })
                .collect();
            Ok((models, text(&v, "nextPageToken").filter(|t| !t.is_empty())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_format_is_read() {
        let (m, next) = parse_page(
            ProviderKind::Openai,
            json!({"object": "list", "data": [
                {"id": "gpt-4o", "object": "model", "created": 1, "owned_by": "openai"},
                {"id": "text-embedding-3-small", "object": "model", "created": 1, "owned_by": "openai"}]})
            .to_string()
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(next, None);
        assert_eq!(m[0].id, "gpt-4o");
        assert_eq!(m[1].kind, ModelKind::Embedding);
        let (m, next) = parse_page(
            ProviderKind::Anthropic,
            json!({"data": [{"type": "model", "id": "claude-sonnet-4-5", "display_name": "Claude Sonnet 4.5",
                              "created_at": "2025-09-29T00:00:00Z"}],
                   "has_more": true, "first_id": "claude-sonnet-4-5", "last_id": "claude-sonnet-4-5"})
            .to_string()
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(m[0].display_name.as_deref(), Some("Claude Sonnet 4.5"));
        assert_eq!(next.as_deref(), Some("claude-sonnet-4-5"));
        let (m, next) = parse_page(
            ProviderKind::Gemini,
            json!({"models": [
                {"name": "models/gemini-2.5-flash", "displayName": "Gemini 2.5 Flash",
                 "supportedGenerationMethods": ["generateContent", "countTokens"]},
                {"name": "models/gemini-embedding-001", "supportedGenerationMethods": ["embedContent"]}],
                   "nextPageToken": ""})
            .to_string()
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(next, None);
        assert_eq!(
            (m[0].id.as_str(), m[0].kind),
            ("gemini-2.5-flash", ModelKind::Chat)
        );
        assert_eq!(m[1].kind, ModelKind::Embedding);
        assert!(parse_page(ProviderKind::Openai, b"{\"models\": 1}").is_err());
        assert!(parse_page(ProviderKind::Gemini, b"not json").is_err());
    }
}
