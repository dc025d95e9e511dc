//! Access tokens: `/cgi-bin/token` (every fetch retires the previous token after 300 s) and
//! `/cgi-bin/stable_token` (the same token while it lives; forced refreshes 20 a day, 30 s
//! apart), with their quotas, expiry and the 40001/42001 answers to tokens that no longer work.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::clock::{day_of, minute_of};
use crate::error::{invalid_credential, WxError, WxResult};
use crate::http::{answer, body, from_wx, json_body, p, s, try_resp, wx_error, Params};
use crate::journal::Event;
use crate::random::random_alnum;
use crate::state::platform::permission_set;
pub use crate::state::tokens::TokenKind;
use crate::state::tokens::{Slot, TokenRec};
use crate::world::{Sim, World};

/// Lifetime of an access token (seconds).
pub const TOKEN_TTL: i64 = 7200;
/// How long a superseded token keeps working (seconds).
pub const TOKEN_OVERLAP: i64 = 300;
/// Classic `/cgi-bin/token` fetches per day.
pub const CLASSIC_DAILY_QUOTA: u32 = 2000;
/// `stable_token` calls per minute / per day.
pub const STABLE_MINUTE_QUOTA: u32 = 10_000;
/// `stable_token` calls per day.
pub const STABLE_DAILY_QUOTA: u32 = 500_000;
/// Forced `stable_token` refreshes per day.
pub const STABLE_FORCE_DAILY: u32 = 20;
/// Minimum spacing of forced refreshes (seconds).
pub const STABLE_FORCE_SPACING: i64 = 30;

/// Validates `access_token`, counts the call for `quota/get`, then runs `f` with the token's
/// appid.
pub(crate) fn with_token(
    sim: &Sim,
    path: &str,
    q: &HashMap<String, String>,
    f: impl FnOnce(&str) -> WxResult<Value>,
) -> Response {
    answer(
        sim,
        path,
        sim.check_api_token(p(q, "access_token"), path)
            .and_then(|appid| {
                sim.count_app_call(&appid, path);
                f(&appid)
            }),
    )
}

/// A token shown without its secret part.
fn masked(token: &str) -> String {
    crate::journal::mask(json!({"access_token": token}))["access_token"]
        .as_str()
        .unwrap_or("***")
        .to_owned()
}

impl Sim {
    pub(crate) fn mint(
        &self,
        w: &mut World,
        appid: &str,
        kind: TokenKind,
        now: i64,
        forced: bool,
    ) -> (String, i64) {
        let token = format!(
            "{}_{}",
            match kind {
                TokenKind::Classic => "SIMC",
                TokenKind::Stable => "SIMS",
                TokenKind::Authorizer => "SIMA",
            },
            random_alnum(128)
        );
        let expires_at = now + TOKEN_TTL * 1000;
        w.tokens.tokens.insert(
            token.clone(),
            TokenRec {
                appid: appid.into(),
                issued_at: now,
                expires_at,
                valid_until: None,
                component: None,
            },
        );
        *w.tokens
            .issued
            .entry(appid.into())
            .or_default()
            .entry(kind)
            .or_default() += 1;
        self.record_at(
            now,
            Event::new("token_issued")
                .appid(appid)
                .detail(json!({"token_kind": kind, "access_token": token, "expires_at": expires_at, "forced": forced})),
        );
        (token, expires_at)
    }

    pub(crate) fn supersede(&self, w: &mut World, token: &str, until: i64, now: i64) {
        if let Some(rec) = w.tokens.tokens.get_mut(token) {
            let until = rec.valid_until.map_or(until, |u| u.min(until));
            rec.valid_until = Some(until);
            let appid = rec.appid.clone();
            self.record_at(
                now,
                Event::new("token_retired")
                    .appid(appid)
                    .detail(json!({"access_token": token, "valid_until": until})),
            );
        }
    }

