//! The one path every API call takes: build the request, attach the access token, send, and
//! decode WeChat's errcode envelope or its bytes.

use std::borrow::Cow;
use std::time::Duration;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{split_rid, ErrCode, Error, Result};
use crate::secret::AccessToken;
use crate::token_source::TokenSource;

/// HTTP method of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// GET
    Get,
    /// POST
    Post,
}

/// How an endpoint authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// `access_token` in the query string (almost every API).
    AccessToken,
    /// Nothing added: the token endpoints, jscode2session and clear_quota/v2 authenticate with
    /// the app secret in their own parameters.
    None,
}

/// A request body.
#[derive(Debug, Clone)]
pub enum Body {
    /// No body.
    Empty,
    /// A JSON document (already serialized; non-ASCII sent raw as WeChat expects).
    Json(Vec<u8>),
    /// A multipart form with one file field (`media` for uploads).
    File {
        /// Form field name.
        field: &'static str,
        /// File name sent with it.
        filename: String,
        /// Its content type, e.g. `image/png`.
        content_type: String,
        /// The bytes.
        bytes: bytes::Bytes,
    },
}

impl Body {
    /// Serializes `value` as a JSON body.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if the value cannot be serialized.
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Body> {
        serde_json::to_vec(value)
            .map(Body::Json)
            .map_err(|e| Error::InvalidArgument(e.to_string()))
    }
}

/// One WeChat API call. Every typed call in this crate implements it, so the token handling,
/// retries and error decoding are the same for all of them.
pub trait Endpoint: Send + Sync {
    /// What a successful call returns.
    type Output: FromResponse;
    /// The path, e.g. `/sns/jscode2session`.
    const PATH: &'static str;
    /// The HTTP method.
    const METHOD: Method = Method::Post;
    /// How the call authenticates.
    const AUTH: Auth = Auth::AccessToken;
    /// Whether repeating the call is harmless. Off by default: a call is retried after a
    /// transient failure only when its endpoint opts in (reads, checks). Everything else —
    /// sends, one-time-code exchanges, and calls that spend a quota (a lifetime of 100,000
    /// codes, permanent links, uploads) — gets [`crate::Error::OutcomeUnknown`] instead of a
    /// blind retry when WeChat may have acted on it.
    const IDEMPOTENT: bool = false;

    /// Whether this particular request may be repeated; [`Endpoint::IDEMPOTENT`] unless the
    /// answer depends on the arguments (a temporary short link may be retried, a permanent
    /// one may not).
    fn idempotent(&self) -> bool {
        Self::IDEMPOTENT
    }

    /// Query parameters (without `access_token`).
    fn query(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }

    /// The request body.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the request cannot be encoded.
    fn body(&self) -> Result<Body> {
        Ok(Body::Empty)
    }
}

/// A response as received: status, content type and bytes.
#[derive(Debug, Clone)]
pub struct RawResponse {
    /// HTTP status.
    pub status: u16,
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// The body.
    pub body: Bytes,
}

impl RawResponse {
    fn is_json(&self) -> bool {
        self.content_type
            .as_deref()
            .is_some_and(|c| c.contains("json") || c.starts_with("text/plain"))
            || self.body.first() == Some(&b'{')
    }
}

/// Decodes a successful response into a value. Implemented for every JSON response type
/// (through [`JsonResponse`]) and for [`Binary`].
pub trait FromResponse: Sized {
    /// Decodes `raw`, turning an errcode envelope into [`Error::Api`].
    ///
    /// # Errors
    /// [`Error::Api`] for a non-zero errcode, [`Error::Decode`] for an unexpected shape.
    fn from_response(raw: RawResponse, endpoint: &str) -> Result<Self>;
}

/// Marker for JSON response types: the errcode envelope is checked, then the body is decoded.
pub trait JsonResponse: DeserializeOwned {}

impl<T: JsonResponse> FromResponse for T {
    fn from_response(raw: RawResponse, endpoint: &str) -> Result<Self> {
        let value = decode_envelope(&raw, endpoint)?;
        serde_json::from_value(value).map_err(|e| Error::Decode {
            endpoint: Cow::Owned(endpoint.to_owned()),
            message: e.to_string(),
        })
    }
}

/// A binary success body (a mini program code image, a media file) and its content type.
#[derive(Debug, Clone)]
pub struct Binary {
    /// `Content-Type`, e.g. `image/png`.
    pub content_type: String,
    /// The bytes.
    pub bytes: Bytes,
}

