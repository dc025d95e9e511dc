//! The console (`/_sim/console`): a page served from the binary (no CDN, works offline, Chinese
//! and English) with a virtual phone that drives the developer's backend the way a mini program
//! would, and live views of tokens, traffic, pushes, faults and the clock.
//!
//! The phone's backend requests are made here, by the simulator (so the page needs no CORS):
//! each app has a backend URL and a request template per action — `login` (after `wx.login`),
//! `phone` (after `getPhoneNumber`) and `pay` (placing an order before `wx.requestPayment`) —
//! in which `{{code}}`, `{{appid}}`, `{{openid}}` and `{{storage.KEY}}` are replaced. A JSON
//! object the backend answers is kept in the user's storage (what `wx.setStorageSync` would
//! keep); for `pay`, the five `wx.requestPayment` parameters are read from the answer.

use std::collections::HashMap;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::error::{WxError, WxResult};
use crate::http::{app_and_user, body, control_error, from_wx, try_resp};
use crate::journal::Event;
pub use crate::state::console::{Backend, RequestTemplate};
use crate::world::Sim;

const INDEX: &str = include_str!("../console/index.html");
const SCRIPT: &str = include_str!("../console/app.js");
/// The console's stylesheet — also the base of weapp-server's admin console, so both look alike.
pub const STYLE: &str = include_str!("../console/app.css");

/// How much of a backend's answer the phone reads.
const BACKEND_ANSWER_LIMIT: usize = 1024 * 1024;

/// The five `wx.requestPayment` parameters.
const PAYMENT_PARAMS: [&str; 5] = ["timeStamp", "nonceStr", "package", "signType", "paySign"];

/// The `wx.requestPayment` parameters in a backend's answer to the `pay` request: the first of
/// the top level, `request_payment` and `payment` that is an object holding any of the five,
/// as `{from, params}` (`params` has those of the five it holds). `None` when none does.
fn payment_params(answer: &Value) -> Option<Value> {
    [
        ("top level", Some(answer)),
        ("request_payment", answer.get("request_payment")),
        ("payment", answer.get("payment")),
    ]
    .into_iter()
    .find_map(|(from, v)| {
        let map = v?.as_object()?;
        let params: Map<String, Value> = PAYMENT_PARAMS
            .iter()
            .filter_map(|k| map.get(*k).map(|v| ((*k).to_owned(), v.clone())))
            .collect();
        (!params.is_empty()).then(|| json!({"from": from, "params": params}))
    })
}

/// `value` escaped for the inside of a JSON string.
fn json_escaped(value: &str) -> String {
    let quoted = Value::String(value.to_owned()).to_string();
    quoted[1..quoted.len() - 1].to_owned()
}

/// Replaces `{{code}}`, `{{appid}}`, `{{openid}}` and `{{storage.KEY}}` in `template`; with
/// `json`, values are escaped for a JSON string (a value cannot add fields to the body).
fn fill(
    template: &str,
    vars: &HashMap<&str, String>,
    storage: &Map<String, Value>,
    json: bool,
) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        let name = rest[start + 2..start + end].trim();
        let value = match name.strip_prefix("storage.") {
            Some(key) => match storage.get(key) {
                Some(Value::String(s)) => s.clone(),
                Some(v) => v.to_string(),
                None => String::new(),
            },
            None => vars.get(name).cloned().unwrap_or_default(),
        };
        if json {
            out.push_str(&json_escaped(&value));
        } else {
            out.push_str(&value);
        }
        rest = &rest[start + end + 2..];
    }
    out.push_str(rest);
    out
}

impl Sim {
    /// Sets where an app's backend is and what the phone sends it.
    ///
    /// # Errors
    /// 40013 unknown app, 40097 a URL that is not http(s) or a replay window over a day.
    pub fn set_backend(&self, appid: &str, backend: Backend) -> WxResult<()> {
        if !backend.url.starts_with("http://") && !backend.url.starts_with("https://") {
            return Err(WxError::new(40097, "invalid args: url must be http(s)"));
        }
        if backend.replay_window_secs.is_some_and(|s| s > 86_400) {
            return Err(WxError::new(
                40097,
                "invalid args: replay_window_secs must be at most 86400",
            ));
        }
        let mut w = self.world();
        w.app_mut(appid)?;
        w.console.backends.insert(appid.to_owned(), backend);
        Ok(())
    }

    /// An app's backend settings.
    pub fn backend(&self, appid: &str) -> Option<Backend> {
        self.world().console.backends.get(appid).cloned()
    }

    /// What the phone keeps for a user (what the backend answered).
    pub fn storage(&self, appid: &str, openid: &str) -> Map<String, Value> {
        self.world()
            .console
            .storage
            .get(&(appid.to_owned(), openid.to_owned()))
            .cloned()
            .unwrap_or_default()
    }

