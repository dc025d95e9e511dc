//! One refresher per app for the whole fleet.
//!
//! Apps are spread over `fleet_shards` shards by a hash of their appid. With Redis, each shard
//! is leased (`SET NX PX`, renewed by its holder) to one instance, and only that instance runs
//! the background refreshers of the shard's apps; the other instances serve the token from the
//! shared store and leave a due token to the shard's holder for a grace period (refreshing
//! themselves only if it is overdue — a holder that died). Instances share the shards evenly:
//! each heartbeats into a sorted set, counts the live ones and holds at most its share,
//! releasing extras when an instance joins and taking free shards when one leaves. Leases live
//! three quarters of `fleet_lease_ms` and are renewed every quarter of it, so a dead
//! instance's shards are free three quarters of a period after its last renewal and taken at
//! the next look: within `fleet_lease_ms` of its death. Without Redis the one instance holds
//! every shard.
//!
//! Refreshers of apps that have no fresh token in the store yet start spread over
//! `warmup_spread_secs` when many start at once (a cold start, a big import, a flushed store),
//! so a fleet never asks WeChat for thousands of first tokens in the same second; refreshers of
//! apps whose token is there (a takeover) start at once, as they only read the store.
//! Afterwards each refresher's own jitter spreads the refreshes. Apps whose warm
//! policy is `on_use` get a refresher only while they are used somewhere in the fleet (a Redis
//! key per app, set by whichever instance served it, living `idle_after_secs`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use weapp::token::redis::RedisConnection;
use weapp::token::Refresher;

use super::runtime::AppRuntime;
use super::service::{Broker, FleetStatus};
use crate::config::WarmPolicy;
use crate::shared::now_ms;

/// The shard of `appid` among `shards` (FNV-1a: stable across instances and versions).
pub fn shard_of(appid: &str, shards: u32) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in appid.as_bytes() {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h % shards.max(1)
}

struct Running {
    runtime: Arc<AppRuntime>,
    refresher: Refresher,
    last_error_at: i64,
}

/// The Redis side: membership and shard leases.
struct Leases {
    conn: RedisConnection,
    prefix: String,
    id: String,
    shards: u32,
    lease_ms: u64,
    held: HashSet<u32>,
    /// When the held leases were last renewed; past a lease, they are presumed lost.
    renewed_at: Option<Instant>,
    instances: usize,
}

const HEARTBEAT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 4)
return redis.call('ZCARD', KEYS[1])
";

const RENEW: &str = r"
local out = {}
for i, k in ipairs(KEYS) do
  if redis.call('GET', k) == ARGV[1] then
    redis.call('PEXPIRE', k, ARGV[2])
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
";

// A shard already leased to this instance counts as taken (and is renewed): an ACQUIRE that
// timed out may still have run on Redis later, leasing shards the instance never heard of —
// the next one adopts them instead of leaving their apps without a refresher until the lease
// runs out.
const ACQUIRE: &str = r"
local got = {}
local want = tonumber(ARGV[3])
for i, k in ipairs(KEYS) do
  if #got >= want then break end
  if redis.call('SET', k, ARGV[1], 'NX', 'PX', ARGV[2]) then
    table.insert(got, i)
  elseif redis.call('GET', k) == ARGV[1] then
    redis.call('PEXPIRE', k, ARGV[2])
    table.insert(got, i)
  end
end
return got
";

const RELEASE: &str = r"
local n = 0
for _, k in ipairs(KEYS) do
  if redis.call('GET', k) == ARGV[1] then
    redis.call('DEL', k)
    n = n + 1
  end
end
return n
";

impl Leases {
    /// The shard count is part of the key: instances disagreeing on it during a rollout hold
    /// different keys instead of one key standing for two sets of apps. Every fleet key carries
    /// the hash tag `{fleet:<prefix>}` ([`fleet_tag`]), so in a Redis Cluster the scripts that
    /// take many shards at once (and the pipelines of app use) stay in one slot — one per fleet.
    fn key(&self, shard: u32) -> String {
        format!("{}:{}:shard:{shard}", fleet_tag(&self.prefix), self.shards)
    }

