//! The tokio runtime of the module and the one way sync calls wait on it.
//!
//! The core creates no runtime. This module uses pyo3-async-runtimes' process-wide tokio
//! runtime for both faces: async methods hand their future to it with `future_into_py`, and
//! sync methods block the calling thread on it with [`wait`], without the GIL.

use std::future::Future;
use std::time::Duration;

use pyo3::prelude::*;

/// How often a waiting sync call looks for pending signals (Ctrl-C).
const SIGNAL_POLL: Duration = Duration::from_millis(100);

/// The process-wide runtime (multi-threaded, started on first use).
pub(crate) fn runtime() -> &'static tokio::runtime::Runtime {
    pyo3_async_runtimes::tokio::get_runtime()
}

/// Runs `fut` to completion on the runtime, blocking the calling thread with the GIL released,
/// so other Python threads run meanwhile.
///
/// Every [`SIGNAL_POLL`] the GIL is taken back briefly to run pending signal handlers: on the
/// main thread Ctrl-C then raises `KeyboardInterrupt` out of a call that is waiting on a
/// silent upstream, and dropping `fut` cancels the upstream request. (CPython only delivers
/// signals to the main thread, so elsewhere the check returns at once.)
pub(crate) fn wait<T, F>(py: Python<'_>, fut: F) -> PyResult<T>
where
    T: Send,
    F: Future<Output = PyResult<T>> + Send,
{
    py.detach(|| {
        runtime().block_on(async {
            let mut fut = std::pin::pin!(fut);
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
