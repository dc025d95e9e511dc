//! A third-party platform against weapp-sim: tickets received and stored, one component token
//! for two processes, a merchant's authorization, a client acting for the merchant, component
//! login, a lost refresh token recovered from the authorizer list, re-authorization and
//! de-authorization, forged events refused; a merchant's options; a permission set not granted
//! (61007); a platform outside its IP whitelist (61004).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};
use weapp::clock::Clock;
use weapp::open_platform::{
    AuthType, AuthorizerOption, Component, ComponentEvent, MemoryPlatformStore, ReceiveError,
    RefreshTokenStore, TicketStore, TICKET_TIME_SLACK_SECS,
};
use weapp::push::PushQuery;
use weapp::token::MemoryStore;
use weapp::ErrCode;
use weapp_sim::{SimConfig, TokenKind};

type Events = Arc<Mutex<Vec<ComponentEvent>>>;

async fn receive(
    State((component, events)): State<(Component, Events)>,
    Query(q): Query<PushQuery>,
    body: axum::body::Bytes,
) -> (StatusCode, &'static str) {
    match component.receive(&q, &body).await {
        Ok(e) => {
            events.lock().unwrap().push(e);
            (StatusCode::OK, "success")
        }
        Err(ReceiveError::Push(_)) => (StatusCode::BAD_REQUEST, "refused"),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "retry"),
    }
}

