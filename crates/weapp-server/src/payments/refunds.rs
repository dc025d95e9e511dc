//! Refunds: asked through the service (stored `PENDING` with their amount reserved on the order
//! before WeChat is asked; idempotent by `out_refund_no`), then changed once by WeChat's
//! notification or the refund query fallback, each change one event (`REFUND.SUCCESS`,
//! `REFUND.ABNORMAL`, `REFUND.CLOSED`; payload the notification's decrypted resource, or the
//! same shape built from a query).

use weapp::pay::{
    Fen, OrderRef, PayError, PayErrorCode, Refund, RefundNotice, RefundRequest, RefundStatus,
    TradeState,
};

use super::error::PaymentsError;
use super::service::{MerchantRuntime, Payments};
use super::settle::{self, Applied};
use crate::store::{
    NewEvent, PayOrderRecord, PayRefundChange, PayRefundInsert, PayRefundRecord, StoreError,
};

/// A refund asked for by a backend.
#[derive(Debug, Clone)]
pub struct RefundAsk {
    /// The order refunded.
    pub out_trade_no: String,
    /// The refund's number.
    pub out_refund_no: String,
    /// Fen.
    pub amount: i64,
    /// Shown to the user.
    pub reason: Option<String>,
}

/// The event type of a refund status (none for `PROCESSING`).
fn event_type(status: &RefundStatus) -> Option<&'static str> {
    match status {
        RefundStatus::Success => Some("REFUND.SUCCESS"),
        RefundStatus::Abnormal => Some("REFUND.ABNORMAL"),
        RefundStatus::Closed => Some("REFUND.CLOSED"),
        _ => None,
    }
}

/// A refund as WeChat's query answers it, in the shape of a refund notification's resource.
pub(crate) fn notice_of(mchid: &str, r: &Refund) -> serde_json::Value {
    let mut amount = serde_json::json!({
        "total": r.amount.total,
        "refund": r.amount.refund,
        "payer_total": r.amount.payer_total,
        "payer_refund": r.amount.payer_refund,
    });
    if let Some(a) = amount.as_object_mut() {
        a.retain(|_, v| !v.is_null());
    }
    let mut v = serde_json::json!({
        "mchid": mchid,
        "out_trade_no": r.out_trade_no,
        "transaction_id": r.transaction_id,
        "out_refund_no": r.out_refund_no,
        "refund_id": r.refund_id,
        "refund_status": r.status.as_str(),
        "success_time": r.success_time.map(|t| t.to_string()),
        "user_received_account": r.user_received_account,
        "amount": amount,
    });
    if let Some(o) = v.as_object_mut() {
        o.retain(|_, v| !v.is_null());
    }
    v
}

/// Applies a refund status WeChat reported (by notification or query) to the stored refund:
/// changed once under a guard, with its one event; SUCCESS adds to the order's `refunded`,
/// CLOSED releases the reservation.
///
/// # Errors
/// The database failed.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn apply_status(
    p: &Payments,
    inbox_id: Option<i64>,
    refund: &PayRefundRecord,
    status: &RefundStatus,
    refund_id: Option<&str>,
    success_time: Option<&str>,
    payload: &str,
) -> Result<Applied, StoreError> {
    let Some(kind) = event_type(status) else {
        return settle::outcome(p, inbox_id, Applied::Ignored).await;
    };
    let (to, unless, refunded, release): (&str, &[&str], i64, i64) = match status {
        RefundStatus::Success => ("SUCCESS", &["SUCCESS", "CLOSED"], refund.amount, 0),
        RefundStatus::Closed => ("CLOSED", &["SUCCESS", "CLOSED"], 0, refund.amount),
        _ => ("ABNORMAL", &["SUCCESS", "CLOSED", "ABNORMAL"], 0, 0),
    };
    // The event log and the outbox run on the wall clock.
    let now = crate::shared::now_ms();
    let dedup = format!(
        "pay:{}:refund:{}:{kind}",
        refund.mchid, refund.out_refund_no
    );
    let applied = p
        .store
        .apply_pay_refund(
            &PayRefundChange {
                mchid: &refund.mchid,
                out_refund_no: &refund.out_refund_no,
                unless,
                to,
                refund_id,
                success_time,
                refunded,
                release,
                event: Some(NewEvent {
                    appid: &refund.appid,
                    dedup_key: &dedup,
                    kind,
                    payload,
                    next_attempt_at: settle::next_attempt(p, &refund.appid, now),
                }),
                inbox: inbox_id.map(|id| (id, Applied::Changed.as_str())),
            },
            now,
        )
        .await?;
    if applied.event.is_some() {
        p.push.outbox.notify_one();
    }
    if applied.changed {
        tracing::info!(mchid = %refund.mchid, out_refund_no = %refund.out_refund_no, status = to, "refund changed");
        Ok(Applied::Changed)
    } else {
        Ok(Applied::NoChange)
    }
}

