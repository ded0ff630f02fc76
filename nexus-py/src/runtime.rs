//! The tokio runtime of the module, how sync calls let go of the GIL, and how async results
//! reach asyncio.
//!
//! The core creates no runtime. This module owns one process-wide multi-threaded runtime for
//! both faces: sync methods block the calling thread on it with [`wait`], without the GIL, and
//! async methods run their future on it with [`future_into_py`]. Every GIL release goes through
//! [`detach`], which keeps threads from taking the GIL back while the interpreter shuts down.
//!
//! # Results into asyncio
//!
//! A runtime thread never takes the GIL to hand a result to asyncio. Each event loop gets a
//! [`LoopQueue`]: a result is pushed there as a job, and the loop is woken by one byte on a
//! socket pair that the loop watches (`loop.add_reader`). On its own thread, with the GIL it
//! already holds, the loop then runs every job queued since the last wake-up, in one callback.
//! Taking the GIL on runtime threads instead (one `call_soon_threadsafe` per result from a
//! blocking-pool thread, as pyo3-async-runtimes does) made every result a GIL hand-over between
//! threads, and a thread per pending result: the profile of issue #19 showed ~60 such threads
//! spending most of their time waiting for the GIL.
//!
//! A loop that cannot watch a socket (`add_reader` raises `NotImplementedError`: Windows'
//! proactor loop) is woken with `call_soon_threadsafe` instead, still once per batch of jobs.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use pyo3::exceptions::{PyNotImplementedError, PyRuntimeError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::IntoPyObjectExt;

/// How often a waiting sync call looks for pending signals (Ctrl-C).
const SIGNAL_POLL: Duration = Duration::from_millis(100);

/// The most threads the runtime starts for blocking work (the core's rare `spawn_blocking`:
/// host-name lookups, key-use stamps). With the runtime's workers (one per core, tokio's
/// default, or `TOKIO_WORKER_THREADS`) this bounds the module's threads.
const MAX_BLOCKING_THREADS: usize = 4;

static RUNTIME: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();

/// The process-wide runtime (multi-threaded, started on first use), or why it could not start.
pub(crate) fn runtime() -> PyResult<&'static tokio::runtime::Runtime> {
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("nexus-runtime")
                .max_blocking_threads(MAX_BLOCKING_THREADS)
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| PyRuntimeError::new_err(format!("nexus: cannot start the tokio runtime: {e}")))
}

