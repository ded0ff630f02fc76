//! `nexus.Hub`: the core [`nexus::Hub`] with Python calling conventions.
//!
//! Arguments are copied into owned Rust values while the GIL is held; the work then runs with
//! the GIL released (database calls directly, network calls through [`wait`] or, for the async
//! methods, on the runtime via `future_into_py`); the GIL is taken back only to build results.

use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use nexus::openai::ChatRequest;
use nexus::records::{
    KeyPatch, ModelPatch, NewKey, NewModel, NewProvider, NewSession, ProviderPatch,
};
use nexus::stats::TimeseriesQuery;
use nexus::{Caller, EmbeddingsRequest, RequestContext};

use crate::convert::{dumps, from_py, loads, to_py, ChatResult, Json};
use crate::errors::{invalid, IntoPyResult};
use crate::runtime::{detach, wait};
use crate::stream::{AsyncChatStream, ChatStream, StreamCore};

/// `**kwargs` as a new dict to add to. A copy: a C caller may hand over a dict it keeps.
fn kwargs_dict<'py>(
    py: Python<'py>,
    kwargs: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyDict>> {
    match kwargs {
        Some(d) => d.copy(),
        None => Ok(PyDict::new(py)),
    }
}

fn caller(api_key: Option<String>) -> Caller {
    match api_key {
        Some(k) => Caller::Key(k),
        None => Caller::Admin { provider_id: None },
    }
}

fn context(conversation_id: Option<String>) -> RequestContext {
    RequestContext {
        conversation_id,
        ..RequestContext::default()
    }
}

/// Builds a chat request from `model`, `messages` and OpenAI parameters (`temperature`,
/// `tools`, `response_format`, vendor extras...), which pass through untouched.
fn chat_request(
    model: &str,
    messages: &Bound<'_, PyAny>,
    params: Option<&Bound<'_, PyDict>>,
    stream: bool,
) -> PyResult<ChatRequest> {
    let py = messages.py();
    let body = kwargs_dict(py, params)?;
    if body.contains("stream")? {
        return Err(invalid(
            "`stream` is chosen by the method: use chat_stream() or achat_stream() to stream",
        ));
    }
    body.set_item("model", model)?;
    body.set_item("messages", messages)?;
    if stream {
        body.set_item("stream", true)?;
    }
    ChatRequest::from_slice(dumps(body.as_any(), "request")?.as_bytes()).py()
}

/// Builds an embeddings request from `model`, `input` (a str, list of str, list of token ids or
/// list of token-id lists), the optional `dimensions` / `encoding_format`, and extra OpenAI
/// parameters (`user`, vendor extras), which pass through untouched.
fn embeddings_request(
    model: &str,
    input: &Bound<'_, PyAny>,
    dimensions: Option<u32>,
    encoding_format: Option<&str>,
    params: Option<&Bound<'_, PyDict>>,
) -> PyResult<EmbeddingsRequest> {
    let py = input.py();
    let body = kwargs_dict(py, params)?;
    body.set_item("model", model)?;
    body.set_item("input", input)?;
    if let Some(d) = dimensions {
        body.set_item("dimensions", d)?;
    }
    if let Some(f) = encoding_format {
        body.set_item("encoding_format", f)?;
    }
    EmbeddingsRequest::from_slice(dumps(body.as_any(), "request")?.as_bytes()).py()
}

/// A NexusAI Hub: providers, models and client keys in one SQLite file; chat through them, sync
/// or asyncio, streamed or not; exact token counts; usage statistics; conversation sessions.
/// Thread-safe: share one per process.
#[pyclass(module = "nexus._nexus", frozen)]
pub(crate) struct Hub {
    hub: nexus::Hub,
}

impl Hub {
    /// Runs database work without the GIL.
    fn blocking<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&nexus::Hub) -> nexus::Result<T> + Send,
    ) -> PyResult<T> {
        detach(py, || f(&self.hub)).py()
    }
}

