//! The pay domain's `/_sim` routes: WeChat's merchant platform (issue merchants, rotate the
//! platform certificate, the public-key migration, the balance), the phone's
//! `wx.requestPayment` and what its payment sheet shows, notifications on demand (duplicates,
//! probes, delivery off and on), ending refunds, and the views the console reads (bills
//! included).

use axum::body::Bytes;
use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::merchants::{MerchantSpec, MigrationAction};
use super::notify;
use super::orders::RequestPayment;
use crate::error::PayError;
use crate::http::{body, control_error, try_resp};
use crate::state::pay::RefundStatus;
use crate::world::Sim;

/// A pay error as a control-API error (`{"error": "CODE: message"}` with its status).
fn refused(e: &PayError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
    let issue = e
        .detail
        .as_ref()
        .and_then(|d| d.get("issue"))
        .and_then(Value::as_str)
        .map(|i| format!(" ({i})"))
        .unwrap_or_default();
    control_error(status, format!("{}: {}{issue}", e.code, e.message))
}

fn answer<T: serde::Serialize>(r: Result<T, PayError>) -> Response {
    match r {
        Ok(v) => Json(v).into_response(),
        Err(e) => refused(&e),
    }
}

fn unknown_merchant(sim: &Sim, mchid: &str) -> Option<Response> {
    (!sim.world().pay.merchants.contains_key(mchid))
        .then(|| control_error(StatusCode::NOT_FOUND, format!("no merchant {mchid}")))
}

async fn add(State(sim): State<Sim>, raw: Bytes) -> Response {
    let spec: MerchantSpec = try_resp!(body(&raw));
    answer(sim.add_pay_merchant(spec).await)
}

