//! Streamed chats: [`ChatStream`] (`for`, `with`) and [`AsyncChatStream`] (`async for`,
//! `async with`), both over one [`StreamCore`].
//!
//! Closing is a signal, not a lock: `close()` from any thread (or dropping the object) wakes a
//! `__next__` that is waiting on a silent upstream, which then drops the core stream. Dropping
//! the core stream is what cancels the upstream request and records the usage produced so far.

use std::sync::{Arc, Mutex};

use pyo3::exceptions::{PyStopAsyncIteration, PyStopIteration};
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use tokio::sync::watch;

use crate::convert::{loads, to_py, Json};
use crate::errors::IntoPyResult;
use crate::runtime::{detach, runtime, wait};

/// The state both stream classes share; `__anext__` futures hold it too.
pub(crate) struct StreamCore {
    stream: tokio::sync::Mutex<Option<nexus::ChatStream>>,
    closed: watch::Sender<bool>,
    summary: Arc<Mutex<Option<nexus::StreamSummary>>>,
    request_id: String,
    conversation_id: String,
    provider: String,
}

/// What one step waited for.
enum Step {
    Chunk(String),
    Error(nexus::Error),
    End,
    Closed,
}

impl StreamCore {
    pub(crate) fn new(s: nexus::ChatStream) -> Arc<Self> {
        Arc::new(StreamCore {
            summary: s.summary_handle(),
            request_id: s.request_id.clone(),
            conversation_id: s.conversation_id.clone(),
            provider: s.provider_name.clone(),
            stream: tokio::sync::Mutex::new(Some(s)),
            closed: watch::channel(false).0,
        })
    }

    /// The next chunk as JSON text, `None` at the end or once closed, or the error that ended
    /// the stream (after which it yields `None`). Cancel-safe: dropping this future mid-wait
    /// (a cancelled asyncio task, Ctrl-C) loses nothing, the stream resumes on the next call.
    async fn step(self: Arc<Self>) -> PyResult<Option<Json>> {
        let mut closed = self.closed.subscribe();
        let mut guard = tokio::select! {
            g = self.stream.lock() => g,
            _ = closed.wait_for(|c| *c) => return Ok(None),
        };
        let Some(s) = guard.as_mut() else {
            return Ok(None);
        };
        let step = tokio::select! {
            biased;
            _ = closed.wait_for(|c| *c) => Step::Closed,
            item = s.next() => match item {
                Some(Ok(chunk)) => Step::Chunk(chunk.json().to_owned()),
                Some(Err(e)) => Step::Error(e),
                None => Step::End,
            },
        };
        match step {
            Step::Chunk(j) => Ok(Some(Json(j))),
            Step::Error(e) => {
                // The core has recorded the failure; the stream is over.
                guard.take();
                Err(e).py()
            }
            Step::End | Step::Closed => {
                guard.take();
                Ok(None)
            }
        }
    }

    /// Marks the stream closed (waking any waiting step) and drops the core stream if no step
    /// holds it; a step that does drops it itself as soon as it wakes.
    fn signal_close(&self) -> Option<nexus::ChatStream> {
        self.closed.send_replace(true);
        self.stream.try_lock().ok().and_then(|mut g| g.take())
    }

    /// Closes and waits until the core stream is dropped (its usage record is then queued).
    async fn close(self: Arc<Self>) {
        self.closed.send_replace(true);
        let s = self.stream.lock().await.take();
        drop(s);
    }

    fn summary(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let s = self.summary.lock().ok().and_then(|s| s.clone());
        match s {
            Some(s) => to_py(py, &s),
            None => Ok(py.None()),
        }
    }
}

/// Drops a core stream inside the runtime that owns its connection, without the GIL (the drop
/// records usage, which may count tokens).
fn drop_detached(s: Option<nexus::ChatStream>) {
    if let Some(s) = s {
        Python::attach(|py| {
            detach(py, || {
                let _rt = runtime().enter();
                drop(s);
            })
        });
    }
}

/// A streamed chat: iterate for chunk dicts (`chat.completion.chunk`, as the upstream sent
/// them). `close()`, leaving a `with` block or dropping the stream cancels the upstream
/// request; `summary` has usage and timings once the stream has ended.
#[pyclass(module = "nexus._nexus", frozen)]
pub(crate) struct ChatStream(pub(crate) Arc<StreamCore>);

#[pymethods]
impl ChatStream {
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        match wait(py, self.0.clone().step())? {
            Some(Json(j)) => loads(py, &j),
            None => Err(PyStopIteration::new_err(())),
        }
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc_info))]
    fn __exit__(&self, py: Python<'_>, _exc_info: &Bound<'_, PyTuple>) -> PyResult<()> {
        self.close(py)
    }

    /// Stops the stream and cancels the upstream request, if it has not ended; what was
    /// produced is recorded. Safe to call from another thread while one waits in `__next__`,
    /// and more than once.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let core = self.0.clone();
        wait(py, async move {
            core.close().await;
            Ok(())
        })
    }

    /// Usage, finish reason and timings once the stream has ended (or was closed), else None.
    #[getter]
    fn summary(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.0.summary(py)
    }

    /// The request id (as in the stats).
    #[getter]
    fn request_id(&self) -> &str {
        &self.0.request_id
    }

    /// The conversation id.
    #[getter]
    fn conversation_id(&self) -> &str {
        &self.0.conversation_id
    }

    /// The name of the provider serving the stream.
    #[getter]
    fn provider(&self) -> &str {
        &self.0.provider
    }

    fn __repr__(&self) -> String {
        format!(
            "<nexus.ChatStream {} via {}>",
            self.0.request_id, self.0.provider
        )
    }
}

impl Drop for ChatStream {
    fn drop(&mut self) {
        drop_detached(self.0.signal_close());
    }
}

/// The asyncio form of [`ChatStream`]: `async for chunk in stream`, `async with stream`,
/// `await stream.aclose()`.
#[pyclass(module = "nexus._nexus", frozen)]
pub(crate) struct AsyncChatStream(pub(crate) Arc<StreamCore>);

#[pymethods]
impl AsyncChatStream {
    fn __aiter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __anext__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let core = self.0.clone();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            match core.step().await? {
                Some(j) => Ok(j),
                None => Err(PyStopAsyncIteration::new_err(())),
            }
        })
    }

    fn __aenter__<'py>(slf: Py<Self>, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        pyo3_async_runtimes::tokio::future_into_py(py, async move { Ok(slf) })
    }

    #[pyo3(signature = (*_exc_info))]
    fn __aexit__<'py>(
        &self,
        py: Python<'py>,
        _exc_info: &Bound<'py, PyTuple>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.aclose(py)
    }

    /// Stops the stream and cancels the upstream request (see [`ChatStream::close`]).
    fn aclose<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let core = self.0.clone();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            core.close().await;
            Ok(())
        })
    }

    /// See [`ChatStream::summary`].
    #[getter]
    fn summary(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.0.summary(py)
    }

    /// The request id (as in the stats).
    #[getter]
    fn request_id(&self) -> &str {
        &self.0.request_id
    }

    /// The conversation id.
    #[getter]
    fn conversation_id(&self) -> &str {
        &self.0.conversation_id
    }

    /// The name of the provider serving the stream.
    #[getter]
    fn provider(&self) -> &str {
        &self.0.provider
    }

    fn __repr__(&self) -> String {
        format!(
            "<nexus.AsyncChatStream {} via {}>",
            self.0.request_id, self.0.provider
        )
    }
}

impl Drop for AsyncChatStream {
    fn drop(&mut self) {
        drop_detached(self.0.signal_close());
    }
}
