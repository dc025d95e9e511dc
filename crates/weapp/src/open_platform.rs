//! Third-party platforms (开放平台, "component"): run mini programs on behalf of merchants.
//!
//! A [`Component`] holds what a platform needs:
//!
//! - **tickets**: WeChat pushes a `component_verify_ticket` to the platform's authorization-event
//!   URL every ten minutes; [`Component::receive`] verifies, decrypts and **stores** it in a
//!   [`TicketStore`] shared by every process (a lost or `null` ticket is 61006 for hours);
//! - the **component token**, fetched from the latest ticket by a [`TokenManager`] — one refresh
//!   at a time across processes under a fenced lease, like an app's token;
//! - **authorization**: pre-auth codes and the PC/H5 authorization URLs, `api_query_auth`
//!   (whose refresh token is **saved before** anything else is done with it);
//! - **acting for a merchant**: [`Component::authorizer`] returns a [`Client`] for the
//!   merchant's mini program whose tokens are authorizer tokens, refreshed from the stored
//!   refresh token (a new one WeChat returns is saved before the token is used; a lost one is
//!   recovered from `api_get_authorizer_list`) — so every API domain works for it unchanged;
//! - the merchant's account: `api_get_authorizer_info`, the authorizer list (paged) and the
//!   [`AuthorizerOption`]s;
//! - login of the merchant's users through `/sns/component/jscode2session`.
//!
//! ```no_run
//! # async fn run() -> weapp::Result<()> {
//! use weapp::open_platform::{AuthType, Component};
//! let component = Component::builder("wxcomponent", "component-secret", "token", "43-char EncodingAESKey………………………")
//!     .build()?;
//! let pre = component.pre_auth_code().await?;
//! let url = component.authorization_url(&pre.pre_auth_code, "https://example.com/back", AuthType::MiniProgram, None);
//! // … the merchant scans it; WeChat redirects with auth_code …
//! let info = component.query_auth("auth_code").await?;
//! let merchant = component.authorizer(&info.authorizer_appid)?;
//! let categories = merchant.subscribe().categories().await?;
//! # Ok(()) }
//! ```

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::api::auth::Code2Session;
use crate::client::{Client, DEFAULT_BASE_URL};
use crate::clock::{Clock, SystemClock};
use crate::error::{ErrCode, Error, Result, StoreError};
use crate::http::{Auth, Body, Call, Http, JsonResponse, Method, RetryPolicy};
use crate::push::crypto::{signature, signature_matches, EncodingAesKey};
use crate::push::{message, PushError, PushQuery};
use crate::secret::{AccessToken, AppSecret};
use crate::token::{
    MemoryStore, TokenFetcher, TokenKey, TokenManager, TokenMode, TokenPolicy, TokenResponse,
    TokenSource, TokenStore,
};

/// Where the latest `component_verify_ticket` is kept. It must be shared by every process of
/// the platform and survive restarts: a platform without its ticket cannot get a component
/// token (61006) until the next push.
#[async_trait]
pub trait TicketStore: Send + Sync + std::fmt::Debug {
    /// The latest ticket of the platform, if any.
    ///
    /// # Errors
    /// The store failed.
    async fn latest(
        &self,
        component_appid: &str,
    ) -> std::result::Result<Option<String>, StoreError>;

    /// Keeps `ticket` as the latest one.
    ///
    /// # Errors
    /// The store failed.
    async fn save(
        &self,
        component_appid: &str,
        ticket: &str,
    ) -> std::result::Result<(), StoreError>;

    /// Keeps `ticket`, pushed by WeChat at `create_time` (the push's `CreateTime`, Unix
    /// seconds; 0 when unknown), as the latest one — unless a ticket pushed later is kept
    /// already: WeChat retries a push it got no `success` for, and a late retry of an older
    /// push must not replace a newer ticket. A kept time more than
    /// [`TICKET_TIME_SLACK_SECS`] ahead of this machine's clock is not trusted (a simulator's
    /// clock moved forward, a bad time): the push replaces it. [`Component::receive`] saves
    /// tickets with this. The default ignores the time ([`TicketStore::save`]): stores that
    /// can compare should, and a store wrapping another should forward this method too.
    ///
    /// # Errors
    /// The store failed.
    async fn save_pushed(
        &self,
        component_appid: &str,
        ticket: &str,
        create_time: i64,
    ) -> std::result::Result<(), StoreError> {
        let _ = create_time;
        self.save(component_appid, ticket).await
    }
}

/// How far a ticket's push time may be ahead of the clock it is compared with (the signed
/// `timestamp` of its push, this machine's clock for the kept one), in seconds.
pub const TICKET_TIME_SLACK_SECS: i64 = 300;

/// Where merchants' authorizer refresh tokens are kept — the precious thing: lose one and the
/// merchant must authorize again (or it is recovered from `api_get_authorizer_list`). Keep it
/// in a database, not only in a cache.
#[async_trait]
pub trait RefreshTokenStore: Send + Sync + std::fmt::Debug {
    /// The refresh token of `authorizer_appid`, if known.
    ///
    /// # Errors
    /// The store failed.
    async fn load(
        &self,
        component_appid: &str,
        authorizer_appid: &str,
    ) -> std::result::Result<Option<String>, StoreError>;

    /// Keeps `refresh_token` for `authorizer_appid` (replacing the previous one).
    ///
    /// # Errors
    /// The store failed.
    async fn save(
        &self,
        component_appid: &str,
        authorizer_appid: &str,
        refresh_token: &str,
    ) -> std::result::Result<(), StoreError>;

    /// Forgets `authorizer_appid` (it de-authorized the platform).
    ///
    /// # Errors
    /// The store failed.
    async fn remove(
        &self,
        component_appid: &str,
        authorizer_appid: &str,
    ) -> std::result::Result<(), StoreError>;
}

/// Tickets and refresh tokens in this process's memory (tests, single processes that accept
/// losing them on restart — the server keeps them in its database).
#[derive(Debug, Default)]
pub struct MemoryPlatformStore {
    /// (ticket, when WeChat pushed it; `None` when saved without a time).
    tickets: Mutex<HashMap<String, (String, Option<i64>)>>,
    refresh: Mutex<HashMap<(String, String), String>>,
}

impl MemoryPlatformStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl TicketStore for MemoryPlatformStore {
    async fn latest(
        &self,
        component_appid: &str,
    ) -> std::result::Result<Option<String>, StoreError> {
        Ok(self
            .tickets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(component_appid)
            .map(|(ticket, _)| ticket.clone()))
    }

