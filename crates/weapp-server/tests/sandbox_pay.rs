//! `weapp serve --sandbox` and WeChat Pay: each app gets a simulator merchant, kept in the
//! sandbox's database so a restart is the same merchant with the same keys; the phone buys
//! from the sandbox-only demo shop, pays, and the payment becomes the app's event.

use std::net::SocketAddr;

use serde_json::{json, Value};
use weapp_server::sandbox::{self, Sandbox};
use weapp_server::Config;

/// A sandbox served on a free port, as `weapp serve --sandbox` does it.
struct Running {
    sandbox: Sandbox,
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    served: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn start(db: &std::path::Path) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let config = Config {
            listen: addr,
            database_url: format!("sqlite://{}", db.display()),
            ..Config::default()
        };
        let sandbox = sandbox::prepare(config, None).await.unwrap();
        let state = weapp_server::AppState::build(sandbox.config.clone())
            .await
            .unwrap();
        let url = format!("http://{addr}");
        sandbox.connect(&url).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(async move {
            weapp_server::serve(state, listener, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        Self {
            sandbox,
            url,
            stop: Some(tx),
            served,
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        (&mut self.served).await.unwrap();
    }

    fn appid(&self) -> String {
        self.sandbox.config.apps[0].appid.clone()
    }

    fn client_key(&self) -> String {
        self.sandbox.demo_client_key.clone().unwrap()
    }

    /// A phone user signed in through `/v1/login`: `(openid, session token)`.
    async fn phone_user(&self, http: &reqwest::Client) -> (String, String) {
        let appid = self.appid();
        let code: Value = http
            .post(format!("{}/_sim/login", self.sandbox.sim.url()))
            .json(&json!({"appid": appid}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let login: Value = http
            .post(format!("{}/v1/login", self.url))
            .json(&json!({"appid": appid, "code": code["code"]}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (
            code["openid"].as_str().unwrap().to_owned(),
            login["token"].as_str().unwrap().to_owned(),
        )
    }

    /// The phone buys `body` from the demo shop: `(status, answer)`.
    async fn buy(&self, http: &reqwest::Client, token: Option<&str>, body: &str) -> (u16, Value) {
        let mut req = http
            .post(format!("{}/v1/sandbox/shop/{}/buy", self.url, self.appid()))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    /// `wx.requestPayment` on the phone with the shop's parameters: the errMsg.
    fn pay(&self, openid: &str, order: &Value) -> String {
        let p = &order["request_payment"];
        let s = |k: &str| p[k].as_str().map(str::to_owned);
        self.sandbox
            .sim
            .sim()
            .request_payment(&weapp_sim::pay::RequestPayment {
                appid: self.appid(),
                openid: openid.to_owned(),
                time_stamp: s("timeStamp"),
                nonce_str: s("nonceStr"),
                package: s("package"),
                sign_type: s("signType"),
                pay_sign: s("paySign"),
                action: None,
            })
    }

    /// The app's events, through the client API.
    async fn events(&self, http: &reqwest::Client) -> Vec<Value> {
        let v: Value = http
            .get(format!("{}/v1/apps/{}/events", self.url, self.appid()))
            .bearer_auth(self.client_key())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["events"].as_array().cloned().unwrap_or_default()
    }

    /// Waits (polling; a generous deadline only against a hang) until the app has a
    /// `TRANSACTION.SUCCESS` event for `out_trade_no`.
    async fn paid_event(&self, http: &reqwest::Client, out_trade_no: &str) -> Value {
        for _ in 0..600 {
            if let Some(e) = self.events(http).await.into_iter().find(|e| {
                e["type"] == "TRANSACTION.SUCCESS" && e["payload"]["out_trade_no"] == out_trade_no
            }) {
                return e;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("no TRANSACTION.SUCCESS event for {out_trade_no}");
    }
}

fn temp_db() -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "weapp-sandbox-pay-{}-{}.db",
        std::process::id(),
        rand::random::<u32>()
    ))
}

fn remove_db(db: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
}

/// The merchant the sandbox configured: `(mchid, appids, private key, APIv3 key)`.
fn merchant_keys(s: &Sandbox) -> (String, Vec<String>, String, String) {
    assert_eq!(s.config.merchants.len(), 1, "{:?}", s.config.merchants);
    let m = &s.config.merchants[0];
    (
        m.mchid.clone(),
        m.appids.clone(),
        m.private_key.as_ref().unwrap().expose().to_owned(),
        m.apiv3_key.as_ref().unwrap().expose().to_owned(),
    )
}

#[tokio::test]
async fn a_restarted_sandbox_keeps_its_merchant_and_keys_and_the_phone_still_pays() {
    let db = temp_db();
    let http = reqwest::Client::new();

    let first = Running::start(&db).await;
    let appid = first.appid();
    let kept = merchant_keys(&first.sandbox);
    assert_eq!(kept.1, vec![appid.clone()]);
    assert_eq!(first.sandbox.pay_merchants.len(), 1);
    assert_eq!(first.sandbox.pay_merchants[0].mchid, kept.0);
    assert!(!first.sandbox.pay_merchants[0].remembered);
    // The simulator knows the merchant, bound to the app, under the sandbox shop's name.
    let listed = first.sandbox.sim.sim().pay_merchants();
    let at_sim = listed
        .iter()
        .find(|m| m["mchid"] == kept.0.as_str())
        .unwrap();
    assert_eq!(at_sim["appids"], json!([appid]));
    assert_eq!(at_sim["name"], sandbox::MERCHANT_NAME);
    // Debug output names the merchant, never its keys.
    let shown = format!("{:?}", first.sandbox);
    assert!(shown.contains(&kept.0), "{shown}");
    assert!(!shown.contains(&kept.3), "{shown}");
    assert!(!shown.contains("PRIVATE KEY"), "{shown}");

    let (openid, token) = first.phone_user(&http).await;
    let (status, order) = first.buy(&http, Some(&token), "{}").await;
    assert_eq!(status, 200, "{order}");
    assert_eq!(order["item"], "coffee");
    assert_eq!(order["amount"], 990);
    assert_eq!(first.pay(&openid, &order), "requestPayment:ok");
    let event = first
        .paid_event(&http, order["out_trade_no"].as_str().unwrap())
        .await;
    assert_eq!(event["payload"]["mchid"], kept.0.as_str());
    assert_eq!(event["payload"]["amount"]["total"], 990);
    assert_eq!(event["payload"]["payer"]["openid"], openid.as_str());
    first.stop().await;

    // The same database: the same merchant, with the same keys, registered with the new
    // simulator — whose payment sheet accepts what the server signs with the kept key.
    let second = Running::start(&db).await;
    assert_eq!(merchant_keys(&second.sandbox), kept);
    assert!(second.sandbox.remembered);
    assert!(second.sandbox.pay_merchants[0].remembered);
    assert_eq!(second.sandbox.pay_merchants[0].mchid, kept.0);
    let (openid, token) = second.phone_user(&http).await;
    let (status, order) = second.buy(&http, Some(&token), r#"{"item": "tea"}"#).await;
    assert_eq!(status, 200, "{order}");
    assert_eq!(order["amount"], 660);
    assert_eq!(second.pay(&openid, &order), "requestPayment:ok");
    let event = second
        .paid_event(&http, order["out_trade_no"].as_str().unwrap())
        .await;
    assert_eq!(event["payload"]["mchid"], kept.0.as_str());
    // The first start's payment is still in the event log: one event each, no more.
    let paid: Vec<Value> = second
        .events(&http)
        .await
        .into_iter()
        .filter(|e| e["type"] == "TRANSACTION.SUCCESS")
        .collect();
    assert_eq!(paid.len(), 2, "{paid:?}");
    second.stop().await;
    remove_db(&db);
}

#[tokio::test]
async fn the_demo_shop_sells_only_to_a_signed_in_user_of_the_app_and_only_what_it_has() {
    let db = temp_db();
    let http = reqwest::Client::new();
    let s = Running::start(&db).await;
    let orders_at_sim = |s: &Running| {
        s.sandbox
            .sim
            .sim()
            .pay_orders(&s.sandbox.pay_merchants[0].mchid)
            .len()
    };
    // No session, a forged one, a client key instead of a session: 401, no order.
    for token in [None, Some("not-a-session"), Some(s.client_key().as_str())] {
        let (status, body) = s.buy(&http, token, "{}").await;
        assert_eq!(status, 401, "{token:?}: {body}");
        assert!(body["error"]["code"].is_string(), "{body}");
    }
    let (_, token) = s.phone_user(&http).await;
    // Something the shop does not sell, an amount of the buyer's, a body that is not JSON:
    // 400, no order.
    for body in [
        r#"{"item": "caviar"}"#,
        r#"{"item": "coffee", "amount": 1}"#,
        "not json",
    ] {
        let (status, answer) = s.buy(&http, Some(&token), body).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(answer["error"]["code"].is_string(), "{answer}");
    }
    assert_eq!(orders_at_sim(&s), 0);
    // Another app's URL with this app's session: 403.
    let r = http
        .post(format!("{}/v1/sandbox/shop/wxanother000000001/buy", s.url))
        .bearer_auth(&token)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    assert_eq!(orders_at_sim(&s), 0);
    // The console's phone is wired to the shop: its pay request template is the shop's.
    let backend = s.sandbox.sim.sim().backend(&s.appid()).unwrap();
    let pay = backend.pay.unwrap();
    assert_eq!(pay.path, "/v1/sandbox/shop/{{appid}}/buy");
    assert_eq!(pay.headers["Authorization"], "Bearer {{storage.token}}");
    s.stop().await;
    remove_db(&db);
}

#[tokio::test]
async fn a_server_that_is_not_a_sandbox_has_no_demo_shop() {
    let db = temp_db();
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: format!("sqlite://{}", db.display()),
        data_key: Some(weapp_server::keys::seal::DataKey::generate_base64().into()),
        ..Config::default()
    };
    let server = weapp_server::spawn(config).await.unwrap();
    let r = reqwest::Client::new()
        .post(format!(
            "{}/v1/sandbox/shop/wxdemo0000000001/buy",
            server.url()
        ))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    drop(server);
    remove_db(&db);
}

#[tokio::test]
async fn only_apps_without_a_configured_merchant_get_a_simulator_merchant() {
    let db = temp_db();
    let file = db.with_extension("toml");
    // A configured merchant for the first app (its keys are only read when the server builds
    // it: the sandbox just leaves that app alone).
    std::fs::write(
        &file,
        r#"
[[apps]]
appid = "wxsandboxpaya0001"
secret = "sandboxpaysecreta"

[[apps]]
appid = "wxsandboxpayb0001"
secret = "sandboxpaysecretb"

[[merchants]]
mchid = "1900000109"
appids = ["wxsandboxpaya0001"]
serial_no = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1"
private_key_file = "/nonexistent/apiclient_key.pem"
apiv3_key = "0123456789abcdef0123456789abcdef"
public_key_id = "PUB_KEY_ID_0119000001092025"
public_key_file = "/nonexistent/pub_key.pem"
notify_url = "https://pay.example.test/v1/pay/1900000109/notify"
"#,
    )
    .unwrap();
    let mut config = Config::load(Some(&file)).unwrap();
    config.listen = "127.0.0.1:18080".parse().unwrap();
    config.database_url = format!("sqlite://{}", db.display());
    let s = sandbox::prepare(config, None).await.unwrap();
    assert_eq!(s.pay_merchants.len(), 1, "{:?}", s.pay_merchants);
    assert_eq!(s.pay_merchants[0].appid, "wxsandboxpayb0001");
    let mchids: Vec<&str> = s
        .config
        .merchants
        .iter()
        .map(|m| m.mchid.as_str())
        .collect();
    assert_eq!(mchids, ["1900000109", s.pay_merchants[0].mchid.as_str()]);
    let added = &s.config.merchants[1];
    assert_eq!(added.appids, ["wxsandboxpayb0001"]);
    assert_eq!(added.api_base, s.sim.url());
    // Notified where the server listens.
    assert_eq!(
        added.notify_url,
        format!(
            "http://127.0.0.1:18080/v1/pay/{}/notify",
            s.pay_merchants[0].mchid
        )
    );
    // The simulator has no merchant for the app the configuration serves.
    let listed = s.sim.sim().pay_merchants();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["appids"], json!(["wxsandboxpayb0001"]));
    drop(s);
    let _ = std::fs::remove_file(&file);
    remove_db(&db);
}
