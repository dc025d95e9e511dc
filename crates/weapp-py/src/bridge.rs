//! Running a Rust future for Python: blocking without the GIL (`weapp.Client`), or on the
//! runtime with a callback (`weapp.AsyncClient`, whose asyncio future it completes).

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::convert::to_py;
use crate::errors;
use crate::ops::{OpError, Output};
use crate::runtime;

/// An operation's outcome as a Python value, or its exception.
pub fn finish(py: Python<'_>, outcome: Result<Output, OpError>) -> PyResult<Py<PyAny>> {
    match outcome {
        Ok(Output::Json(v)) => to_py(py, &v),
        Ok(Output::Bytes(b)) => Ok(PyBytes::new(py, &b).into_any().unbind()),
        Err(e) => Err(error(py, e)),
    }
}

/// An operation's error as its Python exception.
pub fn error(py: Python<'_>, e: OpError) -> PyErr {
    match e {
        OpError::Sdk(e) => errors::api(py, e),
        OpError::Pay(e) => errors::pay(py, e),
        OpError::Invalid(m) => errors::invalid(py, m),
        OpError::Panicked => errors::make(
            py,
            "weapp",
            ("weapp: internal error (the operation panicked; please report it)",),
        ),
    }
}

/// Runs `fut` on this process's runtime and waits for it without holding the GIL: other
/// Python threads run meanwhile.
pub fn block<F>(py: Python<'_>, fut: F) -> PyResult<Py<PyAny>>
where
    F: Future<Output = Result<Output, OpError>> + Send,
{
    let outcome = py.detach(move || runtime::block_on(fut));
    finish(py, outcome)
}

/// Operations whose Rust future is alive (tests check that a cancelled asyncio task drops its
/// future).
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

struct InFlight;

impl InFlight {
    fn new() -> Self {
        IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How many asynchronous operations have a live Rust future in this process.
#[pyfunction]
pub fn in_flight() -> usize {
    IN_FLIGHT.load(Ordering::SeqCst)
}

/// Whether this process has started its runtime (nothing starts before the first call).
#[pyfunction]
pub fn runtime_started() -> bool {
    runtime::started()
}

/// The handle of an asynchronous operation: `cancel()` drops its Rust future.
#[pyclass(frozen, module = "weapp._native")]
pub struct TaskHandle {
    abort: tokio::task::AbortHandle,
}

#[pymethods]
impl TaskHandle {
    /// Drops the operation's future (its HTTP request is abandoned).
    fn cancel(&self) {
        self.abort.abort();
    }

    /// Whether the operation has finished (completed, failed or cancelled).
    fn done(&self) -> bool {
        self.abort.is_finished()
    }
}

/// Starts `fut` on this process's runtime; `done(ok, value)` is called from a runtime thread
/// with the result (`ok` true) or the exception (`ok` false). A cancelled operation never
/// calls `done`; one that panics calls it with a `WeappError`, so no awaiter waits for ever.
pub fn spawn<F>(py: Python<'_>, done: Py<PyAny>, fut: F) -> TaskHandle
where
    F: Future<Output = Result<Output, OpError>> + Send + 'static,
{
    let guard = InFlight::new();
    let abort = py.detach(move || {
        let runtime = runtime::runtime();
        let work = runtime.spawn(async move {
            let outcome = fut.await;
            // The future is finished: it no longer counts as alive, whoever reads the result.
            drop(guard);
            outcome
        });
        let abort = work.abort_handle();
        runtime.spawn(async move {
            let outcome = match work.await {
                Ok(outcome) => Some(outcome),
                // Cancelled from Python: nobody waits for an answer.
                Err(e) if e.is_cancelled() => None,
                Err(_) => Some(Err(OpError::Panicked)),
            };
            if let Some(outcome) = outcome {
                Python::attach(|py| {
                    let (ok, value) = match finish(py, outcome) {
                        Ok(v) => (true, v),
                        Err(e) => (false, e.into_value(py).into_any()),
                    };
                    if let Err(e) = done.call1(py, (ok, value)) {
                        e.write_unraisable(py, None);
                    }
                });
            }
        });
        abort
    });
    TaskHandle { abort }
}
