//! The control API under `/_sim/`: what the WeChat client app and the WeChat console would do,
//! plus the clock, faults, statistics and state inspection.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::state::{Fault, Sim, WxError};

fn control_error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": message.into()}))).into_response()
}

fn from_wx(e: WxError) -> Response {
    let status = match e.code {
        40013 | 40003 => StatusCode::NOT_FOUND,
        _ => StatusCode::BAD_REQUEST,
    };
    control_error(status, format!("{} ({})", e.msg, e.code))
}

/// Parses a JSON body (an empty body counts as `{}`); the error names the problem.
fn body<T: for<'de> Deserialize<'de>>(raw: &axum::body::Bytes) -> Result<T, String> {
    let raw = if raw.is_empty() { &b"{}"[..] } else { raw };
    serde_json::from_slice(raw).map_err(|e| format!("invalid JSON body: {e}"))
}

/// Unwraps a parsed body or answers 400 with the parse error.
macro_rules! try_resp {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(message) => return control_error(StatusCode::BAD_REQUEST, message),
        }
    };
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AppReq {
    appid: Option<String>,
    secret: Option<String>,
    #[serde(default)]
    unionid: bool,
    /// Published pages (default `["pages/index/index"]`), for `check_path`.
    pages: Option<Vec<String>>,
}

