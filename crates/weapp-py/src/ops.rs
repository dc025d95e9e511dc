//! Every call of `weapp.Client` / `weapp.AsyncClient`, by name, on the Rust SDK's typed API.
//!
//! The Python layer sends an operation name, its arguments as JSON and, for uploads, the file's
//! bytes; the call goes through the same `weapp::Client` methods a Rust program uses (the same
//! local checks — a subscribe value's rules, a scene's length — the same token handling, retries
//! and errors). Results come back as JSON values shaped like WeChat's own answers, or as bytes.

use serde_json::{json, Map, Value};
use weapp::api::auth::PaidOrder;
use weapp::api::security::{MediaType, RiskScene, Scene};
use weapp::api::subscribe::{Lang, MiniprogramState, SubscribeData};
use weapp::api::url_link::Expiry;
use weapp::api::EnvVersion;
use weapp::http::{Body, Method, RawOutput};
use weapp::{Client, SessionKey};

/// What an operation answers.
pub enum Output {
    /// A JSON value (an object, a list or `null`).
    Json(Value),
    /// A binary answer (an image, a media file).
    Bytes(Vec<u8>),
}

/// Why an operation failed.
pub enum OpError {
    /// The SDK's error (WeChat's errcode, transport, timeout, a local check).
    Sdk(weapp::Error),
    /// A WeChat Pay error.
    Pay(weapp::pay::PayError),
    /// The arguments do not have the shape the operation needs.
    Invalid(String),
    /// The operation panicked (a bug): reported as a `WeappError`, never a hang.
    Panicked,
}

impl From<weapp::pay::PayError> for OpError {
    fn from(e: weapp::pay::PayError) -> Self {
        OpError::Pay(e)
    }
}

impl From<weapp::Error> for OpError {
    fn from(e: weapp::Error) -> Self {
        OpError::Sdk(e)
    }
}

type OpResult = Result<Output, OpError>;

/// An operation's arguments: a JSON object, read with typed getters.
pub struct Args {
    map: Map<String, Value>,
    /// The file of an upload.
    pub blob: Option<Vec<u8>>,
}

impl Args {
    /// Parses the JSON object the Python layer sent.
    pub fn parse(json: &str, blob: Option<Vec<u8>>) -> Result<Self, OpError> {
        match serde_json::from_str(json) {
            Ok(Value::Object(map)) => Ok(Self { map, blob }),
            Ok(Value::Null) => Ok(Self {
                map: Map::new(),
                blob,
            }),
            _ => Err(OpError::Invalid("arguments must be a JSON object".into())),
        }
    }

    pub fn present(&self, key: &str) -> Option<&Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    pub fn str(&self, key: &str) -> Result<&str, OpError> {
        self.opt_str(key)?
            .ok_or_else(|| OpError::Invalid(format!("{key} is required")))
    }

    pub fn opt_str(&self, key: &str) -> Result<Option<&str>, OpError> {
        match self.present(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(OpError::Invalid(format!("{key} must be a string"))),
        }
    }

    fn opt_i64(&self, key: &str) -> Result<Option<i64>, OpError> {
        match self.present(key) {
            None => Ok(None),
            Some(v) => v
                .as_i64()
                .map(Some)
                .ok_or_else(|| OpError::Invalid(format!("{key} must be an integer"))),
        }
    }

    fn i64(&self, key: &str) -> Result<i64, OpError> {
        self.opt_i64(key)?
            .ok_or_else(|| OpError::Invalid(format!("{key} is required")))
    }

    pub fn opt_u32(&self, key: &str) -> Result<Option<u32>, OpError> {
        match self.opt_i64(key)? {
            None => Ok(None),
            Some(n) => u32::try_from(n)
                .map(Some)
                .map_err(|_| OpError::Invalid(format!("{key} is out of range"))),
        }
    }

    fn opt_bool(&self, key: &str) -> Result<Option<bool>, OpError> {
        match self.present(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(OpError::Invalid(format!("{key} must be a bool"))),
        }
    }

