//! Acknowledged means durable, for logins: `weapp serve` (SQLite, the default) is killed with
//! SIGKILL while mini programs log in, and every login it answered 200 still has its session
//! after a restart — the login writer answers a login only once its batch is committed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use weapp_test_support::{free_port, sim_with_app};

mod common;

use common::{kill_once, serve};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_login_answered_survives_a_kill_9() {
    let (sim, appid, secret) = sim_with_app().await;
    let dir = std::env::temp_dir().join(format!(
        "weapp-login-crash-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let config = dir.join("weapp.toml");
    std::fs::write(
        &config,
        format!(
            r#"
listen = "127.0.0.1:{port}"
database_url = "sqlite://{}/crash.db"
data_key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
login_rate_limit_per_minute = 0
webhook_allow_private = ["127.0.0.0/8"]

[[apps]]
appid = "{appid}"
secret = "{secret}"
api_base = "{}"
"#,
            dir.display(),
            sim.url()
        ),
    )
    .unwrap();
    let http = reqwest::Client::new();
    let server = serve(&config);
    let (mut child, base) = (server.child, server.url);

    // Sixteen mini programs logging in over and over; every 200 is recorded with its token.
    let answered = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let mut loggers = Vec::new();
    for _ in 0..16 {
        let (http, base, appid, answered, sim) = (
            http.clone(),
            base.clone(),
            appid.clone(),
            answered.clone(),
            sim.sim().clone(),
        );
        loggers.push(tokio::spawn(async move {
            loop {
                let (code, openid) = sim.login(&appid, None, None, false).unwrap();
                let resp = http
                    .post(format!("{base}/v1/login"))
                    .json(&json!({"appid": appid, "code": code}))
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await;
                match resp {
                    Ok(r) if r.status() == 200 => {
                        // A body cut off by the kill is not an answer.
                        if let Ok(v) = r.json::<serde_json::Value>().await {
                            let token = v["token"].as_str().unwrap().to_owned();
                            answered.lock().unwrap().push((token, openid));
                        }
                    }
                    Ok(r) => panic!("login answered {}", r.status()),
                    Err(_) => return, // the server is gone
                }
            }
        }));
    }
    // Let a few hundred land, then pull the plug mid-stream.
    kill_once(&mut child, 300, || answered.lock().unwrap().len()).await;
    for l in loggers {
        l.await.expect("a logger failed");
    }
    let answered = answered.lock().unwrap().clone();
    assert!(answered.len() >= 300);

    let mut child = serve(&config).child;
    let mut lost = Vec::new();
    for (token, openid) in &answered {
        let r = http
            .get(format!("{base}/v1/me"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let me: serde_json::Value = r.json().await.unwrap_or_default();
        if status != 200 || me["openid"] != openid.as_str() {
            lost.push(openid.clone());
        }
    }
    child.kill().unwrap();
    let _ = child.wait();
    assert!(
        lost.is_empty(),
        "{} of {} answered logins lost: {lost:?}",
        lost.len(),
        answered.len()
    );
    let _ = std::fs::remove_dir_all(dir);
}
