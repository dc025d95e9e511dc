//! WeChat Pay API v3 for a mini program's merchant (direct mode): signed requests, verified
//! responses and notifications, typed calls, integer amounts.
//!
//! - [`PayClient`]: JSAPI prepay, order queries (by `out_trade_no` and `transaction_id`),
//!   close, refund create and query, trade and fund-flow bills with a streamed, SHA1-checked
//!   download, and [`PayClient::request_payment`] for `wx.requestPayment`.
//! - Verification of WeChat's signatures ([`Verifier`]) in the three modes WeChat has: the
//!   **WeChat Pay public key** (`PUB_KEY_ID_…`; then every request carries `Wechatpay-Serial`),
//!   **platform certificates** (downloaded from `/v3/certificates`, decrypted, several held at
//!   once, refreshed before they expire: [`CertificateStore`]), or **both** during the 7-day
//!   migration, routed by `Wechatpay-Serial`. ±300 s window; `WECHATPAY/SIGNTEST/` probes are
//!   refused.
//! - Notifications: [`NotificationParser::parse`] takes the headers and the **raw** body —
//!   nothing to re-serialize — and returns a typed [`Notification`]; [`NotifyResponse`] is the
//!   answer WeChat expects.
//! - Money is [`Fen`] (an integer; no float anywhere), times are [`PayTime`] (RFC 3339,
//!   `+08:00`), errors are [`PayError`] with HTTP status, `code`, `message`, `detail` and
//!   `Request-ID`.
//! - Hosts: `https://api.mch.weixin.qq.com`, and once `https://api2.mch.weixin.qq.com` after a
//!   connection failure — for every call when the request never left, otherwise only for calls
//!   idempotent by their key (queries, close, refunds by `out_refund_no`, bills). A prepay that
//!   fails after sending is [`PayError::OutcomeUnknown`]. [`PayClientBuilder::base_url`] points
//!   everything at a simulator or a test server (and then drops the production backup).
//! - RSA is ring's (constant-time), AES-GCM RustCrypto's; the merchant key and the APIv3 key
//!   never appear in `Debug`, `Display`, logs or errors.
//!
//! ```no_run
//! # async fn run(headers: &reqwest::header::HeaderMap, raw_body: &[u8]) -> Result<(), Box<dyn std::error::Error>> {
//! use weapp::pay::{
//!     ApiV3Key, Fen, JsapiPrepayRequest, Merchant, MerchantPrivateKey, NotificationEvent,
//!     NotifyResponse, PayClient, PayTime, RsaPublicKey, TradeState,
//! };
//!
//! let merchant = Merchant::new(
//!     "1900000109",                                 // mchid
//!     "3A5E0C7D1B2F4A6C8E9D0B1A2C3D4E5F60718293",   // merchant API certificate serial
//!     MerchantPrivateKey::from_pem(&std::fs::read_to_string("apiclient_key.pem")?)?,
//! )?;
//! let pay = PayClient::builder(merchant, ApiV3Key::new(&std::env::var("WECHATPAY_APIV3_KEY")?)?)
//!     // Public-key mode; add `.platform_certificates()` too during the migration ("both"),
//!     // or use only `.platform_certificates()` for the legacy scheme.
//!     .wechatpay_public_key(
//!         "PUB_KEY_ID_0119000001092025010100000000000000",
//!         RsaPublicKey::from_pem(&std::fs::read_to_string("pub_key.pem")?)?,
//!     )
//!     // .base_url("http://127.0.0.1:9000")     // a simulator
//!     .build()?;
//!
//! // 1. Prepay, and hand the mini program its wx.requestPayment parameters.
//! let order = JsapiPrepayRequest::new(
//!     "wx1234567890abcdef",
//!     "A cup of tea",
//!     "order-20260101-0001",
//!     "https://example.com/v1/pay/1900000109/notify",
//!     Fen::from_yuan_str("9.80").unwrap(),
//!     "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
//! )
//! .time_expire(PayTime::from_unix(1_767_229_200));
//! let prepay = match pay.jsapi_prepay(&order).await {
//!     Ok(p) => p,
//!     // Unknown outcome: the same out_trade_no and parameters answer the same prepay_id.
//!     Err(e) if e.is_outcome_unknown() => pay.jsapi_prepay(&order).await?,
//!     Err(e) => return Err(e.into()),
//! };
//! let params = pay.request_payment("wx1234567890abcdef", &prepay.prepay_id)?;
//! println!("{}", serde_json::to_string(&params)?); // timeStamp, nonceStr, package, signType, paySign
//!
//! // 2. The notification, at the notify URL: raw headers and body in, an answer out.
//! let answer = match pay.receive_notification(headers, raw_body).await {
//!     Ok(n) => {
//!         if let NotificationEvent::Transaction(t) = &n.event {
//!             assert_eq!(t.trade_state, TradeState::Success);
//!             // Store n.id + n.plaintext durably *before* answering.
//!         }
//!         NotifyResponse::success()
//!     }
//!     Err(e) => NotifyResponse::for_error(&e),
//! };
//! assert!(answer.status == 204 || answer.status >= 400);
//!
//! // 3. No notification? Ask.
//! let tx = pay.query_by_out_trade_no("order-20260101-0001").await?;
//! println!("{} {:?}", tx.trade_state, tx.amount);
//! # Ok(()) }
//! ```

mod amount;
mod bill;
mod certs;
mod client;
mod der;
mod error;
mod keys;
mod models;
mod notify;
mod sign;
mod time;
mod transport;
pub mod verifier;

pub use amount::{Fen, FenOverflow};
pub use bill::BillDownload;
pub use certs::{CertificateStore, RefreshPolicy};
pub use client::{PayClient, PayClientBuilder, PAY_BACKUP_URL, PAY_BASE_URL};
pub use error::{KeyError, NotifyError, PayError, PayErrorCode, VerifyError};
pub use keys::{ApiV3Key, MerchantPrivateKey, PlatformCertificate, RsaPublicKey};
pub use models::{
    AccountType, BillInfo, FundFlowBillRequest, JsapiPrepayRequest, OrderRef, Payer, Prepay,
    PrepayAmount, Refund, RefundAmount, RefundNotice, RefundRequest, RefundRequestAmount,
    RefundStatus, TradeBillRequest, TradeBillType, TradeState, Transaction, TransactionAmount,
};
pub use notify::{Notification, NotificationEvent, NotificationParser, NotifyResponse};
pub use sign::{
    nonce, pay_sign_message, request_message, response_message, AuthorizationHeader, Merchant,
    RequestPayment, AUTH_SCHEME,
};
pub use time::{ParseTimeError, PayTime};
pub use verifier::{
    HeaderSource, VerificationMode, Verified, Verifier, VerifierBuilder, PROBE_PREFIX,
};
