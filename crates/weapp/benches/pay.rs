//! WeChat Pay per-operation cost: signing a prepay request (nonce + five-line message + RSA-2048
//! SHA256 signature + `Authorization` header) and `parse_notification` (verify the RSA
//! signature over a realistic `TRANSACTION.SUCCESS` notification, decrypt its AES-256-GCM
//! resource, decode it into a typed `Transaction`), next to the bare primitives underneath
//! measured in the same run. Keys are the TEST keys of `tests/data/pay`.
//!
//! Run: `cargo bench -p weapp --bench pay -- --warm-up-time 1 --measurement-time 3`.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::Arc;

use base64::Engine;
use criterion::{criterion_group, criterion_main, Criterion};
use weapp::clock::ManualClock;
use weapp::pay::{
    nonce, response_message, ApiV3Key, Fen, JsapiPrepayRequest, Merchant, MerchantPrivateKey,
    NotificationParser, PayTime, RsaPublicKey, Verifier,
};

const NOW: i64 = 1_796_600_000;
const PUB_ID: &str = "PUB_KEY_ID_0119000001092026120600000000000001";
const APIV3: &str = "TESTapiv3key-not-real-0123456789";

fn data(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/data/pay/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn bench(c: &mut Criterion) {
    let merchant = Merchant::new(
        "1900000109",
        "3A5E0C7D1B2F4A6C8E9D0B1A2C3D4E5F60718293",
        MerchantPrivateKey::from_pem(&data("TEST-merchant-key.pkcs8.pem")).unwrap(),
    )
    .unwrap();
    let mut prepay = JsapiPrepayRequest::new(
        "wxd678efh567hg6787",
        "Image形象店-深圳腾大-QQ公仔",
        "1217752501201407033233368018",
        "https://www.weixin.qq.com/wxpay/pay.php",
        Fen::new(100),
        "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
    )
    .time_expire(PayTime::from_unix(NOW + 7200))
    .attach("自定义数据说明");
    prepay.mchid = "1900000109".into();
    let body = serde_json::to_vec(&prepay).unwrap();

    c.bench_function("pay/sign_prepay_authorization", |b| {
        b.iter(|| {
            merchant
                .authorization(
                    "POST",
                    "/v3/pay/transactions/jsapi",
                    black_box(&body),
                    NOW,
                    &nonce(),
                )
                .unwrap()
        })
    });
    let message =
        weapp::pay::request_message("POST", "/v3/pay/transactions/jsapi", NOW, &nonce(), &body);
    c.bench_function("pay/baseline_rsa2048_sha256_sign", |b| {
        b.iter(|| merchant.private_key().sign(black_box(&message)).unwrap())
    });

    // A realistic payment notification signed with the TEST "WeChat Pay public key".
    let apiv3 = ApiV3Key::new(APIV3).unwrap();
    let resource = serde_json::json!({
        "transaction_id": "4200001234202612061234567890",
        "amount": {"payer_total": 100, "total": 100, "currency": "CNY", "payer_currency": "CNY"},
        "mchid": "1900000109", "trade_state": "SUCCESS", "bank_type": "CMC", "promotion_detail": [],
        "success_time": "2026-12-06T10:34:56+08:00", "payer": {"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
        "out_trade_no": "1217752501201407033233368018", "appid": "wxd678efh567hg6787",
        "trade_state_desc": "支付成功", "trade_type": "JSAPI", "attach": "自定义数据",
        "scene_info": {"device_id": "013467007045764"}
    })
    .to_string();
    let ct = apiv3
        .encrypt("fdasflkja484", "transaction", resource.as_bytes())
        .unwrap();
    let notification = format!(
        r#"{{"id":"d4785163-ff81-5ed4-b828-e124183b37b3","create_time":"2026-12-06T10:34:57+08:00","resource_type":"encrypt-resource","event_type":"TRANSACTION.SUCCESS","summary":"支付成功","resource":{{"original_type":"transaction","algorithm":"AEAD_AES_256_GCM","ciphertext":"{ct}","associated_data":"transaction","nonce":"fdasflkja484"}}}}"#
    )
    .into_bytes();
    let wechat = MerchantPrivateKey::from_pem(&data("TEST-wechatpay-pubkey-private.pem")).unwrap();
    let ts = NOW.to_string();
    let wnonce = "d824f2e086d3c1df967785d13fcd22ef";
    let signature = wechat
        .sign(&response_message(&ts, wnonce, &notification))
        .unwrap();
    let headers: Vec<(&str, &str)> = vec![
        ("Wechatpay-Timestamp", &ts),
        ("Wechatpay-Nonce", wnonce),
        ("Wechatpay-Signature", &signature),
        ("Wechatpay-Serial", PUB_ID),
        ("Wechatpay-Signature-Type", "WECHATPAY2-SHA256-RSA2048"),
    ];
    let public_key = RsaPublicKey::from_pem(&data("TEST-wechatpay-pubkey.pem")).unwrap();
    let verifier = Verifier::builder()
        .public_key(PUB_ID, public_key.clone())
        .clock(Arc::new(ManualClock::new(NOW * 1000)))
        .build()
        .unwrap();
    let parser = NotificationParser::new(verifier, apiv3.clone());
    parser.parse(headers.as_slice(), &notification).unwrap();
    c.bench_function("pay/parse_notification", |b| {
        b.iter(|| {
            parser
                .parse(headers.as_slice(), black_box(&notification))
                .unwrap()
        })
    });
    let sig = base64::engine::general_purpose::STANDARD
        .decode(&signature)
        .unwrap();
    let signed = response_message(&ts, wnonce, &notification);
    c.bench_function("pay/baseline_rsa2048_sha256_verify", |b| {
        b.iter(|| assert!(public_key.verify(black_box(&signed), &sig)))
    });
    c.bench_function("pay/baseline_aes256gcm_decrypt", |b| {
        b.iter(|| {
            apiv3
                .decrypt("fdasflkja484", "transaction", black_box(&ct))
                .unwrap()
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
