//! WeChat Pay API v3 (direct merchant, mini-program JSAPI), simulated at the same base URL as
//! the rest: `/v3/...` paths that verify merchant signatures and sign every answer and
//! notification with the platform's key (public key, certificates, or both during the
//! migration), encrypt resources with the merchant's APIv3 key, keep production's order and
//! refund rules, deliver notifications on WeChat's retry schedule on the simulator's clock,
//! and generate bills; plus the `/_sim/pay` control API (merchants, `wx.requestPayment`,
//! notifications and refunds on demand, views for the console).
//!
//! Layers inside: leaves `keys` (crypto) and `time`; `views` (resource shapes); `merchants`
//! (keys and modes); `wire` (signatures in and out) and `notify` (delivery); `orders`,
//! `refunds` and `bills` (the rules); `routes` (`/v3`) and `control` (`/_sim/pay`) on top.

mod bills;
mod control;
mod keys;
mod merchants;
mod notify;
mod orders;
mod refunds;
mod routes;
mod time;
mod views;
mod wire;

use std::time::Duration;

use axum::Router;

pub use crate::state::pay::{NotifyAttempt, RefundStatus, TradeState, Verification};
pub use bills::{DOWNLOAD_TTL_SECS, HISTORY_DAYS, READY_AFTER_SECS};
pub use merchants::{
    CertView, IssuedMerchant, MerchantSpec, MigrationAction, CERT_VALIDITY_SECS, MIGRATION_RAMP,
    ROTATION_OVERLAP_SECS,
};
pub use notify::RETRY_SCHEDULE_SECS;
pub use orders::{
    RequestPayment, DEFAULT_EXPIRY_SECS, MAX_EXPIRY_SECS, MIN_EXPIRY_SECS, PREPAY_TTL_SECS,
};
pub use refunds::{MAX_REFUNDS_PER_ORDER, REFUND_DELAY_SECS, REFUND_WINDOW_SECS};
pub use wire::{fault_response, AUTH_SCHEME, CLOCK_SKEW_SECS};

use crate::world::Sim;

/// The `/v3` routes.
pub(crate) fn routes() -> Router<Sim> {
    routes::routes()
}

/// The `/_sim/pay` routes.
pub(crate) fn control() -> Router<Sim> {
    control::control()
}

/// Ends refunds whose time came and delivers notifications that are due, as the simulator's
/// clock moves (checked every 100 ms of real time).
pub(crate) async fn delivery_loop(sim: Sim) {
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        refunds::settle_due(&sim);
        notify::deliver_due(&sim);
    }
}
