//! Login and identity: `jscode2session`, login-state checks, phone numbers, unionid, plugin ids.

use serde::{Deserialize, Deserializer, Serialize};

use super::Ack;
use crate::client::Client;
use crate::crypto::{decrypt_user_data, login_state_signature, DecryptOptions};
use crate::error::{Error, Result};
use crate::http::{Auth, Body, Endpoint, JsonResponse, Method};
use crate::secret::SessionKey;

/// Login and user APIs. Get one with [`Client::auth`].
#[derive(Debug, Clone)]
pub struct AuthApi {
    client: Client,
}

impl Client {
    /// Login and user APIs.
    pub fn auth(&self) -> AuthApi {
        AuthApi {
            client: self.clone(),
        }
    }
}

/// The answer of `jscode2session`.
#[derive(Debug, Clone, Deserialize)]
#[non_exhaustive]
pub struct Code2Session {
    /// The user's openid in this app.
    pub openid: String,
    /// The user's session_key. Keep it on the server.
    pub session_key: SessionKey,
    /// Present only when the app is bound to an Open Platform account.
    #[serde(default)]
    pub unionid: Option<String>,
}

impl JsonResponse for Code2Session {}

/// The answer of `resetusersessionkey`.
#[derive(Debug, Clone, Deserialize)]
#[non_exhaustive]
pub struct ResetSessionKey {
    /// The openid.
    pub openid: String,
    /// The new session_key; the old one is dead.
    pub session_key: SessionKey,
}

impl JsonResponse for ResetSessionKey {}

/// `watermark` of decrypted or returned user data.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct Watermark {
    /// Unix seconds when WeChat produced the data.
    pub timestamp: i64,
    /// The app the data was produced for.
    pub appid: String,
}

/// A user's phone number from `getuserphonenumber`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct PhoneInfo {
    /// With country code for foreign numbers, e.g. `+1 202…`, or plain for mainland ones.
    #[serde(rename = "phoneNumber")]
    pub phone_number: String,
    /// Without country code.
    #[serde(rename = "purePhoneNumber")]
    pub pure_phone_number: String,
    /// Country code; documented as a string, delivered as a number: both accepted.
    #[serde(rename = "countryCode", deserialize_with = "string_or_number")]
    pub country_code: String,
    /// Which app and when.
    pub watermark: Watermark,
}

fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        S(String),
        N(i64),
    }
    Ok(match Either::deserialize(d)? {
        Either::S(s) => s,
        Either::N(n) => n.to_string(),
    })
}

#[derive(Debug, Deserialize)]
struct PhoneResponse {
    phone_info: PhoneInfo,
}

impl JsonResponse for PhoneResponse {}

/// One entry of `getuserencryptkey`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[non_exhaustive]
pub struct EncryptKeyInfo {
    /// The key.
    pub encrypt_key: String,
    /// Its version.
    pub version: i64,
    /// Seconds it remains valid.
    pub expire_in: i64,
    /// The IV.
    pub iv: String,
    /// Unix seconds of creation.
    pub create_time: i64,
}

#[derive(Debug, Deserialize)]
struct EncryptKeyResponse {
    key_info_list: Vec<EncryptKeyInfo>,
}

impl JsonResponse for EncryptKeyResponse {}

#[derive(Debug, Deserialize)]
struct UnionidResponse {
    unionid: String,
}

impl JsonResponse for UnionidResponse {}

#[derive(Debug, Deserialize)]
struct OpenpidResponse {
    openpid: String,
}

impl JsonResponse for OpenpidResponse {}

/// Identifies a payment for [`AuthApi::paid_unionid`].
#[derive(Debug, Clone)]
pub enum PaidOrder {
    /// WeChat Pay's `transaction_id`.
    Transaction(String),
    /// A merchant id and the merchant's order number.
    Merchant {
        /// `mch_id`.
        mch_id: String,
        /// `out_trade_no`.
        out_trade_no: String,
    },
}

struct JsCode2Session<'a> {
    appid: &'a str,
    secret: &'a str,
    js_code: &'a str,
}

impl Endpoint for JsCode2Session<'_> {
    type Output = Code2Session;
    const PATH: &'static str = "/sns/jscode2session";
    const METHOD: Method = Method::Get;
    const AUTH: Auth = Auth::None;
    // A code is single-use: a retry after an unknown outcome would answer 40163.
    const IDEMPOTENT: bool = false;

    fn query(&self) -> Vec<(&'static str, String)> {
        vec![
            ("appid", self.appid.into()),
            ("secret", self.secret.into()),
            ("js_code", self.js_code.into()),
            ("grant_type", "authorization_code".into()),
        ]
    }
}

/// The three login-state calls share their parameters.
struct Signed<'a, const KIND: u8, O> {
    openid: &'a str,
    session_key: &'a SessionKey,
    _out: std::marker::PhantomData<fn() -> O>,
}

