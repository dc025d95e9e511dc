//! Where webhooks and API calls may go. Webhook URLs and `api_base` pointing at internal
//! addresses (loopback, private networks, link-local and cloud metadata, CGNAT, unspecified,
//! multicast, broadcast, IPv4-mapped forms; a name is judged by what it resolves to) are refused
//! at configuration load, at the admin API and — against DNS rebinding — at delivery, unless
//! `webhook_allow_private` lists them. A platform's webhook secret is as long as an app's, and
//! moving its webhook takes the secret again. Webhook URLs are shown without their paths.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{sqlite_url, world, World};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weapp_server::Config;
use weapp_sim::{PushFormat, PushMode, PushTarget};

const DATA_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
const ADMIN: &str = "targets-admin-key-0123456789abcdef";
const AES: &str = "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR";
const HOOK_SECRET: &str = "whsec_targets_0123456789";

/// Internal targets, and a word the refusal must say about each.
const INTERNAL: &[(&str, &str)] = &[
    ("http://127.0.0.1:9/hook", "loopback"),
    ("http://0.0.0.0:9/hook", "unspecified"),
    // 127.0.0.1 written as one number.
    ("http://2130706433/hook", "loopback"),
    ("http://169.254.169.254/latest/meta-data/", "metadata"),
    ("http://10.0.0.5/hook", "private"),
    ("http://192.168.1.10:8080/hook", "private"),
    ("http://100.64.0.1/hook", "CGNAT"),
    ("http://[::1]:9/hook", "loopback"),
    ("http://[::ffff:127.0.0.1]:9/hook", "loopback"),
    ("http://[fd00::1]/hook", "private"),
    ("http://224.0.0.1/hook", "multicast"),
    ("http://255.255.255.255/hook", "broadcast"),
    // A name: judged by what it resolves to.
    ("http://localhost:9/hook", "loopback"),
];

/// A configuration from TOML: `top` (top-level settings), one admin, then `tables`.
fn config(top: &str, tables: &str) -> Config {
    config_on(&sqlite_url(), top, tables)
}

