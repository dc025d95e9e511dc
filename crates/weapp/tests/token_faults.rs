//! The token core under faults: a slow or failing WeChat, callers that go away, a store that is
//! down, flushed, restarted, or holds a lost counter or a corrupt value, concurrent forced
//! refreshes, clocks near expiry. Each test names the promise it tries to break.
//!
//! Everything runs against weapp-sim and private `redis-server` processes. The simulator's and
//! the SDK's clocks are driven together where time matters.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use weapp::clock::{Clock, ManualClock};
use weapp::http::{Body, Method, RetryPolicy};
use weapp::token::redis::RedisStore;
use weapp::token::{
    Lease, StoreState, StoredToken, TokenKey, TokenManager, TokenPolicy, TokenStore,
};
use weapp::{AccessToken, AppSecret, Client, ErrCode, Error, StoreError, TokenMode};
use weapp_sim::{Fault, SimHandle, TokenKind};
use weapp_test_support::{sim_with_app, unique_prefix, RedisServer};

const CLASSIC: &str = "/cgi-bin/token";
const STABLE: &str = "/cgi-bin/stable_token";

/// A simulator with one app, and an SDK clock that starts where the simulator's does.
struct World {
    sim: SimHandle,
    appid: String,
    secret: String,
    clock: ManualClock,
}

impl World {
    async fn new() -> Self {
        let (sim, appid, secret) = sim_with_app().await;
        // Start every world one minute into a Beijing day, so no test crosses a quota day by
        // accident, whatever the time of the run.
        let now = sim.sim().now_ms();
        let day = 86_400_000;
        let offset = 8 * 3_600_000;
        let next_midnight = ((now + offset) / day + 1) * day - offset;
        sim.sim().advance((next_midnight - now) / 1000 + 60);
        let clock = ManualClock::new(sim.sim().now_ms());
        World {
            sim,
            appid,
            secret,
            clock,
        }
    }

    /// Moves WeChat's clock and ours together.
    fn advance(&self, secs: i64) {
        self.sim.sim().advance(secs);
        self.clock.advance_secs(secs);
    }

    fn builder(&self, mode: TokenMode) -> weapp::ClientBuilder {
        Client::builder(&self.appid, AppSecret::new(&self.secret))
            .base_url(self.sim.url())
            .token_mode(mode)
            .clock(Arc::new(self.clock.clone()))
    }

    fn client(&self, mode: TokenMode) -> Client {
        self.builder(mode).build().unwrap()
    }

    async fn redis_client(
        &self,
        mode: TokenMode,
        redis: &RedisServer,
        prefix: &str,
        policy: TokenPolicy,
    ) -> Client {
        self.builder(mode)
            .token_store(Arc::new(self.redis_store(redis, prefix).await))
            .token_policy(policy)
            .build()
            .unwrap()
    }

    async fn redis_store(&self, redis: &RedisServer, prefix: &str) -> RedisStore {
        RedisStore::connect(&redis.url(), prefix)
            .await
            .unwrap()
            .with_clock(Arc::new(self.clock.clone()))
    }

    fn issued(&self, kind: TokenKind) -> u64 {
        self.sim.sim().tokens_issued(&self.appid, kind)
    }

    fn calls(&self, path: &str) -> u64 {
        self.sim.sim().calls(path)
    }

    /// Does WeChat (the simulator) accept this token right now?
    fn accepted(&self, token: &AccessToken) -> bool {
        self.sim.sim().check_token(Some(token.expose())).is_ok()
    }
}

fn manager(c: &Client) -> &TokenManager {
    c.token_manager().expect("built-in manager")
}

async fn redis_conn(redis: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

fn key(w: &World, mode: TokenMode, prefix: &str, suffix: &str) -> String {
    format!("{prefix}:{{{}:{}}}:{suffix}", w.appid, mode.as_str())
}

async fn join_all<T: Send + 'static>(tasks: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await.expect("task panicked"));
    }
    out
}

// ---------------------------------------------------------------- 1. the lease and slow fetches

/// The reported incident, scaled down: processes start staggered while WeChat answers the first
/// two `/cgi-bin/token` calls after more than the request timeout, which equals the lease. The
/// old lease expired mid-fetch, a second process fetched too, and two tokens were handed out —
/// one of which WeChat retired five minutes later.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_upstream_cannot_make_the_lease_expire_mid_fetch() {
    let w = World::new().await;
    let redis = RedisServer::start();
    let prefix = unique_prefix("slow");
    w.sim
        .sim()
        .add_fault(Fault::latency(CLASSIC, 1500).times(2));
    let policy = TokenPolicy {
        lock_ttl: Duration::from_millis(1000),
        ..TokenPolicy::default()
    };
    let mut tasks = Vec::new();
    let mut stores = Vec::new();
    for i in 0..6u64 {
        let store = Arc::new(Counting::new(w.redis_store(&redis, &prefix).await));
        stores.push(store.clone());
        let client = w
            .builder(TokenMode::Classic)
            .timeout(Duration::from_millis(1000))
            .token_store(store)
            .token_policy(policy.clone())
            .build()
            .unwrap();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100 * i)).await;
            client.access_token().await.unwrap()
        }));
    }
    let tokens = join_all(tasks).await;
    assert!(
        tokens.windows(2).all(|p| p[0] == p[1]),
        "every process printed the same token"
    );
    // The slow calls were processed by WeChat (their answers were late, not lost): every token
    // issued was issued under the one lease, within its retry budget.
    let leases: usize = stores.iter().map(|s| s.leases()).sum();
    assert_eq!(leases, 1, "one lease for the whole refresh");
    let issued = w.issued(TokenKind::Classic);
    assert!(
        issued <= 3,
        "issued {issued}: one lease, at most 3 attempts"
    );
    w.advance(301);
    assert!(
        w.accepted(&tokens[0]),
        "the token everyone holds outlives the 5-minute overlap"
    );
}

/// A user-supplied reqwest client without timeouts: the refresh is still bounded.
#[tokio::test]
async fn a_client_without_timeouts_cannot_hang_the_refresh() {
    let w = World::new().await;
    w.sim
        .sim()
        .add_fault(Fault::latency(STABLE, 5_000).times(1));
    let client = w
        .builder(TokenMode::Stable)
        .http_client(reqwest::Client::new())
        .token_policy(TokenPolicy {
            fetch_timeout: Duration::from_millis(400),
            ..TokenPolicy::default()
        })
        .build()
        .unwrap();
    let err = tokio::time::timeout(Duration::from_secs(3), client.access_token())
        .await
        .expect("the refresh ended by its own deadline")
        .unwrap_err();
    assert!(matches!(err, Error::TimedOut { .. }), "{err:?}");
    assert!(err.is_retryable());
    // The failure is remembered briefly (1 s, doubling): not asked again at once.
    assert!(client.access_token().await.is_err());
    assert_eq!(w.calls(STABLE), 1);
    // The fault is spent; after the back-off the next refresh works.
    w.advance(2);
    client.access_token().await.unwrap();
}

#[tokio::test]
async fn impossible_policies_are_refused_when_the_client_is_built() {
    let w = World::new().await;
    for policy in [
        TokenPolicy {
            poll_interval: Duration::from_secs(20),
            ..TokenPolicy::default()
        },
        TokenPolicy {
            fetch_timeout: Duration::ZERO,
            ..TokenPolicy::default()
        },
        TokenPolicy {
            expiry_safety: Duration::from_secs(600),
            ..TokenPolicy::default()
        },
    ] {
        let err = w
            .builder(TokenMode::Stable)
            .token_policy(policy)
            .build()
            .unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    }
    let err = w
        .builder(TokenMode::Stable)
        .timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)));
}

// ------------------------------------------------------------- 2. failures are shared, remembered

