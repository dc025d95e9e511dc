//! Content security and risk: `msg_sec_check` (v2 verdicts from a keyword list, the 2-hour
//! visitor rule; v1's 87014), `img_sec_check`, `media_check_async` (the verdict pushed later as
//! `wxa_media_check`) and `getuserriskrank` — all deterministic.

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use rand::Rng;
use serde_json::{json, Value};

use crate::error::{WxError, WxResult};
use crate::http::{answer, json_body, ok, ok_with, p, wx_error, Params};
use crate::random::random_hex;
use crate::tokens::with_token;
use crate::world::Sim;

/// The simulator's deterministic content verdicts: (keyword, label, suggest). Anything without
/// one of these keywords passes with label 100.
pub const VERDICT_KEYWORDS: &[(&str, i64, &str)] = &[
    ("加微信", 10001, "review"),
    ("政治敏感", 20001, "risky"),
    ("色情", 20002, "risky"),
    ("porn", 20002, "risky"),
    ("傻逼", 20003, "risky"),
    ("赌博", 20006, "risky"),
    ("刷单", 20008, "risky"),
    ("低俗", 20012, "risky"),
    ("盗版", 20013, "review"),
];

impl Sim {
    fn recent_visitor(&self, appid: &str, openid: &str) -> WxResult<()> {
        let mut w = self.world();
        let now = self.now_in(&w);
        let app = w.app_with_own_user(appid, openid)?;
        let seen = app.users.get(openid).map_or(0, |u| u.last_seen);
        if now - seen > 2 * 3_600_000 {
            return Err(WxError::new(61010, "code is expired"));
        }
        Ok(())
    }

    /// `msg_sec_check` (v2 with `version: 2`, else v1).
    ///
    /// # Errors
    /// v1: 87014 for risky content. v2: 40097 bad arguments, 40003, 61010 not a visitor in the
    /// last 2 hours.
    pub fn msg_sec_check(&self, appid: &str, body: &Value) -> WxResult<Value> {
        let content = body.get("content").and_then(Value::as_str).unwrap_or("");
        if content.chars().count() > 2500 {
            return Err(WxError::new(40097, "invalid args"));
        }
        let hit = VERDICT_KEYWORDS
            .iter()
            .find(|(k, _, _)| content.contains(k));
        if body.get("version").and_then(Value::as_i64) != Some(2) {
            return match hit {
                Some(_) => Err(WxError::new(87014, "risky content")),
                None => Ok(ok()),
            };
        }
        body.get("scene")
            .and_then(Value::as_i64)
            .filter(|s| (1..=4).contains(s))
            .ok_or_else(|| WxError::new(40129, "invalid scene"))?;
        let openid = body
            .get("openid")
            .and_then(Value::as_str)
            .ok_or_else(|| WxError::new(40003, "invalid openid"))?;
        self.recent_visitor(appid, openid)?;
        let (label, suggest, keyword) =
            hit.map_or((100, "pass", None), |(k, l, s)| (*l, *s, Some(*k)));
        let mut detail = json!({"strategy": "content_model", "errcode": 0, "suggest": suggest, "label": label, "prob": 90});
        if let Some(k) = keyword {
            detail["keyword"] = json!(k);
        }
        Ok(
            json!({"errcode": 0, "errmsg": "ok", "result": {"suggest": suggest, "label": label}, "detail": [detail], "trace_id": format!("{}", random_hex(12))}),
        )
    }

    /// `img_sec_check`: an image whose bytes contain `RISKY` is risky.
    ///
    /// # Errors
    /// 87014 risky, 40005 empty file.
    pub fn img_sec_check(&self, bytes: &[u8]) -> WxResult<()> {
        if bytes.is_empty() {
            return Err(WxError::new(40005, "invalid file type"));
        }
        if bytes.windows(5).any(|w| w == b"RISKY") {
            return Err(WxError::new(87014, "risky content"));
        }
        Ok(())
    }

