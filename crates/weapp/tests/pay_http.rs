//! `weapp::pay` over HTTP against a small fake WeChat Pay written here (until the simulator
//! grows `/v3/...`): it checks every request's signature over the bytes it received, signs its
//! answers with TEST platform keys, and can misbehave (unsigned, forged, probe, error bodies,
//! refused connections, dropped connections, silence).

mod pay_support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use pay_support::*;
use sha1::{Digest, Sha1};
use tokio::io::AsyncReadExt;
use weapp::clock::ManualClock;
use weapp::pay::{
    request_message, ApiV3Key, AuthorizationHeader, Fen, FundFlowBillRequest, JsapiPrepayRequest,
    NotificationEvent, OrderRef, PayClient, PayError, PayErrorCode, RefundRequest, RefundStatus,
    TradeBillRequest, TradeBillType, TradeState, VerifyError,
};

/// What the fake saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path_and_query: String,
    headers: HeaderMap,
    body: Vec<u8>,
    /// The Authorization header verified with the merchant's public key over exactly these
    /// bytes.
    auth_ok: bool,
}

#[derive(Default)]
struct Fake {
    /// Who signs API answers; `None`: unsigned.
    signer: Mutex<Option<WechatSigner>>,
    tamper: Mutex<bool>,
    probe: Mutex<bool>,
    /// path prefix → (status, body) answered instead (unsigned).
    errors: Mutex<Vec<(String, u16, String)>>,
    hits: Mutex<HashMap<String, usize>>,
    seen: Mutex<Vec<Seen>>,
    /// `/v3/certificates`: the listing body and who signs it.
    listing: Mutex<Option<(Vec<u8>, WechatSigner)>>,
    bill: Mutex<Vec<u8>>,
    /// The hash announced for the bill (defaults to its real SHA1).
    bill_hash: Mutex<Option<String>>,
    base: Mutex<String>,
}

impl Fake {
    fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn verify_authorization(method: &str, pq: &str, headers: &HeaderMap, body: &[u8]) -> bool {
    let Some(h) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(AuthorizationHeader::parse)
    else {
        return false;
    };
    if h.mchid != MCHID || h.serial_no != MERCHANT_SERIAL || h.timestamp.abs_diff(now()) > 300 {
        return false;
    }
    let Ok(sig) = base64::engine::general_purpose::STANDARD.decode(&h.signature) else {
        return false;
    };
    key("TEST-merchant-key.pkcs8.pem").public_key().verify(
        &request_message(method, pq, h.timestamp, &h.nonce_str, body),
        &sig,
    )
}

fn transaction(out_trade_no: &str) -> serde_json::Value {
    transaction_resource(out_trade_no, 1)
}

fn refund_json(status: &str) -> serde_json::Value {
    serde_json::json!({
        "refund_id": "50000000382019052709732678859", "out_refund_no": "r-1",
        "transaction_id": "4200001234202612061234567890", "out_trade_no": "o-1",
        "channel": "ORIGINAL", "user_received_account": "支付用户零钱",
        "create_time": "2026-12-06T13:29:35+08:00", "status": status, "funds_account": "AVAILABLE",
        "amount": {"total": 100, "refund": 1, "payer_total": 100, "payer_refund": 1,
                   "settlement_refund": 1, "settlement_total": 100, "discount_refund": 0, "currency": "CNY"}
    })
}

async fn handle(State(fake): State<Arc<Fake>>, req: Request) -> Response {
    let method = req.method().to_string();
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let path = req.uri().path().to_owned();
    let headers = req.headers().clone();
    let body = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .unwrap()
        .to_vec();
    let auth_ok = verify_authorization(&method, &pq, &headers, &body);
    fake.seen.lock().unwrap().push(Seen {
        method: method.clone(),
        path_and_query: pq.clone(),
        headers,
        body: body.clone(),
        auth_ok,
    });
    *fake.hits.lock().unwrap().entry(path.clone()).or_default() += 1;
    let rid = HeaderValue::from_static("08F78BB5AF0610D302A0AF3C2C3E4F5A");
    if !auth_ok {
        let body = r#"{"code":"SIGN_ERROR","message":"签名错误，请检查后再试"}"#;
        return (StatusCode::UNAUTHORIZED, [("Request-ID", rid)], body).into_response();
    }
    let error = fake
        .errors
        .lock()
        .unwrap()
        .iter()
        .find(|(p, _, _)| path.starts_with(p.as_str()))
        .cloned();
    if let Some((_, status, body)) = error {
        let ct = if body.starts_with('{') {
            "application/json"
        } else {
            "text/html"
        };
        return (
            StatusCode::from_u16(status).unwrap(),
            [
                ("Request-ID", rid),
                ("Content-Type", HeaderValue::from_static(ct)),
            ],
            body,
        )
            .into_response();
    }
    let (status, out, signer): (StatusCode, Vec<u8>, Option<WechatSigner>) = if path
        == "/v3/billdownload/file"
    {
        let bill = fake.bill.lock().unwrap().clone();
        return (StatusCode::OK, Body::from(bill)).into_response();
    } else if path == "/v3/certificates" {
        match fake.listing.lock().unwrap().clone() {
            Some((body, signer)) => (StatusCode::OK, body, Some(signer)),
            None => {
                let body = r#"{"code":"RESOURCE_NOT_EXISTS","message":"无可用的平台证书"}"#;
                return (StatusCode::NOT_FOUND, [("Request-ID", rid)], body).into_response();
            }
        }
    } else {
        let signer = fake.signer.lock().unwrap().clone();
        let base = fake.base.lock().unwrap().clone();
        let bill = fake.bill.lock().unwrap().clone();
        let hash = fake
            .bill_hash
            .lock()
            .unwrap()
            .clone()
            .unwrap_or_else(|| hex::encode(Sha1::digest(&bill)));
        let json =
            |v: serde_json::Value| (StatusCode::OK, v.to_string().into_bytes(), signer.clone());
        match (method.as_str(), path.as_str()) {
            ("POST", "/v3/pay/transactions/jsapi") => {
                json(serde_json::json!({"prepay_id": "wx201410272009395522657a690389285100"}))
            }
            ("GET", p) if p.starts_with("/v3/pay/transactions/out-trade-no/") => {
                json(transaction(p.rsplit('/').next().unwrap()))
            }
            ("GET", p) if p.starts_with("/v3/pay/transactions/id/") => json(transaction("o-1")),
            ("POST", p) if p.ends_with("/close") => {
                (StatusCode::NO_CONTENT, Vec::new(), signer.clone())
            }
            ("POST", "/v3/refund/domestic/refunds") => json(refund_json("PROCESSING")),
            ("GET", p) if p.starts_with("/v3/refund/domestic/refunds/") => {
                json(refund_json("SUCCESS"))
            }
            ("GET", "/v3/bill/tradebill" | "/v3/bill/fundflowbill") => json(serde_json::json!({
                "hash_type": "SHA1", "hash_value": hash,
                "download_url": format!("{base}/v3/billdownload/file?token=6XIv5TUPto7pByrTQKhd6kwvyKLG2uY2wMMR8cNXqaA_Cv_isgaUtBzp4QtiozLO")
            })),
            _ => return (StatusCode::NOT_FOUND, "route not hit").into_response(),
        }
    };
    let mut resp = Response::builder().status(status).header("Request-ID", rid);
    if let Some(signer) = signer {
        let mut signed = signer.headers(now(), &out);
        if *fake.probe.lock().unwrap() {
            signed[2].1 = "WECHATPAY/SIGNTEST/cHJvYmU=".into();
        }
        for (k, v) in signed {
            resp = resp.header(k, v);
        }
    }
    let mut out = out;
    if *fake.tamper.lock().unwrap() {
        out.extend_from_slice(b" ");
    }
    if !out.is_empty() {
        resp = resp.header("Content-Type", "application/json");
    }
    resp.body(Body::from(out)).unwrap()
}

async fn start_fake() -> (Arc<Fake>, String) {
    let fake = Arc::new(Fake::default());
    *fake.signer.lock().unwrap() = Some(WechatSigner::public_key());
    *fake.bill.lock().unwrap() =
        b"`2026-12-06 10:34:56,`wxd678efh567hg6787,`1900000109\n".repeat(6000);
    let app = axum::Router::new()
        .fallback(handle)
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    *fake.base.lock().unwrap() = base.clone();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (fake, base)
}

/// A URL where nothing listens: connections are refused (the request never leaves).
async fn refused_url() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    drop(l);
    url
}

