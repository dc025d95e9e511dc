//! `POST /v1/platforms/{component_appid}/events`: WeChat's pushes to a third-party platform's
//! authorization-event URL — tickets (stored, sealed, in the database) and merchants'
//! authorization events (the refresh token fetched with `api_query_auth` and stored before
//! `success` is answered; a de-authorization erases it).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use weapp::open_platform::{ComponentEvent, ReceiveError};
use weapp::push::{PushError, PushQuery};

use super::runtime::PlatformRuntime;
use super::service::Platforms;
use crate::http::{AppError, ErrorBody};
use crate::push::handlers::{refused, reserve, settle, Refusal};
use crate::shared::now_ms;
use crate::store::PlatformAuthorizer;

/// Receive a push to the platform's authorization-event URL: verified (`msg_signature` over
/// the ciphertext, the timestamp window) and decrypted with the platform's Token and
/// EncodingAESKey, then its (timestamp, nonce) reserved in the platform's replay memory — the
/// one its merchants' pushes share, fleet-wide through Redis — so a replay is refused (401, as
/// for an app's push) before anything is stored or asked of WeChat. `success` is answered only
/// once what it carries is stored; a push that could not be is released for WeChat's retry.
#[utoipa::path(post, path = "/v1/platforms/{component_appid}/events", tag = "platforms",
    params(("component_appid" = String, Path, description = "the platform"), PushQueryDoc),
    request_body(content = String, content_type = "text/xml", description = "`<xml><AppId/><Encrypt/></xml>`"),
    responses((status = 200, description = "`success`", body = String), (status = 400, description = "forged, stale or malformed", body = ErrorBody), (status = 401, description = "a replay", body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody), (status = 503, description = "not stored, or the same push is being handled right now: WeChat pushes again", body = ErrorBody)))]
pub async fn events(
    State(state): State<Platforms>,
    Path(component_appid): Path<String>,
    Query(q): Query<PushQuery>,
    body: Bytes,
) -> Result<Response, AppError> {
    let platform = state.platform(&component_appid).ok_or_else(|| {
        AppError::NotFound(format!("platform {component_appid} is not configured"))
    })?;
    // Authentic and fresh before its nonce is reserved: a forgery cannot spend WeChat's.
    if let Err(e) = platform.component.open(&q, &body) {
        tracing::warn!(platform = %component_appid, error = %e, "platform event refused");
        return Err(AppError::bad_request("invalid_push", e.to_string()));
    }
    // In a task of its own: a caller that goes away cannot leave a reservation behind that
    // would refuse WeChat's retry.
    tokio::spawn(intake(state, platform, component_appid, q, body))
        .await
        .map_err(|e| AppError::Internal(format!("platform event task: {e}")))?
}

/// Reserves the event's (timestamp, nonce), handles it, and keeps the reservation if it was
/// handled (released otherwise, for WeChat's retry).
async fn intake(
    state: Platforms,
    platform: Arc<PlatformRuntime>,
    component_appid: String,
    q: PushQuery,
    body: Bytes,
) -> Result<Response, AppError> {
    let replay_key = q.replay_key();
    let receiver = &platform.merchant_pushes;
    let reservation = match reserve(&state.push, receiver, &component_appid, &replay_key).await {
        Ok(r) => r,
        Err(Refusal::Replay) => {
            return Err(refused(&state.push, &component_appid, PushError::Replayed));
        }
        Err(Refusal::InFlight) => {
            state.metrics.push(&component_appid, "in_flight");
            return Err(AppError::Unavailable {
                retry_after_secs: 1,
            });
        }
    };
    let handled = handle(&state, &platform, &component_appid, &q, &body).await;
    if let Some(r) = reservation {
        settle(&state.push, receiver, &replay_key, r, handled.is_ok()).await;
    }
    handled
}

