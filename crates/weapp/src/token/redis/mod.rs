//! A [`TokenStore`] in Redis, shared by every process that uses the same Redis and prefix.
//!
//! Keys, per app and token mode (the braces are a Redis Cluster hash tag, so every key one
//! script touches lives in the same slot):
//! - `{prefix}:{<appid>:<mode>}:token` — the [`StoredToken`] as JSON with a schema version
//!   (`"v": 1`), expiring with the token;
//! - `…:written` — the highest version ever written (the fencing watermark);
//! - `…:lock` — the refresher's lease id, `SET NX PX`, renewed while its fetch runs;
//! - `…:fence` — the last fence handed out.
//!
//! Every read-modify-write is a Lua script, so it is atomic on the server.
//!
//! Faults this store is built to survive:
//! - **fence behind the watermark** (the `fence` key evicted, a failover to a replica that
//!   missed writes, a restore): a lease's fence is `max(INCR fence, written + 1, Redis time in
//!   ms)`, so its holder's write is never refused because of a lost counter;
//! - **FLUSHALL or a restart** (every key gone): the time floor keeps fences of leases taken
//!   afterwards above those taken before, so a refresher that was mid-fetch during the flush
//!   cannot overwrite a newer token;
//! - **a corrupt or foreign value** under the token key: it reads as absent (logged), and the
//!   next refresh overwrites it under the lock; a value of a newer schema than this code knows
//!   reads as absent too.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::{ErrorKind, Script};
use serde::{Deserialize, Serialize};

use super::store::{Lease, StoreState, StoredToken, TokenKey, TokenStore};
use crate::clock::{Clock, SystemClock};
use crate::error::StoreError;
use crate::observe::{RedisEvent, RedisObserver};
use crate::secret::AccessToken;

mod connection;

use connection::Link;
pub use connection::{RedisConnection, RedisTimeouts, RedisTopology};

/// The schema version written into every stored value.
pub const SCHEMA_VERSION: u32 = 1;

// Reads use `redis.pcall` and treat anything but a string as absent, so a value of the wrong
// type under one of our keys (a foreign writer, a prefix collision) cannot wedge the scripts;
// the next write replaces it.
const STORE: &str = r"
local w = redis.pcall('GET', KEYS[2])
local written = (type(w) == 'string' and tonumber(w)) or 0
if tonumber(ARGV[2]) <= written then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return 1
";

const INVALIDATE: &str = r"
local cur = redis.pcall('GET', KEYS[1])
if type(cur) ~= 'string' then return 0 end
local ok, t = pcall(cjson.decode, cur)
if ok and type(t) == 'table' and t.access_token == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
";

// TIME before a write needs effects replication, the default since Redis 5 (asked for
// explicitly on older servers). A lock key without an expiry (set by hand, PERSISTed) would
// block every refresher forever: it is taken over.
const LOCK: &str = r"
if redis.replicate_commands then pcall(redis.replicate_commands) end
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  if redis.call('PTTL', KEYS[1]) ~= -1 then return 0 end
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
local fence = redis.pcall('INCR', KEYS[2])
if type(fence) ~= 'number' then fence = 0 end
local w = redis.pcall('GET', KEYS[3])
local written = (type(w) == 'string' and tonumber(w)) or 0
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local f = math.max(fence, written + 1, now)
if f ~= fence then redis.call('SET', KEYS[2], string.format('%d', f)) end
return f
";

const UNLOCK: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
";

/// The store's scripts, in the order of the `*_SCRIPT` indexes.
const SOURCES: [&str; 5] = [STORE, INVALIDATE, LOCK, UNLOCK, RENEW];
const STORE_SCRIPT: usize = 0;
const INVALIDATE_SCRIPT: usize = 1;
const LOCK_SCRIPT: usize = 2;
const UNLOCK_SCRIPT: usize = 3;
const RENEW_SCRIPT: usize = 4;

/// The value under the token key.
#[derive(Serialize)]
struct WireOut<'a> {
    v: u32,
    #[serde(flatten)]
    token: &'a StoredToken,
}

#[derive(Deserialize)]
struct WireIn {
    /// Absent in values written before schema versions existed (same layout as version 1).
    #[serde(default)]
    v: u32,
    #[serde(flatten)]
    token: StoredToken,
}

