//! `weapp::pay` without a network: the public test vectors byte for byte, both key formats,
//! every way a signature is refused, rotation and the migration's mixed mode, notifications,
//! `paySign`, and secrets kept out of `Debug`/`Display`.

mod pay_support;

use std::sync::Arc;

use base64::Engine;
use pay_support::*;
use weapp::clock::ManualClock;
use weapp::pay::{
    pay_sign_message, request_message, AuthorizationHeader, Fen, JsapiPrepayRequest, KeyError,
    Merchant, MerchantPrivateKey, NotificationEvent, NotificationParser, NotifyError,
    NotifyResponse, PayClient, PayTime, PlatformCertificate, RefundStatus, RsaPublicKey,
    TradeState, VerificationMode, Verifier, VerifyError,
};

const GO_SIGNATURE: &str = "BKyAfU4iMCuvXMXS0Wzam3V/cnxZ+JaqigPM5OhljS2iOT95OO6Fsuml2JkFANJU9K6q9bLlDhPXuoVz+pp4hAm6pHU4ld815U4jsKu1RkyaII+1CYBUYC8TK0XtJ8FwUXXz8vZHh58rrAVN1XwNyvD1vfpxrMT4SL536GLwvpUHlCqIMzoZUguLli/K8V29QiOhuH6IEqLNJn8e9b3nwNcQ7be3CzYGpDAKBfDGPCqCv8Rw5zndhlffk2FEA70G4hvMwe51qMN/RAJbknXG23bSlObuTCN7Ndj1aJGH6/L+hdwfLpUtJm4QYVazzW7DFD27EpSQEqA8bX9+8m1rLg==";

fn clock_at(secs: i64) -> Arc<ManualClock> {
    Arc::new(ManualClock::new(secs * 1000))
}

fn verifier_a(clock: Arc<ManualClock>) -> Verifier {
    Verifier::builder()
        .certificates(vec![cert_a()])
        .clock(clock)
        .build()
        .unwrap()
}

fn pk_verifier(clock: Arc<ManualClock>) -> Verifier {
    Verifier::builder()
        .public_key(PUB_ID, wechatpay_public_key())
        .clock(clock)
        .build()
        .unwrap()
}

#[test]
fn go_sdk_signature_vector_is_reproduced_from_pkcs8_and_pkcs1() {
    for name in [
        "wechatpay-go-test-key.pkcs8.pem",
        "wechatpay-go-test-key.pkcs1.pem",
    ] {
        assert_eq!(key(name).sign(b"source").unwrap(), GO_SIGNATURE, "{name}");
    }
    // The same key's public half is in the Go SDK's notification certificate.
    let cert = PlatformCertificate::from_pem(&data("wechatpay-go-test-cert.pem")).unwrap();
    let sig = base64::engine::general_purpose::STANDARD
        .decode(GO_SIGNATURE)
        .unwrap();
    assert!(cert.public_key().verify(b"source", &sig));
    assert!(!cert.public_key().verify(b"sourcE", &sig));
}

