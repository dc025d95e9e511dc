//! Third-party platforms (第三方平台): component tokens and tickets, the merchants that
//! authorized a platform (served as authorizer apps of the broker's registry), their events
//! ([`handlers`]), and reconciliation with WeChat's authorizer list ([`Platforms`]).
//!
//! Owns the platforms' tickets, refresh tokens and authorizations. Asks the broker (merchants
//! are apps), keys (sealing) and push (events go to the event log).

mod error;
pub mod handlers;
pub mod runtime;
mod service;

use axum::Router;

pub use error::ReconcileError;
pub use service::{Platforms, PlatformsInner, Reconciled};

/// The routes of this domain.
pub fn router(platforms: Platforms) -> Router {
    handlers::router().with_state(platforms)
}
