//! A day of a fleet: three weapp-server instances sharing PostgreSQL and Redis serve ten
//! thousand apps for 24 hours of virtual time against weapp-sim, and one of them is killed at
//! noon (its runtime dropped: no goodbye, its shard leases left to run out).
//!
//! The simulator's clock and the servers' token clock move together, in steps; between steps
//! virtual time stands still while real-time work finishes (refreshes in flight, a takeover), as
//! in the SDK's day-in-the-life. Every step, broker callers read the tokens of random apps
//! through random live instances and use each token against the simulator; the report counts
//! the tokens WeChat issued per app, errors callers saw, and tokens that WeChat refused
//! (40001) after a caller got them.
//!
//! ```sh
//! cargo run --release -p weapp-server --example fleet_day      # APPS=10000 STEP_SECS=300 READS=100
//! ```
//! Needs `redis-server` on the PATH and PostgreSQL (`WEAPP_TEST_POSTGRES_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`).

use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "support/day.rs"]
mod day;
use day::{env_or, spread, Day, Instance};

use weapp::clock::ManualClock;
use weapp::TokenMode;
use weapp_server::config::{AppConfig, ClientConfig};
use weapp_server::Config;
use weapp_sim::{SimConfig, TokenKind};
use weapp_test_support::{unique_prefix, PgDatabase, RedisServer};

const KEY: &str = "fleet-day-client-key-0123456789";

fn main() {
    let apps = env_or("APPS", 10_000);
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
                .add_app(
                    Some(format!("wxday{i:012}")),
                    Some(format!("s{i:020}")),
                    false,
                )
                .0
        })
        .collect();
    let config = Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        database_url: db.url().into(),
        redis_url: Some(redis.url()),
        redis_prefix: unique_prefix("fleet-day"),
        data_key: Some("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=".into()),
        apps: appids
            .iter()
            .enumerate()
            .map(|(i, a)| AppConfig {
                appid: a.clone(),
                secret: Some(format!("s{i:020}").into()),
                secret_env: None,
                api_base: sim.url().into(),
                token_mode: TokenMode::Classic,
                push: None,
                warm: None,
                access_tokens: true,
            })
            .collect(),
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
            .map(|a| sim.sim().tokens_issued(a, TokenKind::Classic))
            .sum()
    };
    // Start: every app's first token, spread over the warm-up.
    driver.block_on(async {
        while appids
            .iter()
            .any(|a| sim.sim().tokens_issued(a, TokenKind::Classic) == 0)
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    println!(
        "{apps} apps warm after {:.1} s real time",
        started.elapsed().as_secs_f64()
    );
    let day = Day {
        driver: &driver,
        sim: &sim,
        clock: &clock,
        http: &http,
        key: KEY,
        appids: &appids,
        noun: "apps",
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
        .map(|a| sim.sim().tokens_issued(a, TokenKind::Classic))
        .collect();
    let (max, mean, over, hist) = spread(&per_app);
    println!("| | measured | goal |\n|---|---|---|");
    println!("| apps | {apps} | |");
    println!("| tokens WeChat issued per app for the day | max {max}, mean {mean:.2}, apps over 13: {over} ({hist:?}) | ≤ 13 |");
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