    /// Heartbeat, renew, then take or give shards towards this instance's share.
    async fn tick(&mut self) -> redis::RedisResult<()> {
        let members = members_key(&self.prefix);
        let n: i64 = redis::Script::new(HEARTBEAT)
            .key(&members)
            .arg(&self.id)
            .arg(self.lease_ms)
            .invoke_async(&mut self.conn)
            .await?;
        self.instances = usize::try_from(n.max(1)).unwrap_or(1);
        let started = Instant::now();
        if !self.held.is_empty() {
            let held: Vec<u32> = self.held.iter().copied().collect();
            let keys: Vec<String> = held.iter().map(|s| self.key(*s)).collect();
            let kept: Vec<i64> = redis::Script::new(RENEW)
                .key(keys)
                .arg(&self.id)
                .arg(self.lease_ms)
                .invoke_async(&mut self.conn)
                .await?;
            for (shard, ok) in held.iter().zip(kept) {
                if ok != 1 {
                    tracing::warn!(shard, "shard lease lost");
                    self.held.remove(shard);
                }
            }
        }
        let share = (self.shards as usize).div_ceil(self.instances);
        if self.held.len() < share {
            // Candidates from a random place, so instances do not all try the same shards.
            let start = rand::random::<u32>() % self.shards;
            let candidates: Vec<u32> = (0..self.shards)
                .map(|i| (start + i) % self.shards)
                .filter(|s| !self.held.contains(s))
                .collect();
            let keys: Vec<String> = candidates.iter().map(|s| self.key(*s)).collect();
            let got: Vec<i64> = redis::Script::new(ACQUIRE)
                .key(keys)
                .arg(&self.id)
                .arg(self.lease_ms)
                .arg(share - self.held.len())
                .invoke_async(&mut self.conn)
                .await?;
            for i in got {
                if let Some(shard) = usize::try_from(i - 1).ok().and_then(|i| candidates.get(i)) {
                    self.held.insert(*shard);
                }
            }
        } else if self.held.len() > share {
            // Another instance joined: give back the extras.
            let extra: Vec<u32> = self
                .held
                .iter()
                .copied()
                .take(self.held.len() - share)
                .collect();
            self.release(&extra).await?;
        }
        self.renewed_at = Some(started);
        Ok(())
    }

    async fn release(&mut self, shards: &[u32]) -> redis::RedisResult<()> {
        if shards.is_empty() {
            return Ok(());
        }
        let keys: Vec<String> = shards.iter().map(|s| self.key(*s)).collect();
        let _: i64 = redis::Script::new(RELEASE)
            .key(keys)
            .arg(&self.id)
            .invoke_async(&mut self.conn)
            .await?;
        for s in shards {
            self.held.remove(s);
        }
        Ok(())
    }

    /// Drops the shards whose leases must be presumed lost (no renewal for a lease).
    fn expire(&mut self) {
        if self
            .renewed_at
            .is_some_and(|at| at.elapsed() >= Duration::from_millis(self.lease_ms))
            && !self.held.is_empty()
        {
            tracing::warn!(
                shards = self.held.len(),
                "shard leases not renewed for a lease period: presumed lost"
            );
            self.held.clear();
        }
    }
}

