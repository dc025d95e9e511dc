//! Three token managers sharing Redis for 24 hours of virtual time with faults along the way
//! (the driver is the `day_in_the_life` example's): no caller ever sees an error, and the
//! upstream fetches stay at the physical minimum plus what the faults make unavoidable.

#[path = "../examples/day_in_the_life/day.rs"]
mod day;

use weapp::TokenMode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_with_classic_tokens_and_faults() {
    let r = day::run(day::DayConfig {
        step_secs: 120,
        calls_per_step: 1,
        ..day::DayConfig::default()
    })
    .await;
    assert_eq!(r.caller_errors, 0, "{:?}", r.error_samples);
    // 24 h of 2-hour tokens refreshed 5 minutes early: 13 fetches. The foreign fetch forces one
    // refresh early, which the margin absorbs.
    assert!(r.fetches <= 13, "{r:?}");
    // Each token call that timed out after WeChat had issued a token wastes one: the two
    // latency spikes hold up two token calls each.
    assert!(r.issued <= r.fetches + 4, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_with_stable_tokens_and_faults() {
    let r = day::run(day::DayConfig {
        mode: TokenMode::Stable,
        step_secs: 120,
        calls_per_step: 1,
        ..day::DayConfig::default()
    })
    .await;
    assert_eq!(r.caller_errors, 0, "{:?}", r.error_samples);
    assert!(r.fetches <= 13, "{r:?}");
    assert!(r.issued <= 13, "{r:?}");
}
