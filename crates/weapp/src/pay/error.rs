//! The errors of `weapp::pay`: WeChat Pay's answers, signature checks, keys and notifications.
//! A leaf module (it imports nothing else from `pay`), so every other part can return them.
//!
//! No error carries a key, a signature message or a decrypted resource: errors end up in logs.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

/// A WeChat Pay error `code` (`{"code":"ORDER_NOT_EXIST","message":…}`). The documented codes
/// have variants; both spellings WeChat has used (`USER_PAYING` and the 2020 docs'
/// `USERPAYING`, …) map to the same variant; anything else is kept in [`PayErrorCode::Other`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PayErrorCode {
    /// `PARAM_ERROR` (400): a parameter is wrong; see `detail`.
    ParamError,
    /// `INVALID_REQUEST` (400): the request does not fit the order's state.
    InvalidRequest,
    /// `APPID_MCHID_NOT_MATCH` (400): the appid is not bound to this mchid.
    AppidMchidNotMatch,
    /// `MCH_NOT_EXISTS` (400).
    MchNotExists,
    /// `ORDER_CLOSED` (400).
    OrderClosed,
    /// `SIGN_ERROR` (401): WeChat could not verify the request signature.
    SignError,
    /// `NO_AUTH` (403).
    NoAuth,
    /// `ACCOUNT_ERROR` (403).
    AccountError,
    /// `NOT_ENOUGH` (403): the merchant's balance is too low (refunds).
    NotEnough,
    /// `OUT_TRADE_NO_USED` (403): the out_trade_no was used with other parameters.
    OutTradeNoUsed,
    /// `RULE_LIMIT` (403).
    RuleLimit,
    /// `TRADE_ERROR` (403).
    TradeError,
    /// `ORDER_NOT_EXIST` (404).
    OrderNotExist,
    /// `RESOURCE_NOT_EXISTS` (404), e.g. `/v3/certificates` for a public-key-only merchant.
    ResourceNotExists,
    /// `FREQUENCY_LIMITED` (429; also spelled `RATELIMIT_EXCEEDED`, `RATE_LIMITED`).
    FrequencyLimited,
    /// `SYSTEM_ERROR` (500): retry with the same parameters.
    SystemError,
    /// `BANK_ERROR` (500).
    BankError,
    /// `SERVICE_UNAVAILABLE` (502/503).
    ServiceUnavailable,
    /// `USER_PAYING` (202): the user is paying.
    UserPaying,
    /// `OPENID_MISMATCH`.
    OpenidMismatch,
    /// `USER_ACCOUNT_ABNORMAL` (refunds).
    UserAccountAbnormal,
    /// Any other code, as sent.
    Other(String),
}

