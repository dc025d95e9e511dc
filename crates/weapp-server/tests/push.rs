//! Message push end to end: weapp-sim pushes like WeChat, the server verifies, stores and
//! answers, the outbox delivers signed webhooks at least once.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{sqlite_url, world, World, KEY};
use serde_json::{json, Map, Value};
use weapp::TokenMode;
use weapp_server::config::PushConfig;
use weapp_server::{Config, ServerHandle};
use weapp_sim::{PushFormat, PushMode, PushTarget};

const AES_KEY: &str = "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR";
const TOKEN: &str = "pushtoken123";
const WEBHOOK_SECRET: &str = "whsec_test_0123456789";

/// A webhook receiver that records what it gets and can be told to fail or to be slow.
#[derive(Clone, Default)]
struct Sink {
    received: Arc<Mutex<Vec<(String, Value)>>>,
    fail: Arc<AtomicBool>,
    delay_ms: Arc<AtomicU64>,
    url: String,
}

impl Sink {
    async fn start() -> Sink {
        let mut sink = Sink::default();
        let state = sink.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(
                move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                    let s = state.clone();
                    async move {
                        tokio::time::sleep(Duration::from_millis(
                            s.delay_ms.load(Ordering::SeqCst),
                        ))
                        .await;
                        if s.fail.load(Ordering::SeqCst) {
                            return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                        }
                        let sig = headers
                            .get("weapp-signature")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_owned();
                        let now = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .unwrap()
                            .as_secs() as i64;
                        assert!(
                            weapp_server::push::outbox::verify(
                                WEBHOOK_SECRET,
                                &sig,
                                &body,
                                now,
                                300
                            ),
                            "bad webhook signature"
                        );
                        s.received
                            .lock()
                            .unwrap()
                            .push((sig, serde_json::from_slice(&body).unwrap()));
                        axum::http::StatusCode::OK
                    }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        sink.url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        sink
    }

    fn events(&self) -> Vec<Value> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .map(|(_, v)| v.clone())
            .collect()
    }

