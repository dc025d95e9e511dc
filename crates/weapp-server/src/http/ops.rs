//! Operations: liveness, readiness, Prometheus metrics and the OpenAPI document.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use utoipa::OpenApi;

use crate::state::AppState;

/// The OpenAPI description, generated from the handlers' annotations.
#[derive(OpenApi)]
#[openapi(
    info(title = "weapp-server", description = "WeChat Mini Program login/session service and access-token broker."),
    paths(
        crate::http::session::login, crate::http::session::me, crate::http::session::phone,
        crate::http::session::decrypt, crate::http::session::logout,
        crate::http::broker::access_token, crate::http::broker::invalidate,
        crate::http::broker::cgi_token, crate::http::broker::cgi_stable_token,
        crate::http::push::verify, crate::http::push::receive, crate::http::push::events,
        healthz, readyz, metrics,
    ),
    components(schemas(crate::error::ErrorBody, crate::error::ErrorDetail)),
    modifiers(&Security),
)]
pub struct ApiDoc;

struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer = |desc: &str| {
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(desc.to_owned()))
                    .build(),
            )
        };
        components.add_security_scheme("session", bearer("session token from POST /v1/login"));
        components.add_security_scheme("client_key", bearer("a [[clients]] key"));
    }
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, description = "alive")))]
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Readiness: the database, Redis (if configured) and each app's WeChat endpoint answer.
#[utoipa::path(get, path = "/readyz", tag = "ops", responses((status = 200, description = "ready"), (status = 503, description = "a dependency is down")))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let mut checks = serde_json::Map::new();
    let mut ready = true;
    let mut record = |name: String, result: Result<(), String>| {
        ready &= result.is_ok();
        checks.insert(
            name,
            result.map_or_else(
                |e| json!({"ok": false, "error": e}),
                |()| json!({"ok": true}),
            ),
        );
    };
    let db = tokio::time::timeout(Duration::from_secs(2), state.store.ping()).await;
    record(
        format!("database ({})", state.store.kind()),
        flatten(db.map(|r| r.map_err(|e| e.to_string()))),
    );
    if let Some(redis) = &state.redis {
        let r = tokio::time::timeout(Duration::from_secs(2), redis.ping()).await;
        record(
            "redis".into(),
            flatten(r.map(|r| r.map_err(|e| e.to_string()))),
        );
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build();
    let mut bases: Vec<&str> = state
        .config
        .apps
        .iter()
        .map(|a| a.api_base.as_str())
        .collect();
    bases.sort_unstable();
    bases.dedup();
    for base in bases {
        // Any HTTP answer means the upstream is reachable; only transport failures count.
        let result = match &http {
            Ok(c) => c
                .get(base)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| e.without_url().to_string()),
            Err(e) => Err(e.to_string()),
        };
        record(format!("upstream {base}"), result);
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({"status": if ready { "ready" } else { "not_ready" }, "checks": checks})),
    )
        .into_response()
}

fn flatten(r: Result<Result<(), String>, tokio::time::error::Elapsed>) -> Result<(), String> {
    r.map_err(|_| "timed out".to_owned()).and_then(|x| x)
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, description = "text exposition format")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    let body = state.metrics.render(&state.token_gauges());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// Routes of this area.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
}
