//! Which requests a rendering page may make.
//!
//! Requests for the public host (and for the configured origin itself) are
//! answered from the origin by the renderer. Everything else is checked here:
//! images, media and fonts are never loaded (a crawler does not need them and
//! they dominate load time), known analytics/ads hosts are blocked, and
//! loopback/private/link-local/metadata addresses and non-http(s) schemes are
//! refused so a page cannot use the renderer to reach internal services.

use std::net::IpAddr;
use std::time::Duration;

use chromiumoxide::cdp::browser_protocol::network::ResourceType;
use url::{Host, Url};

/// Analytics, tag managers and ad networks: blocked with their subdomains.
pub(crate) const BLOCKED_HOSTS: &[&str] = &[
    "google-analytics.com",
    "analytics.google.com",
    "googletagmanager.com",
    "googletagservices.com",
    "googlesyndication.com",
    "googleadservices.com",
    "doubleclick.net",
    "adservice.google.com",
    "facebook.net",
    "connect.facebook.com",
    "hotjar.com",
    "hotjar.io",
    "clarity.ms",
    "bat.bing.com",
    "segment.com",
    "segment.io",
    "mixpanel.com",
    "amplitude.com",
    "fullstory.com",
    "heap.io",
    "heapanalytics.com",
    "mc.yandex.ru",
    "quantserve.com",
    "scorecardresearch.com",
    "criteo.com",
    "criteo.net",
    "taboola.com",
    "outbrain.com",
    "adnxs.com",
    "amazon-adsystem.com",
    "ads-twitter.com",
    "analytics.tiktok.com",
    "snap.licdn.com",
    "nr-data.net",
    "intercom.io",
    "crisp.chat",
];

/// Host names that only ever mean something internal.
const INTERNAL_NAME_SUFFIXES: &[&str] = &["localhost", "internal", "local", "localdomain"];

/// Time allowed to resolve a third-party host before the request is refused.
pub(crate) const DNS_TIMEOUT: Duration = Duration::from_secs(2);

/// What to do with a request that is not for the site itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Let the browser load it.
    Allow,
    /// Refuse it; the reason is logged at debug level.
    Block(&'static str),
}

/// Whether a resource type is never loaded during a render.
pub(crate) fn is_blocked_type(resource_type: &ResourceType) -> bool {
    matches!(
        resource_type,
        ResourceType::Image
            | ResourceType::Media
            | ResourceType::Font
            | ResourceType::Ping
            | ResourceType::CspViolationReport
    )
}

/// Same scheme, host and port.
pub(crate) fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str().map(str::to_ascii_lowercase) == b.host_str().map(str::to_ascii_lowercase)
        && a.port_or_known_default() == b.port_or_known_default()
}

fn host_matches(host: &str, domain: &str) -> bool {
    host == domain
        || (host.len() > domain.len()
            && host.ends_with(domain)
            && host.as_bytes()[host.len() - domain.len() - 1] == b'.')
}

/// Decision for a third-party URL that needs no DNS lookup, or `None` when
/// its host name must be resolved first.
pub(crate) fn decide_without_dns(url: &Url) -> Option<Decision> {
    if !matches!(url.scheme(), "http" | "https") {
        return Some(Decision::Block("scheme"));
    }
    match url.host() {
        None => Some(Decision::Block("no-host")),
        Some(Host::Ipv4(ip)) => Some(decide_ip(IpAddr::V4(ip))),
        Some(Host::Ipv6(ip)) => Some(decide_ip(IpAddr::V6(ip))),
        Some(Host::Domain(name)) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if BLOCKED_HOSTS.iter().any(|d| host_matches(&name, d)) {
                return Some(Decision::Block("analytics"));
            }
            if !name.contains('.')
                || INTERNAL_NAME_SUFFIXES
                    .iter()
                    .any(|d| host_matches(&name, d))
            {
                return Some(Decision::Block("internal-name"));
            }
            None
        }
    }
}

/// Full decision for a third-party URL: resolves the host name and refuses it
/// when any address it resolves to is internal.
pub(crate) async fn decide(url: &Url) -> Decision {
    if let Some(decision) = decide_without_dns(url) {
        return decision;
    }
    let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
        return Decision::Block("no-host");
    };
    match tokio::time::timeout(DNS_TIMEOUT, tokio::net::lookup_host((host, port))).await {
        Ok(Ok(addrs)) => {
            let mut any = false;
            for addr in addrs {
                any = true;
                if let Decision::Block(reason) = decide_ip(addr.ip()) {
                    return Decision::Block(reason);
                }
            }
            if any {
                Decision::Allow
            } else {
                Decision::Block("unresolved")
            }
        }
        _ => Decision::Block("unresolved"),
    }
}

fn decide_ip(ip: IpAddr) -> Decision {
    if crate::address::is_internal(ip) {
        Decision::Block("internal-address")
    } else {
        Decision::Allow
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(u: &str) -> Option<Decision> {
        decide_without_dns(&Url::parse(u).unwrap())
    }

    #[test]
    fn internal_addresses_are_refused() {
        for u in [
            "http://127.0.0.1:8080/",
            "http://169.254.169.254/latest/meta-data/",
            "http://10.1.2.3/",
            "http://172.16.0.1/",
            "http://192.168.1.1/",
            "http://100.64.0.1/",
            "http://0.0.0.0/",
            "http://[::1]/",
            "http://[fd00:ec2::254]/",
            "http://[fe80::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[64:ff9b::a9fe:a9fe]/",
            "http://2130706433/",
            "http://localhost:3000/",
            "http://metadata.google.internal/",
            "http://intranet/",
        ] {
            assert!(
                matches!(d(u), Some(Decision::Block(_))),
                "{u} must be refused"
            );
        }
    }

    #[test]
    fn other_schemes_and_trackers_are_refused() {
        assert_eq!(d("file:///etc/passwd"), Some(Decision::Block("scheme")));
        assert_eq!(d("ftp://example.com/"), Some(Decision::Block("scheme")));
        assert_eq!(
            d("https://www.google-analytics.com/analytics.js"),
            Some(Decision::Block("analytics"))
        );
        assert_eq!(
            d("https://connect.facebook.net/en_US/fbevents.js"),
            Some(Decision::Block("analytics"))
        );
        // A look-alike is not a subdomain.
        assert_eq!(d("https://notdoubleclick.net/x.js"), None);
    }

    #[test]
    fn public_addresses_are_allowed() {
        assert_eq!(d("https://93.184.215.14/"), Some(Decision::Allow));
        assert_eq!(d("https://[2606:4700::1111]/"), Some(Decision::Allow));
        assert_eq!(d("https://cdn.example.com/app.js"), None);
    }

    #[test]
    fn same_origin_compares_scheme_host_and_port() {
        let a = Url::parse("http://127.0.0.1:8080/x").unwrap();
        assert!(same_origin(
            &a,
            &Url::parse("http://127.0.0.1:8080/y?z").unwrap()
        ));
        assert!(!same_origin(
            &a,
            &Url::parse("http://127.0.0.1:8081/").unwrap()
        ));
        assert!(!same_origin(
            &a,
            &Url::parse("https://127.0.0.1:8080/").unwrap()
        ));
        let b = Url::parse("https://www.example.test/").unwrap();
        assert!(same_origin(
            &b,
            &Url::parse("https://WWW.example.test:443/p").unwrap()
        ));
    }
}
