//! Core errors as Python exceptions: one class of `nexus/errors.py` per [`ErrorKind`].
//!
//! The classes carry data (`kind`, `status_code`, `retry_after`, `code`, `param`, `body`), so
//! they are written in Python and imported here. [`to_py_err`] builds a *lazy* `PyErr` (the
//! class and its arguments, no Python object yet), so it needs no GIL and can be made on a
//! tokio worker thread; the instance is created when Python first sees the error.

use nexus::ErrorKind;
use pyo3::prelude::*;
use pyo3::types::PyType;
use pyo3::PyTypeInfo;

/// The constructor arguments of every class: `(message, kind, status_code, retry_after, code,
/// param, body)`, in the order of `NexusError.__init__`.
type Args = (
    String,
    &'static str,
    u16,
    Option<f64>,
    &'static str,
    Option<String>,
    Option<String>,
);

/// One table, kind → class, from which both the lazy error constructor and the class lookup
/// are generated, so the two cannot disagree.
macro_rules! error_classes {
    ($($kind:ident => $class:ident),* $(,)?) => {
        $(pyo3::import_exception!(nexus.errors, $class);)*

        /// A lazy exception of the class for `kind`.
        fn new_err(kind: ErrorKind, args: Args) -> PyErr {
            match kind {
                $(ErrorKind::$kind => PyErr::new::<$class, _>(args),)*
            }
        }

        /// The class for `kind`.
        fn class_of(py: Python<'_>, kind: ErrorKind) -> Bound<'_, PyType> {
            match kind {
                $(ErrorKind::$kind => $class::type_object(py),)*
            }
        }

        /// The class name this table gives `kind`, checked against the core's taxonomy.
        fn class_name(kind: ErrorKind) -> &'static str {
            match kind {
                $(ErrorKind::$kind => stringify!($class),)*
            }
        }
    };
}

error_classes! {
    InvalidRequest => BadRequestError,
    PayloadTooLarge => PayloadTooLargeError,
    Authentication => AuthenticationError,
    PermissionDenied => PermissionDeniedError,
    NotFound => NotFoundError,
    Conflict => ConflictError,
    RateLimited => RateLimitError,
    QuotaExceeded => InsufficientQuotaError,
    Timeout => APITimeoutError,
    Upstream => APIStatusError,
    Transport => APIConnectionError,
    Unavailable => ServiceUnavailableError,
    Storage => StorageError,
    Config => ConfigError,
    Internal => InternalServerError,
}

/// The Python exception for a core error. An upstream 429 is raised as `RateLimitError` (with
/// `kind == "upstream"`): to the caller it is a rate limit, whichever side set it.
pub(crate) fn to_py_err(e: &nexus::Error) -> PyErr {
    let kind = e.kind();
    let status = e.http_status();
    let body = match e {
        nexus::Error::Upstream { body, .. } => body.clone(),
        _ => None,
    };
    let args: Args = (
        e.to_string(),
        kind.as_str(),
        status,
        e.retry_after().map(|d| d.as_secs_f64()),
        e.openai_code(),
        e.param().map(str::to_owned),
        body,
    );
    if kind == ErrorKind::Upstream && status == 429 {
        return PyErr::new::<RateLimitError, _>(args);
    }
    new_err(kind, args)
}

/// An invalid-request error (`BadRequestError`) made in the binding, e.g. for input that is not
/// JSON.
pub(crate) fn invalid(message: impl Into<String>) -> PyErr {
    to_py_err(&nexus::Error::invalid(message))
}

/// `Result<T, nexus::Error>` → `PyResult<T>`.
pub(crate) trait IntoPyResult<T> {
    /// Maps the error with [`to_py_err`].
    fn py(self) -> PyResult<T>;
}

impl<T> IntoPyResult<T> for nexus::Result<T> {
    fn py(self) -> PyResult<T> {
        self.map_err(|e| to_py_err(&e))
    }
}

/// Imports `nexus.errors` and resolves every class now, so that a broken install fails at
/// `import nexus` rather than at the first error; returns the table kind name → class.
pub(crate) fn error_classes(py: Python<'_>) -> PyResult<Bound<'_, pyo3::types::PyDict>> {
    py.import("nexus.errors")?;
    let d = pyo3::types::PyDict::new(py);
    for kind in ErrorKind::ALL {
        // The core names each kind's Python class; this binding's table must agree with it.
        if class_name(kind) != kind.python_class() {
            return Err(pyo3::exceptions::PyImportError::new_err(format!(
                "nexus: error kind {} maps to {} here but {} in the core",
                kind.as_str(),
                class_name(kind),
                kind.python_class()
            )));
        }
        d.set_item(kind.as_str(), class_of(py, kind))?;
    }
    Ok(d)
}
