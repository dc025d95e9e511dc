//! The WeChat Pay v3 simulator over raw HTTP, checked against wechat-pay.md with crypto of the
//! test's own (ring: request signing, response and notification verification, AES-256-GCM),
//! not the simulator's — so a mistake shared by both cannot pass.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ring::signature::{self, RsaKeyPair, UnparsedPublicKey};
use serde_json::{json, Value};
use sha1::{Digest, Sha1};
use weapp_sim::{spawn, SimConfig, SimHandle};

// ------------------------------------------------------------------------- DER and PEM

fn pem_der(pem: &str) -> Vec<u8> {
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    B64.decode(b64).expect("PEM base64")
}

/// (tag, content, rest) of the first DER element of `d`.
fn tlv(d: &[u8]) -> (u8, &[u8], &[u8]) {
    let tag = d[0];
    let (len, head) = if d[1] < 0x80 {
        (d[1] as usize, 2)
    } else {
        let n = (d[1] & 0x7f) as usize;
        (
            d[2..2 + n].iter().fold(0usize, |a, b| a << 8 | *b as usize),
            2 + n,
        )
    };
    (tag, &d[head..head + len], &d[head + len..])
}

/// The PKCS#1 RSAPublicKey inside an SPKI.
fn spki_to_pkcs1(spki: &[u8]) -> Vec<u8> {
    let (_, inner, _) = tlv(spki);
    let (_, _alg, rest) = tlv(inner);
    let (tag, bits, _) = tlv(rest);
    assert_eq!(tag, 0x03, "a BIT STRING");
    bits[1..].to_vec()
}

/// The SPKI inside an X.509 certificate, and its serial in upper-case hex.
fn cert_spki(der: &[u8]) -> (Vec<u8>, String) {
    let (_, cert, _) = tlv(der);
    let (_, tbs, _) = tlv(cert);
    let (_, _version, rest) = tlv(tbs);
    let (_, serial, rest) = tlv(rest);
    let (_, _sigalg, rest) = tlv(rest);
    let (_, _issuer, rest) = tlv(rest);
    let (_, _validity, rest) = tlv(rest);
    let (_, _subject, rest) = tlv(rest);
    let (_, _, after) = tlv(rest);
    let spki = rest[..rest.len() - after.len()].to_vec();
    (spki, hex::encode_upper(serial))
}

// ------------------------------------------------------------------------- the merchant side

/// A merchant as the test holds it: its key, and every key WeChat may sign with, by serial.
struct Merchant {
    mchid: String,
    serial: String,
    key: RsaKeyPair,
    apiv3: String,
    public_key_id: Option<String>,
    /// serial → PKCS#1 public key.
    wechat_keys: HashMap<String, Vec<u8>>,
    issued: Value,
}

impl Merchant {
    fn from_issued(issued: Value) -> Self {
        let key =
            RsaKeyPair::from_pkcs8(&pem_der(issued["merchant_private_key"].as_str().unwrap()))
                .unwrap();
        let mut m = Merchant {
            mchid: issued["mchid"].as_str().unwrap().to_owned(),
            serial: issued["merchant_serial_no"].as_str().unwrap().to_owned(),
            key,
            apiv3: issued["apiv3_key"].as_str().unwrap().to_owned(),
            public_key_id: issued["wechatpay_public_key_id"]
                .as_str()
                .map(str::to_owned),
            wechat_keys: HashMap::new(),
            issued: issued.clone(),
        };
        if let (Some(id), Some(pem)) = (&m.public_key_id, issued["wechatpay_public_key"].as_str()) {
            m.wechat_keys
                .insert(id.clone(), spki_to_pkcs1(&pem_der(pem)));
        }
        for c in issued["platform_certificates"].as_array().unwrap() {
            m.learn_cert(
                c["certificate"].as_str().unwrap(),
                c["serial_no"].as_str().unwrap(),
            );
        }
        m
    }

    fn learn_cert(&mut self, pem: &str, listed_serial: &str) {
        let (spki, serial) = cert_spki(&pem_der(pem));
        assert_eq!(
            serial, listed_serial,
            "the certificate's serial is the listed one"
        );
        self.wechat_keys.insert(serial, spki_to_pkcs1(&spki));
    }

    fn sign(&self, message: &str) -> String {
        let mut sig = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(
                &signature::RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                message.as_bytes(),
                &mut sig,
            )
            .unwrap();
        B64.encode(sig)
    }

    fn authorization(&self, method: &str, url: &str, body: &str, ts: i64, nonce: &str) -> String {
        let sig = self.sign(&format!("{method}\n{url}\n{ts}\n{nonce}\n{body}\n"));
        format!(
            r#"WECHATPAY2-SHA256-RSA2048 mchid="{}",nonce_str="{nonce}",signature="{sig}",timestamp="{ts}",serial_no="{}""#,
            self.mchid, self.serial
        )
    }

    /// Whether `(serial, timestamp, nonce, signature)` verifies over `body` with a key this
    /// merchant holds.
    fn verifies(&self, serial: &str, ts: &str, nonce: &str, sig: &str, body: &str) -> bool {
        let Some(key) = self.wechat_keys.get(serial) else {
            return false;
        };
        let Ok(sig) = B64.decode(sig) else {
            return false;
        };
        UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, key)
            .verify(format!("{ts}\n{nonce}\n{body}\n").as_bytes(), &sig)
            .is_ok()
    }

    fn decrypt(&self, resource: &Value) -> Vec<u8> {
        use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, self.apiv3.as_bytes()).unwrap());
        let nonce: [u8; 12] = resource["nonce"]
            .as_str()
            .unwrap()
            .as_bytes()
            .try_into()
            .unwrap();
        let mut buf = B64
            .decode(resource["ciphertext"].as_str().unwrap())
            .unwrap();
        let plain = key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(resource["associated_data"].as_str().unwrap().as_bytes()),
                &mut buf,
            )
            .expect("decrypts with the APIv3 key");
        plain.to_vec()
    }

    /// The five parameters of `wx.requestPayment` for a prepay_id, signed.
    fn pay_params(&self, appid: &str, openid: &str, prepay_id: &str, action: &str) -> Value {
        let ts = "1700000000";
        let nonce = "5K8264ILTKCH16CQ2502SI8ZNMTM67VS";
        let package = format!("prepay_id={prepay_id}");
        let pay_sign = self.sign(&format!("{appid}\n{ts}\n{nonce}\n{package}\n"));
        json!({"appid": appid, "openid": openid, "timeStamp": ts, "nonceStr": nonce,
               "package": package, "signType": "RSA", "paySign": pay_sign, "action": action})
    }
}

/// An answer: status, headers, raw body.
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    /// Signed by WeChat with a key `m` holds (the serial it names).
    fn signed_for(&self, m: &Merchant) -> bool {
        match (
            self.header("wechatpay-serial"),
            self.header("wechatpay-timestamp"),
            self.header("wechatpay-nonce"),
            self.header("wechatpay-signature"),
        ) {
            (Some(serial), Some(ts), Some(nonce), Some(sig)) => {
                self.header("wechatpay-signature-type") == Some("WECHATPAY2-SHA256-RSA2048")
                    && m.verifies(serial, ts, nonce, sig, &self.body)
            }
            _ => false,
        }
    }
}

// ------------------------------------------------------------------------- the receiver

/// What the notify URL received: (headers, body).
type Inbox = Arc<Mutex<Vec<(HeaderMap, String)>>>;

struct Receiver {
    url: String,
    inbox: Inbox,
    /// Statuses to answer, in order; 204 when empty.
    script: Arc<Mutex<VecDeque<u16>>>,
}

async fn receive(
    State((inbox, script)): State<(Inbox, Arc<Mutex<VecDeque<u16>>>)>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, String) {
    inbox.lock().unwrap().push((headers, body));
    let status = script.lock().unwrap().pop_front().unwrap_or(204);
    let body = if status >= 400 {
        r#"{"code":"FAIL","message":"失败"}"#.to_owned()
    } else {
        String::new()
    };
    (StatusCode::from_u16(status).unwrap(), body)
}