    async fn save(
        &self,
        component_appid: &str,
        ticket: &str,
    ) -> std::result::Result<(), StoreError> {
        self.tickets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(component_appid.to_owned(), (ticket.to_owned(), None));
        Ok(())
    }

    async fn save_pushed(
        &self,
        component_appid: &str,
        ticket: &str,
        create_time: i64,
    ) -> std::result::Result<(), StoreError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let mut tickets = self.tickets.lock().unwrap_or_else(|p| p.into_inner());
        let newer_kept = create_time != 0
            && tickets
                .get(component_appid)
                .and_then(|(_, at)| *at)
                .is_some_and(|at| at > create_time && at <= now + TICKET_TIME_SLACK_SECS);
        if !newer_kept {
            tickets.insert(
                component_appid.to_owned(),
                (ticket.to_owned(), (create_time != 0).then_some(create_time)),
            );
        }
        Ok(())
    }
}

#[async_trait]
impl RefreshTokenStore for MemoryPlatformStore {
    async fn load(
        &self,
        component_appid: &str,
        authorizer_appid: &str,
    ) -> std::result::Result<Option<String>, StoreError> {
        Ok(self
            .refresh
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(component_appid.to_owned(), authorizer_appid.to_owned()))
            .cloned())
    }

    async fn save(
        &self,
        component_appid: &str,
        authorizer_appid: &str,
        refresh_token: &str,
    ) -> std::result::Result<(), StoreError> {
        self.refresh
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                (component_appid.to_owned(), authorizer_appid.to_owned()),
                refresh_token.to_owned(),
            );
        Ok(())
    }

    async fn remove(
        &self,
        component_appid: &str,
        authorizer_appid: &str,
    ) -> std::result::Result<(), StoreError> {
        self.refresh
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(component_appid.to_owned(), authorizer_appid.to_owned()));
        Ok(())
    }
}

/// Which accounts the authorization page offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthType {
    /// Official accounts only (1).
    OfficialAccount,
    /// Mini programs only (2).
    MiniProgram,
    /// Both (3).
    Both,
}

impl AuthType {
    fn code(self) -> u8 {
        match self {
            AuthType::OfficialAccount => 1,
            AuthType::MiniProgram => 2,
            AuthType::Both => 3,
        }
    }
}

/// A pre-authorization code.
#[derive(Debug, Clone, Deserialize)]
#[non_exhaustive]
pub struct PreAuthCode {
    /// `preauthcode@@@…`; one use.
    pub pre_auth_code: String,
    /// Seconds it lives.
    pub expires_in: i64,
}

impl JsonResponse for PreAuthCode {}

/// A permission set granted by the merchant.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct FuncInfo {
    /// The set.
    pub funcscope_category: FuncScope,
}

/// A permission set's id.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct FuncScope {
    /// Its id.
    pub id: i64,
}

/// What `api_query_auth` answers. `Debug` hides the tokens.
#[derive(Clone, Deserialize)]
#[non_exhaustive]
pub struct AuthorizationInfo {
    /// The merchant's mini program.
    pub authorizer_appid: String,
    /// An authorizer token (for the mini program's APIs).
    pub authorizer_access_token: Option<AccessToken>,
    /// Its lifetime.
    #[serde(default)]
    pub expires_in: i64,
    /// The refresh token (saved by [`Component::query_auth`] before it returns) — absent when
    /// the account granted no API permission.
    #[serde(default)]
    pub authorizer_refresh_token: Option<AccessToken>,
    /// The permission sets granted.
    #[serde(default)]
    pub func_info: Vec<FuncInfo>,
}

impl std::fmt::Debug for AuthorizationInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorizationInfo")
            .field("authorizer_appid", &self.authorizer_appid)
            .field("expires_in", &self.expires_in)
            .field("func_info", &self.func_info)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct QueryAuthResponse {
    authorization_info: AuthorizationInfo,
}

impl JsonResponse for QueryAuthResponse {}

/// One authorizer in the list.
#[derive(Clone, Deserialize)]
#[non_exhaustive]
pub struct AuthorizerEntry {
    /// The merchant's mini program.
    pub authorizer_appid: String,
    /// Its refresh token (absent if never exchanged with `api_query_auth`).
    #[serde(default)]
    pub refresh_token: Option<AccessToken>,
    /// Unix seconds of the authorization.
    #[serde(default)]
    pub auth_time: i64,
}

impl std::fmt::Debug for AuthorizerEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorizerEntry")
            .field("authorizer_appid", &self.authorizer_appid)
            .field("auth_time", &self.auth_time)
            .finish_non_exhaustive()
    }
}

/// A page of `api_get_authorizer_list`.
#[derive(Debug, Clone, Deserialize)]
#[non_exhaustive]
pub struct AuthorizerPage {
    /// Authorizers in all.
    pub total_count: i64,
    /// This page.
    #[serde(default)]
    pub list: Vec<AuthorizerEntry>,
}

impl JsonResponse for AuthorizerPage {}

/// `api_get_authorizer_info`: the account facts, as WeChat sends them.
#[derive(Debug, Clone, Deserialize)]
#[non_exhaustive]
pub struct AuthorizerInfo {
    /// `nick_name`, `user_name` (`gh_…`), `principal_name`, `account_status`,
    /// `MiniProgramInfo` (present for a mini program), …
    pub authorizer_info: Value,
}

impl JsonResponse for AuthorizerInfo {}

/// An authorizer option: an account setting a platform reads and sets for a merchant
/// (`api_get_authorizer_option` / `api_set_authorizer_option`). Values are WeChat's digits, as
/// strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuthorizerOption {
    /// `location_report`: `"0"` off, `"1"` on entering a session, `"2"` every 5 seconds.
    LocationReport,
    /// `voice_recognize`: `"0"` off, `"1"` on.
    VoiceRecognize,
    /// `customer_service` (多客服): `"0"` off, `"1"` on.
    CustomerService,
}

impl AuthorizerOption {
    /// The `option_name` WeChat knows it by.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthorizerOption::LocationReport => "location_report",
            AuthorizerOption::VoiceRecognize => "voice_recognize",
            AuthorizerOption::CustomerService => "customer_service",
        }
    }
}

