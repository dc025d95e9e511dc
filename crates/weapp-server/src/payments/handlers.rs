//! The payment routes: orders for backends holding a client key with `pay:write`, and the
//! notify URL WeChat Pay calls.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use weapp::pay::{Fen, JsapiPrepayRequest, NotificationEvent, NotifyResponse, PayTime};

use super::error::PaymentsError;
use super::inbox;
use super::service::{MerchantRuntime, Payments};
use crate::http::{AppError, ClientIp, ErrorBody, JsonBody};
use crate::shared::now_ms;
use crate::store::{PayNotificationRecord, PayOrderRecord};

/// The scope a client key needs for the payment routes.
const SCOPE: &str = "pay:write";

/// `POST /v1/apps/{appid}/pay/orders`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrder {
    /// The order number: 6–32 characters of `0-9 A-Z a-z _ - | *`, unique per merchant.
    #[schema(min_length = 6, max_length = 32, pattern = r"^[0-9A-Za-z_\-|*]+$")]
    pub out_trade_no: String,
    /// What the user sees (1–127 characters).
    #[schema(
        min_length = 1,
        max_length = 127,
        pattern = r"^[^\u0000-\u001f\u007f`]+$"
    )]
    pub description: String,
    /// The total in fen (分): a positive integer, never a decimal of yuan.
    #[schema(minimum = 1)]
    pub amount: i64,
    /// The payer's openid in this app.
    #[schema(min_length = 1, max_length = 128)]
    pub openid: String,
    /// Echoed in the notification and queries (≤ 128 characters).
    #[serde(default)]
    #[schema(max_length = 128, pattern = r"^[^\u0000-\u001f\u007f`]*$")]
    pub attach: Option<String>,
    /// When the order stops being payable (RFC 3339, e.g. `2026-01-01T12:00:00+08:00`).
    #[serde(default)]
    pub time_expire: Option<String>,
}

/// The five `wx.requestPayment` parameters, and the appId they were signed for.
#[derive(Debug, Serialize, ToSchema)]
pub struct RequestPaymentOut {
    /// The app.
    #[serde(rename = "appId")]
    pub app_id: String,
    /// Unix seconds as a string.
    #[serde(rename = "timeStamp")]
    pub time_stamp: String,
    /// A random string.
    #[serde(rename = "nonceStr")]
    pub nonce_str: String,
    /// `prepay_id=…`.
    pub package: String,
    /// `RSA`.
    #[serde(rename = "signType")]
    pub sign_type: String,
    /// The merchant's signature.
    #[serde(rename = "paySign")]
    pub pay_sign: String,
}

/// An order placed: hand `request_payment` to `wx.requestPayment`.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderCreated {
    /// The order.
    pub out_trade_no: String,
    /// WeChat's prepay id (valid two hours).
    pub prepay_id: String,
    /// What the mini program passes to `wx.requestPayment`.
    pub request_payment: RequestPaymentOut,
}

/// An order as stored.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderOut {
    /// The order.
    pub out_trade_no: String,
    /// The app.
    pub appid: String,
    /// The merchant.
    pub mchid: String,
    /// What the user sees.
    pub description: String,
    /// The total in fen.
    pub amount: i64,
    /// `PENDING` (stored; WeChat's prepay not confirmed yet), `NOTPAY`, `SUCCESS`, `CLOSED`.
    pub state: String,
    /// WeChat's prepay id, once known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prepay_id: Option<String>,
    /// WeChat's transaction id, once paid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
    /// When it was paid (WeChat's `success_time`, RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub success_time: Option<String>,
    /// Unix seconds when this service learnt of the payment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paid_at: Option<i64>,
    /// Fen refunded so far.
    pub refunded: i64,
    /// Unix seconds.
    pub created_at: i64,
}

impl From<PayOrderRecord> for OrderOut {
    fn from(o: PayOrderRecord) -> Self {
        OrderOut {
            out_trade_no: o.out_trade_no,
            appid: o.appid,
            mchid: o.mchid,
            description: o.description,
            amount: o.amount,
            state: o.state,
            prepay_id: o.prepay_id,
            transaction_id: o.transaction_id,
            success_time: o.success_time,
            paid_at: o.paid_at.map(|t| t / 1000),
            refunded: o.refunded,
            created_at: o.created_at / 1000,
        }
    }
}

