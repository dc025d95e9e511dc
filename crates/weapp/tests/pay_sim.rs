//! `weapp::pay`'s `PayClient` against the in-process WeChat Pay v3 simulator (weapp-sim),
//! nothing faked: the simulator checks every request signature the SDK makes, the SDK verifies
//! every answer and notification the simulator signs, and notifications travel over HTTP to a
//! receiver run here. The client's clock is the simulator's virtual clock, so advancing it
//! moves both sides together.

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
    AccountType, ApiV3Key, Fen, FundFlowBillRequest, JsapiPrepayRequest, Merchant,
    MerchantPrivateKey, Notification, NotificationEvent, NotifyError, NotifyResponse, OrderRef,
    PayClient, PayClientBuilder, PayError, PayErrorCode, PayTime, PlatformCertificate,
    RefreshPolicy, RefundRequest, RefundStatus, RsaPublicKey, TradeBillRequest, TradeBillType,
    TradeState, VerifyError,
};
use weapp_sim::{spawn, Sim, SimConfig, SimHandle};

const APPID: &str = "wx1111111111111111";
const OPENID: &str = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o";

// ------------------------------------------------------------------------- clocks

/// The simulator's virtual clock, optionally shifted, as the SDK's clock.
#[derive(Debug, Clone)]
struct SimClock {
    sim: Sim,
    offset_secs: i64,
}

impl Clock for SimClock {
    fn now_ms(&self) -> i64 {
        self.sim.now_ms() + self.offset_secs * 1000
    }
}

// ------------------------------------------------------------------------- the merchant

/// What `POST /_sim/pay/merchants` issued.
#[derive(Clone)]
struct Issued {
    mchid: String,
    serial: String,
    private_key: String,
    apiv3: String,
    public_key: Option<(String, String)>,
    /// (serial, PEM).
    certificates: Vec<(String, String)>,
}

