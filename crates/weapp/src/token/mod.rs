//! Access-token management that stays correct when many processes share one app.
//!
//! [`TokenManager`] is the default [`TokenSource`]. Its guarantees:
//! - **single flight**: however many callers find the token due, one upstream fetch happens —
//!   inside a process through an async mutex, across processes through the store's lock;
//! - **fencing**: a token is written with the fence value of the lease it was fetched under, and
//!   the store refuses older versions, so a stalled refresher cannot overwrite a newer token;
//! - **compare-and-swap invalidation**: [`TokenSource::invalidate`] drops a token only if it is
//!   still the current one, so a storm of 40001s on one stale token causes one refresh;
//! - **degraded mode**: if the store is unreachable, the last token seen is served while alive,
//!   and a fresh fetch is kept locally, so an outage does not turn into a fetch per call.

pub mod store;

#[cfg(feature = "redis")]
pub mod redis;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::error::{Error, Result, StoreError};
use crate::http::{Auth, Body, Call, Endpoint, Http, JsonResponse, Method};
use crate::secret::{AccessToken, AppSecret};
pub use store::{Lease, MemoryStore, StoredToken, TokenKey, TokenMode, TokenStore};

/// Something that hands out access tokens: a [`TokenManager`], or a remote broker.
#[async_trait]
pub trait TokenSource: Send + Sync + std::fmt::Debug {
    /// A token that is valid now, fetching or waiting for one if needed.
    ///
    /// # Errors
    /// Upstream errors from the token endpoint (typed), or a store failure with no usable copy.
    async fn token(&self) -> Result<AccessToken>;

    /// Reports that `stale` was rejected by WeChat (40001/40014/42001). The source drops it
    /// only if it is still current, so the next [`TokenSource::token`] refreshes once.
    ///
    /// # Errors
    /// Implementations may report store failures; the default manager logs them instead.
    async fn invalidate(&self, stale: &AccessToken) -> Result<()>;
}

/// `GET /cgi-bin/token`.
pub(crate) struct ClassicTokenRequest<'a> {
    pub appid: &'a str,
    pub secret: &'a AppSecret,
}

/// `POST /cgi-bin/stable_token`.
#[derive(Serialize)]
pub(crate) struct StableTokenRequest<'a> {
    grant_type: &'static str,
    appid: &'a str,
    secret: &'a str,
    force_refresh: bool,
}

/// What both token endpoints answer.
#[derive(Debug, Clone, Deserialize)]
pub struct TokenResponse {
    /// The token.
    pub access_token: AccessToken,
    /// Seconds until it expires.
    pub expires_in: i64,
}

impl JsonResponse for TokenResponse {}

impl Endpoint for ClassicTokenRequest<'_> {
    type Output = TokenResponse;
    const PATH: &'static str = "/cgi-bin/token";
    const METHOD: Method = Method::Get;
    const AUTH: Auth = Auth::None;

    fn query(&self) -> Vec<(&'static str, String)> {
        vec![
            ("grant_type", "client_credential".into()),
            ("appid", self.appid.into()),
            ("secret", self.secret.expose().into()),
        ]
    }
}

impl Endpoint for StableTokenRequest<'_> {
    type Output = TokenResponse;
    const PATH: &'static str = "/cgi-bin/stable_token";
    const AUTH: Auth = Auth::None;

    fn body(&self) -> Result<Body> {
        Body::json(self)
    }
}

/// Tuning of a [`TokenManager`].
#[derive(Debug, Clone)]
pub struct TokenPolicy {
    /// Refresh this long before expiry (capped at half the token's lifetime). Default 300 s.
    pub refresh_margin: Duration,
    /// How long a refresher may hold the cross-process lock. Default 10 s.
    pub lock_ttl: Duration,
    /// How often a waiter re-reads the store while another process refreshes. Default 25 ms.
    pub poll_interval: Duration,
    /// Serve the local copy without reading the store for this long after a read (0 = always
    /// read the store, the default). A positive value removes the store round trip from the hot
    /// path; another process's refresh is then seen after at most this delay, which is safe
    /// because WeChat keeps the previous token valid for 5 minutes.
    pub local_cache: Duration,
    /// After a store failure, skip the store for this long and serve the local copy, so an
    /// outage costs one timeout, not one per call. Default 5 s.
    pub store_cooldown: Duration,
}

