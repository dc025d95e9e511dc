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
        crate::http::session::decrypt, crate::http::session::logout, crate::http::session::logout_all,
        crate::http::session::refresh, crate::http::tokens::jwks, crate::http::tokens::introspect,
        crate::http::platforms::events, crate::http::platforms::merchant_push,
        crate::http::broker::access_token, crate::http::broker::invalidate,
        crate::http::broker::cgi_token, crate::http::broker::cgi_stable_token,
        crate::http::push::verify, crate::http::push::receive, crate::http::push::events,
        crate::http::push::redeliver,
        crate::http::admin::create_app, crate::http::admin::list_apps, crate::http::admin::get_app,
        crate::http::admin::update_app, crate::http::admin::delete_app,
        crate::http::admin::app_events, crate::http::admin::redeliver_event,
        crate::http::admin::create_client, crate::http::admin::list_clients,
        crate::http::admin::update_client, crate::http::admin::delete_client,
        crate::http::admin::audit_log, crate::http::admin::find_users,
        crate::http::admin::revoke_user, crate::http::admin::fleet,
        crate::http::admin::signing_keys, crate::http::admin::rotate_signing_key,
        crate::http::admin::delete_signing_key,
        crate::http::admin_platforms::create_platform,
        crate::http::admin_platforms::list_platforms,
        crate::http::admin_platforms::get_platform,
        crate::http::admin_platforms::update_platform,
        crate::http::admin_platforms::delete_platform,
        crate::http::admin_platforms::merchants, crate::http::admin_platforms::reconcile,
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
        components.add_security_scheme(
            "session",
            bearer("the session token from POST /v1/login, or (except for POST /v1/session/refresh) an access token of a live session"),
        );
        components.add_security_scheme("client_key", bearer("a [[clients]] key"));
        components.add_security_scheme("admin_key", bearer("an [[admins]] key"));
    }
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, description = "alive")))]
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// How long a readiness answer is reused: a load balancer probing every instance often does
/// not turn into a database query per probe.
const READINESS_CACHE: Duration = Duration::from_secs(1);

/// Readiness: the local dependencies — the database and Redis (if configured) — answer within
/// two seconds. WeChat is not checked here (an upstream outage must not take every instance out
/// of the load balancer); its errors are in `/metrics`. The answer names what failed, never
/// how.
#[utoipa::path(get, path = "/readyz", tag = "ops", responses((status = 200, description = "ready"), (status = 503, description = "a local dependency is down")))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let mut cached = state.readiness.lock().await;
    let (ready, body) = match &*cached {
        Some((at, ready, body)) if at.elapsed() < READINESS_CACHE => (*ready, body.clone()),
        _ => {
            let (ready, body) = check_readiness(&state).await;
            *cached = Some((std::time::Instant::now(), ready, body.clone()));
            (ready, body)
        }
    };
    drop(cached);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// A dependency's failure, whichever its type (logged, never answered).
type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn check_readiness(state: &AppState) -> (bool, Value) {
    let mut checks = serde_json::Map::new();
    let mut ready = true;
    let mut record =
        |name: &str, outcome: Result<Result<(), BoxError>, tokio::time::error::Elapsed>| {
            let v = match outcome {
                Ok(Ok(())) => json!({"ok": true}),
                Ok(Err(e)) => {
                    tracing::warn!(dependency = name, error = %e, "readiness check failed");
                    json!({"ok": false, "error": "unavailable"})
                }
                Err(_) => json!({"ok": false, "error": "timeout"}),
            };
            ready &= v["ok"] == json!(true);
            checks.insert(name.to_owned(), v);
        };
    let db = tokio::time::timeout(Duration::from_secs(2), state.store.ping()).await;
    record("database", db.map(|r| r.map_err(BoxError::from)));
    if let Some(redis) = &state.redis {
        let r = tokio::time::timeout(Duration::from_secs(2), redis.ping()).await;
        record("redis", r.map(|r| r.map_err(BoxError::from)));
    }
    let mut body = json!({"status": if ready { "ready" } else { "not_ready" }, "checks": checks});
    if !ready {
        // The error envelope, beside the checks.
        body["error"] =
            json!({"code": "not_ready", "message": "a local dependency is unavailable"});
    }
    (ready, body)
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, description = "text exposition format")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    let outbox = match state.store.outbox_stats().await {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "outbox statistics unavailable");
            None
        }
    };
    let mut body = state.metrics.render(
        &state.token_gauges(),
        outbox.as_ref(),
        crate::state::now_ms(),
    );
    // The login writer's group commit: logins per commit is the ratio of the two.
    let (commits, logins) = state.login_writer.counts();
    body.push_str(&format!(
        "# HELP weapp_login_commits_total Transactions the login writer committed.\n\
         # TYPE weapp_login_commits_total counter\nweapp_login_commits_total {commits}\n\
         # HELP weapp_login_writes_total Logins the login writer recorded (per commit: divide by weapp_login_commits_total).\n\
         # TYPE weapp_login_writes_total counter\nweapp_login_writes_total {logins}\n"
    ));
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
