//! weapp on production Redis topologies started here on loopback — a Cluster of three
//! primaries with a replica each, and a primary with its replica behind three sentinels:
//! six `weapp token` processes agree on one token issued once; three `weapp serve` instances
//! share the fleet's shards; the primary holding the app's keys is killed with SIGKILL; the
//! fleet keeps serving from its copies through the failover, refreshes nothing twice, settles
//! again with one refresher per app, and the next refresh — three instances told at once that
//! the token is dead — happens once.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{printed_tokens, serve, token_process, until, Server};
use serde_json::Value;
use weapp_sim::TokenKind;
use weapp_test_support::{unique_prefix, PgDatabase, RedisCluster, RedisSentinels};

const ADMIN: &str = "admin-key-0123456789abcdefghijkl";
const CLIENT: &str = "topology-client-key-0123456789";
const APPS: usize = 12;
const LEASE_MS: u64 = 2_000;

enum Deployment {
    Cluster(RedisCluster),
    Sentinel(RedisSentinels),
}

impl Deployment {
    fn url(&self) -> String {
        match self {
            Deployment::Cluster(c) => c.url(),
            Deployment::Sentinel(s) => s.url(),
        }
    }

    /// Kills (SIGKILL) the primary holding `key`, once its replica has every write; its port.
    fn kill_primary_of(&mut self, key: &str) -> u16 {
        match self {
            Deployment::Cluster(c) => {
                let p = c.primary_for(key);
                c.kill_after_replication(p);
                p
            }
            Deployment::Sentinel(s) => s.kill_primary_after_replication(),
        }
    }

    fn wait_failover(&self, dead: u16) -> Duration {
        match self {
            Deployment::Cluster(c) => c.wait_failover(dead),
            Deployment::Sentinel(s) => s.wait_failover(dead),
        }
    }
}

/// Six `weapp token` processes started at once; the tokens they printed.
async fn six_processes(
    sim_url: &str,
    appid: &str,
    secret: &str,
    store: &str,
    prefix: &str,
) -> Vec<String> {
    let children = (0..6)
        .map(|_| token_process(sim_url, appid, secret, store, prefix, &[]))
        .collect();
    printed_tokens(children).await
}

