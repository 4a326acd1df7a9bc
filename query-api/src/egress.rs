//! Where alert webhooks may be sent. A tenant admin registers a URL and Perimeter's server
//! POSTs to it: without a guard, that is a way to make the server call addresses only it can
//! reach (server-side request forgery), above all the cloud metadata endpoint
//! (`169.254.169.254`), which hands out the host's credentials.
//!
//! - Link-local (metadata), AWS's IPv6 metadata address (`fd00:ec2::254`), unspecified,
//!   multicast and broadcast addresses are always refused.
//! - An IPv6 address that leads to an IPv4 one (IPv4-mapped, NAT64 `64:ff9b::/96`, 6to4
//!   `2002::/16`) is judged as that IPv4 address.
//! - Loopback and private addresses (RFC 1918, CGNAT, IPv6 unique local) are refused when
//!   `allow_private_destinations` is off. It is on by default, because a single-organisation
//!   install often posts to an internal relay; a deployment whose tenants are not the operator
//!   should turn it off.
//! - The check applies to the addresses a host name resolves to at delivery time ([`GuardedDns`],
//!   so a name re-pointed after registration is caught), to IP literals in URLs (checked at
//!   registration and before each delivery), and redirects are not followed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Why alerts may not be sent to `ip`, or `None` when they may.
pub fn refusal(ip: IpAddr, allow_private: bool) -> Option<&'static str> {
    let ip = match ip {
        IpAddr::V6(v6) => embedded_v4(v6).map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) => refusal_v4(v4, allow_private),
        IpAddr::V6(v6) => refusal_v6(v6, allow_private),
    }
}

/// The IPv4 address an IPv6 one reaches: IPv4-mapped (`::ffff:a.b.c.d`), NAT64's well-known
/// prefix (`64:ff9b::a.b.c.d`, which a NAT64 gateway forwards to that IPv4 address) and 6to4
/// (`2002:AABB:CCDD::/48`). Judged as that address, `64:ff9b::a9fe:a9fe` is the metadata
/// endpoint it leads to, not a public IPv6 address.
fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    let [s0, s1, s2, s3, s4, s5, s6, s7] = v6.segments();
    let from = |hi: u16, lo: u16| {
        let [a, b] = hi.to_be_bytes();
        let [c, d] = lo.to_be_bytes();
        Ipv4Addr::new(a, b, c, d)
    };
    match (s0, s1) {
        (0x64, 0xff9b) if [s2, s3, s4, s5] == [0; 4] => Some(from(s6, s7)),
        (0x2002, _) => Some(from(s1, s2)),
        _ => None,
    }
}

fn refusal_v4(ip: Ipv4Addr, allow_private: bool) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    // Clouds whose metadata endpoint is no link-local address: Alibaba's (in the shared
    // address space) and Oracle's (the IETF protocol assignments block).
    const METADATA_V4: [Ipv4Addr; 2] = [
        Ipv4Addr::new(100, 100, 100, 200),
        Ipv4Addr::new(192, 0, 0, 192),
    ];
    if ip.is_link_local() {
        Some("a link-local address (cloud metadata lives there)")
    } else if METADATA_V4.contains(&ip) {
        Some("the cloud metadata endpoint")
    } else if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() || a == 0 {
        Some("not a unicast address")
    } else if !allow_private
        && (ip.is_loopback() || ip.is_private() || (a == 100 && (64..128).contains(&b)))
    {
        Some("a loopback or private address (allow_private_destinations is off)")
    } else {
        None
    }
}

fn refusal_v6(ip: Ipv6Addr, allow_private: bool) -> Option<&'static str> {
    let first = ip.segments()[0];
    // AWS's metadata endpoint over IPv6 is a unique-local address, not a link-local one.
    const AWS_METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);
    if (first & 0xffc0) == 0xfe80 {
        Some("a link-local address (cloud metadata lives there)")
    } else if ip == AWS_METADATA_V6 {
        Some("the cloud metadata endpoint")
    } else if ip.is_unspecified() || ip.is_multicast() {
        Some("not a unicast address")
    } else if !allow_private && (ip.is_loopback() || (first & 0xfe00) == 0xfc00) {
        Some("a loopback or private address (allow_private_destinations is off)")
    } else {
        None
    }
}

/// Why alerts may not be sent to `url`'s host when it is an IP literal (host names are checked
/// when they are resolved, by [`GuardedDns`]).
pub fn literal_refusal(url: &reqwest::Url, allow_private: bool) -> Option<String> {
    let host = url.host_str()?;
    let ip: IpAddr = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()?;
    refusal(ip, allow_private).map(|why| format!("{ip} is {why}"))
}

/// What a refusal says (the delivery gives a destination refused so up at once).
pub const REFUSED: &str = "alerts are not sent there";

/// Resolves destination host names and keeps only the addresses alerts may be sent to.
#[derive(Debug, Clone, Copy)]
pub struct GuardedDns {
    pub allow_private: bool,
}

impl reqwest::dns::Resolve for GuardedDns {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_string();
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = resolved
                .iter()
                .copied()
                .filter(|a| refusal(a.ip(), allow_private).is_none())
                .collect();
            if allowed.is_empty() {
                let Some(why) = resolved
                    .first()
                    .and_then(|a| refusal(a.ip(), allow_private))
                else {
                    return Err(format!("{host}: no address").into());
                };
                return Err(format!("{host}: {REFUSED} ({why})").into());
            }
            let addrs: reqwest::dns::Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_is_always_refused_private_only_when_asked() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        for always in [
            "169.254.169.254",
            "fe80::1",
            "0.0.0.0",
            "::",
            "255.255.255.255",
            "224.0.0.1",
            "::ffff:169.254.169.254",
            // The metadata endpoint through a NAT64 gateway and through 6to4.
            "64:ff9b::a9fe:a9fe",
            "2002:a9fe:a9fe::1",
            // AWS's over IPv6 (it was allowed with allow_private_destinations).
            "fd00:ec2::254",
            // Alibaba's and Oracle's.
            "100.100.100.200",
            "192.0.0.192",
        ] {
            assert!(refusal(ip(always), true).is_some(), "{always}");
        }
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "64:ff9b::a00:1",
            "2002:c0a8:101::1",
        ] {
            assert!(refusal(ip(private), true).is_none(), "{private}");
            assert!(refusal(ip(private), false).is_some(), "{private}");
        }
        for public in [
            "203.0.113.7",
            "8.8.8.8",
            "2001:db8::1",
            "172.32.0.1",
            "100.128.0.1",
            "64:ff9b::808:808",
            "2002:cb00:7107::1",
        ] {
            assert!(refusal(ip(public), false).is_none(), "{public}");
        }
        let url = |s: &str| reqwest::Url::parse(s).unwrap();
        assert!(literal_refusal(&url("http://169.254.169.254/latest/meta-data/"), true).is_some());
        assert!(literal_refusal(&url("http://[fe80::1]/x"), true).is_some());
        assert!(literal_refusal(&url("http://hooks.example.com/x"), false).is_none());
        assert!(literal_refusal(&url("http://127.0.0.1:9/x"), true).is_none());
    }
}
