//! [`BrokerTokenSource`]: access tokens read from a weapp-server token broker (the 中控
//! pattern), so a Rust service leaves token ownership to the central service.

use std::borrow::Cow;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::Deserialize;

use super::{TokenSource, MAX_TOKEN_LEN, MAX_TOKEN_LIFETIME_SECS};
use crate::error::{ErrCode, Error, Result};
use crate::http::redact_url;
use crate::secret::{AccessToken, BrokerClientKey};

/// The path template of the broker's read endpoint, for errors and logs.
const READ_ENDPOINT: &str = "/v1/apps/{appid}/access_token";
/// The path template of the broker's invalidation endpoint, for errors and logs.
const INVALIDATE_ENDPOINT: &str = "/v1/apps/{appid}/access_token/invalidate";
/// The longest error message from the broker kept in an [`Error::Broker`].
const MAX_MESSAGE_LEN: usize = 300;

/// A [`TokenSource`] that reads an app's access token from a weapp-server token broker
/// (`GET {base}/v1/apps/{appid}/access_token` with `Authorization: Bearer <client key>`) and
/// reports rejected tokens to it (`POST …/access_token/invalidate`, the broker's
/// compare-and-swap: it drops a token only while it is still the current one).
///
/// - The token is kept in memory until [`BrokerTokenSource::refresh_margin`] before the
///   `expires_in` the broker gave (at most half its lifetime early), so most calls never reach
///   the broker.
/// - Concurrent callers that find no usable copy share one request (single flight); when it
///   fails, every caller that waited on it receives its error instead of asking again.
/// - Every request is bounded by [`BrokerTokenSource::timeout`] (default 10 s).
/// - The client key and the tokens never appear in `Debug`, logs or errors.
///
/// The client key needs the broker scope `token:read`, and `token:invalidate` for
/// [`TokenSource::invalidate`].
///
/// ```no_run
/// # async fn run() -> Result<(), weapp::Error> {
/// use weapp::{BrokerClientKey, Client};
/// // One line: every call of this client takes its token from the broker.
/// let client = Client::builder("wx1234567890abcdef", "")
///     .broker("http://tokens.internal:8080", BrokerClientKey::new("ck_live_…"))
///     .build()?;
/// let token = client.access_token().await?;
/// # let _ = token; Ok(()) }
/// ```
#[derive(Clone)]
pub struct BrokerTokenSource {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base_url: String,
    read_url: String,
    invalidate_url: String,
    appid: String,
    key: BrokerClientKey,
    timeout: Duration,
    refresh_margin: Duration,
    state: Mutex<State>,
    /// Held by the one caller that asks the broker; the others wait on it.
    flight: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct State {
    cached: Option<Cached>,
    /// Counts finished flights, so a waiter can tell that one finished while it waited.
    flights: u64,
    /// The outcome of the last flight, when it failed.
    last_error: Option<Error>,
    /// When the last flight failed with a refusal that retrying at once cannot cure (a wrong
    /// key, a missing scope, a rate limit): callers get that error for [`REFUSAL_BACKOFF`]
    /// instead of each asking again (every 401 counts against the address at the broker).
    refused_at: Option<Instant>,
    /// Bumped whenever the local copy is dropped on purpose ([`BrokerTokenSource::forget`],
    /// [`TokenSource::invalidate`]): an answer to a read sent before that is returned to its
    /// caller but not kept, so it cannot overwrite a newer token.
    generation: u64,
}

/// How long a refusal (401, 403, 429) is answered from memory.
const REFUSAL_BACKOFF: Duration = Duration::from_secs(1);

/// The largest broker answer read (a token answer is well under 1 KiB).
const MAX_BODY: usize = 64 * 1024;

struct Cached {
    token: AccessToken,
    /// Until when it is served without asking the broker.
    fresh_until: Instant,
}

#[derive(Deserialize)]
struct TokenBody {
    access_token: String,
    expires_in: i64,
}

#[derive(Deserialize)]
struct InvalidateBody {
    access_token: Option<String>,
    expires_in: Option<i64>,
    #[serde(default)]
    refreshed: bool,
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    code: String,
    message: String,
    wechat_errcode: Option<i64>,
}

impl std::fmt::Debug for BrokerTokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerTokenSource")
            .field("base_url", &redact_url(&self.inner.base_url))
            .field("appid", &self.inner.appid)
            .field("client_key", &self.inner.key)
            .field("timeout", &self.inner.timeout)
            .field("refresh_margin", &self.inner.refresh_margin)
            .finish_non_exhaustive()
    }
}