    fn i64_list(&self, key: &str) -> Result<Vec<i64>, OpError> {
        match self.present(key) {
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_i64()
                        .ok_or_else(|| OpError::Invalid(format!("{key} must hold integers")))
                })
                .collect(),
            _ => Err(OpError::Invalid(format!(
                "{key} must be a list of integers"
            ))),
        }
    }

    fn env_version(&self) -> Result<Option<EnvVersion>, OpError> {
        Ok(match self.opt_str("env_version")? {
            None => None,
            Some("release") => Some(EnvVersion::Release),
            Some("trial") => Some(EnvVersion::Trial),
            Some("develop") => Some(EnvVersion::Develop),
            Some(_) => {
                return Err(OpError::Invalid(
                    "env_version must be release, trial or develop".into(),
                ))
            }
        })
    }

    fn expiry(&self) -> Result<Option<Expiry>, OpError> {
        match (
            self.opt_i64("expire_time")?,
            self.opt_u32("expire_interval")?,
        ) {
            (Some(_), Some(_)) => Err(OpError::Invalid(
                "give expire_time or expire_interval, not both".into(),
            )),
            (Some(at), None) => Ok(Some(Expiry::At(at))),
            (None, Some(days)) => Ok(Some(Expiry::InDays(days))),
            (None, None) => Ok(None),
        }
    }

    fn session_key(&self) -> Result<SessionKey, OpError> {
        Ok(SessionKey::new(self.str("session_key")?))
    }

    fn blob(&mut self) -> Result<Vec<u8>, OpError> {
        self.blob
            .take()
            .ok_or_else(|| OpError::Invalid("the file's bytes are required".into()))
    }
}

fn json<T: serde::Serialize>(value: &T) -> OpResult {
    serde_json::to_value(value)
        .map(Output::Json)
        .map_err(|e| OpError::Invalid(format!("cannot represent the answer: {e}")))
}

fn scene(n: i64) -> Result<Scene, OpError> {
    Ok(match n {
        1 => Scene::Profile,
        2 => Scene::Comment,
        3 => Scene::Forum,
        4 => Scene::SocialLog,
        _ => return Err(OpError::Invalid("scene must be 1, 2, 3 or 4".into())),
    })
}

