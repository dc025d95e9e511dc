//! The simulator's own side of the control API: registering apps and users, the clock,
//! faults, rids and call statistics, and reset — as [`Sim`] methods and their `/_sim` routes.
//! The state they act on is the [`World`](crate::world::World); each WeChat domain keeps its
//! rules, its WeChat routes and its `/_sim` routes in a module of its own.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::clock::ClockMode;
use crate::error::WxResult;
use crate::http::{body, control_error, from_wx, try_resp};
use crate::journal::Event;
use crate::random::{random_alnum, random_hex};
use crate::state::push::PushTarget;
use crate::world::{new_user, App, Fault, RidRecord, Sim, User, World};

impl Sim {
    /// Registers (or updates) an app. Missing values are generated. Returns `(appid, secret)`.
    pub fn add_app(
        &self,
        appid: Option<String>,
        secret: Option<String>,
        unionid: bool,
    ) -> (String, String) {
        let appid = appid.unwrap_or_else(|| format!("wx{}", random_hex(8)));
        let mut w = self.world();
        let secret = match (w.apps.get_mut(&appid), secret) {
            (Some(app), Some(s)) => {
                app.secret = s.clone();
                app.unionid |= unionid;
                s
            }
            (Some(app), None) => {
                app.unionid |= unionid;
                app.secret.clone()
            }
            (None, s) => {
                let s = s.unwrap_or_else(|| random_hex(16));
                w.apps.insert(appid.clone(), App::new(s.clone(), unionid));
                s
            }
        };
        (appid, secret)
    }

    /// The registered apps: `[{appid, unionid, users: [{openid, unionid, phone, blocked}], push}]`,
    /// sorted by appid (no secrets, no session keys).
    pub fn apps(&self) -> Vec<Value> {
        let w = self.world();
        let mut out: Vec<Value> = w
            .apps
            .iter()
            .map(|(id, a)| {
                let mut users: Vec<&User> = a.users.values().collect();
                users.sort_by(|x, y| x.openid.cmp(&y.openid));
                // Without session keys: those are for `GET /_sim/users`, one user at a time.
                let users: Vec<Value> = users
                    .iter()
                    .map(|u| json!({"openid": u.openid, "unionid": u.unionid, "phone": u.phone, "blocked": u.blocked}))
                    .collect();
                json!({
                    "appid": id,
                    "unionid": a.unionid,
                    "users": users,
                    "push": a.push.as_ref().map(PushTarget::public_view),
                })
            })
            .collect();
        out.sort_by(|a, b| a["appid"].as_str().cmp(&b["appid"].as_str()));
        out
    }

    /// Clears every dynamic thing — tokens, users, codes, quotas, faults, statistics, clock
    /// offset, the journal, WeChat Pay's orders, refunds and notifications — but keeps the
    /// registered apps, their secrets and push settings, and the pay merchants with their keys.
    pub fn reset(&self) {
        let mut w = self.world();
        let apps: Vec<(String, String, bool, Option<PushTarget>)> = w
            .apps
            .iter()
            .map(|(id, a)| (id.clone(), a.secret.clone(), a.unionid, a.push.clone()))
            .collect();
        let real_time = w.real_anchor.is_some();
        let console = std::mem::take(&mut w.console).settings_only();
        let platforms = w.platforms.registrations_only();
        let pay = std::mem::take(&mut w.pay).merchants_only();
        *w = World {
            console,
            platforms,
            pay,
            ..World::default()
        };
        // A reset clock is the start time (virtual) or the wall clock's time (real time).
        if real_time {
            self.anchor_at_wall_clock(&mut w);
        }
        for (id, secret, unionid, push) in apps {
            let mut app = App::new(secret, unionid);
            app.push = push;
            w.apps.insert(id, app);
        }
        drop(w);
        self.journal().clear();
    }

    /// A user's state.
    pub fn user(&self, appid: &str, openid: &str) -> Option<User> {
        self.world().apps.get(appid)?.users.get(openid).cloned()
    }

    /// Creates (or updates) a user without logging them in: for the console's phone, which
    /// picks a user before tapping `wx.login`.
    ///
    /// # Errors
    /// 40013 for an unknown app.
    pub fn create_user(
        &self,
        appid: &str,
        openid: Option<String>,
        unionid: Option<String>,
        blocked: bool,
    ) -> WxResult<User> {
        let mut w = self.world();
        let now = self.now_in(&w);
        let app = w.app_mut(appid)?;
        let openid = openid.unwrap_or_else(|| format!("o{}", random_alnum(27)));
        let app_unionid = app.unionid;
        let user = app
            .users
            .entry(openid.clone())
            .or_insert_with(|| new_user(&openid, now));
        if let Some(u) = unionid {
            user.unionid = Some(u);
        } else if app_unionid && user.unionid.is_none() {
            user.unionid = Some(format!("o{}", random_alnum(27)));
        }
        user.blocked = blocked;
        Ok(user.clone())
    }

