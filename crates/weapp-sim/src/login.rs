//! Login and identity: `wx.login()` codes and `jscode2session` (one use, 5 minutes, per-user
//! minute limit, blocked users), session keys and the login-state signature calls
//! (`checksession`, `resetusersessionkey`, `getuserencryptkey`), plugin codes, and the paid
//! unionid within 5 minutes of a payment.

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::clock::minute_of;
use crate::crypto::subtle_eq;
use crate::error::{WxError, WxResult};
use crate::http::{
    answer, body, control_error, from_wx, json_body, ok, ok_with, p, s, try_resp, Params,
};
use crate::journal::Event;
use crate::random::{random_alnum, random_key};
use crate::state::{login::Payment, Code};
use crate::tokens::with_token;
use crate::world::{new_user, Sim, World, CODE_TTL};

/// `jscode2session` redemptions per user per minute (the legacy documented figure).
pub const JSCODE_PER_USER_MINUTE: u32 = 100;

impl Sim {
    /// What `wx.login()` does: creates the user if needed, rotates their session_key, and
    /// returns a fresh one-time code and the openid.
    ///
    /// # Errors
    /// 40013 for an unknown app.
    pub fn login(
        &self,
        appid: &str,
        openid: Option<String>,
        unionid: Option<String>,
        blocked: bool,
    ) -> WxResult<(String, String)> {
        let mut w = self.world();
        let now = self.now_in(&w);
        let app = w.app_mut(appid)?;
        let openid = openid.unwrap_or_else(|| format!("o{}", random_alnum(27)));
        let app_unionid = app.unionid;
        let user = app
            .users
            .entry(openid.clone())
            .or_insert_with(|| new_user(&openid, now));
        user.last_seen = now;
        if let Some(u) = unionid {
            user.unionid = Some(u);
        } else if app_unionid && user.unionid.is_none() {
            user.unionid = Some(format!("o{}", random_alnum(27)));
        }
        user.blocked = blocked;
        user.session_key = Some(random_key());
        let code = random_alnum(32);
        w.login.codes.insert(
            code.clone(),
            Code {
                appid: appid.into(),
                openid: openid.clone(),
                issued_at: now,
                used: false,
                phone: None,
            },
        );
        self.record_at(
            now,
            Event::new("code_issued")
                .appid(appid)
                .openid(&openid)
                .detail(json!({"code_kind": "login", "code": code})),
        );
        Ok((code, openid))
    }

    /// A one-time plugin code for `getpluginopenpid`.
    ///
    /// # Errors
    /// 40013 unknown app, 40003 unknown user.
    pub fn plugin_code(&self, appid: &str, openid: &str) -> WxResult<String> {
        self.issue_code("plugin", |w| &mut w.login.plugin_codes, appid, openid, None)
    }

    /// Records a payment by a user (for `getpaidunionid`).
    ///
    /// # Errors
    /// 40013 unknown app, 40003 unknown user.
    pub fn record_payment(
        &self,
        appid: &str,
        openid: &str,
        transaction_id: Option<String>,
        mch_id: Option<String>,
        out_trade_no: Option<String>,
    ) -> WxResult<()> {
        let mut w = self.world();
        let now = self.now_in(&w);
        let app = w.app_with_user(appid, openid)?;
        app.login.payments.push(Payment {
            openid: openid.into(),
            transaction_id,
            mch_id,
            out_trade_no,
            paid_at: now,
        });
        Ok(())
    }

    /// `jscode2session`.
    ///
    /// # Errors
    /// 41002/41004/40013/40125 credentials, 40029 unknown/expired/foreign code, 40163 used code,
    /// 40226 blocked user, 45011 over 100 redemptions per user per minute.
    pub fn code_to_session(
        &self,
        appid: Option<&str>,
        secret: Option<&str>,
        js_code: Option<&str>,
        grant_type: Option<&str>,
    ) -> WxResult<Value> {
        let mut w = self.world();
        let now = self.now_in(&w);
        Self::check_app(&mut w, appid, secret)?;
        if grant_type.is_some_and(|g| g != "authorization_code") {
            return Err(WxError::new(40002, "invalid grant_type"));
        }
        self.redeem_login_code(
            &mut w,
            appid.unwrap_or_default(),
            js_code,
            now,
            "/sns/jscode2session",
        )
    }

