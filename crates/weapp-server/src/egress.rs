//! Where the server sends requests someone else chose the target of — webhook URLs and API
//! hosts (`api_base`) — and the addresses it will not send them to: loopback, private networks
//! (RFC 1918, IPv6 unique-local), link-local (where cloud metadata services answer), shared
//! CGNAT space, unspecified, multicast, broadcast and reserved ranges, and the IPv4-mapped,
//! IPv4-compatible, NAT64 and 6to4 forms of those — unless `webhook_allow_private` lists them.
//!
//! A name is judged by what it resolves to, every address of the answer. That is checked when
//! a target is configured (start-up, the admin API) and again each time a webhook is sent: the
//! webhook client resolves names through [`Egress`] itself, so it connects only to addresses
//! checked in that same lookup, and a name that resolves elsewhere by delivery time (DNS
//! rebinding) is refused then. IP literals, which an HTTP client does not resolve, are checked
//! by [`Egress::check_literal`] before sending.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use crate::net::IpNet;

/// How long a configuration-time lookup may take before the name counts as unresolved.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Resolves host names to addresses: the system's resolver by default ([`SystemResolver`]);
/// tests give their own answers (and change them between two lookups).
#[async_trait::async_trait]
pub trait Resolver: Send + Sync {
    /// The addresses of `host` (a name, never an IP literal) with `port`.
    ///
    /// # Errors
    /// The name does not resolve.
    async fn lookup(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>>;
}

/// The system's resolver (`getaddrinfo`, through tokio).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

#[async_trait::async_trait]
impl Resolver for SystemResolver {
    async fn lookup(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
        Ok(tokio::net::lookup_host((host, port)).await?.collect())
    }
}

/// What kind of internal address a target is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Internal {
    /// `127.0.0.0/8`, `::1`.
    Loopback,
    /// `0.0.0.0/8`, `::`.
    Unspecified,
    /// RFC 1918 (`10/8`, `172.16/12`, `192.168/16`), `fc00::/7`, `fec0::/10`, local NAT64.
    Private,
    /// `169.254/16`, `fe80::/10`.
    LinkLocal,
    /// A cloud metadata service (`169.254.169.254`, `100.100.100.200`, `fd00:ec2::254`, …).
    Metadata,
    /// Shared address space (carrier-grade NAT, `100.64/10`).
    Shared,
    /// `224/4`, `ff00::/8`.
    Multicast,
    /// `255.255.255.255`.
    Broadcast,
    /// Reserved for protocols, benchmarks or future use (`192.0.0/24`, `198.18/15`, `240/4`,
    /// `100::/64`, IPv4-compatible IPv6).
    Reserved,
}

impl std::fmt::Display for Internal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Internal::Loopback => "a loopback address",
            Internal::Unspecified => "the unspecified address",
            Internal::Private => "a private-network address",
            Internal::LinkLocal => "a link-local address",
            Internal::Metadata => "a cloud metadata address",
            Internal::Shared => "a shared (CGNAT) address",
            Internal::Multicast => "a multicast address",
            Internal::Broadcast => "the broadcast address",
            Internal::Reserved => "a reserved address",
        })
    }
}

/// Cloud metadata services: AWS, GCP, Azure, Tencent Cloud (and the ECS task endpoint),
/// Alibaba Cloud, Oracle Cloud, AWS over IPv6.
const METADATA_V4: &[Ipv4Addr] = &[
    Ipv4Addr::new(169, 254, 169, 254),
    Ipv4Addr::new(169, 254, 170, 2),
    Ipv4Addr::new(169, 254, 0, 23),
    Ipv4Addr::new(100, 100, 100, 200),
    Ipv4Addr::new(192, 0, 0, 192),
];
const METADATA_V6: &[Ipv6Addr] = &[Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)];

