//! Operations: liveness, readiness, Prometheus metrics and the OpenAPI document.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use utoipa::OpenApi;

use super::state::AppState;

/// The OpenAPI description, generated from the handlers' annotations.
#[derive(OpenApi)]
#[openapi(
    info(title = "weapp-server", description = "WeChat Mini Program login/session service and access-token broker."),
    paths(
        crate::sessions::handlers::login, crate::sessions::handlers::me, crate::sessions::handlers::phone,
        crate::sessions::handlers::decrypt, crate::sessions::handlers::logout, crate::sessions::handlers::logout_all,
        crate::sessions::handlers::refresh, crate::keys::handlers::jwks, crate::sessions::introspect::introspect,
        crate::platforms::handlers::events, crate::platforms::handlers::merchant_push,
        crate::broker::handlers::access_token, crate::broker::handlers::invalidate,
        crate::broker::handlers::cgi_token, crate::broker::handlers::cgi_stable_token,
        crate::push::handlers::verify, crate::push::handlers::receive, crate::push::handlers::events,
        crate::push::handlers::redeliver,
        crate::payments::handlers::create_order, crate::payments::handlers::get_order,
        crate::payments::handlers::close_order, crate::payments::handlers::notify,
        crate::payments::shop::buy,
        crate::payments::refund_handlers::create_refund,
        crate::payments::refund_handlers::get_refund,
        crate::admin::apps::create_app, crate::admin::apps::list_apps, crate::admin::apps::get_app,
        crate::admin::apps::update_app, crate::admin::apps::delete_app,
        crate::admin::apps::app_events, crate::admin::apps::redeliver_event,
        crate::admin::clients::create_client, crate::admin::clients::list_clients,
        crate::admin::clients::update_client, crate::admin::clients::delete_client,
        crate::admin::users::audit_log, crate::admin::users::find_users,
        crate::admin::users::revoke_user, crate::admin::apps::fleet,
        crate::admin::signing::signing_keys, crate::admin::signing::rotate_signing_key,
        crate::admin::signing::delete_signing_key,
        crate::admin::platforms::create_platform,
        crate::admin::platforms::list_platforms,
        crate::admin::platforms::get_platform,
        crate::admin::platforms::update_platform,
        crate::admin::platforms::delete_platform,
        crate::admin::platforms::merchants, crate::admin::platforms::reconcile,
        crate::admin::payments::list_orders, crate::admin::payments::list_refunds,
        crate::admin::payments::list_notifications, crate::admin::payments::get_notification,
        crate::admin::payments::refused_notifications,
        crate::admin::merchants::create_merchant, crate::admin::merchants::list_merchants,
        crate::admin::merchants::get_merchant, crate::admin::merchants::update_merchant,
        crate::admin::merchants::delete_merchant, crate::admin::merchants::list_reports,
        crate::admin::merchants::get_report, crate::admin::merchants::run_report,
        healthz, readyz, metrics,
    ),
    components(schemas(crate::http::ErrorBody, crate::http::ErrorDetail)),
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
    let body = state.metrics.render(&crate::metrics::Scrape {
        tokens: &state.broker.token_gauges(),
        outbox: outbox.as_ref(),
        now_ms: crate::shared::now_ms(),
        // The login writer's group commit: logins per commit is the ratio of the two.
        login_writer: state.sessions.login_writer.counts(),
    });
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// Routes of this area.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .with_state(state)
}
