//! WeChat Pay v3, the whole flow: prepay → `wx.requestPayment` → the payment notification →
//! query → partial refund → the refund's outcome.
//!
//! With no setup, `cargo run -p weapp --example pay` starts the in-process WeChat Pay
//! simulator (weapp-sim), has it issue a merchant (`POST /_sim/pay/merchants`), runs a notify
//! receiver on 127.0.0.1, and plays the mini program's part (`POST /_sim/pay/request_payment`).
//! The client runs on the simulator's clock, so "a minute later" is one call.
//!
//! Against another server (a simulator elsewhere, WeChat Pay), set `WECHATPAY_BASE_URL` and the
//! merchant: `WECHATPAY_MCHID`, `WECHATPAY_SERIAL`, `WECHATPAY_KEY_FILE` (apiclient_key.pem),
//! `WECHATPAY_APIV3_KEY`, `WECHATPAY_PUBLIC_KEY_ID`, `WECHATPAY_PUBLIC_KEY_FILE`
//! (pub_key.pem), and `WECHATPAY_APPID`, `WECHATPAY_OPENID`, `WECHATPAY_NOTIFY_URL`
//! (unset ones default to the TEST keys of `tests/data/pay`). That run prepays, prints the
//! `wx.requestPayment` parameters, queries and asks for a refund; the payment itself happens in
//! the mini program and the notifications go to your notify URL.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use serde_json::{json, Value};
use weapp::clock::Clock;
use weapp::pay::{
    ApiV3Key, Fen, JsapiPrepayRequest, Merchant, MerchantPrivateKey, Notification,
    NotificationEvent, NotifyResponse, OrderRef, PayClient, PayError, RefundRequest, RefundStatus,
    RsaPublicKey,
};

type Error = Box<dyn std::error::Error + Send + Sync>;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    match std::env::var("WECHATPAY_BASE_URL") {
        Ok(base) => against(&base).await,
        Err(_) => simulated().await,
    }
}

// ------------------------------------------------------------------------- the simulator

/// The simulator's virtual clock as the SDK's clock: signatures, timestamps and the
/// refund's minute all follow it.
#[derive(Debug, Clone)]
struct SimClock(weapp_sim::Sim);

impl Clock for SimClock {
    fn now_ms(&self) -> i64 {
        self.0.now_ms()
    }
}

/// The merchant's notify URL: the raw headers and body go to the SDK, its verdict comes back
/// as the answer WeChat expects.
#[derive(Clone)]
struct Receiver {
    pay: PayClient,
    inbox: Arc<Mutex<Vec<Notification>>>,
}

async fn notify(
    State(r): State<Receiver>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let answer = match r.pay.receive_notification(&headers, &body).await {
        Ok(n) => {
            // A real service stores n.id + n.plaintext durably here, before answering.
            r.inbox.lock().unwrap().push(n);
            NotifyResponse::success()
        }
        Err(e) => {
            eprintln!("   notification refused: {e}");
            NotifyResponse::for_error(&e)
        }
    };
    (
        StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        answer.body.unwrap_or_default(),
    )
}