/// Runs `op` with `args` on `client`.
pub async fn run(client: &Client, op: &str, mut args: Args) -> OpResult {
    let a = &mut args;
    match op {
        // auth
        "auth.code2session" => {
            let s = client.auth().code_to_session(a.str("js_code")?).await?;
            Ok(Output::Json(json!({
                "openid": s.openid,
                "session_key": s.session_key.expose(),
                "unionid": s.unionid,
            })))
        }
        "auth.get_phone_number" => json(&client.auth().get_phone_number(a.str("code")?).await?),
        "auth.check_session_key" => {
            let key = a.session_key()?;
            client
                .auth()
                .check_session_key(a.str("openid")?, &key)
                .await?;
            Ok(Output::Json(Value::Null))
        }
        "auth.reset_session_key" => {
            let key = a.session_key()?;
            let r = client
                .auth()
                .reset_session_key(a.str("openid")?, &key)
                .await?;
            Ok(Output::Json(json!({
                "openid": r.openid,
                "session_key": r.session_key.expose(),
            })))
        }
        "auth.user_encrypt_key" => {
            let key = a.session_key()?;
            json(
                &client
                    .auth()
                    .user_encrypt_key(a.str("openid")?, &key)
                    .await?,
            )
        }
        "auth.paid_unionid" => {
            let order = match (
                a.opt_str("transaction_id")?,
                a.opt_str("mch_id")?,
                a.opt_str("out_trade_no")?,
            ) {
                (Some(t), None, None) => PaidOrder::Transaction(t.to_owned()),
                (None, Some(mchid), Some(no)) => PaidOrder::Merchant {
                    mch_id: mchid.to_owned(),
                    out_trade_no: no.to_owned(),
                },
                _ => {
                    return Err(OpError::Invalid(
                        "give transaction_id, or mch_id and out_trade_no".into(),
                    ))
                }
            };
            let unionid = client.auth().paid_unionid(a.str("openid")?, &order).await?;
            Ok(Output::Json(json!({ "unionid": unionid })))
        }
        "auth.plugin_openpid" => {
            let openpid = client.auth().plugin_openpid(a.str("code")?).await?;
            Ok(Output::Json(json!({ "openpid": openpid })))
        }

        // wxacode
        "wxacode.get" | "wxacode.get_unlimited" => wxacode(client, op, a).await,
        "wxacode.create_qrcode" => {
            let mut call = client.wxacode().qrcode(a.str("path")?);
            if let Some(w) = a.opt_u32("width")? {
                call = call.width(w);
            }
            Ok(Output::Bytes(call.send().await?.bytes.to_vec()))
        }

        // url links
        "url_link.generate_scheme" => {
            let mut call = client.url_link().scheme();
            if let Some(p) = a.opt_str("path")? {
                call = call.path(p);
            }
            if let Some(q) = a.opt_str("query")? {
                call = call.query(q);
            }
            if let Some(e) = a.env_version()? {
                call = call.env_version(e);
            }
            if let Some(e) = a.expiry()? {
                call = call.expiry(e);
            }
            Ok(Output::Json(json!({ "openlink": call.send().await? })))
        }
        "url_link.generate_nfc_scheme" => {
            let mut call = client.url_link().nfc_scheme(a.str("model_id")?);
            if let Some(p) = a.opt_str("path")? {
                call = call.path(p);
            }
            if let Some(q) = a.opt_str("query")? {
                call = call.query(q);
            }
            if let Some(e) = a.env_version()? {
                call = call.env_version(e);
            }
            if let Some(sn) = a.opt_str("sn")? {
                call = call.sn(sn);
            }
            Ok(Output::Json(json!({ "openlink": call.send().await? })))
        }
        "url_link.generate_url_link" => {
            let mut call = client.url_link().link();
            if let Some(p) = a.opt_str("path")? {
                call = call.path(p);
            }
            if let Some(q) = a.opt_str("query")? {
                call = call.query(q);
            }
            if let Some(e) = a.env_version()? {
                call = call.env_version(e);
            }
            if let Some(e) = a.expiry()? {
                call = call.expiry(e);
            }
            Ok(Output::Json(json!({ "url_link": call.send().await? })))
        }
        "url_link.generate_short_link" => {
            let mut call = client.url_link().short_link(a.str("page_url")?);
            if let Some(t) = a.opt_str("page_title")? {
                call = call.title(t);
            }
            if let Some(p) = a.opt_bool("is_permanent")? {
                call = call.permanent(p);
            }
            Ok(Output::Json(json!({ "link": call.send().await? })))
        }
        "url_link.query_scheme" => json(&client.url_link().query_scheme(a.str("scheme")?).await?),
        "url_link.query_url_link" => {
            json(&client.url_link().query_url_link(a.str("url_link")?).await?)
        }

        // subscribe messages
        "subscribe.send" => subscribe_send(client, a).await,
        "subscribe.categories" => json(&client.subscribe().categories().await?),
        "subscribe.public_templates" => {
            let ids = a.i64_list("ids")?;
            let start = a.opt_u32("start")?.unwrap_or(0);
            let limit = a.opt_u32("limit")?.unwrap_or(30);
            json(
                &client
                    .subscribe()
                    .public_templates(&ids, start, limit)
                    .await?,
            )
        }
        "subscribe.public_keywords" => {
            json(&client.subscribe().public_keywords(a.i64("tid")?).await?)
        }
        "subscribe.add_template" => {
            let kids = a.i64_list("kid_list")?;
            let id = client
                .subscribe()
                .add_template(a.i64("tid")?, &kids, a.opt_str("scene_desc")?.unwrap_or(""))
                .await?;
            Ok(Output::Json(json!({ "priTmplId": id })))
        }
        "subscribe.delete_template" => {
            client
                .subscribe()
                .delete_template(a.str("pri_tmpl_id")?)
                .await?;
            Ok(Output::Json(Value::Null))
        }
        "subscribe.templates" => json(&client.subscribe().templates().await?),

        // customer service
        "customer_service.send" => {
            let message = custom_message(a)?;
            client
                .customer_service()
                .send(a.str("touser")?, &message)
                .await?;
            Ok(Output::Json(Value::Null))
        }
        "customer_service.typing" => {
            let typing = a.opt_bool("typing")?.unwrap_or(true);
            client
                .customer_service()
                .typing(a.str("touser")?, typing)
                .await?;
            Ok(Output::Json(Value::Null))
        }

        // media
        "media.upload_image" => {
            let bytes = a.blob()?;
            let filename = a.opt_str("filename")?.unwrap_or("image.png").to_owned();
            let content_type = a.opt_str("content_type")?.unwrap_or("image/png").to_owned();
            json(
                &client
                    .media()
                    .upload_image(&filename, &content_type, bytes)
                    .await?,
            )
        }
        "media.get" => Ok(Output::Bytes(
            client.media().get(a.str("media_id")?).await?.bytes.to_vec(),
        )),

        // content security
        "security.msg_sec_check" => {
            let mut call = client.security().msg_sec_check(
                a.str("content")?,
                scene(a.i64("scene")?)?,
                a.str("openid")?,
            );
            if let Some(t) = a.opt_str("title")? {
                call = call.title(t);
            }
            if let Some(n) = a.opt_str("nickname")? {
                call = call.nickname(n);
            }
            if let Some(s) = a.opt_str("signature")? {
                call = call.signature(s);
            }
            json(&call.send().await?)
        }
        "security.img_sec_check" => {
            let bytes = a.blob()?;
            let filename = a.opt_str("filename")?.unwrap_or("image.png").to_owned();
            let content_type = a.opt_str("content_type")?.unwrap_or("image/png").to_owned();
            client
                .security()
                .img_sec_check(&filename, &content_type, bytes)
                .await?;
            Ok(Output::Json(Value::Null))
        }
        "security.media_check_async" => {
            let media_type = match a.i64("media_type")? {
                1 => MediaType::Audio,
                2 => MediaType::Image,
                _ => return Err(OpError::Invalid("media_type must be 1 or 2".into())),
            };
            json(
                &client
                    .security()
                    .media_check_async(
                        a.str("media_url")?,
                        media_type,
                        scene(a.i64("scene")?)?,
                        a.str("openid")?,
                    )
                    .await?,
            )
        }
        "security.user_risk_rank" => {
            let risk = match a.i64("scene")? {
                0 => RiskScene::Register,
                1 => RiskScene::Marketing,
                2 => RiskScene::Other,
                _ => return Err(OpError::Invalid("scene must be 0, 1 or 2".into())),
            };
            let mut call =
                client
                    .security()
                    .user_risk_rank(a.str("openid")?, risk, a.str("client_ip")?);
            if let Some(m) = a.opt_str("mobile_no")? {
                call = call.mobile(m);
            }
            if let Some(e) = a.opt_str("email_address")? {
                call = call.email(e);
            }
            if let Some(i) = a.opt_str("extended_info")? {
                call = call.extended_info(i);
            }
            if let Some(t) = a.opt_bool("is_test")? {
                call = call.test(t);
            }
            json(&call.send().await?)
        }

        // analytics
        "analytics.daily_summary" => json(&client.analytics().daily_summary(a.str("day")?).await?),
        "analytics.daily_visit_trend" => {
            json(&client.analytics().daily_visit_trend(a.str("day")?).await?)
        }
        "analytics.weekly_visit_trend" => json(
            &client
                .analytics()
                .weekly_visit_trend(a.str("monday")?)
                .await?,
        ),
        "analytics.monthly_visit_trend" => json(
            &client
                .analytics()
                .monthly_visit_trend(a.str("first_day")?)
                .await?,
        ),
        "analytics.daily_retain" => json(&client.analytics().daily_retain(a.str("day")?).await?),
        "analytics.weekly_retain" => {
            json(&client.analytics().weekly_retain(a.str("monday")?).await?)
        }
        "analytics.monthly_retain" => json(
            &client
                .analytics()
                .monthly_retain(a.str("first_day")?)
                .await?,
        ),
        "analytics.visit_page" => json(&client.analytics().visit_page(a.str("day")?).await?),
        "analytics.visit_distribution" => {
            json(&client.analytics().visit_distribution(a.str("day")?).await?)
        }
        "analytics.user_portrait" => {
            let days = a.opt_u32("days")?.unwrap_or(7);
            json(
                &client
                    .analytics()
                    .user_portrait(a.str("end_day")?, days)
                    .await?,
            )
        }

        // openapi
        "openapi.quota" => json(&client.openapi().quota(a.str("cgi_path")?).await?),
        "openapi.clear_quota" => {
            client.openapi().clear_quota().await?;
            Ok(Output::Json(Value::Null))
        }
        "openapi.clear_quota_v2" => {
            client.openapi().clear_quota_v2().await?;
            Ok(Output::Json(Value::Null))
        }
        "openapi.rid" => json(&client.openapi().rid(a.str("rid")?).await?),

        // anything else, through the same pipeline
        "call" => call(client, a).await,
        _ => Err(OpError::Invalid(format!("unknown operation {op}"))),
    }
}

