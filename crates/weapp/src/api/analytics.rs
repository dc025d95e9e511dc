//! Analytics (`/datacube/getweanalysisappid…`): visit trends, retention, pages, distribution and
//! user portraits, with typed rows. Dates are `yyyymmdd`; the date rules (one past day; a
//! Monday-to-Sunday week; a whole past month; a 1-, 7- or 30-day portrait) are checked before
//! sending with WeChat's errcodes (61500 format, 61501 range).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::client::Client;
use crate::error::{rejected_locally, Result};
use crate::http::{Body, Endpoint, JsonResponse};

/// Analytics APIs. Get one with [`Client::analytics`].
#[derive(Debug, Clone)]
pub struct AnalyticsApi {
    client: Client,
}

impl Client {
    /// Analytics APIs.
    pub fn analytics(&self) -> AnalyticsApi {
        AnalyticsApi {
            client: self.clone(),
        }
    }
}

/// Days since 1970-01-01 ↔ civil date (proleptic Gregorian).
fn to_days(y: i64, m: i64, d: i64) -> i64 {
    let (y, m) = if m <= 2 { (y - 1, m + 12) } else { (y, m) };
    365 * y + y / 4 - y / 100 + y / 400 + (153 * (m - 3) + 2) / 5 + d - 719_469
}

fn from_days(days: i64) -> (i64, i64, i64) {
    // Search the year, then the month: simple and exact for the dates analytics uses.
    let mut y = 1970 + days.div_euclid(366);
    while to_days(y + 1, 1, 1) <= days {
        y += 1;
    }
    let mut m = 1;
    while m < 12 && to_days(y, m + 1, 1) <= days {
        m += 1;
    }
    (y, m, days - to_days(y, m, 1) + 1)
}

fn parse(date: &str) -> Option<i64> {
    if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (y, m, d): (i64, i64, i64) = (
        date[..4].parse().ok()?,
        date[4..6].parse().ok()?,
        date[6..].parse().ok()?,
    );
    let days = to_days(y, m, d);
    (from_days(days) == (y, m, d)).then_some(days)
}

fn format(days: i64) -> String {
    let (y, m, d) = from_days(days);
    format!("{y:04}{m:02}{d:02}")
}

fn today_beijing() -> i64 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    (secs + 8 * 3600).div_euclid(86_400)
}

#[derive(Clone, Copy)]
enum Span {
    Day,
    Week,
    Month,
}

/// Checks `start` for `span` and returns `(begin_date, end_date)`.
fn range(endpoint: &'static str, start: &str, span: Span) -> Result<(String, String)> {
    let begin = parse(start).ok_or_else(|| {
        rejected_locally(endpoint, 61500, format!("`{start}` is not a yyyymmdd date"))
    })?;
    let end = match span {
        Span::Day => begin,
        Span::Week => {
            if (begin + 3).rem_euclid(7) != 0 {
                return Err(rejected_locally(
                    endpoint,
                    61501,
                    "a week starts on a Monday",
                ));
            }
            begin + 6
        }
        Span::Month => {
            let (y, m, d) = from_days(begin);
            if d != 1 {
                return Err(rejected_locally(
                    endpoint,
                    61501,
                    "a month starts on its first day",
                ));
            }
            if m == 12 {
                to_days(y + 1, 1, 1) - 1
            } else {
                to_days(y, m + 1, 1) - 1
            }
        }
    };
    if end >= today_beijing() {
        return Err(rejected_locally(
            endpoint,
            61501,
            "the period must be over (data exists up to yesterday)",
        ));
    }
    Ok((format(begin), format(end)))
}

/// A row of `dailysummarytrend`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[non_exhaustive]
pub struct SummaryRow {
    /// yyyymmdd
    pub ref_date: String,
    /// Cumulative users.
    pub visit_total: u64,
    /// Shares.
    pub share_pv: u64,
    /// Sharing users.
    pub share_uv: u64,
}

