//! Persistence: users, sessions and server metadata behind one [`Store`] trait, with a SQLite
//! and a PostgreSQL implementation sharing their SQL (see `sql.rs`).

mod lite_error;
mod pay_flow;
mod sql;
mod sqlite_writer;

use std::sync::Arc;

use async_trait::async_trait;

pub use pay_flow::{PayFlowStore, PayRefundChange, PayRefundInsert, PayRefundRecord};
pub use sql::{PgStore, SqliteStore};

/// `next_attempt_at` of events that have no webhook to go to: never due (they can be pulled).
pub const NEVER: i64 = i64::MAX;

/// A storage failure (the database is unreachable, a constraint failed, …).
#[derive(Debug, thiserror::Error)]
#[error("database: {0}")]
pub struct StoreError(#[from] pub sqlx::Error);

impl StoreError {
    /// Every pooled connection was busy for the whole acquire timeout: the database is
    /// saturated, not broken (answered 503 with `Retry-After`).
    pub fn is_pool_exhausted(&self) -> bool {
        matches!(self.0, sqlx::Error::PoolTimedOut)
    }

    /// The database is busy, not broken: every pooled connection taken for the acquire
    /// timeout, or SQLite's write lock held by another connection past the busy timeout
    /// (`SQLITE_BUSY`, `SQLITE_LOCKED`). Answered 503 with `Retry-After`.
    pub fn is_busy(&self) -> bool {
        self.is_pool_exhausted()
            || self
                .sqlite_code()
                .is_some_and(|c| matches!(c & 0xff, 5 | 6))
    }

    /// The failure is one row's, not the database's: a constraint (unique, foreign key, not
    /// null, check), or on PostgreSQL a deadlock or serialization failure — worth retrying
    /// each row of a batch alone. A busy, full, unreadable or unreachable database is not.
    pub fn is_per_row(&self) -> bool {
        let sqlx::Error::Database(db) = &self.0 else {
            return false;
        };
        if db.kind() != sqlx::error::ErrorKind::Other {
            return true;
        }
        if let Some(c) = self.sqlite_code() {
            // SQLite's primary SQLITE_CONSTRAINT (the extended code's low byte).
            return c & 0xff == 19;
        }
        // PostgreSQL: class 23 (integrity constraint), class 40 (transaction rollback).
        db.code()
            .is_some_and(|c| c.starts_with("23") || c.starts_with("40"))
    }

    /// SQLite's (extended) result code, when the error is SQLite's (sqlx's or the login
    /// writer's).
    fn sqlite_code(&self) -> Option<i32> {
        let sqlx::Error::Database(db) = &self.0 else {
            return None;
        };
        let sqlite = db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some()
            || db.try_downcast_ref::<lite_error::LiteError>().is_some();
        db.code()
            .filter(|_| sqlite)
            .and_then(|c| c.parse::<i32>().ok())
    }
}

/// How the pool is sized and SQLite commits.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Connections in the pool.
    pub pool_size: u32,
    /// How long a caller waits for a connection.
    pub acquire_timeout: std::time::Duration,
    /// SQLite `synchronous=FULL` (true) or `NORMAL`.
    pub sqlite_full_sync: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            pool_size: 16,
            acquire_timeout: std::time::Duration::from_secs(3),
            sqlite_full_sync: true,
        }
    }
}

/// Webhook backlog facts for `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct OutboxStats {
    /// Events waiting for delivery (not dead-lettered).
    pub backlog: i64,
    /// Unix ms of the oldest of them.
    pub oldest_created_at: Option<i64>,
    /// Dead-lettered events.
    pub dead: i64,
}

/// A user whose session_key is sealed in the first format (re-sealed at start-up).
#[derive(Debug, Clone)]
pub struct LegacySealed {
    /// Internal id.
    pub id: i64,
    /// The app.
    pub appid: String,
    /// openid.
    pub openid: String,
    /// The sealed value.
    pub session_key_enc: Vec<u8>,
}

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

/// A session as found by its token.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    /// Its user.
    pub user: UserRecord,
    /// Unix ms when it expires.
    pub expires_at: i64,
    /// Unix ms when it was last used (0 if never recorded).
    pub last_seen_at: i64,
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
    /// Unix ms when it was dead-lettered (attempts exhausted).
    pub dead_at: Option<i64>,
    /// The last delivery error.
    pub last_error: Option<String>,
}

/// An app managed through the admin API, or the tombstone of a deleted one.
#[derive(Clone)]
pub struct ManagedAppRecord {
    /// The appid.
    pub appid: String,
    /// Settings without secrets (JSON).
    pub settings: String,
    /// The secrets (JSON), sealed with the data key and bound to the appid; `None` once deleted.
    pub sealed: Option<Vec<u8>>,
    /// The data key that sealed them.
    pub key_id: Option<String>,
    /// Disabled apps are neither refreshed nor served.
    pub enabled: bool,
    /// A tombstone.
    pub deleted: bool,
    /// The registry revision of the last change.
    pub rev: i64,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
}

