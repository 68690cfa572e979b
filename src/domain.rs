//! Public host names: the one parse of a host, used by the configuration
//! (a site's `domain`), routing (a request's Host) and the cache key
//! (`render:<domain>:…`), so that a host one of them accepts works in the
//! others too.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Longest host name (RFC 1035, a full name).
pub const MAX_DOMAIN_BYTES: usize = 253;
/// Longest label of a host name (RFC 1035).
pub const MAX_LABEL_BYTES: usize = 63;

/// A public host, normalised: lowercase ASCII, without port or trailing
/// dot. Either a DNS name — dot-separated labels of letters, digits, `-`
/// and `_` (which DNS allows and some hosting platforms use), within RFC
/// 1035's lengths — or an IPv4 address, or an IPv6 address in brackets
/// (`[::1]`, in its canonical form). It never contains `/`, `@`, `%`,
/// spaces or controls, and contains `:` only inside brackets.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Domain(String);

/// Why a text is not a host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("empty host")]
    Empty,
    #[error("{0:?} is not a host name")]
    Invalid(String),
    #[error("invalid port in host {0:?}")]
    InvalidPort(String),
}

impl Domain {
    /// A host without port: a configured domain, a domain to purge.
    pub fn parse(raw: &str) -> Result<Domain, DomainError> {
        let invalid = || DomainError::Invalid(raw.to_owned());
        if let Some(inner) = raw.strip_prefix('[') {
            let inner = inner.strip_suffix(']').ok_or_else(invalid)?;
            let addr: Ipv6Addr = inner.parse().map_err(|_| invalid())?;
            return Ok(Domain(format!("[{addr}]")));
        }
        let name = raw.strip_suffix('.').unwrap_or(raw);
        if name.is_empty() {
            return Err(DomainError::Empty);
        }
        if name.len() > MAX_DOMAIN_BYTES {
            return Err(invalid());
        }
        let labels_ok = name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= MAX_LABEL_BYTES
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
        if !labels_ok {
            return Err(invalid());
        }
        let name = name.to_ascii_lowercase();
        // All digits and dots: an IPv4 address, which must be one (so
        // `1.2.3.999` or `01.2.3.4` is refused rather than kept as a name).
        if name.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            let addr: Ipv4Addr = name.parse().map_err(|_| invalid())?;
            return Ok(Domain(addr.to_string()));
        }
        Ok(Domain(name))
    }

    /// A Host header's value (or a URL's authority without user info):
    /// `name[:port]` or `[v6][:port]`; the port is checked and dropped.
    pub fn from_host(raw: &str) -> Result<Domain, DomainError> {
        let (name, port) = if raw.starts_with('[') {
            match raw.find(']') {
                Some(end) => {
                    let rest = &raw[end + 1..];
                    if rest.is_empty() {
                        (raw, None)
                    } else {
                        let port = rest
                            .strip_prefix(':')
                            .ok_or_else(|| DomainError::Invalid(raw.to_owned()))?;
                        (&raw[..=end], Some(port))
                    }
                }
                None => return Err(DomainError::Invalid(raw.to_owned())),
            }
        } else {
            match raw.split_once(':') {
                Some((name, port)) => (name, Some(port)),
                None => (raw, None),
            }
        };
        if let Some(port) = port {
            let valid = !port.is_empty()
                && port.len() <= 5
                && port.bytes().all(|b| b.is_ascii_digit())
                && port.parse::<u16>().is_ok();
            if !valid {
                return Err(DomainError::InvalidPort(raw.to_owned()));
            }
        }
        Domain::parse(name)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for Domain {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Domain {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for Domain {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<Domain> for String {
    fn from(domain: Domain) -> String {
        domain.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(raw: &str) -> Option<String> {
        Domain::from_host(raw).ok().map(String::from)
    }

    #[test]
    fn names_are_lowercased_without_port_or_trailing_dot() {
        assert_eq!(
            host("WWW.Example.com:8080").as_deref(),
            Some("www.example.com")
        );
        assert_eq!(host("example.com.").as_deref(), Some("example.com"));
        assert_eq!(
            host("my_app.example.com").as_deref(),
            Some("my_app.example.com")
        );
        assert_eq!(host("127.0.0.1:3000").as_deref(), Some("127.0.0.1"));
        assert_eq!(host("[::1]:80").as_deref(), Some("[::1]"));
        assert_eq!(host("[0:0::1]").as_deref(), Some("[::1]"));
        assert_eq!(host("localhost").as_deref(), Some("localhost"));
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in [
            "",
            ".",
            "a b",
            "x:99999",
            "x:",
            "x:80:80",
            "x:+80",
            "evil.com@good.com",
            "a/b",
            "a\\b",
            "a..b",
            "[::1",
            "::1",
            "[::1]x",
            "[::1]:",
            "[1.2.3.4]",
            "1.2.3.999",
            "%77ww.example.test",
            "ünïcode.test",
            "a\0b",
        ] {
            assert_eq!(host(bad), None, "{bad:?}");
        }
        let long_label = format!("{}.test", "a".repeat(MAX_LABEL_BYTES + 1));
        assert_eq!(host(&long_label), None);
        let long_name = format!("{}a", "a.".repeat(MAX_DOMAIN_BYTES / 2 + 1));
        assert_eq!(host(&long_name), None);
    }

    #[test]
    fn a_domain_parses_back_to_itself() {
        for raw in [
            "a.test",
            "my_app.example.com",
            "[::1]",
            "10.0.0.5",
            "xn--bcher-kva.de",
        ] {
            let domain = Domain::from_host(raw).unwrap();
            assert_eq!(Domain::parse(&domain).as_ref(), Ok(&domain));
            assert_eq!(Domain::from_host(&domain).as_ref(), Ok(&domain));
        }
    }

    proptest::proptest! {
        #[test]
        fn parsing_is_idempotent(raw in "[a-zA-Z0-9_.:\\[\\]-]{0,40}") {
            if let Ok(domain) = Domain::from_host(&raw) {
                proptest::prop_assert_eq!(Domain::from_host(&domain), Ok(domain.clone()));
                proptest::prop_assert!(!domain.ends_with('.'));
                proptest::prop_assert!(domain.bytes().all(|b| !b.is_ascii_uppercase()));
            }
        }
    }
}
