//! The platforms service: the third-party platforms this instance serves, their merchants
//! (authorizer runtimes in the broker's registry), reconciliation with WeChat's authorizer
//! list, and re-sealing their secrets.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};

use super::error::ReconcileError;
use super::runtime::{DbPlatformStore, PlatformRuntime};
use crate::broker::registry::{AppEntry, AppSettings, Source};
use crate::broker::{Broker, RuntimeError, SyncError};
use crate::config::Secret;
use crate::keys::seal::Keyring;
use crate::keys::{Keys, SealError};
use crate::push::{PlatformWebhooks, Push};
use crate::shared::{now_ms, Shared};
use crate::store::{ManagedPlatformRecord, PlatformAuthorizer};

/// What [`Platforms::reconcile_platform`] changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reconciled {
    /// Merchants whose refresh token was restored from the list.
    pub restored: usize,
    /// Merchants de-authorized because the list no longer has them.
    pub deauthorized: usize,
}

/// The platforms this instance serves. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Platforms(Arc<PlatformsInner>);

/// The parts of [`Platforms`].
#[derive(Debug)]
pub struct PlatformsInner {
    shared: Shared,
    /// Seals tickets, refresh tokens and managed platforms' secrets.
    pub keys: Keys,
    /// Merchants are served as apps of the broker's registry.
    pub broker: Broker,
    /// Platform events go to the event log and the outbox.
    pub push: Push,
    /// Third-party platforms served (the file's and the admin API's), by component appid.
    pub(crate) platforms: RwLock<std::collections::HashMap<String, Arc<PlatformRuntime>>>,
    /// Where platforms keep tickets and refresh tokens.
    platform_store: Arc<DbPlatformStore>,
    /// The served platforms changed and their merchants have not all been re-read since (a
    /// sync that failed half-way leaves it set, so the next one re-reads them all).
    pub(crate) platforms_dirty: AtomicBool,
}

crate::shared::service_handle!(Platforms, PlatformsInner);

impl PlatformWebhooks for Platforms {
    fn platform_webhook(&self, id: &str) -> Option<Option<(String, Secret)>> {
        let p = self.platform(id)?;
        let p = &p.config;
        Some(
            p.webhook_url
                .as_deref()
                .zip(p.webhook_secret.as_ref())
                .map(|(url, secret)| (url.to_owned(), secret.clone())),
        )
    }
}

impl Platforms {
    /// The platforms of the configuration file (built), before any sync.
    pub fn new(
        shared: Shared,
        keys: Keys,
        broker: Broker,
        push: Push,
        platforms: std::collections::HashMap<String, Arc<PlatformRuntime>>,
        platform_store: Arc<DbPlatformStore>,
    ) -> Self {
        Platforms(Arc::new(PlatformsInner {
            shared,
            keys,
            broker,
            push,
            platforms: RwLock::new(platforms),
            platform_store,
            platforms_dirty: AtomicBool::new(false),
        }))
    }

    /// A platform this instance serves.
    pub fn platform(&self, component_appid: &str) -> Option<Arc<PlatformRuntime>> {
        self.platforms
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(component_appid)
            .cloned()
    }

    /// Every platform this instance serves, by component appid.
    pub fn platforms(&self) -> Vec<Arc<PlatformRuntime>> {
        let mut all: Vec<_> = self
            .platforms
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        all.sort_by(|a, b| a.config.component_appid.cmp(&b.config.component_appid));
        all
    }

    /// Serves exactly the merchants that have authorized a served platform: a runtime
    /// (authorizer tokens, component login) for each authorized one, none for the others.
    /// An appid also defined in the file or the admin API keeps that definition.
    ///
    /// # Errors
    /// The database could not be read.
    pub async fn sync_authorizers(&self) -> Result<(), SyncError> {
        // Not interleaved with a registry sync (which calls the same under its lock).
        let _one = self.broker.sync_lock().await;
        self.sync_authorizers_locked().await
    }

    /// Brings one merchant up to date with the database (after an authorization event here;
    /// the other instances follow at their next registry poll).
    ///
    /// # Errors
    /// The database could not be read.
    pub async fn sync_merchant(&self, authorizer_appid: &str) -> Result<(), SyncError> {
        let _one = self.broker.sync_lock().await;
        let rows = self.store.authorizations_of(authorizer_appid).await?;
        self.serve_merchant(authorizer_appid, &rows);
        Ok(())
    }

