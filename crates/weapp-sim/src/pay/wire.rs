//! APIv3's wire rules: checking a merchant's `Authorization` (the five-line message over the
//! exact bytes sent, the merchant's serial, a ±5-minute clock; `401 SIGN_ERROR` with
//! production's `detail` otherwise), signing every 2xx answer with the platform key the
//! merchant's mode and the request's `Wechatpay-Serial` call for, and the unsigned error
//! answers.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::keys;
use super::merchants::{response_signer, Signer};
use crate::error::{PayError, PayResult};
use crate::random::{random_alnum, random_hex};
use crate::world::Sim;

/// How far a request's timestamp may be from the simulator's clock (production: 5 minutes).
pub const CLOCK_SKEW_SECS: i64 = 300;

/// The authentication scheme in `Authorization`.
pub const AUTH_SCHEME: &str = "WECHATPAY2-SHA256-RSA2048";

/// A request that passed the signature check.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    /// The signing merchant.
    pub(crate) mchid: String,
    /// The key that will sign the answer.
    pub(crate) signer: Signer,
}

fn format_error(issue: &str) -> PayError {
    PayError::new(
        401,
        "SIGN_ERROR",
        "Http头Authorization值格式错误，请参考《微信支付商户REST API签名规则》",
    )
    .with_detail(
        json!({"detail": {"issue": issue}, "field": "authorization", "location": "header"}),
    )
}

/// The items of `Authorization: WECHATPAY2-SHA256-RSA2048 k="v",…` (any order).
fn parse_authorization(value: &str) -> PayResult<std::collections::HashMap<String, String>> {
    let rest = value
        .trim()
        .strip_prefix(AUTH_SCHEME)
        .filter(|r| r.starts_with(' '))
        .ok_or_else(|| format_error("unknown authentication scheme"))?;
    let mut items = std::collections::HashMap::new();
    for part in rest.split(',') {
        let Some((k, v)) = part.trim().split_once('=') else {
            return Err(format_error("malformed item"));
        };
        let v = v
            .trim()
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .ok_or_else(|| format_error("values must be quoted"))?;
        items.insert(k.trim().to_owned(), v.to_owned());
    }
    for k in ["mchid", "nonce_str", "timestamp", "serial_no", "signature"] {
        if items.get(k).is_none_or(String::is_empty) {
            return Err(format_error(&format!("{k} missing")));
        }
    }
    Ok(items)
}

/// Checks a merchant's request signature. `url` is the path and query exactly as received.
///
/// # Errors
/// 401 `SIGN_ERROR` (format, serial, stale timestamp, signature), 400 `MCH_NOT_EXISTS`, and
/// 400 `PARAM_ERROR` for a `Wechatpay-Serial` the merchant cannot be answered under.
pub(crate) fn authenticate(
    sim: &Sim,
    method: &str,
    url: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> PayResult<Caller> {
    let auth = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| format_error("Authorization missing"))?;
    let items = parse_authorization(auth)?;
    let w = sim.world();
    let now = sim.now_in(&w);
    let mchid = &items["mchid"];
    let m = w
        .pay
        .merchants
        .get(mchid)
        .ok_or_else(|| PayError::new(400, "MCH_NOT_EXISTS", "商户号不存在"))?;
    if items["serial_no"] != m.serial_no {
        return Err(PayError::new(401, "SIGN_ERROR", "商户证书序列号有误。请使用签名私钥匹配的证书序列号")
            .with_detail(json!({"detail": {"issue": "serial_no not match"}, "field": "serial_no", "location": "authorization"})));
    }
    let ts: i64 = items["timestamp"]
        .parse()
        .map_err(|_| format_error("timestamp is not a number"))?;
    if (now / 1000 - ts).abs() > CLOCK_SKEW_SECS {
        return Err(PayError::new(401, "SIGN_ERROR", "请求中的时间戳与系统时间相差超过5分钟，请检查系统时间")
            .with_detail(json!({"detail": {"issue": "timestamp expired"}, "field": "timestamp", "location": "authorization"})));
    }
    let body_text = String::from_utf8_lossy(body);
    let message = format!(
        "{method}\n{url}\n{ts}\n{}\n{body_text}\n",
        items["nonce_str"]
    );
    if !keys::verify(&m.public_key, message.as_bytes(), &items["signature"]) {
        // Production shows the message it built, cut after the body's first 8 characters.
        let head: String = body_text.chars().take(8).collect();
        let truncated = format!("{method}\n{url}\n{ts}\n{}\n{head}\n", items["nonce_str"]);
        return Err(
            PayError::new(401, "SIGN_ERROR", "签名错误，请检查后再试").with_detail(json!({
                "detail": {"issue": "sign not match"},
                "field": "signature",
                "location": "authorization",
                "sign_information": {
                    "method": method,
                    "sign_message_length": message.len(),
                    "truncated_sign_message": truncated,
                    "url": url.split('?').next().unwrap_or(url),
                },
            })),
        );
    }
    let requested = headers
        .get("wechatpay-serial")
        .and_then(|v| v.to_str().ok());
    let signer = response_signer(m, requested, now)?;
    Ok(Caller {
        mchid: mchid.clone(),
        signer,
    })
}

