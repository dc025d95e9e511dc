//! WeChat's errors as the simulator answers them: the error type every rule returns, and the
//! `errmsg` text production writes around it (the rid, and today's hint on 40001).
//!
//! A leaf: it imports nothing of the crate, so every module may use it.

/// A WeChat error as the simulator answers it.
#[derive(Debug, Clone)]
pub struct WxError {
    /// errcode
    pub code: i64,
    /// errmsg without the rid
    pub msg: String,
}

impl WxError {
    /// An error with a code and message.
    pub fn new(code: i64, msg: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
        }
    }
}

impl std::fmt::Display for WxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (errcode {})", self.msg, self.code)
    }
}

impl std::error::Error for WxError {}

/// Result type of simulator operations.
pub type WxResult<T> = Result<T, WxError>;

/// 40001's text (without the hint `/cgi-bin/*` adds).
pub(crate) const INVALID_CREDENTIAL: &str =
    "invalid credential, access_token is invalid or not latest";

/// 40001: a token that is unknown or was superseded.
pub(crate) fn invalid_credential() -> WxError {
    WxError::new(40001, INVALID_CREDENTIAL)
}

/// The hint production adds to 40001 today on every path but `/sns/*` (captured on
/// `/cgi-bin/*`, `/wxa/business/getuserphonenumber` and `/tcb/*`, 2023–2026).
const STABLE_TOKEN_HINT: &str =
    ", could get access_token by getStableAccessToken, more details at https://mmbizurl.cn/s/JtxxFh33r";

/// An errmsg as production writes it: the text, then the request id — `", rid: "` on `/sns/*`,
/// a bare `" rid: "` everywhere else (captures 2020–2026; see the crate README). A 40001 outside
/// `/sns/*` carries today's hint to use `getStableAccessToken`.
pub(crate) fn errmsg(path: &str, msg: &str, rid: &str) -> String {
    if path.starts_with("/sns/") {
        return format!("{msg}, rid: {rid}");
    }
    let hint = if msg == INVALID_CREDENTIAL {
        STABLE_TOKEN_HINT
    } else {
        ""
    };
    format!("{msg}{hint} rid: {rid}")
}
