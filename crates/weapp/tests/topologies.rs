//! The token store on production Redis topologies started here: a Cluster of three primaries
//! with a replica each, and a primary with its replica behind three sentinels. The store's
//! contract (one lease, fenced writes, compare-and-swap invalidation), one fetch for many
//! clients, and what a failover can lose: an acknowledged write that never reached the replica.

use std::sync::Arc;
use std::time::Duration;

use weapp::token::redis::{RedisStore, RedisTopology};
use weapp::token::{TokenKey, TokenPolicy, TokenStore};
use weapp::{AppSecret, Client, TokenMode};
use weapp_sim::TokenKind;
use weapp_test_support::{sim_with_app, unique_prefix, RedisCluster, RedisSentinels};

mod store_contract;

enum Deployment {
    Cluster(RedisCluster),
    Sentinel(RedisSentinels),
}

impl Deployment {
    fn url(&self) -> String {
        match self {
            Deployment::Cluster(c) => c.url(),
            Deployment::Sentinel(s) => s.url(),
        }
    }

    /// Cuts the replication of the primary holding `key`, so the next writes are acknowledged
    /// by the primary alone; returns the primary's port.
    fn cut_replication_of(&self, key: &str) -> u16 {
        match self {
            Deployment::Cluster(c) => {
                let p = c.primary_for(key);
                c.cut_replication(p);
                p
            }
            Deployment::Sentinel(s) => s.cut_replication().0,
        }
    }

    /// Kills `primary` with SIGKILL and waits until its replica has taken over.
    fn fail_over(&mut self, primary: u16) -> Duration {
        match self {
            Deployment::Cluster(c) => {
                c.kill(primary);
                c.wait_failover(primary)
            }
            Deployment::Sentinel(s) => {
                assert_eq!(s.kill_primary(), primary);
                s.wait_failover(primary)
            }
        }
    }
}

async fn store(url: &str, prefix: &str) -> RedisStore {
    RedisStore::connect(url, prefix.to_owned()).await.unwrap()
}

/// The store's contract for keys spread over the slots (and so over primaries).
async fn contract(store: &RedisStore) {
    for i in 0..6 {
        store_contract::fencing_contract(store, &format!("wxtopo{i}")).await;
    }
}

