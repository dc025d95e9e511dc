//! The push receiver: the URL configured in the WeChat console. Every accepted push is written
//! to the event log before WeChat gets its `success`, de-duplicated across WeChat's retries, and
//! delivered to the webhook by the outbox (`crate::webhook`) — so a slow or dead webhook never
//! delays the answer or loses an event. Consumers can also pull or replay the log.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use weapp::push::{Incoming, PushError, PushQuery, Receiver};

use super::service::Push;
use crate::broker::PushRuntime;
use crate::http::ClientIp;
use crate::http::{AppError, ErrorBody};
use crate::shared::now_ms;
use crate::store::EventRecord;

/// An app that receives pushes: its push settings, and the app kept alive while they are used.
struct PushApp(std::sync::Arc<crate::broker::AppRuntime>);

impl std::ops::Deref for PushApp {
    type Target = PushRuntime;
    fn deref(&self) -> &PushRuntime {
        self.0.push.as_ref().expect("checked by push_of")
    }
}

fn push_of(state: &Push, appid: &str) -> Result<PushApp, AppError> {
    state
        .broker
        .app(appid)
        .filter(|a| a.push.is_some())
        .map(PushApp)
        .ok_or_else(|| AppError::NotFound(format!("app {appid} has no push configuration")))
}

/// The answer to a push refused (`appid`: the app, or the platform, it was sent to).
pub(crate) fn refused(state: &Push, appid: &str, e: PushError) -> AppError {
    state.metrics.push(
        appid,
        if e == PushError::Replayed {
            "replay"
        } else {
            "refused"
        },
    );
    // PushError's text never carries decrypted content.
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
    responses((status = 200, description = "echostr, verbatim"), (status = 400, description = "a parameter is missing or empty", body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn verify(
    State(state): State<Push>,
    Path(appid): Path<String>,
    q: Result<Query<PushQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, AppError> {
    let push = push_of(&state, &appid)?;
    let Query(q) = q.map_err(|e| AppError::bad_request("invalid_query", e.body_text()))?;
    let echo = push
        .receiver
        .verify_url(&q)
        .map_err(|e| refused(&state, &appid, e))?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        echo,
    )
        .into_response())
}

/// How long a reservation may stay `pending` (an instance storing the push): longer than any
/// store takes, short enough that a crashed instance's reservation does not refuse WeChat's
/// retries for long.
const PENDING_MS: u64 = 15_000;

/// Where a push's (timestamp, nonce) is remembered.
pub(crate) enum Reservation {
    /// In Redis, shared by the fleet, under this key, holding `pending:<this token>` until
    /// stored: only the attempt that holds it may release it.
    Shared(String, String),
    /// In this instance's receiver (and its in-flight set until stored).
    Local(String),
}

/// Why a push is not taken now.
pub(crate) enum Refusal {
    /// Already received (and stored): a replay.
    Replay,
    /// The same push is being stored right now (WeChat retried before we answered): retry.
    InFlight,
}

/// Reserves a push's (timestamp, nonce) — its `replay_key` — for the replay window of
/// `receiver`, under `scope` (the app, or the platform whose pushes share one memory):
/// fleet-wide in Redis when there is one (this instance's memory while Redis is unreachable),
/// else locally. Third-party platforms' events are reserved here too.
pub(crate) async fn reserve(
    state: &Push,
    receiver: &Receiver,
    scope: &str,
    replay_key: &str,
) -> Result<Option<Reservation>, Refusal> {
    if receiver.replay_window_secs().is_none() {
        return Ok(None);
    }
    let local_key = format!("{scope}:{replay_key}");
    if let Some(redis) = &state.redis {
        let key = format!("{}:push:seen:{scope}:{replay_key}", redis.prefix());
        let mut conn = redis.connection();
        // SET NX, or tell what holds the key: `pending:…` (being stored) or `stored`. A pending
        // reservation lives only PENDING_MS: one whose instance died cannot refuse the retries.
        // It names its holder, so an attempt whose own reservation expired meanwhile cannot
        // release another's.
        let holder = format!("pending:{:032x}", rand::random::<u128>());
        let script = redis::Script::new(
            "if redis.call('SET', KEYS[1], ARGV[2], 'NX', 'PX', ARGV[1]) then return 'reserved' end \
             return redis.call('GET', KEYS[1]) or 'reserved'",
        );
        let answer: redis::RedisResult<String> = script
            .key(&key)
            .arg(PENDING_MS)
            .arg(&holder)
            .invoke_async(&mut conn)
            .await;
        redis.observe("push_reserve", &answer);
        match answer.as_deref() {
            Ok("reserved") => return Ok(Some(Reservation::Shared(key, holder))),
            Ok(v) if v.starts_with("pending") => return Err(Refusal::InFlight),
            Ok(_) => return Err(Refusal::Replay),
            Err(e) => {
                tracing::warn!(scope, error = %e, "redis unavailable for push replay protection; using this instance's memory");
            }
        }
    }
    if state
        .pushes_in_flight
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .contains(&local_key)
    {
        return Err(Refusal::InFlight);
    }
    receiver
        .remember_key(replay_key)
        .map_err(|_| Refusal::Replay)?;
    state
        .pushes_in_flight
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(local_key.clone());
    Ok(Some(Reservation::Local(local_key)))
}

/// Settles a reservation of [`reserve`]: kept (the push is stored) or released (it could not
/// be stored, and WeChat's retry must get through).
pub(crate) async fn settle(
    state: &Push,
    receiver: &Receiver,
    replay_key: &str,
    r: Reservation,
    stored: bool,
) {
    match r {
        Reservation::Shared(key, holder) => {
            let Some(redis) = &state.redis else { return };
            let mut conn = redis.connection();
            let result: redis::RedisResult<()> = if stored {
                // Twice the window: a timestamp may be up to `window` in the future.
                let keep = receiver
                    .replay_window_secs()
                    .unwrap_or(0)
                    .saturating_mul(2000)
                    .max(1000);
                redis::cmd("SET")
                    .arg(&key)
                    .arg("stored")
                    .arg("PX")
                    .arg(keep)
                    .query_async(&mut conn)
                    .await
            } else {
                // Released only by its holder: if this reservation expired and another attempt
                // holds (or stored) the key now, it stays.
                redis::Script::new(
                    "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end \
                     return 0",
                )
                .key(&key)
                .arg(&holder)
                .invoke_async::<i64>(&mut conn)
                .await
                .map(|_| ())
            };
            redis.observe("push_settle", &result);
            if let Err(e) = result {
                if stored {
                    tracing::warn!(error = %e, "could not mark a push stored; a retry of it meanwhile is answered 503 until the window passes");
                } else {
                    tracing::warn!(error = %e, "could not release a push's replay reservation; WeChat's retry of it will be refused until the window passes");
                }
            }
        }
        Reservation::Local(key) => {
            if !stored {
                receiver.forget_key(replay_key);
            }
            state
                .pushes_in_flight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&key);
        }
    }
}

/// Reserves, stores and settles one push. Runs in a task of its own: a caller that goes away
/// (WeChat gives up after 5 s) cannot leave a reservation behind that would refuse the retry.
async fn intake(state: Push, appid: String, incoming: Incoming) -> Result<(i64, bool), AppError> {
    let push = push_of(&state, &appid)?;
    let scope = push.replay_scope.as_deref().unwrap_or(&appid);
    let reservation = match reserve(&state, &push.receiver, scope, &incoming.replay_key).await {
        Ok(r) => r,
        Err(Refusal::Replay) => return Err(refused(&state, &appid, PushError::Replayed)),
        Err(Refusal::InFlight) => {
            state.metrics.push(&appid, "in_flight");
            return Err(AppError::Unavailable {
                retry_after_secs: 1,
            });
        }
    };
    let message = &incoming.message;
    let next_attempt = if push.webhook_url.is_some() {
        0
    } else {
        crate::store::NEVER
    };
    let stored = match serde_json::to_string(&message.raw) {
        Ok(payload) => {
            let started = std::time::Instant::now();
            let r = state
                .store
                .insert_event(
                    &appid,
                    &message.dedup_key(),
                    message.type_name(),
                    &payload,
                    now_ms(),
                    next_attempt,
                )
                .await;
            if r.is_ok() {
                state.metrics.db_commit("push_event", started.elapsed());
            }
            r.map_err(AppError::from)
        }
        Err(e) => Err(AppError::Internal(e.to_string())),
    };
    if let Some(r) = reservation {
        settle(
            &state,
            &push.receiver,
            &incoming.replay_key,
            r,
            stored.is_ok(),
        )
        .await;
    }
    if stored.is_err() {
        state.metrics.push(&appid, "store_failed");
    }
    stored
}

/// A pushed message or event (plain, compatible or safe mode; XML or JSON). With an AES key
/// configured only encrypted pushes signed over their ciphertext are accepted. `success` is
/// answered only once the event is durably stored; a push that cannot be stored is answered
/// 500 and its nonce forgotten, so WeChat's retry is accepted. A retry arriving while the first
/// attempt is still being stored is answered 503.
#[utoipa::path(post, path = "/v1/apps/{appid}/push", tag = "push",
    params(("appid" = String, Path), ("signature" = Option<String>, Query), ("timestamp" = Option<String>, Query), ("nonce" = Option<String>, Query),
           ("encrypt_type" = Option<String>, Query, description = "`aes` in compatible and safe mode"), ("msg_signature" = Option<String>, Query), ("openid" = Option<String>, Query)),
    request_body(content = String, description = "WeChat's push: XML (`<xml>…</xml>`) or JSON; in safe mode `{ToUserName, Encrypt}`", content_type = "text/xml"),
    responses((status = 200, description = "`success`, once the event is durably stored"), (status = 400, description = "not a well-formed push (a parameter missing, a body that does not parse or decrypt)", body = ErrorBody), (status = 401, description = "not authentic, stale or replayed", body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody), (status = 500, description = "not stored; WeChat retries it", body = ErrorBody), (status = 503, description = "the same push is being stored right now; retry", body = ErrorBody)))]
