//! Prometheus metrics: counters and latency histograms kept with `prometheus-client` (one
//! registry per server, no global state), rendered in the Prometheus text exposition format.
//!
//! Labels are bounded: route templates (never raw paths), SDK endpoint paths, errcodes, fixed
//! outcome names, and the appids and mchids of the apps and merchants served. Nothing secret.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Latency buckets in seconds, 0.5 ms to 10 s.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_family<L: Clone + std::hash::Hash + Eq>() -> Histograms<L> {
    Family::new_with_constructor(latency_histogram)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteStatus {
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AppOutcome {
    appid: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AppVerdict {
    appid: String,
    verdict: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AppErrcode {
    appid: String,
    errcode: i64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Surface {
    surface: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Mchid {
    mchid: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MchOutcome {
    mchid: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Appid {
    appid: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PathErrcode {
    path: Cow<'static, str>,
    errcode: i64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Operation {
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefreshOutcome {
    appid: String,
    outcome: &'static str,
    errcode: i64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Op {
    op: &'static str,
}

/// The metrics of one server. Families are shared handles (`Arc` inside): counting takes a
/// read lock on the family's map and an atomic increment (a histogram: a short mutex);
/// counting an existing label set allocates at most its key.
#[derive(Debug)]
pub struct Metrics {
    /// Whether the latency histograms are kept (config `metrics_histograms`, for measuring
    /// their cost); counters always are.
    histograms: bool,
    requests: Family<RouteStatus, Counter>,
    request_seconds: Histograms<RouteStatus>,
    logins: Family<AppOutcome, Counter>,
    upstream_errors: Family<AppErrcode, Counter>,
    upstream_seconds: Histograms<PathErrcode>,
    pushes: Family<AppOutcome, Counter>,
    webhooks: Family<AppOutcome, Counter>,
    webhook_seconds: Histograms<Outcome>,
    db_commit_seconds: Histograms<Operation>,
    auth_failures: Family<Surface, Counter>,
    invalidations: Family<AppOutcome, Counter>,
    token_probes: Family<AppVerdict, Counter>,
    token_refresh_outcomes: Family<RefreshOutcome, Counter>,
    redis_errors: Family<Op, Counter>,
    redis_failovers: Counter,
    /// Kept as a map as well: the admin API lists them ([`Metrics::pay_notification_counts`]).
    pay_notifications: Mutex<BTreeMap<(String, &'static str), u64>>,
    pay_reconciliations: Family<MchOutcome, Counter>,
    pay_discrepancies: Family<Mchid, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(true)
    }
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

/// What only a scrape can know: facts read from the broker, the store and the login writer
/// when `/metrics` is asked for.
#[derive(Debug, Default)]
pub struct Scrape<'a> {
    /// Each app's token.
    pub tokens: &'a [TokenGauge],
    /// The outbox, when the store could say.
    pub outbox: Option<&'a crate::store::OutboxStats>,
    /// Now, in ms since the epoch.
    pub now_ms: i64,
    /// The login writer's (commits, logins written).
    pub login_writer: (u64, u64),
}

impl Metrics {
    /// Empty metrics; latency histograms kept only when `histograms`.
    pub fn new(histograms: bool) -> Self {
        Self {
            histograms,
            requests: Family::default(),
            request_seconds: latency_family(),
            logins: Family::default(),
            upstream_errors: Family::default(),
            upstream_seconds: latency_family(),
            pushes: Family::default(),
            webhooks: Family::default(),
            webhook_seconds: latency_family(),
            db_commit_seconds: latency_family(),
            auth_failures: Family::default(),
            invalidations: Family::default(),
            token_probes: Family::default(),
            token_refresh_outcomes: Family::default(),
            redis_errors: Family::default(),
            redis_failovers: Counter::default(),
            pay_notifications: Mutex::default(),
            pay_reconciliations: Family::default(),
            pay_discrepancies: Family::default(),
        }
    }

    /// Whether latency histograms are kept: a caller times its work only then.
    pub fn histograms_enabled(&self) -> bool {
        self.histograms
    }

    /// Counts a finished request by route template (never the raw path) and status, and
    /// observes its duration when given (histograms enabled).
    pub fn request(&self, route: &str, status: u16, elapsed: Option<Duration>) {
        let labels = RouteStatus {
            route: route.to_owned(),
            status,
        };
        self.requests.get_or_create(&labels).inc();
        if let (true, Some(d)) = (self.histograms, elapsed) {
            self.request_seconds
                .get_or_create(&labels)
                .observe(d.as_secs_f64());
        }
    }

    /// Counts a login attempt: `ok`, `invalid_code`, `upstream_error`, `rate_limited`.
    pub fn login(&self, appid: &str, outcome: &'static str) {
        self.logins
            .get_or_create(&app_outcome(appid, outcome))
            .inc();
    }

    /// Counts a WeChat errcode seen for an app (-2 for transport failures).
    pub fn upstream_error(&self, appid: &str, errcode: i64) {
        self.upstream_errors
            .get_or_create(&AppErrcode {
                appid: appid.to_owned(),
                errcode,
            })
            .inc();
    }

    /// Observes one attempt of an upstream WeChat call by endpoint path (the SDK's, no query
    /// string) and errcode (0 success, -2 no usable answer).
    pub fn upstream_call(&self, path: &str, errcode: i64, elapsed: Duration) {
        if !self.histograms {
            return;
        }
        let labels = PathErrcode {
            path: Cow::Owned(path.to_owned()),
            errcode,
        };
        self.upstream_seconds
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// Counts an access-token fetch from WeChat by app, outcome (`ok`, `error`) and errcode
    /// (0 success, -2 no usable answer).
    pub fn token_refresh(&self, appid: &str, errcode: i64) {
        self.token_refresh_outcomes
            .get_or_create(&RefreshOutcome {
                appid: appid.to_owned(),
                outcome: if errcode == 0 { "ok" } else { "error" },
                errcode,
            })
            .inc();
    }

    /// Counts a failed Redis command (`op`: a fixed command or script name).
    pub fn redis_error(&self, op: &'static str) {
        self.redis_errors.get_or_create(&Op { op }).inc();
    }

    /// Counts a Redis failover seen (a connection re-established after an error, a READONLY
    /// or MOVED reply).
    pub fn redis_failover(&self) {
        self.redis_failovers.inc();
    }

    /// Counts a push: `accepted`, `duplicate`, `refused`.
    pub fn push(&self, appid: &str, outcome: &'static str) {
        self.pushes
            .get_or_create(&app_outcome(appid, outcome))
            .inc();
    }

    /// Counts a failed authentication by surface (`session`, `client_key`, `mirror`, `admin`).
    pub fn auth_failure(&self, surface: &'static str) {
        self.auth_failures.get_or_create(&Surface { surface }).inc();
    }

    /// Counts an upstream check of the broker's token (a mirror refetch, a throttled report):
    /// `alive`, `dead` or `unknown`.
    pub fn token_probe(&self, appid: &str, verdict: &'static str) {
        self.token_probes
            .get_or_create(&AppVerdict {
                appid: appid.to_owned(),
                verdict,
            })
            .inc();
    }

    /// Counts a broker report of a failing token: `refreshed`, `throttled`, or `proven_dead`
    /// (throttled, but the token was proven dead upstream and replaced — also counted for a
    /// mirror refetch that replaced it).
    pub fn invalidation(&self, appid: &str, outcome: &'static str) {
        self.invalidations
            .get_or_create(&app_outcome(appid, outcome))
            .inc();
    }

    /// Counts a WeChat Pay notification by merchant and outcome: `applied`, `duplicate`,
    /// `no_change`, `mismatch`, `unknown_order`, `deferred`, `ignored`, `refused`, `malformed`,
    /// `store_failed`, `unknown_merchant`.
    pub fn pay_notification(&self, mchid: &str, outcome: &'static str) {
        *self
            .pay_notifications
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((mchid.to_owned(), outcome))
            .or_default() += 1;
    }

    /// This instance's WeChat Pay notification counts since it started: (mchid, outcome,
    /// count), by merchant then outcome (what [`Metrics::pay_notification`] counted; the
    /// refused ones are stored nowhere else).
    pub fn pay_notification_counts(&self) -> Vec<(String, &'static str, u64)> {
        self.pay_notifications
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|((mchid, outcome), n)| (mchid.clone(), *outcome, *n))
            .collect()
    }

    /// Counts a reconciliation run by merchant and outcome (`clean`, `discrepancies`,
    /// `failed`) and adds its discrepancies to the merchant's total.
    pub fn pay_reconciliation(&self, mchid: &str, outcome: &'static str, discrepancies: u64) {
        self.pay_reconciliations
            .get_or_create(&MchOutcome {
                mchid: mchid.to_owned(),
                outcome,
            })
            .inc();
        self.pay_discrepancies
            .get_or_create(&Mchid {
                mchid: mchid.to_owned(),
            })
            .inc_by(discrepancies);
    }

    /// Counts a webhook attempt: `ok`, `failed` or `dead` (attempts exhausted), and observes
    /// its duration when given (histograms enabled).
    pub fn webhook(&self, appid: &str, outcome: &'static str, elapsed: Option<Duration>) {
        self.webhooks
            .get_or_create(&app_outcome(appid, outcome))
            .inc();
        if let (true, Some(d)) = (self.histograms, elapsed) {
            self.webhook_seconds
                .get_or_create(&Outcome { outcome })
                .observe(d.as_secs_f64());
        }
    }

    /// Observes a database commit by operation (`login_batch`: the login writer's group
    /// commit; `push_event`: a push appended to the event log).
    pub fn db_commit(&self, operation: &'static str, elapsed: Duration) {
        if self.histograms {
            self.db_commit_seconds
                .get_or_create(&Operation { operation })
                .observe(elapsed.as_secs_f64());
        }
    }

    /// The text exposition (Prometheus text format 0.0.4).
    pub fn render(&self, scrape: &Scrape<'_>) -> String {
        let mut r = Exposition::default();
        r.add(
            "weapp_auth_failures",
            "Failed authentications by surface",
            self.auth_failures.clone(),
        );
        r.add(
            "weapp_token_invalidations",
            "Broker reports of failing tokens by outcome",
            self.invalidations.clone(),
        );
        r.add(
            "weapp_token_probes",
            "Upstream checks of the broker's token (mirror refetches, throttled reports) by verdict",
            self.token_probes.clone(),
        );
        if let Some(o) = scrape.outbox {
            let backlog = Gauge::<i64>::default();
            backlog.set(o.backlog);
            r.add(
                "weapp_webhook_backlog",
                "Events waiting for webhook delivery",
                backlog,
            );
            let age = Gauge::<f64, AtomicU64>::default();
            age.set(
                o.oldest_created_at
                    .map_or(0.0, |t| (scrape.now_ms - t).max(0) as f64 / 1000.0),
            );
            r.add(
                "weapp_webhook_oldest_undelivered_seconds",
                "Age of the oldest event waiting for delivery",
                age,
            );
            let dead = Gauge::<i64>::default();
            dead.set(o.dead);
            r.add(
                "weapp_webhook_dead_letters",
                "Events whose delivery attempts are exhausted",
                dead,
            );
        }
        r.add(
            "weapp_http_requests",
            "HTTP requests by route and status",
            self.requests.clone(),
        );
        r.add(
            "weapp_logins",
            "Login attempts by app and outcome",
            self.logins.clone(),
        );
        r.add(
            "weapp_upstream_errors",
            "WeChat errcodes by app (-2: transport)",
            self.upstream_errors.clone(),
        );
        r.add(
            "weapp_pushes",
            "Pushes received by app and outcome",
            self.pushes.clone(),
        );
        r.add(
            "weapp_webhook_deliveries",
            "Webhook attempts by app and outcome",
            self.webhooks.clone(),
        );
        let pay = Family::<MchOutcome, Counter>::default();
        for ((mchid, outcome), n) in self
            .pay_notifications
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            pay.get_or_create(&MchOutcome {
                mchid: mchid.clone(),
                outcome,
            })
            .inc_by(*n);
        }
        r.add(
            "weapp_pay_notifications",
            "WeChat Pay notifications by merchant and outcome (mismatch: not marked paid)",
            pay,
        );
        r.add(
            "weapp_pay_reconciliations",
            "Daily reconciliations run by this instance, by merchant and outcome",
            self.pay_reconciliations.clone(),
        );
        r.add(
            "weapp_pay_reconciliation_discrepancies",
            "Discrepancies found by this instance's reconciliations, by merchant",
            self.pay_discrepancies.clone(),
        );
        let (refreshes, ages, expiries) = (
            Family::<Appid, Counter>::default(),
            Family::<Appid, Gauge<f64, AtomicU64>>::default(),
            Family::<Appid, Gauge<f64, AtomicU64>>::default(),
        );
        for t in scrape.tokens {
            let appid = Appid {
                appid: t.appid.clone(),
            };
            refreshes.get_or_create(&appid).inc_by(t.refreshes);
            if let Some(age) = t.age_secs {
                ages.get_or_create(&appid).set(age);
            }
            if let Some(e) = t.expires_in_secs {
                expiries.get_or_create(&appid).set(e);
            }
        }
        r.add(
            "weapp_token_refreshes",
            "Access tokens fetched from WeChat by this instance",
            refreshes,
        );
        r.add(
            "weapp_token_age_seconds",
            "Seconds since this instance first saw the current token",
            ages,
        );
        r.add(
            "weapp_token_expires_in_seconds",
            "Seconds until the current token expires",
            expiries,
        );
        let (commits, logins) = (Counter::<u64>::default(), Counter::<u64>::default());
        commits.inc_by(scrape.login_writer.0);
        logins.inc_by(scrape.login_writer.1);
        r.add(
            "weapp_login_commits",
            "Transactions the login writer committed",
            commits,
        );
        r.add(
            "weapp_login_writes",
            "Logins the login writer recorded (per commit: divide by weapp_login_commits_total)",
            logins,
        );
        r.add(
            "weapp_token_refresh_outcomes",
            "Access-token fetches from WeChat by app, outcome (ok, error) and errcode (-2: no usable answer)",
            self.token_refresh_outcomes.clone(),
        );
        r.add(
            "weapp_redis_errors",
            "Failed Redis commands by command or script",
            self.redis_errors.clone(),
        );
        r.add(
            "weapp_redis_failovers",
            "Redis failovers seen: a connection re-established after an error, a READONLY or MOVED reply",
            self.redis_failovers.clone(),
        );
        if self.histograms {
            r.add(
                "weapp_http_request_duration_seconds",
                "HTTP request duration by route template and status",
                self.request_seconds.clone(),
            );
            r.add(
                "weapp_upstream_request_duration_seconds",
                "WeChat API call attempts by endpoint path and errcode (0: ok, -2: no usable answer)",
                self.upstream_seconds.clone(),
            );
            r.add(
                "weapp_webhook_delivery_duration_seconds",
                "Webhook delivery attempts by outcome (ok, failed, dead)",
                self.webhook_seconds.clone(),
            );
            r.add(
                "weapp_db_commit_duration_seconds",
                "Database commits by operation (login_batch, push_event)",
                self.db_commit_seconds.clone(),
            );
        }
        r.finish()
    }
}

/// The SDK's Redis store reports its errors and the failovers it saw here.
impl weapp::observe::RedisObserver for Metrics {
    fn redis(&self, event: weapp::observe::RedisEvent) {
        match event {
            weapp::observe::RedisEvent::Error { op } => self.redis_error(op),
            weapp::observe::RedisEvent::Failover => self.redis_failover(),
            _ => {}
        }
    }
}

/// One app's SDK client (or a platform's component, with its authorizers' clients) reports
/// each upstream attempt here: the upstream histogram, and for the token endpoints the refresh
/// outcome under the app's appid (a platform's: its component appid).
#[derive(Debug)]
pub struct UpstreamObserver {
    appid: String,
    metrics: std::sync::Arc<Metrics>,
}

impl UpstreamObserver {
    /// The observer of `appid`'s client.
    pub fn new(appid: &str, metrics: std::sync::Arc<Metrics>) -> Self {
        Self {
            appid: appid.to_owned(),
            metrics,
        }
    }
}

impl weapp::observe::CallObserver for UpstreamObserver {
    fn call(&self, e: &weapp::observe::CallEvent<'_>) {
        let errcode = e.outcome.errcode();
        self.metrics.upstream_call(e.path, errcode, e.elapsed);
        if matches!(
            e.path,
            "/cgi-bin/token"
                | "/cgi-bin/stable_token"
                | "/cgi-bin/component/api_component_token"
                | "/cgi-bin/component/api_authorizer_token"
        ) {
            self.metrics.token_refresh(&self.appid, errcode);
        }
    }
}

/// A registry being filled for one scrape, and the families in it (the library leaves out a
/// family without samples; this exposition names it all the same, as the hand-written one
/// did, so a dashboard finds every name from the start).
#[derive(Default)]
struct Exposition {
    registry: Registry,
    /// (name, help, type) of each family, in order.
    families: Vec<(&'static str, &'static str, &'static str)>,
}

impl Exposition {
    fn add(
        &mut self,
        name: &'static str,
        help: &'static str,
        metric: impl prometheus_client::registry::Metric,
    ) {
        let kind = match metric.metric_type() {
            prometheus_client::metrics::MetricType::Counter => "counter",
            prometheus_client::metrics::MetricType::Gauge => "gauge",
            _ => "histogram",
        };
        self.families.push((name, help, kind));
        self.registry.register(name, help, metric);
    }

    /// The text: the library's, in Prometheus' dialect, then the families it left out.
    fn finish(self) -> String {
        let mut open_metrics = String::new();
        // Writing to a String cannot fail.
        let _ =
            prometheus_client::encoding::text::encode_registry(&mut open_metrics, &self.registry);
        let mut out = prometheus_text(&open_metrics);
        for (name, help, kind) in self.families {
            let suffix = if kind == "counter" { "_total" } else { "" };
            if !out.contains(&format!("# TYPE {name}{suffix} ")) {
                let _ = writeln!(
                    out,
                    "# HELP {name}{suffix} {help}.\n# TYPE {name}{suffix} {kind}"
                );
            }
        }
        out
    }
}

fn app_outcome(appid: &str, outcome: &'static str) -> AppOutcome {
    AppOutcome {
        appid: appid.to_owned(),
        outcome,
    }
}

/// OpenMetrics text (what the library writes) as Prometheus text 0.0.4: a counter's `# HELP`
/// and `# TYPE` lines name its samples (`x_total`), not the OpenMetrics family (`x`). The
/// samples are the same in both.
fn prometheus_text(open_metrics: &str) -> String {
    let mut out = String::with_capacity(open_metrics.len() + 256);
    let mut lines = open_metrics.lines().peekable();
    while let Some(line) = lines.next() {
        let counter_help = line.starts_with("# HELP ")
            && lines
                .peek()
                .is_some_and(|next| next.starts_with("# TYPE ") && next.ends_with(" counter"));
        if counter_help {
            let type_line = lines.next().unwrap_or_default();
            for (l, prefix) in [(line, "# HELP "), (type_line, "# TYPE ")] {
                let rest = &l[prefix.len()..];
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                out.push_str(prefix);
                out.push_str(name);
                out.push_str("_total ");
                out.push_str(tail);
                out.push('\n');
            }
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_keep_their_prometheus_names_and_histograms_have_buckets() {
        let m = Metrics::default();
        m.request("/v1/login", 200, Some(Duration::from_millis(3)));
        m.auth_failure("client_key");
        m.upstream_call("/sns/jscode2session", 40029, Duration::from_millis(20));
        let text = m.render(&Scrape {
            login_writer: (1, 2),
            ..Scrape::default()
        });
        assert!(
            text.contains("# TYPE weapp_http_requests_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("# HELP weapp_http_requests_total HTTP requests by route and status.\n"),
            "{text}"
        );
        assert!(
            text.contains("weapp_http_requests_total{route=\"/v1/login\",status=\"200\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("weapp_auth_failures_total{surface=\"client_key\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("\nweapp_login_commits_total 1\n"), "{text}");
        assert!(text.contains("\nweapp_login_writes_total 2\n"), "{text}");
        assert!(
            text.contains("# TYPE weapp_http_request_duration_seconds histogram\n"),
            "{text}"
        );
        assert!(text.contains("weapp_http_request_duration_seconds_bucket{le=\"0.0025\",route=\"/v1/login\",status=\"200\"} 0\n")
            || text.contains("weapp_http_request_duration_seconds_bucket{route=\"/v1/login\",status=\"200\",le=\"0.0025\"} 0\n"), "{text}");
        assert!(text.contains("weapp_upstream_request_duration_seconds_count{path=\"/sns/jscode2session\",errcode=\"40029\"} 1\n"), "{text}");
        assert!(!text.contains("# EOF"), "{text}");
    }

    #[test]
    fn histograms_off_keeps_the_counters_and_drops_the_histograms() {
        let m = Metrics::new(false);
        m.request("/v1/login", 200, Some(Duration::from_millis(3)));
        let text = m.render(&Scrape::default());
        assert!(
            text.contains("weapp_http_requests_total{route=\"/v1/login\",status=\"200\"} 1\n"),
            "{text}"
        );
        assert!(!text.contains("_bucket"), "{text}");
    }
}
