//! Warm-by-sitemap: fetch a site's sitemap (a `<urlset>`, or a
//! `<sitemapindex>` whose sitemaps are followed) and list its page URLs.
//!
//! Not an SSRF gateway: a sitemap is fetched only when its host is one the
//! caller allows, and then from the address the caller maps it to (a site's
//! sitemap is fetched from the site's origin, with the public host in
//! `Host`). Page URLs and nested sitemaps on other hosts are skipped and
//! counted. Everything is bounded: nesting depth, number of sitemaps, bytes
//! of each (after decompression), URLs in total, and the time of each fetch.

use std::collections::HashSet;
use std::io::Read;
use std::time::Duration;

use hyper::header::{HeaderValue, ACCEPT_ENCODING, CONTENT_ENCODING, HOST, USER_AGENT};
use hyper::Request;
use quick_xml::events::Event;
use quick_xml::Reader;
use url::Url;

use crate::config::redact::redact_url;
use crate::http::{collect_bounded, CollectError};
use crate::upstream::{PoolLimits, UpstreamClient};

/// Nesting followed: a sitemap index (depth 1) and the sitemaps it lists
/// (depth 2), as the sitemaps.org protocol allows; an index listed by an
/// index is not followed.
pub const DEFAULT_SITEMAP_MAX_DEPTH: usize = 2;
/// Sitemaps fetched per warm request, the index included.
pub const DEFAULT_SITEMAP_MAX_FILES: usize = 50;
/// Bytes of one sitemap, after decompression: the protocol's own 50 MiB cap
/// is for whole sites; 10 MiB holds ~50,000 URLs, which is its URL cap.
pub const DEFAULT_SITEMAP_MAX_BYTES: usize = 10 * 1024 * 1024;
/// Page URLs returned per warm request (the protocol's cap per sitemap).
pub const DEFAULT_SITEMAP_MAX_URLS: usize = 50_000;
/// Deadline of one sitemap fetch, connect to last byte.
pub const DEFAULT_SITEMAP_FETCH_TIMEOUT: Duration = Duration::from_secs(15);
/// Deadline of the TCP connect of one fetch.
pub const DEFAULT_SITEMAP_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Every bound of one sitemap walk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SitemapLimits {
    pub max_depth: usize,
    pub max_files: usize,
    pub max_bytes: usize,
    pub max_urls: usize,
    pub fetch_timeout: Duration,
    pub connect_timeout: Duration,
}

impl Default for SitemapLimits {
    fn default() -> Self {
        SitemapLimits {
            max_depth: DEFAULT_SITEMAP_MAX_DEPTH,
            max_files: DEFAULT_SITEMAP_MAX_FILES,
            max_bytes: DEFAULT_SITEMAP_MAX_BYTES,
            max_urls: DEFAULT_SITEMAP_MAX_URLS,
            fetch_timeout: DEFAULT_SITEMAP_FETCH_TIMEOUT,
            connect_timeout: DEFAULT_SITEMAP_CONNECT_TIMEOUT,
        }
    }
}

/// Why the first sitemap could not be used. (A nested sitemap that fails is
/// skipped and listed in [`SitemapPages::failed_sitemaps`].)
#[derive(Debug, thiserror::Error)]
pub enum SitemapError {
    #[error("invalid sitemap URL {:?}: {}", redact_url(.0), .1)]
    InvalidUrl(String, String),
    #[error("sitemap {} is not on a domain served here", redact_url(.0))]
    ForeignHost(String),
    #[error("sitemap {} has no origin to be fetched from", redact_url(.0))]
    NoOrigin(String),
    #[error("fetching sitemap {} failed: {reason}", redact_url(.url))]
    Fetch { url: String, reason: String },
    #[error("sitemap {} is not a sitemap: {reason}", redact_url(.url))]
    Parse { url: String, reason: String },
}

impl SitemapError {
    /// True when the request named an unusable sitemap (answer 400), false
    /// when fetching or reading it failed (answer 502).
    pub fn is_client_error(&self) -> bool {
        matches!(
            self,
            SitemapError::InvalidUrl(..) | SitemapError::ForeignHost(_) | SitemapError::NoOrigin(_)
        )
    }
}

