//! Third-party platforms in the admin API (`/v1/admin/platforms…`): platforms registered at
//! runtime (stored in the database, their secrets sealed with the data key and bound to the
//! component appid and its API host; every instance serves a change within
//! `registry_poll_ms`), the file's platforms shown read-only, each platform's merchants, and a
//! reconciliation with WeChat's authorizer list on demand.
//!
//! No answer carries a secret: not the component secret, the Token, the EncodingAESKey, the
//! webhook secret, a ticket or a refresh token.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;

use super::auth::Admin;
use super::common::{
    audit, audit_record, check_api_base_move, check_api_base_target, check_target, double_option,
    host_of, invalid, limit_of, logged, new_api_base, sync, PageQuery,
};
use super::service::AdminApi;
use crate::broker::registry::Source;
use crate::config::{redact_url, redact_webhook_url, PlatformConfig, Secret};
use crate::http::JsonBody;
use crate::http::{AppError, ErrorBody};
use crate::platforms::runtime::{platform_aad, PlatformSecrets, PlatformSettings};
use crate::shared::now_ms;
use crate::store::ManagedPlatformRecord;

/// `POST /v1/admin/platforms`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePlatform {
    /// The component appid.
    #[schema(min_length = 1, max_length = 64)]
    pub component_appid: String,
    /// The component secret (sealed; never shown again).
    #[schema(min_length = 1, max_length = 128)]
    pub secret: String,
    /// The message-check Token of the authorization-event URL.
    #[schema(min_length = 1, max_length = 32)]
    pub token: String,
    /// The 43-character EncodingAESKey.
    #[schema(min_length = 43, max_length = 43)]
    pub encoding_aes_key: String,
    /// WeChat's API host (default) or a weapp-sim URL.
    #[serde(default)]
    #[schema(max_length = 2048)]
    pub api_base: Option<String>,
    /// Where the platform's events and its merchants' pushes are delivered.
    #[serde(default)]
    #[schema(max_length = 2048)]
    pub webhook_url: Option<String>,
    /// The webhook signature key (required with `webhook_url`).
    #[serde(default)]
    #[schema(max_length = 256)]
    pub webhook_secret: Option<String>,
    /// Served (default) or not.
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// `PATCH /v1/admin/platforms/{component_appid}`: only the fields given change;
/// `webhook_url: null` stops webhooks.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdatePlatform {
    /// A new component secret.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 128)]
    pub secret: Option<String>,
    /// A new Token.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 32)]
    pub token: Option<String>,
    /// A new EncodingAESKey.
    #[serde(default)]
    #[schema(min_length = 43, max_length = 43)]
    pub encoding_aes_key: Option<String>,
    /// A new API host (another host needs the secret in the same request).
    #[serde(default)]
    #[schema(max_length = 2048)]
    pub api_base: Option<String>,
    /// A new webhook URL (another URL needs `webhook_secret` in the same request), or `null`.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, max_length = 2048)]
    pub webhook_url: Option<Option<String>>,
    /// A new webhook secret.
    #[serde(default)]
    #[schema(max_length = 256)]
    pub webhook_secret: Option<String>,
    /// Enable or disable (a disabled platform's URLs answer 404, its merchants are not
    /// served; its ticket and refresh tokens are kept).
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// A platform as the admin API shows it (never a secret).
#[derive(Serialize, ToSchema)]
pub struct PlatformView {
    /// The component appid.
    pub component_appid: String,
    /// `file` (read-only here) or `managed`.
    pub source: String,
    /// Enabled or not.
    pub enabled: bool,
    /// Whether this instance serves it (enabled and loaded).
    pub served: bool,
    /// API host (credentials redacted).
    pub api_base: String,
    /// Webhook URL (credentials redacted).
    pub webhook_url: Option<String>,
    /// Whether a `component_verify_ticket` is stored.
    pub has_ticket: bool,
    /// Merchants authorizing it now.
    pub merchants: usize,
    /// Registry revision of its last change (0 for the file's).
    pub rev: i64,
    /// Unix ms (0 for the file's).
    pub created_at: i64,
    /// Unix ms (0 for the file's).
    pub updated_at: i64,
    /// Why an enabled managed platform is not served (its secrets do not open, its settings
    /// do not parse).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_error: Option<String>,
}

