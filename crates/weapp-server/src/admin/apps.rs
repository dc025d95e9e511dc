//! Managed apps (`/v1/admin/apps`): create, list, read, change and delete them, their token
//! health, their push events (read and redelivered) and the fleet's refreshers.

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;
use weapp::token::TokenKey;
use weapp::TokenMode;

use super::auth::Admin;
use super::common::{
    audit_record, audited_read, check_api_base_move, check_api_base_target, check_target,
    check_version, double_option, etag, host_of, if_match, invalid, is_appid, limit_of, logged,
    new_api_base, stale, sync, PageQuery,
};
use super::service::AdminApi;
use crate::broker::registry::{app_aad, AppEntry, AppSecrets, AppSettings, PushSettings, Source};
use crate::config::{AppConfig, PushConfig, Secret, WarmPolicy};
use crate::http::JsonBody;
use crate::http::{AppError, ErrorBody};
use crate::push::handlers::{has_webhook, EventOut};
use crate::shared::now_ms;
use crate::store::ManagedAppRecord;

/// Push settings of an app, secrets included (they are sealed, never shown again).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PushInput {
    /// The Token set in the WeChat console.
    #[schema(min_length = 3, max_length = 32)]
    pub token: String,
    /// The 43-character EncodingAESKey (safe and compatible modes).
    #[serde(default)]
    #[schema(min_length = 43, max_length = 43)]
    pub encoding_aes_key: Option<String>,
    /// `safe`, `compatible` or `plain` (default `safe` with a key).
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub mode: Option<weapp::push::PushMode>,
    /// Where verified events are delivered.
    #[serde(default)]
    #[schema(max_length = 2048)]
    pub webhook_url: Option<String>,
    /// The webhook signature key (required with `webhook_url`).
    #[serde(default)]
    #[schema(max_length = 256)]
    pub webhook_secret: Option<String>,
    /// The replay window (default 300; 0 disables).
    #[serde(default)]
    pub replay_window_secs: Option<u64>,
}

/// `POST /v1/admin/apps`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApp {
    /// The appid.
    #[schema(min_length = 1, max_length = 64)]
    pub appid: String,
    /// The AppSecret (sealed; never shown again).
    #[schema(min_length = 1, max_length = 128)]
    pub secret: String,
    /// WeChat's API host (default) or a weapp-sim URL.
    #[serde(default)]
    #[schema(max_length = 2048)]
    pub api_base: Option<String>,
    /// `stable` (default) or `classic`.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub token_mode: Option<TokenMode>,
    /// Push receiver settings.
    #[serde(default)]
    pub push: Option<PushInput>,
    /// `always` or `on_use` (default: the server's).
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub warm: Option<WarmPolicy>,
    /// Whether logins get signed access tokens (default true).
    #[serde(default)]
    pub access_tokens: Option<bool>,
    /// Served (default) or not.
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// `PATCH /v1/admin/apps/{appid}`: only the fields given change; `push: null` removes the push
/// settings, `warm: null` returns to the server's policy.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateApp {
    /// A new AppSecret.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 128)]
    pub secret: Option<String>,
    /// A new API host.
    #[serde(default)]
    #[schema(max_length = 2048)]
    pub api_base: Option<String>,
    /// A new token mode.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub token_mode: Option<TokenMode>,
    /// New push settings (all of them), or `null`.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<PushInput>)]
    pub push: Option<Option<PushInput>>,
    /// A warm policy, or `null` for the server's.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub warm: Option<Option<WarmPolicy>>,
    /// Turn signed access tokens on or off.
    #[serde(default)]
    pub access_tokens: Option<bool>,
    /// Enable or disable.
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// An app's push settings as shown (no secrets).
#[derive(Serialize, ToSchema)]
pub struct PushView {
    /// `safe`, `compatible` or `plain`.
    pub mode: String,
    /// Where events go (credentials in it redacted).
    pub webhook_url: Option<String>,
    /// The replay window.
    pub replay_window_secs: u64,
}

