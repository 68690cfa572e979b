//! The client's address (SPEC §2, "Crawlers that lie"): the connection's
//! peer or, when the peer is one of `trusted_proxies` (a CDN, a load
//! balancer), the last `X-Forwarded-For` address that is not itself a
//! trusted proxy.
//!
//! This is the one place that decides who the client is: crawler
//! verification asks it, and so should anything that writes
//! `X-Forwarded-For` or reads a PROXY protocol header.
//!
//! Why the *last* untrusted address: each proxy appends the address it was
//! connected from, so reading from the right, every entry up to the first
//! untrusted one was written by a proxy we trust; anything to its left was
//! written by the client and may be invented.

use std::net::{IpAddr, SocketAddr};

use hyper::header::{HeaderMap, HeaderName};
use ipnet::IpNet;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The peers whose `X-Forwarded-For` is believed (`trusted_proxies`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

impl TrustedProxies {
    pub fn new(nets: Vec<IpNet>) -> Self {
        TrustedProxies { nets }
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    pub fn nets(&self) -> &[IpNet] {
        &self.nets
    }

    /// Whether `ip` (IPv4-mapped IPv6 counts as IPv4) is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|net| net.contains(&ip))
    }

    /// The client behind a connection from `peer` that sent `headers`.
    ///
    /// An entry that is not an address (`unknown`, an obfuscated name,
    /// garbage) where a trusted proxy should have written one ends the
    /// walk: the nearest trusted address is the answer, so a client can
    /// never choose its address by sending a malformed list.
    pub fn client_addr(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if self.nets.is_empty() || !self.contains(peer) {
            return peer;
        }
        let mut nearest = peer;
        // Several header lines form one list, in order.
        for value in headers.get_all(&X_FORWARDED_FOR).iter().rev() {
            let Ok(list) = value.to_str() else {
                return nearest;
            };
            for entry in list.rsplit(',') {
                let Some(ip) = parse_entry(entry.trim()) else {
                    return nearest;
                };
                if !self.contains(ip) {
                    return ip;
                }
                nearest = ip;
            }
        }
        nearest
    }
}

/// One `X-Forwarded-For` entry: an address, optionally with a port
/// (`1.2.3.4:80`, `[2001:db8::1]:80`) or in brackets.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(addr) = entry.parse::<SocketAddr>() {
        return Some(addr.ip().to_canonical());
    }
    entry
        .strip_prefix('[')
        .and_then(|e| e.strip_suffix(']'))
        .and_then(|e| e.parse::<IpAddr>().ok())
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_nets;
    use hyper::header::HeaderValue;

    fn trusted(list: &[&str]) -> TrustedProxies {
        TrustedProxies::new(parse_nets(list.iter().copied()).unwrap())
    }

    fn xff(lines: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append(&X_FORWARDED_FOR, HeaderValue::from_str(l).unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let t = trusted(&["10.0.0.0/8"]);
        let h = xff(&["66.249.66.1"]);
        assert_eq!(t.client_addr(ip("203.0.113.9"), &h), ip("203.0.113.9"));
        assert_eq!(
            TrustedProxies::default().client_addr(ip("127.0.0.1"), &h),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn a_trusted_peer_names_the_last_untrusted_address() {
        let t = trusted(&["10.0.0.0/8", "127.0.0.1"]);
        // The client forged the first entry; 10.1.2.3 is our own edge.
        let h = xff(&["1.1.1.1, 66.249.66.1, 10.1.2.3"]);
        assert_eq!(t.client_addr(ip("127.0.0.1"), &h), ip("66.249.66.1"));
        // Several lines are one list.
        let h = xff(&["1.1.1.1", "66.249.66.1", "10.1.2.3"]);
        assert_eq!(t.client_addr(ip("127.0.0.1"), &h), ip("66.249.66.1"));
    }

    #[test]
    fn ports_brackets_and_mapped_addresses_are_understood() {
        let t = trusted(&["127.0.0.0/8", "::1"]);
        for (entry, want) in [
            ("66.249.66.1:4711", "66.249.66.1"),
            ("[2001:4860:4801:10::1]:443", "2001:4860:4801:10::1"),
            ("[2001:4860:4801:10::1]", "2001:4860:4801:10::1"),
            ("::ffff:66.249.66.1", "66.249.66.1"),
        ] {
            assert_eq!(
                t.client_addr(ip("::1"), &xff(&[entry])),
                ip(want),
                "{entry}"
            );
        }
        // A mapped peer is the IPv4 peer.
        assert_eq!(
            t.client_addr(ip("::ffff:127.0.0.1"), &xff(&["66.249.66.1"])),
            ip("66.249.66.1")
        );
    }

    #[test]
    fn garbage_or_a_missing_header_leaves_the_nearest_trusted_address() {
        let t = trusted(&["127.0.0.1", "10.0.0.0/8"]);
        assert_eq!(
            t.client_addr(ip("127.0.0.1"), &HeaderMap::new()),
            ip("127.0.0.1")
        );
        for list in ["66.249.66.1, unknown, 10.0.0.7", "66.249.66.1,,10.0.0.7"] {
            assert_eq!(
                t.client_addr(ip("127.0.0.1"), &xff(&[list])),
                ip("10.0.0.7"),
                "{list}"
            );
        }
        assert_eq!(
            t.client_addr(ip("127.0.0.1"), &xff(&["garbage"])),
            ip("127.0.0.1")
        );
        // Every entry trusted: the farthest one.
        assert_eq!(
            t.client_addr(ip("127.0.0.1"), &xff(&["10.9.9.9, 10.0.0.7"])),
            ip("10.9.9.9")
        );
    }

    #[test]
    fn entries_parse_as_cidrs_or_addresses() {
        let nets = parse_nets(["10.1.2.3/8", " 192.0.2.1 ", "", "2001:db8::/32"]).unwrap();
        let shown: Vec<String> = nets.iter().map(|n| n.to_string()).collect();
        assert_eq!(shown, ["10.0.0.0/8", "192.0.2.1/32", "2001:db8::/32"]);
        assert!(parse_nets(["10.0.0.0/33"]).is_err());
        assert!(parse_nets(["proxy.example"]).is_err());
    }
}
