//! The third-party platform side over raw HTTP (wechat-open-platform.md §9): ticket pushes,
//! the component token's ticket rules, the merchant's authorization, authorizer tokens and
//! refresh tokens through re-authorization and de-authorization, the authorizer list, and
//! component login. The receiver below decrypts pushes with its own AES code, not the SDK's.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aes::cipher::{block_padding::NoPadding, BlockDecryptMut, KeyIvInit};
use axum::extract::{Query, State};
use axum::routing::post;
use axum::Router;
use base64::Engine;
use serde_json::{json, Value};
use sha1::{Digest, Sha1};
use weapp_sim::{spawn, SimConfig, SimHandle};

/// What the platform's event URL received: (query, decrypted XML).
type Inbox = Arc<Mutex<Vec<(std::collections::HashMap<String, String>, String)>>>;

struct Receiver {
    url: String,
    message_url: String,
    inbox: Inbox,
    messages: Messages,
}

async fn receive(
    State((inbox, token, key)): State<(Inbox, String, [u8; 32])>,
    Query(q): Query<std::collections::HashMap<String, String>>,
    body: String,
) -> &'static str {
    let enc = body
        .split("<Encrypt><![CDATA[")
        .nth(1)
        .and_then(|r| r.split("]]>").next())
        .expect("an Encrypt element")
        .to_owned();
    assert!(
        body.contains("<AppId>"),
        "system pushes carry AppId: {body}"
    );
    let mut parts = [
        token.as_str(),
        q["timestamp"].as_str(),
        q["nonce"].as_str(),
        enc.as_str(),
    ];
    parts.sort_unstable();
    assert_eq!(
        hex::encode(Sha1::digest(parts.concat().as_bytes())),
        q["msg_signature"],
        "msg_signature over the ciphertext"
    );
    let mut buf = base64::engine::general_purpose::STANDARD
        .decode(&enc)
        .unwrap();
    let len = buf.len();
    cbc::Decryptor::<aes::Aes256>::new_from_slices(&key, &key[..16])
        .unwrap()
        .decrypt_padded_mut::<NoPadding>(&mut buf[..len])
        .unwrap();
    let n = u32::from_be_bytes(buf[16..20].try_into().unwrap()) as usize;
    let xml = String::from_utf8(buf[20..20 + n].to_vec()).unwrap();
    inbox.lock().unwrap().push((q, xml));
    "success"
}

/// Message pushes of authorized mini programs: (appid in the URL, ToUserName, decrypted XML,
/// the appid the ciphertext was bound to).
type Messages = Arc<Mutex<Vec<(String, String, String, String)>>>;

async fn receive_message(
    State((messages, token, key)): State<(Messages, String, [u8; 32])>,
    axum::extract::Path(appid): axum::extract::Path<String>,
    Query(q): Query<std::collections::HashMap<String, String>>,
    body: String,
) -> &'static str {
    let enc = field(&body, "Encrypt").expect("safe mode: Encrypt");
    let to = field(&body, "ToUserName").expect("safe mode: ToUserName");
    assert!(
        !body.contains("<Content>"),
        "safe mode: nothing in the clear"
    );
    let mut parts = [
        token.as_str(),
        q["timestamp"].as_str(),
        q["nonce"].as_str(),
        enc.as_str(),
    ];
    parts.sort_unstable();
    assert_eq!(
        hex::encode(Sha1::digest(parts.concat().as_bytes())),
        q["msg_signature"]
    );
    assert!(q.contains_key("openid"), "{q:?}");
    let mut buf = base64::engine::general_purpose::STANDARD
        .decode(&enc)
        .unwrap();
    let len = buf.len();
    cbc::Decryptor::<aes::Aes256>::new_from_slices(&key, &key[..16])
        .unwrap()
        .decrypt_padded_mut::<NoPadding>(&mut buf[..len])
        .unwrap();
    let pad = *buf.last().unwrap() as usize;
    let n = u32::from_be_bytes(buf[16..20].try_into().unwrap()) as usize;
    let xml = String::from_utf8(buf[20..20 + n].to_vec()).unwrap();
    let bound = String::from_utf8(buf[20 + n..len - pad].to_vec()).unwrap();
    messages.lock().unwrap().push((appid, to, xml, bound));
    "success"
}

