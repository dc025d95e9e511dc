//! A payments world for the runtime-merchant and reconciliation tests (`tests/pay_admin.rs`,
//! `tests/pay_reconcile.rs`): the simulator with a WeChat Pay merchant per app, a relay that
//! forwards WeChat's notifications to every server (as `tests/payments.rs` does), servers on
//! the simulator's virtual clock, an admin key and a shop client with `pay:write`.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde_json::{json, Value};
use weapp::TokenMode;
use weapp_server::config::{AdminConfig, ClientConfig, MerchantConfig, Secret};
use weapp_server::{Config, ServerHandle};
use weapp_sim::Sim;

use super::common::{world, World};

pub const SHOP_KEY: &str = "shop-key-0123456789abcdef";
pub const ADMIN_KEY: &str = "admin-key-pay-0123456789abcdef";
pub const OPENID: &str = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o";

/// The simulator's virtual clock as the server's.
#[derive(Debug, Clone)]
pub struct SimClock(pub Sim);

impl weapp::clock::Clock for SimClock {
    fn now_ms(&self) -> i64 {
        self.0.now_ms()
    }
}

/// Forwards every notification to every server at once (answers the first's status).
#[derive(Clone, Default)]
pub struct Relay {
    targets: Arc<Mutex<Vec<String>>>,
    pub url: String,
}