/// A server that reads the request and then closes the connection without answering (the
/// request left; its outcome is unknown), or, with `hang`, never answers.
async fn bad_server(hang: bool) -> (String, Arc<AtomicUsize>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let (mut sock, _) = l.accept().await.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            let mut buf = vec![0u8; 65536];
            let _ = tokio::time::timeout(Duration::from_millis(200), sock.read(&mut buf)).await;
            if hang {
                held.push(sock);
            } else {
                drop(sock);
            }
        }
    });
    (url, accepted)
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    PublicKey,
    Certificates,
    Both,
}

fn client(base: &str, backup: Option<String>, mode: Mode) -> PayClient {
    let mut b = PayClient::builder(merchant(), apiv3())
        .base_url(base)
        .backup_url(backup)
        .timeout(Duration::from_millis(600))
        .connect_timeout(Duration::from_millis(300));
    if mode != Mode::Certificates {
        b = b.wechatpay_public_key(PUB_ID, wechatpay_public_key());
    }
    if mode != Mode::PublicKey {
        b = b.platform_certificates();
    }
    b.build().unwrap()
}

fn prepay() -> JsapiPrepayRequest {
    JsapiPrepayRequest::new(
        APPID,
        "Image形象店-深圳腾大-QQ公仔",
        "1217752501201407033233368018",
        "https://www.weixin.qq.com/wxpay/pay.php",
        Fen::new(1),
        "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
    )
}

fn refund() -> RefundRequest {
    RefundRequest::new(
        OrderRef::OutTradeNo("o-1".into()),
        "r-1",
        Fen::new(1),
        Fen::new(100),
    )
    .reason("商品已售完")
}

fn listing(certs: &[(&str, &str)], key: &ApiV3Key) -> Vec<u8> {
    let data: Vec<serde_json::Value> = certs
        .iter()
        .map(|(file, serial)| {
            let nonce = &weapp::pay::nonce()[..12];
            serde_json::json!({
                "serial_no": serial,
                "effective_time": "2026-01-01T00:00:00+08:00",
                "expire_time": "2031-01-01T00:00:00+08:00",
                "encrypt_certificate": {
                    "algorithm": "AEAD_AES_256_GCM", "nonce": nonce, "associated_data": "certificate",
                    "ciphertext": key.encrypt(nonce, "certificate", data(file).as_bytes()).unwrap()
                }
            })
        })
        .collect();
    serde_json::json!({ "data": data }).to_string().into_bytes()
}

const CERT_A: (&str, &str) = ("TEST-platform-a-cert.pem", SERIAL_A);
const CERT_B: (&str, &str) = ("TEST-platform-b-cert.pem", SERIAL_B);

