//! The central token broker (中控): authenticated clients read an app's current access token
//! from memory, report a failing token for a compare-and-swap refresh, or use the
//! WeChat-compatible mirror so existing SDKs switch by pointing their token fetch here.

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use utoipa::ToSchema;
use weapp::token::StoredToken;
use weapp::AccessToken;

use super::{AppRuntime, Broker, BrokerClient};
use crate::http::{auth_failed, auth_gate, bearer, bearer_of, ClientIp, JsonBody};
use crate::http::{AppError, ErrorBody};
use crate::shared::now_ms;

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
    #[schema(min_length = 1, max_length = 1024)]
    pub access_token: String,
}

/// The answer to an invalidation.
#[derive(Debug, Serialize, ToSchema)]
pub struct InvalidateResponse {
    /// The current token after the report — only for clients that also hold `token:read`.
    #[serde(flatten)]
    pub token: Option<TokenResponse>,
    /// True when the token now current differs from the one reported (use it): it was
    /// refreshed, now or earlier. False when the reported token is still the current one — the
    /// refresh was throttled by the minimum interval, or WeChat handed the same token back.
    pub refreshed: bool,
}

/// Authenticates a broker client and checks it may use `appid` with `scope`. A source that
/// fails too often is refused before its key is looked at.
pub(crate) async fn authorize(
    state: &Broker,
    headers: &HeaderMap,
    ip: ClientIp,
    appid: &str,
    scope: &'static str,
) -> Result<(Arc<AppRuntime>, Arc<BrokerClient>), AppError> {
    authorize_key(state, bearer(headers), ip, appid, scope).await
}

/// [`authorize`] with the bearer key already taken from the request.
async fn authorize_key(
    state: &Broker,
    key: Option<&str>,
    ip: ClientIp,
    appid: &str,
    scope: &'static str,
) -> Result<(Arc<AppRuntime>, Arc<BrokerClient>), AppError> {
    auth_gate(state, ip).await?;
    let client = match key.and_then(|key| state.broker_client(key)) {
        Some(c) => c,
        None => {
            auth_failed(state, ip, "client_key").await;
            return Err(AppError::Unauthorized(
                "missing or unknown client key (Authorization: Bearer <client key>)".into(),
            ));
        }
    };
    if !client.may_use(appid) {
        tracing::warn!(client = %client.name, appid, "client asked for an app it may not use");
        return Err(AppError::Forbidden(format!(
            "client {} may not use app {appid}",
            client.name
        )));
    }
    if !client.has_scope(scope) {
        tracing::warn!(client = %client.name, appid, scope, "client lacks the scope");
        return Err(AppError::Forbidden(format!(
            "client {} lacks the scope {scope}",
            client.name
        )));
    }
    let app = state
        .app(appid)
        .ok_or_else(|| AppError::NotFound(format!("app {appid} is not configured")))?;
    Ok((app, client))
}

/// The app's current access token, served from memory.
#[utoipa::path(get, path = "/v1/apps/{appid}/access_token", tag = "broker", security(("client_key" = [])),
    params(("appid" = String, Path, description = "the mini program")),
    responses((status = 200, body = TokenResponse), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody), (status = 502, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn access_token(
    State(state): State<Broker>,
    Path(appid): Path<String>,
    ip: ClientIp,
    Authorization(auth): Authorization,
) -> Result<Response, AppError> {
    let key = auth
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_of);
    let (app, _) = authorize_key(&state, key, ip, &appid, "token:read").await?;
    let token = app.token().await.inspect_err(|e| {
        state
            .metrics
            .upstream_error(&appid, e.errcode().map_or(-2, |c| c.code()))
    })?;
    // The hot path of the broker: serialized from the token as held, no copy of it.
    #[derive(Serialize)]
    struct Body<'a> {
        access_token: &'a str,
        expires_at: i64,
        expires_in: i64,
    }
    let body = serde_json::to_vec(&Body {
        access_token: token.access_token.expose(),
        expires_at: token.expires_at_ms / 1000,
        expires_in: (token.expires_at_ms - now_ms()) / 1000,
    })
    .map_err(|e| AppError::Internal(e.to_string()))?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response())
}

/// The `Authorization` header alone (a cheap clone), without copying every header.
pub struct Authorization(pub Option<axum::http::HeaderValue>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Authorization {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Authorization(
            parts
                .headers
                .get(axum::http::header::AUTHORIZATION)
                .cloned(),
        ))
    }
}

