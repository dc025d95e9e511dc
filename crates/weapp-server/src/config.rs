//! Server configuration: a TOML file (`weapp serve --config weapp.toml`), environment variables
//! for every top-level value, and command-line flags, in increasing order of precedence.
//!
//! Secrets are [`Secret`]s, URLs that may carry a password are printed without it, and
//! [`Config::validate`] checks everything at start-up, so a misconfiguration is one clear line
//! instead of a failure per request.

use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;
use weapp::push::PushMode;
use weapp::TokenMode;

/// A configuration problem, named precisely enough to fix.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

/// What is wrong with an app's push settings ([`PushConfig::validate`]), naming the field.
/// Never carries the Token, the key or the webhook secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PushConfigError {
    /// `token` is empty.
    #[error("token must not be empty")]
    EmptyToken,
    /// `token` is not what the WeChat console accepts.
    #[error("token must be 1–32 ASCII letters and digits, as in the WeChat console")]
    Token,
    /// `encoding_aes_key` is malformed.
    #[error(transparent)]
    EncodingAesKey(weapp::push::PushError),
    /// An explicit mode that encrypts, without `encoding_aes_key`.
    #[error("mode = \"{}\" needs encoding_aes_key", .0.as_str())]
    ModeNeedsKey(PushMode),
    /// Neither a key nor an explicit `mode = "plain"`.
    #[error("set encoding_aes_key (safe mode), or mode = \"plain\" to accept unencrypted pushes, which carry no signature over their body")]
    NoMode,
    /// `replay_window_secs` over a day.
    #[error("replay_window_secs must not exceed a day")]
    ReplayWindow,
    /// `webhook_url` is not an http(s) URL.
    #[error("webhook_url must be an http(s) URL")]
    WebhookUrl,
    /// `webhook_url` without `webhook_secret`.
    #[error("webhook_url needs a webhook_secret to sign deliveries")]
    WebhookWithoutSecret,
    /// `webhook_secret` too short.
    #[error("webhook_secret must be at least 16 characters")]
    WebhookSecretShort,
}

/// What is wrong with a platform's settings ([`PlatformConfig::check`]), naming the field.
/// Never carries the Token, the key or a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlatformConfigError {
    /// `component_appid` is malformed.
    #[error("component_appid must be 1–64 ASCII letters and digits")]
    ComponentAppid,
    /// `token` is empty or too long.
    #[error("token must be 1–32 characters")]
    Token,
    /// `encoding_aes_key` is malformed.
    #[error("encoding_aes_key: {0}")]
    EncodingAesKey(#[source] weapp::push::PushError),
    /// `api_base` is not a base URL.
    #[error("api_base must be an http(s) URL without a query or fragment")]
    ApiBase,
    /// `webhook_url` is not an http(s) URL.
    #[error("webhook_url must be an http(s) URL")]
    WebhookUrl,
    /// `webhook_secret` too short or too long.
    #[error("webhook_secret must be 16–256 characters")]
    WebhookSecret,
    /// `webhook_url` without `webhook_secret`.
    #[error("webhook_url needs a webhook_secret")]
    WebhookWithoutSecret,
}

/// A secret from the configuration. `Debug` and `Display` never show it.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself: only where it is used.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"***\"")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl From<String> for Secret {
    fn from(v: String) -> Self {
        Self(v)
    }
}

impl From<&str> for Secret {
    fn from(v: &str) -> Self {
        Self(v.to_owned())
    }
}

/// `url` without its password (`redis://:pw@host` → `redis://***@host`), for logs and errors.
pub fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            // The authority ends at the first `/`, `?` or `#` (a URL without a path may still
            // carry a query).
            let (authority, path) = match rest.find(['/', '?', '#']) {
                Some(i) => rest.split_at(i),
                None => (rest, ""),
            };
            let path = path.split(['?', '#']).next().unwrap_or("");
            match authority.rsplit_once('@') {
                Some((_, host)) => format!("{scheme}://***@{host}{path}"),
                None => format!("{scheme}://{authority}{path}"),
            }
        }
        None => "<not a URL>".into(),
    }
}

/// A webhook URL as it is shown — in the admin API, the console, logs and `Debug` output: its
/// scheme, host and port, with credentials and everything after the host hidden
/// (`https://hooks.example.com/***`), since a webhook's path or query often carries a token of
/// its own.
pub fn redact_webhook_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) if u.host_str().is_some() => {
            let host = u.host_str().unwrap_or_default();
            let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
            let credentials = if u.username().is_empty() && u.password().is_none() {
                ""
            } else {
                "***@"
            };
            let rest = if u.path() == "/" && u.query().is_none() && u.fragment().is_none() {
                "/"
            } else {
                "/***"
            };
            format!("{}://{credentials}{host}{port}{rest}", u.scheme())
        }
        _ => "<not a URL>".into(),
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_database_url() -> String {
    "sqlite://weapp.db".into()
}
fn default_session_ttl() -> u64 {
    7 * 24 * 3600
}
/// The longest `access_token_ttl_secs` allowed (a day): retired signing keys stay published this
/// long (plus a minute), whatever the configured lifetime.
pub const MAX_ACCESS_TOKEN_TTL_SECS: i64 = 86_400;

fn default_platform_reconcile() -> u64 {
    86_400
}

fn default_access_token_ttl() -> u64 {
    900
}
fn default_issuer() -> String {
    "weapp-server".into()
}
fn default_rotate_days() -> u64 {
    30
}
fn default_publish_ahead() -> u64 {
    600
}
fn default_api_base() -> String {
    weapp::DEFAULT_BASE_URL.into()
}
fn default_login_rate() -> u32 {
    60
}
fn default_decrypt_rate() -> u32 {
    10
}
fn default_phone_rate() -> u32 {
    5
}
fn default_decrypt_max_age() -> u64 {
    3600
}
fn default_auth_failure_rate() -> u32 {
    20
}
fn default_rate_limit_max_keys() -> usize {
    100_000
}
fn default_invalidate_interval() -> u64 {
    60
}
fn default_timeout() -> u64 {
    15
}
fn default_body_limit() -> usize {
    64 * 1024
}
fn default_header_read_timeout() -> u64 {
    10
}
fn default_connection_idle_timeout() -> u64 {
    60
}
fn default_max_connections() -> u64 {
    10_000
}
fn default_max_connections_per_ip() -> u64 {
    256
}
fn default_retry_base() -> u64 {
    1000
}
fn default_retry_max() -> u64 {
    600
}
fn default_timeout_webhook() -> u64 {
    10
}
fn default_webhook_lease() -> u64 {
    60
}
fn default_webhook_attempts() -> u32 {
    15
}
fn default_prefix() -> String {
    "weapp".into()
}
fn default_admin_rate() -> u32 {
    600
}
fn default_refresher_poll() -> u64 {
    30_000
}
fn default_idle_after() -> u64 {
    86_400
}
fn default_registry_poll() -> u64 {
    1_000
}
fn default_registry_reconcile() -> u64 {
    300
}
fn default_fleet_shards() -> u32 {
    64
}
fn default_fleet_lease() -> u64 {
    15_000
}
fn default_warmup_spread() -> u64 {
    60
}

/// A callback told of every managed app loaded (appid, secret): the sandbox registers them in
/// its simulator.
#[derive(Clone)]
pub struct AppHook(pub std::sync::Arc<AppHookFn>);

/// What an [`AppHook`] calls: `(appid, secret)`.
pub type AppHookFn = dyn Fn(&str, &str) + Send + Sync;

impl std::fmt::Debug for AppHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AppHook")
    }
}

/// When an app gets a token (see [`Config::warm`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WarmPolicy {
    /// Every enabled app's token is kept fresh.
    #[default]
    Always,
    /// Only apps in use are kept fresh.
    OnUse,
}

fn default_pool_size() -> u32 {
    16
}
fn default_acquire_timeout_ms() -> u64 {
    3000
}

/// How `sqlite://` databases commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SqliteSync {
    /// `synchronous=FULL`: a commit is on disk before it is acknowledged — a push answered
    /// `success` survives a power loss. The default.
    #[default]
    Full,
    /// `synchronous=NORMAL`: faster; the last commits can be lost on power loss (not on a
    /// process crash).
    Normal,
}

/// The session tokens `POST /v1/login` issues (both kinds are always accepted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionTokens {
    /// `wa_` + base64url of the issue time (Unix ms, 6 bytes) and 32 random bytes; the
    /// session's key starts with the time, so the sessions index grows at its end. The
    /// default. Releases before this one cannot find these sessions (they answer 401).
    #[default]
    Timed,
    /// `wa_` + base64url of 32 random bytes, keyed by their SHA-256: what earlier releases
    /// issue and look up. For the length of a rolling upgrade from one of them (and for as long
    /// as a rollback to one must keep today's sessions).
    Random,
}

/// Where rate-limit counters live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RateLimitBackend {
    /// In this process: each instance has its own budget.
    #[default]
    Local,
    /// In Redis (`redis_url`): the fleet shares one budget. Falls back to the local counters
    /// while Redis is unreachable.
    Redis,
}

