//! How each provider kind serves an embeddings request: the call to make and how its answer
//! becomes OpenAI's embedding list.
//!
//! - `openai`: `POST {base}/v1/embeddings` (a base ending in `/` gets `embeddings` appended; a
//!   verbatim base ending in `#` must end in `/chat/completions`, which becomes `/embeddings`),
//!   the request re-serialized with the upstream model name and every field passed on, the
//!   answer relayed byte for byte.
//! - `azure`: `{base}/openai/deployments/{deployment}/embeddings?api-version=...` (or, with the
//!   `azure_v1` option, `{base}/openai/v1/embeddings`) with an `api-key` header; otherwise as
//!   `openai`.
//! - `gemini`: `POST {base}/v1beta/models/{model}:batchEmbedContents` with `x-goog-api-key`, one
//!   request per input (`dimensions` → `outputDimensionality`), the answer's `values` turned into
//!   an OpenAI list (base64 encoded by the hub when asked). Gemini embeds text only: token-id
//!   input is refused. Gemini reports no usage: the hub estimates it.
//! - `anthropic`: Anthropic has no embeddings API; refused.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::adapter::{path_segment, UpstreamCall};
use crate::embeddings::{EmbeddingInput, EmbeddingList, EmbeddingsRequest, EncodingFormat};
use crate::error::{Error, Result};
use crate::records::{ProviderKind, AZURE_API_VERSION};
use crate::registry::Candidate;

/// An upstream's embeddings answer, ready for the hub.
#[derive(Debug)]
pub(crate) enum Answer {
    /// OpenAI's JSON as the upstream sent it, with the prompt tokens it reported (if any).
    Relayed {
        body: Bytes,
        prompt_tokens: Option<u64>,
    },
    /// Translated; the hub fills in the usage.
    Translated(EmbeddingList),
}

/// A provider kind's embeddings mapping.
pub(crate) trait EmbeddingsAdapter: Send + Sync {
    /// Whether this kind can serve the request at all (checked before any call, so a
    /// candidate that cannot is skipped rather than failed over to).
    fn supports(&self, req: &EmbeddingsRequest) -> Result<()>;

    /// The call for a request to a candidate.
    fn build(&self, req: &EmbeddingsRequest, cand: &Candidate) -> Result<UpstreamCall>;

    /// The answer body as the hub hands it on.
    fn answer(&self, body: Bytes, req: &EmbeddingsRequest) -> Result<Answer>;
}

/// The embeddings mapping of a provider kind.
pub(crate) fn embeddings_adapter_for(kind: ProviderKind) -> &'static dyn EmbeddingsAdapter {
    match kind {
        ProviderKind::Openai => &OpenAi,
        ProviderKind::Azure => &Azure,
        ProviderKind::Gemini => &Gemini,
        ProviderKind::Anthropic => &Anthropic,
    }
}

fn malformed(why: impl std::fmt::Display, body: &[u8]) -> Error {
    Error::Upstream {
        status: None,
        message: format!("malformed upstream embeddings answer: {why}"),
        body: Some(String::from_utf8_lossy(&body[..body.len().min(4096)]).into_owned()),
        retry_after: None,
    }
}

/// The request as an OpenAI-compatible upstream receives it, borrowed from the caller's.
#[derive(Serialize)]
struct OpenAiBody<'a> {
    model: &'a str,
    input: &'a EmbeddingInput,
    #[serde(skip_serializing_if = "Option::is_none")]
    dimensions: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    encoding_format: Option<EncodingFormat>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(flatten)]
    extra: &'a Map<String, Value>,
}

fn openai_body(req: &EmbeddingsRequest, model: &str) -> Result<Bytes> {
    serde_json::to_vec(&OpenAiBody {
        model,
        input: &req.input,
        dimensions: req.dimensions,
        encoding_format: req.encoding_format,
        user: req.user.as_deref(),
        extra: &req.extra,
    })
    .map(Bytes::from)
    .map_err(|e| Error::Internal(e.to_string()))
}

/// Checks an OpenAI answer without building its vectors: one entry per input, and its usage.
fn relay(body: Bytes, req: &EmbeddingsRequest) -> Result<Answer> {
    #[derive(Deserialize)]
    struct Probe {
        data: Vec<serde::de::IgnoredAny>,
        #[serde(default)]
        usage: Option<ProbeUsage>,
    }
    #[derive(Deserialize)]
    struct ProbeUsage {
        #[serde(default)]
        prompt_tokens: Option<u64>,
    }
    let p: Probe = serde_json::from_slice(&body).map_err(|e| malformed(e, &body))?;
    if p.data.len() != req.input.len() {
        return Err(malformed(
            format!("{} embeddings for {} inputs", p.data.len(), req.input.len()),
            &body,
        ));
    }
    Ok(Answer::Relayed {
        prompt_tokens: p.usage.and_then(|u| u.prompt_tokens),
        body,
    })
}

