//! Typed errors: WeChat's errcodes as an enum, transport failures without URLs, crypto failures
//! with the official sample codes.

use std::borrow::Cow;
use std::time::Duration;

/// A WeChat `errcode`. Every code named in the API reference has a variant; anything else is
/// kept as [`ErrCode::Other`] so no information is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrCode {
    /// -1: system busy; retry with backoff.
    SystemError,
    /// 40001: invalid credential — the access_token is invalid or not the latest (or a wrong
    /// secret on the token endpoints).
    InvalidCredential,
    /// 40002: invalid grant_type (or no permission, for link APIs).
    InvalidGrantType,
    /// 40003: invalid openid.
    InvalidOpenid,
    /// 40013: invalid appid.
    InvalidAppid,
    /// 40014: invalid access_token.
    InvalidAccessToken,
    /// 40029: invalid (unknown or expired) code.
    InvalidCode,
    /// 40037: invalid template_id.
    InvalidTemplateId,
    /// 40097: invalid arguments.
    InvalidArgs,
    /// 40125: invalid appsecret.
    InvalidAppSecret,
    /// 40129: invalid scene.
    InvalidScene,
    /// 40163: the code has already been used.
    CodeBeenUsed,
    /// 40164: caller IP not in the whitelist.
    IpNotInWhitelist,
    /// 40226: code blocked (high-risk user).
    CodeBlocked,
    /// 40243: AppSecret frozen.
    SecretFrozen,
    /// 41001: access_token missing.
    AccessTokenMissing,
    /// 41002: appid missing.
    AppidMissing,
    /// 41004: appsecret missing.
    AppSecretMissing,
    /// 41030: invalid page.
    InvalidPage,
    /// 42001: access_token expired.
    AccessTokenExpired,
    /// 43002: the method requires POST.
    RequirePost,
    /// 43101: the user has not accepted (or has used up) this subscribe message.
    UserRefuseToAcceptMsg,
    /// 44002: empty POST data.
    EmptyPostData,
    /// 45009: daily API quota reached — see `clear_quota`.
    DailyQuotaExceeded,
    /// 45011: per-minute quota reached; retry in the next minute.
    MinuteQuotaExceeded,
    /// 45015: customer-service reply window closed.
    ResponseOutOfTimeLimit,
    /// 45029: mini program code count limit reached.
    QrcodeCountOutOfLimit,
    /// 45047: customer-service reply count limit reached.
    OutOfResponseCountLimit,
    /// 47001: data format error.
    DataFormatError,
    /// 47003: argument invalid.
    ArgumentInvalid,
    /// 48001: API unauthorized.
    ApiUnauthorized,
    /// 48006: clear_quota forbidden (monthly limit reached).
    ForbidToClearQuota,
    /// 50004: forbidden.
    Forbidden,
    /// 50007: account frozen.
    AccountFrozen,
    /// 61024: the app is authorized to a third-party platform, which must fetch its token.
    AuthorizedToThirdParty,
    /// 61003: the account has not (or no longer) authorized the third-party platform.
    ComponentNotAuthorized,
    /// 61004: the third-party platform's call came from an address not on its IP whitelist.
    ClientIpNotRegistered,
    /// 61005: the `component_verify_ticket` is older than 12 hours.
    ComponentTicketExpired,
    /// 61006: the `component_verify_ticket` is missing or not one WeChat pushed.
    ComponentTicketInvalid,
    /// 61007: the merchant did not grant the platform the permission set this API needs.
    ApiUnauthorizedToComponent,
    /// 61009: unknown authorization code.
    InvalidAuthorizationCode,
    /// 61011: invalid component (another platform's token, or an unknown component appid).
    InvalidComponent,
    /// 61012: unknown authorizer option name.
    InvalidOptionName,
    /// 61013: a value the authorizer option does not take.
    InvalidOptionValue,
    /// 61023: the authorizer refresh token is invalid (wrong, or replaced by a
    /// re-authorization).
    InvalidRefreshToken,
    /// 86000: a third-party-platform API called with a token that is not the platform's.
    OnlyFromThirdParty,
    /// 85079: the mini program has no online release.
    NoOnlineRelease,
    /// 85096: `scancode_time` is a reserved query key.
    ScancodeTimeForbidden,
    /// 87007: session_key does not exist or has expired.
    SessionKeyInvalid,
    /// 87008: invalid sig_method.
    InvalidSigMethod,
    /// 87009: invalid signature.
    InvalidSignature,
    /// 87014: risky content.
    RiskyContent,
    /// 89002: open platform account does not exist (no unionid).
    OpenNotExists,
    /// 89300: invalid trade.
    InvalidTrade,
    /// 40159: invalid path length.
    InvalidPathLength,
    /// 40169: invalid scene length.
    InvalidSceneLength,
    /// 85403: scheme or link not found (or expired).
    SchemeNotFound,
    /// 40165: invalid (unpublished) page path.
    InvalidPagePath,
    /// 85401: expiry not between 1 minute and 30 days.
    InvalidExpiry,
    /// 40212: invalid query.
    InvalidQuery,
    /// 40225: invalid page title.
    InvalidTitle,
    /// 85400: permanent short link quota reached.
    PermanentQuotaExceeded,
    /// 40066: invalid url.
    InvalidUrl,
    /// 85402: invalid env_version.
    InvalidEnvVersion,
    /// 44990: over 100 link generations a second.
    LinkRateLimited,
    /// 44993: over 500,000 link generations a day.
    LinkDailyQuotaExceeded,
    /// 40007: invalid media_id.
    InvalidMediaId,
    /// 40004: invalid media type.
    InvalidMediaType,
    /// 40008: invalid message type.
    InvalidMessageType,
    /// 45072: invalid typing command.
    TypingCommandInvalid,
    /// 45080: no message exchanged with the user in the last 30 s.
    NoRecentExchange,
    /// 45081: already typing.
    AlreadyTyping,
    /// 61500: date format error.
    DateFormatError,
    /// 61501: date range error.
    DateRangeError,
    /// 61503: data not ready yet.
    DataNotReady,
    /// 61010: the user has not visited the mini program in the last 2 hours. From a
    /// third-party platform's `api_query_auth` the same code means "code is expired": the
    /// authorization code is older than 600 s.
    NotRecentVisitor,
    /// 76001: rid not found.
    RidNotFound,
    /// 76002: malformed rid.
    RidInvalid,
    /// 76021: cgi_path not found.
    CgiPathNotFound,
    /// 76022: cgi_path not supported by quota/get (`/sns/` paths).
    CgiPathNoPermission,
    /// 89501: calls from this IP await the administrator's confirmation.
    IpAwaitsConfirmation,
    /// 89503: calls from this IP need the administrator's confirmation.
    IpNeedsConfirmation,
    /// 89506: the administrator refused this IP twice within 24 h; no calls for 24 h.
    IpRefusedForADay,
    /// 89507: the administrator refused this IP within the hour; no calls for 1 h.
    IpRefusedForAnHour,
    /// Any other code.
    Other(i64),
}

