//! # nexus-py: the Python module of NexusAI Hub
//!
//! The compiled part (`nexus._nexus`) of the `nexus` package. `nexus.Hub` wraps the core
//! [`nexus::Hub`]: provider, model and key management, exact token counts, usage statistics,
//! conversation sessions and chat, sync and asyncio, streamed or not. This crate only
//! translates; every rule lives in the core.
//!
//! - Records cross as JSON and reach Python as plain dicts ([`convert`]).
//! - Errors become the classes of `nexus/errors.py`, one per core error kind ([`errors`]).
//! - Sync calls block on a process-wide tokio runtime with the GIL released; async calls
//!   return asyncio awaitables driven by the same runtime ([`runtime`]).
//! - Streams cancel the upstream request when closed or dropped ([`stream`]).
//!
//! Build and install with `pip install .` from the repository root (maturin); the Python tests
//! are in `nexus-py/tests` and run with `bash scripts/test-python.sh`.
//!
//! ```python
//! import nexus
//! hub = nexus.Hub("hub.db")
//! p = hub.create_provider("openai", "https://api.openai.com", "sk-...")
//! hub.create_model(p["id"], "gpt-4o-mini")
//! for chunk in hub.chat_stream("gpt-4o-mini", [{"role": "user", "content": "Hi"}]):
//!     print(chunk["choices"][0]["delta"].get("content", ""), end="")
//! ```

use pyo3::prelude::*;

pub mod convert;
pub mod errors;
pub mod hub;
pub mod runtime;
pub mod stream;

/// The compiled part of the `nexus` package.
#[pymodule]
fn _nexus(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("__version__", nexus::VERSION)?;
    m.add_class::<hub::Hub>()?;
    m.add_class::<stream::ChatStream>()?;
    m.add_class::<stream::AsyncChatStream>()?;
    // Imported now, so a broken install fails at `import nexus`, not at the first error.
    m.add("ERROR_CLASSES", errors::error_classes(py)?)?;
    let at_exit = wrap_pyfunction!(runtime::_at_exit, m)?;
    py.import("atexit")?.call_method1("register", (at_exit,))?;
    Ok(())
}