async fn receiver(token: &str, aes: &str) -> Receiver {
    let key: [u8; 32] = base64::engine::general_purpose::STANDARD
        .decode(format!("{aes}="))
        .unwrap()
        .try_into()
        .unwrap();
    let inbox: Inbox = Arc::default();
    let messages: Messages = Arc::default();
    let app = Router::new()
        .route("/events", post(receive))
        .with_state((inbox.clone(), token.to_owned(), key))
        .merge(
            Router::new()
                .route("/msg/{appid}", post(receive_message))
                .with_state((messages.clone(), token.to_owned(), key)),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Receiver {
        url: format!("{base}/events"),
        message_url: format!("{base}/msg/$APPID$"),
        inbox,
        messages,
    }
}

fn field(xml: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let rest = xml.split(&open).nth(1)?;
    let v = rest.split(&format!("</{name}>")).next()?;
    Some(
        v.trim_start_matches("<![CDATA[")
            .trim_end_matches("]]>")
            .to_owned(),
    )
}

struct T {
    h: SimHandle,
    http: reqwest::Client,
}

impl T {
    async fn post(&self, path: &str, body: Value) -> Value {
        let r = self
            .http
            .post(format!("{}{path}", self.h.url()))
            .json(&body)
            .send()
            .await
            .unwrap();
        let text = r.text().await.unwrap();
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    }
    async fn get(&self, path: &str) -> Value {
        let r = self
            .http
            .get(format!("{}{path}", self.h.url()))
            .send()
            .await
            .unwrap();
        r.json().await.unwrap()
    }
    fn errcode(v: &Value) -> i64 {
        v["errcode"].as_i64().unwrap_or(0)
    }
}

/// Waits for the `n`-th push whose InfoType is `kind`.
async fn pushed(inbox: &Inbox, kind: &str, n: usize) -> String {
    let start = Instant::now();
    loop {
        let got: Vec<String> = inbox
            .lock()
            .unwrap()
            .iter()
            .map(|(_, x)| x.clone())
            .filter(|x| field(x, "InfoType").as_deref() == Some(kind))
            .collect();
        if got.len() >= n {
            return got[n - 1].clone();
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no {kind} push #{n}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_platform_from_ticket_to_deauthorization() {
    let h = spawn(SimConfig::default()).await.unwrap();
    let t = T {
        h,
        http: reqwest::Client::new(),
    };
    let sim = t.h.sim().clone();
    let token = "platformtoken";
    let aes = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    let aes = aes.trim_end_matches('=');
    let rx = receiver(token, aes).await;
    let reg = t
        .post(
            "/_sim/platforms",
            json!({"token": token, "encoding_aes_key": aes, "event_url": rx.url, "message_url": rx.message_url}),
        )
        .await;
    let component = reg["component_appid"].as_str().unwrap().to_owned();
    let secret = reg["secret"].as_str().unwrap().to_owned();

    // 1. A ticket at once, then one every ten minutes, each new.
    let first = pushed(&rx.inbox, "component_verify_ticket", 1).await;
    assert_eq!(field(&first, "AppId").as_deref(), Some(component.as_str()));
    let ticket1 = field(&first, "ComponentVerifyTicket").unwrap();
    assert_eq!(
        sim.latest_ticket(&component).as_deref(),
        Some(ticket1.as_str())
    );
    sim.advance(600);
    let second = pushed(&rx.inbox, "component_verify_ticket", 2).await;
    let ticket2 = field(&second, "ComponentVerifyTicket").unwrap();
    assert_ne!(ticket1, ticket2);

    // 3. The component token and the ticket's rules.
    let ct = |ticket: &str, secret: &str| json!({"component_appid": component, "component_appsecret": secret, "component_verify_ticket": ticket});
    let path = "/cgi-bin/component/api_component_token";
    let e = t.post(path, ct("", &secret)).await;
    assert_eq!(T::errcode(&e), 61006, "{e}");
    assert!(e["errmsg"]
        .as_str()
        .unwrap()
        .starts_with("component ticket is invalid rid: "));
    assert_eq!(T::errcode(&t.post(path, ct("null", &secret)).await), 61006);
    assert_eq!(
        T::errcode(&t.post(path, ct(&ticket2, "wrong")).await),
        40125
    );
    // 4. An older ticket, under 12 hours old, still works.
    let v = t.post(path, ct(&ticket1, &secret)).await;
    assert_eq!(v["expires_in"], 7200, "{v}");
    let ctoken1 = v["component_access_token"].as_str().unwrap().to_owned();

    // 5. A new component token leaves the old one 300 s.
    let v = t.post(path, ct(&ticket2, &secret)).await;
    let ctoken = v["component_access_token"].as_str().unwrap().to_owned();
    let preauth = |tok: &str| {
        let tok = tok.to_owned();
        let t = &t;
        let component = component.clone();
        async move {
            t.post(
                &format!("/cgi-bin/component/api_create_preauthcode?component_access_token={tok}"),
                json!({"component_appid": component}),
            )
            .await
        }
    };
    assert!(preauth(&ctoken1).await["pre_auth_code"].is_string());
    sim.advance(301);
    let e = preauth(&ctoken1).await;
    assert_eq!(T::errcode(&e), 40001, "{e}");
    // Newer pages write access_token= for the same calls: both are accepted.
    let v = t
        .post(
            &format!("/cgi-bin/component/api_create_preauthcode?access_token={ctoken}"),
            json!({"component_appid": component}),
        )
        .await;
    let pre = v["pre_auth_code"].as_str().unwrap().to_owned();
    assert!(pre.starts_with("preauthcode@@@"), "{v}");
    assert_eq!(v["expires_in"], 600);

    // 8. The merchant scans the page: a redirect with auth_code, and an `authorized` push.
    let (merchant, _) = sim.add_app(None, None, true);
    let (other_app, _) = sim.add_app(None, None, false);
    // A page the merchant cannot use (another account's) leaves the code usable.
    let wrong = t
        .post(
            &format!("/_sim/platforms/{component}/authorize"),
            json!({"pre_auth_code": pre, "authorizer_appid": merchant, "redirect_uri": "https://x", "biz_appid": other_app}),
        )
        .await;
    assert!(wrong["error"].as_str().unwrap().contains("only"), "{wrong}");
    let auth = t
        .post(
            &format!("/_sim/platforms/{component}/authorize"),
            json!({"pre_auth_code": pre, "authorizer_appid": merchant, "redirect_uri": "https://platform.example/back?x=1"}),
        )
        .await;
    let code = auth["auth_code"].as_str().unwrap().to_owned();
    assert_eq!(auth["event"], "authorized");
    assert!(auth["redirect"]
        .as_str()
        .unwrap()
        .starts_with("https://platform.example/back?x=1&auth_code=queryauthcode%40%40%40"));
    assert!(auth["redirect"]
        .as_str()
        .unwrap()
        .ends_with("&expires_in=600"));
    let ev = pushed(&rx.inbox, "authorized", 1).await;
    assert_eq!(
        field(&ev, "AuthorizerAppid").as_deref(),
        Some(merchant.as_str())
    );
    assert_eq!(
        field(&ev, "AuthorizationCode").as_deref(),
        Some(code.as_str())
    );
    let expires: i64 = field(&ev, "AuthorizationCodeExpiredTime")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        expires,
        sim.now() + 600,
        "an absolute Unix time, as real pushes show"
    );
    // A pre-auth code works once.
    let again = t
        .post(
            &format!("/_sim/platforms/{component}/authorize"),
            json!({"pre_auth_code": pre, "authorizer_appid": merchant, "redirect_uri": "https://x"}),
        )
        .await;
    assert!(again["error"].as_str().unwrap().contains("used"), "{again}");

    // 9. api_query_auth: an authorizer token that works on the merchant's mini program APIs.
    let q = |p: &str| format!("/cgi-bin/component/{p}?component_access_token={ctoken}");
    let v = t
        .post(
            &q("api_query_auth"),
            json!({"component_appid": component, "authorization_code": code}),
        )
        .await;
    let info = &v["authorization_info"];
    assert_eq!(info["authorizer_appid"], merchant.as_str(), "{v}");
    let atoken = info["authorizer_access_token"].as_str().unwrap().to_owned();
    let refresh = info["authorizer_refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(info["func_info"][0]["funcscope_category"]["id"].is_i64());
    let mp_call = |tok: &str| {
        let (t, tok) = (&t, tok.to_owned());
        async move {
            t.get(&format!("/wxaapi/newtmpl/getcategory?access_token={tok}"))
                .await
        }
    };
    assert_eq!(T::errcode(&mp_call(&atoken).await), 0);

    // 10. api_authorizer_token: a new token, the same refresh token; the old one 300 s more.
    let at = |refresh: &str| json!({"component_appid": component, "authorizer_appid": merchant, "authorizer_refresh_token": refresh});
    let v = t.post(&q("api_authorizer_token"), at(&refresh)).await;
    assert_eq!(v["authorizer_refresh_token"], refresh.as_str(), "{v}");
    let atoken2 = v["authorizer_access_token"].as_str().unwrap().to_owned();
    assert_eq!(T::errcode(&mp_call(&atoken).await), 0);
    assert_eq!(
        T::errcode(
            &t.post(&q("api_authorizer_token"), at("refreshtoken@@@nope"))
                .await
        ),
        61023
    );
    assert_eq!(
        T::errcode(&t.post(&q("api_authorizer_token"), at("")).await),
        61023
    );

    // 13. The list pages, with refresh tokens (recovery of a lost one).
    let list = |offset: i64, count: i64| {
        let (t, q) = (&t, q("api_get_authorizer_list"));
        let component = component.clone();
        async move {
            t.post(
                &q,
                json!({"component_appid": component, "offset": offset, "count": count}),
            )
            .await
        }
    };
    assert_eq!(T::errcode(&list(0, 501).await), 40097);
    let v = list(0, 500).await;
    assert_eq!(v["total_count"], 1);
    assert_eq!(v["list"][0]["refresh_token"], refresh.as_str());

    // 15. Login of the merchant's users through the component.
    let (jscode, openid) = sim.login(&merchant, None, None, false).unwrap();
    let login = |appid: &str, code: &str| {
        format!("/sns/component/jscode2session?appid={appid}&js_code={code}&grant_type=authorization_code&component_appid={component}&component_access_token={ctoken}")
    };
    let v = t.get(&login(&merchant, &jscode)).await;
    assert_eq!(v["openid"], openid.as_str(), "{v}");
    assert!(v["session_key"].is_string());
    assert!(v["unionid"].is_string(), "the merchant's app has a unionid");
    assert_eq!(
        T::errcode(&t.get(&login(&merchant, &jscode)).await),
        40163,
        "a code works once"
    );
    let (other_code, _) = sim.login(&other_app, None, None, false).unwrap();
    assert_eq!(
        T::errcode(&t.get(&login(&other_app, &other_code)).await),
        61003
    );

    // 16. The merchant's messages go to the platform's message URL ($APPID$ replaced),
    // encrypted with the platform's key and bound to the platform's appid.
    let v = t
        .post(
            "/_sim/user-message",
            json!({"appid": merchant, "openid": openid, "kind": "text", "content": "你好，商家"}),
        )
        .await;
    assert_eq!(v["pushed"]["delivered"], true, "{v}");
    let (path_appid, to, xml, bound) = rx.messages.lock().unwrap()[0].clone();
    assert_eq!(path_appid, merchant);
    assert!(to.starts_with("gh_"), "{to}");
    assert_eq!(bound, component);
    assert!(xml.contains("你好，商家"), "{xml}");

    // 7.2: clear_quota/v2 with the secret resets the platform's or an authorizer's quota.
    let v = t
        .post(
            "/cgi-bin/component/clear_quota/v2",
            json!({"component_appid": component, "appsecret": secret, "appid": merchant}),
        )
        .await;
    assert_eq!(T::errcode(&v), 0, "{v}");
    let v = t
        .post(
            "/cgi-bin/component/clear_quota/v2",
            json!({"component_appid": component, "appsecret": secret, "appid": other_app}),
        )
        .await;
    assert_eq!(T::errcode(&v), 40013, "{v}");

    // 11. Re-authorization with other permissions: `updateauthorized`, a new refresh token,
    // the old one refused, the old authorizer tokens dead at once.
    let pre2 = preauth(&ctoken).await["pre_auth_code"]
        .as_str()
        .unwrap()
        .to_owned();
    let auth2 = t
        .post(
            &format!("/_sim/platforms/{component}/authorize"),
            json!({"pre_auth_code": pre2, "authorizer_appid": merchant, "redirect_uri": "https://x", "func_ids": [17, 18]}),
        )
        .await;
    assert_eq!(auth2["event"], "updateauthorized", "{auth2}");
    pushed(&rx.inbox, "updateauthorized", 1).await;
    assert_eq!(
        T::errcode(&t.post(&q("api_authorizer_token"), at(&refresh)).await),
        61023
    );
    assert_eq!(T::errcode(&mp_call(&atoken2).await), 40001);
    let v = t
        .post(
            &q("api_query_auth"),
            json!({"component_appid": component, "authorization_code": auth2["auth_code"]}),
        )
        .await;
    let refresh2 = v["authorization_info"]["authorizer_refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(refresh2, refresh);
    assert_eq!(
        T::errcode(&t.post(&q("api_authorizer_token"), at(&refresh2)).await),
        0
    );
    // An authorization code past its 600 s: 61010.
    sim.advance(601);
    let v = t
        .post(
            &q("api_query_auth"),
            json!({"component_appid": component, "authorization_code": auth2["auth_code"]}),
        )
        .await;
    assert_eq!(T::errcode(&v), 61010, "{v}");

    // 12. De-authorization: an `unauthorized` push with four fields, 61003 everywhere.
    let v = t
        .post(
            &format!("/_sim/platforms/{component}/deauthorize"),
            json!({"authorizer_appid": merchant}),
        )
        .await;
    assert!(v["push"]["delivered"].as_bool().unwrap(), "{v}");
    let ev = pushed(&rx.inbox, "unauthorized", 1).await;
    assert!(field(&ev, "AuthorizationCode").is_none(), "{ev}");
    assert_eq!(
        field(&ev, "AuthorizerAppid").as_deref(),
        Some(merchant.as_str())
    );
    // (the component token from the start has expired by now: a fresh one)
    let latest = sim.latest_ticket(&component).unwrap();
    let ctoken = t.post(path, ct(&latest, &secret)).await["component_access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let q = |p: &str| format!("/cgi-bin/component/{p}?component_access_token={ctoken}");
    assert_eq!(
        T::errcode(&t.post(&q("api_authorizer_token"), at(&refresh2)).await),
        61003
    );
    let v = t
        .post(
            &q("api_get_authorizer_list"),
            json!({"component_appid": component, "offset": 0, "count": 10}),
        )
        .await;
    assert_eq!(v["total_count"], 0, "{v}");

    // 2. api_start_push_ticket: answered pushes mean "a normal state"; a push follows.
    let before = rx.inbox.lock().unwrap().len();
    let v = t
        .post(
            "/cgi-bin/component/api_start_push_ticket",
            json!({"component_appid": component, "component_secret": secret}),
        )
        .await;
    assert_eq!(v["errmsg"], "in a normal state", "{v}");
    let start = Instant::now();
    while rx.inbox.lock().unwrap().len() == before {
        assert!(start.elapsed() < Duration::from_secs(5), "no push");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let v = t
        .post(
            "/cgi-bin/component/api_start_push_ticket",
            json!({"component_appid": component, "component_secret": "wrong"}),
        )
        .await;
    assert_eq!(T::errcode(&v), 40125);

    // 3. A ticket older than 12 hours: 61005 (the ones pushed since still work).
    sim.advance(12 * 3600);
    let v = t.post(path, ct(&ticket2, &secret)).await;
    assert_eq!(T::errcode(&v), 61005, "{v}");

    // Changing a URL keeps the credentials.
    let v = t
        .post(
            "/_sim/platforms",
            json!({"component_appid": component, "event_url": rx.url}),
        )
        .await;
    assert_eq!(v["secret"], secret.as_str());
    assert_eq!(v["token"], token);

    // The control view shows no secret; a reset keeps the registration.
    let view = t.get("/_sim/platforms").await;
    assert!(!view.to_string().contains(&secret) && !view.to_string().contains(&refresh2));
    sim.reset();
    assert_eq!(
        t.get("/_sim/platforms").await["platforms"][0]["component_appid"],
        component.as_str()
    );
}

/// §9 item 3 (61004) and item 14 (options, 61007) over the wire: the two forms of the option
/// calls, their errors, the IP whitelist on every component call, what the listing shows.
#[tokio::test]
async fn options_permission_sets_and_the_ip_whitelist() {
    let h = spawn(SimConfig::default()).await.unwrap();
    let t = T {
        h,
        http: reqwest::Client::new(),
    };
    let sim = t.h.sim().clone();
    // Registered with a whitelist that lets this machine in.
    let reg = t
        .post("/_sim/platforms", json!({"ip_whitelist": ["127.0.0.1"]}))
        .await;
    let component = reg["component_appid"].as_str().unwrap().to_owned();
    sim.push_ticket(&component).await.unwrap();
    let ct = json!({"component_appid": component, "component_appsecret": reg["secret"], "component_verify_ticket": sim.latest_ticket(&component)});
    let ctoken = t
        .post("/cgi-bin/component/api_component_token", ct.clone())
        .await["component_access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let pre = t
        .post(
            &format!("/cgi-bin/component/api_create_preauthcode?component_access_token={ctoken}"),
            json!({}),
        )
        .await["pre_auth_code"]
        .as_str()
        .unwrap()
        .to_owned();
    let (merchant, merchant_secret) = sim.add_app(None, None, false);
    let auth = t
        .post(
            &format!("/_sim/platforms/{component}/authorize"),
            json!({"pre_auth_code": pre, "authorizer_appid": merchant, "redirect_uri": "https://x", "func_ids": [18]}),
        )
        .await;
    let q = t
        .post(
            &format!("/cgi-bin/component/api_query_auth?component_access_token={ctoken}"),
            json!({"authorization_code": auth["auth_code"]}),
        )
        .await;
    let atoken = q["authorization_info"]["authorizer_access_token"]
        .as_str()
        .unwrap()
        .to_owned();

    // Options with the component token: unknown name 61012, bad value 61013, a number taken
    // as WeChat's own samples send it.
    let get = |name: &str| json!({"component_appid": component, "authorizer_appid": merchant, "option_name": name});
    let path =
        format!("/cgi-bin/component/api_get_authorizer_option?component_access_token={ctoken}");
    let v = t.post(&path, get("voice_recognize")).await;
    assert_eq!(v["option_value"], "0", "{v}");
    assert_eq!(v["authorizer_appid"], merchant.as_str());
    assert_eq!(T::errcode(&t.post(&path, get("volume")).await), 61012);
    let set =
        format!("/cgi-bin/component/api_set_authorizer_option?component_access_token={ctoken}");
    let mut bad = get("voice_recognize");
    bad["option_value"] = json!("7");
    assert_eq!(T::errcode(&t.post(&set, bad).await), 61013);
    let mut good = get("voice_recognize");
    good["option_value"] = json!(1);
    assert_eq!(T::errcode(&t.post(&set, good).await), 0);
    // The newer form with the authorizer token sees it; the merchant's own token is not a
    // platform's: 86000.
    let v = t
        .post(
            &format!("/cgi-bin/component/get_authorizer_option?access_token={atoken}"),
            json!({"option_name": "voice_recognize"}),
        )
        .await;
    assert_eq!(v["option_value"], "1", "{v}");
    let own = t
        .get(&format!(
            "/cgi-bin/token?grant_type=client_credential&appid={merchant}&secret={merchant_secret}"
        ))
        .await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let v = t
        .post(
            &format!("/cgi-bin/component/set_authorizer_option?access_token={own}"),
            json!({"option_name": "voice_recognize", "option_value": "0"}),
        )
        .await;
    assert_eq!(T::errcode(&v), 86000, "{v}");

    // 61007: the merchant granted 18 only — data analysis works, customer service does not;
    // its own token calls anything.
    let cs = json!({"touser": "o", "msgtype": "text", "text": {"content": "hi"}});
    let v = t
        .post(
            &format!("/cgi-bin/message/custom/send?access_token={atoken}"),
            cs.clone(),
        )
        .await;
    assert_eq!(T::errcode(&v), 61007, "{v}");
    assert!(v["errmsg"]
        .as_str()
        .unwrap()
        .starts_with("api is unauthorized to component rid: "));
    let v = t
        .post(
            &format!("/cgi-bin/message/custom/send?access_token={own}"),
            cs,
        )
        .await;
    // Its own token gets past the permission sets (to the message's own check: no such user).
    assert_eq!(T::errcode(&v), 40003, "{v}");

    // The whitelist: listed, then shutting this machine out of every component call, the
    // token call and component login included; `[]` refuses all, `null` lifts it.
    let listed = t.get("/_sim/platforms").await;
    let p = &listed["platforms"][0];
    assert_eq!(p["ip_whitelist"], json!(["127.0.0.1"]));
    assert_eq!(
        p["authorizers"][0]["options"],
        json!({"voice_recognize": "1"})
    );
    let put = |ips: Value| {
        let t = &t;
        let component = component.clone();
        async move {
            t.http
                .put(format!(
                    "{}/_sim/platforms/{component}/ip_whitelist",
                    t.h.url()
                ))
                .json(&json!({ "ips": ips }))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(put(json!([])).await, 200);
    let e = t.post(&path, get("voice_recognize")).await;
    assert_eq!(T::errcode(&e), 61004, "{e}");
    assert!(e["errmsg"]
        .as_str()
        .unwrap()
        .starts_with("access clientip is not registered requestIP: 127.0.0.1 rid: "));
    assert_eq!(
        T::errcode(
            &t.post("/cgi-bin/component/api_component_token", ct.clone())
                .await
        ),
        61004
    );
    let (code, _) = sim.login(&merchant, None, None, false).unwrap();
    let login = format!(
        "/sns/component/jscode2session?appid={merchant}&js_code={code}&grant_type=authorization_code&component_appid={component}&component_access_token={ctoken}"
    );
    assert_eq!(T::errcode(&t.get(&login).await), 61004);
    // What the platform does for a merchant with an authorizer token is a platform's call too:
    // the mini program API and the newer option form; the merchant's own token is not.
    let summary = |tok: &str| {
        let (t, tok) = (&t, tok.to_owned());
        async move {
            t.post(
                &format!("/datacube/getweanalysisappiddailysummarytrend?access_token={tok}"),
                json!({"begin_date": "20200101", "end_date": "20200101"}),
            )
            .await
        }
    };
    assert_eq!(T::errcode(&summary(&atoken).await), 61004);
    let v = t
        .post(
            &format!("/cgi-bin/component/get_authorizer_option?access_token={atoken}"),
            json!({"option_name": "voice_recognize"}),
        )
        .await;
    assert_eq!(T::errcode(&v), 61004, "{v}");
    assert!(summary(&own).await["list"].is_array());
    // This machine as an IPv4-mapped IPv6 address is this machine.
    assert_eq!(put(json!(["::ffff:127.0.0.1"])).await, 200);
    let (code2, _) = sim.login(&merchant, None, None, false).unwrap();
    let v = t.get(&login.replace(&code, &code2)).await;
    assert!(v["openid"].is_string(), "{v}");
    // Lifted: component login and the merchant's API work again; a body without `ips`, an
    // address that is not one, an unknown platform are refused.
    assert_eq!(put(json!(null)).await, 200);
    let v = summary(&atoken).await;
    assert!(v["list"].is_array(), "{v}");
    assert_eq!(put(json!(["not an address"])).await, 400);
    let no_ips = t
        .http
        .put(format!(
            "{}/_sim/platforms/{component}/ip_whitelist",
            t.h.url()
        ))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(no_ips.status(), 400);
    let unknown = t
        .http
        .put(format!(
            "{}/_sim/platforms/wxnobody/ip_whitelist",
            t.h.url()
        ))
        .json(&json!({"ips": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    // A reset keeps the registration, whitelist included.
    assert_eq!(put(json!([])).await, 200);
    sim.reset();
    assert_eq!(
        t.get("/_sim/platforms").await["platforms"][0]["ip_whitelist"],
        json!([])
    );
}