/// Redis-backed token store. Cheap to clone; clones share one multiplexed connection that
/// reconnects on its own after Redis comes back — after a refused or reset connection (the
/// `redis` crate's connection manager) and after a command timed out (a hang: this store opens
/// a new connection in the background, see [`RedisTimeouts`]).
#[derive(Clone)]
pub struct RedisStore {
    link: Arc<Link>,
    prefix: String,
    /// The scripts of [`SOURCES`], for their hashes.
    scripts: Arc<[Script; 5]>,
    clock: Arc<dyn Clock>,
    /// Sees errors and failovers, when set ([`RedisStore::with_observer`]).
    observer: Option<Arc<dyn RedisObserver>>,
    /// Whether the last command failed for want of a connection: the next success is a
    /// connection re-established (a failover seen). Shared by clones, as the connection is.
    failing: Arc<AtomicBool>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn store_err(context: &str) -> impl FnOnce(redis::RedisError) -> StoreError + '_ {
    move |e| StoreError::new(format!("redis {context}"), Some(Box::new(e)))
}

/// Decodes a stored value; anything undecodable, or of a schema newer than ours, is absent.
fn decode(key: &str, raw: &str) -> Option<StoredToken> {
    // Year 3000 in ms: anything later is not a timestamp this code wrote.
    const LATEST: i64 = 32_503_680_000_000;
    match serde_json::from_str::<WireIn>(raw) {
        Ok(w)
            if w.v <= SCHEMA_VERSION
                && 0 < w.token.refresh_at_ms
                && w.token.refresh_at_ms <= w.token.expires_at_ms
                && w.token.expires_at_ms < LATEST =>
        {
            Some(w.token)
        }
        Ok(w) if w.v <= SCHEMA_VERSION => {
            tracing::warn!(
                key,
                "token value with implausible timestamps; treating it as absent"
            );
            None
        }
        Ok(w) => {
            tracing::warn!(
                key,
                schema = w.v,
                "token value has a newer schema than this build; treating it as absent"
            );
            None
        }
        Err(e) => {
            // Only the category and position: serde's message can quote the value, which may
            // hold a token.
            tracing::warn!(key, category = ?e.classify(), line = e.line(), column = e.column(), "undecodable token value; treating it as absent (the next refresh overwrites it)");
            None
        }
    }
}

impl RedisStore {
    /// Connects to `url` with keys under `prefix` (e.g. `weapp`). The URL names the
    /// deployment ([`RedisTopology`]):
    /// - `redis://[user:password@]host:port/db`, or `rediss://…` for TLS (the system's roots, or
    ///   `SSL_CERT_FILE`): one node;
    /// - `redis+sentinel://[user:password@]host:port,host:port/<master-name>[/db]`: the primary
    ///   the sentinels name, followed across failovers (the credentials are the data nodes';
    ///   the sentinels are asked without);
    /// - `redis+cluster://[user:password@]host:port,host:port`: a Redis Cluster (any reachable
    ///   nodes; the rest is discovered), `MOVED`/`ASK` and failovers followed. The store's keys
    ///   carry a hash tag per app, so each script's keys are in one slot.
    ///
    /// Commands time out after one second, so an unreachable or hanging Redis degrades the
    /// client to its local copy quickly instead of stalling every call.
    ///
    /// # Errors
    /// [`StoreError`] when the URL is invalid or the first connection fails. The message never
    /// contains the URL (it may carry a password).
    pub async fn connect(url: &str, prefix: impl Into<String>) -> Result<Self, StoreError> {
        Self::connect_with(url, prefix, RedisTimeouts::default()).await
    }