impl<const KIND: u8, O> Signed<'_, KIND, O> {
    fn query(&self) -> Vec<(&'static str, String)> {
        // GET (and these bodiless POSTs) sign the empty string.
        vec![
            ("openid", self.openid.into()),
            ("signature", login_state_signature(self.session_key, b"")),
            ("sig_method", "hmac_sha256".into()),
        ]
    }
}

const CHECK: u8 = 0;
const RESET: u8 = 1;
const ENCRYPT_KEY: u8 = 2;

impl Endpoint for Signed<'_, CHECK, Ack> {
    type Output = Ack;
    const PATH: &'static str = "/wxa/checksession";
    const IDEMPOTENT: bool = true;
    const METHOD: Method = Method::Get;
    fn query(&self) -> Vec<(&'static str, String)> {
        Signed::query(self)
    }
}

impl Endpoint for Signed<'_, RESET, ResetSessionKey> {
    type Output = ResetSessionKey;
    const PATH: &'static str = "/wxa/resetusersessionkey";
    const METHOD: Method = Method::Get;
    // Resetting twice kills the key the first call returned.
    const IDEMPOTENT: bool = false;
    fn query(&self) -> Vec<(&'static str, String)> {
        Signed::query(self)
    }
}

impl Endpoint for Signed<'_, ENCRYPT_KEY, EncryptKeyResponse> {
    type Output = EncryptKeyResponse;
    const PATH: &'static str = "/wxa/business/getuserencryptkey";
    const IDEMPOTENT: bool = true;
    fn query(&self) -> Vec<(&'static str, String)> {
        Signed::query(self)
    }
}

fn signed<'a, const KIND: u8, O>(
    openid: &'a str,
    session_key: &'a SessionKey,
) -> Signed<'a, KIND, O> {
    Signed {
        openid,
        session_key,
        _out: std::marker::PhantomData,
    }
}

#[derive(Serialize)]
struct CodeBody<'a, const KIND: u8> {
    code: &'a str,
}

const PHONE: u8 = 0;
const OPENPID: u8 = 1;

impl Endpoint for CodeBody<'_, PHONE> {
    type Output = PhoneResponse;
    const PATH: &'static str = "/wxa/business/getuserphonenumber";
    // One-time code: see JsCode2Session.
    const IDEMPOTENT: bool = false;
    fn body(&self) -> Result<Body> {
        Body::json(self)
    }
}

impl Endpoint for CodeBody<'_, OPENPID> {
    type Output = OpenpidResponse;
    const PATH: &'static str = "/wxa/getpluginopenpid";
    const IDEMPOTENT: bool = false;
    fn body(&self) -> Result<Body> {
        Body::json(self)
    }
}

struct PaidUnionid<'a> {
    openid: &'a str,
    order: &'a PaidOrder,
}

impl Endpoint for PaidUnionid<'_> {
    type Output = UnionidResponse;
    const PATH: &'static str = "/wxa/getpaidunionid";
    const IDEMPOTENT: bool = true;
    const METHOD: Method = Method::Get;
    fn query(&self) -> Vec<(&'static str, String)> {
        let mut q = vec![("openid", self.openid.to_owned())];
        match self.order {
            PaidOrder::Transaction(id) => q.push(("transaction_id", id.clone())),
            PaidOrder::Merchant {
                mch_id,
                out_trade_no,
            } => {
                q.push(("mch_id", mch_id.clone()));
                q.push(("out_trade_no", out_trade_no.clone()));
            }
        }
        q
    }
}

fn require(name: &str, value: &str) -> Result<()> {
    if value.trim().is_empty() {
        Err(Error::InvalidArgument(format!("{name} must not be empty")))
    } else {
        Ok(())
    }
}

impl AuthApi {
    /// Exchanges a `wx.login()` code for the user's openid, session_key and (maybe) unionid.
    /// Needs no access token and never fetches one.
    ///
    /// # Errors
    /// 40029 unknown/expired code, 40163 code already used, 40226 blocked user, 45011 rate limit.
    ///
    /// ```no_run
    /// # async fn run(client: weapp::Client) -> Result<(), weapp::Error> {
    /// let s = client.auth().code_to_session("0a1b2c").await?;
    /// println!("openid {} unionid {:?}", s.openid, s.unionid);
    /// # Ok(()) }
    /// ```
    pub async fn code_to_session(&self, js_code: &str) -> Result<Code2Session> {
        require("js_code", js_code)?;
        self.client
            .send(&JsCode2Session {
                appid: self.client.appid(),
                secret: self.client.secret().expose(),
                js_code,
            })
            .await
    }

    /// Checks that `session_key` is still the user's current one (`/wxa/checksession`).
    ///
    /// # Errors
    /// 87009 when the key is not current (signature mismatch).
    ///
    /// ```no_run
    /// # async fn run(client: weapp::Client, key: weapp::SessionKey) -> Result<(), weapp::Error> {
    /// client.auth().check_session_key("oOPENID", &key).await?;
    /// # Ok(()) }
    /// ```
    pub async fn check_session_key(&self, openid: &str, session_key: &SessionKey) -> Result<()> {
        require("openid", openid)?;
        self.client
            .send(&signed::<CHECK, Ack>(openid, session_key))
            .await
            .map(|_| ())
    }

