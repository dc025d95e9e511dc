//! [`AppError`]: every failure a handler can return, one variant per HTTP meaning. The body is
//! always `{"error": {"code", "message", "wechat_errcode"?, "rid"?}}`; internal errors are
//! logged and answered with a generic message.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use weapp::ErrCode;

/// A handler failure.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// 400: the request is malformed or names something invalid.
    #[error("{message}")]
    BadRequest {
        /// Machine-readable code, e.g. `invalid_json`.
        code: &'static str,
        /// What is wrong.
        message: String,
    },
    /// 401: missing, unknown or expired credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: authenticated, but not allowed.
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such resource (e.g. an app that is not configured).
    #[error("{0}")]
    NotFound(String),
    /// 405: the route exists, the method does not.
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    /// 409: the request conflicts with the current state (e.g. a replayed push).
    #[error("{0}")]
    Conflict(String),
    /// 412: the request's `If-Match` names a version that is no longer the current one (an
    /// admin's change made from what they read, which someone has changed since).
    #[error("{0}")]
    PreconditionFailed(String),
    /// 413: body over the limit.
    #[error("request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// 429: slow down.
    #[error("too many requests; retry in {retry_after_secs} s")]
    RateLimited {
        /// Seconds until a retry may pass.
        retry_after_secs: u64,
    },
    /// 503: the server is saturated (every database connection busy); retry shortly.
    #[error("the server is busy; retry in {retry_after_secs} s")]
    Unavailable {
        /// Seconds to wait.
        retry_after_secs: u64,
    },
    /// WeChat (or the network to it) failed. Callers see a generic message with WeChat's
    /// errcode and rid; the details go to the log.
    #[error(transparent)]
    WeChat(#[from] weapp::Error),
    /// A domain's typed error with a status and code of its own (a payment order's conflict,
    /// WeChat Pay refusing or failing): a message safe to show, and the upstream request id
    /// (WeChat Pay's `Request-ID`) for support when there is one. 503 carries `Retry-After`.
    #[error("{message}")]
    Coded {
        /// The HTTP status answered.
        status: StatusCode,
        /// Machine-readable code, e.g. `order_conflict`, `upstream_unavailable`.
        code: &'static str,
        /// What happened (never a secret).
        message: String,
        /// The upstream request id (WeChat Pay's `Request-ID`).
        rid: Option<String>,
    },
    /// Anything else: logged in full, answered as a bare 500.
    #[error("internal error: {0}")]
    Internal(String),
}

impl AppError {
    /// A 400 with a code and a message.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        AppError::BadRequest {
            code,
            message: message.into(),
        }
    }
}

impl From<crate::store::StoreError> for AppError {
    fn from(e: crate::store::StoreError) -> Self {
        if e.is_busy() {
            tracing::warn!(error = %e, "database busy: answering 503");
            return AppError::Unavailable {
                retry_after_secs: 1,
            };
        }
        AppError::Internal(e.to_string())
    }
}

/// The body of every error response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// Details of an error response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable code, e.g. `invalid_code`, `unauthorized`.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
    /// WeChat's errcode, when WeChat refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wechat_errcode: Option<i64>,
    /// WeChat's request id, for WeChat support.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rid: Option<String>,
}

