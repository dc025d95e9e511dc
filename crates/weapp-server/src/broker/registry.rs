//! The apps and broker clients an instance serves: those of the configuration file, and those
//! managed at runtime through the admin API — kept in the database (secrets sealed with the
//! data key, bound to their appid) and picked up by every instance.
//!
//! Every change to a managed app or client takes the next registry revision, in one
//! transaction with the change, so transactions commit in revision order. An instance polls
//! the revision (one single-row query every `registry_poll_ms`, 1 s by default) and reads the
//! rows changed since the last revision it applied; deletions stay as tombstones, so they are
//! read like any change. A full re-read every `registry_reconcile_secs` heals anything a poll
//! could have missed (a row that failed to open, a bug). Polling rather than `LISTEN/NOTIFY` or
//! pub/sub: it works the same on SQLite and Postgres, with or without Redis, and a missed
//! notification cannot exist.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use weapp::TokenMode;

use super::runtime::{AppRuntime, BrokerClient};
use crate::config::{AppConfig, PushConfig, Secret, WarmPolicy};

/// Where an app or a client is defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The configuration file (read-only through the admin API).
    File,
    /// The database (the admin API).
    Managed,
    /// A merchant's mini program that authorized a third-party platform (`[[platforms]]`):
    /// served with authorizer tokens; changed only by the merchant (authorization events).
    Platform,
}

/// An app's push settings without secrets (`Debug` shows the webhook URL without its path).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct PushSettings {
    /// `safe`, `compatible` or `plain` (default: `safe` with a key).
    #[serde(default)]
    pub mode: Option<weapp::push::PushMode>,
    /// Where verified events are delivered.
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// The replay window (seconds).
    #[serde(default = "default_replay_window")]
    pub replay_window_secs: u64,
}

fn default_replay_window() -> u64 {
    300
}

impl std::fmt::Debug for PushSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushSettings")
            .field("mode", &self.mode)
            .field(
                "webhook_url",
                &self
                    .webhook_url
                    .as_deref()
                    .map(crate::config::redact_webhook_url),
            )
            .field("replay_window_secs", &self.replay_window_secs)
            .finish()
    }
}

/// An app's settings without secrets: what the admin API shows and the database keeps in the
/// clear.
/// Stored settings are read leniently: a newer instance may have written fields this one does
/// not know (a rolling upgrade).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppSettings {
    /// WeChat's API host, or a weapp-sim URL.
    pub api_base: String,
    /// `stable` or `classic`.
    pub token_mode: TokenMode,
    /// This app's warm policy (`None`: the server's).
    #[serde(default)]
    pub warm: Option<WarmPolicy>,
    /// Push settings, when pushes are received.
    #[serde(default)]
    pub push: Option<PushSettings>,
    /// Whether logins get signed access tokens (JWT).
    #[serde(default = "yes")]
    pub access_tokens: bool,
}

fn yes() -> bool {
    true
}

/// An app's secrets, sealed together in the database.
#[derive(Serialize, Deserialize)]
pub(crate) struct AppSecrets {
    pub(crate) secret: String,
    #[serde(default)]
    pub(crate) push_token: Option<String>,
    #[serde(default)]
    pub(crate) encoding_aes_key: Option<String>,
    #[serde(default)]
    pub(crate) webhook_secret: Option<String>,
}

impl AppSettings {
    /// The settings of a configured app.
    pub fn of(app: &AppConfig) -> Self {
        Self {
            api_base: app.api_base.clone(),
            token_mode: app.token_mode,
            warm: app.warm,
            access_tokens: app.access_tokens,
            push: app.push.as_ref().map(|p| PushSettings {
                mode: p.mode,
                webhook_url: p.webhook_url.clone(),
                replay_window_secs: p.replay_window_secs,
            }),
        }
    }