/// wechatpay-go `core/notify/notify_test.go`: a real signed notification, clock pinned at its
/// timestamp. (Its resource uses a 16-byte key, so the decryption half is checked in the
/// `keys` module's unit tests; here the signature.)
#[test]
fn go_sdk_notification_signature_verifies_with_its_certificate() {
    let cert = PlatformCertificate::from_pem(&data("wechatpay-go-test-cert.pem")).unwrap();
    assert_eq!(cert.serial(), "D7CE59D1F522D701");
    assert_eq!(cert.not_before().to_string(), "2021-04-27T16:55:23+08:00");
    assert_eq!(cert.not_after().to_string(), "2031-04-25T16:55:23+08:00");
    let body = concat!(
        r#"{"id":"3119dfba-e649-5eec-ab1e-3412bc4d2e17","create_time":"2021-06-24T16:37:26+08:00","resource_type":"encrypt-resource","event_type":"PAYSCORE.USER_OPEN_SERVICE","summary":"签约成功","resource":{"original_type":"payscore","algorithm":"AEAD_AES_256_GCM","ciphertext":"#,
        r#""YDS3lKPaC4Y52Gf3uhft5qUBlIa8b428AWTtTauHQfQrRw+X1WpiuHIDy0vo1Vd6VEq67aVyqPdDYMkRVSDaZL3iZttevRMOoPKMifozg6XPWjIZumks/GpT48lI4NizyeaqLBokNebthah3o1H76qSlO9NkDjp9bzmKLEYYH9TEklFUpsvPqOTOcgSLgh21YJXYR7dEBXFgRLiNIKRgO5JdXh1hccRUAlyVWxE54PXpnQ==","associated_data":"payscore","nonce":"Kj7QIyUiYx1q"}}"#
    );
    let headers = vec![
        ("Content-Type", "application/json"),
        ("Wechatpay-Nonce", "EcZ9Cmy4Xyx1i6RlJQzLcCyEqDa26NBz"),
        ("Wechatpay-Timestamp", "1624523846"),
        ("Wechatpay-Serial", "D7CE59D1F522D701"),
        ("Wechatpay-Signature", "tJHIiIS9eB2hAYstmAmbbD3ZE5LiIm/Ug5tuL4fC0YOFRWIHV39UFIZXC0e9Wl6lBu6sKvkqDkzpqzBsVHyXFlbYZTOQrVdG4b6LfTnK4mikv9++ixJMd3vTf2yCqvBkh98zs3Ds5zsYQakzbcwhmw4fMJs4nPLws28H0UW9FjDR//rxELLwXvV1VEA1IBLX70xptjL8hrfUjEE8kkry6yNJTHZRU8CAc7qHli2Ng1V1qb9ARbK8A3ThmFmPQvRGrapI/jS2laKKgYUmfdEdkNO6B2Cke5e8VTxY406ArAmQ90GAihDwIcb16TQMnzCMBoutnwZKNiKRACrFmtxw2Q=="),
    ];
    let at = |secs| {
        Verifier::builder()
            .certificates(vec![cert.clone()])
            .clock(clock_at(secs))
            .build()
            .unwrap()
    };
    let ok = at(1624523846).verify(&headers, body.as_bytes()).unwrap();
    assert_eq!(ok.serial, "D7CE59D1F522D701");
    assert_eq!(ok.timestamp, 1624523846);
    assert!(at(1624523846 + 300)
        .verify(&headers, body.as_bytes())
        .is_ok());
    assert!(at(1624523846 - 300)
        .verify(&headers, body.as_bytes())
        .is_ok());
    for off in [301, -301] {
        assert!(matches!(
            at(1624523846 + off).verify(&headers, body.as_bytes()),
            Err(VerifyError::StaleTimestamp { .. })
        ));
    }
    let tampered = body.replace("签约成功", "签约失败");
    assert_eq!(
        at(1624523846).verify(&headers, tampered.as_bytes()),
        Err(VerifyError::Mismatch)
    );
}

#[test]
fn certificate_fields_match_openssl() {
    // `openssl x509 -noout -serial -dates` of the checked-in TEST certificates.
    for (name, serial, not_before, not_after) in [
        ("TEST-platform-a-cert.pem", SERIAL_A, 1796581051, 2111941051),
        ("TEST-platform-b-cert.pem", SERIAL_B, 1796581051, 2111941051),
        (
            "TEST-merchant-cert.pem",
            MERCHANT_SERIAL,
            1796581051,
            2111941051,
        ),
        // notAfter in 2054: a GeneralizedTime; serial 1.
        ("TEST-longlived-cert.pem", "01", 1796581059, 2660581059),
    ] {
        let c = PlatformCertificate::from_pem(&data(name)).unwrap();
        assert_eq!(c.serial(), serial, "{name}");
        assert_eq!(c.not_before().unix(), not_before, "{name}");
        assert_eq!(c.not_after().unix(), not_after, "{name}");
    }
    // The merchant certificate holds the merchant key's public half.
    let m = PlatformCertificate::from_pem(&data("TEST-merchant-cert.pem")).unwrap();
    assert_eq!(
        m.public_key(),
        &key("TEST-merchant-key.pkcs8.pem").public_key()
    );
}

#[test]
fn pkcs1_and_pkcs8_merchant_keys_are_the_same_key() {
    let (p8, p1) = (
        key("TEST-merchant-key.pkcs8.pem"),
        key("TEST-merchant-key.pkcs1.pem"),
    );
    let msg = request_message(
        "POST",
        "/v3/pay/transactions/jsapi",
        1554208460,
        "N",
        b"{\"a\":1}",
    );
    // PKCS#1 v1.5 is deterministic: same key, same signature.
    assert_eq!(p8.sign(&msg).unwrap(), p1.sign(&msg).unwrap());
    assert_eq!(p8.public_key(), p1.public_key());
}

#[test]
fn malformed_keys_are_typed_errors_without_key_material() {
    let pkcs8 = data("TEST-merchant-key.pkcs8.pem");
    let body_line = pkcs8.lines().nth(1).unwrap().to_owned();
    type Expect = fn(&KeyError) -> bool;
    let cases: Vec<(String, Expect)> = vec![
        ("not pem".into(), |e| matches!(e, KeyError::NotPem { .. })),
        (data("TEST-wechatpay-pubkey.pem"), |e| {
            matches!(e, KeyError::NotPem { .. })
        }),
        (
            pkcs8.replace(&body_line, &body_line.replace('A', "!")),
            |e| matches!(e, KeyError::Base64),
        ),
        (
            // Truncated DER.
            pkcs8.replace(&body_line, ""),
            |e| matches!(e, KeyError::Rejected(_)),
        ),
        (pkcs8.replace("PRIVATE KEY", "RSA PRIVATE KEY"), |e| {
            matches!(e, KeyError::Rejected(_))
        }),
    ];
    for (pem, expected) in cases {
        let err = MerchantPrivateKey::from_pem(&pem).unwrap_err();
        assert!(expected(&err), "{err:?}");
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains(&body_line[..20]), "{shown}");
    }
    assert!(RsaPublicKey::from_pem(&data("TEST-platform-a-cert.pem")).is_err());
    assert!(PlatformCertificate::from_pem(&data("TEST-wechatpay-pubkey.pem")).is_err());
    // A 1024-bit key never verifies (ring's floor is 2048).
    assert_eq!(
        weapp::pay::ApiV3Key::new("31 bytes 0123456789012345678901").unwrap_err(),
        KeyError::ApiV3KeyLength(31)
    );
}

