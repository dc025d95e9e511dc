//! Test support for the weapp workspace: simulators and private Redis servers on free ports,
//! so test runs never share state with each other or with services on the machine.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use weapp_sim::{spawn as spawn_sim, Sim, SimConfig, SimHandle};

mod topologies;
pub use topologies::{cut_replication, redis_cli, RedisCluster, RedisSentinels, SENTINEL_MASTER};

/// A simulator with one registered app; returns the handle, appid and secret.
pub async fn sim_with_app() -> (SimHandle, String, String) {
    let handle = spawn_sim(SimConfig::default())
        .await
        .expect("start simulator");
    let (appid, secret) = handle.sim().add_app(None, None, false);
    (handle, appid, secret)
}

/// A free TCP port on loopback (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

/// A private `redis-server` on a free port, killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
}

impl RedisServer {
    /// Starts `redis-server` (from `$PATH`) with persistence off.
    ///
    /// # Panics
    /// When redis-server is not installed or does not come up within 5 seconds: the tests that
    /// use it cannot mean anything without it.
    pub fn start() -> Self {
        for _ in 0..5 {
            if let Some(server) = Self::start_on(free_port()) {
                return server;
            }
        }
        panic!("redis-server did not start");
    }

    /// Starts it again on the same port after [`RedisServer::stop`] (empty: nothing persists).
    ///
    /// # Panics
    /// When it does not come back within 5 seconds.
    pub fn restart(&mut self) {
        self.stop();
        let mut fresh = Self::start_on(self.port).expect("redis-server restarts on its port");
        self.child = fresh.child.take();
    }

    fn start_on(port: u16) -> Option<Self> {
        {
            let child = Command::new("redis-server")
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server must be installed (CI installs it; see .ci/run)");
            let mut server = RedisServer {
                child: Some(child),
                port,
            };
            if server.wait_ready(Duration::from_secs(5)) {
                return Some(server);
            }
            server.stop();
            None
        }
    }

    fn wait_ready(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(Child::try_wait) {
                return false;
            }
            if let Ok(stream) = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], self.port))) {
                // The port may have been taken meanwhile by another test's Redis (ours then
                // fails to bind and exits, but maybe not yet): make sure it is ours.
                return self.serves(stream);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Whether the Redis answering on `stream` is this server's process.
    fn serves(&self, mut stream: TcpStream) -> bool {
        use std::io::{Read, Write};
        let Some(pid) = self.child.as_ref().map(Child::id) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        if stream
            .write_all(b"*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n")
            .is_err()
        {
            return false;
        }
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while !String::from_utf8_lossy(&buf).contains("process_id:") || !buf.ends_with(b"\r\n") {
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            if buf.len() > 64 * 1024 {
                break;
            }
        }
        let text = String::from_utf8_lossy(&buf);
        text.lines()
            .find_map(|l| l.strip_prefix("process_id:"))
            .and_then(|p| p.trim().parse::<u32>().ok())
            == Some(pid)
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (to test behaviour while Redis is down).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A key prefix unique to this call, for tests that must use a shared Redis.
pub fn unique_prefix(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("weapp-test:{name}:{}:{nanos}", std::process::id())
}

/// A PostgreSQL database created for one test and dropped afterwards, on the server named by
/// `WEAPP_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`).
#[derive(Debug)]
pub struct PgDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl PgDatabase {
    /// Creates `weapp_test_<random>`.
    ///
    /// # Panics
    /// When PostgreSQL is unreachable: tests that need it cannot mean anything without it.
    pub async fn create() -> Self {
        use sqlx::Connection;
        let admin_url = std::env::var("WEAPP_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let name = format!("weapp_test_{}_{}", std::process::id(), free_port());
        let mut conn = sqlx::PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| {
                panic!("PostgreSQL at {admin_url} (set WEAPP_TEST_POSTGRES_URL): {e}")
            });
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("create test database");
        let base = admin_url
            .rsplit_once('/')
            .map_or(admin_url.as_str(), |(b, _)| b);
        let url = format!("{base}/{name}");
        PgDatabase {
            admin_url,
            name,
            url,
        }
    }

    /// The database's URL.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        drop_detached(
            &self.admin_url,
            format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// Runs `sql` on the PostgreSQL server at `admin_url` from a `Drop`: outside any runtime
/// guarantee, so on a private runtime on its own thread; a failure is reported, not raised.
fn drop_detached(admin_url: &str, sql: String) {
    let url = admin_url.to_owned();
    let failed = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(&url)
                .await
                .map_err(|e| e.to_string())?;
            sqlx::query(&sql)
                .execute(&mut conn)
                .await
                .map(|_| ())
                .map_err(|e| format!("{sql}: {e}"))
        })
    })
    .join()
    .unwrap_or_else(|_| Err("the clean-up thread panicked".into()));
    if let Err(e) = failed {
        eprintln!("test clean-up failed (left behind on the PostgreSQL server): {e}");
    }
}

/// A PostgreSQL role of its own for one server instance under test, so that the database can
/// refuse that instance alone (a privilege revoked on a table). Dropped when the guard goes —
/// declare it before the [`PgDatabase`], so that it is dropped after the database (a role
/// outlives a database).
pub struct PgRole {
    /// The role's name (unique per test run).
    pub name: String,
    admin_url: String,
}

