//! Acknowledged means durable: `weapp serve` is killed with SIGKILL while WeChat-like pushes
//! stream in, and every push it answered `success` is in the event log afterwards.

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use weapp_test_support::{free_port, sim_with_app};

mod common;

use common::kill_once;

const TOKEN: &str = "pushtoken123";
const AES_KEY: &str = "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR";

/// A safe-mode push of a text message with `msg_id`: `(query, body)`.
fn push(appid: &str, msg_id: i64) -> (String, String) {
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let nonce = format!("n{msg_id}");
    let plain = json!({"ToUserName": "gh", "FromUserName": "oU", "CreateTime": 1, "MsgType": "text", "Content": "crash test", "MsgId": msg_id}).to_string();
    let enc = weapp::push::EncodingAesKey::new(AES_KEY)
        .unwrap()
        .encrypt(&plain, appid);
    let q = format!(
        "timestamp={ts}&nonce={nonce}&encrypt_type=aes&msg_signature={}",
        weapp::push::signature(&[TOKEN, &ts, &nonce, &enc])
    );
    (q, json!({"ToUserName": "gh", "Encrypt": enc}).to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_push_answered_success_survives_a_kill_9() {
    let (sim, appid, secret) = sim_with_app().await;
    let dir = std::env::temp_dir().join(format!(
        "weapp-crash-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let db = format!("sqlite://{}/crash.db", dir.display());
    let port = free_port();
    let config = dir.join("weapp.toml");
    std::fs::write(
        &config,
        format!(
            r#"
listen = "127.0.0.1:{port}"
database_url = "{db}"
data_key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
webhook_allow_private = ["127.0.0.0/8"]

[[apps]]
appid = "{appid}"
secret = "{secret}"
api_base = "{}"
[apps.push]
token = "{TOKEN}"
encoding_aes_key = "{AES_KEY}"
"#,
            sim.url()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_weapp"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run weapp serve");
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let up = Instant::now();
    while http.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(
            up.elapsed() < Duration::from_secs(20),
            "server did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Eight WeChat-like senders; every `success` is recorded.
    let acked = Arc::new(Mutex::new(Vec::<i64>::new()));
    let mut senders = Vec::new();
    for sender in 0..8i64 {
        let (http, base, appid, acked) = (http.clone(), base.clone(), appid.clone(), acked.clone());
        senders.push(tokio::spawn(async move {
            for n in 0.. {
                let msg_id = sender * 1_000_000 + n;
                let (q, body) = push(&appid, msg_id);
                let resp = http
                    .post(format!("{base}/v1/apps/{appid}/push?{q}"))
                    .body(body)
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await;
                match resp {
                    Ok(r) if r.status() == 200 => {
                        if r.text().await.is_ok_and(|t| t == "success") {
                            acked.lock().unwrap().push(msg_id);
                        }
                    }
                    Ok(_) => {}
                    Err(_) => return, // the server is gone
                }
            }
        }));
    }
    // Let a few hundred land, then pull the plug mid-stream.
    kill_once(&mut child, 200, || acked.lock().unwrap().len()).await;
    for s in senders {
        let _ = s.await;
    }
    let acked = acked.lock().unwrap().clone();

    let store = weapp_server::store::connect(&db, &weapp_server::store::StoreOptions::default())
        .await
        .expect("the database opens after the crash");
    let events = store.events_after(&appid, 0, 1_000_000).await.unwrap();
    let stored: HashSet<i64> = events
        .iter()
        .map(|e| {
            serde_json::from_str::<serde_json::Value>(&e.payload).unwrap()["MsgId"]
                .as_i64()
                .unwrap()
        })
        .collect();
    let lost: Vec<&i64> = acked.iter().filter(|id| !stored.contains(id)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged pushes lost: {lost:?}",
        lost.len()
    );
    assert!(acked.len() >= 200);
    let _ = std::fs::remove_dir_all(dir);
}