#[pymethods]
impl Hub {
    /// Opens (creating if needed) the hub database at `path`; None or `":memory:"` is a
    /// private in-memory hub. `master_key` (base64 of 32 bytes) encrypts upstream keys at
    /// rest; by default it comes from `NEXUS_MASTER_KEY`, else a key file `<path>.key`.
    #[new]
    #[pyo3(signature = (path = None, *, master_key = None, record_messages = true))]
    fn new(
        py: Python<'_>,
        path: Option<PathBuf>,
        master_key: Option<&str>,
        record_messages: bool,
    ) -> PyResult<Self> {
        // The same settings schema as the server's file and the C API's options.
        let opts = nexus::HubSettings {
            master_key: master_key.map(str::to_owned),
            record_messages: Some(record_messages),
            ..nexus::HubSettings::default()
        }
        .to_options()
        .py()?;
        let path = path.filter(|p| p.as_os_str() != ":memory:");
        let hub = detach(py, move || match path {
            None => nexus::Hub::open_in_memory(opts),
            Some(p) => nexus::Hub::open(&p, opts),
        })
        .py()?;
        Ok(Hub { hub })
    }

    fn __repr__(&self) -> String {
        match self.hub.db_path() {
            Some(p) => format!("<nexus.Hub {}>", p.display()),
            None => "<nexus.Hub :memory:>".to_owned(),
        }
    }

    // ---- providers ---------------------------------------------------------------------------

    /// Adds a provider and returns its record (the upstream key is never returned, only a
    /// hint). `base_url` ending in `/` gets `chat/completions` appended, ending in `#` is used
    /// verbatim, else `/v1/chat/completions` is appended. Other fields: `description`,
    /// `enabled`, `options` (`first_byte_timeout_ms`, `idle_timeout_ms`, `max_retries`,
    /// `weight`, `headers`, `normalize`, `request_usage`).
    #[pyo3(signature = (name, base_url, api_key, **fields))]
    fn create_provider(
        &self,
        py: Python<'_>,
        name: &str,
        base_url: &str,
        api_key: &str,
        fields: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let d = kwargs_dict(py, fields)?;
        d.set_item("name", name)?;
        d.set_item("base_url", base_url)?;
        d.set_item("api_key", api_key)?;
        let p: NewProvider = from_py(d.as_any(), "provider")?;
        let rec = self.blocking(py, |h| h.registry().create_provider(p))?;
        to_py(py, &rec)
    }

    /// Lists providers.
    fn providers(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let v = self.blocking(py, |h| h.registry().providers())?;
        to_py(py, &v)
    }

    /// Updates a provider; only the given fields change (`api_key=""` keeps the key).
    #[pyo3(signature = (provider_id, **fields))]
    fn update_provider(
        &self,
        py: Python<'_>,
        provider_id: i64,
        fields: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let p: ProviderPatch = from_py(kwargs_dict(py, fields)?.as_any(), "provider")?;
        let v = self.blocking(py, |h| h.registry().update_provider(provider_id, p))?;
        to_py(py, &v)
    }

    /// Deletes a provider and its models.
    fn delete_provider(&self, py: Python<'_>, provider_id: i64) -> PyResult<()> {
        self.blocking(py, |h| h.registry().delete_provider(provider_id))
    }

    /// Calls every model of a provider, streamed and not: stream support, time to first token,
    /// total time, tokens per second.
    fn test_provider(&self, py: Python<'_>, provider_id: i64) -> PyResult<Py<PyAny>> {
        let hub = self.hub.clone();
        let report = wait(py, async move { hub.test_provider(provider_id).await.py() })?;
        to_py(py, &report)
    }

    // ---- models ------------------------------------------------------------------------------

    /// Adds a model to a provider (`upstream_name`, `description`, `input_price`,
    /// `output_price` optional; prices per million tokens).
    #[pyo3(signature = (provider_id, name, **fields))]
    fn create_model(
        &self,
        py: Python<'_>,
        provider_id: i64,
        name: &str,
        fields: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let d = kwargs_dict(py, fields)?;
        d.set_item("name", name)?;
        let m: NewModel = from_py(d.as_any(), "model")?;
        let v = self.blocking(py, |h| h.registry().create_model(provider_id, m))?;
        to_py(py, &v)
    }

    /// Lists models, of one provider or all.
    #[pyo3(signature = (provider_id = None))]
    fn models(&self, py: Python<'_>, provider_id: Option<i64>) -> PyResult<Py<PyAny>> {
        let v = self.blocking(py, |h| h.registry().models(provider_id))?;
        to_py(py, &v)
    }

    /// Updates a model; only the given fields change (a price of None clears it).
    #[pyo3(signature = (model_id, **fields))]
    fn update_model(
        &self,
        py: Python<'_>,
        model_id: i64,
        fields: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let p: ModelPatch = from_py(kwargs_dict(py, fields)?.as_any(), "model")?;
        let v = self.blocking(py, |h| h.registry().update_model(model_id, p))?;
        to_py(py, &v)
    }

