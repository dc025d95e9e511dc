//! `/metrics` after real traffic: a login through the simulator, a broker token read and an
//! upstream call the simulator fails on purpose; the histograms' series carry the right labels
//! and counts, and every name the hand-written exposition had is still there.

mod common;

use common::{sqlite_url, world, KEY};
use serde_json::json;
use weapp::TokenMode;

/// Every name `/metrics` had before it came from `prometheus-client` (issue 29): dashboards,
/// alerts and scripts read them.
const NAMES_BEFORE: &[&str] = &[
    "weapp_auth_failures_total",
    "weapp_token_invalidations_total",
    "weapp_token_probes_total",
    "weapp_webhook_backlog",
    "weapp_webhook_oldest_undelivered_seconds",
    "weapp_webhook_dead_letters",
    "weapp_http_requests_total",
    "weapp_logins_total",
    "weapp_upstream_errors_total",
    "weapp_pushes_total",
    "weapp_webhook_deliveries_total",
    "weapp_pay_notifications_total",
    "weapp_pay_reconciliations_total",
    "weapp_pay_reconciliation_discrepancies_total",
    "weapp_token_refreshes_total",
    "weapp_token_age_seconds",
    "weapp_token_expires_in_seconds",
    "weapp_login_commits_total",
    "weapp_login_writes_total",
];

/// The value of the sample line `series` (name and labels, exactly), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

async fn scrape(w: &common::World, url: &str) -> String {
    let resp = w.http.get(format!("{url}/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert_eq!(ct, "text/plain; version=0.0.4");
    resp.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histograms_count_requests_upstream_calls_commits_and_token_fetches() {
    let w = world().await;
    let server = weapp_server::spawn(w.config(&sqlite_url(), None, TokenMode::Stable))
        .await
        .unwrap();
    let url = server.url().to_owned();

    let before = scrape(&w, &url).await;
    for name in NAMES_BEFORE {
        assert!(
            before.contains(&format!("# TYPE {name} ")),
            "{name} missing:\n{before}"
        );
    }

    // A login through the simulator, a broker token read.
    w.login(&server, None).await;
    let (s, v) = w
        .call(
            "GET",
            format!("{url}/v1/apps/{}/access_token", w.appid),
            Some(KEY),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    // The next code exchange fails at "WeChat": errcode 45011, once.
    let (s, v) = w
        .call(
            "POST",
            format!("{}/_sim/faults", w.sim.url()),
            None,
            Some(json!({"path": "/sns/jscode2session", "errcode": 45011, "count": 1})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (code, _) = w.sim.sim().login(&w.appid, None, None, false).unwrap();
    let (s, v) = w.post_login(&url, &w.appid, &code).await;
    assert_ne!(s, 200, "{v}");

    let text = scrape(&w, &url).await;
    for name in NAMES_BEFORE {
        assert!(text.contains(&format!("# TYPE {name} ")), "{name}:\n{text}");
    }
    // HTTP: by route template (the appid is not in it) and status.
    for (route, status, n) in [
        ("/v1/login", 200, 1.0),
        ("/v1/apps/{appid}/access_token", 200, 1.0),
    ] {
        let labels = format!("route=\"{route}\",status=\"{status}\"");
        assert_eq!(
            sample(
                &text,
                &format!("weapp_http_request_duration_seconds_count{{{labels}}}")
            ),
            Some(n),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                &format!("weapp_http_request_duration_seconds_bucket{{le=\"+Inf\",{labels}}}")
            ),
            Some(n),
            "{text}"
        );
        assert!(
            sample(
                &text,
                &format!("weapp_http_request_duration_seconds_sum{{{labels}}}")
            )
            .is_some_and(|s| s > 0.0),
            "{text}"
        );
        // The counter it always had agrees.
        assert_eq!(
            sample(&text, &format!("weapp_http_requests_total{{{labels}}}")),
            Some(n),
            "{text}"
        );
    }
    assert!(
        !text.contains(&format!("route=\"/v1/apps/{}", w.appid)),
        "{text}"
    );
    // Upstream: the good exchange, the failed one, the token fetches (both apps are kept
    // warm: one each).
    for (path, errcode, n) in [
        ("/sns/jscode2session", 0, 1.0),
        ("/sns/jscode2session", 45011, 1.0),
        ("/cgi-bin/stable_token", 0, 2.0),
    ] {
        let labels = format!("path=\"{path}\",errcode=\"{errcode}\"");
        assert_eq!(
            sample(
                &text,
                &format!("weapp_upstream_request_duration_seconds_count{{{labels}}}")
            ),
            Some(n),
            "{labels}\n{text}"
        );
        assert!(
            sample(
                &text,
                &format!("weapp_upstream_request_duration_seconds_bucket{{le=\"10.0\",{labels}}}")
            ) == Some(n),
            "{text}"
        );
    }
    // The login writer's commit was timed; the token fetch counted with its outcome.
    assert_eq!(
        sample(
            &text,
            "weapp_db_commit_duration_seconds_count{operation=\"login_batch\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            &format!(
                "weapp_token_refresh_outcomes_total{{appid=\"{}\",outcome=\"ok\",errcode=\"0\"}}",
                w.appid
            )
        ),
        Some(1.0),
        "{text}"
    );
    for name in [
        "weapp_webhook_delivery_duration_seconds",
        "weapp_redis_errors_total",
        "weapp_redis_failovers_total",
    ] {
        assert!(text.contains(&format!("# TYPE {name} ")), "{name}:\n{text}");
    }
    // No secret in any label.
    assert!(!text.contains(&w.secret), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_histograms_the_counters_remain() {
    let w = world().await;
    let mut config = w.config(&sqlite_url(), None, TokenMode::Stable);
    config.metrics_histograms = false;
    let server = weapp_server::spawn(config).await.unwrap();
    w.login(&server, None).await;
    let text = scrape(&w, server.url()).await;
    assert_eq!(
        sample(
            &text,
            "weapp_http_requests_total{route=\"/v1/login\",status=\"200\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert!(!text.contains("_bucket{"), "{text}");
}