impl ErrCode {
    const TABLE: &'static [(i64, ErrCode)] = &[
        (-1, ErrCode::SystemError),
        (40001, ErrCode::InvalidCredential),
        (40002, ErrCode::InvalidGrantType),
        (40003, ErrCode::InvalidOpenid),
        (40013, ErrCode::InvalidAppid),
        (40014, ErrCode::InvalidAccessToken),
        (40029, ErrCode::InvalidCode),
        (40037, ErrCode::InvalidTemplateId),
        (40097, ErrCode::InvalidArgs),
        (40125, ErrCode::InvalidAppSecret),
        (40129, ErrCode::InvalidScene),
        (40163, ErrCode::CodeBeenUsed),
        (40164, ErrCode::IpNotInWhitelist),
        (40226, ErrCode::CodeBlocked),
        (40243, ErrCode::SecretFrozen),
        (41001, ErrCode::AccessTokenMissing),
        (41002, ErrCode::AppidMissing),
        (41004, ErrCode::AppSecretMissing),
        (41030, ErrCode::InvalidPage),
        (42001, ErrCode::AccessTokenExpired),
        (43002, ErrCode::RequirePost),
        (43101, ErrCode::UserRefuseToAcceptMsg),
        (44002, ErrCode::EmptyPostData),
        (45009, ErrCode::DailyQuotaExceeded),
        (45011, ErrCode::MinuteQuotaExceeded),
        (45015, ErrCode::ResponseOutOfTimeLimit),
        (45029, ErrCode::QrcodeCountOutOfLimit),
        (45047, ErrCode::OutOfResponseCountLimit),
        (47001, ErrCode::DataFormatError),
        (47003, ErrCode::ArgumentInvalid),
        (48001, ErrCode::ApiUnauthorized),
        (48006, ErrCode::ForbidToClearQuota),
        (50004, ErrCode::Forbidden),
        (50007, ErrCode::AccountFrozen),
        (61024, ErrCode::AuthorizedToThirdParty),
        (61003, ErrCode::ComponentNotAuthorized),
        (61004, ErrCode::ClientIpNotRegistered),
        (61005, ErrCode::ComponentTicketExpired),
        (61006, ErrCode::ComponentTicketInvalid),
        (61007, ErrCode::ApiUnauthorizedToComponent),
        (61009, ErrCode::InvalidAuthorizationCode),
        (61011, ErrCode::InvalidComponent),
        (61012, ErrCode::InvalidOptionName),
        (61013, ErrCode::InvalidOptionValue),
        (61023, ErrCode::InvalidRefreshToken),
        (86000, ErrCode::OnlyFromThirdParty),
        (85079, ErrCode::NoOnlineRelease),
        (85096, ErrCode::ScancodeTimeForbidden),
        (87007, ErrCode::SessionKeyInvalid),
        (87008, ErrCode::InvalidSigMethod),
        (87009, ErrCode::InvalidSignature),
        (87014, ErrCode::RiskyContent),
        (89002, ErrCode::OpenNotExists),
        (89300, ErrCode::InvalidTrade),
        (40159, ErrCode::InvalidPathLength),
        (40169, ErrCode::InvalidSceneLength),
        (85403, ErrCode::SchemeNotFound),
        (40165, ErrCode::InvalidPagePath),
        (85401, ErrCode::InvalidExpiry),
        (40212, ErrCode::InvalidQuery),
        (40225, ErrCode::InvalidTitle),
        (85400, ErrCode::PermanentQuotaExceeded),
        (40066, ErrCode::InvalidUrl),
        (85402, ErrCode::InvalidEnvVersion),
        (44990, ErrCode::LinkRateLimited),
        (44993, ErrCode::LinkDailyQuotaExceeded),
        (40007, ErrCode::InvalidMediaId),
        (40004, ErrCode::InvalidMediaType),
        (40008, ErrCode::InvalidMessageType),
        (45072, ErrCode::TypingCommandInvalid),
        (45080, ErrCode::NoRecentExchange),
        (45081, ErrCode::AlreadyTyping),
        (61010, ErrCode::NotRecentVisitor),
        (61500, ErrCode::DateFormatError),
        (61501, ErrCode::DateRangeError),
        (61503, ErrCode::DataNotReady),
        (76001, ErrCode::RidNotFound),
        (76002, ErrCode::RidInvalid),
        (76021, ErrCode::CgiPathNotFound),
        (76022, ErrCode::CgiPathNoPermission),
        (89501, ErrCode::IpAwaitsConfirmation),
        (89503, ErrCode::IpNeedsConfirmation),
        (89506, ErrCode::IpRefusedForADay),
        (89507, ErrCode::IpRefusedForAnHour),
    ];

    /// The numeric code.
    pub fn code(self) -> i64 {
        match self {
            ErrCode::Other(n) => n,
            known => Self::TABLE
                .iter()
                .find(|(_, c)| *c == known)
                .map(|(n, _)| *n)
                .expect("every named variant is in the table"),
        }
    }

    /// True for the codes that mean "this access_token is no longer good": 40001, 40014, 42001.
    pub fn is_token_invalid(self) -> bool {
        matches!(
            self,
            ErrCode::InvalidCredential | ErrCode::InvalidAccessToken | ErrCode::AccessTokenExpired
        )
    }
}