async fn apps(State(sim): State<Sim>, raw: axum::body::Bytes) -> Response {
    let req: AppReq = try_resp!(body(&raw));
    if let Some(a) = &req.appid {
        if a.is_empty() || !a.chars().all(|c| c.is_ascii_alphanumeric()) {
            return control_error(
                StatusCode::BAD_REQUEST,
                "appid must be non-empty ASCII letters and digits",
            );
        }
    }
    let (appid, secret) = sim.add_app(req.appid, req.secret, req.unionid);
    if let Some(pages) = req.pages {
        if let Err(e) = sim.set_pages(&appid, pages) {
            return from_wx(e);
        }
    }
    Json(json!({"appid": appid, "secret": secret})).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginReq {
    appid: String,
    openid: Option<String>,
    unionid: Option<String>,
    #[serde(default)]
    blocked: bool,
}

async fn login(State(sim): State<Sim>, raw: axum::body::Bytes) -> Response {
    let req: LoginReq = try_resp!(body(&raw));
    match sim.login(&req.appid, req.openid, req.unionid, req.blocked) {
        Ok((code, openid)) => Json(json!({"code": code, "openid": openid})).into_response(),
        Err(e) => from_wx(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PhoneReq {
    appid: String,
    openid: String,
    phone: Option<String>,
}

async fn phone_code(State(sim): State<Sim>, raw: axum::body::Bytes) -> Response {
    let req: PhoneReq = try_resp!(body(&raw));
    match sim.phone_code(&req.appid, &req.openid, req.phone) {
        Ok(code) => Json(json!({"code": code})).into_response(),
        Err(e) => from_wx(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserReq {
    appid: String,
    openid: String,
}

async fn plugin_code(State(sim): State<Sim>, raw: axum::body::Bytes) -> Response {
    let req: UserReq = try_resp!(body(&raw));
    match sim.plugin_code(&req.appid, &req.openid) {
        Ok(code) => Json(json!({"code": code})).into_response(),
        Err(e) => from_wx(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PaymentReq {
    appid: String,
    openid: String,
    transaction_id: Option<String>,
    mch_id: Option<String>,
    out_trade_no: Option<String>,
}

async fn payment(State(sim): State<Sim>, raw: axum::body::Bytes) -> Response {
    let req: PaymentReq = try_resp!(body(&raw));
    if req.transaction_id.is_none() && (req.mch_id.is_none() || req.out_trade_no.is_none()) {
        return control_error(
            StatusCode::BAD_REQUEST,
            "give transaction_id, or mch_id and out_trade_no",
        );
    }
    match sim.record_payment(
        &req.appid,
        &req.openid,
        req.transaction_id,
        req.mch_id,
        req.out_trade_no,
    ) {
        Ok(()) => Json(json!({})).into_response(),
        Err(e) => from_wx(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OpenDataReq {
    appid: String,
    openid: String,
    data: Value,
}

async fn open_data(State(sim): State<Sim>, raw: axum::body::Bytes) -> Response {
    let req: OpenDataReq = try_resp!(body(&raw));
    match sim.open_data(&req.appid, &req.openid, req.data) {
        Ok((data, iv)) => Json(json!({"encryptedData": data, "iv": iv})).into_response(),
        Err(e) => from_wx(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClockReq {
    #[serde(default)]
    advance_secs: i64,
}

async fn clock(State(sim): State<Sim>, raw: axum::body::Bytes) -> Response {
    let req: ClockReq = try_resp!(body(&raw));
    if req.advance_secs < 0 {
        return control_error(
            StatusCode::BAD_REQUEST,
            "advance_secs must be >= 0: the clock never goes back",
        );
    }
    Json(json!({"now": sim.advance(req.advance_secs)})).into_response()
}

async fn clock_get(State(sim): State<Sim>) -> Response {
    Json(json!({"now": sim.now()})).into_response()
}

async fn faults_add(State(sim): State<Sim>, raw: axum::body::Bytes) -> Response {
    let fault: Fault = try_resp!(body(&raw));
    if !fault.path.starts_with('/') || fault.path.starts_with("/_sim") {
        return control_error(
            StatusCode::BAD_REQUEST,
            "path must be a WeChat API path such as /cgi-bin/token",
        );
    }
    if fault.rate.is_some_and(|r| !(0.0..=1.0).contains(&r)) {
        return control_error(StatusCode::BAD_REQUEST, "rate must be within 0..=1");
    }
    if fault.http_status.is_some_and(|s| !(100..=599).contains(&s)) {
        return control_error(
            StatusCode::BAD_REQUEST,
            "http_status must be a valid HTTP status",
        );
    }
    sim.add_fault(fault);
    Json(json!({})).into_response()
}

async fn faults_clear(State(sim): State<Sim>) -> Response {
    sim.clear_faults();
    Json(json!({})).into_response()
}

async fn stats(State(sim): State<Sim>) -> Response {
    Json(sim.stats()).into_response()
}

async fn reset(State(sim): State<Sim>) -> Response {
    sim.reset();
    Json(json!({})).into_response()
}

async fn users(State(sim): State<Sim>, Query(q): Query<HashMap<String, String>>) -> Response {
    let (Some(appid), Some(openid)) = (q.get("appid"), q.get("openid")) else {
        return control_error(
            StatusCode::BAD_REQUEST,
            "appid and openid query parameters are required",
        );
    };
    match sim.user(appid, openid) {
        Some(u) => Json(json!({"openid": u.openid, "unionid": u.unionid, "session_key": u.session_key, "phone": u.phone})).into_response(),
        None => control_error(StatusCode::NOT_FOUND, "no such user"),
    }
}

async fn push_config(
    State(sim): State<Sim>,
    axum::extract::Path(appid): axum::extract::Path<String>,
    raw: axum::body::Bytes,
) -> Response {
    let target: crate::push::PushTarget = try_resp!(body(&raw));
    match sim.set_push_target(&appid, target) {
        Ok(()) => Json(json!({})).into_response(),
        Err(e) => from_wx(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PushReq {
    appid: String,
    message: serde_json::Map<String, Value>,
}

async fn push(State(sim): State<Sim>, raw: axum::body::Bytes) -> Response {
    let req: PushReq = try_resp!(body(&raw));
    match sim.push(&req.appid, req.message).await {
        Ok(d) => Json(d).into_response(),
        Err(e) => from_wx(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserMessageReq {
    appid: String,
    openid: String,
    kind: String,
    content: Option<String>,
}

async fn user_message(State(sim): State<Sim>, raw: axum::body::Bytes) -> Response {
    let req: UserMessageReq = try_resp!(body(&raw));
    match sim
        .user_message(&req.appid, &req.openid, &req.kind, req.content)
        .await
    {
        Ok(d) => Json(json!({"pushed": d})).into_response(),
        Err(e) => from_wx(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantReq {
    appid: String,
    openid: String,
    template_id: String,
    count: Option<u32>,
}

async fn subscribe_grant(State(sim): State<Sim>, raw: axum::body::Bytes) -> Response {
    let req: GrantReq = try_resp!(body(&raw));
    let count = req.count.unwrap_or(1);
    if count == 0 {
        return control_error(StatusCode::BAD_REQUEST, "count must be at least 1");
    }
    match sim.subscribe_grant(&req.appid, &req.openid, &req.template_id, count).await {
        Ok(d) => Json(json!({"pushed": d, "remaining": sim.grants(&req.appid, &req.openid, &req.template_id)})).into_response(),
        Err(e) => from_wx(e),
    }
}

async fn messages(State(sim): State<Sim>, Query(q): Query<HashMap<String, String>>) -> Response {
    let (Some(appid), Some(openid)) = (q.get("appid"), q.get("openid")) else {
        return control_error(
            StatusCode::BAD_REQUEST,
            "appid and openid query parameters are required",
        );
    };
    Json(json!({"messages": sim.messages(appid, openid)})).into_response()
}

/// Routes under `/_sim/`.
pub(crate) fn router() -> Router<Sim> {
    Router::new()
        .route("/_sim/apps", post(apps))
        .route("/_sim/login", post(login))
        .route("/_sim/phone-code", post(phone_code))
        .route("/_sim/plugin-code", post(plugin_code))
        .route("/_sim/payment", post(payment))
        .route("/_sim/open-data", post(open_data))
        .route("/_sim/clock", post(clock).get(clock_get))
        .route("/_sim/faults", post(faults_add).delete(faults_clear))
        .route("/_sim/stats", get(stats))
        .route("/_sim/reset", post(reset))
        .route("/_sim/users", get(users))
        .route("/_sim/apps/{appid}/push-config", post(push_config))
        .route("/_sim/push", post(push))
        .route("/_sim/user-message", post(user_message))
        .route("/_sim/subscribe-grant", post(subscribe_grant))
        .route("/_sim/messages", get(messages))
}
