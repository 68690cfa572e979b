//! Reverse DNS with forward confirmation, the method Google, Microsoft,
//! Apple, Yandex and Baidu publish: the PTR name of the client address must
//! lie under the operator's domain, and that name must resolve back to the
//! same address (anyone can make the PTR record of an address they own
//! say `crawl-1.googlebot.com`; only Google can make that name resolve).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig,
    ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::TokioResolver;

use super::Verdict;

/// One DNS query waits this long for an answer, and is tried this often.
/// Together with [`CHECK_DEADLINE`] they keep a check short: a miss in
/// `enforce` mode waits at most 2 s for it anyway.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
pub const QUERY_ATTEMPTS: usize = 2;
/// A whole check (PTR, then A/AAAA of its names) ends by then, as an
/// error if no answer came.
pub const CHECK_DEADLINE: Duration = Duration::from_secs(5);
/// PTR names examined per address: real crawler addresses have one.
const MAX_NAMES: usize = 4;

/// Why a lookup gave no records.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// The DNS answered: there is no such record (NXDOMAIN or no data).
    #[error("no such record")]
    NotFound,
    /// No usable answer (timeout, SERVFAIL, refused, network error).
    #[error("lookup failed: {0}")]
    Failed(String),
}

/// The two lookups a check needs; the resolver behind it is replaced by a
/// fake in unit tests.
pub trait CrawlerDns: Send + Sync {
    /// The PTR names of `ip`, lowercase, without the trailing dot.
    fn reverse(&self, ip: IpAddr) -> BoxFuture<'_, Result<Vec<String>, LookupError>>;
    /// The A and AAAA addresses of `name` (a fully qualified name).
    fn forward<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, LookupError>>;
}

/// Whether `name` is `domain` or a name under it.
fn is_under(name: &str, domain: &str) -> bool {
    name == domain
        || name
            .strip_suffix(domain)
            .is_some_and(|head| head.ends_with('.'))
}

/// Checks that `ip` belongs to an operator whose crawlers' names lie under
/// `domains`.
pub async fn check(dns: &dyn CrawlerDns, ip: IpAddr, domains: &[&str]) -> Verdict {
    check_within(dns, ip, domains, CHECK_DEADLINE).await
}

async fn check_within(
    dns: &dyn CrawlerDns,
    ip: IpAddr,
    domains: &[&str],
    deadline: Duration,
) -> Verdict {
    match tokio::time::timeout(deadline, check_names(dns, ip, domains)).await {
        Ok(verdict) => verdict,
        Err(_) => Verdict::Error,
    }
}

async fn check_names(dns: &dyn CrawlerDns, ip: IpAddr, domains: &[&str]) -> Verdict {
    let ip = ip.to_canonical();
    let names = match dns.reverse(ip).await {
        Ok(names) => names,
        Err(LookupError::NotFound) => return Verdict::Failed,
        Err(LookupError::Failed(_)) => return Verdict::Error,
    };
    let mut unanswered = false;
    let candidates = names
        .iter()
        .filter(|n| domains.iter().any(|d| is_under(n, d)))
        .take(MAX_NAMES);
    for name in candidates {
        match dns.forward(&format!("{name}.")).await {
            Ok(addrs) if addrs.iter().any(|a| a.to_canonical() == ip) => return Verdict::Verified,
            Ok(_) | Err(LookupError::NotFound) => {}
            Err(LookupError::Failed(_)) => unanswered = true,
        }
    }
    if unanswered {
        Verdict::Error
    } else {
        Verdict::Failed
    }
}

/// [`CrawlerDns`] on hickory's async resolver.
pub struct HickoryDns {
    resolver: TokioResolver,
}

impl HickoryDns {
    /// A resolver asking `server` (UDP, then TCP for long answers), or the
    /// servers of `/etc/resolv.conf` when `None`. The hosts file is never
    /// consulted: a verification is the DNS's word alone.
    pub fn new(server: Option<SocketAddr>) -> Result<HickoryDns, String> {
        let provider = TokioRuntimeProvider::default();
        let mut builder = match server {
            Some(addr) => {
                let mut udp = ConnectionConfig::udp();
                udp.port = addr.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = addr.port();
                let config = ResolverConfig::from_name_servers(vec![NameServerConfig::new(
                    addr.ip(),
                    true,
                    vec![udp, tcp],
                )]);
                TokioResolver::builder_with_config(config, provider)
            }
            None => TokioResolver::builder(provider)
                .map_err(|e| format!("cannot read the system's resolver configuration: {e}"))?,
        };
        let options: &mut ResolverOpts = builder.options_mut();
        options.timeout = QUERY_TIMEOUT;
        options.attempts = QUERY_ATTEMPTS;
        options.use_hosts_file = ResolveHosts::Never;
        options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        let resolver = builder
            .build()
            .map_err(|e| format!("cannot build the resolver: {e}"))?;
        Ok(HickoryDns { resolver })
    }
}

fn lookup_error(e: hickory_resolver::net::NetError) -> LookupError {
    if e.is_no_records_found() {
        LookupError::NotFound
    } else {
        LookupError::Failed(e.to_string())
    }
}