#[tokio::test]
async fn every_request_is_signed_over_the_exact_bytes_and_every_answer_verified() {
    let (fake, base) = start_fake().await;
    let pay = client(&base, None, Mode::PublicKey);

    let p = pay.jsapi_prepay(&prepay()).await.unwrap();
    assert_eq!(p.prepay_id, "wx201410272009395522657a690389285100");
    let t = pay
        .query_by_out_trade_no("1217752501201407033233368018")
        .await
        .unwrap();
    assert_eq!(t.trade_state, TradeState::Success);
    assert_eq!(t.amount.unwrap().total, Some(Fen::new(1)));
    pay.query_by_transaction_id("4200001234202612061234567890")
        .await
        .unwrap();
    pay.close("1217752501201407033233368018").await.unwrap();
    let r = pay.refund(&refund()).await.unwrap();
    assert_eq!(r.status, RefundStatus::Processing);
    assert_eq!(r.amount.payer_refund, Some(Fen::new(1)));
    let r = pay.query_refund("r-1").await.unwrap();
    assert_eq!(r.status, RefundStatus::Success);

    let seen = fake.seen();
    assert_eq!(seen.len(), 6);
    for s in &seen {
        assert!(s.auth_ok, "{} {}", s.method, s.path_and_query);
        // Public-key mode: every request names the key WeChat should sign the answer with.
        assert_eq!(s.headers["wechatpay-serial"], PUB_ID);
        assert_eq!(s.headers["accept"], "application/json");
        assert!(s.headers["user-agent"]
            .to_str()
            .unwrap()
            .starts_with("weapp-rs/"));
    }
    let prepay_body: serde_json::Value = serde_json::from_slice(&seen[0].body).unwrap();
    assert_eq!(prepay_body["mchid"], MCHID);
    assert_eq!(prepay_body["amount"]["total"], 1);
    assert_eq!(seen[0].headers["content-type"], "application/json");
    assert_eq!(
        seen[1].path_and_query,
        "/v3/pay/transactions/out-trade-no/1217752501201407033233368018?mchid=1900000109"
    );
    assert!(seen[1].body.is_empty());
    assert_eq!(seen[3].body, br#"{"mchid":"1900000109"}"#);
    let refund_body: serde_json::Value = serde_json::from_slice(&seen[4].body).unwrap();
    assert_eq!(refund_body["out_trade_no"], "o-1");
    assert_eq!(
        refund_body["amount"],
        serde_json::json!({"refund": 1, "total": 100, "currency": "CNY"})
    );

    // Arguments that cannot be put in a URL are refused before sending.
    for bad in ["", "a/b", "a?b", &"x".repeat(33)] {
        assert!(matches!(
            pay.query_by_out_trade_no(bad).await,
            Err(PayError::InvalidArgument(_))
        ));
    }
    let mut both = refund();
    both.transaction_id = Some("42".into());
    assert!(matches!(
        pay.refund(&both).await,
        Err(PayError::InvalidArgument(_))
    ));
    assert_eq!(fake.seen().len(), 6);
}

#[tokio::test]
async fn unsigned_forged_and_probe_answers_are_refused() {
    let (fake, base) = start_fake().await;
    let pay = client(&base, None, Mode::PublicKey);
    let query = || pay.query_by_out_trade_no("o-1");

    *fake.signer.lock().unwrap() = None;
    assert!(matches!(
        query().await,
        Err(PayError::Verify {
            source: VerifyError::MissingHeader("Wechatpay-Signature"),
            request_id: Some(_),
            ..
        })
    ));
    // A creating call whose answer cannot be trusted has an unknown outcome.
    let err = pay.jsapi_prepay(&prepay()).await.unwrap_err();
    assert!(err.is_outcome_unknown(), "{err:?}");

    *fake.signer.lock().unwrap() = Some(WechatSigner::public_key());
    *fake.tamper.lock().unwrap() = true;
    assert!(matches!(
        query().await,
        Err(PayError::Verify {
            source: VerifyError::Mismatch,
            ..
        })
    ));
    *fake.tamper.lock().unwrap() = false;

    *fake.probe.lock().unwrap() = true;
    assert!(matches!(
        query().await,
        Err(PayError::Verify {
            source: VerifyError::ProbeSignature,
            ..
        })
    ));
    *fake.probe.lock().unwrap() = false;

    // Signed by a platform certificate this public-key-only client does not hold.
    *fake.signer.lock().unwrap() = Some(WechatSigner::platform_a());
    assert!(matches!(
        query().await,
        Err(PayError::Verify {
            source: VerifyError::UnknownSerial { .. },
            ..
        })
    ));
    *fake.signer.lock().unwrap() = Some(WechatSigner::public_key());
    assert!(query().await.is_ok());
}

#[tokio::test]
async fn error_bodies_become_typed_errors_with_the_request_id() {
    let (fake, base) = start_fake().await;
    let pay = client(&base, None, Mode::PublicKey);
    let set = |path: &str, status: u16, body: &str| {
        *fake.errors.lock().unwrap() = vec![(path.into(), status, body.into())];
    };

    set(
        "/v3/pay/transactions/out-trade-no/",
        404,
        r#"{"code":"ORDER_NOT_EXIST","message":"订单不存在"}"#,
    );
    let err = pay.query_by_out_trade_no("o-404").await.unwrap_err();
    match &err {
        PayError::Api {
            status,
            code,
            message,
            request_id,
            endpoint,
            ..
        } => {
            assert_eq!(*status, 404);
            assert_eq!(code, &PayErrorCode::OrderNotExist);
            assert_eq!(message, "订单不存在");
            assert_eq!(
                request_id.as_deref(),
                Some("08F78BB5AF0610D302A0AF3C2C3E4F5A")
            );
            assert_eq!(endpoint, "/v3/pay/transactions/out-trade-no/{out_trade_no}");
        }
        other => panic!("{other:?}"),
    }
    assert!(!err.is_retryable());
    assert!(err
        .to_string()
        .contains("Request-ID 08F78BB5AF0610D302A0AF3C2C3E4F5A"));

    set(
        "/v3/pay/transactions/jsapi",
        400,
        r#"{"code":"PARAM_ERROR","message":"参数错误","detail":{"field":"/amount/currency","value":"XYZ","issue":"Currency code is invalid","location":"body"}}"#,
    );
    let err = pay.jsapi_prepay(&prepay()).await.unwrap_err();
    assert_eq!(err.code(), Some(&PayErrorCode::ParamError));
    assert!(!err.is_outcome_unknown(), "a 4xx is a definite refusal");
    let PayError::Api {
        detail: Some(detail),
        ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(detail["field"], "/amount/currency");

    // 5xx on a prepay: WeChat may have created the order.
    set(
        "/v3/pay/transactions/jsapi",
        500,
        r#"{"code":"SYSTEM_ERROR","message":"系统繁忙，请稍后重试"}"#,
    );
    let err = pay.jsapi_prepay(&prepay()).await.unwrap_err();
    assert!(err.is_outcome_unknown() && err.is_retryable(), "{err:?}");
    assert_eq!(err.code(), Some(&PayErrorCode::SystemError));
    assert_eq!(err.status(), Some(500));
    assert!(err.request_id().is_some());

    set(
        "/v3/refund/",
        429,
        r#"{"code":"FREQUENCY_LIMITED","message":"频率限制"}"#,
    );
    let err = pay.refund(&refund()).await.unwrap_err();
    assert!(err.is_retryable() && !err.is_outcome_unknown());

    set(
        "/v3/pay/transactions/id/",
        400,
        "<html><body>400 Bad Request</body></html>",
    );
    assert!(matches!(
        pay.query_by_transaction_id("42").await,
        Err(PayError::HttpStatus {
            status: 400,
            request_id: Some(_),
            ..
        })
    ));

    // A request WeChat cannot verify is 401 SIGN_ERROR: the merchant's key and serial differ.
    fake.errors.lock().unwrap().clear();
    let other =
        weapp::pay::Merchant::new(MCHID, MERCHANT_SERIAL, key("TEST-platform-a-key.pem")).unwrap();
    let wrong = PayClient::builder(other, apiv3())
        .base_url(&base)
        .wechatpay_public_key(PUB_ID, wechatpay_public_key())
        .build()
        .unwrap();
    assert_eq!(
        wrong.query_refund("r-1").await.unwrap_err().code(),
        Some(&PayErrorCode::SignError)
    );
}

#[tokio::test]
async fn a_refused_connection_is_retried_once_on_the_backup_host() {
    let (fake, backup) = start_fake().await;
    let primary = refused_url().await;
    let pay = client(&primary, Some(backup.clone()), Mode::PublicKey);
    pay.query_by_out_trade_no("o-1").await.unwrap();
    // The request never left, so even a prepay may go to the backup.
    pay.jsapi_prepay(&prepay()).await.unwrap();
    assert_eq!(fake.hits("/v3/pay/transactions/jsapi"), 1);
    assert!(fake.seen().iter().all(|s| s.auth_ok));

    // Without a backup the refusal is a transport error.
    let alone = client(&primary, None, Mode::PublicKey);
    assert!(matches!(
        alone.query_by_out_trade_no("o-1").await,
        Err(PayError::Transport { .. })
    ));
    // A custom base URL never falls back to production.
    assert!(format!("{alone:?}").contains("backup_url: None"));
    let default = PayClient::builder(merchant(), apiv3())
        .wechatpay_public_key(PUB_ID, wechatpay_public_key())
        .build()
        .unwrap();
    assert!(format!("{default:?}").contains("https://api2.mch.weixin.qq.com"));
}

#[tokio::test]
async fn a_dropped_connection_is_retried_only_for_calls_idempotent_by_their_key() {
    let (fake, backup) = start_fake().await;
    let (primary, accepted) = bad_server(false).await;
    let pay = client(&primary, Some(backup), Mode::PublicKey);

    pay.query_by_out_trade_no("o-1").await.unwrap();
    pay.refund(&refund()).await.unwrap();
    pay.close("o-1").await.unwrap();
    assert_eq!(fake.hits("/v3/refund/domestic/refunds"), 1);
    assert_eq!(accepted.load(Ordering::SeqCst), 3);

    let err = pay.jsapi_prepay(&prepay()).await.unwrap_err();
    assert!(
        matches!(&err, PayError::OutcomeUnknown { source, .. } if matches!(**source, PayError::Transport { .. })),
        "{err:?}"
    );
    assert_eq!(
        fake.hits("/v3/pay/transactions/jsapi"),
        0,
        "a prepay in doubt is not repeated"
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn timeouts_are_bounded() {
    let (silent, _) = bad_server(true).await;
    let (silent2, _) = bad_server(true).await;
    let pay = client(&silent, None, Mode::PublicKey);
    let started = Instant::now();
    let err = pay.query_by_out_trade_no("o-1").await.unwrap_err();
    assert!(matches!(err, PayError::TimedOut { .. }), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );

    let err = pay.jsapi_prepay(&prepay()).await.unwrap_err();
    assert!(
        matches!(&err, PayError::OutcomeUnknown { source, .. } if matches!(**source, PayError::TimedOut { .. })),
        "{err:?}"
    );

    // Primary and backup both silent: two timeouts at most.
    let pay = client(&silent, Some(silent2), Mode::PublicKey);
    let started = Instant::now();
    assert!(pay.query_refund("r-1").await.is_err());
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1100) && took < Duration::from_millis(2500),
        "{took:?}"
    );
}

#[tokio::test]
async fn bills_stream_and_their_hash_is_checked() {
    let (fake, base) = start_fake().await;
    let pay = client(&base, None, Mode::PublicKey);
    let info = pay
        .trade_bill(&TradeBillRequest {
            bill_date: "2026-12-05".into(),
            bill_type: TradeBillType::All,
        })
        .await
        .unwrap();
    assert_eq!(info.hash_type, "SHA1");
    let mut dl = pay.download_bill(&info).await.unwrap();
    let (mut got, mut chunks) = (Vec::new(), 0);
    while let Some(chunk) = dl.chunk().await.unwrap() {
        got.extend_from_slice(&chunk);
        chunks += 1;
    }
    let bill = fake.bill.lock().unwrap().clone();
    assert_eq!(got, bill);
    assert!(chunks > 1, "streamed in {chunks} chunk(s)");
    assert_eq!(dl.received(), bill.len() as u64);
    // The download itself was signed (its answer is not).
    let download = fake
        .seen()
        .into_iter()
        .find(|s| s.path_and_query.starts_with("/v3/billdownload/file?token="))
        .unwrap();
    assert!(download.auth_ok);
    assert!(fake.seen()[0]
        .path_and_query
        .ends_with("?bill_date=2026-12-05&bill_type=ALL"));

    let info = pay
        .fund_flow_bill(&FundFlowBillRequest {
            bill_date: "2026-12-05".into(),
            account_type: weapp::pay::AccountType::Basic,
        })
        .await
        .unwrap();
    assert_eq!(
        pay.download_bill(&info)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
        bill
    );

    // A file that is not the one announced is refused at the end.
    *fake.bill_hash.lock().unwrap() = Some("79bb0f45fc4c42234a918000b2668d689e2bde04".into());
    let info = pay
        .trade_bill(&TradeBillRequest {
            bill_date: "2026-12-05".into(),
            bill_type: TradeBillType::Success,
        })
        .await
        .unwrap();
    let err = pay
        .download_bill(&info)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap_err();
    assert!(
        matches!(err, PayError::BillHashMismatch { ref expected, .. } if expected == "79bb0f45fc4c42234a918000b2668d689e2bde04"),
        "{err:?}"
    );

    assert!(matches!(
        pay.trade_bill(&TradeBillRequest {
            bill_date: "2026/12/05".into(),
            bill_type: TradeBillType::All
        })
        .await,
        Err(PayError::InvalidArgument(_))
    ));
    let mut md5 = info.clone();
    md5.hash_type = "MD5".into();
    assert!(matches!(
        pay.download_bill(&md5).await,
        Err(PayError::InvalidArgument(_))
    ));
}

#[tokio::test]
async fn certificate_mode_downloads_once_for_concurrent_callers_and_verifies() {
    let (fake, base) = start_fake().await;
    *fake.listing.lock().unwrap() = Some((
        listing(&[CERT_A, CERT_B], &apiv3()),
        WechatSigner::platform_a(),
    ));
    *fake.signer.lock().unwrap() = Some(WechatSigner::platform_b());
    let pay = client(&base, None, Mode::Certificates);
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let pay = pay.clone();
            tokio::spawn(async move { pay.query_by_out_trade_no("o-1").await })
        })
        .collect();
    for c in calls {
        c.await.unwrap().unwrap();
    }
    assert_eq!(fake.hits("/v3/certificates"), 1, "single flight");
    let held: Vec<String> = pay
        .verifier()
        .certificates()
        .iter()
        .map(|c| c.serial().to_owned())
        .collect();
    assert_eq!(held, [SERIAL_A, SERIAL_B]);
    // Certificate mode sends no Wechatpay-Serial.
    assert!(fake
        .seen()
        .iter()
        .all(|s| s.auth_ok && !s.headers.contains_key("wechatpay-serial")));
    // The other certificate of the overlap verifies too, without another download.
    *fake.signer.lock().unwrap() = Some(WechatSigner::platform_a());
    pay.query_refund("r-1").await.unwrap();
    assert_eq!(fake.hits("/v3/certificates"), 1);
}

