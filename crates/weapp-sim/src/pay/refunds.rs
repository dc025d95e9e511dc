//! Refunds: accepted as PROCESSING and ended SUCCESS after [`REFUND_DELAY_SECS`] of the
//! simulator's clock (or SUCCESS, ABNORMAL or CLOSED on demand), at most 50 per order, never
//! above what is left, `out_refund_no` idempotent, `NOT_ENOUGH` when the merchant's balance
//! cannot cover one; a `REFUND.*` notification when one ends, if the request had a
//! `notify_url`.

use serde_json::{json, Value};

use super::notify;
use super::orders::check_notify_url;
use super::views;
use crate::error::{PayError, PayResult};
use crate::journal::Event;
use crate::state::pay::{Refund, RefundStatus, TradeState};
use crate::world::{Sim, World};

/// How long a refund stays PROCESSING before it succeeds by itself (simulator seconds).
pub const REFUND_DELAY_SECS: i64 = 60;

/// At most this many refunds per order.
pub const MAX_REFUNDS_PER_ORDER: u32 = 50;

/// Refunds are accepted within this long of the payment (production: one year).
pub const REFUND_WINDOW_SECS: i64 = 365 * 86_400;

fn out_refund_no_ok(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-|*@".contains(&b))
}

/// The parts of a refund request that must match for a repeat to be the same refund.
fn fingerprint(body: &Value) -> Value {
    json!({
        "transaction_id": body.get("transaction_id"),
        "out_trade_no": body.get("out_trade_no"),
        "refund": body.pointer("/amount/refund"),
        "total": body.pointer("/amount/total"),
    })
}

/// Ends a refund: sets its status, gives the money back to the order (CLOSED) and queues the
/// notification when the request named a `notify_url`.
fn finish(w: &mut World, now: i64, key: &(String, String), status: RefundStatus) {
    let Some(r) = w.pay.refunds.get_mut(key) else {
        return;
    };
    if r.status != RefundStatus::Processing {
        return;
    }
    r.status = status;
    if status == RefundStatus::Success {
        r.success_ms = Some(now);
    }
    let r = r.clone();
    if status == RefundStatus::Closed {
        if let Some(o) = w
            .pay
            .orders
            .get_mut(&(r.mchid.clone(), r.out_trade_no.clone()))
        {
            o.refunded -= r.refund;
        }
        if let Some(b) = w
            .pay
            .merchants
            .get_mut(&r.mchid)
            .and_then(|m| m.balance.as_mut())
        {
            *b += r.refund;
        }
    }
    if let Some(url) = &r.notify_url {
        let (event, summary) = match status {
            RefundStatus::Success => ("REFUND.SUCCESS", "退款成功"),
            RefundStatus::Abnormal => ("REFUND.ABNORMAL", "退款异常"),
            _ => ("REFUND.CLOSED", "退款关闭"),
        };
        notify::enqueue(
            w,
            now,
            &r.mchid,
            event,
            summary,
            &r.out_refund_no,
            url,
            "refund",
            views::refund_notice(&r),
        );
    }
}

/// Ends every PROCESSING refund whose time has come (SUCCESS).
pub(crate) fn settle_due(sim: &Sim) {
    let mut guard = sim.world();
    let now = sim.now_in(&guard);
    let w: &mut World = &mut guard;
    let due: Vec<(String, String)> = w
        .pay
        .refunds
        .iter()
        .filter(|(_, r)| r.status == RefundStatus::Processing && r.complete_at_ms <= now)
        .map(|(k, _)| k.clone())
        .collect();
    for key in due {
        finish(w, now, &key, RefundStatus::Success);
    }
}

