//! Sessions: `wx.login()` codes become sessions of ours (the session_key never leaves the
//! server), refreshed, revoked and introspected; `me`, the phone number and decryption of a
//! user's data; the login writer's group commit ([`writer`]).
//!
//! Owns the users and sessions tables. Asks the broker (apps, clients), keys (sealing,
//! signing) and platforms (component logins).

pub mod handlers;
pub mod introspect;
mod service;
pub mod writer;

use axum::Router;

pub use service::{SessionLimits, Sessions, SessionsInner};
pub use writer::LoginWriter;

/// The routes of this domain.
pub fn router(sessions: Sessions) -> Router {
    handlers::router(&sessions)
        .merge(introspect::router())
        .with_state(sessions)
}
