//! Cache keys: the one normalisation of a page's address used for lookup,
//! store, purge and refresh, so that every spelling of the same page lands
//! on the same `render:<domain>:<path>` entry and nothing attacker-shaped
//! (control bytes, `..` escapes, broken percent-encoding) becomes a key.

use std::fmt;

use crate::domain::{Domain, DomainError};

/// Prefix of the Redis string holding a page's HTML.
pub const PAGE_KEY_PREFIX: &str = "render:";
/// Prefix of the Redis hash holding a page's metadata.
pub const META_KEY_PREFIX: &str = "render-meta:";
/// Marker between domain and path for the mobile variant of a page.
pub const MOBILE_MARKER: &str = "m:";
/// Longest accepted host name (RFC 1035 limit for a full name).
pub const MAX_HOST_BYTES: usize = crate::domain::MAX_DOMAIN_BYTES;
/// Longest normalised path + query kept in a key; the public listener
/// already refuses request targets over 8 KiB with 414.
pub const MAX_PATH_BYTES: usize = 8 * 1024;

/// Why an address cannot be made into a cache key (answered with a 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("empty host")]
    EmptyHost,
    #[error("invalid host {0:?}")]
    InvalidHost(String),
    #[error("invalid port in host {0:?}")]
    InvalidPort(String),
    #[error("path must start with '/'")]
    RelativePath,
    #[error("invalid percent-encoding in path")]
    InvalidPercentEncoding,
    #[error("control character (NUL, CR or LF) in path")]
    ControlCharacter,
    #[error("path escapes the root with '..'")]
    EscapesRoot,
    #[error("path longer than {MAX_PATH_BYTES} bytes")]
    TooLong,
    #[error("invalid URL: {0}")]
    InvalidUrl(String),
    #[error("not a cache key: {0:?}")]
    NotAKey(String),
}

/// The address of one cached page: `render:<domain>:<path>` or, for the
/// mobile variant, `render:<domain>:m:<path>`. `path` always starts with
/// `/` and may end with the kept, sorted query (`/products?page=2`).
///
/// A domain contains `:` only inside an IPv6 address's brackets and a path
/// always starts with `/`, so the string form parses back unambiguously
/// ([`CacheKey::parse`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey {
    domain: Domain,
    mobile: bool,
    path: String,
}

impl CacheKey {
    /// Key of a request: `host` is the Host header (port and trailing dot
    /// dropped, lowercased), `target` the request target's path and query
    /// (origin-form, `/a/b?x=1`). Only the query parameters named in
    /// `query_params` are kept, sorted; the fragment is always dropped.
    pub fn new(
        host: &str,
        target: &str,
        query_params: &[String],
        mobile: bool,
    ) -> Result<CacheKey, KeyError> {
        let domain = Domain::from_host(host)?;
        let path = normalize_target(target, query_params)?;
        Ok(CacheKey {
            domain,
            mobile,
            path,
        })
    }