    /// Redeems a `wx.login()` code of `appid` (checked by the caller): the user's openid,
    /// session_key and unionid; the code is used up.
    pub(crate) fn redeem_login_code(
        &self,
        w: &mut World,
        appid: &str,
        js_code: Option<&str>,
        now: i64,
        path: &str,
    ) -> WxResult<Value> {
        let js_code = js_code
            .filter(|c| !c.is_empty())
            .ok_or_else(|| WxError::new(40029, "invalid code"))?;
        let code = match w.login.codes.get_mut(js_code) {
            Some(c) if c.appid == appid && now - c.issued_at < CODE_TTL * 1000 => c,
            _ => return Err(WxError::new(40029, "invalid code")),
        };
        if code.used {
            return Err(WxError::new(40163, "code been used"));
        }
        let openid = code.openid.clone();
        let user = w
            .apps
            .get_mut(appid)
            .and_then(|a| a.users.get_mut(&openid))
            .ok_or_else(|| WxError::new(40029, "invalid code"))?;
        let minute = minute_of(now);
        if user.jscode_minute.0 != minute {
            user.jscode_minute = (minute, 0);
        }
        if user.jscode_minute.1 >= JSCODE_PER_USER_MINUTE {
            return Err(WxError::new(
                45011,
                "api minute-quota reach limit, must slower, retry next minute",
            ));
        }
        user.jscode_minute.1 += 1;
        if user.blocked {
            return Err(WxError::new(40226, "code blocked"));
        }
        let mut out = json!({"openid": user.openid, "session_key": user.session_key});
        if let Some(u) = &user.unionid {
            out["unionid"] = json!(u);
        }
        if let Some(c) = w.login.codes.get_mut(js_code) {
            c.used = true;
        }
        self.record_at(
            now,
            Event::new("code_redeemed")
                .appid(appid)
                .openid(&openid)
                .path(path)
                .detail(json!({"code_kind": "login", "code": js_code})),
        );
        Ok(out)
    }

    fn signed_user(
        &self,
        w: &mut World,
        appid: &str,
        openid: Option<&str>,
        signature: Option<&str>,
        sig_method: Option<&str>,
    ) -> WxResult<String> {
        if sig_method != Some("hmac_sha256") {
            return Err(WxError::new(87008, "invalid sig_method"));
        }
        let openid = openid
            .filter(|o| !o.is_empty())
            .ok_or_else(|| WxError::new(40003, "invalid openid"))?;
        let user = w
            .apps
            .get_mut(appid)
            .and_then(|a| a.users.get_mut(openid))
            .ok_or_else(|| WxError::new(40003, "invalid openid"))?;
        let key = user
            .session_key
            .clone()
            .ok_or_else(|| WxError::new(87007, "session_key is not existed or expired"))?;
        let expected = crate::crypto::hmac_sha256_hex(key.as_bytes(), b"");
        let given = signature.unwrap_or_default().to_ascii_lowercase();
        if !bool::from(subtle_eq(expected.as_bytes(), given.as_bytes())) {
            return Err(WxError::new(87009, "invalid signature"));
        }
        Ok(openid.to_owned())
    }

    /// `checksession`: 87009 unless the signature was made with the current session_key.
    ///
    /// # Errors
    /// 87008, 40003, 87007, 87009.
    pub fn check_session(
        &self,
        appid: &str,
        openid: Option<&str>,
        signature: Option<&str>,
        sig_method: Option<&str>,
    ) -> WxResult<()> {
        let mut w = self.world();
        self.signed_user(&mut w, appid, openid, signature, sig_method)
            .map(|_| ())
    }

