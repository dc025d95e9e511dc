//! The default of every setting (serde's `default = "…"` functions).

use std::net::SocketAddr;

pub(crate) fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
pub(crate) fn default_database_url() -> String {
    "sqlite://weapp.db".into()
}
pub(crate) fn default_session_ttl() -> u64 {
    7 * 24 * 3600
}
/// The longest `access_token_ttl_secs` allowed (a day): retired signing keys stay published this
/// long (plus a minute), whatever the configured lifetime.
pub const MAX_ACCESS_TOKEN_TTL_SECS: i64 = 86_400;

pub(crate) fn default_platform_reconcile() -> u64 {
    86_400
}

pub(crate) fn default_access_token_ttl() -> u64 {
    900
}
pub(crate) fn default_issuer() -> String {
    "weapp-server".into()
}
pub(crate) fn default_rotate_days() -> u64 {
    30
}
pub(crate) fn default_publish_ahead() -> u64 {
    600
}
pub(crate) fn default_api_base() -> String {
    weapp::DEFAULT_BASE_URL.into()
}
pub(crate) fn default_login_rate() -> u32 {
    60
}
pub(crate) fn default_decrypt_rate() -> u32 {
    10
}
pub(crate) fn default_phone_rate() -> u32 {
    5
}
pub(crate) fn default_decrypt_max_age() -> u64 {
    3600
}
pub(crate) fn default_auth_failure_rate() -> u32 {
    20
}
pub(crate) fn default_rate_limit_max_keys() -> usize {
    100_000
}
pub(crate) fn default_invalidate_interval() -> u64 {
    60
}
pub(crate) fn default_timeout() -> u64 {
    15
}
pub(crate) fn default_body_limit() -> usize {
    64 * 1024
}
pub(crate) fn default_header_read_timeout() -> u64 {
    10
}
pub(crate) fn default_connection_idle_timeout() -> u64 {
    60
}
pub(crate) fn default_max_connections() -> u64 {
    10_000
}
pub(crate) fn default_max_connections_per_ip() -> u64 {
    256
}
pub(crate) fn default_retry_base() -> u64 {
    1000
}
pub(crate) fn default_retry_max() -> u64 {
    600
}
pub(crate) fn default_timeout_webhook() -> u64 {
    10
}
pub(crate) fn default_webhook_lease() -> u64 {
    60
}
pub(crate) fn default_webhook_attempts() -> u32 {
    15
}
pub(crate) fn default_prefix() -> String {
    "weapp".into()
}
pub(crate) fn default_admin_rate() -> u32 {
    600
}
pub(crate) fn default_refresher_poll() -> u64 {
    30_000
}
pub(crate) fn default_idle_after() -> u64 {
    86_400
}
pub(crate) fn default_registry_poll() -> u64 {
    1_000
}
pub(crate) fn default_registry_reconcile() -> u64 {
    300
}
pub(crate) fn default_fleet_shards() -> u32 {
    64
}
pub(crate) fn default_fleet_lease() -> u64 {
    15_000
}
pub(crate) fn default_warmup_spread() -> u64 {
    60
}

pub(crate) fn default_pool_size() -> u32 {
    16
}
pub(crate) fn default_acquire_timeout_ms() -> u64 {
    3000
}
pub(crate) fn default_redis_timeout_ms() -> u64 {
    1000
}
pub(crate) fn default_redis_connect_timeout_ms() -> u64 {
    500
}

/// WeChat's trade bills are ready from 10:00 Beijing time the next day.
pub(crate) fn default_pay_reconcile_at() -> String {
    "10:00".into()
}
pub(crate) fn default_pay_query_after() -> u64 {
    60
}
pub(crate) fn default_pay_rate() -> u32 {
    600
}
pub(crate) fn default_true() -> bool {
    true
}
