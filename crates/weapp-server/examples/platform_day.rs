//! A day of a third-party platform's fleet: three weapp-server instances sharing PostgreSQL and
//! Redis act for ten thousand merchants' mini programs (authorizer tokens) for 24 hours of
//! virtual time against weapp-sim, and one of them is killed at noon. The merchants authorize
//! the platform at the start (the page, the `authorized` push, `api_query_auth` storing each
//! refresh token in the database); then, every step, broker callers read random merchants'
//! authorizer tokens through random live instances and use them against the simulator. The
//! report counts the authorizer-token refreshes per merchant and the component tokens WeChat
//! issued, the errors callers saw, and tokens WeChat refused after a caller got them.
//!
//! ```sh
//! cargo run --release -p weapp-server --example platform_day   # MERCHANTS=10000 STEP_SECS=300 READS=100
//! ```
//! Needs `redis-server` on the PATH and PostgreSQL (`WEAPP_TEST_POSTGRES_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`).

use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "support/day.rs"]
mod day;
use day::{env_or, spread, Day, Instance};

use weapp::clock::ManualClock;
use weapp_server::config::{ClientConfig, PlatformConfig};
use weapp_server::Config;
use weapp_sim::{SimConfig, TokenKind};
use weapp_test_support::{unique_prefix, PgDatabase, RedisServer};

const KEY: &str = "platform-day-client-key-01234567";
const COMPONENT: &str = "wxplatformday0001";
const COMPONENT_SECRET: &str = "platform-day-secret";
const PUSH_TOKEN: &str = "platformday";
const AES: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc";