impl std::fmt::Debug for ManagedAppRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagedAppRecord")
            .field("appid", &self.appid)
            .field("settings", &self.settings)
            .field(
                "sealed",
                &self.sealed.as_ref().map(|s| format!("[{} bytes]", s.len())),
            )
            .field("enabled", &self.enabled)
            .field("deleted", &self.deleted)
            .field("rev", &self.rev)
            .finish_non_exhaustive()
    }
}

/// A third-party platform registered through the admin API, or the tombstone of a deleted one:
/// the same shape as a managed app, `appid` holding the component appid and `settings` its
/// [`crate::platforms::runtime::PlatformSettings`].
pub type ManagedPlatformRecord = ManagedAppRecord;

/// A broker client managed through the admin API, or the tombstone of a deleted one.
#[derive(Debug, Clone)]
pub struct ManagedClientRecord {
    /// Its unique name.
    pub name: String,
    /// SHA-256 of its key (the key itself is shown once, at creation, and never stored).
    pub key_sha256: Option<Vec<u8>>,
    /// The apps it may use (JSON array; `"*"` for all).
    pub apps: String,
    /// Its scopes (JSON array).
    pub scopes: String,
    /// Disabled clients are refused.
    pub enabled: bool,
    /// A tombstone.
    pub deleted: bool,
    /// The registry revision of the last change.
    pub rev: i64,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
}

/// One administrator action.
#[derive(Debug, Clone)]
pub struct AuditRecord {
    /// Increasing id.
    pub id: i64,
    /// Unix ms.
    pub at: i64,
    /// The administrator's name.
    pub admin: String,
    /// `app.create`, `client.delete`, `session.revoke`, …
    pub action: String,
    /// What it acted on (an appid, a client name, …).
    pub target: String,
    /// The client address it came from.
    pub source: String,
    /// What changed (JSON, never a secret).
    pub detail: String,
}

/// One login to record: the user (created, or given WeChat's new session_key) and a new session.
#[derive(Clone)]
pub struct LoginWrite {
    /// The app.
    pub appid: String,
    /// openid in that app.
    pub openid: String,
    /// unionid, when WeChat gave one (a missing one never erases a known one).
    pub unionid: Option<String>,
    /// The session_key, sealed.
    pub session_key_enc: Vec<u8>,
    /// The data key that sealed it.
    pub key_id: String,
    /// The new session's key: derived from the SHA-256 of its token (weapp-server's
    /// `hash_token`), never the token.
    pub token_hash: Vec<u8>,
    /// Unix ms.
    pub now: i64,
    /// When the session expires (Unix ms).
    pub expires_at: i64,
}

impl std::fmt::Debug for LoginWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginWrite")
            .field("appid", &self.appid)
            .field("openid", &self.openid)
            .finish_non_exhaustive()
    }
}

/// One user of a batch of logins, as both databases write it: its key (appid, openid), its
/// last login in the batch (which carries the newest session_key), and the newest unionid any
/// of its logins carried (a login without one never erases a known one).
pub(crate) type BatchUser<'a> = ((&'a str, &'a str), usize, Option<&'a str>);

/// The users of a batch, one each (an upsert cannot touch a row twice in one statement), in
/// key order: two instances upserting the same users lock them in the same order (no
/// deadlock between their batches).
pub(crate) fn batch_users(logins: &[LoginWrite]) -> Vec<BatchUser<'_>> {
    let mut last: std::collections::HashMap<(&str, &str), (usize, Option<&str>)> =
        std::collections::HashMap::with_capacity(logins.len());
    for (i, l) in logins.iter().enumerate() {
        let e = last
            .entry((l.appid.as_str(), l.openid.as_str()))
            .or_insert((i, None));
        e.0 = i;
        if l.unionid.is_some() {
            e.1 = l.unionid.as_deref();
        }
    }
    let mut rows: Vec<BatchUser<'_>> = last.into_iter().map(|(k, (i, u))| (k, i, u)).collect();
    rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    rows
}

/// What a recorded login answers with.
#[derive(Debug, Clone)]
pub struct LoginRecorded {
    /// The user's internal id.
    pub user_id: i64,
    /// The user's unionid after the write.
    pub unionid: Option<String>,
}

