//! The SQL implementations. SQLite and PostgreSQL run the same statements (numbered `$N`
//! parameters, `ON CONFLICT … DO UPDATE`, `RETURNING`); only the migrations differ, so one
//! macro generates both implementations from one definition (one file of `sql/` per trait).

mod events;
mod keys;
mod meta;
mod pay_flow;
mod payments;
mod platforms;
mod registry;
mod sessions;

use std::borrow::Cow;
use std::str::FromStr;

use async_trait::async_trait;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::Row;

use super::KeyGuard;
use super::KeyRecord;
use super::{
    AuditRecord, EventRecord, EventStore, KeyStore, LegacySealed, LoginRecorded, LoginWrite,
    ManagedAppRecord, ManagedClientRecord, ManagedPlatformRecord, NewEvent, OutboxStats,
    PayApplied, PayFlowStore, PayNotificationRecord, PayOrderRecord, PayRefundChange,
    PayRefundInsert, PayRefundRecord, PayStore, PayTransition, PlatformAuthorizer, PlatformStore,
    RegistryStore, SessionRecord, SessionStore, Store, StoreError, StoreOptions, UserRecord, NEVER,
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
        include_str!("../../../migrations/sqlite/0001_init.sql"),
    ),
    (
        2,
        "push events",
        include_str!("../../../migrations/sqlite/0002_push_events.sql"),
    ),
    (
        3,
        "hardening",
        include_str!("../../../migrations/sqlite/0003_hardening.sql"),
    ),
    (
        4,
        "registry",
        include_str!("../../../migrations/sqlite/0004_registry.sql"),
    ),
    (
        5,
        "signing keys",
        include_str!("../../../migrations/sqlite/0005_signing_keys.sql"),
    ),
    (
        6,
        "platforms",
        include_str!("../../../migrations/sqlite/0006_platforms.sql"),
    ),
    (
        7,
        "managed platforms",
        include_str!("../../../migrations/sqlite/0007_managed_platforms.sql"),
    ),
    (
        8,
        "ticket order",
        include_str!("../../../migrations/sqlite/0008_ticket_order.sql"),
    ),
    (
        9,
        "payments",
        include_str!("../../../migrations/sqlite/0009_payments.sql"),
    ),
    (
        10,
        "refunds and queries",
        include_str!("../../../migrations/sqlite/0010_refunds_and_queries.sql"),
    ),
    (
        11,
        "merchants and reconciliation",
        include_str!("../../../migrations/sqlite/0011_merchants_and_reconciliation.sql"),
    ),
];
const PG_MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../../../migrations/postgres/0001_init.sql"),
    ),
    (
        2,
        "push events",
        include_str!("../../../migrations/postgres/0002_push_events.sql"),
    ),
    (
        3,
        "hardening",
        include_str!("../../../migrations/postgres/0003_hardening.sql"),
    ),
    (
        4,
        "registry",
        include_str!("../../../migrations/postgres/0004_registry.sql"),
    ),
    (
        5,
        "signing keys",
        include_str!("../../../migrations/postgres/0005_signing_keys.sql"),
    ),
    (
        6,
        "platforms",
        include_str!("../../../migrations/postgres/0006_platforms.sql"),
    ),
    (
        7,
        "managed platforms",
        include_str!("../../../migrations/postgres/0007_managed_platforms.sql"),
    ),
    (
        8,
        "ticket order",
        include_str!("../../../migrations/postgres/0008_ticket_order.sql"),
    ),
    (
        9,
        "payments",
        include_str!("../../../migrations/postgres/0009_payments.sql"),
    ),
    (
        10,
        "refunds and queries",
        include_str!("../../../migrations/postgres/0010_refunds_and_queries.sql"),
    ),
    (
        11,
        "merchants and reconciliation",
        include_str!("../../../migrations/postgres/0011_merchants_and_reconciliation.sql"),
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

/// Both backends' implementations, one trait (one domain's queries) per file of `sql/`.
macro_rules! sql_store {
    ($name:ident, $pool:ty, $kind:literal) => {
        sessions::impl_sessions!($name, $pool, $kind);
        events::impl_events!($name, $pool, $kind);
        registry::impl_registry!($name, $pool, $kind);
        platforms::impl_platforms!($name, $pool, $kind);
        keys::impl_keys!($name, $pool, $kind);
        meta::impl_meta!($name, $pool, $kind);
        payments::impl_payments!($name, $pool, $kind);
        pay_flow::impl_pay_flow!($name, $pool, $kind);
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
