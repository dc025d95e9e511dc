//! Login and sessions: `wx.login()` code → our own opaque session. The user's session_key stays
//! on the server, encrypted at rest; the session token is stored only as a key derived from its
//! SHA-256 (`hash_token`).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use weapp::crypto::DecryptOptions;
use weapp::SessionKey;

use super::service::Sessions;
use crate::broker::AppRuntime;
use crate::config::SessionTokens;
use crate::http::{auth_failed, auth_gate, bearer, ClientIp, JsonBody};
use crate::http::{AppError, ErrorBody};
use crate::keys::seal::user_aad;
use crate::shared::now_ms;
use crate::store::UserRecord;

/// `POST /v1/login` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// The mini program.
    #[schema(min_length = 1, max_length = 64)]
    pub appid: String,
    /// The code from `wx.login()`.
    #[schema(min_length = 1, max_length = 256)]
    pub code: String,
}

/// A new session.
#[derive(Serialize, ToSchema)]
pub struct LoginResponse {
    /// Send as `Authorization: Bearer <token>`.
    pub token: String,
    /// Unix seconds.
    pub expires_at: i64,
    /// The user's openid.
    pub openid: String,
    /// The user's unionid, when the app has one.
    pub unionid: Option<String>,
    /// A signed access token (JWT, ES256) your backend can verify alone with
    /// `/.well-known/jwks.json` — absent when the app has `access_tokens = false`. Valid until
    /// `access_token_expires_at`; get the next one from `POST /v1/session/refresh` with the
    /// session token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
    /// Unix seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_token_expires_at: Option<i64>,
}

impl std::fmt::Debug for LoginResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginResponse")
            .field("token", &"***")
            .field("expires_at", &self.expires_at)
            .field("openid", &self.openid)
            .field("unionid", &self.unionid)
            .field("access_token", &self.access_token.as_ref().map(|_| "***"))
            .field("access_token_expires_at", &self.access_token_expires_at)
            .finish()
    }
}

/// `POST /v1/session/refresh`.
#[derive(Serialize, ToSchema)]
pub struct RefreshResponse {
    /// A new signed access token (JWT, ES256).
    pub access_token: String,
    /// Unix seconds.
    pub access_token_expires_at: i64,
    /// When the session itself expires (Unix seconds): log in again after that.
    pub expires_at: i64,
}

impl std::fmt::Debug for RefreshResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefreshResponse")
            .field("access_token", &"***")
            .field("access_token_expires_at", &self.access_token_expires_at)
            .field("expires_at", &self.expires_at)
            .finish()
    }
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
    /// Accounts of the same person in other apps (by unionid); only with
    /// `expose_linked_accounts = true`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub linked: Option<Vec<LinkedAccount>>,
}

/// `POST /v1/logout/all`.
#[derive(Debug, Serialize, ToSchema)]
pub struct LogoutAllResponse {
    /// How many sessions of the user ended (this one included).
    pub revoked: u64,
}

/// `POST /v1/me/phone` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PhoneRequest {
    /// The code from the getPhoneNumber button.
    #[schema(min_length = 1, max_length = 256)]
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
    /// `encryptedData` from the mini program (base64).
    #[schema(max_length = 32768)]
    pub encrypted_data: String,
    /// `iv` from the mini program (base64 of 16 bytes).
    #[schema(max_length = 64)]
    pub iv: String,
}

/// A new session token of `kind`: `wa_` and the base64url of — timed — its issue time (Unix
/// ms, 6 bytes, big-endian) followed by 32 random bytes, or — random, as earlier releases —
/// the 32 random bytes alone.
///
/// The time is there for the database, not for anyone reading it: a session's key
/// ([`hash_token`]) starts with it, so the sessions index grows at its end instead of at a
/// random page per login (one random page written per login, not two — and the commit, the
/// WAL and the checkpoint write that much less).
fn new_session_token(kind: SessionTokens, now_ms: i64) -> String {
    let random = rand::random::<[u8; 32]>();
    match kind {
        SessionTokens::Timed => {
            let mut raw = [0u8; 38];
            raw[..6].copy_from_slice(&now_ms.to_be_bytes()[2..]);
            raw[6..].copy_from_slice(&random);
            format!("wa_{}", URL_SAFE_NO_PAD.encode(raw))
        }
        SessionTokens::Random => format!("wa_{}", URL_SAFE_NO_PAD.encode(random)),
    }
}

