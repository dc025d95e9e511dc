//! The admin API (`/v1/admin/…`): apps and broker clients managed at runtime (stored in the
//! database, secrets sealed; every instance picks a change up within `registry_poll_ms`), token
//! health, users and sessions, push events, the audit log.
//!
//! Authenticated by `[[admins]]` keys (Bearer; compared in constant time; a failure is one warn
//! line — source and reason, never the key — and counts against the source, which is refused
//! before its key is looked at once it fails too often), each admin rate-limited, every change
//! audit-logged (database and log line) with what it granted or where it points, and every read
//! of users' data (a phone number, pushed messages) audited before it is answered. A change may
//! name the version it was made from (`If-Match`, the `ETag`/`rev` read): 412 once that version
//! is gone. No answer ever carries a secret, except a new broker client's key, once, in the
//! answer that creates it (or rotates it).

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;
use weapp::token::TokenKey;
use weapp::TokenMode;

use super::service::AdminApi;
use crate::broker::registry::{app_aad, AppEntry, AppSecrets, AppSettings, PushSettings, Source};
use crate::config::{AppConfig, PushConfig, Secret, WarmPolicy, SCOPES};
use crate::http::{auth_failed, auth_gate, bearer, ClientIp, JsonBody};
use crate::http::{AppError, ErrorBody};
use crate::push::handlers::{has_webhook, EventOut};
use crate::shared::now_ms;
use crate::store::{AuditRecord, ManagedAppRecord, ManagedClientRecord};

/// An authenticated administrator.
#[derive(Debug, Clone)]
pub struct Admin {
    /// The admin's name (from `[[admins]]`).
    pub name: String,
    /// Where the request came from.
    pub ip: ClientIp,
}

impl FromRequestParts<AdminApi> for Admin {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AdminApi,
    ) -> Result<Self, Self::Rejection> {
        let ip = crate::http::client_ip(state, &parts.headers, &parts.extensions);
        let ip = ClientIp(ip);
        // A source refused here is not logged: past the limit, its requests would be lines
        // without bound.
        auth_gate(state, ip).await?;
        let presented = bearer(&parts.headers);
        let Some(name) = presented.and_then(|k| state.admin(k)) else {
            // One line per failure (at most `auth_failure_limit_per_minute` per source): where
            // from and why — never what was presented.
            let reason = match presented {
                Some(_) => "unknown key",
                None if parts
                    .headers
                    .contains_key(axum::http::header::AUTHORIZATION) =>
                {
                    "not a Bearer credential"
                }
                None => "no key",
            };
            tracing::warn!(
                source = %ip.0.map_or_else(|| "unknown".to_owned(), |a| a.to_string()),
                reason,
                "admin authentication failed"
            );
            auth_failed(state, ip, "admin").await;
            return Err(AppError::Unauthorized(
                "missing or unknown admin key (Authorization: Bearer <admin key>)".into(),
            ));
        };
        let name = name.to_owned();
        state
            .admin_limiter
            .hit(name_key(&name))
            .await
            .map_err(|retry_after_secs| AppError::RateLimited { retry_after_secs })?;
        Ok(Admin { name, ip })
    }
}

fn name_key(name: &str) -> u128 {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(name.as_bytes());
    u128::from_be_bytes(d[..16].try_into().expect("16 bytes"))
}

/// `Some(None)` for an explicit `null`, `None` for an absent field.
pub(crate) fn double_option<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

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

/// `POST /v1/admin/clients`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateClient {
    /// Unique name.
    #[schema(min_length = 1, max_length = 64)]
    pub name: String,
    /// Apps it may use (`"*"`: all).
    pub apps: Vec<String>,
    /// Scopes (default `token:read`, `token:invalidate`).
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    /// Enabled (default) or not.
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// `PATCH /v1/admin/clients/{name}`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateClient {
    /// New apps.
    #[serde(default)]
    pub apps: Option<Vec<String>>,
    /// New scopes.
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    /// Enable or disable.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Issue a new key (shown once in the answer); the old one stops working.
    #[serde(default)]
    pub rotate_key: bool,
}

