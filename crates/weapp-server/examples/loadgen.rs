//! A small closed-loop load generator for weapp-server: C concurrent workers send N requests
//! to one endpoint; it prints requests/second and latency percentiles. Rounds interleave the
//! targets (`/healthz` baseline, broker token, login) so machine noise hits all of them alike.
//!
//! Every figure comes with the server's CPU time per request, read from `/proc/<pid>/stat`
//! around each run — a figure the two cores this machine shares with the load generator do not
//! skew the way they skew requests per second.
//!
//! Modes (run through the scripts, which start the servers):
//! - `loadgen SERVER_URL SIM_URL APPID CLIENT_KEY SERVER_PID[,PID…]` (`scripts/bench-server`,
//!   `scripts/bench-login`): `/healthz`, the broker token, login — of weapp-server, or of the
//!   Python peer (`scripts/peer_login.py` under gunicorn: the pids of its master and workers).
//! - `loadgen push APPID TOKEN AES_KEY (LABEL URL PID)...` (`scripts/bench-push`): signed,
//!   encrypted pushes to each server in turn — e.g. SQLite with `synchronous=FULL` vs `NORMAL`.
//! - `loadgen apps SERVER_URL CLIENT_KEY SERVER_PID APPID_PREFIX N` (`scripts/bench-apps`):
//!   `/healthz`, then the broker token of a random app among N (`<prefix><i:010>`).
//!
//! A request that fails (no answer, or not a 200) stops the run: the load generator says which
//! request failed first and why — the transport error with its causes, or the status and the
//! start of the body — and exits with status 1.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

struct Outcome {
    rps: f64,
    p50: Duration,
    p99: Duration,
    /// Server CPU (user + system) per request, µs.
    cpu_us: f64,
    /// This load generator's own CPU per request, µs (it shares the machine).
    client_us: f64,
}

/// The server's processes: one pid, or several separated by commas (a gunicorn master and its
/// workers, say); their CPU is summed.
#[derive(Clone)]
struct Pids(Vec<u32>);

impl Pids {
    fn parse(s: &str) -> Self {
        Pids(
            s.split(',')
                .map(|p| p.trim().parse().expect("pid"))
                .collect(),
        )
    }

    fn cpu_secs(&self) -> f64 {
        self.0.iter().map(|&p| cpu_secs(p)).sum()
    }
}

/// utime + stime of `pid`, in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// Prints `loadgen: {msg}` and exits with status 1: a run that cannot go on, said plainly.
fn die(msg: impl std::fmt::Display) -> ! {
    eprintln!("loadgen: {msg}");
    std::process::exit(1)
}

/// An error and its causes, `outer: inner: …` (reqwest's own message names only the URL; the
/// cause — refused, reset, closed before the response — is further down).
fn causes(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(c) = source {
        s.push_str(": ");
        s.push_str(&c.to_string());
        source = c.source();
    }
    s
}

/// Sends `req`: `Ok` for a 200 (its body unread, as it always was); else what happened.
async fn ok200(req: reqwest::RequestBuilder) -> Result<(), String> {
    match req.send().await {
        Ok(r) if r.status() == 200 => Ok(()),
        Ok(r) => {
            let (url, status) = (r.url().clone(), r.status());
            let body = r.text().await.unwrap_or_default();
            let body: String = body.trim().chars().take(300).collect();
            Err(format!("{url} answered {status}: {body:?}"))
        }
        Err(e) => Err(causes(&e)),
    }
}

