//! Third-party platforms (开放平台) in the service: each `[[platforms]]` entry is a
//! [`weapp::open_platform::Component`] whose ticket and merchants' refresh tokens live in the
//! database — sealed with the data key, bound to their row — never only in a cache: a
//! restarted fleet (even with Redis flushed) keeps its ticket and every merchant's refresh
//! token. WeChat pushes the ticket and the authorization events to
//! `POST /v1/platforms/{component_appid}/events`.

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use weapp::open_platform::{Component, RefreshTokenStore, TicketStore};
use weapp::StoreError as SdkStoreError;

use crate::broker::registry::Source;
use crate::broker::{AppRuntime, PushRuntime, RuntimeDeps, RuntimeError};
use crate::config::WarmPolicy;
use crate::config::{PlatformConfig, Secret};
use crate::keys::seal::Keyring;
use crate::shared::now_ms;
use crate::store::Store;

/// A platform's settings without secrets: what the admin API shows and the database keeps in
/// the clear (`Debug` shows the webhook URL without its path).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct PlatformSettings {
    /// WeChat's API host, or a weapp-sim URL.
    pub api_base: String,
    /// Where the platform's events and its merchants' pushes are delivered.
    #[serde(default)]
    pub webhook_url: Option<String>,
}

impl std::fmt::Debug for PlatformSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlatformSettings")
            .field("api_base", &crate::config::redact_url(&self.api_base))
            .field(
                "webhook_url",
                &self
                    .webhook_url
                    .as_deref()
                    .map(crate::config::redact_webhook_url),
            )
            .finish()
    }
}

/// A managed platform's secrets, sealed together in the database.
#[derive(Serialize, Deserialize)]
pub(crate) struct PlatformSecrets {
    pub(crate) secret: String,
    pub(crate) token: String,
    pub(crate) encoding_aes_key: String,
    #[serde(default)]
    pub(crate) webhook_secret: Option<String>,
}

impl PlatformSecrets {
    /// The secrets of `p` (its secret resolved).
    pub(crate) fn of(p: &PlatformConfig, secret: &Secret) -> Self {
        Self {
            secret: secret.expose().to_owned(),
            token: p.token.expose().to_owned(),
            encoding_aes_key: p.encoding_aes_key.expose().to_owned(),
            webhook_secret: p.webhook_secret.as_ref().map(|s| s.expose().to_owned()),
        }
    }
}

impl PlatformSettings {
    /// The settings of a platform configuration.
    pub fn of(p: &PlatformConfig) -> Self {
        Self {
            api_base: p.api_base.clone(),
            webhook_url: p.webhook_url.clone(),
        }
    }

    /// The configuration these settings and `secrets` make.
    pub(crate) fn config(
        &self,
        component_appid: &str,
        secrets: &PlatformSecrets,
    ) -> PlatformConfig {
        PlatformConfig {
            component_appid: component_appid.to_owned(),
            secret: Some(Secret::new(secrets.secret.clone())),
            secret_env: None,
            token: Secret::new(secrets.token.clone()),
            encoding_aes_key: Secret::new(secrets.encoding_aes_key.clone()),
            api_base: self.api_base.clone(),
            webhook_url: self.webhook_url.clone(),
            webhook_secret: secrets.webhook_secret.clone().map(Secret::new),
        }
    }
}

/// What the sealed secrets of a managed platform are bound to: its component appid and the API
/// host its secret is sent to (settings edited in the database to point it elsewhere no longer
/// open them).
pub(crate) fn platform_aad(component_appid: &str, api_base: &str) -> Vec<u8> {
    format!(
        "managed-platform:{component_appid}:{}",
        api_base.trim_end_matches('/')
    )
    .into_bytes()
}