/// An app's token as this instance sees it.
#[derive(Serialize, ToSchema)]
pub struct TokenHealth {
    /// The fence of the lease it was fetched under: increases with every fetch.
    pub version: u64,
    /// Seconds since this instance first saw it.
    pub age_secs: Option<i64>,
    /// When WeChat stops accepting it (Unix seconds).
    pub expires_at: i64,
    /// Tokens fetched from WeChat today (Beijing day), by the whole fleet.
    pub refreshes_today: u64,
    /// WeChat's daily limit for that endpoint (2,000 for classic tokens).
    pub quota_per_day: u64,
    /// The last refresh error on this instance.
    pub last_error: Option<String>,
}

/// An app as the admin API shows it (never a secret).
#[derive(Serialize, ToSchema)]
pub struct AppView {
    /// The appid.
    pub appid: String,
    /// `file` (read-only here) or `managed`.
    pub source: String,
    /// Served or not.
    pub enabled: bool,
    /// API host (credentials redacted).
    pub api_base: String,
    /// `stable` or `classic`.
    pub token_mode: String,
    /// `always` or `on_use` (the effective policy).
    pub warm: String,
    /// Push settings.
    pub push: Option<PushView>,
    /// Whether logins get signed access tokens.
    pub access_tokens: bool,
    /// Registry revision of its last change (0 for file apps).
    pub rev: i64,
    /// Unix ms (0 for file apps).
    pub created_at: i64,
    /// Unix ms (0 for file apps).
    pub updated_at: i64,
    /// The token, when one is known.
    pub token: Option<TokenHealth>,
    /// Why the stored app cannot be loaded (then it is not served): its secrets do not open
    /// with this instance's data keys, or its settings do not parse.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_error: Option<String>,
}

/// A page of apps.
#[derive(Serialize, ToSchema)]
pub struct AppPage {
    /// Apps in appid order.
    pub apps: Vec<AppView>,
    /// Pass as `after` for the next page (`null`: no more).
    pub next_after: Option<String>,
}

/// Checks an app configuration the way the file's are checked.
fn check_app(app: &AppConfig) -> Result<(), AppError> {
    if !is_appid(&app.appid) {
        return Err(invalid("appid must be 1–64 ASCII letters and digits"));
    }
    if app
        .secret
        .as_ref()
        .is_none_or(|s| s.is_empty() || s.expose().len() > 128)
    {
        return Err(invalid("secret must be 1–128 characters"));
    }
    if app.api_base.len() > 2048 || !weapp::http::is_base_url(&app.api_base) {
        return Err(invalid(
            "api_base must be an http(s) URL without a query or fragment",
        ));
    }
    if let Some(p) = &app.push {
        if p.token.expose().len() < 3 || p.token.expose().len() > 32 {
            return Err(invalid("push.token must be 3–32 characters"));
        }
        if p.webhook_url.as_deref().is_some_and(|u| u.len() > 2048) {
            return Err(invalid("push.webhook_url must be at most 2048 characters"));
        }
        if p.webhook_secret
            .as_ref()
            .is_some_and(|s| s.expose().is_empty() || s.expose().len() > 256)
        {
            return Err(invalid("push.webhook_secret must be 1–256 characters"));
        }
        if p.webhook_url.as_deref().is_some_and(|u| {
            !(u.starts_with("http://") || u.starts_with("https://"))
                || reqwest::Url::parse(u).is_err()
        }) {
            return Err(invalid("push.webhook_url must be an http(s) URL"));
        }
        p.validate().map_err(|e| invalid(format!("push: {e}")))?;
        if p.replay_window_secs > 86_400 {
            return Err(invalid("push.replay_window_secs must be at most 86400"));
        }
    }
    Ok(())
}

/// The answer to a compare-and-set that failed: gone (404) or changed by someone else (409).
async fn changed_meanwhile(state: &AdminApi, appid: &str) -> AppError {
    match state.store.managed_app(appid).await {
        Ok(Some(r)) if !r.deleted => AppError::Conflict(format!(
            "app {appid} was changed meanwhile by someone else: read it again and retry"
        )),
        _ => AppError::NotFound(format!("no managed app {appid}")),
    }
}

