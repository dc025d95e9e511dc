//! Payments under load (`scripts/bench-pay` runs it): weapp-server processes (release build)
//! against a WeChat Pay simulator living in this process, behind two small relays of ours:
//!
//! - an API proxy in front of the simulator's `/v3` (the merchants' `api_base`), counting the
//!   query fallback's `GET /v3/pay/transactions/out-trade-no/…`;
//! - a notification relay (the merchants' `notify_url`) that either captures what the
//!   simulator sends (to replay it at full speed: ingestion measured apart from the
//!   simulator's own pace) or forwards it to the fleet, losing a share on purpose.
//!
//! Modes:
//! - `pay_bench single WEAPP_BIN DATABASE_URL N C`: one server; N orders created by C workers
//!   (server CPU per order, from `/proc/<pid>/stat`; latency), paid on the simulator, their N
//!   notifications captured and replayed by C workers (notifications per second, server CPU per
//!   notification ingested — stored before the 204, applied, its event written), events == N.
//! - `pay_bench fleet WEAPP_BIN DATABASE_URL REDIS_URL N LOSS_PERCENT QUERY_AFTER_SECS`: three
//!   servers on one database and Redis; N orders spread over them, each paid as soon as it is
//!   placed; the relay loses
//!   LOSS_PERCENT % of the notifications (answering the simulator 204, as a lost packet after
//!   the fact would look); prints how long until every order is paid and has its event, how
//!   many queries the fallback made, and events == orders.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

const APPID: &str = "wxpaybench0000001";
const CLIENT_KEY: &str = "wck_paybench0123456789abcdef0123456789";

fn die(msg: impl std::fmt::Display) -> ! {
    eprintln!("pay_bench: {msg}");
    std::process::exit(1)
}

/// utime + stime of `pid`, in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// A notification as the simulator sent it.
#[derive(Clone)]
struct Captured {
    headers: Vec<(String, String)>,
    body: Bytes,
}

/// What the relay does with a notification.
struct Relay {
    /// Capturing (single mode) or forwarding (fleet mode).
    capture: AtomicBool,
    captured: Mutex<Vec<Captured>>,
    /// Where forwarded notifications go (round robin) and the share lost, in %.
    targets: Mutex<Vec<String>>,
    loss_percent: AtomicU64,
    next: AtomicUsize,
    lost: AtomicU64,
    forwarded: AtomicU64,
    http: reqwest::Client,
}

async fn relay_handler(
    State(r): State<Arc<Relay>>,
    Path(mchid): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let kept: Vec<(String, String)> = headers
        .iter()
        .filter(|(k, _)| k.as_str().starts_with("wechatpay-") || k.as_str() == "content-type")
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                v.to_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    if r.capture.load(Ordering::SeqCst) {
        // The simulator sends a notification again when an answer is slow (a loaded machine):
        // each is kept once (the same body), so N notifications are N orders.
        let mut captured = r.captured.lock().unwrap();
        if !captured.iter().rev().any(|c| c.body == body) {
            captured.push(Captured {
                headers: kept,
                body,
            });
        }
        return StatusCode::NO_CONTENT.into_response();
    }
    if rand::random::<u64>() % 100 < r.loss_percent.load(Ordering::SeqCst) {
        r.lost.fetch_add(1, Ordering::SeqCst);
        return StatusCode::NO_CONTENT.into_response();
    }
    let target = {
        let t = r.targets.lock().unwrap();
        t[r.next.fetch_add(1, Ordering::SeqCst) % t.len()].clone()
    };
    let mut req = r
        .http
        .post(format!("{target}/v1/pay/{mchid}/notify"))
        .body(body);
    for (k, v) in &kept {
        req = req.header(k.as_str(), v.as_str());
    }
    r.forwarded.fetch_add(1, Ordering::SeqCst);
    match req.send().await {
        Ok(a) => StatusCode::from_u16(a.status().as_u16())
            .unwrap_or(StatusCode::BAD_GATEWAY)
            .into_response(),
        Err(_) => StatusCode::BAD_GATEWAY.into_response(),
    }
}

/// The API proxy in front of the simulator: forwards every request as it is, counting order
/// queries.
struct Proxy {
    sim: String,
    queries: AtomicU64,
    http: reqwest::Client,
}

