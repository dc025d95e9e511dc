//! Prometheus metrics, kept as plain counters and rendered in the text exposition format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// Counters shared by all handlers.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    logins: Mutex<BTreeMap<(String, &'static str), u64>>,
    upstream_errors: Mutex<BTreeMap<(String, i64), u64>>,
    pushes: Mutex<BTreeMap<(String, &'static str), u64>>,
    webhooks: Mutex<BTreeMap<(String, &'static str), u64>>,
    auth_failures: Mutex<BTreeMap<&'static str, u64>>,
    invalidations: Mutex<BTreeMap<(String, &'static str), u64>>,
}

fn bump<K: Ord>(map: &Mutex<BTreeMap<K, u64>>, key: K) {
    *map.lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(key)
        .or_default() += 1;
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Per-app token facts gathered at render time.
#[derive(Debug)]
pub struct TokenGauge {
    /// The appid.
    pub appid: String,
    /// Upstream fetches made by this instance.
    pub refreshes: u64,
    /// Seconds since this instance first saw the current token.
    pub age_secs: Option<f64>,
    /// Seconds until the current token expires.
    pub expires_in_secs: Option<f64>,
}

impl Metrics {
    /// Counts a finished request by route template (never the raw path) and status.
    pub fn request(&self, route: &str, status: u16) {
        bump(&self.requests, (route.to_owned(), status));
    }

    /// Counts a login attempt: `ok`, `invalid_code`, `upstream_error`, `rate_limited`.
    pub fn login(&self, appid: &str, outcome: &'static str) {
        bump(&self.logins, (appid.to_owned(), outcome));
    }

    /// Counts a WeChat errcode seen for an app (-2 for transport failures).
    pub fn upstream_error(&self, appid: &str, errcode: i64) {
        bump(&self.upstream_errors, (appid.to_owned(), errcode));
    }

    /// Counts a push: `accepted`, `duplicate`, `refused`.
    pub fn push(&self, appid: &str, outcome: &'static str) {
        bump(&self.pushes, (appid.to_owned(), outcome));
    }

    /// Counts a failed authentication by surface (`session`, `client_key`, `mirror`, `admin`).
    pub fn auth_failure(&self, surface: &'static str) {
        bump(&self.auth_failures, surface);
    }

    /// Counts a broker report of a failing token: `refreshed` or `throttled`.
    pub fn invalidation(&self, appid: &str, outcome: &'static str) {
        bump(&self.invalidations, (appid.to_owned(), outcome));
    }

    /// Counts a webhook attempt: `ok`, `failed` or `dead` (attempts exhausted).
    pub fn webhook(&self, appid: &str, outcome: &'static str) {
        bump(&self.webhooks, (appid.to_owned(), outcome));
    }

    /// The text exposition.
    pub fn render(
        &self,
        tokens: &[TokenGauge],
        outbox: Option<&crate::store::OutboxStats>,
        now_ms: i64,
    ) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# HELP weapp_auth_failures_total Failed authentications by surface.\n# TYPE weapp_auth_failures_total counter");
        for (surface, n) in self
            .auth_failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "weapp_auth_failures_total{{surface=\"{surface}\"}} {n}"
            );
        }
        let _ = writeln!(out, "# HELP weapp_token_invalidations_total Broker reports of failing tokens by outcome.\n# TYPE weapp_token_invalidations_total counter");
        for ((appid, outcome), n) in self
            .invalidations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "weapp_token_invalidations_total{{appid=\"{}\",outcome=\"{outcome}\"}} {n}",
                escape(appid)
            );
        }
        if let Some(o) = outbox {
            let _ = writeln!(out, "# HELP weapp_webhook_backlog Events waiting for webhook delivery.\n# TYPE weapp_webhook_backlog gauge\nweapp_webhook_backlog {}", o.backlog);
            let age = o
                .oldest_created_at
                .map_or(0.0, |t| (now_ms - t).max(0) as f64 / 1000.0);
            let _ = writeln!(out, "# HELP weapp_webhook_oldest_undelivered_seconds Age of the oldest event waiting for delivery.\n# TYPE weapp_webhook_oldest_undelivered_seconds gauge\nweapp_webhook_oldest_undelivered_seconds {age}");
            let _ = writeln!(out, "# HELP weapp_webhook_dead_letters Events whose delivery attempts are exhausted.\n# TYPE weapp_webhook_dead_letters gauge\nweapp_webhook_dead_letters {}", o.dead);
        }
        let _ = writeln!(out, "# HELP weapp_http_requests_total HTTP requests by route and status.\n# TYPE weapp_http_requests_total counter");
        for ((route, status), n) in self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "weapp_http_requests_total{{route=\"{}\",status=\"{status}\"}} {n}",
                escape(route)
            );
        }
        let _ = writeln!(out, "# HELP weapp_logins_total Login attempts by app and outcome.\n# TYPE weapp_logins_total counter");
        for ((appid, outcome), n) in self.logins.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = writeln!(
                out,
                "weapp_logins_total{{appid=\"{}\",outcome=\"{outcome}\"}} {n}",
                escape(appid)
            );
        }
        let _ = writeln!(out, "# HELP weapp_upstream_errors_total WeChat errcodes by app (-2: transport).\n# TYPE weapp_upstream_errors_total counter");
        for ((appid, code), n) in self
            .upstream_errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "weapp_upstream_errors_total{{appid=\"{}\",errcode=\"{code}\"}} {n}",
                escape(appid)
            );
        }
        for (name, help, map) in [
            (
                "weapp_pushes_total",
                "Pushes received by app and outcome.",
                &self.pushes,
            ),
            (
                "weapp_webhook_deliveries_total",
                "Webhook attempts by app and outcome.",
                &self.webhooks,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for ((appid, outcome), n) in map.lock().unwrap_or_else(|p| p.into_inner()).iter() {
                let _ = writeln!(
                    out,
                    "{name}{{appid=\"{}\",outcome=\"{outcome}\"}} {n}",
                    escape(appid)
                );
            }
        }
        let _ = writeln!(out, "# HELP weapp_token_refreshes_total Access tokens fetched from WeChat by this instance.\n# TYPE weapp_token_refreshes_total counter");
        for t in tokens {
            let _ = writeln!(
                out,
                "weapp_token_refreshes_total{{appid=\"{}\"}} {}",
                escape(&t.appid),
                t.refreshes
            );
        }
        let _ = writeln!(out, "# HELP weapp_token_age_seconds Seconds since this instance first saw the current token.\n# TYPE weapp_token_age_seconds gauge");
        for t in tokens {
            if let Some(age) = t.age_secs {
                let _ = writeln!(
                    out,
                    "weapp_token_age_seconds{{appid=\"{}\"}} {age:.3}",
                    escape(&t.appid)
                );
            }
        }
        let _ = writeln!(out, "# HELP weapp_token_expires_in_seconds Seconds until the current token expires.\n# TYPE weapp_token_expires_in_seconds gauge");
        for t in tokens {
            if let Some(e) = t.expires_in_secs {
                let _ = writeln!(
                    out,
                    "weapp_token_expires_in_seconds{{appid=\"{}\"}} {e:.3}",
                    escape(&t.appid)
                );
            }
        }
        out
    }
}
