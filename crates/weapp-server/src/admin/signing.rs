//! The access-token signing keys: list, rotate, remove.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::auth::Admin;
use super::common::{audit_record, logged};
use super::service::AdminApi;
use crate::http::JsonBody;
use crate::http::{AppError, ErrorBody};
use crate::shared::now_ms;

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

/// The routes of the signing keys.
pub(super) fn router() -> Router<AdminApi> {
    Router::new()
        .route("/v1/admin/signing-keys", get(signing_keys))
        .route("/v1/admin/signing-keys/rotate", post(rotate_signing_key))
        .route(
            "/v1/admin/signing-keys/{kid}",
            axum::routing::delete(delete_signing_key),
        )
}
