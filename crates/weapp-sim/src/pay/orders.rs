//! JSAPI orders: prepay (ids valid 2 h, a repeat answering the same id, a number reused with
//! other parameters refused, `time_expire`), the queries, close, and what `wx.requestPayment`
//! does on the phone (check `paySign`, pay, cancel or fail; notify on payment).

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{json, Value};

use super::keys;
use super::notify;
use super::time::{compact, parse_rfc3339};
use super::views;
use crate::error::{PayError, PayResult};
use crate::journal::Event;
use crate::random::random_hex;
use crate::state::pay::{Order, TradeState};
use crate::world::{Sim, World};

/// How long a prepay_id can be paid with (production: 2 hours).
pub const PREPAY_TTL_SECS: i64 = 2 * 3600;

/// An unpaid order without `time_expire` closes after this long (production: 7 days).
pub const DEFAULT_EXPIRY_SECS: i64 = 7 * 86_400;

/// `time_expire` must be at least this far ahead.
pub const MIN_EXPIRY_SECS: i64 = 60;

/// `time_expire` may be at most this far ahead (the 2025 merchant doc: 90 days).
pub const MAX_EXPIRY_SECS: i64 = 90 * 86_400;

fn order_not_exist() -> PayError {
    PayError::new(404, "ORDER_NOT_EXIST", "订单不存在")
}

/// Closes an unpaid order whose `time_expire` passed.
pub(crate) fn expire(o: &mut Order, now: i64) {
    if o.state == TradeState::Notpay && now >= o.time_expire_ms {
        o.state = TradeState::Closed;
        o.closed_ms = Some(o.time_expire_ms);
    }
}

fn out_trade_no_ok(s: &str) -> bool {
    (6..=32).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-|*".contains(&b))
}

fn str_field<'a>(body: &'a Value, pointer: &str, max_chars: usize) -> PayResult<&'a str> {
    let v = body
        .pointer(pointer)
        .ok_or_else(|| PayError::param(pointer, "body", format!("{pointer} is required")))?;
    let s = v
        .as_str()
        .ok_or_else(|| PayError::param(pointer, "body", format!("{pointer} must be a string")))?;
    if s.is_empty() || s.chars().count() > max_chars {
        return Err(PayError::param(
            pointer,
            "body",
            format!("{pointer} must be 1-{max_chars} characters"),
        ));
    }
    Ok(s)
}

fn opt_str<'a>(body: &'a Value, pointer: &str, max_chars: usize) -> PayResult<Option<&'a str>> {
    match body.pointer(pointer) {
        None | Some(Value::Null) => Ok(None),
        Some(_) => str_field(body, pointer, max_chars).map(Some),
    }
}

/// A notify_url as production accepts it (http allowed: receivers here are local).
pub(crate) fn check_notify_url(
    body: &Value,
    pointer: &str,
    required: bool,
) -> PayResult<Option<String>> {
    let url = if required {
        Some(str_field(body, pointer, 255)?)
    } else {
        opt_str(body, pointer, 255)?
    };
    match url {
        Some(u) if !(u.starts_with("https://") || u.starts_with("http://")) || u.contains('?') => {
            Err(PayError::param(
                pointer,
                "body",
                "notify_url must be an http(s) URL without a query string",
            ))
        }
        other => Ok(other.map(str::to_owned)),
    }
}

/// The caller's mchid must be the one in the body or query.
pub(crate) fn same_mchid(caller: &str, given: Option<&str>, location: &str) -> PayResult<()> {
    match given {
        None | Some("") => Err(PayError::param("mchid", location, "mchid is required")),
        Some(m) if m != caller => Err(PayError::new(400, "PARAM_ERROR", "商户号mchid与请求签名的商户号不一致")
            .with_detail(json!({"field": "mchid", "location": location, "issue": "mchid does not match the signer"}))),
        Some(_) => Ok(()),
    }
}

fn lookup<'w>(
    w: &'w mut World,
    mchid: &str,
    out_trade_no: &str,
    now: i64,
) -> PayResult<&'w mut Order> {
    let o = w
        .pay
        .orders
        .get_mut(&(mchid.to_owned(), out_trade_no.to_owned()))
        .ok_or_else(order_not_exist)?;
    expire(o, now);
    Ok(o)
}

