//! The simulator's core: apps and their users, the clock, faults, rids, call statistics and the
//! event journal — what every domain shares. Each WeChat domain keeps its own slice of state
//! (in [`App`] and [`World`]), its rules, its WeChat routes and its `/_sim` routes in a module
//! of its own.
//!
//! All state sits behind one mutex held only for short, non-async sections, so every request
//! sees and changes a consistent world. Time is virtual: it starts at the wall-clock time of
//! creation and moves only through [`Sim::advance`] (unless the simulator runs in real time).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rand::distributions::Alphanumeric;
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::http::{body, control_error, from_wx, try_resp};
use crate::journal::{Event, Journal};

/// Lifetime of a login or phone code (seconds).
pub const CODE_TTL: i64 = 300;

/// A WeChat error as the simulator answers it.
#[derive(Debug, Clone)]
pub struct WxError {
    /// errcode
    pub code: i64,
    /// errmsg without the rid
    pub msg: String,
}

impl WxError {
    /// An error with a code and message.
    pub fn new(code: i64, msg: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
        }
    }
}

impl std::fmt::Display for WxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (errcode {})", self.msg, self.code)
    }
}

impl std::error::Error for WxError {}

/// Result type of simulator operations.
pub type WxResult<T> = Result<T, WxError>;

/// A one-time code (login, phone, plugin).
#[derive(Debug, Clone)]
pub(crate) struct Code {
    pub(crate) appid: String,
    pub(crate) openid: String,
    pub(crate) issued_at: i64,
    pub(crate) used: bool,
    pub(crate) phone: Option<String>,
}

/// A simulated user of one app.
#[derive(Debug, Clone, Serialize)]
pub struct User {
    /// openid in this app
    pub openid: String,
    /// unionid, when the app is bound to an open platform account
    pub unionid: Option<String>,
    /// the current session_key (base64 of 16 bytes)
    pub session_key: Option<String>,
    /// the phone number handed out by getPhoneNumber
    pub phone: String,
    /// A high-risk user: their login codes are refused with 40226.
    pub blocked: bool,
    #[serde(skip)]
    pub(crate) jscode_minute: (i64, u32),
    #[serde(skip)]
    pub(crate) encrypt_keys: Vec<Value>,
    /// Last visit (a login or a message), Unix ms: content checks need one within 2 hours.
    #[serde(skip)]
    pub(crate) last_seen: i64,
}

/// One registered app: the core fields, and each domain's slice.
#[derive(Debug)]
pub(crate) struct App {
    pub(crate) secret: String,
    pub(crate) unionid: bool,
    pub(crate) users: HashMap<String, User>,
    /// Rate and quota counters by name: (period index, count).
    pub(crate) counters: HashMap<&'static str, (i64, u32)>,
    /// Messages users received (subscribe messages, customer-service replies).
    pub(crate) inbox: Vec<Value>,
    pub(crate) tokens: crate::tokens::AppTokens,
    pub(crate) login: crate::login::AppLogin,
    pub(crate) codes: crate::wxacode::AppCodes,
    pub(crate) subscribe: crate::subscribe::AppSubscribe,
    pub(crate) cs: crate::customer_service::AppCs,
    pub(crate) openapi: crate::openapi::AppOpenapi,
    pub(crate) push: Option<crate::push::PushTarget>,
}

impl App {
    fn new(secret: String, unionid: bool) -> Self {
        Self {
            secret,
            unionid,
            users: HashMap::new(),
            counters: HashMap::new(),
            inbox: Vec::new(),
            tokens: Default::default(),
            login: Default::default(),
            codes: Default::default(),
            subscribe: Default::default(),
            cs: Default::default(),
            openapi: Default::default(),
            push: None,
        }
    }

