//! What a sandbox keeps in its own database so that a restart on it is the same sandbox: the
//! demo app's secret, the broker client key, the admin key and the simulator merchants' keys
//! (sealed with the data keyring, each bound to its name); the ids of the subscribe templates it seeds and the simulator's
//! address (not secrets: plain).
//!
//! Values live in the `meta` key/value table, under `sandbox/…` keys, written with
//! `meta_get_or_insert`: two sandboxes starting together on one database end up with the same
//! values (the first writer wins, the other reads it back). The data keyring is the one the
//! server opens afterwards — the configured keys, or the key generated and kept in the database —
//! so a generated key sits beside what it seals; for that reason a SQLite sandbox database is
//! also made readable by its owner only (0600).

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

use super::error::SandboxError;
use crate::config::Config;
use crate::keys::seal::{DataKey, Keyring};
use crate::store::{Store, StoreOptions};

/// The sandbox's database, opened for its remembered values.
pub(super) struct Vault {
    store: Arc<dyn Store>,
    ring: Keyring,
}

/// A value and whether an earlier start stored it.
pub(super) struct Kept {
    /// The value.
    pub value: String,
    /// True when it was already in the database.
    pub remembered: bool,
}

impl Vault {
    /// Opens (creating and migrating) the database of `config`, refuses one that is not a
    /// sandbox's, and opens the data keyring the server will use.
    pub(super) async fn open(config: &Config) -> Result<Self, SandboxError> {
        // The store creates a SQLite file readable by its owner alone.
        let sqlite_file = sqlite_file(&config.database_url);
        let options = StoreOptions {
            pool_size: 2,
            ..StoreOptions::default()
        };
        let store = crate::store::connect(&config.database_url, &options).await?;
        if let Some(path) = &sqlite_file {
            restrict(path)?;
        }
        check_marker(store.as_ref()).await?;
        let ring = keyring(store.as_ref(), config).await?;
        Ok(Self { store, ring })
    }

    /// The secret kept under `name`, generated (and stored sealed) on the first start.
    pub(super) async fn secret(
        &self,
        name: &str,
        generate: impl FnOnce() -> String,
    ) -> Result<Kept, SandboxError> {
        let aad = aad(name);
        let sealed = B64.encode(self.ring.seal(generate().as_bytes(), &aad));
        let key = format!("sandbox/{name}");
        let stored = self.store.meta_get_or_insert(&key, &sealed).await?;
        let blob = B64.decode(&stored).ok();
        let opened = blob
            .as_deref()
            .and_then(|b| self.ring.open(b, &aad))
            .and_then(|plain| String::from_utf8(plain).ok());
        match opened {
            Some(value) => Ok(Kept {
                value,
                remembered: stored != sealed,
            }),
            None => Err(SandboxError::Unreadable {
                name: name.to_owned(),
                key_id: blob.as_deref().and_then(Keyring::key_id_of),
            }),
        }
    }

    /// The plain value kept under `name`, generated on the first start.
    pub(super) async fn plain(
        &self,
        name: &str,
        generate: impl FnOnce() -> String,
    ) -> Result<Kept, SandboxError> {
        let fresh = generate();
        let value = self
            .store
            .meta_get_or_insert(&format!("sandbox/{name}"), &fresh)
            .await?;
        Ok(Kept {
            remembered: value != fresh,
            value,
        })
    }
}

impl Vault {
    /// The secret kept under `name`, if an earlier start stored one (for a value that cannot
    /// be generated before it is known whether one is kept: a simulator merchant).
    pub(super) async fn kept_secret(&self, name: &str) -> Result<Option<String>, SandboxError> {
        let Some(stored) = self.store.meta_get(&format!("sandbox/{name}")).await? else {
            return Ok(None);
        };
        let blob = B64.decode(&stored).ok();
        blob.as_deref()
            .and_then(|b| self.ring.open(b, &aad(name)))
            .and_then(|plain| String::from_utf8(plain).ok())
            .map(Some)
            .ok_or_else(|| SandboxError::Unreadable {
                name: name.to_owned(),
                key_id: blob.as_deref().and_then(Keyring::key_id_of),
            })
    }