/// What `wx.requestPayment` receives (`POST /_sim/pay/request_payment`).
#[derive(Debug, Clone, Deserialize)]
pub struct RequestPayment {
    /// The mini program (signed as `appId`, not passed by the mini program itself).
    pub appid: String,
    /// The paying user.
    pub openid: String,
    /// Unix seconds, a string.
    #[serde(rename = "timeStamp")]
    pub time_stamp: Option<String>,
    /// ≤ 32 characters.
    #[serde(rename = "nonceStr")]
    pub nonce_str: Option<String>,
    /// `prepay_id=…`.
    pub package: Option<String>,
    /// `RSA`.
    #[serde(rename = "signType")]
    pub sign_type: Option<String>,
    /// Base64 SHA256withRSA over `appId\ntimeStamp\nnonceStr\npackage\n`.
    #[serde(rename = "paySign")]
    pub pay_sign: Option<String>,
    /// What the user does: `pay` (default), `cancel`, or `fail` (the payment fails: PAYERROR).
    pub action: Option<String>,
}

impl Sim {
    /// `POST /v3/pay/transactions/jsapi` for merchant `mchid`: `{"prepay_id"}`.
    ///
    /// # Errors
    /// `PARAM_ERROR`, `APPID_MCHID_NOT_MATCH`, `OUT_TRADE_NO_USED` (the number with other
    /// parameters), `ORDER_CLOSED`, `ORDERPAID`.
    pub(crate) fn pay_prepay(&self, mchid: &str, body: &Value) -> PayResult<Value> {
        let appid = str_field(body, "/appid", 32)?;
        same_mchid(mchid, body.get("mchid").and_then(Value::as_str), "body")?;
        let description = str_field(body, "/description", 127)?;
        let out_trade_no = str_field(body, "/out_trade_no", 32)?;
        if !out_trade_no_ok(out_trade_no) {
            return Err(PayError::param(
                "/out_trade_no",
                "body",
                "6-32 characters of 0-9 A-Z a-z _ - | *",
            ));
        }
        let attach = opt_str(body, "/attach", 128)?;
        let notify_url = check_notify_url(body, "/notify_url", true)?.unwrap_or_default();
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
        if total < 1 {
            return Err(PayError::param(
                "/amount/total",
                "body",
                "amount.total must be at least 1",
            ));
        }
        let currency = opt_str(body, "/amount/currency", 16)?.unwrap_or("CNY");
        if currency != "CNY" {
            return Err(PayError::param(
                "/amount/currency",
                "body",
                "Currency code is invalid",
            ));
        }
        let openid = str_field(body, "/payer/openid", 128)?;
        let mut guard = self.world();
        let w: &mut World = &mut guard;
        let now = self.now_in(w);
        let time_expire = match opt_str(body, "/time_expire", 64)? {
            None => None,
            Some(t) => Some(parse_rfc3339(t).ok_or_else(|| {
                PayError::param(
                    "/time_expire",
                    "body",
                    "time_expire must be RFC 3339 (yyyy-MM-DDTHH:mm:ss+08:00)",
                )
            })?),
        };
        let m = w
            .pay
            .merchants
            .get(mchid)
            .ok_or_else(|| PayError::new(400, "MCH_NOT_EXISTS", "商户号不存在"))?;
        if m.appids
            .as_ref()
            .is_some_and(|ids| !ids.iter().any(|a| a == appid))
        {
            return Err(PayError::new(
                400,
                "APPID_MCHID_NOT_MATCH",
                "appid和mch_id不匹配",
            ));
        }
        let key = (mchid.to_owned(), out_trade_no.to_owned());
        if let Some(o) = w.pay.orders.get_mut(&key) {
            expire(o, now);
            if o.request != *body {
                return Err(PayError::new(403, "OUT_TRADE_NO_USED", "商户订单号重复"));
            }
            match o.state {
                TradeState::Closed => return Err(PayError::new(400, "ORDER_CLOSED", "订单已关闭")),
                TradeState::Success | TradeState::Refund => {
                    return Err(PayError::new(400, "ORDERPAID", "该订单已支付"))
                }
                TradeState::Notpay | TradeState::Payerror => {}
            }
            if now < o.prepay_issued_ms + PREPAY_TTL_SECS * 1000 {
                return Ok(json!({"prepay_id": o.prepay_id}));
            }
            // The prepay_id lapsed (2 h) but the order did not: a new id for the same order.
            let prepay_id = format!("wx{}{}", compact(now), random_hex(10));
            o.prepay_id = prepay_id.clone();
            o.prepay_issued_ms = now;
            w.pay.prepay_ids.insert(prepay_id.clone(), key);
            return Ok(json!({"prepay_id": prepay_id}));
        }
        // A new order: its time_expire (fixed from now on) must be 1 minute to 90 days ahead.
        let time_expire_ms = match time_expire {
            None => now + DEFAULT_EXPIRY_SECS * 1000,
            Some(ms) if ms < now + MIN_EXPIRY_SECS * 1000 => {
                return Err(PayError::param(
                    "/time_expire",
                    "body",
                    "time_expire must be at least 1 minute ahead",
                ))
            }
            Some(ms) if ms > now + MAX_EXPIRY_SECS * 1000 => {
                return Err(PayError::param(
                    "/time_expire",
                    "body",
                    "time_expire must be within 90 days",
                ))
            }
            Some(ms) => ms,
        };
        let prepay_id = format!("wx{}{}", compact(now), random_hex(10));
        let order = Order {
            mchid: mchid.to_owned(),
            appid: appid.to_owned(),
            out_trade_no: out_trade_no.to_owned(),
            description: description.to_owned(),
            attach: attach.map(str::to_owned),
            notify_url,
            total,
            currency: currency.to_owned(),
            openid: openid.to_owned(),
            request: body.clone(),
            time_expire_ms,
            prepay_id: prepay_id.clone(),
            prepay_issued_ms: now,
            created_ms: now,
            state: TradeState::Notpay,
            transaction_id: None,
            success_ms: None,
            closed_ms: None,
            refunds: 0,
            refunded: 0,
        };
        w.pay.prepay_ids.insert(prepay_id.clone(), key.clone());
        w.pay.orders.insert(key, order);
        Ok(json!({"prepay_id": prepay_id}))
    }