    /// Deletes a model.
    fn delete_model(&self, py: Python<'_>, model_id: i64) -> PyResult<()> {
        self.blocking(py, |h| h.registry().delete_model(model_id))
    }

    // ---- client keys -------------------------------------------------------------------------

    /// Creates a client key (`provider_ids`, `models`, `expires_at`, `rpm`, `tpm`,
    /// `max_concurrent`, `budget_usd`, `budget_period`, `soft_budget_usd`, `enabled` optional).
    /// The result's `key` is the plaintext: shown once, only its hash is stored.
    #[pyo3(signature = (name, **fields))]
    fn create_key(
        &self,
        py: Python<'_>,
        name: &str,
        fields: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let d = kwargs_dict(py, fields)?;
        d.set_item("name", name)?;
        let k: NewKey = from_py(d.as_any(), "key")?;
        let v = self.blocking(py, |h| h.registry().create_key(k))?;
        to_py(py, &v)
    }

    /// Lists client keys (prefixes only, never the secret).
    fn keys(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let v = self.blocking(py, |h| h.registry().keys())?;
        to_py(py, &v)
    }

    /// Updates a key (`name`, `enabled`, `expires_at`, `rpm`, `tpm`, `max_concurrent`,
    /// `budget_usd`, `budget_period`, `soft_budget_usd`, `provider_ids`, `models`; None clears a
    /// limit, a budget or the expiry).
    #[pyo3(signature = (key_id, **fields))]
    fn update_key(
        &self,
        py: Python<'_>,
        key_id: i64,
        fields: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let p: KeyPatch = from_py(kwargs_dict(py, fields)?.as_any(), "key")?;
        let v = self.blocking(py, |h| h.registry().update_key(key_id, p))?;
        to_py(py, &v)
    }

    /// Revokes a key.
    fn delete_key(&self, py: Python<'_>, key_id: i64) -> PyResult<()> {
        self.blocking(py, |h| h.registry().delete_key(key_id))
    }

    /// A key's spend in its current budget period: `spent_usd`, `budget_usd`,
    /// `budget_left_usd`, `period`, `period_start`, `period_end`, `soft_budget_reached`, ...
    fn key_spend(&self, py: Python<'_>, key_id: i64) -> PyResult<Py<PyAny>> {
        let v = self.blocking(py, |h| h.key_spend(key_id))?;
        to_py(py, &v)
    }

    /// Recomputes recorded costs at today's prices (`since`, `until` unix seconds, `model`,
    /// `provider_id`, `dry_run`); returns how many rows changed. History is never repriced
    /// otherwise.
    #[pyo3(signature = (**query))]
    fn reprice(&self, py: Python<'_>, query: Option<&Bound<'_, PyDict>>) -> PyResult<Py<PyAny>> {
        let q: nexus::usage::RepriceQuery = from_py(kwargs_dict(py, query)?.as_any(), "reprice")?;
        let v = self.blocking(py, |h| h.reprice(&q))?;
        to_py(py, &v)
    }

    // ---- tokens ------------------------------------------------------------------------------

    /// Counts the tokens of `text` as `model` would: `{"tokens", "method", "encoding"}`. Exact
    /// (`method == "exact"`) where the model's encoding is known, else a labelled estimate.
    fn count_tokens(&self, py: Python<'_>, model: &str, text: &str) -> PyResult<Py<PyAny>> {
        let c = detach(py, || self.hub.count_text(model, text));
        to_py(py, &c)
    }

    /// Counts the prompt tokens of chat messages, with OpenAI's per-message overhead (3 per
    /// message, 1 per `name`, 3 to prime the reply).
    fn count_messages(
        &self,
        py: Python<'_>,
        model: &str,
        messages: &Bound<'_, PyAny>,
    ) -> PyResult<Py<PyAny>> {
        let msgs: Vec<serde_json::Value> = from_py(messages, "messages")?;
        let c = detach(py, || self.hub.count_messages(model, &msgs));
        to_py(py, &c)
    }

    // ---- chat --------------------------------------------------------------------------------

