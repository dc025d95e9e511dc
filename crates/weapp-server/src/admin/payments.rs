//! The payments' admin views: orders, refunds and the notification inbox, filtered and paged
//! newest first, and the notifications refused at the door (counted, stored nowhere). Read-only;
//! no answer carries a merchant's key (the tables hold none) or a notification's envelope. The
//! decrypted resource of a notification (the payer's openid, the amounts) is shown one at a
//! time, audited first (`pay.notification.read`); a page of orders (payers' openids) is audited
//! too (`pay.orders.read`).

use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;

use super::auth::Admin;
use super::common::{audited_read, is_appid, limit_of};
use super::service::AdminApi;
use crate::http::{AppError, ErrorBody};
use crate::store::{
    PayCursor, PayNotificationFilter, PayNotificationView, PayOrderFilter, PayOrderRecord,
    PayRefundFilter, PayRefundView, PENDING_OUTCOME,
};

/// The notification outcomes the server counts without storing the notification: not
/// authentic (`refused`: signature, probe, stale, another merchant's), `malformed`,
/// `unknown_merchant`, and `store_failed` (answered 500: WeChat retries it).
pub const REFUSED_OUTCOMES: [&str; 4] =
    ["refused", "malformed", "unknown_merchant", "store_failed"];

fn bad_query(message: impl Into<String>) -> AppError {
    AppError::bad_request("invalid_query", message)
}

/// An optional filter: absent or empty is no filter; else it must pass `ok`.
fn filter(
    value: Option<String>,
    name: &str,
    ok: impl Fn(&str) -> bool,
) -> Result<Option<String>, AppError> {
    match value {
        None => Ok(None),
        Some(v) if v.is_empty() => Ok(None),
        Some(v) if ok(&v) => Ok(Some(v)),
        Some(_) => Err(bad_query(format!("{name} is not valid"))),
    }
}

fn is_mchid(s: &str) -> bool {
    !s.is_empty() && s.len() <= 32 && s.chars().all(|c| c.is_ascii_digit())
}

/// A merchant's number (`out_trade_no`, `out_refund_no`): WeChat's characters.
fn is_number(s: &str) -> bool {
    s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '|' | '*' | '@'))
}

/// A state or status as WeChat spells them (`SUCCESS`, `NOTPAY`, …).
fn is_upper_word(s: &str) -> bool {
    s.len() <= 32 && s.chars().all(|c| c.is_ascii_uppercase() || c == '_')
}

/// An inbox outcome (`applied`, `mismatch`, …, or `pending`).
fn is_lower_word(s: &str) -> bool {
    s.len() <= 32 && s.chars().all(|c| c.is_ascii_lowercase() || c == '_')
}

/// `created_at.mchid.number` of the last row shown (opaque to callers).
fn cursor_of(created_at: i64, mchid: &str, no: &str) -> String {
    format!("{created_at}.{mchid}.{no}")
}

fn parse_cursor(after: Option<&str>) -> Result<Option<PayCursor>, AppError> {
    let Some(a) = after.filter(|a| !a.is_empty()) else {
        return Ok(None);
    };
    let bad = || bad_query("after must be a next_after this API answered");
    let mut parts = a.splitn(3, '.');
    let created_at = parts
        .next()
        .and_then(|p| p.parse::<i64>().ok())
        .ok_or_else(bad)?;
    let mchid = parts.next().filter(|m| is_mchid(m)).ok_or_else(bad)?;
    let no = parts.next().filter(|n| is_number(n)).ok_or_else(bad)?;
    Ok(Some(PayCursor {
        created_at,
        mchid: mchid.to_owned(),
        no: no.to_owned(),
    }))
}

// ---------------------------------------------------------------------------------- orders

/// `?mchid=&appid=&state=&limit=&after=`.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct OrderQuery {
    /// Only this merchant's orders.
    #[serde(default)]
    pub mchid: Option<String>,
    /// Only this app's orders.
    #[serde(default)]
    pub appid: Option<String>,
    /// Only orders in this state (`PENDING`, `NOTPAY`, `SUCCESS`, `CLOSED`, `REFUND`, …).
    #[serde(default)]
    pub state: Option<String>,
    /// Page size, 1–100 (default 50).
    #[serde(default)]
    pub limit: Option<u32>,
    /// The `next_after` of the previous page.
    #[serde(default)]
    pub after: Option<String>,
}

