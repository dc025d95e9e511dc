//! The configuration's errors: what is wrong, named precisely enough to fix.

use weapp::push::PushMode;

/// A configuration problem, named precisely enough to fix.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

/// What is wrong with an app's push settings ([`PushConfig::validate`](super::PushConfig::validate)), naming the field.
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

/// What is wrong with a platform's settings ([`PlatformConfig::check`](super::PlatformConfig::check)), naming the field.
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
