//! The SQL implementations. SQLite and PostgreSQL run the same statements (numbered `$N`
//! parameters, `ON CONFLICT … DO UPDATE`, `RETURNING`); only the migrations differ, so one
//! macro generates both implementations from one definition.

use std::borrow::Cow;
use std::str::FromStr;

use async_trait::async_trait;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::Row;

use super::KeyGuard;
use super::KeyRecord;
use super::{
    AuditRecord, EventRecord, LegacySealed, LoginRecorded, LoginWrite, ManagedAppRecord,
    ManagedClientRecord, ManagedPlatformRecord, OutboxStats, PlatformAuthorizer, SessionRecord,
    Store, StoreError, StoreOptions, UserRecord,
};

/// Migrations compiled into the binary.
#[derive(Debug)]
struct Embedded(&'static [(i64, &'static str, &'static str)]);

impl<'s> MigrationSource<'s> for Embedded {
    fn resolve(
        self,
    ) -> futures_core_box::BoxFuture<'s, Result<Vec<Migration>, sqlx::error::BoxDynError>> {
        Box::pin(async move {
            Ok(self
                .0
                .iter()
                .map(|(v, d, sql)| {
                    Migration::new(
                        *v,
                        Cow::Borrowed(d),
                        MigrationType::Simple,
                        Cow::Borrowed(sql),
                        false,
                    )
                })
                .collect())
        })
    }
}

mod futures_core_box {
    pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;
}

const SQLITE_MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../../migrations/sqlite/0001_init.sql"),
    ),
    (
        2,
        "push events",
        include_str!("../../migrations/sqlite/0002_push_events.sql"),
    ),
    (
        3,
        "hardening",
        include_str!("../../migrations/sqlite/0003_hardening.sql"),
    ),
    (
        4,
        "registry",
        include_str!("../../migrations/sqlite/0004_registry.sql"),
    ),
    (
        5,
        "signing keys",
        include_str!("../../migrations/sqlite/0005_signing_keys.sql"),
    ),
    (
        6,
        "platforms",
        include_str!("../../migrations/sqlite/0006_platforms.sql"),
    ),
    (
        7,
        "managed platforms",
        include_str!("../../migrations/sqlite/0007_managed_platforms.sql"),
    ),
    (
        8,
        "ticket order",
        include_str!("../../migrations/sqlite/0008_ticket_order.sql"),
    ),
];
const PG_MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../../migrations/postgres/0001_init.sql"),
    ),
    (
        2,
        "push events",
        include_str!("../../migrations/postgres/0002_push_events.sql"),
    ),
    (
        3,
        "hardening",
        include_str!("../../migrations/postgres/0003_hardening.sql"),
    ),
    (
        4,
        "registry",
        include_str!("../../migrations/postgres/0004_registry.sql"),
    ),
    (
        5,
        "signing keys",
        include_str!("../../migrations/postgres/0005_signing_keys.sql"),
    ),
    (
        6,
        "platforms",
        include_str!("../../migrations/postgres/0006_platforms.sql"),
    ),
    (
        7,
        "managed platforms",
        include_str!("../../migrations/postgres/0007_managed_platforms.sql"),
    ),
    (
        8,
        "ticket order",
        include_str!("../../migrations/postgres/0008_ticket_order.sql"),
    ),
];

const EVENT_COLUMNS: &str =
    "id, appid, kind, payload, created_at, delivered_at, attempts, dead_at, last_error";

fn event_from<R: Row>(row: &R) -> Result<EventRecord, sqlx::Error>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> i32: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<i64>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<String>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    Ok(EventRecord {
        id: row.try_get("id")?,
        appid: row.try_get("appid")?,
        kind: row.try_get("kind")?,
        payload: row.try_get("payload")?,
        created_at: row.try_get("created_at")?,
        delivered_at: row.try_get("delivered_at")?,
        attempts: row.try_get::<i32, _>("attempts")? as u32,
        dead_at: row.try_get("dead_at")?,
        last_error: row.try_get("last_error")?,
    })
}

/// Applies the embedded `migrations` that `conn` has not seen yet.
async fn migrate<'a, A>(
    migrations: &'static [(i64, &'static str, &'static str)],
    conn: A,
) -> Result<(), sqlx::Error>
where
    A: sqlx::Acquire<'a>,
    <A::Connection as std::ops::Deref>::Target: sqlx::migrate::Migrate,
{
    let as_error = |e: sqlx::migrate::MigrateError| sqlx::Error::Migrate(Box::new(e));
    let mut migrator = Migrator::new(Embedded(migrations))
        .await
        .map_err(as_error)?;
    // An instance of the previous release starts against a database a newer one migrated (a
    // rolling upgrade, a rollback): migrations only add, so what it knows is still there.
    migrator.set_ignore_missing(true);
    migrator.run(conn).await.map_err(as_error)
}

const MANAGED_APP_COLUMNS: &str =
    "appid, settings, sealed, key_id, enabled, deleted, rev, created_at, updated_at";
/// Takes the next registry revision (inside the transaction of the change it numbers: the row
/// lock orders commits by revision).
const NEXT_REV: &str = "UPDATE registry SET rev = rev + 1 WHERE id = 1 RETURNING rev";

const MANAGED_PLATFORM_COLUMNS: &str =
    "component_appid AS appid, settings, sealed, key_id, enabled, deleted, rev, created_at, updated_at";
const AUTHORIZER_COLUMNS: &str = "component_appid, authorizer_appid, refresh_sealed, key_id, authorized, func_ids, auth_time, updated_at, rev";

fn authorizer_from<R: Row>(r: &R) -> Result<PlatformAuthorizer, sqlx::Error>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<String>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<Vec<u8>>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    Ok(PlatformAuthorizer {
        component_appid: r.try_get("component_appid")?,
        authorizer_appid: r.try_get("authorizer_appid")?,
        refresh_sealed: r.try_get("refresh_sealed")?,
        key_id: r.try_get("key_id")?,
        authorized: r.try_get::<i64, _>("authorized")? != 0,
        func_ids: r.try_get("func_ids")?,
        auth_time: r.try_get("auth_time")?,
        updated_at: r.try_get("updated_at")?,
        rev: r.try_get("rev")?,
    })
}

const MANAGED_CLIENT_COLUMNS: &str =
    "name, key_sha256, apps, scopes, enabled, deleted, rev, created_at, updated_at";

