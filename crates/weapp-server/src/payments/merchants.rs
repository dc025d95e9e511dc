//! Merchants added at runtime (the admin API writes them to `pay_merchants`): their settings,
//! their keys sealed with the data key (bound to the mchid, its apps and its stored settings —
//! API host, WeChat Pay public key and its id, serial, notify URL — so a sealed value copied
//! to another merchant's row, or a row whose settings or apps were changed in the database, by
//! anyone but the admin API, which seals again on every write, does not open: a public key
//! swapped in there cannot make forged notifications verify), and
//! the sync that every instance runs each `registry_poll_ms`, so that a merchant added at one
//! instance takes orders and notifications at every other one after a poll.
//!
//! The file's `[[merchants]]` stay as they are: a stored merchant with a file merchant's mchid
//! or one of its apps is not served (the file wins; the admin API refuses both anyway).

use std::collections::HashMap;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::error::MerchantError;
use super::service::{MerchantMap, MerchantRuntime, MerchantSource, Payments};
use crate::config::{MerchantConfig, Secret};
use crate::store::{PayMerchantRecord, StoreError};

/// A runtime merchant's settings, stored in the clear (JSON in `pay_merchants.settings`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MerchantSettings {
    /// The merchant API certificate's serial number.
    pub serial_no: String,
    /// The WeChat Pay public key's id.
    #[serde(default)]
    pub public_key_id: Option<String>,
    /// The WeChat Pay public key (PEM; public).
    #[serde(default)]
    pub public_key: Option<String>,
    /// Verify with platform certificates too (downloaded and refreshed).
    #[serde(default)]
    pub platform_certificates: bool,
    /// WeChat Pay's API host or a weapp-sim URL.
    pub api_base: String,
    /// Where WeChat notifies this merchant.
    pub notify_url: String,
}

/// A runtime merchant's secrets, sealed as one JSON value. `Debug` shows neither.
#[derive(Clone, Serialize, Deserialize)]
pub struct MerchantSecrets {
    /// The merchant private key (PEM).
    pub private_key: String,
    /// The APIv3 key (32 characters).
    pub apiv3_key: String,
}

impl std::fmt::Debug for MerchantSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MerchantSecrets(..)")
    }
}

impl Drop for MerchantSecrets {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.private_key.zeroize();
        self.apiv3_key.zeroize();
    }
}

/// The associated data binding a merchant's sealed secrets to its mchid, its apps and its
/// settings exactly as stored (`settings`: the JSON of `pay_merchants.settings`, which holds
/// the API host and the public key verifying WeChat Pay's answers and notifications).
pub fn merchant_aad(mchid: &str, appids: &[String], settings: &str) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(serde_json::to_string(appids).expect("strings").as_bytes());
    h.update([0]);
    h.update(settings.as_bytes());
    let mut aad = format!("weapp/pay_merchant/v2\0{mchid}\0").into_bytes();
    aad.extend_from_slice(&h.finalize());
    aad
}

/// The settings and secrets as a configuration entry (what the file's merchants are built
/// from, so that both are checked and built the same way).
pub fn merchant_config(
    mchid: &str,
    appids: &[String],
    settings: &MerchantSettings,
    secrets: &MerchantSecrets,
) -> MerchantConfig {
    MerchantConfig {
        mchid: mchid.to_owned(),
        appids: appids.to_vec(),
        serial_no: settings.serial_no.clone(),
        private_key_file: None,
        private_key_env: None,
        private_key: Some(Secret::new(secrets.private_key.clone())),
        apiv3_key: Some(Secret::new(secrets.apiv3_key.clone())),
        apiv3_key_env: None,
        public_key_id: settings.public_key_id.clone(),
        public_key_file: None,
        public_key: settings.public_key.clone(),
        platform_certificates: settings.platform_certificates,
        api_base: settings.api_base.clone(),
        notify_url: settings.notify_url.clone(),
    }
}

/// Why a stored merchant cannot be served.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// Its settings do not parse.
    #[error("merchant {0}: its stored settings do not parse")]
    Settings(String),
    /// Its secrets do not open with this instance's data keys (or were moved or altered, or
    /// its settings or apps were changed outside the admin API).
    #[error("merchant {0}: its sealed keys do not open with this instance's data keys (or its stored settings or apps were altered)")]
    Unopenable(String),
    /// Its keys or client do not load.
    #[error(transparent)]
    Build(#[from] MerchantError),
}

fn digest(rec: &PayMerchantRecord) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in [
        rec.mchid.as_str(),
        &rec.appids.join(","),
        &rec.settings,
        &rec.sealed_secrets,
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    h.finalize().into()
}

impl Payments {
    /// Seals `secrets` for the merchant `mchid` with these apps and these settings (the JSON
    /// stored as `pay_merchants.settings`, exactly): (base64, data key id).
    pub fn seal_merchant_secrets(
        &self,
        mchid: &str,
        appids: &[String],
        settings: &str,
        secrets: &MerchantSecrets,
    ) -> (String, String) {
        let plain = zeroize::Zeroizing::new(serde_json::to_vec(secrets).expect("plain data"));
        let sealed = self
            .keys
            .keyring
            .seal(&plain, &merchant_aad(mchid, appids, settings));
        (B64.encode(sealed), self.keys.keyring.current_id())
    }