impl FromResponse for Binary {
    fn from_response(raw: RawResponse, endpoint: &str) -> Result<Self> {
        // Binary endpoints answer errors as JSON; tell them apart by Content-Type.
        if raw
            .content_type
            .as_deref()
            .is_some_and(|c| c.contains("json"))
        {
            decode_envelope(&raw, endpoint)?;
            return Err(Error::Decode {
                endpoint: Cow::Owned(endpoint.to_owned()),
                message: "expected bytes, got a JSON body without an error".into(),
            });
        }
        check_status(&raw, endpoint)?;
        Ok(Binary {
            content_type: raw
                .content_type
                .unwrap_or_else(|| "application/octet-stream".into()),
            bytes: raw.body,
        })
    }
}

/// A JSON success body kept as an untyped value (for generic calls).
impl JsonResponse for serde_json::Value {}

fn check_status(raw: &RawResponse, endpoint: &str) -> Result<()> {
    if raw.status == 200 {
        Ok(())
    } else {
        Err(Error::HttpStatus {
            endpoint: Cow::Owned(endpoint.to_owned()),
            status: raw.status,
        })
    }
}

/// Parses a JSON body and fails with [`Error::Api`] when it carries a non-zero errcode.
/// An absent errcode means success (token, jscode2session and datacube answers have none).
pub(crate) fn decode_envelope(raw: &RawResponse, endpoint: &str) -> Result<serde_json::Value> {
    if !raw.is_json() {
        check_status(raw, endpoint)?;
        return Err(Error::Decode {
            endpoint: Cow::Owned(endpoint.to_owned()),
            message: format!(
                "expected JSON, got {}",
                raw.content_type.as_deref().unwrap_or("no content type")
            ),
        });
    }
    let value: serde_json::Value = match serde_json::from_slice(&raw.body) {
        Ok(v) => v,
        Err(e) => {
            check_status(raw, endpoint)?;
            return Err(Error::Decode {
                endpoint: Cow::Owned(endpoint.to_owned()),
                message: e.to_string(),
            });
        }
    };
    match value.get("errcode").and_then(serde_json::Value::as_i64) {
        Some(0) | None => {
            check_status(raw, endpoint)?;
            Ok(value)
        }
        Some(code) => {
            let errmsg = value.get("errmsg").and_then(|m| m.as_str()).unwrap_or("");
            let (message, rid) = split_rid(errmsg);
            Err(Error::Api {
                code: ErrCode::from(code),
                message,
                rid,
                endpoint: Cow::Owned(endpoint.to_owned()),
            })
        }
    }
}

/// Retry policy for failures that may pass on their own (-1, transport errors, 5xx).
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0 disables retrying).
    pub max_retries: u32,
    /// Backoff before the first retry; doubles each time, with full jitter.
    pub base_delay: Duration,
    /// Upper bound of one backoff.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 2,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// The jittered delay before retry number `attempt` (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
            .min(self.max_delay);
        // Full jitter: uniformly in [exp/2, exp], so a fleet does not retry in lockstep.
        let half = exp / 2;
        half + exp.mul_f64(rand::random::<f64>() * 0.5)
    }
}

/// True for failures worth a backoff-and-retry (when the call is idempotent).
pub(crate) fn is_transient(err: &Error) -> bool {
    match err {
        Error::Api { code, .. } => *code == ErrCode::SystemError,
        Error::Transport { .. } => true,
        Error::HttpStatus { status, .. } => *status >= 500,
        _ => false,
    }
}

/// True when the request certainly never reached WeChat (connection refused), so even a
/// non-idempotent call may be retried.
pub(crate) fn never_sent(err: &Error) -> bool {
    matches!(err, Error::Transport { source, .. } if source.is_connect())
}

/// Whether `url` can be a client's `base_url` (an API host such as `https://api.weixin.qq.com`,
/// a `weapp sim`, a proxy with a path prefix): an http(s) URL without a query or fragment.
pub fn is_base_url(url: &str) -> bool {
    parse_base_url(url).is_some()
}

fn parse_base_url(url: &str) -> Option<reqwest::Url> {
    reqwest::Url::parse(url).ok().filter(|u| {
        matches!(u.scheme(), "http" | "https") && u.query().is_none() && u.fragment().is_none()
    })
}

/// The shared HTTP layer: a reqwest client and the base URL every endpoint is resolved against.
#[derive(Debug, Clone)]
pub(crate) struct Http {
    pub(crate) client: reqwest::Client,
    pub(crate) base_url: String,
    /// `base_url` parsed once: a request's URL is a copy with the endpoint's path set, so no
    /// request parses a URL (and runs its host through IDNA) again.
    base: reqwest::Url,
    pub(crate) retry: RetryPolicy,
    /// Sees every attempt (path, errcode, time taken), when one was set.
    observer: Option<std::sync::Arc<dyn crate::observe::CallObserver>>,
}

