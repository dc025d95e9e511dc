//! The admin console (`GET /admin`): a page served from the binary — no CDN, works offline,
//! Chinese and English, the simulator console's look — over the admin API. It holds no
//! secret of its own: the operator types an admin key, which stays in the browser tab.

use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

use super::service::AdminApi;

const INDEX: &str = include_str!("../../admin/index.html");
const SCRIPT: &str = include_str!("../../admin/app.js");
/// The Payments tab (after `app.js`, whose helpers it uses).
const PAYMENTS_SCRIPT: &str = include_str!("../../admin/payments.js");
const STYLE: &str = include_str!("../../admin/admin.css");

/// Everything from this origin only, no framing, no referrer.
const CSP: &str = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response()
}

/// The console's routes.
pub fn router() -> Router<AdminApi> {
    Router::new()
        .route(
            "/admin",
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route("/admin/", get(|| async { Redirect::permanent("/admin") }))
        .route(
            "/admin/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/admin/payments.js",
            get(|| async { asset("text/javascript; charset=utf-8", PAYMENTS_SCRIPT) }),
        )
        .route(
            "/admin/base.css",
            get(|| async { asset("text/css; charset=utf-8", weapp_sim::CONSOLE_STYLE) }),
        )
        .route(
            "/admin/admin.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
}
