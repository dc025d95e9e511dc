//! Phone numbers and open data: the getPhoneNumber button's one-time codes and
//! `getuserphonenumber` (with `countryCode` as the number WeChat really sends), and legacy
//! `encryptedData` made under the user's current session_key.

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};

/// The opaque id production puts in `hint: […]` (e.g. `EfJCIi5Rf-KaNtQA`).
fn hint_id() -> String {
    format!(
        "{}-{}",
        crate::random::random_alnum(9),
        crate::random::random_alnum(6)
    )
}

use crate::error::{WxError, WxResult};
use crate::http::{body, from_wx, json_body, ok_with, s, try_resp, Params};
use crate::tokens::with_token;
use crate::world::Sim;

impl Sim {
    /// What the getPhoneNumber button hands over: a one-time code for the user's number
    /// (`phone` overrides and remembers the number).
    ///
    /// # Errors
    /// 40013 unknown app, 40003 unknown user.
    pub fn phone_code(&self, appid: &str, openid: &str, phone: Option<String>) -> WxResult<String> {
        if let Some(p) = &phone {
            let mut w = self.world();
            if let Some(u) = w.apps.get_mut(appid).and_then(|a| a.users.get_mut(openid)) {
                u.phone = p.clone();
            }
        }
        self.issue_code("phone", |w| &mut w.phone.codes, appid, openid, phone)
    }

    /// `getuserphonenumber`.
    ///
    /// # Errors
    /// 40029 unknown/expired/used code (`invalid code hint: [<opaque id>]`, as production
    /// writes it here — captures 2022–2024), 40013 code of another app.
    pub fn phone_number(&self, appid: &str, code: Option<&str>) -> WxResult<Value> {
        let c = self
            .redeem(
                "phone",
                "/wxa/business/getuserphonenumber",
                |w| &mut w.phone.codes,
                appid,
                code,
            )
            .map_err(|e| match e.code {
                40029 => WxError::new(40029, format!("invalid code hint: [{}]", hint_id())),
                _ => e,
            })?;
        let phone = match c.phone {
            Some(p) => p,
            None => self
                .user(appid, &c.openid)
                .map(|u| u.phone)
                .unwrap_or_default(),
        };
        let (country, pure) = match phone.strip_prefix('+') {
            Some(rest) => {
                let (cc, num) = rest.split_once(' ').unwrap_or(("86", rest));
                (cc.parse::<i64>().unwrap_or(86), num.to_owned())
            }
            None => (86, phone.clone()),
        };
        Ok(json!({"phone_info": {
            "phoneNumber": phone,
            "purePhoneNumber": pure,
            // WeChat documents a string and sends a number.
            "countryCode": country,
            "watermark": {"timestamp": self.now(), "appid": appid},
        }}))
    }

    /// Encrypts `data` (a JSON object) for the user the way the mini program receives
    /// `encryptedData`: a watermark is added and the user's current session_key is the key.
    /// Returns `(encryptedData, iv)`.
    ///
    /// # Errors
    /// 40013 unknown app, 40003 unknown user, 87007 user without a session_key, 47001 when
    /// `data` is not an object.
    pub fn open_data(&self, appid: &str, openid: &str, data: Value) -> WxResult<(String, String)> {
        let now = self.now();
        let key = {
            let w = self.world();
            let app = w
                .apps
                .get(appid)
                .ok_or_else(|| WxError::new(40013, "invalid appid"))?;
            let user = app
                .users
                .get(openid)
                .ok_or_else(|| WxError::new(40003, "invalid openid"))?;
            user.session_key
                .clone()
                .ok_or_else(|| WxError::new(87007, "session_key is not existed or expired"))?
        };
        let Value::Object(mut map) = data else {
            return Err(WxError::new(
                47001,
                "data format error: data must be an object",
            ));
        };
        map.insert(
            "watermark".into(),
            json!({"timestamp": now, "appid": appid}),
        );
        let iv: [u8; 16] = rand::random();
        let key = B64
            .decode(key)
            .map_err(|_| WxError::new(-1, "system error"))?;
        let plain = serde_json::to_vec(&Value::Object(map)).unwrap_or_default();
        Ok((
            B64.encode(crate::crypto::aes128_cbc_encrypt(&key, &iv, &plain)),
            B64.encode(iv),
        ))
    }
}

async fn getuserphonenumber(State(sim): State<Sim>, Query(q): Params, body: Bytes) -> Response {
    with_token(&sim, "/wxa/business/getuserphonenumber", &q, |appid| {
        let b = json_body(&body)?;
        sim.phone_number(appid, s(&b, "code")).map(ok_with)
    })
}

/// The WeChat routes of this domain.
pub(crate) fn routes() -> Router<Sim> {
    Router::new().route("/wxa/business/getuserphonenumber", post(getuserphonenumber))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PhoneReq {
    appid: String,
    openid: String,
    phone: Option<String>,
}

async fn phone_code(State(sim): State<Sim>, raw: Bytes) -> Response {
    let req: PhoneReq = try_resp!(body(&raw));
    match sim.phone_code(&req.appid, &req.openid, req.phone) {
        Ok(code) => Json(json!({"code": code})).into_response(),
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

async fn open_data(State(sim): State<Sim>, raw: Bytes) -> Response {
    let req: OpenDataReq = try_resp!(body(&raw));
    match sim.open_data(&req.appid, &req.openid, req.data) {
        Ok((data, iv)) => Json(json!({"encryptedData": data, "iv": iv})).into_response(),
        Err(e) => from_wx(e),
    }
}

/// The `/_sim` routes of this domain: the getPhoneNumber button and open data.
pub(crate) fn control() -> Router<Sim> {
    Router::new()
        .route("/_sim/phone-code", post(phone_code))
        .route("/_sim/open-data", post(open_data))
}