/// Runs the fleet task until `stop` flips: holds shards, keeps one refresher per warm app of
/// the held shards, publishes and reads app use, releases the shards at the end.
pub fn spawn(state: Broker, mut stop: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let config = &state.config;
        let shards = config.fleet_shards;
        let lease_ms = config.fleet_lease_ms;
        let mut leases = state.redis.as_ref().map(|r| Leases {
            conn: r.connection(),
            prefix: r.prefix().to_owned(),
            id: state.instance_id.clone(),
            shards,
            lease_ms: lease_ms * 3 / 4,
            held: HashSet::new(),
            renewed_at: None,
            instances: 1,
        });
        let tick = match &leases {
            Some(_) => Duration::from_millis(lease_ms / 4),
            None => Duration::from_secs(1),
        };
        let idle_ms =
            i64::try_from(config.idle_after_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        let spread = Duration::from_secs(config.warmup_spread_secs);
        let mut running: HashMap<String, Running> = HashMap::new();
        let mut pending: HashMap<String, (Arc<AppRuntime>, Instant)> = HashMap::new();
        // When this instance last told the fleet an app is in use.
        let mut published: HashMap<String, i64> = HashMap::new();
        let mut changes = state.registry.changes();
        let mut round: u64 = 0;
        loop {
            round += 1;
            let held: HashSet<u32> = match &mut leases {
                Some(l) => {
                    // The store's connection of the moment: it is replaced after a command timed
                    // out (a hanging Redis), which this round then uses.
                    if let Some(r) = &state.redis {
                        l.conn = r.connection();
                    }
                    let ticked = l.tick().await;
                    // Counted with the token store's commands (`weapp_redis_errors_total`, failovers).
                    if let Some(r) = &state.redis {
                        r.observe("fleet_leases", &ticked);
                    }
                    if let Err(e) = ticked {
                        tracing::warn!(error = %e, "fleet: redis unavailable; keeping the shards held until their leases would have run out");
                    }
                    // Whatever else made this round slow, leases not renewed for their lifetime
                    // are not ours any more.
                    l.expire();
                    l.held.clone()
                }
                None => (0..shards).collect(),
            };
            let now = now_ms();
            let runtimes = state.registry.runtimes();
            state.count_fetches(&runtimes).await;
            // Use: publish ours, learn the fleet's (Redis), for `on_use` apps.
            let fleet_used = match &mut leases {
                Some(l) => {
                    publish_use(l, &runtimes, &mut published, now, idle_ms).await;
                    // Cold apps are checked every round; warm ones once a minute.
                    let check_warm = round % (60_000 / (lease_ms / 4).max(1)).max(1) == 0;
                    let ask: Vec<&Arc<AppRuntime>> = runtimes
                        .iter()
                        .filter(|r| r.warm == WarmPolicy::OnUse)
                        .filter(|r| held.contains(&shard_of(&r.appid, shards)))
                        .filter(|r| check_warm || !running.contains_key(&r.appid))
                        .collect();
                    used_in_fleet(l, &ask).await
                }
                None => HashSet::new(),
            };
            // What should run here (borrowed: ten thousand apps are not ten thousand
            // allocations a tick).
            let mut desired: HashMap<&str, &Arc<AppRuntime>> =
                HashMap::with_capacity(runtimes.len());
            for rt in &runtimes {
                if !held.contains(&shard_of(&rt.appid, shards)) {
                    continue;
                }
                let warm = match rt.warm {
                    WarmPolicy::Always => true,
                    WarmPolicy::OnUse => {
                        let local = rt.last_used_ms() > 0 && now - rt.last_used_ms() < idle_ms;
                        let keep = running.contains_key(&rt.appid)
                            && leases.is_some()
                            && round % (60_000 / (lease_ms / 4).max(1)).max(1) != 0;
                        local || fleet_used.contains(&rt.appid) || keep
                    }
                };
                if warm {
                    desired.insert(rt.appid.as_str(), rt);
                }
            }
            // Stop what should not run (or runs an older runtime of the app).
            let stale: Vec<String> = running
                .iter()
                .filter(|(appid, r)| {
                    desired
                        .get(appid.as_str())
                        .is_none_or(|d| !Arc::ptr_eq(d, &r.runtime))
                })
                .map(|(appid, _)| appid.clone())
                .collect();
            for appid in stale {
                if let Some(r) = running.remove(&appid) {
                    r.refresher.stop().await;
                }
            }
            pending.retain(|appid, (rt, _)| {
                desired
                    .get(appid.as_str())
                    .is_some_and(|d| Arc::ptr_eq(d, rt))
            });
            // Start what should: at once when few, spread out when many.
            // At most a few hundred a round (each may read the store): the rest next round, so a
            // takeover of thousands of apps never delays the lease renewals.
            let waiting: Vec<&Arc<AppRuntime>> = desired
                .into_values()
                .filter(|rt| !running.contains_key(&rt.appid) && !pending.contains_key(&rt.appid))
                .collect();
            let more_waiting = waiting.len() > 512;
            let new: Vec<Arc<AppRuntime>> = waiting.into_iter().take(512).cloned().collect();
            let spread_them = new.len() > 16 && !spread.is_zero();
            for rt in new {
                // Only first tokens need spreading: a refresher whose token is in the store
                // just reads it.
                let has_token = spread_them
                    && state
                        .deps
                        .token_store
                        .load(rt.manager.key())
                        .await
                        .ok()
                        .flatten()
                        .is_some_and(|t| {
                            t.is_fresh(state.deps.clock.as_ref().map_or(now, |c| c.now_ms()))
                        });
                let at = if spread_them && !has_token {
                    Instant::now()
                        + Duration::from_millis(
                            rand::random::<u64>() % (spread.as_millis() as u64).max(1),
                        )
                } else {
                    Instant::now()
                };
                pending.insert(rt.appid.clone(), (rt, at));
            }
            let due: Vec<String> = pending
                .iter()
                .filter(|(_, (_, at))| *at <= Instant::now())
                .map(|(appid, _)| appid.clone())
                .collect();
            for appid in due {
                if let Some((rt, _)) = pending.remove(&appid) {
                    let refresher = rt.manager.start_refresher();
                    running.insert(
                        appid,
                        Running {
                            runtime: rt,
                            refresher,
                            last_error_at: 0,
                        },
                    );
                }
            }
            // Refresh failures into the metrics.
            for r in running.values_mut() {
                if let Some(at) = r.runtime.manager.last_error_at() {
                    if at > r.last_error_at {
                        r.last_error_at = at;
                        let code = r
                            .runtime
                            .manager
                            .status()
                            .last_error
                            .and_then(|(m, _)| errcode_of(&m))
                            .unwrap_or(-2);
                        state.metrics.upstream_error(&r.runtime.appid, code);
                    }
                }
            }
            state.set_fleet_status(FleetStatus {
                shards_held: held.len(),
                instances: leases.as_ref().map_or(1, |l| l.instances),
                refreshers: running.len(),
                pending_starts: pending.len(),
            });
            // Sleep a tick, less when a spread-out start is due sooner; wake on changes.
            let next_due = if more_waiting {
                Duration::ZERO
            } else {
                pending
                    .values()
                    .map(|(_, at)| at.saturating_duration_since(Instant::now()))
                    .min()
                    .unwrap_or(tick)
                    .min(tick)
            };
            tokio::select! {
                () = tokio::time::sleep(next_due.max(Duration::from_millis(20))) => {}
                _ = changes.changed() => {}
                _ = stop.changed() => {}
            }
            if *stop.borrow() {
                break;
            }
        }
        for (_, r) in running.drain() {
            r.refresher.stop().await;
        }
        if let Some(l) = &mut leases {
            let held: Vec<u32> = l.held.iter().copied().collect();
            if let Err(e) = l.release(&held).await {
                tracing::warn!(error = %e, "fleet: could not release the shards at shutdown (they free themselves when their leases run out)");
            }
            let members = members_key(&l.prefix);
            let _: redis::RedisResult<i64> = redis::cmd("ZREM")
                .arg(&members)
                .arg(&l.id)
                .query_async(&mut l.conn)
                .await;
        }
        tracing::debug!("fleet task stopped");
    })
}

