//! What the admin API's handlers share: paging, `If-Match`/`ETag` versions, the audit log's
//! records and lines, and the checks of hosts a change points at.

use axum::http::{header, HeaderMap, HeaderValue};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::auth::Admin;
use super::service::AdminApi;
use crate::http::AppError;
use crate::shared::now_ms;
use crate::store::AuditRecord;

/// `Some(None)` for an explicit `null`, `None` for an absent field.
pub(crate) fn double_option<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
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

pub(crate) fn is_appid(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric())
}

pub(crate) fn invalid(message: impl Into<String>) -> AppError {
    AppError::bad_request("invalid_body", message)
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

pub(crate) fn sandbox_only(what: &str) -> AppError {
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
pub(crate) async fn audited_read(
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

/// The versions an `If-Match` header accepts: `None` without one (or with `*`), else the
/// registry revisions it names (`"7"`; a weak tag `W/"7"` never matches, as RFC 9110's strong
/// comparison says).
///
/// # Errors
/// 400 for a header that is not a list of quoted revisions.
pub(crate) fn if_match(headers: &HeaderMap) -> Result<Option<Vec<i64>>, AppError> {
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
pub(crate) fn check_version(
    expected: Option<&[i64]>,
    current: i64,
    what: &str,
) -> Result<(), AppError> {
    match expected {
        Some(revs) if !revs.contains(&current) => Err(stale(what)),
        _ => Ok(()),
    }
}

pub(crate) fn stale(what: &str) -> AppError {
    AppError::PreconditionFailed(format!(
        "{what} has changed since the version you read (If-Match): read it again, then change it"
    ))
}

/// The ETag of a managed app or client at registry revision `rev`.
pub(crate) fn etag(rev: i64) -> HeaderValue {
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

/// Apply this instance's registry now (the others follow within `registry_poll_ms`).
pub(crate) async fn sync(state: &AdminApi) {
    if let Err(e) = state.sync_registry(false).await {
        tracing::warn!(error = %e, "registry: could not apply a change at once");
    }
}