/// The key a session is stored and found by (never the token itself).
///
/// For a token of [`new_session_token`]: its 6-byte issue time, then the first 26 bytes of the
/// SHA-256 of the whole token (208 bits: finding a token for a key is still out of reach; the
/// token's own 256 random bits are what cannot be guessed). For any other bearer string — a
/// token of an earlier release (`wa_` + 32 random bytes), or a guess — the SHA-256 of it, as
/// before: earlier sessions keep working.
fn hash_token(token: &str) -> [u8; 32] {
    let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    let issued = token
        .strip_prefix("wa_")
        .filter(|rest| rest.len() == 51)
        // The first 8 characters are exactly the first 6 bytes.
        .and_then(|rest| URL_SAFE_NO_PAD.decode(&rest.as_bytes()[..8]).ok());
    match issued {
        Some(time) if time.len() == 6 => {
            let mut key = [0u8; 32];
            key[..6].copy_from_slice(&time);
            key[6..].copy_from_slice(&digest[..26]);
            key
        }
        _ => digest,
    }
}

/// Session-token use is recorded at most this often (not a write per request) — or a quarter
/// of the idle timeout, if that is shorter.
const TOUCH_EVERY_MS: i64 = 60_000;

/// A session's id as access tokens carry it (`sid`): base64url of its key ([`hash_token`]) —
/// what the server finds the session by, from which the token cannot be recovered.
pub(crate) fn session_id(hash: &[u8; 32]) -> String {
    URL_SAFE_NO_PAD.encode(hash)
}

/// The token hash a `sid` names.
pub(crate) fn hash_of_session_id(sid: &str) -> Option<[u8; 32]> {
    URL_SAFE_NO_PAD.decode(sid).ok()?.try_into().ok()
}

/// A signed access token for the session `hash` of `user`, when the app hands them out.
pub(crate) fn access_token_for(
    state: &Sessions,
    app: &AppRuntime,
    openid: &str,
    unionid: Option<&str>,
    hash: &[u8; 32],
    now: i64,
    session_expires_at: i64,
) -> Result<Option<(String, i64)>, AppError> {
    if !app.access_tokens {
        return Ok(None);
    }
    let iat = now / 1000;
    // Never past the session's end: its expiry, or its idle deadline counted from now.
    let idle_ms = (state.config.session_idle_timeout_secs as i64).saturating_mul(1000);
    let mut ends = session_expires_at;
    if idle_ms > 0 {
        ends = ends.min(now.saturating_add(idle_ms));
    }
    let exp = (iat + state.config.access_token_ttl_secs as i64).min(ends / 1000);
    let claims = crate::keys::jwt::Claims {
        iss: state.config.access_token_issuer.clone(),
        aud: app.appid.clone(),
        sub: openid.to_owned(),
        openid: openid.to_owned(),
        unionid: unionid.map(str::to_owned),
        sid: session_id(hash),
        iat,
        exp,
    };
    match state.keys.signing_keys().sign(&claims, now) {
        Some(t) => Ok(Some((t, exp))),
        None => {
            tracing::error!("no signing key can sign access tokens (see the start-up log)");
            Err(AppError::Unavailable {
                retry_after_secs: 1,
            })
        }
    }
}

/// What a bearer credential names: its session's key ([`hash_token`]), and the claims when it
/// is an access token (verified: signature, issuer, expiry).
///
/// # Errors
/// Why an access token does not verify (one whose `sid` names no session is malformed).
pub(crate) fn resolve_bearer(
    state: &Sessions,
    token: &str,
    now: i64,
) -> Result<([u8; 32], Option<crate::keys::jwt::Claims>), crate::keys::jwt::Invalid> {
    if token.starts_with("wa_") || !token.contains('.') {
        return Ok((hash_token(token), None));
    }
    let claims =
        state
            .keys
            .signing_keys()
            .verify(token, &state.config.access_token_issuer, now / 1000)?;
    let hash = hash_of_session_id(&claims.sid).ok_or(crate::keys::jwt::Invalid::Malformed)?;
    Ok((hash, Some(claims)))
}

/// The live session of `hash` (unexpired, not idle), provided an access token's claims name
/// its user and app.
pub(crate) async fn live_session(
    state: &Sessions,
    hash: &[u8; 32],
    claims: Option<&crate::keys::jwt::Claims>,
    now: i64,
) -> Result<Option<crate::store::SessionRecord>, AppError> {
    let idle_ms = (state.config.session_idle_timeout_secs as i64).saturating_mul(1000);
    let found = state.store.session_user(hash, now, idle_ms).await?;
    Ok(found.filter(|s| claims.is_none_or(|c| c.aud == s.user.appid && c.openid == s.user.openid)))
}

