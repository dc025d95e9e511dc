//! The central token broker (中控): authenticated clients read an app's current access token
//! from memory, report a failing token for a compare-and-swap refresh, or use the
//! WeChat-compatible mirror so existing SDKs switch by changing their base URL.

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use weapp::token::StoredToken;
use weapp::AccessToken;

use super::{bearer, JsonBody};
use crate::error::{AppError, ErrorBody};
use crate::state::{now_ms, AppRuntime, AppState};

/// An access token as the broker hands it out.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    /// The token.
    pub access_token: String,
    /// Unix seconds when it expires.
    pub expires_at: i64,
    /// Seconds until it expires.
    pub expires_in: i64,
}

impl From<&StoredToken> for TokenResponse {
    fn from(t: &StoredToken) -> Self {
        TokenResponse {
            access_token: t.access_token.expose().to_owned(),
            expires_at: t.expires_at_ms / 1000,
            expires_in: (t.expires_at_ms - now_ms()) / 1000,
        }
    }
}

/// `POST /v1/apps/{appid}/access_token/invalidate` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InvalidateRequest {
    /// The token WeChat rejected (40001/40014/42001).
    pub access_token: String,
}

/// The answer to an invalidation.
#[derive(Debug, Serialize, ToSchema)]
pub struct InvalidateResponse {
    /// The current token after the report.
    #[serde(flatten)]
    pub token: TokenResponse,
    /// False when the reported token was no longer current (someone already refreshed).
    pub refreshed: bool,
}

/// Authenticates a broker client and checks it may read `appid`.
pub(crate) fn authorize<'s>(
    state: &'s AppState,
    headers: &HeaderMap,
    appid: &str,
) -> Result<&'s AppRuntime, AppError> {
    let key = bearer(headers).ok_or_else(|| {
        AppError::Unauthorized("missing Authorization: Bearer <client key>".into())
    })?;
    let client = state
        .broker_client(key)
        .ok_or_else(|| AppError::Unauthorized("unknown client key".into()))?;
    if !client.may_read(appid) {
        tracing::warn!(client = %client.name, appid, "client asked for an app it may not read");
        return Err(AppError::Forbidden(format!(
            "client {} may not read app {appid}",
            client.name
        )));
    }
    state
        .app(appid)
        .map(|a| &**a)
        .ok_or_else(|| AppError::NotFound(format!("app {appid} is not configured")))
}

/// The app's current access token, served from memory.
#[utoipa::path(get, path = "/v1/apps/{appid}/access_token", tag = "broker", security(("client_key" = [])),
    params(("appid" = String, Path, description = "the mini program")),
    responses((status = 200, body = TokenResponse), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 502, body = ErrorBody)))]
pub async fn access_token(
    State(state): State<AppState>,
    Path(appid): Path<String>,
    headers: HeaderMap,
) -> Result<Json<TokenResponse>, AppError> {
    let app = authorize(&state, &headers, &appid)?;
    let token = app.token().await.inspect_err(|e| {
        state
            .metrics
            .upstream_error(&appid, e.errcode().map_or(-2, |c| c.code()))
    })?;
    Ok(Json(TokenResponse::from(&token)))
}

/// Report a token WeChat rejected: it is dropped only if still current, then refreshed once.
#[utoipa::path(post, path = "/v1/apps/{appid}/access_token/invalidate", tag = "broker", security(("client_key" = [])),
    params(("appid" = String, Path, description = "the mini program")), request_body = InvalidateRequest,
    responses((status = 200, body = InvalidateResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn invalidate(
    State(state): State<AppState>,
    Path(appid): Path<String>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<InvalidateRequest>,
) -> Result<Json<InvalidateResponse>, AppError> {
    let app = authorize(&state, &headers, &appid)?;
    if req.access_token.is_empty() || req.access_token.len() > 1024 {
        return Err(AppError::bad_request(
            "invalid_body",
            "access_token must be 1–1024 characters",
        ));
    }
    let stale = AccessToken::new(req.access_token);
    weapp::TokenSource::invalidate(&app.manager, &stale).await?;
    let token = app.token().await?;
    Ok(Json(InvalidateResponse {
        refreshed: !token.access_token.ct_eq(stale.expose()),
        token: TokenResponse::from(&token),
    }))
}

fn wx_error(code: i64, msg: &str) -> Response {
    let rid = format!(
        "{:08x}-{:08x}-{:08x}",
        rand::random::<u32>(),
        rand::random::<u32>(),
        rand::random::<u32>()
    );
    Json(json!({"errcode": code, "errmsg": format!("{msg}, rid: {rid}")})).into_response()
}

/// The mirror's answer: the broker's current token for a correct appid + secret, in WeChat's
/// format. Mirror callers can never invalidate or force-refresh the broker's token.
async fn mirror(state: &AppState, appid: Option<&str>, secret: Option<&str>) -> Response {
    let Some(appid) = appid.filter(|a| !a.is_empty()) else {
        return wx_error(41002, "appid missing");
    };
    let Some(secret) = secret.filter(|s| !s.is_empty()) else {
        return wx_error(41004, "appsecret missing");
    };
    let Some(app) = state.app(appid) else {
        return wx_error(40013, "invalid appid");
    };
    if !app.secret.ct_eq(secret) {
        return wx_error(40125, "invalid appsecret");
    }
    match app.token().await {
        Ok(t) => Json(json!({"access_token": t.access_token.expose(), "expires_in": (t.expires_at_ms - now_ms()) / 1000})).into_response(),
        Err(e) => wx_error(e.errcode().map_or(-1, |c| c.code()), "system error"),
    }
}

/// WeChat-compatible `GET /cgi-bin/token`.
#[utoipa::path(get, path = "/cgi-bin/token", tag = "broker",
    params(("grant_type" = String, Query), ("appid" = String, Query), ("secret" = String, Query)),
    responses((status = 200, description = "`{access_token, expires_in}` or WeChat's `{errcode, errmsg}`")))]
pub async fn cgi_token(
    State(state): State<AppState>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Response {
    if q.get("grant_type").map(String::as_str) != Some("client_credential") {
        return wx_error(40002, "invalid grant_type");
    }
    mirror(
        &state,
        q.get("appid").map(String::as_str),
        q.get("secret").map(String::as_str),
    )
    .await
}

/// WeChat-compatible `POST /cgi-bin/stable_token` (`force_refresh` is ignored: the broker owns refreshes).
#[utoipa::path(post, path = "/cgi-bin/stable_token", tag = "broker",
    responses((status = 200, description = "`{access_token, expires_in}` or WeChat's `{errcode, errmsg}`")))]
pub async fn cgi_stable_token(State(state): State<AppState>, body: axum::body::Bytes) -> Response {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return wx_error(47001, "data format error");
    };
    if v.get("grant_type").and_then(|g| g.as_str()) != Some("client_credential") {
        return wx_error(40002, "invalid grant_type");
    }
    mirror(
        &state,
        v.get("appid").and_then(|a| a.as_str()),
        v.get("secret").and_then(|s| s.as_str()),
    )
    .await
}

/// Routes of this area.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/apps/{appid}/access_token", get(access_token))
        .route("/v1/apps/{appid}/access_token/invalidate", post(invalidate))
        .route("/cgi-bin/token", get(cgi_token))
        .route("/cgi-bin/stable_token", post(cgi_stable_token))
}