    /// `GET /cgi-bin/token`: a new token on every call; the previous one keeps working for 300 s,
    /// anything older dies.
    ///
    /// # Errors
    /// 41002, 40013, 40002, 41004, 40125 (wrong secret), 45009 (2000/day).
    pub fn classic_token(
        &self,
        grant_type: Option<&str>,
        appid: Option<&str>,
        secret: Option<&str>,
    ) -> WxResult<(String, i64)> {
        let mut w = self.world();
        let now = self.now_in(&w);
        // Production checks the appid before grant_type (a probe of 2026-09-17: no grant_type
        // and an unknown appid → 40013).
        match appid.filter(|a| !a.is_empty()) {
            None => return Err(WxError::new(41002, "appid missing")),
            Some(a) => {
                w.app_mut(a)?;
            }
        }
        if grant_type != Some("client_credential") {
            return Err(WxError::new(40002, "invalid grant_type"));
        }
        let app = Self::check_app(&mut w, appid, secret)?;
        if !app.take("classic_token", day_of(now), CLASSIC_DAILY_QUOTA) {
            return Err(WxError::new(45009, "reach max api daily quota limit"));
        }
        let old_prev = app.tokens.classic.previous.take();
        let old_cur = app.tokens.classic.current.take();
        let appid = appid.unwrap_or_default();
        if let Some(t) = old_prev {
            self.supersede(&mut w, &t, now, now);
        }
        if let Some((t, _)) = &old_cur {
            self.supersede(&mut w, t, now + TOKEN_OVERLAP * 1000, now);
        }
        let (token, expires_at) = self.mint(&mut w, appid, TokenKind::Classic, now, false);
        let app = w.apps.get_mut(appid).expect("checked above");
        app.tokens.classic.previous = old_cur.map(|(t, _)| t);
        app.tokens.classic.current = Some((token.clone(), expires_at));
        Ok((token, TOKEN_TTL))
    }

    /// `POST /cgi-bin/stable_token`: the same token while it has more than 300 s left, a new one
    /// (old one valid to its expiry) after; `force` replaces it at once (old one gets ≤ 300 s),
    /// at most 20 times a day and not within 30 s of the last forced refresh.
    ///
    /// # Errors
    /// 40002, 41002, 41004, 40013, 40125, 45009, 45011.
    pub fn stable_token(
        &self,
        grant_type: Option<&str>,
        appid: Option<&str>,
        secret: Option<&str>,
        force: bool,
    ) -> WxResult<(String, i64)> {
        if grant_type != Some("client_credential") {
            return Err(WxError::new(40002, "invalid grant_type"));
        }
        let mut w = self.world();
        let now = self.now_in(&w);
        let app = Self::check_app(&mut w, appid, secret)?;
        if !app.take("stable_day", day_of(now), STABLE_DAILY_QUOTA) {
            return Err(WxError::new(45009, "reach max api daily quota limit"));
        }
        if !app.take("stable_minute", minute_of(now), STABLE_MINUTE_QUOTA) {
            return Err(WxError::new(
                45011,
                "api minute-quota reach limit, must slower, retry next minute",
            ));
        }
        let appid = appid.unwrap_or_default().to_owned();
        let current = app.tokens.stable.current.clone();
        let remaining = |exp: i64| (exp - now) / 1000;
        if force {
            app.tokens.force_requests += 1;
            let recently = app
                .tokens
                .last_force
                .is_some_and(|t| now - t < STABLE_FORCE_SPACING * 1000);
            if let (true, Some((t, exp))) = (recently, &current) {
                if *exp > now {
                    return Ok((t.clone(), remaining(*exp)));
                }
            }
            if !app.take("stable_force", day_of(now), STABLE_FORCE_DAILY) {
                return Err(WxError::new(45009, "reach max api daily quota limit"));
            }
            app.tokens.last_force = Some(now);
            let old_prev = app.tokens.stable.previous.take();
            if let Some(t) = old_prev {
                self.supersede(&mut w, &t, now, now);
            }
            if let Some((t, _)) = &current {
                self.supersede(&mut w, t, now + TOKEN_OVERLAP * 1000, now);
            }
        } else {
            match &current {
                Some((t, exp)) if *exp - now > TOKEN_OVERLAP * 1000 => {
                    return Ok((t.clone(), remaining(*exp)));
                }
                _ => {
                    // Rotation: the old token keeps working until its own expiry.
                    let old_prev = app.tokens.stable.previous.take();
                    if let Some(t) = old_prev {
                        self.supersede(&mut w, &t, now, now);
                    }
                }
            }
        }
        let (token, expires_at) = self.mint(&mut w, &appid, TokenKind::Stable, now, force);
        let app = w.apps.get_mut(&appid).expect("checked above");
        app.tokens.stable.previous = current.map(|(t, _)| t);
        app.tokens.stable.current = Some((token.clone(), expires_at));
        Ok((token, TOKEN_TTL))
    }

