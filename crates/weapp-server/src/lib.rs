//! # weapp-server — login/session service and access-token broker for WeChat Mini Programs
//!
//! - `POST /v1/login`: a `wx.login()` code becomes an opaque session token of ours; the user's
//!   session_key stays on the server, encrypted at rest.
//! - `GET /v1/apps/{appid}/access_token`: the central token broker (中控), one refresher per app
//!   for the whole fleet (Redis lock with fencing), served from memory on the hot path.
//! - `GET|POST /v1/apps/{appid}/push`: WeChat's signed, encrypted pushes, verified, stored
//!   durably (de-duplicated) and delivered to a signed webhook at least once.
//! - SQLite by default, PostgreSQL + Redis for fleets.
//!
//! Embed it with [`run`] / [`spawn`], or run `weapp serve`.

pub mod config;
pub mod connections;
pub mod egress;
pub mod error;
pub mod fleet;
pub mod http;
pub mod jwt;
pub mod logins;
pub mod metrics;
pub mod net;
pub mod platform;
pub mod ratelimit;
pub mod registry;
pub mod sandbox;
pub mod seal;
pub mod state;
pub mod store;
pub mod token_probe;
pub mod webhook;

use std::future::Future;

pub use config::Config;
pub use state::{AppState, StartError};
use tokio::net::TcpListener;

/// Why [`run`], [`serve`] or a [`ServerHandle`] stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The server could not be set up (configuration, database, Redis, data keys, an app).
    #[error(transparent)]
    Start(#[from] StartError),
    /// The background server task panicked or was cancelled.
    #[error(transparent)]
    Task(#[from] tokio::task::JoinError),
}

/// Serves the API on `listener` until `shutdown` completes, then finishes in-flight requests
/// and stops the token refreshers.
///
/// # Errors
/// [`RunError::Start`] when the server cannot be set up: its [`StartError`] tells a bad
/// configuration from an unreachable database or Redis, and names the problem.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let state = AppState::build(config).await?;
    serve(state, listener, shutdown).await
}

/// Serves the API of a built `state` (see [`AppState::build`]) on `listener` until `shutdown`
/// completes, then finishes in-flight requests and stops the background tasks. With [`run`],
/// for a caller that has something to do between a successful set-up and serving — `weapp
/// serve` prints its banner only once the configuration, the listener and the database are
/// known to be good.
///
/// Connections are served as [`connections`] describes: header-read and idle timeouts,
/// caps for the process and per source address, accept errors (no descriptor left) retried.
///
/// # Errors
/// None today: accept errors are logged and retried (the `Result` leaves room for more).
pub async fn serve(
    state: AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let fleet = fleet::spawn(state.clone(), stop_rx.clone());
    let registry = spawn_registry_poller(state.clone(), stop_rx.clone());
    let purger = spawn_session_purger(state.clone(), stop_rx.clone());
    let reconciler = spawn_platform_reconciler(state.clone(), stop_rx.clone());
    let outbox = webhook::spawn_outbox(state.clone(), stop_rx);
    let settings = connections::Settings::new(&state.config, &state.trusted_proxies);
    log_connection_settings(&settings);
    let app = http::router(state);
    connections::serve(listener, app, settings, shutdown).await;
    let _ = stop_tx.send(true);
    let _ = fleet.await;
    let _ = registry.await;
    let _ = purger.await;
    let _ = reconciler.await;
    let _ = outbox.await;
    tracing::info!("server stopped");
    Ok(())
}

/// Says once, at start, what the server will hold (and warns when the open-file limit made
/// `max_connections` smaller than configured).
fn log_connection_settings(settings: &connections::Settings) {
    let limits = settings.limits;
    let limit = limits
        .descriptor_limit
        .map_or_else(|| "unlimited".to_owned(), |l| l.to_string());
    if limits.lowered {
        tracing::warn!(
            max_connections = limits.max,
            open_file_limit = %limit,
            "max_connections lowered to fit under the open-file limit (raise it: LimitNOFILE in systemd, ulimit -n)"
        );
    }
    tracing::info!(
        max_connections = limits.max,
        max_connections_per_ip = limits.per_ip.unwrap_or(0),
        open_file_limit = %limit,
        header_read_timeout_secs = settings.header_read_timeout.as_secs(),
        connection_idle_timeout_secs = settings.idle_timeout.as_secs(),
        "connection limits"
    );
}

/// Keeps the registry current: the revision every `registry_poll_ms`, everything every
/// `registry_reconcile_secs`.
fn spawn_registry_poller(
    state: AppState,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let poll = std::time::Duration::from_millis(state.config.registry_poll_ms);
        let reconcile = std::time::Duration::from_secs(state.config.registry_reconcile_secs);
        let mut last_full = std::time::Instant::now();
        loop {
            tokio::select! {
                () = tokio::time::sleep(poll) => {}
                _ = stop.changed() => break,
            }
            let full = last_full.elapsed() >= reconcile;
            match state.sync_registry(full).await {
                Ok(_) if full => last_full = std::time::Instant::now(),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "registry: cannot read the managed apps and clients")
                }
            }
            if let Err(e) = state.signing_tick(state::now_ms()).await {
                tracing::warn!(error = %e, "signing keys: cannot rotate or clean up");
            }
        }
    })
}