impl Receiver {
    /// Waits (up to 10 s) for the `n`th notification (1-based).
    async fn nth(&self, n: usize) -> Result<Notification, Error> {
        for _ in 0..200 {
            if let Some(got) = self.inbox.lock().unwrap().get(n - 1) {
                return Ok(got.clone());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!("notification {n} did not arrive").into())
    }
}

/// A `POST` to the simulator's control API (`/_sim/...`).
async fn sim_control(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    body: Value,
) -> Result<Value, Error> {
    let resp = http
        .post(format!("{base}{path}"))
        .json(&body)
        .send()
        .await?;
    let status = resp.status();
    let v: Value = resp.json().await?;
    if !status.is_success() {
        return Err(format!("{path}: {status} {v}").into());
    }
    Ok(v)
}

async fn simulated() -> Result<(), Error> {
    const APPID: &str = "wx1111111111111111";
    const OPENID: &str = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o";

    let sim = weapp_sim::spawn(weapp_sim::SimConfig::default()).await?;
    println!("0. WeChat Pay simulator at {}", sim.url());
    let http = reqwest::Client::new();
    let control = |path: &'static str, body: Value| sim_control(&http, sim.url(), path, body);

    // The merchant: mchid, merchant key and serial, APIv3 key, WeChat Pay public key.
    let m = control("/_sim/pay/merchants", json!({})).await?;
    let text = |k: &str| -> Result<String, Error> {
        m[k].as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("the simulator's merchant has no {k}").into())
    };
    let merchant = Merchant::new(
        text("mchid")?,
        text("merchant_serial_no")?,
        MerchantPrivateKey::from_pem(&text("merchant_private_key")?)?,
    )?;
    let pay = PayClient::builder(merchant, ApiV3Key::new(&text("apiv3_key")?)?)
        .wechatpay_public_key(
            text("wechatpay_public_key_id")?,
            RsaPublicKey::from_pem(&text("wechatpay_public_key")?)?,
        )
        .base_url(sim.url())
        .clock(Arc::new(SimClock(sim.sim().clone())))
        .build()?;
    println!("   merchant {} (public-key mode)", pay.mchid());