    /// `getuserriskrank`: a deterministic rank per openid (0 for `is_test`).
    ///
    /// # Errors
    /// 40013 appid of another app, 40003, 40097 bad scene or missing client_ip.
    pub fn risk_rank(&self, appid: &str, body: &Value) -> WxResult<Value> {
        if body.get("appid").and_then(Value::as_str) != Some(appid) {
            return Err(WxError::new(40013, "invalid appid"));
        }
        body.get("scene")
            .and_then(Value::as_i64)
            .filter(|s| (0..=2).contains(s))
            .ok_or_else(|| WxError::new(40129, "invalid scene"))?;
        body.get("client_ip")
            .and_then(Value::as_str)
            .filter(|ip| !ip.is_empty())
            .ok_or_else(|| WxError::new(40097, "invalid args"))?;
        let openid = body.get("openid").and_then(Value::as_str).unwrap_or("");
        self.world().app_with_own_user(appid, openid)?;
        let rank = if body
            .get("is_test")
            .and_then(Value::as_bool)
            .unwrap_or(false)
        {
            0
        } else {
            openid
                .bytes()
                .fold(0u32, |a, b| a.wrapping_mul(31).wrapping_add(u32::from(b)))
                % 5
        };
        Ok(
            json!({"errcode": 0, "errmsg": "getuserriskrank succ", "risk_rank": rank, "unoin_id": rand::thread_rng().gen_range(1..i64::MAX)}),
        )
    }

    /// `media_check_async`: validates the request and returns `(trace_id, verdict event)`. The
    /// verdict is deterministic — a `media_url` containing `risky` or `porn` is risky (label
    /// 20002), one containing `review` needs review (21000), anything else passes (100) — and is
    /// pushed as `wxa_media_check` shortly after the call returns.
    ///
    /// # Errors
    /// 40097 for invalid arguments (version must be 2, media_type 1|2, scene 1–4, an http(s)
    /// URL), 40003 for an unknown openid.
    pub fn media_check_async(
        &self,
        appid: &str,
        body: &Value,
    ) -> WxResult<(String, serde_json::Map<String, Value>)> {
        let invalid = |_what: &str| WxError::new(40097, "invalid args");
        let url = body
            .get("media_url")
            .and_then(Value::as_str)
            .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
            .ok_or_else(|| invalid("media_url"))?;
        let media_type = body
            .get("media_type")
            .and_then(Value::as_i64)
            .filter(|t| matches!(t, 1 | 2))
            .ok_or_else(|| WxError::new(40004, "invalid media type"))?;
        body.get("version")
            .and_then(Value::as_i64)
            .filter(|v| *v == 2)
            .ok_or_else(|| invalid("version must be 2"))?;
        body.get("scene")
            .and_then(Value::as_i64)
            .filter(|s| (1..=4).contains(s))
            .ok_or_else(|| invalid("scene"))?;
        let openid = body
            .get("openid")
            .and_then(Value::as_str)
            .ok_or_else(|| WxError::new(40003, "invalid openid"))?;
        self.world().app_with_own_user(appid, openid)?;
        let lower = url.to_ascii_lowercase();
        let (suggest, label) = if lower.contains("risky") || lower.contains("porn") {
            ("risky", 20002)
        } else if lower.contains("review") {
            ("review", 21000)
        } else {
            ("pass", 100)
        };
        let trace_id = format!("{}-{}", random_hex(12), media_type);
        let event = json!({
            "FromUserName": openid, "MsgType": "event", "Event": "wxa_media_check",
            "appid": appid, "trace_id": trace_id, "version": 2, "errcode": 0, "errmsg": "ok",
            "result": {"suggest": suggest, "label": label},
            "detail": [{"strategy": "content_model", "errcode": 0, "suggest": suggest, "label": label, "prob": 90}],
        });
        let Value::Object(event) = event else {
            unreachable!("built as an object")
        };
        Ok((trace_id, event))
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
    let appid = match sim.check_api_token(p(&q, "access_token"), "/wxa/img_sec_check") {
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
        sim.img_sec_check(&bytes).map(|()| ok()),
    )
}

async fn getuserriskrank(State(sim): State<Sim>, Query(q): Params, body: Bytes) -> Response {
    with_token(&sim, "/wxa/getuserriskrank", &q, |appid| {
        sim.risk_rank(appid, &json_body(&body)?)
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

/// The WeChat routes of this domain.
pub(crate) fn routes() -> Router<Sim> {
    Router::new()
        .route("/wxa/msg_sec_check", post(msg_sec_check))
        .route("/wxa/img_sec_check", post(img_sec_check))
        .route("/wxa/getuserriskrank", post(getuserriskrank))
        .route("/wxa/media_check_async", post(media_check_async))
}