pub async fn receive(
    State(state): State<Push>,
    Path(appid): Path<String>,
    q: Result<Query<PushQuery>, axum::extract::rejection::QueryRejection>,
    body: Bytes,
) -> Result<Response, AppError> {
    let push = push_of(&state, &appid)?;
    let Query(q) = q.map_err(|e| AppError::bad_request("invalid_query", e.body_text()))?;
    let incoming = push
        .receiver
        .open(&q, &body)
        .map_err(|e| refused(&state, &appid, e))?;
    let kind = incoming.message.type_name().to_owned();
    let task = tokio::spawn(intake(state.clone(), appid.clone(), incoming));
    let (id, new) = task
        .await
        .map_err(|e| AppError::Internal(format!("push intake task: {e}")))??;
    if new {
        state.metrics.push(&appid, "accepted");
        state.outbox.notify_one();
        tracing::info!(appid, event = id, kind, "push stored");
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
    /// `delivered`, `pending` (due or waiting for a retry), `dead` (attempts exhausted;
    /// redeliverable) or `stored` (no webhook: pull only).
    pub status: String,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// The last delivery error, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl EventOut {
    /// The log's record as the API shows it; `has_webhook` tells `pending` from `stored`.
    /// The admin API's event listing shows events the same way.
    pub fn from_record(e: EventRecord, has_webhook: bool) -> Self {
        Self {
            status: match (&e.delivered_at, &e.dead_at) {
                (Some(_), _) => "delivered",
                (None, Some(_)) => "dead",
                _ if has_webhook => "pending",
                _ => "stored",
            }
            .into(),
            id: e.id,
            appid: e.appid,
            kind: e.kind,
            created_at: e.created_at / 1000,
            payload: serde_json::from_str(&e.payload).unwrap_or(serde_json::Value::Null),
            delivered: e.delivered_at.is_some(),
            attempts: e.attempts,
            last_error: e.last_error,
        }
    }
}

/// Whether `appid`'s pushes go to a webhook (else they are kept for pulling: `stored`).
pub(crate) fn has_webhook(state: &Push, appid: &str) -> bool {
    push_of(state, appid).is_ok_and(|p| p.webhook_url.is_some())
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
    params(("appid" = String, Path), ("after" = Option<i64>, Query, minimum = 0), ("limit" = Option<i64>, Query, minimum = 1, maximum = 500)),
    responses((status = 200, body = EventsPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn events(
    State(state): State<Push>,
    Path(appid): Path<String>,
    ip: ClientIp,
    headers: HeaderMap,
    q: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<EventsPage>, AppError> {
    crate::broker::handlers::authorize(&state.broker, &headers, ip, &appid, "events:read").await?;
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
    let webhook = has_webhook(&state, &appid);
    let events = rows
        .into_iter()
        .map(|e| EventOut::from_record(e, webhook))
        .collect();
    Ok(Json(EventsPage { events, next_after }))
}

/// The answer to a redelivery request.
#[derive(Debug, Serialize, ToSchema)]
pub struct RedeliverResponse {
    /// The event.
    pub id: i64,
    /// True: it is due again with a fresh attempt count.
    pub scheduled: bool,
}

/// Deliver an undelivered event again (a dead letter, or one waiting for its next retry) with
/// a fresh attempt count. Needs the `events:redeliver` scope.
#[utoipa::path(post, path = "/v1/apps/{appid}/events/{id}/redeliver", tag = "push", security(("client_key" = [])),
    params(("appid" = String, Path), ("id" = i64, Path)),
    responses((status = 200, body = RedeliverResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, description = "the app has no webhook", body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn redeliver(
    State(state): State<Push>,
    Path((appid, id)): Path<(String, i64)>,
    ip: ClientIp,
    headers: HeaderMap,
) -> Result<Json<RedeliverResponse>, AppError> {
    let (_, client) =
        crate::broker::handlers::authorize(&state.broker, &headers, ip, &appid, "events:redeliver")
            .await?;
    if push_of(&state, &appid)?.webhook_url.is_none() {
        return Err(AppError::Conflict(
            "this app has no webhook_url to deliver to".into(),
        ));
    }
    if !state.store.redeliver(&appid, id, now_ms(), None).await? {
        return Err(AppError::NotFound(format!(
            "event {id} of app {appid} does not exist or was delivered"
        )));
    }
    tracing::info!(client = %client.name, appid, event = id, "redelivery requested");
    state.outbox.notify_one();
    Ok(Json(RedeliverResponse {
        id,
        scheduled: true,
    }))
}

/// Routes of this area.
pub fn router() -> Router<Push> {
    Router::new()
        .route("/v1/apps/{appid}/push", get(verify).post(receive))
        .route("/v1/apps/{appid}/events", get(events))
        .route("/v1/apps/{appid}/events/{id}/redeliver", post(redeliver))
}
