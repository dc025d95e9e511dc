//! Where tokens live between refreshes, and the lock that elects one refresher.
//!
//! The contract every store keeps, whatever its backend:
//! - [`TokenStore::store`] is *fenced*: a write carrying a version not greater than the highest
//!   version ever written for that key is refused, so a refresher that stalled past its lock can
//!   never overwrite a newer token.
//! - [`TokenStore::invalidate`] is *compare-and-swap*: it removes the token only if it is still
//!   the one the caller saw fail. A storm of 40001s on one stale token removes it once.
//! - [`TokenStore::try_lock`] grants at most one live lease per key; each lease carries a fence
//!   value strictly greater than every earlier lease's **and** than every version written, so
//!   a fence counter that was lost or fell behind (eviction, failover, a restore) can never
//!   make the holder's write be refused.
//! - [`TokenStore::renew`] extends a lease only while its holder still owns it.
//! - An undecodable stored value reads as absent (and is overwritten by the next refresh), so
//!   one corrupt or foreign value cannot switch a fleet into degraded mode.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::clock::{Clock, SystemClock};
use crate::error::StoreError;
use crate::secret::AccessToken;

/// Which token endpoint a token came from. The two are independent at WeChat: refreshing
/// one never touches the other, so they are cached under different keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenMode {
    /// `POST /cgi-bin/stable_token` (the default): fetching does not invalidate other holders.
    #[default]
    Stable,
    /// `GET /cgi-bin/token`: every fetch invalidates the previous token after 5 minutes.
    Classic,
}

impl TokenMode {
    /// `"stable"` or `"classic"`.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenMode::Stable => "stable",
            TokenMode::Classic => "classic",
        }
    }
}

impl std::str::FromStr for TokenMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "stable" => Ok(TokenMode::Stable),
            "classic" => Ok(TokenMode::Classic),
            other => Err(format!(
                "token mode must be `stable` or `classic`, not `{other}`"
            )),
        }
    }
}

/// Identifies one cached token: an app and a token mode.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenKey {
    /// The appid.
    pub appid: String,
    /// The token mode.
    pub mode: TokenMode,
}

impl TokenKey {
    /// A key for `appid` in `mode`.
    pub fn new(appid: impl Into<String>, mode: TokenMode) -> Self {
        Self {
            appid: appid.into(),
            mode,
        }
    }
}

/// A cached access token with its timing and fencing version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredToken {
    /// The token.
    pub access_token: AccessToken,
    /// When WeChat stops accepting it (Unix ms).
    pub expires_at_ms: i64,
    /// When holders should start refreshing it (Unix ms), a margin before expiry.
    pub refresh_at_ms: i64,
    /// The fence value of the lease under which it was fetched.
    pub version: u64,
}

impl StoredToken {
    /// Usable without refreshing at `now_ms`.
    pub fn is_fresh(&self, now_ms: i64) -> bool {
        now_ms < self.refresh_at_ms
    }

    /// Still accepted by WeChat at `now_ms` (possibly due for refresh).
    pub fn is_alive(&self, now_ms: i64) -> bool {
        now_ms < self.expires_at_ms
    }
}

/// What a store holds for one key: the token, and the fencing watermark.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreState {
    /// The current token, if any (expired or not).
    pub token: Option<StoredToken>,
    /// The highest version ever written for the key (0 for a store that has never been written
    /// or has lost its contents), or `None` when the store cannot tell.
    ///
    /// The token manager uses it to tell a store that *lost* its token (flushed, restarted:
    /// the watermark is gone too, so a process may put back the token it still holds) from one
    /// whose token was *invalidated* (the watermark remains, so nobody re-publishes it).
    pub written: Option<u64>,
}

/// Proof of holding the refresh lock for one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// A random id; only its holder can release the lock.
    pub id: String,
    /// Strictly increasing per key; becomes the version of the token fetched under it.
    pub fence: u64,
}

/// Shared token storage. See the module docs for the contract.
#[async_trait]
pub trait TokenStore: Send + Sync + std::fmt::Debug {
    /// The current token, if any (expired or not).
    async fn load(&self, key: &TokenKey) -> Result<Option<StoredToken>, StoreError>;

    /// Writes `token` if its version is greater than every version written before for `key`.
    /// Returns `false` (and changes nothing) for a stale write.
    async fn store(&self, key: &TokenKey, token: &StoredToken) -> Result<bool, StoreError>;

    /// Removes the current token only if it equals `stale`. Returns whether it was removed.
    async fn invalidate(&self, key: &TokenKey, stale: &AccessToken) -> Result<bool, StoreError>;

