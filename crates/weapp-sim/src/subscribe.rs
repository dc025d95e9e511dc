//! Subscribe messages: a template library (categories, titles, keywords with value rules),
//! private templates, the grants the `wx.requestSubscribeMessage` popup hands out, and sends
//! checked against the value rules WeChat applies to each keyword type. Written independently
//! of the SDK's checks, so a mistake shared by both cannot pass unnoticed.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rand::Rng;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{WxError, WxResult};
use crate::http::{
    app_and_user, body, control_error, from_wx, json_body, ok, ok_with, p, s, try_resp, Params,
};
use crate::journal::Event;
use crate::random::random_alnum;
pub use crate::state::subscribe::PrivateTemplate;
use crate::tokens::with_token;
use crate::world::Sim;

/// A category of the public library.
pub const CATEGORIES: &[(i64, &str)] = &[
    (307, "IT科技 > 软件服务"),
    (616, "餐饮 > 外卖"),
    (632, "快递物流 > 快递"),
];

/// A public template: (tid, title, categoryId, keywords (kid, name, example, rule)).
pub type PublicTemplate = (
    i64,
    &'static str,
    i64,
    &'static [(i64, &'static str, &'static str, &'static str)],
);

/// The public library.
pub const LIBRARY: &[PublicTemplate] = &[
    (
        1001,
        "订单配送通知",
        616,
        &[
            (1, "订单号", "A20231110123", "character_string"),
            (2, "商品名称", "黄焖鸡米饭", "thing"),
            (3, "送达时间", "2023-11-10 12:30", "time"),
            (4, "订单金额", "¥32.50", "amount"),
            (5, "配送员", "张三", "name"),
            (6, "联系电话", "13800138000", "phone_number"),
            (7, "订单状态", "已送达", "phrase"),
        ],
    ),
    (
        1002,
        "快递到达通知",
        632,
        &[
            (1, "快递单号", "SF1234567890", "character_string"),
            (2, "到达日期", "2023年11月10日", "date"),
            (3, "取件码", "A123", "letter"),
            (4, "件数", "2", "number"),
            (5, "车牌号", "粤B12345", "car_number"),
            (6, "备注", "请尽快取件", "thing"),
            (7, "标识", "★", "symbol"),
        ],
    ),
    (
        1003,
        "账号登录提醒",
        307,
        &[
            (1, "登录时间", "12:30", "time"),
            (2, "登录地点", "广州", "thing"),
            (3, "设备", "iPhone", "thing"),
        ],
    ),
];

/// Builds a private template from `tid` and 2–5 keyword ids (keys are numbered in order).
///
/// # Errors
/// `(200014, …)` unknown tid, `(200020, …)` bad kidList, `(200021, …)` bad sceneDesc.
pub fn instantiate(
    tid: i64,
    kids: &[i64],
    scene_desc: &str,
    id: String,
) -> Result<PrivateTemplate, (i64, &'static str)> {
    let (_, title, _, keywords) = LIBRARY
        .iter()
        .find(|t| t.0 == tid)
        .ok_or((200014, "tid does not exist"))?;
    if !(2..=5).contains(&kids.len()) || kids.iter().enumerate().any(|(i, k)| kids[..i].contains(k))
    {
        return Err((200020, "invalid keywords"));
    }
    if scene_desc.chars().count() > 15 {
        return Err((200021, "invalid sceneDesc"));
    }
    let mut keys = Vec::new();
    let mut content = String::new();
    let mut example = String::new();
    for (i, kid) in kids.iter().enumerate() {
        let (_, name, ex, rule) = keywords
            .iter()
            .find(|k| k.0 == *kid)
            .ok_or((200020, "invalid keywords"))?;
        let key = format!("{rule}{}", i + 1);
        content.push_str(&format!("{name}:{{{{{key}.DATA}}}}\n"));
        example.push_str(&format!("{name}:{ex}\n"));
        keys.push(key);
    }
    Ok(PrivateTemplate {
        pri_tmpl_id: id,
        title: (*title).into(),
        content,
        example,
        kind: 2,
        keys,
    })
}

/// The public template list as `getpubtemplatetitles` answers it.
pub fn titles(ids: &[i64]) -> Vec<Value> {
    LIBRARY
        .iter()
        .filter(|t| ids.contains(&t.2))
        .map(|t| json!({"tid": t.0, "title": t.1, "type": 2, "categoryId": t.2.to_string()}))
        .collect()
}