    /// Counts one call against `limit` per `period` (a day or minute index); false if over.
    pub(crate) fn take(&mut self, name: &'static str, period: i64, limit: u32) -> bool {
        let entry = self.counters.entry(name).or_insert((period, 0));
        if entry.0 != period {
            *entry = (period, 0);
        }
        if entry.1 >= limit {
            return false;
        }
        entry.1 += 1;
        true
    }
}

/// An injected fault: see the control API's `POST /_sim/faults`.
#[derive(Debug, Clone, serde::Deserialize, Serialize)]
pub struct Fault {
    /// Request path it applies to, e.g. `/cgi-bin/token`.
    pub path: String,
    /// Answer this errcode (HTTP 200 JSON).
    pub errcode: Option<i64>,
    /// Answer this HTTP status with a non-JSON body.
    pub http_status: Option<u16>,
    /// Delay before answering. With nothing else set, the request is processed at once and
    /// only the answer is late — like a slow WeChat, which has done the work (issued a token,
    /// sent a message) even when the caller gave up waiting.
    pub latency_ms: Option<u64>,
    /// Answer this body (as `application/json`, with `http_status` or 200) instead of the real
    /// answer: for garbage, truncated or implausible responses.
    #[serde(default)]
    pub body: Option<String>,
    /// Probability of applying per matching request (default 1).
    pub rate: Option<f64>,
    /// Apply this many times, then disappear (default: until cleared).
    pub count: Option<u32>,
}

impl Fault {
    fn on(path: &str) -> Self {
        Fault {
            path: path.to_owned(),
            errcode: None,
            http_status: None,
            latency_ms: None,
            body: None,
            rate: None,
            count: None,
        }
    }

    /// `path` answers WeChat error `code` (HTTP 200 JSON with a rid).
    pub fn errcode(path: &str, code: i64) -> Self {
        Fault {
            errcode: Some(code),
            ..Self::on(path)
        }
    }

    /// `path` answers HTTP `status` with a non-JSON body.
    pub fn http_status(path: &str, status: u16) -> Self {
        Fault {
            http_status: Some(status),
            ..Self::on(path)
        }
    }

    /// `path` answers normally, `ms` milliseconds late.
    pub fn latency(path: &str, ms: u64) -> Self {
        Fault {
            latency_ms: Some(ms),
            ..Self::on(path)
        }
    }

    /// `path` answers `body` verbatim (HTTP 200, `application/json`): garbage, a truncated
    /// document, an implausible value.
    pub fn body(path: &str, body: impl Into<String>) -> Self {
        Fault {
            body: Some(body.into()),
            ..Self::on(path)
        }
    }

    /// Only the next `n` matching requests are affected.
    #[must_use]
    pub fn times(mut self, n: u32) -> Self {
        self.count = Some(n);
        self
    }
}

/// A recorded failing request, for `rid/get`.
#[derive(Debug, Clone, Serialize)]
pub struct RidRecord {
    /// Unix seconds.
    pub invoke_time: i64,
    /// Milliseconds spent (the simulator answers at once).
    pub cost_in_ms: i64,
    /// The path (never the query: it may hold a token or secret).
    pub request_url: String,
    /// The request body (not kept by the simulator).
    pub request_body: String,
    /// The errcode answered.
    #[serde(skip)]
    pub errcode: i64,
    /// The response body answered.
    pub response_body: String,
    /// The caller's address.
    pub client_ip: String,
}

/// Everything the simulator knows. Each domain owns a field (its slice).
#[derive(Debug, Default)]
pub(crate) struct World {
    pub(crate) apps: HashMap<String, App>,
    /// Fault rules in force, with their ids.
    pub(crate) faults: Vec<(u64, Fault)>,
    pub(crate) next_fault_id: u64,
    pub(crate) calls: HashMap<String, u64>,
    pub(crate) rids: HashMap<String, RidRecord>,
    pub(crate) rid_order: VecDeque<String>,
    pub(crate) offset_ms: i64,
    /// Set while the clock follows wall time: since when.
    pub(crate) real_anchor: Option<Instant>,
    pub(crate) tokens: crate::tokens::TokenTable,
    pub(crate) login: crate::login::LoginCodes,
    pub(crate) phone: crate::phone::PhoneCodes,
    pub(crate) links: crate::links::LinkTable,
    pub(crate) media: crate::customer_service::MediaStore,
    pub(crate) console: crate::console::ConsoleState,
    pub(crate) platforms: crate::platform::PlatformTable,
}