/// The errcode in an error's text (`…: WeChat error 45009: …`), if any.
fn errcode_of(message: &str) -> Option<i64> {
    let rest = message.split("WeChat error ").nth(1)?;
    let digits: String = rest
        .trim_start_matches(|c: char| !c.is_ascii_digit() && c != '-')
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '-')
        .collect();
    digits.parse().ok()
}

/// `<prefix>:{fleet:<prefix>}`: the start of every fleet key — under the prefix, and in one
/// Cluster slot per fleet (the hash tag names the prefix, so fleets sharing a Cluster spread).
fn fleet_tag(prefix: &str) -> String {
    format!("{prefix}:{{fleet:{prefix}}}")
}

fn used_key(prefix: &str, appid: &str) -> String {
    format!("{}:used:{appid}", fleet_tag(prefix))
}

fn members_key(prefix: &str) -> String {
    format!("{}:members", fleet_tag(prefix))
}

/// Tells the fleet which apps this instance served lately (a key per app living
/// `idle_after`, refreshed at most every tenth of it).
async fn publish_use(
    l: &mut Leases,
    runtimes: &[Arc<AppRuntime>],
    published: &mut HashMap<String, i64>,
    now: i64,
    idle_ms: i64,
) {
    let mut pipe = redis::pipe();
    let mut n = 0;
    for rt in runtimes {
        if rt.warm != WarmPolicy::OnUse {
            continue;
        }
        let used = rt.last_used_ms();
        let last = published.get(&rt.appid).copied().unwrap_or(0);
        if used > last && used - last > idle_ms / 10 {
            pipe.cmd("SET")
                .arg(used_key(&l.prefix, &rt.appid))
                .arg(used)
                .arg("PX")
                .arg(idle_ms.max(1))
                .ignore();
            published.insert(rt.appid.clone(), used);
            n += 1;
        }
    }
    if n > 0 {
        if let Err(e) = pipe.query_async::<()>(&mut l.conn).await {
            tracing::warn!(error = %e, "fleet: could not publish app use");
        }
    }
    let _ = now;
}