impl PayErrorCode {
    const TABLE: &'static [(&'static str, PayErrorCode)] = &[
        ("PARAM_ERROR", PayErrorCode::ParamError),
        ("INVALID_REQUEST", PayErrorCode::InvalidRequest),
        ("APPID_MCHID_NOT_MATCH", PayErrorCode::AppidMchidNotMatch),
        ("MCH_NOT_EXISTS", PayErrorCode::MchNotExists),
        ("ORDER_CLOSED", PayErrorCode::OrderClosed),
        ("SIGN_ERROR", PayErrorCode::SignError),
        ("NO_AUTH", PayErrorCode::NoAuth),
        ("ACCOUNT_ERROR", PayErrorCode::AccountError),
        ("NOT_ENOUGH", PayErrorCode::NotEnough),
        ("NOTENOUGH", PayErrorCode::NotEnough),
        ("OUT_TRADE_NO_USED", PayErrorCode::OutTradeNoUsed),
        ("RULE_LIMIT", PayErrorCode::RuleLimit),
        ("RULELIMIT", PayErrorCode::RuleLimit),
        ("TRADE_ERROR", PayErrorCode::TradeError),
        ("ORDER_NOT_EXIST", PayErrorCode::OrderNotExist),
        ("ORDERNOTEXIST", PayErrorCode::OrderNotExist),
        ("RESOURCE_NOT_EXISTS", PayErrorCode::ResourceNotExists),
        ("FREQUENCY_LIMITED", PayErrorCode::FrequencyLimited),
        ("RATELIMIT_EXCEEDED", PayErrorCode::FrequencyLimited),
        ("RATE_LIMITED", PayErrorCode::FrequencyLimited),
        ("SYSTEM_ERROR", PayErrorCode::SystemError),
        ("SYSTEMERROR", PayErrorCode::SystemError),
        ("BANK_ERROR", PayErrorCode::BankError),
        ("SERVICE_UNAVAILABLE", PayErrorCode::ServiceUnavailable),
        ("USER_PAYING", PayErrorCode::UserPaying),
        ("USERPAYING", PayErrorCode::UserPaying),
        ("OPENID_MISMATCH", PayErrorCode::OpenidMismatch),
        ("USER_ACCOUNT_ABNORMAL", PayErrorCode::UserAccountAbnormal),
    ];

    /// The code as WeChat spells it today (`ORDER_NOT_EXIST`), or as received for
    /// [`PayErrorCode::Other`].
    pub fn as_str(&self) -> &str {
        match self {
            PayErrorCode::Other(s) => s,
            known => Self::TABLE
                .iter()
                .find(|(_, c)| c == known)
                .map(|(s, _)| *s)
                .unwrap_or("UNKNOWN"),
        }
    }
}

impl From<&str> for PayErrorCode {
    fn from(code: &str) -> Self {
        Self::TABLE
            .iter()
            .find(|(s, _)| *s == code)
            .map(|(_, c)| c.clone())
            .unwrap_or_else(|| PayErrorCode::Other(code.to_owned()))
    }
}

impl std::fmt::Display for PayErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a key, a certificate or the APIv3 key was refused when loaded. Never contains the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The text is not PEM with the expected label(s).
    #[error("not a PEM block labelled {expected}")]
    NotPem {
        /// The labels accepted, e.g. `PRIVATE KEY or RSA PRIVATE KEY`.
        expected: &'static str,
    },
    /// The PEM body is not base64.
    #[error("the PEM body is not valid base64")]
    Base64,
    /// The DER inside is not the expected structure.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// What was being parsed (`private key`, `certificate`, `public key`).
        what: &'static str,
        /// What did not fit.
        reason: &'static str,
    },
    /// ring refused the RSA key (size outside 2048–8192 bits, inconsistent parameters, …).
    #[error("RSA key rejected: {0}")]
    Rejected(String),
    /// The APIv3 key is not 32 bytes.
    #[error("the APIv3 key must be 32 bytes, got {0}")]
    ApiV3KeyLength(usize),
    /// A serial number or key id is empty or contains characters a header cannot carry.
    #[error("invalid {0}")]
    InvalidId(&'static str),
}

/// Why a response or a notification signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// A `Wechatpay-*` header is missing (or not text). A 2xx response without
    /// `Wechatpay-Signature` is refused this way: the docs say to treat it as forged.
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    /// `Wechatpay-Timestamp` is not a number.
    #[error("Wechatpay-Timestamp is not a Unix time")]
    BadTimestamp,
    /// `Wechatpay-Timestamp` is further than the allowed window from now (replay or a wrong
    /// clock).
    #[error("Wechatpay-Timestamp {timestamp} is more than {window_secs} s from now ({now})")]
    StaleTimestamp {
        /// The header's value.
        timestamp: i64,
        /// Our clock, Unix seconds.
        now: i64,
        /// The window, ±seconds.
        window_secs: i64,
    },
    /// A 签名探测 probe (`WECHATPAY/SIGNTEST/…`): WeChat checking that we do verify.
    #[error("probe signature (WECHATPAY/SIGNTEST/): refused, as WeChat expects")]
    ProbeSignature,
    /// `Wechatpay-Signature-Type` names an algorithm this SDK does not verify (e.g. SM2).
    #[error("unsupported signature type {0}")]
    UnsupportedSignatureType(String),
    /// `Wechatpay-Serial` names no key we hold that is valid now (an unknown, expired, not
    /// yet effective or not yet downloaded certificate, or the public key while only
    /// certificates are configured, or the reverse).
    #[error("no verification key for Wechatpay-Serial {serial} (have: {have})")]
    UnknownSerial {
        /// The header's value (sanitized, at most 64 characters).
        serial: String,
        /// The serials that verify now, comma-separated.
        have: String,
    },
    /// The signature is not base64.
    #[error("Wechatpay-Signature is not base64")]
    SignatureEncoding,
    /// The signature does not match the message (tampered body or headers, or a wrong key).
    #[error("signature does not verify")]
    Mismatch,
}