impl Sim {
    /// `POST /v3/refund/domestic/refunds` for merchant `mchid`: the Refund, PROCESSING.
    ///
    /// # Errors
    /// `PARAM_ERROR`, `RESOURCE_NOT_EXISTS` (no such order), `INVALID_REQUEST` (unpaid order,
    /// the number reused with other parameters, over 50 refunds, more than is left),
    /// `NOT_ENOUGH` (the merchant's balance).
    pub(crate) fn pay_refund(&self, mchid: &str, body: &Value) -> PayResult<Value> {
        let out_refund_no = body
            .get("out_refund_no")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                PayError::param("/out_refund_no", "body", "out_refund_no is required")
            })?;
        if !out_refund_no_ok(out_refund_no) {
            return Err(PayError::param(
                "/out_refund_no",
                "body",
                "1-64 characters of 0-9 A-Z a-z _ - | * @",
            ));
        }
        let transaction_id = body.get("transaction_id").and_then(Value::as_str);
        let out_trade_no = body.get("out_trade_no").and_then(Value::as_str);
        if transaction_id.is_none() && out_trade_no.is_none() {
            return Err(PayError::param(
                "/out_trade_no",
                "body",
                "transaction_id or out_trade_no is required",
            ));
        }
        let refund = body
            .pointer("/amount/refund")
            .and_then(Value::as_i64)
            .ok_or_else(|| {
                PayError::param(
                    "/amount/refund",
                    "body",
                    "amount.refund must be an integer (fen)",
                )
            })?;
        let total = body
            .pointer("/amount/total")
            .and_then(Value::as_i64)
            .ok_or_else(|| {
                PayError::param(
                    "/amount/total",
                    "body",
                    "amount.total must be an integer (fen)",
                )
            })?;
        if refund < 1 {
            return Err(PayError::param(
                "/amount/refund",
                "body",
                "amount.refund must be at least 1",
            ));
        }
        match body.pointer("/amount/currency") {
            None | Some(Value::Null) => {}
            Some(c) if c == "CNY" => {}
            Some(_) => {
                return Err(PayError::param(
                    "/amount/currency",
                    "body",
                    "Currency code is invalid",
                ))
            }
        }
        let reason = match body.get("reason") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.chars().count() <= 80 => Some(s.clone()),
            Some(_) => {
                return Err(PayError::param(
                    "/reason",
                    "body",
                    "reason must be at most 80 characters",
                ))
            }
        };
        let notify_url = check_notify_url(body, "/notify_url", false)?;
        let funds_account = match body.get("funds_account").and_then(Value::as_str) {
            None => "AVAILABLE",
            Some(a @ ("AVAILABLE" | "UNSETTLED")) => a,
            Some(_) => {
                return Err(PayError::param(
                    "/funds_account",
                    "body",
                    "funds_account must be AVAILABLE or UNSETTLED",
                ))
            }
        };
        let mut guard = self.world();
        let now = self.now_in(&guard);
        let w: &mut World = &mut guard;
        let rkey = (mchid.to_owned(), out_refund_no.to_owned());
        if let Some(existing) = w.pay.refunds.get(&rkey) {
            if fingerprint(&existing.request) == fingerprint(body) {
                return Ok(views::refund(existing));
            }
            return Err(PayError::invalid(
                "商户退款单号已被使用，且退款参数与原退款单不一致",
            ));
        }
        let no = match (transaction_id, out_trade_no) {
            (Some(t), _) => w
                .pay
                .transactions
                .get(t)
                .filter(|(m, _)| m == mchid)
                .map(|(_, no)| no.clone()),
            (None, Some(no)) => Some(no.to_owned()),
            (None, None) => None,
        }
        .ok_or_else(|| PayError::new(404, "RESOURCE_NOT_EXISTS", "订单不存在"))?;
        let okey = (mchid.to_owned(), no);
        let o = w
            .pay
            .orders
            .get_mut(&okey)
            .ok_or_else(|| PayError::new(404, "RESOURCE_NOT_EXISTS", "订单不存在"))?;
        super::orders::expire(o, now);
        if !matches!(o.state, TradeState::Success | TradeState::Refund) {
            return Err(PayError::invalid("订单未支付，不能退款"));
        }
        if out_trade_no.is_some_and(|n| n != o.out_trade_no) {
            return Err(PayError::invalid(
                "transaction_id与out_trade_no不是同一笔订单",
            ));
        }
        if o.success_ms
            .is_some_and(|t| now > t + REFUND_WINDOW_SECS * 1000)
        {
            return Err(PayError::invalid("订单已超过退款期限"));
        }
        if total != o.total {
            return Err(PayError::param(
                "/amount/total",
                "body",
                "amount.total does not match the order's total",
            ));
        }
        if o.refunds >= MAX_REFUNDS_PER_ORDER {
            return Err(PayError::invalid("该订单退款次数已超过50次，不能再退款"));
        }
        if refund > o.total - o.refunded {
            return Err(PayError::invalid("申请退款金额超过订单可退金额"));
        }
        let balance = w.pay.merchants.get(mchid).and_then(|m| m.balance);
        if funds_account == "AVAILABLE" && balance.is_some_and(|b| b < refund) {
            return Err(PayError::new(
                403,
                "NOT_ENOUGH",
                "基本账户余额不足，请充值后重新发起",
            ));
        }
        let o = w.pay.orders.get_mut(&okey).expect("looked up above");
        o.refunds += 1;
        o.refunded += refund;
        o.state = TradeState::Refund;
        let r = Refund {
            mchid: mchid.to_owned(),
            out_refund_no: out_refund_no.to_owned(),
            refund_id: format!(
                "5030{:013}{:012}",
                rand::random::<u64>() % 10_000_000_000_000,
                rand::random::<u64>() % 1_000_000_000_000
            ),
            out_trade_no: o.out_trade_no.clone(),
            transaction_id: o.transaction_id.clone().unwrap_or_default(),
            refund,
            total,
            reason,
            notify_url,
            funds_account: funds_account.to_owned(),
            request: body.clone(),
            status: RefundStatus::Processing,
            created_ms: now,
            success_ms: None,
            complete_at_ms: now + REFUND_DELAY_SECS * 1000,
        };
        if funds_account == "AVAILABLE" {
            if let Some(b) = w
                .pay
                .merchants
                .get_mut(mchid)
                .and_then(|m| m.balance.as_mut())
            {
                *b -= refund;
            }
        }
        let view = views::refund(&r);
        w.pay.refunds.insert(rkey, r);
        Ok(view)
    }

    /// `GET /v3/refund/domestic/refunds/{out_refund_no}` for merchant `mchid`.
    ///
    /// # Errors
    /// `RESOURCE_NOT_EXISTS`.
    pub(crate) fn pay_refund_query(&self, mchid: &str, out_refund_no: &str) -> PayResult<Value> {
        settle_due(self);
        let w = self.world();
        w.pay
            .refunds
            .get(&(mchid.to_owned(), out_refund_no.to_owned()))
            .map(views::refund)
            .ok_or_else(|| PayError::new(404, "RESOURCE_NOT_EXISTS", "退款单不存在"))
    }

    /// Ends a PROCESSING refund now with `status` (SUCCESS, ABNORMAL or CLOSED). `mchid` is
    /// needed only when two merchants used the same `out_refund_no`.
    ///
    /// # Errors
    /// 404 unknown refund; 400 ambiguous number or PROCESSING asked; 409 the refund already
    /// ended.
    pub fn end_refund(
        &self,
        mchid: Option<&str>,
        out_refund_no: &str,
        status: RefundStatus,
    ) -> PayResult<Value> {
        if status == RefundStatus::Processing {
            return Err(PayError::param(
                "status",
                "body",
                "status must be SUCCESS, ABNORMAL or CLOSED",
            ));
        }
        let mut guard = self.world();
        let now = self.now_in(&guard);
        let w: &mut World = &mut guard;
        let keys: Vec<(String, String)> = w
            .pay
            .refunds
            .keys()
            .filter(|(m, no)| no == out_refund_no && mchid.is_none_or(|x| x == m))
            .cloned()
            .collect();
        let key = match keys.as_slice() {
            [] => return Err(PayError::new(404, "RESOURCE_NOT_EXISTS", "退款单不存在")),
            [k] => k.clone(),
            _ => {
                return Err(PayError::param(
                    "mchid",
                    "body",
                    "two merchants have this out_refund_no: name the mchid",
                ))
            }
        };
        if w.pay.refunds[&key].status != RefundStatus::Processing {
            return Err(PayError::new(
                409,
                "INVALID_REQUEST",
                "the refund already ended",
            ));
        }
        finish(w, now, &key, status);
        let view = views::refund(&w.pay.refunds[&key]);
        drop(guard);
        self.record_at(
            now,
            Event::new("pay_refund_ended")
                .detail(json!({"mchid": key.0, "out_refund_no": key.1, "status": status})),
        );
        Ok(view)
    }

    /// The refunds of a merchant, newest first.
    pub fn pay_refunds(&self, mchid: &str) -> Vec<Value> {
        settle_due(self);
        let w = self.world();
        let mut refunds: Vec<&Refund> = w
            .pay
            .refunds
            .values()
            .filter(|r| r.mchid == mchid)
            .collect();
        refunds.sort_by_key(|r| std::cmp::Reverse(r.created_ms));
        refunds
            .into_iter()
            .map(|r| {
                let mut v = views::refund(r);
                v["reason"] = json!(r.reason);
                v["notify_url"] = json!(r.notify_url);
                v["completes_at"] =
                    json!((r.status == RefundStatus::Processing).then_some(r.complete_at_ms));
                v
            })
            .collect()
    }
}