/// The outcome of one sitemap walk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SitemapPages {
    /// Page URLs on allowed hosts, in document order, without duplicates.
    pub urls: Vec<String>,
    /// `<loc>` page URLs on hosts not allowed.
    pub foreign_urls_skipped: u64,
    /// Sitemaps listed by an index on hosts not allowed (never fetched).
    pub foreign_sitemaps_skipped: u64,
    /// `<loc>` values that are not http(s) URLs.
    pub invalid_urls_skipped: u64,
    /// Sitemaps fetched and read.
    pub sitemaps_read: usize,
    /// Nested sitemaps that could not be fetched or read, with why.
    pub failed_sitemaps: Vec<String>,
    /// A bound (files, depth or URLs) stopped the walk early.
    pub truncated: bool,
}

/// Where a public sitemap URL is fetched from: its site's origin URL and,
/// when the site sets `origin_host`, the Host header the origin gets.
#[derive(Debug, Clone)]
pub struct FetchTarget {
    pub url: Url,
    pub host: Option<String>,
}

impl From<Url> for FetchTarget {
    fn from(url: Url) -> Self {
        FetchTarget { url, host: None }
    }
}

/// Fetches and reads sitemaps from origins (`http://` or `https://`).
pub struct SitemapFetcher {
    client: UpstreamClient,
    limits: SitemapLimits,
}

impl SitemapFetcher {
    pub fn new(limits: SitemapLimits) -> Self {
        // One walk is a burst of fetches to one origin; idle connections
        // are not worth keeping after it. `fetch_timeout` bounds each whole
        // fetch (head and body, in `read_one`); the client's own head
        // deadline is set past it so it never decides first.
        let client = UpstreamClient::new(
            limits.fetch_timeout.saturating_add(Duration::from_secs(1)),
            PoolLimits {
                max_idle_per_origin: 2,
                idle_timeout: Duration::from_secs(5),
                connect_timeout: limits.connect_timeout,
            },
        );
        SitemapFetcher { client, limits }
    }

    pub fn limits(&self) -> &SitemapLimits {
        &self.limits
    }

