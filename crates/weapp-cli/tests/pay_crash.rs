//! Payments under process failure, with `weapp serve` as a real process and the WeChat Pay
//! simulator notifying it through a relay that stands for the network:
//!
//! - SIGKILL right after notifications are acknowledged: every notification answered 2xx is
//!   in the inbox after the restart and its order's one `TRANSACTION.SUCCESS` event reaches the
//!   signed webhook — nothing acknowledged is lost, nothing counted twice;
//! - the server down while WeChat notifies: WeChat's retry schedule (the simulator's clock
//!   moved on) delivers the notification after the restart, and it makes one event.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{json, Value};
use weapp_test_support::{free_port, sim_with_app};

mod common;

use common::{kill_once, serve, until};

const SHOP_KEY: &str = "shop-key-0123456789abcdef";
const OPENID: &str = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o";
const WEBHOOK_SECRET: &str = "whsec_test_0123456789";
const AES_KEY: &str = "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR";

/// One notification as it crossed the relay and what the server answered (0: unreachable).
#[derive(Clone)]
struct Crossed {
    body: Bytes,
    status: u16,
}

/// Forwards the simulator's notifications to the server of the moment (none: unreachable,
/// answered 502 as a dead host would be) and records each with the answer.
#[derive(Clone, Default)]
struct Relay {
    target: Arc<Mutex<Option<String>>>,
    seen: Arc<Mutex<Vec<Crossed>>>,
}

async fn relay_notify(
    State(r): State<Relay>,
    axum::extract::Path(mchid): axum::extract::Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let target = r.target.lock().unwrap().clone();
    let status = match target {
        None => 0,
        Some(base) => {
            let mut req = reqwest::Client::new()
                .post(format!("{base}/v1/pay/{mchid}/notify"))
                .timeout(Duration::from_secs(5))
                .body(body.clone());
            for (k, v) in &headers {
                let name = k.as_str();
                if name.starts_with("wechatpay-") || name == "content-type" {
                    req = req.header(name, v.to_str().unwrap());
                }
            }
            match req.send().await {
                Ok(resp) => resp.status().as_u16(),
                Err(_) => 0,
            }
        }
    };
    r.seen.lock().unwrap().push(Crossed {
        body: body.clone(),
        status,
    });
    StatusCode::from_u16(if status == 0 { 502 } else { status }).unwrap()
}

