//! The refund routes, for backends holding a client key with `pay:write`:
//! `POST /v1/apps/{appid}/pay/refunds` and `GET /v1/apps/{appid}/pay/refunds/{out_refund_no}`.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::PaymentsError;
use super::handlers::authorize;
use super::refunds::{self, RefundAsk};
use super::service::Payments;
use crate::http::{AppError, ClientIp, ErrorBody, JsonBody};
use crate::store::PayRefundRecord;

/// `POST /v1/apps/{appid}/pay/refunds`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRefund {
    /// The order to refund (paid through this service).
    pub out_trade_no: String,
    /// The refund's number: 1–64 characters of `0-9 A-Z a-z _ - | * @`, unique per merchant.
    /// The same request again answers the same refund.
    pub out_refund_no: String,
    /// Fen to refund: positive, at most what is left of the order.
    pub amount: i64,
    /// Shown to the user (≤ 80 characters).
    #[serde(default)]
    pub reason: Option<String>,
}

/// A refund asked.
#[derive(Debug, Serialize, ToSchema)]
pub struct RefundCreated {
    /// The refund.
    pub out_refund_no: String,
    /// `PROCESSING` (WeChat took it; its outcome comes as a `REFUND.*` event), or `SUCCESS`,
    /// `CLOSED`, `ABNORMAL` once known.
    pub status: String,
}

/// A refund as stored.
#[derive(Debug, Serialize, ToSchema)]
pub struct RefundOut {
    /// The refund.
    pub out_refund_no: String,
    /// The order refunded.
    pub out_trade_no: String,
    /// Fen.
    pub amount: i64,
    /// `PENDING` (WeChat's answer not known yet: send the same request again),
    /// `PROCESSING`, `SUCCESS`, `CLOSED`, `ABNORMAL`.
    pub status: String,
    /// WeChat's refund id, once known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refund_id: Option<String>,
    /// When it succeeded (WeChat's `success_time`, RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub success_time: Option<String>,
    /// Shown to the user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
}

impl From<PayRefundRecord> for RefundOut {
    fn from(r: PayRefundRecord) -> Self {
        RefundOut {
            out_refund_no: r.out_refund_no,
            out_trade_no: r.out_trade_no,
            amount: r.amount,
            status: r.status,
            refund_id: r.refund_id,
            success_time: r.success_time,
            reason: r.reason,
            created_at: r.created_at / 1000,
        }
    }
}

/// Checks a refund request's fields.
fn check(r: &CreateRefund) -> Result<(), PaymentsError> {
    let bad = |m: &str| Err(PaymentsError::InvalidRefund(m.to_owned()));
    let no = &r.out_refund_no;
    if no.is_empty()
        || no.len() > 64
        || !no
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '|' | '*' | '@'))
    {
        return bad("out_refund_no must be 1–64 characters of 0-9 A-Z a-z _ - | * @");
    }
    if r.out_trade_no.is_empty() || r.out_trade_no.len() > 32 {
        return bad("out_trade_no must be 1–32 characters");
    }
    if r.amount <= 0 || weapp::pay::Fen::try_new(r.amount).is_none() {
        return bad("amount must be a positive integer number of fen");
    }
    if r.reason
        .as_ref()
        .is_some_and(|s| s.chars().count() > 80 || s.chars().any(char::is_control))
    {
        return bad("reason must be at most 80 characters, without control characters");
    }
    Ok(())
}

/// Refund (part of) a paid order. Stored first (`PENDING`, its amount reserved on the order:
/// refunds racing on any number of instances never exceed what was paid), then asked of
/// WeChat Pay; the outcome comes as a `REFUND.SUCCESS`/`REFUND.ABNORMAL`/`REFUND.CLOSED` event.
/// An order not paid here yet is asked about at WeChat first. The same request again answers
/// the same refund; the same `out_refund_no` with other values is 409 `refund_conflict`; more
/// than is left is 409 `refund_exceeds` (nothing stored). When WeChat's answer is unknown,
/// 503 `refund_pending`: it stays stored and reserved, and the same request asks again.
#[utoipa::path(post, path = "/v1/apps/{appid}/pay/refunds", tag = "payments", security(("client_key" = [])),
    params(("appid" = String, Path)),
    request_body = CreateRefund,
    responses((status = 200, body = RefundCreated), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, description = "the client lacks `pay:write` or this app", body = ErrorBody),
        (status = 404, description = "no such order for this app", body = ErrorBody), (status = 409, description = "the out_refund_no names another refund, the order is not paid, or more than is left", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 429, body = ErrorBody), (status = 502, body = ErrorBody), (status = 503, description = "WeChat Pay's answer is unknown or it is unavailable: retry the same request", body = ErrorBody)))]
pub async fn create_refund(
    State(p): State<Payments>,
    Path(appid): Path<String>,
    ip: ClientIp,
    headers: HeaderMap,
    body: Result<JsonBody<CreateRefund>, AppError>,
) -> Result<Json<RefundCreated>, AppError> {
    let client = authorize(&p, &headers, ip, &appid).await?;
    let JsonBody(req) = body?;
    check(&req)?;
    let m = p
        .merchant_for_app(&appid)
        .ok_or_else(|| PaymentsError::NoMerchant(appid.clone()))?;
    let ask = RefundAsk {
        out_trade_no: req.out_trade_no,
        out_refund_no: req.out_refund_no,
        amount: req.amount,
        reason: req.reason,
    };
    let r = refunds::create(&p, &m, &appid, &ask).await?;
    tracing::info!(client = %client.name, appid, mchid = %m.mchid, out_refund_no = %r.out_refund_no, status = %r.status, "refund asked");
    Ok(Json(RefundCreated {
        out_refund_no: r.out_refund_no,
        status: r.status,
    }))
}

/// A refund: its status, amount, WeChat's refund id, when it succeeded, its order.
#[utoipa::path(get, path = "/v1/apps/{appid}/pay/refunds/{out_refund_no}", tag = "payments", security(("client_key" = [])),
    params(("appid" = String, Path), ("out_refund_no" = String, Path)),
    responses((status = 200, body = RefundOut), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn get_refund(
    State(p): State<Payments>,
    Path((appid, no)): Path<(String, String)>,
    ip: ClientIp,
    headers: HeaderMap,
) -> Result<Json<RefundOut>, AppError> {
    authorize(&p, &headers, ip, &appid).await?;
    let m = p
        .merchant_for_app(&appid)
        .ok_or_else(|| PaymentsError::NoMerchant(appid.clone()))?;
    match p
        .store
        .pay_refund(&m.mchid, &no)
        .await
        .map_err(PaymentsError::from)?
    {
        Some(r) if r.appid == appid => Ok(Json(r.into())),
        _ => Err(PaymentsError::RefundNotFound(no).into()),
    }
}

/// The refund routes.
pub fn router() -> Router<Payments> {
    Router::new()
        .route("/v1/apps/{appid}/pay/refunds", post(create_refund))
        .route(
            "/v1/apps/{appid}/pay/refunds/{out_refund_no}",
            get(get_refund),
        )
}