fn managed_app_from<R: Row>(row: &R) -> Result<ManagedAppRecord, sqlx::Error>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<String>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<Vec<u8>>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    Ok(ManagedAppRecord {
        appid: row.try_get("appid")?,
        settings: row.try_get("settings")?,
        sealed: row.try_get("sealed")?,
        key_id: row.try_get("key_id")?,
        enabled: row.try_get::<i64, _>("enabled")? != 0,
        deleted: row.try_get::<i64, _>("deleted")? != 0,
        rev: row.try_get("rev")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn managed_client_from<R: Row>(row: &R) -> Result<ManagedClientRecord, sqlx::Error>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<Vec<u8>>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    Ok(ManagedClientRecord {
        name: row.try_get("name")?,
        key_sha256: row.try_get("key_sha256")?,
        apps: row.try_get("apps")?,
        scopes: row.try_get("scopes")?,
        enabled: row.try_get::<i64, _>("enabled")? != 0,
        deleted: row.try_get::<i64, _>("deleted")? != 0,
        rev: row.try_get("rev")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

const USER_COLUMNS: &str = "id, appid, openid, unionid, session_key_enc, phone_number, pure_phone_number, country_code, created_at";

fn user_from<R: Row>(row: &R) -> Result<UserRecord, sqlx::Error>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<String>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Vec<u8>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    Ok(UserRecord {
        id: row.try_get("id")?,
        appid: row.try_get("appid")?,
        openid: row.try_get("openid")?,
        unionid: row.try_get("unionid")?,
        session_key_enc: row.try_get("session_key_enc")?,
        phone_number: row.try_get("phone_number")?,
        pure_phone_number: row.try_get("pure_phone_number")?,
        country_code: row.try_get("country_code")?,
        created_at: row.try_get("created_at")?,
    })
}

/// Writes an audit row (on a transaction: with the change it records).
macro_rules! insert_audit {
    ($conn:expr, $r:expr) => {
        sqlx::query("INSERT INTO admin_audit (at, admin, action, target, source, detail) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind($r.at)
            .bind(&$r.admin)
            .bind(&$r.action)
            .bind(&$r.target)
            .bind(&$r.source)
            .bind(&$r.detail)
            .execute($conn)
            .await?
    };
}

macro_rules! sql_store {
    ($name:ident, $pool:ty, $kind:literal) => {
        #[async_trait]
        impl Store for $name {
            async fn upsert_user(&self, appid: &str, openid: &str, unionid: Option<&str>, session_key_enc: &[u8], key_id: &str, now: i64) -> Result<UserRecord, StoreError> {
                let sql = format!(
                    "INSERT INTO users (appid, openid, unionid, session_key_enc, key_id, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $6) \
                     ON CONFLICT (appid, openid) DO UPDATE SET \
                       unionid = COALESCE(excluded.unionid, users.unionid), \
                       session_key_enc = excluded.session_key_enc, \
                       key_id = excluded.key_id, \
                       updated_at = excluded.updated_at \
                     RETURNING {USER_COLUMNS}"
                );
                let row = sqlx::query(&sql)
                    .bind(appid)
                    .bind(openid)
                    .bind(unionid)
                    .bind(session_key_enc)
                    .bind(key_id)
                    .bind(now)
                    .fetch_one(&self.pool)
                    .await?;
                Ok(user_from(&row)?)
            }

            async fn create_session(&self, token_hash: &[u8], user_id: i64, now: i64, expires_at: i64) -> Result<(), StoreError> {
                sqlx::query("INSERT INTO sessions (token_hash, user_id, created_at, expires_at, last_seen_at) VALUES ($1, $2, $3, $4, $3)")
                    .bind(token_hash)
                    .bind(user_id)
                    .bind(now)
                    .bind(expires_at)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn session_user(&self, token_hash: &[u8], now: i64, idle_ms: i64) -> Result<Option<SessionRecord>, StoreError> {
                let sql = format!(
                    "SELECT {}, s.expires_at AS session_expires_at, s.last_seen_at AS session_last_seen_at \
                     FROM sessions s JOIN users u ON u.id = s.user_id \
                     WHERE s.token_hash = $1 AND s.expires_at > $2 AND ($3 = 0 OR s.last_seen_at > $2 - $3)",
                    USER_COLUMNS.split(", ").map(|c| format!("u.{c}")).collect::<Vec<_>>().join(", ")
                );
                let row = sqlx::query(&sql).bind(token_hash).bind(now).bind(idle_ms).fetch_optional(&self.pool).await?;
                match row {
                    Some(r) => Ok(Some(SessionRecord {
                        user: user_from(&r)?,
                        expires_at: r.try_get("session_expires_at")?,
                        last_seen_at: r.try_get("session_last_seen_at")?,
                    })),
                    None => Ok(None),
                }
            }

            async fn session_exists(&self, token_hash: &[u8]) -> Result<bool, StoreError> {
                let row = sqlx::query("SELECT 1 AS one FROM sessions WHERE token_hash = $1")
                    .bind(token_hash)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.is_some())
            }

            async fn touch_session(&self, token_hash: &[u8], now: i64) -> Result<(), StoreError> {
                sqlx::query("UPDATE sessions SET last_seen_at = $1 WHERE token_hash = $2 AND last_seen_at < $1")
                    .bind(now)
                    .bind(token_hash)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn delete_session(&self, token_hash: &[u8]) -> Result<bool, StoreError> {
                let r = sqlx::query("DELETE FROM sessions WHERE token_hash = $1").bind(token_hash).execute(&self.pool).await?;
                Ok(r.rows_affected() > 0)
            }

            async fn delete_user_sessions(&self, user_id: i64, audit: Option<&AuditRecord>) -> Result<u64, StoreError> {
                let mut tx = self.pool.begin().await?;
                let r = sqlx::query("DELETE FROM sessions WHERE user_id = $1").bind(user_id).execute(&mut *tx).await?;
                if let Some(a) = audit {
                    let a = AuditRecord { detail: serde_json::json!({"revoked": r.rows_affected()}).to_string(), ..a.clone() };
                    insert_audit!(&mut *tx, a);
                }
                tx.commit().await?;
                Ok(r.rows_affected())
            }

            async fn data_key_ids(&self) -> Result<Vec<Option<String>>, StoreError> {
                let rows = sqlx::query("SELECT DISTINCT key_id FROM users UNION SELECT DISTINCT key_id FROM managed_apps WHERE key_id IS NOT NULL UNION SELECT DISTINCT key_id FROM signing_keys UNION SELECT DISTINCT key_id FROM platform_tickets UNION SELECT DISTINCT key_id FROM platform_authorizers WHERE key_id IS NOT NULL UNION SELECT DISTINCT key_id FROM managed_platforms WHERE key_id IS NOT NULL").fetch_all(&self.pool).await?;
                rows.iter().map(|r| Ok(r.try_get("key_id")?)).collect()
            }

            async fn legacy_sealed(&self, limit: i64) -> Result<Vec<LegacySealed>, StoreError> {
                let rows = sqlx::query("SELECT id, appid, openid, session_key_enc FROM users WHERE key_id IS NULL ORDER BY id LIMIT $1")
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter()
                    .map(|r| {
                        Ok(LegacySealed {
                            id: r.try_get("id")?,
                            appid: r.try_get("appid")?,
                            openid: r.try_get("openid")?,
                            session_key_enc: r.try_get("session_key_enc")?,
                        })
                    })
                    .collect()
            }

            async fn reseal(&self, user_id: i64, sealed: &[u8], key_id: &str) -> Result<(), StoreError> {
                sqlx::query("UPDATE users SET session_key_enc = $1, key_id = $2 WHERE id = $3")
                    .bind(sealed)
                    .bind(key_id)
                    .bind(user_id)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn meta_get(&self, key: &str) -> Result<Option<String>, StoreError> {
                let row = sqlx::query("SELECT value FROM meta WHERE key = $1").bind(key).fetch_optional(&self.pool).await?;
                match row {
                    Some(r) => Ok(Some(r.try_get("value")?)),
                    None => Ok(None),
                }
            }

            async fn has_data(&self) -> Result<bool, StoreError> {
                let row = sqlx::query(
                    "SELECT CAST(CASE WHEN EXISTS (SELECT 1 FROM users) OR EXISTS (SELECT 1 FROM push_events) \
                     THEN 1 ELSE 0 END AS BIGINT) AS any_data",
                )
                .fetch_one(&self.pool)
                .await?;
                Ok(row.try_get::<i64, _>("any_data")? == 1)
            }

            async fn set_phone(&self, user_id: i64, phone: &str, pure: &str, country_code: &str, now: i64) -> Result<(), StoreError> {
                sqlx::query("UPDATE users SET phone_number = $1, pure_phone_number = $2, country_code = $3, updated_at = $4 WHERE id = $5")
                    .bind(phone)
                    .bind(pure)
                    .bind(country_code)
                    .bind(now)
                    .bind(user_id)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn users_by_unionid(&self, unionid: &str) -> Result<Vec<(String, String)>, StoreError> {
                let rows = sqlx::query("SELECT appid, openid FROM users WHERE unionid = $1 ORDER BY appid")
                    .bind(unionid)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(|r| Ok((r.try_get("appid")?, r.try_get("openid")?))).collect()
            }

            async fn meta_get_or_insert(&self, key: &str, default: &str) -> Result<String, StoreError> {
                sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
                    .bind(key)
                    .bind(default)
                    .execute(&self.pool)
                    .await?;
                let row = sqlx::query("SELECT value FROM meta WHERE key = $1").bind(key).fetch_one(&self.pool).await?;
                Ok(row.try_get("value")?)
            }

            async fn purge_expired_sessions(&self, now: i64) -> Result<u64, StoreError> {
                let r = sqlx::query("DELETE FROM sessions WHERE expires_at <= $1").bind(now).execute(&self.pool).await?;
                Ok(r.rows_affected())
            }

            async fn ping(&self) -> Result<(), StoreError> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }

            fn kind(&self) -> &'static str {
                $kind
            }

            async fn durable_commits(&self) -> Result<bool, StoreError> {
                if $kind == "sqlite" {
                    let row = sqlx::query("PRAGMA synchronous").fetch_one(&self.pool).await?;
                    // 2 = FULL, 3 = EXTRA.
                    Ok(row.try_get::<i64, _>(0)? >= 2)
                } else {
                    let row = sqlx::query("SHOW synchronous_commit").fetch_one(&self.pool).await?;
                    Ok(row.try_get::<String, _>(0)? != "off")
                }
            }

            async fn insert_event(&self, appid: &str, dedup_key: &str, kind: &str, payload: &str, now: i64, next_attempt_at: i64) -> Result<(i64, bool), StoreError> {
                let row = sqlx::query(
                    "INSERT INTO push_events (appid, dedup_key, kind, payload, created_at, next_attempt_at) VALUES ($1, $2, $3, $4, $5, $6) \
                     ON CONFLICT (appid, dedup_key) DO NOTHING RETURNING id",
                )
                .bind(appid)
                .bind(dedup_key)
                .bind(kind)
                .bind(payload)
                .bind(now)
                .bind(next_attempt_at)
                .fetch_optional(&self.pool)
                .await?;
                if let Some(r) = row {
                    return Ok((r.try_get("id")?, true));
                }
                let r = sqlx::query("SELECT id FROM push_events WHERE appid = $1 AND dedup_key = $2")
                    .bind(appid)
                    .bind(dedup_key)
                    .fetch_one(&self.pool)
                    .await?;
                Ok((r.try_get("id")?, false))
            }

            async fn claim_due_events(&self, now: i64, lease_until: i64, limit: i64) -> Result<Vec<EventRecord>, StoreError> {
                let ids = sqlx::query(
                    "SELECT id FROM push_events WHERE delivered_at IS NULL AND dead_at IS NULL AND next_attempt_at <= $1 \
                     AND (lease_until IS NULL OR lease_until < $1) ORDER BY id LIMIT $2",
                )
                .bind(now)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                let mut claimed = Vec::with_capacity(ids.len());
                for r in ids {
                    let id: i64 = r.try_get("id")?;
                    // Conditional update: of several instances racing for one event, one wins.
                    let sql = format!(
                        "UPDATE push_events SET lease_until = $1 WHERE id = $2 AND delivered_at IS NULL AND dead_at IS NULL \
                         AND (lease_until IS NULL OR lease_until < $3) RETURNING {EVENT_COLUMNS}"
                    );
                    if let Some(row) = sqlx::query(&sql).bind(lease_until).bind(id).bind(now).fetch_optional(&self.pool).await? {
                        claimed.push(event_from(&row)?);
                    }
                }
                Ok(claimed)
            }

            async fn release_leases(&self, ids: &[i64]) -> Result<(), StoreError> {
                for id in ids {
                    sqlx::query("UPDATE push_events SET lease_until = NULL WHERE id = $1 AND delivered_at IS NULL")
                        .bind(id)
                        .execute(&self.pool)
                        .await?;
                }
                Ok(())
            }

            async fn mark_delivered(&self, id: i64, now: i64) -> Result<(), StoreError> {
                sqlx::query("UPDATE push_events SET delivered_at = $1, attempts = attempts + 1, lease_until = NULL, last_error = NULL WHERE id = $2")
                    .bind(now)
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn mark_failed(&self, id: i64, next_attempt_at: i64, error: &str, dead_at: Option<i64>) -> Result<(), StoreError> {
                sqlx::query("UPDATE push_events SET attempts = attempts + 1, next_attempt_at = $1, lease_until = NULL, last_error = $2, dead_at = $3 WHERE id = $4")
                    .bind(next_attempt_at)
                    .bind(error)
                    .bind(dead_at)
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn redeliver(&self, appid: &str, id: i64, now: i64, audit: Option<&AuditRecord>) -> Result<bool, StoreError> {
                let mut tx = self.pool.begin().await?;
                let r = sqlx::query(
                    "UPDATE push_events SET dead_at = NULL, attempts = 0, next_attempt_at = $1, lease_until = NULL \
                     WHERE id = $2 AND appid = $3 AND delivered_at IS NULL",
                )
                .bind(now)
                .bind(id)
                .bind(appid)
                .execute(&mut *tx)
                .await?;
                if r.rows_affected() == 0 {
                    // Dropped, the transaction rolls back: a 404 stays a 404.
                    return Ok(false);
                }
                if let Some(a) = audit {
                    insert_audit!(&mut *tx, a);
                }
                tx.commit().await?;
                Ok(true)
            }

            async fn outbox_stats(&self) -> Result<OutboxStats, StoreError> {
                let never = super::NEVER;
                let row = sqlx::query(
                    "SELECT \
                       (SELECT COUNT(*) FROM push_events WHERE delivered_at IS NULL AND dead_at IS NULL AND next_attempt_at < $1) AS backlog, \
                       (SELECT MIN(created_at) FROM push_events WHERE delivered_at IS NULL AND dead_at IS NULL AND next_attempt_at < $1) AS oldest, \
                       (SELECT COUNT(*) FROM push_events WHERE dead_at IS NOT NULL AND delivered_at IS NULL) AS dead",
                )
                .bind(never)
                .fetch_one(&self.pool)
                .await?;
                Ok(OutboxStats {
                    backlog: row.try_get("backlog")?,
                    oldest_created_at: row.try_get("oldest")?,
                    dead: row.try_get("dead")?,
                })
            }

            async fn events_after(&self, appid: &str, after: i64, limit: i64) -> Result<Vec<EventRecord>, StoreError> {
                let sql = format!("SELECT {EVENT_COLUMNS} FROM push_events WHERE appid = $1 AND id > $2 ORDER BY id LIMIT $3");
                let rows = sqlx::query(&sql).bind(appid).bind(after).bind(limit).fetch_all(&self.pool).await?;
                rows.iter().map(|r| Ok(event_from(r)?)).collect()
            }

            async fn record_logins(&self, logins: &[LoginWrite]) -> Result<Vec<LoginRecorded>, StoreError> {
                self.record_login_batch(logins).await
            }

            async fn registry_rev(&self) -> Result<i64, StoreError> {
                let row = sqlx::query("SELECT rev FROM registry WHERE id = 1").fetch_one(&self.pool).await?;
                Ok(row.try_get("rev")?)
            }

            async fn managed_apps_after(&self, rev: i64, limit: i64) -> Result<Vec<ManagedAppRecord>, StoreError> {
                let sql = format!("SELECT {MANAGED_APP_COLUMNS} FROM managed_apps WHERE rev > $1 ORDER BY rev LIMIT $2");
                let rows = sqlx::query(&sql).bind(rev).bind(limit).fetch_all(&self.pool).await?;
                rows.iter().map(|r| Ok(managed_app_from(r)?)).collect()
            }

            async fn managed_clients_after(&self, rev: i64, limit: i64) -> Result<Vec<ManagedClientRecord>, StoreError> {
                let sql = format!("SELECT {MANAGED_CLIENT_COLUMNS} FROM managed_clients WHERE rev > $1 ORDER BY rev LIMIT $2");
                let rows = sqlx::query(&sql).bind(rev).bind(limit).fetch_all(&self.pool).await?;
                rows.iter().map(|r| Ok(managed_client_from(r)?)).collect()
            }

            async fn managed_client(&self, name: &str) -> Result<Option<ManagedClientRecord>, StoreError> {
                let sql = format!("SELECT {MANAGED_CLIENT_COLUMNS} FROM managed_clients WHERE name = $1");
                let row = sqlx::query(&sql).bind(name).fetch_optional(&self.pool).await?;
                row.map(|r| Ok(managed_client_from(&r)?)).transpose()
            }

            async fn signing_keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
                let rows = sqlx::query("SELECT kid, sealed, key_id, public_jwk, created_at, not_before, retired_at FROM signing_keys ORDER BY created_at, kid")
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter()
                    .map(|r| {
                        Ok(KeyRecord {
                            kid: r.try_get("kid")?,
                            sealed: r.try_get("sealed")?,
                            key_id: r.try_get("key_id")?,
                            public_jwk: r.try_get("public_jwk")?,
                            created_at: r.try_get("created_at")?,
                            not_before: r.try_get("not_before")?,
                            retired_at: r.try_get("retired_at")?,
                        })
                    })
                    .collect::<Result<_, sqlx::Error>>()
                    .map_err(StoreError)
            }

            async fn add_signing_key(&self, key: &KeyRecord, guard: KeyGuard, audit: Option<&AuditRecord>) -> Result<bool, StoreError> {
                let mut tx = self.pool.begin().await?;
                // The registry row is the lock: concurrent rotations (or first keys) queue here.
                sqlx::query("UPDATE registry SET rev = rev + 1 WHERE id = 1")
                    .execute(&mut *tx)
                    .await?;
                let blocking = match guard {
                    KeyGuard::Always => None,
                    KeyGuard::NoneCreatedSince(t) => Some((
                        "SELECT COUNT(*) AS n FROM signing_keys WHERE retired_at IS NULL AND created_at >= $1",
                        t,
                    )),
                    KeyGuard::NoSignerAt(t) => Some((
                        "SELECT COUNT(*) AS n FROM signing_keys WHERE retired_at IS NULL OR retired_at > $1",
                        t,
                    )),
                };
                if let Some((sql, t)) = blocking {
                    let any: i64 = sqlx::query(sql)
                        .bind(t)
                        .fetch_one(&mut *tx)
                        .await?
                        .try_get("n")?;
                    if any > 0 {
                        tx.rollback().await?;
                        return Ok(false);
                    }
                }
                // Every key still signing stops when this one starts.
                sqlx::query("UPDATE signing_keys SET retired_at = $1 WHERE retired_at IS NULL")
                    .bind(key.not_before)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("INSERT INTO signing_keys (kid, sealed, key_id, public_jwk, created_at, not_before, retired_at) VALUES ($1, $2, $3, $4, $5, $6, NULL)")
                    .bind(&key.kid)
                    .bind(&key.sealed)
                    .bind(&key.key_id)
                    .bind(&key.public_jwk)
                    .bind(key.created_at)
                    .bind(key.not_before)
                    .execute(&mut *tx)
                    .await?;
                if let Some(a) = audit {
                    insert_audit!(&mut *tx, a);
                }
                tx.commit().await?;
                Ok(true)
            }

            async fn delete_signing_keys(&self, kid: Option<&str>, now: i64, retired_before: i64, audit: Option<&AuditRecord>) -> Result<u64, StoreError> {
                let mut tx = self.pool.begin().await?;
                let done = match kid {
                    Some(kid) => {
                        // A key removed before it started signing retires nothing: the keys it
                        // was to replace go on signing.
                        sqlx::query("UPDATE signing_keys SET retired_at = NULL WHERE retired_at = (SELECT not_before FROM signing_keys WHERE kid = $1 AND not_before > $2) AND kid <> $1")
                            .bind(kid)
                            .bind(now)
                            .execute(&mut *tx)
                            .await?;
                        sqlx::query("DELETE FROM signing_keys WHERE kid = $1").bind(kid).execute(&mut *tx).await?
                    }
                    None => sqlx::query("DELETE FROM signing_keys WHERE retired_at IS NOT NULL AND retired_at < $1")
                        .bind(retired_before)
                        .execute(&mut *tx)
                        .await?,
                };
                if done.rows_affected() == 0 {
                    tx.rollback().await?;
                    return Ok(0);
                }
                sqlx::query("UPDATE registry SET rev = rev + 1 WHERE id = 1")
                    .execute(&mut *tx)
                    .await?;
                if let Some(a) = audit {
                    insert_audit!(&mut *tx, a);
                }
                tx.commit().await?;
                Ok(done.rows_affected())
            }

            async fn platform_ticket(&self, component_appid: &str) -> Result<Option<Vec<u8>>, StoreError> {
                let row = sqlx::query("SELECT ticket_sealed FROM platform_tickets WHERE component_appid = $1")
                    .bind(component_appid)
                    .fetch_optional(&self.pool)
                    .await?;
                row.map(|r| Ok(r.try_get("ticket_sealed")?)).transpose()
            }

            async fn put_platform_ticket(&self, component_appid: &str, sealed: &[u8], key_id: &str, now: i64, pushed_at: i64) -> Result<bool, StoreError> {
                let done = sqlx::query("INSERT INTO platform_tickets (component_appid, ticket_sealed, key_id, updated_at, pushed_at) VALUES ($1, $2, $3, $4, $5) \
                             ON CONFLICT (component_appid) DO UPDATE SET ticket_sealed = excluded.ticket_sealed, key_id = excluded.key_id, updated_at = excluded.updated_at, pushed_at = excluded.pushed_at \
                             WHERE excluded.pushed_at = 0 OR excluded.pushed_at >= platform_tickets.pushed_at OR platform_tickets.pushed_at > $6")
                    .bind(component_appid)
                    .bind(sealed)
                    .bind(key_id)
                    .bind(now)
                    .bind(pushed_at)
                    // A kept time ahead of this clock is not trusted (see TicketStore::save_pushed).
                    .bind(now.div_euclid(1000) + weapp::open_platform::TICKET_TIME_SLACK_SECS)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn platform_refresh(&self, component_appid: &str, authorizer_appid: &str) -> Result<Option<Vec<u8>>, StoreError> {
                let row = sqlx::query("SELECT refresh_sealed FROM platform_authorizers WHERE component_appid = $1 AND authorizer_appid = $2")
                    .bind(component_appid)
                    .bind(authorizer_appid)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.map(|r| r.try_get::<Option<Vec<u8>>, _>("refresh_sealed")).transpose()?.flatten())
            }

            async fn put_platform_authorizer(&self, rec: &PlatformAuthorizer) -> Result<(), StoreError> {
                let mut tx = self.pool.begin().await?;
                // Every instance reloads its platforms' merchants at the next registry poll.
                let rev: i64 = sqlx::query(NEXT_REV).fetch_one(&mut *tx).await?.try_get("rev")?;
                sqlx::query("INSERT INTO platform_authorizers (component_appid, authorizer_appid, refresh_sealed, key_id, authorized, func_ids, auth_time, updated_at, rev) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                             ON CONFLICT (component_appid, authorizer_appid) DO UPDATE SET \
                               refresh_sealed = COALESCE(excluded.refresh_sealed, platform_authorizers.refresh_sealed), \
                               key_id = COALESCE(excluded.key_id, platform_authorizers.key_id), \
                               authorized = excluded.authorized, func_ids = excluded.func_ids, \
                               auth_time = CASE WHEN excluded.auth_time > platform_authorizers.auth_time THEN excluded.auth_time ELSE platform_authorizers.auth_time END, \
                               updated_at = excluded.updated_at, rev = excluded.rev")
                    .bind(&rec.component_appid)
                    .bind(&rec.authorizer_appid)
                    .bind(rec.refresh_sealed.as_deref())
                    .bind(rec.key_id.as_deref())
                    .bind(i64::from(rec.authorized))
                    .bind(&rec.func_ids)
                    .bind(rec.auth_time)
                    .bind(rec.updated_at)
                    .bind(rev)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn save_platform_refresh(&self, component_appid: &str, authorizer_appid: &str, sealed: &[u8], key_id: &str, now: i64) -> Result<(), StoreError> {
                let mut tx = self.pool.begin().await?;
                // Every instance reloads its platforms' merchants at the next registry poll.
                let rev: i64 = sqlx::query(NEXT_REV).fetch_one(&mut *tx).await?.try_get("rev")?;
                sqlx::query("INSERT INTO platform_authorizers (component_appid, authorizer_appid, refresh_sealed, key_id, authorized, func_ids, auth_time, updated_at, rev) \
                             VALUES ($1, $2, $3, $4, 1, '[]', $6, $5, $7) \
                             ON CONFLICT (component_appid, authorizer_appid) DO UPDATE SET \
                               refresh_sealed = excluded.refresh_sealed, key_id = excluded.key_id, updated_at = excluded.updated_at, rev = excluded.rev")
                    .bind(component_appid)
                    .bind(authorizer_appid)
                    .bind(sealed)
                    .bind(key_id)
                    .bind(now)
                    // The authorization's time is WeChat's (its event's CreateTime, set with the
                    // event); a row made here first does not know it: 0, never this clock.
                    .bind(0i64)
                    .bind(rev)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            #[allow(clippy::too_many_arguments)]
            async fn restore_platform_authorizer_if(&self, component_appid: &str, authorizer_appid: &str, sealed: &[u8], key_id: &str, auth_time: i64, changed_before: i64, now: i64) -> Result<bool, StoreError> {
                let mut tx = self.pool.begin().await?;
                let rev: i64 = sqlx::query(NEXT_REV).fetch_one(&mut *tx).await?.try_get("rev")?;
                let updated = sqlx::query("UPDATE platform_authorizers SET authorized = 1, refresh_sealed = $3, key_id = $4, \
                                             auth_time = CASE WHEN $5 > auth_time THEN $5 ELSE auth_time END, updated_at = $7, rev = $8 \
                                           WHERE component_appid = $1 AND authorizer_appid = $2 AND updated_at < $6")
                    .bind(component_appid)
                    .bind(authorizer_appid)
                    .bind(sealed)
                    .bind(key_id)
                    .bind(auth_time)
                    .bind(changed_before)
                    .bind(now)
                    .bind(rev)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                let inserted = if updated == 0 {
                    sqlx::query("INSERT INTO platform_authorizers (component_appid, authorizer_appid, refresh_sealed, key_id, authorized, func_ids, auth_time, updated_at, rev) \
                                 VALUES ($1, $2, $3, $4, 1, '[]', $5, $6, $7) ON CONFLICT (component_appid, authorizer_appid) DO NOTHING")
                        .bind(component_appid)
                        .bind(authorizer_appid)
                        .bind(sealed)
                        .bind(key_id)
                        .bind(auth_time)
                        .bind(now)
                        .bind(rev)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected()
                } else {
                    0
                };
                tx.commit().await?;
                Ok(updated + inserted > 0)
            }

            async fn deauthorize_platform_authorizer_if(&self, component_appid: &str, authorizer_appid: &str, auth_time_at_most: i64, changed_before: i64, now: i64) -> Result<bool, StoreError> {
                let mut tx = self.pool.begin().await?;
                let rev: i64 = sqlx::query(NEXT_REV).fetch_one(&mut *tx).await?.try_get("rev")?;
                let done = sqlx::query("UPDATE platform_authorizers SET authorized = 0, refresh_sealed = NULL, key_id = NULL, updated_at = $3, rev = $4 \
                                        WHERE component_appid = $1 AND authorizer_appid = $2 AND auth_time <= $5 AND updated_at < $6")
                    .bind(component_appid)
                    .bind(authorizer_appid)
                    .bind(now)
                    .bind(rev)
                    .bind(auth_time_at_most)
                    .bind(changed_before)
                    .execute(&mut *tx)
                    .await?;
                if done.rows_affected() == 0 {
                    tx.rollback().await?;
                    return Ok(false);
                }
                tx.commit().await?;
                Ok(true)
            }

            async fn platform_authorizers(&self, component_appid: &str) -> Result<Vec<PlatformAuthorizer>, StoreError> {
                let sql = format!("SELECT {AUTHORIZER_COLUMNS} FROM platform_authorizers WHERE component_appid = $1 ORDER BY authorizer_appid");
                let rows = sqlx::query(&sql).bind(component_appid).fetch_all(&self.pool).await?;
                rows.iter().map(|r| Ok(authorizer_from(r)?)).collect()
            }

            async fn count_authorized(&self, component_appid: &str) -> Result<i64, StoreError> {
                let row = sqlx::query("SELECT COUNT(*) AS n FROM platform_authorizers WHERE component_appid = $1 AND authorized <> 0")
                    .bind(component_appid)
                    .fetch_one(&self.pool)
                    .await?;
                Ok(row.try_get("n")?)
            }

            async fn reseal_signing_key(&self, kid: &str, sealed: &[u8], key_id: &str) -> Result<(), StoreError> {
                sqlx::query("UPDATE signing_keys SET sealed = $2, key_id = $3 WHERE kid = $1")
                    .bind(kid)
                    .bind(sealed)
                    .bind(key_id)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn promote_signing_keys(&self, now: i64) -> Result<u64, StoreError> {
                let mut tx = self.pool.begin().await?;
                let done = sqlx::query("UPDATE signing_keys SET not_before = $1 WHERE retired_at IS NULL AND not_before > $1")
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                if done.rows_affected() == 0 {
                    tx.rollback().await?;
                    return Ok(0);
                }
                // What the promoted key was to retire at its start retires now.
                sqlx::query("UPDATE signing_keys SET retired_at = $1 WHERE retired_at > $1")
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("UPDATE registry SET rev = rev + 1 WHERE id = 1")
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(done.rows_affected())
            }

            async fn managed_app(&self, appid: &str) -> Result<Option<ManagedAppRecord>, StoreError> {
                let sql = format!("SELECT {MANAGED_APP_COLUMNS} FROM managed_apps WHERE appid = $1");
                let row = sqlx::query(&sql).bind(appid).fetch_optional(&self.pool).await?;
                row.map(|r| Ok(managed_app_from(&r)?)).transpose()
            }

            async fn put_managed_app(&self, app: &ManagedAppRecord, create: bool, audit: &AuditRecord) -> Result<Option<i64>, StoreError> {
                self.put_managed_row("managed_apps", "appid", app, create, audit, true).await
            }

            async fn delete_managed_app(&self, appid: &str, now: i64, audit: &AuditRecord) -> Result<Option<i64>, StoreError> {
                self.delete_managed_row("managed_apps", "appid", appid, now, audit, true).await
            }

            async fn managed_platforms_after(&self, rev: i64, limit: i64) -> Result<Vec<ManagedPlatformRecord>, StoreError> {
                let sql = format!("SELECT {MANAGED_PLATFORM_COLUMNS} FROM managed_platforms WHERE rev > $1 ORDER BY rev LIMIT $2");
                let rows = sqlx::query(&sql).bind(rev).bind(limit).fetch_all(&self.pool).await?;
                rows.iter().map(|r| Ok(managed_app_from(r)?)).collect()
            }

            async fn managed_platform(&self, component_appid: &str) -> Result<Option<ManagedPlatformRecord>, StoreError> {
                let sql = format!("SELECT {MANAGED_PLATFORM_COLUMNS} FROM managed_platforms WHERE component_appid = $1");
                let row = sqlx::query(&sql).bind(component_appid).fetch_optional(&self.pool).await?;
                row.map(|r| Ok(managed_app_from(&r)?)).transpose()
            }

            async fn put_managed_platform(&self, platform: &ManagedPlatformRecord, create: bool, audit: &AuditRecord) -> Result<Option<i64>, StoreError> {
                self.put_managed_row("managed_platforms", "component_appid", platform, create, audit, false).await
            }

            async fn delete_managed_platform(&self, component_appid: &str, now: i64, audit: &AuditRecord) -> Result<Option<i64>, StoreError> {
                self.delete_managed_row("managed_platforms", "component_appid", component_appid, now, audit, false).await
            }

            async fn platform_authorizers_after(&self, rev: i64, limit: i64) -> Result<Vec<PlatformAuthorizer>, StoreError> {
                let sql = format!("SELECT {AUTHORIZER_COLUMNS} FROM platform_authorizers WHERE rev > $1 ORDER BY rev LIMIT $2");
                let rows = sqlx::query(&sql).bind(rev).bind(limit).fetch_all(&self.pool).await?;
                rows.iter().map(|r| Ok(authorizer_from(r)?)).collect()
            }

            async fn authorizations_of(&self, authorizer_appid: &str) -> Result<Vec<PlatformAuthorizer>, StoreError> {
                let sql = format!("SELECT {AUTHORIZER_COLUMNS} FROM platform_authorizers WHERE authorizer_appid = $1 ORDER BY component_appid");
                let rows = sqlx::query(&sql).bind(authorizer_appid).fetch_all(&self.pool).await?;
                rows.iter().map(|r| Ok(authorizer_from(r)?)).collect()
            }

            async fn reseal_managed(&self, platform: bool, appid: &str, old: &[u8], sealed: &[u8], key_id: &str) -> Result<bool, StoreError> {
                let sql = if platform {
                    "UPDATE managed_platforms SET sealed = $3, key_id = $4 WHERE component_appid = $1 AND sealed = $2"
                } else {
                    "UPDATE managed_apps SET sealed = $3, key_id = $4 WHERE appid = $1 AND sealed = $2"
                };
                let done = sqlx::query(sql).bind(appid).bind(old).bind(sealed).bind(key_id).execute(&self.pool).await?;
                Ok(done.rows_affected() > 0)
            }

            async fn reseal_platform_ticket(&self, component_appid: &str, old: &[u8], sealed: &[u8], key_id: &str) -> Result<bool, StoreError> {
                let done = sqlx::query("UPDATE platform_tickets SET ticket_sealed = $3, key_id = $4 WHERE component_appid = $1 AND ticket_sealed = $2")
                    .bind(component_appid)
                    .bind(old)
                    .bind(sealed)
                    .bind(key_id)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn reseal_platform_refresh(&self, component_appid: &str, authorizer_appid: &str, old: &[u8], sealed: &[u8], key_id: &str) -> Result<bool, StoreError> {
                let done = sqlx::query("UPDATE platform_authorizers SET refresh_sealed = $4, key_id = $5 WHERE component_appid = $1 AND authorizer_appid = $2 AND refresh_sealed = $3")
                    .bind(component_appid)
                    .bind(authorizer_appid)
                    .bind(old)
                    .bind(sealed)
                    .bind(key_id)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn meta_cas(&self, key: &str, expected: Option<&str>, new: &str) -> Result<bool, StoreError> {
                let done = match expected {
                    None => sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
                        .bind(key)
                        .bind(new)
                        .execute(&self.pool)
                        .await?,
                    Some(old) => sqlx::query("UPDATE meta SET value = $3 WHERE key = $1 AND value = $2")
                        .bind(key)
                        .bind(old)
                        .bind(new)
                        .execute(&self.pool)
                        .await?,
                };
                Ok(done.rows_affected() > 0)
            }

            async fn put_managed_client(&self, client: &ManagedClientRecord, create: bool, audit: &AuditRecord) -> Result<Option<i64>, StoreError> {
                let mut tx = self.pool.begin().await?;
                let rev: i64 = sqlx::query(NEXT_REV).fetch_one(&mut *tx).await?.try_get("rev")?;
                let sql = if create {
                    "INSERT INTO managed_clients (name, key_sha256, apps, scopes, enabled, deleted, rev, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, 0, $6, $7, $7) \
                     ON CONFLICT (name) DO UPDATE SET key_sha256 = excluded.key_sha256, apps = excluded.apps, \
                       scopes = excluded.scopes, enabled = excluded.enabled, deleted = 0, rev = excluded.rev, \
                       created_at = excluded.created_at, updated_at = excluded.updated_at \
                     WHERE managed_clients.deleted = 1"
                } else {
                    "UPDATE managed_clients SET key_sha256 = COALESCE($2, key_sha256), apps = $3, scopes = $4, enabled = $5, rev = $6, updated_at = $7 \
                     WHERE name = $1 AND deleted = 0 AND rev = $8"
                };
                let done = sqlx::query(sql)
                    .bind(&client.name)
                    .bind(client.key_sha256.as_deref())
                    .bind(&client.apps)
                    .bind(&client.scopes)
                    .bind(i64::from(client.enabled))
                    .bind(rev)
                    .bind(client.updated_at)
                    .bind(client.rev)
                    .execute(&mut *tx)
                    .await?;
                if done.rows_affected() == 0 {
                    tx.rollback().await?;
                    return Ok(None);
                }
                insert_audit!(&mut *tx, audit);
                tx.commit().await?;
                Ok(Some(rev))
            }

            async fn delete_managed_client(&self, name: &str, now: i64, audit: &AuditRecord) -> Result<Option<i64>, StoreError> {
                let mut tx = self.pool.begin().await?;
                let rev: i64 = sqlx::query(NEXT_REV).fetch_one(&mut *tx).await?.try_get("rev")?;
                let done = sqlx::query("UPDATE managed_clients SET deleted = 1, enabled = 0, key_sha256 = NULL, rev = $2, updated_at = $3 WHERE name = $1 AND deleted = 0")
                    .bind(name)
                    .bind(rev)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                if done.rows_affected() == 0 {
                    tx.rollback().await?;
                    return Ok(None);
                }
                insert_audit!(&mut *tx, audit);
                tx.commit().await?;
                Ok(Some(rev))
            }

            async fn user_by_openid(&self, appid: &str, openid: &str) -> Result<Option<UserRecord>, StoreError> {
                let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE appid = $1 AND openid = $2");
                let row = sqlx::query(&sql).bind(appid).bind(openid).fetch_optional(&self.pool).await?;
                row.map(|r| Ok(user_from(&r)?)).transpose()
            }

            async fn count_sessions(&self, user_id: i64, now: i64) -> Result<i64, StoreError> {
                let row = sqlx::query("SELECT COUNT(*) AS n FROM sessions WHERE user_id = $1 AND expires_at > $2")
                    .bind(user_id)
                    .bind(now)
                    .fetch_one(&self.pool)
                    .await?;
                Ok(row.try_get("n")?)
            }

            async fn audit(&self, r: &AuditRecord) -> Result<(), StoreError> {
                insert_audit!(&self.pool, r);
                Ok(())
            }

            async fn audit_after(&self, after: i64, limit: i64) -> Result<Vec<AuditRecord>, StoreError> {
                let rows = sqlx::query("SELECT id, at, admin, action, target, source, detail FROM admin_audit WHERE id > $1 ORDER BY id LIMIT $2")
                    .bind(after)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter()
                    .map(|r| {
                        Ok(AuditRecord {
                            id: r.try_get("id")?,
                            at: r.try_get("at")?,
                            admin: r.try_get("admin")?,
                            action: r.try_get("action")?,
                            target: r.try_get("target")?,
                            source: r.try_get("source")?,
                            detail: r.try_get("detail")?,
                        })
                    })
                    .collect()
            }
        }

        impl $name {
            /// `put_managed_*` for the table `table` keyed by `key`. With `app_sessions`, a
            /// creation that revives a tombstone first ends the sessions of the id's users: any
            /// left are an earlier registration's (logins an instance took before it learned of
            /// the deletion), and must not come back with the new one.
            async fn put_managed_row(&self, table: &str, key: &str, rec: &ManagedAppRecord, create: bool, audit: &AuditRecord, app_sessions: bool) -> Result<Option<i64>, StoreError> {
                let mut tx = self.pool.begin().await?;
                let rev: i64 = sqlx::query(NEXT_REV).fetch_one(&mut *tx).await?.try_get("rev")?;
                if create && app_sessions {
                    let sql = format!("DELETE FROM sessions WHERE user_id IN (SELECT id FROM users WHERE appid = $1) AND EXISTS (SELECT 1 FROM {table} WHERE {key} = $1 AND deleted = 1)");
                    sqlx::query(&sql).bind(&rec.appid).execute(&mut *tx).await?;
                }
                let sql = if create {
                    format!(
                        "INSERT INTO {table} ({key}, settings, sealed, key_id, enabled, deleted, rev, created_at, updated_at) \
                         VALUES ($1, $2, $3, $4, $5, 0, $6, $7, $7) \
                         ON CONFLICT ({key}) DO UPDATE SET settings = excluded.settings, sealed = excluded.sealed, \
                           key_id = excluded.key_id, enabled = excluded.enabled, deleted = 0, rev = excluded.rev, \
                           created_at = excluded.created_at, updated_at = excluded.updated_at \
                         WHERE {table}.deleted = 1"
                    )
                } else {
                    format!(
                        "UPDATE {table} SET settings = $2, sealed = $3, key_id = $4, enabled = $5, rev = $6, updated_at = $7 \
                         WHERE {key} = $1 AND deleted = 0 AND rev = $8"
                    )
                };
                let done = sqlx::query(&sql)
                    .bind(&rec.appid)
                    .bind(&rec.settings)
                    .bind(rec.sealed.as_deref())
                    .bind(rec.key_id.as_deref())
                    .bind(i64::from(rec.enabled))
                    .bind(rev)
                    .bind(rec.updated_at)
                    .bind(rec.rev)
                    .execute(&mut *tx)
                    .await?;
                if done.rows_affected() == 0 {
                    tx.rollback().await?;
                    return Ok(None);
                }
                insert_audit!(&mut *tx, audit);
                tx.commit().await?;
                Ok(Some(rev))
            }

            /// `delete_managed_*` for the table `table` keyed by `key`. With `app_sessions`, every
            /// session of the id's users ends in the same transaction, and the audit row's detail
            /// gains `sessions_ended`.
            async fn delete_managed_row(&self, table: &str, key: &str, id: &str, now: i64, audit: &AuditRecord, app_sessions: bool) -> Result<Option<i64>, StoreError> {
                let mut tx = self.pool.begin().await?;
                let rev: i64 = sqlx::query(NEXT_REV).fetch_one(&mut *tx).await?.try_get("rev")?;
                let sql = format!("UPDATE {table} SET deleted = 1, enabled = 0, sealed = NULL, key_id = NULL, rev = $2, updated_at = $3 WHERE {key} = $1 AND deleted = 0");
                let done = sqlx::query(&sql).bind(id).bind(rev).bind(now).execute(&mut *tx).await?;
                if done.rows_affected() == 0 {
                    tx.rollback().await?;
                    return Ok(None);
                }
                let mut audit = Cow::Borrowed(audit);
                if app_sessions {
                    let ended = sqlx::query("DELETE FROM sessions WHERE user_id IN (SELECT id FROM users WHERE appid = $1)")
                        .bind(id)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    let mut detail: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&audit.detail).unwrap_or_default();
                    detail.insert("sessions_ended".into(), ended.into());
                    audit.to_mut().detail = serde_json::Value::Object(detail).to_string();
                }
                insert_audit!(&mut *tx, audit);
                tx.commit().await?;
                Ok(Some(rev))
            }
        }
    };
}

/// SQLite (WAL mode, foreign keys on), the single-node default.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: sqlx::SqlitePool,
    /// One connection, on a thread of its own, for the login writer's batches: SQLite has one
    /// writer at a time anyway, a connection keeps its page cache only while no other
    /// connection writes, and a batch is one hand-over to that thread (`sqlite_writer`).
    writer: super::sqlite_writer::SqliteLoginWriter,
}

/// Creates the SQLite file readable and writable by its owner alone (SQLite gives the `-wal` and
/// `-shm` files it makes later the database file's mode), so users' data is never readable by
/// others, not even for a moment. An existing file readable by others, or a directory anyone may
/// write to (who could replace the file), is logged as a warning: the file is the operator's.
fn create_private(path: &std::path::Path) -> std::io::Result<()> {
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600);
    match open.open(path) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(path)?.permissions().mode();
                if mode & 0o077 != 0 {
                    tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "the SQLite database is readable by others than its owner; chmod 600 it");
                }
            }
        }
        Err(e) => return Err(e),
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => std::path::Path::new("."),
        };
        let mode = std::fs::metadata(dir)?.permissions().mode();
        // World-writable without the sticky bit: anyone may rename or replace the file.
        if mode & 0o002 != 0 && mode & 0o1000 == 0 {
            tracing::warn!(dir = %dir.display(), "the SQLite database's directory is writable by everyone: anyone can replace the database");
        }
    }
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if needed) and migrates the database at `url` (`sqlite://file.db`).
    ///
    /// # Errors
    /// The file cannot be opened or migrated.
    pub async fn connect(url: &str, options: &StoreOptions) -> Result<Self, StoreError> {
        let sync = if options.sqlite_full_sync {
            sqlx::sqlite::SqliteSynchronous::Full
        } else {
            sqlx::sqlite::SqliteSynchronous::Normal
        };
        let connect = sqlx::sqlite::SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .synchronous(sync)
            .foreign_keys(true)
            .busy_timeout(std::time::Duration::from_secs(5))
            // Reads through the page cache's mapping instead of a copy per page, and a larger
            // cache per connection (the login writer's batches touch many index pages).
            .pragma("mmap_size", "268435456")
            .pragma("cache_size", "-16384")
            .pragma("temp_store", "memory");
        let query = url.split_once('?').map_or("", |(_, q)| q);
        let param = |name: &str| {
            query
                .split('&')
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        };
        let in_memory = url.ends_with(":memory:")
            || url.contains(":memory:?")
            || param("mode") == Some("memory");
        if !in_memory {
            create_private(connect.get_filename()).map_err(|e| StoreError(sqlx::Error::Io(e)))?;
        }
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(options.pool_size.min(32))
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect.clone())
            .await?;
        migrate(SQLITE_MIGRATIONS, &pool).await?;
        let writer = super::sqlite_writer::SqliteLoginWriter::open(
            super::sqlite_writer::Target {
                filename: connect.get_filename().to_owned(),
                in_memory,
                vfs: param("vfs").map(str::to_owned),
            },
            super::sqlite_writer::WriterOptions {
                full_sync: options.sqlite_full_sync,
                busy_timeout: std::time::Duration::from_secs(5),
            },
        )?;
        Ok(Self { pool, writer })
    }
}

/// PostgreSQL, for fleets of instances.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: sqlx::PgPool,
    /// The same pool (PostgreSQL has no per-connection cache to keep).
    writer: sqlx::PgPool,
}

