//! Shared helpers of the CLI's process tests: `weapp serve` and `weapp token` as child
//! processes.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `weapp serve` process and the address it listens on.
pub struct Server {
    pub child: Child,
    pub url: String,
}

/// Starts `weapp serve --config <config>` (warnings only on stderr) and waits for its address.
pub fn serve(config: &std::path::Path) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_weapp"))
        .args(["serve", "--config"])
        .arg(config)
        .env("WEAPP_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run weapp serve");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        let line = lines
            .next()
            .expect("weapp serve printed its address")
            .unwrap();
        if let Some(rest) = line.strip_prefix("weapp-server listening on ") {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Server { child, url }
}

/// Polls `f` every 100 ms until it is true; returns how long it took (panics after `limit`).
pub async fn until(limit: Duration, what: &str, mut f: impl AsyncFnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if f().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Pulls the plug mid-stream: once `landed()` (the answers counted so far) reaches `at_least`,
/// `child` is killed with SIGKILL and reaped.
pub async fn kill_once(child: &mut Child, at_least: usize, landed: impl Fn() -> usize) {
    while landed() < at_least {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.kill().expect("SIGKILL");
    let _ = child.wait();
}

/// `weapp token` for `appid` (classic tokens) sharing `store` under `prefix`, with `extra`
/// arguments; stdout and stderr piped.
pub fn token_process(
    sim_url: &str,
    appid: &str,
    secret: &str,
    store: &str,
    prefix: &str,
    extra: &[&str],
) -> Child {
    Command::new(env!("CARGO_BIN_EXE_weapp"))
        .args(["token", "--appid", appid, "--api-base", sim_url])
        .args(["--mode", "classic", "--store", store])
        .args(["--redis-prefix", prefix])
        .args(extra)
        .env("WEAPP_SECRET", secret)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run weapp")
}

/// Waits for every `weapp token` child; the tokens they printed (each must have succeeded).
pub async fn printed_tokens(children: Vec<Child>) -> Vec<String> {
    let outputs: Vec<std::process::Output> = tokio::task::spawn_blocking(move || {
        children
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .collect()
    })
    .await
    .unwrap();
    outputs
        .iter()
        .map(|o| {
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            String::from_utf8_lossy(&o.stdout).trim().to_owned()
        })
        .collect()
}
