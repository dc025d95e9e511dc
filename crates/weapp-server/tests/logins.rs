//! Concurrent logins are written in batches (group commit): every login still gets its own
//! working session, a user logging in twice at once is one user with two sessions, and a
//! unionid once known is never erased — on SQLite and on PostgreSQL.

mod common;

use common::{sqlite_url, world};
use weapp::TokenMode;
use weapp_test_support::PgDatabase;

async fn concurrent_logins(database_url: &str) {
    let w = world().await;
    let server = weapp_server::spawn(w.config(database_url, None, TokenMode::Stable))
        .await
        .unwrap();
    let url = server.url().to_owned();
    // 60 users, each logging in twice at the same moment, plus a user of the other app.
    let mut codes = Vec::new();
    for i in 0..60 {
        let openid = format!("oBatch{i:03}");
        for _ in 0..2 {
            let (code, _) = w
                .sim
                .sim()
                .login(&w.appid, Some(openid.clone()), None, false)
                .unwrap();
            codes.push((w.appid.clone(), code, openid.clone()));
        }
    }
    let (code, other) = w
        .sim
        .sim()
        .login(&w.other_appid, None, None, false)
        .unwrap();
    codes.push((w.other_appid.clone(), code, other));
    let logins = codes.iter().map(|(appid, code, openid)| {
        let (w, url) = (&w, url.clone());
        async move {
            let (s, v) = w.post_login(&url, appid, code).await;
            assert_eq!(s, 200, "{v}");
            assert_eq!(v["openid"], openid.as_str());
            v["token"].as_str().unwrap().to_owned()
        }
    });
    let tokens = futures_join_all(logins).await;
    let mut distinct = tokens.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), tokens.len(), "every login its own session");
    for ((appid, _, openid), token) in codes.iter().zip(&tokens) {
        let (s, me) = w
            .call("GET", format!("{url}/v1/me"), Some(token), None)
            .await;
        assert_eq!(s, 200, "{me}");
        assert_eq!(
            (me["appid"].as_str(), me["openid"].as_str()),
            (Some(appid.as_str()), Some(openid.as_str()))
        );
    }
    // They were written in batches: fewer transactions than logins.
    let (transactions, written) = server.state().sessions.login_writer.counts();
    assert_eq!(written, codes.len() as u64);
    assert!(
        transactions < written,
        "{transactions} transactions for {written} logins"
    );
    // Two logins of one user are one user with two sessions.
    let store = &server.state().store;
    let u = store
        .user_by_openid(&w.appid, "oBatch007")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        store
            .count_sessions(u.id, weapp_server::shared::now_ms())
            .await
            .unwrap(),
        2
    );
    server.shutdown().await.unwrap();
}

