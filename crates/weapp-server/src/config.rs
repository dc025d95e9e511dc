//! Server configuration: a TOML file (`weapp serve --config weapp.toml`), environment variables
//! for every top-level value, and command-line flags, in increasing order of precedence.

use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;
use weapp::TokenMode;

/// A configuration problem, named precisely enough to fix.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_database_url() -> String {
    "sqlite://weapp.db".into()
}
fn default_session_ttl() -> u64 {
    7 * 24 * 3600
}
fn default_api_base() -> String {
    weapp::DEFAULT_BASE_URL.into()
}
fn default_login_rate() -> u32 {
    60
}
fn default_timeout() -> u64 {
    15
}
fn default_body_limit() -> usize {
    64 * 1024
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
fn default_prefix() -> String {
    "weapp".into()
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to listen on. Env `WEAPP_LISTEN`. Default `127.0.0.1:8080`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// `sqlite://path.db` (created if missing) or `postgres://…`. Env `WEAPP_DATABASE_URL`.
    #[serde(default = "default_database_url")]
    pub database_url: String,
    /// Optional Redis shared by all instances (token cache, refresh locks). Env `WEAPP_REDIS_URL`.
    #[serde(default)]
    pub redis_url: Option<String>,
    /// Key prefix in Redis. Env `WEAPP_REDIS_PREFIX`. Default `weapp`.
    #[serde(default = "default_prefix")]
    pub redis_prefix: String,
    /// Lifetime of a login session. Env `WEAPP_SESSION_TTL_SECS`. Default 7 days.
    #[serde(default = "default_session_ttl")]
    pub session_ttl_secs: u64,
    /// Base64 of 32 bytes: the key that encrypts session_keys at rest. Env `WEAPP_DATA_KEY`.
    /// When unset, one is generated and kept in the database (weaker: key beside the data).
    #[serde(default)]
    pub data_key: Option<String>,
    /// `POST /v1/login` requests per minute per client IP. Env `WEAPP_LOGIN_RATE_LIMIT`. Default 60; 0 disables.
    #[serde(default = "default_login_rate")]
    pub login_rate_limit_per_minute: u32,
    /// Take the client IP from `X-Forwarded-For` (only behind a proxy you control).
    #[serde(default)]
    pub trust_forwarded_for: bool,
    /// Per-request timeout in seconds. Default 15.
    #[serde(default = "default_timeout")]
    pub request_timeout_secs: u64,
    /// Maximum request body in bytes. Default 64 KiB.
    #[serde(default = "default_body_limit")]
    pub body_limit_bytes: usize,
    /// First webhook retry delay in milliseconds; it doubles per attempt. Default 1000.
    #[serde(default = "default_retry_base")]
    pub webhook_retry_base_ms: u64,
    /// Longest delay between webhook retries, in seconds. Default 600.
    #[serde(default = "default_retry_max")]
    pub webhook_retry_max_secs: u64,
    /// Timeout of one webhook request, in seconds. Default 10.
    #[serde(default = "default_timeout_webhook")]
    pub webhook_timeout_secs: u64,
    /// The mini programs served.
    #[serde(default)]
    pub apps: Vec<AppConfig>,
    /// Callers of the token broker.
    #[serde(default)]
    pub clients: Vec<ClientConfig>,
}

/// One mini program.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// The appid.
    pub appid: String,
    /// The AppSecret (prefer `secret_env`).
    #[serde(default)]
    pub secret: Option<String>,
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
}

/// `[apps.push]`: where WeChat pushes messages for this app.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushConfig {
    /// The Token set in the WeChat console.
    pub token: String,
    /// The 43-character EncodingAESKey; omit for plain mode.
    #[serde(default)]
    pub encoding_aes_key: Option<String>,
    /// Where verified events are delivered.
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// Key of the webhook signature (required with `webhook_url`).
    #[serde(default)]
    pub webhook_secret: Option<String>,
    /// Refuse pushes whose timestamp is further than this from now, and replays within it.
    /// Default 300; 0 disables (the durable MsgId de-duplication still applies).
    #[serde(default = "default_replay_window")]
    pub replay_window_secs: u64,
}

fn default_replay_window() -> u64 {
    300
}

/// A caller of the token broker.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// A name for logs and metrics.
    pub name: String,
    /// The key itself (prefer `key_sha256` or `key_env`).
    #[serde(default)]
    pub key: Option<String>,
    /// Name of the environment variable holding the key.
    #[serde(default)]
    pub key_env: Option<String>,
    /// Hex SHA-256 of the key: the file then holds no secret.
    #[serde(default)]
    pub key_sha256: Option<String>,
    /// Appids this client may read.
    pub apps: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        toml::from_str("").expect("every field has a default")
    }
}

