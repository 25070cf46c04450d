//! ip-address-restriction-inbound.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use http::StatusCode;
use serde::Deserialize;

use crate::policy::{Flow, FromOptions, Inbound};
use crate::{Context, Problem, Request};

/// Options of ip-address-restriction-inbound. At least one of the lists must have an entry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IpAddressRestrictionOptions {
    /// Addresses and CIDR ranges (IPv4 or IPv6) allowed; when not empty, every other client is
    /// refused.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Addresses and CIDR ranges refused; wins over `allow`.
    #[serde(default)]
    pub deny: Vec<String>,
}

/// A CIDR range with the host bits cleared, IPv4 and IPv6 kept apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Range {
    V4 { net: u32, prefix: u8 },
    V6 { net: u128, prefix: u8 },
}

fn mask32(prefix: u8) -> u32 {
    // `u32::MAX << 32` overflows, so /0 is its own case.
    if prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix)) }
}

fn mask128(prefix: u8) -> u128 {
    if prefix == 0 { 0 } else { u128::MAX << (128 - u32::from(prefix)) }
}

impl Range {
    fn v4(addr: Ipv4Addr, prefix: u8) -> Range {
        Range::V4 { net: u32::from(addr) & mask32(prefix), prefix }
    }

    fn v6(addr: Ipv6Addr, prefix: u8) -> Range {
        // An IPv4-mapped range (::ffff:a.b.c.d/96+n) is the IPv4 range a.b.c.d/n, so that it
        // matches clients however the address family was reported.
        if prefix >= 96
            && let Some(v4) = addr.to_ipv4_mapped()
        {
            return Range::v4(v4, prefix - 96);
        }
        Range::V6 { net: u128::from(addr) & mask128(prefix), prefix }
    }

    /// Parses `addr` or `addr/prefix`; host bits after the prefix are ignored, as most
    /// firewalls do.
    fn parse(entry: &str) -> Result<Range, String> {
        let e = entry.trim();
        let (addr, prefix) = match e.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (e, None),
        };
        let ip: IpAddr = addr.parse().map_err(|_| format!("`{entry}` is not an IP address or CIDR range"))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            // Digits only: `u8::from_str` would also take a leading `+`.
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => match p.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("`{entry}`: the prefix length must be 0 to {max}")),
            },
            Some(_) => return Err(format!("`{entry}`: the prefix length must be 0 to {max}")),
        };
        Ok(match ip {
            IpAddr::V4(a) => Range::v4(a, prefix),
            IpAddr::V6(a) => Range::v6(a, prefix),
        })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        match (*self, ip) {
            (Range::V4 { net, prefix }, IpAddr::V4(a)) => u32::from(a) & mask32(prefix) == net,
            (Range::V6 { net, prefix }, IpAddr::V6(a)) => u128::from(a) & mask128(prefix) == net,
            _ => false,
        }
    }
}

/// `IpAddressRestrictionInboundPolicy`: refuses clients by address with a 403 problem.
///
/// The client address is `Context::client_ip` (the peer, or the `X-Forwarded-For` entry the
/// configured trusted proxy hops point at); IPv4-mapped IPv6 addresses count as IPv4. A
/// client in `deny` is refused; otherwise, when `allow` has entries, a client outside them
/// is refused. An unknown client address (reported as `0.0.0.0` or `::`) fails closed when
/// `allow` is set.
#[derive(Debug, Clone)]
pub struct IpAddressRestrictionInbound {
    allow: Vec<Range>,
    deny: Vec<Range>,
}

impl FromOptions for IpAddressRestrictionInbound {
    type Options = IpAddressRestrictionOptions;
    fn from_options(options: Self::Options, _name: &str) -> Result<Self, String> {
        let parse = |list: &[String], what: &str| -> Result<Vec<Range>, String> {
            list.iter().map(|e| Range::parse(e).map_err(|why| format!("{what}: {why}"))).collect()
        };
        let allow = parse(&options.allow, "allow")?;
        let deny = parse(&options.deny, "deny")?;
        if allow.is_empty() && deny.is_empty() {
            return Err("set `allow` or `deny` (or both) to at least one address or range".to_owned());
        }
        Ok(IpAddressRestrictionInbound { allow, deny })
    }
}

impl IpAddressRestrictionInbound {
    fn permits(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        if self.deny.iter().any(|r| r.contains(ip)) {
            return false;
        }
        if self.allow.is_empty() {
            return true;
        }
        !ip.is_unspecified() && self.allow.iter().any(|r| r.contains(ip))
    }
}

