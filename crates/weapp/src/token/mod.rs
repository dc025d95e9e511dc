//! Access-token management that stays correct when many processes share one app — and when
//! WeChat is slow or failing, a caller goes away, a process dies, or the store misbehaves.
//!
//! [`TokenManager`] is the default [`TokenSource`]. What it guarantees, and under which faults:
//!
//! | promise | holds when | how |
//! |---|---|---|
//! | **one upstream fetch per refresh**, however many callers, in one process | always | one refresh *flight* per manager; every caller that needs a token joins it and receives its outcome — a failure included |
//! | … and across processes | the store (Redis) is up | a lease (`SET NX PX`) elects one refresher; it is **renewed** while the fetch runs, so a slow WeChat cannot make it expire mid-fetch and let a second process fetch |
//! | a refresh never hangs | always, even with a [`reqwest::Client`] without timeouts | the whole fetch (all attempts) is bounded by [`TokenPolicy::fetch_timeout`]; a retry after an unknown outcome happens only while the lease is still ours |
//! | a caller that goes away changes nothing | always | the flight runs detached from its callers: a dropped caller (a client that disconnected) neither leaves the lease held nor loses a token WeChat already issued |
//! | a stalled refresher cannot overwrite a newer token | the store is up | writes are fenced: each lease's fence exceeds every earlier fence *and* every version written |
//! | a 40001 storm refreshes once | always | [`TokenSource::invalidate`] is compare-and-swap of the exact failing token |
//! | failures are not hammered | always | callers share a failed flight's error; 45011 is remembered until the next minute, 45009 until the quota day turns (Beijing midnight) or [`TokenManager::forget_failures`] (called by the SDK's `clear_quota`), credential errors (40001/40013/40125/40164/40243/41002/41004/50004/50007 from the token endpoint itself) for [`TokenPolicy::credential_backoff`] |
//! | callers do not wait on WeChat | a token is still alive | due tokens are served while another process (or, with [`TokenManager::start_refresher`], a background task) refreshes; a failed refresh serves the alive token |
//! | no token seconds before death | always | a token is served only while more than [`TokenPolicy::expiry_safety`] remains (capped at half its refresh margin); `expires_in` is clamped to 7200 s and counted from when the request was sent |
//! | a flushed or restarted Redis costs no fetch | a process still holds a fresh token | the store's watermark tells "lost" from "invalidated": a lost token is put back under the lease instead of fetched again |
//! | a Redis outage is not a fetch storm | always | the last good token is served until WeChat rejects it or it nears expiry; at most one fetch per process per [`TokenPolicy::degraded_min_interval`]; the store is skipped for [`TokenPolicy::store_cooldown`] after a failure (an outage costs one store timeout, not one per call, and one caller probes it afterwards); `invalidate` respects the cooldown; a forced refresh still happens (kept locally) |
//!
//! What does **not** hold:
//! - A classic `/cgi-bin/token` call whose answer is lost (a timeout) may still have issued a
//!   token, which retires the previous one after 5 minutes. Nobody can learn that token; the
//!   retry under the same lease gets another. The loss is bounded by the lease, not avoided.
//! - While the store is down, processes cannot coordinate. With **classic** tokens, WeChat
//!   keeps only two alive, so three or more processes fetching independently retire each
//!   other's tokens; the degraded-mode interval bounds the fetches, not the 40001s. Stable
//!   tokens (the default) do not have this problem: fetching one never retires another holder's.
//! - A process killed mid-fetch holds its lease until it expires ([`TokenPolicy::lock_ttl`]);
//!   callers with an alive token are served meanwhile, callers without one wait that long.

pub mod store;

#[cfg(feature = "redis")]
pub mod redis;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::clock::Clock;
use crate::error::{ErrCode, Error, Result, StoreError};
use crate::http::{
    is_transient, never_sent, Auth, Body, Call, Endpoint, Http, JsonResponse, Method,
};
use crate::secret::{AccessToken, AppSecret};
pub use store::{Lease, MemoryStore, StoreState, StoredToken, TokenKey, TokenMode, TokenStore};

/// The longest lifetime accepted from WeChat (seconds); larger `expires_in` values are clamped.
pub const MAX_TOKEN_LIFETIME_SECS: i64 = 7200;
/// The longest access token accepted (WeChat reserves 512 characters; anything far beyond is
/// garbage, not a token).
pub const MAX_TOKEN_LEN: usize = 4096;

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

    fn idempotent(&self) -> bool {
        // A normal call returns the same token while it lives; a forced one spends 1 of 20/day.
        !self.force_refresh
    }

    fn body(&self) -> Result<Body> {
        Body::json(self)
    }
}

