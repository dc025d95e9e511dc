//! Prometheus metrics, kept as plain counters and rendered in the text exposition format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// Counters shared by all handlers.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Counters<u16>,
    logins: Counters<&'static str>,
    upstream_errors: Counters<i64>,
    pushes: Counters<&'static str>,
    webhooks: Counters<&'static str>,
    auth_failures: Mutex<BTreeMap<&'static str, u64>>,
    invalidations: Counters<&'static str>,
    token_probes: Counters<&'static str>,
    pay_notifications: Counters<&'static str>,
    pay_reconciliations: Counters<&'static str>,
    pay_discrepancies: Mutex<BTreeMap<String, u64>>,
}

/// Counters keyed by a name (a route, an appid) and a second label. Counting an existing pair
/// allocates nothing (every request and every login counts one).
#[derive(Debug)]
struct Counters<K>(Mutex<BTreeMap<String, BTreeMap<K, u64>>>);

impl<K> Default for Counters<K> {
    fn default() -> Self {
        Self(Mutex::default())
    }
}

impl<K: Ord + Copy> Counters<K> {
    fn bump(&self, name: &str, label: K) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let counts = match map.get_mut(name) {
            Some(counts) => counts,
            None => map.entry(name.to_owned()).or_default(),
        };
        *counts.entry(label).or_default() += 1;
    }

    /// ((name, label), count), in order.
    fn entries(&self) -> Vec<((String, K), u64)> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.iter()
            .flat_map(|(name, counts)| counts.iter().map(|(&l, &n)| ((name.clone(), l), n)))
            .collect()
    }
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
        self.requests.bump(route, status);
    }

    /// Counts a login attempt: `ok`, `invalid_code`, `upstream_error`, `rate_limited`.
    pub fn login(&self, appid: &str, outcome: &'static str) {
        self.logins.bump(appid, outcome);
    }

    /// Counts a WeChat errcode seen for an app (-2 for transport failures).
    pub fn upstream_error(&self, appid: &str, errcode: i64) {
        self.upstream_errors.bump(appid, errcode);
    }

    /// Counts a push: `accepted`, `duplicate`, `refused`.
    pub fn push(&self, appid: &str, outcome: &'static str) {
        self.pushes.bump(appid, outcome);
    }

    /// Counts a failed authentication by surface (`session`, `client_key`, `mirror`, `admin`).
    pub fn auth_failure(&self, surface: &'static str) {
        bump(&self.auth_failures, surface);
    }

    /// Counts an upstream check of the broker's token (a mirror refetch, a throttled report):
    /// `alive`, `dead` or `unknown`.
    pub fn token_probe(&self, appid: &str, verdict: &'static str) {
        self.token_probes.bump(appid, verdict);
    }

    /// Counts a broker report of a failing token: `refreshed`, `throttled`, or `proven_dead`
    /// (throttled, but the token was proven dead upstream and replaced — also counted for a
    /// mirror refetch that replaced it).
    pub fn invalidation(&self, appid: &str, outcome: &'static str) {
        self.invalidations.bump(appid, outcome);
    }

    /// Counts a WeChat Pay notification by merchant and outcome: `applied`, `duplicate`,
    /// `no_change`, `mismatch`, `unknown_order`, `deferred`, `ignored`, `refused`, `malformed`,
    /// `store_failed`, `unknown_merchant`.
    pub fn pay_notification(&self, mchid: &str, outcome: &'static str) {
        self.pay_notifications.bump(mchid, outcome);
    }

    /// This instance's WeChat Pay notification counts since it started: (mchid, outcome,
    /// count), by merchant then outcome (what [`Metrics::pay_notification`] counted; the
    /// refused ones are stored nowhere else).
    pub fn pay_notification_counts(&self) -> Vec<(String, &'static str, u64)> {
        self.pay_notifications
            .entries()
            .into_iter()
            .map(|((mchid, outcome), n)| (mchid, outcome, n))
            .collect()
    }

    /// Counts a reconciliation run by merchant and outcome (`clean`, `discrepancies`,
    /// `failed`) and adds its discrepancies to the merchant's total.
    pub fn pay_reconciliation(&self, mchid: &str, outcome: &'static str, discrepancies: u64) {
        self.pay_reconciliations.bump(mchid, outcome);
        *self
            .pay_discrepancies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(mchid.to_owned())
            .or_default() += discrepancies;
    }

    /// Counts a webhook attempt: `ok`, `failed` or `dead` (attempts exhausted).
    pub fn webhook(&self, appid: &str, outcome: &'static str) {
        self.webhooks.bump(appid, outcome);
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
        for ((appid, outcome), n) in self.invalidations.entries() {
            let _ = writeln!(
                out,
                "weapp_token_invalidations_total{{appid=\"{}\",outcome=\"{outcome}\"}} {n}",
                escape(&appid)
            );
        }
        let _ = writeln!(out, "# HELP weapp_token_probes_total Upstream checks of the broker's token (mirror refetches, throttled reports) by verdict.\n# TYPE weapp_token_probes_total counter");
        for ((appid, verdict), n) in self.token_probes.entries() {
            let _ = writeln!(
                out,
                "weapp_token_probes_total{{appid=\"{}\",verdict=\"{verdict}\"}} {n}",
                escape(&appid)
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
        for ((route, status), n) in self.requests.entries() {
            let _ = writeln!(
                out,
                "weapp_http_requests_total{{route=\"{}\",status=\"{status}\"}} {n}",
                escape(&route)
            );
        }
        let _ = writeln!(out, "# HELP weapp_logins_total Login attempts by app and outcome.\n# TYPE weapp_logins_total counter");
        for ((appid, outcome), n) in self.logins.entries() {
            let _ = writeln!(
                out,
                "weapp_logins_total{{appid=\"{}\",outcome=\"{outcome}\"}} {n}",
                escape(&appid)
            );
        }
        let _ = writeln!(out, "# HELP weapp_upstream_errors_total WeChat errcodes by app (-2: transport).\n# TYPE weapp_upstream_errors_total counter");
        for ((appid, code), n) in self.upstream_errors.entries() {
            let _ = writeln!(
                out,
                "weapp_upstream_errors_total{{appid=\"{}\",errcode=\"{code}\"}} {n}",
                escape(&appid)
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
            for ((appid, outcome), n) in map.entries() {
                let _ = writeln!(
                    out,
                    "{name}{{appid=\"{}\",outcome=\"{outcome}\"}} {n}",
                    escape(&appid)
                );
            }
        }
        let _ = writeln!(out, "# HELP weapp_pay_notifications_total WeChat Pay notifications by merchant and outcome (mismatch: not marked paid).\n# TYPE weapp_pay_notifications_total counter");
        for ((mchid, outcome), n) in self.pay_notifications.entries() {
            let _ = writeln!(
                out,
                "weapp_pay_notifications_total{{mchid=\"{}\",outcome=\"{outcome}\"}} {n}",
                escape(&mchid)
            );
        }
        let _ = writeln!(out, "# HELP weapp_pay_reconciliations_total Daily reconciliations run by this instance, by merchant and outcome.\n# TYPE weapp_pay_reconciliations_total counter");
        for ((mchid, outcome), n) in self.pay_reconciliations.entries() {
            let _ = writeln!(
                out,
                "weapp_pay_reconciliations_total{{mchid=\"{}\",outcome=\"{outcome}\"}} {n}",
                escape(&mchid)
            );
        }
        let _ = writeln!(out, "# HELP weapp_pay_reconciliation_discrepancies_total Discrepancies found by this instance's reconciliations, by merchant.\n# TYPE weapp_pay_reconciliation_discrepancies_total counter");
        for (mchid, n) in self
            .pay_discrepancies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "weapp_pay_reconciliation_discrepancies_total{{mchid=\"{}\"}} {n}",
                escape(mchid)
            );
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