/// What kind of internal address `ip` is (`None`: an address of the public internet).
pub fn classify(ip: IpAddr) -> Option<Internal> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<Internal> {
    let [a, b, c, _] = ip.octets();
    Some(if METADATA_V4.contains(&ip) {
        Internal::Metadata
    } else if a == 0 {
        Internal::Unspecified
    } else if ip.is_loopback() {
        Internal::Loopback
    } else if ip.is_private() {
        Internal::Private
    } else if ip.is_link_local() {
        Internal::LinkLocal
    } else if a == 100 && (b & 0xc0) == 64 {
        Internal::Shared
    } else if ip.is_broadcast() {
        Internal::Broadcast
    } else if ip.is_multicast() {
        Internal::Multicast
    } else if a >= 240 || (a == 192 && b == 0 && c == 0) || (a == 198 && (b & 0xfe) == 18) {
        Internal::Reserved
    } else {
        return None;
    })
}

fn classify_v6(ip: Ipv6Addr) -> Option<Internal> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    let s = ip.segments();
    let low_v4 = || Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    Some(if ip.is_unspecified() {
        Internal::Unspecified
    } else if ip.is_loopback() {
        Internal::Loopback
    } else if METADATA_V6.contains(&ip) {
        Internal::Metadata
    } else if s[..6] == [0; 6] {
        // IPv4-compatible (deprecated): as its IPv4 address, and reserved whatever that is.
        classify_v4(low_v4()).unwrap_or(Internal::Reserved)
    } else if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0; 4] {
        // NAT64: the IPv4 address it translates to.
        return classify_v4(low_v4());
    } else if s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1 {
        Internal::Private
    } else if s[0] == 0x2002 {
        // 6to4: the IPv4 address it tunnels to.
        return classify_v4(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        ));
    } else if (s[0] & 0xfe00) == 0xfc00 || (s[0] & 0xffc0) == 0xfec0 {
        Internal::Private
    } else if (s[0] & 0xffc0) == 0xfe80 {
        Internal::LinkLocal
    } else if (s[0] & 0xff00) == 0xff00 {
        Internal::Multicast
    } else if s[0] == 0x100 && s[1..4] == [0; 3] {
        Internal::Reserved
    } else {
        return None;
    })
}

/// Why a target is refused. Names the host (never a path, a query or credentials).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum TargetError {
    /// The host is, or resolves to, an internal address not in `webhook_allow_private`.
    #[error("{host} {} {kind}: webhooks and API hosts may not point at internal addresses unless webhook_allow_private lists them", if *resolved { "resolves to" } else { "is" })]
    Internal {
        /// The URL's host, as parsed (`http://2130706433/` is `127.0.0.1`).
        host: String,
        /// What kind of address.
        kind: Internal,
        /// Whether the host is a name (judged by what it resolved to).
        resolved: bool,
    },
    /// Not an http(s) URL with a host.
    #[error("not an http(s) URL with a host")]
    NotAUrl,
}

/// A name that did not resolve (within the time allowed) when a target was configured:
/// accepted, since the delivery checks again, and worth a warning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unresolved {
    /// The name.
    pub host: String,
}

/// The outbound policy: which internal ranges are allowed, and the resolver names go through.
/// Cheap to clone (shared).
#[derive(Clone)]
pub struct Egress {
    allow: Arc<[IpNet]>,
    resolver: Arc<dyn Resolver>,
}

impl std::fmt::Debug for Egress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Egress")
            .field("allow", &self.allow)
            .finish_non_exhaustive()
    }
}

impl Egress {
    /// A policy allowing the internal ranges `allow`, resolving names with `resolver`.
    pub fn new(allow: Vec<IpNet>, resolver: Arc<dyn Resolver>) -> Self {
        Self {
            allow: allow.into(),
            resolver,
        }
    }

    /// Why `ip` may not be sent to (`None`: it may — public, or listed in the allow-list).
    pub fn refusal(&self, ip: IpAddr) -> Option<Internal> {
        let kind = classify(ip)?;
        // A metadata service is allowed only when listed by itself: a range allowed for a
        // private network (100.64.0.0/10, fd00::/8, 169.254.0.0/16) does not let it in.
        let allowed = self
            .allow
            .iter()
            .any(|n| n.contains(ip) && (kind != Internal::Metadata || n.is_single()));
        (!allowed).then_some(kind)
    }

    fn check_addrs(&self, host: &str, addrs: &[SocketAddr]) -> Result<(), TargetError> {
        match addrs.iter().find_map(|a| self.refusal(a.ip())) {
            Some(kind) => Err(TargetError::Internal {
                host: host.to_owned(),
                kind,
                resolved: true,
            }),
            None => Ok(()),
        }
    }

