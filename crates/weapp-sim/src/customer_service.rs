//! Customer service and media: users writing to the app or entering the session (which opens
//! the reply windows: 48 hours / 5 replies, 1 minute / 2 replies), replies and "typing", and
//! temporary image media that lives 3 days.

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rand::Rng;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{WxError, WxResult};
use crate::http::{answer, body, from_wx, json_body, ok, p, try_resp, wx_error, Params};
use crate::journal::Event;
use crate::random::random_alnum;
pub use crate::state::customer_service::UserAction;
use crate::tokens::with_token;
use crate::world::{Sim, World};

/// How long temporary media lives (3 days).
pub const MEDIA_TTL_SECS: i64 = 3 * 86_400;

impl Sim {
    /// A user writes to customer service (`text`) or enters the session (`enter_session`):
    /// recorded (it opens the reply windows) and pushed if the app has a push URL.
    ///
    /// # Errors
    /// 40013, 40003, 40097 for an unknown kind.
    pub async fn user_message(
        &self,
        appid: &str,
        openid: &str,
        kind: &str,
        content: Option<String>,
    ) -> WxResult<Option<crate::push::Delivery>> {
        let message = match kind {
            "text" => {
                json!({"FromUserName": openid, "MsgType": "text", "Content": content.clone().unwrap_or_default(), "MsgId": rand::thread_rng().gen_range(1..i64::MAX)})
            }
            "enter_session" => {
                json!({"FromUserName": openid, "MsgType": "event", "Event": "user_enter_tempsession", "SessionFrom": content.clone().unwrap_or_default()})
            }
            other => {
                return Err(WxError::new(
                    40097,
                    format!("invalid args: kind must be text or enter_session, not {other}"),
                ))
            }
        };
        {
            let mut w = self.world();
            let now = self.now_in(&w);
            let app = w.app_with_user(appid, openid)?;
            if let Some(u) = app.users.get_mut(openid) {
                u.last_seen = now;
            }
            app.cs.user_actions.insert(
                openid.to_owned(),
                UserAction {
                    kind: kind.to_owned(),
                    at: now,
                    replies: 0,
                    typing: false,
                },
            );
            self.record_at(
                now,
                Event::new("user_action")
                    .appid(appid)
                    .openid(openid)
                    .detail(json!({"action": kind, "content": content})),
            );
        }
        self.push_if_configured(appid, message).await
    }

    /// The user's last customer-service action.
    pub fn last_user_action(&self, appid: &str, openid: &str) -> Option<UserAction> {
        self.world()
            .apps
            .get(appid)?
            .cs
            .user_actions
            .get(openid)
            .cloned()
    }