/// Checks where a new or changed app's API host and webhook point (`api_base`, `push`: whether
/// each is new in this request; what did not change is not judged again).
async fn check_app_targets(
    state: &AdminApi,
    app: &AppConfig,
    api_base: bool,
    push: bool,
) -> Result<(), AppError> {
    if api_base {
        check_api_base_target(state, &app.api_base).await?;
    }
    if let Some(url) = app
        .push
        .as_ref()
        .and_then(|p| p.webhook_url.as_deref())
        .filter(|_| push)
    {
        check_target(state, "push.webhook_url", url).await?;
    }
    Ok(())
}

fn push_config(p: PushInput) -> PushConfig {
    PushConfig {
        token: Secret::new(p.token),
        encoding_aes_key: p.encoding_aes_key.map(Secret::new),
        mode: p.mode,
        webhook_url: p.webhook_url,
        webhook_secret: p.webhook_secret.map(Secret::new),
        replay_window_secs: p.replay_window_secs.unwrap_or(300),
    }
}

/// The settings and sealed secrets of `app`, as a record at `now`.
fn record_of(state: &AdminApi, app: &AppConfig, enabled: bool, now: i64) -> ManagedAppRecord {
    let settings = AppSettings::of(app);
    let secrets = AppSecrets {
        secret: app
            .secret
            .as_ref()
            .map(|s| s.expose().to_owned())
            .unwrap_or_default(),
        push_token: app.push.as_ref().map(|p| p.token.expose().to_owned()),
        encoding_aes_key: app
            .push
            .as_ref()
            .and_then(|p| p.encoding_aes_key.as_ref().map(|k| k.expose().to_owned())),
        webhook_secret: app
            .push
            .as_ref()
            .and_then(|p| p.webhook_secret.as_ref().map(|k| k.expose().to_owned())),
    };
    let plain = zeroize::Zeroizing::new(serde_json::to_vec(&secrets).expect("plain data"));
    ManagedAppRecord {
        appid: app.appid.clone(),
        settings: serde_json::to_string(&settings).expect("plain data"),
        sealed: Some(
            state
                .keys
                .keyring
                .seal(&plain, &app_aad(&app.appid, &app.api_base)),
        ),
        key_id: Some(state.keys.keyring.current_id()),
        enabled,
        deleted: false,
        rev: 0,
        created_at: now,
        updated_at: now,
    }
}

/// Where an app's webhook points, for the audit log: `scheme://host:port` alone (`null`: no
/// webhook). Its path and query are treated as secret (receivers put tokens there).
fn webhook_host(push: Option<&PushConfig>) -> Value {
    match push.and_then(|p| p.webhook_url.as_deref()) {
        Some(url) => json!(host_of(url)),
        None => Value::Null,
    }
}

async fn token_health(state: &AdminApi, entry: &AppEntry, fetched: u64) -> Option<TokenHealth> {
    let rt = entry.runtime.as_ref()?;
    let status = rt.manager.status();
    let token = match status.token {
        Some(t) => Some(t),
        None => state
            .broker
            .deps
            .token_store
            .load(&TokenKey::new(rt.appid.clone(), entry.settings.token_mode))
            .await
            .ok()
            .flatten(),
    }?;
    let age_secs = rt
        .seen()
        .filter(|((v, exp), _)| *v == token.version && *exp == token.expires_at_ms)
        .map(|(_, at)| (now_ms() - at) / 1000);
    Some(TokenHealth {
        version: token.version,
        age_secs,
        expires_at: token.expires_at_ms / 1000,
        refreshes_today: fetched,
        quota_per_day: match entry.settings.token_mode {
            TokenMode::Classic => 2_000,
            _ => 500_000,
        },
        last_error: status.last_error.map(|(m, _)| m),
    })
}