impl From<i64> for ErrCode {
    fn from(n: i64) -> Self {
        Self::TABLE
            .iter()
            .find(|(c, _)| *c == n)
            .map(|(_, e)| *e)
            .unwrap_or(ErrCode::Other(n))
    }
}

impl std::fmt::Display for ErrCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.code())
    }
}

/// Splits a WeChat errmsg into its text and its request id.
///
/// Current servers end errmsg with `", rid: 6166f719-6cb5d09c-633ab469"`, older ones with
/// `" hint: [xxxx]"`. The rid is what `/cgi-bin/openapi/rid/get` and WeChat support ask for.
pub fn split_rid(errmsg: &str) -> (String, Option<String>) {
    if let Some(pos) = errmsg.rfind("rid:") {
        let rid = errmsg[pos + 4..].trim();
        if !rid.is_empty() && rid.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            let text = errmsg[..pos].trim_end().trim_end_matches(',').trim_end();
            return (text.to_owned(), Some(rid.to_owned()));
        }
    }
    if let Some(pos) = errmsg.rfind("hint: [") {
        let rest = &errmsg[pos + 7..];
        if let Some(end) = rest.find(']') {
            let text = errmsg[..pos].trim_end();
            return (text.to_owned(), Some(rest[..end].to_owned()));
        }
    }
    (errmsg.to_owned(), None)
}

