//! Shared server state: the store, one SDK client per app, broker callers, the data key,
//! metrics, and the background token refreshers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;
use weapp::token::redis::RedisStore;
use weapp::token::{MemoryStore, StoredToken, TokenPolicy, TokenStore};
use weapp::{AppSecret, Client, TokenManager};

use crate::config::{redact_url, Config, RateLimitBackend, Secret};
use crate::metrics::{Metrics, TokenGauge};
use crate::net::IpNet;
use crate::ratelimit::{RateLimiter, Shared};
use crate::seal::{user_aad, DataKey, Keyring};
use crate::store::{Store, StoreOptions};

/// How long the broker serves a token from memory before re-reading the shared store. Another
/// instance's refresh is picked up within this delay; WeChat's 5-minute overlap covers it.
pub const LOCAL_TOKEN_CACHE: Duration = Duration::from_secs(20);
/// How often each app's refresher checks its token.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(10);

/// One configured mini program.
#[derive(Debug)]
pub struct AppRuntime {
    /// The appid.
    pub appid: String,
    /// Its secret (checked by the WeChat-compatible mirror).
    pub secret: AppSecret,
    /// The SDK client.
    pub client: Client,
    /// The client's token manager.
    pub manager: TokenManager,
    /// (version, expires_at) of the token last seen, and when (Unix ms): the token age metric.
    seen: Mutex<Option<((u64, i64), i64)>>,
    /// Message push settings, when configured.
    pub push: Option<PushRuntime>,
    /// When this instance last let a broker report refresh the token (the fleet-wide
    /// interval lives in Redis when there is one).
    last_invalidation: Mutex<Option<(Instant, String, bool)>>,
}

/// An app's push receiver and webhook.
pub struct PushRuntime {
    /// Verifies and opens pushes (its replay memory is used when there is no Redis).
    pub receiver: weapp::push::Receiver,
    /// Where events go.
    pub webhook_url: Option<String>,
    /// Signs deliveries.
    pub webhook_secret: Option<Secret>,
}

impl std::fmt::Debug for PushRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushRuntime")
            .field("receiver", &self.receiver)
            .field(
                "webhook_url",
                &self.webhook_url.as_deref().map(crate::config::redact_url),
            )
            .field("webhook_secret", &self.webhook_secret)
            .finish()
    }
}

impl AppRuntime {
    /// The current token (from memory on the hot path), noting when a new one appears.
    ///
    /// # Errors
    /// As [`TokenManager::current`].
    pub async fn token(&self) -> weapp::Result<StoredToken> {
        let t = self.manager.current().await?;
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let id = (t.version, t.expires_at_ms);
        if seen.as_ref().is_none_or(|(s, _)| *s != id) {
            *seen = Some((id, now_ms()));
        }
        Ok(t)
    }

    fn gauge(&self) -> TokenGauge {
        let seen = *self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let now = now_ms();
        TokenGauge {
            appid: self.appid.clone(),
            refreshes: self.manager.fetch_count(),
            age_secs: seen.map(|(_, at)| (now - at) as f64 / 1000.0),
            expires_in_secs: seen.map(|((_, exp), _)| (exp - now) as f64 / 1000.0),
        }
    }
}

/// A caller of the token broker.
#[derive(Debug)]
pub struct BrokerClient {
    /// Its name.
    pub name: String,
    key_hash: [u8; 32],
    apps: Vec<String>,
    scopes: Vec<String>,
}

impl BrokerClient {
    /// May this client use `appid`?
    pub fn may_use(&self, appid: &str) -> bool {
        self.apps.iter().any(|a| a == appid)
    }