    /// `message/custom/send`: allowed within 48 h of a user message (5 replies) or 1 minute
    /// of entering the session (2 replies).
    ///
    /// # Errors
    /// 40003, 40008 unknown msgtype, 40007 unknown media, 44004 empty text, 45015 window
    /// closed, 45047 replies used up.
    pub fn send_custom(&self, appid: &str, body: &Value) -> WxResult<()> {
        let touser = body.get("touser").and_then(Value::as_str).unwrap_or("");
        let msgtype = body.get("msgtype").and_then(Value::as_str).unwrap_or("");
        let mut w = self.world();
        let now = self.now_in(&w);
        let media_ok = |w: &World, id: &str| {
            w.media
                .items
                .get(id)
                .is_some_and(|(a, _, _, at)| a == appid && now - at < MEDIA_TTL_SECS * 1000)
        };
        let content = body.get(msgtype);
        match msgtype {
            "text" => {
                if content
                    .and_then(|c| c.get("content"))
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .is_empty()
                {
                    return Err(WxError::new(44004, "empty content"));
                }
            }
            "image" => {
                let id = content
                    .and_then(|c| c.get("media_id"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if !media_ok(&w, id) {
                    return Err(WxError::new(40007, "invalid media_id"));
                }
            }
            "link" => {
                let has = |k: &str| {
                    content
                        .and_then(|c| c.get(k))
                        .and_then(Value::as_str)
                        .is_some_and(|v| !v.is_empty())
                };
                if !(has("title") && has("url")) {
                    return Err(WxError::new(40097, "invalid args"));
                }
            }
            "miniprogrampage" => {
                let id = content
                    .and_then(|c| c.get("thumb_media_id"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if !media_ok(&w, id) {
                    return Err(WxError::new(40007, "invalid media_id"));
                }
            }
            _ => return Err(WxError::new(40008, "invalid message type")),
        }
        let app = w.app_with_user(appid, touser)?;
        let action = app.cs.user_actions.get_mut(touser).ok_or_else(|| {
            WxError::new(
                45015,
                "response out of time limit or subscription is canceled",
            )
        })?;
        let (window_ms, max) = if action.kind == "enter_session" {
            (60_000, 2)
        } else {
            (48 * 3_600_000, 5)
        };
        if now - action.at >= window_ms {
            return Err(WxError::new(
                45015,
                "response out of time limit or subscription is canceled",
            ));
        }
        if action.replies >= max {
            return Err(WxError::new(45047, "out of response count limit"));
        }
        action.replies += 1;
        action.typing = false;
        let message = json!({"openid": touser, "custom": true, "msgtype": msgtype, "content": content, "sent_at": now / 1000});
        app.inbox.push(message.clone());
        self.record_at(
            now,
            Event::new("message")
                .appid(appid)
                .openid(touser)
                .path("/cgi-bin/message/custom/send")
                .detail(json!({"message_kind": "customer_service", "message": message})),
        );
        Ok(())
    }

    /// `message/custom/typing`.
    ///
    /// # Errors
    /// 40003, 45072 bad command, 45080 no user message in the last 30 s, 45081 already typing.
    pub fn typing(&self, appid: &str, body: &Value) -> WxResult<()> {
        let touser = body.get("touser").and_then(Value::as_str).unwrap_or("");
        let command = body.get("command").and_then(Value::as_str).unwrap_or("");
        let mut w = self.world();
        let now = self.now_in(&w);
        let app = w.app_with_user(appid, touser)?;
        let typing = match command {
            "Typing" => true,
            "CancelTyping" => false,
            _ => return Err(WxError::new(45072, "invalid command")),
        };
        let action = app
            .cs
            .user_actions
            .get_mut(touser)
            .filter(|a| now - a.at < 30_000)
            .ok_or_else(|| {
                WxError::new(
                    45080,
                    "need sending message to user  orrecving message from user in the last 30 seconds before typing",
                )
            })?;
        if typing && action.typing {
            return Err(WxError::new(45081, "you are already typing"));
        }
        action.typing = typing;
        Ok(())
    }

    /// `media/upload?type=image`.
    ///
    /// # Errors
    /// 40004 not an image type, 40005 empty or not an image.
    pub fn upload_media(
        &self,
        appid: &str,
        kind: &str,
        content_type: &str,
        bytes: Vec<u8>,
    ) -> WxResult<Value> {
        if kind != "image" {
            return Err(WxError::new(40004, "invalid media type"));
        }
        if bytes.is_empty()
            || !(content_type.starts_with("image/")
                || bytes.starts_with(b"\x89PNG")
                || bytes.starts_with(&[0xff, 0xd8]))
        {
            return Err(WxError::new(40005, "invalid file type"));
        }
        let mut w = self.world();
        let now = self.now_in(&w);
        w.app_mut(appid)?;
        let id = random_alnum(64);
        w.media.items.insert(
            id.clone(),
            (appid.to_owned(), content_type.to_owned(), bytes, now),
        );
        Ok(json!({"type": "image", "media_id": id, "created_at": now / 1000}))
    }

    /// `media/get`.
    ///
    /// # Errors
    /// 40007 unknown, foreign or expired (3 days).
    pub fn get_media(&self, appid: &str, id: &str) -> WxResult<(String, Vec<u8>)> {
        let w = self.world();
        let now = self.now_in(&w);
        match w.media.items.get(id) {
            Some((a, ct, bytes, at)) if a == appid && now - at < MEDIA_TTL_SECS * 1000 => {
                Ok((ct.clone(), bytes.clone()))
            }
            _ => Err(WxError::new(40007, "invalid media_id")),
        }
    }
}

async fn custom_send(State(sim): State<Sim>, Query(q): Params, body: Bytes) -> Response {
    with_token(&sim, "/cgi-bin/message/custom/send", &q, |appid| {
        sim.send_custom(appid, &json_body(&body)?).map(|()| ok())
    })
}

async fn custom_typing(State(sim): State<Sim>, Query(q): Params, body: Bytes) -> Response {
    with_token(&sim, "/cgi-bin/message/custom/typing", &q, |appid| {
        sim.typing(appid, &json_body(&body)?).map(|()| ok())
    })
}

async fn media_upload(
    State(sim): State<Sim>,
    Query(q): Params,
    mut form: axum::extract::Multipart,
) -> Response {
    let appid = match sim.check_api_token(p(&q, "access_token"), "/cgi-bin/media/upload") {
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
        .check_api_token(p(&q, "access_token"), "/cgi-bin/media/get")
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

/// The WeChat routes of this domain.
pub(crate) fn routes() -> Router<Sim> {
    Router::new()
        .route("/cgi-bin/message/custom/send", post(custom_send))
        .route("/cgi-bin/message/custom/typing", post(custom_typing))
        .route("/cgi-bin/media/upload", post(media_upload))
        .route("/cgi-bin/media/get", get(media_get))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserMessageReq {
    appid: String,
    openid: String,
    kind: String,
    content: Option<String>,
}

async fn user_message(State(sim): State<Sim>, raw: Bytes) -> Response {
    let req: UserMessageReq = try_resp!(body(&raw));
    match sim
        .user_message(&req.appid, &req.openid, &req.kind, req.content)
        .await
    {
        Ok(d) => Json(json!({"pushed": d})).into_response(),
        Err(e) => from_wx(e),
    }
}

/// The `/_sim` routes of this domain: a user writing to customer service.
pub(crate) fn control() -> Router<Sim> {
    Router::new().route("/_sim/user-message", post(user_message))
}