    /// The app configuration these settings and `secrets` make.
    pub(crate) fn config(&self, appid: &str, secrets: &AppSecrets) -> AppConfig {
        AppConfig {
            appid: appid.to_owned(),
            secret: Some(Secret::new(secrets.secret.clone())),
            secret_env: None,
            api_base: self.api_base.clone(),
            token_mode: self.token_mode,
            push: self.push.as_ref().map(|p| PushConfig {
                token: Secret::new(secrets.push_token.clone().unwrap_or_default()),
                encoding_aes_key: secrets.encoding_aes_key.clone().map(Secret::new),
                mode: p.mode,
                webhook_url: p.webhook_url.clone(),
                webhook_secret: secrets.webhook_secret.clone().map(Secret::new),
                replay_window_secs: p.replay_window_secs,
            }),
            warm: self.warm,
            access_tokens: self.access_tokens,
        }
    }
}

/// What the sealed secrets of a managed app are bound to: its appid and the API host its
/// secret is sent to — settings edited in the database to point the app elsewhere no longer
/// open its secrets.
pub(crate) fn app_aad(appid: &str, api_base: &str) -> Vec<u8> {
    format!("managed-app:{appid}:{}", api_base.trim_end_matches('/')).into_bytes()
}

/// One app: where it comes from, whether it is served, and its runtime when it is.
#[derive(Debug)]
pub struct AppEntry {
    /// The appid.
    pub appid: String,
    /// File or managed.
    pub source: Source,
    /// Disabled apps are neither refreshed nor served (404).
    pub enabled: bool,
    /// Settings (no secrets).
    pub settings: AppSettings,
    /// The SDK client and token manager, for an enabled app.
    pub runtime: Option<Arc<AppRuntime>>,
    /// The registry revision of its last change (0 for file apps).
    pub rev: i64,
    /// Unix ms (0 for file apps).
    pub created_at: i64,
    /// Unix ms (0 for file apps).
    pub updated_at: i64,
    /// Why its stored record could not be loaded (its secrets do not open with the configured
    /// data keys, its settings do not parse): such an app is not served.
    pub load_error: Option<String>,
}

/// One broker client.
#[derive(Debug)]
pub struct ClientEntry {
    /// The client (name, apps, scopes).
    pub client: Arc<BrokerClient>,
    /// File or managed.
    pub source: Source,
    /// Disabled clients are refused.
    pub enabled: bool,
    /// The registry revision of its last change (0 for file clients).
    pub rev: i64,
    /// Unix ms (0 for file clients).
    pub created_at: i64,
    /// Unix ms (0 for file clients).
    pub updated_at: i64,
}

#[derive(Debug, Default)]
struct Clients {
    by_name: BTreeMap<String, Arc<ClientEntry>>,
    by_key: HashMap<[u8; 32], Arc<BrokerClient>>,
}

/// The apps and clients this instance serves, readable without waiting.
#[derive(Debug, Default)]
pub struct Registry {
    apps: RwLock<BTreeMap<String, Arc<AppEntry>>>,
    /// The runtimes of enabled apps by appid: the broker's lookup, one hash away.
    runtimes: RwLock<HashMap<String, Arc<AppRuntime>>>,
    clients: RwLock<Clients>,
    /// The last registry revision applied.
    rev: std::sync::atomic::AtomicI64,
    /// Bumped on every change of the served apps (the fleet scheduler re-plans on it).
    generation: tokio::sync::watch::Sender<u64>,
}

impl Registry {
    /// The runtime of an enabled app.
    pub fn app(&self, appid: &str) -> Option<Arc<AppRuntime>> {
        self.runtimes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(appid)
            .cloned()
    }

