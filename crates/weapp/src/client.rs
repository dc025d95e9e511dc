//! [`Client`]: one app's handle to the WeChat server API.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};
use crate::http::{Body, Call, Endpoint, Http, Method, RawOutput, RetryPolicy};
use crate::observe::CallObserver;
use crate::secret::{AccessToken, AppSecret, BrokerClientKey};
use crate::token::{
    BrokerTokenSource, MemoryStore, TokenKey, TokenManager, TokenMode, TokenPolicy, TokenSource,
    TokenStore,
};

/// WeChat's production API host.
pub const DEFAULT_BASE_URL: &str = "https://api.weixin.qq.com";

struct ClientInner {
    appid: String,
    secret: AppSecret,
    http: Http,
    tokens: Arc<dyn TokenSource>,
    manager: Option<TokenManager>,
}

/// A client for one mini program. Cheap to clone; clones share the HTTP connection pool and the
/// token cache.
///
/// ```no_run
/// # async fn run() -> Result<(), weapp::Error> {
/// use weapp::{AppSecret, Client};
/// let client = Client::builder("wx1234567890abcdef", AppSecret::new("secret"))
///     .base_url("http://127.0.0.1:9000") // e.g. a `weapp sim`
///     .build()?;
/// let session = client.auth().code_to_session("081xYz").await?;
/// println!("{}", session.openid);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("appid", &self.inner.appid)
            .field(
                "base_url",
                &crate::http::redact_url(&self.inner.http.base_url),
            )
            .field("secret", &self.inner.secret)
            .field("tokens", &self.inner.tokens)
            .finish()
    }
}

impl Client {
    /// Starts building a client for `appid`.
    pub fn builder(appid: impl Into<String>, secret: impl Into<AppSecret>) -> ClientBuilder {
        ClientBuilder::new(appid.into(), secret.into())
    }

    /// The appid.
    pub fn appid(&self) -> &str {
        &self.inner.appid
    }

    /// The base URL every endpoint is resolved against.
    pub fn base_url(&self) -> &str {
        &self.inner.http.base_url
    }

    pub(crate) fn secret(&self) -> &AppSecret {
        &self.inner.secret
    }

    /// The token source in use.
    pub fn token_source(&self) -> &Arc<dyn TokenSource> {
        &self.inner.tokens
    }

    /// The built-in token manager, unless a custom [`TokenSource`] was supplied.
    pub fn token_manager(&self) -> Option<&TokenManager> {
        self.inner.manager.as_ref()
    }

    /// A valid access token (fetched or refreshed if due).
    ///
    /// # Errors
    /// See [`TokenSource::token`].
    pub async fn access_token(&self) -> Result<AccessToken> {
        self.inner.tokens.token().await
    }

    /// Sends one endpoint through the common pipeline.
    ///
    /// - The access token is added for [`Auth::AccessToken`] endpoints; on 40001/40014/42001 it
    ///   is invalidated (compare-and-swap) and the call is retried **once** with a fresh token.
    /// - -1, 5xx and transport failures are retried with jittered backoff — for idempotent
    ///   endpoints only; a non-idempotent one gets [`Error::OutcomeUnknown`] unless the request
    ///   provably never left (connection refused).
    /// - 45011 and 45009 are returned at once (see [`Error::retry_after`]).
    ///
    /// # Errors
    /// The typed [`Error`] of the last attempt.
    pub async fn send<E: Endpoint>(&self, ep: &E) -> Result<E::Output> {
        let call = Call::of(ep)?;
        self.inner
            .http
            .execute(&call, Some(self.inner.tokens.as_ref()))
            .await
    }

    /// Calls any API path through the same pipeline (token, retries, errcode decoding) — for
    /// endpoints this crate does not wrap yet. `path` may carry a query string; it is sent as
    /// query parameters and never appears in errors or log lines (it may hold a secret, as
    /// `clear_quota/v2`'s `appsecret` does). The call is treated as not idempotent (never
    /// retried after an unknown outcome).
    ///
    /// # Errors
    /// As [`Client::send`]; [`Error::InvalidArgument`] for a path that does not start with `/`.
    ///
    /// ```no_run
    /// # async fn run(client: weapp::Client) -> Result<(), weapp::Error> {
    /// use weapp::http::{Body, Method, RawOutput};
    /// let body = Body::json(&serde_json::json!({"cgi_path": "/cgi-bin/token"}))?;
    /// if let RawOutput::Json(v) = client.call_raw(Method::Post, "/cgi-bin/openapi/quota/get", body).await? {
    ///     println!("{v}");
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn call_raw(&self, method: Method, path: &str, body: Body) -> Result<RawOutput> {
        let call = Call::raw(method, path, body)?;
        let out = self
            .inner
            .http
            .execute(&call, Some(self.inner.tokens.as_ref()))
            .await?;
        if matches!(
            call.path,
            "/cgi-bin/clear_quota" | "/cgi-bin/clear_quota/v2"
        ) {
            // The quota was reset: a remembered 45009 no longer holds.
            if let Some(m) = &self.inner.manager {
                m.forget_failures();
            }
        }
        Ok(out)
    }

