//! Wire models of the direct-merchant APIv3 calls: prepay, transaction, refund, bill, and the
//! decrypted notification resources. Field names are WeChat's (snake_case JSON); unknown
//! response fields are ignored, as the docs require. Amounts are [`Fen`], times [`PayTime`].

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::pay::amount::Fen;
use crate::pay::time::PayTime;

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
            /// A value this SDK does not know, as sent.
            Other(String),
        }

        impl $name {
            /// The value as WeChat writes it.
            pub fn as_str(&self) -> &str {
                match self {
                    $($name::$variant => $text,)+
                    $name::Other(s) => s,
                }
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                match s {
                    $($text => $name::$variant,)+
                    other => $name::Other(other.to_owned()),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = std::borrow::Cow::<str>::deserialize(d)?;
                Ok($name::from(s.as_ref()))
            }
        }
    };
}

string_enum!(
    /// `trade_state` of a transaction.
    TradeState {
        /// Paid.
        Success = "SUCCESS",
        /// (Partly) refunded.
        Refund = "REFUND",
        /// Not paid yet.
        NotPay = "NOTPAY",
        /// Closed.
        Closed = "CLOSED",
        /// Revoked (card payments).
        Revoked = "REVOKED",
        /// The user is paying (entering a password).
        UserPaying = "USERPAYING",
        /// Payment failed.
        PayError = "PAYERROR",
    }
);

string_enum!(
    /// `status` of a refund (`refund_status` in refund notifications).
    RefundStatus {
        /// Refunded.
        Success = "SUCCESS",
        /// Closed.
        Closed = "CLOSED",
        /// Accepted, not done yet (the usual answer to a refund request).
        Processing = "PROCESSING",
        /// Failed (e.g. the user's card is gone): needs an abnormal-refund request.
        Abnormal = "ABNORMAL",
    }
);

string_enum!(
    /// `bill_type` of a trade bill.
    TradeBillType {
        /// Every transaction of the day.
        All = "ALL",
        /// Successful payments.
        Success = "SUCCESS",
        /// Refunds.
        Refund = "REFUND",
    }
);

string_enum!(
    /// `account_type` of a fund-flow bill.
    AccountType {
        /// The basic account.
        Basic = "BASIC",
        /// The operation account.
        Operation = "OPERATION",
        /// The fees account.
        Fees = "FEES",
    }
);

/// `payer` of a prepay and of a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payer {
    /// The payer's openid under the order's appid.
    pub openid: String,
}

/// `amount` of a prepay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrepayAmount {
    /// The total in fen.
    pub total: Fen,
    /// `CNY` (the only currency of domestic payments).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
}

/// A JSAPI / mini program prepay (`POST /v3/pay/transactions/jsapi`). `mchid` is filled in by
/// the client. Required fields are [`JsapiPrepayRequest::new`]'s arguments; set the optional
/// ones on the value.
///
/// The same `out_trade_no` with the same parameters, before `time_expire`, answers the same
/// `prepay_id`: that is how a prepay with an unknown outcome is recovered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct JsapiPrepayRequest {
    /// The mini program's appid (bound to the mchid).
    pub appid: String,
    /// Filled in by the client from its merchant.
    #[serde(default)]
    pub mchid: String,
    /// What the user sees (≤ 127 characters).
    pub description: String,
    /// The merchant's order number: 6–32 characters of `[0-9A-Za-z_-|*]`, unique per mchid.
    pub out_trade_no: String,
    /// When the order stops being payable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_expire: Option<PayTime>,
    /// Echoed in queries and notifications (≤ 128).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attach: Option<String>,
    /// The https URL WeChat notifies (no query string).
    pub notify_url: String,
    /// Coupon tag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub goods_tag: Option<String>,
    /// Electronic invoice.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub support_fapiao: Option<bool>,
    /// Amount.
    pub amount: PrepayAmount,
    /// Payer.
    pub payer: Payer,
    /// `detail` (goods), as WeChat's JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
    /// `scene_info`, as WeChat's JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scene_info: Option<serde_json::Value>,
    /// `settle_info`, as WeChat's JSON (`{"profit_sharing": true}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settle_info: Option<serde_json::Value>,
}

