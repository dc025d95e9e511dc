//! The SDK's `tracing` events as records of Python's `logging`, under the logger `weapp`
//! (`weapp::token::manager` → `weapp.token.manager`), so an application's logging
//! configuration decides what is shown. The SDK never puts a secret in an event.
//!
//! Only events at `INFO` and above are forwarded, and only while Python's `logging` has a logger
//! enabled for them (checked once per call site and level change is not needed: `logging`'s own
//! `isEnabledFor` decides per record). Forwarding stops at interpreter exit (`atexit`).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};

use pyo3::prelude::*;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Installs the bridge as this process's `tracing` subscriber (once; if the application
/// already installed one, that one keeps the events).
pub fn install() {
    let subscriber = tracing_subscriber::registry().with(PythonLogging);
    if tracing::subscriber::set_global_default(subscriber).is_ok() {
        ENABLED.store(true, Ordering::SeqCst);
    }
}

/// Stops forwarding (called at interpreter exit, when taking the GIL is no longer safe).
#[pyfunction]
pub fn stop_logging() {
    ENABLED.store(false, Ordering::SeqCst);
}

struct PythonLogging;

#[derive(Default)]
struct Message {
    text: String,
    fields: String,
}

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.text, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.text.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }
}

impl<S: Subscriber> Layer<S> for PythonLogging {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let level = match *meta.level() {
            Level::ERROR => 40,
            Level::WARN => 30,
            Level::INFO => 20,
            _ => return,
        };
        if !ENABLED.load(Ordering::SeqCst) {
            return;
        }
        let name = meta.target().replace("::", ".");
        if !(name == "weapp" || name.starts_with("weapp.") || name.starts_with("weapp_")) {
            return;
        }
        let name = name.replacen("weapp_sim", "weapp.sim", 1);
        let mut message = Message::default();
        event.record(&mut message);
        let text = format!("{}{}", message.text, message.fields);
        Python::attach(|py| {
            let logged = (|| -> PyResult<()> {
                let logger = py
                    .import("logging")?
                    .getattr("getLogger")?
                    .call1((name.as_str(),))?;
                if logger.call_method1("isEnabledFor", (level,))?.is_truthy()? {
                    logger.call_method1("log", (level, "%s", text.as_str()))?;
                }
                Ok(())
            })();
            // A logging failure must not become the caller's failure.
            drop(logged);
        });
    }
}