    /// Asks WeChat whether `token` is still good, with one cheap call that changes nothing
    /// and spends none of the token endpoints' quota (`openapi/quota/get` about itself): one
    /// attempt, no retry, no invalidation, whatever the answer. A broker uses it to prove a
    /// token dead before replacing it, so that a report or a refetch about a token that still
    /// works costs no refresh.
    ///
    /// # Errors
    /// When the answer proves nothing: a transport failure or timeout, a system error (-1),
    /// a rate or quota limit (45011, 45009), or an answer that is not WeChat's (not JSON, or
    /// JSON without the `quota` object — [`Error::Decode`]). Any other errcode means WeChat
    /// accepted the token before refusing the call, and is [`TokenCheck::Alive`].
    ///
    /// ```no_run
    /// # async fn run(client: weapp::Client) -> Result<(), weapp::Error> {
    /// use weapp::client::TokenCheck;
    /// let token = client.access_token().await?;
    /// if let TokenCheck::Dead(code) = client.check_token(&token).await? {
    ///     println!("WeChat refuses it: {}", code.code());
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn check_token(&self, token: &AccessToken) -> Result<TokenCheck> {
        const PATH: &str = "/cgi-bin/openapi/quota/get";
        let body = Body::json(&serde_json::json!({ "cgi_path": PATH }))?;
        let call = Call::raw(Method::Post, PATH, body)?;
        match self
            .inner
            .http
            .attempt::<RawOutput>(&call, Some(token))
            .await
        {
            Ok(RawOutput::Json(v)) if v.get("quota").is_some_and(|q| q.is_object()) => {
                Ok(TokenCheck::Alive)
            }
            // A proxy's page, an empty object, an errcode as a string: not WeChat's answer.
            Ok(_) => Err(Error::Decode {
                endpoint: std::borrow::Cow::Borrowed(PATH),
                message: "not an openapi/quota/get answer".into(),
            }),
            Err(e) => match e.errcode() {
                Some(code) if code.is_token_invalid() => Ok(TokenCheck::Dead(code)),
                Some(code) if matches!(code.code(), -1 | 45009 | 45011) => Err(e),
                Some(_) => Ok(TokenCheck::Alive),
                None => Err(e),
            },
        }
    }
}

/// What WeChat said of an access token when asked with [`Client::check_token`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenCheck {
    /// WeChat accepted it.
    Alive,
    /// WeChat refused it with a code of the token-invalid family (40001, 40014, 42001): it is
    /// dead, and no retry with it can succeed.
    Dead(crate::ErrCode),
}

/// Builds a [`Client`].
#[must_use]
pub struct ClientBuilder {
    appid: String,
    secret: AppSecret,
    base_url: String,
    http_client: Option<reqwest::Client>,
    timeout: Duration,
    connect_timeout: Duration,
    token_mode: TokenMode,
    token_store: Option<Arc<dyn TokenStore>>,
    token_source: Option<Arc<dyn TokenSource>>,
    broker: Option<(String, BrokerClientKey)>,
    token_policy: TokenPolicy,
    clock: Arc<dyn Clock>,
    retry: RetryPolicy,
    observer: Option<Arc<dyn CallObserver>>,
}

impl ClientBuilder {
    fn new(appid: String, secret: AppSecret) -> Self {
        Self {
            appid,
            secret,
            base_url: DEFAULT_BASE_URL.into(),
            http_client: None,
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            token_mode: TokenMode::Stable,
            token_store: None,
            token_source: None,
            broker: None,
            token_policy: TokenPolicy::default(),
            clock: Arc::new(SystemClock),
            retry: RetryPolicy::default(),
            observer: None,
        }
    }