    /// The settings and secrets of a stored merchant, opened.
    ///
    /// # Errors
    /// Settings that do not parse; secrets that do not open (with another data key, or moved
    /// to another row, or the row's settings or apps changed since they were sealed).
    pub fn open_merchant(
        &self,
        rec: &PayMerchantRecord,
    ) -> Result<(MerchantSettings, MerchantSecrets), LoadError> {
        let settings: MerchantSettings = serde_json::from_str(&rec.settings)
            .map_err(|_| LoadError::Settings(rec.mchid.clone()))?;
        let sealed = B64
            .decode(&rec.sealed_secrets)
            .map_err(|_| LoadError::Unopenable(rec.mchid.clone()))?;
        let plain = self
            .keys
            .keyring
            .open(
                &sealed,
                &merchant_aad(&rec.mchid, &rec.appids, &rec.settings),
            )
            .map(zeroize::Zeroizing::new)
            .ok_or_else(|| LoadError::Unopenable(rec.mchid.clone()))?;
        let secrets: MerchantSecrets =
            serde_json::from_slice(&plain).map_err(|_| LoadError::Unopenable(rec.mchid.clone()))?;
        Ok((settings, secrets))
    }

    /// Builds a merchant's runtime from its configuration entry, as the file's are built.
    ///
    /// # Errors
    /// Keys that do not parse (an APIv3 key that is not 32 bytes), a client the SDK refuses.
    pub fn build_merchant(
        &self,
        config: &MerchantConfig,
    ) -> Result<MerchantRuntime, MerchantError> {
        MerchantRuntime::build(config, self.config.clock.clone())
    }

    fn runtime_of(&self, rec: &PayMerchantRecord) -> Result<MerchantRuntime, LoadError> {
        let (settings, secrets) = self.open_merchant(rec)?;
        let config = merchant_config(&rec.mchid, &rec.appids, &settings, &secrets);
        let mut runtime = self.build_merchant(&config)?;
        runtime.source = MerchantSource::Admin;
        Ok(runtime)
    }

    /// Brings the merchants served here up to date with `pay_merchants`: new and changed rows
    /// built (an unchanged row keeps its client), deleted ones dropped. A row that does not
    /// load is logged once and not served. Returns whether what is served changed.
    ///
    /// # Errors
    /// The database could not be read (what is served stays as it was).
    pub async fn sync_merchants(&self) -> Result<bool, StoreError> {
        let _one = self.sync_guard().await;
        let rows = self.store.pay_merchants().await?;
        let current = self.merchants();
        let mut next = MerchantMap::default();
        for (mchid, m) in &current.by_mchid {
            if m.source == MerchantSource::Config {
                next.by_mchid.insert(mchid.clone(), m.clone());
                for appid in &m.appids {
                    next.by_app.insert(appid.clone(), mchid.clone());
                }
            }
        }
        let mut changed = false;
        for rec in rows {
            if next.by_mchid.contains_key(&rec.mchid) {
                continue;
            }
            let d = digest(&rec);
            let known = current.loaded.get(&rec.mchid) == Some(&d);
            let runtime = match (known, current.by_mchid.get(&rec.mchid)) {
                (true, Some(r)) => r.clone(),
                // Known and failed before: not logged again.
                (true, None) => {
                    next.loaded.insert(rec.mchid.clone(), d);
                    continue;
                }
                (false, _) => {
                    changed = true;
                    next.loaded.insert(rec.mchid.clone(), d);
                    match self.runtime_of(&rec) {
                        Ok(r) => {
                            tracing::info!(mchid = %rec.mchid, appids = ?rec.appids, "runtime merchant loaded");
                            Arc::new(r)
                        }
                        Err(e) => {
                            tracing::error!(mchid = %rec.mchid, error = %e, "runtime merchant cannot be loaded; not served");
                            continue;
                        }
                    }
                }
            };
            for appid in &runtime.appids {
                match next.by_app.get(appid) {
                    Some(other) => {
                        tracing::warn!(mchid = %rec.mchid, appid, other = %other, "an app of a runtime merchant is served by another merchant; not by this one");
                    }
                    None => {
                        next.by_app.insert(appid.clone(), rec.mchid.clone());
                    }
                }
            }
            next.loaded.insert(rec.mchid.clone(), d);
            next.by_mchid.insert(rec.mchid.clone(), runtime);
        }
        let gone: Vec<&String> = current
            .by_mchid
            .iter()
            .filter(|(m, r)| r.source == MerchantSource::Admin && !next.by_mchid.contains_key(*m))
            .map(|(m, _)| m)
            .collect();
        for mchid in &gone {
            tracing::info!(mchid = %mchid, "runtime merchant removed");
        }
        changed |= !gone.is_empty();
        changed |= current.loaded.keys().any(|m| !next.loaded.contains_key(m));
        if changed {
            self.set_merchants(next);
        }
        Ok(changed)
    }

    /// The apps of every merchant served, by app (for the admin API's conflict checks).
    pub fn apps_served(&self) -> HashMap<String, String> {
        self.merchants().by_app.clone()
    }
}