/// Stores what an event carries (the ticket; a merchant's refresh token, fetched with
/// `api_query_auth`; a de-authorization) and logs it.
async fn handle(
    state: &Platforms,
    platform: &PlatformRuntime,
    component_appid: &str,
    q: &PushQuery,
    body: &[u8],
) -> Result<Response, AppError> {
    let component = &platform.component;
    let event = match component.receive(q, body).await {
        Ok(e) => e,
        Err(ReceiveError::Push(e)) => {
            tracing::warn!(platform = %component_appid, error = %e, "platform event refused");
            return Err(AppError::bad_request("invalid_push", e.to_string()));
        }
        Err(e) => {
            tracing::error!(platform = %component_appid, error = %e, "platform event not stored");
            return Err(AppError::Unavailable {
                retry_after_secs: 1,
            });
        }
    };
    match &event {
        ComponentEvent::VerifyTicket { .. } => {
            tracing::debug!(platform = %component_appid, "component_verify_ticket stored");
        }
        ComponentEvent::Authorized(a) | ComponentEvent::UpdateAuthorized(a) => {
            // The refresh token is saved (sealed) by query_auth before it returns.
            let info = component
                .query_auth(&a.authorization_code)
                .await
                .map_err(|e| {
                    tracing::error!(platform = %component_appid, authorizer = %a.authorizer_appid, error = %e, "api_query_auth failed; WeChat will push again");
                    AppError::Unavailable { retry_after_secs: 1 }
                })?;
            let func_ids: Vec<i64> = info
                .func_info
                .iter()
                .map(|f| f.funcscope_category.id)
                .collect();
            state
                .store
                .put_platform_authorizer(&PlatformAuthorizer {
                    component_appid: component_appid.to_owned(),
                    authorizer_appid: info.authorizer_appid.clone(),
                    refresh_sealed: None,
                    key_id: None,
                    authorized: true,
                    func_ids: serde_json::to_string(&func_ids).unwrap_or_else(|_| "[]".into()),
                    auth_time: a.create_time,
                    updated_at: now_ms(),
                    rev: 0,
                })
                .await?;
            tracing::info!(platform = %component_appid, authorizer = %info.authorizer_appid, event = event.info_type(), "merchant authorized the platform");
        }
        ComponentEvent::Unauthorized {
            authorizer_appid,
            create_time,
        } => {
            // Applied only if the authorization we hold is not newer (a replay within the
            // window, or WeChat's late retry after the merchant authorized again, is answered
            // and ignored) — decided by the database in the same statement, so a
            // re-authorization stored meanwhile by another instance cannot be erased.
            let applied = state
                .store
                .deauthorize_platform_authorizer_if(
                    component_appid,
                    authorizer_appid,
                    *create_time,
                    i64::MAX,
                    now_ms(),
                )
                .await
                .map_err(|e| {
                    tracing::error!(platform = %component_appid, error = %e, "de-authorization not stored");
                    AppError::Unavailable { retry_after_secs: 1 }
                })?;
            if !applied {
                tracing::warn!(platform = %component_appid, authorizer = %authorizer_appid, "an unauthorized event older than the merchant's authorization (or for an unknown merchant) ignored");
                return Ok((StatusCode::OK, "success").into_response());
            }
            component.drop_authorizer(authorizer_appid);
            tracing::info!(platform = %component_appid, authorizer = %authorizer_appid, "merchant de-authorized the platform");
        }
        other => {
            tracing::info!(platform = %component_appid, info_type = other.info_type(), "platform event");
        }
    }
    if !matches!(event, ComponentEvent::VerifyTicket { .. }) {
        // The platform's event log (and its webhook): who authorized, changed or left — never
        // the authorization code, which is redeemable for a refresh token.
        let (authorizer, create_time) = match &event {
            ComponentEvent::Authorized(a) | ComponentEvent::UpdateAuthorized(a) => {
                (Some(a.authorizer_appid.clone()), a.create_time)
            }
            ComponentEvent::Unauthorized {
                authorizer_appid,
                create_time,
            } => (Some(authorizer_appid.clone()), *create_time),
            ComponentEvent::FastRegister { appid, .. } => (appid.clone(), 0),
            _ => (None, 0),
        };
        let payload = serde_json::json!({
            "info_type": event.info_type(),
            "authorizer_appid": authorizer,
            "create_time": create_time,
        });
        let webhook = platform.config.webhook_url.is_some();
        state
            .store
            .insert_event(
                component_appid,
                &format!(
                    "{}:{}:{create_time}",
                    event.info_type(),
                    authorizer.as_deref().unwrap_or("")
                ),
                event.info_type(),
                &payload.to_string(),
                now_ms(),
                if webhook { 0 } else { crate::store::NEVER },
            )
            .await?;
        state.push.outbox.notify_one();
        // This instance serves (or stops serving) the merchant at once; the others at their
        // next registry poll.
        if let Some(appid) = &authorizer {
            if let Err(e) = state.sync_merchant(appid).await {
                tracing::warn!(error = %e, "merchant not reloaded; the next registry poll will");
            }
            // A (re-)authorization kills the merchant's authorizer tokens at WeChat at once:
            // a new one from the new refresh token now, in the shared store, so broker callers
            // are not handed a dead one until it expires.
            if matches!(
                event,
                ComponentEvent::Authorized(_) | ComponentEvent::UpdateAuthorized(_)
            ) {
                if let Some(app) = state
                    .broker
                    .app(appid)
                    .filter(|a| a.platform.as_deref() == Some(component_appid))
                {
                    if let Err(e) = app.manager.force_refresh().await {
                        tracing::warn!(platform = %component_appid, authorizer = %appid, error = %e, "authorizer token not renewed after the authorization; callers' 40001 reports renew it");
                    }
                }
            }
        }
    }
    Ok((StatusCode::OK, "success").into_response())
}

