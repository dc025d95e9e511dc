//! Analytics (`/datacube/getweanalysisappid…`): deterministic synthetic data per app and date
//! (stable across runs, so dashboards can be built against it) behind WeChat's date rules.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

use crate::error::{WxError, WxResult};
use crate::http::{answer as wx_answer, json_body, p, Params};
use crate::tokens::with_token;
use crate::world::Sim;

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Parses `yyyymmdd` into days since the epoch.
fn parse(s: &str) -> Option<i64> {
    if s.len() != 8 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (y, m, d) = (
        s[..4].parse().ok()?,
        s[4..6].parse().ok()?,
        s[6..].parse().ok()?,
    );
    let days = days_from_civil(y, m, d);
    (civil_from_days(days) == (y, m, d)).then_some(days)
}

/// `yyyymmdd` of a day counted from 1970-01-01.
pub fn yyyymmdd(days: i64) -> String {
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}{m:02}{d:02}")
}

/// The period a call covers.
enum Period {
    Day,
    Week,
    Month,
    Portrait,
}

/// Checks the dates of a call and returns (first day, last day).
fn dates(body: &Value, period: &Period, today: i64) -> WxResult<(i64, i64)> {
    let format = || WxError::new(61500, "date format error");
    let range = || WxError::new(61501, "date range error");
    let begin = body
        .get("begin_date")
        .and_then(Value::as_str)
        .and_then(parse)
        .ok_or_else(format)?;
    let end = body
        .get("end_date")
        .and_then(Value::as_str)
        .and_then(parse)
        .ok_or_else(format)?;
    let ok = match period {
        Period::Day => begin == end && end < today,
        // 1970-01-01 was a Thursday: Monday is (days + 3) % 7 == 0.
        Period::Week => (begin + 3).rem_euclid(7) == 0 && end == begin + 6 && end < today,
        Period::Month => {
            let (y, m, d) = civil_from_days(begin);
            let next = if m == 12 {
                days_from_civil(y + 1, 1, 1)
            } else {
                days_from_civil(y, m + 1, 1)
            };
            d == 1 && end == next - 1 && end < today
        }
        Period::Portrait => matches!(end - begin + 1, 1 | 7 | 30) && end < today,
    };
    if ok {
        Ok((begin, end))
    } else {
        Err(range())
    }
}

