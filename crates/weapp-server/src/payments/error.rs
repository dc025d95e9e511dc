//! The payments domain's errors: building the merchants at start ([`MerchantError`]) and what
//! an order request can meet ([`PaymentsError`]), converted once into the JSON envelope
//! (`From<PaymentsError> for AppError`). Messages name the order or the merchant, never a key.

use axum::http::StatusCode;
use weapp::pay::{PayError, PayErrorCode};

use crate::http::AppError;
use crate::store::StoreError;

/// Why a merchant of the configuration could not be served.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MerchantError {
    /// Its settings or keys do not load.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The SDK refused to build its client.
    #[error("merchant {mchid}: {source}")]
    Client {
        /// The merchant.
        mchid: String,
        /// What the SDK said.
        #[source]
        source: Box<PayError>,
    },
}

/// What an order request can meet.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PaymentsError {
    /// A field of the request is invalid (400 `invalid_order`).
    #[error("{0}")]
    InvalidOrder(String),
    /// No merchant of this service takes orders for the app (404).
    #[error("no merchant takes payments for app {0}")]
    NoMerchant(String),
    /// No such order for this app (404).
    #[error("order {0} does not exist for this app")]
    OrderNotFound(String),
    /// The `out_trade_no` is taken by an order with other values (409 `order_conflict`).
    #[error("order {out_trade_no} exists with another {field}: an out_trade_no names one order")]
    OrderConflict {
        /// The order.
        out_trade_no: String,
        /// The first field that differs.
        field: &'static str,
    },
    /// The order cannot be paid or closed in its state (409 `order_state`).
    #[error("order {out_trade_no} is {state}")]
    OrderState {
        /// The order.
        out_trade_no: String,
        /// Its state.
        state: String,
    },
    /// WeChat Pay's answer to the prepay is unknown even after one retry: the order stays
    /// stored as `PENDING`, and the same request later asks again (503 `prepay_pending`).
    #[error("WeChat Pay's answer is unknown; the order {0} is stored as PENDING: send the same request again")]
    PrepayPending(String),
    /// A field of a refund request is invalid (400 `invalid_refund`).
    #[error("{0}")]
    InvalidRefund(String),
    /// No such refund for this app (404).
    #[error("refund {0} does not exist for this app")]
    RefundNotFound(String),
    /// The `out_refund_no` is taken by a refund with other values (409 `refund_conflict`).
    #[error(
        "refund {out_refund_no} exists with another {field}: an out_refund_no names one refund"
    )]
    RefundConflict {
        /// The refund.
        out_refund_no: String,
        /// The first field that differs.
        field: &'static str,
    },
    /// More than is left of the order (409 `refund_exceeds`): nothing stored.
    #[error("order {out_trade_no} has {left} fen left to refund")]
    RefundExceeds {
        /// The order.
        out_trade_no: String,
        /// Fen not yet promised to a refund.
        left: i64,
    },
    /// WeChat Pay's answer to the refund is unknown: it stays stored as `PENDING` with its
    /// amount reserved, and the same request asks again (503 `refund_pending`).
    #[error("WeChat Pay's answer is unknown; the refund {0} is stored as PENDING: send the same request again")]
    RefundPending(String),
    /// WeChat Pay refused or failed.
    #[error("WeChat Pay: {0}")]
    WeChatPay(#[source] Box<PayError>),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<PaymentsError> for AppError {
    fn from(e: PaymentsError) -> Self {
        match e {
            PaymentsError::InvalidOrder(m) => AppError::bad_request("invalid_order", m),
            PaymentsError::InvalidRefund(m) => AppError::bad_request("invalid_refund", m),
            e @ (PaymentsError::NoMerchant(_)
            | PaymentsError::OrderNotFound(_)
            | PaymentsError::RefundNotFound(_)) => AppError::NotFound(e.to_string()),
            e @ PaymentsError::RefundConflict { .. } => AppError::Coded {
                status: StatusCode::CONFLICT,
                code: "refund_conflict",
                message: e.to_string(),
                rid: None,
            },
            e @ PaymentsError::RefundExceeds { .. } => AppError::Coded {
                status: StatusCode::CONFLICT,
                code: "refund_exceeds",
                message: e.to_string(),
                rid: None,
            },
            e @ PaymentsError::RefundPending(_) => AppError::Coded {
                status: StatusCode::SERVICE_UNAVAILABLE,
                code: "refund_pending",
                message: e.to_string(),
                rid: None,
            },
            e @ PaymentsError::OrderConflict { .. } => AppError::Coded {
                status: StatusCode::CONFLICT,
                code: "order_conflict",
                message: e.to_string(),
                rid: None,
            },
            e @ PaymentsError::OrderState { .. } => AppError::Coded {
                status: StatusCode::CONFLICT,
                code: "order_state",
                message: e.to_string(),
                rid: None,
            },
            e @ PaymentsError::PrepayPending(_) => AppError::Coded {
                status: StatusCode::SERVICE_UNAVAILABLE,
                code: "prepay_pending",
                message: e.to_string(),
                rid: None,
            },
            PaymentsError::WeChatPay(e) => wechat_pay(&e),
            PaymentsError::Store(e) => e.into(),
        }
    }
}

/// WeChat Pay's failure as an answer: a refusal of the order's values is the caller's (400),
/// a conflict with WeChat's state is 409, a rate limit 429, anything else 502 (503 when it
/// may pass). Its text is logged; the caller gets WeChat's code, message and Request-ID.
fn wechat_pay(e: &PayError) -> AppError {
    let rid = e.request_id().map(str::to_owned);
    let (status, code) = match e {
        PayError::Api { code, status, .. } => match code {
            PayErrorCode::ParamError
            | PayErrorCode::InvalidRequest
            | PayErrorCode::OpenidMismatch
                if *status < 500 =>
            {
                (StatusCode::BAD_REQUEST, "wechat_pay_refused")
            }
            PayErrorCode::OutTradeNoUsed | PayErrorCode::OrderClosed => {
                (StatusCode::CONFLICT, "wechat_pay_conflict")
            }
            // Closing an order the user has just paid (WeChat answers ORDERPAID).
            PayErrorCode::Other(c) if c == "ORDERPAID" => (StatusCode::CONFLICT, "order_state"),
            PayErrorCode::FrequencyLimited => {
                (StatusCode::TOO_MANY_REQUESTS, "upstream_rate_limited")
            }
            _ if e.is_retryable() => (StatusCode::SERVICE_UNAVAILABLE, "upstream_unavailable"),
            _ => (StatusCode::BAD_GATEWAY, "upstream_error"),
        },
        _ if e.is_retryable() => (StatusCode::SERVICE_UNAVAILABLE, "upstream_unavailable"),
        _ => (StatusCode::BAD_GATEWAY, "upstream_error"),
    };
    if status.is_server_error() {
        tracing::warn!(error = %e, "WeChat Pay failure");
    } else {
        tracing::info!(error = %e, "WeChat Pay refused the request");
    }
    let message = match e {
        PayError::Api { code, message, .. } => format!("WeChat Pay: {code}: {message}"),
        _ => "WeChat Pay is unavailable".to_owned(),
    };
    if status == StatusCode::TOO_MANY_REQUESTS {
        return AppError::RateLimited {
            retry_after_secs: 1,
        };
    }
    AppError::Coded {
        status,
        code,
        message,
        rid,
    }
}