    /// Checks the host of `url` when it is an IP literal (names are checked when they are
    /// resolved: [`Egress::check_url`], and the webhook client's own lookups). `Ok(true)`
    /// when the host is a name.
    ///
    /// # Errors
    /// An internal address not allowed, or a URL without a host.
    pub fn check_literal(&self, url: &reqwest::Url) -> Result<bool, TargetError> {
        // The URL parser has already read every IPv4 spelling (`2130706433`, `0x7f.1`) as
        // dotted decimal; IPv6 hosts come in brackets.
        let host = url.host_str().ok_or(TargetError::NotAUrl)?;
        let Ok(ip) = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        else {
            return Ok(true);
        };
        match self.refusal(ip) {
            Some(kind) => Err(TargetError::Internal {
                host: ip.to_string(),
                kind,
                resolved: false,
            }),
            None => Ok(false),
        }
    }

    /// Checks where `url` points: an IP literal as it is, a name by every address it resolves
    /// to now. `Ok(Some(_))` for a name that does not resolve (or not within five seconds):
    /// not refused here — every delivery resolves and checks again.
    ///
    /// # Errors
    /// Not an http(s) URL with a host, or an internal address not allowed.
    pub async fn check_url(&self, url: &str) -> Result<Option<Unresolved>, TargetError> {
        let url = reqwest::Url::parse(url).map_err(|_| TargetError::NotAUrl)?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(TargetError::NotAUrl);
        }
        if !self.check_literal(&url)? {
            return Ok(None);
        }
        let host = url.host_str().unwrap_or_default().to_owned();
        let port = url.port_or_known_default().unwrap_or(0);
        match tokio::time::timeout(LOOKUP_TIMEOUT, self.resolver.lookup(&host, port)).await {
            Ok(Ok(addrs)) if !addrs.is_empty() => self.check_addrs(&host, &addrs).map(|()| None),
            _ => Ok(Some(Unresolved { host })),
        }
    }

    /// The client webhooks are sent with: names resolved through this policy (an internal
    /// answer fails the request before any connection), no redirects (a webhook URL that
    /// redirects elsewhere is a misconfiguration or an attack, and the signature must not
    /// travel to another host), and no proxy from the environment (the address checked must be
    /// the address connected to).
    pub fn webhook_client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(self.clone()))
            .build()
            .expect("a TLS backend is compiled in")
    }
}

