//! [`TokenManager`]: the refresh flights, remembered failures, the lease keeper, degraded mode
//! and the background refresher. The guarantees are listed in the [module docs](super).
//!
//! Concurrency contract: all mutable state sits in one `std::sync::Mutex<State>` that is held
//! only for short, non-async sections (never across an `.await`). A refresh runs in a task of
//! its own (a *flight*) whose outcome reaches every waiter through a `watch` channel; the slot
//! that names the flight is cleared by a drop guard, so a flight that panics or is dropped with
//! its runtime still answers and frees the slot.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio::time::Instant;

use super::store::{Lease, StoreState, StoredToken, TokenKey, TokenMode, TokenStore};
use super::{
    is_credential_error, ms, next_beijing_midnight_ms, ClassicTokenRequest, StableTokenRequest,
    TokenPolicy, TokenResponse, TokenSource, MAX_TOKEN_LEN, MAX_TOKEN_LIFETIME_SECS,
};
use crate::clock::Clock;
use crate::error::{ErrCode, Error, Result, StoreError};
use crate::http::{is_transient, never_sent, outcome_in_doubt, Call, Http};
use crate::secret::{AccessToken, AppSecret};

/// How many rejected tokens a manager remembers (by digest).
const REJECTED_CAP: usize = 16;

#[derive(Debug, Clone)]
struct Local {
    token: StoredToken,
    read_at_ms: i64,
    /// False for a token fetched while the store was unreachable: it is published when the
    /// store is back, if it is newer than the store's.
    published: bool,
}

/// The outcome of one refresh, shared by every caller that waited on it.
type Outcome = Option<Result<StoredToken>>;

#[derive(Clone)]
struct Flight {
    id: u64,
    force: bool,
    /// For a forced flight: the token it was started to replace.
    replace: Option<AccessToken>,
    rx: watch::Receiver<Outcome>,
}

impl Flight {
    async fn wait(mut self) -> Result<StoredToken> {
        match self.rx.wait_for(Option::is_some).await {
            Ok(outcome) => outcome
                .clone()
                .unwrap_or_else(|| Err(ended_without_answer())),
            Err(_) => Err(ended_without_answer()),
        }
    }

    /// The task behind it is gone without answering (it should not happen: the landing guard
    /// answers on drop; this is the belt to those braces).
    fn is_dead(&self) -> bool {
        self.rx.has_changed().is_err() && self.rx.borrow().is_none()
    }
}

fn ended_without_answer() -> Error {
    StoreError::new("the token refresh task ended without an answer", None).into()
}

/// A failure answered from memory until `until_ms` (manager clock). While `probe_every_ms` is
/// set, one caller per that interval may ask WeChat anyway.
#[derive(Debug, Clone)]
struct Remembered {
    error: Error,
    until_ms: i64,
    probe_every_ms: Option<i64>,
    next_probe_ms: i64,
}

#[derive(Default)]
struct State {
    /// The last good token seen: the hot-path cache (with `local_cache`) and the fallback while
    /// the store is unreachable. Dropped when WeChat rejects it.
    local: Option<Local>,
    /// The refresh in progress, if any.
    flight: Option<Flight>,
    /// Remembered failure for every refresh.
    failure: Option<Remembered>,
    /// Remembered failure for forced refreshes only (their own 20-a-day budget).
    forced_failure: Option<Remembered>,
    /// Bumped by `forget_failures`: a flight that started before cannot re-remember its failure.
    failure_epoch: u64,
    /// Consecutive failed refreshes (for the back-off of unlisted errors).
    failures_in_a_row: u32,
    /// While set and in the future, the store is considered down and is not consulted.
    store_down_until: Option<Instant>,
    /// Bumped whenever the store is marked down: a store call issued before cannot clear it.
    store_down_gen: u64,
    /// One caller is checking whether a store that was down is back.
    store_probing: bool,
    /// The last upstream fetch made while the store was down (manager clock, ms).
    last_degraded_fetch_ms: Option<i64>,
    /// SHA-256 of tokens WeChat rejected, newest last.
    rejected: VecDeque<[u8; 32]>,
    /// The last error a refresh ended with, and when.
    last_error: Option<(String, i64)>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("has_local", &self.local.is_some())
            .field("flight", &self.flight.as_ref().map(|fl| (fl.id, fl.force)))
            .finish_non_exhaustive()
    }
}

fn digest(token: &AccessToken) -> [u8; 32] {
    Sha256::digest(token.expose().as_bytes()).into()
}

struct ManagerInner {
    key: TokenKey,
    secret: AppSecret,
    http: Http,
    /// Fetches tokens from somewhere else than the app's own token endpoints (a third-party
    /// platform's component or authorizer tokens); `key.mode` is then `Classic`, whose rules
    /// (every fetch issues a new token and retires the previous one) these tokens follow.
    fetcher: Option<Arc<dyn super::TokenFetcher>>,
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
    /// Another process runs the background refresher for this token (see
    /// [`TokenManager::leave_refresh_to_others`]).
    external_refresher: std::sync::atomic::AtomicBool,
}

/// Fetches, caches and refreshes one app's access token. Cheap to clone; clones share
/// everything (cache, refresh flight, store). See the [module docs](super) for its guarantees.
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

/// Permission to make one store call (see [`TokenManager::store_ticket`]); reports back how it
/// went.
struct StoreTicket<'a> {
    manager: &'a TokenManager,
    probe: bool,
    gen: u64,
}

