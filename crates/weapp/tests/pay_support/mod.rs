//! Shared by the `pay*` tests: the checked-in TEST keys, and WeChat's side of the protocol
//! (signing responses and notifications, encrypting resources) done the way WeChat documents
//! it, with the SDK's public message builders.
#![allow(dead_code)]

use std::time::{SystemTime, UNIX_EPOCH};

use weapp::pay::{
    response_message, ApiV3Key, Merchant, MerchantPrivateKey, PlatformCertificate, RsaPublicKey,
};

pub const MCHID: &str = "1900000109";
pub const MERCHANT_SERIAL: &str = "3A5E0C7D1B2F4A6C8E9D0B1A2C3D4E5F60718293";
pub const SERIAL_A: &str = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1";
pub const SERIAL_B: &str = "2AAD6A1B3C4D5E6F708192A3B4C5D6E7F8091A2B";
pub const PUB_ID: &str = "PUB_KEY_ID_0119000001092026120600000000000001";
/// 32 bytes; a TEST key.
pub const APIV3: &str = "TESTapiv3key-not-real-0123456789";
pub const APPID: &str = "wxd678efh567hg6787";

pub fn data(name: &str) -> String {
    let path = format!("{}/tests/data/pay/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

pub fn key(name: &str) -> MerchantPrivateKey {
    MerchantPrivateKey::from_pem(&data(name)).unwrap()
}

pub fn merchant() -> Merchant {
    Merchant::new(MCHID, MERCHANT_SERIAL, key("TEST-merchant-key.pkcs8.pem")).unwrap()
}

pub fn apiv3() -> ApiV3Key {
    ApiV3Key::new(APIV3).unwrap()
}

pub fn cert_a() -> PlatformCertificate {
    PlatformCertificate::from_pem(&data("TEST-platform-a-cert.pem")).unwrap()
}

pub fn cert_b() -> PlatformCertificate {
    PlatformCertificate::from_pem(&data("TEST-platform-b-cert.pem")).unwrap()
}

pub fn wechatpay_public_key() -> RsaPublicKey {
    RsaPublicKey::from_pem(&data("TEST-wechatpay-pubkey.pem")).unwrap()
}

/// A key that signs as WeChat: a platform certificate's or the public key's private half.
#[derive(Clone)]
pub struct WechatSigner {
    pub key: MerchantPrivateKey,
    pub serial: String,
}

impl WechatSigner {
    pub fn platform_a() -> Self {
        Self {
            key: key("TEST-platform-a-key.pem"),
            serial: SERIAL_A.into(),
        }
    }

    pub fn platform_b() -> Self {
        Self {
            key: key("TEST-platform-b-key.pem"),
            serial: SERIAL_B.into(),
        }
    }

    pub fn public_key() -> Self {
        Self {
            key: key("TEST-wechatpay-pubkey-private.pem"),
            serial: PUB_ID.into(),
        }
    }

    /// The `Wechatpay-*` headers over `body` at `ts`.
    pub fn headers(&self, ts: i64, body: &[u8]) -> Vec<(String, String)> {
        let nonce = weapp::pay::nonce();
        let sig = self
            .key
            .sign(&response_message(&ts.to_string(), &nonce, body))
            .unwrap();
        vec![
            ("Wechatpay-Timestamp".into(), ts.to_string()),
            ("Wechatpay-Nonce".into(), nonce),
            ("Wechatpay-Signature".into(), sig),
            ("Wechatpay-Serial".into(), self.serial.clone()),
            (
                "Wechatpay-Signature-Type".into(),
                "WECHATPAY2-SHA256-RSA2048".into(),
            ),
        ]
    }
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A notification envelope with `resource` encrypted under `apiv3`.
pub fn notification_body(
    apiv3: &ApiV3Key,
    event_type: &str,
    original_type: &str,
    resource: &serde_json::Value,
) -> Vec<u8> {
    let nonce = &weapp::pay::nonce()[..12];
    let ct = apiv3
        .encrypt(nonce, original_type, resource.to_string().as_bytes())
        .unwrap();
    // Written by hand (not serde) with WeChat's key order and a non-ASCII summary: the SDK must
    // verify these exact bytes.
    format!(
        r#"{{"id":"d4785163-ff81-5ed4-b828-e124183b37b3","create_time":"2026-12-06T13:29:35+08:00","resource_type":"encrypt-resource","event_type":"{event_type}","summary":"支付成功","resource":{{"original_type":"{original_type}","algorithm":"AEAD_AES_256_GCM","ciphertext":"{ct}","associated_data":"{original_type}","nonce":"{nonce}"}}}}"#
    )
    .into_bytes()
}

pub fn transaction_resource(out_trade_no: &str, total: u64) -> serde_json::Value {
    serde_json::json!({
        "transaction_id": "4200001234202612061234567890",
        "amount": {"payer_total": total, "total": total, "currency": "CNY", "payer_currency": "CNY"},
        "mchid": MCHID,
        "trade_state": "SUCCESS",
        "bank_type": "CMC",
        "promotion_detail": [],
        "success_time": "2026-12-06T10:34:56+08:00",
        "payer": {"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
        "out_trade_no": out_trade_no,
        "appid": APPID,
        "trade_state_desc": "支付成功",
        "trade_type": "JSAPI",
        "attach": "自定义数据",
        "scene_info": {"device_id": "013467007045764"},
        "a_field_added_later": {"ignored": true}
    })
}
