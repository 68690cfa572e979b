//! Which IP addresses are internal: every range that is not a host on the
//! public Internet (private, loopback, link-local and cloud metadata,
//! shared/carrier-grade NAT, unspecified, multicast, reserved, and the
//! IPv6 equivalents). One table, read by the renderer's request guard
//! (a page must not reach internal services through the renderer) and by
//! crawler verification (no public crawler connects from these, and their
//! reverse DNS is whatever the local network says).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::LazyLock;

use ipnet::IpNet;

/// The internal ranges, from IANA's special-purpose registries. The
/// documentation ranges (192.0.2.0/24, 2001:db8::/32, …) are left out:
/// they route nowhere, and tests use them as stand-ins for public hosts.
const INTERNAL_RANGES: &[&str] = &[
    "0.0.0.0/8",      // "this network", incl. the unspecified address
    "10.0.0.0/8",     // private
    "100.64.0.0/10",  // shared address space (carrier-grade NAT)
    "127.0.0.0/8",    // loopback
    "169.254.0.0/16", // link-local, incl. the cloud metadata address
    "172.16.0.0/12",  // private
    "192.0.0.0/24",   // IETF protocol assignments (incl. 192.0.0.192 metadata)
    "192.168.0.0/16", // private
    "198.18.0.0/15",  // benchmarking
    "224.0.0.0/4",    // multicast
    "240.0.0.0/4",    // reserved, incl. the broadcast address
    "::/96",          // unspecified, loopback and the old IPv4-compatible form
    "fc00::/7",       // unique local (incl. fd00:ec2::254 metadata)
    "fe80::/10",      // link-local
    "fec0::/10",      // site-local (deprecated)
    "ff00::/8",       // multicast
];

static INTERNAL: LazyLock<Vec<IpNet>> = LazyLock::new(|| {
    INTERNAL_RANGES
        .iter()
        .map(|range| range.parse().expect("a valid range in INTERNAL_RANGES"))
        .collect()
});

/// Whether `ip` is internal. IPv4 addresses inside IPv6 (mapped, and NAT64's
/// `64:ff9b::/96`) are judged as the IPv4 address they carry.
pub fn is_internal(ip: IpAddr) -> bool {
    let ip = embedded_v4(ip).map_or(ip, IpAddr::V4);
    INTERNAL.iter().any(|range| range.contains(&ip))
}

fn embedded_v4(ip: IpAddr) -> Option<Ipv4Addr> {
    let IpAddr::V6(v6) = ip else { return None };
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    let seg = v6.segments();
    (seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0]).then(|| {
        let [.., a, b, c, d] = v6.octets();
        Ipv4Addr::new(a, b, c, d)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn internal(text: &str) -> bool {
        is_internal(text.parse().unwrap())
    }

    #[test]
    fn internal_ranges_are_internal() {
        for ip in [
            "0.0.0.0",
            "10.1.2.3",
            "100.64.0.1",
            "100.127.255.255",
            "127.0.0.1",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.192",
            "192.168.1.1",
            "198.18.0.1",
            "198.19.255.255",
            "224.0.0.1",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::127.0.0.1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "fd00:ec2::254",
            "fc00::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
        ] {
            assert!(internal(ip), "{ip} is internal");
        }
    }

    #[test]
    fn public_addresses_are_not() {
        for ip in [
            "8.8.8.8",
            "66.249.66.1",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "198.17.255.255",
            "198.20.0.0",
            "192.0.2.44",
            "203.0.113.7",
            "223.255.255.255",
            "2001:4860:4860::8888",
            "2001:db8::1",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            assert!(!internal(ip), "{ip} is public");
        }
    }
}