    /// Walks the sitemap at `sitemap_url` (a public URL). `allow_host` says
    /// whether a lowercase host is served here; `fetch_url` maps a public
    /// sitemap URL to the URL actually fetched (its site's origin), or `None`
    /// when there is none. The request carries the public host in `Host`.
    pub async fn collect<A, M, T>(
        &self,
        sitemap_url: &str,
        allow_host: A,
        fetch_url: M,
    ) -> Result<SitemapPages, SitemapError>
    where
        A: Fn(&str) -> bool,
        M: Fn(&Url) -> Option<T>,
        T: Into<FetchTarget>,
    {
        let root = parse_http_url(sitemap_url)
            .map_err(|reason| SitemapError::InvalidUrl(sitemap_url.to_owned(), reason))?;
        if !host_allowed(&root, &allow_host) {
            return Err(SitemapError::ForeignHost(root.to_string()));
        }

        let mut pages = SitemapPages::default();
        let mut seen_urls: HashSet<String> = HashSet::new();
        let mut seen_sitemaps: HashSet<String> = HashSet::new();
        seen_sitemaps.insert(root.to_string());
        // Breadth-first: (sitemap URL, depth).
        let mut pending = std::collections::VecDeque::from([(root.clone(), 1usize)]);
        let mut files = 0usize;

        while let Some((sitemap, depth)) = pending.pop_front() {
            if files >= self.limits.max_files {
                pages.truncated = true;
                break;
            }
            files += 1;
            let is_root = sitemap == root;
            let doc = match self.read_one(&sitemap, &fetch_url).await {
                Ok(doc) => doc,
                Err(e) if is_root => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, "skipping a sitemap of the index");
                    pages.failed_sitemaps.push(e.to_string());
                    continue;
                }
            };
            pages.sitemaps_read += 1;
            pages.truncated |= doc.capped;
            match doc.kind {
                SitemapKind::UrlSet => {
                    for loc in doc.locs {
                        let Ok(url) = parse_http_url(&loc) else {
                            pages.invalid_urls_skipped += 1;
                            continue;
                        };
                        if !host_allowed(&url, &allow_host) {
                            pages.foreign_urls_skipped += 1;
                            continue;
                        }
                        if pages.urls.len() >= self.limits.max_urls {
                            pages.truncated = true;
                            break;
                        }
                        if seen_urls.insert(url.to_string()) {
                            pages.urls.push(url.to_string());
                        }
                    }
                }
                SitemapKind::Index => {
                    if depth >= self.limits.max_depth {
                        pages.truncated = true;
                        continue;
                    }
                    for loc in doc.locs {
                        let Ok(url) = parse_http_url(&loc) else {
                            pages.invalid_urls_skipped += 1;
                            continue;
                        };
                        if !host_allowed(&url, &allow_host) {
                            pages.foreign_sitemaps_skipped += 1;
                            continue;
                        }
                        if seen_sitemaps.insert(url.to_string()) {
                            pending.push_back((url, depth + 1));
                        }
                    }
                }
            }
            if pages.urls.len() >= self.limits.max_urls && !pending.is_empty() {
                pages.truncated = true;
                break;
            }
        }
        Ok(pages)
    }

    async fn read_one<M, T>(&self, sitemap: &Url, fetch_url: &M) -> Result<SitemapDoc, SitemapError>
    where
        M: Fn(&Url) -> Option<T>,
        T: Into<FetchTarget>,
    {
        let target: FetchTarget = fetch_url(sitemap)
            .ok_or_else(|| SitemapError::NoOrigin(sitemap.to_string()))?
            .into();
        let fetch_error = |reason: String| SitemapError::Fetch {
            url: sitemap.to_string(),
            reason,
        };
        let body = tokio::time::timeout(self.limits.fetch_timeout, self.fetch(sitemap, &target))
            .await
            .map_err(|_| {
                fetch_error(format!(
                    "no complete answer within {:?}",
                    self.limits.fetch_timeout
                ))
            })?
            .map_err(fetch_error)?;
        parse_sitemap(&body, self.limits.max_urls).map_err(|reason| SitemapError::Parse {
            url: sitemap.to_string(),
            reason,
        })
    }

    /// GETs `target` with `public`'s host (or the site's `origin_host`) in
    /// `Host`; the body, decompressed, of at most `max_bytes`.
    async fn fetch(&self, public: &Url, target: &FetchTarget) -> Result<Vec<u8>, String> {
        let max = self.limits.max_bytes;
        let mut req = Request::get(target.url.as_str())
            .body(crate::http::respond::empty())
            .map_err(|e| e.to_string())?;
        let headers = req.headers_mut();
        if let Some(host) = target.host.clone().or_else(|| authority(public)) {
            let value = HeaderValue::from_str(&host).map_err(|e| e.to_string())?;
            headers.insert(HOST, value);
        }
        headers.insert(ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
        headers.insert(
            USER_AGENT,
            HeaderValue::from_static("prerender-proxy-sitemap"),
        );
        // The loop guard: should the origin route back to a proxy, it passes
        // this request through instead of rendering it.
        headers.insert("x-prerender", HeaderValue::from_static("1"));

        let resp = self.client.send(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        if !status.is_success() {
            return Err(format!("the origin answered {status}"));
        }
        let gzip_encoded = resp
            .headers()
            .get(CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("gzip"));
        let raw = collect_bounded(resp.into_body(), max)
            .await
            .map_err(|e| match e {
                CollectError::TooLarge { .. } => format!("larger than {max} bytes"),
                CollectError::Read(detail) => detail,
            })?;
        decode_sitemap_body(&raw, gzip_encoded, max)
    }
}

/// A fetched sitemap's bytes as XML: gzip data (by `Content-Encoding`, or a
/// `.xml.gz` file served without it) is decompressed, never past `max`
/// bytes.
pub fn decode_sitemap_body(raw: &[u8], gzip_encoded: bool, max: usize) -> Result<Vec<u8>, String> {
    if gzip_encoded || raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw)
            .take(max as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| format!("bad gzip data: {e}"))?;
        if out.len() > max {
            return Err(format!("larger than {max} bytes once decompressed"));
        }
        Ok(out)
    } else if raw.len() > max {
        Err(format!("larger than {max} bytes"))
    } else {
        Ok(raw.to_vec())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SitemapKind {
    UrlSet,
    Index,
}

/// What one sitemap document lists.
#[derive(Debug)]
pub struct SitemapDoc {
    pub kind: SitemapKind,
    /// `<loc>` values in document order; an empty string stands for an
    /// entry whose value could not be read (counted as an invalid URL).
    pub locs: Vec<String>,
    /// Reading stopped at `max_locs` entries.
    pub capped: bool,
}

/// Reads the `<loc>` values of a `<urlset>` (of its `<url>` entries) or a
/// `<sitemapindex>` (of its `<sitemap>` entries), at most `max_locs`.
/// Namespaces are ignored (matched on local names).
pub fn parse_sitemap(xml: &[u8], max_locs: usize) -> Result<SitemapDoc, String> {
    let mut reader = Reader::from_reader(xml);
    let mut buf = Vec::new();
    let mut kind = None;
    let mut locs = Vec::new();
    let mut capped = false;
    // Element names from the root down (local names only, bounded depth).
    let mut path: Vec<Vec<u8>> = Vec::new();
    let mut loc: Option<(String, bool)> = None; // (text, still valid)
    const MAX_NESTING: usize = 16;

    loop {
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|e| format!("at byte {}: {e}", reader.buffer_position()))?;
        match event {
            Event::Start(e) => {
                let name = e.local_name().as_ref().to_vec();
                if path.is_empty() {
                    kind = Some(root_kind(&name)?);
                }
                path.push(name);
                if path.len() > MAX_NESTING {
                    return Err("elements nested too deep".into());
                }
                if is_loc(&path, kind) {
                    loc = Some((String::new(), true));
                }
            }
            Event::Empty(e) => {
                // `<urlset/>`: a valid sitemap without entries.
                if path.is_empty() {
                    kind = Some(root_kind(e.local_name().as_ref())?);
                    break;
                }
            }
            Event::End(_) => {
                if is_loc(&path, kind) {
                    if let Some((text, valid)) = loc.take() {
                        if locs.len() >= max_locs {
                            capped = true;
                            break;
                        }
                        let text = text.trim();
                        if valid && !text.is_empty() {
                            locs.push(text.to_owned());
                        } else {
                            // Counted as an invalid URL by the caller.
                            locs.push(String::new());
                        }
                    }
                }
                path.pop();
                if path.is_empty() {
                    break;
                }
            }
            Event::Text(t) => {
                if let Some((text, valid)) = loc.as_mut() {
                    match t.decode() {
                        Ok(s) => text.push_str(&s),
                        Err(_) => *valid = false,
                    }
                }
            }
            Event::CData(t) => {
                if let Some((text, valid)) = loc.as_mut() {
                    match t.decode() {
                        Ok(s) => text.push_str(&s),
                        Err(_) => *valid = false,
                    }
                }
            }
            Event::GeneralRef(r) => {
                if let Some((text, valid)) = loc.as_mut() {
                    match resolve_reference(&r) {
                        Some(s) => text.push_str(&s),
                        None => *valid = false,
                    }
                }
            }
            Event::Eof => break,
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) | Event::DocType(_) => {}
        }
        buf.clear();
    }
    let kind = kind.ok_or_else(|| "no root element".to_string())?;
    Ok(SitemapDoc { kind, locs, capped })
}

