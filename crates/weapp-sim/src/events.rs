//! The journal's `/_sim` routes: `GET /_sim/events?after=` (a page of events) and
//! `GET /_sim/events/stream` (Server-Sent Events). The journal itself is `crate::journal`.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::journal::{Event, Filter};
use crate::world::Sim;

/// How much `GET /_sim/events` answers at most, about (`next_after` says where it stopped).
const PAGE_BUDGET: usize = 8 * 1024 * 1024;

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
    let (events, next_after) = sim.journal().page(after, limit, PAGE_BUDGET, &filter);
    Json(json!({"events": events, "next_after": next_after})).into_response()
}

/// Server-Sent Events: the backlog after `after` (or `Last-Event-ID`; default: only new
/// events), then every new event as it happens, in id order. Each SSE message carries one event
/// as JSON, with its id. The stream reads the ring a page at a time, so a slow reader holds at
/// most one page and misses only what the ring no longer keeps. A `Last-Event-ID` from before a
/// restart of the simulator (above the newest id) starts from the beginning.
async fn stream(
    State(sim): State<Sim>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let from_header = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // Watch before reading the newest id, so nothing falls between them.
    let newest = sim.journal().watch();
    let last_id = sim.journal().last_id();
    let after = match from_header.map_or_else(|| parse_u64(&q, "after", last_id), Ok) {
        Ok(a) if a > last_id => 0,
        Ok(a) => a,
        Err(e) => return crate::http::control_error(axum::http::StatusCode::BAD_REQUEST, e),
    };
    let filter = match Filter::from_query(&q) {
        Ok(f) => f,
        Err(e) => return crate::http::control_error(axum::http::StatusCode::BAD_REQUEST, e),
    };
    let state = (VecDeque::new(), newest, after, filter, sim);
    let events = futures_util::stream::unfold(
        state,
        |(mut page, mut newest, mut last, filter, sim)| async move {
            loop {
                if let Some(e) = page.pop_front() {
                    let sse = to_sse(&e);
                    return Some((Ok::<_, Infallible>(sse), (page, newest, last, filter, sim)));
                }
                newest.borrow_and_update();
                let (events, next) = sim.journal().page(last, 256, PAGE_BUDGET, &filter);
                if next > last {
                    last = next;
                    page = VecDeque::from(events);
                    continue;
                }
                // Caught up: wait for the next event.
                if newest.changed().await.is_err() {
                    return None;
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
