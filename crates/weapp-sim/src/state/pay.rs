//! The WeChat Pay domain's state: merchants (their keys, the platform's keys and certificates,
//! the verification mode and the public-key migration), orders, refunds, notifications with
//! their attempts, and bill files waiting to be downloaded. The rules are in `crate::pay`.

use std::collections::{BTreeMap, HashMap};

use rsa::{RsaPrivateKey, RsaPublicKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A private key whose `Debug` says nothing of it.
#[derive(Clone)]
pub(crate) struct SecretKey(pub(crate) RsaPrivateKey);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(***)")
    }
}

/// A secret string (the APIv3 key) whose `Debug` says nothing of it.
#[derive(Clone)]
pub(crate) struct Secret(pub(crate) String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// How a merchant verifies what WeChat Pay signs (responses and notifications).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verification {
    /// The WeChat Pay public key (`PUB_KEY_ID_…`) only: merchants opened since late 2024.
    /// `GET /v3/certificates` answers 404.
    #[default]
    PublicKey,
    /// Platform certificates only (older merchants).
    Certificate,
    /// Both, during the migration from certificates to the public key (灰度): notifications
    /// switch gradually, responses follow the request's `Wechatpay-Serial`.
    Both,
}

/// One platform certificate of a merchant.
#[derive(Debug, Clone)]
pub(crate) struct PlatformCert {
    /// 40 upper-case hex digits.
    pub(crate) serial_no: String,
    pub(crate) key: SecretKey,
    /// The certificate, PEM.
    pub(crate) pem: String,
    /// Listed `effective_time` (Unix ms).
    pub(crate) effective_ms: i64,
    /// Listed `expire_time` (Unix ms); moved forward to the end of the overlap by a rotation.
    pub(crate) expire_ms: i64,
    /// From when WeChat signs with it by default (a rotated-in certificate is listed first and
    /// used only after the overlap).
    pub(crate) use_from_ms: i64,
}

/// A merchant (商户号) as WeChat Pay's merchant platform issued it.
#[derive(Debug, Clone)]
pub(crate) struct Merchant {
    pub(crate) mchid: String,
    /// The short name (商户简称) the payment sheet shows.
    pub(crate) name: Option<String>,
    /// The mini program appids bound to the merchant; `None`: any appid is accepted.
    pub(crate) appids: Option<Vec<String>>,
    /// The merchant API certificate's serial number.
    pub(crate) serial_no: String,
    /// The merchant's public key, which verifies its request signatures and `paySign`s.
    pub(crate) public_key: RsaPublicKey,
    pub(crate) apiv3_key: Secret,
    pub(crate) verification: Verification,
    /// The WeChat Pay public key pair and its id, once the merchant has one.
    pub(crate) wechatpay_key: Option<(String, SecretKey)>,
    /// Platform certificates, oldest first (kept after they expire; listed only while valid).
    pub(crate) certs: Vec<PlatformCert>,
    /// When the migration to the public key started (verification `Both`).
    pub(crate) migration_started_ms: Option<i64>,
    /// The share (0–100) of notifications signed with the public key, overriding the ramp.
    pub(crate) notify_percent: Option<f64>,
    /// Whether notifications are delivered (false: they are lost).
    pub(crate) deliver: bool,
    /// The basic account's available balance in fen; `None`: enough for any refund.
    pub(crate) balance: Option<i64>,
    pub(crate) created_ms: i64,
}

/// `trade_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum TradeState {
    /// 未支付
    Notpay,
    /// 支付成功
    Success,
    /// 已关闭
    Closed,
    /// 转入退款
    Refund,
    /// 支付失败
    Payerror,
}

impl TradeState {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Notpay => "NOTPAY",
            Self::Success => "SUCCESS",
            Self::Closed => "CLOSED",
            Self::Refund => "REFUND",
            Self::Payerror => "PAYERROR",
        }
    }

    /// `trade_state_desc` as production writes it.
    pub fn desc(self) -> &'static str {
        match self {
            Self::Notpay => "订单未支付",
            Self::Success => "支付成功",
            Self::Closed => "订单已关闭",
            Self::Refund => "订单发生过退款",
            Self::Payerror => "支付失败，请重新下单支付",
        }
    }
}

/// An order placed with JSAPI prepay.
#[derive(Debug, Clone)]
pub(crate) struct Order {
    pub(crate) mchid: String,
    pub(crate) appid: String,
    pub(crate) out_trade_no: String,
    pub(crate) description: String,
    pub(crate) attach: Option<String>,
    pub(crate) notify_url: String,
    pub(crate) total: i64,
    pub(crate) currency: String,
    pub(crate) openid: String,
    /// The prepay request's body, to tell a repeat from a conflicting reuse of the number.
    pub(crate) request: Value,
    pub(crate) time_expire_ms: i64,
    pub(crate) prepay_id: String,
    pub(crate) prepay_issued_ms: i64,
    pub(crate) created_ms: i64,
    pub(crate) state: TradeState,
    pub(crate) transaction_id: Option<String>,
    pub(crate) success_ms: Option<i64>,
    pub(crate) closed_ms: Option<i64>,
    /// Refund requests made on the order (at most 50).
    pub(crate) refunds: u32,
    /// Fen refunded or being refunded (PROCESSING, SUCCESS, ABNORMAL).
    pub(crate) refunded: i64,
}