async fn drive<F, Fut>(pid: impl Into<Pids>, concurrency: usize, total: usize, make: F) -> Outcome
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
    let pid: Pids = pid.into();
    let cpu_before = pid.cpu_secs();
    let own_before = cpu_secs(std::process::id());
    let make = Arc::new(make);
    let next = Arc::new(AtomicUsize::new(0));
    // The first failure (request index, cause) stops every worker; the others are counted.
    let first_failure = Arc::new(std::sync::Mutex::new(None::<(usize, String)>));
    let (stop, failed) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
    );
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (make, next) = (make.clone(), next.clone());
            let (first_failure, stop, failed) =
                (first_failure.clone(), stop.clone(), failed.clone());
            tokio::spawn(async move {
                let mut lat = Vec::new();
                while !stop.load(Relaxed) {
                    let i = next.fetch_add(1, Relaxed);
                    if i >= total {
                        break;
                    }
                    let t = Instant::now();
                    match make(i).await {
                        Ok(()) => lat.push(t.elapsed()),
                        Err(cause) => {
                            failed.fetch_add(1, Relaxed);
                            stop.store(true, Relaxed);
                            first_failure
                                .lock()
                                .expect("not poisoned")
                                .get_or_insert((i, cause));
                        }
                    }
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::with_capacity(total);
    for w in workers {
        all.extend(w.await.expect("worker"));
    }
    if let Some((i, cause)) = first_failure.lock().expect("not poisoned").take() {
        let n = failed.load(Relaxed);
        die(format_args!(
            "request {i} of {total} failed first (the run stopped there: {n} failed, {} succeeded): {cause}",
            all.len()
        ));
    }
    let elapsed = started.elapsed();
    let cpu = pid.cpu_secs() - cpu_before;
    let own = cpu_secs(std::process::id()) - own_before;
    all.sort_unstable();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    Outcome {
        rps: total as f64 / elapsed.as_secs_f64(),
        p50: pct(0.50),
        p99: pct(0.99),
        cpu_us: cpu * 1e6 / total as f64,
        client_us: own * 1e6 / total as f64,
    }
}

impl From<u32> for Pids {
    fn from(p: u32) -> Self {
        Pids(vec![p])
    }
}

impl From<&Pids> for Pids {
    fn from(p: &Pids) -> Self {
        p.clone()
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    v[v.len() / 2]
}

fn concurrency() -> usize {
    std::env::var("CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32)
}

fn table(results: &[(String, Vec<Outcome>)]) {
    let base_rps = median(results[0].1.iter().map(|o| o.rps).collect());
    let base_p99 = median(
        results[0]
            .1
            .iter()
            .map(|o| o.p99.as_secs_f64() * 1000.0)
            .collect(),
    );
    let base_cpu = median(results[0].1.iter().map(|o| o.cpu_us).collect());
    println!("| target | requests/s | p50 ms | p99 ms | server CPU µs/request | rps vs first | p99 vs first | CPU vs first | loadgen CPU µs/request |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (name, outs) in results {
        let rps = median(outs.iter().map(|o| o.rps).collect());
        let p50 = median(outs.iter().map(|o| o.p50.as_secs_f64() * 1000.0).collect());
        let p99 = median(outs.iter().map(|o| o.p99.as_secs_f64() * 1000.0).collect());
        let cpu = median(outs.iter().map(|o| o.cpu_us).collect());
        let client = median(outs.iter().map(|o| o.client_us).collect());
        println!(
            "| {name} | {rps:.0} | {p50:.2} | {p99:.2} | {cpu:.0} | {:.2}× | {:.2}× | {:.2}× | {client:.0} |",
            rps / base_rps,
            p99 / base_p99,
            cpu / base_cpu
        );
    }
}

/// Signed, encrypted (safe-mode) pushes to each server in turn.
async fn push_mode(args: &[String]) {
    let [appid, token, aes, targets @ ..] = args else {
        panic!("usage: loadgen push APPID TOKEN AES_KEY (LABEL URL PID)...");
    };
    assert!(
        !targets.is_empty() && targets.len() % 3 == 0,
        "targets come in threes"
    );
    let key = weapp::push::EncodingAesKey::new(aes).expect("AES key");
    let (rounds, n) = (3, 3_000usize);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency())
        .build()
        .expect("client");
    let mut results: Vec<(String, Vec<Outcome>)> = targets
        .chunks(3)
        .map(|t| (t[0].clone(), Vec::new()))
        .collect();
    let mut msg_id = 0i64;
    for round in 0..rounds {
        for (i, t) in targets.chunks(3).enumerate() {
            let (url, pid) = (t[1].clone(), t[2].parse::<u32>().expect("pid"));
            let ts = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_secs()
                .to_string();
            // Built before timing starts: the generator's own crypto is not measured.
            let pushes: Vec<(String, String)> = (0..n)
                .map(|_| {
                    msg_id += 1;
                    let nonce = format!("n{msg_id}");
                    let plain = json!({"ToUserName": "gh", "FromUserName": "oBench", "CreateTime": 1, "MsgType": "text", "Content": "bench", "MsgId": msg_id}).to_string();
                    let enc = key.encrypt(&plain, appid);
                    let q = format!(
                        "timestamp={ts}&nonce={nonce}&encrypt_type=aes&msg_signature={}",
                        weapp::push::signature(&[token, &ts, &nonce, &enc])
                    );
                    (q, json!({"ToUserName": "gh", "Encrypt": enc}).to_string())
                })
                .collect();
            let pushes = Arc::new(pushes);
            let h = http.clone();
            let base = format!("{url}/v1/apps/{appid}/push");
            results[i].1.push(
                drive(pid, concurrency(), n, move |j| {
                    let h = h.clone();
                    let (q, body) = pushes[j].clone();
                    let u = format!("{base}?{q}");
                    async move { ok200(h.post(u).body(body)).await }
                })
                .await,
            );
        }
        eprintln!("round {} of {rounds} done", round + 1);
    }
    println!(
        "{n} pushes per run, concurrency {}, {rounds} interleaved rounds; medians across rounds\n",
        concurrency()
    );
    table(&results);
}

/// `/healthz` against the broker token of random apps among many.
async fn apps_mode(args: &[String]) {
    let [server, key, pid, prefix, n] = <[String; 5]>::try_from(args.to_vec())
        .expect("usage: loadgen apps SERVER_URL CLIENT_KEY SERVER_PID APPID_PREFIX N");
    let pid: u32 = pid.parse().expect("pid");
    let n: usize = n.parse().expect("N");
    let (rounds, total) = (3, 20_000usize);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency())
        .build()
        .expect("client");
    let mut results: Vec<(String, Vec<Outcome>)> = vec![
        ("`GET /healthz` (baseline)".into(), vec![]),
        (
            format!("`GET /v1/apps/{{appid}}/access_token`, a random app of {n}"),
            vec![],
        ),
        (
            "`GET /v1/apps/{appid}/access_token`, always the same app".into(),
            vec![],
        ),
    ];
    // `ONLY=0|1|2`: one target alone (for a profiler).
    let only: Option<usize> = std::env::var("ONLY").ok().and_then(|v| v.parse().ok());
    let run = |i: usize| only.is_none_or(|o| o == i);
    for round in 0..rounds {
        let (h, url) = (http.clone(), format!("{server}/healthz"));
        if run(0) {
            results[0].1.push(
                drive(pid, concurrency(), total, move |_| {
                    let (h, url) = (h.clone(), url.clone());
                    async move { ok200(h.get(url)).await }
                })
                .await,
            );
        }
        // Appids drawn before timing starts.
        let urls: Arc<Vec<String>> = Arc::new(
            (0..total)
                .map(|_| {
                    let i = rand::random::<u64>() as usize % n;
                    format!("{server}/v1/apps/{prefix}{i:010}/access_token")
                })
                .collect(),
        );
        let (h, k) = (http.clone(), key.clone());
        if run(1) {
            results[1].1.push(
                drive(pid, concurrency(), total, move |i| {
                    let (h, url, k) = (h.clone(), urls[i].clone(), k.clone());
                    async move { ok200(h.get(url).bearer_auth(k)).await }
                })
                .await,
            );
        }
        let (h, k) = (http.clone(), key.clone());
        let one = format!("{server}/v1/apps/{prefix}{:010}/access_token", 0);
        if run(2) {
            results[2].1.push(
                drive(pid, concurrency(), total, move |_| {
                    let (h, url, k) = (h.clone(), one.clone(), k.clone());
                    async move { ok200(h.get(url).bearer_auth(k)).await }
                })
                .await,
            );
        }
        eprintln!("round {} of {rounds} done", round + 1);
    }
    if only.is_some() {
        for (name, outs) in results.iter().filter(|(_, o)| !o.is_empty()) {
            for o in outs {
                println!(
                    "{name}: {:.0} requests/s, {:.0} µs of server CPU per request",
                    o.rps, o.cpu_us
                );
            }
        }
        return;
    }
    println!(
        "{total} requests per run, concurrency {}, {rounds} interleaved rounds; medians across rounds\n",
        concurrency()
    );
    table(&results);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("push") {
        return push_mode(&args[1..]).await;
    }
    if args.first().map(String::as_str) == Some("apps") {
        return apps_mode(&args[1..]).await;
    }
    let [server, sim, appid, key, pid] = <[String; 5]>::try_from(args)
        .expect("usage: loadgen SERVER_URL SIM_URL APPID CLIENT_KEY SERVER_PID[,PID...]");
    let pid = Pids::parse(&pid);
    let concurrency = concurrency();
    let rounds = 3;
    let n_login: usize = std::env::var("LOGINS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_000);
    // LOGIN_ONLY=1: logins alone (for a profiler attached to the server).
    let login_only = std::env::var("LOGIN_ONLY").is_ok_and(|v| v == "1");
    let n_fast = if login_only { 1 } else { 20_000usize };
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .expect("client");

    let mut results: Vec<(String, Vec<Outcome>)> = vec![
        ("`GET /healthz` (baseline)".into(), vec![]),
        ("`GET /v1/apps/{appid}/access_token`".into(), vec![]),
        ("`POST /v1/login`".into(), vec![]),
    ];
    for round in 0..rounds {
        let h = http.clone();
        let url = format!("{server}/healthz");
        results[0].1.push(
            drive(&pid, concurrency, n_fast, move |_| {
                let (h, url) = (h.clone(), url.clone());
                async move { ok200(h.get(url)).await }
            })
            .await,
        );

        let h = http.clone();
        let url = format!("{server}/v1/apps/{appid}/access_token");
        let k = key.clone();
        results[1].1.push(
            drive(&pid, concurrency, n_fast, move |_| {
                let (h, url, k) = (h.clone(), url.clone(), k.clone());
                async move { ok200(h.get(url).bearer_auth(k)).await }
            })
            .await,
        );

        // One fresh wx.login code per request, minted before timing starts.
        let mut codes = Vec::with_capacity(n_login);
        let mint = format!("{sim}/_sim/login");
        for _ in 0..n_login {
            let v: serde_json::Value =
                match http.post(&mint).json(&json!({"appid": appid})).send().await {
                    Ok(r) if r.status() == 200 => r.json().await.unwrap_or_else(|e| {
                        die(format_args!(
                            "minting a wx.login code at {mint}: {}",
                            causes(&e)
                        ))
                    }),
                    Ok(r) => die(format_args!(
                        "minting a wx.login code: {mint} answered {}",
                        r.status()
                    )),
                    Err(e) => die(format_args!(
                        "minting a wx.login code at {mint}: {}",
                        causes(&e)
                    )),
                };
            let code = v["code"].as_str().unwrap_or_else(|| {
                die(format_args!(
                    "minting a wx.login code: no code in {mint}'s answer {v}"
                ))
            });
            codes.push(code.to_owned());
        }
        let codes = Arc::new(codes);
        let h = http.clone();
        let url = format!("{server}/v1/login");
        let a = appid.clone();
        results[2].1.push(
            drive(&pid, concurrency, n_login, move |i| {
                let (h, url, body) = (
                    h.clone(),
                    url.clone(),
                    json!({"appid": a, "code": codes[i]}),
                );
                async move { ok200(h.post(url).json(&body)).await }
            })
            .await,
        );
        eprintln!("round {} of {rounds} done", round + 1);
    }

    println!("concurrency {concurrency}, {rounds} interleaved rounds; medians across rounds\n");
    table(&results);
}