/// The merchant taking `appid`'s orders.
fn merchant_of(
    p: &Payments,
    appid: &str,
) -> Result<std::sync::Arc<MerchantRuntime>, PaymentsError> {
    p.merchant_for_app(appid)
        .ok_or_else(|| PaymentsError::NoMerchant(appid.to_owned()))
}

/// Checks the request's fields; returns `time_expire` normalized.
fn check_order(o: &CreateOrder) -> Result<Option<String>, PaymentsError> {
    let bad = |m: &str| Err(PaymentsError::InvalidOrder(m.to_owned()));
    let no = &o.out_trade_no;
    if !(6..=32).contains(&no.len())
        || !no
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '|' | '*'))
    {
        return bad("out_trade_no must be 6–32 characters of 0-9 A-Z a-z _ - | *");
    }
    // WeChat's trade bill writes the description and attach verbatim in an unquoted CSV whose
    // values start with a back-tick: a line break or a back-tick there breaks its parsing.
    let unbillable = |c: char| c.is_control() || c == '`';
    let chars = o.description.chars().count();
    if chars == 0 || chars > 127 || o.description.chars().any(unbillable) {
        return bad("description must be 1–127 characters, without control characters or `");
    }
    if o.amount <= 0 || Fen::try_new(o.amount).is_none() {
        return bad("amount must be a positive integer number of fen");
    }
    if o.openid.is_empty()
        || o.openid.len() > 128
        || !o.openid.chars().all(|c| c.is_ascii_graphic())
    {
        return bad("openid must be 1–128 printable ASCII characters");
    }
    if o.attach
        .as_ref()
        .is_some_and(|a| a.chars().count() > 128 || a.chars().any(unbillable))
    {
        return bad("attach must be at most 128 characters, without control characters or `");
    }
    match &o.time_expire {
        None => Ok(None),
        Some(t) => match t.parse::<PayTime>() {
            Ok(t) => Ok(Some(t.to_string())),
            Err(_) => bad("time_expire must be an RFC 3339 time, e.g. 2026-01-01T12:00:00+08:00"),
        },
    }
}

/// The first field in which a stored order of the same app differs from a request for the same
/// number (another app's order is answered without naming a field).
fn differs(stored: &PayOrderRecord, wanted: &PayOrderRecord) -> Option<&'static str> {
    [
        ("description", stored.description == wanted.description),
        ("amount", stored.amount == wanted.amount),
        ("openid", stored.openid == wanted.openid),
        ("attach", stored.attach == wanted.attach),
        ("time_expire", stored.time_expire == wanted.time_expire),
    ]
    .into_iter()
    .find(|(_, same)| !same)
    .map(|(f, _)| f)
}

/// The answer to an order with a prepay id: fresh `wx.requestPayment` parameters.
fn created(
    m: &MerchantRuntime,
    o: &PayOrderRecord,
    prepay_id: &str,
) -> Result<Json<OrderCreated>, PaymentsError> {
    let rp = m
        .client
        .request_payment(&o.appid, prepay_id)
        .map_err(|e| PaymentsError::WeChatPay(Box::new(e)))?;
    Ok(Json(OrderCreated {
        out_trade_no: o.out_trade_no.clone(),
        prepay_id: prepay_id.to_owned(),
        request_payment: RequestPaymentOut {
            app_id: o.appid.clone(),
            time_stamp: rp.time_stamp,
            nonce_str: rp.nonce_str,
            package: rp.package,
            sign_type: rp.sign_type,
            pay_sign: rp.pay_sign,
        },
    }))
}

