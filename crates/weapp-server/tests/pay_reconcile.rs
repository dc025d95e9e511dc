//! Daily reconciliation against the simulator's trade bill: every planted discrepancy is found
//! (an order paid upstream but unknown here, a refund made upstream only, an amount changed
//! here), a clean day reports nothing and sends nothing, and two instances make one report
//! and one event (PostgreSQL, the scheduler at `pay_reconcile_at` on the simulator's clock).

mod common;
#[path = "common/pay_world.rs"]
mod pay_world;

use std::time::Duration;

use common::sqlite_url;
use pay_world::{PayWorld, OPENID};
use serde_json::{json, Value};
use weapp::pay::{Fen, JsapiPrepayRequest, OrderRef, RefundRequest};
use weapp_server::payments::reconcile::STALE_CLAIM_MS;
use weapp_server::payments::MerchantRuntime;
use weapp_server::store::{ReconciliationRecord, StoreOptions};
use weapp_sim::Fault;
use weapp_test_support::PgDatabase;

/// Runs `statement` against a SQLite or PostgreSQL database.
async fn exec(database_url: &str, statement: &str) {
    if database_url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(database_url).await.unwrap();
        sqlx::query(statement).execute(&pool).await.unwrap();
    } else {
        let pool = sqlx::PgPool::connect(database_url).await.unwrap();
        sqlx::query(statement).execute(&pool).await.unwrap();
    }
}

/// One number out of a SQLite or PostgreSQL database (`statement` names it `n`).
async fn count(database_url: &str, statement: &str) -> i64 {
    use sqlx::Row;
    if database_url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(database_url).await.unwrap();
        sqlx::query(statement)
            .fetch_one(&pool)
            .await
            .unwrap()
            .get("n")
    } else {
        let pool = sqlx::PgPool::connect(database_url).await.unwrap();
        sqlx::query(statement)
            .fetch_one(&pool)
            .await
            .unwrap()
            .get("n")
    }
}