impl PgStore {
    /// Connects to `url` and applies migrations (under sqlx's advisory lock, so concurrent
    /// instances starting together migrate once).
    ///
    /// # Errors
    /// Unreachable server or failed migration.
    pub async fn connect(url: &str, options: &StoreOptions) -> Result<Self, StoreError> {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(options.pool_size)
            .acquire_timeout(options.acquire_timeout)
            .connect(url)
            .await?;
        migrate(PG_MIGRATIONS, &pool).await?;
        Ok(Self {
            writer: pool.clone(),
            pool,
        })
    }
}

/// `rows` value tuples of numbered parameters, `per_row` parameters each: `columns` are the
/// row's parameters (1-based) in column order, one used twice where two columns take it.
fn values_list(rows: usize, per_row: usize, columns: &[usize]) -> String {
    let mut sql = String::new();
    for n in 0..rows {
        sql.push_str(if n == 0 { "(" } else { ", (" });
        for (c, p) in columns.iter().enumerate() {
            if c > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("${}", n * per_row + p));
        }
        sql.push(')');
    }
    sql
}

impl SqliteStore {
    /// [`Store::record_logins`]: the login writer's thread (see `sqlite_writer`).
    async fn record_login_batch(
        &self,
        logins: &[LoginWrite],
    ) -> Result<Vec<LoginRecorded>, StoreError> {
        self.writer.record(logins).await
    }
}

