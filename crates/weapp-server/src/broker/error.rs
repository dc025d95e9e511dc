//! The broker domain's errors: building an app's runtime ([`RuntimeError`]) and keeping the
//! served apps in step with the database ([`SyncError`]). Messages name the app, never a
//! secret.

use crate::config::PushConfigError;
use crate::keys::SealError;
use crate::store::StoreError;

/// Why an app's, a merchant's or a platform's runtime could not be built: settings the SDK
/// refuses, or a managed record whose settings or sealed secrets do not load. Names the app,
/// never its secrets.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// The SDK refused the app's settings.
    #[error("app {appid}: {source}")]
    Client {
        /// The app.
        appid: String,
        /// What the SDK said.
        #[source]
        source: weapp::Error,
    },
    /// The app's push settings are incomplete.
    #[error("app {appid}: push: {source}")]
    PushSettings {
        /// The app.
        appid: String,
        /// What is missing.
        #[source]
        source: PushConfigError,
    },
    /// The SDK refused the app's push settings.
    #[error("app {appid}: push: {source}")]
    Push {
        /// The app.
        appid: String,
        /// What the SDK said.
        #[source]
        source: weapp::push::PushError,
    },
    /// The SDK refused a merchant's appid.
    #[error(transparent)]
    Merchant(weapp::Error),
    /// The SDK refused the platform's settings.
    #[error("platform {component_appid}: {source}")]
    Component {
        /// The platform.
        component_appid: String,
        /// What the SDK said.
        #[source]
        source: weapp::Error,
    },
    /// The SDK refused the platform's push settings.
    #[error("platform {component_appid}: push: {source}")]
    PlatformPush {
        /// The platform.
        component_appid: String,
        /// What the SDK said.
        #[source]
        source: weapp::push::PushError,
    },
    /// A managed app's or platform's settings do not parse.
    #[error("settings do not parse: {0}")]
    Settings(#[source] serde_json::Error),
    /// A managed record has no sealed secrets.
    #[error("no sealed secrets")]
    NotSealed,
    /// A managed record's secrets do not open with the configured data keys.
    #[error("its secrets do not open with the configured data keys")]
    Unopenable,
    /// A managed record's secrets opened but do not parse. (The parser's error is left out:
    /// it could quote the secrets.)
    #[error("its secrets do not parse")]
    Secrets,
}

/// Why the registry, or the merchants of the served platforms, could not be brought up to
/// date with the database.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// The database could not be read.
    #[error(transparent)]
    Database(#[from] StoreError),
    /// The signing keys could not be re-read.
    #[error(transparent)]
    SigningKeys(#[from] SealError),
}