impl Default for TokenPolicy {
    fn default() -> Self {
        Self {
            refresh_margin: Duration::from_secs(300),
            lock_ttl: Duration::from_secs(10),
            poll_interval: Duration::from_millis(25),
            local_cache: Duration::ZERO,
            store_cooldown: Duration::from_secs(5),
        }
    }
}

#[derive(Debug)]
struct Local {
    token: StoredToken,
    read_at_ms: i64,
}

struct ManagerInner {
    key: TokenKey,
    secret: AppSecret,
    http: Http,
    store: Arc<dyn TokenStore>,
    clock: Arc<dyn Clock>,
    policy: TokenPolicy,
    /// The last token seen: the hot-path cache (with `local_cache`) and the fallback while the
    /// store is unreachable.
    local: Mutex<Option<Local>>,
    /// Held by the one task of this process that refreshes; others wait on it, then re-read.
    flight: tokio::sync::Mutex<()>,
    /// While set and in the future, the store is considered down and is not consulted.
    store_down_until: Mutex<Option<Instant>>,
    /// Successful upstream fetches by this manager (for metrics).
    fetches: AtomicU64,
}

/// Fetches, caches and refreshes one app's access token. Cheap to clone; clones share
/// everything (cache, single-flight lock, store).
#[derive(Clone)]
pub struct TokenManager {
    inner: Arc<ManagerInner>,
}

impl std::fmt::Debug for TokenManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenManager")
            .field("appid", &self.inner.key.appid)
            .field("mode", &self.inner.key.mode)
            .field("store", &self.inner.store)
            .finish_non_exhaustive()
    }
}

impl TokenManager {
    pub(crate) fn new(
        key: TokenKey,
        secret: AppSecret,
        http: Http,
        store: Arc<dyn TokenStore>,
        clock: Arc<dyn Clock>,
        policy: TokenPolicy,
    ) -> Self {
        Self {
            inner: Arc::new(ManagerInner {
                key,
                secret,
                http,
                store,
                clock,
                policy,
                local: Mutex::new(None),
                flight: tokio::sync::Mutex::new(()),
                store_down_until: Mutex::new(None),
                fetches: AtomicU64::new(0),
            }),
        }
    }

    /// How many tokens this manager fetched from upstream (not counting other processes').
    pub fn fetch_count(&self) -> u64 {
        self.inner.fetches.load(Ordering::Relaxed)
    }

    /// The app and mode this manager serves.
    pub fn key(&self) -> &TokenKey {
        &self.inner.key
    }

    /// The current token with its timing, refreshing first if it is due.
    ///
    /// # Errors
    /// Token endpoint errors (e.g. 40125 bad secret, 45009 quota — never retried), transport
    /// errors after bounded retries, or a store failure while no local copy is alive.
    pub async fn current(&self) -> Result<StoredToken> {
        let now = self.now();
        if let Some(t) = self.local_hot(now) {
            return Ok(t);
        }
        if self.store_down() {
            let _flight = self.inner.flight.lock().await;
            return self.degraded_locked().await;
        }
        match self.inner.store.load(&self.inner.key).await {
            Ok(Some(t)) if t.is_fresh(now) => {
                self.remember(&t);
                Ok(t)
            }
            Ok(_) => self.refresh(false).await,
            Err(e) => self.degraded(e).await,
        }
    }

    /// Gets a new token now, even if the current one is fresh (stable mode uses
    /// `force_refresh`, which WeChat limits to 20 a day). Single-flight like any refresh: a
    /// concurrent caller's new token is accepted instead of fetching twice.
    ///
    /// # Errors
    /// As [`TokenManager::current`].
    pub async fn force_refresh(&self) -> Result<StoredToken> {
        self.refresh(true).await
    }