/// The OpenAI embeddings URL of a configured base URL, by the rules of
/// [`crate::records::chat_endpoint`].
pub(crate) fn openai_embeddings_url(base_url: &str) -> Result<String> {
    let u = base_url.trim();
    if let Some(v) = u.strip_suffix('#') {
        return v
            .strip_suffix("/chat/completions")
            .map(|root| format!("{root}/embeddings"))
            .ok_or_else(|| {
                Error::invalid_param(
                    "model",
                    "this provider's URL is a verbatim chat URL that does not end in \
                     /chat/completions, so no embeddings URL can be derived from it",
                )
            });
    }
    Ok(if u.ends_with('/') {
        format!("{u}embeddings")
    } else {
        format!("{u}/v1/embeddings")
    })
}

struct OpenAi;

impl EmbeddingsAdapter for OpenAi {
    fn supports(&self, _req: &EmbeddingsRequest) -> Result<()> {
        Ok(())
    }

    fn build(&self, req: &EmbeddingsRequest, cand: &Candidate) -> Result<UpstreamCall> {
        Ok(UpstreamCall {
            url: Some(openai_embeddings_url(&cand.provider.record.base_url)?),
            auth: super::adapter::Auth::Bearer,
            headers: vec![],
            body: openai_body(req, cand.model.upstream())?,
            extra_usage_chunk: false,
        })
    }

    fn answer(&self, body: Bytes, req: &EmbeddingsRequest) -> Result<Answer> {
        relay(body, req)
    }
}

struct Azure;

impl EmbeddingsAdapter for Azure {
    fn supports(&self, _req: &EmbeddingsRequest) -> Result<()> {
        Ok(())
    }

    fn build(&self, req: &EmbeddingsRequest, cand: &Candidate) -> Result<UpstreamCall> {
        let p = &cand.provider.record;
        let root = p.base_url.trim().trim_end_matches('/');
        let deployment = cand.model.upstream();
        let url = if p.options.azure_v1.unwrap_or(false) {
            format!("{root}/openai/v1/embeddings")
        } else {
            format!(
                "{root}/openai/deployments/{}/embeddings?api-version={}",
                path_segment(deployment)?,
                p.options
                    .api_version
                    .as_deref()
                    .unwrap_or(AZURE_API_VERSION)
            )
        };
        Ok(UpstreamCall {
            url: Some(url),
            auth: crate::upstream::adapter::Auth::Header("api-key"),
            headers: vec![],
            body: openai_body(req, deployment)?,
            extra_usage_chunk: false,
        })
    }

    fn answer(&self, body: Bytes, req: &EmbeddingsRequest) -> Result<Answer> {
        relay(body, req)
    }
}

struct Gemini;

impl EmbeddingsAdapter for Gemini {
    fn supports(&self, req: &EmbeddingsRequest) -> Result<()> {
        if req.input.is_tokens() {
            return Err(Error::invalid_param(
                "input",
                "this model is served by Gemini, which embeds text only: send `input` as \
                 strings, not token ids",
            ));
        }
        Ok(())
    }

    fn build(&self, req: &EmbeddingsRequest, cand: &Candidate) -> Result<UpstreamCall> {
        self.supports(req)?;
        let root = cand.provider.record.base_url.trim().trim_end_matches('/');
        let model = super::gemini::model_segment(cand.model.upstream())?;
        // Each request names the model again; Gemini refuses one that differs from the URL's.
        let requests: Vec<Value> = req
            .input
            .texts()
            .into_iter()
            .map(|text| {
                let mut r = json!({
                    "model": format!("models/{model}"),
                    "content": {"parts": [{"text": text}]},
                });
                if let Some(d) = req.dimensions {
                    r["outputDimensionality"] = d.into();
                }
                r
            })
            .collect();
        let body = serde_json::to_vec(&json!({ "requests": requests }))
            .map_err(|e| Error::Internal(e.to_string()))?;
        Ok(UpstreamCall {
            url: Some(format!("{root}/v1beta/models/{model}:batchEmbedContents")),
            auth: crate::upstream::adapter::Auth::Header("x-goog-api-key"),
            headers: vec![],
            body: Bytes::from(body),
            extra_usage_chunk: false,
        })
    }