fn is_cjk(c: char) -> bool {
    ('\u{4e00}'..='\u{9fff}').contains(&c)
}

fn is_time(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    (2..=3).contains(&parts.len())
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_digit()))
        && parts[0].parse::<u32>().is_ok_and(|h| h < 24)
        && parts[1..]
            .iter()
            .all(|p| p.parse::<u32>().is_ok_and(|m| m < 60))
}

fn is_date(s: &str) -> bool {
    let nums: Vec<&str> = s
        .split(['-', '/', '年', '月', '日'])
        .filter(|p| !p.is_empty())
        .collect();
    let shape_ok = s
        .chars()
        .all(|c| c.is_ascii_digit() || "-/年月日".contains(c));
    shape_ok
        && nums.len() == 3
        && nums[0].len() == 4
        && nums[1].parse::<u32>().is_ok_and(|m| (1..=12).contains(&m))
        && nums[2].parse::<u32>().is_ok_and(|d| (1..=31).contains(&d))
}

fn date_time(v: &str, time_required: bool) -> bool {
    v.split('~').all(|part| {
        let part = part.trim();
        match part.split_once(' ') {
            Some((d, t)) => is_date(d) && is_time(t),
            None if time_required => is_time(part),
            None => is_date(part),
        }
    })
}

/// Checks a value against its keyword type (the key without its number).
pub fn value_ok(rule: &str, v: &str) -> bool {
    let n = v.chars().count();
    match rule {
        "thing" => (1..=20).contains(&n),
        "number" => {
            (1..=32).contains(&n)
                && v.chars().filter(|c| *c == '.').count() <= 1
                && v.trim_start_matches('-')
                    .chars()
                    .all(|c| c.is_ascii_digit() || c == '.')
        }
        "letter" => (1..=32).contains(&n) && v.chars().all(|c| c.is_ascii_alphabetic()),
        "symbol" => {
            (1..=5).contains(&n)
                && v.chars()
                    .all(|c| !c.is_alphanumeric() && !c.is_whitespace())
        }
        "character_string" => (1..=32).contains(&n) && v.chars().all(|c| c.is_ascii_graphic()),
        "time" => {
            date_time(v, true)
                || v.split('~').all(|p| {
                    p.trim()
                        .split_once(' ')
                        .is_some_and(|(d, t)| is_date(d) && is_time(t))
                })
        }
        "date" => date_time(v, false),
        "amount" => {
            let body = v.strip_suffix('元').unwrap_or(v);
            let body = body
                .strip_prefix(['¥', '￥', '$', '€', '£'])
                .unwrap_or(body);
            let (int, frac) = body.split_once('.').unwrap_or((body, ""));
            (1..=10).contains(&int.len())
                && int.chars().all(|c| c.is_ascii_digit())
                && frac.len() <= 2
                && frac.chars().all(|c| c.is_ascii_digit())
        }
        "phone_number" => {
            (1..=17).contains(&n) && v.chars().all(|c| c.is_ascii_digit() || "+-() ".contains(c))
        }
        "car_number" => {
            (1..=8).contains(&n)
                && v.chars()
                    .enumerate()
                    .all(|(i, c)| c.is_ascii_alphanumeric() || (i == 0 && is_cjk(c)) || c == '·')
        }
        "name" => {
            (n <= 10 && n > 0 && v.chars().all(is_cjk))
                || (n <= 20 && n > 0 && v.chars().all(|c| c.is_ascii_alphabetic() || c == ' '))
        }
        "phrase" => (1..=5).contains(&n) && v.chars().all(is_cjk),
        _ => true,
    }
}

/// The keyword type of a data key: `thing1` → `thing`.
pub fn rule_of(key: &str) -> &str {
    key.trim_end_matches(|c: char| c.is_ascii_digit())
}

impl Sim {
    /// `addtemplate`.
    ///
    /// # Errors
    /// 200012 over 50 private templates, 200014, 200020, 200021.
    pub fn add_template(&self, appid: &str, body: &Value) -> WxResult<String> {
        let tid = body
            .get("tid")
            .and_then(|t| t.as_i64().or_else(|| t.as_str()?.parse().ok()))
            .ok_or_else(|| WxError::new(200014, "missing parameter tid"))?;
        let kids: Vec<i64> = body
            .get("kidList")
            .and_then(Value::as_array)
            .ok_or_else(|| WxError::new(200020, "invalid keywords"))?
            .iter()
            .map(|k| {
                k.as_i64()
                    .ok_or_else(|| WxError::new(200020, "invalid keywords"))
            })
            .collect::<WxResult<_>>()?;
        let scene = body.get("sceneDesc").and_then(Value::as_str).unwrap_or("");
        let id = random_alnum(43);
        self.add_template_with_id(appid, tid, &kids, scene, &id)?;
        Ok(id)
    }