impl Inbound for IpAddressRestrictionInbound {
    async fn on_request(&self, req: Request, cx: &mut Context) -> Flow {
        if self.permits(cx.client_ip) {
            Flow::Continue(req)
        } else {
            Flow::Problem(Problem::new(StatusCode::FORBIDDEN).with_detail("the client's IP address is not allowed"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policies::test_context;
    use crate::policies::test_util::{build, must, problem_status, request};
    use serde_json::json;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or(IpAddr::V4(Ipv4Addr::BROADCAST))
    }

    fn policy(allow: &[&str], deny: &[&str]) -> IpAddressRestrictionInbound {
        must(build(json!({"allow": allow, "deny": deny})))
    }

    #[test]
    fn ipv4_cidr_boundaries() {
        let p = policy(&["198.51.100.0/24", "203.0.113.42"], &[]);
        assert!(p.permits(ip("198.51.100.0")));
        assert!(p.permits(ip("198.51.100.255")));
        assert!(!p.permits(ip("198.51.99.255")));
        assert!(!p.permits(ip("198.51.101.0")));
        assert!(p.permits(ip("203.0.113.42")));
        assert!(!p.permits(ip("203.0.113.43")));
        assert!(!p.permits(ip("203.0.113.41")));

        let p = policy(&["10.0.0.0/31"], &[]);
        assert!(p.permits(ip("10.0.0.1")));
        assert!(!p.permits(ip("10.0.0.2")));

        let p = policy(&["192.0.2.7/32"], &[]);
        assert!(p.permits(ip("192.0.2.7")));
        assert!(!p.permits(ip("192.0.2.6")));

        // Host bits after the prefix are ignored.
        let p = policy(&["172.16.5.4/12"], &[]);
        assert!(p.permits(ip("172.31.255.255")));
        assert!(!p.permits(ip("172.32.0.0")));
    }

    #[test]
    fn slash_zero_matches_its_family_only() {
        let p = policy(&["0.0.0.0/0"], &[]);
        assert!(p.permits(ip("1.2.3.4")));
        assert!(p.permits(ip("255.255.255.255")));
        assert!(!p.permits(ip("2001:db8::1")));
        let p = policy(&["::/0"], &[]);
        assert!(p.permits(ip("2001:db8::1")));
        assert!(!p.permits(ip("1.2.3.4")));
    }

    #[test]
    fn ipv6_ranges() {
        let p = policy(&["2001:db8::/32", "fe80::1/128"], &[]);
        assert!(p.permits(ip("2001:db8::")));
        assert!(p.permits(ip("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff")));
        assert!(!p.permits(ip("2001:db9::")));
        assert!(!p.permits(ip("2001:db7:ffff::1")));
        assert!(p.permits(ip("FE80::1")));
        assert!(!p.permits(ip("fe80::2")));
        let p = policy(&["2001:db8:0:0:0:0:0:0/127"], &[]);
        assert!(p.permits(ip("2001:db8::1")));
        assert!(!p.permits(ip("2001:db8::2")));
    }

    #[test]
    fn ipv4_mapped_addresses_count_as_ipv4() {
        let p = policy(&["1.2.3.0/24"], &[]);
        assert!(p.permits(ip("::ffff:1.2.3.4")));
        assert!(!p.permits(ip("::ffff:1.2.4.4")));
        // Mapped entries in the configuration also match plain IPv4 clients.
        let p = policy(&["::ffff:10.0.0.0/104"], &["::ffff:10.9.9.9"]);
        assert!(p.permits(ip("10.1.2.3")));
        assert!(!p.permits(ip("10.9.9.9")));
        assert!(!p.permits(ip("11.0.0.1")));
    }

    #[test]
    fn deny_wins_over_allow() {
        let p = policy(&["10.0.0.0/8"], &["10.1.0.0/16"]);
        assert!(p.permits(ip("10.2.0.1")));
        assert!(!p.permits(ip("10.1.2.3")));
        assert!(!p.permits(ip("11.0.0.1")));
        // Only a deny list: everyone else passes.
        let p = policy(&[], &["192.0.2.0/24", "2001:db8::/48"]);
        assert!(!p.permits(ip("192.0.2.99")));
        assert!(!p.permits(ip("2001:db8:0:1::1")));
        assert!(p.permits(ip("2001:db8:1::1")));
        assert!(p.permits(ip("8.8.8.8")));
    }

    #[test]
    fn unknown_client_fails_closed_with_an_allow_list() {
        let p = policy(&["0.0.0.0/0"], &[]);
        assert!(!p.permits(ip("0.0.0.0")));
        assert!(policy(&[], &["1.1.1.1"]).permits(ip("0.0.0.0")));
    }

    #[test]
    fn bad_entries_are_named() {
        for bad in ["1.2.3.4/33", "::/129", "1.2.3.4/", "1.2.3.4/+8", "1.2.3.4/-1", "1.2.3.4/8/8", "1.2.3", "example.com", "1.2.3.4/0008"] {
            let err = build::<IpAddressRestrictionInbound>(json!({"allow": [bad]}));
            assert!(matches!(&err, Err(e) if e.contains(bad)), "{bad}: {err:?}");
        }
        let err = build::<IpAddressRestrictionInbound>(json!({"allow": ["1.1.1.1"], "deny": ["nope"]}));
        assert!(matches!(&err, Err(e) if e.starts_with("deny") && e.contains("nope")), "{err:?}");
        assert!(build::<IpAddressRestrictionInbound>(json!({})).is_err());
        assert!(build::<IpAddressRestrictionInbound>(json!({"allow": [], "deny": []})).is_err());
    }

    #[tokio::test]
    async fn refuses_with_403_using_the_context_client_ip() {
        let p = policy(&["10.0.0.0/8"], &[]);
        let mut cx = test_context();
        cx.client_ip = ip("10.4.5.6");
        assert!(matches!(p.on_request(request("GET", "/a", ""), &mut cx).await, Flow::Continue(_)));
        cx.client_ip = ip("127.0.0.1");
        assert_eq!(problem_status(&p.on_request(request("GET", "/a", ""), &mut cx).await), Some(403));
    }
}