/// Why a notification was refused by [`crate::pay::NotificationParser::parse`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NotifyError {
    /// The signature headers did not verify (answer 401: WeChat retries).
    #[error(transparent)]
    Verify(#[from] VerifyError),
    /// The body is not a notification envelope (answer 400).
    #[error("malformed notification: {0}")]
    Malformed(String),
    /// `resource.algorithm` is not `AEAD_AES_256_GCM`.
    #[error("unsupported resource algorithm {0}")]
    UnsupportedAlgorithm(String),
    /// AES-GCM refused the ciphertext: wrong APIv3 key, or the resource was altered.
    #[error("cannot decrypt the resource (wrong APIv3 key or altered ciphertext)")]
    Decrypt,
    /// The decrypted resource is not the shape its `event_type` promises (the message names
    /// the serde error's category and position, never a value).
    #[error("decrypted resource does not decode: {0}")]
    Resource(String),
    /// `event_type`, `resource.original_type` and `resource.associated_data` disagree
    /// (`TRANSACTION.*` goes with `transaction`, `REFUND.*` with `refund`, and the GCM
    /// associated data is the `original_type`).
    #[error("notification type mismatch: event_type {event_type}, original_type {original_type}")]
    TypeMismatch {
        /// `event_type` (sanitized, at most 64 characters).
        event_type: String,
        /// `resource.original_type` (sanitized, at most 64 characters).
        original_type: String,
    },
}

impl NotifyError {
    /// True when the request is not proven to come from WeChat (bad or missing signature,
    /// stale timestamp, probe).
    pub fn is_authentication(&self) -> bool {
        matches!(self, NotifyError::Verify(_))
    }
}

