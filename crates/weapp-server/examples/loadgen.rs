//! A small closed-loop load generator for weapp-server: C concurrent workers send N requests
//! to one endpoint; it prints requests/second and latency percentiles. Rounds interleave the
//! targets (`/healthz` baseline, broker token, login) so machine noise hits all of them alike.
//!
//! Run through `scripts/bench-server`, which starts `weapp serve --sandbox` and passes:
//! `loadgen SERVER_URL SIM_URL APPID CLIENT_KEY`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

struct Outcome {
    rps: f64,
    p50: Duration,
    p99: Duration,
}

async fn drive<F, Fut>(concurrency: usize, total: usize, make: F) -> Outcome
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let make = Arc::new(make);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (make, next) = (make.clone(), next.clone());
            tokio::spawn(async move {
                let mut lat = Vec::new();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= total {
                        break lat;
                    }
                    let t = Instant::now();
                    assert!(make(i).await, "request {i} failed");
                    lat.push(t.elapsed());
                }
            })
        })
        .collect();
    let mut all = Vec::with_capacity(total);
    for w in workers {
        all.extend(w.await.expect("worker"));
    }
    let elapsed = started.elapsed();
    all.sort_unstable();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    Outcome {
        rps: total as f64 / elapsed.as_secs_f64(),
        p50: pct(0.50),
        p99: pct(0.99),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [server, sim, appid, key] =
        <[String; 4]>::try_from(args).expect("usage: loadgen SERVER_URL SIM_URL APPID CLIENT_KEY");
    let concurrency: usize = std::env::var("CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);
    let rounds = 3;
    let (n_fast, n_login) = (20_000usize, 3_000usize);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .expect("client");

    let mut results: Vec<(&str, Vec<Outcome>)> = vec![
        ("GET /healthz (baseline)", vec![]),
        ("GET /v1/apps/{appid}/access_token", vec![]),
        ("POST /v1/login", vec![]),
    ];
    for round in 0..rounds {
        let h = http.clone();
        let url = format!("{server}/healthz");
        results[0].1.push(
            drive(concurrency, n_fast, move |_| {
                let (h, url) = (h.clone(), url.clone());
                async move { h.get(url).send().await.is_ok_and(|r| r.status() == 200) }
            })
            .await,
        );

        let h = http.clone();
        let url = format!("{server}/v1/apps/{appid}/access_token");
        let k = key.clone();
        results[1].1.push(
            drive(concurrency, n_fast, move |_| {
                let (h, url, k) = (h.clone(), url.clone(), k.clone());
                async move {
                    h.get(url)
                        .bearer_auth(k)
                        .send()
                        .await
                        .is_ok_and(|r| r.status() == 200)
                }
            })
            .await,
        );

        // One fresh wx.login code per request, minted before timing starts.
        let mut codes = Vec::with_capacity(n_login);
        for _ in 0..n_login {
            let v: serde_json::Value = http
                .post(format!("{sim}/_sim/login"))
                .json(&json!({"appid": appid}))
                .send()
                .await
                .expect("sim")
                .json()
                .await
                .expect("json");
            codes.push(v["code"].as_str().expect("code").to_owned());
        }
        let codes = Arc::new(codes);
        let h = http.clone();
        let url = format!("{server}/v1/login");
        let a = appid.clone();
        results[2].1.push(
            drive(concurrency, n_login, move |i| {
                let (h, url, body) = (
                    h.clone(),
                    url.clone(),
                    json!({"appid": a, "code": codes[i]}),
                );
                async move {
                    h.post(url)
                        .json(&body)
                        .send()
                        .await
                        .is_ok_and(|r| r.status() == 200)
                }
            })
            .await,
        );
        eprintln!("round {} of {rounds} done", round + 1);
    }

    let base_rps = median(results[0].1.iter().map(|o| o.rps).collect());
    let base_p99 = median(
        results[0]
            .1
            .iter()
            .map(|o| o.p99.as_secs_f64() * 1000.0)
            .collect(),
    );
    println!("concurrency {concurrency}, {rounds} interleaved rounds; medians across rounds\n");
    println!("| endpoint | requests/s | p50 ms | p99 ms | rps vs /healthz | p99 vs /healthz |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, outs) in &results {
        let rps = median(outs.iter().map(|o| o.rps).collect());
        let p50 = median(outs.iter().map(|o| o.p50.as_secs_f64() * 1000.0).collect());
        let p99 = median(outs.iter().map(|o| o.p99.as_secs_f64() * 1000.0).collect());
        println!(
            "| `{name}` | {rps:.0} | {p50:.2} | {p99:.2} | {:.2}× | {:.2}× |",
            rps / base_rps,
            p99 / base_p99
        );
    }
}
