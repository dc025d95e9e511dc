//! The simulator's world: apps, tokens, users, one-time codes, quotas, faults and the clock.
//!
//! All of it sits behind one mutex held only for short, non-async sections, so every request
//! sees and changes a consistent world. Time is virtual: it starts at the wall-clock time of
//! creation and moves only through [`Sim::advance`] (unless the simulator runs in real time).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rand::distributions::Alphanumeric;
use rand::Rng;
use serde::Serialize;
use serde_json::{json, Value};

/// Lifetime of an access token (seconds).
pub const TOKEN_TTL: i64 = 7200;
/// How long a superseded token keeps working (seconds).
pub const TOKEN_OVERLAP: i64 = 300;
/// Lifetime of a login or phone code (seconds).
pub const CODE_TTL: i64 = 300;
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
/// `jscode2session` redemptions per user per minute (the legacy documented figure).
pub const JSCODE_PER_USER_MINUTE: u32 = 100;
/// `clear_quota` calls per month.
pub const CLEAR_QUOTA_MONTHLY: u32 = 10;

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

pub(crate) fn invalid_credential() -> WxError {
    WxError::new(
        40001,
        "invalid credential, access_token is invalid or not latest",
    )
}

/// Which token endpoint issued a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    /// `/cgi-bin/token`
    Classic,
    /// `/cgi-bin/stable_token`
    Stable,
}

#[derive(Debug, Clone)]
struct TokenRec {
    appid: String,
    expires_at: i64,
    /// Set when superseded: the token works until then (and never past `expires_at`).
    valid_until: Option<i64>,
}

#[derive(Debug, Default, Clone)]
struct Slot {
    current: Option<(String, i64)>,
    previous: Option<String>,
}

#[derive(Debug, Clone)]
struct Code {
    appid: String,
    openid: String,
    issued_at: i64,
    used: bool,
    phone: Option<String>,
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
    #[serde(skip)]
    blocked: bool,
    #[serde(skip)]
    jscode_minute: (i64, u32),
    #[serde(skip)]
    encrypt_keys: Vec<Value>,
    /// Last visit (a login or a message), Unix ms: content checks need one within 2 hours.
    #[serde(skip)]
    last_seen: i64,
}

#[derive(Debug, Clone)]
struct Payment {
    openid: String,
    transaction_id: Option<String>,
    mch_id: Option<String>,
    out_trade_no: Option<String>,
    paid_at: i64,
}

/// A user action in the customer-service conversation (what opens the reply windows).
#[derive(Debug, Clone, Serialize)]
pub struct UserAction {
    /// `text` or `enter_session`.
    pub kind: String,
    /// Unix ms.
    pub at: i64,
    /// Replies sent since.
    pub replies: u32,
    /// Whether "typing" is shown.
    pub typing: bool,
}

#[derive(Debug)]
struct App {
    secret: String,
    push: Option<crate::push::PushTarget>,
    /// Last customer-service action per openid.
    user_actions: HashMap<String, UserAction>,
    /// Remaining subscribe-message grants per (openid, template_id).
    grants: HashMap<(String, String), u32>,
    /// Published pages (for `check_path`).
    pages: Vec<String>,
    /// getwxacode + createwxaqrcode codes made so far (lifetime).
    qrcodes_used: u64,
    /// Token-authenticated calls per path today: (day, count).
    daily_calls: HashMap<String, (i64, u64)>,
    /// Private subscribe templates.
    templates: Vec<crate::subscribe::PrivateTemplate>,
    /// Subscribe messages delivered.
    messages: Vec<Value>,
    unionid: bool,
    classic: Slot,
    stable: Slot,
    last_force: Option<i64>,
    /// `stable_token` calls with `force_refresh: true` (whatever they answered).
    force_requests: u64,
    counters: HashMap<&'static str, (i64, u32)>,
    users: HashMap<String, User>,
    payments: Vec<Payment>,
    clear_quota: (i64, u32),
}

impl App {
    fn new(secret: String, unionid: bool) -> Self {
        Self {
            secret,
            push: None,
            user_actions: HashMap::new(),
            grants: HashMap::new(),
            pages: crate::wxacode::DEFAULT_PAGES
                .iter()
                .map(|p| p.to_string())
                .collect(),
            qrcodes_used: 0,
            daily_calls: HashMap::new(),
            templates: Vec::new(),
            messages: Vec::new(),
            unionid,
            classic: Slot::default(),
            stable: Slot::default(),
            last_force: None,
            force_requests: 0,
            counters: HashMap::new(),
            users: HashMap::new(),
            payments: Vec::new(),
            clear_quota: (0, 0),
        }
    }