/// Everything a WeChat Pay call can fail with.
///
/// Cheap to clone. Never contains the merchant key, the APIv3 key, a request signature or a
/// decrypted resource.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum PayError {
    /// WeChat Pay answered with a non-2xx status and a `{"code","message","detail"}` body.
    /// Such answers are not signed: trust them as a hint, not as proof.
    #[error("{endpoint}: HTTP {status} {code}: {message}{}", request_id.as_deref().map(|r| format!(" (Request-ID {r})")).unwrap_or_default())]
    Api {
        /// The endpoint, e.g. `/v3/pay/transactions/jsapi`.
        endpoint: Cow<'static, str>,
        /// HTTP status.
        status: u16,
        /// `code`.
        code: PayErrorCode,
        /// `message` (human text, often Chinese): unsigned, so at most 512 characters with
        /// control characters escaped (`\n`).
        message: String,
        /// `detail`, when present (`field`, `value`, `issue`, `location`, `sign_information`),
        /// its strings cleaned like `message` and its size bounded.
        detail: Option<Box<serde_json::Value>>,
        /// The `Request-ID` response header: what WeChat Pay support asks for.
        request_id: Option<String>,
    },
    /// A non-2xx status without a JSON error body (an nginx page, a proxy).
    #[error("{endpoint}: unexpected HTTP status {status}{}", request_id.as_deref().map(|r| format!(" (Request-ID {r})")).unwrap_or_default())]
    HttpStatus {
        /// The endpoint.
        endpoint: Cow<'static, str>,
        /// HTTP status.
        status: u16,
        /// `Request-ID`, if any.
        request_id: Option<String>,
    },
    /// The request could not be sent or its answer not received (connect, TLS, reset). The URL
    /// is not kept.
    #[error("{endpoint}: transport error: {}", chain(source.as_ref()))]
    Transport {
        /// The endpoint.
        endpoint: Cow<'static, str>,
        /// The cause.
        #[source]
        source: Arc<reqwest::Error>,
    },
    /// No answer within the timeout.
    #[error("{endpoint}: no answer within {} ms", after.as_millis())]
    TimedOut {
        /// The endpoint.
        endpoint: Cow<'static, str>,
        /// The timeout that passed.
        after: Duration,
    },
    /// A call that creates something (a prepay) failed after the request may have reached
    /// WeChat: the order may or may not exist. It was not retried. Recover by calling again
    /// with the **same** `out_trade_no` and parameters (WeChat answers the same `prepay_id`),
    /// or by querying the order.
    #[error("{endpoint}: outcome unknown: {source}")]
    OutcomeUnknown {
        /// The endpoint.
        endpoint: Cow<'static, str>,
        /// What went wrong.
        #[source]
        source: Box<PayError>,
    },
    /// A 2xx response whose signature did not verify: it is not proven to come from WeChat.
    #[error("{endpoint}: response signature refused: {source}{}", request_id.as_deref().map(|r| format!(" (Request-ID {r})")).unwrap_or_default())]
    Verify {
        /// The endpoint.
        endpoint: Cow<'static, str>,
        /// Why.
        #[source]
        source: VerifyError,
        /// `Request-ID`, if any.
        request_id: Option<String>,
    },
    /// A verified 2xx response that does not decode into the expected shape (the message
    /// names the serde error's category and position, never a value of the body).
    #[error("{endpoint}: cannot decode response: {message}")]
    Decode {
        /// The endpoint.
        endpoint: Cow<'static, str>,
        /// What did not match.
        message: String,
    },
    /// A downloaded bill does not match the `hash_value` of its apply call.
    #[error("bill download: SHA1 {actual} does not match hash_value {expected}")]
    BillHashMismatch {
        /// `hash_value` from the apply call.
        expected: String,
        /// SHA1 of what was received.
        actual: String,
    },
    /// A key or certificate could not be loaded.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// Decrypting a platform certificate failed (wrong APIv3 key or altered data).
    #[error("cannot decrypt platform certificate {serial}")]
    CertificateDecrypt {
        /// The listed serial.
        serial: String,
    },
    /// A certificate refresh was asked for too soon after the last one (so that forged
    /// serials cannot make us hammer WeChat).
    #[error("certificate refresh rate-limited: next in {} s", retry_after.as_secs())]
    RefreshRateLimited {
        /// When a refresh is allowed again.
        retry_after: Duration,
    },
    /// An answer was larger than this client reads (by its `Content-Length`, or while
    /// reading): refused before anything in it was trusted.
    #[error("{endpoint}: answer larger than {limit} bytes, refused")]
    ResponseTooLarge {
        /// The endpoint.
        endpoint: Cow<'static, str>,
        /// The limit, in bytes.
        limit: u64,
    },
    /// A bill's `download_url` does not point at this client's WeChat Pay host (its base or
    /// backup URL) under `/v3/billdownload/`: nothing was signed or sent.
    #[error("bill download_url refused: {reason}")]
    UntrustedDownloadUrl {
        /// What did not match.
        reason: &'static str,
    },
    /// Signing failed (ring refused; practically unreachable with a loaded key).
    #[error("signing failed")]
    Sign,
    /// An argument was refused before anything was sent.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl PayError {
    /// The WeChat Pay `code`, for [`PayError::Api`] (also inside [`PayError::OutcomeUnknown`]).
    pub fn code(&self) -> Option<&PayErrorCode> {
        match self {
            PayError::Api { code, .. } => Some(code),
            PayError::OutcomeUnknown { source, .. } => source.code(),
            _ => None,
        }
    }

    /// The HTTP status WeChat answered, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            PayError::Api { status, .. } | PayError::HttpStatus { status, .. } => Some(*status),
            PayError::OutcomeUnknown { source, .. } => source.status(),
            _ => None,
        }
    }

    /// The `Request-ID` of WeChat's answer, if there was one.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            PayError::Api { request_id, .. }
            | PayError::HttpStatus { request_id, .. }
            | PayError::Verify { request_id, .. } => request_id.as_deref(),
            PayError::OutcomeUnknown { source, .. } => source.request_id(),
            _ => None,
        }
    }

    /// True when the outcome of a creating call is unknown (see [`PayError::OutcomeUnknown`]).
    pub fn is_outcome_unknown(&self) -> bool {
        matches!(self, PayError::OutcomeUnknown { .. })
    }

    /// True when repeating the same request later (same `out_trade_no` / `out_refund_no`) may
    /// succeed: transport failures, timeouts, 429, 5xx, `SYSTEM_ERROR`, `FREQUENCY_LIMITED`.
    pub fn is_retryable(&self) -> bool {
        match self {
            PayError::Api { status, code, .. } => {
                *status >= 500
                    || *status == 429
                    || matches!(
                        code,
                        PayErrorCode::SystemError
                            | PayErrorCode::FrequencyLimited
                            | PayErrorCode::BankError
                            | PayErrorCode::ServiceUnavailable
                    )
            }
            PayError::HttpStatus { status, .. } => *status >= 500 || *status == 429,
            PayError::Transport { .. } | PayError::TimedOut { .. } => true,
            PayError::OutcomeUnknown { .. } => true,
            _ => false,
        }
    }
}

