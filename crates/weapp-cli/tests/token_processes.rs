//! Real processes sharing one token through Redis while WeChat misbehaves: `weapp token`
//! children started over time against a slow simulator, and a refresher killed with SIGKILL in
//! the middle of its fetch.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{printed_tokens, token_process};
use weapp::token::redis::RedisStore;
use weapp::{AccessToken, AppSecret, Client, TokenMode};
use weapp_sim::{Fault, TokenKind};
use weapp_test_support::{sim_with_app, unique_prefix, RedisServer};

/// The reported incident: six processes started over time while WeChat answers the first two
/// `/cgi-bin/token` calls later than the request timeout — which equals the lease. Before the
/// lease was renewed during a fetch, it expired mid-fetch, a second process fetched too, and the
/// processes printed two different tokens, one of which died five minutes later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_sharing_redis_under_a_slow_upstream_print_one_token() {
    let redis = RedisServer::start();
    let (sim, appid, secret) = sim_with_app().await;
    let prefix = unique_prefix("slow-processes");
    sim.sim()
        .add_fault(Fault::latency("/cgi-bin/token", 1500).times(2));
    let mut children = Vec::new();
    for _ in 0..6 {
        children.push(token_process(
            sim.url(),
            &appid,
            &secret,
            &redis.url(),
            &prefix,
            &["--timeout-ms", "1000", "--lock-ttl-ms", "1000"],
        ));
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let tokens = printed_tokens(children).await;
    assert!(
        tokens.windows(2).all(|p| p[0] == p[1]),
        "every process printed the same token: {tokens:?}"
    );
    // WeChat processed the slow calls too; all of them were made under the one lease.
    let issued = sim.sim().tokens_issued(&appid, TokenKind::Classic);
    assert!(issued <= 3, "{issued} issued");
    sim.sim().advance(301);
    assert!(
        sim.sim().check_token(Some(&tokens[0])).is_ok(),
        "the shared token outlives the overlap"
    );
}

/// A refresher killed with SIGKILL while WeChat is slow to answer it holds the lease only until
/// the lease expires; then another process takes over and gets a working token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresher_killed_mid_fetch_hands_over_within_its_lease() {
    let redis = RedisServer::start();
    let (sim, appid, secret) = sim_with_app().await;
    let prefix = unique_prefix("killed");
    sim.sim()
        .add_fault(Fault::latency("/cgi-bin/token", 5_000).times(1));
    let mut child = token_process(
        sim.url(),
        &appid,
        &secret,
        &redis.url(),
        &prefix,
        &["--lock-ttl-ms", "1000"],
    );
    let waited = Instant::now();
    while sim.sim().calls("/cgi-bin/token") == 0 {
        assert!(
            waited.elapsed() < Duration::from_secs(10),
            "the child never called"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The child holds the lease and is renewing it while it waits for WeChat.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let lock_key = format!("{prefix}:{{{appid}:classic}}:lock");
    let held: Option<String> = redis::cmd("GET")
        .arg(&lock_key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(held.is_some(), "renewed past its 1 s TTL while fetching");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let killed_at = Instant::now();

    let survivor = Client::builder(&appid, AppSecret::new(&secret))
        .base_url(sim.url())
        .token_mode(TokenMode::Classic)
        .token_store(Arc::new(
            RedisStore::connect(&redis.url(), prefix.clone())
                .await
                .unwrap(),
        ))
        .build()
        .unwrap();
    let token: AccessToken = survivor.access_token().await.unwrap();
    let handover = killed_at.elapsed();
    assert!(
        handover < Duration::from_millis(2500),
        "took over within about one lease: {handover:?}"
    );
    assert!(sim.sim().check_token(Some(token.expose())).is_ok());
    // The dead child's request was processed by WeChat (a token nobody will ever see) and the
    // survivor fetched one more: two, not a storm.
    assert_eq!(sim.sim().tokens_issued(&appid, TokenKind::Classic), 2);
}