impl JsapiPrepayRequest {
    /// A prepay of `total` for the user `openid` of `appid`, notified at `notify_url`.
    pub fn new(
        appid: impl Into<String>,
        description: impl Into<String>,
        out_trade_no: impl Into<String>,
        notify_url: impl Into<String>,
        total: Fen,
        openid: impl Into<String>,
    ) -> Self {
        Self {
            appid: appid.into(),
            mchid: String::new(),
            description: description.into(),
            out_trade_no: out_trade_no.into(),
            time_expire: None,
            attach: None,
            notify_url: notify_url.into(),
            goods_tag: None,
            support_fapiao: None,
            amount: PrepayAmount {
                total,
                currency: Some("CNY".into()),
            },
            payer: Payer {
                openid: openid.into(),
            },
            detail: None,
            scene_info: None,
            settle_info: None,
        }
    }

    /// Sets `time_expire`.
    pub fn time_expire(mut self, at: PayTime) -> Self {
        self.time_expire = Some(at);
        self
    }

    /// Sets `attach`.
    pub fn attach(mut self, attach: impl Into<String>) -> Self {
        self.attach = Some(attach.into());
        self
    }

    /// Sets `goods_tag`.
    pub fn goods_tag(mut self, tag: impl Into<String>) -> Self {
        self.goods_tag = Some(tag.into());
        self
    }
}

/// The answer to a prepay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prepay {
    /// Valid 2 hours; hand it to [`crate::pay::PayClient::request_payment`].
    pub prepay_id: String,
}

/// `amount` of a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TransactionAmount {
    /// Order total.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<Fen>,
    /// What the user paid (total minus coupons).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer_total: Option<Fen>,
    /// `CNY`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// The user's currency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer_currency: Option<String>,
}

/// A transaction: the answer of the order queries and the decrypted resource of
/// `TRANSACTION.SUCCESS`. Fields WeChat omits for unpaid orders are `None`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Transaction {
    /// appid.
    #[serde(default)]
    pub appid: String,
    /// mchid.
    #[serde(default)]
    pub mchid: String,
    /// The merchant's order number.
    pub out_trade_no: String,
    /// WeChat's number (after payment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
    /// `JSAPI`, `NATIVE`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trade_type: Option<String>,
    /// The state.
    pub trade_state: TradeState,
    /// Its description, e.g. 支付成功.
    #[serde(default)]
    pub trade_state_desc: String,
    /// Bank type, e.g. `CMC`, `OTHERS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bank_type: Option<String>,
    /// The prepay's `attach`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach: Option<String>,
    /// When it was paid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_time: Option<PayTime>,
    /// The payer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<Payer>,
    /// Amounts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<TransactionAmount>,
    /// `scene_info`, as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scene_info: Option<serde_json::Value>,
    /// `promotion_detail` (coupons), as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotion_detail: Option<Vec<serde_json::Value>>,
}

/// Which order a refund is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderRef {
    /// By WeChat's `transaction_id`.
    TransactionId(String),
    /// By the merchant's `out_trade_no`.
    OutTradeNo(String),
}

/// `amount` of a refund request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundRequestAmount {
    /// How much to refund.
    pub refund: Fen,
    /// The order's total.
    pub total: Fen,
    /// `CNY`.
    pub currency: String,
    /// `from` (refund from several accounts), as WeChat's JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<serde_json::Value>,
}

/// A refund (`POST /v3/refund/domestic/refunds`). The same `out_refund_no` refunds only once:
/// retrying with it is safe, and the SDK does on a connection failure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RefundRequest {
    /// WeChat's order number (one of this and `out_trade_no`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
    /// The merchant's order number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_trade_no: Option<String>,
    /// The merchant's refund number (≤ 64 of `[0-9A-Za-z_-|*@]`).
    pub out_refund_no: String,
    /// Shown to the user (≤ 80).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Overrides the notify URL set in the merchant platform.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_url: Option<String>,
    /// `AVAILABLE` to refund from the available balance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub funds_account: Option<String>,
    /// Amounts.
    pub amount: RefundRequestAmount,
    /// `goods_detail`, as WeChat's JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goods_detail: Option<serde_json::Value>,
}