fn root_kind(name: &[u8]) -> Result<SitemapKind, String> {
    match name {
        b"urlset" => Ok(SitemapKind::UrlSet),
        b"sitemapindex" => Ok(SitemapKind::Index),
        other => Err(format!(
            "root element <{}> is neither <urlset> nor <sitemapindex>",
            String::from_utf8_lossy(other)
        )),
    }
}

/// `<urlset><url><loc>` or `<sitemapindex><sitemap><loc>`.
fn is_loc(path: &[Vec<u8>], kind: Option<SitemapKind>) -> bool {
    let entry: &[u8] = match kind {
        Some(SitemapKind::UrlSet) => b"url",
        Some(SitemapKind::Index) => b"sitemap",
        None => return false,
    };
    path.len() == 3 && path[1] == entry && path[2] == b"loc"
}

/// The text of `&amp;`-style predefined entities and character references;
/// `None` for anything else (custom entities are never expanded).
fn resolve_reference(r: &quick_xml::events::BytesRef<'_>) -> Option<String> {
    if let Ok(Some(c)) = r.resolve_char_ref() {
        return Some(c.to_string());
    }
    let name = r.decode().ok()?;
    quick_xml::escape::resolve_predefined_entity(&name).map(str::to_owned)
}

fn parse_http_url(raw: &str) -> Result<Url, String> {
    let url = Url::parse(raw.trim()).map_err(|e| e.to_string())?;
    match url.scheme() {
        "http" | "https" => {}
        other => return Err(format!("scheme {other:?} is not http(s)")),
    }
    if url.host_str().is_none() {
        return Err("no host".into());
    }
    Ok(url)
}

