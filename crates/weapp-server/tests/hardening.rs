//! The service tried as an attacker and as an operator would: forged and replayed pushes, a
//! decryption oracle, wrong data keys, spoofed client addresses, quota-burning reports, missing
//! scopes, credential guessing, redirects, dead webhooks, saturated pools. Each test names the
//! promise it holds the server to.

mod common;

use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use common::{sqlite_url, world, World, KEY, OTHER_KEY};
use serde_json::{json, Value};
use weapp::TokenMode;
use weapp_server::config::{ClientConfig, PushConfig};
use weapp_server::{Config, ServerHandle};
use weapp_test_support::{PgDatabase, RedisCluster, RedisSentinels, RedisServer};

const AES_KEY: &str = "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR";
const TOKEN: &str = "pushtoken123";
const KEY_A: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
const KEY_B: &str = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=";

/// Runs one statement against the test database (SQLite file or Postgres).
async fn sql(url: &str, statement: &str) {
    use sqlx::Connection;
    if url.starts_with("sqlite:") {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::query(statement).execute(&mut c).await.unwrap();
    } else {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query(statement).execute(&mut c).await.unwrap();
    }
}

fn push_config(w: &World, database_url: &str, redis: Option<String>) -> Config {
    let mut c = w.config(database_url, redis, TokenMode::Stable);
    c.apps[0].push = Some(PushConfig {
        token: TOKEN.into(),
        encoding_aes_key: Some(AES_KEY.into()),
        mode: None,
        webhook_url: None,
        webhook_secret: None,
        replay_window_secs: 300,
    });
    c
}

/// Rate limits count per wall-clock minute: start a limit test well inside one, so the window
/// does not turn in the middle of it.
async fn inside_one_minute() {
    let s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        % 60;
    if s > 45 {
        tokio::time::sleep(Duration::from_secs(61 - s)).await;
    }
}

fn now_secs() -> String {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string()
}

/// A safe-mode push as WeChat sends it: `(query, body)`.
fn safe_push(appid: &str, ts: &str, nonce: &str, msg_id: i64) -> (String, String) {
    let plain = json!({"ToUserName": "gh", "FromUserName": "oU", "CreateTime": 1, "MsgType": "text", "Content": "hello", "MsgId": msg_id}).to_string();
    let enc = weapp::push::EncodingAesKey::new(AES_KEY)
        .unwrap()
        .encrypt(&plain, appid);
    let q = format!(
        "signature={}&timestamp={ts}&nonce={nonce}&encrypt_type=aes&msg_signature={}",
        weapp::push::signature(&[TOKEN, ts, nonce]),
        weapp::push::signature(&[TOKEN, ts, nonce, &enc])
    );
    (q, json!({"ToUserName": "gh", "Encrypt": enc}).to_string())
}

async fn post_push(w: &World, server: &ServerHandle, q: &str, body: &str) -> (u16, Value) {
    let (s, _, v) = w
        .call_full(
            "POST",
            format!("{}/v1/apps/{}/push?{q}", server.url(), w.appid),
            None,
            Some(body.to_owned()),
        )
        .await;
    (s, v)
}

async fn stored_events(w: &World, server: &ServerHandle) -> Vec<Value> {
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

// ------------------------------------------------------------------ push intake (items 1–3)

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_is_refused_by_every_instance_that_shares_redis() {
    let redis = RedisServer::start();
    a_replay_is_refused_by_every_instance(redis.url()).await;
}

/// The replay memory, the login budget and the invalidation interval are the fleet's, on a
/// Redis Cluster as on one node (every script's keys in one slot).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_on_a_redis_cluster_shares_replays_budgets_and_intervals() {
    let cluster = tokio::task::spawn_blocking(RedisCluster::start)
        .await
        .unwrap();
    a_fleet_shares_replays_budgets_and_intervals(cluster.url()).await;
}

/// The same behind Sentinel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_behind_sentinel_shares_replays_budgets_and_intervals() {
    let sentinels = tokio::task::spawn_blocking(RedisSentinels::start)
        .await
        .unwrap();
    a_fleet_shares_replays_budgets_and_intervals(sentinels.url()).await;
}

async fn a_fleet_shares_replays_budgets_and_intervals(redis_url: String) {
    a_replay_is_refused_by_every_instance(redis_url.clone()).await;
    a_fleet_shares_one_login_budget(redis_url.clone()).await;
    a_fleet_shares_one_invalidation_interval(redis_url).await;
}

