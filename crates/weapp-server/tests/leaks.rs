//! Runs a full session of traffic and asserts that no response body and no log line (at TRACE,
//! from every crate) contains a session_key the simulator issued or an app secret — and that no
//! log line contains an access token.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::{sqlite_url, world, KEY};
use serde_json::json;
use weapp::TokenMode;
use weapp_sim::Fault;

const PUSH_TOKEN: &str = "pushtoken123";
const AES_KEY: &str = "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR";
const WEBHOOK_SECRET: &str = "whsec_leak_0123456789";
/// What a user wrote in a pushed message.
const PRIVATE: &str = "myBankCard6222021234567890";
/// The admin's key, and the secrets of an app registered through the admin API.
const ADMIN_KEY: &str = "admin-key-0123456789abcdefghij";
const MANAGED_SECRET: &str = "managedsecret0123456789abcdef";
const MANAGED_PUSH_TOKEN: &str = "mpushtok789";
const MANAGED_AES_KEY: &str = "zYxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aQ";
const MANAGED_WEBHOOK_SECRET: &str = "whsec_managed_0123456789";

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_a_response_or_a_log_line() {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("trace"))
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let w = world().await;
    let mut config = w.config(&sqlite_url(), None, TokenMode::Classic);
    config.apps[0].push = Some(weapp_server::config::PushConfig {
        token: PUSH_TOKEN.into(),
        encoding_aes_key: Some(AES_KEY.into()),
        mode: None,
        webhook_url: Some("http://127.0.0.1:9/hook".into()),
        webhook_secret: Some(WEBHOOK_SECRET.into()),
        replay_window_secs: 300,
    });
    config.admins = vec![weapp_server::config::AdminConfig {
        name: "ops".into(),
        key: Some(ADMIN_KEY.into()),
        key_env: None,
        key_sha256: None,
    }];
    let server = weapp_server::spawn(config.clone()).await.unwrap();
    let url = server.url().to_owned();
    // The running state's Debug (what a careless `{:?}` would print) shows no secret.
    let state_debug = format!("{:?} {config:?}", server.state());
    for secret in [
        PUSH_TOKEN,
        AES_KEY,
        WEBHOOK_SECRET,
        w.secret.as_str(),
        KEY,
        "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
    ] {
        assert!(!state_debug.contains(secret), "Debug shows {secret}");
    }
    let mut bodies: Vec<String> = Vec::new();
    let mut session_keys: Vec<String> = Vec::new();
    let mut record = |s: u16, v: serde_json::Value| {
        bodies.push(v.to_string());
        s
    };

    for round in 0..3 {
        let (code, openid) = w
            .sim
            .sim()
            .login(&w.appid, Some("oLEAK".into()), None, false)
            .unwrap();
        session_keys.push(
            w.sim
                .sim()
                .user(&w.appid, &openid)
                .unwrap()
                .session_key
                .unwrap(),
        );
        let (s, v) = w.post_login(&url, &w.appid, &code).await;
        assert_eq!(record(s, v.clone()), 200);
        let token = v["token"].as_str().unwrap().to_owned();
        let (s, v) = w.post_login(&url, &w.appid, &code).await;
        assert_eq!(record(s, v), 400);
        let (s, v) = w
            .call("GET", format!("{url}/v1/me"), Some(&token), None)
            .await;
        assert_eq!(record(s, v), 200);
        let phone = w.sim.sim().phone_code(&w.appid, &openid, None).unwrap();
        let (s, v) = w
            .call(
                "POST",
                format!("{url}/v1/me/phone"),
                Some(&token),
                Some(json!({"code": phone})),
            )
            .await;
        assert_eq!(record(s, v), 200);
        let (data, iv) = w
            .sim
            .sim()
            .open_data(&w.appid, &openid, json!({"round": round}))
            .unwrap();
        let (s, v) = w
            .call(
                "POST",
                format!("{url}/v1/me/decrypt"),
                Some(&token),
                Some(json!({"encrypted_data": data, "iv": iv})),
            )
            .await;
        assert_eq!(record(s, v), 200);
        let (s, v) = w
            .call(
                "POST",
                format!("{url}/v1/me/decrypt"),
                Some(&token),
                Some(json!({"encrypted_data": "AAAA", "iv": iv})),
            )
            .await;
        assert_eq!(record(s, v), 400);
        let (s, v) = w
            .call("POST", format!("{url}/v1/logout"), Some(&token), None)
            .await;
        record(s, v);
    }
    // Broker, mirror and failure paths.
    let (s, v) = w
        .call(
            "GET",
            format!("{url}/v1/apps/{}/access_token", w.appid),
            Some(KEY),
            None,
        )
        .await;
    assert_eq!(s, 200);
    let access_token = v["access_token"].as_str().unwrap().to_owned();
    let (s, v) = w
        .call(
            "POST",
            format!("{url}/v1/apps/{}/access_token/invalidate", w.appid),
            Some(KEY),
            Some(json!({"access_token": access_token})),
        )
        .await;
    assert_eq!(s, 200);
    let new_token = v["access_token"].as_str().unwrap().to_owned();
    let (s, v) = w
        .call(
            "GET",
            format!(
                "{url}/cgi-bin/token?grant_type=client_credential&appid={}&secret={}",
                w.appid, w.secret
            ),
            None,
            None,
        )
        .await;
    assert_eq!(record(s, v), 200);
    let (s, v) = w
        .call(
            "GET",
            format!(
                "{url}/cgi-bin/token?grant_type=client_credential&appid={}&secret=wrong-{}",
                w.appid, w.secret
            ),
            None,
            None,
        )
        .await;
    record(s, v);
    w.sim
        .sim()
        .add_fault(Fault::http_status("/sns/jscode2session", 500));
    let (s, v) = w.post_login(&url, &w.appid, "c").await;
    assert_eq!(record(s, v), 502);

    // Pushes: what a user wrote never reaches a log line — not from a stored push, not from one
    // encrypted for another app, not from one whose decrypted text does not parse.
    let key = weapp::push::EncodingAesKey::new(AES_KEY).unwrap();
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let message = json!({"ToUserName": "gh", "FromUserName": "oU", "CreateTime": 1, "MsgType": "text", "Content": PRIVATE, "MsgId": 5}).to_string();
    for (nonce, plain, appid, want) in [
        ("n1", message.clone(), w.appid.clone(), 200),
        ("n2", message.clone(), "wxsomeoneelse00".to_owned(), 401),
        ("n3", format!("<notxml>{PRIVATE}</x>"), w.appid.clone(), 400),
        (
            "n4",
            format!("<xml><Content>&{PRIVATE};</Content></xml>"),
            w.appid.clone(),
            400,
        ),
    ] {
        let enc = key.encrypt(&plain, &appid);
        let q = format!(
            "timestamp={ts}&nonce={nonce}&encrypt_type=aes&msg_signature={}",
            weapp::push::signature(&[PUSH_TOKEN, &ts, nonce, &enc])
        );
        let (s, _, v) = w
            .call_full(
                "POST",
                format!("{url}/v1/apps/{}/push?{q}", w.appid),
                None,
                Some(json!({"Encrypt": enc}).to_string()),
            )
            .await;
        assert_eq!(s, want, "{nonce}: {v}");
        assert!(!v.to_string().contains(PRIVATE), "{nonce}: {v}");
    }
    // The admin API: an app registered with secrets, a client created; nothing but the new
    // client's key (once) comes back, and nothing is logged.
    let (managed_appid, _) = w
        .sim
        .sim()
        .add_app(None, Some(MANAGED_SECRET.into()), false);
    let (s, v) = w
        .call(
            "POST",
            format!("{url}/v1/admin/apps"),
            Some(ADMIN_KEY),
            Some(json!({"appid": managed_appid, "secret": MANAGED_SECRET, "api_base": w.sim.url(),
                "push": {"token": MANAGED_PUSH_TOKEN, "encoding_aes_key": MANAGED_AES_KEY,
                         "webhook_url": "http://127.0.0.1:9/managed", "webhook_secret": MANAGED_WEBHOOK_SECRET}})),
        )
        .await;
    assert_eq!(record(s, v), 201);
    let (s, v) = w
        .call(
            "POST",
            format!("{url}/v1/admin/clients"),
            Some(ADMIN_KEY),
            Some(json!({"name": "managed", "apps": [managed_appid]})),
        )
        .await;
    assert_eq!(s, 201);
    let managed_key = v["key"].as_str().unwrap().to_owned();
    let (s, v) = w
        .call(
            "GET",
            format!("{url}/v1/apps/{managed_appid}/access_token"),
            Some(&managed_key),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let managed_token = v["access_token"].as_str().unwrap().to_owned();
    for path in [
        "/v1/admin/apps".to_owned(),
        format!("/v1/admin/apps/{managed_appid}"),
        "/v1/admin/clients".to_owned(),
        "/v1/admin/audit".to_owned(),
        "/v1/admin/fleet".to_owned(),
    ] {
        let (s, v) = w
            .call("GET", format!("{url}{path}"), Some(ADMIN_KEY), None)
            .await;
        assert_eq!(record(s, v.clone()), 200, "{path}: {v}");
        assert!(
            !v.to_string().contains(&managed_key),
            "{path} shows the client key"
        );
        assert!(
            !v.to_string().contains(&managed_token),
            "{path} shows the token"
        );
    }
    let (s, v) = w
        .call(
            "PATCH",
            format!("{url}/v1/admin/apps/{managed_appid}"),
            Some(ADMIN_KEY),
            Some(json!({"secret": MANAGED_SECRET, "enabled": true})),
        )
        .await;
    assert_eq!(record(s, v), 200);
    server.shutdown().await.unwrap();

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("login") && logs.contains("fetched access token"),
        "the capture works"
    );
    assert!(
        logs.lines().count() > 50,
        "TRACE from every crate was captured"
    );
    // Session keys and the app secret never appear anywhere; access tokens and client keys
    // are the broker's answers by design, but never appear in a log line.
    let never_anywhere: Vec<&str> = session_keys
        .iter()
        .map(String::as_str)
        .chain([
            w.secret.as_str(),
            MANAGED_SECRET,
            MANAGED_PUSH_TOKEN,
            MANAGED_AES_KEY,
            MANAGED_WEBHOOK_SECRET,
            ADMIN_KEY,
        ])
        .collect();
    let never_logged: Vec<&str> = never_anywhere
        .iter()
        .copied()
        .chain([
            access_token.as_str(),
            new_token.as_str(),
            KEY,
            managed_key.as_str(),
            managed_token.as_str(),
        ])
        .collect();
    for (i, body) in bodies.iter().enumerate() {
        if let Some(s) = never_anywhere.iter().find(|s| body.contains(**s)) {
            panic!("response {i} contains secret {s}: {body}");
        }
    }
    for line in logs.lines() {
        if let Some(s) = never_logged
            .iter()
            .chain([&PRIVATE])
            .find(|s| line.contains(**s))
        {
            panic!("log line contains secret {s}: {line}");
        }
    }
}
