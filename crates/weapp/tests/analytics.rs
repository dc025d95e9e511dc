//! Analytics against weapp-sim: stable synthetic data behind WeChat's date rules.

use weapp::{AppSecret, Client};
use weapp_sim::{spawn, SimConfig};

fn day(offset_days: i64) -> String {
    weapp_test_support::beijing_date(offset_days)
}

async fn client_for(appid: &str) -> (weapp_sim::SimHandle, Client) {
    let sim = spawn(SimConfig::default()).await.unwrap();
    sim.sim()
        .add_app(Some(appid.into()), Some("s".into()), false);
    let client = Client::builder(appid, AppSecret::new("s"))
        .base_url(sim.url())
        .build()
        .unwrap();
    (sim, client)
}

#[tokio::test]
async fn every_call_answers_with_stable_data() {
    let (_sim, a) = client_for("wxanalytics0000001").await;
    let yesterday = day(-1);
    let summary = a.analytics().daily_summary(&yesterday).await.unwrap();
    assert_eq!(summary[0].ref_date, yesterday);
    let trend = a.analytics().daily_visit_trend(&yesterday).await.unwrap();
    assert!(trend[0].visit_pv >= trend[0].visit_uv && trend[0].visit_uv > 0);
    let retain = a.analytics().daily_retain(&yesterday).await.unwrap();
    assert_eq!(retain.visit_uv_new.len(), 8);
    let pages = a.analytics().visit_page(&yesterday).await.unwrap();
    assert!(pages
        .list
        .iter()
        .any(|p| p.page_path == "pages/index/index"));
    let dist = a.analytics().visit_distribution(&yesterday).await.unwrap();
    assert_eq!(dist.list[0].index, "access_source_session_cnt");
    let portrait = a.analytics().user_portrait(&yesterday, 7).await.unwrap();
    assert_eq!(portrait.visit_uv.province[0].name, "广东省");
    assert!(!portrait.visit_uv_new.ages.is_empty());

    // A Monday at least a week back, and the first of a past month.
    let mut monday_offset = -8;
    while weekday_of(&day(monday_offset)) != 0 {
        monday_offset -= 1;
    }
    let week = a
        .analytics()
        .weekly_visit_trend(&day(monday_offset))
        .await
        .unwrap();
    assert_eq!(
        week[0].ref_date,
        format!("{}-{}", day(monday_offset), day(monday_offset + 6))
    );
    let last_month_first = {
        let t = day(-40);
        format!("{}01", &t[..6])
    };
    let month = a
        .analytics()
        .monthly_visit_trend(&last_month_first)
        .await
        .unwrap();
    assert_eq!(month[0].ref_date, &last_month_first[..6]);

    // Stable across runs: another simulator gives the same numbers for the same app and day.
    let (_sim2, b) = client_for("wxanalytics0000001").await;
    assert_eq!(
        b.analytics().daily_visit_trend(&yesterday).await.unwrap(),
        trend
    );
    let (_sim3, c) = client_for("wxanalytics0000002").await;
    assert_ne!(
        c.analytics().daily_visit_trend(&yesterday).await.unwrap(),
        trend,
        "another app, other numbers"
    );
}

#[tokio::test]
async fn date_rules_are_enforced_locally_and_by_the_simulator() {
    let (sim, a) = client_for("wxanalytics0000003").await;
    let local = [
        a.analytics().daily_summary("2023-11-10").await.unwrap_err(),
        a.analytics().daily_summary(&day(0)).await.unwrap_err(),
        a.analytics()
            .weekly_visit_trend(&not_a_monday())
            .await
            .unwrap_err(),
        a.analytics().user_portrait(&day(-1), 3).await.unwrap_err(),
    ];
    let codes: Vec<i64> = local.iter().map(|e| e.errcode().unwrap().code()).collect();
    assert_eq!(codes, [61500, 61501, 61501, 61501]);
    assert!(
        local.iter().all(|e| e.rid().is_none()),
        "checked before sending"
    );

    // The simulator applies the same rules to callers that do not check.
    let token = a.access_token().await.unwrap();
    let http = reqwest::Client::new();
    let call = |name: &str, begin: String, end: String| {
        let url = format!(
            "{}/datacube/getweanalysisappid{name}?access_token={}",
            sim.url(),
            token.expose()
        );
        let http = http.clone();
        async move {
            http.post(url)
                .json(&serde_json::json!({"begin_date": begin, "end_date": end}))
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    assert_eq!(
        call("dailyvisittrend", "20231110".into(), "20231111".into()).await["errcode"],
        61501
    );
    assert_eq!(
        call("dailyvisittrend", "2023111".into(), "2023111".into()).await["errcode"],
        61500
    );
    assert_eq!(
        call("dailyvisittrend", day(0), day(0)).await["errcode"],
        61501
    );
    let ok = call("dailysummarytrend", day(-1), day(-1)).await;
    assert!(
        ok.get("errcode").is_none(),
        "success bodies carry no errcode: {ok}"
    );
}

/// 0 = Monday (Zeller's congruence).
fn weekday_of(s: &str) -> i64 {
    let (y, m, d) = (
        s[..4].parse::<i64>().unwrap(),
        s[4..6].parse::<i64>().unwrap(),
        s[6..].parse::<i64>().unwrap(),
    );
    let (y, m) = if m < 3 { (y - 1, m + 12) } else { (y, m) };
    (d + 13 * (m + 1) / 5 + y + y / 4 - y / 100 + y / 400 + 5) % 7
}

fn not_a_monday() -> String {
    (-30..-20).map(day).find(|d| weekday_of(d) != 0).unwrap()
}

#[tokio::test]
async fn performance_data_per_day() {
    use weapp::api::analytics::PerformanceModule;
    let (sim, a) = client_for("wxanalytics0000004").await;
    let now = sim.sim().now();
    let tables = a
        .analytics()
        .performance(
            PerformanceModule::FirstRender,
            now - 6 * 86_400,
            now,
            &[("networktype", "wifi")],
        )
        .await
        .unwrap();
    assert_eq!(tables[0].id, "first_render_cost");
    assert_eq!(tables[0].lines[0].fields.len(), 7);
    assert!(tables[0].lines[0]
        .fields
        .iter()
        .all(|f| f.value.parse::<u32>().is_ok()));
    let err = a
        .analytics()
        .performance(PerformanceModule::StartupTotal, now, now - 1, &[])
        .await
        .unwrap_err();
    assert_eq!(
        (err.errcode(), err.rid()),
        (Some(weapp::ErrCode::InvalidArgs), None)
    );
}
