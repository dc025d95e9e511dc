//! Server configuration: a TOML file (`weapp serve --config weapp.toml`), environment variables
//! for every top-level value, and command-line flags, in increasing order of precedence.
//!
//! Secrets are [`Secret`]s, URLs that may carry a password are printed without it, and
//! [`Config::validate`] checks everything at start-up, so a misconfiguration is one clear line
//! instead of a failure per request.

mod apps;
mod defaults;
mod env;
mod errors;
mod load;
mod merchants;
mod parse_errors;
mod secret;
mod server;
#[cfg(test)]
mod tests;

pub use apps::{
    AdminConfig, AppConfig, ClientConfig, PlatformConfig, PushConfig, WarmPolicy, SCOPES,
};
pub use defaults::MAX_ACCESS_TOKEN_TTL_SECS;
pub use env::{setting_env_vars, unknown_env_vars, UnknownEnvVar};
pub use errors::{ConfigError, PlatformConfigError, PushConfigError};
pub use merchants::{MerchantConfig, MerchantKeys};
pub use secret::{redact_url, redact_webhook_url, Secret};
pub use server::{
    AppHook, AppHookFn, Config, LogFormat, RateLimitBackend, SessionTokens, SqliteSync,
};
