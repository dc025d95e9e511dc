//! Third-party platforms in the service, against the simulator: the ticket WeChat pushes and
//! every merchant's refresh token are stored, sealed, in the database — an instance that dies
//! and a Redis that is flushed lose neither (a new instance gets the component token and acts
//! for the merchant without a new ticket or a re-authorization); forged pushes are refused;
//! a de-authorization erases the refresh token.

mod common;

use std::time::Duration;

use base64::Engine;
use common::world;
use serde_json::{json, Value};
use weapp::TokenMode;
use weapp_server::config::{ClientConfig, PlatformConfig};
use weapp_server::platforms::ReconcileError;

const BACKEND_KEY: &str = "platform-backend-key-0123456789";
use weapp_test_support::{PgDatabase, RedisServer};

/// Waits (up to 10 s) until `f` is true.
async fn until<F, Fut>(what: &str, f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    common::within(Duration::from_secs(10), what, f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tickets_and_refresh_tokens_survive_dead_instances_and_a_flushed_redis() {
    let w = world().await;
    let db = PgDatabase::create().await;
    let mut redis = RedisServer::start();
    let component_appid = "wxplatform0000001";
    let secret = "platform-secret-0123456789";
    let token = "platformtoken";
    let aes = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);
    let aes = aes.trim_end_matches('=').to_owned();
    let mut config = w.config(db.url(), Some(redis.url()), TokenMode::Stable);
    config.platforms = vec![PlatformConfig {
        component_appid: component_appid.into(),
        secret: Some(secret.into()),
        secret_env: None,
        token: token.into(),
        encoding_aes_key: aes.clone().into(),
        api_base: w.sim.url().into(),
        webhook_url: None,
        webhook_secret: None,
    }];
    config.clients.push(ClientConfig {
        name: "platform-backend".into(),
        key: Some(BACKEND_KEY.into()),
        key_env: None,
        key_sha256: None,
        apps: vec!["*".into()],
        scopes: Some(vec!["token:read".into(), "events:read".into()]),
    });
    let a = weapp_server::spawn(config.clone()).await.unwrap();
    // Another instance of the fleet (WeChat pushes to one URL: A's).
    let c = weapp_server::spawn(config.clone()).await.unwrap();
    // WeChat learns the platform's authorization-event URL: a ticket arrives at once.
    let reg: Value = w
        .http
        .post(format!("{}/_sim/platforms", w.sim.url()))
        .json(&json!({"component_appid": component_appid, "secret": secret, "token": token,
            "encoding_aes_key": aes, "event_url": format!("{}/v1/platforms/{component_appid}/events", a.url()),
            "message_url": format!("{}/v1/platforms/{component_appid}/apps/$APPID$/push", a.url())}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(reg["component_appid"], component_appid);
    let store = a.state().store.clone();
    until("the ticket stored", || {
        let store = store.clone();
        async move {
            store
                .platform_ticket(component_appid)
                .await
                .unwrap()
                .is_some()
        }
    })
    .await;
    let ticket = w.sim.sim().latest_ticket(component_appid).unwrap();
    let sealed = store
        .platform_ticket(component_appid)
        .await
        .unwrap()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&sealed).contains(&ticket),
        "sealed, not in the clear"
    );

    // A merchant authorizes: the refresh token is stored before `success` is answered.
    let platform = a.state().platforms.platform(component_appid).unwrap();
    let component = &platform.component;
    let pre = component.pre_auth_code().await.unwrap();
    let (merchant, _) = w.sim.sim().add_app(None, None, false);
    let v: Value = w
        .http
        .post(format!(
            "{}/_sim/platforms/{component_appid}/authorize",
            w.sim.url()
        ))
        .json(&json!({"pre_auth_code": pre.pre_auth_code, "authorizer_appid": merchant, "redirect_uri": "https://x"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["push"]["delivered"], true, "{v}");
    assert_eq!(
        v["push"]["attempts"][0]["body"], "success",
        "answered once stored: {v}"
    );
    let rows = store.platform_authorizers(component_appid).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert!(rows[0].authorized && rows[0].refresh_sealed.is_some());
    assert_eq!(rows[0].authorizer_appid, merchant);
    let list = component.authorizer_list(0, 10).await.unwrap();
    let refresh = list.list[0]
        .refresh_token
        .as_ref()
        .unwrap()
        .expose()
        .to_owned();
    assert!(!String::from_utf8_lossy(rows[0].refresh_sealed.as_ref().unwrap()).contains(&refresh));
    assert!(component
        .authorizer(&merchant)
        .unwrap()
        .subscribe()
        .categories()
        .await
        .is_ok());

    // The merchant is served like an app: the broker hands out its authorizer token (on the
    // instance that got the event at once, on the other within the registry poll), and its
    // users log in through the platform.
    let broker = |base: String| {
        let http = w.http.clone();
        let merchant = merchant.clone();
        async move {
            let r = http
                .get(format!("{base}/v1/apps/{merchant}/access_token"))
                .bearer_auth(BACKEND_KEY)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (s, v) = broker(a.url().to_owned()).await;
    assert_eq!(s, 200, "{v}");
    let works = w.call_with_token(v["access_token"].as_str().unwrap()).await;
    assert_eq!(works["errcode"], 0, "{works}");
    let c_url = c.url().to_owned();
    until("the other instance serves the merchant", || {
        let b = broker(c_url.clone());
        async move { b.await.0 == 200 }
    })
    .await;
    let (code, openid) = w.sim.sim().login(&merchant, None, None, false).unwrap();
    let (s, v) = w.post_login(a.url(), &merchant, &code).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["openid"], openid.as_str());
    assert!(v["access_token"].is_string());
    // The mirror refuses a merchant's mini program: it has no secret here.
    let (s, v) = w
        .call(
            "GET",
            format!(
                "{}/cgi-bin/token?grant_type=client_credential&appid={merchant}&secret=x",
                a.url()
            ),
            None,
            None,
        )
        .await;
    assert_ne!(v["errcode"], 0, "{s} {v}");
    // The merchant's users' messages reach the platform's message URL and land in the
    // merchant's event log.
    let v: Value = w
        .http
        .post(format!("{}/_sim/user-message", w.sim.url()))
        .json(&json!({"appid": merchant, "openid": openid, "kind": "text", "content": "商家你好"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["pushed"]["delivered"], true, "{v}");
    let events: Value = w
        .http
        .get(format!("{}/v1/apps/{merchant}/events", a.url()))
        .bearer_auth(BACKEND_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(events.to_string().contains("商家你好"), "{events}");
    // The merchant authorizes again with another permission set (updateauthorized): WeChat
    // issues a new refresh token and kills the merchant's authorizer tokens at once. The stored
    // refresh token is the new one, and the broker hands out a live token at once.
    let (_, old_token) = broker(a.url().to_owned()).await;
    let before = store.platform_authorizers(component_appid).await.unwrap()[0]
        .refresh_sealed
        .clone();
    let pre = component.pre_auth_code().await.unwrap();
    let v: Value = w
        .http
        .post(format!(
            "{}/_sim/platforms/{component_appid}/authorize",
            w.sim.url()
        ))
        .json(
            &json!({"pre_auth_code": pre.pre_auth_code, "authorizer_appid": merchant,
            "redirect_uri": "https://x", "func_ids": [17, 18, 19]}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["push"]["delivered"], true, "{v}");
    assert_eq!(v["push"]["message"]["InfoType"], "updateauthorized", "{v}");
    let row = store.platform_authorizers(component_appid).await.unwrap()[0].clone();
    assert_ne!(row.refresh_sealed, before);
    let listed = component.authorizer_list(0, 10).await.unwrap().list[0]
        .refresh_token
        .as_ref()
        .unwrap()
        .expose()
        .to_owned();
    assert_ne!(listed, refresh, "WeChat rotated it");
    let opened = a
        .state()
        .keys
        .keyring
        .open(
            row.refresh_sealed.as_deref().unwrap(),
            &weapp_server::platforms::runtime::refresh_aad(component_appid, &merchant),
        )
        .unwrap();
    assert_eq!(opened, listed.as_bytes(), "the stored one is the new one");
    let (s, v) = broker(a.url().to_owned()).await;
    assert_eq!(s, 200, "{v}");
    assert_ne!(v["access_token"], old_token["access_token"]);
    let works = w.call_with_token(v["access_token"].as_str().unwrap()).await;
    assert_eq!(works["errcode"], 0, "a live token at once: {works}");

    // Another platform's path for the merchant: 404.
    let wrong = w
        .http
        .post(format!(
            "{}/v1/platforms/wxother/apps/{merchant}/push",
            a.url()
        ))
        .body("<xml/>")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 404);
    drop(c);

    // A forged push is refused and changes nothing.
    let forged = w
        .http
        .post(format!(
            "{}/v1/platforms/{component_appid}/events?timestamp=1&nonce=2&encrypt_type=aes&msg_signature=00",
            a.url()
        ))
        .body("<xml><AppId>x</AppId><Encrypt>AAAA</Encrypt></xml>")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 400);
    let unknown = w
        .http
        .post(format!("{}/v1/platforms/wxnope/events", a.url()))
        .body("<xml/>")
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    assert_eq!(
        store
            .platform_ticket(component_appid)
            .await
            .unwrap()
            .unwrap(),
        sealed
    );

    // The instance dies, Redis loses everything: a new instance gets a component token from
    // the stored ticket and acts for the merchant with the stored refresh token.
    drop(a);
    redis.restart();
    let b = weapp_server::spawn(config).await.unwrap();
    let platform = b.state().platforms.platform(component_appid).unwrap();
    let component = &platform.component;
    let issued = w.sim.sim().component_tokens_issued(component_appid);
    component.component_token().await.unwrap();
    assert_eq!(
        w.sim.sim().component_tokens_issued(component_appid),
        issued + 1,
        "a new token from the stored ticket (the cached one went with Redis)"
    );
    assert!(component
        .authorizer(&merchant)
        .unwrap()
        .subscribe()
        .categories()
        .await
        .is_ok());

    // A refresh token lost here (a bad restore, say) is restored from WeChat's authorizer list.
    let store = b.state().store.clone();
    store
        .deauthorize_platform_authorizer(component_appid, &merchant, 0)
        .await
        .unwrap();
    b.state().platforms.sync_authorizers().await.unwrap();
    assert_eq!(broker(b.url().to_owned()).await.0, 404, "lost: not served");
    let r = b
        .state()
        .platforms
        .reconcile_platform(component_appid)
        .await
        .unwrap();
    assert_eq!((r.restored, r.deauthorized), (1, 0));
    assert_eq!(
        broker(b.url().to_owned()).await.0,
        200,
        "restored and served"
    );
    assert!(store.platform_authorizers(component_appid).await.unwrap()[0].authorized);

    // (The new instance listens elsewhere: WeChat's event URL follows it, credentials kept.)
    w.http
        .post(format!("{}/_sim/platforms", w.sim.url()))
        .json(&json!({"component_appid": component_appid,
            "event_url": format!("{}/v1/platforms/{component_appid}/events", b.url())}))
        .send()
        .await
        .unwrap();
    // De-authorization: the refresh token is erased.
    w.http
        .post(format!(
            "{}/_sim/platforms/{component_appid}/deauthorize",
            w.sim.url()
        ))
        .json(&json!({"authorizer_appid": merchant}))
        .send()
        .await
        .unwrap();
    let store = b.state().store.clone();
    until("the de-authorization stored", || {
        let store = store.clone();
        async move { !store.platform_authorizers(component_appid).await.unwrap()[0].authorized }
    })
    .await;
    let rows = store.platform_authorizers(component_appid).await.unwrap();
    assert!(rows[0].refresh_sealed.is_none());
    // No longer served: 404 from the broker.
    let (s, v) = broker(b.url().to_owned()).await;
    assert_eq!(s, 404, "{v}");
}

#[tokio::test]
async fn a_missed_deauthorization_is_applied_by_the_reconciliation() {
    let w = world().await;
    let component_appid = "wxplatform0000002";
    let (secret, token) = ("platform-secret-2", "platformtoken2");
    let aes = base64::engine::general_purpose::STANDARD.encode([5u8; 32]);
    let aes = aes.trim_end_matches('=').to_owned();
    // The platform's webhook: authorization events arrive there, signed.
    let hooks: std::sync::Arc<std::sync::Mutex<Vec<Value>>> = Default::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_url = format!("http://{}/hook", listener.local_addr().unwrap());
    let got = hooks.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let got = got.clone();
                async move {
                    let sig = headers["weapp-signature"].to_str().unwrap().to_owned();
                    let now = chrono_free_now();
                    assert!(weapp_server::push::outbox::verify(
                        "platform-hook-secret-0123",
                        &sig,
                        &body,
                        now,
                        300
                    ));
                    got.lock()
                        .unwrap()
                        .push(serde_json::from_slice(&body).unwrap());
                    "ok"
                }
            },
        ),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    let mut config = w.config(&common::sqlite_url(), None, TokenMode::Stable);
    config.webhook_retry_base_ms = 50;
    config.platforms = vec![PlatformConfig {
        component_appid: component_appid.into(),
        secret: Some(secret.into()),
        secret_env: None,
        token: token.into(),
        encoding_aes_key: aes.clone().into(),
        api_base: w.sim.url().into(),
        webhook_url: Some(hook_url),
        webhook_secret: Some("platform-hook-secret-0123".into()),
    }];
    let server = weapp_server::spawn(config).await.unwrap();
    let register = |event_url: String| {
        let http = w.http.clone();
        let body = json!({"component_appid": component_appid, "secret": secret, "token": token,
            "encoding_aes_key": aes, "event_url": event_url});
        let url = format!("{}/_sim/platforms", w.sim.url());
        async move { http.post(url).json(&body).send().await.unwrap() }
    };
    register(format!(
        "{}/v1/platforms/{component_appid}/events",
        server.url()
    ))
    .await;
    let store = server.state().store.clone();
    until("the ticket stored", || {
        let store = store.clone();
        async move {
            store
                .platform_ticket(component_appid)
                .await
                .unwrap()
                .is_some()
        }
    })
    .await;
    let platform = server.state().platforms.platform(component_appid).unwrap();
    let component = &platform.component;
    let pre = component.pre_auth_code().await.unwrap();
    let (merchant, _) = w.sim.sim().add_app(None, None, false);
    w.http
        .post(format!(
            "{}/_sim/platforms/{component_appid}/authorize",
            w.sim.url()
        ))
        .json(&json!({"pre_auth_code": pre.pre_auth_code, "authorizer_appid": merchant, "redirect_uri": "https://x"}))
        .send()
        .await
        .unwrap();
    assert!(server.state().broker.app(&merchant).is_some());
    // The platform's webhook hears of it (without the authorization code).
    until("the authorized webhook", || {
        let hooks = hooks.clone();
        async move { !hooks.lock().unwrap().is_empty() }
    })
    .await;
    let hook = hooks.lock().unwrap()[0].clone();
    assert_eq!(hook["type"], "authorized", "{hook}");
    assert_eq!(hook["appid"], component_appid);
    assert_eq!(hook["payload"]["authorizer_appid"], merchant.as_str());
    assert!(!hook.to_string().contains("queryauthcode"), "{hook}");
    // The `unauthorized` push is lost (the event URL is unreachable at that moment).
    register("http://127.0.0.1:9/unreachable".into()).await;
    let v: Value = w
        .http
        .post(format!(
            "{}/_sim/platforms/{component_appid}/deauthorize",
            w.sim.url()
        ))
        .json(&json!({"authorizer_appid": merchant}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["push"]["delivered"], false, "{v}");
    assert!(
        server.state().broker.app(&merchant).is_some(),
        "still served"
    );
    // A listing that comes back short (an answer without its list) de-authorizes no one.
    w.sim.sim().add_fault(
        weapp_sim::Fault::body(
            "/cgi-bin/component/api_get_authorizer_list",
            r#"{"total_count": 7}"#,
        )
        .times(1),
    );
    let e = server
        .state()
        .platforms
        .reconcile_platform(component_appid)
        .await
        .unwrap_err();
    assert!(
        matches!(e, ReconcileError::Incomplete { total: 7, .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("incomplete"), "{e}");
    assert!(
        server.state().broker.app(&merchant).is_some(),
        "still served"
    );
    // A list that changes while it is paged (its total moves between pages: a merchant may
    // have fallen between two pages, and the first page's entries are stale) reconciles
    // nothing: no refresh token is replaced, no one de-authorized.
    let before = store.platform_authorizers(component_appid).await.unwrap();
    w.sim.sim().add_fault(
        weapp_sim::Fault::body(
            "/cgi-bin/component/api_get_authorizer_list",
            json!({"total_count": 2, "list": [{"authorizer_appid": merchant,
                "refresh_token": "a-stale-refresh-token", "auth_time": 1}]})
            .to_string(),
        )
        .times(1),
    );
    let e = server
        .state()
        .platforms
        .reconcile_platform(component_appid)
        .await
        .unwrap_err();
    assert!(matches!(e, ReconcileError::ListChanged), "{e:?}");
    assert!(e.to_string().contains("changed while it was read"), "{e}");
    let after = store.platform_authorizers(component_appid).await.unwrap();
    assert_eq!(
        after[0].refresh_sealed, before[0].refresh_sealed,
        "not replaced"
    );
    assert!(after[0].authorized);
    assert!(
        server.state().broker.app(&merchant).is_some(),
        "still served"
    );
    let r = server
        .state()
        .platforms
        .reconcile_platform(component_appid)
        .await
        .unwrap();
    assert_eq!((r.restored, r.deauthorized), (0, 1));
    assert!(
        server.state().broker.app(&merchant).is_none(),
        "no longer served"
    );
    let rows = store.platform_authorizers(component_appid).await.unwrap();
    assert!(!rows[0].authorized && rows[0].refresh_sealed.is_none());
}

fn chrono_free_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A proxy in front of the server that keeps a copy of every request it forwards (what a proxy
/// log or a tap holds): `(path and query, body)` — the material of a replay.
struct Tap {
    url: String,
    seen: std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>,
}

async fn tap(target: String) -> Tap {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen: std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>> = Default::default();
    let kept = seen.clone();
    let http = reqwest::Client::new();
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri, body: String| {
        let (kept, http, target) = (kept.clone(), http.clone(), target.clone());
        async move {
            let path = uri.path_and_query().unwrap().to_string();
            kept.lock().unwrap().push((path.clone(), body.clone()));
            let r = http
                .post(format!("{target}{path}"))
                .header("content-type", "text/xml")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = axum::http::StatusCode::from_u16(r.status().as_u16()).unwrap();
            (status, r.text().await.unwrap())
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    Tap { url, seen }
}

/// Replays a captured platform push at `base`: `(status, body)`.
async fn replay(w: &common::World, base: &str, captured: &(String, String)) -> (u16, Value) {
    let r = w
        .http
        .post(format!("{base}{}", captured.0))
        .header("content-type", "text/xml")
        .body(captured.1.clone())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Captured ticket and `authorized` pushes replayed at the event URL — at the instance that
/// took them and, in a fleet, at another — are refused as app pushes' replays are (401), and
/// make no call upstream: no `api_query_auth`, no `api_authorizer_token`, the merchant's token
/// unchanged.
async fn captured_platform_events_replayed_are_refused(
    database_url: &str,
    redis_url: Option<String>,
) {
    let w = world().await;
    let component_appid = "wxplatform0000003";
    let (secret, token) = ("platform-secret-3", "platformtoken3");
    let aes = base64::engine::general_purpose::STANDARD.encode([3u8; 32]);
    let aes = aes.trim_end_matches('=').to_owned();
    let fleet = redis_url.is_some();
    let mut config = w.config(database_url, redis_url, TokenMode::Stable);
    config.platforms = vec![PlatformConfig {
        component_appid: component_appid.into(),
        secret: Some(secret.into()),
        secret_env: None,
        token: token.into(),
        encoding_aes_key: aes.clone().into(),
        api_base: w.sim.url().into(),
        webhook_url: None,
        webhook_secret: None,
    }];
    config.clients.push(ClientConfig {
        name: "platform-backend".into(),
        key: Some(BACKEND_KEY.into()),
        key_env: None,
        key_sha256: None,
        apps: vec!["*".into()],
        scopes: Some(vec!["token:read".into()]),
    });
    let a = weapp_server::spawn(config.clone()).await.unwrap();
    // Another instance of the fleet shares the database and Redis; alone, A replays at A.
    let b = if fleet {
        Some(weapp_server::spawn(config).await.unwrap())
    } else {
        None
    };
    let targets: Vec<String> = [Some(a.url().to_owned()), b.as_ref().map(|b| b.url().into())]
        .into_iter()
        .flatten()
        .collect();
    // WeChat pushes to A through a proxy that keeps a copy of every request.
    let tap = tap(a.url().to_owned()).await;
    w.http
        .post(format!("{}/_sim/platforms", w.sim.url()))
        .json(&json!({"component_appid": component_appid, "secret": secret, "token": token,
            "encoding_aes_key": aes, "event_url": format!("{}/v1/platforms/{component_appid}/events", tap.url)}))
        .send()
        .await
        .unwrap();
    let store = a.state().store.clone();
    until("the ticket stored", || {
        let store = store.clone();
        async move {
            store
                .platform_ticket(component_appid)
                .await
                .unwrap()
                .is_some()
        }
    })
    .await;
    let platform = a.state().platforms.platform(component_appid).unwrap();
    let pre = platform.component.pre_auth_code().await.unwrap();
    let (merchant, _) = w.sim.sim().add_app(None, None, false);
    let v: Value = w
        .http
        .post(format!(
            "{}/_sim/platforms/{component_appid}/authorize",
            w.sim.url()
        ))
        .json(&json!({"pre_auth_code": pre.pre_auth_code, "authorizer_appid": merchant, "redirect_uri": "https://x"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["push"]["attempts"][0]["body"], "success", "{v}");
    let authorized = tap.seen.lock().unwrap().last().unwrap().clone();
    assert!(authorized.0.contains("msg_signature="), "{authorized:?}");
    let broker = |base: String| {
        let http = w.http.clone();
        let merchant = merchant.clone();
        async move {
            let r = http
                .get(format!("{base}/v1/apps/{merchant}/access_token"))
                .bearer_auth(BACKEND_KEY)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (s, before) = broker(a.url().to_owned()).await;
    assert_eq!(s, 200, "{before}");
    let query_auth = "/cgi-bin/component/api_query_auth";
    let authorizer_token = "/cgi-bin/component/api_authorizer_token";
    let calls = |path: &str| w.sim.sim().calls(path);
    let (queried, refreshed) = (calls(query_auth), calls(authorizer_token));
    // Replayed three times, at each instance.
    let mut answers = Vec::new();
    for base in &targets {
        for _ in 0..3 {
            answers.push((base.clone(), replay(&w, base, &authorized).await));
        }
    }
    assert_eq!(calls(query_auth), queried, "no api_query_auth for a replay");
    assert_eq!(
        calls(authorizer_token),
        refreshed,
        "no api_authorizer_token for a replay"
    );
    let (s, after) = broker(a.url().to_owned()).await;
    assert_eq!(s, 200, "{after}");
    assert_eq!(
        after["access_token"], before["access_token"],
        "the merchant's token was not rotated"
    );
    assert_eq!(
        w.call_with_token(after["access_token"].as_str().unwrap())
            .await["errcode"],
        0
    );
    for (base, (s, v)) in answers {
        assert_eq!(s, 401, "a replay at {base}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains("replay"),
            "{v}"
        );
    }

    // A ticket: captured, then a newer one; the captured one replayed is refused too.
    let v: Value = w
        .http
        .post(format!(
            "{}/_sim/platforms/{component_appid}/ticket",
            w.sim.url()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["push"]["attempts"][0]["body"], "success", "{v}");
    let ticket_push = tap.seen.lock().unwrap().last().unwrap().clone();
    for base in &targets {
        for _ in 0..3 {
            let (s, v) = replay(&w, base, &ticket_push).await;
            assert_eq!(s, 401, "a replayed ticket at {base}: {v}");
        }
    }
    let opened = a
        .state()
        .keys
        .keyring
        .open(
            &store
                .platform_ticket(component_appid)
                .await
                .unwrap()
                .unwrap(),
            &weapp_server::platforms::runtime::ticket_aad(component_appid),
        )
        .unwrap();
    assert_eq!(
        String::from_utf8(opened).unwrap(),
        w.sim.sim().latest_ticket(component_appid).unwrap()
    );
    // WeChat's own pushes keep getting through (each has its own nonce).
    let v: Value = w
        .http
        .post(format!(
            "{}/_sim/platforms/{component_appid}/ticket",
            w.sim.url()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["push"]["attempts"][0]["body"], "success", "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captured_platform_events_replayed_are_refused_on_one_instance() {
    captured_platform_events_replayed_are_refused(&common::sqlite_url(), None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captured_platform_events_replayed_are_refused_across_a_fleet_sharing_redis() {
    let db = PgDatabase::create().await;
    let redis = RedisServer::start();
    captured_platform_events_replayed_are_refused(db.url(), Some(redis.url())).await;
}