/// The whole configuration.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to listen on. Env `WEAPP_LISTEN`. Default `127.0.0.1:8080`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// `sqlite://path.db` (created if missing) or `postgres://…`. Env `WEAPP_DATABASE_URL`.
    #[serde(default = "default_database_url")]
    pub database_url: String,
    /// Connections in the database pool (per instance; mind Postgres' `max_connections` ×
    /// instances). Env `WEAPP_DATABASE_POOL_SIZE`. Default 16.
    #[serde(default = "default_pool_size")]
    pub database_pool_size: u32,
    /// How long a request waits for a pooled connection before it is answered 503 with
    /// `Retry-After`. Env `WEAPP_DATABASE_ACQUIRE_TIMEOUT_MS`. Default 3000.
    #[serde(default = "default_acquire_timeout_ms")]
    pub database_acquire_timeout_ms: u64,
    /// SQLite durability: `full` (default; acknowledged pushes survive power loss) or `normal`.
    /// Env `WEAPP_SQLITE_SYNCHRONOUS`.
    #[serde(default)]
    pub sqlite_synchronous: SqliteSync,
    /// Optional Redis shared by all instances (token cache, refresh locks, push replay memory,
    /// shared rate limits). Env `WEAPP_REDIS_URL`.
    #[serde(default)]
    pub redis_url: Option<String>,
    /// Key prefix in Redis. Env `WEAPP_REDIS_PREFIX`. Default `weapp`.
    #[serde(default = "default_prefix")]
    pub redis_prefix: String,
    /// The session tokens logins issue: `timed` (default) or `random` (the earlier releases'
    /// kind, which they can look up: set it on every instance while a fleet still runs one).
    /// Env `WEAPP_SESSION_TOKENS`.
    #[serde(default)]
    pub session_tokens: SessionTokens,
    /// Lifetime of a login session. Env `WEAPP_SESSION_TTL_SECS`. Default 7 days.
    #[serde(default = "default_session_ttl")]
    pub session_ttl_secs: u64,
    /// A session unused for this long ends (0: never). Env `WEAPP_SESSION_IDLE_TIMEOUT_SECS`.
    #[serde(default)]
    pub session_idle_timeout_secs: u64,
    /// Base64 of 32 bytes: the key that encrypts session_keys at rest. Env `WEAPP_DATA_KEY`.
    /// Shorthand for a one-key `data_keys`.
    #[serde(default)]
    pub data_key: Option<Secret>,
    /// The data keys, newest first: values are sealed with the first and opened with whichever
    /// sealed them, so a key rotates by putting a new one in front. Env `WEAPP_DATA_KEYS`
    /// (comma-separated).
    #[serde(default)]
    pub data_keys: Vec<Secret>,
    /// Without any data key, generate one and keep it in the database — beside the data it
    /// protects. Refused unless this is true (the sandbox always allows it).
    /// Env `WEAPP_ALLOW_GENERATED_DATA_KEY`.
    #[serde(default)]
    pub allow_generated_data_key: bool,
    /// `POST /v1/login` requests per minute per client IP (IPv6 per /64). Env
    /// `WEAPP_LOGIN_RATE_LIMIT_PER_MINUTE` (or `WEAPP_LOGIN_RATE_LIMIT`). Default 60; 0 disables.
    #[serde(default = "default_login_rate")]
    pub login_rate_limit_per_minute: u32,
    /// `POST /v1/me/decrypt` requests per minute per session. Env
    /// `WEAPP_DECRYPT_RATE_LIMIT_PER_MINUTE`. Default 10; 0 disables.
    #[serde(default = "default_decrypt_rate")]
    pub decrypt_rate_limit_per_minute: u32,
    /// `POST /v1/me/phone` requests per minute per user (every session and access token of
    /// the user draws on it): each asks WeChat with the app's token. Env
    /// `WEAPP_PHONE_RATE_LIMIT_PER_MINUTE`. Default 5; 0 disables.
    #[serde(default = "default_phone_rate")]
    pub phone_rate_limit_per_minute: u32,
    /// Refuse encryptedData whose `watermark.timestamp` is older than this. Env
    /// `WEAPP_DECRYPT_MAX_AGE_SECS`. Default 3600; 0 disables.
    #[serde(default = "default_decrypt_max_age")]
    pub decrypt_max_age_secs: u64,
    /// Failed authentications (session tokens, client keys, mirror secrets, admin keys) per
    /// minute per client IP before that IP is refused with 429. Env
    /// `WEAPP_AUTH_FAILURE_LIMIT_PER_MINUTE`. Default 20; 0 disables.
    #[serde(default = "default_auth_failure_rate")]
    pub auth_failure_limit_per_minute: u32,
    /// Where rate-limit counters live: `local` (default) or `redis`. Env
    /// `WEAPP_RATE_LIMIT_BACKEND`.
    #[serde(default)]
    pub rate_limit_backend: RateLimitBackend,
    /// The most clients a local limiter tracks in a minute; beyond it, a newcomer makes room by
    /// forgetting the earliest one still under its limit (memory stays bounded under a flood of
    /// addresses, a client at its limit stays refused, and no client is ever counted against
    /// another's budget). Env `WEAPP_RATE_LIMIT_MAX_KEYS`.
    /// Default 100,000.
    #[serde(default = "default_rate_limit_max_keys")]
    pub rate_limit_max_keys: usize,
    /// Proxies whose `X-Forwarded-For` is believed (CIDRs or addresses): the client is the
    /// rightmost hop that is not one of them. Env `WEAPP_TRUSTED_PROXIES` (comma-separated).
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Deprecated: `true` trusts loopback and private-network proxies (as if `trusted_proxies`
    /// listed 127.0.0.0/8, ::1, 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, fc00::/7). Prefer
    /// `trusted_proxies`. Env `WEAPP_TRUST_FORWARDED_FOR`.
    #[serde(default)]
    pub trust_forwarded_for: bool,
    /// Internal addresses (CIDRs or addresses) webhooks and API hosts (`api_base`) may point
    /// at. Without them every loopback, private (RFC 1918, `fc00::/7`), link-local and cloud
    /// metadata, CGNAT (`100.64.0.0/10`), unspecified, multicast, broadcast and reserved address
    /// is refused — a name by every address it resolves to, at start-up, at the admin API and
    /// at each delivery. Env `WEAPP_WEBHOOK_ALLOW_PRIVATE` (comma-separated).
    #[serde(default)]
    pub webhook_allow_private: Vec<String>,
    /// A broker report of a failing token refreshes it at most once per this many seconds per
    /// app, fleet-wide, however many reports arrive. Env `WEAPP_INVALIDATE_MIN_INTERVAL_SECS`.
    /// Default 60.
    #[serde(default = "default_invalidate_interval")]
    pub invalidate_min_interval_secs: u64,
    /// `GET /v1/me` lists the user's accounts in other apps (same unionid). Env
    /// `WEAPP_EXPOSE_LINKED_ACCOUNTS`. Default false.
    #[serde(default)]
    pub expose_linked_accounts: bool,
    /// Per-request timeout in seconds. Env `WEAPP_REQUEST_TIMEOUT_SECS`. Default 15.
    #[serde(default = "default_timeout")]
    pub request_timeout_secs: u64,
    /// Maximum request body in bytes. Env `WEAPP_BODY_LIMIT_BYTES`. Default 64 KiB.
    #[serde(default = "default_body_limit")]
    pub body_limit_bytes: usize,
    /// A connection must deliver a whole request head (request line and headers) within this
    /// many seconds of its first byte, and its first head within this long of being accepted;
    /// otherwise it is closed. Env `WEAPP_HEADER_READ_TIMEOUT_SECS`. Default 10; 1–3,600.
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout_secs: u64,
    /// A keep-alive connection with no request for this many seconds is closed. Env
    /// `WEAPP_CONNECTION_IDLE_TIMEOUT_SECS`. Default 60; 1–3,600.
    #[serde(default = "default_connection_idle_timeout")]
    pub connection_idle_timeout_secs: u64,
    /// Connections held at once; one more is answered 503 and closed. Never more than the
    /// open-file limit allows (less a headroom for the database and the rest); 0: only that
    /// bound. Env `WEAPP_MAX_CONNECTIONS`. Default 10,000.
    #[serde(default = "default_max_connections")]
    pub max_connections: u64,
    /// Connections held at once from one peer address (an IPv6 peer by its /64), never more
    /// than half of `max_connections`; 0: no such cap. The peer is the TCP peer: behind a load
    /// balancer it is the balancer, so list it in `trusted_proxies` (whose connections are not
    /// capped one by one) or set 0, and cap clients at the balancer. Env
    /// `WEAPP_MAX_CONNECTIONS_PER_IP`. Default 256.
    #[serde(default = "default_max_connections_per_ip")]
    pub max_connections_per_ip: u64,
    /// First webhook retry delay in milliseconds; it doubles per attempt. Env
    /// `WEAPP_WEBHOOK_RETRY_BASE_MS`. Default 1000.
    #[serde(default = "default_retry_base")]
    pub webhook_retry_base_ms: u64,
    /// Longest delay between webhook retries, in seconds. Env `WEAPP_WEBHOOK_RETRY_MAX_SECS`.
    /// Default 600.
    #[serde(default = "default_retry_max")]
    pub webhook_retry_max_secs: u64,
    /// Timeout of one webhook request, in seconds. Env `WEAPP_WEBHOOK_TIMEOUT_SECS`. Default 10.
    #[serde(default = "default_timeout_webhook")]
    pub webhook_timeout_secs: u64,
    /// How long an instance holds a claimed delivery; must exceed `webhook_timeout_secs`.
    /// Env `WEAPP_WEBHOOK_LEASE_SECS`. Default 60.
    #[serde(default = "default_webhook_lease")]
    pub webhook_lease_secs: u64,
    /// Attempts before a delivery is dead-lettered (kept, counted, redeliverable). Env
    /// `WEAPP_WEBHOOK_MAX_ATTEMPTS`. Default 15.
    #[serde(default = "default_webhook_attempts")]
    pub webhook_max_attempts: u32,
    /// The mini programs served.
    #[serde(default)]
    pub apps: Vec<AppConfig>,
    /// Callers of the token broker.
    #[serde(default)]
    pub clients: Vec<ClientConfig>,
    /// Administrators: callers of the admin API (`/v1/admin/…`) and the admin console.
    #[serde(default)]
    pub admins: Vec<AdminConfig>,
    /// Third-party platforms (开放平台): their tickets and merchants' refresh tokens are kept in
    /// the database.
    #[serde(default)]
    pub platforms: Vec<PlatformConfig>,
    /// How often every platform's merchants are reconciled with WeChat's authorizer list
    /// (refresh tokens restored, missed de-authorizations applied); 0: never. Env
    /// `WEAPP_PLATFORM_RECONCILE_SECS`. Default 86,400 (nightly).
    #[serde(default = "default_platform_reconcile")]
    pub platform_reconcile_secs: u64,
    /// Requests per minute each administrator may make to the admin API. Env
    /// `WEAPP_ADMIN_RATE_LIMIT_PER_MINUTE`. Default 600; 0 disables.
    #[serde(default = "default_admin_rate")]
    pub admin_rate_limit_per_minute: u32,
    /// When apps get a token: `always` (every enabled app is kept warm, the default) or
    /// `on_use` (an app is fetched at its first broker read or API call, kept warm while used,
    /// and goes cold after `idle_after_secs` without use — idle apps cost nothing upstream). An
    /// app may set its own. Env `WEAPP_WARM`.
    #[serde(default)]
    pub warm: WarmPolicy,
    /// With `warm = "on_use"`, how long an unused app stays warm. Env `WEAPP_IDLE_AFTER_SECS`.
    /// Default 86,400.
    #[serde(default = "default_idle_after")]
    pub idle_after_secs: u64,
    /// How often an instance looks for apps and clients changed through the admin API (one
    /// small query). Env `WEAPP_REGISTRY_POLL_MS`. Default 1,000.
    #[serde(default = "default_registry_poll")]
    pub registry_poll_ms: u64,
    /// How often an instance re-reads every managed app and client, healing anything a poll
    /// missed. Env `WEAPP_REGISTRY_RECONCILE_SECS`. Default 300.
    #[serde(default = "default_registry_reconcile")]
    pub registry_reconcile_secs: u64,
    /// With Redis, apps are spread over this many shards; each shard is refreshed by the one
    /// instance holding its lease. Env `WEAPP_FLEET_SHARDS`. Default 64.
    #[serde(default = "default_fleet_shards")]
    pub fleet_shards: u32,
    /// The longest a dead instance's apps wait before another instance takes them (a shard
    /// lease lives three quarters of it and is renewed every quarter). Env
    /// `WEAPP_FLEET_LEASE_MS`. Default 15,000.
    #[serde(default = "default_fleet_lease")]
    pub fleet_lease_ms: u64,
    /// First tokens of many apps at once (start-up, apps taking over) are spread over this
    /// long. Env `WEAPP_WARMUP_SPREAD_SECS`. Default 60.
    #[serde(default = "default_warmup_spread")]
    pub warmup_spread_secs: u64,
    /// How often a token's background refresher looks at it (and another instance's refresh
    /// is noticed). Env `WEAPP_REFRESHER_POLL_MS`. Default 30,000.
    #[serde(default = "default_refresher_poll")]
    pub refresher_poll_ms: u64,
    /// Lifetime of the access tokens (JWT) handed out at login and refresh (never past the end
    /// of their session). A backend verifying an access token alone accepts it until it
    /// expires, even after a logout (this server refuses it at once), so keep it short. Env
    /// `WEAPP_ACCESS_TOKEN_TTL_SECS`. Default 900 (15 minutes); 5–86,400.
    #[serde(default = "default_access_token_ttl")]
    pub access_token_ttl_secs: u64,
    /// The `iss` of access tokens (and what they are checked against), e.g. this service's
    /// public URL. Env `WEAPP_ACCESS_TOKEN_ISSUER`. Default `weapp-server`.
    #[serde(default = "default_issuer")]
    pub access_token_issuer: String,
    /// Signing keys rotate after this many days (0: only when an administrator rotates). Env
    /// `WEAPP_SIGNING_KEY_ROTATE_DAYS`. Default 30.
    #[serde(default = "default_rotate_days")]
    pub signing_key_rotate_days: u64,
    /// A new signing key is published this long before it signs, so backends caching the JWKS
    /// (typically five minutes) know it before they meet it. Env
    /// `WEAPP_SIGNING_KEY_PUBLISH_AHEAD_SECS`. Default 600.
    #[serde(default = "default_publish_ahead")]
    pub signing_key_publish_ahead_secs: u64,
    /// The clock token expiry is measured with (not from the file): tests and simulations drive
    /// a virtual day with a manual clock shared with weapp-sim. Default: the system clock.
    #[serde(skip)]
    pub clock: Option<std::sync::Arc<dyn weapp::clock::Clock>>,
    /// Set by `weapp serve --sandbox` (not from the file): the simulator every app talks to,
    /// the default (and only) `api_base` of apps registered through the admin API.
    #[serde(skip)]
    pub sandbox_api_base: Option<String>,
    /// Set by `weapp serve --sandbox` (not from the file): called with the appid and secret of
    /// every managed app an instance loads, so the simulator knows it too.
    #[serde(skip)]
    pub app_hook: Option<AppHook>,
    /// Set by `weapp serve --sandbox` (not from the file): the database must be a sandbox one.
    #[serde(skip)]
    pub sandbox: bool,
    /// How host names of webhooks and API hosts are resolved (not from the file): tests answer
    /// with their own resolver. Default: the system's.
    #[serde(skip)]
    pub resolver: Option<std::sync::Arc<dyn crate::egress::Resolver>>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("database_url", &redact_url(&self.database_url))
            .field("database_pool_size", &self.database_pool_size)
            .field("redis_url", &self.redis_url.as_deref().map(redact_url))
            .field("redis_prefix", &self.redis_prefix)
            .field("session_ttl_secs", &self.session_ttl_secs)
            .field("session_tokens", &self.session_tokens)
            .field("data_key", &self.data_key)
            .field("data_keys", &self.data_keys)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("webhook_allow_private", &self.webhook_allow_private)
            .field("apps", &self.apps)
            .field("clients", &self.clients)
            .field("admins", &self.admins)
            .field("platforms", &self.platforms)
            .field("warm", &self.warm)
            .field("sandbox", &self.sandbox)
            .finish_non_exhaustive()
    }
}