/// Tuning of a [`TokenManager`]. Checked by [`TokenPolicy::validate`] when the client is built.
#[derive(Debug, Clone)]
pub struct TokenPolicy {
    /// Refresh this long before expiry (capped at half the token's lifetime). Default 300 s.
    pub refresh_margin: Duration,
    /// How long a refresher's cross-process lease lasts without renewal. The holder renews it
    /// every third of this while its fetch runs, so this is also how long a refresher that
    /// died (`kill -9`) blocks the others. Default 10 s.
    pub lock_ttl: Duration,
    /// The bound on one refresh's upstream work, every attempt and backoff included, whatever
    /// the HTTP client's own timeouts. Default 30 s.
    pub fetch_timeout: Duration,
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
    /// Never hand out a token with less than this left before it expires (capped at half the
    /// token's refresh margin). Default 30 s.
    pub expiry_safety: Duration,
    /// How long a credential error of the token endpoint (a wrong or frozen secret, an IP not
    /// in the whitelist) is remembered before WeChat is asked again. Default 60 s.
    pub credential_backoff: Duration,
    /// While the store is unreachable, at most one upstream fetch per process per this
    /// interval. The default, 300 s, is WeChat's classic-token overlap: a classic token is
    /// never rejected sooner than that after another process's fetch, so the interval never
    /// delays a needed fetch, yet a loop of processes retiring each other's tokens is bounded.
    pub degraded_min_interval: Duration,
    /// A background refresher ([`TokenManager::start_refresher`]) refreshes up to this much
    /// later than the refresh margin asks, at a random offset fixed per manager, so many apps
    /// (or instances) do not refresh in the same instant. Later, not earlier: WeChat hands out
    /// the same stable token until 5 minutes before its expiry, so asking earlier would only
    /// get it back. Capped at half the margin. Default 60 s.
    pub refresher_jitter: Duration,
    /// The longest a background refresher sleeps between looks at the store (it also sleeps
    /// until the token is due). Default 30 s.
    pub refresher_poll: Duration,
}

impl Default for TokenPolicy {
    fn default() -> Self {
        Self {
            refresh_margin: Duration::from_secs(300),
            lock_ttl: Duration::from_secs(10),
            fetch_timeout: Duration::from_secs(30),
            poll_interval: Duration::from_millis(25),
            local_cache: Duration::ZERO,
            store_cooldown: Duration::from_secs(5),
            expiry_safety: Duration::from_secs(30),
            credential_backoff: Duration::from_secs(60),
            degraded_min_interval: Duration::from_secs(300),
            refresher_jitter: Duration::from_secs(60),
            refresher_poll: Duration::from_secs(30),
        }
    }
}

impl TokenPolicy {
    /// Checks that the settings make sense together.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the first setting that does not.
    pub fn validate(&self) -> Result<()> {
        let day = Duration::from_secs(86_400);
        let bad = |m: String| Err(Error::InvalidArgument(format!("token policy: {m}")));
        for (name, d) in [
            ("refresh_margin", self.refresh_margin),
            ("lock_ttl", self.lock_ttl),
            ("fetch_timeout", self.fetch_timeout),
            ("poll_interval", self.poll_interval),
            ("local_cache", self.local_cache),
            ("store_cooldown", self.store_cooldown),
            ("expiry_safety", self.expiry_safety),
            ("credential_backoff", self.credential_backoff),
            ("degraded_min_interval", self.degraded_min_interval),
            ("refresher_jitter", self.refresher_jitter),
            ("refresher_poll", self.refresher_poll),
        ] {
            if d > day {
                return bad(format!("{name} must not exceed a day"));
            }
        }
        if self.lock_ttl < Duration::from_millis(100) {
            return bad("lock_ttl must be at least 100 ms".into());
        }
        if self.poll_interval.is_zero() || self.poll_interval >= self.lock_ttl {
            return bad("poll_interval must be positive and shorter than lock_ttl".into());
        }
        if self.fetch_timeout.is_zero() {
            return bad("fetch_timeout must be positive".into());
        }
        if self.refresh_margin > Duration::from_secs(MAX_TOKEN_LIFETIME_SECS as u64 / 2) {
            return bad("refresh_margin must not exceed half a token's life (3600 s)".into());
        }
        if self.expiry_safety > self.refresh_margin {
            return bad("expiry_safety must not exceed refresh_margin".into());
        }
        if self.refresher_poll.is_zero() {
            return bad("refresher_poll must be positive".into());
        }
        Ok(())
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The next midnight in Beijing (UTC+8), when WeChat's daily quotas reset.
fn next_beijing_midnight_ms(now_ms: i64) -> i64 {
    const DAY: i64 = 86_400_000;
    const OFFSET: i64 = 8 * 3_600_000;
    ((now_ms + OFFSET).div_euclid(DAY) + 1) * DAY - OFFSET
}

/// An error from the token endpoint that says the credentials, not the moment, are wrong.
fn is_credential_error(code: ErrCode) -> bool {
    matches!(
        code,
        ErrCode::InvalidCredential
            | ErrCode::InvalidAppid
            | ErrCode::InvalidAppSecret
            | ErrCode::IpNotInWhitelist
            | ErrCode::SecretFrozen
            | ErrCode::AppidMissing
            | ErrCode::AppSecretMissing
            | ErrCode::Forbidden
            | ErrCode::AccountFrozen
            | ErrCode::AuthorizedToThirdParty
    )
}

#[derive(Debug)]
struct Local {
    token: StoredToken,
    read_at_ms: i64,
}

/// The outcome of one refresh, shared by every caller that waited on it.
type Outcome = Option<Result<StoredToken>>;

#[derive(Clone)]
struct Flight {
    id: u64,
    force: bool,
    rx: watch::Receiver<Outcome>,
}

impl Flight {
    async fn wait(mut self) -> Result<StoredToken> {
        match self.rx.wait_for(Option::is_some).await {
            Ok(outcome) => outcome
                .clone()
                .unwrap_or_else(|| unreachable!("waited for Some")),
            Err(_) => {
                Err(StoreError::new("the token refresh task ended without an answer", None).into())
            }
        }
    }
}

/// A failure that is answered from memory until `until_ms` (by the manager's clock), or until
/// [`TokenManager::forget_failures`] when `None`.
#[derive(Debug, Clone)]
struct Remembered {
    error: Error,
    until_ms: i64,
}

#[derive(Debug, Default)]
struct State {
    /// The last good token seen: the hot-path cache (with `local_cache`) and the fallback while
    /// the store is unreachable. Dropped when WeChat rejects it.
    local: Option<Local>,
    /// The refresh in progress, if any.
    flight: Option<FlightSlot>,
    failure: Option<Remembered>,
    /// While set and in the future, the store is considered down and is not consulted.
    store_down_until: Option<Instant>,
    /// One caller is checking whether a store that was down is back.
    store_probing: bool,
    /// The last upstream fetch made while the store was down (manager clock, ms).
    last_degraded_fetch_ms: Option<i64>,
    /// The last error a refresh ended with (for status reports), and when.
    last_error: Option<(String, i64)>,
}

struct FlightSlot(Flight);

impl std::fmt::Debug for FlightSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flight")
            .field("id", &self.0.id)
            .field("force", &self.0.force)
            .finish()
    }
}