#[tokio::test]
async fn an_unknown_serial_refreshes_at_most_once_a_minute() {
    let (fake, base) = start_fake().await;
    *fake.listing.lock().unwrap() =
        Some((listing(&[CERT_A], &apiv3()), WechatSigner::platform_a()));
    *fake.signer.lock().unwrap() = Some(WechatSigner::platform_b());
    let clock = Arc::new(ManualClock::starting_now());
    let pay = PayClient::builder(merchant(), apiv3())
        .base_url(&base)
        .platform_certificates()
        .clock(clock.clone())
        .build()
        .unwrap();
    // B is not listed: the first call downloads (A only), and the unknown serial may not
    // trigger a second download so soon.
    for _ in 0..5 {
        let err = pay.query_by_out_trade_no("o-1").await.unwrap_err();
        assert!(
            matches!(
                err,
                PayError::Verify {
                    source: VerifyError::UnknownSerial { .. },
                    ..
                }
            ),
            "{err:?}"
        );
    }
    assert_eq!(fake.hits("/v3/certificates"), 1);
    // A minute later WeChat lists B: the unknown serial triggers one download and verifies.
    *fake.listing.lock().unwrap() = Some((
        listing(&[CERT_A, CERT_B], &apiv3()),
        WechatSigner::platform_a(),
    ));
    clock.advance_secs(61);
    pay.query_by_out_trade_no("o-1").await.unwrap();
    assert_eq!(fake.hits("/v3/certificates"), 2);
    pay.query_by_out_trade_no("o-1").await.unwrap();
    assert_eq!(fake.hits("/v3/certificates"), 2);
    // After 12 h it downloads again on its own.
    clock.advance_secs(12 * 3600);
    pay.query_by_out_trade_no("o-1").await.unwrap_err(); // our clock is now 12 h ahead of the fake's signatures
    assert_eq!(fake.hits("/v3/certificates"), 3);
}

