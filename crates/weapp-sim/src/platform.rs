//! The third-party platform ("component", 开放平台) side of WeChat, for platforms that run mini
//! programs on behalf of merchants: `component_verify_ticket` pushes every 10 minutes (and on
//! `api_start_push_ticket`), the component token and its ticket rules (61005/61006), pre-auth
//! codes, the merchant's authorization (a control call plays the merchant scanning the page:
//! the redirect with `auth_code` and the `authorized` push), authorizer tokens and refresh
//! tokens with re-authorization and de-authorization, the authorizer list, and login through
//! `/sns/component/jscode2session`. See `wechat-open-platform.md` §9 for the behaviours.
//!
//! Authorizer tokens live in the same table as the apps' own tokens: every mini program API of
//! the simulator accepts them for the authorizer's appid — when the merchant granted the
//! platform the permission set the API belongs to ([`permission_set`]; 61007 otherwise).
//! A platform may have an IP whitelist: component calls from elsewhere answer 61004.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::clock::{day_of, month_of};
use crate::error::{invalid_credential, WxError, WxResult};
use crate::http::{answer, body, control_error, from_wx, json_body, p, s, try_resp};
use crate::journal::Event;
use crate::push::{
    aes_key, deliver, encrypt, sha1_sorted, to_xml, urlencode, Delivery, PushFormat,
};
use crate::random::random_alnum;
pub use crate::state::platform::permission_set;
use crate::state::platform::{fresh, Authorization, ComponentToken, Platform};
use crate::tokens::{TokenKind, TOKEN_OVERLAP, TOKEN_TTL};
use crate::world::{Sim, World};

/// A ticket push every this many seconds of (virtual or real) time.
pub const TICKET_INTERVAL: i64 = 600;
/// A ticket works this long after it was pushed (seconds).
pub const TICKET_TTL: i64 = 12 * 3600;
/// Pre-auth codes and authorization codes live this long (seconds).
pub const CODE_TTL: i64 = 600;
/// `api_component_token` calls per day.
pub const COMPONENT_TOKEN_DAILY: u32 = 10_000;
/// Quota resets per platform per month.
pub const CLEAR_QUOTA_MONTHLY: u32 = 10;
/// The largest page of `api_get_authorizer_list`.
pub const AUTHORIZER_PAGE_MAX: i64 = 500;
/// The permission sets a merchant grants when the control call names none.
pub const DEFAULT_FUNC_IDS: &[i64] = &[17, 18, 19, 25, 30, 31];

/// The authorizer options (`api_get_authorizer_option`) and the values each takes; every
/// option is `"0"` until set.
pub const AUTHORIZER_OPTIONS: &[(&str, &[&str])] = &[
    ("location_report", &["0", "1", "2"]),
    ("voice_recognize", &["0", "1"]),
    ("customer_service", &["0", "1"]),
];

/// 61003: the account has not (or no longer) authorized the platform.
fn not_authorized() -> WxError {
    WxError::new(61003, "component is not authorized by this account")
}

impl Platform {
    /// `authorizer` if it has authorized this platform (and not withdrawn it); 61003 otherwise.
    fn active_authorizer(&self, authorizer: Option<&str>) -> WxResult<String> {
        let authorizer = authorizer.unwrap_or_default();
        match self.authorizers.get(authorizer) {
            Some(a) if a.active => Ok(authorizer.to_owned()),
            _ => Err(not_authorized()),
        }
    }

    fn take(&mut self, name: &'static str, period: i64, limit: u32) -> bool {
        let e = self.counters.entry(name).or_insert((period, 0));
        if e.0 != period {
            *e = (period, 0);
        }
        if e.1 >= limit {
            return false;
        }
        e.1 += 1;
        true
    }
}

/// `POST /_sim/platforms`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlatformConfig {
    /// The component appid (generated when absent).
    #[serde(default)]
    pub component_appid: Option<String>,
    /// The component secret (generated when absent).
    #[serde(default)]
    pub secret: Option<String>,
    /// The message-check Token (generated when absent).
    #[serde(default)]
    pub token: Option<String>,
    /// The EncodingAESKey (generated when absent).
    #[serde(default)]
    pub encoding_aes_key: Option<String>,
    /// The 授权事件接收 URL: tickets and authorization events go there.
    #[serde(default)]
    pub event_url: Option<String>,
    /// The 消息与事件接收 URL of authorized mini programs (may hold `$APPID$`).
    #[serde(default)]
    pub message_url: Option<String>,
    /// The 白名单 IP addresses component calls may come from (61004 from any other); absent:
    /// unchanged on an update, no restriction on a new platform; `[]` refuses every address.
    #[serde(default)]
    pub ip_whitelist: Option<Vec<IpAddr>>,
}

/// An authorization event or ticket, as pushed.
fn info(component_appid: &str, now_s: i64, info_type: &str, fields: Value) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("AppId".into(), json!(component_appid));
    m.insert("CreateTime".into(), json!(now_s));
    m.insert("InfoType".into(), json!(info_type));
    if let Value::Object(f) = fields {
        m.extend(f);
    }
    m
}

