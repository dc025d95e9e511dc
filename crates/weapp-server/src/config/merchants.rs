//! `[[merchants]]`: WeChat Pay merchants (微信支付商户号) whose orders and notifications the
//! service handles, and how their keys are resolved. The keys stay in the server: backends
//! only ever see prepay ids and `wx.requestPayment` parameters.

use serde::Deserialize;

use super::env::env;
use super::errors::ConfigError;
use super::secret::{redact_url, Secret};

/// One WeChat Pay merchant (direct mode).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MerchantConfig {
    /// The merchant id (商户号), digits.
    pub mchid: String,
    /// The mini programs bound to it whose orders it takes (an appid is served by one merchant).
    pub appids: Vec<String>,
    /// The serial number of the merchant API certificate (商户API证书序列号).
    pub serial_no: String,
    /// A file holding the merchant private key (`apiclient_key.pem`).
    #[serde(default)]
    pub private_key_file: Option<String>,
    /// Name of the environment variable holding the private key's PEM.
    #[serde(default)]
    pub private_key_env: Option<String>,
    /// The private key's PEM itself (prefer a file or a variable).
    #[serde(default)]
    pub private_key: Option<Secret>,
    /// The APIv3 key (32 characters; prefer `apiv3_key_env`).
    #[serde(default)]
    pub apiv3_key: Option<Secret>,
    /// Name of the environment variable holding the APIv3 key.
    #[serde(default)]
    pub apiv3_key_env: Option<String>,
    /// The WeChat Pay public key's id (`PUB_KEY_ID_…`), with `public_key_file` or `public_key`.
    #[serde(default)]
    pub public_key_id: Option<String>,
    /// A file holding the WeChat Pay public key (`pub_key.pem`).
    #[serde(default)]
    pub public_key_file: Option<String>,
    /// The WeChat Pay public key's PEM itself.
    #[serde(default)]
    pub public_key: Option<String>,
    /// Verify with platform certificates, downloaded from `/v3/certificates` and refreshed
    /// (the legacy scheme; with a public key too: the migration's "both" mode).
    #[serde(default)]
    pub platform_certificates: bool,
    /// WeChat Pay's API host, or a weapp-sim URL.
    #[serde(default = "default_pay_api_base")]
    pub api_base: String,
    /// Where WeChat sends this merchant's notifications: this service's
    /// `https://<host>/v1/pay/{mchid}/notify`.
    pub notify_url: String,
}

pub(crate) fn default_pay_api_base() -> String {
    weapp::pay::PAY_BASE_URL.into()
}

impl std::fmt::Debug for MerchantConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MerchantConfig")
            .field("mchid", &self.mchid)
            .field("appids", &self.appids)
            .field("serial_no", &self.serial_no)
            .field("private_key_file", &self.private_key_file)
            .field("private_key_env", &self.private_key_env)
            .field("private_key", &self.private_key)
            .field("apiv3_key", &self.apiv3_key)
            .field("apiv3_key_env", &self.apiv3_key_env)
            .field("public_key_id", &self.public_key_id)
            .field("public_key_file", &self.public_key_file)
            .field("platform_certificates", &self.platform_certificates)
            .field("api_base", &redact_url(&self.api_base))
            .field("notify_url", &redact_url(&self.notify_url))
            .finish_non_exhaustive()
    }
}

/// A merchant's keys, resolved and parsed ([`MerchantConfig::resolve_keys`]).
#[derive(Debug, Clone)]
pub struct MerchantKeys {
    /// The signing identity (mchid, serial, private key).
    pub merchant: weapp::pay::Merchant,
    /// The APIv3 key (decrypts notifications).
    pub apiv3_key: weapp::pay::ApiV3Key,
    /// The WeChat Pay public key and its id, when configured.
    pub public_key: Option<(String, weapp::pay::RsaPublicKey)>,
}

impl MerchantConfig {
    fn error(&self, what: impl std::fmt::Display) -> ConfigError {
        ConfigError(format!("merchant {}: {what}", self.mchid))
    }

