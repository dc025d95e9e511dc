//! Token introspection (RFC 7662), for backends that prefer asking weapp-server whether a
//! session or access token is valid over checking access tokens against the JWKS.

use axum::extract::rejection::FormRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Form, Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::handlers::{live_session, resolve_bearer, session_id};
use super::service::Sessions;
use crate::http::{auth_failed, auth_gate, bearer, ClientIp};
use crate::http::{AppError, ErrorBody};
use crate::shared::now_ms;

/// `POST /v1/introspect` (form-encoded, RFC 7662). `Debug` never shows the token.
#[derive(Deserialize, ToSchema)]
pub struct IntrospectRequest {
    /// A session token (`wa_…`) or an access token (JWT).
    #[schema(max_length = 4096)]
    pub token: String,
    /// `access_token` or `refresh_token` (the session token); only a hint.
    #[serde(default)]
    pub token_type_hint: Option<String>,
}

impl std::fmt::Debug for IntrospectRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntrospectRequest")
            .field("token", &"***")
            .field("token_type_hint", &self.token_type_hint)
            .finish()
    }
}

/// The answer to an introspection (RFC 7662). Inactive tokens carry nothing but
/// `active: false`, whatever the reason (unknown, expired, revoked, forged, another app's).
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct IntrospectResponse {
    /// Whether the token is valid now.
    pub active: bool,
    /// `access_token` (a JWT) or `refresh_token` (a session token).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_type: Option<&'static str>,
    /// The issuer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// The user's openid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// The appid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    /// Unix seconds when it stops being valid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    /// Unix seconds when it was issued (access tokens).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    /// The user's openid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub openid: Option<String>,
    /// The user's unionid, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unionid: Option<String>,
    /// The session.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
}

/// Is this token valid, and whose is it? For backends holding a client key with the
/// `sessions:introspect` scope. A token of an app the client may not use is answered
/// `active: false`, as is a revoked session's access token that has not expired yet.
#[utoipa::path(post, path = "/v1/introspect", tag = "tokens", security(("client_key" = [])),
    request_body(content = IntrospectRequest, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, body = IntrospectResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn introspect(
    State(state): State<Sessions>,
    ip: ClientIp,
    headers: HeaderMap,
    form: Result<Form<IntrospectRequest>, FormRejection>,
) -> Result<Response, AppError> {
    auth_gate(&state, ip).await?;
    let Some(client) = bearer(&headers).and_then(|key| state.broker.broker_client(key)) else {
        auth_failed(&state, ip, "client_key").await;
        return Err(AppError::Unauthorized(
            "missing or unknown client key (Authorization: Bearer <client key>)".into(),
        ));
    };
    if !client.has_scope("sessions:introspect") {
        tracing::warn!(client = %client.name, "client lacks the scope sessions:introspect");
        return Err(AppError::Forbidden(format!(
            "client {} lacks the scope sessions:introspect",
            client.name
        )));
    }
    let req = match form {
        Ok(Form(req)) => req,
        // Not a form (415), over the body limit (413): axum's answer, put in the JSON envelope
        // like every rejection. A form without a token: RFC 7662's invalid_request.
        Err(e)
            if !matches!(
                e.status(),
                StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY
            ) =>
        {
            return Ok(e.into_response())
        }
        Err(e) => return Err(AppError::bad_request("invalid_request", e.body_text())),
    };
    if req.token.len() > 4096 {
        return Err(AppError::bad_request(
            "invalid_request",
            "token is longer than 4096 characters",
        ));
    }
    let inactive = || Ok(Json(IntrospectResponse::default()).into_response());
    let now = now_ms();
    let token = req.token.trim();
    if token.is_empty() {
        return inactive();
    }
    let Ok((hash, claims)) = resolve_bearer(&state, token, now) else {
        return inactive();
    };
    let Some(session) = live_session(&state, &hash, claims.as_ref(), now).await? else {
        return inactive();
    };
    let user = session.user;
    if !client.may_use(&user.appid) || state.broker.app(&user.appid).is_none() {
        return inactive();
    }
    Ok(Json(match claims {
        Some(c) => IntrospectResponse {
            active: true,
            token_type: Some("access_token"),
            iss: Some(c.iss),
            sub: Some(c.sub),
            aud: Some(c.aud),
            exp: Some(c.exp),
            iat: Some(c.iat),
            openid: Some(c.openid),
            unionid: c.unionid,
            sid: Some(c.sid),
        },
        None => IntrospectResponse {
            active: true,
            token_type: Some("refresh_token"),
            iss: Some(state.config.access_token_issuer.clone()),
            sub: Some(user.openid.clone()),
            aud: Some(user.appid),
            exp: Some(session.expires_at / 1000),
            iat: None,
            openid: Some(user.openid),
            unionid: user.unionid,
            sid: Some(session_id(&hash)),
        },
    })
    .into_response())
}

/// Routes of this area.
pub fn router() -> Router<Sessions> {
    Router::new().route("/v1/introspect", post(introspect))
}