impl StoreTicket<'_> {
    fn ok(mut self) {
        let recovered = {
            let mut st = self.manager.state();
            // A failure recorded after this call was issued stands.
            let recovered = st.store_down_gen == self.gen && st.store_down_until.take().is_some();
            if self.probe {
                st.store_probing = false;
            }
            // (The degraded-mode fetch interval is lifted only when a lease can be taken again:
            // a store that answers reads but refuses writes — a read-only replica after a
            // failover, an OOM under `noeviction` — still cannot coordinate anyone.)
            recovered
        };
        self.probe = false;
        if recovered {
            tracing::info!(appid = %self.manager.inner.key.appid, "token store reachable again");
        }
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
    /// Successful upstream fetches of a new token made by this manager.
    pub fetches: u64,
    /// The last error a refresh ended with, and when (manager clock, Unix ms).
    pub last_error: Option<(String, i64)>,
    /// Whether the store is being skipped after a failure.
    pub store_down: bool,
    /// Whether a refresh (or a wait for another process's refresh) is in progress.
    pub refreshing: bool,
}

/// Answers a flight's waiters and frees its slot — also when the task panics or is dropped.
struct Landing {
    manager: TokenManager,
    id: u64,
    epoch: u64,
    tx: Option<watch::Sender<Outcome>>,
}

impl Landing {
    fn finish(mut self, outcome: Result<StoredToken>) {
        self.manager.land(self.id, self.epoch, &outcome);
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Some(outcome));
        }
    }
}

impl Drop for Landing {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            let err = Err(ended_without_answer());
            self.manager.land(self.id, self.epoch, &err);
            let _ = tx.send(Some(err));
        }
    }
}

/// Aborts a task when dropped (the lease renewer must not outlive its fetch, even on a panic).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Holds a lease while a refresh uses it: renews it every third of its TTL and knows how long
/// it is certainly still ours.
struct LeaseKeeper {
    lease: Lease,
    /// Certainly ours until then: a third of the TTL before it would expire after the last
    /// confirmed acquisition or renewal. A renewal that errors does not extend it.
    held_until: Arc<Mutex<Instant>>,
    lost: Arc<AtomicBool>,
    _renewer: AbortOnDrop,
}