#[test]
fn every_verification_failure_is_typed() {
    let now = 1_800_000_000;
    let v = verifier_a(clock_at(now));
    let body = br#"{"prepay_id":"wx201410272009395522657a690389285100"}"#;
    let good = WechatSigner::platform_a().headers(now, body);
    assert!(v.verify(&good, body).is_ok());
    let set = |name: &str, value: &str| {
        let mut h = good.clone();
        for (k, v) in &mut h {
            if k == name {
                *v = value.to_owned();
            }
        }
        h
    };
    let without = |name: &str| -> Vec<(String, String)> {
        good.iter().filter(|(k, _)| k != name).cloned().collect()
    };
    // Wrong key: signed by B, claiming A's serial.
    let mut wrong_key = WechatSigner::platform_b();
    wrong_key.serial = SERIAL_A.into();
    assert_eq!(
        v.verify(&wrong_key.headers(now, body), body),
        Err(VerifyError::Mismatch)
    );
    // Wrong serial: B's signature and serial, but only A is held.
    assert!(matches!(
        v.verify(&WechatSigner::platform_b().headers(now, body), body),
        Err(VerifyError::UnknownSerial { serial, have }) if serial == SERIAL_B && have == SERIAL_A
    ));
    // ±300 s, both directions, and just inside.
    for (ts, ok) in [
        (now - 300, true),
        (now + 300, true),
        (now - 301, false),
        (now + 301, false),
    ] {
        let r = v.verify(&WechatSigner::platform_a().headers(ts, body), body);
        assert_eq!(r.is_ok(), ok, "{ts}: {r:?}");
        if !ok {
            assert!(matches!(r, Err(VerifyError::StaleTimestamp { .. })));
        }
    }
    // A probe is refused before it is decoded (it is not base64).
    assert_eq!(
        v.verify(
            &set(
                "Wechatpay-Signature",
                "WECHATPAY/SIGNTEST/TWNUBG8xVXhyZXNRYlJRcw=="
            ),
            body
        ),
        Err(VerifyError::ProbeSignature)
    );
    // Tampered body, whitespace included.
    assert_eq!(
        v.verify(
            &good,
            br#"{"prepay_id": "wx201410272009395522657a690389285100"}"#
        ),
        Err(VerifyError::Mismatch)
    );
    // Tampered nonce or timestamp (within the window).
    assert_eq!(
        v.verify(&set("Wechatpay-Nonce", "other"), body),
        Err(VerifyError::Mismatch)
    );
    assert_eq!(
        v.verify(&set("Wechatpay-Timestamp", &(now + 1).to_string()), body),
        Err(VerifyError::Mismatch)
    );
    for name in [
        "Wechatpay-Signature",
        "Wechatpay-Timestamp",
        "Wechatpay-Nonce",
        "Wechatpay-Serial",
    ] {
        assert_eq!(
            v.verify(&without(name), body),
            Err(VerifyError::MissingHeader(name)),
            "{name}"
        );
        assert!(v.verify(&set(name, ""), body).is_err(), "{name} empty");
    }
    assert_eq!(
        v.verify(&set("Wechatpay-Timestamp", "16245x"), body),
        Err(VerifyError::BadTimestamp)
    );
    assert_eq!(
        v.verify(&set("Wechatpay-Signature", "%%%not base64"), body),
        Err(VerifyError::SignatureEncoding)
    );
    assert!(matches!(
        v.verify(&set("Wechatpay-Signature-Type", "WECHATPAY2-SM2-WITH-SM3"), body),
        Err(VerifyError::UnsupportedSignatureType(t)) if t == "WECHATPAY2-SM2-WITH-SM3"
    ));
    // A hostile serial is cut and sanitized before it reaches an error (and a log line).
    let long = format!("{}\r\nX-Injected: 1", "F".repeat(100));
    let err = v.verify(&set("Wechatpay-Serial", &long), body).unwrap_err();
    let shown = err.to_string();
    assert!(
        !shown.contains('\n') && !shown.contains("Injected"),
        "{shown}"
    );
    // Header names are case-insensitive, whatever the container.
    let lower: Vec<(String, String)> = good
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect();
    assert!(v.verify(&lower, body).is_ok());
    let mut map = reqwest::header::HeaderMap::new();
    for (k, val) in &good {
        map.insert(
            reqwest::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            val.parse().unwrap(),
        );
    }
    assert!(v.verify(&map, body).is_ok());
    let hash: std::collections::HashMap<String, String> = good.iter().cloned().collect();
    assert!(v.verify(&hash, body).is_ok());
    // An empty body (a 204) is `TS\nNONCE\n\n`.
    let empty = WechatSigner::platform_a().headers(now, b"");
    assert!(v.verify(&empty, b"").is_ok());
    assert_eq!(v.verify(&empty, b"\n"), Err(VerifyError::Mismatch));
}

