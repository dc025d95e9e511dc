//! `weapp._native.NativeClient`: the Rust `weapp::Client` behind `weapp.Client` and
//! `weapp.AsyncClient`.
//!
//! Nothing is connected when it is built. The `weapp::Client` (its HTTP pool, its Redis
//! connection, its in-memory token copy) is made by the first call in each process and remade
//! in a forked child, whose copy of the parent's would be tied to a runtime without threads.
//! All threads of one process share one `weapp::Client`, so they share one token and one
//! refresh; processes share Redis exactly as Rust processes do (the same keys).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::prelude::*;
use tokio::sync::OnceCell;
use weapp::token::redis::RedisStore;
use weapp::{AppSecret, Client, TokenMode};

use crate::bridge::{self, TaskHandle};
use crate::errors;
use crate::ops::{self, Args, Output};
use crate::runtime;

/// Where tokens are kept.
#[derive(Clone)]
enum Store {
    Memory,
    Redis { url: String, prefix: String },
    Broker { url: String, key: String },
}

struct Config {
    appid: String,
    secret: AppSecret,
    store: Store,
    mode: TokenMode,
    base_url: Option<String>,
    timeout: Duration,
}

/// The per-process client: built once per process id.
type ProcessClient = (u32, Arc<OnceCell<Arc<Client>>>);

/// The native half of `weapp.Client` and `weapp.AsyncClient`.
#[pyclass(frozen, module = "weapp._native")]
pub struct NativeClient {
    config: Arc<Config>,
    current: Mutex<Option<ProcessClient>>,
}

impl NativeClient {
    fn cell(&self) -> Arc<OnceCell<Arc<Client>>> {
        let pid = std::process::id();
        let mut slot = self.current.lock().unwrap_or_else(|p| p.into_inner());
        match slot.as_ref() {
            Some((owner, cell)) if *owner == pid => cell.clone(),
            _ => {
                // A client made before a fork belongs to the parent: leak it in the child, never
                // drop it here (its pool and connections belong to a runtime without threads).
                if let Some((_, old)) = slot.take() {
                    std::mem::forget(old);
                }
                let cell = Arc::new(OnceCell::new());
                *slot = Some((pid, cell.clone()));
                cell
            }
        }
    }
}

async fn build(config: &Config) -> Result<Arc<Client>, weapp::Error> {
    let mut builder = Client::builder(config.appid.clone(), config.secret.clone())
        .token_mode(config.mode)
        // `timeout` bounds each request; a token refresh, every attempt included, gets twice
        // that (the SDK's default is 30 s whatever the request timeout).
        .token_policy(weapp::token::TokenPolicy {
            fetch_timeout: config.timeout * 2,
            ..weapp::token::TokenPolicy::default()
        })
        .timeout(config.timeout)
        .connect_timeout(config.timeout.min(Duration::from_secs(5)));
    if let Some(url) = &config.base_url {
        builder = builder.base_url(url.clone());
    }
    match &config.store {
        Store::Memory => {}
        Store::Redis { url, prefix } => {
            let store = RedisStore::connect(url, prefix.clone()).await?;
            builder = builder.token_store(Arc::new(store));
        }
        Store::Broker { url, key } => {
            builder = builder.broker(url.clone(), key.clone());
        }
    }
    builder.build().map(Arc::new)
}

