//! Streamed chats: [`ChatStream`] (`for`, `with`) and [`AsyncChatStream`] (`async for`,
//! `async with`), both over one [`StreamCore`].
//!
//! Chunks are fetched in batches: a fetch waits for the next chunk, then takes every chunk the
//! core already has without waiting (at most [`MAX_BATCH`]), into a buffer that the iterators
//! serve from. A sync `__next__` thus releases the GIL and blocks once per batch, not once per
//! chunk, and an async `__anext__` returns an already-completed awaitable for a buffered chunk
//! and crosses from the runtime into the event loop once per batch (issue #19: one hop per
//! chunk cost ~150 µs of CPU per chunk).
//!
//! Closing is a signal, not a lock: `close()` from any thread (or dropping the object) wakes a
//! fetch that is waiting on a silent upstream, which then drops the core stream. Dropping the
//! core stream is what cancels the upstream request and records the usage produced so far.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use pyo3::exceptions::{PyStopAsyncIteration, PyStopIteration};
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use tokio::sync::watch;

use crate::convert::loads;
use crate::errors::to_py_err;
use crate::runtime::{
    detach, future_into_py, lock, running_loop, runtime, set_future, wait, LoopQueue, Ready,
};

/// The most chunks one fetch takes: bounds what a fast upstream can pile up in the buffer
/// ahead of a slow reader.
const MAX_BATCH: usize = 64;

/// The state both stream classes share; fetch tasks hold it too.
pub(crate) struct StreamCore {
    stream: tokio::sync::Mutex<Option<nexus::ChatStream>>,
    closed: watch::Sender<bool>,
    /// Fetched and not yet handed out. Filled only while `stream` is locked, so batches keep
    /// their order whoever fetched them.
    buffer: Mutex<Buffer>,
    /// The async face's pending `__anext__` calls (sync iteration leaves it empty).
    waiting: Mutex<Waiting>,
    summary: Arc<Mutex<Option<nexus::StreamSummary>>>,
    request_id: String,
    conversation_id: String,
    provider: String,
}

#[derive(Default)]
struct Buffer {
    chunks: VecDeque<String>,
    /// The error that ended the stream, raised once the chunks before it are out.
    error: Option<PyErr>,
    /// The core stream is over (ended, failed or closed): nothing more will be fetched.
    ended: bool,
}

/// What the iterators hand out next.
enum Next {
    Chunk(String),
    Failed(PyErr),
    End,
}

/// `__anext__` calls waiting for a fetch, oldest first, each with the queue of its loop.
#[derive(Default)]
struct Waiting {
    waiters: VecDeque<(Py<PyAny>, Arc<LoopQueue>)>,
    /// A fetch task is running.
    fetching: bool,
}

/// What one read of the core stream gave.
enum Step {
    Chunk(String),
    Error(nexus::Error),
    End,
    /// Nothing ready without waiting (only when not waiting).
    NotReady,
}

fn step_of(item: Option<nexus::Result<nexus::openai::ChatChunk>>) -> Step {
    match item {
        Some(Ok(chunk)) => Step::Chunk(chunk.json().to_owned()),
        Some(Err(e)) => Step::Error(e),
        None => Step::End,
    }
}