    /// The plain value under `name`, if an earlier start stored one.
    pub(super) async fn get(&self, name: &str) -> Result<Option<String>, SandboxError> {
        Ok(self.store.meta_get(&format!("sandbox/{name}")).await?)
    }

    /// Stores `value` under `name` unless another start changed it since it read `read`
    /// (the last writer of a race loses, which is fine for what is kept this way).
    pub(super) async fn set(
        &self,
        name: &str,
        read: Option<&str>,
        value: &str,
    ) -> Result<(), SandboxError> {
        if read != Some(value) {
            self.store
                .meta_cas(&format!("sandbox/{name}"), read, value)
                .await?;
        }
        Ok(())
    }
}

/// The associated data binding a sealed sandbox value to its name: a value copied under
/// another name does not open.
fn aad(name: &str) -> Vec<u8> {
    format!("weapp/sandbox\0{name}").into_bytes()
}

/// Refuses a database that is not a sandbox one, marking a fresh database as a sandbox's
/// before anything is written to it. The same rule as the server's own check at start-up
/// (which then finds the mark): a database holding real users is never a sandbox's.
async fn check_marker(store: &dyn Store) -> Result<(), SandboxError> {
    match store.meta_get("mode").await?.as_deref() {
        Some("sandbox") => Ok(()),
        Some(_) => Err(SandboxError::NotSandbox),
        None if store.has_data().await? => Err(SandboxError::NotSandbox),
        None => {
            if store.meta_get_or_insert("mode", "sandbox").await? == "sandbox" {
                Ok(())
            } else {
                Err(SandboxError::NotSandbox)
            }
        }
    }
}

/// The keyring the server opens on this database: the configured data keys (newest first)
/// and the key an earlier run generated, or — with none configured, as a sandbox allows — the
/// generated key, made now if this is the first start.
async fn keyring(store: &dyn Store, config: &Config) -> Result<Keyring, SandboxError> {
    let mut keys = config
        .data_key_list()
        .iter()
        .map(|k| DataKey::from_base64(k.expose()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(SandboxError::DataKey)?;
    if keys.is_empty() {
        let k = store
            .meta_get_or_insert("data_key", &DataKey::generate_base64())
            .await?;
        keys.push(DataKey::from_base64(&k).map_err(SandboxError::DataKey)?);
    } else if let Some(k) = store.meta_get("data_key").await? {
        let generated = DataKey::from_base64(&k).map_err(SandboxError::DataKey)?;
        if !keys.iter().any(|c| c.id() == generated.id()) {
            keys.push(generated);
        }
    }
    Keyring::new(keys).map_err(SandboxError::DataKey)
}

/// The file of a `sqlite:` URL (none for an in-memory database or another kind).
fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    use std::str::FromStr;
    if !url.starts_with("sqlite:") || url.contains(":memory:") || url.contains("mode=memory") {
        return None;
    }
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(url).ok()?;
    Some(options.get_filename().to_path_buf())
}

/// Makes the database and its WAL files readable by their owner only (SQLite gives files it
/// creates later the database file's mode).
fn restrict(path: &std::path::Path) -> Result<(), SandboxError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mut files = vec![path.to_path_buf()];
        for suffix in ["-wal", "-shm"] {
            let mut name = path.as_os_str().to_owned();
            name.push(suffix);
            files.push(name.into());
        }
        for file in files {
            match std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(SandboxError::File {
                        path: file.display().to_string(),
                        source,
                    })
                }
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_of_a_sqlite_url() {
        assert_eq!(
            sqlite_file("sqlite://weapp-sandbox.db"),
            Some("weapp-sandbox.db".into())
        );
        assert_eq!(
            sqlite_file("sqlite:///tmp/x.db?mode=rwc"),
            Some("/tmp/x.db".into())
        );
        assert_eq!(sqlite_file("sqlite::memory:"), None);
        assert_eq!(sqlite_file("postgres://h/db"), None);
    }
}