impl PgRole {
    /// A role name `<prefix>_<pid>_<port>`, nothing created yet.
    pub fn new(prefix: &str) -> Self {
        PgRole {
            name: format!("{prefix}_{}_{}", std::process::id(), free_port()),
            admin_url: std::env::var("WEAPP_TEST_POSTGRES_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into()),
        }
    }

    /// Creates the role with every privilege on the database's tables (migrated already);
    /// returns a superuser connection to the database, to revoke and grant with.
    ///
    /// # Panics
    /// When PostgreSQL refuses.
    pub async fn create_on(&self, db_url: &str) -> sqlx::PgConnection {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(db_url)
            .await
            .expect("connect to the test database");
        let role = &self.name;
        for sql in [
            format!("CREATE ROLE {role} LOGIN"),
            format!("GRANT USAGE, CREATE ON SCHEMA public TO {role}"),
            format!("GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}"),
            format!("GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}"),
        ] {
            sqlx::query(&sql)
                .execute(&mut conn)
                .await
                .expect("role set-up");
        }
        conn
    }

    /// The database's URL as this role (the test URL names the user `postgres`).
    ///
    /// # Panics
    /// When the URL does not name that user.
    pub fn url(&self, db_url: &str) -> String {
        let url = db_url.replacen("postgres@", &format!("{}@", self.name), 1);
        assert_ne!(url, db_url, "the test database URL names its user");
        url
    }
}

impl Drop for PgRole {
    fn drop(&mut self) {
        drop_detached(
            &self.admin_url,
            format!("DROP ROLE IF EXISTS {}", self.name),
        );
    }
}

/// The Beijing date `offset_days` from today as `yyyymmdd` (analytics dates).
pub fn beijing_date(offset_days: i64) -> String {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    weapp_sim::datacube::yyyymmdd(weapp_sim::datacube::beijing_day(now_ms) + offset_days)
}

/// A TCP proxy in front of a server (a Redis, say) that can be made to hang like a network
/// partition: in [`HangingProxy::hang`] mode it keeps every connection open, reads and
/// discards what it is sent and never answers nor closes; new connections are accepted and
/// treated the same. [`HangingProxy::resume`] forwards new connections again; a connection that
/// saw the hang stays dead (as one whose peer gave up on it would). [`HangingProxy::stall`] is
/// the harsher partition: the proxy stops *reading* too, so once the socket buffers are full a
/// sender's writes block.
#[derive(Debug)]
pub struct HangingProxy {
    addr: SocketAddr,
    hanging: std::sync::Arc<std::sync::atomic::AtomicBool>,
    stalled: std::sync::Arc<std::sync::atomic::AtomicBool>,
    accept: tokio::task::JoinHandle<()>,
}

impl HangingProxy {
    /// A proxy on a free loopback port in front of `target`, forwarding.
    ///
    /// # Panics
    /// When it cannot bind a port.
    pub async fn start(target: SocketAddr) -> Self {
        use std::sync::atomic::Ordering;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let hanging = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stalled = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mode = hanging.clone();
        let stall = stalled.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let mode = mode.clone();
                let stall = stall.clone();
                tokio::spawn(async move {
                    // Dead once it has seen the hang: bytes either way are dropped from then on.
                    let dead = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(
                        mode.load(Ordering::SeqCst),
                    ));
                    let (mut cr, mut cw) = client.into_split();
                    let upstream = if dead.load(Ordering::SeqCst) {
                        None
                    } else {
                        tokio::net::TcpStream::connect(target).await.ok()
                    };
                    let Some(upstream) = upstream else {
                        // Black hole: read and discard until the peer closes; never answer.
                        let mut buf = [0u8; 4096];
                        while matches!(cr.read(&mut buf).await, Ok(n) if n > 0) {}
                        // Held until the peer is gone.
                        drop(cw);
                        return;
                    };
                    let (mut ur, mut uw) = upstream.into_split();
                    let (d1, m1, s1) = (dead.clone(), mode.clone(), stall.clone());
                    let up = tokio::spawn(async move {
                        let mut buf = [0u8; 4096];
                        loop {
                            if s1.load(Ordering::SeqCst) {
                                // Stalled: never read again, never close.
                                std::future::pending::<()>().await;
                            }
                            let Ok(n @ 1..) = cr.read(&mut buf).await else {
                                break;
                            };
                            if m1.load(Ordering::SeqCst) {
                                d1.store(true, Ordering::SeqCst);
                            }
                            if !d1.load(Ordering::SeqCst) && uw.write_all(&buf[..n]).await.is_err()
                            {
                                break;
                            }
                        }
                    });
                    let mut buf = [0u8; 4096];
                    loop {
                        if stall.load(Ordering::SeqCst) {
                            std::future::pending::<()>().await;
                        }
                        let Ok(n @ 1..) = ur.read(&mut buf).await else {
                            break;
                        };
                        if mode.load(Ordering::SeqCst) {
                            dead.store(true, Ordering::SeqCst);
                        }
                        if !dead.load(Ordering::SeqCst) && cw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    // Upstream closed: keep the client side open if dead (a hang never closes).
                    let _ = up.await;
                    drop(cw);
                });
            }
        });
        Self {
            addr,
            hanging,
            stalled,
            accept,
        }
    }

    /// `redis://` at the proxy.
    pub fn redis_url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// The proxy's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops forwarding without closing anything.
    pub fn hang(&self) {
        self.hanging
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Stops reading from either side, for good, without closing anything: once the socket
    /// buffers are full, whoever writes to the proxy blocks.
    pub fn stall(&self) {
        self.hanging
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.stalled
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Forwards new connections again (after [`HangingProxy::hang`] or
    /// [`HangingProxy::stall`]); connections that saw either stay dead.
    pub fn resume(&self) {
        self.stalled
            .store(false, std::sync::atomic::Ordering::SeqCst);
        self.hanging
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for HangingProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}