#[tokio::test]
async fn a_listing_that_does_not_authenticate_is_refused_and_the_held_set_kept() {
    let (fake, base) = start_fake().await;
    let pay = client(&base, None, Mode::Certificates);
    // Public-key-only merchants get 404 RESOURCE_NOT_EXISTS.
    let err = pay.refresh_certificates().await.unwrap_err();
    assert_eq!(err.code(), Some(&PayErrorCode::ResourceNotExists));

    // Signed by a key that is neither held nor listed.
    *fake.listing.lock().unwrap() =
        Some((listing(&[CERT_A], &apiv3()), WechatSigner::platform_b()));
    assert!(matches!(
        pay.refresh_certificates().await,
        Err(PayError::Verify {
            source: VerifyError::UnknownSerial { .. },
            ..
        })
    ));
    // Encrypted under another APIv3 key: nothing we can open.
    let other = ApiV3Key::new("another-32-byte-apiv3-key-000000").unwrap();
    *fake.listing.lock().unwrap() = Some((listing(&[CERT_A], &other), WechatSigner::platform_a()));
    assert!(matches!(
        pay.refresh_certificates().await,
        Err(PayError::CertificateDecrypt { serial }) if serial == SERIAL_A
    ));
    // The signer's certificate listed under another serial: nothing vouches for the
    // signature, so the listing is refused before anything is decrypted.
    *fake.listing.lock().unwrap() = Some((
        listing(&[("TEST-platform-a-cert.pem", SERIAL_B)], &apiv3()),
        WechatSigner::platform_a(),
    ));
    assert!(matches!(
        pay.refresh_certificates().await,
        Err(PayError::Verify {
            source: VerifyError::UnknownSerial { .. },
            ..
        })
    ));
    // A signed listing with another entry whose serial is not its certificate's.
    *fake.listing.lock().unwrap() = Some((
        listing(&[CERT_A, ("TEST-platform-a-cert.pem", SERIAL_B)], &apiv3()),
        WechatSigner::platform_a(),
    ));
    assert!(matches!(
        pay.refresh_certificates().await,
        Err(PayError::Decode { .. })
    ));
    assert!(pay.verifier().certificates().is_empty());
    // And a good one.
    *fake.listing.lock().unwrap() =
        Some((listing(&[CERT_A], &apiv3()), WechatSigner::platform_a()));
    assert_eq!(pay.refresh_certificates().await.unwrap(), 1);
    let pk_only = client(&base, None, Mode::PublicKey);
    assert!(pk_only.refresh_certificates().await.is_err());
    assert!(pk_only.certificate_store().is_none());
}