    /// How many `stable_token` calls of `appid` asked to force a refresh (each one spends the
    /// 20-a-day budget when it is not within 30 s of the last).
    pub fn force_requests(&self, appid: &str) -> u64 {
        self.world()
            .apps
            .get(appid)
            .map_or(0, |a| a.tokens.force_requests)
    }

    /// How many tokens of `kind` were issued to `appid`.
    pub fn tokens_issued(&self, appid: &str, kind: TokenKind) -> u64 {
        self.world()
            .tokens
            .issued
            .get(appid)
            .and_then(|m| m.get(&kind))
            .copied()
            .unwrap_or(0)
    }

    /// Validates an access token from a query string; returns its appid. Not an API call:
    /// an authorizer token's permission sets and its platform's IP whitelist are not looked
    /// at (the simulator's API routes use [`Sim::check_api_token`]).
    ///
    /// # Errors
    /// 41001 missing, 42001 expired, 40001 unknown or superseded.
    pub fn check_token(&self, token: Option<&str>) -> WxResult<String> {
        self.check_api_token(token, "")
    }

    /// [`Sim::check_token`] for a call of the mini program API at `path`: an authorizer token
    /// (a third-party platform acting for the mini program) must also come from an address
    /// on the platform's IP whitelist, if it has one, and with the permission set `path`
    /// belongs to among those the merchant granted the platform (see
    /// [`crate::platform::permission_set`]).
    ///
    /// # Errors
    /// 41001 missing, 42001 expired, 40001 unknown or superseded, 61004 an address not on the
    /// platform's whitelist, 61007 a permission set the merchant did not grant.
    pub fn check_api_token(&self, token: Option<&str>, path: &str) -> WxResult<String> {
        let token = token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| WxError::new(41001, "access_token missing"))?;
        let w = self.world();
        let now = self.now_in(&w);
        let rec = w.tokens.tokens.get(token).ok_or_else(invalid_credential)?;
        if now >= rec.expires_at {
            return Err(WxError::new(42001, "access_token expired"));
        }
        if rec.valid_until.is_some_and(|u| now >= u) {
            return Err(invalid_credential());
        }
        if let Some(component) = rec.component.as_deref() {
            // A platform acting for a merchant: from its whitelisted addresses only, and within
            // the permission sets the merchant granted.
            w.platforms.check_whitelist(component)?;
            if let Some(set) = permission_set(path) {
                if !w.platforms.granted(component, &rec.appid, set) {
                    return Err(WxError::new(61007, "api is unauthorized to component"));
                }
            }
        }
        Ok(rec.appid.clone())
    }

    /// The app a token was issued to, whether it still works or not (for the journal).
    pub(crate) fn token_owner(&self, token: &str) -> Option<String> {
        self.world()
            .tokens
            .tokens
            .get(token)
            .map(|r| r.appid.clone())
    }

    /// What the console shows of an app's tokens: for `classic` and `stable`, the current and
    /// previous token (masked), when issued, when they expire or stop working; quotas used and
    /// left today.
    ///
    /// # Errors
    /// 40013 unknown app.
    pub fn token_view(&self, appid: &str) -> WxResult<Value> {
        let w = self.world();
        let now = self.now_in(&w);
        let app = w
            .apps
            .get(appid)
            .ok_or_else(|| WxError::new(40013, "invalid appid"))?;
        let describe = |token: &str| {
            let rec = w.tokens.tokens.get(token);
            json!({
                "access_token": masked(token),
                "issued_at": rec.map(|r| r.issued_at),
                "expires_at": rec.map(|r| r.expires_at),
                "valid_until": rec.and_then(|r| r.valid_until),
                "works": rec.is_some_and(|r| now < r.expires_at && r.valid_until.is_none_or(|u| now < u)),
            })
        };
        let slot = |s: &Slot| {
            json!({
                "current": s.current.as_ref().map(|(t, _)| describe(t)),
                "previous": s.previous.as_ref().map(|t| describe(t)),
            })
        };
        let used = |name: &str| {
            app.counters
                .get(name)
                .filter(|(d, _)| *d == day_of(now))
                .map_or(0, |(_, n)| *n)
        };
        Ok(json!({
            "appid": appid,
            "now": now,
            "overlap_secs": TOKEN_OVERLAP,
            "classic": slot(&app.tokens.classic),
            "stable": slot(&app.tokens.stable),
            "quota": {
                "classic": {"used": used("classic_token"), "left": CLASSIC_DAILY_QUOTA.saturating_sub(used("classic_token"))},
                "stable": {"used": used("stable_day"), "left": STABLE_DAILY_QUOTA.saturating_sub(used("stable_day"))},
                "stable_force": {"used": used("stable_force"), "left": STABLE_FORCE_DAILY.saturating_sub(used("stable_force"))},
            },
        }))
    }
}

