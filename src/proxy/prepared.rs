//! Rendered pages ready to send: compressed once per entry (gzip and br),
//! header values validated once, so a cache hit only picks bytes and writes
//! them. `PreparedPages` keeps them in process, bounded in bytes, and checks
//! each against the store's copy (etag and render time) before reuse.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Response, StatusCode};
use parking_lot::Mutex;

use crate::cache::StoredPage;
use crate::http::respond;
use crate::http::Body;

/// Brotli quality 5: most of the size win of 11 at a small fraction of the CPU.
const BROTLI_QUALITY: u32 = 5;
const BROTLI_WINDOW: u32 = 22;
/// Independent locks so concurrent hits on different pages don't contend.
const SHARDS: usize = 16;

/// Headers a page may set through `<meta name="prerender-header">`: what a
/// crawler needs (redirect target, links, indexing hints), nothing that could
/// set cookies or change how the proxy frames the response.
const PAGE_HEADER_ALLOWLIST: [&str; 5] = [
    "location",
    "link",
    "x-robots-tag",
    "content-language",
    "last-modified",
];

/// Which variant of the body the client gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
    Brotli,
}

#[derive(Debug)]
pub struct PreparedPage {
    pub status: StatusCode,
    pub etag: String,
    etag_value: HeaderValue,
    pub rendered_at: SystemTime,
    pub expires_at: SystemTime,
    headers: Vec<(HeaderName, HeaderValue)>,
    pub identity: Bytes,
    gzip: Option<Bytes>,
    br: Option<Bytes>,
    /// When this copy was last confirmed against the store (ms since `EPOCH`).
    validated_ms: std::sync::atomic::AtomicU64,
}

/// Reference point of `validated_ms`.
static EPOCH: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);

fn now_ms() -> u64 {
    EPOCH.elapsed().as_millis() as u64
}

impl PreparedPage {
    /// Compresses and validates a stored page (the one expensive step).
    pub fn prepare(page: &StoredPage) -> PreparedPage {
        let status = StatusCode::from_u16(page.status).unwrap_or(StatusCode::OK);
        let headers = page
            .headers
            .iter()
            .filter(|(n, _)| {
                PAGE_HEADER_ALLOWLIST
                    .iter()
                    .any(|a| n.eq_ignore_ascii_case(a))
            })
            .filter_map(|(n, v)| {
                Some((
                    HeaderName::from_bytes(n.as_bytes()).ok()?,
                    HeaderValue::from_str(v).ok()?,
                ))
            })
            .collect();
        // Every page, however small: a client that accepts gzip or br gets it
        // (SPEC §2); compression is once per render, not per request.
        let (gzip, br) = if !page.html.is_empty() {
            (gzip(&page.html), brotli(&page.html))
        } else {
            (None, None)
        };
        PreparedPage {
            status,
            etag: page.etag.clone(),
            etag_value: HeaderValue::from_str(&page.etag)
                .unwrap_or(HeaderValue::from_static("\"0\"")),
            rendered_at: page.rendered_at,
            expires_at: page.expires_at,
            headers,
            identity: page.html.clone(),
            gzip,
            br,
            validated_ms: std::sync::atomic::AtomicU64::new(now_ms()),
        }
    }

    fn mark_validated(&self) {
        self.validated_ms
            .store(now_ms(), std::sync::atomic::Ordering::Relaxed);
    }

    fn validated_within(&self, max_age: Duration) -> bool {
        now_ms().saturating_sub(self.validated_ms.load(std::sync::atomic::Ordering::Relaxed))
            <= max_age.as_millis() as u64
    }

    /// Whether this prepared copy is the stored page (same render).
    pub fn matches(&self, page: &StoredPage) -> bool {
        self.etag == page.etag
            && self.rendered_at == page.rendered_at
            && self.identity.len() == page.html.len()
    }

    fn size(&self) -> usize {
        self.identity.len()
            + self.gzip.as_ref().map_or(0, Bytes::len)
            + self.br.as_ref().map_or(0, Bytes::len)
    }

    fn body(&self, encoding: Encoding) -> (&Bytes, Option<&'static str>) {
        match encoding {
            Encoding::Brotli => match &self.br {
                Some(b) => (b, Some("br")),
                None => (&self.identity, None),
            },
            Encoding::Gzip => match &self.gzip {
                Some(b) => (b, Some("gzip")),
                None => (&self.identity, None),
            },
            Encoding::Identity => (&self.identity, None),
        }
    }