/// Report a token WeChat rejected: it is dropped only if it is still current, then refreshed
/// once. A report of an older token changes nothing, and however many reports arrive, the
/// token is refreshed on a report's word at most once per `invalidate_min_interval_secs` per
/// app (so no client can burn WeChat's daily quota). A report within the interval is checked
/// instead: one cheap upstream call, and a token proven dead is replaced at once (once, by
/// compare-and-swap); one WeChat still accepts is kept, and the answer says `refreshed: false`
/// with a `Retry-After`.
#[utoipa::path(post, path = "/v1/apps/{appid}/access_token/invalidate", tag = "broker", security(("client_key" = [])),
    params(("appid" = String, Path, description = "the mini program")), request_body = InvalidateRequest,
    responses((status = 200, body = InvalidateResponse, headers(("Retry-After" = Option<u64>, description = "when `refreshed` is false because the report was throttled: seconds until a report of this token is acted on again"))), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody), (status = 429, body = ErrorBody), (status = 502, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn invalidate(
    State(state): State<Broker>,
    Path(appid): Path<String>,
    ip: ClientIp,
    headers: HeaderMap,
    JsonBody(req): JsonBody<InvalidateRequest>,
) -> Result<Response, AppError> {
    let (app, client) = authorize(&state, &headers, ip, &appid, "token:invalidate").await?;
    if req.access_token.is_empty() || req.access_token.len() > 1024 {
        return Err(AppError::bad_request(
            "invalid_body",
            "access_token must be 1–1024 characters",
        ));
    }
    let stale = AccessToken::new(req.access_token);
    let readable = |t: &StoredToken| {
        client
            .has_scope("token:read")
            .then(|| TokenResponse::from(t))
    };
    let current = app.token().await?;
    if !current.access_token.ct_eq(stale.expose()) {
        tracing::info!(client = %client.name, appid, outcome = "not_current", "token invalidation reported");
        return Ok(Json(InvalidateResponse {
            refreshed: true,
            token: readable(&current),
        })
        .into_response());
    }
    if let Some(wait) = state.invalidation_permit(&app, &stale).await {
        // Not refreshed on the report's word; but another instance may just have refreshed
        // it (the probe reads the store again first), or WeChat may prove it dead.
        let settled = app.probe.settle(app.as_ref(), current).await?;
        if let Some(v) = settled.probed {
            state.metrics.token_probe(&appid, v.label());
        }
        // Nothing proven either way (WeChat slow or failing): ask again soon, not after the
        // whole interval.
        let wait = match settled.verdict {
            Some(super::probe::Verdict::Unknown) => wait.min(UNPROVEN_RETRY),
            _ => wait,
        };
        let refreshed = !settled.token.access_token.ct_eq(stale.expose());
        if settled.replaced {
            state.invalidation_done(&app, &stale).await;
            state.metrics.invalidation(&appid, "proven_dead");
            tracing::warn!(client = %client.name, appid, outcome = "proven_dead", "token invalidation reported within the minimum interval; the token is dead upstream and was replaced");
        } else {
            tracing::warn!(client = %client.name, appid, outcome = "throttled", refreshed, "token invalidation reported within the minimum interval; not refreshed");
            state.metrics.invalidation(&appid, "throttled");
        }
        let body = Json(InvalidateResponse {
            refreshed,
            token: readable(&settled.token),
        });
        if refreshed {
            return Ok(body.into_response());
        }
        return Ok(retry_after(wait, body));
    }
    weapp::TokenSource::invalidate(&app.manager, &stale).await?;
    let token = app.token().await;
    state.invalidation_done(&app, &stale).await;
    let token = token?;
    let refreshed = !token.access_token.ct_eq(stale.expose());
    tracing::info!(client = %client.name, appid, outcome = "refreshed", refreshed, "token invalidation reported");
    state.metrics.invalidation(&appid, "refreshed");
    let body = Json(InvalidateResponse {
        refreshed,
        token: readable(&token),
    });
    if refreshed {
        return Ok(body.into_response());
    }
    // WeChat handed the same (stable) token back: reports of it are throttled from now on.
    Ok(retry_after(
        Duration::from_secs(state.config.invalidate_min_interval_secs),
        body,
    ))
}

/// How soon a report whose token could be proven neither dead nor alive may be retried.
const UNPROVEN_RETRY: Duration = Duration::from_secs(5);

/// `body` with `Retry-After: <wait in whole seconds, rounded up>`.
fn retry_after(wait: Duration, body: impl IntoResponse) -> Response {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    ([(axum::http::header::RETRY_AFTER, secs.to_string())], body).into_response()
}

/// Whether the mirror already handed `token` to this source: on this instance, or — with
/// Redis — on any instance of the fleet (a load balancer may send a client's refetch to
/// another instance). Records that the source is handed it now.
async fn handed_before(
    state: &Broker,
    app: &AppRuntime,
    ip: ClientIp,
    token: &AccessToken,
) -> bool {
    let here = app.probe.swap_handed(ip.0, token);
    let (Some(redis), Some(addr)) = (&state.redis, ip.0) else {
        return here;
    };
    let key = format!(
        "{}:handed:{}:{:x}",
        redis.prefix(),
        app.appid,
        crate::net::ip_key(addr)
    );
    let digest = hex::encode(super::probe::digest(token));
    let mut conn = redis.connection();
    // SET … GET: the previous value and the new one in one round trip (Redis 6.2+).
    let previous = tokio::time::timeout(
        HANDED_TIMEOUT,
        redis::cmd("SET")
            .arg(&key)
            .arg(&digest)
            .arg("PX")
            .arg(HANDED_TTL.as_millis() as u64)
            .arg("GET")
            .query_async::<Option<String>>(&mut conn),
    )
    .await;
    match &previous {
        Ok(r) => redis.observe("mirror_handed", r),
        // Our own deadline, shorter than the store's: reported as the timeout it is, so a
        // hanging Redis has its connection replaced.
        Err(_) => redis.observe::<()>(
            "mirror_handed",
            &Err(std::io::Error::from(std::io::ErrorKind::TimedOut).into()),
        ),
    }
    match previous {
        Ok(Ok(previous)) => here || previous.as_deref() == Some(digest.as_str()),
        Ok(Err(e)) => {
            tracing::debug!(appid = %app.appid, error = %e, "redis unavailable for the mirror's refetch memory; using this instance's");
            here
        }
        Err(_) => here,
    }
}

/// How long the fleet remembers which token a source was handed (a token's life).
const HANDED_TTL: Duration = Duration::from_secs(7200);

/// How long a mirror fetch waits on Redis for that memory before going on without it.
const HANDED_TIMEOUT: Duration = Duration::from_millis(300);

/// A WeChat-style error (`{errcode, errmsg}`, HTTP 200 as WeChat answers, `/cgi-bin`'s bare
/// `" rid: "` separator) that also carries this server's error envelope, so both WeChat SDKs
/// and clients of this API can read it.
fn wx_error(code: i64, msg: &str) -> Response {
    let rid = format!(
        "{:08x}-{:08x}-{:08x}",
        rand::random::<u32>(),
        rand::random::<u32>(),
        rand::random::<u32>()
    );
    let envelope_code = match code {
        40013 | 40125 | 41002 | 41004 => "invalid_credentials",
        40002 | 47001 => "bad_request",
        48001 => "forbidden",
        45011 => "rate_limited",
        _ => "upstream_error",
    };
    Json(json!({
        "errcode": code,
        "errmsg": format!("{msg} rid: {rid}"),
        "error": {"code": envelope_code, "message": msg, "wechat_errcode": code, "rid": rid},
    }))
    .into_response()
}

/// The mirror's answer: the broker's current token, in WeChat's format, for the app's secret
/// — or, in its place, a broker client key that may read the app's token (`token:read`), so a
/// backend that keeps its WeChat SDK needs no AppSecret. Mirror callers never refresh the
/// broker's token on their word: a refetch of the token this source was already handed (how a
/// WeChat SDK reacts to 40001) or `force_refresh` makes the broker prove the token dead with
/// one cheap upstream call, and only a dead token is replaced (see [`super::probe`]).
/// Failed secrets and keys count against the source's failed-authentication budget.
async fn mirror(
    state: &Broker,
    ip: ClientIp,
    appid: Option<&str>,
    secret: Option<&str>,
    force_refresh: bool,
) -> Response {
    if auth_gate(state, ip).await.is_err() {
        return wx_error(
            45011,
            "api minute-quota reach limit, must slower, retry next minute",
        );
    }
    let Some(appid) = appid.filter(|a| !a.is_empty()) else {
        return wx_error(41002, "appid missing");
    };
    let Some(secret) = secret.filter(|s| !s.is_empty()) else {
        return wx_error(41004, "appsecret missing");
    };
    let Some(app) = state.app(appid) else {
        auth_failed(state, ip, "mirror").await;
        return wx_error(40013, "invalid appid");
    };
    if !app.secret.ct_eq(secret) {
        match state.broker_client(secret) {
            Some(client) if client.may_use(appid) && client.has_scope("token:read") => {
                tracing::debug!(client = %client.name, appid, "mirror fetch with a client key");
            }
            Some(client) => {
                tracing::warn!(client = %client.name, appid, "client key on the mirror for an app or scope it lacks");
                return wx_error(
                    48001,
                    "api unauthorized: this client key may not read this app's token",
                );
            }
            None => {
                auth_failed(state, ip, "mirror").await;
                return wx_error(40125, "invalid appsecret");
            }
        }
    }
    let failed = |e: weapp::Error| {
        state
            .metrics
            .upstream_error(appid, e.errcode().map_or(-2, |c| c.code()));
        wx_error(e.errcode().map_or(-1, |c| c.code()), "system error")
    };
    let mut token = match app.token().await {
        Ok(t) => t,
        Err(e) => return failed(e),
    };
    let refetch = handed_before(state, &app, ip, &token.access_token).await;
    if force_refresh || refetch {
        match app.probe.settle(app.as_ref(), token).await {
            Ok(settled) => {
                if let Some(v) = settled.probed {
                    state.metrics.token_probe(appid, v.label());
                }
                if settled.replaced {
                    state.metrics.invalidation(appid, "proven_dead");
                }
                token = settled.token;
            }
            Err(e) => return failed(e),
        }
        handed_before(state, &app, ip, &token.access_token).await;
    }
    Json(json!({"access_token": token.access_token.expose(), "expires_in": (token.expires_at_ms - now_ms()) / 1000})).into_response()
}

/// What the WeChat-compatible mirror answers: a token, or — **with HTTP 200, as WeChat does** —
/// WeChat's `{errcode, errmsg}` plus this server's `error` envelope.
#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code)]
pub struct MirrorAnswer {
    /// The token (on success).
    pub access_token: Option<String>,
    /// Seconds until it expires (on success).
    pub expires_in: Option<i64>,
    /// WeChat's error code (on failure): 40002, 40013, 40125, 41002, 41004, 45011, 47001,
    /// 48001 (a client key for another app or without `token:read`), -1.
    pub errcode: Option<i64>,
    /// WeChat's error message, ending in `rid: …` (on failure).
    pub errmsg: Option<String>,
    /// This server's error envelope (on failure).
    #[schema(value_type = Option<Object>)]
    pub error: Option<serde_json::Value>,
}

/// WeChat-compatible `GET /cgi-bin/token`: for an existing WeChat SDK, whose token fetch is
/// pointed here (`secret` = the app's secret or a broker client key with `token:read`). Like
/// WeChat it answers every request with HTTP 200; failures carry `errcode`.
#[utoipa::path(get, path = "/cgi-bin/token", tag = "broker",
    params(("grant_type" = Option<String>, Query), ("appid" = Option<String>, Query), ("secret" = Option<String>, Query)),
    responses((status = 200, description = "`{access_token, expires_in}`, or WeChat's `{errcode, errmsg}` with an `error` envelope", body = MirrorAnswer)))]