fn host_allowed(url: &Url, allow_host: &impl Fn(&str) -> bool) -> bool {
    url.host_str().is_some_and(allow_host)
}

/// `host[:port]` of a URL as a `Host` header value.
fn authority(url: &Url) -> Option<String> {
    let host = url.host_str()?;
    Some(match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::collections::HashMap;
    use std::convert::Infallible;
    use std::io::Write;
    use std::net::SocketAddr;
    use std::sync::Arc;

    use http_body_util::Full;
    use hyper::body::Incoming;
    use hyper::service::service_fn;
    use hyper::{Response, StatusCode};
    use hyper_util::rt::TokioIo;
    use parking_lot::Mutex;
    use tokio::net::TcpListener;

    /// Generous deadline that only catches hangs.
    const HANG: Duration = Duration::from_secs(30);

    #[derive(Clone)]
    enum Page {
        Xml(String),
        Gzip(Vec<u8>),
        GzipEncoded(Vec<u8>),
        Status(u16),
        Never,
    }

    /// A local origin serving sitemaps by path; records each request's path
    /// and Host header.
    struct Origin {
        addr: SocketAddr,
        requests: Arc<Mutex<Vec<(String, String)>>>,
    }

    async fn origin(pages: Vec<(&str, Page)>) -> Origin {
        let pages: Arc<HashMap<String, Page>> = Arc::new(
            pages
                .into_iter()
                .map(|(p, page)| (p.to_owned(), page))
                .collect(),
        );
        let requests = Arc::new(Mutex::new(Vec::new()));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log = requests.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let pages = pages.clone();
                let log = log.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: hyper::Request<Incoming>| {
                        let pages = pages.clone();
                        let log = log.clone();
                        async move {
                            let host = req
                                .headers()
                                .get(HOST)
                                .map(|h| h.to_str().unwrap().to_owned())
                                .unwrap_or_default();
                            log.lock().push((req.uri().path().to_owned(), host));
                            let page = pages.get(req.uri().path()).cloned();
                            let resp = match page {
                                Some(Page::Xml(x)) => Response::new(Full::new(Bytes::from(x))),
                                Some(Page::Gzip(b)) => Response::new(Full::new(Bytes::from(b))),
                                Some(Page::GzipEncoded(b)) => {
                                    let mut r = Response::new(Full::new(Bytes::from(b)));
                                    r.headers_mut()
                                        .insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                                    r
                                }
                                Some(Page::Status(s)) => {
                                    let mut r = Response::new(Full::new(Bytes::new()));
                                    *r.status_mut() = StatusCode::from_u16(s).unwrap();
                                    r
                                }
                                Some(Page::Never) => {
                                    tokio::time::sleep(Duration::from_secs(3600)).await;
                                    Response::new(Full::new(Bytes::new()))
                                }
                                None => {
                                    let mut r = Response::new(Full::new(Bytes::new()));
                                    *r.status_mut() = StatusCode::NOT_FOUND;
                                    r
                                }
                            };
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Origin { addr, requests }
    }

    fn gzip(text: &str) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(text.as_bytes()).unwrap();
        enc.finish().unwrap()
    }

    fn urlset(urls: &[&str]) -> String {
        let entries: String = urls
            .iter()
            .map(|u| format!("  <url><loc>{u}</loc><lastmod>2026-01-01</lastmod></url>\n"))
            .collect();
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
             <urlset xmlns=\"http://www.sitemaps.org/schemas/sitemap/0.9\">\n{entries}</urlset>\n"
        )
    }

    fn index(sitemaps: &[&str]) -> String {
        let entries: String = sitemaps
            .iter()
            .map(|u| format!("  <sitemap><loc>{u}</loc></sitemap>\n"))
            .collect();
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
             <sitemapindex xmlns=\"http://www.sitemaps.org/schemas/sitemap/0.9\">\n{entries}</sitemapindex>\n"
        )
    }

    fn only_example(host: &str) -> bool {
        host == "example.com"
    }

    /// Maps `https://example.com/…` to the local origin, as the caller maps a
    /// site's public URL to its origin.
    fn to_origin(addr: SocketAddr) -> impl Fn(&Url) -> Option<Url> {
        move |public: &Url| {
            let mut u = Url::parse(&format!("http://{addr}")).unwrap();
            u.set_path(public.path());
            u.set_query(public.query());
            Some(u)
        }
    }

    async fn walk(
        fetcher: &SitemapFetcher,
        sitemap: &str,
        addr: SocketAddr,
    ) -> Result<SitemapPages, SitemapError> {
        tokio::time::timeout(
            HANG,
            fetcher.collect(sitemap, only_example, to_origin(addr)),
        )
        .await
        .expect("sitemap walk hung")
    }

    #[tokio::test]
    async fn index_and_two_sitemaps_give_the_site_pages() {
        let o = origin(vec![
            (
                "/sitemap_index.xml",
                Page::Xml(index(&[
                    "https://example.com/sitemap-pages.xml",
                    "https://example.com/sitemap-posts.xml.gz",
                    "https://evil.example/sitemap.xml",
                    "http://169.254.169.254/latest/meta-data/",
                ])),
            ),
            (
                "/sitemap-pages.xml",
                Page::Xml(urlset(&[
                    "https://example.com/",
                    "https://example.com/about",
                    "https://example.com/search?q=a&amp;page=2",
                    "https://other.example/elsewhere",
                    "  https://example.com/spaced  ",
                ])),
            ),
            (
                "/sitemap-posts.xml.gz",
                Page::Gzip(gzip(&urlset(&[
                    "https://example.com/posts/1",
                    "https://example.com/about",
                    "<![CDATA[https://example.com/posts/2]]>",
                ]))),
            ),
        ])
        .await;
        let fetcher = SitemapFetcher::new(SitemapLimits::default());
        let pages = walk(&fetcher, "https://example.com/sitemap_index.xml", o.addr)
            .await
            .unwrap();
        assert_eq!(
            pages.urls,
            vec![
                "https://example.com/",
                "https://example.com/about",
                "https://example.com/search?q=a&page=2",
                "https://example.com/spaced",
                "https://example.com/posts/1",
                "https://example.com/posts/2",
            ]
        );
        assert_eq!(pages.foreign_urls_skipped, 1);
        assert_eq!(pages.foreign_sitemaps_skipped, 2);
        assert_eq!(pages.sitemaps_read, 3);
        assert!(pages.failed_sitemaps.is_empty());
        assert!(!pages.truncated);

        // Only the site's own sitemaps were fetched, each with its public Host.
        let requests = o.requests.lock().clone();
        assert_eq!(
            requests,
            vec![
                ("/sitemap_index.xml".to_owned(), "example.com".to_owned()),
                ("/sitemap-pages.xml".to_owned(), "example.com".to_owned()),
                ("/sitemap-posts.xml.gz".to_owned(), "example.com".to_owned()),
            ]
        );
    }

    #[tokio::test]
    async fn a_sitemap_on_a_foreign_host_is_never_fetched() {
        let o = origin(vec![(
            "/sitemap.xml",
            Page::Xml(urlset(&["https://example.com/"])),
        )])
        .await;
        let fetcher = SitemapFetcher::new(SitemapLimits::default());
        for url in [
            "https://evil.example/sitemap.xml",
            "http://127.0.0.1/sitemap.xml",
            "file:///etc/passwd",
            "not a url",
        ] {
            let err = walk(&fetcher, url, o.addr).await.unwrap_err();
            assert!(err.is_client_error(), "{url}: {err}");
        }
        assert!(o.requests.lock().is_empty());

        // No origin for the host: refused too.
        let err = fetcher
            .collect(
                "https://example.com/sitemap.xml",
                only_example,
                |_: &Url| None::<Url>,
            )
            .await
            .unwrap_err();
        assert!(matches!(err, SitemapError::NoOrigin(_)), "{err}");
    }

    #[tokio::test]
    async fn gzip_content_encoding_is_decoded() {
        let o = origin(vec![(
            "/sitemap.xml",
            Page::GzipEncoded(gzip(&urlset(&["https://example.com/a"]))),
        )])
        .await;
        let fetcher = SitemapFetcher::new(SitemapLimits::default());
        let pages = walk(&fetcher, "https://example.com/sitemap.xml", o.addr)
            .await
            .unwrap();
        assert_eq!(pages.urls, vec!["https://example.com/a"]);
    }

    #[tokio::test]
    async fn nesting_is_bounded_and_loops_end() {
        let o = origin(vec![
            (
                "/index.xml",
                Page::Xml(index(&[
                    "https://example.com/index.xml",
                    "https://example.com/nested-index.xml",
                    "https://example.com/pages.xml",
                ])),
            ),
            (
                "/nested-index.xml",
                Page::Xml(index(&["https://example.com/deep.xml"])),
            ),
            (
                "/deep.xml",
                Page::Xml(urlset(&["https://example.com/deep"])),
            ),
            ("/pages.xml", Page::Xml(urlset(&["https://example.com/p"]))),
        ])
        .await;
        let fetcher = SitemapFetcher::new(SitemapLimits::default());
        let pages = walk(&fetcher, "https://example.com/index.xml", o.addr)
            .await
            .unwrap();
        assert_eq!(pages.urls, vec!["https://example.com/p"]);
        assert!(pages.truncated, "the nested index was not followed");
        let paths: Vec<String> = o.requests.lock().iter().map(|(p, _)| p.clone()).collect();
        assert_eq!(paths, vec!["/index.xml", "/nested-index.xml", "/pages.xml"]);
    }

    #[tokio::test]
    async fn sitemap_count_and_url_count_are_bounded() {
        let o = origin(vec![
            (
                "/index.xml",
                Page::Xml(index(&[
                    "https://example.com/1.xml",
                    "https://example.com/2.xml",
                    "https://example.com/3.xml",
                ])),
            ),
            (
                "/1.xml",
                Page::Xml(urlset(&["https://example.com/a", "https://example.com/b"])),
            ),
            (
                "/2.xml",
                Page::Xml(urlset(&["https://example.com/c", "https://example.com/d"])),
            ),
            ("/3.xml", Page::Xml(urlset(&["https://example.com/e"]))),
        ])
        .await;
        let files = SitemapFetcher::new(SitemapLimits {
            max_files: 2,
            ..SitemapLimits::default()
        });
        let pages = walk(&files, "https://example.com/index.xml", o.addr)
            .await
            .unwrap();
        assert_eq!(
            pages.urls,
            vec!["https://example.com/a", "https://example.com/b"]
        );
        assert!(pages.truncated);

        let urls = SitemapFetcher::new(SitemapLimits {
            max_urls: 3,
            ..SitemapLimits::default()
        });
        let pages = walk(&urls, "https://example.com/index.xml", o.addr)
            .await
            .unwrap();
        assert_eq!(
            pages.urls,
            vec![
                "https://example.com/a",
                "https://example.com/b",
                "https://example.com/c"
            ]
        );
        assert!(pages.truncated);
    }

    #[tokio::test]
    async fn oversized_sitemaps_are_refused() {
        let many: Vec<String> = (0..2000)
            .map(|i| format!("https://example.com/page/{i}"))
            .collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        let big = urlset(&refs);
        let o = origin(vec![
            ("/big.xml", Page::Xml(big.clone())),
            ("/bomb.xml.gz", Page::Gzip(gzip(&big))),
        ])
        .await;
        let limits = SitemapLimits {
            max_bytes: 16 * 1024,
            ..SitemapLimits::default()
        };
        assert!(big.len() > limits.max_bytes);
        assert!(
            gzip(&big).len() < limits.max_bytes,
            "compresses under the bound"
        );
        let fetcher = SitemapFetcher::new(limits);
        for path in ["/big.xml", "/bomb.xml.gz"] {
            let err = walk(&fetcher, &format!("https://example.com{path}"), o.addr)
                .await
                .unwrap_err();
            assert!(matches!(err, SitemapError::Fetch { .. }), "{path}: {err}");
            assert!(err.to_string().contains("larger than"), "{path}: {err}");
        }
    }

    #[tokio::test]
    async fn failures_of_the_first_sitemap_are_errors_of_nested_ones_are_skipped() {
        let o = origin(vec![
            (
                "/index.xml",
                Page::Xml(index(&[
                    "https://example.com/missing.xml",
                    "https://example.com/html.xml",
                    "https://example.com/ok.xml",
                ])),
            ),
            (
                "/html.xml",
                Page::Xml("<html><body>hi</body></html>".into()),
            ),
            ("/ok.xml", Page::Xml(urlset(&["https://example.com/ok"]))),
            ("/gone.xml", Page::Status(410)),
            ("/broken.xml", Page::Xml("<urlset><url><loc>x</url>".into())),
        ])
        .await;
        let fetcher = SitemapFetcher::new(SitemapLimits::default());
        let pages = walk(&fetcher, "https://example.com/index.xml", o.addr)
            .await
            .unwrap();
        assert_eq!(pages.urls, vec!["https://example.com/ok"]);
        assert_eq!(
            pages.failed_sitemaps.len(),
            2,
            "{:?}",
            pages.failed_sitemaps
        );

        let err = walk(&fetcher, "https://example.com/gone.xml", o.addr)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("410"), "{err}");
        assert!(!err.is_client_error());
        let err = walk(&fetcher, "https://example.com/html.xml", o.addr)
            .await
            .unwrap_err();
        assert!(matches!(err, SitemapError::Parse { .. }), "{err}");
        let err = walk(&fetcher, "https://example.com/broken.xml", o.addr)
            .await
            .unwrap_err();
        assert!(matches!(err, SitemapError::Parse { .. }), "{err}");
    }

    #[tokio::test]
    async fn a_silent_origin_times_out() {
        let o = origin(vec![("/slow.xml", Page::Never)]).await;
        let fetcher = SitemapFetcher::new(SitemapLimits {
            fetch_timeout: Duration::from_millis(300),
            ..SitemapLimits::default()
        });
        let err = walk(&fetcher, "https://example.com/slow.xml", o.addr)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("no complete answer"), "{err}");
    }

    #[test]
    fn parser_reads_entities_and_ignores_other_elements() {
        let xml = br#"<?xml version="1.0"?>
            <!-- generated -->
            <urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"
                    xmlns:image="http://www.google.com/schemas/sitemap-image/1.1">
              <url><loc>https://example.com/a&amp;b&#x3D;c</loc>
                <image:image><image:loc>https://cdn.example/i.png</image:loc></image:image>
              </url>
              <url><loc>https://example.com/&custom;</loc></url>
              <url><priority>0.5</priority></url>
            </urlset>"#;
        let doc = parse_sitemap(xml, 100).unwrap();
        assert_eq!(doc.kind, SitemapKind::UrlSet);
        assert_eq!(doc.locs, vec!["https://example.com/a&b=c", ""]);
        let capped = parse_sitemap(xml, 1).unwrap();
        assert_eq!(capped.locs.len(), 1);
        assert!(capped.capped);
        assert!(!parse_sitemap(xml, 2).unwrap().capped);
        let empty = parse_sitemap(b"<?xml version=\"1.0\"?><urlset/>", 10).unwrap();
        assert_eq!(empty.kind, SitemapKind::UrlSet);
        assert!(empty.locs.is_empty());
        assert!(parse_sitemap(b"", 10).is_err());
        assert!(parse_sitemap(b"<rss></rss>", 10).is_err());
    }
}