    /// Counts one call against `limit` per `period` (a day or minute index); false if over.
    fn take(&mut self, name: &'static str, period: i64, limit: u32) -> bool {
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

#[derive(Debug, Default)]
struct World {
    apps: HashMap<String, App>,
    tokens: HashMap<String, TokenRec>,
    codes: HashMap<String, Code>,
    phone_codes: HashMap<String, Code>,
    plugin_codes: HashMap<String, Code>,
    faults: Vec<Fault>,
    calls: HashMap<String, u64>,
    issued: HashMap<String, HashMap<TokenKind, u64>>,
    rids: HashMap<String, RidRecord>,
    rid_order: VecDeque<String>,
    offset_ms: i64,
    /// Schemes and URL links by ticket / code.
    links: HashMap<String, crate::links::LinkRecord>,
    /// Permanent short links made per app.
    permanent_short_links: HashMap<String, u64>,
    /// Temporary media by id: (appid, content type, bytes, created_at ms).
    media: HashMap<String, (String, String, Vec<u8>, i64)>,
}

impl World {
    fn app_mut(&mut self, appid: &str) -> WxResult<&mut App> {
        self.apps
            .get_mut(appid)
            .ok_or_else(|| WxError::new(40013, "invalid appid"))
    }

    /// The app, provided `openid` is one of its users.
    fn app_with_user(&mut self, appid: &str, openid: &str) -> WxResult<&mut App> {
        let app = self.app_mut(appid)?;
        if app.users.contains_key(openid) {
            Ok(app)
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
    /// Delivers pushes to the configured URLs.
    http: reqwest::Client,
    start_ms: i64,
    started: Instant,
    mode: ClockMode,
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

fn random_hex(bytes: usize) -> String {
    let v: Vec<u8> = (0..bytes).map(|_| rand::random()).collect();
    hex::encode(v)
}

fn random_key() -> String {
    B64.encode(rand::random::<[u8; 16]>())
}

/// Beijing time, where WeChat's daily quotas reset at midnight.
fn day_of(now_ms: i64) -> i64 {
    (now_ms / 1000 + 8 * 3600).div_euclid(86_400)
}

fn minute_of(now_ms: i64) -> i64 {
    (now_ms / 1000).div_euclid(60)
}

fn month_of(now_ms: i64) -> i64 {
    day_of(now_ms).div_euclid(30)
}

/// Result type of simulator operations.
pub type WxResult<T> = Result<T, WxError>;

impl Sim {
    /// A fresh, empty simulator.
    pub fn new(mode: ClockMode) -> Self {
        let start_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        Self {
            shared: Arc::new(Shared {
                world: Mutex::new(World::default()),
                http: reqwest::Client::new(),
                start_ms,
                started: Instant::now(),
                mode,
            }),
        }
    }

    fn world(&self) -> MutexGuard<'_, World> {
        self.shared.world.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now_in(&self, w: &World) -> i64 {
        let real = match self.shared.mode {
            ClockMode::Virtual => 0,
            ClockMode::Real => self.shared.started.elapsed().as_millis() as i64,
        };
        self.shared.start_ms + real + w.offset_ms
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

    /// Moves the clock forward; returns the new time in Unix seconds.
    pub fn advance(&self, secs: i64) -> i64 {
        let mut w = self.world();
        w.offset_ms += secs.max(0) * 1000;
        self.now_in(&w) / 1000
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

    /// Clears every dynamic thing — tokens, users, codes, quotas, faults, statistics, clock
    /// offset — but keeps the registered apps, their secrets and push settings.
    pub fn reset(&self) {
        let mut w = self.world();
        let apps: Vec<(String, String, bool, Option<crate::push::PushTarget>)> = w
            .apps
            .iter()
            .map(|(id, a)| (id.clone(), a.secret.clone(), a.unionid, a.push.clone()))
            .collect();
        *w = World::default();
        for (id, secret, unionid, push) in apps {
            let mut app = App::new(secret, unionid);
            app.push = push;
            w.apps.insert(id, app);
        }
    }

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
        let user = app.users.entry(openid.clone()).or_insert_with(|| User {
            openid: openid.clone(),
            unionid: None,
            session_key: None,
            phone: format!("13{:09}", rand::thread_rng().gen_range(0..1_000_000_000u64)),
            blocked: false,
            jscode_minute: (0, 0),
            encrypt_keys: Vec::new(),
            last_seen: now,
        });
        user.last_seen = now;
        if let Some(u) = unionid {
            user.unionid = Some(u);
        } else if app_unionid && user.unionid.is_none() {
            user.unionid = Some(format!("o{}", random_alnum(27)));
        }
        user.blocked = blocked;
        user.session_key = Some(random_key());
        let code = random_alnum(32);
        w.codes.insert(
            code.clone(),
            Code {
                appid: appid.into(),
                openid: openid.clone(),
                issued_at: now,
                used: false,
                phone: None,
            },
        );
        Ok((code, openid))
    }

    fn issue_code(
        &self,
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
        Ok(code)
    }

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
        self.issue_code(|w| &mut w.phone_codes, appid, openid, phone)
    }

    /// A one-time plugin code for `getpluginopenpid`.
    ///
    /// # Errors
    /// 40013 unknown app, 40003 unknown user.
    pub fn plugin_code(&self, appid: &str, openid: &str) -> WxResult<String> {
        self.issue_code(|w| &mut w.plugin_codes, appid, openid, None)
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
        app.payments.push(Payment {
            openid: openid.into(),
            transaction_id,
            mch_id,
            out_trade_no,
            paid_at: now,
        });
        Ok(())
    }

    /// A user's state.
    pub fn user(&self, appid: &str, openid: &str) -> Option<User> {
        self.world().apps.get(appid)?.users.get(openid).cloned()
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

    /// Adds a fault.
    pub fn add_fault(&self, fault: Fault) {
        self.world().faults.push(fault);
    }

    /// Removes every fault.
    pub fn clear_faults(&self) {
        self.world().faults.clear();
    }

    /// Counts a call and decides whether a fault applies to it (consuming one of its count).
    pub(crate) fn on_call(&self, path: &str) -> Option<Fault> {
        let mut w = self.world();
        *w.calls.entry(path.to_owned()).or_default() += 1;
        let mut hit = None;
        for (i, f) in w.faults.iter_mut().enumerate() {
            if f.path != path || f.count == Some(0) {
                continue;
            }
            if rand::random::<f64>() >= f.rate.unwrap_or(1.0) {
                continue;
            }
            if let Some(c) = f.count.as_mut() {
                *c -= 1;
            }
            hit = Some((i, f.clone()));
            break;
        }
        w.faults.retain(|f| f.count != Some(0));
        hit.map(|(_, f)| f)
    }

    /// Records a rid issued with an error, keeping the latest 10,000.
    pub(crate) fn record_rid(&self, path: &str, code: i64, msg: &str) -> String {
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
                response_body: json!({"errcode": code, "errmsg": format!("{msg}, rid: {rid}")})
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
        let issued: serde_json::Map<String, Value> = w
            .issued
            .iter()
            .map(|(appid, m)| {
                (
                    appid.clone(),
                    json!({
                        "classic": m.get(&TokenKind::Classic).copied().unwrap_or(0),
                        "stable": m.get(&TokenKind::Stable).copied().unwrap_or(0),
                    }),
                )
            })
            .collect();
        json!({"calls": w.calls, "tokens_issued": issued})
    }

    /// How many tokens of `kind` were issued to `appid`.
    pub fn tokens_issued(&self, appid: &str, kind: TokenKind) -> u64 {
        self.world()
            .issued
            .get(appid)
            .and_then(|m| m.get(&kind))
            .copied()
            .unwrap_or(0)
    }

    /// How many times `path` was called.
    pub fn calls(&self, path: &str) -> u64 {
        self.world().calls.get(path).copied().unwrap_or(0)
    }

    fn check_app<'w>(
        w: &'w mut World,
        appid: Option<&str>,
        secret: Option<&str>,
        bad_secret: i64,
    ) -> WxResult<&'w mut App> {
        let appid = appid
            .filter(|s| !s.is_empty())
            .ok_or_else(|| WxError::new(41002, "appid missing"))?;
        let secret = secret
            .filter(|s| !s.is_empty())
            .ok_or_else(|| WxError::new(41004, "appsecret missing"))?;
        let app = w.app_mut(appid)?;
        if !bool::from(subtle_eq(app.secret.as_bytes(), secret.as_bytes())) {
            return Err(if bad_secret == 40001 {
                invalid_credential()
            } else {
                WxError::new(40125, "invalid appsecret")
            });
        }
        Ok(app)
    }

    fn mint(w: &mut World, appid: &str, kind: TokenKind, now: i64) -> (String, i64) {
        let token = format!(
            "{}_{}",
            if kind == TokenKind::Classic {
                "SIMC"
            } else {
                "SIMS"
            },
            random_alnum(128)
        );
        let expires_at = now + TOKEN_TTL * 1000;
        w.tokens.insert(
            token.clone(),
            TokenRec {
                appid: appid.into(),
                expires_at,
                valid_until: None,
            },
        );
        *w.issued
            .entry(appid.into())
            .or_default()
            .entry(kind)
            .or_default() += 1;
        (token, expires_at)
    }

    fn supersede(w: &mut World, token: &str, until: i64) {
        if let Some(rec) = w.tokens.get_mut(token) {
            rec.valid_until = Some(rec.valid_until.map_or(until, |u| u.min(until)));
        }
    }

    /// `GET /cgi-bin/token`: a new token on every call; the previous one keeps working for 300 s,
    /// anything older dies.
    ///
    /// # Errors
    /// 40002, 41002, 41004, 40013, 40001 (wrong secret), 45009 (2000/day).
    pub fn classic_token(
        &self,
        grant_type: Option<&str>,
        appid: Option<&str>,
        secret: Option<&str>,
    ) -> WxResult<(String, i64)> {
        if grant_type != Some("client_credential") {
            return Err(WxError::new(40002, "invalid grant_type"));
        }
        let mut w = self.world();
        let now = self.now_in(&w);
        let app = Self::check_app(&mut w, appid, secret, 40001)?;
        if !app.take("classic_token", day_of(now), CLASSIC_DAILY_QUOTA) {
            return Err(WxError::new(45009, "reach max api daily quota limit"));
        }
        let old_prev = app.classic.previous.take();
        let old_cur = app.classic.current.take();
        let appid = appid.unwrap_or_default();
        if let Some(t) = old_prev {
            Self::supersede(&mut w, &t, now);
        }
        if let Some((t, _)) = &old_cur {
            Self::supersede(&mut w, t, now + TOKEN_OVERLAP * 1000);
        }
        let (token, expires_at) = Self::mint(&mut w, appid, TokenKind::Classic, now);
        let app = w.apps.get_mut(appid).expect("checked above");
        app.classic.previous = old_cur.map(|(t, _)| t);
        app.classic.current = Some((token.clone(), expires_at));
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
        let app = Self::check_app(&mut w, appid, secret, 40125)?;
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
        let current = app.stable.current.clone();
        let remaining = |exp: i64| (exp - now) / 1000;
        if force {
            app.force_requests += 1;
            let recently = app
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
            app.last_force = Some(now);
            let old_prev = app.stable.previous.take();
            if let Some(t) = old_prev {
                Self::supersede(&mut w, &t, now);
            }
            if let Some((t, _)) = &current {
                Self::supersede(&mut w, t, now + TOKEN_OVERLAP * 1000);
            }
        } else {
            match &current {
                Some((t, exp)) if *exp - now > TOKEN_OVERLAP * 1000 => {
                    return Ok((t.clone(), remaining(*exp)));
                }
                _ => {
                    // Rotation: the old token keeps working until its own expiry.
                    let old_prev = app.stable.previous.take();
                    if let Some(t) = old_prev {
                        Self::supersede(&mut w, &t, now);
                    }
                }
            }
        }
        let (token, expires_at) = Self::mint(&mut w, &appid, TokenKind::Stable, now);
        let app = w.apps.get_mut(&appid).expect("checked above");
        app.stable.previous = current.map(|(t, _)| t);
        app.stable.current = Some((token.clone(), expires_at));
        Ok((token, TOKEN_TTL))
    }

    /// How many `stable_token` calls of `appid` asked to force a refresh (each one spends the
    /// 20-a-day budget when it is not within 30 s of the last).
    pub fn force_requests(&self, appid: &str) -> u64 {
        self.world().apps.get(appid).map_or(0, |a| a.force_requests)
    }

    /// Validates an access token from a query string; returns its appid.
    ///
    /// # Errors
    /// 41001 missing, 42001 expired, 40001 unknown or superseded.
    pub fn check_token(&self, token: Option<&str>) -> WxResult<String> {
        let token = token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| WxError::new(41001, "access_token missing"))?;
        let w = self.world();
        let now = self.now_in(&w);
        let rec = w.tokens.get(token).ok_or_else(invalid_credential)?;
        if now >= rec.expires_at {
            return Err(WxError::new(42001, "access_token expired"));
        }
        if rec.valid_until.is_some_and(|u| now >= u) {
            return Err(invalid_credential());
        }
        Ok(rec.appid.clone())
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
        Self::check_app(&mut w, appid, secret, 40125)?;
        if grant_type.is_some_and(|g| g != "authorization_code") {
            return Err(WxError::new(40002, "invalid grant_type"));
        }
        let appid = appid.unwrap_or_default();
        let js_code = js_code
            .filter(|c| !c.is_empty())
            .ok_or_else(|| WxError::new(40029, "invalid code"))?;
        let code = match w.codes.get_mut(js_code) {
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
        if let Some(c) = w.codes.get_mut(js_code) {
            c.used = true;
        }
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

    fn redeem(
        &self,
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
        Ok(entry.clone())
    }

    /// `getuserphonenumber`.
    ///
    /// # Errors
    /// 40029 unknown/expired/used code, 40013 code of another app.
    pub fn phone_number(&self, appid: &str, code: Option<&str>) -> WxResult<Value> {
        let c = self.redeem(|w| &mut w.phone_codes, appid, code)?;
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

    /// `getpluginopenpid`.
    ///
    /// # Errors
    /// 40029 unknown/expired/used code, 40013 code of another app.
    pub fn plugin_openpid(&self, appid: &str, code: Option<&str>) -> WxResult<Value> {
        let c = self.redeem(|w| &mut w.plugin_codes, appid, code)?;
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
        let found = app.payments.iter().any(|p| {
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

    /// `clear_quota` / `clear_quota/v2`: resets the app's daily counters, 10 times a month.
    ///
    /// # Errors
    /// 40013 unknown app, 48006 monthly limit reached.
    pub fn clear_quota(&self, appid: &str) -> WxResult<()> {
        let mut w = self.world();
        let now = self.now_in(&w);
        let app = w.app_mut(appid)?;
        let month = month_of(now);
        if app.clear_quota.0 != month {
            app.clear_quota = (month, 0);
        }
        if app.clear_quota.1 >= CLEAR_QUOTA_MONTHLY {
            return Err(WxError::new(
                48006,
                "forbid to clear quota because of reaching the limit",
            ));
        }
        app.clear_quota.1 += 1;
        app.counters.clear();
        app.daily_calls.clear();
        Ok(())
    }

    /// Checks an app's secret (for `clear_quota/v2`).
    ///
    /// # Errors
    /// 41002, 41004, 40013, 40125.
    pub fn check_secret(&self, appid: Option<&str>, secret: Option<&str>) -> WxResult<()> {
        let mut w = self.world();
        Self::check_app(&mut w, appid, secret, 40125).map(|_| ())
    }
}

fn subtle_eq(a: &[u8], b: &[u8]) -> subtle::Choice {
    use subtle::ConstantTimeEq;
    a.ct_eq(b)
}

impl Sim {
    /// Sets where and how WeChat pushes this app's messages.
    ///
    /// # Errors
    /// 40013 unknown app; 47001 with the reason for invalid settings.
    pub fn set_push_target(&self, appid: &str, target: crate::push::PushTarget) -> WxResult<()> {
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
    pub async fn push(
        &self,
        appid: &str,
        message: serde_json::Map<String, Value>,
    ) -> WxResult<crate::push::Delivery> {
        if !message.contains_key("MsgType") {
            return Err(WxError::new(47001, "message needs a MsgType"));
        }
        let (target, now) = {
            let w = self.world();
            let app = w
                .apps
                .get(appid)
                .ok_or_else(|| WxError::new(40013, "invalid appid"))?;
            let target = app.push.clone().ok_or_else(|| {
                WxError::new(
                    47001,
                    "no push URL configured for this app (POST /_sim/apps/{appid}/push-config)",
                )
            })?;
            (target, self.now_in(&w) / 1000)
        };
        let message = crate::push::complete(appid, message, now);
        let (url, body) = crate::push::build(&target, appid, &message, now);
        Ok(crate::push::deliver(
            &self.shared.http,
            &url,
            &body,
            target.format,
            Value::Object(message),
        )
        .await)
    }

    fn has_push(&self, appid: &str) -> bool {
        self.world()
            .apps
            .get(appid)
            .is_some_and(|a| a.push.is_some())
    }

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
                json!({"FromUserName": openid, "MsgType": "text", "Content": content.unwrap_or_default(), "MsgId": rand::thread_rng().gen_range(1..i64::MAX)})
            }
            "enter_session" => {
                json!({"FromUserName": openid, "MsgType": "event", "Event": "user_enter_tempsession", "SessionFrom": content.unwrap_or_default()})
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
            app.user_actions.insert(
                openid.to_owned(),
                UserAction {
                    kind: kind.to_owned(),
                    at: now,
                    replies: 0,
                    typing: false,
                },
            );
        }
        self.push_if_configured(appid, message).await
    }

    /// What the `wx.requestSubscribeMessage` popup does when the user accepts: grants `count`
    /// sends of `template_id`, and pushes `subscribe_msg_popup_event` if configured.
    ///
    /// # Errors
    /// 40013, 40003.
    pub async fn subscribe_grant(
        &self,
        appid: &str,
        openid: &str,
        template_id: &str,
        count: u32,
    ) -> WxResult<Option<crate::push::Delivery>> {
        {
            let mut w = self.world();
            let app = w.app_with_user(appid, openid)?;
            *app.grants
                .entry((openid.to_owned(), template_id.to_owned()))
                .or_default() += count;
        }
        let message = json!({"FromUserName": openid, "MsgType": "event", "Event": "subscribe_msg_popup_event",
            "List": [{"TemplateId": template_id, "SubscribeStatusString": "accept", "PopupScene": "0"}]});
        self.push_if_configured(appid, message).await
    }

    /// Remaining grants of `template_id` for a user.
    pub fn grants(&self, appid: &str, openid: &str, template_id: &str) -> u32 {
        self.world()
            .apps
            .get(appid)
            .and_then(|a| {
                a.grants
                    .get(&(openid.to_owned(), template_id.to_owned()))
                    .copied()
            })
            .unwrap_or(0)
    }

    /// The user's last customer-service action.
    pub fn last_user_action(&self, appid: &str, openid: &str) -> Option<UserAction> {
        self.world()
            .apps
            .get(appid)?
            .user_actions
            .get(openid)
            .cloned()
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
        let invalid = |what: &str| WxError::new(40097, format!("invalid args: {what}"));
        let url = body
            .get("media_url")
            .and_then(Value::as_str)
            .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
            .ok_or_else(|| invalid("media_url"))?;
        let media_type = body
            .get("media_type")
            .and_then(Value::as_i64)
            .filter(|t| matches!(t, 1 | 2))
            .ok_or_else(|| invalid("media_type"))?;
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
        self.world().app_with_user(appid, openid)?;
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

    pub(crate) async fn push_if_configured(
        &self,
        appid: &str,
        message: Value,
    ) -> WxResult<Option<crate::push::Delivery>> {
        if !self.has_push(appid) {
            return Ok(None);
        }
        let Value::Object(map) = message else {
            unreachable!("built as an object")
        };
        self.push(appid, map).await.map(Some)
    }
}

impl Sim {
    /// Replaces an app's published pages (what `check_path` accepts).
    ///
    /// # Errors
    /// 40013 unknown app.
    pub fn set_pages(&self, appid: &str, pages: Vec<String>) -> WxResult<()> {
        self.world().app_mut(appid)?.pages = pages;
        Ok(())
    }

    /// Counts one limited code (getwxacode / createwxaqrcode); returns the number used.
    ///
    /// # Errors
    /// 45029 past the lifetime quota.
    pub fn take_lifetime_code(&self, appid: &str) -> WxResult<u64> {
        let mut w = self.world();
        let app = w.app_mut(appid)?;
        if app.qrcodes_used >= crate::wxacode::LIFETIME_QUOTA {
            return Err(WxError::new(45029, "qrcode count out of limit"));
        }
        app.qrcodes_used += 1;
        Ok(app.qrcodes_used)
    }

    /// Sets the lifetime counter (to test the quota without making 100,000 codes).
    ///
    /// # Errors
    /// 40013 unknown app.
    pub fn set_codes_used(&self, appid: &str, used: u64) -> WxResult<()> {
        self.world().app_mut(appid)?.qrcodes_used = used;
        Ok(())
    }

    /// How many limited codes the app has made.
    pub fn codes_used(&self, appid: &str) -> u64 {
        self.world().apps.get(appid).map_or(0, |a| a.qrcodes_used)
    }

    /// Checks an unlimited code's page and the per-minute rate.
    ///
    /// # Errors
    /// 41030 invalid page, 45011 over 5000 a minute.
    pub fn check_unlimited(
        &self,
        appid: &str,
        page: Option<&str>,
        check_path: bool,
    ) -> WxResult<()> {
        let mut w = self.world();
        let now = self.now_in(&w);
        let app = w.app_mut(appid)?;
        if let Some(page) = page {
            if page.starts_with('/') || page.contains('?') {
                return Err(WxError::new(41030, "invalid page rid"));
            }
            if check_path && !app.pages.iter().any(|p| p == page) {
                return Err(WxError::new(41030, "invalid page rid"));
            }
        }
        if !app.take(
            "wxacode_unlimited",
            minute_of(now),
            crate::wxacode::UNLIMITED_PER_MINUTE,
        ) {
            return Err(WxError::new(
                45011,
                "api minute-quota reach limit, must slower, retry next minute",
            ));
        }
        Ok(())
    }
}

/// Daily limit and per-minute rate `quota/get` reports for a path (0: no per-minute limit).
fn quota_of(path: &str) -> (u64, u64) {
    match path {
        "/cgi-bin/token" => (u64::from(CLASSIC_DAILY_QUOTA), 0),
        "/cgi-bin/stable_token" => (
            u64::from(STABLE_DAILY_QUOTA),
            u64::from(STABLE_MINUTE_QUOTA),
        ),
        "/wxa/getwxacode" | "/cgi-bin/wxaapp/createwxaqrcode" => {
            (crate::wxacode::LIFETIME_QUOTA, 0)
        }
        "/wxa/getwxacodeunlimit" => (
            u64::from(crate::wxacode::UNLIMITED_PER_MINUTE) * 1440,
            u64::from(crate::wxacode::UNLIMITED_PER_MINUTE),
        ),
        "/wxa/generatescheme" | "/wxa/generate_urllink" => (500_000, 6000),
        "/wxa/msg_sec_check" => (2_000_000, 4000),
        _ => (100_000, 0),
    }
}

impl Sim {
    /// Counts a token-authenticated call of `path` by `appid` (for `quota/get`).
    pub(crate) fn count_app_call(&self, appid: &str, path: &str) {
        let mut w = self.world();
        let day = day_of(self.now_in(&w));
        if let Some(app) = w.apps.get_mut(appid) {
            let e = app.daily_calls.entry(path.to_owned()).or_insert((day, 0));
            if e.0 != day {
                *e = (day, 0);
            }
            e.1 += 1;
        }
    }

    /// `openapi/quota/get` for a known WeChat path.
    ///
    /// # Errors
    /// 76022 for `/sns/` paths, 76021 for unknown paths.
    pub fn quota(&self, appid: &str, cgi_path: &str, known: bool) -> WxResult<Value> {
        if cgi_path.starts_with("/sns/") {
            return Err(WxError::new(
                76022,
                "could not use this cgi_path, no permission",
            ));
        }
        if !known {
            return Err(WxError::new(76021, "cgi_path not found, please check"));
        }
        let mut w = self.world();
        let now = self.now_in(&w);
        let day = day_of(now);
        let app = w.app_mut(appid)?;
        let used = match cgi_path {
            "/cgi-bin/token" => app
                .counters
                .get("classic_token")
                .filter(|(d, _)| *d == day)
                .map_or(0, |(_, n)| u64::from(*n)),
            "/cgi-bin/stable_token" => app
                .counters
                .get("stable_day")
                .filter(|(d, _)| *d == day)
                .map_or(0, |(_, n)| u64::from(*n)),
            "/wxa/getwxacode" | "/cgi-bin/wxaapp/createwxaqrcode" => app.qrcodes_used,
            p => app
                .daily_calls
                .get(p)
                .filter(|(d, _)| *d == day)
                .map_or(0, |(_, n)| *n),
        };
        let (limit, per_minute) = quota_of(cgi_path);
        Ok(json!({
            "quota": {"daily_limit": limit, "used": used, "remain": limit.saturating_sub(used)},
            "rate_limit": {"call_count": per_minute, "refresh_second": if per_minute > 0 { 60 } else { 0 }},
        }))
    }
}

impl Sim {
    /// `generatescheme` / `generatenfcscheme` / `generate_urllink`: validates `src` (the
    /// `jump_wxa` object, or the body for URL links), stores the link, returns its ticket.
    ///
    /// # Errors
    /// 40165, 40212, 85402, 85401, 44993 (500,000 a day).
    pub fn make_link(&self, appid: &str, src: &Value, expiry_body: &Value) -> WxResult<String> {
        let mut w = self.world();
        let now_ms = self.now_in(&w);
        let now = now_ms / 1000;
        let expire = crate::links::expiry(expiry_body, now)?;
        let app = w.app_mut(appid)?;
        let record = crate::links::record(appid, src, &app.pages, now, expire)?;
        if !app.take("links_second", now_ms / 1000, crate::links::PER_SECOND) {
            return Err(WxError::new(44990, "reach max api per second limit"));
        }
        if !app.take("links_day", day_of(now_ms), crate::links::DAILY_LINKS) {
            return Err(WxError::new(44993, "reach max api daily quota limit"));
        }
        let ticket = crate::links::ticket();
        w.links.insert(ticket.clone(), record);
        Ok(ticket)
    }

    /// Resolves a ticket made by this app.
    ///
    /// # Errors
    /// 85403 unknown (or another app's, or expired) ticket.
    pub fn query_link(&self, appid: &str, ticket: &str) -> WxResult<Value> {
        let w = self.world();
        let now = self.now_in(&w) / 1000;
        match w.links.get(ticket) {
            Some(r) if r.appid == appid && (r.expire_time == 0 || r.expire_time > now) => {
                Ok(crate::links::info(r))
            }
            _ => Err(WxError::new(85403, "scheme not exist")),
        }
    }

    /// `genwxashortlink`.
    ///
    /// # Errors
    /// 40066 invalid page_url, 40165 unpublished page, 40225 title over 20, 85400 permanent quota.
    pub fn short_link(&self, appid: &str, body: &Value) -> WxResult<String> {
        let page_url = body.get("page_url").and_then(Value::as_str).unwrap_or("");
        if page_url.is_empty() || page_url.chars().count() > 1024 {
            return Err(WxError::new(40066, "invalid url"));
        }
        let title = body.get("page_title").and_then(Value::as_str).unwrap_or("");
        if title.chars().count() > 20 {
            return Err(WxError::new(40225, "invalid page title"));
        }
        let (page, query) = page_url.split_once('?').unwrap_or((page_url, ""));
        crate::links::check_query(query)?;
        let permanent = body
            .get("is_permanent")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let mut w = self.world();
        let app = w.app_mut(appid)?;
        if !app.pages.iter().any(|p| p == page.trim_start_matches('/')) {
            return Err(WxError::new(40165, "invalid weapp pagepath"));
        }
        if permanent {
            let made = w.permanent_short_links.entry(appid.to_owned()).or_default();
            if *made >= crate::links::PERMANENT_SHORT_LINKS {
                return Err(WxError::new(
                    85400,
                    "permanent short link count exceeds limit",
                ));
            }
            *made += 1;
        }
        Ok(format!("#小程序://{appid}/{}", crate::links::ticket()))
    }
}

impl Sim {
    /// `addtemplate`.
    ///
    /// # Errors
    /// 200012 over 50 private templates, 200014, 200020, 200021.
    pub fn add_template(&self, appid: &str, body: &Value) -> WxResult<String> {
        let tid = body
            .get("tid")
            .and_then(|t| t.as_i64().or_else(|| t.as_str()?.parse().ok()))
            .ok_or_else(|| WxError::new(200014, "invalid tid"))?;
        let kids: Vec<i64> = body
            .get("kidList")
            .and_then(Value::as_array)
            .ok_or_else(|| WxError::new(200020, "invalid kidList"))?
            .iter()
            .map(|k| {
                k.as_i64()
                    .ok_or_else(|| WxError::new(200020, "invalid kidList"))
            })
            .collect::<WxResult<_>>()?;
        let scene = body.get("sceneDesc").and_then(Value::as_str).unwrap_or("");
        let mut w = self.world();
        let app = w.app_mut(appid)?;
        if app.templates.len() >= 50 {
            return Err(WxError::new(200012, "private template count reach limit"));
        }
        let id = random_alnum(43);
        let t = crate::subscribe::instantiate(tid, &kids, scene, id.clone())
            .map_err(|(c, m)| WxError::new(c, m))?;
        app.templates.push(t);
        Ok(id)
    }

    /// `deltemplate`.
    ///
    /// # Errors
    /// 40037 unknown template.
    pub fn del_template(&self, appid: &str, id: &str) -> WxResult<()> {
        let mut w = self.world();
        let app = w.app_mut(appid)?;
        let before = app.templates.len();
        app.templates.retain(|t| t.pri_tmpl_id != id);
        if app.templates.len() == before {
            return Err(WxError::new(40037, "invalid template_id"));
        }
        Ok(())
    }

    /// `gettemplate`.
    ///
    /// # Errors
    /// 40013.
    pub fn templates(&self, appid: &str) -> WxResult<Value> {
        let mut w = self.world();
        Ok(json!(w.app_mut(appid)?.templates))
    }

    /// `message/subscribe/send`: needs a grant (one grant, one message) and valid values.
    ///
    /// # Errors
    /// 40003, 40037, 43101 no grant, 47003 naming the field, 47001 bad state or lang.
    pub fn send_subscribe(&self, appid: &str, body: &Value) -> WxResult<Value> {
        let touser = body.get("touser").and_then(Value::as_str).unwrap_or("");
        let template_id = body
            .get("template_id")
            .and_then(Value::as_str)
            .unwrap_or("");
        let state = body
            .get("miniprogram_state")
            .and_then(Value::as_str)
            .unwrap_or("formal");
        let lang = body.get("lang").and_then(Value::as_str).unwrap_or("zh_CN");
        if !matches!(state, "developer" | "trial" | "formal")
            || !matches!(lang, "zh_CN" | "en_US" | "zh_HK" | "zh_TW")
        {
            return Err(WxError::new(
                47001,
                "data format error: miniprogram_state or lang",
            ));
        }
        let mut w = self.world();
        let now = self.now_in(&w) / 1000;
        let app = w.app_with_user(appid, touser)?;
        let template = app
            .templates
            .iter()
            .find(|t| t.pri_tmpl_id == template_id)
            .cloned()
            .ok_or_else(|| WxError::new(40037, "invalid template_id"))?;
        let data = body
            .get("data")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        for key in &template.keys {
            let value = data
                .get(key)
                .and_then(|v| v.get("value"))
                .and_then(Value::as_str);
            match value {
                Some(v) if crate::subscribe::value_ok(crate::subscribe::rule_of(key), v) => {}
                Some(_) => {
                    return Err(WxError::new(
                        47003,
                        format!("argument invalid! data.{key}.value invalid"),
                    ))
                }
                None => {
                    return Err(WxError::new(
                        47003,
                        format!("argument invalid! data.{key}.value is empty"),
                    ))
                }
            }
        }
        let grant = app
            .grants
            .get_mut(&(touser.to_owned(), template_id.to_owned()));
        match grant {
            Some(n) if *n > 0 => *n -= 1,
            _ => return Err(WxError::new(43101, "user refuse to accept the msg")),
        }
        let msg_id = rand::thread_rng().gen_range(1..i64::MAX);
        app.messages.push(json!({
            "openid": touser, "template_id": template_id, "page": body.get("page"), "data": data,
            "miniprogram_state": state, "lang": lang, "sent_at": now, "msgid": msg_id,
        }));
        Ok(json!({"msgid": msg_id}))
    }

    /// Subscribe messages delivered to a user.
    pub fn messages(&self, appid: &str, openid: &str) -> Vec<Value> {
        let w = self.world();
        w.apps.get(appid).map_or_else(Vec::new, |a| {
            a.messages
                .iter()
                .filter(|m| m["openid"] == openid)
                .cloned()
                .collect()
        })
    }
}

/// How long temporary media lives (3 days).
pub const MEDIA_TTL_SECS: i64 = 3 * 86_400;

impl Sim {
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
                    return Err(WxError::new(
                        40097,
                        "invalid args: link needs title and url",
                    ));
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
        let action = app.user_actions.get_mut(touser).ok_or_else(|| {
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
        app.messages.push(json!({"openid": touser, "custom": true, "msgtype": msgtype, "content": content, "sent_at": now / 1000}));
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
            _ => return Err(WxError::new(45072, "command invalid")),
        };
        let action = app
            .user_actions
            .get_mut(touser)
            .filter(|a| now - a.at < 30_000)
            .ok_or_else(|| WxError::new(45080, "has not sent message to user in 30 seconds"))?;
        if typing && action.typing {
            return Err(WxError::new(45081, "already typing"));
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
        w.media.insert(
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
        match w.media.get(id) {
            Some((a, ct, bytes, at)) if a == appid && now - at < MEDIA_TTL_SECS * 1000 => {
                Ok((ct.clone(), bytes.clone()))
            }
            _ => Err(WxError::new(40007, "invalid media_id")),
        }
    }
}

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
        let app = w.app_with_user(appid, openid)?;
        let seen = app.users.get(openid).map_or(0, |u| u.last_seen);
        if now - seen > 2 * 3_600_000 {
            return Err(WxError::new(61010, "user is not visited in 2 hours"));
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
            return Err(WxError::new(
                40097,
                "invalid args: content over 2500 characters",
            ));
        }
        let hit = VERDICT_KEYWORDS
            .iter()
            .find(|(k, _, _)| content.contains(k));
        if body.get("version").and_then(Value::as_i64) != Some(2) {
            return match hit {
                Some(_) => Err(WxError::new(87014, "risky content")),
                None => Ok(json!({"errcode": 0, "errmsg": "ok"})),
            };
        }
        body.get("scene")
            .and_then(Value::as_i64)
            .filter(|s| (1..=4).contains(s))
            .ok_or_else(|| WxError::new(40097, "invalid args: scene"))?;
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
            .ok_or_else(|| WxError::new(40097, "invalid args: scene"))?;
        body.get("client_ip")
            .and_then(Value::as_str)
            .filter(|ip| !ip.is_empty())
            .ok_or_else(|| WxError::new(40097, "invalid args: client_ip"))?;
        let openid = body.get("openid").and_then(Value::as_str).unwrap_or("");
        self.world().app_with_user(appid, openid)?;
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
}