    /// Query by `out_trade_no`.
    ///
    /// # Errors
    /// `PARAM_ERROR` (mchid), `ORDER_NOT_EXIST`.
    pub(crate) fn pay_query(
        &self,
        mchid: &str,
        query: &HashMap<String, String>,
        out_trade_no: &str,
    ) -> PayResult<Value> {
        same_mchid(mchid, query.get("mchid").map(String::as_str), "query")?;
        let mut w = self.world();
        let now = self.now_in(&w);
        Ok(views::transaction(lookup(
            &mut w,
            mchid,
            out_trade_no,
            now,
        )?))
    }

    /// Query by `transaction_id` (paid orders only have one).
    ///
    /// # Errors
    /// `PARAM_ERROR` (mchid), `ORDER_NOT_EXIST`.
    pub(crate) fn pay_query_by_id(
        &self,
        mchid: &str,
        query: &HashMap<String, String>,
        transaction_id: &str,
    ) -> PayResult<Value> {
        same_mchid(mchid, query.get("mchid").map(String::as_str), "query")?;
        let mut w = self.world();
        let now = self.now_in(&w);
        let (owner, no) = w
            .pay
            .transactions
            .get(transaction_id)
            .cloned()
            .ok_or_else(order_not_exist)?;
        if owner != mchid {
            return Err(order_not_exist());
        }
        Ok(views::transaction(lookup(&mut w, mchid, &no, now)?))
    }

