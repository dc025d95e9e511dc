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

/// A WeChat Pay (APIv3) error as the simulator answers it: an HTTP status and the JSON body
/// `{"code", "message", "detail"?}` production sends (wechat-pay.md §2.11). Pay errors are not
/// WeChat Mini Program errors: no errcode, no rid, the status carries meaning.
#[derive(Debug, Clone)]
pub struct PayError {
    /// The HTTP status (400, 401, 403, 404, 429, 500, …).
    pub status: u16,
    /// The upper-case code, e.g. `PARAM_ERROR`, `SIGN_ERROR`, `ORDER_NOT_EXIST`.
    pub code: &'static str,
    /// The human-readable message (production writes Chinese).
    pub message: String,
    /// `detail`, when production sends one (`SIGN_ERROR`, `PARAM_ERROR` with a field).
    pub detail: Option<serde_json::Value>,
}

impl PayError {
    /// An error with a status, a code and a message.
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            detail: None,
        }
    }

    /// 400 `PARAM_ERROR` about `field` (a JSON pointer into the body, or a query parameter).
    pub fn param(field: &str, location: &str, issue: impl Into<String>) -> Self {
        let issue = issue.into();
        Self {
            detail: Some(serde_json::json!({"field": field, "location": location, "issue": issue})),
            ..Self::new(400, "PARAM_ERROR", format!("参数错误: {issue}"))
        }
    }

    /// 400 `INVALID_REQUEST`: the parameters are well-formed but break a business rule.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(400, "INVALID_REQUEST", message)
    }

    /// Adds a `detail`.
    #[must_use]
    pub fn with_detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = Some(detail);
        self
    }

    /// The body production sends.
    pub fn body(&self) -> serde_json::Value {
        let mut v = serde_json::json!({"code": self.code, "message": self.message});
        if let Some(d) = &self.detail {
            v["detail"] = d.clone();
        }
        v
    }
}

impl std::fmt::Display for PayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code, self.message)
    }
}

impl std::error::Error for PayError {}

/// Result type of the WeChat Pay simulator's operations.
pub type PayResult<T> = Result<T, PayError>;
