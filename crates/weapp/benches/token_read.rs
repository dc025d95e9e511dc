//! Token read latency: how long `access_token()` takes once a token is cached, per store,
//! next to the raw operation underneath (a mutex-guarded clone; a plain Redis GET) measured in
//! the same run as the baseline — and the Redis store on each topology (one node, a Sentinel
//! primary, a 3-primary Cluster; all on loopback, started here) without the local cache, so
//! every read is one round trip. Run: `cargo bench -p weapp --features redis --bench token_read`.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use weapp::token::redis::RedisStore;
use weapp::token::TokenPolicy;
use weapp::{AppSecret, Client, TokenMode};
use weapp_test_support::{sim_with_app, unique_prefix, RedisCluster, RedisSentinels, RedisServer};

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let redis = RedisServer::start();
    let (sim, appid, secret) = rt.block_on(sim_with_app());
    let build = |store: Option<RedisStore>, local_cache: Duration| {
        let mut b = Client::builder(&appid, AppSecret::new(secret.clone()))
            .base_url(sim.url())
            .token_mode(TokenMode::Stable)
            .token_policy(TokenPolicy {
                local_cache,
                ..TokenPolicy::default()
            });
        if let Some(s) = store {
            b = b.token_store(Arc::new(s));
        }
        b.build().unwrap()
    };
    let memory = build(None, Duration::ZERO);
    let store = rt
        .block_on(RedisStore::connect(&redis.url(), unique_prefix("bench")))
        .unwrap();
    let redis_client = build(Some(store), Duration::ZERO);
    let store = rt
        .block_on(RedisStore::connect(
            &redis.url(),
            unique_prefix("bench-cached"),
        ))
        .unwrap();
    let redis_cached = build(Some(store), Duration::from_secs(60));
    let sentinels = RedisSentinels::start();
    let store = rt
        .block_on(RedisStore::connect(
            &sentinels.url(),
            unique_prefix("bench"),
        ))
        .unwrap();
    let sentinel_client = build(Some(store), Duration::ZERO);
    let cluster = RedisCluster::start();
    let store = rt
        .block_on(RedisStore::connect(&cluster.url(), unique_prefix("bench")))
        .unwrap();
    let cluster_client = build(Some(store), Duration::ZERO);
    for client in [
        &memory,
        &redis_client,
        &redis_cached,
        &sentinel_client,
        &cluster_client,
    ] {
        rt.block_on(client.access_token()).unwrap();
    }
    let raw_redis = rt
        .block_on(
            redis::Client::open(redis.url())
                .unwrap()
                .get_multiplexed_async_connection(),
        )
        .unwrap();
    let baseline_mutex = std::sync::Mutex::new("x".repeat(133));

    let mut g = c.benchmark_group("token_read");
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("baseline_mutex_clone", |b| {
        b.iter(|| baseline_mutex.lock().unwrap().clone())
    });
    g.bench_function("memory_store", |b| {
        b.to_async(&rt)
            .iter(|| async { memory.access_token().await.unwrap() })
    });
    g.bench_function("baseline_redis_get", |b| {
        b.to_async(&rt).iter(|| async {
            let mut conn = raw_redis.clone();
            let v: Option<String> = redis::cmd("GET")
                .arg("weapp-bench-missing")
                .query_async(&mut conn)
                .await
                .unwrap();
            v
        })
    });
    g.bench_function("redis_store", |b| {
        b.to_async(&rt)
            .iter(|| async { redis_client.access_token().await.unwrap() })
    });
    g.bench_function("redis_store_sentinel", |b| {
        b.to_async(&rt)
            .iter(|| async { sentinel_client.access_token().await.unwrap() })
    });
    g.bench_function("redis_store_cluster", |b| {
        b.to_async(&rt)
            .iter(|| async { cluster_client.access_token().await.unwrap() })
    });
    g.bench_function("redis_store_local_cache", |b| {
        b.to_async(&rt)
            .iter(|| async { redis_cached.access_token().await.unwrap() })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