impl Sim {
    /// Registers (or updates) a third-party platform; returns its appid, secret, token and
    /// EncodingAESKey. With an event URL, ticket pushes start at once and repeat every
    /// [`TICKET_INTERVAL`] seconds.
    ///
    /// # Errors
    /// 47001 for an EncodingAESKey that is not 43 base64 characters, or URLs that are not
    /// http(s).
    pub fn add_platform(&self, config: PlatformConfig) -> WxResult<Value> {
        let appid = config
            .component_appid
            .unwrap_or_else(|| format!("wx{}", crate::random::random_hex(8)));
        if appid.is_empty() || appid.len() > 64 || !appid.chars().all(|c| c.is_ascii_alphanumeric())
        {
            return Err(WxError::new(
                47001,
                "component_appid must be 1–64 letters and digits",
            ));
        }
        let given_key = config.encoding_aes_key.is_some();
        let key = config.encoding_aes_key.unwrap_or_else(|| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .encode(rand::random::<[u8; 32]>())
                .trim_end_matches('=')
                .to_owned()
        });
        if aes_key(&key).is_none() {
            return Err(WxError::new(
                47001,
                "encoding_aes_key must be 43 base64 characters",
            ));
        }
        for url in [&config.event_url, &config.message_url]
            .into_iter()
            .flatten()
        {
            if !url.starts_with("http://") && !url.starts_with("https://") {
                return Err(WxError::new(47001, "URLs must be http(s)"));
            }
        }
        let mut w = self.world();
        // An update keeps what it does not name (changing a URL does not rotate credentials).
        let existing = w.platforms.platforms.get(&appid);
        let secret = config
            .secret
            .or_else(|| existing.map(|p| p.secret.clone()))
            .unwrap_or_else(|| random_alnum(32));
        let token = config
            .token
            .or_else(|| existing.map(|p| p.token.clone()))
            .unwrap_or_else(|| random_alnum(16));
        let key = if given_key {
            key
        } else {
            existing.map_or(key, |p| p.aes_key.clone())
        };
        match w.platforms.platforms.get_mut(&appid) {
            Some(p) => {
                p.secret = secret.clone();
                p.token = token.clone();
                p.aes_key = key.clone();
                if p.event_url != config.event_url {
                    p.next_ticket_at = config.event_url.as_ref().map(|_| 0);
                }
                p.event_url = config.event_url;
                p.message_url = config.message_url;
                if let Some(list) = config.ip_whitelist {
                    p.ip_whitelist = Some(list.into_iter().map(|ip| ip.to_canonical()).collect());
                }
            }
            None => {
                let mut p = fresh(
                    secret.clone(),
                    token.clone(),
                    key.clone(),
                    config.event_url,
                    config.message_url,
                );
                p.ip_whitelist = config
                    .ip_whitelist
                    .map(|l| l.into_iter().map(|ip| ip.to_canonical()).collect());
                w.platforms.platforms.insert(appid.clone(), p);
            }
        }
        Ok(
            json!({"component_appid": appid, "secret": secret, "token": token, "encoding_aes_key": key}),
        )
    }

    /// The platforms, without secrets: URLs, ticket pushes, authorizers.
    pub fn platforms(&self) -> Value {
        let w = self.world();
        let now = self.now_in(&w);
        let mut list: Vec<Value> = w
            .platforms
            .platforms
            .iter()
            .map(|(id, p)| {
                // The pages a platform has opened (its pre-auth codes still usable): what the
                // console's merchant can scan.
                let mut pending: Vec<(&String, i64)> = p
                    .pre_auth
                    .iter()
                    .filter(|(_, (at, used))| !*used && now - *at < CODE_TTL * 1000)
                    .map(|(c, (at, _))| (c, *at))
                    .collect();
                pending.sort_by_key(|(_, at)| std::cmp::Reverse(*at));
                json!({
                    "component_appid": id,
                    "pending_pre_auth_codes": pending.iter().map(|(c, _)| c).collect::<Vec<_>>(),
                    "event_url": p.event_url,
                    "message_url": p.message_url,
                    "ticket_pushes": p.ticket_pushes,
                    "last_ticket_at": p.tickets.last().map(|t| t.1 / 1000),
                    "last_ticket_answered_success_at": p.last_ticket_ok.map(|t| t / 1000),
                    "component_tokens_issued": p.tokens_issued,
                    "ip_whitelist": p.ip_whitelist,
                    "authorizers": p.authorizers.iter().map(|(a, z)| json!({
                        "authorizer_appid": a,
                        "authorized": z.active,
                        "func_ids": z.func_ids,
                        "auth_time": z.auth_time,
                        "refresh_token_exchanged": z.exchanged,
                        "options": w.platforms.options.get(a),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        list.sort_by(|a, b| {
            a["component_appid"]
                .as_str()
                .cmp(&b["component_appid"].as_str())
        });
        json!({"platforms": list})
    }

    /// The latest ticket pushed to a platform (what its server should hold), if any.
    pub fn latest_ticket(&self, component_appid: &str) -> Option<String> {
        self.world()
            .platforms
            .platforms
            .get(component_appid)
            .and_then(|p| p.tickets.last().map(|t| t.0.clone()))
    }

    /// Component tokens issued to a platform so far.
    pub fn component_tokens_issued(&self, component_appid: &str) -> u64 {
        self.world()
            .platforms
            .platforms
            .get(component_appid)
            .map_or(0, |p| p.tokens_issued)
    }

    /// Pushes an encrypted event (`InfoType` …) to the platform's event URL, the way WeChat
    /// does: outer `<xml><AppId/><Encrypt/></xml>`, query `timestamp, nonce, signature,
    /// encrypt_type=aes, msg_signature`, encrypted with the platform's key to its appid.
    async fn push_platform_event(
        &self,
        component_appid: &str,
        message: Map<String, Value>,
    ) -> WxResult<Option<Delivery>> {
        let (url, token, key) = {
            let w = self.world();
            let p = w
                .platforms
                .platforms
                .get(component_appid)
                .ok_or_else(|| WxError::new(61011, "invalid component"))?;
            match &p.event_url {
                Some(u) => (u.clone(), p.token.clone(), p.aes_key.clone()),
                None => return Ok(None),
            }
        };
        let key = aes_key(&key).expect("checked when registered");
        let plain = to_xml(&Value::Object(message.clone()));
        let enc = encrypt(&key, &plain, component_appid);
        let ts = message
            .get("CreateTime")
            .and_then(Value::as_i64)
            .unwrap_or_default()
            .to_string();
        let nonce = format!("{}", rand::random::<u32>());
        let query = [
            ("signature", sha1_sorted(&[&token, &ts, &nonce])),
            ("timestamp", ts.clone()),
            ("nonce", nonce.clone()),
            ("encrypt_type", "aes".into()),
            ("msg_signature", sha1_sorted(&[&token, &ts, &nonce, &enc])),
        ];
        let qs: Vec<String> = query
            .iter()
            .map(|(k, v)| format!("{k}={}", urlencode(v)))
            .collect();
        let sep = if url.contains('?') { '&' } else { '?' };
        let full = format!("{url}{sep}{}", qs.join("&"));
        let envelope = to_xml(&json!({"AppId": component_appid, "Encrypt": enc}));
        let delivery = deliver(
            self.http(),
            &full,
            &envelope,
            PushFormat::Xml,
            Value::Object(message),
        )
        .await;
        let answered_success = delivery
            .attempts
            .last()
            .is_some_and(|a| a.status == Some(200) && a.body.as_deref() == Some("success"));
        self.record(
            Event::new("platform_push")
                .appid(component_appid)
                .detail(json!({
                    "info_type": delivery.message.get("InfoType"),
                    "delivered": delivery.delivered,
                    "answered_success": answered_success,
                    "attempts": delivery.attempts,
                })),
        );
        Ok(Some(delivery))
    }

    /// Pushes a new `component_verify_ticket` to the platform now (it is valid for 12 hours
    /// whether or not the push arrives); the next one follows [`TICKET_INTERVAL`] later.
    ///
    /// # Errors
    /// 61011 unknown platform.
    pub async fn push_ticket(&self, component_appid: &str) -> WxResult<Option<Delivery>> {
        let message = {
            let mut w = self.world();
            let now = self.now_in(&w);
            let p = w
                .platforms
                .platforms
                .get_mut(component_appid)
                .ok_or_else(|| WxError::new(61011, "invalid component"))?;
            let ticket = format!("ticket@@@{}", random_alnum(86));
            p.tickets.push((ticket.clone(), now));
            // Tickets older than their life are of no use to anyone.
            p.tickets
                .retain(|t| now - t.1 < TICKET_TTL * 1000 + 3_600_000);
            p.ticket_pushes += 1;
            p.next_ticket_at = p.event_url.as_ref().map(|_| now + TICKET_INTERVAL * 1000);
            info(
                component_appid,
                now / 1000,
                "component_verify_ticket",
                json!({"ComponentVerifyTicket": ticket}),
            )
        };
        let delivery = self.push_platform_event(component_appid, message).await?;
        if let Some(d) = &delivery {
            let ok = d
                .attempts
                .last()
                .is_some_and(|a| a.status == Some(200) && a.body.as_deref() == Some("success"));
            let mut w = self.world();
            let now = self.now_in(&w);
            if let Some(p) = w.platforms.platforms.get_mut(component_appid) {
                if ok {
                    p.last_ticket_ok = Some(now);
                }
                p.last_ticket_failed = !ok;
            }
        }
        Ok(delivery)
    }

    /// Pushes the tickets that are due (called a few times a second by the server loop).
    pub(crate) async fn push_due_tickets(&self) {
        let due: Vec<String> = {
            let w = self.world();
            let now = self.now_in(&w);
            w.platforms
                .platforms
                .iter()
                .filter(|(_, p)| p.next_ticket_at.is_some_and(|t| t <= now))
                .map(|(id, _)| id.clone())
                .collect()
        };
        // Each platform on its own: a dead URL (three 5-second attempts) delays no one else.
        for id in due {
            let sim = self.clone();
            tokio::spawn(async move {
                let _ = sim.push_ticket(&id).await;
            });
        }
    }

    fn component_token_owner(w: &World, token: Option<&str>, now: i64) -> WxResult<String> {
        let token = token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| WxError::new(41001, "access_token missing"))?;
        let rec = w
            .platforms
            .tokens
            .get(token)
            .ok_or_else(invalid_credential)?;
        if now >= rec.expires_at {
            return Err(WxError::new(42001, "access_token expired"));
        }
        if rec.valid_until.is_some_and(|u| now >= u) {
            return Err(invalid_credential());
        }
        Ok(rec.component_appid.clone())
    }

    /// `api_start_push_ticket`: a ticket push within seconds.
    ///
    /// # Errors
    /// 40013 unknown platform, 40125 wrong secret.
    pub fn start_push_ticket(&self, body: &Value) -> WxResult<Value> {
        let mut w = self.world();
        let now = self.now_in(&w);
        let appid = s(body, "component_appid").unwrap_or_default();
        let p = w
            .platforms
            .platforms
            .get_mut(appid)
            .ok_or_else(|| WxError::new(40013, "invalid appid"))?;
        let secret = s(body, "component_secret").unwrap_or_default();
        if !bool::from(crate::crypto::subtle_eq(
            secret.as_bytes(),
            p.secret.as_bytes(),
        )) {
            return Err(WxError::new(40125, "invalid appsecret"));
        }
        // "ok": the pushes were failing (or never answered) and are restarted.
        let healthy = !p.last_ticket_failed
            && p.last_ticket_ok
                .is_some_and(|t| now - t < TICKET_TTL * 1000);
        if p.event_url.is_some() {
            p.next_ticket_at = Some(now);
        }
        Ok(json!({"errcode": 0, "errmsg": if healthy { "in a normal state" } else { "ok" }}))
    }

    /// `api_component_token`: a 7,200-second component token from the latest ticket; the
    /// previous token keeps working 300 s.
    ///
    /// # Errors
    /// 40013 unknown platform, 40125 wrong secret, 61006 missing or unknown ticket, 61005
    /// a ticket older than 12 hours, 45009 over 10,000 a day.
    pub fn component_token(&self, body: &Value) -> WxResult<Value> {
        let mut w = self.world();
        let now = self.now_in(&w);
        let appid = s(body, "component_appid").unwrap_or_default().to_owned();
        let p = w
            .platforms
            .platforms
            .get_mut(&appid)
            .ok_or_else(|| WxError::new(40013, "invalid appid"))?;
        let secret = s(body, "component_appsecret").unwrap_or_default();
        if secret.is_empty() {
            return Err(WxError::new(41004, "appsecret missing"));
        }
        if !bool::from(crate::crypto::subtle_eq(
            secret.as_bytes(),
            p.secret.as_bytes(),
        )) {
            return Err(WxError::new(40125, "invalid appsecret"));
        }
        let ticket = s(body, "component_verify_ticket").unwrap_or_default();
        let issued = p
            .tickets
            .iter()
            .find(|t| !ticket.is_empty() && t.0 == ticket)
            .map(|t| t.1)
            .ok_or_else(|| WxError::new(61006, "component ticket is invalid"))?;
        if now - issued >= TICKET_TTL * 1000 {
            return Err(WxError::new(61005, "component ticket is expired"));
        }
        if !p.take("component_token", day_of(now), COMPONENT_TOKEN_DAILY) {
            return Err(WxError::new(45009, "reach max api daily quota limit"));
        }
        let token = format!("SIMP_{}", random_alnum(128));
        let old_prev = p.component_previous.take();
        let old_cur = p.component_current.replace(token.clone());
        p.component_previous = old_cur.clone();
        p.tokens_issued += 1;
        if let Some(t) = old_prev.and_then(|t| w.platforms.tokens.get_mut(&t)) {
            t.valid_until = Some(t.valid_until.map_or(now, |u| u.min(now)));
        }
        if let Some(t) = old_cur.and_then(|t| w.platforms.tokens.get_mut(&t)) {
            let until = now + TOKEN_OVERLAP * 1000;
            t.valid_until = Some(t.valid_until.map_or(until, |u| u.min(until)));
        }
        w.platforms.tokens.insert(
            token.clone(),
            ComponentToken {
                component_appid: appid.clone(),
                expires_at: now + TOKEN_TTL * 1000,
                valid_until: None,
            },
        );
        self.record_at(
            now,
            Event::new("component_token_issued")
                .appid(&appid)
                .detail(json!({"access_token": token})),
        );
        Ok(json!({"component_access_token": token, "expires_in": TOKEN_TTL}))
    }

    /// The platform a component-authenticated call belongs to: the token's, which must be the
    /// body's `component_appid` when it names one.
    fn component_call<'w>(
        w: &'w mut World,
        token: Option<&str>,
        body: &Value,
        now: i64,
    ) -> WxResult<(String, &'w mut Platform)> {
        let owner = Self::component_token_owner(w, token, now)?;
        if let Some(named) = s(body, "component_appid") {
            if named != owner {
                return Err(WxError::new(61011, "invalid component"));
            }
        }
        let p = w
            .platforms
            .platforms
            .get_mut(&owner)
            .ok_or_else(|| WxError::new(61011, "invalid component"))?;
        Ok((owner, p))
    }

    /// `api_create_preauthcode`: `preauthcode@@@…`, 600 s, one use.
    ///
    /// # Errors
    /// 41001/40001/42001 for the token, 61011 another platform.
    pub fn create_preauthcode(&self, token: Option<&str>, body: &Value) -> WxResult<Value> {
        let mut w = self.world();
        let now = self.now_in(&w);
        let (_, p) = Self::component_call(&mut w, token, body, now)?;
        let code = format!("preauthcode@@@{}", random_alnum(64));
        p.pre_auth.insert(code.clone(), (now, false));
        Ok(json!({"pre_auth_code": code, "expires_in": CODE_TTL}))
    }

    /// What the merchant does on the authorization page (PC or H5): consents with
    /// `authorizer_appid` (a registered mini program), granting `func_ids`. Returns the
    /// redirect (`redirect_uri?auth_code=…&expires_in=600`), and pushes `authorized` — or, for
    /// a merchant already authorized, `updateauthorized` when the granted set changed. A
    /// re-authorization issues a new refresh token (the old one answers 61023) and retires
    /// the authorizer's tokens at once (40001).
    ///
    /// # Errors
    /// Unknown platform or mini program, a pre-auth code unknown, used or older than 600 s,
    /// `auth_type = 1` (official accounts only) for a mini program, `biz_appid` naming another
    /// account.
    pub async fn authorize(
        &self,
        component_appid: &str,
        req: &AuthorizeRequest,
    ) -> Result<Value, String> {
        let (message, redirect, code, kind) = {
            let mut w = self.world();
            let now = self.now_in(&w);
            if !w.apps.contains_key(&req.authorizer_appid) {
                return Err(format!(
                    "no mini program {} (POST /_sim/apps first)",
                    req.authorizer_appid
                ));
            }
            let p = w
                .platforms
                .platforms
                .get_mut(component_appid)
                .ok_or_else(|| format!("no platform {component_appid}"))?;
            match p.pre_auth.get(&req.pre_auth_code) {
                Some((issued, used)) if !*used && now - *issued < CODE_TTL * 1000 => {}
                Some((_, true)) => return Err("the pre-auth code was used already".into()),
                Some(_) => return Err("the pre-auth code expired".into()),
                None => return Err("unknown pre-auth code".into()),
            }
            // A page the merchant cannot use leaves its code usable.
            if let Some(biz) = &req.biz_appid {
                if biz != &req.authorizer_appid {
                    return Err(format!("this page is for {biz} only"));
                }
            } else if req.auth_type == Some(1) {
                return Err("this page authorizes official accounts only (auth_type = 1)".into());
            }
            if let Some(c) = p.pre_auth.get_mut(&req.pre_auth_code) {
                c.1 = true;
            }
            let func_ids = req
                .func_ids
                .clone()
                .unwrap_or_else(|| DEFAULT_FUNC_IDS.to_vec());
            let code = format!("queryauthcode@@@{}", random_alnum(64));
            p.auth_codes
                .insert(code.clone(), (req.authorizer_appid.clone(), now));
            let previous = p.authorizers.get(&req.authorizer_appid).cloned();
            let kind = match &previous {
                Some(a) if a.active && a.func_ids != func_ids => "updateauthorized",
                _ => "authorized",
            };
            let refresh_token = format!("refreshtoken@@@{}", random_alnum(64));
            p.authorizers.insert(
                req.authorizer_appid.clone(),
                Authorization {
                    refresh_token,
                    func_ids,
                    auth_time: now / 1000,
                    exchanged: false,
                    active: true,
                    current: None,
                    previous: None,
                },
            );
            // The authorizer tokens of the previous authorization stop working at once.
            if let Some(prev) = previous {
                for t in [prev.current, prev.previous].into_iter().flatten() {
                    self.supersede(&mut w, &t, now, now);
                }
            }
            let expires = now / 1000 + CODE_TTL;
            let message = info(
                component_appid,
                now / 1000,
                kind,
                json!({
                    "AuthorizerAppid": req.authorizer_appid,
                    "AuthorizationCode": code,
                    "AuthorizationCodeExpiredTime": expires,
                    "PreAuthCode": req.pre_auth_code,
                }),
            );
            let sep = if req.redirect_uri.contains('?') {
                '&'
            } else {
                '?'
            };
            let redirect = format!(
                "{}{sep}auth_code={}&expires_in={CODE_TTL}",
                req.redirect_uri,
                urlencode(&code)
            );
            (message, redirect, code, kind)
        };
        self.record(
            Event::new("platform_authorized")
                .appid(component_appid)
                .detail(json!({"authorizer_appid": req.authorizer_appid, "event": kind})),
        );
        let push = self
            .push_platform_event(component_appid, message)
            .await
            .map_err(|e| e.msg)?;
        Ok(json!({"redirect": redirect, "auth_code": code, "event": kind, "push": push}))
    }

    /// The merchant de-authorizes: an `unauthorized` push (four fields), the authorizer's
    /// tokens stop working, `api_authorizer_token` and component login answer 61003, and it
    /// leaves the authorizer list.
    ///
    /// # Errors
    /// Unknown platform, or a mini program that has not authorized it.
    pub async fn deauthorize(
        &self,
        component_appid: &str,
        authorizer_appid: &str,
    ) -> Result<Value, String> {
        let message = {
            let mut w = self.world();
            let now = self.now_in(&w);
            let p = w
                .platforms
                .platforms
                .get_mut(component_appid)
                .ok_or_else(|| format!("no platform {component_appid}"))?;
            let a = p
                .authorizers
                .get_mut(authorizer_appid)
                .filter(|a| a.active)
                .ok_or_else(|| {
                    format!("{authorizer_appid} has not authorized {component_appid}")
                })?;
            a.active = false;
            let tokens: Vec<String> = [a.current.take(), a.previous.take()]
                .into_iter()
                .flatten()
                .collect();
            for t in tokens {
                self.supersede(&mut w, &t, now, now);
            }
            info(
                component_appid,
                now / 1000,
                "unauthorized",
                json!({"AuthorizerAppid": authorizer_appid}),
            )
        };
        let push = self
            .push_platform_event(component_appid, message)
            .await
            .map_err(|e| e.msg)?;
        Ok(json!({"push": push}))
    }

    fn mint_authorizer(
        &self,
        w: &mut World,
        component_appid: &str,
        authorizer: &str,
        now: i64,
    ) -> String {
        let (token, _) = self.mint(w, authorizer, TokenKind::Authorizer, now, false);
        w.tokens.bind_component(&token, component_appid);
        let p = w
            .platforms
            .platforms
            .get_mut(component_appid)
            .expect("checked by the caller");
        let a = p
            .authorizers
            .get_mut(authorizer)
            .expect("checked by the caller");
        let old_prev = a.previous.take();
        let old_cur = a.current.replace(token.clone());
        a.previous = old_cur.clone();
        if let Some(t) = old_prev {
            self.supersede(w, &t, now, now);
        }
        if let Some(t) = old_cur {
            self.supersede(w, &t, now + TOKEN_OVERLAP * 1000, now);
        }
        token
    }

    fn authorization_info(p: &Platform, authorizer: &str, token: Option<&str>) -> Value {
        let a = &p.authorizers[authorizer];
        let mut info = json!({
            "authorizer_appid": authorizer,
            "authorizer_refresh_token": a.refresh_token,
            "func_info": a.func_ids.iter().map(|id| json!({"funcscope_category": {"id": id}})).collect::<Vec<_>>(),
        });
        if let Some(t) = token {
            info["authorizer_access_token"] = json!(t);
            info["expires_in"] = json!(TOKEN_TTL);
        }
        info
    }

    /// `api_query_auth`: the authorization behind an `auth_code` — an authorizer token and the
    /// refresh token. A code works while it lives (600 s), as often as asked.
    ///
    /// # Errors
    /// Token errors, 61009 unknown code, 61010 expired code, 61003 de-authorized since.
    pub fn query_auth(&self, token: Option<&str>, body: &Value) -> WxResult<Value> {
        let mut w = self.world();
        let now = self.now_in(&w);
        let (owner, p) = Self::component_call(&mut w, token, body, now)?;
        let code = s(body, "authorization_code").unwrap_or_default();
        let (authorizer, issued) = p
            .auth_codes
            .get(code)
            .cloned()
            .ok_or_else(|| WxError::new(61009, "code is invalid"))?;
        if now - issued >= CODE_TTL * 1000 {
            return Err(WxError::new(61010, "code is expired"));
        }
        p.active_authorizer(Some(&authorizer))?;
        let token = self.mint_authorizer(&mut w, &owner, &authorizer, now);
        let p = w
            .platforms
            .platforms
            .get_mut(&owner)
            .expect("checked above");
        p.authorizers
            .get_mut(&authorizer)
            .expect("checked above")
            .exchanged = true;
        Ok(json!({"authorization_info": Self::authorization_info(p, &authorizer, Some(&token))}))
    }

    /// `api_authorizer_token`: a new 7,200-second authorizer token (the previous one works 300
    /// s more) and the same refresh token.
    ///
    /// # Errors
    /// Token errors, 61003 not (or no longer) authorized, 61023 a wrong refresh token.
    pub fn authorizer_token(&self, token: Option<&str>, body: &Value) -> WxResult<Value> {
        let mut w = self.world();
        let now = self.now_in(&w);
        let (owner, p) = Self::component_call(&mut w, token, body, now)?;
        let authorizer = s(body, "authorizer_appid").unwrap_or_default().to_owned();
        let a = p
            .authorizers
            .get(&authorizer)
            .filter(|a| a.active)
            .ok_or_else(not_authorized)?;
        let given = s(body, "authorizer_refresh_token").unwrap_or_default();
        if given.is_empty()
            || !bool::from(crate::crypto::subtle_eq(
                given.as_bytes(),
                a.refresh_token.as_bytes(),
            ))
        {
            return Err(WxError::new(61023, "refresh_token is invalid"));
        }
        let refresh = a.refresh_token.clone();
        let token = self.mint_authorizer(&mut w, &owner, &authorizer, now);
        Ok(
            json!({"authorizer_access_token": token, "expires_in": TOKEN_TTL, "authorizer_refresh_token": refresh}),
        )
    }

    /// `api_get_authorizer_list`: the active authorizers, `count` ≤ 500 from `offset`, with
    /// their refresh tokens (none for one never exchanged).
    ///
    /// # Errors
    /// Token errors, 40097 for a count outside 1–500 or a negative offset.
    pub fn authorizer_list(&self, token: Option<&str>, body: &Value) -> WxResult<Value> {
        let mut w = self.world();
        let now = self.now_in(&w);
        let (_, p) = Self::component_call(&mut w, token, body, now)?;
        let offset = body.get("offset").and_then(Value::as_i64).unwrap_or(0);
        let count = body.get("count").and_then(Value::as_i64).unwrap_or(0);
        if offset < 0 || !(1..=AUTHORIZER_PAGE_MAX).contains(&count) {
            return Err(WxError::new(40097, "invalid args"));
        }
        let active: Vec<(&String, &Authorization)> =
            p.authorizers.iter().filter(|(_, a)| a.active).collect();
        let list: Vec<Value> = active
            .iter()
            .skip(offset as usize)
            .take(count as usize)
            .map(|(id, a)| {
                let mut v = json!({"authorizer_appid": id, "auth_time": a.auth_time});
                if a.exchanged {
                    v["refresh_token"] = json!(a.refresh_token);
                }
                v
            })
            .collect();
        Ok(json!({"total_count": active.len(), "list": list}))
    }

    /// `api_get_authorizer_info`: the mini program's account facts and the authorization.
    ///
    /// # Errors
    /// Token errors, 61003 not authorized.
    pub fn authorizer_info(&self, token: Option<&str>, body: &Value) -> WxResult<Value> {
        let mut w = self.world();
        let now = self.now_in(&w);
        let (_, p) = Self::component_call(&mut w, token, body, now)?;
        let authorizer = p.active_authorizer(s(body, "authorizer_appid"))?;
        Ok(json!({
            "authorizer_info": {
                "nick_name": format!("小程序 {authorizer}"),
                "head_img": "",
                "service_type_info": {"id": 0},
                "verify_type_info": {"id": 0},
                "user_name": crate::push::original_id(&authorizer),
                "principal_name": "模拟商户",
                "account_status": 1,
                "MiniProgramInfo": {"network": {"RequestDomain": [], "WsRequestDomain": [], "UploadDomain": [], "DownloadDomain": []}, "categories": [], "visit_status": 0},
            },
            "authorization_info": Self::authorization_info(p, &authorizer, None),
        }))
    }

    /// `clear_quota` of the platform's own calls (component token or v2 with the secret); 10
    /// a month.
    ///
    /// # Errors
    /// Token or secret errors, 48006 past ten a month.
    pub fn clear_component_quota(
        &self,
        token: Option<&str>,
        body: &Value,
        v2: bool,
    ) -> WxResult<Value> {
        let mut w = self.world();
        let now = self.now_in(&w);
        let p = if v2 {
            let appid = s(body, "component_appid").unwrap_or_default();
            let p = w
                .platforms
                .platforms
                .get_mut(appid)
                .ok_or_else(|| WxError::new(40013, "invalid appid"))?;
            let secret = s(body, "appsecret").unwrap_or_default();
            if !bool::from(crate::crypto::subtle_eq(
                secret.as_bytes(),
                p.secret.as_bytes(),
            )) {
                return Err(WxError::new(40125, "invalid appsecret"));
            }
            // With `appid`: the quota of a merchant that authorized the platform (its own ten
            // resets a month).
            if let Some(merchant) = s(body, "appid").filter(|a| !a.is_empty()) {
                if !p.authorizers.get(merchant).is_some_and(|a| a.active) {
                    return Err(WxError::new(40013, "invalid appid"));
                }
                let merchant = merchant.to_owned();
                let app = w.app_mut(&merchant)?;
                if !app.take("clear_quota", month_of(now), CLEAR_QUOTA_MONTHLY) {
                    return Err(WxError::new(
                        48006,
                        "forbid to clear quota because of reaching the limit",
                    ));
                }
                app.counters.retain(|k, _| *k == "clear_quota");
                return Ok(json!({"errcode": 0, "errmsg": "ok"}));
            }
            p
        } else {
            Self::component_call(&mut w, token, body, now)?.1
        };
        if !p.take("clear_quota", month_of(now), CLEAR_QUOTA_MONTHLY) {
            return Err(WxError::new(
                48006,
                "forbid to clear quota because of reaching the limit",
            ));
        }
        p.counters.retain(|k, _| *k == "clear_quota");
        Ok(json!({"errcode": 0, "errmsg": "ok"}))
    }

    /// `/sns/component/jscode2session`: a login code of an authorized mini program redeemed
    /// with the component token.
    ///
    /// # Errors
    /// Token errors, 61003 the mini program has not authorized the platform, 40029/40163 for
    /// the code.
    pub fn component_code_to_session(&self, q: &HashMap<String, String>) -> WxResult<Value> {
        let mut w = self.world();
        let now = self.now_in(&w);
        let token = p(q, "component_access_token").or_else(|| p(q, "access_token"));
        let owner = Self::component_token_owner(&w, token, now)?;
        if p(q, "component_appid").is_some_and(|c| c != owner) {
            return Err(WxError::new(61011, "invalid component"));
        }
        if p(q, "grant_type").is_some_and(|g| g != "authorization_code") {
            return Err(WxError::new(40002, "invalid grant_type"));
        }
        let appid = w
            .platforms
            .platforms
            .get(&owner)
            .ok_or_else(not_authorized)?
            .active_authorizer(p(q, "appid"))?;
        self.redeem_login_code(
            &mut w,
            &appid,
            p(q, "js_code"),
            now,
            "/sns/component/jscode2session",
        )
    }
}

/// Checks an option name and, when given, its value.
fn check_option(name: &str, value: Option<&str>) -> WxResult<()> {
    let values = AUTHORIZER_OPTIONS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| *v)
        .ok_or_else(|| WxError::new(61012, "invalid option name"))?;
    match value {
        Some(v) if !values.contains(&v) => Err(WxError::new(61013, "invalid option value")),
        _ => Ok(()),
    }
}

/// An option's value as given: a string, or a number as WeChat's own samples send it.
fn option_value(body: &Value) -> Option<String> {
    match body.get("option_value") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    }
}

impl Sim {
    /// 61004 when the platform a component call is for (the token's, or the body's
    /// `component_appid` for calls made with the secret) has an IP whitelist without the
    /// caller's address.
    fn check_caller(&self, token: Option<&str>, body: &Value) -> WxResult<()> {
        let w = self.world();
        let platform = token
            .and_then(|t| w.platforms.tokens.get(t))
            .map(|t| t.component_appid.as_str())
            .or_else(|| s(body, "component_appid"));
        match platform {
            Some(c) => w.platforms.check_whitelist(c),
            None => Ok(()),
        }
    }

    /// Replaces a platform's IP whitelist (`None`: calls from anywhere).
    ///
    /// # Errors
    /// 61011 unknown platform.
    pub fn set_platform_whitelist(
        &self,
        component_appid: &str,
        ips: Option<Vec<IpAddr>>,
    ) -> WxResult<()> {
        let mut w = self.world();
        let p = w
            .platforms
            .platforms
            .get_mut(component_appid)
            .ok_or_else(|| WxError::new(61011, "invalid component"))?;
        let ips: Option<Vec<IpAddr>> =
            ips.map(|l| l.into_iter().map(|ip| ip.to_canonical()).collect());
        p.ip_whitelist = ips.clone();
        drop(w);
        self.record(
            Event::new("platform_whitelist")
                .appid(component_appid)
                .detail(json!({"ip_whitelist": ips})),
        );
        Ok(())
    }

    fn set_option(&self, w: &mut World, authorizer: &str, name: String, value: String) {
        let now = self.now_in(w);
        self.record_at(
            now,
            Event::new("authorizer_option_set")
                .appid(authorizer)
                .detail(json!({"option_name": name, "option_value": value})),
        );
        w.platforms
            .options
            .entry(authorizer.to_owned())
            .or_default()
            .insert(name, value);
    }

    fn option_of(w: &World, authorizer: &str, name: &str) -> String {
        w.platforms
            .options
            .get(authorizer)
            .and_then(|o| o.get(name))
            .cloned()
            .unwrap_or_else(|| "0".to_owned())
    }

    /// `api_get_authorizer_option` (component token): an authorizer's option.
    ///
    /// # Errors
    /// Token errors, 61003 not authorized, 61012 unknown option.
    pub fn get_authorizer_option(&self, token: Option<&str>, body: &Value) -> WxResult<Value> {
        let mut w = self.world();
        let now = self.now_in(&w);
        let (_, p) = Self::component_call(&mut w, token, body, now)?;
        let authorizer = p.active_authorizer(s(body, "authorizer_appid"))?;
        let name = s(body, "option_name").unwrap_or_default();
        check_option(name, None)?;
        Ok(json!({
            "authorizer_appid": authorizer,
            "option_name": name,
            "option_value": Self::option_of(&w, &authorizer, name),
        }))
    }

    /// `api_set_authorizer_option` (component token): sets an authorizer's option.
    ///
    /// # Errors
    /// Token errors, 61003 not authorized, 61012 unknown option, 61013 a value it does not
    /// take.
    pub fn set_authorizer_option(&self, token: Option<&str>, body: &Value) -> WxResult<Value> {
        let mut w = self.world();
        let now = self.now_in(&w);
        let (_, p) = Self::component_call(&mut w, token, body, now)?;
        let authorizer = p.active_authorizer(s(body, "authorizer_appid"))?;
        let name = s(body, "option_name").unwrap_or_default().to_owned();
        let value = option_value(body).unwrap_or_default();
        check_option(&name, Some(&value))?;
        self.set_option(&mut w, &authorizer, name, value);
        Ok(json!({"errcode": 0, "errmsg": "ok"}))
    }

    /// `get_authorizer_option` / `set_authorizer_option` of the newer pages: the same, with
    /// the authorizer token (`value` `None`: a read).
    ///
    /// # Errors
    /// Token errors, 86000 a token that is not an authorizer token, 61012/61013.
    pub fn authorizer_option_with_token(
        &self,
        token: Option<&str>,
        body: &Value,
        write: bool,
    ) -> WxResult<Value> {
        let path = if write {
            "/cgi-bin/component/set_authorizer_option"
        } else {
            "/cgi-bin/component/get_authorizer_option"
        };
        let appid = self.check_api_token(token, path)?;
        let mut w = self.world();
        if !token.is_some_and(|t| w.tokens.is_authorizer_token(t)) {
            return Err(WxError::new(
                86000,
                "should be called only from third party",
            ));
        }
        let name = s(body, "option_name").unwrap_or_default().to_owned();
        if write {
            let value = option_value(body).unwrap_or_default();
            check_option(&name, Some(&value))?;
            self.set_option(&mut w, &appid, name, value);
            return Ok(json!({"errcode": 0, "errmsg": "ok"}));
        }
        check_option(&name, None)?;
        let value = Self::option_of(&w, &appid, &name);
        Ok(json!({"errcode": 0, "errmsg": "ok", "option_name": name, "option_value": value}))
    }
}

/// `POST /_sim/platforms/{component_appid}/authorize`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizeRequest {
    /// From `api_create_preauthcode`.
    pub pre_auth_code: String,
    /// The merchant's mini program (registered with `POST /_sim/apps`).
    pub authorizer_appid: String,
    /// Where the page redirects.
    pub redirect_uri: String,
    /// 1 official accounts only, 2 mini programs only, 3 both (default).
    #[serde(default)]
    pub auth_type: Option<i64>,
    /// Restricts the page to one account (wins over `auth_type`).
    #[serde(default)]
    pub biz_appid: Option<String>,
    /// The permission sets granted (default: a typical mini-program set).
    #[serde(default)]
    pub func_ids: Option<Vec<i64>>,
}

type Q = Query<HashMap<String, String>>;

fn component_token(q: &HashMap<String, String>) -> Option<&str> {
    // Older pages write component_access_token=, newer ones access_token= for the same calls.
    p(q, "component_access_token").or_else(|| p(q, "access_token"))
}

macro_rules! component_route {
    ($name:ident, $path:literal, $method:ident) => {
        async fn $name(State(sim): State<Sim>, Query(q): Q, raw: Bytes) -> Response {
            let result = json_body(&raw).and_then(|b| {
                sim.check_caller(component_token(&q), &b)?;
                sim.$method(component_token(&q), &b)
            });
            answer(&sim, $path, result)
        }
    };
}

component_route!(
    preauthcode,
    "/cgi-bin/component/api_create_preauthcode",
    create_preauthcode
);
component_route!(query_auth, "/cgi-bin/component/api_query_auth", query_auth);
component_route!(
    authorizer_token,
    "/cgi-bin/component/api_authorizer_token",
    authorizer_token
);
component_route!(
    authorizer_list,
    "/cgi-bin/component/api_get_authorizer_list",
    authorizer_list
);
component_route!(
    authorizer_info,
    "/cgi-bin/component/api_get_authorizer_info",
    authorizer_info
);
component_route!(
    get_option,
    "/cgi-bin/component/api_get_authorizer_option",
    get_authorizer_option
);
component_route!(
    set_option,
    "/cgi-bin/component/api_set_authorizer_option",
    set_authorizer_option
);

async fn get_option_with_token(State(sim): State<Sim>, Query(q): Q, raw: Bytes) -> Response {
    let result = json_body(&raw)
        .and_then(|b| sim.authorizer_option_with_token(p(&q, "access_token"), &b, false));
    answer(&sim, "/cgi-bin/component/get_authorizer_option", result)
}

async fn set_option_with_token(State(sim): State<Sim>, Query(q): Q, raw: Bytes) -> Response {
    let result = json_body(&raw)
        .and_then(|b| sim.authorizer_option_with_token(p(&q, "access_token"), &b, true));
    answer(&sim, "/cgi-bin/component/set_authorizer_option", result)
}

async fn start_push_ticket(State(sim): State<Sim>, raw: Bytes) -> Response {
    let result = json_body(&raw).and_then(|b| {
        sim.check_caller(None, &b)?;
        sim.start_push_ticket(&b)
    });
    answer(&sim, "/cgi-bin/component/api_start_push_ticket", result)
}

async fn component_token_route(State(sim): State<Sim>, raw: Bytes) -> Response {
    let result = json_body(&raw).and_then(|b| {
        sim.check_caller(None, &b)?;
        sim.component_token(&b)
    });
    answer(&sim, "/cgi-bin/component/api_component_token", result)
}

async fn clear_quota(State(sim): State<Sim>, Query(q): Q, raw: Bytes) -> Response {
    let result = json_body(&raw).and_then(|b| {
        sim.check_caller(component_token(&q), &b)?;
        sim.clear_component_quota(component_token(&q), &b, false)
    });
    answer(&sim, "/cgi-bin/component/clear_quota", result)
}

async fn clear_quota_v2(State(sim): State<Sim>, raw: Bytes) -> Response {
    let result = json_body(&raw).and_then(|b| {
        sim.check_caller(None, &b)?;
        sim.clear_component_quota(None, &b, true)
    });
    answer(&sim, "/cgi-bin/component/clear_quota/v2", result)
}

async fn component_login(State(sim): State<Sim>, Query(q): Q) -> Response {
    let result = sim
        .check_caller(component_token(&q), &Value::Null)
        .and_then(|()| sim.component_code_to_session(&q));
    answer(&sim, "/sns/component/jscode2session", result)
}

/// WeChat's component routes.
pub(crate) fn routes() -> Router<Sim> {
    Router::new()
        .route(
            "/cgi-bin/component/api_start_push_ticket",
            post(start_push_ticket),
        )
        .route(
            "/cgi-bin/component/api_component_token",
            post(component_token_route),
        )
        .route(
            "/cgi-bin/component/api_create_preauthcode",
            post(preauthcode),
        )
        .route("/cgi-bin/component/api_query_auth", post(query_auth))
        .route(
            "/cgi-bin/component/api_authorizer_token",
            post(authorizer_token),
        )
        .route(
            "/cgi-bin/component/api_get_authorizer_list",
            post(authorizer_list),
        )
        .route(
            "/cgi-bin/component/api_get_authorizer_info",
            post(authorizer_info),
        )
        .route(
            "/cgi-bin/component/api_get_authorizer_option",
            post(get_option),
        )
        .route(
            "/cgi-bin/component/api_set_authorizer_option",
            post(set_option),
        )
        .route(
            "/cgi-bin/component/get_authorizer_option",
            post(get_option_with_token),
        )
        .route(
            "/cgi-bin/component/set_authorizer_option",
            post(set_option_with_token),
        )
        .route("/cgi-bin/component/clear_quota", post(clear_quota))
        .route("/cgi-bin/component/clear_quota/v2", post(clear_quota_v2))
        .route("/sns/component/jscode2session", get(component_login))
}

async fn add_platform(State(sim): State<Sim>, raw: Bytes) -> Response {
    let config: PlatformConfig = try_resp!(body(&raw));
    match sim.add_platform(config) {
        Ok(v) => Json(v).into_response(),
        Err(e) => from_wx(e),
    }
}

async fn list_platforms(State(sim): State<Sim>) -> Response {
    Json(sim.platforms()).into_response()
}

async fn ticket_now(State(sim): State<Sim>, Path(appid): Path<String>) -> Response {
    match sim.push_ticket(&appid).await {
        Ok(d) => Json(json!({"push": d, "ticket": sim.latest_ticket(&appid)})).into_response(),
        Err(e) => from_wx(e),
    }
}

async fn authorize_route(
    State(sim): State<Sim>,
    Path(appid): Path<String>,
    raw: Bytes,
) -> Response {
    let req: AuthorizeRequest = try_resp!(body(&raw));
    match sim.authorize(&appid, &req).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => control_error(StatusCode::BAD_REQUEST, e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Deauthorize {
    authorizer_appid: String,
}

async fn deauthorize_route(
    State(sim): State<Sim>,
    Path(appid): Path<String>,
    raw: Bytes,
) -> Response {
    let req: Deauthorize = try_resp!(body(&raw));
    match sim.deauthorize(&appid, &req.authorizer_appid).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => control_error(StatusCode::BAD_REQUEST, e),
    }
}

/// `{"ips": [..]}` or `{"ips": null}` — `ips` must be there (`{}` is not "lift it").
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Whitelist {
    #[serde(deserialize_with = "present")]
    ips: Option<Vec<IpAddr>>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<IpAddr>>, D::Error> {
    Option::<Vec<IpAddr>>::deserialize(d)
}

async fn whitelist_route(
    State(sim): State<Sim>,
    Path(appid): Path<String>,
    raw: Bytes,
) -> Response {
    let req: Whitelist = try_resp!(body(&raw));
    match sim.set_platform_whitelist(&appid, req.ips) {
        Ok(()) => Json(json!({"ok": true})).into_response(),
        Err(_) => control_error(StatusCode::NOT_FOUND, format!("no platform {appid}")),
    }
}

/// The `/_sim` routes of this domain.
pub(crate) fn control() -> Router<Sim> {
    Router::new()
        .route("/_sim/platforms", post(add_platform).get(list_platforms))
        .route("/_sim/platforms/{component_appid}/ticket", post(ticket_now))
        .route(
            "/_sim/platforms/{component_appid}/authorize",
            post(authorize_route),
        )
        .route(
            "/_sim/platforms/{component_appid}/deauthorize",
            post(deauthorize_route),
        )
        .route(
            "/_sim/platforms/{component_appid}/ip_whitelist",
            axum::routing::put(whitelist_route),
        )
}

/// Pushes due tickets until the simulator stops (a few looks a second, in real time: a
/// virtual clock advanced past a ticket's time pushes it within a quarter second).
pub(crate) async fn ticket_loop(sim: Sim) {
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        sim.push_due_tickets().await;
    }
}