/// The query string of a push (documentation only).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct PushQueryDoc {
    /// Unix seconds.
    timestamp: Option<String>,
    /// Random.
    nonce: Option<String>,
    /// `sha1(sort(token, timestamp, nonce))`.
    signature: Option<String>,
    /// `aes`.
    encrypt_type: Option<String>,
    /// `sha1(sort(token, timestamp, nonce, Encrypt))`.
    msg_signature: Option<String>,
}

/// The app of `appid` if it is a merchant of the platform `component_appid`.
fn merchant_of(state: &Platforms, component_appid: &str, appid: &str) -> Result<(), AppError> {
    match state.broker.app(appid) {
        Some(a) if a.platform.as_deref() == Some(component_appid) => Ok(()),
        _ => Err(AppError::NotFound(format!(
            "{appid} is not a merchant of platform {component_appid}"
        ))),
    }
}

/// Receive a push of a merchant's mini program at the platform's message URL
/// (`…/apps/$APPID$/push` in the platform's settings): verified and decrypted with the
/// platform's Token and key (safe mode), stored in the merchant's event log and delivered to
/// the platform's webhook — like an app's own pushes.
#[utoipa::path(post, path = "/v1/platforms/{component_appid}/apps/{appid}/push", tag = "platforms",
    params(("component_appid" = String, Path, description = "the platform"), ("appid" = String, Path, description = "the merchant's mini program"), PushQueryDoc),
    request_body(content = String, content_type = "text/xml", description = "`<xml><ToUserName/><Encrypt/></xml>`"),
    responses((status = 200, description = "`success`", body = String), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, description = "a replay", body = ErrorBody), (status = 413, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn merchant_push(
    State(state): State<Platforms>,
    Path((component_appid, appid)): Path<(String, String)>,
    q: Result<Query<PushQuery>, axum::extract::rejection::QueryRejection>,
    body: Bytes,
) -> Result<Response, AppError> {
    merchant_of(&state, &component_appid, &appid)?;
    crate::push::handlers::receive(State(state.push.clone()), Path(appid), q, body).await
}

/// Routes of this area.
pub fn router() -> Router<Platforms> {
    Router::new()
        .route("/v1/platforms/{component_appid}/events", post(events))
        .route(
            "/v1/platforms/{component_appid}/apps/{appid}/push",
            post(merchant_push),
        )
}
