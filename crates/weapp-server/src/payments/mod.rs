//! Payments (WeChat Pay, issue 27): orders any backend can place with a client key that has
//! `pay:write` ([`handlers`]), and WeChat Pay's notifications verified over the raw bytes,
//! written to a durable inbox before the 2xx and applied once ([`inbox`]): every business
//! change becomes exactly one event in the app's event log and signed webhooks. A payment is
//! made true in one place ([`settle`]) whoever learnt of it: a notification, the query
//! fallback ([`fallback`]: 补单, expiry) or a refund asking first. Refunds ([`refunds`],
//! [`refund_handlers`]) are reserved on their order, idempotent, and changed once.
//!
//! Owns the merchants' clients (their keys never leave the server) — the file's and those
//! added at runtime ([`merchants`]: sealed keys, a sync every instance polls) — the tables
//! `pay_orders`, `pay_refunds`, `pay_notifications`, `pay_merchants` and
//! `pay_reconciliations`, the query fallback ([`fallback`]), refunds ([`refunds`]) and the
//! daily reconciliation with WeChat's trade bill ([`reconcile`], [`bill`]). Asks keys
//! (sealing), the broker (client keys) and push (the event log, the outbox's wake-up); the
//! sandbox's demo shop ([`shop`], `--sandbox` only) asks sessions who the buyer is.

pub mod bill;
mod error;
pub mod fallback;
pub mod handlers;
pub mod inbox;
pub mod merchants;
pub mod reconcile;
pub mod refund_handlers;
pub mod refunds;
mod service;
pub mod settle;
pub mod shop;

use axum::Router;

pub use error::{MerchantError, PaymentsError};
pub use service::{MerchantMap, MerchantRuntime, MerchantSource, Payments, PaymentsInner};

/// The routes of this domain.
pub fn router(payments: Payments) -> Router {
    handlers::router()
        .merge(refund_handlers::router())
        .with_state(payments)
}
