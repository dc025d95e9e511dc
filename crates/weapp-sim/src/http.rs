//! What every domain's routes share: WeChat's answer shapes (HTTP 200 JSON, `errmsg` ending
//! in a rid), parameter helpers, and the control API's error shape. (The token check every
//! API makes first is `crate::tokens::with_token`.)

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::Query;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{errmsg, WxError, WxResult};
use crate::world::Sim;

/// Query parameters as WeChat reads them.
pub(crate) type Params = Query<HashMap<String, String>>;

/// Every WeChat answer is HTTP 200 JSON.
pub(crate) fn wx_json(body: Value) -> Response {
    let mut resp = (StatusCode::OK, body.to_string()).into_response();
    resp.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; encoding=utf-8"),
    );
    resp
}

/// A WeChat error: `{errcode, errmsg}` with a rid that `rid/get` looks up.
pub(crate) fn wx_error(sim: &Sim, path: &str, err: &WxError) -> Response {
    let rid = sim.record_rid(path, err.code, &err.msg);
    wx_json(json!({"errcode": err.code, "errmsg": errmsg(path, &err.msg, &rid)}))
}

/// `{"errcode":0,"errmsg":"ok", ...fields}`.
pub(crate) fn ok_with(fields: Value) -> Value {
    let mut out = json!({"errcode": 0, "errmsg": "ok"});
    if let (Some(o), Value::Object(f)) = (out.as_object_mut(), fields) {
        o.extend(f);
    }
    out
}

/// `{"errcode":0,"errmsg":"ok"}`.
pub(crate) fn ok() -> Value {
    json!({"errcode": 0, "errmsg": "ok"})
}

pub(crate) fn answer(sim: &Sim, path: &str, result: WxResult<Value>) -> Response {
    match result {
        Ok(v) => wx_json(v),
        Err(e) => wx_error(sim, path, &e),
    }
}

pub(crate) fn p<'a>(q: &'a HashMap<String, String>, k: &str) -> Option<&'a str> {
    q.get(k).map(String::as_str)
}

pub(crate) fn json_body(body: &Bytes) -> WxResult<Value> {
    if body.is_empty() {
        return Err(WxError::new(44002, "empty post data"));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(v @ Value::Object(_)) => Ok(v),
        _ => Err(WxError::new(47001, "data format error")),
    }
}

pub(crate) fn s<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str)
}

// ----------------------------------------------------------------------------- control API

/// A control-API error: `4xx` with `{"error": "<what is wrong>"}`.
pub(crate) fn control_error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": message.into()}))).into_response()
}

/// Checks an openid or unionid given to the control API: 1–64 letters, digits, `_` or `-` (what
/// WeChat's look like), so it can be put in URLs and request templates as it is.
pub(crate) fn check_user_id(what: &str, id: Option<&str>) -> Result<(), Box<Response>> {
    match id {
        Some(v)
            if v.is_empty()
                || v.len() > 64
                || !v
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') =>
        {
            Err(Box::new(control_error(
                StatusCode::BAD_REQUEST,
                format!("{what} must be 1-64 letters, digits, _ or -"),
            )))
        }
        _ => Ok(()),
    }
}

/// A WeChat refusal of a control call: unknown app or user → 404, anything else → 400.
pub(crate) fn from_wx(e: WxError) -> Response {
    let status = match e.code {
        40013 | 40003 => StatusCode::NOT_FOUND,
        _ => StatusCode::BAD_REQUEST,
    };
    control_error(status, format!("{} ({})", e.msg, e.code))
}

/// Parses a JSON body (an empty body counts as `{}`); the error names the problem.
pub(crate) fn body<T: for<'de> Deserialize<'de>>(raw: &Bytes) -> Result<T, String> {
    let raw = if raw.is_empty() { &b"{}"[..] } else { raw };
    serde_json::from_slice(raw).map_err(|e| format!("invalid JSON body: {e}"))
}

/// Unwraps a parsed body or answers 400 with the parse error.
macro_rules! try_resp {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(message) => {
                return $crate::http::control_error(axum::http::StatusCode::BAD_REQUEST, message)
            }
        }
    };
}
pub(crate) use try_resp;

/// The appid and openid query parameters of a control call, or the 400 to answer.
pub(crate) fn app_and_user(q: &HashMap<String, String>) -> Result<(&str, &str), Box<Response>> {
    match (q.get("appid"), q.get("openid")) {
        (Some(a), Some(o)) => Ok((a, o)),
        _ => Err(Box::new(control_error(
            StatusCode::BAD_REQUEST,
            "appid and openid query parameters are required",
        ))),
    }
}
