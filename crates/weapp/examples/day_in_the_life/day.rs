//! A day in the life of three token managers sharing Redis: a steady stream of API calls for
//! 24 hours of virtual time against weapp-sim, with faults along the way. Shared by the
//! `day_in_the_life` example (which prints the report for BENCHMARKS.md) and the test of the
//! same name (which asserts the guarantees).
//!
//! Time: the simulator's clock and the SDK's `ManualClock` move together, one step at a time.
//! Virtual time stands still while real-time work is in progress (a refresh in flight, a
//! store cooling down after a failure), so WeChat's latency costs no virtual time — the clock
//! never outruns a refresh the way a fixed compression ratio would.

use std::sync::Arc;
use std::time::{Duration, Instant};

use weapp::clock::ManualClock;
use weapp::token::redis::RedisStore;
use weapp::token::TokenPolicy;
use weapp::{AppSecret, Client, Error, TokenMode};
use weapp_sim::{Fault, TokenKind};
use weapp_test_support::RedisServer;

const HOUR: i64 = 3600;

/// What the day is made of.
#[derive(Debug, Clone)]
pub struct DayConfig {
    /// Classic or stable tokens.
    pub mode: TokenMode,
    /// Virtual seconds per step.
    pub step_secs: i64,
    /// API calls per manager per step.
    pub calls_per_step: usize,
    /// Run with the faults (10 % -1, latency spikes, a Redis restart, a foreign fetch, a flush).
    pub faults: bool,
}

impl Default for DayConfig {
    fn default() -> Self {
        Self {
            mode: TokenMode::Classic,
            step_secs: 30,
            calls_per_step: 2,
            faults: true,
        }
    }
}

/// What happened.
#[derive(Debug, Default)]
pub struct DayReport {
    /// API calls made by callers.
    pub calls: u64,
    /// Calls that failed, any reason.
    pub caller_errors: u64,
    /// Calls that failed with 40001/40014/42001 (a token WeChat no longer accepts).
    pub token_errors: u64,
    /// The first few errors, for the record.
    pub error_samples: Vec<String>,
    /// Successful upstream fetches by the three managers together.
    pub fetches: u64,
    /// Tokens WeChat issued to us (the foreign fetch excluded): fetches plus calls that timed
    /// out after WeChat had already issued a token.
    pub issued: u64,
    /// Calls to the token endpoint (retries of -1 and timed-out calls included).
    pub token_calls: u64,
    /// The longest a caller waited for one API call (real time; includes the API's own
    /// latency spikes and their retries).
    pub longest_wait: Duration,
    /// The longest a caller waited for a token (real time).
    pub longest_token_wait: Duration,
    /// What was injected, in order.
    pub events: Vec<String>,
    /// Real time the day took.
    pub elapsed: Duration,
}

