//! Why a sandbox could not be set up.

use crate::config::{ConfigError, PushConfigError};
use crate::keys::seal::DataKeyError;
use crate::store::StoreError;

/// Why a sandbox could not be set up. Never carries a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SandboxError {
    /// The simulator could not listen.
    #[error("sandbox simulator: {0}")]
    Simulator(#[source] std::io::Error),
    /// The sandbox database could not be opened, migrated, read or written.
    #[error("sandbox {0}")]
    Database(#[from] StoreError),
    /// The database holds real users (or was made by `weapp serve` without `--sandbox`).
    #[error("--sandbox refuses a database that is not a sandbox one (it holds real users); use another database_url")]
    NotSandbox,
    /// A configured data key is malformed, or the keyring cannot be made.
    #[error("sandbox data keys: {0}")]
    DataKey(#[source] DataKeyError),
    /// A value an earlier start kept does not open with the data keys in force.
    #[error("{}", unreadable(name, key_id.as_deref()))]
    Unreadable {
        /// What it is (`client_key`, `admin_key`, `app_secret/<appid>`).
        name: String,
        /// The data key that sealed it, when the value says so.
        key_id: Option<String>,
    },
    /// The database file's permissions could not be restricted to its owner.
    #[error("sandbox database file {path}: {source}")]
    File {
        /// The file.
        path: String,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// A configured app's or platform's secret cannot be resolved.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The simulator refused what the sandbox registers.
    #[error("sandbox simulator: {what}: {message}")]
    Refused {
        /// What was being registered.
        what: String,
        /// The simulator's answer.
        message: String,
    },
    /// The simulator refused to send an app's or a platform's traffic to the server
    /// ([`Sandbox::connect`](super::Sandbox::connect)).
    #[error("{what}: {message}")]
    NotConnected {
        /// What was being wired (`app <appid>: backend`, `platform <appid>`,
        /// `app <appid>: push target`).
        what: String,
        /// The simulator's answer.
        message: String,
    },
    /// An app's push settings name no mode the simulator can push in.
    #[error(transparent)]
    Push(#[from] PushConfigError),
}

fn unreadable(name: &str, key_id: Option<&str>) -> String {
    let sealed = key_id.map_or(String::new(), |id| format!(" (sealed with data key {id})"));
    format!(
        "the sandbox's {name} kept in its database does not open with the data keys in force{sealed}: configure that key again in data_keys, or use another database_url"
    )
}