/// A merchant's authorization of a third-party platform, as stored.
#[derive(Clone)]
pub struct PlatformAuthorizer {
    /// The platform.
    pub component_appid: String,
    /// The merchant's mini program.
    pub authorizer_appid: String,
    /// The refresh token, sealed (bound to the platform and the merchant).
    pub refresh_sealed: Option<Vec<u8>>,
    /// The data key that sealed it.
    pub key_id: Option<String>,
    /// False once the merchant de-authorized.
    pub authorized: bool,
    /// The permission sets granted, as JSON.
    pub func_ids: String,
    /// Unix seconds of the authorization.
    pub auth_time: i64,
    /// Unix ms.
    pub updated_at: i64,
    /// The registry revision of its last change (set by the store).
    pub rev: i64,
}

impl std::fmt::Debug for PlatformAuthorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlatformAuthorizer")
            .field("component_appid", &self.component_appid)
            .field("authorizer_appid", &self.authorizer_appid)
            .field("authorized", &self.authorized)
            .finish_non_exhaustive()
    }
}

/// When [`KeyStore::add_signing_key`] adds its key.
#[derive(Debug, Clone, Copy)]
pub enum KeyGuard {
    /// Always (an administrator's rotation).
    Always,
    /// Unless a key that is not retired was created at or after this time (a scheduled
    /// rotation another instance may have done).
    NoneCreatedSince(i64),
    /// Unless some key signs at this time or later (a first key, or one replacing a removed
    /// key): a key another instance added a moment after this time — its clock read later —
    /// counts, so that instances starting together make one key, not one each.
    NoSignerAt(i64),
}

/// Every record a paged read by revision returns after revision `from`: `read(after, limit)`
/// is called page by page (`rev_of` gives a record's revision) until a short page.
///
/// # Errors
/// A read failed.
pub async fn read_all_after<T, F, Fut>(
    from: i64,
    read: F,
    rev_of: impl Fn(&T) -> i64,
) -> Result<Vec<T>, StoreError>
where
    F: Fn(i64, i64) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<T>, StoreError>>,
{
    const PAGE: usize = 500;
    let mut all = Vec::new();
    let mut cursor = from;
    loop {
        let page = read(cursor, PAGE as i64).await?;
        let n = page.len();
        if let Some(last) = page.last() {
            cursor = rev_of(last);
        }
        all.extend(page);
        if n < PAGE {
            return Ok(all);
        }
    }
}

/// Users and sessions (the sessions domain; the keys domain re-seals session_keys through it).
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Creates the user or, for a known (appid, openid), replaces the session_key (WeChat
    /// rotated it) and fills in a unionid that was missing.
    async fn upsert_user(
        &self,
        appid: &str,
        openid: &str,
        unionid: Option<&str>,
        session_key_enc: &[u8],
        key_id: &str,
        now: i64,
    ) -> Result<UserRecord, StoreError>;

    /// Records a session under its key (derived from the SHA-256 of its token).
    async fn create_session(
        &self,
        token_hash: &[u8],
        user_id: i64,
        now: i64,
        expires_at: i64,
    ) -> Result<(), StoreError>;

    /// The unexpired session of `token_hash` (and, with `idle_ms > 0`, used within that long).
    async fn session_user(
        &self,
        token_hash: &[u8],
        now: i64,
        idle_ms: i64,
    ) -> Result<Option<SessionRecord>, StoreError>;

    /// Whether a session with this token hash exists at all (expired or idle ones included).
    async fn session_exists(&self, token_hash: &[u8]) -> Result<bool, StoreError>;

    /// Records that a session was used at `now`.
    async fn touch_session(&self, token_hash: &[u8], now: i64) -> Result<(), StoreError>;

    /// Deletes a session; true if it existed.
    async fn delete_session(&self, token_hash: &[u8]) -> Result<bool, StoreError>;

    /// Deletes every session of a user ("log out everywhere"); returns how many. With `audit`
    /// (an administrator's revocation) its row is written in the same transaction, with
    /// `{"revoked": n}` as its detail: both or neither.
    async fn delete_user_sessions(
        &self,
        user_id: i64,
        audit: Option<&AuditRecord>,
    ) -> Result<u64, StoreError>;

    /// The distinct data-key ids that sealed stored session_keys (`None` for the first
    /// format).
    async fn data_key_ids(&self) -> Result<Vec<Option<String>>, StoreError>;

    /// Up to `limit` users whose session_key is sealed in the first format.
    async fn legacy_sealed(&self, limit: i64) -> Result<Vec<LegacySealed>, StoreError>;

    /// Replaces a user's sealed session_key (re-sealed under `key_id`).
    async fn reseal(&self, user_id: i64, sealed: &[u8], key_id: &str) -> Result<(), StoreError>;

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

    /// Deletes expired sessions; returns how many.
    async fn purge_expired_sessions(&self, now: i64) -> Result<u64, StoreError>;

    /// Records logins — each user upserted, each session inserted — in one transaction, with
    /// one statement for the users and one for the sessions however many there are (the login
    /// writer batches concurrent logins: one commit, one fsync, for all of them). Answers in
    /// the order given.
    async fn record_logins(&self, logins: &[LoginWrite]) -> Result<Vec<LoginRecorded>, StoreError>;

    /// The user `openid` of `appid`.
    async fn user_by_openid(
        &self,
        appid: &str,
        openid: &str,
    ) -> Result<Option<UserRecord>, StoreError>;

    /// How many unexpired sessions `user_id` has.
    async fn count_sessions(&self, user_id: i64, now: i64) -> Result<i64, StoreError>;
}