    /// `resetusersessionkey`: a new key replaces the current one at once.
    ///
    /// # Errors
    /// As [`Sim::check_session`].
    pub fn reset_session_key(
        &self,
        appid: &str,
        openid: Option<&str>,
        signature: Option<&str>,
        sig_method: Option<&str>,
    ) -> WxResult<Value> {
        let mut w = self.world();
        let openid = self.signed_user(&mut w, appid, openid, signature, sig_method)?;
        let user = w
            .apps
            .get_mut(appid)
            .and_then(|a| a.users.get_mut(&openid))
            .expect("checked");
        let key = random_key();
        user.session_key = Some(key.clone());
        Ok(json!({"openid": openid, "session_key": key}))
    }

    /// `getuserencryptkey`: the user's last three keys, creating one on first use.
    ///
    /// # Errors
    /// As [`Sim::check_session`].
    pub fn user_encrypt_key(
        &self,
        appid: &str,
        openid: Option<&str>,
        signature: Option<&str>,
        sig_method: Option<&str>,
    ) -> WxResult<Value> {
        let mut w = self.world();
        let now = self.now_in(&w) / 1000;
        let openid = self.signed_user(&mut w, appid, openid, signature, sig_method)?;
        let user = w
            .apps
            .get_mut(appid)
            .and_then(|a| a.users.get_mut(&openid))
            .expect("checked");
        if user.encrypt_keys.is_empty() {
            user.encrypt_keys.push(json!({
                "encrypt_key": random_key(),
                "version": 1,
                "expire_in": 3600,
                "iv": hex::encode(rand::random::<[u8; 16]>()),
                "create_time": now,
            }));
        }
        Ok(json!({"key_info_list": user.encrypt_keys}))
    }

    /// `getpluginopenpid`.
    ///
    /// # Errors
    /// 1007 unknown/expired/used code (errmsg empty: `" rid: …"`, captures 2022–2024), 1005 a
    /// code of another app (documented; no capture).
    pub fn plugin_openpid(&self, appid: &str, code: Option<&str>) -> WxResult<Value> {
        let c = self
            .redeem(
                "plugin",
                "/wxa/getpluginopenpid",
                |w| &mut w.login.plugin_codes,
                appid,
                code,
            )
            .map_err(|e| match e.code {
                40029 => WxError::new(1007, ""),
                40013 => WxError::new(1005, ""),
                _ => e,
            })?;
        let digest = crate::crypto::hmac_sha256_hex(appid.as_bytes(), c.openid.as_bytes());
        Ok(json!({"openpid": format!("p{}", &digest[..27])}))
    }

    /// `getpaidunionid`: only within 5 minutes of a recorded payment.
    ///
    /// # Errors
    /// 40003 unknown user, 89300 no such (recent) trade, 89002 app without open platform.
    pub fn paid_unionid(
        &self,
        appid: &str,
        openid: Option<&str>,
        transaction_id: Option<&str>,
        mch_id: Option<&str>,
        out_trade_no: Option<&str>,
    ) -> WxResult<Value> {
        let w = self.world();
        let now = self.now_in(&w);
        let app = w
            .apps
            .get(appid)
            .ok_or_else(|| WxError::new(40013, "invalid appid"))?;
        let openid = openid.unwrap_or_default();
        let user = app
            .users
            .get(openid)
            .ok_or_else(|| WxError::new(40003, "invalid openid"))?;
        if transaction_id.is_none() && (mch_id.is_none() || out_trade_no.is_none()) {
            return Err(WxError::new(40097, "invalid args"));
        }
        let found = app.login.payments.iter().any(|p| {
            p.openid == openid
                && now - p.paid_at < 300_000
                && match transaction_id {
                    Some(t) => p.transaction_id.as_deref() == Some(t),
                    None => {
                        p.mch_id.as_deref() == mch_id && p.out_trade_no.as_deref() == out_trade_no
                    }
                }
        });
        if !found {
            return Err(WxError::new(89300, "invalid trade"));
        }
        match &user.unionid {
            Some(u) => Ok(json!({"unionid": u})),
            None => Err(WxError::new(89002, "open not exists")),
        }
    }
}