    /// [`RedisStore::connect`] with other timeouts than the default (1 s per command, 500 ms
    /// per connection attempt).
    ///
    /// # Errors
    /// As [`RedisStore::connect`].
    pub async fn connect_with(
        url: &str,
        prefix: impl Into<String>,
        timeouts: RedisTimeouts,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            link: Link::open(url, timeouts).await?,
            prefix: prefix.into(),
            scripts: Arc::new(SOURCES.map(Script::new)),
            clock: Arc::new(SystemClock),
            observer: None,
            failing: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Reports every command's failure, and every failover seen, to `observer` (see
    /// [`RedisEvent`]): how a service counts Redis errors without wrapping the store. Applies
    /// to this store and the clones made after.
    #[must_use]
    pub fn with_observer(mut self, observer: Arc<dyn RedisObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Tells the observer (if any) how the command `op` (a fixed name, never a key) on
    /// [`RedisStore::connection`] went: for code that runs its own commands on the shared
    /// connection, so its errors are counted with the store's.
    ///
    /// A timed-out command (`op` times out after [`RedisTimeouts::response`]; code with a
    /// shorter deadline of its own reports an [`std::io::ErrorKind::TimedOut`] error) also has
    /// the connection replaced in the background: on a hang the connection manager would keep
    /// using the dead one.
    pub fn observe<T>(&self, op: &'static str, result: &redis::RedisResult<T>) {
        if let Err(e) = result {
            if e.is_timeout() {
                self.link.replace();
            }
        }
        let Some(observer) = &self.observer else {
            return;
        };
        match result {
            Ok(_) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    observer.redis(RedisEvent::Failover);
                }
            }
            Err(e) => {
                observer.redis(RedisEvent::Error { op });
                if matches!(e.kind(), ErrorKind::ReadOnly | ErrorKind::Moved) {
                    observer.redis(RedisEvent::Failover);
                } else if e.is_io_error()
                    || e.is_timeout()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                {
                    self.failing.store(true, Ordering::Relaxed);
                }
            }
        }
    }

    /// `result` observed, its error made a [`StoreError`].
    fn checked<T>(&self, op: &'static str, result: redis::RedisResult<T>) -> Result<T, StoreError> {
        self.observe(op, &result);
        result.map_err(store_err(op))
    }

    /// The underlying connection (multiplexed, reconnecting): for an application that keeps
    /// other keys in the same Redis. Take it for each use (it is replaced after a timeout), and
    /// pass each command's result to [`RedisStore::observe`].
    pub fn connection(&self) -> RedisConnection {
        self.link.connection()
    }

    /// The deployment the store's URL named.
    pub fn topology(&self) -> RedisTopology {
        self.link.topology()
    }

    /// The timeouts the store was connected with.
    pub fn timeouts(&self) -> RedisTimeouts {
        self.link.timeouts
    }

    /// Runs the store's script `which` (an index into [`SOURCES`]) on `keys` with `args`:
    /// `EVALSHA`, and on `NOSCRIPT` (a restarted node, a replica just promoted) `EVAL` of its
    /// source on the keys' node, which also caches it there — not the `redis` crate's
    /// `SCRIPT LOAD`, which a Cluster sends to every node and which fails while any node is
    /// unreachable. Both under one deadline, [`RedisTimeouts::response`].
    async fn eval<T: redis::FromRedisValue + Send>(
        &self,
        op: &'static str,
        which: usize,
        keys: &[String],
        args: &[String],
    ) -> Result<T, StoreError> {
        let mut conn = self.connection();
        let hash = self.scripts[which].get_hash();
        let run = async {
            let mut sha = redis::cmd("EVALSHA");
            sha.arg(hash).arg(keys.len()).arg(keys).arg(args);
            match sha.query_async::<T>(&mut conn).await {
                Err(e) if e.kind() == ErrorKind::NoScriptError => {
                    let mut eval = redis::cmd("EVAL");
                    eval.arg(SOURCES[which]).arg(keys.len()).arg(keys).arg(args);
                    eval.query_async::<T>(&mut conn).await
                }
                other => other,
            }
        };
        let r = tokio::time::timeout(self.link.timeouts.response, run)
            .await
            .unwrap_or_else(|_| Err(connection::timed_out()));
        self.checked(op, r)
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Computes key lifetimes with `clock`. Pass the clock given to the client builder (the
    /// store is built separately, so it cannot know it), so a token stamped in virtual time
    /// gets the right TTL.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Checks that Redis answers.
    ///
    /// # Errors
    /// [`StoreError`] when it does not.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.connection();
        let r = redis::cmd("PING").query_async::<String>(&mut conn).await;
        self.checked("PING", r).map(|_| ())
    }

    /// The Redis key of `suffix` (`token`, `written`, `lock`, `fence`) for `key`.
    pub fn redis_key(&self, key: &TokenKey, suffix: &str) -> String {
        format!(
            "{}:{{{}:{}}}:{suffix}",
            self.prefix,
            key.appid,
            key.mode.as_str()
        )
    }
}

#[async_trait]
impl TokenStore for RedisStore {
    async fn load(&self, key: &TokenKey) -> Result<Option<StoredToken>, StoreError> {
        let mut conn = self.connection();
        let name = self.redis_key(key, "token");
        // MGET, not GET: a value of another type reads as absent instead of failing, so it
        // cannot keep the fleet in degraded mode (the next refresh overwrites it).
        let r = redis::cmd("MGET").arg(&name).query_async(&mut conn).await;
        let raw: Vec<Option<String>> = self.checked("MGET", r)?;
        Ok(raw
            .into_iter()
            .next()
            .flatten()
            .and_then(|s| decode(&name, &s)))
    }