/// The event log and the outbox (the push domain).
#[async_trait]
pub trait EventStore: Send + Sync {
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

    /// Frees the leases of undelivered events (deliveries abandoned at shutdown), so that the
    /// next instance need not wait for them to run out.
    async fn release_leases(&self, ids: &[i64]) -> Result<(), StoreError>;

    /// Records a successful delivery.
    async fn mark_delivered(&self, id: i64, now: i64) -> Result<(), StoreError>;

    /// Records a failed attempt and when to try again — or, with `dead_at`, that it is
    /// dead-lettered.
    async fn mark_failed(
        &self,
        id: i64,
        next_attempt_at: i64,
        error: &str,
        dead_at: Option<i64>,
    ) -> Result<(), StoreError>;

    /// Makes an undelivered event (dead-lettered or not) due now with a fresh attempt count;
    /// false if `appid` has no such event or it was delivered. With `audit` (an
    /// administrator's redelivery) its row is written in the same transaction when the event
    /// is requeued: both or neither.
    async fn redeliver(
        &self,
        appid: &str,
        id: i64,
        now: i64,
        audit: Option<&AuditRecord>,
    ) -> Result<bool, StoreError>;

    /// Webhook backlog: events due or waiting for a retry, the oldest of them, dead letters.
    async fn outbox_stats(&self) -> Result<OutboxStats, StoreError>;

    /// Events of `appid` with id > `after`, oldest first.
    async fn events_after(
        &self,
        appid: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<EventRecord>, StoreError>;
}

/// Managed apps, clients and platforms, their revisions, and the audit log (the admin domain).
#[async_trait]
pub trait RegistryStore: Send + Sync {
    /// The registry's revision: the number of changes to managed apps and clients so far.
    async fn registry_rev(&self) -> Result<i64, StoreError>;

    /// Managed apps (tombstones included) changed after revision `rev`, in revision order.
    async fn managed_apps_after(
        &self,
        rev: i64,
        limit: i64,
    ) -> Result<Vec<ManagedAppRecord>, StoreError>;

    /// Managed clients (tombstones included) changed after revision `rev`, in revision order.
    async fn managed_clients_after(
        &self,
        rev: i64,
        limit: i64,
    ) -> Result<Vec<ManagedClientRecord>, StoreError>;

    /// One managed client (or its tombstone).
    async fn managed_client(&self, name: &str) -> Result<Option<ManagedClientRecord>, StoreError>;

    /// One managed app (or its tombstone).
    async fn managed_app(&self, appid: &str) -> Result<Option<ManagedAppRecord>, StoreError>;

    /// Creates (`create`: unless a live one exists) or updates a managed app, at the next
    /// revision, which it returns; `None` when the condition failed. An update applies only to
    /// the live row still at revision `app.rev` (compare-and-set: two concurrent changes cannot
    /// silently undo each other). `audit` is written in the same transaction: no change
    /// without its audit row, no audit row without its change. A creation that revives a
    /// deleted app ends, in the same transaction, any session its users still have (an earlier
    /// registration's: taken by an instance that had not yet learned of the deletion).
    async fn put_managed_app(
        &self,
        app: &ManagedAppRecord,
        create: bool,
        audit: &AuditRecord,
    ) -> Result<Option<i64>, StoreError>;

    /// Turns a live managed app into a tombstone (its secrets erased) and ends every session of
    /// its users (their access tokens are then refused here too), with its `audit` row in the
    /// same transaction (its detail gains `sessions_ended`); the new revision, or `None` if
    /// there was none.
    async fn delete_managed_app(
        &self,
        appid: &str,
        now: i64,
        audit: &AuditRecord,
    ) -> Result<Option<i64>, StoreError>;

    /// Managed platforms changed after revision `rev` (tombstones included), in revision
    /// order, at most `limit`.
    async fn managed_platforms_after(
        &self,
        rev: i64,
        limit: i64,
    ) -> Result<Vec<ManagedPlatformRecord>, StoreError>;