impl World {
    pub(crate) fn app_mut(&mut self, appid: &str) -> WxResult<&mut App> {
        self.apps
            .get_mut(appid)
            .ok_or_else(|| WxError::new(40013, "invalid appid"))
    }

    /// The app, provided `openid` is one of its users.
    pub(crate) fn app_with_user(&mut self, appid: &str, openid: &str) -> WxResult<&mut App> {
        let app = self.app_mut(appid)?;
        if app.users.contains_key(openid) {
            Ok(app)
        } else {
            Err(WxError::new(40003, "invalid openid"))
        }
    }

    /// Like [`World::app_with_user`], for the content-security and risk calls: an openid of
    /// another app is 43104 (documented and confirmed by WeChat staff), an unknown one 40003.
    pub(crate) fn app_with_own_user(&mut self, appid: &str, openid: &str) -> WxResult<&mut App> {
        self.app_mut(appid)?;
        let elsewhere = self
            .apps
            .iter()
            .any(|(id, a)| id != appid && a.users.contains_key(openid));
        let app = self.app_mut(appid)?;
        if app.users.contains_key(openid) {
            Ok(app)
        } else if elsewhere {
            Err(WxError::new(43104, "The openid does not match the appid"))
        } else {
            Err(WxError::new(40003, "invalid openid"))
        }
    }
}

/// How the simulator's clock moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClockMode {
    /// Frozen at start; moves only when advanced (the default; deterministic tests).
    #[default]
    Virtual,
    /// Follows the wall clock, plus any advances (for long-running sandboxes).
    Real,
}

struct Shared {
    world: Mutex<World>,
    /// What happened, for the console and `GET /_sim/events`.
    journal: Journal,
    /// Delivers pushes to the configured URLs.
    http: reqwest::Client,
    /// Makes the phone's backend requests (no redirects).
    backend_http: reqwest::Client,
    /// Host names (besides loopback names and IP addresses) the control API answers to.
    allowed_hosts: Mutex<Vec<String>>,
    start_ms: i64,
}

/// The simulator state. Cheap to clone; clones share the world.
#[derive(Clone)]
pub struct Sim {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("now", &self.now())
            .finish_non_exhaustive()
    }
}

impl Default for Sim {
    fn default() -> Self {
        Self::new(ClockMode::Virtual)
    }
}

pub(crate) fn random_alnum(n: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(n)
        .map(char::from)
        .collect()
}

pub(crate) fn random_hex(bytes: usize) -> String {
    let v: Vec<u8> = (0..bytes).map(|_| rand::random()).collect();
    hex::encode(v)
}

pub(crate) fn random_key() -> String {
    B64.encode(rand::random::<[u8; 16]>())
}

/// Beijing time, where WeChat's daily quotas reset at midnight.
pub(crate) fn day_of(now_ms: i64) -> i64 {
    (now_ms / 1000 + 8 * 3600).div_euclid(86_400)
}

pub(crate) fn minute_of(now_ms: i64) -> i64 {
    (now_ms / 1000).div_euclid(60)
}

pub(crate) fn month_of(now_ms: i64) -> i64 {
    day_of(now_ms).div_euclid(30)
}

pub(crate) fn subtle_eq(a: &[u8], b: &[u8]) -> subtle::Choice {
    use subtle::ConstantTimeEq;
    a.ct_eq(b)
}