async fn fleet(http: &reqwest::Client, url: &str) -> Option<Value> {
    let r = http
        .get(format!("{url}/v1/admin/fleet"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .ok()?;
    r.json().await.ok()
}

/// Whether the three instances share the 64 shards and run one refresher per app.
async fn settled(http: &reqwest::Client, urls: &[String]) -> bool {
    let mut held = 0;
    let mut refreshers = 0;
    for u in urls {
        match fleet(http, u).await {
            Some(f) if f["instances"] == 3 => {
                held += f["shards_held"].as_u64().unwrap_or(0);
                refreshers += f["refreshers"].as_u64().unwrap_or(0);
            }
            _ => return false,
        }
    }
    held == 64 && refreshers == APPS as u64
}

async fn broker_token(http: &reqwest::Client, url: &str, appid: &str) -> Result<String, String> {
    let r = http
        .get(format!("{url}/v1/apps/{appid}/access_token"))
        .bearer_auth(CLIENT)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status();
    let body: Value = r.json().await.map_err(|e| e.to_string())?;
    match body["access_token"].as_str() {
        Some(t) if status == 200 => Ok(t.to_owned()),
        _ => Err(format!("{status}: {body}")),
    }
}

async fn exercise(mut deployment: Deployment, name: &str) {
    let sim = weapp_sim::spawn(weapp_sim::SimConfig::default())
        .await
        .unwrap();
    let store = deployment.url();
    let prefix = unique_prefix(name);
    let mut apps = Vec::new();
    for i in 0..APPS {
        apps.push(
            sim.sim()
                .add_app(Some(format!("wxtopo{i:010}")), None, false),
        );
    }
    let (appid, secret) = apps[0].clone();

    // Six processes, one token, one issue.
    let tokens = six_processes(sim.url(), &appid, &secret, &store, &prefix).await;
    assert!(
        tokens.windows(2).all(|p| p[0] == p[1]),
        "{name}: every process printed the same token: {tokens:?}"
    );
    assert_eq!(
        sim.sim().tokens_issued(&appid, TokenKind::Classic),
        1,
        "{name}"
    );
    let token = tokens[0].clone();

    // Three instances of the service on the same deployment and prefix.
    let db = PgDatabase::create().await;
    let dir = std::env::temp_dir().join(unique_prefix(name).replace(':', "-"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut toml = format!(
        "listen = \"127.0.0.1:0\"\ndatabase_url = \"{}\"\nredis_url = \"{store}\"\nredis_prefix = \"{prefix}\"\n\
         data_key = \"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\"\n\
         fleet_lease_ms = {LEASE_MS}\nwarmup_spread_secs = 1\nauth_failure_limit_per_minute = 0\n\
         admin_rate_limit_per_minute = 0\nwebhook_allow_private = [\"127.0.0.0/8\"]\n\n\
         [[admins]]\nname = \"ops\"\nkey = \"{ADMIN}\"\n\n\
         [[clients]]\nname = \"all\"\nkey = \"{CLIENT}\"\napps = [\"*\"]\n\n",
        db.url(),
    );
    for (a, s) in &apps {
        toml.push_str(&format!(
            "[[apps]]\nappid = \"{a}\"\nsecret = \"{s}\"\napi_base = \"{}\"\ntoken_mode = \"classic\"\n\n",
            sim.url()
        ));
    }
    let path = dir.join("weapp.toml");
    std::fs::write(&path, toml).unwrap();
    let servers: Vec<Server> = (0..3).map(|_| serve(&path)).collect();
    let urls: Vec<String> = servers.iter().map(|s| s.url.clone()).collect();
    let http = reqwest::Client::new();
    until(
        Duration::from_secs(30),
        "three instances sharing 64 shards, one refresher per app",
        async || settled(&http, &urls).await,
    )
    .await;
    until(
        Duration::from_secs(30),
        "every app's token fetched",
        async || {
            apps.iter()
                .all(|(a, _)| sim.sim().tokens_issued(a, TokenKind::Classic) >= 1)
        },
    )
    .await;
    for u in &urls {
        assert_eq!(
            broker_token(&http, u, &appid).await.unwrap(),
            token,
            "{name}: the service serves the processes' token"
        );
    }
    // Written to Redis a moment after WeChat answered.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // SIGKILL the primary holding the app's keys, reading tokens from every instance all along.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let slowest = Arc::new(Mutex::new(Duration::ZERO));
    let reads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let reader = {
        let (stop, failures, slowest, reads) = (
            stop.clone(),
            failures.clone(),
            slowest.clone(),
            reads.clone(),
        );
        let (http, urls, appids) = (
            http.clone(),
            urls.clone(),
            apps.iter().map(|(a, _)| a.clone()).collect::<Vec<_>>(),
        );
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let (u, a) = (&urls[i % urls.len()], &appids[i % appids.len()]);
                let started = Instant::now();
                let got = broker_token(&http, u, a).await;
                let took = started.elapsed();
                reads.fetch_add(1, Ordering::Relaxed);
                {
                    let mut s = slowest.lock().unwrap();
                    *s = (*s).max(took);
                }
                if let Err(e) = got {
                    failures.lock().unwrap().push(format!("{a} at {u}: {e}"));
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let key = format!("{prefix}:{{{appid}:classic}}:token");
    let dead = deployment.kill_primary_of(&key);
    let failover = tokio::task::block_in_place(|| deployment.wait_failover(dead));
    // The instances find the new primary and settle with one refresher per app again.
    let settle = until(
        Duration::from_secs(30),
        "the fleet settles after the failover",
        async || settled(&http, &urls).await,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    reader.await.unwrap();
    let failed = failures.lock().unwrap().clone();
    println!(
        "{name}: failover took {failover:?}, the fleet settled {settle:?} later; {} reads during it, slowest {:?}",
        reads.load(Ordering::Relaxed),
        *slowest.lock().unwrap()
    );
    assert!(
        failed.is_empty(),
        "{name}: reads failed during the failover: {failed:?}"
    );
    for (a, _) in &apps {
        assert_eq!(
            sim.sim().tokens_issued(a, TokenKind::Classic),
            1,
            "{name}: {a} refreshed again across the failover"
        );
    }

    // The next refresh happens once: all three instances told at the same moment.
    let reports: Vec<_> = urls
        .iter()
        .map(|u| {
            let http = http.clone();
            let u = u.clone();
            let (appid, token) = (appid.clone(), token.clone());
            tokio::spawn(async move {
                http.post(format!("{u}/v1/apps/{appid}/access_token/invalidate"))
                    .bearer_auth(CLIENT)
                    .json(&serde_json::json!({ "access_token": token }))
                    .send()
                    .await
                    .unwrap()
                    .status()
            })
        })
        .collect();
    for report in reports {
        assert_eq!(report.await.unwrap(), 200, "{name}");
    }
    assert_eq!(
        sim.sim().tokens_issued(&appid, TokenKind::Classic),
        2,
        "{name}: the report refreshed once"
    );
    let mut served = Vec::new();
    for u in &urls {
        served.push(broker_token(&http, u, &appid).await.unwrap());
    }
    assert!(
        served.iter().all(|t| *t != token && *t == served[0]),
        "{name}: {served:?}"
    );
    let again = six_processes(sim.url(), &appid, &secret, &store, &prefix).await;
    assert!(
        again.iter().all(|t| *t == served[0]),
        "{name}: processes read the new token from the new primary: {again:?}"
    );
    assert_eq!(
        sim.sim().tokens_issued(&appid, TokenKind::Classic),
        2,
        "{name}"
    );

    for mut s in servers {
        let _ = s.child.kill();
        let _ = s.child.wait();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_of_three_primaries_fails_over_under_the_fleet() {
    let cluster = tokio::task::spawn_blocking(RedisCluster::start)
        .await
        .unwrap();
    exercise(Deployment::Cluster(cluster), "cluster").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_managed_primary_fails_over_under_the_fleet() {
    let sentinels = tokio::task::spawn_blocking(RedisSentinels::start)
        .await
        .unwrap();
    exercise(Deployment::Sentinel(sentinels), "sentinel").await;
}

/// `rediss://`: a Redis that speaks TLS only, its certificate from a private CA. Processes that
/// trust the CA (`SSL_CERT_FILE`) share one token issued once; one that does not is refused
/// before it asks WeChat anything — the certificate is verified, not just encrypted to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_redis_is_verified_and_shared() {
    let dir = std::env::temp_dir().join(unique_prefix("redis-tls").replace(':', "-"));
    std::fs::create_dir_all(&dir).unwrap();
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("openssl must be installed (CI installs it; see .ci/run)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509", "-days", "2", "-subj", "/CN=weapp test CA"][..],
            &ec,
            &["-keyout", "ca.key", "-out", "ca.pem"],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req", "-subj", "/CN=127.0.0.1"][..],
            &ec,
            &["-keyout", "server.key", "-out", "server.csr"],
        ]
        .concat(),
    );
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.pem",
    ]);
    let path = |f: &str| dir.join(f).to_string_lossy().into_owned();
    // Killed on drop, also when an assertion fails; a port taken meanwhile by another test
    // (the server then exits) is tried again with another.
    struct Killed(Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut started = None;
    for _ in 0..5 {
        let port = weapp_test_support::free_port();
        let mut server = Killed(
            Command::new("redis-server")
                .args(["--port", "0", "--tls-port", &port.to_string()])
                .args(["--bind", "127.0.0.1"])
                .args(["--tls-cert-file", &path("server.pem")])
                .args(["--tls-key-file", &path("server.key")])
                .args([
                    "--tls-ca-cert-file",
                    &path("ca.pem"),
                    "--tls-auth-clients",
                    "no",
                ])
                .args(["--save", "", "--appendonly", "no"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server"),
        );
        let since = Instant::now();
        while since.elapsed() < Duration::from_secs(10) {
            if matches!(server.0.try_wait(), Ok(Some(_))) {
                break;
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                started = Some((server, port));
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if started.is_some() {
            break;
        }
    }
    let (_server, port) = started.expect("redis-server (TLS) started");
    let sim = weapp_sim::spawn(weapp_sim::SimConfig::default())
        .await
        .unwrap();
    let (appid, secret) = sim.sim().add_app(None, None, false);
    let store = format!("rediss://127.0.0.1:{port}/0");
    let prefix = unique_prefix("tls");
    let spawn = |trust: bool| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_weapp"));
        c.args(["token", "--appid", &appid, "--api-base", sim.url()])
            .args([
                "--mode",
                "classic",
                "--store",
                &store,
                "--redis-prefix",
                &prefix,
            ])
            .env("WEAPP_SECRET", &secret)
            .env_remove("SSL_CERT_DIR")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if trust {
            c.env("SSL_CERT_FILE", dir.join("ca.pem"));
        } else {
            c.env_remove("SSL_CERT_FILE");
        }
        c.spawn().expect("run weapp")
    };
    let children: Vec<Child> = (0..4).map(|_| spawn(true)).collect();
    let untrusting = spawn(false);
    let tokens = printed_tokens(children).await;
    let refused = tokio::task::spawn_blocking(move || untrusting.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(tokens.windows(2).all(|p| p[0] == p[1]), "{tokens:?}");
    assert_eq!(sim.sim().tokens_issued(&appid, TokenKind::Classic), 1);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success(),
        "a CA it does not trust is refused"
    );
    assert!(refused.stdout.is_empty());
    assert!(err.contains("redis connect"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert_eq!(sim.sim().tokens_issued(&appid, TokenKind::Classic), 1);
    let _ = std::fs::remove_dir_all(&dir);
}
