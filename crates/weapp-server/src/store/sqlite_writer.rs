//! SQLite's login writer: a connection of its own on a thread of its own.
//!
//! Through sqlx a batch of logins was a conversation with the connection's worker thread —
//! a ping to acquire, `BEGIN`, the user upsert (its rows streamed back one by one), the session
//! insert, `COMMIT`, a ping to give the connection back: each a hand-over between threads,
//! and the multi-row statements needed a statement journal. Here a batch is one message to
//! this thread and one answer back; the statements (the user upsert and its read-back, the
//! session insert) are prepared once and run row by row in one `BEGIN IMMEDIATE`
//! transaction. What is written is what the PostgreSQL path writes
//! (`PgStore::record_login_batch` in `sql.rs`; both take `batch_users`): one row per user with
//! its last login's session_key and the newest unionid any of its logins carried, one session
//! per login, all or nothing.

use std::collections::HashMap;
use std::sync::mpsc;

use tokio::sync::oneshot;

use super::lite_error::LiteError;
use super::{LoginRecorded, LoginWrite, StoreError};

type Job = (
    Vec<LoginWrite>,
    oneshot::Sender<Result<Vec<LoginRecorded>, StoreError>>,
);

/// A handle to the writer thread (which ends when the last handle is dropped).
#[derive(Debug, Clone)]
pub(crate) struct SqliteLoginWriter {
    tx: mpsc::Sender<Job>,
}

/// How the writer's connection is opened: what the pool's connections are opened with.
#[derive(Debug, Clone)]
pub(crate) struct WriterOptions {
    /// `synchronous=FULL` (true) or `NORMAL`.
    pub full_sync: bool,
    /// How long a statement waits for another connection's write lock.
    pub busy_timeout: std::time::Duration,
}

/// The database the pool opened: its file (or shared in-memory database) and VFS.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// The file, or for an in-memory database sqlx's name for it (`file:sqlx-in-memory-N`).
    pub filename: std::path::PathBuf,
    /// A shared in-memory database.
    pub in_memory: bool,
    /// The `vfs=` of the URL: the pool and the writer must lock the file the same way.
    pub vfs: Option<String>,
}

/// A connection is replaced after this long, like the pool's (sqlx's `max_lifetime`): a
/// database file replaced under the server is picked up.
const MAX_LIFETIME: std::time::Duration = std::time::Duration::from_secs(30 * 60);

fn open_connection(
    target: &Target,
    options: &WriterOptions,
) -> Result<rusqlite::Connection, StoreError> {
    use rusqlite::OpenFlags;
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = match (&target.vfs, target.in_memory) {
        (_, true) => {
            let name = target.filename.to_string_lossy();
            let name = name.strip_prefix("file:").unwrap_or(&name);
            rusqlite::Connection::open_with_flags(
                format!("file:{name}?mode=memory&cache=shared"),
                flags | OpenFlags::SQLITE_OPEN_URI,
            )
        }
        (Some(vfs), false) => {
            rusqlite::Connection::open_with_flags_and_vfs(&target.filename, flags, vfs)
        }
        (None, false) => rusqlite::Connection::open_with_flags(&target.filename, flags),
    }
    .map_err(store_error)?;
    conn.busy_timeout(options.busy_timeout)
        .map_err(store_error)?;
    let sync = if options.full_sync { "FULL" } else { "NORMAL" };
    // As the pool's connections (SqliteStore::connect): the journal mode is the file's.
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {sync}; PRAGMA foreign_keys = ON; \
         PRAGMA mmap_size = 268435456; PRAGMA cache_size = -16384; PRAGMA temp_store = memory;"
    ))
    .map_err(store_error)?;
    // What "acknowledged means durable" rests on is this connection's setting: read back.
    let level: i64 = conn
        .query_row("PRAGMA synchronous", [], |r| r.get(0))
        .map_err(store_error)?;
    if level != if options.full_sync { 2 } else { 1 } {
        return Err(StoreError(sqlx::Error::Configuration(
            format!("the login writer's connection has synchronous = {level}").into(),
        )));
    }
    // The database the pool migrated, not another one (an in-memory database the pool's
    // connections do not share): refused at start, not at the first login.
    conn.prepare("SELECT 1 FROM users, sessions LIMIT 0")
        .map_err(store_error)?;
    Ok(conn)
}

/// SQLite's answer means the connection itself is unusable (its file gone, replaced or
/// corrupt, an I/O error): the next batch gets a new one.
fn is_fatal(e: &StoreError) -> bool {
    let code = match &e.0 {
        sqlx::Error::Database(db) => db.code().and_then(|c| c.parse::<i32>().ok()),
        _ => None,
    };
    code.is_some_and(|c| {
        matches!(
            c & 0xff,
            rusqlite::ffi::SQLITE_IOERR
                | rusqlite::ffi::SQLITE_CORRUPT
                | rusqlite::ffi::SQLITE_NOTADB
                | rusqlite::ffi::SQLITE_CANTOPEN
                | rusqlite::ffi::SQLITE_READONLY
        )
    })
}

