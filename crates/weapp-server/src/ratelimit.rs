//! Fixed-window rate limits (per client IP on `POST /v1/login`, per session on
//! `/v1/me/decrypt`, per user on `/v1/me/phone`, per source on failed authentications).
//!
//! Counters live in this process — one per key, for up to `max_keys` keys per window — or,
//! optionally, in Redis (one counter per key there too), so a fleet shares one budget (falling
//! back to the local counters while Redis is unreachable).
//!
//! A key is only ever charged for its own hits: no two keys share a counter. When the local
//! memory is full, a newcomer's first hit makes room by forgetting the earliest key this window
//! that is still under its limit (a key at its limit stays tracked, so forgetting cannot reset
//! it; when none of the first few is under it, the newcomer goes untracked), and a check of a
//! key that is not tracked passes — memory stays bounded and each
//! check O(1) however many addresses a flood brings, and a full memory degrades toward
//! admitting (credentials are still checked), never toward refusing someone for someone else's
//! failures. The price: within a window, a source with more than `max_keys` addresses can have
//! its older ones forgotten and so evade per-source counting — which spreading its requests
//! over those addresses already does.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, Default)]
struct Window {
    minute: u64,
    counts: HashMap<u128, u32>,
    /// The keys of `counts`, in the order they came this window: the first is the one a
    /// newcomer replaces when the map is full.
    order: VecDeque<u128>,
    /// Whether a key was forgotten to make room this window (logged once per window).
    evicted: bool,
}

impl Window {
    fn roll(&mut self, minute: u64) {
        if self.minute != minute {
            self.minute = minute;
            // Dropping the map (not clearing it) also returns the memory a flood grew it to.
            self.counts = HashMap::new();
            self.order = VecDeque::new();
            self.evicted = false;
        }
    }

    /// `key`'s own count; 0 when it is not tracked (never anyone else's).
    fn peek(&self, key: u128) -> u32 {
        self.counts.get(&key).copied().unwrap_or(0)
    }

    /// `key`'s counter, made room for by forgetting the earliest key still under `limit` when
    /// the map is full (a key at its limit stays tracked: forgetting it would let it start
    /// again; at most [`EVICTION_SCAN`] keys are looked at); and whether one was forgotten.
    /// `None`: no room could be made, and the key is not tracked this window (admitted).
    fn slot(&mut self, key: u128, max_keys: usize, limit: u32) -> (Option<&mut u32>, bool) {
        let mut evicted = false;
        if !self.counts.contains_key(&key) {
            let mut scanned = 0;
            while self.counts.len() >= max_keys {
                if scanned >= EVICTION_SCAN {
                    return (None, evicted);
                }
                scanned += 1;
                let Some(oldest) = self.order.pop_front() else {
                    break;
                };
                if self.counts.get(&oldest).is_some_and(|n| *n >= limit) {
                    self.order.push_back(oldest);
                    continue;
                }
                self.counts.remove(&oldest);
                evicted = true;
            }
            self.order.push_back(key);
        }
        (Some(self.counts.entry(key).or_insert(0)), evicted)
    }
}

/// How many tracked keys a newcomer looks at, at most, for one it may replace.
const EVICTION_SCAN: usize = 16;

/// Redis counters shared by a fleet.
#[derive(Clone)]
pub struct Shared {
    redis: weapp::token::redis::RedisStore,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("prefix", &self.redis.prefix())
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Counters under the store's prefix in its Redis (its connection, taken for each count, so
    /// one replaced after a hang is used; errors and timeouts are reported to it).
    pub fn new(redis: weapp::token::redis::RedisStore) -> Self {
        Self { redis }
    }
}