/// Runs `fut` to completion on the runtime, blocking the calling thread with the GIL released,
/// so other Python threads run meanwhile.
///
/// On the main thread, every [`SIGNAL_POLL`] the GIL is taken back briefly to run pending
/// signal handlers: Ctrl-C then raises `KeyboardInterrupt` out of a call that is waiting on a
/// silent upstream, and dropping `fut` cancels the upstream request.
///
/// Other threads do not poll: CPython runs signal handlers on the main thread only, and a
/// daemon thread that takes the GIL while the interpreter finalizes is ended by
/// `pthread_exit`, whose forced unwind through Rust frames aborts the process.
pub(crate) fn wait<T, F>(py: Python<'_>, fut: F) -> PyResult<T>
where
    T: Send,
    F: Future<Output = PyResult<T>> + Send,
{
    let rt = runtime()?;
    let poll_signals = is_main_thread(py);
    detach(py, || {
        rt.block_on(async {
            let mut fut = std::pin::pin!(fut);
            if !poll_signals {
                return fut.await;
            }
            loop {
                tokio::select! {
                    r = &mut fut => return r,
                    () = tokio::time::sleep(SIGNAL_POLL) => {
                        Python::attach(|py| py.check_signals())?;
                    }
                }
            }
        })
    })
}

/// The thread that runs the interpreter's `atexit` handlers, once they have started.
static EXITING_THREAD: OnceLock<std::thread::ThreadId> = OnceLock::new();

/// Set (SeqCst) together with [`EXITING_THREAD`]; the fence partner of [`RETURNING`].
static EXITING: AtomicBool = AtomicBool::new(false);

/// Threads that have passed the shutdown check in [`detach`] and are taking the GIL back.
static RETURNING: AtomicUsize = AtomicUsize::new(0);

/// Registered with `atexit` when the module loads: from now on the interpreter is shutting down.
///
/// A thread that passed [`detach`]'s check just before this ran is about to take the GIL back;
/// if it got it only once finalization had begun, CPython would end it with `pthread_exit`
/// through Rust frames. So the GIL is let go here until every such thread has taken it and moved
/// on (at most 2 s): each either finishes its Python work or parks at its next call.
#[pyfunction]
pub(crate) fn _at_exit(py: Python<'_>) {
    let _ = EXITING_THREAD.set(std::thread::current().id());
    EXITING.store(true, Ordering::SeqCst);
    py.detach(|| {
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while RETURNING.load(Ordering::SeqCst) > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    });
}

/// `py.detach(f)`, except that once the interpreter has begun to shut down, a thread other than
/// the one shutting it down never takes the GIL back: it is parked for good, and ends with the
/// process. Taking the GIL during finalization would end such a (daemon) thread with
/// `pthread_exit`, whose forced unwind through Rust frames aborts the whole process ("FATAL:
/// exception not rethrown"). CPython 3.14 hangs such threads itself, the same way.
pub(crate) fn detach<T: Send>(py: Python<'_>, f: impl FnOnce() -> T + Send) -> T {
    let r = py.detach(|| {
        let r = f();
        // Counted before the check, so that `_at_exit` either is seen here or sees this thread
        // (both sides use SeqCst) and waits for it to take the GIL back before finalizing.
        RETURNING.fetch_add(1, Ordering::SeqCst);
        if EXITING.load(Ordering::SeqCst)
            && EXITING_THREAD
                .get()
                .is_some_and(|exiting| *exiting != std::thread::current().id())
        {
            RETURNING.fetch_sub(1, Ordering::SeqCst);
            loop {
                std::thread::park();
            }
        }
        r
    });
    RETURNING.fetch_sub(1, Ordering::SeqCst);
    r
}

/// Whether the calling thread is Python's main thread (where signal handlers run).
fn is_main_thread(py: Python<'_>) -> bool {
    static MAIN_IDENT: PyOnceLock<u64> = PyOnceLock::new();
    static GET_IDENT: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let main = MAIN_IDENT.get_or_try_init(py, || {
        py.import("threading")?
            .call_method0("main_thread")?
            .getattr("ident")?
            .extract::<u64>()
    });
    let current = GET_IDENT
        .import(py, "threading", "get_ident")
        .and_then(|f| f.call0())
        .and_then(|i| i.extract::<u64>());
    matches!((main, current), (Ok(m), Ok(c)) if *m == c)
}

// ---- results into asyncio ------------------------------------------------------------------

/// Work for an event loop's thread, run there with the GIL.
pub(crate) type Job = Box<dyn FnOnce(Python<'_>) + Send>;

/// A mutex whose poisoning (a panic while held) is ignored: its data stays consistent, as every
/// critical section here is a push, a pop or a flag.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The jobs bound for one asyncio event loop, pushed from any thread without the GIL and run
/// on the loop's thread in batches: one wake-up per batch, however many jobs it holds.
pub(crate) struct LoopQueue {
    jobs: Mutex<Vec<Job>>,
    /// Set by the first push after the loop took the jobs: a wake-up is on its way, so later
    /// pushes need not send another. The loop clears it before it takes the jobs.
    notified: AtomicBool,
    wake: Wake,
}

/// How a [`LoopQueue`] wakes its loop.
enum Wake {
    /// One byte on `tx`; the loop watches `rx` (`add_reader`). No GIL on the pushing thread.
    #[cfg(unix)]
    Socket {
        tx: std::os::unix::net::UnixStream,
        rx: std::os::unix::net::UnixStream,
    },
    /// `loop.call_soon_threadsafe(...)`, which needs the GIL on the pushing thread. Such a
    /// queue is never stored on its loop (it holds the loop), so no reference cycle forms.
    Threadsafe(Py<PyAny>),
}

impl LoopQueue {
    /// Queues `job` for the loop's thread, waking the loop unless a wake-up is already due.
    pub(crate) fn push(self: &Arc<Self>, job: Job) {
        lock(&self.jobs).push(job);
        if !self.notified.swap(true, Ordering::SeqCst) {
            self.wake_loop();
        }
    }

    fn wake_loop(self: &Arc<Self>) {
        match &self.wake {
            #[cfg(unix)]
            Wake::Socket { tx, .. } => {
                // Non-blocking: a full buffer (WouldBlock) means wake-ups are pending anyway.
                // The queue owns both ends, so the peer is never closed under this write.
                let _ = std::io::Write::write(&mut &*tx, &[1]);
            }
            Wake::Threadsafe(event_loop) => {
                // During shutdown the loop will not run again, and taking the GIL on this
                // thread could end it with `pthread_exit` (see `detach`).
                if EXITING.load(Ordering::SeqCst) {
                    return;
                }
                let me = self.clone();
                Python::attach(|py| {
                    let r = Bound::new(py, LoopWaker(me)).and_then(|w| {
                        event_loop
                            .bind(py)
                            .call_method1(pyo3::intern!(py, "call_soon_threadsafe"), (w,))
                    });
                    // A closed loop refuses: its jobs were for futures nobody can await now.
                    drop(r);
                });
            }
        }
    }

    /// On the loop's thread: runs every job queued so far.
    fn run(&self, py: Python<'_>) {
        // The order matters. The wake-up bytes are read first, then the flag is cleared, then
        // the jobs are taken: a push whose flag-set came before the clear is in the jobs taken
        // here, and a push after the clear sends a new byte, which is not read until the next
        // call. (Clearing before reading could read the byte of a push whose flag is still
        // set, leaving the next push neither woken nor taken.)
        #[cfg(unix)]
        if let Wake::Socket { rx, .. } = &self.wake {
            let mut buf = [0u8; 64];
            while matches!(std::io::Read::read(&mut &*rx, &mut buf), Ok(n) if n > 0) {}
        }
        self.notified.store(false, Ordering::SeqCst);
        let jobs = std::mem::take(&mut *lock(&self.jobs));
        for job in jobs {
            job(py);
        }
    }
}

/// The callback an event loop runs to drain its [`LoopQueue`] (its reader callback, or the
/// callable handed to `call_soon_threadsafe`).
#[pyclass(module = "nexus._nexus", frozen)]
struct LoopWaker(Arc<LoopQueue>);

#[pymethods]
impl LoopWaker {
    fn __call__(&self, py: Python<'_>) {
        self.0.run(py);
    }
}

/// Where each event loop's waker is kept: a `weakref.WeakKeyDictionary` loop → [`LoopWaker`],
/// so the waker (and its sockets) go with the loop.
static WAKERS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

thread_local! {
    /// The loop last seen on this thread and its queue: a thread runs one loop at a time, so
    /// this answers almost every lookup without a dictionary. Holds that loop alive until
    /// another loop is used on the thread.
    static CURRENT: std::cell::RefCell<Option<(Py<PyAny>, Arc<LoopQueue>)>> =
        const { std::cell::RefCell::new(None) };
}

/// The running event loop of this thread and its queue (created on first use).
pub(crate) fn running_loop(py: Python<'_>) -> PyResult<(Bound<'_, PyAny>, Arc<LoopQueue>)> {
    static GET_RUNNING_LOOP: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let event_loop = GET_RUNNING_LOOP
        .import(py, "asyncio", "get_running_loop")?
        .call0()?;
    let cached = CURRENT.with(|c| {
        c.borrow()
            .as_ref()
            .filter(|(l, _)| l.bind(py).is(&event_loop))
            .map(|(_, q)| q.clone())
    });
    if let Some(q) = cached {
        return Ok((event_loop, q));
    }
    let queue = queue_of(py, &event_loop)?;
    let previous = CURRENT.with(|c| c.replace(Some((event_loop.clone().unbind(), queue.clone()))));
    drop(previous);
    Ok((event_loop, queue))
}

/// The queue of `event_loop`: its registered waker's, or a new one.
fn queue_of(py: Python<'_>, event_loop: &Bound<'_, PyAny>) -> PyResult<Arc<LoopQueue>> {
    let wakers = WAKERS
        .get_or_try_init(py, || {
            Ok::<_, PyErr>(
                py.import("weakref")?
                    .call_method0("WeakKeyDictionary")?
                    .unbind(),
            )
        })?
        .bind(py);
    // A loop that cannot be weakly referenced cannot be a key: its queue is then found through
    // `CURRENT` only (a second queue if the thread comes back to it later, which works too).
    if let Ok(Some(w)) = wakers
        .call_method1(pyo3::intern!(py, "get"), (event_loop,))
        .map(|w| w.cast_into::<LoopWaker>().ok())
    {
        return Ok(w.get().0.clone());
    }
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        let (tx, rx) = std::os::unix::net::UnixStream::pair()
            .and_then(|(tx, rx)| {
                tx.set_nonblocking(true)?;
                rx.set_nonblocking(true)?;
                Ok((tx, rx))
            })
            .map_err(|e| {
                PyRuntimeError::new_err(format!("nexus: cannot make a socket pair: {e}"))
            })?;
        let fd = rx.as_raw_fd();
        let queue = Arc::new(LoopQueue {
            jobs: Mutex::new(Vec::new()),
            notified: AtomicBool::new(false),
            wake: Wake::Socket { tx, rx },
        });
        let waker = Bound::new(py, LoopWaker(queue.clone()))?;
        match event_loop.call_method1(pyo3::intern!(py, "add_reader"), (fd, &waker)) {
            Ok(_) => {
                let _ = wakers.set_item(event_loop, &waker);
                return Ok(queue);
            }
            Err(e) if e.is_instance_of::<PyNotImplementedError>(py) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Arc::new(LoopQueue {
        jobs: Mutex::new(Vec::new()),
        notified: AtomicBool::new(false),
        wake: Wake::Threadsafe(event_loop.clone().unbind()),
    }))
}

/// Completes an asyncio future with `r`, unless it is done already (cancelled).
pub(crate) fn set_future(py: Python<'_>, fut: &Bound<'_, PyAny>, r: PyResult<Py<PyAny>>) {
    let done = fut
        .call_method0(pyo3::intern!(py, "done"))
        .and_then(|d| d.is_truthy());
    if !matches!(done, Ok(false)) {
        return;
    }
    let set = match r {
        Ok(v) => fut.call_method1(pyo3::intern!(py, "set_result"), (v,)),
        Err(e) => fut.call_method1(pyo3::intern!(py, "set_exception"), (e.into_value(py),)),
    };
    if let Err(e) = set {
        e.write_unraisable(py, Some(fut));
    }
}

/// Delivers one result to an asyncio future through its loop's queue; if dropped unused (the
/// task panicked or was aborted), delivers an error instead, so no awaiter waits forever.
struct Delivery {
    fut: Option<Py<PyAny>>,
    queue: Arc<LoopQueue>,
}

impl Delivery {
    fn send<T>(mut self, r: PyResult<T>)
    where
        T: for<'py> IntoPyObject<'py> + Send + 'static,
    {
        if let Some(fut) = self.fut.take() {
            self.queue.push(Box::new(move |py| {
                // Converted here, on the loop's thread: `Json` results are parsed by Python's
                // `json`, which needs the GIL the loop already holds.
                let r = r.and_then(|v| v.into_py_any(py));
                set_future(py, fut.bind(py), r);
            }));
        }
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        if let Some(fut) = self.fut.take() {
            self.queue.push(Box::new(move |py| {
                let e = PyRuntimeError::new_err("nexus: the operation ended without a result");
                set_future(py, fut.bind(py), Err(e));
            }));
        }
    }
}

/// A done-callback that aborts the runtime task behind a future when that future is cancelled
/// (a cancelled asyncio task, `wait_for` timing out): the upstream request stops then.
#[pyclass(module = "nexus._nexus", frozen)]
struct AbortOnCancel(tokio::task::AbortHandle);

#[pymethods]
impl AbortOnCancel {
    fn __call__(&self, fut: &Bound<'_, PyAny>) -> PyResult<()> {
        if fut
            .call_method0(pyo3::intern!(fut.py(), "cancelled"))?
            .is_truthy()?
        {
            self.0.abort();
        }
        Ok(())
    }
}

/// Runs `fut` on the runtime and returns an asyncio future of its result, for the running loop.
/// The result is converted to Python on the loop's thread; cancelling the asyncio future
/// cancels `fut`.
pub(crate) fn future_into_py<F, T>(py: Python<'_>, fut: F) -> PyResult<Bound<'_, PyAny>>
where
    F: Future<Output = PyResult<T>> + Send + 'static,
    T: for<'py> IntoPyObject<'py> + Send + 'static,
{
    let rt = runtime()?;
    let (event_loop, queue) = running_loop(py)?;
    let py_fut = event_loop.call_method0(pyo3::intern!(py, "create_future"))?;
    let delivery = Delivery {
        fut: Some(py_fut.clone().unbind()),
        queue,
    };
    let task = rt.spawn(async move {
        let r = fut.await;
        delivery.send(r);
    });
    py_fut.call_method1(
        pyo3::intern!(py, "add_done_callback"),
        (AbortOnCancel(task.abort_handle()),),
    )?;
    Ok(py_fut)
}

/// An awaitable whose result is already known: awaiting it returns (or raises) at once, with
/// no trip through the event loop. What `__anext__` returns for a chunk already received.
#[pyclass(module = "nexus._nexus")]
pub(crate) struct Ready(Option<PyResult<Py<PyAny>>>);

impl Ready {
    /// `r` as an awaitable.
    pub(crate) fn awaitable(py: Python<'_>, r: PyResult<Py<PyAny>>) -> PyResult<Bound<'_, PyAny>> {
        Ok(Bound::new(py, Ready(Some(r)))?.into_any())
    }
}

#[pymethods]
impl Ready {
    fn __await__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// Ends the iteration at once: `StopIteration(value)` is how an awaitable's iterator
    /// returns `value` to `await`.
    fn __next__(&mut self) -> PyResult<()> {
        match self.0.take() {
            Some(Ok(v)) => Err(pyo3::exceptions::PyStopIteration::new_err((v,))),
            Some(Err(e)) => Err(e),
            None => Err(pyo3::exceptions::PyStopIteration::new_err(())),
        }
    }
}