/// Runs one day.
pub async fn run(config: DayConfig) -> DayReport {
    let started = Instant::now();
    let mut redis = RedisServer::start();
    let sim = weapp_sim::spawn(weapp_sim::SimConfig::default())
        .await
        .expect("simulator");
    let (appid, secret) = sim.sim().add_app(None, None, false);
    let clock = ManualClock::new(sim.sim().now_ms());
    let prefix = format!("weapp-day:{}", std::process::id());
    let (token_path, kind) = match config.mode {
        TokenMode::Classic => ("/cgi-bin/token", TokenKind::Classic),
        _ => ("/cgi-bin/stable_token", TokenKind::Stable),
    };
    let policy = TokenPolicy {
        refresher_poll: Duration::from_millis(10),
        store_cooldown: Duration::from_millis(200),
        ..TokenPolicy::default()
    };
    let mut clients = Vec::new();
    for _ in 0..3 {
        let store = RedisStore::connect(&redis.url(), prefix.clone())
            .await
            .expect("redis")
            .with_clock(Arc::new(clock.clone()));
        let client = Client::builder(&appid, AppSecret::new(&secret))
            .base_url(sim.url())
            .token_mode(config.mode)
            .timeout(Duration::from_millis(1000))
            .token_store(Arc::new(store))
            .token_policy(policy.clone())
            .clock(Arc::new(clock.clone()))
            .build()
            .expect("client");
        clients.push(client);
    }
    let refreshers: Vec<_> = clients
        .iter()
        .map(|c| c.token_manager().expect("manager").start_refresher())
        .collect();

    let mut report = DayReport::default();
    if config.faults {
        sim.sim().add_fault(Fault {
            rate: Some(0.1),
            ..Fault::errcode(token_path, -1)
        });
        report
            .events
            .push("all day: 10 % of token calls answer -1".into());
    }
    let mut foreign = 0;
    let steps = 24 * HOUR / config.step_secs;
    for step in 0..steps {
        let t = step * config.step_secs;
        if config.faults {
            match t {
                t if t == 5 * HOUR || t == 14 * HOUR + 1800 => {
                    // Spikes past the 1 s timeout on the next two token calls and API calls.
                    sim.sim()
                        .add_fault(Fault::latency(token_path, 1500).times(2));
                    sim.sim()
                        .add_fault(Fault::latency("/cgi-bin/openapi/quota/get", 1500).times(2));
                    report
                        .events
                        .push(format!("{:>5.2} h: latency spike (1.5 s, past the 1 s timeout) on the next 2 token calls and 2 API calls", t as f64 / 3600.0));
                }
                t if t == 8 * HOUR => {
                    redis.restart();
                    report
                        .events
                        .push("8.00 h: Redis restarted (empty: it keeps nothing on disk)".into());
                }
                t if t == 11 * HOUR => {
                    // A forgotten laptop with the secret fetches a classic token.
                    let _ = sim.sim().classic_token(
                        Some("client_credential"),
                        Some(&appid),
                        Some(&secret),
                    );
                    foreign += 1;
                    report.events.push(
                        "11.00 h: a foreign /cgi-bin/token fetch (a forgotten laptop)".into(),
                    );
                }
                t if t == 17 * HOUR => {
                    if let Ok(c) = redis::Client::open(redis.url()) {
                        if let Ok(mut conn) = c.get_multiplexed_async_connection().await {
                            let _: Result<(), _> =
                                redis::cmd("FLUSHALL").query_async(&mut conn).await;
                        }
                    }
                    report.events.push("17.00 h: FLUSHALL".into());
                }
                _ => {}
            }
        }
        sim.sim().advance(config.step_secs);
        clock.advance_secs(config.step_secs);
        settle(&clients).await;
        for client in &clients {
            let began = Instant::now();
            if let Err(e) = client.access_token().await {
                report.caller_errors += 1;
                if report.error_samples.len() < 10 {
                    report.error_samples.push(format!(
                        "{:.2} h: token: {}",
                        t as f64 / 3600.0,
                        describe(&e)
                    ));
                }
            }
            report.longest_token_wait = report.longest_token_wait.max(began.elapsed());
            for _ in 0..config.calls_per_step {
                let began = Instant::now();
                let result = client.openapi().quota("/cgi-bin/token").await;
                report.longest_wait = report.longest_wait.max(began.elapsed());
                report.calls += 1;
                if let Err(e) = result {
                    report.caller_errors += 1;
                    if e.is_token_invalid() {
                        report.token_errors += 1;
                    }
                    if report.error_samples.len() < 10 {
                        report.error_samples.push(format!(
                            "{:.2} h: {}",
                            t as f64 / 3600.0,
                            describe(&e)
                        ));
                    }
                }
            }
        }
    }
    for r in refreshers {
        r.stop().await;
    }
    report.fetches = clients
        .iter()
        .map(|c| c.token_manager().expect("manager").fetch_count())
        .sum();
    let foreign = if config.mode == TokenMode::Classic {
        foreign
    } else {
        0
    };
    report.issued = sim.sim().tokens_issued(&appid, kind) - foreign;
    report.token_calls = sim.sim().calls(token_path);
    report.elapsed = started.elapsed();
    report
}

/// Lets real-time work finish before virtual time moves on: refreshes in flight, a store in
/// its cooldown after a failure (Redis reconnecting).
async fn settle(clients: &[Client]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        tokio::time::sleep(Duration::from_millis(2)).await;
        let busy = clients.iter().any(|c| {
            let s = c.token_manager().expect("manager").status();
            s.refreshing || s.store_down
        });
        if !busy || Instant::now() > deadline {
            return;
        }
    }
}

fn describe(e: &Error) -> String {
    match e.errcode() {
        Some(code) => format!("errcode {code}: {e}"),
        None => e.to_string(),
    }
}