/// Which of `apps` were used somewhere in the fleet within `idle_after`.
async fn used_in_fleet(l: &mut Leases, apps: &[&Arc<AppRuntime>]) -> HashSet<String> {
    let mut out = HashSet::new();
    for chunk in apps.chunks(500) {
        let keys: Vec<String> = chunk
            .iter()
            .map(|r| used_key(&l.prefix, &r.appid))
            .collect();
        let found: redis::RedisResult<Vec<Option<i64>>> =
            redis::cmd("MGET").arg(&keys).query_async(&mut l.conn).await;
        match found {
            Ok(values) => {
                for (rt, v) in chunk.iter().zip(values) {
                    if v.is_some() {
                        out.insert(rt.appid.clone());
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "fleet: could not read app use");
                break;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_stable_and_spread() {
        assert_eq!(
            shard_of("wx1234567890abcdef", 64),
            shard_of("wx1234567890abcdef", 64)
        );
        let mut counts = [0u32; 64];
        for i in 0..10_000 {
            counts[shard_of(&format!("wx{i:016x}"), 64) as usize] += 1;
        }
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(*min > 100 && *max < 220, "{min}..{max}");
        assert_eq!(
            errcode_of("/cgi-bin/token: WeChat error 45009: reach max"),
            Some(45009)
        );
        assert_eq!(errcode_of("x: WeChat error -1: system error"), Some(-1));
        assert_eq!(errcode_of("timed out"), None);
    }

    /// An ACQUIRE that timed out may still run on Redis afterwards: the shards it leased to
    /// this instance are adopted at the next tick, not left without a refresher until their
    /// lease runs out (before, the next ACQUIRE's `SET NX` failed on them like on anyone's).
    #[tokio::test]
    async fn a_shard_leased_to_us_by_a_late_acquire_is_adopted() {
        let redis = weapp_test_support::RedisServer::start();
        let prefix = weapp_test_support::unique_prefix("late-acquire");
        let store = weapp::token::redis::RedisStore::connect(&redis.url(), prefix.clone())
            .await
            .unwrap();
        let mut l = Leases {
            conn: store.connection(),
            prefix,
            id: "me".into(),
            shards: 4,
            lease_ms: 30_000,
            held: HashSet::new(),
            renewed_at: None,
            instances: 1,
        };
        for (shard, holder) in [(2, "me"), (3, "someone-else")] {
            let _: () = redis::cmd("SET")
                .arg(l.key(shard))
                .arg(holder)
                .arg("PX")
                .arg(10_000)
                .query_async(&mut l.conn)
                .await
                .unwrap();
        }
        l.tick().await.unwrap();
        assert_eq!(l.held, HashSet::from([0, 1, 2]));
        // Renewed as ours (it had 10 s left).
        let ttl: i64 = redis::cmd("PTTL")
            .arg(l.key(2))
            .query_async(&mut l.conn)
            .await
            .unwrap();
        assert!(ttl > 29_000, "{ttl}");
    }
}
