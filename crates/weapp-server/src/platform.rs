//! Third-party platforms (开放平台) in the service: each `[[platforms]]` entry is a
//! [`weapp::open_platform::Component`] whose ticket and merchants' refresh tokens live in the
//! database — sealed with the data key, bound to their row — never only in a cache: a
//! restarted fleet (even with Redis flushed) keeps its ticket and every merchant's refresh
//! token. WeChat pushes the ticket and the authorization events to
//! `POST /v1/platforms/{component_appid}/events`.

use std::sync::Arc;

use async_trait::async_trait;
use weapp::open_platform::{RefreshTokenStore, TicketStore};
use weapp::StoreError as SdkStoreError;

use crate::seal::Keyring;
use crate::state::now_ms;
use crate::store::Store;

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
        // next push replaces it.
        Ok(self
            .keyring
            .open(&sealed, &ticket_aad(component_appid))
            .and_then(|p| String::from_utf8(p).ok()))
    }

    async fn save(&self, component_appid: &str, ticket: &str) -> Result<(), SdkStoreError> {
        let sealed = self
            .keyring
            .seal(ticket.as_bytes(), &ticket_aad(component_appid));
        self.store
            .put_platform_ticket(
                component_appid,
                &sealed,
                &self.keyring.current_id(),
                now_ms(),
            )
            .await
            .map_err(sdk_err)
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