/// The wall clock, Unix ms.
fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The most one advance moves the clock (about 100 years).
const MAX_ADVANCE_SECS: i64 = 100 * 366 * 86_400;

impl Sim {
    /// A fresh, empty simulator.
    pub fn new(mode: ClockMode) -> Self {
        let start_ms = wall_ms();
        let world = World {
            real_anchor: (mode == ClockMode::Real).then(Instant::now),
            ..World::default()
        };
        Self {
            shared: Arc::new(Shared {
                world: Mutex::new(world),
                journal: Journal::new(crate::journal::CAPACITY),
                http: reqwest::Client::builder()
                    .timeout(std::time::Duration::from_secs(15))
                    .build()
                    .expect("a TLS backend is compiled in"),
                backend_http: reqwest::Client::builder()
                    .timeout(std::time::Duration::from_secs(15))
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .expect("a TLS backend is compiled in"),
                allowed_hosts: Mutex::new(Vec::new()),
                start_ms,
            }),
        }
    }

    pub(crate) fn world(&self) -> MutexGuard<'_, World> {
        self.shared.world.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.shared.http
    }

    /// The phone's client for the developer's backend: follows no redirect (a redirect would
    /// re-send codes and headers to a place the journal does not show).
    pub(crate) fn backend_http(&self) -> &reqwest::Client {
        &self.shared.backend_http
    }

    /// Lets the control API and the console answer requests addressed to `host` (a name such as
    /// `sim` in a docker network). Loopback names (`localhost`, `*.localhost`) and IP addresses
    /// are always allowed; any other name is refused, so a web page that rebinds its own name to
    /// 127.0.0.1 cannot reach the control API through the developer's browser.
    pub fn allow_host(&self, host: &str) {
        let host = host.trim().to_ascii_lowercase();
        let mut hosts = self
            .shared
            .allowed_hosts
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if !host.is_empty() && !hosts.contains(&host) {
            hosts.push(host);
        }
    }

    /// Whether a `Host` header value names this simulator acceptably (see [`Sim::allow_host`]).
    pub(crate) fn host_allowed(&self, host_header: &str) -> bool {
        let host = host_header.trim().to_ascii_lowercase();
        // Strip the port: `[::1]:9400`, `127.0.0.1:9400`, `name:9400`.
        let name = if let Some(rest) = host.strip_prefix('[') {
            rest.split_once(']').map_or(rest, |(h, _)| h).to_owned()
        } else {
            host.rsplit_once(':')
                .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
                .map_or(host.as_str(), |(h, _)| h)
                .to_owned()
        };
        if name.parse::<std::net::IpAddr>().is_ok()
            || name == "localhost"
            || name.ends_with(".localhost")
        {
            return true;
        }
        self.shared
            .allowed_hosts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&name)
    }

    /// The event journal.
    pub fn journal(&self) -> &Journal {
        &self.shared.journal
    }

    /// Records an event in the journal, stamped with the simulator's time. Locks the world
    /// for the time: never call it while holding the world (use [`Sim::record_at`]).
    pub(crate) fn record(&self, event: Event) {
        let at = self.now_ms();
        self.shared.journal.push(at, event);
    }

    /// Records an event stamped `at` (simulator ms); safe while holding the world.
    pub(crate) fn record_at(&self, at: i64, event: Event) {
        self.shared.journal.push(at, event);
    }

    pub(crate) fn now_in(&self, w: &World) -> i64 {
        let real = w.real_anchor.map_or(0, |a| a.elapsed().as_millis() as i64);
        self.shared.start_ms + real + w.offset_ms
    }

    /// Sets the clock back to the wall clock's time (and real-time mode): what the console's
    /// "now" does after the clock was advanced in a sandbox, where WeChat's clock running ahead
    /// of the server's makes pushes fall outside the receiver's replay window. The only way the
    /// clock goes back.
    pub fn resync_to_wall_clock(&self) -> i64 {
        let now = {
            let mut w = self.world();
            self.anchor_at_wall_clock(&mut w);
            self.now_in(&w) / 1000
        };
        self.record(Event::new("clock").detail(json!({"resynced": true, "now": now})));
        now
    }

    /// Real-time mode from now on, at the wall clock's time.
    fn anchor_at_wall_clock(&self, w: &mut World) {
        w.real_anchor = Some(Instant::now());
        w.offset_ms = wall_ms() - self.shared.start_ms;
    }

    /// Whether the clock follows wall time.
    pub fn clock_mode(&self) -> ClockMode {
        if self.world().real_anchor.is_some() {
            ClockMode::Real
        } else {
            ClockMode::Virtual
        }
    }

    /// Switches the clock between virtual (frozen unless advanced) and real time (following
    /// the wall clock from now on); the current time is kept either way.
    pub fn set_clock_mode(&self, mode: ClockMode) {
        let mut w = self.world();
        match (mode, w.real_anchor) {
            (ClockMode::Real, None) => w.real_anchor = Some(Instant::now()),
            (ClockMode::Virtual, Some(anchor)) => {
                w.offset_ms += anchor.elapsed().as_millis() as i64;
                w.real_anchor = None;
            }
            _ => {}
        }
    }

    /// The simulator's current time, Unix milliseconds.
    pub fn now_ms(&self) -> i64 {
        let w = self.world();
        self.now_in(&w)
    }

    /// The simulator's current time, Unix seconds.
    pub fn now(&self) -> i64 {
        self.now_ms() / 1000
    }

    /// How far the simulator's clock is from this machine's wall clock, in seconds (positive:
    /// ahead). A receiver on this machine refuses pushes as stale once this exceeds its replay
    /// window (weapp-server: ±300 s by default), which the console warns about.
    pub fn clock_offset_secs(&self) -> i64 {
        (self.now_ms() - wall_ms()) / 1000
    }

    /// Moves the clock forward; returns the new time in Unix seconds.
    pub fn advance(&self, secs: i64) -> i64 {
        let now = {
            let mut w = self.world();
            w.offset_ms = w
                .offset_ms
                .saturating_add(secs.clamp(0, MAX_ADVANCE_SECS) * 1000);
            self.now_in(&w) / 1000
        };
        if secs > 0 {
            self.record(Event::new("clock").detail(json!({"advanced_secs": secs, "now": now})));
        }
        now
    }

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
                    "push": a.push.as_ref().map(crate::push::PushTarget::public_view),
                })
            })
            .collect();
        out.sort_by(|a, b| a["appid"].as_str().cmp(&b["appid"].as_str()));
        out
    }

    /// Clears every dynamic thing — tokens, users, codes, quotas, faults, statistics, clock
    /// offset, the journal — but keeps the registered apps, their secrets and push settings.
    pub fn reset(&self) {
        let mut w = self.world();
        let apps: Vec<(String, String, bool, Option<crate::push::PushTarget>)> = w
            .apps
            .iter()
            .map(|(id, a)| (id.clone(), a.secret.clone(), a.unionid, a.push.clone()))
            .collect();
        let real_time = w.real_anchor.is_some();
        let console = std::mem::take(&mut w.console).settings_only();
        let platforms = w.platforms.registrations_only();
        *w = World {
            console,
            platforms,
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
        self.shared.journal.clear();
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

    /// Records a rid issued with an error, keeping the latest 10,000.
    pub(crate) fn record_rid(&self, path: &str, code: i64, errmsg: &str) -> String {
        let rid = format!("{}-{}-{}", random_hex(4), random_hex(4), random_hex(4));
        let mut w = self.world();
        let now = self.now_in(&w) / 1000;
        w.rids.insert(
            rid.clone(),
            RidRecord {
                invoke_time: now,
                cost_in_ms: 0,
                request_url: path.to_owned(),
                request_body: String::new(),
                errcode: code,
                response_body:
                    json!({"errcode": code, "errmsg": crate::http::errmsg(path, errmsg, &rid)})
                        .to_string(),
                client_ip: "127.0.0.1".into(),
            },
        );
        w.rid_order.push_back(rid.clone());
        if w.rid_order.len() > 10_000 {
            if let Some(old) = w.rid_order.pop_front() {
                w.rids.remove(&old);
            }
        }
        rid
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

    /// Checks an app's credentials: 41002, 41004, 40013, and 40125 for a wrong secret (every
    /// endpoint today, `/cgi-bin/token` included — captures 2023–2026).
    pub(crate) fn check_app<'w>(
        w: &'w mut World,
        appid: Option<&str>,
        secret: Option<&str>,
    ) -> WxResult<&'w mut App> {
        let appid = appid
            .filter(|s| !s.is_empty())
            .ok_or_else(|| WxError::new(41002, "appid missing"))?;
        let secret = secret
            .filter(|s| !s.is_empty())
            .ok_or_else(|| WxError::new(41004, "appsecret missing"))?;
        let app = w.app_mut(appid)?;
        if !bool::from(subtle_eq(app.secret.as_bytes(), secret.as_bytes())) {
            return Err(WxError::new(40125, "invalid appsecret"));
        }
        Ok(app)
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

impl Sim {
    /// Issues a one-time code for a user into `table` (login, phone or plugin codes).
    pub(crate) fn issue_code(
        &self,
        kind: &str,
        table: fn(&mut World) -> &mut HashMap<String, Code>,
        appid: &str,
        openid: &str,
        phone: Option<String>,
    ) -> WxResult<String> {
        let mut w = self.world();
        let now = self.now_in(&w);
        w.app_with_user(appid, openid)?;
        let code = random_alnum(32);
        table(&mut w).insert(
            code.clone(),
            Code {
                appid: appid.into(),
                openid: openid.into(),
                issued_at: now,
                used: false,
                phone,
            },
        );
        self.record_at(
            now,
            Event::new("code_issued")
                .appid(appid)
                .openid(openid)
                .detail(json!({"code_kind": kind, "code": code})),
        );
        Ok(code)
    }

    /// Redeems a one-time code of `table` for `appid` (5 minutes, once).
    ///
    /// # Errors
    /// 40029 unknown, expired or used; 40013 a code of another app.
    pub(crate) fn redeem(
        &self,
        kind: &str,
        path: &str,
        table: fn(&mut World) -> &mut HashMap<String, Code>,
        appid: &str,
        code: Option<&str>,
    ) -> WxResult<Code> {
        let mut w = self.world();
        let now = self.now_in(&w);
        let code = code
            .filter(|c| !c.is_empty())
            .ok_or_else(|| WxError::new(40029, "invalid code"))?;
        let entry = table(&mut w)
            .get_mut(code)
            .ok_or_else(|| WxError::new(40029, "invalid code"))?;
        if entry.appid != appid {
            return Err(WxError::new(40013, "invalid appid"));
        }
        if entry.used || now - entry.issued_at >= CODE_TTL * 1000 {
            return Err(WxError::new(40029, "invalid code"));
        }
        entry.used = true;
        let entry = entry.clone();
        self.record_at(
            now,
            Event::new("code_redeemed")
                .appid(appid)
                .openid(&entry.openid)
                .path(path)
                .detail(json!({"code_kind": kind, "code": code})),
        );
        Ok(entry)
    }
}

/// A new user of an app (a random phone number, no session key yet).
pub(crate) fn new_user(openid: &str, now: i64) -> User {
    User {
        openid: openid.to_owned(),
        unionid: None,
        session_key: None,
        phone: format!("13{:09}", rand::thread_rng().gen_range(0..1_000_000_000u64)),
        blocked: false,
        jscode_minute: (0, 0),
        encrypt_keys: Vec::new(),
        last_seen: now,
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
