//! Production Redis topologies on loopback, started by the tests that need them: a Redis
//! Cluster of three primaries with a replica each, and a primary with a replica watched by
//! three sentinels. Every node is a private `redis-server` on a free port, killed on drop; the
//! administration goes through `redis-cli`, which ships with it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

/// One `redis-server` process of a topology.
#[derive(Debug)]
struct Node {
    port: u16,
    child: Option<Child>,
}

impl Node {
    fn start(port: u16, args: &[&str]) -> Self {
        let child = Command::new("redis-server")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (CI installs it; see .ci/run)");
        Node {
            port,
            child: Some(child),
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill(); // SIGKILL
            let _ = c.wait();
        }
    }
}

/// `redis-cli -p <port> <args…>`'s output (empty when the node does not answer).
pub fn redis_cli(port: u16, args: &[&str]) -> String {
    Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Polls `f` every 50 ms until it is true (panics with `what` after `limit`).
fn wait(limit: Duration, what: &str, f: impl FnMut() -> bool) {
    wait_or(limit, what, String::new, f);
}

/// [`wait`], the panic showing `state()` too.
fn wait_or(limit: Duration, what: &str, state: impl Fn() -> String, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < limit,
            "{what}: not within {limit:?}\n{}",
            state()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn scratch_dir(kind: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "weapp-{kind}-{}-{}",
        std::process::id(),
        crate::unique_prefix("t").replace(':', "-")
    ));
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    dir
}

/// The replication offset a replica has acknowledged, per `INFO replication` of its primary,
/// and the primary's own.
fn replication_offsets(primary: u16) -> (Option<u64>, Option<u64>) {
    let info = redis_cli(primary, &["INFO", "replication"]);
    let mut own = None;
    let mut acked = None;
    for line in info.lines() {
        if let Some(v) = line.strip_prefix("master_repl_offset:") {
            own = v.trim().parse().ok();
        }
        if line.starts_with("slave0:") {
            acked = line
                .split(',')
                .find_map(|kv| kv.strip_prefix("offset="))
                .and_then(|v| v.trim().parse().ok());
        }
    }
    (own, acked)
}

/// Waits until `primary`'s replica has acknowledged every write so far: a test that kills the
/// primary afterwards measures the failover, not the replication lag (which it would lose).
fn wait_replicated(primary: u16) {
    wait(
        Duration::from_secs(10),
        "the replica caught up with its primary",
        || {
            // Replicas acknowledge once a second: ask for it.
            let _ = redis_cli(primary, &["WAIT", "1", "200"]);
            matches!(replication_offsets(primary), (Some(own), Some(acked)) if acked >= own)
        },
    )
}

/// Cuts the link from `primary` to its `replica` so that what is written from now on is
/// acknowledged by the primary alone — the window a failover with asynchronous replication
/// loses: the primary starts requiring a password its replica does not know and drops its
/// replica's connection, so the replica cannot resync. (Stopping the replica's process would
/// not do: the kernel still takes the replication stream into its socket buffer.)
///
/// # Panics
/// When the replica does not see its link go down within 10 seconds.
pub fn cut_replication(primary: u16, replica: u16) {
    use std::io::Write;
    // What was written before is on both.
    wait_replicated(primary);
    let mut cli = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &primary.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-cli");
    cli.stdin
        .take()
        .expect("stdin")
        .write_all(b"CONFIG SET requirepass weapp-cut-replication\nCLIENT KILL TYPE replica\n")
        .expect("write to redis-cli");
    assert!(cli.wait().expect("redis-cli").success());
    wait(
        Duration::from_secs(10),
        "the replica lost its primary",
        || redis_cli(replica, &["INFO", "replication"]).contains("master_link_status:down"),
    );
}

/// A Redis Cluster: three primaries with one replica each, `cluster-node-timeout` 2 s (a dead
/// primary's replica takes over within a few seconds; a loaded test machine does not fail one over
/// by mistake) and `cluster-replica-validity-factor` 0
/// (a replica takes over however long its link has been down: availability over the writes
/// it missed, which is what [`cut_replication`] tests).
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<Node>,
    dir: PathBuf,
}

