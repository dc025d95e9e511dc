//! Refunds end to end against the simulator: idempotent by `out_refund_no`, never above what
//! is left (two instances racing included), each outcome (SUCCESS, ABNORMAL, CLOSED) one event
//! whether it comes by notification or by the refund query fallback, a refund before the
//! payment's notification, a refund made outside the service, and rows kept `deferred` by the
//! previous version re-applied by the sweep.

mod common;
#[path = "common/pay.rs"]
mod pay;

use std::time::Duration;

use common::sqlite_url;
use serde_json::{json, Value};
use weapp_server::ServerHandle;
use weapp_test_support::PgDatabase;

use pay::*;

fn refund_body(order: &str, no: &str, amount: i64) -> Value {
    json!({"out_trade_no": order, "out_refund_no": no, "amount": amount, "reason": "broken cup"})
}

/// A paid order of 1000 fen.
async fn paid(t: &T, s: &ServerHandle, no: &str) {
    let created = t.placed(s, no, 1000).await;
    t.pay(&created).await;
    t.wait_paid(s, no).await;
}

async fn refunds(t: &T, s: &ServerHandle, db: &str) {
    paid(t, s, "rf_0001").await;
    let (st, v) = t.refund(s, refund_body("rf_0001", "r_0001", 600)).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        v,
        json!({"out_refund_no": "r_0001", "status": "PROCESSING"})
    );
    // The same request: the same answer, no second refund.
    let (st, again) = t.refund(s, refund_body("rf_0001", "r_0001", 600)).await;
    assert_eq!((st, &again), (200, &v));
    // The same number with another amount: 409.
    let (st, conflict) = t.refund(s, refund_body("rf_0001", "r_0001", 601)).await;
    assert_eq!(st, 409, "{conflict}");
    assert_eq!(conflict["error"]["code"], "refund_conflict");
    // More than is left (400): refused, nothing stored.
    let (st, over) = t.refund(s, refund_body("rf_0001", "r_0002", 401)).await;
    assert_eq!(st, 409, "{over}");
    assert_eq!(over["error"]["code"], "refund_exceeds");
    let (st, _) =
        t.w.call(
            "GET",
            format!("{}/v1/apps/{}/pay/refunds/r_0002", s.url(), t.w.appid),
            Some(SHOP_KEY),
            None,
        )
        .await;
    assert_eq!(st, 404);
    // Bad input: 400, nothing changed.
    for bad in [
        refund_body("rf_0001", "r_0009", 0),
        refund_body("rf_0001", "bad no!", 1),
        json!({"out_trade_no": "rf_0001", "out_refund_no": "r_0009", "amount": 1, "extra": 1}),
    ] {
        let (st, v) = t.refund(s, bad).await;
        assert_eq!(st, 400, "{v}");
    }
    let (st, v) = t.refund(s, refund_body("nope_0001", "r_0009", 1)).await;
    assert_eq!(st, 404, "{v}");
    let (st, v) = t.refund(s, refund_body("rf_0001", "r_0002", 400)).await;
    assert_eq!(st, 200, "{v}");
    let r = t.get_refund(s, "r_0001").await;
    assert_eq!(r["amount"], 600);
    assert_eq!(r["out_trade_no"], "rf_0001");
    assert_eq!(r["status"], "PROCESSING");
    assert!(r["refund_id"].is_string(), "{r}");

    // SUCCESS by notification: one event, the order's refunded and state follow.
    t.end_refund("r_0001", "SUCCESS").await;
    let r = t.wait_refund(s, "r_0001", "SUCCESS").await;
    assert!(r["success_time"].is_string(), "{r}");
    let order = t.get_order(s, "rf_0001").await;
    assert_eq!(order["refunded"], 600);
    assert_eq!(order["state"], "REFUND");
    t.again("r_0001", "notify").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events = t.events(s, "REFUND.SUCCESS").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["payload"]["out_refund_no"], "r_0001");
    assert_eq!(events[0]["payload"]["refund_status"], "SUCCESS");
    assert_eq!(events[0]["payload"]["amount"]["refund"], 600);
    let rows = inbox(db, "r_0001").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].0.as_deref(), Some("applied"));

    // CLOSED: one event, the reservation released (400 can be refunded again).
    t.end_refund("r_0002", "CLOSED").await;
    t.wait_refund(s, "r_0002", "CLOSED").await;
    assert_eq!(t.events(s, "REFUND.CLOSED").await.len(), 1);
    assert_eq!(t.get_order(s, "rf_0001").await["refunded"], 600);
    let (st, v) = t.refund(s, refund_body("rf_0001", "r_0003", 400)).await;
    assert_eq!(st, 200, "{v}");
    // ABNORMAL: one event, the money stays reserved.
    t.end_refund("r_0003", "ABNORMAL").await;
    t.wait_refund(s, "r_0003", "ABNORMAL").await;
    assert_eq!(t.events(s, "REFUND.ABNORMAL").await.len(), 1);
    let (st, v) = t.refund(s, refund_body("rf_0001", "r_0004", 1)).await;
    assert_eq!(st, 409, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refunds_are_idempotent_bounded_and_each_outcome_is_one_event_on_sqlite() {
    let t = T::new().await;
    let db = sqlite_url();
    let s = t.spawn(&db).await;
    refunds(&t, &s, &db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refunds_are_idempotent_bounded_and_each_outcome_is_one_event_on_postgres() {
    let t = T::new().await;
    let db = PgDatabase::create().await;
    let s = t.spawn(db.url()).await;
    refunds(&t, &s, db.url()).await;
}

/// Ten refunds of 300 fen of a 1000-fen order, sent at once to two instances: three pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_racing_refunds_never_exceed_the_amount_on_postgres() {
    let t = T::new().await;
    let db = PgDatabase::create().await;
    let a = t.spawn(db.url()).await;
    let b = t.spawn(db.url()).await;
    paid(&t, &a, "race_0001").await;
    let calls: Vec<_> = (0..10)
        .map(|i| {
            let s = if i % 2 == 0 { &a } else { &b };
            let url = format!("{}/v1/apps/{}/pay/refunds", s.url(), t.w.appid);
            let body = refund_body("race_0001", &format!("rr_{i:02}"), 300);
            tokio::spawn(async move {
                let resp = reqwest::Client::new()
                    .post(url)
                    .bearer_auth(SHOP_KEY)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                let st = resp.status().as_u16();
                (st, resp.json::<Value>().await.unwrap())
            })
        })
        .collect();
    let mut answers = Vec::new();
    for c in calls {
        answers.push(c.await.unwrap());
    }
    let ok = answers.iter().filter(|(st, _)| *st == 200).count();
    assert_eq!(ok, 3, "{answers:?}");
    assert!(answers
        .iter()
        .all(|(st, v)| *st == 200 || v["error"]["code"] == "refund_exceeds"));
    let (s, v) =
        t.w.call(
            "GET",
            format!("{}/_sim/pay/merchants/{}/refunds", t.w.sim.url(), t.mchid()),
            None,
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["refunds"].as_array().unwrap().len(), 3, "{v}");
}

/// A refund's notification lost: the refund query fallback finds its outcome (one event);
/// the late notification adds nothing.
async fn refund_query(t: &T, s: &ServerHandle, db: &str) {
    paid(t, s, "rq_0001").await;
    let (st, v) = t.refund(s, refund_body("rq_0001", "rq_r1", 250)).await;
    assert_eq!(st, 200, "{v}");
    t.deliver(false).await;
    t.end_refund("rq_r1", "SUCCESS").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(t.get_refund(s, "rq_r1").await["status"], "PROCESSING");
    t.advance(61);
    t.wait_refund(s, "rq_r1", "SUCCESS").await;
    assert_eq!(t.get_order(s, "rq_0001").await["refunded"], 250);
    let events = t.events(s, "REFUND.SUCCESS").await;
    assert_eq!(events.len(), 1, "{events:?}");
    let payload = &events[0]["payload"];
    assert_eq!(payload["out_refund_no"], "rq_r1");
    assert_eq!(payload["out_trade_no"], "rq_0001");
    assert_eq!(payload["refund_status"], "SUCCESS");
    assert_eq!(payload["amount"]["refund"], 250);
    t.deliver(true).await;
    t.again("rq_r1", "notify").await;
    t.relay.wait_for(2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(inbox(db, "rq_r1").await[0].0.as_deref(), Some("no_change"));
    assert_eq!(t.events(s, "REFUND.SUCCESS").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_is_found_by_the_query_fallback_on_sqlite() {
    let t = T::new().await;
    let db = sqlite_url();
    let s = t.spawn(&db).await;
    refund_query(&t, &s, &db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_is_found_by_the_query_fallback_on_postgres() {
    let t = T::new().await;
    let db = PgDatabase::create().await;
    let s = t.spawn(db.url()).await;
    refund_query(&t, &s, db.url()).await;
}

/// The payment's notification lost, a refund asked at once: WeChat is asked about the order
/// first (paid: its one event), then the refund; its notification follows; the payment's late
/// notification adds nothing. Events in order: the payment, then the refund.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_before_the_payments_notification_pays_the_order_first() {
    let t = T::new().await;
    let db = sqlite_url();
    let s = t.spawn(&db).await;
    t.deliver(false).await;
    let created = t.placed(&s, "early_0001", 1000).await;
    t.pay(&created).await;
    assert_eq!(t.get_order(&s, "early_0001").await["state"], "NOTPAY");
    t.deliver(true).await;
    let (st, v) = t
        .refund(&s, refund_body("early_0001", "early_r1", 1000))
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(t.get_order(&s, "early_0001").await["state"], "SUCCESS");
    t.end_refund("early_r1", "SUCCESS").await;
    t.wait_refund(&s, "early_r1", "SUCCESS").await;
    t.again("early_0001", "notify").await;
    t.relay.wait_for(2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        inbox(&db, "early_0001").await[0].0.as_deref(),
        Some("no_change")
    );
    let (st, all) =
        t.w.call(
            "GET",
            format!("{}/v1/apps/{}/events?after=0", s.url(), t.w.appid),
            Some(common::KEY),
            None,
        )
        .await;
    assert_eq!(st, 200);
    let kinds: Vec<&str> = all["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["TRANSACTION.SUCCESS", "REFUND.SUCCESS"]);
}

/// A refund made outside the service (the merchant platform) whose notification comes before
/// the payment's: the order is queried at once and paid (its one event); the refund, unknown
/// here, is kept in the inbox (`unknown_refund`) and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_made_outside_before_the_payment_pays_the_order_and_is_kept() {
    let t = T::new().await;
    let db = sqlite_url();
    let s = t.spawn(&db).await;
    t.deliver(false).await;
    let created = t.placed(&s, "outside_0001", 1000).await;
    t.pay(&created).await;
    t.deliver(true).await;
    // The merchant platform: a refund asked of WeChat directly, with the merchant's keys.
    let config = t.config(&db);
    let m = &config.merchants[0];
    let keys = m.resolve_keys().unwrap();
    let mut builder = weapp::pay::PayClient::builder(keys.merchant, keys.apiv3_key)
        .base_url(t.w.sim.url().to_owned());
    if let Some((id, key)) = keys.public_key {
        builder = builder.wechatpay_public_key(id, key);
    }
    let client = builder.build().unwrap();
    let req = weapp::pay::RefundRequest::new(
        weapp::pay::OrderRef::OutTradeNo("outside_0001".into()),
        "outside_r1",
        weapp::pay::Fen::new(100),
        weapp::pay::Fen::new(1000),
    )
    .notify_url(m.notify_url.clone());
    client.refund(&req).await.unwrap();
    t.end_refund("outside_r1", "SUCCESS").await;
    t.wait_paid(&s, "outside_0001").await;
    t.relay.wait_for(1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        inbox(&db, "outside_r1").await[0].0.as_deref(),
        Some("unknown_refund")
    );
    assert_eq!(t.events(&s, "TRANSACTION.SUCCESS").await.len(), 1);
    assert!(t.events(&s, "REFUND.SUCCESS").await.is_empty());
    assert_eq!(t.get_order(&s, "outside_0001").await["refunded"], 0);
}

/// A refund notification the previous version kept `deferred` (it did not act on refunds) is
/// applied by the sweep: the refund changes once, one event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refund_notifications_kept_deferred_are_applied_by_the_sweep() {
    let t = T::new().await;
    let db = sqlite_url();
    let s = t.spawn(&db).await;
    paid(&t, &s, "old_0001").await;
    let (st, v) = t.refund(&s, refund_body("old_0001", "old_r1", 300)).await;
    assert_eq!(st, 200, "{v}");
    t.end_refund("old_r1", "SUCCESS").await;
    t.wait_refund(&s, "old_r1", "SUCCESS").await;
    // As the previous version left it: the notification stored `deferred`, nothing applied.
    for statement in [
        "UPDATE pay_refunds SET status = 'PROCESSING', success_time = NULL WHERE out_refund_no = $1",
        "UPDATE pay_notifications SET outcome = 'deferred', applied_at = 0 WHERE business_no = $1",
        "UPDATE pay_orders SET refunded = 0, state = 'SUCCESS' WHERE out_trade_no = 'old_0001' AND $1 <> ''",
        "DELETE FROM push_events WHERE kind = 'REFUND.SUCCESS' AND $1 <> ''",
    ] {
        run(&db, statement, "old_r1").await;
    }
    assert_eq!(t.get_refund(&s, "old_r1").await["status"], "PROCESSING");
    t.wait_refund(&s, "old_r1", "SUCCESS").await;
    assert_eq!(inbox(&db, "old_r1").await[0].0.as_deref(), Some("applied"));
    assert_eq!(t.get_order(&s, "old_0001").await["refunded"], 300);
    assert_eq!(t.events(&s, "REFUND.SUCCESS").await.len(), 1);
}
