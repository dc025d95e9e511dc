//! Delivering pushes the way WeChat does: sign, optionally encrypt (compatible or safe mode),
//! render as XML or JSON, POST with a 5-second timeout, and try up to 3 times. Independent of the
//! SDK's implementation on purpose.

use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};

use aes::cipher::{block_padding::NoPadding, BlockEncryptMut, KeyIvInit};
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sha1::{Digest, Sha1};

use crate::error::{WxError, WxResult};
use crate::http::{body, from_wx, try_resp};
use crate::journal::Event;
pub use crate::state::push::{PushFormat, PushMode, PushTarget};
use crate::world::Sim;

impl PushTarget {
    /// Checks the settings the way the console does.
    ///
    /// # Errors
    /// A message naming the problem.
    pub fn validate(&self) -> Result<(), String> {
        if !self.url.starts_with("http://") && !self.url.starts_with("https://") {
            return Err("url must be http(s)".into());
        }
        if self.token.len() < 3
            || self.token.len() > 32
            || !self.token.chars().all(|c| c.is_ascii_alphanumeric())
        {
            return Err("token must be 3–32 letters or digits".into());
        }
        match (&self.encoding_aes_key, self.mode) {
            (None, PushMode::Plain) => Ok(()),
            (None, _) => Err("encoding_aes_key is required in compatible and safe mode".into()),
            (Some(k), _) if aes_key(k).is_none() => {
                Err("encoding_aes_key must be 43 base64 characters".into())
            }
            _ => Ok(()),
        }
    }
}

/// One delivery attempt.
#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    /// HTTP status, if a response came.
    pub status: Option<u16>,
    /// Response body (first 4 KiB).
    pub body: Option<String>,
    /// Transport error or timeout.
    pub error: Option<String>,
    /// Milliseconds taken.
    pub elapsed_ms: u64,
}

/// What happened to a push.
#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    /// True when an attempt got HTTP 200 within 5 seconds.
    pub delivered: bool,
    /// Every attempt, in order.
    pub attempts: Vec<Attempt>,
    /// The plaintext message that was pushed.
    pub message: Value,
}

pub(crate) fn aes_key(text: &str) -> Option<[u8; 32]> {
    if text.len() != 43 {
        return None;
    }
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
    );
    engine.decode(format!("{text}=")).ok()?.try_into().ok()
}

pub(crate) fn sha1_sorted(parts: &[&str]) -> String {
    let mut v = parts.to_vec();
    v.sort_unstable();
    hex::encode(Sha1::digest(v.concat().as_bytes()))
}

pub(crate) fn encrypt(key: &[u8; 32], msg: &str, appid: &str) -> String {
    let mut buf: Vec<u8> = rand::random::<[u8; 16]>().to_vec();
    buf.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    buf.extend_from_slice(msg.as_bytes());
    buf.extend_from_slice(appid.as_bytes());
    let pad = 32 - buf.len() % 32;
    buf.extend(std::iter::repeat_n(pad as u8, pad));
    let len = buf.len();
    cbc::Encryptor::<aes::Aes256>::new_from_slices(key, &key[..16])
        .expect("32-byte key")
        .encrypt_padded_mut::<NoPadding>(&mut buf, len)
        .expect("whole blocks");
    base64::engine::general_purpose::STANDARD.encode(buf)
}

/// WeChat-style XML: strings in CDATA, numbers bare, arrays repeated, objects nested.
pub fn to_xml(v: &Value) -> String {
    fn el(out: &mut String, name: &str, v: &Value) {
        match v {
            Value::Array(items) => items.iter().for_each(|i| el(out, name, i)),
            Value::Object(m) => {
                out.push_str(&format!("<{name}>"));
                m.iter().for_each(|(k, v)| el(out, k, v));
                out.push_str(&format!("</{name}>"));
            }
            Value::String(s) => out.push_str(&format!(
                "<{name}><![CDATA[{}]]></{name}>",
                s.replace("]]>", "]]]]><![CDATA[>")
            )),
            Value::Null => out.push_str(&format!("<{name}></{name}>")),
            other => out.push_str(&format!("<{name}>{other}</{name}>")),
        }
    }
    let mut out = String::new();
    el(&mut out, "xml", v);
    out
}