    /// One managed platform (or its tombstone).
    async fn managed_platform(
        &self,
        component_appid: &str,
    ) -> Result<Option<ManagedPlatformRecord>, StoreError>;

    /// Like [`RegistryStore::put_managed_app`], for platforms.
    async fn put_managed_platform(
        &self,
        platform: &ManagedPlatformRecord,
        create: bool,
        audit: &AuditRecord,
    ) -> Result<Option<i64>, StoreError>;

    /// Like [`RegistryStore::delete_managed_app`], for platforms.
    async fn delete_managed_platform(
        &self,
        component_appid: &str,
        now: i64,
        audit: &AuditRecord,
    ) -> Result<Option<i64>, StoreError>;

    /// Replaces the sealed secrets of a managed app (`platform` false) or managed platform
    /// (`platform` true) with `sealed` (the same secrets under the newest data key) only if
    /// they are still `old`; whether they were. The registry revision does not move: nothing
    /// an instance serves changes.
    async fn reseal_managed(
        &self,
        platform: bool,
        appid: &str,
        old: &[u8],
        sealed: &[u8],
        key_id: &str,
    ) -> Result<bool, StoreError>;

    /// Like [`RegistryStore::put_managed_app`], for clients.
    async fn put_managed_client(
        &self,
        client: &ManagedClientRecord,
        create: bool,
        audit: &AuditRecord,
    ) -> Result<Option<i64>, StoreError>;

    /// Like [`RegistryStore::delete_managed_app`], for clients.
    async fn delete_managed_client(
        &self,
        name: &str,
        now: i64,
        audit: &AuditRecord,
    ) -> Result<Option<i64>, StoreError>;

    /// Appends to the administrators' audit log.
    async fn audit(&self, record: &AuditRecord) -> Result<(), StoreError>;

    /// Audit records with id > `after`, oldest first.
    async fn audit_after(&self, after: i64, limit: i64) -> Result<Vec<AuditRecord>, StoreError>;
}

/// Third-party platforms' tickets, refresh tokens and authorizations (the platforms domain).
#[async_trait]
pub trait PlatformStore: Send + Sync {
    /// A third-party platform's latest ticket, sealed.
    async fn platform_ticket(&self, component_appid: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Keeps a platform's latest ticket (sealed under the data key `key_id`), pushed by WeChat
    /// at `pushed_at` (its `CreateTime`, Unix seconds; 0 when unknown) — unless a ticket pushed
    /// later is kept already (a late retry of an older push): false then, nothing changed. A
    /// kept time ahead of `now` by more than the slack is not trusted and is replaced.
    async fn put_platform_ticket(
        &self,
        component_appid: &str,
        sealed: &[u8],
        key_id: &str,
        now: i64,
        pushed_at: i64,
    ) -> Result<bool, StoreError>;

    /// A merchant's sealed refresh token, if one is kept.
    async fn platform_refresh(
        &self,
        component_appid: &str,
        authorizer_appid: &str,
    ) -> Result<Option<Vec<u8>>, StoreError>;

    /// Creates or updates a merchant's authorization (a `None` refresh token keeps the stored
    /// one).
    async fn put_platform_authorizer(&self, rec: &PlatformAuthorizer) -> Result<(), StoreError>;

    /// Keeps a merchant's refresh token (sealed); a new merchant is marked authorized, a known
    /// one keeps its state (a token saved late does not revive a de-authorized merchant).
    async fn save_platform_refresh(
        &self,
        component_appid: &str,
        authorizer_appid: &str,
        sealed: &[u8],
        key_id: &str,
        now: i64,
    ) -> Result<(), StoreError>;

    /// Marks a merchant de-authorized and erases its refresh token, whatever its authorization
    /// time; false if unknown.
    async fn deauthorize_platform_authorizer(
        &self,
        component_appid: &str,
        authorizer_appid: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        self.deauthorize_platform_authorizer_if(
            component_appid,
            authorizer_appid,
            i64::MAX,
            i64::MAX,
            now,
        )
        .await
    }

    /// A platform's merchants, by appid.
    async fn platform_authorizers(
        &self,
        component_appid: &str,
    ) -> Result<Vec<PlatformAuthorizer>, StoreError>;

    /// What a reconciliation restores from WeChat's authorizer list, in one statement decided
    /// by the database: the merchant authorized, its refresh token `sealed` (under `key_id`),
    /// its authorization time raised to `auth_time` (WeChat's, seconds) — only if its row has
    /// not changed since `changed_before` (an event that came meanwhile knows better), or is
    /// new (then with no permission sets known). Its permission sets are left as they are.
    /// Whether anything was written.
    #[allow(clippy::too_many_arguments)]
    async fn restore_platform_authorizer_if(
        &self,
        component_appid: &str,
        authorizer_appid: &str,
        sealed: &[u8],
        key_id: &str,
        auth_time: i64,
        changed_before: i64,
        now: i64,
    ) -> Result<bool, StoreError>;

    /// How many merchants have the platform authorized now (a `COUNT`, not the rows).
    async fn count_authorized(&self, component_appid: &str) -> Result<i64, StoreError>;

    /// De-authorizes a merchant (its refresh token erased) only if its stored authorization is
    /// not newer than `auth_time_at_most` (Unix seconds, WeChat's `CreateTime` of the
    /// `unauthorized` event) and the row was last changed before `changed_before` (Unix ms);
    /// whether it did (false: unknown, or newer). A late or replayed event, or a
    /// reconciliation's stale listing, cannot erase a newer authorization.
    async fn deauthorize_platform_authorizer_if(
        &self,
        component_appid: &str,
        authorizer_appid: &str,
        auth_time_at_most: i64,
        changed_before: i64,
        now: i64,
    ) -> Result<bool, StoreError>;

    /// Merchants' authorizations (of every platform) changed after registry revision `rev`,
    /// in revision order, at most `limit`.
    async fn platform_authorizers_after(
        &self,
        rev: i64,
        limit: i64,
    ) -> Result<Vec<PlatformAuthorizer>, StoreError>;

    /// Every platform's authorization of the merchant `authorizer_appid`, by component appid.
    async fn authorizations_of(
        &self,
        authorizer_appid: &str,
    ) -> Result<Vec<PlatformAuthorizer>, StoreError>;

    /// Replaces a platform's sealed ticket with `sealed` (the same ticket under the newest data
    /// key) only if it is still `old`; whether it was.
    async fn reseal_platform_ticket(
        &self,
        component_appid: &str,
        old: &[u8],
        sealed: &[u8],
        key_id: &str,
    ) -> Result<bool, StoreError>;

    /// Replaces a merchant's sealed refresh token with `sealed` (the same token under the
    /// newest data key) only if it is still `old`; whether it was.
    async fn reseal_platform_refresh(
        &self,
        component_appid: &str,
        authorizer_appid: &str,
        old: &[u8],
        sealed: &[u8],
        key_id: &str,
    ) -> Result<bool, StoreError>;
}

/// The access-token signing keys (the keys domain).
#[async_trait]
pub trait KeyStore: Send + Sync {
    /// The access-token signing keys (published ones: current, next and retired), oldest
    /// first.
    async fn signing_keys(&self) -> Result<Vec<KeyRecord>, StoreError>;

