//! HTTP infrastructure every domain's handlers use: the JSON error envelope ([`AppError`]),
//! extractors ([`JsonBody`], [`ClientIp`], [`bearer`]), the failed-authentication gate, and the
//! middleware stack [`layers`] puts around the routes the domains contribute. Knows no domain:
//! the composition root (`crate::app`) merges their routers and hands them to [`layers`].

pub mod error;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{
    ConnectInfo, FromRef, FromRequest, FromRequestParts, MatchedPath, Request, State,
};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::shared::Shared;
pub use error::{AppError, ErrorBody, ErrorDetail};

/// A JSON body whose rejections become clear 4xx errors naming the problem (missing field,
/// unknown field, wrong type, not JSON, too large).
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
    Shared: FromRef<S>,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let limit = Shared::from_ref(state).config.body_limit_bytes;
        // Every body of this API is an object: serde would also read a struct from an array
        // (`[null, null]`), which no client means.
        let (parts, body) = req.into_parts();
        let bytes =
            match axum::body::Bytes::from_request(Request::from_parts(parts.clone(), body), state)
                .await
            {
                Ok(b) => b,
                Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                    return Err(AppError::PayloadTooLarge(limit))
                }
                Err(e) => return Err(AppError::bad_request("invalid_body", e.body_text())),
            };
        let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
        if first.is_some()
            && first != Some(&b'{')
            && axum::Json::<Value>::from_bytes(&bytes).is_ok()
        {
            return Err(AppError::bad_request(
                "invalid_body",
                "the body must be a JSON object",
            ));
        }
        let req = Request::from_parts(parts, axum::body::Body::from(bytes));
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(JsonBody(v)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(AppError::bad_request(
                "unsupported_media_type",
                "send the body as JSON with Content-Type: application/json",
            )),
            Err(JsonRejection::JsonSyntaxError(e)) => Err(AppError::bad_request(
                "invalid_json",
                format!("body is not valid JSON: {}", e.body_text()),
            )),
            Err(JsonRejection::JsonDataError(e)) => {
                Err(AppError::bad_request("invalid_body", e.body_text()))
            }
            Err(JsonRejection::BytesRejection(e))
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE =>
            {
                Err(AppError::PayloadTooLarge(limit))
            }
            Err(e) => Err(AppError::bad_request("invalid_body", e.body_text())),
        }
    }
}

/// The bearer credential of a request, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    bearer_of(value)
}

/// The token of an `Authorization: Bearer <token>` value.
pub fn bearer_of(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The client's address: the connection's peer, or — when the peer is a trusted proxy — the
/// rightmost `X-Forwarded-For` hop that is not one (see [`crate::net::client_ip`]).
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub Option<IpAddr>);

impl<S> FromRequestParts<S> for ClientIp
where
    S: Send + Sync,
    Shared: FromRef<S>,
{
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(client_ip(
            &Shared::from_ref(state),
            &parts.headers,
            &parts.extensions,
        )))
    }
}

/// See [`ClientIp`].
pub fn client_ip(
    state: &Shared,
    headers: &HeaderMap,
    extensions: &axum::http::Extensions,
) -> Option<IpAddr> {
    let peer = extensions.get::<ConnectInfo<SocketAddr>>()?.0.ip();
    // Bytes, not `to_str`: one non-ASCII byte a client puts in the header must not discard the
    // hop our proxy appended to the same line.
    let lines: Vec<String> = headers
        .get_all("x-forwarded-for")
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    Some(crate::net::client_ip(
        peer,
        lines.iter().map(String::as_str),
        &state.trusted_proxies,
    ))
}

impl ClientIp {
    /// The rate-limit key of this client (0 when unknown: a test without a socket).
    pub fn key(self) -> u128 {
        self.0.map_or(0, crate::net::ip_key)
    }
}

/// Refuses a source that failed to authenticate too often this minute (429), before its
/// credential is even looked at.
///
/// # Errors
/// [`AppError::RateLimited`].
pub async fn auth_gate(state: &Shared, ip: ClientIp) -> Result<(), AppError> {
    state
        .auth_failures
        .check(ip.key())
        .await
        .map_err(|retry_after_secs| AppError::RateLimited { retry_after_secs })
}

/// Records a failed authentication on `surface` (`session`, `client_key`, `mirror`, `admin`).
pub async fn auth_failed(state: &Shared, ip: ClientIp, surface: &'static str) {
    state.metrics.auth_failure(surface);
    let _ = state.auth_failures.hit(ip.key()).await;
}