async fn wxacode(client: &Client, op: &str, a: &Args) -> OpResult {
    macro_rules! look {
        ($call:expr) => {{
            let mut call = $call;
            if let Some(w) = a.opt_u32("width")? {
                call = call.width(w);
            }
            if let Some(auto) = a.opt_bool("auto_color")? {
                call = call.auto_color(auto);
            }
            if let Some(c) = a.present("line_color") {
                let Value::Object(c) = c else {
                    return Err(OpError::Invalid(
                        "line_color must be a dict with r, g and b".into(),
                    ));
                };
                let part = |k: &str| {
                    c.get(k)
                        .and_then(Value::as_u64)
                        .and_then(|n| u8::try_from(n).ok())
                        .ok_or_else(|| {
                            OpError::Invalid("line_color needs r, g and b in 0..=255".into())
                        })
                };
                call = call.line_color(part("r")?, part("g")?, part("b")?);
            }
            if let Some(h) = a.opt_bool("is_hyaline")? {
                call = call.hyaline(h);
            }
            if let Some(e) = a.env_version()? {
                call = call.env_version(e);
            }
            call
        }};
    }
    let binary = if op == "wxacode.get" {
        look!(client.wxacode().get(a.str("path")?)).send().await?
    } else {
        let mut call = look!(client.wxacode().unlimited(a.str("scene")?));
        if let Some(p) = a.opt_str("page")? {
            call = call.page(p);
        }
        if let Some(c) = a.opt_bool("check_path")? {
            call = call.check_path(c);
        }
        call.send().await?
    };
    Ok(Output::Bytes(binary.bytes.to_vec()))
}

