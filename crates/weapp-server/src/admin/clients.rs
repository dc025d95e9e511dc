//! Broker clients (`/v1/admin/clients`): keys with apps and scopes, shown once when made.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::auth::Admin;
use super::common::{
    audit_record, check_version, if_match, invalid, is_appid, limit_of, logged, stale, sync,
    PageQuery,
};
use super::service::AdminApi;
use crate::broker::registry::Source;
use crate::config::SCOPES;
use crate::http::JsonBody;
use crate::http::{AppError, ErrorBody};
use crate::shared::now_ms;
use crate::store::ManagedClientRecord;

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

/// The routes of broker clients.
pub(super) fn router() -> Router<AdminApi> {
    Router::new()
        .route("/v1/admin/clients", get(list_clients).post(create_client))
        .route(
            "/v1/admin/clients/{name}",
            axum::routing::patch(update_client).delete(delete_client),
        )
}