    /// Where every endpoint — the token endpoints included — is sent. Default
    /// `https://api.weixin.qq.com`; point it at `weapp sim` or a broker's mirror.
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = url.into();
        self
    }

    /// Uses this reqwest client (for proxies, custom TLS roots, shared pools). The builder's
    /// timeouts then do not apply: configure them on the client.
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http_client = Some(client);
        self
    }

    /// Whole-request timeout (default 10 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Connect timeout (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// `stable_token` (default) or the classic `/cgi-bin/token`.
    pub fn token_mode(mut self, mode: TokenMode) -> Self {
        self.token_mode = mode;
        self
    }

    /// Where tokens are cached and locked (default: a private [`MemoryStore`]). Use the Redis
    /// store to share one token among processes.
    pub fn token_store(mut self, store: Arc<dyn TokenStore>) -> Self {
        self.token_store = Some(store);
        self
    }

    /// Replaces the built-in token manager (e.g. with a remote broker).
    pub fn token_source(mut self, source: Arc<dyn TokenSource>) -> Self {
        self.token_source = Some(source);
        self
    }

    /// Takes every access token from the weapp-server token broker at `base_url` with
    /// `client_key` (scopes `token:read` and `token:invalidate`) — a
    /// [`BrokerTokenSource`] on this builder's HTTP client, each request bounded by its
    /// [`timeout`](ClientBuilder::timeout). Replaces the built-in token manager and any
    /// [`token_source`](ClientBuilder::token_source); the broker owns the token.
    ///
    /// ```no_run
    /// # fn run() -> Result<(), weapp::Error> {
    /// let client = weapp::Client::builder("wx1234567890abcdef", "")
    ///     .broker("http://tokens.internal:8080", weapp::BrokerClientKey::new("ck_…"))
    ///     .build()?;
    /// # let _ = client; Ok(()) }
    /// ```
    pub fn broker(
        mut self,
        base_url: impl Into<String>,
        client_key: impl Into<BrokerClientKey>,
    ) -> Self {
        self.broker = Some((base_url.into(), client_key.into()));
        self
    }

    /// Refresh margin, lease, fetch deadline, polling, caching and failure handling of the
    /// token manager (checked by [`ClientBuilder::build`]).
    pub fn token_policy(mut self, policy: TokenPolicy) -> Self {
        self.token_policy = policy;
        self
    }

    /// The clock used for token expiry (tests inject a manual one).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Retry policy for transient failures.
    pub fn retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Reports every attempt of every upstream call — the token fetches of the built-in
    /// manager included — to `observer` (path, errcode, time taken; never a token or a
    /// query string): how a service keeps latency histograms and errcode counts without
    /// wrapping each call. Optional; without one, nothing is measured.
    pub fn observer(mut self, observer: Arc<dyn CallObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Builds the client.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty appid, an unparseable base URL, a zero timeout
    /// or a token policy that cannot work ([`TokenPolicy::validate`]).
    pub fn build(self) -> Result<Client> {
        if self.appid.trim().is_empty() {
            return Err(Error::InvalidArgument("appid must not be empty".into()));
        }
        if self.timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err(Error::InvalidArgument("timeouts must be positive".into()));
        }
        if self.token_source.is_none() && self.broker.is_none() {
            self.token_policy.validate()?;
        }
        let client = match self.http_client {
            Some(c) => c,
            None => reqwest::Client::builder()
                .timeout(self.timeout)
                .connect_timeout(self.connect_timeout)
                .user_agent(concat!("weapp-rs/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| Error::InvalidArgument(format!("http client: {e}")))?,
        };
        let http =
            Http::new(client.clone(), &self.base_url, self.retry)?.with_observer(self.observer);
        let token_source = match self.broker {
            Some((url, key)) => Some(Arc::new(BrokerTokenSource::with_http_client(
                client.clone(),
                url,
                key,
                self.appid.clone(),
                self.timeout,
            )?) as Arc<dyn TokenSource>),
            None => self.token_source,
        };
        let (tokens, manager): (Arc<dyn TokenSource>, _) = match token_source {
            Some(source) => (source, None),
            None => {
                let store = self
                    .token_store
                    .unwrap_or_else(|| Arc::new(MemoryStore::with_clock(self.clock.clone())));
                let manager = TokenManager::new(
                    TokenKey::new(self.appid.clone(), self.token_mode),
                    self.secret.clone(),
                    http.clone(),
                    store,
                    self.clock,
                    self.token_policy,
                );
                (Arc::new(manager.clone()), Some(manager))
            }
        };
        Ok(Client {
            inner: Arc::new(ClientInner {
                appid: self.appid,
                secret: self.secret,
                http,
                tokens,
                manager,
            }),
        })
    }
}