    /// Close: 204 for an unpaid, an already closed or (as production) an unknown order.
    ///
    /// # Errors
    /// `PARAM_ERROR` (mchid), `ORDERPAID` for a paid order.
    pub(crate) fn pay_close(&self, mchid: &str, out_trade_no: &str, body: &Value) -> PayResult<()> {
        same_mchid(mchid, body.get("mchid").and_then(Value::as_str), "body")?;
        let mut w = self.world();
        let now = self.now_in(&w);
        let Ok(o) = lookup(&mut w, mchid, out_trade_no, now) else {
            return Ok(());
        };
        match o.state {
            TradeState::Success | TradeState::Refund => {
                Err(PayError::new(400, "ORDERPAID", "订单已支付"))
            }
            TradeState::Closed => Ok(()),
            TradeState::Notpay | TradeState::Payerror => {
                o.state = TradeState::Closed;
                o.closed_ms = Some(now);
                Ok(())
            }
        }
    }

    /// What `wx.requestPayment` does: checks the five parameters and `paySign` with the
    /// merchant's public key, then pays (the order becomes SUCCESS and its notification is
    /// queued), cancels, or fails the payment. Returns the `errMsg` the mini program receives.
    pub fn request_payment(&self, req: &RequestPayment) -> String {
        let fail = |m: &str| format!("requestPayment:fail {m}");
        let missing = |name: &str| {
            fail(&format!(
                "parameter error: parameter.{name} should be String instead of Undefined;"
            ))
        };
        let (Some(ts), Some(nonce), Some(package), Some(sign_type), Some(pay_sign)) = (
            req.time_stamp.as_deref(),
            req.nonce_str.as_deref(),
            req.package.as_deref(),
            req.sign_type.as_deref(),
            req.pay_sign.as_deref(),
        ) else {
            let name = [
                ("timeStamp", req.time_stamp.is_none()),
                ("nonceStr", req.nonce_str.is_none()),
                ("package", req.package.is_none()),
                ("signType", req.sign_type.is_none()),
                ("paySign", req.pay_sign.is_none()),
            ]
            .iter()
            .find(|(_, m)| *m)
            .map_or("paySign", |(n, _)| n);
            return missing(name);
        };
        let action = req.action.as_deref().unwrap_or("pay");
        if !matches!(action, "pay" | "cancel" | "fail") {
            return fail("action must be pay, cancel or fail");
        }
        if sign_type != "RSA" {
            return fail("支付验证签名失败 (signType must be RSA for APIv3)");
        }
        if ts.is_empty()
            || ts.len() > 10
            || !ts.bytes().all(|b| b.is_ascii_digit())
            || nonce.is_empty()
            || nonce.len() > 32
        {
            return fail("调用支付JSAPI缺少参数：timeStamp或nonceStr格式错误");
        }
        let Some(prepay_id) = package.strip_prefix("prepay_id=") else {
            return fail("package格式错误，应为prepay_id=***");
        };
        let mut guard = self.world();
        let now = self.now_in(&guard);
        let Some(key) = guard.pay.prepay_ids.get(prepay_id).cloned() else {
            return fail("prepay_id无效");
        };
        let w: &mut World = &mut guard;
        let Some(merchant_key) = w.pay.merchants.get(&key.0).map(|m| m.public_key.clone()) else {
            return fail("商户号不存在");
        };
        let Some(o) = w.pay.orders.get_mut(&key) else {
            return fail("prepay_id无效");
        };
        expire(o, now);
        let message = format!("{}\n{ts}\n{nonce}\n{package}\n", req.appid);
        if o.appid != req.appid || !keys::verify(&merchant_key, message.as_bytes(), pay_sign) {
            return fail("支付验证签名失败");
        }
        if o.prepay_id != prepay_id || now >= o.prepay_issued_ms + PREPAY_TTL_SECS * 1000 {
            return fail("prepay_id已失效，请重新下单");
        }
        match o.state {
            TradeState::Closed => return fail("订单已关闭"),
            TradeState::Success | TradeState::Refund => return fail("该订单已支付"),
            TradeState::Notpay | TradeState::Payerror => {}
        }
        if o.openid != req.openid {
            return fail("支付用户与下单用户不一致");
        }
        let (errmsg, paid) = match action {
            "cancel" => ("requestPayment:fail cancel".to_owned(), false),
            "fail" => {
                o.state = TradeState::Payerror;
                (fail("支付失败"), false)
            }
            _ => {
                let transaction_id = format!(
                    "4200{:04}{}{:012}",
                    rand::random::<u16>() % 10_000,
                    &compact(now)[..8],
                    rand::random::<u64>() % 1_000_000_000_000
                );
                o.state = TradeState::Success;
                o.success_ms = Some(now);
                o.transaction_id = Some(transaction_id.clone());
                w.pay.transactions.insert(transaction_id, key.clone());
                ("requestPayment:ok".to_owned(), true)
            }
        };
        let o = w.pay.orders.get(&key).cloned().expect("looked up above");
        if paid {
            notify::enqueue(
                w,
                now,
                &o.mchid,
                "TRANSACTION.SUCCESS",
                "支付成功",
                &o.out_trade_no,
                &o.notify_url,
                "transaction",
                views::transaction(&o),
            );
        }
        drop(guard);
        self.record_at(
            now,
            Event::new("pay_request_payment")
                .appid(&req.appid)
                .openid(&req.openid)
                .detail(json!({
                    "mchid": o.mchid,
                    "out_trade_no": o.out_trade_no,
                    "action": action,
                    "errMsg": errmsg,
                    "trade_state": o.state.as_str(),
                })),
        );
        errmsg
    }