/// Place an order: stored first (`PENDING`), then WeChat Pay's prepay (JSAPI), then the
/// `wx.requestPayment` parameters. The same request again answers the same prepay (no second
/// prepay once one is stored); the same `out_trade_no` with other values is 409. When WeChat's
/// answer is unknown even after one retry, 503 `prepay_pending`: the order stays stored and
/// the same request asks again (WeChat answers the same prepay_id for the same parameters).
#[utoipa::path(post, path = "/v1/apps/{appid}/pay/orders", tag = "payments", security(("client_key" = [])),
    params(("appid" = String, Path)),
    request_body = CreateOrder,
    responses((status = 200, body = OrderCreated), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, description = "the client lacks `pay:write` or this app", body = ErrorBody),
        (status = 404, description = "no merchant takes this app's orders", body = ErrorBody), (status = 409, description = "the out_trade_no names another order, or one no longer payable", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 429, body = ErrorBody), (status = 502, body = ErrorBody), (status = 503, description = "WeChat Pay's answer is unknown or it is unavailable: retry the same request", body = ErrorBody)))]
pub async fn create_order(
    State(p): State<Payments>,
    Path(appid): Path<String>,
    ip: ClientIp,
    headers: HeaderMap,
    body: Result<JsonBody<CreateOrder>, AppError>,
) -> Result<Json<OrderCreated>, AppError> {
    let client = authorize(&p, &headers, ip, &appid).await?;
    let JsonBody(req) = body?;
    place_order(&p, &appid, req, &client.name).await
}

/// Places an order for `appid` on behalf of `placed_by` (a client's name, or the sandbox's
/// demo shop): what [`create_order`] does once the caller is authorized.
pub(crate) async fn place_order(
    p: &Payments,
    appid: &str,
    req: CreateOrder,
    placed_by: &str,
) -> Result<Json<OrderCreated>, AppError> {
    let appid = appid.to_owned();
    let m = merchant_of(p, &appid)?;
    let time_expire = check_order(&req)?;
    let now = p.now();
    let wanted = PayOrderRecord {
        mchid: m.mchid.clone(),
        out_trade_no: req.out_trade_no,
        appid: appid.clone(),
        description: req.description,
        amount: req.amount,
        openid: req.openid,
        attach: req.attach,
        time_expire,
        state: "PENDING".into(),
        prepay_id: None,
        transaction_id: None,
        success_time: None,
        paid_at: None,
        refunded: 0,
        created_at: now,
        updated_at: now,
        prepay_at: None,
        next_query_at: Some(now + super::refunds::query_after_ms(p)),
        refund_reserved: 0,
        paid_from: None,
    };
    let (stored, new) = p
        .store
        .insert_pay_order(&wanted)
        .await
        .map_err(PaymentsError::from)?;
    if !new {
        if stored.appid != wanted.appid {
            // Another app's order: which field differs is none of this app's business.
            return Err(PaymentsError::OrderTaken(stored.out_trade_no).into());
        }
        if let Some(field) = differs(&stored, &wanted) {
            return Err(PaymentsError::OrderConflict {
                out_trade_no: stored.out_trade_no,
                field,
            }
            .into());
        }
        if !matches!(stored.state.as_str(), "PENDING" | "NOTPAY") {
            return Err(PaymentsError::OrderState {
                out_trade_no: stored.out_trade_no,
                state: stored.state,
            }
            .into());
        }
        // A prepay is valid two hours at WeChat: an older one is not handed out again, WeChat
        // is asked for a fresh one (it answers a new id for the same order).
        if let Some(prepay_id) = stored
            .prepay_id
            .as_ref()
            .filter(|_| stored.prepay_at.unwrap_or(0) >= renew_before(p.now()))
        {
            return Ok(created(&m, &stored, prepay_id)?);
        }
    }
    let mut prepay_req = JsapiPrepayRequest::new(
        &appid,
        &stored.description,
        &stored.out_trade_no,
        &m.notify_url,
        Fen::new(stored.amount.unsigned_abs()),
        &stored.openid,
    );
    if let Some(a) = &stored.attach {
        prepay_req = prepay_req.attach(a);
    }
    if let Some(t) = stored
        .time_expire
        .as_ref()
        .and_then(|t| t.parse::<PayTime>().ok())
    {
        prepay_req = prepay_req.time_expire(t);
    }
    let mut retried = false;
    let prepay = loop {
        match m.client.jsapi_prepay(&prepay_req).await {
            Ok(prepay) => break prepay,
            // WeChat answers the same prepay_id to the same parameters: asking again is safe.
            Err(e) if e.is_outcome_unknown() && !retried => {
                tracing::warn!(mchid = %m.mchid, out_trade_no = %stored.out_trade_no, error = %e, "prepay outcome unknown: asking again");
                retried = true;
            }
            Err(e) if e.is_outcome_unknown() => {
                tracing::warn!(mchid = %m.mchid, out_trade_no = %stored.out_trade_no, error = %e, "prepay outcome still unknown: the order stays pending");
                return Err(PaymentsError::PrepayPending(stored.out_trade_no).into());
            }
            Err(e) => {
                // A definite refusal: WeChat did not take the out_trade_no, so neither does
                // this service (a corrected request may use it). Not when WeChat says the
                // number is someone's already (OUT_TRADE_NO_USED, ORDER_CLOSED).
                let taken = matches!(
                    e.code(),
                    Some(
                        weapp::pay::PayErrorCode::OutTradeNoUsed
                            | weapp::pay::PayErrorCode::OrderClosed
                    )
                );
                if !taken && matches!(e, weapp::pay::PayError::Api { status, .. } if status < 500) {
                    if let Err(db) = p
                        .store
                        .forget_refused_pay_order(&m.mchid, &stored.out_trade_no)
                        .await
                    {
                        tracing::warn!(mchid = %m.mchid, out_trade_no = %stored.out_trade_no, error = %db, "a refused order could not be forgotten");
                    }
                }
                return Err(PaymentsError::WeChatPay(Box::new(e)).into());
            }
        }
    };
    let order = p
        .store
        .set_pay_prepay(
            &m.mchid,
            &stored.out_trade_no,
            &prepay.prepay_id,
            p.now(),
            renew_before(p.now()),
        )
        .await
        .map_err(PaymentsError::from)?
        .ok_or_else(|| PaymentsError::OrderNotFound(stored.out_trade_no.clone()))?;
    if order.state == "CLOSED" {
        // Closed here while WeChat was being asked: the prepay WeChat just made must not be
        // handed out, and is closed there too.
        if let Err(e) = m.client.close(&order.out_trade_no).await {
            tracing::warn!(mchid = %m.mchid, out_trade_no = %order.out_trade_no, error = %e, "closing a prepay made after its order was closed failed");
        }
        return Err(PaymentsError::OrderState {
            out_trade_no: order.out_trade_no,
            state: order.state,
        }
        .into());
    }
    let prepay_id = order.prepay_id.clone().unwrap_or(prepay.prepay_id);
    tracing::info!(client = %placed_by, appid, mchid = %m.mchid, out_trade_no = %order.out_trade_no, "order placed");
    Ok(created(&m, &order, &prepay_id)?)
}

