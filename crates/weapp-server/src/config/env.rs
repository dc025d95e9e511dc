//! Environment variables: `WEAPP_<SETTING>` for every top-level setting, and the variables
//! weapp reads that are not settings.

use super::errors::ConfigError;
use super::parse_errors::did_you_mean;

pub(crate) fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// How an environment value is read.
#[derive(Clone, Copy)]
pub(crate) enum Kind {
    /// Taken as it is.
    Text,
    /// A TOML number or boolean (so `99999999999` for a 32-bit setting is an error, not 0).
    Scalar,
    /// Comma-separated text values.
    List,
}

/// Every top-level setting, with its environment variable `WEAPP_<NAME>`.
pub(crate) const ENV_SETTINGS: &[(&str, Kind)] = &[
    ("listen", Kind::Text),
    ("database_url", Kind::Text),
    ("database_pool_size", Kind::Scalar),
    ("database_acquire_timeout_ms", Kind::Scalar),
    ("sqlite_synchronous", Kind::Text),
    ("redis_url", Kind::Text),
    ("redis_prefix", Kind::Text),
    ("redis_timeout_ms", Kind::Scalar),
    ("redis_connect_timeout_ms", Kind::Scalar),
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
    ("pay_reconcile_at", Kind::Text),
    ("pay_query_after_secs", Kind::Scalar),
    ("pay_rate_limit_per_minute", Kind::Scalar),
    ("log_format", Kind::Text),
    ("metrics_histograms", Kind::Scalar),
];

/// Older names still read.
pub(crate) const ENV_ALIASES: &[(&str, &str)] =
    &[("WEAPP_LOGIN_RATE_LIMIT", "login_rate_limit_per_minute")];

/// `WEAPP_*` variables that are not settings of `weapp serve` but are read elsewhere in the
/// project, so a shell that exports them is normal and `weapp serve` does not warn about them:
/// the `weapp` command's own (logging, and the other subcommands' flags: `token`, `api`,
/// `decrypt`, `sim`, `push`), the backends' (`examples/flask`, `examples/express`: what
/// `weapp serve --sandbox` prints for them to paste), and the scripts' and tests'.
pub const OTHER_ENV_VARS: &[&str] = &[
    // the `weapp` command
    "WEAPP_LOG",
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
/// (`OTHER_ENV_VARS`, `OTHER_ENV_PREFIXES`), sorted by name.
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

pub(crate) fn env_value(var: &str, raw: &str, kind: Kind) -> Result<toml::Value, ConfigError> {
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