    /// What `addtemplate` does, under an id chosen by the caller instead of a random one: a
    /// sandbox that seeds the same template on every start keeps its id, so a backend
    /// configured with it keeps working. Returns the template.
    ///
    /// # Errors
    /// 40013 unknown app, 200012 over 50 private templates, 200014, 200020, 200021 (as
    /// `addtemplate`), 40097 for an id that is empty or already taken.
    pub fn add_template_with_id(
        &self,
        appid: &str,
        tid: i64,
        kids: &[i64],
        scene_desc: &str,
        id: &str,
    ) -> WxResult<PrivateTemplate> {
        let mut w = self.world();
        let app = w.app_mut(appid)?;
        if app.subscribe.templates.len() >= 50 {
            return Err(WxError::new(200012, "private template count reach limit"));
        }
        if id.is_empty() || app.subscribe.templates.iter().any(|t| t.pri_tmpl_id == id) {
            return Err(WxError::new(
                40097,
                "invalid args: template id empty or taken",
            ));
        }
        let t = instantiate(tid, kids, scene_desc, id.to_owned())
            .map_err(|(c, m)| WxError::new(c, m))?;
        app.subscribe.templates.push(t.clone());
        Ok(t)
    }

    /// `deltemplate`.
    ///
    /// # Errors
    /// 40037 unknown template.
    pub fn del_template(&self, appid: &str, id: &str) -> WxResult<()> {
        let mut w = self.world();
        let app = w.app_mut(appid)?;
        let before = app.subscribe.templates.len();
        app.subscribe.templates.retain(|t| t.pri_tmpl_id != id);
        if app.subscribe.templates.len() == before {
            return Err(WxError::new(40037, "invalid template_id"));
        }
        Ok(())
    }

    /// `gettemplate`.
    ///
    /// # Errors
    /// 40013.
    pub fn templates(&self, appid: &str) -> WxResult<Value> {
        let mut w = self.world();
        Ok(json!(w.app_mut(appid)?.subscribe.templates))
    }

    /// `message/subscribe/send`: needs a grant (one grant, one message) and valid values.
    ///
    /// # Errors
    /// 40003, 40037, 43101 no grant, 47003 naming the field, 47001 bad state or lang.
    pub fn send_subscribe(&self, appid: &str, body: &Value) -> WxResult<Value> {
        let touser = body.get("touser").and_then(Value::as_str).unwrap_or("");
        let template_id = body
            .get("template_id")
            .and_then(Value::as_str)
            .unwrap_or("");
        let state = body
            .get("miniprogram_state")
            .and_then(Value::as_str)
            .unwrap_or("formal");
        let lang = body.get("lang").and_then(Value::as_str).unwrap_or("zh_CN");
        if !matches!(state, "developer" | "trial" | "formal")
            || !matches!(lang, "zh_CN" | "en_US" | "zh_HK" | "zh_TW")
        {
            return Err(WxError::new(47001, "data format error"));
        }
        let mut w = self.world();
        let now_ms = self.now_in(&w);
        let now = now_ms / 1000;
        let app = w.app_with_user(appid, touser)?;
        let template = app
            .subscribe
            .templates
            .iter()
            .find(|t| t.pri_tmpl_id == template_id)
            .cloned()
            .ok_or_else(|| WxError::new(40037, "invalid template_id"))?;
        let data = body
            .get("data")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        for key in &template.keys {
            let value = data
                .get(key)
                .and_then(|v| v.get("value"))
                .and_then(Value::as_str);
            match value {
                Some(v) if value_ok(rule_of(key), v) => {}
                Some(_) => {
                    return Err(WxError::new(
                        47003,
                        format!("argument invalid! data.{key}.value invalid"),
                    ))
                }
                None => {
                    return Err(WxError::new(
                        47003,
                        format!("argument invalid! data.{key}.value is empty"),
                    ))
                }
            }
        }
        let grant = app
            .subscribe
            .grants
            .get_mut(&(touser.to_owned(), template_id.to_owned()));
        match grant {
            Some(n) if *n > 0 => *n -= 1,
            _ => return Err(WxError::new(43101, "user refuse to accept the msg")),
        }
        let msg_id = rand::thread_rng().gen_range(1..i64::MAX);
        let message = json!({
            "openid": touser, "template_id": template_id, "title": template.title,
            "page": body.get("page"), "data": data,
            "miniprogram_state": state, "lang": lang, "sent_at": now, "msgid": msg_id,
        });
        app.inbox.push(message.clone());
        self.record_at(
            now_ms,
            Event::new("message")
                .appid(appid)
                .openid(touser)
                .path("/cgi-bin/message/subscribe/send")
                .detail(json!({"message_kind": "subscribe", "message": message})),
        );
        Ok(json!({"msgid": msg_id}))
    }