    /// The appids of the entries from `source`.
    pub fn appids_of(&self, source: Source) -> Vec<String> {
        self.apps
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|e| e.source == source)
            .map(|e| e.appid.clone())
            .collect()
    }

    /// An app's entry (enabled or not).
    pub fn entry(&self, appid: &str) -> Option<Arc<AppEntry>> {
        self.apps
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(appid)
            .cloned()
    }

    /// Up to `limit` app entries with appids after `after`, in appid order.
    pub fn page(&self, after: &str, limit: usize) -> Vec<Arc<AppEntry>> {
        use std::ops::Bound;
        self.apps
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .range::<str, _>((Bound::Excluded(after), Bound::Unbounded))
            .take(limit)
            .map(|(_, e)| e.clone())
            .collect()
    }

    /// The runtimes of every enabled app.
    pub fn runtimes(&self) -> Vec<Arc<AppRuntime>> {
        self.runtimes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// How many apps are known (enabled or not).
    pub fn len(&self) -> usize {
        self.apps.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether no app is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The enabled client whose key hashes to `hash`.
    pub fn client_by_key(&self, hash: &[u8; 32]) -> Option<Arc<BrokerClient>> {
        self.clients
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .by_key
            .get(hash)
            .cloned()
    }

    /// A client's entry by name.
    pub fn client_entry(&self, name: &str) -> Option<Arc<ClientEntry>> {
        self.clients
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .by_name
            .get(name)
            .cloned()
    }

    /// Every client entry, by name.
    pub fn client_entries(&self) -> Vec<Arc<ClientEntry>> {
        self.clients
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .by_name
            .values()
            .cloned()
            .collect()
    }

    /// Puts (or replaces) an app entry.
    pub(crate) fn put_app(&self, entry: AppEntry) {
        {
            let mut runtimes = self.runtimes.write().unwrap_or_else(|p| p.into_inner());
            match &entry.runtime {
                Some(rt) => runtimes.insert(entry.appid.clone(), rt.clone()),
                None => runtimes.remove(&entry.appid),
            };
        }
        self.apps
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(entry.appid.clone(), Arc::new(entry));
        self.generation.send_modify(|g| *g += 1);
    }

    /// Removes an app entry.
    pub(crate) fn remove_app(&self, appid: &str) -> Option<Arc<AppEntry>> {
        self.runtimes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(appid);
        let removed = self
            .apps
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(appid);
        if removed.is_some() {
            self.generation.send_modify(|g| *g += 1);
        }
        removed
    }

    /// Puts (or replaces) a client entry; `key_hash` indexes it when it is enabled.
    pub(crate) fn put_client(&self, entry: ClientEntry, key_hash: Option<[u8; 32]>) {
        let mut c = self.clients.write().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = c.by_name.remove(&entry.client.name) {
            c.by_key.retain(|_, v| !Arc::ptr_eq(v, &old.client));
        }
        if let (true, Some(hash)) = (entry.enabled, key_hash) {
            c.by_key.insert(hash, entry.client.clone());
        }
        c.by_name.insert(entry.client.name.clone(), Arc::new(entry));
    }

    /// Removes a client entry.
    pub(crate) fn remove_client(&self, name: &str) {
        let mut c = self.clients.write().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = c.by_name.remove(name) {
            c.by_key.retain(|_, v| !Arc::ptr_eq(v, &old.client));
        }
    }

    /// Appids of managed entries (for reconciliation).
    pub(crate) fn managed_appids(&self) -> Vec<String> {
        self.apps
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|e| e.source == Source::Managed)
            .map(|e| e.appid.clone())
            .collect()
    }

    /// Names of managed clients (for reconciliation).
    pub(crate) fn managed_client_names(&self) -> Vec<String> {
        self.clients
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .by_name
            .values()
            .filter(|e| e.source == Source::Managed)
            .map(|e| e.client.name.clone())
            .collect()
    }

    /// The last registry revision applied.
    pub fn rev(&self) -> i64 {
        self.rev.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub(crate) fn set_rev(&self, rev: i64) {
        self.rev.fetch_max(rev, std::sync::atomic::Ordering::SeqCst);
    }

    pub(crate) fn reset_rev(&self, rev: i64) {
        self.rev.store(rev, std::sync::atomic::Ordering::SeqCst);
    }

    /// Changes whenever the served apps change.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.generation.subscribe()
    }
}
