//! `weapp._native`: the Rust half of the Python package `weapp` (`pip install ./python`).
//!
//! The public, typed surface is the Python package in `python/weapp/`; this module is its
//! engine: the `weapp` SDK's client (`NativeClient`), WeChat Pay (`NativePayClient`), the push
//! receiver, the offline crypto helpers, and weapp-sim served from inside the extension
//! (`NativeSim`). See `python/README.md`.

use pyo3::prelude::*;

mod bridge;
mod client;
mod convert;
mod errors;
mod logging;
mod offline;
mod ops;
mod pay;
mod runtime;
mod sim;

/// The module `weapp._native`.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    logging::install();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    // Whether this is an unoptimised (dev-profile) build: benchmarks say so next to figures.
    m.add("__debug_build__", cfg!(debug_assertions))?;
    m.add_class::<client::NativeClient>()?;
    m.add_class::<bridge::TaskHandle>()?;
    m.add_class::<pay::NativePayClient>()?;
    m.add_class::<offline::NativePushReceiver>()?;
    m.add_class::<sim::NativeSim>()?;
    m.add_function(wrap_pyfunction!(offline::decrypt_user_data, m)?)?;
    m.add_function(wrap_pyfunction!(offline::verify_raw_signature, m)?)?;
    m.add_function(wrap_pyfunction!(bridge::in_flight, m)?)?;
    m.add_function(wrap_pyfunction!(bridge::runtime_started, m)?)?;
    m.add_function(wrap_pyfunction!(logging::stop_logging, m)?)?;
    Ok(())
}