async fn receiver() -> Receiver {
    let inbox: Inbox = Arc::default();
    let script: Arc<Mutex<VecDeque<u16>>> = Arc::default();
    let app = Router::new()
        .route("/pay/notify", post(receive))
        .with_state((inbox.clone(), script.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Receiver {
        url: format!("http://{addr}/pay/notify"),
        inbox,
        script,
    }
}

impl Receiver {
    fn count(&self) -> usize {
        self.inbox.lock().unwrap().len()
    }
    fn get(&self, i: usize) -> (HeaderMap, String) {
        self.inbox.lock().unwrap()[i].clone()
    }
    async fn wait_for(&self, n: usize) {
        for _ in 0..100 {
            if self.count() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("expected {n} notifications, got {}", self.count());
    }
    /// Waits long enough for a due attempt to be made, then checks none was.
    async fn still(&self, n: usize) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(self.count(), n, "no attempt expected yet");
    }
}

/// Verifies a notification as a merchant must: signature by the header serial, then
/// decryption. Returns (envelope, resource).
fn open_notification(m: &Merchant, headers: &HeaderMap, body: &str) -> (Value, Value) {
    let h = |n: &str| headers.get(n).unwrap().to_str().unwrap().to_owned();
    assert_eq!(h("wechatpay-signature-type"), "WECHATPAY2-SHA256-RSA2048");
    assert_eq!(h("content-type"), "application/json");
    assert!(
        m.verifies(
            &h("wechatpay-serial"),
            &h("wechatpay-timestamp"),
            &h("wechatpay-nonce"),
            &h("wechatpay-signature"),
            body
        ),
        "the notification verifies"
    );
    let envelope: Value = serde_json::from_str(body).unwrap();
    assert_eq!(envelope["resource_type"], "encrypt-resource");
    assert_eq!(envelope["resource"]["algorithm"], "AEAD_AES_256_GCM");
    assert_eq!(
        envelope["resource"]["associated_data"],
        envelope["resource"]["original_type"]
    );
    let resource = serde_json::from_slice(&m.decrypt(&envelope["resource"])).unwrap();
    (envelope, resource)
}

// ------------------------------------------------------------------------- the harness

const APPID: &str = "wx1111111111111111";
const OPENID: &str = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o";

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

    async fn merchant(&self, spec: Value) -> Merchant {
        let (status, issued) = self.control("POST", "/_sim/pay/merchants", spec).await;
        assert_eq!(status, 200, "{issued}");
        Merchant::from_issued(issued)
    }

    fn advance(&self, secs: i64) {
        self.h.sim().advance(secs);
    }

    /// A signed call at the simulator's time.
    async fn call(&self, m: &Merchant, method: &str, url: &str, body: Option<&Value>) -> Answer {
        self.call_with(m, method, url, body, &[]).await
    }

    async fn call_with(
        &self,
        m: &Merchant,
        method: &str,
        url: &str,
        body: Option<&Value>,
        extra: &[(&str, &str)],
    ) -> Answer {
        let text = body.map(Value::to_string).unwrap_or_default();
        let auth = m.authorization(
            method,
            url,
            &text,
            self.h.sim().now(),
            "593BEC0C930BF1AFEB40B4A08C8FB242",
        );
        self.raw(method, url, &text, &auth, extra).await
    }

    async fn raw(
        &self,
        method: &str,
        url: &str,
        body: &str,
        auth: &str,
        extra: &[(&str, &str)],
    ) -> Answer {
        let mut req = self
            .http
            .request(method.parse().unwrap(), format!("{}{url}", self.h.url()))
            .header("Accept", "application/json")
            .header("User-Agent", "weapp-sim tests")
            .header("Authorization", auth);
        if !body.is_empty() {
            req = req
                .header("Content-Type", "application/json")
                .body(body.to_owned());
        }
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        let r = req.send().await.unwrap();
        Answer {
            status: r.status().as_u16(),
            headers: r.headers().clone(),
            body: r.text().await.unwrap(),
        }
    }

    async fn prepay(&self, m: &Merchant, body: &Value) -> Answer {
        self.call(m, "POST", "/v3/pay/transactions/jsapi", Some(body))
            .await
    }

    async fn query(&self, m: &Merchant, out_trade_no: &str) -> Answer {
        self.call(
            m,
            "GET",
            &format!(
                "/v3/pay/transactions/out-trade-no/{out_trade_no}?mchid={}",
                m.mchid
            ),
            None,
        )
        .await
    }

    /// Places an order of `total` fen and pays it; returns the prepay_id.
    async fn paid_order(
        &self,
        m: &Merchant,
        out_trade_no: &str,
        total: i64,
        notify_url: &str,
    ) -> String {
        let a = self
            .prepay(m, &order(m, out_trade_no, total, notify_url))
            .await;
        assert_eq!(a.status, 200, "{}", a.body);
        let prepay_id = a.json()["prepay_id"].as_str().unwrap().to_owned();
        let (_, r) = self
            .control(
                "POST",
                "/_sim/pay/request_payment",
                m.pay_params(APPID, OPENID, &prepay_id, "pay"),
            )
            .await;
        assert_eq!(r["errMsg"], "requestPayment:ok");
        prepay_id
    }

    async fn notifications(&self, m: &Merchant) -> Vec<Value> {
        let (status, v) = self
            .control(
                "GET",
                &format!("/_sim/pay/merchants/{}/notifications", m.mchid),
                Value::Null,
            )
            .await;
        assert_eq!(status, 200);
        v["notifications"].as_array().unwrap().clone()
    }

    async fn refund(
        &self,
        m: &Merchant,
        out_trade_no: &str,
        out_refund_no: &str,
        refund: i64,
        total: i64,
        notify_url: Option<&str>,
    ) -> Answer {
        let mut body = json!({"out_trade_no": out_trade_no, "out_refund_no": out_refund_no,
                              "amount": {"refund": refund, "total": total, "currency": "CNY"}});
        if let Some(u) = notify_url {
            body["notify_url"] = json!(u);
        }
        self.call(m, "POST", "/v3/refund/domestic/refunds", Some(&body))
            .await
    }
}

fn order(m: &Merchant, out_trade_no: &str, total: i64, notify_url: &str) -> Value {
    json!({"appid": APPID, "mchid": m.mchid, "description": "Image形象店-深圳腾大-QQ公仔",
           "out_trade_no": out_trade_no, "notify_url": notify_url, "attach": "自定义数据",
           "amount": {"total": total, "currency": "CNY"}, "payer": {"openid": OPENID}})
}

// ------------------------------------------------------------------------- signatures

#[tokio::test]
async fn merchant_signatures_are_checked_like_production() {
    let t = T::new().await;
    let m = t.merchant(json!({})).await;
    let other = t.merchant(json!({})).await;
    let body = order(&m, "sign_check_1", 100, "https://example.com/notify").to_string();
    let url = "/v3/pay/transactions/jsapi";
    let now = t.h.sim().now();
    let nonce = "cg55d1ns.c25";

    let good = t
        .raw(
            "POST",
            url,
            &body,
            &m.authorization("POST", url, &body, now, nonce),
            &[],
        )
        .await;
    assert_eq!(good.status, 200, "{}", good.body);

    // Signed with another merchant's key under this merchant's serial.
    let forged = Merchant {
        serial: m.serial.clone(),
        mchid: m.mchid.clone(),
        ..Merchant::from_issued(other.issued.clone())
    };
    let wrong_key = t
        .raw(
            "POST",
            url,
            &body,
            &forged.authorization("POST", url, &body, now, nonce),
            &[],
        )
        .await;
    assert_eq!(wrong_key.status, 401);
    let e = wrong_key.json();
    assert_eq!(e["code"], "SIGN_ERROR");
    assert_eq!(e["detail"]["field"], "signature");
    assert_eq!(e["detail"]["location"], "authorization");
    assert_eq!(e["detail"]["detail"]["issue"], "sign not match");
    let info = &e["detail"]["sign_information"];
    assert_eq!(info["method"], "POST");
    assert_eq!(info["url"], url);
    let full = format!("POST\n{url}\n{now}\n{nonce}\n{body}\n");
    assert_eq!(info["sign_message_length"], full.len());
    assert_eq!(
        info["truncated_sign_message"],
        format!("POST\n{url}\n{now}\n{nonce}\n{{\"amount\n")
    );
    assert!(
        wrong_key.header("wechatpay-signature").is_none(),
        "errors are not signed"
    );
    assert!(wrong_key.header("request-id").is_some());

    // The right key under another serial.
    let wrong_serial = Merchant {
        serial: "1DDE55AD98ED71D6EDD4A4A16996DE7B47773A8C".into(),
        ..Merchant::from_issued(m.issued.clone())
    };
    let a = t
        .raw(
            "POST",
            url,
            &body,
            &wrong_serial.authorization("POST", url, &body, now, nonce),
            &[],
        )
        .await;
    assert_eq!(
        (a.status, a.json()["code"].clone()),
        (401, json!("SIGN_ERROR")),
        "{}",
        a.body
    );

    // Stale and future timestamps (±5 minutes of the simulator's clock).
    for ts in [now - 301, now + 301] {
        let a = t
            .raw(
                "POST",
                url,
                &body,
                &m.authorization("POST", url, &body, ts, nonce),
                &[],
            )
            .await;
        assert_eq!(
            (a.status, a.json()["code"].clone()),
            (401, json!("SIGN_ERROR")),
            "{}",
            a.body
        );
    }
    let edge = t
        .raw(
            "POST",
            url,
            &body,
            &m.authorization("POST", url, &body, now - 299, nonce),
            &[],
        )
        .await;
    assert_eq!(edge.status, 200, "within the window: {}", edge.body);

    // The body changed after signing (one fen more).
    let tampered = body.replace("\"total\":100", "\"total\":101");
    assert_ne!(tampered, body);
    let a = t
        .raw(
            "POST",
            url,
            &tampered,
            &m.authorization("POST", url, &body, now, nonce),
            &[],
        )
        .await;
    assert_eq!(
        (a.status, a.json()["code"].clone()),
        (401, json!("SIGN_ERROR"))
    );

    // A GET signs the query too, and an empty body ("\n\n").
    let q = format!(
        "/v3/pay/transactions/out-trade-no/sign_check_1?mchid={}",
        m.mchid
    );
    let a = t
        .raw(
            "GET",
            &q,
            "",
            &m.authorization("GET", &q, "", now, nonce),
            &[],
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let bare = q.split('?').next().unwrap();
    let a = t
        .raw(
            "GET",
            &q,
            "",
            &m.authorization("GET", bare, "", now, nonce),
            &[],
        )
        .await;
    assert_eq!(a.status, 401, "the query is part of the signed URL");

    // No or a malformed Authorization.
    let a = t.raw("GET", &q, "", "Bearer x", &[]).await;
    assert_eq!(
        (a.status, a.json()["code"].clone()),
        (401, json!("SIGN_ERROR"))
    );
    let a = t
        .raw("GET", &q, "", r#"WECHATPAY2-SHA256-RSA2048 mchid="1""#, &[])
        .await;
    assert_eq!(a.status, 401);
    assert!(a.json()["message"]
        .as_str()
        .unwrap()
        .contains("Authorization"));
}

#[tokio::test]
async fn every_success_is_signed_with_the_issued_public_key() {
    let t = T::new().await;
    let m = t.merchant(json!({"appids": [APPID]})).await;
    assert_eq!(m.issued["verification"], "public_key");
    assert!(m
        .public_key_id
        .as_deref()
        .unwrap()
        .starts_with("PUB_KEY_ID_01"));
    assert_eq!(
        m.public_key_id.as_deref().unwrap().len(),
        "PUB_KEY_ID_".len() + 34
    );
    assert!(m.issued["platform_certificates"]
        .as_array()
        .unwrap()
        .is_empty());
    assert!(m.issued["merchant_private_key"]
        .as_str()
        .unwrap()
        .starts_with("-----BEGIN PRIVATE KEY-----"));
    assert_eq!(m.apiv3.len(), 32);

    let a = t
        .prepay(&m, &order(&m, "signed_1", 1, "https://example.com/n"))
        .await;
    assert_eq!(a.status, 200);
    assert!(a.signed_for(&m), "prepay answer signed");
    assert_eq!(a.header("wechatpay-serial"), m.public_key_id.as_deref());
    let prepay_id = a.json()["prepay_id"].as_str().unwrap().to_owned();
    assert!(
        prepay_id.starts_with("wx") && prepay_id.len() == 36,
        "{prepay_id}"
    );

    let q = t.query(&m, "signed_1").await;
    assert!(q.signed_for(&m));
    let v = q.json();
    assert_eq!(
        (v["trade_state"].as_str(), v["trade_state_desc"].as_str()),
        (Some("NOTPAY"), Some("订单未支付"))
    );
    assert_eq!(v["amount"]["total"], 1);

    let close = t
        .call(
            &m,
            "POST",
            "/v3/pay/transactions/out-trade-no/signed_1/close",
            Some(&json!({"mchid": m.mchid})),
        )
        .await;
    assert_eq!(close.status, 204);
    assert_eq!(close.body, "");
    assert!(close.signed_for(&m), "204 is signed over an empty body");

    // A tampered answer does not verify (the check can fail).
    let mut bad = t.query(&m, "signed_1").await;
    bad.body = bad.body.replace("CLOSED", "SUCCESS");
    assert!(!bad.signed_for(&m));

    let missing = t.query(&m, "no_such_order").await;
    assert_eq!(
        (missing.status, missing.json()["code"].clone()),
        (404, json!("ORDER_NOT_EXIST"))
    );
    assert!(missing.header("wechatpay-signature").is_none());

    // Another appid than the bound one.
    let mut other = order(&m, "signed_2", 1, "https://example.com/n");
    other["appid"] = json!("wx2222222222222222");
    let a = t.prepay(&m, &other).await;
    assert_eq!(
        (a.status, a.json()["code"].clone()),
        (400, json!("APPID_MCHID_NOT_MATCH"))
    );
    // The mchid in the body must be the signer's.
    let mut other = order(&m, "signed_3", 1, "https://example.com/n");
    other["mchid"] = json!("1900000000");
    assert_eq!(t.prepay(&m, &other).await.json()["code"], "PARAM_ERROR");
    // Not JSON, missing fields, float amounts.
    let a = t
        .raw(
            "POST",
            "/v3/pay/transactions/jsapi",
            "{",
            &m.authorization(
                "POST",
                "/v3/pay/transactions/jsapi",
                "{",
                t.h.sim().now(),
                "n",
            ),
            &[],
        )
        .await;
    assert_eq!(
        (a.status, a.json()["code"].clone()),
        (400, json!("PARAM_ERROR"))
    );
    let mut float = order(&m, "signed_4", 1, "https://example.com/n");
    float["amount"]["total"] = json!(0.01);
    let a = t.prepay(&m, &float).await;
    assert_eq!(
        (a.status, a.json()["detail"]["field"].clone()),
        (400, json!("/amount/total"))
    );
}

// ------------------------------------------------------------------------- payment and notifications

#[tokio::test]
async fn a_payment_is_notified_signed_and_encrypted() {
    let t = T::new().await;
    let m = t.merchant(json!({})).await;
    let r = receiver().await;
    let a = t.prepay(&m, &order(&m, "pay_0001", 888, &r.url)).await;
    let prepay_id = a.json()["prepay_id"].as_str().expect(&a.body).to_owned();

    // A wrong paySign, another user, a cancel and a failure first.
    let mut wrong = m.pay_params(APPID, OPENID, &prepay_id, "pay");
    wrong["paySign"] = json!(B64.encode([7u8; 256]));
    let (_, e) = t.control("POST", "/_sim/pay/request_payment", wrong).await;
    assert_eq!(e["errMsg"], "requestPayment:fail 支付验证签名失败");
    let (_, e) = t
        .control(
            "POST",
            "/_sim/pay/request_payment",
            m.pay_params(APPID, "o_someone_else", &prepay_id, "pay"),
        )
        .await;
    assert!(
        e["errMsg"]
            .as_str()
            .unwrap()
            .starts_with("requestPayment:fail"),
        "{e}"
    );
    let (_, e) = t
        .control(
            "POST",
            "/_sim/pay/request_payment",
            m.pay_params(APPID, OPENID, &prepay_id, "cancel"),
        )
        .await;
    assert_eq!(e["errMsg"], "requestPayment:fail cancel");
    assert_eq!(
        t.query(&m, "pay_0001").await.json()["trade_state"],
        "NOTPAY"
    );
    let (_, e) = t
        .control(
            "POST",
            "/_sim/pay/request_payment",
            m.pay_params(APPID, OPENID, &prepay_id, "fail"),
        )
        .await;
    assert!(e["errMsg"]
        .as_str()
        .unwrap()
        .starts_with("requestPayment:fail "));
    assert_eq!(
        t.query(&m, "pay_0001").await.json()["trade_state"],
        "PAYERROR"
    );
    r.still(0).await;

    let (_, ok) = t
        .control(
            "POST",
            "/_sim/pay/request_payment",
            m.pay_params(APPID, OPENID, &prepay_id, "pay"),
        )
        .await;
    assert_eq!(ok["errMsg"], "requestPayment:ok");
    r.wait_for(1).await;
    let (headers, body) = r.get(0);
    assert_eq!(headers.get("user-agent").unwrap(), "Mozilla/4.0");
    assert_eq!(
        headers.get("wechatpay-serial").unwrap().to_str().unwrap(),
        m.public_key_id.as_deref().unwrap()
    );
    assert_eq!(headers.get("wechatpay-nonce").unwrap().len(), 32);
    let (envelope, tx) = open_notification(&m, &headers, &body);
    assert_eq!(envelope["event_type"], "TRANSACTION.SUCCESS");
    assert_eq!(envelope["summary"], "支付成功");
    assert_eq!(envelope["resource"]["original_type"], "transaction");
    assert_eq!(envelope["id"].as_str().unwrap().len(), 36, "UUID-like ids");
    assert_eq!(tx["trade_state"], "SUCCESS");
    assert_eq!(tx["out_trade_no"], "pay_0001");
    assert_eq!(tx["mchid"], m.mchid.as_str());
    assert_eq!(tx["appid"], APPID);
    assert_eq!(tx["amount"]["total"], 888);
    assert_eq!(tx["amount"]["payer_total"], 888);
    assert_eq!(tx["payer"]["openid"], OPENID);
    assert_eq!(tx["attach"], "自定义数据");
    assert_eq!(tx["trade_type"], "JSAPI");
    let transaction_id = tx["transaction_id"].as_str().unwrap().to_owned();
    assert_eq!(transaction_id.len(), 28);
    assert!(tx["success_time"].as_str().unwrap().ends_with("+08:00"));

    // The query agrees, by either number.
    let q = t.query(&m, "pay_0001").await.json();
    assert_eq!(
        (q["trade_state"].as_str(), q["transaction_id"].as_str()),
        (Some("SUCCESS"), Some(transaction_id.as_str()))
    );
    let by_id = t
        .call(
            &m,
            "GET",
            &format!("/v3/pay/transactions/id/{transaction_id}?mchid={}", m.mchid),
            None,
        )
        .await;
    assert!(by_id.signed_for(&m));
    assert_eq!(by_id.json()["out_trade_no"], "pay_0001");
    // Paying again, closing a paid order.
    let (_, again) = t
        .control(
            "POST",
            "/_sim/pay/request_payment",
            m.pay_params(APPID, OPENID, &prepay_id, "pay"),
        )
        .await;
    assert!(again["errMsg"]
        .as_str()
        .unwrap()
        .starts_with("requestPayment:fail"));
    let close = t
        .call(
            &m,
            "POST",
            "/v3/pay/transactions/out-trade-no/pay_0001/close",
            Some(&json!({"mchid": m.mchid})),
        )
        .await;
    assert_eq!(
        (close.status, close.json()["code"].clone()),
        (400, json!("ORDERPAID"))
    );
    // One notification, acknowledged by the 204: none after it.
    t.advance(3600);
    r.still(1).await;
    let n = t.notifications(&m).await;
    assert_eq!(n.len(), 1);
    assert_eq!(n[0]["delivered"], true);
    assert_eq!(n[0]["attempts"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn notifications_follow_wechats_retry_schedule_on_the_virtual_clock() {
    let t = T::new().await;
    let m = t.merchant(json!({})).await;
    let r = receiver().await;
    r.script.lock().unwrap().extend([500, 500, 500, 204]);
    let start = t.h.sim().now_ms();
    t.paid_order(&m, "retry_1", 100, &r.url).await;
    r.wait_for(1).await;
    t.advance(14);
    r.still(1).await;
    t.advance(1);
    r.wait_for(2).await;
    t.advance(14);
    r.still(2).await;
    t.advance(1);
    r.wait_for(3).await;
    t.advance(29);
    r.still(3).await;
    t.advance(1);
    r.wait_for(4).await;
    // Delivered: nothing more, even a day later.
    t.advance(86_400);
    r.still(4).await;
    let ids: Vec<String> = (0..4)
        .map(|i| {
            let (h, b) = r.get(i);
            open_notification(&m, &h, &b).0["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "retries carry the same id"
    );
    let timestamps: Vec<i64> = (0..4)
        .map(|i| {
            r.get(i).0["wechatpay-timestamp"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert_eq!(
        timestamps,
        vec![
            start / 1000,
            start / 1000 + 15,
            start / 1000 + 30,
            start / 1000 + 60
        ],
        "each attempt signed anew"
    );
    let n = &t.notifications(&m).await[0];
    let at: Vec<i64> = n["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["at"].as_i64().unwrap())
        .collect();
    let gaps: Vec<i64> = at.windows(2).map(|w| (w[1] - w[0]) / 1000).collect();
    assert_eq!(gaps, vec![15, 15, 30]);
    let statuses: Vec<Value> = n["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status"].clone())
        .collect();
    assert_eq!(
        statuses,
        vec![json!(500), json!(500), json!(500), json!(204)]
    );
    assert_eq!(n["delivered"], true);

    // A receiver that never says yes: 16 attempts over 24 h 4 m, then WeChat gives up.
    let dead = receiver().await;
    dead.script
        .lock()
        .unwrap()
        .extend(std::iter::repeat_n(500, 100));
    t.paid_order(&m, "retry_2", 100, &dead.url).await;
    dead.wait_for(1).await;
    t.advance(86_640 - 1);
    dead.wait_for(15).await;
    dead.still(15).await;
    t.advance(1);
    dead.wait_for(16).await;
    t.advance(7 * 86_400);
    dead.still(16).await;
    let n = t
        .notifications(&m)
        .await
        .into_iter()
        .find(|n| n["business_no"] == "retry_2")
        .unwrap();
    let due: Vec<i64> = n["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["due"].as_i64().unwrap())
        .collect();
    let gaps: Vec<i64> = due.windows(2).map(|w| (w[1] - w[0]) / 1000).collect();
    assert_eq!(
        gaps,
        vec![
            15, 15, 30, 180, 600, 1200, 1800, 1800, 1800, 3600, 10_800, 10_800, 10_800, 21_600,
            21_600
        ]
    );
    assert_eq!(n["gave_up"], true);
    assert_eq!(n["delivered"], false);
}

#[tokio::test]
async fn lost_duplicated_and_probe_notifications_on_demand() {
    let t = T::new().await;
    let m = t.merchant(json!({})).await;
    let r = receiver().await;
    let (s, _) = t
        .control(
            "PUT",
            &format!("/_sim/pay/merchants/{}/notifications", m.mchid),
            json!({"deliver": false}),
        )
        .await;
    assert_eq!(s, 200);
    t.paid_order(&m, "lost_1", 100, &r.url).await;
    t.advance(86_400);
    r.still(0).await;
    assert_eq!(
        t.query(&m, "lost_1").await.json()["trade_state"],
        "SUCCESS",
        "the query knows"
    );
    let n = t.notifications(&m).await;
    assert_eq!(
        (
            n[0]["lost"].clone(),
            n[0]["attempts"].as_array().unwrap().len()
        ),
        (json!(true), 0)
    );

    t.control(
        "PUT",
        &format!("/_sim/pay/merchants/{}/notifications", m.mchid),
        json!({"deliver": true}),
    )
    .await;
    let (s, dup) = t
        .control(
            "POST",
            &format!("/_sim/pay/merchants/{}/orders/lost_1/notify", m.mchid),
            Value::Null,
        )
        .await;
    assert_eq!(s, 200, "{dup}");
    r.wait_for(1).await;
    let (h, b) = r.get(0);
    let (env, tx) = open_notification(&m, &h, &b);
    assert_eq!(env["id"], n[0]["id"], "a duplicate carries the original id");
    assert_eq!(tx["out_trade_no"], "lost_1");
    t.control(
        "POST",
        &format!("/_sim/pay/merchants/{}/orders/lost_1/notify", m.mchid),
        Value::Null,
    )
    .await;
    r.wait_for(2).await;
    assert_eq!(r.get(1).1, b, "the same body again");

    // A probe: the body is real, the signature is WeChat's test pattern and must not verify.
    r.script.lock().unwrap().push_back(401);
    let (s, _) = t
        .control(
            "POST",
            &format!("/_sim/pay/merchants/{}/orders/lost_1/probe", m.mchid),
            Value::Null,
        )
        .await;
    assert_eq!(s, 200);
    r.wait_for(3).await;
    let (h, b) = r.get(2);
    let sig = h["wechatpay-signature"].to_str().unwrap();
    assert!(sig.starts_with("WECHATPAY/SIGNTEST/"), "{sig}");
    let hv = |n: &str| h[n].to_str().unwrap().to_owned();
    assert!(!m.verifies(
        &hv("wechatpay-serial"),
        &hv("wechatpay-timestamp"),
        &hv("wechatpay-nonce"),
        sig,
        &b
    ));
    t.advance(3600);
    r.still(3).await;
    let probe = t
        .notifications(&m)
        .await
        .into_iter()
        .find(|n| n["probe"] == true)
        .unwrap();
    assert_eq!(
        probe["attempts"].as_array().unwrap().len(),
        1,
        "a probe is tried once"
    );

    let (s, _) = t
        .control(
            "POST",
            &format!("/_sim/pay/merchants/{}/orders/nothing/notify", m.mchid),
            Value::Null,
        )
        .await;
    assert_eq!(s, 404);
}

// ------------------------------------------------------------------------- order rules

#[tokio::test]
async fn prepay_repeats_conflicts_expiry_and_close() {
    let t = T::new().await;
    let m = t.merchant(json!({})).await;
    let body = order(&m, "order_rules_1", 100, "https://example.com/n");
    let first = t.prepay(&m, &body).await.json()["prepay_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let second = t.prepay(&m, &body).await.json()["prepay_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(first, second, "the same parameters: the same prepay_id");
    let mut changed = body.clone();
    changed["amount"]["total"] = json!(101);
    let a = t.prepay(&m, &changed).await;
    assert_eq!(
        (a.status, a.json()["code"].clone()),
        (403, json!("OUT_TRADE_NO_USED"))
    );
    // Another merchant may use the same number.
    let n = t.merchant(json!({})).await;
    assert_eq!(
        t.prepay(&n, &order(&n, "order_rules_1", 5, "https://example.com/n"))
            .await
            .status,
        200
    );

    // prepay_id lives 2 hours; the order lives on (7 days by default) and gets a new one.
    t.advance(2 * 3600);
    let (_, e) = t
        .control(
            "POST",
            "/_sim/pay/request_payment",
            m.pay_params(APPID, OPENID, &first, "pay"),
        )
        .await;
    assert!(
        e["errMsg"]
            .as_str()
            .unwrap()
            .starts_with("requestPayment:fail"),
        "{e}"
    );
    let third = t.prepay(&m, &body).await.json()["prepay_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(third, first);
    let (_, ok) = t
        .control(
            "POST",
            "/_sim/pay/request_payment",
            m.pay_params(APPID, OPENID, &third, "pay"),
        )
        .await;
    assert_eq!(ok["errMsg"], "requestPayment:ok");
    let a = t.prepay(&m, &body).await;
    assert_eq!(
        (a.status, a.json()["code"].clone()),
        (400, json!("ORDERPAID"))
    );

    // time_expire: at least a minute ahead, RFC 3339, then the order closes.
    let rfc = |secs_ahead: i64| {
        let ms = (t.h.sim().now() + secs_ahead + 8 * 3600) * 1000;
        let d = ms / 86_400_000;
        let s = ms / 1000 % 86_400;
        // Civil date from days (the test's own arithmetic).
        let z = d + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        format!(
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}+08:00",
            s / 3600,
            s % 3600 / 60,
            s % 60
        )
    };
    let mut short = order(&m, "order_rules_2", 100, "https://example.com/n");
    short["time_expire"] = json!(rfc(30));
    let a = t.prepay(&m, &short).await;
    assert_eq!(
        (a.status, a.json()["detail"]["field"].clone()),
        (400, json!("/time_expire"))
    );
    short["time_expire"] = json!("tomorrow");
    assert_eq!(t.prepay(&m, &short).await.status, 400);
    short["time_expire"] = json!(rfc(600));
    let pid = t.prepay(&m, &short).await.json()["prepay_id"]
        .as_str()
        .unwrap()
        .to_owned();
    t.advance(599);
    assert_eq!(
        t.query(&m, "order_rules_2").await.json()["trade_state"],
        "NOTPAY"
    );
    t.advance(1);
    assert_eq!(
        t.query(&m, "order_rules_2").await.json()["trade_state"],
        "CLOSED"
    );
    let a = t.prepay(&m, &short).await;
    assert_eq!(
        (a.status, a.json()["code"].clone()),
        (400, json!("ORDER_CLOSED"))
    );
    let (_, e) = t
        .control(
            "POST",
            "/_sim/pay/request_payment",
            m.pay_params(APPID, OPENID, &pid, "pay"),
        )
        .await;
    assert!(
        e["errMsg"]
            .as_str()
            .unwrap()
            .starts_with("requestPayment:fail"),
        "{e}"
    );

    // Close: 204 for an open, a closed and an unknown order; the closed one cannot be paid.
    let pid = t
        .prepay(
            &m,
            &order(&m, "order_rules_3", 100, "https://example.com/n"),
        )
        .await
        .json()["prepay_id"]
        .as_str()
        .unwrap()
        .to_owned();
    for no in ["order_rules_3", "order_rules_3", "never_placed"] {
        let a = t
            .call(
                &m,
                "POST",
                &format!("/v3/pay/transactions/out-trade-no/{no}/close"),
                Some(&json!({"mchid": m.mchid})),
            )
            .await;
        assert_eq!(a.status, 204, "{no}: {}", a.body);
    }
    assert_eq!(
        t.query(&m, "order_rules_3").await.json()["trade_state"],
        "CLOSED"
    );
    let (_, e) = t
        .control(
            "POST",
            "/_sim/pay/request_payment",
            m.pay_params(APPID, OPENID, &pid, "pay"),
        )
        .await;
    assert_eq!(e["errMsg"], "requestPayment:fail 订单已关闭");
    let a = t
        .call(
            &m,
            "POST",
            "/v3/pay/transactions/out-trade-no/order_rules_3/close",
            Some(&json!({})),
        )
        .await;
    assert_eq!(
        (a.status, a.json()["code"].clone()),
        (400, json!("PARAM_ERROR")),
        "close needs the mchid"
    );
}

// ------------------------------------------------------------------------- refunds

#[tokio::test]
async fn refunds_are_processed_limited_and_idempotent() {
    let t = T::new().await;
    let m = t.merchant(json!({})).await;
    let r = receiver().await;
    t.paid_order(&m, "refund_1", 100, "https://example.com/n")
        .await;

    let a = t
        .refund(&m, "refund_1", "rf_1", 30, 100, Some(&r.url))
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.signed_for(&m));
    let rf = a.json();
    assert_eq!(
        (rf["status"].as_str(), rf["amount"]["refund"].as_i64()),
        (Some("PROCESSING"), Some(30))
    );
    assert_eq!(
        t.query(&m, "refund_1").await.json()["trade_state"],
        "REFUND"
    );
    // The same out_refund_no with the same parameters: the same refund, not a second one.
    let again = t
        .refund(&m, "refund_1", "rf_1", 30, 100, Some(&r.url))
        .await
        .json();
    assert_eq!(again["refund_id"], rf["refund_id"]);
    let a = t
        .refund(&m, "refund_1", "rf_1", 31, 100, Some(&r.url))
        .await;
    assert_eq!(
        (a.status, a.json()["code"].clone()),
        (400, json!("INVALID_REQUEST"))
    );
    // Never above what is left (70).
    let a = t.refund(&m, "refund_1", "rf_2", 71, 100, None).await;
    assert_eq!(
        (a.status, a.json()["code"].clone()),
        (400, json!("INVALID_REQUEST"))
    );
    assert_eq!(
        t.refund(&m, "refund_1", "rf_2", 70, 100, None).await.status,
        200
    );
    let a = t.refund(&m, "refund_1", "rf_3", 1, 100, None).await;
    assert_eq!(a.status, 400, "nothing left: {}", a.body);
    // The total must be the order's; the order must exist and be paid.
    assert_eq!(
        t.refund(&m, "refund_1", "rf_4", 1, 99, None).await.json()["code"],
        "PARAM_ERROR"
    );
    let a = t.refund(&m, "no_such_order", "rf_5", 1, 100, None).await;
    assert_eq!(
        (a.status, a.json()["code"].clone()),
        (404, json!("RESOURCE_NOT_EXISTS"))
    );
    t.prepay(
        &m,
        &order(&m, "refund_unpaid", 100, "https://example.com/n"),
    )
    .await;
    assert_eq!(
        t.refund(&m, "refund_unpaid", "rf_6", 1, 100, None)
            .await
            .status,
        400
    );

    // PROCESSING for 60 s of the simulator's clock, then SUCCESS and REFUND.SUCCESS.
    let get = |no: &'static str| {
        let t = &t;
        let m = &m;
        async move {
            t.call(m, "GET", &format!("/v3/refund/domestic/refunds/{no}"), None)
                .await
        }
    };
    t.advance(59);
    assert_eq!(get("rf_1").await.json()["status"], "PROCESSING");
    r.still(0).await;
    t.advance(1);
    let done = get("rf_1").await;
    assert!(done.signed_for(&m));
    assert_eq!(done.json()["status"], "SUCCESS");
    assert!(done.json()["success_time"]
        .as_str()
        .unwrap()
        .ends_with("+08:00"));
    r.wait_for(1).await;
    let (h, b) = r.get(0);
    let (env, res) = open_notification(&m, &h, &b);
    assert_eq!(
        (
            env["event_type"].as_str(),
            env["resource"]["original_type"].as_str()
        ),
        (Some("REFUND.SUCCESS"), Some("refund"))
    );
    assert_eq!(res["refund_status"], "SUCCESS");
    assert_eq!(res["out_refund_no"], "rf_1");
    assert_eq!(res["amount"]["refund"], 30);
    assert_eq!(res["refund_id"], rf["refund_id"]);
    assert_eq!(get("nothing").await.status, 404);

    // ABNORMAL and CLOSED on demand; a closed refund gives its amount back.
    t.paid_order(&m, "refund_2", 100, "https://example.com/n")
        .await;
    t.refund(&m, "refund_2", "rf_abn", 40, 100, Some(&r.url))
        .await;
    t.refund(&m, "refund_2", "rf_closed", 60, 100, Some(&r.url))
        .await;
    let (s, v) = t
        .control(
            "POST",
            "/_sim/pay/refunds/rf_abn",
            json!({"status": "ABNORMAL"}),
        )
        .await;
    assert_eq!((s, v["status"].clone()), (200, json!("ABNORMAL")));
    let (s, _) = t
        .control(
            "POST",
            "/_sim/pay/refunds/rf_closed",
            json!({"status": "CLOSED"}),
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = t
        .control(
            "POST",
            "/_sim/pay/refunds/rf_closed",
            json!({"status": "SUCCESS"}),
        )
        .await;
    assert_eq!(s, 409, "it already ended");
    r.wait_for(3).await;
    let events: Vec<String> = (1..3)
        .map(|i| {
            let (h, b) = r.get(i);
            open_notification(&m, &h, &b).0["event_type"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(
        events.contains(&"REFUND.ABNORMAL".to_owned())
            && events.contains(&"REFUND.CLOSED".to_owned()),
        "{events:?}"
    );
    assert_eq!(get("rf_closed").await.json()["status"], "CLOSED");
    t.advance(120);
    assert_eq!(
        get("rf_abn").await.json()["status"],
        "ABNORMAL",
        "ended refunds stay ended"
    );
    assert_eq!(
        t.refund(&m, "refund_2", "rf_after_close", 60, 100, None)
            .await
            .status,
        200,
        "60 came back"
    );

    // NOT_ENOUGH: the merchant's balance cannot cover the refund.
    t.paid_order(&m, "refund_3", 100, "https://example.com/n")
        .await;
    t.control(
        "PUT",
        &format!("/_sim/pay/merchants/{}/balance", m.mchid),
        json!({"balance": 10}),
    )
    .await;
    let a = t.refund(&m, "refund_3", "rf_poor", 11, 100, None).await;
    assert_eq!(
        (a.status, a.json()["code"].clone()),
        (403, json!("NOT_ENOUGH"))
    );
    assert_eq!(
        t.refund(&m, "refund_3", "rf_poor", 10, 100, None)
            .await
            .status,
        200
    );
    t.control(
        "PUT",
        &format!("/_sim/pay/merchants/{}/balance", m.mchid),
        json!({"balance": null}),
    )
    .await;

    // At most 50 refunds per order.
    t.paid_order(&m, "refund_4", 100, "https://example.com/n")
        .await;
    for i in 0..50 {
        let a = t
            .refund(&m, "refund_4", &format!("rf4_{i}"), 1, 100, None)
            .await;
        assert_eq!(a.status, 200, "refund {i}: {}", a.body);
    }
    let a = t.refund(&m, "refund_4", "rf4_50", 1, 100, None).await;
    assert_eq!(
        (a.status, a.json()["code"].clone()),
        (400, json!("INVALID_REQUEST")),
        "the 51st"
    );
    let (_, list) = t
        .control(
            "GET",
            &format!("/_sim/pay/merchants/{}/refunds", m.mchid),
            Value::Null,
        )
        .await;
    assert!(list["refunds"].as_array().unwrap().len() >= 54);
}

// ------------------------------------------------------------------------- bills

#[tokio::test]
async fn bills_are_the_days_orders_in_wechats_csv_with_their_hash() {
    let t = T::new().await;
    let m = t.merchant(json!({})).await;
    t.paid_order(&m, "bill_1", 123, "https://example.com/n")
        .await;
    t.paid_order(&m, "bill_2", 1000, "https://example.com/n")
        .await;
    t.refund(&m, "bill_2", "bill_rf", 250, 1000, None).await;
    t.control(
        "POST",
        "/_sim/pay/refunds/bill_rf",
        json!({"status": "SUCCESS"}),
    )
    .await;
    let today = {
        let q = t.query(&m, "bill_1").await.json();
        q["success_time"].as_str().unwrap()[..10].to_owned()
    };
    let url = format!("/v3/bill/tradebill?bill_date={today}&bill_type=ALL");
    let a = t.call(&m, "GET", &url, None).await;
    assert_eq!(
        (a.status, a.json()["code"].clone()),
        (400, json!("NO_STATEMENT_EXIST")),
        "not before the day is over"
    );
    // To 10:05 Beijing time the next day.
    let now = t.h.sim().now();
    let into_day = (now + 8 * 3600).rem_euclid(86_400);
    t.advance(86_400 - into_day + 10 * 3600 + 300);
    let a = t.call(&m, "GET", &url, None).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.signed_for(&m));
    let v = a.json();
    assert_eq!(v["hash_type"], "SHA1");
    let download = v["download_url"].as_str().unwrap();
    let path = download
        .strip_prefix(t.h.url())
        .expect("the download URL is on the simulator");
    assert!(path.starts_with("/v3/billdownload/file?token="));
    let file = t.call(&m, "GET", path, None).await;
    assert_eq!(file.status, 200);
    assert!(
        file.header("wechatpay-signature").is_none(),
        "the bill file is not signed"
    );
    assert_eq!(
        hex::encode(Sha1::digest(file.body.as_bytes())),
        v["hash_value"].as_str().unwrap()
    );
    let lines: Vec<&str> = file.body.lines().collect();
    assert!(
        lines[0].starts_with("交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号")
    );
    assert_eq!(
        lines.len(),
        1 + 3 + 2,
        "header, two payments and a refund, summary: {lines:?}"
    );
    assert!(lines[1..4].iter().all(|l| l.starts_with('`')));
    assert!(lines[1..4]
        .iter()
        .any(|l| l.contains("`bill_1,") && l.contains("`1.23,")));
    assert!(lines[1..4]
        .iter()
        .any(|l| l.contains("`REFUND,") && l.contains("`bill_rf,") && l.contains("`2.50,")));
    assert!(lines[4].starts_with("总交易单数"));
    assert!(lines[5].starts_with("`3,`11.23,`2.50,"), "{}", lines[5]);
    // Unsigned download requests are refused like any other.
    let a = t.raw("GET", path, "", "", &[]).await;
    assert_eq!(a.status, 401);

    // Only the refunds; GZIP; the fund flow.
    let a = t
        .call(
            &m,
            "GET",
            &format!("/v3/bill/tradebill?bill_date={today}&bill_type=REFUND&tar_type=GZIP"),
            None,
        )
        .await;
    let v = a.json();
    let path = v["download_url"]
        .as_str()
        .unwrap()
        .strip_prefix(t.h.url())
        .unwrap()
        .to_owned();
    let auth = m.authorization("GET", &path, "", t.h.sim().now(), "n1");
    let gz = t
        .http
        .get(format!("{}{path}", t.h.url()))
        .header("Authorization", auth)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let mut csv = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz[..]), &mut csv).unwrap();
    assert_eq!(
        hex::encode(Sha1::digest(csv.as_bytes())),
        v["hash_value"].as_str().unwrap(),
        "the hash is of the plain file"
    );
    assert_eq!(csv.lines().count(), 1 + 1 + 2);
    let a = t
        .call(
            &m,
            "GET",
            &format!("/v3/bill/fundflowbill?bill_date={today}"),
            None,
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let path = a.json()["download_url"]
        .as_str()
        .unwrap()
        .strip_prefix(t.h.url())
        .unwrap()
        .to_owned();
    let flow = t.call(&m, "GET", &path, None).await.body;
    assert!(flow.starts_with("记账时间,微信支付业务单号,资金流水单号"));
    assert!(
        flow.contains("`收入,`10.00,") && flow.contains("`支出,`2.50,"),
        "{flow}"
    );
    assert!(
        flow.contains(
            "资金流水总笔数,收入笔数,收入金额,支出笔数,支出金额\r\n`3,`2,`11.23,`1,`2.50"
        ),
        "{flow}"
    );
    assert_eq!(
        t.call(&m, "GET", "/v3/bill/tradebill?bill_date=2024-13-01", None)
            .await
            .json()["code"],
        "PARAM_ERROR"
    );
    // Another merchant cannot use the token.
    let n = t.merchant(json!({})).await;
    assert_eq!(t.call(&n, "GET", &path, None).await.status, 400);
}

// ------------------------------------------------------------------------- faults and the journal

#[tokio::test]
async fn faults_apply_to_v3_paths() {
    let t = T::new().await;
    let m = t.merchant(json!({})).await;
    let body = order(&m, "fault_1", 100, "https://example.com/n");
    let (s, _) = t
        .control(
            "POST",
            "/_sim/faults",
            json!({"path": "/v3/pay/transactions/jsapi", "http_status": 429, "count": 1}),
        )
        .await;
    assert_eq!(s, 200);
    let a = t.prepay(&m, &body).await;
    assert_eq!(
        (a.status, a.json()["code"].clone()),
        (429, json!("FREQUENCY_LIMITED"))
    );
    assert!(a.header("wechatpay-signature").is_none());
    t.control(
        "POST",
        "/_sim/faults",
        json!({"path": "/v3/pay/transactions/jsapi", "http_status": 500, "count": 1}),
    )
    .await;
    assert_eq!(t.prepay(&m, &body).await.json()["code"], "SYSTEM_ERROR");
    let a = t.prepay(&m, &body).await;
    assert_eq!(a.status, 200, "the same out_trade_no after 5xx: {}", a.body);
}

#[tokio::test]
async fn the_journal_records_pay_calls_with_secrets_masked() {
    let t = T::new().await;
    let m = t.merchant(json!({})).await;
    let r = receiver().await;
    t.paid_order(&m, "journal_1", 100, &r.url).await;
    r.wait_for(1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, events) = t
        .control("GET", "/_sim/events?limit=1000", Value::Null)
        .await;
    let text = events.to_string();
    assert!(
        text.contains("/v3/pay/transactions/jsapi"),
        "pay calls are journaled"
    );
    assert!(text.contains("pay_notify"), "notifications are journaled");
    assert!(!text.contains(&m.apiv3), "the APIv3 key never shows");
    let pk = m.issued["merchant_private_key"].as_str().unwrap();
    assert!(
        !text.contains(&pk.lines().nth(1).unwrap()[..40]),
        "the private key never shows"
    );
    assert!(
        !text.contains("WECHATPAY2-SHA256-RSA2048 mchid"),
        "the Authorization header never shows"
    );
}

// ------------------------------------------------------------------------- verification modes

#[tokio::test]
async fn certificate_mode_lists_encrypted_certificates_and_refuses_public_key_ids() {
    let t = T::new().await;
    let mut m = t.merchant(json!({"verification": "certificate"})).await;
    assert!(m.public_key_id.is_none());
    let certs = m.issued["platform_certificates"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(certs.len(), 1);
    let serial = certs[0]["serial_no"].as_str().unwrap().to_owned();
    assert_eq!(serial.len(), 40);
    m.wechat_keys.clear(); // learn the certificate from the download instead.
    let a = t.call(&m, "GET", "/v3/certificates", None).await;
    assert_eq!(a.status, 200);
    let data = a.json()["data"].as_array().unwrap().clone();
    assert_eq!(data[0]["serial_no"], serial.as_str());
    assert_eq!(
        data[0]["encrypt_certificate"]["associated_data"],
        "certificate"
    );
    let pem = String::from_utf8(m.decrypt(&data[0]["encrypt_certificate"])).unwrap();
    assert_eq!(pem, certs[0]["certificate"].as_str().unwrap());
    m.learn_cert(&pem, &serial);
    assert!(a.signed_for(&m), "signed by the certificate it lists");
    assert_eq!(a.header("wechatpay-serial"), Some(serial.as_str()));

    let r = receiver().await;
    t.paid_order(&m, "cert_1", 100, &r.url).await;
    r.wait_for(1).await;
    let (h, b) = r.get(0);
    assert_eq!(h["wechatpay-serial"].to_str().unwrap(), serial);
    open_notification(&m, &h, &b);

    let a = t
        .call_with(
            &m,
            "GET",
            &format!("/v3/pay/transactions/out-trade-no/cert_1?mchid={}", m.mchid),
            None,
            &[(
                "Wechatpay-Serial",
                "PUB_KEY_ID_0117134125362025092400111793000600",
            )],
        )
        .await;
    assert_eq!(
        (a.status, a.json()["message"].clone()),
        (400, json!("平台证书序列号Wechatpay-Serial错误"))
    );

    let pk = t.merchant(json!({"verification": "public_key"})).await;
    let a = t.call(&pk, "GET", "/v3/certificates", None).await;
    assert_eq!(
        (a.status, a.json()["code"].clone()),
        (404, json!("RESOURCE_NOT_EXISTS"))
    );
    assert!(a.json()["message"]
        .as_str()
        .unwrap()
        .starts_with("无可用的平台证书"));
}

#[tokio::test]
async fn both_mode_follows_the_request_serial_and_the_migration_switch() {
    let t = T::new().await;
    let m = t.merchant(json!({"verification": "both"})).await;
    let pub_id = m.public_key_id.clone().unwrap();
    let cert = m.issued["platform_certificates"][0]["serial_no"]
        .as_str()
        .unwrap()
        .to_owned();
    let q = format!(
        "/v3/pay/transactions/out-trade-no/x_123456?mchid={}",
        m.mchid
    );
    t.prepay(&m, &order(&m, "x_123456", 1, "https://example.com/n"))
        .await;
    let a = t.call(&m, "GET", &q, None).await;
    assert_eq!(
        a.header("wechatpay-serial"),
        Some(cert.as_str()),
        "certificates by default"
    );
    assert!(a.signed_for(&m));
    let a = t
        .call_with(&m, "GET", &q, None, &[("Wechatpay-Serial", &pub_id)])
        .await;
    assert_eq!(
        a.header("wechatpay-serial"),
        Some(pub_id.as_str()),
        "the header asks for the public key"
    );
    assert!(a.signed_for(&m));

    // Notifications: the share signed with the public key, fixed for the test.
    let r = receiver().await;
    let path = format!("/_sim/pay/merchants/{}/migration", m.mchid);
    let (s, v) = t
        .control("POST", &path, json!({"notify_percent": 100}))
        .await;
    assert_eq!(
        (s, v["migration"]["notify_percent"].clone()),
        (200, json!(100.0))
    );
    t.paid_order(&m, "both_1", 1, &r.url).await;
    r.wait_for(1).await;
    assert_eq!(r.get(0).0["wechatpay-serial"].to_str().unwrap(), pub_id);
    t.control("POST", &path, json!({"notify_percent": 0})).await;
    t.paid_order(&m, "both_2", 1, &r.url).await;
    r.wait_for(2).await;
    assert_eq!(r.get(1).0["wechatpay-serial"].to_str().unwrap(), cert);
    for i in 0..2 {
        let (h, b) = r.get(i);
        open_notification(&m, &h, &b);
    }
    // The ramp without a fixed share: day 7 of the migration is 100%.
    let (_, v) = t.control("POST", &path, json!({"action": "stop"})).await;
    assert_eq!(v["verification"], "certificate");
    let (_, v) = t.control("POST", &path, json!({"action": "start"})).await;
    assert_eq!(
        (
            v["verification"].clone(),
            v["migration"]["notify_percent"].clone()
        ),
        (json!("both"), json!(0.1))
    );
    t.advance(6 * 86_400);
    let (_, list) = t.control("GET", "/_sim/pay/merchants", Value::Null).await;
    assert_eq!(list["merchants"][0]["migration"]["notify_percent"], 100.0);
    // Finish: the certificates are revoked.
    let (_, v) = t.control("POST", &path, json!({"action": "finish"})).await;
    assert_eq!(v["verification"], "public_key");
    assert_eq!(
        t.call(&m, "GET", "/v3/certificates", None).await.status,
        404
    );
    let a = t.call(&m, "GET", &q, None).await;
    assert_eq!(a.header("wechatpay-serial"), Some(pub_id.as_str()));
    let (s, _) = t.control("POST", &path, json!({"action": "finish"})).await;
    assert_eq!(s, 409);
}

#[tokio::test]
async fn a_rotated_certificate_is_listed_a_day_before_it_signs() {
    let t = T::new().await;
    let mut m = t.merchant(json!({"verification": "certificate"})).await;
    let old = m.issued["platform_certificates"][0]["serial_no"]
        .as_str()
        .unwrap()
        .to_owned();
    let (s, v) = t
        .control(
            "POST",
            &format!(
                "/_sim/pay/merchants/{}/platform_certificates/rotate",
                m.mchid
            ),
            json!({}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let listed = v["platform_certificates"].as_array().unwrap();
    assert_eq!(listed.len(), 2);
    let new = listed[1]["serial_no"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    let downloaded = t.call(&m, "GET", "/v3/certificates", None).await.json();
    assert_eq!(
        downloaded["data"].as_array().unwrap().len(),
        2,
        "both listed during the overlap"
    );
    for d in downloaded["data"].as_array().unwrap() {
        let pem = String::from_utf8(m.decrypt(&d["encrypt_certificate"])).unwrap();
        m.learn_cert(&pem, d["serial_no"].as_str().unwrap());
    }
    // The old certificate now expires when the new one starts signing.
    let (_, view) = t.control("GET", "/_sim/pay/merchants", Value::Null).await;
    let certs = view["merchants"][0]["platform_certificates"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(
        downloaded["data"][0]["expire_time"],
        certs[1]["in_use_from"]
    );
    assert_eq!(
        (certs[0]["in_use"].clone(), certs[1]["in_use"].clone()),
        (json!(true), json!(false))
    );
    let q = "/v3/certificates";
    let a = t.call(&m, "GET", q, None).await;
    assert_eq!(
        a.header("wechatpay-serial"),
        Some(old.as_str()),
        "the old one signs during the overlap"
    );
    let a = t
        .call_with(&m, "GET", q, None, &[("Wechatpay-Serial", &new)])
        .await;
    assert_eq!(a.header("wechatpay-serial"), Some(new.as_str()));
    assert!(a.signed_for(&m));
    t.advance(86_400 - 1);
    assert_eq!(
        t.call(&m, "GET", q, None).await.header("wechatpay-serial"),
        Some(old.as_str())
    );
    t.advance(1);
    let a = t.call(&m, "GET", q, None).await;
    assert_eq!(
        a.header("wechatpay-serial"),
        Some(new.as_str()),
        "the new one after 24 h"
    );
    assert!(a.signed_for(&m));
    assert_eq!(
        a.json()["data"].as_array().unwrap().len(),
        1,
        "the old one expired"
    );
}

#[tokio::test]
async fn a_merchant_may_bring_its_own_public_key() {
    let t = T::new().await;
    let donor = t.merchant(json!({})).await;
    let pkcs1 = donor.key.public().as_ref().to_vec();
    let b64 = B64.encode(&pkcs1);
    let pem = format!(
        "-----BEGIN RSA PUBLIC KEY-----\n{}\n-----END RSA PUBLIC KEY-----\n",
        b64.as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join("\n")
    );
    let (s, e) = t
        .control(
            "POST",
            "/_sim/pay/merchants",
            json!({"merchant_public_key": pem}),
        )
        .await;
    assert_eq!(s, 400, "a serial is needed with the key: {e}");
    let (s, issued) = t
        .control("POST", "/_sim/pay/merchants", json!({"mchid": "1900009191", "merchant_public_key": pem,
                  "merchant_serial_no": "1DDE55AD98ED71D6EDD4A4A16996DE7B47773A8C", "apiv3_key": "0123456789abcdefABCDEFGHIJKLMNOP"}))
        .await;
    assert_eq!(s, 200, "{issued}");
    assert!(issued["merchant_private_key"].is_null());
    let mut with_key = issued.clone();
    with_key["merchant_private_key"] = donor.issued["merchant_private_key"].clone();
    let m = Merchant::from_issued(with_key);
    assert_eq!(m.apiv3, "0123456789abcdefABCDEFGHIJKLMNOP");
    let a = t
        .prepay(&m, &order(&m, "own_key_1", 1, "https://example.com/n"))
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.signed_for(&m));
    let (s, _) = t
        .control(
            "POST",
            "/_sim/pay/merchants",
            json!({"mchid": "1900009191"}),
        )
        .await;
    assert_eq!(s, 409, "the mchid is taken");
}

// ------------------------------------------------------------------------- the console's views

#[tokio::test]
async fn the_console_reads_any_days_bill_and_the_order_behind_a_prepay_id() {
    let t = T::new().await;
    let m = t
        .merchant(json!({"name": "Image形象店", "appids": [APPID]}))
        .await;
    let (_, merchants) = t.control("GET", "/_sim/pay/merchants", Value::Null).await;
    assert_eq!(merchants["merchants"][0]["name"], "Image形象店");
    let (status, e) = t
        .control("POST", "/_sim/pay/merchants", json!({"name": ""}))
        .await;
    assert_eq!(status, 400, "{e}");

    // The order behind a prepay_id (bare or as the package), what the payment sheet shows.
    let a = t
        .prepay(&m, &order(&m, "sheet_1", 990, "https://example.com/n"))
        .await;
    let prepay_id = a.json()["prepay_id"].as_str().unwrap().to_owned();
    for id in [prepay_id.clone(), format!("prepay_id={prepay_id}")] {
        let (status, v) = t
            .control("GET", &format!("/_sim/pay/prepay/{id}"), Value::Null)
            .await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["prepay_id"], prepay_id.as_str());
        assert_eq!(v["current"], true);
        assert_eq!(v["mchid"], m.mchid.as_str());
        assert_eq!(v["merchant_name"], "Image形象店");
        assert_eq!(v["appid"], APPID);
        assert_eq!(v["out_trade_no"], "sheet_1");
        assert_eq!(v["description"], "Image形象店-深圳腾大-QQ公仔");
        assert_eq!(
            (v["total"].clone(), v["currency"].clone()),
            (json!(990), json!("CNY"))
        );
        assert_eq!(v["payer_openid"], OPENID);
        assert_eq!(v["trade_state"], "NOTPAY");
        assert!(v["prepay_expires"].as_i64().unwrap() > t.h.sim().now() * 1000);
    }
    let (status, v) = t
        .control("GET", "/_sim/pay/prepay/wx_no_such_prepay", Value::Null)
        .await;
    assert_eq!(status, 404);
    assert_eq!(v, json!({"error": "no prepay_id wx_no_such_prepay"}));

    // Today's bill so far (not downloadable through /v3 yet), then the same day's once ready.
    t.paid_order(&m, "sheet_2", 123, "https://example.com/n")
        .await;
    let (status, bill) = t
        .control(
            "GET",
            &format!("/_sim/pay/merchants/{}/bills", m.mchid),
            Value::Null,
        )
        .await;
    assert_eq!(status, 200, "{bill}");
    let today = bill["bill_date"].as_str().unwrap().to_owned();
    assert_eq!(bill["kind"], "trade");
    assert_eq!(bill["bill_type"], "ALL");
    assert_eq!(bill["mchid"], m.mchid.as_str());
    assert_eq!(bill["ready"], false);
    assert!(bill["ready_at"]
        .as_str()
        .unwrap()
        .ends_with("T10:00:00+08:00"));
    assert_eq!(bill["hash_type"], "SHA1");
    let csv = bill["csv"].as_str().unwrap();
    assert_eq!(
        bill["hash_value"].as_str().unwrap(),
        hex::encode(Sha1::digest(csv.as_bytes()))
    );
    assert_eq!(bill["columns"][6], "商户订单号");
    assert_eq!(bill["rows"].as_array().unwrap().len(), 1, "{bill}");
    assert_eq!(bill["rows"][0][6], "sheet_2");
    assert_eq!(bill["rows"][0][12], "1.23");
    assert_eq!(bill["summary_columns"][0], "总交易单数");
    assert_eq!(bill["summary"][0], "1");
    assert!(csv.contains("`sheet_2,"));
    // The same day at 10:05 the next morning: ready, and the same file /v3 hands out.
    let now = t.h.sim().now();
    t.advance(86_400 - (now + 8 * 3600).rem_euclid(86_400) + 10 * 3600 + 300);
    let (_, ready) = t
        .control(
            "GET",
            &format!(
                "/_sim/pay/merchants/{}/bills?kind=trade&bill_date={today}",
                m.mchid
            ),
            Value::Null,
        )
        .await;
    assert_eq!(ready["ready"], true);
    assert_eq!(ready["hash_value"], bill["hash_value"]);
    let v3 = t
        .call(
            &m,
            "GET",
            &format!("/v3/bill/tradebill?bill_date={today}"),
            None,
        )
        .await;
    assert_eq!(v3.json()["hash_value"], bill["hash_value"]);
    let (_, fund) = t
        .control(
            "GET",
            &format!(
                "/_sim/pay/merchants/{}/bills?kind=fundflow&bill_date={today}",
                m.mchid
            ),
            Value::Null,
        )
        .await;
    assert_eq!(
        (fund["kind"].clone(), fund["account_type"].clone()),
        (json!("fundflow"), json!("BASIC"))
    );
    assert_eq!(fund["rows"][0][5], "收入");
    assert_eq!(fund["rows"][0][10], "sheet_2");

    // Unknown merchants are 404 and bad parameters 400, in the control API's envelope.
    let (status, v) = t
        .control("GET", "/_sim/pay/merchants/1900000000/bills", Value::Null)
        .await;
    assert_eq!(status, 404);
    assert_eq!(v["error"], "MCH_NOT_EXISTS: no merchant 1900000000");
    for (query, field) in [
        ("kind=weekly", "kind"),
        ("bill_date=2024-02-30", "bill_date"),
        ("bill_type=SOME", "bill_type"),
        ("kind=fundflow&account_type=X", "account_type"),
    ] {
        let (status, v) = t
            .control(
                "GET",
                &format!("/_sim/pay/merchants/{}/bills?{query}", m.mchid),
                Value::Null,
            )
            .await;
        assert_eq!(status, 400, "{query}: {v}");
        let error = v["error"].as_str().unwrap();
        assert!(
            error.starts_with("PARAM_ERROR: ") && error.contains(field),
            "{query}: {error}"
        );
    }
}

/// A backend that answers every request with `answer` and keeps what it was sent.
async fn backend_answering(answer: Value) -> (String, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let kept = seen.clone();
    let app = Router::new().route(
        "/pay",
        post(move |body: String| {
            let kept = kept.clone();
            let answer = answer.clone();
            async move {
                kept.lock().unwrap().push(body);
                axum::Json(answer)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

#[tokio::test]
async fn the_phone_reads_the_payment_parameters_its_backend_answers() {
    let t = T::new().await;
    let m = t.merchant(json!({})).await;
    let (status, app) = t
        .control("POST", "/_sim/apps", json!({"appid": APPID}))
        .await;
    assert_eq!(status, 200, "{app}");
    t.control(
        "POST",
        "/_sim/users",
        json!({"appid": APPID, "openid": OPENID}),
    )
    .await;
    let a = t
        .prepay(&m, &order(&m, "phone_1", 100, "https://example.com/n"))
        .await;
    let prepay_id = a.json()["prepay_id"].as_str().unwrap().to_owned();
    let mut params = m.pay_params(APPID, OPENID, &prepay_id, "pay");
    let obj = params.as_object_mut().unwrap();
    for k in ["appid", "openid", "action"] {
        obj.remove(k);
    }
    let (url, seen) = backend_answering(json!({"order": "phone_1", "payment": params})).await;
    let template = json!({"method": "POST", "path": "/pay", "body": r#"{"openid": "{{openid}}"}"#});
    let mut backend = json!({"url": url, "login": template, "phone": template});
    let ask = json!({"appid": APPID, "openid": OPENID, "action": "pay"});

    // No pay request in the backend's settings: refused.
    let (status, _) = t
        .control(
            "PUT",
            &format!("/_sim/apps/{APPID}/backend"),
            backend.clone(),
        )
        .await;
    assert_eq!(status, 200);
    let (status, v) = t.control("POST", "/_sim/phone/request", ask.clone()).await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("no pay request"),
        "{v}"
    );

    backend["pay"] = template;
    let (status, _) = t
        .control(
            "PUT",
            &format!("/_sim/apps/{APPID}/backend"),
            backend.clone(),
        )
        .await;
    assert_eq!(status, 200);
    let (_, saved) = t
        .control("GET", &format!("/_sim/apps/{APPID}/backend"), Value::Null)
        .await;
    assert_eq!(saved["backend"]["pay"]["path"], "/pay");
    let (status, exchange) = t.control("POST", "/_sim/phone/request", ask).await;
    assert_eq!(status, 200, "{exchange}");
    assert_eq!(exchange["payment"]["from"], "payment");
    assert_eq!(exchange["payment"]["params"], params);
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        [json!({"openid": OPENID}).to_string()]
    );
    // What the sheet's Pay button then does.
    let mut pay = exchange["payment"]["params"].clone();
    pay["appid"] = json!(APPID);
    pay["openid"] = json!(OPENID);
    pay["action"] = json!("pay");
    let (_, r) = t.control("POST", "/_sim/pay/request_payment", pay).await;
    assert_eq!(r["errMsg"], "requestPayment:ok");
    let (_, v) = t
        .control("GET", &format!("/_sim/pay/prepay/{prepay_id}"), Value::Null)
        .await;
    assert_eq!(v["trade_state"], "SUCCESS");
}