/// A row of the visit trends.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[non_exhaustive]
pub struct VisitTrend {
    /// yyyymmdd, `yyyymmdd-yyyymmdd` (week) or yyyymm (month).
    pub ref_date: String,
    /// Sessions.
    pub session_cnt: u64,
    /// Visits.
    pub visit_pv: u64,
    /// Visitors.
    pub visit_uv: u64,
    /// New visitors.
    pub visit_uv_new: u64,
    /// Average stay per visitor (s).
    pub stay_time_uv: f64,
    /// Average stay per session (s).
    pub stay_time_session: f64,
    /// Average depth.
    pub visit_depth: f64,
}

/// A `{key, value}` item.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[non_exhaustive]
pub struct KeyValue {
    /// Key (days or weeks since, a bucket, …).
    pub key: i64,
    /// Value.
    pub value: u64,
}

/// Retention.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[non_exhaustive]
pub struct Retain {
    /// The period.
    pub ref_date: String,
    /// New users still visiting after `key` periods.
    pub visit_uv_new: Vec<KeyValue>,
    /// Active users still visiting after `key` periods.
    pub visit_uv: Vec<KeyValue>,
}

/// A page's numbers.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[non_exhaustive]
pub struct PageRow {
    /// Page.
    pub page_path: String,
    /// Visits.
    pub page_visit_pv: u64,
    /// Visitors.
    pub page_visit_uv: u64,
    /// Average stay (s).
    pub page_staytime_pv: f64,
    /// Entries.
    pub entrypage_pv: u64,
    /// Exits.
    pub exitpage_pv: u64,
    /// Shares.
    pub page_share_pv: u64,
    /// Sharing users.
    pub page_share_uv: u64,
}

/// `visitpage`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[non_exhaustive]
pub struct VisitPage {
    /// The day.
    pub ref_date: String,
    /// Pages.
    pub list: Vec<PageRow>,
}

/// One distribution (`access_source_session_cnt`, `access_staytime_info`, …).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[non_exhaustive]
pub struct Distribution {
    /// Which distribution.
    pub index: String,
    /// Buckets.
    pub item_list: Vec<KeyValue>,
}

/// `visitdistribution`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[non_exhaustive]
pub struct VisitDistribution {
    /// The day.
    pub ref_date: String,
    /// The distributions.
    pub list: Vec<Distribution>,
}

/// One bucket of a portrait dimension.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct PortraitItem {
    /// Bucket id (absent for devices).
    #[serde(default)]
    pub id: Option<i64>,
    /// Bucket name (广东省, 男, iPhone, 18-24岁, …).
    pub name: String,
    /// Users.
    pub value: u64,
}

/// Users by province, city, gender, platform, device and age.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(default)]
#[non_exhaustive]
pub struct PortraitDimensions {
    /// By province.
    pub province: Vec<PortraitItem>,
    /// By city.
    pub city: Vec<PortraitItem>,
    /// By gender.
    pub genders: Vec<PortraitItem>,
    /// By platform.
    pub platforms: Vec<PortraitItem>,
    /// By device model.
    pub devices: Vec<PortraitItem>,
    /// By age band.
    pub ages: Vec<PortraitItem>,
}

/// `userportrait`: the new and the active users of a period.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[non_exhaustive]
pub struct UserPortrait {
    /// The period.
    pub ref_date: String,
    /// New users.
    pub visit_uv_new: PortraitDimensions,
    /// Active users.
    pub visit_uv: PortraitDimensions,
}

#[derive(Debug, Deserialize)]
struct List<T> {
    list: Vec<T>,
}

impl<T: DeserializeOwned> JsonResponse for List<T> {}
impl JsonResponse for Retain {}
impl JsonResponse for VisitPage {}
impl JsonResponse for VisitDistribution {}
impl JsonResponse for UserPortrait {}

#[derive(Serialize)]
struct Dates {
    begin_date: String,
    end_date: String,
}

macro_rules! datacube {
    ($($name:ident => $path:literal, $out:ty;)*) => {
        $(
            struct $name(Dates);
            impl Endpoint for $name {
                type Output = $out;
                const PATH: &'static str = $path;
                const IDEMPOTENT: bool = true;
                fn body(&self) -> Result<Body> {
                    Body::json(&self.0)
                }
            }
        )*
    };
}

