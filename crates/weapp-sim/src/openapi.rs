//! OpenAPI management: `quota/get` with real per-app counters, `clear_quota` (10 a month) and
//! its secret-authenticated `v2`, and `rid/get` for every error the simulator answered.

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

use crate::clock::{day_of, month_of};
use crate::error::{WxError, WxResult};
use crate::http::{answer, json_body, ok, ok_with, p, s, Params};
use crate::tokens::{with_token, CLASSIC_DAILY_QUOTA, STABLE_DAILY_QUOTA, STABLE_MINUTE_QUOTA};
use crate::world::Sim;

/// `clear_quota` calls per month.
pub const CLEAR_QUOTA_MONTHLY: u32 = 10;

/// Daily limit and per-minute rate `quota/get` reports for a path (0: no per-minute limit).
fn quota_of(path: &str) -> (u64, u64) {
    match path {
        "/cgi-bin/token" => (u64::from(CLASSIC_DAILY_QUOTA), 0),
        "/cgi-bin/stable_token" => (
            u64::from(STABLE_DAILY_QUOTA),
            u64::from(STABLE_MINUTE_QUOTA),
        ),
        "/wxa/getwxacode" | "/cgi-bin/wxaapp/createwxaqrcode" => {
            (crate::wxacode::LIFETIME_QUOTA, 0)
        }
        "/wxa/getwxacodeunlimit" => (
            u64::from(crate::wxacode::UNLIMITED_PER_MINUTE) * 1440,
            u64::from(crate::wxacode::UNLIMITED_PER_MINUTE),
        ),
        "/wxa/generatescheme" | "/wxa/generate_urllink" => (500_000, 6000),
        "/wxa/msg_sec_check" => (2_000_000, 4000),
        _ => (100_000, 0),
    }
}

/// The WeChat paths `quota/get` knows (besides every `datacube` call).
const PATHS: &[&str] = &[
    "/cgi-bin/token",
    "/cgi-bin/stable_token",
    "/sns/jscode2session",
    "/wxa/checksession",
    "/wxa/resetusersessionkey",
    "/wxa/business/getuserencryptkey",
    "/wxa/business/getuserphonenumber",
    "/wxa/getpluginopenpid",
    "/wxa/getpaidunionid",
    "/cgi-bin/clear_quota",
    "/cgi-bin/clear_quota/v2",
    "/wxa/media_check_async",
    "/wxa/getwxacode",
    "/wxa/getwxacodeunlimit",
    "/cgi-bin/wxaapp/createwxaqrcode",
    "/cgi-bin/openapi/quota/get",
    "/cgi-bin/openapi/rid/get",
];

impl Sim {
    /// `openapi/quota/get` for a known WeChat path.
    ///
    /// # Errors
    /// 76022 for `/sns/` paths, 76021 for unknown paths.
    pub fn quota(&self, appid: &str, cgi_path: &str, known: bool) -> WxResult<Value> {
        if cgi_path.starts_with("/sns/") {
            return Err(WxError::new(
                76022,
                "could not use this cgi_path, no permission",
            ));
        }
        if !known {
            return Err(WxError::new(76021, "cgi_path not found, please check"));
        }
        let mut w = self.world();
        let now = self.now_in(&w);
        let day = day_of(now);
        let app = w.app_mut(appid)?;
        let used = match cgi_path {
            "/cgi-bin/token" => app
                .counters
                .get("classic_token")
                .filter(|(d, _)| *d == day)
                .map_or(0, |(_, n)| u64::from(*n)),
            "/cgi-bin/stable_token" => app
                .counters
                .get("stable_day")
                .filter(|(d, _)| *d == day)
                .map_or(0, |(_, n)| u64::from(*n)),
            "/wxa/getwxacode" | "/cgi-bin/wxaapp/createwxaqrcode" => app.codes.qrcodes_used,
            p => app
                .openapi
                .daily_calls
                .get(p)
                .filter(|(d, _)| *d == day)
                .map_or(0, |(_, n)| *n),
        };
        let (limit, per_minute) = quota_of(cgi_path);
        Ok(json!({
            "quota": {"daily_limit": limit, "used": used, "remain": limit.saturating_sub(used)},
            "rate_limit": {"call_count": per_minute, "refresh_second": if per_minute > 0 { 60 } else { 0 }},
        }))
    }

    /// `clear_quota` / `clear_quota/v2`: resets the app's daily counters, 10 times a month.
    ///
    /// # Errors
    /// 40013 unknown app, 48006 monthly limit reached.
    pub fn clear_quota(&self, appid: &str) -> WxResult<()> {
        let mut w = self.world();
        let now = self.now_in(&w);
        let app = w.app_mut(appid)?;
        let month = month_of(now);
        if app.openapi.clear_quota.0 != month {
            app.openapi.clear_quota = (month, 0);
        }
        if app.openapi.clear_quota.1 >= CLEAR_QUOTA_MONTHLY {
            return Err(WxError::new(
                48006,
                "forbid to clear quota because of reaching the limit",
            ));
        }
        app.openapi.clear_quota.1 += 1;
        app.counters.clear();
        app.openapi.daily_calls.clear();
        Ok(())
    }
}

async fn quota_get(State(sim): State<Sim>, Query(q): Params, body: Bytes) -> Response {
    with_token(&sim, "/cgi-bin/openapi/quota/get", &q, |appid| {
        let b = json_body(&body)?;
        let cgi_path = s(&b, "cgi_path").ok_or_else(|| WxError::new(40097, "invalid args"))?;
        let known =
            PATHS.contains(&cgi_path) || cgi_path.starts_with("/datacube/getweanalysisappid");
        sim.quota(appid, cgi_path, known).map(ok_with)
    })
}

async fn rid_get(State(sim): State<Sim>, Query(q): Params, body: Bytes) -> Response {
    with_token(&sim, "/cgi-bin/openapi/rid/get", &q, |_| {
        let b = json_body(&body)?;
        let rid = s(&b, "rid").unwrap_or_default();
        if rid.split('-').count() != 3 {
            return Err(WxError::new(76002, "rid is error"));
        }
        let record = sim
            .rid(rid)
            .ok_or_else(|| WxError::new(76001, "rid not found"))?;
        Ok(ok_with(json!({"request": record})))
    })
}

async fn clear_quota(State(sim): State<Sim>, Query(q): Params, body: Bytes) -> Response {
    with_token(&sim, "/cgi-bin/clear_quota", &q, |token_appid| {
        let b = json_body(&body)?;
        let appid = s(&b, "appid").ok_or_else(|| WxError::new(41002, "appid missing"))?;
        if appid != token_appid {
            return Err(WxError::new(40013, "invalid appid"));
        }
        sim.clear_quota(appid).map(|()| ok())
    })
}

async fn clear_quota_v2(State(sim): State<Sim>, Query(q): Params) -> Response {
    let r = sim
        .check_secret(p(&q, "appid"), p(&q, "appsecret"))
        .and_then(|()| sim.clear_quota(p(&q, "appid").unwrap_or_default()))
        .map(|()| ok());
    answer(&sim, "/cgi-bin/clear_quota/v2", r)
}

/// The WeChat routes of this domain.
pub(crate) fn routes() -> Router<Sim> {
    Router::new()
        .route("/cgi-bin/openapi/quota/get", post(quota_get))
        .route("/cgi-bin/openapi/rid/get", post(rid_get))
        .route("/cgi-bin/clear_quota", post(clear_quota))
        .route("/cgi-bin/clear_quota/v2", post(clear_quota_v2))
}