impl Http {
    /// The layer over `client` for `base_url` (an http(s) URL; a trailing `/` is dropped).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `base_url` is not an http(s) URL (the message redacts
    /// any secret in its query).
    pub(crate) fn new(client: reqwest::Client, base_url: &str, retry: RetryPolicy) -> Result<Self> {
        let base_url = base_url.trim_end_matches('/').to_owned();
        match parse_base_url(&base_url) {
            Some(base) => Ok(Self {
                client,
                base_url,
                base,
                retry,
                observer: None,
            }),
            None => Err(Error::InvalidArgument(format!(
                "base_url `{}` must be an http(s) URL without a query or fragment",
                redact_url(&base_url)
            ))),
        }
    }

    /// Reports every attempt to `observer`.
    pub(crate) fn with_observer(
        mut self,
        observer: Option<std::sync::Arc<dyn crate::observe::CallObserver>>,
    ) -> Self {
        self.observer = observer;
        self
    }

    /// The observer of every attempt, if one was set.
    pub(crate) fn observer(&self) -> Option<std::sync::Arc<dyn crate::observe::CallObserver>> {
        self.observer.clone()
    }

    /// `base_url` followed by `path` (which starts with `/`).
    fn url(&self, path: &str) -> reqwest::Url {
        let mut url = self.base.clone();
        match self.base.path() {
            "/" => url.set_path(path),
            prefix => url.set_path(&format!("{}{path}", prefix.trim_end_matches('/'))),
        }
        url
    }

    /// Sends one request, no retries. The URL (which may carry a token or secret) never
    /// appears in the returned error.
    pub(crate) async fn send_once(
        &self,
        method: Method,
        path: &str,
        query: &[(Cow<'static, str>, String)],
        token: Option<&AccessToken>,
        body: &Body,
    ) -> Result<RawResponse> {
        let url = self.url(path);
        let mut req = match method {
            Method::Get => self.client.get(url),
            Method::Post => self.client.post(url),
        };
        if let Some(token) = token {
            req = req.query(&[("access_token", token.expose())]);
        }
        if !query.is_empty() {
            req = req.query(query);
        }
        match body {
            Body::Empty => {}
            Body::Json(bytes) => {
                req = req
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(bytes.clone());
            }
            Body::File {
                field,
                filename,
                content_type,
                bytes,
            } => {
                // Rebuilt per attempt: a form is consumed by sending it.
                let part = reqwest::multipart::Part::stream(bytes.clone())
                    .file_name(filename.clone())
                    .mime_str(content_type)
                    .map_err(|e| Error::InvalidArgument(format!("content type: {e}")))?;
                req = req.multipart(reqwest::multipart::Form::new().part(*field, part));
            }
        }
        let transport = |e: reqwest::Error| Error::Transport {
            endpoint: Cow::Owned(path.to_owned()),
            source: std::sync::Arc::new(e.without_url()),
        };
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = resp.bytes().await.map_err(transport)?;
        Ok(RawResponse {
            status,
            content_type,
            body,
        })
    }

    /// One attempt of `call` with `token`: send, then decode. No retries, no invalidation.
    pub(crate) async fn attempt<O: FromResponse>(
        &self,
        call: &Call<'_>,
        token: Option<&AccessToken>,
    ) -> Result<O> {
        let Some(observer) = &self.observer else {
            let raw = self
                .send_once(call.method, call.path, &call.query, token, &call.body)
                .await?;
            return O::from_response(raw, call.path);
        };
        let started = std::time::Instant::now();
        let result = match self
            .send_once(call.method, call.path, &call.query, token, &call.body)
            .await
        {
            Ok(raw) => O::from_response(raw, call.path),
            Err(e) => Err(e),
        };
        let outcome = match &result {
            Ok(_) => crate::observe::CallOutcome::Ok,
            Err(e) => match e.errcode() {
                Some(code) => crate::observe::CallOutcome::ErrCode(code.code()),
                None => crate::observe::CallOutcome::Failed,
            },
        };
        observer.call(&crate::observe::CallEvent {
            path: call.path,
            outcome,
            elapsed: started.elapsed(),
        });
        result
    }

    /// The one request pipeline: adds the access token (from `tokens`, when the call needs one),
    /// decodes the answer, invalidates a rejected token (compare-and-swap) and retries once,
    /// and retries transient failures with jittered backoff — idempotent calls only. A call
    /// that is not idempotent gets [`Error::OutcomeUnknown`] for every failure that leaves its
    /// effect in doubt (transport errors, timeouts, 5xx, -1, an undecodable 200), whatever
    /// the retry budget, unless the request provably never left (connection refused).
    pub(crate) async fn execute<O: FromResponse>(
        &self,
        call: &Call<'_>,
        tokens: Option<&dyn TokenSource>,
    ) -> Result<O> {
        let mut token_retried = false;
        let mut attempt = 0;
        loop {
            let token = match (call.auth, tokens) {
                (Auth::AccessToken, Some(t)) => Some(t.token().await?),
                _ => None,
            };
            let err = match self.attempt(call, token.as_ref()).await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            if let (Some(token), Some(tokens)) = (&token, tokens) {
                if err.is_token_invalid() && !token_retried {
                    token_retried = true;
                    tracing::info!(endpoint = call.path, errcode = ?err.errcode(), "access token rejected; invalidating and retrying once");
                    // A source that cannot report the token (a broker that is down, a key
                    // without the scope) has still dropped its copy: the retry asks again.
                    if let Err(e) = tokens.invalidate(token).await {
                        tracing::warn!(endpoint = call.path, error = %e, "reporting the rejected token failed; retrying with a fresh read");
                    }
                    continue;
                }
            }
            if !call.idempotent && outcome_in_doubt(&err) && !never_sent(&err) {
                return Err(Error::OutcomeUnknown {
                    endpoint: Cow::Owned(call.path.to_owned()),
                    source: Box::new(err),
                });
            }
            let retry = is_transient(&err) && (call.idempotent || never_sent(&err));
            if retry && attempt < self.retry.max_retries {
                attempt += 1;
                tracing::debug!(endpoint = call.path, attempt, error = %err, "transient failure, retrying");
                tokio::time::sleep(self.retry.delay(attempt)).await;
                continue;
            }
            return Err(err);
        }
    }
}

/// True when WeChat may or may not have acted on the request: it may have been processed
/// although the answer was lost, garbled, or said "system busy".
pub(crate) fn outcome_in_doubt(err: &Error) -> bool {
    is_transient(err) || matches!(err, Error::Decode { .. })
}

/// `url` without credentials or query string, for logs, errors and `Debug` (a base URL may
/// carry `user:password@`, a path the secret).
pub fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            if !u.username().is_empty() || u.password().is_some() {
                let _ = u.set_username("***");
                let _ = u.set_password(None);
            }
            u.set_query(None);
            u.set_fragment(None);
            u.to_string().trim_end_matches('/').to_owned()
        }
        Err(_) => "<unparsable url>".to_owned(),
    }
}