impl RedisCluster {
    /// Starts six nodes, creates the cluster with `redis-cli --cluster create` and waits until
    /// every slot is served and every primary has its replica.
    ///
    /// # Panics
    /// When a node does not start or the cluster does not form within 30 seconds.
    pub fn start() -> Self {
        let dir = scratch_dir("cluster");
        let mut nodes = Vec::new();
        for _ in 0..6 {
            // A node's cluster bus listens on its port + 10000, which must be a port too.
            let port = std::iter::repeat_with(free_port)
                .find(|p| *p <= 55_535)
                .expect("a free port");
            let conf = dir.join(format!("nodes-{port}.conf"));
            let node = Node::start(
                port,
                &[
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    conf.to_str().unwrap(),
                    "--cluster-node-timeout",
                    "2000",
                    // A replica whose link went down before its primary died still takes over
                    // (Redis 7.0 counts a link that failed to resync as down for ever).
                    "--cluster-replica-validity-factor",
                    "0",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    dir.to_str().unwrap(),
                    "--dbfilename",
                    &format!("dump-{port}.rdb"),
                ],
            );
            nodes.push(node);
        }
        let cluster = RedisCluster { nodes, dir };
        for n in &cluster.nodes {
            wait(Duration::from_secs(10), "a cluster node answers", || {
                redis_cli(n.port, &["PING"]).trim() == "PONG"
            });
        }
        let addrs: Vec<String> = cluster
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli");
        assert!(created.success(), "redis-cli --cluster create failed");
        wait(Duration::from_secs(30), "the cluster formed", || {
            cluster.nodes.iter().all(|n| {
                let info = redis_cli(n.port, &["CLUSTER", "INFO"]);
                info.contains("cluster_state:ok")
                    && info.contains("cluster_slots_ok:16384")
                    && info.contains("cluster_known_nodes:6")
            }) && cluster.primaries().len() == 3
                && cluster
                    .primaries()
                    .iter()
                    .all(|p| replication_offsets(*p).1.is_some())
        });
        cluster
    }

