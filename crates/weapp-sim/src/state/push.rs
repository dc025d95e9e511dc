//! The push domain's state: an app's push configuration, as set in the WeChat console. How
//! pushes are delivered is in `crate::push`.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// How WeChat secures pushes to this URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PushMode {
    /// Plaintext, `signature` only.
    Plain,
    /// Plaintext fields plus `Encrypt`.
    Compatible,
    /// Only `ToUserName` and `Encrypt`.
    Safe,
}

/// The body format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PushFormat {
    /// `<xml>…</xml>`
    Xml,
    /// JSON
    Json,
}

/// An app's push configuration, as set in the WeChat console.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PushTarget {
    /// The server URL.
    pub url: String,
    /// The Token.
    pub token: String,
    /// The 43-character EncodingAESKey (required unless `mode` is plain).
    #[serde(default)]
    pub encoding_aes_key: Option<String>,
    /// Security mode.
    pub mode: PushMode,
    /// Body format.
    pub format: PushFormat,
}

impl PushTarget {
    /// The settings without their secrets (for the console and `GET /_sim/apps`).
    pub fn public_view(&self) -> Value {
        json!({
            "url": self.url,
            "mode": self.mode,
            "format": self.format,
            "token": "***",
            "encoding_aes_key": self.encoding_aes_key.as_ref().map(|_| "***"),
        })
    }
}