#[tokio::test]
async fn both_mode_verifies_each_kind_and_notifications_refresh_for_new_serials() {
    let (fake, base) = start_fake().await;
    *fake.listing.lock().unwrap() =
        Some((listing(&[CERT_A], &apiv3()), WechatSigner::platform_a()));
    let pay = client(&base, None, Mode::Both);
    // The answer follows the request's Wechatpay-Serial: public key.
    pay.query_by_out_trade_no("o-1").await.unwrap();
    assert_eq!(
        fake.seen().last().unwrap().headers["wechatpay-serial"],
        PUB_ID
    );
    // A certificate-signed answer still verifies during the migration.
    *fake.signer.lock().unwrap() = Some(WechatSigner::platform_a());
    pay.query_by_out_trade_no("o-1").await.unwrap();

    // Notifications of both kinds.
    let body = notification_body(
        &apiv3(),
        "TRANSACTION.SUCCESS",
        "transaction",
        &transaction_resource("o-1", 1),
    );
    for signer in [WechatSigner::public_key(), WechatSigner::platform_a()] {
        let n = pay
            .receive_notification(&signer.headers(now(), &body), &body)
            .await
            .unwrap();
        assert!(matches!(n.event, NotificationEvent::Transaction(_)));
    }
    // A notification from a certificate listed since: one refresh, then accepted. (The clock
    // is the system's: wait out the one-minute limit by allowing it in the store's policy.)
    *fake.listing.lock().unwrap() = Some((
        listing(&[CERT_A, CERT_B], &apiv3()),
        WechatSigner::platform_a(),
    ));
    let quick = PayClient::builder(merchant(), apiv3())
        .base_url(&base)
        .wechatpay_public_key(PUB_ID, wechatpay_public_key())
        .platform_certificates()
        .build()
        .unwrap();
    let by_b = WechatSigner::platform_b().headers(now(), &body);
    assert!(
        quick.parse_notification(&by_b, &body).is_err(),
        "nothing downloaded yet"
    );
    let before = fake.hits("/v3/certificates");
    let n = quick.receive_notification(&by_b, &body).await.unwrap();
    assert_eq!(n.serial, SERIAL_B);
    assert_eq!(fake.hits("/v3/certificates"), before + 1);
    assert!(quick.parse_notification(&by_b, &body).is_ok());
}

// ------------------------------------------------------------------------- review fixes

/// A raw HTTP server answering every request with `status` and `body_len` bytes of `a`,
/// announced by `Content-Length` or (without it) read until the connection closes. Counts
/// what it managed to write, and records each request head.
async fn raw_server(
    status: u16,
    body_len: u64,
    announce: bool,
) -> (
    String,
    Arc<std::sync::atomic::AtomicU64>,
    Arc<Mutex<Vec<String>>>,
) {
    use tokio::io::AsyncWriteExt;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let written = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let heads = Arc::new(Mutex::new(Vec::new()));
    let (w, hs) = (written.clone(), heads.clone());
    tokio::spawn(async move {
        loop {
            let (mut sock, _) = l.accept().await.unwrap();
            let (w, hs) = (w.clone(), hs.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                hs.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
                let length = if announce {
                    format!("content-length: {body_len}\r\n")
                } else {
                    "connection: close\r\n".into()
                };
                let head = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n{length}\r\n"
                );
                if sock.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = vec![b'a'; 64 << 10];
                let mut left = body_len;
                while left > 0 {
                    let n = left.min(chunk.len() as u64) as usize;
                    if sock.write_all(&chunk[..n]).await.is_err() {
                        return;
                    }
                    w.fetch_add(n as u64, Ordering::SeqCst);
                    left -= n as u64;
                }
            });
        }
    });
    (url, written, heads)
}