/// Applies a refund notification. A refund this service stored changes once. One it never
/// stored (made in the merchant platform) changes nothing — but when its order is known here
/// and not paid yet (the payment's notification lost or late), WeChat is asked about the order
/// at once, so the payment (its one event) comes first; if that fails the row stays
/// `deferred` and the sweep tries again.
///
/// # Errors
/// The database failed.
pub(crate) async fn apply_notice(
    p: &Payments,
    inbox_id: Option<i64>,
    mchid: &str,
    event_type: &str,
    notice: &RefundNotice,
    resource: &str,
) -> Result<Applied, StoreError> {
    let order = p.store.pay_order(mchid, &notice.out_trade_no).await?;
    if let Some(order) = order
        .as_ref()
        .filter(|o| !matches!(o.state.as_str(), "SUCCESS" | "REFUND"))
    {
        let Some(m) = p.merchant(mchid) else {
            return settle::outcome(p, inbox_id, Applied::Deferred).await;
        };
        match settle::query_order(p, &m, order).await {
            Ok(TradeState::Success | TradeState::Refund) => {}
            Ok(state) => {
                tracing::warn!(mchid, out_trade_no = %order.out_trade_no, %state, "a refund notification for an order WeChat does not report paid: deferred");
                return settle::outcome(p, inbox_id, Applied::Deferred).await;
            }
            Err(e) => {
                tracing::warn!(mchid, out_trade_no = %order.out_trade_no, error = %e, "a refund notification before its payment, and the order cannot be queried: deferred");
                return settle::outcome(p, inbox_id, Applied::Deferred).await;
            }
        }
    }
    let Some(refund) = p.store.pay_refund(mchid, &notice.out_refund_no).await? else {
        let applied = if order.is_some() {
            Applied::UnknownRefund
        } else {
            Applied::UnknownOrder
        };
        tracing::warn!(mchid, out_refund_no = %notice.out_refund_no, out_trade_no = %notice.out_trade_no, outcome = applied.as_str(), "a refund this service never stored: kept in the inbox, nothing changed");
        return settle::outcome(p, inbox_id, applied).await;
    };
    let amount = notice.amount.refund.map(|f| f.as_i64());
    if refund.out_trade_no != notice.out_trade_no || amount.is_some_and(|a| a != refund.amount) {
        tracing::error!(mchid, out_refund_no = %refund.out_refund_no, "a refund notification does not match its refund: not applied");
        return settle::outcome(p, inbox_id, Applied::Mismatch).await;
    }
    if event_type.strip_prefix("REFUND.") != Some(notice.refund_status.as_str()) {
        return settle::outcome(p, inbox_id, Applied::Ignored).await;
    }
    let success_time = notice.success_time.map(|t| t.to_string());
    let refund_id = (!notice.refund_id.is_empty()).then_some(notice.refund_id.as_str());
    apply_status(
        p,
        inbox_id,
        &refund,
        &notice.refund_status,
        refund_id,
        success_time.as_deref(),
        resource,
    )
    .await
}

/// Asks WeChat for a stored `PENDING` refund (the same `out_refund_no`: WeChat refunds it
/// once however often it is asked) and records the answer: PROCESSING (then queried on a
/// schedule), or an outcome at once. A definite refusal forgets the refund and releases its
/// reservation.
///
/// # Errors
/// WeChat's refusal ([`PaymentsError::WeChatPay`]), an unknown outcome
/// ([`PaymentsError::RefundPending`]: the refund stays stored and reserved), the database.
pub(crate) async fn submit(
    p: &Payments,
    m: &MerchantRuntime,
    refund: &PayRefundRecord,
    order_amount: i64,
) -> Result<PayRefundRecord, PaymentsError> {
    let mut req = RefundRequest::new(
        OrderRef::OutTradeNo(refund.out_trade_no.clone()),
        refund.out_refund_no.clone(),
        Fen::new(refund.amount.unsigned_abs()),
        Fen::new(order_amount.unsigned_abs()),
    )
    .notify_url(m.notify_url.clone());
    if let Some(r) = &refund.reason {
        req = req.reason(r.clone());
    }
    match m.client.refund(&req).await {
        Ok(r) => {
            record_answer(p, refund, &r).await?;
        }
        Err(e) if e.is_outcome_unknown() || !is_definite(&e) => {
            tracing::warn!(mchid = %m.mchid, out_refund_no = %refund.out_refund_no, error = %e, "refund outcome unknown: kept PENDING and reserved");
            return Err(PaymentsError::RefundPending(refund.out_refund_no.clone()));
        }
        Err(e) => {
            tracing::info!(mchid = %m.mchid, out_refund_no = %refund.out_refund_no, error = %e, "WeChat refused the refund: forgotten, reservation released");
            p.store
                .forget_refused_pay_refund(&refund.mchid, &refund.out_refund_no)
                .await?;
            return Err(PaymentsError::WeChatPay(Box::new(e)));
        }
    }
    p.store
        .pay_refund(&refund.mchid, &refund.out_refund_no)
        .await?
        .ok_or_else(|| PaymentsError::RefundNotFound(refund.out_refund_no.clone()))
}

