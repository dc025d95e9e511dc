//! Shared server state: the store, one SDK client per app, broker callers, the data key,
//! metrics, and the background token refreshers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use subtle::ConstantTimeEq;
use weapp::token::redis::RedisStore;
use weapp::token::{MemoryStore, StoredToken, TokenPolicy, TokenStore};
use weapp::{AppSecret, Client, TokenManager};

use crate::config::Config;
use crate::metrics::{Metrics, TokenGauge};
use crate::ratelimit::RateLimiter;
use crate::seal::DataKey;
use crate::store::Store;

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
}

/// An app's push receiver and webhook.
#[derive(Debug)]
pub struct PushRuntime {
    /// Verifies and opens pushes.
    pub receiver: weapp::push::Receiver,
    /// Where events go.
    pub webhook_url: Option<String>,
    /// Signs deliveries.
    pub webhook_secret: Option<String>,
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
}

impl BrokerClient {
    /// May this client read `appid`'s token?
    pub fn may_read(&self, appid: &str) -> bool {
        self.apps.iter().any(|a| a == appid)
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
    pub data_key: DataKey,
    /// Shared Redis (also the token store), if configured.
    pub redis: Option<RedisStore>,
    /// Counters.
    pub metrics: Metrics,
    /// Per-IP limiter of `POST /v1/login`.
    pub login_limiter: RateLimiter,
    /// The configuration the server started with.
    pub config: Config,
    /// Wakes the outbox worker when an event is stored.
    pub outbox: tokio::sync::Notify,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl AppState {
    /// Connects the database (migrating it) and Redis, and builds one client per app.
    ///
    /// # Errors
    /// A message naming what could not be set up.
    pub async fn build(config: Config) -> Result<Self, String> {
        config.validate().map_err(|e| e.to_string())?;
        let store = crate::store::connect(&config.database_url)
            .await
            .map_err(|e| e.to_string())?;
        let data_key = match &config.data_key {
            Some(k) => DataKey::from_base64(k)?,
            None => {
                tracing::warn!("no data_key configured: using one generated and kept in the database; set WEAPP_DATA_KEY in production");
                let k = store
                    .meta_get_or_insert("data_key", &DataKey::generate_base64())
                    .await
                    .map_err(|e| e.to_string())?;
                DataKey::from_base64(&k)?
            }
        };
        let redis = match &config.redis_url {
            Some(url) => Some(
                RedisStore::connect(url, config.redis_prefix.clone())
                    .await
                    .map_err(|e| format!("redis at {url}: {e}"))?,
            ),
            None => None,
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
                    let mut receiver = weapp::push::Receiver::new(
                        weapp::push::PushConfig::new(
                            &app.appid,
                            &p.token,
                            p.encoding_aes_key.as_deref(),
                        )
                        .map_err(|e| format!("app {}: push: {e}", app.appid))?,
                    );
                    if p.replay_window_secs > 0 {
                        receiver = receiver.with_replay_protection(p.replay_window_secs);
                    }
                    Some(PushRuntime {
                        receiver,
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
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(AppState(Arc::new(Inner {
            store,
            apps,
            clients,
            data_key,
            redis,
            metrics: Metrics::default(),
            login_limiter: RateLimiter::new(config.login_rate_limit_per_minute),
            config,
            outbox: tokio::sync::Notify::new(),
        })))
    }

    /// The configured app, if any.
    pub fn app(&self, appid: &str) -> Option<&Arc<AppRuntime>> {
        self.apps.get(appid)
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