    /// Adds a signing key at the next registry revision; every key still signing is retired
    /// as of the new key's `not_before`. Nothing happens (false) when `guard` says another
    /// instance got there first — so a fleet's instances starting (or rotating) together add
    /// one key, not one each. An administrator's rotation passes its `audit` row, written in
    /// the same transaction.
    async fn add_signing_key(
        &self,
        key: &KeyRecord,
        guard: KeyGuard,
        audit: Option<&AuditRecord>,
    ) -> Result<bool, StoreError>;

    /// Deletes the key `kid` (`Some`: an administrator's removal; a key that had not started
    /// signing at `now` un-retires the keys it was to replace), or (`None`) every key retired
    /// before `retired_before`; how many. A deletion takes the next registry revision; an
    /// administrator's removal passes its `audit` row, written in the same transaction.
    async fn delete_signing_keys(
        &self,
        kid: Option<&str>,
        now: i64,
        retired_before: i64,
        audit: Option<&AuditRecord>,
    ) -> Result<u64, StoreError>;

    /// Replaces a signing key's sealed private key (re-sealed under the data key `key_id`).
    async fn reseal_signing_key(
        &self,
        kid: &str,
        sealed: &[u8],
        key_id: &str,
    ) -> Result<(), StoreError>;

    /// Makes keys waiting to sign (published ahead) sign from `now`, retiring the keys they
    /// were to replace now; how many.
    async fn promote_signing_keys(&self, now: i64) -> Result<u64, StoreError>;
}

/// A WeChat Pay order placed through the service (the payments domain).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayOrderRecord {
    /// The merchant.
    pub mchid: String,
    /// The merchant's order number (unique per merchant).
    pub out_trade_no: String,
    /// The app the order was placed for.
    pub appid: String,
    /// What the user sees.
    pub description: String,
    /// The total in fen.
    pub amount: i64,
    /// The payer.
    pub openid: String,
    /// Echoed by WeChat.
    pub attach: Option<String>,
    /// When the order stops being payable (RFC 3339).
    pub time_expire: Option<String>,
    /// `PENDING` (stored, no prepay yet), `NOTPAY`, `SUCCESS`, `CLOSED`.
    pub state: String,
    /// WeChat's prepay id, once known.
    pub prepay_id: Option<String>,
    /// WeChat's transaction id, once paid.
    pub transaction_id: Option<String>,
    /// WeChat's `success_time` (RFC 3339), once paid.
    pub success_time: Option<String>,
    /// Unix ms when this service learnt of the payment.
    pub paid_at: Option<i64>,
    /// Fen refunded so far.
    pub refunded: i64,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
    /// When WeChat made the stored prepay (Unix ms, the payments clock): valid two hours.
    pub prepay_at: Option<i64>,
    /// When the query fallback next asks WeChat about it (none once paid or closed).
    pub next_query_at: Option<i64>,
    /// Fen promised to refunds not closed (never above `amount`).
    pub refund_reserved: i64,
    /// The state it was in when it was marked paid (`CLOSED`: paid after closing here).
    pub paid_from: Option<String>,
}

/// A verified, decrypted notification as the inbox keeps it.
#[derive(Debug, Clone)]
pub struct PayNotificationRecord {
    /// The merchant it was sent for.
    pub mchid: String,
    /// WeChat's notification id (the key duplicates share).
    pub notification_id: String,
    /// `TRANSACTION.SUCCESS`, `REFUND.SUCCESS`, …
    pub event_type: String,
    /// The `out_trade_no` (or `out_refund_no`) it is about, when it names one.
    pub business_no: Option<String>,
    /// The `Wechatpay-Serial` that verified it.
    pub serial: String,
    /// The envelope as received (raw body; the resource still encrypted).
    pub envelope: String,
    /// The decrypted resource (JSON).
    pub resource: String,
    /// Unix ms.
    pub received_at: i64,
}

/// An order's state change, guarded: applied only while the order is in none of `unless`.
#[derive(Debug, Clone)]
pub struct PayTransition<'a> {
    /// The merchant.
    pub mchid: &'a str,
    /// The order.
    pub out_trade_no: &'a str,
    /// States the order must not be in (e.g. already `SUCCESS`).
    pub unless: &'a [&'a str],
    /// The new state.
    pub to: &'a str,
    /// WeChat's transaction id.
    pub transaction_id: Option<&'a str>,
    /// WeChat's `success_time`.
    pub success_time: Option<&'a str>,
    /// Unix ms of the payment, as learnt here.
    pub paid_at: Option<i64>,
    /// An alert appended too when the order was in the given state before the change (e.g.
    /// `CLOSED`: paid after it was closed here).
    pub alert: Option<(&'a str, NewEvent<'a>)>,
}