/// `line L, column C: message` — toml's own Display draws a multi-line caret diagram.
fn one_line(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim().replace('\n', " ");
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let line_start = before.rfind('\n').map_or(0, |i| i + 1);
            let column = before.len() - line_start + 1;
            let source = text[line_start..].lines().next().unwrap_or("").trim();
            format!("line {line}, column {column} (`{source}`): {message}")
        }
        None => message,
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl Config {
    /// Reads `path` (if given; `WEAPP_CONFIG` otherwise), then applies environment overrides.
    ///
    /// # Errors
    /// Unreadable file, invalid TOML (with the line), unknown keys, bad environment values.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let path = path
            .map(Path::to_path_buf)
            .or_else(|| env("WEAPP_CONFIG").map(Into::into));
        let mut config = match path {
            Some(p) => {
                let text = std::fs::read_to_string(&p)
                    .map_err(|e| ConfigError(format!("cannot read {}: {e}", p.display())))?;
                toml::from_str(&text)
                    .map_err(|e| ConfigError(format!("{}: {}", p.display(), one_line(&text, &e))))?
            }
            None => Config::default(),
        };
        config.apply_env()?;
        Ok(config)
    }

    fn apply_env(&mut self) -> Result<(), ConfigError> {
        let parse = |name: &str, v: String| -> Result<u64, ConfigError> {
            v.parse()
                .map_err(|_| ConfigError(format!("{name} must be a number, got `{v}`")))
        };
        if let Some(v) = env("WEAPP_LISTEN") {
            self.listen = v
                .parse()
                .map_err(|_| ConfigError(format!("WEAPP_LISTEN is not an address: `{v}`")))?;
        }
        if let Some(v) = env("WEAPP_DATABASE_URL") {
            self.database_url = v;
        }
        if let Some(v) = env("WEAPP_REDIS_URL") {
            self.redis_url = Some(v);
        }
        if let Some(v) = env("WEAPP_REDIS_PREFIX") {
            self.redis_prefix = v;
        }
        if let Some(v) = env("WEAPP_SESSION_TTL_SECS") {
            self.session_ttl_secs = parse("WEAPP_SESSION_TTL_SECS", v)?;
        }
        if let Some(v) = env("WEAPP_DATA_KEY") {
            self.data_key = Some(v);
        }
        if let Some(v) = env("WEAPP_LOGIN_RATE_LIMIT") {
            self.login_rate_limit_per_minute = parse("WEAPP_LOGIN_RATE_LIMIT", v)? as u32;
        }
        Ok(())
    }

    /// Checks cross-field rules: unique appids, every secret and key resolvable, clients only
    /// naming configured apps, sane limits.
    ///
    /// # Errors
    /// The first problem found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut seen = std::collections::HashSet::new();
        for (i, app) in self.apps.iter().enumerate() {
            if app.appid.is_empty() || !app.appid.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(ConfigError(format!(
                    "apps[{i}].appid must be ASCII letters and digits"
                )));
            }
            if !seen.insert(app.appid.as_str()) {
                return Err(ConfigError(format!(
                    "apps[{i}]: appid {} appears twice",
                    app.appid
                )));
            }
            app.resolve_secret()?;
            if !app.api_base.starts_with("http://") && !app.api_base.starts_with("https://") {
                return Err(ConfigError(format!(
                    "apps[{i}].api_base must be an http(s) URL"
                )));
            }
        }
        for (i, c) in self.clients.iter().enumerate() {
            c.resolve_key_hash()?;
            if let Some(unknown) = c.apps.iter().find(|a| !seen.contains(a.as_str())) {
                return Err(ConfigError(format!(
                    "clients[{i}] ({}) names unknown app {unknown}",
                    c.name
                )));
            }
        }
        if self.session_ttl_secs == 0 {
            return Err(ConfigError("session_ttl_secs must be positive".into()));
        }
        if self.body_limit_bytes < 1024 {
            return Err(ConfigError("body_limit_bytes must be at least 1024".into()));
        }
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
            (Some(s), _) if !s.is_empty() => Ok(weapp::AppSecret::new(s.clone())),
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
    /// Checks the token, the AES key and the webhook settings.
    ///
    /// # Errors
    /// A message naming the problem.
    pub fn validate(&self) -> Result<(), String> {
        if self.token.is_empty() {
            return Err("token must not be empty".into());
        }
        if let Some(k) = &self.encoding_aes_key {
            weapp::push::EncodingAesKey::new(k).map_err(|e| e.to_string())?;
        }
        match (&self.webhook_url, &self.webhook_secret) {
            (Some(u), _) if !u.starts_with("http://") && !u.starts_with("https://") => {
                Err("webhook_url must be an http(s) URL".into())
            }
            (Some(_), None) => Err("webhook_url needs a webhook_secret to sign deliveries".into()),
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
            (Some(k), _) if !k.is_empty() => k.clone(),
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_design_example_parses_and_validates() {
        let text = r#"
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
token = "t"
encoding_aes_key = "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR"
webhook_url = "http://127.0.0.1:9000/hook"
webhook_secret = "w"

[[clients]]
name = "billing"
key = "0123456789abcdef0123"
apps = ["wx1234567890abcdef"]
"#;
        let c: Config = toml::from_str(text).unwrap();
        c.validate().unwrap();
        assert_eq!(c.apps[0].token_mode, TokenMode::Stable);
        assert_eq!(c.session_ttl_secs, 604800);
    }

    #[test]
    fn problems_are_named() {
        let bad: Result<Config, _> = toml::from_str("listen = \"127.0.0.1:1\"\nbogus = 1");
        assert!(bad.unwrap_err().to_string().contains("bogus"));
        let c: Config = toml::from_str("[[apps]]\nappid = \"wx1\"").unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("secret"));
        let c: Config = toml::from_str(
            "[[apps]]\nappid = \"wx1\"\nsecret = \"s\"\n[[clients]]\nname = \"x\"\nkey = \"0123456789abcdef\"\napps = [\"wx2\"]",
        )
        .unwrap();
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("unknown app wx2"));
    }
}
