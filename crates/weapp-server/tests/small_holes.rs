//! The low-severity findings of the second outside review: log injection through
//! `x-request-id`, answers a cache may keep, a database file others can read, and the holders
//! of a removed signing key's tokens locked out as if they were guessing.

mod common;

use common::{sqlite_url, world, KEY};
use serde_json::json;
use weapp::TokenMode;
use weapp_server::config::AdminConfig;

const ADMIN: &str = "admin-key-0123456789abcdefghijkl";

fn admins() -> Vec<AdminConfig> {
    vec![AdminConfig {
        name: "ops".into(),
        key: Some(ADMIN.into()),
        key_env: None,
        key_sha256: None,
    }]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_id_that_is_not_a_plain_token_is_replaced() {
    let w = world().await;
    let server = weapp_server::spawn(w.config(&sqlite_url(), None, TokenMode::Stable))
        .await
        .unwrap();
    let id_of = |value: String| {
        let http = w.http.clone();
        let url = format!("{}/healthz", server.url());
        async move {
            let r = http
                .get(url)
                .header("x-request-id", value)
                .send()
                .await
                .unwrap();
            r.headers()["x-request-id"].to_str().unwrap().to_owned()
        }
    };
    assert_eq!(id_of("req-42.a_b:c".into()).await, "req-42.a_b:c");
    for forged in [
        "x\" level=ERROR msg=\"forged".to_owned(),
        "a".repeat(65),
        "a b".to_owned(),
        "{\"json\":1}".to_owned(),
    ] {
        let got = id_of(forged.clone()).await;
        assert_ne!(got, forged);
        assert!(
            uuid_like(&got),
            "{forged:?} was replaced by a generated id, got {got:?}"
        );
    }
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_about_a_caller_are_not_stored_by_caches() {
    let w = world().await;
    let mut config = w.config(&sqlite_url(), None, TokenMode::Stable);
    config.admins = admins();
    let server = weapp_server::spawn(config).await.unwrap();
    let base = server.url();
    let (code, _) = w.sim.sim().login(&w.appid, None, None, false).unwrap();
    let login = w
        .http
        .post(format!("{base}/v1/login"))
        .json(&json!({"appid": w.appid, "code": code}))
        .send()
        .await
        .unwrap();
    let cache = |r: &reqwest::Response| {
        r.headers()
            .get("cache-control")
            .map(|v| v.to_str().unwrap().to_owned())
    };
    assert_eq!(cache(&login).as_deref(), Some("no-store"), "login");
    let session: serde_json::Value = login.json().await.unwrap();
    let token = session["token"].as_str().unwrap();
    for (url, bearer) in [
        (format!("{base}/v1/me"), Some(token)),
        (
            format!("{base}/v1/apps/{}/access_token", w.appid),
            Some(KEY),
        ),
        (
            format!(
                "{base}/cgi-bin/token?grant_type=client_credential&appid={}&secret={}",
                w.appid, w.secret
            ),
            None,
        ),
        (format!("{base}/v1/admin/apps"), Some(ADMIN)),
        (format!("{base}/v1/nothing-here"), None),
    ] {
        let mut req = w.http.get(&url);
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        let r = req.send().await.unwrap();
        assert_eq!(cache(&r).as_deref(), Some("no-store"), "{url}");
    }
    // What is public says so itself.
    let jwks = w
        .http
        .get(format!("{base}/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    assert!(
        cache(&jwks).unwrap().contains("max-age"),
        "{:?}",
        cache(&jwks)
    );
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_database_is_created_readable_by_its_owner_alone() {
    use std::os::unix::fs::PermissionsExt;
    let w = world().await;
    let url = sqlite_url();
    let path = url.strip_prefix("sqlite://").unwrap().to_owned();
    let server = weapp_server::spawn(w.config(&url, None, TokenMode::Stable))
        .await
        .unwrap();
    w.login(&server, None).await;
    for file in [path.clone(), format!("{path}-wal"), format!("{path}-shm")] {
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{file}: {mode:o}");
    }
}

/// Removing a signing key (a suspected leak) sends every holder of its tokens back at once,
/// often from one NAT: they are users coming back, not guesses, and must not lock the address
/// out for everyone behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holders_of_a_removed_keys_tokens_are_not_counted_as_guessing() {
    let w = world().await;
    let mut config = w.config(&sqlite_url(), None, TokenMode::Stable);
    config.admins = admins();
    config.auth_failure_limit_per_minute = 3;
    let server = weapp_server::spawn(config).await.unwrap();
    let base = server.url();
    let mut olds = Vec::new();
    for _ in 0..6 {
        let (code, _) = w.sim.sim().login(&w.appid, None, None, false).unwrap();
        let (s, v) = w.post_login(base, &w.appid, &code).await;
        assert_eq!(s, 200, "{v}");
        olds.push(v["access_token"].as_str().unwrap().to_owned());
    }
    let header: serde_json::Value =
        serde_json::from_slice(&base64_url(olds[0].split('.').next().unwrap())).unwrap();
    let kid = header["kid"].as_str().unwrap();
    let (s, _) = w
        .call(
            "DELETE",
            format!("{base}/v1/admin/signing-keys/{kid}"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(s, 204);
    for old in &olds {
        let (s, v) = w
            .call("GET", format!("{base}/v1/me"), Some(old), None)
            .await;
        assert_eq!(s, 401, "{v}");
    }
    // Everyone behind the address still gets in.
    let (session, _) = w.login(&server, None).await;
    let (s, v) = w
        .call("GET", format!("{base}/v1/me"), Some(&session), None)
        .await;
    assert_eq!(s, 200, "{v}");
    // Forged tokens still count.
    for _ in 0..4 {
        w.call("GET", format!("{base}/v1/me"), Some("wa_forged"), None)
            .await;
    }
    let (s, _) = w
        .call("GET", format!("{base}/v1/me"), Some(&session), None)
        .await;
    assert_eq!(s, 429);
}

fn base64_url(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .unwrap()
}

/// Review finding: the WeChat client followed redirects, so a checked `api_base` could lead
/// the server anywhere (a metadata service) — WeChat never redirects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_base_that_redirects_is_not_followed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let w = world().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let redirector = format!("http://{}", listener.local_addr().unwrap());
    let target = w.sim.url().to_owned();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let target = target.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let n = conn.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
                let answer = format!(
                    "HTTP/1.1 307 Temporary Redirect\r\nLocation: {target}{path}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                let _ = conn.write_all(answer.as_bytes()).await;
            });
        }
    });
    let mut config = w.config(&sqlite_url(), None, TokenMode::Stable);
    for app in &mut config.apps {
        app.api_base = redirector.clone();
    }
    let server = weapp_server::spawn(config).await.unwrap();
    let before = w.sim.sim().calls("/cgi-bin/stable_token");
    let (s, v) = w
        .call(
            "GET",
            format!("{}/v1/apps/{}/access_token", server.url(), w.appid),
            Some(KEY),
            None,
        )
        .await;
    assert!(s >= 500, "{s} {v}");
    assert!(v.get("access_token").is_none());
    assert_eq!(
        w.sim.sim().calls("/cgi-bin/stable_token"),
        before,
        "the redirect was not followed"
    );
}
