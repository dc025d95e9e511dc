//! The push receiver: the URL configured in the WeChat console. Every accepted push is written
//! to the event log before WeChat gets its `success`, de-duplicated across WeChat's retries, and
//! delivered to the webhook by the outbox (`crate::webhook`) — so a slow or dead webhook never
//! delays the answer or loses an event. Consumers can also pull or replay the log.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use weapp::push::{PushError, PushQuery};

use crate::error::{AppError, ErrorBody};
use crate::state::{now_ms, AppState, PushRuntime};

fn push_of<'s>(state: &'s AppState, appid: &str) -> Result<&'s PushRuntime, AppError> {
    state
        .app(appid)
        .and_then(|a| a.push.as_ref())
        .ok_or_else(|| AppError::NotFound(format!("app {appid} has no [apps.push] configuration")))
}

fn refused(state: &AppState, appid: &str, e: PushError) -> AppError {
    state.metrics.push(appid, "refused");
    tracing::info!(appid, error = %e, code = e.official_code(), "push refused");
    if e.is_authentication() {
        AppError::Unauthorized(format!("push refused: {e}"))
    } else {
        AppError::bad_request("invalid_push", format!("push refused: {e}"))
    }
}

/// URL verification by WeChat: echoes `echostr` when the signature is valid.
#[utoipa::path(get, path = "/v1/apps/{appid}/push", tag = "push",
    params(("appid" = String, Path), ("signature" = String, Query), ("timestamp" = String, Query), ("nonce" = String, Query), ("echostr" = String, Query)),
    responses((status = 200, description = "echostr, verbatim"), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn verify(
    State(state): State<AppState>,
    Path(appid): Path<String>,
    Query(q): Query<PushQuery>,
) -> Result<Response, AppError> {
    let push = push_of(&state, &appid)?;
    let echo = push
        .receiver
        .verify_url(&q)
        .map_err(|e| refused(&state, &appid, e))?;
    Ok(([(header::CONTENT_TYPE, "text/plain")], echo).into_response())
}

/// A pushed message or event (plain, compatible or safe mode; XML or JSON).
#[utoipa::path(post, path = "/v1/apps/{appid}/push", tag = "push",
    params(("appid" = String, Path)),
    responses((status = 200, description = "`success`, once the event is durably stored"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn receive(
    State(state): State<AppState>,
    Path(appid): Path<String>,
    Query(q): Query<PushQuery>,
    body: Bytes,
) -> Result<Response, AppError> {
    let push = push_of(&state, &appid)?;
    let incoming = push
        .receiver
        .receive(&q, &body)
        .map_err(|e| refused(&state, &appid, e))?;
    let message = &incoming.message;
    let next_attempt = if push.webhook_url.is_some() {
        0
    } else {
        crate::store::NEVER
    };
    let payload =
        serde_json::to_string(&message.raw).map_err(|e| AppError::Internal(e.to_string()))?;
    let (id, new) = state
        .store
        .insert_event(
            &appid,
            &message.dedup_key(),
            message.type_name(),
            &payload,
            now_ms(),
            next_attempt,
        )
        .await?;
    if new {
        state.metrics.push(&appid, "accepted");
        state.outbox.notify_one();
        tracing::info!(appid, event = id, kind = message.type_name(), "push stored");
    } else {
        state.metrics.push(&appid, "duplicate");
        tracing::info!(
            appid,
            event = id,
            "duplicate push (a WeChat retry); not stored again"
        );
    }
    Ok(([(header::CONTENT_TYPE, "text/plain")], "success").into_response())
}

/// `GET /v1/apps/{appid}/events` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Return events with a greater id (default 0: from the start).
    #[serde(default)]
    pub after: i64,
    /// At most this many (1–500, default 100).
    pub limit: Option<i64>,
}

/// One event of the log.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventOut {
    /// Increasing id.
    pub id: i64,
    /// The app.
    pub appid: String,
    /// `text`, `subscribe_msg_popup_event`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// Unix seconds when received.
    pub created_at: i64,
    /// The message's fields.
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    /// Whether the webhook acknowledged it.
    pub delivered: bool,
}

/// A page of the event log.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventsPage {
    /// Oldest first.
    pub events: Vec<EventOut>,
    /// Pass as `after` for the next page.
    pub next_after: i64,
}

/// Pull or replay received pushes (client-key auth, as for the token broker).
#[utoipa::path(get, path = "/v1/apps/{appid}/events", tag = "push", security(("client_key" = [])),
    params(("appid" = String, Path), ("after" = Option<i64>, Query), ("limit" = Option<i64>, Query)),
    responses((status = 200, body = EventsPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn events(
    State(state): State<AppState>,
    Path(appid): Path<String>,
    headers: HeaderMap,
    q: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<EventsPage>, AppError> {
    crate::http::broker::authorize(&state, &headers, &appid)?;
    let Query(q) = q.map_err(|e| AppError::bad_request("invalid_query", e.body_text()))?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) || q.after < 0 {
        return Err(AppError::bad_request(
            "invalid_query",
            "limit must be 1–500 and after ≥ 0",
        ));
    }
    let rows = state.store.events_after(&appid, q.after, limit).await?;
    let next_after = rows.last().map_or(q.after, |e| e.id);
    let events = rows
        .into_iter()
        .map(|e| EventOut {
            id: e.id,
            appid: e.appid,
            kind: e.kind,
            created_at: e.created_at / 1000,
            payload: serde_json::from_str(&e.payload).unwrap_or(serde_json::Value::Null),
            delivered: e.delivered_at.is_some(),
        })
        .collect();
    Ok(Json(EventsPage { events, next_after }))
}

/// Routes of this area.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/apps/{appid}/push", get(verify).post(receive))
        .route("/v1/apps/{appid}/events", get(events))
}
