//! Who is calling the admin API: the `[[admins]]` key (Bearer, compared in constant time), the
//! failed-authentication gate and each admin's rate limit.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::service::AdminApi;
use crate::http::AppError;
use crate::http::{auth_failed, auth_gate, bearer, ClientIp};

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

pub(crate) fn name_key(name: &str) -> u128 {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(name.as_bytes());
    u128::from_be_bytes(d[..16].try_into().expect("16 bytes"))
}
