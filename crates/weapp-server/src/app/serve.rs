//! Running the service: [`run`], [`serve`] and [`spawn`] build the state, start the background
//! tasks and serve every domain's routes through the shared middleware.

use std::future::Future;

use axum::Router;
use tokio::net::TcpListener;

use super::state::AppState;
use super::{ops, tasks, StartError};
use crate::config::Config;

/// Every route of the service: each domain's, with its own state, inside the shared middleware
/// ([`crate::http::layers`]).
pub fn router(state: AppState) -> Router {
    let routes = Router::new()
        .merge(crate::sessions::router(state.sessions.clone()))
        .merge(crate::broker::router(state.broker.clone()))
        .merge(crate::keys::handlers::router(state.keys.clone()))
        .merge(crate::platforms::router(state.platforms.clone()))
        .merge(crate::push::router(state.push.clone()))
        .merge(crate::payments::router(state.payments.clone()))
        .merge(crate::payments::shop::router(
            state.payments.clone(),
            state.sessions.clone(),
        ))
        .merge(ops::router(state.clone()))
        .merge(crate::admin::router(state.admin.clone()));
    crate::http::layers(routes, state.shared.clone())
}

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
/// Connections are served as [`crate::connections`] describes: header-read and idle timeouts,
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
    let fleet = crate::broker::fleet::spawn(state.broker.clone(), stop_rx.clone());
    let registry = tasks::spawn_registry_poller(state.admin.clone(), stop_rx.clone());
    let purger = tasks::spawn_session_purger(state.shared.clone(), stop_rx.clone());
    let reconciler = tasks::spawn_platform_reconciler(state.platforms.clone(), stop_rx.clone());
    let pay_sweeper = tasks::spawn_pay_inbox_sweeper(state.payments.clone(), stop_rx.clone());
    let merchant_poller = tasks::spawn_merchant_poller(state.payments.clone(), stop_rx.clone());
    let pay_reconciler = tasks::spawn_pay_reconciler(state.payments.clone(), stop_rx.clone());
    let pay_queries = tasks::spawn_pay_query_fallback(state.payments.clone(), stop_rx.clone());
    let outbox = crate::push::outbox::spawn_outbox(
        state.push.clone(),
        std::sync::Arc::new(state.platforms.clone()),
        stop_rx,
    );
    let settings = crate::connections::Settings::new(&state.config, &state.trusted_proxies);
    log_connection_settings(&settings);
    let app = router(state);
    crate::connections::serve(listener, app, settings, shutdown).await;
    let _ = stop_tx.send(true);
    let _ = fleet.await;
    let _ = registry.await;
    let _ = purger.await;
    let _ = reconciler.await;
    let _ = pay_sweeper.await;
    let _ = merchant_poller.await;
    let _ = pay_reconciler.await;
    let _ = pay_queries.await;
    let _ = outbox.await;
    tracing::info!("server stopped");
    Ok(())
}

/// Says once, at start, what the server will hold (and warns when the open-file limit made
/// `max_connections` smaller than configured).
fn log_connection_settings(settings: &crate::connections::Settings) {
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