/// Answers are read up to 1 MiB (2xx) / 64 KiB (errors): a larger one is refused by its
/// `Content-Length` or while reading, never buffered whole.
#[tokio::test]
async fn oversized_answers_are_refused_without_reading_them_whole() {
    const LEN: u64 = 512 << 20;
    for announce in [true, false] {
        let (url, written, _) = raw_server(200, LEN, announce).await;
        let pay = client(&url, None, Mode::PublicKey);
        let err = pay.query_by_out_trade_no("o-1").await.unwrap_err();
        assert!(
            matches!(err, PayError::ResponseTooLarge { limit, .. } if limit == 1 << 20),
            "{err:?}"
        );
        assert!(!err.is_retryable());
        // A prepay whose answer is refused this way may have created the order.
        assert!(pay
            .jsapi_prepay(&prepay())
            .await
            .unwrap_err()
            .is_outcome_unknown());
        tokio::time::sleep(Duration::from_millis(100)).await;
        let sent = written.load(Ordering::SeqCst);
        assert!(sent < 64 << 20, "announce={announce}: {sent} bytes written");
    }
    // An oversized error body: the bare status.
    let (url, _, _) = raw_server(503, 10 << 20, true).await;
    let err = client(&url, None, Mode::PublicKey)
        .query_by_out_trade_no("o-1")
        .await
        .unwrap_err();
    assert!(
        matches!(err, PayError::HttpStatus { status: 503, .. }),
        "{err:?}"
    );
    // Below the limit, everything as before (a listing, an answer): see the other tests.
}