impl Issued {
    fn from_json(v: &Value) -> Self {
        Issued {
            mchid: v["mchid"].as_str().unwrap().to_owned(),
            serial: v["merchant_serial_no"].as_str().unwrap().to_owned(),
            private_key: v["merchant_private_key"].as_str().unwrap().to_owned(),
            apiv3: v["apiv3_key"].as_str().unwrap().to_owned(),
            public_key: v["wechatpay_public_key_id"].as_str().map(|id| {
                (
                    id.to_owned(),
                    v["wechatpay_public_key"].as_str().unwrap().to_owned(),
                )
            }),
            certificates: v["platform_certificates"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|c| {
                            (
                                c["serial_no"].as_str().unwrap().to_owned(),
                                c["certificate"].as_str().unwrap().to_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    fn merchant(&self) -> Merchant {
        Merchant::new(
            &self.mchid,
            &self.serial,
            MerchantPrivateKey::from_pem(&self.private_key).unwrap(),
        )
        .unwrap()
    }

    fn public_key_id(&self) -> &str {
        &self.public_key.as_ref().expect("a public key").0
    }

    fn public_key(&self) -> RsaPublicKey {
        RsaPublicKey::from_pem(&self.public_key.as_ref().expect("a public key").1).unwrap()
    }
}

// ------------------------------------------------------------------------- the receiver

/// How the receiver handles a notification with its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handling {
    /// `parse_notification`: no network.
    Parse,
    /// `receive_notification`: downloads certificates for an unknown serial.
    Receive,
}

/// One notification as the notify URL got it, what the SDK made of it, and the answer.
#[derive(Debug, Clone)]
struct Received {
    headers: HeaderMap,
    body: Bytes,
    outcome: Result<Notification, NotifyError>,
    answered: u16,
}

#[derive(Clone)]
struct ReceiverState {
    client: Arc<Mutex<Option<PayClient>>>,
    handling: Handling,
    inbox: Arc<Mutex<Vec<Received>>>,
}

/// The merchant's notify URL: raw headers and bytes in, the SDK's verdict out.
async fn notify(
    State(st): State<ReceiverState>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let client = st.client.lock().unwrap().clone().expect("a client");
    let outcome = match st.handling {
        Handling::Parse => client.parse_notification(&headers, &body),
        Handling::Receive => client.receive_notification(&headers, &body).await,
    };
    let answer = match &outcome {
        // A real service stores `n.id` + `n.plaintext` durably here, before answering.
        Ok(_) => NotifyResponse::success(),
        Err(e) => NotifyResponse::for_error(e),
    };
    st.inbox.lock().unwrap().push(Received {
        headers,
        body,
        outcome,
        answered: answer.status,
    });
    (
        StatusCode::from_u16(answer.status).unwrap(),
        answer.body.unwrap_or_default(),
    )
}

struct Receiver {
    url: String,
    state: ReceiverState,
}

impl Receiver {
    async fn start(client: &PayClient, handling: Handling) -> Self {
        let state = ReceiverState {
            client: Arc::new(Mutex::new(Some(client.clone()))),
            handling,
            inbox: Arc::default(),
        };
        let app = Router::new()
            .route("/pay/notify", post(notify))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver {
            url: format!("http://{addr}/pay/notify"),
            state,
        }
    }

    fn count(&self) -> usize {
        self.state.inbox.lock().unwrap().len()
    }

    fn get(&self, i: usize) -> Received {
        self.state.inbox.lock().unwrap()[i].clone()
    }

    /// Waits for the `n`th notification (1-based) and returns it.
    async fn nth(&self, n: usize) -> Received {
        for _ in 0..200 {
            if self.count() >= n {
                return self.get(n - 1);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("expected {n} notifications, got {}", self.count());
    }

    fn ok(&self, n: usize) -> Notification {
        let r = self.get(n - 1);
        assert_eq!(r.answered, 204, "answered NotifyResponse::success()");
        r.outcome.expect("the SDK accepts the notification")
    }
}

fn transaction(n: &Notification) -> &weapp::pay::Transaction {
    match &n.event {
        NotificationEvent::Transaction(t) => t,
        other => panic!("a transaction, got {other:?}"),
    }
}

fn refund_notice(n: &Notification) -> &weapp::pay::RefundNotice {
    match &n.event {
        NotificationEvent::Refund(r) => r,
        other => panic!("a refund, got {other:?}"),
    }
}

// ------------------------------------------------------------------------- the harness

struct T {
    h: SimHandle,
    http: reqwest::Client,
}

impl T {
    async fn new() -> Self {
        T {
            h: spawn(SimConfig::default()).await.unwrap(),
            http: reqwest::Client::new(),
        }
    }

    fn sim(&self) -> &Sim {
        self.h.sim()
    }

    fn clock(&self) -> Arc<dyn Clock> {
        self.clock_off(0)
    }

    fn clock_off(&self, offset_secs: i64) -> Arc<dyn Clock> {
        Arc::new(SimClock {
            sim: self.sim().clone(),
            offset_secs,
        })
    }

    fn advance(&self, secs: i64) {
        self.sim().advance(secs);
    }

    async fn control(&self, method: &str, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.h.url()))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn issue(&self, spec: Value) -> Issued {
        let (status, v) = self.control("POST", "/_sim/pay/merchants", spec).await;
        assert_eq!(status, 200, "{v}");
        Issued::from_json(&v)
    }

    /// A builder for `m` at the simulator, on the simulator's clock; no verification key yet.
    fn builder(&self, m: &Issued) -> PayClientBuilder {
        PayClient::builder(m.merchant(), ApiV3Key::new(&m.apiv3).unwrap())
            .base_url(self.h.url())
            .clock(self.clock())
    }

    /// Public-key mode, as issued.
    fn pk_client(&self, m: &Issued) -> PayClient {
        self.builder(m)
            .wechatpay_public_key(m.public_key_id(), m.public_key())
            .build()
            .unwrap()
    }

    /// What the mini program does with `wx.requestPayment(params)`.
    async fn pay(&self, client: &PayClient, prepay_id: &str, action: &str) -> String {
        let p = client.request_payment(APPID, prepay_id).unwrap();
        let (status, v) = self
            .control(
                "POST",
                "/_sim/pay/request_payment",
                json!({"appid": APPID, "openid": OPENID, "timeStamp": p.time_stamp,
                       "nonceStr": p.nonce_str, "package": p.package, "signType": p.sign_type,
                       "paySign": p.pay_sign, "action": action}),
            )
            .await;
        assert_eq!(status, 200, "{v}");
        v["errMsg"].as_str().unwrap().to_owned()
    }

    /// Prepays `total` fen as `out_trade_no` and pays it; returns the transaction id.
    async fn paid_order(
        &self,
        client: &PayClient,
        out_trade_no: &str,
        total: u64,
        notify_url: &str,
    ) -> String {
        let prepay = client
            .jsapi_prepay(&order(out_trade_no, total, notify_url))
            .await
            .unwrap();
        assert_eq!(
            self.pay(client, &prepay.prepay_id, "pay").await,
            "requestPayment:ok"
        );
        client
            .query_by_out_trade_no(out_trade_no)
            .await
            .unwrap()
            .transaction_id
            .expect("a paid order has a transaction_id")
    }

    async fn notifications(&self, mchid: &str) -> Vec<Value> {
        let (status, v) = self
            .control(
                "GET",
                &format!("/_sim/pay/merchants/{mchid}/notifications"),
                Value::Null,
            )
            .await;
        assert_eq!(status, 200);
        v["notifications"].as_array().unwrap().clone()
    }

    async fn end_refund(&self, out_refund_no: &str, status: &str) -> Value {
        let (s, v) = self
            .control(
                "POST",
                &format!("/_sim/pay/refunds/{out_refund_no}"),
                json!({ "status": status }),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        v
    }

    async fn migration(&self, mchid: &str, body: Value) -> Value {
        let (s, v) = self
            .control(
                "POST",
                &format!("/_sim/pay/merchants/{mchid}/migration"),
                body,
            )
            .await;
        assert_eq!(s, 200, "{v}");
        v
    }
}

fn order(out_trade_no: &str, total: u64, notify_url: &str) -> JsapiPrepayRequest {
    JsapiPrepayRequest::new(
        APPID,
        "Image形象店-深圳腾大-QQ公仔",
        out_trade_no,
        notify_url,
        Fen::new(total),
        OPENID,
    )
    .attach("自定义数据")
}

/// The `PayError::Api` fields: (status, code, request id present).
fn api(err: &PayError) -> (u16, String, bool) {
    match err {
        PayError::Api {
            status,
            code,
            request_id,
            ..
        } => (*status, code.as_str().to_owned(), request_id.is_some()),
        other => panic!("PayError::Api expected, got {other:?}"),
    }
}

/// The `VerifyError` inside a `PayError::Verify` (which must carry the Request-ID).
fn verify_error(err: &PayError) -> VerifyError {
    match err {
        PayError::Verify {
            source, request_id, ..
        } => {
            assert!(request_id.is_some(), "the Request-ID is kept");
            source.clone()
        }
        other => panic!("PayError::Verify expected, got {other:?}"),
    }
}

fn notify_verify_error(outcome: &Result<Notification, NotifyError>) -> VerifyError {
    match outcome {
        Err(NotifyError::Verify(e)) => e.clone(),
        other => panic!("NotifyError::Verify expected, got {other:?}"),
    }
}

// ------------------------------------------------------------------------- 1. the whole flow

#[tokio::test]
async fn public_key_mode_prepay_pay_notify_query() {
    let t = T::new().await;
    let m = t.issue(json!({})).await;
    assert!(m.public_key_id().starts_with("PUB_KEY_ID_"));
    let pay = t.pk_client(&m);
    let r = Receiver::start(&pay, Handling::Parse).await;

    let prepay = pay
        .jsapi_prepay(&order("flow_0001", 980, &r.url))
        .await
        .unwrap();
    assert!(prepay.prepay_id.starts_with("wx"), "{}", prepay.prepay_id);
    // The same out_trade_no and parameters answer the same prepay_id (the recovery path of an
    // unknown outcome).
    let again = pay
        .jsapi_prepay(&order("flow_0001", 980, &r.url))
        .await
        .unwrap();
    assert_eq!(again.prepay_id, prepay.prepay_id);
    let q = pay.query_by_out_trade_no("flow_0001").await.unwrap();
    assert_eq!(q.trade_state, TradeState::NotPay);

    let params = pay.request_payment(APPID, &prepay.prepay_id).unwrap();
    assert_eq!(params.package, format!("prepay_id={}", prepay.prepay_id));
    assert_eq!(params.sign_type, "RSA");
    assert_eq!(params.time_stamp, t.sim().now().to_string());
    assert_eq!(
        t.pay(&pay, &prepay.prepay_id, "pay").await,
        "requestPayment:ok"
    );

    let got = r.nth(1).await;
    assert_eq!(
        got.headers["wechatpay-serial"].to_str().unwrap(),
        m.public_key_id()
    );
    let n = r.ok(1);
    assert_eq!(n.event_type, "TRANSACTION.SUCCESS");
    assert_eq!(n.original_type, "transaction");
    assert_eq!(n.serial, m.public_key_id());
    let tx = transaction(&n);
    assert_eq!(tx.trade_state, TradeState::Success);
    assert_eq!(tx.out_trade_no, "flow_0001");
    assert_eq!(tx.mchid, m.mchid);
    assert_eq!(tx.appid, APPID);
    assert_eq!(tx.amount.as_ref().unwrap().total, Some(Fen::new(980)));
    assert_eq!(tx.payer.as_ref().unwrap().openid, OPENID);
    assert_eq!(tx.attach.as_deref(), Some("自定义数据"));
    let transaction_id = tx.transaction_id.clone().unwrap();
    // The simulator saw the 204 and stops.
    let list = t.notifications(&m.mchid).await;
    assert_eq!(list[0]["delivered"], true, "{}", list[0]);
    assert_eq!(list[0]["id"], n.id.as_str());

    let by_no = pay.query_by_out_trade_no("flow_0001").await.unwrap();
    let by_id = pay.query_by_transaction_id(&transaction_id).await.unwrap();
    for q in [&by_no, &by_id] {
        assert_eq!(q.trade_state, TradeState::Success);
        assert_eq!(q.out_trade_no, "flow_0001");
        assert_eq!(q.transaction_id.as_deref(), Some(transaction_id.as_str()));
        assert_eq!(q.amount.as_ref().unwrap().total, Some(Fen::new(980)));
        assert_eq!(q.success_time, tx.success_time);
    }

    // A cancelled payment leaves the order unpaid; paying afterwards works.
    let p2 = pay
        .jsapi_prepay(&order("flow_0002", 1, &r.url))
        .await
        .unwrap();
    assert_eq!(
        t.pay(&pay, &p2.prepay_id, "cancel").await,
        "requestPayment:fail cancel"
    );
    assert_eq!(
        pay.query_by_out_trade_no("flow_0002")
            .await
            .unwrap()
            .trade_state,
        TradeState::NotPay
    );
    // Another merchant's client cannot have it paid: paySign is checked with this merchant's key.
    let other = t.issue(json!({})).await;
    let stranger = t.pk_client(&other);
    assert_ne!(
        t.pay(&stranger, &p2.prepay_id, "pay").await,
        "requestPayment:ok"
    );
}

// ------------------------------------------------------------------------- 2. refunds

#[tokio::test]
async fn refunds_processing_success_abnormal_closed_and_errors() {
    let t = T::new().await;
    let m = t.issue(json!({})).await;
    let pay = t.pk_client(&m);
    let r = Receiver::start(&pay, Handling::Parse).await;
    let transaction_id = t.paid_order(&pay, "refund_001", 1000, &r.url).await;
    r.nth(1).await;

    // Partial refund: PROCESSING, then SUCCESS after 60 s of the simulator's clock.
    let req = RefundRequest::new(
        OrderRef::OutTradeNo("refund_001".into()),
        "refund_001_r1",
        Fen::new(300),
        Fen::new(1000),
    )
    .reason("尺码不合适")
    .notify_url(&r.url);
    let first = pay.refund(&req).await.unwrap();
    assert_eq!(first.status, RefundStatus::Processing);
    assert_eq!(first.out_trade_no, "refund_001");
    assert_eq!(first.transaction_id, transaction_id);
    assert_eq!(first.amount.refund, Some(Fen::new(300)));
    assert_eq!(first.amount.total, Some(Fen::new(1000)));
    t.advance(59);
    assert_eq!(
        pay.query_refund("refund_001_r1").await.unwrap().status,
        RefundStatus::Processing
    );
    t.advance(1);
    let done = pay.query_refund("refund_001_r1").await.unwrap();
    assert_eq!(done.status, RefundStatus::Success);
    assert_eq!(done.refund_id, first.refund_id);
    assert!(done.success_time.is_some());
    r.nth(2).await;
    let n = r.ok(2);
    assert_eq!(n.event_type, "REFUND.SUCCESS");
    assert_eq!(n.original_type, "refund");
    let notice = refund_notice(&n);
    assert_eq!(notice.refund_status, RefundStatus::Success);
    assert_eq!(notice.out_refund_no, "refund_001_r1");
    assert_eq!(notice.refund_id, first.refund_id);
    assert_eq!(notice.out_trade_no, "refund_001");
    assert_eq!(notice.amount.refund, Some(Fen::new(300)));
    assert_eq!(
        pay.query_by_out_trade_no("refund_001")
            .await
            .unwrap()
            .trade_state,
        TradeState::Refund
    );

    // The same out_refund_no refunds once: the same request answers the same refund…
    let again = pay.refund(&req).await.unwrap();
    assert_eq!(again.refund_id, first.refund_id);
    assert_eq!(again.status, RefundStatus::Success);
    // …and with other amounts is refused.
    let changed = RefundRequest::new(
        OrderRef::OutTradeNo("refund_001".into()),
        "refund_001_r1",
        Fen::new(301),
        Fen::new(1000),
    );
    let e = pay.refund(&changed).await.unwrap_err();
    assert_eq!(api(&e), (400, "INVALID_REQUEST".into(), true), "{e}");

    // ABNORMAL on demand, by transaction_id, with its notification.
    let abnormal = pay
        .refund(
            &RefundRequest::new(
                OrderRef::TransactionId(transaction_id.clone()),
                "refund_001_r2",
                Fen::new(200),
                Fen::new(1000),
            )
            .notify_url(&r.url),
        )
        .await
        .unwrap();
    assert_eq!(abnormal.status, RefundStatus::Processing);
    t.end_refund("refund_001_r2", "ABNORMAL").await;
    assert_eq!(
        pay.query_refund("refund_001_r2").await.unwrap().status,
        RefundStatus::Abnormal
    );
    r.nth(3).await;
    let n = r.ok(3);
    assert_eq!(n.event_type, "REFUND.ABNORMAL");
    assert_eq!(refund_notice(&n).refund_status, RefundStatus::Abnormal);
    assert_eq!(refund_notice(&n).out_refund_no, "refund_001_r2");

    // CLOSED on demand; a closed refund gives its amount back.
    pay.refund(
        &RefundRequest::new(
            OrderRef::OutTradeNo("refund_001".into()),
            "refund_001_r3",
            Fen::new(100),
            Fen::new(1000),
        )
        .notify_url(&r.url),
    )
    .await
    .unwrap();
    t.end_refund("refund_001_r3", "CLOSED").await;
    assert_eq!(
        pay.query_refund("refund_001_r3").await.unwrap().status,
        RefundStatus::Closed
    );
    r.nth(4).await;
    let n = r.ok(4);
    assert_eq!(n.event_type, "REFUND.CLOSED");
    assert_eq!(refund_notice(&n).refund_status, RefundStatus::Closed);
    // An ended refund cannot be ended again.
    let (s, _) = t
        .control(
            "POST",
            "/_sim/pay/refunds/refund_001_r3",
            json!({"status": "SUCCESS"}),
        )
        .await;
    assert_eq!(s, 409);

    // Left: 1000 − 300 − 200 = 500 (the closed 100 came back). More is refused, typed.
    let over = pay
        .refund(&RefundRequest::new(
            OrderRef::OutTradeNo("refund_001".into()),
            "refund_001_r4",
            Fen::new(501),
            Fen::new(1000),
        ))
        .await
        .unwrap_err();
    assert_eq!(api(&over), (400, "INVALID_REQUEST".into(), true), "{over}");
    assert!(!over.is_retryable());
    // More than the order's total never leaves the SDK.
    let e = pay
        .refund(&RefundRequest::new(
            OrderRef::OutTradeNo("refund_001".into()),
            "refund_001_r5",
            Fen::new(1001),
            Fen::new(1000),
        ))
        .await
        .unwrap_err();
    assert!(matches!(e, PayError::InvalidArgument(_)), "{e}");

    // The merchant's balance cannot cover it: 403 NOT_ENOUGH.
    let (s, _) = t
        .control(
            "PUT",
            &format!("/_sim/pay/merchants/{}/balance", m.mchid),
            json!({"balance": 50}),
        )
        .await;
    assert_eq!(s, 200);
    let poor = pay
        .refund(&RefundRequest::new(
            OrderRef::OutTradeNo("refund_001".into()),
            "refund_001_r6",
            Fen::new(100),
            Fen::new(1000),
        ))
        .await
        .unwrap_err();
    assert_eq!(api(&poor), (403, "NOT_ENOUGH".into(), true), "{poor}");
    assert_eq!(poor.code(), Some(&PayErrorCode::NotEnough));

    // An unknown refund; a refund of an unpaid order.
    let e = pay.query_refund("no_such_refund").await.unwrap_err();
    assert_eq!(api(&e), (404, "RESOURCE_NOT_EXISTS".into(), true));
    pay.jsapi_prepay(&order("refund_002", 100, &r.url))
        .await
        .unwrap();
    let e = pay
        .refund(&RefundRequest::new(
            OrderRef::OutTradeNo("refund_002".into()),
            "refund_002_r1",
            Fen::new(10),
            Fen::new(100),
        ))
        .await
        .unwrap_err();
    assert_eq!(api(&e), (400, "INVALID_REQUEST".into(), true));
}

// ------------------------------------------------------------------------- 3. close, errors

#[tokio::test]
async fn close_and_unknown_orders_are_typed_errors() {
    let t = T::new().await;
    let m = t.issue(json!({})).await;
    let pay = t.pk_client(&m);

    let e = pay.query_by_out_trade_no("never_placed").await.unwrap_err();
    assert_eq!(api(&e), (404, "ORDER_NOT_EXIST".into(), true), "{e}");
    assert_eq!(e.code(), Some(&PayErrorCode::OrderNotExist));
    assert_eq!(e.status(), Some(404));
    assert!(e.request_id().is_some_and(|r| !r.is_empty()));
    let e = pay
        .query_by_transaction_id("4200000000000000000000000000")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(&PayErrorCode::OrderNotExist), "{e}");

    pay.jsapi_prepay(&order("close_001", 100, "https://example.com/n"))
        .await
        .unwrap();
    pay.close("close_001").await.unwrap();
    assert_eq!(
        pay.query_by_out_trade_no("close_001")
            .await
            .unwrap()
            .trade_state,
        TradeState::Closed
    );
    // Closing again, or an order that never existed: 204, as production.
    pay.close("close_001").await.unwrap();
    pay.close("never_placed").await.unwrap();
    // A closed order cannot be prepaid again.
    let e = pay
        .jsapi_prepay(&order("close_001", 100, "https://example.com/n"))
        .await
        .unwrap_err();
    assert_eq!(api(&e), (400, "ORDER_CLOSED".into(), true), "{e}");
    assert_eq!(e.code(), Some(&PayErrorCode::OrderClosed));
    // Other parameters under a used out_trade_no.
    pay.jsapi_prepay(&order("close_002", 100, "https://example.com/n"))
        .await
        .unwrap();
    let e = pay
        .jsapi_prepay(&order("close_002", 200, "https://example.com/n"))
        .await
        .unwrap_err();
    assert_eq!(api(&e), (403, "OUT_TRADE_NO_USED".into(), true), "{e}");
    // A paid order cannot be closed.
    t.paid_order(&pay, "close_003", 100, "https://example.com/n")
        .await;
    let e = pay.close("close_003").await.unwrap_err();
    let (status, _, rid) = api(&e);
    assert_eq!((status, rid), (400, true), "{e}");
    // An appid not bound to the merchant.
    let bound = t.issue(json!({"appids": ["wx2222222222222222"]})).await;
    let e = t
        .pk_client(&bound)
        .jsapi_prepay(&order("close_004", 100, "https://example.com/n"))
        .await
        .unwrap_err();
    assert_eq!(api(&e), (400, "APPID_MCHID_NOT_MATCH".into(), true), "{e}");
    assert!(!e.is_outcome_unknown(), "a 4xx is a definite answer");
}

// ------------------------------------------------------------------------- 4. bills

#[tokio::test]
async fn trade_and_fund_flow_bills_download_with_their_hash_checked() {
    let t = T::new().await;
    let m = t.issue(json!({})).await;
    let pay = t.pk_client(&m);
    t.paid_order(&pay, "bill_0001", 123, "https://example.com/n")
        .await;
    t.paid_order(&pay, "bill_0002", 1000, "https://example.com/n")
        .await;
    pay.refund(&RefundRequest::new(
        OrderRef::OutTradeNo("bill_0002".into()),
        "bill_0002_rf",
        Fen::new(250),
        Fen::new(1000),
    ))
    .await
    .unwrap();
    t.end_refund("bill_0002_rf", "SUCCESS").await;

    let today = PayTime::from_unix(t.sim().now()).china_date();
    let trade = TradeBillRequest {
        bill_date: today.clone(),
        bill_type: TradeBillType::All,
    };
    let e = pay.trade_bill(&trade).await.unwrap_err();
    assert_eq!(
        api(&e),
        (400, "NO_STATEMENT_EXIST".into(), true),
        "not before the day is over: {e}"
    );
    // To 10:05 Beijing time the next day.
    let now = t.sim().now();
    let into_day = (now + 8 * 3600).rem_euclid(86_400);
    t.advance(86_400 - into_day + 10 * 3600 + 300);

    let info = pay.trade_bill(&trade).await.unwrap();
    assert_eq!(info.hash_type, "SHA1");
    assert!(info.download_url.starts_with(t.h.url()));
    let file = pay
        .download_bill(&info)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let text = String::from_utf8(file).unwrap();
    assert!(text.starts_with("交易时间,公众账号ID,商户号"), "{text}");
    assert!(text.contains("`bill_0001,") && text.contains("`1.23,"));
    assert!(text.contains("`bill_0002_rf,") && text.contains("`2.50,"));

    // Streamed chunk by chunk, the same.
    let mut stream = pay.download_bill(&info).await.unwrap();
    let mut n = 0;
    while let Some(chunk) = stream.chunk().await.unwrap() {
        n += chunk.len();
    }
    assert_eq!(n, text.len());
    assert_eq!(stream.received(), text.len() as u64);

    // A hash that does not match the file is refused at the end.
    let mut wrong = info.clone();
    wrong.hash_value = "0".repeat(40);
    let e = pay
        .download_bill(&wrong)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap_err();
    assert!(matches!(e, PayError::BillHashMismatch { .. }), "{e}");

    let refunds = pay
        .trade_bill(&TradeBillRequest {
            bill_date: today.clone(),
            bill_type: TradeBillType::Refund,
        })
        .await
        .unwrap();
    let text = String::from_utf8(
        pay.download_bill(&refunds)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    assert!(text.contains("`bill_0002_rf,") && !text.contains("`bill_0001,"));

    let fund = pay
        .fund_flow_bill(&FundFlowBillRequest {
            bill_date: today,
            account_type: AccountType::Basic,
        })
        .await
        .unwrap();
    assert_eq!(fund.hash_type, "SHA1");
    let text = String::from_utf8(
        pay.download_bill(&fund)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    assert!(text.starts_with("记账时间,微信支付业务单号"), "{text}");
    assert!(text.contains("`1.23") && text.contains("`2.50"), "{text}");

    // The download URL lives 5 minutes.
    t.advance(301);
    let e = pay.download_bill(&info).await.unwrap_err();
    assert!(
        matches!(e, PayError::Api { .. } | PayError::HttpStatus { .. }),
        "{e}"
    );
}

// ------------------------------------------------------------------------- 5. verification

#[tokio::test]
async fn answers_signed_with_another_key_or_serial_are_refused() {
    let t = T::new().await;
    let m = t.issue(json!({})).await;
    let other = t.issue(json!({})).await;
    t.pk_client(&m)
        .jsapi_prepay(&order("verify_001", 100, "https://example.com/n"))
        .await
        .unwrap();

    // This merchant's public key id with another merchant's key: every answer is refused.
    let wrong_key = t
        .builder(&m)
        .wechatpay_public_key(m.public_key_id(), other.public_key())
        .build()
        .unwrap();
    let e = wrong_key
        .query_by_out_trade_no("verify_001")
        .await
        .unwrap_err();
    assert_eq!(verify_error(&e), VerifyError::Mismatch, "{e}");
    // A prepay whose answer cannot be verified has an unknown outcome.
    let e = wrong_key
        .jsapi_prepay(&order("verify_002", 100, "https://example.com/n"))
        .await
        .unwrap_err();
    assert!(e.is_outcome_unknown(), "{e}");
    assert!(e.request_id().is_some());
    // …and it did reach WeChat: the right key sees the order.
    assert_eq!(
        t.pk_client(&m)
            .query_by_out_trade_no("verify_002")
            .await
            .unwrap()
            .trade_state,
        TradeState::NotPay
    );
    // Errors are unsigned and stay typed whatever the key.
    let e = wrong_key
        .query_by_out_trade_no("verify_404")
        .await
        .unwrap_err();
    assert_eq!(api(&e), (404, "ORDER_NOT_EXIST".into(), true));

    // Another merchant's public key id: WeChat refuses to answer under it.
    let wrong_id = t
        .builder(&m)
        .wechatpay_public_key(other.public_key_id(), other.public_key())
        .build()
        .unwrap();
    let e = wrong_id
        .query_by_out_trade_no("verify_001")
        .await
        .unwrap_err();
    assert_eq!(api(&e), (400, "PARAM_ERROR".into(), true), "{e}");

    // Certificate mode with another merchant's certificate (no download): the answer names a
    // serial the client does not hold.
    let c = t.issue(json!({"verification": "certificate"})).await;
    let d = t.issue(json!({"verification": "certificate"})).await;
    let foreign = PlatformCertificate::from_pem(&d.certificates[0].1).unwrap();
    let wrong_serial = t
        .builder(&c)
        .with_certificates(vec![foreign])
        .no_certificate_download()
        .build()
        .unwrap();
    let e = wrong_serial
        .query_by_out_trade_no("verify_001")
        .await
        .unwrap_err();
    // (ORDER_NOT_EXIST is unsigned; place the order first.)
    assert_eq!(api(&e).1, "ORDER_NOT_EXIST");
    let right = t.builder(&c).platform_certificates().build().unwrap();
    right
        .jsapi_prepay(&order("verify_003", 100, "https://example.com/n"))
        .await
        .unwrap();
    let e = wrong_serial
        .query_by_out_trade_no("verify_003")
        .await
        .unwrap_err();
    match verify_error(&e) {
        VerifyError::UnknownSerial { serial, .. } => assert_eq!(serial, c.certificates[0].0),
        other => panic!("UnknownSerial expected, got {other:?}"),
    }
}

#[tokio::test]
async fn clocks_apart_are_refused_both_ways() {
    let t = T::new().await;
    let m = t.issue(json!({})).await;
    let pay = t.pk_client(&m);
    pay.jsapi_prepay(&order("clock_001", 100, "https://example.com/n"))
        .await
        .unwrap();

    // The client's clock an hour behind the simulator's: WeChat refuses the request.
    let late = t
        .builder(&m)
        .wechatpay_public_key(m.public_key_id(), m.public_key())
        .clock(t.clock_off(-3600))
        .build()
        .unwrap();
    let e = late.query_by_out_trade_no("clock_001").await.unwrap_err();
    assert_eq!(api(&e), (401, "SIGN_ERROR".into(), true), "{e}");
    // The same after the simulator's clock moved an hour ahead of a system-clock client.
    let system = PayClient::builder(m.merchant(), ApiV3Key::new(&m.apiv3).unwrap())
        .base_url(t.h.url())
        .wechatpay_public_key(m.public_key_id(), m.public_key())
        .build()
        .unwrap();
    system.query_by_out_trade_no("clock_001").await.unwrap();

    // 200 s apart: WeChat (±300 s) accepts the request, a client allowing ±100 s refuses the
    // answer's timestamp.
    let strict = t
        .builder(&m)
        .wechatpay_public_key(m.public_key_id(), m.public_key())
        .clock(t.clock_off(-200))
        .timestamp_window_secs(100)
        .build()
        .unwrap();
    let e = strict.query_by_out_trade_no("clock_001").await.unwrap_err();
    assert!(
        matches!(
            verify_error(&e),
            VerifyError::StaleTimestamp {
                window_secs: 100,
                ..
            }
        ),
        "{e}"
    );

    t.advance(3600);
    let e = system.query_by_out_trade_no("clock_001").await.unwrap_err();
    assert_eq!(api(&e), (401, "SIGN_ERROR".into(), true), "{e}");
    // The client on the simulator's clock moved with it.
    pay.query_by_out_trade_no("clock_001").await.unwrap();
}

#[tokio::test]
async fn probes_tampering_replays_and_duplicates_of_notifications() {
    let t = T::new().await;
    let m = t.issue(json!({})).await;
    let pay = t.pk_client(&m);
    let r = Receiver::start(&pay, Handling::Parse).await;
    t.paid_order(&pay, "notify_001", 100, &r.url).await;
    let first = r.nth(1).await;
    let n = r.ok(1);

    // A duplicate: the same id and body. The SDK does not dedupe; the service does, by id.
    let (s, dup) = t
        .control(
            "POST",
            &format!("/_sim/pay/merchants/{}/orders/notify_001/notify", m.mchid),
            Value::Null,
        )
        .await;
    assert_eq!(s, 200, "{dup}");
    assert_eq!(dup["id"], n.id.as_str());
    let second = r.nth(2).await;
    let n2 = r.ok(2);
    assert_eq!(n2.id, n.id);
    assert_eq!(n2.plaintext, n.plaintext);
    assert_eq!(second.body, first.body);

    // A probe (签名探测): refused, and answered 401.
    let (s, probe) = t
        .control(
            "POST",
            &format!("/_sim/pay/merchants/{}/orders/notify_001/probe", m.mchid),
            Value::Null,
        )
        .await;
    assert_eq!(s, 200, "{probe}");
    let got = r.nth(3).await;
    assert!(got.headers["wechatpay-signature"]
        .to_str()
        .unwrap()
        .starts_with("WECHATPAY/SIGNTEST/"));
    assert_eq!(
        notify_verify_error(&got.outcome),
        VerifyError::ProbeSignature
    );
    assert_eq!(got.answered, 401);
    let list = t.notifications(&m.mchid).await;
    let p = list
        .iter()
        .find(|x| x["probe"] == true)
        .expect("the probe is listed");
    assert_eq!(p["attempts"][0]["status"], 401, "{p}");

    // A tampered body: one byte flipped.
    let mut body = first.body.to_vec();
    let at = body.len() / 2;
    body[at] ^= 0x01;
    assert_eq!(
        notify_verify_error(&pay.parse_notification(&first.headers, &body)),
        VerifyError::Mismatch
    );
    // A tampered timestamp header (still within the window).
    let mut headers = first.headers.clone();
    let ts: i64 = headers["wechatpay-timestamp"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    headers.insert("wechatpay-timestamp", (ts + 1).to_string().parse().unwrap());
    assert_eq!(
        notify_verify_error(&pay.parse_notification(&headers, &first.body)),
        VerifyError::Mismatch
    );
    // A body re-serialized by a framework (same JSON, other bytes) fails too.
    let reserialized =
        serde_json::to_vec(&serde_json::from_slice::<Value>(&first.body).unwrap()).unwrap();
    if reserialized != first.body.to_vec() {
        assert!(pay
            .parse_notification(&first.headers, &reserialized)
            .is_err());
    }
    // Signed for another merchant's key id: unknown serial.
    let other = t.issue(json!({})).await;
    let stranger = t.pk_client(&other);
    assert!(matches!(
        notify_verify_error(&stranger.parse_notification(&first.headers, &first.body)),
        VerifyError::UnknownSerial { .. }
    ));
    // The right key id with the wrong APIv3 key verifies but does not decrypt.
    let wrong_apiv3 = PayClient::builder(m.merchant(), ApiV3Key::new(&other.apiv3).unwrap())
        .base_url(t.h.url())
        .clock(t.clock())
        .wechatpay_public_key(m.public_key_id(), m.public_key())
        .build()
        .unwrap();
    assert_eq!(
        wrong_apiv3
            .parse_notification(&first.headers, &first.body)
            .unwrap_err(),
        NotifyError::Decrypt
    );

    // A replay after the window: stale.
    assert!(pay.parse_notification(&first.headers, &first.body).is_ok());
    t.advance(301);
    assert!(matches!(
        notify_verify_error(&pay.parse_notification(&first.headers, &first.body)),
        VerifyError::StaleTimestamp { .. }
    ));
}

#[tokio::test]
async fn a_refused_notification_is_retried_on_wechats_schedule() {
    let t = T::new().await;
    let m = t.issue(json!({})).await;
    let pay = t.pk_client(&m);
    // The receiver's clock is 10 minutes off: it refuses (401) every attempt as stale.
    let skewed = t
        .builder(&m)
        .wechatpay_public_key(m.public_key_id(), m.public_key())
        .clock(t.clock_off(600))
        .build()
        .unwrap();
    let r = Receiver::start(&skewed, Handling::Parse).await;
    t.paid_order(&pay, "retry_001", 100, &r.url).await;
    let got = r.nth(1).await;
    assert!(matches!(
        notify_verify_error(&got.outcome),
        VerifyError::StaleTimestamp { .. }
    ));
    assert_eq!(got.answered, 401);
    // Fixed: the retry 15 s later is accepted, and delivery ends.
    *r.state.client.lock().unwrap() = Some(pay.clone());
    t.advance(15);
    r.nth(2).await;
    let n = r.ok(2);
    assert_eq!(transaction(&n).out_trade_no, "retry_001");
    let list = t.notifications(&m.mchid).await;
    assert_eq!(list[0]["delivered"], true);
    assert_eq!(list[0]["attempts"].as_array().unwrap().len(), 2);
}

// ------------------------------------------------------------------------- 6. certificates

#[tokio::test]
async fn certificate_mode_downloads_rotates_and_refreshes_on_a_new_serial() {
    let t = T::new().await;
    let m = t.issue(json!({"verification": "certificate"})).await;
    assert!(m.public_key.is_none());
    let old = m.certificates[0].0.clone();
    // Downloads only when due (never, within this test) or for an unknown serial.
    let policy = RefreshPolicy {
        interval: Duration::from_secs(30 * 86_400),
        expiry_margin: Duration::ZERO,
        min_interval: Duration::from_secs(60),
    };
    let pay = t
        .builder(&m)
        .platform_certificates()
        .certificate_refresh(policy)
        .build()
        .unwrap();
    assert!(pay.certificate_store().is_some());
    // The first call downloads /v3/certificates, then verifies with it.
    let r = Receiver::start(&pay, Handling::Parse).await;
    t.paid_order(&pay, "cert_0001", 100, &r.url).await;
    assert_eq!(pay.verifier().certificates().len(), 1);
    assert!(pay.verifier().knows_serial(&old));
    r.nth(1).await;
    let n = r.ok(1);
    assert_eq!(n.serial, old);

    // A receiver holding what it downloaded now, refreshing on unknown serials.
    let receiver_client = t
        .builder(&m)
        .platform_certificates()
        .certificate_refresh(policy)
        .build()
        .unwrap();
    assert_eq!(receiver_client.refresh_certificates().await.unwrap(), 1);
    let r2 = Receiver::start(&receiver_client, Handling::Receive).await;
    // And one that never downloads.
    let pinned = t
        .builder(&m)
        .with_certificates(vec![
            PlatformCertificate::from_pem(&m.certificates[0].1).unwrap()
        ])
        .no_certificate_download()
        .build()
        .unwrap();

    // Rotation with a one-hour overlap: listed now, signing from then.
    let (s, v) = t
        .control(
            "POST",
            &format!(
                "/_sim/pay/merchants/{}/platform_certificates/rotate",
                m.mchid
            ),
            json!({"overlap_secs": 3600}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let new = v["platform_certificates"][1]["serial_no"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(new, old);
    // During the overlap the old one still signs: nothing changes for anyone.
    pay.query_by_out_trade_no("cert_0001").await.unwrap();
    pinned.query_by_out_trade_no("cert_0001").await.unwrap();
    assert!(!pay.verifier().knows_serial(&new), "no download was due");
    t.paid_order(&pay, "cert_0002", 100, &r2.url).await;
    r2.nth(1).await;
    assert_eq!(r2.ok(1).serial, old);

    // After the overlap the new certificate signs. The client meets an unknown serial,
    // downloads once and goes on.
    t.advance(3601);
    let q = pay.query_by_out_trade_no("cert_0002").await.unwrap();
    assert_eq!(q.trade_state, TradeState::Success);
    assert!(pay.verifier().knows_serial(&new));
    assert!(!pay.verifier().knows_serial(&old), "the old one expired");
    // A notification signed with the new certificate: parse alone (no network) does not know
    // it; receive_notification downloads and accepts it.
    assert_eq!(
        t.pay(
            &pay,
            &pay.jsapi_prepay(&order("cert_0003", 100, &r2.url))
                .await
                .unwrap()
                .prepay_id,
            "pay"
        )
        .await,
        "requestPayment:ok"
    );
    let got = r2.nth(2).await;
    assert_eq!(got.headers["wechatpay-serial"].to_str().unwrap(), new);
    assert_eq!(r2.ok(2).serial, new);
    assert!(receiver_client.verifier().knows_serial(&new));
    assert!(matches!(
        notify_verify_error(&pinned.parse_notification(&got.headers, &got.body)),
        VerifyError::UnknownSerial { .. }
    ));
    // The pinned client without downloads cannot verify answers any more.
    let e = pinned.query_by_out_trade_no("cert_0001").await.unwrap_err();
    assert!(
        matches!(verify_error(&e), VerifyError::UnknownSerial { .. }),
        "{e}"
    );

    // A public-key merchant has no certificates: 404 RESOURCE_NOT_EXISTS.
    let pk = t.issue(json!({})).await;
    let e = t
        .builder(&pk)
        .platform_certificates()
        .build()
        .unwrap()
        .refresh_certificates()
        .await
        .unwrap_err();
    assert_eq!(api(&e), (404, "RESOURCE_NOT_EXISTS".into(), true), "{e}");
}

// ------------------------------------------------------------------------- 7. migration

#[tokio::test]
async fn the_migration_accepts_both_kinds_of_signature() {
    let t = T::new().await;
    let m = t.issue(json!({"verification": "certificate"})).await;
    let cert_serial = m.certificates[0].0.clone();
    let certs_only = t.builder(&m).platform_certificates().build().unwrap();
    let r_certs = Receiver::start(&certs_only, Handling::Parse).await;
    t.paid_order(&certs_only, "mig_0001", 100, &r_certs.url)
        .await;
    r_certs.nth(1).await;
    r_certs.ok(1);

    // 开始更换: the merchant gets a public key; notifications are signed with one or the other.
    let view = t.migration(&m.mchid, json!({"action": "start"})).await;
    assert_eq!(view["verification"], "both");
    let pub_id = view["wechatpay_public_key_id"].as_str().unwrap().to_owned();
    let pub_key = RsaPublicKey::from_pem(view["wechatpay_public_key"].as_str().unwrap()).unwrap();
    let both = t
        .builder(&m)
        .wechatpay_public_key(&pub_id, pub_key.clone())
        .platform_certificates()
        .build()
        .unwrap();
    let r = Receiver::start(&both, Handling::Parse).await;
    // The certificate-only client keeps working during the migration (answers stay
    // certificate-signed unless the request names the public key).
    certs_only.query_by_out_trade_no("mig_0001").await.unwrap();
    // The "both" client names the public key on every request: answers signed with it.
    both.query_by_out_trade_no("mig_0001").await.unwrap();

    t.migration(&m.mchid, json!({"notify_percent": 100})).await;
    t.paid_order(&both, "mig_0002", 100, &r.url).await;
    r.nth(1).await;
    assert_eq!(r.ok(1).serial, pub_id);
    // The same notification reaching a certificate-only receiver: unknown serial
    // (wechatpay-go#263) — why the migration needs "both".
    let got = r.get(0);
    assert!(matches!(
        notify_verify_error(&certs_only.parse_notification(&got.headers, &got.body)),
        VerifyError::UnknownSerial { .. }
    ));
    t.migration(&m.mchid, json!({"notify_percent": 0})).await;
    t.paid_order(&both, "mig_0003", 100, &r.url).await;
    r.nth(2).await;
    assert_eq!(r.ok(2).serial, cert_serial);

    // Answers signed either way verify with the "both" verifier: one request as the SDK signs
    // it without Wechatpay-Serial (certificate-signed), one naming the public key.
    let merchant = m.merchant();
    let path = format!(
        "/v3/pay/transactions/out-trade-no/mig_0002?mchid={}",
        m.mchid
    );
    for (serial, expect) in [(None, cert_serial.as_str()), (Some(&pub_id), &pub_id)] {
        let auth = merchant
            .authorization("GET", &path, b"", t.sim().now(), &weapp::pay::nonce())
            .unwrap();
        let mut req = t
            .http
            .get(format!("{}{path}", t.h.url()))
            .header("Authorization", auth)
            .header("Accept", "application/json");
        if let Some(s) = serial {
            req = req.header("Wechatpay-Serial", s.as_str());
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let headers = resp.headers().clone();
        let body = resp.bytes().await.unwrap();
        let verified = both.verifier().verify(&headers, &body).unwrap();
        assert_eq!(verified.serial, expect);
    }

    // 作废平台证书: public key only. The "both" client goes on; a certificate-only one cannot.
    let view = t.migration(&m.mchid, json!({"action": "finish"})).await;
    assert_eq!(view["verification"], "public_key");
    both.query_by_out_trade_no("mig_0003").await.unwrap();
    t.paid_order(&both, "mig_0004", 100, &r.url).await;
    r.nth(3).await;
    assert_eq!(r.ok(3).serial, pub_id);
    t.advance(61); // past the certificate store's rate limit
    assert!(certs_only.query_by_out_trade_no("mig_0004").await.is_err());
    let pk_only = t
        .builder(&m)
        .wechatpay_public_key(&pub_id, pub_key)
        .build()
        .unwrap();
    pk_only.query_by_out_trade_no("mig_0004").await.unwrap();
}

// ------------------------------------------------------------------------- 8. request signing

#[tokio::test]
async fn the_simulator_refuses_a_wrong_merchant_serial_or_key() {
    let t = T::new().await;
    let m = t.issue(json!({})).await;
    let other = t.issue(json!({})).await;

    let wrong_serial = PayClient::builder(
        Merchant::new(
            &m.mchid,
            &other.serial,
            MerchantPrivateKey::from_pem(&m.private_key).unwrap(),
        )
        .unwrap(),
        ApiV3Key::new(&m.apiv3).unwrap(),
    )
    .base_url(t.h.url())
    .clock(t.clock())
    .wechatpay_public_key(m.public_key_id(), m.public_key())
    .build()
    .unwrap();
    let e = wrong_serial
        .jsapi_prepay(&order("sign_0001", 100, "https://example.com/n"))
        .await
        .unwrap_err();
    assert_eq!(api(&e), (401, "SIGN_ERROR".into(), true), "{e}");
    assert_eq!(e.code(), Some(&PayErrorCode::SignError));
    assert!(!e.is_outcome_unknown(), "a 401 is a definite answer");

    // The right serial, another merchant's private key: the signature does not match, with
    // production's sign_information.
    let wrong_key = PayClient::builder(
        Merchant::new(
            &m.mchid,
            &m.serial,
            MerchantPrivateKey::from_pem(&other.private_key).unwrap(),
        )
        .unwrap(),
        ApiV3Key::new(&m.apiv3).unwrap(),
    )
    .base_url(t.h.url())
    .clock(t.clock())
    .wechatpay_public_key(m.public_key_id(), m.public_key())
    .build()
    .unwrap();
    let e = wrong_key
        .query_by_out_trade_no("sign_0001")
        .await
        .unwrap_err();
    assert_eq!(api(&e), (401, "SIGN_ERROR".into(), true), "{e}");
    let PayError::Api {
        detail: Some(detail),
        ..
    } = &e
    else {
        panic!("a detail: {e:?}")
    };
    let info = &detail["sign_information"];
    assert_eq!(info["method"], "GET");
    assert_eq!(info["url"], "/v3/pay/transactions/out-trade-no/sign_0001");
    // Unsigned text: its control characters arrive escaped.
    assert!(info["truncated_sign_message"]
        .as_str()
        .unwrap()
        .starts_with("GET\\n/v3/pay/transactions/out-trade-no/sign_0001?mchid="));

    // An unknown mchid.
    let e = PayClient::builder(
        Merchant::new(
            "1900000000",
            &m.serial,
            MerchantPrivateKey::from_pem(&m.private_key).unwrap(),
        )
        .unwrap(),
        ApiV3Key::new(&m.apiv3).unwrap(),
    )
    .base_url(t.h.url())
    .clock(t.clock())
    .wechatpay_public_key(m.public_key_id(), m.public_key())
    .build()
    .unwrap()
    .query_by_out_trade_no("sign_0001")
    .await
    .unwrap_err();
    assert_eq!(api(&e), (400, "MCH_NOT_EXISTS".into(), true), "{e}");

    // And the right client: every call above was signed by the SDK and checked by the sim.
    t.pk_client(&m)
        .jsapi_prepay(&order("sign_0001", 100, "https://example.com/n"))
        .await
        .unwrap();
}

// ------------------------------------------------------------------------- faults

#[tokio::test]
async fn injected_faults_become_the_documented_errors() {
    let t = T::new().await;
    let m = t.issue(json!({})).await;
    let pay = t.pk_client(&m);
    let fault = |path: &str, spec: Value| {
        let mut spec = spec;
        spec["path"] = json!(path);
        spec["count"] = json!(1);
        spec
    };
    let jsapi = "/v3/pay/transactions/jsapi";
    let query = "/v3/pay/transactions/out-trade-no/fault_0001";

    // 500 on a prepay: the outcome is unknown; the same out_trade_no again settles it.
    t.control(
        "POST",
        "/_sim/faults",
        fault(jsapi, json!({"http_status": 500})),
    )
    .await;
    let e = pay
        .jsapi_prepay(&order("fault_0001", 100, "https://example.com/n"))
        .await
        .unwrap_err();
    assert!(e.is_outcome_unknown() && e.is_retryable(), "{e}");
    assert_eq!(e.code(), Some(&PayErrorCode::SystemError));
    assert_eq!(e.status(), Some(500));
    let prepay = pay
        .jsapi_prepay(&order("fault_0001", 100, "https://example.com/n"))
        .await
        .unwrap();
    assert!(prepay.prepay_id.starts_with("wx"));

    // 429 on a query: typed and retryable.
    t.control(
        "POST",
        "/_sim/faults",
        fault(query, json!({"http_status": 429})),
    )
    .await;
    let e = pay.query_by_out_trade_no("fault_0001").await.unwrap_err();
    assert_eq!(api(&e), (429, "FREQUENCY_LIMITED".into(), true), "{e}");
    assert!(e.is_retryable());

    // An nginx page: the bare status.
    t.control(
        "POST",
        "/_sim/faults",
        fault(
            query,
            json!({"http_status": 502, "body": "<html><body>502 Bad Gateway</body></html>"}),
        ),
    )
    .await;
    let e = pay.query_by_out_trade_no("fault_0001").await.unwrap_err();
    assert!(matches!(e, PayError::HttpStatus { status: 502, .. }), "{e}");

    // An unsigned 200 is treated as forged; for a prepay that leaves the outcome unknown.
    t.control(
        "POST",
        "/_sim/faults",
        fault(query, json!({"body": "{\"trade_state\":\"SUCCESS\"}"})),
    )
    .await;
    let e = pay.query_by_out_trade_no("fault_0001").await.unwrap_err();
    assert!(
        matches!(
            e,
            PayError::Verify {
                source: VerifyError::MissingHeader(_),
                ..
            }
        ),
        "{e}"
    );
    t.control(
        "POST",
        "/_sim/faults",
        fault(jsapi, json!({"body": "{\"prepay_id\":\"wx_forged\"}"})),
    )
    .await;
    let e = pay
        .jsapi_prepay(&order("fault_0002", 100, "https://example.com/n"))
        .await
        .unwrap_err();
    assert!(e.is_outcome_unknown(), "{e}");

    // A slow WeChat: the client's timeout.
    let impatient = t
        .builder(&m)
        .wechatpay_public_key(m.public_key_id(), m.public_key())
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    t.control(
        "POST",
        "/_sim/faults",
        fault(query, json!({"latency_ms": 1500})),
    )
    .await;
    let e = impatient
        .query_by_out_trade_no("fault_0001")
        .await
        .unwrap_err();
    assert!(matches!(e, PayError::TimedOut { .. }), "{e}");
    assert!(e.is_retryable());
    // The faults are used up: everything answers again.
    assert_eq!(
        pay.query_by_out_trade_no("fault_0001")
            .await
            .unwrap()
            .trade_state,
        TradeState::NotPay
    );
}