/// Failures of the crypto helpers. [`CryptoError::official_code`] gives the code the official
/// sample implementations use for the same failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// A field is not valid base64.
    #[error("{field} is not valid base64")]
    InvalidBase64 {
        /// Which input: `session_key`, `iv`, `encrypted_data`, `encoding_aes_key`, `encrypt`.
        field: &'static str,
    },
    /// The key decodes to the wrong number of bytes.
    #[error("key must be {expected} bytes, got {actual}")]
    InvalidKeyLength {
        /// Required length.
        expected: usize,
        /// Decoded length.
        actual: usize,
    },
    /// The IV does not decode to 16 bytes.
    #[error("iv must be 16 bytes, got {0}")]
    InvalidIvLength(usize),
    /// The ciphertext is empty or not a whole number of blocks.
    #[error("ciphertext length {0} is not a positive multiple of the block size")]
    InvalidCiphertextLength(usize),
    /// The PKCS#7 padding is malformed (wrong key, wrong iv or tampered data).
    #[error("bad PKCS#7 padding (wrong key or iv, or tampered data)")]
    BadPadding,
    /// The plaintext is not UTF-8 JSON.
    #[error("decrypted data is not JSON: {0}")]
    NotJson(String),
    /// The plaintext has no `watermark.appid`.
    #[error("decrypted data has no watermark.appid")]
    MissingWatermark,
    /// The watermark names another app.
    #[error("watermark appid {actual} does not match {expected}")]
    AppidMismatch {
        /// Our appid.
        expected: String,
        /// The appid in the data.
        actual: String,
    },
    /// The watermark timestamp is outside the accepted window.
    #[error("watermark timestamp {timestamp} is older than the allowed {max_age_secs} s")]
    StaleWatermark {
        /// `watermark.timestamp`.
        timestamp: i64,
        /// The configured maximum age.
        max_age_secs: u64,
    },
}

impl CryptoError {
    /// The error code of WeChat's official decryption samples for this failure
    /// (-41001 key, -41002 iv, -41003 buffer/appid, -41004 base64).
    pub fn official_code(&self) -> i32 {
        match self {
            CryptoError::InvalidKeyLength { .. } => -41001,
            CryptoError::InvalidIvLength(_) => -41002,
            CryptoError::InvalidBase64 { .. } => -41004,
            _ => -41003,
        }
    }
}

