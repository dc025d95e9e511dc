//! The token broker (中控): one runtime per app ([`AppRuntime`]: SDK client, token manager,
//! push receiver), the registry of apps and broker callers ([`Registry`]), the token endpoint
//! and the WeChat-compatible mirror ([`handlers`]), invalidation and the probe that proves a
//! token dead ([`probe`]), and the fleet's leases so one instance refreshes each app
//! ([`fleet`]).
//!
//! Owns the token store (memory or Redis) and the broker's Redis keys. Depends on the keys
//! domain only through its errors.

mod error;
pub mod fleet;
pub mod handlers;
pub mod probe;
pub mod registry;
mod runtime;
mod service;

use axum::Router;
pub use error::{RuntimeError, SyncError};
pub use registry::Registry;
pub use runtime::{
    AppRuntime, BrokerClient, PushRuntime, RuntimeDeps, LOCAL_TOKEN_CACHE,
    SINGLE_INSTANCE_TOKEN_CACHE,
};

pub use service::{fetch_counter_key, quota_day, Broker, BrokerInner, FleetStatus};

/// The routes of this domain: the token endpoint, invalidation and the WeChat-compatible
/// mirror.
pub fn router(broker: Broker) -> Router {
    handlers::router().with_state(broker)
}