/// A hundred callers arrive while the one refresh fails: they share its failure instead of each
/// running a fetch of its own in turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_fetch_is_shared_by_every_waiter() {
    for (code, mode) in [
        (45009, TokenMode::Classic),
        (40164, TokenMode::Stable),
        (40125, TokenMode::Stable),
        (40013, TokenMode::Classic),
        (-1, TokenMode::Stable),
    ] {
        let w = World::new().await;
        let path = if mode == TokenMode::Classic {
            CLASSIC
        } else {
            STABLE
        };
        w.sim.sim().add_fault(Fault::errcode(path, code));
        let client = w.client(mode);
        let tasks = (0..100)
            .map(|_| {
                let c = client.clone();
                tokio::spawn(async move { c.access_token().await })
            })
            .collect();
        for r in join_all(tasks).await {
            assert_eq!(
                r.unwrap_err().errcode(),
                Some(ErrCode::from(code)),
                "{code}"
            );
        }
        // -1 is retried inside the one refresh (1 + 2 retries); nothing else is.
        let budget = if code == -1 { 3 } else { 1 };
        assert_eq!(w.calls(path), budget, "{code}: one refresh for 100 callers");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_timed_out_fetch_is_shared_by_every_waiter() {
    let w = World::new().await;
    w.sim.sim().add_fault(Fault::latency(STABLE, 1500));
    let client = w
        .builder(TokenMode::Stable)
        .timeout(Duration::from_millis(300))
        .token_policy(TokenPolicy {
            fetch_timeout: Duration::from_millis(700),
            ..TokenPolicy::default()
        })
        .build()
        .unwrap();
    let tasks = (0..100)
        .map(|_| {
            let c = client.clone();
            tokio::spawn(async move { c.access_token().await })
        })
        .collect();
    for r in join_all(tasks).await {
        assert!(r.unwrap_err().is_retryable());
    }
    assert!(w.calls(STABLE) <= 3, "one refresh: {}", w.calls(STABLE));
}

#[tokio::test]
async fn minute_quota_is_remembered_until_the_next_minute() {
    let w = World::new().await;
    w.sim
        .sim()
        .add_fault(Fault::errcode(STABLE, 45011).times(1));
    let client = w.client(TokenMode::Stable);
    for _ in 0..5 {
        let err = client.access_token().await.unwrap_err();
        assert_eq!(err.errcode(), Some(ErrCode::MinuteQuotaExceeded));
    }
    assert_eq!(w.calls(STABLE), 1, "remembered, not asked again");
    w.advance(60);
    client.access_token().await.unwrap();
    assert_eq!(w.calls(STABLE), 2);
}

#[tokio::test]
async fn daily_quota_is_remembered_until_clear_quota_or_the_next_day() {
    let w = World::new().await;
    for _ in 0..weapp_sim::CLASSIC_DAILY_QUOTA {
        w.sim
            .sim()
            .classic_token(Some("client_credential"), Some(&w.appid), Some(&w.secret))
            .unwrap();
    }
    let client = w.client(TokenMode::Classic);
    let before = w.calls(CLASSIC);
    for _ in 0..10 {
        let err = client.access_token().await.unwrap_err();
        assert_eq!(err.errcode(), Some(ErrCode::DailyQuotaExceeded));
        assert!(
            err.rid().is_some(),
            "the remembered error keeps WeChat's rid"
        );
    }
    assert_eq!(w.calls(CLASSIC), before + 1, "asked once, then remembered");
    // clear_quota/v2 through the SDK restores service at once.
    client.openapi().clear_quota_v2().await.unwrap();
    client.access_token().await.unwrap();

    // Exhaust again; this time the quota day turns (Beijing midnight).
    for _ in 0..weapp_sim::CLASSIC_DAILY_QUOTA {
        let _ =
            w.sim
                .sim()
                .classic_token(Some("client_credential"), Some(&w.appid), Some(&w.secret));
    }
    let fresh = w.client(TokenMode::Classic);
    assert!(fresh.access_token().await.is_err());
    let calls = w.calls(CLASSIC);
    w.advance(86_400);
    fresh.access_token().await.unwrap();
    assert_eq!(w.calls(CLASSIC), calls + 1);
}

#[tokio::test]
async fn a_credential_error_is_remembered_for_the_backoff() {
    let w = World::new().await;
    let client = Client::builder(&w.appid, AppSecret::new("not-the-secret"))
        .base_url(w.sim.url())
        .clock(Arc::new(w.clock.clone()))
        .token_policy(TokenPolicy {
            credential_backoff: Duration::from_secs(120),
            ..TokenPolicy::default()
        })
        .build()
        .unwrap();
    for _ in 0..10 {
        let err = client.access_token().await.unwrap_err();
        assert_eq!(err.errcode(), Some(ErrCode::InvalidAppSecret));
    }
    assert_eq!(w.calls(STABLE), 1);
    w.advance(119);
    assert!(client.access_token().await.is_err());
    assert_eq!(w.calls(STABLE), 1);
    w.advance(2);
    assert!(client.access_token().await.is_err());
    assert_eq!(w.calls(STABLE), 2, "asked again after the backoff");
}

/// A refresh that fails while the token is due but alive does not take the token away.
#[tokio::test]
async fn a_failing_refresh_still_serves_the_token_that_is_alive() {
    let w = World::new().await;
    let client = w.client(TokenMode::Classic);
    let first = client.access_token().await.unwrap();
    w.advance(7200 - 200); // inside the refresh margin, well before expiry
    w.sim.sim().add_fault(Fault::errcode(CLASSIC, 45009));
    for _ in 0..5 {
        assert_eq!(client.access_token().await.unwrap(), first);
    }
    assert_eq!(w.calls(CLASSIC), 2, "one failed refresh, then remembered");
    w.advance(190); // now within the expiry safety margin: nothing to serve
    let err = client.access_token().await.unwrap_err();
    assert_eq!(err.errcode(), Some(ErrCode::DailyQuotaExceeded));
}

// ----------------------------------------------------------------------------- 3. cancellation

/// A caller that goes away mid-fetch (hyper drops the handler future when a client disconnects)
/// neither leaves the lease held nor loses the token WeChat issued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_caller_neither_holds_the_lease_nor_loses_the_token() {
    let w = World::new().await;
    let redis = RedisServer::start();
    let prefix = unique_prefix("cancel");
    w.sim.sim().add_fault(Fault::latency(CLASSIC, 800).times(1));
    let a = w
        .redis_client(TokenMode::Classic, &redis, &prefix, TokenPolicy::default())
        .await;
    let caller = tokio::spawn(async move { a.access_token().await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    caller.abort();
    assert!(caller.await.unwrap_err().is_cancelled());
    tokio::time::sleep(Duration::from_millis(1000)).await;

    let mut conn = redis_conn(&redis).await;
    let lock: Option<String> = redis::cmd("GET")
        .arg(key(&w, TokenMode::Classic, &prefix, "lock"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(lock, None, "the lease was released");
    let b = w
        .redis_client(TokenMode::Classic, &redis, &prefix, TokenPolicy::default())
        .await;
    let token = b.access_token().await.unwrap();
    assert_eq!(w.issued(TokenKind::Classic), 1, "the issued token was kept");
    assert!(w.accepted(&token));
}

// ------------------------------------------------------------------------ 4. forced refreshes

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_forced_refreshes_force_once() {
    let w = World::new().await;
    let client = w.client(TokenMode::Stable);
    let first = client.access_token().await.unwrap();
    w.sim.sim().add_fault(Fault::latency(STABLE, 200).times(1));
    let tasks = (0..10)
        .map(|_| {
            let c = client.clone();
            tokio::spawn(async move { manager(&c).force_refresh().await.unwrap() })
        })
        .collect();
    let tokens = join_all(tasks).await;
    assert!(tokens.windows(2).all(|p| p[0] == p[1]));
    assert_ne!(tokens[0].access_token, first);
    assert_eq!(w.calls(STABLE), 2, "one initial fetch, one forced");
    assert_eq!(w.issued(TokenKind::Stable), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn processes_forcing_at_once_share_one_forced_token() {
    let w = World::new().await;
    let redis = RedisServer::start();
    let prefix = unique_prefix("force");
    let a = w
        .redis_client(TokenMode::Stable, &redis, &prefix, TokenPolicy::default())
        .await;
    let b = w
        .redis_client(TokenMode::Stable, &redis, &prefix, TokenPolicy::default())
        .await;
    a.access_token().await.unwrap();
    b.access_token().await.unwrap();
    w.sim.sim().add_fault(Fault::latency(STABLE, 300).times(1));
    let tasks = [a, b]
        .into_iter()
        .flat_map(|c| (0..5).map(move |_| c.clone()))
        .map(|c| tokio::spawn(async move { manager(&c).force_refresh().await.unwrap() }))
        .collect();
    let tokens = join_all(tasks).await;
    assert!(tokens
        .windows(2)
        .all(|p| p[0].access_token == p[1].access_token));
    assert_eq!(
        w.calls(STABLE),
        2,
        "one initial fetch, one forced, fleet-wide"
    );
}

#[tokio::test]
async fn a_forced_refresh_happens_while_the_store_is_down() {
    let w = World::new().await;
    let mut redis = RedisServer::start();
    let prefix = unique_prefix("forcedown");
    let client = w
        .redis_client(TokenMode::Stable, &redis, &prefix, TokenPolicy::default())
        .await;
    let first = client.access_token().await.unwrap();
    redis.stop();
    let forced = manager(&client).force_refresh().await.unwrap();
    assert_ne!(forced.access_token, first, "not silently ignored");
    assert_eq!(w.calls(STABLE), 2);
    assert_eq!(client.access_token().await.unwrap(), forced.access_token);
    assert!(w.accepted(&forced.access_token));
}

// ------------------------------------------------------------------ 5. and 6. a misbehaving store

/// The fence counter was lost (eviction, failover, a restore) and fell behind the watermark:
/// the next lease must still be able to write, or every call would fetch.
#[tokio::test]
async fn a_fence_behind_the_watermark_does_not_fence_out_its_holder() {
    for lose in ["DEL", "SET", "AHEAD"] {
        let w = World::new().await;
        let redis = RedisServer::start();
        let prefix = unique_prefix("fence");
        let client = w
            .redis_client(TokenMode::Classic, &redis, &prefix, TokenPolicy::default())
            .await;
        let first = manager(&client).current().await.unwrap();
        let mut conn = redis_conn(&redis).await;
        let fence = key(&w, TokenMode::Classic, &prefix, "fence");
        if lose == "AHEAD" {
            // Versions written by a clock far ahead: only `written + 1` keeps the next
            // lease's write from being refused.
            let ten_years_ahead = w.clock.now_ms() + 10 * 365 * 86_400_000;
            let _: () = redis::cmd("SET")
                .arg(key(&w, TokenMode::Classic, &prefix, "written"))
                .arg(ten_years_ahead)
                .query_async(&mut conn)
                .await
                .unwrap();
        }
        if lose == "DEL" || lose == "AHEAD" {
            let _: () = redis::cmd("DEL")
                .arg(&fence)
                .query_async(&mut conn)
                .await
                .unwrap();
        } else {
            let _: () = redis::cmd("SET")
                .arg(&fence)
                .arg("1")
                .query_async(&mut conn)
                .await
                .unwrap();
        }
        w.advance(7200 - 250); // due
        let second = manager(&client).current().await.unwrap();
        assert_ne!(second.access_token, first.access_token);
        let stored = w
            .redis_store(&redis, &prefix)
            .await
            .load(&TokenKey::new(&w.appid, TokenMode::Classic))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            stored.access_token, second.access_token,
            "{lose}: the write landed"
        );
        for _ in 0..10 {
            client.access_token().await.unwrap();
        }
        assert_eq!(
            manager(&client).fetch_count(),
            2,
            "{lose}: no fetch per call"
        );
    }
}

/// A corrupt value, or one of a newer schema, reads as absent: one refresh overwrites it, and
/// nobody falls into degraded mode.
#[tokio::test]
async fn a_corrupt_or_foreign_value_is_overwritten_not_obeyed() {
    for value in [
        "\u{1}not json at all",
        r#"{"v":99,"access_token":"FUTURE","expires_at_ms":1,"refresh_at_ms":1,"version":1}"#,
        r#"{"access_token":42}"#,
    ] {
        let w = World::new().await;
        let redis = RedisServer::start();
        let prefix = unique_prefix("corrupt");
        let mut conn = redis_conn(&redis).await;
        let _: () = redis::cmd("SET")
            .arg(key(&w, TokenMode::Classic, &prefix, "token"))
            .arg(value)
            .query_async(&mut conn)
            .await
            .unwrap();
        let a = w
            .redis_client(TokenMode::Classic, &redis, &prefix, TokenPolicy::default())
            .await;
        let b = w
            .redis_client(TokenMode::Classic, &redis, &prefix, TokenPolicy::default())
            .await;
        let token = a.access_token().await.unwrap();
        assert!(!manager(&a).status().store_down, "not degraded");
        assert_eq!(
            b.access_token().await.unwrap(),
            token,
            "{value}: shared again"
        );
        // A stale report of the corrupt value cannot break invalidation either.
        b.token_source()
            .invalidate(&AccessToken::new("FUTURE"))
            .await
            .unwrap();
        assert_eq!(b.access_token().await.unwrap(), token);
        assert_eq!(w.issued(TokenKind::Classic), 1, "{value}");
    }
}

/// Redis loses everything (FLUSHALL, a restart of a Redis that keeps nothing on disk) while
/// processes hold a perfectly good token: it is put back, not fetched again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flushed_or_restarted_store_costs_no_fetch() {
    for how in ["FLUSHALL", "restart"] {
        let w = World::new().await;
        let mut redis = RedisServer::start();
        let prefix = unique_prefix("flush");
        let policy = TokenPolicy {
            store_cooldown: Duration::from_millis(50),
            ..TokenPolicy::default()
        };
        let a = w
            .redis_client(TokenMode::Classic, &redis, &prefix, policy.clone())
            .await;
        let b = w
            .redis_client(TokenMode::Classic, &redis, &prefix, policy.clone())
            .await;
        let token = a.access_token().await.unwrap();
        assert_eq!(b.access_token().await.unwrap(), token);
        if how == "FLUSHALL" {
            let mut conn = redis_conn(&redis).await;
            let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
        } else {
            redis.restart();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut served = Vec::new();
        for _ in 0..20 {
            for c in [&a, &b] {
                if let Ok(t) = c.access_token().await {
                    served.push(t);
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(served.iter().all(|t| *t == token), "{how}");
        assert_eq!(w.issued(TokenKind::Classic), 1, "{how}: no fetch");
        // And it is back in the store for everyone else.
        let c = w
            .redis_client(TokenMode::Classic, &redis, &prefix, policy.clone())
            .await;
        assert_eq!(c.access_token().await.unwrap(), token, "{how}");
        assert_eq!(w.issued(TokenKind::Classic), 1, "{how}");
    }
}

/// The counterpart of the previous test: a token WeChat rejected is never put back, although
/// other processes still hold it.
#[tokio::test]
async fn an_invalidated_token_is_not_put_back() {
    let w = World::new().await;
    let redis = RedisServer::start();
    let prefix = unique_prefix("noreseed");
    let a = w
        .redis_client(TokenMode::Classic, &redis, &prefix, TokenPolicy::default())
        .await;
    let b = w
        .redis_client(TokenMode::Classic, &redis, &prefix, TokenPolicy::default())
        .await;
    let stale = a.access_token().await.unwrap();
    assert_eq!(b.access_token().await.unwrap(), stale);
    b.token_source().invalidate(&stale).await.unwrap();
    let next = a.access_token().await.unwrap();
    assert_ne!(next, stale);
    assert_eq!(b.access_token().await.unwrap(), next);
    assert_eq!(w.issued(TokenKind::Classic), 2);
}

// -------------------------------------------------------------------------- 7. degraded mode

/// Counts every store operation (to prove a dead store is not asked once per call).
#[derive(Debug)]
struct Counting {
    inner: RedisStore,
    ops: AtomicUsize,
    leases: AtomicUsize,
}

impl Counting {
    fn new(inner: RedisStore) -> Self {
        Counting {
            inner,
            ops: AtomicUsize::new(0),
            leases: AtomicUsize::new(0),
        }
    }
    fn ops(&self) -> usize {
        self.ops.load(Ordering::SeqCst)
    }
    fn leases(&self) -> usize {
        self.leases.load(Ordering::SeqCst)
    }
    fn tick(&self) {
        self.ops.fetch_add(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl TokenStore for Counting {
    async fn load(&self, key: &TokenKey) -> Result<Option<StoredToken>, StoreError> {
        self.tick();
        self.inner.load(key).await
    }
    async fn load_state(&self, key: &TokenKey) -> Result<StoreState, StoreError> {
        self.tick();
        self.inner.load_state(key).await
    }
    async fn store(&self, key: &TokenKey, token: &StoredToken) -> Result<bool, StoreError> {
        self.tick();
        self.inner.store(key, token).await
    }
    async fn invalidate(&self, key: &TokenKey, stale: &AccessToken) -> Result<bool, StoreError> {
        self.tick();
        self.inner.invalidate(key, stale).await
    }
    async fn try_lock(&self, key: &TokenKey, ttl: Duration) -> Result<Option<Lease>, StoreError> {
        self.tick();
        let lease = self.inner.try_lock(key, ttl).await?;
        if lease.is_some() {
            self.leases.fetch_add(1, Ordering::SeqCst);
        }
        Ok(lease)
    }
    async fn unlock(&self, key: &TokenKey, lease: &Lease) -> Result<(), StoreError> {
        self.tick();
        self.inner.unlock(key, lease).await
    }
    async fn renew(
        &self,
        key: &TokenKey,
        lease: &Lease,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.tick();
        self.inner.renew(key, lease, ttl).await
    }
}

/// Redis stops answering (paused: every operation waits for its timeout). Calls and
/// invalidations during the cooldown do not touch it; after the cooldown one caller probes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hanging_store_costs_one_timeout_not_one_per_call() {
    let w = World::new().await;
    let redis = RedisServer::start();
    let prefix = unique_prefix("hang");
    let store = Arc::new(Counting::new(w.redis_store(&redis, &prefix).await));
    let client = w
        .builder(TokenMode::Classic)
        .token_store(store.clone())
        .token_policy(TokenPolicy {
            store_cooldown: Duration::from_millis(1500),
            ..TokenPolicy::default()
        })
        .build()
        .unwrap();
    let token = client.access_token().await.unwrap();
    let mut admin = redis_conn(&redis).await;
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg("4000")
        .arg("ALL")
        .query_async(&mut admin)
        .await
        .unwrap();
    let before = store.ops();
    assert_eq!(
        client.access_token().await.unwrap(),
        token,
        "served locally"
    );
    assert_eq!(store.ops(), before + 1, "one operation timed out");
    for _ in 0..20 {
        assert_eq!(client.access_token().await.unwrap(), token);
        client
            .token_source()
            .invalidate(&AccessToken::new("someone else's stale token"))
            .await
            .unwrap();
    }
    assert_eq!(
        store.ops(),
        before + 1,
        "the cooldown holds for calls and invalidations"
    );
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let tasks = (0..50)
        .map(|_| {
            let c = client.clone();
            tokio::spawn(async move { c.access_token().await.unwrap() })
        })
        .collect();
    assert!(join_all(tasks).await.iter().all(|t| *t == token));
    assert_eq!(store.ops(), before + 2, "one probe for fifty callers");
}

/// With classic tokens and no store, processes cannot coordinate: each fetch retires the
/// others' tokens. What the manager promises is a bound: one fetch per process per
/// `degraded_min_interval`, not one per rejected call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_with_classic_tokens_bounds_fetches_per_process() {
    let w = World::new().await;
    let mut redis = RedisServer::start();
    let prefix = unique_prefix("outage");
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(
            w.redis_client(TokenMode::Classic, &redis, &prefix, TokenPolicy::default())
                .await,
        );
    }
    for c in &clients {
        c.access_token().await.unwrap();
    }
    redis.stop();
    let hour = 3600;
    let step = 10;
    for _ in 0..(2 * hour / step) {
        w.advance(step);
        for c in &clients {
            let _ = c.openapi().quota("/cgi-bin/token").await;
        }
    }
    let issued = w.issued(TokenKind::Classic);
    // 2 hours, 3 processes, at most one fetch each per 300 s: 3 × (7200 / 300 + 1) = 75, plus
    // the first. Without the bound every rejected call fetched.
    assert!(issued <= 76, "issued {issued}");
}

/// With stable tokens (the default) an outage costs nothing: fetching never retires another
/// holder's token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_with_stable_tokens_costs_no_errors() {
    let w = World::new().await;
    let mut redis = RedisServer::start();
    let prefix = unique_prefix("outage-stable");
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(
            w.redis_client(TokenMode::Stable, &redis, &prefix, TokenPolicy::default())
                .await,
        );
    }
    for c in &clients {
        c.access_token().await.unwrap();
    }
    redis.stop();
    let mut errors = 0;
    for _ in 0..(3 * 3600 / 30) {
        w.advance(30);
        for c in &clients {
            if c.openapi().quota("/cgi-bin/token").await.is_err() {
                errors += 1;
            }
        }
    }
    assert_eq!(errors, 0);
}

// ------------------------------------------------------------------- 8. retry classification

/// Calls that spend a quota are not repeated after a failure that leaves their outcome unknown.
#[tokio::test]
async fn quota_spending_calls_are_not_retried() {
    let w = World::new().await;
    let client = w.client(TokenMode::Stable);
    client.access_token().await.unwrap();
    for (path, fault) in [
        ("/wxa/getwxacode", Fault::errcode("/wxa/getwxacode", -1)),
        (
            "/cgi-bin/wxaapp/createwxaqrcode",
            Fault::http_status("/cgi-bin/wxaapp/createwxaqrcode", 502),
        ),
        (
            "/wxa/generatescheme",
            Fault::errcode("/wxa/generatescheme", -1),
        ),
    ] {
        w.sim.sim().add_fault(fault.times(1));
        let err = match path {
            "/wxa/getwxacode" => client
                .wxacode()
                .get("pages/index/index")
                .send()
                .await
                .map(|_| ()),
            "/cgi-bin/wxaapp/createwxaqrcode" => client
                .wxacode()
                .qrcode("pages/index/index")
                .send()
                .await
                .map(|_| ()),
            _ => client.url_link().scheme().send().await.map(|_| ()),
        }
        .unwrap_err();
        assert!(
            matches!(err, Error::OutcomeUnknown { .. }),
            "{path}: {err:?}"
        );
        assert_eq!(w.calls(path), 1, "{path}: not retried");
    }
    // A read is retried.
    w.sim
        .sim()
        .add_fault(Fault::errcode("/cgi-bin/openapi/quota/get", -1).times(1));
    client.openapi().quota("/cgi-bin/token").await.unwrap();
    assert_eq!(w.calls("/cgi-bin/openapi/quota/get"), 2);
}

#[tokio::test]
async fn an_unknown_outcome_does_not_depend_on_the_retry_budget() {
    let w = World::new().await;
    let client = w
        .builder(TokenMode::Stable)
        .retry_policy(RetryPolicy {
            max_retries: 0,
            ..RetryPolicy::default()
        })
        .build()
        .unwrap();
    let (_, openid) = w.sim.sim().login(&w.appid, None, None, false).unwrap();
    w.sim
        .sim()
        .add_fault(Fault::errcode("/cgi-bin/message/custom/typing", -1).times(1));
    let err = client
        .customer_service()
        .typing(&openid, true)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::OutcomeUnknown { .. }), "{err:?}");
    assert_eq!(err.errcode(), Some(ErrCode::SystemError));
}

#[tokio::test]
async fn a_garbled_success_on_a_send_is_an_unknown_outcome() {
    let w = World::new().await;
    let client = w.client(TokenMode::Stable);
    let (_, openid) = w.sim.sim().login(&w.appid, None, None, false).unwrap();
    w.sim
        .sim()
        .add_fault(Fault::body("/cgi-bin/message/custom/send", "{\"errcode\":0,\"errm").times(1));
    let err = client
        .customer_service()
        .send(
            &openid,
            &weapp::api::customer_service::CustomMessage::Text("hi".into()),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::OutcomeUnknown { .. }), "{err:?}");
    assert_eq!(w.calls("/cgi-bin/message/custom/send"), 1);
}

/// Without a lease (store down) a classic token call that timed out is not repeated: WeChat
/// may have issued a token, and another one would retire it and the one before.
#[tokio::test]
async fn a_timed_out_classic_fetch_is_repeated_only_under_the_lease() {
    let w = World::new().await;
    let prefix = unique_prefix("unknown");
    let down = Arc::new(DownStore);
    let client = w
        .builder(TokenMode::Classic)
        .timeout(Duration::from_millis(300))
        .token_store(down)
        .build()
        .unwrap();
    w.sim.sim().add_fault(Fault::latency(CLASSIC, 600).times(1));
    assert!(client.access_token().await.is_err());
    assert_eq!(w.calls(CLASSIC), 1, "not repeated without a lease");

    // Under a lease it is repeated.
    let redis = RedisServer::start();
    let client = w
        .builder(TokenMode::Classic)
        .timeout(Duration::from_millis(300))
        .token_store(Arc::new(w.redis_store(&redis, &prefix).await))
        .build()
        .unwrap();
    w.sim.sim().add_fault(Fault::latency(CLASSIC, 600).times(1));
    client.access_token().await.unwrap();
    assert_eq!(w.calls(CLASSIC), 3);
}

/// Two classic calls whose answers were lost have issued two tokens: the one every caller holds
/// is dead. A refresher that gave up then (its retry budget spent on a `-1` and the two lost
/// answers) left the fleet without a token; under its lease it goes on until it has one.
#[tokio::test]
async fn a_classic_fetch_in_doubt_goes_on_under_its_lease_until_it_has_a_token() {
    let w = World::new().await;
    let redis = RedisServer::start();
    let prefix = unique_prefix("doubt");
    let client = w
        .builder(TokenMode::Classic)
        .timeout(Duration::from_millis(300))
        .token_store(Arc::new(w.redis_store(&redis, &prefix).await))
        .build()
        .unwrap();
    w.sim.sim().add_fault(Fault::errcode(CLASSIC, -1).times(1));
    w.sim.sim().add_fault(Fault::latency(CLASSIC, 600).times(2));
    client
        .access_token()
        .await
        .expect("a token despite two lost answers");
    assert_eq!(w.calls(CLASSIC), 4, "-1, two lost answers, then the token");
    // It is the one WeChat issued last, so it works.
    client.openapi().quota("/cgi-bin/token").await.unwrap();
    assert_eq!(
        w.sim
            .sim()
            .tokens_issued(&w.appid, weapp_sim::TokenKind::Classic),
        3,
        "the two lost answers issued tokens too"
    );
}

/// A store whose every operation fails (Redis unreachable).
#[derive(Debug)]
struct DownStore;

#[async_trait]
impl TokenStore for DownStore {
    async fn load(&self, _: &TokenKey) -> Result<Option<StoredToken>, StoreError> {
        Err(StoreError::new("down", None))
    }
    async fn store(&self, _: &TokenKey, _: &StoredToken) -> Result<bool, StoreError> {
        Err(StoreError::new("down", None))
    }
    async fn invalidate(&self, _: &TokenKey, _: &AccessToken) -> Result<bool, StoreError> {
        Err(StoreError::new("down", None))
    }
    async fn try_lock(&self, _: &TokenKey, _: Duration) -> Result<Option<Lease>, StoreError> {
        Err(StoreError::new("down", None))
    }
    async fn unlock(&self, _: &TokenKey, _: &Lease) -> Result<(), StoreError> {
        Err(StoreError::new("down", None))
    }
    async fn renew(&self, _: &TokenKey, _: &Lease, _: Duration) -> Result<bool, StoreError> {
        Err(StoreError::new("down", None))
    }
}

// -------------------------------------------------------------------------------- 9. call_raw

#[tokio::test]
async fn a_query_in_a_raw_path_stays_out_of_errors() {
    let w = World::new().await;
    let client = w.client(TokenMode::Stable);
    let path = format!(
        "/cgi-bin/clear_quota/v2?appid={}&appsecret={}",
        w.appid, w.secret
    );
    // The query reaches WeChat as parameters: the call works.
    client
        .call_raw(Method::Post, &path, Body::Empty)
        .await
        .unwrap();
    w.sim
        .sim()
        .add_fault(Fault::errcode("/cgi-bin/clear_quota/v2", -1).times(1));
    let err = client
        .call_raw(Method::Post, &path, Body::Empty)
        .await
        .unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(!text.contains(&w.secret), "{text}");
    assert!(text.contains("/cgi-bin/clear_quota/v2"), "{text}");
}

/// Captures every log line of the current thread.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The same, for log lines: every level, every crate, over a failing and a retried raw call
/// and a token refresh.
#[tokio::test]
async fn a_query_in_a_raw_path_stays_out_of_log_lines() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let w = World::new().await;
    let client = w.client(TokenMode::Classic);
    let path = format!(
        "/cgi-bin/clear_quota/v2?appid={}&appsecret={}",
        w.appid, w.secret
    );
    w.sim
        .sim()
        .add_fault(Fault::errcode("/cgi-bin/clear_quota/v2", -1).times(1));
    let _ = client.call_raw(Method::Post, &path, Body::Empty).await;
    client
        .call_raw(Method::Post, &path, Body::Empty)
        .await
        .unwrap();
    let token = client.access_token().await.unwrap();
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        text.contains("fetched access token"),
        "logging was captured"
    );
    assert!(!text.contains(&w.secret), "{text}");
    assert!(!text.contains(token.expose()), "{text}");
}

// ---------------------------------------------------------------------- 10. expiry arithmetic

#[tokio::test]
async fn implausible_or_garbage_token_answers_are_refused_or_clamped() {
    let w = World::new().await;
    let client = w.client(TokenMode::Classic);
    w.sim.sim().add_fault(
        Fault::body(
            CLASSIC,
            r#"{"access_token":"T0K3N","expires_in":9223372036854775807}"#,
        )
        .times(1),
    );
    let t = manager(&client).current().await.unwrap();
    assert!(t.expires_at_ms - w.clock.now_ms() <= 7_200_000, "clamped");

    // A garbled answer from the token endpoint may hide a token WeChat issued (which retires
    // the previous one): under the lease it is asked again.
    let fresh = w.client(TokenMode::Classic);
    let before = w.calls(CLASSIC);
    w.sim
        .sim()
        .add_fault(Fault::body(CLASSIC, "<html>502 Bad Gateway</html>").times(1));
    fresh.access_token().await.unwrap();
    assert_eq!(w.calls(CLASSIC) - before, 2);

    for body in [
        r#"{"access_token":"","expires_in":7200}"#,
        r#"{"access_token":"x","expires_in":0}"#,
        r#"{"access_token":"x y\n","expires_in":7200}"#,
    ] {
        let fresh = w.client(TokenMode::Classic);
        w.sim.sim().add_fault(Fault::body(CLASSIC, body).times(1));
        let err = fresh.access_token().await.unwrap_err();
        assert!(matches!(err, Error::Decode { .. }), "{body}: {err:?}");
    }
    let huge = format!(
        r#"{{"access_token":"{}","expires_in":7200}}"#,
        "A".repeat(100_000)
    );
    w.sim.sim().add_fault(Fault::body(CLASSIC, huge).times(1));
    assert!(w.client(TokenMode::Classic).access_token().await.is_err());
}

/// While another process holds the lease, a token that is about to die is not handed out.
#[tokio::test]
async fn a_token_is_not_handed_out_seconds_before_it_dies() {
    let w = World::new().await;
    let redis = RedisServer::start();
    let prefix = unique_prefix("nearly");
    let a = w
        .redis_client(TokenMode::Stable, &redis, &prefix, TokenPolicy::default())
        .await;
    let first = a.access_token().await.unwrap();
    // Someone else holds the lease (a process that is stuck).
    let other = w.redis_store(&redis, &prefix).await;
    let k = TokenKey::new(&w.appid, TokenMode::Stable);
    let lease = other
        .try_lock(&k, Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    w.advance(7200 - 5);
    let b = w
        .redis_client(TokenMode::Stable, &redis, &prefix, TokenPolicy::default())
        .await;
    let waiting = tokio::spawn(async move { b.access_token().await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "waits instead of serving a dying token"
    );
    other.unlock(&k, &lease).await.unwrap();
    let second = waiting.await.unwrap().unwrap();
    assert_ne!(second, first);
}

#[tokio::test]
async fn a_token_lifetime_counts_from_when_the_request_was_sent() {
    let w = World::new().await;
    // The system clock this time: the answer is 700 ms late in real time.
    let client = Client::builder(&w.appid, AppSecret::new(&w.secret))
        .base_url(w.sim.url())
        .build()
        .unwrap();
    w.sim.sim().add_fault(Fault::latency(STABLE, 700).times(1));
    let before = weapp::clock::SystemClock.now_ms();
    let t = manager(&client).current().await.unwrap();
    assert!(
        t.expires_at_ms <= before + 7_200_000 + 200,
        "{} > {}",
        t.expires_at_ms,
        before + 7_200_000
    );
}

#[tokio::test]
async fn the_redis_ttl_follows_the_injected_clock() {
    let w = World::new().await;
    let redis = RedisServer::start();
    let prefix = unique_prefix("ttl");
    // Our clock runs a day ahead of the wall clock (virtual time).
    w.advance(86_400);
    let client = w
        .redis_client(TokenMode::Stable, &redis, &prefix, TokenPolicy::default())
        .await;
    client.access_token().await.unwrap();
    let mut conn = redis_conn(&redis).await;
    let pttl: i64 = redis::cmd("PTTL")
        .arg(key(&w, TokenMode::Stable, &prefix, "token"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(pttl > 7_000_000 && pttl <= 7_200_000, "{pttl}");
}

// --------------------------------------------------------------------- 11. background refresher

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_refresher_callers_never_wait_on_wechat() {
    let w = World::new().await;
    let client = w
        .builder(TokenMode::Classic)
        .token_policy(TokenPolicy {
            refresher_poll: Duration::from_millis(20),
            ..TokenPolicy::default()
        })
        .build()
        .unwrap();
    let first = client.access_token().await.unwrap();
    let refresher = manager(&client).start_refresher();
    w.sim
        .sim()
        .add_fault(Fault::latency(CLASSIC, 1500).times(1));
    w.advance(7200 - 100); // due
    for _ in 0..10 {
        let t = tokio::time::timeout(Duration::from_millis(200), client.access_token())
            .await
            .expect("served without waiting for the slow refresh")
            .unwrap();
        assert_eq!(t, first);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The refresh lands in the background.
    let mut next = first.clone();
    for _ in 0..100 {
        next = client.access_token().await.unwrap();
        if next != first {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_ne!(next, first);
    assert_eq!(w.calls(CLASSIC), 2);

    // Nobody calls now: the refresher alone refreshes once the token is due (plus its jitter).
    w.advance(7200 - 300 + 61);
    let mut waited = 0;
    while w.calls(CLASSIC) < 3 && waited < 200 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += 1;
    }
    assert_eq!(
        w.calls(CLASSIC),
        3,
        "refreshed ahead of expiry without any caller"
    );
    refresher.stop().await;
    w.advance(7200);
    // Stopped: nobody refreshes ahead any more; a caller does.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(w.calls(CLASSIC), 3);
    client.access_token().await.unwrap();
    assert_eq!(w.calls(CLASSIC), 4);
}

// ------------------------------------------------------------- 12. flights that fail strangely

/// A store whose `try_lock` panics once: the refresh task dies mid-way.
#[derive(Debug)]
struct PanicsOnce {
    inner: weapp::token::MemoryStore,
    armed: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl TokenStore for PanicsOnce {
    async fn load(&self, key: &TokenKey) -> Result<Option<StoredToken>, StoreError> {
        self.inner.load(key).await
    }
    async fn store(&self, key: &TokenKey, token: &StoredToken) -> Result<bool, StoreError> {
        self.inner.store(key, token).await
    }
    async fn invalidate(&self, key: &TokenKey, stale: &AccessToken) -> Result<bool, StoreError> {
        self.inner.invalidate(key, stale).await
    }
    async fn try_lock(&self, key: &TokenKey, ttl: Duration) -> Result<Option<Lease>, StoreError> {
        if self.armed.swap(false, Ordering::SeqCst) {
            panic!("a store bug");
        }
        self.inner.try_lock(key, ttl).await
    }
    async fn unlock(&self, key: &TokenKey, lease: &Lease) -> Result<(), StoreError> {
        self.inner.unlock(key, lease).await
    }
    async fn renew(
        &self,
        key: &TokenKey,
        lease: &Lease,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.inner.renew(key, lease, ttl).await
    }
}

/// A refresh task that dies (here: a panic in the store) answers its waiters with an error and
/// frees its slot; the next refresh works, and a forced refresh does not spin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_task_that_dies_does_not_poison_the_manager() {
    let w = World::new().await;
    let store = Arc::new(PanicsOnce {
        inner: weapp::token::MemoryStore::with_clock(Arc::new(w.clock.clone())),
        armed: std::sync::atomic::AtomicBool::new(true),
    });
    let client = w
        .builder(TokenMode::Stable)
        .token_store(store)
        .build()
        .unwrap();
    let err = tokio::time::timeout(Duration::from_secs(5), client.access_token())
        .await
        .expect("answered, not hung")
        .unwrap_err();
    assert!(err.to_string().contains("without an answer"), "{err}");
    w.advance(2); // past the short back-off
    client.access_token().await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), manager(&client).force_refresh())
        .await
        .expect("no spin")
        .unwrap();
}

/// Forced refreshes have their own budget (20 a day). Running out of it says nothing about
/// normal refreshes, which keep working.
#[tokio::test]
async fn a_spent_force_budget_does_not_block_normal_refreshes() {
    let w = World::new().await;
    let client = w.client(TokenMode::Stable);
    client.access_token().await.unwrap();
    for _ in 0..weapp_sim::STABLE_FORCE_DAILY {
        w.advance(31); // forced refreshes closer than 30 s apart do not rotate
        manager(&client).force_refresh().await.unwrap();
    }
    w.advance(31);
    let err = manager(&client).force_refresh().await.unwrap_err();
    assert_eq!(err.errcode(), Some(ErrCode::DailyQuotaExceeded));
    // WeChat rejects the current token: a normal refresh still works (stable_token hands the
    // same token back while it lives — WeChat's word that it is current).
    let current = client.access_token().await.unwrap();
    client.token_source().invalidate(&current).await.unwrap();
    let calls = w.calls(STABLE);
    client.access_token().await.unwrap();
    assert_eq!(w.calls(STABLE), calls + 1, "a normal refresh happened");
    client.access_token().await.unwrap();
    assert_eq!(w.calls(STABLE), calls + 1, "and its token is used");
    assert!(
        manager(&client).force_refresh().await.is_err(),
        "forced ones stay refused"
    );
}

/// Another process (here: a plain HTTP call, as an operator's script would make) clears the
/// quota: a process that remembers 45009 notices at its next probe, not at midnight.
#[tokio::test]
async fn a_quota_cleared_elsewhere_is_noticed_at_the_next_probe() {
    let w = World::new().await;
    for _ in 0..weapp_sim::CLASSIC_DAILY_QUOTA {
        let _ =
            w.sim
                .sim()
                .classic_token(Some("client_credential"), Some(&w.appid), Some(&w.secret));
    }
    let client = w
        .builder(TokenMode::Classic)
        .token_policy(TokenPolicy {
            quota_probe_interval: Duration::from_secs(120),
            ..TokenPolicy::default()
        })
        .build()
        .unwrap();
    assert!(client.access_token().await.is_err());
    let resp: serde_json::Value = reqwest::Client::new()
        .post(format!(
            "{}/cgi-bin/clear_quota/v2?appid={}&appsecret={}",
            w.sim.url(),
            w.appid,
            w.secret
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(resp["errcode"], 0);
    let calls = w.calls(CLASSIC);
    assert!(client.access_token().await.is_err(), "still remembered");
    assert_eq!(w.calls(CLASSIC), calls);
    w.advance(121);
    client.access_token().await.unwrap();
    assert_eq!(w.calls(CLASSIC), calls + 1, "one probe");
}

/// `call_raw` to a token-less path (`clear_quota/v2`) works while 45009 is remembered, and
/// forgets it.
#[tokio::test]
async fn a_raw_clear_quota_works_while_the_token_quota_is_spent() {
    let w = World::new().await;
    for _ in 0..weapp_sim::CLASSIC_DAILY_QUOTA {
        let _ =
            w.sim
                .sim()
                .classic_token(Some("client_credential"), Some(&w.appid), Some(&w.secret));
    }
    let client = w.client(TokenMode::Classic);
    assert!(client.access_token().await.is_err());
    let path = format!(
        "/cgi-bin/clear_quota/v2?appid={}&appsecret={}",
        w.appid, w.secret
    );
    client
        .call_raw(Method::Post, &path, Body::Empty)
        .await
        .unwrap();
    client.access_token().await.unwrap();
}

/// A lease lost mid-fetch (it expired, or someone took it): no further attempt under it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_attempt_starts_under_a_lease_that_was_lost() {
    let w = World::new().await;
    let redis = RedisServer::start();
    let prefix = unique_prefix("lost");
    w.sim
        .sim()
        .add_fault(Fault::latency(CLASSIC, 1500).times(2));
    let client = w
        .builder(TokenMode::Classic)
        .timeout(Duration::from_millis(1000))
        .token_store(Arc::new(w.redis_store(&redis, &prefix).await))
        .token_policy(TokenPolicy {
            lock_ttl: Duration::from_millis(1200),
            ..TokenPolicy::default()
        })
        .build()
        .unwrap();
    let caller = tokio::spawn(async move { client.access_token().await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Someone else's lease replaces ours (as after an expiry and a takeover).
    let mut conn = redis_conn(&redis).await;
    let _: () = redis::cmd("SET")
        .arg(key(&w, TokenMode::Classic, &prefix, "lock"))
        .arg("someone-else")
        .query_async(&mut conn)
        .await
        .unwrap();
    let err = caller.await.unwrap().unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert_eq!(w.calls(CLASSIC), 1, "the timed-out call was not repeated");
}

/// A token rejected while the store was down is not re-adopted from the store when it comes
/// back (its invalidation was skipped during the cooldown), and is removed from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_rejected_during_an_outage_is_not_readopted() {
    let w = World::new().await;
    let redis = RedisServer::start();
    let prefix = unique_prefix("readopt");
    let policy = TokenPolicy {
        store_cooldown: Duration::from_millis(300),
        ..TokenPolicy::default()
    };
    let client = w
        .redis_client(TokenMode::Classic, &redis, &prefix, policy)
        .await;
    let stale = client.access_token().await.unwrap();
    let mut admin = redis_conn(&redis).await;
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg("1500")
        .arg("ALL")
        .query_async(&mut admin)
        .await
        .unwrap();
    // WeChat rejects it while the store cannot be reached.
    let _ = client.access_token().await; // marks the store down (one timeout)
    client.token_source().invalidate(&stale).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1700)).await;
    let fresh = client.access_token().await.unwrap();
    assert_ne!(fresh, stale, "the rejected token was not re-adopted");
    let stored = w
        .redis_store(&redis, &prefix)
        .await
        .load(&TokenKey::new(&w.appid, TokenMode::Classic))
        .await
        .unwrap()
        .map(|t| t.access_token);
    assert_eq!(stored, Some(fresh));
}

/// While the store is down, a failed upstream fetch that provably never left does not use up
/// the one-fetch-per-interval allowance, and the allowance is reset when the store is back.
#[tokio::test]
async fn a_degraded_fetch_that_never_left_is_not_charged() {
    let w = World::new().await;
    // Nothing listens on this port: every request is refused before it leaves.
    let port = weapp_test_support::free_port();
    let client = Client::builder(&w.appid, AppSecret::new(&w.secret))
        .base_url(format!("http://127.0.0.1:{port}"))
        .clock(Arc::new(w.clock.clone()))
        .token_store(Arc::new(DownStore))
        .build()
        .unwrap();
    let first = client.access_token().await.unwrap_err();
    assert!(matches!(first, Error::Transport { .. }), "{first:?}");
    w.advance(2); // past the short back-off of the failure itself
    let second = client.access_token().await.unwrap_err();
    assert!(
        matches!(second, Error::Transport { .. }),
        "tried again, not refused by the degraded interval: {second:?}"
    );
}

// ------------------------------------------------------- findings of the adversarial review

/// A store that answers reads but refuses writes: a read-only replica after a failover, an OOM
/// under `noeviction`. Wraps a `MemoryStore`; `writable` switches writes back on.
#[derive(Debug)]
struct ReadOnly {
    inner: weapp::token::MemoryStore,
    writable: std::sync::atomic::AtomicBool,
    fail_stores: AtomicUsize,
}

impl ReadOnly {
    fn new() -> Self {
        Self {
            inner: weapp::token::MemoryStore::new(),
            writable: std::sync::atomic::AtomicBool::new(false),
            fail_stores: AtomicUsize::new(0),
        }
    }
    fn check(&self) -> Result<(), StoreError> {
        if self.writable.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(StoreError::new(
                "READONLY You can't write against a read only replica",
                None,
            ))
        }
    }
}

#[async_trait]
impl TokenStore for ReadOnly {
    async fn load(&self, k: &TokenKey) -> Result<Option<StoredToken>, StoreError> {
        self.inner.load(k).await
    }
    async fn load_state(&self, k: &TokenKey) -> Result<StoreState, StoreError> {
        self.inner.load_state(k).await
    }
    async fn store(&self, k: &TokenKey, t: &StoredToken) -> Result<bool, StoreError> {
        self.check()?;
        if self
            .fail_stores
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(StoreError::new("write timed out", None));
        }
        self.inner.store(k, t).await
    }
    async fn invalidate(&self, k: &TokenKey, t: &AccessToken) -> Result<bool, StoreError> {
        self.check()?;
        self.inner.invalidate(k, t).await
    }
    async fn try_lock(&self, k: &TokenKey, ttl: Duration) -> Result<Option<Lease>, StoreError> {
        self.check()?;
        self.inner.try_lock(k, ttl).await
    }
    async fn unlock(&self, k: &TokenKey, l: &Lease) -> Result<(), StoreError> {
        self.check()?;
        self.inner.unlock(k, l).await
    }
    async fn renew(&self, k: &TokenKey, l: &Lease, ttl: Duration) -> Result<bool, StoreError> {
        self.check()?;
        self.inner.renew(k, l, ttl).await
    }
}

/// Reads succeeding used to count as "the store is back", which lifted the degraded-mode limit
/// of one fetch per interval: with classic tokens, processes then retired each other's tokens
/// every few seconds.
#[tokio::test]
async fn a_store_that_reads_but_refuses_writes_keeps_the_degraded_fetch_limit() {
    let w = World::new().await;
    let client = w
        .builder(TokenMode::Classic)
        .token_store(Arc::new(ReadOnly::new()))
        .token_policy(TokenPolicy {
            store_cooldown: Duration::from_millis(10),
            ..TokenPolicy::default()
        })
        .build()
        .unwrap();
    let first = client.access_token().await.unwrap();
    assert_eq!(w.issued(TokenKind::Classic), 1);
    // WeChat rejects it (a foreign fetch, say); the store can still be read.
    weapp::TokenSource::invalidate(manager(&client), &first)
        .await
        .unwrap();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let _ = client.access_token().await;
    }
    assert_eq!(
        w.issued(TokenKind::Classic),
        1,
        "no second fetch within degraded_min_interval while writes fail"
    );
}

/// A token whose store write failed used to be marked published, so once the store answered
/// again the older token still in it was adopted over the newer one — which a forced refresh
/// had just retired.
#[tokio::test]
async fn a_token_the_store_could_not_take_is_not_replaced_by_the_older_one_it_holds() {
    let w = World::new().await;
    let store = Arc::new(ReadOnly::new());
    store.writable.store(true, Ordering::SeqCst);
    let client = w
        .builder(TokenMode::Stable)
        .token_store(store.clone())
        .token_policy(TokenPolicy {
            store_cooldown: Duration::from_millis(10),
            ..TokenPolicy::default()
        })
        .build()
        .unwrap();
    let old = client.access_token().await.unwrap();
    store.fail_stores.store(1, Ordering::SeqCst);
    let new = manager(&client).force_refresh().await.unwrap();
    assert_ne!(new.access_token, old);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let served = client.access_token().await.unwrap();
    assert_eq!(
        served, new.access_token,
        "the newer token, not the store's older one"
    );
    // And it was put into the store once the store took writes again.
    let held = store
        .load(&TokenKey::new(w.appid.clone(), TokenMode::Stable))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(held.access_token, new.access_token);
}

/// A forced stable call whose answer was lost used to be repeated as a forced call; now it is
/// followed by an unforced one (which spends none of the 20-a-day budget and answers the
/// forced token if the force happened).
#[tokio::test]
async fn a_forced_refresh_in_doubt_is_not_forced_again() {
    let w = World::new().await;
    let client = w
        .builder(TokenMode::Stable)
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let old = client.access_token().await.unwrap();
    w.sim.sim().add_fault(Fault::latency(STABLE, 600).times(1));
    let new = manager(&client).force_refresh().await.unwrap();
    assert_eq!(w.sim.sim().force_requests(&w.appid), 1, "one forced call");
    assert_ne!(
        new.access_token, old,
        "the force that happened is the answer"
    );
    assert!(w.accepted(&new.access_token));
    // A force that never reached WeChat (a gateway's 502): the unforced call hands back the
    // old token, so one more forced call goes out.
    w.advance(60);
    w.sim
        .sim()
        .add_fault(Fault::http_status(STABLE, 502).times(1));
    let newer = manager(&client).force_refresh().await.unwrap();
    assert_ne!(newer.access_token, new.access_token);
    assert_eq!(w.sim.sim().force_requests(&w.appid), 2);
}

/// A value of the wrong Redis type under the token key (a foreign writer, a prefix collision)
/// failed every `GET` and kept the whole fleet in degraded mode for good.
#[tokio::test]
async fn a_foreign_value_type_under_our_keys_is_overwritten_not_fatal() {
    let w = World::new().await;
    let redis = RedisServer::start();
    let prefix = unique_prefix("wrongtype");
    let mut conn = redis_conn(&redis).await;
    for suffix in ["token", "written"] {
        let _: () = redis::cmd("HSET")
            .arg(key(&w, TokenMode::Stable, &prefix, suffix))
            .arg("field")
            .arg("value")
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let client = w
        .redis_client(TokenMode::Stable, &redis, &prefix, TokenPolicy::default())
        .await;
    let token = client.access_token().await.unwrap();
    assert!(!manager(&client).status().store_down, "not degraded");
    let stored: String = redis::cmd("GET")
        .arg(key(&w, TokenMode::Stable, &prefix, "token"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        stored.contains(token.expose()),
        "overwritten with a real token"
    );
}

/// A lock key that lost its expiry (set by hand, PERSISTed) blocked every refresher forever.
#[tokio::test]
async fn a_lock_without_an_expiry_is_taken_over() {
    let w = World::new().await;
    let redis = RedisServer::start();
    let prefix = unique_prefix("stuck-lock");
    let mut conn = redis_conn(&redis).await;
    let _: () = redis::cmd("SET")
        .arg(key(&w, TokenMode::Stable, &prefix, "lock"))
        .arg("someone-long-gone")
        .query_async(&mut conn)
        .await
        .unwrap();
    let client = w
        .redis_client(
            TokenMode::Stable,
            &redis,
            &prefix,
            TokenPolicy {
                lock_ttl: Duration::from_secs(1),
                fetch_timeout: Duration::from_secs(1),
                ..TokenPolicy::default()
            },
        )
        .await;
    tokio::time::timeout(Duration::from_secs(2), client.access_token())
        .await
        .expect("not blocked by the stuck lock")
        .unwrap();
}

/// After a FLUSHALL, a process that still holds a fresh token serves it, instead of waiting for
/// whichever process took the lease (maybe one without a token, fetching from WeChat).
#[tokio::test]
async fn after_a_flush_a_process_with_a_fresh_token_serves_it_while_another_holds_the_lease() {
    let w = World::new().await;
    let redis = RedisServer::start();
    let prefix = unique_prefix("flush-wait");
    let client = w
        .redis_client(TokenMode::Classic, &redis, &prefix, TokenPolicy::default())
        .await;
    let token = client.access_token().await.unwrap();
    let mut conn = redis_conn(&redis).await;
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    // Another process (a fresh instance) took the lease and is slow.
    let _: () = redis::cmd("SET")
        .arg(key(&w, TokenMode::Classic, &prefix, "lock"))
        .arg("a-fresh-instance")
        .arg("PX")
        .arg(10_000)
        .query_async(&mut conn)
        .await
        .unwrap();
    let served = tokio::time::timeout(Duration::from_secs(1), client.access_token())
        .await
        .expect("served at once, not after the other's lease")
        .unwrap();
    assert_eq!(served, token);
    assert_eq!(w.issued(TokenKind::Classic), 1);
}
