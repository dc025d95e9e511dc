//! Reading the configuration (file, environment, flags in that order of precedence) and
//! checking it at start-up ([`Config::validate`]).

use std::path::Path;

use super::env::{env, env_value, Kind, ENV_ALIASES, ENV_SETTINGS};
use super::errors::ConfigError;
use super::parse_errors::{one_line, redact_quoted, shape_hint};
use super::secret::Secret;
use super::server::{Config, RateLimitBackend};

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
        for (i, m) in self.merchants.iter().enumerate() {
            let pay_host =
                m.api_base.trim_end_matches('/') == weapp::pay::PAY_BASE_URL.trim_end_matches('/');
            if !pay_host && !sandbox(&m.api_base) {
                targets.push((format!("merchants[{i}].api_base"), &m.api_base));
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
        let mut mchids = std::collections::HashSet::new();
        let mut paid_apps = std::collections::HashMap::new();
        for (i, m) in self.merchants.iter().enumerate() {
            m.resolve_keys()
                .map_err(|e| ConfigError(format!("merchants[{i}]: {}", e.0)))?;
            if !mchids.insert(m.mchid.as_str()) {
                return bad(format!("merchants[{i}]: mchid {} appears twice", m.mchid));
            }
            for appid in &m.appids {
                if let Some(other) = paid_apps.insert(appid.as_str(), m.mchid.as_str()) {
                    return bad(format!(
                        "merchants[{i}]: app {appid} is already served by merchant {other} (one merchant per app)"
                    ));
                }
            }
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
            ("pay_query_after_secs", self.pay_query_after_secs, 1, 86_400),
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
        self.pay_reconcile_minute()?;
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
            ("redis_timeout_ms", self.redis_timeout_ms, 1, 60_000),
            (
                "redis_connect_timeout_ms",
                self.redis_connect_timeout_ms,
                1,
                60_000,
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
        // Only with a Redis: a configuration without one (a short request timeout, say) is
        // not refused for a setting it does not use.
        if self.redis_url.is_some()
            && self.redis_timeout_ms >= self.request_timeout_secs.saturating_mul(1000)
        {
            return bad(format!(
                "redis_timeout_ms ({}) must be shorter than request_timeout_secs ({} s): a request waiting on a hanging Redis must still be answered from the local copy",
                self.redis_timeout_ms, self.request_timeout_secs
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
            if let Err(e) = weapp::token::redis::RedisTopology::of(url) {
                return bad(format!("redis_url: {e}"));
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

/// The format of a data key (base64 of 32 bytes), checked when the configuration is read; the
/// keyring (`keys::seal`) opens it at start. The messages are the keyring's own.
pub(crate) fn check_data_key(index: usize, text: &str) -> Result<(), ConfigError> {
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
