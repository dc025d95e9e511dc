//! The query fallback (补单) end to end against the simulator: a payment whose notification
//! was lost is found by querying WeChat (one event; the late notification adds nothing), a
//! notification and a query racing on two instances make one event, an unpaid order is closed
//! at its expiry, a payment after a close here is an alert, a stale prepay is renewed, and the
//! payment routes are rate limited per client.

mod common;
#[path = "common/pay.rs"]
mod pay;

use std::time::Duration;

use common::sqlite_url;
use serde_json::json;
use weapp_server::ServerHandle;
use weapp_test_support::PgDatabase;

use pay::*;

/// Notifications off: the phone pays, nothing arrives; after `pay_query_after_secs` the
/// fallback finds the payment and makes the one event; delivery back on, the late
/// notification changes nothing (`no_change`).
async fn lost_notification(t: &T, s: &ServerHandle, db: &str) {
    t.deliver(false).await;
    let created = t.placed(s, "lost_0001", 1200).await;
    assert!(
        next_query_at(db, "lost_0001").await.is_some(),
        "scheduled when placed"
    );
    t.pay(&created).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        t.get_order(s, "lost_0001").await["state"],
        "NOTPAY",
        "not queried before pay_query_after_secs"
    );
    t.advance(61);
    let paid = t.wait_paid(s, "lost_0001").await;
    assert!(paid["transaction_id"].is_string(), "{paid}");
    assert_eq!(
        next_query_at(db, "lost_0001").await,
        None,
        "paid: queried no more"
    );
    let events = t.events(s, "TRANSACTION.SUCCESS").await;
    assert_eq!(events.len(), 1, "{events:?}");
    let payload = &events[0]["payload"];
    assert_eq!(payload["out_trade_no"], "lost_0001");
    assert_eq!(payload["trade_state"], "SUCCESS");
    assert_eq!(payload["amount"]["total"], 1200);
    assert_eq!(payload["transaction_id"], paid["transaction_id"]);
    assert_eq!(payload["attach"], "table 7");
    assert!(
        inbox(db, "lost_0001").await.is_empty(),
        "nothing was notified"
    );

    t.deliver(true).await;
    t.again("lost_0001", "notify").await;
    let seen = t.relay.wait_for(1).await;
    assert_eq!(seen[0].status, 204);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rows = inbox(db, "lost_0001").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].0.as_deref(), Some("no_change"));
    assert_eq!(t.events(s, "TRANSACTION.SUCCESS").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_notification_is_found_by_the_query_and_the_late_one_adds_nothing_on_sqlite() {
    let t = T::new().await;
    let db = sqlite_url();
    let s = t.spawn(&db).await;
    lost_notification(&t, &s, &db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_notification_is_found_by_the_query_and_the_late_one_adds_nothing_on_postgres() {
    let t = T::new().await;
    let db = PgDatabase::create().await;
    let s = t.spawn(db.url()).await;
    lost_notification(&t, &s, db.url()).await;
}

/// Two instances: the notifications (each forwarded to both at once) and both instances'
/// queries race for the same payments; each order still makes exactly one event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_and_a_query_racing_on_two_instances_make_one_event_on_postgres() {
    let t = T::new().await;
    let db = PgDatabase::create().await;
    let a = t.spawn(db.url()).await;
    let b = t.spawn(db.url()).await;
    t.deliver(false).await;
    let nos: Vec<String> = (0..6).map(|i| format!("race_{i:04}")).collect();
    for no in &nos {
        let created = t.placed(&a, no, 500).await;
        t.pay(&created).await;
    }
    t.deliver(true).await;
    // The queries come due while the notifications are sent again to both instances.
    t.advance(61);
    for no in &nos {
        t.again(no, "notify").await;
    }
    for no in &nos {
        t.wait_paid(&b, no).await;
    }
    t.relay.wait_for(nos.len()).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let events = t.events(&a, "TRANSACTION.SUCCESS").await;
    for no in &nos {
        let mine = events
            .iter()
            .filter(|e| e["payload"]["out_trade_no"] == no.as_str())
            .count();
        assert_eq!(mine, 1, "{no}: {events:?}");
    }
}

/// An order nobody pays is queried until its expiry (two hours without `time_expire`), then
/// closed at WeChat and here, and queried no more.
async fn expiry(t: &T, s: &ServerHandle, db: &str) {
    t.placed(s, "idle_0001", 300).await;
    t.advance(61);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(t.get_order(s, "idle_0001").await["state"], "NOTPAY");
    assert!(next_query_at(db, "idle_0001").await.is_some());
    t.advance(2 * 3600);
    t.wait_order(s, "idle_0001", "state", "CLOSED").await;
    assert_eq!(t.sim_order("idle_0001").await["trade_state"], "CLOSED");
    assert_eq!(next_query_at(db, "idle_0001").await, None);
    assert!(t.events(s, "TRANSACTION.SUCCESS").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_unpaid_order_is_closed_at_wechat_and_here_on_sqlite() {
    let t = T::new().await;
    let db = sqlite_url();
    let s = t.spawn(&db).await;
    expiry(&t, &s, &db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_unpaid_order_is_closed_at_wechat_and_here_on_postgres() {
    let t = T::new().await;
    let db = PgDatabase::create().await;
    let s = t.spawn(db.url()).await;
    expiry(&t, &s, db.url()).await;
}

/// An order closed here (its close at WeChat lost) and then paid at WeChat: marked paid (the
/// money is taken), its one `TRANSACTION.SUCCESS` and one `PAYMENT.AFTER_CLOSE` alert; copies
/// add nothing.
async fn paid_after_close(t: &T, s: &ServerHandle, db: &str) {
    let created = t.placed(s, "late_0001", 700).await;
    run(
        db,
        "UPDATE pay_orders SET state = 'CLOSED', next_query_at = NULL WHERE out_trade_no = $1",
        "late_0001",
    )
    .await;
    assert_eq!(t.get_order(s, "late_0001").await["state"], "CLOSED");
    t.pay(&created).await;
    t.wait_paid(s, "late_0001").await;
    t.again("late_0001", "notify").await;
    t.relay.wait_for(2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(t.events(s, "TRANSACTION.SUCCESS").await.len(), 1);
    let alerts = t.events(s, "PAYMENT.AFTER_CLOSE").await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["payload"]["out_trade_no"], "late_0001");
    assert_eq!(alerts[0]["payload"]["amount"], 700);
    // An order paid the ordinary way makes no alert.
    let created = t.placed(s, "late_0002", 700).await;
    t.pay(&created).await;
    t.wait_paid(s, "late_0002").await;
    assert_eq!(t.events(s, "PAYMENT.AFTER_CLOSE").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_after_a_close_here_is_marked_paid_with_one_alert_on_sqlite() {
    let t = T::new().await;
    let db = sqlite_url();
    let s = t.spawn(&db).await;
    paid_after_close(&t, &s, &db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_after_a_close_here_is_marked_paid_with_one_alert_on_postgres() {
    let t = T::new().await;
    let db = PgDatabase::create().await;
    let s = t.spawn(db.url()).await;
    paid_after_close(&t, &s, db.url()).await;
}

/// A prepay is handed out again while WeChat still takes it; after two hours the same request
/// gets a fresh one from WeChat, which the phone can pay with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepay_older_than_two_hours_is_renewed() {
    let t = T::new().await;
    let db = sqlite_url();
    let s = t.spawn(&db).await;
    let expire = weapp::pay::PayTime::from_unix(t.w.sim.sim().now() + 86_400).to_string();
    let mut body = order_body("slow_0001", 900);
    body["time_expire"] = json!(expire);
    let appid = t.w.appid.clone();
    let (st, first) = t.order(&s, SHOP_KEY, &appid, body.clone()).await;
    assert_eq!(st, 200, "{first}");
    t.advance(3600);
    let (_, again) = t.order(&s, SHOP_KEY, &appid, body.clone()).await;
    assert_eq!(
        again["prepay_id"], first["prepay_id"],
        "still valid: the same"
    );
    t.advance(3600 + 60);
    let (st, renewed) = t.order(&s, SHOP_KEY, &appid, body.clone()).await;
    assert_eq!(st, 200, "{renewed}");
    assert_ne!(renewed["prepay_id"], first["prepay_id"], "a fresh prepay");
    let (_, same) = t.order(&s, SHOP_KEY, &appid, body).await;
    assert_eq!(same["prepay_id"], renewed["prepay_id"]);
    assert_eq!(
        t.get_order(&s, "slow_0001").await["prepay_id"],
        renewed["prepay_id"]
    );
    t.pay(&renewed).await;
    t.wait_paid(&s, "slow_0001").await;
}

/// The payment routes count each client's requests: past `pay_rate_limit_per_minute`, 429
/// with the envelope.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_payment_routes_are_rate_limited_per_client() {
    let t = T::new().await;
    let db = sqlite_url();
    let s = t.spawn_with(&db, |c| c.pay_rate_limit_per_minute = 3).await;
    t.placed(&s, "busy_0001", 100).await;
    t.get_order(&s, "busy_0001").await;
    let (st, _) = t
        .refund(
            &s,
            json!({"out_trade_no": "busy_0001", "out_refund_no": "r_busy_1", "amount": 1}),
        )
        .await;
    assert_eq!(st, 409, "unpaid: refused, but counted");
    let (st, v) = t
        .refund(
            &s,
            json!({"out_trade_no": "busy_0001", "out_refund_no": "r_busy_1", "amount": 1}),
        )
        .await;
    assert_eq!(st, 429, "{v}");
    assert_eq!(v["error"]["code"], "rate_limited");
    let appid = t.w.appid.clone();
    let (st, _) = t
        .order(&s, SHOP_KEY, &appid, order_body("busy_0002", 100))
        .await;
    assert_eq!(st, 429);
}