struct ManagerInner {
    key: TokenKey,
    secret: AppSecret,
    http: Http,
    store: Arc<dyn TokenStore>,
    clock: Arc<dyn Clock>,
    policy: TokenPolicy,
    state: Mutex<State>,
    next_flight: AtomicU64,
    /// Successful upstream fetches by this manager (for metrics).
    fetches: AtomicU64,
    /// Running background refreshers: while one runs, callers never wait for a refresh of a
    /// token that is still alive.
    refreshers: AtomicUsize,
}

/// Fetches, caches and refreshes one app's access token. Cheap to clone; clones share
/// everything (cache, refresh flight, store). See the [module docs](self) for its guarantees.
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

/// What the store call allowed by [`TokenManager::store_ticket`] turned out to be.
struct StoreTicket<'a> {
    manager: &'a TokenManager,
    probe: bool,
}

impl StoreTicket<'_> {
    fn ok(mut self) {
        let mut st = self.manager.state();
        if st.store_down_until.take().is_some() {
            tracing::info!(appid = %self.manager.inner.key.appid, "token store reachable again");
        }
        st.store_probing = false;
        self.probe = false;
    }

    fn failed(mut self, err: &StoreError) {
        self.probe = false;
        self.manager.mark_store_down(err);
    }
}

impl Drop for StoreTicket<'_> {
    fn drop(&mut self) {
        if self.probe {
            self.manager.state().store_probing = false;
        }
    }
}