/// Every platform.
#[derive(Serialize, ToSchema)]
pub struct PlatformList {
    /// By component appid.
    pub platforms: Vec<PlatformView>,
}

/// A merchant of a platform.
#[derive(Serialize, ToSchema)]
pub struct MerchantView {
    /// The merchant's mini program.
    pub authorizer_appid: String,
    /// Authorized now (false: it left; kept for the record).
    pub authorized: bool,
    /// Whether this instance serves it through this platform.
    pub served: bool,
    /// The permission sets granted.
    pub func_ids: Vec<i64>,
    /// Unix seconds of its authorization.
    pub auth_time: i64,
    /// Unix ms of the last change.
    pub updated_at: i64,
}

/// A page of merchants.
#[derive(Serialize, ToSchema)]
pub struct MerchantPage {
    /// By appid.
    pub merchants: Vec<MerchantView>,
    /// Pass as `after` for the next page (`null`: no more).
    pub next_after: Option<String>,
}

/// What a reconciliation changed.
#[derive(Serialize, ToSchema)]
pub struct ReconcileView {
    /// Merchants whose refresh token was restored from WeChat's list.
    pub restored: usize,
    /// Merchants de-authorized because WeChat's list no longer has them.
    pub deauthorized: usize,
}

/// The file's platform `component_appid`, if any.
fn file_platform<'s>(state: &'s AdminApi, component_appid: &str) -> Option<&'s PlatformConfig> {
    state
        .config
        .platforms
        .iter()
        .find(|p| p.component_appid == component_appid)
}

fn is_file_platform(state: &AdminApi, component_appid: &str) -> bool {
    file_platform(state, component_appid).is_some()
}

fn check(p: &PlatformConfig) -> Result<(), AppError> {
    p.check().map_err(|e| invalid(e.to_string()))?;
    if p.secret
        .as_ref()
        .is_none_or(|s| s.is_empty() || s.expose().len() > 128)
    {
        return Err(invalid("secret must be 1–128 characters"));
    }
    Ok(())
}

/// The settings and sealed secrets of `p`, as a record at `now`.
fn record_of(
    state: &AdminApi,
    p: &PlatformConfig,
    enabled: bool,
    now: i64,
) -> ManagedPlatformRecord {
    let secret = p
        .secret
        .clone()
        .unwrap_or_else(|| Secret::new(String::new()));
    let plain = zeroize::Zeroizing::new(
        serde_json::to_vec(&PlatformSecrets::of(p, &secret)).expect("plain data"),
    );
    ManagedPlatformRecord {
        appid: p.component_appid.clone(),
        settings: serde_json::to_string(&PlatformSettings::of(p)).expect("plain data"),
        sealed: Some(
            state
                .keys
                .keyring
                .seal(&plain, &platform_aad(&p.component_appid, &p.api_base)),
        ),
        key_id: Some(state.keys.keyring.current_id()),
        enabled,
        deleted: false,
        rev: 0,
        created_at: now,
        updated_at: now,
    }
}

async fn view_of(
    state: &AdminApi,
    component_appid: &str,
    source: Source,
    enabled: bool,
    settings: &PlatformSettings,
    times: (i64, i64, i64),
) -> Result<PlatformView, AppError> {
    let served = state.platforms.platform(component_appid);
    let has_ticket = state
        .store
        .platform_ticket(component_appid)
        .await?
        .is_some();
    let merchants =
        usize::try_from(state.store.count_authorized(component_appid).await?).unwrap_or_default();
    let load_error = (source == Source::Managed && enabled && served.is_none()).then(|| {
        "not loaded: its secrets do not open with this instance's data keys, or its settings do not parse (see the log)".to_owned()
    });
    Ok(PlatformView {
        component_appid: component_appid.to_owned(),
        source: match source {
            Source::File => "file",
            _ => "managed",
        }
        .to_owned(),
        enabled,
        served: served.is_some(),
        api_base: redact_url(&settings.api_base),
        webhook_url: settings.webhook_url.as_deref().map(redact_webhook_url),
        has_ticket,
        merchants,
        rev: times.0,
        created_at: times.1,
        updated_at: times.2,
        load_error,
    })
}

