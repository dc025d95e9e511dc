//! The broker service: the apps and callers this instance serves (the [`Registry`]), the
//! token-invalidation interval, the per-day fetch counters and the fleet's status.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;

use super::registry::Registry;
use super::runtime::{AppRuntime, BrokerClient, RuntimeDeps};
use crate::metrics::TokenGauge;
use crate::shared::{now_ms, Shared};

/// What the fleet task reports (for `/metrics` and the admin API).
#[derive(Debug, Clone, Default)]
pub struct FleetStatus {
    /// Shards this instance holds.
    pub shards_held: usize,
    /// Live instances seen (1 without Redis).
    pub instances: usize,
    /// Refreshers running here.
    pub refreshers: usize,
    /// Refreshers waiting for their spread-out start.
    pub pending_starts: usize,
}

/// The broker: every app runtime and broker client this instance serves. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Broker(Arc<BrokerInner>);

/// The parts of [`Broker`].
#[derive(Debug)]
pub struct BrokerInner {
    shared: Shared,
    /// Apps and broker callers, from the file and the database.
    pub registry: Registry,
    /// What app runtimes are built with.
    pub deps: RuntimeDeps,
    /// What the fleet task last reported.
    fleet_status: Mutex<FleetStatus>,
    /// Tokens fetched per app on this instance: (Beijing day, count that day, the manager's
    /// fetch count when last looked at).
    fetches: Mutex<std::collections::HashMap<String, (i64, u64, u64)>>,
    /// Changes to the served apps (registry syncs, a merchant's authorization) one at a time.
    sync: tokio::sync::Mutex<()>,
}

crate::shared::service_handle!(Broker, BrokerInner);

/// The hex SHA-256 of a token (what the invalidation interval remembers).
fn token_digest(token: &weapp::AccessToken) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(token.expose().as_bytes()))
}

/// The Beijing day (WeChat's quota day) of `ms`.
pub fn quota_day(ms: i64) -> i64 {
    (ms + 8 * 3_600_000).div_euclid(86_400_000)
}

/// Names of the counters kept per Beijing day (for `fetches_today`).
pub fn fetch_counter_key(prefix: &str, day: i64) -> String {
    format!("{prefix}:fleet:fetches:{day}")
}

impl Broker {
    /// The broker over a registry filled with the configuration file's apps and clients.
    pub fn new(shared: Shared, registry: Registry, deps: RuntimeDeps) -> Self {
        Broker(Arc::new(BrokerInner {
            shared,
            registry,
            deps,
            fleet_status: Mutex::new(FleetStatus::default()),
            fetches: Mutex::new(std::collections::HashMap::new()),
            sync: tokio::sync::Mutex::new(()),
        }))
    }