datacube! {
    DailySummary => "/datacube/getweanalysisappiddailysummarytrend", List<SummaryRow>;
    DailyVisit => "/datacube/getweanalysisappiddailyvisittrend", List<VisitTrend>;
    WeeklyVisit => "/datacube/getweanalysisappidweeklyvisittrend", List<VisitTrend>;
    MonthlyVisit => "/datacube/getweanalysisappidmonthlyvisittrend", List<VisitTrend>;
    DailyRetain => "/datacube/getweanalysisappiddailyretaininfo", Retain;
    WeeklyRetain => "/datacube/getweanalysisappidweeklyretaininfo", Retain;
    MonthlyRetain => "/datacube/getweanalysisappidmonthlyretaininfo", Retain;
    VisitPageCall => "/datacube/getweanalysisappidvisitpage", VisitPage;
    Distributions => "/datacube/getweanalysisappidvisitdistribution", VisitDistribution;
    Portrait => "/datacube/getweanalysisappiduserportrait", UserPortrait;
}

fn dates((begin_date, end_date): (String, String)) -> Dates {
    Dates {
        begin_date,
        end_date,
    }
}

impl AnalyticsApi {
    /// Cumulative users and shares of one past day.
    ///
    /// # Errors
    /// 61500 / 61501 (checked locally first), 61503 not ready.
    ///
    /// ```no_run
    /// # async fn run(client: weapp::Client) -> Result<(), weapp::Error> {
    /// let rows = client.analytics().daily_summary("20231110").await?;
    /// # Ok(()) }
    /// ```
    pub async fn daily_summary(&self, day: &str) -> Result<Vec<SummaryRow>> {
        let d = dates(range(DailySummary::PATH_, day, Span::Day)?);
        self.client.send(&DailySummary(d)).await.map(|l| l.list)
    }

    /// Visit trend of one past day.
    ///
    /// # Errors
    /// As [`AnalyticsApi::daily_summary`].
    ///
    /// ```no_run
    /// # async fn run(client: weapp::Client) -> Result<(), weapp::Error> {
    /// let rows = client.analytics().daily_visit_trend("20231110").await?;
    /// # Ok(()) }
    /// ```
    pub async fn daily_visit_trend(&self, day: &str) -> Result<Vec<VisitTrend>> {
        let d = dates(range(DailyVisit::PATH_, day, Span::Day)?);
        self.client.send(&DailyVisit(d)).await.map(|l| l.list)
    }

    /// Visit trend of the past week starting on Monday `monday`.
    ///
    /// # Errors
    /// As [`AnalyticsApi::daily_summary`]; 61501 when `monday` is not a Monday.
    ///
    /// ```no_run
    /// # async fn run(client: weapp::Client) -> Result<(), weapp::Error> {
    /// let rows = client.analytics().weekly_visit_trend("20231106").await?;
    /// # Ok(()) }
    /// ```
    pub async fn weekly_visit_trend(&self, monday: &str) -> Result<Vec<VisitTrend>> {
        let d = dates(range(WeeklyVisit::PATH_, monday, Span::Week)?);
        self.client.send(&WeeklyVisit(d)).await.map(|l| l.list)
    }

    /// Visit trend of the past month starting on `first_day`.
    ///
    /// # Errors
    /// As [`AnalyticsApi::daily_summary`]; 61501 unless `first_day` is a month's first.
    ///
    /// ```no_run
    /// # async fn run(client: weapp::Client) -> Result<(), weapp::Error> {
    /// let rows = client.analytics().monthly_visit_trend("20231001").await?;
    /// # Ok(()) }
    /// ```
    pub async fn monthly_visit_trend(&self, first_day: &str) -> Result<Vec<VisitTrend>> {
        let d = dates(range(MonthlyVisit::PATH_, first_day, Span::Month)?);
        self.client.send(&MonthlyVisit(d)).await.map(|l| l.list)
    }

    /// Retention from one past day.
    ///
    /// # Errors
    /// As [`AnalyticsApi::daily_summary`].
    ///
    /// ```no_run
    /// # async fn run(client: weapp::Client) -> Result<(), weapp::Error> {
    /// let r = client.analytics().daily_retain("20231110").await?;
    /// # Ok(()) }
    /// ```
    pub async fn daily_retain(&self, day: &str) -> Result<Retain> {
        self.client
            .send(&DailyRetain(dates(range(
                DailyRetain::PATH_,
                day,
                Span::Day,
            )?)))
            .await
    }