/// A point-in-time view of a manager, for status pages and metrics.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TokenStatus {
    /// The token this process holds, if any (its timing and version; the token itself is
    /// redacted in `Debug`).
    pub token: Option<StoredToken>,
    /// Successful upstream fetches made by this manager.
    pub fetches: u64,
    /// The last error a refresh ended with, and when (manager clock, Unix ms).
    pub last_error: Option<(String, i64)>,
    /// Whether the store is being skipped after a failure.
    pub store_down: bool,
    /// Whether a refresh (or a wait for another process's refresh) is in progress.
    pub refreshing: bool,
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
                state: Mutex::new(State::default()),
                next_flight: AtomicU64::new(1),
                fetches: AtomicU64::new(0),
                refreshers: AtomicUsize::new(0),
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

    /// The policy in force.
    pub fn policy(&self) -> &TokenPolicy {
        &self.inner.policy
    }

    /// What this manager knows right now, without any I/O.
    pub fn status(&self) -> TokenStatus {
        let st = self.state();
        TokenStatus {
            token: st.local.as_ref().map(|l| l.token.clone()),
            fetches: self.fetch_count(),
            last_error: st.last_error.clone(),
            store_down: st.store_down_until.is_some(),
            refreshing: st.flight.is_some(),
        }
    }

    /// Forgets remembered token-endpoint failures (45009 after a `clear_quota`, a credential
    /// error after fixing the secret or the IP whitelist), so the next caller asks WeChat again.
    pub fn forget_failures(&self) {
        self.state().failure = None;
    }

    /// The current token with its timing, refreshing first if it is due.
    ///
    /// # Errors
    /// Token endpoint errors (e.g. 40125 bad secret, 45009 quota — never retried, and
    /// remembered; see the module docs), [`Error::TimedOut`] when a refresh ran out of time,
    /// or a store failure while no local copy is alive.
    pub async fn current(&self) -> Result<StoredToken> {
        let now = self.now();
        if let Some(t) = self.local_hot(now) {
            return Ok(t);
        }
        // A token that is due but still alive: served if the refresh cannot happen right now.
        let mut fallback = None;
        match self.store_ticket() {
            Some(ticket) => match self.inner.store.load(&self.inner.key).await {
                Ok(found) => {
                    ticket.ok();
                    if let Some(t) = found {
                        if self.fresh_at(&t, now) {
                            self.remember(&t);
                            return Ok(t);
                        }
                        if self.usable(&t, now) {
                            fallback = Some(t);
                        }
                    }
                }
                Err(e) => {
                    ticket.failed(&e);
                    fallback = self.local_usable(now);
                }
            },
            None => fallback = self.local_usable(now),
        }
        let refresher = self.inner.refreshers.load(Ordering::Relaxed) > 0;
        if let Some(t) = &fallback {
            // A background refresher will get to it (at its jittered moment): leave it to it,
            // unless it is overdue.
            if refresher && now < t.refresh_at_ms + self.refresher_grace_ms() {
                return Ok(t.clone());
            }
        }
        let flight = match self.flight(false, now, None) {
            Ok(Joined::Flight(f) | Joined::Busy(f)) => f,
            Err(remembered) => return fallback.ok_or(remembered),
        };
        if let Some(t) = &fallback {
            if refresher {
                return Ok(t.clone());
            }
        }
        match flight.wait().await {
            Ok(t) => Ok(t),
            Err(e) => match fallback {
                Some(t) if self.usable(&t, self.now()) => {
                    tracing::warn!(appid = %self.inner.key.appid, error = %e, "token refresh failed; serving the token that is still alive");
                    Ok(t)
                }
                _ => Err(e),
            },
        }
    }

    /// Gets a new token now, even if the current one is fresh (stable mode uses
    /// `force_refresh`, which WeChat limits to 20 a day). Single-flight like any refresh:
    /// concurrent callers share one forced fetch, and a token that another process forced
    /// after this call began is accepted instead of forcing again. While the store is down the
    /// forced fetch still happens and is kept in this process.
    ///
    /// # Errors
    /// As [`TokenManager::current`].
    pub async fn force_refresh(&self) -> Result<StoredToken> {
        // The version current when the caller asked: any newer token satisfies the request.
        let baseline = match self.store_ticket() {
            Some(ticket) => match self.inner.store.load(&self.inner.key).await {
                Ok(t) => {
                    ticket.ok();
                    t.map(|t| t.version)
                }
                Err(e) => {
                    ticket.failed(&e);
                    None
                }
            },
            None => None,
        }
        .or_else(|| self.local_copy().map(|t| t.version));
        loop {
            match self.flight(true, self.now(), baseline)? {
                Joined::Flight(f) => return f.wait().await,
                // A normal refresh is running; it does not force. Let it land, then force.
                Joined::Busy(f) => {
                    let _ = f.wait().await;
                }
            }
        }
    }

    /// Starts a background task that keeps the token fresh: it refreshes a margin before
    /// expiry (jittered per manager, see [`TokenPolicy::refresher_jitter`]) and re-reads the
    /// store, so request paths never wait on WeChat while a valid token exists. Stop it with
    /// [`Refresher::stop`] or by dropping the handle.
    pub fn start_refresher(&self) -> Refresher {
        let (stop_tx, mut stop_rx) = watch::channel(false);
        let manager = self.clone();
        manager.inner.refreshers.fetch_add(1, Ordering::SeqCst);
        let jitter_cap = manager.jitter_cap_ms();
        let jitter = if jitter_cap > 0 {
            (rand::random::<u64>() % (jitter_cap as u64 + 1)) as i64
        } else {
            0
        };
        let task = tokio::spawn(async move {
            let mut failures = 0u32;
            loop {
                let wait = manager.refresher_tick(jitter, &mut failures).await;
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    _ = stop_rx.changed() => break,
                }
                if *stop_rx.borrow() {
                    break;
                }
            }
            manager.inner.refreshers.fetch_sub(1, Ordering::SeqCst);
            tracing::debug!(appid = %manager.inner.key.appid, "token refresher stopped");
        });
        Refresher {
            stop: stop_tx,
            task: Some(task),
        }
    }

    fn jitter_cap_ms(&self) -> i64 {
        let policy = &self.inner.policy;
        ms(policy.refresher_jitter.min(policy.refresh_margin / 2))
    }

    /// How long past a token's refresh point callers leave it to a background refresher.
    fn refresher_grace_ms(&self) -> i64 {
        self.jitter_cap_ms() + 2 * ms(self.inner.policy.refresher_poll)
    }

    /// One look of the background refresher; returns how long to sleep.
    async fn refresher_tick(&self, jitter_ms: i64, failures: &mut u32) -> Duration {
        let policy = &self.inner.policy;
        let poll = policy.refresher_poll;
        let now = self.now();
        // Refresh `jitter_ms` after the token's refresh point.
        let due_before = now - jitter_ms;
        let result = match self.store_ticket() {
            Some(ticket) => match self.inner.store.load(&self.inner.key).await {
                Ok(Some(t)) if self.fresh_at(&t, due_before) => {
                    ticket.ok();
                    self.remember(&t);
                    Ok(t)
                }
                Ok(_) => {
                    ticket.ok();
                    self.refresh_for_refresher(due_before).await
                }
                Err(e) => {
                    ticket.failed(&e);
                    self.refresh_for_refresher(due_before).await
                }
            },
            None => self.refresh_for_refresher(due_before).await,
        };
        match result {
            Ok(t) => {
                *failures = 0;
                let until_due = t.refresh_at_ms + jitter_ms - self.now();
                if until_due > 0 {
                    Duration::from_millis(until_due as u64).min(poll)
                } else {
                    // Served but not refreshed (degraded, or another process holds the lease):
                    // look again soon.
                    poll.min(Duration::from_secs(1))
                }
            }
            Err(e) => {
                *failures = failures.saturating_add(1);
                let remembered = self
                    .state()
                    .failure
                    .as_ref()
                    .map(|f| f.until_ms - self.now());
                tracing::warn!(appid = %self.inner.key.appid, error = %e, "background token refresh failed");
                let backoff = match remembered {
                    Some(left) if left > 0 => Duration::from_millis(left as u64),
                    _ => self
                        .inner
                        .http
                        .retry
                        .delay(*failures)
                        .max(Duration::from_millis(200)),
                };
                backoff.min(poll)
            }
        }
    }

    async fn refresh_for_refresher(&self, due_before: i64) -> Result<StoredToken> {
        if self.store_skipped() {
            // Degraded: no proactive refresh (with classic tokens it would retire the tokens
            // other processes hold); the flight fetches only when no usable token is left.
            if let Some(t) = self.local_usable(self.now()) {
                return Ok(t);
            }
        }
        match self.flight(false, due_before, None)? {
            Joined::Flight(f) | Joined::Busy(f) => f.wait().await,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    /// The safety margin of `t`: the policy's, capped at half the token's own refresh margin.
    fn safety_ms(&self, t: &StoredToken) -> i64 {
        ms(self.inner.policy.expiry_safety).min(((t.expires_at_ms - t.refresh_at_ms) / 2).max(0))
    }

    /// Alive with more than the safety margin left.
    fn usable(&self, t: &StoredToken, now: i64) -> bool {
        now + self.safety_ms(t) < t.expires_at_ms
    }

    /// Not due for refresh at `at`, and usable now (and at `at`).
    fn fresh_at(&self, t: &StoredToken, at: i64) -> bool {
        at < t.refresh_at_ms && self.usable(t, at.max(self.now()))
    }

    fn local_copy(&self) -> Option<StoredToken> {
        self.state().local.as_ref().map(|l| l.token.clone())
    }

    fn local_usable(&self, now: i64) -> Option<StoredToken> {
        self.local_copy().filter(|t| self.usable(t, now))
    }

    fn local_hot(&self, now: i64) -> Option<StoredToken> {
        let ttl = ms(self.inner.policy.local_cache);
        if ttl == 0 {
            return None;
        }
        let st = self.state();
        st.local
            .as_ref()
            .filter(|l| now - l.read_at_ms < ttl && self.fresh_at(&l.token, now))
            .map(|l| l.token.clone())
    }

    fn remember(&self, token: &StoredToken) {
        let now = self.now();
        self.state().local = Some(Local {
            token: token.clone(),
            read_at_ms: now,
        });
    }

    /// Whether the store is currently being skipped (no side effects).
    fn store_skipped(&self) -> bool {
        let st = self.state();
        st.store_down_until
            .is_some_and(|until| Instant::now() < until || st.store_probing)
    }

    /// Permission to use the store now: `None` while it is considered down. When the cooldown
    /// has passed, exactly one caller gets to probe it; the others keep skipping it until the
    /// probe reports, so a dead store costs one timeout, not one per caller.
    fn store_ticket(&self) -> Option<StoreTicket<'_>> {
        let mut st = self.state();
        match st.store_down_until {
            None => Some(StoreTicket {
                manager: self,
                probe: false,
            }),
            Some(until) if Instant::now() < until => None,
            Some(_) if st.store_probing => None,
            Some(_) => {
                st.store_probing = true;
                Some(StoreTicket {
                    manager: self,
                    probe: true,
                })
            }
        }
    }

    /// Records a store failure: the store is skipped for `store_cooldown`.
    fn mark_store_down(&self, err: &StoreError) {
        let cooldown = self.inner.policy.store_cooldown;
        let was_down = {
            let mut st = self.state();
            let was = st.store_down_until.is_some();
            st.store_down_until = Some(Instant::now() + cooldown);
            st.store_probing = false;
            was
        };
        if was_down {
            tracing::debug!(appid = %self.inner.key.appid, error = %err, "token store still unavailable");
        } else {
            tracing::warn!(
                appid = %self.inner.key.appid,
                error = %err,
                cooldown_ms = cooldown.as_millis() as u64,
                "token store unavailable; serving the local copy"
            );
        }
    }

    /// Joins the refresh in progress or starts one (detached from every caller). A forcing
    /// caller joins only a forcing flight; a normal one joins any.
    fn flight(&self, force: bool, due_before: i64, baseline: Option<u64>) -> Result<Joined> {
        let mut st = self.state();
        if let Some(f) = &st.failure {
            if self.now() < f.until_ms {
                tracing::debug!(appid = %self.inner.key.appid, error = %f.error, "answering a remembered token-endpoint failure");
                return Err(f.error.clone());
            }
            st.failure = None;
        }
        if let Some(FlightSlot(f)) = &st.flight {
            return Ok(if !force || f.force {
                Joined::Flight(f.clone())
            } else {
                Joined::Busy(f.clone())
            });
        }
        let id = self.inner.next_flight.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = watch::channel(None);
        let flight = Flight { id, force, rx };
        st.flight = Some(FlightSlot(flight.clone()));
        drop(st);
        let manager = self.clone();
        tokio::spawn(async move {
            let outcome = manager.run_flight(force, due_before, baseline).await;
            manager.land(id, &outcome);
            let _ = tx.send(Some(outcome));
        });
        Ok(Joined::Flight(flight))
    }

    /// Ends flight `id`: clears the slot and remembers what must be remembered.
    fn land(&self, id: u64, outcome: &Result<StoredToken>) {
        let now = self.now();
        let mut st = self.state();
        if matches!(&st.flight, Some(FlightSlot(f)) if f.id == id) {
            st.flight = None;
        }
        let err = match outcome {
            Ok(_) => {
                st.failure = None;
                return;
            }
            Err(e) => e,
        };
        st.last_error = Some((err.to_string(), now));
        let until = match err.errcode() {
            Some(ErrCode::MinuteQuotaExceeded) => Some(now - now.rem_euclid(60_000) + 60_000),
            Some(ErrCode::DailyQuotaExceeded) => Some(next_beijing_midnight_ms(now)),
            Some(code) if is_credential_error(code) => {
                Some(now + ms(self.inner.policy.credential_backoff))
            }
            _ => None,
        };
        if let Some(until_ms) = until {
            // Info, not warn: the error itself reaches every caller, who decides how loud it is.
            tracing::info!(appid = %self.inner.key.appid, error = %err, remembered_ms = until_ms - now, "token endpoint failure remembered; callers get it without asking WeChat");
            st.failure = Some(Remembered {
                error: err.clone(),
                until_ms,
            });
        }
    }

    /// Does `t` answer a request made with these parameters?
    fn satisfies(
        &self,
        t: &StoredToken,
        force: bool,
        due_before: i64,
        baseline: Option<u64>,
    ) -> bool {
        if force {
            baseline.is_none_or(|b| t.version > b) && self.fresh_at(t, self.now())
        } else {
            self.fresh_at(t, due_before)
        }
    }

    async fn run_flight(
        &self,
        force: bool,
        due_before: i64,
        baseline: Option<u64>,
    ) -> Result<StoredToken> {
        let key = &self.inner.key;
        let store = &self.inner.store;
        let policy = &self.inner.policy;
        let started = Instant::now();
        // A dead leader's lease runs out after lock_ttl; a live one finishes within its fetch
        // deadline (renewing meanwhile). Waiting longer than both means something is wrong.
        let max_wait = policy.lock_ttl * 2 + policy.fetch_timeout;
        loop {
            let Some(ticket) = self.store_ticket() else {
                return self.degraded(force).await;
            };
            let state = match store.load_state(key).await {
                Ok(s) => {
                    ticket.ok();
                    s
                }
                Err(e) => {
                    ticket.failed(&e);
                    return self.degraded(force).await;
                }
            };
            if let Some(t) = state
                .token
                .as_ref()
                .filter(|t| self.satisfies(t, force, due_before, baseline))
            {
                self.remember(t);
                return Ok(t.clone());
            }
            let lease = match store.try_lock(key, policy.lock_ttl).await {
                Ok(l) => l,
                Err(e) => {
                    self.mark_store_down(&e);
                    return self.degraded(force).await;
                }
            };
            let Some(lease) = lease else {
                // Someone else is refreshing. A token still usable serves in the meantime, so
                // callers do not wait on WeChat; otherwise poll until theirs lands or their
                // lease runs out (then we take it ourselves).
                let now = self.now();
                if !force {
                    if let Some(t) = state.token.filter(|t| self.usable(t, now)) {
                        self.remember(&t);
                        return Ok(t);
                    }
                }
                if started.elapsed() > max_wait {
                    return Err(StoreError::new(
                        "timed out waiting for another process's token refresh",
                        None,
                    )
                    .into());
                }
                tokio::time::sleep(policy.poll_interval).await;
                continue;
            };
            let result = self
                .refresh_under(&lease, force, due_before, baseline)
                .await;
            if let Err(e) = store.unlock(key, &lease).await {
                tracing::warn!(appid = %key.appid, error = %e, "could not release the token lease; it will expire");
            }
            return result;
        }
    }

    async fn refresh_under(
        &self,
        lease: &Lease,
        force: bool,
        due_before: i64,
        baseline: Option<u64>,
    ) -> Result<StoredToken> {
        let key = &self.inner.key;
        let store = &self.inner.store;
        // Another process may have written between our read and our lock.
        let state = match store.load_state(key).await {
            Ok(s) => Some(s),
            Err(e) => {
                self.mark_store_down(&e);
                None
            }
        };
        if let Some(t) = state
            .as_ref()
            .and_then(|s| s.token.as_ref())
            .filter(|t| self.satisfies(t, force, due_before, baseline))
        {
            self.remember(t);
            return Ok(t.clone());
        }
        if !force {
            if let Some(t) = self.reseed(lease, state.as_ref(), due_before).await {
                return Ok(t);
            }
        }
        let token = self.fetch_under_lease(force, lease).await?;
        match store.store(key, &token).await {
            Ok(true) => {}
            Ok(false) => {
                // Fenced out: a newer lease already wrote. Prefer its token if it is usable.
                tracing::warn!(appid = %key.appid, fence = lease.fence, "a newer token was stored meanwhile");
                if let Ok(Some(newer)) = store.load(key).await {
                    if newer.version > token.version && self.usable(&newer, self.now()) {
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

    /// Puts our token back into a store that lost it (flushed, restarted, evicted) instead of
    /// fetching a new one. Not after an invalidation: the watermark then still covers our
    /// version, and WeChat has rejected that token.
    async fn reseed(
        &self,
        lease: &Lease,
        state: Option<&StoreState>,
        due_before: i64,
    ) -> Option<StoredToken> {
        let state = state?;
        if state.token.is_some() {
            return None;
        }
        let local = self.local_copy()?;
        let written = state.written?;
        if !(written == 0 || local.version > written) || !self.fresh_at(&local, due_before) {
            return None;
        }
        let token = StoredToken {
            version: lease.fence,
            ..local
        };
        match self.inner.store.store(&self.inner.key, &token).await {
            Ok(true) => {
                tracing::info!(appid = %self.inner.key.appid, "token store had lost the token; put ours back instead of fetching");
                self.remember(&token);
                Some(token)
            }
            Ok(false) => None,
            Err(e) => {
                self.mark_store_down(&e);
                None
            }
        }
    }

    /// Fetches while keeping the lease: a task renews it every third of its TTL; if it is ever
    /// lost, no further attempt starts.
    async fn fetch_under_lease(&self, force: bool, lease: &Lease) -> Result<StoredToken> {
        let lost = Arc::new(AtomicBool::new(false));
        let renewer = {
            let store = self.inner.store.clone();
            let key = self.inner.key.clone();
            let lease = lease.clone();
            let ttl = self.inner.policy.lock_ttl;
            let lost = lost.clone();
            tokio::spawn(async move {
                let every = ttl / 3;
                loop {
                    tokio::time::sleep(every).await;
                    match store.renew(&key, &lease, ttl).await {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::warn!(appid = %key.appid, "token lease lost mid-fetch; no further attempts under it");
                            lost.store(true, Ordering::SeqCst);
                            return;
                        }
                        Err(e) => {
                            tracing::warn!(appid = %key.appid, error = %e, "could not renew the token lease");
                        }
                    }
                }
            })
        };
        let result = self.fetch(force, lease.fence, Some(&lost)).await;
        renewer.abort();
        result
    }

    /// Asks WeChat for a token: every attempt and backoff within `fetch_timeout`. A request
    /// whose outcome is unknown is repeated only when repeating is harmless (a normal
    /// `stable_token`) or while `lease` is still ours; without a lease (degraded mode), only if
    /// it provably never left.
    #[tracing::instrument(skip(self, lease_lost), fields(appid = %self.inner.key.appid, mode = self.inner.key.mode.as_str()))]
    async fn fetch(
        &self,
        force: bool,
        version: u64,
        lease_lost: Option<&AtomicBool>,
    ) -> Result<StoredToken> {
        let inner = &*self.inner;
        let appid = inner.key.appid.as_str();
        let call = match inner.key.mode {
            TokenMode::Classic => Call::of(&ClassicTokenRequest {
                appid,
                secret: &inner.secret,
            })?,
            TokenMode::Stable => Call::of(&StableTokenRequest {
                grant_type: "client_credential",
                appid,
                secret: inner.secret.expose(),
                force_refresh: force,
            })?,
        };
        let budget = inner.policy.fetch_timeout;
        let deadline = Instant::now() + budget;
        let mut attempt = 0u32;
        loop {
            let sent_at = self.now();
            let result = match tokio::time::timeout_at(
                deadline,
                inner.http.attempt::<TokenResponse>(&call, None),
            )
            .await
            {
                Ok(r) => r,
                Err(_) => Err(Error::TimedOut {
                    endpoint: call.path.into(),
                    after: budget,
                }),
            };
            let err = match result {
                Ok(response) => return self.accept(response, sent_at, version),
                Err(e) => e,
            };
            let lease_held = lease_lost.is_some_and(|l| !l.load(Ordering::SeqCst));
            let may_repeat = call.idempotent || lease_held || never_sent(&err);
            let left = deadline.saturating_duration_since(Instant::now());
            if !is_transient(&err)
                || matches!(err, Error::TimedOut { .. })
                || !may_repeat
                || attempt >= inner.http.retry.max_retries
                || left.is_zero()
            {
                return Err(err);
            }
            attempt += 1;
            tracing::debug!(attempt, error = %err, "token fetch failed; retrying");
            tokio::time::sleep(inner.http.retry.delay(attempt).min(left)).await;
        }
    }

    /// Checks a token answer and stamps its timing, counted from when the request was sent.
    fn accept(&self, response: TokenResponse, sent_at: i64, version: u64) -> Result<StoredToken> {
        let token = response.access_token.expose();
        if response.expires_in <= 0
            || token.is_empty()
            || token.len() > MAX_TOKEN_LEN
            || !token.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(Error::Decode {
                endpoint: "token".into(),
                message: format!(
                    "unusable token response (expires_in {}, token of {} bytes)",
                    response.expires_in,
                    token.len()
                ),
            });
        }
        if response.expires_in > MAX_TOKEN_LIFETIME_SECS {
            tracing::warn!(
                expires_in = response.expires_in,
                "implausible token lifetime; clamped to 7200 s"
            );
        }
        let lifetime_ms = response.expires_in.min(MAX_TOKEN_LIFETIME_SECS) * 1000;
        let margin_ms = ms(self.inner.policy.refresh_margin).min(lifetime_ms / 2);
        self.inner.fetches.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            expires_in = response.expires_in,
            version,
            "fetched access token"
        );
        Ok(StoredToken {
            access_token: response.access_token,
            expires_at_ms: sent_at + lifetime_ms,
            refresh_at_ms: sent_at + lifetime_ms - margin_ms,
            version,
        })
    }

    /// The store is unreachable: serve the local copy until WeChat rejects it or it nears
    /// expiry (no proactive refresh: with classic tokens it would retire other processes'
    /// tokens), then fetch — at most once per `degraded_min_interval` — and keep it locally.
    async fn degraded(&self, force: bool) -> Result<StoredToken> {
        let now = self.now();
        if !force {
            if let Some(t) = self.local_usable(now) {
                return Ok(t);
            }
            let interval = ms(self.inner.policy.degraded_min_interval);
            let last_fetch = self.state().last_degraded_fetch_ms;
            if let Some(last) = last_fetch {
                let wait = last + interval - now;
                if wait > 0 {
                    return Err(StoreError::new(
                        format!(
                            "token store unavailable and no usable token; the next upstream fetch from this process is allowed in {} s (one per {} s while degraded)",
                            (wait + 999) / 1000,
                            interval / 1000
                        ),
                        None,
                    )
                    .into());
                }
            }
        }
        self.state().last_degraded_fetch_ms = Some(now);
        let token = self.fetch(force, 0, None).await?;
        tracing::warn!(appid = %self.inner.key.appid, forced = force, "fetched a token while the store is unavailable; kept in this process only");
        self.remember(&token);
        Ok(token)
    }
}

enum Joined {
    /// A flight that answers the request.
    Flight(Flight),
    /// A normal flight is running but the caller forces: wait for it, then ask again.
    Busy(Flight),
}

/// A running background refresher (see [`TokenManager::start_refresher`]). Dropping it stops
/// the task.
#[derive(Debug)]
pub struct Refresher {
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Refresher {
    /// Stops the refresher and waits until it has finished (a refresh in flight completes in
    /// its own task and still lands in the store).
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Refresher {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

#[async_trait]
impl TokenSource for TokenManager {
    async fn token(&self) -> Result<AccessToken> {
        self.current().await.map(|t| t.access_token)
    }

    async fn invalidate(&self, stale: &AccessToken) -> Result<()> {
        {
            let mut st = self.state();
            if st
                .local
                .as_ref()
                .is_some_and(|l| l.token.access_token.ct_eq(stale.expose()))
            {
                st.local = None;
            }
        }
        // While the store is down, the cooldown holds for invalidations too.
        let Some(ticket) = self.store_ticket() else {
            return Ok(());
        };
        match self.inner.store.invalidate(&self.inner.key, stale).await {
            Ok(removed) => {
                ticket.ok();
                tracing::debug!(appid = %self.inner.key.appid, removed, "token invalidation");
            }
            Err(e) => ticket.failed(&e),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_day_turns_at_beijing_midnight() {
        // 2026-11-22T15:59:59Z is 23:59:59 in Beijing.
        let before = 1_795_363_199_000;
        assert_eq!(next_beijing_midnight_ms(before), before + 1000);
        assert_eq!(
            next_beijing_midnight_ms(before + 1000),
            before + 1000 + 86_400_000
        );
    }

    #[test]
    fn policies_that_cannot_work_are_refused() {
        assert!(TokenPolicy::default().validate().is_ok());
        let bad = [
            TokenPolicy {
                lock_ttl: Duration::from_millis(10),
                ..TokenPolicy::default()
            },
            TokenPolicy {
                poll_interval: Duration::ZERO,
                ..TokenPolicy::default()
            },
            TokenPolicy {
                fetch_timeout: Duration::ZERO,
                ..TokenPolicy::default()
            },
            TokenPolicy {
                refresh_margin: Duration::from_secs(4000),
                ..TokenPolicy::default()
            },
            TokenPolicy {
                expiry_safety: Duration::from_secs(400),
                ..TokenPolicy::default()
            },
            TokenPolicy {
                store_cooldown: Duration::from_secs(u64::MAX / 4),
                ..TokenPolicy::default()
            },
        ];
        for p in bad {
            assert!(p.validate().is_err(), "{p:?}");
        }
    }
}
