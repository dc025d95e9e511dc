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
//! | a caller that goes away changes nothing | always | the flight runs detached from its callers: a dropped caller (a client that disconnected) neither leaves the lease held nor loses a token WeChat already issued; a flight that dies (a panic, a runtime shutting down) still answers its waiters and frees its slot |
//! | a stalled refresher cannot overwrite a newer token | the store is up | writes are fenced: each lease's fence exceeds every earlier fence *and* every version written |
//! | a 40001 storm refreshes once | always | [`TokenSource::invalidate`] is compare-and-swap of the exact failing token |
//! | failures are not hammered | always | callers share a failed flight's error, and every failure is remembered: 45011 until the next minute; 45009 until the quota day turns (Beijing midnight) or [`TokenManager::forget_failures`] (called by the SDK's `clear_quota`), with one probe per [`TokenPolicy::quota_probe_interval`] so a quota cleared by another process is noticed; credential errors (40001/40013/40125/40164/40243/61004 — a platform's IP whitelist — /41002/41004/50004/50007/89501/89503 from the token endpoint itself) for [`TokenPolicy::credential_backoff`]; 89507 for an hour, 89506 for a day; anything else (-1, timeouts, garbage) for an exponential back-off from 1 s to 60 s. A forced refresh's 45009 (its 20-a-day budget) blocks forced refreshes only |
//! | callers do not wait on WeChat | a token is still alive | due tokens are served while another process (or, with [`TokenManager::start_refresher`], a background task) refreshes; a failed refresh serves the alive token |
//! | no token seconds before death | always | a token is served only while more than [`TokenPolicy::expiry_safety`] remains (capped at half its refresh margin); `expires_in` is clamped to 7200 s and counted from when the request was sent |
//! | a flushed or restarted Redis costs no fetch | a process still holds a fresh token | the store's watermark tells "lost" from "invalidated": a lost token is put back under the lease instead of fetched again |
//! | a rejected token never comes back | in the process that saw the rejection | rejected tokens are remembered (by digest): never re-adopted from the store, never put back, and removed from the store once it is reachable again |
//! | a forced refresh spends its budget once | always | a forced `stable_token` call whose answer was lost is followed by an unforced one (free, and it answers the forced token if the force happened); only if that hands back the very token to replace is the force tried once more |
//! | **the same on Sentinel and on a Cluster** | `redis+sentinel://…/<master>`, `redis+cluster://…` | every script's keys carry one hash tag (one slot); behind Sentinel a connection that fails or answers `READONLY` sends the store back to the sentinels (asked one by one, each within the connect and response timeouts, so one that hangs costs a lookup half a second) for the primary, used once it says `ROLE master` — a primary cut off from the sentinels but not from this process keeps taking writes until it is demoted (Redis's `min-replicas-to-write` guards that); in a Cluster `MOVED`/`ASK` and new slot owners are followed; a failover costs each caller at most one command deadline, served from the local copy meanwhile |
//! | **a failover that loses writes costs no fetch** | a process still holds the newer token | asynchronous replication can lose an acknowledged write: the replica that takes over may hold an older token (or none) and an older watermark. Versions only grow, so a store holding an older version than a process's own copy has lost it: that process serves its copy and puts it back under a fresh lease instead of fetching, with the version it was written with (so with several writes lost the newest wins, whoever reads first); the fence's time floor (Redis `TIME` in ms) keeps the leases taken after the failover above those taken before, so a refresher mid-fetch on the dead primary cannot overwrite it — assuming the nodes' clocks agree (NTP). Processes with nothing newer use the older token, which WeChat still accepts (classic: 5 minutes after the newer one; stable: it is the same token), until the put-back reaches them (after [`TokenPolicy::store_cooldown`] for one whose connection died with the primary). Not saved: a lost write whose every holder died too (one more fetch), and a lease key lost with the primary while its holder fetches (a second process may fetch once too; the higher fence's token wins, both stay valid for the overlap) |
//! | a foreign value cannot wedge the fleet | the store is up | a stored value that does not decode, or a Redis value of another type under our keys, reads as absent and is overwritten by the next refresh; a lock key that lost its expiry is taken over |
//! | a Redis outage is not a fetch storm | always | the last good token is served until WeChat rejects it or it nears expiry; at most one fetch (forced or not) per process per [`TokenPolicy::degraded_min_interval`] — a request that provably never left does not count, and the limit is lifted only once a lease can be taken again (a store that answers reads but refuses writes, like a read-only replica after a failover, still cannot coordinate anyone); the store is skipped for [`TokenPolicy::store_cooldown`] after a failure (an outage costs one store timeout, not one per call, and one caller probes it afterwards; a Redis that hangs answers nothing, so that timeout is `RedisTimeouts::response` of `RedisStore` (1 s by default) — a deadline around every command, a send stuck behind a partition's full socket buffers included — after which the store checks its connection and replaces it in the background if it does not answer); `invalidate` respects the cooldown; a forced refresh still happens (kept locally); when the store is back, a token fetched meanwhile that is newer than the store's is published |
//!
//! What does **not** hold:
//! - A classic `/cgi-bin/token` call whose answer is lost (a timeout) may still have issued a
//!   token, which retires the previous one after 5 minutes — two such calls retire the token
//!   every caller holds at once. Nobody can learn those tokens; the retry under the same lease
//!   gets another, and once an attempt's outcome is in doubt the refresher goes on past the
//!   retry budget (within [`TokenPolicy::fetch_timeout`], while the lease is certainly its own)
//!   until it has a token. The loss is bounded by the lease, not avoided.
//! - While the store is down, processes cannot coordinate. With **classic** tokens, WeChat
//!   keeps only two alive, so three or more processes fetching independently retire each
//!   other's tokens; the degraded-mode interval bounds the fetches, not the 40001s. Stable
//!   tokens (the default) do not have this problem: fetching one never retires another holder's.
//! - A process killed mid-fetch holds its lease until it expires ([`TokenPolicy::lock_ttl`]);
//!   callers with an alive token are served meanwhile, callers without one wait that long.
//! - The store must keep its keys: with an `allkeys-*` eviction policy Redis may drop the
//!   fencing watermark, and a token another process invalidated could then be put back once
//!   (and rejected again, costing each caller its one retry). Use `noeviction` or `volatile-*`.
//! - A rejection seen by one process is known to the others only through the store.
//! - The Redis scripts read the server's clock before writing, which needs effects replication:
//!   the default since Redis 5 (older servers are asked for it). A fencing watermark of 2^53 or
//!   more — only a foreign writer could set one — defeats Lua's number arithmetic.