/// How a WeChat failure is presented: the caller's fault (400), a rate limit (429), WeChat or
/// our WeChat credentials in trouble (502), or WeChat refusing for now (503).
fn wechat_status(err: &weapp::Error) -> (StatusCode, &'static str) {
    use weapp::Error as E;
    match err {
        E::Api { code, .. } => match code {
            ErrCode::InvalidCode
            | ErrCode::CodeBeenUsed
            | ErrCode::CodeBlocked
            | ErrCode::InvalidAppid => (StatusCode::BAD_REQUEST, "invalid_code"),
            ErrCode::MinuteQuotaExceeded => {
                (StatusCode::TOO_MANY_REQUESTS, "upstream_rate_limited")
            }
            ErrCode::DailyQuotaExceeded => {
                (StatusCode::SERVICE_UNAVAILABLE, "upstream_quota_exhausted")
            }
            ErrCode::SystemError => (StatusCode::SERVICE_UNAVAILABLE, "upstream_unavailable"),
            c if c.is_token_invalid()
                || matches!(
                    c,
                    ErrCode::InvalidAppSecret
                        | ErrCode::IpNotInWhitelist
                        | ErrCode::ClientIpNotRegistered
                ) =>
            {
                (StatusCode::BAD_GATEWAY, "upstream_auth_failed")
            }
            _ => (StatusCode::BAD_GATEWAY, "upstream_error"),
        },
        E::Crypto(_) => (StatusCode::BAD_REQUEST, "decrypt_failed"),
        E::TimedOut { .. } => (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout"),
        E::InvalidArgument(_) => (StatusCode::BAD_REQUEST, "invalid_argument"),
        E::OutcomeUnknown { .. } => (StatusCode::BAD_GATEWAY, "upstream_outcome_unknown"),
        _ => (StatusCode::BAD_GATEWAY, "upstream_unavailable"),
    }
}

/// What a caller is told about a WeChat failure, by its code.
fn generic_upstream_message(code: &str) -> &'static str {
    match code {
        "invalid_code" => {
            "WeChat refused the code: it is invalid, expired, already used, or blocked"
        }
        "upstream_rate_limited" => "WeChat is rate-limiting this app; retry later",
        "upstream_quota_exhausted" => "WeChat's daily quota for this app is exhausted",
        "upstream_auth_failed" => "WeChat refused this app's credentials",
        "upstream_timeout" => "WeChat did not answer in time",
        "upstream_outcome_unknown" => {
            "the call to WeChat failed after it may have taken effect; check before repeating it"
        }
        "invalid_argument" => {
            "the request was refused before it reached WeChat: an argument is invalid"
        }
        "decrypt_failed" => "the data cannot be decrypted",
        "upstream_unavailable" => "WeChat is unavailable",
        _ => "WeChat refused the request",
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, code, wechat_errcode, rid) = match &self {
            AppError::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, *code, None, None),
            AppError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized", None, None),
            AppError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", None, None),
            AppError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found", None, None),
            AppError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                None,
                None,
            ),
            AppError::Conflict(_) => (StatusCode::CONFLICT, "conflict", None, None),
            AppError::PreconditionFailed(_) => (
                StatusCode::PRECONDITION_FAILED,
                "precondition_failed",
                None,
                None,
            ),
            AppError::Unavailable { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable", None, None)
            }
            AppError::PayloadTooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                None,
                None,
            ),
            AppError::RateLimited { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "rate_limited", None, None)
            }
            AppError::WeChat(e) => {
                let (s, c) = wechat_status(e);
                (s, c, e.errcode().map(|c| c.code()), e.rid())
            }
            AppError::Coded {
                status, code, rid, ..
            } => (*status, *code, None, rid.as_deref()),
            AppError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal", None, None),
        };
        let message = match &self {
            AppError::Internal(detail) => {
                tracing::error!(error = %detail, "internal error");
                "internal error".to_owned()
            }
            AppError::WeChat(e) => {
                if status.is_server_error() {
                    tracing::warn!(error = %e, "upstream failure");
                } else {
                    tracing::info!(error = %e, "upstream refused the request");
                }
                // WeChat's errmsg and transport error chains stay in the log: the caller gets
                // what it can act on, plus the errcode and rid for support.
                generic_upstream_message(code).to_owned()
            }
            other => other.to_string(),
        };
        let body = serde_json::to_vec(&ErrorBody {
            error: ErrorDetail {
                code: code.to_owned(),
                message,
                wechat_errcode,
                rid: rid.map(str::to_owned),
            },
        })
        .unwrap_or_default();
        let mut resp = (status, body).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let retry = match &self {
            AppError::RateLimited { retry_after_secs }
            | AppError::Unavailable { retry_after_secs } => Some(*retry_after_secs),
            AppError::WeChat(e) => e.retry_after().map(|d| d.as_secs().max(1)),
            AppError::Coded { status, .. } if *status == StatusCode::SERVICE_UNAVAILABLE => Some(1),
            _ => None,
        };
        if let Some(secs) = retry {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}