/// A broker client as shown.
#[derive(Serialize, ToSchema)]
pub struct ClientView {
    /// Its name.
    pub name: String,
    /// `file` or `managed`.
    pub source: String,
    /// Enabled or not.
    pub enabled: bool,
    /// Apps it may use.
    pub apps: Vec<String>,
    /// Its scopes.
    pub scopes: Vec<String>,
    /// Registry revision of its last change.
    pub rev: i64,
    /// Unix ms.
    pub created_at: i64,
    /// The key: only in the answer that creates or rotates it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// A page of clients.
#[derive(Serialize, ToSchema)]
pub struct ClientList {
    /// By name.
    pub clients: Vec<ClientView>,
    /// Pass as `after` for the next page (absent on the last).
    pub next_after: Option<String>,
}

/// `?after=&limit=`.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Start after this appid / id.
    #[serde(default)]
    pub after: Option<String>,
    /// Page size, 1–100 (default 50).
    #[serde(default)]
    pub limit: Option<u32>,
}

pub(crate) fn limit_of(q: Option<u32>) -> Result<usize, AppError> {
    match q.unwrap_or(50) {
        n @ 1..=100 => Ok(n as usize),
        _ => Err(AppError::bad_request(
            "invalid_query",
            "limit must be 1–100",
        )),
    }
}

fn is_appid(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric())
}

