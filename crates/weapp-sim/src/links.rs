//! URL Scheme, URL Link and Short Link: generated values that the query calls resolve back to
//! their path, query, expiry and version, with the daily, per-second and permanent quotas.

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

use crate::clock::day_of;
use crate::error::{WxError, WxResult};
use crate::http::{json_body, ok_with, s, Params};
use crate::random::random_alnum;
pub use crate::state::links::LinkRecord;
use crate::tokens::with_token;
use crate::world::Sim;

/// Scheme + URL Link generations per day (shared).
pub const DAILY_LINKS: u32 = 500_000;
/// Scheme + URL Link generations per second.
pub const PER_SECOND: u32 = 100;
/// Permanent short links per app.
pub const PERMANENT_SHORT_LINKS: u64 = 100_000;
/// Visits a generated link allows (reported as `remain_visit_quota`).
pub const VISITS: u64 = 100_000;
const MAX_DAYS: i64 = 30;

const QUERY_CHARS: &str = "!#$&'()*+,/:;=?@-._~%";

/// Checks a link's `query`: ≤ 1024 characters of `[0-9A-Za-z]` and `!#$&'()*+,/:;=?@-._~%`.
///
/// # Errors
/// 40212.
pub fn check_query(query: &str) -> WxResult<()> {
    if query.chars().count() > 1024
        || !query
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || QUERY_CHARS.contains(c))
    {
        return Err(WxError::new(40212, "invalid query"));
    }
    Ok(())
}

/// Works out the expiry (Unix seconds) from `expire_type` / `expire_time` / `expire_interval`.
/// Links expire within 30 days at most; the default is 30 days.
///
/// # Errors
/// 85401 when the expiry is not between 1 minute and 30 days ahead.
pub fn expiry(body: &Value, now: i64) -> WxResult<i64> {
    let bad = || WxError::new(85401, "time limit between 1min and 30days");
    match body.get("expire_type").and_then(Value::as_i64).unwrap_or(0) {
        1 => {
            let days = body
                .get("expire_interval")
                .and_then(Value::as_i64)
                .ok_or_else(bad)?;
            if !(1..=MAX_DAYS).contains(&days) {
                return Err(bad());
            }
            Ok(now + days * 86_400)
        }
        0 => match body.get("expire_time").and_then(Value::as_i64) {
            None | Some(0) => Ok(now + MAX_DAYS * 86_400),
            Some(t) if t >= now + 60 && t <= now + MAX_DAYS * 86_400 => Ok(t),
            Some(_) => Err(bad()),
        },
        _ => Err(WxError::new(40097, "invalid args")),
    }
}

/// Builds a record from the common fields (`path`, `query`, `env_version`) of `src`.
///
/// # Errors
/// 40165 unpublished page, 40212 query, 85402 env_version.
pub fn record(
    appid: &str,
    src: &Value,
    pages: &[String],
    now: i64,
    expire_time: i64,
) -> WxResult<LinkRecord> {
    let path = src
        .get("path")
        .and_then(Value::as_str)
        .unwrap_or("")
        .trim_start_matches('/')
        .to_owned();
    if !path.is_empty() && !pages.contains(&path) {
        return Err(WxError::new(40165, "invalid weapp pagepath"));
    }
    let query = src
        .get("query")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    check_query(&query)?;
    let env_version = crate::wxacode::env_version(src, 85402)?;
    Ok(LinkRecord {
        appid: appid.into(),
        path,
        query,
        create_time: now,
        expire_time,
        env_version,
    })
}

/// A new scheme ticket / link code.
pub fn ticket() -> String {
    random_alnum(11)
}

/// The `…_info` object of a query answer.
pub fn info(r: &LinkRecord) -> Value {
    json!({"appid": r.appid, "path": r.path, "query": r.query, "create_time": r.create_time, "expire_time": r.expire_time, "env_version": r.env_version})
}

impl Sim {
    /// `generatescheme` / `generatenfcscheme` / `generate_urllink`: validates `src` (the
    /// `jump_wxa` object, or the body for URL links), stores the link, returns its ticket.
    ///
    /// # Errors
    /// 40165, 40212, 85402, 85401, 44990 (100 a second), 44993 (500,000 a day).
    pub fn make_link(&self, appid: &str, src: &Value, expiry_body: &Value) -> WxResult<String> {
        let mut w = self.world();
        let now_ms = self.now_in(&w);
        let now = now_ms / 1000;
        let expire = expiry(expiry_body, now)?;
        let app = w.app_mut(appid)?;
        let record = record(appid, src, &app.codes.pages, now, expire)?;
        if !app.take("links_second", now_ms / 1000, PER_SECOND) {
            return Err(WxError::new(44990, "reach max api second frequence limit"));
        }
        if !app.take("links_day", day_of(now_ms), DAILY_LINKS) {
            return Err(WxError::new(44993, "reach max api day frequence limit"));
        }
        let ticket = ticket();
        w.links.links.insert(ticket.clone(), record);
        Ok(ticket)
    }

