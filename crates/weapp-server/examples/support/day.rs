//! The virtual day shared by `fleet_day` and `platform_day`: three instances, each on its own
//! runtime (dropping it kills the instance like `kill -9`), 24 hours of virtual time in steps,
//! one instance killed at noon, broker callers reading random tokens through random live
//! instances and using each against the simulator.

use std::time::{Duration, Instant};

use weapp::clock::ManualClock;
use weapp_server::{Config, ServerHandle};
use weapp_sim::SimHandle;

/// Seconds in an hour.
pub const HOUR: i64 = 3600;

/// The environment variable `name` as a number, or `default`.
pub fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// An instance on its own runtime, so that dropping the runtime kills it like `kill -9`.
pub struct Instance {
    runtime: Option<tokio::runtime::Runtime>,
    /// The running server.
    pub server: ServerHandle,
}

impl Instance {
    /// Starts an instance with `config`.
    pub fn start(config: Config) -> Self {
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

    /// Not killed.
    pub fn alive(&self) -> bool {
        self.runtime.is_some()
    }

    /// Every task dropped at once: no lease released, no goodbye.
    pub fn kill(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// What the callers saw during the day.
#[derive(Default)]
pub struct Outcome {
    /// Broker reads.
    pub calls: u64,
    /// Reads that did not get a token.
    pub errors: u64,
    /// Tokens WeChat refused (40001/42001) after a caller got them.
    pub refused: u64,
    /// The first few failures.
    pub samples: Vec<String>,
    /// Virtual seconds into the day when an instance was killed.
    pub killed_at: Option<i64>,
}

impl Outcome {
    fn sample(&mut self, t: i64, what: String) {
        if self.samples.len() < 10 {
            self.samples
                .push(format!("{:.2} h: {what}", t as f64 / 3600.0));
        }
    }
}

/// Everything a day needs.
pub struct Day<'a> {
    /// Drives the callers.
    pub driver: &'a tokio::runtime::Runtime,
    /// The simulator (its clock moves with `clock`).
    pub sim: &'a SimHandle,
    /// The servers' token clock.
    pub clock: &'a ManualClock,
    /// The callers' client.
    pub http: &'a reqwest::Client,
    /// The broker client key.
    pub key: &'a str,
    /// The appids served (apps or merchants).
    pub appids: &'a [String],
    /// What they are called in the report ("apps", "merchants").
    pub noun: &'a str,
    /// Virtual seconds per step.
    pub step: i64,
    /// Broker reads per step.
    pub reads: usize,
}

impl Day<'_> {
    /// Runs the day over `fleet`, killing `fleet[1]` at noon; `issued` counts what WeChat has
    /// issued so far (a step ends when it has not changed for 300 ms).
    pub fn run(&self, fleet: &mut [Instance], issued: impl Fn() -> u64) -> Outcome {
        let mut out = Outcome::default();
        for n in 0..24 * HOUR / self.step {
            let t = n * self.step;
            if t >= 12 * HOUR && out.killed_at.is_none() {
                fleet[1].kill();
                out.killed_at = Some(t);
                let took = self.takeover(fleet);
                println!(
                    "12.00 h: instance killed; its {} taken over after {:.2} s real time",
                    self.noun,
                    took.as_secs_f64()
                );
            }
            self.sim.sim().advance(self.step);
            self.clock.advance_secs(self.step);
            self.settle(&issued);
            let live: Vec<String> = fleet
                .iter()
                .filter(|i| i.alive())
                .map(|i| i.server.url().to_owned())
                .collect();
            self.driver.block_on(self.callers(&live, t, &mut out));
        }
        out
    }

    /// Virtual time stands still while the survivors take every shard and refresher over.
    fn takeover(&self, fleet: &[Instance]) -> Duration {
        let began = Instant::now();
        self.driver.block_on(async {
            loop {
                let live = fleet.iter().filter(|i| i.alive());
                let (held, running) = live.fold((0, 0), |(h, r), i| {
                    let s = i.server.state().broker.fleet_status();
                    (h + s.shards_held, r + s.refreshers)
                });
                if held == 64 && running == self.appids.len() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        began.elapsed()
    }

    /// Lets the refreshes of a step finish: until WeChat has issued nothing new for 300 ms.
    fn settle(&self, issued: &impl Fn() -> u64) {
        self.driver.block_on(async {
            let mut last = issued();
            let mut quiet = Instant::now();
            let began = Instant::now();
            while quiet.elapsed() < Duration::from_millis(300)
                && began.elapsed() < Duration::from_secs(30)
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let now = issued();
                if now != last {
                    last = now;
                    quiet = Instant::now();
                }
            }
        });
    }

    /// Random tokens through random live instances, each used against WeChat at once.
    async fn callers(&self, live: &[String], t: i64, out: &mut Outcome) {
        for _ in 0..self.reads {
            let appid = &self.appids[rand::random::<u64>() as usize % self.appids.len()];
            let url = &live[rand::random::<u64>() as usize % live.len()];
            out.calls += 1;
            let got = self
                .http
                .get(format!("{url}/v1/apps/{appid}/access_token"))
                .bearer_auth(self.key)
                .send()
                .await;
            let token = match got {
                Ok(r) if r.status() == 200 => r
                    .json::<serde_json::Value>()
                    .await
                    .ok()
                    .and_then(|v| v["access_token"].as_str().map(str::to_owned)),
                Ok(r) => {
                    out.sample(t, format!("{appid}: HTTP {}", r.status()));
                    None
                }
                Err(e) => {
                    out.sample(t, format!("{appid}: {e}"));
                    None
                }
            };
            let Some(token) = token else {
                out.errors += 1;
                continue;
            };
            let used = self
                .http
                .post(format!(
                    "{}/cgi-bin/openapi/quota/get?access_token={token}",
                    self.sim.url()
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
                out.refused += 1;
                out.sample(t, format!("{appid}: WeChat refused the token ({errcode})"));
            }
        }
    }
}

/// Max, mean, how many over 13, and the histogram of per-app counts.
pub fn spread(per_app: &[u64]) -> (u64, f64, usize, std::collections::BTreeMap<u64, usize>) {
    let max = per_app.iter().max().copied().unwrap_or(0);
    let over = per_app.iter().filter(|n| **n > 13).count();
    let mean = per_app.iter().sum::<u64>() as f64 / per_app.len().max(1) as f64;
    let mut hist = std::collections::BTreeMap::new();
    for n in per_app {
        *hist.entry(*n).or_insert(0usize) += 1;
    }
    (max, mean, over, hist)
}
