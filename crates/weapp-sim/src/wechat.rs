//! The WeChat-facing routes: same paths, parameters, bodies and errcodes as api.weixin.qq.com.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};

use crate::state::{Sim, WxError, WxResult};

type Params = Query<HashMap<String, String>>;

/// Every WeChat answer is HTTP 200 JSON. `errmsg` of an error ends with `, rid: …`, the id
/// `rid/get` looks up.
pub(crate) fn wx_json(body: Value) -> Response {
    let mut resp = (StatusCode::OK, body.to_string()).into_response();
    resp.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; encoding=utf-8"),
    );
    resp
}

pub(crate) fn wx_error(sim: &Sim, path: &str, err: &WxError) -> Response {
    let rid = sim.record_rid(path, err.code, &err.msg);
    wx_json(json!({"errcode": err.code, "errmsg": format!("{}, rid: {rid}", err.msg)}))
}

/// `{"errcode":0,"errmsg":"ok", ...fields}`.
fn ok_with(fields: Value) -> Value {
    let mut out = json!({"errcode": 0, "errmsg": "ok"});
    if let (Some(o), Value::Object(f)) = (out.as_object_mut(), fields) {
        o.extend(f);
    }
    out
}

fn answer(sim: &Sim, path: &str, result: WxResult<Value>) -> Response {
    match result {
        Ok(v) => wx_json(v),
        Err(e) => wx_error(sim, path, &e),
    }
}

fn p<'a>(q: &'a HashMap<String, String>, k: &str) -> Option<&'a str> {
    q.get(k).map(String::as_str)
}

fn json_body(body: &Bytes) -> WxResult<Value> {
    if body.is_empty() {
        return Err(WxError::new(44002, "empty post data"));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(v @ Value::Object(_)) => Ok(v),
        _ => Err(WxError::new(47001, "data format error")),
    }
}

fn s<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str)
}

async fn classic_token(State(sim): State<Sim>, Query(q): Params) -> Response {
    let r = sim
        .classic_token(p(&q, "grant_type"), p(&q, "appid"), p(&q, "secret"))
        .map(|(t, e)| json!({"access_token": t, "expires_in": e}));
    answer(&sim, "/cgi-bin/token", r)
}

async fn stable_token(State(sim): State<Sim>, body: Bytes) -> Response {
    let r = json_body(&body).and_then(|b| {
        let force = b
            .get("force_refresh")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        sim.stable_token(s(&b, "grant_type"), s(&b, "appid"), s(&b, "secret"), force)
            .map(|(t, e)| json!({"access_token": t, "expires_in": e}))
    });
    answer(&sim, "/cgi-bin/stable_token", r)
}

async fn stable_token_get(State(sim): State<Sim>) -> Response {
    wx_error(
        &sim,
        "/cgi-bin/stable_token",
        &WxError::new(43002, "require POST method"),
    )
}

async fn jscode2session(State(sim): State<Sim>, Query(q): Params) -> Response {
    let r = sim.code_to_session(
        p(&q, "appid"),
        p(&q, "secret"),
        p(&q, "js_code"),
        p(&q, "grant_type"),
    );
    answer(&sim, "/sns/jscode2session", r)
}

/// Validates `access_token`, then runs `f` with the token's appid.
fn with_token(
    sim: &Sim,
    path: &str,
    q: &HashMap<String, String>,
    f: impl FnOnce(&str) -> WxResult<Value>,
) -> Response {
    answer(
        sim,
        path,
        sim.check_token(p(q, "access_token")).and_then(|appid| {
            sim.count_app_call(&appid, path);
            f(&appid)
        }),
    )
}

async fn checksession(State(sim): State<Sim>, Query(q): Params) -> Response {
    with_token(&sim, "/wxa/checksession", &q, |appid| {
        sim.check_session(
            appid,
            p(&q, "openid"),
            p(&q, "signature"),
            p(&q, "sig_method"),
        )
        .map(|()| json!({"errcode": 0, "errmsg": "ok"}))
    })
}

