//! Third-party platforms managed at runtime and the fleet's treatment of them: a platform
//! registered through the admin API on one instance is served by another within two seconds
//! (its secrets sealed, never shown); disabling or deleting it stops its URLs and its
//! merchants, re-registering it resumes them without a re-authorization; a merchant of two
//! platforms stays served when it leaves one; an `unauthorized` push older than the merchant's
//! authorization (a replay) erases nothing; the nightly reconciliation runs once per period
//! for the fleet; refresh tokens and tickets, and managed apps' and platforms' secrets, move
//! to a new data key; a merchant sync the database fails (an instance refused the table) is
//! retried at the next poll.

mod common;

use std::time::{Duration, Instant};

use base64::Engine;
use common::{within, world};
use serde_json::{json, Value};
use weapp::TokenMode;
use weapp_server::config::{AdminConfig, ClientConfig, PlatformConfig};
use weapp_test_support::{PgDatabase, RedisServer};

const ADMIN: &str = "admin-key-platforms-0123456789abc";
const BACKEND_KEY: &str = "platform-admin-backend-key-0123";

fn admins() -> Vec<AdminConfig> {
    vec![AdminConfig {
        name: "ops".into(),
        key: Some(ADMIN.into()),
        key_env: None,
        key_sha256: None,
    }]
}

fn backend() -> ClientConfig {
    ClientConfig {
        name: "platform-backend".into(),
        key: Some(BACKEND_KEY.into()),
        key_env: None,
        key_sha256: None,
        apps: vec!["*".into()],
        scopes: Some(vec!["token:read".into()]),
    }
}

fn aes_key(byte: u8) -> String {
    base64::engine::general_purpose::STANDARD
        .encode([byte; 32])
        .trim_end_matches('=')
        .to_owned()
}

