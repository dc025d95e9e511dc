//! Where the store's Redis is — one node, a Sentinel-managed primary, or a Cluster — and the
//! connection to it: every command under a deadline, the connection replaced in the background
//! when it stops answering (a hang) or, behind Sentinel, when the primary it points at is gone
//! or demoted (a failover).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{
    Cmd, ConnectionAddr, ConnectionInfo, ErrorKind, IntoConnectionInfo, Pipeline,
    RedisConnectionInfo, RedisError, RedisFuture, Value,
};

use crate::error::StoreError;

/// How long Redis may take: to answer one command, and to accept a connection (each attempt).
///
/// Every command runs under a deadline of `response`, whatever holds it up — a Redis that hangs
/// while the connection's buffers still take the command (packets dropped, nothing closed), a
/// send that cannot go out because a long partition filled the socket's buffers, a Cluster
/// retrying towards a primary that died. After a timeout the store checks the connection in the
/// background and, if it does not answer, opens fresh ones until one does, so service resumes
/// on its own once Redis answers. After a refused or reset connection to a single node, the
/// connection manager's own reconnect (one retry, within the same deadline) comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedisTimeouts {
    /// Per command. Default 1 s.
    pub response: Duration,
    /// Per connection attempt (TCP connect and handshake). Default 500 ms.
    pub connect: Duration,
}

impl Default for RedisTimeouts {
    fn default() -> Self {
        Self {
            response: Duration::from_secs(1),
            connect: Duration::from_millis(500),
        }
    }
}

impl RedisTimeouts {
    fn manager_config(self) -> ConnectionManagerConfig {
        ConnectionManagerConfig::new()
            .set_connection_timeout(self.connect)
            .set_response_timeout(self.response)
            .set_number_of_retries(1)
            .set_max_delay(200)
    }

    /// The most one attempt to open a connection may take: a node's connection (one retry),
    /// or a Cluster's slot map.
    fn open_within(self) -> Duration {
        self.connect * 2 + self.response
    }

    /// What asking one sentinel may take: connecting, and its answer.
    fn per_sentinel(self) -> Duration {
        self.connect + self.response
    }
}

/// The kind of Redis deployment a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisTopology {
    /// `redis://` or `rediss://` (TLS): one node.
    Node,
    /// `redis+sentinel://host:port,host:port/<master-name>`: the primary Sentinel names,
    /// followed across failovers.
    Sentinel,
    /// `redis+cluster://host:port,host:port`: a Redis Cluster, `MOVED`/`ASK` and failovers
    /// followed.
    Cluster,
}

impl RedisTopology {
    /// The deployment `url` names, checked as [`RedisStore::connect`] would check it, without
    /// connecting: for validating a configuration when it is loaded.
    ///
    /// # Errors
    /// [`StoreError`] saying what is wrong (never quoting the URL, which may carry a password).
    ///
    /// [`RedisStore::connect`]: super::RedisStore::connect
    pub fn of(url: &str) -> Result<Self, StoreError> {
        Target::parse(url, RedisTimeouts::default()).map(|(_, t)| t)
    }

    /// Whether `url` starts with one of the Redis schemes (`redis://`, `rediss://`,
    /// `redis+sentinel://`, `redis+cluster://`), valid or not: how a command line tells a
    /// Redis URL from its other choices.
    pub fn is_redis_scheme(url: &str) -> bool {
        [
            "redis://",
            "rediss://",
            "redis+sentinel://",
            "redis+cluster://",
        ]
        .iter()
        .any(|s| url.starts_with(s))
    }
}

/// How to reach the Redis a URL names.
enum Target {
    Node(redis::Client),
    Sentinel {
        /// Asked in turn, each within [`RedisTimeouts::per_sentinel`]: one that hangs costs a
        /// lookup that much, not the lookup.
        sentinels: Vec<ConnectionInfo>,
        master: String,
        /// The data nodes' credentials and database.
        node: RedisConnectionInfo,
        /// Where the next lookup starts, so consecutive ones do not all begin with the same
        /// (perhaps unreachable) sentinel.
        next: AtomicUsize,
    },
    Cluster(ClusterClient),
}

const URL_FORMS: &str = "expected redis://host:port/db, rediss://host:port/db, \
     redis+sentinel://host:port,host:port/master-name or redis+cluster://host:port,host:port";

fn invalid(what: &str) -> StoreError {
    // Never the URL itself: it may carry a password.
    StoreError::new(
        format!("redis url is not valid: {what} ({URL_FORMS})"),
        None,
    )
}

