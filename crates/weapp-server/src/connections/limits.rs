//! How many connections the server holds at once: a cap for the whole process, sized below its
//! open-file limit, and a cap per source address, so that one host cannot hold them all.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::config::Config;
use crate::net::IpNet;

/// Descriptors kept out of the connection budget whatever the pool size: stdio, the listener,
/// the runtime's own, logs, Redis, outgoing HTTPS (WeChat, webhooks), an in-process sandbox.
const BASE_HEADROOM: u64 = 64;

/// Descriptors one database pool connection may hold (a SQLite connection opens the database,
/// its `-wal` and its `-shm`; a Postgres one is a socket).
const PER_POOL_CONNECTION: u64 = 4;

/// The caps a server applies, worked out from its configuration and the open-file limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections open at once, all sources together.
    pub max: usize,
    /// Connections open at once from one source address (an IPv6 source by its /64); `None`:
    /// no per-address cap.
    pub per_ip: Option<usize>,
    /// The soft open-file limit the caps were sized against (`None`: unknown or unlimited).
    pub descriptor_limit: Option<u64>,
    /// `max_connections` had to be lowered to fit under `descriptor_limit`.
    pub lowered: bool,
}

impl ConnectionLimits {
    /// The caps for `config` in a process allowed `descriptor_limit` open files:
    ///
    /// - `max`: `max_connections` (0: no cap of its own), but never more than the descriptor
    ///   limit less a headroom for everything else the process opens (64 + 4 per database pool
    ///   connection), and at least 1;
    /// - `per_ip`: `max_connections_per_ip` (0: none), but never more than half of `max`, so
    ///   that one source cannot take every connection however the two are set.
    pub fn from_config(config: &Config, descriptor_limit: Option<u64>) -> Self {
        let headroom = BASE_HEADROOM + PER_POOL_CONNECTION * u64::from(config.database_pool_size);
        let budget = descriptor_limit
            .map(|l| usize::try_from(l.saturating_sub(headroom).max(1)).unwrap_or(usize::MAX));
        let wanted = match config.max_connections {
            0 => usize::MAX,
            n => usize::try_from(n).unwrap_or(usize::MAX),
        };
        let max = budget.map_or(wanted, |b| wanted.min(b));
        let per_ip = match config.max_connections_per_ip {
            0 => None,
            n => Some(
                usize::try_from(n)
                    .unwrap_or(usize::MAX)
                    .min((max / 2).max(1)),
            ),
        };
        ConnectionLimits {
            max,
            per_ip,
            descriptor_limit,
            lowered: config.max_connections != 0 && max < wanted,
        }
    }
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `max` connections are open.
    Full,
    /// Its source holds `per_ip` connections.
    SourceFull,
}

/// The open connections, counted as they are accepted and closed. Shared by the accept loop
/// (which admits) and every connection task (whose [`Permit`] gives its place back on drop);
/// one short lock per accept and per close.
#[derive(Debug)]
pub(crate) struct Admission {
    limits: ConnectionLimits,
    /// Sources not capped one by one: the trusted proxies, whose connections carry many
    /// clients.
    exempt: Vec<IpNet>,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    /// Connections per source key ([`crate::net::ip_key`]); a source with none has no entry,
    /// so the map is as large as the number of sources connected now.
    by_source: HashMap<u128, usize>,
}

/// A place among the open connections, held for the connection's life.
#[derive(Debug)]
pub(crate) struct Permit {
    admission: Arc<Admission>,
    /// The source key counted, if its source is capped.
    source: Option<u128>,
}

impl Admission {
    pub(crate) fn new(limits: ConnectionLimits, exempt: Vec<IpNet>) -> Arc<Self> {
        Arc::new(Admission {
            limits,
            exempt,
            open: Mutex::default(),
        })
    }