#[pymethods]
impl NativeClient {
    #[new]
    #[pyo3(signature = (appid, secret, token_store, token_mode, base_url, timeout, redis_prefix, broker_url, broker_key))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        appid: String,
        secret: String,
        token_store: Option<String>,
        token_mode: &str,
        base_url: Option<String>,
        timeout: f64,
        redis_prefix: String,
        broker_url: Option<String>,
        broker_key: Option<String>,
    ) -> PyResult<Self> {
        let mode = match token_mode {
            "stable" => TokenMode::Stable,
            "classic" => TokenMode::Classic,
            _ => {
                return Err(errors::invalid(
                    py,
                    "token_mode must be \"stable\" or \"classic\"",
                ))
            }
        };
        if !(timeout.is_finite() && timeout > 0.0 && timeout <= 600.0) {
            return Err(errors::invalid(
                py,
                "timeout must be a number of seconds in (0, 600]",
            ));
        }
        if appid.trim().is_empty() {
            return Err(errors::invalid(py, "appid must not be empty"));
        }
        let store = match (token_store.as_deref(), broker_url, broker_key) {
            (None | Some("memory"), None, None) => Store::Memory,
            (Some(url), None, None)
                if weapp::token::redis::RedisTopology::is_redis_scheme(url) =>
            {
                Store::Redis {
                    url: url.to_owned(),
                    prefix: redis_prefix,
                }
            }
            (None, Some(url), Some(key)) => Store::Broker { url, key },
            (None, _, _) => {
                return Err(errors::invalid(py, "broker_url and broker_key go together"))
            }
            (Some(_), None, None) => {
                return Err(errors::invalid(
                    py,
                    "token_store must be None, \"memory\" or a Redis URL (redis://, rediss://, redis+sentinel://, redis+cluster://)",
                ))
            }
            (Some(_), _, _) => {
                return Err(errors::invalid(
                    py,
                    "give token_store or a broker, not both",
                ))
            }
        };
        if secret.is_empty() && !matches!(store, Store::Broker { .. }) {
            return Err(errors::invalid(py, "secret must not be empty"));
        }
        Ok(Self {
            config: Arc::new(Config {
                appid,
                secret: AppSecret::new(secret),
                store,
                mode,
                base_url,
                timeout: Duration::from_secs_f64(timeout),
            }),
            current: Mutex::new(None),
        })
    }

    /// The appid.
    #[getter]
    fn appid(&self) -> &str {
        &self.config.appid
    }

    /// `stable` or `classic`.
    #[getter]
    fn token_mode(&self) -> &'static str {
        match self.config.mode {
            TokenMode::Classic => "classic",
            _ => "stable",
        }
    }

    /// Where tokens are kept, without credentials: `memory`, the Redis URL with its password
    /// replaced by `***`, or `broker:<url>`.
    #[getter]
    fn token_store(&self) -> String {
        match &self.config.store {
            Store::Memory => "memory".into(),
            Store::Redis { url, .. } => redact_url(url),
            Store::Broker { url, .. } => format!("broker:{}", redact_url(url)),
        }
    }

    /// The access token (from this process's copy, Redis, the broker or WeChat). Blocks
    /// without holding the GIL.
    fn access_token(&self, py: Python<'_>) -> PyResult<String> {
        let cell = self.cell();
        let config = self.config.clone();
        let outcome = py.detach(move || {
            runtime::block_on(async move {
                let client = cell.get_or_try_init(|| build(&config)).await?;
                client.access_token().await.map(|t| t.expose().to_owned())
            })
        });
        outcome.map_err(|e| errors::api(py, e))
    }

    /// Runs an operation and waits for it without holding the GIL.
    #[pyo3(signature = (op, args, blob=None))]
    fn invoke(
        &self,
        py: Python<'_>,
        op: String,
        args: String,
        blob: Option<Vec<u8>>,
    ) -> PyResult<Py<PyAny>> {
        let args = Args::parse(&args, blob).map_err(|e| bridge::error(py, e))?;
        let cell = self.cell();
        let config = self.config.clone();
        bridge::block(py, async move {
            let client = cell.get_or_try_init(|| build(&config)).await?;
            ops::run(client, &op, args).await
        })
    }

    /// Starts an operation on the runtime and returns at once; `done(ok, value)` is called
    /// from a runtime thread with the result or the exception. Dropping the returned handle
    /// does not cancel; `cancel()` does.
    #[pyo3(signature = (op, args, done, blob=None))]
    fn spawn(
        &self,
        py: Python<'_>,
        op: String,
        args: String,
        done: Py<PyAny>,
        blob: Option<Vec<u8>>,
    ) -> PyResult<TaskHandle> {
        let args = Args::parse(&args, blob).map_err(|e| bridge::error(py, e))?;
        let cell = self.cell();
        let config = self.config.clone();
        let access_token = op == "access_token";
        Ok(bridge::spawn(py, done, async move {
            let client = cell.get_or_try_init(|| build(&config)).await?;
            if access_token {
                let t = client.access_token().await?;
                Ok(Output::Json(serde_json::Value::String(
                    t.expose().to_owned(),
                )))
            } else {
                ops::run(client, &op, args).await
            }
        }))
    }

    fn __repr__(&self) -> String {
        format!(
            "NativeClient(appid={:?}, token_mode={:?}, token_store={:?})",
            self.config.appid,
            self.token_mode(),
            self.token_store()
        )
    }
}

/// A URL with its user-info replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let Some(scheme) = url.find("://") else {
        return url.to_owned();
    };
    // Everything up to the last `@` goes: a password may itself hold `@`, `/`, `?` or `#`,
    // and hiding too much is the safe error.
    let rest = &url[scheme + 3..];
    match rest.rfind('@') {
        Some(at) => format!("{}://***@{}", &url[..scheme], &rest[at + 1..]),
        None => url.to_owned(),
    }
}