/// A stable pseudo-random number for (appid, day, salt) in `0..modulo`.
fn n(appid: &str, day: i64, salt: &str, modulo: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in appid.bytes().chain(day.to_le_bytes()).chain(salt.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h % modulo.max(1)
}

fn trend_row(appid: &str, begin: i64, end: i64, ref_date: String) -> Value {
    let days = (end - begin + 1) as u64;
    let uv = (begin..=end)
        .map(|d| 500 + n(appid, d, "uv", 2000))
        .sum::<u64>();
    let pv = uv * (2 + n(appid, begin, "depth", 3));
    json!({
        "ref_date": ref_date,
        "session_cnt": uv + uv / 3,
        "visit_pv": pv,
        "visit_uv": uv,
        "visit_uv_new": uv / (3 + days.min(5)),
        "stay_time_uv": 60.0 + n(appid, begin, "stay", 240) as f64 + 0.5,
        "stay_time_session": 45.0 + n(appid, begin, "stays", 200) as f64 + 0.25,
        "visit_depth": 2.0 + n(appid, begin, "dep", 300) as f64 / 100.0,
    })
}

fn retain(appid: &str, begin: i64, keys: u64) -> Value {
    let base = 300 + n(appid, begin, "new", 700);
    let series = |salt: &str, base: u64| -> Vec<Value> {
        (0..=keys).map(|k| json!({"key": k, "value": if k == 0 { base } else { base * (40 - (k * 4).min(35)) / 100 + n(appid, begin + k as i64, salt, 10) }})).collect()
    };
    json!({"visit_uv_new": series("rn", base), "visit_uv": series("ru", base * 3)})
}

/// Answers one datacube call. `today` is the first day (days since the epoch, Beijing time)
/// for which no data exists yet.
///
/// # Errors
/// 61500 date format, 61501 date range, 40097 unknown call.
pub fn answer(appid: &str, name: &str, body: &Value, today: i64) -> WxResult<Value> {
    let period = match name {
        "dailysummarytrend" | "dailyvisittrend" | "dailyretaininfo" | "visitpage"
        | "visitdistribution" => Period::Day,
        "weeklyvisittrend" | "weeklyretaininfo" => Period::Week,
        "monthlyvisittrend" | "monthlyretaininfo" => Period::Month,
        "userportrait" => Period::Portrait,
        _ => return Err(WxError::new(40097, "invalid args")),
    };
    let (begin, end) = dates(body, &period, today)?;
    let ref_date = match period {
        Period::Week => format!("{}-{}", yyyymmdd(begin), yyyymmdd(end)),
        Period::Month => yyyymmdd(begin)[..6].to_owned(),
        Period::Portrait if begin != end => format!("{}-{}", yyyymmdd(begin), yyyymmdd(end)),
        _ => yyyymmdd(begin),
    };
    Ok(match name {
        "dailysummarytrend" => {
            let uv = 500 + n(appid, begin, "uv", 2000);
            json!({"list": [{"ref_date": ref_date, "visit_total": 10_000 + n(appid, begin, "total", 5000) + (begin - 19_000).max(0) as u64, "share_pv": uv / 10, "share_uv": uv / 15}]})
        }
        "dailyvisittrend" | "weeklyvisittrend" | "monthlyvisittrend" => {
            json!({"list": [trend_row(appid, begin, end, ref_date)]})
        }
        "dailyretaininfo" => json!({"ref_date": ref_date})
            .as_object()
            .cloned()
            .map(|mut o| {
                o.extend(
                    retain(appid, begin, 7)
                        .as_object()
                        .cloned()
                        .unwrap_or_default(),
                );
                Value::Object(o)
            })
            .unwrap_or_default(),
        "weeklyretaininfo" | "monthlyretaininfo" => json!({"ref_date": ref_date})
            .as_object()
            .cloned()
            .map(|mut o| {
                o.extend(
                    retain(appid, begin, 4)
                        .as_object()
                        .cloned()
                        .unwrap_or_default(),
                );
                Value::Object(o)
            })
            .unwrap_or_default(),
        "visitpage" => {
            let pages = ["pages/index/index", "pages/item/item", "pages/order/order"];
            let list: Vec<Value> = pages.iter().map(|p| {
                let pv = 100 + n(appid, begin, p, 900);
                json!({"page_path": p, "page_visit_pv": pv, "page_visit_uv": pv / 2, "page_staytime_pv": 10.0 + n(appid, begin, "st", 50) as f64, "entrypage_pv": pv / 3, "exitpage_pv": pv / 4, "page_share_pv": pv / 20, "page_share_uv": pv / 30})
            }).collect();
            json!({"ref_date": ref_date, "list": list})
        }
        "visitdistribution" => {
            let items = |salt: &str, keys: &[u64]| -> Vec<Value> {
                keys.iter().map(|k| json!({"key": k, "value": n(appid, begin, &format!("{salt}{k}"), 1000)})).collect()
            };
            json!({"ref_date": ref_date, "list": [
                {"index": "access_source_session_cnt", "item_list": items("src", &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10])},
                {"index": "access_staytime_info", "item_list": items("stay", &[1, 2, 3, 4, 5, 6, 7, 8])},
                {"index": "access_depth_info", "item_list": items("depth", &[1, 2, 3, 4, 5, 6])},
            ]})
        }
        _ => {
            let dim = |salt: &str| {
                let item = |id: u64, name: &str| json!({"id": id, "name": name, "value": n(appid, begin, &format!("{salt}{name}"), 5000)});
                json!({
                    "province": [item(1, "广东省"), item(2, "浙江省")],
                    "city": [item(1, "广州"), item(2, "杭州")],
                    "genders": [item(1, "男"), item(2, "女")],
                    "platforms": [item(1, "iPhone"), item(2, "Android")],
                    "devices": [{"name": "iPhone 15", "value": n(appid, begin, "dev", 3000)}],
                    "ages": [item(1, "17岁以下"), item(2, "18-24岁"), item(3, "25-29岁")],
                })
            };
            json!({"ref_date": ref_date, "visit_uv_new": dim("new"), "visit_uv": dim("all")})
        }
    })
}

