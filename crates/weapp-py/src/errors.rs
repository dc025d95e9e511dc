//! The SDK's errors as the Python classes of `weapp/exceptions.py`.
//!
//! The classes are written in Python (with abi3 below 3.12 PyO3 cannot subclass `Exception`
//! with attributes), so each error is built by `weapp.exceptions._make(kind, *fields)`. Every
//! field is a plain value (numbers, strings, `None`), so the exceptions pickle (Celery) and carry
//! no client, no request and no secret: the SDK's own messages never contain one.

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::IntoPyObjectExt;

static MAKE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// Builds `weapp.exceptions._make(kind, fields)` as a `PyErr`.
pub fn make<'py, A>(py: Python<'py>, kind: &str, fields: A) -> PyErr
where
    A: IntoPyObject<'py>,
{
    let built = (|| -> PyResult<PyErr> {
        let make = MAKE.get_or_try_init(py, || -> PyResult<Py<PyAny>> {
            Ok(py.import("weapp.exceptions")?.getattr("_make")?.unbind())
        })?;
        let fields = fields.into_bound_py_any(py)?;
        let exc = make.bind(py).call1((kind, fields))?;
        Ok(PyErr::from_value(exc))
    })();
    built.unwrap_or_else(|e| e)
}

/// A `weapp::Error` as its Python exception.
pub fn api(py: Python<'_>, e: weapp::Error) -> PyErr {
    let text = e.to_string();
    match e {
        weapp::Error::Api {
            code,
            message,
            rid,
            endpoint,
        } => make(
            py,
            "api",
            (code.code(), message, rid, endpoint.into_owned()),
        ),
        // A request cut off by the client's timeout is a timeout to Python callers
        // (`TimeoutError`), whichever layer noticed it.
        weapp::Error::Transport { endpoint, source } if source.is_timeout() => make(
            py,
            "timeout",
            (endpoint.into_owned(), Option::<f64>::None, text),
        ),
        weapp::Error::Transport { endpoint, .. } => {
            make(py, "transport", (endpoint.into_owned(), text))
        }
        weapp::Error::TimedOut { endpoint, after } => make(
            py,
            "timeout",
            (endpoint.into_owned(), after.as_secs_f64(), text),
        ),
        weapp::Error::HttpStatus { endpoint, status } => {
            make(py, "http_status", (endpoint.into_owned(), status, text))
        }
        weapp::Error::Decode { endpoint, .. } => make(py, "decode", (endpoint.into_owned(), text)),
        weapp::Error::OutcomeUnknown { endpoint, .. } => {
            make(py, "outcome_unknown", (endpoint.into_owned(), text))
        }
        weapp::Error::Store(_) => make(py, "store", (text,)),
        weapp::Error::Crypto(c) => crypto(py, &c),
        weapp::Error::InvalidArgument(_) => make(py, "invalid_argument", (text,)),
        weapp::Error::Broker {
            endpoint,
            status,
            code,
            message,
        } => make(
            py,
            "broker",
            (endpoint.into_owned(), status, code, message, text),
        ),
        _ => make(py, "weapp", (text,)),
    }
}

/// A decryption or signature failure: one `DecryptError` whatever went wrong.
pub fn crypto(py: Python<'_>, e: &weapp::CryptoError) -> PyErr {
    make(py, "decrypt", (e.to_string(),))
}

/// A push that is refused (bad signature, stale, replayed, malformed).
pub fn push(py: Python<'_>, e: &weapp::push::PushError) -> PyErr {
    make(py, "push", (e.to_string(),))
}

/// A WeChat Pay failure.
pub fn pay(py: Python<'_>, e: weapp::pay::PayError) -> PyErr {
    use weapp::pay::PayError;
    let text = e.to_string();
    match e {
        PayError::Api {
            endpoint,
            status,
            code,
            message,
            detail,
            request_id,
        } => make(
            py,
            "pay_api",
            (
                endpoint.into_owned(),
                status,
                code.as_str().to_owned(),
                message,
                detail.map(|d| d.to_string()),
                request_id,
                text,
            ),
        ),
        PayError::TimedOut { endpoint, after } => make(
            py,
            "timeout",
            (endpoint.into_owned(), after.as_secs_f64(), text),
        ),
        PayError::Transport { endpoint, source } if source.is_timeout() => make(
            py,
            "timeout",
            (endpoint.into_owned(), Option::<f64>::None, text),
        ),
        PayError::Transport { endpoint, .. } => {
            make(py, "transport", (endpoint.into_owned(), text))
        }
        PayError::OutcomeUnknown { endpoint, .. } => {
            make(py, "outcome_unknown", (endpoint.into_owned(), text))
        }
        PayError::InvalidArgument(_) => make(py, "invalid_argument", (text,)),
        PayError::Verify { .. } => make(py, "signature", (text,)),
        _ => make(py, "pay", (text,)),
    }
}

/// A notification that does not verify or decrypt.
pub fn notify(py: Python<'_>, e: &weapp::pay::NotifyError) -> PyErr {
    make(py, "notify", (e.to_string(),))
}

/// An argument the binding itself refuses (wrong type or shape in the JSON it was given).
pub fn invalid(py: Python<'_>, message: impl Into<String>) -> PyErr {
    make(py, "invalid_argument", (message.into(),))
}

/// A failure of the binding itself (never expected).
pub fn internal(message: impl Into<String>) -> PyErr {
    PyRuntimeError::new_err(message.into())
}