    /// Key of a page's public URL as given to the admin API
    /// (`https://www.example.com/a?page=2`); the scheme is ignored, as are
    /// user info and port.
    pub fn from_public_url(
        url: &str,
        query_params: &[String],
        mobile: bool,
    ) -> Result<CacheKey, KeyError> {
        if url.bytes().any(|b| matches!(b, 0 | b'\r' | b'\n')) {
            return Err(KeyError::ControlCharacter);
        }
        let rest = match url.find("://") {
            Some(i) => &url[i + 3..],
            None => url
                .strip_prefix("//")
                .ok_or_else(|| KeyError::InvalidUrl("missing scheme".to_owned()))?,
        };
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, target) = rest.split_at(authority_end);
        let host = authority.rsplit('@').next().unwrap_or(authority);
        let target = if target.starts_with('/') {
            target.to_owned()
        } else {
            format!("/{target}")
        };
        CacheKey::new(host, &target, query_params, mobile)
    }

    /// Parses the string form (`render:<domain>:[m:]<path>`) back, e.g. a
    /// member of a per-domain index. The parts are validated again.
    pub fn parse(stored: &str) -> Result<CacheKey, KeyError> {
        let not_a_key = || KeyError::NotAKey(stored.to_owned());
        let rest = stored.strip_prefix(PAGE_KEY_PREFIX).ok_or_else(not_a_key)?;
        // A domain holds `:` only inside the brackets of an IPv6 address.
        let domain_end = match rest.strip_prefix('[') {
            Some(inner) => inner.find(']').ok_or_else(not_a_key)? + 2,
            None => rest.find(':').ok_or_else(not_a_key)?,
        };
        let (domain, rest) = rest.split_at(domain_end);
        let rest = rest.strip_prefix(':').ok_or_else(not_a_key)?;
        let (mobile, path) = match rest.strip_prefix(MOBILE_MARKER) {
            Some(path) => (true, path),
            None => (false, rest),
        };
        let key = CacheKey {
            domain: Domain::parse(domain)?,
            mobile,
            path: path.to_owned(),
        };
        // Only an already-normalised path is a key; anything else was not
        // written by this module.
        let (p, q) = match path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path, None),
        };
        if normalize_path(p)? != p || key.domain.as_str() != domain {
            return Err(not_a_key());
        }
        if let Some(q) = q {
            if q.is_empty() || q.contains('#') {
                return Err(not_a_key());
            }
        }
        Ok(key)
    }

    /// Lowercased host without port or trailing dot.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// Normalised path plus kept query (`/products?page=2`): the part of
    /// the public URL the page is rendered as.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Whether this is the mobile variant of the page.
    pub fn is_mobile(&self) -> bool {
        self.mobile
    }

    /// The metadata hash's key: `render-meta:<domain>:[m:]<path>`.
    pub fn meta_key(&self) -> String {
        format!("{META_KEY_PREFIX}{}", self.suffix())
    }

    /// `<domain>:[m:]<path>`: the part shared by every per-page key.
    pub fn suffix(&self) -> String {
        let marker = if self.mobile { MOBILE_MARKER } else { "" };
        format!("{}:{marker}{}", self.domain, self.path)
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let marker = if self.mobile { MOBILE_MARKER } else { "" };
        write!(f, "{PAGE_KEY_PREFIX}{}:{marker}{}", self.domain, self.path)
    }
}

/// A Host value as [`Domain`] reads it (lowercased, port and trailing dot
/// dropped): the same parse as routing's and the configuration's.
pub fn normalize_host(host: &str) -> Result<String, KeyError> {
    Domain::from_host(host)
        .map(String::from)
        .map_err(KeyError::from)
}

impl From<DomainError> for KeyError {
    fn from(e: DomainError) -> KeyError {
        match e {
            DomainError::Empty => KeyError::EmptyHost,
            DomainError::Invalid(host) => KeyError::InvalidHost(host),
            DomainError::InvalidPort(host) => KeyError::InvalidPort(host),
        }
    }
}

/// The AJAX crawling scheme's parameter (the same name as
/// `bot::request::ESCAPED_FRAGMENT_PARAM`): `?_escaped_fragment_=/x` asks
/// for the page's `#!/x` state, so a non-empty value is always kept in the
/// key (cached apart from the page itself, rendered as `#!/x`).
pub const ESCAPED_FRAGMENT: &str = "_escaped_fragment_";

/// Normalises a request target (path, optional query and fragment) into
/// the key's path: see [`normalize_path`]; the query keeps only the
/// parameters named in `query_params` and a non-empty
/// [`ESCAPED_FRAGMENT`], sorted by name then value.
pub fn normalize_target(target: &str, query_params: &[String]) -> Result<String, KeyError> {
    if target.bytes().any(|b| matches!(b, 0 | b'\r' | b'\n')) {
        return Err(KeyError::ControlCharacter);
    }
    let target = target.split_once('#').map_or(target, |(t, _)| t);
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let mut normalized = normalize_path(path)?;
    let wanted = |q: &str| !query_params.is_empty() || q.contains(ESCAPED_FRAGMENT);
    if let Some(query) = query.filter(|q| wanted(q)) {
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = match pair.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (pair, None),
            };
            let name = normalize_encoding(name, QUERY_LITERALS)?;
            let decoded = percent_encoding::percent_decode_str(&name).decode_utf8_lossy();
            let escaped_fragment =
                decoded == ESCAPED_FRAGMENT && value.is_some_and(|v| !v.is_empty());
            if escaped_fragment {
                // A state, not a parameter: `%2Fx` and `/x` are one state.
                let state = value
                    .map(|v| percent_encoding::percent_decode_str(v).decode_utf8_lossy())
                    .unwrap_or_default();
                let state = percent_encoding::utf8_percent_encode(&state, FRAGMENT_STATE_ENCODED);
                kept.push((name, Some(state.to_string())));
            } else if query_params.iter().any(|p| *p == decoded) {
                let value = value
                    .map(|v| normalize_encoding(v, QUERY_VALUE_LITERALS))
                    .transpose()?;
                kept.push((name, value));
            }
        }
        kept.sort();
        for (i, (name, value)) in kept.iter().enumerate() {
            normalized.push(if i == 0 { '?' } else { '&' });
            normalized.push_str(name);
            if let Some(value) = value {
                normalized.push('=');
                normalized.push_str(value);
            }
        }
    }
    if normalized.len() > MAX_PATH_BYTES {
        return Err(KeyError::TooLong);
    }
    Ok(normalized)
}