async fn proxy(
    State(p): State<Arc<Proxy>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path_and_query().map_or("/", |x| x.as_str());
    if method == Method::GET && path.starts_with("/v3/pay/transactions/out-trade-no/") {
        p.queries.fetch_add(1, Ordering::SeqCst);
    }
    let mut req = p.http.request(
        reqwest::Method::from_bytes(method.as_str().as_bytes()).unwrap(),
        format!("{}{path}", p.sim),
    );
    for (k, v) in &headers {
        if k != "host" && k != "content-length" {
            req = req.header(k.as_str(), v.as_bytes());
        }
    }
    let Ok(a) = req.body(body).send().await else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let status = StatusCode::from_u16(a.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut out = Response::builder().status(status);
    for (k, v) in a.headers() {
        if k != "content-length" && k != "transfer-encoding" {
            out = out.header(k.as_str(), v.as_bytes());
        }
    }
    out.body(axum::body::Body::from(a.bytes().await.unwrap_or_default()))
        .unwrap()
}

async fn serve_on_free_port(router: Router) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, router).await.unwrap() });
    url
}

/// A TOML string literal.
fn toml_str(s: &str) -> String {
    Value::String(s.to_owned()).to_string()
}

/// A weapp-server process.
struct Server {
    url: String,
    child: std::process::Child,
}

impl Server {
    fn start(
        bin: &str,
        config: &str,
        database_url: &str,
        work: &std::path::Path,
        i: usize,
    ) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let path = work.join(format!("server{i}.toml"));
        std::fs::write(&path, config).unwrap();
        let out = std::fs::File::create(work.join(format!("server{i}.out"))).unwrap();
        let mut child = std::process::Command::new(bin)
            .args(["serve", "--config"])
            .arg(&path)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--database-url", database_url])
            .env("WEAPP_LOG", "warn")
            .env("WEAPP_PAY_RATE_LIMIT_PER_MINUTE", "0")
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| die(format!("{bin}: {e}")));
        let url = format!("http://127.0.0.1:{port}");
        for _ in 0..600 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Self { url, child };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        let log = std::fs::read_to_string(work.join(format!("server{i}.out"))).unwrap_or_default();
        die(format!("server {i} did not listen:\n{log}"))
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The simulator, its merchant, and the relays.
struct World {
    sim: weapp_sim::SimHandle,
    merchant: weapp_sim::pay::IssuedMerchant,
    relay: Arc<Relay>,
    relay_url: String,
    proxy: Arc<Proxy>,
    proxy_url: String,
}

impl World {
    async fn new() -> Self {
        let sim = weapp_sim::spawn(weapp_sim::SimConfig {
            listen: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
            apps: Vec::new(),
            clock: weapp_sim::ClockMode::Real,
        })
        .await
        .unwrap();
        sim.sim()
            .add_app(Some(APPID.into()), Some("paybenchsecret".into()), true);
        let merchant = sim
            .sim()
            .add_pay_merchant(weapp_sim::pay::MerchantSpec {
                appids: Some(vec![APPID.into()]),
                ..Default::default()
            })
            .await
            .unwrap();
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .build()
            .unwrap();
        let relay = Arc::new(Relay {
            capture: AtomicBool::new(true),
            captured: Mutex::new(Vec::new()),
            targets: Mutex::new(Vec::new()),
            loss_percent: AtomicU64::new(0),
            next: AtomicUsize::new(0),
            lost: AtomicU64::new(0),
            forwarded: AtomicU64::new(0),
            http: http.clone(),
        });
        let relay_url = serve_on_free_port(
            Router::new()
                .route("/notify/{mchid}", post(relay_handler))
                .with_state(relay.clone()),
        )
        .await;
        let proxy = Arc::new(Proxy {
            sim: sim.url().to_owned(),
            queries: AtomicU64::new(0),
            http,
        });
        let proxy_url = serve_on_free_port(
            Router::new()
                .fallback(proxy_handler)
                .with_state(proxy.clone()),
        )
        .await;
        Self {
            sim,
            merchant,
            relay,
            relay_url,
            proxy,
            proxy_url,
        }
    }