impl LeaseKeeper {
    fn start(manager: &TokenManager, lease: Lease, acquired: Instant) -> Self {
        let ttl = manager.inner.policy.lock_ttl;
        let margin = ttl / 3;
        let held_until = Arc::new(Mutex::new(acquired + ttl - margin));
        let lost = Arc::new(AtomicBool::new(false));
        let renewer = {
            let store = manager.inner.store.clone();
            let key = manager.inner.key.clone();
            let lease = lease.clone();
            let held_until = held_until.clone();
            let lost = lost.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(ttl / 3).await;
                    let asked = Instant::now();
                    match store.renew(&key, &lease, ttl).await {
                        Ok(true) => {
                            *held_until.lock().unwrap_or_else(|p| p.into_inner()) =
                                asked + ttl - margin;
                        }
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
        Self {
            lease,
            held_until,
            lost,
            _renewer: AbortOnDrop(renewer),
        }
    }

    fn held(&self) -> bool {
        !self.lost.load(Ordering::SeqCst)
            && Instant::now() < *self.held_until.lock().unwrap_or_else(|p| p.into_inner())
    }
}

enum Joined {
    /// A flight that answers the request.
    Flight(Flight),
    /// A normal flight is running but the caller forces: wait for it, then ask again.
    Busy(Flight),
}

/// What a refresh is asked for.
#[derive(Debug, Clone)]
struct Want {
    force: bool,
    /// A token is good enough if it is not due at this time (ms).
    due_before: i64,
    /// For a forced refresh: the token it must replace.
    replace: Option<AccessToken>,
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
        Self::build(key, secret, http, store, clock, policy, None)
    }

    /// A manager whose tokens come from `fetcher` (see [`super::TokenFetcher`]).
    pub(crate) fn with_fetcher(
        key: TokenKey,
        http: Http,
        store: Arc<dyn TokenStore>,
        clock: Arc<dyn Clock>,
        policy: TokenPolicy,
        fetcher: Arc<dyn super::TokenFetcher>,
    ) -> Self {
        Self::build(
            key,
            AppSecret::new(String::new()),
            http,
            store,
            clock,
            policy,
            Some(fetcher),
        )
    }

    fn build(
        key: TokenKey,
        secret: AppSecret,
        http: Http,
        store: Arc<dyn TokenStore>,
        clock: Arc<dyn Clock>,
        policy: TokenPolicy,
        fetcher: Option<Arc<dyn super::TokenFetcher>>,
    ) -> Self {
        Self {
            inner: Arc::new(ManagerInner {
                key,
                secret,
                http,
                fetcher,
                store,
                clock,
                policy,
                state: Mutex::new(State::default()),
                next_flight: AtomicU64::new(1),
                fetches: AtomicU64::new(0),
                refreshers: AtomicUsize::new(0),
                external_refresher: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    /// How many new tokens this manager fetched from upstream (not counting other processes',
    /// nor a call that brought back the token it already held).
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

    /// Declares that another process runs the background refresher for this token (a fleet
    /// where one instance refreshes each app): callers here then leave a token that is due but
    /// alive to it for the same grace as to a local refresher (its jitter plus two polls), and
    /// refresh themselves only when it is overdue — so the fleet's refresh is normally done by
    /// that one process. Keep the refresh margin larger than the grace.
    pub fn leave_refresh_to_others(&self, on: bool) {
        self.inner.external_refresher.store(on, Ordering::Relaxed);
    }

    /// When the last refresh error happened (manager clock, Unix ms), without copying it: a
    /// cheap look for supervisors of many managers ([`TokenManager::status`] has the message).
    pub fn last_error_at(&self) -> Option<i64> {
        self.state().last_error.as_ref().map(|(_, at)| *at)
    }

    /// Forgets remembered token-endpoint failures (45009 after a `clear_quota`, a credential
    /// error after fixing the secret or the IP whitelist), so the next caller asks WeChat
    /// again. A refresh already in flight cannot remember its failure afterwards.
    pub fn forget_failures(&self) {
        let mut st = self.state();
        st.failure = None;
        st.forced_failure = None;
        st.failures_in_a_row = 0;
        st.failure_epoch += 1;
    }

    /// Forgets this process's copy of `token` (if it is the one held), so the next
    /// [`TokenManager::current`] reads the store — where another process may already have put a
    /// newer token — without invalidating anything there.
    pub fn drop_local(&self, token: &AccessToken) {
        let mut st = self.state();
        if st
            .local
            .as_ref()
            .is_some_and(|l| l.token.access_token.ct_eq(token.expose()))
        {
            st.local = None;
        }
    }

    /// The token the shared store holds now, read without touching this process's copy and
    /// without refreshing anything: `None` when the store holds none, holds one this process
    /// saw WeChat reject, or cannot be read (it is then left to its cooldown like any read).
    /// A broker uses it to learn whether another process already replaced a token it suspects.
    pub async fn peek_store(&self) -> Option<StoredToken> {
        let ticket = self.store_ticket()?;
        match self.inner.store.load(&self.inner.key).await {
            Ok(t) => {
                ticket.ok();
                t.filter(|t| !self.is_rejected(&t.access_token))
            }
            Err(e) => {
                ticket.failed(&e);
                None
            }
        }
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
        // Ours must go back into the store: no shortcut past the flight.
        let mut put_back = false;
        let mut store_reached = false;
        if let Some(ticket) = self.store_ticket() {
            match self.inner.store.load_state(&self.inner.key).await {
                Ok(state) => {
                    ticket.ok();
                    store_reached = true;
                    match state.token {
                        Some(t) if self.is_rejected(&t.access_token) => {
                            self.scrub(&t.access_token).await;
                        }
                        Some(t) if self.fresh_at(&t, now) && !self.local_supersedes(Some(&t)) => {
                            self.remember(&t, true);
                            return Ok(t);
                        }
                        Some(t) if self.local_supersedes(Some(&t)) => {
                            // The store holds an older token than ours (it lost our write in a
                            // failover, or ours was fetched while it was down): the flight
                            // below puts ours back under the lease — even with a background
                            // refresher, which would otherwise serve the older one until due —
                            // and ours is served if it cannot.
                            if let Some(ours) = self.supersedes(Some(&t)) {
                                fallback = Some(ours);
                                put_back = true;
                            }
                        }
                        Some(t) if self.usable(&t, now) => fallback = Some(t),
                        Some(_) => {}
                        None if state.written == Some(0) => {
                            // The store lost everything (flushed, restarted) — it did not
                            // invalidate our token (that leaves the watermark): serve the copy
                            // we hold rather than wait on whoever refreshes first; the next
                            // refresh under the lease puts it back.
                            if let Some(t) = self
                                .local_copy()
                                .filter(|t| !self.is_rejected(&t.access_token))
                            {
                                if self.fresh_at(&t, now) {
                                    // A refresh flight (in the background) puts it back under
                                    // the lease, unless someone else's lands first.
                                    let _ = self.flight(&Want {
                                        force: false,
                                        due_before: now,
                                        replace: None,
                                    });
                                    return Ok(t);
                                }
                                if self.usable(&t, now) {
                                    fallback = Some(t);
                                }
                            }
                        }
                        None => {}
                    }
                }
                Err(e) => ticket.failed(&e),
            }
        }
        if !store_reached {
            // Degraded: the local copy is all there is.
            if let Some(t) = self.local_copy() {
                if self.fresh_at(&t, now) {
                    return Ok(t);
                }
                if self.usable(&t, now) {
                    fallback = Some(t);
                }
            }
        }
        let refresher = self.inner.refreshers.load(Ordering::Relaxed) > 0
            || self.inner.external_refresher.load(Ordering::Relaxed);
        if let Some(t) = &fallback {
            // A background refresher will get to it (at its jittered moment): leave it to it,
            // unless it is overdue.
            if refresher
                && !put_back
                && now < t.refresh_at_ms.saturating_add(self.refresher_grace_ms())
            {
                return Ok(t.clone());
            }
        }
        let want = Want {
            force: false,
            due_before: now,
            replace: None,
        };
        let flight = match self.flight(&want) {
            Ok(Joined::Flight(f) | Joined::Busy(f)) => f,
            Err(remembered) => return fallback.ok_or(remembered),
        };
        if let Some(t) = &fallback {
            if refresher && !put_back {
                return Ok(t.clone());
            }
        }
        let joined_forced = flight.force;
        let mut result = flight.wait().await;
        if joined_forced && result.is_err() {
            // A forced refresh failed for a reason of its own (its daily budget): that says
            // nothing about a normal one.
            result = match self.flight(&want) {
                Ok(Joined::Flight(f) | Joined::Busy(f)) => f.wait().await,
                Err(e) => Err(e),
            };
        }
        match result {
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
    /// concurrent callers share one forced fetch, and a token that replaced the one current
    /// when this call began (forced by another process, say) is accepted instead of forcing
    /// again. While the store is down the forced fetch still happens and is kept in this
    /// process.
    ///
    /// # Errors
    /// As [`TokenManager::current`].
    pub async fn force_refresh(&self) -> Result<StoredToken> {
        // The token current when the caller asked: any other fresh token satisfies the request.
        let replace = match self.store_ticket() {
            Some(ticket) => match self.inner.store.load(&self.inner.key).await {
                Ok(t) => {
                    ticket.ok();
                    t.map(|t| t.access_token)
                }
                Err(e) => {
                    ticket.failed(&e);
                    None
                }
            },
            None => None,
        }
        .or_else(|| self.local_copy().map(|t| t.access_token));
        let want = Want {
            force: true,
            due_before: self.now(),
            replace: replace.clone(),
        };
        for _ in 0..8 {
            match self.flight(&want)? {
                Joined::Flight(f) => {
                    let theirs = f.replace.clone();
                    let t = f.wait().await?;
                    // A forced flight started to replace an older token may hand back the very
                    // one this caller wants replaced: force again. (If our own forced flight
                    // gets the same token back, WeChat declined to rotate — within 30 s of the
                    // last forced refresh it answers the current token — and that is the
                    // answer.)
                    let ours = replace.as_ref().is_some_and(|r| t.access_token == *r);
                    if ours && theirs != replace {
                        continue;
                    }
                    return Ok(t);
                }
                // A normal refresh is running; it does not force. Let it land, then force.
                Joined::Busy(f) => {
                    let _ = f.wait().await;
                }
            }
        }
        Err(StoreError::new("forced refresh kept being overtaken; try again", None).into())
    }

    /// Starts a background task that keeps the token fresh: it refreshes a margin before
    /// expiry (jittered per manager, see [`TokenPolicy::refresher_jitter`]) and re-reads the
    /// store, so request paths never wait on WeChat while a valid token exists. Stop it with
    /// [`Refresher::stop`] or by dropping the handle.
    pub fn start_refresher(&self) -> Refresher {
        let (stop_tx, mut stop_rx) = watch::channel(false);
        let manager = self.clone();
        let jitter_cap = manager.jitter_cap_ms();
        let jitter = if jitter_cap > 0 {
            (rand::random::<u64>() % (jitter_cap as u64 + 1)) as i64
        } else {
            0
        };
        struct Running(Arc<ManagerInner>);
        impl Drop for Running {
            fn drop(&mut self) {
                self.0.refreshers.fetch_sub(1, Ordering::SeqCst);
            }
        }
        manager.inner.refreshers.fetch_add(1, Ordering::SeqCst);
        let running = Running(manager.inner.clone());
        let task = tokio::spawn(async move {
            let _running = running;
            let mut failures = 0u32;
            loop {
                let wait = tokio::select! {
                    w = manager.refresher_tick(jitter, &mut failures) => w,
                    _ = stop_rx.changed() => break,
                };
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    _ = stop_rx.changed() => break,
                }
                if *stop_rx.borrow() {
                    break;
                }
            }
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
        self.jitter_cap_ms()
            .saturating_add(ms(self.inner.policy.refresher_poll).saturating_mul(2))
    }

    /// One look of the background refresher; returns how long to sleep.
    async fn refresher_tick(&self, jitter_ms: i64, failures: &mut u32) -> Duration {
        let poll = self.inner.policy.refresher_poll;
        let now = self.now();
        // Refresh `jitter_ms` after the token's refresh point.
        let due_before = now - jitter_ms;
        let result = match self.store_ticket() {
            Some(ticket) => match self.inner.store.load(&self.inner.key).await {
                Ok(Some(t))
                    if self.fresh_at(&t, due_before)
                        && !self.is_rejected(&t.access_token)
                        && !self.local_supersedes(Some(&t)) =>
                {
                    ticket.ok();
                    self.remember(&t, true);
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
                let until_due = t
                    .refresh_at_ms
                    .saturating_add(jitter_ms)
                    .saturating_sub(self.now());
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
                    .map(|f| f.until_ms.min(f.next_probe_ms.max(0)) - self.now());
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
            if let Some(t) = self.local_copy().filter(|t| self.usable(t, self.now())) {
                return Ok(t);
            }
        }
        let want = Want {
            force: false,
            due_before,
            replace: None,
        };
        match self.flight(&want)? {
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
        ms(self.inner.policy.expiry_safety)
            .min((t.expires_at_ms.saturating_sub(t.refresh_at_ms) / 2).max(0))
    }

    /// Alive with more than the safety margin left.
    fn usable(&self, t: &StoredToken, now: i64) -> bool {
        now.saturating_add(self.safety_ms(t)) < t.expires_at_ms
    }

    /// Not due for refresh at `at`, and usable now (and at `at`).
    fn fresh_at(&self, t: &StoredToken, at: i64) -> bool {
        at < t.refresh_at_ms && self.usable(t, at.max(self.now()))
    }

    fn is_rejected(&self, token: &AccessToken) -> bool {
        let d = digest(token);
        self.state().rejected.contains(&d)
    }

    /// Removes a token WeChat rejected from the store (compare-and-swap), e.g. one whose
    /// invalidation was skipped while the store was down.
    async fn scrub(&self, token: &AccessToken) {
        if let Some(ticket) = self.store_ticket() {
            match self.inner.store.invalidate(&self.inner.key, token).await {
                Ok(_) => ticket.ok(),
                Err(e) => ticket.failed(&e),
            }
        }
    }

    fn local_copy(&self) -> Option<StoredToken> {
        self.state().local.as_ref().map(|l| l.token.clone())
    }

    fn local_hot(&self, now: i64) -> Option<StoredToken> {
        let ttl = ms(self.inner.policy.local_cache);
        if ttl == 0 {
            return None;
        }
        let local = self.state().local.clone()?;
        (now - local.read_at_ms < ttl && local.published && self.fresh_at(&local.token, now))
            .then_some(local.token)
    }

    /// Keeps `token` as the local copy, unless WeChat has rejected it.
    fn remember(&self, token: &StoredToken, published: bool) {
        let now = self.now();
        let d = digest(&token.access_token);
        let mut st = self.state();
        if st.rejected.contains(&d) {
            return;
        }
        st.local = Some(Local {
            token: token.clone(),
            read_at_ms: now,
            published,
        });
    }

    /// Our token, if it should replace what the store holds: fresh, not rejected, and either
    /// fetched while the store was down and newer than `stored`, or published and newer than
    /// `stored` — the store went back to an older token (a failover to a replica that missed
    /// our write, a restore from a backup): versions only grow, so an older one under the key
    /// means the newer write was lost, not replaced.
    fn supersedes(&self, stored: Option<&StoredToken>) -> Option<StoredToken> {
        let local = self.state().local.clone()?;
        let rolled_back = stored.is_some_and(|s| s.version < local.token.version);
        if (local.published && !rolled_back)
            || !self.fresh_at(&local.token, self.now())
            || self.is_rejected(&local.token.access_token)
        {
            return None;
        }
        match stored {
            // Fetched under a later lease than the stored one: newer, whatever the clocks say.
            Some(s) if local.token.version > s.version => Some(local.token),
            Some(s) if s.expires_at_ms >= local.token.expires_at_ms => None,
            _ => Some(local.token),
        }
    }

    fn local_supersedes(&self, stored: Option<&StoredToken>) -> bool {
        stored.is_some() && self.supersedes(stored).is_some()
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
        let gen = st.store_down_gen;
        match st.store_down_until {
            None => Some(StoreTicket {
                manager: self,
                probe: false,
                gen,
            }),
            Some(until) if Instant::now() < until => None,
            Some(_) if st.store_probing => None,
            Some(_) => {
                st.store_probing = true;
                Some(StoreTicket {
                    manager: self,
                    probe: true,
                    gen,
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
            st.store_down_gen += 1;
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

    /// The remembered failure that answers `want` now, if any (a due probe lets one caller
    /// through).
    fn remembered(st: &mut State, now: i64, force: bool) -> Option<Error> {
        let mut slots = vec![&mut st.failure];
        if force {
            slots.push(&mut st.forced_failure);
        }
        for slot in slots {
            let Some(f) = slot.as_mut() else { continue };
            if now >= f.until_ms {
                *slot = None;
                continue;
            }
            if let Some(every) = f.probe_every_ms {
                if now >= f.next_probe_ms {
                    f.next_probe_ms = now.saturating_add(every);
                    continue;
                }
            }
            return Some(f.error.clone());
        }
        None
    }

    /// Joins the refresh in progress or starts one (detached from every caller). A forcing
    /// caller joins only a forcing flight; a normal one joins any.
    fn flight(&self, want: &Want) -> Result<Joined> {
        let now = self.now();
        let mut st = self.state();
        if let Some(f) = st.flight.clone() {
            if f.is_dead() {
                st.flight = None;
            } else {
                return Ok(if !want.force || f.force {
                    Joined::Flight(f)
                } else {
                    Joined::Busy(f)
                });
            }
        }
        if let Some(err) = Self::remembered(&mut st, now, want.force) {
            tracing::debug!(appid = %self.inner.key.appid, error = %err, "answering a remembered token-endpoint failure");
            return Err(err);
        }
        let id = self.inner.next_flight.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = watch::channel(None);
        let flight = Flight {
            id,
            force: want.force,
            replace: want.replace.clone(),
            rx,
        };
        st.flight = Some(flight.clone());
        let landing = Landing {
            manager: self.clone(),
            id,
            epoch: st.failure_epoch,
            tx: Some(tx),
        };
        drop(st);
        let manager = self.clone();
        let want = want.clone();
        tokio::spawn(async move {
            let outcome = manager.run_flight(&want).await;
            landing.finish(outcome);
        });
        Ok(Joined::Flight(flight))
    }

    /// Ends flight `id`: clears the slot and remembers what must be remembered.
    fn land(&self, id: u64, epoch: u64, outcome: &Result<StoredToken>) {
        let now = self.now();
        let mut st = self.state();
        let force = match &st.flight {
            Some(f) if f.id == id => {
                let force = f.force;
                st.flight = None;
                force
            }
            _ => false,
        };
        let err = match outcome {
            Ok(t) => {
                // Only a token that is not due says the refresh worked; a due-but-alive token
                // served while another process holds the lease says nothing about WeChat.
                if now < t.refresh_at_ms {
                    st.failure = None;
                    if force {
                        st.forced_failure = None;
                    }
                    st.failures_in_a_row = 0;
                }
                return;
            }
            Err(e) => e,
        };
        st.last_error = Some((err.to_string(), now));
        if st.failure_epoch != epoch {
            // Failures were forgotten (a clear_quota) while this flight ran.
            return;
        }
        let policy = &self.inner.policy;
        let (until, probe) = match err.errcode() {
            Some(ErrCode::MinuteQuotaExceeded) => (now - now.rem_euclid(60_000) + 60_000, None),
            Some(ErrCode::DailyQuotaExceeded) => (
                next_beijing_midnight_ms(now),
                Some(ms(policy.quota_probe_interval)),
            ),
            Some(ErrCode::IpRefusedForADay) => (now + 86_400_000, None),
            Some(ErrCode::IpRefusedForAnHour) => (now + 3_600_000, None),
            Some(code) if is_credential_error(code) => {
                (now.saturating_add(ms(policy.credential_backoff)), None)
            }
            _ => {
                // Anything else (-1 after its retries, a timeout, garbage): a short,
                // exponential back-off, so a failing WeChat is not asked once per caller.
                st.failures_in_a_row = st.failures_in_a_row.saturating_add(1);
                let backoff = 1000i64 << st.failures_in_a_row.saturating_sub(1).min(6);
                (now + backoff.min(60_000), None)
            }
        };
        tracing::info!(appid = %self.inner.key.appid, error = %err, forced = force, remembered_ms = until - now, "token endpoint failure remembered; callers get it without asking WeChat");
        let remembered = Remembered {
            error: err.clone(),
            until_ms: until,
            probe_every_ms: probe,
            next_probe_ms: probe.map_or(i64::MAX, |p| now.saturating_add(p)),
        };
        // A forced refresh spends its own budget (20 a day): its 45009 does not stop normal
        // refreshes. Everything else it says holds for both.
        if force && err.errcode() == Some(ErrCode::DailyQuotaExceeded) {
            st.forced_failure = Some(remembered);
        } else {
            st.failure = Some(remembered);
        }
    }

    /// Does `t` answer `want`?
    fn satisfies(&self, t: &StoredToken, want: &Want) -> bool {
        if self.is_rejected(&t.access_token) {
            return false;
        }
        if want.force {
            want.replace.as_ref().is_none_or(|r| t.access_token != *r)
                && self.fresh_at(t, self.now())
        } else {
            self.fresh_at(t, want.due_before) && !self.local_supersedes(Some(t))
        }
    }

    async fn run_flight(&self, want: &Want) -> Result<StoredToken> {
        let key = &self.inner.key;
        let store = &self.inner.store;
        let policy = &self.inner.policy;
        let started = Instant::now();
        // A dead leader's lease runs out after lock_ttl; a live one finishes within its fetch
        // deadline (renewing meanwhile). Waiting longer than both means something is wrong.
        let max_wait = policy.lock_ttl * 2 + policy.fetch_timeout;
        loop {
            let Some(ticket) = self.store_ticket() else {
                return self.degraded(want.force).await;
            };
            let state = match store.load_state(key).await {
                Ok(s) => {
                    ticket.ok();
                    s
                }
                Err(e) => {
                    ticket.failed(&e);
                    return self.degraded(want.force).await;
                }
            };
            if let Some(t) = state.token.as_ref().filter(|t| self.satisfies(t, want)) {
                self.remember(t, true);
                return Ok(t.clone());
            }
            // Measured before asking: the lease may have started up to a round trip earlier
            // than the answer arrives.
            let acquired = Instant::now();
            let lease = match store.try_lock(key, policy.lock_ttl).await {
                Ok(l) => {
                    // Writes work: processes can coordinate again.
                    self.state().last_degraded_fetch_ms = None;
                    l
                }
                Err(e) => {
                    self.mark_store_down(&e);
                    return self.degraded(want.force).await;
                }
            };
            let Some(lease) = lease else {
                // Someone else is refreshing. A token still usable serves in the meantime, so
                // callers do not wait on WeChat; otherwise poll until theirs lands or their
                // lease runs out (then we take it ourselves).
                let now = self.now();
                if !want.force {
                    // Ours, when the store lost it: the lease holder puts one back or fetches.
                    if let Some(t) = self.supersedes(state.token.as_ref()) {
                        return Ok(t);
                    }
                    if let Some(t) = state
                        .token
                        .filter(|t| self.usable(t, now) && !self.is_rejected(&t.access_token))
                    {
                        self.remember(&t, true);
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
            let keeper = LeaseKeeper::start(self, lease, acquired);
            let result = self.refresh_under(&keeper, want).await;
            let lease = keeper.lease.clone();
            drop(keeper);
            if let Err(e) = store.unlock(key, &lease).await {
                tracing::warn!(appid = %key.appid, error = %e, "could not release the token lease; it will expire");
            }
            return result;
        }
    }

    async fn refresh_under(&self, keeper: &LeaseKeeper, want: &Want) -> Result<StoredToken> {
        let key = &self.inner.key;
        let store = &self.inner.store;
        let lease = &keeper.lease;
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
            .filter(|t| self.satisfies(t, want))
        {
            self.remember(t, true);
            return Ok(t.clone());
        }
        if !want.force {
            if let Some(t) = self.publish_ours(lease, state.as_ref(), want).await {
                return Ok(t);
            }
            if state.is_none() {
                // The store stopped answering between the lease and this read: a copy that is
                // not due yet (a put-back that could not happen) is no reason to ask WeChat.
                if let Some(t) = self.local_copy().filter(|t| {
                    self.fresh_at(t, want.due_before) && !self.is_rejected(&t.access_token)
                }) {
                    return Ok(t);
                }
            }
        }
        let token = self
            .fetch(want.force, want.replace.as_ref(), lease.fence, Some(keeper))
            .await?;
        match store.store(key, &token).await {
            Ok(true) => {}
            Ok(false) => {
                // Fenced out: a newer lease already wrote. Prefer its token if it is usable;
                // otherwise keep serving ours locally.
                tracing::warn!(appid = %key.appid, fence = lease.fence, "a newer token was stored meanwhile");
                if let Ok(Some(newer)) = store.load(key).await {
                    if newer.version > token.version
                        && self.usable(&newer, self.now())
                        && !self.is_rejected(&newer.access_token)
                    {
                        self.remember(&newer, true);
                        return Ok(newer);
                    }
                }
            }
            Err(e) => {
                self.mark_store_down(&e);
                // Not in the store: publish it when the store is back (it may be newer than
                // what the store still holds).
                self.remember(&token, false);
                return Ok(token);
            }
        }
        self.remember(&token, true);
        Ok(token)
    }

    /// Puts our token into the store instead of fetching one, under the lease, when either
    /// - the store **lost** its token (flushed, restarted; not invalidated: the watermark then
    ///   still covers our version, and WeChat has rejected that token), or
    /// - our token was fetched while the store was down and is **newer** than the store's.
    async fn publish_ours(
        &self,
        lease: &Lease,
        state: Option<&StoreState>,
        want: &Want,
    ) -> Option<StoredToken> {
        let state = state?;
        let candidate = if let Some(newer) = self.supersedes(state.token.as_ref()) {
            newer
        } else {
            if state.token.is_some() {
                return None;
            }
            let local = self.local_copy()?;
            let written = state.written?;
            if !(written == 0 || local.version > written) || !self.fresh_at(&local, want.due_before)
            {
                return None;
            }
            local
        };
        if self.is_rejected(&candidate.access_token) {
            return None;
        }
        // A token the store once held and lost (a flush, a failover) goes back with the version
        // it was written with, so tokens keep the order they were issued in: when a failover
        // lost two writes, the holder of the newer one puts it back over the older one's, not
        // under it. One fetched while the store was down (version 0) takes the lease's fence.
        let published = self
            .state()
            .local
            .as_ref()
            .is_some_and(|l| l.published && l.token.access_token == candidate.access_token);
        let version = if published && candidate.version > state.written.unwrap_or(0) {
            candidate.version
        } else {
            lease.fence
        };
        let token = StoredToken {
            version,
            ..candidate
        };
        match self.inner.store.store(&self.inner.key, &token).await {
            Ok(true) if !self.is_rejected(&token.access_token) => {
                tracing::info!(appid = %self.inner.key.appid, "put our token into the store instead of fetching one");
                self.remember(&token, true);
                Some(token)
            }
            Ok(true) => {
                // Rejected while we were writing it: take it out again.
                self.scrub(&token.access_token).await;
                None
            }
            Ok(false) => None,
            Err(e) => {
                self.mark_store_down(&e);
                None
            }
        }
    }

    /// Asks WeChat for a token: every attempt and backoff within `fetch_timeout`. A request
    /// whose outcome is unknown is repeated only when repeating is harmless (a normal
    /// `stable_token`) or while the lease is certainly still ours; without a lease (degraded
    /// mode), only if it provably never left.
    #[tracing::instrument(skip(self, keeper), fields(appid = %self.inner.key.appid, mode = self.inner.key.mode.as_str()))]
    async fn fetch(
        &self,
        force: bool,
        replace: Option<&AccessToken>,
        version: u64,
        keeper: Option<&LeaseKeeper>,
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
        // After a forced stable call whose outcome is unknown, ask without forcing: that call
        // spends none of the 20-a-day budget and answers whichever token is current — the
        // forced one if the force happened, the old one if it did not.
        let unforced = match inner.key.mode {
            TokenMode::Stable if force => Some(Call::of(&StableTokenRequest {
                grant_type: "client_credential",
                appid,
                secret: inner.secret.expose(),
                force_refresh: false,
            })?),
            _ => None,
        };
        let forced = &call;
        let mut call = &call;
        // Set when the unforced fallback showed the force did not happen: one more forced
        // attempt is allowed.
        let mut reforced = false;
        let budget = inner.policy.fetch_timeout;
        let deadline = Instant::now() + budget;
        let mut attempt = 0u32;
        // Set once an attempt may have issued a token we never saw. A classic fetch (or a
        // forced stable one) that WeChat carried out retires the token everyone holds, so after
        // such an attempt giving up is worse than going on: the retry budget no longer limits
        // the attempts, only the deadline and the lease do.
        let mut in_doubt = false;
        let mut last_err: Option<Error> = None;
        loop {
            // A call that is not harmless to repeat goes out only while the lease is certainly
            // ours (checked right before sending, not before the back-off sleep).
            if let Some(k) = keeper {
                if !call.idempotent && !k.held() {
                    return Err(last_err.unwrap_or_else(|| {
                        StoreError::new("the token lease ran out before the fetch", None).into()
                    }));
                }
            }
            let sent_at = self.now();
            let attempt_future = async {
                match &inner.fetcher {
                    Some(f) => f.fetch().await,
                    None => inner.http.attempt::<TokenResponse>(call, None).await,
                }
            };
            let result = match tokio::time::timeout_at(deadline, attempt_future).await {
                Ok(r) => r,
                Err(_) => Err(Error::TimedOut {
                    endpoint: inner
                        .fetcher
                        .as_ref()
                        .map_or(call.path, |f| f.endpoint())
                        .to_owned()
                        .into(),
                    after: budget,
                }),
            };
            let err = match result {
                Ok(response)
                    if !reforced
                        && !std::ptr::eq(call, forced)
                        && replace.is_some_and(|r| response.access_token == *r) =>
                {
                    // The unforced fallback answered the very token to replace: the force never
                    // took effect. Force once more.
                    reforced = true;
                    call = forced;
                    attempt += 1;
                    continue;
                }
                Ok(response) => return self.accept(response, sent_at, version),
                Err(e) => e,
            };
            let lease_held = keeper.is_some_and(LeaseKeeper::held);
            // (An explicit `-1` is WeChat saying it failed; a lost or garbled answer is not.)
            let doubt = !call.idempotent
                && outcome_in_doubt(&err)
                && !never_sent(&err)
                && !matches!(err, Error::Api { .. });
            in_doubt |= doubt;
            if doubt {
                if let Some(normal) = &unforced {
                    call = normal;
                }
            }
            let may_repeat = call.idempotent || lease_held || never_sent(&err);
            let persist = in_doubt && lease_held;
            // A garbled answer to a call in doubt is repeated like a lost one.
            let repeatable = is_transient(&err) || (doubt && matches!(err, Error::Decode { .. }));
            let left = deadline.saturating_duration_since(Instant::now());
            if !repeatable
                || matches!(err, Error::TimedOut { .. })
                || !may_repeat
                || (attempt >= inner.http.retry.max_retries && !persist)
                || left.is_zero()
            {
                return Err(err);
            }
            attempt += 1;
            tracing::debug!(attempt, error = %err, "token fetch failed; retrying");
            last_err = Some(err);
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
        // WeChat just handed this token out as current: if it was rejected before (a 40001
        // that did not mean what it said), it is not any more.
        let d = digest(&response.access_token);
        self.state().rejected.retain(|r| *r != d);
        let lifetime_ms = response.expires_in.min(MAX_TOKEN_LIFETIME_SECS) * 1000;
        let margin_ms = ms(self.inner.policy.refresh_margin).min(lifetime_ms / 2);
        // A new token counts as a fetch; the token held already coming back (a stable token
        // asked for a little before WeChat rotates it) does not: nothing was refreshed.
        let same = self
            .state()
            .local
            .as_ref()
            .is_some_and(|l| l.token.access_token.ct_eq(response.access_token.expose()));
        if !same {
            self.inner.fetches.fetch_add(1, Ordering::Relaxed);
        }
        tracing::info!(
            expires_in = response.expires_in,
            version,
            "fetched access token"
        );
        Ok(StoredToken {
            access_token: response.access_token,
            expires_at_ms: sent_at.saturating_add(lifetime_ms),
            refresh_at_ms: sent_at.saturating_add(lifetime_ms - margin_ms),
            version,
        })
    }

    /// The store is unreachable: serve the local copy until WeChat rejects it or it nears
    /// expiry (no proactive refresh: with classic tokens it would retire other processes'
    /// tokens), then fetch — at most once per `degraded_min_interval`, forced or not — and keep
    /// it locally, to be published when the store is back.
    async fn degraded(&self, force: bool) -> Result<StoredToken> {
        let now = self.now();
        if !force {
            if let Some(t) = self.local_copy().filter(|t| self.usable(t, now)) {
                return Ok(t);
            }
        }
        let interval = ms(self.inner.policy.degraded_min_interval);
        let last_fetch = self.state().last_degraded_fetch_ms;
        if let Some(last) = last_fetch {
            let wait = last.saturating_add(interval) - now;
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
        let result = self.fetch(force, None, 0, None).await;
        // A request that provably never left does not spend the interval.
        if !matches!(&result, Err(e) if never_sent(e)) {
            self.state().last_degraded_fetch_ms = Some(now);
        }
        let token = result?;
        tracing::warn!(appid = %self.inner.key.appid, forced = force, "fetched a token while the store is unavailable; kept in this process until the store is back");
        self.remember(&token, false);
        Ok(token)
    }
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

#[async_trait::async_trait]
impl TokenSource for TokenManager {
    async fn token(&self) -> Result<AccessToken> {
        self.current().await.map(|t| t.access_token)
    }

    async fn invalidate(&self, stale: &AccessToken) -> Result<()> {
        {
            let d = digest(stale);
            let mut st = self.state();
            if !st.rejected.contains(&d) {
                if st.rejected.len() >= REJECTED_CAP {
                    st.rejected.pop_front();
                }
                st.rejected.push_back(d);
            }
            if st
                .local
                .as_ref()
                .is_some_and(|l| l.token.access_token.ct_eq(stale.expose()))
            {
                st.local = None;
            }
        }
        // While the store is down, the cooldown holds for invalidations too: the rejection is
        // remembered locally and the store's copy is removed once it is reachable again.
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
