//! The push router inside a user's own axum app: verification, dispatch, encrypted replies,
//! refusals that reach no handler.

use std::sync::{Arc, Mutex};

use serde_json::json;
use weapp::push::{
    signature, EncodingAesKey, MessageKind, PushConfig, PushMessage, PushRouter, Receiver, Reply,
};

const KEY: &str = "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR";
const APPID: &str = "wx49f0ab532d5d035a";

#[tokio::test]
async fn a_user_app_receives_pushes_in_a_few_lines() {
    let seen: Arc<Mutex<Vec<PushMessage>>> = Arc::default();
    let log = seen.clone();
    let receiver = Receiver::new(PushConfig::new(APPID, "tok", Some(KEY)).unwrap())
        .with_replay_protection(300);
    let push = PushRouter::new(receiver)
        .on("text", move |m| {
            let log = log.clone();
            async move {
                log.lock().unwrap().push(m);
                Reply::TransferCustomerService
            }
        })
        .into_axum();
    // The user's own app, with the push URL nested in it.
    let app = axum::Router::new()
        .route("/", axum::routing::get(|| async { "home" }))
        .nest("/wechat/push", push);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/wechat/push", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let http = reqwest::Client::new();
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();

    let sig = signature(&["tok", &ts, "n1"]);
    let echo = http
        .get(format!(
            "{base}?signature={sig}&timestamp={ts}&nonce=n1&echostr=hello123"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(echo.text().await.unwrap(), "hello123");

    let plain = json!({"ToUserName": "gh_1", "FromUserName": "oUser", "CreateTime": 1, "MsgType": "text", "Content": "在吗", "MsgId": 9}).to_string();
    let enc = EncodingAesKey::new(KEY).unwrap().encrypt(&plain, APPID);
    let body = json!({"ToUserName": "gh_1", "Encrypt": enc}).to_string();
    let msig = signature(&["tok", &ts, "n2", &enc]);
    let url = format!(
        "{base}?signature={}&timestamp={ts}&nonce=n2&encrypt_type=aes&msg_signature={msig}",
        signature(&["tok", &ts, "n2"])
    );
    let r = http.post(&url).body(body.clone()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let reply: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    let inner = EncodingAesKey::new(KEY)
        .unwrap()
        .decrypt(reply["Encrypt"].as_str().unwrap(), APPID)
        .unwrap();
    let inner: serde_json::Value = serde_json::from_str(&inner).unwrap();
    assert_eq!(inner["MsgType"], "transfer_customer_service");
    assert_eq!(inner["ToUserName"], "oUser");
    assert_eq!(seen.lock().unwrap().len(), 1);
    assert_eq!(
        seen.lock().unwrap()[0].kind,
        MessageKind::Text {
            content: "在吗".into(),
            msg_id: 9
        }
    );

    // The same request again is a replay; a forged one is not authentic: neither reaches the handler.
    assert_eq!(
        http.post(&url)
            .body(body.clone())
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let forged = url.replace(&msig, &signature(&["nope", &ts, "n2", &enc]));
    assert_eq!(
        http.post(&forged).body(body).send().await.unwrap().status(),
        401
    );
    let r = http
        .post(format!(
            "{base}?signature={}&timestamp={ts}&nonce=n3",
            signature(&["tok", &ts, "n3"])
        ))
        .body("garbage")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(seen.lock().unwrap().len(), 1);
}