/// At most this many characters of unsigned text (an error body's `message`, `code`,
/// `detail` strings) are kept in an error.
pub(crate) const MAX_TEXT_CHARS: usize = 512;

/// Text from the network fit for an error and a log line: at most `max_chars` characters,
/// control characters (newlines, ANSI escapes) and bidirectional overrides written as
/// escapes (`\n`, `\u{1b}`), `…` marking a cut. Other Unicode (WeChat's Chinese messages)
/// is kept.
pub(crate) fn clean_text(text: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_chars * 4));
    for (i, c) in text.chars().enumerate() {
        if i == max_chars {
            out.push('…');
            break;
        }
        let unsafe_char = c.is_control()
            || matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}');
        if unsafe_char {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// A serde error as its category and position only: serde's messages quote the offending
/// value (`invalid type: string "oUpF8u…"`), and decoded bodies carry openids and amounts.
/// `missing field` / `duplicate field` messages name only our own field and are kept.
pub(crate) fn serde_summary(e: &serde_json::Error) -> String {
    let text = e.to_string();
    for keep in ["missing field `", "duplicate field `"] {
        if text.starts_with(keep) {
            // "missing field `x` at line 1 column 2": the field is ours, not the payload's.
            return clean_text(&text, 128);
        }
    }
    let category = match e.classify() {
        serde_json::error::Category::Io => "I/O",
        serde_json::error::Category::Syntax => "syntax",
        serde_json::error::Category::Data => "data",
        serde_json::error::Category::Eof => "unexpected end of input",
    };
    format!(
        "{category} error at line {} column {}",
        e.line(),
        e.column()
    )
}

/// `outer: cause: root cause`, skipping repeats.
pub(crate) fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_spellings_map_to_one_code() {
        assert_eq!(PayErrorCode::from("USERPAYING"), PayErrorCode::UserPaying);
        assert_eq!(PayErrorCode::from("USER_PAYING"), PayErrorCode::UserPaying);
        assert_eq!(
            PayErrorCode::from("ORDERNOTEXIST").as_str(),
            "ORDER_NOT_EXIST"
        );
        assert_eq!(
            PayErrorCode::from("SOMETHING_NEW"),
            PayErrorCode::Other("SOMETHING_NEW".into())
        );
        assert_eq!(
            PayErrorCode::from("SOMETHING_NEW").as_str(),
            "SOMETHING_NEW"
        );
        for (s, c) in PayErrorCode::TABLE {
            assert_eq!(&PayErrorCode::from(*s), c);
        }
    }
}