    /// The answer to a crawler: 304 when `If-None-Match` names our ETag,
    /// no body for HEAD, the best encoding the client accepts.
    pub fn respond(
        &self,
        method: &Method,
        request: &HeaderMap,
        cache_state: &'static str,
        cache_control: &HeaderValue,
    ) -> Response<Body> {
        let not_modified = request
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| etag_matches(v, &self.etag));
        let mut h = HeaderMap::with_capacity(12);
        h.insert(header::ETAG, self.etag_value.clone());
        h.insert(
            header::VARY,
            HeaderValue::from_static("User-Agent, Accept-Encoding"),
        );
        h.insert(header::CACHE_CONTROL, cache_control.clone());
        h.insert("x-prerender-cache", HeaderValue::from_static(cache_state));
        let mut resp = Response::new(respond::empty());
        if not_modified {
            *resp.status_mut() = StatusCode::NOT_MODIFIED;
            *resp.headers_mut() = h;
            return resp;
        }
        *resp.status_mut() = self.status;
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        for (n, v) in &self.headers {
            h.insert(n.clone(), v.clone());
        }
        let (body, encoding) = self.body(negotiate(request));
        if let Some(e) = encoding {
            h.insert(header::CONTENT_ENCODING, HeaderValue::from_static(e));
        }
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        if method != Method::HEAD {
            *resp.body_mut() = respond::full(body.clone());
        }
        *resp.headers_mut() = h;
        resp
    }
}

/// `If-None-Match: "a", W/"b"` or `*` against our strong ETag (weak comparison, RFC 9110 §13.1.2).
fn etag_matches(header: &str, etag: &str) -> bool {
    header
        .split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.trim_start_matches("W/") == etag)
}

/// br, then gzip, by the client's `Accept-Encoding` (a q of 0 refuses).
pub fn negotiate(request: &HeaderMap) -> Encoding {
    let mut br = false;
    let mut gzip = false;
    for v in request
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
    {
        for item in v.split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| {
                let p = p.trim();
                p.strip_prefix("q=")
                    .is_some_and(|q| q.trim().parse::<f32>().is_ok_and(|q| q <= 0.0))
            });
            if refused {
                continue;
            }
            if coding.eq_ignore_ascii_case("br") {
                br = true;
            } else if coding.eq_ignore_ascii_case("gzip") || coding == "*" {
                gzip = true;
            }
        }
    }
    if br {
        Encoding::Brotli
    } else if gzip {
        Encoding::Gzip
    } else {
        Encoding::Identity
    }
}

fn gzip(data: &[u8]) -> Option<Bytes> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 4),
        flate2::Compression::new(6),
    );
    enc.write_all(data).ok()?;
    enc.finish().ok().map(Bytes::from)
}

fn brotli(data: &[u8]) -> Option<Bytes> {
    let mut out = Vec::with_capacity(data.len() / 4);
    {
        let mut w = brotli::CompressorWriter::new(&mut out, 4096, BROTLI_QUALITY, BROTLI_WINDOW);
        w.write_all(data).ok()?;
    }
    Some(Bytes::from(out))
}

/// Prepared pages of this instance by cache key, least recently used first
/// out, bounded in bytes.
pub struct PreparedPages {
    shards: Vec<Mutex<Shard>>,
    max_bytes_per_shard: usize,
}

struct Shard {
    map: lru::LruCache<String, Arc<PreparedPage>>,
    bytes: usize,
}