async fn exercise(mut deployment: Deployment, topology: RedisTopology) {
    let url = deployment.url();
    let prefix = unique_prefix("topology");
    if let Deployment::Sentinel(s) = &deployment {
        // The first sentinel hangs (a partition: connections accepted, nothing answered): a
        // lookup costs its per-sentinel budget and goes on to the next one.
        let addrs = s.sentinel_addrs();
        let proxy = weapp_test_support::HangingProxy::start(addrs[0]).await;
        proxy.hang();
        let url = format!(
            "redis+sentinel://{},{},{}/{}",
            proxy.addr(),
            addrs[1],
            addrs[2],
            weapp_test_support::SENTINEL_MASTER
        );
        let started = std::time::Instant::now();
        let past = store(&url, &prefix).await;
        past.ping().await.unwrap();
        println!(
            "connected past a hanging sentinel in {:?}",
            started.elapsed()
        );
    }
    let shared = store(&url, &prefix).await;
    assert_eq!(shared.topology(), topology);
    shared.ping().await.unwrap();
    contract(&shared).await;

    // Eight clients, each with its own connection as separate processes would have: one fetch.
    let (sim, appid, secret) = sim_with_app().await;
    let policy = TokenPolicy {
        local_cache: Duration::from_millis(100),
        ..TokenPolicy::default()
    };
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(
            Client::builder(&appid, AppSecret::new(&secret))
                .base_url(sim.url())
                .token_mode(TokenMode::Classic)
                .token_policy(policy.clone())
                .token_store(Arc::new(store(&url, &prefix).await))
                .build()
                .unwrap(),
        );
    }
    let mut tasks = Vec::new();
    for c in &clients {
        for _ in 0..25 {
            let c = c.clone();
            tasks.push(tokio::spawn(async move { c.access_token().await.unwrap() }));
        }
    }
    let mut tokens = Vec::new();
    for t in tasks {
        tokens.push(t.await.unwrap());
    }
    assert!(tokens.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(sim.sim().tokens_issued(&appid, TokenKind::Classic), 1);
    let first = tokens[0].clone();

    // A failover that loses an acknowledged write: the primary holding the app's keys loses
    // its replica, a refresh lands on the primary alone (acknowledged), the primary dies, the
    // replica — which never saw that write — takes over.
    let key = format!("{prefix}:{{{appid}:classic}}:token");
    let holder = &clients[0];
    let primary = deployment.cut_replication_of(&key);
    let second = holder
        .token_manager()
        .unwrap()
        .force_refresh()
        .await
        .unwrap()
        .access_token;
    assert_ne!(second, first);
    assert_eq!(sim.sim().tokens_issued(&appid, TokenKind::Classic), 2);
    let took = tokio::task::block_in_place(|| deployment.fail_over(primary));
    println!("{topology:?}: failover took {took:?}");

    // The new primary went back to the first token: the write is lost.
    let fresh = store(&url, &prefix).await;
    let tkey = TokenKey::new(appid.clone(), TokenMode::Classic);
    let mut rolled_back = None;
    for _ in 0..50 {
        match fresh.load(&tkey).await {
            Ok(t) => {
                rolled_back = t;
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    // The refresh is lost: the new primary holds the first token — or, seen once in about
    // fifteen runs on a loaded machine for a Cluster, no token at all (the test support waits
    // for the replica before the cut; what emptied it is not known). Either way a process
    // holding the lost token must put it back without a fetch, which is what follows.
    if rolled_back.is_none() {
        if let Deployment::Cluster(c) = &deployment {
            for p in c.ports() {
                let keys = weapp_test_support::redis_cli(p, &["INFO", "keyspace"]);
                let role = weapp_test_support::redis_cli(p, &["ROLE"]);
                eprintln!("node {p}: {} | {}", keys.trim(), role.replace('\n', " "));
            }
        }
    }
    let held = rolled_back.map(|t| t.access_token);
    assert!(
        held.is_none() || held.as_ref() == Some(&first),
        "{topology:?}: the replica never had the refresh, it holds {held:?}"
    );

    // The holder of the lost token puts it back (under a new lease, no fetch) the next time
    // it reads the store; every client then agrees on it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut agreed = false;
    for _ in 0..150 {
        let from_holder = holder.access_token().await;
        let stored = fresh.load(&tkey).await.ok().flatten();
        if from_holder.as_ref().ok() == Some(&second)
            && stored.as_ref().map(|t| &t.access_token) == Some(&second)
        {
            agreed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(agreed, "{topology:?}: the lost token was put back");
    let after = std::time::Instant::now();
    // The others, idle through the failover, find their connection dead on their next read:
    // they serve their copy (alive) through the store's cooldown, then read the store.
    let waits: Vec<_> = clients
        .iter()
        .map(|c| {
            let (c, second) = (c.clone(), second.clone());
            tokio::spawn(async move {
                for _ in 0..200 {
                    if c.access_token().await.unwrap() == second {
                        return true;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                false
            })
        })
        .collect();
    for (i, w) in waits.into_iter().enumerate() {
        assert!(
            w.await.unwrap(),
            "{topology:?}: client {i} reads the put-back token"
        );
    }
    println!(
        "{topology:?}: the idle clients read the put-back token {:?} after it was put back",
        after.elapsed()
    );
    assert_eq!(
        sim.sim().tokens_issued(&appid, TokenKind::Classic),
        2,
        "{topology:?}: the lost write cost no fetch"
    );
    // The first token dies five minutes after the second was issued; nobody holds it.
    sim.sim().advance(301);
    assert!(sim.sim().check_token(Some(second.expose())).is_ok());
    assert!(sim.sim().check_token(Some(first.expose())).is_err());

    if let Deployment::Cluster(c) = &mut deployment {
        // A node without the store's scripts (restarted, just promoted) while another primary
        // is unreachable: the script runs on the key's node all the same (`EVAL` there; the
        // `redis` crate's `SCRIPT LOAD` goes to every node and fails on the dead one).
        let k = TokenKey::new(
            format!("wxnoscript{}", rand::random::<u32>()),
            TokenMode::Classic,
        );
        let home = c.primary_for(&fresh.redis_key(&k, "lock"));
        let other = c
            .primaries()
            .into_iter()
            .find(|p| *p != home)
            .expect("another primary");
        c.kill(other);
        assert_eq!(
            weapp_test_support::redis_cli(home, &["SCRIPT", "FLUSH"]).trim(),
            "OK"
        );
        let lease = fresh.try_lock(&k, Duration::from_secs(5)).await;
        assert!(
            matches!(lease, Ok(Some(_))),
            "a script on a healthy slot while a node is down: {lease:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_on_a_cluster_keeps_its_contract_and_survives_a_lost_write() {
    let cluster = tokio::task::spawn_blocking(RedisCluster::start)
        .await
        .unwrap();
    exercise(Deployment::Cluster(cluster), RedisTopology::Cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_behind_sentinel_keeps_its_contract_and_survives_a_lost_write() {
    let sentinels = tokio::task::spawn_blocking(RedisSentinels::start)
        .await
        .unwrap();
    exercise(Deployment::Sentinel(sentinels), RedisTopology::Sentinel).await;
}