async fn resetusersessionkey(State(sim): State<Sim>, Query(q): Params) -> Response {
    with_token(&sim, "/wxa/resetusersessionkey", &q, |appid| {
        sim.reset_session_key(
            appid,
            p(&q, "openid"),
            p(&q, "signature"),
            p(&q, "sig_method"),
        )
        .map(ok_with)
    })
}

async fn getuserencryptkey(State(sim): State<Sim>, Query(q): Params) -> Response {
    with_token(&sim, "/wxa/business/getuserencryptkey", &q, |appid| {
        sim.user_encrypt_key(
            appid,
            p(&q, "openid"),
            p(&q, "signature"),
            p(&q, "sig_method"),
        )
        .map(ok_with)
    })
}

async fn getuserphonenumber(State(sim): State<Sim>, Query(q): Params, body: Bytes) -> Response {
    with_token(&sim, "/wxa/business/getuserphonenumber", &q, |appid| {
        let b = json_body(&body)?;
        sim.phone_number(appid, s(&b, "code")).map(ok_with)
    })
}

async fn media_check_async(State(sim): State<Sim>, Query(q): Params, body: Bytes) -> Response {
    let mut verdict = None;
    let resp = with_token(&sim, "/wxa/media_check_async", &q, |appid| {
        let b = json_body(&body)?;
        let (trace_id, event) = sim.media_check_async(appid, &b)?;
        verdict = Some((appid.to_owned(), event));
        Ok(ok_with(json!({"trace_id": trace_id})))
    });
    if let Some((appid, event)) = verdict {
        // The verdict arrives later, as WeChat's does: after the call has been answered.
        let sim = sim.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            if let Err(e) = sim.push_if_configured(&appid, Value::Object(event)).await {
                tracing::warn!(appid, error = %e, "media check verdict not pushed");
            }
        });
    }
    resp
}

async fn getpluginopenpid(State(sim): State<Sim>, Query(q): Params, body: Bytes) -> Response {
    with_token(&sim, "/wxa/getpluginopenpid", &q, |appid| {
        let b = json_body(&body)?;
        sim.plugin_openpid(appid, s(&b, "code")).map(ok_with)
    })
}

async fn getpaidunionid(State(sim): State<Sim>, Query(q): Params) -> Response {
    with_token(&sim, "/wxa/getpaidunionid", &q, |appid| {
        sim.paid_unionid(
            appid,
            p(&q, "openid"),
            p(&q, "transaction_id"),
            p(&q, "mch_id"),
            p(&q, "out_trade_no"),
        )
        .map(ok_with)
    })
}

async fn clear_quota(State(sim): State<Sim>, Query(q): Params, body: Bytes) -> Response {
    with_token(&sim, "/cgi-bin/clear_quota", &q, |token_appid| {
        let b = json_body(&body)?;
        let appid = s(&b, "appid").ok_or_else(|| WxError::new(41002, "appid missing"))?;
        if appid != token_appid {
            return Err(WxError::new(40013, "invalid appid"));
        }
        sim.clear_quota(appid)
            .map(|()| json!({"errcode": 0, "errmsg": "ok"}))
    })
}

async fn clear_quota_v2(State(sim): State<Sim>, Query(q): Params) -> Response {
    let r = sim
        .check_secret(p(&q, "appid"), p(&q, "appsecret"))
        .and_then(|()| sim.clear_quota(p(&q, "appid").unwrap_or_default()))
        .map(|()| json!({"errcode": 0, "errmsg": "ok"}));
    answer(&sim, "/cgi-bin/clear_quota/v2", r)
}

fn png(bytes: Vec<u8>, used: Option<u64>) -> Response {
    let mut resp = (StatusCode::OK, bytes).into_response();
    resp.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("image/png"),
    );
    if let Some(n) = used {
        resp.headers_mut().insert("Num-Used", HeaderValue::from(n));
    }
    resp
}

