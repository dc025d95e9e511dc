//! The payments' admin views (`/v1/admin/pay/…`), against the in-process WeChat Pay simulator
//! on SQLite and PostgreSQL: orders placed through the service and paid by the "phone", the
//! simulator's notifications (a duplicate, a probe, an amount mismatch) stored in the inbox,
//! refunds in `pay_refunds`; then each list read back whole, by every filter and page by
//! page, refused without an admin key or with a bad query, and no answer carrying a key.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use common::{sqlite_url, world, World, KEY};
use serde_json::{json, Value};
use weapp::TokenMode;
use weapp_server::config::{AdminConfig, ClientConfig, MerchantConfig, Secret};
use weapp_server::{Config, ServerHandle};
use weapp_sim::Sim;
use weapp_test_support::PgDatabase;

const ADMIN_KEY: &str = "admin-key-0123456789abcdef";
const SHOP_KEY: &str = "shop-key-0123456789abcdef";
const OPENID: &str = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o";

/// The simulator's virtual clock as the server's: notifications are timed by it.
#[derive(Debug, Clone)]
struct SimClock(Sim);

impl weapp::clock::Clock for SimClock {
    fn now_ms(&self) -> i64 {
        self.0.now_ms()
    }
}

struct V {
    w: World,
    /// The first app's merchant, as the simulator issued it.
    a: Value,
    /// The other app's merchant.
    b: Value,
    port: u16,
    /// Every answer of the admin API read in the test (checked for secrets at the end).
    answers: std::sync::Mutex<Vec<String>>,
}

