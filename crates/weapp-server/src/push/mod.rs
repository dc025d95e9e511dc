//! Pushes: WeChat's signed, encrypted callbacks received and verified ([`handlers`]), stored
//! in the event log before WeChat is answered, and delivered to signed webhooks at least once
//! by the outbox worker ([`outbox`]).
//!
//! Owns the event log and the outbox (the `events` table) and the replay memory's Redis keys.
//! Asks the broker for the app's receiver and to authorize broker clients.

pub mod handlers;
pub mod outbox;
mod service;

use axum::Router;

pub use outbox::verify;
pub use service::{PlatformWebhooks, Push, PushInner};

/// The routes of this domain.
pub fn router(push: Push) -> Router {
    handlers::router().with_state(push)
}