    /// What the phone's payment sheet shows about a `prepay_id` (also given as the `package`,
    /// `prepay_id=…`): `{prepay_id, current, mchid, merchant_name, appid, out_trade_no,
    /// description, total, currency, payer_openid, trade_state, prepay_expires}` (`current`:
    /// the order's latest prepay_id, not one it replaced; `prepay_expires` in simulator ms).
    /// `None` for a prepay_id the simulator never issued.
    pub fn pay_prepay_view(&self, prepay_id: &str) -> Option<Value> {
        let prepay_id = prepay_id.strip_prefix("prepay_id=").unwrap_or(prepay_id);
        let mut guard = self.world();
        let now = self.now_in(&guard);
        let w: &mut World = &mut guard;
        let key = w.pay.prepay_ids.get(prepay_id)?.clone();
        let name = w.pay.merchants.get(&key.0).and_then(|m| m.name.clone());
        let o = w.pay.orders.get_mut(&key)?;
        expire(o, now);
        Some(json!({
            "prepay_id": prepay_id,
            "current": o.prepay_id == prepay_id,
            "mchid": o.mchid,
            "merchant_name": name,
            "appid": o.appid,
            "out_trade_no": o.out_trade_no,
            "description": o.description,
            "total": o.total,
            "currency": o.currency,
            "payer_openid": o.openid,
            "trade_state": o.state.as_str(),
            "prepay_expires": o.prepay_issued_ms + PREPAY_TTL_SECS * 1000,
        }))
    }

    /// The orders of a merchant with their states, newest first.
    pub fn pay_orders(&self, mchid: &str) -> Vec<Value> {
        let mut w = self.world();
        let now = self.now_in(&w);
        let mut orders: Vec<&mut Order> = w
            .pay
            .orders
            .values_mut()
            .filter(|o| o.mchid == mchid)
            .collect();
        orders.sort_by_key(|o| std::cmp::Reverse(o.created_ms));
        orders
            .into_iter()
            .map(|o| {
                expire(o, now);
                json!({
                    "out_trade_no": o.out_trade_no,
                    "appid": o.appid,
                    "openid": o.openid,
                    "description": o.description,
                    "total": o.total,
                    "trade_state": o.state.as_str(),
                    "prepay_id": o.prepay_id,
                    "prepay_expires": o.prepay_issued_ms + PREPAY_TTL_SECS * 1000,
                    "time_expire": o.time_expire_ms,
                    "transaction_id": o.transaction_id,
                    "success_time": o.success_ms,
                    "refunded": o.refunded,
                    "refunds": o.refunds,
                    "notify_url": o.notify_url,
                    "created": o.created_ms,
                })
            })
            .collect()
    }
}