    /// Sends the phone's `action` request (`login`, `phone` or `pay`) with `code` to the app's
    /// backend, like `wx.request`; keeps a JSON object it answers in the user's storage.
    /// Returns `{request, response}`, and for `pay` also `payment`: the `wx.requestPayment`
    /// parameters found in a 2xx answer, `{from, params}`, or `null`.
    ///
    /// # Errors
    /// 40013 unknown app, 40003 unknown user, 47001 no backend set or an unknown action.
    pub async fn backend_request(
        &self,
        appid: &str,
        openid: &str,
        action: &str,
        code: &str,
    ) -> WxResult<Value> {
        let (backend, storage) = {
            let mut w = self.world();
            w.app_with_user(appid, openid)?;
            let backend = w.console.backends.get(appid).cloned().ok_or_else(|| {
                WxError::new(
                    47001,
                    "no backend set for this app (PUT /_sim/apps/{appid}/backend)",
                )
            })?;
            let storage = w
                .console
                .storage
                .get(&(appid.to_owned(), openid.to_owned()))
                .cloned()
                .unwrap_or_default();
            (backend, storage)
        };
        let template = match action {
            "login" => &backend.login,
            "phone" => &backend.phone,
            "pay" => backend.pay.as_ref().ok_or_else(|| {
                WxError::new(
                    47001,
                    "no pay request set for this app's backend (PUT /_sim/apps/{appid}/backend {pay})",
                )
            })?,
            other => {
                return Err(WxError::new(
                    47001,
                    format!("unknown action {other}: login, phone or pay"),
                ))
            }
        };
        let vars: HashMap<&str, String> = [
            ("code", code.to_owned()),
            ("appid", appid.to_owned()),
            ("openid", openid.to_owned()),
        ]
        .into_iter()
        .collect();
        let url = format!(
            "{}{}",
            backend.url,
            fill(&template.path, &vars, &storage, false)
        );
        // A body that is a JSON document gets its values escaped as JSON strings.
        let json_template = matches!(template.body.trim_start().chars().next(), Some('{' | '['));
        let body = fill(&template.body, &vars, &storage, json_template);
        let headers: Map<String, Value> = template
            .headers
            .iter()
            .map(|(k, v)| {
                let v = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
                (k.clone(), Value::String(fill(&v, &vars, &storage, false)))
            })
            .collect();
        let method = reqwest::Method::from_bytes(template.method.to_ascii_uppercase().as_bytes())
            .map_err(|_| WxError::new(47001, "invalid method"))?;
        let mut req = self.backend_http().request(method, &url);
        for (k, v) in &headers {
            req = req.header(k.as_str(), v.as_str().unwrap_or_default());
        }
        let json_body = serde_json::from_str::<Value>(&body).ok();
        if !body.is_empty() {
            req = match &json_body {
                Some(v) => req.json(v),
                None => req.body(body.clone()),
            };
        }
        let started = Instant::now();
        let response = match req.send().await {
            Ok(mut r) => {
                let status = r.status().as_u16();
                let mut raw = Vec::new();
                let mut cut = false;
                while let Ok(Some(chunk)) = r.chunk().await {
                    if raw.len() + chunk.len() > BACKEND_ANSWER_LIMIT {
                        cut = true;
                        break;
                    }
                    raw.extend_from_slice(&chunk);
                }
                let text = String::from_utf8_lossy(&raw).into_owned();
                let parsed = (!cut)
                    .then(|| serde_json::from_str::<Value>(&text).ok())
                    .flatten();
                if let (true, Some(Value::Object(map))) = ((200..300).contains(&status), &parsed) {
                    let mut w = self.world();
                    let kept = w
                        .console
                        .storage
                        .entry((appid.to_owned(), openid.to_owned()))
                        .or_default();
                    for (k, v) in map {
                        kept.insert(k.clone(), v.clone());
                    }
                }
                let body = match parsed {
                    Some(v) => v,
                    None if cut => {
                        Value::String(format!("[over {BACKEND_ANSWER_LIMIT} bytes: not read]"))
                    }
                    None => Value::String(text),
                };
                json!({"status": status, "body": body})
            }
            Err(e) => json!({"error": e.without_url().to_string()}),
        };
        let request_body = json_body.unwrap_or(Value::String(body));
        let mut exchange = json!({
            "request": {"method": template.method, "url": url, "headers": headers, "body": request_body},
            "response": response,
        });
        if action == "pay" {
            let ok = exchange["response"]["status"]
                .as_u64()
                .is_some_and(|s| (200..300).contains(&s));
            exchange["payment"] = ok
                .then(|| payment_params(&exchange["response"]["body"]))
                .flatten()
                .unwrap_or(Value::Null);
        }
        // The journal keeps it with secrets masked: query parameters, headers, JSON fields and
        // form fields named like secrets.
        let journaled_request = json!({
            "method": template.method,
            "url": crate::journal::masked_url(&url),
            "headers": headers,
            "body": match &exchange["request"]["body"] {
                Value::String(b) => Value::String(crate::journal::masked_form(b)),
                other => other.clone(),
            },
        });
        let mut event = Event::new("backend")
            .appid(appid)
            .openid(openid)
            .detail(json!({"action": action, "request": journaled_request, "response": exchange["response"]}));
        event.latency_ms = Some(started.elapsed().as_millis() as u64);
        self.record(event);
        Ok(exchange)
    }
}

