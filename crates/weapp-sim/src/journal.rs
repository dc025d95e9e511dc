//! The event journal: everything the simulator does that a developer wants to see — every
//! WeChat call (appid, path, errcode, rid, latency, request and response with secrets masked),
//! tokens issued and retired, codes issued and redeemed, pushes and their attempts, messages
//! users received, the clock and faults. Bounded in memory (the newest [`CAPACITY`] events, at
//! most about [`BYTE_BUDGET`] of them; an event's detail over [`DETAIL_LIMIT`] is cut to a
//! preview), readable as `GET /_sim/events?after=` and streamed as Server-Sent Events
//! (`GET /_sim/events/stream`).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use serde::Serialize;
use serde_json::{json, Map, Value};
use tokio::sync::watch;

/// How many events the journal keeps.
pub const CAPACITY: usize = 10_000;

/// About how much memory the kept events may take; the oldest go first.
pub const BYTE_BUDGET: usize = 64 * 1024 * 1024;

/// An event detail larger than this (in memory, about) is replaced by a preview.
pub const DETAIL_LIMIT: usize = 64 * 1024;

/// Whether a field named `key` holds a secret. Names are compared without case, `_` or `-`, so
/// `access_token`, `accessToken` and `Access-Token` are one name: anything ending in `token`,
/// `secret`, `password`, `ticket` or `private_key`, and session keys, AES keys, encrypt keys,
/// WeChat Pay's APIv3 key, `authorization` and `cookie`.
fn is_secret_key(key: &str) -> bool {
    let k: String = key
        .chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect();
    k.ends_with("token")
        || k.ends_with("secret")
        || k.ends_with("password")
        || k.ends_with("ticket")
        // WeChat Pay: a merchant's API private key and its APIv3 key.
        || k.ends_with("privatekey")
        || matches!(
            k.as_str(),
            "sessionkey"
                | "encodingaeskey"
                | "aeskey"
                | "encryptkey"
                | "authorization"
                | "cookie"
                | "setcookie"
                // A platform's authorization codes are redeemable for refresh tokens.
                | "authcode"
                | "authorizationcode"
                | "preauthcode"
                | "apiv3key"
        )
}

/// Whether `key` names an access token (shown by its first 8 characters).
fn is_access_token_key(key: &str) -> bool {
    let k: String = key
        .chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect();
    k.ends_with("accesstoken")
}

/// About how many bytes `v` takes in memory.
pub(crate) fn approx_size(v: &Value) -> usize {
    match v {
        Value::Null | Value::Bool(_) | Value::Number(_) => 16,
        Value::String(s) => 24 + s.len(),
        Value::Array(items) => 24 + items.iter().map(approx_size).sum::<usize>(),
        Value::Object(map) => {
            48 + map
                .iter()
                .map(|(k, v)| 32 + k.len() + approx_size(v))
                .sum::<usize>()
        }
    }
}

fn approx_event_size(e: &Event) -> usize {
    128 + e.kind.len()
        + e.appid.as_ref().map_or(0, String::len)
        + e.path.as_ref().map_or(0, String::len)
        + e.openid.as_ref().map_or(0, String::len)
        + e.rid.as_ref().map_or(0, String::len)
        + approx_size(&e.detail)
}

/// `detail` as kept: masked, and cut to a preview when it is larger than [`DETAIL_LIMIT`].
fn bounded(detail: Value) -> Value {
    let detail = mask(detail);
    let size = approx_size(&detail);
    if size <= DETAIL_LIMIT {
        return detail;
    }
    let text = detail.to_string();
    let mut end = text.len().min(8 * 1024);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    json!({"truncated": true, "approx_bytes": size, "preview": &text[..end]})
}

/// One thing that happened.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Increasing id (the `after` cursor).
    pub id: u64,
    /// Simulator time, Unix ms.
    pub at: i64,
    /// `call`, `token_issued`, `token_retired`, `code_issued`, `code_redeemed`, `push`,
    /// `message`, `backend`, `clock`, `fault_added`, `faults_cleared`, `user_action`, …
    pub kind: String,
    /// The app, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub appid: Option<String>,
    /// The WeChat path, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The user, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub openid: Option<String>,
    /// WeChat's errcode, for calls that failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errcode: Option<i64>,
    /// The rid of a failed call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rid: Option<String>,
    /// Real time the call took, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// Everything else (request and response of a call, attempts of a push, …).
    #[serde(skip_serializing_if = "Value::is_null")]
    pub detail: Value,
}

impl Event {
    /// An event of `kind` (its id and time are set when it is recorded).
    pub fn new(kind: &str) -> Self {
        Self {
            id: 0,
            at: 0,
            kind: kind.to_owned(),
            appid: None,
            path: None,
            openid: None,
            errcode: None,
            rid: None,
            latency_ms: None,
            detail: Value::Null,
        }
    }

    /// With an app.
    #[must_use]
    pub fn appid(mut self, appid: impl Into<String>) -> Self {
        self.appid = Some(appid.into());
        self
    }