/// Reconciles every platform's merchants with WeChat's authorizer list once every
/// `platform_reconcile_secs` (0: never), looking every minute (or every period, if shorter)
/// whether a run is due. One instance of the fleet does it per platform and period: it claims
/// the run in the database (a compare-and-set of the last run's time), so a fleet of any size
/// lists each platform once; a failed run releases its claim.
fn spawn_platform_reconciler(
    state: AppState,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let every = state.config.platform_reconcile_secs;
        if every == 0 {
            return;
        }
        let tick = std::time::Duration::from_secs(60.min(every));
        let mut wait = tick;
        loop {
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = stop.changed() => break,
            }
            wait = tick;
            for platform in state.platforms() {
                let component_appid = &platform.config.component_appid;
                let (key, claimed, previous) = match claim_reconciliation(
                    &state,
                    component_appid,
                    every,
                )
                .await
                {
                    Ok(Some(c)) => c,
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::warn!(platform = %component_appid, error = %e, "platform reconciliation not claimed; next time");
                        continue;
                    }
                };
                match state.reconcile_platform(component_appid).await {
                    Ok(r) => {
                        tracing::info!(platform = %component_appid, restored = r.restored, deauthorized = r.deauthorized, "platform reconciled with the authorizer list")
                    }
                    Err(e) => {
                        // Released: the fleet tries again at its next tick, not a period later.
                        tracing::warn!(platform = %component_appid, error = %e, "platform reconciliation failed; it is retried at the next tick");
                        let released = match &previous {
                            Some(p) => state.store.meta_cas(&key, Some(&claimed), p).await,
                            None => state.store.meta_cas(&key, Some(&claimed), "0").await,
                        };
                        if let Err(e) = released {
                            tracing::warn!(platform = %component_appid, error = %e, "reconciliation claim not released; retried a period later");
                        }
                    }
                }
            }
        }
    })
}

/// Claims this period's reconciliation of a platform for this instance when it is due (none
/// for `every` seconds) and no other instance claimed it first: the meta key, the value written
/// and the one it replaced (to release the claim if the run fails). A claim time further in
/// the future than a period (a clock that was wrong) does not block the fleet.
async fn claim_reconciliation(
    state: &AppState,
    component_appid: &str,
    every: u64,
) -> Result<Option<(String, String, Option<String>)>, store::StoreError> {
    let key = format!("platform_reconciled:{component_appid}");
    let last = state.store.meta_get(&key).await?;
    let now = state::now_ms();
    let every_ms = i64::try_from(every.saturating_mul(1000)).unwrap_or(i64::MAX);
    let due = last
        .as_deref()
        .and_then(|v| v.parse::<i64>().ok())
        .is_none_or(|t| now - t >= every_ms || t - now > every_ms);
    if !due {
        return Ok(None);
    }
    let claimed = now.to_string();
    let won = state
        .store
        .meta_cas(&key, last.as_deref(), &claimed)
        .await?;
    Ok(won.then_some((key, claimed, last)))
}

/// Deletes expired sessions every ten minutes.
fn spawn_session_purger(
    state: AppState,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match state.store.purge_expired_sessions(state::now_ms()).await {
                Ok(n) if n > 0 => tracing::info!(purged = n, "expired sessions deleted"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "session purge failed"),
            }
            tokio::select! {
                () = tokio::time::sleep(std::time::Duration::from_secs(600)) => {}
                _ = stop.changed() => break,
            }
        }
    })
}

/// A server running in the background (tests, `weapp demo`). Dropping it stops the server.
#[derive(Debug)]
pub struct ServerHandle {
    url: String,
    state: AppState,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), RunError>>>,
}

impl ServerHandle {
    /// Base URL, e.g. `http://127.0.0.1:40123`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The server's state.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Stops gracefully and waits.
    ///
    /// # Errors
    /// What the server loop returned, or [`RunError::Task`] when it panicked.
    pub async fn shutdown(mut self) -> Result<(), RunError> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(t) => t.await?,
            None => Ok(()),
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// Builds the state and serves on `config.listen` in the background.
///
/// # Errors
/// Setup failures (see [`AppState::build`]), or [`StartError::Listen`] when the address
/// cannot be bound.
pub async fn spawn(config: Config) -> Result<ServerHandle, StartError> {
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Listen {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(StartError::LocalAddr)?;
    let state = AppState::build(config).await?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve(state.clone(), listener, async move {
        let _ = rx.await;
    }));
    Ok(ServerHandle {
        url: format!("http://{addr}"),
        state,
        stop: Some(tx),
        task: Some(task),
    })
}