    /// Messages a user received (subscribe messages and customer-service replies), oldest
    /// first.
    pub fn messages(&self, appid: &str, openid: &str) -> Vec<Value> {
        let w = self.world();
        w.apps.get(appid).map_or_else(Vec::new, |a| {
            a.inbox
                .iter()
                .filter(|m| m["openid"] == openid)
                .cloned()
                .collect()
        })
    }

    /// What the `wx.requestSubscribeMessage` popup does when the user answers it: each
    /// accepted template grants `count` sends; `subscribe_msg_popup_event` is pushed (accepts
    /// and rejects) if the app has a push URL.
    ///
    /// # Errors
    /// 40013, 40003, 40037 for a template the app does not have.
    pub async fn subscribe_popup(
        &self,
        appid: &str,
        openid: &str,
        choices: &[(String, bool)],
        count: u32,
    ) -> WxResult<Option<crate::push::Delivery>> {
        {
            let mut w = self.world();
            let app = w.app_with_user(appid, openid)?;
            for (template_id, accept) in choices {
                if *accept {
                    *app.subscribe
                        .grants
                        .entry((openid.to_owned(), template_id.clone()))
                        .or_default() += count;
                }
            }
        }
        let list: Vec<Value> = choices
            .iter()
            .map(|(t, accept)| json!({"TemplateId": t, "SubscribeStatusString": if *accept { "accept" } else { "reject" }, "PopupScene": "0"}))
            .collect();
        self.record(
            Event::new("user_action")
                .appid(appid)
                .openid(openid)
                .detail(json!({"action": "subscribe_popup", "choices": list})),
        );
        let message = json!({"FromUserName": openid, "MsgType": "event", "Event": "subscribe_msg_popup_event", "List": list});
        self.push_if_configured(appid, message).await
    }

    /// The popup accepting one template `count` times (see [`Sim::subscribe_popup`]).
    ///
    /// # Errors
    /// 40013, 40003.
    pub async fn subscribe_grant(
        &self,
        appid: &str,
        openid: &str,
        template_id: &str,
        count: u32,
    ) -> WxResult<Option<crate::push::Delivery>> {
        self.subscribe_popup(appid, openid, &[(template_id.to_owned(), true)], count)
            .await
    }

    /// Remaining grants of `template_id` for a user.
    pub fn grants(&self, appid: &str, openid: &str, template_id: &str) -> u32 {
        self.world()
            .apps
            .get(appid)
            .and_then(|a| {
                a.subscribe
                    .grants
                    .get(&(openid.to_owned(), template_id.to_owned()))
                    .copied()
            })
            .unwrap_or(0)
    }
}

async fn getcategory(State(sim): State<Sim>, Query(q): Params) -> Response {
    with_token(&sim, "/wxaapi/newtmpl/getcategory", &q, |_| {
        let data: Vec<Value> = CATEGORIES
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
                    .map_err(|_| WxError::new(200019, "invalid parameter ids"))
            })
            .collect::<WxResult<_>>()?;
        let start: usize = p(&q, "start")
            .unwrap_or("0")
            .parse()
            .map_err(|_| WxError::new(200016, "invalid parameter start"))?;
        let limit: usize = p(&q, "limit")
            .unwrap_or("30")
            .parse()
            .ok()
            .filter(|l| (1..=30).contains(l))
            .ok_or_else(|| WxError::new(200017, "invalid limit"))?;
        let all = titles(&ids);
        let page: Vec<Value> = all.iter().skip(start).take(limit).cloned().collect();
        Ok(ok_with(json!({"count": all.len(), "data": page})))
    })
}