async fn issue(w: &World, appid: &str) -> Value {
    let (s, v) = w
        .call(
            "POST",
            format!("{}/_sim/pay/merchants", w.sim.url()),
            None,
            Some(json!({ "appids": [appid] })),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    v
}

fn mchid(issued: &Value) -> String {
    issued["mchid"].as_str().unwrap().to_owned()
}

impl V {
    async fn new() -> V {
        let w = world().await;
        let a = issue(&w, &w.appid).await;
        let b = issue(&w, &w.other_appid).await;
        V {
            w,
            a,
            b,
            port: weapp_test_support::free_port(),
            answers: std::sync::Mutex::default(),
        }
    }

    fn merchant(&self, issued: &Value, appid: &str) -> MerchantConfig {
        let mchid = mchid(issued);
        MerchantConfig {
            mchid: mchid.clone(),
            appids: vec![appid.into()],
            serial_no: issued["merchant_serial_no"].as_str().unwrap().into(),
            private_key_file: None,
            private_key_env: None,
            private_key: Some(Secret::new(
                issued["merchant_private_key"].as_str().unwrap(),
            )),
            apiv3_key: Some(Secret::new(issued["apiv3_key"].as_str().unwrap())),
            apiv3_key_env: None,
            public_key_id: issued["wechatpay_public_key_id"].as_str().map(Into::into),
            public_key_file: None,
            public_key: issued["wechatpay_public_key"].as_str().map(Into::into),
            platform_certificates: false,
            api_base: self.w.sim.url().into(),
            // The simulator notifies the server itself (on the port chosen up front).
            notify_url: format!("http://127.0.0.1:{}/v1/pay/{mchid}/notify", self.port),
        }
    }

    async fn spawn(&self, database_url: &str) -> ServerHandle {
        let w = &self.w;
        let mut c: Config = w.config(database_url, None, TokenMode::Stable);
        c.listen = format!("127.0.0.1:{}", self.port).parse().unwrap();
        c.clients.push(ClientConfig {
            name: "shop".into(),
            key: Some(SHOP_KEY.into()),
            key_env: None,
            key_sha256: None,
            apps: vec![w.appid.clone(), w.other_appid.clone()],
            scopes: Some(vec!["pay:write".into()]),
        });
        c.admins = vec![AdminConfig {
            name: "ops".into(),
            key: Some(Secret::new(ADMIN_KEY)),
            key_env: None,
            key_sha256: None,
        }];
        c.merchants = vec![
            self.merchant(&self.a, &w.appid),
            self.merchant(&self.b, &w.other_appid),
        ];
        // The test reads the lists many times over (paging, waiting for the inbox).
        c.admin_rate_limit_per_minute = 0;
        c.clock = Some(Arc::new(SimClock(w.sim.sim().clone())));
        weapp_server::spawn(c).await.unwrap()
    }

    /// `GET` an admin route with the admin key; `(status, body)`, the body kept for the
    /// secrets check.
    async fn admin(&self, s: &ServerHandle, path_and_query: &str) -> (u16, Value) {
        let (st, v) = self
            .w
            .call(
                "GET",
                format!("{}{path_and_query}", s.url()),
                Some(ADMIN_KEY),
                None,
            )
            .await;
        self.answers.lock().unwrap().push(v.to_string());
        (st, v)
    }

    /// A list read whole (`limit`: the page size), following `next_after`; each page checked
    /// to hold at most `limit` rows.
    async fn all(&self, s: &ServerHandle, path: &str, field: &str, limit: usize) -> Vec<Value> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut rows = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..50 {
            let q = match &after {
                Some(a) => format!("{path}{sep}limit={limit}&after={}", urlencode(a)),
                None => format!("{path}{sep}limit={limit}"),
            };
            let (st, v) = self.admin(s, &q).await;
            assert_eq!(st, 200, "{q}: {v}");
            let page = v[field].as_array().unwrap().clone();
            assert!(page.len() <= limit, "{q}: {v}");
            rows.extend(page);
            match v["next_after"].as_str() {
                Some(a) => after = Some(a.to_owned()),
                None => return rows,
            }
        }
        panic!("{path}: paging never ends");
    }

    async fn order(&self, s: &ServerHandle, appid: &str, no: &str, amount: i64) -> Value {
        let (st, v) = self
            .w
            .call(
                "POST",
                format!("{}/v1/apps/{appid}/pay/orders", s.url()),
                Some(SHOP_KEY),
                Some(json!({"out_trade_no": no, "description": "A cup of tea", "amount": amount, "openid": OPENID})),
            )
            .await;
        assert_eq!(st, 200, "{v}");
        v
    }

    async fn pay(&self, created: &Value) {
        let rp = &created["request_payment"];
        let (s, v) = self
            .w
            .call(
                "POST",
                format!("{}/_sim/pay/request_payment", self.w.sim.url()),
                None,
                Some(json!({"appid": rp["appId"], "openid": OPENID, "timeStamp": rp["timeStamp"],
                    "nonceStr": rp["nonceStr"], "package": rp["package"], "signType": rp["signType"],
                    "paySign": rp["paySign"], "action": "pay"})),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["errMsg"], "requestPayment:ok", "{v}");
    }

    /// The simulator sends its latest notification about `no` again (`notify`: a copy;
    /// `probe`: a probe signature).
    async fn again(&self, no: &str, what: &str) {
        let (s, v) = self
            .w
            .call(
                "POST",
                format!(
                    "{}/_sim/pay/merchants/{}/orders/{no}/{what}",
                    self.w.sim.url(),
                    mchid(&self.a)
                ),
                None,
                None,
            )
            .await;
        assert_eq!(s, 200, "{v}");
    }

    /// Waits until the inbox (through the admin API) satisfies `f`.
    async fn inbox_until(&self, s: &ServerHandle, what: &str, f: impl Fn(&[Value]) -> bool) {
        for _ in 0..200 {
            let rows = self
                .all(s, "/v1/admin/pay/notifications", "notifications", 100)
                .await;
            if f(&rows) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the inbox never showed {what}");
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Runs a statement on a SQLite or PostgreSQL database.
async fn exec(database_url: &str, statement: &str) {
    if database_url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(database_url).await.unwrap();
        sqlx::query(statement).execute(&pool).await.unwrap();
    } else {
        let pool = sqlx::PgPool::connect(database_url).await.unwrap();
        sqlx::query(statement).execute(&pool).await.unwrap();
    }
}

fn field<'a>(rows: &'a [Value], name: &str) -> Vec<&'a str> {
    rows.iter().map(|r| r[name].as_str().unwrap()).collect()
}