/// What "another machine" holding the app's secret does (the console's forgotten laptop).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ForeignFetch {
    /// A classic `GET /cgi-bin/token`: the classic token in use keeps working for 300 s, the
    /// one before it dies at once. Stable tokens are not touched.
    #[default]
    Classic,
    /// `POST /cgi-bin/stable_token` with `force_refresh: true`: the stable token in use keeps
    /// working for 300 s, the one before it dies at once (within 30 s of the last forced
    /// refresh WeChat answers the current token and nothing changes). Classic tokens are not
    /// touched.
    StableForce,
}

impl ForeignFetch {
    fn token_kind(self) -> TokenKind {
        match self {
            Self::Classic => TokenKind::Classic,
            Self::StableForce => TokenKind::Stable,
        }
    }

    fn path(self) -> &'static str {
        match self {
            Self::Classic => "/cgi-bin/token",
            Self::StableForce => "/cgi-bin/stable_token",
        }
    }
}

impl Sim {
    /// Fetches a token of `appid` the way another machine with its secret would, and tells
    /// what that did: `{kind, path, token_kind, access_token (masked), expires_in, renewed,
    /// now, retired: [{access_token (masked), token_kind, valid_until, works}]}` — `renewed`
    /// is false when WeChat answered the token in use (a forced refresh within 30 s of the
    /// last); `retired` lists the tokens this fetch cut short (`valid_until`, Unix ms: when
    /// each stops working; `now` is the simulator's time, Unix ms). Journaled as
    /// `foreign_fetch`.
    ///
    /// # Errors
    /// 40013 unknown app; the token endpoint's own refusals (45009 quota).
    pub fn foreign_fetch(&self, appid: &str, kind: ForeignFetch) -> WxResult<Value> {
        let token_kind = kind.token_kind();
        // The tokens of that kind in use, and until when each worked before this fetch.
        let (secret, before) = {
            let w = self.world();
            let app = w
                .apps
                .get(appid)
                .ok_or_else(|| WxError::new(40013, "invalid appid"))?;
            let slot = match token_kind {
                TokenKind::Classic => &app.tokens.classic,
                _ => &app.tokens.stable,
            };
            let before: Vec<(String, Option<i64>)> = slot
                .current
                .iter()
                .map(|(t, _)| t.clone())
                .chain(slot.previous.iter().cloned())
                .map(|t| {
                    let until = w.tokens.tokens.get(&t).and_then(|r| r.valid_until);
                    (t, until)
                })
                .collect();
            (app.secret.clone(), before)
        };
        let (token, expires_in) = match kind {
            ForeignFetch::Classic => {
                self.classic_token(Some("client_credential"), Some(appid), Some(&secret))?
            }
            ForeignFetch::StableForce => {
                self.stable_token(Some("client_credential"), Some(appid), Some(&secret), true)?
            }
        };
        let (now, retired) = {
            let w = self.world();
            let now = self.now_in(&w);
            let retired: Vec<Value> = before
                .iter()
                .filter_map(|(t, until_before)| {
                    let rec = w.tokens.tokens.get(t)?;
                    let until = rec.valid_until?;
                    // Cut short by this fetch: it had no end before, or an end later than now.
                    (until_before.is_none_or(|b| until < b)).then(|| {
                        let stops = until.min(rec.expires_at);
                        json!({
                            "access_token": t,
                            "token_kind": token_kind,
                            "valid_until": stops,
                            "works": now < stops,
                        })
                    })
                })
                .collect();
            (now, retired)
        };
        let renewed = !before.iter().any(|(t, _)| *t == token);
        // The journal masks the tokens itself (the same way as every other event's).
        self.record(
            Event::new("foreign_fetch")
                .appid(appid)
                .path(kind.path())
                .detail(json!({"kind": kind, "access_token": token, "renewed": renewed, "retired": retired})),
        );
        let retired: Vec<Value> = retired
            .into_iter()
            .map(|mut r| {
                let shown = masked(r["access_token"].as_str().unwrap_or_default());
                r["access_token"] = Value::String(shown);
                r
            })
            .collect();
        Ok(json!({
            "kind": kind,
            "path": kind.path(),
            "token_kind": token_kind,
            "access_token": masked(&token),
            "expires_in": expires_in,
            "renewed": renewed,
            "now": now,
            "retired": retired,
        }))
    }
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

async fn view(State(sim): State<Sim>, Path(appid): Path<String>) -> Response {
    match sim.token_view(&appid) {
        Ok(v) => Json(v).into_response(),
        Err(e) => from_wx(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ForeignReq {
    #[serde(default)]
    kind: ForeignFetch,
}

/// The forgotten laptop: someone else fetches a token with the app's secret, which starts
/// retiring the token everyone else holds. The body (optional) picks how: `{"kind": "classic"}`
/// (the default) or `{"kind": "stable_force"}`.
async fn foreign_fetch(State(sim): State<Sim>, Path(appid): Path<String>, raw: Bytes) -> Response {
    let req: ForeignReq = try_resp!(body(&raw));
    match sim.foreign_fetch(&appid, req.kind) {
        Ok(v) => Json(v).into_response(),
        Err(e) => from_wx(e),
    }
}

/// The WeChat routes of this domain.
pub(crate) fn routes() -> Router<Sim> {
    Router::new()
        .route("/cgi-bin/token", get(classic_token))
        .route(
            "/cgi-bin/stable_token",
            post(stable_token).get(stable_token_get),
        )
}

/// The `/_sim` routes of this domain: the console's token view and a foreign fetch.
pub(crate) fn control() -> Router<Sim> {
    Router::new()
        .route("/_sim/apps/{appid}/tokens", get(view))
        .route("/_sim/apps/{appid}/foreign-token", post(foreign_fetch))
}
