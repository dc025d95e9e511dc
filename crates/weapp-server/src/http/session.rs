//! Login and sessions: `wx.login()` code → our own opaque session. The user's session_key stays
//! on the server, encrypted at rest; the session token is stored only as its SHA-256.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use weapp::crypto::DecryptOptions;
use weapp::SessionKey;

use super::{bearer, client_ip, JsonBody};
use crate::error::{AppError, ErrorBody};
use crate::state::{now_ms, AppRuntime, AppState};
use crate::store::UserRecord;

/// `POST /v1/login` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// The mini program.
    pub appid: String,
    /// The code from `wx.login()`.
    pub code: String,
}

/// A new session.
#[derive(Debug, Serialize, ToSchema)]
pub struct LoginResponse {
    /// Send as `Authorization: Bearer <token>`.
    pub token: String,
    /// Unix seconds.
    pub expires_at: i64,
    /// The user's openid.
    pub openid: String,
    /// The user's unionid, when the app has one.
    pub unionid: Option<String>,
}

/// Another app's account of the same person (same unionid).
#[derive(Debug, Serialize, ToSchema)]
pub struct LinkedAccount {
    /// The app.
    pub appid: String,
    /// openid in that app.
    pub openid: String,
}

/// `GET /v1/me`.
#[derive(Debug, Serialize, ToSchema)]
pub struct MeResponse {
    /// The app of this session.
    pub appid: String,
    /// openid.
    pub openid: String,
    /// unionid, if known.
    pub unionid: Option<String>,
    /// Bound phone number, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone_number: Option<String>,
    /// Unix seconds of the first login.
    pub created_at: i64,
    /// Accounts of the same person in other apps (by unionid).
    pub linked: Vec<LinkedAccount>,
}

/// `POST /v1/me/phone` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PhoneRequest {
    /// The code from the getPhoneNumber button.
    pub code: String,
}

/// The bound phone number.
#[derive(Debug, Serialize, ToSchema)]
pub struct PhoneResponse {
    /// With country code for foreign numbers.
    pub phone_number: String,
    /// Without country code.
    pub pure_phone_number: String,
    /// Country code.
    pub country_code: String,
}

/// `POST /v1/me/decrypt` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecryptRequest {
    /// `encryptedData` from the mini program.
    pub encrypted_data: String,
    /// `iv` from the mini program.
    pub iv: String,
}

fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The user behind the request's session token; 401 for a missing, unknown or expired one.
async fn session_user(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<(UserRecord, [u8; 32]), AppError> {
    let token = bearer(headers).ok_or_else(|| {
        AppError::Unauthorized("missing Authorization: Bearer <session token>".into())
    })?;
    let hash = hash_token(token);
    match state.store.session_user(&hash, now_ms()).await? {
        Some((user, _)) => Ok((user, hash)),
        None => Err(AppError::Unauthorized(
            "session token is unknown or expired".into(),
        )),
    }
}

fn app_of<'s>(
    state: &'s AppState,
    appid: &str,
) -> Result<&'s std::sync::Arc<AppRuntime>, AppError> {
    state
        .app(appid)
        .ok_or_else(|| AppError::NotFound(format!("app {appid} is not configured")))
}

fn note_upstream(state: &AppState, appid: &str, err: &weapp::Error) {
    state
        .metrics
        .upstream_error(appid, err.errcode().map_or(-2, |c| c.code()));
}

/// Rejects logins over the per-IP rate.
async fn limit_login(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(ip) = client_ip(&state, &req) {
        if let Err(retry_after_secs) = state.login_limiter.check(ip) {
            state.metrics.login("-", "rate_limited");
            return AppError::RateLimited { retry_after_secs }.into_response();
        }
    }
    next.run(req).await
}

/// Exchange a `wx.login()` code for a session.
#[utoipa::path(post, path = "/v1/login", tag = "sessions", request_body = LoginRequest,
    responses((status = 200, body = LoginResponse), (status = 400, description = "invalid or used code", body = ErrorBody),
              (status = 404, description = "unknown app", body = ErrorBody), (status = 429, body = ErrorBody), (status = 502, body = ErrorBody)))]