    /// Holds changes to the served apps to one at a time (a registry sync and a platform's
    /// merchant sync must not interleave).
    pub async fn sync_lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.sync.lock().await
    }

    /// Counts the tokens each app fetched since the last look (on this instance), per Beijing
    /// day; with Redis, adds them to the fleet's daily counters. Called by the fleet task.
    pub(crate) async fn count_fetches(&self, runtimes: &[Arc<AppRuntime>]) {
        let day = quota_day(now_ms());
        let mut deltas = Vec::new();
        {
            let mut f = self.fetches.lock().unwrap_or_else(|p| p.into_inner());
            for rt in runtimes {
                let total = rt.manager.fetch_count();
                if !f.contains_key(rt.appid.as_str()) {
                    f.insert(rt.appid.clone(), (day, 0, 0));
                }
                let e = f.get_mut(rt.appid.as_str()).expect("just inserted");
                // A rebuilt runtime starts counting from 0 again.
                let delta = if total >= e.2 { total - e.2 } else { total };
                e.2 = total;
                if e.0 != day {
                    *e = (day, 0, total);
                    e.1 = delta;
                } else {
                    e.1 += delta;
                }
                if delta > 0 {
                    deltas.push((rt.appid.clone(), delta));
                }
            }
        }
        if let (Some(redis), false) = (&self.redis, deltas.is_empty()) {
            let key = fetch_counter_key(redis.prefix(), day);
            let mut pipe = redis::pipe();
            for (appid, n) in &deltas {
                pipe.cmd("HINCRBY").arg(&key).arg(appid).arg(*n).ignore();
            }
            pipe.cmd("EXPIRE").arg(&key).arg(3 * 86_400).ignore();
            let mut conn = redis.connection();
            let added = pipe.query_async::<()>(&mut conn).await;
            redis.observe("fetch_counters", &added);
            if let Err(e) = added {
                tracing::warn!(error = %e, "could not add to the fleet's fetch counters");
            }
        }
    }

    /// Tokens fetched today (Beijing day) per app: the fleet's count with Redis, this
    /// instance's otherwise.
    pub async fn fetches_today(&self, appids: &[String]) -> Vec<u64> {
        let day = quota_day(now_ms());
        if let (Some(redis), false) = (&self.redis, appids.is_empty()) {
            let key = fetch_counter_key(redis.prefix(), day);
            let mut conn = redis.connection();
            let got: redis::RedisResult<Vec<Option<u64>>> = redis::cmd("HMGET")
                .arg(&key)
                .arg(appids)
                .query_async(&mut conn)
                .await;
            redis.observe("fetch_counters", &got);
            if let Ok(v) = got {
                return v.into_iter().map(Option::unwrap_or_default).collect();
            }
        }
        let f = self.fetches.lock().unwrap_or_else(|p| p.into_inner());
        appids
            .iter()
            .map(|a| f.get(a).filter(|e| e.0 == day).map_or(0, |e| e.1))
            .collect()
    }

    /// What the fleet task last reported.
    pub fn fleet_status(&self) -> FleetStatus {
        self.fleet_status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn set_fleet_status(&self, status: FleetStatus) {
        *self.fleet_status.lock().unwrap_or_else(|p| p.into_inner()) = status;
    }

    /// The runtime of an enabled app (from the file or managed), if any.
    pub fn app(&self, appid: &str) -> Option<Arc<AppRuntime>> {
        self.registry.app(appid)
    }

    /// May a broker report that `token` failed refresh `app`'s token now? `None` when it may;
    /// otherwise how long until the interval ends (for `Retry-After`). One token per
    /// `invalidate_min_interval_secs` per app is refreshed on reports — fleet-wide through Redis
    /// when there is one, per instance otherwise (and while Redis is unreachable). Reports of
    /// the token being refreshed right now (a storm of 40001s about one token) all pass: they are
    /// one incident, and the store's compare-and-swap refreshes it once. Once that refresh is
    /// [done](Broker::invalidation_done), the same token is not refreshed again within the
    /// interval either — with stable tokens WeChat may hand the very same token back. (A
    /// throttled report is not the end of it: the broker then probes the token, and one proven
    /// dead is replaced whatever the interval.)
    pub async fn invalidation_permit(
        &self,
        app: &AppRuntime,
        token: &weapp::AccessToken,
    ) -> Option<Duration> {
        let interval = Duration::from_secs(self.config.invalidate_min_interval_secs);
        if interval.is_zero() {
            return None;
        }
        let digest = token_digest(token);
        if let Some(redis) = &self.redis {
            let key = format!("{}:invalidate:{}", redis.prefix(), app.appid);
            let mut conn = redis.connection();
            // 0: granted; otherwise the milliseconds left of the interval (at least 1).
            let script = redis::Script::new(
                "local v = redis.call('GET', KEYS[1]) \
                 if not v then redis.call('SET', KEYS[1], ARGV[1] .. ':pending', 'PX', ARGV[2]) return 0 end \
                 if v == ARGV[1] .. ':pending' then return 0 end \
                 local left = redis.call('PTTL', KEYS[1]) \
                 if left < 1 then return 1 end \
                 return left",
            );
            let left: redis::RedisResult<i64> = script
                .key(&key)
                .arg(&digest)
                .arg(interval.as_millis() as u64)
                .invoke_async(&mut conn)
                .await;
            redis.observe("invalidate_interval", &left);
            match left {
                Ok(0) => return None,
                Ok(ms) => return Some(Duration::from_millis(ms.unsigned_abs())),
                Err(e) => {
                    tracing::warn!(appid = %app.appid, error = %e, "redis unavailable for the invalidation interval; using this instance's")
                }
            }
        }
        let mut last = app
            .last_invalidation
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match &*last {
            Some((at, d, done)) if at.elapsed() < interval => {
                if *d == digest && !done {
                    None
                } else {
                    Some(
                        interval
                            .saturating_sub(at.elapsed())
                            .max(Duration::from_millis(1)),
                    )
                }
            }
            _ => {
                *last = Some((Instant::now(), digest, false));
                None
            }
        }
    }

    /// Records that the refresh a report of `token` was permitted for has happened: further
    /// reports of that token within the interval are throttled.
    pub async fn invalidation_done(&self, app: &AppRuntime, token: &weapp::AccessToken) {
        let digest = token_digest(token);
        if let Some(redis) = &self.redis {
            let key = format!("{}:invalidate:{}", redis.prefix(), app.appid);
            let mut conn = redis.connection();
            let script = redis::Script::new(
                "if redis.call('GET', KEYS[1]) == ARGV[1] .. ':pending' then \
                   redis.call('SET', KEYS[1], ARGV[1] .. ':done', 'KEEPTTL') end \
                 return 0",
            );
            let done: redis::RedisResult<i64> =
                script.key(&key).arg(&digest).invoke_async(&mut conn).await;
            redis.observe("invalidate_interval", &done);
            if let Err(e) = done {
                tracing::warn!(appid = %app.appid, error = %e, "could not record a finished invalidation");
            }
        }
        let mut last = app
            .last_invalidation
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some((_, d, done)) = last.as_mut() {
            if *d == digest {
                *done = true;
            }
        }
    }

    /// The enabled broker client whose key hashes to `key`'s SHA-256. Clients are looked up
    /// by that digest (thousands of managed clients cost one lookup); the lookup's timing can
    /// only tell an attacker about digests of keys they chose, not about a valid key.
    pub fn broker_client(&self, key: &str) -> Option<Arc<BrokerClient>> {
        use sha2::{Digest, Sha256};
        let hash: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let client = self.registry.client_by_key(&hash)?;
        // Re-checked in constant time, whatever the map compared.
        bool::from(client.key_hash().ct_eq(&hash)).then_some(client)
    }

    /// Token facts for `/metrics`.
    pub fn token_gauges(&self) -> Vec<TokenGauge> {
        let mut g: Vec<TokenGauge> = self.registry.runtimes().iter().map(|a| a.gauge()).collect();
        g.sort_by(|a, b| a.appid.cmp(&b.appid));
        g
    }
}