/// How [`StreamCore::signal_close`] found the core stream.
enum Taken {
    /// Here it is, to drop.
    Stream(nexus::ChatStream),
    /// Already dropped: nothing left to wait for.
    Gone,
    /// A fetch holds it; it drops it as soon as it sees the close signal.
    Busy,
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
            buffer: Mutex::new(Buffer::default()),
            waiting: Mutex::new(Waiting::default()),
        })
    }

    /// The next thing to hand out, or None if a fetch is needed first. A closed stream is over
    /// at once, whatever was buffered.
    fn pop(&self) -> Option<Next> {
        if *self.closed.borrow() {
            return Some(Next::End);
        }
        let mut b = lock(&self.buffer);
        if let Some(c) = b.chunks.pop_front() {
            return Some(Next::Chunk(c));
        }
        if let Some(e) = b.error.take() {
            return Some(Next::Failed(e));
        }
        b.ended.then_some(Next::End)
    }

    /// Whether [`pop`](Self::pop) has something without a fetch.
    fn has_next(&self) -> bool {
        if *self.closed.borrow() {
            return true;
        }
        let b = lock(&self.buffer);
        !b.chunks.is_empty() || b.error.is_some() || b.ended
    }

    /// Fetches one batch into the buffer: waits for the next chunk (or the end, an error, the
    /// close signal; with `wait_first` false, only takes one that is ready), then goes on taking chunks for as long as they keep coming without a
    /// wait, at most [`MAX_BATCH`].
    ///
    /// "Without a wait" allows one yield to the scheduler between two chunks: hyper hands an
    /// HTTP/1 body over one frame per poll of the reader (its connection task reads the next
    /// frame only once the reader asks), so a chunk already in the socket becomes ready only
    /// after that task has run. A yield that brings nothing means the upstream is pacing its
    /// chunks, and the batch ends there, a few microseconds after its last chunk.
    ///
    /// Cancel-safe: each chunk goes into the buffer as soon as it is read, under the stream
    /// lock (so batches keep their order), and dropping this future loses nothing.
    async fn fill(&self, wait_first: bool) {
        let mut closed = self.closed.subscribe();
        let mut guard = tokio::select! {
            g = self.stream.lock() => g,
            _ = closed.wait_for(|c| *c) => {
                lock(&self.buffer).ended = true;
                return;
            }
        };
        let Some(s) = guard.as_mut() else {
            lock(&self.buffer).ended = true;
            return;
        };
        let mut step = if wait_first {
            tokio::select! {
                biased;
                _ = closed.wait_for(|c| *c) => Step::End,
                item = s.next() => step_of(item),
            }
        } else {
            tokio::select! {
                biased;
                item = s.next() => step_of(item),
                () = std::future::ready(()) => Step::NotReady,
            }
        };
        let mut taken = 0;
        let mut yielded = false;
        let error = loop {
            match step {
                Step::Chunk(j) => {
                    lock(&self.buffer).chunks.push_back(j);
                    taken += 1;
                    yielded = false;
                }
                // The core has recorded the failure; the stream is over.
                Step::Error(e) => break Some(to_py_err(&e)),
                Step::End => break None,
                Step::NotReady if yielded => return,
                Step::NotReady => {
                    yielded = true;
                    tokio::task::yield_now().await;
                }
            }
            if *closed.borrow() {
                break None;
            }
            if taken >= MAX_BATCH {
                return;
            }
            // `biased`: the stream is polled first, and the ready branch only answers if it is
            // pending. `next` is cancel-safe, so dropping the pending poll loses nothing.
            step = tokio::select! {
                biased;
                item = s.next() => step_of(item),
                () = std::future::ready(()) => Step::NotReady,
            };
        };
        // Over (ended, failed or closed): the core stream goes.
        let dropped = guard.take();
        {
            let mut b = lock(&self.buffer);
            b.error = error;
            b.ended = true;
        }
        drop(guard);
        // Outside both locks: dropping the core stream settles its accounting.
        drop(dropped);
    }

    /// Marks the stream closed (waking any waiting fetch), forgets the buffer, and takes the
    /// core stream if no fetch holds it.
    fn signal_close(&self) -> Taken {
        self.closed.send_replace(true);
        let mut b = lock(&self.buffer);
        b.chunks.clear();
        b.error = None;
        drop(b);
        match self.stream.try_lock() {
            Ok(mut g) => match g.take() {
                Some(s) => Taken::Stream(s),
                None => Taken::Gone,
            },
            Err(_) => Taken::Busy,
        }
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
            Some(s) => crate::convert::to_py(py, &s),
            None => Ok(py.None()),
        }
    }
}