    /// Resolves a ticket made by this app.
    ///
    /// # Errors
    /// 85403 unknown (or another app's, or expired) ticket.
    pub fn query_link(&self, appid: &str, ticket: &str) -> WxResult<Value> {
        let w = self.world();
        let now = self.now_in(&w) / 1000;
        match w.links.links.get(ticket) {
            Some(r) if r.appid == appid && (r.expire_time == 0 || r.expire_time > now) => {
                Ok(info(r))
            }
            _ => Err(WxError::new(85403, "not found")),
        }
    }

    /// `genwxashortlink`.
    ///
    /// # Errors
    /// 40066 invalid page_url — empty, over 1024, a leading `/` or a page the published app does
    /// not have (production answers `invalid url` for all of them); 85400 permanent quota. A title
    /// over 20 characters is cut short with "...", as the documentation says, not refused.
    pub fn short_link(&self, appid: &str, body: &Value) -> WxResult<String> {
        let page_url = body.get("page_url").and_then(Value::as_str).unwrap_or("");
        if page_url.is_empty() || page_url.chars().count() > 1024 {
            return Err(WxError::new(40066, "invalid url"));
        }
        let (page, query) = page_url.split_once('?').unwrap_or((page_url, ""));
        check_query(query)?;
        let permanent = body
            .get("is_permanent")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let mut w = self.world();
        let app = w.app_mut(appid)?;
        if page.starts_with('/') || !app.codes.pages.iter().any(|p| p == page) {
            return Err(WxError::new(40066, "invalid url"));
        }
        if permanent {
            let made = w
                .links
                .permanent_short_links
                .entry(appid.to_owned())
                .or_default();
            if *made >= PERMANENT_SHORT_LINKS {
                return Err(WxError::new(85400, "reach max long time quota limit"));
            }
            *made += 1;
        }
        Ok(format!("#小程序://{appid}/{}", ticket()))
    }
}

async fn generatescheme(State(sim): State<Sim>, Query(q): Params, body: Bytes) -> Response {
    with_token(&sim, "/wxa/generatescheme", &q, |appid| {
        let b = json_body(&body)?;
        let jump = b.get("jump_wxa").cloned().unwrap_or_else(|| json!({}));
        let t = sim.make_link(appid, &jump, &b)?;
        Ok(ok_with(
            json!({"openlink": format!("weixin://dl/business/?t={t}")}),
        ))
    })
}

async fn generatenfcscheme(State(sim): State<Sim>, Query(q): Params, body: Bytes) -> Response {
    with_token(&sim, "/wxa/generatenfcscheme", &q, |appid| {
        let b = json_body(&body)?;
        s(&b, "model_id")
            .filter(|m| !m.is_empty())
            .ok_or_else(|| WxError::new(40097, "invalid args"))?;
        let jump = b.get("jump_wxa").cloned().unwrap_or_else(|| json!({}));
        let t = sim.make_link(appid, &jump, &json!({}))?;
        Ok(ok_with(
            json!({"openlink": format!("weixin://dl/business/?t={t}")}),
        ))
    })
}

async fn queryscheme(State(sim): State<Sim>, Query(q): Params, body: Bytes) -> Response {
    with_token(&sim, "/wxa/queryscheme", &q, |appid| {
        let b = json_body(&body)?;
        let scheme = s(&b, "scheme").unwrap_or_default();
        let ticket = scheme.split("t=").nth(1).unwrap_or(scheme);
        let info = sim.query_link(appid, ticket)?;
        Ok(ok_with(
            json!({"scheme_info": info, "quota_info": {"remain_visit_quota": VISITS}}),
        ))
    })
}

async fn generate_urllink(State(sim): State<Sim>, Query(q): Params, body: Bytes) -> Response {
    with_token(&sim, "/wxa/generate_urllink", &q, |appid| {
        let b = json_body(&body)?;
        let t = sim.make_link(appid, &b, &b)?;
        Ok(ok_with(
            json!({"url_link": format!("https://wxaurl.cn/{t}")}),
        ))
    })
}

async fn query_urllink(State(sim): State<Sim>, Query(q): Params, body: Bytes) -> Response {
    with_token(&sim, "/wxa/query_urllink", &q, |appid| {
        let b = json_body(&body)?;
        let link = s(&b, "url_link").unwrap_or_default();
        let ticket = link.rsplit('/').next().unwrap_or(link);
        let info = sim.query_link(appid, ticket)?;
        Ok(ok_with(
            json!({"url_link_info": info, "quota_info": {"remain_visit_quota": VISITS}}),
        ))
    })
}

async fn genwxashortlink(State(sim): State<Sim>, Query(q): Params, body: Bytes) -> Response {
    with_token(&sim, "/wxa/genwxashortlink", &q, |appid| {
        let b = json_body(&body)?;
        Ok(ok_with(json!({"link": sim.short_link(appid, &b)?})))
    })
}

/// The WeChat routes of this domain.
pub(crate) fn routes() -> Router<Sim> {
    Router::new()
        .route("/wxa/generatescheme", post(generatescheme))
        .route("/wxa/generatenfcscheme", post(generatenfcscheme))
        .route("/wxa/queryscheme", post(queryscheme))
        .route("/wxa/generate_urllink", post(generate_urllink))
        .route("/wxa/query_urllink", post(query_urllink))
        .route("/wxa/genwxashortlink", post(genwxashortlink))
}
