//! The observer hooks (`weapp::observe`): a client's observer sees every upstream attempt with
//! its path and errcode; a Redis store's observer sees failed commands and the failover when
//! Redis comes back.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use weapp::observe::{CallEvent, CallObserver, CallOutcome, RedisEvent, RedisObserver};
use weapp::token::redis::RedisStore;
use weapp::token::{TokenKey, TokenStore};
use weapp::{Client, TokenMode};
use weapp_sim::Fault;
use weapp_test_support::{sim_with_app, unique_prefix, RedisServer};

#[derive(Debug, Default)]
struct Calls(Mutex<Vec<(String, CallOutcome)>>);

impl CallObserver for Calls {
    fn call(&self, e: &CallEvent<'_>) {
        assert!(e.elapsed < Duration::from_secs(10));
        self.0.lock().unwrap().push((e.path.to_owned(), e.outcome));
    }
}

#[derive(Debug, Default)]
struct RedisEvents(Mutex<Vec<RedisEvent>>);

impl RedisObserver for RedisEvents {
    fn redis(&self, event: RedisEvent) {
        self.0.lock().unwrap().push(event);
    }
}

#[tokio::test]
async fn the_call_observer_sees_each_attempt_with_its_path_and_errcode() {
    let (sim, appid, secret) = sim_with_app().await;
    let calls = Arc::new(Calls::default());
    let client = Client::builder(&appid, secret.as_str())
        .base_url(sim.url())
        .observer(calls.clone())
        .build()
        .unwrap();
    let (code, _) = sim.sim().login(&appid, None, None, false).unwrap();
    client.auth().code_to_session(&code).await.unwrap();
    sim.sim()
        .add_fault(Fault::errcode("/sns/jscode2session", 45011).times(1));
    let (code, _) = sim.sim().login(&appid, None, None, false).unwrap();
    let err = client.auth().code_to_session(&code).await.unwrap_err();
    assert_eq!(err.errcode().map(|c| c.code()), Some(45011));
    client.access_token().await.unwrap();
    let seen = calls.0.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            ("/sns/jscode2session".to_owned(), CallOutcome::Ok),
            (
                "/sns/jscode2session".to_owned(),
                CallOutcome::ErrCode(45011)
            ),
            ("/cgi-bin/stable_token".to_owned(), CallOutcome::Ok),
        ]
    );
    assert_eq!(CallOutcome::ErrCode(45011).errcode(), 45011);
    assert_eq!(CallOutcome::Failed.errcode(), -2);
}

#[tokio::test]
async fn the_redis_observer_sees_errors_and_the_failover_when_redis_returns() {
    let mut redis = RedisServer::start();
    let events = Arc::new(RedisEvents::default());
    let store = RedisStore::connect(&redis.url(), unique_prefix("observe"))
        .await
        .unwrap()
        .with_observer(events.clone());
    let key = TokenKey::new("wx0000000000000001", TokenMode::Stable);
    store.load(&key).await.unwrap();
    assert!(
        events.0.lock().unwrap().is_empty(),
        "a success says nothing"
    );
    redis.stop();
    assert!(store.load(&key).await.is_err());
    assert_eq!(
        events.0.lock().unwrap().first(),
        Some(&RedisEvent::Error { op: "MGET" })
    );
    redis.restart();
    // The connection comes back on its own: the first success after the failures is the
    // failover seen, once.
    let mut ok = false;
    for _ in 0..50 {
        if store.load(&key).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "the store reconnected");
    store.load(&key).await.unwrap();
    let seen = events.0.lock().unwrap().clone();
    assert_eq!(
        seen.iter()
            .filter(|e| matches!(e, RedisEvent::Failover))
            .count(),
        1,
        "{seen:?}"
    );
    assert_eq!(seen.last(), Some(&RedisEvent::Failover), "{seen:?}");
}