async fn futures_join_all<F: std::future::Future>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output> {
    let handles: Vec<_> = futures.collect();
    let mut out = Vec::with_capacity(handles.len());
    // Polled together: a hand-rolled join_all over a FuturesOrdered-free vector.
    let mut pinned: Vec<std::pin::Pin<Box<F>>> = handles.into_iter().map(Box::pin).collect();
    let mut results: Vec<Option<F::Output>> = (0..pinned.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in pinned.iter_mut().enumerate() {
            if results[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => results[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.extend(results.into_iter().map(|r| r.expect("ready")));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_logins_on_sqlite() {
    concurrent_logins(&sqlite_url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_logins_on_postgres() {
    let db = PgDatabase::create().await;
    concurrent_logins(db.url()).await;
}

/// A user logging in twice in one batch, the first time with a unionid and the second without,
/// keeps the unionid (it is never erased by a login that does not carry it).
#[tokio::test]
async fn a_unionid_in_a_batch_is_kept() {
    let store = weapp_server::store::connect(&sqlite_url(), &Default::default())
        .await
        .unwrap();
    let login = |unionid: Option<&str>, token: u8| weapp_server::store::LoginWrite {
        appid: "wxbatch".into(),
        openid: "oTwice".into(),
        unionid: unionid.map(str::to_owned),
        session_key_enc: vec![1, 2, 3],
        key_id: "k".into(),
        token_hash: vec![token; 32],
        now: 1,
        expires_at: 2,
    };
    let done = store
        .record_logins(&[login(Some("uUnion"), 1), login(None, 2)])
        .await
        .unwrap();
    assert_eq!(done.len(), 2);
    assert_eq!(done[0].user_id, done[1].user_id);
    assert_eq!(done[1].unionid.as_deref(), Some("uUnion"));
    let u = store
        .user_by_openid("wxbatch", "oTwice")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(u.unionid.as_deref(), Some("uUnion"));
}

fn login(openid: &str, token: u8) -> weapp_server::store::LoginWrite {
    weapp_server::store::LoginWrite {
        appid: "wxbatch".into(),
        openid: openid.into(),
        unionid: None,
        session_key_enc: vec![1, 2, 3],
        key_id: "k".into(),
        token_hash: vec![token; 32],
        now: 1,
        expires_at: weapp_server::shared::now_ms() + 60_000,
    }
}

/// A batch is all or nothing: a login whose session collides (the same token hash) fails the
/// whole transaction — with a database error saying so — and leaves no trace of the batch's
/// other logins; the login writer then writes the others one by one, and only the bad one
/// fails.
async fn a_bad_login_fails_alone(url: &str) {
    let store = weapp_server::store::connect(url, &Default::default())
        .await
        .unwrap();
    store.record_logins(&[login("oFirst", 1)]).await.unwrap();
    let err = store
        .record_logins(&[login("oNew", 2), login("oAgain", 1)])
        .await
        .expect_err("a token hash twice");
    match &err.0 {
        sqlx::Error::Database(db) => assert!(db.is_unique_violation(), "{db}"),
        other => panic!("not a database error: {other}"),
    }
    assert!(err.is_per_row() && !err.is_busy(), "{err}");
    assert!(
        store
            .user_by_openid("wxbatch", "oNew")
            .await
            .unwrap()
            .is_none(),
        "half a batch was written"
    );
    // Through the writer: three logins at once, the middle one colliding.
    let writer = weapp_server::sessions::writer::LoginWriter::spawn(
        store.clone(),
        std::sync::Arc::new(weapp_server::metrics::Metrics::default()),
    );
    let (a, b, c) = tokio::join!(
        writer.write(login("oA", 3)),
        writer.write(login("oB", 1)),
        writer.write(login("oC", 4)),
    );
    assert!(b.is_err(), "the colliding login must fail");
    let (a, c) = (a.unwrap(), c.unwrap());
    for (openid, recorded) in [("oA", a), ("oC", c)] {
        let u = store
            .user_by_openid("wxbatch", openid)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(u.id, recorded.user_id);
        assert_eq!(
            store
                .count_sessions(u.id, weapp_server::shared::now_ms())
                .await
                .unwrap(),
            1
        );
    }
}

#[tokio::test]
async fn a_bad_login_fails_alone_on_sqlite() {
    a_bad_login_fails_alone(&sqlite_url()).await;
}

#[tokio::test]
async fn a_bad_login_fails_alone_on_postgres() {
    let db = PgDatabase::create().await;
    a_bad_login_fails_alone(db.url()).await;
}

/// SQLite: while another connection holds the write lock (an administrator's change, another
/// process on the same file), a batch of logins waits for it instead of failing, and is written
/// once the lock is released; a lock held past the busy timeout fails the batch with SQLite's
/// `SQLITE_BUSY` — and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_logins_wait_for_the_write_lock() {
    use sqlx::Connection;
    let url = sqlite_url();
    let store = weapp_server::store::connect(&url, &Default::default())
        .await
        .unwrap();
    let mut other = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .unwrap();
    let waiting = {
        let store = store.clone();
        tokio::spawn(async move { store.record_logins(&[login("oWaits", 5)]).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        !waiting.is_finished(),
        "the batch did not wait for the lock"
    );
    sqlx::query("COMMIT").execute(&mut other).await.unwrap();
    waiting.await.unwrap().expect("written after the lock");
    assert!(store
        .user_by_openid("wxbatch", "oWaits")
        .await
        .unwrap()
        .is_some());

    // Held for longer than the busy timeout (5 s): SQLITE_BUSY, nothing written.
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .unwrap();
    let err = store
        .record_logins(&[login("oTooLate", 6)])
        .await
        .expect_err("the lock was never released");
    match &err.0 {
        sqlx::Error::Database(db) => assert_eq!(db.code().as_deref(), Some("5"), "{db}"),
        other => panic!("not a database error: {other}"),
    }
    // Busy, not one row's fault: the login writer fails its batch at once (no retry of each
    // login, each waiting as long), and the API answers 503 with Retry-After.
    assert!(err.is_busy() && !err.is_per_row(), "{err}");
    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
    assert!(store
        .user_by_openid("wxbatch", "oTooLate")
        .await
        .unwrap()
        .is_none());
}

/// Through the API: a login while SQLite's write lock is held past the busy timeout is a 503
/// with `Retry-After` (the database is busy, not broken) and its code is not spent on a
/// half-written login; once the lock is released logins work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_against_a_locked_database_is_503() {
    use sqlx::Connection;
    let w = world().await;
    let url = sqlite_url();
    let server = weapp_server::spawn(w.config(&url, None, TokenMode::Stable))
        .await
        .unwrap();
    let base = server.url().to_owned();
    let mut other = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .unwrap();
    let (code, openid) = w.sim.sim().login(&w.appid, None, None, false).unwrap();
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/login"))
        .json(&serde_json::json!({"appid": w.appid, "code": code}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
    let store = &server.state().store;
    assert!(store
        .user_by_openid(&w.appid, &openid)
        .await
        .unwrap()
        .is_none());
    let (code, _) = w.sim.sim().login(&w.appid, None, None, false).unwrap();
    let (s, v) = w.post_login(&base, &w.appid, &code).await;
    assert_eq!(s, 200, "{v}");
    server.shutdown().await.unwrap();
}

/// An in-memory SQLite database (`sqlite::memory:`, shared by the pool's connections and the
/// login writer's): batches are written while pool connections read the same tables, and
/// they wait on each other's shared-cache locks instead of failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_on_an_in_memory_database_wait_for_readers() {
    let store = weapp_server::store::connect("sqlite::memory:", &Default::default())
        .await
        .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (store, stop) = (store.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    store.user_by_openid("wxbatch", "o0").await.unwrap();
                }
            })
        })
        .collect();
    for n in 0..200u8 {
        store
            .record_logins(&[login(&format!("o{n}"), n)])
            .await
            .unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for r in readers {
        r.await.unwrap();
    }
    let u = store.user_by_openid("wxbatch", "o199").await.unwrap();
    assert!(u.is_some());
}

/// SQLite: a batch whose write fails at the operating system (the WAL file made immutable
/// under the running writer: `pwrite` answers EPERM, SQLite `SQLITE_IOERR`) fails with that
/// error — not busy, not retried login by login — and writes nothing; once the file is
/// writable again the writer records the next batch. (The writer also replaces its connection
/// after an I/O-class failure; SQLite recovers on the old one too, so this test cannot tell
/// the two apart — it checks what a caller sees.) Needs `chattr`, which needs root: elsewhere
/// the test says so and checks nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_logins_recover_after_an_io_error() {
    let url = sqlite_url();
    let path = url.strip_prefix("sqlite://").unwrap().to_owned();
    let wal = format!("{path}-wal");
    let store = weapp_server::store::connect(&url, &Default::default())
        .await
        .unwrap();
    store.record_logins(&[login("oBefore", 7)]).await.unwrap();
    let chattr = |flag: &str| {
        std::process::Command::new("chattr")
            .args([flag, &wal])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !chattr("+i") {
        eprintln!("chattr +i is not available here (it needs root): nothing checked");
        return;
    }
    let failed = store.record_logins(&[login("oDuring", 8)]).await;
    assert!(chattr("-i"), "chattr -i");
    let err = failed.expect_err("the WAL could not be written");
    match &err.0 {
        sqlx::Error::Database(db) => {
            let code: i32 = db.code().unwrap().parse().unwrap();
            assert_eq!(code & 0xff, 10, "SQLITE_IOERR, got {db}");
        }
        other => panic!("not a database error: {other}"),
    }
    assert!(!err.is_busy() && !err.is_per_row(), "{err}");
    store
        .record_logins(&[login("oAfter", 9)])
        .await
        .expect("written once the file is writable again");
    for (openid, there) in [("oBefore", true), ("oDuring", false), ("oAfter", true)] {
        let found = store.user_by_openid("wxbatch", openid).await.unwrap();
        assert_eq!(found.is_some(), there, "{openid}");
    }
}