/// The unsigned `message`, `code` and `detail` of an error body reach `Display` and logs cut
/// to 512 characters, without newlines or escape sequences.
#[tokio::test]
async fn error_text_is_cut_and_cleaned() {
    let (fake, base) = start_fake().await;
    let forged_line = "x\n2026-01-01T00:00:00Z INFO payment verified order=42 \u{1b}[2K";
    let body = serde_json::json!({
        "code": format!("PARAM_ERROR\r\n{}", "C".repeat(5000)),
        "message": format!("{forged_line}{}", "A".repeat(20_000)),
        "detail": {"field": "\u{1b}[31mamount", "value": "B".repeat(5000), "issue": "\u{202e}evil"}
    })
    .to_string();
    fake.errors
        .lock()
        .unwrap()
        .push(("/v3/pay/transactions/out-trade-no/".into(), 400, body));
    let pay = client(&base, None, Mode::PublicKey);
    let err = pay.query_by_out_trade_no("o-1").await.unwrap_err();
    let shown = err.to_string();
    assert!(shown.len() < 2500, "{} bytes: {shown:.200}", shown.len());
    for c in ['\n', '\r', '\u{1b}', '\u{202e}'] {
        assert!(!shown.contains(c), "{c:?} in {shown:.200}");
        assert!(!format!("{err:?}").contains(c), "{c:?} in Debug");
    }
    assert!(
        shown.contains("x\\n2026-01-01T00:00:00Z INFO"),
        "{shown:.200}"
    );
    let PayError::Api {
        message,
        code,
        detail,
        ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert!(
        message.ends_with(&format!("{}…", "A".repeat(100))),
        "cut after 512 characters"
    );
    assert!(message.chars().count() < 530);
    assert!(code.as_str().starts_with("PARAM_ERROR\\r\\nC") && code.as_str().chars().count() < 530);
    let detail = detail.as_ref().unwrap();
    assert_eq!(detail["field"], "\\u{1b}[31mamount");
    assert_eq!(detail["value"].as_str().unwrap().chars().count(), 513);
    assert_eq!(detail["issue"], "\\u{202e}evil");
}

/// `download_url` must name the client's own base (or backup) host under `/v3/billdownload/`:
/// otherwise nothing is signed and nothing is sent.
#[tokio::test]
async fn a_download_url_elsewhere_is_refused_unsigned() {
    let (fake, base) = start_fake().await;
    let (foreign, _, heads) = raw_server(404, 0, true).await;
    let pay = client(&base, None, Mode::PublicKey);
    let bill = |url: String| -> weapp::pay::BillInfo {
        serde_json::from_value(serde_json::json!({
            "hash_type": "SHA1",
            "hash_value": "79bb0f45fc4c42234a918000b2668d689e2bde04",
            "download_url": url,
        }))
        .unwrap()
    };
    let target = "/v3/pay/transactions/out-trade-no/victim-order?mchid=1900000109";
    let host = base.trim_start_matches("http://");
    for url in [
        format!("{foreign}{target}"),
        format!("{foreign}/v3/billdownload/file?token=x"),
        format!("{base}{target}"),
        format!("{base}/v3/billdownloadx/file"),
        format!("{base}/v3/billdownload/../pay/transactions/id/1"),
        format!("{base}/v3/billdownload/%2e%2e/%2e%2e/pay/transactions/id/1"),
        format!("https://{host}/v3/billdownload/file?token=x"),
        format!("http://user:pw@{host}/v3/billdownload/file?token=x"),
        "https://api.mch.weixin.qq.com/v3/billdownload/file?token=x".into(),
        "not a url".into(),
    ] {
        let err = pay.download_bill(&bill(url.clone())).await.unwrap_err();
        assert!(
            matches!(err, PayError::UntrustedDownloadUrl { .. }),
            "{url}: {err:?}"
        );
    }
    assert!(
        heads.lock().unwrap().is_empty(),
        "nothing reached the foreign host"
    );
    assert!(
        fake.seen().is_empty(),
        "nothing was sent to the API host either"
    );
    // The backup host is WeChat's too.
    let (foreign2, _, heads2) = raw_server(404, 0, true).await;
    let with_backup = client(&base, Some(foreign2.clone()), Mode::PublicKey);
    let err = with_backup
        .download_bill(&bill(format!("{foreign2}/v3/billdownload/file?token=x")))
        .await
        .unwrap_err();
    assert!(
        matches!(err, PayError::HttpStatus { status: 404, .. }),
        "{err:?}"
    );
    assert_eq!(heads2.lock().unwrap().len(), 1);
}

/// `BillDownload::bytes` reads into memory up to a limit (`bytes_up_to`, 256 MiB by
/// default); `chunk` streams without one.
#[tokio::test]
async fn a_bill_read_into_memory_has_a_limit() {
    let (fake, base) = start_fake().await;
    let pay = client(&base, None, Mode::PublicKey);
    let bill_len = fake.bill.lock().unwrap().len() as u64;
    let info = pay
        .trade_bill(&TradeBillRequest {
            bill_date: "2026-12-05".into(),
            bill_type: TradeBillType::All,
        })
        .await
        .unwrap();
    let err = pay
        .download_bill(&info)
        .await
        .unwrap()
        .bytes_up_to(bill_len - 1)
        .await
        .unwrap_err();
    assert!(
        matches!(err, PayError::ResponseTooLarge { limit, .. } if limit == bill_len - 1),
        "{err:?}"
    );
    let got = pay
        .download_bill(&info)
        .await
        .unwrap()
        .bytes_up_to(bill_len)
        .await
        .unwrap();
    assert_eq!(got.len() as u64, bill_len);
    assert_eq!(weapp::pay::BillDownload::DEFAULT_MAX_BYTES, 256 << 20);
}

fn listing_with(certs: &[(&str, &str)], key: &ApiV3Key, effective: &str, garbage: bool) -> Vec<u8> {
    let data: Vec<serde_json::Value> = certs
        .iter()
        .map(|(file, serial)| {
            let nonce = &weapp::pay::nonce()[..12];
            let ciphertext = if garbage {
                base64::engine::general_purpose::STANDARD.encode([0u8; 64])
            } else {
                key.encrypt(nonce, "certificate", data(file).as_bytes())
                    .unwrap()
            };
            serde_json::json!({
                "serial_no": serial,
                "effective_time": effective,
                "expire_time": "2031-01-01T00:00:00+08:00",
                "encrypt_certificate": {
                    "algorithm": "AEAD_AES_256_GCM", "nonce": nonce,
                    "associated_data": "certificate", "ciphertext": ciphertext
                }
            })
        })
        .collect();
    serde_json::json!({ "data": data }).to_string().into_bytes()
}

/// The listing's signature is checked before its entries are opened, at most 16 entries are
/// accepted, and a certificate listed ahead of its effective time does not vouch for it.
#[tokio::test]
async fn a_listing_is_verified_first_capped_and_dated() {
    let (fake, base) = start_fake().await;
    let pay = client(&base, None, Mode::Certificates);
    // Signed by B, which is neither held nor listed; A's entry is not even decryptable: the
    // signature refuses it first.
    *fake.listing.lock().unwrap() = Some((
        listing_with(&[CERT_A], &apiv3(), "2026-01-01T00:00:00+08:00", true),
        WechatSigner::platform_b(),
    ));
    let err = pay.refresh_certificates().await.unwrap_err();
    assert!(
        matches!(
            err,
            PayError::Verify {
                source: VerifyError::UnknownSerial { .. },
                ..
            }
        ),
        "{err:?}"
    );
    // Seventeen entries.
    let many = vec![CERT_A; 17];
    *fake.listing.lock().unwrap() = Some((
        listing_with(&many, &apiv3(), "2026-01-01T00:00:00+08:00", false),
        WechatSigner::platform_a(),
    ));
    let err = pay.refresh_certificates().await.unwrap_err();
    assert!(
        matches!(err, PayError::Decode { ref message, .. } if message.contains("16")),
        "{err:?}"
    );
    // Signed by A, which the listing says is effective only in a year.
    *fake.listing.lock().unwrap() = Some((
        listing_with(&[CERT_A], &apiv3(), "2027-12-06T00:00:00+08:00", false),
        WechatSigner::platform_a(),
    ));
    let err = pay.refresh_certificates().await.unwrap_err();
    assert!(
        matches!(
            err,
            PayError::Verify {
                source: VerifyError::UnknownSerial { .. },
                ..
            }
        ),
        "{err:?}"
    );
    assert!(pay.verifier().certificates().is_empty(), "nothing kept");
    // Signed by A (effective), listing B ahead of its effective time: B is kept for later, not
    // used now.
    let mut body: serde_json::Value =
        serde_json::from_slice(&listing(&[CERT_A, CERT_B], &apiv3())).unwrap();
    body["data"][1]["effective_time"] = "2027-12-06T00:00:00+08:00".into();
    *fake.listing.lock().unwrap() =
        Some((body.to_string().into_bytes(), WechatSigner::platform_a()));
    assert_eq!(pay.refresh_certificates().await.unwrap(), 2);
    assert!(pay.verifier().knows_serial(SERIAL_A));
    assert!(!pay.verifier().knows_serial(SERIAL_B));
}

/// A `MakeWriter` collecting formatted log lines.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

/// Notifications naming random serials (anyone can send them) are refused by the rate limit
/// before the refresh lock, and without a warning each.
#[tokio::test]
async fn forged_serials_are_refused_quietly_by_the_rate_limit() {
    let logs = Logs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let (fake, base) = start_fake().await;
    *fake.listing.lock().unwrap() =
        Some((listing(&[CERT_A], &apiv3()), WechatSigner::platform_a()));
    let pay = client(&base, None, Mode::Both);
    let body = notification_body(
        &apiv3(),
        "TRANSACTION.SUCCESS",
        "transaction",
        &transaction_resource("o-1", 1),
    );
    // A real one first: the certificate store downloads.
    let ok = WechatSigner::platform_a().headers(now(), &body);
    pay.receive_notification(&ok, &body).await.unwrap();
    assert_eq!(fake.hits("/v3/certificates"), 1);
    for i in 0..50 {
        let mut forged = WechatSigner::platform_a();
        forged.serial = format!("{:040X}", i + 1);
        let h = forged.headers(now(), &body);
        let err = pay.receive_notification(&h, &body).await.unwrap_err();
        assert!(err.is_authentication(), "{err:?}");
    }
    assert_eq!(fake.hits("/v3/certificates"), 1, "rate-limited");
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        !text.contains("unknown serial"),
        "no warning per forged serial:\n{text}"
    );
    // The store is still usable: an explicit refresh is not limited.
    assert_eq!(pay.refresh_certificates().await.unwrap(), 1);
}