impl Relay {
    async fn start() -> (Relay, String) {
        let relay = Relay::default();
        let app = axum::Router::new()
            .route("/notify/{mchid}", axum::routing::post(relay_notify))
            .with_state(relay.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (relay, url)
    }

    fn point_at(&self, base: Option<&str>) {
        *self.target.lock().unwrap() = base.map(str::to_owned);
    }

    fn seen(&self) -> Vec<Crossed> {
        self.seen.lock().unwrap().clone()
    }

    fn acked(&self) -> usize {
        self.seen()
            .iter()
            .filter(|c| (200..300).contains(&c.status))
            .count()
    }
}

/// Receives the signed webhooks: every body whose signature checks.
#[derive(Clone, Default)]
struct Sink {
    received: Arc<Mutex<Vec<Value>>>,
}

impl Sink {
    async fn start() -> (Sink, String) {
        let sink = Sink::default();
        let state = sink.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let s = state.clone();
                async move {
                    let sig = headers
                        .get("weapp-signature")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_secs() as i64;
                    if !weapp_server::push::outbox::verify(WEBHOOK_SECRET, sig, &body, now, 300) {
                        return StatusCode::UNAUTHORIZED;
                    }
                    s.received
                        .lock()
                        .unwrap()
                        .push(serde_json::from_slice(&body).unwrap());
                    StatusCode::OK
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (sink, url)
    }

    /// The distinct `TRANSACTION.SUCCESS` events received, by order: event ids per order.
    fn paid(&self) -> HashMap<String, HashSet<i64>> {
        let mut by_order: HashMap<String, HashSet<i64>> = HashMap::new();
        for e in self.received.lock().unwrap().iter() {
            if e["type"] == "TRANSACTION.SUCCESS" {
                by_order
                    .entry(e["payload"]["out_trade_no"].as_str().unwrap().to_owned())
                    .or_default()
                    .insert(e["id"].as_i64().unwrap());
            }
        }
        by_order
    }
}

/// The out_trade_no inside a notification, decrypted with the merchant's APIv3 key.
fn out_trade_no(apiv3: &weapp::pay::ApiV3Key, body: &[u8]) -> String {
    let env: Value = serde_json::from_slice(body).unwrap();
    let r = &env["resource"];
    let plain = apiv3
        .decrypt(
            r["nonce"].as_str().unwrap(),
            r["associated_data"].as_str().unwrap_or(""),
            r["ciphertext"].as_str().unwrap(),
        )
        .expect("the simulator's notification decrypts");
    serde_json::from_slice::<Value>(&plain).unwrap()["out_trade_no"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A simulator with an app and its merchant, a relay, a webhook sink and a configuration file
/// for `weapp serve` on SQLite with all of them.
struct Setup {
    sim: weapp_sim::SimHandle,
    appid: String,
    merchant: Value,
    relay: Relay,
    sink: Sink,
    dir: PathBuf,
    config: PathBuf,
    http: reqwest::Client,
}

impl Setup {
    async fn new(name: &str) -> Setup {
        let (sim, appid, secret) = sim_with_app().await;
        let http = reqwest::Client::new();
        let merchant: Value = http
            .post(format!("{}/_sim/pay/merchants", sim.url()))
            .json(&json!({ "appids": [appid] }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let mchid = merchant["mchid"].as_str().unwrap().to_owned();
        let (relay, relay_url) = Relay::start().await;
        let (sink, sink_url) = Sink::start().await;
        let dir = std::env::temp_dir().join(format!(
            "weapp-{name}-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("weapp.toml");
        let toml = format!(
            r#"
listen = "127.0.0.1:{port}"
database_url = "sqlite://{dir}/pay.db"
data_key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
webhook_allow_private = ["127.0.0.0/8"]
webhook_retry_base_ms = 50
webhook_retry_max_secs = 1
# A delivery claimed by the killed process is taken over once its lease ends.
webhook_timeout_secs = 1
webhook_lease_secs = 2

[[apps]]
appid = "{appid}"
secret = "{secret}"
api_base = "{sim}"
[apps.push]
token = "pushtoken123"
encoding_aes_key = "{AES_KEY}"
webhook_url = "{sink_url}"
webhook_secret = "{WEBHOOK_SECRET}"

[[clients]]
name = "shop"
key = "{SHOP_KEY}"
apps = ["{appid}"]
scopes = ["pay:write", "events:read"]

[[merchants]]
mchid = "{mchid}"
appids = ["{appid}"]
serial_no = "{serial}"
private_key = '''{private_key}'''
apiv3_key = "{apiv3}"
public_key_id = "{pub_id}"
public_key = '''{pub_key}'''
api_base = "{sim}"
notify_url = "{relay_url}/notify/{mchid}"
"#,
            port = free_port(),
            dir = dir.display(),
            sim = sim.url(),
            serial = merchant["merchant_serial_no"].as_str().unwrap(),
            private_key = merchant["merchant_private_key"].as_str().unwrap(),
            apiv3 = merchant["apiv3_key"].as_str().unwrap(),
            pub_id = merchant["wechatpay_public_key_id"].as_str().unwrap(),
            pub_key = merchant["wechatpay_public_key"].as_str().unwrap(),
        );
        std::fs::write(&config, toml).unwrap();
        Setup {
            sim,
            appid,
            merchant,
            relay,
            sink,
            dir,
            config,
            http,
        }
    }

    fn apiv3(&self) -> weapp::pay::ApiV3Key {
        weapp::pay::ApiV3Key::new(self.merchant["apiv3_key"].as_str().unwrap()).unwrap()
    }

    /// `weapp serve` with this setup's configuration; the relay forwards to it.
    fn start(&self) -> common::Server {
        let server = serve(&self.config);
        self.relay.point_at(Some(&server.url));
        server
    }

    /// Places order `no` through `base`; returns its `request_payment`.
    async fn order(&self, base: &str, no: &str) -> Value {
        let resp = self
            .http
            .post(format!("{base}/v1/apps/{}/pay/orders", self.appid))
            .bearer_auth(SHOP_KEY)
            .json(&json!({"out_trade_no": no, "description": "A cup of tea", "amount": 980, "openid": OPENID}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "order {no}");
        resp.json::<Value>().await.unwrap()["request_payment"].clone()
    }

    /// What the phone does with an order's `request_payment`.
    async fn pay(&self, rp: &Value) {
        let v: Value = self
            .http
            .post(format!("{}/_sim/pay/request_payment", self.sim.url()))
            .json(
                &json!({"appid": rp["appId"], "openid": OPENID, "timeStamp": rp["timeStamp"],
                "nonceStr": rp["nonceStr"], "package": rp["package"], "signType": rp["signType"],
                "paySign": rp["paySign"], "action": "pay"}),
            )
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["errMsg"], "requestPayment:ok", "{v}");
    }

    /// Moves the simulator's clock on (WeChat's retry schedule runs on it).
    async fn advance(&self, secs: i64) {
        let resp = self
            .http
            .post(format!("{}/_sim/clock", self.sim.url()))
            .json(&json!({ "advance_secs": secs }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }

    /// The inbox outcome of notification `id` (opens the database beside the server).
    async fn outcome(&self, id: &str) -> Option<Option<String>> {
        let store = weapp_server::store::connect(
            &format!("sqlite://{}/pay.db", self.dir.display()),
            &weapp_server::store::StoreOptions::default(),
        )
        .await
        .unwrap();
        store
            .pay_notification_outcome(self.merchant["mchid"].as_str().unwrap(), id)
            .await
            .unwrap()
    }
}

/// A `weapp serve` child killed when the test ends, also when an assertion fails.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn notification_id(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn remove(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_notification_survives_a_kill_9_and_makes_one_event() {
    let s = Setup::new("pay-crash").await;
    let server = s.start();
    let (mut child, base) = (Reaped(server.child), server.url);

    const ORDERS: usize = 40;
    let mut rps = Vec::new();
    for i in 0..ORDERS {
        rps.push(s.order(&base, &format!("crash_{i:04}")).await);
    }
    // The phones pay four at a time; each payment makes the simulator notify at once.
    let rps = Arc::new(Mutex::new(rps));
    let mut payers = Vec::new();
    for _ in 0..4 {
        let (rps, http, sim) = (rps.clone(), s.http.clone(), s.sim.url().to_owned());
        payers.push(tokio::spawn(async move {
            loop {
                let Some(rp) = rps.lock().unwrap().pop() else {
                    return;
                };
                let v: Value = http
                    .post(format!("{sim}/_sim/pay/request_payment"))
                    .json(&json!({"appid": rp["appId"], "openid": OPENID, "timeStamp": rp["timeStamp"],
                        "nonceStr": rp["nonceStr"], "package": rp["package"], "signType": rp["signType"],
                        "paySign": rp["paySign"], "action": "pay"}))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                assert_eq!(v["errMsg"], "requestPayment:ok", "{v}");
            }
        }));
    }
    // The plug is pulled as soon as ten notifications have been acknowledged.
    kill_once(&mut child.0, 10, || s.relay.acked()).await;
    s.relay.point_at(None);
    for p in payers {
        p.await.unwrap();
    }
    let acked: Vec<Crossed> = s
        .relay
        .seen()
        .into_iter()
        .filter(|c| (200..300).contains(&c.status))
        .collect();
    assert!(acked.len() >= 10);
    assert!(
        s.relay.seen().len() < ORDERS || acked.len() < ORDERS,
        "the kill came after every notification: nothing was tested"
    );

    // Every acknowledged notification is in the inbox, applied, before anything restarts.
    for c in &acked {
        let id = notification_id(&c.body);
        let outcome = s.outcome(&id).await;
        assert!(
            matches!(outcome, Some(Some(ref o)) if o == "applied"),
            "acknowledged notification {id} lost or unapplied: {outcome:?}"
        );
    }

    // Restart; the simulator's retries (its clock moved through the schedule) bring the rest.
    let server = s.start();
    let (mut child, _base) = (Reaped(server.child), server.url);
    let apiv3 = s.apiv3();
    let acked_orders: HashSet<String> = acked
        .iter()
        .map(|c| out_trade_no(&apiv3, &c.body))
        .collect();
    // Each step is one retry interval (15 s); the server checks a notification's timestamp
    // against its own (wall) clock within 5 minutes, so the clock moves on only while
    // notifications are still unacknowledged and never more than 12 steps.
    let all_acked = |s: &Setup| {
        let acked: HashSet<String> = s
            .relay
            .seen()
            .iter()
            .filter(|c| (200..300).contains(&c.status))
            .map(|c| out_trade_no(&apiv3, &c.body))
            .collect();
        acked.len() == ORDERS
    };
    for _ in 0..12 {
        if all_acked(&s) {
            break;
        }
        s.advance(15).await;
        for _ in 0..30 {
            if all_acked(&s) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Deliveries the killed process had claimed are taken over when their lease (2 s) ends.
    let _ = tokio::time::timeout(Duration::from_secs(30), async {
        while s.sink.paid().len() < ORDERS {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let paid = s.sink.paid();
    let missing: Vec<String> = (0..ORDERS)
        .map(|i| format!("crash_{i:04}"))
        .filter(|no| !paid.contains_key(no))
        .collect();
    let attempts: Vec<(String, u16)> = s
        .relay
        .seen()
        .iter()
        .map(|c| (out_trade_no(&apiv3, &c.body), c.status))
        .filter(|(no, _)| missing.contains(no))
        .collect();
    assert!(
        missing.is_empty(),
        "orders never evented: {missing:?}; their attempts: {attempts:?}"
    );
    let paid = s.sink.paid();
    for no in &acked_orders {
        assert!(
            paid.contains_key(no),
            "acknowledged order {no} never evented"
        );
    }
    for (no, ids) in &paid {
        assert_eq!(ids.len(), 1, "order {no} has {} events: {ids:?}", ids.len());
    }
    child.0.kill().unwrap();
    let _ = child.0.wait();
    remove(&s.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_sent_while_the_server_is_down_arrives_by_wechats_retries() {
    let s = Setup::new("pay-down").await;
    let server = s.start();
    let (mut child, base) = (Reaped(server.child), server.url);
    let rp = s.order(&base, "down_0001").await;
    // The server dies; the phone pays; WeChat's first attempt finds nobody.
    child.0.kill().unwrap();
    let _ = child.0.wait();
    s.relay.point_at(None);
    s.pay(&rp).await;
    until(Duration::from_secs(10), "the first attempt", async || {
        !s.relay.seen().is_empty()
    })
    .await;
    let first = s.relay.seen();
    assert!(
        first.iter().all(|c| c.status == 0),
        "nobody answered the first attempt"
    );
    let id = notification_id(&first[0].body);
    assert_eq!(s.outcome(&id).await, None, "nothing stored while down");

    // Back up. Nothing arrives until WeChat's next attempt is due (15 s on its clock).
    let server = s.start();
    let (mut child, _base) = (Reaped(server.child), server.url);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(s.sink.paid().is_empty(), "no event before the retry");
    s.advance(15).await;
    until(
        Duration::from_secs(20),
        "the retried notification",
        async || s.sink.paid().len() == 1,
    )
    .await;
    let retried: Vec<Crossed> = s
        .relay
        .seen()
        .into_iter()
        .filter(|c| c.status == 204)
        .collect();
    assert_eq!(retried.len(), 1, "one successful attempt");
    assert_eq!(
        notification_id(&retried[0].body),
        id,
        "the same notification"
    );
    assert_eq!(s.outcome(&id).await, Some(Some("applied".into())));
    // The schedule is over once it is acknowledged: more time brings no more attempts.
    let attempts = s.relay.seen().len();
    s.advance(3600).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(s.relay.seen().len(), attempts, "no attempt after a 2xx");
    assert_eq!(s.sink.paid()["down_0001"].len(), 1);
    child.0.kill().unwrap();
    let _ = child.0.wait();
    remove(&s.dir);
}