    fn config(&self, data_key: &str, extra: &str) -> String {
        let m = &self.merchant;
        format!(
            r#"data_key = {dk}
webhook_allow_private = ["127.0.0.1"]
{extra}

[[apps]]
appid = "{APPID}"
secret = "paybenchsecret"
api_base = {sim}

[[clients]]
name = "bench"
key = "{CLIENT_KEY}"
apps = ["{APPID}"]
scopes = ["pay:write", "events:read"]

[[merchants]]
mchid = "{mchid}"
appids = ["{APPID}"]
serial_no = "{serial}"
private_key = {pk}
apiv3_key = {v3}
public_key_id = "{pkid}"
public_key = {pub}
api_base = {api}
notify_url = {notify}
"#,
            dk = toml_str(data_key),
            sim = toml_str(self.sim.url()),
            mchid = m.mchid,
            serial = m.merchant_serial_no,
            pk = toml_str(m.merchant_private_key.as_deref().unwrap()),
            v3 = toml_str(&m.apiv3_key),
            pkid = m.wechatpay_public_key_id.as_deref().unwrap(),
            pub = toml_str(m.wechatpay_public_key.as_deref().unwrap()),
            api = toml_str(&self.proxy_url),
            notify = toml_str(&format!("{}/notify/{}", self.relay_url, m.mchid)),
        )
    }

    /// Pays `orders` (`(out_trade_no, openid, request_payment)`) on the simulator.
    fn pay(&self, orders: &[(String, String, Value)]) {
        for (_, openid, rp) in orders {
            pay_one(self.sim.sim(), openid, rp);
        }
    }
}

/// `wx.requestPayment` with `rp` on the phone of `openid`.
fn pay_one(sim: &weapp_sim::Sim, openid: &str, rp: &Value) {
    let s = |k: &str| rp[k].as_str().map(str::to_owned);
    let msg = sim.request_payment(&weapp_sim::pay::RequestPayment {
        appid: APPID.into(),
        openid: openid.to_owned(),
        time_stamp: s("timeStamp"),
        nonce_str: s("nonceStr"),
        package: s("package"),
        sign_type: s("signType"),
        pay_sign: s("paySign"),
        action: None,
    });
    if msg != "requestPayment:ok" {
        die(format!("wx.requestPayment: {msg}"));
    }
}

