//! The signing keys of access tokens, published for other backends to verify them without
//! calling weapp-server per request (`/.well-known/jwks.json`).

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use super::service::Keys;

/// The published signing keys (JWK Set, RFC 7517): the current key, the next one (published
/// before it signs) and retired ones whose tokens may still be alive. Cache it for at most
/// five minutes, and refetch when a token names a kid you do not know.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "tokens",
    responses((status = 200, description = "`{\"keys\": [{\"kty\": \"EC\", \"crv\": \"P-256\", \"x\", \"y\", \"kid\", \"use\": \"sig\", \"alg\": \"ES256\"}]}`", body = Object)))]
pub async fn jwks(State(state): State<Keys>) -> Response {
    let mut resp = Json(state.signing_keys().jwks()).into_response();
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    resp
}

/// Routes of this area.
pub fn router(keys: Keys) -> Router {
    Router::new()
        .route("/.well-known/jwks.json", get(jwks))
        .with_state(keys)
}