/// The view of one platform (the file's or a live managed one).
async fn platform_view(state: &AdminApi, component_appid: &str) -> Result<PlatformView, AppError> {
    if let Some(p) = file_platform(state, component_appid) {
        return view_of(
            state,
            component_appid,
            Source::File,
            true,
            &PlatformSettings::of(p),
            (0, 0, 0),
        )
        .await;
    }
    let rec = managed(state, component_appid).await?;
    record_view(state, &rec).await
}

async fn record_view(
    state: &AdminApi,
    rec: &ManagedPlatformRecord,
) -> Result<PlatformView, AppError> {
    let settings: PlatformSettings =
        serde_json::from_str(&rec.settings).unwrap_or(PlatformSettings {
            api_base: String::new(),
            webhook_url: None,
        });
    view_of(
        state,
        &rec.appid,
        Source::Managed,
        rec.enabled,
        &settings,
        (rec.rev, rec.created_at, rec.updated_at),
    )
    .await
}

/// A live managed platform, or 404 (409 for the file's).
async fn managed(
    state: &AdminApi,
    component_appid: &str,
) -> Result<ManagedPlatformRecord, AppError> {
    if is_file_platform(state, component_appid) {
        return Err(AppError::Conflict(format!(
            "platform {component_appid} is defined in the configuration file: change it there"
        )));
    }
    match state.store.managed_platform(component_appid).await? {
        Some(r) if !r.deleted => Ok(r),
        _ => Err(AppError::NotFound(format!(
            "no managed platform {component_appid}"
        ))),
    }
}