impl std::fmt::Display for AuthorizerOption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Deserialize)]
struct OptionResponse {
    /// A string in the reference; a number in some answers.
    option_value: Value,
}

impl JsonResponse for OptionResponse {}

#[derive(Deserialize)]
struct Ack {}

impl JsonResponse for Ack {}

#[derive(Deserialize)]
struct ComponentTokenResponse {
    component_access_token: AccessToken,
    expires_in: i64,
}

impl JsonResponse for ComponentTokenResponse {}

#[derive(Deserialize)]
struct AuthorizerTokenResponse {
    authorizer_access_token: AccessToken,
    expires_in: i64,
    #[serde(default)]
    authorizer_refresh_token: Option<AccessToken>,
}

impl JsonResponse for AuthorizerTokenResponse {}

/// An authorization event (`authorized`, `updateauthorized`).
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuthorizationEvent {
    /// The merchant's mini program.
    pub authorizer_appid: String,
    /// The authorization code: exchange it with [`Component::query_auth`].
    pub authorization_code: String,
    /// When the code expires (Unix seconds, as pushes carry it).
    pub code_expires_at: i64,
    /// The pre-auth code the merchant used.
    pub pre_auth_code: Option<String>,
    /// When WeChat sent the event (Unix seconds).
    pub create_time: i64,
}

impl std::fmt::Debug for AuthorizationEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorizationEvent")
            .field("authorizer_appid", &self.authorizer_appid)
            .field("code_expires_at", &self.code_expires_at)
            .field("create_time", &self.create_time)
            .finish_non_exhaustive()
    }
}

/// What arrives at the authorization-event URL.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ComponentEvent {
    /// `component_verify_ticket` (already saved by [`Component::receive`]).
    VerifyTicket {
        /// The ticket.
        ticket: String,
        /// Unix seconds.
        create_time: i64,
    },
    /// A merchant authorized the platform.
    Authorized(AuthorizationEvent),
    /// A merchant changed what it granted.
    UpdateAuthorized(AuthorizationEvent),
    /// A merchant withdrew its authorization.
    Unauthorized {
        /// The merchant's mini program.
        authorizer_appid: String,
        /// Unix seconds.
        create_time: i64,
    },
    /// The outcome of a fast registration (`notify_third_fasteregister`).
    FastRegister {
        /// The new mini program, when created.
        appid: Option<String>,
        /// 0 on success.
        status: i64,
        /// Exchange it with [`Component::query_auth`] when `status` is 0.
        auth_code: Option<String>,
        /// WeChat's message.
        msg: Option<String>,
        /// The registration info as sent.
        info: Value,
    },
    /// Another `InfoType`, with every field as sent.
    Other {
        /// The `InfoType`.
        info_type: String,
        /// The decrypted fields.
        fields: Value,
    },
}

impl std::fmt::Debug for ComponentEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ComponentEvent::VerifyTicket { create_time, .. } => f
                .debug_struct("VerifyTicket")
                .field("create_time", create_time)
                .finish_non_exhaustive(),
            ComponentEvent::Authorized(e) => f.debug_tuple("Authorized").field(e).finish(),
            ComponentEvent::UpdateAuthorized(e) => {
                f.debug_tuple("UpdateAuthorized").field(e).finish()
            }
            ComponentEvent::Unauthorized {
                authorizer_appid,
                create_time,
            } => f
                .debug_struct("Unauthorized")
                .field("authorizer_appid", authorizer_appid)
                .field("create_time", create_time)
                .finish(),
            ComponentEvent::FastRegister { appid, status, .. } => f
                .debug_struct("FastRegister")
                .field("appid", appid)
                .field("status", status)
                .finish_non_exhaustive(),
            ComponentEvent::Other { info_type, .. } => f
                .debug_struct("Other")
                .field("info_type", info_type)
                .finish_non_exhaustive(),
        }
    }
}

impl ComponentEvent {
    /// The `InfoType`.
    pub fn info_type(&self) -> &str {
        match self {
            ComponentEvent::VerifyTicket { .. } => "component_verify_ticket",
            ComponentEvent::Authorized(_) => "authorized",
            ComponentEvent::UpdateAuthorized(_) => "updateauthorized",
            ComponentEvent::Unauthorized { .. } => "unauthorized",
            ComponentEvent::FastRegister { .. } => "notify_third_fasteregister",
            ComponentEvent::Other { info_type, .. } => info_type,
        }
    }

    fn from_fields(fields: Value) -> std::result::Result<Self, PushError> {
        let text = |k: &str| fields.get(k).and_then(value_text);
        let number = |k: &str| text(k).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
        let info_type =
            text("InfoType").ok_or_else(|| PushError::Parse("InfoType is missing".into()))?;
        let create_time = number("CreateTime");
        let authorization = || -> std::result::Result<AuthorizationEvent, PushError> {
            Ok(AuthorizationEvent {
                authorizer_appid: text("AuthorizerAppid")
                    .ok_or_else(|| PushError::Parse("AuthorizerAppid is missing".into()))?,
                authorization_code: text("AuthorizationCode")
                    .ok_or_else(|| PushError::Parse("AuthorizationCode is missing".into()))?,
                code_expires_at: number("AuthorizationCodeExpiredTime"),
                pre_auth_code: text("PreAuthCode"),
                create_time,
            })
        };
        Ok(match info_type.as_str() {
            "component_verify_ticket" => ComponentEvent::VerifyTicket {
                ticket: text("ComponentVerifyTicket")
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| PushError::Parse("ComponentVerifyTicket is missing".into()))?,
                create_time,
            },
            "authorized" => ComponentEvent::Authorized(authorization()?),
            "updateauthorized" => ComponentEvent::UpdateAuthorized(authorization()?),
            "unauthorized" => ComponentEvent::Unauthorized {
                authorizer_appid: text("AuthorizerAppid")
                    .ok_or_else(|| PushError::Parse("AuthorizerAppid is missing".into()))?,
                create_time,
            },
            "notify_third_fasteregister" => ComponentEvent::FastRegister {
                appid: text("appid"),
                status: number("status"),
                auth_code: text("auth_code"),
                msg: text("msg"),
                info: fields.get("info").cloned().unwrap_or(Value::Null),
            },
            _ => ComponentEvent::Other { info_type, fields },
        })
    }
}

