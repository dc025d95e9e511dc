//! Who is calling: the client address behind trusted proxies, and the key a rate limiter
//! counts it under (an IPv6 client by its /64, which one subscriber usually holds whole).

use std::net::IpAddr;
use std::str::FromStr;

/// An address range (`10.0.0.0/8`, `fc00::/7`, or one address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Loopback and private ranges: what `trust_forwarded_for = true` trusts.
    pub fn private_ranges() -> Vec<IpNet> {
        [
            "127.0.0.0/8",
            "::1/128",
            "10.0.0.0/8",
            "172.16.0.0/12",
            "192.168.0.0/16",
            "fc00::/7",
        ]
        .iter()
        .map(|s| s.parse().expect("valid range"))
        .collect()
    }

    /// Whether the range is every address (`0.0.0.0/0`, `::/0`).
    pub fn is_everything(&self) -> bool {
        self.prefix == 0
    }

    /// Whether the range is one address (a /32, or a /128).
    pub fn is_single(&self) -> bool {
        match self.addr {
            IpAddr::V4(_) => self.prefix >= 32,
            IpAddr::V6(_) => self.prefix >= 128,
        }
    }

    /// Whether `ip` is in the range (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// Why a string is not an address range ([`IpNet`]'s `FromStr`). Carries the text given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IpNetError {
    /// Not an address, with or without a prefix length.
    #[error("`{0}` is not an address or CIDR range")]
    NotAnAddress(String),
    /// A prefix length longer than the address.
    #[error("`{text}`: the prefix length must be 0–{max}")]
    Prefix {
        /// The text given.
        text: String,
        /// The longest prefix of its family (32 or 128).
        max: u8,
    },
}

impl FromStr for IpNet {
    type Err = IpNetError;

    fn from_str(s: &str) -> Result<Self, IpNetError> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| IpNetError::NotAnAddress(s.to_owned()))?;
        let addr = canonical(addr);
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max),
            None => Some(max),
        }
        .ok_or_else(|| IpNetError::Prefix {
            text: s.to_owned(),
            max,
        })?;
        Ok(IpNet { addr, prefix })
    }
}

/// IPv4-mapped IPv6 (`::ffff:1.2.3.4`) as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The client behind `peer`. `X-Forwarded-For` (all its headers, in order) is believed only
/// when the peer is a trusted proxy; then the client is the rightmost hop that is not one —
/// entries left of it were written by the client and prove nothing.
pub fn client_ip<'h>(
    peer: IpAddr,
    forwarded_for: impl Iterator<Item = &'h str>,
    trusted: &[IpNet],
) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|n| n.contains(ip));
    if trusted.is_empty() || !is_trusted(peer) {
        return canonical(peer);
    }
    let hops: Vec<&str> = forwarded_for
        .flat_map(|h| h.split(','))
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .collect();
    let mut client = canonical(peer);
    for hop in hops.iter().rev() {
        // An unparsable hop can only have come from the far side of a trusted proxy: stop
        // at the last hop a trusted proxy vouched for.
        let Some(ip) = parse_hop(hop) else { break };
        client = ip;
        if !is_trusted(ip) {
            break;
        }
    }
    client
}

/// `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1` or `[2001:db8::1]:443`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(sa) = hop.parse::<std::net::SocketAddr>() {
        return Some(canonical(sa.ip()));
    }
    None
}

/// The rate-limit key of a client: an IPv4 address, or an IPv6 address's /64.
pub fn ip_key(ip: IpAddr) -> u128 {
    match canonical(ip) {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => (u128::from(v6) >> 64 << 64) | 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_client_is_the_rightmost_untrusted_hop() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        // A spoofed leftmost entry is ignored.
        let got = client_ip(
            ip("10.0.0.2"),
            ["6.6.6.6, 203.0.113.7, 10.0.0.9"].into_iter(),
            &trusted,
        );
        assert_eq!(got, ip("203.0.113.7"));
        // An untrusted peer's header is not believed at all.
        assert_eq!(
            client_ip(ip("198.51.100.1"), ["6.6.6.6"].into_iter(), &trusted),
            ip("198.51.100.1")
        );
        // No trusted proxies: the peer.
        assert_eq!(
            client_ip(ip("10.0.0.2"), ["6.6.6.6"].into_iter(), &[]),
            ip("10.0.0.2")
        );
        // Several headers; ports; every hop trusted → the leftmost.
        assert_eq!(
            client_ip(
                ip("10.0.0.2"),
                ["203.0.113.9:5000", "10.1.1.1"].into_iter(),
                &trusted
            ),
            ip("203.0.113.9")
        );
        assert_eq!(
            client_ip(ip("10.0.0.2"), ["10.3.3.3, 10.1.1.1"].into_iter(), &trusted),
            ip("10.3.3.3")
        );
        // Garbage left of a trusted hop stops the walk there.
        assert_eq!(
            client_ip(ip("10.0.0.2"), ["junk, 10.1.1.1"].into_iter(), &trusted),
            ip("10.1.1.1")
        );
    }

    #[test]
    fn ranges_and_keys() {
        let net: IpNet = "172.16.0.0/12".parse().unwrap();
        assert!(net.contains(ip("172.31.255.1")));
        assert!(!net.contains(ip("172.32.0.1")));
        assert!(net.contains(ip("::ffff:172.16.0.1")));
        assert!("fc00::/7".parse::<IpNet>().unwrap().contains(ip("fd12::1")));
        assert!("0.0.0.0/0"
            .parse::<IpNet>()
            .unwrap()
            .contains(ip("8.8.8.8")));
        assert!("1.2.3.4/33".parse::<IpNet>().is_err());
        assert!("nonsense".parse::<IpNet>().is_err());
        assert_eq!(
            ip_key(ip("2001:db8:1:2:aaaa::1")),
            ip_key(ip("2001:db8:1:2:bbbb::9"))
        );
        assert_ne!(ip_key(ip("2001:db8:1:2::1")), ip_key(ip("2001:db8:1:3::1")));
        assert_ne!(ip_key(ip("1.2.3.4")), ip_key(ip("1.2.3.5")));
        assert_eq!(ip_key(ip("::ffff:1.2.3.4")), ip_key(ip("1.2.3.4")));
    }
}