    /// Retention from a past week (from its Monday).
    ///
    /// # Errors
    /// As [`AnalyticsApi::weekly_visit_trend`].
    ///
    /// ```no_run
    /// # async fn run(client: weapp::Client) -> Result<(), weapp::Error> {
    /// let r = client.analytics().weekly_retain("20231106").await?;
    /// # Ok(()) }
    /// ```
    pub async fn weekly_retain(&self, monday: &str) -> Result<Retain> {
        self.client
            .send(&WeeklyRetain(dates(range(
                WeeklyRetain::PATH_,
                monday,
                Span::Week,
            )?)))
            .await
    }

    /// Retention from a past month (from its first day).
    ///
    /// # Errors
    /// As [`AnalyticsApi::monthly_visit_trend`].
    ///
    /// ```no_run
    /// # async fn run(client: weapp::Client) -> Result<(), weapp::Error> {
    /// let r = client.analytics().monthly_retain("20231001").await?;
    /// # Ok(()) }
    /// ```
    pub async fn monthly_retain(&self, first_day: &str) -> Result<Retain> {
        self.client
            .send(&MonthlyRetain(dates(range(
                MonthlyRetain::PATH_,
                first_day,
                Span::Month,
            )?)))
            .await
    }

    /// Per-page numbers of one past day.
    ///
    /// # Errors
    /// As [`AnalyticsApi::daily_summary`].
    ///
    /// ```no_run
    /// # async fn run(client: weapp::Client) -> Result<(), weapp::Error> {
    /// let pages = client.analytics().visit_page("20231110").await?;
    /// # Ok(()) }
    /// ```
    pub async fn visit_page(&self, day: &str) -> Result<VisitPage> {
        self.client
            .send(&VisitPageCall(dates(range(
                VisitPageCall::PATH_,
                day,
                Span::Day,
            )?)))
            .await
    }

    /// Source, stay-time and depth distributions of one past day.
    ///
    /// # Errors
    /// As [`AnalyticsApi::daily_summary`].
    ///
    /// ```no_run
    /// # async fn run(client: weapp::Client) -> Result<(), weapp::Error> {
    /// let d = client.analytics().visit_distribution("20231110").await?;
    /// # Ok(()) }
    /// ```
    pub async fn visit_distribution(&self, day: &str) -> Result<VisitDistribution> {
        self.client
            .send(&Distributions(dates(range(
                Distributions::PATH_,
                day,
                Span::Day,
            )?)))
            .await
    }

    /// User portrait over the past `days` (1, 7 or 30) ending on `end_day`.
    ///
    /// # Errors
    /// As [`AnalyticsApi::daily_summary`]; 61501 for another length.
    ///
    /// ```no_run
    /// # async fn run(client: weapp::Client) -> Result<(), weapp::Error> {
    /// let p = client.analytics().user_portrait("20231110", 7).await?;
    /// # Ok(()) }
    /// ```
    pub async fn user_portrait(&self, end_day: &str, days: u32) -> Result<UserPortrait> {
        if !matches!(days, 1 | 7 | 30) {
            return Err(rejected_locally(
                Portrait::PATH_,
                61501,
                "a portrait covers 1, 7 or 30 days",
            ));
        }
        let (end, _) = range(Portrait::PATH_, end_day, Span::Day)?;
        let begin = format(parse(&end).unwrap_or_default() - i64::from(days) + 1);
        self.client
            .send(&Portrait(Dates {
                begin_date: begin,
                end_date: end,
            }))
            .await
    }
}

/// Which performance figure (`module` of `wxa/business/performance/boot`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PerformanceModule {
    /// 10021: total startup time.
    StartupTotal,
    /// 10022: code package download time.
    CodeDownload,
    /// 10023: first render time.
    FirstRender,
    /// 10024: page switch time.
    PageSwitch,
}

/// One value of a performance table.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct PerformanceField {
    /// yyyymmdd
    pub refdate: String,
    /// Milliseconds, as WeChat sends them (a string).
    pub value: String,
}

/// A line of a performance table.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct PerformanceLine {
    /// Its values.
    pub fields: Vec<PerformanceField>,
}

