//! Administration: the registry of managed apps and broker clients (kept in the database,
//! secrets sealed, picked up by every instance through the registry sync), managed platforms,
//! signing-key rotation, users, the audit log, the admin API ([`handlers`], [`platforms`]) and
//! the console ([`console`]).
//!
//! Owns the managed apps, clients and platforms tables and the audit log. The top domain: it
//! may ask every other one; none asks it.

pub mod console;
pub mod handlers;
pub mod platforms;
mod service;

use axum::Router;

pub use service::{AdminApi, AdminInner};

/// The routes of this domain: the admin API and the console.
pub fn router(admin: AdminApi) -> Router {
    handlers::router()
        .merge(platforms::router())
        .merge(console::router())
        .with_state(admin)
}
