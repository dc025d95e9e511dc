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
//! it: kept, nothing changed, no event), `unknown_refund` (a refund made outside the service,
//! e.g. in the merchant platform: kept, nothing changed), `deferred` (a refund whose payment
//! is not known here yet, even after asking WeChat: tried again by the sweep, as are rows kept
//! `deferred` by the version that did not act on refunds), `ignored` (a notification that
//! changes nothing here, e.g. a state other than SUCCESS).

use weapp::pay::{RefundNotice, Transaction};

use super::service::Payments;
pub use super::settle::{Applied, MISMATCH_EVENT};
use super::{refunds, settle};
use crate::shared::now_ms;
use crate::store::{PayNotificationRecord, StoreError};

/// How long a `deferred` row waits before the sweep tries it again.
const DEFERRED_RETRY_MS: i64 = 60_000;

/// Applies the inbox row `inbox_id` (`n`) once: see the module's outcomes.
///
/// # Errors
/// The database failed; the row stays unapplied (a copy or the sweep applies it later).
pub async fn apply(
    p: &Payments,
    inbox_id: i64,
    n: &PayNotificationRecord,
) -> Result<Applied, StoreError> {
    let inbox = Some(inbox_id);
    if n.event_type.starts_with("REFUND.") {
        let Ok(notice) = serde_json::from_str::<RefundNotice>(&n.resource) else {
            return settle::outcome(p, inbox, Applied::Ignored).await;
        };
        return refunds::apply_notice(p, inbox, &n.mchid, &n.event_type, &notice, &n.resource)
            .await;
    }
    if n.event_type != "TRANSACTION.SUCCESS" {
        return settle::outcome(p, inbox, Applied::Ignored).await;
    }
    let Ok(t) = serde_json::from_str::<Transaction>(&n.resource) else {
        return settle::outcome(p, inbox, Applied::Ignored).await;
    };
    let Some(order) = p.store.pay_order(&n.mchid, &t.out_trade_no).await? else {
        tracing::warn!(mchid = %n.mchid, out_trade_no = %t.out_trade_no, notification = %n.notification_id, "notification about an order this service does not know: kept in the inbox, nothing changed");
        return settle::outcome(p, inbox, Applied::UnknownOrder).await;
    };
    settle::transaction(p, inbox, &order, &t, &n.resource, &n.notification_id).await
}

/// Applies inbox rows stored but never applied (the instance died between the two), received
/// more than `grace_ms` ago. Returns how many were applied.
///
/// # Errors
/// The database failed.
pub async fn apply_unapplied(p: &Payments, grace_ms: i64) -> Result<usize, StoreError> {
    let rows = p
        .store
        .unapplied_pay_notifications(now_ms() - grace_ms, now_ms() - DEFERRED_RETRY_MS, 100)
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