async fn proxy_handler(
    state: State<Arc<Proxy>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    proxy(state, method, uri, headers, body).await
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Creates `n` orders with `c` workers, spread over `servers` round robin — each paid at once
/// on `pay_at` when given (a user paying as soon as the sheet shows): the orders and each
/// request's latency.
async fn create_orders(
    http: &reqwest::Client,
    servers: &[String],
    n: usize,
    c: usize,
    tag: &str,
    pay_at: Option<weapp_sim::Sim>,
) -> (Vec<(String, String, Value)>, Vec<Duration>) {
    let next = Arc::new(AtomicUsize::new(0));
    let out = Arc::new(Mutex::new((Vec::new(), Vec::new())));
    let mut workers = Vec::new();
    for _ in 0..c {
        let (http, servers, next, out, tag, pay_at) = (
            http.clone(),
            servers.to_vec(),
            next.clone(),
            out.clone(),
            tag.to_owned(),
            pay_at.clone(),
        );
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= n {
                    break;
                }
                let no = format!("{tag}{i:08}");
                let openid = format!("oBench{:022}", i % 1000);
                let started = Instant::now();
                let r = http
                    .post(format!(
                        "{}/v1/apps/{APPID}/pay/orders",
                        servers[i % servers.len()]
                    ))
                    .bearer_auth(CLIENT_KEY)
                    .json(&json!({"out_trade_no": no, "description": "bench", "amount": 100 + (i % 900) as i64, "openid": openid}))
                    .send()
                    .await
                    .unwrap_or_else(|e| die(format!("order {no}: {e}")));
                let status = r.status();
                let body: Value = r.json().await.unwrap_or(Value::Null);
                if !status.is_success() {
                    die(format!("order {no}: {status} {body}"));
                }
                let took = started.elapsed();
                if let Some(sim) = &pay_at {
                    pay_one(sim, &openid, &body["request_payment"]);
                }
                let mut o = out.lock().unwrap();
                o.0.push((no, openid, body["request_payment"].clone()));
                o.1.push(took);
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    let (orders, mut lat) = std::mem::take(&mut *out.lock().unwrap());
    lat.sort();
    (orders, lat)
}

/// Events of the app of type `kind`, counted through the client API of `server`.
async fn count_events(http: &reqwest::Client, server: &str, kind: &str) -> usize {
    let (mut after, mut n) = (0u64, 0usize);
    loop {
        let r = http
            .get(format!(
                "{server}/v1/apps/{APPID}/events?after={after}&limit=500"
            ))
            .bearer_auth(CLIENT_KEY)
            .send()
            .await
            .unwrap();
        if r.status() == 429 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        if !r.status().is_success() {
            die(format!(
                "events: {} {}",
                r.status(),
                r.text().await.unwrap_or_default()
            ));
        }
        let v: Value = r.json().await.unwrap();
        let events = v["events"].as_array().cloned().unwrap_or_default();
        if events.is_empty() {
            return n;
        }
        n += events.iter().filter(|e| e["type"] == kind).count();
        after = events.last().unwrap()["id"].as_u64().unwrap();
    }
}

async fn single(args: &[String]) {
    let (bin, db) = (&args[0], &args[1]);
    let n: usize = args[2].parse().unwrap();
    let c: usize = args[3].parse().unwrap();
    let work = std::env::temp_dir().join(format!("pay-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    let w = World::new().await;
    let data_key = weapp_server::keys::seal::DataKey::generate_base64();
    // The fallback waits past the run: every payment here arrives as a notification.
    let server = Server::start(
        bin,
        &w.config(&data_key, "pay_query_after_secs = 86400"),
        db,
        &work,
        0,
    );
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .unwrap();
    let servers = vec![server.url.clone()];
    // Warm-up (connections, the merchant's first calls), not counted.
    let tag = format!("b{}", rand::random::<u32>() % 100_000);
    let (warm, _) = create_orders(&http, &servers, 50, c, &format!("{tag}w"), None).await;
    w.pay(&warm);

    let cpu0 = cpu_secs(server.pid());
    let t0 = Instant::now();
    let (orders, lat) = create_orders(&http, &servers, n, c, &tag, None).await;
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_secs(server.pid()) - cpu0;
    println!(
        "orders created: {n} with {c} workers in {wall:.2} s = {:.0}/s; p50 {:.1} ms, p99 {:.1} ms; server CPU {:.0} µs/order (prepay at the simulator, signed and verified)",
        n as f64 / wall,
        percentile(&lat, 0.5).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3,
        cpu / n as f64 * 1e6,
    );

    // Paid; the simulator's notifications captured by the relay.
    let warm_seen = warm.len();
    w.pay(&orders);
    let deadline = Instant::now() + Duration::from_secs(600);
    while w.relay.captured.lock().unwrap().len() < warm_seen + n {
        if Instant::now() > deadline {
            die("the simulator did not send every notification");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let captured: Vec<Captured> = w.relay.captured.lock().unwrap().clone();
    // The warm-up's first, then the measured ones.
    let (warmup, measured) = captured.split_at(warm_seen);
    replay(&http, &server.url, &w.merchant.mchid, warmup, c).await;
    let cpu0 = cpu_secs(server.pid());
    let t0 = Instant::now();
    let lat = replay(&http, &server.url, &w.merchant.mchid, measured, c).await;
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_secs(server.pid()) - cpu0;
    println!(
        "notifications ingested: {n} with {c} workers in {wall:.2} s = {:.0}/s; p50 {:.1} ms, p99 {:.1} ms; server CPU {:.0} µs/notification (verified, decrypted, stored before the 204, applied, event written)",
        n as f64 / wall,
        percentile(&lat, 0.5).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3,
        cpu / n as f64 * 1e6,
    );
    let events = count_events(&http, &server.url, "TRANSACTION.SUCCESS").await;
    println!(
        "events: {events} TRANSACTION.SUCCESS for {} orders paid",
        n + warm_seen
    );
    if events != n + warm_seen {
        let metrics = http
            .get(format!("{}/metrics", server.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap_or_default();
        for line in metrics.lines().filter(|l| l.contains("pay_")) {
            eprintln!("{line}");
        }
        die("events != orders");
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&work);
}

/// Sends `notes` to `server` with `c` workers; every one must be answered 204.
async fn replay(
    http: &reqwest::Client,
    server: &str,
    mchid: &str,
    notes: &[Captured],
    c: usize,
) -> Vec<Duration> {
    let notes = Arc::new(notes.to_vec());
    let next = Arc::new(AtomicUsize::new(0));
    let lat = Arc::new(Mutex::new(Vec::new()));
    let mut workers = Vec::new();
    for _ in 0..c {
        let (http, notes, next, lat) = (http.clone(), notes.clone(), next.clone(), lat.clone());
        let url = format!("{server}/v1/pay/{mchid}/notify");
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(n) = notes.get(i) else { break };
                let mut req = http.post(&url).body(n.body.clone());
                for (k, v) in &n.headers {
                    req = req.header(k.as_str(), v.as_str());
                }
                let started = Instant::now();
                let r = req
                    .send()
                    .await
                    .unwrap_or_else(|e| die(format!("notify: {e}")));
                if r.status() != 204 {
                    die(format!(
                        "notify answered {}: {}",
                        r.status(),
                        r.text().await.unwrap_or_default()
                    ));
                }
                lat.lock().unwrap().push(started.elapsed());
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    let mut lat = std::mem::take(&mut *lat.lock().unwrap());
    lat.sort();
    lat
}

async fn fleet(args: &[String]) {
    let (bin, db, redis) = (&args[0], &args[1], &args[2]);
    let n: usize = args[3].parse().unwrap();
    let loss: u64 = args[4].parse().unwrap();
    let after: u64 = args[5].parse().unwrap();
    let work = std::env::temp_dir().join(format!("pay-bench-fleet-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    let w = World::new().await;
    let data_key = weapp_server::keys::seal::DataKey::generate_base64();
    let config = w.config(
        &data_key,
        &format!(
            "pay_query_after_secs = {after}\nredis_url = {}",
            toml_str(redis)
        ),
    );
    let servers: Vec<Server> = (0..3)
        .map(|i| Server::start(bin, &config, db, &work, i))
        .collect();
    let urls: Vec<String> = servers.iter().map(|s| s.url.clone()).collect();
    w.relay.capture.store(false, Ordering::SeqCst);
    *w.relay.targets.lock().unwrap() = urls.clone();
    w.relay.loss_percent.store(loss, Ordering::SeqCst);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .unwrap();
    let tag = format!("f{}", rand::random::<u32>() % 100_000);
    let t0 = Instant::now();
    let (orders, _) = create_orders(&http, &urls, n, 24, &tag, Some(w.sim.sim().clone())).await;
    let paid_at = t0.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(1800);
    let mut events;
    loop {
        events = count_events(&http, &urls[0], "TRANSACTION.SUCCESS").await;
        if events >= n {
            break;
        }
        if Instant::now() > deadline {
            die(format!("after 30 min: {events} events of {n}"));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let done = t0.elapsed().as_secs_f64();
    // Every order paid as the service sees it (a sample of 200 through the API).
    let mut unpaid = 0;
    for (no, _, _) in orders.iter().step_by((n / 200).max(1)) {
        let v: Value = http
            .get(format!("{}/v1/apps/{APPID}/pay/orders/{no}", urls[2]))
            .bearer_auth(CLIENT_KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["state"] != "SUCCESS" {
            unpaid += 1;
        }
    }
    // Settle: no more events come (a late copy, a racing query would show here).
    tokio::time::sleep(Duration::from_secs(15)).await;
    let settled = count_events(&http, &urls[1], "TRANSACTION.SUCCESS").await;
    println!(
        "fleet of 3 on one database + Redis: {n} orders created and each paid at once, by {paid_at:.1} s; \
         notifications lost by the relay: {} of {}; every order paid and evented {:.1} s after the first order \
         ({:.1} s after the last payment; pay_query_after_secs = {after}); fallback queries at WeChat: {}; \
         events: {settled} (orders: {n}); sampled orders not SUCCESS: {unpaid}",
        w.relay.lost.load(Ordering::SeqCst),
        w.relay.lost.load(Ordering::SeqCst) + w.relay.forwarded.load(Ordering::SeqCst),
        done,
        done - paid_at,
        w.proxy.queries.load(Ordering::SeqCst),
    );
    if settled != n || unpaid != 0 {
        die("events != orders, or an order not paid");
    }
    drop(servers);
    let _ = std::fs::remove_dir_all(&work);
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("single") if args.len() == 5 => single(&args[1..]).await,
        Some("fleet") if args.len() == 7 => fleet(&args[1..]).await,
        _ => die("usage: pay_bench single WEAPP_BIN DATABASE_URL N C | pay_bench fleet WEAPP_BIN DATABASE_URL REDIS_URL N LOSS_PERCENT QUERY_AFTER_SECS"),
    }
}