/// In XML, WeChat wraps a subscribe event's `List` in an event-specific element
/// (`<SubscribeMsgPopupEvent><List>…</List></SubscribeMsgPopupEvent>`); in JSON it is bare.
fn xml_shape(v: &Value) -> Value {
    let wrapper = match v.get("Event").and_then(Value::as_str) {
        Some("subscribe_msg_popup_event") => "SubscribeMsgPopupEvent",
        Some("subscribe_msg_change_event") => "SubscribeMsgChangeEvent",
        Some("subscribe_msg_sent_event") => "SubscribeMsgSentEvent",
        _ => return v.clone(),
    };
    let mut out = v.clone();
    if let Some(map) = out.as_object_mut() {
        if let Some(list) = map.remove("List") {
            map.insert(wrapper.into(), json!({"List": list}));
        }
    }
    out
}

/// Builds the URL and body of one push of `message` (already completed with ToUserName and
/// CreateTime) for `appid` under `target`, signed at `timestamp`.
pub fn build(
    target: &PushTarget,
    appid: &str,
    message: &Map<String, Value>,
    timestamp: i64,
) -> (String, String) {
    let ts = timestamp.to_string();
    let nonce = format!("{}", rand::random::<u32>());
    let render = |v: &Value| match target.format {
        PushFormat::Json => v.to_string(),
        PushFormat::Xml => to_xml(&xml_shape(v)),
    };
    let plain = render(&Value::Object(message.clone()));
    let mut query = vec![
        ("signature", sha1_sorted(&[&target.token, &ts, &nonce])),
        ("timestamp", ts.clone()),
        ("nonce", nonce.clone()),
    ];
    if let Some(openid) = message.get("FromUserName").and_then(Value::as_str) {
        query.push(("openid", openid.to_owned()));
    }
    let body = match (
        target.mode,
        target.encoding_aes_key.as_deref().and_then(aes_key),
    ) {
        (PushMode::Plain, _) | (_, None) => plain,
        (mode, Some(key)) => {
            let enc = encrypt(&key, &plain, appid);
            query.push(("encrypt_type", "aes".into()));
            query.push((
                "msg_signature",
                sha1_sorted(&[&target.token, &ts, &nonce, &enc]),
            ));
            let mut envelope = if mode == PushMode::Compatible {
                message.clone()
            } else {
                Map::new()
            };
            if mode == PushMode::Safe {
                envelope.insert(
                    "ToUserName".into(),
                    message.get("ToUserName").cloned().unwrap_or(Value::Null),
                );
            }
            envelope.insert("Encrypt".into(), Value::String(enc));
            render(&Value::Object(envelope))
        }
    };
    let qs: Vec<String> = query
        .iter()
        .map(|(k, v)| format!("{k}={}", urlencode(v)))
        .collect();
    let sep = if target.url.contains('?') { '&' } else { '?' };
    (format!("{}{sep}{}", target.url, qs.join("&")), body)
}

pub(crate) fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// POSTs a built push up to 3 times, each with a 5-second timeout, stopping at the first 200.
pub async fn deliver(
    http: &reqwest::Client,
    url: &str,
    body: &str,
    format: PushFormat,
    message: Value,
) -> Delivery {
    let content_type = match format {
        PushFormat::Xml => "text/xml",
        PushFormat::Json => "application/json",
    };
    let mut attempts = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let result = http
            .post(url)
            .header("content-type", content_type)
            .body(body.to_owned())
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        let attempt = match result {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let text = resp.text().await.unwrap_or_default();
                Attempt {
                    status: Some(status),
                    body: Some(text.chars().take(4096).collect()),
                    error: None,
                    elapsed_ms: started.elapsed().as_millis() as u64,
                }
            }
            Err(e) => Attempt {
                status: None,
                body: None,
                error: Some(if e.is_timeout() {
                    "timed out after 5 s".into()
                } else {
                    e.without_url().to_string()
                }),
                elapsed_ms: started.elapsed().as_millis() as u64,
            },
        };
        let ok = attempt.status == Some(200);
        attempts.push(attempt);
        if ok {
            return Delivery {
                delivered: true,
                attempts,
                message,
            };
        }
    }
    Delivery {
        delivered: false,
        attempts,
        message,
    }
}

/// The original id (`gh_…`) the simulator gives an app: stable per appid.
pub fn original_id(appid: &str) -> String {
    format!("gh_{}", &hex::encode(Sha1::digest(appid.as_bytes()))[..12])
}