fn main() {
    let apps = env_or("MERCHANTS", 10_000);
    let step = env_or("STEP_SECS", 300) as i64;
    let reads = env_or("READS", 100);
    let driver = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let started = Instant::now();
    let (sim, db, redis) = driver.block_on(async {
        let sim = weapp_sim::spawn(SimConfig::default()).await.expect("sim");
        (sim, PgDatabase::create().await, RedisServer::start())
    });
    let clock = ManualClock::new(sim.sim().now_ms());
    let appids: Vec<String> = (0..apps)
        .map(|i| {
            sim.sim()
                .add_app(Some(format!("wxshop{i:012}")), None, false)
                .0
        })
        .collect();
    let config = Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        database_url: db.url().into(),
        redis_url: Some(redis.url()),
        redis_prefix: unique_prefix("fleet-day"),
        data_key: Some("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=".into()),
        platforms: vec![PlatformConfig {
            component_appid: COMPONENT.into(),
            secret: Some(COMPONENT_SECRET.into()),
            secret_env: None,
            token: PUSH_TOKEN.into(),
            encoding_aes_key: AES.into(),
            api_base: sim.url().into(),
            webhook_url: None,
            webhook_secret: None,
        }],
        platform_reconcile_secs: 0,
        clients: vec![ClientConfig {
            name: "callers".into(),
            key: Some(KEY.into()),
            key_env: None,
            key_sha256: None,
            apps: vec!["*".into()],
            scopes: None,
        }],
        fleet_lease_ms: 4_000,
        warmup_spread_secs: 10,
        refresher_poll_ms: 100,
        auth_failure_limit_per_minute: 0,
        clock: Some(Arc::new(clock.clone())),
        // The simulator listens on loopback.
        webhook_allow_private: vec!["127.0.0.0/8".into()],
        ..Config::default()
    };
    let mut fleet: Vec<Instance> = (0..3).map(|_| Instance::start(config.clone())).collect();
    let http = reqwest::Client::new();
    let issued = |sim: &weapp_sim::SimHandle| -> u64 {
        appids
            .iter()
            .map(|a| sim.sim().tokens_issued(a, TokenKind::Authorizer))
            .sum::<u64>()
            + sim.sim().component_tokens_issued(COMPONENT)
    };
    // WeChat learns the platform's event URL (instance 0 behind it); the first ticket arrives.
    let register = |url: &str| {
        let http = http.clone();
        let body = serde_json::json!({"component_appid": COMPONENT, "secret": COMPONENT_SECRET,
            "token": PUSH_TOKEN, "encoding_aes_key": AES,
            "event_url": format!("{url}/v1/platforms/{COMPONENT}/events")});
        let sim_url = sim.url().to_owned();
        async move {
            http.post(format!("{sim_url}/_sim/platforms"))
                .json(&body)
                .send()
                .await
                .expect("register the platform")
        }
    };
    let first = fleet[0].server.url().to_owned();
    driver.block_on(async {
        register(&first).await;
        let store = fleet[0].server.state().store.clone();
        while store
            .platform_ticket(COMPONENT)
            .await
            .expect("db")
            .is_none()
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    // Every merchant authorizes the platform: the page, the push, api_query_auth.
    let component = fleet[0]
        .server
        .state()
        .platforms
        .platform(COMPONENT)
        .unwrap()
        .component
        .clone();
    driver.block_on(async {
        for chunk in appids.chunks(64) {
            let mut tasks = Vec::new();
            for merchant in chunk {
                let (component, http, sim_url, merchant) = (
                    component.clone(),
                    http.clone(),
                    sim.url().to_owned(),
                    merchant.clone(),
                );
                tasks.push(tokio::spawn(async move {
                    let pre = component.pre_auth_code().await.expect("pre-auth code");
                    let v: serde_json::Value = http
                        .post(format!("{sim_url}/_sim/platforms/{COMPONENT}/authorize"))
                        .json(&serde_json::json!({"pre_auth_code": pre.pre_auth_code,
                            "authorizer_appid": merchant, "redirect_uri": "https://platform.example/back"}))
                        .send()
                        .await
                        .expect("authorize")
                        .json()
                        .await
                        .expect("json");
                    assert_eq!(v["push"]["delivered"], true, "{v}");
                }));
            }
            for t in tasks {
                t.await.expect("authorization");
            }
        }
    });
    println!(
        "{apps} merchants authorized after {:.1} s real time",
        started.elapsed().as_secs_f64()
    );
    // Start: every merchant served by every instance, and its refresher's first token.
    driver.block_on(async {
        while fleet.iter().any(|i| {
            appids
                .iter()
                .any(|a| i.server.state().broker.app(a).is_none())
        }) || appids
            .iter()
            .any(|a| sim.sim().tokens_issued(a, TokenKind::Authorizer) < 2)
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    // The day counts from here: what api_query_auth issued is the authorization, not a refresh.
    let at_start: Vec<u64> = appids
        .iter()
        .map(|a| sim.sim().tokens_issued(a, TokenKind::Authorizer))
        .collect();
    let component_at_start = sim.sim().component_tokens_issued(COMPONENT);
    println!(
        "{apps} merchants warm after {:.1} s real time",
        started.elapsed().as_secs_f64()
    );
    let day = Day {
        driver: &driver,
        sim: &sim,
        clock: &clock,
        http: &http,
        key: KEY,
        appids: &appids,
        noun: "merchants",
        step,
        reads,
    };
    let day::Outcome {
        calls,
        errors,
        refused,
        samples,
        killed_at,
    } = day.run(&mut fleet, || issued(&sim));
    let per_app: Vec<u64> = appids
        .iter()
        .zip(&at_start)
        .map(|(a, s)| sim.sim().tokens_issued(a, TokenKind::Authorizer) - s + 1)
        .collect();
    let component_tokens = sim.sim().component_tokens_issued(COMPONENT);
    let (max, mean, over, hist) = spread(&per_app);
    println!("| | measured | goal |\n|---|---|---|");
    println!("| merchants | {apps} | |");
    println!("| authorizer tokens per merchant for the day | max {max}, mean {mean:.2}, merchants over 13: {over} ({hist:?}) | ≤ 13 |");
    println!("| component tokens for the day (and before it: the authorizations) | {} ({component_at_start}) | ≤ 13 |", component_tokens - component_at_start + 1.min(component_at_start));
    println!("| broker reads (each token then used against WeChat) | {calls} | |");
    println!("| errors seen by broker callers | {errors} | 0 |");
    println!("| tokens refused by WeChat after a caller got them (40001/42001) | {refused} | 0 |");
    println!(
        "| instance killed | at {:.2} h | |",
        killed_at.unwrap_or(0) as f64 / 3600.0
    );
    println!("| real time | {:.0} s | |", started.elapsed().as_secs_f64());
    for s in &samples {
        println!("sample: {s}");
    }
    for mut i in fleet {
        i.kill();
    }
    drop(driver);
}