/// How long a stored prepay is handed out: WeChat's two hours, less a minute for the
/// difference between its clock and this one.
const PREPAY_VALID_MS: i64 = 2 * 3600 * 1000 - 60_000;

/// Prepays made before this (at `now`) are renewed.
fn renew_before(now: i64) -> i64 {
    now - PREPAY_VALID_MS
}

/// Authorizes a payment route: the client key, its app and `pay:write`, then the client's
/// rate limit (`pay_rate_limit_per_minute`, 429 with the envelope).
pub(crate) async fn authorize(
    p: &Payments,
    headers: &HeaderMap,
    ip: ClientIp,
    appid: &str,
) -> Result<std::sync::Arc<crate::broker::BrokerClient>, AppError> {
    let (_, client) =
        crate::broker::handlers::authorize(&p.broker, headers, ip, appid, SCOPE).await?;
    let digest = <sha2::Sha256 as sha2::Digest>::digest(client.name.as_bytes());
    let key = u128::from_be_bytes(digest[..16].try_into().expect("16 bytes"));
    if let Err(retry_after_secs) = p.pay_limiter.hit(key).await {
        tracing::debug!(client = %client.name, appid, "payment route limited");
        return Err(AppError::RateLimited { retry_after_secs });
    }
    Ok(client)
}