/// Runs a code endpoint: token check, then `f` returns the image or an error.
fn image_call(
    sim: &Sim,
    path: &str,
    q: &HashMap<String, String>,
    f: impl FnOnce(&str) -> WxResult<(Vec<u8>, Option<u64>)>,
) -> Response {
    match sim.check_token(p(q, "access_token")).and_then(|appid| {
        sim.count_app_call(&appid, path);
        f(&appid)
    }) {
        Ok((bytes, used)) => png(bytes, used),
        Err(e) => wx_error(sim, path, &e),
    }
}

fn path_arg(b: &Value, max: usize) -> WxResult<String> {
    let path = s(b, "path").filter(|p| !p.is_empty()).ok_or_else(|| {
        WxError::new(
            40159,
            "invalid length for path, or the data is not json string",
        )
    })?;
    if path.chars().count() > max {
        return Err(WxError::new(
            40159,
            "invalid length for path, or the data is not json string",
        ));
    }
    if path.split_once('?').is_some_and(|(_, q)| {
        q.split('&')
            .any(|kv| kv.split('=').next() == Some("scancode_time"))
    }) {
        return Err(WxError::new(85096, "not allow include scancode_time field"));
    }
    Ok(path.to_owned())
}

async fn getwxacode(State(sim): State<Sim>, Query(q): Params, body: Bytes) -> Response {
    image_call(&sim, "/wxa/getwxacode", &q, |appid| {
        let b = json_body(&body)?;
        let path = path_arg(&b, 1024)?;
        let width = crate::wxacode::width(&b)?;
        crate::wxacode::env_version(&b, 40097)?;
        let used = sim.take_lifetime_code(appid)?;
        Ok((crate::wxacode::render(&path, width, &b)?, Some(used)))
    })
}

async fn createwxaqrcode(State(sim): State<Sim>, Query(q): Params, body: Bytes) -> Response {
    image_call(&sim, "/cgi-bin/wxaapp/createwxaqrcode", &q, |appid| {
        let b = json_body(&body)?;
        let path = path_arg(&b, 128)?;
        let width = crate::wxacode::width(&b)?;
        let used = sim.take_lifetime_code(appid)?;
        Ok((crate::wxacode::render(&path, width, &b)?, Some(used)))
    })
}

async fn getwxacodeunlimit(State(sim): State<Sim>, Query(q): Params, body: Bytes) -> Response {
    image_call(&sim, "/wxa/getwxacodeunlimit", &q, |appid| {
        let b = json_body(&body)?;
        let scene = s(&b, "scene").unwrap_or_default();
        crate::wxacode::check_scene(scene)?;
        let page = s(&b, "page").filter(|p| !p.is_empty());
        let check_path = b.get("check_path").and_then(Value::as_bool).unwrap_or(true);
        let width = crate::wxacode::width(&b)?;
        crate::wxacode::env_version(&b, 40097)?;
        sim.check_unlimited(appid, page, check_path)?;
        let content = format!(
            "{}?scene={scene}",
            page.unwrap_or(crate::wxacode::DEFAULT_PAGES[0])
        );
        Ok((crate::wxacode::render(&content, width, &b)?, None))
    })
}

async fn quota_get(State(sim): State<Sim>, Query(q): Params, body: Bytes) -> Response {
    with_token(&sim, "/cgi-bin/openapi/quota/get", &q, |appid| {
        let b = json_body(&body)?;
        let cgi_path =
            s(&b, "cgi_path").ok_or_else(|| WxError::new(40097, "invalid args: cgi_path"))?;
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
            .ok_or_else(|| WxError::new(40097, "invalid args: model_id"))?;
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
            json!({"scheme_info": info, "quota_info": {"remain_visit_quota": crate::links::VISITS}}),
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
            json!({"url_link_info": info, "quota_info": {"remain_visit_quota": crate::links::VISITS}}),
        ))
    })
}