/// A performance table.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct PerformanceTable {
    /// Table id, e.g. `startup_total_cost`.
    pub id: String,
    /// Chinese name.
    pub zh: String,
    /// Lines.
    pub lines: Vec<PerformanceLine>,
}

#[derive(Debug, Deserialize)]
struct PerfBody {
    tables: Vec<PerformanceTable>,
}

#[derive(Debug, Deserialize)]
struct PerfData {
    body: PerfBody,
}

#[derive(Debug, Deserialize)]
struct PerfResponse {
    data: PerfData,
}

impl JsonResponse for PerfResponse {}

#[derive(Serialize)]
struct PerfTime {
    begin_timestamp: i64,
    end_timestamp: i64,
}

#[derive(Serialize)]
struct Performance {
    time: PerfTime,
    module: String,
    params: Vec<serde_json::Value>,
}

impl Endpoint for Performance {
    type Output = PerfResponse;
    const PATH: &'static str = "/wxa/business/performance/boot";
    const IDEMPOTENT: bool = true;
    fn body(&self) -> Result<Body> {
        Body::json(self)
    }
}

impl AnalyticsApi {
    /// Performance data (运维中心): daily values of `module` between two Unix times (≤ 30 days),
    /// optionally filtered by `(field, value)` pairs such as `("networktype", "wifi")`.
    ///
    /// # Errors
    /// Local: an end before the start or a range over 30 days (40097); WeChat 40097.
    ///
    /// ```no_run
    /// # async fn run(client: weapp::Client) -> Result<(), weapp::Error> {
    /// use weapp::api::analytics::PerformanceModule;
    /// let tables = client.analytics().performance(PerformanceModule::StartupTotal, 1_699_000_000, 1_699_600_000, &[("networktype", "wifi")]).await?;
    /// # Ok(()) }
    /// ```
    pub async fn performance(
        &self,
        module: PerformanceModule,
        begin: i64,
        end: i64,
        filters: &[(&str, &str)],
    ) -> Result<Vec<PerformanceTable>> {
        if end < begin || end - begin > 30 * 86_400 {
            return Err(rejected_locally(
                Performance::PATH_,
                40097,
                "the time range must be 0-30 days",
            ));
        }
        let module = match module {
            PerformanceModule::StartupTotal => "10021",
            PerformanceModule::CodeDownload => "10022",
            PerformanceModule::FirstRender => "10023",
            PerformanceModule::PageSwitch => "10024",
        };
        let params = filters
            .iter()
            .map(|(f, v)| serde_json::json!({"field": f, "value": v}))
            .collect();
        let call = Performance {
            time: PerfTime {
                begin_timestamp: begin,
                end_timestamp: end,
            },
            module: module.into(),
            params,
        };
        self.client.send(&call).await.map(|r| r.data.body.tables)
    }
}

trait PathOf {
    const PATH_: &'static str;
}

impl<E: Endpoint> PathOf for E {
    const PATH_: &'static str = E::PATH;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_and_rules() {
        assert_eq!(format(parse("20231106").unwrap()), "20231106");
        assert_eq!(parse("20230229"), None);
        assert!(parse("20240229").is_some(), "leap day");
        assert_eq!(
            range("/x", "20231106", Span::Week).unwrap(),
            ("20231106".into(), "20231112".into())
        );
        assert_eq!(
            range("/x", "20231107", Span::Week)
                .unwrap_err()
                .errcode()
                .unwrap()
                .code(),
            61501
        );
        assert_eq!(
            range("/x", "20240201", Span::Month).unwrap(),
            ("20240201".into(), "20240229".into())
        );
        assert_eq!(
            range("/x", "20231231", Span::Month)
                .unwrap_err()
                .errcode()
                .unwrap()
                .code(),
            61501
        );
        assert_eq!(
            range("/x", "2023-11-06", Span::Day)
                .unwrap_err()
                .errcode()
                .unwrap()
                .code(),
            61500
        );
        assert_eq!(
            range("/x", &format(today_beijing()), Span::Day)
                .unwrap_err()
                .errcode()
                .unwrap()
                .code(),
            61501,
            "today has no data yet"
        );
        assert!(
            range("/x", &format(today_beijing() - 1), Span::Day).is_ok(),
            "yesterday has"
        );
    }
}
