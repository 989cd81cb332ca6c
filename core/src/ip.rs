//! CIDR matching and client-address resolution for the token's IP filter.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use crate::config::ClientIpSource;

/// An address block, IPv4 or IPv6, normalised: host bits below the prefix are cleared when
/// parsed, so `10.0.0.1/8` is the block `10.0.0.0/8` (which is what it matches anyway).
/// [`fmt::Display`] writes that normalised form, with a single host (a full-length prefix)
/// as a bare address: `10.0.0.0/8`, `2001:db8::/32`, `127.0.0.1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// Why a text is not a [`Cidr`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CidrError {
    /// The address part is not an IPv4 or IPv6 address.
    Address,
    /// The prefix length is not a decimal number (without sign or leading zero) within the
    /// address family's bits.
    Prefix {
        /// 32 or 128.
        max: u8,
    },
}

impl fmt::Display for CidrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CidrError::Address => f.write_str("is not an IP address or CIDR"),
            CidrError::Prefix { max } => write!(
                f,
                "the prefix length after the / must be a whole number from 0 to {max}"
            ),
        }
    }
}

impl std::error::Error for CidrError {}

impl Cidr {
    /// Parses `a.b.c.d/n`, `v6::/n`, or a bare address (a single host), ignoring
    /// surrounding whitespace, as the verifier reads `ip_allow`.
    pub fn parse(s: &str) -> Option<Cidr> {
        Cidr::parse_strict(s.trim()).ok()
    }

    /// As [`Cidr::parse`], without trimming, saying what is wrong (also [`str::parse`]).
    pub fn parse_strict(s: &str) -> Result<Cidr, CidrError> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => {
                let addr = a.parse::<IpAddr>().map_err(|_| CidrError::Address)?;
                let max = if addr.is_ipv4() { 32 } else { 128 };
                // Leading zeros and signs are refused so that "/08" cannot mean two things.
                if p.is_empty()
                    || p.len() > 3
                    || !p.bytes().all(|b| b.is_ascii_digit())
                    || (p.len() > 1 && p.starts_with('0'))
                {
                    return Err(CidrError::Prefix { max });
                }
                let prefix = p
                    .parse::<u8>()
                    .ok()
                    .filter(|n| *n <= max)
                    .ok_or(CidrError::Prefix { max })?;
                (addr, prefix)
            }
            None => {
                let a = s.parse::<IpAddr>().map_err(|_| CidrError::Address)?;
                (a, if a.is_ipv4() { 32 } else { 128 })
            }
        };
        Ok(Cidr {
            addr: network(addr, prefix),
            prefix,
        })
    }

    /// The block's first address (host bits cleared).
    pub fn address(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` lies inside this block. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`)
    /// are the IPv4 addresses they map, on either side.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let v6 = |ip: IpAddr| match ip {
            IpAddr::V4(a) => u128::from(a.to_ipv6_mapped()),
            IpAddr::V6(a) => u128::from(a),
        };
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(a)) => {
                let mask = v4_mask(self.prefix);
                (u32::from(net) & mask) == (u32::from(a) & mask)
            }
            (IpAddr::V6(net), a) => {
                // An IPv4 client only lies inside the IPv4-mapped part of IPv6.
                let mapped_net = self.prefix >= 96 && net.to_ipv4_mapped().is_some();
                if a.is_ipv4() && !mapped_net {
                    return false;
                }
                let mask = v6_mask(self.prefix);
                (v6(self.addr) & mask) == (v6(a) & mask)
            }
            (IpAddr::V4(_), IpAddr::V6(_)) => false,
        }
    }
}

fn v4_mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    }
}

fn v6_mask(prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(prefix.min(128)))
    }
}

/// `ip` with the bits below `prefix` cleared.
fn network(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & v4_mask(prefix))),
        IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) & v6_mask(prefix))),
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let full = if self.addr.is_ipv4() { 32 } else { 128 };
        if self.prefix == full {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        Cidr::parse_strict(s)
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
            ("::ffff:192.0.2.0/120", "192.0.2.77", true),
            ("::ffff:192.0.2.0/120", "192.0.3.1", false),
            ("::ffff:192.0.2.9", "::ffff:192.0.2.9", true),
            ("::ffff:192.0.2.9", "192.0.2.9", true),
            ("10.0.0.1/8", "10.200.0.1", true),
            ("::/0", "10.0.0.1", false),
        ];
        for (cidr, ip, want) in cases {
            let c = Cidr::parse(cidr).unwrap_or_else(|| panic!("parse {cidr}"));
            assert_eq!(c.contains(ip.parse().unwrap()), *want, "{cidr} ∋ {ip}");
        }
    }

    #[test]
    fn normalised_form() {
        let cases = [
            ("10.0.0.1/8", "10.0.0.0/8"),
            ("10.0.0.0/8", "10.0.0.0/8"),
            ("127.0.0.1/32", "127.0.0.1"),
            ("127.0.0.1", "127.0.0.1"),
            ("2001:db8::1/32", "2001:db8::/32"),
            ("::1/128", "::1"),
            ("0.0.0.0/0", "0.0.0.0/0"),
            ("192.0.2.255/0", "0.0.0.0/0"),
        ];
        for (input, shown) in cases {
            let c: Cidr = input.parse().unwrap();
            assert_eq!(c.to_string(), shown, "{input}");
            assert_eq!(shown.parse::<Cidr>(), Ok(c), "{input} round trip");
        }
        assert_eq!(" 10.0.0.0/8".parse::<Cidr>(), Err(CidrError::Address));
        assert_eq!(
            "10.0.0.0/33".parse::<Cidr>(),
            Err(CidrError::Prefix { max: 32 })
        );
        assert_eq!("::/08".parse::<Cidr>(), Err(CidrError::Prefix { max: 128 }));
        assert_eq!(Cidr::parse(" 10.0.0.0/8 ").map(|c| c.prefix()), Some(8));
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
