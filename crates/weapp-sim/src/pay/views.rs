//! The resources as WeChat Pay writes them: a Transaction (the query answer and the decrypted
//! `TRANSACTION.SUCCESS` resource) and a Refund (the refund answers), plus the refund
//! notification's resource (wechat-pay.md §2.8).

use serde_json::{json, Value};

use super::time::rfc3339;
use crate::state::pay::{Order, Refund, TradeState};

/// A Transaction (query by `out_trade_no` or `transaction_id`, `TRANSACTION.SUCCESS`).
pub(crate) fn transaction(o: &Order) -> Value {
    let paid = matches!(o.state, TradeState::Success | TradeState::Refund);
    let mut v = json!({
        "appid": o.appid,
        "mchid": o.mchid,
        "out_trade_no": o.out_trade_no,
        "trade_state": o.state.as_str(),
        "trade_state_desc": o.state.desc(),
        "amount": {"total": o.total, "currency": o.currency, "payer_currency": o.currency},
        "promotion_detail": [],
    });
    if paid || o.state == TradeState::Payerror {
        v["payer"] = json!({"openid": o.openid});
        v["trade_type"] = json!("JSAPI");
        v["bank_type"] = json!("OTHERS");
    }
    if paid {
        v["transaction_id"] = json!(o.transaction_id);
        v["success_time"] = json!(o.success_ms.map(rfc3339));
        v["amount"]["payer_total"] = json!(o.total);
        v["attach"] = json!(o.attach.clone().unwrap_or_default());
    }
    v
}

/// A Refund (create and query answers).
pub(crate) fn refund(r: &Refund) -> Value {
    let mut v = json!({
        "refund_id": r.refund_id,
        "out_refund_no": r.out_refund_no,
        "transaction_id": r.transaction_id,
        "out_trade_no": r.out_trade_no,
        "channel": "ORIGINAL",
        "user_received_account": "支付用户零钱",
        "create_time": rfc3339(r.created_ms),
        "status": r.status.as_str(),
        "funds_account": r.funds_account,
        "amount": {
            "total": r.total,
            "refund": r.refund,
            "from": [],
            "payer_total": r.total,
            "payer_refund": r.refund,
            "settlement_refund": r.refund,
            "settlement_total": r.total,
            "discount_refund": 0,
            "currency": "CNY",
            "refund_fee": 0,
        },
        "promotion_detail": [],
    });
    if let Some(ms) = r.success_ms {
        v["success_time"] = json!(rfc3339(ms));
    }
    v
}

/// The resource of a `REFUND.*` notification.
pub(crate) fn refund_notice(r: &Refund) -> Value {
    let mut v = json!({
        "mchid": r.mchid,
        "out_trade_no": r.out_trade_no,
        "transaction_id": r.transaction_id,
        "out_refund_no": r.out_refund_no,
        "refund_id": r.refund_id,
        "refund_status": r.status.as_str(),
        "user_received_account": "支付用户零钱",
        "amount": {"total": r.total, "refund": r.refund, "payer_total": r.total, "payer_refund": r.refund},
    });
    if let Some(ms) = r.success_ms {
        v["success_time"] = json!(rfc3339(ms));
    }
    v
}