/// The sum of `weapp_pay_reconciliations_total` of `mchid` over every outcome.
async fn runs_counted(t: &PayWorld, s: &weapp_server::ServerHandle, mchid: &str) -> u64 {
    let (_, m) =
        t.w.call("GET", format!("{}/metrics", s.url()), None, None)
            .await;
    m.as_str()
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            l.starts_with(&format!(
                "weapp_pay_reconciliations_total{{mchid=\"{mchid}\""
            ))
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

/// The app's merchant's own client, as a merchant's other systems would use it: orders and
/// refunds made directly at WeChat Pay, never through the service.
fn direct_client(t: &PayWorld) -> MerchantRuntime {
    let config = pay_world::merchant(&t.issued, &t.w.appid, t.w.sim.url(), &t.relay);
    MerchantRuntime::build(
        &config,
        Some(std::sync::Arc::new(pay_world::SimClock(
            t.w.sim.sim().clone(),
        ))),
    )
    .unwrap()
}

/// An order created and paid at WeChat Pay only (its notifications go nowhere).
async fn pay_upstream_only(t: &PayWorld, m: &MerchantRuntime, no: &str, amount: u64) {
    let req = JsapiPrepayRequest::new(
        &t.w.appid,
        "Paid elsewhere",
        no,
        "http://127.0.0.1:9/nowhere",
        Fen::new(amount),
        OPENID,
    );
    let prepay = m.client.jsapi_prepay(&req).await.unwrap();
    let rp = m
        .client
        .request_payment(&t.w.appid, &prepay.prepay_id)
        .unwrap();
    let mut rp = serde_json::to_value(rp).unwrap();
    rp["appId"] = json!(t.w.appid);
    t.pay(&rp).await;
}

/// A refund made at WeChat Pay only, finished at once.
async fn refund_upstream_only(
    t: &PayWorld,
    m: &MerchantRuntime,
    no: &str,
    refund_no: &str,
    refund: u64,
    total: u64,
) {
    let req = RefundRequest::new(
        OrderRef::OutTradeNo(no.into()),
        refund_no,
        Fen::new(refund),
        Fen::new(total),
    )
    .notify_url("http://127.0.0.1:9/nowhere");
    m.client.refund(&req).await.unwrap();
    let (s, v) =
        t.w.call(
            "POST",
            format!("{}/_sim/pay/refunds/{refund_no}", t.w.sim.url()),
            None,
            Some(json!({"status": "SUCCESS", "mchid": t.mchid()})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
}

fn kinds(items: &Value) -> Vec<(String, String, Option<String>)> {
    let mut k: Vec<_> = items
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["kind"].as_str().unwrap().to_owned(),
                i["out_trade_no"].as_str().unwrap().to_owned(),
                i["out_refund_no"].as_str().map(str::to_owned),
            )
        })
        .collect();
    k.sort();
    k
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_planted_discrepancy_is_found_and_a_clean_day_reports_nothing() {
    let t = PayWorld::new().await;
    // Early on a Beijing day: everything below happens on it.
    t.next_beijing_day_at(1, 0);
    let db = sqlite_url();
    let mut config = t.config(&db);
    config.pay_reconcile_at = "off".into();
    let s = t.spawn_with(config).await;
    let appid = t.w.appid.clone();
    let mchid = t.mchid();
    let direct = direct_client(&t);

    t.order_and_pay(&s, &appid, "rc_paid_0001", 1000).await;
    t.order_and_pay(&s, &appid, "rc_amount_0002", 2000).await;
    exec(
        &db,
        "UPDATE pay_orders SET amount = 1999 WHERE out_trade_no = 'rc_amount_0002'",
    )
    .await;
    pay_upstream_only(&t, &direct, "rc_upstream_0003", 300).await;
    refund_upstream_only(&t, &direct, "rc_paid_0001", "rc_refund_0001", 400, 1000).await;

    // Today's bill does not exist yet: refused before WeChat is asked.
    let runs = format!("/v1/admin/merchants/{mchid}/reconciliations");
    let today = weapp::pay::PayTime::from_unix(t.w.sim.sim().now()).china_date();
    let (st, v) = t
        .admin(&s, "POST", &runs, Some(json!({"bill_date": today})))
        .await;
    assert_eq!(st, 400, "{v}");
    for bad in ["2026-13-01", "yesterday", ""] {
        let (st, v) = t
            .admin(&s, "POST", &runs, Some(json!({"bill_date": bad})))
            .await;
        assert_eq!(st, 400, "{v}");
    }
    let (st, v) = t
        .admin(
            &s,
            "POST",
            "/v1/admin/merchants/1234/reconciliations",
            Some(json!({"bill_date": "2020-01-01"})),
        )
        .await;
    assert_eq!(st, 404, "{v}");

    let day = t.next_beijing_day_at(10, 5);
    assert_eq!(day, today);
    let (st, report) = t
        .admin(&s, "POST", &runs, Some(json!({"bill_date": day})))
        .await;
    assert_eq!(st, 200, "{report}");
    assert_eq!(report["status"], "discrepancies", "{report}");
    assert_eq!(report["bill_rows"], 4, "{report}");
    assert_eq!(report["discrepancies"], 3, "{report}");
    assert_eq!(
        kinds(&report["items"]),
        vec![
            ("amount_differs".into(), "rc_amount_0002".into(), None),
            (
                "missing_here".into(),
                "rc_paid_0001".into(),
                Some("rc_refund_0001".into())
            ),
            ("missing_here".into(), "rc_upstream_0003".into(), None),
        ],
        "{report}"
    );
    let amount = report["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["kind"] == "amount_differs")
        .unwrap();
    assert_eq!(
        (
            amount["here"]["amount"].clone(),
            amount["there"]["amount"].clone()
        ),
        (json!(1999), json!(2000))
    );

    // Stored and shown.
    let (st, list) = t.admin(&s, "GET", &runs, None).await;
    assert_eq!(st, 200, "{list}");
    assert_eq!(list["reports"][0]["bill_date"], day.as_str());
    assert_eq!(list["reports"][0]["discrepancies"], 3);
    let (st, one) = t.admin(&s, "GET", &format!("{runs}/{day}"), None).await;
    assert_eq!(st, 200, "{one}");
    assert_eq!(kinds(&one["items"]), kinds(&report["items"]));

    // One event for the app, with its items; running the day again finds the same, sends nothing new.
    let events = t.events(&s, &appid, "PAYMENT.RECONCILIATION").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["payload"]["bill_date"], day.as_str());
    assert_eq!(
        kinds(&events[0]["payload"]["items"]),
        kinds(&report["items"])
    );
    let (st, _) = t
        .admin(&s, "POST", &runs, Some(json!({"bill_date": day})))
        .await;
    assert_eq!(st, 200);
    assert_eq!(
        t.events(&s, &appid, "PAYMENT.RECONCILIATION").await.len(),
        1
    );

    // Counted.
    let (_, metrics) =
        t.w.call("GET", format!("{}/metrics", s.url()), None, None)
            .await;
    let metrics = metrics.as_str().unwrap_or_default().to_owned();
    assert!(
        metrics.contains(&format!(
            "weapp_pay_reconciliations_total{{mchid=\"{mchid}\",outcome=\"discrepancies\"}} 2"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "weapp_pay_reconciliation_discrepancies_total{{mchid=\"{mchid}\"}} 6"
        )),
        "{metrics}"
    );

    // A clean day: an order paid through the service, nothing else; no event.
    t.order_and_pay(&s, &appid, "rc_clean_0004", 700).await;
    let clean_day = t.next_beijing_day_at(10, 5);
    let (st, clean) = t
        .admin(&s, "POST", &runs, Some(json!({"bill_date": clean_day})))
        .await;
    assert_eq!(st, 200, "{clean}");
    assert_eq!(clean["status"], "clean", "{clean}");
    assert_eq!(clean["bill_rows"], 1, "{clean}");
    assert_eq!(clean["items"], json!([]));
    // A day without any transaction: an empty bill, clean too.
    let quiet_day = weapp::pay::PayTime::from_unix(t.w.sim.sim().now() - 3 * 86_400).china_date();
    let (st, empty) = t
        .admin(&s, "POST", &runs, Some(json!({"bill_date": quiet_day})))
        .await;
    assert_eq!(st, 200, "{empty}");
    assert_eq!(
        (empty["status"].clone(), empty["bill_rows"].clone()),
        (json!("clean"), json!(0)),
        "{empty}"
    );
    assert_eq!(
        t.events(&s, &appid, "PAYMENT.RECONCILIATION").await.len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_make_one_report_and_one_event_after_ten_o_clock_on_postgres() {
    let t = PayWorld::new().await;
    t.next_beijing_day_at(1, 0);
    let db = PgDatabase::create().await;
    let a = t.spawn(db.url()).await;
    let b = t.spawn(db.url()).await;
    let appid = t.w.appid.clone();
    let mchid = t.mchid();
    t.order_and_pay(&a, &appid, "sched_0001", 900).await;
    exec(
        db.url(),
        "UPDATE pay_orders SET amount = 901 WHERE out_trade_no = 'sched_0001'",
    )
    .await;
    // Before 10:00 the next day: nothing runs.
    let day = t.next_beijing_day_at(9, 0);
    tokio::time::sleep(Duration::from_secs(6)).await;
    let report = format!("/v1/admin/merchants/{mchid}/reconciliations/{day}");
    assert_eq!(t.admin(&a, "GET", &report, None).await.0, 404);
    t.w.sim.sim().advance(3600 + 5 * 60);
    common::within(Duration::from_secs(30), "the daily report", || async {
        t.admin(&b, "GET", &report, None).await.0 == 200
    })
    .await;
    // Both instances have ticked past it (two ticks).
    tokio::time::sleep(Duration::from_secs(11)).await;
    let (_, r) = t.admin(&a, "GET", &report, None).await;
    assert_eq!(r["discrepancies"], 1, "{r}");
    assert_eq!(
        kinds(&r["items"]),
        vec![("amount_differs".into(), "sched_0001".into(), None)]
    );
    assert_eq!(
        t.events(&a, &appid, "PAYMENT.RECONCILIATION").await.len(),
        1
    );
    let mut runs = 0;
    for s in [&a, &b] {
        let (_, m) =
            t.w.call("GET", format!("{}/metrics", s.url()), None, None)
                .await;
        let m = m.as_str().unwrap_or_default().to_owned();
        runs += m
            .lines()
            .filter(|l| {
                l.starts_with(&format!(
                    "weapp_pay_reconciliations_total{{mchid=\"{mchid}\""
                ))
            })
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum::<u64>();
    }
    assert_eq!(runs, 1, "one run for the fleet");
}

/// The store's side of a takeover: a run thought dead (its claim older than
/// [`STALE_CLAIM_MS`]) is taken over; when it finishes after all, it writes nothing over the
/// run that replaced it — before or after that one finished.
async fn a_taken_over_claim_writes_nothing(database_url: &str) {
    let store = weapp_server::store::connect(database_url, &StoreOptions::default())
        .await
        .unwrap();
    let (mchid, day) = ("1900000001", "2026-01-01");
    let report = |claimed_at: i64, status: &str, discrepancies: i64| ReconciliationRecord {
        mchid: mchid.into(),
        bill_date: day.into(),
        status: status.into(),
        bill_rows: 3,
        discrepancies,
        report: "[]".into(),
        claimed_at,
        created_at: claimed_at + 5,
    };
    let first = 1_000_000;
    let second = first + STALE_CLAIM_MS + 1;
    assert!(store
        .claim_pay_reconciliation(mchid, day, first, first - STALE_CLAIM_MS, false)
        .await
        .unwrap());
    // Not stale yet: not taken.
    assert!(!store
        .claim_pay_reconciliation(mchid, day, first + 1, first + 1 - STALE_CLAIM_MS, false)
        .await
        .unwrap());
    assert!(store
        .claim_pay_reconciliation(mchid, day, second, second - STALE_CLAIM_MS, false)
        .await
        .unwrap());
    // The first run ends while the second runs: nothing written, the day still running.
    assert!(!store
        .finish_pay_reconciliation(&report(first, "discrepancies", 2))
        .await
        .unwrap());
    assert_eq!(store.pay_reconciliation(mchid, day).await.unwrap(), None);
    assert!(store
        .finish_pay_reconciliation(&report(second, "clean", 0))
        .await
        .unwrap());
    // …or after it: the second's report stays.
    assert!(!store
        .finish_pay_reconciliation(&report(first, "discrepancies", 2))
        .await
        .unwrap());
    let stored = store.pay_reconciliation(mchid, day).await.unwrap().unwrap();
    assert_eq!(stored, report(second, "clean", 0));
    // A failed run's release does not remove another's report either.
    store
        .release_pay_reconciliation(mchid, day, first)
        .await
        .unwrap();
    assert_eq!(
        store.pay_reconciliation(mchid, day).await.unwrap(),
        Some(stored)
    );
}

#[tokio::test]
async fn a_taken_over_claim_writes_nothing_on_sqlite() {
    a_taken_over_claim_writes_nothing(&sqlite_url()).await;
}

#[tokio::test]
async fn a_taken_over_claim_writes_nothing_on_postgres() {
    let db = PgDatabase::create().await;
    a_taken_over_claim_writes_nothing(db.url()).await;
}

/// A run still working after the claim went stale (WeChat's bill slow to come) is taken over
/// by another; whichever ends first, the day has one report (the second run's), counted once
/// and sent as one event, and the first run answers 409.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_taken_over_while_running_stores_counts_and_sends_nothing() {
    let t = PayWorld::new().await;
    t.next_beijing_day_at(1, 0);
    let db = sqlite_url();
    let mut config = t.config(&db);
    config.pay_reconcile_at = "off".into();
    let s = t.spawn_with(config).await;
    let appid = t.w.appid.clone();
    let mchid = t.mchid();
    t.order_and_pay(&s, &appid, "takeover_0001", 500).await;
    exec(
        &db,
        "UPDATE pay_orders SET amount = 499 WHERE out_trade_no = 'takeover_0001'",
    )
    .await;
    let day = t.next_beijing_day_at(10, 5);
    let runs = format!("/v1/admin/merchants/{mchid}/reconciliations");
    // The first bill download is slow: the first run is still at it when taken over.
    t.w.sim
        .sim()
        .add_fault(Fault::latency("/v3/billdownload/file", 3000).times(1));
    let first = t.admin(&s, "POST", &runs, Some(json!({"bill_date": day})));
    let second = async {
        common::within(Duration::from_secs(30), "the first run's claim", || async {
            count(
                &db,
                "SELECT COUNT(*) AS n FROM pay_reconciliations WHERE status = 'running'",
            )
            .await
                == 1
        })
        .await;
        // Its claim is now older than STALE_CLAIM_MS, as if its instance had died.
        exec(
            &db,
            &format!(
                "UPDATE pay_reconciliations SET claimed_at = claimed_at - {}",
                STALE_CLAIM_MS + 60_000
            ),
        )
        .await;
        let answer = t
            .admin(&s, "POST", &runs, Some(json!({"bill_date": day})))
            .await;
        // Other findings for a first run that would still compare after this.
        exec(
            &db,
            "UPDATE pay_orders SET amount = 498 WHERE out_trade_no = 'takeover_0001'",
        )
        .await;
        answer
    };
    let ((st1, v1), (st2, v2)) = tokio::join!(first, second);
    assert_eq!(st2, 200, "{v2}");
    assert_eq!(v2["discrepancies"], 1, "{v2}");
    assert_eq!(st1, 409, "the run taken over: {v1}");
    let (st, stored) = t.admin(&s, "GET", &format!("{runs}/{day}"), None).await;
    assert_eq!(st, 200, "{stored}");
    assert_eq!(stored["created_at"], v2["created_at"], "{stored}");
    assert_eq!(stored["items"], v2["items"], "{stored}");
    assert_eq!(
        t.events(&s, &appid, "PAYMENT.RECONCILIATION").await.len(),
        1
    );
    assert_eq!(runs_counted(&t, &s, &mchid).await, 1, "counted once");
}

/// A discrepancy about an app this merchant does not serve (an order of another app under the
/// same mchid) is in the administrator's report, and in no app's event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_apps_items_stay_in_the_admin_report() {
    let t = PayWorld::new().await;
    t.next_beijing_day_at(1, 0);
    let db = sqlite_url();
    let mut config = t.config(&db);
    config.pay_reconcile_at = "off".into();
    let s = t.spawn_with(config).await;
    let appid = t.w.appid.clone();
    let mchid = t.mchid();
    t.order_and_pay(&s, &appid, "own_0001", 500).await;
    exec(
        &db,
        "UPDATE pay_orders SET amount = 499 WHERE out_trade_no = 'own_0001'",
    )
    .await;
    // Paid here that day for another app, absent from the bill: `missing_there`, its appid.
    exec(
        &db,
        "INSERT INTO pay_orders (mchid, out_trade_no, appid, description, amount, openid, attach, \
         time_expire, state, prepay_id, transaction_id, success_time, paid_at, refunded, created_at, updated_at) \
         SELECT mchid, 'foreign_0002', 'wxforeignapp00001', description, 777, openid, attach, time_expire, \
         state, prepay_id, '4200000000foreign', success_time, paid_at, refunded, created_at, updated_at \
         FROM pay_orders WHERE out_trade_no = 'own_0001'",
    )
    .await;
    let day = t.next_beijing_day_at(10, 5);
    let runs = format!("/v1/admin/merchants/{mchid}/reconciliations");
    let (st, report) = t
        .admin(&s, "POST", &runs, Some(json!({"bill_date": day})))
        .await;
    assert_eq!(st, 200, "{report}");
    assert_eq!(
        kinds(&report["items"]),
        vec![
            ("amount_differs".into(), "own_0001".into(), None),
            ("missing_there".into(), "foreign_0002".into(), None),
        ],
        "{report}"
    );
    let events = t.events(&s, &appid, "PAYMENT.RECONCILIATION").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        kinds(&events[0]["payload"]["items"]),
        vec![("amount_differs".into(), "own_0001".into(), None)],
        "only the app's own item: {}",
        events[0]["payload"]
    );
    assert!(
        !events[0]["payload"].to_string().contains("foreign"),
        "{}",
        events[0]["payload"]
    );
}
