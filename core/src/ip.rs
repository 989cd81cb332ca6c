//! CIDR matching and client-address resolution for the token's IP filter.

use std::net::{IpAddr, SocketAddr};

use crate::config::ClientIpSource;

/// An address block, IPv4 or IPv6.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `a.b.c.d/n`, `v6::/n`, or a bare address (a single host).
    pub fn parse(s: &str) -> Option<Cidr> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => {
                // Leading zeros and signs are refused so that "/08" cannot mean two things.
                if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                if p.len() > 1 && p.starts_with('0') {
                    return None;
                }
                (a.parse::<IpAddr>().ok()?, p.parse::<u8>().ok()?)
            }
            None => {
                let a = s.parse::<IpAddr>().ok()?;
                (a, if a.is_ipv4() { 32 } else { 128 })
            }
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return None;
        }
        Some(Cidr { addr, prefix })
    }

    /// Whether `ip` lies inside this block. IPv4-mapped IPv6 addresses are compared as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (canonical(self.addr), ip) {
            (IpAddr::V4(net), IpAddr::V4(a)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - u32::from(self.prefix.min(32)))
                };
                (u32::from(net) & mask) == (u32::from(a) & mask)
            }
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - u32::from(self.prefix))
                };
                (u128::from(net) & mask) == (u128::from(a) & mask)
            }
            _ => false,
        }
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// Parses an address as hosts report it: `ip:port`, `[v6]:port`, or a bare address.
pub fn parse_address(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    // "[::1]" without a port.
    s.strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|r| r.parse::<IpAddr>().ok())
}

/// Finds the client address for the configured source. `peer` is the connection's
/// address as the host reports it; `xff` the X-Forwarded-For values in order.
pub fn client_address(source: ClientIpSource, peer: Option<&str>, xff: &[&str]) -> Option<IpAddr> {
    match source {
        ClientIpSource::Peer => peer.and_then(parse_address),
        ClientIpSource::XForwardedFor { trusted_hops } => {
            // Several headers are one list (RFC 7230 §3.2.2), in order.
            let entries: Vec<&str> = xff
                .iter()
                .flat_map(|v| v.split(','))
                .map(str::trim)
                .collect();
            if entries.len() < trusted_hops {
                return None;
            }
            parse_address(entries[entries.len() - trusted_hops])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_table() {
        let cases: &[(&str, &str, bool)] = &[
            ("10.0.0.0/8", "10.1.2.3", true),
            ("10.0.0.0/8", "11.0.0.1", false),
            ("127.0.0.1", "127.0.0.1", true),
            ("127.0.0.1", "127.0.0.2", false),
            ("127.0.0.1/32", "::1", false),
            ("::1", "::1", true),
            ("::1/128", "127.0.0.1", false),
            ("0.0.0.0/0", "203.0.113.9", true),
            ("0.0.0.0/0", "2001:db8::1", false),
            ("::/0", "2001:db8::1", true),
            ("2001:db8::/32", "2001:db8:ffff::1", true),
            ("2001:db8::/32", "2001:db9::1", false),
            ("192.0.2.0/24", "::ffff:192.0.2.7", true),
            ("192.0.2.0/25", "192.0.2.128", false),
        ];
        for (cidr, ip, want) in cases {
            let c = Cidr::parse(cidr).unwrap_or_else(|| panic!("parse {cidr}"));
            assert_eq!(c.contains(ip.parse().unwrap()), *want, "{cidr} ∋ {ip}");
        }
    }

    #[test]
    fn bad_cidrs() {
        for s in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "10.0.0.0/08",
            "10.0.0/8",
            "x/1",
            "10.0.0.0/-1",
            "10.0.0.0/+8",
        ] {
            assert!(Cidr::parse(s).is_none(), "{s}");
        }
    }

    #[test]
    fn addresses() {
        assert_eq!(
            parse_address("127.0.0.1:443"),
            Some("127.0.0.1".parse().unwrap())
        );
        assert_eq!(parse_address("[::1]:443"), Some("::1".parse().unwrap()));
        assert_eq!(parse_address("::1"), Some("::1".parse().unwrap()));
        assert_eq!(parse_address("[::1]"), Some("::1".parse().unwrap()));
        assert_eq!(parse_address("nope"), None);
    }

    #[test]
    fn forwarded_for_hops() {
        let xff = ["198.51.100.1, 203.0.113.5", "10.0.0.2"];
        let src = |h| ClientIpSource::XForwardedFor { trusted_hops: h };
        assert_eq!(
            client_address(src(1), None, &xff),
            Some("10.0.0.2".parse().unwrap())
        );
        assert_eq!(
            client_address(src(2), None, &xff),
            Some("203.0.113.5".parse().unwrap())
        );
        assert_eq!(
            client_address(src(3), None, &xff),
            Some("198.51.100.1".parse().unwrap())
        );
        assert_eq!(client_address(src(4), None, &xff), None);
        assert_eq!(client_address(src(1), None, &[]), None);
        assert_eq!(client_address(src(1), None, &["garbage"]), None);
        assert_eq!(
            client_address(ClientIpSource::Peer, Some("[::1]:5"), &xff),
            Some("::1".parse().unwrap())
        );
    }
}
