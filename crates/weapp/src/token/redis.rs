//! A [`TokenStore`] in Redis, shared by every process that uses the same Redis and prefix.
//!
//! Keys, per app and token mode (the braces are a Redis Cluster hash tag, so every key one
//! script touches lives in the same slot):
//! - `{prefix}:{<appid>:<mode>}:token` — the [`StoredToken`] as JSON, expiring with the token;
//! - `…:written` — the highest version ever written (the fencing watermark);
//! - `…:lock` — the refresher's lease id, `SET NX PX`;
//! - `…:fence` — a counter `INCR`ed for every lease.
//!
//! Every read-modify-write is a Lua script, so it is atomic on the server.

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;

use super::store::{Lease, StoredToken, TokenKey, TokenStore};
use crate::error::StoreError;
use crate::secret::AccessToken;

const STORE: &str = r"
local written = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[2]) <= written then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return 1
";

const INVALIDATE: &str = r"
local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
if cjson.decode(cur).access_token == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
";

const LOCK: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return redis.call('INCR', KEYS[2])
end
return 0
";

const UNLOCK: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// Redis-backed token store. Cheap to clone; clones share one multiplexed connection that
/// reconnects on its own after Redis comes back.
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    prefix: String,
    scripts: std::sync::Arc<[Script; 4]>,
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

impl RedisStore {
    /// Connects to `url` (`redis://host:port/db`) with keys under `prefix` (e.g. `weapp`).
    ///
    /// Operations time out after one second, so an unreachable Redis degrades the client to
    /// its local copy quickly instead of stalling every call.
    ///
    /// # Errors
    /// [`StoreError`] when the URL is invalid or the first connection fails.
    pub async fn connect(url: &str, prefix: impl Into<String>) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(store_err("url"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_millis(500))
            .set_response_timeout(Duration::from_secs(1))
            .set_number_of_retries(1)
            .set_max_delay(200);
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(store_err("connect"))?;
        Ok(Self {
            conn,
            prefix: prefix.into(),
            scripts: std::sync::Arc::new([
                Script::new(STORE),
                Script::new(INVALIDATE),
                Script::new(LOCK),
                Script::new(UNLOCK),
            ]),
        })
    }

    /// Checks that Redis answers.
    ///
    /// # Errors
    /// [`StoreError`] when it does not.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(|_| ())
            .map_err(store_err("PING"))
    }

    fn key(&self, key: &TokenKey, suffix: &str) -> String {
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
        let mut conn = self.conn.clone();
        let raw: Option<String> = redis::cmd("GET")
            .arg(self.key(key, "token"))
            .query_async(&mut conn)
            .await
            .map_err(store_err("GET"))?;
        raw.map(|s| {
            serde_json::from_str(&s)
                .map_err(|e| StoreError::new("corrupt token value in redis", Some(Box::new(e))))
        })
        .transpose()
    }

    async fn store(&self, key: &TokenKey, token: &StoredToken) -> Result<bool, StoreError> {
        let json = serde_json::to_string(token)
            .map_err(|e| StoreError::new("encode token", Some(Box::new(e))))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let ttl = (token.expires_at_ms - now).max(1000);
        let mut conn = self.conn.clone();
        let written: i64 = self.scripts[0]
            .key(self.key(key, "token"))
            .key(self.key(key, "written"))
            .arg(json)
            .arg(token.version)
            .arg(ttl)
            .invoke_async(&mut conn)
            .await
            .map_err(store_err("store"))?;
        Ok(written == 1)
    }

    async fn invalidate(&self, key: &TokenKey, stale: &AccessToken) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let removed: i64 = self.scripts[1]
            .key(self.key(key, "token"))
            .arg(stale.expose())
            .invoke_async(&mut conn)
            .await
            .map_err(store_err("invalidate"))?;
        Ok(removed == 1)
    }

    async fn try_lock(&self, key: &TokenKey, ttl: Duration) -> Result<Option<Lease>, StoreError> {
        let id = hex::encode(rand::random::<[u8; 16]>());
        let mut conn = self.conn.clone();
        let fence: u64 = self.scripts[2]
            .key(self.key(key, "lock"))
            .key(self.key(key, "fence"))
            .arg(&id)
            .arg(ttl.as_millis() as u64)
            .invoke_async(&mut conn)
            .await
            .map_err(store_err("lock"))?;
        Ok((fence > 0).then_some(Lease { id, fence }))
    }

    async fn unlock(&self, key: &TokenKey, lease: &Lease) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: i64 = self.scripts[3]
            .key(self.key(key, "lock"))
            .arg(&lease.id)
            .invoke_async(&mut conn)
            .await
            .map_err(store_err("unlock"))?;
        Ok(())
    }
}