impl CrawlerDns for HickoryDns {
    fn reverse(&self, ip: IpAddr) -> BoxFuture<'_, Result<Vec<String>, LookupError>> {
        async move {
            let lookup = self
                .resolver
                .reverse_lookup(ip)
                .await
                .map_err(lookup_error)?;
            Ok(lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::PTR(ptr) => {
                        Some(ptr.0.to_ascii().trim_end_matches('.').to_ascii_lowercase())
                    }
                    _ => None,
                })
                .collect())
        }
        .boxed()
    }

    fn forward<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, LookupError>> {
        async move {
            let lookup = self.resolver.lookup_ip(name).await.map_err(lookup_error)?;
            Ok(lookup.iter().collect())
        }
        .boxed()
    }
}

#[cfg(test)]
pub(crate) mod fake {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A DNS from tables; unknown names and addresses are `NotFound`,
    /// and addresses listed in `broken` fail.
    #[derive(Default)]
    pub struct FakeDns {
        pub ptr: HashMap<IpAddr, Vec<String>>,
        pub addrs: HashMap<String, Vec<IpAddr>>,
        pub broken: Vec<IpAddr>,
        pub delay: Duration,
        pub reverse_calls: AtomicUsize,
    }

    impl FakeDns {
        /// Googlebot's 66.249.66.1 with its PTR name and that name's
        /// address, and a broken lookup for 203.0.113.7.
        pub fn with_googlebot(delay: Duration) -> FakeDns {
            let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
            let mut dns = FakeDns {
                delay,
                ..Default::default()
            };
            dns.ptr.insert(
                ip("66.249.66.1"),
                vec!["crawl-66-249-66-1.googlebot.com".into()],
            );
            dns.addrs.insert(
                "crawl-66-249-66-1.googlebot.com".into(),
                vec![ip("66.249.66.1")],
            );
            dns.broken.push(ip("203.0.113.7"));
            dns
        }
    }

    impl CrawlerDns for FakeDns {
        fn reverse(&self, ip: IpAddr) -> BoxFuture<'_, Result<Vec<String>, LookupError>> {
            async move {
                self.reverse_calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(self.delay).await;
                if self.broken.contains(&ip) {
                    return Err(LookupError::Failed("SERVFAIL".into()));
                }
                self.ptr.get(&ip).cloned().ok_or(LookupError::NotFound)
            }
            .boxed()
        }

        fn forward<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, LookupError>> {
            async move {
                self.addrs
                    .get(name.trim_end_matches('.'))
                    .cloned()
                    .ok_or(LookupError::NotFound)
            }
            .boxed()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeDns;
    use super::*;

    const GOOGLE: &[&str] = &["googlebot.com", "google.com"];

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn dns() -> FakeDns {
        let mut dns = FakeDns::with_googlebot(Duration::ZERO);
        // A PTR the owner of 203.0.113.5 wrote; the name is Google's and
        // does not resolve to the address.
        dns.ptr.insert(
            ip("203.0.113.5"),
            vec!["crawl-66-249-66-1.googlebot.com".into()],
        );
        // A name that merely ends like Google's.
        dns.ptr
            .insert(ip("203.0.113.6"), vec!["evilgooglebot.com".into()]);
        dns.addrs
            .insert("evilgooglebot.com".into(), vec![ip("203.0.113.6")]);
        dns
    }

    #[tokio::test]
    async fn reverse_then_forward_decides() {
        let dns = dns();
        assert_eq!(
            check(&dns, ip("66.249.66.1"), GOOGLE).await,
            Verdict::Verified
        );
        assert_eq!(
            check(&dns, ip("::ffff:66.249.66.1"), GOOGLE).await,
            Verdict::Verified
        );
        assert_eq!(
            check(&dns, ip("203.0.113.5"), GOOGLE).await,
            Verdict::Failed
        );
        assert_eq!(
            check(&dns, ip("203.0.113.6"), GOOGLE).await,
            Verdict::Failed
        );
        assert_eq!(check(&dns, ip("192.0.2.1"), GOOGLE).await, Verdict::Failed);
        assert_eq!(check(&dns, ip("203.0.113.7"), GOOGLE).await, Verdict::Error);
        assert_eq!(
            check(&dns, ip("66.249.66.1"), &["search.msn.com"]).await,
            Verdict::Failed
        );
    }

    #[tokio::test]
    async fn a_resolver_that_never_answers_is_an_error_at_the_deadline() {
        let mut dns = dns();
        dns.delay = Duration::from_secs(3600);
        assert_eq!(
            check_within(&dns, ip("66.249.66.1"), GOOGLE, Duration::from_millis(50)).await,
            Verdict::Error
        );
    }

    #[test]
    fn names_lie_under_a_domain_only_at_a_dot() {
        assert!(is_under("crawl-1.googlebot.com", "googlebot.com"));
        assert!(is_under("googlebot.com", "googlebot.com"));
        assert!(!is_under("evilgooglebot.com", "googlebot.com"));
        assert!(!is_under("googlebot.com.evil.net", "googlebot.com"));
    }
}