/// Paths that take no `access_token` (they carry the app secret themselves).
pub(crate) const TOKENLESS: &[&str] = &[
    "/cgi-bin/token",
    "/cgi-bin/stable_token",
    "/sns/jscode2session",
    "/cgi-bin/clear_quota/v2",
];

/// One request, as the pipeline sees it.
pub(crate) struct Call<'a> {
    pub(crate) method: Method,
    /// The path without a query string: it names the endpoint in errors and log lines.
    pub(crate) path: &'a str,
    pub(crate) auth: Auth,
    pub(crate) idempotent: bool,
    pub(crate) query: Vec<(Cow<'static, str>, String)>,
    pub(crate) body: Body,
}

impl<'a> Call<'a> {
    /// The call an endpoint describes.
    pub(crate) fn of<E: Endpoint>(ep: &E) -> Result<Call<'static>> {
        Ok(Call {
            method: E::METHOD,
            path: E::PATH,
            auth: E::AUTH,
            idempotent: ep.idempotent(),
            query: ep
                .query()
                .into_iter()
                .map(|(k, v)| (Cow::Borrowed(k), v))
                .collect(),
            body: ep.body()?,
        })
    }

    /// A call to `path_and_query` (e.g. `/cgi-bin/clear_quota/v2?appid=…`): the query string is
    /// split off into parameters, so it never reaches an error or a log line (it may carry a
    /// secret).
    pub(crate) fn raw(method: Method, path_and_query: &'a str, body: Body) -> Result<Call<'a>> {
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_and_query, None),
        };
        if !path.starts_with('/') || path.contains('#') {
            return Err(Error::InvalidArgument(
                "path must start with / and carry no fragment".into(),
            ));
        }
        let query = match query {
            Some(q) => reqwest::Url::parse(&format!("http://x/?{q}"))
                .map_err(|_| Error::InvalidArgument("the path's query string is malformed".into()))?
                .query_pairs()
                .filter(|(k, _)| k != "access_token")
                .map(|(k, v)| (Cow::Owned(k.into_owned()), v.into_owned()))
                .collect(),
            None => Vec::new(),
        };
        // The calls that authenticate with the secret in their own parameters take no token.
        let auth = if TOKENLESS.contains(&path) {
            Auth::None
        } else {
            Auth::AccessToken
        };
        Ok(Call {
            method,
            path,
            auth,
            idempotent: false,
            query,
            body,
        })
    }
}