/// Splits `redis+x://[credentials@]h:p,h:p[/path][?query]` (after the scheme) into the
/// credentials, the hosts and the path.
fn split_multi(rest: &str) -> Result<(Option<&str>, Vec<&str>, &str), StoreError> {
    let (credentials, rest) = match rest.rfind('@') {
        Some(i) => (Some(&rest[..i]), &rest[i + 1..]),
        None => (None, rest),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let hosts: Vec<&str> = rest[..end].split(',').map(str::trim).collect();
    // `host:port` or `[v6]:port`: a bare `[::1]` would otherwise pass for having a port.
    let has_port = |h: &str| match h.strip_prefix('[') {
        Some(v6) => v6
            .split_once("]:")
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok()),
        None => h
            .rsplit_once(':')
            .is_some_and(|(host, p)| !host.is_empty() && p.parse::<u16>().is_ok()),
    };
    if hosts.iter().any(|h| !has_port(h)) {
        return Err(invalid("every host needs a port (host:port, [v6]:port)"));
    }
    if rest[end..].contains(['?', '#']) {
        return Err(invalid(
            "Sentinel and Cluster URLs take no query or fragment",
        ));
    }
    Ok((credentials, hosts, &rest[end..]))
}

fn node_url(credentials: Option<&str>, host: &str, db: &str) -> String {
    match credentials {
        Some(c) => format!("redis://{c}@{host}/{db}"),
        None => format!("redis://{host}/{db}"),
    }
}

impl Target {
    fn parse(url: &str, timeouts: RedisTimeouts) -> Result<(Self, RedisTopology), StoreError> {
        if let Some(rest) = url.strip_prefix("redis+sentinel://") {
            let (credentials, hosts, path) = split_multi(rest)?;
            let mut parts = path.trim_start_matches('/').split('/');
            let master = parts.next().unwrap_or("").to_owned();
            if master.is_empty() {
                return Err(invalid("a Sentinel URL names its master after the hosts"));
            }
            let db = parts.next().filter(|d| !d.is_empty()).unwrap_or("0");
            if db.parse::<i64>().is_err() || parts.next().is_some() {
                return Err(invalid("after the master name, only a database number"));
            }
            // The sentinels are asked without credentials; those in the URL are the data
            // nodes' (the primary's and its replicas').
            let sentinels = hosts
                .iter()
                .map(|h| format!("redis://{h}").into_connection_info())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| invalid("sentinel hosts"))?;
            let info = node_url(credentials, "localhost:6379", db)
                .into_connection_info()
                .map_err(|_| invalid("credentials or database"))?;
            return Ok((
                Target::Sentinel {
                    sentinels,
                    master,
                    node: info.redis,
                    next: AtomicUsize::new(0),
                },
                RedisTopology::Sentinel,
            ));
        }
        if let Some(rest) = url.strip_prefix("redis+cluster://") {
            let (credentials, hosts, path) = split_multi(rest)?;
            if !matches!(path.trim_start_matches('/'), "" | "0") {
                return Err(invalid("a Cluster has only database 0"));
            }
            let nodes: Vec<String> = hosts
                .iter()
                .map(|h| node_url(credentials, h, "0"))
                .collect();
            let client = ClusterClient::builder(nodes)
                .connection_timeout(timeouts.connect)
                .response_timeout(timeouts.response)
                // Within the command's deadline: a slot whose primary died is retried while
                // its replica takes over, then the caller gets the timeout.
                .retries(4)
                .min_retry_wait(50)
                .max_retry_wait(400)
                .build()
                .map_err(|_| invalid("cluster hosts or credentials"))?;
            return Ok((Target::Cluster(client), RedisTopology::Cluster));
        }
        if url.starts_with("redis://") || url.starts_with("rediss://") {
            let client = redis::Client::open(url).map_err(|_| invalid("host, port or database"))?;
            return Ok((Target::Node(client), RedisTopology::Node));
        }
        Err(invalid("unknown scheme"))
    }
}

impl Target {
    /// The most one attempt to open a connection may take.
    fn open_budget(&self, timeouts: RedisTimeouts) -> Duration {
        match self {
            Target::Sentinel { sentinels, .. } => {
                timeouts.per_sentinel() * u32::try_from(sentinels.len()).unwrap_or(u32::MAX)
                    + timeouts.open_within()
            }
            _ => timeouts.open_within(),
        }
    }
}