/// Bytes kept literal in a path besides the unreserved ones: RFC 3986
/// sub-delims, `:`, `@` and the segment separator `/`.
const PATH_LITERALS: &[u8] = b"!$&'()*+,;=:@/";
/// Bytes percent-encoded in a kept `_escaped_fragment_` state: controls,
/// space, and what would end or split the query (`#`, `&`, `+`, `%`).
const FRAGMENT_STATE_ENCODED: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'&')
    .add(b'+')
    .add(b'<')
    .add(b'>')
    .add(b'`');

/// Literal bytes of a query parameter name (`&` and `=` separate pairs).
const QUERY_LITERALS: &[u8] = b"!$'()*+,;:@/?";
/// Literal bytes of a query parameter value (a `=` inside is harmless).
const QUERY_VALUE_LITERALS: &[u8] = b"!$'()*+,;=:@/?";

/// Normalises a URL path: percent-encoding made canonical (unreserved
/// bytes decoded, everything else encoded with uppercase hex), dot
/// segments resolved. An empty path is `/`. Errors: not starting with `/`,
/// invalid percent-encoding, NUL/CR/LF (raw or encoded), `..` above root.
pub fn normalize_path(path: &str) -> Result<String, KeyError> {
    if path.is_empty() {
        return Ok("/".to_owned());
    }
    if !path.starts_with('/') {
        return Err(KeyError::RelativePath);
    }
    let encoded = normalize_encoding(path, PATH_LITERALS)?;
    let resolved = remove_dot_segments(&encoded)?;
    if resolved.len() > MAX_PATH_BYTES {
        return Err(KeyError::TooLong);
    }
    Ok(resolved)
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn push_encoded(out: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(char::from(HEX[usize::from(b >> 4)]));
    out.push(char::from(HEX[usize::from(b & 0x0f)]));
}

/// Canonical percent-encoding of one URL component: unreserved bytes
/// literal, `literals` kept as written (a reserved byte and its encoding
/// mean different things), everything else `%XX` with uppercase hex.
fn normalize_encoding(input: &str, literals: &[u8]) -> Result<String, KeyError> {
    let bytes = input.as_bytes();
    let mut out = String::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let (hi, lo) = match (bytes.get(i + 1), bytes.get(i + 2)) {
                (Some(&h), Some(&l)) => (h, l),
                _ => return Err(KeyError::InvalidPercentEncoding),
            };
            let decoded = match (hex_value(hi), hex_value(lo)) {
                (Some(h), Some(l)) => (h << 4) | l,
                _ => return Err(KeyError::InvalidPercentEncoding),
            };
            if matches!(decoded, 0 | b'\r' | b'\n') {
                return Err(KeyError::ControlCharacter);
            }
            if is_unreserved(decoded) {
                out.push(char::from(decoded));
            } else {
                push_encoded(&mut out, decoded);
            }
            i += 3;
            continue;
        }
        if matches!(b, 0 | b'\r' | b'\n') {
            return Err(KeyError::ControlCharacter);
        }
        if is_unreserved(b) || literals.contains(&b) {
            out.push(char::from(b));
        } else {
            push_encoded(&mut out, b);
        }
        i += 1;
    }
    Ok(out)
}