/// Drops a core stream inside the runtime that owns its connection, without the GIL (the drop
/// records usage, which may count tokens).
fn drop_detached(t: Taken) {
    if let Taken::Stream(s) = t {
        Python::attach(|py| {
            detach(py, || {
                let _rt = runtime().ok().map(|rt| rt.enter());
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
        loop {
            match self.0.pop() {
                Some(Next::Chunk(j)) => return loads(py, &j),
                Some(Next::Failed(e)) => return Err(e),
                Some(Next::End) => return Err(PyStopIteration::new_err(())),
                None => {
                    // The fill runs on a runtime worker, not in this thread's `block_on`: there
                    // its yield lets the connection task (on the same worker) read the next
                    // frame, so a batch holds every chunk already in the socket, where here it
                    // would hold one. Dropped early (Ctrl-C), the task still completes and
                    // its chunks stay buffered.
                    let core = self.0.clone();
                    let task = runtime()?.spawn(async move { core.fill(true).await });
                    wait(py, async move {
                        task.await.map_err(|e| {
                            pyo3::exceptions::PyRuntimeError::new_err(format!(
                                "nexus: the stream's reader failed: {e}"
                            ))
                        })
                    })?;
                }
            }
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
        match core.signal_close() {
            // Ended already (the usual case after a full iteration): nothing to wait for.
            Taken::Gone => Ok(()),
            t @ Taken::Stream(_) => {
                drop_detached(t);
                Ok(())
            }
            Taken::Busy => wait(py, async move {
                core.close().await;
                Ok(())
            }),
        }
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

/// A [`Next`] as what `__anext__` gives: the chunk dict, the stream's error, or
/// `StopAsyncIteration`.
fn anext_result(py: Python<'_>, n: Next) -> PyResult<Py<PyAny>> {
    match n {
        Next::Chunk(j) => loads(py, &j),
        Next::Failed(e) => Err(e),
        Next::End => Err(PyStopAsyncIteration::new_err(())),
    }
}

/// Starts a fetch task; when it is done, the oldest waiter's loop is asked to serve the
/// waiters. The caller has set `fetching`.
fn spawn_fetch(core: &Arc<StreamCore>) -> PyResult<()> {
    let core = core.clone();
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            lock(&core.waiting).fetching = false;
            return Err(e);
        }
    };
    rt.spawn(async move {
        core.fill(true).await;
        let queue = {
            let mut w = lock(&core.waiting);
            w.fetching = false;
            w.waiters.front().map(|(_, q)| q.clone())
        };
        if let Some(q) = queue {
            serve_later(core, q);
        }
    });
    Ok(())
}

/// Asks `queue`'s loop to run [`serve`] for `core`.
fn serve_later(core: Arc<StreamCore>, queue: Arc<LoopQueue>) {
    let here = queue.clone();
    queue.push(Box::new(move |py| serve(py, &core, &here)));
}

/// On the thread of `here`'s loop: completes the waiters of that loop, oldest first, from the
/// buffer; skips the cancelled ones (their chunk stays for the next call); starts a fetch if
/// waiters remain and the buffer ran dry.
fn serve(py: Python<'_>, core: &Arc<StreamCore>, here: &Arc<LoopQueue>) {
    loop {
        let mut w = lock(&core.waiting);
        let Some((fut, queue)) = w.waiters.pop_front() else {
            return;
        };
        if !Arc::ptr_eq(&queue, here) {
            // The stream is iterated from another event loop too: that loop serves its own.
            w.waiters.push_front((fut, queue.clone()));
            drop(w);
            serve_later(core.clone(), queue);
            return;
        }
        let done = fut
            .bind(py)
            .call_method0(pyo3::intern!(py, "done"))
            .and_then(|d| d.is_truthy())
            .unwrap_or(true);
        if done {
            continue;
        }
        match core.pop() {
            Some(n) => {
                drop(w);
                set_future(py, fut.bind(py), anext_result(py, n));
            }
            None => {
                w.waiters.push_front((fut, queue));
                if !w.fetching {
                    w.fetching = true;
                    drop(w);
                    if let Err(e) = spawn_fetch(core) {
                        fail_waiters(py, core, e);
                    }
                }
                return;
            }
        }
    }
}

/// Fails every waiter with `e` (the runtime could not run a fetch).
fn fail_waiters(py: Python<'_>, core: &StreamCore, e: PyErr) {
    let waiters = std::mem::take(&mut lock(&core.waiting).waiters);
    for (fut, _) in waiters {
        set_future(py, fut.bind(py), Err(e.clone_ref(py)));
    }
}

/// The asyncio form of [`ChatStream`]: `async for chunk in stream`, `async with stream`,
/// `await stream.aclose()`.
#[pyclass(module = "nexus._nexus", frozen)]
pub(crate) struct AsyncChatStream(pub(crate) Arc<StreamCore>);

impl AsyncChatStream {
    /// The stream for a just-opened core stream, with the chunks it has ready (the first, read
    /// with the answer's headers, and any right behind it) already buffered: the first
    /// `__anext__` then needs no trip from the runtime into the event loop. Never waits for a
    /// chunk that is not there yet.
    pub(crate) async fn open(s: nexus::ChatStream) -> AsyncChatStream {
        let core = StreamCore::new(s);
        core.fill(false).await;
        AsyncChatStream(core)
    }
}

#[pymethods]
impl AsyncChatStream {
    fn __aiter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __anext__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let core = &self.0;
        // A buffered chunk, with nobody ahead waiting for one: done without the event loop.
        let ready = {
            let w = lock(&core.waiting);
            if w.waiters.is_empty() {
                core.pop()
            } else {
                None
            }
        };
        if let Some(n) = ready {
            return Ready::awaitable(py, anext_result(py, n));
        }
        let (event_loop, queue) = running_loop(py)?;
        let fut = event_loop.call_method0(pyo3::intern!(py, "create_future"))?;
        let mut w = lock(&core.waiting);
        w.waiters.push_back((fut.clone().unbind(), queue.clone()));
        if !w.fetching {
            if core.has_next() {
                // Waiters ahead of this one are served from the buffer first.
                drop(w);
                serve_later(core.clone(), queue);
            } else {
                w.fetching = true;
                drop(w);
                if let Err(e) = spawn_fetch(core) {
                    fail_waiters(py, core, e.clone_ref(py));
                    return Err(e);
                }
            }
        }
        Ok(fut)
    }

    fn __aenter__<'py>(slf: Py<Self>, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ready::awaitable(py, Ok(slf.into_any()))
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
        match core.signal_close() {
            // Ended already (the usual case after a full iteration): nothing to wait for.
            Taken::Gone => Ready::awaitable(py, Ok(py.None())),
            // Dropped on the runtime, which owns its connection; done once the usage record
            // is queued.
            Taken::Stream(s) => future_into_py(py, async move {
                drop(s);
                Ok(())
            }),
            Taken::Busy => future_into_py(py, async move {
                core.close().await;
                Ok(())
            }),
        }
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