pub async fn login(
    State(state): State<AppState>,
    JsonBody(req): JsonBody<LoginRequest>,
) -> Result<Json<LoginResponse>, AppError> {
    let app = app_of(&state, &req.appid)?;
    if req.code.trim().is_empty() || req.code.len() > 256 {
        return Err(AppError::bad_request(
            "invalid_code",
            "code must be 1–256 characters",
        ));
    }
    let session = match app.client.auth().code_to_session(&req.code).await {
        Ok(s) => s,
        Err(e) => {
            note_upstream(&state, &app.appid, &e);
            let outcome = if e
                .errcode()
                .is_some_and(|c| matches!(c.code(), 40029 | 40163 | 40226))
            {
                "invalid_code"
            } else {
                "upstream_error"
            };
            state.metrics.login(&app.appid, outcome);
            return Err(e.into());
        }
    };
    let now = now_ms();
    let sealed = state.data_key.seal(session.session_key.expose().as_bytes());
    let user = state
        .store
        .upsert_user(
            &app.appid,
            &session.openid,
            session.unionid.as_deref(),
            &sealed,
            now,
        )
        .await?;
    let token = format!("wa_{}", URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>()));
    let expires_at = now + state.config.session_ttl_secs as i64 * 1000;
    state
        .store
        .create_session(&hash_token(&token), user.id, now, expires_at)
        .await?;
    state.metrics.login(&app.appid, "ok");
    tracing::info!(appid = %app.appid, user_id = user.id, "login");
    Ok(Json(LoginResponse {
        token,
        expires_at: expires_at / 1000,
        openid: user.openid,
        unionid: user.unionid,
    }))
}

/// The signed-in user.
#[utoipa::path(get, path = "/v1/me", tag = "sessions", security(("session" = [])),
    responses((status = 200, body = MeResponse), (status = 401, body = ErrorBody)))]
pub async fn me(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<MeResponse>, AppError> {
    let (user, _) = session_user(&state, &headers).await?;
    let linked = match &user.unionid {
        Some(u) => state
            .store
            .users_by_unionid(u)
            .await?
            .into_iter()
            .filter(|(appid, openid)| !(appid == &user.appid && openid == &user.openid))
            .map(|(appid, openid)| LinkedAccount { appid, openid })
            .collect(),
        None => Vec::new(),
    };
    Ok(Json(MeResponse {
        appid: user.appid,
        openid: user.openid,
        unionid: user.unionid,
        phone_number: user.phone_number,
        created_at: user.created_at / 1000,
        linked,
    }))
}

/// Bind the user's phone number from a getPhoneNumber code.
#[utoipa::path(post, path = "/v1/me/phone", tag = "sessions", security(("session" = [])), request_body = PhoneRequest,
    responses((status = 200, body = PhoneResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn phone(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<PhoneRequest>,
) -> Result<Json<PhoneResponse>, AppError> {
    let (user, _) = session_user(&state, &headers).await?;
    if req.code.trim().is_empty() {
        return Err(AppError::bad_request(
            "invalid_code",
            "code must not be empty",
        ));
    }
    let app = app_of(&state, &user.appid)?;
    let info = app
        .client
        .auth()
        .get_phone_number(&req.code)
        .await
        .inspect_err(|e| note_upstream(&state, &app.appid, e))?;
    state
        .store
        .set_phone(
            user.id,
            &info.phone_number,
            &info.pure_phone_number,
            &info.country_code,
            now_ms(),
        )
        .await?;
    Ok(Json(PhoneResponse {
        phone_number: info.phone_number,
        pure_phone_number: info.pure_phone_number,
        country_code: info.country_code,
    }))
}

/// Decrypt `encryptedData` with the user's session_key (the watermark must name this app).
#[utoipa::path(post, path = "/v1/me/decrypt", tag = "sessions", security(("session" = [])), request_body = DecryptRequest,
    responses((status = 200, description = "the decrypted JSON", body = Object), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn decrypt(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<DecryptRequest>,
) -> Result<Json<serde_json::Value>, AppError> {
    let (user, _) = session_user(&state, &headers).await?;
    let app = app_of(&state, &user.appid)?;
    let plain = state.data_key.open(&user.session_key_enc).ok_or_else(|| {
        AppError::Internal(format!(
            "stored session_key of user {} cannot be opened with the data key",
            user.id
        ))
    })?;
    let key = SessionKey::new(
        String::from_utf8(plain)
            .map_err(|_| AppError::Internal("stored session_key is not UTF-8".into()))?,
    );
    let value = app.client.auth().decrypt(
        &key,
        &req.iv,
        &req.encrypted_data,
        &DecryptOptions::default(),
    )?;
    Ok(Json(value))
}

/// End the session.
#[utoipa::path(post, path = "/v1/logout", tag = "sessions", security(("session" = [])),
    responses((status = 204, description = "session ended"), (status = 401, body = ErrorBody)))]
pub async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<StatusCode, AppError> {
    let (_, hash) = session_user(&state, &headers).await?;
    state.store.delete_session(&hash).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Routes of this area; `POST /v1/login` sits behind the per-IP limiter.
pub fn router(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/v1/login", post(login))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            limit_login,
        ))
        .route("/v1/me", get(me))
        .route("/v1/me/phone", post(phone))
        .route("/v1/me/decrypt", post(decrypt))
        .route("/v1/logout", post(logout))
}