/// The answer of a raw call: JSON (errcode checked) or bytes, told apart by Content-Type.
#[derive(Debug, Clone)]
pub enum RawOutput {
    /// A JSON answer without a non-zero errcode.
    Json(serde_json::Value),
    /// A binary answer.
    Bytes(Binary),
}

impl FromResponse for RawOutput {
    fn from_response(raw: RawResponse, endpoint: &str) -> Result<Self> {
        if raw.is_json() {
            decode_envelope(&raw, endpoint).map(RawOutput::Json)
        } else {
            Binary::from_response(raw, endpoint).map(RawOutput::Bytes)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(ct: &str, body: &str) -> RawResponse {
        RawResponse {
            status: 200,
            content_type: Some(ct.into()),
            body: Bytes::from(body.to_owned()),
        }
    }

    #[test]
    fn request_urls_are_the_base_with_the_endpoint_path() {
        let client = reqwest::Client::new();
        let at = |base: &str, path: &str| {
            Http::new(client.clone(), base, RetryPolicy::default())
                .expect("valid base")
                .url(path)
                .to_string()
        };
        assert_eq!(
            at("https://api.weixin.qq.com", "/sns/jscode2session"),
            "https://api.weixin.qq.com/sns/jscode2session"
        );
        assert_eq!(
            at("http://127.0.0.1:9000/", "/cgi-bin/token"),
            "http://127.0.0.1:9000/cgi-bin/token"
        );
        // A base behind a path prefix (a proxy) keeps it; a trailing dot segment adds no `/`.
        assert_eq!(
            at("http://gw.example.com/wechat/.", "/wxa/getwxacode"),
            "http://gw.example.com/wechat/wxa/getwxacode"
        );
        assert_eq!(
            at("http://gw.example.com/wechat/", "/wxa/getwxacode"),
            "http://gw.example.com/wechat/wxa/getwxacode"
        );
        for bad in [
            "api.weixin.qq.com",
            "ftp://x",
            "http://x/?secret=s3cr3t",
            "http://x/#f",
            "",
        ] {
            let err = Http::new(client.clone(), bad, RetryPolicy::default())
                .expect_err(bad)
                .to_string();
            assert!(err.contains("must be an http(s) URL"), "{bad}: {err}");
            assert!(!is_base_url(bad), "{bad}");
            assert!(!err.contains("s3cr3t"), "{err}");
        }
    }

    #[test]
    fn absent_errcode_is_success_and_nonzero_is_typed() {
        assert!(decode_envelope(&raw("application/json", r#"{"access_token":"x"}"#), "/t").is_ok());
        assert!(decode_envelope(
            &raw("application/json", r#"{"errcode":0,"errmsg":"ok"}"#),
            "/t"
        )
        .is_ok());
        let err = decode_envelope(
            &raw(
                "application/json",
                r#"{"errcode":40029,"errmsg":"invalid code, rid: 1-2-3"}"#,
            ),
            "/sns/jscode2session",
        )
        .unwrap_err();
        assert!(
            matches!(&err, Error::Api { code: ErrCode::InvalidCode, rid: Some(r), .. } if r == "1-2-3")
        );
    }

    #[test]
    fn binary_is_told_from_json_by_content_type() {
        let ok = Binary::from_response(raw("image/png", "\u{89}PNG"), "/wxa/getwxacode").unwrap();
        assert_eq!(ok.content_type, "image/png");
        let err = Binary::from_response(
            raw(
                "application/json; encoding=utf-8",
                r#"{"errcode":45029,"errmsg":"limit"}"#,
            ),
            "/wxa/getwxacode",
        )
        .unwrap_err();
        assert_eq!(err.errcode(), Some(ErrCode::QrcodeCountOutOfLimit));
    }

    #[test]
    fn backoff_is_bounded_and_jittered() {
        let p = RetryPolicy::default();
        for attempt in 1..10 {
            let d = p.delay(attempt);
            assert!(d <= p.max_delay, "{d:?}");
            assert!(d >= p.base_delay / 2);
        }
    }
}
