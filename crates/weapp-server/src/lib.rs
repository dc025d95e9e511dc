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

// The domains, one folder each (see ARCHITECTURE.md): each owns its state, queries, tasks,
// handlers and errors.
pub mod admin;
pub mod broker;
pub mod keys;
pub mod payments;
pub mod platforms;
pub mod push;
pub mod sessions;

// The composition root: builds the domains, assembles the routes, starts the tasks.
pub mod app;

// Shared infrastructure: depends on no domain.
pub mod config;
pub mod connections;
pub mod egress;
pub mod http;
pub mod metrics;
pub mod net;
pub mod ratelimit;
pub mod sandbox;
pub mod shared;
pub mod store;

pub use app::{run, serve, spawn, AppState, RunError, ServerHandle, StartError};
pub use config::Config;