    /// Adds a fault; returns its id.
    pub fn add_fault(&self, fault: Fault) -> u64 {
        let id = {
            let mut w = self.world();
            w.next_fault_id += 1;
            let id = w.next_fault_id;
            w.faults.push((id, fault.clone()));
            id
        };
        self.record(
            Event::new("fault_added")
                .path(&fault.path)
                .detail(json!({"id": id, "fault": fault})),
        );
        id
    }

    /// The faults in force.
    pub fn faults(&self) -> Vec<Fault> {
        self.world().faults.iter().map(|(_, f)| f.clone()).collect()
    }

    /// The faults in force with their ids (for [`Sim::remove_fault`]).
    pub fn fault_rules(&self) -> Vec<(u64, Fault)> {
        self.world().faults.clone()
    }

    /// Removes the fault with this id; `None` when there is none (any more).
    pub fn remove_fault(&self, id: u64) -> Option<Fault> {
        let removed = {
            let mut w = self.world();
            let i = w.faults.iter().position(|(fid, _)| *fid == id)?;
            w.faults.remove(i).1
        };
        self.record(
            Event::new("fault_removed")
                .path(&removed.path)
                .detail(json!({"id": id, "fault": removed})),
        );
        Some(removed)
    }

    /// Removes every fault.
    pub fn clear_faults(&self) {
        self.world().faults.clear();
        self.record(Event::new("faults_cleared"));
    }

    /// Counts a call and decides whether a fault applies to it (consuming one of its count; a
    /// rule whose count is used up goes, with a `fault_removed` event).
    pub(crate) fn on_call(&self, path: &str) -> Option<Fault> {
        let (hit, spent) = {
            let mut w = self.world();
            *w.calls.entry(path.to_owned()).or_default() += 1;
            let mut hit = None;
            for (id, f) in &mut w.faults {
                if f.path != path || f.count == Some(0) {
                    continue;
                }
                if rand::random::<f64>() >= f.rate.unwrap_or(1.0) {
                    continue;
                }
                if let Some(c) = f.count.as_mut() {
                    *c -= 1;
                }
                hit = Some((*id, f.clone()));
                break;
            }
            let spent = match &hit {
                Some((id, f)) if f.count == Some(0) => {
                    w.faults.retain(|(fid, _)| fid != id);
                    Some(*id)
                }
                _ => None,
            };
            (hit.map(|(_, f)| f), spent)
        };
        if let Some(id) = spent {
            self.record(
                Event::new("fault_removed")
                    .path(path)
                    .detail(json!({"id": id, "used_up": true})),
            );
        }
        hit
    }

    /// A recorded rid.
    pub fn rid(&self, rid: &str) -> Option<RidRecord> {
        self.world().rids.get(rid).cloned()
    }

    /// `{calls: {path: n}, tokens_issued: {appid: {classic: n, stable: n}}}`.
    pub fn stats(&self) -> Value {
        let w = self.world();
        json!({"calls": w.calls, "tokens_issued": w.tokens.issued_json()})
    }

    /// How many times `path` was called.
    pub fn calls(&self, path: &str) -> u64 {
        self.world().calls.get(path).copied().unwrap_or(0)
    }

    /// Checks an app's secret (for `clear_quota/v2`).
    ///
    /// # Errors
    /// 41002, 41004, 40013, 40125.
    pub fn check_secret(&self, appid: Option<&str>, secret: Option<&str>) -> WxResult<()> {
        let mut w = self.world();
        Self::check_app(&mut w, appid, secret).map(|_| ())
    }
}

// ------------------------------------------------------------------------ core control routes

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AppReq {
    appid: Option<String>,
    secret: Option<String>,
    #[serde(default)]
    unionid: bool,
    /// Published pages (default `["pages/index/index"]`), for `check_path`.
    pages: Option<Vec<String>>,
}

async fn apps(State(sim): State<Sim>, raw: axum::body::Bytes) -> Response {
    let req: AppReq = try_resp!(body(&raw));
    if let Some(a) = &req.appid {
        if a.is_empty() || !a.chars().all(|c| c.is_ascii_alphanumeric()) {
            return control_error(
                StatusCode::BAD_REQUEST,
                "appid must be non-empty ASCII letters and digits",
            );
        }
    }
    let (appid, secret) = sim.add_app(req.appid, req.secret, req.unionid);
    if let Some(pages) = req.pages {
        if let Err(e) = sim.set_pages(&appid, pages) {
            return from_wx(e);
        }
    }
    Json(json!({"appid": appid, "secret": secret})).into_response()
}