    /// Checks the merchant's settings and resolves its keys (files read, variables looked
    /// up, every key parsed), so a mistake is one line at start-up.
    ///
    /// # Errors
    /// What is wrong, naming the setting (never a key).
    pub fn resolve_keys(&self) -> Result<MerchantKeys, ConfigError> {
        if self.mchid.is_empty()
            || self.mchid.len() > 32
            || !self.mchid.chars().all(|c| c.is_ascii_digit())
        {
            return Err(ConfigError(format!(
                "merchant `{}`: mchid must be 1–32 digits",
                self.mchid.chars().take(40).collect::<String>()
            )));
        }
        if self.appids.is_empty() {
            return Err(self.error("appids must name at least one app"));
        }
        if let Some(bad) = self
            .appids
            .iter()
            .find(|a| a.is_empty() || a.len() > 64 || !a.chars().all(|c| c.is_ascii_alphanumeric()))
        {
            return Err(self.error(format_args!("`{bad}` in appids is not an appid")));
        }
        if !weapp::http::is_base_url(&self.api_base) {
            return Err(self.error("api_base must be an http(s) URL without a query or fragment"));
        }
        let notify_ok = reqwest::Url::parse(&self.notify_url).is_ok_and(|u| {
            matches!(u.scheme(), "http" | "https")
                && u.host().is_some()
                && u.query().is_none()
                && u.fragment().is_none()
        }) && self.notify_url.len() <= 256;
        if !notify_ok {
            return Err(self.error(
                "notify_url must be an http(s) URL without a query (WeChat calls it; https in production), at most 256 characters",
            ));
        }
        let pem = match (
            &self.private_key_file,
            &self.private_key_env,
            &self.private_key,
        ) {
            (Some(path), None, None) => std::fs::read_to_string(path).map_err(|e| {
                self.error(format_args!("private_key_file {}: {e}", shown_path(path)))
            })?,
            (None, Some(var), None) => env(var).ok_or_else(|| {
                self.error(format_args!(
                    "environment variable {} is not set",
                    shown_var(var)
                ))
            })?,
            (None, None, Some(k)) if !k.is_empty() => k.expose().to_owned(),
            _ => {
                return Err(
                    self.error("set exactly one of private_key_file, private_key_env, private_key")
                )
            }
        };
        let key = weapp::pay::MerchantPrivateKey::from_pem(&pem)
            .map_err(|e| self.error(format_args!("private key: {e}")))?;
        let merchant = weapp::pay::Merchant::new(&self.mchid, &self.serial_no, key)
            .map_err(|e| self.error(format_args!("serial_no: {e}")))?;
        let apiv3 = match (&self.apiv3_key, &self.apiv3_key_env) {
            (Some(k), None) if !k.is_empty() => k.expose().to_owned(),
            (None, Some(var)) => env(var).ok_or_else(|| {
                self.error(format_args!(
                    "environment variable {} is not set",
                    shown_var(var)
                ))
            })?,
            _ => return Err(self.error("set exactly one of apiv3_key, apiv3_key_env")),
        };
        let apiv3_key = weapp::pay::ApiV3Key::new(&apiv3)
            .map_err(|e| self.error(format_args!("apiv3_key: {e}")))?;
        let public_key = match (&self.public_key_id, &self.public_key_file, &self.public_key) {
            (None, None, None) => None,
            (Some(id), file, inline) => {
                if id.is_empty() || id.len() > 128 || !id.chars().all(|c| c.is_ascii_graphic()) {
                    return Err(self.error("public_key_id is malformed"));
                }
                let pem = match (file, inline) {
                    (Some(path), None) => std::fs::read_to_string(path).map_err(|e| {
                        self.error(format_args!("public_key_file {}: {e}", shown_path(path)))
                    })?,
                    (None, Some(pem)) => pem.clone(),
                    _ => {
                        return Err(self.error(
                            "public_key_id needs exactly one of public_key_file, public_key",
                        ))
                    }
                };
                let key = weapp::pay::RsaPublicKey::from_pem(&pem)
                    .map_err(|e| self.error(format_args!("public key: {e}")))?;
                Some((id.clone(), key))
            }
            (None, _, _) => {
                return Err(self.error("public_key_file and public_key need public_key_id"))
            }
        };
        if public_key.is_none() && !self.platform_certificates {
            return Err(self.error(
                "set public_key_id with public_key_file or public_key (微信支付公钥), and/or platform_certificates = true, to verify WeChat's signatures",
            ));
        }
        Ok(MerchantKeys {
            merchant,
            apiv3_key,
            public_key,
        })
    }
}

/// A variable name as an error may show it: one that does not look like a name (a key pasted
/// where its variable's name belongs) is not repeated.
fn shown_var(name: &str) -> &str {
    let plain = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    if plain {
        name
    } else {
        "(not shown: it does not look like a variable name)"
    }
}

/// A path as an error may show it: not a pasted key.
fn shown_path(path: &str) -> &str {
    if path.contains("-----BEGIN") || path.contains('\n') || path.len() > 512 {
        "(not shown: it looks like a key, not a path)"
    } else {
        path
    }
}
