//! The admin service: the administrators, their rate limit, and keeping the served apps,
//! clients and platforms in step with the database (the registry sync every instance polls).

use std::sync::Arc;

use subtle::ConstantTimeEq;

use crate::broker::registry::{app_aad, AppEntry, AppSecrets, AppSettings, ClientEntry, Source};
use crate::broker::{AppRuntime, Broker, BrokerClient, RuntimeError, SyncError};
use crate::keys::seal::Keyring;
use crate::keys::{Keys, SealError};
use crate::payments::Payments;
use crate::platforms::Platforms;
use crate::push::Push;
use crate::ratelimit::RateLimiter;
use crate::shared::Shared;
use crate::store::{ManagedAppRecord, ManagedClientRecord};

/// Everything the admin API and the registry sync need. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AdminApi(Arc<AdminInner>);

/// The parts of [`AdminApi`].
#[derive(Debug)]
pub struct AdminInner {
    shared: Shared,
    /// Seals managed secrets; the signing keys.
    pub keys: Keys,
    /// The registry of apps and clients the admin API changes.
    pub broker: Broker,
    /// The event log's outbox (redelivery).
    pub push: Push,
    /// Third-party platforms.
    pub platforms: Platforms,
    /// WeChat Pay: the runtime merchants the admin API changes, reconciliation reports.
    pub payments: Payments,
    /// Administrators: name and key hash.
    pub admins: Vec<(String, [u8; 32])>,
    /// Per-admin limiter of the admin API.
    pub admin_limiter: RateLimiter,
}

crate::shared::service_handle!(AdminApi, AdminInner);

