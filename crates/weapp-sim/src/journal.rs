//! The event journal: everything the simulator does that a developer wants to see — every
//! WeChat call (appid, path, errcode, rid, latency, request and response with secrets masked),
//! tokens issued and retired, codes issued and redeemed, pushes and their attempts, messages
//! users received, the clock and faults. Bounded in memory (the newest [`CAPACITY`] events),
//! readable as `GET /_sim/events?after=` and streamed as Server-Sent Events
//! (`GET /_sim/events/stream`).

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::Mutex;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{json, Map, Value};
use tokio::sync::broadcast;

use crate::core::Sim;

/// How many events the journal keeps.
pub const CAPACITY: usize = 10_000;

/// Fields whose values are secrets: never shown whole.
const SECRET_KEYS: &[&str] = &[
    "secret",
    "appsecret",
    "access_token",
    "refresh_token",
    "token",
    "session_token",
    "session_key",
    "encoding_aes_key",
    "authorization",
];

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

    /// With details (secrets in it are masked).
    #[must_use]
    pub fn detail(mut self, detail: Value) -> Self {
        self.detail = mask(detail);
        self
    }
}

/// `value` with every secret field masked (`access_token` keeps its first 8 characters, so a
/// token can still be told from another).
pub fn mask(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let masked = if SECRET_KEYS.contains(&k.to_ascii_lowercase().as_str()) {
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
        Value::String(s) if key.to_ascii_lowercase().ends_with("access_token") && s.len() > 12 => {
            Value::String(format!("{}…({} chars)", &s[..8], s.len()))
        }
        Value::Null => Value::Null,
        _ => Value::String("***".into()),
    }
}

/// A query string as an object, secrets masked.
pub fn masked_query(query: &str) -> Value {
    let map: Map<String, Value> = query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k.to_owned(), Value::String(v.to_owned()))
        })
        .collect();
    mask(Value::Object(map))
}

#[derive(Debug, Default)]
struct Ring {
    next_id: u64,
    events: VecDeque<Event>,
}

/// The journal: a ring of the newest events and a broadcast of new ones.
#[derive(Debug)]
pub struct Journal {
    ring: Mutex<Ring>,
    capacity: usize,
    tx: broadcast::Sender<Event>,
}

impl Journal {
    /// A journal keeping `capacity` events.
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(4096);
        Self {
            ring: Mutex::new(Ring {
                next_id: 1,
                events: VecDeque::new(),
            }),
            capacity: capacity.max(1),
            tx,
        }
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records `event` at `at` (simulator ms); returns its id.
    pub fn push(&self, at: i64, mut event: Event) -> u64 {
        let mut r = self.ring();
        event.id = r.next_id;
        event.at = at;
        r.next_id += 1;
        r.events.push_back(event.clone());
        while r.events.len() > self.capacity {
            r.events.pop_front();
        }
        let id = event.id;
        // Broadcast under the lock, so listeners see ids in order (a stream skips ids at or
        // below the last it sent). Nobody listening is fine.
        let _ = self.tx.send(event);
        id
    }

    /// Up to `limit` events with an id above `after` that `filter` keeps, oldest first, and the
    /// cursor for the next page.
    pub fn after(&self, after: u64, limit: usize, filter: &Filter) -> (Vec<Event>, u64) {
        let r = self.ring();
        let mut out = Vec::new();
        let mut next = after;
        for e in r.events.iter().filter(|e| e.id > after) {
            next = e.id;
            if filter.keeps(e) {
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

    /// New events as they are recorded.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }

    /// Forgets every event (ids keep increasing).
    pub fn clear(&self) {
        self.ring().events.clear();
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
    fn from_query(q: &HashMap<String, String>) -> Result<Self, String> {
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

fn parse_u64(q: &HashMap<String, String>, k: &str, default: u64) -> Result<u64, String> {
    match q.get(k) {
        Some(v) => v.parse().map_err(|_| format!("{k} must be a whole number")),
        None => Ok(default),
    }
}

async fn events(State(sim): State<Sim>, Query(q): Query<HashMap<String, String>>) -> Response {
    let parsed = (|| {
        let after = parse_u64(&q, "after", 0)?;
        let limit = parse_u64(&q, "limit", 500)?;
        if !(1..=5000).contains(&limit) {
            return Err("limit must be 1–5000".to_owned());
        }
        Ok((after, limit as usize, Filter::from_query(&q)?))
    })();
    let (after, limit, filter) = match parsed {
        Ok(v) => v,
        Err(e) => {
            return crate::http::control_error(axum::http::StatusCode::BAD_REQUEST, e);
        }
    };
    let (events, next_after) = sim.journal().after(after, limit, &filter);
    Json(json!({"events": events, "next_after": next_after})).into_response()
}

/// Server-Sent Events: the backlog after `after` (or `Last-Event-ID`), then every new event as
/// it happens. Each SSE message carries one event as JSON, with its id.
async fn stream(
    State(sim): State<Sim>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let from_header = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let after =
        match from_header.map_or_else(|| parse_u64(&q, "after", sim.journal().last_id()), Ok) {
            Ok(a) => a,
            Err(e) => return crate::http::control_error(axum::http::StatusCode::BAD_REQUEST, e),
        };
    let filter = match Filter::from_query(&q) {
        Ok(f) => f,
        Err(e) => return crate::http::control_error(axum::http::StatusCode::BAD_REQUEST, e),
    };
    // Subscribe before reading the backlog, so nothing falls between them.
    let rx = sim.journal().subscribe();
    let (backlog, last) = sim.journal().after(after, usize::MAX, &filter);
    let state = (VecDeque::from(backlog), rx, last, filter, sim);
    let events = futures_util::stream::unfold(
        state,
        |(mut backlog, mut rx, mut last, filter, sim)| async move {
            loop {
                if let Some(e) = backlog.pop_front() {
                    let sse = to_sse(&e);
                    return Some((Ok::<_, Infallible>(sse), (backlog, rx, last, filter, sim)));
                }
                match rx.recv().await {
                    Ok(e) if e.id > last => {
                        last = e.id;
                        if filter.keeps(&e) {
                            let sse = to_sse(&e);
                            return Some((Ok(sse), (backlog, rx, last, filter, sim)));
                        }
                    }
                    Ok(_) => {}
                    // A reader slower than the broadcast buffer catches up from the ring (which
                    // holds the newest CAPACITY events), so a burst loses nothing it still has.
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let (missed, next) = sim.journal().after(last, usize::MAX, &filter);
                        backlog = VecDeque::from(missed);
                        last = next;
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        },
    );
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

fn to_sse(e: &Event) -> SseEvent {
    SseEvent::default()
        .id(e.id.to_string())
        .data(serde_json::to_string(e).unwrap_or_default())
}

/// The journal's `/_sim` routes.
pub(crate) fn control() -> Router<Sim> {
    Router::new()
        .route("/_sim/events", get(events))
        .route("/_sim/events/stream", get(stream))
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