async fn apps_list(State(sim): State<Sim>) -> Response {
    Json(json!({"apps": sim.apps()})).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClockReq {
    #[serde(default)]
    advance_secs: i64,
    /// Switch to real time (true) or back to virtual time (false).
    real_time: Option<bool>,
    /// Back to the wall clock's time, in real time (the only way back).
    #[serde(default)]
    resync: bool,
}

async fn clock(State(sim): State<Sim>, raw: axum::body::Bytes) -> Response {
    let req: ClockReq = try_resp!(body(&raw));
    if req.advance_secs < 0 {
        return control_error(
            StatusCode::BAD_REQUEST,
            "advance_secs must be >= 0: the clock never goes back",
        );
    }
    if req.resync {
        if req.advance_secs != 0 || req.real_time == Some(false) {
            return control_error(
                StatusCode::BAD_REQUEST,
                "resync goes back to the wall clock in real time: it takes no advance_secs or real_time: false",
            );
        }
        let now = sim.resync_to_wall_clock();
        return clock_view(&sim, now);
    }
    if let Some(real) = req.real_time {
        sim.set_clock_mode(if real {
            ClockMode::Real
        } else {
            ClockMode::Virtual
        });
    }
    let now = sim.advance(req.advance_secs);
    clock_view(&sim, now)
}

/// `{now, real_time, offset_secs}`: the time, the mode, and the distance from the wall clock.
fn clock_view(sim: &Sim, now: i64) -> Response {
    Json(json!({
        "now": now,
        "real_time": sim.clock_mode() == ClockMode::Real,
        "offset_secs": sim.clock_offset_secs(),
    }))
    .into_response()
}

async fn clock_get(State(sim): State<Sim>) -> Response {
    clock_view(&sim, sim.now())
}

async fn faults_add(State(sim): State<Sim>, raw: axum::body::Bytes) -> Response {
    let fault: Fault = try_resp!(body(&raw));
    if !fault.path.starts_with('/') || fault.path.starts_with("/_sim") {
        return control_error(
            StatusCode::BAD_REQUEST,
            "path must be a WeChat API path such as /cgi-bin/token",
        );
    }
    if fault.rate.is_some_and(|r| !(0.0..=1.0).contains(&r)) {
        return control_error(StatusCode::BAD_REQUEST, "rate must be within 0..=1");
    }
    if fault.http_status.is_some_and(|s| !(100..=599).contains(&s)) {
        return control_error(
            StatusCode::BAD_REQUEST,
            "http_status must be a valid HTTP status",
        );
    }
    let id = sim.add_fault(fault);
    Json(json!({"id": id})).into_response()
}

async fn faults_list(State(sim): State<Sim>) -> Response {
    let faults: Vec<Value> = sim
        .fault_rules()
        .into_iter()
        .map(|(id, f)| {
            let mut v = json!(f);
            v["id"] = json!(id);
            v
        })
        .collect();
    Json(json!({"faults": faults})).into_response()
}

async fn faults_clear(State(sim): State<Sim>) -> Response {
    sim.clear_faults();
    Json(json!({})).into_response()
}

async fn faults_remove(State(sim): State<Sim>, Path(id): Path<String>) -> Response {
    let removed = id.parse::<u64>().ok().and_then(|i| sim.remove_fault(i));
    match removed {
        Some(f) => Json(json!({"removed": f})).into_response(),
        None => control_error(
            StatusCode::NOT_FOUND,
            "no fault with this id (GET /_sim/faults)",
        ),
    }
}

async fn stats(State(sim): State<Sim>) -> Response {
    Json(sim.stats()).into_response()
}

async fn reset(State(sim): State<Sim>) -> Response {
    sim.reset();
    Json(json!({})).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUserReq {
    appid: String,
    openid: Option<String>,
    unionid: Option<String>,
    #[serde(default)]
    blocked: bool,
}

async fn users(State(sim): State<Sim>, Query(q): Query<HashMap<String, String>>) -> Response {
    let (Some(appid), Some(openid)) = (q.get("appid"), q.get("openid")) else {
        return control_error(
            StatusCode::BAD_REQUEST,
            "appid and openid query parameters are required",
        );
    };
    match sim.user(appid, openid) {
        Some(u) => Json(json!({"openid": u.openid, "unionid": u.unionid, "session_key": u.session_key, "phone": u.phone})).into_response(),
        None => control_error(StatusCode::NOT_FOUND, "no such user"),
    }
}

async fn users_create(State(sim): State<Sim>, raw: axum::body::Bytes) -> Response {
    let req: NewUserReq = try_resp!(body(&raw));
    for (what, id) in [("openid", &req.openid), ("unionid", &req.unionid)] {
        if let Err(resp) = crate::http::check_user_id(what, id.as_deref()) {
            return *resp;
        }
    }
    match sim.create_user(&req.appid, req.openid, req.unionid, req.blocked) {
        Ok(u) => Json(json!({"openid": u.openid, "unionid": u.unionid, "blocked": u.blocked}))
            .into_response(),
        Err(e) => from_wx(e),
    }
}

/// The core's `/_sim` routes: apps, users, clock, faults, statistics, reset.
pub(crate) fn control() -> Router<Sim> {
    Router::new()
        .route("/_sim/apps", post(apps).get(apps_list))
        .route("/_sim/clock", post(clock).get(clock_get))
        .route(
            "/_sim/faults",
            post(faults_add).get(faults_list).delete(faults_clear),
        )
        .route("/_sim/faults/{id}", delete(faults_remove))
        .route("/_sim/stats", get(stats))
        .route("/_sim/reset", post(reset))
        .route("/_sim/users", get(users).post(users_create))
}