/// One mini program.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// The appid.
    pub appid: String,
    /// The AppSecret (prefer `secret_env`).
    #[serde(default)]
    pub secret: Option<Secret>,
    /// Name of the environment variable holding the AppSecret.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// WeChat's API host, or a weapp-sim URL.
    #[serde(default = "default_api_base")]
    pub api_base: String,
    /// `stable` (default) or `classic`.
    #[serde(default)]
    pub token_mode: TokenMode,
    /// Message push receiver settings (used by the push receiver).
    #[serde(default)]
    pub push: Option<PushConfig>,
    /// This app's warm policy (default: the server's `warm`).
    #[serde(default)]
    pub warm: Option<WarmPolicy>,
    /// Whether login and `POST /v1/session/refresh` hand out signed access tokens (JWT) for
    /// this app. Default true.
    #[serde(default = "yes")]
    pub access_tokens: bool,
}

fn yes() -> bool {
    true
}

/// `[apps.push]`: where WeChat pushes messages for this app.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushConfig {
    /// The Token set in the WeChat console.
    pub token: Secret,
    /// The 43-character EncodingAESKey (compatible and safe mode).
    #[serde(default)]
    pub encoding_aes_key: Option<Secret>,
    /// `safe` or `compatible` (both need `encoding_aes_key`; only the encrypted copy, signed
    /// over its ciphertext, is accepted), or `plain` — which must be chosen explicitly, as
    /// plaintext pushes are signed over nothing but a timestamp and a nonce. Default: `safe`
    /// with a key; without one the setting is required.
    #[serde(default)]
    pub mode: Option<PushMode>,
    /// Where verified events are delivered.
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// Key of the webhook signature (required with `webhook_url`).
    #[serde(default)]
    pub webhook_secret: Option<Secret>,
    /// Refuse pushes whose timestamp is further than this from now, and replays of a
    /// (timestamp, nonce) within it. Default 300; 0 disables (the durable MsgId
    /// de-duplication still applies).
    #[serde(default = "default_replay_window")]
    pub replay_window_secs: u64,
}

impl std::fmt::Debug for AppConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppConfig")
            .field("appid", &self.appid)
            .field("secret", &self.secret)
            .field("secret_env", &self.secret_env)
            .field("api_base", &redact_url(&self.api_base))
            .field("token_mode", &self.token_mode)
            .field("push", &self.push)
            .field("warm", &self.warm)
            .finish()
    }
}

impl std::fmt::Debug for PushConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushConfig")
            .field("token", &self.token)
            .field("encoding_aes_key", &self.encoding_aes_key)
            .field("mode", &self.mode)
            .field(
                "webhook_url",
                &self.webhook_url.as_deref().map(redact_webhook_url),
            )
            .field("webhook_secret", &self.webhook_secret)
            .field("replay_window_secs", &self.replay_window_secs)
            .finish()
    }
}

fn default_replay_window() -> u64 {
    300
}

/// What a broker client may do.
pub const SCOPES: &[&str] = &[
    "token:read",
    "token:invalidate",
    "events:read",
    "events:redeliver",
    "sessions:introspect",
];

/// `[[platforms]]`: a third-party platform. WeChat pushes its tickets and authorization events
/// to `POST /v1/platforms/{component_appid}/events`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlatformConfig {
    /// The component appid.
    pub component_appid: String,
    /// The component secret (prefer `secret_env`).
    #[serde(default)]
    pub secret: Option<Secret>,
    /// Name of the environment variable holding the component secret.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// The message-check Token of the authorization-event URL.
    pub token: Secret,
    /// The 43-character EncodingAESKey of the authorization-event URL.
    pub encoding_aes_key: Secret,
    /// WeChat's API host, or a weapp-sim URL.
    #[serde(default = "default_api_base")]
    pub api_base: String,
    /// Where the merchants' pushes (received at
    /// `/v1/platforms/{component_appid}/apps/{appid}/push`) are delivered as webhooks.
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// Key of the webhook signature (required with `webhook_url`).
    #[serde(default)]
    pub webhook_secret: Option<Secret>,
}

impl std::fmt::Debug for PlatformConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlatformConfig")
            .field("component_appid", &self.component_appid)
            .field("secret", &self.secret)
            .field("secret_env", &self.secret_env)
            .field("token", &self.token)
            .field("encoding_aes_key", &self.encoding_aes_key)
            .field("api_base", &redact_url(&self.api_base))
            .field(
                "webhook_url",
                &self.webhook_url.as_deref().map(redact_webhook_url),
            )
            .field("webhook_secret", &self.webhook_secret)
            .finish()
    }
}

impl PlatformConfig {
    /// Checks everything but the secret's presence: the component appid, the Token, the
    /// EncodingAESKey, the URLs, the webhook secret with a webhook URL.
    ///
    /// # Errors
    /// What is wrong, naming the field.
    pub fn check(&self) -> Result<(), PlatformConfigError> {
        let is_url = |u: &str| {
            (u.starts_with("http://") || u.starts_with("https://"))
                && u.len() <= 2048
                && reqwest::Url::parse(u).is_ok()
        };
        if self.component_appid.is_empty()
            || self.component_appid.len() > 64
            || !self
                .component_appid
                .chars()
                .all(|c| c.is_ascii_alphanumeric())
        {
            return Err(PlatformConfigError::ComponentAppid);
        }
        let token = self.token.expose();
        if token.trim().is_empty() || token.len() > 32 {
            return Err(PlatformConfigError::Token);
        }
        weapp::push::crypto::EncodingAesKey::new(self.encoding_aes_key.expose())
            .map_err(PlatformConfigError::EncodingAesKey)?;
        if !is_url(&self.api_base) || !weapp::http::is_base_url(&self.api_base) {
            return Err(PlatformConfigError::ApiBase);
        }
        if self.webhook_url.as_deref().is_some_and(|u| !is_url(u)) {
            return Err(PlatformConfigError::WebhookUrl);
        }
        if self
            .webhook_secret
            .as_ref()
            .is_some_and(|s| s.expose().len() < 16 || s.expose().len() > 256)
        {
            // As an app's: the key of every delivery's signature.
            return Err(PlatformConfigError::WebhookSecret);
        }
        if self.webhook_url.is_some() && self.webhook_secret.is_none() {
            return Err(PlatformConfigError::WebhookWithoutSecret);
        }
        Ok(())
    }

    /// The component secret, from the file or the environment.
    ///
    /// # Errors
    /// Neither given, or the variable is unset.
    pub fn resolve_secret(&self) -> Result<Secret, ConfigError> {
        match (&self.secret, &self.secret_env) {
            (Some(s), _) if !s.is_empty() => Ok(s.clone()),
            (_, Some(var)) => std::env::var(var)
                .ok()
                .filter(|v| !v.is_empty())
                .map(Secret::new)
                .ok_or_else(|| {
                    ConfigError(format!(
                        "platforms ({}): environment variable {var} is not set",
                        self.component_appid
                    ))
                }),
            _ => Err(ConfigError(format!(
                "platforms ({}): secret or secret_env is required",
                self.component_appid
            ))),
        }
    }
}

/// `[[admins]]`: a caller of the admin API.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// A name for the audit log.
    pub name: String,
    /// The key (prefer `key_sha256` or `key_env`).
    #[serde(default)]
    pub key: Option<Secret>,
    /// Name of the environment variable holding the key.
    #[serde(default)]
    pub key_env: Option<String>,
    /// Hex SHA-256 of the key: the file then holds no secret.
    #[serde(default)]
    pub key_sha256: Option<String>,
}

impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminConfig")
            .field("name", &self.name)
            .field("key", &self.key)
            .field("key_env", &self.key_env)
            .field("key_sha256", &self.key_sha256.as_ref().map(|_| "…"))
            .finish()
    }
}

impl AdminConfig {
    /// The SHA-256 of the admin's key (at least 24 characters), from `key_sha256`, `key` or
    /// `key_env`.
    ///
    /// # Errors
    /// None set, a missing variable, a short key or a malformed hash.
    pub fn resolve_key_hash(&self) -> Result<[u8; 32], ConfigError> {
        use sha2::{Digest, Sha256};
        if let Some(h) = &self.key_sha256 {
            return hex::decode(h.trim())
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(|| {
                    ConfigError(format!(
                        "admin {}: key_sha256 must be 64 hex digits",
                        self.name
                    ))
                });
        }
        let key = match (&self.key, &self.key_env) {
            (Some(k), _) if !k.is_empty() => k.expose().to_owned(),
            (_, Some(var)) => env(var).ok_or_else(|| {
                ConfigError(format!(
                    "admin {}: environment variable {var} is not set",
                    self.name
                ))
            })?,
            _ => {
                return Err(ConfigError(format!(
                    "admin {}: set `key`, `key_env` or `key_sha256`",
                    self.name
                )))
            }
        };
        if key.len() < 24 {
            return Err(ConfigError(format!(
                "admin {}: key must be at least 24 characters",
                self.name
            )));
        }
        Ok(Sha256::digest(key.as_bytes()).into())
    }
}

/// A caller of the token broker.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// A name for logs and metrics.
    pub name: String,
    /// The key itself (prefer `key_sha256` or `key_env`).
    #[serde(default)]
    pub key: Option<Secret>,
    /// Name of the environment variable holding the key.
    #[serde(default)]
    pub key_env: Option<String>,
    /// Hex SHA-256 of the key: the file then holds no secret.
    #[serde(default)]
    pub key_sha256: Option<String>,
    /// Appids this client may use.
    pub apps: Vec<String>,
    /// What it may do ([`SCOPES`]); without it, `token:read` and `token:invalidate`.
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
}

impl Default for Config {
    fn default() -> Self {
        toml::from_str("").expect("every field has a default")
    }
}

/// `line L, column C (`key = …`): message` — toml's own Display draws a multi-line caret
/// diagram. The offending line's value is never quoted, and quoted values in the message are
/// elided: either may be a secret (a password in a URL, a data key given as a string).
fn one_line(text: &str, e: &toml::de::Error) -> String {
    if let Some(m) = unknown_key(text, e) {
        return m;
    }
    let message = redact_quoted(e.message().trim()).replace('\n', " ");
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let line_start = before.rfind('\n').map_or(0, |i| i + 1);
            let column = before.len() - line_start + 1;
            // The key (or table header) of the offending line, never its value.
            let source = text[line_start..].lines().next().unwrap_or("").trim();
            let shown = if source.starts_with('[') {
                Some(source.to_owned())
            } else {
                source
                    .split_once('=')
                    .map(|(key, _)| format!("{} = …", key.trim()))
            };
            match shown {
                Some(s) => format!("line {line}, column {column} (`{s}`): {message}"),
                None => format!("line {line}, column {column}: {message}"),
            }
        }
        None => message,
    }
}

/// `text` with every double-quoted value replaced by `"…"`.
fn redact_quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut inside = false;
    for c in text.chars() {
        if c == '"' {
            if inside {
                out.push_str("…\"");
            } else {
                out.push('"');
            }
            inside = !inside;
        } else if !inside {
            out.push(c);
        }
    }
    out
}

/// The 1-based line of byte `offset` in `text`, and that line.
fn line_at(text: &str, offset: usize) -> (usize, &str) {
    let before = &text[..offset.min(text.len())];
    let start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text[start..].lines().next().unwrap_or("");
    (before.matches('\n').count() + 1, line)
}

/// serde's `unknown field `x`, expected one of `a`, `b`, …` rewritten as one short line:
/// where, which key, and the known key it most resembles — instead of every key there is.
/// `None` for any other error.
fn unknown_key(text: &str, e: &toml::de::Error) -> Option<String> {
    let rest = e.message().trim().strip_prefix("unknown field `")?;
    let (name, rest) = rest.split_once('`')?;
    // The known keys are the other backticked words (none after "there are no fields").
    let known: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
    let suggestion = did_you_mean(name, known.iter().copied());
    let (line, source) = match e.span() {
        Some(span) => {
            let (n, source) = line_at(text, span.start);
            (format!("line {n}: "), source.trim())
        }
        None => (String::new(), ""),
    };
    if source.starts_with('[') {
        // A table header: `[[app]]` for `[[apps]]`, `[apps.pussh]` for `[apps.push]`.
        let header = source.split('#').next().unwrap_or(source).trim();
        return Some(match suggestion {
            Some(s) => match header.rfind(name) {
                Some(i) => format!(
                    "{line}unknown table {header} — did you mean {}{s}{}?",
                    &header[..i],
                    &header[i + name.len()..]
                ),
                None => format!("{line}unknown table {header} — did you mean \"{s}\"?"),
            },
            None => format!("{line}unknown table {header}"),
        });
    }
    // The table the key is in: the nearest header above it (when the key starts its line,
    // i.e. is not inside an inline table).
    let starts_line = source.trim_start_matches('"').starts_with(name);
    let section = e
        .span()
        .filter(|_| starts_line)
        .and_then(|span| {
            text[..span.start.min(text.len())]
                .lines()
                .rev()
                .map(str::trim)
                .find(|l| l.starts_with('['))
        })
        .map(|h| {
            let h = h.split('#').next().unwrap_or(h).trim();
            format!(" in {h}")
        })
        .unwrap_or_default();
    Some(match suggestion {
        Some(s) => format!("{line}unknown key \"{name}\"{section} — did you mean \"{s}\"?"),
        // A short list helps; the sixty top-level keys do not (the README has the table).
        None if !known.is_empty() && known.len() <= 8 => format!(
            "{line}unknown key \"{name}\"{section} (known keys: {})",
            known.join(", ")
        ),
        None => format!("{line}unknown key \"{name}\"{section}"),
    })
}

/// The Damerau–Levenshtein distance (optimal string alignment: insertions, deletions,
/// substitutions and swaps of two neighbours each cost one).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// The candidate closest to `word` — ignoring case, and `-` for `_` — if it is close enough to
/// be a misspelling of it (a third of its length, at least one edit and at most three); the
/// first of equally close ones.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let norm = |s: &str| s.to_ascii_lowercase().replace('-', "_");
    let word = norm(word);
    let limit = (word.chars().count() / 3).clamp(1, 3);
    candidates
        .into_iter()
        .map(|c| (edit_distance(&word, &norm(c)), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// The tables written with the wrong brackets, which serde would only call "invalid type":
/// `[apps]` where `[[apps]]` (an array of tables) is meant, and `[[apps.push]]` for
/// `[apps.push]`.
fn shape_hint(table: &toml::Table, text: &str) -> Option<String> {
    // The first line defining `key` (a header `[key]`, `[key.…]`, `[[key]]`, or `key = `).
    let line_of = |key: &str| {
        text.lines()
            .position(|l| {
                let l: String = l.chars().filter(|c| !c.is_whitespace()).collect();
                let l = l.trim_start_matches('[');
                l.strip_prefix(key)
                    .is_some_and(|r| r.starts_with([']', '.', '=']))
            })
            .map_or(String::new(), |i| format!("line {}: ", i + 1))
    };
    for (list, one) in [
        ("apps", "app"),
        ("clients", "broker client"),
        ("admins", "administrator"),
        ("platforms", "platform"),
    ] {
        if matches!(table.get(list), Some(toml::Value::Table(_))) {
            return Some(format!(
                "{}{list} must be an array of tables: write [[{list}]] (double brackets), one block per {one}, not [{list}]",
                line_of(list)
            ));
        }
    }
    if let Some(toml::Value::Array(apps)) = table.get("apps") {
        if apps
            .iter()
            .any(|a| matches!(a.get("push"), Some(toml::Value::Array(_))))
        {
            return Some(format!(
                "{}an app has one push receiver: write [apps.push] (single brackets), not [[apps.push]]",
                line_of("apps.push")
            ));
        }
    }
    None
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// How an environment value is read.
#[derive(Clone, Copy)]
enum Kind {
    /// Taken as it is.
    Text,
    /// A TOML number or boolean (so `99999999999` for a 32-bit setting is an error, not 0).
    Scalar,
    /// Comma-separated text values.
    List,
}

/// Every top-level setting, with its environment variable `WEAPP_<NAME>`.
const ENV_SETTINGS: &[(&str, Kind)] = &[
    ("listen", Kind::Text),
    ("database_url", Kind::Text),
    ("database_pool_size", Kind::Scalar),
    ("database_acquire_timeout_ms", Kind::Scalar),
    ("sqlite_synchronous", Kind::Text),
    ("redis_url", Kind::Text),
    ("redis_prefix", Kind::Text),
    ("session_ttl_secs", Kind::Scalar),
    ("session_tokens", Kind::Text),
    ("session_idle_timeout_secs", Kind::Scalar),
    ("data_key", Kind::Text),
    ("data_keys", Kind::List),
    ("allow_generated_data_key", Kind::Scalar),
    ("login_rate_limit_per_minute", Kind::Scalar),
    ("decrypt_rate_limit_per_minute", Kind::Scalar),
    ("phone_rate_limit_per_minute", Kind::Scalar),
    ("decrypt_max_age_secs", Kind::Scalar),
    ("auth_failure_limit_per_minute", Kind::Scalar),
    ("rate_limit_backend", Kind::Text),
    ("rate_limit_max_keys", Kind::Scalar),
    ("trusted_proxies", Kind::List),
    ("trust_forwarded_for", Kind::Scalar),
    ("webhook_allow_private", Kind::List),
    ("invalidate_min_interval_secs", Kind::Scalar),
    ("expose_linked_accounts", Kind::Scalar),
    ("request_timeout_secs", Kind::Scalar),
    ("body_limit_bytes", Kind::Scalar),
    ("header_read_timeout_secs", Kind::Scalar),
    ("connection_idle_timeout_secs", Kind::Scalar),
    ("max_connections", Kind::Scalar),
    ("max_connections_per_ip", Kind::Scalar),
    ("webhook_retry_base_ms", Kind::Scalar),
    ("webhook_retry_max_secs", Kind::Scalar),
    ("webhook_timeout_secs", Kind::Scalar),
    ("webhook_lease_secs", Kind::Scalar),
    ("webhook_max_attempts", Kind::Scalar),
    ("warm", Kind::Text),
    ("idle_after_secs", Kind::Scalar),
    ("registry_poll_ms", Kind::Scalar),
    ("registry_reconcile_secs", Kind::Scalar),
    ("fleet_shards", Kind::Scalar),
    ("fleet_lease_ms", Kind::Scalar),
    ("warmup_spread_secs", Kind::Scalar),
    ("refresher_poll_ms", Kind::Scalar),
    ("admin_rate_limit_per_minute", Kind::Scalar),
    ("access_token_ttl_secs", Kind::Scalar),
    ("access_token_issuer", Kind::Text),
    ("signing_key_rotate_days", Kind::Scalar),
    ("signing_key_publish_ahead_secs", Kind::Scalar),
    ("platform_reconcile_secs", Kind::Scalar),
];

/// Older names still read.
const ENV_ALIASES: &[(&str, &str)] = &[("WEAPP_LOGIN_RATE_LIMIT", "login_rate_limit_per_minute")];

/// `WEAPP_*` variables that are not settings of `weapp serve` but are read elsewhere in the
/// project, so a shell that exports them is normal and `weapp serve` does not warn about them:
/// the `weapp` command's own (logging, and the other subcommands' flags: `token`, `api`,
/// `decrypt`, `sim`, `push`), the backends' (`examples/flask`, `examples/express`: what
/// `weapp serve --sandbox` prints for them to paste), and the scripts' and tests'.
pub const OTHER_ENV_VARS: &[&str] = &[
    // the `weapp` command
    "WEAPP_LOG",
    "WEAPP_LOG_FORMAT",
    "WEAPP_APPID",
    "WEAPP_SECRET",
    "WEAPP_API_BASE",
    "WEAPP_TOKEN_STORE",
    "WEAPP_SESSION_KEY",
    "WEAPP_SIM_LISTEN",
    "WEAPP_PUSH_TOKEN",
    "WEAPP_PUSH_AES_KEY",
    // backends, and the sandbox's block for them
    "WEAPP_URL",
    "WEAPP_ISSUER",
    "WEAPP_CLIENT_KEY",
    "WEAPP_ADMIN_KEY",
    "WEAPP_WEBHOOK_SECRET",
    "WEAPP_TEMPLATE_ID",
    // scripts and tests
    "WEAPP_BIN",
];

/// Prefixes of `WEAPP_*` variables that are not settings either: test fixtures
/// (`WEAPP_TEST_POSTGRES_URL`, …).
pub const OTHER_ENV_PREFIXES: &[&str] = &["WEAPP_TEST_"];

/// Every environment variable a setting is read from: `WEAPP_CONFIG`, `WEAPP_<SETTING>` for
/// every top-level setting, and the older names still read.
pub fn setting_env_vars() -> Vec<String> {
    std::iter::once("WEAPP_CONFIG".to_owned())
        .chain(
            ENV_SETTINGS
                .iter()
                .map(|(name, _)| format!("WEAPP_{}", name.to_ascii_uppercase())),
        )
        .chain(ENV_ALIASES.iter().map(|(alias, _)| (*alias).to_owned()))
        .collect()
}

/// A `WEAPP_*` environment variable nothing reads: most likely a misspelt setting, which would
/// otherwise be ignored without a word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownEnvVar {
    /// Its name (never its value).
    pub name: String,
    /// The known variable it most resembles.
    pub suggestion: Option<String>,
}

impl std::fmt::Display for UnknownEnvVar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "environment variable {} is not a weapp setting and is ignored",
            self.name
        )?;
        match &self.suggestion {
            Some(s) => write!(f, " — did you mean {s}?"),
            None => Ok(()),
        }
    }
}

