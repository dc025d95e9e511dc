//! Shared server state: the store, the registry of apps (one SDK client each) and broker
//! callers, administrators, the data key and metrics.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;
use weapp::token::redis::RedisStore;
use weapp::token::{MemoryStore, StoredToken, TokenPolicy, TokenStore};
use weapp::{AppSecret, Client, TokenManager};

use crate::config::{redact_url, AppConfig, Config, RateLimitBackend, Secret, WarmPolicy};
use crate::metrics::{Metrics, TokenGauge};
use crate::net::IpNet;
use crate::platform::PlatformRuntime;
use crate::ratelimit::{RateLimiter, Shared};
use crate::registry::{app_aad, AppEntry, AppSecrets, AppSettings, ClientEntry, Registry, Source};
use crate::seal::{user_aad, DataKey, Keyring};
use crate::store::{
    ManagedAppRecord, ManagedClientRecord, ManagedPlatformRecord, PlatformAuthorizer, Store,
    StoreOptions,
};

mod errors;
pub use errors::{ReconcileError, RuntimeError, SealError, StartError, SyncError};

/// How long the broker serves a token from memory before re-reading the shared store. Another
/// instance's refresh is picked up within this delay; WeChat's 5-minute overlap covers it.
pub const LOCAL_TOKEN_CACHE: Duration = Duration::from_secs(20);

/// The same without Redis: the token store is in this process and only its own managers write
/// it, so the copy in memory is never behind.
pub const SINGLE_INSTANCE_TOKEN_CACHE: Duration = Duration::from_secs(3600);

/// What building an app's runtime needs: the shared token store, one HTTP client for every
/// app (one connection pool, not ten thousand), and whether a fleet refreshes the tokens.
#[derive(Clone, Debug)]
pub struct RuntimeDeps {
    /// Where tokens are cached and locked.
    pub token_store: Arc<dyn TokenStore>,
    /// The HTTP client every app's SDK client uses.
    pub http: reqwest::Client,
    /// Whether one instance of a fleet refreshes each app (callers elsewhere leave due tokens
    /// to it).
    pub fleet: bool,
    /// How often a background refresher looks at its token.
    pub refresher_poll: Duration,
    /// The clock of token expiry (`None`: the system clock).
    pub clock: Option<Arc<dyn weapp::clock::Clock>>,
}

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
    /// Settles suspicions that its token died upstream (mirror refetches, throttled reports).
    pub probe: crate::token_probe::TokenProbe,
    /// When its token is kept fresh.
    pub warm: WarmPolicy,
    /// Whether logins get signed access tokens (JWT).
    pub access_tokens: bool,
    /// For a merchant's mini program: the third-party platform acting for it (its tokens are
    /// authorizer tokens, its users log in through the platform).
    pub platform: Option<String>,
    /// When this instance last served it (Unix ms; 0: never).
    last_used_ms: AtomicI64,
}

/// An app's push receiver and webhook.
pub struct PushRuntime {
    /// Verifies and opens pushes (its replay memory is used when there is no Redis). A
    /// platform's merchants share the platform's: their pushes are signed with one key.
    pub receiver: Arc<weapp::push::Receiver>,
    /// Whose pushes a replay is looked for among: the app's own (`None`), or every merchant's
    /// of a platform (its component appid) — a push captured at one merchant's URL is a replay
    /// at another's.
    pub replay_scope: Option<String>,
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
                &self
                    .webhook_url
                    .as_deref()
                    .map(crate::config::redact_webhook_url),
            )
            .field("webhook_secret", &self.webhook_secret)
            .finish()
    }
}

impl AppRuntime {
    /// Builds the SDK client and push receiver of `app`.
    ///
    /// # Errors
    /// Settings the SDK refuses, or incomplete push settings, naming the app (never a secret).
    pub fn build(
        app: &AppConfig,
        secret: AppSecret,
        warm: WarmPolicy,
        deps: &RuntimeDeps,
    ) -> Result<Self, RuntimeError> {
        let mut builder = Client::builder(&app.appid, secret.clone())
            .base_url(&app.api_base)
            .http_client(deps.http.clone())
            .token_mode(app.token_mode)
            .token_store(deps.token_store.clone())
            .token_policy(TokenPolicy {
                // Without Redis the store is this process's memory, written only through
                // these managers (which keep their copy in step): nothing to re-read.
                local_cache: if deps.fleet {
                    LOCAL_TOKEN_CACHE
                } else {
                    SINGLE_INSTANCE_TOKEN_CACHE
                },
                refresher_poll: deps.refresher_poll,
                ..TokenPolicy::default()
            });
        if let Some(clock) = &deps.clock {
            builder = builder.clock(clock.clone());
        }
        let client = builder.build().map_err(|source| RuntimeError::Client {
            appid: app.appid.clone(),
            source,
        })?;
        let manager = client.token_manager().expect("built-in manager").clone();
        manager.leave_refresh_to_others(deps.fleet);
        let push = match &app.push {
            Some(p) => {
                let mode = p
                    .effective_mode()
                    .map_err(|source| RuntimeError::PushSettings {
                        appid: app.appid.clone(),
                        source,
                    })?;
                if mode == weapp::push::PushMode::Plain {
                    tracing::warn!(appid = %app.appid, "push mode is plain: pushes are signed over a timestamp and a nonce only, not their body; anyone who sees one push URL can forge messages until the replay window closes. Use safe mode in production.");
                }
                let push_config = weapp::push::PushConfig::new(
                    &app.appid,
                    p.token.expose(),
                    p.encoding_aes_key.as_ref().map(Secret::expose),
                )
                .and_then(|c| c.with_mode(mode))
                .map_err(|source| RuntimeError::Push {
                    appid: app.appid.clone(),
                    source,
                })?;
                Some(PushRuntime {
                    receiver: Arc::new(
                        weapp::push::Receiver::new(push_config)
                            .with_replay_protection(p.replay_window_secs),
                    ),
                    replay_scope: None,
                    webhook_url: p.webhook_url.clone(),
                    webhook_secret: p.webhook_secret.clone(),
                })
            }
            None => None,
        };
        Ok(Self {
            appid: app.appid.clone(),
            secret,
            client,
            manager,
            seen: Mutex::new(None),
            push,
            last_invalidation: Mutex::new(None),
            probe: Default::default(),
            warm,
            access_tokens: app.access_tokens,
            platform: None,
            last_used_ms: AtomicI64::new(0),
        })
    }

    /// The runtime of a merchant's mini program that authorized `component`: its client's
    /// tokens are authorizer tokens (one manager per merchant), no secret (the mirror refuses
    /// it), no push receiver of its own.
    ///
    /// # Errors
    /// An appid the SDK refuses.
    pub fn for_authorizer(
        platform: &PlatformRuntime,
        authorizer_appid: &str,
        warm: WarmPolicy,
        fleet: bool,
    ) -> Result<Self, RuntimeError> {
        let component = &platform.component;
        // Its pushes come to the platform's message URL, signed and encrypted with the
        // platform's Token and key, bound to the platform's appid (safe mode, XML): one
        // receiver, one replay memory, for all of the platform's merchants.
        let push = Some(PushRuntime {
            receiver: platform.merchant_pushes.clone(),
            replay_scope: Some(platform.config.component_appid.clone()),
            webhook_url: platform.config.webhook_url.clone(),
            webhook_secret: platform.config.webhook_secret.clone(),
        });
        let manager = component
            .authorizer_manager(authorizer_appid)
            .map_err(RuntimeError::Merchant)?;
        // In a fleet, the shard holder's refresher refreshes it; the others read.
        manager.leave_refresh_to_others(fleet);
        let client = component
            .authorizer(authorizer_appid)
            .map_err(RuntimeError::Merchant)?;
        Ok(Self {
            appid: authorizer_appid.to_owned(),
            secret: AppSecret::new(String::new()),
            client,
            manager,
            seen: Mutex::new(None),
            push,
            last_invalidation: Mutex::new(None),
            probe: Default::default(),
            warm,
            access_tokens: true,
            platform: Some(component.appid().to_owned()),
            last_used_ms: AtomicI64::new(0),
        })
    }