pub(crate) fn invalid(message: impl Into<String>) -> AppError {
    AppError::bad_request("invalid_body", message)
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

/// `scheme://host:port` of a URL (empty when it does not parse): where it points, without the
/// credentials, path or query that may carry a secret (what the audit log records of a webhook).
pub(crate) fn host_of(url: &str) -> String {
    reqwest::Url::parse(url)
        .map(|u| {
            format!(
                "{}://{}",
                u.scheme(),
                u.authority().rsplit('@').next().unwrap_or("")
            )
        })
        .unwrap_or_default()
}

fn sandbox_only(what: &str) -> AppError {
    invalid(format!(
        "in the sandbox, {what} talk to the simulator: leave api_base out"
    ))
}

/// The API host of a new app or platform (`what`, for the message): the one given, WeChat's
/// by default; in the sandbox the simulator's, and no other.
pub(crate) fn new_api_base(
    state: &AdminApi,
    given: Option<String>,
    what: &str,
) -> Result<String, AppError> {
    match (&state.config.sandbox_api_base, given) {
        (Some(sim), None) => Ok(sim.clone()),
        (Some(sim), Some(b)) if b.trim_end_matches('/') == sim.trim_end_matches('/') => Ok(b),
        (Some(_), Some(_)) => Err(sandbox_only(what)),
        (None, b) => Ok(b.unwrap_or_else(|| weapp::DEFAULT_BASE_URL.to_owned())),
    }
}

/// Checks moving an app's or a platform's API host from `current` to `new`: the secret goes
/// wherever api_base points, so another host takes the secret again in the same request (or
/// an admin key alone could send the secret anywhere); in the sandbox, only the simulator.
pub(crate) fn check_api_base_move(
    state: &AdminApi,
    current: &str,
    new: &str,
    secret_given: bool,
    what: &str,
) -> Result<(), AppError> {
    if host_of(new) != host_of(current) && !secret_given {
        return Err(invalid(
            "changing api_base to another host requires the secret in the same request",
        ));
    }
    if state
        .config
        .sandbox_api_base
        .as_ref()
        .is_some_and(|sim| new.trim_end_matches('/') != sim.trim_end_matches('/'))
    {
        return Err(sandbox_only(what));
    }
    Ok(())
}

/// 400 `forbidden_target` when `url` (the setting `what`) is, or resolves to, an internal
/// address `webhook_allow_private` does not list. A name that does not resolve now passes
/// with a warning: every delivery resolves and checks it again.
pub(crate) async fn check_target(state: &AdminApi, what: &str, url: &str) -> Result<(), AppError> {
    match state.egress.check_url(url).await {
        Ok(None) => Ok(()),
        Ok(Some(unresolved)) => {
            tracing::warn!(setting = what, host = %unresolved.host, "the host does not resolve now: accepted (a webhook's host is resolved and checked again at every delivery)");
            Ok(())
        }
        Err(crate::egress::TargetError::NotAUrl) => {
            Err(invalid(format!("{what} must be an http(s) URL")))
        }
        Err(e) => Err(AppError::bad_request(
            "forbidden_target",
            format!("{what}: {e}"),
        )),
    }
}

/// [`check_target`] for an API host: the sandbox's simulator (the only one allowed there) and
/// WeChat's own host (the default; some deployments reach it through an internal forward proxy
/// named in /etc/hosts) are exempt.
pub(crate) async fn check_api_base_target(state: &AdminApi, url: &str) -> Result<(), AppError> {
    let url = url.trim_end_matches('/');
    let exempt = url == weapp::DEFAULT_BASE_URL.trim_end_matches('/')
        || state
            .config
            .sandbox_api_base
            .as_deref()
            .is_some_and(|sim| sim.trim_end_matches('/') == url);
    if exempt {
        return Ok(());
    }
    check_target(state, "api_base", url).await
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

/// The audit row of an administrator's action (`detail`: what changed, never a secret).
pub(crate) fn audit_record(
    admin: &Admin,
    action: &str,
    target: &str,
    detail: Value,
) -> AuditRecord {
    AuditRecord {
        id: 0,
        at: now_ms(),
        admin: admin.name.clone(),
        action: action.to_owned(),
        target: target.to_owned(),
        source: admin.ip.0.map(|ip| ip.to_string()).unwrap_or_default(),
        detail: detail.to_string(),
    }
}

/// Logs an action whose audit row was written with the change (the registry's changes). A
/// long detail (a client granted thousands of apps) is cut short in the line; the row keeps it
/// whole.
pub(crate) fn logged(record: &AuditRecord) {
    const MAX_CHARS: usize = 2048;
    let detail = match record.detail.char_indices().nth(MAX_CHARS) {
        Some((end, _)) => std::borrow::Cow::Owned(format!(
            "{}… ({} bytes: the whole detail is in the audit log)",
            &record.detail[..end],
            record.detail.len()
        )),
        None => std::borrow::Cow::Borrowed(record.detail.as_str()),
    };
    tracing::info!(admin = %record.admin, action = %record.action, target = %record.target, detail = %detail, "admin action");
}

/// Writes the audit row of an administrator's read of users' data (a phone number, pushed
/// messages) before the data is answered: no such read without its row. The row names whose
/// data was read, never the data.
async fn audited_read(
    state: &AdminApi,
    admin: &Admin,
    action: &str,
    target: &str,
    detail: Value,
) -> Result<(), AppError> {
    let record = audit_record(admin, action, target, detail);
    state.store.audit(&record).await?;
    logged(&record);
    Ok(())
}

/// Where an app's webhook points, for the audit log: `scheme://host:port` alone (`null`: no
/// webhook). Its path and query are treated as secret (receivers put tokens there).
fn webhook_host(push: Option<&PushConfig>) -> Value {
    match push.and_then(|p| p.webhook_url.as_deref()) {
        Some(url) => json!(host_of(url)),
        None => Value::Null,
    }
}

/// The versions an `If-Match` header accepts: `None` without one (or with `*`), else the
/// registry revisions it names (`"7"`; a weak tag `W/"7"` never matches, as RFC 9110's strong
/// comparison says).
///
/// # Errors
/// 400 for a header that is not a list of quoted revisions.
fn if_match(headers: &HeaderMap) -> Result<Option<Vec<i64>>, AppError> {
    let bad = || {
        AppError::bad_request(
            "invalid_if_match",
            "If-Match must be the ETag (\"<rev>\") of what you read, or *",
        )
    };
    let mut given = false;
    let mut any = false;
    let mut revs = Vec::new();
    for value in headers.get_all(header::IF_MATCH) {
        given = true;
        for tag in value.to_str().map_err(|_| bad())?.split(',') {
            let tag = tag.trim();
            if tag == "*" {
                any = true;
                continue;
            }
            let (weak, quoted) = match tag.strip_prefix("W/") {
                Some(t) => (true, t),
                None => (false, tag),
            };
            let rev = quoted
                .strip_prefix('"')
                .and_then(|t| t.strip_suffix('"'))
                .and_then(|t| t.parse::<i64>().ok())
                .ok_or_else(bad)?;
            if !weak {
                revs.push(rev);
            }
        }
    }
    Ok((given && !any).then_some(revs))
}

/// 412 unless `current` is a version the request's `If-Match` accepts.
fn check_version(expected: Option<&[i64]>, current: i64, what: &str) -> Result<(), AppError> {
    match expected {
        Some(revs) if !revs.contains(&current) => Err(stale(what)),
        _ => Ok(()),
    }
}

fn stale(what: &str) -> AppError {
    AppError::PreconditionFailed(format!(
        "{what} has changed since the version you read (If-Match): read it again, then change it"
    ))
}

/// The ETag of a managed app or client at registry revision `rev`.
fn etag(rev: i64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{rev}\"")).expect("digits")
}