/// The page's policy: everything from this origin only, no framing (a framed console would be
/// same-origin and could be clicked through an overlay), no referrer.
const CSP: &str = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response()
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

async fn backend_get(State(sim): State<Sim>, Path(appid): Path<String>) -> Response {
    Json(json!({"backend": sim.backend(&appid)})).into_response()
}

async fn backend_put(State(sim): State<Sim>, Path(appid): Path<String>, raw: Bytes) -> Response {
    let backend: Backend = try_resp!(body(&raw));
    match sim.set_backend(&appid, backend) {
        Ok(()) => Json(json!({})).into_response(),
        Err(e) => from_wx(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PhoneRequestReq {
    appid: String,
    openid: String,
    action: String,
    /// The code the action hands over (none for `pay`).
    #[serde(default)]
    code: String,
}

async fn phone_request(State(sim): State<Sim>, raw: Bytes) -> Response {
    let req: PhoneRequestReq = try_resp!(body(&raw));
    match sim
        .backend_request(&req.appid, &req.openid, &req.action, &req.code)
        .await
    {
        Ok(v) => Json(v).into_response(),
        Err(e) => from_wx(e),
    }
}

async fn storage_get(State(sim): State<Sim>, Query(q): Query<HashMap<String, String>>) -> Response {
    match app_and_user(&q) {
        Ok((appid, openid)) => Json(json!({"storage": sim.storage(appid, openid)})).into_response(),
        Err(resp) => *resp,
    }
}

async fn storage_clear(
    State(sim): State<Sim>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    match app_and_user(&q) {
        Ok((appid, openid)) => {
            sim.world()
                .console
                .storage
                .remove(&(appid.to_owned(), openid.to_owned()));
            Json(json!({})).into_response()
        }
        Err(resp) => *resp,
    }
}

async fn root() -> Redirect {
    Redirect::temporary("/_sim/console")
}

async fn console_not_found() -> Response {
    control_error(StatusCode::NOT_FOUND, "no such console asset")
}

/// The console's routes: the page and its assets, `/` → the page, and the phone's calls.
pub(crate) fn control() -> Router<Sim> {
    Router::new()
        .route("/", get(root))
        .route("/_sim/console", get(index))
        .route("/_sim/console/", get(index))
        .route("/_sim/console/app.js", get(script))
        .route("/_sim/console/app.css", get(style))
        .route("/_sim/console/{*rest}", get(console_not_found))
        .route(
            "/_sim/apps/{appid}/backend",
            get(backend_get).put(backend_put),
        )
        .route("/_sim/phone/request", post(phone_request))
        .route(
            "/_sim/phone/storage",
            get(storage_get).delete(storage_clear),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payment_parameters_are_found_where_backends_put_them() {
        let five = json!({"timeStamp": "1", "nonceStr": "n", "package": "prepay_id=wx1",
                          "signType": "RSA", "paySign": "s"});
        let top = payment_params(&five).unwrap();
        assert_eq!(
            (top["from"].clone(), top["params"].clone()),
            (json!("top level"), five.clone())
        );
        let nested = payment_params(&json!({"order": "o1", "request_payment": five})).unwrap();
        assert_eq!(nested["from"], "request_payment");
        assert_eq!(nested["params"], five);
        let other = payment_params(&json!({"payment": {"package": "prepay_id=wx2"}})).unwrap();
        assert_eq!(other["from"], "payment");
        assert_eq!(other["params"], json!({"package": "prepay_id=wx2"}));
        assert_eq!(payment_params(&json!({"ok": true})), None);
        assert_eq!(payment_params(&json!("text")), None);
    }

    #[test]
    fn templates_fill_codes_and_storage() {
        let vars: HashMap<&str, String> = [("code", "C1".to_owned()), ("appid", "wx1".to_owned())]
            .into_iter()
            .collect();
        let mut storage = Map::new();
        storage.insert("token".into(), json!("wa_x"));
        storage.insert("n".into(), json!(3));
        assert_eq!(
            fill(
                r#"{"appid": "{{appid}}", "code": "{{ code }}"}"#,
                &vars,
                &storage,
                false
            ),
            r#"{"appid": "wx1", "code": "C1"}"#
        );
        assert_eq!(
            fill(
                "Bearer {{storage.token}}/{{storage.n}}/{{storage.none}}",
                &vars,
                &storage,
                false
            ),
            "Bearer wa_x/3/"
        );
        assert_eq!(fill("open {{", &vars, &storage, false), "open {{");
        // In a JSON body a value cannot break out of its string.
        storage.insert("evil".into(), json!("x\", \"admin\": true, \"y\": \""));
        let body = fill(r#"{"t": "{{storage.evil}}"}"#, &vars, &storage, true);
        let parsed: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(parsed.as_object().unwrap().len(), 1, "{body}");
        assert_eq!(parsed["t"], storage["evil"]);
    }
}