async fn genwxashortlink(State(sim): State<Sim>, Query(q): Params, body: Bytes) -> Response {
    with_token(&sim, "/wxa/genwxashortlink", &q, |appid| {
        let b = json_body(&body)?;
        Ok(ok_with(json!({"link": sim.short_link(appid, &b)?})))
    })
}

async fn getcategory(State(sim): State<Sim>, Query(q): Params) -> Response {
    with_token(&sim, "/wxaapi/newtmpl/getcategory", &q, |_| {
        let data: Vec<Value> = crate::subscribe::CATEGORIES
            .iter()
            .map(|(id, name)| json!({"id": id, "name": name}))
            .collect();
        Ok(ok_with(json!({"data": data})))
    })
}

async fn getpubtemplatetitles(State(sim): State<Sim>, Query(q): Params) -> Response {
    with_token(&sim, "/wxaapi/newtmpl/getpubtemplatetitles", &q, |_| {
        let ids = p(&q, "ids")
            .filter(|i| !i.is_empty())
            .ok_or_else(|| WxError::new(200018, "category ids missing"))?;
        let ids: Vec<i64> = ids
            .split(',')
            .map(|i| {
                i.trim()
                    .parse()
                    .map_err(|_| WxError::new(200019, "invalid category ids"))
            })
            .collect::<WxResult<_>>()?;
        let start: usize = p(&q, "start")
            .unwrap_or("0")
            .parse()
            .map_err(|_| WxError::new(200016, "invalid start"))?;
        let limit: usize = p(&q, "limit")
            .unwrap_or("30")
            .parse()
            .ok()
            .filter(|l| (1..=30).contains(l))
            .ok_or_else(|| WxError::new(200017, "invalid limit"))?;
        let all = crate::subscribe::titles(&ids);
        let page: Vec<Value> = all.iter().skip(start).take(limit).cloned().collect();
        Ok(ok_with(json!({"count": all.len(), "data": page})))
    })
}

async fn getpubtemplatekeywords(State(sim): State<Sim>, Query(q): Params) -> Response {
    with_token(&sim, "/wxaapi/newtmpl/getpubtemplatekeywords", &q, |_| {
        let tid: i64 = p(&q, "tid")
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| WxError::new(200014, "invalid tid"))?;
        let t = crate::subscribe::LIBRARY
            .iter()
            .find(|t| t.0 == tid)
            .ok_or_else(|| WxError::new(200014, "invalid tid"))?;
        let data: Vec<Value> = t.3.iter().map(|(kid, name, example, rule)| json!({"kid": kid, "name": name, "example": example, "rule": rule})).collect();
        Ok(ok_with(json!({"count": data.len(), "data": data})))
    })
}

async fn addtemplate(State(sim): State<Sim>, Query(q): Params, body: Bytes) -> Response {
    with_token(&sim, "/wxaapi/newtmpl/addtemplate", &q, |appid| {
        let b = json_body(&body)?;
        Ok(ok_with(json!({"priTmplId": sim.add_template(appid, &b)?})))
    })
}

async fn deltemplate(State(sim): State<Sim>, Query(q): Params, body: Bytes) -> Response {
    with_token(&sim, "/wxaapi/newtmpl/deltemplate", &q, |appid| {
        let b = json_body(&body)?;
        sim.del_template(appid, s(&b, "priTmplId").unwrap_or_default())?;
        Ok(json!({"errcode": 0, "errmsg": "ok"}))
    })
}

async fn gettemplate(State(sim): State<Sim>, Query(q): Params) -> Response {
    with_token(&sim, "/wxaapi/newtmpl/gettemplate", &q, |appid| {
        Ok(ok_with(json!({"data": sim.templates(appid)?})))
    })
}

async fn subscribe_send(State(sim): State<Sim>, Query(q): Params, body: Bytes) -> Response {
    with_token(&sim, "/cgi-bin/message/subscribe/send", &q, |appid| {
        let b = json_body(&body)?;
        sim.send_subscribe(appid, &b).map(ok_with)
    })
}

