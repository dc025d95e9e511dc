//! The sessions service: what login, refresh, logout, `me`, phone, decrypt and introspection
//! share — the login writer, the per-IP/per-session/per-user limits, and the domains they ask
//! (the broker for apps and clients, keys for sealing and signing, platforms for component
//! logins).

use std::sync::Arc;

use super::writer::LoginWriter;
use crate::broker::Broker;
use crate::keys::Keys;
use crate::platforms::Platforms;
use crate::ratelimit::RateLimiter;
use crate::shared::Shared;

/// Everything the session handlers need. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Sessions(Arc<SessionsInner>);

/// The parts of [`Sessions`].
#[derive(Debug)]
pub struct SessionsInner {
    shared: Shared,
    /// The apps (SDK clients) and broker clients.
    pub broker: Broker,
    /// Seals session_keys; signs access tokens.
    pub keys: Keys,
    /// Third-party platforms (merchants log in through their component).
    pub platforms: Platforms,
    /// Records logins in batches (group commit).
    pub login_writer: LoginWriter,
    /// Per-IP limiter of `POST /v1/login`.
    pub login_limiter: RateLimiter,
    /// Per-session limiter of `POST /v1/me/decrypt`.
    pub decrypt_limiter: RateLimiter,
    /// Per-user limiter of `POST /v1/me/phone` (each call asks WeChat with the app's token).
    pub phone_limiter: RateLimiter,
}

crate::shared::service_handle!(Sessions, SessionsInner);

/// The limits of the sessions service ([`Sessions::new`]).
#[derive(Debug)]
pub struct SessionLimits {
    /// Per-IP limiter of `POST /v1/login`.
    pub login: RateLimiter,
    /// Per-session limiter of `POST /v1/me/decrypt`.
    pub decrypt: RateLimiter,
    /// Per-user limiter of `POST /v1/me/phone`.
    pub phone: RateLimiter,
}

impl Sessions {
    /// The sessions service; starts the login writer.
    pub fn new(
        shared: Shared,
        broker: Broker,
        keys: Keys,
        platforms: Platforms,
        limits: SessionLimits,
    ) -> Self {
        let login_writer = LoginWriter::spawn(shared.store.clone(), shared.metrics.clone());
        Sessions(Arc::new(SessionsInner {
            shared,
            broker,
            keys,
            platforms,
            login_writer,
            login_limiter: limits.login,
            decrypt_limiter: limits.decrypt,
            phone_limiter: limits.phone,
        }))
    }
}
