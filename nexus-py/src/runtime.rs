//! The tokio runtime of the module, and how sync calls let go of the GIL.
//!
//! The core creates no runtime. This module uses pyo3-async-runtimes' process-wide tokio
//! runtime for both faces: async methods hand their future to it with `future_into_py`, and
//! sync methods block the calling thread on it with [`wait`], without the GIL. Every GIL
//! release goes through [`detach`], which keeps threads from taking the GIL back while the
//! interpreter shuts down.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

/// How often a waiting sync call looks for pending signals (Ctrl-C).
const SIGNAL_POLL: Duration = Duration::from_millis(100);

/// The process-wide runtime (multi-threaded, started on first use).
pub(crate) fn runtime() -> &'static tokio::runtime::Runtime {
    pyo3_async_runtimes::tokio::get_runtime()
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
    let poll_signals = is_main_thread(py);
    detach(py, || {
        runtime().block_on(async {
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
