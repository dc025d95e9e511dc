//! Payments (WeChat Pay, issue 27): orders any backend can place with a client key that has
//! `pay:write` ([`handlers`]), and WeChat Pay's notifications verified over the raw bytes,
//! written to a durable inbox before the 2xx and applied once ([`inbox`]): every business
//! change becomes exactly one event in the app's event log and signed webhooks.
//!
//! Owns the merchants' clients (their keys never leave the server) — the file's and those
//! added at runtime ([`merchants`]: sealed keys, a sync every instance polls) — the tables
//! `pay_orders`, `pay_notifications`, `pay_merchants` and `pay_reconciliations`, and the daily
//! reconciliation with WeChat's trade bill ([`reconcile`], [`bill`]). Asks keys (sealing),
//! the broker (client keys) and push (the event log, the outbox's wake-up).

pub mod bill;
mod error;
pub mod handlers;
pub mod inbox;
pub mod merchants;
pub mod reconcile;
mod service;

use axum::Router;

pub use error::{MerchantError, PaymentsError};
pub use service::{MerchantMap, MerchantRuntime, MerchantSource, Payments, PaymentsInner};

/// The routes of this domain.
pub fn router(payments: Payments) -> Router {
    handlers::router().with_state(payments)
}