impl RefundRequest {
    /// Refunds `refund` of an order whose total was `total`.
    pub fn new(order: OrderRef, out_refund_no: impl Into<String>, refund: Fen, total: Fen) -> Self {
        let (transaction_id, out_trade_no) = match order {
            OrderRef::TransactionId(id) => (Some(id), None),
            OrderRef::OutTradeNo(no) => (None, Some(no)),
        };
        Self {
            transaction_id,
            out_trade_no,
            out_refund_no: out_refund_no.into(),
            reason: None,
            notify_url: None,
            funds_account: None,
            amount: RefundRequestAmount {
                refund,
                total,
                currency: "CNY".into(),
                from: None,
            },
            goods_detail: None,
        }
    }

    /// Sets `reason`.
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    /// Sets `notify_url`.
    pub fn notify_url(mut self, url: impl Into<String>) -> Self {
        self.notify_url = Some(url.into());
        self
    }
}

/// `amount` of a refund.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RefundAmount {
    /// The order's total.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<Fen>,
    /// The refund.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund: Option<Fen>,
    /// What the user paid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer_total: Option<Fen>,
    /// What the user gets back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer_refund: Option<Fen>,
    /// Settlement refund.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settlement_refund: Option<Fen>,
    /// Settlement total.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settlement_total: Option<Fen>,
    /// Discount refunded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discount_refund: Option<Fen>,
    /// `CNY`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
}

/// A refund, as created or queried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Refund {
    /// WeChat's refund number.
    pub refund_id: String,
    /// The merchant's refund number.
    pub out_refund_no: String,
    /// WeChat's order number.
    #[serde(default)]
    pub transaction_id: String,
    /// The merchant's order number.
    #[serde(default)]
    pub out_trade_no: String,
    /// `ORIGINAL`, `BALANCE`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Where the money went, e.g. 支付用户零钱.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_received_account: Option<String>,
    /// When it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_time: Option<PayTime>,
    /// When it was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_time: Option<PayTime>,
    /// The state.
    pub status: RefundStatus,
    /// `AVAILABLE`, `UNSETTLED`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub funds_account: Option<String>,
    /// Amounts.
    #[serde(default)]
    pub amount: RefundAmount,
    /// `promotion_detail`, as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotion_detail: Option<Vec<serde_json::Value>>,
}

/// The decrypted resource of `REFUND.SUCCESS`, `REFUND.ABNORMAL`, `REFUND.CLOSED`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RefundNotice {
    /// mchid.
    #[serde(default)]
    pub mchid: String,
    /// The merchant's order number.
    #[serde(default)]
    pub out_trade_no: String,
    /// WeChat's order number.
    #[serde(default)]
    pub transaction_id: String,
    /// The merchant's refund number.
    pub out_refund_no: String,
    /// WeChat's refund number.
    #[serde(default)]
    pub refund_id: String,
    /// The outcome.
    pub refund_status: RefundStatus,
    /// When it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_time: Option<PayTime>,
    /// Where the money went.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_received_account: Option<String>,
    /// Amounts (a partner-mode report says it may be absent).
    #[serde(default)]
    pub amount: RefundAmount,
}

/// A trade bill request (`GET /v3/bill/tradebill`). Bills are requested uncompressed, so the
/// download's SHA1 can be checked as it streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TradeBillRequest {
    /// `yyyy-MM-dd` (China time; see [`PayTime::china_date`]).
    pub bill_date: String,
    /// Which transactions.
    pub bill_type: TradeBillType,
}

/// A fund-flow bill request (`GET /v3/bill/fundflowbill`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FundFlowBillRequest {
    /// `yyyy-MM-dd`.
    pub bill_date: String,
    /// Which account.
    pub account_type: AccountType,
}

/// Where to download a bill, and its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BillInfo {
    /// `SHA1`.
    pub hash_type: String,
    /// Hex digest of the file.
    pub hash_value: String,
    /// The download URL (valid a few minutes; the download must be signed, the answer is not).
    pub download_url: String,
}