/// An event to append to an app's log (deduplicated by `(appid, dedup_key)`).
#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    /// The app whose log it goes to.
    pub appid: &'a str,
    /// The de-duplication key.
    pub dedup_key: &'a str,
    /// The event's type.
    pub kind: &'a str,
    /// The payload (JSON).
    pub payload: &'a str,
    /// When the outbox first tries it ([`NEVER`]: no webhook).
    pub next_attempt_at: i64,
}

/// What applying a notification did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayApplied {
    /// The order's state changed (a transition was given and its guard held).
    pub changed: bool,
    /// The event appended, when one was new: its id.
    pub event: Option<i64>,
    /// The transition's alert appended, when its state matched and it was new: its id.
    pub alert: Option<i64>,
}

/// Payments: orders and the notification inbox (the payments domain).
#[async_trait]
pub trait PayStore: Send + Sync {
    /// Stores `order` (with its `next_query_at`) unless one with its (mchid, out_trade_no)
    /// exists; returns the stored order and whether it is the one given.
    async fn insert_pay_order(
        &self,
        order: &PayOrderRecord,
    ) -> Result<(PayOrderRecord, bool), StoreError>;

    /// The order (mchid, out_trade_no), if stored.
    async fn pay_order(
        &self,
        mchid: &str,
        out_trade_no: &str,
    ) -> Result<Option<PayOrderRecord>, StoreError>;

    /// Records the prepay id made at `now`: kept if one is there already made at or after
    /// `renew_before` (replaced if older: WeChat made a fresh one; `prepay_at` moves only when
    /// the id changes). A `PENDING` order becomes `NOTPAY`. Returns the order as stored.
    async fn set_pay_prepay(
        &self,
        mchid: &str,
        out_trade_no: &str,
        prepay_id: &str,
        now: i64,
        renew_before: i64,
    ) -> Result<Option<PayOrderRecord>, StoreError>;

    /// `PENDING`/`NOTPAY` → `CLOSED` (no further queries); whether it changed.
    async fn close_pay_order(
        &self,
        mchid: &str,
        out_trade_no: &str,
        now: i64,
    ) -> Result<bool, StoreError>;