// ------------------------------------------------------------------------------ WeChat routes

async fn jscode2session(State(sim): State<Sim>, Query(q): Params) -> Response {
    let r = sim.code_to_session(
        p(&q, "appid"),
        p(&q, "secret"),
        p(&q, "js_code"),
        p(&q, "grant_type"),
    );
    answer(&sim, "/sns/jscode2session", r)
}

async fn checksession(State(sim): State<Sim>, Query(q): Params) -> Response {
    with_token(&sim, "/wxa/checksession", &q, |appid| {
        sim.check_session(
            appid,
            p(&q, "openid"),
            p(&q, "signature"),
            p(&q, "sig_method"),
        )
        .map(|()| ok())
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

/// The WeChat routes of this domain.
pub(crate) fn routes() -> Router<Sim> {
    Router::new()
        .route("/sns/jscode2session", get(jscode2session))
        .route("/wxa/checksession", get(checksession))
        .route("/wxa/resetusersessionkey", get(resetusersessionkey))
        .route("/wxa/business/getuserencryptkey", post(getuserencryptkey))
        .route("/wxa/getpluginopenpid", post(getpluginopenpid))
        .route("/wxa/getpaidunionid", get(getpaidunionid))
}

// ----------------------------------------------------------------------------- control routes

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginReq {
    appid: String,
    openid: Option<String>,
    unionid: Option<String>,
    #[serde(default)]
    blocked: bool,
}

async fn login(State(sim): State<Sim>, raw: Bytes) -> Response {
    let req: LoginReq = try_resp!(body(&raw));
    for (what, id) in [("openid", &req.openid), ("unionid", &req.unionid)] {
        if let Err(resp) = crate::http::check_user_id(what, id.as_deref()) {
            return *resp;
        }
    }
    match sim.login(&req.appid, req.openid, req.unionid, req.blocked) {
        Ok((code, openid)) => Json(json!({"code": code, "openid": openid})).into_response(),
        Err(e) => from_wx(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserReq {
    appid: String,
    openid: String,
}

async fn plugin_code(State(sim): State<Sim>, raw: Bytes) -> Response {
    let req: UserReq = try_resp!(body(&raw));
    match sim.plugin_code(&req.appid, &req.openid) {
        Ok(code) => Json(json!({"code": code})).into_response(),
        Err(e) => from_wx(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PaymentReq {
    appid: String,
    openid: String,
    transaction_id: Option<String>,
    mch_id: Option<String>,
    out_trade_no: Option<String>,
}

async fn payment(State(sim): State<Sim>, raw: Bytes) -> Response {
    let req: PaymentReq = try_resp!(body(&raw));
    if req.transaction_id.is_none() && (req.mch_id.is_none() || req.out_trade_no.is_none()) {
        return control_error(
            axum::http::StatusCode::BAD_REQUEST,
            "give transaction_id, or mch_id and out_trade_no",
        );
    }
    match sim.record_payment(
        &req.appid,
        &req.openid,
        req.transaction_id,
        req.mch_id,
        req.out_trade_no,
    ) {
        Ok(()) => Json(json!({})).into_response(),
        Err(e) => from_wx(e),
    }
}

/// The `/_sim` routes of this domain: what `wx.login()` and the payment flow hand over.
pub(crate) fn control() -> Router<Sim> {
    Router::new()
        .route("/_sim/login", post(login))
        .route("/_sim/plugin-code", post(plugin_code))
        .route("/_sim/payment", post(payment))
}