/// Logs an action and writes its audit row after the change: a reconciliation, whose changes
/// are many transactions around WeChat's answers (a failed audit write is logged).
pub(crate) async fn audit(
    state: &AdminApi,
    admin: &Admin,
    action: &str,
    target: &str,
    detail: Value,
) {
    let record = audit_record(admin, action, target, detail);
    logged(&record);
    if let Err(e) = state.store.audit(&record).await {
        tracing::error!(error = %e, action, target, "could not write the audit log");
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

/// Apply this instance's registry now (the others follow within `registry_poll_ms`).
pub(crate) async fn sync(state: &AdminApi) {
    if let Err(e) = state.sync_registry(false).await {
        tracing::warn!(error = %e, "registry: could not apply a change at once");
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

fn check_client(name: &str, apps: &[String], scopes: &[String]) -> Result<(), AppError> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(invalid(
            "name must be 1–64 letters, digits, '-', '_' or '.'",
        ));
    }
    if apps.is_empty() || apps.len() > 10_000 {
        return Err(invalid("apps must name 1–10,000 apps (or \"*\")"));
    }
    if let Some(bad) = apps.iter().find(|a| a.as_str() != "*" && !is_appid(a)) {
        return Err(invalid(format!("`{bad}` is not an appid")));
    }
    if scopes
        .iter()
        .enumerate()
        .any(|(i, s)| scopes[..i].contains(s))
    {
        return Err(invalid("scopes must not repeat"));
    }
    if let Some(bad) = scopes.iter().find(|s| !SCOPES.contains(&s.as_str())) {
        return Err(invalid(format!(
            "unknown scope {bad} (known: {})",
            SCOPES.join(", ")
        )));
    }
    Ok(())
}

fn client_view(e: &crate::broker::registry::ClientEntry, key: Option<String>) -> ClientView {
    ClientView {
        name: e.client.name.clone(),
        source: match e.source {
            Source::File => "file",
            Source::Managed | Source::Platform => "managed",
        }
        .into(),
        enabled: e.enabled,
        apps: e.client.apps().to_vec(),
        scopes: e.client.scopes().to_vec(),
        rev: e.rev,
        created_at: e.created_at,
        key,
    }
}

fn new_key() -> (String, Vec<u8>) {
    use sha2::{Digest, Sha256};
    let key = format!("wck_{}", hex::encode(rand::random::<[u8; 20]>()));
    let hash = Sha256::digest(key.as_bytes()).to_vec();
    (key, hash)
}

/// Create a broker client: its key is in this answer and nowhere else, ever.
#[utoipa::path(post, path = "/v1/admin/clients", tag = "admin", security(("admin_key" = [])), request_body = CreateClient,
    responses((status = 201, body = ClientView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn create_client(
    State(state): State<AdminApi>,
    admin: Admin,
    JsonBody(req): JsonBody<CreateClient>,
) -> Result<Response, AppError> {
    let scopes = req
        .scopes
        .unwrap_or_else(|| vec!["token:read".into(), "token:invalidate".into()]);
    check_client(&req.name, &req.apps, &scopes)?;
    if state
        .broker
        .registry
        .client_entry(&req.name)
        .is_some_and(|e| e.source == Source::File)
    {
        return Err(AppError::Conflict(format!(
            "client {} is defined in the configuration file",
            req.name
        )));
    }
    let (key, hash) = new_key();
    let now = now_ms();
    let enabled = req.enabled.unwrap_or(true);
    let record = ManagedClientRecord {
        name: req.name.clone(),
        key_sha256: Some(hash),
        apps: serde_json::to_string(&req.apps).expect("plain data"),
        scopes: serde_json::to_string(&scopes).expect("plain data"),
        enabled,
        deleted: false,
        rev: 0,
        created_at: now,
        updated_at: now,
    };
    let audit_row = audit_record(
        &admin,
        "client.create",
        &req.name,
        json!({"apps": req.apps, "scopes": scopes, "enabled": enabled}),
    );
    let Some(rev) = state
        .store
        .put_managed_client(&record, true, &audit_row)
        .await?
    else {
        return Err(AppError::Conflict(format!("client {} exists", req.name)));
    };
    logged(&audit_row);
    sync(&state).await;
    // From the committed record: the key must reach the caller whatever this instance's
    // registry is doing.
    Ok((
        StatusCode::CREATED,
        Json(ClientView {
            name: req.name,
            source: "managed".into(),
            enabled,
            apps: req.apps,
            scopes,
            rev,
            created_at: now,
            key: Some(key),
        }),
    )
        .into_response())
}

/// Broker clients in name order, paged (never their keys).
#[utoipa::path(get, path = "/v1/admin/clients", tag = "admin", security(("admin_key" = [])), params(PageQuery),
    responses((status = 200, body = ClientList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn list_clients(
    State(state): State<AdminApi>,
    _admin: Admin,
    Query(q): Query<PageQuery>,
) -> Result<Json<ClientList>, AppError> {
    let limit = limit_of(q.limit)?;
    let after = q.after.unwrap_or_default();
    let mut entries: Vec<_> = state
        .broker
        .registry
        .client_entries()
        .into_iter()
        .filter(|e| e.client.name > after)
        .collect();
    entries.sort_by(|a, b| a.client.name.cmp(&b.client.name));
    let more = entries.len() > limit;
    entries.truncate(limit);
    Ok(Json(ClientList {
        next_after: more
            .then(|| entries.last().map(|e| e.client.name.clone()))
            .flatten(),
        clients: entries.iter().map(|e| client_view(e, None)).collect(),
    }))
}

async fn managed_client(state: &AdminApi, name: &str) -> Result<(), AppError> {
    match state.broker.registry.client_entry(name) {
        Some(e) if e.source == Source::File => Err(AppError::Conflict(format!(
            "client {name} is defined in the configuration file: change it there"
        ))),
        Some(_) => Ok(()),
        None => Err(AppError::NotFound(format!("no client {name}"))),
    }
}

/// Change a managed client: apps, scopes, enabled, or a new key (shown once). With
/// `If-Match: "<rev>"` (its `rev` as listed), only that version is changed: 412 once someone
/// else has changed it.
#[utoipa::path(patch, path = "/v1/admin/clients/{name}", tag = "admin", security(("admin_key" = [])),
    params(("name" = String, Path, description = "the client"), ("If-Match" = Option<String>, Header, description = "the version read (\"<rev>\"): change only that version")), request_body = UpdateClient,
    responses((status = 200, body = ClientView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 412, description = "changed since the version in If-Match", body = ErrorBody), (status = 413, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn update_client(
    State(state): State<AdminApi>,
    admin: Admin,
    Path(name): Path<String>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<UpdateClient>,
) -> Result<Json<ClientView>, AppError> {
    let expected = if_match(&headers)?;
    managed_client(&state, &name).await?;
    // From the database, not this instance's copy (which may be a poll behind).
    let current = match state.store.managed_client(&name).await? {
        Some(c) if !c.deleted => c,
        _ => return Err(AppError::NotFound(format!("no client {name}"))),
    };
    check_version(expected.as_deref(), current.rev, &format!("client {name}"))?;
    let stored = |json: &str| -> Result<Vec<String>, AppError> {
        serde_json::from_str(json)
            .map_err(|_| AppError::Internal(format!("stored lists of client {name} do not parse")))
    };
    let apps = match req.apps {
        Some(a) => a,
        None => stored(&current.apps)?,
    };
    let scopes = match req.scopes {
        Some(s) => s,
        None => stored(&current.scopes)?,
    };
    check_client(&name, &apps, &scopes)?;
    let enabled = req.enabled.unwrap_or(current.enabled);
    let (key, hash) = if req.rotate_key {
        let (k, h) = new_key();
        (Some(k), Some(h))
    } else {
        (None, None)
    };
    let record = ManagedClientRecord {
        name: name.clone(),
        key_sha256: hash,
        apps: serde_json::to_string(&apps).expect("plain data"),
        scopes: serde_json::to_string(&scopes).expect("plain data"),
        enabled,
        deleted: false,
        rev: current.rev,
        created_at: current.created_at,
        updated_at: now_ms(),
    };
    let audit_row = audit_record(
        &admin,
        "client.update",
        &name,
        json!({"apps": apps, "scopes": scopes, "enabled": enabled, "key": if req.rotate_key { "rotated" } else { "kept" }}),
    );
    let Some(rev) = state
        .store
        .put_managed_client(&record, false, &audit_row)
        .await?
    else {
        if expected.is_some() {
            return Err(stale(&format!("client {name}")));
        }
        return Err(AppError::Conflict(format!(
            "client {name} was changed or deleted meanwhile: read it again and retry"
        )));
    };
    logged(&audit_row);
    sync(&state).await;
    Ok(Json(ClientView {
        name,
        source: "managed".into(),
        enabled,
        apps,
        scopes,
        rev,
        created_at: current.created_at,
        key,
    }))
}

/// Delete a managed client: its key stops working on every instance.
#[utoipa::path(delete, path = "/v1/admin/clients/{name}", tag = "admin", security(("admin_key" = [])),
    params(("name" = String, Path, description = "the client")),
    responses((status = 204, description = "deleted"), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn delete_client(
    State(state): State<AdminApi>,
    admin: Admin,
    Path(name): Path<String>,
) -> Result<StatusCode, AppError> {
    managed_client(&state, &name).await?;
    let audit_row = audit_record(&admin, "client.delete", &name, json!({}));
    if state
        .store
        .delete_managed_client(&name, now_ms(), &audit_row)
        .await?
        .is_none()
    {
        return Err(AppError::NotFound(format!("no client {name}")));
    }
    logged(&audit_row);
    sync(&state).await;
    Ok(StatusCode::NO_CONTENT)
}

/// One audit record.
#[derive(Serialize, ToSchema)]
pub struct AuditView {
    /// Increasing id.
    pub id: i64,
    /// Unix ms.
    pub at: i64,
    /// The administrator.
    pub admin: String,
    /// What they did.
    pub action: String,
    /// To what.
    pub target: String,
    /// From where.
    pub source: String,
    /// What changed (never a secret).
    pub detail: Value,
}

/// A page of the audit log.
#[derive(Serialize, ToSchema)]
pub struct AuditPage {
    /// Oldest first.
    pub records: Vec<AuditView>,
    /// Pass as `after` for the next page.
    pub next_after: Option<String>,
}

/// The administrators' audit log, oldest first.
#[utoipa::path(get, path = "/v1/admin/audit", tag = "admin", security(("admin_key" = [])), params(PageQuery),
    responses((status = 200, body = AuditPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn audit_log(
    State(state): State<AdminApi>,
    _admin: Admin,
    Query(q): Query<PageQuery>,
) -> Result<Json<AuditPage>, AppError> {
    let limit = limit_of(q.limit)?;
    let after = match q.after.as_deref() {
        None | Some("") => 0,
        Some(a) => a
            .parse::<i64>()
            .map_err(|_| AppError::bad_request("invalid_query", "after must be a record id"))?,
    };
    let rows = state.store.audit_after(after, limit as i64 + 1).await?;
    let more = rows.len() > limit;
    let records: Vec<AuditView> = rows
        .into_iter()
        .take(limit)
        .map(|r| AuditView {
            id: r.id,
            at: r.at,
            admin: r.admin,
            action: r.action,
            target: r.target,
            source: r.source,
            detail: serde_json::from_str(&r.detail).unwrap_or(Value::Null),
        })
        .collect();
    Ok(Json(AuditPage {
        next_after: more
            .then(|| records.last().map(|r| r.id.to_string()))
            .flatten(),
        records,
    }))
}

/// `?appid=&openid=` or `?unionid=`.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UserQuery {
    /// The app (with `openid`).
    #[serde(default)]
    pub appid: Option<String>,
    /// The user in that app.
    #[serde(default)]
    pub openid: Option<String>,
    /// The person across apps.
    #[serde(default)]
    pub unionid: Option<String>,
}

/// A user as shown (no session key, no session tokens).
#[derive(Serialize, ToSchema)]
pub struct UserView {
    /// The app.
    pub appid: String,
    /// openid.
    pub openid: String,
    /// unionid.
    pub unionid: Option<String>,
    /// Bound phone number.
    pub phone_number: Option<String>,
    /// Unix ms of the first login.
    pub created_at: i64,
    /// Sessions alive now.
    pub sessions: i64,
}

/// Users found.
#[derive(Serialize, ToSchema)]
pub struct UserList {
    /// Matching users.
    pub users: Vec<UserView>,
}

/// Find a user by (appid, openid) or every account of a unionid, with their live sessions.
/// Each user shown is audited first (`user.read`: which admin, whose appid and openid, whether
/// a phone number was shown — never the number).
#[utoipa::path(get, path = "/v1/admin/users", tag = "admin", security(("admin_key" = [])), params(UserQuery),
    responses((status = 200, body = UserList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn find_users(
    State(state): State<AdminApi>,
    admin: Admin,
    Query(q): Query<UserQuery>,
) -> Result<Json<UserList>, AppError> {
    let by = if q.unionid.is_some() {
        "unionid"
    } else {
        "openid"
    };
    let bounded = |v: &str| !v.is_empty() && v.len() <= 128;
    let pairs: Vec<(String, String)> = match (q.appid, q.openid, q.unionid) {
        (Some(a), Some(o), None) if bounded(&a) && bounded(&o) => vec![(a, o)],
        (None, None, Some(u)) if bounded(&u) => state.store.users_by_unionid(&u).await?,
        _ => {
            return Err(AppError::bad_request(
                "invalid_query",
                "give appid and openid, or unionid (each 1–128 characters)",
            ))
        }
    };
    let now = now_ms();
    let mut users = Vec::new();
    for (appid, openid) in pairs.into_iter().take(100) {
        if let Some(u) = state.store.user_by_openid(&appid, &openid).await? {
            let sessions = state.store.count_sessions(u.id, now).await?;
            audited_read(
                &state,
                &admin,
                "user.read",
                &format!("{}/{}", u.appid, u.openid),
                json!({"appid": u.appid, "openid": u.openid, "phone_number": u.phone_number.is_some(), "by": by}),
            )
            .await?;
            users.push(UserView {
                appid: u.appid,
                openid: u.openid,
                unionid: u.unionid,
                phone_number: u.phone_number,
                created_at: u.created_at,
                sessions,
            });
        }
    }
    Ok(Json(UserList { users }))
}

/// Sessions ended.
#[derive(Serialize, ToSchema)]
pub struct Revoked {
    /// How many.
    pub revoked: u64,
}

/// End every session of a user ("log them out everywhere").
#[utoipa::path(post, path = "/v1/admin/users/{appid}/{openid}/revoke", tag = "admin", security(("admin_key" = [])),
    params(("appid" = String, Path, description = "the app"), ("openid" = String, Path, description = "the user")),
    responses((status = 200, body = Revoked), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn revoke_user(
    State(state): State<AdminApi>,
    admin: Admin,
    Path((appid, openid)): Path<(String, String)>,
) -> Result<Json<Revoked>, AppError> {
    let user = state
        .store
        .user_by_openid(&appid, &openid)
        .await?
        .ok_or_else(|| AppError::NotFound("no such user".into()))?;
    let record = audit_record(
        &admin,
        "user.revoke",
        &format!("{appid}/{openid}"),
        json!({}),
    );
    let revoked = state
        .store
        .delete_user_sessions(user.id, Some(&record))
        .await?;
    logged(&AuditRecord {
        detail: json!({ "revoked": revoked }).to_string(),
        ..record
    });
    Ok(Json(Revoked { revoked }))
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

/// The access-token signing keys.
#[derive(Serialize, ToSchema)]
pub struct SigningKeyList {
    /// Newest first.
    pub keys: Vec<crate::keys::jwt::KeyInfo>,
}

/// `POST /v1/admin/signing-keys/rotate`.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RotateKey {
    /// Sign with the new key at once instead of publishing it
    /// `signing_key_publish_ahead_secs` first (backends with a cached JWKS refetch it when they
    /// meet an unknown kid, but some only after a cool-down).
    #[serde(default)]
    pub immediate: bool,
}

/// The signing keys: `next` (published, not signing yet), `current`, `retired` (published
/// until their tokens expire). Never a private key.
#[utoipa::path(get, path = "/v1/admin/signing-keys", tag = "admin", security(("admin_key" = [])),
    responses((status = 200, body = SigningKeyList), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn signing_keys(
    State(state): State<AdminApi>,
    _admin: Admin,
) -> Result<Json<SigningKeyList>, AppError> {
    Ok(Json(SigningKeyList {
        keys: state.keys.signing_keys().info(now_ms()),
    }))
}

/// Rotate the signing key: a new key is published now and signs from `not_before`; the
/// current one is retired then and stays published until its tokens expire.
#[utoipa::path(post, path = "/v1/admin/signing-keys/rotate", tag = "admin", security(("admin_key" = [])), request_body = RotateKey,
    responses((status = 201, body = SigningKeyList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 413, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn rotate_signing_key(
    State(state): State<AdminApi>,
    admin: Admin,
    JsonBody(req): JsonBody<RotateKey>,
) -> Result<(StatusCode, Json<SigningKeyList>), AppError> {
    let now = now_ms();
    let ahead = if req.immediate {
        0
    } else {
        (state.config.signing_key_publish_ahead_secs as i64).saturating_mul(1000)
    };
    // Its row is written with the key (its target: the new key's id).
    let audit_row = audit_record(
        &admin,
        "signing_key.rotate",
        "",
        json!({"immediate": req.immediate}),
    );
    let kid = state
        .keys
        .add_signing_key(
            now,
            now + ahead,
            crate::store::KeyGuard::Always,
            Some(audit_row.clone()),
        )
        .await?
        .unwrap_or_default();
    logged(&crate::store::AuditRecord {
        target: kid,
        ..audit_row
    });
    Ok((
        StatusCode::CREATED,
        Json(SigningKeyList {
            keys: state.keys.signing_keys().info(now),
        }),
    ))
}

/// Remove a signing key at once (a suspected leak): it is no longer published, and tokens it
/// signed stop verifying here and at every backend that refreshes its JWKS. Removing the
/// current key puts a new one in its place.
#[utoipa::path(delete, path = "/v1/admin/signing-keys/{kid}", tag = "admin", security(("admin_key" = [])),
    params(("kid" = String, Path, description = "the key id")),
    responses((status = 204, description = "removed"), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn delete_signing_key(
    State(state): State<AdminApi>,
    admin: Admin,
    Path(kid): Path<String>,
) -> Result<StatusCode, AppError> {
    let audit_row = audit_record(&admin, "signing_key.delete", &kid, json!({}));
    if state
        .store
        .delete_signing_keys(Some(&kid), now_ms(), 0, Some(&audit_row))
        .await?
        == 0
    {
        return Err(AppError::NotFound(format!("no signing key {kid}")));
    }
    logged(&audit_row);
    state.keys.reload_signing_keys().await?;
    state.keys.signing_tick(now_ms()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The admin routes.
pub fn router() -> Router<AdminApi> {
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
        .route("/v1/admin/clients", get(list_clients).post(create_client))
        .route(
            "/v1/admin/clients/{name}",
            axum::routing::patch(update_client).delete(delete_client),
        )
        .route("/v1/admin/audit", get(audit_log))
        .route("/v1/admin/users", get(find_users))
        .route("/v1/admin/users/{appid}/{openid}/revoke", post(revoke_user))
        .route("/v1/admin/fleet", get(fleet))
        .route("/v1/admin/signing-keys", get(signing_keys))
        .route("/v1/admin/signing-keys/rotate", post(rotate_signing_key))
        .route(
            "/v1/admin/signing-keys/{kid}",
            axum::routing::delete(delete_signing_key),
        )
}
