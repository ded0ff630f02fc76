//! Records across the boundary: Python values ⇄ JSON text ⇄ serde types.
//!
//! Records cross as JSON and arrive as plain `dict`/`list` values with the field names of the
//! admin API (docs/API.md). Python's own `json` does the Python side, so every JSON value a
//! caller can write (nested dicts, lists, str, int, float, bool, None) round-trips, and chat
//! answers reach Python exactly as the upstream sent them.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

use crate::errors::invalid;

static DUMPS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static LOADS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

fn json_fn<'py>(
    py: Python<'py>,
    cell: &'static PyOnceLock<Py<PyAny>>,
    name: &str,
) -> PyResult<&'py Bound<'py, PyAny>> {
    cell.import(py, "json", name)
}

/// A Python value as JSON text. A value JSON cannot hold (an arbitrary object, NaN) is the
/// caller's bad input: `BadRequestError`, with the `json` error as its cause.
pub(crate) fn dumps(v: &Bound<'_, PyAny>, what: &str) -> PyResult<String> {
    let py = v.py();
    let kwargs = pyo3::types::PyDict::new(py);
    kwargs.set_item("allow_nan", false)?;
    match json_fn(py, &DUMPS, "dumps")?.call((v,), Some(&kwargs)) {
        Ok(s) => s.extract(),
        Err(e)
            if e.is_instance_of::<pyo3::exceptions::PyTypeError>(py)
                || e.is_instance_of::<pyo3::exceptions::PyValueError>(py) =>
        {
            let err = invalid(format!("{what}: {e}"));
            err.set_cause(py, Some(e));
            Err(err)
        }
        Err(e) => Err(e),
    }
}

/// JSON text as a Python value.
pub(crate) fn loads(py: Python<'_>, s: &str) -> PyResult<Py<PyAny>> {
    Ok(json_fn(py, &LOADS, "loads")?.call1((s,))?.unbind())
}

/// A serde value as a Python value.
pub(crate) fn to_py(py: Python<'_>, v: &impl serde::Serialize) -> PyResult<Py<PyAny>> {
    let s = serde_json::to_string(v)
        .map_err(|e| crate::errors::to_py_err(&nexus::Error::Internal(e.to_string())))?;
    loads(py, &s)
}

/// A Python value as a typed record; a wrong or unknown field is a `BadRequestError` naming
/// `what`.
pub(crate) fn from_py<T: serde::de::DeserializeOwned>(
    v: &Bound<'_, PyAny>,
    what: &str,
) -> PyResult<T> {
    let s = dumps(v, what)?;
    serde_json::from_str(&s).map_err(|e| invalid(format!("{what}: {e}")))
}

/// JSON text that becomes a Python value when it reaches Python. Async results are returned
/// as this, so that the parse runs where pyo3-async-runtimes converts results (a blocking
/// thread holding the GIL), never on a tokio worker.
pub(crate) struct Json(pub(crate) String);

impl<'py> IntoPyObject<'py> for Json {
    type Target = PyAny;
    type Output = Bound<'py, PyAny>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(loads(py, &self.0)?.into_bound(py))
    }
}

/// A chat answer on its way to Python: OpenAI's completion dict with the hub's facts about it
/// (`request_id`, `provider_name`, `usage_source`, `cost_usd`, ...) under the extra key
/// `"nexus"`, which no OpenAI field uses.
pub(crate) struct ChatResult {
    pub(crate) body: String,
    pub(crate) meta: nexus::ChatMeta,
}

impl ChatResult {
    pub(crate) fn of(resp: &nexus::ChatResponse) -> ChatResult {
        ChatResult {
            body: String::from_utf8_lossy(&resp.body).into_owned(),
            meta: resp.meta(),
        }
    }
}

impl<'py> IntoPyObject<'py> for ChatResult {
    type Target = PyAny;
    type Output = Bound<'py, PyAny>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let v = loads(py, &self.body)?.into_bound(py);
        if let Ok(d) = v.cast::<pyo3::types::PyDict>() {
            d.set_item("nexus", to_py(py, &self.meta)?)?;
        }
        Ok(v)
    }
}