/// A token store failure (Redis unreachable, corrupt value, …). Cheap to clone: the cause is
/// shared, so one failure can be handed to every caller that waited on it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("token store: {message}")]
pub struct StoreError {
    message: String,
    #[source]
    source: Option<std::sync::Arc<dyn std::error::Error + Send + Sync>>,
}

impl StoreError {
    /// A store error with a message and an optional cause.
    pub fn new(
        message: impl Into<String>,
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self {
            message: message.into(),
            source: source.map(std::sync::Arc::from),
        }
    }
}

/// Everything that can go wrong in a call.
///
/// Errors are cheap to clone (causes are shared): when one token refresh fails, every caller
/// that waited on it receives the same error.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// WeChat answered with a non-zero errcode.
    #[error("{endpoint}: WeChat error {code}: {message}{}", rid.as_deref().map(|r| format!(" (rid {r})")).unwrap_or_default())]
    Api {
        /// The errcode.
        code: ErrCode,
        /// errmsg without the rid suffix.
        message: String,
        /// The request id WeChat attached, if any.
        rid: Option<String>,
        /// The API path, e.g. `/sns/jscode2session`.
        endpoint: Cow<'static, str>,
    },
    /// The request did not complete (connect, timeout, TLS, body). Never carries the URL,
    /// which may contain the access token.
    #[error("{endpoint}: transport error: {}", error_chain(source.as_ref()))]
    Transport {
        /// The API path.
        endpoint: Cow<'static, str>,
        /// The cause, with its URL removed.
        #[source]
        source: std::sync::Arc<reqwest::Error>,
    },
    /// The call (all its attempts) did not finish within its deadline. For a call that changes
    /// something at WeChat (a classic token fetch, a send) the outcome is unknown.
    #[error("{endpoint}: no answer within {} ms", after.as_millis())]
    TimedOut {
        /// The API path.
        endpoint: Cow<'static, str>,
        /// The deadline that passed.
        after: Duration,
    },
    /// WeChat answered with an HTTP status other than 200 and no errcode body.
    #[error("{endpoint}: unexpected HTTP status {status}")]
    HttpStatus {
        /// The API path.
        endpoint: Cow<'static, str>,
        /// The status code.
        status: u16,
    },
    /// The response could not be decoded into the expected shape.
    #[error("{endpoint}: cannot decode response: {message}")]
    Decode {
        /// The API path.
        endpoint: Cow<'static, str>,
        /// What did not match.
        message: String,
    },
    /// A non-idempotent call (a message send) failed in a way that leaves its outcome unknown;
    /// it was not retried because retrying could deliver twice.
    #[error("{endpoint}: outcome unknown, not retried: {source}")]
    OutcomeUnknown {
        /// The API path.
        endpoint: Cow<'static, str>,
        /// The underlying failure.
        #[source]
        source: Box<Error>,
    },
    /// The token store failed and no usable local copy exists.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Decryption or signature checking failed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// An argument was rejected before any request was made.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A weapp-server token broker refused a request (a wrong client key, a missing scope, an
    /// app it does not serve, rate limiting, …) — see
    /// [`BrokerTokenSource`](crate::token::BrokerTokenSource). Never carries the client key or
    /// a token.
    #[error("{endpoint}: broker refused with HTTP {status} ({code}): {message}")]
    Broker {
        /// The broker path, e.g. `/v1/apps/{appid}/access_token`.
        endpoint: Cow<'static, str>,
        /// The HTTP status (401 unknown key, 403 scope or app not allowed, 404 app not
        /// configured, 429 rate limited, 5xx broker or upstream failure).
        status: u16,
        /// The broker's machine-readable code (`unauthorized`, `forbidden`, …).
        code: String,
        /// The broker's explanation.
        message: String,
    },
}

