//! One place where a payment becomes true here, whoever learnt of it: a notification from the
//! inbox, the query fallback, or a refund asking about an order not paid here yet. The order
//! changes under a guard and its one event (dedup key `pay:{mchid}:{out_trade_no}:{type}`) is
//! appended in the same transaction, so a notification and a query racing on two instances
//! still make one `TRANSACTION.SUCCESS`.

use weapp::pay::{PayError, TradeState, Transaction};

use super::service::{MerchantRuntime, Payments};
use crate::shared::now_ms;
use crate::store::{NewEvent, PayOrderRecord, PayTransition, StoreError, NEVER};

/// The event type of an alert: a notification that does not match its stored order.
pub const MISMATCH_EVENT: &str = "PAYMENT.MISMATCH";

/// The event type of an alert: an order closed here was paid at WeChat (the money is taken;
/// it is marked paid, and someone must decide: deliver or refund).
pub const AFTER_CLOSE_EVENT: &str = "PAYMENT.AFTER_CLOSE";

/// What applying a notification (or a query's answer) came to: the inbox outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Kept for later: a refund whose payment is not known here yet.
    Deferred,
    /// The order (or refund) changed and its one event was appended.
    Changed,
    /// Nothing to change: already there (a copy of a notification applied).
    NoChange,
    /// Amount, appid or mchid differ from the stored order: an alert event, not marked paid.
    Mismatch,
    /// No such order here.
    UnknownOrder,
    /// A refund this service never stored (made in the merchant platform): kept, nothing
    /// changed.
    UnknownRefund,
    /// An event this service does not act on.
    Ignored,
}

impl Applied {
    /// The inbox outcome and metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Applied::Changed => "applied",
            Applied::NoChange => "no_change",
            Applied::Mismatch => "mismatch",
            Applied::UnknownOrder => "unknown_order",
            Applied::UnknownRefund => "unknown_refund",
            Applied::Ignored => "ignored",
            Applied::Deferred => "deferred",
        }
    }
}

/// Where an app's events start: due now with a webhook, pull-only without.
pub(crate) fn next_attempt(p: &Payments, appid: &str, now: i64) -> i64 {
    if crate::push::handlers::has_webhook(&p.push, appid) {
        now
    } else {
        NEVER
    }
}

/// Writes the inbox row's outcome alone (no change, no event).
pub(crate) async fn outcome(
    p: &Payments,
    inbox_id: Option<i64>,
    applied: Applied,
) -> Result<Applied, StoreError> {
    if inbox_id.is_some() {
        p.store
            .apply_pay_notification(inbox_id, applied.as_str(), None, None, now_ms())
            .await?;
    }
    Ok(applied)
}