    pub(crate) async fn sync_authorizers_locked(&self) -> Result<(), SyncError> {
        let mut by_appid: std::collections::BTreeMap<String, Vec<PlatformAuthorizer>> =
            std::collections::BTreeMap::new();
        for platform in self.platforms() {
            let rows = self
                .store
                .platform_authorizers(&platform.config.component_appid)
                .await?;
            for row in rows {
                by_appid
                    .entry(row.authorizer_appid.clone())
                    .or_default()
                    .push(row);
            }
        }
        for (appid, rows) in &by_appid {
            self.serve_merchant(appid, rows);
        }
        for appid in self.broker.registry.appids_of(Source::Platform) {
            if !by_appid.contains_key(&appid) {
                self.serve_merchant(&appid, &[]);
            }
        }
        Ok(())
    }

    /// Reads the merchants whose authorization changed after registry revision `from` and
    /// brings each up to date.
    pub(crate) async fn sync_changed_authorizers(
        &self,
        from: i64,
        also: Vec<String>,
    ) -> Result<(), SyncError> {
        let mut changed: std::collections::BTreeSet<String> = also.into_iter().collect();
        let rows = crate::store::read_all_after(
            from,
            |after, limit| self.store.platform_authorizers_after(after, limit),
            |r| r.rev,
        )
        .await?;
        changed.extend(rows.into_iter().map(|r| r.authorizer_appid));
        for appid in changed {
            let rows = self.store.authorizations_of(&appid).await?;
            self.serve_merchant(&appid, &rows);
        }
        Ok(())
    }