/// Whether WeChat's refusal is definite (it did not take the refund): a 4xx answer other
/// than a rate limit.
fn is_definite(e: &PayError) -> bool {
    matches!(e, PayError::Api { status, code, .. }
        if *status < 500 && !matches!(code, PayErrorCode::FrequencyLimited | PayErrorCode::SystemError))
}

/// Records WeChat's answer about a refund (creation or query).
///
/// # Errors
/// The database failed.
pub(crate) async fn record_answer(
    p: &Payments,
    refund: &PayRefundRecord,
    r: &Refund,
) -> Result<Applied, StoreError> {
    if r.status == RefundStatus::Processing {
        let next = p.now() + query_after_ms(p);
        p.store
            .set_pay_refund_processing(
                &refund.mchid,
                &refund.out_refund_no,
                &r.refund_id,
                next,
                p.now(),
            )
            .await?;
        return Ok(Applied::NoChange);
    }
    let payload = notice_of(&refund.mchid, r).to_string();
    let success_time = r.success_time.map(|t| t.to_string());
    apply_status(
        p,
        None,
        refund,
        &r.status,
        Some(&r.refund_id),
        success_time.as_deref(),
        &payload,
    )
    .await
}

/// `pay_query_after_secs` in ms.
pub(crate) fn query_after_ms(p: &Payments) -> i64 {
    i64::try_from(p.config.pay_query_after_secs.saturating_mul(1000)).unwrap_or(i64::MAX)
}

/// A refund asked by a backend: checked, its order paid here (asking WeChat first when it is
/// not: it may be paid with its notification on the way), stored with its reservation, then
/// asked of WeChat. The same request again answers the stored refund (asking WeChat again
/// while it is `PENDING`); the same number with other values is 409; more than is left is
/// refused and stores nothing.
///
/// # Errors
/// See [`PaymentsError`].
pub async fn create(
    p: &Payments,
    m: &MerchantRuntime,
    appid: &str,
    ask: &RefundAsk,
) -> Result<PayRefundRecord, PaymentsError> {
    let mut order = order_of(p, m, appid, &ask.out_trade_no).await?;
    if !matches!(order.state.as_str(), "SUCCESS" | "REFUND") {
        if let Err(e) = settle::query_order(p, m, &order).await {
            tracing::info!(mchid = %m.mchid, out_trade_no = %order.out_trade_no, error = %e, "order not paid here and not found paid at WeChat");
        }
        order = order_of(p, m, appid, &ask.out_trade_no).await?;
    }
    let now = p.now();
    let wanted = PayRefundRecord {
        mchid: m.mchid.clone(),
        out_refund_no: ask.out_refund_no.clone(),
        out_trade_no: ask.out_trade_no.clone(),
        appid: appid.to_owned(),
        amount: ask.amount,
        reason: ask.reason.clone(),
        status: "PENDING".into(),
        refund_id: None,
        success_time: None,
        next_query_at: Some(now + query_after_ms(p)),
        created_at: now,
        updated_at: now,
    };
    let stored = match p.store.insert_pay_refund(&wanted).await? {
        PayRefundInsert::Stored(r) => r,
        PayRefundInsert::Exists(r) => {
            let field = [
                ("appid", r.appid == wanted.appid),
                ("out_trade_no", r.out_trade_no == wanted.out_trade_no),
                ("amount", r.amount == wanted.amount),
                ("reason", r.reason == wanted.reason),
            ]
            .into_iter()
            .find(|(_, same)| !same)
            .map(|(f, _)| f);
            if let Some(field) = field {
                return Err(PaymentsError::RefundConflict {
                    out_refund_no: r.out_refund_no,
                    field,
                });
            }
            if r.status != "PENDING" {
                return Ok(r);
            }
            r
        }
        PayRefundInsert::Exceeds { left } => {
            return Err(PaymentsError::RefundExceeds {
                out_trade_no: ask.out_trade_no.clone(),
                left,
            })
        }
        PayRefundInsert::NotPaid(state) => {
            return Err(PaymentsError::OrderState {
                out_trade_no: ask.out_trade_no.clone(),
                state,
            })
        }
        PayRefundInsert::NoOrder => {
            return Err(PaymentsError::OrderNotFound(ask.out_trade_no.clone()))
        }
    };
    submit(p, m, &stored, order.amount).await
}

/// The stored order `no` of `appid`.
async fn order_of(
    p: &Payments,
    m: &MerchantRuntime,
    appid: &str,
    no: &str,
) -> Result<PayOrderRecord, PaymentsError> {
    match p.store.pay_order(&m.mchid, no).await? {
        Some(o) if o.appid == appid => Ok(o),
        _ => Err(PaymentsError::OrderNotFound(no.to_owned())),
    }
}