fn value_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Builds a [`Component`].
pub struct ComponentBuilder {
    appid: String,
    secret: AppSecret,
    push_token: String,
    aes_key: String,
    base_url: String,
    http: Option<reqwest::Client>,
    store: Option<Arc<dyn TokenStore>>,
    tickets: Option<Arc<dyn TicketStore>>,
    refresh_tokens: Option<Arc<dyn RefreshTokenStore>>,
    clock: Option<Arc<dyn Clock>>,
    policy: TokenPolicy,
    window_secs: i64,
    observer: Option<Arc<dyn crate::observe::CallObserver>>,
}

impl std::fmt::Debug for ComponentBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComponentBuilder")
            .field("appid", &self.appid)
            .field("base_url", &crate::http::redact_url(&self.base_url))
            .finish_non_exhaustive()
    }
}

impl ComponentBuilder {
    /// WeChat's API host (default) or a weapp-sim URL.
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = url.into().trim_end_matches('/').to_owned();
        self
    }

    /// The HTTP client (one per process is best).
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http = Some(client);
        self
    }

    /// Where component and authorizer tokens are shared by processes (Redis for fleets;
    /// default: this process's memory).
    pub fn token_store(mut self, store: Arc<dyn TokenStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// Where the latest ticket is kept (default: this process's memory).
    pub fn ticket_store(mut self, store: Arc<dyn TicketStore>) -> Self {
        self.tickets = Some(store);
        self
    }

    /// Where refresh tokens are kept (default: this process's memory).
    pub fn refresh_token_store(mut self, store: Arc<dyn RefreshTokenStore>) -> Self {
        self.refresh_tokens = Some(store);
        self
    }

    /// The clock token expiry is measured with.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Token management tuning (for the component token and every authorizer's).
    pub fn token_policy(mut self, policy: TokenPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Reports every upstream attempt — the component's own calls and its token fetches, and
    /// those of the authorizer clients it makes ([`Component::authorizer`]) — to `observer`
    /// (see [`ClientBuilder::observer`](crate::ClientBuilder::observer)).
    pub fn observer(mut self, observer: Arc<dyn crate::observe::CallObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// How far an event's timestamp may be from now (default 300 s; 0: unchecked).
    pub fn event_window_secs(mut self, secs: u64) -> Self {
        self.window_secs = secs as i64;
        self
    }

    /// Builds the component.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty appid or secret, an EncodingAESKey that is not
    /// 43 base64 characters, or a policy that does not validate.
    pub fn build(self) -> Result<Component> {
        if self.appid.is_empty() || self.secret.expose().is_empty() {
            return Err(Error::InvalidArgument(
                "component appid and secret are required".into(),
            ));
        }
        // An empty Token would make every msg_signature computable by anyone.
        if self.push_token.trim().is_empty() {
            return Err(Error::InvalidArgument(
                "the message-check Token is required".into(),
            ));
        }
        if self.appid.contains(':') {
            return Err(Error::InvalidArgument(
                "component appid must not contain ':'".into(),
            ));
        }
        let aes_key = EncodingAesKey::new(&self.aes_key)
            .map_err(|e| Error::InvalidArgument(format!("EncodingAESKey: {e}")))?;
        self.policy.validate()?;
        let client = match self.http {
            Some(c) => c,
            None => reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .map_err(|e| Error::InvalidArgument(format!("http client: {e}")))?,
        };
        let http =
            Http::new(client, &self.base_url, RetryPolicy::default())?.with_observer(self.observer);
        let clock: Arc<dyn Clock> = self.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let store = self
            .store
            .unwrap_or_else(|| Arc::new(MemoryStore::with_clock(clock.clone())));
        let platform_store = Arc::new(MemoryPlatformStore::new());
        let tickets: Arc<dyn TicketStore> = self.tickets.unwrap_or_else(|| platform_store.clone());
        let refresh_tokens: Arc<dyn RefreshTokenStore> =
            self.refresh_tokens.unwrap_or(platform_store);
        let fetcher = Arc::new(ComponentTokenFetcher {
            appid: self.appid.clone(),
            secret: self.secret.clone(),
            http: http.clone(),
            tickets: tickets.clone(),
        });
        let manager = TokenManager::with_fetcher(
            TokenKey::new(format!("component:{}", self.appid), TokenMode::Classic),
            http.clone(),
            store.clone(),
            clock.clone(),
            self.policy.clone(),
            fetcher,
        );
        Ok(Component {
            inner: Arc::new(Inner {
                appid: self.appid,
                secret: self.secret,
                push_token: self.push_token,
                aes_key,
                http,
                store,
                clock,
                policy: self.policy,
                tickets,
                refresh_tokens,
                manager,
                window_secs: self.window_secs,
                authorizers: Mutex::new(HashMap::new()),
            }),
        })
    }
}

struct Inner {
    appid: String,
    secret: AppSecret,
    push_token: String,
    aes_key: EncodingAesKey,
    http: Http,
    store: Arc<dyn TokenStore>,
    clock: Arc<dyn Clock>,
    policy: TokenPolicy,
    tickets: Arc<dyn TicketStore>,
    refresh_tokens: Arc<dyn RefreshTokenStore>,
    manager: TokenManager,
    window_secs: i64,
    /// One token manager per merchant, so that a process keeps one flight, one local copy and
    /// one memory of failures per authorizer however often `authorizer()` is called.
    authorizers: Mutex<HashMap<String, TokenManager>>,
}

/// The most authorizer managers a component keeps (beyond, an arbitrary one is dropped).
const MAX_AUTHORIZER_MANAGERS: usize = 100_000;

/// A third-party platform. Cheap to clone; clones share everything. See the [module
/// docs](self).
#[derive(Clone)]
pub struct Component {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Component {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Component")
            .field("appid", &self.inner.appid)
            .field(
                "base_url",
                &crate::http::redact_url(&self.inner.http.base_url),
            )
            .finish_non_exhaustive()
    }
}

/// Fetches the component token from the latest stored ticket.
#[derive(Debug)]
struct ComponentTokenFetcher {
    appid: String,
    secret: AppSecret,
    http: Http,
    tickets: Arc<dyn TicketStore>,
}

#[async_trait]
impl TokenFetcher for ComponentTokenFetcher {
    fn endpoint(&self) -> &'static str {
        "/cgi-bin/component/api_component_token"
    }

    async fn fetch(&self) -> Result<TokenResponse> {
        let ticket = self.tickets.latest(&self.appid).await?.ok_or_else(|| {
            Error::InvalidArgument(format!(
                "no component_verify_ticket stored for {} yet (WeChat pushes one every 10 minutes; Component::start_push_ticket asks for one now)",
                self.appid
            ))
        })?;
        let body = serde_json::json!({
            "component_appid": self.appid,
            "component_appsecret": self.secret.expose(),
            "component_verify_ticket": ticket,
        });
        let call = Call {
            method: Method::Post,
            path: "/cgi-bin/component/api_component_token",
            auth: Auth::None,
            idempotent: false,
            query: Vec::new(),
            body: Body::json(&body)?,
        };
        let r: ComponentTokenResponse = self.http.attempt(&call, None).await?;
        Ok(TokenResponse {
            access_token: r.component_access_token,
            expires_in: r.expires_in,
        })
    }
}

/// Fetches a merchant's authorizer token from its stored refresh token.
struct AuthorizerTokenFetcher {
    component: std::sync::Weak<Inner>,
    authorizer_appid: String,
}

impl std::fmt::Debug for AuthorizerTokenFetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorizerTokenFetcher")
            .field("authorizer_appid", &self.authorizer_appid)
            .finish()
    }
}