    /// Serves `appid` through one of the served platforms it has authorized (`rows`: its
    /// authorizations, any state): the platform serving it now while that one stays
    /// authorized, else the first by component appid; or not at all.
    fn serve_merchant(&self, appid: &str, rows: &[PlatformAuthorizer]) {
        let candidates: Vec<(Arc<PlatformRuntime>, &PlatformAuthorizer)> = rows
            .iter()
            .filter(|r| r.authorized && r.authorizer_appid == appid)
            .filter_map(|r| self.platform(&r.component_appid).map(|p| (p, r)))
            .collect();
        let current = self.broker.registry.entry(appid);
        if let Some(e) = &current {
            if e.source != Source::Platform {
                if !candidates.is_empty() {
                    tracing::warn!(appid, "a merchant of a platform is also configured as an app; the app's definition is served");
                }
                return;
            }
            let serving = e.runtime.as_ref().and_then(|r| r.platform.clone());
            if candidates
                .iter()
                .any(|(p, _)| Some(&p.config.component_appid) == serving.as_ref() && p.rev == e.rev)
            {
                return;
            }
        }
        let Some((platform, _)) = current
            .as_ref()
            .and_then(|e| e.runtime.as_ref().and_then(|r| r.platform.clone()))
            .and_then(|c| {
                candidates
                    .iter()
                    .find(|(p, _)| p.config.component_appid == c)
                    .cloned()
            })
            .or_else(|| candidates.first().cloned())
        else {
            if current.is_some() {
                self.broker.registry.remove_app(appid);
                tracing::info!(appid, "no longer serving a merchant: it de-authorized its platforms (or they are no longer served)");
            }
            return;
        };
        let runtime = match super::runtime::authorizer_runtime(
            &platform,
            appid,
            self.config.warm,
            self.broker.deps.fleet,
        ) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(appid, error = %e, "a merchant of the platform cannot be served");
                return;
            }
        };
        self.broker.registry.put_app(AppEntry {
            appid: appid.to_owned(),
            source: Source::Platform,
            enabled: true,
            settings: AppSettings {
                api_base: platform.config.api_base.clone(),
                token_mode: weapp::TokenMode::Classic,
                warm: None,
                push: None,
                access_tokens: true,
            },
            runtime: Some(Arc::new(runtime)),
            rev: platform.rev,
            created_at: 0,
            updated_at: 0,
            load_error: None,
        });
        tracing::info!(appid, platform = %platform.config.component_appid, "serving a merchant of the platform");
    }

    /// Applies one managed platform record; whether the served platforms changed.
    pub(crate) fn apply_platform(&self, rec: ManagedPlatformRecord) -> bool {
        let c = rec.appid.clone();
        if self.config.platforms.iter().any(|p| p.component_appid == c) {
            tracing::warn!(platform = %c, "a managed platform has the component appid of one in the configuration file; the file's is served");
            return false;
        }
        if self.platform(&c).is_some_and(|p| rec.rev <= p.rev) {
            return false;
        }
        let built = if rec.deleted || !rec.enabled {
            None
        } else {
            match self.managed_platform_runtime(&rec) {
                Ok(p) => Some(p),
                Err(e) => {
                    // Not served: an old secret must not go on being used.
                    tracing::error!(platform = %c, error = %e, "managed platform cannot be loaded; not served");
                    None
                }
            }
        };
        let mut map = self.platforms.write().unwrap_or_else(|p| p.into_inner());
        match built {
            Some(p) => {
                tracing::info!(platform = %c, rev = rec.rev, "managed platform loaded");
                map.insert(c, Arc::new(p));
                true
            }
            None => map.remove(&c).is_some(),
        }
    }

    fn managed_platform_runtime(
        &self,
        rec: &ManagedPlatformRecord,
    ) -> Result<PlatformRuntime, RuntimeError> {
        let settings: super::runtime::PlatformSettings =
            serde_json::from_str(&rec.settings).map_err(RuntimeError::Settings)?;
        let sealed = rec.sealed.as_deref().ok_or(RuntimeError::NotSealed)?;
        let plain = zeroize::Zeroizing::new(
            self.keys
                .keyring
                .open(
                    sealed,
                    &super::runtime::platform_aad(&rec.appid, &settings.api_base),
                )
                .ok_or(RuntimeError::Unopenable)?,
        );
        let secrets: super::runtime::PlatformSecrets =
            serde_json::from_slice(&plain).map_err(|_| RuntimeError::Secrets)?;
        let config = settings.config(&rec.appid, &secrets);
        let secret = Secret::new(secrets.secret.clone());
        let mut runtime = PlatformRuntime::build(
            config,
            &secret,
            &self.broker.deps,
            self.platform_store.clone(),
            Source::Managed,
        )?;
        runtime.rev = rec.rev;
        runtime.created_at = rec.created_at;
        runtime.updated_at = rec.updated_at;
        Ok(runtime)
    }

    /// Reconciles a platform's merchants with WeChat's authorizer list (the truth): a merchant
    /// in the list whose refresh token is missing or different here gets the list's; a
    /// merchant authorized here but absent from the list is de-authorized (a missed
    /// `unauthorized` push). Then this instance serves what the database says.
    ///
    /// # Errors
    /// WeChat or the database failed (nothing is de-authorized on a failed listing).
    pub async fn reconcile_platform(
        &self,
        component_appid: &str,
    ) -> Result<Reconciled, ReconcileError> {
        use weapp::open_platform::RefreshTokenStore;
        let platform = self
            .platform(component_appid)
            .ok_or_else(|| ReconcileError::UnknownPlatform(component_appid.to_owned()))?;
        let component = &platform.component;
        let store = &self.platform_store;
        // What the database said before listing: a merchant authorizing meanwhile is not in
        // the list, and must not be taken for one that left.
        let started = now_ms();
        let rows = self.store.platform_authorizers(component_appid).await?;
        let mut listed = std::collections::HashMap::new();
        let mut offset = 0u32;
        let mut first_total = None;
        let total = loop {
            let page = component.authorizer_list(offset, 500).await?;
            // The list changed while it was paged (offsets shifted: a merchant could fall
            // between two pages and look absent): nothing is reconciled this time.
            if *first_total.get_or_insert(page.total_count) != page.total_count {
                return Err(ReconcileError::ListChanged);
            }
            let n = page.list.len();
            for e in page.list {
                listed.insert(e.authorizer_appid.clone(), (e.refresh_token, e.auth_time));
            }
            offset += n as u32;
            if n == 0 || i64::from(offset) >= page.total_count {
                break page.total_count;
            }
        };
        // A short listing (an empty page, an answer without its list) changes nothing.
        if i64::try_from(listed.len()).unwrap_or(i64::MAX) < total {
            return Err(ReconcileError::Incomplete {
                listed: listed.len(),
                total,
            });
        }
        let mut out = Reconciled::default();
        for (appid, (refresh, listed_time)) in &listed {
            let Some(refresh) = refresh.as_ref().filter(|r| !r.expose().is_empty()) else {
                continue;
            };
            let row = rows.iter().find(|r| &r.authorizer_appid == appid);
            // Changed since the listing began (an event): the event knows better.
            if row.is_some_and(|r| r.updated_at >= started) {
                continue;
            }
            let ours = store.load(component_appid, appid).await?;
            // Missing or de-authorized here, or authorized again since the time we hold.
            let revive = row.is_none_or(|r| !r.authorized || *listed_time > r.auth_time);
            if ours.as_deref() != Some(refresh.expose()) || revive {
                // Decided by the database against the row as it is now, not as read before the
                // listing: a merchant that left (or came back) meanwhile is not overwritten.
                // The authorization's time is WeChat's (the list's), so that an `unauthorized`
                // from before it (a late retry, a replay) cannot erase it.
                let sealed = self.keys.keyring.seal(
                    refresh.expose().as_bytes(),
                    &super::runtime::refresh_aad(component_appid, appid),
                );
                let applied = self
                    .store
                    .restore_platform_authorizer_if(
                        component_appid,
                        appid,
                        &sealed,
                        &self.keys.keyring.current_id(),
                        *listed_time,
                        started,
                        now_ms(),
                    )
                    .await?;
                out.restored += usize::from(applied);
            }
        }
        for row in &rows {
            if row.authorized
                && row.updated_at < started
                && !listed.contains_key(&row.authorizer_appid)
            {
                // Only if the row is still as it was before the listing (a merchant
                // re-authorizing meanwhile is not undone).
                let applied = self
                    .store
                    .deauthorize_platform_authorizer_if(
                        component_appid,
                        &row.authorizer_appid,
                        i64::MAX,
                        started,
                        now_ms(),
                    )
                    .await?;
                if applied {
                    component.drop_authorizer(&row.authorizer_appid);
                    out.deauthorized += 1;
                }
            }
        }
        self.sync_authorizers().await?;
        Ok(out)
    }

    /// Re-seals the tickets and refresh tokens of every platform known (the file's, and every
    /// managed one — disabled and deleted ones too) sealed under an older data key with the
    /// newest one (at start-up, so that a data-key rotation can drop the old key: a refresh
    /// token that no longer opens would make its merchant authorize again). Each is replaced
    /// only if unchanged meanwhile (an instance saving a new one wins). Returns how many were
    /// re-sealed.
    ///
    /// # Errors
    /// The database could not be read or written.
    pub async fn reseal_platform_secrets(&self) -> Result<usize, SealError> {
        let current = self.keys.keyring.current_id();
        let stale = |sealed: &[u8]| Keyring::key_id_of(sealed).is_some_and(|k| k != current);
        let mut resealed = 0;
        let mut known: std::collections::BTreeSet<String> = self
            .config
            .platforms
            .iter()
            .map(|p| p.component_appid.clone())
            .collect();
        let managed = crate::store::read_all_after(
            0,
            |after, limit| self.store.managed_platforms_after(after, limit),
            |r| r.rev,
        )
        .await?;
        known.extend(managed.into_iter().map(|r| r.appid));
        for c in &known {
            if let Some(old) = self.store.platform_ticket(c).await? {
                let aad = super::runtime::ticket_aad(c);
                if let Some(plain) = stale(&old)
                    .then(|| self.keys.keyring.open(&old, &aad))
                    .flatten()
                {
                    let sealed = self.keys.keyring.seal(&plain, &aad);
                    resealed += usize::from(
                        self.store
                            .reseal_platform_ticket(c, &old, &sealed, &current)
                            .await?,
                    );
                }
            }
            for row in self.store.platform_authorizers(c).await? {
                let Some(old) = row.refresh_sealed.filter(|s| stale(s)) else {
                    continue;
                };
                let aad = super::runtime::refresh_aad(c, &row.authorizer_appid);
                let Some(plain) = self
                    .keys
                    .keyring
                    .open(&old, &aad)
                    .map(zeroize::Zeroizing::new)
                else {
                    tracing::error!(platform = %c, authorizer = %row.authorizer_appid, "a refresh token does not open with the configured data keys; the reconciliation with the authorizer list will restore it");
                    continue;
                };
                let sealed = self.keys.keyring.seal(&plain, &aad);
                resealed += usize::from(
                    self.store
                        .reseal_platform_refresh(c, &row.authorizer_appid, &old, &sealed, &current)
                        .await?,
                );
            }
        }
        if resealed > 0 {
            tracing::info!(
                resealed,
                "platform tickets and refresh tokens re-sealed with the newest data key"
            );
        }
        Ok(resealed)
    }
}