/// Fills in `ToUserName` and `CreateTime` like WeChat.
pub fn complete(appid: &str, mut message: Map<String, Value>, now_secs: i64) -> Map<String, Value> {
    message
        .entry("ToUserName")
        .or_insert_with(|| json!(original_id(appid)));
    message
        .entry("CreateTime")
        .or_insert_with(|| json!(now_secs));
    message
}

impl Sim {
    /// Sets where and how WeChat pushes this app's messages.
    ///
    /// # Errors
    /// 40013 unknown app; 47001 with the reason for invalid settings.
    pub fn set_push_target(&self, appid: &str, target: PushTarget) -> WxResult<()> {
        target.validate().map_err(|e| WxError::new(47001, e))?;
        let mut w = self.world();
        let app = w.app_mut(appid)?;
        app.push = Some(target);
        Ok(())
    }

    /// Pushes `message` (MsgType and its fields; ToUserName and CreateTime are filled in) to
    /// the app's configured URL, the way WeChat would, and reports what happened. This is also
    /// the hook the simulator's own pushes (user messages, subscribe popups, media checks) use.
    ///
    /// # Errors
    /// 40013 unknown app; 47001 when no push URL is configured or `MsgType` is missing.
    pub async fn push(&self, appid: &str, message: Map<String, Value>) -> WxResult<Delivery> {
        if !message.contains_key("MsgType") {
            return Err(WxError::new(47001, "message needs a MsgType"));
        }
        let (target, crypto_appid, now) = {
            let w = self.world();
            let app = w
                .apps
                .get(appid)
                .ok_or_else(|| WxError::new(40013, "invalid appid"))?;
            // A mini program that authorized a third-party platform with a message URL has its
            // messages pushed there, encrypted by the platform's key to the platform's appid.
            let (target, crypto_appid) = match w.platforms.message_target(appid) {
                Some((t, component)) => (t, component),
                None => (
                    app.push.clone().ok_or_else(|| {
                        WxError::new(
                            47001,
                            "no push URL configured for this app (POST /_sim/apps/{appid}/push-config)",
                        )
                    })?,
                    appid.to_owned(),
                ),
            };
            (target, crypto_appid, self.now_in(&w) / 1000)
        };
        let message = complete(appid, message, now);
        let (url, body) = build(&target, &crypto_appid, &message, now);
        let started = Instant::now();
        let delivery = deliver(
            self.http(),
            &url,
            &body,
            target.format,
            Value::Object(message),
        )
        .await;
        let mut event = Event::new("push").appid(appid).detail(json!({
            "url": target.url,
            "mode": target.mode,
            "format": target.format,
            "delivered": delivery.delivered,
            "attempts": delivery.attempts,
            "message": delivery.message,
        }));
        event.latency_ms = Some(started.elapsed().as_millis() as u64);
        if let Some(openid) = delivery.message.get("FromUserName").and_then(Value::as_str) {
            event = event.openid(openid);
        }
        self.record(event);
        Ok(delivery)
    }

    fn has_push(&self, appid: &str) -> bool {
        let w = self.world();
        w.apps.get(appid).is_some_and(|a| a.push.is_some())
            || w.platforms.message_target(appid).is_some()
    }

    /// Pushes `message` if the app has a push URL (the simulator's own pushes).
    pub(crate) async fn push_if_configured(
        &self,
        appid: &str,
        message: Value,
    ) -> WxResult<Option<Delivery>> {
        if !self.has_push(appid) {
            return Ok(None);
        }
        let Value::Object(map) = message else {
            unreachable!("built as an object")
        };
        self.push(appid, map).await.map(Some)
    }
}

async fn push_config(State(sim): State<Sim>, Path(appid): Path<String>, raw: Bytes) -> Response {
    let target: PushTarget = try_resp!(body(&raw));
    match sim.set_push_target(&appid, target) {
        Ok(()) => Json(json!({})).into_response(),
        Err(e) => from_wx(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PushReq {
    appid: String,
    message: Map<String, Value>,
}

async fn push(State(sim): State<Sim>, raw: Bytes) -> Response {
    let req: PushReq = try_resp!(body(&raw));
    match sim.push(&req.appid, req.message).await {
        Ok(d) => Json(d).into_response(),
        Err(e) => from_wx(e),
    }
}

/// The `/_sim` routes of this domain: the console's push settings and a push on demand.
pub(crate) fn control() -> Router<Sim> {
    Router::new()
        .route("/_sim/apps/{appid}/push-config", post(push_config))
        .route("/_sim/push", post(push))
}
