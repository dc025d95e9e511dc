//! The payment tests' world: the simulator's merchants, a notification relay standing in for
//! the network (recording every notification and forwarding it to every server at once), a
//! webhook sink, and the calls a backend and a phone make.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde_json::{json, Value};
use weapp::TokenMode;
use weapp_server::config::{ClientConfig, MerchantConfig, PushConfig, Secret};
use weapp_server::{Config, ServerHandle};
use weapp_sim::Sim;

use crate::common::{world, World, KEY};

pub const SHOP_KEY: &str = "shop-key-0123456789abcdef";
pub const OPENID: &str = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o";
pub const AES_KEY: &str = "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR";
pub const WEBHOOK_SECRET: &str = "whsec_test_0123456789";

/// The simulator's virtual clock as the server's: advancing it ages notifications.
#[derive(Debug, Clone)]
pub struct SimClock(pub Sim);

impl weapp::clock::Clock for SimClock {
    fn now_ms(&self) -> i64 {
        self.0.now_ms()
    }
}

// ------------------------------------------------------------------------- the relay

/// One notification as it crossed the relay, and the answer of the (first) server.
#[derive(Debug, Clone)]
pub struct Crossed {
    pub headers: HeaderMap,
    pub body: Bytes,
    pub status: u16,
}

/// Stands between the simulator and the servers: records every notification and forwards it
/// to every server at once (two instances receiving copies together).
#[derive(Clone, Default)]
pub struct Relay {
    pub targets: Arc<Mutex<Vec<String>>>,
    pub seen: Arc<Mutex<Vec<Crossed>>>,
    pub url: String,
}