impl BrokerTokenSource {
    /// A source for `appid` from the broker at `base_url` (e.g. `http://tokens.internal:8080`),
    /// authenticated with `client_key`, with its own HTTP client (10 s timeout, 5 s connect).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty appid or key, an appid that is not plain ASCII
    /// letters, digits, `_` or `-`, or a base URL that is not `http(s)://…`.
    pub fn new(
        base_url: impl Into<String>,
        client_key: impl Into<BrokerClientKey>,
        appid: impl Into<String>,
    ) -> Result<Self> {
        let timeout = Duration::from_secs(10);
        // No reqwest-level timeout: every request is bounded by `timeout` (which
        // `with_timeout` may change) around the whole exchange.
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("weapp-rs/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::InvalidArgument(format!("http client: {e}")))?;
        Self::with_http_client(http, base_url, client_key, appid, timeout)
    }

    /// Like [`BrokerTokenSource::new`], on an existing reqwest client (shared pool, proxies,
    /// TLS roots); each broker request is still bounded by `timeout`.
    ///
    /// # Errors
    /// As [`BrokerTokenSource::new`], and for a zero `timeout`.
    pub fn with_http_client(
        http: reqwest::Client,
        base_url: impl Into<String>,
        client_key: impl Into<BrokerClientKey>,
        appid: impl Into<String>,
        timeout: Duration,
    ) -> Result<Self> {
        let base_url = base_url.into();
        let key = client_key.into();
        let appid = appid.into();
        if appid.is_empty()
            || !appid
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(Error::InvalidArgument(
                "broker appid must be ASCII letters, digits, '_' or '-'".into(),
            ));
        }
        if key.expose().trim().is_empty() {
            return Err(Error::InvalidArgument(
                "broker client key must not be empty".into(),
            ));
        }
        if timeout.is_zero() {
            return Err(Error::InvalidArgument(
                "broker timeout must be positive".into(),
            ));
        }
        match reqwest::Url::parse(&base_url) {
            Ok(u)
                if matches!(u.scheme(), "http" | "https")
                    && u.host().is_some()
                    && u.query().is_none()
                    && u.fragment().is_none()
                    && u.username().is_empty()
                    && u.password().is_none() => {}
            _ => {
                return Err(Error::InvalidArgument(format!(
                "broker base URL {} is not an http(s) URL without query, fragment or credentials",
                redact_url(&base_url)
            )))
            }
        }
        let root = base_url.trim_end_matches('/');
        let read_url = format!("{root}/v1/apps/{appid}/access_token");
        let invalidate_url = format!("{read_url}/invalidate");
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                base_url,
                read_url,
                invalidate_url,
                appid,
                key,
                timeout,
                refresh_margin: Duration::from_secs(300),
                state: Mutex::new(State::default()),
                flight: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// How long before the broker's `expires_in` the local copy stops being served (default
    /// 300 s; never more than half the token's remaining lifetime). Set it before sharing the
    /// source.
    #[must_use]
    pub fn with_refresh_margin(self, margin: Duration) -> Self {
        self.rebuild(|i| i.refresh_margin = margin)
    }

    /// The bound on each broker request (default 10 s; a zero timeout is taken as 1 ms). Set
    /// it before sharing the source.
    #[must_use]
    pub fn with_timeout(self, timeout: Duration) -> Self {
        self.rebuild(|i| i.timeout = timeout.max(Duration::from_millis(1)))
    }

    fn rebuild(self, change: impl FnOnce(&mut Inner)) -> Self {
        let i = &self.inner;
        let mut inner = Inner {
            http: i.http.clone(),
            base_url: i.base_url.clone(),
            read_url: i.read_url.clone(),
            invalidate_url: i.invalidate_url.clone(),
            appid: i.appid.clone(),
            key: i.key.clone(),
            timeout: i.timeout,
            refresh_margin: i.refresh_margin,
            state: Mutex::new(State::default()),
            flight: tokio::sync::Mutex::new(()),
        };
        change(&mut inner);
        Self {
            inner: Arc::new(inner),
        }
    }

    /// The appid this source serves.
    pub fn appid(&self) -> &str {
        &self.inner.appid
    }

    /// The bound on each broker request.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// How long before expiry the local copy stops being served.
    pub fn refresh_margin(&self) -> Duration {
        self.inner.refresh_margin
    }

    /// Drops the local copy, so the next [`TokenSource::token`] asks the broker. The broker's
    /// token is left alone (use [`TokenSource::invalidate`] for a token WeChat rejected).
    pub fn forget(&self) {
        let mut state = self.state();
        state.cached = None;
        state.generation += 1;
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn fresh(&self) -> Option<AccessToken> {
        let state = self.state();
        state
            .cached
            .as_ref()
            .filter(|c| Instant::now() < c.fresh_until)
            .map(|c| c.token.clone())
    }

    /// The local copy of `token`, `expires_in` seconds from `sent`.
    fn cached(&self, token: &AccessToken, expires_in: i64, sent: Instant) -> Cached {
        let lifetime = Duration::from_secs(expires_in.clamp(0, MAX_TOKEN_LIFETIME_SECS) as u64);
        let early = self.inner.refresh_margin.min(lifetime / 2);
        Cached {
            token: token.clone(),
            fresh_until: sent + (lifetime - early),
        }
    }

    /// Reads the broker's token; keeps it as the local copy unless the copy was dropped on
    /// purpose since the read was sent.
    async fn fetch(&self) -> Result<AccessToken> {
        let generation = self.state().generation;
        let sent = Instant::now();
        let req = self
            .inner
            .http
            .get(&self.inner.read_url)
            .bearer_auth(self.inner.key.expose());
        let bytes = self.request(req, READ_ENDPOINT).await?;
        let body: TokenBody =
            serde_json::from_slice(&bytes).map_err(|e| decode(READ_ENDPOINT, &e))?;
        check_token(&body.access_token, READ_ENDPOINT)?;
        let token = AccessToken::new(body.access_token);
        let cached = self.cached(&token, body.expires_in, sent);
        let mut state = self.state();
        if state.generation == generation {
            state.cached = Some(cached);
        }
        Ok(token)
    }

    /// Sends `req` within the timeout; the body of a 200, or the broker's refusal as a typed
    /// error.
    async fn request(
        &self,
        req: reqwest::RequestBuilder,
        endpoint: &'static str,
    ) -> Result<bytes::Bytes> {
        let transport = |e: reqwest::Error| Error::Transport {
            endpoint: Cow::Borrowed(endpoint),
            source: Arc::new(e.without_url()),
        };
        let exchange = async {
            let mut resp = req.send().await.map_err(transport)?;
            let status = resp.status().as_u16();
            let too_big = || Error::Decode {
                endpoint: Cow::Borrowed(endpoint),
                message: format!("an answer over {MAX_BODY} bytes: not the broker"),
            };
            if resp.content_length().is_some_and(|n| n > MAX_BODY as u64) {
                return Err(too_big());
            }
            let mut body = Vec::new();
            while let Some(chunk) = resp.chunk().await.map_err(transport)? {
                if body.len() + chunk.len() > MAX_BODY {
                    return Err(too_big());
                }
                body.extend_from_slice(&chunk);
            }
            Ok::<_, Error>((status, bytes::Bytes::from(body)))
        };
        let (status, bytes) = tokio::time::timeout(self.inner.timeout, exchange)
            .await
            .map_err(|_| Error::TimedOut {
                endpoint: Cow::Borrowed(endpoint),
                after: self.inner.timeout,
            })??;
        if status == 200 {
            return Ok(bytes);
        }
        Err(refusal(endpoint, status, &bytes))
    }
}

/// The broker's error answer as a typed error: WeChat's refusal (`wechat_errcode`) as
/// [`Error::Api`], anything else as [`Error::Broker`].
fn refusal(endpoint: &'static str, status: u16, bytes: &[u8]) -> Error {
    let Ok(ErrorEnvelope { error }) = serde_json::from_slice::<ErrorEnvelope>(bytes) else {
        return Error::HttpStatus {
            endpoint: Cow::Borrowed(endpoint),
            status,
        };
    };
    let mut message = error.message;
    if message.len() > MAX_MESSAGE_LEN {
        let mut cut = MAX_MESSAGE_LEN;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push('…');
    }
    match error.wechat_errcode {
        Some(code) => Error::Api {
            code: ErrCode::from(code),
            message,
            rid: None,
            endpoint: Cow::Borrowed(endpoint),
        },
        None => Error::Broker {
            endpoint: Cow::Borrowed(endpoint),
            status,
            code: error.code,
            message,
        },
    }
}

/// A decode failure without serde's text, which may quote the body (a token).
fn decode(endpoint: &'static str, e: &serde_json::Error) -> Error {
    Error::Decode {
        endpoint: Cow::Borrowed(endpoint),
        message: format!(
            "not the broker's token answer ({:?} error at line {} column {})",
            e.classify(),
            e.line(),
            e.column()
        ),
    }
}

fn check_token(token: &str, endpoint: &'static str) -> Result<()> {
    if token.is_empty() || token.len() > MAX_TOKEN_LEN {
        return Err(Error::Decode {
            endpoint: Cow::Borrowed(endpoint),
            message: format!("access_token of {} bytes", token.len()),
        });
    }
    Ok(())
}

#[async_trait]
impl TokenSource for BrokerTokenSource {
    async fn token(&self) -> Result<AccessToken> {
        if let Some(token) = self.fresh() {
            return Ok(token);
        }
        let seen = {
            let state = self.state();
            if let (Some(at), Some(err)) = (state.refused_at, state.last_error.as_ref()) {
                if at.elapsed() < REFUSAL_BACKOFF {
                    return Err(err.clone());
                }
            }
            state.flights
        };
        // The wait is bounded too: a leader whose future is not being polled (held in a
        // stream nobody drives) must not stall every other caller; past the bound this caller
        // asks the broker itself.
        let _flight = tokio::time::timeout(self.inner.timeout, self.inner.flight.lock())
            .await
            .ok();
        {
            let state = self.state();
            if let Some(c) = state.cached.as_ref() {
                if Instant::now() < c.fresh_until {
                    return Ok(c.token.clone());
                }
            }
            if state.flights != seen {
                // A flight finished while this caller waited and failed: share its outcome.
                if let Some(err) = state.last_error.clone() {
                    return Err(err);
                }
            }
        }
        let outcome = self.fetch().await;
        {
            let mut state = self.state();
            state.flights += 1;
            state.last_error = outcome.as_ref().err().cloned();
            state.refused_at = match &outcome {
                Err(Error::Broker {
                    status: 401 | 403 | 429,
                    ..
                }) => Some(Instant::now()),
                _ => None,
            };
        }
        if let Err(e) = &outcome {
            tracing::warn!(appid = %self.inner.appid, error = %e, "broker token read failed");
        }
        outcome
    }

    async fn invalidate(&self, stale: &AccessToken) -> Result<()> {
        {
            let mut state = self.state();
            if state
                .cached
                .as_ref()
                .is_some_and(|c| c.token.ct_eq(stale.expose()))
            {
                state.cached = None;
                state.generation += 1;
            }
        }
        let sent = Instant::now();
        let req = self
            .inner
            .http
            .post(&self.inner.invalidate_url)
            .bearer_auth(self.inner.key.expose())
            .json(&serde_json::json!({ "access_token": stale.expose() }));
        let bytes = self.request(req, INVALIDATE_ENDPOINT).await?;
        let body: InvalidateBody =
            serde_json::from_slice(&bytes).map_err(|e| decode(INVALIDATE_ENDPOINT, &e))?;
        tracing::info!(appid = %self.inner.appid, refreshed = body.refreshed, "rejected token reported to the broker");
        // The answer carries the now-current token when the key may read it: keep it, unless
        // a newer copy arrived meanwhile.
        if let (Some(token), Some(expires_in), true) =
            (body.access_token, body.expires_in, body.refreshed)
        {
            if check_token(&token, INVALIDATE_ENDPOINT).is_ok() && !stale.ct_eq(&token) {
                let token = AccessToken::new(token);
                let cached = self.cached(&token, expires_in, sent);
                // Checked and stored under one lock: a newer copy kept meanwhile stays.
                let mut state = self.state();
                if state
                    .cached
                    .as_ref()
                    .is_none_or(|c| c.token.ct_eq(stale.expose()))
                {
                    state.cached = Some(cached);
                }
            }
        }
        Ok(())
    }
}