impl SqliteLoginWriter {
    /// Opens `target` (an existing, migrated database) and starts the thread.
    pub(crate) fn open(target: Target, options: WriterOptions) -> Result<Self, StoreError> {
        let conn = open_connection(&target, &options)?;
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("weapp-sqlite-logins".into())
            .spawn(move || {
                let mut conn = conn;
                let mut opened = std::time::Instant::now();
                let mut renew = false;
                while let Ok((logins, reply)) = rx.recv() {
                    if renew || opened.elapsed() > MAX_LIFETIME {
                        match open_connection(&target, &options) {
                            Ok(c) => {
                                conn = c;
                                opened = std::time::Instant::now();
                                renew = false;
                            }
                            Err(e) => {
                                tracing::error!(error = %e, "the login writer could not reopen the database; keeping its connection");
                            }
                        }
                    }
                    // A panic (a bug) fails its batch — rolled back as the transaction drops —
                    // not the thread, which would fail every login after it.
                    let written = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        write_batch(&mut conn, &logins).map_err(store_error)
                    }));
                    let written = match written {
                        Ok(w) => {
                            renew |= w.as_ref().is_err_and(is_fatal);
                            w
                        }
                        Err(_) => {
                            renew = true;
                            Err(StoreError(sqlx::Error::Protocol(
                                "the login writer panicked".into(),
                            )))
                        }
                    };
                    // A transaction the failure left open (its rollback failed) would refuse
                    // every later BEGIN.
                    if written.is_err() && !conn.is_autocommit() {
                        let _ = conn.execute_batch("ROLLBACK");
                    }
                    // A caller gone (its request ended) needs no answer.
                    let _ = reply.send(written);
                }
            })
            .map_err(|e| StoreError(sqlx::Error::Io(e)))?;
        Ok(Self { tx })
    }

    /// Records `logins` in one transaction; answers once it is committed.
    pub(crate) async fn record(
        &self,
        logins: &[LoginWrite],
    ) -> Result<Vec<LoginRecorded>, StoreError> {
        let (reply, answer) = oneshot::channel();
        let gone = || StoreError(sqlx::Error::PoolClosed);
        self.tx.send((logins.to_vec(), reply)).map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

fn write_batch(
    conn: &mut rusqlite::Connection,
    logins: &[LoginWrite],
) -> rusqlite::Result<Vec<LoginRecorded>> {
    if logins.is_empty() {
        return Ok(Vec::new());
    }
    let rows = super::batch_users(logins);
    // Dropped without a commit (an error below), the transaction rolls back.
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut users: HashMap<(&str, &str), (i64, Option<String>)> =
        HashMap::with_capacity(rows.len());
    {
        // No `RETURNING`: SQLite runs a statement with one as a statement with a trigger,
        // which needs a statement journal — every page the upsert touched copied there first
        // (a seventh of this thread's CPU). The row is read back instead: the page the upsert
        // just wrote, in this transaction.
        let mut upsert = tx.prepare_cached(
            "INSERT INTO users (appid, openid, unionid, session_key_enc, key_id, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6) \
             ON CONFLICT (appid, openid) DO UPDATE SET \
               unionid = COALESCE(excluded.unionid, users.unionid), \
               session_key_enc = excluded.session_key_enc, \
               key_id = excluded.key_id, \
               updated_at = excluded.updated_at",
        )?;
        let mut read_back =
            tx.prepare_cached("SELECT id, unionid FROM users WHERE appid = ?1 AND openid = ?2")?;
        for &(key, i, unionid) in &rows {
            let l = &logins[i];
            upsert.execute(rusqlite::params![
                l.appid,
                l.openid,
                unionid,
                l.session_key_enc,
                l.key_id,
                l.now
            ])?;
            let user = read_back.query_row(rusqlite::params![l.appid, l.openid], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, Option<String>>(1)?))
            })?;
            users.insert(key, user);
        }
    }
    let mut out = Vec::with_capacity(logins.len());
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO sessions (token_hash, user_id, created_at, expires_at, last_seen_at) \
             VALUES (?1, ?2, ?3, ?4, ?3)",
        )?;
        for l in logins {
            let (user_id, unionid) = users
                .get(&(l.appid.as_str(), l.openid.as_str()))
                .cloned()
                .ok_or(rusqlite::Error::QueryReturnedNoRows)?;
            insert.execute(rusqlite::params![
                l.token_hash,
                user_id,
                l.now,
                l.expires_at
            ])?;
            out.push(LoginRecorded { user_id, unionid });
        }
    }
    tx.commit()?;
    Ok(out)
}

/// rusqlite's error as the store's: SQLite's own failures (a constraint, a busy database, a
/// full disk) are database errors, as sqlx reports them; anything else a protocol error.
fn store_error(e: rusqlite::Error) -> StoreError {
    match e {
        rusqlite::Error::SqliteFailure(f, message) => StoreError(sqlx::Error::Database(Box::new(
            LiteError::new(f.extended_code, message.unwrap_or_else(|| f.to_string())),
        ))),
        other => StoreError(sqlx::Error::Protocol(other.to_string())),
    }
}