/// Register a third-party platform at runtime: every instance serves its URLs and its
/// merchants within `registry_poll_ms`.
#[utoipa::path(post, path = "/v1/admin/platforms", tag = "admin", security(("admin_key" = [])), request_body = CreatePlatform,
    responses((status = 201, body = PlatformView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn create_platform(
    State(state): State<AdminApi>,
    admin: Admin,
    JsonBody(req): JsonBody<CreatePlatform>,
) -> Result<Response, AppError> {
    let api_base = new_api_base(&state, req.api_base, "platforms")?;
    let p = PlatformConfig {
        component_appid: req.component_appid,
        secret: Some(Secret::new(req.secret)),
        secret_env: None,
        token: Secret::new(req.token),
        encoding_aes_key: Secret::new(req.encoding_aes_key),
        api_base,
        webhook_url: req.webhook_url,
        webhook_secret: req.webhook_secret.map(Secret::new),
    };
    check(&p)?;
    check_api_base_target(&state, &p.api_base).await?;
    if let Some(url) = &p.webhook_url {
        check_target(&state, "webhook_url", url).await?;
    }
    if is_file_platform(&state, &p.component_appid) {
        return Err(AppError::Conflict(format!(
            "platform {} is defined in the configuration file",
            p.component_appid
        )));
    }
    if state.broker.registry.entry(&p.component_appid).is_some() {
        return Err(AppError::Conflict(format!(
            "{} is an app's appid (a platform's events and an app's pushes would mix)",
            p.component_appid
        )));
    }
    let enabled = req.enabled.unwrap_or(true);
    let record = record_of(&state, &p, enabled, now_ms());
    let audit_row = audit_record(
        &admin,
        "platform.create",
        &p.component_appid,
        json!({"api_base": redact_url(&p.api_base), "webhook": p.webhook_url.is_some(), "webhook_host": p.webhook_url.as_deref().map(host_of), "enabled": enabled}),
    );
    if state
        .store
        .put_managed_platform(&record, true, &audit_row)
        .await?
        .is_none()
    {
        return Err(AppError::Conflict(format!(
            "platform {} exists",
            p.component_appid
        )));
    }
    logged(&audit_row);
    sync(&state).await;
    let v = platform_view(&state, &p.component_appid).await?;
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

/// Every platform: the file's and the managed ones.
#[utoipa::path(get, path = "/v1/admin/platforms", tag = "admin", security(("admin_key" = [])),
    responses((status = 200, body = PlatformList), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn list_platforms(
    State(state): State<AdminApi>,
    _admin: Admin,
) -> Result<Json<PlatformList>, AppError> {
    let mut platforms = Vec::new();
    for p in &state.config.platforms {
        platforms.push(
            view_of(
                &state,
                &p.component_appid,
                Source::File,
                true,
                &PlatformSettings::of(p),
                (0, 0, 0),
            )
            .await?,
        );
    }
    let managed = crate::store::read_all_after(
        0,
        |after, limit| state.store.managed_platforms_after(after, limit),
        |r| r.rev,
    )
    .await?;
    for rec in managed {
        if !rec.deleted && !is_file_platform(&state, &rec.appid) {
            platforms.push(record_view(&state, &rec).await?);
        }
    }
    platforms.sort_by(|a, b| a.component_appid.cmp(&b.component_appid));
    Ok(Json(PlatformList { platforms }))
}

/// One platform.
#[utoipa::path(get, path = "/v1/admin/platforms/{component_appid}", tag = "admin", security(("admin_key" = [])),
    params(("component_appid" = String, Path, description = "the platform")),
    responses((status = 200, body = PlatformView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn get_platform(
    State(state): State<AdminApi>,
    _admin: Admin,
    Path(component_appid): Path<String>,
) -> Result<Json<PlatformView>, AppError> {
    platform_view(&state, &component_appid).await.map(Json)
}

/// Change a managed platform: only the fields given. Its merchants are served throughout;
/// their tokens are rebuilt with the new settings.
#[utoipa::path(patch, path = "/v1/admin/platforms/{component_appid}", tag = "admin", security(("admin_key" = [])),
    params(("component_appid" = String, Path, description = "the platform")), request_body = UpdatePlatform,
    responses((status = 200, body = PlatformView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn update_platform(
    State(state): State<AdminApi>,
    admin: Admin,
    Path(component_appid): Path<String>,
    JsonBody(req): JsonBody<UpdatePlatform>,
) -> Result<Json<PlatformView>, AppError> {
    let current = managed(&state, &component_appid).await?;
    let settings: PlatformSettings = serde_json::from_str(&current.settings)
        .map_err(|e| AppError::Internal(format!("stored settings of {component_appid}: {e}")))?;
    let plain = current
        .sealed
        .as_deref()
        .and_then(|s| {
            state
                .keys
                .keyring
                .open(s, &platform_aad(&component_appid, &settings.api_base))
        })
        .ok_or_else(|| {
            AppError::Internal(format!("the secrets of {component_appid} do not open"))
        })?;
    let plain = zeroize::Zeroizing::new(plain);
    let secrets: PlatformSecrets = serde_json::from_slice(&plain).map_err(|_| {
        AppError::Internal(format!("the secrets of {component_appid} do not parse"))
    })?;
    let mut p = settings.config(&component_appid, &secrets);
    let mut changed = serde_json::Map::new();
    let secret_given = req.secret.is_some();
    let api_base_given = req.api_base.is_some();
    let webhook_secret_given = req.webhook_secret.is_some();
    let mut webhook_moved = false;
    if let Some(s) = req.secret {
        p.secret = Some(Secret::new(s));
        changed.insert("secret".into(), json!("changed"));
    }
    if let Some(t) = req.token {
        p.token = Secret::new(t);
        changed.insert("token".into(), json!("changed"));
    }
    if let Some(k) = req.encoding_aes_key {
        p.encoding_aes_key = Secret::new(k);
        changed.insert("encoding_aes_key".into(), json!("changed"));
    }
    if let Some(b) = req.api_base {
        check_api_base_move(&state, &p.api_base, &b, secret_given, "platforms")?;
        changed.insert("api_base".into(), json!(redact_url(&b)));
        p.api_base = b;
    }
    if let Some(w) = req.webhook_url {
        if w.is_some() && w != p.webhook_url {
            // As an app's webhook, whose push settings are replaced whole: a webhook moves
            // with a secret entered for it, so deliveries signed with the secret a receiver
            // trusts never go to a host chosen with the admin key alone.
            if !webhook_secret_given {
                return Err(invalid(
                    "changing webhook_url requires webhook_secret in the same request",
                ));
            }
            webhook_moved = true;
        }
        // Not the URL: a webhook's path may carry a token of its own. Its host, though.
        changed.insert(
            "webhook_url".into(),
            json!(if w.is_some() { "changed" } else { "removed" }),
        );
        changed.insert("webhook_host".into(), json!(w.as_deref().map(host_of)));
        p.webhook_url = w;
    }
    if let Some(s) = req.webhook_secret {
        p.webhook_secret = Some(Secret::new(s));
        changed.insert("webhook_secret".into(), json!("changed"));
    }
    let enabled = req.enabled.unwrap_or(current.enabled);
    if enabled != current.enabled {
        changed.insert("enabled".into(), json!(enabled));
    }
    check(&p)?;
    if api_base_given {
        check_api_base_target(&state, &p.api_base).await?;
    }
    if let Some(url) = p.webhook_url.as_deref().filter(|_| webhook_moved) {
        check_target(&state, "webhook_url", url).await?;
    }
    let mut record = record_of(&state, &p, enabled, now_ms());
    record.created_at = current.created_at;
    record.rev = current.rev;
    let audit_row = audit_record(
        &admin,
        "platform.update",
        &component_appid,
        Value::Object(changed),
    );
    if state
        .store
        .put_managed_platform(&record, false, &audit_row)
        .await?
        .is_none()
    {
        return Err(match state.store.managed_platform(&component_appid).await {
            Ok(Some(r)) if !r.deleted => AppError::Conflict(format!(
                "platform {component_appid} was changed meanwhile by someone else: read it again and retry"
            )),
            _ => AppError::NotFound(format!("no managed platform {component_appid}")),
        });
    }
    logged(&audit_row);
    sync(&state).await;
    platform_view(&state, &component_appid).await.map(Json)
}

/// Delete a managed platform: every instance stops serving its URLs and its merchants. Its
/// ticket and its merchants' refresh tokens stay in the database: registering the platform
/// again resumes without asking any merchant to authorize again.
#[utoipa::path(delete, path = "/v1/admin/platforms/{component_appid}", tag = "admin", security(("admin_key" = [])),
    params(("component_appid" = String, Path, description = "the platform")),
    responses((status = 204, description = "deleted"), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn delete_platform(
    State(state): State<AdminApi>,
    admin: Admin,
    Path(component_appid): Path<String>,
) -> Result<StatusCode, AppError> {
    managed(&state, &component_appid).await?;
    let audit_row = audit_record(&admin, "platform.delete", &component_appid, json!({}));
    if state
        .store
        .delete_managed_platform(&component_appid, now_ms(), &audit_row)
        .await?
        .is_none()
    {
        return Err(AppError::NotFound(format!(
            "no managed platform {component_appid}"
        )));
    }
    logged(&audit_row);
    sync(&state).await;
    Ok(StatusCode::NO_CONTENT)
}

/// A platform's merchants (authorized or not any more), in appid order.
#[utoipa::path(get, path = "/v1/admin/platforms/{component_appid}/merchants", tag = "admin", security(("admin_key" = [])),
    params(("component_appid" = String, Path, description = "the platform"), PageQuery),
    responses((status = 200, body = MerchantPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn merchants(
    State(state): State<AdminApi>,
    _admin: Admin,
    Path(component_appid): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<Json<MerchantPage>, AppError> {
    let limit = limit_of(q.limit)?;
    let known = is_file_platform(&state, &component_appid)
        || managed(&state, &component_appid).await.is_ok();
    if !known {
        return Err(AppError::NotFound(format!("no platform {component_appid}")));
    }
    let after = q.after.unwrap_or_default();
    let rows = state.store.platform_authorizers(&component_appid).await?;
    let mut page: Vec<MerchantView> = rows
        .into_iter()
        .filter(|r| r.authorizer_appid > after)
        .take(limit + 1)
        .map(|r| MerchantView {
            served: state
                .broker
                .app(&r.authorizer_appid)
                .is_some_and(|a| a.platform.as_deref() == Some(component_appid.as_str())),
            func_ids: serde_json::from_str(&r.func_ids).unwrap_or_default(),
            authorizer_appid: r.authorizer_appid,
            authorized: r.authorized,
            auth_time: r.auth_time,
            updated_at: r.updated_at,
        })
        .collect();
    let more = page.len() > limit;
    page.truncate(limit);
    Ok(Json(MerchantPage {
        next_after: more
            .then(|| page.last().map(|m| m.authorizer_appid.clone()))
            .flatten(),
        merchants: page,
    }))
}

/// Reconcile a platform's merchants with WeChat's authorizer list now (the nightly job, on
/// demand): refresh tokens missing or different here are restored from the list; merchants
/// the list no longer has are de-authorized.
#[utoipa::path(post, path = "/v1/admin/platforms/{component_appid}/reconcile", tag = "admin", security(("admin_key" = [])),
    params(("component_appid" = String, Path, description = "the platform")),
    responses((status = 200, body = ReconcileView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, description = "no ticket yet", body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, description = "WeChat or the database failed (merchants restored or de-authorized before the failure stay so, and are in the audit log)", body = ErrorBody)))]
pub async fn reconcile(
    State(state): State<AdminApi>,
    admin: Admin,
    Path(component_appid): Path<String>,
) -> Result<Json<ReconcileView>, AppError> {
    if state.platforms.platform(&component_appid).is_none() {
        return Err(AppError::NotFound(format!(
            "platform {component_appid} is not served"
        )));
    }
    if state
        .store
        .platform_ticket(&component_appid)
        .await?
        .is_none()
    {
        return Err(AppError::Conflict(format!(
            "platform {component_appid} has no component_verify_ticket yet: WeChat pushes one to its event URL every 10 minutes"
        )));
    }
    let r = match state.platforms.reconcile_platform(&component_appid).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(platform = %component_appid, error = %e, "reconciliation failed");
            // Audited too: a run that failed part-way may have changed merchants before.
            audit(
                &state,
                &admin,
                "platform.reconcile",
                &component_appid,
                json!({"failed": true}),
            )
            .await;
            return Err(AppError::Unavailable {
                retry_after_secs: 60,
            });
        }
    };
    audit(
        &state,
        &admin,
        "platform.reconcile",
        &component_appid,
        json!({"restored": r.restored, "deauthorized": r.deauthorized}),
    )
    .await;
    Ok(Json(ReconcileView {
        restored: r.restored,
        deauthorized: r.deauthorized,
    }))
}

/// The routes of this area.
pub fn router() -> Router<AdminApi> {
    Router::new()
        .route(
            "/v1/admin/platforms",
            get(list_platforms).post(create_platform),
        )
        .route(
            "/v1/admin/platforms/{component_appid}",
            get(get_platform)
                .patch(update_platform)
                .delete(delete_platform),
        )
        .route(
            "/v1/admin/platforms/{component_appid}/merchants",
            get(merchants),
        )
        .route(
            "/v1/admin/platforms/{component_appid}/reconcile",
            post(reconcile),
        )
}