/// RFC 3986 §5.2.4 on an absolute path, except that `..` above the root
/// is an error rather than silently dropped (it is an attack, not a page).
fn remove_dot_segments(path: &str) -> Result<String, KeyError> {
    let mut segments: Vec<&str> = Vec::new();
    let mut parts = path[1..].split('/').peekable();
    let mut trailing_slash = false;
    while let Some(segment) = parts.next() {
        let last = parts.peek().is_none();
        match segment {
            "." => trailing_slash = last,
            ".." => {
                if segments.pop().is_none() {
                    return Err(KeyError::EscapesRoot);
                }
                trailing_slash = last;
            }
            s => {
                segments.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::with_capacity(path.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if trailing_slash || out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(host: &str, target: &str) -> Result<String, KeyError> {
        CacheKey::new(host, target, &[], false).map(|k| k.to_string())
    }

    #[test]
    fn an_escaped_fragment_is_kept_apart_from_the_page() {
        assert_eq!(
            key("d", "/app?_escaped_fragment_=/x&utm=1").unwrap(),
            "render:d:/app?_escaped_fragment_=/x"
        );
        assert_eq!(
            key("d", "/app?_escaped_fragment_=%2Fx%20y").unwrap(),
            key("d", "/app?utm=2&_escaped_fragment_=%2Fx%20y").unwrap()
        );
        // An empty value asks for the page itself (`<meta name="fragment">`).
        assert_eq!(
            key("d", "/app?_escaped_fragment_=").unwrap(),
            "render:d:/app"
        );
        assert_eq!(
            key("d", "/app?_escaped_fragment_").unwrap(),
            "render:d:/app"
        );
        let kept = CacheKey::new(
            "d",
            "/p?page=2&_escaped_fragment_=/a",
            &["page".into()],
            false,
        )
        .unwrap();
        assert_eq!(kept.to_string(), "render:d:/p?_escaped_fragment_=/a&page=2");
    }

    #[test]
    fn host_is_lowercased_without_port_or_trailing_dot() {
        assert_eq!(
            key("WWW.Example.COM:8080", "/").unwrap(),
            "render:www.example.com:/"
        );
        assert_eq!(key("example.com.", "/a").unwrap(), "render:example.com:/a");
        assert_eq!(
            key("example.com.:443", "/a").unwrap(),
            "render:example.com:/a"
        );
    }

    #[test]
    fn bad_hosts_are_refused() {
        for host in [
            "",
            ":80",
            "exa mple.com",
            "a..b",
            "a/b",
            "a:b:c",
            "[::1",
            "ex*.com",
            "example.com:",
            "example.com:8o",
            "ex\u{e9}.com",
            ".",
            "a\r\nb",
        ] {
            assert!(key(host, "/").is_err(), "{host:?} accepted");
        }
        let long = format!("{}.com", "a".repeat(64));
        assert!(key(&long, "/").is_err());
    }

    #[test]
    fn every_host_routing_and_the_configuration_accept_makes_a_key() {
        // The one parse of a host (`Domain`) decides for all three.
        for (host, stored) in [
            ("my_app.example.com", "render:my_app.example.com:/p"),
            ("[::1]:8080", "render:[::1]:/p"),
            ("10.0.0.5", "render:10.0.0.5:/p"),
        ] {
            let k = CacheKey::new(host, "/p", &[], false).unwrap();
            assert_eq!(k.to_string(), stored);
            assert_eq!(CacheKey::parse(stored), Ok(k.clone()));
            let routed = crate::proxy::request::parse_host(host).unwrap();
            assert_eq!(routed.as_str(), k.domain());
            let configured = crate::config::site::normalise_domain(k.domain()).unwrap();
            assert_eq!(configured, k.domain());
        }
        let mobile = CacheKey::new("[::1]", "/p", &[], true).unwrap();
        assert_eq!(CacheKey::parse(&mobile.to_string()), Ok(mobile));
    }

    #[test]
    fn query_and_fragment_are_dropped_by_default() {
        assert_eq!(key("d", "/products?page=2").unwrap(), "render:d:/products");
        assert_eq!(
            key("d", "/products?page=3#x").unwrap(),
            "render:d:/products"
        );
        assert_eq!(key("d", "/p#frag?x").unwrap(), "render:d:/p");
        assert_eq!(key("d", "").unwrap(), "render:d:/");
        assert_eq!(key("d", "?a=1").unwrap(), "render:d:/");
    }

    #[test]
    fn significant_query_params_are_kept_sorted() {
        let params = vec!["page".to_owned(), "cat".to_owned()];
        let k = CacheKey::new("d", "/p?utm=1&page=2&cat=b%20c&x", &params, false).unwrap();
        assert_eq!(k.to_string(), "render:d:/p?cat=b%20c&page=2");
        let k2 = CacheKey::new("d", "/p?page=2&cat=b%20c", &params, false).unwrap();
        assert_eq!(k, k2);
        let k3 = CacheKey::new("d", "/p?utm=9", &params, false).unwrap();
        assert_eq!(k3.to_string(), "render:d:/p");
        let k4 = CacheKey::new("d", "/p?p%61ge=%32", &params, false).unwrap();
        assert_eq!(k4.to_string(), "render:d:/p?page=2");
        assert!(CacheKey::new("d", "/p?page=%zz", &params, false).is_err());
    }

    #[test]
    fn percent_encoding_is_normalised() {
        assert_eq!(key("d", "/%7euser/%41b").unwrap(), "render:d:/~user/Ab");
        assert_eq!(key("d", "/a%2fb").unwrap(), "render:d:/a%2Fb");
        assert_eq!(key("d", "/a b").unwrap(), "render:d:/a%20b");
        assert_eq!(key("d", "/caf\u{e9}").unwrap(), "render:d:/caf%C3%A9");
        assert_eq!(key("d", "/caf%c3%a9").unwrap(), "render:d:/caf%C3%A9");
        assert_eq!(key("d", "/a:b@c;d=e").unwrap(), "render:d:/a:b@c;d=e");
        assert_eq!(key("d", "/a\\b").unwrap(), "render:d:/a%5Cb");
    }

    #[test]
    fn dot_segments_are_resolved() {
        assert_eq!(key("d", "/a/./b/../c").unwrap(), "render:d:/a/c");
        assert_eq!(key("d", "/a/b/..").unwrap(), "render:d:/a/");
        assert_eq!(key("d", "/a/.").unwrap(), "render:d:/a/");
        assert_eq!(key("d", "/a/%2e%2E/b").unwrap(), "render:d:/b");
        assert_eq!(key("d", "/..a/b.").unwrap(), "render:d:/..a/b.");
        assert_eq!(key("d", "/a/..").unwrap(), "render:d:/");
    }

    #[test]
    fn malicious_paths_are_refused() {
        assert_eq!(key("d", "/.."), Err(KeyError::EscapesRoot));
        assert_eq!(key("d", "/a/../../etc"), Err(KeyError::EscapesRoot));
        assert_eq!(key("d", "/%2e%2e/x"), Err(KeyError::EscapesRoot));
        assert_eq!(key("d", "/a%zzb"), Err(KeyError::InvalidPercentEncoding));
        assert_eq!(key("d", "/a%4"), Err(KeyError::InvalidPercentEncoding));
        assert_eq!(key("d", "/a%00"), Err(KeyError::ControlCharacter));
        assert_eq!(
            key("d", "/a%0d%0aSet-Cookie:x"),
            Err(KeyError::ControlCharacter)
        );
        assert_eq!(key("d", "/a\nb"), Err(KeyError::ControlCharacter));
        assert_eq!(key("d", "/a\0"), Err(KeyError::ControlCharacter));
        assert_eq!(key("d", "a/b"), Err(KeyError::RelativePath));
        assert_eq!(key("d", "*"), Err(KeyError::RelativePath));
        let long = format!("/{}", "a".repeat(MAX_PATH_BYTES + 1));
        assert_eq!(key("d", &long), Err(KeyError::TooLong));
    }

    #[test]
    fn mobile_variant_and_meta_key() {
        let k = CacheKey::new("D.com", "/x", &[], true).unwrap();
        assert_eq!(k.to_string(), "render:d.com:m:/x");
        assert_eq!(k.meta_key(), "render-meta:d.com:m:/x");
        let k = CacheKey::new("D.com", "/x", &[], false).unwrap();
        assert_eq!(k.meta_key(), "render-meta:d.com:/x");
        assert_eq!(k.suffix(), "d.com:/x");
    }

    #[test]
    fn public_url_gives_the_same_key_as_the_request() {
        let params = vec!["page".to_owned()];
        let from_request =
            CacheKey::new("www.example.com", "/products?page=2&utm=x", &params, false).unwrap();
        for url in [
            "https://www.example.com/products?page=2",
            "http://WWW.example.com:8080/products?utm=1&page=2#top",
            "//www.example.com/./products?page=2",
            "https://user:pw@www.example.com/products?page=2",
        ] {
            assert_eq!(
                CacheKey::from_public_url(url, &params, false).unwrap(),
                from_request,
                "{url}"
            );
        }
        assert_eq!(
            CacheKey::from_public_url("https://example.com", &[], false)
                .unwrap()
                .to_string(),
            "render:example.com:/"
        );
        assert_eq!(
            CacheKey::from_public_url("https://example.com?x=1", &[], false)
                .unwrap()
                .to_string(),
            "render:example.com:/"
        );
        assert!(CacheKey::from_public_url("example.com/x", &[], false).is_err());
        assert!(CacheKey::from_public_url("https://exa mple.com/x", &[], false).is_err());
        assert!(CacheKey::from_public_url("https://example.com/../x", &[], false).is_err());
        assert!(CacheKey::from_public_url("https://example.com/%0a", &[], false).is_err());
    }

    #[test]
    fn string_form_parses_back() {
        let params = vec!["page".to_owned()];
        for (host, target, mobile) in [
            ("d.com", "/a/b?page=2", false),
            ("d.com", "/", true),
            ("x.y.z", "/m:/weird:path", false),
            ("x.y.z", "/m:/weird:path", true),
        ] {
            let k = CacheKey::new(host, target, &params, mobile).unwrap();
            assert_eq!(CacheKey::parse(&k.to_string()).unwrap(), k);
        }
        for bad in [
            "render-meta:d:/a",
            "render:d",
            "render:D:/a",
            "render:d:a",
            "render:d:/../a",
            "render:d:/a%2e",
            "other:d:/a",
        ] {
            assert!(CacheKey::parse(bad).is_err(), "{bad}");
        }
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Paths built from a mix of literal bytes, escapes (valid, both
    /// cases) and dot segments: the shapes crawlers and attackers send.
    fn raw_path() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            "[a-zA-Z0-9._~-]{1,6}",
            Just("/".to_owned()),
            Just("/./".to_owned()),
            Just("/../".to_owned()),
            Just("..".to_owned()),
            "[!$&'()*+,;=:@ \"<>\\\\^`{|}]",
            (1u8..=255).prop_map(|b| format!("%{b:02x}")),
            (1u8..=255).prop_map(|b| format!("%{b:02X}")),
            "\\PC",
        ];
        proptest::collection::vec(piece, 0..12).prop_map(|v| format!("/{}", v.concat()))
    }

    /// Re-spells a normalised path with random (valid) encodings of the
    /// same characters: the same page written differently.
    fn respell(path: &str, choices: &[bool]) -> String {
        let bytes = path.as_bytes();
        let mut out = String::new();
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if b == b'%' {
                // An escape stays an escape; only its hex case changes.
                out.push_str(&path[i..i + 3].to_ascii_lowercase());
                i += 3;
                continue;
            }
            if choices[i % choices.len()] && is_unreserved(b) {
                out.push_str(&format!("%{b:02x}"));
            } else {
                out.push(char::from(b));
            }
            i += 1;
        }
        out
    }

    proptest! {
        #[test]
        fn normalising_a_normalised_path_is_identity(path in raw_path()) {
            if let Ok(once) = normalize_path(&path) {
                prop_assert_eq!(normalize_path(&once).unwrap(), once.clone());
                let k = CacheKey::new("example.com", &once, &[], false).unwrap();
                prop_assert_eq!(k.path(), once.as_str());
                prop_assert_eq!(CacheKey::parse(&k.to_string()).unwrap(), k);
            }
        }

        #[test]
        fn different_normalised_paths_never_share_a_key(a in raw_path(), b in raw_path(), mobile: bool) {
            if let (Ok(na), Ok(nb)) = (normalize_path(&a), normalize_path(&b)) {
                let ka = CacheKey::new("example.com", &na, &[], mobile).unwrap();
                let kb = CacheKey::new("example.com", &nb, &[], mobile).unwrap();
                prop_assert_eq!(na == nb, ka.to_string() == kb.to_string());
                prop_assert_eq!(na == nb, ka.meta_key() == kb.meta_key());
                let kb_mobile = CacheKey::new("example.com", &nb, &[], !mobile).unwrap();
                prop_assert_ne!(ka.to_string(), kb_mobile.to_string());
            }
        }

        #[test]
        fn spellings_of_one_page_share_a_key(path in raw_path(), choices in proptest::collection::vec(any::<bool>(), 1..8)) {
            if let Ok(normalised) = normalize_path(&path) {
                let respelled = respell(&normalised, &choices);
                prop_assert_eq!(normalize_path(&respelled).unwrap(), normalised);
            }
        }

        #[test]
        fn normalised_paths_hold_no_control_bytes_or_dot_segments(path in raw_path()) {
            if let Ok(n) = normalize_path(&path) {
                prop_assert!(n.starts_with('/'));
                prop_assert!(n.bytes().all(|b| b.is_ascii_graphic()));
                prop_assert!(!n.split('/').any(|s| s == "." || s == ".."));
            }
        }
    }
}