#[test]
fn modes_route_by_serial() {
    let now = 1_800_000_000;
    let body = b"{}";
    let by_pk = WechatSigner::public_key().headers(now, body);
    let by_a = WechatSigner::platform_a().headers(now, body);

    let pk = pk_verifier(clock_at(now));
    assert_eq!(pk.mode(), VerificationMode::PublicKey);
    assert_eq!(pk.request_serial(), Some(PUB_ID));
    assert!(pk.verify(&by_pk, body).is_ok());
    // A cert-signed callback reaching a public-key-only receiver (wechatpay-go#263).
    assert!(matches!(
        pk.verify(&by_a, body),
        Err(VerifyError::UnknownSerial { .. })
    ));

    let certs = verifier_a(clock_at(now));
    assert_eq!(certs.mode(), VerificationMode::Certificates);
    assert_eq!(certs.request_serial(), None);
    assert!(certs.verify(&by_a, body).is_ok());
    assert!(matches!(
        certs.verify(&by_pk, body),
        Err(VerifyError::UnknownSerial { .. })
    ));

    // The migration: both kinds arrive, each verified by its own key.
    let both = Verifier::builder()
        .public_key(PUB_ID, wechatpay_public_key())
        .certificates(vec![cert_a()])
        .clock(clock_at(now))
        .build()
        .unwrap();
    assert_eq!(both.mode(), VerificationMode::Both);
    assert_eq!(both.request_serial(), Some(PUB_ID));
    assert_eq!(both.verify(&by_pk, body).unwrap().serial, PUB_ID);
    assert_eq!(both.verify(&by_a, body).unwrap().serial, SERIAL_A);
    // A public-key signature presented under a certificate serial does not verify.
    let mut pk_as_a = WechatSigner::public_key();
    pk_as_a.serial = SERIAL_A.into();
    assert_eq!(
        both.verify(&pk_as_a.headers(now, body), body),
        Err(VerifyError::Mismatch)
    );
    assert!(Verifier::builder().build().is_err());
}

#[test]
fn certificate_rotation_with_overlap() {
    let t0 = 1_800_000_000;
    let clock = clock_at(t0);
    // WeChat lists B 24 h before switching and moves A's expiry to the switch.
    let a = cert_a().with_listing_validity(PayTime::from_unix(0), PayTime::from_unix(t0 + 86_400));
    let b =
        cert_b().with_listing_validity(PayTime::from_unix(t0), PayTime::from_unix(i64::MAX / 4));
    assert_eq!(a.not_after().unix(), t0 + 86_400);
    assert_eq!(b.not_before().unix(), t0.max(cert_b().not_before().unix()));
    let v = Verifier::builder()
        .certificates(vec![a.clone()])
        .clock(clock.clone())
        .build()
        .unwrap();
    let other_clone = v.clone();
    let sign = |s: WechatSigner| {
        let ts = clock.now_ms() / 1000;
        s.headers(ts, b"{}")
    };
    use weapp::clock::Clock;
    assert!(v.verify(&sign(WechatSigner::platform_a()), b"{}").is_ok());
    assert!(v.verify(&sign(WechatSigner::platform_b()), b"{}").is_err());
    // The refreshed set holds both: every clone sees it.
    v.set_certificates(vec![a, b]);
    assert_eq!(other_clone.certificates().len(), 2);
    assert!(other_clone
        .verify(&sign(WechatSigner::platform_a()), b"{}")
        .is_ok());
    assert!(other_clone
        .verify(&sign(WechatSigner::platform_b()), b"{}")
        .is_ok());
    // After A's listed expiry only B verifies.
    clock.advance_secs(86_401);
    assert!(matches!(
        v.verify(&sign(WechatSigner::platform_a()), b"{}"),
        Err(VerifyError::UnknownSerial { .. })
    ));
    assert!(v.verify(&sign(WechatSigner::platform_b()), b"{}").is_ok());
    assert!(v.knows_serial(SERIAL_B) && !v.knows_serial(SERIAL_A));
    // Public-key-only verifiers ignore certificate sets.
    let pk = pk_verifier(clock.clone());
    pk.set_certificates(vec![cert_a()]);
    assert!(pk.certificates().is_empty());
}