    /// Does this client hold `scope`?
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

/// Everything handlers share. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState(Arc<Inner>);

/// The shared parts (see [`AppState`]).
#[derive(Debug)]
pub struct Inner {
    /// Users and sessions.
    pub store: Arc<dyn Store>,
    /// Apps by appid.
    pub apps: HashMap<String, Arc<AppRuntime>>,
    /// Broker callers.
    pub clients: Vec<BrokerClient>,
    /// Encrypts session_keys at rest.
    pub keyring: Keyring,
    /// Shared Redis (also the token store), if configured.
    pub redis: Option<RedisStore>,
    /// Counters.
    pub metrics: Metrics,
    /// Per-IP limiter of `POST /v1/login`.
    pub login_limiter: RateLimiter,
    /// Per-session limiter of `POST /v1/me/decrypt`.
    pub decrypt_limiter: RateLimiter,
    /// Per-source limiter of failed authentications.
    pub auth_failures: RateLimiter,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// The configuration the server started with.
    pub config: Config,
    /// Wakes the outbox worker when an event is stored.
    pub outbox: tokio::sync::Notify,
    /// The last readiness answer and when it was computed.
    pub readiness: tokio::sync::Mutex<Option<(Instant, bool, serde_json::Value)>>,
    /// Pushes (app and replay key) being stored by this instance right now, when the replay
    /// memory is local: a retry arriving meanwhile is answered 503, not refused as a replay.
    pub pushes_in_flight: Mutex<std::collections::HashSet<String>>,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// Refuses a sandbox database outside `--sandbox` and the reverse, marking a fresh database.
async fn check_sandbox_marker(store: &dyn Store, sandbox: bool) -> Result<(), String> {
    let err = |e: crate::store::StoreError| e.to_string();
    let wanted = if sandbox { "sandbox" } else { "service" };
    let mode = store.meta_get("mode").await.map_err(err)?;
    match mode.as_deref() {
        Some(m) if m == wanted => Ok(()),
        Some("sandbox") => Err("this database was created by `weapp serve --sandbox` (simulated users, a data key kept inside it); point database_url at another database".into()),
        Some(_) => Err("--sandbox refuses a database that is not a sandbox one (it holds real users); use another database_url".into()),
        None if sandbox && store.has_data().await.map_err(err)? => Err("--sandbox refuses a database that is not a sandbox one (it holds real users); use another database_url".into()),
        None => {
            store.meta_get_or_insert("mode", wanted).await.map_err(err)?;
            Ok(())
        }
    }
}

/// The data keys, checked against what they sealed: every key id stored with the data must be
/// in the ring, and values of the first format must open (they are re-sealed, bound to their
/// row). Without a configured key, a generated one kept in the database — only where allowed.
async fn open_keyring(store: &dyn Store, config: &Config) -> Result<Keyring, String> {
    let err = |e: crate::store::StoreError| e.to_string();
    let mut keys = config
        .data_key_list()
        .iter()
        .map(|k| DataKey::from_base64(k.expose()))
        .collect::<Result<Vec<_>, _>>()?;
    let stored = store.meta_get("data_key").await.map_err(err)?;
    if keys.is_empty() {
        if !(config.sandbox || config.allow_generated_data_key) {
            return Err("no data key: set WEAPP_DATA_KEY (base64 of 32 random bytes, e.g. `openssl rand -base64 32`), or allow_generated_data_key = true to keep a generated key in the database, beside the data it protects".into());
        }
        if !config.sandbox {
            tracing::warn!("no data key configured: using one generated and kept in the database (allow_generated_data_key); set WEAPP_DATA_KEY in production");
        }
        let k = store
            .meta_get_or_insert("data_key", &DataKey::generate_base64())
            .await
            .map_err(err)?;
        keys.push(DataKey::from_base64(&k)?);
    } else if let Some(k) = stored {
        // A key generated by an earlier run opens what it sealed until those users log in again.
        let generated = DataKey::from_base64(&k)?;
        if !keys.iter().any(|c| c.id() == generated.id()) {
            keys.push(generated);
        }
    }
    let ring = Keyring::new(keys)?;
    let known = ring.ids();
    for id in store
        .data_key_ids()
        .await
        .map_err(err)?
        .into_iter()
        .flatten()
    {
        if !known.contains(&id) {
            return Err(format!(
                "session keys in the database were sealed with data key {id}, which is not configured (configured: {}); keep it in data_keys, after the newest key",
                known.join(", ")
            ));
        }
    }
    // Values of the first format are re-sealed once, at the first start of this version; after
    // that one is a forgery (an old blob copied into another row) and the start is refused.
    let resealing_done = store
        .meta_get("legacy_resealed")
        .await
        .map_err(err)?
        .is_some();
    let mut resealed = 0u64;
    loop {
        let batch = store.legacy_sealed(500).await.map_err(err)?;
        if batch.is_empty() {
            break;
        }
        if resealing_done {
            return Err(format!(
                "user {} holds a session key in the first sealing format, but this database was converted already: the row was tampered with (restore it, or delete the user)",
                batch[0].id
            ));
        }
        for row in batch {
            let Some(plain) = ring.open_legacy(&row.session_key_enc) else {
                return Err(format!(
                    "a stored session key (user {}) does not open with any configured data key: the key is wrong or missing",
                    row.id
                ));
            };
            let sealed = ring.seal(&plain, &user_aad(&row.appid, &row.openid));
            store
                .reseal(row.id, &sealed, &ring.current_id())
                .await
                .map_err(err)?;
            resealed += 1;
        }
    }
    if resealed > 0 {
        tracing::info!(
            resealed,
            "session keys of the first format re-sealed, bound to their rows"
        );
    }
    if !resealing_done {
        store
            .meta_get_or_insert("legacy_resealed", "1")
            .await
            .map_err(err)?;
    }
    tracing::info!(data_keys = ?known, "data keys verified");
    Ok(ring)
}

/// The hex SHA-256 of a token (what the invalidation interval remembers).
fn token_digest(token: &weapp::AccessToken) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(token.expose().as_bytes()))
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl AppState {
    /// Checks the configuration, connects the database (migrating it) and Redis, verifies the
    /// data keys against the stored data, and builds one client per app.
    ///
    /// # Errors
    /// A message naming what could not be set up (never a secret).
    pub async fn build(config: Config) -> Result<Self, String> {
        config.validate().map_err(|e| e.to_string())?;
        let options = StoreOptions {
            pool_size: config.database_pool_size,
            acquire_timeout: Duration::from_millis(config.database_acquire_timeout_ms),
            sqlite_full_sync: config.sqlite_synchronous == crate::config::SqliteSync::Full,
        };
        let store = crate::store::connect(&config.database_url, &options)
            .await
            .map_err(|e| format!("database {}: {e}", redact_url(&config.database_url)))?;
        if !store.durable_commits().await.map_err(|e| e.to_string())? {
            tracing::warn!(database = store.kind(), "commits are not synchronous: an acknowledged push can be lost on power failure (sqlite_synchronous = \"full\" prevents it)");
        }
        check_sandbox_marker(store.as_ref(), config.sandbox).await?;
        let keyring = open_keyring(store.as_ref(), &config).await?;
        let redis = match &config.redis_url {
            Some(url) => Some(
                RedisStore::connect(url, config.redis_prefix.clone())
                    .await
                    .map_err(|e| format!("redis at {}: {e}", redact_url(url)))?,
            ),
            None => None,
        };
        let shared_limits = match (&redis, config.rate_limit_backend) {
            (Some(r), RateLimitBackend::Redis) => {
                Some(Shared::new(r.connection(), config.redis_prefix.clone()))
            }
            _ => None,
        };
        let token_store: Arc<dyn TokenStore> = match &redis {
            Some(r) => Arc::new(r.clone()),
            None => Arc::new(MemoryStore::new()),
        };
        let mut apps = HashMap::new();
        for app in &config.apps {
            let secret = app.resolve_secret().map_err(|e| e.to_string())?;
            let client = Client::builder(&app.appid, secret.clone())
                .base_url(&app.api_base)
                .token_mode(app.token_mode)
                .token_store(token_store.clone())
                .token_policy(TokenPolicy {
                    local_cache: LOCAL_TOKEN_CACHE,
                    ..TokenPolicy::default()
                })
                .build()
                .map_err(|e| format!("app {}: {e}", app.appid))?;
            let manager = client.token_manager().expect("built-in manager").clone();
            let push = match &app.push {
                Some(p) => {
                    let mode = p
                        .effective_mode()
                        .map_err(|e| format!("app {}: push: {e}", app.appid))?;
                    if mode == weapp::push::PushMode::Plain {
                        tracing::warn!(appid = %app.appid, "push mode is plain: pushes are signed over a timestamp and a nonce only, not their body; anyone who sees one push URL can forge messages until the replay window closes. Use safe mode in production.");
                    }
                    let push_config = weapp::push::PushConfig::new(
                        &app.appid,
                        p.token.expose(),
                        p.encoding_aes_key.as_ref().map(Secret::expose),
                    )
                    .and_then(|c| c.with_mode(mode))
                    .map_err(|e| format!("app {}: push: {e}", app.appid))?;
                    Some(PushRuntime {
                        receiver: weapp::push::Receiver::new(push_config)
                            .with_replay_protection(p.replay_window_secs),
                        webhook_url: p.webhook_url.clone(),
                        webhook_secret: p.webhook_secret.clone(),
                    })
                }
                None => None,
            };
            apps.insert(
                app.appid.clone(),
                Arc::new(AppRuntime {
                    appid: app.appid.clone(),
                    secret,
                    client,
                    manager,
                    seen: Mutex::new(None),
                    push,
                    last_invalidation: Mutex::new(None),
                }),
            );
        }
        let clients = config
            .clients
            .iter()
            .map(|c| {
                Ok(BrokerClient {
                    name: c.name.clone(),
                    key_hash: c.resolve_key_hash().map_err(|e| e.to_string())?,
                    apps: c.apps.clone(),
                    scopes: c.resolved_scopes().map_err(|e| e.to_string())?,
                })
            })
            .collect::<Result<_, String>>()?;
        let trusted_proxies = config.trusted_proxy_nets().map_err(|e| e.to_string())?;
        let max_keys = config.rate_limit_max_keys;
        Ok(AppState(Arc::new(Inner {
            store,
            apps,
            clients,
            keyring,
            redis,
            metrics: Metrics::default(),
            login_limiter: RateLimiter::new("login", config.login_rate_limit_per_minute, max_keys)
                .shared(shared_limits.clone()),
            decrypt_limiter: RateLimiter::new(
                "decrypt",
                config.decrypt_rate_limit_per_minute,
                max_keys,
            )
            .shared(shared_limits.clone()),
            auth_failures: RateLimiter::new(
                "authfail",
                config.auth_failure_limit_per_minute,
                max_keys,
            )
            .shared(shared_limits),
            trusted_proxies,
            config,
            outbox: tokio::sync::Notify::new(),
            readiness: tokio::sync::Mutex::new(None),
            pushes_in_flight: Mutex::new(std::collections::HashSet::new()),
        })))
    }

    /// The configured app, if any.
    pub fn app(&self, appid: &str) -> Option<&Arc<AppRuntime>> {
        self.apps.get(appid)
    }

    /// May a broker report that `token` failed refresh `app`'s token now? One token per
    /// `invalidate_min_interval_secs` per app is refreshed on reports — fleet-wide through Redis
    /// when there is one, per instance otherwise (and while Redis is unreachable). Reports of
    /// the token being refreshed right now (a storm of 40001s about one token) all pass: they are
    /// one incident, and the store's compare-and-swap refreshes it once. Once that refresh is
    /// [done](AppState::invalidation_done), the same token is not refreshed again within the
    /// interval either — with stable tokens WeChat may hand the very same token back.
    pub async fn invalidation_permit(&self, app: &AppRuntime, token: &weapp::AccessToken) -> bool {
        let interval = Duration::from_secs(self.config.invalidate_min_interval_secs);
        if interval.is_zero() {
            return true;
        }
        let digest = token_digest(token);
        if let Some(redis) = &self.redis {
            let key = format!("{}:invalidate:{}", redis.prefix(), app.appid);
            let mut conn = redis.connection();
            let script = redis::Script::new(
                "local v = redis.call('GET', KEYS[1]) \
                 if not v then redis.call('SET', KEYS[1], ARGV[1] .. ':pending', 'PX', ARGV[2]) return 1 end \
                 if v == ARGV[1] .. ':pending' then return 1 end \
                 return 0",
            );
            let granted: redis::RedisResult<i64> = script
                .key(&key)
                .arg(&digest)
                .arg(interval.as_millis() as u64)
                .invoke_async(&mut conn)
                .await;
            match granted {
                Ok(g) => return g == 1,
                Err(e) => {
                    tracing::warn!(appid = %app.appid, error = %e, "redis unavailable for the invalidation interval; using this instance's")
                }
            }
        }
        let mut last = app
            .last_invalidation
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match &*last {
            Some((at, d, done)) if at.elapsed() < interval => *d == digest && !done,
            _ => {
                *last = Some((Instant::now(), digest, false));
                true
            }
        }
    }

    /// Records that the refresh a report of `token` was permitted for has happened: further
    /// reports of that token within the interval are throttled.
    pub async fn invalidation_done(&self, app: &AppRuntime, token: &weapp::AccessToken) {
        let digest = token_digest(token);
        if let Some(redis) = &self.redis {
            let key = format!("{}:invalidate:{}", redis.prefix(), app.appid);
            let mut conn = redis.connection();
            let script = redis::Script::new(
                "if redis.call('GET', KEYS[1]) == ARGV[1] .. ':pending' then \
                   redis.call('SET', KEYS[1], ARGV[1] .. ':done', 'KEEPTTL') end \
                 return 0",
            );
            let done: redis::RedisResult<i64> =
                script.key(&key).arg(&digest).invoke_async(&mut conn).await;
            if let Err(e) = done {
                tracing::warn!(appid = %app.appid, error = %e, "could not record a finished invalidation");
            }
        }
        let mut last = app
            .last_invalidation
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some((_, d, done)) = last.as_mut() {
            if *d == digest {
                *done = true;
            }
        }
    }

    /// The broker client whose key hashes to `key`'s SHA-256. Every client is compared, in
    /// constant time, so the answer's timing does not reveal which prefix matched.
    pub fn broker_client(&self, key: &str) -> Option<&BrokerClient> {
        use sha2::{Digest, Sha256};
        let hash: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let mut found = None;
        for c in &self.clients {
            if bool::from(c.key_hash.ct_eq(&hash)) {
                found = Some(c);
            }
        }
        found
    }

    /// Token facts for `/metrics`.
    pub fn token_gauges(&self) -> Vec<TokenGauge> {
        let mut g: Vec<TokenGauge> = self.apps.values().map(|a| a.gauge()).collect();
        g.sort_by(|a, b| a.appid.cmp(&b.appid));
        g
    }

    /// Starts one refresher per app: the SDK's background refresher keeps the token fresh
    /// ahead of expiry (one refresher fleet-wide thanks to the store's lease, jittered across
    /// apps), so broker reads never wait on WeChat while a valid token exists; a watcher
    /// re-reads the token every [`REFRESH_INTERVAL`] for the metrics and records failures.
    /// They stop when `shutdown` flips to true.
    pub fn spawn_refreshers(
        &self,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        self.apps
            .values()
            .map(|app| {
                let app = app.clone();
                let state = self.clone();
                let mut shutdown = shutdown.clone();
                tokio::spawn(async move {
                    let refresher = app.manager.start_refresher();
                    loop {
                        match app.token().await {
                            Ok(_) => {}
                            Err(e) => {
                                state.metrics.upstream_error(
                                    &app.appid,
                                    e.errcode().map_or(-2, |c| c.code()),
                                );
                                tracing::warn!(appid = %app.appid, error = %e, "token unavailable");
                            }
                        }
                        tokio::select! {
                            () = tokio::time::sleep(REFRESH_INTERVAL) => {}
                            _ = shutdown.changed() => break,
                        }
                        if *shutdown.borrow() {
                            break;
                        }
                    }
                    refresher.stop().await;
                    tracing::debug!(appid = %app.appid, "token refresher stopped");
                })
            })
            .collect()
    }
}