/// The whole of the views on one database.
async fn views(database_url: &str) {
    let v = V::new().await;
    let s = v.spawn(database_url).await;
    let (app_a, app_b) = (v.w.appid.clone(), v.w.other_appid.clone());
    let (mch_a, mch_b) = (mchid(&v.a), mchid(&v.b));

    // Five orders for the first app, one for the other.
    let mut created = Vec::new();
    for (i, no) in [
        "view_0001",
        "view_0002",
        "view_0003",
        "view_0004",
        "view_0005",
    ]
    .iter()
    .enumerate()
    {
        created.push(v.order(&s, &app_a, no, 100 + i as i64).await);
    }
    v.order(&s, &app_b, "view_0006", 600).await;

    // view_0001 paid; view_0002 paid 101 where the order (changed here) says 990: a mismatch.
    v.pay(&created[0]).await;
    // One after the other, so that the inbox's order is known (newest first: view_0002's).
    v.inbox_until(&s, "view_0001's notification applied", |rows| {
        rows.len() == 1 && rows[0]["outcome"] == "applied"
    })
    .await;
    exec(
        database_url,
        "UPDATE pay_orders SET amount = 990 WHERE out_trade_no = 'view_0002'",
    )
    .await;
    v.pay(&created[1]).await;
    v.inbox_until(&s, "two notifications applied", |rows| {
        rows.len() == 2 && rows.iter().all(|r| r["outcome"] != "pending")
    })
    .await;
    // A copy of view_0001's (one more delivery) and a probe (refused, stored nowhere).
    v.again("view_0001", "notify").await;
    v.again("view_0001", "probe").await;
    v.inbox_until(&s, "the copy counted", |rows| {
        rows.iter()
            .any(|r| r["business_no"] == "view_0001" && r["deliveries"] == 2)
    })
    .await;

    // Refunds as the refunds' logic stores them.
    for (no, order, status, at) in [
        ("refund_01", "view_0001", "SUCCESS", 1_000),
        ("refund_02", "view_0001", "PROCESSING", 2_000),
        ("refund_03", "view_0003", "CLOSED", 3_000),
    ] {
        exec(
            database_url,
            &format!(
                "INSERT INTO pay_refunds (mchid, out_refund_no, out_trade_no, appid, amount, reason, status, created_at, updated_at) \
                 VALUES ('{mch_a}', '{no}', '{order}', '{app_a}', 10, 'broken cup', '{status}', {at}, {at})"
            ),
        )
        .await;
    }

    // ------------------------------------------------------------------ orders
    let orders = v.all(&s, "/v1/admin/pay/orders", "orders", 100).await;
    assert_eq!(orders.len(), 6, "{orders:?}");
    // Newest first (created_at, then mchid, then out_trade_no, descending).
    let keys: Vec<(i64, String, String)> = orders
        .iter()
        .map(|o| {
            (
                o["created_at"].as_i64().unwrap(),
                o["mchid"].as_str().unwrap().to_owned(),
                o["out_trade_no"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let mut sorted = keys.clone();
    sorted.sort_by(|x, y| y.cmp(x));
    assert_eq!(keys, sorted);
    // Page by page (2, then 1 at a time): the same rows, in the same order, none twice.
    for limit in [2, 1] {
        let paged = v.all(&s, "/v1/admin/pay/orders", "orders", limit).await;
        assert_eq!(
            field(&paged, "out_trade_no"),
            field(&orders, "out_trade_no")
        );
    }
    let paid = v
        .all(&s, "/v1/admin/pay/orders?state=SUCCESS", "orders", 100)
        .await;
    assert_eq!(field(&paid, "out_trade_no"), ["view_0001"]);
    assert_eq!(paid[0]["amount"], 100);
    assert!(paid[0]["transaction_id"]
        .as_str()
        .is_some_and(|t| !t.is_empty()));
    assert_eq!(paid[0]["openid"], OPENID);
    let unpaid = v
        .all(&s, "/v1/admin/pay/orders?state=NOTPAY", "orders", 2)
        .await;
    assert_eq!(
        field(&unpaid, "out_trade_no")
            .into_iter()
            .collect::<BTreeSet<_>>(),
        BTreeSet::from([
            "view_0002",
            "view_0003",
            "view_0004",
            "view_0005",
            "view_0006"
        ]),
        "the mismatched order is not paid"
    );
    let of_b = v
        .all(
            &s,
            &format!("/v1/admin/pay/orders?mchid={mch_b}"),
            "orders",
            100,
        )
        .await;
    assert_eq!(field(&of_b, "out_trade_no"), ["view_0006"]);
    let of_a = v
        .all(
            &s,
            &format!("/v1/admin/pay/orders?appid={app_a}"),
            "orders",
            100,
        )
        .await;
    assert_eq!(of_a.len(), 5);
    assert!(of_a
        .iter()
        .all(|o| o["appid"] == app_a.as_str() && o["mchid"] == mch_a.as_str()));
    let none = v
        .all(
            &s,
            &format!("/v1/admin/pay/orders?mchid={mch_b}&state=SUCCESS"),
            "orders",
            100,
        )
        .await;
    assert!(none.is_empty());
    let (_, empty) = v.admin(&s, "/v1/admin/pay/orders?state=REFUND").await;
    assert_eq!(empty, json!({"orders": [], "next_after": null}));

    // ----------------------------------------------------------------- refunds
    let refunds = v.all(&s, "/v1/admin/pay/refunds", "refunds", 1).await;
    assert_eq!(
        field(&refunds, "out_refund_no"),
        ["refund_03", "refund_02", "refund_01"]
    );
    assert_eq!(refunds[0]["reason"], "broken cup");
    assert_eq!(refunds[0]["amount"], 10);
    let of_order = v
        .all(
            &s,
            "/v1/admin/pay/refunds?out_trade_no=view_0001",
            "refunds",
            100,
        )
        .await;
    assert_eq!(
        field(&of_order, "out_refund_no"),
        ["refund_02", "refund_01"]
    );
    let done = v
        .all(&s, "/v1/admin/pay/refunds?status=SUCCESS", "refunds", 100)
        .await;
    assert_eq!(field(&done, "out_refund_no"), ["refund_01"]);
    let of_b = v
        .all(
            &s,
            &format!("/v1/admin/pay/refunds?mchid={mch_b}"),
            "refunds",
            100,
        )
        .await;
    assert!(of_b.is_empty());

    // ----------------------------------------------------------- notifications
    let notes = v
        .all(&s, "/v1/admin/pay/notifications", "notifications", 1)
        .await;
    assert_eq!(
        field(&notes, "business_no"),
        ["view_0002", "view_0001"],
        "newest first"
    );
    let (mismatch, applied) = (&notes[0], &notes[1]);
    assert_eq!(mismatch["outcome"], "mismatch");
    assert_eq!(mismatch["alert"], true);
    assert_eq!(mismatch["deliveries"], 1);
    assert_eq!(applied["outcome"], "applied");
    assert_eq!(applied["alert"], false);
    assert_eq!(applied["deliveries"], 2, "the copy is one more delivery");
    assert_eq!(applied["event_type"], "TRANSACTION.SUCCESS");
    assert_eq!(applied["mchid"], mch_a.as_str());
    assert!(applied["received_at"].as_i64().unwrap() > 0);
    assert!(applied["applied_at"].as_i64().unwrap() > 0);
    assert!(applied.get("resource").is_none() && applied.get("envelope").is_none());
    let alerts = v
        .all(
            &s,
            "/v1/admin/pay/notifications?outcome=mismatch",
            "notifications",
            100,
        )
        .await;
    assert_eq!(field(&alerts, "business_no"), ["view_0002"]);
    let pending = v
        .all(
            &s,
            "/v1/admin/pay/notifications?outcome=pending",
            "notifications",
            100,
        )
        .await;
    assert!(pending.is_empty(), "{pending:?}");
    let of_b = v
        .all(
            &s,
            &format!("/v1/admin/pay/notifications?mchid={mch_b}"),
            "notifications",
            100,
        )
        .await;
    assert!(of_b.is_empty());
    // One, with its decrypted resource.
    let (st, detail) = v
        .admin(
            &s,
            &format!("/v1/admin/pay/notifications/{}", applied["id"]),
        )
        .await;
    assert_eq!(st, 200, "{detail}");
    assert_eq!(detail["notification_id"], applied["notification_id"]);
    assert_eq!(detail["outcome"], "applied");
    assert_eq!(detail["resource"]["out_trade_no"], "view_0001");
    assert_eq!(detail["resource"]["amount"]["total"], 100);
    assert_eq!(detail["resource"]["payer"]["openid"], OPENID);
    assert!(detail.get("envelope").is_none());
    let (st, v404) = v.admin(&s, "/v1/admin/pay/notifications/999999").await;
    assert_eq!(st, 404, "{v404}");
    assert_eq!(v404["error"]["code"], "not_found");
    // The refused probe: counted on this instance, stored nowhere.
    let (st, refused) = v
        .admin(
            &s,
            &format!("/v1/admin/pay/notifications/refused?mchid={mch_a}"),
        )
        .await;
    assert_eq!(st, 200, "{refused}");
    assert_eq!(
        refused["counts"],
        json!([{"mchid": mch_a, "outcome": "refused", "count": 1}])
    );
    assert!(refused["instance"].as_str().is_some_and(|i| !i.is_empty()));
    assert_eq!(notes.len(), 2, "the probe is not in the inbox");

    // The reads of payers' data are audited.
    let (_, audit) = v.admin(&s, "/v1/admin/audit?limit=100").await;
    let actions: Vec<&str> = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert!(actions.contains(&"pay.orders.read"), "{actions:?}");
    assert!(actions.contains(&"pay.notification.read"), "{actions:?}");

    // No answer carries a key: the merchants' private keys and APIv3 keys, the admin's and the
    // shop's keys, or a notification's envelope (its encrypted resource).
    let answers = v.answers.lock().unwrap().join("\n");
    for issued in [&v.a, &v.b] {
        let apiv3 = issued["apiv3_key"].as_str().unwrap();
        assert!(!answers.contains(apiv3), "an APIv3 key in an answer");
        let pem = issued["merchant_private_key"].as_str().unwrap();
        for line in pem.lines().filter(|l| l.len() > 40) {
            assert!(!answers.contains(line), "a private key in an answer");
        }
    }
    for secret in [ADMIN_KEY, SHOP_KEY, "ciphertext", "associated_data"] {
        assert!(!answers.contains(secret), "{secret} in an answer");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_refunds_and_notifications_are_listed_filtered_and_paged_on_sqlite() {
    views(&sqlite_url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_refunds_and_notifications_are_listed_filtered_and_paged_on_postgres() {
    let db = PgDatabase::create().await;
    views(db.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_payment_views_need_an_admin_key_and_refuse_bad_queries() {
    let v = V::new().await;
    let s = v.spawn(&sqlite_url()).await;
    let routes = [
        "/v1/admin/pay/orders",
        "/v1/admin/pay/refunds",
        "/v1/admin/pay/notifications",
        "/v1/admin/pay/notifications/1",
        "/v1/admin/pay/notifications/refused",
    ];
    for route in routes {
        for bearer in [None, Some(KEY), Some(SHOP_KEY)] {
            let (st, body) =
                v.w.call("GET", format!("{}{route}", s.url()), bearer, None)
                    .await;
            assert_eq!(st, 401, "{route} with {bearer:?}: {body}");
            assert_eq!(body["error"]["code"], "unauthorized", "{body}");
        }
    }
    for bad in [
        "/v1/admin/pay/orders?limit=0",
        "/v1/admin/pay/orders?limit=101",
        "/v1/admin/pay/orders?mchid=abc",
        "/v1/admin/pay/orders?state=paid",
        "/v1/admin/pay/orders?appid=wx%27%20OR%201=1",
        "/v1/admin/pay/orders?after=yesterday",
        "/v1/admin/pay/orders?after=1.2.x%27",
        "/v1/admin/pay/orders?color=red",
        "/v1/admin/pay/refunds?out_trade_no=a%20b",
        "/v1/admin/pay/refunds?status=done!",
        "/v1/admin/pay/refunds?after=..",
        "/v1/admin/pay/notifications?outcome=MISMATCH",
        "/v1/admin/pay/notifications?after=last",
        "/v1/admin/pay/notifications/first",
        "/v1/admin/pay/notifications/refused?mchid=x",
    ] {
        let (st, body) = v.admin(&s, bad).await;
        assert_eq!(st, 400, "{bad}: {body}");
        assert!(body["error"]["code"].is_string(), "{bad}: {body}");
    }
    // Empty filters are no filters.
    let (st, body) = v
        .admin(&s, "/v1/admin/pay/orders?mchid=&appid=&state=")
        .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body, json!({"orders": [], "next_after": null}));
}
