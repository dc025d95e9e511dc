//! The query fallback (补单): orders with no notification are asked about at WeChat on a
//! schedule — `pay_query_after_secs` after they were placed, then on a backoff — until they
//! are paid (the same guarded change and single event as a notification's), closed, or
//! expired (their `time_expire`, else two hours: then closed at WeChat and here). PROCESSING
//! refunds are asked about the same way. Every instance runs it; each query is claimed first
//! by moving the row's `next_query_at` with a conditional update, so two instances never ask
//! about the same order at the same moment.

use weapp::pay::{PayErrorCode, PayTime, TradeState};

use super::refunds;
use super::service::Payments;
use super::settle;
use crate::store::{PayOrderRecord, PayRefundRecord, StoreError};

/// How long an order without `time_expire` stays payable here: a prepay's validity.
pub const DEFAULT_EXPIRY_MS: i64 = 2 * 3600 * 1000;

/// How many due orders (and refunds) one pass takes.
const BATCH: i64 = 50;

/// The wait before the next query, growing with the time since the order (or refund) was
/// made: 1, 2, 5, 10, 30 minutes, then hourly.
fn backoff_ms(age_ms: i64) -> i64 {
    const MIN: i64 = 60_000;
    match age_ms {
        a if a < 5 * MIN => MIN,
        a if a < 10 * MIN => 2 * MIN,
        a if a < 20 * MIN => 5 * MIN,
        a if a < 45 * MIN => 10 * MIN,
        a if a < 120 * MIN => 30 * MIN,
        _ => 60 * MIN,
    }
}

/// When an order stops being payable (Unix ms).
pub fn expiry_ms(o: &PayOrderRecord) -> i64 {
    o.time_expire
        .as_deref()
        .and_then(|t| t.parse::<PayTime>().ok())
        .map_or(o.created_at + DEFAULT_EXPIRY_MS, |t| {
            t.unix().saturating_mul(1000)
        })
}

/// One pass: every due order and refund claimed and queried. Returns how many were queried.
///
/// # Errors
/// The database failed listing what is due.
pub async fn tick(p: &Payments) -> Result<usize, StoreError> {
    let now = p.now();
    let mut queried = 0;
    for o in p.store.due_pay_orders(now, BATCH).await? {
        match order(p, &o, now).await {
            Ok(true) => queried += 1,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(mchid = %o.mchid, out_trade_no = %o.out_trade_no, error = %e, "order query failed; next time")
            }
        }
    }
    for r in p.store.due_pay_refunds(now, BATCH).await? {
        match refund(p, &r, now).await {
            Ok(true) => queried += 1,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(mchid = %r.mchid, out_refund_no = %r.out_refund_no, error = %e, "refund query failed; next time")
            }
        }
    }
    Ok(queried)
}

/// Claims and queries one due order; whether this instance did.
async fn order(p: &Payments, o: &PayOrderRecord, now: i64) -> Result<bool, settle::QueryError> {
    let (Some(m), Some(seen)) = (p.merchant(&o.mchid), o.next_query_at) else {
        return Ok(false);
    };
    let expiry = expiry_ms(o);
    let expired = now >= expiry;
    let next = if expired {
        now + 60_000
    } else {
        (now + backoff_ms(now - o.created_at)).min(expiry)
    };
    if !p
        .store
        .claim_pay_order_query(&o.mchid, &o.out_trade_no, seen, next)
        .await?
    {
        return Ok(false);
    }
    let state = match settle::query_order(p, &m, o).await {
        Ok(s) => Some(s),
        // The prepay never reached WeChat (a PENDING order): nothing to pay there.
        Err(settle::QueryError::Pay(e)) if e.code() == Some(&PayErrorCode::OrderNotExist) => None,
        Err(e) => return Err(e),
    };
    match state {
        Some(TradeState::Success | TradeState::Refund) => {}
        Some(TradeState::Closed | TradeState::Revoked | TradeState::PayError) => {
            let closed = p
                .store
                .close_pay_order(&o.mchid, &o.out_trade_no, now)
                .await?;
            tracing::info!(mchid = %o.mchid, out_trade_no = %o.out_trade_no, closed, "order closed at WeChat: closed here");
        }
        _ if expired => {
            // Unpaid at its expiry: closed at WeChat first (a payment there after this fails),
            // then here. A close WeChat refuses (just paid) leaves the order to the next query.
            m.client.close(&o.out_trade_no).await?;
            if p.store
                .close_pay_order(&o.mchid, &o.out_trade_no, now)
                .await?
            {
                tracing::info!(mchid = %o.mchid, out_trade_no = %o.out_trade_no, "unpaid order expired: closed at WeChat and here");
            }
        }
        _ => {}
    }
    Ok(true)
}

/// Claims and queries one due refund; whether this instance did.
async fn refund(p: &Payments, r: &PayRefundRecord, now: i64) -> Result<bool, settle::QueryError> {
    let (Some(m), Some(seen)) = (p.merchant(&r.mchid), r.next_query_at) else {
        return Ok(false);
    };
    let next = now + backoff_ms(now - r.created_at);
    if !p
        .store
        .claim_pay_refund_query(&r.mchid, &r.out_refund_no, seen, next)
        .await?
    {
        return Ok(false);
    }
    match m.client.query_refund(&r.out_refund_no).await {
        Ok(answer) => {
            refunds::record_answer(p, r, &answer).await?;
        }
        // A PENDING refund WeChat never received (the service died, or its answer was lost,
        // and the backend did not ask again): asked now, under the same number.
        Err(e) if r.status == "PENDING" && e.code() == Some(&PayErrorCode::ResourceNotExists) => {
            let Some(o) = p.store.pay_order(&r.mchid, &r.out_trade_no).await? else {
                return Ok(true);
            };
            if let Err(e) = refunds::submit(p, &m, r, o.amount).await {
                tracing::warn!(mchid = %r.mchid, out_refund_no = %r.out_refund_no, error = %e, "a pending refund asked again: no answer yet");
            }
        }
        Err(e) => return Err(e.into()),
    }
    Ok(true)
}