async fn view(state: &AdminApi, entry: &AppEntry, fetched: u64) -> AppView {
    let s = &entry.settings;
    AppView {
        appid: entry.appid.clone(),
        source: match entry.source {
            Source::File => "file",
            Source::Managed => "managed",
            Source::Platform => "platform",
        }
        .into(),
        enabled: entry.enabled,
        api_base: crate::config::redact_url(&s.api_base),
        token_mode: mode_name(s.token_mode).into(),
        warm: match s.warm.unwrap_or(state.config.warm) {
            WarmPolicy::Always => "always",
            WarmPolicy::OnUse => "on_use",
        }
        .into(),
        push: s.push.as_ref().map(|p: &PushSettings| PushView {
            mode: match p.mode {
                Some(m) => serde_json::to_value(m)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                None => "safe".into(),
            },
            webhook_url: p
                .webhook_url
                .as_deref()
                .map(crate::config::redact_webhook_url),
            replay_window_secs: p.replay_window_secs,
        }),
        access_tokens: s.access_tokens,
        rev: entry.rev,
        created_at: entry.created_at,
        updated_at: entry.updated_at,
        token: token_health(state, entry, fetched).await,
        load_error: entry.load_error.clone(),
    }
}

fn mode_name(m: TokenMode) -> &'static str {
    match m {
        TokenMode::Classic => "classic",
        _ => "stable",
    }
}

/// 404 for an app this service does not serve (never registered, or deleted): its events are
/// neither shown nor redelivered.
fn served(state: &AdminApi, appid: &str) -> Result<(), AppError> {
    match state.broker.registry.entry(appid) {
        Some(_) => Ok(()),
        None => Err(AppError::NotFound(format!("no app {appid}"))),
    }
}

async fn entry_view(state: &AdminApi, appid: &str) -> Result<AppView, AppError> {
    let entry = state
        .broker
        .registry
        .entry(appid)
        .ok_or_else(|| AppError::NotFound(format!("no app {appid}")))?;
    let fetched = state.broker.fetches_today(&[appid.to_owned()]).await;
    Ok(view(state, &entry, fetched.first().copied().unwrap_or(0)).await)
}

/// Register an app at runtime: served by every instance within `registry_poll_ms`.
#[utoipa::path(post, path = "/v1/admin/apps", tag = "admin", security(("admin_key" = [])), request_body = CreateApp,
    responses((status = 201, body = AppView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]

pub async fn create_app(
    State(state): State<AdminApi>,
    admin: Admin,
    JsonBody(req): JsonBody<CreateApp>,
) -> Result<Response, AppError> {
    let api_base = new_api_base(&state, req.api_base, "apps")?;
    let app = AppConfig {
        appid: req.appid,
        secret: Some(Secret::new(req.secret)),
        secret_env: None,
        api_base,
        token_mode: req.token_mode.unwrap_or_default(),
        push: req.push.map(push_config),
        warm: req.warm,
        access_tokens: req.access_tokens.unwrap_or(true),
    };
    check_app(&app)?;
    check_app_targets(&state, &app, true, true).await?;
    if state
        .broker
        .registry
        .entry(&app.appid)
        .is_some_and(|e| e.source != Source::Managed)
    {
        return Err(AppError::Conflict(format!(
            "app {} is defined in the configuration file or by a platform's authorization",
            app.appid
        )));
    }
    if state.platforms.platform(&app.appid).is_some()
        || state
            .store
            .managed_platform(&app.appid)
            .await?
            .is_some_and(|r| !r.deleted)
    {
        return Err(AppError::Conflict(format!(
            "{} is a third-party platform's component appid",
            app.appid
        )));
    }
    let enabled = req.enabled.unwrap_or(true);
    let record = record_of(&state, &app, enabled, now_ms());
    let audit_row = audit_record(
        &admin,
        "app.create",
        &app.appid,
        json!({"api_base": crate::config::redact_url(&app.api_base), "token_mode": mode_name(app.token_mode), "push": app.push.is_some(), "webhook_host": webhook_host(app.push.as_ref()), "enabled": enabled}),
    );
    let Some(rev) = state
        .store
        .put_managed_app(&record, true, &audit_row)
        .await?
    else {
        return Err(AppError::Conflict(format!("app {} exists", app.appid)));
    };
    logged(&audit_row);
    sync(&state).await;
    let v = entry_view(&state, &app.appid).await?;
    Ok((StatusCode::CREATED, [(header::ETAG, etag(rev))], Json(v)).into_response())
}

/// Apps (from the file and managed) in appid order, with their token health.
#[utoipa::path(get, path = "/v1/admin/apps", tag = "admin", security(("admin_key" = [])), params(PageQuery),
    responses((status = 200, body = AppPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]

pub async fn list_apps(
    State(state): State<AdminApi>,
    _admin: Admin,
    Query(q): Query<PageQuery>,
) -> Result<Json<AppPage>, AppError> {
    let limit = limit_of(q.limit)?;
    let page = state
        .broker
        .registry
        .page(q.after.as_deref().unwrap_or(""), limit + 1);
    let more = page.len() > limit;
    let page = &page[..page.len().min(limit)];
    let ids: Vec<String> = page.iter().map(|e| e.appid.clone()).collect();
    let fetched = state.broker.fetches_today(&ids).await;
    let mut apps = Vec::with_capacity(page.len());
    for (e, n) in page.iter().zip(fetched) {
        apps.push(view(&state, e, n).await);
    }
    Ok(Json(AppPage {
        next_after: more.then(|| ids.last().cloned()).flatten(),
        apps,
    }))
}

/// One app, with its token health; its `ETag` is its version (`"<rev>"`), for `If-Match`.
#[utoipa::path(get, path = "/v1/admin/apps/{appid}", tag = "admin", security(("admin_key" = [])),
    params(("appid" = String, Path, description = "the app")),
    responses((status = 200, body = AppView, headers(("ETag" = String, description = "the app's version: send it back as If-Match"))), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)))]

