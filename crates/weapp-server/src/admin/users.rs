//! Users and the audit log: find users, revoke their sessions, read what admins did.

use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;

use super::auth::Admin;
use super::common::{audit_record, audited_read, limit_of, logged, PageQuery};
use super::service::AdminApi;
use crate::http::{AppError, ErrorBody};
use crate::shared::now_ms;
use crate::store::AuditRecord;

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

/// The routes of users and the audit log.
pub(super) fn router() -> Router<AdminApi> {
    Router::new()
        .route("/v1/admin/audit", get(audit_log))
        .route("/v1/admin/users", get(find_users))
        .route("/v1/admin/users/{appid}/{openid}/revoke", post(revoke_user))
}
