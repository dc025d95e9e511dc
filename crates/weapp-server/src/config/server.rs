//! The top-level settings ([`Config`]) and their enums.

use std::net::SocketAddr;

use serde::Deserialize;

use super::apps::{AdminConfig, AppConfig, ClientConfig, PlatformConfig, WarmPolicy};
use super::defaults::{
    default_access_token_ttl, default_acquire_timeout_ms, default_admin_rate,
    default_auth_failure_rate, default_body_limit, default_connection_idle_timeout,
    default_database_url, default_decrypt_max_age, default_decrypt_rate, default_fleet_lease,
    default_fleet_shards, default_header_read_timeout, default_idle_after,
    default_invalidate_interval, default_issuer, default_listen, default_login_rate,
    default_max_connections, default_max_connections_per_ip, default_phone_rate,
    default_platform_reconcile, default_pool_size, default_prefix, default_publish_ahead,
    default_rate_limit_max_keys, default_redis_connect_timeout_ms, default_redis_timeout_ms,
    default_refresher_poll, default_registry_poll, default_registry_reconcile, default_retry_base,
    default_retry_max, default_rotate_days, default_session_ttl, default_timeout,
    default_timeout_webhook, default_warmup_spread, default_webhook_attempts,
    default_webhook_lease,
};
use super::defaults::{default_pay_query_after, default_pay_rate, default_true};
use super::errors::ConfigError;
use super::secret::{redact_url, Secret};

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

/// How log lines are written (`weapp serve` sets up logging from it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event; coloured only when the output is a terminal. The
    /// default.
    #[default]
    Text,
    /// One JSON object per line (timestamp, level, target, fields, spans): for log shippers.
    Json,
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
    /// How long a Redis command may take before it counts as failed (Redis hangs, or the
    /// network to it does): the token module then serves its local copy, rate limits count
    /// locally, and a new connection is opened in the background. Env `WEAPP_REDIS_TIMEOUT_MS`.
    /// Default 1000.
    #[serde(default = "default_redis_timeout_ms")]
    pub redis_timeout_ms: u64,
    /// How long one attempt to connect to Redis (TCP and handshake) may take. Env
    /// `WEAPP_REDIS_CONNECT_TIMEOUT_MS`. Default 500.
    #[serde(default = "default_redis_connect_timeout_ms")]
    pub redis_connect_timeout_ms: u64,
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
    /// WeChat Pay merchants: orders for backends with the `pay:write` scope, and their
    /// notifications received at `/v1/pay/{mchid}/notify`.
    #[serde(default)]
    pub merchants: Vec<super::MerchantConfig>,
    /// When (Beijing time, `HH:MM`) each merchant's trade bill of the previous day is
    /// reconciled with the stored orders and refunds, once for the fleet; `off`: never (the
    /// admin API still runs one on demand). WeChat's bills are ready from 10:00. Env
    /// `WEAPP_PAY_RECONCILE_AT`. Default `10:00`.
    #[serde(default = "super::defaults::default_pay_reconcile_at")]
    pub pay_reconcile_at: String,
    /// An order with no notification this long after it was placed is queried at WeChat Pay
    /// (补单), then on a backoff (1, 2, 5, 10, 30, 60 minutes) until it is paid, closed or
    /// expired (its `time_expire`, else two hours: then it is closed at WeChat and here). Env
    /// `WEAPP_PAY_QUERY_AFTER_SECS`. Default 60; 1–86,400.
    #[serde(default = "default_pay_query_after")]
    pub pay_query_after_secs: u64,
    /// Requests per minute each client key may make to the payment routes (orders, refunds).
    /// Env `WEAPP_PAY_RATE_LIMIT_PER_MINUTE`. Default 600; 0 disables.
    #[serde(default = "default_pay_rate")]
    pub pay_rate_limit_per_minute: u32,
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
    /// Log line format: `text` (default) or `json`. Env `WEAPP_LOG_FORMAT` (also read by the
    /// `weapp` command's `--log-format`, which wins).
    #[serde(default)]
    pub log_format: LogFormat,
    /// Whether `/metrics` keeps its latency histograms (default `true`). Off only to measure
    /// what they cost (BENCHMARKS.md); the counters are kept either way. Env
    /// `WEAPP_METRICS_HISTOGRAMS`.
    #[serde(default = "default_true")]
    pub metrics_histograms: bool,
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
            .field("redis_timeout_ms", &self.redis_timeout_ms)
            .field("redis_connect_timeout_ms", &self.redis_connect_timeout_ms)
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
            .field("merchants", &self.merchants)
            .field("pay_reconcile_at", &self.pay_reconcile_at)
            .field("warm", &self.warm)
            .field("log_format", &self.log_format)
            .field("metrics_histograms", &self.metrics_histograms)
            .field("sandbox", &self.sandbox)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// `pay_reconcile_at` as minutes after Beijing midnight; `None` for `off`.
    ///
    /// # Errors
    /// Neither `HH:MM` nor `off`.
    pub fn pay_reconcile_minute(&self) -> Result<Option<i64>, ConfigError> {
        let v = self.pay_reconcile_at.trim();
        if v.eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        let parsed = v.split_once(':').and_then(|(h, m)| {
            let (h, m) = (h.parse::<i64>().ok()?, m.parse::<i64>().ok()?);
            ((0..24).contains(&h) && (0..60).contains(&m) && v.len() == 5).then_some(h * 60 + m)
        });
        parsed.map(Some).ok_or_else(|| {
            ConfigError(format!(
                "pay_reconcile_at must be HH:MM (Beijing time) or off, got `{}`",
                v.chars().take(16).collect::<String>()
            ))
        })
    }
}

impl Default for Config {
    fn default() -> Self {
        toml::from_str("").expect("every field has a default")
    }
}