/// The variables among `names` (e.g. `std::env::vars_os().map(|(k, _)| k)`) that start with
/// `WEAPP_` but are neither a setting ([`setting_env_vars`]) nor read elsewhere
/// ([`OTHER_ENV_VARS`], [`OTHER_ENV_PREFIXES`]), sorted by name.
pub fn unknown_env_vars(names: impl IntoIterator<Item = std::ffi::OsString>) -> Vec<UnknownEnvVar> {
    let settings = setting_env_vars();
    let known: Vec<&str> = settings
        .iter()
        .map(String::as_str)
        .chain(OTHER_ENV_VARS.iter().copied())
        .collect();
    let mut unknown: Vec<UnknownEnvVar> = names
        .into_iter()
        .filter_map(|n| n.into_string().ok())
        .filter(|n| n.starts_with("WEAPP_"))
        .filter(|n| !known.contains(&n.as_str()))
        .filter(|n| !OTHER_ENV_PREFIXES.iter().any(|p| n.starts_with(p)))
        .map(|name| {
            // Compared without the common prefix, so that it does not make every name close.
            let suggestion = did_you_mean(
                &name["WEAPP_".len()..],
                known.iter().map(|k| &k["WEAPP_".len()..]),
            )
            .map(|s| format!("WEAPP_{s}"));
            UnknownEnvVar { name, suggestion }
        })
        .collect();
    unknown.sort_by(|a, b| a.name.cmp(&b.name));
    unknown
}