    /// Forgets an order WeChat definitely refused to create (still `PENDING`, no prepay): its
    /// `out_trade_no` was never taken at WeChat, so a corrected request may use it. Whether a
    /// row went.
    async fn forget_refused_pay_order(
        &self,
        mchid: &str,
        out_trade_no: &str,
    ) -> Result<bool, StoreError>;

    /// Writes a notification to the inbox unless (mchid, notification_id) is there (then its
    /// delivery count goes up). Returns its inbox id, its outcome so far (`None`: not
    /// applied yet) and whether it is new.
    async fn insert_pay_notification(
        &self,
        n: &PayNotificationRecord,
    ) -> Result<(i64, Option<String>, bool), StoreError>;

    /// In one transaction: the transition (if any, guarded; a paid order is queried no more),
    /// the event (if any: only when the transition changed the order, or when there is no
    /// transition), the transition's alert (when the order was in its state), and the inbox
    /// row's outcome (`outcome`, or `no_change` when a transition's guard failed) when
    /// `inbox_id` is given (a change found by a query has none).
    async fn apply_pay_notification(
        &self,
        inbox_id: Option<i64>,
        outcome: &str,
        transition: Option<&PayTransition<'_>>,
        event: Option<&NewEvent<'_>>,
        now: i64,
    ) -> Result<PayApplied, StoreError>;

    /// Inbox rows not applied yet (a crash between storing and applying), received before
    /// `before`, and rows kept `deferred` last tried before `deferred_before`, oldest first.
    async fn unapplied_pay_notifications(
        &self,
        before: i64,
        deferred_before: i64,
        limit: i64,
    ) -> Result<Vec<(i64, PayNotificationRecord)>, StoreError>;

    /// The inbox's outcome of a notification (`Some(None)`: stored, not applied).
    async fn pay_notification_outcome(
        &self,
        mchid: &str,
        notification_id: &str,
    ) -> Result<Option<Option<String>>, StoreError>;
}

/// What every storage backend provides: each domain's queries (one trait each, so a domain's
/// queries read in one place) and the service's own (metadata, health). Timestamps are Unix
/// milliseconds.
#[async_trait]
pub trait Store:
    SessionStore
    + EventStore
    + RegistryStore
    + PlatformStore
    + KeyStore
    + PayStore
    + PayFlowStore
    + Send
    + Sync
    + std::fmt::Debug
{
    /// The value under `key`, if any.
    async fn meta_get(&self, key: &str) -> Result<Option<String>, StoreError>;

    /// Whether any user or push event is stored.
    async fn has_data(&self) -> Result<bool, StoreError>;

    /// The value under `key`, storing `default` first if absent (first writer wins).
    async fn meta_get_or_insert(&self, key: &str, default: &str) -> Result<String, StoreError>;

    /// Checks the connection.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Whether a commit is on disk before it returns (SQLite `synchronous=FULL` or stricter;
    /// Postgres `synchronous_commit` not `off`): what "acknowledged means durable" rests on.
    async fn durable_commits(&self) -> Result<bool, StoreError>;

    /// `sqlite` or `postgres`.
    fn kind(&self) -> &'static str;

    /// Sets `key` to `new` only if it is `expected` (absent: `None`); whether it did. A claim
    /// the fleet agrees on without Redis (e.g. which instance runs a nightly job).
    async fn meta_cas(
        &self,
        key: &str,
        expected: Option<&str>,
        new: &str,
    ) -> Result<bool, StoreError>;
}

/// Opens the database named by `url` and applies pending migrations.
///
/// # Errors
/// Unsupported scheme, unreachable database, or a failed migration.
pub async fn connect(url: &str, options: &StoreOptions) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PgStore::connect(url, options).await?))
    } else if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::connect(url, options).await?))
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

/// A key of the keyring as the database stores it.
#[derive(Clone)]
pub struct KeyRecord {
    /// RFC 7638 thumbprint of the public key.
    pub kid: String,
    /// The PKCS#8 private key, sealed with the data key (bound to the kid).
    pub sealed: Vec<u8>,
    /// The data key that sealed it.
    pub key_id: String,
    /// The public key as a JWK (JSON).
    pub public_jwk: String,
    /// Unix ms.
    pub created_at: i64,
    /// Signs from then (Unix ms).
    pub not_before: i64,
    /// Stopped signing then (Unix ms); published until its tokens expire.
    pub retired_at: Option<i64>,
}

impl std::fmt::Debug for KeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRecord")
            .field("kid", &self.kid)
            .field("created_at", &self.created_at)
            .field("not_before", &self.not_before)
            .field("retired_at", &self.retired_at)
            .finish_non_exhaustive()
    }
}