impl Error {
    /// The WeChat errcode, if this is an API error.
    pub fn errcode(&self) -> Option<ErrCode> {
        match self {
            Error::Api { code, .. } => Some(*code),
            Error::OutcomeUnknown { source, .. } => source.errcode(),
            _ => None,
        }
    }

    /// The WeChat request id, if this is an API error that carried one.
    pub fn rid(&self) -> Option<&str> {
        match self {
            Error::Api { rid, .. } => rid.as_deref(),
            Error::OutcomeUnknown { source, .. } => source.rid(),
            _ => None,
        }
    }

    /// True for 40001 / 40014 / 42001: the access token used is no longer valid.
    pub fn is_token_invalid(&self) -> bool {
        self.errcode().is_some_and(ErrCode::is_token_invalid)
    }

    /// True when retrying the same request later may succeed: -1, 45011, transport failures
    /// and 5xx statuses. 45009 (daily quota) is not retryable: retrying only burns quota.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Api { code, .. } => {
                matches!(code, ErrCode::SystemError | ErrCode::MinuteQuotaExceeded)
            }
            Error::Transport { .. } | Error::TimedOut { .. } => true,
            Error::HttpStatus { status, .. } | Error::Broker { status, .. } => {
                *status >= 500 || *status == 429
            }
            _ => false,
        }
    }

    /// For 45011 (per-minute quota), how long until the next minute starts, when WeChat's
    /// counter resets. `None` for every other error.
    pub fn retry_after(&self) -> Option<Duration> {
        if self.errcode() != Some(ErrCode::MinuteQuotaExceeded) {
            return None;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Some(Duration::from_millis(
            60_000 - (now.as_millis() % 60_000) as u64,
        ))
    }
}

/// `outer: cause: root cause` — reqwest's own message ("error sending request") says little
/// without its causes ("connection refused", "operation timed out").
fn error_chain(err: &dyn std::error::Error) -> String {
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

/// An error found before sending, carrying the errcode WeChat would have answered, so callers
/// handle both alike (`rid` is `None`: WeChat never saw it).
pub(crate) fn rejected_locally(
    endpoint: &'static str,
    code: i64,
    message: impl Into<String>,
) -> Error {
    Error::Api {
        code: ErrCode::from(code),
        message: format!("{} (checked before sending)", message.into()),
        rid: None,
        endpoint: endpoint.into(),
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_named_code_round_trips() {
        for (n, code) in ErrCode::TABLE {
            assert_eq!(ErrCode::from(*n), *code);
            assert_eq!(code.code(), *n);
        }
        assert_eq!(ErrCode::from(12345), ErrCode::Other(12345));
        assert_eq!(ErrCode::Other(12345).code(), 12345);
    }

    #[test]
    fn rid_is_split_from_errmsg() {
        let (text, rid) = split_rid("invalid code, rid: 6166f719-6cb5d09c-633ab469");
        assert_eq!(text, "invalid code");
        assert_eq!(rid.as_deref(), Some("6166f719-6cb5d09c-633ab469"));
        let (text, rid) = split_rid("invalid credential hint: [ab12cd]");
        assert_eq!(text, "invalid credential");
        assert_eq!(rid.as_deref(), Some("ab12cd"));
        let (text, rid) = split_rid("ok");
        assert_eq!((text.as_str(), rid), ("ok", None));
    }

    #[test]
    fn token_family_and_retryability() {
        for n in [40001, 40014, 42001] {
            assert!(ErrCode::from(n).is_token_invalid());
        }
        assert!(!ErrCode::from(40029).is_token_invalid());
        let api = |n| Error::Api {
            code: ErrCode::from(n),
            message: String::new(),
            rid: None,
            endpoint: "/x".into(),
        };
        assert!(api(-1).is_retryable());
        assert!(!api(45009).is_retryable());
        let wait = api(45011).retry_after().unwrap();
        assert!(wait <= Duration::from_secs(60) && wait > Duration::ZERO);
        assert!(api(45009).retry_after().is_none());
    }
}