async fn relay_notify(
    State(r): State<Relay>,
    Path(mchid): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::http::StatusCode {
    let targets = r.targets.lock().unwrap().clone();
    let mut first = None;
    for t in targets {
        let mut req = reqwest::Client::new()
            .post(format!("{t}/v1/pay/{mchid}/notify"))
            .body(body.clone());
        for (k, v) in &headers {
            let name = k.as_str();
            if name.starts_with("wechatpay-") || name == "content-type" || name == "request-id" {
                req = req.header(name, v.to_str().unwrap());
            }
        }
        let status = req.send().await.map_or(502, |r| r.status().as_u16());
        first.get_or_insert(status);
    }
    axum::http::StatusCode::from_u16(first.unwrap_or(502)).unwrap()
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
}

pub struct PayWorld {
    pub w: World,
    pub relay: Relay,
    /// The app's merchant as the simulator issued it.
    pub issued: Value,
    /// The other app's merchant.
    pub other_issued: Value,
}

/// A merchant issued by the simulator for `appid`.
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

/// The issued merchant as a `[[merchants]]` entry.
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

impl PayWorld {
    pub async fn new() -> PayWorld {
        let w = world().await;
        let relay = Relay::start().await;
        let issued = issue(&w, &w.appid).await;
        let other_issued = issue(&w, &w.other_appid).await;
        PayWorld {
            w,
            relay,
            issued,
            other_issued,
        }
    }

    pub fn mchid(&self) -> String {
        self.issued["mchid"].as_str().unwrap().to_owned()
    }

    pub fn other_mchid(&self) -> String {
        self.other_issued["mchid"].as_str().unwrap().to_owned()
    }

    /// The body of `POST /v1/admin/merchants` for the other app's merchant.
    pub fn admin_body(&self) -> Value {
        let i = &self.other_issued;
        let mchid = self.other_mchid();
        json!({
            "mchid": mchid,
            "appids": [self.w.other_appid],
            "serial_no": i["merchant_serial_no"],
            "private_key": i["merchant_private_key"],
            "apiv3_key": i["apiv3_key"],
            "public_key_id": i["wechatpay_public_key_id"],
            "public_key": i["wechatpay_public_key"],
            "api_base": self.w.sim.url(),
            "notify_url": format!("{}/notify/{mchid}", self.relay.url),
        })
    }

    /// A server configuration: the app's merchant in the file, the other app's none.
    pub fn config(&self, database_url: &str) -> Config {
        let w = &self.w;
        let mut c = w.config(database_url, None, TokenMode::Stable);
        c.clients.push(ClientConfig {
            name: "shop".into(),
            key: Some(SHOP_KEY.into()),
            key_env: None,
            key_sha256: None,
            apps: vec![w.appid.clone(), w.other_appid.clone()],
            scopes: Some(vec!["pay:write".into(), "events:read".into()]),
        });
        c.admins = vec![AdminConfig {
            name: "ops".into(),
            key: Some(ADMIN_KEY.into()),
            key_env: None,
            key_sha256: None,
        }];
        c.merchants = vec![merchant(&self.issued, &w.appid, w.sim.url(), &self.relay)];
        c.registry_poll_ms = 100;
        c.clock = Some(Arc::new(SimClock(w.sim.sim().clone())));
        c
    }

    pub async fn spawn_with(&self, config: Config) -> ServerHandle {
        let server = weapp_server::spawn(config).await.unwrap();
        self.relay.forward_to(&server);
        server
    }

    pub async fn spawn(&self, database_url: &str) -> ServerHandle {
        self.spawn_with(self.config(database_url)).await
    }

    /// An admin API call.
    pub async fn admin(
        &self,
        server: &ServerHandle,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.w
            .call(
                method,
                format!("{}{path}", server.url()),
                Some(ADMIN_KEY),
                body,
            )
            .await
    }

    /// `POST /v1/apps/{appid}/pay/orders` with the shop's key.
    pub async fn order(
        &self,
        server: &ServerHandle,
        appid: &str,
        no: &str,
        amount: i64,
    ) -> (u16, Value) {
        self.w
            .call(
                "POST",
                format!("{}/v1/apps/{appid}/pay/orders", server.url()),
                Some(SHOP_KEY),
                Some(json!({"out_trade_no": no, "description": "A cup of tea", "amount": amount, "openid": OPENID})),
            )
            .await
    }

    pub async fn get_order(&self, server: &ServerHandle, appid: &str, no: &str) -> (u16, Value) {
        self.w
            .call(
                "GET",
                format!("{}/v1/apps/{appid}/pay/orders/{no}", server.url()),
                Some(SHOP_KEY),
                None,
            )
            .await
    }

    /// What the phone does with an order's `request_payment`.
    pub async fn pay(&self, request_payment: &Value) {
        let rp = request_payment;
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

    /// Places an order at `server`, pays it, waits until `server` has it paid.
    pub async fn order_and_pay(
        &self,
        server: &ServerHandle,
        appid: &str,
        no: &str,
        amount: i64,
    ) -> Value {
        let (s, created) = self.order(server, appid, no, amount).await;
        assert_eq!(s, 200, "{created}");
        self.pay(&created["request_payment"]).await;
        for _ in 0..400 {
            let (_, o) = self.get_order(server, appid, no).await;
            if o["state"] == "SUCCESS" {
                return o;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("order {no} not paid");
    }

    /// The app's events of `kind` (read with the shop's key).
    pub async fn events(&self, server: &ServerHandle, appid: &str, kind: &str) -> Vec<Value> {
        let (s, v) = self
            .w
            .call(
                "GET",
                format!("{}/v1/apps/{appid}/events?after=0", server.url()),
                Some(SHOP_KEY),
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

    /// Moves the simulator's clock (and so the servers') to `hh:mm` Beijing time of the day
    /// after the current Beijing day; returns the day left (`yyyy-MM-dd`).
    pub fn next_beijing_day_at(&self, hh: i64, mm: i64) -> String {
        let sim = self.w.sim.sim();
        let now = sim.now();
        let day_left = weapp::pay::PayTime::from_unix(now).china_date();
        let bj = now + 8 * 3600;
        let next_midnight_bj = (bj.div_euclid(86_400) + 1) * 86_400;
        let target = next_midnight_bj + hh * 3600 + mm * 60 - 8 * 3600;
        sim.advance(target - now);
        day_left
    }
}
