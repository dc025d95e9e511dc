//! What the admin audit log says, and what an admin's version guards: the literal grant of a
//! broker client, where a webhook now points (its host, never its path), which admin read whose
//! phone number and which app's pushed messages; a failed admin authentication is one warn line
//! naming the source and the reason, never the key presented; deleting an app ends its sessions
//! (registering it again does not revive them); a change made from a stale version is refused.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::{sqlite_url, world, World};
use serde_json::{json, Value};
use weapp::TokenMode;
use weapp_server::config::AdminConfig;
use weapp_sim::{PushFormat, PushMode, PushTarget};
use weapp_test_support::PgDatabase;

const ADMIN: &str = "admin-key-0123456789abcdefghijkl";
const OTHER_ADMIN: &str = "admin-key-second-0123456789abcdef";
const AES_KEY: &str = "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR";

fn admins() -> Vec<AdminConfig> {
    [("ops", ADMIN), ("night-shift", OTHER_ADMIN)]
        .into_iter()
        .map(|(name, key)| AdminConfig {
            name: name.into(),
            key: Some(key.into()),
            key_env: None,
            key_sha256: None,
        })
        .collect()
}

/// Every record of the audit log, oldest first.
async fn audit_records(w: &World, url: &str) -> Vec<Value> {
    let (s, v) = w
        .call(
            "GET",
            format!("{url}/v1/admin/audit?limit=100"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    v["records"].as_array().unwrap().clone()
}

fn find<'a>(records: &'a [Value], action: &str, target: &str) -> Vec<&'a Value> {
    records
        .iter()
        .filter(|r| r["action"] == action && r["target"] == target)
        .collect()
}

