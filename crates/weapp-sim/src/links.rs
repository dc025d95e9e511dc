//! URL Scheme, URL Link and Short Link: generated values that the query calls resolve back to
//! their path, query, expiry and version.

use serde::Serialize;
use serde_json::{json, Value};

use crate::state::{random_alnum, WxError, WxResult};

/// Scheme + URL Link generations per day (shared).
pub const DAILY_LINKS: u32 = 500_000;
/// Scheme + URL Link generations per second.
pub const PER_SECOND: u32 = 100;
/// Permanent short links per app.
pub const PERMANENT_SHORT_LINKS: u64 = 100_000;
/// Visits a generated link allows (reported as `remain_visit_quota`).
pub const VISITS: u64 = 100_000;
const MAX_DAYS: i64 = 30;

/// A generated scheme or link.
#[derive(Debug, Clone, Serialize)]
pub struct LinkRecord {
    /// Owner.
    pub appid: String,
    /// Page (empty: home).
    pub path: String,
    /// Query.
    pub query: String,
    /// Unix seconds.
    pub create_time: i64,
    /// Unix seconds (0: never).
    pub expire_time: i64,
    /// release / trial / develop.
    pub env_version: String,
}

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
        _ => Err(WxError::new(40097, "invalid args: expire_type")),
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