    // The notify receiver.
    let receiver = Receiver {
        pay: pay.clone(),
        inbox: Arc::default(),
    };
    let app = Router::new()
        .route("/pay/notify", post(notify))
        .with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let notify_url = format!("http://{}/pay/notify", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    println!("   notify URL {notify_url}");

    // 1. Prepay.
    let out_trade_no = format!("example{}", sim.sim().now_ms() / 1000);
    let order = JsapiPrepayRequest::new(
        APPID,
        "weapp example: a cup of tea",
        &out_trade_no,
        &notify_url,
        Fen::from_yuan_str("9.80").ok_or("amount")?,
        OPENID,
    );
    let prepay = pay.jsapi_prepay(&order).await?;
    println!("1. prepay {out_trade_no}: prepay_id {}", prepay.prepay_id);

    // 2. The mini program calls wx.requestPayment with these parameters.
    let p = pay.request_payment(APPID, &prepay.prepay_id)?;
    println!("2. wx.requestPayment({})", serde_json::to_string(&p)?);
    let paid = control(
        "/_sim/pay/request_payment",
        json!({"appid": APPID, "openid": OPENID, "timeStamp": p.time_stamp,
               "nonceStr": p.nonce_str, "package": p.package, "signType": p.sign_type,
               "paySign": p.pay_sign, "action": "pay"}),
    )
    .await?;
    println!("   the user pays: {}", paid["errMsg"]);

    // 3. WeChat's notification, verified and decrypted by the receiver.
    let n = receiver.nth(1).await?;
    let NotificationEvent::Transaction(tx) = &n.event else {
        return Err(format!("expected a transaction, got {:?}", n.event).into());
    };
    println!(
        "3. notification {} {}: {} {} fen, transaction {}",
        n.event_type,
        n.id,
        tx.trade_state,
        tx.amount
            .as_ref()
            .and_then(|a| a.total)
            .unwrap_or_default()
            .get(),
        tx.transaction_id.as_deref().unwrap_or("?")
    );

    // 4. Query.
    let q = pay.query_by_out_trade_no(&out_trade_no).await?;
    println!(
        "4. query {out_trade_no}: {} ({})",
        q.trade_state, q.trade_state_desc
    );

    // 5. A partial refund: PROCESSING at first.
    let out_refund_no = format!("{out_trade_no}r1");
    let refund = RefundRequest::new(
        OrderRef::OutTradeNo(out_trade_no.clone()),
        &out_refund_no,
        Fen::from_yuan_str("3.00").ok_or("amount")?,
        Fen::from_yuan_str("9.80").ok_or("amount")?,
    )
    .reason("example: partial refund")
    .notify_url(&notify_url);
    let r = pay.refund(&refund).await?;
    println!(
        "5. refund {} of {} fen: {}",
        r.out_refund_no,
        r.amount.refund.unwrap_or_default().get(),
        r.status
    );

    // 6. A minute later (the simulator's clock) the refund has succeeded.
    sim.sim().advance(60);
    let done = pay.query_refund(&out_refund_no).await?;
    println!(
        "6. 60 s later: refund {} {}",
        done.out_refund_no, done.status
    );
    if done.status != RefundStatus::Success {
        return Err(format!("refund still {}", done.status).into());
    }
    let n = receiver.nth(2).await?;
    if let NotificationEvent::Refund(notice) = &n.event {
        println!(
            "   notification {}: {} {}",
            n.event_type, notice.out_refund_no, notice.refund_status
        );
    }
    println!("done.");
    Ok(())
}

// ------------------------------------------------------------------------- another server

async fn against(base: &str) -> Result<(), Error> {
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/pay");
    let key_file = env_or(
        "WECHATPAY_KEY_FILE",
        &format!("{data}/TEST-merchant-key.pkcs8.pem"),
    );
    let public_key_file = env_or(
        "WECHATPAY_PUBLIC_KEY_FILE",
        &format!("{data}/TEST-wechatpay-pubkey.pem"),
    );
    let merchant = Merchant::new(
        env_or("WECHATPAY_MCHID", "1900000109"),
        env_or(
            "WECHATPAY_SERIAL",
            "3A5E0C7D1B2F4A6C8E9D0B1A2C3D4E5F60718293",
        ),
        MerchantPrivateKey::from_pem(&std::fs::read_to_string(key_file)?)?,
    )?;
    let pay = PayClient::builder(
        merchant,
        ApiV3Key::new(&env_or(
            "WECHATPAY_APIV3_KEY",
            "TESTapiv3key-not-real-0123456789",
        ))?,
    )
    .wechatpay_public_key(
        env_or(
            "WECHATPAY_PUBLIC_KEY_ID",
            "PUB_KEY_ID_0119000001092026120600000000000001",
        ),
        RsaPublicKey::from_pem(&std::fs::read_to_string(public_key_file)?)?,
    )
    .base_url(base)
    .build()?;
    println!("{pay:?}");

    let appid = env_or("WECHATPAY_APPID", "wxd678efh567hg6787");
    let out_trade_no = format!("example-{}", std::process::id());
    let order = JsapiPrepayRequest::new(
        &appid,
        "weapp example",
        &out_trade_no,
        env_or("WECHATPAY_NOTIFY_URL", "https://example.com/v1/pay/notify"),
        Fen::new(1),
        env_or("WECHATPAY_OPENID", "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"),
    );
    let prepay = match pay.jsapi_prepay(&order).await {
        Ok(p) => p,
        // Unknown outcome: the same out_trade_no and parameters answer the same prepay_id.
        Err(e) if e.is_outcome_unknown() => pay.jsapi_prepay(&order).await?,
        Err(e @ PayError::Transport { .. }) => {
            return Err(format!("nothing answers at {base}: {e}").into());
        }
        Err(e) => return Err(e.into()),
    };
    let params = pay.request_payment(&appid, &prepay.prepay_id)?;
    println!(
        "wx.requestPayment({})",
        serde_json::to_string_pretty(&params)?
    );

    let tx = pay.query_by_out_trade_no(&out_trade_no).await?;
    println!(
        "{out_trade_no}: {} ({})",
        tx.trade_state, tx.trade_state_desc
    );

    let refund = RefundRequest::new(
        OrderRef::OutTradeNo(out_trade_no.clone()),
        format!("{out_trade_no}-r1"),
        Fen::new(1),
        Fen::new(1),
    );
    match pay.refund(&refund).await {
        Ok(r) => println!("refund {}: {}", r.out_refund_no, r.status),
        // Unpaid orders cannot be refunded: expected until the mini program has paid.
        Err(e) => println!("refund refused: {e}"),
    }
    Ok(())
}