async fn subscribe_send(client: &Client, a: &Args) -> OpResult {
    let mut data = SubscribeData::new();
    match a.present("data") {
        Some(Value::Object(fields)) => {
            for (key, value) in fields {
                // `{"thing1": "text"}` or WeChat's own `{"thing1": {"value": "text"}}`.
                let text = match value {
                    Value::String(s) => s.as_str(),
                    Value::Object(o) => {
                        o.get("value").and_then(Value::as_str).ok_or_else(|| {
                            OpError::Invalid(format!("data.{key} needs a string value"))
                        })?
                    }
                    _ => return Err(OpError::Invalid(format!("data.{key} must be a string"))),
                };
                data = data.set(key, text)?;
            }
        }
        _ => return Err(OpError::Invalid("data must be a dict".into())),
    }
    let mut call = client
        .subscribe()
        .send(a.str("touser")?, a.str("template_id")?, data);
    if let Some(p) = a.opt_str("page")? {
        call = call.page(p);
    }
    if let Some(s) = a.opt_str("miniprogram_state")? {
        call = call.state(match s {
            "developer" => MiniprogramState::Developer,
            "trial" => MiniprogramState::Trial,
            "formal" => MiniprogramState::Formal,
            _ => {
                return Err(OpError::Invalid(
                    "miniprogram_state must be developer, trial or formal".into(),
                ))
            }
        });
    }
    if let Some(l) = a.opt_str("lang")? {
        call = call.lang(match l {
            "zh_CN" => Lang::ZhCn,
            "en_US" => Lang::EnUs,
            "zh_HK" => Lang::ZhHk,
            "zh_TW" => Lang::ZhTw,
            _ => {
                return Err(OpError::Invalid(
                    "lang must be zh_CN, en_US, zh_HK or zh_TW".into(),
                ))
            }
        });
    }
    json(&call.send().await?)
}

fn custom_message(a: &Args) -> Result<weapp::api::customer_service::CustomMessage, OpError> {
    use weapp::api::customer_service::{CustomMessage, LinkCard};
    let part = |name: &str| -> Result<&Map<String, Value>, OpError> {
        match a.present(name) {
            Some(Value::Object(o)) => Ok(o),
            _ => Err(OpError::Invalid(format!("{name} must be a dict"))),
        }
    };
    let field = |o: &Map<String, Value>, k: &str| -> Result<String, OpError> {
        o.get(k)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| OpError::Invalid(format!("{k} is required")))
    };
    Ok(match a.str("msgtype")? {
        "text" => CustomMessage::Text(field(part("text")?, "content")?),
        "image" => CustomMessage::Image {
            media_id: field(part("image")?, "media_id")?,
        },
        "link" => {
            let o = part("link")?;
            CustomMessage::Link(LinkCard {
                title: field(o, "title")?,
                description: field(o, "description")?,
                url: field(o, "url")?,
                thumb_url: field(o, "thumb_url")?,
            })
        }
        "miniprogrampage" => {
            let o = part("miniprogrampage")?;
            CustomMessage::MiniProgramPage {
                title: field(o, "title")?,
                pagepath: field(o, "pagepath")?,
                thumb_media_id: field(o, "thumb_media_id")?,
            }
        }
        _ => {
            return Err(OpError::Invalid(
                "msgtype must be text, image, link or miniprogrampage".into(),
            ))
        }
    })
}

async fn call(client: &Client, a: &Args) -> OpResult {
    let method = match a.str("method")?.to_ascii_uppercase().as_str() {
        "GET" => Method::Get,
        "POST" => Method::Post,
        _ => return Err(OpError::Invalid("method must be GET or POST".into())),
    };
    let path = a.str("path")?;
    let body = match a.present("json") {
        None => Body::Empty,
        Some(v) => {
            Body::Json(serde_json::to_vec(v).map_err(|e| OpError::Invalid(format!("json: {e}")))?)
        }
    };
    Ok(match client.call_raw(method, path, body).await? {
        RawOutput::Json(v) => Output::Json(v),
        RawOutput::Bytes(b) => Output::Bytes(b.bytes.to_vec()),
    })
}
