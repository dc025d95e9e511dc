//! Three `weapp serve` processes sharing Postgres and Redis hold the fleet's shards together;
//! one is killed with SIGKILL (no goodbye, leases left behind) and the two others take its apps
//! over within a lease period, serving every token throughout.

mod common;

use common::{serve, until, Server};

use std::time::Duration;

use serde_json::Value;
use weapp_test_support::{unique_prefix, PgDatabase, RedisServer};

const ADMIN: &str = "admin-key-0123456789abcdefghijkl";
const CLIENT: &str = "fleet-client-key-0123456789";
const APPS: usize = 200;
const LEASE_MS: u64 = 2_000;

async fn fleet(http: &reqwest::Client, url: &str) -> Option<Value> {
    let r = http
        .get(format!("{url}/v1/admin/fleet"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .ok()?;
    r.json().await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instance_hands_its_apps_over_within_a_lease() {
    let sim = weapp_sim::spawn(weapp_sim::SimConfig::default())
        .await
        .unwrap();
    let db = PgDatabase::create().await;
    let redis = RedisServer::start();
    let dir = std::env::temp_dir().join(unique_prefix("fleet-kill").replace(':', "-"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut toml = format!(
        "listen = \"127.0.0.1:0\"\ndatabase_url = \"{}\"\nredis_url = \"{}\"\nredis_prefix = \"{}\"\n\
         data_key = \"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\"\n\
         fleet_lease_ms = {LEASE_MS}\nwarmup_spread_secs = 2\nauth_failure_limit_per_minute = 0\n\
         admin_rate_limit_per_minute = 0\nwebhook_allow_private = [\"127.0.0.0/8\"]\n\n\
         [[admins]]\nname = \"ops\"\nkey = \"{ADMIN}\"\n\n\
         [[clients]]\nname = \"all\"\nkey = \"{CLIENT}\"\napps = [\"*\"]\n\n",
        db.url(),
        redis.url(),
        unique_prefix("fleet-kill"),
    );
    let mut appids = Vec::new();
    for i in 0..APPS {
        let (appid, secret) = sim
            .sim()
            .add_app(Some(format!("wxkill{i:010}")), None, false);
        toml.push_str(&format!(
            "[[apps]]\nappid = \"{appid}\"\nsecret = \"{secret}\"\napi_base = \"{}\"\ntoken_mode = \"classic\"\n\n",
            sim.url()
        ));
        appids.push(appid);
    }
    let path = dir.join("weapp.toml");
    std::fs::write(&path, toml).unwrap();
    let mut servers: Vec<Server> = (0..3).map(|_| serve(&path)).collect();
    let http = reqwest::Client::new();

    // The three share the shards and run one refresher per app between them.
    let urls: Vec<String> = servers.iter().map(|s| s.url.clone()).collect();
    until(
        Duration::from_secs(30),
        "three instances sharing 64 shards",
        async || {
            let mut held = 0;
            let mut refreshers = 0;
            for u in &urls {
                match fleet(&http, u).await {
                    Some(f) if f["instances"] == 3 => {
                        held += f["shards_held"].as_u64().unwrap();
                        refreshers += f["refreshers"].as_u64().unwrap();
                    }
                    _ => return false,
                }
            }
            held == 64 && refreshers == APPS as u64
        },
    )
    .await;

    // Every app's token fetched (warm-up is spread over 2 s): a SIGKILL in the middle of a
    // fetch leaves its outcome unknown, and a survivor then rightly fetches again — not what
    // this test is about.
    until(
        Duration::from_secs(30),
        "every app's token fetched",
        async || {
            appids
                .iter()
                .all(|a| sim.sim().tokens_issued(a, weapp_sim::TokenKind::Classic) >= 1)
        },
    )
    .await;

    // …and written to Redis (a moment after WeChat answered).
    tokio::time::sleep(Duration::from_millis(500)).await;

    // SIGKILL: no release, no goodbye.
    let mut victim = servers.remove(1);
    victim.child.kill().unwrap();
    victim.child.wait().unwrap();
    let survivors: Vec<String> = servers.iter().map(|s| s.url.clone()).collect();
    let took = until(
        // Within a lease period (plus the polling of this test).
        Duration::from_millis(LEASE_MS + 1_000),
        "the survivors hold every shard and run every refresher",
        async || {
            let mut held = 0;
            let mut refreshers = 0;
            for u in &survivors {
                match fleet(&http, u).await {
                    Some(f) => {
                        held += f["shards_held"].as_u64().unwrap();
                        refreshers += f["refreshers"].as_u64().unwrap();
                    }
                    None => return false,
                }
            }
            held == 64 && refreshers == APPS as u64
        },
    )
    .await;
    println!("apps of the killed instance taken over after {took:?} (lease {LEASE_MS} ms)");
    // Every token is served by the survivors, none fetched twice.
    for (i, appid) in appids.iter().enumerate() {
        let r = http
            .get(format!(
                "{}/v1/apps/{appid}/access_token",
                survivors[i % survivors.len()]
            ))
            .bearer_auth(CLIENT)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{appid}");
        assert_eq!(
            sim.sim()
                .tokens_issued(appid, weapp_sim::TokenKind::Classic),
            1,
            "{appid} fetched again"
        );
    }
    for mut s in servers {
        let _ = s.child.kill();
        let _ = s.child.wait();
    }
    let _ = std::fs::remove_dir_all(&dir);
}
