//! Persistence: users, sessions and server metadata behind one [`Store`] trait, with a SQLite
//! and a PostgreSQL implementation sharing their SQL (see `sql.rs`).

mod sql;

use std::sync::Arc;

use async_trait::async_trait;

pub use sql::{PgStore, SqliteStore};

/// `next_attempt_at` of events that have no webhook to go to: never due (they can be pulled).
pub const NEVER: i64 = i64::MAX;

/// A storage failure (the database is unreachable, a constraint failed, …).
#[derive(Debug, thiserror::Error)]
#[error("database: {0}")]
pub struct StoreError(#[from] pub sqlx::Error);

/// A user of one app.
#[derive(Debug, Clone)]
pub struct UserRecord {
    /// Internal id.
    pub id: i64,
    /// The app.
    pub appid: String,
    /// openid in that app.
    pub openid: String,
    /// unionid, when WeChat gave one.
    pub unionid: Option<String>,
    /// The session_key, encrypted with the server's data key.
    pub session_key_enc: Vec<u8>,
    /// Bound phone number, with country code.
    pub phone_number: Option<String>,
    /// Bound phone number, without country code.
    pub pure_phone_number: Option<String>,
    /// Country code of the bound phone number.
    pub country_code: Option<String>,
    /// Unix ms.
    pub created_at: i64,
}

/// A received push in the event log.
#[derive(Debug, Clone)]
pub struct EventRecord {
    /// Increasing id (the `after` cursor of the events API).
    pub id: i64,
    /// The app.
    pub appid: String,
    /// `text`, `subscribe_msg_popup_event`, …
    pub kind: String,
    /// The message's fields as JSON text.
    pub payload: String,
    /// Unix ms when it was received.
    pub created_at: i64,
    /// Unix ms when the webhook acknowledged it.
    pub delivered_at: Option<i64>,
    /// Delivery attempts so far.
    pub attempts: u32,
}

/// What every storage backend provides. Timestamps are Unix milliseconds.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Creates the user or, for a known (appid, openid), replaces the session_key (WeChat
    /// rotated it) and fills in a unionid that was missing.
    async fn upsert_user(
        &self,
        appid: &str,
        openid: &str,
        unionid: Option<&str>,
        session_key_enc: &[u8],
        now: i64,
    ) -> Result<UserRecord, StoreError>;

    /// Records a session under the SHA-256 of its token.
    async fn create_session(
        &self,
        token_hash: &[u8],
        user_id: i64,
        now: i64,
        expires_at: i64,
    ) -> Result<(), StoreError>;

    /// The user of an unexpired session, with its expiry.
    async fn session_user(
        &self,
        token_hash: &[u8],
        now: i64,
    ) -> Result<Option<(UserRecord, i64)>, StoreError>;

    /// Deletes a session; true if it existed.
    async fn delete_session(&self, token_hash: &[u8]) -> Result<bool, StoreError>;

    /// Binds a phone number to a user.
    async fn set_phone(
        &self,
        user_id: i64,
        phone: &str,
        pure: &str,
        country_code: &str,
        now: i64,
    ) -> Result<(), StoreError>;

    /// Every (appid, openid) sharing `unionid`: the same person across the apps of one Open
    /// Platform account.
    async fn users_by_unionid(&self, unionid: &str) -> Result<Vec<(String, String)>, StoreError>;

    /// The value under `key`, storing `default` first if absent (first writer wins).
    async fn meta_get_or_insert(&self, key: &str, default: &str) -> Result<String, StoreError>;

    /// Deletes expired sessions; returns how many.
    async fn purge_expired_sessions(&self, now: i64) -> Result<u64, StoreError>;

    /// Checks the connection.
    async fn ping(&self) -> Result<(), StoreError>;

    /// `sqlite` or `postgres`.
    fn kind(&self) -> &'static str;

    /// Appends a push to the event log unless (appid, dedup_key) is already there. Returns the
    /// event id and whether it was new.
    async fn insert_event(
        &self,
        appid: &str,
        dedup_key: &str,
        kind: &str,
        payload: &str,
        now: i64,
        next_attempt_at: i64,
    ) -> Result<(i64, bool), StoreError>;

    /// Leases up to `limit` undelivered events that are due, until `lease_until`. An event is
    /// leased to one caller at a time; a lease that runs out (a crashed instance) frees it.
    async fn claim_due_events(
        &self,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> Result<Vec<EventRecord>, StoreError>;

    /// Records a successful delivery.
    async fn mark_delivered(&self, id: i64, now: i64) -> Result<(), StoreError>;

    /// Records a failed attempt and when to try again.
    async fn mark_failed(
        &self,
        id: i64,
        next_attempt_at: i64,
        error: &str,
    ) -> Result<(), StoreError>;

    /// Events of `appid` with id > `after`, oldest first.
    async fn events_after(
        &self,
        appid: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<EventRecord>, StoreError>;
}

/// Opens the database named by `url` and applies pending migrations.
///
/// # Errors
/// Unsupported scheme, unreachable database, or a failed migration.
pub async fn connect(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PgStore::connect(url).await?))
    } else if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::connect(url).await?))
    } else {
        Err(StoreError(sqlx::Error::Configuration(
            format!(
                "database_url must start with sqlite: or postgres://, got `{}`",
                url.split(':').next().unwrap_or("")
            )
            .into(),
        )))
    }
}