#[async_trait]
impl TokenFetcher for AuthorizerTokenFetcher {
    fn endpoint(&self) -> &'static str {
        "/cgi-bin/component/api_authorizer_token"
    }

    async fn fetch(&self) -> Result<TokenResponse> {
        let c = Component {
            inner: self
                .component
                .upgrade()
                .ok_or_else(|| Error::InvalidArgument("the component was dropped".into()))?,
        };
        let appid = c.inner.appid.clone();
        let mut recovered = false;
        loop {
            let refresh = match c.inner.refresh_tokens.load(&appid, &self.authorizer_appid).await? {
                Some(r) => r,
                None if !recovered => {
                    recovered = true;
                    c.recover_refresh_token(&self.authorizer_appid, None).await?;
                    continue;
                }
                None => {
                    return Err(Error::Api {
                        code: ErrCode::from(61023),
                        message: format!(
                            "no refresh token for {} (not in the store, nor in api_get_authorizer_list): the merchant must authorize again",
                            self.authorizer_appid
                        ),
                        rid: None,
                        endpoint: Cow::Borrowed("/cgi-bin/component/api_authorizer_token"),
                    })
                }
            };
            let body = serde_json::json!({
                "component_appid": appid,
                "authorizer_appid": self.authorizer_appid,
                "authorizer_refresh_token": refresh,
            });
            // One attempt (the token manager decides about retries, with its lease): a
            // rejected component token is renewed and the attempt made once more.
            let result: Result<AuthorizerTokenResponse> = c
                .attempt("/cgi-bin/component/api_authorizer_token", &body)
                .await;
            match result {
                Ok(r) => {
                    // A new refresh token is saved before the access token is used.
                    if let Some(new) = r
                        .authorizer_refresh_token
                        .as_ref()
                        .filter(|n| n.expose() != refresh && !n.expose().is_empty())
                    {
                        c.inner
                            .refresh_tokens
                            .save(&appid, &self.authorizer_appid, new.expose())
                            .await?;
                    }
                    return Ok(TokenResponse {
                        access_token: r.authorizer_access_token,
                        expires_in: r.expires_in,
                    });
                }
                // The refresh token used is not (or no longer) the one WeChat knows: another
                // process may have saved the right one meanwhile, or the list has it.
                Err(e) if e.errcode().map(ErrCode::code) == Some(61023) && !recovered => {
                    recovered = true;
                    let now = c
                        .inner
                        .refresh_tokens
                        .load(&appid, &self.authorizer_appid)
                        .await?;
                    if now.as_deref().is_some_and(|n| n != refresh) {
                        continue;
                    }
                    if !c
                        .recover_refresh_token(&self.authorizer_appid, Some(&refresh))
                        .await?
                    {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl Component {
    /// A component with its appid, secret, and the message-check Token and EncodingAESKey of
    /// its authorization-event URL.
    pub fn builder(
        appid: impl Into<String>,
        secret: impl Into<AppSecret>,
        push_token: impl Into<String>,
        encoding_aes_key: impl Into<String>,
    ) -> ComponentBuilder {
        ComponentBuilder {
            appid: appid.into(),
            secret: secret.into(),
            push_token: push_token.into(),
            aes_key: encoding_aes_key.into(),
            base_url: DEFAULT_BASE_URL.to_owned(),
            http: None,
            store: None,
            tickets: None,
            refresh_tokens: None,
            clock: None,
            policy: TokenPolicy::default(),
            window_secs: 300,
            observer: None,
        }
    }

    /// The component appid.
    pub fn appid(&self) -> &str {
        &self.inner.appid
    }

    /// The component token's manager (status, fetch counts, a background refresher).
    pub fn token_manager(&self) -> &TokenManager {
        &self.inner.manager
    }

    /// A valid component token.
    ///
    /// # Errors
    /// Upstream errors (61006: the stored ticket is not one WeChat knows; 61005: it is older
    /// than 12 hours), no ticket stored yet, or a store failure.
    pub async fn component_token(&self) -> Result<AccessToken> {
        self.inner.manager.token().await
    }

    /// A request with the component token in `component_access_token=`; a rejected token is
    /// invalidated (compare-and-swap) and the request made once more — WeChat did not act on a
    /// call it refused for its token. `retrying`: through the retrying pipeline (idempotent
    /// calls retried, `OutcomeUnknown` for the others); otherwise single attempts, for a token
    /// manager that makes those decisions itself.
    async fn send<O: crate::http::FromResponse>(
        &self,
        method: Method,
        path: &'static str,
        mut query: Vec<(Cow<'static, str>, String)>,
        body: Body,
        idempotent: bool,
        retrying: bool,
    ) -> Result<O> {
        let mut retried = false;
        query.push((Cow::Borrowed("component_access_token"), String::new()));
        loop {
            let token = self.inner.manager.token().await?;
            if let Some(last) = query.last_mut() {
                last.1 = token.expose().to_owned();
            }
            let call = Call {
                method,
                path,
                auth: Auth::None,
                idempotent,
                query: query.clone(),
                body: body.clone(),
            };
            let result = if retrying {
                self.inner.http.execute::<O>(&call, None).await
            } else {
                self.inner.http.attempt::<O>(&call, None).await
            };
            match result {
                Err(e) if e.is_token_invalid() && !retried => {
                    retried = true;
                    self.inner.manager.invalidate(&token).await?;
                }
                other => return other,
            }
        }
    }

    /// One attempt of a component POST (see [`Component::send`]).
    async fn attempt<O: JsonResponse>(&self, path: &'static str, body: &Value) -> Result<O> {
        self.send(
            Method::Post,
            path,
            Vec::new(),
            Body::json(body)?,
            false,
            false,
        )
        .await
    }

    /// A component POST through the retrying pipeline (see [`Component::send`]).
    async fn call<O: JsonResponse>(
        &self,
        path: &'static str,
        body: &Value,
        idempotent: bool,
    ) -> Result<O> {
        self.send(
            Method::Post,
            path,
            Vec::new(),
            Body::json(body)?,
            idempotent,
            true,
        )
        .await
    }

    /// Verifies and decrypts a push to the authorization-event URL (`msg_signature` over the
    /// ciphertext with the Token, AES under the EncodingAESKey to the component appid, the
    /// timestamp within the window) and, for a ticket, **saves** it before returning. Answer
    /// WeChat `success` only when this returns `Ok`.
    ///
    /// # Errors
    /// [`ReceiveError::Push`] for anything forged, stale or malformed (answer 4xx);
    /// [`ReceiveError::Store`] when the ticket could not be saved (answer 5xx: WeChat pushes
    /// again).
    pub async fn receive(
        &self,
        q: &PushQuery,
        body: &[u8],
    ) -> std::result::Result<ComponentEvent, ReceiveError> {
        let event = self.open(q, body).map_err(ReceiveError::Push)?;
        if let ComponentEvent::VerifyTicket {
            ticket,
            create_time,
        } = &event
        {
            // `CreateTime` is inside the encrypted body, the signed `timestamp` is what the
            // window checked: a time past it (a bug, milliseconds, a relay) is capped to it, so
            // no push can hold its ticket against every later one.
            let signed = q
                .timestamp
                .as_deref()
                .and_then(|t| t.parse::<i64>().ok())
                .unwrap_or_else(|| self.inner.clock.now_ms() / 1000);
            let pushed_at = (*create_time).min(signed.saturating_add(TICKET_TIME_SLACK_SECS));
            self.inner
                .tickets
                .save_pushed(&self.inner.appid, ticket, pushed_at)
                .await
                .map_err(ReceiveError::Store)?;
            // A remembered "no ticket" or 61006 is stale now.
            self.inner.manager.forget_failures();
        }
        Ok(event)
    }

    /// [`Component::receive`] without saving anything.
    ///
    /// # Errors
    /// [`PushError`] for anything forged, stale or malformed.
    pub fn open(
        &self,
        q: &PushQuery,
        body: &[u8],
    ) -> std::result::Result<ComponentEvent, PushError> {
        if q.encrypt_type.as_deref() != Some("aes") {
            return Err(PushError::NotEncrypted);
        }
        let text =
            std::str::from_utf8(body).map_err(|_| PushError::Parse("body is not UTF-8".into()))?;
        let ts = q
            .timestamp
            .as_deref()
            .filter(|s| !s.is_empty())
            .ok_or(PushError::MissingParameter("timestamp"))?;
        let nonce = q
            .nonce
            .as_deref()
            .filter(|s| !s.is_empty())
            .ok_or(PushError::MissingParameter("nonce"))?;
        let given = q
            .msg_signature
            .as_deref()
            .filter(|s| !s.is_empty())
            .ok_or(PushError::NotEncrypted)?;
        let envelope = message::parse_tree(text, message::Format::Xml)?;
        let encrypt = envelope
            .get("Encrypt")
            .and_then(Value::as_str)
            .ok_or_else(|| PushError::Parse("Encrypt is missing".into()))?;
        if !signature_matches(
            &signature(&[&self.inner.push_token, ts, nonce, encrypt]),
            given,
        ) {
            return Err(PushError::InvalidSignature);
        }
        if self.inner.window_secs > 0 {
            let t: i64 = ts
                .parse()
                .map_err(|_| PushError::Parse("timestamp is not a number".into()))?;
            let now = self.inner.clock.now_ms() / 1000;
            if (now - t).abs() > self.inner.window_secs {
                return Err(PushError::StaleTimestamp);
            }
        }
        let plain = self.inner.aes_key.decrypt(encrypt, &self.inner.appid)?;
        let fields = message::xml_to_value(&plain)
            .map_err(|_| PushError::Parse("the decrypted event is not well-formed XML".into()))?;
        ComponentEvent::from_fields(fields)
    }

    /// `api_start_push_ticket`: WeChat pushes a ticket within seconds (after a lost one).
    ///
    /// # Errors
    /// Upstream errors (40013, 40125).
    pub async fn start_push_ticket(&self) -> Result<()> {
        let body = serde_json::json!({
            "component_appid": self.inner.appid,
            "component_secret": self.inner.secret.expose(),
        });
        let call = Call {
            method: Method::Post,
            path: "/cgi-bin/component/api_start_push_ticket",
            auth: Auth::None,
            idempotent: true,
            query: Vec::new(),
            body: Body::json(&body)?,
        };
        self.inner
            .http
            .execute::<Ack>(&call, None)
            .await
            .map(|_| ())
    }

    /// `api_create_preauthcode`.
    ///
    /// # Errors
    /// Upstream errors.
    pub async fn pre_auth_code(&self) -> Result<PreAuthCode> {
        let body = serde_json::json!({"component_appid": self.inner.appid});
        self.call("/cgi-bin/component/api_create_preauthcode", &body, false)
            .await
    }

    /// The PC authorization page (a QR code the merchant scans), for `pre_auth_code`.
    pub fn authorization_url(
        &self,
        pre_auth_code: &str,
        redirect_uri: &str,
        auth_type: AuthType,
        biz_appid: Option<&str>,
    ) -> String {
        self.page_url(
            "https://mp.weixin.qq.com/cgi-bin/componentloginpage",
            &[],
            pre_auth_code,
            redirect_uri,
            auth_type,
            biz_appid,
        )
    }

    /// The mobile (H5) authorization page, opened inside WeChat.
    pub fn authorization_url_h5(
        &self,
        pre_auth_code: &str,
        redirect_uri: &str,
        auth_type: AuthType,
        biz_appid: Option<&str>,
    ) -> String {
        let mut url = self.page_url(
            "https://open.weixin.qq.com/wxaopen/safe/bindcomponent",
            &[("action", "bindcomponent"), ("no_scan", "1")],
            pre_auth_code,
            redirect_uri,
            auth_type,
            biz_appid,
        );
        url.push_str("#wechat_redirect");
        url
    }

    fn page_url(
        &self,
        base: &str,
        leading: &[(&str, &str)],
        pre_auth_code: &str,
        redirect_uri: &str,
        auth_type: AuthType,
        biz_appid: Option<&str>,
    ) -> String {
        let auth_type = auth_type.code().to_string();
        let mut params: Vec<(&str, &str)> = leading.to_vec();
        params.extend([
            ("component_appid", self.inner.appid.as_str()),
            ("pre_auth_code", pre_auth_code),
            ("redirect_uri", redirect_uri),
            ("auth_type", auth_type.as_str()),
        ]);
        if let Some(b) = biz_appid {
            params.push(("biz_appid", b));
        }
        reqwest::Url::parse_with_params(base, &params)
            .map(String::from)
            .unwrap_or_else(|_| base.to_owned())
    }

    /// `api_query_auth`: what the merchant granted. The refresh token is **saved** in the
    /// refresh-token store before this returns.
    ///
    /// # Errors
    /// Upstream errors (61010 expired code), or the refresh token could not be saved.
    pub async fn query_auth(&self, authorization_code: &str) -> Result<AuthorizationInfo> {
        let body = serde_json::json!({
            "component_appid": self.inner.appid,
            "authorization_code": authorization_code,
        });
        let r: QueryAuthResponse = self
            .call("/cgi-bin/component/api_query_auth", &body, false)
            .await?;
        let info = r.authorization_info;
        if let Some(refresh) = info
            .authorizer_refresh_token
            .as_ref()
            .filter(|r| !r.expose().is_empty())
        {
            self.inner
                .refresh_tokens
                .save(&self.inner.appid, &info.authorizer_appid, refresh.expose())
                .await?;
        }
        Ok(info)
    }

    /// `api_get_authorizer_list`: `count` (1–500) authorizers from `offset`.
    ///
    /// # Errors
    /// Upstream errors.
    pub async fn authorizer_list(&self, offset: u32, count: u32) -> Result<AuthorizerPage> {
        let body = serde_json::json!({
            "component_appid": self.inner.appid,
            "offset": offset,
            "count": count,
        });
        self.call("/cgi-bin/component/api_get_authorizer_list", &body, true)
            .await
    }

    /// `api_get_authorizer_info`.
    ///
    /// # Errors
    /// Upstream errors (61003 not authorized).
    pub async fn authorizer_info(&self, authorizer_appid: &str) -> Result<AuthorizerInfo> {
        let body = serde_json::json!({
            "component_appid": self.inner.appid,
            "authorizer_appid": authorizer_appid,
        });
        self.call("/cgi-bin/component/api_get_authorizer_info", &body, true)
            .await
    }

    /// `api_get_authorizer_option`: the value (`"0"`, `"1"`, …) of a merchant's option.
    ///
    /// # Errors
    /// Upstream errors (61003 not authorized, 61012 unknown option).
    pub async fn authorizer_option(
        &self,
        authorizer_appid: &str,
        option: AuthorizerOption,
    ) -> Result<String> {
        let body = serde_json::json!({
            "component_appid": self.inner.appid,
            "authorizer_appid": authorizer_appid,
            "option_name": option.as_str(),
        });
        let r: OptionResponse = self
            .call("/cgi-bin/component/api_get_authorizer_option", &body, true)
            .await?;
        Ok(match r.option_value {
            Value::String(s) => s,
            other => other.to_string(),
        })
    }

    /// `api_set_authorizer_option`: sets a merchant's option to `value` (`"0"`, `"1"`, …).
    ///
    /// # Errors
    /// Upstream errors (61003 not authorized, 61013 a value the option does not take).
    pub async fn set_authorizer_option(
        &self,
        authorizer_appid: &str,
        option: AuthorizerOption,
        value: &str,
    ) -> Result<()> {
        let body = serde_json::json!({
            "component_appid": self.inner.appid,
            "authorizer_appid": authorizer_appid,
            "option_name": option.as_str(),
            "option_value": value,
        });
        // Setting a value twice is setting it once: safe to retry.
        self.call::<Ack>("/cgi-bin/component/api_set_authorizer_option", &body, true)
            .await?;
        Ok(())
    }

    /// Restores every refresh token `api_get_authorizer_list` knows into the refresh-token
    /// store (after a loss); returns how many were saved.
    ///
    /// # Errors
    /// Upstream or store errors.
    pub async fn recover_refresh_tokens(&self) -> Result<usize> {
        let mut saved = 0;
        let mut offset = 0u32;
        loop {
            let page = self.authorizer_list(offset, 500).await?;
            let n = page.list.len();
            for e in page.list {
                if let Some(r) = e.refresh_token.filter(|r| !r.expose().is_empty()) {
                    self.inner
                        .refresh_tokens
                        .save(&self.inner.appid, &e.authorizer_appid, r.expose())
                        .await?;
                    saved += 1;
                }
            }
            offset += n as u32;
            if n == 0 || i64::from(offset) >= page.total_count {
                return Ok(saved);
            }
        }
    }

    /// Looks `authorizer_appid` up in the list and saves its refresh token if the list has one
    /// that differs from `failed` (the one WeChat just refused; `None`: none stored) — unless
    /// the store changed meanwhile (another process saved a newer one). True when it saved.
    async fn recover_refresh_token(
        &self,
        authorizer_appid: &str,
        failed: Option<&str>,
    ) -> Result<bool> {
        let mut offset = 0u32;
        loop {
            let page = self.authorizer_list(offset, 500).await?;
            let n = page.list.len();
            if let Some(e) = page
                .list
                .into_iter()
                .find(|e| e.authorizer_appid == authorizer_appid)
            {
                return match e.refresh_token.filter(|r| !r.expose().is_empty()) {
                    Some(r) if failed != Some(r.expose()) => {
                        let stored = self
                            .inner
                            .refresh_tokens
                            .load(&self.inner.appid, authorizer_appid)
                            .await?;
                        if stored.as_deref() != failed {
                            // Another process saved one meanwhile: that one is newer.
                            return Ok(true);
                        }
                        tracing::warn!(
                            authorizer = authorizer_appid,
                            "refresh token recovered from api_get_authorizer_list"
                        );
                        self.inner
                            .refresh_tokens
                            .save(&self.inner.appid, authorizer_appid, r.expose())
                            .await?;
                        Ok(true)
                    }
                    _ => Ok(false),
                };
            }
            offset += n as u32;
            if n == 0 || i64::from(offset) >= page.total_count {
                return Ok(false);
            }
        }
    }

    /// Forgets a merchant that withdrew its authorization (its refresh token is deleted).
    ///
    /// # Errors
    /// The store failed.
    pub async fn forget_authorizer(&self, authorizer_appid: &str) -> Result<()> {
        self.inner
            .refresh_tokens
            .remove(&self.inner.appid, authorizer_appid)
            .await?;
        self.inner
            .authorizers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(authorizer_appid);
        Ok(())
    }

    /// Drops this process's token manager of a merchant whose de-authorization was stored by
    /// the caller (conditionally, say, so that a late event cannot erase a newer
    /// authorization); unlike [`Component::forget_authorizer`], the refresh-token store is not
    /// touched.
    pub fn drop_authorizer(&self, authorizer_appid: &str) {
        self.inner
            .authorizers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(authorizer_appid);
    }

    /// `clear_quota` of the platform's own calls (ten a month).
    ///
    /// # Errors
    /// Upstream errors (48006).
    pub async fn clear_quota(&self) -> Result<()> {
        let body = serde_json::json!({"component_appid": self.inner.appid});
        self.call::<Ack>("/cgi-bin/component/clear_quota", &body, false)
            .await?;
        self.forget_failures();
        Ok(())
    }

    /// `clear_quota/v2` with the component secret — works when no component token can be had
    /// (45009 on `api_component_token` itself); with `authorizer_appid`, resets that merchant's
    /// quota. Ten a month, shared with [`Component::clear_quota`].
    ///
    /// # Errors
    /// Upstream errors (48006, 40013).
    pub async fn clear_quota_v2(&self, authorizer_appid: Option<&str>) -> Result<()> {
        let mut body = serde_json::json!({
            "component_appid": self.inner.appid,
            "appsecret": self.inner.secret.expose(),
        });
        if let Some(a) = authorizer_appid {
            body["appid"] = serde_json::json!(a);
        }
        let call = Call {
            method: Method::Post,
            path: "/cgi-bin/component/clear_quota/v2",
            auth: Auth::None,
            idempotent: false,
            query: Vec::new(),
            body: Body::json(&body)?,
        };
        self.inner.http.execute::<Ack>(&call, None).await?;
        self.forget_failures();
        Ok(())
    }

    /// Forgets remembered token-endpoint failures (a 45009 until midnight, say) of the
    /// component token and every authorizer's, so that the next call asks WeChat again.
    pub fn forget_failures(&self) {
        self.inner.manager.forget_failures();
        for m in self
            .inner
            .authorizers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
        {
            m.forget_failures();
        }
    }

    /// `/sns/component/jscode2session`: a user of an authorized mini program logs in.
    ///
    /// # Errors
    /// Upstream errors (40029 invalid code, 40163 used, 61003 not authorized).
    pub async fn code_to_session(
        &self,
        authorizer_appid: &str,
        js_code: &str,
    ) -> Result<Code2Session> {
        if js_code.is_empty() {
            return Err(Error::InvalidArgument("js_code is empty".into()));
        }
        self.send(
            Method::Get,
            "/sns/component/jscode2session",
            vec![
                (Cow::Borrowed("appid"), authorizer_appid.to_owned()),
                (Cow::Borrowed("js_code"), js_code.to_owned()),
                (Cow::Borrowed("grant_type"), "authorization_code".to_owned()),
                (Cow::Borrowed("component_appid"), self.inner.appid.clone()),
            ],
            Body::Empty,
            false,
            true,
        )
        .await
    }

    /// A [`Client`] acting for the merchant's mini program `authorizer_appid`: every API
    /// domain works with it, with authorizer tokens refreshed from the stored refresh token
    /// (one refresh at a time across processes, like an app's tokens).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty appid.
    pub fn authorizer(&self, authorizer_appid: &str) -> Result<Client> {
        let manager = self.authorizer_manager(authorizer_appid)?;
        let mut builder = Client::builder(authorizer_appid, AppSecret::new(String::new()))
            .base_url(&self.inner.http.base_url)
            .http_client(self.inner.http.client.clone())
            .token_source(Arc::new(manager));
        if let Some(observer) = self.inner.http.observer() {
            builder = builder.observer(observer);
        }
        builder.build()
    }

    /// The token manager of a merchant's authorizer tokens (for a background refresher, or a
    /// broker serving them).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty appid.
    pub fn authorizer_manager(&self, authorizer_appid: &str) -> Result<TokenManager> {
        if authorizer_appid.is_empty() || authorizer_appid.contains(':') {
            return Err(Error::InvalidArgument(
                "authorizer appid is empty or holds ':'".into(),
            ));
        }
        let mut cached = self
            .inner
            .authorizers
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(m) = cached.get(authorizer_appid) {
            return Ok(m.clone());
        }
        // (The fetcher holds the component weakly: the component holds the manager.)
        let fetcher = Arc::new(AuthorizerTokenFetcher {
            component: Arc::downgrade(&self.inner),
            authorizer_appid: authorizer_appid.to_owned(),
        });
        let manager = TokenManager::with_fetcher(
            TokenKey::new(
                format!("authorizer:{}:{authorizer_appid}", self.inner.appid),
                TokenMode::Classic,
            ),
            self.inner.http.clone(),
            self.inner.store.clone(),
            self.inner.clock.clone(),
            self.inner.policy.clone(),
            fetcher,
        );
        if cached.len() >= MAX_AUTHORIZER_MANAGERS {
            if let Some(k) = cached.keys().next().cloned() {
                cached.remove(&k);
            }
        }
        cached.insert(authorizer_appid.to_owned(), manager.clone());
        Ok(manager)
    }
}

/// Why [`Component::receive`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiveError {
    /// Forged, stale or malformed: answer 4xx.
    #[error(transparent)]
    Push(#[from] PushError),
    /// The ticket could not be saved: answer 5xx so that WeChat pushes again.
    #[error("the ticket could not be saved: {0}")]
    Store(StoreError),
}