fn env_value(var: &str, raw: &str, kind: Kind) -> Result<toml::Value, ConfigError> {
    let secret = var.contains("KEY") || var.contains("URL");
    let shown = if secret { "***" } else { raw };
    match kind {
        Kind::Text => Ok(toml::Value::String(raw.to_owned())),
        Kind::List => Ok(toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(|v| toml::Value::String(v.to_owned()))
                .collect(),
        )),
        Kind::Scalar => toml::from_str::<toml::Table>(&format!("v = {raw}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .filter(|v| matches!(v, toml::Value::Integer(_) | toml::Value::Boolean(_)))
            .ok_or_else(|| {
                ConfigError(format!(
                    "{var} must be a number or true/false, got `{shown}`"
                ))
            }),
    }
}

impl Config {
    /// Reads `path` (if given; `WEAPP_CONFIG` otherwise), then applies environment overrides
    /// (`WEAPP_<SETTING>` for every top-level setting), each parsed strictly.
    ///
    /// # Errors
    /// Unreadable file, invalid TOML (with the line), unknown keys, bad environment values
    /// (naming the variable).
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let path = path
            .map(Path::to_path_buf)
            .or_else(|| env("WEAPP_CONFIG").map(Into::into));
        let (mut table, text, origin) = match path {
            Some(p) => {
                let text = std::fs::read_to_string(&p)
                    .map_err(|e| ConfigError(format!("cannot read {}: {e}", p.display())))?;
                let table: toml::Table = toml::from_str(&text).map_err(|e| {
                    ConfigError(format!("{}: {}", p.display(), one_line(&text, &e)))
                })?;
                if let Some(hint) = shape_hint(&table, &text) {
                    return Err(ConfigError(format!("{}: {hint}", p.display())));
                }
                (table, text, p.display().to_string())
            }
            None => (toml::Table::new(), String::new(), "defaults".to_owned()),
        };
        // The file alone first, from its text, so its errors point at its lines.
        let _: Config = toml::from_str(&text)
            .map_err(|e| ConfigError(format!("{origin}: {}", one_line(&text, &e))))?;
        let mut vars: Vec<(String, &str, Kind)> = ENV_SETTINGS
            .iter()
            .map(|(name, kind)| (format!("WEAPP_{}", name.to_ascii_uppercase()), *name, *kind))
            .collect();
        for (alias, name) in ENV_ALIASES {
            let kind = ENV_SETTINGS
                .iter()
                .find(|(n, _)| n == name)
                .map_or(Kind::Text, |(_, k)| *k);
            vars.insert(0, ((*alias).to_owned(), name, kind));
        }
        for (var, name, kind) in vars {
            let Some(raw) = env(&var) else { continue };
            let value = env_value(&var, &raw, kind)?;
            // Each variable on its own, so an error names it.
            let mut single = toml::Table::new();
            single.insert(name.to_owned(), value.clone());
            let _: Config = single.try_into().map_err(|e: toml::de::Error| {
                ConfigError(format!(
                    "{var}: {}",
                    redact_quoted(e.message().trim()).replace('\n', " ")
                ))
            })?;
            table.insert(name.to_owned(), value);
        }
        table.try_into().map_err(|e: toml::de::Error| {
            ConfigError(redact_quoted(e.message().trim()).replace('\n', " "))
        })
    }

    /// The data keys, newest first (`data_keys`, or `data_key` alone).
    pub fn data_key_list(&self) -> Vec<Secret> {
        if self.data_keys.is_empty() {
            self.data_key.iter().cloned().collect()
        } else {
            self.data_keys.clone()
        }
    }

    /// The proxies whose `X-Forwarded-For` is believed.
    ///
    /// # Errors
    /// An entry that is not an address or CIDR.
    pub fn trusted_proxy_nets(&self) -> Result<Vec<crate::net::IpNet>, ConfigError> {
        let mut nets = self
            .trusted_proxies
            .iter()
            .map(|p| {
                p.parse()
                    .map_err(|e| ConfigError(format!("trusted_proxies: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if nets.iter().any(crate::net::IpNet::is_everything) {
            return Err(ConfigError(
                "trusted_proxies must not trust every address (a /0): the client would choose its own address".into(),
            ));
        }
        if self.trust_forwarded_for && nets.is_empty() {
            nets = crate::net::IpNet::private_ranges();
        }
        Ok(nets)
    }

    /// The internal ranges webhooks and API hosts may point at (`webhook_allow_private`).
    ///
    /// # Errors
    /// An entry that is not an address or CIDR.
    pub fn webhook_allow_nets(&self) -> Result<Vec<crate::net::IpNet>, ConfigError> {
        self.webhook_allow_private
            .iter()
            .map(|p| {
                let net: crate::net::IpNet = p
                    .parse()
                    .map_err(|e| ConfigError(format!("webhook_allow_private: {e}")))?;
                if net.is_everything() {
                    return Err(ConfigError(format!(
                        "webhook_allow_private: {p} allows every address; list the internal ranges webhooks and API hosts may reach"
                    )));
                }
                Ok(net)
            })
            .collect()
    }

    /// The outbound policy of this configuration: `webhook_allow_private`, and its resolver
    /// (the system's unless a test set one).
    ///
    /// # Errors
    /// A malformed `webhook_allow_private` entry.
    pub fn egress(&self) -> Result<crate::egress::Egress, ConfigError> {
        let resolver = self
            .resolver
            .clone()
            .unwrap_or_else(|| std::sync::Arc::new(crate::egress::SystemResolver));
        Ok(crate::egress::Egress::new(
            self.webhook_allow_nets()?,
            resolver,
        ))
    }

    /// Checks where every webhook URL and API host of the file points, after resolving names
    /// (each distinct host once): none may be an internal address `egress` does not allow. The
    /// sandbox's simulator (every API host there) and WeChat's own API host (the default) are
    /// exempt. A name that
    /// does not resolve now is accepted with a warning (each delivery resolves and checks it
    /// again).
    ///
    /// # Errors
    /// The first target refused, naming the setting.
    pub async fn check_targets(&self, egress: &crate::egress::Egress) -> Result<(), ConfigError> {
        // The sandbox's simulator, and WeChat's own host (the default: some deployments reach
        // it through an internal forward proxy named in /etc/hosts), are not judged.
        let sandbox = |url: &str| {
            let url = url.trim_end_matches('/');
            url == weapp::DEFAULT_BASE_URL.trim_end_matches('/')
                || self
                    .sandbox_api_base
                    .as_deref()
                    .is_some_and(|sim| sim.trim_end_matches('/') == url)
        };
        let mut targets: Vec<(String, &str)> = Vec::new();
        for (i, app) in self.apps.iter().enumerate() {
            if !sandbox(&app.api_base) {
                targets.push((format!("apps[{i}].api_base"), &app.api_base));
            }
            if let Some(url) = app.push.as_ref().and_then(|p| p.webhook_url.as_deref()) {
                targets.push((format!("apps[{i}].push.webhook_url"), url));
            }
        }
        for (i, p) in self.platforms.iter().enumerate() {
            if !sandbox(&p.api_base) {
                targets.push((format!("platforms[{i}].api_base"), &p.api_base));
            }
            if let Some(url) = p.webhook_url.as_deref() {
                targets.push((format!("platforms[{i}].webhook_url"), url));
            }
        }
        // Each host (and port) looked up once: a thousand apps on WeChat's host, one lookup.
        let mut seen: std::collections::HashMap<
            String,
            Result<Option<crate::egress::Unresolved>, crate::egress::TargetError>,
        > = std::collections::HashMap::new();
        for (setting, url) in targets {
            let key = reqwest::Url::parse(url)
                .map(|u| {
                    format!(
                        "{}:{}",
                        u.host_str().unwrap_or_default(),
                        u.port_or_known_default().unwrap_or(0)
                    )
                })
                .unwrap_or_else(|_| url.to_owned());
            let outcome = match seen.get(&key) {
                Some(known) => known.clone(),
                None => {
                    let outcome = egress.check_url(url).await;
                    seen.insert(key, outcome.clone());
                    if let Ok(Some(u)) = &outcome {
                        tracing::warn!(setting = %setting, host = %u.host, "the host does not resolve now: accepted (a webhook's host is resolved and checked again at every delivery)");
                    }
                    outcome
                }
            };
            outcome.map_err(|e| ConfigError(format!("{setting}: {e}")))?;
        }
        Ok(())
    }

    /// Checks every rule that can be checked before connecting anything: unique appids,
    /// resolvable secrets and keys, push settings, clients naming configured apps and known
    /// scopes, timeouts and limits in range, keys and proxies well formed.
    ///
    /// # Errors
    /// The first problem found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError(m));
        let mut seen = std::collections::HashSet::new();
        for (i, app) in self.apps.iter().enumerate() {
            if app.appid.is_empty()
                || app.appid.len() > 64
                || !app.appid.chars().all(|c| c.is_ascii_alphanumeric())
            {
                return bad(format!(
                    "apps[{i}].appid must be 1–64 ASCII letters and digits"
                ));
            }
            if !seen.insert(app.appid.as_str()) {
                return bad(format!("apps[{i}]: appid {} appears twice", app.appid));
            }
            app.resolve_secret()?;
            if !weapp::http::is_base_url(&app.api_base) {
                return bad(format!(
                    "apps[{i}].api_base must be an http(s) URL without a query or fragment"
                ));
            }
            if let Some(p) = &app.push {
                p.validate()
                    .map_err(|e| ConfigError(format!("apps[{i}].push ({}): {e}", app.appid)))?;
            }
        }
        let mut platform_ids = std::collections::HashSet::new();
        for (i, p) in self.platforms.iter().enumerate() {
            p.check()
                .map_err(|e| ConfigError(format!("platforms[{i}]: {e}")))?;
            if self.apps.iter().any(|a| a.appid == p.component_appid) {
                return bad(format!(
                    "platforms[{i}]: {} is also an app's appid (a platform's events and an app's pushes would mix)",
                    p.component_appid
                ));
            }
            if !platform_ids.insert(p.component_appid.as_str()) {
                return bad(format!(
                    "platforms[{i}]: {} appears twice",
                    p.component_appid
                ));
            }
            p.resolve_secret()?;
        }
        if self.access_token_issuer.trim().is_empty() || self.access_token_issuer.len() > 256 {
            return bad("access_token_issuer must be 1–256 characters".into());
        }
        let mut names = std::collections::HashSet::new();
        let mut keys = std::collections::HashSet::new();
        for (i, c) in self.clients.iter().enumerate() {
            if c.name.is_empty() || !names.insert(c.name.as_str()) {
                return bad(format!("clients[{i}]: name must be present and unique"));
            }
            if !keys.insert(c.resolve_key_hash()?) {
                return bad(format!(
                    "clients[{i}] ({}): the same key as another client",
                    c.name
                ));
            }
            c.resolved_scopes()?;
            // Apps may also live in the database: that they exist is checked at start-up.
            if let Some(malformed) = c.apps.iter().find(|a| {
                a.as_str() != "*"
                    && (a.is_empty()
                        || a.len() > 64
                        || !a.chars().all(|c| c.is_ascii_alphanumeric()))
            }) {
                return bad(format!(
                    "clients[{i}] ({}): `{malformed}` is not an appid (or `*` for every app)",
                    c.name
                ));
            }
        }
        let mut admin_names = std::collections::HashSet::new();
        for (i, a) in self.admins.iter().enumerate() {
            if a.name.is_empty() || a.name.len() > 64 || !admin_names.insert(a.name.as_str()) {
                return bad(format!(
                    "admins[{i}]: name must be 1-64 characters and unique"
                ));
            }
            if keys.contains(&a.resolve_key_hash()?) {
                return bad(format!(
                    "admins[{i}] ({}): the same key as a broker client",
                    a.name
                ));
            }
        }
        for (name, v, min, max) in [
            ("registry_poll_ms", self.registry_poll_ms, 50, 60_000),
            (
                "registry_reconcile_secs",
                self.registry_reconcile_secs,
                1,
                86_400,
            ),
            ("fleet_shards", u64::from(self.fleet_shards), 1, 4_096),
            ("fleet_lease_ms", self.fleet_lease_ms, 2_000, 600_000),
            ("warmup_spread_secs", self.warmup_spread_secs, 0, 3_600),
            ("idle_after_secs", self.idle_after_secs, 60, 366 * 86_400),
            ("refresher_poll_ms", self.refresher_poll_ms, 50, 300_000),
            (
                "platform_reconcile_secs",
                self.platform_reconcile_secs,
                0,
                31 * 86_400,
            ),
            (
                "access_token_ttl_secs",
                self.access_token_ttl_secs,
                5,
                86_400,
            ),
            (
                "signing_key_rotate_days",
                self.signing_key_rotate_days,
                0,
                3_650,
            ),
            (
                "signing_key_publish_ahead_secs",
                self.signing_key_publish_ahead_secs,
                0,
                86_400,
            ),
        ] {
            if !(min..=max).contains(&v) {
                return bad(format!("{name} must be within {min}..={max}, got {v}"));
            }
        }
        let year = 366 * 24 * 3600;
        for (name, v, min, max) in [
            ("session_ttl_secs", self.session_ttl_secs, 1, 10 * year),
            (
                "session_idle_timeout_secs",
                self.session_idle_timeout_secs,
                0,
                10 * year,
            ),
            ("request_timeout_secs", self.request_timeout_secs, 1, 3600),
            (
                "header_read_timeout_secs",
                self.header_read_timeout_secs,
                1,
                3600,
            ),
            (
                "connection_idle_timeout_secs",
                self.connection_idle_timeout_secs,
                1,
                3600,
            ),
            ("max_connections", self.max_connections, 0, 10_000_000),
            (
                "max_connections_per_ip",
                self.max_connections_per_ip,
                0,
                10_000_000,
            ),
            ("webhook_timeout_secs", self.webhook_timeout_secs, 1, 600),
            ("webhook_lease_secs", self.webhook_lease_secs, 2, 86_400),
            (
                "webhook_retry_base_ms",
                self.webhook_retry_base_ms,
                1,
                3_600_000,
            ),
            (
                "webhook_retry_max_secs",
                self.webhook_retry_max_secs,
                1,
                86_400,
            ),
            ("decrypt_max_age_secs", self.decrypt_max_age_secs, 0, year),
            (
                "invalidate_min_interval_secs",
                self.invalidate_min_interval_secs,
                0,
                86_400,
            ),
            (
                "database_acquire_timeout_ms",
                self.database_acquire_timeout_ms,
                1,
                600_000,
            ),
        ] {
            if v < min || v > max {
                return bad(format!("{name} must be between {min} and {max}, got {v}"));
            }
        }
        if self.webhook_lease_secs <= self.webhook_timeout_secs {
            return bad(format!(
                "webhook_lease_secs ({}) must exceed webhook_timeout_secs ({}): a delivery still running when its lease ends is sent twice",
                self.webhook_lease_secs, self.webhook_timeout_secs
            ));
        }
        if self.database_acquire_timeout_ms >= self.request_timeout_secs.saturating_mul(1000) {
            return bad(format!(
                "database_acquire_timeout_ms ({}) must be shorter than request_timeout_secs ({} s): a request must be able to answer 503 before its deadline",
                self.database_acquire_timeout_ms, self.request_timeout_secs
            ));
        }
        if self.database_url.starts_with("sqlite:") && self.database_pool_size > 32 {
            return bad("database_pool_size must be at most 32 with SQLite (one writer)".into());
        }
        if self.rate_limit_max_keys > 10_000_000 {
            return bad("rate_limit_max_keys must be at most 10,000,000".into());
        }
        if self.webhook_max_attempts == 0 || self.webhook_max_attempts > 1000 {
            return bad("webhook_max_attempts must be between 1 and 1000".into());
        }
        if !(1..=1024).contains(&self.database_pool_size) {
            return bad("database_pool_size must be between 1 and 1024".into());
        }
        if !(1024..=64 * 1024 * 1024).contains(&self.body_limit_bytes) {
            return bad("body_limit_bytes must be between 1024 and 64 MiB".into());
        }
        if self.rate_limit_max_keys < 16 {
            return bad("rate_limit_max_keys must be at least 16".into());
        }
        if self.rate_limit_backend == RateLimitBackend::Redis && self.redis_url.is_none() {
            return bad("rate_limit_backend = \"redis\" needs redis_url".into());
        }
        if self.redis_prefix.is_empty() || self.redis_prefix.contains(char::is_whitespace) {
            return bad("redis_prefix must be non-empty without spaces".into());
        }
        if let Some(url) = &self.redis_url {
            if !url.starts_with("redis://") && !url.starts_with("rediss://") {
                return bad(format!(
                    "redis_url must start with redis:// or rediss://, got {}",
                    redact_url(url)
                ));
            }
        }
        if !self.database_url.starts_with("sqlite:")
            && !self.database_url.starts_with("postgres://")
            && !self.database_url.starts_with("postgresql://")
        {
            return bad("database_url must start with sqlite: or postgres://".into());
        }
        for (i, k) in self.data_key_list().iter().enumerate() {
            check_data_key(i, k.expose())?;
        }
        self.trusted_proxy_nets()?;
        self.webhook_allow_nets()?;
        Ok(())
    }
}

impl AppConfig {
    /// The AppSecret from `secret` or `secret_env`.
    ///
    /// # Errors
    /// Neither set, or the variable is missing.
    pub fn resolve_secret(&self) -> Result<weapp::AppSecret, ConfigError> {
        match (&self.secret, &self.secret_env) {
            (Some(s), _) if !s.is_empty() => Ok(weapp::AppSecret::new(s.expose())),
            (_, Some(var)) => env(var).map(weapp::AppSecret::new).ok_or_else(|| {
                ConfigError(format!(
                    "app {}: environment variable {var} is not set",
                    self.appid
                ))
            }),
            _ => Err(ConfigError(format!(
                "app {}: set `secret` or `secret_env`",
                self.appid
            ))),
        }
    }
}

impl PushConfig {
    /// The mode in force: the explicit one, or `safe` when a key is given.
    ///
    /// # Errors
    /// No key and no explicit `mode = "plain"`, or compatible/safe without a key.
    pub fn effective_mode(&self) -> Result<PushMode, PushConfigError> {
        match (self.mode, &self.encoding_aes_key) {
            (Some(PushMode::Plain), _) => Ok(PushMode::Plain),
            (Some(m), Some(_)) => Ok(m),
            (None, Some(_)) => Ok(PushMode::Safe),
            (Some(m), None) => Err(PushConfigError::ModeNeedsKey(m)),
            (None, None) => Err(PushConfigError::NoMode),
        }
    }

    /// Checks the token, the mode, the AES key and the webhook settings.
    ///
    /// # Errors
    /// The first problem found.
    pub fn validate(&self) -> Result<(), PushConfigError> {
        if self.token.expose().trim().is_empty() {
            return Err(PushConfigError::EmptyToken);
        }
        if self.token.expose().len() > 32
            || !self
                .token
                .expose()
                .chars()
                .all(|c| c.is_ascii_alphanumeric())
        {
            // The console accepts 3–32 letters and digits.
            return Err(PushConfigError::Token);
        }
        if let Some(k) = &self.encoding_aes_key {
            weapp::push::EncodingAesKey::new(k.expose())
                .map_err(PushConfigError::EncodingAesKey)?;
        }
        self.effective_mode()?;
        if self.replay_window_secs > 86_400 {
            return Err(PushConfigError::ReplayWindow);
        }
        match (&self.webhook_url, &self.webhook_secret) {
            (Some(u), _)
                if reqwest::Url::parse(u).map_or(true, |u| {
                    !matches!(u.scheme(), "http" | "https") || u.host().is_none()
                }) =>
            {
                Err(PushConfigError::WebhookUrl)
            }
            (Some(_), None) => Err(PushConfigError::WebhookWithoutSecret),
            (_, Some(s)) if s.expose().len() < 16 => Err(PushConfigError::WebhookSecretShort),
            _ => Ok(()),
        }
    }
}

impl ClientConfig {
    /// The SHA-256 of the client's key, from `key_sha256`, `key` or `key_env`.
    ///
    /// # Errors
    /// None set, a missing variable, or a malformed hash.
    pub fn resolve_key_hash(&self) -> Result<[u8; 32], ConfigError> {
        use sha2::{Digest, Sha256};
        if let Some(h) = &self.key_sha256 {
            let bytes = hex::decode(h.trim())
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(|| {
                    ConfigError(format!(
                        "client {}: key_sha256 must be 64 hex digits",
                        self.name
                    ))
                })?;
            return Ok(bytes);
        }
        let key = match (&self.key, &self.key_env) {
            (Some(k), _) if !k.is_empty() => k.expose().to_owned(),
            (_, Some(var)) => env(var).ok_or_else(|| {
                ConfigError(format!(
                    "client {}: environment variable {var} is not set",
                    self.name
                ))
            })?,
            _ => {
                return Err(ConfigError(format!(
                    "client {}: set `key`, `key_env` or `key_sha256`",
                    self.name
                )))
            }
        };
        if key.len() < 16 {
            return Err(ConfigError(format!(
                "client {}: key must be at least 16 characters",
                self.name
            )));
        }
        Ok(Sha256::digest(key.as_bytes()).into())
    }

    /// The client's scopes (defaults applied).
    ///
    /// # Errors
    /// An unknown scope.
    pub fn resolved_scopes(&self) -> Result<Vec<String>, ConfigError> {
        match &self.scopes {
            None => Ok(vec!["token:read".into(), "token:invalidate".into()]),
            Some(list) => {
                if let Some(bad) = list.iter().find(|s| !SCOPES.contains(&s.as_str())) {
                    return Err(ConfigError(format!(
                        "client {}: unknown scope {bad} (known: {})",
                        self.name,
                        SCOPES.join(", ")
                    )));
                }
                Ok(list.clone())
            }
        }
    }
}

/// The format of a data key (base64 of 32 bytes), checked when the configuration is read; the
/// keyring (`keys::seal`) opens it at start. The messages are the keyring's own.
fn check_data_key(index: usize, text: &str) -> Result<(), ConfigError> {
    use base64::Engine as _;
    match base64::engine::general_purpose::STANDARD.decode(text.trim()) {
        Err(_) => Err(ConfigError(format!(
            "data key {index}: data key is not valid base64"
        ))),
        Ok(b) if b.len() != 32 => Err(ConfigError(format!(
            "data key {index}: a data key must decode to 32 bytes, got {}",
            b.len()
        ))),
        Ok(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_allow_list_entry_for_every_address_is_refused() {
        for everything in ["0.0.0.0/0", "::/0"] {
            let config = Config {
                webhook_allow_private: vec![everything.into()],
                ..Config::default()
            };
            let err = config.webhook_allow_nets().unwrap_err().to_string();
            assert!(err.contains("allows every address"), "{err}");
        }
    }

    const DESIGN_EXAMPLE: &str = r#"
listen = "127.0.0.1:8080"
database_url = "sqlite://weapp.db"
redis_url = "redis://127.0.0.1:6379"
session_ttl_secs = 604800

[[apps]]
appid = "wx1234567890abcdef"
secret = "s3cret"
api_base = "https://api.weixin.qq.com"
token_mode = "stable"
[apps.push]
token = "t0ken"
encoding_aes_key = "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR"
webhook_url = "http://127.0.0.1:9000/hook"
webhook_secret = "whsec_0123456789abcdef"

[[clients]]
name = "billing"
key = "0123456789abcdef0123"
apps = ["wx1234567890abcdef"]
"#;

    #[test]
    fn the_design_example_parses_and_validates() {
        let c: Config = toml::from_str(DESIGN_EXAMPLE).unwrap();
        c.validate().unwrap();
        assert_eq!(c.apps[0].token_mode, TokenMode::Stable);
        assert_eq!(c.session_ttl_secs, 604800);
        assert_eq!(
            c.apps[0].push.as_ref().unwrap().effective_mode().unwrap(),
            PushMode::Safe
        );
        assert_eq!(
            c.clients[0].resolved_scopes().unwrap(),
            ["token:read", "token:invalidate"]
        );
    }

    fn invalid(text: &str) -> String {
        let c: Config = toml::from_str(text).unwrap();
        c.validate().unwrap_err().to_string()
    }

    #[test]
    fn session_tokens_are_timed_unless_set_to_random() {
        assert_eq!(Config::default().session_tokens, SessionTokens::Timed);
        let c: Config = toml::from_str("session_tokens = \"random\"").unwrap();
        assert_eq!(c.session_tokens, SessionTokens::Random);
        let bad = toml::from_str::<Config>("session_tokens = \"sequential\"").unwrap_err();
        assert!(bad.to_string().contains("session_tokens"), "{bad}");
    }

    #[test]
    fn problems_are_named() {
        let bad: Result<Config, _> = toml::from_str("listen = \"127.0.0.1:1\"\nbogus = 1");
        assert!(bad.unwrap_err().to_string().contains("bogus"));
        assert!(invalid("[[apps]]\nappid = \"wx1\"").contains("secret"));
        assert!(invalid(
            "[[apps]]\nappid = \"wx1\"\nsecret = \"s\"\n[[clients]]\nname = \"x\"\nkey = \"0123456789abcdef\"\napps = [\"wx 2\"]",
        )
        .contains("`wx 2` is not an appid"));
        assert!(invalid("[[admins]]\nname = \"ops\"\nkey = \"short\"").contains("at least 24"));
        assert!(invalid("fleet_lease_ms = 10").contains("fleet_lease_ms"));
    }

    #[test]
    fn push_settings_are_checked_at_start_up() {
        let app = "[[apps]]\nappid = \"wx1\"\nsecret = \"s\"\n[apps.push]\n";
        // Plain mode is a choice, not a default.
        assert!(invalid(&format!("{app}token = \"t0ken\"")).contains("mode = \"plain\""));
        let c: Config =
            toml::from_str(&format!("{app}token = \"t0ken\"\nmode = \"plain\"")).unwrap();
        c.validate().unwrap();
        assert!(invalid(&format!("{app}token = \"\"\nmode = \"plain\"")).contains("token"));
        assert!(invalid(&format!("{app}token = \"t\"\nmode = \"safe\""))
            .contains("needs encoding_aes_key"));
        assert!(invalid(&format!(
            "{app}token = \"t\"\nmode = \"plain\"\nwebhook_url = \"http://h/x\""
        ))
        .contains("webhook_secret"));
        assert!(invalid(&format!(
            "{app}token = \"t\"\nmode = \"plain\"\nwebhook_url = \"ftp://h/x\"\nwebhook_secret = \"0123456789abcdef\""
        ))
        .contains("http(s)"));
        assert!(
            invalid(&format!("{app}token = \"t\"\nencoding_aes_key = \"short\""))
                .contains("EncodingAESKey")
        );
    }

    #[test]
    fn timeouts_leases_and_limits_are_checked() {
        assert!(invalid("request_timeout_secs = 0").contains("request_timeout_secs"));
        assert!(invalid("header_read_timeout_secs = 0").contains("header_read_timeout_secs"));
        assert!(
            invalid("connection_idle_timeout_secs = 0").contains("connection_idle_timeout_secs")
        );
        assert!(invalid("session_ttl_secs = 0").contains("session_ttl_secs"));
        assert!(
            invalid("webhook_timeout_secs = 30\nwebhook_lease_secs = 30").contains("must exceed")
        );
        assert!(invalid("webhook_max_attempts = 0").contains("webhook_max_attempts"));
        assert!(invalid("database_pool_size = 0").contains("database_pool_size"));
        assert!(invalid("rate_limit_backend = \"redis\"").contains("redis_url"));
        assert!(invalid("trusted_proxies = [\"10.0.0.0/33\"]").contains("trusted_proxies"));
        assert!(invalid("data_key = \"c2hvcnQ=\"").contains("32 bytes"));
        // Overflow is an error, not a wrap-around.
        assert!(toml::from_str::<Config>("login_rate_limit_per_minute = 99999999999").is_err());
        assert!(toml::from_str::<Config>("session_ttl_secs = -1").is_err());
    }

    #[test]
    fn environment_values_are_parsed_strictly_and_named() {
        // (Each nextest test is its own process; these variables are this test's alone.)
        std::env::set_var("WEAPP_LOGIN_RATE_LIMIT", "99999999999");
        let e = Config::load(None).unwrap_err().to_string();
        assert!(e.contains("WEAPP_LOGIN_RATE_LIMIT"), "{e}");
        std::env::set_var("WEAPP_LOGIN_RATE_LIMIT", "12");
        std::env::set_var("WEAPP_TRUSTED_PROXIES", "10.0.0.0/8, 192.168.1.1");
        std::env::set_var("WEAPP_EXPOSE_LINKED_ACCOUNTS", "true");
        std::env::set_var("WEAPP_WEBHOOK_MAX_ATTEMPTS", "7");
        let c = Config::load(None).unwrap();
        assert_eq!(c.login_rate_limit_per_minute, 12);
        assert_eq!(c.trusted_proxies, ["10.0.0.0/8", "192.168.1.1"]);
        assert!(c.expose_linked_accounts);
        assert_eq!(c.webhook_max_attempts, 7);
        std::env::set_var("WEAPP_WEBHOOK_MAX_ATTEMPTS", "seven");
        let e = Config::load(None).unwrap_err().to_string();
        assert!(e.contains("WEAPP_WEBHOOK_MAX_ATTEMPTS"), "{e}");
        std::env::set_var("WEAPP_WEBHOOK_MAX_ATTEMPTS", "-3");
        assert!(Config::load(None).is_err());
        for v in [
            "WEAPP_LOGIN_RATE_LIMIT",
            "WEAPP_TRUSTED_PROXIES",
            "WEAPP_EXPOSE_LINKED_ACCOUNTS",
            "WEAPP_WEBHOOK_MAX_ATTEMPTS",
        ] {
            std::env::remove_var(v);
        }
    }

    /// The error `Config::load` gives for a file holding `text`.
    fn load_error(text: &str) -> String {
        let path = std::env::temp_dir().join(format!(
            "weapp-config-{}-{}.toml",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::write(&path, text).unwrap();
        let e = Config::load(Some(&path)).unwrap_err().to_string();
        let _ = std::fs::remove_file(&path);
        e
    }

    #[test]
    fn an_unknown_key_names_the_known_key_it_resembles() {
        let e = load_error("listen = \"127.0.0.1:1\"\nacess_token_ttl_secs = 60\n");
        assert!(
            e.ends_with(
                "line 2: unknown key \"acess_token_ttl_secs\" — did you mean \"access_token_ttl_secs\"?"
            ),
            "{e}"
        );
        assert!(!e.contains("listen"), "no list of every key: {e}");
        for (text, wanted) in [
            (
                "[[apps]]\nappid = \"wx1\"\nsecert = \"s\"\n",
                "line 3: unknown key \"secert\" in [[apps]] — did you mean \"secret\"?",
            ),
            (
                "[[apps]]\nappid = \"wx1\"\nsecret = \"s\"\n[apps.push]\ntoken = \"t\"\nencoding_aes_kye = \"k\"\n",
                "line 6: unknown key \"encoding_aes_kye\" in [apps.push] — did you mean \"encoding_aes_key\"?",
            ),
            (
                "[[clients]]\nname = \"billing\"\nkey = \"0123456789abcdef\"\napps = [\"*\"]\nscope = [\"token:read\"]\n",
                "line 5: unknown key \"scope\" in [[clients]] — did you mean \"scopes\"?",
            ),
            (
                "[[platforms]]\ncomponent_appid = \"wxc\"\ncomponent_secret = \"s\"\n",
                "unknown key \"component_secret\" in [[platforms]]",
            ),
            (
                "[[admins]]\nname = \"ops\"\nkey-env = \"OPS_KEY\"\n",
                "line 3: unknown key \"key-env\" in [[admins]] — did you mean \"key_env\"?",
            ),
            (
                "[[app]]\nappid = \"wx1\"\n",
                "line 1: unknown table [[app]] — did you mean [[apps]]?",
            ),
            (
                "[[apps]]\nappid = \"wx1\"\nsecret = \"s\"\ncolour = \"red\"\n",
                "line 4: unknown key \"colour\" in [[apps]] (known keys: appid, secret, secret_env, api_base, token_mode, push, warm, access_tokens)",
            ),
        ] {
            let e = load_error(text);
            assert!(e.contains(wanted), "{wanted}\nnot in: {e}");
            assert!(!e.contains("expected one of"), "{e}");
        }
    }

    #[test]
    fn a_table_where_an_array_of_tables_is_meant_gets_a_hint() {
        for list in ["apps", "clients", "admins", "platforms"] {
            let e = load_error(&format!(
                "listen = \"127.0.0.1:1\"\n\n[{list}]\nname = \"x\"\n"
            ));
            assert!(
                e.contains(&format!(
                    "line 3: {list} must be an array of tables: write [[{list}]] (double brackets)"
                )),
                "{e}"
            );
        }
        let e =
            load_error("[[apps]]\nappid = \"wx1\"\nsecret = \"s\"\n[[apps.push]]\ntoken = \"t\"\n");
        assert!(
            e.contains("line 4: an app has one push receiver: write [apps.push]"),
            "{e}"
        );
    }

    #[test]
    fn every_top_level_setting_has_an_environment_variable() {
        // serde names every key it knows when it meets an unknown one: the same keys as the
        // environment mapping, plus the four arrays of tables.
        let e = toml::from_str::<Config>("zzz = 1").unwrap_err();
        let message = e.message().to_owned();
        let mut from_serde: Vec<&str> = message.split('`').skip(3).step_by(2).collect();
        let mut ours: Vec<&str> = ENV_SETTINGS
            .iter()
            .map(|(n, _)| *n)
            .chain(["apps", "clients", "admins", "platforms"])
            .collect();
        from_serde.sort_unstable();
        ours.sort_unstable();
        assert_eq!(from_serde, ours, "{message}");
    }

    #[test]
    fn misspellings_are_matched_by_edit_distance() {
        assert_eq!(edit_distance("lsiten", "listen"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(did_you_mean("LISTEN", ["listen", "warm"]), Some("listen"));
        assert_eq!(did_you_mean("colour", ["listen", "warm"]), None);
        assert_eq!(did_you_mean("wrm", ["listen", "warm"]), Some("warm"));
    }

    #[test]
    fn unknown_weapp_variables_are_found_and_known_ones_are_not() {
        let names = [
            "WEAPP_LSITEN",
            "WEAPP_LISTEN",
            "WEAPP_CONFIG",
            "WEAPP_LOGIN_RATE_LIMIT",
            "WEAPP_LOG",
            "WEAPP_URL",
            "WEAPP_CLIENT_KEY",
            "WEAPP_ADMIN_KEY",
            "WEAPP_TEST_POSTGRES_URL",
            "WEAPP_BIN",
            "WEAPP_DATA_KY",
            "WEAPP_SOMETHING_ELSE_ENTIRELY",
            "PATH",
            "weapp_listen",
        ]
        .map(std::ffi::OsString::from);
        let unknown = unknown_env_vars(names);
        assert_eq!(
            unknown,
            [
                UnknownEnvVar {
                    name: "WEAPP_DATA_KY".into(),
                    suggestion: Some("WEAPP_DATA_KEY".into())
                },
                UnknownEnvVar {
                    name: "WEAPP_LSITEN".into(),
                    suggestion: Some("WEAPP_LISTEN".into())
                },
                UnknownEnvVar {
                    name: "WEAPP_SOMETHING_ELSE_ENTIRELY".into(),
                    suggestion: None
                },
            ]
        );
        assert_eq!(
            unknown[1].to_string(),
            "environment variable WEAPP_LSITEN is not a weapp setting and is ignored — did you mean WEAPP_LISTEN?"
        );
    }

    #[test]
    fn errors_never_quote_a_secret() {
        let text = "databse_url = \"postgres://u:hunter2pw@h/db\"";
        let e = toml::from_str::<Config>(text)
            .map_err(|e| one_line(text, &e))
            .unwrap_err();
        assert!(!e.contains("hunter2pw"), "{e}");
        let text = "data_keys = \"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\"";
        let e = toml::from_str::<Config>(text)
            .map_err(|e| one_line(text, &e))
            .unwrap_err();
        assert!(!e.contains("MDEyMzQ1"), "{e}");
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn clients_and_proxies_that_cannot_be_told_apart_are_refused() {
        let two = "[[apps]]\nappid = \"wx1\"\nsecret = \"s\"\n[[clients]]\nname = \"a\"\nkey = \"0123456789abcdef\"\napps = [\"wx1\"]\n[[clients]]\nname = \"b\"\nkey = \"0123456789abcdef\"\napps = [\"wx1\"]";
        assert!(invalid(two).contains("same key"));
        assert!(invalid("trusted_proxies = [\"0.0.0.0/0\"]").contains("every address"));
        assert!(
            invalid("request_timeout_secs = 2\ndatabase_acquire_timeout_ms = 5000")
                .contains("database_acquire_timeout_ms")
        );
    }

    #[test]
    fn debug_output_shows_no_secret() {
        let mut c: Config = toml::from_str(DESIGN_EXAMPLE).unwrap();
        c.redis_url = Some("redis://:hunter2pass@10.0.0.1:6379/0".into());
        c.database_url = "postgres://weapp:dbpass42@db/weapp".into();
        c.data_key = Some("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=".into());
        c.apps[0].api_base = "https://u:apipass9@sim.local/".into();
        c.apps[0].push.as_mut().unwrap().webhook_url =
            Some("https://hook:hookpass7@hooks.local/x?token=qtok".into());
        let text = format!("{c:?}");
        for secret in [
            "s3cret",
            "t0ken",
            "kWxPEV2UEDyxWpmPdKC3F4",
            "whsec_0123456789abcdef",
            "0123456789abcdef0123",
            "hunter2pass",
            "dbpass42",
            "apipass9",
            "hookpass7",
            "qtok",
            "MDEyMzQ1Njc4",
        ] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert_eq!(
            redact_url("redis://:pw@h:1/2?password=x"),
            "redis://***@h:1/2"
        );
    }

    #[test]
    fn webhook_urls_are_shown_without_their_path_query_or_credentials() {
        for (url, shown) in [
            (
                "https://u:pw@hooks.example.com:8443/t/s3cret?token=q#f",
                "https://***@hooks.example.com:8443/***",
            ),
            (
                "https://hooks.example.com/x",
                "https://hooks.example.com/***",
            ),
            (
                "https://hooks.example.com?token=q",
                "https://hooks.example.com/***",
            ),
            ("http://[::1]:9/hook", "http://[::1]:9/***"),
            ("https://hooks.example.com", "https://hooks.example.com/"),
            ("not a url", "<not a URL>"),
        ] {
            assert_eq!(redact_webhook_url(url), shown, "{url}");
        }
    }
}