mod broker;
mod manager;
pub mod store;

#[cfg(feature = "redis")]
pub mod redis;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{ErrCode, Error, Result};
use crate::http::{Auth, Body, Endpoint, JsonResponse, Method};
use crate::secret::{AccessToken, AppSecret};
pub use broker::BrokerTokenSource;
pub use manager::{Refresher, TokenManager, TokenStatus};
pub use store::{Lease, MemoryStore, StoreState, StoredToken, TokenKey, TokenMode, TokenStore};
// Defined apart, below both this module and `crate::http` (which asks it for tokens).
pub use crate::token_source::TokenSource;

/// The longest lifetime accepted from WeChat (seconds); larger `expires_in` values are clamped.
pub const MAX_TOKEN_LIFETIME_SECS: i64 = 7200;
/// The longest access token accepted (WeChat reserves 512 characters; anything far beyond is
/// garbage, not a token).
pub const MAX_TOKEN_LEN: usize = 4096;

/// Where a [`TokenManager`] gets tokens when they do not come from the app's own token
/// endpoints: a third-party platform's component token (from its latest ticket) or an
/// authorizer token (from a merchant's refresh token). The manager keeps its guarantees —
/// one refresh at a time across processes under a fenced lease, shared failures, the fetch
/// deadline — and calls [`TokenFetcher::fetch`] once per attempt. Such tokens follow the
/// classic rules: every fetch issues a new token and the previous one works 300 s more.
#[async_trait::async_trait]
pub trait TokenFetcher: Send + Sync + std::fmt::Debug {
    /// The endpoint, for errors and logs.
    fn endpoint(&self) -> &'static str;

    /// One attempt at a new token.
    ///
    /// # Errors
    /// Typed upstream errors, as [`crate::Error`].
    async fn fetch(&self) -> Result<TokenResponse>;
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
    /// While a 45009 (daily quota) is remembered, one caller per this interval asks WeChat
    /// again, so a quota cleared by another process is noticed. Default 300 s.
    pub quota_probe_interval: Duration,
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
            quota_probe_interval: Duration::from_secs(300),
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
            ("quota_probe_interval", self.quota_probe_interval),
            ("degraded_min_interval", self.degraded_min_interval),
            ("refresher_jitter", self.refresher_jitter),
            ("refresher_poll", self.refresher_poll),
        ] {
            if d > day {
                return bad(format!("{name} must not exceed a day"));
            }
        }
        if self.lock_ttl < Duration::from_secs(1) {
            // Renewals go every third of it and a store answer may take up to a second.
            return bad("lock_ttl must be at least 1 s".into());
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
        if self.refresher_poll.is_zero() || self.quota_probe_interval.is_zero() {
            return bad("refresher_poll and quota_probe_interval must be positive".into());
        }
        Ok(())
    }
}

pub(crate) fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The next midnight in Beijing (UTC+8), when WeChat's daily quotas reset.
pub(crate) fn next_beijing_midnight_ms(now_ms: i64) -> i64 {
    const DAY: i64 = 86_400_000;
    const OFFSET: i64 = 8 * 3_600_000;
    (now_ms.saturating_add(OFFSET).div_euclid(DAY) + 1).saturating_mul(DAY) - OFFSET
}

/// An error from the token endpoint that says the credentials, not the moment, are wrong.
pub(crate) fn is_credential_error(code: ErrCode) -> bool {
    matches!(
        code,
        ErrCode::InvalidCredential
            | ErrCode::InvalidAppid
            | ErrCode::InvalidAppSecret
            | ErrCode::IpNotInWhitelist
            | ErrCode::ClientIpNotRegistered
            | ErrCode::SecretFrozen
            | ErrCode::AppidMissing
            | ErrCode::AppSecretMissing
            | ErrCode::Forbidden
            | ErrCode::AccountFrozen
            | ErrCode::AuthorizedToThirdParty
            | ErrCode::IpAwaitsConfirmation
            | ErrCode::IpNeedsConfirmation
    )
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
                lock_ttl: Duration::from_millis(500),
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