    /// A chat completion, as the dict OpenAI would answer. `api_key` is a client key (its
    /// scope, expiry and limits apply), or None to call as the hub's owner. `conversation_id`
    /// groups requests in the stats. Other keyword arguments are request parameters and pass
    /// through to the upstream.
    #[pyo3(signature = (model, messages, *, api_key = None, conversation_id = None, **params))]
    fn chat(
        &self,
        py: Python<'_>,
        model: &str,
        messages: &Bound<'_, PyAny>,
        api_key: Option<String>,
        conversation_id: Option<String>,
        params: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let req = chat_request(model, messages, params, false)?;
        let hub = self.hub.clone();
        let result = wait(py, async move {
            let resp = hub
                .chat(caller(api_key), req, context(conversation_id))
                .await
                .py()?;
            Ok(ChatResult::of(&resp))
        })?;
        Ok(result.into_pyobject(py)?.unbind())
    }

    /// A streamed chat: returns once the upstream has started answering (errors before that
    /// raise here), then iterate for chunk dicts. Closing the stream (or leaving a `with`
    /// block, or dropping it) cancels the upstream request.
    #[pyo3(signature = (model, messages, *, api_key = None, conversation_id = None, **params))]
    fn chat_stream(
        &self,
        py: Python<'_>,
        model: &str,
        messages: &Bound<'_, PyAny>,
        api_key: Option<String>,
        conversation_id: Option<String>,
        params: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<ChatStream> {
        let req = chat_request(model, messages, params, true)?;
        let hub = self.hub.clone();
        let s = wait(py, async move {
            hub.chat_stream(caller(api_key), req, context(conversation_id))
                .await
                .py()
        })?;
        Ok(ChatStream(StreamCore::new(s)))
    }

    /// The asyncio form of `chat`: an awaitable of the same dict.
    #[pyo3(signature = (model, messages, *, api_key = None, conversation_id = None, **params))]
    fn achat<'py>(
        &self,
        py: Python<'py>,
        model: &str,
        messages: &Bound<'py, PyAny>,
        api_key: Option<String>,
        conversation_id: Option<String>,
        params: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let req = chat_request(model, messages, params, false)?;
        let hub = self.hub.clone();
        crate::runtime::future_into_py(py, async move {
            let resp = hub
                .chat(caller(api_key), req, context(conversation_id))
                .await
                .py()?;
            Ok(ChatResult::of(&resp))
        })
    }