/// Allows `per_minute` hits per key per wall-clock minute.
#[derive(Debug)]
pub struct RateLimiter {
    name: &'static str,
    per_minute: u32,
    max_keys: usize,
    window: Mutex<Window>,
    shared: Option<Shared>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Redis answers within this, or the local counters decide.
const SHARED_TIMEOUT: Duration = Duration::from_millis(250);

impl RateLimiter {
    /// A limiter named `name` (its Redis keys and logs); `per_minute == 0` disables it.
    pub fn new(name: &'static str, per_minute: u32, max_keys: usize) -> Self {
        Self {
            name,
            per_minute,
            max_keys: max_keys.max(1),
            window: Mutex::new(Window::default()),
            shared: None,
        }
    }

    /// Counts in Redis instead, so every instance draws on one budget.
    #[must_use]
    pub fn shared(mut self, shared: Option<Shared>) -> Self {
        self.shared = shared;
        self
    }

    /// Whether the limiter is on.
    pub fn enabled(&self) -> bool {
        self.per_minute > 0
    }

    /// Counts a hit for `key`: `Ok(())` if it is within the limit, else the seconds until the
    /// window resets.
    ///
    /// # Errors
    /// The number of seconds to wait.
    pub async fn hit(&self, key: u128) -> Result<(), u64> {
        self.count(key, 1).await
    }

    /// Whether `key` is already over the limit, without counting.
    ///
    /// # Errors
    /// The number of seconds to wait.
    pub async fn check(&self, key: u128) -> Result<(), u64> {
        self.count(key, 0).await
    }

    async fn count(&self, key: u128, add: u32) -> Result<(), u64> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let now = now_secs();
        let minute = now / 60;
        let wait = 60 - now % 60;
        let limit = self.per_minute;
        // A check passes while the count is below the limit; a hit passes if it stays within.
        let over = |n: u32| if add == 0 { n >= limit } else { n > limit };
        if let Some(shared) = &self.shared {
            let counted =
                tokio::time::timeout(SHARED_TIMEOUT, self.count_shared(shared, key, minute, add))
                    .await;
            // A deadline of our own, shorter than the store's: reported as the timeout it is,
            // so a hanging Redis has its connection replaced.
            match &counted {
                Ok(r) => shared.redis.observe("rate_limit", r),
                Err(_) => shared.redis.observe::<()>(
                    "rate_limit",
                    &Err(std::io::Error::from(std::io::ErrorKind::TimedOut).into()),
                ),
            }
            match counted {
                Ok(Ok(n)) => return if over(n) { Err(wait) } else { Ok(()) },
                Ok(Err(e)) => {
                    tracing::debug!(limiter = self.name, error = %e, "shared rate limit unavailable; counting locally")
                }
                Err(_) => {
                    tracing::debug!(
                        limiter = self.name,
                        "shared rate limit timed out; counting locally"
                    )
                }
            }
        }
        let (n, first_eviction) = {
            let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
            w.roll(minute);
            if add == 0 {
                // A check reads without making room for a key: passing traffic must not fill
                // the map (and push out the keys that are counting).
                (w.peek(key), false)
            } else {
                let (slot, evicted) = w.slot(key, self.max_keys, self.per_minute);
                let n = match slot {
                    Some(slot) => {
                        *slot = slot.saturating_add(add);
                        *slot
                    }
                    None => add,
                };
                (n, evicted && !std::mem::replace(&mut w.evicted, true))
            }
        };
        if first_eviction {
            tracing::warn!(
                limiter = self.name,
                max_keys = self.max_keys,
                "rate limiter full this minute: its earliest keys are forgotten to make room (raise rate_limit_max_keys if this is no flood)"
            );
        }
        if over(n) {
            Err(wait)
        } else {
            Ok(())
        }
    }