pub async fn relay_notify(
    State(r): State<Relay>,
    Path(mchid): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> (axum::http::StatusCode, String) {
    let targets = r.targets.lock().unwrap().clone();
    let sends: Vec<_> = targets
        .iter()
        .map(|t| {
            let (url, headers, body) = (
                format!("{t}/v1/pay/{mchid}/notify"),
                headers.clone(),
                body.clone(),
            );
            tokio::spawn(async move { post_notification(&url, &headers, body).await })
        })
        .collect();
    let mut answers = Vec::new();
    for s in sends {
        answers.push(s.await.unwrap());
    }
    let (status, text) = answers.into_iter().next().unwrap_or((502, String::new()));
    r.seen.lock().unwrap().push(Crossed {
        headers,
        body,
        status,
    });
    (axum::http::StatusCode::from_u16(status).unwrap(), text)
}

/// POSTs a notification (its WeChat Pay headers and raw bytes) to `url`.
pub async fn post_notification(url: &str, headers: &HeaderMap, body: Bytes) -> (u16, String) {
    let mut req = reqwest::Client::new().post(url).body(body);
    for (k, v) in headers {
        let name = k.as_str();
        if name.starts_with("wechatpay-") || name == "content-type" || name == "request-id" {
            req = req.header(name, v.to_str().unwrap());
        }
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

impl Relay {
    pub async fn start() -> Relay {
        let mut relay = Relay::default();
        let app = axum::Router::new()
            .route("/notify/{mchid}", axum::routing::post(relay_notify))
            .with_state(relay.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        relay.url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        relay
    }

    pub fn forward_to(&self, server: &ServerHandle) {
        self.targets.lock().unwrap().push(server.url().to_owned());
    }

    pub fn seen(&self) -> Vec<Crossed> {
        self.seen.lock().unwrap().clone()
    }

    pub async fn wait_for(&self, n: usize) -> Vec<Crossed> {
        for _ in 0..200 {
            if self.seen().len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let seen = self.seen();
        assert!(
            seen.len() >= n,
            "expected {n} notifications, got {}",
            seen.len()
        );
        seen
    }
}

// ------------------------------------------------------------------------- the webhook sink

#[derive(Clone, Default)]
pub struct Sink {
    pub received: Arc<Mutex<Vec<Value>>>,
    pub url: String,
}

impl Sink {
    pub async fn start() -> Sink {
        let mut sink = Sink::default();
        let state = sink.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let s = state.clone();
                async move {
                    let sig = headers
                        .get("weapp-signature")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned();
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_secs() as i64;
                    assert!(
                        weapp_server::push::outbox::verify(WEBHOOK_SECRET, &sig, &body, now, 300),
                        "bad webhook signature"
                    );
                    s.received
                        .lock()
                        .unwrap()
                        .push(serde_json::from_slice(&body).unwrap());
                    axum::http::StatusCode::OK
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        sink.url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        sink
    }

    pub fn events(&self) -> Vec<Value> {
        self.received.lock().unwrap().clone()
    }
}

// ------------------------------------------------------------------------- the harness

pub struct T {
    pub w: World,
    pub relay: Relay,
    pub sink: Sink,
    /// The app's merchant as the simulator issued it.
    pub issued: Value,
    /// The other app's merchant.
    pub other_issued: Value,
}

pub async fn issue(w: &World, appid: &str) -> Value {
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

pub fn merchant(issued: &Value, appid: &str, sim: &str, relay: &Relay) -> MerchantConfig {
    let mchid = issued["mchid"].as_str().unwrap();
    MerchantConfig {
        mchid: mchid.into(),
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
        api_base: sim.into(),
        notify_url: format!("{}/notify/{mchid}", relay.url),
    }
}

impl T {
    pub async fn new() -> T {
        let w = world().await;
        let relay = Relay::start().await;
        let sink = Sink::start().await;
        let issued = issue(&w, &w.appid).await;
        let other_issued = issue(&w, &w.other_appid).await;
        T {
            w,
            relay,
            sink,
            issued,
            other_issued,
        }
    }

    pub fn mchid(&self) -> String {
        self.issued["mchid"].as_str().unwrap().to_owned()
    }

    pub fn config(&self, database_url: &str) -> Config {
        let w = &self.w;
        let mut c = w.config(database_url, None, TokenMode::Stable);
        c.apps[0].push = Some(PushConfig {
            token: "pushtoken123".into(),
            encoding_aes_key: Some(AES_KEY.into()),
            mode: None,
            webhook_url: Some(self.sink.url.clone()),
            webhook_secret: Some(WEBHOOK_SECRET.into()),
            replay_window_secs: 300,
        });
        c.webhook_retry_base_ms = 20;
        c.webhook_retry_max_secs = 1;
        c.clients.push(ClientConfig {
            name: "shop".into(),
            key: Some(SHOP_KEY.into()),
            key_env: None,
            key_sha256: None,
            apps: vec![w.appid.clone()],
            scopes: Some(vec!["pay:write".into(), "events:read".into()]),
        });
        c.merchants = vec![
            merchant(&self.issued, &w.appid, w.sim.url(), &self.relay),
            merchant(&self.other_issued, &w.other_appid, w.sim.url(), &self.relay),
        ];
        c.clock = Some(Arc::new(SimClock(w.sim.sim().clone())));
        c
    }

    pub async fn spawn(&self, database_url: &str) -> ServerHandle {
        self.spawn_with(database_url, |_| {}).await
    }

    /// A server whose configuration `tweak` changed first.
    pub async fn spawn_with(
        &self,
        database_url: &str,
        tweak: impl FnOnce(&mut Config),
    ) -> ServerHandle {
        let mut config = self.config(database_url);
        tweak(&mut config);
        let server = weapp_server::spawn(config).await.unwrap();
        self.relay.forward_to(&server);
        server
    }

    /// Places `no` for `amount` at `server` (200 expected); the created order.
    pub async fn placed(&self, server: &ServerHandle, no: &str, amount: i64) -> Value {
        let appid = self.w.appid.clone();
        let (s, v) = self
            .order(server, SHOP_KEY, &appid, order_body(no, amount))
            .await;
        assert_eq!(s, 200, "{v}");
        v
    }

    /// Turns the simulator's notifications for the app's merchant on or off.
    pub async fn deliver(&self, on: bool) {
        let (s, v) = self
            .w
            .call(
                "PUT",
                format!(
                    "{}/_sim/pay/merchants/{}/notifications",
                    self.w.sim.url(),
                    self.mchid()
                ),
                None,
                Some(json!({ "deliver": on })),
            )
            .await;
        assert_eq!(s, 200, "{v}");
    }

    /// Moves the simulator's (and so the servers') clock forward.
    pub fn advance(&self, secs: i64) {
        self.w.sim.sim().advance(secs);
    }

    /// `POST /v1/apps/{appid}/pay/refunds` with the shop's key.
    pub async fn refund(&self, server: &ServerHandle, body: Value) -> (u16, Value) {
        self.w
            .call(
                "POST",
                format!("{}/v1/apps/{}/pay/refunds", server.url(), self.w.appid),
                Some(SHOP_KEY),
                Some(body),
            )
            .await
    }

    /// `GET /v1/apps/{appid}/pay/refunds/{no}` (200 expected).
    pub async fn get_refund(&self, server: &ServerHandle, no: &str) -> Value {
        let (s, v) = self
            .w
            .call(
                "GET",
                format!("{}/v1/apps/{}/pay/refunds/{no}", server.url(), self.w.appid),
                Some(SHOP_KEY),
                None,
            )
            .await;
        assert_eq!(s, 200, "{v}");
        v
    }

    /// Ends a PROCESSING refund at the simulator (`SUCCESS`, `ABNORMAL`, `CLOSED`).
    pub async fn end_refund(&self, no: &str, status: &str) {
        let (s, v) = self
            .w
            .call(
                "POST",
                format!("{}/_sim/pay/refunds/{no}", self.w.sim.url()),
                None,
                Some(json!({ "status": status, "mchid": self.mchid() })),
            )
            .await;
        assert_eq!(s, 200, "{v}");
    }

    /// The order as the simulator (WeChat) has it.
    pub async fn sim_order(&self, no: &str) -> Value {
        let (s, v) = self
            .w
            .call(
                "GET",
                format!(
                    "{}/_sim/pay/merchants/{}/orders",
                    self.w.sim.url(),
                    self.mchid()
                ),
                None,
                None,
            )
            .await;
        assert_eq!(s, 200, "{v}");
        v["orders"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["out_trade_no"] == no)
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// Waits until the order's `field` is `want` at `server`; the order.
    pub async fn wait_order(
        &self,
        server: &ServerHandle,
        no: &str,
        field: &str,
        want: &str,
    ) -> Value {
        for _ in 0..400 {
            let o = self.get_order(server, no).await;
            if o[field] == want {
                return o;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "order {no}: {field} never became {want}: {}",
            self.get_order(server, no).await
        );
    }

    /// Waits until the refund's status is `want` at `server`; the refund.
    pub async fn wait_refund(&self, server: &ServerHandle, no: &str, want: &str) -> Value {
        for _ in 0..400 {
            let r = self.get_refund(server, no).await;
            if r["status"] == want {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "refund {no} never became {want}: {}",
            self.get_refund(server, no).await
        );
    }

    /// `POST /v1/apps/{appid}/pay/orders` with `key`.
    pub async fn order(
        &self,
        server: &ServerHandle,
        key: &str,
        appid: &str,
        body: Value,
    ) -> (u16, Value) {
        self.w
            .call(
                "POST",
                format!("{}/v1/apps/{appid}/pay/orders", server.url()),
                Some(key),
                Some(body),
            )
            .await
    }

    pub async fn get_order(&self, server: &ServerHandle, no: &str) -> Value {
        let (s, v) = self
            .w
            .call(
                "GET",
                format!("{}/v1/apps/{}/pay/orders/{no}", server.url(), self.w.appid),
                Some(SHOP_KEY),
                None,
            )
            .await;
        assert_eq!(s, 200, "{v}");
        v
    }

    /// What the phone does with the order's `request_payment`.
    pub async fn pay(&self, created: &Value) {
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

    /// The simulator sends its latest notification about `no` again (`what`: `notify` for a
    /// duplicate, `probe` for a probe signature).
    pub async fn again(&self, no: &str, what: &str) {
        let (s, v) = self
            .w
            .call(
                "POST",
                format!(
                    "{}/_sim/pay/merchants/{}/orders/{no}/{what}",
                    self.w.sim.url(),
                    self.mchid()
                ),
                None,
                None,
            )
            .await;
        assert_eq!(s, 200, "{v}");
    }

    /// The app's events of `kind`.
    pub async fn events(&self, server: &ServerHandle, kind: &str) -> Vec<Value> {
        let (s, v) = self
            .w
            .call(
                "GET",
                format!("{}/v1/apps/{}/events?after=0", server.url(), self.w.appid),
                Some(KEY),
                None,
            )
            .await;
        assert_eq!(s, 200, "{v}");
        v["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == kind)
            .cloned()
            .collect()
    }

    pub async fn wait_paid(&self, server: &ServerHandle, no: &str) -> Value {
        for _ in 0..200 {
            let o = self.get_order(server, no).await;
            if o["state"] == "SUCCESS" {
                return o;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("order {no} not paid");
    }
}

pub fn order_body(no: &str, amount: i64) -> Value {
    json!({"out_trade_no": no, "description": "A cup of tea", "amount": amount, "openid": OPENID, "attach": "table 7"})
}

/// Counts the inbox rows of a SQLite or PostgreSQL database (`business_no` given: its rows) and
/// their outcomes.
pub async fn inbox(database_url: &str, business_no: &str) -> Vec<(Option<String>, i64)> {
    use sqlx::Row;
    let sql =
        "SELECT outcome, deliveries FROM pay_notifications WHERE business_no = $1 ORDER BY id";
    let rows = if database_url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(database_url).await.unwrap();
        let rows = sqlx::query(sql)
            .bind(business_no)
            .fetch_all(&pool)
            .await
            .unwrap();
        rows.iter()
            .map(|r| {
                (
                    r.get::<Option<String>, _>("outcome"),
                    r.get::<i64, _>("deliveries"),
                )
            })
            .collect()
    } else {
        let pool = sqlx::PgPool::connect(database_url).await.unwrap();
        let rows = sqlx::query(sql)
            .bind(business_no)
            .fetch_all(&pool)
            .await
            .unwrap();
        rows.iter()
            .map(|r| {
                (
                    r.get::<Option<String>, _>("outcome"),
                    i64::from(r.get::<i32, _>("deliveries")),
                )
            })
            .collect()
    };
    rows
}

pub async fn exec(database_url: &str, statement: &str) {
    let pool = sqlx::SqlitePool::connect(database_url).await.unwrap();
    sqlx::query(statement).execute(&pool).await.unwrap();
}

pub async fn sql(database_url: &str, statement: &str, no: &str) {
    let pool = sqlx::SqlitePool::connect(database_url).await.unwrap();
    sqlx::query(statement)
        .bind(no)
        .execute(&pool)
        .await
        .unwrap();
}

/// An order's `next_query_at` as stored (SQLite or PostgreSQL).
pub async fn next_query_at(database_url: &str, no: &str) -> Option<i64> {
    use sqlx::Row;
    let sql = "SELECT next_query_at FROM pay_orders WHERE out_trade_no = $1";
    if database_url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(database_url).await.unwrap();
        let row = sqlx::query(sql).bind(no).fetch_one(&pool).await.unwrap();
        row.get::<Option<i64>, _>("next_query_at")
    } else {
        let pool = sqlx::PgPool::connect(database_url).await.unwrap();
        let row = sqlx::query(sql).bind(no).fetch_one(&pool).await.unwrap();
        row.get::<Option<i64>, _>("next_query_at")
    }
}

/// Runs `statement` (binding `no`) on SQLite or PostgreSQL.
pub async fn run(database_url: &str, statement: &str, no: &str) {
    if database_url.starts_with("sqlite:") {
        sql(database_url, statement, no).await;
    } else {
        let pool = sqlx::PgPool::connect(database_url).await.unwrap();
        sqlx::query(statement)
            .bind(no)
            .execute(&pool)
            .await
            .unwrap();
    }
}