impl AdminApi {
    /// The admin service.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        shared: Shared,
        keys: Keys,
        broker: Broker,
        push: Push,
        platforms: Platforms,
        payments: Payments,
        admins: Vec<(String, [u8; 32])>,
        admin_limiter: RateLimiter,
    ) -> Self {
        AdminApi(Arc::new(AdminInner {
            shared,
            keys,
            broker,
            push,
            platforms,
            payments,
            admins,
            admin_limiter,
        }))
    }

    /// Re-seals the secrets of managed apps and managed platforms (disabled ones too; deleted
    /// ones hold none) sealed under an older data key with the newest one (at start-up, so
    /// that a data-key rotation can drop the old key without every secret entered again). Each
    /// is replaced only if unchanged meanwhile (an admin change wins); the registry revision
    /// does not move (what is served is the same). Secrets that do not open are left (the
    /// start-up check refuses a missing key; a wrong one is logged when the row is loaded).
    /// Returns how many were re-sealed.
    ///
    /// # Errors
    /// The database could not be read or written.
    pub async fn reseal_managed_secrets(&self) -> Result<usize, SealError> {
        let current = self.keys.keyring.current_id();
        let stale = |sealed: &[u8]| Keyring::key_id_of(sealed).is_some_and(|k| k != current);
        let api_base = |settings: &str| {
            serde_json::from_str::<serde_json::Value>(settings)
                .ok()
                .and_then(|v| {
                    v.get("api_base")
                        .and_then(serde_json::Value::as_str)
                        .map(str::to_owned)
                })
        };
        let apps = crate::store::read_all_after(
            0,
            |after, limit| self.store.managed_apps_after(after, limit),
            |r| r.rev,
        )
        .await?;
        let platforms = crate::store::read_all_after(
            0,
            |after, limit| self.store.managed_platforms_after(after, limit),
            |r| r.rev,
        )
        .await?;
        // (platform?, appid, sealed under an older key, what the sealing is bound to)
        let rows = apps
            .into_iter()
            .map(|r| (false, r))
            .chain(platforms.into_iter().map(|r| (true, r)))
            .filter_map(|(platform, r)| {
                let old = r.sealed.filter(|s| stale(s))?;
                let base = api_base(&r.settings)?;
                let aad = if platform {
                    crate::platforms::runtime::platform_aad(&r.appid, &base)
                } else {
                    app_aad(&r.appid, &base)
                };
                Some((platform, r.appid, old, aad))
            });
        let mut resealed = 0;
        for (platform, appid, old, aad) in rows {
            let Some(plain) = self
                .keys
                .keyring
                .open(&old, &aad)
                .map(zeroize::Zeroizing::new)
            else {
                continue;
            };
            let sealed = self.keys.keyring.seal(&plain, &aad);
            resealed += usize::from(
                self.store
                    .reseal_managed(platform, &appid, &old, &sealed, &current)
                    .await?,
            );
        }
        if resealed > 0 {
            tracing::info!(
                resealed,
                "managed apps' and platforms' secrets re-sealed with the newest data key"
            );
        }
        Ok(resealed)
    }

    /// Brings the registry up to date with the database: the managed apps and clients changed
    /// since the last revision applied (`full`: all of them, dropping any managed entry the
    /// database no longer has). Returns whether anything was read.
    ///
    /// # Errors
    /// The database could not be read.
    pub async fn sync_registry(&self, full: bool) -> Result<bool, SyncError> {
        // One sync at a time: two interleaved ones could apply an older record over a newer
        // one, or a reconcile could drop an app another sync has just applied.
        let _one = self.broker.sync_lock().await;
        let store_rev = self.store.registry_rev().await?;
        let mut full = full;
        if store_rev < self.broker.registry.rev() {
            // The database went back (a restore): read everything again from there.
            tracing::warn!(
                store_rev,
                applied = self.broker.registry.rev(),
                "the registry revision went back; re-reading every managed app and client"
            );
            self.broker.registry.reset_rev(0);
            full = true;
        }
        let from = if full { 0 } else { self.broker.registry.rev() };
        if !full && store_rev <= from {
            return Ok(false);
        }
        // Signing keys change with the revision too (rotations, removals): a small table,
        // read whole. (Platforms' merchants too: after the managed apps, below, so that an
        // appid defined in the admin API keeps that definition.)
        self.keys.reload_signing_keys().await?;
        let mut live_apps = std::collections::HashSet::new();
        let mut freed = Vec::new();
        let mut live_clients = std::collections::HashSet::new();
        let apps = crate::store::read_all_after(
            from,
            |after, limit| self.store.managed_apps_after(after, limit),
            |r| r.rev,
        )
        .await?;
        for rec in apps {
            if !rec.deleted {
                live_apps.insert(rec.appid.clone());
            }
            let appid = rec.appid.clone();
            if self.apply_app(rec) {
                // A merchant of a platform may have that appid: served again below.
                freed.push(appid);
            }
        }
        let clients = crate::store::read_all_after(
            from,
            |after, limit| self.store.managed_clients_after(after, limit),
            |r| r.rev,
        )
        .await?;
        for rec in clients {
            if !rec.deleted {
                live_clients.insert(rec.name.clone());
            }
            self.apply_client(rec);
        }
        // Platforms registered through the admin API.
        let mut platforms_changed = false;
        let mut live_platforms = std::collections::HashSet::new();
        let platforms = crate::store::read_all_after(
            from,
            |after, limit| self.store.managed_platforms_after(after, limit),
            |r| r.rev,
        )
        .await?;
        for rec in platforms {
            if !rec.deleted && rec.enabled {
                live_platforms.insert(rec.appid.clone());
            }
            platforms_changed |= self.platforms.apply_platform(rec);
        }
        if full {
            let gone: Vec<String> = self
                .platforms
                .platforms()
                .iter()
                .filter(|p| {
                    p.source == Source::Managed
                        && !live_platforms.contains(&p.config.component_appid)
                })
                .map(|p| p.config.component_appid.clone())
                .collect();
            let mut map = self
                .platforms
                .platforms
                .write()
                .unwrap_or_else(|p| p.into_inner());
            for c in gone {
                platforms_changed |= map.remove(&c).is_some();
            }
        }
        if full {
            for appid in self.broker.registry.managed_appids() {
                if !live_apps.contains(&appid) {
                    self.broker.registry.remove_app(&appid);
                }
            }
            for name in self.broker.registry.managed_client_names() {
                if !live_clients.contains(&name) {
                    self.broker.registry.remove_client(&name);
                }
            }
        }
        // Everything up to the revision read before the queries is applied (commits happen in
        // revision order); rows newer than it may have been read too, and are read again by
        // the next poll, harmlessly.
        // Merchants: all of them when the platforms changed (or on a full read), else only
        // those whose authorization changed since the last revision applied.
        if platforms_changed {
            self.platforms
                .platforms_dirty
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
        if full
            || self
                .platforms
                .platforms_dirty
                .load(std::sync::atomic::Ordering::SeqCst)
        {
            self.platforms.sync_authorizers_locked().await?;
            self.platforms
                .platforms_dirty
                .store(false, std::sync::atomic::Ordering::SeqCst);
        } else {
            self.platforms.sync_changed_authorizers(from, freed).await?;
        }
        self.broker.registry.set_rev(store_rev);
        Ok(true)
    }

    /// Applies one managed app record (a tombstone removes it); whether it removed an entry.
    pub(crate) fn apply_app(&self, rec: ManagedAppRecord) -> bool {
        let existing = self.broker.registry.entry(&rec.appid);
        match &existing {
            Some(e) if e.source == Source::File => {
                tracing::warn!(appid = %rec.appid, "a managed app has the appid of an app in the configuration file; the file's is served");
                return false;
            }
            // The same or an older change than the one applied: nothing to do.
            Some(e) if e.source == Source::Managed && rec.rev <= e.rev => return false,
            // A tombstone leaves a platform's merchant of that appid alone.
            Some(e) if e.source == Source::Platform && rec.deleted => return false,
            _ => {}
        }
        if rec.deleted {
            if self.broker.registry.remove_app(&rec.appid).is_some() {
                tracing::info!(appid = %rec.appid, "managed app deleted");
                return true;
            }
            return false;
        }
        match self.managed_entry(&rec) {
            Ok(entry) => {
                tracing::info!(appid = %rec.appid, enabled = entry.enabled, rev = rec.rev, "managed app loaded");
                self.broker.registry.put_app(entry);
            }
            Err(e) => {
                // Not served (an old secret or old settings must not go on being used), and
                // shown as broken in the admin API until a change that loads replaces it.
                tracing::error!(appid = %rec.appid, error = %e, "managed app cannot be loaded; not served");
                let settings = serde_json::from_str(&rec.settings).unwrap_or(AppSettings {
                    api_base: String::new(),
                    token_mode: weapp::TokenMode::default(),
                    warm: None,
                    access_tokens: false,
                    push: None,
                });
                self.broker.registry.put_app(AppEntry {
                    appid: rec.appid.clone(),
                    source: Source::Managed,
                    enabled: rec.enabled,
                    settings,
                    runtime: None,
                    rev: rec.rev,
                    created_at: rec.created_at,
                    updated_at: rec.updated_at,
                    load_error: Some(e.to_string()),
                });
            }
        }
        false
    }

    fn managed_entry(&self, rec: &ManagedAppRecord) -> Result<AppEntry, RuntimeError> {
        let settings: AppSettings =
            serde_json::from_str(&rec.settings).map_err(RuntimeError::Settings)?;
        let runtime = if rec.enabled {
            let sealed = rec.sealed.as_deref().ok_or(RuntimeError::NotSealed)?;
            let plain = self
                .keys
                .keyring
                .open(sealed, &app_aad(&rec.appid, &settings.api_base))
                .ok_or(RuntimeError::Unopenable)?;
            let secrets: AppSecrets =
                serde_json::from_slice(&plain).map_err(|_| RuntimeError::Secrets)?;
            let app = settings.config(&rec.appid, &secrets);
            let secret = weapp::AppSecret::new(secrets.secret.clone());
            if let Some(hook) = &self.config.app_hook {
                (hook.0)(&rec.appid, &secrets.secret);
            }
            Some(Arc::new(AppRuntime::build(
                &app,
                secret,
                settings.warm.unwrap_or(self.config.warm),
                &self.broker.deps,
            )?))
        } else {
            None
        };
        Ok(AppEntry {
            appid: rec.appid.clone(),
            source: Source::Managed,
            enabled: rec.enabled,
            settings,
            runtime,
            rev: rec.rev,
            created_at: rec.created_at,
            updated_at: rec.updated_at,
            load_error: None,
        })
    }

    /// Applies one managed client record (a tombstone removes it).
    pub(crate) fn apply_client(&self, rec: ManagedClientRecord) {
        if let Some(e) = self.broker.registry.client_entry(&rec.name) {
            if e.source == Source::File {
                tracing::warn!(client = %rec.name, "a managed client has the name of a client in the configuration file; the file's is used");
                return;
            }
            if rec.rev <= e.rev {
                return;
            }
        }
        if rec.deleted {
            self.broker.registry.remove_client(&rec.name);
            return;
        }
        let parsed = (|| {
            let hash: [u8; 32] = rec
                .key_sha256
                .as_deref()
                .and_then(|h| h.try_into().ok())
                .ok_or("no key hash")?;
            let apps: Vec<String> =
                serde_json::from_str(&rec.apps).map_err(|_| "apps do not parse")?;
            let scopes: Vec<String> =
                serde_json::from_str(&rec.scopes).map_err(|_| "scopes do not parse")?;
            Ok::<_, &str>((hash, apps, scopes))
        })();
        match parsed {
            Ok((hash, apps, scopes)) => self.broker.registry.put_client(
                ClientEntry {
                    client: Arc::new(BrokerClient::new(rec.name.clone(), hash, apps, scopes)),
                    source: Source::Managed,
                    enabled: rec.enabled,
                    rev: rec.rev,
                    created_at: rec.created_at,
                    updated_at: rec.updated_at,
                },
                Some(hash),
            ),
            Err(e) => {
                tracing::error!(client = %rec.name, error = e, "managed client cannot be loaded")
            }
        }
    }

    /// The administrator whose key hashes to `key`'s SHA-256 (every admin compared in
    /// constant time).
    pub fn admin(&self, key: &str) -> Option<&str> {
        use sha2::{Digest, Sha256};
        let hash: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let mut found = None;
        for (name, h) in &self.admins {
            if bool::from(h.ct_eq(&hash)) {
                found = Some(name.as_str());
            }
        }
        found
    }
}