#[tokio::test]
async fn the_audit_log_shows_the_literal_grant_the_webhook_host_and_who_read_what() {
    let w = world().await;
    let mut config = w.config(&sqlite_url(), None, TokenMode::Stable);
    config.admins = admins();
    let server = weapp_server::spawn(config).await.unwrap();
    let url = server.url().to_owned();
    let call = |method: &'static str, key: &'static str, path: String, body: Option<Value>| {
        let (w, url) = (&w, url.clone());
        async move {
            w.call(method, format!("{url}{path}"), Some(key), body)
                .await
        }
    };

    // A client given every app, then narrowed to one.
    let (s, v) = call(
        "POST",
        ADMIN,
        "/v1/admin/clients".into(),
        Some(json!({"name": "everything", "apps": ["*"], "scopes": ["token:read", "events:read"]})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = call(
        "PATCH",
        ADMIN,
        "/v1/admin/clients/everything".into(),
        Some(json!({"apps": [w.appid]})),
    )
    .await;
    assert_eq!(s, 200, "{v}");

    // An app whose webhook points somewhere, then elsewhere; the paths carry secrets.
    let (appid, secret) = w.sim.sim().add_app(None, None, false);
    let push = |hook: &str| {
        json!({"token": "pushtoken1", "encoding_aes_key": AES_KEY, "webhook_url": hook,
            "webhook_secret": "whsec_audit_0123456789"})
    };
    let (s, v) = call(
        "POST",
        ADMIN,
        "/v1/admin/apps".into(),
        Some(
            json!({"appid": appid, "secret": secret, "api_base": w.sim.url(),
            "push": push("http://127.0.0.1:9/hooks/first-path-secret?sig=abc")}),
        ),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = call(
        "PATCH",
        ADMIN,
        format!("/v1/admin/apps/{appid}"),
        Some(json!({"push": push("http://127.0.0.2:9/hooks/second-path-secret")})),
    )
    .await;
    assert_eq!(s, 200, "{v}");

    // A platform's webhook, likewise.
    let (s, v) = call(
        "POST",
        ADMIN,
        "/v1/admin/platforms".into(),
        Some(
            json!({"component_appid": "wxauditplatform01", "secret": "platform-secret-0123",
            "token": "ptoken", "encoding_aes_key": AES_KEY, "api_base": w.sim.url(),
            "webhook_url": "http://127.0.0.3:9/platform/path-secret",
            "webhook_secret": "whsec_audit_platform"}),
        ),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = call(
        "PATCH",
        ADMIN,
        "/v1/admin/platforms/wxauditplatform01".into(),
        Some(
            json!({"webhook_url": "http://127.0.0.4:9/platform/path-secret2",
            "webhook_secret": "whsec_audit_platform2"}),
        ),
    )
    .await;
    assert_eq!(s, 200, "{v}");

    // A user binds a phone number; the second admin reads it, and the app's pushed messages.
    let (session, openid) = w.login(&server, None).await;
    let phone_code = w
        .sim
        .sim()
        .phone_code(&w.appid, &openid, Some("13900002222".into()))
        .unwrap();
    let (s, v) = w
        .call(
            "POST",
            format!("{url}/v1/me/phone"),
            Some(&session),
            Some(json!({"code": phone_code})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = call(
        "GET",
        OTHER_ADMIN,
        format!("/v1/admin/users?appid={}&openid={openid}", w.appid),
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["users"][0]["phone_number"], "13900002222");
    // A user's message pushed to the app (its webhook is down: it waits in the log).
    w.sim
        .sim()
        .set_push_target(
            &appid,
            PushTarget {
                url: format!("{url}/v1/apps/{appid}/push"),
                token: "pushtoken1".into(),
                encoding_aes_key: Some(AES_KEY.into()),
                mode: PushMode::Safe,
                format: PushFormat::Json,
            },
        )
        .unwrap();
    let message = json!({"FromUserName": openid, "MsgType": "text", "Content": "my card is 6222021234", "MsgId": 1});
    let d = w
        .sim
        .sim()
        .push(&appid, message.as_object().unwrap().clone())
        .await
        .unwrap();
    assert!(d.delivered, "{d:?}");
    let (s, v) = call(
        "GET",
        OTHER_ADMIN,
        format!("/v1/admin/apps/{appid}/events"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["events"][0]["payload"]["Content"],
        "my card is 6222021234"
    );
    // An empty page shows no one's messages: not a read worth a row.
    let (s, v) = call(
        "GET",
        OTHER_ADMIN,
        format!("/v1/admin/apps/{}/events", w.appid),
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["events"], json!([]));

    let records = audit_records(&w, &url).await;
    let all = Value::Array(records.clone()).to_string();
    // The literal grant: the wildcard, then the one app, with the scopes.
    let created = find(&records, "client.create", "everything");
    assert_eq!(created.len(), 1, "{all}");
    assert_eq!(created[0]["detail"]["apps"], json!(["*"]), "{all}");
    assert_eq!(
        created[0]["detail"]["scopes"],
        json!(["token:read", "events:read"])
    );
    let updated = find(&records, "client.update", "everything");
    assert_eq!(updated.len(), 1, "{all}");
    assert_eq!(updated[0]["detail"]["apps"], json!([w.appid]), "{all}");
    assert_eq!(
        updated[0]["detail"]["scopes"],
        json!(["token:read", "events:read"])
    );
    // Where the webhook points: its host, never its path or query.
    let created = find(&records, "app.create", &appid);
    assert_eq!(
        created[0]["detail"]["webhook_host"], "http://127.0.0.1:9",
        "{all}"
    );
    let updated = find(&records, "app.update", &appid);
    assert_eq!(
        updated[0]["detail"]["webhook_host"], "http://127.0.0.2:9",
        "{all}"
    );
    let created = find(&records, "platform.create", "wxauditplatform01");
    assert_eq!(
        created[0]["detail"]["webhook_host"], "http://127.0.0.3:9",
        "{all}"
    );
    let updated = find(&records, "platform.update", "wxauditplatform01");
    assert_eq!(
        updated[0]["detail"]["webhook_host"], "http://127.0.0.4:9",
        "{all}"
    );
    for secret in [
        "path-secret",
        "sig=abc",
        "whsec_audit",
        "pushtoken1",
        AES_KEY,
        &secret,
    ] {
        assert!(!all.contains(secret), "{secret} in {all}");
    }
    // Who read whose phone number: the admin, the appid and openid — not the number.
    let read = find(&records, "user.read", &format!("{}/{openid}", w.appid));
    assert_eq!(read.len(), 1, "{all}");
    assert_eq!(read[0]["admin"], "night-shift");
    assert_eq!(read[0]["detail"]["appid"], w.appid.as_str());
    assert_eq!(read[0]["detail"]["openid"], openid.as_str());
    assert_eq!(read[0]["detail"]["phone_number"], true);
    assert!(!all.contains("13900002222"), "{all}");
    // Who read which app's pushed messages.
    let read = find(&records, "events.read", &appid);
    assert_eq!(read.len(), 1, "{all}");
    assert_eq!(read[0]["admin"], "night-shift");
    assert_eq!(read[0]["detail"]["count"], 1, "{all}");
    assert!(find(&records, "events.read", &w.appid).is_empty(), "{all}");
    assert!(!all.contains("6222021234"), "{all}");
    server.shutdown().await.unwrap();
}

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

/// One current-thread runtime: the server's tasks run on this thread, under this test's
/// subscriber (and no other test's).
#[tokio::test]
async fn a_failed_admin_authentication_is_one_warn_line_without_the_key() {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let w = world().await;
    let mut config = w.config(&sqlite_url(), None, TokenMode::Stable);
    config.admins = admins();
    let server = weapp_server::spawn(config).await.unwrap();
    let url = server.url().to_owned();
    const PRESENTED: &str = "admin-key-presented-by-a-guesser-0123";
    let (s, _) = w
        .call("GET", format!("{url}/v1/admin/apps"), Some(PRESENTED), None)
        .await;
    assert_eq!(s, 401);
    let (s, _) = w
        .call("GET", format!("{url}/v1/admin/fleet"), None, None)
        .await;
    assert_eq!(s, 401);
    let (s, _) = w
        .call("GET", format!("{url}/v1/admin/fleet"), Some(ADMIN), None)
        .await;
    assert_eq!(s, 200);
    server.shutdown().await.unwrap();

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    let failures: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("admin authentication failed"))
        .collect();
    assert_eq!(failures.len(), 2, "{logs}");
    for line in &failures {
        assert!(line.contains("WARN"), "{line}");
        assert!(line.contains("source=127.0.0.1"), "{line}");
    }
    assert!(failures[0].contains("unknown key"), "{}", failures[0]);
    assert!(failures[1].contains("no key"), "{}", failures[1]);
    assert!(!logs.contains(PRESENTED), "{logs}");
    assert!(!logs.contains("presented-by"), "{logs}");
    assert!(!logs.contains(ADMIN), "{logs}");
}

async fn deleting_an_app_ends_its_sessions(database_url: &str) {
    let w = world().await;
    let mut config = w.config(database_url, None, TokenMode::Stable);
    config.admins = admins();
    let server = weapp_server::spawn(config).await.unwrap();
    let url = server.url().to_owned();
    let (appid, secret) = w.sim.sim().add_app(None, None, false);
    let register = json!({"appid": appid, "secret": secret, "api_base": w.sim.url()});
    let (s, v) = w
        .call(
            "POST",
            format!("{url}/v1/admin/apps"),
            Some(ADMIN),
            Some(register.clone()),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (code, _) = w.sim.sim().login(&appid, None, None, false).unwrap();
    let (s, v) = w.post_login(&url, &appid, &code).await;
    assert_eq!(s, 200, "{v}");
    let token = v["token"].as_str().unwrap().to_owned();
    let access = v["access_token"].as_str().unwrap().to_owned();
    let openid = v["openid"].as_str().unwrap().to_owned();
    for bearer in [&token, &access] {
        let (s, v) = w
            .call("GET", format!("{url}/v1/me"), Some(bearer), None)
            .await;
        assert_eq!(s, 200, "{v}");
    }

    let (s, v) = w
        .call(
            "DELETE",
            format!("{url}/v1/admin/apps/{appid}"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(s, 204, "{v}");
    // A session written after the deletion (a login another instance took before it learned of
    // it) does not come back with the new registration either.
    let store = &server.state().store;
    let user = store
        .user_by_openid(&appid, &openid)
        .await
        .unwrap()
        .unwrap();
    let late = [7u8; 32];
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    store
        .create_session(&late, user.id, now, now + 3_600_000)
        .await
        .unwrap();
    let (s, v) = w
        .call(
            "POST",
            format!("{url}/v1/admin/apps"),
            Some(ADMIN),
            Some(register),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    // The old session and its access token stay ended.
    for bearer in [&token, &access] {
        let (s, v) = w
            .call("GET", format!("{url}/v1/me"), Some(bearer), None)
            .await;
        assert_eq!(s, 401, "{v}");
    }
    assert!(!store.session_exists(&late).await.unwrap());
    // The deletion's audit row says how many sessions it ended; a new login works.
    let records = audit_records(&w, &url).await;
    let deleted = find(&records, "app.delete", &appid);
    assert_eq!(deleted[0]["detail"]["sessions_ended"], 1, "{records:?}");
    let (code, _) = w.sim.sim().login(&appid, None, None, false).unwrap();
    let (s, v) = w.post_login(&url, &appid, &code).await;
    assert_eq!(s, 200, "{v}");
    let (s, _) = w
        .call(
            "GET",
            format!("{url}/v1/me"),
            Some(v["token"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(s, 200);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn deleting_an_app_ends_its_sessions_on_sqlite() {
    deleting_an_app_ends_its_sessions(&sqlite_url()).await;
}

#[tokio::test]
async fn deleting_an_app_ends_its_sessions_on_postgres() {
    let db = PgDatabase::create().await;
    deleting_an_app_ends_its_sessions(db.url()).await;
}

#[tokio::test]
async fn a_change_made_from_a_stale_version_is_refused() {
    let w = world().await;
    let mut config = w.config(&sqlite_url(), None, TokenMode::Stable);
    config.admins = admins();
    let server = weapp_server::spawn(config).await.unwrap();
    let url = server.url().to_owned();
    let (appid, secret) = w.sim.sim().add_app(None, None, false);
    let (s, v) = w
        .call(
            "POST",
            format!("{url}/v1/admin/apps"),
            Some(ADMIN),
            Some(json!({"appid": appid, "secret": secret, "api_base": w.sim.url()})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let patch = |key: &'static str, path: String, if_match: String, body: Value| {
        let w = &w;
        async move {
            let resp = w
                .http
                .patch(path)
                .bearer_auth(key)
                .header("if-match", if_match)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap())
        }
    };

    // Two admins read the same app: its version is its ETag (and its `rev`).
    let app_url = format!("{url}/v1/admin/apps/{appid}");
    let mut seen = Vec::new();
    for key in [ADMIN, OTHER_ADMIN] {
        let (s, headers, v) = w.call_full("GET", app_url.clone(), Some(key), None).await;
        assert_eq!(s, 200, "{v}");
        let etag = headers["etag"].to_str().unwrap().to_owned();
        assert_eq!(etag, format!("\"{}\"", v["rev"]));
        seen.push(etag);
    }
    let (s, v) = patch(
        ADMIN,
        app_url.clone(),
        seen[0].clone(),
        json!({"token_mode": "classic"}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    // The second one's change, made from what it saw, is refused and not applied.
    let (s, v) = patch(
        OTHER_ADMIN,
        app_url.clone(),
        seen[1].clone(),
        json!({"enabled": false}),
    )
    .await;
    assert_eq!(s, 412, "{v}");
    assert_eq!(v["error"]["code"], "precondition_failed", "{v}");
    let (_, v) = w.call("GET", app_url.clone(), Some(ADMIN), None).await;
    assert_eq!(v["enabled"], true, "{v}");
    assert_eq!(v["token_mode"], "classic", "{v}");
    // A malformed version is a 400.
    let (s, v) = patch(
        ADMIN,
        app_url.clone(),
        "seven".into(),
        json!({"enabled": false}),
    )
    .await;
    assert_eq!(s, 400, "{v}");

    // The same for a client: its version is its `rev` in the listing.
    let (s, v) = w
        .call(
            "POST",
            format!("{url}/v1/admin/clients"),
            Some(ADMIN),
            Some(json!({"name": "shop", "apps": [appid]})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (_, list) = w
        .call(
            "GET",
            format!("{url}/v1/admin/clients"),
            Some(OTHER_ADMIN),
            None,
        )
        .await;
    let rev = list["clients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "shop")
        .unwrap()["rev"]
        .clone();
    let client_url = format!("{url}/v1/admin/clients/shop");
    let (s, v) = patch(
        ADMIN,
        client_url.clone(),
        format!("\"{rev}\""),
        json!({"scopes": ["token:read"]}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = patch(
        OTHER_ADMIN,
        client_url,
        format!("\"{rev}\""),
        json!({"apps": ["*"]}),
    )
    .await;
    assert_eq!(s, 412, "{v}");
    let (_, list) = w
        .call("GET", format!("{url}/v1/admin/clients"), Some(ADMIN), None)
        .await;
    let shop = list["clients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "shop")
        .unwrap()
        .clone();
    assert_eq!(shop["apps"], json!([appid]), "{shop}");
    assert_eq!(shop["scopes"], json!(["token:read"]), "{shop}");
    server.shutdown().await.unwrap();
}