/// Applies a transaction (`resource`: its JSON as WeChat sent it) to its stored `order`:
/// a mismatch is an alert; a paid one (`SUCCESS`, or `REFUND` as a query reports a refunded
/// order) marks the order paid once with its one `TRANSACTION.SUCCESS` event — and, when the
/// order had been closed here, one `PAYMENT.AFTER_CLOSE` alert. `inbox_id`: the inbox row
/// that brought it (none for a query); `source`: the notification id or `query`.
///
/// # Errors
/// The database failed; nothing was written (the inbox row stays unapplied).
pub(crate) async fn transaction(
    p: &Payments,
    inbox_id: Option<i64>,
    order: &PayOrderRecord,
    t: &Transaction,
    resource: &str,
    source: &str,
) -> Result<Applied, StoreError> {
    // The event log and the outbox run on the wall clock.
    let now = now_ms();
    let mchid = &order.mchid;
    let total = t.amount.as_ref().and_then(|a| a.total).map(|f| f.as_i64());
    let paid = matches!(t.trade_state, TradeState::Success | TradeState::Refund);
    let mismatch = if t.mchid != *mchid {
        Some("mchid")
    } else if t.appid != order.appid {
        Some("appid")
    } else if paid && total != Some(order.amount) {
        Some("amount")
    } else {
        None
    };
    if let Some(field) = mismatch {
        tracing::error!(mchid = %mchid, out_trade_no = %order.out_trade_no, field, source, "a payment does not match its order: not marked paid");
        let payload = serde_json::json!({
            "field": field,
            "mchid": mchid,
            "out_trade_no": order.out_trade_no,
            "notification_id": source,
            "event_type": "TRANSACTION.SUCCESS",
            "expected": {"appid": order.appid, "mchid": order.mchid, "amount": order.amount},
            "received": serde_json::from_str::<serde_json::Value>(resource).unwrap_or_default(),
        })
        .to_string();
        let dedup = format!(
            "pay:{mchid}:{}:{MISMATCH_EVENT}:{source}",
            order.out_trade_no
        );
        let applied = p
            .store
            .apply_pay_notification(
                inbox_id,
                Applied::Mismatch.as_str(),
                None,
                Some(&NewEvent {
                    appid: &order.appid,
                    dedup_key: &dedup,
                    kind: MISMATCH_EVENT,
                    payload: &payload,
                    next_attempt_at: next_attempt(p, &order.appid, now),
                }),
                now,
            )
            .await?;
        if applied.event.is_some() {
            p.push.outbox.notify_one();
        }
        return Ok(Applied::Mismatch);
    }
    if !paid {
        return outcome(p, inbox_id, Applied::Ignored).await;
    }
    let success_time = t.success_time.map(|s| s.to_string());
    let kind = "TRANSACTION.SUCCESS";
    let dedup = format!("pay:{mchid}:{}:{kind}", order.out_trade_no);
    let alert_dedup = format!("pay:{mchid}:{}:{AFTER_CLOSE_EVENT}", order.out_trade_no);
    let alert_payload = serde_json::json!({
        "mchid": mchid,
        "out_trade_no": order.out_trade_no,
        "transaction_id": t.transaction_id,
        "amount": order.amount,
        "transaction": serde_json::from_str::<serde_json::Value>(resource).unwrap_or_default(),
    })
    .to_string();
    let next = next_attempt(p, &order.appid, now);
    let applied = p
        .store
        .apply_pay_notification(
            inbox_id,
            Applied::Changed.as_str(),
            Some(&PayTransition {
                mchid,
                out_trade_no: &order.out_trade_no,
                unless: &["SUCCESS", "REFUND"],
                to: "SUCCESS",
                transaction_id: t.transaction_id.as_deref(),
                success_time: success_time.as_deref(),
                paid_at: Some(now),
                alert: Some((
                    "CLOSED",
                    NewEvent {
                        appid: &order.appid,
                        dedup_key: &alert_dedup,
                        kind: AFTER_CLOSE_EVENT,
                        payload: &alert_payload,
                        next_attempt_at: next,
                    },
                )),
            }),
            Some(&NewEvent {
                appid: &order.appid,
                dedup_key: &dedup,
                kind,
                payload: resource,
                next_attempt_at: next,
            }),
            now,
        )
        .await?;
    if applied.event.is_some() || applied.alert.is_some() {
        p.push.outbox.notify_one();
    }
    if applied.alert.is_some() {
        tracing::error!(mchid = %mchid, out_trade_no = %order.out_trade_no, "an order closed here was paid at WeChat: marked paid, alert sent");
    }
    if applied.changed {
        tracing::info!(mchid = %mchid, out_trade_no = %order.out_trade_no, source, event = ?applied.event, "order paid");
        Ok(Applied::Changed)
    } else {
        Ok(Applied::NoChange)
    }
}

/// Asks WeChat about `order` now and applies a payment found (its one event, as a
/// notification would). Returns WeChat's state of the order.
///
/// # Errors
/// WeChat's failure (e.g. `ORDER_NOT_EXIST` for a prepay that never reached it), or the
/// database's.
pub(crate) async fn query_order(
    p: &Payments,
    m: &MerchantRuntime,
    order: &PayOrderRecord,
) -> Result<TradeState, QueryError> {
    let t = m.client.query_by_out_trade_no(&order.out_trade_no).await?;
    if matches!(t.trade_state, TradeState::Success | TradeState::Refund) {
        // The payload has the shape of a notification's resource: WeChat's transaction JSON.
        let resource = serde_json::to_string(&t).unwrap_or_default();
        transaction(p, None, order, &t, &resource, "query").await?;
    }
    Ok(t.trade_state)
}

/// Why asking WeChat about an order failed.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// WeChat Pay refused or failed.
    #[error("WeChat Pay: {0}")]
    Pay(#[from] PayError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}