/// [`config`] on the database `database_url`.
fn config_on(database_url: &str, top: &str, tables: &str) -> Config {
    let text = format!(
        "listen = \"127.0.0.1:0\"\ndatabase_url = \"{database_url}\"\ndata_key = \"{DATA_KEY}\"\n{top}\n\n[[admins]]\nname = \"ops\"\nkey = \"{ADMIN}\"\n\n{tables}\n"
    );
    toml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// An app (API host a public test address) whose pushes go to `webhook`.
fn app_with_webhook(webhook: &str) -> String {
    format!(
        "[[apps]]\nappid = \"wxtargets0000001\"\nsecret = \"s\"\napi_base = \"https://203.0.113.7\"\nwarm = \"on_use\"\n[apps.push]\ntoken = \"pushtoken1\"\nencoding_aes_key = \"{AES}\"\nwebhook_url = \"{webhook}\"\nwebhook_secret = \"{HOOK_SECRET}\"\n"
    )
}

/// A platform with `api_base` and, when given, a webhook (with `secret`).
fn platform(api_base: &str, webhook: Option<(&str, &str)>) -> String {
    let mut t = format!(
        "[[platforms]]\ncomponent_appid = \"wxtargetsplat01\"\nsecret = \"component-secret\"\ntoken = \"platformtoken\"\nencoding_aes_key = \"{AES}\"\napi_base = \"{api_base}\"\n"
    );
    if let Some((url, secret)) = webhook {
        t.push_str(&format!(
            "webhook_url = \"{url}\"\nwebhook_secret = \"{secret}\"\n"
        ));
    }
    t
}

async fn refused_at_start(c: Config) -> String {
    match weapp_server::spawn(c).await {
        Ok(server) => {
            let _ = server.shutdown().await;
            panic!("started")
        }
        Err(e) => e.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_webhooks_and_api_hosts_are_refused_at_configuration_load() {
    for (url, word) in INTERNAL {
        let e = refused_at_start(config("", &app_with_webhook(url))).await;
        assert!(
            e.contains("apps[0].push.webhook_url") && e.contains(word),
            "{url}: {e}"
        );
        assert!(e.contains("webhook_allow_private"), "{url}: {e}");
        assert!(!e.contains('\n'), "one line: {e}");
        assert!(!e.contains("/hook"), "the path is not shown: {e}");
    }
    for (url, word) in [
        ("http://127.0.0.1:9/hook", "loopback"),
        ("http://169.254.169.254/", "metadata"),
        ("http://localhost:9/", "loopback"),
    ] {
        let e = refused_at_start(config(
            "",
            &platform("https://203.0.113.7", Some((url, HOOK_SECRET))),
        ))
        .await;
        assert!(
            e.contains("platforms[0].webhook_url") && e.contains(word),
            "{url}: {e}"
        );
    }
    // API hosts too.
    let e = refused_at_start(config(
        "",
        "[[apps]]\nappid = \"wxtargets0000001\"\nsecret = \"s\"\napi_base = \"http://127.0.0.1:9\"\n",
    ))
    .await;
    assert!(
        e.contains("apps[0].api_base") && e.contains("loopback"),
        "{e}"
    );
    let e = refused_at_start(config("", &platform("http://[::1]:9", None))).await;
    assert!(
        e.contains("platforms[0].api_base") && e.contains("loopback"),
        "{e}"
    );

    // Listed in webhook_allow_private: accepted (a name's every address must be listed).
    let allow = "webhook_allow_private = [\"127.0.0.0/8\", \"::1\", \"10.0.0.0/8\"]";
    for url in [
        "http://127.0.0.1:9/hook",
        "http://localhost:9/hook",
        "http://10.0.0.5/hook",
    ] {
        let server = weapp_server::spawn(config(allow, &app_with_webhook(url)))
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        server.shutdown().await.unwrap();
    }
    // ...and only the ranges listed.
    let e = refused_at_start(config(allow, &app_with_webhook("http://192.168.1.10/hook"))).await;
    assert!(e.contains("private"), "{e}");
    let e = refused_at_start(config("webhook_allow_private = [\"10.0.0.0/33\"]", "")).await;
    assert!(e.contains("webhook_allow_private"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_allow_list_comes_from_the_environment_too() {
    let e = refused_at_start(config("", &app_with_webhook("http://10.1.2.3/hook"))).await;
    assert!(e.contains("private"), "{e}");
    // (Each nextest test is its own process; the variable is this test's alone.)
    std::env::set_var("WEAPP_WEBHOOK_ALLOW_PRIVATE", "10.0.0.0/8, 127.0.0.1");
    let c = Config::load(None).unwrap();
    std::env::remove_var("WEAPP_WEBHOOK_ALLOW_PRIVATE");
    let mut c = Config {
        database_url: sqlite_url(),
        data_key: Some(DATA_KEY.into()),
        ..c
    };
    c.apps = config("", &app_with_webhook("http://10.1.2.3/hook")).apps;
    let server = weapp_server::spawn(c).await.unwrap();
    server.shutdown().await.unwrap();
}

/// A server with the admin API and no app, nothing allowed beyond the public internet.
async fn admin_server(top: &str) -> weapp_server::ServerHandle {
    weapp_server::spawn(config(top, "")).await.unwrap()
}

fn push_body(webhook: &str) -> Value {
    json!({"token": "pushtoken1", "encoding_aes_key": AES, "webhook_url": webhook,
           "webhook_secret": HOOK_SECRET})
}

fn platform_body(component_appid: &str, webhook: Option<&str>) -> Value {
    let mut body = json!({"component_appid": component_appid, "secret": "component-secret",
        "token": "platformtoken", "encoding_aes_key": AES, "api_base": "https://203.0.113.7"});
    if let Some(w) = webhook {
        body["webhook_url"] = json!(w);
        body["webhook_secret"] = json!(HOOK_SECRET);
    }
    body
}

fn assert_forbidden(s: u16, v: &Value, word: &str, what: &str) {
    assert_eq!(s, 400, "{what}: {v}");
    assert_eq!(v["error"]["code"], "forbidden_target", "{what}: {v}");
    let m = v["error"]["message"].as_str().unwrap();
    assert!(m.contains(word), "{what}: {m}");
    assert!(m.contains("webhook_allow_private"), "{what}: {m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_webhooks_and_api_hosts_are_refused_at_the_admin_api() {
    let w = world().await;
    let server = admin_server("").await;
    let url = server.url().to_owned();
    let call = |method: &'static str, path: String, body: Value| {
        let (w, url) = (&w, url.clone());
        async move {
            w.call(method, format!("{url}{path}"), Some(ADMIN), Some(body))
                .await
        }
    };
    for (i, (hook, word)) in INTERNAL.iter().enumerate() {
        let appid = format!("wxtargetsapp{i:04}");
        let (s, v) = call(
            "POST",
            "/v1/admin/apps".into(),
            json!({"appid": appid, "secret": "s", "api_base": "https://203.0.113.7",
                   "warm": "on_use", "push": push_body(hook)}),
        )
        .await;
        assert_forbidden(s, &v, word, &format!("app webhook {hook}"));
        let (s, v) = call(
            "POST",
            "/v1/admin/platforms".into(),
            platform_body(&format!("wxtargetsplat{i:04}"), Some(hook)),
        )
        .await;
        assert_forbidden(s, &v, word, &format!("platform webhook {hook}"));
    }
    for (base, word) in [
        ("http://127.0.0.1:9", "loopback"),
        ("http://localhost:9", "loopback"),
        ("http://169.254.169.254", "metadata"),
    ] {
        let (s, v) = call(
            "POST",
            "/v1/admin/apps".into(),
            json!({"appid": "wxtargetsbase01", "secret": "s", "api_base": base}),
        )
        .await;
        assert_forbidden(s, &v, word, &format!("app api_base {base}"));
        let mut body = platform_body("wxtargetsplatb1", None);
        body["api_base"] = json!(base);
        let (s, v) = call("POST", "/v1/admin/platforms".into(), body).await;
        assert_forbidden(s, &v, word, &format!("platform api_base {base}"));
    }

    // Changes are checked as creations are.
    let (s, v) = call(
        "POST",
        "/v1/admin/apps".into(),
        json!({"appid": "wxtargetsgood01", "secret": "s", "api_base": "https://203.0.113.7",
               "warm": "on_use", "push": push_body("https://203.0.113.9/hook")}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = call(
        "PATCH",
        "/v1/admin/apps/wxtargetsgood01".into(),
        json!({"push": push_body("http://169.254.169.254/latest/meta-data/")}),
    )
    .await;
    assert_forbidden(s, &v, "metadata", "app push change");
    let (s, v) = call(
        "PATCH",
        "/v1/admin/apps/wxtargetsgood01".into(),
        json!({"api_base": "http://10.0.0.1", "secret": "s2"}),
    )
    .await;
    assert_forbidden(s, &v, "private", "app api_base change");
    let (s, v) = call(
        "POST",
        "/v1/admin/platforms".into(),
        platform_body("wxtargetsgoodp1", Some("https://203.0.113.9/hook")),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = call(
        "PATCH",
        "/v1/admin/platforms/wxtargetsgoodp1".into(),
        json!({"webhook_url": "http://[::ffff:10.0.0.1]/hook", "webhook_secret": HOOK_SECRET}),
    )
    .await;
    assert_forbidden(s, &v, "private", "platform webhook change");
    let (s, v) = call(
        "PATCH",
        "/v1/admin/platforms/wxtargetsgoodp1".into(),
        json!({"api_base": "http://0.0.0.0:80", "secret": "component-secret-2"}),
    )
    .await;
    assert_forbidden(s, &v, "unspecified", "platform api_base change");
    server.shutdown().await.unwrap();

    // With the range allowed, the same is accepted.
    let server = admin_server("webhook_allow_private = [\"127.0.0.0/8\"]").await;
    let (s, v) = w
        .call(
            "POST",
            format!("{}/v1/admin/apps", server.url()),
            Some(ADMIN),
            Some(
                json!({"appid": "wxtargetsallow1", "secret": "s", "api_base": "http://127.0.0.1:9",
                   "warm": "on_use", "push": push_body("http://localhost:9/hook")}),
            ),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_platform_webhook_secret_is_16_characters_and_moving_the_webhook_takes_it_again() {
    // At configuration load.
    let e = refused_at_start(config(
        "",
        &platform(
            "https://203.0.113.7",
            Some(("https://203.0.113.9/hook", "short-secret")),
        ),
    ))
    .await;
    assert!(
        e.contains("platforms[0]") && e.contains("webhook_secret") && e.contains("16"),
        "{e}"
    );

    // At the admin API.
    let w = world().await;
    let server = admin_server("").await;
    let url = server.url().to_owned();
    let mut body = platform_body("wxtargetsplat01", Some("https://203.0.113.9/hook"));
    body["webhook_secret"] = json!("x");
    let (s, v) = w
        .call(
            "POST",
            format!("{url}/v1/admin/platforms"),
            Some(ADMIN),
            Some(body),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("16"),
        "{v}"
    );
    let body = platform_body("wxtargetsplat01", Some("https://203.0.113.9/hook"));
    let (s, v) = w
        .call(
            "POST",
            format!("{url}/v1/admin/platforms"),
            Some(ADMIN),
            Some(body),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let patch = |body: Value| {
        let (w, url) = (&w, url.clone());
        async move {
            w.call(
                "PATCH",
                format!("{url}/v1/admin/platforms/wxtargetsplat01"),
                Some(ADMIN),
                Some(body),
            )
            .await
        }
    };
    let (s, v) = patch(json!({"webhook_secret": "y"})).await;
    assert_eq!(s, 400, "a short secret on its own: {v}");
    // Moving the webhook with the admin key alone: refused, as for an app (whose push
    // settings are replaced whole, webhook secret included).
    let (s, v) = patch(json!({"webhook_url": "https://198.51.100.7/elsewhere"})).await;
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("webhook_secret"),
        "{v}"
    );
    let (s, v) = w
        .call(
            "GET",
            format!("{url}/v1/admin/platforms/wxtargetsplat01"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert!(
        v["webhook_url"]
            .as_str()
            .unwrap()
            .starts_with("https://203.0.113.9"),
        "unchanged: {v}"
    );
    // With the secret: moved. The same URL again, or none, needs nothing.
    let (s, v) = patch(json!({"webhook_url": "https://198.51.100.7/elsewhere",
                              "webhook_secret": "another-webhook-secret-0123"}))
    .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = patch(json!({"webhook_url": "https://198.51.100.7/elsewhere"})).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = patch(json!({"webhook_url": null})).await;
    assert_eq!(s, 200, "{v}");
    assert!(v["webhook_url"].is_null(), "{v}");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_urls_are_shown_without_their_paths() {
    let w = world().await;
    let secret_path = "https://u:hookpass7@203.0.113.9:8443/t/pathsecret42?token=qtok";
    let c = config(
        "",
        &format!(
            "{}\n{}",
            app_with_webhook(secret_path),
            platform("https://203.0.113.7", Some((secret_path, HOOK_SECRET)))
        ),
    );
    let shown = format!("{c:?}");
    for secret in ["pathsecret42", "qtok", "hookpass7"] {
        assert!(!shown.contains(secret), "config Debug: {shown}");
    }
    assert!(
        shown.contains("https://***@203.0.113.9:8443/***"),
        "{shown}"
    );
    let server = weapp_server::spawn(c).await.unwrap();
    let url = server.url().to_owned();
    let shown = format!("{:?}", server.state().broker.app("wxtargets0000001"));
    assert!(!shown.contains("pathsecret42"), "runtime Debug: {shown}");
    let get = |path: &'static str| {
        let (w, url) = (&w, url.clone());
        async move {
            let (s, v) = w
                .call("GET", format!("{url}{path}"), Some(ADMIN), None)
                .await;
            assert_eq!(s, 200, "{v}");
            v
        }
    };
    let app = get("/v1/admin/apps/wxtargets0000001").await;
    assert_eq!(
        app["push"]["webhook_url"], "https://***@203.0.113.9:8443/***",
        "{app}"
    );
    let platforms = get("/v1/admin/platforms").await;
    assert_eq!(
        platforms["platforms"][0]["webhook_url"], "https://***@203.0.113.9:8443/***",
        "{platforms}"
    );
    // A managed app and platform the same way.
    let (s, v) = w
        .call(
            "POST",
            format!("{url}/v1/admin/apps"),
            Some(ADMIN),
            Some(json!({"appid": "wxtargetsmanage1", "secret": "s",
                "api_base": "https://203.0.113.7", "warm": "on_use",
                "push": push_body("https://203.0.113.9/managed/pathsecret43")})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["push"]["webhook_url"], "https://203.0.113.9/***", "{v}");
    let (s, v) = w
        .call(
            "POST",
            format!("{url}/v1/admin/platforms"),
            Some(ADMIN),
            Some(platform_body(
                "wxtargetsplat02",
                Some("https://203.0.113.9/managed/pathsecret44"),
            )),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["webhook_url"], "https://203.0.113.9/***", "{v}");
    let everything = format!(
        "{} {} {}",
        get("/v1/admin/apps").await,
        get("/v1/admin/platforms").await,
        get("/v1/admin/audit?limit=100").await
    );
    for secret in ["pathsecret42", "pathsecret43", "pathsecret44"] {
        assert!(!everything.contains(secret), "{everything}");
    }
    server.shutdown().await.unwrap();
}

/// A resolver whose answer the test changes between two lookups.
struct Swap(Mutex<Vec<IpAddr>>);

impl Swap {
    fn answer(&self, ips: &[&str]) {
        *self.0.lock().unwrap() = ips.iter().map(|i| i.parse().unwrap()).collect();
    }
}

#[async_trait::async_trait]
impl weapp_server::egress::Resolver for Swap {
    async fn lookup(&self, _host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
        let ips = self.0.lock().unwrap().clone();
        Ok(ips
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect())
    }
}

/// A webhook receiver on loopback that counts the connections made to it and answers 200.
async fn counting_receiver() -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                // The headers and a small body, then an answer.
                let mut buf = vec![0u8; 16 * 1024];
                let mut got = 0;
                loop {
                    match conn.read(&mut buf[got..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got += n,
                    }
                    let text = String::from_utf8_lossy(&buf[..got]).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if got >= end + 4 + length {
                            break;
                        }
                    }
                }
                let _ = conn
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    (port, count)
}

/// Registers `w`'s app at `server` (plain pushes, so the simulator needs no key) with its
/// webhook at `webhook`.
async fn register(w: &World, server: &str, webhook: &str) {
    let (s, v) = w
        .call(
            "POST",
            format!("{server}/v1/admin/apps"),
            Some(ADMIN),
            Some(
                json!({"appid": w.appid, "secret": w.secret, "api_base": "https://203.0.113.7",
                "warm": "on_use", "push": {"token": "pushtoken1", "mode": "plain",
                "webhook_url": webhook, "webhook_secret": HOOK_SECRET}}),
            ),
        )
        .await;
    assert_eq!(s, 201, "registered: {v}");
}

/// The simulator pushes one message to `w`'s app at `server`, which takes it.
async fn push_one(w: &World, server: &str, msg_id: i64) {
    w.sim
        .sim()
        .set_push_target(
            &w.appid,
            PushTarget {
                url: format!("{server}/v1/apps/{}/push", w.appid),
                token: "pushtoken1".into(),
                encoding_aes_key: None,
                mode: PushMode::Plain,
                format: PushFormat::Json,
            },
        )
        .unwrap();
    let message = json!({"FromUserName": "oUser", "MsgType": "text", "Content": "hello",
        "MsgId": msg_id});
    let d = w
        .sim
        .sim()
        .push(&w.appid, message.as_object().unwrap().clone())
        .await
        .unwrap();
    assert!(d.delivered, "the server took the push: {d:?}");
}

/// The app's one event as the admin API shows it, once `done` says it is settled.
async fn event_when(w: &World, server: &str, done: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..200 {
        let (s, v) = w
            .call(
                "GET",
                format!("{server}/v1/admin/apps/{}/events", w.appid),
                Some(ADMIN),
                None,
            )
            .await;
        assert_eq!(s, 200, "{v}");
        last = v["events"][0].clone();
        if done(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("not settled: {last}");
}

const FAST_RETRIES: &str =
    "webhook_retry_base_ms = 50\nwebhook_retry_max_secs = 1\nwebhook_timeout_secs = 2";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_whose_name_now_resolves_to_loopback_is_never_connected_to() {
    let w = world().await;
    let (port, connections) = counting_receiver().await;
    let webhook = format!("http://hooks.rebind.test:{port}/hook");
    let swap = Arc::new(Swap(Mutex::new(Vec::new())));
    // At registration the name resolves to a public address...
    swap.answer(&["203.0.113.10"]);
    let mut c = config(FAST_RETRIES, "");
    c.resolver = Some(swap.clone());
    let server = weapp_server::spawn(c).await.unwrap();
    let url = server.url().to_owned();
    // ...and by delivery time to loopback (where the receiver listens).
    let (s, v) = w
        .call(
            "POST",
            format!("{url}/v1/admin/apps"),
            Some(ADMIN),
            Some(json!({"appid": "wxtargetsprobe1", "secret": "s",
                "api_base": "https://203.0.113.7", "warm": "on_use",
                "push": push_body(&webhook)})),
        )
        .await;
    assert_eq!(
        s, 201,
        "accepted while it resolved to a public address: {v}"
    );
    swap.answer(&["127.0.0.1"]);
    let (s, v) = w
        .call(
            "PATCH",
            format!("{url}/v1/admin/apps/wxtargetsprobe1"),
            Some(ADMIN),
            Some(json!({"push": push_body(&webhook)})),
        )
        .await;
    assert_eq!(
        s, 400,
        "refused at the admin API once it resolves to loopback: {v}"
    );
    swap.answer(&["203.0.113.10"]);
    register(&w, &url, &webhook).await;
    // An answer with one loopback address among public ones is refused whole (a client
    // trying each address in turn would reach it).
    swap.answer(&["203.0.113.10", "127.0.0.1"]);
    push_one(&w, &url, 4242).await;
    let event = event_when(&w, &url, |e| {
        e["attempts"].as_u64().unwrap_or(0) >= 1 || e["delivered"] == true
    })
    .await;
    assert_eq!(event["delivered"], false, "sent to loopback: {event}");
    assert!(
        event["last_error"].as_str().unwrap().contains("loopback"),
        "{event}"
    );
    swap.answer(&["127.0.0.1"]);
    let event = event_when(&w, &url, |e| {
        e["attempts"].as_u64().unwrap_or(0) >= event["attempts"].as_u64().unwrap() + 2
    })
    .await;
    // A failed attempt like any unreachable target's, with the reason; nothing connected.
    assert_eq!(event["status"], "pending", "{event}");
    assert_eq!(event["delivered"], false, "{event}");
    assert_eq!(
        event["last_error"],
        "not sent: hooks.rebind.test resolves to a loopback address: webhooks and API hosts may not point at internal addresses unless webhook_allow_private lists them",
        "{event}"
    );
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "connected to loopback"
    );
    server.shutdown().await.unwrap();

    // The control: with loopback allowed, the same answer is delivered to the same receiver.
    let mut c = config(
        &format!("{FAST_RETRIES}\nwebhook_allow_private = [\"127.0.0.0/8\"]"),
        "",
    );
    c.resolver = Some(swap.clone());
    let server = weapp_server::spawn(c).await.unwrap();
    let url = server.url().to_owned();
    register(&w, &url, &webhook).await;
    push_one(&w, &url, 4243).await;
    let event = event_when(&w, &url, |e| e["delivered"] == true).await;
    assert_eq!(event["status"], "delivered", "{event}");
    assert_eq!(connections.load(Ordering::SeqCst), 1);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_webhook_on_an_address_no_longer_allowed_is_not_sent_to() {
    let w = world().await;
    let (port, connections) = counting_receiver().await;
    let webhook = format!("http://127.0.0.1:{port}/hook");
    let db = sqlite_url();
    // Registered while loopback was allowed...
    let allowed = format!("{FAST_RETRIES}\nwebhook_allow_private = [\"127.0.0.1\"]");
    let server = weapp_server::spawn(config_on(&db, &allowed, ""))
        .await
        .unwrap();
    let (s, v) = w
        .call(
            "POST",
            format!("{}/v1/admin/apps", server.url()),
            Some(ADMIN),
            Some(
                json!({"appid": w.appid, "secret": w.secret, "api_base": "https://203.0.113.7",
                "warm": "on_use", "enabled": false,
                "push": {"token": "pushtoken1", "mode": "plain", "webhook_url": webhook,
                         "webhook_secret": HOOK_SECRET}}),
            ),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    server.shutdown().await.unwrap();
    // ...and served after the allow-list lost it: its pushes are kept, never sent there.
    let server = weapp_server::spawn(config_on(&db, FAST_RETRIES, ""))
        .await
        .unwrap();
    let url = server.url().to_owned();
    let (s, v) = w
        .call(
            "PATCH",
            format!("{url}/v1/admin/apps/{}", w.appid),
            Some(ADMIN),
            Some(json!({"enabled": true})),
        )
        .await;
    assert_eq!(
        s, 200,
        "an unrelated change is not judged on the webhook: {v}"
    );
    common::within(Duration::from_secs(10), "served", || async {
        server.state().broker.app(&w.appid).is_some()
    })
    .await;
    push_one(&w, &url, 4343).await;
    let event = event_when(&w, &url, |e| e["attempts"].as_u64().unwrap_or(0) >= 2).await;
    assert_eq!(event["status"], "pending", "{event}");
    assert!(
        event["last_error"]
            .as_str()
            .unwrap()
            .starts_with("not sent: 127.0.0.1 is a loopback address"),
        "{event}"
    );
    assert_eq!(connections.load(Ordering::SeqCst), 0);
    server.shutdown().await.unwrap();
}