async fn list(State(sim): State<Sim>) -> Response {
    Json(json!({"merchants": sim.pay_merchants()})).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rotate {
    overlap_secs: Option<i64>,
}

async fn rotate(State(sim): State<Sim>, Path(mchid): Path<String>, raw: Bytes) -> Response {
    let req: Rotate = try_resp!(body(&raw));
    answer(
        sim.rotate_platform_certificate(&mchid, req.overlap_secs)
            .await
            .map(|certs| json!({"platform_certificates": certs})),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Migration {
    action: Option<MigrationAction>,
    notify_percent: Option<f64>,
}

async fn migration(State(sim): State<Sim>, Path(mchid): Path<String>, raw: Bytes) -> Response {
    let req: Migration = try_resp!(body(&raw));
    answer(
        sim.pay_migration(&mchid, req.action, req.notify_percent)
            .await,
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Delivery {
    deliver: bool,
}

async fn delivery(State(sim): State<Sim>, Path(mchid): Path<String>, raw: Bytes) -> Response {
    let req: Delivery = try_resp!(body(&raw));
    answer(
        sim.set_pay_delivery(&mchid, req.deliver)
            .map(|()| json!({"deliver": req.deliver})),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Balance {
    balance: Option<i64>,
}

async fn balance(State(sim): State<Sim>, Path(mchid): Path<String>, raw: Bytes) -> Response {
    let req: Balance = try_resp!(body(&raw));
    answer(
        sim.set_pay_balance(&mchid, req.balance)
            .map(|()| json!({"balance": req.balance})),
    )
}

async fn notifications(State(sim): State<Sim>, Path(mchid): Path<String>) -> Response {
    if let Some(r) = unknown_merchant(&sim, &mchid) {
        return r;
    }
    Json(json!({"notifications": sim.pay_notifications(&mchid)})).into_response()
}

async fn orders(State(sim): State<Sim>, Path(mchid): Path<String>) -> Response {
    if let Some(r) = unknown_merchant(&sim, &mchid) {
        return r;
    }
    Json(json!({"orders": sim.pay_orders(&mchid)})).into_response()
}

async fn refunds(State(sim): State<Sim>, Path(mchid): Path<String>) -> Response {
    if let Some(r) = unknown_merchant(&sim, &mchid) {
        return r;
    }
    Json(json!({"refunds": sim.pay_refunds(&mchid)})).into_response()
}

async fn bills(
    State(sim): State<Sim>,
    Path(mchid): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    answer(sim.pay_bill_view(&mchid, &query))
}

async fn prepay(State(sim): State<Sim>, Path(prepay_id): Path<String>) -> Response {
    match sim.pay_prepay_view(&prepay_id) {
        Some(v) => Json(v).into_response(),
        None => control_error(StatusCode::NOT_FOUND, format!("no prepay_id {prepay_id}")),
    }
}

async fn resend(State(sim): State<Sim>, Path((mchid, no)): Path<(String, String)>) -> Response {
    answer(sim.resend_pay_notification(&mchid, &no, false))
}

async fn probe(State(sim): State<Sim>, Path((mchid, no)): Path<(String, String)>) -> Response {
    answer(sim.resend_pay_notification(&mchid, &no, true))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EndRefund {
    status: RefundStatus,
    mchid: Option<String>,
}

async fn end_refund(State(sim): State<Sim>, Path(no): Path<String>, raw: Bytes) -> Response {
    let req: EndRefund = try_resp!(body(&raw));
    answer(sim.end_refund(req.mchid.as_deref(), &no, req.status))
}

async fn request_payment(State(sim): State<Sim>, raw: Bytes) -> Response {
    let req: RequestPayment = try_resp!(body(&raw));
    Json(json!({"errMsg": sim.request_payment(&req)})).into_response()
}

impl Sim {
    /// Sends the latest notification about an order (or refund, by `out_refund_no`) again:
    /// a duplicate with the same `id`, or a probe signed `WECHATPAY/SIGNTEST/…`.
    /// Returns `{seq, id}` of the new delivery.
    ///
    /// # Errors
    /// 404 when there was no notification about it.
    pub fn resend_pay_notification(
        &self,
        mchid: &str,
        business_no: &str,
        probe: bool,
    ) -> Result<Value, PayError> {
        let mut w = self.world();
        let now = self.now_in(&w);
        let seq = notify::again(&mut w, now, mchid, business_no, probe)?;
        let id = w
            .pay
            .notifications
            .iter()
            .find(|n| n.seq == seq)
            .map(|n| n.id.clone());
        Ok(json!({"seq": seq, "id": id}))
    }

    /// The notifications of a merchant with their attempts, newest first.
    pub fn pay_notifications(&self, mchid: &str) -> Vec<Value> {
        let w = self.world();
        w.pay
            .notifications
            .iter()
            .rev()
            .filter(|n| n.mchid == mchid)
            .map(notify::view)
            .collect()
    }
}

/// The `/_sim/pay` routes.
pub(crate) fn control() -> Router<Sim> {
    Router::new()
        .route("/_sim/pay/merchants", post(add).get(list))
        .route(
            "/_sim/pay/merchants/{mchid}/platform_certificates/rotate",
            post(rotate),
        )
        .route("/_sim/pay/merchants/{mchid}/migration", post(migration))
        .route(
            "/_sim/pay/merchants/{mchid}/notifications",
            put(delivery).get(notifications),
        )
        .route("/_sim/pay/merchants/{mchid}/balance", put(balance))
        .route("/_sim/pay/merchants/{mchid}/orders", get(orders))
        .route("/_sim/pay/merchants/{mchid}/refunds", get(refunds))
        .route("/_sim/pay/merchants/{mchid}/bills", get(bills))
        .route("/_sim/pay/prepay/{prepay_id}", get(prepay))
        .route(
            "/_sim/pay/merchants/{mchid}/orders/{out_trade_no}/notify",
            post(resend),
        )
        .route(
            "/_sim/pay/merchants/{mchid}/orders/{out_trade_no}/probe",
            post(probe),
        )
        .route("/_sim/pay/refunds/{out_refund_no}", post(end_refund))
        .route("/_sim/pay/request_payment", post(request_payment))
}