fn parser(clock: Arc<ManualClock>) -> NotificationParser {
    let v = Verifier::builder()
        .public_key(PUB_ID, wechatpay_public_key())
        .certificates(vec![cert_a()])
        .clock(clock)
        .build()
        .unwrap();
    NotificationParser::new(v, apiv3())
}

#[test]
fn a_payment_notification_decrypts_into_a_typed_transaction() {
    let now = 1_800_000_000;
    let p = parser(clock_at(now));
    let body = notification_body(
        &apiv3(),
        "TRANSACTION.SUCCESS",
        "transaction",
        &transaction_resource("1217752501201407033233368018", 980),
    );
    for signer in [WechatSigner::public_key(), WechatSigner::platform_a()] {
        let n = p.parse(&signer.headers(now, &body), &body).unwrap();
        assert_eq!(n.id, "d4785163-ff81-5ed4-b828-e124183b37b3");
        assert_eq!(n.event_type, "TRANSACTION.SUCCESS");
        assert_eq!(n.summary, "支付成功");
        assert_eq!(n.serial, signer.serial);
        assert_eq!(
            n.create_time.unwrap().to_string(),
            "2026-12-06T13:29:35+08:00"
        );
        let NotificationEvent::Transaction(t) = &n.event else {
            panic!("{:?}", n.event)
        };
        assert_eq!(t.trade_state, TradeState::Success);
        assert_eq!(t.out_trade_no, "1217752501201407033233368018");
        assert_eq!(t.amount.as_ref().unwrap().total, Some(Fen::new(980)));
        assert_eq!(t.amount.as_ref().unwrap().payer_total, Some(Fen::new(980)));
        assert_eq!(
            t.success_time,
            Some("2026-12-06T10:34:56+08:00".parse::<PayTime>().unwrap())
        );
        assert_eq!(t.attach.as_deref(), Some("自定义数据"));
        assert!(n.plaintext.contains("a_field_added_later"));
    }
}

