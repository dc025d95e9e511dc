//! Payments in the service, end to end against the in-process WeChat Pay simulator: a backend
//! places an order with its client key, the "phone" pays through `/_sim/pay/request_payment`,
//! the simulator notifies the server (through a recording relay standing in for the network),
//! the order is paid once and its one `TRANSACTION.SUCCESS` event reaches the event log and
//! the signed webhook — whatever copies, forgeries, probes and replays arrive.

mod common;
#[path = "common/pay.rs"]
mod pay;

use std::time::Duration;

use axum::body::Bytes;
use common::{sqlite_url, KEY, OTHER_KEY};
use serde_json::{json, Value};
use weapp_server::config::{MerchantConfig, Secret};
use weapp_server::ServerHandle;
use weapp_test_support::PgDatabase;

use pay::*;

// ------------------------------------------------------------------------- the tests

/// The whole journey on one database: order, same request, conflict, pay, notification, one
/// event and one webhook; three duplicates add nothing.
async fn journey(t: &T, servers: &[ServerHandle], database_url: &str) {
    let s = &servers[0];
    let appid = t.w.appid.clone();
    let (st, created) = t
        .order(s, SHOP_KEY, &appid, order_body("order_0001", 980))
        .await;
    assert_eq!(st, 200, "{created}");
    let prepay_id = created["prepay_id"].as_str().unwrap().to_owned();
    assert!(!prepay_id.is_empty());
    let rp = &created["request_payment"];
    assert_eq!(rp["appId"], appid.as_str());
    assert_eq!(rp["package"], format!("prepay_id={prepay_id}"));
    assert_eq!(rp["signType"], "RSA");
    assert_eq!(t.get_order(s, "order_0001").await["state"], "NOTPAY");

    // The same request again (at any instance): the same prepay.
    let last = servers.last().unwrap();
    let (st, again) = t
        .order(last, SHOP_KEY, &appid, order_body("order_0001", 980))
        .await;
    assert_eq!(st, 200, "{again}");
    assert_eq!(again["prepay_id"], prepay_id.as_str());
    // The same number with another amount: 409.
    let (st, conflict) = t
        .order(s, SHOP_KEY, &appid, order_body("order_0001", 981))
        .await;
    assert_eq!(st, 409, "{conflict}");
    assert_eq!(conflict["error"]["code"], "order_conflict");

    t.pay(&created).await;
    let paid = t.wait_paid(s, "order_0001").await;
    assert_eq!(paid["amount"], 980);
    assert!(
        paid["transaction_id"]
            .as_str()
            .is_some_and(|x| !x.is_empty()),
        "{paid}"
    );
    assert!(paid["success_time"].is_string(), "{paid}");
    assert!(paid["paid_at"].is_i64(), "{paid}");
    assert_eq!(paid["refunded"], 0);

    // Exactly one event, with WeChat's event type and the decrypted resource.
    common::within(Duration::from_secs(5), "the webhook delivery", || async {
        !t.sink.events().is_empty()
    })
    .await;
    let events = t.events(s, "TRANSACTION.SUCCESS").await;
    assert_eq!(events.len(), 1, "{events:?}");
    let payload = &events[0]["payload"];
    assert_eq!(payload["out_trade_no"], "order_0001");
    assert_eq!(payload["trade_state"], "SUCCESS");
    assert_eq!(payload["amount"]["total"], 980);
    assert_eq!(payload["transaction_id"], paid["transaction_id"]);
    assert_eq!(payload["attach"], "table 7");

    // The simulator sends it three more times: nothing new.
    for _ in 0..3 {
        t.again("order_0001", "notify").await;
    }
    let seen = t.relay.wait_for(4).await;
    assert!(
        seen.iter().all(|c| c.status == 204),
        "every copy acknowledged"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    for server in servers {
        assert_eq!(t.events(server, "TRANSACTION.SUCCESS").await.len(), 1);
    }
    let hooks: Vec<Value> = t
        .sink
        .events()
        .into_iter()
        .filter(|e| e["type"] == "TRANSACTION.SUCCESS")
        .collect();
    assert_eq!(hooks.len(), 1, "{hooks:?}");
    assert_eq!(hooks[0]["payload"]["out_trade_no"], "order_0001");
    let rows = inbox(database_url, "order_0001").await;
    assert_eq!(rows.len(), 1, "one inbox row per notification id: {rows:?}");
    assert_eq!(rows[0].0.as_deref(), Some("applied"));
    assert_eq!(rows[0].1, 4 * servers.len() as i64, "every copy counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_is_paid_once_and_its_event_delivered_once_on_sqlite() {
    let t = T::new().await;
    let db = sqlite_url();
    let server = t.spawn(&db).await;
    journey(&t, &[server], &db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_receiving_copies_at_once_make_one_event_on_postgres() {
    let t = T::new().await;
    let db = PgDatabase::create().await;
    let a = t.spawn(db.url()).await;
    let b = t.spawn(db.url()).await;
    journey(&t, &[a, b], db.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_probing_foreign_and_stale_notifications_are_refused_and_not_stored() {
    let t = T::new().await;
    let db = sqlite_url();
    let s = t.spawn(&db).await;
    let (st, created) = t
        .order(&s, SHOP_KEY, &t.w.appid, order_body("order_0002", 100))
        .await;
    assert_eq!(st, 200, "{created}");
    t.pay(&created).await;
    t.wait_paid(&s, "order_0002").await;
    let original = t.relay.wait_for(1).await[0].clone();
    assert_eq!(original.status, 204);
    let mchid = t.mchid();
    let url = format!("{}/v1/pay/{mchid}/notify", s.url());

    // Tampered: one byte of the body flipped.
    let mut body = original.body.to_vec();
    let at = body.len() / 2;
    body[at] ^= 0x01;
    let (st, answer) = post_notification(&url, &original.headers, Bytes::from(body)).await;
    assert_eq!(st, 401, "{answer}");
    let answer: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["code"], "FAIL");
    // A body re-serialized by a framework (same JSON, other bytes) is not the signed one.
    let reserialized =
        serde_json::to_vec(&serde_json::from_slice::<Value>(&original.body).unwrap()).unwrap();
    if reserialized != original.body.to_vec() {
        let (st, _) = post_notification(&url, &original.headers, Bytes::from(reserialized)).await;
        assert_eq!(st, 401);
    }
    // Sent to the other merchant's notify URL: its key does not verify it.
    let foreign = format!(
        "{}/v1/pay/{}/notify",
        s.url(),
        t.other_issued["mchid"].as_str().unwrap()
    );
    let (st, _) = post_notification(&foreign, &original.headers, original.body.clone()).await;
    assert_eq!(st, 401);
    // A merchant this service does not serve.
    let unknown = format!("{}/v1/pay/1999999999/notify", s.url());
    let (st, answer) = post_notification(&unknown, &original.headers, original.body.clone()).await;
    assert_eq!(st, 404, "{answer}");
    // A probe signature (签名探测) from the simulator: refused.
    t.again("order_0002", "probe").await;
    let probe = t.relay.wait_for(2).await[1].clone();
    assert!(probe.headers["wechatpay-signature"]
        .to_str()
        .unwrap()
        .starts_with("WECHATPAY/SIGNTEST/"));
    assert_eq!(probe.status, 401);
    // Replayed verbatim within the window: a copy, acknowledged, nothing new.
    let (st, _) = post_notification(&url, &original.headers, original.body.clone()).await;
    assert_eq!(st, 204);
    // Replayed after five minutes: stale.
    t.w.sim.sim().advance(301);
    let (st, _) = post_notification(&url, &original.headers, original.body.clone()).await;
    assert_eq!(st, 401);

    let rows = inbox(&db, "order_0002").await;
    assert_eq!(rows.len(), 1, "nothing refused was stored: {rows:?}");
    assert_eq!(rows[0].1, 2, "the original and its verbatim copy");
    assert_eq!(t.events(&s, "TRANSACTION.SUCCESS").await.len(), 1);
    let metrics = reqwest::get(format!("{}/metrics", s.url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!(
            "weapp_pay_notifications_total{{mchid=\"{mchid}\",outcome=\"refused\"}}"
        )),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_amount_mismatch_is_not_paid_but_alerted_and_an_unknown_order_is_kept() {
    let t = T::new().await;
    let db = sqlite_url();
    let s = t.spawn(&db).await;
    let mchid = t.mchid();

    // The stored order says 990 fen; WeChat is paid 100: not marked paid, one alert.
    let (st, created) = t
        .order(&s, SHOP_KEY, &t.w.appid, order_body("order_0003", 100))
        .await;
    assert_eq!(st, 200, "{created}");
    sql(
        &db,
        "UPDATE pay_orders SET amount = 990 WHERE out_trade_no = $1",
        "order_0003",
    )
    .await;
    t.pay(&created).await;
    t.relay.wait_for(1).await;
    t.again("order_0003", "notify").await;
    let seen = t.relay.wait_for(2).await;
    assert!(
        seen.iter().all(|c| c.status == 204),
        "stored, so acknowledged"
    );
    let order = t.get_order(&s, "order_0003").await;
    assert_eq!(order["state"], "NOTPAY", "{order}");
    assert!(order.get("transaction_id").is_none(), "{order}");
    let alerts = t.events(&s, "PAYMENT.MISMATCH").await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["payload"]["field"], "amount");
    assert_eq!(alerts[0]["payload"]["expected"]["amount"], 990);
    assert_eq!(alerts[0]["payload"]["received"]["amount"]["total"], 100);
    assert!(t.events(&s, "TRANSACTION.SUCCESS").await.is_empty());
    assert_eq!(
        inbox(&db, "order_0003").await[0].0.as_deref(),
        Some("mismatch")
    );
    let metrics = reqwest::get(format!("{}/metrics", s.url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!(
            "weapp_pay_notifications_total{{mchid=\"{mchid}\",outcome=\"mismatch\"}}"
        )),
        "{metrics}"
    );

    // An order this service does not know (placed outside it): kept in the inbox, acknowledged,
    // no order, no event.
    let (st, created) = t
        .order(&s, SHOP_KEY, &t.w.appid, order_body("order_0004", 200))
        .await;
    assert_eq!(st, 200, "{created}");
    sql(
        &db,
        "DELETE FROM pay_orders WHERE out_trade_no = $1",
        "order_0004",
    )
    .await;
    t.pay(&created).await;
    let seen = t.relay.wait_for(3).await;
    assert_eq!(seen[2].status, 204);
    assert_eq!(
        inbox(&db, "order_0004").await[0].0.as_deref(),
        Some("unknown_order")
    );
    assert_eq!(t.events(&s, "TRANSACTION.SUCCESS").await.len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_need_the_scope_the_app_and_valid_input_and_can_be_closed() {
    let t = T::new().await;
    let s = t.spawn(&sqlite_url()).await;
    let appid = t.w.appid.clone();
    let good = order_body("order_0005", 100);

    let (st, v) = t.order(&s, KEY, &appid, good.clone()).await;
    assert_eq!(st, 403, "no pay:write: {v}");
    assert_eq!(v["error"]["code"], "forbidden");
    let (st, v) = t.order(&s, SHOP_KEY, &t.w.other_appid, good.clone()).await;
    assert_eq!(st, 403, "another app: {v}");
    let (st, v) = t.order(&s, OTHER_KEY, &appid, good.clone()).await;
    assert_eq!(st, 403, "another client's app: {v}");
    let (st, v) = t
        .order(&s, "not-a-key-0123456789", &appid, good.clone())
        .await;
    assert_eq!(st, 401, "{v}");

    for (body, what) in [
        (
            json!({"out_trade_no": "order_0005", "description": "tea", "amount": 9.8, "openid": OPENID}),
            "amount in yuan",
        ),
        (
            json!({"out_trade_no": "order_0005", "description": "tea", "amount": 0, "openid": OPENID}),
            "zero",
        ),
        (
            json!({"out_trade_no": "order_0005", "description": "tea", "amount": -5, "openid": OPENID}),
            "negative",
        ),
        (
            json!({"out_trade_no": "abc", "description": "tea", "amount": 1, "openid": OPENID}),
            "short number",
        ),
        (
            json!({"out_trade_no": "order 0005", "description": "tea", "amount": 1, "openid": OPENID}),
            "a space",
        ),
        (
            json!({"out_trade_no": "order_0005", "description": "", "amount": 1, "openid": OPENID}),
            "no description",
        ),
        (
            json!({"out_trade_no": "order_0005", "description": "tea", "amount": 1, "openid": OPENID, "time_expire": "tomorrow"}),
            "time",
        ),
        (
            json!({"out_trade_no": "order_0005", "description": "tea", "amount": 1, "openid": OPENID, "mchid": "1"}),
            "unknown field",
        ),
        (
            json!({"out_trade_no": "order_0005", "description": "tea", "amount": 1}),
            "no openid",
        ),
    ] {
        let (st, v) = t.order(&s, SHOP_KEY, &appid, body).await;
        assert_eq!(st, 400, "{what}: {v}");
        assert!(v["error"]["code"].is_string(), "{what}: {v}");
    }
    assert_eq!(
        t.w.call(
            "GET",
            format!("{}/v1/apps/{appid}/pay/orders/order_0005", s.url()),
            Some(SHOP_KEY),
            None
        )
        .await
        .0,
        404,
        "nothing stored"
    );

    // Placed, then closed (twice: the same answer), then not payable again.
    let expire = weapp::pay::PayTime::from_unix(t.w.sim.sim().now_ms() / 1000 + 86_400).to_string();
    let (st, v) = t.order(&s, SHOP_KEY, &appid, json!({"out_trade_no": "order_0005", "description": "tea", "amount": 1, "openid": OPENID, "time_expire": expire})).await;
    assert_eq!(st, 200, "{v}");
    for _ in 0..2 {
        let (st, v) =
            t.w.call(
                "POST",
                format!("{}/v1/apps/{appid}/pay/orders/order_0005/close", s.url()),
                Some(SHOP_KEY),
                None,
            )
            .await;
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["state"], "CLOSED");
    }
    let (st, v) = t.order(&s, SHOP_KEY, &appid, json!({"out_trade_no": "order_0005", "description": "tea", "amount": 1, "openid": OPENID, "time_expire": expire})).await;
    assert_eq!(st, 409, "{v}");
    assert_eq!(v["error"]["code"], "order_state");
    // Another app's order is not this app's.
    let (st, _) =
        t.w.call(
            "GET",
            format!(
                "{}/v1/apps/{}/pay/orders/order_0005",
                s.url(),
                t.w.other_appid
            ),
            Some(SHOP_KEY),
            None,
        )
        .await;
    assert_eq!(st, 403);
}

#[tokio::test]
async fn merchant_settings_are_checked_at_start_with_clear_errors() {
    let t = T::new().await;
    let check = |f: &dyn Fn(&mut MerchantConfig)| {
        let mut c = t.config(&sqlite_url());
        f(&mut c.merchants[0]);
        c.validate().unwrap_err().to_string()
    };
    assert!(check(&|m| m.mchid = "12ab".into()).contains("mchid"));
    assert!(check(&|m| m.private_key = None).contains("private_key"));
    assert!(check(&|m| m.private_key = Some(Secret::new("not a pem"))).contains("private key"));
    assert!(check(&|m| m.apiv3_key = Some(Secret::new("short"))).contains("apiv3_key"));
    assert!(check(&|m| {
        m.public_key_id = None;
        m.public_key = None;
    })
    .contains("platform_certificates"));
    assert!(check(&|m| m.notify_url = "ftp://x/notify".into()).contains("notify_url"));
    assert!(check(&|m| m.appids.clear()).contains("appids"));
    let mut c = t.config(&sqlite_url());
    c.merchants[1].appids = c.merchants[0].appids.clone();
    assert!(c
        .validate()
        .unwrap_err()
        .to_string()
        .contains("one merchant per app"));
    // The API host goes through the egress policy like an app's: an internal address not
    // allowed is refused at start.
    let mut c = t.config(&sqlite_url());
    c.merchants[0].api_base = "http://10.0.0.1:9400".into();
    let e = weapp_server::spawn(c).await.unwrap_err().to_string();
    assert!(e.contains("merchants[0].api_base"), "{e}");
    // A key pasted where a variable's name or a file's path belongs is not repeated.
    let pem = t.issued["merchant_private_key"]
        .as_str()
        .unwrap()
        .to_owned();
    let apiv3 = t.issued["apiv3_key"].as_str().unwrap().to_owned();
    for e in [
        check(&|m| {
            m.private_key = None;
            m.private_key_env = Some(pem.clone());
        }),
        check(&|m| {
            m.private_key = None;
            m.private_key_file = Some(pem.clone());
        }),
        check(&|m| {
            m.apiv3_key = None;
            m.apiv3_key_env = Some(apiv3.clone());
        }),
    ] {
        assert!(e.contains("not shown"), "{e}");
        assert!(!e.contains("PRIVATE KEY") && !e.contains(&apiv3), "{e}");
    }
    // Secrets never in Debug output.
    let c = t.config(&sqlite_url());
    let debug = format!("{:?}", c.merchants[0]);
    assert!(!debug.contains("PRIVATE KEY"), "{debug}");
    assert!(
        !debug.contains(t.issued["apiv3_key"].as_str().unwrap()),
        "{debug}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_stored_but_not_applied_is_applied_by_the_sweep() {
    let t = T::new().await;
    let db = sqlite_url();
    let s = t.spawn(&db).await;
    let (st, created) = t
        .order(&s, SHOP_KEY, &t.w.appid, order_body("order_0006", 300))
        .await;
    assert_eq!(st, 200, "{created}");
    // The database refuses to change orders: the notification is stored in the inbox, but not
    // applied (as if the instance died between the two); WeChat is told to retry.
    exec(&db, "CREATE TRIGGER no_updates BEFORE UPDATE ON pay_orders BEGIN SELECT RAISE(ABORT, 'injected'); END").await;
    t.pay(&created).await;
    let seen = t.relay.wait_for(1).await;
    assert_eq!(seen[0].status, 500);
    let rows = inbox(&db, "order_0006").await;
    assert_eq!(rows.len(), 1, "stored before the answer: {rows:?}");
    assert_eq!(rows[0].0, None, "not applied");
    assert_eq!(t.get_order(&s, "order_0006").await["state"], "NOTPAY");
    exec(&db, "DROP TRIGGER no_updates").await;
    // No retry from WeChat (its clock stands still): the sweep applies the stored row.
    let mut paid = Value::Null;
    for _ in 0..400 {
        paid = t.get_order(&s, "order_0006").await;
        if paid["state"] == "SUCCESS" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(paid["state"], "SUCCESS", "{paid}");
    assert_eq!(
        t.relay.seen().len(),
        1,
        "no second delivery: the sweep did it"
    );
    assert_eq!(t.events(&s, "TRANSACTION.SUCCESS").await.len(), 1);
    assert_eq!(
        inbox(&db, "order_0006").await[0].0.as_deref(),
        Some("applied")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_prepay_outcome_is_asked_again_or_left_pending_for_the_same_request() {
    let t = T::new().await;
    let s = t.spawn(&sqlite_url()).await;
    let appid = t.w.appid.clone();
    let fault = |count: u32| json!({"path": "/v3/pay/transactions/jsapi", "http_status": 500, "count": count});
    let faults = format!("{}/_sim/faults", t.w.sim.url());

    // One 500 (the outcome unknown): asked again at once, the same parameters, one prepay.
    let (st, v) = t.w.call("POST", faults.clone(), None, Some(fault(1))).await;
    assert_eq!(st, 200, "{v}");
    let (st, v) = t
        .order(&s, SHOP_KEY, &appid, order_body("order_0007", 100))
        .await;
    assert_eq!(st, 200, "{v}");
    assert!(
        v["prepay_id"].as_str().is_some_and(|p| !p.is_empty()),
        "{v}"
    );

    // Still unknown after the retry: 503, the order kept as PENDING; the same request later
    // gets its prepay.
    let (st, v) = t.w.call("POST", faults, None, Some(fault(2))).await;
    assert_eq!(st, 200, "{v}");
    let (st, headers, v) =
        t.w.call_full(
            "POST",
            format!("{}/v1/apps/{appid}/pay/orders", s.url()),
            Some(SHOP_KEY),
            Some(order_body("order_0008", 100).to_string()),
        )
        .await;
    assert_eq!(st, 503, "{v}");
    assert_eq!(v["error"]["code"], "prepay_pending");
    assert!(headers.get("retry-after").is_some());
    let pending = t.get_order(&s, "order_0008").await;
    assert_eq!(pending["state"], "PENDING", "{pending}");
    assert!(pending.get("prepay_id").is_none(), "{pending}");
    let (st, v) = t
        .order(&s, SHOP_KEY, &appid, order_body("order_0008", 100))
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(t.get_order(&s, "order_0008").await["state"], "NOTPAY");
    assert_eq!(
        t.get_order(&s, "order_0008").await["prepay_id"],
        v["prepay_id"]
    );
}

// ------------------------------------------------ found by the adversarial review, then fixed

/// A close racing an in-flight prepay: the order is PENDING while WeChat's answer is late; the
/// close is accepted (WeChat closes, here CLOSED); when the prepay's answer arrives, the create
/// must not hand out wx.requestPayment parameters for the closed order (409 `order_state`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_during_the_prepay_leaves_nothing_to_pay() {
    let t = T::new().await;
    let s = t.spawn(&sqlite_url()).await;
    let appid = t.w.appid.clone();
    let faults = format!("{}/_sim/faults", t.w.sim.url());
    let (st, v) =
        t.w.call(
            "POST",
            faults,
            None,
            Some(json!({"path": "/v3/pay/transactions/jsapi", "latency_ms": 1500, "count": 1})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let create = t.order(&s, SHOP_KEY, &appid, order_body("order_r001", 100));
    let close = async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        t.w.call(
            "POST",
            format!("{}/v1/apps/{appid}/pay/orders/order_r001/close", s.url()),
            Some(SHOP_KEY),
            None,
        )
        .await
    };
    let ((cst, created), (kst, closed)) = tokio::join!(create, close);
    assert_eq!(kst, 200, "{closed}");
    assert_eq!(closed["state"], "CLOSED");
    assert_eq!(t.get_order(&s, "order_r001").await["state"], "CLOSED");
    assert_eq!(
        cst, 409,
        "create answered a prepay for an order closed meanwhile: {created}"
    );
    assert_eq!(created["error"]["code"], "order_state", "{created}");
    assert_eq!(t.get_order(&s, "order_r001").await["state"], "CLOSED");
}

/// One mismatched notification is counted once in weapp_pay_notifications_total
/// {outcome="mismatch"} (it was counted by the inbox and by the handler).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_mismatch_is_counted_once() {
    let t = T::new().await;
    let db = sqlite_url();
    let s = t.spawn(&db).await;
    let mchid = t.mchid();
    let (st, created) = t
        .order(&s, SHOP_KEY, &t.w.appid, order_body("order_r002", 100))
        .await;
    assert_eq!(st, 200, "{created}");
    sql(
        &db,
        "UPDATE pay_orders SET amount = 990 WHERE out_trade_no = $1",
        "order_r002",
    )
    .await;
    t.pay(&created).await;
    assert_eq!(t.relay.wait_for(1).await[0].status, 204);
    let metrics = reqwest::get(format!("{}/metrics", s.url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let prefix = format!("weapp_pay_notifications_total{{mchid=\"{mchid}\",outcome=\"mismatch\"}}");
    let line = metrics
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or("");
    assert_eq!(t.events(&s, "PAYMENT.MISMATCH").await.len(), 1);
    assert_eq!(
        line,
        format!("{prefix} 1"),
        "one notification, one mismatch"
    );
}

/// A definite refusal of the prepay (PARAM_ERROR: nothing created at WeChat) does not take the
/// number here either: the corrected request for the same out_trade_no is accepted (it was 409
/// `order_conflict`, and the refused values were refused again forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_prepay_does_not_take_the_number() {
    let t = T::new().await;
    let s = t.spawn(&sqlite_url()).await;
    let appid = t.w.appid.clone();
    let faults = format!("{}/_sim/faults", t.w.sim.url());
    let (st, v) =
        t.w.call(
            "POST",
            faults,
            None,
            Some(
                json!({"path": "/v3/pay/transactions/jsapi", "http_status": 400, "count": 1,
                "body": "{\"code\":\"PARAM_ERROR\",\"message\":\"openid mismatch\"}"}),
            ),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let mut body = order_body("order_r003", 100);
    let (st, v) = t.order(&s, SHOP_KEY, &appid, body.clone()).await;
    assert_eq!(st, 400, "{v}");
    body["description"] = json!("A cup of green tea");
    let (st, v) = t.order(&s, SHOP_KEY, &appid, body).await;
    assert_eq!(
        st, 200,
        "a corrected request for a number WeChat never took: {v}"
    );
}