async fn broker_status(http: &reqwest::Client, base: &str, appid: &str) -> u16 {
    http.get(format!("{base}/v1/apps/{appid}/access_token"))
        .bearer_auth(BACKEND_KEY)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn events_status(http: &reqwest::Client, base: &str, component_appid: &str) -> u16 {
    http.post(format!("{base}/v1/platforms/{component_appid}/events"))
        .body("<xml/>")
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Waits (up to 2 s: the registry poll and a margin) until `base` answers `events` at the
/// platform's event URL and `broker` for `merchant`'s token (each when given); how long it took.
async fn answers_within_2s(
    http: &reqwest::Client,
    base: &str,
    component_appid: &str,
    events: Option<u16>,
    broker: Option<(&str, u16)>,
    what: &str,
) -> Duration {
    within(Duration::from_secs(2), what, || async move {
        if let Some(status) = events {
            if events_status(http, base, component_appid).await != status {
                return false;
            }
        }
        match broker {
            Some((merchant, status)) => broker_status(http, base, merchant).await == status,
            None => true,
        }
    })
    .await
}

/// The simulator (WeChat) learns a platform and where its events go.
async fn register_in_sim(
    w: &common::World,
    component_appid: &str,
    secret: &str,
    token: &str,
    aes: &str,
    server: &str,
) {
    let r = w
        .http
        .post(format!("{}/_sim/platforms", w.sim.url()))
        .json(
            &json!({"component_appid": component_appid, "secret": secret, "token": token,
            "encoding_aes_key": aes,
            "event_url": format!("{server}/v1/platforms/{component_appid}/events"),
            "message_url": format!("{server}/v1/platforms/{component_appid}/apps/$APPID$/push")}),
        )
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
}

/// A merchant scans the authorization page of `component_appid` (a pre-auth code from the
/// server's platform) and WeChat pushes `authorized`; returns the merchant's appid.
async fn authorize(
    w: &common::World,
    server: &weapp_server::ServerHandle,
    component_appid: &str,
    merchant: Option<&str>,
) -> String {
    let platform = server.state().platforms.platform(component_appid).unwrap();
    let pre = platform.component.pre_auth_code().await.unwrap();
    let merchant = match merchant {
        Some(m) => m.to_owned(),
        None => w.sim.sim().add_app(None, None, false).0,
    };
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
    merchant
}

async fn ticket_stored(server: &weapp_server::ServerHandle, component_appid: &str) {
    let store = server.state().store.clone();
    within(Duration::from_secs(10), "the ticket stored", || {
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn platforms_registered_at_runtime_reach_every_instance_and_keep_their_merchants() {
    let w = world().await;
    let db = PgDatabase::create().await;
    let redis = RedisServer::start();
    let mut config = w.config(db.url(), Some(redis.url()), TokenMode::Stable);
    config.admins = admins();
    config.clients.push(backend());
    let a = weapp_server::spawn(config.clone()).await.unwrap();
    let b = weapp_server::spawn(config.clone()).await.unwrap();
    let (a_url, b_url) = (a.url().to_owned(), b.url().to_owned());
    let c = "wxruntimeplatform01";
    let (secret, token, aes) = (
        "runtime-platform-secret-0123",
        "rtplatformtoken",
        aes_key(3),
    );
    let hook_secret = "runtime-platform-hook-secret";
    let create = json!({"component_appid": c, "secret": secret, "token": token,
        "encoding_aes_key": aes, "api_base": w.sim.url(),
        "webhook_url": "http://127.0.0.1:9/hook", "webhook_secret": hook_secret});

    // Refused: no admin key, a broker key, a malformed key, a bad appid, an unknown field.
    let (s, _) = w
        .call(
            "POST",
            format!("{a_url}/v1/admin/platforms"),
            None,
            Some(create.clone()),
        )
        .await;
    assert_eq!(s, 401);
    let (s, _) = w
        .call(
            "POST",
            format!("{a_url}/v1/admin/platforms"),
            Some(BACKEND_KEY),
            Some(create.clone()),
        )
        .await;
    assert_eq!(s, 401);
    for (field, bad) in [
        ("encoding_aes_key", json!("short")),
        ("component_appid", json!("wx bad!")),
        ("api_base", json!("ftp://x")),
        ("token", json!("")),
        ("webhook_secret", Value::Null),
    ] {
        let mut body = create.clone();
        body[field] = bad;
        let (s, v) = w
            .call(
                "POST",
                format!("{a_url}/v1/admin/platforms"),
                Some(ADMIN),
                Some(body),
            )
            .await;
        assert_eq!(s, 400, "{field}: {v}");
        assert!(v["error"]["message"].is_string(), "{v}");
    }
    let mut body = create.clone();
    body["extra"] = json!(1);
    let (s, _) = w
        .call(
            "POST",
            format!("{a_url}/v1/admin/platforms"),
            Some(ADMIN),
            Some(body),
        )
        .await;
    assert_eq!(s, 400);
    assert_eq!(
        events_status(&w.http, &b_url, c).await,
        404,
        "nothing created"
    );

    // Registered on A…
    let (s, v) = w
        .call(
            "POST",
            format!("{a_url}/v1/admin/platforms"),
            Some(ADMIN),
            Some(create.clone()),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["source"], "managed");
    assert_eq!(v["served"], true);
    let (s, _) = w
        .call(
            "POST",
            format!("{a_url}/v1/admin/platforms"),
            Some(ADMIN),
            Some(create.clone()),
        )
        .await;
    assert_eq!(s, 409, "it exists");
    // …served by B within two seconds (its events URL answers, not 404).
    let took =
        answers_within_2s(&w.http, &b_url, c, Some(400), None, "B serves the platform").await;
    println!("platform registered on A served by B after {took:?}");

    // WeChat pushes its ticket to B; a merchant authorizes (through B); A serves it.
    register_in_sim(&w, c, secret, token, &aes, &b_url).await;
    ticket_stored(&b, c).await;
    let merchant = authorize(&w, &b, c, None).await;
    assert_eq!(broker_status(&w.http, &b_url, &merchant).await, 200);
    answers_within_2s(
        &w.http,
        &a_url,
        c,
        None,
        Some((&merchant, 200)),
        "A serves the merchant",
    )
    .await;

    // The admin API shows it, its merchant, never a secret.
    let (s, list) = w
        .call(
            "GET",
            format!("{a_url}/v1/admin/platforms"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(s, 200);
    let shown = list["platforms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["component_appid"] == c)
        .cloned()
        .unwrap();
    assert_eq!(shown["merchants"], 1, "{shown}");
    assert_eq!(shown["has_ticket"], true);
    let (s, m) = w
        .call(
            "GET",
            format!("{a_url}/v1/admin/platforms/{c}/merchants?limit=10"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        m["merchants"][0]["authorizer_appid"],
        merchant.as_str(),
        "{m}"
    );
    assert_eq!(m["merchants"][0]["served"], true);
    let (_, audit) = w
        .call("GET", format!("{a_url}/v1/admin/audit"), Some(ADMIN), None)
        .await;
    assert!(audit.to_string().contains("platform.create"), "{audit}");
    let ticket = w.sim.sim().latest_ticket(c).unwrap();
    for answer in [&list, &m, &audit, &v] {
        let text = answer.to_string();
        for secret_value in [secret, token, aes.as_str(), hook_secret, ticket.as_str()] {
            assert!(!text.contains(secret_value), "a secret in {text}");
        }
    }
    // Sealed in the database, bound to the platform.
    let rec = a.state().store.managed_platform(c).await.unwrap().unwrap();
    let sealed = rec.sealed.unwrap();
    assert!(!String::from_utf8_lossy(&sealed).contains(secret));

    // A mini program registered as a managed app that then authorizes the platform stays the
    // app (its definition wins); deleted, it is served through the platform on every instance.
    let (both, both_secret) = w.sim.sim().add_app(None, None, false);
    let (s, v) = w
        .call(
            "POST",
            format!("{a_url}/v1/admin/apps"),
            Some(ADMIN),
            Some(json!({"appid": both, "secret": both_secret, "api_base": w.sim.url()})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    within(Duration::from_secs(2), "B serves the managed app", || {
        let served = b.state().broker.app(&both).is_some();
        async move { served }
    })
    .await;
    authorize(&w, &b, c, Some(&both)).await;
    let platform_serves = |s: &weapp_server::ServerHandle| {
        s.state()
            .broker
            .app(&both)
            .is_some_and(|a| a.platform.as_deref() == Some(c))
    };
    assert!(!platform_serves(&b), "the app's definition wins");
    let (s, _) = w
        .call(
            "DELETE",
            format!("{a_url}/v1/admin/apps/{both}"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(s, 204);
    within(
        Duration::from_secs(2),
        "A and B serve it through the platform",
        || {
            let served = platform_serves(&a) && platform_serves(&b);
            async move { served }
        },
    )
    .await;
    assert_eq!(broker_status(&w.http, &b_url, &both).await, 200);
    // A platform cannot take an app's appid, nor an app a platform's.
    let mut clash = json!({"component_appid": w.appid, "secret": "s", "token": "tok",
        "encoding_aes_key": aes, "api_base": w.sim.url()});
    let (s, v) = w
        .call(
            "POST",
            format!("{a_url}/v1/admin/platforms"),
            Some(ADMIN),
            Some(clash.clone()),
        )
        .await;
    assert_eq!(s, 409, "{v}");
    clash = json!({"appid": c, "secret": "s", "api_base": w.sim.url()});
    let (s, v) = w
        .call(
            "POST",
            format!("{a_url}/v1/admin/apps"),
            Some(ADMIN),
            Some(clash),
        )
        .await;
    assert_eq!(s, 409, "{v}");

    // Changing api_base to another host needs the secret again.
    let (s, v) = w
        .call(
            "PATCH",
            format!("{a_url}/v1/admin/platforms/{c}"),
            Some(ADMIN),
            Some(json!({"api_base": "https://attacker.example"})),
        )
        .await;
    assert_eq!(s, 400, "{v}");

    // Disabled: both instances stop serving its URLs and its merchant.
    let (s, v) = w
        .call(
            "PATCH",
            format!("{a_url}/v1/admin/platforms/{c}"),
            Some(ADMIN),
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["served"], false);
    answers_within_2s(
        &w.http,
        &b_url,
        c,
        Some(404),
        Some((&merchant, 404)),
        "B stops serving it",
    )
    .await;
    // Enabled again: the merchant is served at once, no re-authorization.
    let (s, _) = w
        .call(
            "PATCH",
            format!("{a_url}/v1/admin/platforms/{c}"),
            Some(ADMIN),
            Some(json!({"enabled": true})),
        )
        .await;
    assert_eq!(s, 200);
    answers_within_2s(
        &w.http,
        &b_url,
        c,
        None,
        Some((&merchant, 200)),
        "B serves the merchant again",
    )
    .await;

    // Deleted: gone everywhere; its refresh tokens stay. Registered again: the merchant is
    // served with the stored refresh token.
    let (s, _) = w
        .call(
            "DELETE",
            format!("{a_url}/v1/admin/platforms/{c}"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(s, 204);
    let (s, _) = w
        .call(
            "DELETE",
            format!("{a_url}/v1/admin/platforms/{c}"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(s, 404);
    answers_within_2s(
        &w.http,
        &b_url,
        c,
        Some(404),
        Some((&merchant, 404)),
        "B drops the platform",
    )
    .await;
    let refreshed = w.sim.sim().calls("/cgi-bin/component/api_query_auth");
    let (s, v) = w
        .call(
            "POST",
            format!("{a_url}/v1/admin/platforms"),
            Some(ADMIN),
            Some(create),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    answers_within_2s(
        &w.http,
        &b_url,
        c,
        None,
        Some((&merchant, 200)),
        "B serves the merchant after re-registration",
    )
    .await;
    assert_eq!(
        w.sim.sim().calls("/cgi-bin/component/api_query_auth"),
        refreshed,
        "no re-authorization"
    );
}

fn file_platform(
    w: &common::World,
    c: &str,
    secret: &str,
    token: &str,
    aes: &str,
) -> PlatformConfig {
    PlatformConfig {
        component_appid: c.into(),
        secret: Some(secret.into()),
        secret_env: None,
        token: token.into(),
        encoding_aes_key: aes.into(),
        api_base: w.sim.url().into(),
        webhook_url: None,
        webhook_secret: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merchant_of_two_platforms_stays_served_when_it_leaves_one() {
    let w = world().await;
    let mut config = w.config(&common::sqlite_url(), None, TokenMode::Stable);
    config.clients.push(backend());
    let (p1, p2) = ("wxtwoplatforms01", "wxtwoplatforms02");
    let (aes1, aes2) = (aes_key(11), aes_key(12));
    config.platforms = vec![
        file_platform(&w, p1, "secret-one-0123", "tokenone", &aes1),
        file_platform(&w, p2, "secret-two-0123", "tokentwo", &aes2),
    ];
    let server = weapp_server::spawn(config).await.unwrap();
    let url = server.url().to_owned();
    register_in_sim(&w, p1, "secret-one-0123", "tokenone", &aes1, &url).await;
    register_in_sim(&w, p2, "secret-two-0123", "tokentwo", &aes2, &url).await;
    ticket_stored(&server, p1).await;
    ticket_stored(&server, p2).await;
    let merchant = authorize(&w, &server, p1, None).await;
    authorize(&w, &server, p2, Some(&merchant)).await;
    let serving = |s: &weapp_server::ServerHandle| {
        s.state()
            .broker
            .app(&merchant)
            .and_then(|a| a.platform.clone())
    };
    assert_eq!(serving(&server).as_deref(), Some(p1), "the first keeps it");
    assert_eq!(broker_status(&w.http, &url, &merchant).await, 200);
    // It leaves the platform serving it: the other one takes over, no gap for callers.
    w.http
        .post(format!("{}/_sim/platforms/{p1}/deauthorize", w.sim.url()))
        .json(&json!({"authorizer_appid": merchant}))
        .send()
        .await
        .unwrap();
    within(Duration::from_secs(5), "served through the second", || {
        let s = serving(&server);
        async move { s.as_deref() == Some(p2) }
    })
    .await;
    assert_eq!(broker_status(&w.http, &url, &merchant).await, 200);
    // And the second: no longer served.
    w.http
        .post(format!("{}/_sim/platforms/{p2}/deauthorize", w.sim.url()))
        .json(&json!({"authorizer_appid": merchant}))
        .send()
        .await
        .unwrap();
    within(Duration::from_secs(5), "no longer served", || {
        let s = serving(&server);
        async move { s.is_none() }
    })
    .await;
    assert_eq!(broker_status(&w.http, &url, &merchant).await, 404);
}

/// An encrypted, signed push to a platform's event URL, as WeChat builds it.
fn signed_event(c: &str, token: &str, aes: &str, xml: &str) -> (String, String) {
    let key = weapp::push::crypto::EncodingAesKey::new(aes).unwrap();
    let encrypt = key.encrypt(xml, c);
    let ts = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs())
    .to_string();
    // Each push its own nonce, as WeChat's: a (timestamp, nonce) seen in the window is a
    // replay, refused before its content is looked at.
    static PUSHES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nonce = format!(
        "nonce{}",
        PUSHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let nonce = nonce.as_str();
    let sig = weapp::push::crypto::signature(&[token, &ts, nonce, &encrypt]);
    (
        format!("timestamp={ts}&nonce={nonce}&encrypt_type=aes&msg_signature={sig}"),
        format!(
            "<xml><AppId><![CDATA[{c}]]></AppId><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
        ),
    )
}

/// A platform event `(InfoType, its other fields as XML)` with WeChat's `CreateTime`
/// `create_time`, signed and encrypted for the platform `(component appid, Token,
/// EncodingAESKey)` with a fresh timestamp, posted to the server's event URL; the answer's
/// status.
async fn event_at(
    w: &common::World,
    url: &str,
    (c, token, aes): (&str, &str, &str),
    (info_type, fields): (&str, &str),
    create_time: i64,
) -> u16 {
    let (q, body) = signed_event(
        c,
        token,
        aes,
        &format!(
            "<xml><AppId><![CDATA[{c}]]></AppId><CreateTime>{create_time}</CreateTime><InfoType><![CDATA[{info_type}]]></InfoType>{fields}</xml>"
        ),
    );
    w.http
        .post(format!("{url}/v1/platforms/{c}/events?{q}"))
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// An `unauthorized` event for `merchant` (see [`event_at`]).
async fn unauthorized_at(
    w: &common::World,
    url: &str,
    platform: (&str, &str, &str),
    merchant: &str,
    create_time: i64,
) -> u16 {
    let fields = format!("<AuthorizerAppid><![CDATA[{merchant}]]></AuthorizerAppid>");
    event_at(w, url, platform, ("unauthorized", &fields), create_time).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unauthorized_push_older_than_the_authorization_erases_nothing() {
    let w = world().await;
    let mut config = w.config(&common::sqlite_url(), None, TokenMode::Stable);
    config.clients.push(backend());
    let c = "wxreplayplatform1";
    let (secret, token, aes) = ("replay-secret-0123", "replaytoken", aes_key(21));
    config.platforms = vec![file_platform(&w, c, secret, token, &aes)];
    let server = weapp_server::spawn(config).await.unwrap();
    let url = server.url().to_owned();
    register_in_sim(&w, c, secret, token, &aes, &url).await;
    ticket_stored(&server, c).await;
    let merchant = authorize(&w, &server, c, None).await;
    let auth_time = server.state().store.platform_authorizers(c).await.unwrap()[0].auth_time;
    // An `unauthorized` event from before the authorization (captured, replayed; or WeChat's
    // late retry of an earlier one): valid signature, fresh timestamp, old CreateTime.
    let status = unauthorized_at(&w, &url, (c, token, &aes), &merchant, auth_time - 60).await;
    assert_eq!(status, 200, "answered, so that WeChat stops retrying");
    let rows = server.state().store.platform_authorizers(c).await.unwrap();
    assert!(
        rows[0].authorized && rows[0].refresh_sealed.is_some(),
        "kept"
    );
    assert_eq!(broker_status(&w.http, &url, &merchant).await, 200);
    // A current one (CreateTime after the authorization) is applied.
    let status = unauthorized_at(&w, &url, (c, token, &aes), &merchant, auth_time + 1).await;
    assert_eq!(status, 200);
    let rows = server.state().store.platform_authorizers(c).await.unwrap();
    assert!(!rows[0].authorized && rows[0].refresh_sealed.is_none());
    assert_eq!(broker_status(&w.http, &url, &merchant).await, 404);

    // Two minutes later the merchant authorizes again while our event URL is down: only the
    // reconciliation learns it — and takes the authorization's time from WeChat's list, so a
    // late `unauthorized` from between the two authorizations erases nothing.
    w.http
        .post(format!("{}/_sim/platforms", w.sim.url()))
        .json(&json!({"component_appid": c, "event_url": "http://127.0.0.1:9/down"}))
        .send()
        .await
        .unwrap();
    w.sim.sim().advance(120);
    let pre = server
        .state()
        .platforms
        .platform(c)
        .unwrap()
        .component
        .pre_auth_code()
        .await
        .unwrap();
    let v: Value = w
        .http
        .post(format!("{}/_sim/platforms/{c}/authorize", w.sim.url()))
        .json(&json!({"pre_auth_code": pre.pre_auth_code, "authorizer_appid": merchant, "redirect_uri": "https://x"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["push"]["delivered"], false, "{v}");
    // (The platform's page the merchant was sent back to exchanged the code: WeChat's list
    // shows a refresh token only once one was.)
    server
        .state()
        .platforms
        .platform(c)
        .unwrap()
        .component
        .query_auth(v["auth_code"].as_str().unwrap())
        .await
        .unwrap();
    let listed: Value = w
        .http
        .get(format!("{}/_sim/platforms", w.sim.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let wechat_time = listed["platforms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["component_appid"] == c)
        .unwrap()["authorizers"][0]["auth_time"]
        .as_i64()
        .unwrap();
    assert!(wechat_time >= auth_time + 120, "{listed}");
    let r = server
        .state()
        .platforms
        .reconcile_platform(c)
        .await
        .unwrap();
    assert_eq!((r.restored, r.deauthorized), (1, 0));
    let rows = server.state().store.platform_authorizers(c).await.unwrap();
    assert!(rows[0].authorized);
    assert_eq!(rows[0].auth_time, wechat_time);
    server.state().platforms.sync_authorizers().await.unwrap();
    assert_eq!(broker_status(&w.http, &url, &merchant).await, 200);
    let status = unauthorized_at(&w, &url, (c, token, &aes), &merchant, auth_time + 60).await;
    assert_eq!(status, 200);
    assert!(server.state().store.platform_authorizers(c).await.unwrap()[0].authorized);
    assert_eq!(broker_status(&w.http, &url, &merchant).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_reconciles_each_platform_once_per_period() {
    let w = world().await;
    let db = PgDatabase::create().await;
    let mut config = w.config(db.url(), None, TokenMode::Stable);
    let c = "wxreconcileonce01";
    let (secret, token, aes) = ("reconcile-secret-0123", "reconciletoken", aes_key(31));
    config.platforms = vec![file_platform(&w, c, secret, token, &aes)];
    config.platform_reconcile_secs = 2;
    let a = weapp_server::spawn(config.clone()).await.unwrap();
    let b = weapp_server::spawn(config.clone()).await.unwrap();
    let c2 = weapp_server::spawn(config).await.unwrap();
    register_in_sim(&w, c, secret, token, &aes, a.url()).await;
    ticket_stored(&a, c).await;
    let path = "/cgi-bin/component/api_get_authorizer_list";
    let before = w.sim.sim().calls(path);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_millis(7_000)).await;
    let listed = w.sim.sim().calls(path) - before;
    let periods = started.elapsed().as_secs() / 2 + 1;
    println!(
        "{listed} listings by 3 instances in {:?}",
        started.elapsed()
    );
    assert!(listed >= 2, "it runs: {listed}");
    assert!(
        listed <= periods,
        "once per period for the fleet, not per instance: {listed} listings in {periods} periods"
    );
    drop((a, b, c2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_tokens_and_tickets_move_to_a_new_data_key() {
    let w = world().await;
    let db = PgDatabase::create().await;
    let mut config = w.config(db.url(), None, TokenMode::Stable);
    config.clients.push(backend());
    let c = "wxrekeyplatform01";
    let (secret, token, aes) = ("rekey-secret-0123", "rekeytoken", aes_key(41));
    config.platforms = vec![file_platform(&w, c, secret, token, &aes)];
    let old_key = config.data_key.clone().unwrap();
    let server = weapp_server::spawn(config.clone()).await.unwrap();
    register_in_sim(&w, c, secret, token, &aes, server.url()).await;
    ticket_stored(&server, c).await;
    let merchant = authorize(&w, &server, c, None).await;
    drop(server);
    // A new data key, the old one kept for now: the start re-seals everything with the new.
    let new_key = base64::engine::general_purpose::STANDARD.encode([77u8; 32]);
    let mut rotated = config.clone();
    rotated.data_key = None;
    rotated.data_keys = vec![new_key.clone().into(), old_key];
    let server = weapp_server::spawn(rotated).await.unwrap();
    let new_id = server.state().keys.keyring.current_id();
    let row = &server.state().store.platform_authorizers(c).await.unwrap()[0];
    assert_eq!(row.key_id.as_deref(), Some(new_id.as_str()));
    let ticket = server
        .state()
        .store
        .platform_ticket(c)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        weapp_server::keys::seal::Keyring::key_id_of(&ticket).as_deref(),
        Some(new_id.as_str())
    );
    drop(server);
    // The old key dropped: the platform works without a re-authorization.
    let mut only_new = config;
    only_new.data_key = Some(new_key.into());
    let server = weapp_server::spawn(only_new).await.unwrap();
    assert_eq!(broker_status(&w.http, server.url(), &merchant).await, 200);
    let platform = server.state().platforms.platform(c).unwrap();
    platform.component.component_token().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_captured_at_one_merchants_url_is_a_replay_at_anothers() {
    let w = world().await;
    let redis = RedisServer::start();
    for (c, redis_url) in [
        ("wxpushscope000001", None),
        ("wxpushscope000002", Some(redis.url())),
    ] {
        let mut config = w.config(&common::sqlite_url(), redis_url.clone(), TokenMode::Stable);
        config.clients.push(backend());
        let (secret, token, aes) = ("push-scope-secret-0123", "pushscopetoken", aes_key(51));
        config.platforms = vec![file_platform(&w, c, secret, token, &aes)];
        let server = weapp_server::spawn(config).await.unwrap();
        let url = server.url().to_owned();
        register_in_sim(&w, c, secret, token, &aes, &url).await;
        ticket_stored(&server, c).await;
        let one = authorize(&w, &server, c, None).await;
        let two = authorize(&w, &server, c, None).await;
        // A user's message to merchant one, as WeChat sends it to the platform's message URL
        // (encrypted with the platform's key, bound to the platform's appid).
        let (q, body) = signed_event(
            c,
            token,
            &aes,
            "<xml><ToUserName><![CDATA[gh_one]]></ToUserName><FromUserName><![CDATA[oUser]]></FromUserName><CreateTime>1700000000</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[hi]]></Content><MsgId>1</MsgId></xml>",
        );
        let send = |appid: String| {
            let (http, url, q, body) = (w.http.clone(), url.clone(), q.clone(), body.clone());
            async move {
                http.post(format!("{url}/v1/platforms/{c}/apps/{appid}/push?{q}"))
                    .body(body)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            }
        };
        assert_eq!(send(one.clone()).await, 200, "redis: {redis_url:?}");
        // The same push at merchant two's URL: the same signature, a replay.
        assert_eq!(send(two.clone()).await, 401, "redis: {redis_url:?}");
        let events = server
            .state()
            .store
            .events_after(&two, 0, 10)
            .await
            .unwrap();
        assert!(events.is_empty(), "nothing stored for merchant two");
    }
}

#[tokio::test]
async fn the_database_decides_a_deauthorization_against_the_authorization_it_holds() {
    use weapp_server::store::PlatformAuthorizer;
    let db = PgDatabase::create().await;
    for url in [common::sqlite_url(), db.url().to_owned()] {
        let store = weapp_server::store::connect(&url, &Default::default())
            .await
            .unwrap();
        let (c, m) = ("wxdecidesplatform", "wxdecidesmerchant");
        let authorized = |auth_time: i64, updated_at: i64| PlatformAuthorizer {
            component_appid: c.into(),
            authorizer_appid: m.into(),
            refresh_sealed: None,
            key_id: None,
            authorized: true,
            func_ids: "[]".into(),
            auth_time,
            updated_at,
            rev: 0,
        };
        store
            .save_platform_refresh(c, m, b"sealed-refresh-token-bytes-0123456789", "k1", 1_000)
            .await
            .unwrap();
        store
            .put_platform_authorizer(&authorized(100, 2_000))
            .await
            .unwrap();
        // A late, older authorization event does not move the authorization time back.
        store
            .put_platform_authorizer(&authorized(50, 3_000))
            .await
            .unwrap();
        let row = &store.authorizations_of(m).await.unwrap()[0];
        assert_eq!(row.auth_time, 100, "{url}");
        // An `unauthorized` from before the authorization: refused by the statement itself.
        assert!(!store
            .deauthorize_platform_authorizer_if(c, m, 99, i64::MAX, 4_000)
            .await
            .unwrap());
        // A reconciliation whose listing began before the row's last change: refused.
        assert!(!store
            .deauthorize_platform_authorizer_if(c, m, i64::MAX, 3_000, 4_000)
            .await
            .unwrap());
        let row = &store.authorizations_of(m).await.unwrap()[0];
        assert!(row.authorized && row.refresh_sealed.is_some(), "{url}");
        assert_eq!(store.count_authorized(c).await.unwrap(), 1, "{url}");
        // A current one: applied, the refresh token erased.
        assert!(store
            .deauthorize_platform_authorizer_if(c, m, 100, 3_001, 4_000)
            .await
            .unwrap());
        let row = &store.authorizations_of(m).await.unwrap()[0];
        assert!(!row.authorized && row.refresh_sealed.is_none(), "{url}");
        // The admin listing's count: authorized merchants only.
        assert_eq!(store.count_authorized(c).await.unwrap(), 0, "{url}");
        // Unknown merchants: nothing to do.
        assert!(!store
            .deauthorize_platform_authorizer_if(c, "wxnobody", i64::MAX, i64::MAX, 4_000)
            .await
            .unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_apps_and_platforms_move_to_a_new_data_key() {
    let w = world().await;
    let mut config = w.config(&common::sqlite_url(), None, TokenMode::Stable);
    config.admins = admins();
    config.clients.push(backend());
    let old_key = config.data_key.clone().unwrap();
    let server = weapp_server::spawn(config.clone()).await.unwrap();
    let url = server.url().to_owned();
    let (appid, secret) = w.sim.sim().add_app(None, None, false);
    let (s, v) = w
        .call(
            "POST",
            format!("{url}/v1/admin/apps"),
            Some(ADMIN),
            Some(json!({"appid": appid, "secret": secret, "api_base": w.sim.url(), "token_mode": "stable"})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let c = "wxrekeymanaged001";
    let (s, v) = w
        .call(
            "POST",
            format!("{url}/v1/admin/platforms"),
            Some(ADMIN),
            Some(
                json!({"component_appid": c, "secret": "rekey-managed-secret-01",
                "token": "rekeymanagedtoken", "encoding_aes_key": aes_key(61),
                "api_base": w.sim.url()}),
            ),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let store = server.state().store.clone();
    let before_apps = store.managed_apps_after(0, 100).await.unwrap();
    let before_platforms = store.managed_platforms_after(0, 100).await.unwrap();
    drop(server);

    // A new data key first, the old one kept: the start re-seals both rows under the new key,
    // at the same registry revision.
    let new_key = base64::engine::general_purpose::STANDARD.encode([78u8; 32]);
    let mut rotated = config.clone();
    rotated.data_key = None;
    rotated.data_keys = vec![new_key.clone().into(), old_key];
    let server = weapp_server::spawn(rotated).await.unwrap();
    let new_id = server.state().keys.keyring.current_id();
    let store = server.state().store.clone();
    let app_row = store
        .managed_apps_after(0, 100)
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.appid == appid)
        .unwrap();
    let platform_row = store
        .managed_platforms_after(0, 100)
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.appid == c)
        .unwrap();
    for (key_id, sealed) in [
        (&app_row.key_id, &app_row.sealed),
        (&platform_row.key_id, &platform_row.sealed),
    ] {
        assert_eq!(key_id.as_deref(), Some(new_id.as_str()));
        assert_eq!(
            weapp_server::keys::seal::Keyring::key_id_of(sealed.as_deref().unwrap()).as_deref(),
            Some(new_id.as_str())
        );
    }
    let old_app = before_apps.iter().find(|r| r.appid == appid).unwrap();
    let old_platform = before_platforms.iter().find(|r| r.appid == c).unwrap();
    assert_eq!(app_row.rev, old_app.rev);
    assert_eq!(platform_row.rev, old_platform.rev);
    assert_ne!(app_row.sealed, old_app.sealed);
    // A re-seal loses to a change made meanwhile (the row no longer holds what was read).
    assert!(!store
        .reseal_managed(false, &appid, b"not what the row holds", b"x", "k9")
        .await
        .unwrap());
    assert!(!store
        .reseal_managed(true, c, b"not what the row holds", b"x", "k9")
        .await
        .unwrap());
    let again = store.managed_apps_after(0, 100).await.unwrap();
    assert_eq!(
        again.iter().find(|r| r.appid == appid).unwrap().sealed,
        app_row.sealed
    );
    drop(server);

    // The old key dropped: both still served, nothing entered again.
    let mut only_new = config;
    only_new.data_key = Some(new_key.into());
    let server = weapp_server::spawn(only_new).await.unwrap();
    assert_eq!(broker_status(&w.http, server.url(), &appid).await, 200);
    assert!(server.state().platforms.platform(c).is_some());
    let (s, v) = w
        .call(
            "GET",
            format!("{}/v1/admin/platforms/{c}", server.url()),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["served"], true, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merchant_sync_the_database_fails_is_retried_at_the_next_poll() {
    let w = world().await;
    // B connects as a role of its own, so that the database can fail B's reads alone.
    let role = weapp_test_support::PgRole::new("weapp_b");
    let db = PgDatabase::create().await;
    let mut config = w.config(db.url(), None, TokenMode::Stable);
    config.admins = admins();
    config.clients.push(backend());
    // No full re-read of the registry during the test: only the retry can heal B.
    config.registry_reconcile_secs = 3_600;
    let a = weapp_server::spawn(config.clone()).await.unwrap();
    let a_url = a.url().to_owned();
    let mut on_db = role.create_on(db.url()).await;
    let b_db = role.url(db.url());
    let mut b_config = config.clone();
    b_config.database_url = b_db;
    let b = weapp_server::spawn(b_config).await.unwrap();
    let b_url = b.url().to_owned();

    // A platform on A with a merchant; B serves both.
    let c = "wxsyncfailplatform1";
    let (secret, token, aes) = ("sync-fail-secret-0123", "syncfailtoken", aes_key(71));
    let (s, v) = w
        .call(
            "POST",
            format!("{a_url}/v1/admin/platforms"),
            Some(ADMIN),
            Some(
                json!({"component_appid": c, "secret": secret, "token": token,
                "encoding_aes_key": aes, "api_base": w.sim.url()}),
            ),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    register_in_sim(&w, c, secret, token, &aes, &a_url).await;
    ticket_stored(&a, c).await;
    let merchant = authorize(&w, &a, c, None).await;
    answers_within_2s(
        &w.http,
        &b_url,
        c,
        None,
        Some((&merchant, 200)),
        "B serves the merchant",
    )
    .await;
    // Disabled: B stops serving the merchant.
    let patch = |enabled: bool| {
        let (w, url) = (&w, format!("{a_url}/v1/admin/platforms/{c}"));
        async move {
            let (s, v) = w
                .call("PATCH", url, Some(ADMIN), Some(json!({"enabled": enabled})))
                .await;
            assert_eq!(s, 200, "{v}");
        }
    };
    patch(false).await;
    answers_within_2s(&w.http, &b_url, c, None, Some((&merchant, 404)), "B stops").await;

    // The database refuses B the merchants' table; the platform is enabled again meanwhile.
    sqlx::query(&format!(
        "REVOKE ALL ON platform_authorizers FROM {}",
        role.name
    ))
    .execute(&mut on_db)
    .await
    .unwrap();
    patch(true).await;
    // B applies the platform but cannot sync its merchants: still 404 for a while…
    answers_within_2s(
        &w.http,
        &b_url,
        c,
        Some(400),
        None,
        "B serves the platform again",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(broker_status(&w.http, &b_url, &merchant).await, 404);
    // …and once the database answers again, the next poll syncs them (the platform change is
    // not forgotten with the failed sync).
    sqlx::query(&format!(
        "GRANT ALL ON platform_authorizers TO {}",
        role.name
    ))
    .execute(&mut on_db)
    .await
    .unwrap();
    answers_within_2s(
        &w.http,
        &b_url,
        c,
        None,
        Some((&merchant, 200)),
        "B retried the sync",
    )
    .await;

    drop((a, b, on_db));
}

#[tokio::test]
async fn the_database_decides_what_a_reconciliation_restores() {
    use weapp_server::store::PlatformAuthorizer;
    let db = PgDatabase::create().await;
    for url in [common::sqlite_url(), db.url().to_owned()] {
        let store = weapp_server::store::connect(&url, &Default::default())
            .await
            .unwrap();
        let (c, m) = ("wxrestoreplatform", "wxrestoremerchant");
        store
            .put_platform_authorizer(&PlatformAuthorizer {
                component_appid: c.into(),
                authorizer_appid: m.into(),
                refresh_sealed: Some(b"sealed-refresh-token-bytes-first".to_vec()),
                key_id: Some("k1".into()),
                authorized: true,
                func_ids: "[17,18]".into(),
                auth_time: 100,
                updated_at: 2_000,
                rev: 0,
            })
            .await
            .unwrap();
        // The merchant left after the listing began (the event wrote at 3,000; the listing
        // began at 2,500): the list's stale entry restores nothing.
        assert!(store
            .deauthorize_platform_authorizer_if(c, m, i64::MAX, i64::MAX, 3_000)
            .await
            .unwrap());
        let restore = |changed_before: i64, auth_time: i64| {
            let store = store.clone();
            async move {
                store
                    .restore_platform_authorizer_if(
                        c,
                        m,
                        b"sealed-refresh-token-bytes-listed",
                        "k2",
                        auth_time,
                        changed_before,
                        4_000,
                    )
                    .await
                    .unwrap()
            }
        };
        assert!(!restore(2_500, 200).await, "{url}");
        let row = &store.authorizations_of(m).await.unwrap()[0];
        assert!(!row.authorized && row.refresh_sealed.is_none(), "{url}");
        // A listing that began after the departure (the merchant came back, the event was
        // lost): restored, its time WeChat's, its permission sets kept.
        assert!(restore(3_001, 200).await, "{url}");
        let row = &store.authorizations_of(m).await.unwrap()[0];
        assert!(row.authorized, "{url}");
        assert_eq!(
            row.refresh_sealed.as_deref(),
            Some(&b"sealed-refresh-token-bytes-listed"[..])
        );
        assert_eq!(
            (row.auth_time, row.func_ids.as_str()),
            (200, "[17,18]"),
            "{url}"
        );
        // An older time in a later listing never lowers it.
        assert!(restore(4_001, 150).await, "{url}");
        assert_eq!(store.authorizations_of(m).await.unwrap()[0].auth_time, 200);
        // A merchant we never heard of: added.
        assert!(store
            .restore_platform_authorizer_if(
                c,
                "wxrestorenewcomer",
                b"sealed-new",
                "k2",
                300,
                5_000,
                5_000
            )
            .await
            .unwrap());
        let row = &store.authorizations_of("wxrestorenewcomer").await.unwrap()[0];
        assert!(row.authorized && row.auth_time == 300, "{url}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_platform_outside_its_ip_whitelist_is_an_upstream_auth_failure() {
    let w = world().await;
    let mut config = w.config(&common::sqlite_url(), None, TokenMode::Stable);
    config.clients.push(backend());
    let c = "wxwhitelistplatf1";
    let (secret, token, aes) = ("whitelist-secret-0123", "whitelisttoken", aes_key(81));
    config.platforms = vec![file_platform(&w, c, secret, token, &aes)];
    let server = weapp_server::spawn(config).await.unwrap();
    let url = server.url().to_owned();
    register_in_sim(&w, c, secret, token, &aes, &url).await;
    ticket_stored(&server, c).await;
    let merchant = authorize(&w, &server, c, None).await;
    let login = || {
        let (code, _) = w.sim.sim().login(&merchant, None, None, false).unwrap();
        let (w, url, merchant) = (&w, url.clone(), merchant.clone());
        async move { w.post_login(&url, &merchant, &code).await }
    };
    let (s, v) = login().await;
    assert_eq!(s, 200, "{v}");
    // The platform's whitelist no longer holds this machine: the merchant's login (the
    // component's jscode2session) is WeChat refusing our credentials, with errcode and rid.
    w.sim
        .sim()
        .set_platform_whitelist(c, Some(vec!["10.1.2.3".parse().unwrap()]))
        .unwrap();
    let (s, v) = login().await;
    assert_eq!(s, 502, "{v}");
    assert_eq!(v["error"]["code"], "upstream_auth_failed", "{v}");
    assert_eq!(v["error"]["wechat_errcode"], 61004, "{v}");
    assert!(v["error"]["rid"].is_string(), "{v}");
    assert!(!v.to_string().contains(secret), "{v}");
    // Added back: logins work again.
    w.sim.sim().set_platform_whitelist(c, None).unwrap();
    let (s, v) = login().await;
    assert_eq!(s, 200, "{v}");
}

/// A ticket push (see [`event_at`]).
async fn ticket_at(
    w: &common::World,
    url: &str,
    platform: (&str, &str, &str),
    ticket: &str,
    create_time: i64,
) -> u16 {
    let fields = format!("<ComponentVerifyTicket><![CDATA[{ticket}]]></ComponentVerifyTicket>");
    event_at(
        w,
        url,
        platform,
        ("component_verify_ticket", &fields),
        create_time,
    )
    .await
}

/// WeChat retries a push it got no `success` for: a late retry of an older ticket push (valid
/// signature, fresh timestamp, older `CreateTime`) is answered `success` and does not replace
/// the newer ticket the server holds; a newer one does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_retry_of_an_older_ticket_push_keeps_the_newer_ticket() {
    let w = world().await;
    let mut config = w.config(&common::sqlite_url(), None, TokenMode::Stable);
    let c = "wxticketorder001";
    let (secret, token, aes) = ("order-secret-0123", "ordertoken", aes_key(23));
    config.platforms = vec![file_platform(&w, c, secret, token, &aes)];
    let server = weapp_server::spawn(config).await.unwrap();
    let url = server.url().to_owned();
    register_in_sim(&w, c, secret, token, &aes, &url).await;
    ticket_stored(&server, c).await;
    let store = server.state().store.clone();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let held = |store: std::sync::Arc<dyn weapp_server::store::Store>| async move {
        store.platform_ticket(c).await.unwrap().unwrap()
    };
    // A newer ticket than the simulator's: kept.
    let before = held(store.clone()).await;
    assert_eq!(
        ticket_at(&w, &url, (c, token, &aes), "ticket@newer", now + 600).await,
        200
    );
    let newer = held(store.clone()).await;
    assert_ne!(newer, before, "a newer ticket replaces the one held");
    // The late retry of an older push: success, nothing replaced.
    assert_eq!(
        ticket_at(&w, &url, (c, token, &aes), "ticket@older", now - 600).await,
        200
    );
    assert_eq!(
        held(store.clone()).await,
        newer,
        "an older ticket replaced a newer one"
    );
    server.shutdown().await.unwrap();
}

/// The store's side, on SQLite and PostgreSQL: a ticket pushed earlier than the one kept is
/// not written (false); a later one, one at the same second, and one without a time are.
#[tokio::test]
async fn the_store_keeps_the_latest_pushed_ticket() {
    let db = PgDatabase::create().await;
    for url in [common::sqlite_url(), db.url().to_owned()] {
        let store = weapp_server::store::connect(&url, &Default::default())
            .await
            .unwrap();
        let put = |sealed: &'static [u8], at: i64| {
            let store = store.clone();
            async move {
                store
                    .put_platform_ticket("wxc", sealed, "k1", weapp_server::shared::now_ms(), at)
                    .await
                    .unwrap()
            }
        };
        assert!(put(b"t200", 200).await, "{url}");
        assert!(!put(b"t100", 100).await, "{url}");
        assert_eq!(
            store.platform_ticket("wxc").await.unwrap().unwrap(),
            b"t200"
        );
        assert!(put(b"t200b", 200).await, "{url}");
        assert!(put(b"manual", 0).await, "{url}");
        assert_eq!(
            store.platform_ticket("wxc").await.unwrap().unwrap(),
            b"manual"
        );
        assert!(put(b"t50", 50).await, "{url}");
        assert_eq!(store.platform_ticket("wxc").await.unwrap().unwrap(), b"t50");
        // A kept time ahead of the clock (a simulator's clock moved forward, a bad time) is
        // not trusted: the next push replaces it.
        let now = weapp_server::shared::now_ms() / 1000;
        assert!(put(b"future", now + 10 * 86_400).await, "{url}");
        assert!(put(b"genuine", now).await, "{url}");
        assert_eq!(
            store.platform_ticket("wxc").await.unwrap().unwrap(),
            b"genuine"
        );
        assert!(!put(b"older", now - 600).await, "{url}");
    }
}

/// A rolling upgrade or a rollback: an instance whose release knows fewer migrations than the
/// database has applied still starts (migrations only add), on SQLite and PostgreSQL.
#[tokio::test]
async fn an_older_release_starts_against_a_newer_schema() {
    let db = PgDatabase::create().await;
    for url in [common::sqlite_url(), db.url().to_owned()] {
        let store = weapp_server::store::connect(&url, &Default::default())
            .await
            .unwrap();
        drop(store);
        // A migration this release does not know, applied by a newer one.
        {
            use sqlx::Connection;
            let sql = "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
                       VALUES (9999, 'from a newer release', TRUE, X'00', 0)";
            let sql = if url.starts_with("postgres") {
                sql.replace("X'00'", "'\\x00'::bytea")
            } else {
                sql.to_owned()
            };
            if url.starts_with("postgres") {
                let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
                sqlx::query(&sql).execute(&mut c).await.unwrap();
            } else {
                let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
                sqlx::query(&sql).execute(&mut c).await.unwrap();
            }
        }
        let store = weapp_server::store::connect(&url, &Default::default())
            .await
            .expect("an older release starts");
        store
            .put_platform_ticket("wxc", b"t", "k1", 1, 1)
            .await
            .unwrap();
    }
}
