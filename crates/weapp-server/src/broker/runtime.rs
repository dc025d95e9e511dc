//! An app as the broker serves it ([`AppRuntime`]: its SDK client and token manager, its push
//! receiver, its probe memory) and a caller of the broker ([`BrokerClient`]).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use weapp::token::{StoredToken, TokenPolicy, TokenStore};
use weapp::{AppSecret, Client, TokenManager};

use super::error::RuntimeError;
use crate::config::{AppConfig, Secret, WarmPolicy};
use crate::metrics::TokenGauge;
use crate::shared::now_ms;

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
    /// Where every app's upstream calls are measured (its SDK client's observer).
    pub metrics: Arc<crate::metrics::Metrics>,
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
    pub(crate) last_invalidation: Mutex<Option<(Instant, String, bool)>>,
    /// Settles suspicions that its token died upstream (mirror refetches, throttled reports).
    pub probe: super::probe::TokenProbe,
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
            })
            .observer(Arc::new(crate::metrics::UpstreamObserver::new(
                &app.appid,
                deps.metrics.clone(),
            )));
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

    /// The runtime of a merchant's mini program served through a third-party platform
    /// (`platform`: its component appid): a client whose tokens are authorizer tokens, no
    /// secret (the mirror refuses it), the platform's push receiver. Built by the platforms
    /// domain.
    pub fn for_merchant(
        appid: String,
        client: Client,
        manager: TokenManager,
        push: Option<PushRuntime>,
        warm: WarmPolicy,
        platform: String,
    ) -> Self {
        Self {
            appid,
            secret: AppSecret::new(String::new()),
            client,
            manager,
            seen: Mutex::new(None),
            push,
            last_invalidation: Mutex::new(None),
            probe: Default::default(),
            warm,
            access_tokens: true,
            platform: Some(platform),
            last_used_ms: AtomicI64::new(0),
        }
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

    pub(crate) fn gauge(&self) -> TokenGauge {
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

impl super::probe::ProbeSubject for AppRuntime {
    fn appid(&self) -> &str {
        &self.appid
    }
    fn client(&self) -> &Client {
        &self.client
    }
    fn manager(&self) -> &TokenManager {
        &self.manager
    }
    fn token(&self) -> impl std::future::Future<Output = weapp::Result<StoredToken>> + Send {
        AppRuntime::token(self)
    }
}