    fn now(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    fn local_copy(&self) -> Option<StoredToken> {
        let local = self.inner.local.lock().unwrap_or_else(|p| p.into_inner());
        local.as_ref().map(|l| l.token.clone())
    }

    fn local_hot(&self, now: i64) -> Option<StoredToken> {
        let ttl = self.inner.policy.local_cache.as_millis() as i64;
        if ttl == 0 {
            return None;
        }
        let local = self.inner.local.lock().unwrap_or_else(|p| p.into_inner());
        local
            .as_ref()
            .filter(|l| now - l.read_at_ms < ttl && l.token.is_fresh(now))
            .map(|l| l.token.clone())
    }

    fn remember(&self, token: &StoredToken) {
        let mut local = self.inner.local.lock().unwrap_or_else(|p| p.into_inner());
        *local = Some(Local {
            token: token.clone(),
            read_at_ms: self.now(),
        });
    }

    fn store_down(&self) -> bool {
        let down = self
            .inner
            .store_down_until
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        down.is_some_and(|until| Instant::now() < until)
    }

    /// Records a store failure: the store is skipped for `store_cooldown`.
    fn mark_store_down(&self, err: &StoreError) {
        tracing::warn!(
            appid = %self.inner.key.appid,
            error = %err,
            cooldown_ms = self.inner.policy.store_cooldown.as_millis() as u64,
            "token store unavailable; serving the local copy"
        );
        let mut down = self
            .inner
            .store_down_until
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *down = Some(Instant::now() + self.inner.policy.store_cooldown);
    }

    /// The store failed: serve the local copy while it is fresh, else fetch without the
    /// cross-process lock (once per process, thanks to the flight mutex) and keep it locally.
    async fn degraded(&self, err: StoreError) -> Result<StoredToken> {
        self.mark_store_down(&err);
        let _flight = self.inner.flight.lock().await;
        self.degraded_locked().await
    }

    async fn degraded_locked(&self) -> Result<StoredToken> {
        let now = self.now();
        if let Some(t) = self.local_copy().filter(|t| t.is_fresh(now)) {
            return Ok(t);
        }
        let token = self.fetch(false, 0).await?;
        self.remember(&token);
        Ok(token)
    }

    async fn refresh(&self, force: bool) -> Result<StoredToken> {
        let key = &self.inner.key;
        let store = &self.inner.store;
        let _flight = self.inner.flight.lock().await;
        let started = Instant::now();
        // A forced refresh is satisfied by any token newer than the one current when it began.
        let mut seen_version: Option<u64> = None;
        loop {
            let now = self.now();
            if self.store_down() {
                return self.degraded_locked().await;
            }
            let current = match store.load(key).await {
                Ok(c) => c,
                Err(e) => {
                    self.mark_store_down(&e);
                    return self.degraded_locked().await;
                }
            };
            let baseline = *seen_version.get_or_insert(current.as_ref().map_or(0, |t| t.version));
            let good = |t: &StoredToken| t.is_fresh(now) && (!force || t.version > baseline);
            if let Some(t) = current.as_ref().filter(|t| good(t)) {
                self.remember(t);
                return Ok(t.clone());
            }
            let lease = match store.try_lock(key, self.inner.policy.lock_ttl).await {
                Ok(l) => l,
                Err(e) => {
                    self.mark_store_down(&e);
                    return self.degraded_locked().await;
                }
            };
            let Some(lease) = lease else {
                // Someone else is refreshing. A token still alive serves in the meantime, so
                // callers do not wait on WeChat; otherwise poll until theirs lands or their
                // lease runs out (then we take the lock ourselves).
                if let Some(t) = current.filter(|t| !force && t.is_alive(now)) {
                    return Ok(t);
                }
                if started.elapsed() > self.inner.policy.lock_ttl * 3 {
                    return Err(
                        StoreError::new("timed out waiting for another refresher", None).into(),
                    );
                }
                tokio::time::sleep(self.inner.policy.poll_interval).await;
                continue;
            };
            let result = self.refresh_under(&lease, force, baseline).await;
            if let Err(e) = store.unlock(key, &lease).await {
                tracing::warn!(appid = %key.appid, error = %e, "could not release token lock; it will expire");
            }
            return result;
        }
    }

    async fn refresh_under(
        &self,
        lease: &Lease,
        force: bool,
        baseline: u64,
    ) -> Result<StoredToken> {
        let key = &self.inner.key;
        let store = &self.inner.store;
        // Another process may have written between our read and our lock.
        if let Ok(Some(t)) = store.load(key).await {
            if t.is_fresh(self.now()) && (!force || t.version > baseline) {
                self.remember(&t);
                return Ok(t);
            }
        }
        let token = self.fetch(force, lease.fence).await?;
        match store.store(key, &token).await {
            Ok(true) => {}
            Ok(false) => {
                // Fenced out: a newer lease already wrote. Prefer its token.
                tracing::info!(appid = %key.appid, fence = lease.fence, "a newer token was stored meanwhile; discarding ours");
                if let Ok(Some(newer)) = store.load(key).await {
                    if newer.is_alive(self.now()) {
                        self.remember(&newer);
                        return Ok(newer);
                    }
                }
            }
            Err(e) => self.mark_store_down(&e),
        }
        self.remember(&token);
        Ok(token)
    }

    #[tracing::instrument(skip(self), fields(appid = %self.inner.key.appid, mode = self.inner.key.mode.as_str()))]
    async fn fetch(&self, force: bool, version: u64) -> Result<StoredToken> {
        let inner = &*self.inner;
        let appid = inner.key.appid.as_str();
        let response: TokenResponse = match inner.key.mode {
            TokenMode::Classic => {
                inner
                    .http
                    .execute(
                        &Call::of(&ClassicTokenRequest {
                            appid,
                            secret: &inner.secret,
                        })?,
                        None,
                    )
                    .await?
            }
            TokenMode::Stable => {
                inner
                    .http
                    .execute(
                        &Call::of(&StableTokenRequest {
                            grant_type: "client_credential",
                            appid,
                            secret: inner.secret.expose(),
                            force_refresh: force,
                        })?,
                        None,
                    )
                    .await?
            }
        };
        if response.expires_in <= 0 || response.access_token.expose().is_empty() {
            return Err(Error::Decode {
                endpoint: "token".into(),
                message: format!(
                    "unusable token response (expires_in {})",
                    response.expires_in
                ),
            });
        }
        let now = self.now();
        let lifetime_ms = response.expires_in * 1000;
        let margin_ms = (inner.policy.refresh_margin.as_millis() as i64).min(lifetime_ms / 2);
        inner.fetches.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            expires_in = response.expires_in,
            version,
            "fetched access token"
        );
        Ok(StoredToken {
            access_token: response.access_token,
            expires_at_ms: now + lifetime_ms,
            refresh_at_ms: now + lifetime_ms - margin_ms,
            version,
        })
    }
}

#[async_trait]
impl TokenSource for TokenManager {
    async fn token(&self) -> Result<AccessToken> {
        self.current().await.map(|t| t.access_token)
    }

    async fn invalidate(&self, stale: &AccessToken) -> Result<()> {
        {
            let mut local = self.inner.local.lock().unwrap_or_else(|p| p.into_inner());
            if local
                .as_ref()
                .is_some_and(|l| l.token.access_token.ct_eq(stale.expose()))
            {
                *local = None;
            }
        }
        match self.inner.store.invalidate(&self.inner.key, stale).await {
            Ok(removed) => {
                tracing::debug!(appid = %self.inner.key.appid, removed, "token invalidation");
            }
            Err(e) => {
                tracing::warn!(appid = %self.inner.key.appid, error = %e, "could not invalidate token in store");
            }
        }
        Ok(())
    }
}