fn request_id() -> String {
    format!("{}-0", random_hex(22).to_ascii_uppercase())
}

/// An error answer: the status, `{"code","message","detail"?}`, a `Request-ID`, no signature
/// (production signs only 2xx answers).
pub(crate) fn error_response(err: &PayError) -> Response {
    let status = StatusCode::from_u16(err.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (status, err.body().to_string()).into_response();
    let h = resp.headers_mut();
    h.insert(
        "content-type",
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&request_id()) {
        h.insert("request-id", v);
    }
    resp
}

/// A signed answer: `body` (`None`: 204 with no body) and the `Wechatpay-*` headers over
/// `timestamp\nnonce\nbody\n`.
pub(crate) fn signed(sim: &Sim, signer: &Signer, body: Option<Value>) -> Response {
    let text = body.as_ref().map(Value::to_string).unwrap_or_default();
    let ts = sim.now().to_string();
    let nonce = random_alnum(32);
    let signature = keys::sign(&signer.1, format!("{ts}\n{nonce}\n{text}\n").as_bytes());
    let status = if body.is_some() {
        StatusCode::OK
    } else {
        StatusCode::NO_CONTENT
    };
    let mut resp = Response::new(Body::from(text));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    if body.is_some() {
        h.insert(
            "content-type",
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
    }
    let pairs = [
        ("request-id", request_id()),
        ("wechatpay-nonce", nonce),
        ("wechatpay-serial", signer.0.clone()),
        ("wechatpay-signature", signature),
        ("wechatpay-signature-type", AUTH_SCHEME.to_owned()),
        ("wechatpay-timestamp", ts),
    ];
    for (k, v) in pairs {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(k, v);
        }
    }
    resp
}

/// The JSON body of a request, or the `PARAM_ERROR` production answers.
pub(crate) fn json_body(body: &[u8]) -> PayResult<Value> {
    match serde_json::from_slice::<Value>(body) {
        Ok(v @ Value::Object(_)) => Ok(v),
        _ => Err(PayError::new(
            400,
            "PARAM_ERROR",
            "输入源“/body”映射到值字段失败，请求体不是合法的JSON对象",
        )),
    }
}

/// A fault's HTTP status as a `/v3` answer: production's code for that status.
pub fn fault_response(status: u16) -> Response {
    let (code, message) = match status {
        400 => ("PARAM_ERROR", "参数错误"),
        401 => ("SIGN_ERROR", "签名错误"),
        403 => ("NO_AUTH", "商户无权限"),
        404 => ("RESOURCE_NOT_EXISTS", "资源不存在"),
        429 => ("FREQUENCY_LIMITED", "频率超限，请降低请求频率"),
        502 | 503 => ("SERVICE_UNAVAILABLE", "服务不可用，请稍后重试"),
        _ => ("SYSTEM_ERROR", "系统繁忙，请稍后重试"),
    };
    error_response(&PayError::new(status, code, message))
}