    /// With a path.
    #[must_use]
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = Some(path.into());
        self
    }

    /// With a user.
    #[must_use]
    pub fn openid(mut self, openid: impl Into<String>) -> Self {
        self.openid = Some(openid.into());
        self
    }

    /// With details (secrets in it are masked; a detail over [`DETAIL_LIMIT`] is kept as a
    /// preview).
    #[must_use]
    pub fn detail(mut self, detail: Value) -> Self {
        self.detail = bounded(detail);
        self
    }
}

/// `value` with every secret field masked (see [`is_secret_key`]; an access token keeps its
/// first 8 characters, so a token can still be told from another).
pub fn mask(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let masked = if is_secret_key(&k) {
                        mask_scalar(&k, &v)
                    } else {
                        mask(v)
                    };
                    (k, masked)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(mask).collect()),
        v => v,
    }
}

fn mask_scalar(key: &str, v: &Value) -> Value {
    match v {
        Value::String(s) if is_access_token_key(key) && s.chars().count() > 12 => {
            let head: String = s.chars().take(8).collect();
            Value::String(format!("{head}…({} chars)", s.chars().count()))
        }
        Value::Null => Value::Null,
        _ => Value::String("***".into()),
    }
}

/// `%XX` and `+` decoded, as a server reads a query string (invalid escapes kept as they are).
pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let hex = |i: usize| {
        bytes
            .get(i)
            .and_then(|b| (*b as char).to_digit(16))
            .map(|d| d as u8)
    };
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                if let (Some(h), Some(l)) = (hex(i + 1), hex(i + 2)) {
                    out.push(h * 16 + l);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A query string as an object (keys and values decoded, as WeChat reads them), secrets masked.
pub fn masked_query(query: &str) -> Value {
    let map: Map<String, Value> = query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), Value::String(percent_decode(v)))
        })
        .collect();
    mask(Value::Object(map))
}

