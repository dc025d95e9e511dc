//! The lists of the configuration: `[[apps]]` (and their push receivers), `[[platforms]]`,
//! `[[admins]]` and `[[clients]]`, and how their secrets are resolved.

use serde::Deserialize;
use weapp::push::PushMode;
use weapp::TokenMode;

use super::defaults::default_api_base;
use super::env::env;
use super::errors::{ConfigError, PlatformConfigError, PushConfigError};
use super::secret::{redact_url, redact_webhook_url, Secret};

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

pub(crate) fn yes() -> bool {
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

pub(crate) fn default_replay_window() -> u64 {
    300
}

/// What a broker client may do.
pub const SCOPES: &[&str] = &[
    "token:read",
    "token:invalidate",
    "events:read",
    "events:redeliver",
    "sessions:introspect",
    "pay:write",
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

/// When an app gets a token (see [`Config::warm`](super::Config::warm)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WarmPolicy {
    /// Every enabled app's token is kept fresh.
    #[default]
    Always,
    /// Only apps in use are kept fresh.
    OnUse,
}
