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

// The modules form layers; each imports only modules of the layers before it (no two modules
// import each other: `scripts/module-cycles weapp-sim` checks it):
// 1. leaves, importing nothing of the crate: `error` (WxError, errmsg), `clock`, `random`,
//    `crypto`, `journal` (the event ring);
// 2. `state`: each domain's data, one file per domain, for the world to hold;
// 3. `world`: the World, the `Sim` handle to it, and what every domain does with it;
// 4. `http` (answer shapes, control-API helpers) and `events` (the journal's routes);
// 5. the WeChat domains, each with its rules and routes (`tokens` first: every API checks a
//    token; `push` before the domains that push; `platform` last), and `core`, the
//    simulator's own control routes (apps, users, clock, faults, stats, reset);
// 6. this file: the router that assembles them, the middleware, `run` and `spawn`.
mod clock;
pub mod console;
mod core;
pub mod crypto;
pub mod customer_service;
pub mod datacube;
mod error;
mod events;
mod http;
pub mod journal;
pub mod links;
pub mod login;
pub mod openapi;
pub mod pay;
pub mod phone;
pub mod platform;
pub mod push;
mod random;
pub mod security;
mod state;
pub mod subscribe;
pub mod tokens;
mod world;
pub mod wxacode;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};
use tokio::net::TcpListener;

pub use crate::clock::ClockMode;
pub use crate::error::{PayError, PayResult, WxError, WxResult};
pub use crate::world::{Fault, RidRecord, Sim, User, CODE_TTL};
pub use console::{Backend, RequestTemplate, STYLE as CONSOLE_STYLE};
pub use customer_service::{UserAction, MEDIA_TTL_SECS};
pub use journal::{Event, Journal};
pub use login::JSCODE_PER_USER_MINUTE;
pub use openapi::CLEAR_QUOTA_MONTHLY;
pub use push::{Attempt, Delivery, PushFormat, PushMode, PushTarget};
pub use security::VERDICT_KEYWORDS;
pub use tokens::{
    ForeignFetch, TokenKind, CLASSIC_DAILY_QUOTA, STABLE_DAILY_QUOTA, STABLE_FORCE_DAILY,
    STABLE_FORCE_SPACING, STABLE_MINUTE_QUOTA, TOKEN_OVERLAP, TOKEN_TTL,
};

/// Applies an injected fault for the request's path, if one matches; counts every WeChat call.
async fn faults(State(sim): State<Sim>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    if path.starts_with("/_sim/") || path == "/" {
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
    } else if let (Some(status), true) = (fault.http_status, path.starts_with("/v3/")) {
        // WeChat Pay answers its own way: the status with `{"code","message"}`, unsigned.
        pay::fault_response(status)
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
        http::wx_error(&sim, &path, &WxError::new(code, msg))
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

/// How much of a request or response body the journal keeps.
const JOURNAL_BODY_LIMIT: usize = 16 * 1024;

/// A body as the journal shows it: JSON (secrets masked), or a note of its size and type.
fn journal_body(bytes: &[u8], content_type: &str) -> Value {
    if bytes.is_empty() {
        return Value::Null;
    }
    if content_type.contains("json") || bytes.first() == Some(&b'{') {
        if let Ok(v) = serde_json::from_slice::<Value>(bytes) {
            return journal::mask(v);
        }
    }
    let kind = if content_type.is_empty() {
        "bytes"
    } else {
        content_type
    };
    Value::String(format!("[{} bytes of {kind}]", bytes.len()))
}

/// Records every WeChat call in the journal: appid, path, errcode, rid, latency, and the
/// request and response with secrets masked.
async fn journal_calls(State(sim): State<Sim>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    if path.starts_with("/_sim") || path == "/" {
        return next.run(req).await;
    }
    let started = Instant::now();
    let method = req.method().to_string();
    let query = req.uri().query().unwrap_or("").to_owned();
    let req_type = req
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let (parts, body) = req.into_parts();
    let Ok(req_bytes) = axum::body::to_bytes(body, 10 * 1024 * 1024).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, "body too large").into_response();
    };
    let request_body = journal_body(
        &req_bytes[..req_bytes.len().min(JOURNAL_BODY_LIMIT)],
        &req_type,
    );
    let resp = next
        .run(Request::from_parts(parts, Body::from(req_bytes.clone())))
        .await;
    let (rparts, rbody) = resp.into_parts();
    let resp_bytes = axum::body::to_bytes(rbody, usize::MAX)
        .await
        .unwrap_or_default();
    let resp_type = rparts
        .headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let response_body = journal_body(
        &resp_bytes[..resp_bytes.len().min(JOURNAL_BODY_LIMIT)],
        &resp_type,
    );
    let q = journal::masked_query(&query);
    let appid = q
        .get("appid")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| {
            serde_json::from_slice::<Value>(&req_bytes)
                .ok()
                .and_then(|v| v.get("appid").and_then(Value::as_str).map(str::to_owned))
        })
        .or_else(|| {
            query
                .split('&')
                .find_map(|kv| kv.strip_prefix("access_token="))
                .and_then(|t| sim.token_owner(t))
        });
    let mut event = Event::new("call").path(&path).detail(json!({
        "method": method,
        "query": q,
        "request": request_body,
        "status": rparts.status.as_u16(),
        "response": response_body,
    }));
    event.latency_ms = Some(started.elapsed().as_millis() as u64);
    if let Some(a) = appid {
        event = event.appid(a);
    }
    if let Ok(v) = serde_json::from_slice::<Value>(&resp_bytes) {
        if let Some(code) = v.get("errcode").and_then(Value::as_i64).filter(|c| *c != 0) {
            event.errcode = Some(code);
            event.rid = v
                .get("errmsg")
                .and_then(Value::as_str)
                .and_then(|m| m.rsplit_once("rid: "))
                .map(|(_, rid)| rid.trim().to_owned());
        }
    }
    sim.record(event);
    Response::from_parts(rparts, Body::from(resp_bytes))
}

