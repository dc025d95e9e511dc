//! A day in the life of three token managers sharing Redis, against weapp-sim: 24 hours of
//! virtual time, a steady stream of API calls, and faults (10 % `-1` on the token endpoint,
//! latency spikes past the timeout, a Redis restart, a foreign `/cgi-bin/token` fetch, a
//! FLUSHALL). Prints what it cost: the figures in BENCHMARKS.md.
//!
//! ```sh
//! cargo run --release -p weapp --features redis --example day_in_the_life
//! ```
//! Needs `redis-server` on `$PATH` (a private one is started on a free port). `DAY_MODE=classic`
//! or `stable` runs one mode; `DAY_FAULTS=0` runs the same day without faults (the baseline).

mod day;

use weapp::TokenMode;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if let Ok(filter) = std::env::var("WEAPP_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    let modes = match std::env::var("DAY_MODE").as_deref() {
        Ok("classic") => vec![TokenMode::Classic],
        Ok("stable") => vec![TokenMode::Stable],
        _ => vec![TokenMode::Classic, TokenMode::Stable],
    };
    for mode in modes {
        let faults = std::env::var("DAY_FAULTS").as_deref() != Ok("0");
        let report = day::run(day::DayConfig {
            mode,
            faults,
            ..day::DayConfig::default()
        })
        .await;
        println!(
            "== {} tokens, 3 managers, 24 h, {} ==",
            mode.as_str(),
            if faults { "with faults" } else { "no faults" }
        );
        for e in &report.events {
            println!("  {e}");
        }
        println!("  API calls by callers          {}", report.calls);
        println!("  errors seen by callers        {}", report.caller_errors);
        println!("  of which token rejections     {}", report.token_errors);
        println!(
            "  upstream token fetches        {} (successful, all managers)",
            report.fetches
        );
        println!("  tokens issued to us           {}", report.issued);
        println!("  token endpoint calls          {}", report.token_calls);
        println!(
            "  longest wait for a token      {} ms",
            report.longest_token_wait.as_millis()
        );
        println!(
            "  longest wait for an API call  {} ms (its own latency spike and retries)",
            report.longest_wait.as_millis()
        );
        println!(
            "  real time                     {:.1} s",
            report.elapsed.as_secs_f64()
        );
        for e in &report.error_samples {
            println!("  error: {e}");
        }
    }
}
