//! The token store's contract, run against every store and topology: one lease at a time, a
//! stalled holder fenced out, an unlock that is not its own refused, compare-and-swap
//! invalidation, and fencing that survives it.

use std::time::Duration;

use weapp::clock::Clock;
use weapp::token::{Lease, StoredToken, TokenKey, TokenStore};
use weapp::{AccessToken, TokenMode};

pub async fn fencing_contract(store: &dyn TokenStore, appid_prefix: &str) {
    let key = TokenKey::new(
        format!("{appid_prefix}{}", rand::random::<u64>()),
        TokenMode::Classic,
    );
    let tok = |s: &str, v: u64| StoredToken {
        access_token: AccessToken::new(s),
        expires_at_ms: weapp::clock::SystemClock.now_ms() + 7_200_000,
        refresh_at_ms: weapp::clock::SystemClock.now_ms() + 6_900_000,
        version: v,
    };
    let slow: Lease = store
        .try_lock(&key, Duration::from_millis(100))
        .await
        .unwrap()
        .unwrap();
    assert!(
        store
            .try_lock(&key, Duration::from_secs(5))
            .await
            .unwrap()
            .is_none(),
        "one lease at a time"
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    let fast = store
        .try_lock(&key, Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    assert!(fast.fence > slow.fence);
    assert!(store.store(&key, &tok("NEW", fast.fence)).await.unwrap());
    assert!(
        !store.store(&key, &tok("OLD", slow.fence)).await.unwrap(),
        "stale writer refused"
    );
    assert_eq!(
        store
            .load(&key)
            .await
            .unwrap()
            .unwrap()
            .access_token
            .expose(),
        "NEW"
    );
    // The slow refresher's unlock must not release the fast one's lock.
    store.unlock(&key, &slow).await.unwrap();
    assert!(store
        .try_lock(&key, Duration::from_secs(5))
        .await
        .unwrap()
        .is_none());
    store.unlock(&key, &fast).await.unwrap();

    // CAS invalidation: a stale token does not remove the current one; the current one goes once.
    assert!(!store
        .invalidate(&key, &AccessToken::new("OLD"))
        .await
        .unwrap());
    assert!(store
        .invalidate(&key, &AccessToken::new("NEW"))
        .await
        .unwrap());
    assert!(!store
        .invalidate(&key, &AccessToken::new("NEW"))
        .await
        .unwrap());
    assert!(store.load(&key).await.unwrap().is_none());
    // Fencing survives invalidation.
    assert!(!store.store(&key, &tok("OLD", slow.fence)).await.unwrap());
}
