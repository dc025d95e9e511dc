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

use weapp::clock::ManualClock;
use weapp::TokenMode;
use weapp_server::config::{AppConfig, ClientConfig};
use weapp_server::{Config, ServerHandle};
use weapp_sim::{SimConfig, TokenKind};
use weapp_test_support::{unique_prefix, PgDatabase, RedisServer};

const KEY: &str = "fleet-day-client-key-0123456789";
const HOUR: i64 = 3600;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// An instance on its own runtime, so that dropping the runtime kills it like `kill -9`.
struct Instance {
    runtime: Option<tokio::runtime::Runtime>,
    server: ServerHandle,
}

impl Instance {
    fn start(config: Config) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let server = runtime
            .block_on(weapp_server::spawn(config))
            .expect("instance starts");
        Self {
            runtime: Some(runtime),
            server,
        }
    }

    fn alive(&self) -> bool {
        self.runtime.is_some()
    }

    /// Every task dropped at once: no lease released, no goodbye.
    fn kill(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

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
    let (mut calls, mut errors, mut refused) = (0u64, 0u64, 0u64);
    let mut samples: Vec<String> = Vec::new();
    let mut killed_at = None;
    let steps = 24 * HOUR / step;
    for n in 0..steps {
        let t = n * step;
        if t >= 12 * HOUR && killed_at.is_none() {
            fleet[1].kill();
            killed_at = Some(t);
            // Virtual time stands still while the survivors take the shards over.
            let began = Instant::now();
            driver.block_on(async {
                loop {
                    let held: usize = fleet
                        .iter()
                        .filter(|i| i.alive())
                        .map(|i| i.server.state().fleet_status().shards_held)
                        .sum();
                    let running: usize = fleet
                        .iter()
                        .filter(|i| i.alive())
                        .map(|i| i.server.state().fleet_status().refreshers)
                        .sum();
                    if held == 64 && running == apps {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            });
            println!(
                "12.00 h: instance killed; its apps taken over after {:.2} s real time",
                began.elapsed().as_secs_f64()
            );
        }
        sim.sim().advance(step);
        clock.advance_secs(step);
        // Let the refreshes of this step finish: until the simulator has issued nothing new
        // for 300 ms.
        driver.block_on(async {
            let mut last = issued(&sim);
            let mut quiet = Instant::now();
            let began = Instant::now();
            while quiet.elapsed() < Duration::from_millis(300)
                && began.elapsed() < Duration::from_secs(30)
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let now = issued(&sim);
                if now != last {
                    last = now;
                    quiet = Instant::now();
                }
            }
        });
        // Callers: random apps through random live instances; each token used at once.
        let live: Vec<String> = fleet
            .iter()
            .filter(|i| i.alive())
            .map(|i| i.server.url().to_owned())
            .collect();
        driver.block_on(async {
            for _ in 0..reads {
                let appid = &appids[rand::random::<u64>() as usize % appids.len()];
                let url = &live[rand::random::<u64>() as usize % live.len()];
                calls += 1;
                let got = http
                    .get(format!("{url}/v1/apps/{appid}/access_token"))
                    .bearer_auth(KEY)
                    .send()
                    .await;
                let token = match got {
                    Ok(r) if r.status() == 200 => r
                        .json::<serde_json::Value>()
                        .await
                        .ok()
                        .and_then(|v| v["access_token"].as_str().map(str::to_owned)),
                    Ok(r) => {
                        if samples.len() < 10 {
                            samples.push(format!(
                                "{:.2} h: {appid}: HTTP {}",
                                t as f64 / 3600.0,
                                r.status()
                            ));
                        }
                        None
                    }
                    Err(e) => {
                        if samples.len() < 10 {
                            samples.push(format!("{:.2} h: {appid}: {e}", t as f64 / 3600.0));
                        }
                        None
                    }
                };
                let Some(token) = token else {
                    errors += 1;
                    continue;
                };
                let used = http
                    .post(format!(
                        "{}/cgi-bin/openapi/quota/get?access_token={token}",
                        sim.url()
                    ))
                    .json(&serde_json::json!({"cgi_path": "/cgi-bin/token"}))
                    .send()
                    .await
                    .ok();
                let errcode = match used {
                    Some(r) => r
                        .json::<serde_json::Value>()
                        .await
                        .ok()
                        .and_then(|v| v["errcode"].as_i64())
                        .unwrap_or(-2),
                    None => -2,
                };
                if matches!(errcode, 40001 | 42001) {
                    refused += 1;
                    if samples.len() < 10 {
                        samples.push(format!(
                            "{:.2} h: {appid}: WeChat refused the token ({errcode})",
                            t as f64 / 3600.0
                        ));
                    }
                }
            }
        });
    }
    let per_app: Vec<u64> = appids
        .iter()
        .map(|a| sim.sim().tokens_issued(a, TokenKind::Classic))
        .collect();
    let max = per_app.iter().max().copied().unwrap_or(0);
    let over = per_app.iter().filter(|n| **n > 13).count();
    let mean = per_app.iter().sum::<u64>() as f64 / per_app.len().max(1) as f64;
    let mut hist = std::collections::BTreeMap::new();
    for n in &per_app {
        *hist.entry(*n).or_insert(0usize) += 1;
    }
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