async fn until<F: FnMut() -> bool>(what: &str, mut f: F) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < Duration::from_secs(5), "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn post_json(http: &reqwest::Client, url: String, body: Value) -> Value {
    http.post(url)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_platform_acts_for_a_merchant() {
    let sim = weapp_sim::spawn(SimConfig::default()).await.unwrap();
    let http = reqwest::Client::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let event_url = format!("http://{}/events", listener.local_addr().unwrap());
    let reg = post_json(
        &http,
        format!("{}/_sim/platforms", sim.url()),
        json!({"event_url": event_url}),
    )
    .await;
    let (appid, secret, token, aes) = (
        reg["component_appid"].as_str().unwrap().to_owned(),
        reg["secret"].as_str().unwrap().to_owned(),
        reg["token"].as_str().unwrap().to_owned(),
        reg["encoding_aes_key"].as_str().unwrap().to_owned(),
    );
    // Two processes of the platform share the token store, the ticket and the refresh tokens.
    let tokens = Arc::new(MemoryStore::new());
    let platform_store = Arc::new(MemoryPlatformStore::new());
    let build = |refresh: Arc<MemoryPlatformStore>| {
        Component::builder(&appid, secret.as_str(), &token, &aes)
            .base_url(sim.url())
            .token_store(tokens.clone())
            .ticket_store(platform_store.clone())
            .refresh_token_store(refresh)
            .build()
            .unwrap()
    };
    let component = build(platform_store.clone());
    let other_process = build(platform_store.clone());
    let events: Events = Arc::default();
    let app = Router::new()
        .route("/events", post(receive))
        .with_state((component.clone(), events.clone()));
    tokio::spawn(async move { axum::serve(listener, app).await });

    // The ticket pushed at once is stored.
    let start = Instant::now();
    while platform_store.latest(&appid).await.unwrap().is_none() {
        assert!(start.elapsed() < Duration::from_secs(5), "no ticket stored");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        platform_store.latest(&appid).await.unwrap(),
        sim.sim().latest_ticket(&appid)
    );

    // Forty callers in two processes: one component token.
    let calls: Vec<_> = (0..40)
        .map(|i| {
            let c = if i % 2 == 0 {
                component.clone()
            } else {
                other_process.clone()
            };
            tokio::spawn(async move { c.component_token().await.unwrap() })
        })
        .collect();
    let mut got = Vec::new();
    for c in calls {
        got.push(c.await.unwrap());
    }
    assert!(got.iter().all(|t| t == &got[0]));
    assert_eq!(sim.sim().component_tokens_issued(&appid), 1);

    // The merchant authorizes through the page.
    let pre = component.pre_auth_code().await.unwrap();
    let url = component.authorization_url(
        &pre.pre_auth_code,
        "https://platform.example/back",
        AuthType::MiniProgram,
        None,
    );
    assert!(url.starts_with("https://mp.weixin.qq.com/cgi-bin/componentloginpage?"));
    assert!(url.contains(&format!("component_appid={appid}")) && url.contains("auth_type=2"));
    let (merchant, _) = sim.sim().add_app(None, None, false);
    let auth = post_json(
        &http,
        format!("{}/_sim/platforms/{appid}/authorize", sim.url()),
        json!({"pre_auth_code": pre.pre_auth_code, "authorizer_appid": merchant, "redirect_uri": "https://platform.example/back"}),
    )
    .await;
    until("an authorized event", || {
        events
            .lock()
            .unwrap()
            .iter()
            .any(|e| matches!(e, ComponentEvent::Authorized(a) if a.authorizer_appid == merchant))
    })
    .await;
    let code = events
        .lock()
        .unwrap()
        .iter()
        .find_map(|e| match e {
            ComponentEvent::Authorized(a) => Some(a.authorization_code.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(code, auth["auth_code"].as_str().unwrap());
    let info = component.query_auth(&code).await.unwrap();
    assert_eq!(info.authorizer_appid, merchant);
    assert!(!format!("{info:?}").contains(info.authorizer_refresh_token.as_ref().unwrap().expose()));
    // Saved before query_auth returned.
    assert_eq!(
        platform_store
            .load(&appid, &merchant)
            .await
            .unwrap()
            .as_deref(),
        Some(info.authorizer_refresh_token.as_ref().unwrap().expose())
    );

    // A client for the merchant's mini program: its APIs work with authorizer tokens.
    let client = component.authorizer(&merchant).unwrap();
    assert!(client.subscribe().categories().await.is_ok());
    let issued = sim.sim().tokens_issued(&merchant, TokenKind::Authorizer);
    assert_eq!(issued, 2, "query_auth's, then the client's own");
    // One manager per merchant in a process, however often `authorizer()` is called.
    assert!(component
        .authorizer(&merchant)
        .unwrap()
        .subscribe()
        .categories()
        .await
        .is_ok());
    assert_eq!(
        sim.sim().tokens_issued(&merchant, TokenKind::Authorizer),
        issued
    );
    // The other process's client shares the token.
    let elsewhere = other_process.authorizer(&merchant).unwrap();
    assert!(elsewhere.subscribe().categories().await.is_ok());
    assert_eq!(
        sim.sim().tokens_issued(&merchant, TokenKind::Authorizer),
        issued
    );

    // Login of the merchant's users through the component.
    let (js_code, openid) = sim.sim().login(&merchant, None, None, false).unwrap();
    let session = component
        .code_to_session(&merchant, &js_code)
        .await
        .unwrap();
    assert_eq!(session.openid, openid);
    let used = component
        .code_to_session(&merchant, &js_code)
        .await
        .unwrap_err();
    assert_eq!(used.errcode().map(|c| c.code()), Some(40163));

    // A process that lost the refresh token recovers it from the authorizer list.
    let empty = Arc::new(MemoryPlatformStore::new());
    let amnesiac = Component::builder(&appid, secret.as_str(), &token, &aes)
        .base_url(sim.url())
        .ticket_store(platform_store.clone())
        .refresh_token_store(empty.clone())
        .build()
        .unwrap();
    let recovered = amnesiac.authorizer(&merchant).unwrap();
    assert!(recovered.subscribe().categories().await.is_ok());
    assert_eq!(
        empty.load(&appid, &merchant).await.unwrap().as_deref(),
        Some(info.authorizer_refresh_token.as_ref().unwrap().expose())
    );

    // Re-authorization with other permissions: a new code, a new refresh token; the client's
    // token dies at once and the next call refreshes it with the new refresh token.
    let pre = component.pre_auth_code().await.unwrap();
    let auth = post_json(
        &http,
        format!("{}/_sim/platforms/{appid}/authorize", sim.url()),
        json!({"pre_auth_code": pre.pre_auth_code, "authorizer_appid": merchant, "redirect_uri": "https://x", "func_ids": [17]}),
    )
    .await;
    assert_eq!(auth["event"], "updateauthorized");
    until("an updateauthorized event", || {
        events
            .lock()
            .unwrap()
            .iter()
            .any(|e| matches!(e, ComponentEvent::UpdateAuthorized(_)))
    })
    .await;
    let info2 = component
        .query_auth(auth["auth_code"].as_str().unwrap())
        .await
        .unwrap();
    assert_ne!(
        info2.authorizer_refresh_token.as_ref().unwrap().expose(),
        info.authorizer_refresh_token.as_ref().unwrap().expose()
    );
    assert!(client.subscribe().categories().await.is_ok());

    // De-authorization: the event, and the client's calls end in 61003.
    post_json(
        &http,
        format!("{}/_sim/platforms/{appid}/deauthorize", sim.url()),
        json!({"authorizer_appid": merchant}),
    )
    .await;
    until("an unauthorized event", || {
        events
            .lock()
            .unwrap()
            .iter()
            .any(|e| matches!(e, ComponentEvent::Unauthorized { authorizer_appid, .. } if *authorizer_appid == merchant))
    })
    .await;
    let e = client.subscribe().categories().await.unwrap_err();
    assert_eq!(e.errcode().map(|c| c.code()), Some(61003), "{e}");
    // Forgotten: nothing left to refresh with, and the error says what to do.
    component.forget_authorizer(&merchant).await.unwrap();
    assert_eq!(platform_store.load(&appid, &merchant).await.unwrap(), None);
    let e = component
        .authorizer(&merchant)
        .unwrap()
        .subscribe()
        .categories()
        .await
        .unwrap_err();
    assert!(e.to_string().contains("authorize again"), "{e}");

    // A forged event is refused and stores nothing.
    let before = platform_store.latest(&appid).await.unwrap();
    let forged = http
        .post(format!(
            "{event_url}?timestamp=1&nonce=2&encrypt_type=aes&msg_signature=deadbeef"
        ))
        .body("<xml><AppId>x</AppId><Encrypt>AAAA</Encrypt></xml>")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 400);
    assert_eq!(platform_store.latest(&appid).await.unwrap(), before);
}

#[tokio::test]
async fn without_a_ticket_the_component_token_says_so() {
    let sim = weapp_sim::spawn(SimConfig::default()).await.unwrap();
    let http = reqwest::Client::new();
    let reg = post_json(&http, format!("{}/_sim/platforms", sim.url()), json!({})).await;
    let component = Component::builder(
        reg["component_appid"].as_str().unwrap(),
        reg["secret"].as_str().unwrap(),
        reg["token"].as_str().unwrap(),
        reg["encoding_aes_key"].as_str().unwrap(),
    )
    .base_url(sim.url())
    .build()
    .unwrap();
    let e = component.component_token().await.unwrap_err();
    assert!(e.to_string().contains("no component_verify_ticket"), "{e}");
    // A stored ticket WeChat does not know: 61006, typed.
    let store = Arc::new(MemoryPlatformStore::new());
    TicketStore::save(&*store, reg["component_appid"].as_str().unwrap(), "null")
        .await
        .unwrap();
    let component = Component::builder(
        reg["component_appid"].as_str().unwrap(),
        reg["secret"].as_str().unwrap(),
        reg["token"].as_str().unwrap(),
        reg["encoding_aes_key"].as_str().unwrap(),
    )
    .base_url(sim.url())
    .ticket_store(store)
    .build()
    .unwrap();
    let e = component.component_token().await.unwrap_err();
    assert_eq!(e.errcode().map(|c| c.code()), Some(61006), "{e}");
    // api_start_push_ticket asks for one.
    component.start_push_ticket().await.unwrap();
    // clear_quota/v2 works without a component token.
    component.clear_quota_v2(None).await.unwrap();
    // An empty message-check Token is refused: anyone could sign pushes.
    assert!(
        Component::builder("wxc", "s", "", reg["encoding_aes_key"].as_str().unwrap())
            .build()
            .is_err()
    );
}

/// A platform with a ticket stored and a merchant authorized with `func_ids`.
struct Merchant {
    component: Component,
    /// The platform's registration (appid, secret, token, key).
    reg: Value,
    store: Arc<MemoryPlatformStore>,
    appid: String,
    secret: String,
}

async fn authorized_merchant(sim: &weapp_sim::SimHandle, func_ids: &[i64]) -> Merchant {
    let http = reqwest::Client::new();
    let reg = post_json(&http, format!("{}/_sim/platforms", sim.url()), json!({})).await;
    let appid = reg["component_appid"].as_str().unwrap().to_owned();
    sim.sim().push_ticket(&appid).await.unwrap();
    let store = Arc::new(MemoryPlatformStore::new());
    TicketStore::save(&*store, &appid, &sim.sim().latest_ticket(&appid).unwrap())
        .await
        .unwrap();
    let component = Component::builder(
        &appid,
        reg["secret"].as_str().unwrap(),
        reg["token"].as_str().unwrap(),
        reg["encoding_aes_key"].as_str().unwrap(),
    )
    .base_url(sim.url())
    .ticket_store(store.clone())
    .refresh_token_store(store.clone())
    .build()
    .unwrap();
    let pre = component.pre_auth_code().await.unwrap();
    let (merchant, merchant_secret) = sim.sim().add_app(None, None, false);
    let auth = post_json(
        &http,
        format!("{}/_sim/platforms/{appid}/authorize", sim.url()),
        json!({"pre_auth_code": pre.pre_auth_code, "authorizer_appid": merchant, "redirect_uri": "https://x", "func_ids": func_ids}),
    )
    .await;
    component
        .query_auth(auth["auth_code"].as_str().unwrap())
        .await
        .unwrap();
    Merchant {
        component,
        reg,
        store,
        appid: merchant,
        secret: merchant_secret,
    }
}

#[tokio::test]
async fn a_merchants_options_are_read_and_set() {
    let sim = weapp_sim::spawn(SimConfig::default()).await.unwrap();
    let m = authorized_merchant(&sim, &[17, 18, 19]).await;
    let (component, merchant) = (&m.component, &m.appid);
    let appid = m.reg["component_appid"].as_str().unwrap();
    assert_eq!(
        component
            .authorizer_option(merchant, AuthorizerOption::LocationReport)
            .await
            .unwrap(),
        "0"
    );
    component
        .set_authorizer_option(merchant, AuthorizerOption::LocationReport, "2")
        .await
        .unwrap();
    component
        .set_authorizer_option(merchant, AuthorizerOption::CustomerService, "1")
        .await
        .unwrap();
    assert_eq!(
        component
            .authorizer_option(merchant, AuthorizerOption::LocationReport)
            .await
            .unwrap(),
        "2"
    );
    // A value the option does not take: typed, with the rid, and nothing changed.
    let e = component
        .set_authorizer_option(merchant, AuthorizerOption::VoiceRecognize, "2")
        .await
        .unwrap_err();
    assert_eq!(e.errcode(), Some(ErrCode::InvalidOptionValue), "{e}");
    assert!(e.rid().is_some(), "{e}");
    assert_eq!(
        component
            .authorizer_option(merchant, AuthorizerOption::VoiceRecognize)
            .await
            .unwrap(),
        "0"
    );
    // The newer pages' form, with the merchant's own authorizer token, sees the same values.
    let token = component
        .authorizer_manager(merchant)
        .unwrap()
        .current()
        .await
        .unwrap()
        .access_token;
    let http = reqwest::Client::new();
    let got = post_json(
        &http,
        format!(
            "{}/cgi-bin/component/get_authorizer_option?access_token={}",
            sim.url(),
            token.expose()
        ),
        json!({"option_name": "customer_service"}),
    )
    .await;
    assert_eq!(got["option_value"], "1", "{got}");
    // A merchant that is not (or no longer) authorized: 61003, typed.
    post_json(
        &http,
        format!("{}/_sim/platforms/{appid}/deauthorize", sim.url()),
        json!({"authorizer_appid": merchant}),
    )
    .await;
    let e = component
        .authorizer_option(merchant, AuthorizerOption::LocationReport)
        .await
        .unwrap_err();
    assert_eq!(e.errcode(), Some(ErrCode::ComponentNotAuthorized), "{e}");
}

#[tokio::test]
async fn a_permission_set_not_granted_is_61007_and_costs_no_token() {
    let sim = weapp_sim::spawn(SimConfig::default()).await.unwrap();
    // Customer service (19) only: no 小程序码 (17).
    let m = authorized_merchant(&sim, &[19]).await;
    let merchant = &m.appid;
    let client = m.component.authorizer(merchant).unwrap();
    assert!(client.subscribe().categories().await.is_ok());
    let issued = sim.sim().tokens_issued(merchant, TokenKind::Authorizer);
    let e = client.wxacode().unlimited("id=1").send().await.unwrap_err();
    assert_eq!(
        e.errcode(),
        Some(ErrCode::ApiUnauthorizedToComponent),
        "{e}"
    );
    assert!(e.rid().is_some(), "{e}");
    // Not a token problem: the token is not thrown away, and the next call uses it.
    assert!(client.subscribe().categories().await.is_ok());
    assert_eq!(
        sim.sim().tokens_issued(merchant, TokenKind::Authorizer),
        issued
    );
    // The merchant's own token (not the platform's) may call it.
    let own = weapp::Client::builder(merchant, m.secret.as_str())
        .base_url(sim.url())
        .build()
        .unwrap();
    assert!(own.wxacode().unlimited("id=1").send().await.is_ok());
}

#[tokio::test]
async fn a_platform_called_from_outside_its_ip_whitelist_gets_61004() {
    let sim = weapp_sim::spawn(SimConfig::default()).await.unwrap();
    let m = authorized_merchant(&sim, &[19]).await;
    let (component, appid) = (&m.component, m.reg["component_appid"].as_str().unwrap());
    let calls = || sim.sim().calls("/cgi-bin/component/api_component_token");
    let ten = "10.1.2.3".parse().unwrap();
    sim.sim()
        .set_platform_whitelist(appid, Some(vec![ten]))
        .unwrap();
    // The component token the platform holds is refused for the other calls too, and so are
    // the calls it makes for the merchant — without costing the merchant's token.
    let e = component.pre_auth_code().await.unwrap_err();
    assert_eq!(e.errcode(), Some(ErrCode::ClientIpNotRegistered), "{e}");
    assert!(e.to_string().contains("requestIP: 127.0.0.1"), "{e}");
    let merchant = component.authorizer(&m.appid).unwrap();
    let issued = sim.sim().tokens_issued(&m.appid, TokenKind::Authorizer);
    let e = merchant.subscribe().categories().await.unwrap_err();
    assert_eq!(e.errcode(), Some(ErrCode::ClientIpNotRegistered), "{e}");
    assert_eq!(
        sim.sim().tokens_issued(&m.appid, TokenKind::Authorizer),
        issued
    );
    // Another process of the platform, without a component token yet: refused, and
    // remembered (a whitelist is not fixed in a second) — its next caller does not ask WeChat
    // again.
    let other = Component::builder(
        appid,
        m.reg["secret"].as_str().unwrap(),
        m.reg["token"].as_str().unwrap(),
        m.reg["encoding_aes_key"].as_str().unwrap(),
    )
    .base_url(sim.url())
    .ticket_store(m.store.clone())
    .build()
    .unwrap();
    let before = calls();
    let e = other.component_token().await.unwrap_err();
    assert_eq!(e.errcode(), Some(ErrCode::ClientIpNotRegistered), "{e}");
    assert!(e.rid().is_some(), "{e}");
    let e = other.component_token().await.unwrap_err();
    assert_eq!(e.errcode(), Some(ErrCode::ClientIpNotRegistered), "{e}");
    assert_eq!(calls(), before + 1);
    // The operator adds this machine; the platform is told to forget the failure.
    sim.sim()
        .set_platform_whitelist(appid, Some(vec![ten, "127.0.0.1".parse().unwrap()]))
        .unwrap();
    other.forget_failures();
    component.forget_failures();
    assert!(other.component_token().await.is_ok());
    assert!(component.pre_auth_code().await.is_ok());
    assert!(merchant.subscribe().categories().await.is_ok());
}

/// WeChat retries a ticket push it got no `success` for: a late retry of an older push (valid
/// signature, fresh timestamp, older `CreateTime`) is accepted but does not replace the newer
/// ticket in the store; a newer push does. A ticket saved without a time (by hand) is replaced
/// by the next push, whatever its time.
#[tokio::test]
async fn a_late_retry_of_an_older_ticket_push_keeps_the_newer_ticket() {
    let (c, token) = ("wxorderplatform1", "ordertoken");
    let aes = "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR";
    let store = Arc::new(MemoryPlatformStore::new());
    let real_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let clock = weapp::clock::ManualClock::new(real_now);
    let component = Component::builder(c, "order-secret", token, aes)
        .ticket_store(store.clone())
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    let push_at = |ticket: &str, create_time: i64, signed_at: i64| {
        let xml = format!(
            "<xml><AppId><![CDATA[{c}]]></AppId><CreateTime>{create_time}</CreateTime><InfoType><![CDATA[component_verify_ticket]]></InfoType><ComponentVerifyTicket><![CDATA[{ticket}]]></ComponentVerifyTicket></xml>"
        );
        let encrypt = weapp::push::crypto::EncodingAesKey::new(aes)
            .unwrap()
            .encrypt(&xml, c);
        let ts = signed_at.to_string();
        let nonce = format!("n{create_time}-{signed_at}");
        let q = PushQuery {
            timestamp: Some(ts.clone()),
            nonce: Some(nonce.clone()),
            encrypt_type: Some("aes".into()),
            msg_signature: Some(weapp::push::crypto::signature(&[
                token, &ts, &nonce, &encrypt,
            ])),
            ..Default::default()
        };
        let body = format!(
            "<xml><AppId><![CDATA[{c}]]></AppId><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
        );
        (q, body)
    };
    let push = |ticket: &str, create_time: i64| push_at(ticket, create_time, clock.now_ms() / 1000);
    let latest = || async { store.latest(c).await.unwrap() };
    for (ticket, at, expect) in [
        ("t@200", 200, "t@200"),
        ("t@100", 100, "t@200"), // the late retry: accepted, not kept
        ("t@300", 300, "t@300"),
    ] {
        let (q, body) = push(ticket, at);
        let event = component.receive(&q, body.as_bytes()).await.unwrap();
        assert!(matches!(event, ComponentEvent::VerifyTicket { .. }));
        assert_eq!(latest().await.as_deref(), Some(expect), "after {ticket}");
    }
    TicketStore::save(&*store, c, "by-hand").await.unwrap();
    let (q, body) = push("t@10", 10);
    component.receive(&q, body.as_bytes()).await.unwrap();
    assert_eq!(latest().await.as_deref(), Some("t@10"));

    // A push whose CreateTime is far ahead of its signed timestamp (milliseconds, a bug) does
    // not hold its ticket against every later push: its time is capped to the signed
    // timestamp plus the slack, so a push signed after that replaces it.
    let now = clock.now_ms() / 1000;
    let (q, body) = push("t@ms", clock.now_ms());
    component.receive(&q, body.as_bytes()).await.unwrap();
    assert_eq!(latest().await.as_deref(), Some("t@ms"));
    let (q, body) = push("t@now", now);
    component.receive(&q, body.as_bytes()).await.unwrap();
    assert_eq!(latest().await.as_deref(), Some("t@ms"), "within the slack");
    clock.advance_secs(TICKET_TIME_SLACK_SECS + 60);
    let later = clock.now_ms() / 1000;
    let (q, body) = push("t@later", later);
    component.receive(&q, body.as_bytes()).await.unwrap();
    assert_eq!(latest().await.as_deref(), Some("t@later"));
}