    /// Notes that the app is being used (the `on_use` warm policy keeps used apps warm).
    pub fn touch(&self) {
        self.last_used_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// When this instance last served the app (Unix ms; 0: never).
    pub fn last_used_ms(&self) -> i64 {
        self.last_used_ms.load(Ordering::Relaxed)
    }

    /// (version, expires_at) of the token last seen, and since when (Unix ms).
    pub fn seen(&self) -> Option<((u64, i64), i64)> {
        *self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current token (from memory on the hot path), noting when a new one appears.
    ///
    /// # Errors
    /// As [`TokenManager::current`].
    pub async fn token(&self) -> weapp::Result<StoredToken> {
        self.touch();
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

/// What [`AppState::reconcile_platform`] changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reconciled {
    /// Merchants whose refresh token was restored from the list.
    pub restored: usize,
    /// Merchants de-authorized because the list no longer has them.
    pub deauthorized: usize,
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
    /// A client of `apps` (`"*"`: every app) with `scopes`.
    pub fn new(name: String, key_hash: [u8; 32], apps: Vec<String>, scopes: Vec<String>) -> Self {
        Self {
            name,
            key_hash,
            apps,
            scopes,
        }
    }

    /// May this client use `appid`?
    pub fn may_use(&self, appid: &str) -> bool {
        self.apps.iter().any(|a| a == appid || a == "*")
    }

    /// The apps it may use (`"*"`: every app).
    pub fn apps(&self) -> &[String] {
        &self.apps
    }

    /// Its scopes.
    pub fn scopes(&self) -> &[String] {
        &self.scopes
    }

    /// The SHA-256 of its key.
    pub(crate) fn key_hash(&self) -> [u8; 32] {
        self.key_hash
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
    /// Records logins in batches (group commit).
    pub login_writer: crate::logins::LoginWriter,
    /// Apps and broker callers, from the file and the database.
    pub registry: Registry,
    /// What app runtimes are built with.
    pub deps: RuntimeDeps,
    /// Administrators: name and key hash.
    pub admins: Vec<(String, [u8; 32])>,
    /// This instance's id in the fleet.
    pub instance_id: String,
    /// What the fleet task last reported.
    fleet_status: Mutex<crate::fleet::FleetStatus>,
    /// Registry syncs one at a time.
    registry_sync: tokio::sync::Mutex<()>,
    /// The served platforms changed and their merchants have not all been re-read since (a
    /// sync that failed half-way leaves it set, so the next one re-reads them all).
    platforms_dirty: std::sync::atomic::AtomicBool,
    /// The access-token signing keys (a snapshot of the database's).
    signing: Mutex<Arc<crate::jwt::SigningKeys>>,
    /// Third-party platforms served (the file's and the admin API's), by component appid.
    platforms: RwLock<std::collections::HashMap<String, Arc<PlatformRuntime>>>,
    /// Where platforms keep tickets and refresh tokens.
    platform_store: Arc<crate::platform::DbPlatformStore>,
    /// Per-admin limiter of the admin API.
    pub admin_limiter: RateLimiter,
    /// Tokens fetched per app on this instance: (Beijing day, count that day, the manager's
    /// fetch count when last looked at).
    fetches: Mutex<std::collections::HashMap<String, (i64, u64, u64)>>,
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
    /// Per-user limiter of `POST /v1/me/phone` (each call asks WeChat with the app's token).
    pub phone_limiter: RateLimiter,
    /// Per-source limiter of failed authentications.
    pub auth_failures: RateLimiter,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Where webhooks and API hosts may point (`webhook_allow_private`), and the resolver
    /// their names go through: the admin API checks new targets with it, the outbox sends
    /// with a client that resolves through it.
    pub egress: crate::egress::Egress,
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
async fn check_sandbox_marker(store: &dyn Store, sandbox: bool) -> Result<(), StartError> {
    let wanted = if sandbox { "sandbox" } else { "service" };
    let mode = store.meta_get("mode").await?;
    match mode.as_deref() {
        Some(m) if m == wanted => Ok(()),
        Some("sandbox") => Err(StartError::SandboxDatabase),
        Some(_) => Err(StartError::NotSandboxDatabase),
        None if sandbox && store.has_data().await? => Err(StartError::NotSandboxDatabase),
        None => {
            store.meta_get_or_insert("mode", wanted).await?;
            Ok(())
        }
    }
}

/// The data keys, checked against what they sealed: every key id stored with the data must be
/// in the ring, and values of the first format must open (they are re-sealed, bound to their
/// row). Without a configured key, a generated one kept in the database — only where allowed.
async fn open_keyring(store: &dyn Store, config: &Config) -> Result<Keyring, StartError> {
    let mut keys = config
        .data_key_list()
        .iter()
        .map(|k| DataKey::from_base64(k.expose()))
        .collect::<Result<Vec<_>, _>>()?;
    let stored = store.meta_get("data_key").await?;
    if keys.is_empty() {
        if !(config.sandbox || config.allow_generated_data_key) {
            return Err(StartError::NoDataKey);
        }
        if !config.sandbox {
            tracing::warn!("no data key configured: using one generated and kept in the database (allow_generated_data_key); set WEAPP_DATA_KEY in production");
        }
        let k = store
            .meta_get_or_insert("data_key", &DataKey::generate_base64())
            .await?;
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
    for id in store.data_key_ids().await?.into_iter().flatten() {
        if !known.contains(&id) {
            return Err(StartError::DataKeyMissing {
                id,
                configured: known,
            });
        }
    }
    // Values of the first format are re-sealed once, at the first start of this version; after
    // that one is a forgery (an old blob copied into another row) and the start is refused.
    let resealing_done = store.meta_get("legacy_resealed").await?.is_some();
    let mut resealed = 0u64;
    loop {
        let batch = store.legacy_sealed(500).await?;
        if batch.is_empty() {
            break;
        }
        if resealing_done {
            return Err(StartError::LegacyTampered { user: batch[0].id });
        }
        for row in batch {
            let Some(plain) = ring.open_legacy(&row.session_key_enc) else {
                return Err(StartError::SessionKeyUnopenable { user: row.id });
            };
            let sealed = ring.seal(&plain, &user_aad(&row.appid, &row.openid));
            store.reseal(row.id, &sealed, &ring.current_id()).await?;
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
        store.meta_get_or_insert("legacy_resealed", "1").await?;
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
    /// What could not be set up — the configuration, the database, the data keys, Redis, an
    /// app — named in the message (never a secret).
    pub async fn build(config: Config) -> Result<Self, StartError> {
        config.validate()?;
        let egress = config.egress()?;
        config.check_targets(&egress).await?;
        let options = StoreOptions {
            pool_size: config.database_pool_size,
            acquire_timeout: Duration::from_millis(config.database_acquire_timeout_ms),
            sqlite_full_sync: config.sqlite_synchronous == crate::config::SqliteSync::Full,
        };
        let store = crate::store::connect(&config.database_url, &options)
            .await
            .map_err(|source| StartError::DatabaseOpen {
                url: redact_url(&config.database_url),
                source,
            })?;
        if !store.durable_commits().await? {
            tracing::warn!(database = store.kind(), "commits are not synchronous: an acknowledged push can be lost on power failure (sqlite_synchronous = \"full\" prevents it)");
        }
        check_sandbox_marker(store.as_ref(), config.sandbox).await?;
        let keyring = open_keyring(store.as_ref(), &config).await?;
        let redis = match &config.redis_url {
            Some(url) => Some(
                RedisStore::connect(url, config.redis_prefix.clone())
                    .await
                    .map_err(|source| StartError::Redis {
                        url: redact_url(url),
                        source,
                    })?,
            ),
            None => None,
        };
        let admin_shared = match (&redis, config.rate_limit_backend) {
            (Some(r), RateLimitBackend::Redis) => {
                Some(Shared::new(r.connection(), config.redis_prefix.clone()))
            }
            _ => None,
        };
        let shared_limits = match (&redis, config.rate_limit_backend) {
            (Some(r), RateLimitBackend::Redis) => {
                Some(Shared::new(r.connection(), config.redis_prefix.clone()))
            }
            _ => None,
        };
        let token_store: Arc<dyn TokenStore> = match (&redis, &config.clock) {
            (Some(r), Some(c)) => Arc::new(r.clone().with_clock(c.clone())),
            (Some(r), None) => Arc::new(r.clone()),
            (None, Some(c)) => Arc::new(MemoryStore::with_clock(c.clone())),
            (None, None) => Arc::new(MemoryStore::new()),
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(5))
            // WeChat never redirects: a redirect could only lead a checked `api_base` to a
            // host that was not checked (a metadata service, say).
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("weapp-server/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(StartError::HttpClient)?;
        let deps = RuntimeDeps {
            token_store,
            http,
            fleet: redis.is_some(),
            refresher_poll: Duration::from_millis(config.refresher_poll_ms),
            clock: config.clock.clone(),
        };
        // Third-party platforms: tickets and refresh tokens in the database.
        let platform_store = Arc::new(crate::platform::DbPlatformStore::new(
            store.clone(),
            keyring.clone(),
        ));
        let mut platforms = std::collections::HashMap::new();
        for p in &config.platforms {
            let secret = p.resolve_secret()?;
            let runtime = PlatformRuntime::build(
                p.clone(),
                &secret,
                &deps,
                platform_store.clone(),
                Source::File,
            )?;
            platforms.insert(p.component_appid.clone(), Arc::new(runtime));
        }
        let registry = Registry::default();
        for app in &config.apps {
            let secret = app.resolve_secret()?;
            let runtime = AppRuntime::build(app, secret, app.warm.unwrap_or(config.warm), &deps)?;
            registry.put_app(AppEntry {
                appid: app.appid.clone(),
                source: Source::File,
                enabled: true,
                settings: AppSettings::of(app),
                runtime: Some(Arc::new(runtime)),
                rev: 0,
                created_at: 0,
                updated_at: 0,
                load_error: None,
            });
        }
        for c in &config.clients {
            let hash = c.resolve_key_hash()?;
            let client =
                BrokerClient::new(c.name.clone(), hash, c.apps.clone(), c.resolved_scopes()?);
            registry.put_client(
                ClientEntry {
                    client: Arc::new(client),
                    source: Source::File,
                    enabled: true,
                    rev: 0,
                    created_at: 0,
                    updated_at: 0,
                },
                Some(hash),
            );
        }
        let admins = config
            .admins
            .iter()
            .map(|a| Ok((a.name.clone(), a.resolve_key_hash()?)))
            .collect::<Result<Vec<_>, crate::config::ConfigError>>()?;
        let trusted_proxies = config.trusted_proxy_nets()?;
        let max_keys = config.rate_limit_max_keys;
        let state = AppState(Arc::new(Inner {
            platforms: RwLock::new(platforms),
            platform_store,
            login_writer: crate::logins::LoginWriter::spawn(store.clone()),
            store,
            registry,
            deps,
            admins,
            instance_id: hex::encode(rand::random::<[u8; 8]>()),
            fleet_status: Mutex::new(crate::fleet::FleetStatus::default()),
            registry_sync: tokio::sync::Mutex::new(()),
            platforms_dirty: std::sync::atomic::AtomicBool::new(false),
            signing: Mutex::new(Arc::new(crate::jwt::SigningKeys::default())),
            admin_limiter: RateLimiter::new("admin", config.admin_rate_limit_per_minute, max_keys)
                .shared(admin_shared),
            fetches: Mutex::new(std::collections::HashMap::new()),
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
            phone_limiter: RateLimiter::new("phone", config.phone_rate_limit_per_minute, max_keys)
                .shared(shared_limits.clone()),
            auth_failures: RateLimiter::new(
                "authfail",
                config.auth_failure_limit_per_minute,
                max_keys,
            )
            .shared(shared_limits),
            trusted_proxies,
            egress,
            config,
            outbox: tokio::sync::Notify::new(),
            readiness: tokio::sync::Mutex::new(None),
            pushes_in_flight: Mutex::new(std::collections::HashSet::new()),
        }));
        state.sync_registry(true).await?;
        state.sync_authorizers().await?;
        state.reseal_signing_keys().await?;
        state.reseal_platform_secrets().await?;
        state.reseal_managed_secrets().await?;
        state.signing_tick(now_ms()).await?;
        // A file client naming an app that exists nowhere is a typo, refused at start.
        for c in &state.config.clients {
            if let Some(unknown) = c
                .apps
                .iter()
                .find(|a| a.as_str() != "*" && state.registry.entry(a).is_none())
            {
                return Err(StartError::UnknownApp {
                    client: c.name.clone(),
                    app: unknown.clone(),
                });
            }
        }
        Ok(state)
    }

    /// Counts the tokens each app fetched since the last look (on this instance), per Beijing
    /// day; with Redis, adds them to the fleet's daily counters. Called by the fleet task.
    pub(crate) async fn count_fetches(&self, runtimes: &[Arc<AppRuntime>]) {
        let day = crate::http::admin::quota_day(now_ms());
        let mut deltas = Vec::new();
        {
            let mut f = self.fetches.lock().unwrap_or_else(|p| p.into_inner());
            for rt in runtimes {
                let total = rt.manager.fetch_count();
                if !f.contains_key(rt.appid.as_str()) {
                    f.insert(rt.appid.clone(), (day, 0, 0));
                }
                let e = f.get_mut(rt.appid.as_str()).expect("just inserted");
                // A rebuilt runtime starts counting from 0 again.
                let delta = if total >= e.2 { total - e.2 } else { total };
                e.2 = total;
                if e.0 != day {
                    *e = (day, 0, total);
                    e.1 = delta;
                } else {
                    e.1 += delta;
                }
                if delta > 0 {
                    deltas.push((rt.appid.clone(), delta));
                }
            }
        }
        if let (Some(redis), false) = (&self.redis, deltas.is_empty()) {
            let key = crate::http::admin::fetch_counter_key(redis.prefix(), day);
            let mut pipe = redis::pipe();
            for (appid, n) in &deltas {
                pipe.cmd("HINCRBY").arg(&key).arg(appid).arg(*n).ignore();
            }
            pipe.cmd("EXPIRE").arg(&key).arg(3 * 86_400).ignore();
            let mut conn = redis.connection();
            if let Err(e) = pipe.query_async::<()>(&mut conn).await {
                tracing::warn!(error = %e, "could not add to the fleet's fetch counters");
            }
        }
    }

    /// Tokens fetched today (Beijing day) per app: the fleet's count with Redis, this
    /// instance's otherwise.
    pub async fn fetches_today(&self, appids: &[String]) -> Vec<u64> {
        let day = crate::http::admin::quota_day(now_ms());
        if let (Some(redis), false) = (&self.redis, appids.is_empty()) {
            let key = crate::http::admin::fetch_counter_key(redis.prefix(), day);
            let mut conn = redis.connection();
            let got: redis::RedisResult<Vec<Option<u64>>> = redis::cmd("HMGET")
                .arg(&key)
                .arg(appids)
                .query_async(&mut conn)
                .await;
            if let Ok(v) = got {
                return v.into_iter().map(Option::unwrap_or_default).collect();
            }
        }
        let f = self.fetches.lock().unwrap_or_else(|p| p.into_inner());
        appids
            .iter()
            .map(|a| f.get(a).filter(|e| e.0 == day).map_or(0, |e| e.1))
            .collect()
    }

    /// What the fleet task last reported.
    pub fn fleet_status(&self) -> crate::fleet::FleetStatus {
        self.fleet_status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn set_fleet_status(&self, status: crate::fleet::FleetStatus) {
        *self.fleet_status.lock().unwrap_or_else(|p| p.into_inner()) = status;
    }

    /// The runtime of an enabled app (from the file or managed), if any.
    pub fn app(&self, appid: &str) -> Option<Arc<AppRuntime>> {
        self.registry.app(appid)
    }

    /// A platform this instance serves.
    pub fn platform(&self, component_appid: &str) -> Option<Arc<PlatformRuntime>> {
        self.platforms
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(component_appid)
            .cloned()
    }

    /// Every platform this instance serves, by component appid.
    pub fn platforms(&self) -> Vec<Arc<PlatformRuntime>> {
        let mut all: Vec<_> = self
            .platforms
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        all.sort_by(|a, b| a.config.component_appid.cmp(&b.config.component_appid));
        all
    }

    /// Serves exactly the merchants that have authorized a served platform: a runtime
    /// (authorizer tokens, component login) for each authorized one, none for the others.
    /// An appid also defined in the file or the admin API keeps that definition.
    ///
    /// # Errors
    /// The database could not be read.
    pub async fn sync_authorizers(&self) -> Result<(), SyncError> {
        // Not interleaved with a registry sync (which calls the same under its lock).
        let _one = self.registry_sync.lock().await;
        self.sync_authorizers_locked().await
    }

    /// Brings one merchant up to date with the database (after an authorization event here;
    /// the other instances follow at their next registry poll).
    ///
    /// # Errors
    /// The database could not be read.
    pub async fn sync_merchant(&self, authorizer_appid: &str) -> Result<(), SyncError> {
        let _one = self.registry_sync.lock().await;
        let rows = self.store.authorizations_of(authorizer_appid).await?;
        self.serve_merchant(authorizer_appid, &rows);
        Ok(())
    }

    async fn sync_authorizers_locked(&self) -> Result<(), SyncError> {
        let mut by_appid: std::collections::BTreeMap<String, Vec<PlatformAuthorizer>> =
            std::collections::BTreeMap::new();
        for platform in self.platforms() {
            let rows = self
                .store
                .platform_authorizers(&platform.config.component_appid)
                .await?;
            for row in rows {
                by_appid
                    .entry(row.authorizer_appid.clone())
                    .or_default()
                    .push(row);
            }
        }
        for (appid, rows) in &by_appid {
            self.serve_merchant(appid, rows);
        }
        for appid in self.registry.appids_of(Source::Platform) {
            if !by_appid.contains_key(&appid) {
                self.serve_merchant(&appid, &[]);
            }
        }
        Ok(())
    }

    /// Reads the merchants whose authorization changed after registry revision `from` and
    /// brings each up to date.
    async fn sync_changed_authorizers(
        &self,
        from: i64,
        also: Vec<String>,
    ) -> Result<(), SyncError> {
        let mut changed: std::collections::BTreeSet<String> = also.into_iter().collect();
        let rows = crate::store::read_all_after(
            from,
            |after, limit| self.store.platform_authorizers_after(after, limit),
            |r| r.rev,
        )
        .await?;
        changed.extend(rows.into_iter().map(|r| r.authorizer_appid));
        for appid in changed {
            let rows = self.store.authorizations_of(&appid).await?;
            self.serve_merchant(&appid, &rows);
        }
        Ok(())
    }

    /// Serves `appid` through one of the served platforms it has authorized (`rows`: its
    /// authorizations, any state): the platform serving it now while that one stays
    /// authorized, else the first by component appid; or not at all.
    fn serve_merchant(&self, appid: &str, rows: &[PlatformAuthorizer]) {
        let candidates: Vec<(Arc<PlatformRuntime>, &PlatformAuthorizer)> = rows
            .iter()
            .filter(|r| r.authorized && r.authorizer_appid == appid)
            .filter_map(|r| self.platform(&r.component_appid).map(|p| (p, r)))
            .collect();
        let current = self.registry.entry(appid);
        if let Some(e) = &current {
            if e.source != Source::Platform {
                if !candidates.is_empty() {
                    tracing::warn!(appid, "a merchant of a platform is also configured as an app; the app's definition is served");
                }
                return;
            }
            let serving = e.runtime.as_ref().and_then(|r| r.platform.clone());
            if candidates
                .iter()
                .any(|(p, _)| Some(&p.config.component_appid) == serving.as_ref() && p.rev == e.rev)
            {
                return;
            }
        }
        let Some((platform, _)) = current
            .as_ref()
            .and_then(|e| e.runtime.as_ref().and_then(|r| r.platform.clone()))
            .and_then(|c| {
                candidates
                    .iter()
                    .find(|(p, _)| p.config.component_appid == c)
                    .cloned()
            })
            .or_else(|| candidates.first().cloned())
        else {
            if current.is_some() {
                self.registry.remove_app(appid);
                tracing::info!(appid, "no longer serving a merchant: it de-authorized its platforms (or they are no longer served)");
            }
            return;
        };
        let runtime = match AppRuntime::for_authorizer(
            &platform,
            appid,
            self.config.warm,
            self.deps.fleet,
        ) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(appid, error = %e, "a merchant of the platform cannot be served");
                return;
            }
        };
        self.registry.put_app(AppEntry {
            appid: appid.to_owned(),
            source: Source::Platform,
            enabled: true,
            settings: AppSettings {
                api_base: platform.config.api_base.clone(),
                token_mode: weapp::TokenMode::Classic,
                warm: None,
                push: None,
                access_tokens: true,
            },
            runtime: Some(Arc::new(runtime)),
            rev: platform.rev,
            created_at: 0,
            updated_at: 0,
            load_error: None,
        });
        tracing::info!(appid, platform = %platform.config.component_appid, "serving a merchant of the platform");
    }

    /// Applies one managed platform record; whether the served platforms changed.
    fn apply_platform(&self, rec: ManagedPlatformRecord) -> bool {
        let c = rec.appid.clone();
        if self.config.platforms.iter().any(|p| p.component_appid == c) {
            tracing::warn!(platform = %c, "a managed platform has the component appid of one in the configuration file; the file's is served");
            return false;
        }
        if self.platform(&c).is_some_and(|p| rec.rev <= p.rev) {
            return false;
        }
        let built = if rec.deleted || !rec.enabled {
            None
        } else {
            match self.managed_platform_runtime(&rec) {
                Ok(p) => Some(p),
                Err(e) => {
                    // Not served: an old secret must not go on being used.
                    tracing::error!(platform = %c, error = %e, "managed platform cannot be loaded; not served");
                    None
                }
            }
        };
        let mut map = self.platforms.write().unwrap_or_else(|p| p.into_inner());
        match built {
            Some(p) => {
                tracing::info!(platform = %c, rev = rec.rev, "managed platform loaded");
                map.insert(c, Arc::new(p));
                true
            }
            None => map.remove(&c).is_some(),
        }
    }

    fn managed_platform_runtime(
        &self,
        rec: &ManagedPlatformRecord,
    ) -> Result<PlatformRuntime, RuntimeError> {
        let settings: crate::platform::PlatformSettings =
            serde_json::from_str(&rec.settings).map_err(RuntimeError::Settings)?;
        let sealed = rec.sealed.as_deref().ok_or(RuntimeError::NotSealed)?;
        let plain = zeroize::Zeroizing::new(
            self.keyring
                .open(
                    sealed,
                    &crate::platform::platform_aad(&rec.appid, &settings.api_base),
                )
                .ok_or(RuntimeError::Unopenable)?,
        );
        let secrets: crate::platform::PlatformSecrets =
            serde_json::from_slice(&plain).map_err(|_| RuntimeError::Secrets)?;
        let config = settings.config(&rec.appid, &secrets);
        let secret = Secret::new(secrets.secret.clone());
        let mut runtime = PlatformRuntime::build(
            config,
            &secret,
            &self.deps,
            self.platform_store.clone(),
            Source::Managed,
        )?;
        runtime.rev = rec.rev;
        runtime.created_at = rec.created_at;
        runtime.updated_at = rec.updated_at;
        Ok(runtime)
    }

    /// Reconciles a platform's merchants with WeChat's authorizer list (the truth): a merchant
    /// in the list whose refresh token is missing or different here gets the list's; a
    /// merchant authorized here but absent from the list is de-authorized (a missed
    /// `unauthorized` push). Then this instance serves what the database says.
    ///
    /// # Errors
    /// WeChat or the database failed (nothing is de-authorized on a failed listing).
    pub async fn reconcile_platform(
        &self,
        component_appid: &str,
    ) -> Result<Reconciled, ReconcileError> {
        use weapp::open_platform::RefreshTokenStore;
        let platform = self
            .platform(component_appid)
            .ok_or_else(|| ReconcileError::UnknownPlatform(component_appid.to_owned()))?;
        let component = &platform.component;
        let store = &self.platform_store;
        // What the database said before listing: a merchant authorizing meanwhile is not in
        // the list, and must not be taken for one that left.
        let started = now_ms();
        let rows = self.store.platform_authorizers(component_appid).await?;
        let mut listed = std::collections::HashMap::new();
        let mut offset = 0u32;
        let mut first_total = None;
        let total = loop {
            let page = component.authorizer_list(offset, 500).await?;
            // The list changed while it was paged (offsets shifted: a merchant could fall
            // between two pages and look absent): nothing is reconciled this time.
            if *first_total.get_or_insert(page.total_count) != page.total_count {
                return Err(ReconcileError::ListChanged);
            }
            let n = page.list.len();
            for e in page.list {
                listed.insert(e.authorizer_appid.clone(), (e.refresh_token, e.auth_time));
            }
            offset += n as u32;
            if n == 0 || i64::from(offset) >= page.total_count {
                break page.total_count;
            }
        };
        // A short listing (an empty page, an answer without its list) changes nothing.
        if i64::try_from(listed.len()).unwrap_or(i64::MAX) < total {
            return Err(ReconcileError::Incomplete {
                listed: listed.len(),
                total,
            });
        }
        let mut out = Reconciled::default();
        for (appid, (refresh, listed_time)) in &listed {
            let Some(refresh) = refresh.as_ref().filter(|r| !r.expose().is_empty()) else {
                continue;
            };
            let row = rows.iter().find(|r| &r.authorizer_appid == appid);
            // Changed since the listing began (an event): the event knows better.
            if row.is_some_and(|r| r.updated_at >= started) {
                continue;
            }
            let ours = store.load(component_appid, appid).await?;
            // Missing or de-authorized here, or authorized again since the time we hold.
            let revive = row.is_none_or(|r| !r.authorized || *listed_time > r.auth_time);
            if ours.as_deref() != Some(refresh.expose()) || revive {
                // Decided by the database against the row as it is now, not as read before the
                // listing: a merchant that left (or came back) meanwhile is not overwritten.
                // The authorization's time is WeChat's (the list's), so that an `unauthorized`
                // from before it (a late retry, a replay) cannot erase it.
                let sealed = self.keyring.seal(
                    refresh.expose().as_bytes(),
                    &crate::platform::refresh_aad(component_appid, appid),
                );
                let applied = self
                    .store
                    .restore_platform_authorizer_if(
                        component_appid,
                        appid,
                        &sealed,
                        &self.keyring.current_id(),
                        *listed_time,
                        started,
                        now_ms(),
                    )
                    .await?;
                out.restored += usize::from(applied);
            }
        }
        for row in &rows {
            if row.authorized
                && row.updated_at < started
                && !listed.contains_key(&row.authorizer_appid)
            {
                // Only if the row is still as it was before the listing (a merchant
                // re-authorizing meanwhile is not undone).
                let applied = self
                    .store
                    .deauthorize_platform_authorizer_if(
                        component_appid,
                        &row.authorizer_appid,
                        i64::MAX,
                        started,
                        now_ms(),
                    )
                    .await?;
                if applied {
                    component.drop_authorizer(&row.authorizer_appid);
                    out.deauthorized += 1;
                }
            }
        }
        self.sync_authorizers().await?;
        Ok(out)
    }

    /// Re-seals the tickets and refresh tokens of every platform known (the file's, and every
    /// managed one — disabled and deleted ones too) sealed under an older data key with the
    /// newest one (at start-up, so that a data-key rotation can drop the old key: a refresh
    /// token that no longer opens would make its merchant authorize again). Each is replaced
    /// only if unchanged meanwhile (an instance saving a new one wins). Returns how many were
    /// re-sealed.
    ///
    /// # Errors
    /// The database could not be read or written.
    pub async fn reseal_platform_secrets(&self) -> Result<usize, SealError> {
        let current = self.keyring.current_id();
        let stale = |sealed: &[u8]| Keyring::key_id_of(sealed).is_some_and(|k| k != current);
        let mut resealed = 0;
        let mut known: std::collections::BTreeSet<String> = self
            .config
            .platforms
            .iter()
            .map(|p| p.component_appid.clone())
            .collect();
        let managed = crate::store::read_all_after(
            0,
            |after, limit| self.store.managed_platforms_after(after, limit),
            |r| r.rev,
        )
        .await?;
        known.extend(managed.into_iter().map(|r| r.appid));
        for c in &known {
            if let Some(old) = self.store.platform_ticket(c).await? {
                let aad = crate::platform::ticket_aad(c);
                if let Some(plain) = stale(&old).then(|| self.keyring.open(&old, &aad)).flatten() {
                    let sealed = self.keyring.seal(&plain, &aad);
                    resealed += usize::from(
                        self.store
                            .reseal_platform_ticket(c, &old, &sealed, &current)
                            .await?,
                    );
                }
            }
            for row in self.store.platform_authorizers(c).await? {
                let Some(old) = row.refresh_sealed.filter(|s| stale(s)) else {
                    continue;
                };
                let aad = crate::platform::refresh_aad(c, &row.authorizer_appid);
                let Some(plain) = self.keyring.open(&old, &aad).map(zeroize::Zeroizing::new) else {
                    tracing::error!(platform = %c, authorizer = %row.authorizer_appid, "a refresh token does not open with the configured data keys; the reconciliation with the authorizer list will restore it");
                    continue;
                };
                let sealed = self.keyring.seal(&plain, &aad);
                resealed += usize::from(
                    self.store
                        .reseal_platform_refresh(c, &row.authorizer_appid, &old, &sealed, &current)
                        .await?,
                );
            }
        }
        if resealed > 0 {
            tracing::info!(
                resealed,
                "platform tickets and refresh tokens re-sealed with the newest data key"
            );
        }
        Ok(resealed)
    }

    /// Re-seals the secrets of managed apps and managed platforms (disabled ones too; deleted
    /// ones hold none) sealed under an older data key with the newest one (at start-up, so
    /// that a data-key rotation can drop the old key without every secret entered again). Each
    /// is replaced only if unchanged meanwhile (an admin change wins); the registry revision
    /// does not move (what is served is the same). Secrets that do not open are left (the
    /// start-up check refuses a missing key; a wrong one is logged when the row is loaded).
    /// Returns how many were re-sealed.
    ///
    /// # Errors
    /// The database could not be read or written.
    pub async fn reseal_managed_secrets(&self) -> Result<usize, SealError> {
        let current = self.keyring.current_id();
        let stale = |sealed: &[u8]| Keyring::key_id_of(sealed).is_some_and(|k| k != current);
        let api_base = |settings: &str| {
            serde_json::from_str::<serde_json::Value>(settings)
                .ok()
                .and_then(|v| {
                    v.get("api_base")
                        .and_then(serde_json::Value::as_str)
                        .map(str::to_owned)
                })
        };
        let apps = crate::store::read_all_after(
            0,
            |after, limit| self.store.managed_apps_after(after, limit),
            |r| r.rev,
        )
        .await?;
        let platforms = crate::store::read_all_after(
            0,
            |after, limit| self.store.managed_platforms_after(after, limit),
            |r| r.rev,
        )
        .await?;
        // (platform?, appid, sealed under an older key, what the sealing is bound to)
        let rows = apps
            .into_iter()
            .map(|r| (false, r))
            .chain(platforms.into_iter().map(|r| (true, r)))
            .filter_map(|(platform, r)| {
                let old = r.sealed.filter(|s| stale(s))?;
                let base = api_base(&r.settings)?;
                let aad = if platform {
                    crate::platform::platform_aad(&r.appid, &base)
                } else {
                    app_aad(&r.appid, &base)
                };
                Some((platform, r.appid, old, aad))
            });
        let mut resealed = 0;
        for (platform, appid, old, aad) in rows {
            let Some(plain) = self.keyring.open(&old, &aad).map(zeroize::Zeroizing::new) else {
                continue;
            };
            let sealed = self.keyring.seal(&plain, &aad);
            resealed += usize::from(
                self.store
                    .reseal_managed(platform, &appid, &old, &sealed, &current)
                    .await?,
            );
        }
        if resealed > 0 {
            tracing::info!(
                resealed,
                "managed apps' and platforms' secrets re-sealed with the newest data key"
            );
        }
        Ok(resealed)
    }

    /// The access-token signing keys as last read.
    pub fn signing_keys(&self) -> Arc<crate::jwt::SigningKeys> {
        self.signing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Re-reads the signing keys from the database.
    ///
    /// # Errors
    /// The database could not be read.
    pub async fn reload_signing_keys(&self) -> Result<(), SealError> {
        let records = self.store.signing_keys().await?;
        let keys =
            crate::jwt::SigningKeys::load(&records, |sealed, aad| self.keyring.open(sealed, aad));
        *self.signing.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys);
        Ok(())
    }

    /// Re-seals signing keys sealed under an older data key with the newest one (at start-up,
    /// so that a data-key rotation can drop the old key once users have logged in again, as for
    /// session keys).
    ///
    /// # Errors
    /// The database could not be read or written.
    pub async fn reseal_signing_keys(&self) -> Result<(), SealError> {
        let current = self.keyring.current_id();
        let mut resealed = 0;
        for r in self.store.signing_keys().await? {
            if r.key_id == current {
                continue;
            }
            let aad = crate::jwt::key_aad(&r.kid);
            if let Some(plain) = self.keyring.open(&r.sealed, &aad) {
                let sealed = self.keyring.seal(&plain, &aad);
                self.store
                    .reseal_signing_key(&r.kid, &sealed, &current)
                    .await?;
                resealed += 1;
            }
        }
        if resealed > 0 {
            tracing::info!(resealed, "signing keys re-sealed under the newest data key");
            self.reload_signing_keys().await?;
        }
        Ok(())
    }

    /// Adds a new signing key that signs from `not_before` (retiring the current one then),
    /// unless `guard` says another instance did already; reloads the keys. An administrator's
    /// rotation passes its `audit` row (its target becomes the new key's id), written with the
    /// key. Returns the new key's id when it was added.
    ///
    /// # Errors
    /// The database could not be written.
    pub async fn add_signing_key(
        &self,
        now: i64,
        not_before: i64,
        guard: crate::store::KeyGuard,
        audit: Option<crate::store::AuditRecord>,
    ) -> Result<Option<String>, SealError> {
        let record = crate::jwt::generate(
            |plain, aad| self.keyring.seal(plain, aad),
            self.keyring.current_id(),
            now,
            not_before,
        );
        let added = self
            .store
            .add_signing_key(
                &record,
                guard,
                audit
                    .map(|a| crate::store::AuditRecord {
                        target: record.kid.clone(),
                        ..a
                    })
                    .as_ref(),
            )
            .await?;
        self.reload_signing_keys().await?;
        if added {
            tracing::info!(kid = %record.kid, not_before, "access-token signing key added");
        }
        Ok(added.then_some(record.kid))
    }

    /// Keeps the signing keys in shape (called at start-up and every registry poll): a first
    /// key when there is none that can sign, a rotation when the newest key is older than
    /// `signing_key_rotate_days` (published `signing_key_publish_ahead_secs` before it signs),
    /// and retired keys deleted once every token they signed has expired. Only a change
    /// touches the database.
    ///
    /// # Errors
    /// The database could not be read or written.
    pub async fn signing_tick(&self, now: i64) -> Result<(), SealError> {
        use crate::store::KeyGuard;
        let keys = self.signing_keys();
        if !keys.can_sign(now) {
            if keys.has_pending(now) {
                // The signing key was removed while the next one waited its publish-ahead: the
                // next one signs now, rather than nothing for minutes.
                self.store.promote_signing_keys(now).await?;
                self.reload_signing_keys().await?;
            } else {
                // No key (a new database, or the signing key removed): one new key for the
                // whole fleet, however many instances get here together. A key that signs but
                // does not open here (sealed under a data key this instance lacks — refused at
                // start-up) is not replaced: that would retire the fleet's key.
                self.add_signing_key(now, now, KeyGuard::NoSignerAt(now), None)
                    .await?;
            }
            if !self.signing_keys().can_sign(now) {
                tracing::error!("no access-token signing key opens with this instance's data keys: logins of apps with access tokens answer 503");
            }
            return Ok(());
        }
        let rotate_ms = (self.config.signing_key_rotate_days as i64).saturating_mul(86_400_000);
        if rotate_ms > 0
            && keys
                .newest_created_at()
                .is_some_and(|t| t <= now - rotate_ms)
        {
            let ahead = (self.config.signing_key_publish_ahead_secs as i64).saturating_mul(1000);
            self.add_signing_key(
                now,
                now + ahead,
                KeyGuard::NoneCreatedSince(now - rotate_ms),
                None,
            )
            .await?;
        }
        // A retired key stays published while tokens it signed may live: the longest lifetime
        // any instance may be configured with (instances of a fleet may differ during a
        // change), plus a minute of leeway.
        let gone_before = now - crate::config::MAX_ACCESS_TOKEN_TTL_SECS * 1000 - 60_000;
        if keys.has_retired_before(gone_before) {
            let n = self
                .store
                .delete_signing_keys(None, now, gone_before, None)
                .await?;
            if n > 0 {
                tracing::info!(deleted = n, "retired signing keys unpublished");
            }
            self.reload_signing_keys().await?;
        }
        Ok(())
    }

    /// Brings the registry up to date with the database: the managed apps and clients changed
    /// since the last revision applied (`full`: all of them, dropping any managed entry the
    /// database no longer has). Returns whether anything was read.
    ///
    /// # Errors
    /// The database could not be read.
    pub async fn sync_registry(&self, full: bool) -> Result<bool, SyncError> {
        // One sync at a time: two interleaved ones could apply an older record over a newer
        // one, or a reconcile could drop an app another sync has just applied.
        let _one = self.registry_sync.lock().await;
        let store_rev = self.store.registry_rev().await?;
        let mut full = full;
        if store_rev < self.registry.rev() {
            // The database went back (a restore): read everything again from there.
            tracing::warn!(
                store_rev,
                applied = self.registry.rev(),
                "the registry revision went back; re-reading every managed app and client"
            );
            self.registry.reset_rev(0);
            full = true;
        }
        let from = if full { 0 } else { self.registry.rev() };
        if !full && store_rev <= from {
            return Ok(false);
        }
        // Signing keys change with the revision too (rotations, removals): a small table,
        // read whole. (Platforms' merchants too: after the managed apps, below, so that an
        // appid defined in the admin API keeps that definition.)
        self.reload_signing_keys().await?;
        let mut live_apps = std::collections::HashSet::new();
        let mut freed = Vec::new();
        let mut live_clients = std::collections::HashSet::new();
        let apps = crate::store::read_all_after(
            from,
            |after, limit| self.store.managed_apps_after(after, limit),
            |r| r.rev,
        )
        .await?;
        for rec in apps {
            if !rec.deleted {
                live_apps.insert(rec.appid.clone());
            }
            let appid = rec.appid.clone();
            if self.apply_app(rec) {
                // A merchant of a platform may have that appid: served again below.
                freed.push(appid);
            }
        }
        let clients = crate::store::read_all_after(
            from,
            |after, limit| self.store.managed_clients_after(after, limit),
            |r| r.rev,
        )
        .await?;
        for rec in clients {
            if !rec.deleted {
                live_clients.insert(rec.name.clone());
            }
            self.apply_client(rec);
        }
        // Platforms registered through the admin API.
        let mut platforms_changed = false;
        let mut live_platforms = std::collections::HashSet::new();
        let platforms = crate::store::read_all_after(
            from,
            |after, limit| self.store.managed_platforms_after(after, limit),
            |r| r.rev,
        )
        .await?;
        for rec in platforms {
            if !rec.deleted && rec.enabled {
                live_platforms.insert(rec.appid.clone());
            }
            platforms_changed |= self.apply_platform(rec);
        }
        if full {
            let gone: Vec<String> = self
                .platforms()
                .iter()
                .filter(|p| {
                    p.source == Source::Managed
                        && !live_platforms.contains(&p.config.component_appid)
                })
                .map(|p| p.config.component_appid.clone())
                .collect();
            let mut map = self.platforms.write().unwrap_or_else(|p| p.into_inner());
            for c in gone {
                platforms_changed |= map.remove(&c).is_some();
            }
        }
        if full {
            for appid in self.registry.managed_appids() {
                if !live_apps.contains(&appid) {
                    self.registry.remove_app(&appid);
                }
            }
            for name in self.registry.managed_client_names() {
                if !live_clients.contains(&name) {
                    self.registry.remove_client(&name);
                }
            }
        }
        // Everything up to the revision read before the queries is applied (commits happen in
        // revision order); rows newer than it may have been read too, and are read again by
        // the next poll, harmlessly.
        // Merchants: all of them when the platforms changed (or on a full read), else only
        // those whose authorization changed since the last revision applied.
        if platforms_changed {
            self.platforms_dirty
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
        if full
            || self
                .platforms_dirty
                .load(std::sync::atomic::Ordering::SeqCst)
        {
            self.sync_authorizers_locked().await?;
            self.platforms_dirty
                .store(false, std::sync::atomic::Ordering::SeqCst);
        } else {
            self.sync_changed_authorizers(from, freed).await?;
        }
        self.registry.set_rev(store_rev);
        Ok(true)
    }

    /// Applies one managed app record (a tombstone removes it); whether it removed an entry.
    pub(crate) fn apply_app(&self, rec: ManagedAppRecord) -> bool {
        let existing = self.registry.entry(&rec.appid);
        match &existing {
            Some(e) if e.source == Source::File => {
                tracing::warn!(appid = %rec.appid, "a managed app has the appid of an app in the configuration file; the file's is served");
                return false;
            }
            // The same or an older change than the one applied: nothing to do.
            Some(e) if e.source == Source::Managed && rec.rev <= e.rev => return false,
            // A tombstone leaves a platform's merchant of that appid alone.
            Some(e) if e.source == Source::Platform && rec.deleted => return false,
            _ => {}
        }
        if rec.deleted {
            if self.registry.remove_app(&rec.appid).is_some() {
                tracing::info!(appid = %rec.appid, "managed app deleted");
                return true;
            }
            return false;
        }
        match self.managed_entry(&rec) {
            Ok(entry) => {
                tracing::info!(appid = %rec.appid, enabled = entry.enabled, rev = rec.rev, "managed app loaded");
                self.registry.put_app(entry);
            }
            Err(e) => {
                // Not served (an old secret or old settings must not go on being used), and
                // shown as broken in the admin API until a change that loads replaces it.
                tracing::error!(appid = %rec.appid, error = %e, "managed app cannot be loaded; not served");
                let settings = serde_json::from_str(&rec.settings).unwrap_or(AppSettings {
                    api_base: String::new(),
                    token_mode: weapp::TokenMode::default(),
                    warm: None,
                    access_tokens: false,
                    push: None,
                });
                self.registry.put_app(AppEntry {
                    appid: rec.appid.clone(),
                    source: Source::Managed,
                    enabled: rec.enabled,
                    settings,
                    runtime: None,
                    rev: rec.rev,
                    created_at: rec.created_at,
                    updated_at: rec.updated_at,
                    load_error: Some(e.to_string()),
                });
            }
        }
        false
    }

    fn managed_entry(&self, rec: &ManagedAppRecord) -> Result<AppEntry, RuntimeError> {
        let settings: AppSettings =
            serde_json::from_str(&rec.settings).map_err(RuntimeError::Settings)?;
        let runtime = if rec.enabled {
            let sealed = rec.sealed.as_deref().ok_or(RuntimeError::NotSealed)?;
            let plain = self
                .keyring
                .open(sealed, &app_aad(&rec.appid, &settings.api_base))
                .ok_or(RuntimeError::Unopenable)?;
            let secrets: AppSecrets =
                serde_json::from_slice(&plain).map_err(|_| RuntimeError::Secrets)?;
            let app = settings.config(&rec.appid, &secrets);
            let secret = AppSecret::new(secrets.secret.clone());
            if let Some(hook) = &self.config.app_hook {
                (hook.0)(&rec.appid, &secrets.secret);
            }
            Some(Arc::new(AppRuntime::build(
                &app,
                secret,
                settings.warm.unwrap_or(self.config.warm),
                &self.deps,
            )?))
        } else {
            None
        };
        Ok(AppEntry {
            appid: rec.appid.clone(),
            source: Source::Managed,
            enabled: rec.enabled,
            settings,
            runtime,
            rev: rec.rev,
            created_at: rec.created_at,
            updated_at: rec.updated_at,
            load_error: None,
        })
    }

    /// Applies one managed client record (a tombstone removes it).
    pub(crate) fn apply_client(&self, rec: ManagedClientRecord) {
        if let Some(e) = self.registry.client_entry(&rec.name) {
            if e.source == Source::File {
                tracing::warn!(client = %rec.name, "a managed client has the name of a client in the configuration file; the file's is used");
                return;
            }
            if rec.rev <= e.rev {
                return;
            }
        }
        if rec.deleted {
            self.registry.remove_client(&rec.name);
            return;
        }
        let parsed = (|| {
            let hash: [u8; 32] = rec
                .key_sha256
                .as_deref()
                .and_then(|h| h.try_into().ok())
                .ok_or("no key hash")?;
            let apps: Vec<String> =
                serde_json::from_str(&rec.apps).map_err(|_| "apps do not parse")?;
            let scopes: Vec<String> =
                serde_json::from_str(&rec.scopes).map_err(|_| "scopes do not parse")?;
            Ok::<_, &str>((hash, apps, scopes))
        })();
        match parsed {
            Ok((hash, apps, scopes)) => self.registry.put_client(
                ClientEntry {
                    client: Arc::new(BrokerClient::new(rec.name.clone(), hash, apps, scopes)),
                    source: Source::Managed,
                    enabled: rec.enabled,
                    rev: rec.rev,
                    created_at: rec.created_at,
                    updated_at: rec.updated_at,
                },
                Some(hash),
            ),
            Err(e) => {
                tracing::error!(client = %rec.name, error = e, "managed client cannot be loaded")
            }
        }
    }

    /// The administrator whose key hashes to `key`'s SHA-256 (every admin compared in
    /// constant time).
    pub fn admin(&self, key: &str) -> Option<&str> {
        use sha2::{Digest, Sha256};
        let hash: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let mut found = None;
        for (name, h) in &self.admins {
            if bool::from(h.ct_eq(&hash)) {
                found = Some(name.as_str());
            }
        }
        found
    }

    /// May a broker report that `token` failed refresh `app`'s token now? `None` when it may;
    /// otherwise how long until the interval ends (for `Retry-After`). One token per
    /// `invalidate_min_interval_secs` per app is refreshed on reports — fleet-wide through Redis
    /// when there is one, per instance otherwise (and while Redis is unreachable). Reports of
    /// the token being refreshed right now (a storm of 40001s about one token) all pass: they are
    /// one incident, and the store's compare-and-swap refreshes it once. Once that refresh is
    /// [done](AppState::invalidation_done), the same token is not refreshed again within the
    /// interval either — with stable tokens WeChat may hand the very same token back. (A
    /// throttled report is not the end of it: the broker then probes the token, and one proven
    /// dead is replaced whatever the interval.)
    pub async fn invalidation_permit(
        &self,
        app: &AppRuntime,
        token: &weapp::AccessToken,
    ) -> Option<Duration> {
        let interval = Duration::from_secs(self.config.invalidate_min_interval_secs);
        if interval.is_zero() {
            return None;
        }
        let digest = token_digest(token);
        if let Some(redis) = &self.redis {
            let key = format!("{}:invalidate:{}", redis.prefix(), app.appid);
            let mut conn = redis.connection();
            // 0: granted; otherwise the milliseconds left of the interval (at least 1).
            let script = redis::Script::new(
                "local v = redis.call('GET', KEYS[1]) \
                 if not v then redis.call('SET', KEYS[1], ARGV[1] .. ':pending', 'PX', ARGV[2]) return 0 end \
                 if v == ARGV[1] .. ':pending' then return 0 end \
                 local left = redis.call('PTTL', KEYS[1]) \
                 if left < 1 then return 1 end \
                 return left",
            );
            let left: redis::RedisResult<i64> = script
                .key(&key)
                .arg(&digest)
                .arg(interval.as_millis() as u64)
                .invoke_async(&mut conn)
                .await;
            match left {
                Ok(0) => return None,
                Ok(ms) => return Some(Duration::from_millis(ms.unsigned_abs())),
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
            Some((at, d, done)) if at.elapsed() < interval => {
                if *d == digest && !done {
                    None
                } else {
                    Some(
                        interval
                            .saturating_sub(at.elapsed())
                            .max(Duration::from_millis(1)),
                    )
                }
            }
            _ => {
                *last = Some((Instant::now(), digest, false));
                None
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

    /// The enabled broker client whose key hashes to `key`'s SHA-256. Clients are looked up
    /// by that digest (thousands of managed clients cost one lookup); the lookup's timing can
    /// only tell an attacker about digests of keys they chose, not about a valid key.
    pub fn broker_client(&self, key: &str) -> Option<Arc<BrokerClient>> {
        use sha2::{Digest, Sha256};
        let hash: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let client = self.registry.client_by_key(&hash)?;
        // Re-checked in constant time, whatever the map compared.
        bool::from(client.key_hash().ct_eq(&hash)).then_some(client)
    }

    /// Token facts for `/metrics`.
    pub fn token_gauges(&self) -> Vec<TokenGauge> {
        let mut g: Vec<TokenGauge> = self.registry.runtimes().iter().map(|a| a.gauge()).collect();
        g.sort_by(|a, b| a.appid.cmp(&b.appid));
        g
    }
}