#[test]
fn refund_and_other_notifications() {
    let now = 1_800_000_000;
    let p = parser(clock_at(now));
    let refund = serde_json::json!({
        "mchid": MCHID, "out_trade_no": "o1", "transaction_id": "4200000000000000000000000001",
        "out_refund_no": "r1", "refund_id": "50000000382019052709732678859",
        "refund_status": "ABNORMAL", "user_received_account": "招商银行信用卡0403",
        "amount": {"total": 999, "refund": 199, "payer_total": 999, "payer_refund": 199}
    });
    let body = notification_body(&apiv3(), "REFUND.ABNORMAL", "refund", &refund);
    let n = p
        .parse(&WechatSigner::platform_a().headers(now, &body), &body)
        .unwrap();
    let NotificationEvent::Refund(r) = &n.event else {
        panic!("{:?}", n.event)
    };
    assert_eq!(r.refund_status, RefundStatus::Abnormal);
    assert_eq!(r.amount.refund, Some(Fen::new(199)));
    assert_eq!(n.original_type, "refund");

    let body = notification_body(
        &apiv3(),
        "PAYSCORE.USER_OPEN_SERVICE",
        "payscore",
        &serde_json::json!({"out_contract_code": "x"}),
    );
    let n = p
        .parse(&WechatSigner::public_key().headers(now, &body), &body)
        .unwrap();
    assert_eq!(n.event, NotificationEvent::Other);
    assert_eq!(n.plaintext, r#"{"out_contract_code":"x"}"#);
}

#[test]
fn refused_notifications_and_the_answers_wechat_expects() {
    let now = 1_800_000_000;
    let p = parser(clock_at(now));
    let resource = transaction_resource("o1", 1);
    let body = notification_body(&apiv3(), "TRANSACTION.SUCCESS", "transaction", &resource);
    let signer = WechatSigner::public_key();

    // Probe: refused, and answered with a 4xx carrying {"code":"FAIL"}.
    let mut probe = signer.headers(now, &body);
    probe[2].1 = "WECHATPAY/SIGNTEST/MTIzNDU2Nzg5".into();
    let err = p.parse(&probe, &body).unwrap_err();
    assert_eq!(err, NotifyError::Verify(VerifyError::ProbeSignature));
    let answer = NotifyResponse::for_error(&err);
    assert_eq!(answer.status, 401);
    let json: serde_json::Value = serde_json::from_str(answer.body.as_deref().unwrap()).unwrap();
    assert_eq!(json["code"], "FAIL");
    assert!(json["message"].is_string());
    assert_eq!(answer.content_type(), Some("application/json"));

    // Replayed after the window.
    let stale = signer.headers(now - 301, &body);
    assert!(matches!(
        p.parse(&stale, &body),
        Err(NotifyError::Verify(VerifyError::StaleTimestamp { .. }))
    ));

    // Encrypted under another APIv3 key (signature fine): cannot decrypt.
    let other = weapp::pay::ApiV3Key::new("another-32-byte-apiv3-key-000000").unwrap();
    let body2 = notification_body(&other, "TRANSACTION.SUCCESS", "transaction", &resource);
    let err = p.parse(&signer.headers(now, &body2), &body2).unwrap_err();
    assert_eq!(err, NotifyError::Decrypt);
    assert_eq!(NotifyResponse::for_error(&err).status, 400);

    // Signed but not an envelope; a foreign algorithm; a resource of the wrong shape.
    let junk = b"{\"hello\":1}";
    assert!(matches!(
        p.parse(&signer.headers(now, junk), junk),
        Err(NotifyError::Malformed(_))
    ));
    let sm4 = String::from_utf8(body.clone())
        .unwrap()
        .replace("AEAD_AES_256_GCM", "AEAD_SM4_GCM")
        .into_bytes();
    assert!(matches!(
        p.parse(&signer.headers(now, &sm4), &sm4),
        Err(NotifyError::UnsupportedAlgorithm(a)) if a == "AEAD_SM4_GCM"
    ));
    let bad_amount = serde_json::json!({"out_trade_no": "o1", "trade_state": "SUCCESS", "amount": {"total": 9.8}});
    let body3 = notification_body(&apiv3(), "TRANSACTION.SUCCESS", "transaction", &bad_amount);
    assert!(matches!(
        p.parse(&signer.headers(now, &body3), &body3),
        Err(NotifyError::Resource(_))
    ));
    // The body re-serialized by a framework no longer verifies.
    let reserialized =
        serde_json::to_vec(&serde_json::from_slice::<serde_json::Value>(&body).unwrap()).unwrap();
    assert_ne!(reserialized, body);
    assert!(matches!(
        p.parse(&signer.headers(now, &body), &reserialized),
        Err(NotifyError::Verify(VerifyError::Mismatch))
    ));

    assert_eq!(
        NotifyResponse::success(),
        NotifyResponse {
            status: 204,
            body: None
        }
    );
    assert_eq!(NotifyResponse::failure(200, "x").status, 500);
    assert_eq!(NotifyResponse::failure(503, "busy").status, 503);
}

#[test]
fn request_payment_is_signed_over_four_lines() {
    let m = merchant();
    let p = m
        .request_payment(
            APPID,
            "wx201410272009395522657a690389285100",
            1414561699,
            "5K8264ILTKCH16CQ2502SI8ZNMTM67VS",
        )
        .unwrap();
    assert_eq!(p.package, "prepay_id=wx201410272009395522657a690389285100");
    assert_eq!(p.sign_type, "RSA");
    assert_eq!(p.time_stamp, "1414561699");
    let sig = base64::engine::general_purpose::STANDARD
        .decode(&p.pay_sign)
        .unwrap();
    let msg = pay_sign_message(APPID, &p.time_stamp, &p.nonce_str, &p.package);
    assert!(m.private_key().public_key().verify(&msg, &sig));
    // Deterministic, and the same as openssl would produce with this key and message.
    assert_eq!(m.private_key().sign(&msg).unwrap(), p.pay_sign);
    let json = serde_json::to_value(&p).unwrap();
    for k in ["timeStamp", "nonceStr", "package", "signType", "paySign"] {
        assert!(json.get(k).is_some(), "{k}");
    }
    assert!(m.request_payment("", "x", 1, "n").is_err());
}

#[test]
fn authorization_header_verifies_over_the_five_lines() {
    let m = merchant();
    let body = br#"{"mchid":"1900000109"}"#;
    let header = m
        .authorization(
            "POST",
            "/v3/pay/transactions/out-trade-no/o1/close",
            body,
            1554208460,
            "593BEC0C930BF1AFEB40B4A08C8FB242",
        )
        .unwrap();
    assert!(header.starts_with("WECHATPAY2-SHA256-RSA2048 mchid=\"1900000109\",nonce_str=\"593BEC0C930BF1AFEB40B4A08C8FB242\",timestamp=\"1554208460\",serial_no=\"3A5E0C7D1B2F4A6C8E9D0B1A2C3D4E5F60718293\",signature=\""));
    let parsed = AuthorizationHeader::parse(&header).unwrap();
    let sig = base64::engine::general_purpose::STANDARD
        .decode(&parsed.signature)
        .unwrap();
    let msg = request_message(
        "POST",
        "/v3/pay/transactions/out-trade-no/o1/close",
        parsed.timestamp,
        &parsed.nonce_str,
        body,
    );
    assert!(m.private_key().public_key().verify(&msg, &sig));
    assert!(Merchant::new(
        "1900\"000109",
        MERCHANT_SERIAL,
        key("TEST-merchant-key.pkcs8.pem")
    )
    .is_err());
    assert!(Merchant::new(MCHID, "", key("TEST-merchant-key.pkcs8.pem")).is_err());
}

#[test]
fn prepay_json_has_integer_fen_and_china_times() {
    let req = JsapiPrepayRequest::new(
        APPID,
        "茶",
        "o-1",
        "https://e.com/n",
        Fen::new(980),
        "oUser",
    )
    .time_expire("2026-12-07T02:34:56Z".parse().unwrap())
    .attach("x");
    let json = serde_json::to_string(&req).unwrap();
    assert!(
        json.contains(r#""amount":{"total":980,"currency":"CNY"}"#),
        "{json}"
    );
    assert!(
        json.contains(r#""time_expire":"2026-12-07T10:34:56+08:00""#),
        "{json}"
    );
}

#[test]
fn secrets_never_reach_debug_or_display() {
    let pem = data("TEST-merchant-key.pkcs8.pem");
    let key_fragments: Vec<String> = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(|l| l[..16].to_owned())
        .collect();
    let m = merchant();
    let client = PayClient::builder(m.clone(), apiv3())
        .wechatpay_public_key(PUB_ID, wechatpay_public_key())
        .platform_certificates()
        .build()
        .unwrap();
    let p = parser(clock_at(1));
    let errors: Vec<String> = vec![
        format!("{:?}", NotifyError::Decrypt),
        format!("{}", NotifyError::Decrypt),
        format!(
            "{:?}",
            MerchantPrivateKey::from_pem(&pem.replace('M', "!")).unwrap_err()
        ),
        format!("{:?}", weapp::pay::ApiV3Key::new(&APIV3[..31]).unwrap_err()),
    ];
    let shown = [
        format!("{m:?}"),
        format!("{:?}", m.private_key()),
        format!("{:?} {}", apiv3(), apiv3()),
        format!("{client:?}"),
        format!("{p:?}"),
        format!("{:?}", client.verifier()),
        format!("{:?}", client.certificate_store()),
    ]
    .into_iter()
    .chain(errors)
    .collect::<Vec<_>>();
    for s in &shown {
        assert!(!s.contains(APIV3) && !s.contains(&APIV3[..16]), "{s}");
        for frag in &key_fragments {
            assert!(!s.contains(frag.as_str()), "{s}");
        }
    }
    assert!(
        shown[0].contains("Merchant") && shown[0].contains(MCHID),
        "{}",
        shown[0]
    );
    assert!(shown[2].contains("***"));
}

// ------------------------------------------------------------------------- review fixes

/// A platform certificate verifies only from its effective time (the listing's
/// `effective_time` or the X.509 notBefore, whichever is later), accepted up to the timestamp
/// window early for a slightly slow clock.
#[test]
fn a_certificate_does_not_verify_before_its_effective_time() {
    let now = 1_800_000_000;
    let effective_in = |secs: i64| {
        cert_a().with_listing_validity(
            PayTime::from_unix(now + secs),
            PayTime::from_unix(now + 10 * 86_400),
        )
    };
    let by_a = WechatSigner::platform_a().headers(now, b"{}");
    // Effective tomorrow: unknown today, in every mode, and not listed as a key we have.
    let tomorrow = Verifier::builder()
        .public_key(PUB_ID, wechatpay_public_key())
        .certificates(vec![effective_in(86_400)])
        .clock(clock_at(now))
        .build()
        .unwrap();
    assert!(!tomorrow.knows_serial(SERIAL_A));
    match tomorrow.verify(&by_a, b"{}") {
        Err(VerifyError::UnknownSerial { have, .. }) => assert_eq!(have, PUB_ID),
        other => panic!("UnknownSerial expected, got {other:?}"),
    }
    // 100 s ahead of a clock that is slow by as much: within the window, accepted; 301 s: not.
    let v = |cert| {
        Verifier::builder()
            .certificates(vec![cert])
            .clock(clock_at(now))
            .build()
            .unwrap()
    };
    assert!(v(effective_in(100)).verify(&by_a, b"{}").is_ok());
    assert!(v(effective_in(300)).verify(&by_a, b"{}").is_ok());
    assert!(matches!(
        v(effective_in(301)).verify(&by_a, b"{}"),
        Err(VerifyError::UnknownSerial { .. })
    ));
    // The X.509 notBefore counts too: a year before it, nothing verifies.
    let before = cert_a().not_before().unix() - 365 * 86_400;
    let early = Verifier::builder()
        .certificates(vec![cert_a()])
        .clock(clock_at(before))
        .build()
        .unwrap();
    assert!(!early.knows_serial(SERIAL_A));
    assert!(matches!(
        early.verify(&WechatSigner::platform_a().headers(before, b"{}"), b"{}"),
        Err(VerifyError::UnknownSerial { .. })
    ));
}

/// `TRANSACTION.*` goes with `original_type` `transaction`, `REFUND.*` with `refund`, and the
/// GCM associated data is the `original_type` or empty (WeChat documents it as possibly empty):
/// a resource of one kind cannot pass as another.
#[test]
fn notification_types_and_associated_data_are_pinned() {
    let now = 1_800_000_000;
    let p = parser(clock_at(now));
    let key = apiv3();
    let signer = WechatSigner::public_key();
    let resource = transaction_resource("o1", 1).to_string();
    let envelope = |event: &str, original: &str, aad: &str, enc_aad: &str| {
        let nonce = "0123456789ab";
        let ct = key.encrypt(nonce, enc_aad, resource.as_bytes()).unwrap();
        format!(
            r#"{{"id":"x","event_type":"{event}","resource":{{"original_type":"{original}","algorithm":"AEAD_AES_256_GCM","ciphertext":"{ct}","associated_data":"{aad}","nonce":"{nonce}"}}}}"#
        )
        .into_bytes()
    };
    let parse = |body: &[u8]| p.parse(&signer.headers(now, body), body);
    // The good one.
    let n = parse(&envelope(
        "TRANSACTION.SUCCESS",
        "transaction",
        "transaction",
        "transaction",
    ))
    .unwrap();
    assert!(matches!(n.event, NotificationEvent::Transaction(_)));
    // Empty associated data, as WeChat's documentation allows: decrypted with the empty AAD.
    let n = parse(&envelope("TRANSACTION.SUCCESS", "transaction", "", "")).unwrap();
    assert!(matches!(n.event, NotificationEvent::Transaction(_)));
    // The review's case: a transaction event whose envelope says refund, empty AAD.
    for body in [
        envelope("TRANSACTION.SUCCESS", "refund", "", ""),
        envelope("TRANSACTION.SUCCESS", "refund", "refund", "refund"),
        envelope(
            "REFUND.SUCCESS",
            "transaction",
            "transaction",
            "transaction",
        ),
        envelope(
            "PAYSCORE.USER_OPEN_SERVICE",
            "transaction",
            "transaction",
            "transaction",
        ),
        // The associated data is another kind's.
        envelope("TRANSACTION.SUCCESS", "transaction", "refund", "refund"),
    ] {
        let err = parse(&body).unwrap_err();
        assert!(matches!(err, NotifyError::TypeMismatch { .. }), "{err:?}");
        assert_eq!(NotifyResponse::for_error(&err).status, 400);
    }
    // The envelope claims the right AAD, but the resource was encrypted under another one.
    assert_eq!(
        parse(&envelope(
            "TRANSACTION.SUCCESS",
            "transaction",
            "transaction",
            "refund"
        )),
        Err(NotifyError::Decrypt)
    );
}

/// A decode error names the serde category and position, never a value of the decrypted
/// resource (an openid, an amount) or of the envelope.
#[test]
fn decode_errors_carry_no_decrypted_values() {
    let now = 1_800_000_000;
    let p = parser(clock_at(now));
    let signer = WechatSigner::public_key();
    let secret = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o-openid";
    for field in ["success_time", "amount", "transaction_id"] {
        let mut r = transaction_resource("o-1", 1);
        match field {
            "amount" => r["amount"]["total"] = secret.into(),
            "transaction_id" => r[field] = serde_json::json!({ "x": secret }),
            _ => r[field] = secret.into(),
        }
        let body = notification_body(&apiv3(), "TRANSACTION.SUCCESS", "transaction", &r);
        let err = p.parse(&signer.headers(now, &body), &body).unwrap_err();
        assert!(matches!(err, NotifyError::Resource(_)), "{err:?}");
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains("oUpF8uMuAJO"), "{field}: {shown}");
        assert!(shown.contains("line 1 column"), "{field}: {shown}");
    }
    // The envelope itself, signed but not the right shape.
    let body = format!(r#"{{"id":"x","event_type":"TRANSACTION.SUCCESS","resource":"{secret}"}}"#);
    let err = p
        .parse(&signer.headers(now, body.as_bytes()), body.as_bytes())
        .unwrap_err();
    assert!(matches!(err, NotifyError::Malformed(_)), "{err:?}");
    assert!(!format!("{err} {err:?}").contains("oUpF8uMuAJO"), "{err}");
}

#[test]
fn offsets_take_digits_only_and_amounts_refuse_overflow() {
    for bad in [
        "2026-01-01T00:00:00+08:-1",
        "2026-01-01T00:00:00+08:+1",
        "2026-01-01T00:00:00+-8:00",
    ] {
        assert!(bad.parse::<PayTime>().is_err(), "{bad}");
    }
    assert!("2026-01-01T00:00:00+08:30".parse::<PayTime>().is_ok());
    assert_eq!(Fen::try_from(u64::MAX), Err(weapp::pay::FenOverflow));
    assert_eq!(
        Fen::try_from(i64::MAX as u64),
        Ok(Fen::new(i64::MAX as u64))
    );
    assert_eq!(Fen::try_new(-1), None);
}
