//! `weapp._native.NativeSim`: weapp-sim, the local WeChat, served from inside the extension
//! on loopback — no other binary needed (what `weapp.testing`'s `weapp_sim` fixture starts).

use std::sync::Mutex;

use pyo3::prelude::*;
use weapp_sim::{ClockMode, SimConfig, SimHandle};

use crate::errors;
use crate::runtime;

/// A running simulator on `127.0.0.1` (a free port unless one is given).
#[pyclass(frozen, module = "weapp._native")]
pub struct NativeSim {
    handle: Mutex<Option<SimHandle>>,
    url: String,
}

#[pymethods]
impl NativeSim {
    #[new]
    #[pyo3(signature = (apps=Vec::new(), port=0, real_clock=false))]
    fn new(
        py: Python<'_>,
        apps: Vec<(String, String)>,
        port: u16,
        real_clock: bool,
    ) -> PyResult<Self> {
        let config = SimConfig {
            listen: Some(std::net::SocketAddr::from(([127, 0, 0, 1], port))),
            apps,
            clock: if real_clock {
                ClockMode::Real
            } else {
                ClockMode::default()
            },
        };
        let handle = py
            .detach(|| runtime::block_on(weapp_sim::spawn(config)))
            .map_err(|e| errors::internal(format!("cannot start the simulator: {e}")))?;
        Ok(Self {
            url: handle.url().to_owned(),
            handle: Mutex::new(Some(handle)),
        })
    }

    /// The base URL, e.g. `http://127.0.0.1:43123`: give it to `Client(base_url=…)`.
    #[getter]
    fn url(&self) -> &str {
        &self.url
    }

    /// Stops the server (idempotent).
    fn stop(&self, py: Python<'_>) {
        let handle = self.handle.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(handle) = handle {
            py.detach(|| runtime::block_on(handle.shutdown()));
        }
    }

    fn __repr__(&self) -> String {
        format!("Sim(url={:?})", self.url)
    }
}
