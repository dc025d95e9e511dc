//! Administration: the registry of managed apps and broker clients (kept in the database,
//! secrets sealed, picked up by every instance through the registry sync), managed platforms,
//! signing-key rotation, users, the audit log, the admin API ([`apps`], [`clients`],
//! [`users`], [`signing`], [`platforms`], WeChat Pay [`merchants`] and their reconciliation
//! reports, the payments' views ([`payments`])) and
//! the console ([`console`]).
//!
//! The admin API (`/v1/admin/…`) is authenticated by `[[admins]]` keys (Bearer; compared in
//! constant time; a failure is one warn line — source and reason, never the key — and counts
//! against the source, which is refused before its key is looked at once it fails too often),
//! each admin rate-limited, every change audit-logged (database and log line) with what it
//! granted or where it points, and every read of users' data (a phone number, pushed messages)
//! audited before it is answered. A change may name the version it was made from (`If-Match`,
//! the `ETag`/`rev` read): 412 once that version is gone. No answer ever carries a secret,
//! except a new broker client's key, once, in the answer that creates it (or rotates it).
//!
//! Owns the managed apps, clients and platforms tables and the audit log. The top domain: it
//! may ask every other one; none asks it.

pub mod apps;
mod auth;
pub mod clients;
mod common;
pub mod console;
pub mod merchants;
pub mod payments;
pub mod platforms;
mod service;
pub mod signing;
pub mod users;

use axum::Router;

pub use service::{AdminApi, AdminInner};

/// The routes of this domain: the admin API and the console.
pub fn router(admin: AdminApi) -> Router {
    apps::router()
        .merge(clients::router())
        .merge(users::router())
        .merge(signing::router())
        .merge(platforms::router())
        .merge(payments::router())
        .merge(merchants::router())
        .merge(console::router())
        .with_state(admin)
}