/// An order as administrators see it.
#[derive(Serialize, ToSchema)]
pub struct AdminOrderView {
    /// The merchant.
    pub mchid: String,
    /// The merchant's order number.
    pub out_trade_no: String,
    /// The app the order was placed for.
    pub appid: String,
    /// What the payer sees.
    pub description: String,
    /// The total in fen.
    pub amount: i64,
    /// The payer.
    pub openid: String,
    /// Echoed by WeChat.
    pub attach: Option<String>,
    /// When the order stops being payable (RFC 3339).
    pub time_expire: Option<String>,
    /// `PENDING` (stored, WeChat not answered yet), `NOTPAY`, `SUCCESS`, `CLOSED`, …
    pub state: String,
    /// WeChat's transaction id, once paid.
    pub transaction_id: Option<String>,
    /// WeChat's `success_time`, once paid.
    pub success_time: Option<String>,
    /// Unix ms when this service learnt of the payment.
    pub paid_at: Option<i64>,
    /// Fen refunded so far.
    pub refunded: i64,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
}

impl From<PayOrderRecord> for AdminOrderView {
    fn from(o: PayOrderRecord) -> Self {
        AdminOrderView {
            mchid: o.mchid,
            out_trade_no: o.out_trade_no,
            appid: o.appid,
            description: o.description,
            amount: o.amount,
            openid: o.openid,
            attach: o.attach,
            time_expire: o.time_expire,
            state: o.state,
            transaction_id: o.transaction_id,
            success_time: o.success_time,
            paid_at: o.paid_at,
            refunded: o.refunded,
            created_at: o.created_at,
            updated_at: o.updated_at,
        }
    }
}

/// A page of orders.
#[derive(Serialize, ToSchema)]
pub struct OrderPage {
    /// Newest first.
    pub orders: Vec<AdminOrderView>,
    /// Pass as `after` for the next page; null on the last page.
    pub next_after: Option<String>,
}