/// Guards the control API and the console against web pages open in the developer's browser:
/// - a request to `/_sim/…` or `/` addressed to a host name that is not loopback, an IP address
///   or [allowed](Sim::allow_host) is refused (421) — DNS rebinding gives a page the
///   simulator's address under the page's own name, which this does not answer to;
/// - a control call that changes something, sent by a browser from another origin, is refused
///   (403), so a page cannot drive the simulator blind either.
///
/// Requests without `Origin` (curl, SDKs, tests) and the console itself (same origin) pass.
async fn guard_control(State(sim): State<Sim>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if path.starts_with("/_sim") || path == "/" {
        let host = req
            .headers()
            .get(axum::http::header::HOST)
            .and_then(|h| h.to_str().ok());
        if !host.is_some_and(|h| sim.host_allowed(h)) {
            return crate::http::control_error(
                StatusCode::MISDIRECTED_REQUEST,
                "this host name is not allowed: use 127.0.0.1 or localhost, or allow it (weapp sim --allow-host NAME)",
            );
        }
        let changes = !matches!(
            *req.method(),
            axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
        );
        if changes {
            if let Some(origin) = req.headers().get(axum::http::header::ORIGIN) {
                let authority = origin.to_str().ok().and_then(|o| {
                    o.strip_prefix("http://")
                        .or_else(|| o.strip_prefix("https://"))
                });
                if host.is_none() || authority != host {
                    return crate::http::control_error(
                        StatusCode::FORBIDDEN,
                        "cross-origin control calls are refused (use the console on this origin, or a client without Origin)",
                    );
                }
            }
        }
    }
    next.run(req).await
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

/// Runs the request knowing the caller's address (for the platforms' IP whitelists).
async fn caller_scope(req: Request, next: Next) -> Response {
    let ip = req
        .extensions()
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_canonical());
    state::platform::CALLER.scope(ip, next.run(req)).await
}

/// The simulator's HTTP application: each domain's WeChat routes and `/_sim` routes, the
/// core's control routes and the journal.
///
/// Serve it with the callers' addresses
/// (`router(sim).into_make_service_with_connect_info::<SocketAddr>()`, as [`run`] does): a
/// platform with an IP whitelist refuses (61004) calls whose address it cannot see.
pub fn router(sim: Sim) -> Router {
    Router::new()
        .merge(tokens::routes())
        .merge(tokens::control())
        .merge(login::routes())
        .merge(login::control())
        .merge(phone::routes())
        .merge(phone::control())
        .merge(wxacode::routes())
        .merge(links::routes())
        .merge(subscribe::routes())
        .merge(subscribe::control())
        .merge(customer_service::routes())
        .merge(customer_service::control())
        .merge(security::routes())
        .merge(datacube::routes())
        .merge(openapi::routes())
        .merge(push::control())
        .merge(platform::routes())
        .merge(platform::control())
        .merge(pay::routes())
        .merge(pay::control())
        .merge(core::control())
        .merge(events::control())
        .merge(console::control())
        .fallback(not_found)
        // Inside `faults`, which may run the request in a task of its own.
        .layer(axum::middleware::from_fn(caller_scope))
        .layer(axum::middleware::from_fn_with_state(sim.clone(), faults))
        .layer(axum::middleware::from_fn_with_state(
            sim.clone(),
            journal_calls,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(10 * 1024 * 1024))
        .layer(axum::middleware::from_fn_with_state(
            sim.clone(),
            guard_control,
        ))
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
    // Third-party platforms' ticket pushes, due every ten minutes of the simulator's clock.
    let tickets = tokio::spawn(platform::ticket_loop(sim.clone()));
    // WeChat Pay's refunds and notifications, due on the simulator's clock.
    let payments = tokio::spawn(pay::delivery_loop(sim.clone()));
    // With the caller's address: a platform's IP whitelist (61004) needs it.
    let served = axum::serve(
        listener,
        router(sim).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await;
    tickets.abort();
    payments.abort();
    served
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
