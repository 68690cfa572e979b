//! Which site a request is for, and whether it is well-formed enough to go
//! anywhere at all. Everything that could change the site or the cache key
//! (absolute-form targets, duplicate Host, X-Forwarded-Host, …) is settled
//! here, once, from the Host header alone.

use std::sync::Arc;

use hyper::header::HOST;
use hyper::{Request, StatusCode, Version};

use crate::config::{Site, SiteTable};
use crate::domain::Domain;

/// SPEC §2: a request target over 8 KiB is answered 414.
pub const MAX_TARGET_BYTES: usize = 8 * 1024;
/// SPEC §2: a header block over 32 KiB is answered 431.
pub const MAX_HEADER_BLOCK_BYTES: usize = 32 * 1024;

/// A request mapped to its site.
#[derive(Debug, Clone)]
pub struct Target {
    /// The public host, lowercase, without port or trailing dot.
    pub host: Domain,
    pub site: Arc<Site>,
}

/// Why a request is refused before it reaches an origin or a renderer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejection {
    pub status: StatusCode,
    pub reason: &'static str,
}

const fn reject(status: StatusCode, reason: &'static str) -> Rejection {
    Rejection { status, reason }
}

pub fn resolve<B>(req: &Request<B>, sites: &SiteTable) -> Result<Target, Rejection> {
    let target_len = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if target_len > MAX_TARGET_BYTES {
        return Err(reject(
            StatusCode::URI_TOO_LONG,
            "request target over 8 KiB",
        ));
    }
    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    if header_bytes > MAX_HEADER_BLOCK_BYTES {
        return Err(reject(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "header block over 32 KiB",
        ));
    }
    let host = host_of(req)?;
    validate_path(req.uri().path())?;
    if let Some(q) = req.uri().query() {
        validate_query(q)?;
    }
    let site = sites.lookup(&host).cloned().ok_or(reject(
        StatusCode::MISDIRECTED_REQUEST,
        "host not served here",
    ))?;
    Ok(Target { host, site })
}

/// The public host: the Host header (HTTP/1) or `:authority` (HTTP/2). An
/// absolute-form target must name the same host; a second Host is refused.
fn host_of<B>(req: &Request<B>) -> Result<Domain, Rejection> {
    let mut hosts = req.headers().get_all(HOST).iter();
    let header = hosts.next();
    if hosts.next().is_some() {
        return Err(reject(StatusCode::BAD_REQUEST, "duplicate Host header"));
    }
    let header = match header {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| reject(StatusCode::BAD_REQUEST, "Host is not ASCII"))?,
        ),
        None => None,
    };
    let authority = req.uri().authority().map(|a| a.as_str());
    let raw = match (header, authority) {
        (Some(h), Some(a)) if !h.eq_ignore_ascii_case(a) => {
            return Err(reject(
                StatusCode::BAD_REQUEST,
                "request target names another host than Host",
            ))
        }
        (Some(h), _) => h,
        (None, Some(a)) if req.version() == Version::HTTP_2 => a,
        _ => return Err(reject(StatusCode::BAD_REQUEST, "missing Host header")),
    };
    parse_host(raw).ok_or(reject(StatusCode::BAD_REQUEST, "malformed Host header"))
}

/// `name[:port]` or `[v6]:port` → the host as [`Domain`] reads it (the
/// same parse as a configured domain and a cache key's); anything else is
/// malformed.
pub(crate) fn parse_host(raw: &str) -> Option<Domain> {
    Domain::from_host(raw).ok()
}

/// Refuses invalid percent-encoding, encoded NUL/CR/LF, and dot-segments
/// that climb above the root (raw or percent-encoded): whatever the cache
/// key's normalisation refuses is refused for every request, crawler or not.
pub fn validate_path(path: &str) -> Result<(), Rejection> {
    use crate::cache::KeyError;
    if is_plain_path(path) {
        return Ok(());
    }
    crate::cache::key::normalize_path(path)
        .map(|_| ())
        .map_err(|e| {
            let reason = match e {
                KeyError::RelativePath => "request target is not an absolute path",
                KeyError::InvalidPercentEncoding => "invalid percent-encoding",
                KeyError::ControlCharacter => "NUL, CR or LF in the request target",
                KeyError::EscapesRoot => "path climbs above the root",
                KeyError::TooLong => "request target over 8 KiB",
                _ => "malformed request target",
            };
            reject(StatusCode::BAD_REQUEST, reason)
        })
}