impl PgStore {
    /// [`Store::record_logins`]: one transaction, one statement per table (a round trip to
    /// the server each).
    async fn record_login_batch(
        &self,
        logins: &[LoginWrite],
    ) -> Result<Vec<LoginRecorded>, StoreError> {
        if logins.is_empty() {
            return Ok(Vec::new());
        }
        let rows = super::batch_users(logins);
        let mut tx = self.writer.begin().await?;
        // Per row: appid, openid, unionid, session_key_enc, key_id, now (created and updated).
        let mut sql = String::from("INSERT INTO users (appid, openid, unionid, session_key_enc, key_id, created_at, updated_at) VALUES ");
        sql.push_str(&values_list(rows.len(), 6, &[1, 2, 3, 4, 5, 6, 6]));
        sql.push_str(
            " ON CONFLICT (appid, openid) DO UPDATE SET \
               unionid = COALESCE(excluded.unionid, users.unionid), \
               session_key_enc = excluded.session_key_enc, \
               key_id = excluded.key_id, \
               updated_at = excluded.updated_at \
             RETURNING id, appid, openid, unionid",
        );
        let mut q = sqlx::query(&sql);
        for &(_, i, unionid) in &rows {
            let l = &logins[i];
            q = q
                .bind(&l.appid)
                .bind(&l.openid)
                .bind(unionid)
                .bind(&l.session_key_enc)
                .bind(&l.key_id)
                .bind(l.now);
        }
        let mut users: std::collections::HashMap<(String, String), (i64, Option<String>)> =
            std::collections::HashMap::new();
        for r in q.fetch_all(&mut *tx).await? {
            users.insert(
                (r.try_get("appid")?, r.try_get("openid")?),
                (r.try_get("id")?, r.try_get("unionid")?),
            );
        }
        let mut out = Vec::with_capacity(logins.len());
        for l in logins {
            let (user_id, unionid) = users
                .get(&(l.appid.clone(), l.openid.clone()))
                .cloned()
                .ok_or_else(|| StoreError(sqlx::Error::RowNotFound))?;
            out.push(LoginRecorded { user_id, unionid });
        }
        // Per row: token_hash, user_id, now (created and last seen), expires_at.
        let mut sql = String::from("INSERT INTO sessions (token_hash, user_id, created_at, expires_at, last_seen_at) VALUES ");
        sql.push_str(&values_list(logins.len(), 4, &[1, 2, 3, 4, 3]));
        let mut q = sqlx::query(&sql);
        for (l, r) in logins.iter().zip(&out) {
            q = q
                .bind(&l.token_hash)
                .bind(r.user_id)
                .bind(l.now)
                .bind(l.expires_at);
        }
        q.execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(out)
    }
}

sql_store!(SqliteStore, sqlx::SqlitePool, "sqlite");
sql_store!(PgStore, sqlx::PgPool, "postgres");

#[cfg(test)]
mod tests {
    #[test]
    fn values_lists_number_every_row_s_parameters() {
        assert_eq!(
            super::values_list(2, 4, &[1, 2, 3, 4, 3]),
            "($1, $2, $3, $4, $3), ($5, $6, $7, $8, $7)"
        );
        assert_eq!(super::values_list(1, 6, &[1, 6, 6]), "($1, $6, $6)");
        assert_eq!(super::values_list(0, 6, &[1]), "");
    }
}
