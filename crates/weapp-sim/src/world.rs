//! Everything the simulator knows, and the handle to it: the [`World`] (apps and their users,
//! faults, rids, call counts, the clock's offset, and one slice of state per domain), the
//! [`Sim`] that guards it, and what every domain does with it — read the clock, record events
//! and rids, check an app's credentials, issue and redeem one-time codes.
//!
//! All state sits behind one mutex held only for short, non-async sections, so every request
//! sees and changes a consistent world. Time is virtual: it starts at the wall-clock time of
//! creation and moves only through [`Sim::advance`] (unless the simulator runs in real time).
//!
//! Below every domain: it imports the leaves (`error`, `clock`, `random`, `crypto`, `journal`)
//! and the domains' state shapes (`state`), never a domain.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use rand::Rng;
use serde::Serialize;
use serde_json::{json, Value};

use crate::clock::{day_of, wall_ms, ClockMode};
use crate::crypto::subtle_eq;
use crate::error::{WxError, WxResult};
use crate::journal::{Event, Journal};
use crate::random::{random_alnum, random_hex};
use crate::state::{self, Code};

/// Lifetime of a login or phone code (seconds).
pub const CODE_TTL: i64 = 300;

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
    pub(crate) tokens: state::tokens::AppTokens,
    pub(crate) login: state::login::AppLogin,
    pub(crate) codes: state::wxacode::AppCodes,
    pub(crate) subscribe: state::subscribe::AppSubscribe,
    pub(crate) cs: state::customer_service::AppCs,
    pub(crate) openapi: state::openapi::AppOpenapi,
    pub(crate) push: Option<state::push::PushTarget>,
}

impl App {
    /// A new app with no users and every domain's slice empty.
    pub(crate) fn new(secret: String, unionid: bool) -> Self {
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
    pub(crate) tokens: state::tokens::TokenTable,
    pub(crate) login: state::login::LoginCodes,
    pub(crate) phone: state::phone::PhoneCodes,
    pub(crate) links: state::links::LinkTable,
    pub(crate) media: state::customer_service::MediaStore,
    pub(crate) console: state::console::ConsoleState,
    pub(crate) platforms: state::platform::PlatformTable,
    pub(crate) pay: state::pay::PayState,
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
    pub(crate) fn anchor_at_wall_clock(&self, w: &mut World) {
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
                    json!({"errcode": code, "errmsg": crate::error::errmsg(path, errmsg, &rid)})
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

    /// Counts a token-authenticated call of `path` by `appid` (for `quota/get`).
    pub(crate) fn count_app_call(&self, appid: &str, path: &str) {
        let mut w = self.world();
        let day = day_of(self.now_in(&w));
        if let Some(app) = w.apps.get_mut(appid) {
            app.openapi.count_call(path, day);
        }
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