impl reqwest::dns::Resolve for Egress {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let this = self.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            // Port 0: the client puts the URL's port in.
            let addrs = this.resolver.lookup(&host, 0).await?;
            if addrs.is_empty() {
                return Err(format!("{host} has no address").into());
            }
            this.check_addrs(&host, &addrs)?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The [`TargetError`] in `error`'s source chain, if a request failed because of one.
pub fn refusal_in<'e>(error: &'e (dyn std::error::Error + 'static)) -> Option<&'e TargetError> {
    let mut e = Some(error);
    while let Some(cur) = e {
        if let Some(t) = cur.downcast_ref::<TargetError>() {
            return Some(t);
        }
        e = cur.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(s: &str) -> Option<Internal> {
        classify(s.parse().unwrap())
    }

    #[test]
    fn a_range_allowed_for_a_private_network_does_not_admit_its_metadata_service() {
        let policy = |allow: &[&str]| {
            Egress::new(
                allow.iter().map(|a| a.parse().unwrap()).collect(),
                Arc::new(SystemResolver),
            )
        };
        let wide = policy(&["100.64.0.0/10", "fd00::/8", "169.254.0.0/16"]);
        assert_eq!(wide.refusal("100.64.1.2".parse().unwrap()), None);
        for metadata in ["100.100.100.200", "fd00:ec2::254", "169.254.169.254"] {
            assert_eq!(
                wide.refusal(metadata.parse().unwrap()),
                Some(Internal::Metadata),
                "{metadata}"
            );
        }
        let exact = policy(&["100.100.100.200/32", "fd00:ec2::254"]);
        assert_eq!(exact.refusal("100.100.100.200".parse().unwrap()), None);
        assert_eq!(exact.refusal("fd00:ec2::254".parse().unwrap()), None);
        assert!(exact.refusal("169.254.169.254".parse().unwrap()).is_some());
    }

    #[test]
    fn internal_addresses_are_classified() {
        for (ip, k) in [
            ("127.0.0.1", Internal::Loopback),
            ("127.255.0.9", Internal::Loopback),
            ("::1", Internal::Loopback),
            ("::ffff:127.0.0.1", Internal::Loopback),
            ("::127.0.0.1", Internal::Loopback),
            ("64:ff9b::7f00:1", Internal::Loopback),
            ("2002:7f00:1::1", Internal::Loopback),
            ("0.0.0.0", Internal::Unspecified),
            ("0.1.2.3", Internal::Unspecified),
            ("::", Internal::Unspecified),
            ("10.1.2.3", Internal::Private),
            ("172.31.255.1", Internal::Private),
            ("192.168.0.1", Internal::Private),
            ("::ffff:192.168.0.1", Internal::Private),
            ("fd12::1", Internal::Private),
            ("fc00::1", Internal::Private),
            ("fec0::1", Internal::Private),
            ("64:ff9b:1::1", Internal::Private),
            ("169.254.1.1", Internal::LinkLocal),
            ("fe80::1", Internal::LinkLocal),
            ("169.254.169.254", Internal::Metadata),
            ("100.100.100.200", Internal::Metadata),
            ("fd00:ec2::254", Internal::Metadata),
            ("100.64.0.1", Internal::Shared),
            ("100.127.255.254", Internal::Shared),
            ("224.0.0.1", Internal::Multicast),
            ("ff02::1", Internal::Multicast),
            ("255.255.255.255", Internal::Broadcast),
            ("240.0.0.1", Internal::Reserved),
            ("198.18.0.1", Internal::Reserved),
            ("192.0.0.8", Internal::Reserved),
            ("::8.8.8.8", Internal::Reserved),
            ("100::1", Internal::Reserved),
        ] {
            assert_eq!(kind(ip), Some(k), "{ip}");
        }
        for public in [
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.1",
            "172.32.0.1",
            "203.0.113.7",
            "2001:db8::1",
            "2606:4700::1111",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "::ffff:8.8.8.8",
        ] {
            assert_eq!(kind(public), None, "{public}");
        }
    }

    #[derive(Debug)]
    struct Fixed(Vec<IpAddr>);

    #[async_trait::async_trait]
    impl Resolver for Fixed {
        async fn lookup(&self, _: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
            Ok(self.0.iter().map(|ip| SocketAddr::new(*ip, port)).collect())
        }
    }

    #[tokio::test]
    async fn a_name_is_judged_by_every_address_and_the_allow_list_by_range() {
        let ips = |s: &[&str]| -> Vec<IpAddr> { s.iter().map(|i| i.parse().unwrap()).collect() };
        let mixed = Egress::new(vec![], Arc::new(Fixed(ips(&["203.0.113.7", "10.0.0.1"]))));
        let e = mixed
            .check_url("https://hooks.example/x")
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "hooks.example resolves to a private-network address: webhooks and API hosts may not point at internal addresses unless webhook_allow_private lists them"
        );
        let allowed = Egress::new(
            vec!["10.0.0.0/8".parse().unwrap()],
            Arc::new(Fixed(ips(&["203.0.113.7", "10.0.0.1"]))),
        );
        assert_eq!(
            allowed.check_url("https://hooks.example/x").await.unwrap(),
            None
        );
        let e = allowed.check_url("http://[::1]:9/").await.unwrap_err();
        assert!(
            e.to_string().starts_with("::1 is a loopback address"),
            "{e}"
        );
        let e = allowed.check_url("http://0x7f.1/").await.unwrap_err();
        assert!(e.to_string().starts_with("127.0.0.1 is a loopback"), "{e}");
        assert!(matches!(
            allowed.check_url("ftp://203.0.113.7/").await,
            Err(TargetError::NotAUrl)
        ));
        let nowhere = Egress::new(vec![], Arc::new(Fixed(vec![])));
        assert_eq!(
            nowhere.check_url("https://nowhere.example/").await.unwrap(),
            Some(Unresolved {
                host: "nowhere.example".into()
            })
        );
    }
}