/// A path the cache key's normalisation accepts without looking further:
/// absolute, within the length bound, only unreserved characters and `/`,
/// and no segment starting with a dot (so no `.` or `..` segment). Most
/// requests are like this; the full check builds the normalised path.
fn is_plain_path(path: &str) -> bool {
    let bytes = path.as_bytes();
    bytes.first() == Some(&b'/')
        && bytes.len() <= crate::cache::key::MAX_PATH_BYTES
        && bytes.iter().enumerate().all(|(i, &b)| {
            b.is_ascii_alphanumeric()
                || matches!(b, b'/' | b'-' | b'_' | b'~')
                || (b == b'.' && bytes[i - 1] != b'/')
        })
}

pub fn validate_query(query: &str) -> Result<(), Rejection> {
    decode_checked(query).map(|_| ())
}

fn decode_checked(s: &str) -> Result<Vec<u8>, Rejection> {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let ok = bytes.len() > i + 2
                && bytes[i + 1].is_ascii_hexdigit()
                && bytes[i + 2].is_ascii_hexdigit();
            if !ok {
                return Err(reject(StatusCode::BAD_REQUEST, "invalid percent-encoding"));
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    let decoded: Vec<u8> = percent_encoding::percent_decode(bytes).collect();
    if decoded.iter().any(|&b| b == 0 || b == b'\r' || b == b'\n') {
        return Err(reject(
            StatusCode::BAD_REQUEST,
            "NUL, CR or LF in the request target",
        ));
    }
    Ok(decoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_parse_strictly() {
        assert_eq!(
            parse_host("WWW.Example.com:8080").as_deref(),
            Some("www.example.com")
        );
        assert_eq!(parse_host("example.com.").as_deref(), Some("example.com"));
        assert_eq!(parse_host("[::1]:80").as_deref(), Some("[::1]"));
        assert_eq!(
            parse_host("my_app.example.com").as_deref(),
            Some("my_app.example.com")
        );
        for bad in [
            "",
            "a b",
            "x:99999",
            "x:",
            "x:80:80",
            "evil.com@good.com",
            "a/b",
            "[::1",
            "x:+80",
        ] {
            assert_eq!(parse_host(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn plain_paths_are_exactly_paths_the_normalisation_keeps() {
        for plain in [
            "/",
            "/p/1",
            "/api/products/1.json",
            "/a-b_c~d/e.f.g",
            "/a./b",
        ] {
            assert!(is_plain_path(plain), "{plain:?}");
            assert_eq!(
                crate::cache::key::normalize_path(plain).as_deref(),
                Ok(plain),
                "{plain:?}"
            );
        }
        for other in [
            "", "p/1", "/./a", "/../a", "/a/..", "/.hidden", "/a%20b", "/a b", "/a?b",
        ] {
            assert!(!is_plain_path(other), "{other:?}");
        }
        let long = format!("/{}", "a".repeat(crate::cache::key::MAX_PATH_BYTES));
        assert!(!is_plain_path(&long));
    }

    proptest::proptest! {
        #[test]
        fn plain_paths_always_pass_the_full_check(path in "/[a-zA-Z0-9./_~-]{0,40}") {
            if is_plain_path(&path) {
                proptest::prop_assert!(crate::cache::key::normalize_path(&path).is_ok());
            }
        }
    }

    #[test]
    fn paths_that_escape_or_smuggle_are_refused() {
        for bad in [
            "/../etc/passwd",
            "/a/../../b",
            "/%2e%2e/x",
            "/%2E%2E/%2e%2e/x",
            "/a%zz",
            "/a%0d%0a",
            "/%00",
            "/a%",
        ] {
            assert!(validate_path(bad).is_err(), "{bad:?}");
        }
        for good in ["/", "/a/../b", "/a/./b", "/p/1?x", "/%E2%82%AC"] {
            assert!(validate_path(good).is_ok(), "{good:?}");
        }
    }
}