/// `k=v&…` with the values of secret keys masked (a form body, a query string).
pub(crate) fn masked_form(form: &str) -> String {
    form.split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if is_secret_key(&percent_decode(k)) => format!("{k}=***"),
            _ => kv.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// A URL with the secrets of its query string masked (for the phone's backend requests).
pub(crate) fn masked_url(url: &str) -> String {
    match url.split_once('?') {
        Some((base, query)) => format!("{base}?{}", masked_form(query)),
        None => url.to_owned(),
    }
}

#[derive(Debug, Default)]
struct Ring {
    next_id: u64,
    /// Events and their approximate sizes, oldest first.
    events: VecDeque<(Event, usize)>,
    bytes: usize,
}

impl Ring {
    /// The index of the first event with an id above `after` (ids increase along the ring).
    fn first_after(&self, after: u64) -> usize {
        self.events.partition_point(|(e, _)| e.id <= after)
    }
}

/// The journal: a ring of the newest events, bounded by count and by size, and the id of the
/// newest one for readers to wait on.
#[derive(Debug)]
pub struct Journal {
    ring: Mutex<Ring>,
    capacity: usize,
    budget: usize,
    newest: watch::Sender<u64>,
}

impl Journal {
    /// A journal keeping `capacity` events (at most about [`BYTE_BUDGET`] of them).
    pub fn new(capacity: usize) -> Self {
        let (newest, _) = watch::channel(0);
        Self {
            ring: Mutex::new(Ring {
                next_id: 1,
                events: VecDeque::new(),
                bytes: 0,
            }),
            capacity: capacity.max(1),
            budget: BYTE_BUDGET,
            newest,
        }
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records `event` at `at` (simulator ms); returns its id. A detail set directly (not
    /// through [`Event::detail`]) is masked and bounded here too.
    pub fn push(&self, at: i64, mut event: Event) -> u64 {
        if approx_size(&event.detail) > DETAIL_LIMIT {
            event.detail = bounded(std::mem::take(&mut event.detail));
        }
        let size = approx_event_size(&event);
        let id = {
            let mut r = self.ring();
            event.id = r.next_id;
            event.at = at;
            r.next_id += 1;
            r.events.push_back((event, size));
            r.bytes += size;
            while r.events.len() > self.capacity || (r.bytes > self.budget && r.events.len() > 1) {
                if let Some((_, s)) = r.events.pop_front() {
                    r.bytes -= s;
                }
            }
            r.next_id - 1
        };
        // Readers wait on this and read the ring; it never lags behind.
        self.newest.send_replace(id);
        id
    }

    /// Up to `limit` events with an id above `after` that `filter` keeps, oldest first, and the
    /// cursor for the next page.
    pub fn after(&self, after: u64, limit: usize, filter: &Filter) -> (Vec<Event>, u64) {
        self.page(after, limit, usize::MAX, filter)
    }

    /// Like [`Journal::after`], stopping once about `budget` bytes are in the page (one event at
    /// least).
    pub(crate) fn page(
        &self,
        after: u64,
        limit: usize,
        budget: usize,
        filter: &Filter,
    ) -> (Vec<Event>, u64) {
        let r = self.ring();
        let mut out = Vec::new();
        let mut next = after;
        let mut bytes = 0usize;
        for (e, size) in r.events.range(r.first_after(after)..) {
            if !out.is_empty() && bytes + size > budget {
                break;
            }
            next = e.id;
            if filter.keeps(e) {
                bytes += size;
                out.push(e.clone());
                if out.len() >= limit {
                    break;
                }
            }
        }
        (out, next)
    }

    /// The id of the newest event (0 when empty).
    pub fn last_id(&self) -> u64 {
        self.ring().next_id - 1
    }

    /// The id of the newest event, changing as events are recorded.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.newest.subscribe()
    }

    /// Forgets every event (ids keep increasing).
    pub fn clear(&self) {
        let mut r = self.ring();
        r.events.clear();
        r.bytes = 0;
    }
}

/// Which events a reader wants.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    appid: Option<String>,
    path: Option<String>,
    kind: Option<String>,
    errcode: Option<i64>,
}

impl Filter {
    pub(crate) fn from_query(q: &HashMap<String, String>) -> Result<Self, String> {
        let non_empty = |k: &str| q.get(k).filter(|v| !v.is_empty()).cloned();
        Ok(Self {
            appid: non_empty("appid"),
            path: non_empty("path"),
            kind: non_empty("kind"),
            errcode: match non_empty("errcode") {
                Some(v) => Some(v.parse().map_err(|_| "errcode must be a number")?),
                None => None,
            },
        })
    }

    fn keeps(&self, e: &Event) -> bool {
        self.appid
            .as_ref()
            .is_none_or(|a| e.appid.as_ref() == Some(a))
            && self
                .path
                .as_ref()
                .is_none_or(|p| e.path.as_deref().is_some_and(|ep| ep.contains(p.as_str())))
            && self.kind.as_ref().is_none_or(|k| &e.kind == k)
            && self.errcode.is_none_or(|c| e.errcode == Some(c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_is_bounded_and_pages_by_id() {
        let j = Journal::new(3);
        for i in 0..5 {
            j.push(
                i,
                Event::new("call").appid(if i % 2 == 0 { "a" } else { "b" }),
            );
        }
        let (all, next) = j.after(0, 100, &Filter::default());
        assert_eq!(all.iter().map(|e| e.id).collect::<Vec<_>>(), [3, 4, 5]);
        assert_eq!(next, 5);
        let only_a = Filter {
            appid: Some("a".into()),
            ..Filter::default()
        };
        let (a, _) = j.after(0, 100, &only_a);
        assert_eq!(a.iter().map(|e| e.id).collect::<Vec<_>>(), [3, 5]);
        let (page, next) = j.after(3, 1, &Filter::default());
        assert_eq!((page[0].id, next), (4, 4));
    }

    #[test]
    fn the_ring_is_bounded_by_size_and_large_details_are_cut() {
        let j = Journal::new(10_000);
        // A 16 KB JSON array of zeros is small on the wire and large in memory.
        let zeros = Value::Array(vec![json!(0); 8_000]);
        let e = Event::new("call").detail(json!({"request": zeros}));
        assert_eq!(e.detail["truncated"], true);
        assert!(approx_size(&e.detail) < 16 * 1024);
        // Details just under the cut, far more of them than the budget holds.
        let big = "x".repeat(DETAIL_LIMIT - 1024);
        for i in 0..3_000 {
            j.push(i, Event::new("message").detail(json!({"content": big})));
        }
        let r = j.ring();
        assert!(r.bytes <= BYTE_BUDGET, "{} bytes kept", r.bytes);
        assert!(r.events.len() < 3_000 && r.events.len() > 500);
        assert_eq!(r.events.back().unwrap().0.id, 3_000, "the newest are kept");
        drop(r);
        // A page stops at its byte budget (at least one event).
        let (page, next) = j.page(0, 5_000, 1024 * 1024, &Filter::default());
        assert!(!page.is_empty() && page.len() < 30, "{}", page.len());
        assert_eq!(next, page.last().unwrap().id);
    }

    #[test]
    fn secrets_are_masked_everywhere() {
        let v = mask(json!({
            "secret": "s3cret", "nested": {"session_key": "abc", "appsecret": "x"},
            "list": [{"access_token": "SIMC_abcdefghijklmnopqrstuvwxyz"}],
            "code": "kept",
        }));
        let text = v.to_string();
        assert!(
            !text.contains("s3cret") && !text.contains("\"abc\"") && !text.contains("ijklmnop")
        );
        assert!(text.contains("SIMC_abc") && text.contains("kept"));
        let q = masked_query("appid=wx1&secret=zzz&access_token=SIMC_0123456789abcdef");
        assert_eq!(q["secret"], "***");
        assert_eq!(q["appid"], "wx1");
    }
}
