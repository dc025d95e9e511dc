//! A Redis that hangs (a partition: packets dropped, no RST, nothing closed): every broker read
//! during the hang is answered from the local copy within the configured Redis timeout, nothing
//! is refreshed twice, and the server uses Redis again on its own once it answers.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{sqlite_url, within, world, KEY};
use serde_json::json;
use weapp::clock::ManualClock;
use weapp::TokenMode;
use weapp_sim::TokenKind;
use weapp_test_support::{HangingProxy, RedisServer};

/// The Redis timeout the server is configured with here.
const REDIS_TIMEOUT: Duration = Duration::from_millis(500);
/// What a read may take beyond it: the rest of the request, and a CI machine whose two cores
/// run the other tests too. A stall would be unbounded (or one timeout per Redis command, several
/// per read), so this still tells one bounded wait from a stall.
const MARGIN: Duration = Duration::from_millis(1500);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hanging_redis_costs_each_read_one_bounded_timeout_and_is_rejoined() {
    let redis = RedisServer::start();
    let proxy = HangingProxy::start(format!("127.0.0.1:{}", redis.port()).parse().unwrap()).await;
    let w = world().await;
    // A virtual clock (shared with nothing but the server): moved past the local token cache
    // during the hang, so reads do go to Redis instead of the copy read a moment ago.
    let clock = ManualClock::new(w.sim.sim().now_ms());
    let mut config = w.config(&sqlite_url(), Some(proxy.redis_url()), TokenMode::Classic);
    config.clock = Some(Arc::new(clock.clone()));
    config.redis_timeout_ms = REDIS_TIMEOUT.as_millis() as u64;
    let prefix = config.redis_prefix.clone();
    let server = weapp_server::spawn(config).await.unwrap();
    let url = format!("{}/v1/apps/{}/access_token", server.url(), w.appid);

    let read = |http: reqwest::Client, url: String| async move {
        let start = Instant::now();
        let resp = http.get(url).bearer_auth(KEY).send().await.unwrap();
        let status = resp.status().as_u16();
        let v: serde_json::Value = resp.json().await.unwrap_or_default();
        (
            start.elapsed(),
            status,
            v["access_token"].as_str().unwrap_or_default().to_owned(),
        )
    };
    let (_, s, token) = read(w.http.clone(), url.clone()).await;
    assert_eq!(s, 200);
    assert_eq!(w.sim.sim().tokens_issued(&w.appid, TokenKind::Classic), 1);

    proxy.hang();
    // 200 reads, 20 at a time; before each batch the clock passes the local cache's lifetime.
    let mut slowest = Duration::ZERO;
    let mut waited = 0;
    for _ in 0..10 {
        clock.advance_secs(21);
        let batch: Vec<_> = (0..20)
            .map(|_| tokio::spawn(read(w.http.clone(), url.clone())))
            .collect();
        for t in batch {
            let (took, s, got) = t.await.unwrap();
            assert_eq!((s, got.as_str()), (200, token.as_str()));
            slowest = slowest.max(took);
            waited += usize::from(took >= REDIS_TIMEOUT / 2);
        }
    }
    eprintln!("slowest of 200 broker reads during the hang: {slowest:?} (Redis timeout {REDIS_TIMEOUT:?}); {waited} waited on Redis at all");
    assert!(
        slowest <= REDIS_TIMEOUT + MARGIN,
        "a read took {slowest:?} during the hang"
    );
    assert_eq!(
        w.sim.sim().tokens_issued(&w.appid, TokenKind::Classic),
        1,
        "nothing refreshed during the hang"
    );

    // Redis answers again: the server notices on its own (readiness) ...
    proxy.resume();
    let ready_url = format!("{}/readyz", server.url());
    let took = within(Duration::from_secs(20), "redis ready again", || {
        let http = w.http.clone();
        let u = ready_url.clone();
        async move {
            let r = http.get(u).send().await.unwrap();
            r.status().as_u16() == 200
        }
    })
    .await;
    eprintln!("readiness back {took:?} after Redis answered again");

    // ... and writes to it again: a token invalidated through the broker is refreshed once and
    // the new one lands in Redis.
    let (s, v) = w
        .call(
            "POST",
            format!("{url}/invalidate"),
            Some(KEY),
            Some(json!({"access_token": token})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let fresh = v["access_token"].as_str().unwrap().to_owned();
    assert_ne!(fresh, token);
    assert_eq!(w.sim.sim().tokens_issued(&w.appid, TokenKind::Classic), 2);
    let client = redis::Client::open(redis.url()).unwrap();
    let took = within(Duration::from_secs(20), "the new token in Redis", || {
        let client = client.clone();
        let pattern = format!("{prefix}:*{}*:token", w.appid);
        let (http, url, fresh) = (w.http.clone(), url.clone(), fresh.clone());
        async move {
            // Reads keep coming (one of them probes the store after its cooldown).
            let _ = read(http, url).await;
            let mut conn = client.get_multiplexed_async_connection().await.unwrap();
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(&pattern)
                .query_async(&mut conn)
                .await
                .unwrap();
            for k in keys {
                let v: Option<String> = redis::cmd("GET")
                    .arg(&k)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                if v.is_some_and(|v| v.contains(&fresh)) {
                    return true;
                }
            }
            false
        }
    })
    .await;
    eprintln!("the refreshed token reached Redis {took:?} after the invalidation");
    assert_eq!(w.sim.sim().tokens_issued(&w.appid, TokenKind::Classic), 2);
    drop(server);
}