/// How a session was presented.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Presented {
    /// The opaque session token (`wa_…`).
    SessionToken,
    /// A signed access token of the session.
    AccessToken,
}

/// The user behind the request's session token; 401 for a missing, unknown, expired or idle
/// one (counted against the source's failed-authentication budget).
pub(crate) async fn session_user(
    state: &Sessions,
    headers: &HeaderMap,
    ip: ClientIp,
) -> Result<(UserRecord, [u8; 32]), AppError> {
    session_of(state, headers, ip, true)
        .await
        .map(|(s, hash, _)| (s.user, hash))
}

/// The session behind the request's bearer: its session token or (`allow_access_token`) an
/// access token of it, which must verify and whose session must still be alive.
async fn session_of(
    state: &Sessions,
    headers: &HeaderMap,
    ip: ClientIp,
    allow_access_token: bool,
) -> Result<(crate::store::SessionRecord, [u8; 32], Presented), AppError> {
    auth_gate(state, ip).await?;
    let Some(token) = bearer(headers) else {
        auth_failed(state, ip, "session").await;
        return Err(AppError::Unauthorized(
            "missing Authorization: Bearer <session token>".into(),
        ));
    };
    let now = now_ms();
    let (hash, presented, claims) = match resolve_bearer(state, token, now) {
        Ok((h, None)) => (h, Presented::SessionToken, None),
        Ok((h, Some(c))) if allow_access_token => (h, Presented::AccessToken, Some(c)),
        Ok((_, Some(_))) => {
            return Err(AppError::Unauthorized(
                "an access token cannot do this: send the session token".into(),
            ))
        }
        // Signed by us but past its time (or another issuer's setting), or signed by a key
        // no longer published (removed after a leak: every holder of its tokens comes back at
        // once, often from one NAT): a user coming back, not a guess — not counted against the
        // source. An unknown key cannot be guessed through: nothing verifies with it.
        Err(
            crate::keys::jwt::Invalid::Expired
            | crate::keys::jwt::Invalid::Issuer
            | crate::keys::jwt::Invalid::UnknownKey,
        ) => {
            return Err(AppError::Unauthorized(
                "access token is invalid or expired".into(),
            ))
        }
        Err(_) => {
            auth_failed(state, ip, "session").await;
            return Err(AppError::Unauthorized(
                "access token is invalid or expired".into(),
            ));
        }
    };
    let idle_ms = (state.config.session_idle_timeout_secs as i64).saturating_mul(1000);
    let found = live_session(state, &hash, claims.as_ref(), now).await?;
    match found {
        // A session of an app no longer served (disabled or deleted) is not honoured.
        Some(s) if state.broker.app(&s.user.appid).is_none() => Err(AppError::Unauthorized(
            "the session's app is not served".into(),
        )),
        Some(s) => {
            let every = if idle_ms > 0 {
                TOUCH_EVERY_MS.min(idle_ms / 4)
            } else {
                TOUCH_EVERY_MS
            };
            if now - s.last_seen_at > every {
                state.store.touch_session(&hash, now).await?;
            }
            Ok((s, hash, presented))
        }
        None => {
            // An expired or idle session is a user coming back, not a guess: only unknown
            // tokens count against the source. (A verified access token of an ended session
            // is not a guess either.)
            if presented == Presented::SessionToken && !state.store.session_exists(&hash).await? {
                auth_failed(state, ip, "session").await;
            }
            Err(AppError::Unauthorized(
                "session token is unknown or expired".into(),
            ))
        }
    }
}

fn app_of(state: &Sessions, appid: &str) -> Result<std::sync::Arc<AppRuntime>, AppError> {
    state
        .broker
        .app(appid)
        .ok_or_else(|| AppError::NotFound(format!("app {appid} is not configured")))
}

fn note_upstream(state: &Sessions, appid: &str, err: &weapp::Error) {
    state
        .metrics
        .upstream_error(appid, err.errcode().map_or(-2, |c| c.code()));
}

