//! What every domain of the service shares: the database, the configuration it started with,
//! Redis, the metrics, the egress policy, who this instance is and how a client's address is
//! read. Infrastructure only: this module knows no domain, and every domain service holds one
//! [`Shared`] (reached through `Deref`, so `sessions.store` reads the shared store).

use std::sync::Arc;

use weapp::token::redis::RedisStore;

use crate::config::Config;
use crate::egress::Egress;
use crate::metrics::Metrics;
use crate::net::IpNet;
use crate::ratelimit::RateLimiter;
use crate::store::Store;

/// Handles every domain uses. Cheap to clone (one `Arc`).
#[derive(Clone, Debug)]
pub struct Shared(Arc<SharedInner>);

/// The parts of [`Shared`].
#[derive(Debug)]
pub struct SharedInner {
    /// The database: users, sessions, events, managed apps, platforms, keys.
    pub store: Arc<dyn Store>,
    /// The configuration the server started with.
    pub config: Config,
    /// Shared Redis (also the token store), if configured.
    pub redis: Option<RedisStore>,
    /// Counters and histograms for `/metrics` (shared with the SDK clients' and the Redis
    /// store's observers).
    pub metrics: Arc<Metrics>,
    /// Where webhooks and API hosts may point (`webhook_allow_private`), and the resolver
    /// their names go through.
    pub egress: Egress,
    /// This instance's id in the fleet.
    pub instance_id: String,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Per-source limiter of failed authentications (every authenticated surface counts
    /// against it).
    pub auth_failures: RateLimiter,
}

impl Shared {
    /// Wraps the parts.
    pub fn new(inner: SharedInner) -> Self {
        Shared(Arc::new(inner))
    }
}

impl std::ops::Deref for Shared {
    type Target = SharedInner;
    fn deref(&self) -> &SharedInner {
        &self.0
    }
}

/// What makes a domain service a handle: `$outer(Arc<$inner>)` derefs to `$inner`, `$inner`
/// (with a `shared: Shared` field) derefs to [`Shared`], and axum extractors that need the
/// shared parts ([`crate::http::ClientIp`], [`crate::http::JsonBody`]) take them from the
/// service's state.
macro_rules! service_handle {
    ($outer:ident, $inner:ident) => {
        impl std::ops::Deref for $outer {
            type Target = $inner;
            fn deref(&self) -> &$inner {
                &self.0
            }
        }

        impl std::ops::Deref for $inner {
            type Target = $crate::shared::Shared;
            fn deref(&self) -> &$crate::shared::Shared {
                &self.shared
            }
        }

        impl axum::extract::FromRef<$outer> for $crate::shared::Shared {
            fn from_ref(service: &$outer) -> $crate::shared::Shared {
                service.shared.clone()
            }
        }
    };
}
pub(crate) use service_handle;

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