/// Days since the epoch of the Beijing date of `now_ms`.
pub fn beijing_day(now_ms: i64) -> i64 {
    (now_ms / 1000 + 8 * 3600).div_euclid(86_400)
}

/// The performance modules the simulator knows: (module, table id, Chinese name).
pub const PERFORMANCE_MODULES: &[(&str, &str, &str)] = &[
    ("10021", "startup_total_cost", "启动总耗时"),
    ("10022", "download_code_cost", "代码包下载耗时"),
    ("10023", "first_render_cost", "首次渲染耗时"),
    ("10024", "page_switch_cost", "页面切换耗时"),
];

/// `wxa/business/performance/boot`: one table of daily values (ms, as strings) for the module
/// over `time.begin_timestamp..=time.end_timestamp` (at most 30 days).
///
/// # Errors
/// 40097 for an unknown module or a bad time range.
pub fn performance(appid: &str, body: &Value) -> WxResult<Value> {
    let bad = |_what: &str| WxError::new(40097, "invalid args");
    let module = body
        .get("module")
        .and_then(|m| {
            m.as_str()
                .map(str::to_owned)
                .or_else(|| m.as_i64().map(|n| n.to_string()))
        })
        .ok_or_else(|| bad("module"))?;
    let (_, id, zh) = PERFORMANCE_MODULES
        .iter()
        .find(|m| m.0 == module)
        .ok_or_else(|| bad("module"))?;
    let time = body.get("time").ok_or_else(|| bad("time"))?;
    let begin = time
        .get("begin_timestamp")
        .and_then(Value::as_i64)
        .ok_or_else(|| bad("time.begin_timestamp"))?;
    let end = time
        .get("end_timestamp")
        .and_then(Value::as_i64)
        .ok_or_else(|| bad("time.end_timestamp"))?;
    let (first, last) = (beijing_day(begin * 1000), beijing_day(end * 1000));
    if last < first || last - first > 30 {
        return Err(bad("time range must be 0-30 days"));
    }
    let fields: Vec<Value> = (first..=last)
        .map(
            |d| json!({"refdate": yyyymmdd(d), "value": (300 + n(appid, d, id, 2700)).to_string()}),
        )
        .collect();
    Ok(
        json!({"errcode": 0, "errmsg": "ok", "data": {"body": {"tables": [{"id": id, "zh": zh, "lines": [{"fields": fields}]}]}}}),
    )
}

async fn datacube(
    State(sim): State<Sim>,
    Path(name): Path<String>,
    Query(q): Params,
    body: Bytes,
) -> Response {
    let path = format!("/datacube/{name}");
    let result = sim
        .check_api_token(p(&q, "access_token"), &path)
        .and_then(|appid| {
            sim.count_app_call(&appid, &path);
            let call = name
                .strip_prefix("getweanalysisappid")
                .ok_or_else(|| WxError::new(40097, "invalid args"))?;
            let b = json_body(&body)?;
            answer(&appid, call, &b, beijing_day(sim.now_ms()))
        });
    // Success bodies carry no errcode, as WeChat's datacube answers.
    wx_answer(&sim, &path, result)
}

async fn performance_route(State(sim): State<Sim>, Query(q): Params, body: Bytes) -> Response {
    with_token(&sim, "/wxa/business/performance/boot", &q, |appid| {
        performance(appid, &json_body(&body)?)
    })
}

/// The WeChat routes of this domain.
pub(crate) fn routes() -> Router<Sim> {
    Router::new()
        .route("/datacube/{name}", post(datacube))
        .route("/wxa/business/performance/boot", post(performance_route))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_round_trips() {
        for d in [-1000, 0, 19_000, 19_675, 20_000, 30_000] {
            let (y, m, dd) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, dd), d);
        }
        assert_eq!(parse("20231106"), Some(days_from_civil(2023, 11, 6)));
        assert_eq!(
            (days_from_civil(2023, 11, 6) + 3).rem_euclid(7),
            0,
            "2023-11-06 was a Monday"
        );
        assert_eq!(parse("20230231"), None);
        assert_eq!(parse("2023116"), None);
    }
}