/// A refund's `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum RefundStatus {
    /// 退款处理中
    Processing,
    /// 退款成功
    Success,
    /// 退款异常 (the user's card was cancelled or frozen)
    Abnormal,
    /// 退款关闭
    Closed,
}

impl RefundStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Processing => "PROCESSING",
            Self::Success => "SUCCESS",
            Self::Abnormal => "ABNORMAL",
            Self::Closed => "CLOSED",
        }
    }
}

/// A refund.
#[derive(Debug, Clone)]
pub(crate) struct Refund {
    pub(crate) mchid: String,
    pub(crate) out_refund_no: String,
    pub(crate) refund_id: String,
    pub(crate) out_trade_no: String,
    pub(crate) transaction_id: String,
    pub(crate) refund: i64,
    pub(crate) total: i64,
    pub(crate) reason: Option<String>,
    pub(crate) notify_url: Option<String>,
    pub(crate) funds_account: String,
    /// The request's body, to tell a repeat from a conflicting reuse of the number.
    pub(crate) request: Value,
    pub(crate) status: RefundStatus,
    pub(crate) created_ms: i64,
    pub(crate) success_ms: Option<i64>,
    /// When a PROCESSING refund ends by itself (SUCCESS).
    pub(crate) complete_at_ms: i64,
}

/// One attempt to deliver a notification.
#[derive(Debug, Clone, Serialize)]
pub struct NotifyAttempt {
    /// When it was due, simulator ms.
    pub due: i64,
    /// When it was sent, simulator ms.
    pub at: i64,
    /// The `Wechatpay-Serial` it was signed under.
    pub serial: String,
    /// True for a probe (签名探测): the signature was `WECHATPAY/SIGNTEST/…`.
    pub probe: bool,
    /// The receiver's HTTP status, if it answered.
    pub status: Option<u16>,
    /// The receiver's body (first 1 KiB).
    pub body: Option<String>,
    /// Transport error or timeout.
    pub error: Option<String>,
    /// Real milliseconds taken.
    pub elapsed_ms: u64,
}

/// A notification (支付/退款结果通知) and its delivery.
#[derive(Debug, Clone)]
pub(crate) struct Notification {
    /// Internal number (duplicates share the `id`).
    pub(crate) seq: u64,
    /// The envelope's `id`.
    pub(crate) id: String,
    pub(crate) mchid: String,
    pub(crate) event_type: String,
    /// `out_trade_no` or `out_refund_no`.
    pub(crate) business_no: String,
    pub(crate) url: String,
    /// The envelope, as sent (the resource encrypted).
    pub(crate) body: String,
    /// The resource, decrypted (for the console).
    pub(crate) resource: Value,
    pub(crate) created_ms: i64,
    /// A duplicate sent on demand (of the notification with this seq).
    pub(crate) duplicate_of: Option<u64>,
    /// A probe: signed `WECHATPAY/SIGNTEST/…`, tried once.
    pub(crate) probe: bool,
    pub(crate) attempts: Vec<NotifyAttempt>,
    /// When the next attempt is due; `None` once delivered, given up or lost.
    pub(crate) next_ms: Option<i64>,
    pub(crate) in_flight: bool,
    pub(crate) delivered: bool,
    /// Dropped because delivery was off for the merchant.
    pub(crate) lost: bool,
}

/// A bill waiting at its download URL.
#[derive(Debug, Clone)]
pub(crate) struct BillFile {
    pub(crate) mchid: String,
    pub(crate) content: Vec<u8>,
    pub(crate) gzip: bool,
    pub(crate) expires_ms: i64,
}

/// Everything WeChat Pay keeps.
#[derive(Debug, Default)]
pub(crate) struct PayState {
    pub(crate) merchants: BTreeMap<String, Merchant>,
    /// By (mchid, out_trade_no).
    pub(crate) orders: HashMap<(String, String), Order>,
    /// prepay_id → (mchid, out_trade_no).
    pub(crate) prepay_ids: HashMap<String, (String, String)>,
    /// transaction_id → (mchid, out_trade_no).
    pub(crate) transactions: HashMap<String, (String, String)>,
    /// By (mchid, out_refund_no).
    pub(crate) refunds: HashMap<(String, String), Refund>,
    pub(crate) notifications: Vec<Notification>,
    pub(crate) next_seq: u64,
    /// Download token → bill.
    pub(crate) bills: HashMap<String, BillFile>,
}

impl PayState {
    /// What a reset keeps: the merchants (keys, certificates, modes), none of their business.
    pub(crate) fn merchants_only(self) -> Self {
        Self {
            merchants: self.merchants,
            ..Self::default()
        }
    }
}