/// The connection of the moment: one node's (also the primary's, behind Sentinel) or a
/// Cluster's.
#[derive(Clone)]
enum Conn {
    /// Boxed: a connection manager is ten times a cluster connection's size.
    Node(Box<ConnectionManager>),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Node(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Node(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Node(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// The connection shared by a store and its clones, replaced when it stops answering.
pub(super) struct Link {
    target: Target,
    topology: RedisTopology,
    pub(super) timeouts: RedisTimeouts,
    current: RwLock<Conn>,
    /// A replacement connection is being opened.
    replacing: AtomicBool,
}

/// Clears [`Link::replacing`] when the replacing task ends, however it ends (if the link is
/// still there).
struct Replacing(Weak<Link>);

impl Drop for Replacing {
    fn drop(&mut self) {
        if let Some(link) = self.0.upgrade() {
            link.replacing.store(false, Ordering::Release);
        }
    }
}

pub(super) fn timed_out() -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "redis did not answer within the command deadline",
    ))
}

/// `fut` within `within`, its expiry a timeout error.
async fn within<T>(
    within: Duration,
    fut: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> redis::RedisResult<T> {
    tokio::time::timeout(within, fut)
        .await
        .unwrap_or_else(|_| Err(timed_out()))
}

/// Whether `e` says the node is a replica: `READONLY`, or (Redis before 7) a script's write
/// refused with `ERR Error running script … READONLY …`.
fn read_only(e: &RedisError) -> bool {
    e.kind() == ErrorKind::ReadOnly
        || (e.kind() == ErrorKind::ResponseError
            && e.detail().is_some_and(|d| d.contains("READONLY")))
}

impl Link {
    /// Parses `url` and opens the first connection.
    pub(super) async fn open(url: &str, timeouts: RedisTimeouts) -> Result<Arc<Self>, StoreError> {
        let (target, topology) = Target::parse(url, timeouts)?;
        // One attempt for a single node (refused is refused). Behind Sentinel or in a Cluster a
        // failover may be under way — the sentinels still naming the dead primary, slots not
        // yet served: attempts go on, 100 ms apart, for the open budget. The error is the last
        // real one (a wrong password stays a wrong password), not the budget running out.
        let budget = target.open_budget(timeouts);
        let deadline = tokio::time::Instant::now() + budget;
        let mut last = None;
        let conn = loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, connect(&target, timeouts)).await {
                Ok(Ok(conn)) => break conn,
                Ok(Err(e)) => last = Some(e),
                Err(_) => {}
            }
            if topology == RedisTopology::Node
                || tokio::time::Instant::now() + Duration::from_millis(100) >= deadline
            {
                let e = last.unwrap_or_else(timed_out);
                return Err(StoreError::new("redis connect", Some(Box::new(e))));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        Ok(Arc::new(Link {
            target,
            topology,
            timeouts,
            current: RwLock::new(conn),
            replacing: AtomicBool::new(false),
        }))
    }

    pub(super) fn topology(&self) -> RedisTopology {
        self.topology
    }

    fn current(&self) -> Conn {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The connection of the moment, each command under the deadline.
    pub(super) fn connection(self: &Arc<Self>) -> RedisConnection {
        RedisConnection {
            conn: self.current(),
            link: self.clone(),
        }
    }

    /// After a failed command: whether the connection must be looked at again.
    fn after_error(self: &Arc<Self>, e: &RedisError) {
        let replace = e.is_timeout()
            || (self.topology == RedisTopology::Sentinel
                && (read_only(e)
                    || e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()));
        if replace {
            self.replace();
        }
    }

    /// Whether `conn` is usable: it answers within the deadline, and behind Sentinel it is
    /// still the primary (a demoted one answers, read-only).
    async fn usable(&self, conn: Conn) -> bool {
        usable(self.topology, conn, self.timeouts.response).await
    }

    /// After a command timed out, or behind Sentinel after the primary went away: a background
    /// task first looks at the current connection and keeps it if it is usable — a late
    /// timeout of a request sent before a heal, or a caller's own shorter deadline on a slow
    /// but healthy Redis, replaces nothing. Otherwise it opens a new connection (asking the
    /// sentinels again for the primary) and puts it in place once that one is usable, trying
    /// again (backing off up to 1 s) until one is, so the store rejoins on its own after an
    /// outage or a failover, without waiting for another command to fail. One such task per
    /// store at a time; it ends when the store is gone.
    ///
    /// A Cluster's connection is one per node: whether one node answers says nothing of the
    /// node that did not, so after a timeout a new Cluster connection is opened at once (and
    /// put in place once a node answers through it).
    pub(super) fn replace(self: &Arc<Self>) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.replacing.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = Arc::downgrade(self);
        rt.spawn(async move {
            // Clears the flag however the task ends (a runtime shutting down drops it).
            let _replacing = Replacing(weak.clone());
            let mut pause = Duration::from_millis(100);
            let mut first = true;
            loop {
                // Not kept alive by this task: a store dropped meanwhile ends it.
                let Some(link) = weak.upgrade() else {
                    return;
                };
                let check_current = !(first && link.topology == RedisTopology::Cluster);
                first = false;
                if check_current && link.usable(link.current()).await {
                    return;
                }
                let opened = tokio::time::timeout(
                    link.target.open_budget(link.timeouts),
                    connect(&link.target, link.timeouts),
                )
                .await;
                match opened {
                    Ok(Ok(fresh)) if link.usable(fresh.clone()).await => {
                        *link.current.write().unwrap_or_else(|p| p.into_inner()) = fresh;
                        tracing::info!(
                            topology = ?link.topology,
                            "redis: the connection stopped answering or its primary changed; a new one is in place"
                        );
                        return;
                    }
                    _ => tracing::debug!("redis: no usable connection yet; trying again"),
                }
                drop(link);
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
        });
    }
}

/// Whether `conn` answers within `deadline` — behind Sentinel, as the primary (`ROLE`); in a
/// Cluster, through any node (`ECHO`: a `PING` would go to every primary and fail while one
/// is down).
async fn usable(topology: RedisTopology, mut conn: Conn, deadline: Duration) -> bool {
    match topology {
        RedisTopology::Sentinel => {
            let role = redis::cmd("ROLE");
            matches!(
                within(deadline, role.query_async::<Value>(&mut conn)).await,
                Ok(Value::Array(v)) if matches!(
                    v.first(),
                    Some(Value::BulkString(b)) if b.as_slice() == b"master"
                )
            )
        }
        RedisTopology::Cluster => {
            let mut echo = redis::cmd("ECHO");
            echo.arg("weapp");
            within(deadline, echo.query_async::<String>(&mut conn))
                .await
                .is_ok()
        }
        RedisTopology::Node => {
            let ping = redis::cmd("PING");
            within(deadline, ping.query_async::<String>(&mut conn))
                .await
                .is_ok()
        }
    }
}

/// Asks the sentinel at `at` where `master` is, within the per-sentinel budget.
async fn ask_sentinel(
    at: &ConnectionInfo,
    master: &str,
    timeouts: RedisTimeouts,
) -> redis::RedisResult<(String, u16)> {
    let client = redis::Client::open(at.clone())?;
    let answer = async {
        let mut conn = client
            .get_multiplexed_async_connection_with_config(
                &redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(timeouts.connect)
                    .set_response_timeout(timeouts.response),
            )
            .await?;
        redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(master)
            .query_async::<Option<(String, u16)>>(&mut conn)
            .await
    };
    within(timeouts.per_sentinel(), answer)
        .await?
        .ok_or_else(|| {
            RedisError::from((
                ErrorKind::ResponseError,
                "the sentinel does not know the master name",
            ))
        })
}

/// Opens a connection to `target` (not bounded: callers put it under a deadline). Behind
/// Sentinel: the sentinels are asked in turn (from a rotating start), and the first primary
/// they name that accepts a connection and says `ROLE master` is used.
async fn connect(target: &Target, timeouts: RedisTimeouts) -> redis::RedisResult<Conn> {
    match target {
        Target::Node(client) => {
            ConnectionManager::new_with_config(client.clone(), timeouts.manager_config())
                .await
                .map(|c| Conn::Node(Box::new(c)))
        }
        Target::Sentinel {
            sentinels,
            master,
            node,
            next,
        } => {
            let n = sentinels.len();
            let start = next.fetch_add(1, Ordering::Relaxed);
            let mut last = None;
            for i in 0..n {
                let (host, port) =
                    match ask_sentinel(&sentinels[(start + i) % n], master, timeouts).await {
                        Ok(addr) => addr,
                        Err(e) => {
                            last = Some(e);
                            continue;
                        }
                    };
                let client = redis::Client::open(ConnectionInfo {
                    addr: ConnectionAddr::Tcp(host, port),
                    redis: node.clone(),
                })?;
                let opened = within(
                    timeouts.open_within(),
                    ConnectionManager::new_with_config(client, timeouts.manager_config()),
                )
                .await;
                match opened {
                    Ok(c) => {
                        let conn = Conn::Node(Box::new(c));
                        if usable(RedisTopology::Sentinel, conn.clone(), timeouts.response).await {
                            return Ok(conn);
                        }
                        last = Some(RedisError::from((
                            ErrorKind::ReadOnly,
                            "the node a sentinel named is not the primary (yet)",
                        )));
                    }
                    Err(e) => last = Some(e),
                }
            }
            Err(last.unwrap_or_else(|| {
                RedisError::from((ErrorKind::ClientError, "no sentinel to ask"))
            }))
        }
        Target::Cluster(client) => client.get_async_connection().await.map(Conn::Cluster),
    }
}

/// A connection to the store's Redis, whatever its topology: pass it to `query_async`,
/// `invoke_async` or a pipeline like any `redis` connection. Every command (or pipeline) runs
/// under the store's [`RedisTimeouts::response`] deadline, and a failure that means the
/// connection is gone (a timeout; behind Sentinel, a primary that died or was demoted) has the
/// store open a new one in the background. Take one from [`RedisStore::connection`] for each
/// use: it is the connection of that moment.
///
/// In a Cluster, every key of one command, script or pipeline must be in one slot: give them
/// one hash tag (`{…}`), as the store's own keys do.
///
/// [`RedisStore::connection`]: super::RedisStore::connection
#[derive(Clone)]
pub struct RedisConnection {
    conn: Conn,
    link: Arc<Link>,
}

impl std::fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConnection")
            .field("topology", &self.link.topology)
            .finish_non_exhaustive()
    }
}

impl RedisConnection {
    /// The deployment this connection is to.
    pub fn topology(&self) -> RedisTopology {
        self.link.topology
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let within = self.link.timeouts.response;
            let r = tokio::time::timeout(within, self.conn.req_packed_command(cmd))
                .await
                .unwrap_or_else(|_| Err(timed_out()));
            if let Err(e) = &r {
                self.link.after_error(e);
            }
            r
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let within = self.link.timeouts.response;
            let r = tokio::time::timeout(within, self.conn.req_packed_commands(cmd, offset, count))
                .await
                .unwrap_or_else(|_| Err(timed_out()));
            if let Err(e) = &r {
                self.link.after_error(e);
            }
            r
        })
    }

    fn get_db(&self) -> i64 {
        self.conn.get_db()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topology(url: &str) -> Result<RedisTopology, String> {
        RedisTopology::of(url).map_err(|e| e.to_string())
    }

    #[test]
    fn url_forms() {
        assert_eq!(
            topology("redis://127.0.0.1:6379/0"),
            Ok(RedisTopology::Node)
        );
        assert_eq!(topology("rediss://h:6380/1"), Ok(RedisTopology::Node));
        assert_eq!(
            topology("redis+sentinel://a:26379,b:26379,c:26379/mymaster"),
            Ok(RedisTopology::Sentinel)
        );
        assert_eq!(
            topology("redis+sentinel://:p%40ss@a:26379/mymaster/2"),
            Ok(RedisTopology::Sentinel)
        );
        assert_eq!(
            topology("redis+cluster://a:7000,b:7001"),
            Ok(RedisTopology::Cluster)
        );
        assert_eq!(
            topology("redis+cluster://user:pw@a:7000/"),
            Ok(RedisTopology::Cluster)
        );
        assert_eq!(
            topology("redis+cluster://[::1]:7000,[::1]:7001/0"),
            Ok(RedisTopology::Cluster)
        );
        // A password with `@`, `,` or `/` (percent-encoded, as a URL must have it).
        assert_eq!(
            topology("redis+sentinel://:p%40s%2Cs%2F@a:26379/m"),
            Ok(RedisTopology::Sentinel)
        );
        for bad in [
            "memcached://a:1",
            "redis+sentinel://a:26379",
            "redis+sentinel://a:26379/",
            "redis+sentinel://a:26379/m/x",
            "redis+sentinel://a/m",
            "redis+cluster://a:7000,,b:7001",
            "redis+cluster://a:7000/3",
            "redis+cluster://",
            "redis+cluster://[::1],[::1]:7001",
            "redis+cluster://a:7000?password=x",
            "redis+sentinel://a:1/m?db=2",
            "redis+sentinel://a:notaport/m",
        ] {
            let e = topology(bad).unwrap_err();
            assert!(e.contains("redis url is not valid"), "{bad}: {e}");
        }
        // The message never quotes the URL (it may carry a password).
        let e = topology("redis+sentinel://:hunter2@a:1").unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
    }
}