/// Exchange a `wx.login()` code for a session.
#[utoipa::path(post, path = "/v1/login", tag = "sessions", request_body = LoginRequest,
    responses((status = 200, body = LoginResponse), (status = 400, description = "malformed, or WeChat refused the code (unknown, expired, used, blocked): `wechat_errcode` says which", body = ErrorBody),
              (status = 404, description = "unknown app", body = ErrorBody), (status = 413, body = ErrorBody), (status = 429, body = ErrorBody), (status = 502, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn login(
    State(state): State<Sessions>,
    ip: ClientIp,
    JsonBody(req): JsonBody<LoginRequest>,
) -> Result<Json<LoginResponse>, AppError> {
    if let Err(retry_after_secs) = state.login_limiter.hit(ip.key()).await {
        state.metrics.login("-", "rate_limited");
        return Err(AppError::RateLimited { retry_after_secs });
    }
    let app = app_of(&state, &req.appid)?;
    // No key to sign with (a moment of a key's removal): refuse before the code is spent and
    // anything is written, so the mini program's retry with a new code succeeds.
    if app.access_tokens && !state.keys.signing_keys().can_sign(now_ms()) {
        tracing::error!("no signing key can sign access tokens (see the start-up log)");
        return Err(AppError::Unavailable {
            retry_after_secs: 1,
        });
    }
    if req.code.trim().is_empty() || req.code.len() > 256 {
        return Err(AppError::bad_request(
            "invalid_code",
            "code must be 1–256 characters",
        ));
    }
    // A merchant's mini program logs its users in through its platform.
    let exchanged = match &app.platform {
        Some(c) => {
            let platform = state.platforms.platform(c).ok_or_else(|| {
                AppError::NotFound(format!("no app {} (its platform is not served)", app.appid))
            })?;
            platform
                .component
                .code_to_session(&app.appid, &req.code)
                .await
        }
        None => app.client.auth().code_to_session(&req.code).await,
    };
    let session = match exchanged {
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
    let sealed = state.keys.keyring.seal(
        session.session_key.expose().as_bytes(),
        &user_aad(&app.appid, &session.openid),
    );
    let token = new_session_token(state.config.session_tokens, now);
    let hash = hash_token(&token);
    let expires_at = now + state.config.session_ttl_secs as i64 * 1000;
    let recorded = state
        .login_writer
        .write(crate::store::LoginWrite {
            appid: app.appid.clone(),
            openid: session.openid.clone(),
            unionid: session.unionid.clone(),
            session_key_enc: sealed,
            key_id: state.keys.keyring.current_id(),
            token_hash: hash.to_vec(),
            now,
            expires_at,
        })
        .await?;
    let access = access_token_for(
        &state,
        &app,
        &session.openid,
        recorded.unionid.as_deref(),
        &hash,
        now,
        expires_at,
    )?;
    state.metrics.login(&app.appid, "ok");
    tracing::info!(appid = %app.appid, user_id = recorded.user_id, "login");
    let (access_token, access_token_expires_at) = access.unzip();
    Ok(Json(LoginResponse {
        token,
        expires_at: expires_at / 1000,
        openid: session.openid,
        unionid: recorded.unionid,
        access_token,
        access_token_expires_at,
    }))
}

/// The signed-in user.
#[utoipa::path(get, path = "/v1/me", tag = "sessions", security(("session" = [])),
    responses((status = 200, body = MeResponse), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn me(
    State(state): State<Sessions>,
    ip: ClientIp,
    headers: HeaderMap,
) -> Result<Json<MeResponse>, AppError> {
    let (user, _) = session_user(&state, &headers, ip).await?;
    let linked = match &user.unionid {
        _ if !state.config.expose_linked_accounts => None,
        Some(u) => Some(
            state
                .store
                .users_by_unionid(u)
                .await?
                .into_iter()
                .filter(|(appid, openid)| !(appid == &user.appid && openid == &user.openid))
                .map(|(appid, openid)| LinkedAccount { appid, openid })
                .collect(),
        ),
        None => Some(Vec::new()),
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

/// A user's key in per-user limiters: the same on every instance and for every session and
/// access token of the user.
fn user_limit_key(user: &UserRecord) -> u128 {
    let d = Sha256::digest(format!("{}\0{}", user.appid, user.openid).as_bytes());
    u128::from_be_bytes(d[..16].try_into().expect("16 bytes"))
}

/// Bind the user's phone number from a getPhoneNumber code. Limited per user
/// (`phone_rate_limit_per_minute`): a call past the limit is answered 429 and never reaches
/// WeChat.
#[utoipa::path(post, path = "/v1/me/phone", tag = "sessions", security(("session" = [])), request_body = PhoneRequest,
    responses((status = 200, body = PhoneResponse), (status = 400, description = "malformed, or WeChat refused the code", body = ErrorBody), (status = 401, body = ErrorBody), (status = 413, body = ErrorBody), (status = 429, body = ErrorBody), (status = 502, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn phone(
    State(state): State<Sessions>,
    ip: ClientIp,
    headers: HeaderMap,
    JsonBody(req): JsonBody<PhoneRequest>,
) -> Result<Json<PhoneResponse>, AppError> {
    let (user, _) = session_user(&state, &headers, ip).await?;
    if req.code.trim().is_empty() || req.code.len() > 256 {
        return Err(AppError::bad_request(
            "invalid_code",
            "code must be 1–256 characters",
        ));
    }
    let app = app_of(&state, &user.appid)?;
    // Each call asks WeChat with the app's token: limited per user (so per session, per
    // access token, across sessions), and refused before WeChat is asked.
    if let Err(retry_after_secs) = state.phone_limiter.hit(user_limit_key(&user)).await {
        tracing::debug!(appid = %user.appid, user_id = user.id, "phone number request limited");
        return Err(AppError::RateLimited { retry_after_secs });
    }
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

/// The one answer to every decryption failure: which check failed (base64, length, padding,
/// JSON, watermark appid, age) is not told, so the endpoint is no padding oracle.
fn decrypt_failed() -> AppError {
    AppError::bad_request(
        "decrypt_failed",
        "the data cannot be decrypted with this session",
    )
}

/// Decrypt `encryptedData` (legacy open data such as getWeRunData) with the user's session_key.
///
/// encryptedData is **not authenticated**: AES-CBC without a MAC, under a key the mini program
/// also holds. Anyone with the session's session_key — the client itself — can produce data that
/// decrypts here; only the watermark (appid and timestamp) is checked. Do not trust it for
/// anything that matters: a phone number comes from `POST /v1/me/phone`, which asks WeChat.
/// Every failure gets the same answer; calls are limited per session.
#[utoipa::path(post, path = "/v1/me/decrypt", tag = "sessions", security(("session" = [])), request_body = DecryptRequest,
    responses((status = 200, description = "the decrypted JSON", body = Object), (status = 400, description = "the data cannot be decrypted with this session (one answer for every reason)", body = ErrorBody), (status = 401, body = ErrorBody), (status = 413, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn decrypt(
    State(state): State<Sessions>,
    ip: ClientIp,
    headers: HeaderMap,
    JsonBody(req): JsonBody<DecryptRequest>,
) -> Result<Json<serde_json::Value>, AppError> {
    let (user, hash) = session_user(&state, &headers, ip).await?;
    let session_key = u128::from_be_bytes(hash[..16].try_into().expect("16 bytes"));
    state
        .decrypt_limiter
        .hit(session_key)
        .await
        .map_err(|retry_after_secs| AppError::RateLimited { retry_after_secs })?;
    let app = app_of(&state, &user.appid)?;
    if req.encrypted_data.len() > 32 * 1024 || req.iv.len() > 64 {
        return Err(decrypt_failed());
    }
    let plain = state
        .keys
        .keyring
        .open(&user.session_key_enc, &user_aad(&user.appid, &user.openid))
        .ok_or_else(|| {
            AppError::Internal(format!(
                "stored session_key of user {} does not open with the data keys",
                user.id
            ))
        })?;
    let key = SessionKey::new(
        String::from_utf8(plain)
            .map_err(|_| AppError::Internal("stored session_key is not UTF-8".into()))?,
    );
    let options = DecryptOptions {
        max_age_secs: (state.config.decrypt_max_age_secs > 0)
            .then_some(state.config.decrypt_max_age_secs),
        ..DecryptOptions::default()
    };
    match app
        .client
        .auth()
        .decrypt(&key, &req.iv, &req.encrypted_data, &options)
    {
        Ok(value) => Ok(Json(value)),
        Err(_) => {
            // Which check failed is the oracle's answer: not even the log keeps it.
            tracing::debug!(appid = %user.appid, user_id = user.id, "decrypt refused");
            Err(decrypt_failed())
        }
    }
}

/// A new access token for the session. Only the session token refreshes: an access token
/// cannot extend itself, and once the session ends (logout, log out everywhere, expiry, idle
/// timeout, the app disabled) refreshing fails.
#[utoipa::path(post, path = "/v1/session/refresh", tag = "sessions", security(("session" = [])),
    responses((status = 200, body = RefreshResponse), (status = 400, description = "the app does not hand out access tokens", body = ErrorBody), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn refresh(
    State(state): State<Sessions>,
    ip: ClientIp,
    headers: HeaderMap,
) -> Result<Json<RefreshResponse>, AppError> {
    if let Err(retry_after_secs) = state.login_limiter.hit(ip.key()).await {
        return Err(AppError::RateLimited { retry_after_secs });
    }
    let (session, hash, _) = session_of(&state, &headers, ip, false).await?;
    let app = app_of(&state, &session.user.appid)?;
    let now = now_ms();
    let Some((access_token, exp)) = access_token_for(
        &state,
        &app,
        &session.user.openid,
        session.user.unionid.as_deref(),
        &hash,
        now,
        session.expires_at,
    )?
    else {
        return Err(AppError::bad_request(
            "access_tokens_off",
            format!("app {} does not hand out access tokens", app.appid),
        ));
    };
    Ok(Json(RefreshResponse {
        access_token,
        access_token_expires_at: exp,
        expires_at: session.expires_at / 1000,
    }))
}

/// End the session.
#[utoipa::path(post, path = "/v1/logout", tag = "sessions", security(("session" = [])),
    responses((status = 204, description = "session ended"), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn logout(
    State(state): State<Sessions>,
    ip: ClientIp,
    headers: HeaderMap,
) -> Result<StatusCode, AppError> {
    let (_, hash) = session_user(&state, &headers, ip).await?;
    state.store.delete_session(&hash).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Log out everywhere: end every session of this user (this one included). Tokens already
/// issued stop working at once.
#[utoipa::path(post, path = "/v1/logout/all", tag = "sessions", security(("session" = [])),
    responses((status = 200, body = LogoutAllResponse), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn logout_all(
    State(state): State<Sessions>,
    ip: ClientIp,
    headers: HeaderMap,
) -> Result<Json<LogoutAllResponse>, AppError> {
    let (user, _) = session_user(&state, &headers, ip).await?;
    let revoked = state.store.delete_user_sessions(user.id, None).await?;
    tracing::info!(appid = %user.appid, user_id = user.id, revoked, "logged out everywhere");
    Ok(Json(LogoutAllResponse { revoked }))
}

/// Routes of this area.
pub fn router(_state: &Sessions) -> Router<Sessions> {
    Router::new()
        .route("/v1/login", post(login))
        .route("/v1/me", get(me))
        .route("/v1/me/phone", post(phone))
        .route("/v1/me/decrypt", post(decrypt))
        .route("/v1/logout", post(logout))
        .route("/v1/logout/all", post(logout_all))
        .route("/v1/session/refresh", post(refresh))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_token_keys_its_session_by_its_issue_time() {
        let now = 1_790_000_000_123_i64;
        let token = new_session_token(SessionTokens::Timed, now);
        assert_eq!(token.len(), 54);
        let key = hash_token(&token);
        assert_eq!(&key[..6], &now.to_be_bytes()[2..], "the issue time first");
        let digest = Sha256::digest(token.as_bytes());
        assert_eq!(&key[6..], &digest[..26]);
        // Later tokens sort after earlier ones: the index grows at its end.
        assert!(hash_token(&new_session_token(SessionTokens::Timed, now + 1)) > key);
        // 256 random bits each.
        assert_ne!(new_session_token(SessionTokens::Timed, now), token);
    }

    #[test]
    fn other_bearer_strings_are_keyed_by_their_whole_sha256() {
        // A token of an earlier release (`wa_` and 32 random bytes), as `random` issues them.
        let earlier = new_session_token(SessionTokens::Random, 0);
        assert_eq!(earlier.len(), 46);
        let sha = |t: &str| -> [u8; 32] { Sha256::digest(t.as_bytes()).into() };
        assert_eq!(hash_token(&earlier), sha(&earlier));
        // The new length but not base64url, or not `wa_`: the plain hash (and no panic on
        // a multi-byte character where the time would be).
        for odd in [
            format!("wa_{}", "*".repeat(51)),
            format!("wa_é{}", "A".repeat(49)),
            format!("wb_{}", "A".repeat(51)),
        ] {
            assert_eq!(hash_token(&odd), sha(&odd), "{odd}");
        }
    }
}