/// A platform this instance serves: its configuration and its [`Component`].
pub struct PlatformRuntime {
    /// Its configuration (secrets redacted in `Debug`).
    pub config: PlatformConfig,
    /// The SDK's platform: ticket, component token, authorizer tokens.
    pub component: Component,
    /// Verifies its merchants' pushes (the platform's Token and key, safe mode), with one
    /// replay memory for all of them.
    pub merchant_pushes: Arc<weapp::push::Receiver>,
    /// The file or the admin API.
    pub source: Source,
    /// The registry revision of its last change (0 for the file's); merchants served through
    /// an older revision are rebuilt.
    pub rev: i64,
    /// Unix ms (0 for the file's).
    pub created_at: i64,
    /// Unix ms (0 for the file's).
    pub updated_at: i64,
}

impl std::fmt::Debug for PlatformRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The configuration redacts its secrets and URLs; the component and the receiver are
        // left out (the SDK's prints its API host as given).
        f.debug_struct("PlatformRuntime")
            .field("config", &self.config)
            .field("source", &self.source)
            .field("rev", &self.rev)
            .finish_non_exhaustive()
    }
}

impl PlatformRuntime {
    /// Builds the platform `config` (its secret `secret`) over the shared stores.
    ///
    /// # Errors
    /// A configuration the SDK refuses.
    pub fn build(
        config: PlatformConfig,
        secret: &Secret,
        deps: &RuntimeDeps,
        store: Arc<DbPlatformStore>,
        source: Source,
    ) -> Result<Self, RuntimeError> {
        let mut builder = Component::builder(
            &config.component_appid,
            secret.expose(),
            config.token.expose(),
            config.encoding_aes_key.expose(),
        )
        .base_url(&config.api_base)
        .http_client(deps.http.clone())
        .token_store(deps.token_store.clone())
        .ticket_store(store.clone())
        .refresh_token_store(store)
        .observer(Arc::new(crate::metrics::UpstreamObserver::new(
            &config.component_appid,
            deps.metrics.clone(),
        )));
        if let Some(clock) = &deps.clock {
            builder = builder.clock(clock.clone());
        }
        let component = builder.build().map_err(|source| RuntimeError::Component {
            component_appid: config.component_appid.clone(),
            source,
        })?;
        let push_config = weapp::push::PushConfig::new(
            &config.component_appid,
            config.token.expose(),
            Some(config.encoding_aes_key.expose()),
        )
        .and_then(|c| c.with_mode(weapp::push::PushMode::Safe))
        .map_err(|source| RuntimeError::PlatformPush {
            component_appid: config.component_appid.clone(),
            source,
        })?;
        Ok(Self {
            merchant_pushes: Arc::new(weapp::push::Receiver::new(push_config)),
            config,
            component,
            source,
            rev: 0,
            created_at: 0,
            updated_at: 0,
        })
    }
}

/// The associated data binding a sealed ticket to its platform.
pub fn ticket_aad(component_appid: &str) -> Vec<u8> {
    format!("weapp/platform_ticket\0{component_appid}").into_bytes()
}

/// The associated data binding a sealed refresh token to its platform and merchant.
pub fn refresh_aad(component_appid: &str, authorizer_appid: &str) -> Vec<u8> {
    format!("weapp/refresh_token\0{component_appid}\0{authorizer_appid}").into_bytes()
}

/// Tickets and refresh tokens in the service's database, sealed.
#[derive(Debug, Clone)]
pub struct DbPlatformStore {
    store: Arc<dyn Store>,
    keyring: Keyring,
}

impl DbPlatformStore {
    /// Over `store`, sealing with `keyring`.
    pub fn new(store: Arc<dyn Store>, keyring: Keyring) -> Self {
        Self { store, keyring }
    }
}

fn sdk_err(e: crate::store::StoreError) -> SdkStoreError {
    SdkStoreError::new(format!("database: {e}"), None)
}

#[async_trait]
impl TicketStore for DbPlatformStore {
    async fn latest(&self, component_appid: &str) -> Result<Option<String>, SdkStoreError> {
        let Some(sealed) = self
            .store
            .platform_ticket(component_appid)
            .await
            .map_err(sdk_err)?
        else {
            return Ok(None);
        };
        // A value that does not open (tampered with, another row's) reads as absent: the
        // next push replaces it (unless its row claims a later push time that is not in the
        // future — then the push after that ticket's).
        Ok(self
            .keyring
            .open(&sealed, &ticket_aad(component_appid))
            .and_then(|p| String::from_utf8(p).ok()))
    }