    /// The ports of the nodes still running.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.port)
            .collect()
    }

    /// `redis+cluster://…` naming every node.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis+cluster://{}", hosts.join(","))
    }

    fn live_port(&self) -> u16 {
        self.nodes
            .iter()
            .find(|n| n.child.is_some())
            .map(|n| n.port)
            .expect("a live node")
    }

    /// The `CLUSTER NODES` lines of the live primaries: (port, first slot range…).
    fn primaries_table(&self) -> Vec<(u16, Vec<(u32, u32)>)> {
        let nodes = redis_cli(self.live_port(), &["CLUSTER", "NODES"]);
        let mut out = Vec::new();
        for line in nodes.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 8 || !f[2].contains("master") || f[2].contains("fail") {
                continue;
            }
            let Some(port) = f[1]
                .split('@')
                .next()
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| p.parse().ok())
            else {
                continue;
            };
            let ranges = f[8..]
                .iter()
                .filter_map(|r| {
                    let (a, b) = r.split_once('-').unwrap_or((r, r));
                    Some((a.parse().ok()?, b.parse().ok()?))
                })
                .collect();
            out.push((port, ranges));
        }
        out
    }

    /// The ports of the primaries serving slots.
    pub fn primaries(&self) -> Vec<u16> {
        self.primaries_table()
            .into_iter()
            .filter(|(_, r)| !r.is_empty())
            .map(|(p, _)| p)
            .collect()
    }

    /// The port of the primary serving `key`'s slot.
    ///
    /// # Panics
    /// When no primary serves it.
    pub fn primary_for(&self, key: &str) -> u16 {
        let slot: u32 = redis_cli(self.live_port(), &["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .expect("CLUSTER KEYSLOT");
        self.primaries_table()
            .into_iter()
            .find(|(_, ranges)| ranges.iter().any(|(a, b)| (*a..=*b).contains(&slot)))
            .map(|(p, _)| p)
            .expect("a primary serves the slot")
    }

    /// The port of `primary`'s replica.
    ///
    /// # Panics
    /// When it has none.
    pub fn replica_of(&self, primary: u16) -> u16 {
        let nodes = redis_cli(self.live_port(), &["CLUSTER", "NODES"]);
        let lines: Vec<Vec<&str>> = nodes
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        let port_of = |f: &Vec<&str>| -> Option<u16> {
            f.get(1)?
                .split('@')
                .next()?
                .rsplit(':')
                .next()?
                .parse()
                .ok()
        };
        let id = lines
            .iter()
            .find(|f| port_of(f) == Some(primary))
            .map(|f| f[0])
            .expect("the primary is known");
        lines
            .iter()
            .find(|f| f.len() > 3 && f[2].contains("slave") && f[3] == id)
            .and_then(port_of)
            .expect("the primary has a replica")
    }

    /// Cuts `primary`'s replication (see [`cut_replication`]); returns its replica's port.
    pub fn cut_replication(&self, primary: u16) -> u16 {
        let replica = self.replica_of(primary);
        cut_replication(primary, replica);
        replica
    }

    /// Waits until the replica of `primary` has every write, then kills `primary` with
    /// SIGKILL.
    pub fn kill_after_replication(&mut self, primary: u16) {
        wait_replicated(primary);
        self.kill(primary);
    }

    /// Kills the node on `port` with SIGKILL.
    pub fn kill(&mut self, port: u16) {
        if let Some(n) = self.nodes.iter_mut().find(|n| n.port == port) {
            n.kill();
        }
    }

    /// Waits until a live node says the cluster is whole again (every slot served by a live
    /// primary) and returns how long it took.
    ///
    /// # Panics
    /// After 30 seconds.
    pub fn wait_failover(&self, dead: u16) -> Duration {
        let start = Instant::now();
        let nodes = || redis_cli(self.live_port(), &["CLUSTER", "NODES"]);
        let what = format!("the cluster failed over (killed {dead})");
        wait_or(Duration::from_secs(30), &what, nodes, || {
            let table = self.primaries_table();
            let served: u32 = table
                .iter()
                .filter(|(p, _)| *p != dead)
                .flat_map(|(_, r)| r.iter().map(|(a, b)| b - a + 1))
                .sum();
            served == 16384
                && redis_cli(self.live_port(), &["CLUSTER", "INFO"]).contains("cluster_state:ok")
        });
        start.elapsed()
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A primary and its replica behind three sentinels (quorum 2, `down-after-milliseconds`
/// 2000), the master named `weapp`.
#[derive(Debug)]
pub struct RedisSentinels {
    data: Vec<Node>,
    sentinels: Vec<Node>,
    dir: PathBuf,
}

/// The master name the sentinels of [`RedisSentinels`] watch.
pub const SENTINEL_MASTER: &str = "weapp";

/// The port of the primary the sentinel on `sentinel` names.
fn named_primary(sentinel: u16) -> Option<u16> {
    redis_cli(
        sentinel,
        &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_MASTER],
    )
    .lines()
    .nth(1)
    .and_then(|p| p.trim().parse().ok())
}

impl RedisSentinels {
    /// Starts the primary, its replica and three sentinels, and waits until every sentinel
    /// knows the replica and the two other sentinels.
    ///
    /// # Panics
    /// When something does not come up within 30 seconds.
    pub fn start() -> Self {
        let dir = scratch_dir("sentinel");
        let primary = free_port();
        let replica = free_port();
        // The replica's first sync writes an RDB file: into the scratch directory, not the
        // test's working directory.
        let common = |port: u16| {
            vec![
                "--port".to_owned(),
                port.to_string(),
                "--bind".into(),
                "127.0.0.1".into(),
                "--save".into(),
                String::new(),
                "--appendonly".into(),
                "no".into(),
                "--dir".into(),
                dir.to_string_lossy().into_owned(),
                "--dbfilename".into(),
                format!("dump-{port}.rdb"),
            ]
        };
        let args = common(primary);
        let p = Node::start(
            primary,
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        let mut args = common(replica);
        args.extend([
            "--replicaof".into(),
            "127.0.0.1".into(),
            primary.to_string(),
        ]);
        let r = Node::start(
            replica,
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        let mut sentinels = Vec::new();
        for i in 0..3 {
            let port = free_port();
            let conf = dir.join(format!("sentinel-{i}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {}\n\
                     sentinel monitor {SENTINEL_MASTER} 127.0.0.1 {primary} 2\n\
                     sentinel down-after-milliseconds {SENTINEL_MASTER} 2000\n\
                     sentinel failover-timeout {SENTINEL_MASTER} 5000\n\
                     sentinel parallel-syncs {SENTINEL_MASTER} 1\n",
                    dir.display()
                ),
            )
            .expect("write a sentinel config");
            sentinels.push(Node::start(port, &[conf.to_str().unwrap(), "--sentinel"]));
        }
        let setup = RedisSentinels {
            data: vec![p, r],
            sentinels,
            dir,
        };
        wait(
            Duration::from_secs(30),
            "the sentinels see everything",
            || {
                setup.sentinels.iter().all(|s| {
                    let m = redis_cli(s.port, &["SENTINEL", "MASTER", SENTINEL_MASTER]);
                    let fields: Vec<&str> = m.lines().map(str::trim).collect();
                    let get = |k: &str| {
                        fields
                            .iter()
                            .position(|f| *f == k)
                            .and_then(|i| fields.get(i + 1))
                            .copied()
                    };
                    get("num-slaves") == Some("1") && get("num-other-sentinels") == Some("2")
                }) && replication_offsets(primary).1.is_some()
            },
        );
        setup
    }

    /// The sentinels' addresses.
    pub fn sentinel_addrs(&self) -> Vec<std::net::SocketAddr> {
        self.sentinels
            .iter()
            .map(|n| std::net::SocketAddr::from(([127, 0, 0, 1], n.port)))
            .collect()
    }

    /// `redis+sentinel://s1,s2,s3/weapp`.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis+sentinel://{}/{SENTINEL_MASTER}", hosts.join(","))
    }

    /// The port of the primary the sentinels name now.
    pub fn primary(&self) -> Option<u16> {
        self.sentinels
            .iter()
            .find(|s| s.child.is_some())
            .and_then(|s| named_primary(s.port))
    }

    /// The port of the data node that is not the primary now.
    ///
    /// # Panics
    /// When the sentinels name no primary.
    pub fn replica(&self) -> u16 {
        let primary = self.primary().expect("the sentinels name a primary");
        self.data
            .iter()
            .map(|n| n.port)
            .find(|p| *p != primary)
            .expect("two data nodes")
    }

    /// Cuts the primary's replication (see [`cut_replication`]); returns (primary, replica).
    ///
    /// # Panics
    /// When the sentinels name no primary.
    pub fn cut_replication(&self) -> (u16, u16) {
        let primary = self.primary().expect("the sentinels name a primary");
        let replica = self.replica();
        cut_replication(primary, replica);
        (primary, replica)
    }

    /// Kills the primary with SIGKILL at once, whatever its replica has; returns its port.
    ///
    /// # Panics
    /// When the sentinels name no primary.
    pub fn kill_primary(&mut self) -> u16 {
        let primary = self.primary().expect("the sentinels name a primary");
        if let Some(n) = self.data.iter_mut().find(|n| n.port == primary) {
            n.kill();
        }
        primary
    }

    /// Waits until the replica has every write, then kills the primary with SIGKILL; returns
    /// its port.
    ///
    /// # Panics
    /// When the sentinels name no primary.
    pub fn kill_primary_after_replication(&mut self) -> u16 {
        let primary = self.primary().expect("the sentinels name a primary");
        wait_replicated(primary);
        if let Some(n) = self.data.iter_mut().find(|n| n.port == primary) {
            n.kill();
        }
        primary
    }

    /// Waits until the sentinels name another primary than `dead` and it says it is one;
    /// returns how long it took.
    ///
    /// # Panics
    /// After 30 seconds.
    pub fn wait_failover(&self, dead: u16) -> Duration {
        let start = Instant::now();
        wait(Duration::from_secs(30), "the sentinels failed over", || {
            let named: Vec<Option<u16>> = self
                .sentinels
                .iter()
                .map(|s| named_primary(s.port))
                .collect();
            // Every sentinel names the new primary, and it says it is one.
            named.iter().all(|p| p.is_some() && *p == named[0])
                && named[0].is_some_and(|p| {
                    p != dead && redis_cli(p, &["ROLE"]).lines().next() == Some("master")
                })
        });
        start.elapsed()
    }
}

impl Drop for RedisSentinels {
    fn drop(&mut self) {
        for n in self.sentinels.iter_mut().chain(self.data.iter_mut()) {
            n.kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