/// The orders placed through the service, newest first. A page that shows orders (payers'
/// openids) is audited first (`pay.orders.read`: the filters and how many, never the orders).
#[utoipa::path(get, path = "/v1/admin/pay/orders", tag = "admin", security(("admin_key" = [])), params(OrderQuery),
    responses((status = 200, body = OrderPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn list_orders(
    State(state): State<AdminApi>,
    admin: Admin,
    Query(q): Query<OrderQuery>,
) -> Result<Json<OrderPage>, AppError> {
    let limit = limit_of(q.limit)?;
    let f = PayOrderFilter {
        mchid: filter(q.mchid, "mchid", is_mchid)?,
        appid: filter(q.appid, "appid", is_appid)?,
        state: filter(q.state, "state", is_upper_word)?,
    };
    let after = parse_cursor(q.after.as_deref())?;
    let mut rows = state
        .store
        .pay_orders_page(&f, after.as_ref(), limit as i64 + 1)
        .await?;
    let more = rows.len() > limit;
    rows.truncate(limit);
    if !rows.is_empty() {
        audited_read(
            &state,
            &admin,
            "pay.orders.read",
            f.mchid.as_deref().unwrap_or("*"),
            json!({"mchid": f.mchid, "appid": f.appid, "state": f.state, "count": rows.len()}),
        )
        .await?;
    }
    let next_after = more
        .then(|| {
            rows.last()
                .map(|o| cursor_of(o.created_at, &o.mchid, &o.out_trade_no))
        })
        .flatten();
    Ok(Json(OrderPage {
        orders: rows.into_iter().map(Into::into).collect(),
        next_after,
    }))
}

// --------------------------------------------------------------------------------- refunds

/// `?mchid=&out_trade_no=&status=&limit=&after=`.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RefundQuery {
    /// Only this merchant's refunds.
    #[serde(default)]
    pub mchid: Option<String>,
    /// Only the refunds of this order.
    #[serde(default)]
    pub out_trade_no: Option<String>,
    /// Only refunds with this status (`PENDING`, `PROCESSING`, `SUCCESS`, `CLOSED`, `ABNORMAL`).
    #[serde(default)]
    pub status: Option<String>,
    /// Page size, 1–100 (default 50).
    #[serde(default)]
    pub limit: Option<u32>,
    /// The `next_after` of the previous page.
    #[serde(default)]
    pub after: Option<String>,
}

/// A refund as administrators see it.
#[derive(Serialize, ToSchema)]
pub struct AdminRefundView {
    /// The merchant.
    pub mchid: String,
    /// The merchant's refund number.
    pub out_refund_no: String,
    /// The refunded order.
    pub out_trade_no: String,
    /// The app of the order.
    pub appid: String,
    /// Fen refunded.
    pub amount: i64,
    /// Why.
    pub reason: Option<String>,
    /// `PENDING`, `PROCESSING`, `SUCCESS`, `CLOSED`, `ABNORMAL`.
    pub status: String,
    /// WeChat's refund id, once known.
    pub refund_id: Option<String>,
    /// WeChat's `success_time`, once refunded.
    pub success_time: Option<String>,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
}

impl From<PayRefundView> for AdminRefundView {
    fn from(r: PayRefundView) -> Self {
        AdminRefundView {
            mchid: r.mchid,
            out_refund_no: r.out_refund_no,
            out_trade_no: r.out_trade_no,
            appid: r.appid,
            amount: r.amount,
            reason: r.reason,
            status: r.status,
            refund_id: r.refund_id,
            success_time: r.success_time,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// A page of refunds.
#[derive(Serialize, ToSchema)]
pub struct RefundPage {
    /// Newest first.
    pub refunds: Vec<AdminRefundView>,
    /// Pass as `after` for the next page; null on the last page.
    pub next_after: Option<String>,
}

/// The refunds asked through the service, newest first.
#[utoipa::path(get, path = "/v1/admin/pay/refunds", tag = "admin", security(("admin_key" = [])), params(RefundQuery),
    responses((status = 200, body = RefundPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn list_refunds(
    State(state): State<AdminApi>,
    _admin: Admin,
    Query(q): Query<RefundQuery>,
) -> Result<Json<RefundPage>, AppError> {
    let limit = limit_of(q.limit)?;
    let f = PayRefundFilter {
        mchid: filter(q.mchid, "mchid", is_mchid)?,
        out_trade_no: filter(q.out_trade_no, "out_trade_no", is_number)?,
        status: filter(q.status, "status", is_upper_word)?,
    };
    let after = parse_cursor(q.after.as_deref())?;
    let mut rows = state
        .store
        .pay_refunds_page(&f, after.as_ref(), limit as i64 + 1)
        .await?;
    let more = rows.len() > limit;
    rows.truncate(limit);
    let next_after = more
        .then(|| {
            rows.last()
                .map(|r| cursor_of(r.created_at, &r.mchid, &r.out_refund_no))
        })
        .flatten();
    Ok(Json(RefundPage {
        refunds: rows.into_iter().map(Into::into).collect(),
        next_after,
    }))
}

// --------------------------------------------------------------------------- notifications

/// `?mchid=&outcome=&limit=&after=`.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct NotificationQuery {
    /// Only this merchant's notifications.
    #[serde(default)]
    pub mchid: Option<String>,
    /// Only this outcome: `applied`, `no_change`, `mismatch`, `unknown_order`, `deferred`,
    /// `ignored`, or `pending` (stored, not applied yet).
    #[serde(default)]
    pub outcome: Option<String>,
    /// Page size, 1–100 (default 50).
    #[serde(default)]
    pub limit: Option<u32>,
    /// The `next_after` of the previous page.
    #[serde(default)]
    pub after: Option<String>,
}

/// A notification in the inbox (every one stored passed verification: signature, time,
/// decryption, merchant).
#[derive(Serialize, ToSchema)]
pub struct AdminNotificationView {
    /// The inbox id.
    pub id: i64,
    /// The merchant it was sent for.
    pub mchid: String,
    /// WeChat's notification id.
    pub notification_id: String,
    /// `TRANSACTION.SUCCESS`, `REFUND.SUCCESS`, …
    pub event_type: String,
    /// The `out_trade_no` or `out_refund_no` it is about.
    pub business_no: Option<String>,
    /// The `Wechatpay-Serial` (public key id or certificate serial) that verified it.
    pub serial: String,
    /// What applying it did: `applied`, `no_change`, `mismatch` (amount or app differs: not
    /// marked paid), `unknown_order`, `deferred`, `ignored`; `pending` while not applied.
    pub outcome: String,
    /// An alert: the notification disagrees with the stored order (`mismatch`).
    pub alert: bool,
    /// Copies received (WeChat's attempts and duplicates; 1 for the first).
    pub deliveries: i64,
    /// Unix ms of the first copy.
    pub received_at: i64,
    /// Unix ms it was applied.
    pub applied_at: Option<i64>,
}

impl From<PayNotificationView> for AdminNotificationView {
    fn from(n: PayNotificationView) -> Self {
        let outcome = n.outcome.unwrap_or_else(|| PENDING_OUTCOME.to_owned());
        AdminNotificationView {
            id: n.id,
            mchid: n.mchid,
            notification_id: n.notification_id,
            event_type: n.event_type,
            business_no: n.business_no,
            serial: n.serial,
            alert: outcome == "mismatch",
            outcome,
            deliveries: n.deliveries,
            received_at: n.received_at,
            applied_at: n.applied_at,
        }
    }
}

/// A page of the inbox.
#[derive(Serialize, ToSchema)]
pub struct NotificationPage {
    /// Newest first.
    pub notifications: Vec<AdminNotificationView>,
    /// Pass as `after` for the next page; null on the last page.
    pub next_after: Option<String>,
}

/// The notification inbox, newest first (without the payloads: see the detail).
#[utoipa::path(get, path = "/v1/admin/pay/notifications", tag = "admin", security(("admin_key" = [])), params(NotificationQuery),
    responses((status = 200, body = NotificationPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn list_notifications(
    State(state): State<AdminApi>,
    _admin: Admin,
    Query(q): Query<NotificationQuery>,
) -> Result<Json<NotificationPage>, AppError> {
    let limit = limit_of(q.limit)?;
    let f = PayNotificationFilter {
        mchid: filter(q.mchid, "mchid", is_mchid)?,
        outcome: filter(q.outcome, "outcome", is_lower_word)?,
    };
    let before = match q.after.as_deref() {
        None | Some("") => None,
        Some(a) => Some(
            a.parse::<i64>()
                .map_err(|_| bad_query("after must be a next_after this API answered"))?,
        ),
    };
    let mut rows = state
        .store
        .pay_notifications_page(&f, before, limit as i64 + 1)
        .await?;
    let more = rows.len() > limit;
    rows.truncate(limit);
    let next_after = more
        .then(|| rows.last().map(|n| n.id.to_string()))
        .flatten();
    Ok(Json(NotificationPage {
        notifications: rows.into_iter().map(Into::into).collect(),
        next_after,
    }))
}

/// A notification with its decrypted resource.
#[derive(Serialize, ToSchema)]
pub struct AdminNotificationDetail {
    /// The inbox row.
    #[serde(flatten)]
    pub notification: AdminNotificationView,
    /// The decrypted resource as WeChat sent it (the transaction or the refund).
    pub resource: Value,
}

/// One notification and its decrypted resource, audited first (`pay.notification.read`:
/// which admin, which notification — never its content).
#[utoipa::path(get, path = "/v1/admin/pay/notifications/{id}", tag = "admin", security(("admin_key" = [])),
    params(("id" = i64, Path, description = "the inbox id")),
    responses((status = 200, body = AdminNotificationDetail), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn get_notification(
    State(state): State<AdminApi>,
    admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<AdminNotificationDetail>, AppError> {
    let id = id
        .parse::<i64>()
        .map_err(|_| AppError::bad_request("invalid_path", "id must be an inbox id"))?;
    let (view, resource) = state
        .store
        .pay_notification_detail(id)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("no notification {id} in the inbox")))?;
    audited_read(
        &state,
        &admin,
        "pay.notification.read",
        &format!("{}/{}", view.mchid, view.notification_id),
        json!({"id": id, "event_type": view.event_type, "business_no": view.business_no}),
    )
    .await?;
    Ok(Json(AdminNotificationDetail {
        notification: view.into(),
        resource: serde_json::from_str(&resource).unwrap_or(Value::String(resource)),
    }))
}

/// `?mchid=`.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RefusedQuery {
    /// Only this merchant's counts.
    #[serde(default)]
    pub mchid: Option<String>,
}

/// How many notifications of a merchant ended with an outcome.
#[derive(Serialize, ToSchema)]
pub struct RefusedCount {
    /// The merchant named in the URL (`unknown` for a merchant not served here).
    pub mchid: String,
    /// `refused`, `malformed`, `unknown_merchant` or `store_failed`.
    pub outcome: String,
    /// Since this instance started.
    pub count: u64,
}

/// The notifications this instance did not store.
#[derive(Serialize, ToSchema)]
pub struct RefusedCounts {
    /// The instance that counted them (each instance counts its own, like `/metrics`).
    pub instance: String,
    /// By merchant, then outcome.
    pub counts: Vec<RefusedCount>,
}

/// The notifications refused at the door (forged, probing, stale, another merchant's,
/// malformed, for an unknown merchant) or not stored (answered 500, retried by WeChat): by
/// design they are stored nowhere, so these are this instance's counters
/// (`weapp_pay_notifications_total`) since it started.
#[utoipa::path(get, path = "/v1/admin/pay/notifications/refused", tag = "admin", security(("admin_key" = [])), params(RefusedQuery),
    responses((status = 200, body = RefusedCounts), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn refused_notifications(
    State(state): State<AdminApi>,
    _admin: Admin,
    Query(q): Query<RefusedQuery>,
) -> Result<Json<RefusedCounts>, AppError> {
    let mchid = filter(q.mchid, "mchid", |m| is_mchid(m) || m == "unknown")?;
    let counts = state
        .metrics
        .pay_notification_counts()
        .into_iter()
        .filter(|(m, outcome, _)| {
            REFUSED_OUTCOMES.contains(outcome) && mchid.as_deref().is_none_or(|want| want == m)
        })
        .map(|(mchid, outcome, count)| RefusedCount {
            mchid,
            outcome: outcome.to_owned(),
            count,
        })
        .collect();
    Ok(Json(RefusedCounts {
        instance: state.instance_id.clone(),
        counts,
    }))
}

/// The routes of the payments' admin views.
pub(super) fn router() -> Router<AdminApi> {
    Router::new()
        .route("/v1/admin/pay/orders", get(list_orders))
        .route("/v1/admin/pay/refunds", get(list_refunds))
        .route("/v1/admin/pay/notifications", get(list_notifications))
        .route(
            "/v1/admin/pay/notifications/refused",
            get(refused_notifications),
        )
        .route("/v1/admin/pay/notifications/{id}", get(get_notification))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_what_it_wrote() {
        let c = cursor_of(1_700_000_000_123, "1900000109", "order_1-a|b*c");
        let parsed = parse_cursor(Some(&c)).unwrap().unwrap();
        assert_eq!(parsed.created_at, 1_700_000_000_123);
        assert_eq!(parsed.mchid, "1900000109");
        assert_eq!(parsed.no, "order_1-a|b*c");
        assert!(parse_cursor(None).unwrap().is_none());
        assert!(parse_cursor(Some("")).unwrap().is_none());
        for bad in ["x", "1.2", "a.1.x", "1.x1.o", "1.1.o o", "1.1.o'"] {
            assert!(parse_cursor(Some(bad)).is_err(), "{bad}");
        }
    }
}