/// Counts each request by route template and status, and times it (histograms enabled).
async fn count(State(state): State<Shared>, req: Request, next: Next) -> Response {
    // MatchedPath is a shared string: cloned, not copied.
    let route = req.extensions().get::<MatchedPath>().cloned();
    let started = state
        .metrics
        .histograms_enabled()
        .then(std::time::Instant::now);
    let resp = next.run(req).await;
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    state
        .metrics
        .request(route, resp.status().as_u16(), started.map(|t| t.elapsed()));
    resp
}

/// Answers a request that outlived its deadline with 408 and the usual error body.
async fn deadline(State(state): State<Shared>, req: Request, next: Next) -> Response {
    let limit = Duration::from_secs(state.config.request_timeout_secs);
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => {
            let mut resp = axum::response::IntoResponse::into_response(AppError::bad_request(
                "timeout",
                "request took too long",
            ));
            *resp.status_mut() = StatusCode::REQUEST_TIMEOUT;
            resp
        }
    }
}

/// Every error answer carries the JSON envelope: axum's own plain-text rejections (a 405, a
/// malformed query string or path, the body limit's 413) are rewritten into it.
async fn json_errors(State(state): State<Shared>, req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return resp;
    }
    let allow = resp.headers().get(header::ALLOW).cloned();
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let detail: String = text.trim().chars().take(300).collect();
    let err = match status {
        StatusCode::PAYLOAD_TOO_LARGE => AppError::PayloadTooLarge(state.config.body_limit_bytes),
        StatusCode::METHOD_NOT_ALLOWED => AppError::MethodNotAllowed,
        StatusCode::NOT_FOUND => AppError::NotFound("no such route".into()),
        s if s.is_server_error() => AppError::Internal(format!("HTTP {s}: {detail}")),
        _ => AppError::bad_request(
            "bad_request",
            if detail.is_empty() {
                "the request is malformed".to_owned()
            } else {
                detail
            },
        ),
    };
    let mut out = axum::response::IntoResponse::into_response(err);
    if out.status() != parts.status {
        *out.status_mut() = parts.status;
    }
    if let Some(retry) = parts.headers.get(header::RETRY_AFTER) {
        out.headers_mut().insert(header::RETRY_AFTER, retry.clone());
    }
    if let Some(allow) = allow {
        out.headers_mut().insert(header::ALLOW, allow);
    }
    out
}

/// The whole application: the domains' `routes` (each with its own state) inside the
/// middleware every request goes through, outermost last: `no_store`, the request id kept only
/// when plain, the request id, the trace span, the metrics count, the body limit, the JSON
/// error envelope, the panic catcher and the request deadline.
pub fn layers(routes: Router, state: Shared) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    let limit = state.config.body_limit_bytes;
    routes
        .fallback(|| async { AppError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async { AppError::MethodNotAllowed })
        .layer(axum::middleware::from_fn_with_state(state.clone(), deadline))
        // A handler that panics answers 500 (in the envelope: json_errors is outside it).
        .layer(tower_http::catch_panic::CatchPanicLayer::new())
        .layer(axum::middleware::from_fn_with_state(state.clone(), json_errors))
        .layer(axum::extract::DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(state.clone(), count))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(
            // Spans carry the method, the path WITHOUT its query (the WeChat-compatible mirror
            // receives the app secret in the query string) and the request id.
            TraceLayer::new_for_http().make_span_with(|req: &Request| {
                let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("");
                tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
            }),
        )
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        // Outermost: a caller's request id is kept only if it is a plain token (it goes into
        // every log line of the request); otherwise a fresh one replaces it.
        .layer(axum::middleware::map_request(sanitize_request_id))
        // Answers are about one caller (sessions, tokens, keys): no cache may keep them unless
        // a handler says otherwise (the JWKS, the console's assets).
        .layer(axum::middleware::map_response(no_store))
}

/// The longest caller-chosen `x-request-id` kept.
const REQUEST_ID_MAX: usize = 64;

/// Drops a caller's `x-request-id` unless it is 1–64 characters of `A–Z a–z 0–9 . _ : -`, so
/// that log lines cannot be forged or bloated through it; [`SetRequestIdLayer`] then makes one.
async fn sanitize_request_id(mut req: Request) -> Request {
    let ok = req.headers().get("x-request-id").is_none_or(|v| {
        let b = v.as_bytes();
        !b.is_empty()
            && b.len() <= REQUEST_ID_MAX
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b':' | b'-'))
    });
    if !ok {
        req.headers_mut().remove("x-request-id");
    }
    req
}

/// `Cache-Control: no-store` on every answer that does not set its own.
async fn no_store(mut res: Response) -> Response {
    res.headers_mut()
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    res
}