async fn custom_send(State(sim): State<Sim>, Query(q): Params, body: Bytes) -> Response {
    with_token(&sim, "/cgi-bin/message/custom/send", &q, |appid| {
        sim.send_custom(appid, &json_body(&body)?)
            .map(|()| json!({"errcode": 0, "errmsg": "ok"}))
    })
}

async fn custom_typing(State(sim): State<Sim>, Query(q): Params, body: Bytes) -> Response {
    with_token(&sim, "/cgi-bin/message/custom/typing", &q, |appid| {
        sim.typing(appid, &json_body(&body)?)
            .map(|()| json!({"errcode": 0, "errmsg": "ok"}))
    })
}

async fn media_upload(
    State(sim): State<Sim>,
    Query(q): Params,
    mut form: axum::extract::Multipart,
) -> Response {
    let appid = match sim.check_token(p(&q, "access_token")) {
        Ok(a) => a,
        Err(e) => return wx_error(&sim, "/cgi-bin/media/upload", &e),
    };
    sim.count_app_call(&appid, "/cgi-bin/media/upload");
    let mut file = None;
    while let Ok(Some(field)) = form.next_field().await {
        if field.name() == Some("media") {
            let ct = field
                .content_type()
                .unwrap_or("application/octet-stream")
                .to_owned();
            if let Ok(bytes) = field.bytes().await {
                file = Some((ct, bytes.to_vec()));
            }
        }
    }
    let result = match file {
        Some((ct, bytes)) => sim.upload_media(&appid, p(&q, "type").unwrap_or(""), &ct, bytes),
        None => Err(WxError::new(41005, "media data missing")),
    };
    answer(&sim, "/cgi-bin/media/upload", result)
}

async fn media_get(State(sim): State<Sim>, Query(q): Params) -> Response {
    let result = sim
        .check_token(p(&q, "access_token"))
        .and_then(|appid| sim.get_media(&appid, p(&q, "media_id").unwrap_or("")));
    match result {
        Ok((ct, bytes)) => {
            let mut resp = (StatusCode::OK, bytes).into_response();
            if let Ok(v) = HeaderValue::from_str(&ct) {
                resp.headers_mut()
                    .insert(axum::http::header::CONTENT_TYPE, v);
            }
            resp
        }
        Err(e) => wx_error(&sim, "/cgi-bin/media/get", &e),
    }
}

async fn msg_sec_check(State(sim): State<Sim>, Query(q): Params, body: Bytes) -> Response {
    with_token(&sim, "/wxa/msg_sec_check", &q, |appid| {
        sim.msg_sec_check(appid, &json_body(&body)?)
    })
}

async fn img_sec_check(
    State(sim): State<Sim>,
    Query(q): Params,
    mut form: axum::extract::Multipart,
) -> Response {
    let appid = match sim.check_token(p(&q, "access_token")) {
        Ok(a) => a,
        Err(e) => return wx_error(&sim, "/wxa/img_sec_check", &e),
    };
    sim.count_app_call(&appid, "/wxa/img_sec_check");
    let mut bytes = Vec::new();
    while let Ok(Some(field)) = form.next_field().await {
        if field.name() == Some("media") {
            bytes = field.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
        }
    }
    answer(
        &sim,
        "/wxa/img_sec_check",
        sim.img_sec_check(&bytes)
            .map(|()| json!({"errcode": 0, "errmsg": "ok"})),
    )
}

async fn getuserriskrank(State(sim): State<Sim>, Query(q): Params, body: Bytes) -> Response {
    with_token(&sim, "/wxa/getuserriskrank", &q, |appid| {
        sim.risk_rank(appid, &json_body(&body)?)
    })
}

