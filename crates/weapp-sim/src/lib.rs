//! # weapp-sim — a faithful local WeChat Mini Program server
//!
//! Reproduces the behaviour of `api.weixin.qq.com` that backends depend on — classic and stable
//! tokens with their invalidation rules and quotas, one-time login and phone codes, per-user
//! session keys, login-state signatures — plus a control API under `/_sim/` that plays the
//! WeChat app and console (log a user in, hand out a phone code, encrypt open data), a virtual
//! clock, fault injection and call statistics.
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! let sim = weapp_sim::spawn(weapp_sim::SimConfig::default()).await?;
//! let (appid, secret) = sim.sim().add_app(None, None, false);
//! let (code, openid) = sim.sim().login(&appid, None, None, false).unwrap();
//! println!("point your client at {} and redeem {code}", sim.url());
//! # Ok(()) }
//! ```
//!
//! Choices where WeChat's documentation is silent are listed in the crate README.

mod control;
pub mod crypto;
pub mod datacube;
pub mod links;
pub mod push;
mod state;
pub mod subscribe;
mod wechat;
pub mod wxacode;

use std::future::Future;
use std::net::SocketAddr;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio::net::TcpListener;

pub use push::{Attempt, Delivery, PushFormat, PushMode, PushTarget};
pub use state::{
    ClockMode, Fault, RidRecord, Sim, TokenKind, User, UserAction, WxError, WxResult,
    CLASSIC_DAILY_QUOTA, CODE_TTL, JSCODE_PER_USER_MINUTE, STABLE_FORCE_DAILY, TOKEN_OVERLAP,
    TOKEN_TTL,
};

/// Applies an injected fault for the request's path, if one matches; counts every WeChat call.
async fn faults(State(sim): State<Sim>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    if path.starts_with("/_sim/") {
        return next.run(req).await;
    }
    let Some(fault) = sim.on_call(&path) else {
        return next.run(req).await;
    };
    let delay = fault.latency_ms.map(std::time::Duration::from_millis);
    let answer = if let Some(body) = fault.body {
        let status = fault
            .http_status
            .and_then(|s| StatusCode::from_u16(s).ok())
            .unwrap_or(StatusCode::OK);
        (
            status,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response()
    } else if let Some(status) = fault.http_status {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
        (status, "simulated upstream failure").into_response()
    } else if let Some(code) = fault.errcode {
        let msg = match code {
            -1 => "system error",
            45009 => "reach max api daily quota limit",
            45011 => "api minute-quota reach limit, must slower, retry next minute",
            40001 => "invalid credential, access_token is invalid or not latest",
            _ => "simulated fault",
        };
        wechat::wx_error(&sim, &path, &WxError::new(code, msg))
    } else {
        // Only late: do the work now, in a task of its own, so it happens even if the caller
        // disconnects while waiting for the answer.
        match tokio::spawn(next.run(req)).await {
            Ok(r) => r,
            Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        }
    };
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    answer
}

async fn not_found(State(sim): State<Sim>, req: Request) -> Response {
    // WeChat answers unknown paths with 404 and a short HTML page; so do we, plainly.
    let _ = sim;
    (
        StatusCode::NOT_FOUND,
        format!("no such API: {}", req.uri().path()),
    )
        .into_response()
}

/// The simulator's HTTP application.
pub fn router(sim: Sim) -> Router {
    Router::new()
        .merge(wechat::router())
        .merge(control::router())
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(sim.clone(), faults))
        .layer(axum::extract::DefaultBodyLimit::max(10 * 1024 * 1024))
        .with_state(sim)
}

/// Serves `sim` on `listener` until `shutdown` completes.
///
/// # Errors
/// I/O errors from the listener.
pub async fn run(
    listener: TcpListener,
    sim: Sim,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(sim))
        .with_graceful_shutdown(shutdown)
        .await
}

/// How to start a simulator.
#[derive(Debug, Clone, Default)]
pub struct SimConfig {
    /// Address to listen on; default `127.0.0.1:0` (a free port).
    pub listen: Option<SocketAddr>,
    /// Apps to register at start, `(appid, secret)`.
    pub apps: Vec<(String, String)>,
    /// Virtual (default) or real-time clock.
    pub clock: ClockMode,
}

/// A running simulator. Dropping it shuts the server down.
#[derive(Debug)]
pub struct SimHandle {
    sim: Sim,
    addr: SocketAddr,
    url: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl SimHandle {
    /// Base URL, e.g. `http://127.0.0.1:43123`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Direct access to the simulator state.
    pub fn sim(&self) -> &Sim {
        &self.sim
    }

    /// Stops the server and waits for it to finish.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Starts a simulator in the background.
///
/// # Errors
/// When the address cannot be bound.
pub async fn spawn(config: SimConfig) -> std::io::Result<SimHandle> {
    let sim = Sim::new(config.clock);
    for (appid, secret) in config.apps {
        sim.add_app(Some(appid), Some(secret), false);
    }
    let listener = TcpListener::bind(
        config
            .listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0))),
    )
    .await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run(listener, sim.clone(), async move {
        let _ = rx.await;
    }));
    Ok(SimHandle {
        sim,
        addr,
        url: format!("http://{addr}"),
        shutdown: Some(tx),
        task: Some(task),
    })
}