    /// Replaces the user's session_key (`/wxa/resetusersessionkey`); the old one dies at once.
    ///
    /// # Errors
    /// 87007 (no such key), 87009 (bad signature).
    ///
    /// ```no_run
    /// # async fn run(client: weapp::Client, key: weapp::SessionKey) -> Result<(), weapp::Error> {
    /// let fresh = client.auth().reset_session_key("oOPENID", &key).await?;
    /// # Ok(()) }
    /// ```
    pub async fn reset_session_key(
        &self,
        openid: &str,
        session_key: &SessionKey,
    ) -> Result<ResetSessionKey> {
        require("openid", openid)?;
        self.client
            .send(&signed::<RESET, ResetSessionKey>(openid, session_key))
            .await
    }

    /// The user's encryption keys for secure data transfer (`getuserencryptkey`), newest last.
    ///
    /// # Errors
    /// 87007, 87008, 87009.
    ///
    /// ```no_run
    /// # async fn run(client: weapp::Client, key: weapp::SessionKey) -> Result<(), weapp::Error> {
    /// let keys = client.auth().user_encrypt_key("oOPENID", &key).await?;
    /// # Ok(()) }
    /// ```
    pub async fn user_encrypt_key(
        &self,
        openid: &str,
        session_key: &SessionKey,
    ) -> Result<Vec<EncryptKeyInfo>> {
        require("openid", openid)?;
        self.client
            .send(&signed::<ENCRYPT_KEY, EncryptKeyResponse>(
                openid,
                session_key,
            ))
            .await
            .map(|r| r.key_info_list)
    }

    /// Exchanges a getPhoneNumber button code for the user's phone number.
    ///
    /// # Errors
    /// 40029 (unknown/expired/used code), 40013 (code of another app), 45011.
    ///
    /// ```no_run
    /// # async fn run(client: weapp::Client) -> Result<(), weapp::Error> {
    /// let phone = client.auth().get_phone_number("e31968a7f94cc").await?;
    /// println!("{}", phone.pure_phone_number);
    /// # Ok(()) }
    /// ```
    pub async fn get_phone_number(&self, code: &str) -> Result<PhoneInfo> {
        require("code", code)?;
        self.client
            .send(&CodeBody::<PHONE> { code })
            .await
            .map(|r| r.phone_info)
    }

    /// The unionid of a user who paid within the last 5 minutes (`getpaidunionid`).
    ///
    /// # Errors
    /// 40003 invalid openid, 89002 no open platform account, 89300 invalid trade.
    ///
    /// ```no_run
    /// # async fn run(client: weapp::Client) -> Result<(), weapp::Error> {
    /// use weapp::api::auth::PaidOrder;
    /// let unionid = client.auth().paid_unionid("oOPENID", &PaidOrder::Transaction("4200…".into())).await?;
    /// # Ok(()) }
    /// ```
    pub async fn paid_unionid(&self, openid: &str, order: &PaidOrder) -> Result<String> {
        require("openid", openid)?;
        self.client
            .send(&PaidUnionid { openid, order })
            .await
            .map(|r| r.unionid)
    }

    /// Exchanges a plugin user's code for their openpid (`getpluginopenpid`).
    ///
    /// # Errors
    /// WeChat's plugin errors (1000–1022) as [`crate::ErrCode::Other`], 45009.
    ///
    /// ```no_run
    /// # async fn run(client: weapp::Client) -> Result<(), weapp::Error> {
    /// let openpid = client.auth().plugin_openpid("code").await?;
    /// # Ok(()) }
    /// ```
    pub async fn plugin_openpid(&self, code: &str) -> Result<String> {
        require("code", code)?;
        self.client
            .send(&CodeBody::<OPENPID> { code })
            .await
            .map(|r| r.openpid)
    }

    /// Decrypts `encryptedData` from the mini program with the user's session_key, checking
    /// that its watermark names this app.
    ///
    /// # Errors
    /// [`Error::Crypto`] with the precise failure.
    ///
    /// ```no_run
    /// # fn run(client: weapp::Client, key: weapp::SessionKey) -> Result<(), weapp::Error> {
    /// let data = client.auth().decrypt(&key, "iv==", "encryptedData==", &Default::default())?;
    /// # Ok(()) }
    /// ```
    pub fn decrypt(
        &self,
        session_key: &SessionKey,
        iv: &str,
        encrypted_data: &str,
        options: &DecryptOptions,
    ) -> Result<serde_json::Value> {
        Ok(decrypt_user_data(
            self.client.appid(),
            session_key,
            iv,
            encrypted_data,
            options,
        )?)
    }
}
