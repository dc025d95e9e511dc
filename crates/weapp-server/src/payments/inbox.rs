//! The notification inbox: a verified notification is written (envelope and decrypted
//! resource) before WeChat gets its 2xx, then applied once — the order's state changed under
//! a guard and the event appended in the same transaction. Copies (WeChat's retries, the same
//! notification at two instances) find the inbox row and change nothing; a row stored but not
//! applied (a crash in between) is applied by the next copy or by [`apply_unapplied`].
//!
//! Outcomes written to the inbox row: `applied` (the order changed, one event),
//! `no_change` (the order was already in that state), `mismatch` (amount, appid or mchid
//! differ from the stored order: not marked paid; one `PAYMENT.MISMATCH` event),
//! `unknown_order` (an `out_trade_no` this service never stored, e.g. an order made outside
//! it: kept, nothing changed, no event), `deferred` (a kind this version does not act on yet:
//! refunds; kept so that the version that does can apply them), `ignored` (a transaction
//! notification that changes nothing here, e.g. a state other than SUCCESS).

use weapp::pay::{TradeState, Transaction};

use super::service::Payments;
use crate::shared::now_ms;
use crate::store::{NewEvent, PayNotificationRecord, PayTransition, StoreError, NEVER};

/// The event type of an alert: a notification that does not match its stored order.
pub const MISMATCH_EVENT: &str = "PAYMENT.MISMATCH";

/// What applying a notification came to (its inbox outcome).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// A kind this version does not act on yet (refunds): kept for the version that does.
    Deferred,
    /// The order changed and its one event was appended.
    Changed,
    /// Nothing to change: the order is already there (a copy of a notification applied).
    NoChange,
    /// Amount, appid or mchid differ from the order: an alert event, not marked paid.
    Mismatch,
    /// No such order here.
    UnknownOrder,
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
            Applied::Ignored => "ignored",
            Applied::Deferred => "deferred",
        }
    }
}

/// Where an app's events start: due now with a webhook, pull-only without.
fn next_attempt(p: &Payments, appid: &str, now: i64) -> i64 {
    if crate::push::handlers::has_webhook(&p.push, appid) {
        now
    } else {
        NEVER
    }
}

/// Applies the inbox row `inbox_id` (`n`) once: see the module's outcomes.
///
/// # Errors
/// The database failed; the row stays unapplied (a copy or the sweep applies it later).
pub async fn apply(
    p: &Payments,
    inbox_id: i64,
    n: &PayNotificationRecord,
) -> Result<Applied, StoreError> {
    let now = now_ms();
    let done = |applied: Applied| async move {
        p.store
            .apply_pay_notification(inbox_id, applied.as_str(), None, None, now)
            .await
            .map(|_| applied)
    };
    if !n.event_type.starts_with("TRANSACTION.") {
        // Refunds (and kinds this version does not act on) are kept as `deferred`: a version
        // that handles them re-applies these rows instead of losing them.
        return done(Applied::Deferred).await;
    }
    let Ok(t) = serde_json::from_str::<Transaction>(&n.resource) else {
        return done(Applied::Ignored).await;
    };
    let Some(order) = p.store.pay_order(&n.mchid, &t.out_trade_no).await? else {
        tracing::warn!(mchid = %n.mchid, out_trade_no = %t.out_trade_no, notification = %n.notification_id, "notification about an order this service does not know: kept in the inbox, nothing changed");
        return done(Applied::UnknownOrder).await;
    };
    let total = t.amount.as_ref().and_then(|a| a.total).map(|f| f.as_i64());
    let mismatch = if t.mchid != n.mchid {
        Some("mchid")
    } else if t.appid != order.appid {
        Some("appid")
    } else if n.event_type == "TRANSACTION.SUCCESS" && total != Some(order.amount) {
        Some("amount")
    } else {
        None
    };
    if let Some(field) = mismatch {
        tracing::error!(mchid = %n.mchid, out_trade_no = %order.out_trade_no, field, notification = %n.notification_id, "a payment notification does not match its order: not marked paid");
        let payload = serde_json::json!({
            "field": field,
            "mchid": n.mchid,
            "out_trade_no": order.out_trade_no,
            "notification_id": n.notification_id,
            "event_type": n.event_type,
            "expected": {"appid": order.appid, "mchid": order.mchid, "amount": order.amount},
            "received": serde_json::from_str::<serde_json::Value>(&n.resource).unwrap_or_default(),
        })
        .to_string();
        let dedup = format!(
            "pay:{}:{}:{MISMATCH_EVENT}:{}",
            n.mchid, order.out_trade_no, n.notification_id
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
    if n.event_type != "TRANSACTION.SUCCESS" || t.trade_state != TradeState::Success {
        return done(Applied::Ignored).await;
    }
    let success_time = t.success_time.map(|s| s.to_string());
    let dedup = format!("pay:{}:{}:{}", n.mchid, order.out_trade_no, n.event_type);
    let applied = p
        .store
        .apply_pay_notification(
            inbox_id,
            Applied::Changed.as_str(),
            Some(&PayTransition {
                mchid: &n.mchid,
                out_trade_no: &order.out_trade_no,
                unless: &["SUCCESS", "REFUND"],
                to: "SUCCESS",
                transaction_id: t.transaction_id.as_deref(),
                success_time: success_time.as_deref(),
                paid_at: Some(now),
            }),
            Some(&NewEvent {
                appid: &order.appid,
                dedup_key: &dedup,
                kind: &n.event_type,
                payload: &n.resource,
                next_attempt_at: next_attempt(p, &order.appid, now),
            }),
            now,
        )
        .await?;
    if applied.event.is_some() {
        p.push.outbox.notify_one();
    }
    if applied.changed {
        tracing::info!(mchid = %n.mchid, out_trade_no = %order.out_trade_no, event = ?applied.event, "order paid");
        Ok(Applied::Changed)
    } else {
        Ok(Applied::NoChange)
    }
}

/// Applies inbox rows stored but never applied (the instance died between the two), received
/// more than `grace_ms` ago. Returns how many were applied.
///
/// # Errors
/// The database failed.
pub async fn apply_unapplied(p: &Payments, grace_ms: i64) -> Result<usize, StoreError> {
    let rows = p
        .store
        .unapplied_pay_notifications(now_ms() - grace_ms, 100)
        .await?;
    let mut n = 0;
    for (id, row) in rows {
        // One row that keeps failing must not hold back the rows after it.
        match apply(p, id, &row).await {
            Ok(outcome) => {
                p.metrics.pay_notification(&row.mchid, outcome.as_str());
                tracing::info!(mchid = %row.mchid, notification = %row.notification_id, outcome = outcome.as_str(), "an unapplied notification from the inbox applied");
                n += 1;
            }
            Err(e) => {
                tracing::warn!(mchid = %row.mchid, notification = %row.notification_id, error = %e, "an unapplied notification could not be applied; next sweep")
            }
        }
    }
    Ok(n)
}