    async fn save(&self, component_appid: &str, ticket: &str) -> Result<(), SdkStoreError> {
        self.save_pushed(component_appid, ticket, 0).await
    }

    async fn save_pushed(
        &self,
        component_appid: &str,
        ticket: &str,
        create_time: i64,
    ) -> Result<(), SdkStoreError> {
        let sealed = self
            .keyring
            .seal(ticket.as_bytes(), &ticket_aad(component_appid));
        let kept = self
            .store
            .put_platform_ticket(
                component_appid,
                &sealed,
                &self.keyring.current_id(),
                now_ms(),
                create_time,
            )
            .await
            .map_err(sdk_err)?;
        if !kept {
            tracing::warn!(platform = %component_appid, create_time, "an older component_verify_ticket arrived late; the newer one is kept");
        }
        Ok(())
    }
}

#[async_trait]
impl RefreshTokenStore for DbPlatformStore {
    async fn load(
        &self,
        component_appid: &str,
        authorizer_appid: &str,
    ) -> Result<Option<String>, SdkStoreError> {
        let Some(sealed) = self
            .store
            .platform_refresh(component_appid, authorizer_appid)
            .await
            .map_err(sdk_err)?
        else {
            return Ok(None);
        };
        Ok(self
            .keyring
            .open(&sealed, &refresh_aad(component_appid, authorizer_appid))
            .and_then(|p| String::from_utf8(p).ok()))
    }

    async fn save(
        &self,
        component_appid: &str,
        authorizer_appid: &str,
        refresh_token: &str,
    ) -> Result<(), SdkStoreError> {
        let sealed = self.keyring.seal(
            refresh_token.as_bytes(),
            &refresh_aad(component_appid, authorizer_appid),
        );
        self.store
            .save_platform_refresh(
                component_appid,
                authorizer_appid,
                &sealed,
                &self.keyring.current_id(),
                now_ms(),
            )
            .await
            .map_err(sdk_err)
    }

    async fn remove(
        &self,
        component_appid: &str,
        authorizer_appid: &str,
    ) -> Result<(), SdkStoreError> {
        self.store
            .deauthorize_platform_authorizer(component_appid, authorizer_appid, now_ms())
            .await
            .map(|_| ())
            .map_err(sdk_err)
    }
}

/// The runtime of a merchant's mini program that authorized `platform`: its client's tokens
/// are authorizer tokens (one manager per merchant), no secret (the mirror refuses it), no
/// push receiver of its own.
///
/// # Errors
/// An appid the SDK refuses.
pub fn authorizer_runtime(
    platform: &PlatformRuntime,
    authorizer_appid: &str,
    warm: WarmPolicy,
    fleet: bool,
) -> Result<AppRuntime, RuntimeError> {
    let component = &platform.component;
    // Its pushes come to the platform's message URL, signed and encrypted with the
    // platform's Token and key, bound to the platform's appid (safe mode, XML): one
    // receiver, one replay memory, for all of the platform's merchants.
    let push = Some(PushRuntime {
        receiver: platform.merchant_pushes.clone(),
        replay_scope: Some(platform.config.component_appid.clone()),
        webhook_url: platform.config.webhook_url.clone(),
        webhook_secret: platform.config.webhook_secret.clone(),
    });
    let manager = component
        .authorizer_manager(authorizer_appid)
        .map_err(RuntimeError::Merchant)?;
    // In a fleet, the shard holder's refresher refreshes it; the others read.
    manager.leave_refresh_to_others(fleet);
    let client = component
        .authorizer(authorizer_appid)
        .map_err(RuntimeError::Merchant)?;
    Ok(AppRuntime::for_merchant(
        authorizer_appid.to_owned(),
        client,
        manager,
        push,
        warm,
        component.appid().to_owned(),
    ))
}