async fn datacube(
    State(sim): State<Sim>,
    axum::extract::Path(name): axum::extract::Path<String>,
    Query(q): Params,
    body: Bytes,
) -> Response {
    let path = format!("/datacube/{name}");
    let result = sim.check_token(p(&q, "access_token")).and_then(|appid| {
        sim.count_app_call(&appid, &path);
        let call = name
            .strip_prefix("getweanalysisappid")
            .ok_or_else(|| WxError::new(40097, "invalid args: unknown datacube call"))?;
        let b = json_body(&body)?;
        crate::datacube::answer(&appid, call, &b, crate::datacube::beijing_day(sim.now_ms()))
    });
    // Success bodies carry no errcode, as WeChat's datacube answers.
    answer(&sim, &path, result)
}

async fn performance(State(sim): State<Sim>, Query(q): Params, body: Bytes) -> Response {
    with_token(&sim, "/wxa/business/performance/boot", &q, |appid| {
        crate::datacube::performance(appid, &json_body(&body)?)
    })
}

/// Every WeChat path the simulator serves (what `quota/get` knows).
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

/// Routes for the WeChat API paths.
pub(crate) fn router() -> Router<Sim> {
    Router::new()
        .route("/cgi-bin/token", get(classic_token))
        .route(
            "/cgi-bin/stable_token",
            post(stable_token).get(stable_token_get),
        )
        .route("/sns/jscode2session", get(jscode2session))
        .route("/wxa/checksession", get(checksession))
        .route("/wxa/resetusersessionkey", get(resetusersessionkey))
        .route("/wxa/business/getuserencryptkey", post(getuserencryptkey))
        .route("/wxa/business/getuserphonenumber", post(getuserphonenumber))
        .route("/wxa/getpluginopenpid", post(getpluginopenpid))
        .route("/wxa/media_check_async", post(media_check_async))
        .route("/wxa/getwxacode", post(getwxacode))
        .route("/wxa/getwxacodeunlimit", post(getwxacodeunlimit))
        .route("/cgi-bin/wxaapp/createwxaqrcode", post(createwxaqrcode))
        .route("/cgi-bin/openapi/quota/get", post(quota_get))
        .route("/cgi-bin/openapi/rid/get", post(rid_get))
        .route("/wxa/generatescheme", post(generatescheme))
        .route("/wxa/generatenfcscheme", post(generatenfcscheme))
        .route("/wxa/queryscheme", post(queryscheme))
        .route("/wxa/generate_urllink", post(generate_urllink))
        .route("/wxa/query_urllink", post(query_urllink))
        .route("/wxa/genwxashortlink", post(genwxashortlink))
        .route("/wxaapi/newtmpl/getcategory", get(getcategory))
        .route(
            "/wxaapi/newtmpl/getpubtemplatetitles",
            get(getpubtemplatetitles),
        )
        .route(
            "/wxaapi/newtmpl/getpubtemplatekeywords",
            get(getpubtemplatekeywords),
        )
        .route("/wxaapi/newtmpl/addtemplate", post(addtemplate))
        .route("/wxaapi/newtmpl/deltemplate", post(deltemplate))
        .route("/wxaapi/newtmpl/gettemplate", get(gettemplate))
        .route("/cgi-bin/message/subscribe/send", post(subscribe_send))
        .route("/cgi-bin/message/custom/send", post(custom_send))
        .route("/cgi-bin/message/custom/typing", post(custom_typing))
        .route("/cgi-bin/media/upload", post(media_upload))
        .route("/cgi-bin/media/get", get(media_get))
        .route("/wxa/msg_sec_check", post(msg_sec_check))
        .route("/wxa/img_sec_check", post(img_sec_check))
        .route("/wxa/getuserriskrank", post(getuserriskrank))
        .route("/datacube/{name}", post(datacube))
        .route("/wxa/business/performance/boot", post(performance))
        .route("/wxa/getpaidunionid", get(getpaidunionid))
        .route("/cgi-bin/clear_quota", post(clear_quota))
        .route("/cgi-bin/clear_quota/v2", post(clear_quota_v2))
}
