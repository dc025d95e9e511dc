//! One refresher per app for the whole fleet: three instances sharing Postgres and Redis, a
//! thousand apps, a virtual clock shared with the simulator — each app's token is fetched once at
//! start and once per period, by one instance; the shards are shared; `on_use` apps cost nothing
//! until used.

use std::sync::Arc;
use std::time::{Duration, Instant};

use weapp::clock::ManualClock;
use weapp::TokenMode;
use weapp_server::config::{AppConfig, WarmPolicy};
use weapp_server::Config;
use weapp_sim::{SimConfig, TokenKind};
use weapp_test_support::{unique_prefix, PgDatabase, RedisServer};

fn config(
    db: &str,
    redis: &str,
    prefix: &str,
    clock: &ManualClock,
    apps: Vec<AppConfig>,
) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: db.into(),
        redis_url: Some(redis.into()),
        redis_prefix: prefix.into(),
        data_key: Some("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=".into()),
        apps,
        fleet_lease_ms: 3_000,
        warmup_spread_secs: 0,
        refresher_poll_ms: 100,
        registry_poll_ms: 200,
        clock: Some(Arc::new(clock.clone())),
        // The simulator listens on loopback.
        webhook_allow_private: vec!["127.0.0.0/8".into()],
        ..Config::default()
    }
}

fn app(appid: &str, secret: &str, sim: &str, warm: Option<WarmPolicy>) -> AppConfig {
    AppConfig {
        appid: appid.into(),
        secret: Some(secret.into()),
        secret_env: None,
        api_base: sim.into(),
        token_mode: TokenMode::Classic,
        push: None,
        warm,
        access_tokens: true,
    }
}

async fn until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_of_three_refreshes_each_app_once_per_period() {
    let sim = weapp_sim::spawn(SimConfig::default()).await.unwrap();
    let clock = ManualClock::new(sim.sim().now_ms());
    let db = PgDatabase::create().await;
    let redis = RedisServer::start();
    let prefix = unique_prefix("fleet");
    let apps: Vec<(String, String)> = (0..1000)
        .map(|i| {
            sim.sim()
                .add_app(Some(format!("wxfleet{i:010}")), None, false)
        })
        .collect();
    let app_configs: Vec<AppConfig> = apps
        .iter()
        .map(|(a, s)| app(a, s, sim.url(), None))
        .collect();
    let cfg = config(db.url(), &redis.url(), &prefix, &clock, app_configs);
    let mut fleet = Vec::new();
    for _ in 0..3 {
        fleet.push(weapp_server::spawn(cfg.clone()).await.unwrap());
    }
    let issued = |sim: &weapp_sim::SimHandle| -> Vec<u64> {
        apps.iter()
            .map(|(a, _)| sim.sim().tokens_issued(a, TokenKind::Classic))
            .collect()
    };
    // Every app gets its first token, once.
    until(
        Duration::from_secs(90),
        "a first token for every app",
        || issued(&sim).iter().all(|n| *n >= 1),
    )
    .await;
    // The shards settle: each instance holds its share, all of them held.
    until(
        Duration::from_secs(20),
        "the shards shared by three",
        || {
            let held: Vec<usize> = fleet
                .iter()
                .map(|s| s.state().broker.fleet_status().shards_held)
                .collect();
            // Shares of ⌈64 / 3⌉ = 22 at most: 22 + 22 + 20.
            held.iter().sum::<usize>() == 64 && held.iter().all(|h| (20..=22).contains(h))
        },
    )
    .await;
    let refreshers: usize = fleet
        .iter()
        .map(|s| s.state().broker.fleet_status().refreshers)
        .sum();
    assert_eq!(refreshers, 1000, "one refresher per app in the fleet");
    let first = issued(&sim);
    assert!(
        first.iter().all(|n| *n == 1),
        "apps fetched more than once at start: {:?}",
        first.iter().filter(|n| **n != 1).count()
    );
    // One period: past the refresh point and every refresher's jitter, before expiry.
    sim.sim().advance(7200 - 300 + 61);
    clock.advance_secs(7200 - 300 + 61);
    until(Duration::from_secs(90), "a refresh of every app", || {
        issued(&sim).iter().all(|n| *n >= 2)
    })
    .await;
    // Let every refresher look again: nobody refreshes twice.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let second = issued(&sim);
    let twice: Vec<&(String, String)> = apps
        .iter()
        .zip(&second)
        .filter(|(_, n)| **n != 2)
        .map(|(a, _)| a)
        .collect();
    assert!(
        twice.is_empty(),
        "{} apps were fetched other than once this period",
        twice.len()
    );
    for s in fleet {
        s.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_warm_on_use_cost_nothing_until_used() {
    let sim = weapp_sim::spawn(SimConfig::default()).await.unwrap();
    let clock = ManualClock::new(sim.sim().now_ms());
    let db = PgDatabase::create().await;
    let redis = RedisServer::start();
    let prefix = unique_prefix("fleet-on-use");
    let (idle, idle_secret) = sim.sim().add_app(Some("wxidle".into()), None, false);
    let (used, used_secret) = sim.sim().add_app(Some("wxused".into()), None, false);
    let (hot, hot_secret) = sim.sim().add_app(Some("wxhot".into()), None, false);
    let mut cfg = config(
        db.url(),
        &redis.url(),
        &prefix,
        &clock,
        vec![
            app(&idle, &idle_secret, sim.url(), Some(WarmPolicy::OnUse)),
            app(&used, &used_secret, sim.url(), Some(WarmPolicy::OnUse)),
            app(&hot, &hot_secret, sim.url(), None),
        ],
    );
    cfg.clients = vec![weapp_server::config::ClientConfig {
        name: "all".into(),
        key: Some("all-apps-key-0123456789".into()),
        key_env: None,
        key_sha256: None,
        apps: vec!["*".into()],
        scopes: None,
    }];
    let a = weapp_server::spawn(cfg.clone()).await.unwrap();
    let b = weapp_server::spawn(cfg).await.unwrap();
    let n = |appid: &str| sim.sim().tokens_issued(appid, TokenKind::Classic);
    until(
        Duration::from_secs(20),
        "the always-warm app's token",
        || n(&hot) == 1,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        (n(&idle), n(&used)),
        (0, 0),
        "on_use apps fetched before any use"
    );
    // One broker read on B warms `used` for the fleet (whichever instance holds its shard).
    let http = reqwest::Client::new();
    let r = http
        .get(format!("{}/v1/apps/{used}/access_token", b.url()))
        .bearer_auth("all-apps-key-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(n(&used), 1);
    // A period later the used app was refreshed ahead of time by the fleet; the idle one still
    // costs nothing.
    sim.sim().advance(7200 - 300 + 61);
    clock.advance_secs(7200 - 300 + 61);
    until(Duration::from_secs(20), "the used app refreshed", || {
        n(&used) == 2 && n(&hot) == 2
    })
    .await;
    assert_eq!(n(&idle), 0);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