    /// Tries to take the refresh lock for `ttl`. `None` when someone else holds it.
    async fn try_lock(&self, key: &TokenKey, ttl: Duration) -> Result<Option<Lease>, StoreError>;

    /// Releases the lock if `lease` still holds it (compare-and-delete).
    async fn unlock(&self, key: &TokenKey, lease: &Lease) -> Result<(), StoreError>;

    /// Extends `lease` to `ttl` from now if it still holds the lock. Returns `false` when the
    /// lock has passed to someone else (or expired): the holder must then stop starting new
    /// upstream attempts.
    async fn renew(&self, key: &TokenKey, lease: &Lease, ttl: Duration)
        -> Result<bool, StoreError>;

    /// The token together with the fencing watermark. The default knows no watermark.
    async fn load_state(&self, key: &TokenKey) -> Result<StoreState, StoreError> {
        Ok(StoreState {
            token: self.load(key).await?,
            written: None,
        })
    }
}

#[derive(Debug, Default)]
struct Slot {
    token: Option<StoredToken>,
    /// Highest version ever written; survives invalidation so fencing keeps working.
    written: u64,
    /// Highest fence handed out.
    fence: u64,
    lock: Option<(String, i64)>,
}

/// An in-process store. Share one `Arc<MemoryStore>` between clients to share tokens
/// inside a process; use the Redis store to share across processes.
#[derive(Debug)]
pub struct MemoryStore {
    slots: Mutex<HashMap<TokenKey, Slot>>,
    clock: std::sync::Arc<dyn Clock>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::with_clock(std::sync::Arc::new(SystemClock))
    }
}

impl MemoryStore {
    /// An empty store on the system clock.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store whose lock expiry follows `clock`.
    pub fn with_clock(clock: std::sync::Arc<dyn Clock>) -> Self {
        Self {
            slots: Mutex::new(HashMap::new()),
            clock,
        }
    }

    fn with_slot<R>(&self, key: &TokenKey, f: impl FnOnce(&mut Slot) -> R) -> R {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        f(slots.entry(key.clone()).or_default())
    }
}

#[async_trait]
impl TokenStore for MemoryStore {
    async fn load(&self, key: &TokenKey) -> Result<Option<StoredToken>, StoreError> {
        Ok(self.with_slot(key, |s| s.token.clone()))
    }

    async fn store(&self, key: &TokenKey, token: &StoredToken) -> Result<bool, StoreError> {
        Ok(self.with_slot(key, |s| {
            if token.version <= s.written {
                return false;
            }
            s.written = token.version;
            s.token = Some(token.clone());
            true
        }))
    }

    async fn invalidate(&self, key: &TokenKey, stale: &AccessToken) -> Result<bool, StoreError> {
        Ok(self.with_slot(key, |s| match &s.token {
            Some(t) if t.access_token.ct_eq(stale.expose()) => {
                s.token = None;
                true
            }
            _ => false,
        }))
    }

    async fn try_lock(&self, key: &TokenKey, ttl: Duration) -> Result<Option<Lease>, StoreError> {
        let now = self.clock.now_ms();
        Ok(self.with_slot(key, |s| {
            if matches!(&s.lock, Some((_, until)) if *until > now) {
                return None;
            }
            // Never behind what was written: a lost counter cannot fence out its own holder.
            s.fence = (s.fence + 1).max(s.written + 1);
            let id = hex::encode(rand::random::<[u8; 16]>());
            s.lock = Some((id.clone(), now + ttl.as_millis() as i64));
            Some(Lease { id, fence: s.fence })
        }))
    }

    async fn unlock(&self, key: &TokenKey, lease: &Lease) -> Result<(), StoreError> {
        self.with_slot(key, |s| {
            if matches!(&s.lock, Some((id, _)) if *id == lease.id) {
                s.lock = None;
            }
        });
        Ok(())
    }

    async fn renew(
        &self,
        key: &TokenKey,
        lease: &Lease,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let now = self.clock.now_ms();
        Ok(self.with_slot(key, |s| match &mut s.lock {
            Some((id, until)) if *id == lease.id && *until > now => {
                *until = now + ttl.as_millis() as i64;
                true
            }
            _ => false,
        }))
    }

    async fn load_state(&self, key: &TokenKey) -> Result<StoreState, StoreError> {
        Ok(self.with_slot(key, |s| StoreState {
            token: s.token.clone(),
            written: Some(s.written),
        }))
    }
}