/// The stored order of this app.
async fn order_of(
    p: &Payments,
    appid: &str,
    no: &str,
) -> Result<(std::sync::Arc<MerchantRuntime>, PayOrderRecord), PaymentsError> {
    let m = merchant_of(p, appid)?;
    match p.store.pay_order(&m.mchid, no).await? {
        Some(o) if o.appid == appid => Ok((m, o)),
        _ => Err(PaymentsError::OrderNotFound(no.to_owned())),
    }
}

/// An order: its state, amount, transaction id, when it was paid, what was refunded.
#[utoipa::path(get, path = "/v1/apps/{appid}/pay/orders/{out_trade_no}", tag = "payments", security(("client_key" = [])),
    params(("appid" = String, Path), ("out_trade_no" = String, Path)),
    responses((status = 200, body = OrderOut), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn get_order(
    State(p): State<Payments>,
    Path((appid, no)): Path<(String, String)>,
    ip: ClientIp,
    headers: HeaderMap,
) -> Result<Json<OrderOut>, AppError> {
    authorize(&p, &headers, ip, &appid).await?;
    let (_, order) = order_of(&p, &appid, &no).await?;
    Ok(Json(order.into()))
}

/// Close an unpaid order at WeChat Pay, then here (`CLOSED`). Closing a closed order answers
/// it again; a paid one is 409.
#[utoipa::path(post, path = "/v1/apps/{appid}/pay/orders/{out_trade_no}/close", tag = "payments", security(("client_key" = [])),
    params(("appid" = String, Path), ("out_trade_no" = String, Path)),
    responses((status = 200, body = OrderOut), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, description = "the order is paid", body = ErrorBody), (status = 429, body = ErrorBody), (status = 502, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn close_order(
    State(p): State<Payments>,
    Path((appid, no)): Path<(String, String)>,
    ip: ClientIp,
    headers: HeaderMap,
) -> Result<Json<OrderOut>, AppError> {
    let client = authorize(&p, &headers, ip, &appid).await?;
    let (m, order) = order_of(&p, &appid, &no).await?;
    match order.state.as_str() {
        "CLOSED" => return Ok(Json(order.into())),
        "PENDING" | "NOTPAY" => {}
        _ => {
            return Err(PaymentsError::OrderState {
                out_trade_no: order.out_trade_no,
                state: order.state,
            }
            .into())
        }
    }
    m.client
        .close(&no)
        .await
        .map_err(|e| PaymentsError::WeChatPay(Box::new(e)))?;
    p.store
        .close_pay_order(&m.mchid, &no, p.now())
        .await
        .map_err(PaymentsError::from)?;
    tracing::info!(client = %client.name, appid, mchid = %m.mchid, out_trade_no = %no, "order closed");
    let (_, order) = order_of(&p, &appid, &no).await?;
    Ok(Json(order.into()))
}

/// WeChat Pay's notification (支付结果通知): verified over the raw bytes (never a parsed and
/// re-serialized body), its timestamp within 5 minutes, decrypted, written to the inbox
/// (envelope and resource) and only then answered 204; then applied once. Forged, probing,
/// stale or foreign notifications are answered 401 `{"code":"FAIL",…}` and stored nowhere.
/// A notification that cannot be stored is answered 500, so WeChat retries it.
#[utoipa::path(post, path = "/v1/pay/{mchid}/notify", tag = "payments",
    params(("mchid" = String, Path)),
    request_body(content = String, description = "WeChat Pay's signed envelope, its resource encrypted (AEAD_AES_256_GCM)", content_type = "application/json"),
    responses((status = 204, description = "stored (or a copy of one stored)"), (status = 400, description = "`{\"code\":\"FAIL\"}`: verified but malformed"),
        (status = 401, description = "`{\"code\":\"FAIL\"}`: not authentic (signature, probe, stale, another merchant's)"), (status = 404, description = "`{\"code\":\"FAIL\"}`: no such merchant here"),
        (status = 500, description = "`{\"code\":\"FAIL\"}`: not stored; WeChat retries")))]