    /// Admits a connection from `ip`, or says which cap it is over.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Permit, Refusal> {
        let source = match self.limits.per_ip {
            Some(_) if !self.exempt.iter().any(|n| n.contains(ip)) => Some(crate::net::ip_key(ip)),
            _ => None,
        };
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let (Some(key), Some(cap)) = (source, self.limits.per_ip) {
            if open.by_source.get(&key).is_some_and(|n| *n >= cap) {
                return Err(Refusal::SourceFull);
            }
        }
        if open.total >= self.limits.max {
            return Err(Refusal::Full);
        }
        if let Some(key) = source {
            *open.by_source.entry(key).or_default() += 1;
        }
        open.total += 1;
        Ok(Permit {
            admission: Arc::clone(self),
            source,
        })
    }

    /// Connections open now.
    #[cfg(test)]
    fn open(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).total
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut open = self
            .admission
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        open.total -= 1;
        if let Some(key) = self.source {
            if let Some(n) = open.by_source.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    open.by_source.remove(&key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(max: u64, per_ip: u64, pool: u32) -> Config {
        Config {
            max_connections: max,
            max_connections_per_ip: per_ip,
            database_pool_size: pool,
            ..Config::default()
        }
    }

    #[test]
    fn caps_fit_under_the_descriptor_limit_and_one_source_gets_at_most_half() {
        // Defaults with plenty of descriptors: as configured.
        let l = ConnectionLimits::from_config(&Config::default(), Some(1_048_576));
        assert_eq!((l.max, l.per_ip, l.lowered), (10_000, Some(256), false));
        // 256 descriptors, a pool of 16: 256 - (64 + 64) for the rest of the process.
        let l = ConnectionLimits::from_config(&config(10_000, 256, 16), Some(256));
        assert_eq!((l.max, l.per_ip, l.lowered), (128, Some(64), true));
        // No cap of its own: the descriptors decide; no per-source cap.
        let l = ConnectionLimits::from_config(&config(0, 0, 4), Some(1024));
        assert_eq!((l.max, l.per_ip, l.lowered), (1024 - 80, None, false));
        // A limit below the headroom still admits one.
        let l = ConnectionLimits::from_config(&config(10, 10, 16), Some(50));
        assert_eq!((l.max, l.per_ip), (1, Some(1)));
        // Unknown limit (not unix, or unlimited).
        let l = ConnectionLimits::from_config(&config(500, 1000, 16), None);
        assert_eq!((l.max, l.per_ip), (500, Some(250)));
    }

    #[test]
    fn a_source_over_its_cap_is_refused_and_its_places_come_back() {
        let limits = ConnectionLimits::from_config(&config(4, 2, 1), None);
        let a = Admission::new(limits, vec!["10.0.0.0/8".parse().unwrap()]);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let one = a.admit(ip("192.0.2.1")).unwrap();
        let _two = a.admit(ip("192.0.2.1")).unwrap();
        assert_eq!(a.admit(ip("192.0.2.1")).unwrap_err(), Refusal::SourceFull);
        // The same /64 is the same source.
        let _v6 = a.admit(ip("2001:db8::1")).unwrap();
        let _v6b = a.admit(ip("2001:db8::2")).unwrap();
        assert_eq!(a.admit(ip("2001:db8::3")).unwrap_err(), Refusal::SourceFull);
        assert_eq!(a.admit(ip("10.1.1.1")).unwrap_err(), Refusal::Full);
        drop(one);
        assert_eq!(a.open(), 3);
        let _three = a.admit(ip("192.0.2.1")).unwrap();
        assert_eq!(a.open(), 4);
    }

    #[test]
    fn trusted_proxies_are_not_capped_per_source() {
        let limits = ConnectionLimits::from_config(&config(10, 1, 1), None);
        let a = Admission::new(limits, vec!["10.0.0.0/8".parse().unwrap()]);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let held: Vec<Permit> = (0..5).map(|_| a.admit(ip("10.0.0.2")).unwrap()).collect();
        assert_eq!(held.len(), 5);
        let _c = a.admit(ip("192.0.2.1")).unwrap();
        assert!(a.admit(ip("192.0.2.1")).is_err());
    }
}