    fn answer(&self, body: Bytes, req: &EmbeddingsRequest) -> Result<Answer> {
        #[derive(Deserialize)]
        struct Batch {
            #[serde(default)]
            embeddings: Vec<ContentEmbedding>,
        }
        #[derive(Deserialize)]
        struct ContentEmbedding {
            values: Vec<f32>,
        }
        let b: Batch = serde_json::from_slice(&body).map_err(|e| malformed(e, &body))?;
        if b.embeddings.len() != req.input.len() {
            return Err(malformed(
                format!(
                    "{} embeddings for {} inputs",
                    b.embeddings.len(),
                    req.input.len()
                ),
                &body,
            ));
        }
        Ok(Answer::Translated(EmbeddingList::new(
            &req.model,
            b.embeddings.into_iter().map(|e| e.values).collect(),
            req.format(),
        )))
    }
}

struct Anthropic;

impl EmbeddingsAdapter for Anthropic {
    fn supports(&self, _req: &EmbeddingsRequest) -> Result<()> {
        Err(Error::invalid_param(
            "model",
            "this model is served by an Anthropic provider, and Anthropic has no embeddings \
             API; serve it from an openai, azure or gemini provider",
        ))
    }

    fn build(&self, req: &EmbeddingsRequest, _cand: &Candidate) -> Result<UpstreamCall> {
        Err(self
            .supports(req)
            .err()
            .unwrap_or_else(|| Error::Internal("anthropic embeddings".into())))
    }

    fn answer(&self, _body: Bytes, req: &EmbeddingsRequest) -> Result<Answer> {
        Err(self
            .supports(req)
            .err()
            .unwrap_or_else(|| Error::Internal("anthropic embeddings".into())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embeddings::EmbeddingVector;

    #[test]
    fn openai_urls_follow_the_chat_rules() {
        assert_eq!(
            openai_embeddings_url("https://api.x.com").unwrap(),
            "https://api.x.com/v1/embeddings"
        );
        assert_eq!(
            openai_embeddings_url("https://api.x.com/v4/").unwrap(),
            "https://api.x.com/v4/embeddings"
        );
        assert_eq!(
            openai_embeddings_url("https://h/p/chat/completions#").unwrap(),
            "https://h/p/embeddings"
        );
        assert!(openai_embeddings_url("https://h/custom#").is_err());
    }

    #[test]
    fn relay_checks_the_count_and_reads_usage() {
        let req = EmbeddingsRequest::new("e", vec!["a".to_owned(), "b".to_owned()]);
        let body = Bytes::from_static(
            br#"{"object":"list","data":[{"embedding":[1]},{"embedding":"AAAA"}],"usage":{"prompt_tokens":3,"total_tokens":3}}"#,
        );
        match relay(body.clone(), &req).unwrap() {
            Answer::Relayed {
                body: b,
                prompt_tokens,
            } => {
                assert_eq!(b, body);
                assert_eq!(prompt_tokens, Some(3));
            }
            Answer::Translated(_) => panic!("relayed"),
        }
        let one = Bytes::from_static(br#"{"data":[{"embedding":[1]}]}"#);
        assert!(relay(one, &req).is_err());
        assert!(relay(Bytes::from_static(b"{}"), &req).is_err());
    }

    #[test]
    fn gemini_answers_become_openai_lists() {
        let mut req = EmbeddingsRequest::new("g", vec!["a".to_owned(), "b".to_owned()]);
        req.encoding_format = Some(EncodingFormat::Base64);
        let body =
            Bytes::from_static(br#"{"embeddings":[{"values":[1.0,-0.5]},{"values":[0.25,0]}]}"#);
        let Answer::Translated(list) = Gemini.answer(body, &req).unwrap() else {
            panic!("translated")
        };
        assert_eq!(list.model, "g");
        assert_eq!(list.data.len(), 2);
        assert_eq!(list.data[1].index, 1);
        assert_eq!(
            list.data[0].embedding,
            EmbeddingVector::Base64("AACAPwAAAL8=".into())
        );
        let mut tokens = req.clone();
        tokens.input = EmbeddingInput::Tokens(vec![1, 2]);
        assert_eq!(Gemini.supports(&tokens).unwrap_err().http_status(), 400);
        assert!(Anthropic.supports(&req).is_err());
    }
}