pub async fn get_app(
    State(state): State<AdminApi>,
    _admin: Admin,
    Path(appid): Path<String>,
) -> Result<Response, AppError> {
    let v = entry_view(&state, &appid).await?;
    Ok(([(header::ETAG, etag(v.rev))], Json(v)).into_response())
}

async fn managed(state: &AdminApi, appid: &str) -> Result<ManagedAppRecord, AppError> {
    if state
        .broker
        .registry
        .entry(appid)
        .is_some_and(|e| e.source != Source::Managed)
    {
        return Err(AppError::Conflict(format!(
            "app {appid} is defined in the configuration file or by a platform's authorization: change it there"
        )));
    }
    match state.store.managed_app(appid).await? {
        Some(r) if !r.deleted => Ok(r),
        _ => Err(AppError::NotFound(format!("no managed app {appid}"))),
    }
}

/// Change a managed app: only the fields given. Its token keeps being served throughout.
/// With `If-Match: "<rev>"` (the `ETag` of what the admin read), only that version is changed:
/// 412 once someone else has changed it.
#[utoipa::path(patch, path = "/v1/admin/apps/{appid}", tag = "admin", security(("admin_key" = [])),
    params(("appid" = String, Path, description = "the app"), ("If-Match" = Option<String>, Header, description = "the ETag read (\"<rev>\"): change only that version")), request_body = UpdateApp,
    responses((status = 200, body = AppView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 412, description = "changed since the version in If-Match", body = ErrorBody), (status = 413, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]

pub async fn update_app(
    State(state): State<AdminApi>,
    admin: Admin,
    Path(appid): Path<String>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<UpdateApp>,
) -> Result<Response, AppError> {
    let expected = if_match(&headers)?;
    let current = managed(&state, &appid).await?;
    check_version(expected.as_deref(), current.rev, &format!("app {appid}"))?;
    let settings: AppSettings = serde_json::from_str(&current.settings)
        .map_err(|e| AppError::Internal(format!("stored settings of {appid}: {e}")))?;
    let plain = current
        .sealed
        .as_deref()
        .and_then(|s| {
            state
                .keys
                .keyring
                .open(s, &app_aad(&appid, &settings.api_base))
        })
        .ok_or_else(|| AppError::Internal(format!("the secrets of {appid} do not open")))?;
    let plain = zeroize::Zeroizing::new(plain);
    let secrets: AppSecrets = serde_json::from_slice(&plain)
        .map_err(|_| AppError::Internal(format!("the secrets of {appid} do not parse")))?;
    let mut app = settings.config(&appid, &secrets);
    let mut changed = serde_json::Map::new();
    let secret_given = req.secret.is_some();
    let targets_given = (req.api_base.is_some(), matches!(req.push, Some(Some(_))));
    if let Some(s) = req.secret {
        app.secret = Some(Secret::new(s));
        changed.insert("secret".into(), json!("changed"));
    }
    if let Some(b) = req.api_base {
        check_api_base_move(&state, &app.api_base, &b, secret_given, "apps")?;
        changed.insert("api_base".into(), json!(crate::config::redact_url(&b)));
        app.api_base = b;
    }
    if let Some(m) = req.token_mode {
        app.token_mode = m;
        changed.insert("token_mode".into(), json!(mode_name(m)));
    }
    if let Some(p) = req.push {
        changed.insert(
            "push".into(),
            json!(if p.is_some() { "replaced" } else { "removed" }),
        );
        app.push = p.map(push_config);
        changed.insert("webhook_host".into(), webhook_host(app.push.as_ref()));
    }
    if let Some(w) = req.warm {
        app.warm = w;
        changed.insert("warm".into(), json!(w));
    }
    if let Some(a) = req.access_tokens {
        app.access_tokens = a;
        changed.insert("access_tokens".into(), json!(a));
    }
    let enabled = req.enabled.unwrap_or(current.enabled);
    if enabled != current.enabled {
        changed.insert("enabled".into(), json!(enabled));
    }
    check_app(&app)?;
    check_app_targets(&state, &app, targets_given.0, targets_given.1).await?;
    let mut record = record_of(&state, &app, enabled, now_ms());
    record.created_at = current.created_at;
    record.rev = current.rev;
    let audit_row = audit_record(&admin, "app.update", &appid, Value::Object(changed));
    let Some(rev) = state
        .store
        .put_managed_app(&record, false, &audit_row)
        .await?
    else {
        return Err(match changed_meanwhile(&state, &appid).await {
            AppError::Conflict(_) if expected.is_some() => stale(&format!("app {appid}")),
            other => other,
        });
    };
    logged(&audit_row);
    sync(&state).await;
    let v = entry_view(&state, &appid).await?;
    Ok(([(header::ETAG, etag(rev))], Json(v)).into_response())
}

/// Delete a managed app: every instance stops serving and refreshing it, and every session of
/// its users ends with it (registering the app again does not bring them back; the audit row
/// says how many: `sessions_ended`).
#[utoipa::path(delete, path = "/v1/admin/apps/{appid}", tag = "admin", security(("admin_key" = [])),
    params(("appid" = String, Path, description = "the app")),
    responses((status = 204, description = "deleted"), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]

pub async fn delete_app(
    State(state): State<AdminApi>,
    admin: Admin,
    Path(appid): Path<String>,
) -> Result<StatusCode, AppError> {
    managed(&state, &appid).await?;
    let audit_row = audit_record(&admin, "app.delete", &appid, json!({}));
    if state
        .store
        .delete_managed_app(&appid, now_ms(), &audit_row)
        .await?
        .is_none()
    {
        return Err(AppError::NotFound(format!("no managed app {appid}")));
    }
    logged(&audit_row);
    sync(&state).await;
    Ok(StatusCode::NO_CONTENT)
}

/// A page of events.
#[derive(Serialize, ToSchema)]
pub struct EventPage {
    /// Oldest first; each as the client API's `GET /v1/apps/{appid}/events` shows it (`type`,
    /// `created_at` in Unix seconds, `status` `delivered`, `pending`, `dead` or `stored`).
    pub events: Vec<EventOut>,
    /// Pass as `after` for the next page; null on the last page.
    pub next_after: Option<String>,
}

/// An app's push events and their webhook deliveries, described as the client API describes
/// them (`GET /v1/apps/{appid}/events`). A page that shows events (users' messages) is audited
/// first (`events.read`: which admin, which app, which event ids — never their content).
#[utoipa::path(get, path = "/v1/admin/apps/{appid}/events", tag = "admin", security(("admin_key" = [])),
    params(("appid" = String, Path, description = "the app"), PageQuery),
    responses((status = 200, body = EventPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]

pub async fn app_events(
    State(state): State<AdminApi>,
    admin: Admin,
    Path(appid): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<Json<EventPage>, AppError> {
    served(&state, &appid)?;
    let limit = limit_of(q.limit)?;
    let after = match q.after.as_deref() {
        None | Some("") => 0,
        Some(a) => a
            .parse::<i64>()
            .map_err(|_| AppError::bad_request("invalid_query", "after must be an event id"))?,
    };
    let rows = state
        .store
        .events_after(&appid, after, limit as i64 + 1)
        .await?;
    let more = rows.len() > limit;
    let webhook = has_webhook(&state.push, &appid);
    let events: Vec<EventOut> = rows
        .into_iter()
        .take(limit)
        .map(|e| EventOut::from_record(e, webhook))
        .collect();
    if let (Some(first), Some(last)) = (events.first(), events.last()) {
        audited_read(
            &state,
            &admin,
            "events.read",
            &appid,
            json!({"first_id": first.id, "last_id": last.id, "count": events.len()}),
        )
        .await?;
    }
    Ok(Json(EventPage {
        next_after: more
            .then(|| events.last().map(|e| e.id.to_string()))
            .flatten(),
        events,
    }))
}

/// Deliver an undelivered (or dead-lettered) event again.
#[utoipa::path(post, path = "/v1/admin/apps/{appid}/events/{id}/redeliver", tag = "admin", security(("admin_key" = [])),
    params(("appid" = String, Path, description = "the app"), ("id" = i64, Path, description = "the event")),
    responses((status = 202, description = "queued"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]

pub async fn redeliver_event(
    State(state): State<AdminApi>,
    admin: Admin,
    Path((appid, id)): Path<(String, i64)>,
) -> Result<StatusCode, AppError> {
    served(&state, &appid)?;
    let record = audit_record(
        &admin,
        "event.redeliver",
        &format!("{appid}/{id}"),
        json!({}),
    );
    if !state
        .store
        .redeliver(&appid, id, now_ms(), Some(&record))
        .await?
    {
        return Err(AppError::NotFound(
            "no undelivered event with this id for this app".into(),
        ));
    }
    logged(&record);
    state.push.outbox.notify_one();
    Ok(StatusCode::ACCEPTED)
}

/// This instance in the fleet.
#[derive(Serialize, ToSchema)]
pub struct FleetView {
    /// This instance's id.
    pub instance: String,
    /// Live instances.
    pub instances: usize,
    /// Shards held here (of `shards`).
    pub shards_held: usize,
    /// Shards in the fleet.
    pub shards: u32,
    /// Refreshers running here.
    pub refreshers: usize,
    /// Refreshers waiting for their spread-out start.
    pub pending_starts: usize,
    /// Apps known here.
    pub apps: usize,
    /// The registry revision applied here.
    pub registry_rev: i64,
}

/// How this instance takes part in the fleet.
#[utoipa::path(get, path = "/v1/admin/fleet", tag = "admin", security(("admin_key" = [])),
    responses((status = 200, body = FleetView), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody)))]

pub async fn fleet(State(state): State<AdminApi>, _admin: Admin) -> Json<FleetView> {
    let f = state.broker.fleet_status();
    Json(FleetView {
        instance: state.instance_id.clone(),
        instances: f.instances,
        shards_held: f.shards_held,
        shards: state.config.fleet_shards,
        refreshers: f.refreshers,
        pending_starts: f.pending_starts,
        apps: state.broker.registry.len(),
        registry_rev: state.broker.registry.rev(),
    })
}

/// The routes of managed apps, their events and the fleet.
pub(super) fn router() -> Router<AdminApi> {
    Router::new()
        .route("/v1/admin/apps", get(list_apps).post(create_app))
        .route(
            "/v1/admin/apps/{appid}",
            get(get_app).patch(update_app).delete(delete_app),
        )
        .route("/v1/admin/apps/{appid}/events", get(app_events))
        .route(
            "/v1/admin/apps/{appid}/events/{id}/redeliver",
            post(redeliver_event),
        )
        .route("/v1/admin/fleet", get(fleet))
}