    /// The asyncio form of `chat_stream`: await it for an `AsyncChatStream` (`async for`);
    /// `aclose()` or leaving `async with` cancels the upstream request.
    #[pyo3(signature = (model, messages, *, api_key = None, conversation_id = None, **params))]
    fn achat_stream<'py>(
        &self,
        py: Python<'py>,
        model: &str,
        messages: &Bound<'py, PyAny>,
        api_key: Option<String>,
        conversation_id: Option<String>,
        params: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let req = chat_request(model, messages, params, true)?;
        let hub = self.hub.clone();
        crate::runtime::future_into_py(py, async move {
            let s = hub
                .chat_stream(caller(api_key), req, context(conversation_id))
                .await
                .py()?;
            Ok(AsyncChatStream::open(s).await)
        })
    }

    // ---- embeddings --------------------------------------------------------------------------

    /// Embeddings, as the dict OpenAI would answer (`{"object": "list", "data": [{"embedding",
    /// "index"}], "model", "usage"}`). `input` is a str, a list of str, a list of token ids or a
    /// list of token-id lists; `encoding_format` `"float"` (the default) or `"base64"`
    /// (little-endian float32). `api_key` is a client key, or None to call as the hub's owner.
    /// Other keyword arguments (`user`, vendor extras) pass through to OpenAI-compatible
    /// upstreams.
    #[pyo3(signature = (model, input, *, dimensions = None, encoding_format = None, api_key = None, **params))]
    #[allow(clippy::too_many_arguments)]
    fn embeddings(
        &self,
        py: Python<'_>,
        model: &str,
        input: &Bound<'_, PyAny>,
        dimensions: Option<u32>,
        encoding_format: Option<&str>,
        api_key: Option<String>,
        params: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let req = embeddings_request(model, input, dimensions, encoding_format, params)?;
        let hub = self.hub.clone();
        let body = wait(py, async move {
            let resp = hub
                .embeddings(caller(api_key), req, RequestContext::default())
                .await
                .py()?;
            Ok(String::from_utf8_lossy(&resp.body).into_owned())
        })?;
        loads(py, &body)
    }

    /// The asyncio form of `embeddings`: an awaitable of the same dict.
    #[pyo3(signature = (model, input, *, dimensions = None, encoding_format = None, api_key = None, **params))]
    #[allow(clippy::too_many_arguments)]
    fn aembeddings<'py>(
        &self,
        py: Python<'py>,
        model: &str,
        input: &Bound<'py, PyAny>,
        dimensions: Option<u32>,
        encoding_format: Option<&str>,
        api_key: Option<String>,
        params: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let req = embeddings_request(model, input, dimensions, encoding_format, params)?;
        let hub = self.hub.clone();
        crate::runtime::future_into_py(py, async move {
            let resp = hub
                .embeddings(caller(api_key), req, RequestContext::default())
                .await
                .py()?;
            Ok(Json(String::from_utf8_lossy(&resp.body).into_owned()))
        })
    }

    // ---- stats -------------------------------------------------------------------------------

    /// Usage totals (`requests`, `errors`, `prompt_tokens`, `completion_tokens`, `cost`,
    /// `conversations`, `rounds`, ... and the original `total_conversations`/`total_rounds`),
    /// including every request finished so far.
    fn summary(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let v = self.blocking(py, |h| {
            h.flush()?;
            h.summary()
        })?;
        to_py(py, &v)
    }

    /// A usage time series: `bucket` "hour" or "day", `group_by` None, "model", "provider",
    /// "key" or "endpoint", points from `since` (unix seconds).
    #[pyo3(signature = (bucket = "hour", group_by = None, since = 0))]
    fn timeseries(
        &self,
        py: Python<'_>,
        bucket: &str,
        group_by: Option<&str>,
        since: i64,
    ) -> PyResult<Py<PyAny>> {
        let q = TimeseriesQuery::from_params(Some(bucket), group_by, Some(since))
            .map_err(|e| crate::errors::to_py_err(&e))?;
        let v = self.blocking(py, |h| {
            h.flush()?;
            h.timeseries(&q)
        })?;
        to_py(py, &v)
    }

    /// One conversation's totals and messages.
    fn conversation(&self, py: Python<'_>, conversation_id: &str) -> PyResult<Py<PyAny>> {
        let v = self.blocking(py, |h| {
            h.flush()?;
            h.conversation(conversation_id)
        })?;
        to_py(py, &v)
    }

    /// Waits until every usage record so far is in the database.
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        self.blocking(py, |h| h.flush())
    }

    // ---- sessions ----------------------------------------------------------------------------

    /// Creates a conversation session: a model, a title, request settings (`temperature`...).
    #[pyo3(signature = (model, *, title = "", settings = None))]
    fn create_session(
        &self,
        py: Python<'_>,
        model: &str,
        title: &str,
        settings: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let settings = match settings {
            Some(s) => from_py(s, "settings")?,
            None => Default::default(),
        };
        let s = NewSession {
            title: title.to_owned(),
            model: model.to_owned(),
            settings,
        };
        let v = self.blocking(py, |h| h.create_session(s))?;
        to_py(py, &v)
    }

    /// Lists sessions, most recently updated first (without their messages).
    fn sessions(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let v = self.blocking(py, |h| h.sessions())?;
        to_py(py, &v)
    }

    /// Loads a session with its messages.
    fn session(&self, py: Python<'_>, session_id: &str) -> PyResult<Py<PyAny>> {
        let v = self.blocking(py, |h| h.session(session_id))?;
        to_py(py, &v)
    }

    /// Appends messages, given as `{"role", "content"}` dicts or `(role, content)` pairs, and
    /// returns the session.
    fn append_session(
        &self,
        py: Python<'_>,
        session_id: &str,
        messages: &Bound<'_, PyAny>,
    ) -> PyResult<Py<PyAny>> {
        let mut pairs = Vec::new();
        for m in messages.try_iter()? {
            let m = m?;
            let pair: (String, String) = match m.cast::<PyDict>() {
                Ok(d) => (
                    d.get_item("role")?
                        .ok_or_else(|| invalid("a session message needs a `role`"))?
                        .extract()?,
                    d.get_item("content")?
                        .ok_or_else(|| invalid("a session message needs a `content`"))?
                        .extract()?,
                ),
                Err(_) => m.extract()?,
            };
            pairs.push(pair);
        }
        let v = self.blocking(py, |h| h.append_session(session_id, &pairs))?;
        to_py(py, &v)
    }

    /// Deletes a session.
    fn delete_session(&self, py: Python<'_>, session_id: &str) -> PyResult<()> {
        self.blocking(py, |h| h.delete_session(session_id))
    }
}