pub async fn notify(
    State(p): State<Payments>,
    Path(mchid): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(m) = p.merchant(&mchid) else {
        p.metrics.pay_notification("unknown", "unknown_merchant");
        return NotifyResponse::failure(404, "unknown merchant").into_response();
    };
    let n = match m.client.receive_notification(&headers, &body).await {
        Ok(n) => n,
        Err(e) => {
            let outcome = if e.is_authentication() {
                "refused"
            } else {
                "malformed"
            };
            p.metrics.pay_notification(&mchid, outcome);
            tracing::info!(mchid, error = %e, "payment notification refused");
            return NotifyResponse::for_error(&e).into_response();
        }
    };
    // Authentic, but whose? Merchants that share a verifying key and an APIv3 key (a service
    // provider's) could be sent each other's notifications: one naming another merchant, or an
    // app this merchant does not serve (and has no stored order of), is refused and stored
    // nowhere.
    let foreign = match &n.event {
        NotificationEvent::Transaction(t) if t.mchid == mchid && !m.appids.contains(&t.appid) => {
            // An app moved to another merchant since: its orders placed with this one are
            // still this merchant's (the stored order says so).
            match p.store.pay_order(&mchid, &t.out_trade_no).await {
                Ok(o) => o.is_none_or(|o| o.appid != t.appid),
                Err(e) => {
                    p.metrics.pay_notification(&mchid, "store_failed");
                    tracing::warn!(mchid, notification = %n.id, error = %e, "payment notification: the order could not be read; WeChat will retry");
                    return NotifyResponse::failure(500, "not stored; retry").into_response();
                }
            }
        }
        NotificationEvent::Transaction(t) => t.mchid != mchid,
        NotificationEvent::Refund(r) => r.mchid != mchid,
        _ => false,
    };
    if foreign {
        p.metrics.pay_notification(&mchid, "refused");
        tracing::warn!(mchid, notification = %n.id, "a notification for another merchant or app refused");
        return NotifyResponse::failure(401, "not this merchant's notification").into_response();
    }
    let business_no = match &n.event {
        NotificationEvent::Transaction(t) => Some(t.out_trade_no.clone()),
        NotificationEvent::Refund(r) => Some(r.out_refund_no.clone()),
        _ => None,
    };
    let record = PayNotificationRecord {
        mchid: mchid.clone(),
        notification_id: n.id.clone(),
        event_type: n.event_type.clone(),
        business_no,
        serial: n.serial.clone(),
        envelope: String::from_utf8_lossy(&body).into_owned(),
        resource: n.plaintext.clone(),
        received_at: now_ms(),
    };
    // In a task of its own: WeChat hanging up cannot stop it between storing and applying.
    let task = tokio::spawn(intake(p.clone(), record));
    match task.await {
        Ok(Ok(label)) => {
            p.metrics.pay_notification(&mchid, label);
            NotifyResponse::success().into_response()
        }
        Ok(Err(e)) => {
            p.metrics.pay_notification(&mchid, "store_failed");
            tracing::warn!(mchid, notification = %n.id, error = %e, "payment notification not stored or not applied: WeChat will retry");
            NotifyResponse::failure(500, "not stored; retry").into_response()
        }
        Err(e) => {
            tracing::error!(mchid, error = %e, "payment notification task failed");
            NotifyResponse::failure(500, "not stored; retry").into_response()
        }
    }
}

/// Stores a notification in the inbox and applies it unless a copy was applied already.
/// Returns the metric label.
async fn intake(
    p: Payments,
    record: PayNotificationRecord,
) -> Result<&'static str, crate::store::StoreError> {
    let (id, outcome, _new) = p.store.insert_pay_notification(&record).await?;
    if outcome.is_some_and(|o| o != "deferred") {
        return Ok("duplicate");
    }
    let applied = inbox::apply(&p, id, &record).await?;
    Ok(applied.as_str())
}

/// Routes of this domain.
pub fn router() -> Router<Payments> {
    Router::new()
        .route("/v1/apps/{appid}/pay/orders", post(create_order))
        .route("/v1/apps/{appid}/pay/orders/{out_trade_no}", get(get_order))
        .route(
            "/v1/apps/{appid}/pay/orders/{out_trade_no}/close",
            post(close_order),
        )
        .route("/v1/pay/{mchid}/notify", post(notify))
}