impl PreparedPages {
    pub fn new(max_bytes: u64) -> Self {
        let per_shard = (max_bytes as usize / SHARDS).max(1);
        PreparedPages {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        map: lru::LruCache::unbounded(),
                        bytes: 0,
                    })
                })
                .collect(),
            max_bytes_per_shard: per_shard,
        }
    }

    fn shard(&self, key: &str) -> &Mutex<Shard> {
        use std::hash::{BuildHasher, BuildHasherDefault};
        let h = BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
            .hash_one(key);
        &self.shards[(h as usize) % SHARDS]
    }

    /// The prepared copy of `page`, compressing it only if this instance has
    /// not prepared that very render before.
    pub fn get_or_prepare(&self, key: &str, page: &StoredPage) -> Arc<PreparedPage> {
        if let Some(p) = self.shard(key).lock().map.get(key) {
            if p.matches(page) {
                p.mark_validated();
                return p.clone();
            }
        }
        let prepared = Arc::new(PreparedPage::prepare(page));
        self.insert(key, prepared.clone());
        prepared
    }

    /// This instance's copy of `key` if the store confirmed it within
    /// `max_age` and it is still fresh: a hit that needs no store call.
    pub fn recently_validated(&self, key: &str, max_age: Duration) -> Option<Arc<PreparedPage>> {
        let shard = self.shard(key).lock();
        let p = shard.map.peek(key)?;
        (p.validated_within(max_age) && SystemTime::now() < p.expires_at).then(|| p.clone())
    }

    pub fn insert(&self, key: &str, page: Arc<PreparedPage>) {
        let size = page.size();
        if size > self.max_bytes_per_shard {
            return;
        }
        let mut shard = self.shard(key).lock();
        if let Some(old) = shard.map.put(key.to_string(), page) {
            shard.bytes -= old.size();
        }
        shard.bytes += size;
        while shard.bytes > self.max_bytes_per_shard {
            match shard.map.pop_lru() {
                Some((_, old)) => shard.bytes -= old.size(),
                None => break,
            }
        }
    }

    /// Drops every prepared copy whose key starts with `prefix` ("" = all).
    pub fn remove_prefix(&self, prefix: &str) {
        for shard in &self.shards {
            let mut shard = shard.lock();
            let doomed: Vec<String> = shard
                .map
                .iter()
                .filter(|(k, _)| k.starts_with(prefix))
                .map(|(k, _)| k.clone())
                .collect();
            for k in doomed {
                if let Some(old) = shard.map.pop(&k) {
                    shard.bytes -= old.size();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(html: &str) -> StoredPage {
        StoredPage {
            html: Bytes::from(html.to_string()),
            status: 200,
            headers: vec![
                ("Location".into(), "https://x.test/".into()),
                ("Set-Cookie".into(), "a=1".into()),
            ],
            etag: "\"abc\"".into(),
            rendered_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1),
            expires_at: SystemTime::UNIX_EPOCH + Duration::from_secs(2),
            settings_hash: "s".into(),
            content_hash: "c".into(),
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn encodings_are_negotiated() {
        assert_eq!(
            negotiate(&headers(&[("accept-encoding", "gzip, deflate, br")])),
            Encoding::Brotli
        );
        assert_eq!(
            negotiate(&headers(&[("accept-encoding", "gzip")])),
            Encoding::Gzip
        );
        assert_eq!(
            negotiate(&headers(&[("accept-encoding", "br;q=0, gzip;q=0.5")])),
            Encoding::Gzip
        );
        assert_eq!(negotiate(&headers(&[])), Encoding::Identity);
    }

    #[test]
    fn hits_carry_validators_and_honour_if_none_match() {
        let p = PreparedPage::prepare(&page(&"x".repeat(5000)));
        let cc = HeaderValue::from_static("public, max-age=3600");
        let r = p.respond(
            &Method::GET,
            &headers(&[("accept-encoding", "gzip")]),
            "HIT",
            &cc,
        );
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-encoding"], "gzip");
        assert_eq!(r.headers()["etag"], "\"abc\"");
        assert_eq!(r.headers()["x-prerender-cache"], "HIT");
        assert_eq!(r.headers()["location"], "https://x.test/");
        assert!(
            r.headers().get("set-cookie").is_none(),
            "page headers outside the allowlist leak"
        );
        let r = p.respond(
            &Method::GET,
            &headers(&[("if-none-match", "W/\"abc\"")]),
            "HIT",
            &cc,
        );
        assert_eq!(r.status(), 304);
    }

    #[test]
    fn compressed_bodies_decompress_to_the_page() {
        use std::io::Read;
        let html = "<html>".to_string() + &"hello world ".repeat(500);
        let p = PreparedPage::prepare(&page(&html));
        let mut out = String::new();
        flate2::read::GzDecoder::new(&p.gzip.as_ref().unwrap()[..])
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, html);
        let mut out = Vec::new();
        brotli::Decompressor::new(&p.br.as_ref().unwrap()[..], 4096)
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, html.as_bytes());
    }

    #[test]
    fn recently_validated_copies_expire_with_their_page_and_their_check() {
        let cache = PreparedPages::new(1 << 20);
        let mut fresh = page("fresh");
        fresh.expires_at = SystemTime::now() + Duration::from_secs(60);
        cache.get_or_prepare("k", &fresh);
        assert!(cache
            .recently_validated("k", Duration::from_secs(1))
            .is_some());
        std::thread::sleep(Duration::from_millis(30));
        assert!(cache
            .recently_validated("k", Duration::from_millis(10))
            .is_none());
        cache.get_or_prepare("old", &page("expired long ago"));
        assert!(cache
            .recently_validated("old", Duration::from_secs(1))
            .is_none());
        cache.remove_prefix("k");
        assert!(cache
            .recently_validated("k", Duration::from_secs(1))
            .is_none());
    }

    #[test]
    fn the_prepared_cache_is_bounded_and_revalidated() {
        let cache = PreparedPages::new(16 * 10_000);
        for i in 0..200 {
            cache.get_or_prepare(&format!("k{i}"), &page(&"y".repeat(3000)));
        }
        let total: usize = cache.shards.iter().map(|s| s.lock().bytes).sum();
        assert!(total <= 16 * 10_000);
        let a = cache.get_or_prepare("k", &page("one"));
        let mut changed = page("two");
        changed.etag = "\"def\"".into();
        let b = cache.get_or_prepare("k", &changed);
        assert_ne!(a.etag, b.etag);
    }
}