async fn a_replay_is_refused_by_every_instance(redis_url: String) {
    let w = world().await;
    let db = sqlite_url();
    // One fleet: the same database, Redis and key prefix.
    let config = push_config(&w, &db, Some(redis_url));
    let a = weapp_server::spawn(config.clone()).await.unwrap();
    let b = weapp_server::spawn(config).await.unwrap();
    let ts = now_secs();
    let (q, body) = safe_push(&w.appid, &ts, "n-replay", 501);
    assert_eq!(post_push(&w, &a, &q, &body).await.0, 200);
    let (s, v) = post_push(&w, &b, &q, &body).await;
    assert_eq!(s, 401, "replayed on another instance: {v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("replay"));
    // The same (timestamp, nonce) with another message is a replay too: the key is the pair.
    let (q2, body2) = safe_push(&w.appid, &ts, "n-replay", 502);
    assert_eq!(post_push(&w, &b, &q2, &body2).await.0, 401);
    assert_eq!(stored_events(&w, &a).await.len(), 1);
}

/// WeChat retries a push it got no `success` for, with the same timestamp and nonce. If storing
/// failed, the retry must be accepted — not refused as a replay and lost.
async fn a_push_that_could_not_be_stored_is_accepted_on_retry(
    database_url: &str,
    redis: Option<String>,
) {
    let w = world().await;
    let server = weapp_server::spawn(push_config(&w, database_url, redis))
        .await
        .unwrap();
    let (q, body) = safe_push(&w.appid, &now_secs(), "n-retry", 601);
    sql(
        database_url,
        "ALTER TABLE push_events RENAME TO push_events_away",
    )
    .await;
    let (s, v) = post_push(&w, &server, &q, &body).await;
    assert_eq!(s, 500, "{v}");
    assert_eq!(v["error"]["code"], "internal");
    sql(
        database_url,
        "ALTER TABLE push_events_away RENAME TO push_events",
    )
    .await;
    let (s, v) = post_push(&w, &server, &q, &body).await;
    assert_eq!((s, v.as_str()), (200, Some("success")), "{v}");
    assert_eq!(stored_events(&w, &server).await.len(), 1);
    // Once stored, the nonce is spent.
    assert_eq!(post_push(&w, &server, &q, &body).await.0, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_a_failed_store_is_accepted_on_sqlite() {
    a_push_that_could_not_be_stored_is_accepted_on_retry(&sqlite_url(), None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_a_failed_store_is_accepted_on_postgres_and_redis() {
    let db = PgDatabase::create().await;
    let redis = RedisServer::start();
    a_push_that_could_not_be_stored_is_accepted_on_retry(db.url(), Some(redis.url())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_commits_are_on_disk_before_success_is_answered() {
    let w = world().await;
    let server = weapp_server::spawn(w.config(&sqlite_url(), None, TokenMode::Stable))
        .await
        .unwrap();
    assert!(server.state().store.durable_commits().await.unwrap());
    let mut c = w.config(&sqlite_url(), None, TokenMode::Stable);
    c.sqlite_synchronous = weapp_server::config::SqliteSync::Normal;
    let relaxed = weapp_server::spawn(c).await.unwrap();
    assert!(!relaxed.state().store.durable_commits().await.unwrap());
}

// ------------------------------------------------------------ sessions and user data (5–7)

/// encryptedData the way WeChat builds it, under `session_key`, with any plaintext.
fn encrypted(session_key: &str, plain: &[u8]) -> (String, String) {
    let key = B64.decode(session_key).unwrap();
    let iv = [9u8; 16];
    (
        B64.encode(weapp_sim::crypto::aes128_cbc_encrypt(&key, &iv, plain)),
        B64.encode(iv),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_decryption_failure_gets_one_identical_answer() {
    let w = world().await;
    let mut config = w.config(&sqlite_url(), None, TokenMode::Stable);
    config.decrypt_max_age_secs = 600;
    config.decrypt_rate_limit_per_minute = 1000;
    let server = weapp_server::spawn(config).await.unwrap();
    let (token, openid) = w.login(&server, None).await;
    let session_key = w
        .sim
        .sim()
        .user(&w.appid, &openid)
        .unwrap()
        .session_key
        .unwrap();
    let now: i64 = now_secs().parse().unwrap();
    let good = json!({"stepInfoList": [], "watermark": {"appid": w.appid, "timestamp": now}});
    let (data, iv) = encrypted(&session_key, good.to_string().as_bytes());
    let url = format!("{}/v1/me/decrypt", server.url());
    let (s, v) = w
        .call(
            "POST",
            url.clone(),
            Some(&token),
            Some(json!({"encrypted_data": data, "iv": iv})),
        )
        .await;
    assert_eq!(s, 200, "{v}");

    let other_key = B64.encode([1u8; 16]);
    let cases = [
        ("bad base64", json!({"encrypted_data": "%%%", "iv": iv})),
        ("short iv", json!({"encrypted_data": data, "iv": "AAAA"})),
        (
            "not whole blocks",
            json!({"encrypted_data": "AAAAAAAA", "iv": iv}),
        ),
        ("wrong key (padding)", {
            let (d, i) = encrypted(&other_key, good.to_string().as_bytes());
            json!({"encrypted_data": d, "iv": i})
        }),
        ("not JSON", {
            let (d, i) = encrypted(&session_key, b"\x01\x02 definitely not json");
            json!({"encrypted_data": d, "iv": i})
        }),
        ("no watermark", {
            let (d, i) = encrypted(&session_key, br#"{"a":1}"#);
            json!({"encrypted_data": d, "iv": i})
        }),
        ("another app's watermark", {
            let v = json!({"watermark": {"appid": "wxsomeoneelse", "timestamp": now}});
            let (d, i) = encrypted(&session_key, v.to_string().as_bytes());
            json!({"encrypted_data": d, "iv": i})
        }),
        ("stale watermark", {
            let v = json!({"watermark": {"appid": w.appid, "timestamp": now - 601}});
            let (d, i) = encrypted(&session_key, v.to_string().as_bytes());
            json!({"encrypted_data": d, "iv": i})
        }),
    ];
    let mut answers = Vec::new();
    for (name, body) in cases {
        let (s, v) = w.call("POST", url.clone(), Some(&token), Some(body)).await;
        answers.push((name, s, v));
    }
    let (_, s0, v0) = &answers[0];
    assert_eq!(*s0, 400);
    assert_eq!(v0["error"]["code"], "decrypt_failed");
    for (name, s, v) in &answers {
        assert_eq!((s, v), (s0, v0), "{name} answers differently");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decryption_is_limited_per_session() {
    inside_one_minute().await;
    let w = world().await;
    let mut config = w.config(&sqlite_url(), None, TokenMode::Stable);
    config.decrypt_rate_limit_per_minute = 3;
    let server = weapp_server::spawn(config).await.unwrap();
    let (token, _) = w.login(&server, None).await;
    let (other, _) = w.login(&server, Some("oOtherUser")).await;
    let url = format!("{}/v1/me/decrypt", server.url());
    let body =
        json!({"encrypted_data": "AAAAAAAAAAAAAAAAAAAAAA==", "iv": "AAAAAAAAAAAAAAAAAAAAAA=="});
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(
            w.call("POST", url.clone(), Some(&token), Some(body.clone()))
                .await
                .0,
        );
    }
    assert_eq!(statuses, [400, 400, 400, 429, 429]);
    // Another session has its own budget.
    assert_eq!(w.call("POST", url, Some(&other), Some(body)).await.0, 400);
}

/// Starts a server; a failed start gives its message (the line `weapp serve` prints). Neither
/// that message nor the error's `Debug` may show a data key, an app secret, a push key or the
/// Redis URL (it may carry a password).
async fn try_spawn(config: Config) -> Result<ServerHandle, String> {
    let mut secrets: Vec<String> = config
        .data_key
        .iter()
        .chain(&config.data_keys)
        .map(|k| k.expose().to_owned())
        .collect();
    for app in &config.apps {
        secrets.extend(app.secret.as_ref().map(|s| s.expose().to_owned()));
        if let Some(p) = &app.push {
            secrets.extend(p.encoding_aes_key.as_ref().map(|k| k.expose().to_owned()));
        }
    }
    secrets.extend(config.redis_url.clone());
    secrets.retain(|s| !s.is_empty());
    weapp_server::spawn(config).await.map_err(|e| {
        let (shown, debug) = (e.to_string(), format!("{e:?}"));
        for secret in &secrets {
            assert!(!shown.contains(secret.as_str()), "{shown}");
            assert!(!debug.contains(secret.as_str()), "{debug}");
        }
        shown
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_or_missing_data_key_refuses_to_start_and_keys_rotate() {
    let w = world().await;
    let db = sqlite_url();
    let with_keys = |keys: &[&str]| {
        let mut c = w.config(&db, None, TokenMode::Stable);
        c.data_key = None;
        c.data_keys = keys.iter().map(|k| (*k).into()).collect();
        c
    };
    let server = try_spawn(with_keys(&[KEY_A])).await.unwrap();
    let (token, openid) = w.login(&server, None).await;
    server.shutdown().await.unwrap();

    // A wrong key: the start fails, naming the key id the data needs — no 500 per request.
    let e = try_spawn(with_keys(&[KEY_B])).await.unwrap_err();
    assert!(e.contains("not configured"), "{e}");
    assert!(!e.contains(KEY_A) && !e.contains(KEY_B), "{e}");
    // No key at all, outside the sandbox: refused (a generated key would sit beside the data).
    let e = try_spawn(with_keys(&[])).await.unwrap_err();
    assert!(e.contains("no data key"), "{e}");

    // Rotation: the new key first, the old one kept; the session survives.
    let server = try_spawn(with_keys(&[KEY_B, KEY_A])).await.unwrap();
    let session_key = w
        .sim
        .sim()
        .user(&w.appid, &openid)
        .unwrap()
        .session_key
        .unwrap();
    let now: i64 = now_secs().parse().unwrap();
    let plain = json!({"watermark": {"appid": w.appid, "timestamp": now}}).to_string();
    let (data, iv) = encrypted(&session_key, plain.as_bytes());
    let decrypt = json!({"encrypted_data": data, "iv": iv});
    let url = format!("{}/v1/me/decrypt", server.url());
    let (s, v) = w
        .call("POST", url.clone(), Some(&token), Some(decrypt.clone()))
        .await;
    assert_eq!(
        s, 200,
        "sealed under the old key, opened after rotation: {v}"
    );
    // The next login seals under the new key; the old key can go once no row needs it.
    let (token, openid) = w.login(&server, Some(&openid)).await;
    server.shutdown().await.unwrap();
    let server = try_spawn(with_keys(&[KEY_B])).await.unwrap();
    let session_key = w
        .sim
        .sim()
        .user(&w.appid, &openid)
        .unwrap()
        .session_key
        .unwrap();
    let (data, iv) = encrypted(&session_key, plain.as_bytes());
    let (s, v) = w
        .call(
            "POST",
            format!("{}/v1/me/decrypt", server.url()),
            Some(&token),
            Some(json!({"encrypted_data": data, "iv": iv})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_session_key_moved_to_another_row_does_not_open() {
    let w = world().await;
    let db = sqlite_url();
    let server = try_spawn(w.config(&db, None, TokenMode::Stable))
        .await
        .unwrap();
    let (_, victim) = w.login(&server, Some("oVictim")).await;
    let (attacker_token, _) = w.login(&server, Some("oAttacker")).await;
    // Someone with write access to the table copies the victim's sealed key into their row.
    sql(
        &db,
        "UPDATE users SET session_key_enc = (SELECT session_key_enc FROM users WHERE openid = 'oVictim') WHERE openid = 'oAttacker'",
    )
    .await;
    let victim_key = w
        .sim
        .sim()
        .user(&w.appid, &victim)
        .unwrap()
        .session_key
        .unwrap();
    let now: i64 = now_secs().parse().unwrap();
    let plain = json!({"watermark": {"appid": w.appid, "timestamp": now}}).to_string();
    let (data, iv) = encrypted(&victim_key, plain.as_bytes());
    let (s, v) = w
        .call(
            "POST",
            format!("{}/v1/me/decrypt", server.url()),
            Some(&attacker_token),
            Some(json!({"encrypted_data": data, "iv": iv})),
        )
        .await;
    assert_eq!(s, 500, "bound to its row, the value does not open: {v}");
    assert_eq!(v["error"]["message"], "internal error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_sealed_by_the_first_format_are_resealed_at_start() {
    use aes_gcm::aead::{Aead, KeyInit};
    let w = world().await;
    let db = sqlite_url();
    let server = try_spawn(w.config(&db, None, TokenMode::Stable))
        .await
        .unwrap();
    let (token, openid) = w.login(&server, Some("oLegacy")).await;
    server.shutdown().await.unwrap();
    // Rewrite the row as the first version sealed it: nonce ‖ ciphertext, no row binding.
    let session_key = w
        .sim
        .sim()
        .user(&w.appid, &openid)
        .unwrap()
        .session_key
        .unwrap();
    let cipher = aes_gcm::Aes256Gcm::new_from_slice(&B64.decode(KEY_A).unwrap()).unwrap();
    let nonce = [3u8; 12];
    let mut legacy = nonce.to_vec();
    legacy.extend(
        cipher
            .encrypt(aes_gcm::Nonce::from_slice(&nonce), session_key.as_bytes())
            .unwrap(),
    );
    sql(
        &db,
        &format!(
            "UPDATE users SET session_key_enc = x'{}', key_id = NULL WHERE openid = 'oLegacy'",
            hex::encode(&legacy)
        ),
    )
    .await;
    // Once converted, a database refuses a value of the first format: it can only be an old
    // blob copied into a row (it would open there, bound to nothing).
    let e = try_spawn(w.config(&db, None, TokenMode::Stable))
        .await
        .unwrap_err();
    assert!(e.contains("tampered"), "{e}");
    // A database of the previous version (never converted) is re-sealed.
    sql(&db, "DELETE FROM meta WHERE key = 'legacy_resealed'").await;
    let server = try_spawn(w.config(&db, None, TokenMode::Stable))
        .await
        .unwrap();
    assert_eq!(
        server.state().store.data_key_ids().await.unwrap(),
        [Some(server.state().keys.keyring.current_id())],
        "re-sealed under the current key"
    );
    let now: i64 = now_secs().parse().unwrap();
    let plain = json!({"watermark": {"appid": w.appid, "timestamp": now}}).to_string();
    let (data, iv) = encrypted(&session_key, plain.as_bytes());
    let (s, v) = w
        .call(
            "POST",
            format!("{}/v1/me/decrypt", server.url()),
            Some(&token),
            Some(json!({"encrypted_data": data, "iv": iv})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    server.shutdown().await.unwrap();
    // With a key that does not open it, the start is refused.
    sql(
        &db,
        &format!(
            "UPDATE users SET session_key_enc = x'{}', key_id = NULL WHERE openid = 'oLegacy'",
            hex::encode(&legacy)
        ),
    )
    .await;
    sql(&db, "DELETE FROM meta WHERE key = 'legacy_resealed'").await;
    // (Signing keys sealed under the right key would refuse the start first, for that reason.)
    sql(&db, "DELETE FROM signing_keys").await;
    let mut wrong = w.config(&db, None, TokenMode::Stable);
    wrong.data_key = Some(KEY_B.into());
    let e = try_spawn(wrong).await.unwrap_err();
    assert!(e.contains("does not open"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_keys_and_sandbox_databases_stay_where_they_belong() {
    let w = world().await;
    let db = sqlite_url();
    let mut c = w.config(&db, None, TokenMode::Stable);
    c.data_key = None;
    assert!(try_spawn(c.clone())
        .await
        .unwrap_err()
        .contains("no data key"));
    c.allow_generated_data_key = true;
    let server = try_spawn(c.clone()).await.unwrap();
    w.login(&server, None).await;
    server.shutdown().await.unwrap();
    // A database holding real users is not a sandbox one.
    let mut sandbox = c.clone();
    sandbox.sandbox = true;
    let e = try_spawn(sandbox.clone()).await.unwrap_err();
    assert!(e.contains("not a sandbox"), "{e}");
    // And a sandbox database is not for the service.
    let sandbox_db = sqlite_url();
    sandbox.database_url = sandbox_db.clone();
    let s = try_spawn(sandbox).await.unwrap();
    s.shutdown().await.unwrap();
    let mut service = w.config(&sandbox_db, None, TokenMode::Stable);
    service.allow_generated_data_key = true;
    let e = try_spawn(service).await.unwrap_err();
    assert!(e.contains("--sandbox"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_out_everywhere_idle_sessions_and_linked_accounts() {
    let w = world().await;
    let mut config = w.config(&sqlite_url(), None, TokenMode::Stable);
    config.session_idle_timeout_secs = 2;
    let server = weapp_server::spawn(config).await.unwrap();
    let url = server.url();
    let (phone, openid) = w.login(&server, Some("oEverywhere")).await;
    let (laptop, _) = w.login(&server, Some(&openid)).await;
    let (bystander, _) = w.login(&server, Some("oBystander")).await;
    // No linked accounts unless configured.
    let (_, me) = w
        .call("GET", format!("{url}/v1/me"), Some(&phone), None)
        .await;
    assert!(me.get("linked").is_none(), "{me}");
    let (s, v) = w
        .call("POST", format!("{url}/v1/logout/all"), Some(&phone), None)
        .await;
    assert_eq!((s, v["revoked"].as_u64()), (200, Some(2)), "{v}");
    for t in [&phone, &laptop] {
        assert_eq!(
            w.call("GET", format!("{url}/v1/me"), Some(t), None).await.0,
            401
        );
    }
    // Idle: used within the timeout it lives on; left alone past it, it ends.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(
            w.call("GET", format!("{url}/v1/me"), Some(&bystander), None)
                .await
                .0,
            200,
            "kept alive by use"
        );
    }
    tokio::time::sleep(Duration::from_millis(2600)).await;
    assert_eq!(
        w.call("GET", format!("{url}/v1/me"), Some(&bystander), None)
            .await
            .0,
        401
    );
}

// ------------------------------------------------------------ clients, broker, limits (8–11)

async fn login_with_forwarded(w: &World, url: &str, forwarded: &str) -> u16 {
    let resp = w
        .http
        .post(format!("{url}/v1/login"))
        .header("x-forwarded-for", forwarded)
        .json(&json!({"appid": w.appid, "code": "bogus"}))
        .send()
        .await
        .unwrap();
    resp.status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoofed_forwarded_for_does_not_escape_the_login_limit() {
    inside_one_minute().await;
    let w = world().await;
    for trusted in [
        Some(vec!["127.0.0.1".to_owned()]),
        None, // the deprecated `trust_forwarded_for = true`
    ] {
        let mut config = w.config(&sqlite_url(), None, TokenMode::Stable);
        config.login_rate_limit_per_minute = 5;
        match &trusted {
            Some(t) => config.trusted_proxies = t.clone(),
            None => config.trust_forwarded_for = true,
        }
        let server = weapp_server::spawn(config).await.unwrap();
        let mut statuses = Vec::new();
        for i in 0..20 {
            // The client forges the leftmost hop; our proxy (loopback) appends the real one.
            let forwarded = format!("10.9.{i}.{i}, 203.0.113.50");
            statuses.push(login_with_forwarded(&w, server.url(), &forwarded).await);
        }
        assert_eq!(
            statuses.iter().filter(|s| **s == 429).count(),
            15,
            "{statuses:?}"
        );
        // Another real client behind the same proxy has its own budget.
        assert_eq!(
            login_with_forwarded(&w, server.url(), "203.0.113.51").await,
            400
        );
        // An IPv6 client is one client across its /64.
        for i in 0..5 {
            let s = login_with_forwarded(&w, server.url(), &format!("2001:db8:1:2::{i:x}")).await;
            assert_eq!(s, 400);
        }
        assert_eq!(
            login_with_forwarded(&w, server.url(), "2001:db8:1:2:ffff::1").await,
            429
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_shares_one_login_budget_through_redis() {
    let redis = RedisServer::start();
    a_fleet_shares_one_login_budget(redis.url()).await;
}

async fn a_fleet_shares_one_login_budget(redis_url: String) {
    inside_one_minute().await;
    let w = world().await;
    let mut config = w.config(&sqlite_url(), Some(redis_url), TokenMode::Stable);
    config.login_rate_limit_per_minute = 4;
    config.rate_limit_backend = weapp_server::config::RateLimitBackend::Redis;
    let a = weapp_server::spawn(config.clone()).await.unwrap();
    let b = weapp_server::spawn(config).await.unwrap();
    let mut statuses = Vec::new();
    for i in 0..6 {
        let url = if i % 2 == 0 { a.url() } else { b.url() };
        statuses.push(w.post_login(url, &w.appid, "bogus").await.0);
    }
    assert_eq!(statuses, [400, 400, 400, 400, 429, 429]);
}

/// Two instances told at once that the token is dead refresh it once, and a report of the new
/// token within the interval is throttled on the other instance: the interval is the fleet's.
async fn a_fleet_shares_one_invalidation_interval(redis_url: String) {
    let w = world().await;
    let mut config = w.config(&sqlite_url(), Some(redis_url), TokenMode::Classic);
    config.invalidate_min_interval_secs = 3600;
    let a = weapp_server::spawn(config.clone()).await.unwrap();
    let b = weapp_server::spawn(config).await.unwrap();
    let (_, t) = w
        .call(
            "GET",
            format!("{}/v1/apps/{}/access_token", a.url(), w.appid),
            Some(KEY),
            None,
        )
        .await;
    let first = t["access_token"].as_str().unwrap().to_owned();
    let issued = || {
        w.sim
            .sim()
            .tokens_issued(&w.appid, weapp_sim::TokenKind::Classic)
    };
    let before = issued();
    let (ra, rb) = tokio::join!(
        report(&w, a.url(), KEY, &first),
        report(&w, b.url(), KEY, &first)
    );
    assert_eq!((ra.0, rb.0), (200, 200), "{ra:?} {rb:?}");
    assert_eq!(issued() - before, 1, "two instances, one refresh");
    let second = ra.1["access_token"].as_str().unwrap().to_owned();
    assert_eq!(rb.1["access_token"].as_str(), Some(second.as_str()));
    // WeChat still accepts the new token: a report of it within the interval is throttled on
    // the other instance too.
    let (s, v) = report(&w, b.url(), KEY, &second).await;
    assert_eq!((s, v["refreshed"].as_bool()), (200, Some(false)), "{v}");
    assert_eq!(issued() - before, 1);
}

async fn report(w: &World, url: &str, key: &str, token: &str) -> (u16, Value) {
    w.call(
        "POST",
        format!("{url}/v1/apps/{}/access_token/invalidate", w.appid),
        Some(key),
        Some(json!({"access_token": token})),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_of_failing_tokens_cannot_burn_the_quota() {
    let w = world().await;
    let mut config = w.config(&sqlite_url(), None, TokenMode::Classic);
    config.invalidate_min_interval_secs = 3600;
    let server = weapp_server::spawn(config).await.unwrap();
    let url = server.url();
    let (_, t) = w
        .call(
            "GET",
            format!("{url}/v1/apps/{}/access_token", w.appid),
            Some(KEY),
            None,
        )
        .await;
    let first = t["access_token"].as_str().unwrap().to_owned();
    let issued = || {
        w.sim
            .sim()
            .tokens_issued(&w.appid, weapp_sim::TokenKind::Classic)
    };
    let before = issued();
    // A client reports the current token over and over, each time the new one.
    let mut current = first.clone();
    for _ in 0..10 {
        let (s, v) = report(&w, url, KEY, &current).await;
        assert_eq!(s, 200, "{v}");
        current = v["access_token"].as_str().unwrap().to_owned();
    }
    assert_eq!(
        issued() - before,
        1,
        "one refresh per interval, however many reports"
    );
    // A report of an older token changes nothing.
    let (s, v) = report(&w, url, KEY, &first).await;
    assert_eq!(
        (s, v["access_token"].as_str()),
        (200, Some(current.as_str()))
    );
    assert_eq!(issued() - before, 1);
    let (_, metrics) = w.call("GET", format!("{url}/metrics"), None, None).await;
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains("outcome=\"throttled\"} 9"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scopes_limit_what_a_client_key_does() {
    let w = world().await;
    let mut config = w.config(&sqlite_url(), None, TokenMode::Stable);
    let reader = "reader-key-0123456789abc";
    config.clients.push(ClientConfig {
        name: "reader".into(),
        key: Some(reader.into()),
        key_env: None,
        key_sha256: None,
        apps: vec![w.appid.clone()],
        scopes: Some(vec!["token:read".into()]),
    });
    let legacy = "legacy-key-0123456789abc";
    config.clients.push(ClientConfig {
        name: "legacy".into(),
        key: Some(legacy.into()),
        key_env: None,
        key_sha256: None,
        apps: vec![w.appid.clone()],
        scopes: None,
    });
    config.apps[0].push = Some(PushConfig {
        token: TOKEN.into(),
        encoding_aes_key: Some(AES_KEY.into()),
        mode: None,
        webhook_url: None,
        webhook_secret: None,
        replay_window_secs: 300,
    });
    let server = weapp_server::spawn(config).await.unwrap();
    let url = server.url();
    let token_url = format!("{url}/v1/apps/{}/access_token", w.appid);
    let events_url = format!("{url}/v1/apps/{}/events", w.appid);
    let (s, t) = w.call("GET", token_url.clone(), Some(reader), None).await;
    assert_eq!(s, 200);
    let (s, v) = report(&w, url, reader, t["access_token"].as_str().unwrap()).await;
    assert_eq!(s, 403, "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("token:invalidate"));
    assert_eq!(
        w.call("GET", events_url.clone(), Some(reader), None)
            .await
            .0,
        403
    );
    // Without `scopes`: tokens yes, pushed messages no.
    assert_eq!(w.call("GET", token_url, Some(legacy), None).await.0, 200);
    assert_eq!(
        w.call("GET", events_url.clone(), Some(legacy), None)
            .await
            .0,
        403
    );
    assert_eq!(w.call("GET", events_url, Some(KEY), None).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_authentications_are_counted_and_limited_per_source() {
    inside_one_minute().await;
    let w = world().await;
    let mut config = w.config(&sqlite_url(), None, TokenMode::Stable);
    config.auth_failure_limit_per_minute = 5;
    let server = weapp_server::spawn(config).await.unwrap();
    let url = server.url();
    let token_url = format!("{url}/v1/apps/{}/access_token", w.appid);
    let mut statuses = Vec::new();
    for i in 0..7 {
        let guess = format!("guess-{i}-0123456789abcdef");
        statuses.push(w.call("GET", token_url.clone(), Some(&guess), None).await.0);
    }
    assert_eq!(statuses, [401, 401, 401, 401, 401, 429, 429]);
    // Refused before the key is looked at: even the right key waits out the minute.
    let (s, h, _) = w.call_full("GET", token_url, Some(KEY), None).await;
    assert_eq!(s, 429);
    assert!(h.get("retry-after").is_some());
    // The mirror's secrets and session tokens count against the same budget.
    let (s, v) = w
        .call(
            "GET",
            format!(
                "{url}/cgi-bin/token?grant_type=client_credential&appid={}&secret=nope",
                w.appid
            ),
            None,
            None,
        )
        .await;
    assert_eq!(s, 200, "the mirror answers like WeChat");
    assert_eq!(v["errcode"], 45011, "{v}");
    assert_eq!(v["error"]["code"], "rate_limited");
    let (_, metrics) = w.call("GET", format!("{url}/metrics"), None, None).await;
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains("weapp_auth_failures_total{surface=\"client_key\"} 5"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mirror_counts_wrong_secrets_and_answers_like_wechat_with_an_envelope() {
    inside_one_minute().await;
    let w = world().await;
    let mut config = w.config(&sqlite_url(), None, TokenMode::Stable);
    config.auth_failure_limit_per_minute = 3;
    let server = weapp_server::spawn(config).await.unwrap();
    let url = format!(
        "{}/cgi-bin/token?grant_type=client_credential&appid={}",
        server.url(),
        w.appid
    );
    let mut codes = Vec::new();
    for _ in 0..4 {
        let (s, v) = w
            .call("GET", format!("{url}&secret=wrong"), None, None)
            .await;
        assert_eq!(s, 200);
        assert_eq!(v["error"]["wechat_errcode"], v["errcode"]);
        assert!(v["errmsg"].as_str().unwrap().contains(" rid: "), "{v}");
        codes.push(v["errcode"].as_i64().unwrap());
    }
    assert_eq!(codes, [40125, 40125, 40125, 45011]);
}

// ------------------------------------------------------ configuration and operations (12–16)

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_errors_name_the_problem_and_no_secret() {
    let w = world().await;
    let mut c = w.config(&sqlite_url(), None, TokenMode::Stable);
    c.redis_url = Some("redis://:hunter2secret@127.0.0.1:1".into());
    let e = try_spawn(c).await.unwrap_err();
    assert!(e.contains("redis"), "{e}");
    assert!(!e.contains("hunter2secret"), "{e}");
    let mut c = w.config(&sqlite_url(), None, TokenMode::Stable);
    c.apps[0].push = Some(PushConfig {
        token: "".into(),
        encoding_aes_key: None,
        mode: None,
        webhook_url: Some("ftp://example.com/hook".into()),
        webhook_secret: None,
        replay_window_secs: 300,
    });
    let e = try_spawn(c).await.unwrap_err();
    assert!(e.contains("token must not be empty"), "{e}");
    let mut c = w.config(&sqlite_url(), None, TokenMode::Stable);
    c.webhook_timeout_secs = 90;
    assert!(try_spawn(c)
        .await
        .unwrap_err()
        .contains("webhook_lease_secs"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_errors_tell_a_bad_configuration_from_a_dead_dependency() {
    use std::error::Error as _;
    use weapp_server::StartError;
    let w = world().await;
    let mut c = w.config(&sqlite_url(), None, TokenMode::Stable);
    c.webhook_timeout_secs = 90;
    let e = weapp_server::spawn(c).await.unwrap_err();
    assert!(matches!(e, StartError::Config(_)), "{e:?}");
    // The database's own error stays reachable under the message that names the database.
    let dir = std::env::temp_dir().join(format!("weapp-no-such-dir-{}", std::process::id()));
    let c = w.config(
        &format!("sqlite://{}", dir.join("x.db").display()),
        None,
        TokenMode::Stable,
    );
    let e = weapp_server::spawn(c).await.unwrap_err();
    assert!(matches!(e, StartError::DatabaseOpen { .. }), "{e:?}");
    assert!(e.to_string().starts_with("database sqlite://"), "{e}");
    let source = e.source().expect("the database's error");
    assert!(source.is::<weapp_server::store::StoreError>(), "{source:?}");
    let c = w.config(
        &sqlite_url(),
        Some("redis://:hunter2secret@127.0.0.1:1".into()),
        TokenMode::Stable,
    );
    let e = weapp_server::spawn(c).await.unwrap_err();
    assert!(matches!(e, StartError::Redis { .. }), "{e:?}");
    assert!(e.source().is_some(), "{e:?}");
    assert!(!format!("{e} {e:?}").contains("hunter2secret"), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_see_errcodes_and_rids_but_not_wechats_words() {
    let w = world().await;
    let server = weapp_server::spawn(w.config(&sqlite_url(), None, TokenMode::Stable))
        .await
        .unwrap();
    let (s, v) = w
        .post_login(server.url(), &w.appid, "nonexistent-code")
        .await;
    assert_eq!(s, 400);
    assert_eq!(v["error"]["wechat_errcode"], 40029);
    assert!(v["error"]["rid"].is_string());
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        !message.contains("rid:") && !message.contains("invalid code"),
        "{message}"
    );
    w.sim
        .sim()
        .add_fault(weapp_sim::Fault::http_status("/sns/jscode2session", 502));
    let (s, v) = w.post_login(server.url(), &w.appid, "x").await;
    assert_eq!(s, 502);
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        !message.contains("HTTP") && !message.contains("127.0.0.1"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_is_about_local_dependencies_only() {
    let w = world().await;
    let mut config = w.config(&sqlite_url(), None, TokenMode::Stable);
    // WeChat unreachable: that is for /metrics, not a reason to leave the load balancer.
    config.apps[1].api_base = format!("http://127.0.0.1:{}", weapp_test_support::free_port());
    let server = weapp_server::spawn(config).await.unwrap();
    let (s, v) = w
        .call("GET", format!("{}/readyz", server.url()), None, None)
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["checks"].as_object().unwrap().len(),
        1,
        "database only: {v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_is_the_json_envelope() {
    let w = world().await;
    let server = weapp_server::spawn(push_config(&w, &sqlite_url(), None))
        .await
        .unwrap();
    let url = server.url();
    let cases = [
        ("GET", format!("{url}/v1/login"), None, 405),
        (
            "DELETE",
            format!("{url}/v1/apps/{}/push", w.appid),
            None,
            405,
        ),
        (
            "GET",
            format!("{url}/v1/apps/{}/events?after=abc", w.appid),
            Some(KEY),
            400,
        ),
        (
            "GET",
            format!("{url}/v1/apps/{}/events?limit=9999", w.appid),
            Some(KEY),
            400,
        ),
        ("GET", format!("{url}/nowhere"), None, 404),
        (
            "POST",
            format!("{url}/v1/apps/{}/events/notanumber/redeliver", w.appid),
            Some(KEY),
            400,
        ),
    ];
    for (method, u, key, want) in cases {
        let (s, h, v) = w.call_full(method, u.clone(), key, None).await;
        assert_eq!(s, want, "{method} {u}: {v}");
        assert_eq!(
            h.get("content-type").unwrap().to_str().unwrap(),
            "application/json",
            "{method} {u}"
        );
        assert!(v["error"]["code"].is_string(), "{method} {u}: {v}");
    }
    let (s, h, v) = w
        .call_full("GET", format!("{url}/v1/login"), None, None)
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (405, Some("method_not_allowed"))
    );
    assert!(h.get("allow").is_some());
    // Over the body limit.
    let big = "x".repeat(70 * 1024);
    let (s, _, v) = w
        .call_full("POST", format!("{url}/v1/login"), None, Some(big))
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (413, Some("payload_too_large"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_pool_is_a_503_with_retry_after() {
    let db = PgDatabase::create().await;
    let w = world().await;
    let mut config = w.config(db.url(), None, TokenMode::Stable);
    config.database_pool_size = 1;
    config.database_acquire_timeout_ms = 200;
    config.request_timeout_secs = 2;
    let server = weapp_server::spawn(config).await.unwrap();
    let (token, _) = w.login(&server, None).await;
    // Another client holds a lock the next query needs: the one pooled connection waits on it.
    use sqlx::Connection;
    let mut locker = sqlx::PgConnection::connect(db.url()).await.unwrap();
    sqlx::query("BEGIN").execute(&mut locker).await.unwrap();
    sqlx::query("LOCK TABLE sessions IN ACCESS EXCLUSIVE MODE")
        .execute(&mut locker)
        .await
        .unwrap();
    let me = format!("{}/v1/me", server.url());
    let http = w.http.clone();
    let (m, t) = (me.clone(), token.clone());
    let blocked = tokio::spawn(async move { http.get(m).bearer_auth(t).send().await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (s, h, v) = w.call_full("GET", me.clone(), Some(&token), None).await;
    assert_eq!(s, 503, "{v}");
    assert_eq!(v["error"]["code"], "unavailable");
    assert_eq!(h.get("retry-after").unwrap(), "1");
    sqlx::query("ROLLBACK").execute(&mut locker).await.unwrap();
    let _ = blocked.await;
    assert_eq!(w.call("GET", me, Some(&token), None).await.0, 200);
}

// ------------------------------------------------------------------------------ webhooks (15)

/// A webhook that answers what it is told, counting requests.
async fn hook(
    status: u16,
    location: Option<String>,
    delay: Duration,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicU32>) {
    use std::sync::atomic::{AtomicU32, Ordering};
    let hits = std::sync::Arc::new(AtomicU32::new(0));
    let counter = hits.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let counter = counter.clone();
            let location = location.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                let mut r = axum::response::Response::new(axum::body::Body::empty());
                *r.status_mut() = axum::http::StatusCode::from_u16(status).unwrap();
                if let Some(l) = location {
                    r.headers_mut().insert("location", l.parse().unwrap());
                }
                r
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, hits)
}

fn with_webhook(mut c: Config, url: &str) -> Config {
    let push = c.apps[0].push.as_mut().unwrap();
    push.webhook_url = Some(url.to_owned());
    push.webhook_secret = Some("whsec_0123456789abcdef".into());
    c.webhook_retry_base_ms = 10;
    c.webhook_retry_max_secs = 1;
    c.webhook_timeout_secs = 1;
    c.webhook_lease_secs = 3;
    c
}

async fn wait_until<F: std::future::Future<Output = bool>>(mut f: impl FnMut() -> F) -> bool {
    for _ in 0..200 {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_never_follow_redirects_and_dead_letters_can_be_redelivered() {
    use std::sync::atomic::Ordering;
    let w = world().await;
    let (elsewhere, elsewhere_hits) = hook(200, None, Duration::ZERO).await;
    let (redirecting, hits) = hook(307, Some(elsewhere), Duration::ZERO).await;
    let mut c = with_webhook(push_config(&w, &sqlite_url(), None), &redirecting);
    c.webhook_max_attempts = 3;
    let server = weapp_server::spawn(c).await.unwrap();
    let (q, body) = safe_push(&w.appid, &now_secs(), "n-dead", 701);
    assert_eq!(post_push(&w, &server, &q, &body).await.0, 200);
    assert!(
        wait_until(|| async { stored_events(&w, &server).await[0]["status"] == "dead" }).await,
        "dead-lettered after 3 attempts"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 3);
    assert_eq!(
        elsewhere_hits.load(Ordering::SeqCst),
        0,
        "the redirect was not followed"
    );
    let event = stored_events(&w, &server).await[0].clone();
    assert_eq!(event["attempts"], 3);
    assert!(event["last_error"].as_str().unwrap().contains("307"));
    let (_, metrics) = w
        .call("GET", format!("{}/metrics", server.url()), None, None)
        .await;
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains("weapp_webhook_dead_letters 1"),
        "{metrics}"
    );
    // Redelivery: a fresh round of attempts.
    let id = event["id"].as_i64().unwrap();
    let redeliver = format!("{}/v1/apps/{}/events/{id}/redeliver", server.url(), w.appid);
    assert_eq!(
        w.call("POST", redeliver.clone(), Some(OTHER_KEY), None)
            .await
            .0,
        403
    );
    let (s, v) = w.call("POST", redeliver, Some(KEY), None).await;
    assert_eq!((s, v["scheduled"].as_bool()), (200, Some(true)), "{v}");
    assert!(wait_until(|| async { hits.load(Ordering::SeqCst) == 6 }).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_stops_promptly_on_shutdown() {
    let w = world().await;
    let (hanging, hits) = hook(200, None, Duration::from_secs(60)).await;
    let mut c = with_webhook(push_config(&w, &sqlite_url(), None), &hanging);
    c.webhook_timeout_secs = 30;
    c.webhook_lease_secs = 60;
    let server = weapp_server::spawn(c).await.unwrap();
    let (q, body) = safe_push(&w.appid, &now_secs(), "n-hang", 801);
    assert_eq!(post_push(&w, &server, &q, &body).await.0, 200);
    assert!(wait_until(|| async { hits.load(std::sync::atomic::Ordering::SeqCst) == 1 }).await);
    let began = Instant::now();
    server.shutdown().await.unwrap();
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "shutdown waited on a hanging webhook for {:?}",
        began.elapsed()
    );
}

// ------------------------------------------------- findings of the adversarial review (issue 9)

/// WeChat gives up on a slow answer and retries the same push; the first attempt's handler is
/// dropped. Its reservation used to stay behind and refuse the retries as replays, while the
/// push itself was never stored. Now the intake finishes in a task of its own, and a retry that
/// arrives meanwhile is told to come back (503), not refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_whose_caller_gave_up_is_still_stored_and_its_retry_is_not_a_replay() {
    use sqlx::Connection;
    let db = PgDatabase::create().await;
    let w = world().await;
    let server = weapp_server::spawn(push_config(&w, db.url(), None))
        .await
        .unwrap();
    let (q, body) = safe_push(&w.appid, &now_secs(), "n-gaveup", 901);
    let mut locker = sqlx::PgConnection::connect(db.url()).await.unwrap();
    sqlx::query("BEGIN").execute(&mut locker).await.unwrap();
    sqlx::query("LOCK TABLE push_events IN ACCESS EXCLUSIVE MODE")
        .execute(&mut locker)
        .await
        .unwrap();
    let url = format!("{}/v1/apps/{}/push?{q}", server.url(), w.appid);
    let impatient = w
        .http
        .post(&url)
        .body(body.clone())
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(impatient.is_err(), "WeChat gave up waiting");
    let (s, v) = post_push(&w, &server, &q, &body).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (503, Some("unavailable")),
        "{v}"
    );
    sqlx::query("ROLLBACK").execute(&mut locker).await.unwrap();
    assert!(
        wait_until(|| async { stored_events(&w, &server).await.len() == 1 }).await,
        "the abandoned attempt still stored the push"
    );
    assert_eq!(
        post_push(&w, &server, &q, &body).await.0,
        401,
        "now it is a replay"
    );
}

/// With stable tokens WeChat hands the same token back on an unforced call: a permit
/// re-granted for "the same token" let one client make a WeChat call per report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_of_a_stable_token_wechat_hands_back_do_not_loop() {
    let w = world().await;
    let mut config = w.config(&sqlite_url(), None, TokenMode::Stable);
    config.invalidate_min_interval_secs = 3600;
    let server = weapp_server::spawn(config).await.unwrap();
    let url = server.url();
    let (_, t) = w
        .call(
            "GET",
            format!("{url}/v1/apps/{}/access_token", w.appid),
            Some(KEY),
            None,
        )
        .await;
    let token = t["access_token"].as_str().unwrap().to_owned();
    let before = w.sim.sim().calls("/cgi-bin/stable_token");
    for _ in 0..10 {
        let (s, v) = report(&w, url, KEY, &token).await;
        assert_eq!(s, 200, "{v}");
    }
    let calls = w.sim.sim().calls("/cgi-bin/stable_token") - before;
    assert!(calls <= 1, "{calls} WeChat calls for 10 reports");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidate_only_key_does_not_get_the_token() {
    let w = world().await;
    let mut config = w.config(&sqlite_url(), None, TokenMode::Stable);
    let reporter = "reporter-key-0123456789ab";
    config.clients.push(ClientConfig {
        name: "reporter".into(),
        key: Some(reporter.into()),
        key_env: None,
        key_sha256: None,
        apps: vec![w.appid.clone()],
        scopes: Some(vec!["token:invalidate".into()]),
    });
    let server = weapp_server::spawn(config).await.unwrap();
    let (s, v) = report(&w, server.url(), reporter, "not-the-token").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["refreshed"], true);
    assert!(v.get("access_token").is_none(), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_ascii_forwarded_for_does_not_charge_the_proxy() {
    inside_one_minute().await;
    let w = world().await;
    let mut config = w.config(&sqlite_url(), None, TokenMode::Stable);
    config.login_rate_limit_per_minute = 3;
    config.trusted_proxies = vec!["127.0.0.1".into()];
    let server = weapp_server::spawn(config).await.unwrap();
    let send = |forwarded: Vec<u8>| {
        let http = w.http.clone();
        let url = format!("{}/v1/login", server.url());
        let body = json!({"appid": w.appid, "code": "bogus"});
        async move {
            http.post(url)
                .header(
                    "x-forwarded-for",
                    reqwest::header::HeaderValue::from_bytes(&forwarded).unwrap(),
                )
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(send(b"\x80\xff, 203.0.113.7".to_vec()).await);
    }
    assert_eq!(
        statuses,
        [400, 400, 400, 429],
        "the client behind the garbage is charged"
    );
    assert_eq!(send(b"203.0.113.8".to_vec()).await, 400, "not the proxy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_sessions_are_not_counted_as_guesses() {
    inside_one_minute().await;
    let w = world().await;
    let mut config = w.config(&sqlite_url(), None, TokenMode::Stable);
    config.session_idle_timeout_secs = 1;
    config.auth_failure_limit_per_minute = 3;
    let server = weapp_server::spawn(config).await.unwrap();
    let (token, _) = w.login(&server, None).await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let me = format!("{}/v1/me", server.url());
    for _ in 0..5 {
        assert_eq!(w.call("GET", me.clone(), Some(&token), None).await.0, 401);
    }
    let (fresh, _) = w.login(&server, None).await;
    assert_eq!(
        w.call("GET", me.clone(), Some(&fresh), None).await.0,
        200,
        "not locked out"
    );
    for i in 0..3 {
        let guess = format!("wa_guess{i}");
        assert_eq!(w.call("GET", me.clone(), Some(&guess), None).await.0, 401);
    }
    assert_eq!(
        w.call("GET", me, Some(&fresh), None).await.0,
        429,
        "guesses are"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_verification_is_bound_to_the_timestamp_window() {
    let w = world().await;
    let server = weapp_server::spawn(push_config(&w, &sqlite_url(), None))
        .await
        .unwrap();
    let url = format!("{}/v1/apps/{}/push", server.url(), w.appid);
    let sig = |ts: &str| weapp::push::signature(&[TOKEN, ts, "1"]);
    let ts = now_secs();
    let (s, h, v) = w
        .call_full(
            "GET",
            format!(
                "{url}?signature={}&timestamp={ts}&nonce=1&echostr=hello",
                sig(&ts)
            ),
            None,
            None,
        )
        .await;
    assert_eq!((s, v.as_str()), (200, Some("hello")));
    assert_eq!(h.get("x-content-type-options").unwrap(), "nosniff");
    let old = "1000";
    let (s, _) = w
        .call(
            "GET",
            format!(
                "{url}?signature={}&timestamp={old}&nonce=1&echostr=x",
                sig(old)
            ),
            None,
            None,
        )
        .await;
    assert_eq!(s, 401, "a leaked verification URL does not echo for ever");
}

// ------------------------------------------------------------ second round (issue 24, 3–4)

const ADMIN_KEY: &str = "ops-admin-key-0123456789abcdef";

/// The overflow bucket a client had in the limiter's former design, where the sources that
/// did not fit in its memory shared 4,096 hashed buckets: used to pick a newcomer that shared
/// the attacker's bucket, i.e. whose check read the attacker's failures.
fn former_bucket(ip: std::net::IpAddr) -> usize {
    let key = weapp_server::net::ip_key(ip);
    let h = (key ^ (key >> 64)) as u64;
    (h.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 52) as usize % 4096
}

/// `GET url` with `bearer`, as the client `source` behind our (loopback) proxy.
async fn get_from(w: &World, url: &str, bearer: &str, source: std::net::IpAddr) -> u16 {
    w.http
        .get(url)
        .bearer_auth(bearer)
        .header("x-forwarded-for", source.to_string())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_failure_limiter_never_refuses_a_source_for_anothers_failures() {
    inside_one_minute().await;
    let w = world().await;
    let mut config = w.config(&sqlite_url(), None, TokenMode::Stable);
    config.auth_failure_limit_per_minute = 3;
    config.rate_limit_max_keys = 16;
    config.trusted_proxies = vec!["127.0.0.1".into()];
    config.admins = vec![weapp_server::config::AdminConfig {
        name: "ops".into(),
        key: Some(ADMIN_KEY.into()),
        key_env: None,
        key_sha256: None,
    }];
    let server = weapp_server::spawn(config).await.unwrap();
    let token_url = format!("{}/v1/apps/{}/access_token", server.url(), w.appid);
    let admin_url = format!("{}/v1/admin/apps", server.url());
    // Sixteen sources fail once each: the limiter's memory is full.
    for i in 0..16u8 {
        let source = std::net::IpAddr::from([198, 51, 100, i]);
        assert_eq!(get_from(&w, &token_url, "wrong-key", source).await, 401);
    }
    // An attacker fails past its limit: still counted on its own, and refused.
    let attacker: std::net::IpAddr = "203.0.113.7".parse().unwrap();
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(get_from(&w, &admin_url, "wrong-admin-key-0123456789", attacker).await);
    }
    assert_eq!(statuses, [401, 401, 401, 429, 429]);
    assert_eq!(get_from(&w, &admin_url, ADMIN_KEY, attacker).await, 429);
    // A new source with valid credentials — one that shared the attacker's overflow bucket in
    // the former design — is served: its check reads no one's failures but its own.
    let victim = (0..=u16::MAX)
        .map(|n| std::net::IpAddr::from([100, 64, (n >> 8) as u8, n as u8]))
        .find(|ip| former_bucket(*ip) == former_bucket(attacker))
        .unwrap();
    assert_eq!(get_from(&w, &admin_url, ADMIN_KEY, victim).await, 200);
    assert_eq!(get_from(&w, &token_url, KEY, victim).await, 200);
    let other = (0..=u16::MAX)
        .map(|n| std::net::IpAddr::from([100, 65, (n >> 8) as u8, n as u8]))
        .find(|ip| former_bucket(*ip) == former_bucket(attacker))
        .unwrap();
    assert_eq!(get_from(&w, &token_url, KEY, other).await, 200);
    assert_eq!(get_from(&w, &admin_url, ADMIN_KEY, other).await, 200);
}

/// `POST /v1/me/phone {code}` with `bearer`: `(status, headers, body)`.
async fn bind_phone(
    w: &World,
    server: &ServerHandle,
    bearer: &str,
    code: &str,
) -> (u16, reqwest::header::HeaderMap, Value) {
    w.call_full(
        "POST",
        format!("{}/v1/me/phone", server.url()),
        Some(bearer),
        Some(json!({ "code": code }).to_string()),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_numbers_are_limited_per_user_before_wechat_is_asked() {
    inside_one_minute().await;
    let w = world().await;
    // The default: five a minute per user.
    let config = w.config(&sqlite_url(), None, TokenMode::Stable);
    let server = weapp_server::spawn(config).await.unwrap();
    let path = "/wxa/business/getuserphonenumber";
    let (token, openid) = w.login(&server, Some("oPhoneUser")).await;
    let before = w.sim.sim().calls(path);
    let mut statuses = Vec::new();
    for i in 0..60 {
        let (s, h, v) = bind_phone(&w, &server, &token, &format!("garbage-{i}")).await;
        if s == 429 {
            assert!(h.get("retry-after").is_some(), "{v}");
            assert_eq!(v["error"]["code"], "rate_limited", "{v}");
        }
        statuses.push(s);
    }
    assert_eq!(w.sim.sim().calls(path) - before, 5, "{statuses:?}");
    assert!(statuses[..5].iter().all(|s| *s == 400), "{statuses:?}");
    assert!(statuses[5..].iter().all(|s| *s == 429), "{statuses:?}");
    // Another user of the app is not affected: a real code binds.
    let (other, other_openid) = w.login(&server, Some("oPhoneOther")).await;
    let code = w
        .sim
        .sim()
        .phone_code(&w.appid, &other_openid, Some("13900002222".into()))
        .unwrap();
    let (s, _, v) = bind_phone(&w, &server, &other, &code).await;
    assert_eq!(
        (s, v["phone_number"].as_str()),
        (200, Some("13900002222")),
        "{v}"
    );
    // The limit is the user's: a second session of the same user gets none, even with a real
    // code, and WeChat is not asked.
    let (second, _) = w.login(&server, Some("oPhoneUser")).await;
    let code = w
        .sim
        .sim()
        .phone_code(&w.appid, &openid, Some("13900003333".into()))
        .unwrap();
    let calls = w.sim.sim().calls(path);
    let (s, h, _) = bind_phone(&w, &server, &second, &code).await;
    assert_eq!(s, 429);
    assert!(h.get("retry-after").is_some());
    assert_eq!(w.sim.sim().calls(path), calls, "not asked");
    // The limit is a setting.
    let mut config = w.config(&sqlite_url(), None, TokenMode::Stable);
    config.phone_rate_limit_per_minute =
        toml::from_str::<Config>("phone_rate_limit_per_minute = 2")
            .unwrap()
            .phone_rate_limit_per_minute;
    let server = weapp_server::spawn(config).await.unwrap();
    let (token, _) = w.login(&server, Some("oPhoneThird")).await;
    let mut statuses = Vec::new();
    for i in 0..3 {
        statuses.push(
            bind_phone(&w, &server, &token, &format!("garbage-{i}"))
                .await
                .0,
        );
    }
    assert_eq!(statuses, [400, 400, 429]);
}