pub async fn cgi_token(
    State(state): State<Broker>,
    ip: ClientIp,
    q: Result<
        Query<std::collections::HashMap<String, String>>,
        axum::extract::rejection::QueryRejection,
    >,
) -> Response {
    let Ok(Query(q)) = q else {
        return wx_error(47001, "data format error");
    };
    if q.get("grant_type").map(String::as_str) != Some("client_credential") {
        return wx_error(40002, "invalid grant_type");
    }
    mirror(
        &state,
        ip,
        q.get("appid").map(String::as_str),
        q.get("secret").map(String::as_str),
        false,
    )
    .await
}

/// WeChat-compatible `POST /cgi-bin/stable_token`. `force_refresh: true` never forces a
/// refresh (the broker owns refreshes): it makes the broker check its token upstream and
/// replace it only if WeChat proves it dead. Like WeChat it answers every request with HTTP
/// 200; failures carry `errcode`.
#[utoipa::path(post, path = "/cgi-bin/stable_token", tag = "broker",
    request_body(content = Option<serde_json::Value>, description = "`{grant_type: \"client_credential\", appid, secret, force_refresh?}`; anything else is answered like WeChat does, with HTTP 200 and an errcode"),
    responses((status = 200, description = "`{access_token, expires_in}`, or WeChat's `{errcode, errmsg}` with an `error` envelope", body = MirrorAnswer)))]
pub async fn cgi_stable_token(
    State(state): State<Broker>,
    ip: ClientIp,
    body: axum::body::Bytes,
) -> Response {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return wx_error(47001, "data format error");
    };
    if v.get("grant_type").and_then(|g| g.as_str()) != Some("client_credential") {
        return wx_error(40002, "invalid grant_type");
    }
    mirror(
        &state,
        ip,
        v.get("appid").and_then(|a| a.as_str()),
        v.get("secret").and_then(|s| s.as_str()),
        v.get("force_refresh").and_then(|f| f.as_bool()) == Some(true),
    )
    .await
}

/// Routes of this area.
pub fn router() -> Router<Broker> {
    Router::new()
        .route("/v1/apps/{appid}/access_token", get(access_token))
        .route("/v1/apps/{appid}/access_token/invalidate", post(invalidate))
        .route("/cgi-bin/token", get(cgi_token))
        .route("/cgi-bin/stable_token", post(cgi_stable_token))
}