    async fn count_shared(
        &self,
        shared: &Shared,
        key: u128,
        minute: u64,
        add: u32,
    ) -> redis::RedisResult<u32> {
        let k = format!(
            "{}:rl:{}:{minute}:{key:032x}",
            shared.redis.prefix(),
            self.name
        );
        let mut conn = shared.redis.connection();
        if add == 0 {
            let n: Option<u32> = redis::cmd("GET").arg(&k).query_async(&mut conn).await?;
            return Ok(n.unwrap_or(0));
        }
        let script = redis::Script::new(
            "local n = redis.call('INCRBY', KEYS[1], ARGV[1]) \
             if n == tonumber(ARGV[1]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end \
             return n",
        );
        script
            .key(&k)
            .arg(add)
            .arg(61_000)
            .invoke_async(&mut conn)
            .await
    }

    /// Keys tracked one by one in the current window (for tests and metrics).
    pub fn tracked_keys(&self) -> usize {
        self.window
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .counts
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_at_its_limit_is_never_forgotten_to_make_room() {
        let rl = RateLimiter::new("test", 2, 4);
        for key in 1..=4u128 {
            for _ in 0..3 {
                let _ = rl.hit(key).await;
            }
            assert!(rl.check(key).await.is_err(), "{key} is over its limit");
        }
        // Newcomers cannot push the blocked keys out, however many come.
        for key in 100..200u128 {
            assert!(rl.hit(key).await.is_ok());
        }
        for key in 1..=4u128 {
            assert!(rl.check(key).await.is_err(), "{key} is still refused");
        }
        assert!(rl.tracked_keys() <= 4);
    }

    #[tokio::test]
    async fn limits_per_key_and_bounds_memory() {
        let l = RateLimiter::new("t", 3, 100);
        for _ in 0..3 {
            l.hit(1).await.unwrap();
        }
        assert!(l.hit(1).await.is_err());
        assert!(l.check(1).await.is_err());
        l.hit(2).await.unwrap();
        // A flood of distinct keys: the map stops growing at its cap.
        for k in 10..100_000u128 {
            let _ = l.hit(k).await;
        }
        assert_eq!(l.tracked_keys(), 100);
        // The latest keys keep their own counts; the earliest under their limit were forgotten
        // to make room (counted from zero again: the memory being full never refuses anyone),
        // but a key at its limit was kept: forgetting it would let it start again.
        l.hit(99_999).await.unwrap();
        l.hit(99_999).await.unwrap();
        assert!(l.hit(99_999).await.is_err());
        assert!(l.hit(1).await.is_err());
        l.hit(2).await.unwrap();
        let off = RateLimiter::new("t", 0, 100);
        for _ in 0..100 {
            off.hit(1).await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_full_memory_never_charges_one_key_for_anothers_hits() {
        let l = RateLimiter::new("t", 3, 16);
        for k in 0..16u128 {
            l.hit(k).await.unwrap();
        }
        // A key goes past its limit once the memory is full: it is still counted on its own.
        let attacker = 1_000_000u128;
        for _ in 0..3 {
            l.hit(attacker).await.unwrap();
        }
        assert!(l.hit(attacker).await.is_err());
        assert!(l.check(attacker).await.is_err());
        // Every other key is checked against its own count alone, and a newcomer's first hits
        // pass, however many newcomers come.
        for k in 2_000_000..2_100_000u128 {
            assert!(l.check(k).await.is_ok(), "{k} read another key's count");
        }
        for k in 3_000_000..3_020_000u128 {
            assert!(
                l.hit(k).await.is_ok(),
                "{k} was charged for another key's hits"
            );
        }
        assert_eq!(l.tracked_keys(), 16, "memory stays bounded");
    }

    #[tokio::test]
    async fn checks_do_not_fill_the_map() {
        let l = RateLimiter::new("t", 2, 10);
        for k in 0..1000u128 {
            l.check(k).await.unwrap();
        }
        assert_eq!(l.tracked_keys(), 0);
    }

    #[tokio::test]
    async fn check_does_not_count() {
        let l = RateLimiter::new("t", 2, 100);
        for _ in 0..10 {
            l.check(7).await.unwrap();
        }
        l.hit(7).await.unwrap();
        l.hit(7).await.unwrap();
        assert!(l.check(7).await.is_err());
    }
}