async fn getpubtemplatekeywords(State(sim): State<Sim>, Query(q): Params) -> Response {
    with_token(&sim, "/wxaapi/newtmpl/getpubtemplatekeywords", &q, |_| {
        let tid: i64 = p(&q, "tid")
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| WxError::new(200014, "missing parameter tid"))?;
        let t = LIBRARY
            .iter()
            .find(|t| t.0 == tid)
            .ok_or_else(|| WxError::new(200014, "tid does not exist"))?;
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
        Ok(ok())
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

/// The WeChat routes of this domain.
pub(crate) fn routes() -> Router<Sim> {
    Router::new()
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
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantReq {
    appid: String,
    openid: String,
    template_id: String,
    count: Option<u32>,
}

async fn subscribe_grant(State(sim): State<Sim>, raw: Bytes) -> Response {
    let req: GrantReq = try_resp!(body(&raw));
    let count = req.count.unwrap_or(1);
    if count == 0 {
        return control_error(
            axum::http::StatusCode::BAD_REQUEST,
            "count must be at least 1",
        );
    }
    match sim.subscribe_grant(&req.appid, &req.openid, &req.template_id, count).await {
        Ok(d) => Json(json!({"pushed": d, "remaining": sim.grants(&req.appid, &req.openid, &req.template_id)})).into_response(),
        Err(e) => from_wx(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Choice {
    template_id: String,
    accept: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PopupReq {
    appid: String,
    openid: String,
    choices: Vec<Choice>,
}

async fn subscribe_popup(State(sim): State<Sim>, raw: Bytes) -> Response {
    let req: PopupReq = try_resp!(body(&raw));
    if req.choices.is_empty() || req.choices.len() > 3 {
        // The popup asks for at most three templates at once.
        return control_error(
            axum::http::StatusCode::BAD_REQUEST,
            "choices must hold 1–3 templates",
        );
    }
    let choices: Vec<(String, bool)> = req
        .choices
        .into_iter()
        .map(|c| (c.template_id, c.accept))
        .collect();
    match sim
        .subscribe_popup(&req.appid, &req.openid, &choices, 1)
        .await
    {
        Ok(d) => Json(json!({"pushed": d})).into_response(),
        Err(e) => from_wx(e),
    }
}

async fn messages(State(sim): State<Sim>, Query(q): Query<HashMap<String, String>>) -> Response {
    let (appid, openid) = match app_and_user(&q) {
        Ok(v) => v,
        Err(resp) => return *resp,
    };
    Json(json!({"messages": sim.messages(appid, openid)})).into_response()
}

async fn app_templates(
    State(sim): State<Sim>,
    axum::extract::Path(appid): axum::extract::Path<String>,
) -> Response {
    match sim.templates(&appid) {
        Ok(t) => Json(json!({"templates": t})).into_response(),
        Err(e) => from_wx(e),
    }
}

/// The `/_sim` routes of this domain: the subscribe popup, and what users received.
pub(crate) fn control() -> Router<Sim> {
    Router::new()
        .route("/_sim/subscribe-grant", post(subscribe_grant))
        .route("/_sim/subscribe-popup", post(subscribe_popup))
        .route("/_sim/messages", get(messages))
        .route("/_sim/apps/{appid}/templates", get(app_templates))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_rules() {
        for (rule, ok, bad) in [
            (
                "thing",
                "外卖已送达",
                "一二三四五六七八九十一二三四五六七八九十一",
            ),
            ("number", "12.5", "1.2.3"),
            ("letter", "ABC", "AB1"),
            ("symbol", "★", "A"),
            ("character_string", "A-1_x", "含中文"),
            ("time", "2023-11-10 12:30", "25:00"),
            ("date", "2023年11月10日", "2023-13-01"),
            ("amount", "¥32.50", "¥¥3"),
            ("phone_number", "+86 138-0013", "abc"),
            ("car_number", "粤B12345", "粤B123456789"),
            ("name", "张三", "张三3"),
            ("phrase", "已送达", "已送达了吗吗吗"),
        ] {
            assert!(value_ok(rule, ok), "{rule}: {ok}");
            assert!(!value_ok(rule, bad), "{rule}: {bad}");
        }
        assert!(value_ok("time", "12:30~13:30"));
        assert!(value_ok("date", "2023-11-10 12:30"));
        assert!(value_ok("amount", "100元"));
    }
}