    async fn wait_for(&self, n: usize) -> Vec<Value> {
        for _ in 0..200 {
            if self.events().len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        self.events()
    }
}

fn push_config(w: &World, database_url: &str, sink: &Sink) -> Config {
    let mut c = w.config(database_url, None, TokenMode::Stable);
    c.apps[0].push = Some(PushConfig {
        token: TOKEN.into(),
        encoding_aes_key: Some(AES_KEY.into()),
        mode: None,
        webhook_url: Some(sink.url.clone()),
        webhook_secret: Some(WEBHOOK_SECRET.into()),
        replay_window_secs: 300,
    });
    c.webhook_retry_base_ms = 20;
    c.webhook_retry_max_secs = 1;
    c.webhook_timeout_secs = 2;
    c
}

fn target(server: &ServerHandle, appid: &str, mode: PushMode, format: PushFormat) -> PushTarget {
    PushTarget {
        url: format!("{}/v1/apps/{appid}/push", server.url()),
        token: TOKEN.into(),
        encoding_aes_key: Some(AES_KEY.into()),
        mode,
        format,
    }
}

fn text(openid: &str, content: &str, msg_id: i64) -> Map<String, Value> {
    json!({"FromUserName": openid, "MsgType": "text", "Content": content, "MsgId": msg_id})
        .as_object()
        .unwrap()
        .clone()
}

async fn events_api(w: &World, server: &ServerHandle) -> Vec<Value> {
    let (s, v) = w
        .call(
            "GET",
            format!("{}/v1/apps/{}/events?after=0", server.url(), w.appid),
            Some(KEY),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    v["events"].as_array().unwrap().clone()
}

/// An app configured for plain mode (chosen explicitly: no AES key).
fn plain_config(w: &World, database_url: &str, sink: &Sink) -> Config {
    let mut c = push_config(w, database_url, sink);
    let push = c.apps[0].push.as_mut().unwrap();
    push.encoding_aes_key = None;
    push.mode = Some(weapp::push::PushMode::Plain);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mode_and_format_round_trips() {
    let w = world().await;
    let sink = Sink::start().await;
    let safe = weapp_server::spawn(push_config(&w, &sqlite_url(), &sink))
        .await
        .unwrap();
    let plain = weapp_server::spawn(plain_config(&w, &sqlite_url(), &sink))
        .await
        .unwrap();
    let mut n = 0;
    for (server, mode) in [
        (&plain, PushMode::Plain),
        (&safe, PushMode::Compatible),
        (&safe, PushMode::Safe),
    ] {
        for format in [PushFormat::Xml, PushFormat::Json] {
            let mut t = target(server, &w.appid, mode, format);
            if mode == PushMode::Plain {
                t.encoding_aes_key = None;
            }
            w.sim.sim().set_push_target(&w.appid, t).unwrap();
            n += 1;
            let content = format!("你好 {mode:?} {format:?} <&>");
            let d = w
                .sim
                .sim()
                .push(&w.appid, text("oUser", &content, 1000 + n))
                .await
                .unwrap();
            assert!(d.delivered, "{mode:?} {format:?}: {d:?}");
            assert_eq!(d.attempts.len(), 1);
            assert_eq!(d.attempts[0].body.as_deref(), Some("success"));
            let got = sink.wait_for(n as usize).await;
            let last = got.last().unwrap();
            assert_eq!(last["type"], "text");
            assert_eq!(last["appid"], w.appid.as_str());
            assert_eq!(
                last["payload"]["Content"],
                content.as_str(),
                "{mode:?} {format:?}"
            );
        }
    }
    assert_eq!(events_api(&w, &plain).await.len(), 2);
    let log = events_api(&w, &safe).await;
    assert_eq!(log.len(), 4);
    // The sink counts a delivery when it is received; the outbox marks it once the 2xx is
    // read: on a loaded machine the mark can trail the sink.
    common::within(
        std::time::Duration::from_secs(10),
        "all delivered",
        || async {
            events_api(&w, &safe)
                .await
                .iter()
                .all(|e| e["delivered"] == true)
        },
    )
    .await;

    // A safe-mode app refuses what the simulator sends in plain mode.
    w.sim
        .sim()
        .set_push_target(
            &w.appid,
            target(&safe, &w.appid, PushMode::Plain, PushFormat::Xml),
        )
        .unwrap();
    let d = w
        .sim
        .sim()
        .push(&w.appid, text("oUser", "plain to a safe app", 9999))
        .await
        .unwrap();
    assert!(!d.delivered, "{d:?}");
    assert_eq!(d.attempts[0].status, Some(401));
    assert_eq!(events_api(&w, &safe).await.len(), 4, "nothing stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wechat_retries_are_delivered_once_and_slow_webhooks_do_not_delay_the_answer() {
    let w = world().await;
    let sink = Sink::start().await;
    let server = weapp_server::spawn(push_config(&w, &sqlite_url(), &sink))
        .await
        .unwrap();
    w.sim
        .sim()
        .set_push_target(
            &w.appid,
            target(&server, &w.appid, PushMode::Safe, PushFormat::Xml),
        )
        .unwrap();
    for _ in 0..3 {
        assert!(
            w.sim
                .sim()
                .push(&w.appid, text("oUser", "same", 42))
                .await
                .unwrap()
                .delivered
        );
    }
    // Events without MsgId are de-duplicated by user, time and event.
    let popup = json!({"FromUserName": "oUser", "CreateTime": 1_700_000_000, "MsgType": "event", "Event": "subscribe_msg_popup_event",
                       "List": [{"TemplateId": "T1", "SubscribeStatusString": "accept", "PopupScene": "0"}]});
    for _ in 0..2 {
        assert!(
            w.sim
                .sim()
                .push(&w.appid, popup.as_object().unwrap().clone())
                .await
                .unwrap()
                .delivered
        );
    }
    let got = sink.wait_for(2).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(sink.events().len(), 2, "{got:?}");
    assert_eq!(events_api(&w, &server).await.len(), 2);
    assert_eq!(
        sink.events()[1]["payload"]["SubscribeMsgPopupEvent"]["List"]["TemplateId"],
        "T1"
    );

    sink.delay_ms.store(1500, Ordering::SeqCst);
    let d = w
        .sim
        .sim()
        .push(&w.appid, text("oUser", "slow", 43))
        .await
        .unwrap();
    assert!(d.delivered);
    assert!(
        d.attempts[0].elapsed_ms < 1000,
        "answered before the webhook finished: {d:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_webhook_loses_nothing_even_across_a_restart() {
    let w = world().await;
    let sink = Sink::start().await;
    let db = sqlite_url();
    let config = push_config(&w, &db, &sink);
    let server = weapp_server::spawn(config.clone()).await.unwrap();
    w.sim
        .sim()
        .set_push_target(
            &w.appid,
            target(&server, &w.appid, PushMode::Compatible, PushFormat::Json),
        )
        .unwrap();
    sink.fail.store(true, Ordering::SeqCst);
    for i in 0..4 {
        assert!(
            w.sim
                .sim()
                .push(&w.appid, text("oUser", &format!("m{i}"), 500 + i))
                .await
                .unwrap()
                .delivered
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(sink.events().is_empty());
    let (_, metrics) = w
        .call("GET", format!("{}/metrics", server.url()), None, None)
        .await;
    assert!(metrics.as_str().unwrap().contains(r#"outcome="failed""#));
    // Restart while undelivered: a new instance on the same database takes over.
    server.shutdown().await.unwrap();
    let server = weapp_server::spawn(config).await.unwrap();
    sink.fail.store(false, Ordering::SeqCst);
    let got = sink.wait_for(4).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut contents: Vec<String> = sink
        .events()
        .iter()
        .map(|e| e["payload"]["Content"].as_str().unwrap().to_owned())
        .collect();
    contents.sort();
    assert_eq!(
        contents,
        ["m0", "m1", "m2", "m3"],
        "each delivered exactly once: {got:?}"
    );
    assert!(events_api(&w, &server)
        .await
        .iter()
        .all(|e| e["delivered"] == true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_foreign_or_garbled_pushes_are_refused_and_not_stored() {
    let w = world().await;
    let sink = Sink::start().await;
    let server = weapp_server::spawn(push_config(&w, &sqlite_url(), &sink))
        .await
        .unwrap();
    let url = format!("{}/v1/apps/{}/push", server.url(), w.appid);
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let sig = |parts: &[&str]| weapp::push::signature(parts);
    let key = weapp::push::EncodingAesKey::new(AES_KEY).unwrap();
    let plain = json!({"ToUserName": "gh", "FromUserName": "oU", "CreateTime": 1, "MsgType": "text", "Content": "x", "MsgId": 1}).to_string();
    let post = |query: String, body: String| {
        let http = w.http.clone();
        let url = url.clone();
        async move {
            http.post(format!("{url}?{query}"))
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };

    // URL verification.
    let (s, echo) = w
        .call(
            "GET",
            format!(
                "{url}?signature={}&timestamp={ts}&nonce=1&echostr=abc",
                sig(&[TOKEN, &ts, "1"])
            ),
            None,
            None,
        )
        .await;
    assert_eq!((s, echo.as_str()), (200, Some("abc")));
    let (s, _) = w
        .call(
            "GET",
            format!("{url}?signature=00&timestamp={ts}&nonce=1&echostr=abc"),
            None,
            None,
        )
        .await;
    assert_eq!(s, 401);

    let enc = key.encrypt(&plain, &w.appid);
    let body = json!({"ToUserName": "gh", "Encrypt": enc}).to_string();
    let tampered = format!(
        "signature={}&timestamp={ts}&nonce=2&encrypt_type=aes&msg_signature={}",
        sig(&[TOKEN, &ts, "2"]),
        sig(&["forged", &ts, "2", &enc])
    );
    assert_eq!(post(tampered, body).await, 401, "tampered signature");

    let foreign = key.encrypt(&plain, "wxsomeoneelse0000");
    let body = json!({"ToUserName": "gh", "Encrypt": foreign}).to_string();
    let q = format!(
        "signature={}&timestamp={ts}&nonce=3&encrypt_type=aes&msg_signature={}",
        sig(&[TOKEN, &ts, "3"]),
        sig(&[TOKEN, &ts, "3", &foreign])
    );
    assert_eq!(post(q, body).await, 401, "message for another app");

    let wrong_key = weapp::push::EncodingAesKey::new("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG")
        .unwrap()
        .encrypt(&plain, &w.appid);
    let body = json!({"ToUserName": "gh", "Encrypt": wrong_key}).to_string();
    let q = format!(
        "signature={}&timestamp={ts}&nonce=4&encrypt_type=aes&msg_signature={}",
        sig(&[TOKEN, &ts, "4"]),
        sig(&[TOKEN, &ts, "4", &wrong_key])
    );
    let status = post(q, body).await;
    assert!(
        status == 400 || status == 401,
        "encrypted with another key: {status}"
    );

    // The forgery of the issue: a plaintext body carrying only the `signature` copied from a
    // URL-verification request (it signs a timestamp and a nonce, not the body). With an AES
    // key configured it is refused, stored nowhere and delivered to no webhook.
    let copied = format!(
        "signature={}&timestamp={ts}&nonce=1",
        sig(&[TOKEN, &ts, "1"])
    );
    let forged = json!({"ToUserName": "gh", "FromUserName": "oVictim", "CreateTime": 1, "MsgType": "text", "Content": "refund me", "MsgId": 77}).to_string();
    assert_eq!(
        post(copied.clone(), forged.clone()).await,
        401,
        "plaintext forgery"
    );
    // … also dressed as compatible mode with a made-up Encrypt and no msg_signature.
    let dressed = json!({"ToUserName": "gh", "FromUserName": "oVictim", "MsgType": "text", "Content": "refund me", "MsgId": 78, "Encrypt": "AAAA"}).to_string();
    assert_eq!(
        post(format!("{copied}&encrypt_type=aes"), dressed).await,
        401,
        "no msg_signature"
    );

    let garbage = "not base64 at all";
    let q = format!(
        "timestamp={ts}&nonce=5&encrypt_type=aes&msg_signature={}",
        sig(&[TOKEN, &ts, "5", garbage])
    );
    assert_eq!(
        post(q, json!({"Encrypt": garbage}).to_string()).await,
        400,
        "garbage ciphertext"
    );
    let q = format!("timestamp={ts}&nonce=5&encrypt_type=aes&msg_signature=00");
    assert_eq!(post(q, "<xml><unclosed>".into()).await, 400, "garbage body");
    let old = key.encrypt(&plain, &w.appid);
    let q = format!(
        "timestamp=1000&nonce=6&encrypt_type=aes&msg_signature={}",
        sig(&[TOKEN, "1000", "6", &old])
    );
    assert_eq!(
        post(q, json!({"Encrypt": old}).to_string()).await,
        401,
        "stale timestamp"
    );

    assert!(events_api(&w, &server).await.is_empty(), "nothing stored");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(sink.events().is_empty());
    let (s, _) = w
        .call(
            "GET",
            format!("{}/v1/apps/{}/push", server.url(), w.other_appid),
            None,
            None,
        )
        .await;
    assert_eq!(s, 404, "no push configuration for that app");
    let (s, _) = w
        .call(
            "GET",
            format!("{}/v1/apps/{}/events", server.url(), w.appid),
            None,
            None,
        )
        .await;
    assert_eq!(s, 401, "the events API needs a client key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_pushes_user_messages_and_subscribe_popups_on_its_own() {
    let w = world().await;
    let sink = Sink::start().await;
    let server = weapp_server::spawn(push_config(&w, &sqlite_url(), &sink))
        .await
        .unwrap();
    w.sim
        .sim()
        .set_push_target(
            &w.appid,
            target(&server, &w.appid, PushMode::Safe, PushFormat::Json),
        )
        .unwrap();
    let (_, openid) = w.sim.sim().login(&w.appid, None, None, false).unwrap();
    let (s, v) = w
        .call(
            "POST",
            format!("{}/_sim/user-message", w.sim.url()),
            None,
            Some(
                json!({"appid": w.appid, "openid": openid, "kind": "text", "content": "客服在吗"}),
            ),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["pushed"]["delivered"], true);
    let (s, v) = w
        .call(
            "POST",
            format!("{}/_sim/subscribe-grant", w.sim.url()),
            None,
            Some(json!({"appid": w.appid, "openid": openid, "template_id": "TPL1", "count": 2})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["remaining"], 2);
    let got = sink.wait_for(2).await;
    assert_eq!(got[0]["type"], "text");
    assert_eq!(got[0]["payload"]["Content"], "客服在吗");
    assert_eq!(got[0]["payload"]["FromUserName"], openid.as_str());
    assert_eq!(got[1]["type"], "subscribe_msg_popup_event");
    assert_eq!(got[1]["payload"]["List"][0]["TemplateId"], "TPL1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_check_verdicts_arrive_as_pushes() {
    let w = world().await;
    let sink = Sink::start().await;
    let server = weapp_server::spawn(push_config(&w, &sqlite_url(), &sink))
        .await
        .unwrap();
    w.sim
        .sim()
        .set_push_target(
            &w.appid,
            target(&server, &w.appid, PushMode::Safe, PushFormat::Json),
        )
        .unwrap();
    let (_, openid) = w.sim.sim().login(&w.appid, None, None, false).unwrap();
    let sdk = weapp::Client::builder(&w.appid, weapp::AppSecret::new(w.secret.clone()))
        .base_url(w.sim.url())
        .build()
        .unwrap();
    use weapp::api::security::{MediaType, Scene};
    let risky = sdk
        .security()
        .media_check_async(
            "https://cdn.example.com/risky.jpg",
            MediaType::Image,
            Scene::Comment,
            &openid,
        )
        .await
        .unwrap();
    let clean = sdk
        .security()
        .media_check_async(
            "https://cdn.example.com/cat.jpg",
            MediaType::Image,
            Scene::Comment,
            &openid,
        )
        .await
        .unwrap();
    let got = sink.wait_for(2).await;
    let verdict = |trace: &str| {
        got.iter()
            .find(|e| e["payload"]["trace_id"] == trace)
            .cloned()
            .unwrap_or_else(|| panic!("no verdict for {trace}: {got:?}"))
    };
    let v = verdict(&risky.trace_id);
    assert_eq!(v["type"], "wxa_media_check");
    assert_eq!(
        v["payload"]["result"],
        json!({"suggest": "risky", "label": 20002})
    );
    assert_eq!(
        verdict(&clean.trace_id)["payload"]["result"]["suggest"],
        "pass"
    );
}

/// The value of the `/metrics` sample line `series` (name and labels, exactly), if present.
async fn metric(w: &World, server: &ServerHandle, series: &str) -> Option<f64> {
    let (_, text) = w
        .call("GET", format!("{}/metrics", server.url()), None, None)
        .await;
    text.as_str()?
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushs_commit_and_its_webhook_deliveries_are_timed_in_the_metrics() {
    let w = world().await;
    let sink = Sink::start().await;
    let server = weapp_server::spawn(push_config(&w, &sqlite_url(), &sink))
        .await
        .unwrap();
    let t = target(&server, &w.appid, PushMode::Safe, PushFormat::Json);
    w.sim.sim().set_push_target(&w.appid, t).unwrap();
    let d = w
        .sim
        .sim()
        .push(&w.appid, text("oUser", "one", 1))
        .await
        .unwrap();
    assert!(d.delivered, "{d:?}");
    sink.wait_for(1).await;
    let commits = "weapp_db_commit_duration_seconds_count{operation=\"push_event\"}";
    let ok = "weapp_webhook_delivery_duration_seconds_count{outcome=\"ok\"}";
    common::within(Duration::from_secs(5), "the delivery counted", || async {
        metric(&w, &server, ok).await == Some(1.0)
    })
    .await;
    assert_eq!(metric(&w, &server, commits).await, Some(1.0));
    // A failing webhook: its attempts are timed under `failed`.
    sink.fail.store(true, Ordering::SeqCst);
    w.sim
        .sim()
        .push(&w.appid, text("oUser", "two", 2))
        .await
        .unwrap();
    let failed = "weapp_webhook_delivery_duration_seconds_count{outcome=\"failed\"}";
    common::within(Duration::from_secs(5), "a failed attempt timed", || async {
        metric(&w, &server, failed).await.is_some_and(|n| n >= 1.0)
    })
    .await;
    assert_eq!(metric(&w, &server, commits).await, Some(2.0));
    assert!(metric(
        &w,
        &server,
        "weapp_webhook_delivery_duration_seconds_bucket{le=\"+Inf\",outcome=\"failed\"}"
    )
    .await
    .is_some_and(|n| n >= 1.0));
}