    async fn load_state(&self, key: &TokenKey) -> Result<StoreState, StoreError> {
        let mut conn = self.connection();
        let name = self.redis_key(key, "token");
        let r = redis::cmd("MGET")
            .arg(&name)
            .arg(self.redis_key(key, "written"))
            .query_async(&mut conn)
            .await;
        let (raw, written): (Option<String>, Option<String>) = self.checked("MGET", r)?;
        Ok(StoreState {
            token: raw.and_then(|s| decode(&name, &s)),
            // An unparsable watermark is as good as lost.
            written: Some(written.and_then(|w| w.parse().ok()).unwrap_or(0)),
        })
    }

    async fn store(&self, key: &TokenKey, token: &StoredToken) -> Result<bool, StoreError> {
        let json = serde_json::to_string(&WireOut {
            v: SCHEMA_VERSION,
            token,
        })
        .map_err(|e| StoreError::new("encode token", Some(Box::new(e))))?;
        let ttl = (token.expires_at_ms - self.clock.now_ms()).max(1000);
        let keys = [self.redis_key(key, "token"), self.redis_key(key, "written")];
        let args = [json, token.version.to_string(), ttl.to_string()];
        let written: i64 = self.eval("store", STORE_SCRIPT, &keys, &args).await?;
        Ok(written == 1)
    }

    async fn invalidate(&self, key: &TokenKey, stale: &AccessToken) -> Result<bool, StoreError> {
        let keys = [self.redis_key(key, "token")];
        let args = [stale.expose().to_owned()];
        let removed: i64 = self
            .eval("invalidate", INVALIDATE_SCRIPT, &keys, &args)
            .await?;
        Ok(removed == 1)
    }

    async fn try_lock(&self, key: &TokenKey, ttl: Duration) -> Result<Option<Lease>, StoreError> {
        let id = hex::encode(rand::random::<[u8; 16]>());
        let keys = [
            self.redis_key(key, "lock"),
            self.redis_key(key, "fence"),
            self.redis_key(key, "written"),
        ];
        let args = [id.clone(), (ttl.as_millis().max(1) as u64).to_string()];
        let fence: u64 = self.eval("lock", LOCK_SCRIPT, &keys, &args).await?;
        Ok((fence > 0).then_some(Lease { id, fence }))
    }

    async fn unlock(&self, key: &TokenKey, lease: &Lease) -> Result<(), StoreError> {
        let keys = [self.redis_key(key, "lock")];
        let _: i64 = self
            .eval(
                "unlock",
                UNLOCK_SCRIPT,
                &keys,
                std::slice::from_ref(&lease.id),
            )
            .await?;
        Ok(())
    }

    async fn renew(
        &self,
        key: &TokenKey,
        lease: &Lease,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let keys = [self.redis_key(key, "lock")];
        let args = [
            lease.id.clone(),
            (ttl.as_millis().max(1) as u64).to_string(),
        ];
        let renewed: i64 = self.eval("renew", RENEW_SCRIPT, &keys, &args).await?;
        Ok(renewed == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_of_older_and_newer_schemas_and_garbage() {
        let legacy = r#"{"access_token":"A","expires_at_ms":10,"refresh_at_ms":5,"version":3}"#;
        assert_eq!(decode("k", legacy).unwrap().version, 3);
        let v1 = r#"{"v":1,"access_token":"A","expires_at_ms":10,"refresh_at_ms":5,"version":4}"#;
        assert_eq!(decode("k", v1).unwrap().version, 4);
        let v9 = r#"{"v":9,"access_token":"A","expires_at_ms":10,"refresh_at_ms":5,"version":4}"#;
        assert!(decode("k", v9).is_none());
        assert!(decode("k", "\u{0}garbage").is_none());
        assert!(decode("k", r#"{"access_token":5}"#).is_none());
        let huge = format!(
            r#"{{"access_token":"A","expires_at_ms":{},"refresh_at_ms":{},"version":4}}"#,
            i64::MAX,
            i64::MAX - 1
        );
        assert!(decode("k", &huge).is_none());
    }
}
